//! State sync on the simulator (x/sync's `Test_Sync_Result_Correct_Root` and more): a client
//! syncs 100,000 keys from three servers over links with latency and loss — an honest one, a
//! flaky one, and one lying in one of the seven ways — while the target moves; and a client
//! that crashes again and again resumes without fetching any key twice.

use std::time::Duration;

use tributary_sim::seed;
use tributary_sim::statesync::{ServerKind, SyncConfig, SyncSim};
use tributary_statesync::client::ClientConfig;

const KEYS: usize = 100_000;
/// Virtual time a sync may take: a few times the 11–27 s the default seeds take (each test
/// prints its own; `cargo nextest run -p tributary-sim --test statesync --no-capture`).
const LIMIT: Duration = Duration::from_secs(120);

fn with_liar(lie: ServerKind) {
    let seed = seed(100 + lie as u64);
    let mut config = SyncConfig::new(seed);
    config.loss = 0.05;
    config.client = ClientConfig {
        key_limit: 1000,
        ..ClientConfig::default()
    };
    let mut sim = SyncSim::new(
        config,
        KEYS,
        vec![ServerKind::Honest, lie, ServerKind::Flaky],
    )
    .expect("sim");
    // The target moves while the first requests are in flight.
    sim.move_target_at(Duration::from_millis(150), 30_000);
    assert!(
        sim.run(LIMIT).expect("syncs"),
        "not done within {LIMIT:?}: {:?}",
        sim.stats().lies
    );
    let stats = sim.stats();
    let final_target = *sim.targets().last().expect("a target");
    assert_eq!(sim.targets().len(), 2);
    assert_eq!(
        sim.client_root().expect("root"),
        final_target,
        "seed {seed}"
    );
    let penalties = sim.penalties();
    assert!(
        stats.lies.get(&lie).copied().unwrap_or(0) > 0,
        "{lie:?} never lied: {stats:?}"
    );
    assert!(
        penalties.get(&1).copied().unwrap_or(0) > 0,
        "{lie:?} not penalized: {penalties:?}"
    );
    assert_eq!(penalties.get(&0), None, "honest server penalized");
    assert_eq!(penalties.get(&2), None, "flaky server penalized");
    assert!(
        stats.change_requests > 0,
        "the move was not followed with change proofs"
    );
    println!(
        "{lie:?}: done at {:?} virtual; {} range and {} change requests, {} timeouts, {} lost, penalties {penalties:?}",
        sim.elapsed(),
        stats.range_requests,
        stats.change_requests,
        stats.timeouts,
        stats.lost
    );
}

#[test]
fn liar_adding_a_leaf() {
    with_liar(ServerKind::AddLeaf);
}

#[test]
fn liar_dropping_the_first_key() {
    with_liar(ServerKind::DropFirst);
}

#[test]
fn liar_dropping_a_middle_key() {
    with_liar(ServerKind::DropMiddle);
}

#[test]
fn liar_tampering_with_a_value() {
    with_liar(ServerKind::Tamper);
}

#[test]
fn liar_stripping_proof_nodes() {
    with_liar(ServerKind::StripProofs);
}

#[test]
fn liar_sending_empty_proofs() {
    with_liar(ServerKind::Empty);
}

#[test]
fn liar_sending_garbage() {
    with_liar(ServerKind::Garbage);
}

#[test]
fn crashes_at_random_points_resume_without_fetching_twice() {
    let seed = seed(200);
    let mut config = SyncConfig::new(seed);
    config.loss = 0.05;
    config.crash_every = Some((Duration::from_millis(50), Duration::from_millis(400)));
    config.client = ClientConfig {
        key_limit: 500,
        ..ClientConfig::default()
    };
    let mut sim = SyncSim::new(
        config,
        KEYS,
        vec![ServerKind::Honest, ServerKind::EveryLie, ServerKind::Flaky],
    )
    .expect("sim");
    assert!(sim.run(LIMIT).expect("syncs"), "not done within {LIMIT:?}");
    let stats = sim.stats();
    let target = sim.targets()[0];
    assert_eq!(sim.client_root().expect("root"), target, "seed {seed}");
    assert!(stats.crashes >= 5, "crashed only {} times", stats.crashes);
    assert_eq!(
        stats.received.len(),
        sim.source_len().expect("source"),
        "every key arrived"
    );
    assert_eq!(stats.fetched_twice(), 0, "after {} crashes", stats.crashes);
    assert!(
        sim.penalties().get(&1).copied().unwrap_or(0) > 0,
        "the liar was never caught"
    );
    println!(
        "{} crashes, {} timeouts, {} lost; done at {:?} virtual",
        stats.crashes,
        stats.timeouts,
        stats.lost,
        sim.elapsed()
    );
}

#[test]
fn the_same_seed_gives_the_same_sync() {
    let run = || {
        let mut config = SyncConfig::new(seed(300));
        config.loss = 0.1;
        config.crash_every = Some((Duration::from_millis(20), Duration::from_millis(200)));
        config.client = ClientConfig {
            key_limit: 100,
            ..ClientConfig::default()
        };
        let mut sim = SyncSim::new(
            config,
            5_000,
            vec![ServerKind::Honest, ServerKind::EveryLie, ServerKind::Flaky],
        )
        .expect("sim");
        assert!(sim.run(LIMIT).expect("syncs"));
        let s = sim.stats();
        (
            s.range_requests,
            s.change_requests,
            s.timeouts,
            s.lost,
            s.crashes,
            s.lies,
            sim.elapsed(),
        )
    };
    assert_eq!(run(), run());
}
