//! The node's status API: `GET /node`, `/peers`, `/topology` (bee's shape), `/pullsync`
//! (progress of every stream being synced) and `/metrics` (Prometheus text).
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
        .route("/node", get(node))
        .route("/peers", get(peers))
        .route("/topology", get(topology))
        .route("/metrics", get(metrics))
        .route("/pullsync", get(pullsync))
        .with_state(handle)
}

async fn node(State(h): State<NodeHandle>) -> Response {
    axum::Json(h.info.as_ref().clone()).into_response()
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

/// Bee's `/topology` shape: `baseAddr`, `population`, `connected`, `depth`, and `bins` with
/// keys `bin_0` … `bin_31`. The node serves it and `tributary status` and the devnet read it,
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
    /// The depth.
    pub depth: u8,
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
        Self {
            base_addr: t.base.to_string(),
            population: t.population,
            connected: t.connected,
            depth: t.depth,
            bins,
        }
    }
}
