//! `tributary chunk hash`: Swarm references of files and stdin, and a clear error otherwise.

use std::io::Write;
use std::process::{Command, Stdio};

fn tributary(args: &[&str], stdin: &[u8]) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tributary");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

#[test]
fn chunk_hash_prints_swarm_references() {
    // shared/vectors/swarm.json: a 4096-byte file of (i mod 255), and "hello world".
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("c.bin");
    std::fs::write(
        &file,
        (0..4096).map(|i| (i % 255) as u8).collect::<Vec<u8>>(),
    )
    .expect("write");
    let out = tributary(&["chunk", "hash", file.to_str().expect("utf-8")], b"");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "c10090961e7682a10890c334d759a28426647141213abda93b096b892824d2ef"
    );
    let out = tributary(&["chunk", "hash", "-"], b"hello world");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "92672a471f4419b255d7cb0cf313474a6f5856fb347c5ece85fb706d644b630f"
    );
    let out = tributary(&["chunk", "hash", "/no/such/file"], b"");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.trim().lines().count() == 1 && err.contains("/no/such/file"),
        "{err}"
    );
}
