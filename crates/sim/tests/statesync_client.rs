//! The state-sync client driven against in-process servers (`server::handle` on a source
//! MerkleDB), as x/sync's sync tests: it reaches the target root from an empty database, from a
//! database holding stale keys, after a restart, and after the target moves mid-sync; peers that
//! lie are penalized and nothing they send reaches the store; timeouts are retried elsewhere.
//!
//! Requests are answered in a random (seeded) order, one at a time, on a simulated clock: a
//! step-by-step driver that lets a test act between any two answers (move the target, crash
//! the client after exactly N answers). `statesync.rs` runs the same client on the simulator's
//! network instead, with latency, loss and timeouts. Both corrupt answers with the simulator's
//! [`serve_as`](tributary_sim::statesync::serve_as).

#[path = "../../merkle/tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::seed;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tributary_merkle::{BatchOp, Config, EMPTY_ROOT, Hash, MerkleDb};
use tributary_sim::statesync::{LIES, ServerError, ServerKind, random_pairs, serve_as};
use tributary_statesync::client::{Client, ClientConfig, ClientError};
use tributary_statesync::server::{MAX_BYTES_LIMIT, MAX_KEY_LIMIT};
use tributary_store::MemStore;

/// How a simulated peer answers (the simulator's server kinds).
type Peer = ServerKind;

#[derive(Default, Debug)]
struct Stats {
    range_requests: usize,
    change_requests: usize,
    /// How often each key arrived in an answer that was delivered.
    received: HashMap<Vec<u8>, u32>,
}

impl Stats {
    fn fetched_twice(&self) -> usize {
        self.received.values().filter(|n| **n > 1).count()
    }
}

struct Net {
    source: MerkleDb,
    peers: Vec<Peer>,
    rng: StdRng,
    stats: Stats,
}

fn open(store: &Arc<MemStore>) -> MerkleDb {
    MerkleDb::open(store.clone(), Config::default()).expect("open db")
}

/// Changes a third of `source`'s keys, deletes a third, and adds `n / 3` new ones.
fn churn(source: &MerkleDb, rng: &mut StdRng, n: usize) -> Hash {
    let root = source.root();
    let keys: Vec<Vec<u8>> = source
        .key_values(&root, None, None, usize::MAX)
        .expect("read source")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let mut ops: Vec<BatchOp> = keys
        .into_iter()
        .filter_map(|k| match rng.random_range(0..3) {
            0 => Some(BatchOp::Put(k, vec![rng.random(); 9])),
            1 => Some(BatchOp::Delete(k)),
            _ => None,
        })
        .collect();
    ops.extend(random_pairs(rng, n / 3));
    source.commit(ops).expect("commit churn")
}

impl Net {
    fn new(rng: &mut StdRng, keys: usize, peers: Vec<Peer>) -> Self {
        let source = open(&Arc::new(MemStore::new()));
        source.commit(random_pairs(rng, keys)).expect("fill source");
        Self {
            source,
            peers,
            rng: StdRng::seed_from_u64(rng.random()),
            stats: Stats::default(),
        }
    }

    /// The answer `peer` sends, or `None` for a timeout.
    fn answer(&mut self, peer: usize, request: &[u8]) -> Option<Vec<u8>> {
        let kind = match self.peers[peer] {
            Peer::Flaky if self.rng.random_bool(0.5) => Peer::Silent,
            Peer::Flaky => Peer::Honest,
            other => other,
        };
        let served = match serve_as(&self.source, kind, request, &mut self.rng) {
            Ok(served) => served,
            Err(ServerError::Declined) => return None,
            Err(e) => panic!("the client sent a request the server refuses: {e}"),
        };
        if served.is_range {
            self.stats.range_requests += 1;
        } else {
            self.stats.change_requests += 1;
        }
        self.count(served.keys.iter());
        served.bytes
    }

    fn count<'a>(&mut self, keys: impl Iterator<Item = &'a Vec<u8>>) {
        for key in keys {
            *self.stats.received.entry(key.clone()).or_default() += 1;
        }
    }
}

/// Runs the client until it is done (`Ok(true)`), `stop_after` answers were handled
/// (`Ok(false)`), or it fails. `on_answer` runs after each answer with the number handled.
fn drive(
    client: &mut Client<usize>,
    net: &mut Net,
    stop_after: usize,
    mut on_answer: impl FnMut(usize, &mut Client<usize>, &mut Net),
) -> Result<bool, ClientError> {
    let mut now = Instant::now();
    let mut pending = Vec::new();
    let mut answered = 0;
    while answered < stop_after {
        while let Some(out) = client.poll_request(now) {
            pending.push(out);
        }
        if pending.is_empty() {
            if client.is_done()? {
                return Ok(true);
            }
            let wake = client
                .next_wakeup()
                .expect("work that cannot go now waits on backoff");
            assert!(wake > now, "a ready item was not sent");
            now = wake;
            continue;
        }
        let out = pending.swap_remove(net.rng.random_range(0..pending.len()));
        match net.answer(out.peer, &out.bytes) {
            Some(bytes) => client.handle_response(now, out.id, &bytes)?,
            None => client.handle_failure(now, out.id),
        }
        now += Duration::from_millis(1);
        answered += 1;
        on_answer(answered, client, net);
    }
    Ok(false)
}

fn small_requests() -> ClientConfig {
    ClientConfig {
        key_limit: 200,
        ..ClientConfig::default()
    }
}

const STEPS: usize = 20_000;

#[test]
fn an_empty_database_reaches_the_target() {
    let mut rng = StdRng::seed_from_u64(seed("an_empty_database_reaches_the_target"));
    let mut net = Net::new(&mut rng, 6000, vec![Peer::Honest, Peer::Honest]);
    let target = net.source.root();
    let db = open(&Arc::new(MemStore::new()));
    let mut client = Client::new(db, target, vec![0, 1], small_requests()).expect("client");
    assert!(
        drive(&mut client, &mut net, STEPS, |_, _, _| {}).expect("sync"),
        "finished"
    );
    assert_eq!(client.db().root(), target);
    assert!(net.stats.range_requests >= 6000 / 200, "{:?}", net.stats);
    assert_eq!(net.stats.change_requests, 0);
}

#[test]
fn stale_keys_are_removed_and_changed_ones_fixed() {
    let mut rng = StdRng::seed_from_u64(seed("stale_keys_are_removed_and_changed_ones_fixed"));
    let mut net = Net::new(&mut rng, 3000, vec![Peer::Honest]);
    let target = net.source.root();
    let db = open(&Arc::new(MemStore::new()));
    // Half the source's keys with other values, plus keys the source never had.
    let root = net.source.root();
    let mut ops: Vec<BatchOp> = net
        .source
        .key_values(&root, None, None, usize::MAX)
        .expect("read")
        .into_iter()
        .step_by(2)
        .map(|(k, _)| BatchOp::Put(k, b"stale".to_vec()))
        .collect();
    ops.extend(random_pairs(&mut rng, 1000));
    db.commit(ops).expect("stale db");
    let mut client = Client::new(db, target, vec![0], small_requests()).expect("client");
    assert!(drive(&mut client, &mut net, STEPS, |_, _, _| {}).expect("sync"));
    assert_eq!(client.db().root(), target);
}

/// `findNextKey`: a database that already holds almost all of the target is fixed without
/// fetching what matches. Three keys differ among 20,000; with 256 keys per proof, fetching
/// everything would take at least 79 proofs.
#[test]
fn matching_subtrees_are_skipped_not_fetched() {
    let mut rng = StdRng::seed_from_u64(seed("matching_subtrees_are_skipped_not_fetched"));
    let mut net = Net::new(&mut rng, 20_000, vec![Peer::Honest]);
    let target = net.source.root();
    let pairs = net
        .source
        .key_values(&target, None, None, usize::MAX)
        .expect("read");
    let db = open(&Arc::new(MemStore::new()));
    let mut ops: Vec<BatchOp> = pairs
        .iter()
        .map(|(k, v)| BatchOp::Put(k.clone(), v.clone()))
        .collect();
    // One value changed, one key missing, one key the target does not have.
    ops[5_000] = BatchOp::Put(pairs[5_000].0.clone(), b"changed".to_vec());
    ops.remove(12_000);
    ops.push(BatchOp::Put(b"not in the target".to_vec(), b"x".to_vec()));
    db.commit(ops).expect("almost synced db");
    // The source holds no history of this database's root: it answers with range proofs.
    let config = ClientConfig {
        key_limit: 256,
        ..ClientConfig::default()
    };
    let mut client = Client::new(db, target, vec![0], config).expect("client");
    assert!(drive(&mut client, &mut net, STEPS, |_, _, _| {}).expect("sync"));
    assert_eq!(client.db().root(), target);
    let stats = client.stats();
    println!("{stats:?}");
    assert!(stats.skips > 0, "nothing skipped: {stats:?}");
    assert!(
        stats.succeeded <= 30,
        "{} proofs for three differences: {stats:?}",
        stats.succeeded
    );
}

#[test]
fn the_target_moves_mid_sync() {
    let mut rng = StdRng::seed_from_u64(seed("the_target_moves_mid_sync"));
    let mut net = Net::new(
        &mut rng,
        6000,
        vec![Peer::Honest, Peer::Honest, Peer::Honest],
    );
    let first = net.source.root();
    let db = open(&Arc::new(MemStore::new()));
    let mut client = Client::new(db, first, vec![0, 1, 2], small_requests()).expect("client");
    let mut churn_rng = StdRng::seed_from_u64(rng.random());
    let mut targets = vec![first];
    let done = drive(&mut client, &mut net, STEPS, |answered, client, net| {
        // Move the target twice, while requests for the old one are still in flight.
        if answered == 10 || answered == 25 {
            let next = churn(&net.source, &mut churn_rng, 6000);
            targets.push(next);
            client.update_target(next).expect("update target");
        }
    })
    .expect("sync");
    assert!(done);
    assert_eq!(targets.len(), 3);
    assert_eq!(client.db().root(), targets[2]);
    assert!(
        client.penalties().is_empty(),
        "honest answers to an old target are not lies: {:?}",
        client.penalties()
    );
    assert!(
        net.stats.change_requests > 0,
        "finished ranges were brought over with change proofs: {:?}",
        net.stats
    );
}

#[test]
fn crashes_at_random_points_fetch_nothing_twice() {
    let mut rng = StdRng::seed_from_u64(seed("crashes_at_random_points_fetch_nothing_twice"));
    let mut net = Net::new(
        &mut rng,
        100_000,
        vec![Peer::Honest, Peer::Flaky, Peer::Honest],
    );
    let target = net.source.root();
    let source_keys = net
        .source
        .key_values(&target, None, None, usize::MAX)
        .expect("read source")
        .len();
    let config = ClientConfig {
        key_limit: 500,
        ..ClientConfig::default()
    };
    // A client dropped between answers loses its memory and its requests in flight; only what
    // it committed (keys and progress record, in one write) survives in the store.
    let store = Arc::new(MemStore::new());
    let mut crashes = 0;
    loop {
        let mut client =
            Client::new(open(&store), target, vec![0, 1, 2], config.clone()).expect("client");
        let answers = rng.random_range(1..25);
        if drive(&mut client, &mut net, answers, |_, _, _| {}).expect("sync") {
            break;
        }
        crashes += 1;
        // Without resuming, runs this short would never finish.
        assert!(crashes < 200, "no progress across restarts");
    }
    assert!(crashes >= 5, "crashed {crashes} times");
    assert_eq!(open(&store).root(), target);
    assert_eq!(net.stats.received.len(), source_keys, "every key arrived");
    assert_eq!(net.stats.fetched_twice(), 0, "after {crashes} crashes");

    // Restarted at the target: nothing to do.
    let mut client = Client::new(open(&store), target, vec![0], config.clone()).expect("client");
    assert!(client.poll_request(Instant::now()).is_none());
    assert!(client.is_done().expect("at the target"));
    drop(client);

    // A database changed outside sync no longer matches its record: it is synced whole, and
    // still ends at the target.
    let db = open(&store);
    db.commit([BatchOp::Put(b"outside".to_vec(), b"sync".to_vec())])
        .expect("commit");
    let mut client = Client::new(db, target, vec![0], config).expect("client");
    assert!(drive(&mut client, &mut net, STEPS, |_, _, _| {}).expect("sync"));
    assert_eq!(client.db().root(), target);
}

#[test]
fn liars_are_penalized_and_timeouts_retried() {
    let mut rng = StdRng::seed_from_u64(seed("liars_are_penalized_and_timeouts_retried"));
    let peers = [LIES.as_slice(), &[Peer::Silent, Peer::Flaky, Peer::Honest]].concat();
    let mut net = Net::new(&mut rng, 20_000, peers.clone());
    let first = net.source.root();
    let db = open(&Arc::new(MemStore::new()));
    let ids = (0..peers.len()).collect();
    let mut client = Client::new(db, first, ids, small_requests()).expect("client");
    let mut churn_rng = StdRng::seed_from_u64(rng.random());
    let mut last = first;
    let done = drive(&mut client, &mut net, STEPS, |answered, client, net| {
        if answered == 40 {
            // Liars must also be caught in change proofs.
            last = churn(&net.source, &mut churn_rng, 20_000);
            client.update_target(last).expect("update target");
        }
    })
    .expect("sync");
    assert!(done);
    assert_eq!(client.db().root(), last);
    assert!(
        net.stats.change_requests > 0,
        "{:?}",
        net.stats.change_requests
    );
    let penalties = client.penalties();
    let stats = client.stats();
    assert_eq!(
        stats.rejected,
        penalties.values().map(|p| u64::from(*p)).sum::<u64>()
    );
    // Every refusal is counted by its kind; lies about contents are proofs that do not
    // verify, garbage is malformed.
    let rejections = client.rejections();
    assert_eq!(
        rejections.values().sum::<u64>(),
        stats.rejected,
        "{rejections:?}"
    );
    assert!(
        rejections.get("invalid_proof").copied().unwrap_or(0) > 0,
        "{rejections:?}"
    );
    assert!(
        rejections.get("malformed").copied().unwrap_or(0) > 0,
        "{rejections:?}"
    );
    assert!(client.last_rejection().is_some());
    assert!(
        stats.failed > 0,
        "the silent and flaky peers timed out: {stats:?}"
    );
    assert_eq!(
        stats.requests,
        stats.succeeded + stats.failed + stats.rejected,
        "{stats:?}"
    );
    assert!(stats.keys >= 20_000, "{stats:?}");
    for (i, peer) in peers.iter().enumerate() {
        let got = penalties.get(&i).copied().unwrap_or(0);
        if peer.lies() {
            assert!(got > 0, "{peer:?} is penalized: {penalties:?}");
        } else {
            assert_eq!(got, 0, "{peer:?} is not penalized");
        }
    }
}

#[test]
fn nothing_from_liars_reaches_the_store() {
    let mut rng = StdRng::seed_from_u64(seed("nothing_from_liars_reaches_the_store"));
    let mut net = Net::new(&mut rng, 2000, LIES.to_vec());
    let db = open(&Arc::new(MemStore::new()));
    let target = net.source.root();
    let mut client =
        Client::new(db, target, (0..LIES.len()).collect(), small_requests()).expect("client");
    assert!(!drive(&mut client, &mut net, 300, |_, _, _| {}).expect("no local failure"));
    assert_eq!(client.db().root(), EMPTY_ROOT, "no lie was committed");
    assert!(
        client.penalties().values().sum::<u32>() == 300,
        "every lie was penalized: {:?}",
        client.penalties()
    );
}

#[test]
fn an_empty_target_clears_the_database() {
    let mut rng = StdRng::seed_from_u64(seed("an_empty_target_clears_the_database"));
    let db = open(&Arc::new(MemStore::new()));
    db.commit(random_pairs(&mut rng, 500)).expect("fill");
    let mut client = Client::new(db, EMPTY_ROOT, vec![0], ClientConfig::default()).expect("client");
    assert!(client.poll_request(Instant::now()).is_none());
    assert!(client.is_done().expect("empty"));
    assert_eq!(client.db().root(), EMPTY_ROOT);
}

#[test]
fn a_client_needs_peers_and_valid_limits() {
    let store = Arc::new(MemStore::new());
    let err = Client::<usize>::new(
        open(&store),
        EMPTY_ROOT,
        Vec::new(),
        ClientConfig::default(),
    )
    .err();
    assert!(matches!(err, Some(ClientError::NoPeers)), "{err:?}");
    let invalid = [
        ClientConfig {
            work_limit: 0,
            ..ClientConfig::default()
        },
        ClientConfig {
            key_limit: 0,
            ..ClientConfig::default()
        },
        ClientConfig {
            key_limit: MAX_KEY_LIMIT + 1,
            ..ClientConfig::default()
        },
        ClientConfig {
            bytes_limit: 0,
            ..ClientConfig::default()
        },
        ClientConfig {
            bytes_limit: MAX_BYTES_LIMIT + 1,
            ..ClientConfig::default()
        },
    ];
    for config in invalid {
        let err = Client::new(open(&store), EMPTY_ROOT, vec![0], config.clone()).err();
        assert!(
            matches!(err, Some(ClientError::InvalidConfig)),
            "{config:?}: {err:?}"
        );
    }
}

/// A database of another branch factor than the peers': the first proof says so, and the sync
/// stops with an error naming both factors instead of penalizing honest peers forever.
#[test]
fn a_branch_factor_mismatch_stops_the_sync_with_both_factors() {
    let mut rng = StdRng::seed_from_u64(seed("a_branch_factor_mismatch_stops_the_sync"));
    let mut net = Net::new(&mut rng, 500, vec![Peer::Honest]);
    net.source = MerkleDb::open(
        Arc::new(MemStore::new()),
        Config {
            branch_factor: tributary_merkle::BranchFactor::TwoFiftySix,
            ..Config::default()
        },
    )
    .expect("open bf256");
    net.source
        .commit(random_pairs(&mut rng, 500))
        .expect("fill");
    let target = net.source.root();
    let db = open(&Arc::new(MemStore::new()));
    let mut client = Client::new(db, target, vec![0], small_requests()).expect("client");
    let err = drive(&mut client, &mut net, STEPS, |_, _, _| {}).expect_err("mismatch");
    assert!(
        matches!(
            err,
            ClientError::BranchFactorMismatch {
                ours: 16,
                theirs: 256
            }
        ),
        "{err}"
    );
    assert!(
        client.penalties().is_empty(),
        "the honest peer was penalized"
    );
}
