//! `tributary devnet`: N nodes on 127.0.0.1 in one process, the first the others' bootnode.
//!
//! Each node gets its own data directory `DIR/node-<i>` and listens on TCP and QUIC with
//! port 0. Once all are listening, `DIR/nodes.json` holds their `node.json` objects (in
//! order), their API addresses are printed, and every few seconds a line tells how the
//! network is doing, until Ctrl-C: peers known and connected and chunks stored (per node:
//! least and most), how many pull-sync streams are still historical, how many uploads are
//! still pushing and how many chunks retrieval has served.
//!
//! The full nodes share a replicated database ([`replica`]): node 0 creates syncgroup
//! `demo/devnet`, the others join it, each writes its clock row every second, and the
//! periodic line shows the replica lag.
//!
//! Beside the full nodes run `--light-nodes` light nodes (`DIR/light-<i>`, not in
//! `nodes.json`): they store no one's chunks and read through retrieval.
//!
//! Unless `--demo-bytes 0`, a file of seeded random bytes is uploaded into node 0 once all
//! listen, so the periodic line shows pull-sync spreading its chunks over the network; then
//! the first light node reads it back through retrieval and says how long that took and
//! whether the bytes are the same.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::Args;
use libp2p::Multiaddr;
use serde_json::Value;
use tokio::sync::watch;
use tributary_node::{NodeConfig, run};

use crate::node::{ctrl_c, init_logging};

mod replica;

/// Most nodes one devnet runs (each has its own store and sockets).
const MAX_NODES: usize = 64;
/// Most light nodes one devnet runs.
const MAX_LIGHT_NODES: u64 = 8;
/// Longest wait for a node to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Network id of devnets: the default of `tributary node` and `tributary state sync`, so the
/// commands a user points at a devnet node work without `--network-id`.
const DEVNET_NETWORK_ID: u64 = 1;

#[derive(Args)]
pub struct DevnetArgs {
    /// How many nodes.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=MAX_NODES as u64))]
    nodes: u64,
    /// Where the nodes' data directories go (default: a new directory under the system's
    /// temporary directory).
    #[arg(long, value_name = "DIR")]
    base_dir: Option<PathBuf>,
    /// Bytes of a demo file uploaded into node 0 at the start (0: none).
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20)]
    demo_bytes: u64,
    /// How many light nodes besides the full ones (the first reads the demo file back).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(0..=MAX_LIGHT_NODES))]
    light_nodes: u64,
}

pub fn devnet(args: &DevnetArgs) -> Result<()> {
    init_logging_quiet();
    let base = match &args.base_dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("tributary-devnet-{}", std::process::id())),
    };
    std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(run_devnet(
        &base,
        (
            usize::try_from(args.nodes)?,
            usize::try_from(args.light_nodes)?,
        ),
        args.demo_bytes,
    ))
}

/// Node logs at warn unless `RUST_LOG` asks for more: sixteen nodes at info drown the summary.
fn init_logging_quiet() {
    if std::env::var_os("RUST_LOG").is_none() {
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init();
    } else {
        init_logging();
    }
}

type NodeTask = tokio::task::JoinHandle<Result<(), tributary_node::NodeError>>;

/// Starts a node in `dir` and waits until it listens; returns its task and `node.json`.
async fn start_node(
    dir: &Path,
    bootnode: Option<&Multiaddr>,
    light: bool,
    stop: &watch::Receiver<bool>,
) -> Result<(NodeTask, Value)> {
    // A stale node.json from an earlier run must not be mistaken for this one's.
    let _ = std::fs::remove_file(dir.join("node.json"));
    let config = NodeConfig {
        data_dir: dir.to_path_buf(),
        api: SocketAddr::from(([127, 0, 0, 1], 0)),
        listen: vec![
            "/ip4/127.0.0.1/tcp/0".parse()?,
            "/ip4/127.0.0.1/udp/0/quic-v1".parse()?,
        ],
        bootnodes: bootnode.into_iter().cloned().collect(),
        network_id: DEVNET_NETWORK_ID,
        light,
        mdns: false,
    };
    let mut rx = stop.clone();
    let task = tokio::spawn(run(config, async move {
        let _ = rx.wait_for(|stop| *stop).await;
    }));
    let info = wait_for_node_file(dir, &task).await?;
    Ok((task, info))
}

async fn run_devnet(base: &Path, (n, lights): (usize, usize), demo_bytes: u64) -> Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let mut infos: Vec<Value> = Vec::new();
    let mut bootnode: Option<Multiaddr> = None;
    for i in 0..n {
        let (task, info) = start_node(
            &base.join(format!("node-{i}")),
            bootnode.as_ref(),
            false,
            &stop_rx,
        )
        .await
        .with_context(|| format!("starting node {i}"))?;
        tasks.push(task);
        if bootnode.is_none() {
            let first = info["listen"][0]
                .as_str()
                .context("node 0 has no listen address")?;
            bootnode = Some(first.parse()?);
        }
        infos.push(info);
    }
    let mut light_apis = Vec::new();
    for i in 0..lights {
        let (task, info) = start_node(
            &base.join(format!("light-{i}")),
            bootnode.as_ref(),
            true,
            &stop_rx,
        )
        .await
        .with_context(|| format!("starting light node {i}"))?;
        tasks.push(task);
        light_apis.push(info["api"].as_str().unwrap_or("?").to_owned());
    }
    let nodes_file = base.join("nodes.json");
    std::fs::write(&nodes_file, serde_json::to_string_pretty(&infos)?)
        .with_context(|| format!("writing {}", nodes_file.display()))?;
    println!(
        "devnet of {n} nodes in {} (nodes.json written); APIs:",
        base.display()
    );
    for (i, info) in infos.iter().enumerate() {
        println!(
            "  node {i}: http://{}  overlay {}",
            info["api"].as_str().unwrap_or("?"),
            info["overlay"].as_str().unwrap_or("?")
        );
    }
    for (i, api) in light_apis.iter().enumerate() {
        println!("  light node {i}: http://{api}  (stores nothing; reads through retrieval)");
    }
    println!("Ctrl-C stops the devnet.");
    let apis: Vec<String> = infos
        .iter()
        .filter_map(|i| i["api"].as_str().map(str::to_owned))
        .collect();
    if demo_bytes > 0 {
        let api = apis.first().cloned().context("no node")?;
        let (reference, data) = tokio::task::spawn_blocking(move || upload_demo(&api, demo_bytes))
            .await
            .context("demo upload task")??;
        println!(
            "demo: {demo_bytes} bytes uploaded into node 0, reference {reference}; pull-sync \
             spreads its chunks (\"chunks\" below)"
        );
        if let Some(light) = light_apis.first().cloned() {
            tokio::spawn(read_back(light, reference, data));
        }
    }
    let full = apis.clone();
    let infos_for_demo = infos.clone();
    match tokio::task::spawn_blocking(move || replica::setup(&full, &infos_for_demo)).await {
        Ok(Ok(())) => {
            println!(
                "demo: syncgroup {}/devnet shared by the {n} full nodes; each writes clock/node-<i> every {} ms (\"replica lag\" below)",
                replica::DB,
                replica::WRITE_EVERY.as_millis()
            );
            let writers = apis.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(replica::WRITE_EVERY).await;
                    let w = writers.clone();
                    if tokio::task::spawn_blocking(move || replica::write_clocks(&w))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
        Ok(Err(e)) => println!("demo: the replicated database could not be set up: {e:#}"),
        Err(e) => println!("demo: the replica setup task failed: {e}"),
    }
    let monitor = tokio::spawn(monitor(apis));
    ctrl_c().await;
    monitor.abort();
    let _ = stop_tx.send(true);
    for (i, task) in tasks.into_iter().enumerate() {
        task.await
            .context("node task")?
            .with_context(|| format!("node {i}"))?;
    }
    println!("devnet stopped");
    Ok(())
}

async fn wait_for_node_file(
    dir: &Path,
    task: &tokio::task::JoinHandle<Result<(), tributary_node::NodeError>>,
) -> Result<Value> {
    let path = dir.join("node.json");
    let start = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(&path) {
            return serde_json::from_str(&text)
                .with_context(|| format!("reading {}", path.display()));
        }
        if task.is_finished() {
            bail!("the node stopped before listening (see the log above)");
        }
        ensure!(
            start.elapsed() < START_TIMEOUT,
            "not listening after {START_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The first light node reads the demo file back through retrieval, once it has a peer;
/// prints how long it took and whether the bytes match.
async fn read_back(api: String, reference: String, data: Vec<u8>) {
    let result = tokio::task::spawn_blocking(move || -> Result<String> {
        let started = Instant::now();
        while get_json(&api, "/peers")
            .and_then(|p| p["peers"].as_array().map(Vec::len))
            .unwrap_or(0)
            == 0
        {
            ensure!(
                started.elapsed() < START_TIMEOUT,
                "the light node found no peer"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let url = format!("http://{api}/bytes/{reference}");
        let start = Instant::now();
        let got = ureq::get(&url)
            .call()
            .with_context(|| format!("GET {url}"))?
            .body_mut()
            .with_config()
            .limit(u64::MAX)
            .read_to_vec()
            .with_context(|| format!("reading {url}"))?;
        let took = start.elapsed();
        let same = if got == data {
            "the same bytes"
        } else {
            "DIFFERENT bytes"
        };
        Ok(format!(
            "demo: light node 0 read the {} bytes back through retrieval in {:.2} s: {same}",
            got.len(),
            took.as_secs_f64()
        ))
    })
    .await;
    match result {
        Ok(Ok(line)) => println!("{line}"),
        Ok(Err(e)) => println!("demo: light node 0 could not read the file back: {e:#}"),
        Err(e) => println!("demo: the read-back task failed: {e}"),
    }
}

/// Uploads `len` seeded pseudo-random bytes (splitmix64) to `api`; returns the reference and
/// the bytes.
fn upload_demo(api: &str, len: u64) -> Result<(String, Vec<u8>)> {
    let mut state = 0x7269_6275_7461_7279_u64;
    let mut data = Vec::with_capacity(usize::try_from(len)?);
    while (data.len() as u64) < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        data.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    data.truncate(usize::try_from(len)?);
    let url = format!("http://{api}/bytes");
    let text = ureq::post(&url)
        .send(&data[..])
        .with_context(|| format!("POST {url}"))?
        .body_mut()
        .read_to_string()
        .with_context(|| format!("reading {url}"))?;
    let v: Value = serde_json::from_str(&text).with_context(|| format!("parsing {url}"))?;
    let reference = v["reference"].as_str().context("no reference")?.to_owned();
    Ok((reference, data))
}

/// One node's figures for the periodic line.
struct Figures {
    known: u64,
    connected: u64,
    chunks: u64,
    historical: u64,
    /// Uploads whose push is still running.
    pushing: u64,
    /// Chunks sent to peers through retrieval.
    served: u64,
}

/// Every 5 s: least and most peers known and connected and chunks stored across the nodes,
/// and the pull-sync streams still historical over all of them.
async fn monitor(apis: Vec<String>) {
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let apis = apis.clone();
        let figures = tokio::task::spawn_blocking(move || {
            let f = apis.iter().map(|a| figures(a)).collect::<Vec<_>>();
            (f, replica::lag(&apis))
        })
        .await;
        let Ok((figures, (lag, missing))) = figures else {
            return;
        };
        let ok: Vec<Figures> = figures.into_iter().flatten().collect();
        let range = |f: fn(&Figures) -> u64| {
            let min = ok.iter().map(f).min().unwrap_or(0);
            let max = ok.iter().map(f).max().unwrap_or(0);
            format!("{min}..{max}")
        };
        println!(
            "[{:>4}s] {} nodes answering; known peers {}, connected {}; chunks {}; \
             historical streams {}; uploads pushing {}; chunks served by retrieval {}; \
             replica lag {lag} ms ({missing} copies not arrived)",
            started.elapsed().as_secs(),
            ok.len(),
            range(|f| f.known),
            range(|f| f.connected),
            range(|f| f.chunks),
            ok.iter().map(|f| f.historical).sum::<u64>(),
            ok.iter().map(|f| f.pushing).sum::<u64>(),
            ok.iter().map(|f| f.served).sum::<u64>(),
        );
    }
}

fn get_json(api: &str, path: &str) -> Option<Value> {
    let url = format!("http://{api}{path}");
    let text = ureq::get(&url)
        .call()
        .ok()?
        .body_mut()
        .read_to_string()
        .ok()?;
    serde_json::from_str(&text).ok()
}

fn figures(api: &str) -> Option<Figures> {
    let t: tributary_node::status::TopologyResponse =
        serde_json::from_value(get_json(api, "/topology")?).ok()?;
    let p: tributary_node::status::PullResponse =
        serde_json::from_value(get_json(api, "/pullsync")?).ok()?;
    let chunks = get_json(api, "/reserve")?["chunks"].as_u64()?;
    let tags = get_json(api, "/tags")?;
    let pushing = tags["tags"]
        .as_array()?
        .iter()
        .filter(|t| t["done"] == false)
        .count() as u64;
    Some(Figures {
        known: t.population as u64,
        connected: t.connected as u64,
        chunks,
        historical: p.streams.iter().filter(|s| !s.historical_done).count() as u64,
        pushing,
        served: metric(api, "tributary_retrieval_served_total").unwrap_or(0),
    })
}

/// An unlabelled counter of the node's `/metrics`.
fn metric(api: &str, name: &str) -> Option<u64> {
    let url = format!("http://{api}/metrics");
    let text = ureq::get(&url)
        .call()
        .ok()?
        .body_mut()
        .read_to_string()
        .ok()?;
    text.lines().find_map(|l| {
        let v: f64 = l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok()?;
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "a counter: a whole, non-negative number"
        )]
        Some(v as u64)
    })
}
