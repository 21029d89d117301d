//! Push-sync, sans-IO: an uploaded chunk travels hop by hop toward its address until a node
//! whose neighbourhood holds it stores it; the storer's signed receipt comes back along the
//! path, as bee's pushsync does.
//!
//! **Who stores.** A full node that receives a push stores the chunk when its proximity to
//! the chunk is at least its depth (the chunk is in its neighbourhood), or when no connected
//! full peer is closer to the chunk than itself; it then answers with its receipt
//! ([`Output::Store`]: the runtime writes the chunk, signs, and answers). Otherwise it
//! forwards the push to the closest full peer closer to the chunk than itself, never to the
//! peer it came from. The uploading node ([`PushSync::handle_local`]) always pushes first (bee:
//! the origin does not count as a storer), and signs its own receipt only when no peer is
//! closer than itself and the chunk is in its neighbourhood.
//!
//! **Receipts.** The runtime checks a receipt's signature off the loop and hands the core the
//! storer's overlay ([`Receipt`]); the core accepts it when it names the chunk pushed, the
//! storer's proximity to the chunk is at least the depth the storer claims, and that proximity
//! is no shallower than this node's own depth less [`DEPTH_TOLERANCE`]. A peer that answers with
//! a receipt that fails the first two checks (a lie) is penalized and the next peer is tried;
//! every hop checks, so a forged receipt goes no further than the node after its forger. A
//! receipt that fails only the third is tried elsewhere without a penalty: its storer may be
//! honest with a table still filling (bee counts it "shallow").
//!
//! **One push per chunk**, however many requesters; bounded attempts ([`ORIGIN_ATTEMPTS`],
//! [`FORWARD_ATTEMPTS`]), a per-attempt timeout (a forwarder waits half as long, and its whole
//! push no longer than that: it tries a second peer only when the first fails fast), a
//! deadline per push, and at most [`MAX_PUSHES`] pushes, [`MAX_WAITERS`] requesters per push
//! and [`MAX_PER_PEER`] forwarded pushes per peer.
//!
//! **What a receipt proves.** A signature by a key whose overlay (derived with the nonce the
//! receipt carries) lies in the chunk's neighbourhood. Without stake or a registry of nodes, a
//! forger that grinds nonces until its overlay lands there (about `2^(depth − 3)` hashes at
//! depth `depth`) can make one; in small networks (depth 3 or less) the proximity check
//! accepts any signer. Bee leans on staking for this; Tributary has no such anchor yet.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use prost::Message;
use tributary_chunk::{Address, Chunk, proximity};
use tributary_wire::pushsync::{self, Delivery};
use tributary_wire::{MAX_PUSH_MESSAGE_BYTES, MAX_PUSH_REQUEST_BYTES};

use crate::pull::{Fault, RequestId};
pub use crate::route::Requester;
use crate::route::{self, Open, OpenRequests, PeerCounts};

/// Peers an upload's push tries at most.
pub const ORIGIN_ATTEMPTS: usize = 8;
/// Peers a forwarded push tries at most.
pub const FORWARD_ATTEMPTS: usize = 2;
/// Pushes at once; more are answered [`PushError::Busy`].
pub const MAX_PUSHES: usize = 1024;
/// Requesters waiting on one push.
pub const MAX_WAITERS: usize = 16;
/// Forwarded pushes of one peer waiting at once (a peer pushing a chunk it already waits on
/// is refused too).
pub const MAX_PER_PEER: usize = 64;
/// How much shallower than this node's depth a storer's proximity to the chunk may be. Depth
/// is each node's own view of its table: in the simulator's healthy 64-node networks it
/// ranges over 2–5 from node to node (`cargo test -p tributary-sim --test push`), so a
/// tolerance of 1 refused honest storers.
pub const DEPTH_TOLERANCE: u8 = 3;
/// Longest error text put in an answer.
pub const MAX_ERROR_LEN: usize = 256;

/// Timing of the core.
#[derive(Clone, Debug)]
pub struct PushConfig {
    /// How long the uploader waits for one peer's receipt (a forwarder waits half as long).
    pub attempt_timeout: Duration,
    /// How long an upload's push may take in all.
    pub push_timeout: Duration,
}

impl Default for PushConfig {
    fn default() -> Self {
        Self {
            attempt_timeout: Duration::from_secs(6),
            push_timeout: Duration::from_secs(30),
        }
    }
}

/// A receipt whose signature the runtime checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// The chunk it is for.
    pub address: Address,
    /// The storer's overlay.
    pub storer: Address,
    /// The depth the storer claims.
    pub depth: u8,
    /// The wire form, relayed unchanged.
    pub wire: pushsync::Receipt,
}

/// Why a push ended without a receipt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// No peer is left to push to.
    #[error("chunk {0} not pushed: no peer left to push to")]
    NoPeer(Address),
    /// The push ran out of time.
    #[error("chunk {0} not pushed within the time allowed")]
    Timeout(Address),
    /// Too many pushes or requesters at once.
    #[error("too many pushes at once; chunk {0} not pushed")]
    Busy(Address),
}

/// What the core asks the runtime to do.
#[derive(Debug, PartialEq)]
pub enum Output {
    /// Push `chunk` to `peer`; answer with [`PushSync::handle_receipt`] or
    /// [`PushSync::handle_failure`].
    Request {
        /// The peer's overlay.
        peer: Address,
        /// The request's id.
        id: RequestId,
        /// The chunk.
        chunk: Chunk,
    },
    /// Store `chunk` here, sign this node's receipt for it at `depth`, and give that to
    /// `requester` (a failed write answers it with an error).
    Store {
        /// Who waits.
        requester: Requester,
        /// The chunk.
        chunk: Chunk,
        /// This node's depth, for the receipt.
        depth: u8,
    },
    /// Give a requester a receipt from another node, or why there is none.
    Answer {
        /// Who waits.
        requester: Requester,
        /// The receipt (verified) or the failure.
        result: Result<Receipt, PushError>,
    },
    /// Disconnect `peer`: it sent an invalid receipt or a malformed answer.
    Penalize {
        /// The peer.
        peer: Address,
        /// What it did.
        fault: Fault,
    },
}

/// Counters for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PushStats {
    /// Pushes of uploads started.
    pub local: u64,
    /// Peers' pushes forwarded.
    pub forwarded: u64,
    /// Chunks stored here as a storer (receipts signed).
    pub stored: u64,
    /// Pushes sent to peers.
    pub requests: u64,
    /// Valid receipts received.
    pub receipts: u64,
    /// Peers that failed or timed out.
    pub misses: u64,
    /// Peers penalized for invalid receipts or malformed answers.
    pub refused: u64,
    /// Receipts whose storer's depth was too shallow to count (tried elsewhere).
    pub shallow: u64,
    /// Pushes that ended without a receipt.
    pub failed: u64,
}

#[derive(Debug)]
struct Push {
    chunk: Chunk,
    requesters: Vec<Requester>,
    origin: bool,
    skip: BTreeSet<Address>,
    current: Option<RequestId>,
    attempts: usize,
    max_attempts: usize,
    deadline: Instant,
}

/// The push-sync core of one node; see the module documentation.
#[derive(Debug)]
pub struct PushSync {
    own: Address,
    light: bool,
    depth: u8,
    config: PushConfig,
    peers: BTreeSet<Address>,
    pushes: BTreeMap<Address, Push>,
    by_peer: PeerCounts,
    open: OpenRequests,
    push_deadlines: BTreeSet<(Instant, Address)>,
    next_id: RequestId,
    outputs: VecDeque<Output>,
    stats: PushStats,
}

/// Decodes a peer's push (the runtime runs this off its event loop: it hashes the chunk).
///
/// # Errors
/// [`Fault::Malformed`] when it is not a delivery of a chunk.
pub fn decode_delivery(bytes: &[u8]) -> Result<Chunk, Fault> {
    if bytes.len() > MAX_PUSH_REQUEST_BYTES {
        return Err(Fault::Malformed("push too large"));
    }
    let d = Delivery::decode(bytes).map_err(|_| Fault::Malformed("not a push"))?;
    Chunk::from_wire(d.chunk).map_err(|_| Fault::Malformed("not a chunk"))
}

/// Decodes a receipt answer: `Ok(None)` when the peer says the push failed.
///
/// # Errors
/// [`Fault::Malformed`] when it is not a receipt.
pub fn decode_receipt(bytes: &[u8]) -> Result<Option<pushsync::Receipt>, Fault> {
    if bytes.len() > MAX_PUSH_MESSAGE_BYTES {
        return Err(Fault::Malformed("receipt too large"));
    }
    let r = pushsync::Receipt::decode(bytes).map_err(|_| Fault::Malformed("not a receipt"))?;
    Ok(r.error.is_empty().then_some(r))
}

/// The answer that carries a failure to a peer.
#[must_use]
pub fn encode_error(error: &str) -> pushsync::Receipt {
    let mut error = error.to_owned();
    error.truncate(MAX_ERROR_LEN);
    if error.is_empty() {
        error.push_str("push failed");
    }
    pushsync::Receipt {
        error,
        ..pushsync::Receipt::default()
    }
}

impl PushSync {
    /// A core for the node whose overlay is `own` (`light`: it never stores for others).
    #[must_use]
    pub fn new(own: Address, light: bool, config: PushConfig) -> Self {
        Self {
            own,
            light,
            depth: 0,
            config,
            peers: BTreeSet::new(),
            pushes: BTreeMap::new(),
            by_peer: PeerCounts::default(),
            open: OpenRequests::default(),
            push_deadlines: BTreeSet::new(),
            next_id: 0,
            outputs: VecDeque::new(),
            stats: PushStats::default(),
        }
    }

    /// The node's Kademlia depth.
    pub const fn handle_depth(&mut self, depth: u8) {
        self.depth = depth;
    }

    /// A handshaken peer; light peers are never pushed to.
    pub fn handle_connected(&mut self, peer: Address, light: bool) {
        if !light {
            self.peers.insert(peer);
        }
    }

    /// A peer went away: its open pushes fail and try the next peer.
    pub fn handle_disconnected(&mut self, now: Instant, peer: Address) {
        self.peers.remove(&peer);
        for id in self.open.of_peer(&peer) {
            self.handle_failure(now, id);
        }
    }

    /// An upload on this node: push `chunk` toward its neighbourhood.
    pub fn handle_local(&mut self, now: Instant, chunk: Chunk, token: u64) {
        let deadline = now + self.config.push_timeout;
        self.push(
            now,
            chunk,
            Requester::Local(token),
            (ORIGIN_ATTEMPTS, deadline),
        );
    }

    /// `peer` pushed `chunk` (decoded and hashed) to this node.
    pub fn handle_request(&mut self, now: Instant, peer: Address, token: u64, chunk: Chunk) {
        let requester = Requester::Peer { peer, token };
        if !self.light && proximity(&self.own, &chunk.address()) >= self.depth {
            self.store_here(requester, chunk);
            return;
        }
        let deadline = now + self.config.attempt_timeout / 2;
        self.push(now, chunk, requester, (FORWARD_ATTEMPTS, deadline));
    }

    /// The answer to push `id`: a receipt whose signature the runtime checked, `Ok(None)`
    /// when the peer says it failed, or the fault of a malformed answer or bad signature.
    pub fn handle_receipt(
        &mut self,
        now: Instant,
        id: RequestId,
        receipt: Result<Option<Receipt>, Fault>,
    ) {
        let Some(open) = self.open.take(id) else {
            return; // timed out or failed already
        };
        match receipt {
            Ok(Some(r)) => match self.check(&open, &r) {
                Ok(true) => self.accept(&r),
                Ok(false) => {
                    // An honest storer whose table is still filling (after a restart, say):
                    // not proof enough, but no lie either.
                    self.stats.shallow += 1;
                    self.next_peer(now, open.address);
                }
                Err(fault) => self.penalize(now, open, fault),
            },
            Ok(None) => {
                self.stats.misses += 1;
                self.next_peer(now, open.address);
            }
            Err(fault) => self.penalize(now, open, fault),
        }
    }

    /// Push `id` failed in transport: the next peer is tried.
    pub fn handle_failure(&mut self, now: Instant, id: RequestId) {
        if let Some(open) = self.open.take(id) {
            self.stats.misses += 1;
            self.next_peer(now, open.address);
        }
    }

    /// Deadlines: unanswered pushes try the next peer; pushes past their deadline end.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(open) = self.open.take_due(now) {
            self.stats.misses += 1;
            self.next_peer(now, open.address);
        }
        while let Some(&(at, address)) = self.push_deadlines.first() {
            if at > now {
                break;
            }
            self.push_deadlines.pop_first();
            self.finish(address, PushError::Timeout(address));
        }
    }

    /// The next deadline.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let a = self.open.next_deadline();
        let p = self.push_deadlines.first().map(|(t, _)| *t);
        a.into_iter().chain(p).min()
    }

    /// The next output.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The core's counters.
    #[must_use]
    pub const fn stats(&self) -> PushStats {
        self.stats
    }

    /// Pushes running.
    #[must_use]
    pub fn pushes(&self) -> usize {
        self.pushes.len()
    }

    /// Whether push `id` is still awaited.
    #[must_use]
    pub fn is_open(&self, id: RequestId) -> bool {
        self.open.contains(id)
    }

    fn push(
        &mut self,
        now: Instant,
        chunk: Chunk,
        requester: Requester,
        (attempts, deadline): (usize, Instant),
    ) {
        let address = chunk.address();
        let origin = matches!(requester, Requester::Local(_));
        let waiting = self.pushes.get(&address).map_or(&[][..], |p| &p.requesters);
        if self.by_peer.refuses(requester, waiting, MAX_PER_PEER) {
            self.answer(requester, Err(PushError::Busy(address)));
            return;
        }
        if let Some(p) = self.pushes.get_mut(&address) {
            if p.requesters.len() >= MAX_WAITERS {
                self.answer(requester, Err(PushError::Busy(address)));
                return;
            }
            p.requesters.push(requester);
            self.by_peer.add(requester);
            p.origin |= origin;
            p.max_attempts = p.max_attempts.max(attempts);
            if let Requester::Peer { peer, .. } = requester {
                p.skip.insert(peer);
            }
            if deadline > p.deadline {
                self.push_deadlines.remove(&(p.deadline, address));
                p.deadline = deadline;
                self.push_deadlines.insert((deadline, address));
            }
            return;
        }
        if self.pushes.len() >= MAX_PUSHES {
            self.answer(requester, Err(PushError::Busy(address)));
            return;
        }
        if origin {
            self.stats.local += 1;
        } else {
            self.stats.forwarded += 1;
        }
        let mut skip = BTreeSet::new();
        skip.extend(requester.peer());
        self.by_peer.add(requester);
        self.pushes.insert(
            address,
            Push {
                chunk,
                requesters: vec![requester],
                origin,
                skip,
                current: None,
                attempts: 0,
                max_attempts: attempts,
                deadline,
            },
        );
        self.push_deadlines.insert((deadline, address));
        self.next_peer(now, address);
    }

    /// Pushes to the next peer, or stores here when no peer is closer than this node, or
    /// ends the push.
    fn next_peer(&mut self, now: Instant, address: Address) {
        let Some(p) = self.pushes.get_mut(&address) else {
            return;
        };
        p.current = None;
        if now >= p.deadline {
            self.finish(address, PushError::Timeout(address));
            return;
        }
        let in_reach = route::closest(&self.peers, &address, &p.skip, Some(&self.own));
        let peer = if p.origin {
            // The uploader pushes even to a peer farther than itself rather than store first,
            // unless none is closer and the chunk is its own neighbourhood's.
            in_reach.or_else(|| {
                let mine = !self.light && proximity(&self.own, &address) >= self.depth;
                if mine {
                    None
                } else {
                    route::closest(&self.peers, &address, &p.skip, None)
                }
            })
        } else {
            in_reach
        };
        let Some(peer) = peer.filter(|_| p.attempts < p.max_attempts) else {
            let first_hop_none = p.attempts == 0 && in_reach.is_none();
            if first_hop_none && !self.light {
                // No peer closer to the chunk than this node: this node is where it belongs.
                if let Some(p) = self.remove_push(address) {
                    for requester in p.requesters {
                        self.by_peer.release(requester);
                        self.store_here(requester, p.chunk.clone());
                    }
                }
            } else {
                self.finish(address, PushError::NoPeer(address));
            }
            return;
        };
        let id = self.next_id;
        self.next_id += 1;
        p.current = Some(id);
        p.attempts += 1;
        p.skip.insert(peer);
        let wait = if p.origin {
            self.config.attempt_timeout
        } else {
            self.config.attempt_timeout / 2
        };
        let at = (now + wait).min(p.deadline);
        let chunk = p.chunk.clone();
        self.open.insert(
            id,
            Open {
                address,
                peer,
                deadline: at,
            },
        );
        self.stats.requests += 1;
        self.outputs.push_back(Output::Request { peer, id, chunk });
    }

    /// Whether a receipt proves the chunk of `open` stored in its neighbourhood: a fault when
    /// it is a lie (another chunk, or a storer outside the depth it claims itself), `false`
    /// when its storer's depth is too shallow to count.
    fn check(&self, open: &Open, r: &Receipt) -> Result<bool, Fault> {
        if r.address != open.address {
            return Err(Fault::Malformed("a receipt for another chunk"));
        }
        if proximity(&r.storer, &r.address) < r.depth {
            return Err(Fault::Malformed(
                "a receipt from outside the chunk's neighbourhood",
            ));
        }
        let po = proximity(&r.storer, &r.address);
        Ok(po.saturating_add(DEPTH_TOLERANCE) >= self.depth)
    }

    fn accept(&mut self, receipt: &Receipt) {
        self.stats.receipts += 1;
        let Some(p) = self.remove_push(receipt.address) else {
            return;
        };
        for requester in p.requesters {
            self.by_peer.release(requester);
            self.answer(requester, Ok(receipt.clone()));
        }
    }

    /// Stores `chunk` here. The receipt claims no more than the node's proximity to the chunk:
    /// a node that stores because no peer is closer (proximity below its depth) must not claim
    /// a depth its own overlay contradicts, or every checker would take it for a liar.
    fn store_here(&mut self, requester: Requester, chunk: Chunk) {
        self.stats.stored += 1;
        let depth = self.depth.min(proximity(&self.own, &chunk.address()));
        self.outputs.push_back(Output::Store {
            requester,
            chunk,
            depth,
        });
    }

    fn penalize(&mut self, now: Instant, open: Open, fault: Fault) {
        self.stats.refused += 1;
        self.peers.remove(&open.peer);
        self.outputs.push_back(Output::Penalize {
            peer: open.peer,
            fault,
        });
        self.next_peer(now, open.address);
    }

    fn finish(&mut self, address: Address, error: PushError) {
        let Some(p) = self.remove_push(address) else {
            return;
        };
        self.stats.failed += 1;
        for requester in p.requesters {
            self.by_peer.release(requester);
            self.answer(requester, Err(error));
        }
    }

    fn remove_push(&mut self, address: Address) -> Option<Push> {
        let p = self.pushes.remove(&address)?;
        self.push_deadlines.remove(&(p.deadline, address));
        if let Some(id) = p.current {
            self.open.take(id);
        }
        Some(p)
    }

    fn answer(&mut self, requester: Requester, result: Result<Receipt, PushError>) {
        self.outputs.push_back(Output::Answer { requester, result });
    }
}
