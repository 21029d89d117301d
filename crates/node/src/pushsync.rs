//! Push-sync in the runtime: `/tributary/pushsync/1` carries the [`PushSync`] core's pushes
//! and receipts; uploads push their chunks through [`crate::network::Network`].
//!
//! - **Receiving a push.** A push from a handshaken peer is decoded and hashed on the blocking
//!   pool, at most [`MAX_DECODING`] at once (more are refused with an error answer); a
//!   malformed one disconnects the peer. The core then stores it here or forwards it.
//! - **Storing.** Chunks the core stores here are written in merged batches, one write at a
//!   time on the blocking pool; after the write is durable each gets this node's signed
//!   receipt. A failed write answers its pushers with an error (nothing is signed that was not
//!   stored).
//! - **Receipts** are decoded and their signatures recovered on the blocking pool; the core
//!   checks the storer's neighbourhood.
//! - **Uploads** send [`crate::runtime::Query::Push`] through the API's bounded query channel and wait for a
//!   oneshot the loop answers when the core does (by the push's deadline at the latest).

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
use tributary_overlay::Identity;
use tributary_overlay::identity::verify_receipt;
use tributary_stream::pull::Fault;
use tributary_stream::push::{
    self, Output, PushConfig, PushError, PushStats, PushSync, Receipt, Requester,
};

use crate::metrics::Metric;
use crate::peer_map::PeerMap;
use crate::runtime::Behaviour;

/// Pushes being decoded at once; more are refused.
pub const MAX_DECODING: usize = 64;
/// Push-sync streams per connection (both ways).
pub const MAX_STREAMS: usize = 128;
/// Chunks waiting to be stored here at most; a push beyond is answered with an error.
pub const MAX_UNSTORED: usize = 4096;

/// What an upload's push ends with.
pub type Pushed = Result<Receipt, PushError>;

type Decoded = (u64, Result<Chunk, Fault>);
type Checked = (u64, Result<Option<Receipt>, Fault>);
/// A chunk to store here, whom to answer, and the depth for the receipt.
type ToStore = (Requester, Chunk, u8);
type Stored = (Vec<ToStore>, Result<Vec<Receipt>, String>);

/// What the runtime must wait on for the driver.
pub enum Event {
    /// A peer's push was decoded.
    Decoded(Decoded),
    /// A receipt was decoded and its signature recovered.
    Checked(Checked),
    /// A write of chunks stored here ended, with their signed receipts.
    Stored(Result<Stored, tokio::task::JoinError>),
}

#[derive(Debug, Default)]
struct Counters {
    busy: u64,
    refused_pushes: u64,
    store_failures: u64,
}

/// The push-sync half of the runtime; see the module documentation.
pub struct PushDriver {
    core: PushSync,
    chunks: Arc<ChunkStore>,
    identity: Identity,
    network_id: u64,
    peers: PeerMap,
    outbound: HashMap<OutboundRequestId, u64>,
    /// Peers' pushes waiting for an answer: the peer and its channel.
    inbound: HashMap<u64, (PeerId, ResponseChannel<Vec<u8>>)>,
    local: HashMap<u64, oneshot::Sender<Pushed>>,
    next_token: u64,
    decoding: usize,
    decoded_tx: mpsc::Sender<Decoded>,
    decoded_rx: mpsc::Receiver<Decoded>,
    checked_tx: mpsc::Sender<Checked>,
    checked_rx: mpsc::Receiver<Checked>,
    unwritten: Vec<ToStore>,
    write_task: Option<tokio::task::JoinHandle<Stored>>,
    /// Who waits on the write running, to answer if its task fails.
    writing: Vec<(Requester, Address)>,
    counters: Counters,
}

impl PushDriver {
    /// A driver over the node's chunk store, signing receipts with `identity`.
    #[must_use]
    pub fn new(chunks: Arc<ChunkStore>, identity: Identity, network_id: u64, light: bool) -> Self {
        let (decoded_tx, decoded_rx) = mpsc::channel(MAX_DECODING);
        let (checked_tx, checked_rx) = mpsc::channel(MAX_DECODING);
        Self {
            core: PushSync::new(chunks.base(), light, PushConfig::default()),
            chunks,
            identity,
            network_id,
            peers: PeerMap::default(),
            outbound: HashMap::new(),
            inbound: HashMap::new(),
            local: HashMap::new(),
            next_token: 0,
            decoding: 0,
            decoded_tx,
            decoded_rx,
            checked_tx,
            checked_rx,
            unwritten: Vec::new(),
            write_task: None,
            writing: Vec::new(),
            counters: Counters::default(),
        }
    }

    /// How long libp2p lets a push run: past the core's own deadline.
    #[must_use]
    pub fn transport_timeout() -> Duration {
        PushConfig::default().attempt_timeout + Duration::from_secs(2)
    }

    /// Waits for the driver's next event.
    pub async fn next_event(&mut self) -> Event {
        tokio::select! {
            Some(decoded) = self.decoded_rx.recv() => Event::Decoded(decoded),
            Some(checked) = self.checked_rx.recv() => Event::Checked(checked),
            stored = crate::runtime::finished(&mut self.write_task) => {
                self.write_task = None;
                Event::Stored(stored)
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
    pub const fn stats(&self) -> PushStats {
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

    /// The node's depth.
    pub const fn depth(&mut self, depth: u8) {
        self.core.handle_depth(depth);
    }

    /// Deadlines of the core.
    pub fn timeout(&mut self, now: Instant) {
        self.core.handle_timeout(now);
    }

    /// An upload pushes `chunk`.
    pub fn push(&mut self, now: Instant, chunk: Chunk, reply: oneshot::Sender<Pushed>) {
        let token = self.token();
        self.local.insert(token, reply);
        self.core.handle_local(now, chunk, token);
    }

    fn token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    /// A libp2p event of the push-sync protocol.
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
            } => self.on_push(swarm, peer, request, channel),
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
                    return;
                }
                let (tx, network_id) = (self.checked_tx.clone(), self.network_id);
                tokio::task::spawn_blocking(move || {
                    let _ = tx.blocking_send((id, check_receipt(&response, network_id)));
                });
            }
            E::OutboundFailure {
                request_id, error, ..
            } => {
                debug!("push failed: {error}");
                if let Some(id) = self.outbound.remove(&request_id) {
                    self.core.handle_failure(now, id);
                }
            }
            E::InboundFailure { peer, error, .. } => {
                debug!(%peer, "push answer not sent: {error}");
            }
            E::ResponseSent { .. } => {}
        }
    }

    fn on_push(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        peer: PeerId,
        request: Vec<u8>,
        channel: ResponseChannel<Vec<u8>>,
    ) {
        if !self.peers.contains(&peer) {
            return; // no handshake yet: dropped, the stream closes
        }
        if self.decoding >= MAX_DECODING {
            self.counters.busy += 1;
            let answer = push::encode_error("busy").encode_to_vec();
            let _ = swarm
                .behaviour_mut()
                .pushsync
                .send_response(channel, answer);
            return;
        }
        self.decoding += 1;
        let token = self.token();
        self.inbound.insert(token, (peer, channel));
        let tx = self.decoded_tx.clone();
        tokio::task::spawn_blocking(move || {
            let _ = tx.blocking_send((token, push::decode_delivery(&request)));
        });
    }

    /// Handles a driver event.
    pub fn on_event(&mut self, swarm: &mut Swarm<Behaviour>, now: Instant, event: Event) {
        match event {
            Event::Decoded((token, decoded)) => {
                self.decoding = self.decoding.saturating_sub(1);
                self.on_decoded(swarm, now, token, decoded);
            }
            Event::Checked((id, receipt)) => self.core.handle_receipt(now, id, receipt),
            Event::Stored(result) => {
                match result {
                    Ok((stored, Ok(receipts))) => {
                        for ((requester, ..), receipt) in stored.into_iter().zip(receipts) {
                            self.answer(swarm, requester, Ok(receipt));
                        }
                    }
                    Ok((stored, Err(e))) => {
                        self.counters.store_failures += 1;
                        warn!("pushed chunks not stored: {e}");
                        for (requester, chunk, _) in stored {
                            let error = PushError::NoPeer(chunk.address());
                            self.answer(swarm, requester, Err(error));
                        }
                    }
                    Err(e) => {
                        self.counters.store_failures += 1;
                        warn!("the push store task failed: {e}");
                        for (requester, address) in std::mem::take(&mut self.writing) {
                            self.answer(swarm, requester, Err(PushError::NoPeer(address)));
                        }
                    }
                }
                self.writing.clear();
                self.start_write();
            }
        }
    }

    fn on_decoded(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        now: Instant,
        token: u64,
        decoded: Result<Chunk, Fault>,
    ) {
        let Some(&(peer, _)) = self.inbound.get(&token) else {
            return;
        };
        match (decoded, self.peers.overlay(&peer)) {
            (Ok(chunk), Some(from)) => self.core.handle_request(now, from, token, chunk),
            (Err(fault), _) => {
                self.inbound.remove(&token);
                self.counters.refused_pushes += 1;
                warn!(%peer, "refused peer: push: {fault}");
                let _ = swarm.disconnect_peer_id(peer);
            }
            (Ok(_), None) => {
                self.inbound.remove(&token); // the peer left meanwhile
            }
        }
    }

    /// Carries out the core's outputs.
    pub fn drain(&mut self, swarm: &mut Swarm<Behaviour>, now: Instant) {
        while let Some(output) = self.core.poll_output() {
            match output {
                Output::Request { peer, id, chunk } => {
                    let Some(peer_id) = self.peers.id(&peer) else {
                        self.core.handle_failure(now, id);
                        continue;
                    };
                    let bytes = tributary_wire::pushsync::Delivery {
                        chunk: chunk.into_data(),
                    }
                    .encode_to_vec();
                    let out = swarm.behaviour_mut().pushsync.send_request(&peer_id, bytes);
                    self.outbound.insert(out, id);
                }
                Output::Store {
                    requester,
                    chunk,
                    depth,
                } => {
                    if self.unwritten.len() >= MAX_UNSTORED {
                        self.counters.busy += 1;
                        let error = PushError::Busy(chunk.address());
                        self.answer(swarm, requester, Err(error));
                        continue;
                    }
                    self.unwritten.push((requester, chunk, depth));
                    self.start_write();
                }
                Output::Answer { requester, result } => self.answer(swarm, requester, result),
                Output::Penalize { peer, fault } => {
                    if let Some(peer_id) = self.peers.id(&peer) {
                        warn!(peer = %peer_id, "refused peer: push: {fault}");
                        let _ = swarm.disconnect_peer_id(peer_id);
                    }
                }
            }
        }
    }

    fn answer(&mut self, swarm: &mut Swarm<Behaviour>, requester: Requester, result: Pushed) {
        match requester {
            Requester::Local(token) => {
                if let Some(reply) = self.local.remove(&token) {
                    let _ = reply.send(result); // the upload may have gone
                }
            }
            Requester::Peer { token, .. } => {
                if let Some((_, channel)) = self.inbound.remove(&token) {
                    let wire = match result {
                        Ok(r) => r.wire,
                        Err(e) => push::encode_error(&e.to_string()),
                    };
                    let _ = swarm
                        .behaviour_mut()
                        .pushsync
                        .send_response(channel, wire.encode_to_vec());
                }
            }
        }
    }

    /// Writes the chunks waiting to be stored here in one batch on the blocking pool, then
    /// signs their receipts, unless a write runs.
    fn start_write(&mut self) {
        if self.write_task.is_some() || self.unwritten.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.unwritten);
        self.writing = batch.iter().map(|(r, c, _)| (*r, c.address())).collect();
        let (store, identity, network_id) = (
            Arc::clone(&self.chunks),
            self.identity.clone(),
            self.network_id,
        );
        self.write_task = Some(tokio::task::spawn_blocking(move || {
            let result = store_and_sign(&store, &identity, network_id, &batch);
            (batch, result)
        }));
    }

    /// Waits for the running write (on stop).
    pub async fn finish_writes(&mut self) {
        while let Some(task) = self.write_task.take() {
            if let Ok((_, Err(e))) = task.await {
                warn!("pushed chunks not stored: {e}");
            }
            self.start_write();
        }
    }

    /// Metrics of push-sync.
    #[must_use]
    pub fn metrics(&self) -> Vec<Metric> {
        let s = self.core.stats();
        let c = &self.counters;
        vec![
            Metric::counter(
                "tributary_pushsync_local_total",
                "Pushes of uploads started.",
                s.local,
            ),
            Metric::counter(
                "tributary_pushsync_forwarded_total",
                "Peers' pushes forwarded.",
                s.forwarded,
            ),
            Metric::counter(
                "tributary_pushsync_stored_total",
                "Pushed chunks stored here with a signed receipt.",
                s.stored,
            ),
            Metric::counter(
                "tributary_pushsync_requests_total",
                "Pushes sent to peers.",
                s.requests,
            ),
            Metric::counter(
                "tributary_pushsync_receipts_total",
                "Valid receipts received.",
                s.receipts,
            ),
            Metric::counter(
                "tributary_pushsync_misses_total",
                "Pushes a peer failed or did not answer in time.",
                s.misses,
            ),
            Metric::counter(
                "tributary_pushsync_refused_total",
                "Peers penalized for invalid receipts or malformed answers.",
                s.refused,
            ),
            Metric::counter(
                "tributary_pushsync_failed_total",
                "Pushes that ended without a receipt.",
                s.failed,
            ),
            Metric::counter(
                "tributary_pushsync_busy_total",
                "Pushes refused because too many were being decoded or waited to be stored.",
                c.busy,
            ),
            Metric::counter(
                "tributary_pushsync_refused_pushes_total",
                "Malformed pushes (the peer is disconnected).",
                c.refused_pushes,
            ),
            Metric::counter(
                "tributary_pushsync_store_failures_total",
                "Writes of pushed chunks that failed.",
                c.store_failures,
            ),
        ]
    }
}

/// Decodes a receipt answer and recovers its signer (blocking-pool work).
fn check_receipt(bytes: &[u8], network_id: u64) -> Result<Option<Receipt>, Fault> {
    let Some(wire) = push::decode_receipt(bytes)? else {
        return Ok(None);
    };
    let v = verify_receipt(&wire, network_id).map_err(|_| Fault::Malformed("a bad receipt"))?;
    Ok(Some(Receipt {
        address: v.address,
        storer: v.storer,
        depth: v.depth,
        wire: v.wire,
    }))
}

/// Stores a batch of pushed chunks in one durable write, then signs a receipt for each.
fn store_and_sign(
    store: &ChunkStore,
    identity: &Identity,
    network_id: u64,
    batch: &[ToStore],
) -> Result<Vec<Receipt>, String> {
    let chunks: Vec<Chunk> = batch.iter().map(|(_, c, _)| c.clone()).collect();
    store
        .put_many(&chunks)
        .map_err(|e: ChunkStoreError| e.to_string())?;
    let own = identity.overlay(network_id);
    batch
        .iter()
        .map(|(_, chunk, depth)| {
            let address = chunk.address();
            let wire = identity
                .sign_receipt(&address, *depth, network_id)
                .map_err(|e| e.to_string())?;
            Ok(Receipt {
                address,
                storer: own,
                depth: *depth,
                wire,
            })
        })
        .collect()
}
