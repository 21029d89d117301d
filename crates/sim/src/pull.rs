//! Pull-sync in the simulator: each node's [`PullSync`] core, its chunk store on the node's
//! in-memory store, and the upstream answers of [`serve`], carried over the same links,
//! latency, loss and crashes as the overlay's messages.
//!
//! The node runtime's rules, kept here: the core hears of a handshaken peer and of the
//! overlay's depth after every overlay step; a request travels as one message and its answer
//! as another (either may be lost; the core's deadlines notice); a live Get with nothing new
//! waits upstream until chunks arrive or `live_wait` passes; a store write is durable at
//! once. A crash drops the core and the parked Gets, and keeps the store, so a restarted node
//! resumes from the intervals it wrote.
//!
//! For tests of hostile peers a node can be made to [`Lie`] in its deliveries; every chunk a
//! core stores is counted per node, so tests can tell how many were transferred twice.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use prost::Message;
use tributary_chunk::store::ChunkStore;
use tributary_chunk::{Address, Chunk, proximity};
use tributary_store::MemStore;
use tributary_stream::pull::{Fault, Output, PullConfig, PullSync};
use tributary_stream::push::PushSync;
use tributary_stream::retrieval::Retrieval;
use tributary_stream::serve::{self, Answer, LiveWait, LiveWaits};
use tributary_wire::pullsync::{Response, response};

use crate::{Frame, Sim, SimConfig, SimError};

/// How a node answers Wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lie {
    /// As the protocol says.
    Honest,
    /// Replaces the first delivered chunk with another, valid chunk.
    WrongChunk,
    /// Adds a chunk nobody wanted.
    Unrequested,
    /// Answers every push with its own receipt, claiming a deep depth, storing nothing.
    ForgedReceipt,
}

/// A parked live Get's requester and request id.
struct Parked {
    from: usize,
    id: u64,
    /// The Get, answered again as it came (its epoch included) once the bin grows.
    request: Vec<u8>,
}

/// One node's chunk protocols: its pull-sync and retrieval cores over its chunk store.
pub(crate) struct PullNode {
    pub(crate) core: PullSync,
    pub(crate) fetch: Retrieval,
    pub(crate) push: PushSync,
    pub(crate) chunks: Arc<ChunkStore>,
    parked: LiveWaits<Parked>,
    depth: Option<u8>,
    live_wait: std::time::Duration,
}

impl PullNode {
    pub(crate) fn start(
        store: &Arc<MemStore>,
        overlay: Address,
        light: bool,
        config: &SimConfig,
    ) -> Result<Self, SimError> {
        // A store's epoch is fixed when it is created; the seed makes it deterministic.
        let epoch = config.seed | 1;
        let chunks = ChunkStore::open_with_epoch(
            Arc::clone(store) as Arc<dyn tributary_store::KvStore>,
            overlay,
            move || epoch,
        )?;
        let pull = PullConfig {
            light,
            ..config.pull.clone()
        };
        Ok(Self {
            core: PullSync::new(overlay, chunks.epoch(), pull),
            fetch: Retrieval::new(overlay, config.retrieval.clone()),
            push: PushSync::new(overlay, light, config.push.clone()),
            chunks: Arc::new(chunks),
            parked: LiveWaits::default(),
            depth: None,
            live_wait: config.pull.live_wait,
        })
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let parked = self.parked.next_deadline();
        [
            self.core.poll_timeout(),
            parked,
            self.fetch.poll_timeout(),
            self.push.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub(crate) fn disconnected(&mut self, now: Instant, overlay: Address) {
        self.core.handle_disconnected(now, overlay);
        self.fetch.handle_disconnected(now, overlay);
        self.push.handle_disconnected(now, overlay);
    }
}

/// What the pull-sync cores of a run did.
#[derive(Clone, Debug, Default)]
pub struct PullReport {
    /// Chunks stored through pull-sync, per node.
    pub received: Vec<u64>,
    /// Deliveries of a chunk to a node that had received it before (across restarts).
    pub transferred_twice: u64,
    /// Penalties: (node, peer it penalized, why).
    pub penalties: Vec<(usize, Address, Fault)>,
}

/// Pull-sync counters the simulator keeps beside the cores.
#[derive(Default)]
pub(crate) struct PullLedger {
    received: HashMap<(usize, Address), u32>,
    per_node: Vec<u64>,
    twice: u64,
    penalties: Vec<(usize, Address, Fault)>,
    pub(crate) lies: HashMap<usize, Lie>,
    pub(crate) by_overlay: HashMap<Address, usize>,
}

impl Sim {
    /// Stores `chunks` at node `i` as an upload would (its live downstreams hear of them).
    ///
    /// # Errors
    /// When the node's store fails.
    pub fn upload(&mut self, i: usize, chunks: &[Chunk]) -> Result<(), SimError> {
        if let Some(p) = self.nodes[i].pull.as_ref() {
            p.chunks.put_many(chunks)?;
        }
        self.wake_parked(i);
        self.drain(i)
    }

    /// Whether running node `i` stores the chunk at `address`.
    #[must_use]
    pub fn has_chunk(&self, i: usize, address: &Address) -> bool {
        self.nodes[i]
            .pull
            .as_ref()
            .and_then(|p| p.chunks.have_many(std::slice::from_ref(address)).ok())
            .is_some_and(|h| h.first() == Some(&true))
    }

    /// The (node, chunk) pairs of the god's-eye rule not yet met: every running full node
    /// must hold every chunk of `addresses` whose proximity to it is at least its depth.
    #[must_use]
    pub fn missing_chunks(&self, addresses: &[Address]) -> Vec<(usize, Address)> {
        let mut missing = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let (Some(core), Some(_)) = (n.core.as_ref(), n.pull.as_ref()) else {
                continue;
            };
            if n.light {
                continue;
            }
            let (own, depth) = (core.overlay(), core.table().depth());
            for a in addresses {
                if proximity(&own, a) >= depth && !self.has_chunk(i, a) {
                    missing.push((i, *a));
                }
            }
        }
        missing
    }

    /// Makes node `i` answer Wants as `lie` says.
    pub fn set_lie(&mut self, i: usize, lie: Lie) {
        self.ledger.lies.insert(i, lie);
    }

    /// What the pull-sync cores did so far.
    #[must_use]
    pub fn pull_report(&self) -> PullReport {
        let mut received = self.ledger.per_node.clone();
        received.resize(self.nodes.len(), 0);
        PullReport {
            received,
            transferred_twice: self.ledger.twice,
            penalties: self.ledger.penalties.clone(),
        }
    }

    /// The counters of node `i`'s running pull-sync core (since its last start).
    #[must_use]
    pub fn pull_stats(&self, i: usize) -> Option<tributary_stream::pull::PullStats> {
        self.nodes[i].pull.as_ref().map(|p| p.core.stats())
    }

    /// The cursors of node `i`'s chunk store.
    #[must_use]
    pub fn cursors(&self, i: usize) -> Vec<u64> {
        self.nodes[i]
            .pull
            .as_ref()
            .map(|p| p.chunks.cursors())
            .unwrap_or_default()
    }

    /// Node `i`'s pull-sync progress per (peer, bin).
    #[must_use]
    pub fn pull_progress(&self, i: usize) -> Vec<tributary_stream::pull::BinProgress> {
        self.nodes[i]
            .pull
            .as_ref()
            .map(|p| p.core.progress())
            .unwrap_or_default()
    }

    /// Pull-sync streams of running nodes whose historical part is not done.
    #[must_use]
    pub fn historical_streams(&self) -> usize {
        self.nodes
            .iter()
            .filter_map(|n| n.pull.as_ref())
            .map(|p| {
                p.core
                    .progress()
                    .iter()
                    .filter(|s| !s.historical_done)
                    .count()
            })
            .sum()
    }

    pub(crate) fn serve_pull(&mut self, at: usize, from: usize, id: u64, bytes: &[u8]) {
        let now = self.net.now();
        let requester = self.nodes[from]
            .identity
            .overlay(self.config.overlay.network_id);
        let Some(p) = self.nodes[at].pull.as_mut() else {
            return;
        };
        let answer = serve::answer(&p.chunks, &requester, bytes);
        match answer {
            Ok(Answer::Wait { bin, start }) => {
                let deadline = now + p.live_wait;
                p.parked.park(LiveWait {
                    token: Parked {
                        from,
                        id,
                        request: bytes.to_vec(),
                    },
                    bin,
                    start,
                    deadline,
                });
            }
            Ok(Answer::Reply(mut response)) => {
                let lie = self.ledger.lies.get(&at).copied().unwrap_or(Lie::Honest);
                tell_lie(lie, &mut response);
                let bytes = response.encode_to_vec();
                self.send(at, from, Frame::PullResponse { id, bytes });
            }
            // A malformed request (none of the simulated cores sends one) or a store failure:
            // no answer, the requester's deadline notices.
            Err(_) => {}
        }
    }

    /// Answers the parked live Gets of node `i` that have something to offer now.
    pub(crate) fn wake_parked(&mut self, i: usize) {
        let Some(p) = self.nodes[i].pull.as_mut() else {
            return;
        };
        for w in p.parked.take_ready(&p.chunks) {
            self.serve_pull(i, w.token.from, w.token.id, &w.token.request);
        }
    }

    /// The pull core's deadlines, and parked Gets answered empty.
    pub(crate) fn pull_timeout(&mut self, i: usize) {
        let now = self.net.now();
        let Some(p) = self.nodes[i].pull.as_mut() else {
            return;
        };
        p.core.handle_timeout(now, p.chunks.as_ref());
        p.fetch.handle_timeout(now);
        p.push.handle_timeout(now);
        for w in p.parked.take_expired(now) {
            let bytes = serve::empty_offer(w.start).encode_to_vec();
            let Parked { from, id, .. } = w.token;
            self.send(i, from, Frame::PullResponse { id, bytes });
        }
    }

    /// Tells the pull core the overlay's depth, then carries out its outputs.
    pub(crate) fn drain_pull(&mut self, i: usize) -> Result<(), SimError> {
        let now = self.net.now();
        let depth = self.nodes[i].core.as_ref().map(|c| c.table().depth());
        let overlay = self.nodes[i]
            .core
            .as_ref()
            .map(tributary_overlay::Overlay::overlay);
        if let Some(o) = overlay {
            self.ledger.by_overlay.insert(o, i);
        }
        let Some(p) = self.nodes[i].pull.as_mut() else {
            return Ok(());
        };
        if let Some(d) = depth
            && p.depth != Some(d)
        {
            p.depth = Some(d);
            p.core.handle_depth(now, d, p.chunks.as_ref());
        }
        while let Some(output) = self.nodes[i]
            .pull
            .as_mut()
            .and_then(|p| p.core.poll_output())
        {
            self.carry_out_pull(i, output)?;
        }
        Ok(())
    }

    fn carry_out_pull(&mut self, i: usize, output: Output) -> Result<(), SimError> {
        let now = self.net.now();
        match output {
            Output::Request {
                peer, id, request, ..
            } => {
                if let Some(&to) = self.ledger.by_overlay.get(&peer) {
                    let bytes = request.encode_to_vec();
                    self.send(i, to, Frame::PullRequest { id, bytes });
                }
            }
            Output::Store {
                token,
                chunks,
                origin,
                records,
            } => {
                self.count_received(i, &chunks);
                if let Some(p) = self.nodes[i].pull.as_mut() {
                    let pulled: Vec<_> = chunks.into_iter().map(|c| (c, origin)).collect();
                    p.chunks.put_many_with_records(&pulled, &records)?;
                    p.core.handle_stored(now, token, p.chunks.as_ref());
                }
                self.wake_parked(i);
            }
            Output::Penalize { peer, fault } => {
                self.ledger.penalties.push((i, peer, fault));
                if let Some(&other) = self.ledger.by_overlay.get(&peer) {
                    self.close(i, other)?;
                }
            }
        }
        Ok(())
    }

    fn count_received(&mut self, i: usize, chunks: &[Chunk]) {
        let ledger = &mut self.ledger;
        if ledger.per_node.len() <= i {
            ledger.per_node.resize(i + 1, 0);
        }
        for c in chunks {
            let n = ledger.received.entry((i, c.address())).or_default();
            *n += 1;
            if *n > 1 {
                ledger.twice += 1;
            }
            ledger.per_node[i] += 1;
        }
    }
}

fn tell_lie(lie: Lie, response: &mut Response) {
    let Some(response::Message::Delivery(d)) = response.message.as_mut() else {
        return;
    };
    if d.chunks.is_empty() {
        return;
    }
    // A valid chunk nobody asked for: its own address, not the wanted one.
    let other = Chunk::new(9, b"not asked").map(Chunk::into_data);
    match (lie, other) {
        (Lie::WrongChunk, Ok(data)) => d.chunks[0] = data,
        (Lie::Unrequested, Ok(data)) => d.chunks.push(data),
        _ => {}
    }
}
