//! `tributary state sync --peer …` against real `tributary node`s on 127.0.0.1: the database
//! reaches the root, both nodes serve, a run killed with SIGKILL resumes without fetching
//! everything again, and a node without the root is not mistaken for a liar.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

mod common;

use common::NodeProcess;

fn tributary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tributary"))
}

fn run(args: &[&str]) -> Output {
    tributary().args(args).output().expect("runs")
}

fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

/// `n` seeded pseudo-random 32-byte keys with 1–64-byte values, as `import` reads them.
fn pairs_file(path: &Path, n: u64) {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut text = String::new();
    for _ in 0..n {
        let key: Vec<u8> = (0..4).flat_map(|_| next().to_le_bytes()).collect();
        let len = usize::try_from(next() % 64 + 1).expect("small");
        let value: Vec<u8> = (0..len)
            .map(|i| u8::try_from((next() >> (i % 8)) & 0xff).expect("byte"))
            .collect();
        text.push_str(&format!("{} {}\n", hex::encode(key), hex::encode(value)));
    }
    std::fs::write(path, text).expect("writes");
}

fn sync_json(dst: &Path, peers: &[&str], root: &str, extra: &[&str]) -> Value {
    let mut args = vec![
        "state",
        "sync",
        "--db",
        dst.to_str().expect("utf-8"),
        "--root",
        root,
        "--json",
    ];
    for p in peers {
        args.extend(["--peer", p]);
    }
    args.extend(extra);
    serde_json::from_str(&ok(&args)).expect("json summary")
}

#[test]
fn sync_from_two_nodes_and_resume_after_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (src_a, src_b) = (dir.path().join("a"), dir.path().join("b"));
    let pairs = dir.path().join("pairs.txt");
    pairs_file(&pairs, 30_000);
    let root = ok(&[
        "state",
        "import",
        "--db",
        src_a.to_str().expect("utf-8"),
        pairs.to_str().expect("utf-8"),
    ]);
    ok(&[
        "state",
        "import",
        "--db",
        src_b.to_str().expect("utf-8"),
        pairs.to_str().expect("utf-8"),
    ]);
    let (a, b) = (NodeProcess::start(&src_a), NodeProcess::start(&src_b));

    // Node A twice: still one peer, and no wait for a second connection that never comes.
    let started = std::time::Instant::now();
    let full = sync_json(
        &dir.path().join("full"),
        &[&a.1, &b.1, &a.1],
        &root,
        &["--key-limit", "64"],
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(full["root"].as_str(), Some(root.as_str()));
    assert_eq!(full["rejected"], 0, "an honest node was penalized: {full}");
    let full_proofs = full["proofs"].as_u64().expect("proofs");
    assert!(full_proofs >= 30_000 / 64, "{full}");

    // Killed with SIGKILL part way, then run again: it finishes with fewer proofs than a whole
    // sync needs, because committed ranges are not fetched again.
    let dst = dir.path().join("resumed");
    let empty_root = "00".repeat(32);
    let mut killed_after_commits = false;
    for delay_ms in [100, 200, 400, 800, 1600] {
        let _ = std::fs::remove_dir_all(&dst);
        let mut child = tributary()
            .args([
                "state",
                "sync",
                "--db",
                dst.to_str().expect("utf-8"),
                "--root",
                &root,
                "--peer",
                &a.1,
                "--key-limit",
                "64",
                "--work-limit",
                "2",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starts");
        std::thread::sleep(Duration::from_millis(delay_ms));
        let killed = child.try_wait().expect("waits").is_none();
        let _ = child.kill();
        let _ = child.wait();
        if !killed {
            break; // finished before the kill: longer delays would too
        }
        // The killed run must have committed something, or the rerun proves nothing.
        let partial = ok(&["state", "root", "--db", dst.to_str().expect("utf-8")]);
        if partial != empty_root && partial != root {
            killed_after_commits = true;
            break;
        }
    }
    assert!(
        killed_after_commits,
        "no attempt was killed after committing part of the sync"
    );
    let resumed = sync_json(&dst, &[&a.1], &root, &["--key-limit", "64"]);
    assert_eq!(resumed["root"].as_str(), Some(root.as_str()));
    let resumed_proofs = resumed["proofs"].as_u64().expect("proofs");
    let resumed_keys = resumed["keys"].as_u64().expect("keys");
    println!(
        "whole sync {full_proofs} proofs; after SIGKILL the rerun needed {resumed_proofs} proofs \
         and {resumed_keys} of 30000 keys"
    );
    // The killed run committed part of the keys (checked above), so a rerun that resumes
    // fetches fewer than all of them; one that starts over fetches every one.
    assert!(
        resumed_keys < 30_000,
        "resumed run fetched everything again: {resumed}"
    );
}

#[test]
fn a_node_without_the_root_fails_requests_but_is_not_penalized() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    let pairs = dir.path().join("pairs.txt");
    pairs_file(&pairs, 100);
    ok(&[
        "state",
        "import",
        "--db",
        src.to_str().expect("utf-8"),
        pairs.to_str().expect("utf-8"),
    ]);
    let node = NodeProcess::start(&src);
    let absent = "11".repeat(32);
    let dst = dir.path().join("dst");
    let mut child = tributary()
        .args([
            "state",
            "sync",
            "--db",
            dst.to_str().expect("utf-8"),
            "--root",
            &absent,
            "--peer",
            &node.1,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    std::thread::sleep(Duration::from_secs(3));
    // Still trying (it retries with backoff), and not finished with a wrong root.
    assert!(
        child.try_wait().expect("waits").is_none(),
        "sync ended against a node without the root"
    );
    let _ = child.kill();
    let out = child.wait_with_output().expect("waits");
    // The client says at once when it penalizes a peer; it said nothing of the kind.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("penalized"), "{stderr}");
    // And the node did decline the requests (it was asked, and said it lacks the root).
    let declined = node.metric("tributary_statesync_dropped_total");
    assert!(declined >= 1, "the node declined {declined} requests");
}

#[test]
fn unreachable_peers_are_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run(&[
        "state",
        "sync",
        "--db",
        dir.path().join("d").to_str().expect("utf-8"),
        "--root",
        &"22".repeat(32),
        "--peer",
        "/ip4/127.0.0.1/tcp/1/p2p/16Uiu2HAmQ7yiJzDAXgSKYfMeyVEeW1FKRKk8vhW3LE6TaznJNZWC",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("could be connected"), "{err}");
}
