//! `tributary db … --api` and `tributary syncgroup … --api` against running node processes:
//! a syncgroup of three nodes made and joined from the command line, rows that arrive,
//! concurrent writes while one node is killed with SIGKILL that resolve alike everywhere once
//! it restarts, watch and scan, and bad input that fails with one line.

mod common;

use std::time::{Duration, Instant};

use common::{NodeProcess, cli_fails, cli_ok, run_cli};
use serde_json::{Value, json};

fn get(api: &str, key: &str) -> Option<String> {
    let out = run_cli(&["db", "get", "--api", api, "demo", "notes", key], None);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn until(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "not within 30 s: {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn three_nodes_driven_from_the_command_line_and_one_killed_mid_conflict() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = |n: &str| tmp.path().join(n);
    let a = NodeProcess::start(&dir("a"));
    let b = NodeProcess::start(&dir("b"));
    let mut c = NodeProcess::start(&dir("c"));
    let id = |api: &str| cli_ok(&["db", "id", "--api", api]).trim().to_string();
    let writers = format!("{},{}", id(&b.2), id(&c.2));
    cli_ok(&[
        "syncgroup",
        "create",
        "--api",
        &a.2,
        "demo",
        "sg",
        "--collections",
        "notes",
        "--writers",
        &writers,
    ]);
    for node in [&b, &c] {
        let out = cli_ok(&[
            "syncgroup",
            "join",
            "--api",
            &node.2,
            "demo",
            "sg",
            "--admin",
            &a.1,
        ]);
        assert!(out.contains("joined sg"), "{out}");
    }
    let members: Value = serde_json::from_str(&cli_ok(&[
        "syncgroup",
        "members",
        "--api",
        &a.2,
        "demo",
        "sg",
        "--json",
    ]))
    .expect("json");
    assert_eq!(
        members["members"].as_array().map(Vec::len),
        Some(3),
        "{members}"
    );

    cli_ok(&["db", "put", "--api", &a.2, "demo", "notes", "k", "v1"]);
    until("v1 reaches c", || get(&c.2, "k").as_deref() == Some("v1"));
    // A key that needs percent-encoding reaches its row.
    cli_ok(&[
        "db", "put", "--api", &b.2, "demo", "notes", "a/b c?d%", "odd",
    ]);
    until("the odd key reaches a", || {
        get(&a.2, "a/b c?d%").as_deref() == Some("odd")
    });

    // c is killed; a and c (offline, in its data directory) write the same row; c restarts.
    drop(c);
    cli_ok(&["db", "put", "--api", &a.2, "demo", "notes", "k", "from a"]);
    let c_dir = dir("c");
    let c_dir = c_dir.to_str().expect("utf-8");
    cli_ok(&[
        "db",
        "put",
        "--data-dir",
        c_dir,
        "demo",
        "notes",
        "k",
        "from c",
    ]);
    c = NodeProcess::start(&dir("c"));
    let mut seen = Vec::new();
    until("the conflict resolves alike on all three", || {
        seen = [&a.2, &b.2, &c.2].iter().map(|api| get(api, "k")).collect();
        seen.iter().all(|v| v.is_some() && *v == seen[0]) && seen[0].as_deref() != Some("v1")
    });

    let watched = cli_ok(&[
        "db", "watch", "--api", &b.2, "demo", "--from", "0", "--limit", "2",
    ]);
    let lines: Vec<Value> = watched
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), 2, "{watched}");
    assert_eq!(lines[0]["key"], "k");
    let rows: Value = serde_json::from_str(&cli_ok(&[
        "db", "scan", "--api", &c.2, "demo", "notes", "--json",
    ]))
    .expect("json");
    assert_eq!(rows.as_array().map(Vec::len), Some(2), "{rows}");
    // A scan over several pages: every row, once, in key order.
    let lines: String = (0..2500)
        .map(|i| {
            format!(
                "{}\n",
                json!({"op": "put", "collection": "bulk", "key": format!("r{i:05}"), "value": "x"})
            )
        })
        .collect();
    let file = dir("bulk.jsonl");
    std::fs::write(&file, lines).expect("write");
    cli_ok(&[
        "db",
        "batch",
        "--api",
        &a.2,
        "demo",
        file.to_str().expect("utf-8"),
    ]);
    let listed = cli_ok(&["db", "scan", "--api", &a.2, "demo", "bulk"]);
    let keys: Vec<&str> = listed
        .lines()
        .filter_map(|l| l.split('\t').next())
        .collect();
    let expected: Vec<String> = (0..2500).map(|i| format!("r{i:05}")).collect();
    assert_eq!(keys, expected, "every row once, in order");

    cli_fails(
        &["db", "put", "--api", &a.2, "bad name", "notes", "k", "v"],
        None,
        "bad database name",
    );
    cli_fails(
        &[
            "db",
            "put",
            "--api",
            "127.0.0.1:1",
            "demo",
            "notes",
            "k",
            "v",
        ],
        None,
        "cannot reach the node",
    );
    cli_fails(
        &["db", "sync", "--api", &a.2, "--from", c_dir, "demo"],
        None,
        "syncs by itself",
    );
    cli_fails(
        &[
            "syncgroup",
            "join",
            "--api",
            &b.2,
            "demo",
            "sg",
            "--admin-dir",
            c_dir,
        ],
        None,
        "--admin MULTIADDR",
    );
}
