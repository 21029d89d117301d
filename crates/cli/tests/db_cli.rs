//! `tributary db …` and `tributary syncgroup …` over data directories: the exact command
//! forms scripts use, and bad input that fails with one line and changes nothing.

mod common;

use common::{cli_fails, cli_ok};
use serde_json::Value;

fn json(args: &[&str]) -> Value {
    serde_json::from_str(&cli_ok(args)).expect("json output")
}

struct Dirs {
    _tmp: tempfile::TempDir,
    a: String,
    b: String,
    c: String,
}

fn dirs() -> Dirs {
    let tmp = tempfile::tempdir().expect("tempdir");
    let p = |n: &str| tmp.path().join(n).to_str().expect("utf-8").to_string();
    Dirs {
        a: p("a"),
        b: p("b"),
        c: p("c"),
        _tmp: tmp,
    }
}

/// a creates `sg` over notes with b as writer and c as reader; b and c join and sync.
fn group(d: &Dirs) -> (String, String) {
    let b = cli_ok(&["db", "id", "--data-dir", &d.b]).trim().to_string();
    let c = cli_ok(&["db", "id", "--data-dir", &d.c]).trim().to_string();
    assert_eq!(b.len(), 40);
    cli_ok(&[
        "syncgroup",
        "create",
        "--data-dir",
        &d.a,
        "app",
        "sg",
        "--collections",
        "notes,tasks",
        "--writers",
        &b,
        "--readers",
        &c,
    ]);
    for dir in [&d.b, &d.c] {
        cli_ok(&[
            "syncgroup",
            "join",
            "--data-dir",
            dir,
            "app",
            "sg",
            "--admin-dir",
            &d.a,
        ]);
        cli_ok(&["db", "sync", "--data-dir", dir, "--from", &d.a, "app"]);
    }
    (b, c)
}

#[test]
fn rows_sync_between_directories() {
    let d = dirs();
    group(&d);
    cli_ok(&[
        "db",
        "put",
        "--data-dir",
        &d.a,
        "app",
        "notes",
        "k1",
        "hello",
    ]);
    cli_ok(&[
        "db",
        "put",
        "--data-dir",
        &d.a,
        "app",
        "notes",
        "bin",
        "00ff",
        "--hex",
    ]);
    let report = json(&[
        "db",
        "sync",
        "--data-dir",
        &d.b,
        "--from",
        &d.a,
        "app",
        "--json",
    ]);
    assert_eq!(report["new"], 2);
    assert_eq!(
        cli_ok(&["db", "get", "--data-dir", &d.b, "app", "notes", "k1"]).trim(),
        "hello"
    );
    assert_eq!(
        cli_ok(&[
            "db",
            "get",
            "--data-dir",
            &d.b,
            "app",
            "notes",
            "bin",
            "--hex"
        ])
        .trim(),
        "00ff"
    );
    let row = json(&[
        "db",
        "get",
        "--data-dir",
        &d.b,
        "app",
        "notes",
        "k1",
        "--json",
    ]);
    assert_eq!(
        (
            row["value"].as_str(),
            row["conflict"].as_array().map(Vec::len)
        ),
        (Some("hello"), Some(0))
    );
    cli_ok(&["db", "delete", "--data-dir", &d.b, "app", "notes", "k1"]);
    cli_ok(&["db", "sync", "--data-dir", &d.a, "--from", &d.b, "app"]);
    cli_fails(
        &["db", "get", "--data-dir", &d.a, "app", "notes", "k1"],
        None,
        "no row notes/k1",
    );
    let batch = "{\"op\":\"put\",\"collection\":\"notes\",\"key\":\"p1\",\"value\":\"1\"}\n{\"op\":\"put\",\"collection\":\"tasks\",\"key\":\"p2\",\"value\":\"2\"}\n";
    let out = common::run_cli(
        &["db", "batch", "--data-dir", &d.a, "app", "-"],
        Some(batch),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    cli_ok(&["db", "sync", "--data-dir", &d.c, "--from", &d.a, "app"]);
    let scan = json(&[
        "db",
        "scan",
        "--data-dir",
        &d.c,
        "app",
        "notes",
        "--prefix",
        "p",
        "--json",
    ]);
    assert_eq!(scan.as_array().map(Vec::len), Some(1));
    assert_eq!(scan[0]["key"], "p1");
}

#[test]
fn conflicts_rules_and_resolution() {
    let d = dirs();
    group(&d);
    for dir in [&d.a, &d.b] {
        cli_ok(&[
            "db",
            "rules",
            "--data-dir",
            dir,
            "app",
            "set",
            "notes/draft-",
            "app",
        ]);
    }
    assert!(
        cli_ok(&["db", "rules", "--data-dir", &d.a, "app", "list"]).contains("notes/draft-\tapp")
    );
    cli_ok(&[
        "db",
        "put",
        "--data-dir",
        &d.a,
        "app",
        "notes",
        "draft-1",
        "mine",
    ]);
    cli_ok(&[
        "db",
        "put",
        "--data-dir",
        &d.b,
        "app",
        "notes",
        "draft-1",
        "theirs",
    ]);
    cli_ok(&[
        "db",
        "put",
        "--data-dir",
        &d.a,
        "app",
        "notes",
        "plain",
        "a",
    ]);
    cli_ok(&[
        "db",
        "put",
        "--data-dir",
        &d.b,
        "app",
        "notes",
        "plain",
        "b (later)",
    ]);
    let report = json(&[
        "db",
        "sync",
        "--data-dir",
        &d.a,
        "--from",
        &d.b,
        "app",
        "--json",
    ]);
    assert_eq!(
        (report["conflicts"].as_u64(), report["resolved"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(
        cli_ok(&["db", "get", "--data-dir", &d.a, "app", "notes", "plain"]).trim(),
        "b (later)"
    );
    let groups = json(&["db", "conflicts", "--data-dir", &d.a, "app", "--json"]);
    assert_eq!(groups[0][0]["key"], "draft-1");
    assert_eq!(groups[0][0]["local"][0], "mine");
    assert_eq!(groups[0][0]["remote"][0], "theirs");
    let row = json(&[
        "db",
        "get",
        "--data-dir",
        &d.a,
        "app",
        "notes",
        "draft-1",
        "--json",
    ]);
    assert_eq!(row["conflict"].as_array().map(Vec::len), Some(1));
    cli_fails(
        &[
            "db",
            "resolve",
            "--data-dir",
            &d.a,
            "app",
            "notes",
            "draft-1",
            "--pick",
            "neither",
        ],
        None,
        "local or remote",
    );
    cli_ok(&[
        "db",
        "resolve",
        "--data-dir",
        &d.a,
        "app",
        "notes",
        "draft-1",
        "--pick",
        "local",
    ]);
    cli_fails(
        &[
            "db",
            "resolve",
            "--data-dir",
            &d.a,
            "app",
            "notes",
            "draft-1",
            "--value",
            "x",
        ],
        None,
        "not in conflict",
    );
    assert_eq!(
        cli_ok(&["db", "conflicts", "--data-dir", &d.a, "app"]).trim(),
        "no conflicts"
    );
    cli_ok(&["db", "sync", "--data-dir", &d.b, "--from", &d.a, "app"]);
    assert_eq!(
        cli_ok(&["db", "get", "--data-dir", &d.b, "app", "notes", "draft-1"]).trim(),
        "mine"
    );
}

#[test]
fn syncgroup_members_leave_eject_and_watch() {
    let d = dirs();
    let (b, c) = group(&d);
    let info = json(&[
        "syncgroup",
        "members",
        "--data-dir",
        &d.a,
        "app",
        "sg",
        "--json",
    ]);
    assert_eq!(info["members"].as_array().map(Vec::len), Some(3));
    assert_eq!(info["writers"][0], b.as_str());
    cli_fails(
        &["db", "put", "--data-dir", &d.c, "app", "notes", "k", "v"],
        None,
        "may not write collection notes",
    );
    cli_fails(
        &[
            "syncgroup",
            "eject",
            "--data-dir",
            &d.b,
            "app",
            "sg",
            "--member",
            &c,
        ],
        None,
        "is not an admin",
    );
    cli_ok(&[
        "syncgroup",
        "eject",
        "--data-dir",
        &d.a,
        "app",
        "sg",
        "--member",
        &c,
    ]);
    cli_ok(&[
        "db",
        "put",
        "--data-dir",
        &d.a,
        "app",
        "notes",
        "secret",
        "s",
    ]);
    cli_fails(
        &["db", "sync", "--data-dir", &d.c, "--from", &d.a, "app"],
        None,
        "may read none",
    );
    cli_ok(&["syncgroup", "leave", "--data-dir", &d.b, "app", "sg"]);
    let info = json(&[
        "syncgroup",
        "members",
        "--data-dir",
        &d.b,
        "app",
        "sg",
        "--json",
    ]);
    let states: Vec<&str> = info["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|m| m["state"].as_str())
        .collect();
    assert!(states.contains(&"left"), "{states:?}");
    let feed = cli_ok(&["db", "watch", "--data-dir", &d.a, "app", "--json"]);
    let lines: Vec<Value> = feed
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.last().expect("entries")["key"], "secret");
    let marker = lines[0]["marker"].as_str().expect("marker").to_string();
    let rest = cli_ok(&[
        "db",
        "watch",
        "--data-dir",
        &d.a,
        "app",
        "--from",
        &marker,
        "--json",
    ]);
    assert_eq!(
        rest.lines().count(),
        lines.len() - 1,
        "resumes after its marker"
    );
}

#[test]
fn bad_input_fails_with_one_line_and_changes_nothing() {
    let d = dirs();
    group(&d);
    cli_ok(&["db", "put", "--data-dir", &d.a, "app", "notes", "k", "v"]);
    let before = cli_ok(&["db", "scan", "--data-dir", &d.a, "app", "notes", "--json"]);
    cli_fails(
        &["db", "put", "--data-dir", &d.a, "bad db", "notes", "k", "v"],
        None,
        "bad database name",
    );
    cli_fails(
        &["db", "put", "--data-dir", &d.a, "app", "notes", "", "v"],
        None,
        "row key must be 1 to",
    );
    cli_fails(
        &[
            "db",
            "put",
            "--data-dir",
            &d.a,
            "app",
            "notes",
            "k",
            "zz",
            "--hex",
        ],
        None,
        "not hex",
    );
    cli_fails(
        &["db", "get", "--data-dir", &d.a, "app", "notes", "missing"],
        None,
        "no row",
    );
    cli_fails(
        &[
            "db",
            "get",
            "--data-dir",
            "/nonexistent/dir",
            "app",
            "notes",
            "k",
        ],
        None,
        "no data directory",
    );
    cli_fails(
        &["db", "batch", "--data-dir", &d.a, "app", "-"],
        Some("{\"op\":\"put\",\"collection\":\"notes\",\"key\":\"n\",\"value\":\"1\"}\nnot json\n"),
        "line 2",
    );
    cli_fails(
        &["db", "batch", "--data-dir", &d.a, "app", "-"],
        Some(""),
        "empty",
    );
    cli_fails(
        &["db", "sync", "--data-dir", &d.a, "--from", &d.a, "app"],
        None,
        "itself",
    );
    cli_fails(
        &[
            "db",
            "rules",
            "--data-dir",
            &d.a,
            "app",
            "set",
            "notes",
            "lww",
        ],
        None,
        "COLLECTION/KEYPREFIX",
    );
    cli_fails(
        &[
            "db",
            "rules",
            "--data-dir",
            &d.a,
            "app",
            "set",
            "notes/",
            "random",
        ],
        None,
        "unknown rule",
    );
    cli_fails(
        &[
            "syncgroup",
            "create",
            "--data-dir",
            &d.a,
            "app",
            "sg",
            "--collections",
            "notes",
        ],
        None,
        "exists",
    );
    cli_fails(
        &[
            "syncgroup",
            "create",
            "--data-dir",
            &d.a,
            "app",
            "sg2",
            "--collections",
            "notes",
            "--writers",
            "xyz",
        ],
        None,
        "bad node id",
    );
    cli_fails(
        &[
            "syncgroup",
            "join",
            "--data-dir",
            &d.b,
            "app",
            "nosuch",
            "--admin-dir",
            &d.a,
        ],
        None,
        "no syncgroup nosuch",
    );
    let outsider = cli_ok(&["db", "id", "--data-dir", &d.c]);
    assert_eq!(outsider.trim().len(), 40);
    let e = tempfile::tempdir().expect("tempdir");
    let e = e.path().join("e");
    cli_fails(
        &[
            "syncgroup",
            "join",
            "--data-dir",
            e.to_str().expect("utf-8"),
            "app",
            "sg",
            "--admin-dir",
            &d.a,
        ],
        None,
        "is not a reader, writer or admin",
    );
    assert_eq!(
        cli_ok(&["db", "scan", "--data-dir", &d.a, "app", "notes", "--json"]),
        before
    );
}

#[test]
fn a_batch_killed_mid_write_is_all_or_nothing() {
    use std::io::Write;
    let d = dirs();
    let lines: String = (0..5000)
        .map(|i| format!("{{\"op\":\"put\",\"collection\":\"notes\",\"key\":\"row{i:05}\",\"value\":\"{}\"}}\n", "v".repeat(300)))
        .collect();
    for delay_ms in [100u64, 400, 600, 800, 1000, 3000] {
        let dir = format!("{}-{delay_ms}", d.a);
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tributary"))
            .args(["db", "batch", "--data-dir", &dir, "app", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(lines.as_bytes()).expect("write");
        drop(stdin);
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        if !std::path::Path::new(&dir).join("store").exists() {
            continue;
        }
        let rows = json(&["db", "scan", "--data-dir", &dir, "app", "notes", "--json"]);
        let n = rows.as_array().map_or(0, Vec::len);
        assert!(
            n == 0 || n == 5000,
            "killed after {delay_ms} ms: {n} rows of a 5,000-row batch"
        );
        println!("killed after {delay_ms} ms: {n} rows");
    }
}
