//! The downstream side of pull-sync: which bins to sync from which peer, and one historical
//! and one live stream per (peer, bin) running Get → Offer → Want → Delivery.
//!
//! **Subscriptions** follow the Kademlia rule of old Swarm's `syncBins`: from a full peer at
//! proximity order `po < depth`, only its bin `po`; from a neighbour (`po >= depth`), every
//! bin `>= depth`. Depth changes re-diff them. Light nodes neither pull nor are pulled from.
//!
//! **Streams.** At subscription the upstream's cursors and epoch arrive; the *historical*
//! stream of a bin asks for the gaps of what was synced up to the cursor, the *live* stream
//! from cursor + 1 onward (its Get waits upstream until chunks arrive). Each stream keeps at
//! most [`MAX_OFFERS_PER_STREAM`] offers open, and the streams never share a queue, so
//! historical work never holds up live work.
//!
//! **One transfer per chunk.** An offered chunk the node lacks is wanted from that peer only
//! if no other transfer of it is under way; otherwise the offer waits on that transfer and,
//! if it fails, wants the chunk itself.
//!
//! **Scheduling.** A peer has at most [`MAX_WANTS_PER_PEER`] wants open (delivered chunks
//! count until they are stored, which bounds the chunks buffered per peer); waiting wants go
//! out retrieval first, then live, then historical ([`Class`]).
//!
//! **Intervals.** When every chunk of an offer is stored, its range `[start, topmost]` is
//! added to the (peer, bin) intervals; the new record rides in the same [`Output::Store`] batch
//! as the offer's own chunks when those were the last it needed, or in a later batch once the
//! chunks it waited on are durable. Batches are written in the order they are given, so what
//! is on disk is always a prefix of what the core has emitted.
//!
//! Reads (have-checks, sync records) go through [`PullIndex`]: they are key lookups. Writes
//! leave as outputs, done off the event loop, acknowledged with [`PullSync::handle_stored`].

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use prost::Message;
use tributary_chunk::store::{ChunkStore, ChunkStoreError};
use tributary_chunk::{Address, Chunk, MAX_PO, proximity};
use tributary_wire::pullsync::{Get, Request, Response, Want, bitvector, request, response};
use tributary_wire::{MAX_PULL_MESSAGE_BYTES, PULL_BATCH};

use crate::intervals::Intervals;
use crate::record::{self, FIRST_BIN_ID};

/// Offers a stream keeps open (from its Get to the storing of its chunks). A peer's bin 0
/// holds half its chunks, so this bounds most of a sync: with 2, a two-node sync over loopback
/// ran at 48% of the local ingest rate, with 4 (and 8 wants) at 61–73% over four runs
/// (`CHUNKS=20000 scripts/bench-pullsync.py`): the next offers travel while a batch is fsynced.
pub const MAX_OFFERS_PER_STREAM: usize = 4;
/// Wants a peer has open at once; their chunks count until stored, so at most
/// `MAX_WANTS_PER_PEER × PULL_BATCH` chunks (about 4 MiB) are buffered per peer.
pub const MAX_WANTS_PER_PEER: usize = 8;
/// Wants open over all peers: at most `MAX_WANTS × PULL_BATCH` chunks (about 16 MiB) are
/// buffered by a node syncing from many peers at once.
pub const MAX_WANTS: usize = 32;
/// Streams per peer: a live and a historical one per bin.
pub const MAX_STREAMS_PER_PEER: usize = 2 * (MAX_PO as usize + 1);
/// Requests open to one peer at most: one Get and one Want per stream's offers, plus cursors.
pub const MAX_REQUESTS_PER_PEER: usize = MAX_STREAMS_PER_PEER + MAX_WANTS_PER_PEER + 1;

/// A sync record: its key and value in the chunk store's `chunk.sync` keyspace.
pub type SyncRecord = (Vec<u8>, Vec<u8>);

/// A request's id, unique per core.
pub type RequestId = u64;
/// A store write's id.
pub type Token = u64;

/// Priority of outgoing work on a connection, highest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Class {
    /// Retrieval requests and deliveries (the next issue's).
    Retrieval = 0,
    /// Live sync.
    Live = 1,
    /// Historical sync.
    Historical = 2,
}

/// Timing of the core.
#[derive(Clone, Debug)]
pub struct PullConfig {
    /// This node is light: it pulls nothing.
    pub light: bool,
    /// How long a Cursors, historical Get or Want request may take.
    pub request_timeout: Duration,
    /// How long an upstream holds a live Get with nothing to offer (added to the timeout).
    pub live_wait: Duration,
    /// How long a stream waits after a failed request before asking again.
    pub retry_delay: Duration,
    /// How long a penalized peer is not synced from.
    pub ban: Duration,
}

impl Default for PullConfig {
    fn default() -> Self {
        Self {
            light: false,
            request_timeout: Duration::from_secs(30),
            live_wait: Duration::from_secs(20),
            retry_delay: Duration::from_secs(2),
            ban: Duration::from_secs(600),
        }
    }
}

/// Why a peer was penalized.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    /// It delivered more chunks than were wanted.
    #[error("delivered {delivered} chunks, {wanted} were wanted")]
    Unrequested {
        /// Chunks wanted.
        wanted: usize,
        /// Chunks delivered.
        delivered: usize,
    },
    /// A delivered chunk is not the one wanted at its position.
    #[error("delivered a chunk that is not {0}")]
    Invalid(Address),
    /// An answer that breaks the protocol.
    #[error("malformed answer: {0}")]
    Malformed(&'static str),
}

/// What the core asks the runtime to do.
#[derive(Debug, PartialEq)]
pub enum Output {
    /// Send `request` to `peer`; answer with [`PullSync::handle_response`] or
    /// [`PullSync::handle_failure`].
    Request {
        /// The peer's overlay.
        peer: Address,
        /// The request's id.
        id: RequestId,
        /// Its priority.
        class: Class,
        /// The request.
        request: Request,
    },
    /// Write these chunks and sync records in one atomic batch, after every batch given
    /// before; then call [`PullSync::handle_stored`].
    Store {
        /// The write's id.
        token: Token,
        /// Verified chunks.
        chunks: Vec<Chunk>,
        /// Sync records for the chunk store's `chunk.sync` keyspace.
        records: Vec<SyncRecord>,
    },
    /// Disconnect `peer`: it broke the protocol (it is not synced from for a while).
    Penalize {
        /// The peer.
        peer: Address,
        /// What it did.
        fault: Fault,
    },
}

/// The reads the core makes: key lookups, quick enough for the event loop.
pub trait PullIndex {
    /// Which of `addresses` are stored.
    ///
    /// # Errors
    /// When the store fails.
    fn have_many(&self, addresses: &[Address]) -> Result<Vec<bool>, ChunkStoreError>;
    /// The sync record under `key`.
    ///
    /// # Errors
    /// When the store fails.
    fn sync_record(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ChunkStoreError>;
}

impl PullIndex for ChunkStore {
    fn have_many(&self, addresses: &[Address]) -> Result<Vec<bool>, ChunkStoreError> {
        ChunkStore::have_many(self, addresses)
    }
    fn sync_record(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ChunkStoreError> {
        ChunkStore::sync_record(self, key)
    }
}

/// Counters for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PullStats {
    /// Addresses offered to this node.
    pub offered: u64,
    /// Chunks wanted.
    pub wanted: u64,
    /// Chunks delivered and verified.
    pub delivered: u64,
    /// Peers penalized.
    pub refused: u64,
    /// Requests that failed or timed out.
    pub failures: u64,
    /// Reads of the store that failed (the request is retried).
    pub store_errors: u64,
}

/// How far one (peer, bin) has synced, for status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BinProgress {
    /// The upstream peer.
    pub peer: Address,
    /// The bin.
    pub bin: u8,
    /// The upstream's cursor at subscription.
    pub cursor: u64,
    /// Bin ids up to the cursor synced.
    pub synced: u64,
    /// The historical stream is done.
    pub historical_done: bool,
    /// The live stream waits upstream with nothing outstanding.
    pub live_caught_up: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Lane {
    Live = 0,
    Historical = 1,
}

impl Lane {
    const fn class(self) -> Class {
        match self {
            Self::Live => Class::Live,
            Self::Historical => Class::Historical,
        }
    }
}

#[derive(Debug)]
struct Stream {
    /// The next bin id to ask for.
    next: u64,
    /// The last bin id to ask for (historical: the cursor).
    ceiling: Option<u64>,
    get: Option<RequestId>,
    offers: usize,
    retry_at: Option<Instant>,
}

impl Stream {
    const fn new(next: u64, ceiling: Option<u64>) -> Self {
        Self {
            next,
            ceiling,
            get: None,
            offers: 0,
            retry_at: None,
        }
    }
}

#[derive(Debug)]
struct BinSync {
    cursor: u64,
    /// What was synced, as emitted to the store (writes are in order, so the store holds a
    /// prefix of this).
    synced: Intervals,
    streams: [Stream; 2],
}

#[derive(Debug, Default)]
struct Peer {
    po: u8,
    /// The upstream's epoch and cursors, once known.
    cursors: Option<(u64, Vec<u64>)>,
    cursors_request: Option<RequestId>,
    retry_cursors_at: Option<Instant>,
    bins: BTreeMap<u8, BinSync>,
    /// Wants open (sent, or delivered and not yet stored).
    wants: usize,
    /// Offers with a want waiting for a slot, by class.
    queued: [VecDeque<u64>; 3],
}

#[derive(Debug)]
struct OfferState {
    peer: Address,
    bin: u8,
    lane: Lane,
    start: u64,
    topmost: u64,
    addresses: Vec<Address>,
    /// Indices to want from the peer, not yet sent.
    to_want: Vec<usize>,
    /// Indices of the want in flight.
    wanted: Vec<usize>,
    want_request: Option<RequestId>,
    queued: bool,
    /// A want slot is held (from the want's send until its chunks are stored).
    holds_slot: bool,
    /// Chunks of the offer not yet known stored.
    remaining: HashSet<Address>,
    recorded: bool,
    /// A delivery came short: the offer ends without recording its range, which its stream
    /// asks for again.
    short: bool,
}

#[derive(Debug)]
struct Transfer {
    offer: u64,
    waiting: Vec<u64>,
    storing: bool,
}

#[derive(Debug, Clone, Copy)]
enum Pending {
    Cursors,
    Get { bin: u8, lane: Lane, start: u64 },
    Want { offer: u64 },
}

#[derive(Debug, Clone, Copy)]
struct Open {
    peer: Address,
    what: Pending,
    deadline: Instant,
}

#[derive(Debug, Default)]
struct StoreJob {
    chunks: Vec<Address>,
    /// Offers whose want slot frees when this is stored.
    slots: Vec<u64>,
    /// The (peer, bin) sync records it writes.
    records: Vec<(Address, u8)>,
}

/// Intervals emitted in records not yet durable, per (peer, bin): a resubscription reads
/// these rather than the store, which may still hold an older record.
#[derive(Debug)]
struct Unwritten {
    records: usize,
    epoch: u64,
    synced: Intervals,
}

/// The pull-sync core of one node; see the module documentation.
#[derive(Debug)]
pub struct PullSync {
    own: Address,
    config: PullConfig,
    depth: u8,
    peers: HashMap<Address, Peer>,
    banned: HashMap<Address, Instant>,
    open: HashMap<RequestId, Open>,
    /// The deadlines of `open`, soonest first.
    deadlines: BTreeSet<(Instant, RequestId)>,
    /// When a peer has a stream or its cursors to ask again (entries may be stale: a due one
    /// only pumps the peer).
    retries: BTreeSet<(Instant, Address)>,
    offers: HashMap<u64, OfferState>,
    transfers: HashMap<Address, Transfer>,
    jobs: HashMap<Token, StoreJob>,
    unwritten: HashMap<(Address, u8), Unwritten>,
    /// Wants open over all peers.
    wants: usize,
    /// Peers with wants queued while [`MAX_WANTS`] were open.
    starved: BTreeSet<Address>,
    next_id: u64,
    outputs: VecDeque<Output>,
    stats: PullStats,
}

/// Decodes a delivery and hashes its chunks (the expensive part: the runtime runs it off its
/// event loop). The core then checks each chunk's address against the one it wanted.
///
/// # Errors
/// [`Fault::Malformed`] when the answer is not a delivery or a chunk is not a chunk (empty,
/// or over 4,096 bytes of payload).
pub fn decode_delivery(bytes: &[u8]) -> Result<Vec<Chunk>, Fault> {
    if bytes.len() > MAX_PULL_MESSAGE_BYTES {
        return Err(Fault::Malformed("answer too large"));
    }
    let Ok(Response {
        message: Some(response::Message::Delivery(d)),
    }) = Response::decode(bytes)
    else {
        return Err(Fault::Malformed("not a delivery"));
    };
    if d.chunks.len() > PULL_BATCH {
        return Err(Fault::Unrequested {
            wanted: PULL_BATCH,
            delivered: d.chunks.len(),
        });
    }
    d.chunks
        .into_iter()
        .map(|data| Chunk::from_wire(data).map_err(|_| Fault::Malformed("not a chunk")))
        .collect()
}

/// The bins to sync from a peer at proximity order `po` when this node's depth is `depth`.
#[must_use]
pub fn bins_for(po: u8, depth: u8) -> Vec<u8> {
    if po < depth {
        vec![po]
    } else {
        (depth..=MAX_PO).collect()
    }
}

impl PullSync {
    /// A core for the node at overlay `own`, with no peers, at depth 0.
    #[must_use]
    pub fn new(own: Address, config: PullConfig) -> Self {
        Self {
            own,
            config,
            depth: 0,
            peers: HashMap::new(),
            banned: HashMap::new(),
            open: HashMap::new(),
            deadlines: BTreeSet::new(),
            retries: BTreeSet::new(),
            offers: HashMap::new(),
            transfers: HashMap::new(),
            jobs: HashMap::new(),
            unwritten: HashMap::new(),
            wants: 0,
            starved: BTreeSet::new(),
            next_id: 1,
            outputs: VecDeque::new(),
            stats: PullStats::default(),
        }
    }

    /// Counters so far.
    #[must_use]
    pub const fn stats(&self) -> PullStats {
        self.stats
    }

    /// The depth the subscriptions follow.
    #[must_use]
    pub const fn depth(&self) -> u8 {
        self.depth
    }

    /// The next output, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The next deadline: a request timing out or a stream retrying.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let request = self.deadlines.first().map(|(t, _)| *t);
        let retry = self.retries.first().map(|(t, _)| *t);
        request.into_iter().chain(retry).min()
    }

    /// Per (peer, bin) progress, for status.
    #[must_use]
    pub fn progress(&self) -> Vec<BinProgress> {
        let mut out = Vec::new();
        for (peer, p) in &self.peers {
            for (&bin, b) in &p.bins {
                let [live, hist] = &b.streams;
                let synced = b
                    .synced
                    .ranges()
                    .iter()
                    .filter(|&&(s, _)| s <= b.cursor)
                    .map(|&(s, e)| e.min(b.cursor) - s + 1)
                    .sum::<u64>();
                out.push(BinProgress {
                    peer: *peer,
                    bin,
                    cursor: b.cursor,
                    synced,
                    historical_done: hist.ceiling.is_some_and(|c| {
                        hist.offers == 0 && b.synced.gap_from(FIRST_BIN_ID, c).is_none()
                    }),
                    live_caught_up: live.get.is_some() && live.offers == 0,
                });
            }
        }
        out.sort_by_key(|p| (p.peer, p.bin));
        out
    }

    /// A peer's handshake completed: subscribe to it (unless either end is light, or it was
    /// penalized lately).
    pub fn handle_connected(&mut self, now: Instant, peer: Address, light: bool) {
        if self.config.light || light || peer == self.own {
            return;
        }
        self.banned.retain(|_, until| *until > now);
        if self.banned.contains_key(&peer) {
            return;
        }
        self.peers.insert(
            peer,
            Peer {
                po: proximity(&self.own, &peer),
                ..Peer::default()
            },
        );
        self.ask_cursors(now, peer);
    }

    /// A peer went away: its requests are void, its transfers fall back to other offers.
    pub fn handle_disconnected(&mut self, now: Instant, peer: Address) {
        if self.peers.remove(&peer).is_none() {
            return;
        }
        self.close_where(|o| o.peer == peer);
        let offers: Vec<u64> = self
            .offers
            .iter()
            .filter(|(_, o)| o.peer == peer)
            .map(|(id, _)| *id)
            .collect();
        for offer in offers {
            self.drop_offer(now, offer);
        }
    }

    /// The node's depth changed: subscriptions are re-diffed.
    pub fn handle_depth(&mut self, now: Instant, depth: u8, index: &dyn PullIndex) {
        if depth == self.depth {
            return;
        }
        self.depth = depth;
        let peers: Vec<Address> = self.peers.keys().copied().collect();
        for peer in peers {
            self.resubscribe(now, peer, index);
        }
    }

    /// A request failed (transport error or timeout).
    pub fn handle_failure(&mut self, now: Instant, id: RequestId) {
        if let Some(open) = self.take_open(id) {
            self.stats.failures += 1;
            self.fail(now, &open);
        }
    }

    /// Deadlines: requests that took too long fail; streams due retry.
    pub fn handle_timeout(&mut self, now: Instant, index: &dyn PullIndex) {
        while let Some(&(at, id)) = self.deadlines.first()
            && at <= now
        {
            self.handle_failure(now, id);
            self.deadlines.remove(&(at, id));
        }
        let mut peers = BTreeSet::new();
        while let Some(&(at, peer)) = self.retries.first()
            && at <= now
        {
            self.retries.remove(&(at, peer));
            peers.insert(peer);
        }
        for peer in peers {
            let due = self.peers.get(&peer).and_then(|p| p.retry_cursors_at);
            if due.is_some_and(|t| t <= now) {
                self.ask_cursors(now, peer);
            }
            self.pump_peer(now, peer, index);
        }
    }

    /// Whether request `id` is a Want still open: its answer is a delivery, whose chunks the
    /// runtime may hash off its event loop with [`decode_delivery`] and hand in with
    /// [`PullSync::handle_delivery`].
    #[must_use]
    pub fn is_want(&self, id: RequestId) -> bool {
        self.open
            .get(&id)
            .is_some_and(|o| matches!(o.what, Pending::Want { .. }))
    }

    /// The answer to a Want, decoded and hashed by [`decode_delivery`].
    pub fn handle_delivery(
        &mut self,
        now: Instant,
        id: RequestId,
        delivery: Result<Vec<Chunk>, Fault>,
        index: &dyn PullIndex,
    ) {
        let Some(open) = self.take_open(id) else {
            return;
        };
        let result = match open.what {
            Pending::Want { offer } => delivery.and_then(|d| self.on_delivery(now, offer, d)),
            _ => Err(Fault::Malformed("not an answer to the request")),
        };
        if let Err(fault) = result {
            self.penalize(now, open.peer, fault);
        }
        self.pump_peer(now, open.peer, index);
    }

    /// The answer to request `id` (a delivery is hashed here; see [`PullSync::is_want`]).
    pub fn handle_response(
        &mut self,
        now: Instant,
        id: RequestId,
        bytes: &[u8],
        index: &dyn PullIndex,
    ) {
        if self.is_want(id) {
            self.handle_delivery(now, id, decode_delivery(bytes), index);
            return;
        }
        let Some(open) = self.take_open(id) else {
            return; // late, or for a stream since dropped
        };
        let decoded = (bytes.len() <= MAX_PULL_MESSAGE_BYTES)
            .then(|| Response::decode(bytes).ok())
            .flatten()
            .and_then(|r| r.message);
        let peer = open.peer;
        let result = match (open.what, decoded) {
            (Pending::Cursors, Some(response::Message::Cursors(c))) => {
                self.on_cursors(now, peer, c.epoch, c.cursors, index)
            }
            (Pending::Get { bin, lane, start }, Some(response::Message::Offer(o))) => {
                self.on_offer(now, peer, (bin, lane, start), &o, index)
            }
            _ => Err(Fault::Malformed("not an answer to the request")),
        };
        if let Err(fault) = result {
            self.penalize(now, peer, fault);
        }
        self.pump_peer(now, peer, index);
    }

    /// The write `token` is durable.
    pub fn handle_stored(&mut self, now: Instant, token: Token, index: &dyn PullIndex) {
        let Some(job) = self.jobs.remove(&token) else {
            return;
        };
        for key in &job.records {
            if let Some(u) = self.unwritten.get_mut(key) {
                u.records -= 1;
                if u.records == 0 {
                    self.unwritten.remove(key);
                }
            }
        }
        let mut touched = HashSet::new();
        for address in job.chunks {
            let Some(transfer) = self.transfers.remove(&address) else {
                continue;
            };
            for offer in std::iter::once(transfer.offer).chain(transfer.waiting) {
                if let Some(o) = self.offers.get_mut(&offer) {
                    o.remaining.remove(&address);
                    touched.insert(offer);
                }
            }
        }
        let mut peers = HashSet::new();
        for offer in job.slots {
            if let Some(o) = self.offers.get_mut(&offer) {
                o.holds_slot = false;
                self.wants = self.wants.saturating_sub(1);
                let peer = o.peer;
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.wants = p.wants.saturating_sub(1);
                }
                peers.insert(peer);
                touched.insert(offer);
                self.queue_want(now, peer, offer);
            }
        }
        for offer in touched {
            if let Some(peer) = self.offers.get(&offer).map(|o| o.peer) {
                peers.insert(peer);
            }
            self.finish_if_complete(now, offer);
        }
        peers.extend(std::mem::take(&mut self.starved));
        for peer in peers {
            self.pump_peer(now, peer, index);
        }
    }

    fn take_open(&mut self, id: RequestId) -> Option<Open> {
        let open = self.open.remove(&id)?;
        self.deadlines.remove(&(open.deadline, id));
        Some(open)
    }

    fn close_where(&mut self, pred: impl Fn(&Open) -> bool) {
        let ids: Vec<RequestId> = self
            .open
            .iter()
            .filter(|(_, o)| pred(o))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.take_open(id);
        }
    }

    fn id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn request(&mut self, now: Instant, peer: Address, what: Pending, class: Class, r: Request) {
        let id = self.id();
        let mut timeout = self.config.request_timeout;
        if matches!(
            what,
            Pending::Get {
                lane: Lane::Live,
                ..
            }
        ) {
            timeout += self.config.live_wait;
        }
        let deadline = now + timeout;
        self.open.insert(
            id,
            Open {
                peer,
                what,
                deadline,
            },
        );
        self.deadlines.insert((deadline, id));
        self.outputs.push_back(Output::Request {
            peer,
            id,
            class,
            request: r,
        });
    }

    fn ask_cursors(&mut self, now: Instant, peer: Address) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        p.retry_cursors_at = None;
        if p.cursors_request.is_some() || p.cursors.is_some() {
            return;
        }
        let id = self.next_id;
        p.cursors_request = Some(id);
        let r = Request::new(request::Message::Cursors(
            tributary_wire::pullsync::CursorsRequest {},
        ));
        self.request(now, peer, Pending::Cursors, Class::Live, r);
    }

    fn on_cursors(
        &mut self,
        now: Instant,
        peer: Address,
        epoch: u64,
        cursors: Vec<u64>,
        index: &dyn PullIndex,
    ) -> Result<(), Fault> {
        if cursors.len() != usize::from(MAX_PO) + 1 {
            return Err(Fault::Malformed("cursors of another number of bins"));
        }
        if let Some(p) = self.peers.get_mut(&peer) {
            p.cursors_request = None;
            p.cursors = Some((epoch, cursors));
        }
        self.resubscribe(now, peer, index);
        Ok(())
    }

    /// Brings a peer's bins in line with the rule: drops the unwanted, opens the new.
    fn resubscribe(&mut self, now: Instant, peer: Address, index: &dyn PullIndex) {
        let Some(p) = self.peers.get(&peer) else {
            return;
        };
        let Some((epoch, cursors)) = p.cursors.clone() else {
            return;
        };
        let wanted: HashSet<u8> = bins_for(p.po, self.depth).into_iter().collect();
        let gone: Vec<u8> = p
            .bins
            .keys()
            .filter(|b| !wanted.contains(b))
            .copied()
            .collect();
        let new: Vec<u8> = wanted
            .iter()
            .filter(|b| !p.bins.contains_key(b))
            .copied()
            .collect();
        for bin in gone {
            self.quit_bin(now, peer, bin);
        }
        for bin in new {
            let cursor = cursors.get(usize::from(bin)).copied().unwrap_or(0);
            let pending = self.unwritten.get(&(peer, bin));
            let stored = match pending {
                Some(u) => Ok(Some(record::encode(u.epoch, &u.synced))),
                None => index.sync_record(&record::key(&peer, bin)),
            };
            let synced = match stored {
                Ok(Some(v)) => match record::decode(&v) {
                    Some((e, intervals)) if e == epoch => intervals,
                    // Another epoch (the upstream's store was re-created), or unreadable.
                    _ => Intervals::new(FIRST_BIN_ID),
                },
                Ok(None) => Intervals::new(FIRST_BIN_ID),
                Err(_) => {
                    self.stats.store_errors += 1;
                    Intervals::new(FIRST_BIN_ID)
                }
            };
            let sync = BinSync {
                cursor,
                synced,
                streams: [
                    Stream::new(cursor.saturating_add(1), None),
                    Stream::new(FIRST_BIN_ID, Some(cursor)),
                ],
            };
            if let Some(p) = self.peers.get_mut(&peer) {
                p.bins.insert(bin, sync);
            }
        }
        self.pump_peer(now, peer, index);
    }

    fn quit_bin(&mut self, now: Instant, peer: Address, bin: u8) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.bins.remove(&bin);
        }
        self.close_where(|o| {
            o.peer == peer && matches!(o.what, Pending::Get { bin: b, .. } if b == bin)
        });
        let offers: Vec<u64> = self
            .offers
            .iter()
            .filter(|(_, o)| o.peer == peer && o.bin == bin)
            .map(|(id, _)| *id)
            .collect();
        for offer in offers {
            self.drop_offer(now, offer);
        }
    }

    /// Sends what a peer's streams and queued wants can send now.
    fn pump_peer(&mut self, now: Instant, peer: Address, _index: &dyn PullIndex) {
        let Some(p) = self.peers.get(&peer) else {
            return;
        };
        if p.cursors.is_none() {
            return;
        }
        let bins: Vec<u8> = p.bins.keys().copied().collect();
        for bin in bins {
            for lane in [Lane::Live, Lane::Historical] {
                self.pump_stream(now, peer, bin, lane);
            }
        }
        self.send_wants(now, peer);
    }

    fn pump_stream(&mut self, now: Instant, peer: Address, bin: u8, lane: Lane) {
        let Some(b) = self.peers.get_mut(&peer).and_then(|p| p.bins.get_mut(&bin)) else {
            return;
        };
        let stream = &mut b.streams[lane as usize];
        if stream.get.is_some() || stream.offers >= MAX_OFFERS_PER_STREAM {
            return;
        }
        if stream.retry_at.is_some_and(|t| t > now) {
            return;
        }
        stream.retry_at = None;
        let (start, end) = match stream.ceiling {
            Some(ceiling) => match b.synced.gap_from(stream.next, ceiling) {
                Some(gap) => gap,
                None => return, // historical part done
            },
            None => (stream.next, 0),
        };
        stream.next = start;
        let id = self.next_id;
        stream.get = Some(id);
        let get = Get {
            bin: u32::from(bin),
            start,
            end,
        };
        let r = Request::new(request::Message::Get(get));
        self.request(
            now,
            peer,
            Pending::Get { bin, lane, start },
            lane.class(),
            r,
        );
    }

    fn on_offer(
        &mut self,
        now: Instant,
        peer: Address,
        (bin, lane, start): (u8, Lane, u64),
        offer: &tributary_wire::pullsync::Offer,
        index: &dyn PullIndex,
    ) -> Result<(), Fault> {
        let retry = now + self.config.retry_delay;
        let Some(stream) = self.stream_mut(peer, bin, lane) else {
            return Ok(());
        };
        stream.get = None;
        if !offer.addresses.len().is_multiple_of(32) {
            return Err(Fault::Malformed(
                "offer addresses not a multiple of 32 bytes",
            ));
        }
        let count = offer.addresses.len() / 32;
        let topmost = offer.topmost;
        let covered = topmost
            .checked_sub(start)
            .map_or(0, |d| d.saturating_add(1));
        let beyond_ceiling = stream.ceiling.is_some_and(|c| topmost > c);
        if count > PULL_BATCH
            || topmost < start.saturating_sub(1)
            || (count as u64) > covered
            || beyond_ceiling
        {
            return Err(Fault::Malformed("offer out of its range"));
        }
        if count == 0 && topmost < start {
            // A live Get that waited for nothing: ask again (not at once, so an upstream that
            // answers empty without waiting cannot make this a busy loop).
            stream.retry_at = Some(retry);
            self.retries.insert((retry, peer));
            return Ok(());
        }
        // A failure since this Get was sent may have rewound the stream below its start: the
        // rewind wins, or the failed range would never be asked for again.
        if stream.next >= start {
            stream.next = stream.next.max(topmost.saturating_add(1));
        }
        stream.offers += 1;
        let addresses: Vec<Address> = offer
            .addresses
            .chunks_exact(32)
            .map(|a| {
                let mut bytes = [0u8; 32];
                bytes.copy_from_slice(a);
                Address(bytes)
            })
            .collect();
        // Every address must be of the bin asked for: PO with the upstream equal to the bin.
        if addresses.iter().any(|a| proximity(&peer, a) != bin) {
            return Err(Fault::Malformed("offered a chunk of another bin"));
        }
        self.stats.offered += count as u64;
        let Ok(have) = index.have_many(&addresses) else {
            self.stats.store_errors += 1;
            if let Some(stream) = self.stream_mut(peer, bin, lane) {
                stream.offers -= 1;
                stream.next = start;
                stream.retry_at = Some(retry);
            }
            self.retries.insert((retry, peer));
            return Ok(());
        };
        let id = self.id();
        let mut state = OfferState {
            peer,
            bin,
            lane,
            start,
            topmost,
            addresses,
            to_want: Vec::new(),
            wanted: Vec::new(),
            want_request: None,
            queued: false,
            holds_slot: false,
            remaining: HashSet::new(),
            recorded: false,
            short: false,
        };
        for (i, (address, held)) in state.addresses.iter().zip(have).enumerate() {
            if held {
                continue;
            }
            state.remaining.insert(*address);
            match self.transfers.get_mut(address) {
                Some(t) => t.waiting.push(id),
                None => {
                    self.transfers.insert(
                        *address,
                        Transfer {
                            offer: id,
                            waiting: Vec::new(),
                            storing: false,
                        },
                    );
                    state.to_want.push(i);
                }
            }
        }
        let queue = !state.to_want.is_empty();
        self.offers.insert(id, state);
        if queue {
            self.queue_want(now, peer, id);
        } else {
            self.finish_if_complete(now, id);
        }
        Ok(())
    }

    fn stream_mut(&mut self, peer: Address, bin: u8, lane: Lane) -> Option<&mut Stream> {
        let b = self.peers.get_mut(&peer)?.bins.get_mut(&bin)?;
        Some(&mut b.streams[lane as usize])
    }

    /// Queues an offer's want for a slot and sends what the peer's slots allow (a fallback
    /// may queue a want on a peer that has nothing else in flight to wake it); an offer that
    /// holds a slot is queued again when its chunks are stored.
    fn queue_want(&mut self, now: Instant, peer: Address, offer: u64) {
        let Some(o) = self.offers.get_mut(&offer) else {
            return;
        };
        if o.queued || o.want_request.is_some() || o.holds_slot || o.to_want.is_empty() {
            return;
        }
        o.queued = true;
        let class = o.lane.class() as usize;
        if let Some(p) = self.peers.get_mut(&peer) {
            p.queued[class].push_back(offer);
        }
        self.send_wants(now, peer);
    }

    /// Sends queued wants while the peer has slots, highest class first.
    fn send_wants(&mut self, now: Instant, peer: Address) {
        loop {
            let Some(p) = self.peers.get_mut(&peer) else {
                return;
            };
            if p.wants >= MAX_WANTS_PER_PEER {
                return;
            }
            if self.wants >= MAX_WANTS {
                if p.queued.iter().any(|q| !q.is_empty()) {
                    self.starved.insert(peer);
                }
                return;
            }
            let Some(offer) = p.queued.iter_mut().find_map(VecDeque::pop_front) else {
                return;
            };
            let Some(o) = self.offers.get_mut(&offer) else {
                continue;
            };
            o.queued = false;
            if o.to_want.is_empty() || o.want_request.is_some() {
                continue;
            }
            p.wants += 1;
            self.wants += 1;
            o.holds_slot = true;
            // The upstream delivers in bit order; fallbacks may have added indices out of it.
            o.wanted = std::mem::take(&mut o.to_want);
            o.wanted.sort_unstable();
            o.wanted.dedup();
            let count = o.addresses.len();
            let want = Want {
                bin: u32::from(o.bin),
                start: o.start,
                count: u32::try_from(count).unwrap_or(u32::MAX),
                bitvector: bitvector::encode(count, o.wanted.iter().copied()),
            };
            let class = o.lane.class();
            self.stats.wanted += o.wanted.len() as u64;
            let id = self.next_id;
            o.want_request = Some(id);
            let r = Request::new(request::Message::Want(want));
            self.request(now, peer, Pending::Want { offer }, class, r);
        }
    }

    fn on_delivery(&mut self, now: Instant, offer: u64, chunks: Vec<Chunk>) -> Result<(), Fault> {
        let Some(o) = self.offers.get_mut(&offer) else {
            return Ok(());
        };
        o.want_request = None;
        let wanted = std::mem::take(&mut o.wanted);
        if chunks.len() > wanted.len() {
            return Err(Fault::Unrequested {
                wanted: wanted.len(),
                delivered: chunks.len(),
            });
        }
        // A `Chunk`'s address is the hash of its content: comparing it is the verification.
        for (chunk, &i) in chunks.iter().zip(&wanted) {
            if chunk.address() != o.addresses[i] {
                return Err(Fault::Invalid(o.addresses[i]));
            }
        }
        let verified = chunks;
        // A short delivery: the missing chunks fall back to other offers, or to a later pass.
        let missing: Vec<Address> = wanted[verified.len()..]
            .iter()
            .map(|&i| o.addresses[i])
            .collect();
        self.stats.delivered += verified.len() as u64;
        let token = self.id();
        let mut job = StoreJob::default();
        for chunk in &verified {
            let address = chunk.address();
            if let Some(t) = self.transfers.get_mut(&address) {
                t.storing = true;
            }
            job.chunks.push(address);
        }
        let Some(o) = self.offers.get_mut(&offer) else {
            return Ok(());
        };
        if o.holds_slot {
            job.slots.push(offer);
        }
        if !missing.is_empty() {
            o.short = true;
            for address in &missing {
                o.remaining.remove(address);
            }
        }
        let mut records = Vec::new();
        let completes = !o.short && o.remaining.iter().all(|a| job.chunks.contains(a));
        if completes && let Some((key, record)) = self.record_offer(offer) {
            job.records.push(key);
            records.push(record);
        }
        self.jobs.insert(token, job);
        self.outputs.push_back(Output::Store {
            token,
            chunks: verified,
            records,
        });
        for address in missing {
            self.fail_transfer(now, address);
        }
        Ok(())
    }

    /// Adds an offer's range to its bin's intervals and returns the record to write, which
    /// stays in `unwritten` until its batch is durable.
    fn record_offer(&mut self, offer: u64) -> Option<((Address, u8), SyncRecord)> {
        let o = self.offers.get_mut(&offer)?;
        if o.recorded || o.short {
            return None;
        }
        o.recorded = true;
        let (peer, bin, start, topmost) = (o.peer, o.bin, o.start, o.topmost);
        let p = self.peers.get_mut(&peer)?;
        let epoch = p.cursors.as_ref()?.0;
        let b = p.bins.get_mut(&bin)?;
        b.synced.add(start, topmost);
        let value = record::encode(epoch, &b.synced);
        let u = self.unwritten.entry((peer, bin)).or_insert(Unwritten {
            records: 0,
            epoch,
            synced: Intervals::new(FIRST_BIN_ID),
        });
        u.records += 1;
        u.epoch = epoch;
        u.synced = b.synced.clone();
        Some(((peer, bin), (record::key(&peer, bin), value)))
    }

    /// Ends an offer whose chunks are all stored and whose slot is free: its range is
    /// recorded, or, if a delivery came short, asked for again after a delay.
    fn finish_if_complete(&mut self, now: Instant, offer: u64) {
        let Some(o) = self.offers.get(&offer) else {
            return;
        };
        if !o.remaining.is_empty() || o.holds_slot || o.want_request.is_some() {
            return;
        }
        if let Some((key, r)) = self.record_offer(offer) {
            let token = self.id();
            let job = StoreJob {
                records: vec![key],
                ..StoreJob::default()
            };
            self.jobs.insert(token, job);
            self.outputs.push_back(Output::Store {
                token,
                chunks: Vec::new(),
                records: vec![r],
            });
        }
        let retry = now + self.config.retry_delay;
        if let Some(o) = self.offers.remove(&offer)
            && let Some(b) = self
                .peers
                .get_mut(&o.peer)
                .and_then(|p| p.bins.get_mut(&o.bin))
        {
            let s = &mut b.streams[o.lane as usize];
            s.offers = s.offers.saturating_sub(1);
            if o.short {
                s.next = s.next.min(o.start);
                s.retry_at = Some(retry);
                self.retries.insert((retry, o.peer));
            }
        }
    }

    /// A chunk's transfer failed: the first offer still waiting on it wants it instead.
    fn fail_transfer(&mut self, now: Instant, address: Address) {
        let Some(transfer) = self.transfers.remove(&address) else {
            return;
        };
        if transfer.storing {
            // Delivered and being written: it did not fail. Keep it.
            self.transfers.insert(address, transfer);
            return;
        }
        let mut waiting = transfer.waiting.into_iter();
        while let Some(next) = waiting.next() {
            let Some(o) = self.offers.get_mut(&next) else {
                continue;
            };
            let Some(i) = o.addresses.iter().position(|a| *a == address) else {
                continue;
            };
            o.to_want.push(i);
            let peer = o.peer;
            self.transfers.insert(
                address,
                Transfer {
                    offer: next,
                    waiting: waiting.collect(),
                    storing: false,
                },
            );
            self.queue_want(now, peer, next);
            return;
        }
    }

    /// Forgets an offer that cannot complete: its own transfers fall back, its stream asks for
    /// its range again after a delay.
    fn drop_offer(&mut self, now: Instant, offer: u64) {
        let Some(o) = self.offers.remove(&offer) else {
            return;
        };
        if o.holds_slot {
            self.wants = self.wants.saturating_sub(1);
            if let Some(p) = self.peers.get_mut(&o.peer) {
                p.wants = p.wants.saturating_sub(1);
            }
            for peer in std::mem::take(&mut self.starved) {
                self.send_wants(now, peer);
            }
        }
        let owned: Vec<Address> = o
            .remaining
            .iter()
            .filter(|a| self.transfers.get(a).is_some_and(|t| t.offer == offer))
            .copied()
            .collect();
        for address in owned {
            self.fail_transfer(now, address);
        }
        let retry = now + self.config.retry_delay;
        if let Some(b) = self
            .peers
            .get_mut(&o.peer)
            .and_then(|p| p.bins.get_mut(&o.bin))
        {
            let s = &mut b.streams[o.lane as usize];
            s.offers = s.offers.saturating_sub(1);
            s.next = s.next.min(o.start);
            s.retry_at = Some(retry);
            self.retries.insert((retry, o.peer));
        }
    }

    fn fail(&mut self, now: Instant, open: &Open) {
        let retry = now + self.config.retry_delay;
        match open.what {
            Pending::Cursors => {
                if let Some(p) = self.peers.get_mut(&open.peer) {
                    p.cursors_request = None;
                    p.retry_cursors_at = Some(retry);
                    self.retries.insert((retry, open.peer));
                }
            }
            Pending::Get { bin, lane, .. } => {
                if let Some(b) = self
                    .peers
                    .get_mut(&open.peer)
                    .and_then(|p| p.bins.get_mut(&bin))
                {
                    let s = &mut b.streams[lane as usize];
                    s.get = None;
                    s.retry_at = Some(retry);
                    self.retries.insert((retry, open.peer));
                }
            }
            Pending::Want { offer } => {
                if let Some(o) = self.offers.get_mut(&offer) {
                    o.want_request = None;
                }
                self.drop_offer(now, offer);
            }
        }
    }

    fn penalize(&mut self, now: Instant, peer: Address, fault: Fault) {
        self.stats.refused += 1;
        self.banned.insert(peer, now + self.config.ban);
        self.handle_disconnected(now, peer);
        self.outputs.push_back(Output::Penalize { peer, fault });
    }
}
