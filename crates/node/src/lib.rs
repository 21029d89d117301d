//! The Tributary node runtime.
//!
//! Today it serves the chunk store over HTTP ([`api`]), with bee's routes for bytes and
//! chunks. The libp2p transport, the node identity (which gives the overlay address the chunk
//! store's bins are relative to) and the tasks driving the protocol cores come with the node
//! runtime issue; until then the chunk store is indexed relative to the zero address and
//! re-indexed when opened with the real overlay.

pub mod api;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tributary_chunk::Address;
use tributary_chunk::store::{ChunkStore, ChunkStoreError};
use tributary_store::{Durability, FjallStore, StoreError};

/// Errors of starting or running a node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The data directory's store could not be opened.
    #[error("opening the store in {path}")]
    Store {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: StoreError,
    },
    /// The chunk store could not be opened.
    #[error("opening the chunk store")]
    Chunks(#[from] ChunkStoreError),
    /// Binding or serving the HTTP API failed.
    #[error("HTTP API on {addr}")]
    Api {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Writing `node.json` failed.
    #[error("writing {path}")]
    NodeFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// How to run a node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The data directory (its fjall database is `DIR/store`).
    pub data_dir: PathBuf,
    /// Where the HTTP API listens (port 0 picks a free port).
    pub api: SocketAddr,
}

/// Opens the chunk store of a data directory.
///
/// # Errors
/// When the store cannot be opened.
pub fn open_chunks(data_dir: &Path) -> Result<Arc<ChunkStore>, NodeError> {
    let path = data_dir.join("store");
    let store = FjallStore::open(&path, Durability::Sync)
        .map_err(|source| NodeError::Store { path, source })?;
    Ok(Arc::new(ChunkStore::open(
        Arc::new(store),
        Address::default(),
    )?))
}

/// Runs the node until `shutdown` completes. Once listening, writes `DIR/node.json` with the
/// API address.
///
/// # Errors
/// When the store cannot be opened or the API cannot bind or serve.
pub async fn run(
    config: NodeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), NodeError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| NodeError::NodeFile {
        path: config.data_dir.clone(),
        source,
    })?;
    let chunks = open_chunks(&config.data_dir)?;
    let api_err = |source| NodeError::Api {
        addr: config.api.to_string(),
        source,
    };
    let listener = tokio::net::TcpListener::bind(config.api)
        .await
        .map_err(api_err)?;
    let bound = listener.local_addr().map_err(api_err)?;
    let path = config.data_dir.join("node.json");
    let info = serde_json::json!({ "api": bound.to_string() });
    std::fs::write(&path, info.to_string())
        .map_err(|source| NodeError::NodeFile { path, source })?;
    axum::serve(listener, api::router(chunks))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(api_err)
}
