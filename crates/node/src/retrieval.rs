//! Retrieval in the runtime: `/tributary/retrieval/1` carries the [`Retrieval`] core's
//! requests and this node's answers; the HTTP API reads what the store lacks through it.
//!
//! - **Serving.** A request from a handshaken peer is decoded on the loop (a malformed one
//!   disconnects the peer) and looked up in the store on the blocking pool, at most
//!   [`MAX_SERVING`] at once (more are answered "busy"). A chunk the store lacks goes to the
//!   core, which forwards the request; its answer goes back on the request's channel.
//! - **Fetching.** Answers are decoded and hashed on the blocking pool, then checked by the
//!   core. Verified chunks are cached (on forward and at the reader: by address, outside the
//!   pull index, so reading a file does not set the node's peers pulling it) one merged write
//!   at a time on the blocking pool; a failed cache write is logged, not fatal (the chunk was
//!   answered from memory). A light node caches nothing.
//! - **Local readers** send [`crate::runtime::Query::Retrieve`] through the API's bounded
//!   query channel ([`crate::network::Network`]) and wait on a oneshot the loop answers when
//!   the core does (it always does, by the fetch's deadline).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::{PeerId, Swarm};
use prost::Message;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};
use tributary_chunk::store::{ChunkStore, ChunkStoreError};
use tributary_chunk::{Address, Chunk};
use tributary_stream::pull::Fault;
use tributary_stream::retrieval::{
    self, Output, Requester, Retrieval, RetrievalConfig, RetrievalError, RetrievalStats,
};

use crate::metrics::Metric;
use crate::peer_map::PeerMap;
use crate::runtime::Behaviour;

/// Store lookups for peers' requests at once; more are answered "busy".
pub const MAX_SERVING: usize = 64;
/// Retrieval streams per connection (both ways): a fetch has one request out per peer, and
/// a peer's requests wait on at most this many fetches.
pub const MAX_STREAMS: usize = 128;

/// Retrieved chunks waiting to be cached at most; more are not cached (a cache may forget).
pub const MAX_UNCACHED: usize = 4096;

/// What a local reader gets.
pub type Fetched = Result<Chunk, RetrievalError>;

type Looked = (u64, Address, u8, Result<Option<Vec<u8>>, ChunkStoreError>);
type Verified = (u64, Result<Option<Chunk>, Fault>);

/// What the runtime must wait on for the driver.
pub enum Event {
    /// A peer's request was looked up in the store.
    Looked(Looked),
    /// An answer was decoded and hashed.
    Verified(Verified),
    /// A cache write ended.
    Written(Result<Result<(), ChunkStoreError>, tokio::task::JoinError>),
}

#[derive(Debug, Default)]
struct Counters {
    served: u64,
    /// Peers' requests answered from this node's store (its own or cached chunks).
    store_hits: u64,
    /// Peers' requests received, and the hops they had travelled in all.
    received: u64,
    hops: u64,
    busy: u64,
    refused_requests: u64,
    cache_failures: u64,
}

/// A peer's request being answered.
struct Inbound {
    peer: PeerId,
    channel: ResponseChannel<Vec<u8>>,
}

/// The retrieval half of the runtime; see the module documentation.
pub struct RetrievalDriver {
    core: Retrieval,
    chunks: Arc<ChunkStore>,
    light: bool,
    peers: PeerMap,
    outbound: HashMap<OutboundRequestId, u64>,
    inbound: HashMap<u64, Inbound>,
    local: HashMap<u64, oneshot::Sender<Fetched>>,
    next_token: u64,
    serving: usize,
    looked_tx: mpsc::Sender<Looked>,
    looked_rx: mpsc::Receiver<Looked>,
    verified_tx: mpsc::Sender<Verified>,
    verified_rx: mpsc::Receiver<Verified>,
    unwritten: Vec<Chunk>,
    write_task: Option<tokio::task::JoinHandle<Result<(), ChunkStoreError>>>,
    counters: Counters,
}

impl RetrievalDriver {
    /// A driver over the node's chunk store.
    #[must_use]
    pub fn new(chunks: Arc<ChunkStore>, light: bool) -> Self {
        let (looked_tx, looked_rx) = mpsc::channel(MAX_SERVING);
        let (verified_tx, verified_rx) = mpsc::channel(MAX_SERVING);
        Self {
            core: Retrieval::new(chunks.base(), RetrievalConfig::default()),
            chunks,
            light,
            peers: PeerMap::default(),
            outbound: HashMap::new(),
            inbound: HashMap::new(),
            local: HashMap::new(),
            next_token: 0,
            serving: 0,
            looked_tx,
            looked_rx,
            verified_tx,
            verified_rx,
            unwritten: Vec::new(),
            write_task: None,
            counters: Counters::default(),
        }
    }

    /// How long libp2p lets a retrieval request run: past the core's own deadline.
    #[must_use]
    pub fn transport_timeout() -> Duration {
        RetrievalConfig::default().attempt_timeout + Duration::from_secs(2)
    }

    /// Waits for the driver's next event.
    pub async fn next_event(&mut self) -> Event {
        tokio::select! {
            Some(looked) = self.looked_rx.recv() => Event::Looked(looked),
            Some(verified) = self.verified_rx.recv() => Event::Verified(verified),
            written = crate::runtime::finished(&mut self.write_task) => {
                self.write_task = None;
                Event::Written(written)
            }
        }
    }

    /// The core's next deadline.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.core.poll_timeout()
    }

    /// The core's counters.
    #[must_use]
    pub const fn stats(&self) -> RetrievalStats {
        self.core.stats()
    }

    /// A handshake completed.
    pub fn connected(&mut self, overlay: Address, peer: PeerId, light: bool) {
        self.peers.insert(overlay, peer);
        self.core.handle_connected(overlay, light);
    }

    /// A handshaken peer went away.
    pub fn disconnected(&mut self, now: Instant, overlay: Address) {
        self.peers.remove(&overlay);
        self.core.handle_disconnected(now, overlay);
    }

    /// Deadlines of the core.
    pub fn timeout(&mut self, now: Instant) {
        self.core.handle_timeout(now);
    }

    /// A local reader wants `address`, which the store lacks.
    pub fn fetch(&mut self, now: Instant, address: Address, reply: oneshot::Sender<Fetched>) {
        let token = self.token();
        self.local.insert(token, reply);
        self.core.handle_local(now, address, token);
    }

    fn token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    /// A libp2p event of the retrieval protocol.
    pub fn on_swarm_event(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        now: Instant,
        event: request_response::Event<Vec<u8>, Vec<u8>>,
    ) {
        use request_response::{Event as E, Message as M};
        match event {
            E::Message {
                peer,
                message: M::Request {
                    request, channel, ..
                },
                ..
            } => self.on_request(swarm, peer, &request, channel),
            E::Message {
                message:
                    M::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                let Some(id) = self.outbound.remove(&request_id) else {
                    return;
                };
                if !self.core.is_open(id) {
                    return; // timed out: not worth hashing
                }
                let tx = self.verified_tx.clone();
                tokio::task::spawn_blocking(move || {
                    let _ = tx.blocking_send((id, retrieval::decode_delivery(&response)));
                });
            }
            E::OutboundFailure {
                request_id, error, ..
            } => {
                debug!("retrieval request failed: {error}");
                if let Some(id) = self.outbound.remove(&request_id) {
                    self.core.handle_failure(now, id);
                }
            }
            E::InboundFailure { peer, error, .. } => {
                debug!(%peer, "retrieval answer not sent: {error}");
            }
            E::ResponseSent { .. } => {}
        }
    }

    fn on_request(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        peer: PeerId,
        request: &[u8],
        channel: ResponseChannel<Vec<u8>>,
    ) {
        if !self.peers.contains(&peer) {
            return; // no handshake yet: dropped, the stream closes
        }
        let (address, hops) = match retrieval::decode_request(request) {
            Ok(r) => r,
            Err(fault) => {
                self.counters.refused_requests += 1;
                warn!(%peer, "refused peer: retrieval request: {fault}");
                let _ = swarm.disconnect_peer_id(peer);
                return;
            }
        };
        self.counters.received += 1;
        self.counters.hops += u64::from(retrieval::MAX_HOPS.saturating_sub(hops)) + 1;
        if self.serving >= MAX_SERVING {
            self.counters.busy += 1;
            let answer = retrieval::encode_answer(&Err(RetrievalError::Busy(address)));
            let _ = swarm
                .behaviour_mut()
                .retrieval
                .send_response(channel, answer.encode_to_vec());
            return;
        }
        self.serving += 1;
        let token = self.token();
        self.inbound.insert(token, Inbound { peer, channel });
        let chunks = Arc::clone(&self.chunks);
        let tx = self.looked_tx.clone();
        tokio::task::spawn_blocking(move || {
            let found = chunks.get(&address);
            let _ = tx.blocking_send((token, address, hops, found));
        });
    }

    /// Handles a driver event.
    pub fn on_event(&mut self, swarm: &mut Swarm<Behaviour>, now: Instant, event: Event) {
        match event {
            Event::Looked((token, address, hops, found)) => {
                self.serving = self.serving.saturating_sub(1);
                self.on_looked(swarm, now, token, address, hops, found);
            }
            Event::Verified((id, delivery)) => self.core.handle_delivery(now, id, delivery),
            Event::Written(result) => {
                let failure = match result {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(e) => Some(e.to_string()),
                };
                if let Some(e) = failure {
                    self.counters.cache_failures += 1;
                    warn!("retrieved chunks not cached: {e}");
                }
                self.start_write();
            }
        }
    }

    fn on_looked(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        now: Instant,
        token: u64,
        address: Address,
        hops: u8,
        found: Result<Option<Vec<u8>>, ChunkStoreError>,
    ) {
        match found {
            Ok(Some(data)) => {
                let Some(inbound) = self.inbound.remove(&token) else {
                    return;
                };
                self.counters.served += 1;
                self.counters.store_hits += 1;
                let answer = tributary_wire::retrieval::Delivery {
                    chunk: data,
                    error: String::new(),
                };
                let _ = swarm
                    .behaviour_mut()
                    .retrieval
                    .send_response(inbound.channel, answer.encode_to_vec());
            }
            Ok(None) => {
                let from = self
                    .inbound
                    .get(&token)
                    .and_then(|i| self.peers.overlay(&i.peer));
                match from {
                    Some(from) => self.core.handle_request(now, from, token, address, hops),
                    None => {
                        self.inbound.remove(&token); // the peer left meanwhile
                    }
                }
            }
            Err(e) => {
                warn!("retrieval lookup failed: {e}");
                if let Some(inbound) = self.inbound.remove(&token) {
                    let answer = tributary_wire::retrieval::Delivery {
                        chunk: Vec::new(),
                        error: "store error".into(),
                    };
                    let _ = swarm
                        .behaviour_mut()
                        .retrieval
                        .send_response(inbound.channel, answer.encode_to_vec());
                }
            }
        }
    }

    /// Carries out the core's outputs.
    pub fn drain(&mut self, swarm: &mut Swarm<Behaviour>, now: Instant) {
        while let Some(output) = self.core.poll_output() {
            match output {
                Output::Request { peer, id, request } => {
                    let Some(peer_id) = self.peers.id(&peer) else {
                        self.core.handle_failure(now, id);
                        continue;
                    };
                    let out = swarm
                        .behaviour_mut()
                        .retrieval
                        .send_request(&peer_id, request.encode_to_vec());
                    self.outbound.insert(out, id);
                }
                Output::Answer { requester, result } => self.answer(swarm, requester, result),
                Output::Store(chunk) => {
                    if self.light {
                        continue;
                    }
                    if self.unwritten.len() >= MAX_UNCACHED {
                        self.counters.cache_failures += 1;
                        continue;
                    }
                    self.unwritten.push(chunk);
                    self.start_write();
                }
                Output::Penalize { peer, fault } => {
                    if let Some(peer_id) = self.peers.id(&peer) {
                        warn!(peer = %peer_id, "refused peer: retrieval: {fault}");
                        let _ = swarm.disconnect_peer_id(peer_id);
                    }
                }
            }
        }
    }

    fn answer(&mut self, swarm: &mut Swarm<Behaviour>, requester: Requester, result: Fetched) {
        match requester {
            Requester::Local(token) => {
                if let Some(reply) = self.local.remove(&token) {
                    let _ = reply.send(result); // the reader may have gone
                }
            }
            Requester::Peer { token, .. } => {
                if let Some(inbound) = self.inbound.remove(&token) {
                    if result.is_ok() {
                        self.counters.served += 1;
                    }
                    let bytes = retrieval::encode_answer(&result).encode_to_vec();
                    let _ = swarm
                        .behaviour_mut()
                        .retrieval
                        .send_response(inbound.channel, bytes);
                }
            }
        }
    }

    /// Writes the waiting retrieved chunks in one write on the blocking pool, unless one runs.
    fn start_write(&mut self) {
        if self.write_task.is_some() || self.unwritten.is_empty() {
            return;
        }
        let chunks = std::mem::take(&mut self.unwritten);
        let store = Arc::clone(&self.chunks);
        self.write_task = Some(tokio::task::spawn_blocking(move || {
            store.cache_many(&chunks).map(|_| ())
        }));
    }

    /// Waits for the running cache write (on stop).
    pub async fn finish_writes(&mut self) {
        while let Some(task) = self.write_task.take() {
            if let Ok(Err(e)) = task.await {
                warn!("retrieved chunks not cached: {e}");
            }
            self.start_write();
        }
    }

    /// Metrics of retrieval.
    #[must_use]
    pub fn metrics(&self) -> Vec<Metric> {
        let s = self.core.stats();
        let c = &self.counters;
        vec![
            Metric::counter(
                "tributary_retrieval_local_total",
                "Fetches for readers on this node.",
                s.local,
            ),
            Metric::counter(
                "tributary_retrieval_forwarded_total",
                "Peers' requests this node forwarded.",
                s.forwarded,
            ),
            Metric::counter(
                "tributary_retrieval_coalesced_total",
                "Requests that joined a fetch already running.",
                s.coalesced,
            ),
            Metric::counter(
                "tributary_retrieval_requests_total",
                "Retrieval requests sent to peers.",
                s.requests,
            ),
            Metric::counter(
                "tributary_retrieval_delivered_total",
                "Chunks delivered to this node and verified.",
                s.delivered,
            ),
            Metric::counter(
                "tributary_retrieval_misses_total",
                "Peers that lacked a chunk or failed.",
                s.misses,
            ),
            Metric::counter(
                "tributary_retrieval_timeouts_total",
                "Retrieval requests that timed out.",
                s.timeouts,
            ),
            Metric::counter(
                "tributary_retrieval_refused_total",
                "Peers penalized for invalid chunks or malformed answers.",
                s.refused,
            ),
            Metric::counter(
                "tributary_retrieval_failed_total",
                "Fetches that ended without the chunk.",
                s.failed,
            ),
            Metric::counter(
                "tributary_retrieval_served_total",
                "Chunks this node sent to peers.",
                c.served,
            ),
            Metric::counter(
                "tributary_retrieval_store_hits_total",
                "Peers' requests answered from this node's store.",
                c.store_hits,
            ),
            Metric::counter(
                "tributary_retrieval_received_total",
                "Retrieval requests received from peers.",
                c.received,
            ),
            Metric::counter(
                "tributary_retrieval_hops_total",
                "Hops the received requests had travelled, summed (over received: the mean).",
                c.hops,
            ),
            Metric::counter(
                "tributary_retrieval_busy_total",
                "Peers' requests answered busy.",
                c.busy,
            ),
            Metric::counter(
                "tributary_retrieval_refused_requests_total",
                "Malformed retrieval requests (the peer is disconnected).",
                c.refused_requests + s.refused_requests,
            ),
            Metric::counter(
                "tributary_retrieval_cache_failures_total",
                "Retrieved chunks not cached: writes that failed, or more waiting than the bound.",
                c.cache_failures,
            ),
        ]
    }
}
