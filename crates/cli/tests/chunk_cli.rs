//! `tributary chunk hash`: Swarm references of files and stdin, and a clear error otherwise.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

mod common;

use common::NodeProcess;

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

#[test]
fn upload_download_round_trip_and_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("data");
    let db = db.to_str().expect("utf-8");
    let input = dir.path().join("in.bin");
    let bytes: Vec<u8> = (0..600_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(&input, &bytes).expect("write");
    let up = tributary(&["upload", input.to_str().expect("utf-8"), "--db", db], b"");
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let reference = String::from_utf8_lossy(&up.stdout).trim().to_owned();
    let hashed = tributary(&["chunk", "hash", "-"], &bytes);
    assert_eq!(
        String::from_utf8_lossy(&hashed.stdout).trim(),
        reference,
        "upload and hash agree"
    );
    let again = tributary(&["upload", "-", "--db", db, "--json"], &bytes);
    let json: serde_json::Value = serde_json::from_slice(&again.stdout).expect("json");
    assert_eq!(json["reference"], reference.as_str());
    assert_eq!(
        json["chunks_stored"], 0,
        "storing the same file twice stores nothing new"
    );
    let out = dir.path().join("out.bin");
    // A file that happens to carry the name of a partial download is the user's: untouched.
    let bystander = dir.path().join("out.partial");
    std::fs::write(&bystander, b"mine").expect("write");
    let down = tributary(
        &[
            "download",
            &reference,
            "-o",
            out.to_str().expect("utf-8"),
            "--db",
            db,
        ],
        b"",
    );
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    assert!(
        std::fs::read(&out).expect("read") == bytes,
        "download returns the upload"
    );
    // The download has the mode any new file gets here (not a temporary file's 0600).
    use std::os::unix::fs::PermissionsExt;
    let plain = dir.path().join("plain");
    std::fs::File::create(&plain).expect("create");
    let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode(&out), mode(&plain), "the download's mode");
    let missing = "11".repeat(32);
    for (reference, needle) in [("abc", "64 hex"), (missing.as_str(), "missing")] {
        let target = dir.path().join("nope.bin");
        let failed = tributary(
            &[
                "download",
                reference,
                "-o",
                target.to_str().expect("utf-8"),
                "--db",
                db,
            ],
            b"",
        );
        assert!(!failed.status.success());
        let err = String::from_utf8_lossy(&failed.stderr);
        assert!(err.contains(needle), "{err}");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("nope"))
            .collect();
        assert!(left.is_empty(), "no partial output: {left:?}");
    }
    assert_eq!(std::fs::read(&bystander).expect("read"), b"mine");
}

/// `tributary node` on 127.0.0.1 port 0, with upload and download through its API.
#[test]
fn upload_download_through_a_running_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("node");
    let node = NodeProcess::start(&data);
    assert!(node.1.starts_with("/ip4/127.0.0.1/tcp/"), "{}", node.1);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("node.json")).expect("read"))
            .expect("json");
    let api = json["api"].as_str().expect("api").to_owned();
    let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    let up = tributary(&["upload", "-", "--api", &api], &bytes);
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let reference = String::from_utf8_lossy(&up.stdout).trim().to_owned();
    let out = dir.path().join("out.bin");
    // A file that happens to carry the name of a partial download is the user's: untouched.
    let bystander = dir.path().join("out.partial");
    std::fs::write(&bystander, b"mine").expect("write");
    let down = tributary(
        &[
            "download",
            &reference,
            "-o",
            out.to_str().expect("utf-8"),
            "--api",
            &api,
        ],
        b"",
    );
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    assert!(std::fs::read(&out).expect("read") == bytes);
    let missing = tributary(
        &[
            "download",
            &"22".repeat(32),
            "-o",
            out.to_str().expect("utf-8"),
            "--api",
            &api,
        ],
        b"",
    );
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("404"));
    drop(node);
}
