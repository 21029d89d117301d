//! The node's status API in bee's shapes (`openapi/Swarm.yaml` of bee, API version
//! [`API_VERSION`]): `GET /health`, `/readiness`, `/node`, `/addresses`, `/peers`,
//! `/topology`; and Tributary's own `/pullsync` (progress of every stream being synced) and
//! `/metrics` (Prometheus text). Bee's schemas mark no field required; every field they name
//! is served, and Tributary's extra fields (`peerId`, `listen`, …) sit beside them.
//!
//! Handlers ask the runtime loop over a bounded channel and wait at most [`QUERY_TIMEOUT`];
//! a loop that is busy or gone gives 503.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tributary_overlay::Topology;

use crate::NodeInfo;
use crate::metrics::render;
use crate::runtime::Query;

/// Longest wait for the runtime loop.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// The version of bee's API whose shapes the served routes follow.
pub const API_VERSION: &str = "8.1.0";

/// What the handlers share.
#[derive(Clone, Debug)]
pub struct NodeHandle {
    info: Arc<NodeInfo>,
    queries: mpsc::Sender<Query>,
}

impl NodeHandle {
    /// A handle over the node's info and its loop's query channel.
    #[must_use]
    pub fn new(info: NodeInfo, queries: mpsc::Sender<Query>) -> Self {
        Self {
            info: Arc::new(info),
            queries,
        }
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Query) -> Result<T, Response> {
        let unavailable = || {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({"message": "node loop unavailable", "code": 503})),
            )
                .into_response()
        };
        let (tx, rx) = oneshot::channel();
        self.queries
            .send_timeout(make(tx), QUERY_TIMEOUT)
            .await
            .map_err(|_| unavailable())?;
        tokio::time::timeout(QUERY_TIMEOUT, rx)
            .await
            .map_err(|_| unavailable())?
            .map_err(|_| unavailable())
    }
}

/// The routes.
pub fn router(handle: NodeHandle) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/readiness", get(readiness))
        .route("/node", get(node))
        .route("/addresses", get(addresses))
        .route("/peers", get(peers))
        .route("/topology", get(topology))
        .route("/metrics", get(metrics))
        .route("/pullsync", get(pullsync))
        .with_state(handle)
}

fn health_body(status: &str) -> Value {
    json!({"status": status, "version": env!("CARGO_PKG_VERSION"), "apiVersion": API_VERSION})
}

/// `GET /health`: the API answers.
async fn health() -> Response {
    axum::Json(health_body("ok")).into_response()
}

/// `GET /readiness`: the node's loop answers (`ready`), or not (`400 notReady`, as bee).
async fn readiness(State(h): State<NodeHandle>) -> Response {
    match h.ask(Query::Peers).await {
        Ok(_) => axum::Json(health_body("ready")).into_response(),
        Err(_) => (StatusCode::BAD_REQUEST, axum::Json(health_body("notReady"))).into_response(),
    }
}

/// `GET /node`: bee's `beeMode`, `chequebookEnabled`, `swapEnabled` (no chequebook or swap
/// here), beside the fields of `node.json`.
async fn node(State(h): State<NodeHandle>) -> Response {
    let mut v = serde_json::to_value(h.info.as_ref()).unwrap_or_else(|_| json!({}));
    v["beeMode"] = json!(if h.info.light { "light" } else { "full" });
    v["chequebookEnabled"] = json!(false);
    v["swapEnabled"] = json!(false);
    axum::Json(v).into_response()
}

/// `GET /addresses`: the overlay, the underlays (listen multiaddrs), the Ethereum address of
/// the node key and the key itself (bee's `pssPublicKey` is the same key: there is no pss).
async fn addresses(State(h): State<NodeHandle>) -> Response {
    let i = &h.info;
    axum::Json(json!({
        "overlay": i.overlay,
        "underlay": i.listen,
        "ethereum": i.ethereum,
        "chain_address": i.ethereum,
        "publicKey": i.public_key,
        "pssPublicKey": i.public_key,
    }))
    .into_response()
}

async fn peers(State(h): State<NodeHandle>) -> Response {
    match h.ask(Query::Peers).await {
        Ok(peers) => {
            let peers: Vec<Value> = peers
                .into_iter()
                .map(|p| json!({"address": p.overlay.to_string(), "peerId": p.peer_id.to_string(), "fullNode": !p.light}))
                .collect();
            axum::Json(json!({ "peers": peers })).into_response()
        }
        Err(r) => r,
    }
}

async fn topology(State(h): State<NodeHandle>) -> Response {
    match h.ask(Query::Topology).await {
        Ok(t) => axum::Json(TopologyResponse::from(&t)).into_response(),
        Err(r) => r,
    }
}

async fn pullsync(State(h): State<NodeHandle>) -> Response {
    match h.ask(Query::PullProgress).await {
        Ok(progress) => {
            let streams: Vec<PullStream> = progress.iter().map(PullStream::from).collect();
            axum::Json(PullResponse { streams }).into_response()
        }
        Err(r) => r,
    }
}

/// `GET /pullsync`: every (peer, bin) this node syncs from. `tributary status` and the devnet
/// read it, so both sides share this type.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PullResponse {
    /// The streams, by peer then bin.
    pub streams: Vec<PullStream>,
}

/// One (peer, bin) of a [`PullResponse`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PullStream {
    /// The upstream peer's overlay, in hex.
    pub peer: String,
    /// The bin.
    pub bin: u8,
    /// The upstream's cursor when the stream began.
    pub cursor: u64,
    /// Bin ids up to the cursor synced.
    pub synced: u64,
    /// The historical part is done.
    pub historical_done: bool,
    /// The live part waits for new chunks with nothing outstanding.
    pub live_caught_up: bool,
}

impl From<&tributary_stream::pull::BinProgress> for PullStream {
    fn from(p: &tributary_stream::pull::BinProgress) -> Self {
        Self {
            peer: p.peer.to_string(),
            bin: p.bin,
            cursor: p.cursor,
            synced: p.synced,
            historical_done: p.historical_done,
            live_caught_up: p.live_caught_up,
        }
    }
}

async fn metrics(State(h): State<NodeHandle>) -> Response {
    match h.ask(Query::Metrics).await {
        Ok(m) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            render(&m),
        )
            .into_response(),
        Err(r) => r,
    }
}

/// Bee's `/topology` shape: `baseAddr`, `population`, `connected`, `timestamp`,
/// `nnLowWatermark`, `depth`, `reachability`, `networkAvailability`, and `bins` with keys
/// `bin_0` … `bin_31`. The node serves it and `tributary status` and the devnet read it,
/// so both sides share this one type.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TopologyResponse {
    /// This node's overlay, in hex.
    pub base_addr: String,
    /// Known peers.
    pub population: usize,
    /// Connected peers.
    pub connected: usize,
    /// When the table was read (RFC 3339, UTC).
    #[serde(default)]
    pub timestamp: String,
    /// The neighbourhood size: the connections the depth counts before it rises above 0.
    #[serde(default)]
    pub nn_low_watermark: usize,
    /// The depth.
    pub depth: u8,
    /// Whether the node is reachable from outside: not probed here, so `Unknown`.
    #[serde(default)]
    pub reachability: String,
    /// `Available` while the node has a connected peer, else `Unavailable`.
    #[serde(default)]
    pub network_availability: String,
    /// `bin_0` … `bin_31`.
    pub bins: std::collections::BTreeMap<String, BinResponse>,
}

/// One bin of a [`TopologyResponse`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BinResponse {
    /// Known peers in the bin.
    pub population: usize,
    /// Connected peers in the bin.
    pub connected: usize,
    /// The connected peers.
    #[serde(default)]
    pub connected_peers: Vec<PeerAddress>,
    /// The known peers not connected.
    #[serde(default)]
    pub disconnected_peers: Vec<PeerAddress>,
}

/// A peer in a [`BinResponse`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PeerAddress {
    /// Its overlay, in hex.
    pub address: String,
}

impl From<&Topology> for TopologyResponse {
    fn from(t: &Topology) -> Self {
        let peers = |list: &[tributary_chunk::Address]| {
            list.iter()
                .map(|a| PeerAddress {
                    address: a.to_string(),
                })
                .collect()
        };
        let bins = t
            .bins
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let bin = BinResponse {
                    population: b.population,
                    connected: b.connected,
                    connected_peers: peers(&b.connected_peers),
                    disconnected_peers: peers(&b.disconnected_peers),
                };
                (format!("bin_{i}"), bin)
            })
            .collect();
        let available = if t.connected > 0 {
            "Available"
        } else {
            "Unavailable"
        };
        Self {
            base_addr: t.base.to_string(),
            population: t.population,
            connected: t.connected,
            timestamp: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            nn_low_watermark: tributary_overlay::kademlia::KademliaConfig::default()
                .neighbourhood_size,
            depth: t.depth,
            reachability: "Unknown".into(),
            network_availability: available.into(),
            bins,
        }
    }
}
