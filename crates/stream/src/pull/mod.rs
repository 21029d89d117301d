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
//!
//! Here: the limits, the public types and the core's state. The core's methods live by
//! concern in `handle` (entry points, open requests), `subscribe` (cursors, bins, intervals
//! loaded), `offers` (streams and their offers), `wants` (scheduling and deliveries) and
//! `complete` (how offers end: recorded, or dropped and asked for again).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use prost::Message;
use tributary_chunk::store::{ChunkStore, ChunkStoreError, Origin};
use tributary_chunk::{Address, Chunk, MAX_PO};
use tributary_wire::pullsync::{Request, Response, response};
use tributary_wire::{MAX_PULL_MESSAGE_BYTES, PULL_BATCH};

use crate::intervals::Intervals;

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
        /// The peer they were pulled from, for the pull index (`None` when `chunks` is
        /// empty, or the peer's epoch is not known): that peer is not offered them back.
        origin: Option<Origin>,
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
    remaining: BTreeSet<Address>,
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
    /// This node's store epoch, sent with every Get and Want (see `Get.epoch`).
    epoch: u64,
    config: PullConfig,
    depth: u8,
    peers: BTreeMap<Address, Peer>,
    banned: BTreeMap<Address, Instant>,
    open: BTreeMap<RequestId, Open>,
    /// The deadlines of `open`, soonest first.
    deadlines: BTreeSet<(Instant, RequestId)>,
    /// When a peer has a stream or its cursors to ask again (entries may be stale: a due one
    /// only pumps the peer).
    retries: BTreeSet<(Instant, Address)>,
    offers: BTreeMap<u64, OfferState>,
    transfers: BTreeMap<Address, Transfer>,
    jobs: BTreeMap<Token, StoreJob>,
    unwritten: BTreeMap<(Address, u8), Unwritten>,
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

mod complete;
mod handle;
mod offers;
mod subscribe;
mod wants;
