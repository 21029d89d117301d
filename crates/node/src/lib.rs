//! The Tributary node runtime.
//!
//! [`run`] opens the data directory (its key, `identity.json`, and its one fjall store, shared
//! by the chunk store, the state database and the overlay's peer records), listens with libp2p,
//! starts the [`runtime::Runtime`] loop that drives the protocol cores, serves the HTTP API
//! ([`api`] for chunks and files, [`status`] for the node, peers, topology and metrics), writes
//! `DIR/node.json`, and on shutdown stops both and flushes the state database.

pub mod api;
pub mod codec;
pub mod db_api;
pub mod identity;
pub mod metrics;
pub mod network;
pub mod peer_map;
pub mod pullsync;
pub mod pushsync;
pub mod replica;
pub mod retrieval;
pub mod runtime;
pub mod slots;
pub mod status;
pub mod sync_client;
pub mod tags;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use libp2p::Multiaddr;
use tokio::sync::{mpsc, watch};
use tracing::info;
use tributary_chunk::Address;
use tributary_chunk::store::{ChunkStore, ChunkStoreError};
use tributary_merkle::{Config as DbConfig, DbError, MerkleDb};
use tributary_overlay::{
    Overlay, OverlayConfig, OverlayError, RecordError, identity::MAX_UNDERLAYS,
};
use tributary_store::{Durability, FjallStore, KvStore, StoreError};

pub use identity::{IdentityError, NodeIdentity};
pub use runtime::{Query, with_peer};

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
    /// Pull-sync could not write what it received.
    #[error("pull-sync")]
    Pull(#[from] pullsync::PullError),
    /// The state database could not be opened or flushed.
    #[error("state database")]
    State(#[from] DbError),
    /// The replica engine could not be opened.
    #[error("replicated databases")]
    Replica(#[from] tributary_replica::ReplicaError),
    /// The node key.
    #[error("node key")]
    Identity(#[from] IdentityError),
    /// The node's own record could not be signed.
    #[error("signing the node record")]
    Record(#[from] RecordError),
    /// The overlay core failed (its store).
    #[error("overlay")]
    Overlay(#[from] OverlayError),
    /// The libp2p transport could not be built.
    #[error("building the libp2p transport")]
    Transport(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A task of the node (the event loop, the API server, a blocking job) panicked or was
    /// cancelled.
    #[error("the {what} task failed")]
    Task {
        /// Which task.
        what: &'static str,
        /// Why.
        #[source]
        source: tokio::task::JoinError,
    },
    /// An address could not be listened on.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
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
    /// The data directory (its fjall database is `DIR/store`, its key `DIR/identity.json`).
    pub data_dir: PathBuf,
    /// Where the HTTP API listens (port 0 picks a free port).
    pub api: SocketAddr,
    /// libp2p listen addresses (port 0 picks free ports).
    pub listen: Vec<Multiaddr>,
    /// Peers to join through while the node knows nobody.
    pub bootnodes: Vec<Multiaddr>,
    /// The network id: peers of other networks are refused.
    pub network_id: u64,
    /// Find peers on the local network with mDNS (and dial them).
    pub mdns: bool,
    /// A light node: it stores no one else's chunks, is not pulled from and not forwarded
    /// to; it reads and uploads through its full peers.
    pub light: bool,
}

/// What a running node tells about itself (`node.json`, `GET /node`).
#[derive(Clone, Debug, serde::Serialize)]
pub struct NodeInfo {
    /// The libp2p peer id.
    pub peer_id: String,
    /// The overlay address, hex.
    pub overlay: String,
    /// Listen addresses with `/p2p/<peer id>`.
    pub listen: Vec<String>,
    /// The HTTP API address.
    pub api: String,
    /// The network id.
    pub network_id: u64,
    /// The Ethereum address of the node key, hex without `0x`.
    pub ethereum: String,
    /// The node's public key (compressed secp256k1), hex.
    pub public_key: String,
    /// Whether the node is light.
    pub light: bool,
}

/// Opens the shared store of a data directory.
///
/// # Errors
/// When the store cannot be opened.
pub fn open_store(data_dir: &Path) -> Result<Arc<FjallStore>, NodeError> {
    let path = data_dir.join("store");
    let store = FjallStore::open(&path, Durability::Sync)
        .map_err(|source| NodeError::Store { path, source })?;
    Ok(Arc::new(store))
}

/// Opens the chunk store of a data directory, its bins relative to `base`.
///
/// # Errors
/// When the store cannot be opened.
pub fn open_chunks(data_dir: &Path, base: Address) -> Result<Arc<ChunkStore>, NodeError> {
    let store = open_store(data_dir)?;
    Ok(Arc::new(ChunkStore::open(store, base)?))
}

/// Opens the state database in a store: its stored branch factor, or the default for a new one.
///
/// # Errors
/// When the database cannot be opened.
pub fn open_state(store: Arc<dyn KvStore>) -> Result<MerkleDb, NodeError> {
    let branch_factor = MerkleDb::stored_branch_factor(store.as_ref())?.unwrap_or_default();
    Ok(MerkleDb::open(
        store,
        DbConfig {
            branch_factor,
            ..DbConfig::default()
        },
    )?)
}

fn random_seed() -> u64 {
    let mut bytes = [0u8; 8];
    // Only the redial jitter uses it; without OS randomness it is merely less spread.
    let _ = getrandom::fill(&mut bytes);
    u64::from_le_bytes(bytes)
}

/// Runs the node until `shutdown` completes. Once listening, writes `DIR/node.json`.
///
/// # Errors
/// When the data directory, the transport or the API fails.
pub async fn run(
    config: NodeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), NodeError> {
    let dir = &config.data_dir;
    std::fs::create_dir_all(dir).map_err(|source| NodeError::NodeFile {
        path: dir.clone(),
        source,
    })?;
    let id = identity::load_or_create(dir)?;
    let overlay_addr = id.identity.overlay(config.network_id);
    let store = open_store(dir)?;
    let chunks = Arc::new(ChunkStore::open(
        Arc::clone(&store) as Arc<dyn KvStore>,
        overlay_addr,
    )?);
    let db = Arc::new(open_state(Arc::clone(&store) as Arc<dyn KvStore>)?);
    let replicas = replica::Replicas::new(tributary_replica::Replica::open(
        Arc::clone(&store) as Arc<dyn KvStore>,
        id.identity.clone(),
        tributary_replica::ReplicaConfig::default(),
    )?);

    let mut swarm = runtime::build_swarm_with(id.keypair.clone(), true, config.mdns)?;
    let bound = runtime::listen(&mut swarm, &config.listen).await?;
    let underlays: Vec<Vec<u8>> = bound
        .iter()
        .take(MAX_UNDERLAYS)
        .map(|a| a.to_vec())
        .collect();
    let record = id
        .identity
        .sign_record(config.network_id, underlays, runtime::unix_now())?;
    let overlay_config = OverlayConfig {
        network_id: config.network_id,
        light: config.light,
        seed: random_seed(),
        ..OverlayConfig::default()
    };
    let overlay = Overlay::new(Instant::now(), overlay_config, &record, store.as_ref())?;

    let api_err = |source| NodeError::Api {
        addr: config.api.to_string(),
        source,
    };
    let listener = tokio::net::TcpListener::bind(config.api)
        .await
        .map_err(api_err)?;
    let api_addr = listener.local_addr().map_err(api_err)?;
    let info = NodeInfo {
        peer_id: id.peer_id().to_string(),
        overlay: overlay_addr.to_string(),
        listen: bound
            .iter()
            .map(|a| with_peer(a, id.peer_id()).to_string())
            .collect(),
        api: api_addr.to_string(),
        network_id: config.network_id,
        ethereum: hex::encode(id.identity.eth_address()),
        public_key: hex::encode(id.identity.node_key().0),
        light: config.light,
    };
    write_node_file(dir, &info)?;
    info!(peer_id = %info.peer_id, overlay = %info.overlay, api = %info.api, "node running");

    let (queries_tx, queries_rx) = mpsc::channel(runtime::QUERY_QUEUE);
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        // An error means the sender is gone, which is a shutdown too.
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let loop_task = tokio::spawn(
        runtime::Runtime::new(
            swarm,
            overlay,
            (Arc::clone(&db), Arc::clone(&store) as Arc<dyn KvStore>),
            Arc::clone(&chunks),
            (id.identity.clone(), config.network_id),
            (config.bootnodes.clone(), config.light),
            (replicas.clone(), random_seed()),
        )
        .run(queries_rx, stopped(stop_rx.clone())),
    );
    let network = network::Network::new(queries_tx.clone());
    let router = api::router(chunks, Some(network))
        .merge(db_api::router(replicas, Some(queries_tx.clone())))
        .merge(status::router(status::NodeHandle::new(info, queries_tx)))
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed);
    let server = tokio::spawn(
        axum::serve(listener, router)
            .with_graceful_shutdown(stopped(stop_rx))
            .into_future(),
    );
    shutdown.await;
    let _ = stop_tx.send(true);
    let loop_result = loop_task.await.map_err(|source| NodeError::Task {
        what: "event loop",
        source,
    })?;
    let served = server.await.map_err(|source| NodeError::Task {
        what: "HTTP API",
        source,
    })?;
    // Writing the pending trie nodes is blocking work: off the async threads.
    tokio::task::spawn_blocking(move || db.flush())
        .await
        .map_err(|source| NodeError::Task {
            what: "state flush",
            source,
        })??;
    info!("state flushed; stopped");
    loop_result?;
    served.map_err(api_err)
}

fn write_node_file(dir: &Path, info: &NodeInfo) -> Result<(), NodeError> {
    let path = dir.join("node.json");
    let tmp = dir.join("node.json.tmp");
    let text = serde_json::to_string_pretty(info).map_err(|e| NodeError::NodeFile {
        path: path.clone(),
        source: e.into(),
    })?;
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|source| NodeError::NodeFile { path, source })
}
