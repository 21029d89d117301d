//! `tributary node`: runs a node on a data directory until Ctrl-C.
//!
//! For now the node serves its HTTP API (chunks and files); the libp2p transport, identity and
//! protocols arrive with the node runtime issue, with their flags (`--listen`, `--bootnode`,
//! `--network-id`).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use tributary_node::{NodeConfig, run};

#[derive(Args)]
pub struct NodeArgs {
    /// The data directory (created if missing); the node writes DIR/node.json once listening.
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// Where the HTTP API listens; port 0 picks a free port.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:1633")]
    api: SocketAddr,
}

pub fn node(args: &NodeArgs) -> Result<()> {
    let config = NodeConfig {
        data_dir: args.data_dir.clone(),
        api: args.api,
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let shutdown = async {
            // If the signal handler cannot be installed, run until killed.
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        run(config, shutdown).await
    })?;
    Ok(())
}
