//! The pull-sync core against real chunk stores on the in-memory model: a small harness that
//! carries requests between cores instantly (the simulator in `tributary-sim` adds latency,
//! loss, crashes and the overlay).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use prost::Message;
use tributary_chunk::store::ChunkStore;
use tributary_chunk::{Address, Chunk};
use tributary_store::MemStore;
use tributary_stream::pull::{Class, Fault, Output, PullConfig, PullSync};
use tributary_stream::serve::{self, Answer};
use tributary_wire::pullsync::{Request, Response, request, response};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Lie {
    Honest,
    /// Delivers a chunk other than the one wanted.
    WrongChunk,
    /// Delivers one chunk more than wanted.
    Unrequested,
}

struct Node {
    overlay: Address,
    mem: MemStore,
    store: Arc<ChunkStore>,
    core: PullSync,
    lie: Lie,
    /// Live Gets waiting upstream: (downstream, id, bin, start).
    parked: Vec<(usize, u64, u8, u64)>,
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
    /// Every request sent: (from, class, is a want).
    sent: Vec<(usize, Class, bool)>,
    /// Chunks delivered per (node, address).
    received: HashMap<(usize, Address), u32>,
    penalties: Vec<(usize, Address, Fault)>,
}

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
                Node {
                    overlay: overlay(i),
                    mem,
                    store,
                    core: PullSync::new(overlay(i), PullConfig::default()),
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
        self.nodes[i].core = PullSync::new(self.nodes[i].overlay, PullConfig::default());
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
        for (from, id, bin, start) in parked {
            if serve::wake(&self.nodes[i].store, bin, start) {
                let get = Request::new(request::Message::Get(tributary_wire::pullsync::Get {
                    bin: u32::from(bin),
                    start,
                    end: 0,
                }));
                self.serve(i, from, id, &get.encode_to_vec());
            } else {
                self.nodes[i].parked.push((from, id, bin, start));
            }
        }
    }

    fn serve(&mut self, at: usize, from: usize, id: u64, bytes: &[u8]) {
        let node = &self.nodes[at];
        match serve::answer(&node.store, bytes).expect("honest requests") {
            Answer::Wait { bin, start } => self.nodes[at].parked.push((from, id, bin, start)),
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
                self.sent.push((i, class, is_want));
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
                records,
            } => {
                for c in &chunks {
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
        // The liar is not synced from again for a while.
        net.connect(0, 2);
        net.settle();
        assert_eq!(net.penalties.len(), 1);
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
        .filter(|(_, c, w)| *w && *c == Class::Historical)
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
        .filter(|(_, _, w)| *w)
        .map(|(_, c, _)| *c)
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
            .filter(|(from, _, want)| *want && *from == 6)
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

proptest::proptest! {
    /// Whatever a peer sends, as a request or as an answer, neither side panics, and a node
    /// that got garbage for an answer penalizes the sender.
    #[test]
    fn garbage_from_a_peer_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
        let mut net = Net::new(2);
        net.upload(0, &chunks(0..300));
        let _ = serve::answer(&net.nodes[0].store, &bytes);
        net.connect(0, 1);
        net.drain();
        // Answer node 1's first request (its cursors request) with the garbage.
        let first = net.queue.iter().find_map(|m| match m {
            Msg::Request { from: 1, id, .. } => Some(*id),
            _ => None,
        });
        let id = first.expect("node 1 asked for cursors");
        let node = &mut net.nodes[1];
        node.core.handle_response(net.now, id, &bytes, node.store.as_ref());
        let valid = matches!(
            Response::decode(bytes.as_slice()).map(|r| r.message),
            Ok(Some(response::Message::Cursors(c))) if c.cursors.len() == 32
        );
        let mut penalized = false;
        while let Some(output) = net.nodes[1].core.poll_output() {
            penalized |= matches!(output, Output::Penalize { .. });
        }
        proptest::prop_assert_eq!(penalized, !valid);
        let _ = tributary_stream::pull::decode_delivery(&bytes);
    }
}
