//! The upstream side of pull-sync: answers a downstream peer's requests from the chunk store.
//!
//! Stateless: an offer is re-derived from the pull index when its Want arrives (the index only
//! grows within an epoch, so the `count` entries from `start` are the ones offered), so an
//! upstream holds nothing per downstream peer but the requests it is answering. It reads the
//! store, so the runtime calls [`answer`] off its event loop (the blocking pool), as the
//! state-sync server is called. A live Get that finds nothing new is not answered at once:
//! [`Answer::Wait`] tells the caller to park it until the bin's cursor passes its start
//! ([`wake`]), or to answer it with [`empty_offer`] after a while.

use prost::Message;
use tributary_chunk::store::{ChunkStore, ChunkStoreError, Origin, PullEntry};
use tributary_chunk::{Address, MAX_PO};
use tributary_wire::pullsync::{
    Cursors, Delivery, Get, Offer, Request, Response, Want, bitvector, request, response,
};
use tributary_wire::{MAX_PULL_REQUEST_BYTES, PULL_BATCH};

/// Errors of answering a request.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The request breaks the protocol (the peer is at fault).
    #[error("malformed pull-sync request: {0}")]
    Peer(&'static str),
    /// The chunk store failed.
    #[error(transparent)]
    Store(#[from] ChunkStoreError),
}

/// What to do with a request.
#[derive(Debug, PartialEq)]
pub enum Answer {
    /// Send this answer.
    Reply(Response),
    /// A live Get of `bin` from `start`, beyond the cursor: answer it again once the bin's
    /// cursor reaches `start`, or with [`empty_offer`] when it has waited long enough.
    Wait {
        /// The bin.
        bin: u8,
        /// The first bin id asked for.
        start: u64,
    },
}

/// Answers one encoded request of the peer whose overlay is `requester` from `store`.
///
/// # Errors
/// [`ServeError::Peer`] for a request that breaks the protocol, [`ServeError::Store`] when the
/// store fails.
pub fn answer(store: &ChunkStore, requester: &Address, bytes: &[u8]) -> Result<Answer, ServeError> {
    if bytes.len() > MAX_PULL_REQUEST_BYTES {
        return Err(ServeError::Peer("request too large"));
    }
    let request = Request::decode(bytes).map_err(|_| ServeError::Peer("undecodable request"))?;
    match request.message {
        None => Err(ServeError::Peer("empty request")),
        Some(request::Message::Cursors(_)) => Ok(Answer::Reply(Response::new(
            response::Message::Cursors(Cursors {
                cursors: store.cursors(),
                epoch: store.epoch(),
            }),
        ))),
        Some(request::Message::Get(get)) => offer(store, requester, &get),
        Some(request::Message::Want(want)) => deliver(store, requester, &want).map(Answer::Reply),
    }
}

/// Whether a parked live Get of `bin` from `start` can be answered now.
#[must_use]
pub fn wake(store: &ChunkStore, bin: u8, start: u64) -> bool {
    store.last_bin_id(bin) >= start
}

/// The answer to a live Get from `start` that waited and found nothing: an offer covering no
/// bin id.
#[must_use]
pub fn empty_offer(start: u64) -> Response {
    Response::new(response::Message::Offer(Offer {
        topmost: start.saturating_sub(1),
        addresses: Vec::new(),
    }))
}

fn bin(bin: u32) -> Result<u8, ServeError> {
    u8::try_from(bin)
        .ok()
        .filter(|b| *b <= MAX_PO)
        .ok_or(ServeError::Peer("bin out of range"))
}

/// `entries` less those `requester` (whose store epoch is `epoch`, 0 for none) gave this
/// store. An offer and the Want answering it filter the same first [`PULL_BATCH`] entries
/// from the same start (the index only grows within an epoch, and an entry's origin never
/// changes), so the offered ones are a prefix of what the Want reads.
fn not_theirs(mut entries: Vec<PullEntry>, requester: &Address, epoch: u64) -> Vec<PullEntry> {
    if epoch != 0 {
        let theirs = Origin::of(requester, epoch);
        entries.retain(|e| e.origin != Some(theirs));
    }
    entries
}

fn offer(store: &ChunkStore, requester: &Address, get: &Get) -> Result<Answer, ServeError> {
    let b = bin(get.bin)?;
    if get.start == 0 || (get.end != 0 && get.end < get.start) {
        return Err(ServeError::Peer("empty or inverted range"));
    }
    let mut scanned = store.bin_from(b, get.start, PULL_BATCH)?;
    if get.end != 0 {
        scanned.retain(|e| e.id <= get.end);
    }
    let topmost = match scanned.last() {
        None if get.end == 0 => {
            return Ok(Answer::Wait {
                bin: b,
                start: get.start,
            });
        }
        Some(e) if scanned.len() == PULL_BATCH || get.end == 0 => e.id,
        _ => get.end,
    };
    let entries = not_theirs(scanned, requester, get.epoch);
    let mut addresses = Vec::with_capacity(entries.len() * 32);
    for e in &entries {
        addresses.extend_from_slice(&e.address.0);
    }
    Ok(Answer::Reply(Response::new(response::Message::Offer(
        Offer { topmost, addresses },
    ))))
}

fn deliver(store: &ChunkStore, requester: &Address, want: &Want) -> Result<Response, ServeError> {
    let b = bin(want.bin)?;
    let count = usize::try_from(want.count).map_err(|_| ServeError::Peer("count"))?;
    if want.start == 0 || count == 0 || count > PULL_BATCH {
        return Err(ServeError::Peer("want of no entry or of more than a batch"));
    }
    // Swarm's bitvectors carry `count / 8 + 1` bytes, ours `count.div_ceil(8)`: take either.
    if want.bitvector.len() < count.div_ceil(8) || want.bitvector.len() > count / 8 + 1 {
        return Err(ServeError::Peer("bitvector of the wrong length"));
    }
    if (count..want.bitvector.len() * 8).any(|i| bitvector::get(&want.bitvector, i)) {
        return Err(ServeError::Peer("bit set beyond the count"));
    }
    let entries = not_theirs(
        store.bin_from(b, want.start, PULL_BATCH)?,
        requester,
        want.epoch,
    );
    let mut chunks = Vec::new();
    for i in (0..count).filter(|&i| bitvector::get(&want.bitvector, i)) {
        let entry = entries
            .get(i)
            .ok_or(ServeError::Peer("want of an entry never offered"))?;
        // The index never points at a missing chunk (one batch writes both); if the store
        // lost it anyway, the delivery is short and the peer fetches it elsewhere.
        if let Some(data) = store.get(&entry.address)? {
            chunks.push(data);
        }
    }
    Ok(Response::new(response::Message::Delivery(Delivery {
        chunks,
    })))
}

/// Live Gets waiting upstream for their bin to grow ([`Answer::Wait`]), each with what the
/// caller needs to answer it (`T`: a response channel, or a simulated request) and a deadline.
/// The runtime and the simulator keep them here, so both wake and expire them alike.
#[derive(Debug)]
pub struct LiveWaits<T> {
    waits: Vec<LiveWait<T>>,
}

/// One parked live Get.
#[derive(Debug)]
pub struct LiveWait<T> {
    /// What the caller answers it with.
    pub token: T,
    /// Its bin.
    pub bin: u8,
    /// The first bin id it asks for.
    pub start: u64,
    /// When it is answered empty.
    pub deadline: std::time::Instant,
}

impl<T> Default for LiveWaits<T> {
    fn default() -> Self {
        Self { waits: Vec::new() }
    }
}

impl<T> LiveWaits<T> {
    /// How many wait.
    #[must_use]
    pub fn len(&self) -> usize {
        self.waits.len()
    }

    /// Whether none waits.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.waits.is_empty()
    }

    /// Parks a Get.
    pub fn park(&mut self, wait: LiveWait<T>) {
        self.waits.push(wait);
    }

    /// The soonest deadline.
    #[must_use]
    pub fn next_deadline(&self) -> Option<std::time::Instant> {
        self.waits.iter().map(|w| w.deadline).min()
    }

    /// Drops the waits `keep` refuses (say, of a peer that went away).
    pub fn retain(&mut self, keep: impl Fn(&T) -> bool) {
        self.waits.retain(|w| keep(&w.token));
    }

    /// Takes the waits whose bin in `store` has reached their start: they can be answered.
    pub fn take_ready(&mut self, store: &ChunkStore) -> Vec<LiveWait<T>> {
        self.take(|w| wake(store, w.bin, w.start))
    }

    /// Takes the waits whose deadline has passed: answer each with [`empty_offer`].
    pub fn take_expired(&mut self, now: std::time::Instant) -> Vec<LiveWait<T>> {
        self.take(|w| w.deadline <= now)
    }

    fn take(&mut self, due: impl Fn(&LiveWait<T>) -> bool) -> Vec<LiveWait<T>> {
        let (taken, kept) = std::mem::take(&mut self.waits).into_iter().partition(due);
        self.waits = kept;
        taken
    }
}
