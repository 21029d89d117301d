//! `tributary state …` end to end: the exact command forms scripts use, and bad input that
//! must fail with one line on stderr and leave the database unchanged.

use std::path::Path;
use std::process::{Command, Output};

fn tributary(args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tributary"));
    cmd.args(args);
    if let Some(input) = stdin {
        use std::io::Write;
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("spawn tributary");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
        return child.wait_with_output().expect("wait");
    }
    cmd.output().expect("run tributary")
}

fn ok(args: &[&str]) -> String {
    let out = tributary(args, None);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

fn fails(args: &[&str], stdin: Option<&str>, needle: &str) {
    let out = tributary(args, stdin);
    assert!(!out.status.success(), "{args:?} should fail");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim().lines().count(),
        1,
        "one line on stderr, got {err:?}"
    );
    assert!(
        err.contains(needle),
        "{args:?}: expected {needle:?} in {err:?}"
    );
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn import_root_get_put_delete_and_proofs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("db");
    let pairs = dir.path().join("pairs.txt");
    // The firewood/merkledb vector {00:00, 0001:0001}, plus an empty value.
    std::fs::write(&pairs, "00 00\n0001 0001\n").expect("write pairs");
    let root = ok(&["state", "import", "--db", path(&db), path(&pairs)]);
    assert_eq!(
        root,
        "c3bdc20aff5cba30f81ffd7689e94e1dbeece4a08e27f0104262431604cf45c6"
    );
    assert_eq!(ok(&["state", "root", "--db", path(&db)]), root);
    assert_eq!(ok(&["state", "get", "--db", path(&db), "0001"]), "0001");
    let out = tributary(
        &["state", "import", "--db", path(&db), "--batch", "1", "-"],
        Some("aa \n"),
    );
    assert!(out.status.success());
    assert_eq!(ok(&["state", "get", "--db", path(&db), "aa"]), "");
    let after_put = ok(&["state", "put", "--db", path(&db), "bb", "01"]);
    let after_delete = ok(&["state", "delete", "--db", path(&db), "bb"]);
    assert_ne!(after_put, after_delete);

    let proof = dir.path().join("range.bin");
    ok(&[
        "state",
        "range-proof",
        "--db",
        path(&db),
        "--start",
        "00",
        "--limit",
        "2",
        "--out",
        path(&proof),
    ]);
    assert_eq!(
        ok(&[
            "state",
            "verify-range-proof",
            "--root",
            &after_delete,
            "--start",
            "00",
            path(&proof)
        ]),
        "2"
    );
    fails(
        &[
            "state",
            "verify-range-proof",
            "--root",
            &root,
            "--start",
            "00",
            path(&proof),
        ],
        None,
        "invalid range proof",
    );

    let historical = dir.path().join("old.bin");
    ok(&[
        "state",
        "range-proof",
        "--db",
        path(&db),
        "--root",
        &root,
        "--out",
        path(&historical),
    ]);
    assert_eq!(
        ok(&[
            "state",
            "verify-range-proof",
            "--root",
            &root,
            path(&historical)
        ]),
        "2"
    );

    let change = dir.path().join("change.bin");
    ok(&[
        "state",
        "change-proof",
        "--db",
        path(&db),
        "--from-root",
        &root,
        "--to-root",
        &after_put,
        "--out",
        path(&change),
    ]);
    // The database's keys are at the end state; applying the proof's changes keeps them there.
    let n = ok(&[
        "state",
        "verify-change-proof",
        "--db",
        path(&db),
        "--root",
        &after_put,
        path(&change),
    ]);
    assert_eq!(n, "2", "aa and bb changed");
}

#[test]
fn bad_input_fails_cleanly_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("db");
    let root = ok(&["state", "import", "--db", path(&db), "-"]); // empty input creates an empty db
    assert_eq!(root, "0".repeat(64));
    let good = tributary(
        &["state", "import", "--db", path(&db), "-"],
        Some("01 02\n"),
    );
    assert!(good.status.success());
    let root = ok(&["state", "root", "--db", path(&db)]);

    fails(
        &["state", "import", "--db", path(&db), "-"],
        Some("03 04\n05 zz\n"),
        "line 2",
    );
    fails(
        &["state", "import", "--db", path(&db), "-"],
        Some("0304\n"),
        "line 1",
    );
    fails(
        &["state", "get", "--db", path(&db), "xyz"],
        None,
        "not valid hex",
    );
    fails(
        &["state", "get", "--db", path(&db), "99"],
        None,
        "not found",
    );
    fails(
        &["state", "put", "--db", path(&db), "01", "0"],
        None,
        "not valid hex",
    );
    fails(
        &["state", "root", "--db", path(&dir.path().join("missing"))],
        None,
        "no such directory",
    );
    fails(
        &["state", "root", "--db", path(dir.path())],
        None,
        "no state database",
    );
    let garbage = dir.path().join("garbage.bin");
    std::fs::write(&garbage, b"\xff\xff\xff garbage").expect("write");
    fails(
        &[
            "state",
            "verify-range-proof",
            "--root",
            &root,
            path(&garbage),
        ],
        None,
        "not a range proof",
    );
    fails(
        &[
            "state",
            "verify-change-proof",
            "--db",
            path(&db),
            "--root",
            &root,
            path(&garbage),
        ],
        None,
        "not a change proof",
    );
    fails(
        &[
            "state",
            "range-proof",
            "--db",
            path(&db),
            "--root",
            &"11".repeat(32),
            "--out",
            path(&garbage),
        ],
        None,
        "not in history",
    );
    fails(
        &[
            "state",
            "range-proof",
            "--db",
            path(&db),
            "--root",
            "abc",
            "--out",
            path(&garbage),
        ],
        None,
        "64 hex",
    );
    fails(
        &[
            "state",
            "range-proof",
            "--db",
            path(&db),
            "--start",
            "05",
            "--end",
            "01",
            "--out",
            path(&garbage),
        ],
        None,
        "after end key",
    );
    fails(
        &[
            "state",
            "import",
            "--db",
            path(&db),
            "--branch-factor",
            "256",
            "-",
        ],
        Some(""),
        "branch factor",
    );
    fails(
        &[
            "state",
            "change-proof",
            "--db",
            path(&db),
            "--from-root",
            &root,
            "--to-root",
            &root,
            "--out",
            path(&garbage),
        ],
        None,
        "equals",
    );

    assert_eq!(
        ok(&["state", "root", "--db", path(&db)]),
        root,
        "failed commands changed nothing"
    );
}

#[test]
fn sync_brings_a_database_to_an_old_or_current_root() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    let lines: String = (0..3000u32)
        .map(|i| format!("{:08x} {:04x}\n", i.wrapping_mul(2_654_435_761), i))
        .collect();
    let out = tributary(&["state", "import", "--db", path(&src), "-"], Some(&lines));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned();
    let second = ok(&["state", "put", "--db", path(&src), "00", "ff"]);

    let (d, s) = (path(&dst), path(&src));
    let synced = ok(&sync_args(d, s, &["--root", &first, "--key-limit", "100"]));
    assert_eq!(synced, first);
    let summary: serde_json::Value =
        serde_json::from_str(&ok(&sync_args(d, s, &["--json"]))).expect("json summary");
    assert_eq!(
        summary["root"],
        second.as_str(),
        "moved to the current root"
    );
    // One change proof finds the change, and its end proof shows the rest of the key space
    // unchanged (findNextKey), so nothing more is asked (without findNextKey: 3 proofs).
    assert_eq!(summary["proofs"], 1, "{summary}");
    assert_eq!(summary["keys"], 1, "{summary}");
    assert_eq!(ok(&["state", "root", "--db", d]), second);

    let unknown = "ab".repeat(32);
    fails(
        &sync_args(d, s, &["--root", &unknown]),
        None,
        "does not hold root",
    );
    let missing = dir.path().join("nope");
    fails(
        &sync_args(d, path(&missing), &[]),
        None,
        "no such directory",
    );
    let out = tributary(&sync_args(d, s, &["--key-limit", "0"]), None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("0 is not in 1..=2048"));
}

fn sync_args<'a>(dst: &'a str, src: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    [&["state", "sync", "--db", dst, "--from", src][..], extra].concat()
}

/// The empty key is a key like any other: stored, read back after the process exits (the
/// checkpoint on close once panicked on it and left a database that never opened again).
#[test]
fn the_empty_key_survives_the_process() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("db");
    let pairs = dir.path().join("pairs.txt");
    std::fs::write(&pairs, " 0a\n00 0b\n").expect("write pairs");
    let root = ok(&["state", "import", "--db", path(&db), path(&pairs)]);
    assert_eq!(ok(&["state", "root", "--db", path(&db)]), root);
    assert_eq!(ok(&["state", "get", "--db", path(&db), ""]), "0a");
    let after_put = ok(&["state", "put", "--db", path(&db), "", "01"]);
    assert_eq!(ok(&["state", "root", "--db", path(&db)]), after_put);
    assert_eq!(ok(&["state", "get", "--db", path(&db), ""]), "01");
    ok(&["state", "delete", "--db", path(&db), ""]);
    fails(&["state", "get", "--db", path(&db), ""], None, "not found");
}

/// A bad line anywhere in the input, even batches after the first, leaves no database at all.
#[test]
fn import_checks_every_line_before_writing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("db");
    let long_key = "ab".repeat(tributary_merkle::MAX_KEY_LEN + 1);
    let input = format!("01 01\n02 02\n03 03\n{long_key} 04\n");
    fails(
        &["state", "import", "--db", path(&db), "--batch", "1", "-"],
        Some(&input),
        "line 4: a key of 4097 bytes is over the limit",
    );
    assert!(!db.exists(), "nothing created");
    let long_value = "cd".repeat(tributary_merkle::MAX_VALUE_LEN + 1);
    let input = format!("01 01\n05 {long_value}\n");
    fails(
        &["state", "import", "--db", path(&db), "--batch", "1", "-"],
        Some(&input),
        "line 2: a value of 1048577 bytes is over the limit",
    );
    assert!(!db.exists(), "nothing created");
}

/// Two processes on one data directory: the second says the directory is in use.
#[test]
fn a_database_in_use_is_named_as_such() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("db");
    ok(&["state", "import", "--db", path(&db), "-"]);
    let holder =
        tributary_store::FjallStore::open(&db.join("store"), tributary_store::Durability::Buffered)
            .expect("hold the store");
    fails(
        &["state", "root", "--db", path(&db)],
        None,
        "is in use by another process",
    );
    drop(holder);
}
