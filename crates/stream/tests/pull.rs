//! The pull-sync core against real chunk stores on the in-memory model: a small harness that
//! carries requests between cores instantly (the simulator in `tributary-sim` adds latency,
//! loss, crashes and the overlay).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use prost::Message;
use tributary_chunk::store::{ChunkStore, Origin};
use tributary_chunk::{Address, Chunk};
use tributary_store::MemStore;
use tributary_stream::pull::{Class, Fault, Output, PullConfig, PullSync, SyncRecord};
use tributary_stream::serve::{self, Answer};
use tributary_wire::pullsync::{Request, Response, request, response};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Lie {
    Honest,
    /// Delivers a chunk other than the one wanted.
    WrongChunk,
    /// Delivers one chunk more than wanted.
    Unrequested,
    /// Leaves out the last chunk of every delivery.
    Short,
}

struct Node {
    overlay: Address,
    mem: MemStore,
    store: Arc<ChunkStore>,
    core: PullSync,
    lie: Lie,
    /// Live Gets waiting upstream: (downstream, id, bin, start).
    /// Parked live Gets: requester, request id, bin, start, the Get as it came.
    parked: Vec<(usize, u64, u8, u64, Vec<u8>)>,
}

enum Msg {
    Request {
        from: usize,
        to: usize,
        id: u64,
        bytes: Vec<u8>,
    },
    Response {
        to: usize,
        id: u64,
        bytes: Vec<u8>,
    },
}

struct Net {
    nodes: Vec<Node>,
    now: Instant,
    queue: VecDeque<Msg>,
    /// Requests held back instead of sent (to test priorities).
    hold_wants: bool,
    held: Vec<Msg>,
    /// Every request sent: (from, class, is a want, to).
    sent: Vec<(usize, Class, bool, usize)>,
    /// Store writes held back (in order) instead of done at once.
    defer_stores: bool,
    deferred: Vec<(usize, u64, Vec<Pulled>, Vec<SyncRecord>)>,
    /// Chunks delivered per (node, address).
    received: HashMap<(usize, Address), u32>,
    penalties: Vec<(usize, Address, Fault)>,
}

/// A chunk pulled from a peer, with its origin.
type Pulled = (Chunk, Option<Origin>);

fn chunk(seed: u32) -> Chunk {
    Chunk::new(8, &u64::from(seed).to_le_bytes()).expect("chunk")
}

fn overlay(i: usize) -> Address {
    let mut a = [0u8; 32];
    a[0] = (i as u8).wrapping_mul(37);
    a[31] = i as u8;
    Address(a)
}

impl Net {
    fn new(n: usize) -> Self {
        let nodes = (0..n)
            .map(|i| {
                let mem = MemStore::new();
                let store = open(&mem, i);
                let core = PullSync::new(overlay(i), store.epoch(), PullConfig::default());
                Node {
                    overlay: overlay(i),
                    mem,
                    store,
                    core,
                    lie: Lie::Honest,
                    parked: Vec::new(),
                }
            })
            .collect();
        Self {
            nodes,
            now: Instant::now(),
            queue: VecDeque::new(),
            hold_wants: false,
            held: Vec::new(),
            sent: Vec::new(),
            defer_stores: false,
            deferred: Vec::new(),
            received: HashMap::new(),
            penalties: Vec::new(),
        }
    }

    fn connect(&mut self, a: usize, b: usize) {
        let now = self.now;
        let (oa, ob) = (self.nodes[a].overlay, self.nodes[b].overlay);
        self.nodes[a].core.handle_connected(now, ob, false);
        self.nodes[b].core.handle_connected(now, oa, false);
    }

    fn restart(&mut self, i: usize) {
        self.nodes[i].store = open(&self.nodes[i].mem, i);
        let epoch = self.nodes[i].store.epoch();
        self.nodes[i].core = PullSync::new(self.nodes[i].overlay, epoch, PullConfig::default());
        self.nodes[i].parked.clear();
        for n in &mut self.nodes {
            n.core.handle_disconnected(self.now, overlay(i));
        }
    }

    fn index_of(&self, overlay: Address) -> usize {
        self.nodes
            .iter()
            .position(|n| n.overlay == overlay)
            .expect("known overlay")
    }

    fn upload(&mut self, i: usize, chunks: &[Chunk]) {
        self.nodes[i].store.put_many(chunks).expect("put");
        self.wake(i);
    }

    /// Answers the parked live Gets of node `i` that can be answered now.
    fn wake(&mut self, i: usize) {
        let parked = std::mem::take(&mut self.nodes[i].parked);
        for (from, id, bin, start, get) in parked {
            if serve::wake(&self.nodes[i].store, bin, start) {
                self.serve(i, from, id, &get);
            } else {
                self.nodes[i].parked.push((from, id, bin, start, get));
            }
        }
    }

    fn serve(&mut self, at: usize, from: usize, id: u64, bytes: &[u8]) {
        let node = &self.nodes[at];
        let requester = self.nodes[from].overlay;
        match serve::answer(&node.store, &requester, bytes).expect("honest requests") {
            Answer::Wait { bin, start } => {
                self.nodes[at]
                    .parked
                    .push((from, id, bin, start, bytes.to_vec()));
            }
            Answer::Reply(mut response) => {
                lie(node.lie, &mut response);
                let bytes = response.encode_to_vec();
                self.queue.push_back(Msg::Response {
                    to: from,
                    id,
                    bytes,
                });
            }
        }
    }

    /// Carries out every node's outputs.
    fn drain(&mut self) {
        for i in 0..self.nodes.len() {
            while let Some(output) = self.nodes[i].core.poll_output() {
                self.carry_out(i, output);
            }
        }
    }

    fn carry_out(&mut self, i: usize, output: Output) {
        match output {
            Output::Request {
                peer,
                id,
                class,
                request,
            } => {
                let to = self.index_of(peer);
                let is_want = matches!(request.message, Some(request::Message::Want(_)));
                self.sent.push((i, class, is_want, to));
                let msg = Msg::Request {
                    from: i,
                    to,
                    id,
                    bytes: request.encode_to_vec(),
                };
                if is_want && self.hold_wants {
                    self.held.push(msg);
                } else {
                    self.queue.push_back(msg);
                }
            }
            Output::Store {
                token,
                chunks,
                origin,
                records,
            } => {
                let chunks: Vec<_> = chunks.into_iter().map(|c| (c, origin)).collect();
                if self.defer_stores {
                    self.deferred.push((i, token, chunks, records));
                    return;
                }
                for (c, _) in &chunks {
                    *self.received.entry((i, c.address())).or_default() += 1;
                }
                self.nodes[i]
                    .store
                    .put_many_with_records(&chunks, &records)
                    .expect("store");
                let node = &mut self.nodes[i];
                node.core
                    .handle_stored(self.now, token, node.store.as_ref());
                self.wake(i);
            }
            Output::Penalize { peer, fault } => {
                self.penalties.push((i, peer, fault));
                let other = self.index_of(peer);
                let own = self.nodes[i].overlay;
                self.nodes[other].core.handle_disconnected(self.now, own);
            }
        }
    }

    /// Runs until nothing moves but parked live Gets.
    fn settle(&mut self) {
        for _ in 0..1_000_000 {
            self.drain();
            let Some(msg) = self.queue.pop_front() else {
                return;
            };
            match msg {
                Msg::Request {
                    from,
                    to,
                    id,
                    bytes,
                } => self.serve(to, from, id, &bytes),
                Msg::Response { to, id, bytes } => {
                    let node = &mut self.nodes[to];
                    node.core
                        .handle_response(self.now, id, &bytes, node.store.as_ref());
                }
            }
        }
        panic!("no quiescence");
    }

    /// Does the held-back store writes, in order, and tells the cores.
    fn flush_stores(&mut self) {
        self.defer_stores = false;
        for (i, token, chunks, records) in std::mem::take(&mut self.deferred) {
            let origin = chunks.first().and_then(|(_, o)| *o);
            let chunks = chunks.into_iter().map(|(c, _)| c).collect();
            self.carry_out(
                i,
                Output::Store {
                    token,
                    chunks,
                    origin,
                    records,
                },
            );
        }
    }

    /// Moves the clock on and lets every core and parked Get see it.
    fn advance(&mut self, by: std::time::Duration) {
        self.now += by;
        for node in &mut self.nodes {
            node.core.handle_timeout(self.now, node.store.as_ref());
        }
    }

    fn release_held(&mut self) {
        self.queue.extend(self.held.drain(..));
    }

    fn has_all(&self, i: usize, chunks: &[Chunk]) -> bool {
        let addrs: Vec<Address> = chunks.iter().map(Chunk::address).collect();
        self.nodes[i]
            .store
            .have_many(&addrs)
            .expect("have")
            .iter()
            .all(|h| *h)
    }

    fn twice(&self) -> usize {
        self.received.values().filter(|n| **n > 1).count()
    }
}

fn open(mem: &MemStore, i: usize) -> Arc<ChunkStore> {
    let epoch = 1000 + i as u64;
    Arc::new(
        ChunkStore::open_with_epoch(Arc::new(mem.clone()), overlay(i), move || epoch)
            .expect("open"),
    )
}

fn lie(lie: Lie, response: &mut Response) {
    let Some(response::Message::Delivery(d)) = response.message.as_mut() else {
        return;
    };
    match lie {
        Lie::Honest => {}
        Lie::WrongChunk => {
            if let Some(first) = d.chunks.first_mut() {
                *first = chunk(999_999).data().to_vec();
            }
        }
        Lie::Unrequested => d.chunks.push(chunk(888_888).data().to_vec()),
        Lie::Short => {
            d.chunks.pop();
        }
    }
}

fn chunks(range: std::ops::Range<u32>) -> Vec<Chunk> {
    range.map(chunk).collect()
}

#[test]
fn a_node_syncs_every_bin_then_live_and_resumes_from_its_intervals() {
    let mut net = Net::new(2);
    let history = chunks(0..2000);
    net.upload(0, &history);
    net.connect(0, 1);
    net.settle();
    assert!(
        net.has_all(1, &history),
        "historical sync brought everything"
    );
    // And node 0 pulled nothing it had, since node 1 only holds node 0's chunks.
    assert_eq!(net.twice(), 0);
    let progress = net.nodes[1].core.progress();
    assert!(
        progress
            .iter()
            .all(|p| p.historical_done && p.live_caught_up),
        "{progress:?}"
    );
    assert_eq!(progress.iter().map(|p| p.synced).sum::<u64>(), 2000);

    // Live: new chunks at node 0 reach node 1 through the parked live Gets.
    let live = chunks(2000..2300);
    net.upload(0, &live);
    net.settle();
    assert!(net.has_all(1, &live), "live sync brought the new chunks");

    // Node 1 restarts: its intervals cover everything, so it wants nothing.
    let wanted_before = net.nodes[1].core.stats().wanted;
    net.restart(1);
    net.connect(0, 1);
    net.settle();
    assert_eq!(
        net.nodes[1].core.stats().wanted,
        0,
        "resumed without wanting anything"
    );
    assert_eq!(
        net.nodes[1].core.stats().offered,
        0,
        "not even offered again: the gaps are closed"
    );
    assert!(wanted_before >= 2300);
    assert_eq!(net.twice(), 0);
}

#[test]
fn a_changed_upstream_epoch_resets_the_intervals() {
    let mut net = Net::new(2);
    net.upload(0, &chunks(0..300));
    net.connect(0, 1);
    net.settle();
    // Node 0's store is re-created (same identity, another epoch): everything is offered
    // again, and nothing is fetched twice since node 1 has it all.
    net.nodes[0].mem = MemStore::new();
    net.nodes[1].core.handle_disconnected(net.now, overlay(0));
    net.nodes[0].store = Arc::new(
        ChunkStore::open_with_epoch(Arc::new(net.nodes[0].mem.clone()), overlay(0), || 1)
            .expect("open"),
    );
    net.upload(0, &chunks(0..300));
    net.restart(1);
    net.connect(0, 1);
    net.settle();
    assert_eq!(
        net.nodes[1].core.stats().offered,
        300,
        "the old intervals were not trusted"
    );
    assert_eq!(
        net.nodes[1].core.stats().wanted,
        0,
        "and nothing is fetched twice"
    );
}

#[test]
fn chunks_are_not_offered_back_to_the_peer_they_came_from() {
    let mut net = Net::new(3);
    let history = chunks(0..1000);
    net.upload(0, &history);
    net.connect(0, 1);
    net.settle();
    assert!(net.has_all(1, &history));
    // Node 0 pulls node 1's bins too, and finds them covered without one address offered.
    assert_eq!(
        net.nodes[0].core.stats().offered,
        0,
        "offered back to node 0"
    );
    let progress = net.nodes[0].core.progress();
    assert!(
        !progress.is_empty() && progress.iter().all(|p| p.historical_done),
        "node 0's streams from node 1 ended: {progress:?}"
    );
    // Live: what node 1 pulls live is not offered back either.
    let live = chunks(1000..1200);
    net.upload(0, &live);
    net.settle();
    assert!(net.has_all(1, &live));
    assert_eq!(net.nodes[0].core.stats().offered, 0, "live offers back");
    // A third node is offered everything node 1 pulled from node 0.
    net.connect(1, 2);
    net.settle();
    assert!(net.has_all(2, &history) && net.has_all(2, &live));
    assert_eq!(net.nodes[2].core.stats().offered, 1200);
    assert_eq!(
        net.nodes[1].core.stats().offered,
        1200,
        "only node 0's offers"
    );
    // Node 0's store is lost and re-created (same identity, another epoch): node 1 offers it
    // everything back.
    for n in &mut net.nodes {
        n.core.handle_disconnected(net.now, overlay(0));
    }
    net.nodes[0].mem = MemStore::new();
    net.nodes[0].store = Arc::new(
        ChunkStore::open_with_epoch(Arc::new(net.nodes[0].mem.clone()), overlay(0), || 77)
            .expect("open"),
    );
    net.nodes[0].core = PullSync::new(overlay(0), 77, PullConfig::default());
    net.connect(0, 1);
    net.settle();
    assert!(net.has_all(0, &history) && net.has_all(0, &live));
}

/// The answer to `request` from `requester`, as the upstream `store` sends it.
fn reply(store: &ChunkStore, requester: &Address, request: request::Message) -> response::Message {
    let bytes = Request::new(request).encode_to_vec();
    match serve::answer(store, requester, &bytes).expect("a valid request") {
        Answer::Reply(Response {
            message: Some(message),
        }) => message,
        other => panic!("no answer: {other:?}"),
    }
}

#[test]
fn an_offer_and_its_want_leave_out_the_same_chunks() {
    use tributary_wire::pullsync::{Get, Want, bitvector};
    let store = open(&MemStore::new(), 0);
    let peer = Address([9; 32]);
    let theirs = Origin::of(&peer, 5);
    // Every third chunk came from `peer` (in its epoch 5), the others from elsewhere.
    let pulled: Vec<_> = chunks(0..900)
        .into_iter()
        .enumerate()
        .map(|(i, c)| (c, (i % 3 == 0).then_some(theirs)))
        .collect();
    store.put_many_with_records(&pulled, &[]).expect("put");
    let mut left_out = 0;
    for bin in 0..=tributary_chunk::MAX_PO {
        let cursor = store.last_bin_id(bin);
        if cursor == 0 {
            continue;
        }
        let scanned = store.bin_from(bin, 1, 128).expect("scan");
        let expected: Vec<Address> = scanned
            .iter()
            .filter(|e| e.origin != Some(theirs))
            .map(|e| e.address)
            .collect();
        left_out += scanned.len() - expected.len();
        let get = |epoch| {
            request::Message::Get(Get {
                bin: u32::from(bin),
                start: 1,
                end: cursor,
                epoch,
            })
        };
        // From another epoch of the same peer (its store was re-created): all offered.
        let response::Message::Offer(all) = reply(&store, &peer, get(6)) else {
            panic!("an offer");
        };
        assert_eq!(all.addresses.len() / 32, scanned.len());
        let response::Message::Offer(offer) = reply(&store, &peer, get(5)) else {
            panic!("an offer");
        };
        assert_eq!(offer.topmost, all.topmost, "the same range is covered");
        let offered: Vec<Address> = offer
            .addresses
            .chunks_exact(32)
            .map(|a| Address(a.try_into().expect("32 bytes")))
            .collect();
        assert_eq!(offered, expected, "bin {bin}");
        if offered.is_empty() {
            continue;
        }
        let want = request::Message::Want(Want {
            bin: u32::from(bin),
            start: 1,
            count: offered.len() as u32,
            bitvector: bitvector::encode(offered.len(), 0..offered.len()),
            epoch: 5,
        });
        let response::Message::Delivery(delivery) = reply(&store, &peer, want) else {
            panic!("a delivery");
        };
        let delivered: Vec<Address> = delivery
            .chunks
            .iter()
            .map(|c| Chunk::from_wire(c.clone()).expect("chunk").address())
            .collect();
        assert_eq!(delivered, offered, "the Want reads what the offer offered");
    }
    assert!(left_out > 100, "{left_out} left out");
}

#[test]
fn three_peers_offering_the_same_chunks_transfer_each_once() {
    let mut net = Net::new(4);
    let shared = chunks(0..600);
    for upstream in 0..3 {
        net.upload(upstream, &shared);
    }
    for upstream in 0..3 {
        net.connect(upstream, 3);
    }
    net.settle();
    assert!(net.has_all(3, &shared));
    let at_3: Vec<u32> = shared
        .iter()
        .map(|c| net.received.get(&(3, c.address())).copied().unwrap_or(0))
        .collect();
    assert!(
        at_3.iter().all(|n| *n == 1),
        "each chunk transferred once to node 3"
    );
    assert_eq!(net.nodes[3].core.stats().offered, 3 * 600);
    assert_eq!(net.nodes[3].core.stats().wanted, 600);
}

#[test]
fn a_peer_that_delivers_a_wrong_or_unrequested_chunk_is_penalized() {
    for lie in [Lie::WrongChunk, Lie::Unrequested] {
        let mut net = Net::new(3);
        let shared = chunks(0..500);
        net.upload(0, &shared);
        net.upload(1, &shared);
        net.nodes[0].lie = lie;
        net.connect(0, 2);
        net.connect(1, 2);
        net.settle();
        assert_eq!(net.penalties.len(), 1, "{lie:?}: {:?}", net.penalties);
        let (by, peer, fault) = &net.penalties[0];
        assert_eq!((*by, *peer), (2, overlay(0)));
        match (lie, fault) {
            (Lie::WrongChunk, Fault::Invalid(_))
            | (Lie::Unrequested, Fault::Unrequested { .. }) => {}
            other => panic!("unexpected fault {other:?}"),
        }
        assert!(
            net.has_all(2, &shared),
            "{lie:?}: the honest peer delivered the rest"
        );
        for bad in [chunk(999_999), chunk(888_888)] {
            assert!(
                !net.has_all(2, &[bad]),
                "{lie:?}: nothing from the liar was stored"
            );
        }
        // The liar is not synced from again for a while: node 2 asks it nothing.
        let before = net.sent.len();
        net.connect(0, 2);
        net.settle();
        assert_eq!(net.penalties.len(), 1);
        assert!(
            net.sent[before..]
                .iter()
                .all(|(from, _, _, to)| !(*from == 2 && *to == 0)),
            "{lie:?}: node 2 asked the liar again"
        );
    }
}

#[test]
fn live_wants_go_before_queued_historical_ones() {
    let mut net = Net::new(2);
    // Enough history in one bin of node 1's view that wants queue up behind the slot limit.
    net.upload(0, &chunks(0..6000));
    net.hold_wants = true;
    net.connect(0, 1);
    net.settle();
    let queued_historical = net
        .sent
        .iter()
        .filter(|(_, c, w, _)| *w && *c == Class::Historical)
        .count();
    assert_eq!(
        queued_historical,
        tributary_stream::pull::MAX_WANTS_PER_PEER,
        "only as many wants as slots go out"
    );
    // A live chunk arrives while the slots are full of historical wants.
    let fresh = chunks(10_000..10_001);
    net.upload(0, &fresh);
    net.settle();
    let before = net.sent.len();
    // Slots free one by one: the first want sent after them is the live one.
    net.hold_wants = false;
    net.release_held();
    net.settle();
    let after: Vec<Class> = net.sent[before..]
        .iter()
        .filter(|(_, _, w, _)| *w)
        .map(|(_, c, _, _)| *c)
        .collect();
    assert_eq!(after.first(), Some(&Class::Live), "{after:?}");
    assert!(net.has_all(1, &fresh));
    assert!(net.has_all(1, &chunks(0..6000)));
}

#[test]
fn wants_in_flight_are_bounded_per_peer_and_over_all_peers() {
    use tributary_stream::pull::{MAX_WANTS, MAX_WANTS_PER_PEER};
    let mut net = Net::new(7);
    for upstream in 0..6 {
        let base = 100_000 * (upstream as u32 + 1);
        net.upload(upstream, &chunks(base..base + 3000));
    }
    net.hold_wants = true;
    for upstream in 0..6 {
        net.connect(upstream, 6);
    }
    net.settle();
    let wants_of_6 = |net: &Net| {
        net.sent
            .iter()
            .filter(|(from, _, want, _)| *want && *from == 6)
            .count()
    };
    const {
        assert!(
            6 * MAX_WANTS_PER_PEER > MAX_WANTS,
            "the global bound must bite"
        );
    };
    assert_eq!(
        wants_of_6(&net),
        MAX_WANTS,
        "wants sent while none was answered"
    );
    net.hold_wants = false;
    net.release_held();
    net.settle();
    for upstream in 0..6 {
        let base = 100_000 * (upstream as u32 + 1);
        assert!(
            net.has_all(6, &chunks(base..base + 3000)),
            "from {upstream}"
        );
    }
}

#[test]
fn a_short_delivery_is_fetched_elsewhere_and_its_range_asked_again() {
    let mut net = Net::new(3);
    let shared = chunks(0..400);
    net.upload(0, &shared);
    net.upload(1, &shared);
    net.nodes[0].lie = Lie::Short;
    net.connect(0, 2);
    net.connect(1, 2);
    net.settle();
    assert!(
        net.has_all(2, &shared),
        "the honest peer filled in what came short"
    );
    assert!(net.penalties.is_empty(), "a short delivery is not a lie");
    // The short offers ended without recording their ranges; once asked again (after the retry
    // delay) everything is held, so the ranges of node 0 are recorded and its streams finish.
    let from_0 = |net: &Net| {
        net.nodes[2]
            .core
            .progress()
            .into_iter()
            .filter(|p| p.peer == overlay(0) && p.cursor > 0)
            .collect::<Vec<_>>()
    };
    assert!(
        from_0(&net).iter().any(|p| !p.historical_done),
        "nothing came short"
    );
    for _ in 0..5 {
        net.advance(std::time::Duration::from_secs(3));
        net.settle();
    }
    let progress = from_0(&net);
    assert!(
        progress
            .iter()
            .all(|p| p.historical_done && p.synced == p.cursor),
        "{progress:?}"
    );
}

#[test]
fn wants_in_flight_are_bounded_per_peer() {
    use tributary_stream::pull::MAX_WANTS_PER_PEER;
    let mut net = Net::new(2);
    net.upload(0, &chunks(0..6000));
    net.hold_wants = true;
    net.connect(0, 1);
    net.settle();
    let wants = net
        .sent
        .iter()
        .filter(|(from, _, w, _)| *w && *from == 1)
        .count();
    assert_eq!(wants, MAX_WANTS_PER_PEER);
}

#[test]
fn records_written_late_are_not_overwritten_by_a_resubscription() {
    let mut net = Net::new(2);
    let history = chunks(0..3000);
    net.upload(0, &history);
    // Writes are slow: the peer reconnects while its first records are not yet durable.
    net.defer_stores = true;
    net.connect(0, 1);
    net.settle();
    assert!(!net.deferred.is_empty());
    let offered = net.nodes[1].core.stats().offered;
    let recorded: u64 = net.nodes[1].core.progress().iter().map(|p| p.synced).sum();
    assert!(recorded > 0, "no record was emitted before the reconnect");
    net.nodes[0].core.handle_disconnected(net.now, overlay(1));
    net.nodes[1].core.handle_disconnected(net.now, overlay(0));
    net.connect(0, 1);
    net.settle();
    net.flush_stores();
    net.settle();
    assert!(net.has_all(1, &history));
    // The resubscription knew the ranges whose records were still being written, so only the
    // rest was offered again (the store alone said nothing was synced).
    let again = net.nodes[1].core.stats().offered - offered;
    assert!(
        again <= 3000 - recorded,
        "{again} offered again, {recorded} were recorded"
    );
    // On disk, the intervals cover everything: a restart is offered nothing.
    net.restart(1);
    net.connect(0, 1);
    net.settle();
    assert_eq!(
        net.nodes[1].core.stats().offered,
        0,
        "a record went back in time"
    );
}

/// A fresh downstream core (over an empty store, `own`) brought honestly, against `store`, to
/// a request of the kind `wanted` picks; returns the core and that request's id.
fn core_asking(
    store: &ChunkStore,
    own: &ChunkStore,
    wanted: fn(&request::Message) -> bool,
) -> (PullSync, u64, Request) {
    let now = Instant::now();
    let mut core = PullSync::new(Address([9; 32]), own.epoch(), PullConfig::default());
    core.handle_connected(now, store.base(), false);
    while let Some(output) = core.poll_output() {
        let Output::Request { id, request, .. } = output else {
            continue;
        };
        let message = request.message.as_ref().expect("a request");
        if wanted(message) {
            return (core, id, request);
        }
        if let Ok(Answer::Reply(r)) =
            serve::answer(store, &Address([9; 32]), &request.encode_to_vec())
        {
            core.handle_response(now, id, &r.encode_to_vec(), own);
        }
    }
    panic!("no such request");
}

#[test]
fn an_offer_naming_a_chunk_twice_is_refused() {
    let store = open(&MemStore::new(), 0);
    store.put_many(&chunks(0..300)).expect("put");
    let empty = open(&MemStore::new(), 1);
    let historical = |m: &request::Message| matches!(m, request::Message::Get(g) if g.end != 0);
    let (mut core, id, get) = core_asking(&store, &empty, historical);
    // Answer the Get honestly but with its first address doubled.
    let Ok(Answer::Reply(Response {
        message: Some(response::Message::Offer(mut offer)),
    })) = serve::answer(&store, &Address([9; 32]), &get.encode_to_vec())
    else {
        panic!("an offer");
    };
    let first = offer.addresses[..32].to_vec();
    offer.addresses = [first.clone(), first].concat();
    let bytes = Response::new(response::Message::Offer(offer)).encode_to_vec();
    core.handle_response(Instant::now(), id, &bytes, empty.as_ref());
    let mut faults = Vec::new();
    while let Some(output) = core.poll_output() {
        if let Output::Penalize { fault, .. } = output {
            faults.push(fault);
        }
    }
    assert_eq!(faults, [Fault::Malformed("offered a chunk twice")]);
}

proptest::proptest! {
    /// Whatever a peer sends, as a request or as an answer, neither side panics, and a node
    /// that got garbage for an answer penalizes the sender.
    #[test]
    fn garbage_from_a_peer_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
        let mem = MemStore::new();
        let store = open(&mem, 0);
        store.put_many(&chunks(0..300)).expect("put");
        let _ = serve::answer(&store, &Address([9; 32]), &bytes);
        let empty = open(&MemStore::new(), 1);
        let kinds: [fn(&request::Message) -> bool; 3] = [
            |m| matches!(m, request::Message::Cursors(_)),
            |m| matches!(m, request::Message::Get(_)),
            |m| matches!(m, request::Message::Want(_)),
        ];
        for kind in kinds {
            let (mut core, id, _) = core_asking(&store, &empty, kind);
            let before = core.stats().delivered;
            core.handle_response(Instant::now(), id, &bytes, empty.as_ref());
            let mut penalized = false;
            while let Some(output) = core.poll_output() {
                penalized |= matches!(output, Output::Penalize { .. });
            }
            // Random bytes are never a valid answer here (a valid Cursors answer has 32
            // cursors, a valid offer addresses of the bin, a valid delivery the wanted chunks);
            // the empty answer decodes as an empty message, also refused.
            proptest::prop_assert!(penalized, "garbage accepted as an answer");
            proptest::prop_assert_eq!(core.stats().delivered, before);
        }
    }
}
