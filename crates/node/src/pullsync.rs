//! Pull-sync in the runtime: `/tributary/pullsync/1` carries the [`PullSync`] core's requests
//! and the answers of [`serve`], and the core's store writes run off the event loop.
//!
//! - **Downstream.** The core's requests go out as libp2p requests (the outbound id is mapped
//!   back to the core's); answers and failures go back in. Its [`Output::Store`] batches are
//!   merged in order and written one write at a time on the blocking pool; the core hears of
//!   each token when its write is durable. A failed write stops the node: what is on disk is
//!   consistent (intervals never run ahead of their chunks), and going on would let the core
//!   believe in chunks the store lacks.
//! - **Upstream.** Requests from handshaken peers are answered on the blocking pool, at most
//!   [`MAX_SERVING`] at once and [`MAX_SERVING_PER_PEER`] of one peer; the rest wait in the
//!   peer's queue, which libp2p's stream limit per connection bounds.
//!   A live Get with nothing new is parked until the chunk store's listener says chunks
//!   arrived, or answered empty after [`LIVE_WAIT`]; at most [`MAX_PARKED`] wait at once. A
//!   malformed request disconnects the peer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::{PeerId, Swarm};
use prost::Message;
use tokio::sync::{Notify, mpsc};
use tracing::{debug, warn};
use tributary_chunk::store::{ChunkStore, ChunkStoreError, Origin};
use tributary_chunk::{Address, Chunk};
use tributary_stream::pull::{
    self, BinProgress, Fault, Output, PullConfig, PullStats, PullSync, Token,
};
use tributary_stream::serve::{self, Answer, LiveWait, LiveWaits, ServeError};

use crate::metrics::Metric;
use crate::peer_map::PeerMap;
use crate::runtime::Behaviour;

/// Requests answered at once on the blocking pool.
pub const MAX_SERVING: usize = 32;
/// Requests of one peer answered at once: no peer takes every serving slot (a Want reads up
/// to 128 chunks, about 513 KiB).
pub const MAX_SERVING_PER_PEER: usize = 8;
/// Live Gets parked at once (over all peers); more are answered empty at once.
pub const MAX_PARKED: usize = 2048;
/// How long a live Get waits upstream for new chunks.
pub const LIVE_WAIT: Duration = Duration::from_secs(20);

type Served = (
    ResponseChannel<Vec<u8>>,
    PeerId,
    Vec<u8>,
    Result<Answer, ServeError>,
);
type Written = (Vec<Token>, Result<(), ChunkStoreError>);
type Verified = (u64, Result<Vec<Chunk>, Fault>);
/// A request waiting for a serving slot.
type Waiting = (Vec<u8>, ResponseChannel<Vec<u8>>);
/// A store batch of the core: its token, chunks and sync records.
type Batch = (Token, Vec<(Chunk, Option<Origin>)>, Vec<(Vec<u8>, Vec<u8>)>);

/// What a parked live Get is answered with: its channel, peer and request (served again when
/// woken).
struct Parked {
    channel: ResponseChannel<Vec<u8>>,
    peer: PeerId,
    request: Vec<u8>,
}

#[derive(Debug, Default)]
struct Counters {
    served: u64,
    busy: u64,
    refused_requests: u64,
    parked_full: u64,
}

/// The pull-sync half of the runtime; see the module documentation.
pub struct PullDriver {
    core: PullSync,
    chunks: Arc<ChunkStore>,
    peers: PeerMap,
    outbound: HashMap<OutboundRequestId, u64>,
    unwritten: Vec<Batch>,
    write_task: Option<tokio::task::JoinHandle<Written>>,
    serving: usize,
    serving_by_peer: HashMap<PeerId, usize>,
    /// Requests waiting for a serving slot, per peer.
    waiting: HashMap<PeerId, std::collections::VecDeque<Waiting>>,
    served_tx: mpsc::Sender<Served>,
    served_rx: mpsc::Receiver<Served>,
    parked: LiveWaits<Parked>,
    notify: Arc<Notify>,
    verified_tx: mpsc::Sender<Verified>,
    verified_rx: mpsc::Receiver<Verified>,
    counters: Counters,
}

/// What the runtime must wait on for the driver.
pub enum Event {
    /// A store write ended.
    Written(Result<Written, tokio::task::JoinError>),
    /// An answer was computed.
    Served(Served),
    /// The chunk store stored new chunks.
    Stored,
    /// A delivery was decoded and hashed.
    Verified(Verified),
}

/// Errors that stop the node.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// Chunks and intervals could not be written.
    #[error("writing pulled chunks")]
    Write(#[source] ChunkStoreError),
    /// The write task failed.
    #[error("the pulled-chunk writer failed")]
    Task(#[source] tokio::task::JoinError),
}

impl PullDriver {
    /// A driver over the node's chunk store (its listener is taken over).
    #[must_use]
    pub fn new(chunks: Arc<ChunkStore>, light: bool) -> Self {
        let notify = Arc::new(Notify::new());
        let n = Arc::clone(&notify);
        chunks.set_listener(Arc::new(move || n.notify_one()));
        let (served_tx, served_rx) = mpsc::channel(MAX_SERVING);
        // Deliveries being hashed are bounded by the wants in flight over all peers.
        let (verified_tx, verified_rx) = mpsc::channel(pull::MAX_WANTS);
        let config = PullConfig {
            light,
            live_wait: LIVE_WAIT,
            ..PullConfig::default()
        };
        Self {
            core: PullSync::new(chunks.base(), chunks.epoch(), config),
            chunks,
            peers: PeerMap::default(),
            outbound: HashMap::new(),
            unwritten: Vec::new(),
            write_task: None,
            serving: 0,
            serving_by_peer: HashMap::new(),
            waiting: HashMap::new(),
            served_tx,
            served_rx,
            parked: LiveWaits::default(),
            notify,
            verified_tx,
            verified_rx,
            counters: Counters::default(),
        }
    }

    /// How long libp2p lets a pull-sync request run: past the core's own deadlines, so the
    /// core decides.
    #[must_use]
    pub fn transport_timeout() -> Duration {
        let c = PullConfig::default();
        c.request_timeout + LIVE_WAIT + Duration::from_secs(10)
    }

    /// Waits for the driver's next event.
    pub async fn next_event(&mut self) -> Event {
        tokio::select! {
            written = crate::runtime::finished(&mut self.write_task) => {
                self.write_task = None;
                Event::Written(written)
            }
            Some(served) = self.served_rx.recv() => Event::Served(served),
            Some(verified) = self.verified_rx.recv() => Event::Verified(verified),
            () = self.notify.notified() => Event::Stored,
        }
    }

    /// The next deadline: the core's or a parked Get's.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let parked = self.parked.next_deadline();
        match (self.core.poll_timeout(), parked) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Per (peer, bin) progress.
    #[must_use]
    pub fn progress(&self) -> Vec<BinProgress> {
        self.core.progress()
    }

    /// The core's counters.
    #[must_use]
    pub const fn stats(&self) -> PullStats {
        self.core.stats()
    }

    /// A handshake completed.
    pub fn connected(&mut self, now: Instant, overlay: Address, peer: PeerId, light: bool) {
        self.peers.insert(overlay, peer);
        self.core.handle_connected(now, overlay, light);
    }

    /// A handshaken peer went away.
    pub fn disconnected(&mut self, now: Instant, overlay: Address) {
        if let Some(peer) = self.peers.remove(&overlay) {
            self.parked.retain(|p| p.peer != peer);
            self.waiting.remove(&peer);
        }
        self.core.handle_disconnected(now, overlay);
    }

    /// The Kademlia depth (the core ignores an unchanged one).
    pub fn depth(&mut self, now: Instant, depth: u8) {
        self.core.handle_depth(now, depth, self.chunks.as_ref());
    }

    /// Deadlines: the core's, and parked Gets answered empty.
    pub fn timeout(&mut self, swarm: &mut Swarm<Behaviour>, now: Instant) {
        self.core.handle_timeout(now, self.chunks.as_ref());
        for w in self.parked.take_expired(now) {
            let bytes = serve::empty_offer(w.start).encode_to_vec();
            let _ = swarm
                .behaviour_mut()
                .pullsync
                .send_response(w.token.channel, bytes);
        }
    }

    /// A libp2p event of the pull-sync protocol.
    pub fn on_swarm_event(
        &mut self,
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
            } => self.on_request(peer, request, channel),
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
                if self.core.is_want(id) {
                    // Hashing up to a batch of chunks is not work for the event loop.
                    let tx = self.verified_tx.clone();
                    tokio::task::spawn_blocking(move || {
                        let _ = tx.blocking_send((id, pull::decode_delivery(&response)));
                    });
                } else {
                    self.core
                        .handle_response(now, id, &response, self.chunks.as_ref());
                }
            }
            E::OutboundFailure {
                request_id, error, ..
            } => {
                debug!("pull-sync request failed: {error}");
                if let Some(id) = self.outbound.remove(&request_id) {
                    self.core.handle_failure(now, id);
                }
            }
            E::InboundFailure { peer, error, .. } => {
                debug!(%peer, "pull-sync answer not sent: {error}");
            }
            E::ResponseSent { .. } => {}
        }
    }

    fn on_request(&mut self, peer: PeerId, request: Vec<u8>, channel: ResponseChannel<Vec<u8>>) {
        if !self.peers.contains(&peer) {
            return; // no handshake yet: dropped, the stream closes
        }
        if self.can_serve(peer) {
            self.serve(peer, request, channel);
        } else {
            self.counters.busy += 1;
            self.waiting
                .entry(peer)
                .or_default()
                .push_back((request, channel));
        }
    }

    fn can_serve(&self, peer: PeerId) -> bool {
        let of_peer = self.serving_by_peer.get(&peer).copied().unwrap_or(0);
        self.serving < MAX_SERVING && of_peer < MAX_SERVING_PER_PEER
    }

    /// Starts waiting requests while slots allow, a peer at a time.
    fn serve_waiting(&mut self) {
        let peers: Vec<PeerId> = self.waiting.keys().copied().collect();
        for peer in peers {
            while self.can_serve(peer) {
                let Some((request, channel)) =
                    self.waiting.get_mut(&peer).and_then(|q| q.pop_front())
                else {
                    break;
                };
                self.serve(peer, request, channel);
            }
            if self.waiting.get(&peer).is_some_and(|q| q.is_empty()) {
                self.waiting.remove(&peer);
            }
        }
    }

    fn serve(&mut self, peer: PeerId, request: Vec<u8>, channel: ResponseChannel<Vec<u8>>) {
        self.serving += 1;
        *self.serving_by_peer.entry(peer).or_default() += 1;
        let chunks = Arc::clone(&self.chunks);
        let tx = self.served_tx.clone();
        // Handshaken (see `on_request`); a peer gone since is answered with nothing left out.
        let requester = self.peers.overlay(&peer).unwrap_or(Address([0; 32]));
        tokio::task::spawn_blocking(move || {
            let answer = serve::answer(&chunks, &requester, &request);
            // The loop owns the receiver until it exits; a send after that is moot.
            let _ = tx.blocking_send((channel, peer, request, answer));
        });
    }

    /// Handles a driver event.
    ///
    /// # Errors
    /// When pulled chunks could not be written: the node must stop.
    pub fn on_event(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        now: Instant,
        event: Event,
    ) -> Result<(), PullError> {
        match event {
            Event::Written(result) => {
                let (tokens, written) = result.map_err(PullError::Task)?;
                written.map_err(PullError::Write)?;
                for token in tokens {
                    self.core.handle_stored(now, token, self.chunks.as_ref());
                }
                self.start_write();
            }
            Event::Served(served) => self.on_served(swarm, now, served),
            Event::Stored => self.wake_parked(),
            Event::Verified((id, delivery)) => {
                self.core
                    .handle_delivery(now, id, delivery, self.chunks.as_ref());
            }
        }
        Ok(())
    }

    fn on_served(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        now: Instant,
        (channel, peer, request, answer): Served,
    ) {
        self.serving = self.serving.saturating_sub(1);
        if let Some(n) = self.serving_by_peer.get_mut(&peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.serving_by_peer.remove(&peer);
            }
        }
        self.serve_waiting();
        match answer {
            Ok(Answer::Reply(response)) => {
                self.counters.served += 1;
                let _ = swarm
                    .behaviour_mut()
                    .pullsync
                    .send_response(channel, response.encode_to_vec());
            }
            Ok(Answer::Wait { bin, start }) => {
                if self.parked.len() >= MAX_PARKED || !self.peers.contains(&peer) {
                    self.counters.parked_full += 1;
                    let bytes = serve::empty_offer(start).encode_to_vec();
                    let _ = swarm.behaviour_mut().pullsync.send_response(channel, bytes);
                    return;
                }
                self.parked.park(LiveWait {
                    token: Parked {
                        channel,
                        peer,
                        request,
                    },
                    bin,
                    start,
                    deadline: now + LIVE_WAIT,
                });
                // Chunks may have arrived while it was being answered.
                self.wake_parked();
            }
            Err(ServeError::Peer(e)) => {
                self.counters.refused_requests += 1;
                warn!(%peer, "refused peer: {e}");
                let _ = swarm.disconnect_peer_id(peer);
            }
            Err(ServeError::Store(e)) => warn!(%peer, "pull-sync request failed: {e}"),
        }
    }

    /// Answers the parked Gets whose bin has grown past their start.
    fn wake_parked(&mut self) {
        for LiveWait { token: p, .. } in self.parked.take_ready(&self.chunks) {
            self.waiting
                .entry(p.peer)
                .or_default()
                .push_back((p.request, p.channel));
        }
        self.serve_waiting();
    }

    /// Carries out the core's outputs.
    pub fn drain(&mut self, swarm: &mut Swarm<Behaviour>, now: Instant) {
        while let Some(output) = self.core.poll_output() {
            match output {
                Output::Request {
                    peer, id, request, ..
                } => {
                    let Some(peer_id) = self.peers.id(&peer) else {
                        self.core.handle_failure(now, id);
                        continue;
                    };
                    let out = swarm
                        .behaviour_mut()
                        .pullsync
                        .send_request(&peer_id, request.encode_to_vec());
                    self.outbound.insert(out, id);
                }
                Output::Store {
                    token,
                    chunks,
                    origin,
                    records,
                } => {
                    let pulled = chunks.into_iter().map(|c| (c, origin)).collect();
                    self.unwritten.push((token, pulled, records));
                    self.start_write();
                }
                Output::Penalize { peer, fault } => {
                    if let Some(peer_id) = self.peers.id(&peer) {
                        warn!(peer = %peer_id, "refused peer: {fault}");
                        let _ = swarm.disconnect_peer_id(peer_id);
                    }
                }
            }
        }
    }

    /// Merges the waiting batches into one write on the blocking pool, unless one runs.
    fn start_write(&mut self) {
        if self.write_task.is_some() || self.unwritten.is_empty() {
            return;
        }
        let batches = std::mem::take(&mut self.unwritten);
        let chunks = Arc::clone(&self.chunks);
        self.write_task = Some(tokio::task::spawn_blocking(move || {
            let mut tokens = Vec::with_capacity(batches.len());
            let mut all_chunks = Vec::new();
            let mut all_records = Vec::new();
            for (token, c, r) in batches {
                tokens.push(token);
                all_chunks.extend(c);
                all_records.extend(r);
            }
            let result = chunks
                .put_many_with_records(&all_chunks, &all_records)
                .map(|_| ());
            (tokens, result)
        }));
    }

    /// Waits for the running write (on stop), so what was delivered is kept.
    pub async fn finish_writes(&mut self) {
        while let Some(task) = self.write_task.take() {
            if let Ok((_, Err(e))) = task.await {
                warn!("pulled chunks not written: {e}");
            }
            self.start_write();
        }
    }

    /// Metrics of pull-sync and the reserve.
    #[must_use]
    pub fn metrics(&self) -> Vec<Metric> {
        #[expect(
            clippy::cast_precision_loss,
            reason = "metric values are approximate by nature"
        )]
        let v = |n: u64| n as f64;
        let s = self.core.stats();
        let cursors = self.chunks.cursors();
        let lag: u64 = self
            .core
            .progress()
            .iter()
            .map(|p| p.cursor.saturating_sub(p.synced))
            .sum();
        let c = &self.counters;
        vec![
            Metric::counter(
                "tributary_pullsync_offered_total",
                "Chunks offered to this node.",
                s.offered,
            ),
            Metric::counter(
                "tributary_pullsync_wanted_total",
                "Offered chunks this node wanted.",
                s.wanted,
            ),
            Metric::counter(
                "tributary_pullsync_delivered_total",
                "Chunks delivered to this node and verified.",
                s.delivered,
            ),
            Metric::counter(
                "tributary_pullsync_refused_total",
                "Peers penalized for invalid or unrequested chunks or malformed answers.",
                s.refused,
            ),
            Metric::counter(
                "tributary_pullsync_failures_total",
                "Pull-sync requests that failed or timed out.",
                s.failures,
            ),
            Metric::counter(
                "tributary_pullsync_served_total",
                "Pull-sync requests answered.",
                c.served,
            ),
            Metric::counter(
                "tributary_pullsync_busy_total",
                "Pull-sync requests that waited for a serving slot.",
                c.busy,
            ),
            Metric::counter(
                "tributary_pullsync_refused_requests_total",
                "Malformed pull-sync requests (the peer is disconnected).",
                c.refused_requests,
            ),
            Metric::single(
                "tributary_pullsync_lag_chunks",
                "Bin ids up to the upstream cursors not yet synced, over all streams.",
                "gauge",
                v(lag),
            ),
            Metric::single(
                "tributary_chunks_stored",
                "Chunks in the node's store.",
                "gauge",
                v(cursors.iter().sum()),
            ),
            Metric {
                name: "tributary_pullsync_cursor",
                help: "The last bin id of each bin of the node's store.",
                kind: "gauge",
                samples: cursors
                    .iter()
                    .enumerate()
                    .map(|(bin, c)| (vec![("bin", bin.to_string())], v(*c)))
                    .collect(),
            },
        ]
    }
}
