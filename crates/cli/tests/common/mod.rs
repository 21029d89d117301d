//! A `tributary node` process on 127.0.0.1 (port 0 for the API and libp2p), killed on drop.

#![allow(dead_code, reason = "each test file uses part of the harness")]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The process, its first listen address (with `/p2p/…`) and its API address.
pub struct NodeProcess(pub Child, pub String, pub String);

impl NodeProcess {
    /// Starts a node on `dir` and waits for its `node.json`.
    pub fn start(dir: &Path) -> Self {
        let _ = std::fs::remove_file(dir.join("node.json"));
        let child = Command::new(env!("CARGO_BIN_EXE_tributary"))
            .args([
                "node",
                "--data-dir",
                dir.to_str().expect("utf-8"),
                "--api",
                "127.0.0.1:0",
                "--listen",
                "/ip4/127.0.0.1/tcp/0",
                "--no-mdns",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starts");
        let info = dir.join("node.json");
        let started = Instant::now();
        while !info.exists() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "node did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let json: Value =
            serde_json::from_slice(&std::fs::read(&info).expect("reads")).expect("json");
        let addr = json["listen"][0].as_str().expect("listen").to_owned();
        let api = json["api"].as_str().expect("api").to_owned();
        Self(child, addr, api)
    }
}

impl NodeProcess {
    /// The value of the Prometheus metric `name` on the node's `/metrics`.
    pub fn metric(&self, name: &str) -> u64 {
        let text = ureq::get(format!("http://{}/metrics", self.2))
            .call()
            .expect("GET /metrics")
            .body_mut()
            .read_to_string()
            .expect("metrics text");
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no metric {name} in {text}"))
            .trim()
            .parse()
            .expect("a counter")
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `tributary args…` with `stdin`, returning its output.
pub fn run_cli(args: &[&str], stdin: Option<&str>) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tributary");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.unwrap_or_default().as_bytes())
        .expect("write stdin");
    drop(input);
    child.wait_with_output().expect("wait")
}

/// Runs a command that must succeed; its standard output.
pub fn cli_ok(args: &[&str]) -> String {
    let out = run_cli(args, None);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Runs a command that must fail with one `error:` line holding `needle`.
pub fn cli_fails(args: &[&str], stdin: Option<&str>, needle: &str) {
    let out = run_cli(args, stdin);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} should fail");
    assert!(
        err.lines().count() == 1 && err.starts_with("error: ") && err.contains(needle),
        "{args:?}: stderr {err:?} should be one error line with {needle:?}"
    );
}
