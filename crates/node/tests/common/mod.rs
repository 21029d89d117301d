//! A real node on 127.0.0.1 (port 0) in its own thread and tokio runtime, stopped on drop.

#![allow(dead_code, reason = "each test file uses part of the harness")]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tributary_node::{NodeConfig, run};

pub mod rogue;

pub struct Node {
    pub dir: PathBuf,
    pub base: String,
    pub info: serde_json::Value,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Node {
    pub fn start(dir: &Path) -> Self {
        Self::start_with(dir, &[], 1)
    }

    /// Starts a node on TCP with these bootnodes (multiaddrs) and network id.
    pub fn start_with(dir: &Path, bootnodes: &[String], network_id: u64) -> Self {
        Self::start_on(dir, "/ip4/127.0.0.1/tcp/0", bootnodes, network_id)
    }

    /// Starts a node listening on `listen` with these bootnodes and network id.
    pub fn start_on(dir: &Path, listen: &str, bootnodes: &[String], network_id: u64) -> Self {
        Self::start_config(dir, listen, bootnodes, (network_id, false))
    }

    /// Starts a light node on TCP with these bootnodes.
    pub fn start_light(dir: &Path, bootnodes: &[String]) -> Self {
        Self::start_config(dir, "/ip4/127.0.0.1/tcp/0", bootnodes, (1, true))
    }

    /// Starts a node with mDNS on, listening on `listen`, without bootnodes.
    pub fn start_mdns(dir: &Path, listen: &str, network_id: u64) -> Self {
        Self::start_full(dir, listen, &[], (network_id, false, true))
    }

    fn start_config(
        dir: &Path,
        listen: &str,
        bootnodes: &[String],
        (network_id, light): (u64, bool),
    ) -> Self {
        Self::start_full(dir, listen, bootnodes, (network_id, light, false))
    }

    fn start_full(
        dir: &Path,
        listen: &str,
        bootnodes: &[String],
        (network_id, light, mdns): (u64, bool, bool),
    ) -> Self {
        let config = NodeConfig {
            data_dir: dir.to_path_buf(),
            api: "127.0.0.1:0".parse().expect("addr"),
            listen: vec![listen.parse().expect("multiaddr")],
            bootnodes: bootnodes
                .iter()
                .map(|b| b.parse().expect("multiaddr"))
                .collect(),
            network_id,
            light,
            mdns,
        };
        let info = dir.join("node.json");
        let _ = std::fs::remove_file(&info);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().expect("runtime");
            rt.block_on(run(config, async move {
                let _ = stopped.await;
            }))
            .expect("node runs");
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        while !info.exists() {
            assert!(Instant::now() < deadline, "node did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&info).expect("node.json")).expect("json");
        let base = format!("http://{}", json["api"].as_str().expect("api address"));
        Self {
            dir: dir.to_path_buf(),
            base,
            info: json,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The first listen address, with `/p2p/…`.
    pub fn addr(&self) -> String {
        self.info["listen"][0]
            .as_str()
            .expect("listen address")
            .to_owned()
    }

    /// GET a JSON document of the API.
    pub fn get_json(&self, path: &str) -> serde_json::Value {
        let url = format!("{}{path}", self.base);
        let text = agent()
            .get(&url)
            .call()
            .expect("GET")
            .body_mut()
            .read_to_string()
            .expect("body");
        serde_json::from_str(&text).expect("JSON")
    }

    /// GET a text document of the API.
    pub fn get_text(&self, path: &str) -> String {
        let url = format!("{}{path}", self.base);
        agent()
            .get(&url)
            .call()
            .expect("GET")
            .body_mut()
            .read_to_string()
            .expect("text")
    }

    /// The value of an unlabelled metric.
    pub fn metric(&self, name: &str) -> f64 {
        self.get_text("/metrics")
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no metric {name}"))
    }

    /// Stops the node and waits for it.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown();
    }
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// Deterministic bytes (xorshift) that do not repeat within a chunk.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Polls `check` every 100 ms until it holds or `limit` passes; returns how long it took.
pub fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
    start.elapsed()
}
