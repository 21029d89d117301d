//! Retrieval, sans-IO: fetching a chunk this node lacks from the peers closest to it, as old
//! Swarm's fetcher and bee's retrieval do.
//!
//! **One fetch per chunk.** However many local readers ([`Retrieval::handle_local`]) and
//! forwarded requests ([`Retrieval::handle_request`]) want a chunk, one request for it is out
//! at a time; every requester is answered from the one delivery.
//!
//! **Which peer.** The connected full peer closest (XOR) to the chunk that the fetch has not
//! asked yet and that is not one of its requesters. A forwarder asks only peers closer to the
//! chunk than itself (bee's rule), so a request moves toward the chunk's neighbourhood and a
//! path never loops; the node that reads the chunk itself may ask any peer (it may be the
//! closest node and lack the chunk). Light peers are never asked. A request also carries a
//! hop budget ([`MAX_HOPS`], old Swarm's `maxHopCount`), spent one per forward.
//!
//! **Failures.** A peer that answers "not found", fails, or does not answer within
//! [`RetrievalConfig::attempt_timeout`] is skipped and the next closest is asked: at most
//! [`ORIGIN_ATTEMPTS`] peers for a local reader, [`FORWARD_ATTEMPTS`] for a forwarded request
//! (bee's forwarder allows one error), and never past the fetch's deadline. A forwarder waits
//! half the attempt timeout per peer, so the first forwarder on a path can try a second peer
//! before the reader gives up on it; deeper forwarders wait as long as the first (a request
//! carries no time budget), so a stall deep in a path costs the reader that attempt. A request
//! that arrives for a chunk whose fetch already asked the requester is a loop: it is answered
//! "not found" at once. One peer has at most [`MAX_PER_PEER`] forwarded requests waiting.
//!
//! **Verification.** The runtime decodes and hashes a delivery off its event loop
//! ([`decode_delivery`]); the core checks the address is the one asked for. A peer that
//! delivers another chunk or a malformed answer is penalized and the next peer is asked.
//! A verified chunk is stored ([`Output::Store`]: cache on forward) and given to every
//! requester.
//!
//! **Priority.** Retrieval is [`Class::Retrieval`], above live and historical sync: it never
//! waits on pull-sync's want slots or serving queue.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use prost::Message;
use tributary_chunk::{Address, Chunk};
use tributary_wire::MAX_RETRIEVAL_MESSAGE_BYTES;
use tributary_wire::retrieval::{Delivery, Request};

use crate::pull::{Class, Fault, RequestId};
pub use crate::route::Requester;
use crate::route::{self, Open, OpenRequests, PeerCounts};

/// The hop budget of a node's own request (old Swarm's `maxHopCount`).
pub const MAX_HOPS: u8 = 20;
/// Peers a local reader's fetch asks at most.
pub const ORIGIN_ATTEMPTS: usize = 8;
/// Peers a forwarded request's fetch asks at most.
pub const FORWARD_ATTEMPTS: usize = 2;
/// Fetches at once; a request beyond is answered [`RetrievalError::Busy`].
pub const MAX_FETCHES: usize = 1024;
/// Requesters waiting on one fetch.
pub const MAX_WAITERS: usize = 64;
/// Forwarded requests of one peer waiting at once, so that a few peers cannot take every
/// fetch from this node's own readers. A peer asking for a chunk it already waits on is
/// refused too.
pub const MAX_PER_PEER: usize = 64;
/// Longest error text put in an answer.
pub const MAX_ERROR_LEN: usize = 256;

/// The class of retrieval work on a connection.
pub const CLASS: Class = Class::Retrieval;

/// Timing of the core.
#[derive(Clone, Debug)]
pub struct RetrievalConfig {
    /// How long a node waits for one peer's answer to its own request (a forwarder waits
    /// half as long).
    pub attempt_timeout: Duration,
    /// How long a local reader waits for a chunk in all.
    pub fetch_timeout: Duration,
}

impl Default for RetrievalConfig {
    fn default() -> Self {
        Self {
            attempt_timeout: Duration::from_secs(4),
            fetch_timeout: Duration::from_secs(30),
        }
    }
}

/// Why a chunk could not be retrieved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RetrievalError {
    /// No peer is left to ask (none connected, all asked, or none closer to the chunk).
    #[error("chunk {0} not found: no peer left to ask")]
    NotFound(Address),
    /// The fetch ran out of time.
    #[error("chunk {0} not found within the time allowed")]
    Timeout(Address),
    /// The request may not be forwarded any further.
    #[error("chunk {0} not found within the hop limit")]
    HopLimit(Address),
    /// Too many fetches or requesters at once.
    #[error("too many retrievals at once; chunk {0} not fetched")]
    Busy(Address),
}

/// What the core asks the runtime to do.
#[derive(Debug, PartialEq)]
pub enum Output {
    /// Send a retrieval request to `peer`; answer with [`Retrieval::handle_delivery`],
    /// [`Retrieval::handle_missing`] or [`Retrieval::handle_failure`].
    Request {
        /// The peer's overlay.
        peer: Address,
        /// The request's id.
        id: RequestId,
        /// The request.
        request: Request,
    },
    /// Give a requester its answer.
    Answer {
        /// Who asked.
        requester: Requester,
        /// The verified chunk, or why there is none.
        result: Result<Chunk, RetrievalError>,
    },
    /// Store a verified chunk (cache on forward, and at the reader).
    Store(Chunk),
    /// Disconnect `peer`: it delivered an invalid chunk or a malformed answer.
    Penalize {
        /// The peer.
        peer: Address,
        /// What it did.
        fault: Fault,
    },
}

/// Counters for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetrievalStats {
    /// Fetches started for local readers.
    pub local: u64,
    /// Fetches started for peers' requests (forwards).
    pub forwarded: u64,
    /// Requesters that joined a fetch already running.
    pub coalesced: u64,
    /// Requests sent to peers.
    pub requests: u64,
    /// Chunks delivered and verified.
    pub delivered: u64,
    /// Peers that answered "not found" or failed.
    pub misses: u64,
    /// Requests that timed out.
    pub timeouts: u64,
    /// Peers penalized.
    pub refused: u64,
    /// Fetches that ended without the chunk.
    pub failed: u64,
    /// Requests refused as loops, over the hop limit, or over the bounds.
    pub refused_requests: u64,
}

#[derive(Debug)]
struct Fetch {
    requesters: Vec<Requester>,
    /// A local reader waits: any peer may be asked, not only closer ones.
    origin: bool,
    /// The hop budget its requests carry.
    hops: u8,
    /// Peers asked, and the requesters: not asked (again).
    skip: BTreeSet<Address>,
    asked: BTreeSet<Address>,
    current: Option<RequestId>,
    attempts: usize,
    max_attempts: usize,
    deadline: Instant,
}

/// The retrieval core of one node; see the module documentation.
#[derive(Debug)]
pub struct Retrieval {
    own: Address,
    config: RetrievalConfig,
    /// Connected full peers.
    peers: BTreeSet<Address>,
    fetches: BTreeMap<Address, Fetch>,
    by_peer: PeerCounts,
    open: OpenRequests,
    /// Deadlines of fetches, one entry per fetch.
    fetch_deadlines: BTreeSet<(Instant, Address)>,
    next_id: RequestId,
    outputs: VecDeque<Output>,
    stats: RetrievalStats,
}

/// Decodes a retrieval answer and hashes its chunk (the runtime runs this off its event
/// loop): `Ok(None)` when the peer says it has no chunk.
///
/// # Errors
/// [`Fault::Malformed`] when the answer is not a delivery or its chunk is not a chunk.
pub fn decode_delivery(bytes: &[u8]) -> Result<Option<Chunk>, Fault> {
    if bytes.len() > MAX_RETRIEVAL_MESSAGE_BYTES {
        return Err(Fault::Malformed("answer too large"));
    }
    let delivery = Delivery::decode(bytes).map_err(|_| Fault::Malformed("not a delivery"))?;
    if delivery.chunk.is_empty() {
        return Ok(None);
    }
    Chunk::from_wire(delivery.chunk)
        .map(Some)
        .map_err(|_| Fault::Malformed("not a chunk"))
}

/// Decodes a peer's request: the address and the hop budget (capped at [`MAX_HOPS`]).
///
/// # Errors
/// [`Fault::Malformed`] when it is not a request or its address is not 32 bytes.
pub fn decode_request(bytes: &[u8]) -> Result<(Address, u8), Fault> {
    let request = Request::decode(bytes).map_err(|_| Fault::Malformed("not a request"))?;
    let address: [u8; 32] = request
        .address
        .try_into()
        .map_err(|_| Fault::Malformed("an address of other than 32 bytes"))?;
    let hops = u8::try_from(request.hops.min(u32::from(MAX_HOPS))).unwrap_or(MAX_HOPS);
    Ok((Address(address), hops))
}

/// The answer that carries `result` to a peer.
#[must_use]
pub fn encode_answer(result: &Result<Chunk, RetrievalError>) -> Delivery {
    match result {
        Ok(chunk) => Delivery {
            chunk: chunk.data().to_vec(),
            error: String::new(),
        },
        Err(e) => {
            let mut error = e.to_string();
            error.truncate(MAX_ERROR_LEN);
            Delivery {
                chunk: Vec::new(),
                error,
            }
        }
    }
}

impl Retrieval {
    /// A core for the node whose overlay is `own`.
    #[must_use]
    pub fn new(own: Address, config: RetrievalConfig) -> Self {
        Self {
            own,
            config,
            peers: BTreeSet::new(),
            fetches: BTreeMap::new(),
            by_peer: PeerCounts::default(),
            open: OpenRequests::default(),
            fetch_deadlines: BTreeSet::new(),
            next_id: 0,
            outputs: VecDeque::new(),
            stats: RetrievalStats::default(),
        }
    }

    /// A handshaken peer; light peers are never asked.
    pub fn handle_connected(&mut self, peer: Address, light: bool) {
        if !light {
            self.peers.insert(peer);
        }
    }

    /// A peer went away: its open requests fail and their fetches ask the next peer.
    pub fn handle_disconnected(&mut self, now: Instant, peer: Address) {
        self.peers.remove(&peer);
        for id in self.open.of_peer(&peer) {
            self.handle_failure(now, id);
        }
    }

    /// A reader on this node wants `address`, which the store lacks.
    pub fn handle_local(&mut self, now: Instant, address: Address, token: u64) {
        let deadline = now + self.config.fetch_timeout;
        self.fetch(
            now,
            address,
            Requester::Local(token),
            (MAX_HOPS, ORIGIN_ATTEMPTS, deadline),
        );
    }

    /// `peer` asks for `address`, which the store lacks, with `hops` forwards left.
    pub fn handle_request(
        &mut self,
        now: Instant,
        peer: Address,
        token: u64,
        address: Address,
        hops: u8,
    ) {
        let requester = Requester::Peer { peer, token };
        let looped = self
            .fetches
            .get(&address)
            .is_some_and(|f| f.asked.contains(&peer));
        if looped || hops == 0 {
            self.stats.refused_requests += 1;
            let error = if looped {
                RetrievalError::NotFound(address)
            } else {
                RetrievalError::HopLimit(address)
            };
            self.answer(requester, Err(error));
            return;
        }
        let deadline = now + self.config.attempt_timeout;
        self.fetch(
            now,
            address,
            requester,
            (hops - 1, FORWARD_ATTEMPTS, deadline),
        );
    }

    /// A peer delivered (`Some`) or said it lacks (`None`) the chunk of request `id`: the
    /// answer of [`decode_delivery`].
    pub fn handle_delivery(
        &mut self,
        now: Instant,
        id: RequestId,
        delivery: Result<Option<Chunk>, Fault>,
    ) {
        let Some(open) = self.open.take(id) else {
            return; // timed out or failed already
        };
        match delivery {
            Ok(Some(chunk)) if chunk.address() == open.address => self.deliver(chunk),
            Ok(None) => {
                self.stats.misses += 1;
                self.next_peer(now, open.address);
            }
            Ok(Some(_)) => self.penalize(now, open, Fault::Invalid(open.address)),
            Err(fault) => self.penalize(now, open, fault),
        }
    }

    /// The peer of request `id` lacks the chunk (as [`Self::handle_delivery`] with `None`).
    pub fn handle_missing(&mut self, now: Instant, id: RequestId) {
        self.handle_delivery(now, id, Ok(None));
    }

    /// Request `id` failed in transport: the next peer is asked.
    pub fn handle_failure(&mut self, now: Instant, id: RequestId) {
        if let Some(open) = self.open.take(id) {
            self.stats.misses += 1;
            self.next_peer(now, open.address);
        }
    }

    /// Deadlines: requests not answered in time make their fetches ask the next peer; fetches
    /// past their deadline end.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(open) = self.open.take_due(now) {
            self.stats.timeouts += 1;
            self.next_peer(now, open.address);
        }
        while let Some(&(at, address)) = self.fetch_deadlines.first() {
            if at > now {
                break;
            }
            self.fetch_deadlines.pop_first();
            self.finish(address, RetrievalError::Timeout(address));
        }
    }

    /// The next deadline.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let a = self.open.next_deadline();
        let f = self.fetch_deadlines.first().map(|(t, _)| *t);
        a.into_iter().chain(f).min()
    }

    /// The next output.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The core's counters.
    #[must_use]
    pub const fn stats(&self) -> RetrievalStats {
        self.stats
    }

    /// Fetches running.
    #[must_use]
    pub fn fetches(&self) -> usize {
        self.fetches.len()
    }

    /// Whether request `id` is still awaited.
    #[must_use]
    pub fn is_open(&self, id: RequestId) -> bool {
        self.open.contains(id)
    }

    /// Starts a fetch, or joins the one running, with `(hops, attempts, deadline)`.
    fn fetch(
        &mut self,
        now: Instant,
        address: Address,
        requester: Requester,
        (hops, attempts, deadline): (u8, usize, Instant),
    ) {
        let origin = matches!(requester, Requester::Local(_));
        let waiting = self
            .fetches
            .get(&address)
            .map_or(&[][..], |f| &f.requesters);
        if self.by_peer.refuses(requester, waiting, MAX_PER_PEER) {
            self.stats.refused_requests += 1;
            self.answer(requester, Err(RetrievalError::Busy(address)));
            return;
        }
        if let Some(f) = self.fetches.get_mut(&address) {
            if f.requesters.len() >= MAX_WAITERS {
                self.stats.refused_requests += 1;
                self.answer(requester, Err(RetrievalError::Busy(address)));
                return;
            }
            self.stats.coalesced += 1;
            f.requesters.push(requester);
            self.by_peer.add(requester);
            f.origin |= origin;
            f.hops = f.hops.max(hops);
            f.max_attempts = f.max_attempts.max(attempts);
            if let Requester::Peer { peer, .. } = requester {
                f.skip.insert(peer);
            }
            if deadline > f.deadline {
                self.fetch_deadlines.remove(&(f.deadline, address));
                f.deadline = deadline;
                self.fetch_deadlines.insert((deadline, address));
            }
            return;
        }
        if self.fetches.len() >= MAX_FETCHES {
            self.stats.refused_requests += 1;
            self.answer(requester, Err(RetrievalError::Busy(address)));
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
        self.fetches.insert(
            address,
            Fetch {
                requesters: vec![requester],
                origin,
                hops,
                skip,
                asked: BTreeSet::new(),
                current: None,
                attempts: 0,
                max_attempts: attempts,
                deadline,
            },
        );
        self.fetch_deadlines.insert((deadline, address));
        self.next_peer(now, address);
    }

    /// Asks the next peer for `address`, or ends the fetch when none is left.
    fn next_peer(&mut self, now: Instant, address: Address) {
        let Some(f) = self.fetches.get_mut(&address) else {
            return;
        };
        f.current = None;
        if now >= f.deadline {
            self.finish(address, RetrievalError::Timeout(address));
            return;
        }
        if f.attempts >= f.max_attempts {
            self.finish(address, RetrievalError::NotFound(address));
            return;
        }
        let bar = (!f.origin).then_some(&self.own);
        let peer = route::closest(&self.peers, &address, &f.skip, bar);
        let Some(peer) = peer else {
            self.finish(address, RetrievalError::NotFound(address));
            return;
        };
        let id = self.next_id;
        self.next_id += 1;
        f.current = Some(id);
        f.attempts += 1;
        f.skip.insert(peer);
        f.asked.insert(peer);
        let wait = if f.origin {
            self.config.attempt_timeout
        } else {
            self.config.attempt_timeout / 2
        };
        let at = (now + wait).min(f.deadline);
        let hops = f.hops;
        self.open.insert(
            id,
            Open {
                address,
                peer,
                deadline: at,
            },
        );
        self.stats.requests += 1;
        self.outputs.push_back(Output::Request {
            peer,
            id,
            request: Request {
                address: address.0.to_vec(),
                hops: u32::from(hops),
            },
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

    fn deliver(&mut self, chunk: Chunk) {
        self.stats.delivered += 1;
        let Some(f) = self.remove_fetch(chunk.address()) else {
            return;
        };
        for requester in f.requesters {
            self.by_peer.release(requester);
            self.answer(requester, Ok(chunk.clone()));
        }
        self.outputs.push_back(Output::Store(chunk));
    }

    fn finish(&mut self, address: Address, error: RetrievalError) {
        let Some(f) = self.remove_fetch(address) else {
            return;
        };
        self.stats.failed += 1;
        for requester in f.requesters {
            self.by_peer.release(requester);
            self.answer(requester, Err(error));
        }
    }

    /// Removes a fetch with its deadline and its open request.
    fn remove_fetch(&mut self, address: Address) -> Option<Fetch> {
        let f = self.fetches.remove(&address)?;
        self.fetch_deadlines.remove(&(f.deadline, address));
        if let Some(id) = f.current {
            self.open.take(id);
        }
        Some(f)
    }

    fn answer(&mut self, requester: Requester, result: Result<Chunk, RetrievalError>) {
        self.outputs.push_back(Output::Answer { requester, result });
    }
}
