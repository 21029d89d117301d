//! `tributary devnet`: N nodes on 127.0.0.1 in one process, the first the others' bootnode.
//!
//! Each node gets its own data directory `DIR/node-<i>` and listens on TCP and QUIC with
//! port 0. Once all are listening, `DIR/nodes.json` holds their `node.json` objects (in
//! order), their API addresses are printed, and every few seconds a line tells how the
//! network is doing (peers known and connected, per node: least and most), until Ctrl-C.

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

/// Most nodes one devnet runs (each has its own store and sockets).
const MAX_NODES: usize = 64;
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
}

pub fn devnet(args: &DevnetArgs) -> Result<()> {
    init_logging_quiet();
    let base = match &args.base_dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("tributary-devnet-{}", std::process::id())),
    };
    std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(run_devnet(&base, usize::try_from(args.nodes)?))
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

async fn run_devnet(base: &Path, n: usize) -> Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let mut infos: Vec<Value> = Vec::new();
    let mut bootnode: Option<Multiaddr> = None;
    for i in 0..n {
        let dir = base.join(format!("node-{i}"));
        // A stale node.json from an earlier run must not be mistaken for this one's.
        let _ = std::fs::remove_file(dir.join("node.json"));
        let config = NodeConfig {
            data_dir: dir.clone(),
            api: SocketAddr::from(([127, 0, 0, 1], 0)),
            listen: vec![
                "/ip4/127.0.0.1/tcp/0".parse()?,
                "/ip4/127.0.0.1/udp/0/quic-v1".parse()?,
            ],
            bootnodes: bootnode.iter().cloned().collect(),
            network_id: DEVNET_NETWORK_ID,
        };
        let mut rx = stop_rx.clone();
        tasks.push(tokio::spawn(run(config, async move {
            let _ = rx.wait_for(|stop| *stop).await;
        })));
        let info = wait_for_node_file(&dir, &tasks[i])
            .await
            .with_context(|| format!("starting node {i}"))?;
        if bootnode.is_none() {
            let first = info["listen"][0]
                .as_str()
                .context("node 0 has no listen address")?;
            bootnode = Some(first.parse()?);
        }
        infos.push(info);
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
    println!("Ctrl-C stops the devnet.");
    let apis: Vec<String> = infos
        .iter()
        .filter_map(|i| i["api"].as_str().map(str::to_owned))
        .collect();
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

/// Every 5 s: least and most peers known and connected across the nodes.
async fn monitor(apis: Vec<String>) {
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let apis = apis.clone();
        let counts = tokio::task::spawn_blocking(move || {
            apis.iter().map(|a| topology_counts(a)).collect::<Vec<_>>()
        })
        .await;
        let Ok(counts) = counts else { return };
        let ok: Vec<(u64, u64)> = counts.into_iter().flatten().collect();
        let known = ok.iter().map(|c| c.0);
        let connected = ok.iter().map(|c| c.1);
        println!(
            "[{:>4}s] {} nodes answering; known peers {}..{}, connected {}..{}",
            started.elapsed().as_secs(),
            ok.len(),
            known.clone().min().unwrap_or(0),
            known.max().unwrap_or(0),
            connected.clone().min().unwrap_or(0),
            connected.max().unwrap_or(0),
        );
    }
}

fn topology_counts(api: &str) -> Option<(u64, u64)> {
    let url = format!("http://{api}/topology");
    let text = ureq::get(&url)
        .call()
        .ok()?
        .body_mut()
        .read_to_string()
        .ok()?;
    let t: tributary_node::status::TopologyResponse = serde_json::from_str(&text).ok()?;
    Some((t.population as u64, t.connected as u64))
}
