//! `tributary devnet --nodes 16` as a user runs it: within 30 s of `nodes.json` appearing,
//! every node knows all the others and is connected to every node of its neighbourhood (by
//! the god's-eye depth over all sixteen), the replica demo's rows reach every node,
//! `tributary status` prints the table, and Ctrl-C stops it cleanly.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tributary_chunk::{Address, proximity};
use tributary_overlay::kademlia::depth_of;

const NODES: usize = 16;
/// The neighbourhood size the nodes run with (`KademliaConfig::default`).
const NEIGHBOURHOOD_SIZE: usize = 4;

fn get(api: &str, path: &str) -> Option<Value> {
    let text = ureq::get(&format!("http://{api}{path}"))
        .call()
        .ok()?
        .body_mut()
        .read_to_string()
        .ok()?;
    serde_json::from_str(&text).ok()
}

fn peers_of(t: &Value, key: &str) -> Vec<Address> {
    (0..32)
        .flat_map(|i| {
            t["bins"][format!("bin_{i}")][key]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|p| p["address"].as_str()?.parse().ok())
        .collect()
}

/// What node `me` lacks: others it does not know, and neighbours it is not connected to.
fn lacking(me: Address, all: &[Address], t: &Value) -> (usize, usize) {
    let connected = peers_of(t, "connectedPeers");
    let mut known = peers_of(t, "disconnectedPeers");
    known.extend(&connected);
    let others: Vec<Address> = all.iter().copied().filter(|a| *a != me).collect();
    let depth = depth_of(&me, others.iter().copied(), NEIGHBOURHOOD_SIZE);
    let unknown = others.iter().filter(|a| !known.contains(a)).count();
    let unconnected = others
        .iter()
        .filter(|a| proximity(&me, a) >= depth && !connected.contains(a))
        .count();
    (unknown, unconnected)
}

/// The devnet's `nodes.json`, once it appears (within 60 s).
fn wait_for_nodes(dir: &std::path::Path) -> Vec<Value> {
    let nodes_file = dir.join("nodes.json");
    let started = Instant::now();
    while !nodes_file.exists() {
        assert!(started.elapsed() < Duration::from_secs(60), "no nodes.json");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(50));
    serde_json::from_slice(&std::fs::read(&nodes_file).expect("reads")).expect("json")
}

#[test]
fn sixteen_nodes_know_each_other_and_connect_their_neighbourhoods_within_30_s() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut devnet = Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args([
            "devnet",
            "--nodes",
            &NODES.to_string(),
            "--base-dir",
            dir.path().to_str().expect("utf-8"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starts");
    let infos = wait_for_nodes(dir.path());
    assert_eq!(infos.len(), NODES);
    let all: Vec<Address> = infos
        .iter()
        .map(|i| {
            i["overlay"]
                .as_str()
                .expect("overlay")
                .parse()
                .expect("hex")
        })
        .collect();
    let apis: Vec<String> = infos
        .iter()
        .map(|i| i["api"].as_str().expect("api").to_owned())
        .collect();
    for info in &infos {
        let listen = info["listen"][0].as_str().expect("listen");
        assert!(
            listen.starts_with("/ip4/127.0.0.1/") && listen.contains("/p2p/"),
            "{listen}"
        );
    }
    let listening = Instant::now();
    let mut last: Vec<Option<(usize, usize)>>;
    let healthy = loop {
        last = apis
            .iter()
            .zip(&all)
            .map(|(api, me)| get(api, "/topology").map(|t| lacking(*me, &all, &t)))
            .collect();
        if last.iter().all(|l| l == &Some((0, 0))) {
            break true;
        }
        if listening.elapsed() > Duration::from_secs(30) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let took = listening.elapsed();
    // The replicated-database demo: every node's clock row reaches every other node.
    let replicating = Instant::now();
    let replicated = loop {
        let everywhere = apis.iter().all(|api| {
            (0..NODES).all(|j| {
                ureq::get(&format!("http://{api}/db/demo/clock/node-{j}"))
                    .call()
                    .is_ok_and(|r| r.status() == 200)
            })
        });
        if everywhere || replicating.elapsed() > Duration::from_secs(30) {
            break everywhere;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let status = Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args(["status", "--api", &apis[3]])
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&status.stdout).into_owned();
    // Ctrl-C: the devnet stops its nodes and exits 0.
    let _ = Command::new("kill")
        .args(["-INT", &devnet.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(exit) = devnet.try_wait().expect("waits") {
            break Some(exit);
        }
        if Instant::now() > deadline {
            let _ = devnet.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        healthy,
        "not healthy within 30 s; (unknown, unconnected neighbours) per node: {last:?}"
    );
    println!("{NODES} nodes healthy {took:?} after nodes.json");
    assert!(
        status.status.success() && text.contains(&format!("known {}", NODES - 1)),
        "status printed:\n{text}"
    );
    assert!(
        exit.is_some_and(|e| e.success()),
        "devnet did not stop cleanly on SIGINT: {exit:?}"
    );
    let mut printed = String::new();
    std::io::Read::read_to_string(&mut devnet.stdout.take().expect("piped"), &mut printed)
        .expect("reads");
    assert!(
        printed.contains(&format!("node 15: http://{}", apis[15]))
            && printed.contains("syncgroup demo/devnet shared by the 16 full nodes"),
        "devnet printed:\n{printed}"
    );
    assert!(
        replicated,
        "the demo's clock rows did not reach every node within 30 s"
    );
}

/// Collects the addresses a splitter makes.
struct Addresses(Vec<Address>);

impl tributary_chunk::file::ChunkSink for Addresses {
    fn put(
        &mut self,
        chunk: tributary_chunk::Chunk,
    ) -> Result<(), tributary_chunk::file::StoreError> {
        self.0.push(chunk.address());
        Ok(())
    }
}

/// Seeded bytes (splitmix64).
fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

fn has_chunk(api: &str, address: &Address) -> bool {
    ureq::get(&format!("http://{api}/chunks/{address}?local=true"))
        .call()
        .is_ok_and(|r| r.status() == 200)
}

#[test]
fn a_10_mb_file_uploaded_to_one_of_8_nodes_reaches_every_neighbourhood_within_120_s() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut devnet = Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args(["devnet", "--nodes", "8", "--demo-bytes", "0", "--base-dir"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starts");
    let infos = wait_for_nodes(dir.path());
    let nodes: Vec<(String, Address)> = infos
        .iter()
        .map(|i| {
            let api = i["api"].as_str().expect("api").to_owned();
            (
                api,
                i["overlay"]
                    .as_str()
                    .expect("overlay")
                    .parse()
                    .expect("hex"),
            )
        })
        .collect();

    let data = random_bytes(10_000_000, 10);
    let mut splitter = tributary_chunk::file::Splitter::new(Addresses(Vec::new()));
    splitter.write(&data).expect("split");
    let (root, Addresses(chunks)) = splitter.finish().expect("finish");
    let posted: Value = serde_json::from_str(
        &ureq::post(&format!("http://{}/bytes", nodes[0].0))
            .send(&data[..])
            .expect("uploads")
            .body_mut()
            .read_to_string()
            .expect("body"),
    )
    .expect("json");
    assert_eq!(
        posted["reference"].as_str(),
        Some(root.to_string().as_str())
    );
    let uploaded = Instant::now();

    // Every chunk must reach every node whose proximity to it is at least the node's depth;
    // each (node, chunk) pair is asked for until it is there once.
    let mut present = std::collections::HashSet::new();
    let mut missing: Vec<(usize, Address)>;
    let done = loop {
        let depths: Vec<Option<u8>> = nodes
            .iter()
            .map(|(api, _)| {
                get(api, "/topology")
                    .and_then(|t| t["depth"].as_u64())
                    .map(|d| d as u8)
            })
            .collect();
        missing = Vec::new();
        for c in &chunks {
            for (i, n) in nodes.iter().enumerate() {
                let due = depths[i].is_none_or(|d| proximity(&n.1, c) >= d);
                if !due || present.contains(&(i, *c)) || missing.len() >= 50 {
                    continue;
                }
                if has_chunk(&n.0, c) {
                    present.insert((i, *c));
                } else {
                    missing.push((i, *c));
                }
            }
        }
        if missing.is_empty() {
            break true;
        }
        if uploaded.elapsed() > Duration::from_secs(120) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let took = uploaded.elapsed();
    let _ = Command::new("kill")
        .args(["-INT", &devnet.id().to_string()])
        .status();
    let _ = devnet.wait();
    assert!(
        done,
        "after {took:?} still missing (node, chunk), first 50: {missing:?}"
    );
    println!(
        "{} chunks in every neighbourhood of 8 nodes {took:?} after the upload",
        chunks.len()
    );
}

/// Runs `tributary ARGS`; its stdout, or the failure with its stderr.
fn tributary(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args(args)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "tributary {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_10_mb_upload_with_wait_downloads_byte_equal_from_every_node_and_a_light_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut devnet = Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args([
            "devnet",
            "--nodes",
            "8",
            "--demo-bytes",
            "0",
            "--light-nodes",
            "1",
        ])
        .arg("--base-dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starts");
    let infos = wait_for_nodes(dir.path());
    let mut apis: Vec<String> = infos
        .iter()
        .map(|i| i["api"].as_str().expect("api").to_owned())
        .collect();
    let light_file = dir.path().join("light-0").join("node.json");
    let started = Instant::now();
    while !light_file.exists() {
        assert!(started.elapsed() < Duration::from_secs(60), "no light node");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(50));
    let light: Value =
        serde_json::from_slice(&std::fs::read(&light_file).expect("reads")).expect("json");
    apis.push(light["api"].as_str().expect("api").to_owned());
    // Every node connected to someone before the upload.
    for api in &apis {
        let started = Instant::now();
        while get(api, "/peers").is_none_or(|p| p["peers"].as_array().is_none_or(Vec::is_empty)) {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{api} has no peer"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    let data = random_bytes(10_000_000, 11);
    let file = dir.path().join("upload.bin");
    std::fs::write(&file, &data).expect("writes");
    let start = Instant::now();
    let up: Value = serde_json::from_str(&tributary(&[
        "upload",
        file.to_str().expect("utf-8"),
        "--api",
        &apis[0],
        "--wait",
        "--json",
    ]))
    .expect("json");
    let pushed = start.elapsed();
    assert_eq!(up["tag"]["failed"], 0, "{up}");
    assert_eq!(up["tag"]["synced"], up["tag"]["split"], "{up}");
    let reference = up["reference"].as_str().expect("reference").to_owned();

    let mut took = Vec::new();
    for (i, api) in apis.iter().enumerate().skip(1) {
        let out = dir.path().join(format!("download-{i}.bin"));
        let start = Instant::now();
        tributary(&[
            "download",
            &reference,
            "-o",
            out.to_str().expect("utf-8"),
            "--api",
            api,
        ]);
        took.push(start.elapsed());
        assert!(
            std::fs::read(&out).expect("reads") == data,
            "the file downloaded from node {i} differs"
        );
    }
    let _ = Command::new("kill")
        .args(["-INT", &devnet.id().to_string()])
        .status();
    let _ = devnet.wait();
    println!(
        "10 MB: pushed with every receipt in {pushed:?}; downloads from nodes 1-7 and the light \
         node took {took:?}"
    );
}
