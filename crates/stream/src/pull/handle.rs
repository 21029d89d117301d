//! The core's entry points: construction, polling, and the `handle_*` calls the runtime
//! makes, with the bookkeeping of open requests.

use std::collections::VecDeque;
use std::time::Instant;

use tributary_chunk::{Address, Chunk, proximity};
use tributary_wire::pullsync::Request;

use super::*;
use crate::record::FIRST_BIN_ID;

impl PullSync {
    /// A core for the node at overlay `own` whose chunk store is in `epoch`, with no peers,
    /// at depth 0.
    #[must_use]
    pub fn new(own: Address, epoch: u64, config: PullConfig) -> Self {
        Self {
            own,
            epoch,
            config,
            depth: 0,
            peers: BTreeMap::new(),
            banned: BTreeMap::new(),
            open: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            retries: BTreeSet::new(),
            offers: BTreeMap::new(),
            transfers: BTreeMap::new(),
            jobs: BTreeMap::new(),
            unwritten: BTreeMap::new(),
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
        let mut touched = BTreeSet::new();
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
        let mut peers = BTreeSet::new();
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

    pub(super) fn take_open(&mut self, id: RequestId) -> Option<Open> {
        let open = self.open.remove(&id)?;
        self.deadlines.remove(&(open.deadline, id));
        Some(open)
    }

    pub(super) fn close_where(&mut self, pred: impl Fn(&Open) -> bool) {
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

    pub(super) fn id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    pub(super) fn request(
        &mut self,
        now: Instant,
        peer: Address,
        what: Pending,
        class: Class,
        r: Request,
    ) {
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
}
