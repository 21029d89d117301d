//! The node's status API: `GET /node`, `/peers`, `/topology` (bee's shape) and `/metrics`
//! (Prometheus text).
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
        Ok(t) => axum::Json(topology_json(&t)).into_response(),
        Err(r) => r,
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
/// keys `bin_0` … `bin_31`.
#[must_use]
pub fn topology_json(t: &Topology) -> Value {
    let peers = |list: &[tributary_chunk::Address]| -> Vec<Value> {
        list.iter()
            .map(|a| json!({"address": a.to_string()}))
            .collect()
    };
    let bins: serde_json::Map<String, Value> = t
        .bins
        .iter()
        .enumerate()
        .map(|(i, b)| {
            (
                format!("bin_{i}"),
                json!({
                    "population": b.population,
                    "connected": b.connected,
                    "connectedPeers": peers(&b.connected_peers),
                    "disconnectedPeers": peers(&b.disconnected_peers),
                }),
            )
        })
        .collect();
    json!({
        "baseAddr": t.base.to_string(),
        "population": t.population,
        "connected": t.connected,
        "depth": t.depth,
        "bins": bins,
    })
}
