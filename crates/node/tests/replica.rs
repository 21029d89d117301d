//! Replicated databases between real nodes on 127.0.0.1, over `/tributary/replica/1` and the
//! HTTP API (as Syncbase's featuretests): writes on each member arrive on the others, a batch
//! arrives whole, an ejected reader stops receiving, concurrent offline writes resolve the
//! same way everywhere, and an app resolver over HTTP resolves a conflict once for the group.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Node, agent, eventually};
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(30);

fn id(node: &Node) -> String {
    node.info["ethereum"]
        .as_str()
        .expect("ethereum")
        .to_string()
}

fn send(node: &Node, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let url = format!("{}{path}", node.base);
    let mut response = match method {
        "PUT" => agent().put(&url).send(body),
        "POST" => agent().post(&url).send(body),
        "DELETE" => agent().delete(&url).call(),
        _ => agent().get(&url).call(),
    }
    .expect("request");
    let status = response.status().as_u16();
    (
        status,
        response.body_mut().read_to_string().unwrap_or_default(),
    )
}

fn ok(node: &Node, method: &str, path: &str, body: &[u8]) -> String {
    let (status, text) = send(node, method, path, body);
    assert!(
        (200..300).contains(&status),
        "{method} {path}: {status} {text}"
    );
    text
}

fn value(node: &Node, path: &str) -> Option<String> {
    let (status, text) = send(node, "GET", path, b"");
    (status == 200).then_some(text)
}

fn connected(node: &Node, n: u64) {
    eventually(LIMIT, "peers connected", || {
        node.metric("tributary_overlay_connected_peers") >= n as f64
    });
}

/// A, then B and C bootstrapping from A; A creates `demo/sg` sharing `notes` with writers
/// `writers` and readers `readers` (node indices), and every other node given joins.
fn group(dirs: &[tempfile::TempDir], writers: &[usize], readers: &[usize]) -> Vec<Node> {
    let a = Node::start(dirs[0].path());
    let mut nodes = vec![a];
    for dir in &dirs[1..] {
        let boot = nodes[0].addr();
        nodes.push(Node::start_with(dir.path(), &[boot], 1));
    }
    connected(&nodes[0], (nodes.len() - 1) as u64);
    let ids = |list: &[usize]| list.iter().map(|&i| id(&nodes[i])).collect::<Vec<_>>();
    let spec = json!({
        "db": "demo", "name": "sg", "collections": ["notes"],
        "writers": ids(writers), "readers": ids(readers),
    });
    ok(
        &nodes[0],
        "POST",
        "/syncgroups",
        spec.to_string().as_bytes(),
    );
    for (i, node) in nodes.iter().enumerate().skip(1) {
        // One joins by multiaddr, the others by node id (they are connected to the admin).
        let admin = if i == 1 {
            nodes[0].addr()
        } else {
            id(&nodes[0])
        };
        let body = json!({ "admin": admin }).to_string();
        ok(node, "POST", "/syncgroups/demo/sg/join", body.as_bytes());
    }
    nodes
}

fn dirs(n: usize) -> Vec<tempfile::TempDir> {
    (0..n)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect()
}

#[test]
fn writes_on_each_member_arrive_on_the_others_and_a_batch_arrives_whole() {
    let dirs = dirs(3);
    let created = Instant::now();
    let nodes = group(&dirs, &[1, 2], &[]);
    for (i, node) in nodes.iter().enumerate() {
        let path = format!("/db/demo/notes/from-{i}");
        ok(node, "PUT", &path, format!("hello from {i}").as_bytes());
    }
    let start = Instant::now();
    for node in &nodes {
        for i in 0..nodes.len() {
            let path = format!("/db/demo/notes/from-{i}");
            eventually(LIMIT, "a write arrives", || {
                value(node, &path).as_deref() == Some(&format!("hello from {i}"))
            });
        }
    }
    println!("3 writes on 3 members everywhere in {:?}", start.elapsed());

    let lines: String = (0..100)
        .map(|k| format!("{}\n", json!({"op": "put", "collection": "notes", "key": format!("batch-{k:03}"), "value": "v"})))
        .collect();
    ok(&nodes[1], "POST", "/db/demo/batch", lines.as_bytes());
    let c = &nodes[2];
    eventually(LIMIT, "the batch arrives", || {
        let rows: Value =
            serde_json::from_str(&ok(c, "GET", "/db/demo/notes?prefix=batch-", b"")).expect("json");
        let n = rows.as_array().expect("rows").len();
        assert!(
            n == 0 || n == 100,
            "a reader saw {n} rows of a 100-row batch"
        );
        n == 100
    });
    // A scan comes in pages: `limit` rows, `x-tributary-more` while rows follow, `after` the
    // last key for the next page.
    let page = |after: &str| -> (Vec<String>, String) {
        let url = format!(
            "{}/db/demo/notes?prefix=batch-&limit=40&after={after}",
            c.base
        );
        let mut response = agent().get(&url).call().expect("scan");
        assert_eq!(response.status().as_u16(), 200);
        let more = response.headers()["x-tributary-more"]
            .to_str()
            .expect("ASCII")
            .to_string();
        let rows: Value =
            serde_json::from_str(&response.body_mut().read_to_string().expect("body"))
                .expect("json");
        let keys = rows.as_array().expect("rows").iter();
        (
            keys.map(|r| r["key"].as_str().expect("key").into())
                .collect(),
            more,
        )
    };
    let (mut after, mut sizes) = (String::new(), Vec::new());
    loop {
        let (keys, more) = page(&after);
        sizes.push(keys.len());
        assert!(sizes.len() < 10, "pages do not end: {sizes:?}");
        after = keys.last().cloned().unwrap_or_default();
        if more == "false" {
            break;
        }
    }
    assert_eq!(sizes, [40, 40, 20]);
    assert_eq!(after, "batch-099");
    // A careless client: a value over 1 MiB, a reserved collection, a bad batch line, scan
    // limits out of range; each answered in the API's JSON shape, nothing written.
    let huge = vec![b'x'; (1 << 20) + 1];
    for (method, path, body, code) in [
        ("PUT", "/db/demo/notes/huge", &huge[..], 413),
        ("PUT", "/db/demo/watch/k", b"v".as_slice(), 400),
        ("PUT", "/db/demo/blobs2/k", b"v".as_slice(), 200),
        (
            "POST",
            "/db/demo/batch",
            b"{\"op\": \"put\"}".as_slice(),
            400,
        ),
        ("PUT", "/db/bad%20name/notes/k", b"v".as_slice(), 400),
        ("GET", "/db/demo/notes?limit=0", b"".as_slice(), 400),
        ("GET", "/db/demo/notes?limit=10001", b"".as_slice(), 400),
        ("GET", "/db/demo/notes?limit=ten", b"".as_slice(), 400),
    ] {
        let (status, text) = send(&nodes[0], method, path, body);
        assert_eq!(status, code, "{method} {path}: {text}");
        if code != 200 {
            let v: Value = serde_json::from_str(&text).expect("a JSON error");
            assert_eq!(v["code"], code, "{text}");
        }
    }
    assert_eq!(value(&nodes[0], "/db/demo/notes/huge"), None);
    let applied = c.metric("tributary_replica_records_applied_total");
    assert!(applied >= 102.0, "records applied on C: {applied}");
    // The syncgroup's lag counts from when C first synced the database, and falls back near
    // zero at each round that ends complete (every 3 s ± 25%).
    let sample = "tributary_replica_syncgroup_lag_seconds{db=\"demo\",syncgroup=\"sg\"} ";
    let lag = || -> f64 {
        let text = c.get_text("/metrics");
        let line = text.lines().find(|l| l.starts_with(sample));
        let value = line.and_then(|l| l[sample.len()..].parse().ok());
        value.unwrap_or_else(|| panic!("no lag of syncgroup sg in:\n{text}"))
    };
    eventually(
        LIMIT,
        "a lag under 1 s, 6 s after the syncgroup was made",
        || created.elapsed() > Duration::from_secs(6) && lag() < 1.0,
    );
}

#[test]
fn an_ejected_reader_stops_receiving() {
    let dirs = dirs(3);
    // B reads, C writes.
    let nodes = group(&dirs, &[2], &[1]);
    ok(&nodes[0], "PUT", "/db/demo/notes/one", b"1");
    for node in &nodes[1..] {
        eventually(LIMIT, "row one arrives", || {
            value(node, "/db/demo/notes/one").is_some()
        });
    }
    let (status, text) = send(&nodes[1], "PUT", "/db/demo/notes/mine", b"x");
    assert_eq!(status, 403, "a reader's write is refused: {text}");

    let body = json!({ "member": id(&nodes[1]) }).to_string();
    ok(
        &nodes[0],
        "POST",
        "/syncgroups/demo/sg/eject",
        body.as_bytes(),
    );
    ok(&nodes[0], "PUT", "/db/demo/notes/two", b"2");
    eventually(LIMIT, "row two reaches the writer", || {
        value(&nodes[2], "/db/demo/notes/two").is_some()
    });
    // Several rounds (3 s each) pass; the ejected reader gets nothing more.
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(value(&nodes[1], "/db/demo/notes/two"), None);
    let info: Value =
        serde_json::from_str(&ok(&nodes[0], "GET", "/syncgroups/demo/sg", b"")).expect("json");
    let states: Vec<&str> = info["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter(|m| m["id"] == id(&nodes[1]))
        .map(|m| m["state"].as_str().expect("state"))
        .collect();
    assert_eq!(states, ["ejected"], "{info}");
}

/// Writes `value` to `notes/row` in a stopped node's data directory, as an offline write.
fn offline_write(dir: &std::path::Path, value: &[u8]) {
    let identity = tributary_node::identity::load_or_create(dir).expect("identity");
    let store = tributary_node::open_store(dir).expect("store");
    let mut r = tributary_replica::Replica::open(
        store as Arc<dyn tributary_store::KvStore>,
        identity.identity,
        tributary_replica::ReplicaConfig::default(),
    )
    .expect("replica");
    r.put(
        tributary_node::replica::now_ms(),
        "demo",
        "notes",
        "row",
        value,
    )
    .expect("offline put");
}

#[test]
fn concurrent_writes_resolve_alike_and_an_app_resolver_answers_once_for_the_group() {
    let dirs = dirs(3);
    let mut nodes = group(&dirs, &[1, 2], &[]);
    ok(&nodes[0], "PUT", "/db/demo/notes/row", b"base");
    for node in &nodes {
        eventually(LIMIT, "the base arrives", || {
            value(node, "/db/demo/notes/row").as_deref() == Some("base")
        });
    }
    // C stops; A and C write the row concurrently; C comes back.
    let c = nodes.pop().expect("C");
    c.stop();
    ok(&nodes[0], "PUT", "/db/demo/notes/row", b"from A");
    offline_write(dirs[2].path(), b"from C");
    nodes.push(Node::start_with(dirs[2].path(), &[nodes[0].addr()], 1));
    let mut seen = Vec::new();
    eventually(LIMIT, "the conflict resolves alike everywhere", || {
        seen = nodes
            .iter()
            .map(|n| value(n, "/db/demo/notes/row"))
            .collect();
        seen.iter().all(|v| v.is_some() && *v == seen[0]) && seen[0].as_deref() != Some("base")
    });
    println!("last-writer-wins everywhere: {:?}", seen[0]);

    // Now under the app rule, with a resolver on A only.
    for node in &nodes {
        let rule = json!({ "collection": "notes", "prefix": "", "rule": "app" }).to_string();
        ok(node, "PUT", "/db/demo/rules", rule.as_bytes());
    }
    let c = nodes.pop().expect("C");
    c.stop();
    ok(&nodes[0], "PUT", "/db/demo/notes/row", b"A again");
    offline_write(dirs[2].path(), b"C again");
    let base = nodes[0].base.clone();
    let resolver = std::thread::spawn(move || {
        let url = format!("{base}/db/demo/conflicts?wait=true");
        let started = Instant::now();
        loop {
            assert!(
                started.elapsed() < LIMIT,
                "no conflict to resolve within {LIMIT:?}"
            );
            let text = agent()
                .get(&url)
                .call()
                .expect("wait")
                .body_mut()
                .read_to_string()
                .expect("body");
            let groups: Value = serde_json::from_str(&text).expect("json");
            if let Some(group) = groups.as_array().and_then(|g| g.first()) {
                let answers: Vec<Value> = group
                    .as_array()
                    .expect("group")
                    .iter()
                    .map(|c| json!({"collection": c["collection"], "key": c["key"], "choice": "value", "value": "merged"}))
                    .collect();
                let body = Value::Array(answers).to_string();
                let mut r = agent()
                    .post(&format!("{base}/db/demo/conflicts/resolve"))
                    .send(body.as_bytes())
                    .expect("resolve");
                assert_eq!(
                    r.status().as_u16(),
                    200,
                    "{}",
                    r.body_mut().read_to_string().unwrap_or_default()
                );
                return 1;
            }
        }
    });
    nodes.push(Node::start_with(dirs[2].path(), &[nodes[0].addr()], 1));
    let resolved = resolver.join().expect("resolver");
    assert_eq!(resolved, 1);
    for (i, node) in nodes.iter().enumerate() {
        let arrived = (0..300).any(|_| {
            std::thread::sleep(Duration::from_millis(100));
            value(node, "/db/demo/notes/row").as_deref() == Some("merged")
        });
        assert!(
            arrived,
            "node {i}: {:?}, conflicts {}, {}",
            ok(node, "GET", "/db/demo/notes/row?meta=true", b""),
            ok(node, "GET", "/db/demo/conflicts", b""),
            node.get_text("/metrics")
                .lines()
                .filter(|l| l.starts_with("tributary_replica")
                    || l.starts_with("tributary_overlay_connected"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        eventually(LIMIT, "no conflict is left", || {
            ok(node, "GET", "/db/demo/conflicts", b"") == "[]"
        });
    }
}

/// The first `n` changes of B's watch stream after `from` (blank heartbeat lines skipped).
fn watch(node: &Node, from: u64, n: usize) -> Vec<Value> {
    use std::io::BufRead;
    let url = format!("{}/db/demo/watch?from={from}", node.base);
    let response = agent().get(&url).call().expect("watch");
    assert_eq!(response.status().as_u16(), 200);
    let reader = std::io::BufReader::new(response.into_body().into_reader());
    reader
        .lines()
        .map(|l| l.expect("line"))
        .filter(|l| !l.trim().is_empty())
        .take(n)
        .map(|l| serde_json::from_str(&l).expect("json"))
        .collect()
}

#[test]
fn watch_resumes_across_a_restart_missing_nothing_and_repeating_nothing() {
    let dirs = dirs(2);
    let mut nodes = group(&dirs, &[1], &[]);
    for k in 0..10 {
        ok(
            &nodes[0],
            "PUT",
            &format!("/db/demo/notes/k{k:02}"),
            b"first",
        );
    }
    let first = watch(&nodes[1], 0, 10);
    let keys = |entries: &[Value]| -> Vec<String> {
        entries
            .iter()
            .map(|e| e["key"].as_str().expect("key").to_string())
            .collect()
    };
    assert_eq!(
        keys(&first),
        (0..10).map(|k| format!("k{k:02}")).collect::<Vec<_>>()
    );
    assert!(
        first
            .iter()
            .all(|e| e["from_sync"] == true && e["value"] == "first")
    );
    let marker = first.last().expect("entries")["marker"]
        .as_u64()
        .expect("marker");

    // B stops; A writes; B comes back, syncs, and writes one of its own.
    let b = nodes.pop().expect("B");
    b.stop();
    for k in 10..20 {
        ok(
            &nodes[0],
            "PUT",
            &format!("/db/demo/notes/k{k:02}"),
            b"second",
        );
    }
    nodes.push(Node::start_with(dirs[1].path(), &[nodes[0].addr()], 1));
    eventually(LIMIT, "the writes made while B was down arrive", || {
        value(&nodes[1], "/db/demo/notes/k19").is_some()
    });
    ok(&nodes[1], "PUT", "/db/demo/notes/local", b"mine");
    let rest = watch(&nodes[1], marker, 11);
    let mut want: Vec<String> = (10..20).map(|k| format!("k{k:02}")).collect();
    want.push("local".into());
    assert_eq!(keys(&rest), want, "{rest:?}");
    let markers: Vec<u64> = rest
        .iter()
        .map(|e| e["marker"].as_u64().expect("m"))
        .collect();
    assert!(markers.windows(2).all(|w| w[0] < w[1]) && markers[0] > marker);
    assert_eq!(rest[10]["from_sync"], false);

    // A marker from the future or not a number is a clear error.
    let (status, text) = send(&nodes[1], "GET", "/db/demo/watch?from=abc", b"");
    assert_eq!(status, 400, "{text}");
}

mod hostile {
    use libp2p::request_response::{Event, Message as RrMessage};
    use libp2p::swarm::SwarmEvent;
    use prost::Message;
    use serde_json::json;
    use tributary_node::runtime::BehaviourEvent;
    use tributary_wire::replica::{
        DeltaFrame, DeltaFrames, JoinRequest, LogRecord, ReplicaReply, ReplicaRequest,
        replica_reply, replica_request,
    };

    use super::common::{Node, rogue};
    use super::{ok, value};

    /// 100 records of demo/notes (one batch, and so above the threshold where signatures are
    /// checked in parallel), made and signed by a throwaway key, as a stranger would get
    /// them.
    fn records_signed_by_another_key() -> Vec<LogRecord> {
        use tributary_replica::{Op, Replica, ReplicaConfig};
        let store = std::sync::Arc::new(tributary_store::MemStore::new());
        let key = tributary_node::NodeIdentity::from_secret(&[99; 32], [7; 32]).expect("key");
        let mut other = Replica::open(store, key.identity, ReplicaConfig::default()).expect("open");
        let stranger = tributary_replica::NodeId([5; 20]);
        let spec = tributary_replica::syncgroup::Spec {
            name: "sg".into(),
            collections: vec!["notes".into()],
            readers: vec![stranger],
            ..Default::default()
        };
        other.create_syncgroup(1, "demo", spec).expect("create");
        let ops: Vec<Op> = (0..100)
            .map(|i| Op::Put {
                collection: "notes".into(),
                key: format!("forged-{i:03}"),
                value: b"lies".to_vec(),
            })
            .collect();
        other.batch(2, "demo", &ops).expect("batch");
        let mut req = other.delta_request("demo").expect("request");
        req.initiator = stranger.0.to_vec();
        req.knowledge[0].gens.clear();
        let mut answer = other.answer(&req, stranger).expect("answer");
        answer
            .next_frame(&other)
            .expect("frame")
            .expect("some")
            .records
    }

    #[test]
    fn a_malformed_replica_request_disconnects_the_sender() {
        let dir = tempfile::tempdir().expect("tempdir");
        let node = Node::start(dir.path());
        let mut sent = false;
        let closed = rogue::run(&node.addr(), 61, |swarm, peer, seen| {
            if matches!(seen, rogue::Seen::Ready) && !sent {
                sent = true;
                swarm
                    .behaviour_mut()
                    .replica_mut()
                    .send_request(&peer, vec![0xff; 64]);
            }
            None
        });
        assert!(closed, "the node kept a peer that sent garbage");
        assert!(node.metric("tributary_replica_penalized_total") >= 1.0);
    }

    /// The rogue joins a syncgroup as a writer, then answers the node's GetDeltas with a
    /// record whose signature is not its own.
    #[test]
    fn a_member_that_sends_a_forged_record_is_disconnected_and_nothing_is_applied() {
        let dir = tempfile::tempdir().expect("tempdir");
        let node = Node::start(dir.path());
        let rogue_id = hex::encode(
            tributary_node::NodeIdentity::from_secret(&[62; 32], [7; 32])
                .expect("key")
                .identity
                .eth_address(),
        );
        let spec = json!({
            "db": "demo", "name": "sg", "collections": ["notes"], "writers": [rogue_id],
        });
        ok(&node, "POST", "/syncgroups", spec.to_string().as_bytes());
        let mut joined = false;
        let closed = rogue::run(&node.addr(), 62, |swarm, peer, seen| {
            match seen {
                rogue::Seen::Ready if !joined => {
                    joined = true;
                    let join = ReplicaRequest {
                        message: Some(replica_request::Message::Join(JoinRequest {
                            db: "demo".into(),
                            syncgroup: "sg".into(),
                        })),
                    };
                    swarm
                        .behaviour_mut()
                        .replica_mut()
                        .send_request(&peer, join.encode_to_vec());
                }
                rogue::Seen::Event(event) => {
                    if let SwarmEvent::Behaviour(BehaviourEvent::Replica(Event::Message {
                        message: RrMessage::Request { channel, .. },
                        ..
                    })) = *event
                    {
                        // Well formed, its version right, signed by another key than
                        // the author it names.
                        let mut forged = records_signed_by_another_key();
                        for r in &mut forged {
                            r.author = hex::decode(&rogue_id).expect("hex");
                        }
                        let reply = ReplicaReply {
                            message: Some(replica_reply::Message::Frames(DeltaFrames {
                                frames: vec![DeltaFrame {
                                    records: forged,
                                    last: true,
                                    ..DeltaFrame::default()
                                }],
                                more: false,
                            })),
                        };
                        let _ = swarm
                            .behaviour_mut()
                            .replica_mut()
                            .send_response(channel, reply.encode_to_vec());
                    }
                }
                rogue::Seen::Ready => {}
            }
            None
        });
        assert!(closed, "the node kept a member that sent a forged record");
        assert!(node.metric("tributary_replica_records_refused_total") >= 100.0);
        assert_eq!(value(&node, "/db/demo/notes/forged-000"), None);
    }
}

/// Two nodes started without bootnodes or addresses find each other with mDNS on the local
/// network and sync a syncgroup (the joiner names the admin by node id only).
#[test]
fn mdns_finds_a_member_on_the_local_network() {
    let dirs = dirs(2);
    // A network id of this run alone, so that no other node on the segment is taken in.
    let network_id = 0x6d64_6e73_0000 + u64::from(std::process::id());
    let a = Node::start_mdns(dirs[0].path(), "/ip4/0.0.0.0/tcp/0", network_id);
    let b = Node::start_mdns(dirs[1].path(), "/ip4/0.0.0.0/tcp/0", network_id);
    let found = eventually(LIMIT, "the nodes find each other by mDNS", || {
        a.metric("tributary_overlay_connected_peers") >= 1.0
            && b.metric("tributary_overlay_connected_peers") >= 1.0
    });
    println!("found by mDNS in {found:?}");
    // One side's discovery is enough: its dial connects both.
    let discovered =
        a.metric("tributary_mdns_discovered_total") + b.metric("tributary_mdns_discovered_total");
    assert!(discovered >= 1.0, "connected, but not through mDNS");
    let spec = json!({ "db": "demo", "name": "sg", "collections": ["notes"], "writers": [id(&b)] });
    ok(&a, "POST", "/syncgroups", spec.to_string().as_bytes());
    let join = json!({ "admin": id(&a) }).to_string();
    ok(&b, "POST", "/syncgroups/demo/sg/join", join.as_bytes());
    ok(&a, "PUT", "/db/demo/notes/hello", b"local network");
    eventually(LIMIT, "the row reaches B", || {
        value(&b, "/db/demo/notes/hello").as_deref() == Some("local network")
    });
}

/// A blob posted on one member is referenced by a row; another member reads the row and
/// the blob. The reader is a light node: pull-sync brings it no chunks (it holds none of the
/// blob's before the read, and caches none after), so the bytes can only come through
/// retrieval, which its counters show.
#[test]
fn a_blob_written_on_one_node_is_read_on_another() {
    let dirs = dirs(3);
    let a = Node::start(dirs[0].path());
    let b = Node::start_with(dirs[1].path(), &[a.addr()], 1);
    let reader = Node::start_light(dirs[2].path(), &[a.addr()]);
    // A light peer is not in the Kademlia table: each side counts its full peers.
    connected(&a, 1);
    connected(&reader, 1);
    let spec = json!({
        "db": "demo", "name": "sg", "collections": ["notes"],
        "writers": [id(&b)], "readers": [id(&reader)],
    });
    ok(&a, "POST", "/syncgroups", spec.to_string().as_bytes());
    for (node, admin) in [(&b, a.addr()), (&reader, id(&a))] {
        let body = json!({ "admin": admin }).to_string();
        ok(node, "POST", "/syncgroups/demo/sg/join", body.as_bytes());
    }
    let blob = common::data(300_000, 9);
    let url = format!("{}/db/demo/blobs", b.base);
    let mut response = agent().post(&url).send(&blob[..]).expect("POST blob");
    assert_eq!(response.status().as_u16(), 201);
    let posted: Value =
        serde_json::from_str(&response.body_mut().read_to_string().expect("body")).expect("json");
    let reference = posted["reference"].as_str().expect("reference").to_string();
    ok(&b, "PUT", "/db/demo/notes/picture", reference.as_bytes());
    eventually(LIMIT, "the row reaches the reader", || {
        value(&reader, "/db/demo/notes/picture").as_deref() == Some(&reference)
    });
    let local = format!("/chunks/{reference}?local=true");
    assert_eq!(
        send(&reader, "GET", &local, b"").0,
        404,
        "the root chunk is local"
    );
    let asked = reader.metric("tributary_retrieval_requests_total");
    let got = agent()
        .get(&format!("{}/db/demo/blobs/{reference}", reader.base))
        .call()
        .expect("GET blob")
        .body_mut()
        .with_config()
        .limit(10 << 20)
        .read_to_vec()
        .expect("bytes");
    assert_eq!(got.len(), blob.len());
    assert!(got == blob, "the reader read other bytes");
    let fetched = reader.metric("tributary_retrieval_requests_total") - asked;
    println!("{fetched} retrieval requests for the blob");
    // 300,000 bytes are 74 data chunks and their tree: every one retrieved.
    assert!(fetched >= 74.0, "only {fetched} retrieval requests");
    assert_eq!(
        send(&reader, "GET", &local, b"").0,
        404,
        "a light node cached"
    );
    let (status, _) = send(&reader, "GET", "/db/bad%20name/blobs/00", b"");
    assert_eq!(status, 400);
}

/// A joiner that needs more than one reply's budget (4 MiB of records; 10 MB here) gets the rest by
/// asking again from the knowledge the first reply gave.
#[test]
fn a_join_larger_than_one_reply_converges_over_several() {
    let dirs = dirs(2);
    let a = Node::start(dirs[0].path());
    let b_first = Node::start(dirs[1].path());
    let b_id = id(&b_first);
    b_first.stop();
    let spec = json!({ "db": "demo", "name": "sg", "collections": ["notes"], "writers": [b_id] });
    ok(&a, "POST", "/syncgroups", spec.to_string().as_bytes());
    let value = "x".repeat(1024);
    for batch in 0..3 {
        let lines: String = (0..3000)
            .map(|k| {
                let key = format!("big-{batch}-{k:04}");
                format!(
                    "{}\n",
                    json!({"op": "put", "collection": "notes", "key": key, "value": value})
                )
            })
            .collect();
        ok(&a, "POST", "/db/demo/batch", lines.as_bytes());
    }
    let b = Node::start_with(dirs[1].path(), &[a.addr()], 1);
    connected(&b, 1);
    let join = json!({ "admin": a.addr() }).to_string();
    ok(&b, "POST", "/syncgroups/demo/sg/join", join.as_bytes());
    eventually(LIMIT, "all 9,000 rows reach B", || {
        b.metric("tributary_replica_records_applied_total") >= 9000.0
    });
    let rows: Value =
        serde_json::from_str(&ok(&b, "GET", "/db/demo/notes?prefix=big-", b"")).expect("json");
    assert_eq!(rows.as_array().map(Vec::len), Some(9000));
    let more = b.metric("tributary_replica_continuations_total");
    assert!(more >= 1.0, "10 MB of records came without a continuation");
    assert_eq!(b.metric("tributary_replica_penalized_total"), 0.0);
}
