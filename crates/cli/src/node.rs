//! `tributary node`: runs a node on a data directory until Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use libp2p::Multiaddr;
use tributary_node::{NodeConfig, run};

#[derive(Args)]
pub struct NodeArgs {
    /// The data directory (created if missing); the node writes DIR/node.json once listening.
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// A libp2p listen address (repeatable); port 0 picks a free port.
    #[arg(
        long,
        value_name = "MULTIADDR",
        default_values = ["/ip4/0.0.0.0/tcp/1634", "/ip4/0.0.0.0/udp/1634/quic-v1"]
    )]
    listen: Vec<Multiaddr>,
    /// A peer to join through while this node knows nobody (repeatable).
    #[arg(long, value_name = "MULTIADDR")]
    bootnode: Vec<Multiaddr>,
    /// The network id; peers of other networks are refused.
    #[arg(long, value_name = "N", default_value_t = 1)]
    network_id: u64,
    /// Where the HTTP API listens; port 0 picks a free port.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:1633")]
    api: SocketAddr,
    /// Run a light node: it stores no one else's chunks, is not synced from and not
    /// forwarded to, and reads what it lacks from its full peers.
    #[arg(long)]
    light: bool,
    /// Do not look for peers on the local network with mDNS (on by default).
    #[arg(long)]
    no_mdns: bool,
}

/// Logs to stderr at the level `RUST_LOG` names (error, warn, info, debug, trace), info if unset.
pub fn init_logging() {
    let level = std::env::var("RUST_LOG")
        .ok()
        .and_then(|l| l.parse::<tracing::Level>().ok())
        .unwrap_or(tracing::Level::INFO);
    // Fails only if a subscriber is already installed, which is then kept.
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in a log file or a pipe.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Completes on Ctrl-C (or never, if the handler cannot be installed).
pub async fn ctrl_c() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

pub fn node(args: &NodeArgs) -> Result<()> {
    init_logging();
    let config = NodeConfig {
        data_dir: args.data_dir.clone(),
        api: args.api,
        listen: args.listen.clone(),
        bootnodes: args.bootnode.clone(),
        network_id: args.network_id,
        light: args.light,
        mdns: !args.no_mdns,
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(run(config, ctrl_c()))?;
    Ok(())
}
