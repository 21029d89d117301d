//! Overlay scenarios on the simulator: join, loss, partitions, crashes, refusals, determinism.
//!
//! "Healthy" is old Swarm's health held against the god's-eye view of the running nodes:
//! every node knows and is connected to all its nearest neighbours, its bins below depth hold
//! at least `min_bin_size` peers (or all there are), and its depth equals the depth the whole
//! network gives it.

use std::time::Duration;

use prost::Message;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tributary_sim::{Sim, SimConfig, seed};
use tributary_wire::overlay::{OverlayMessage, Peers, overlay_message};

/// Starts `n` nodes a tenth of a second apart, each bootstrapping through node 0.
fn join(sim: &mut Sim, n: usize) {
    sim.add_node(false).expect("starts");
    for _ in 1..n {
        sim.run_for(Duration::from_millis(100)).expect("runs");
        let i = sim.add_node(false).expect("starts");
        sim.bootstrap(i, 0);
    }
}

fn report(sim: &Sim) -> String {
    let unhealthy: Vec<String> = sim
        .health()
        .into_iter()
        .filter(|(_, h)| !h.is_healthy())
        .take(5)
        .map(|(i, h)| format!("node {i}: {h:?}"))
        .collect();
    format!(
        "after {:?}, {:?}; unhealthy: {unhealthy:#?}",
        sim.elapsed(),
        sim.stats()
    )
}

/// Runs until healthy, at most `limit` of virtual time from now; returns how long it took.
/// Each scenario's limit is a few times what its default seed takes (printed by each test;
/// `cargo nextest run -p tributary-sim --test overlay --no-capture`), so a regression that
/// slows healing fails rather than hides under a generous bound.
fn heal_within(sim: &mut Sim, limit: Duration) -> Duration {
    let start = sim.elapsed();
    let healthy = sim
        .run_until(start + limit, Sim::all_healthy)
        .expect("runs");
    assert!(healthy, "not healthy within {limit:?}: {}", report(sim));
    sim.elapsed() - start
}

#[test]
fn hundred_nodes_join_through_one_bootnode() {
    let mut sim = Sim::new(SimConfig::new(seed(1)));
    join(&mut sim, 100);
    let took = heal_within(&mut sim, Duration::from_secs(30));
    println!("healthy {took:?} after the last join; {:?}", sim.stats());
    // A minute later, past every pruning grace period: still healthy, and pruning has bounded
    // the bootnode's shallow bins, which every node joined through.
    sim.run_for(Duration::from_secs(60)).expect("runs");
    assert!(sim.all_healthy(), "{}", report(&sim));
    assert!(sim.stats().disconnects > 0, "nothing was pruned");
    let boot = sim.node(0).expect("running").topology();
    assert!(
        boot.bins[0].connected <= 16,
        "bin 0 of the bootnode: {}",
        boot.bins[0].connected
    );
}

#[test]
fn hundred_nodes_join_under_ten_percent_loss() {
    let mut config = SimConfig::new(seed(2));
    config.loss = 0.10;
    let mut sim = Sim::new(config);
    join(&mut sim, 100);
    let took = heal_within(&mut sim, Duration::from_secs(300));
    println!("healthy {took:?} after the last join; {:?}", sim.stats());
    assert!(sim.stats().lost > 0);
}

#[test]
fn a_partition_heals() {
    let seed = seed(3);
    let mut sim = Sim::new(SimConfig::new(seed));
    join(&mut sim, 60);
    heal_within(&mut sim, Duration::from_secs(300));
    let mut rng = StdRng::seed_from_u64(seed);
    let groups: Vec<u32> = (0..60).map(|_| rng.random_range(0..2)).collect();
    sim.partition(&groups).expect("partitions");
    sim.run_for(Duration::from_secs(120)).expect("runs");
    // Split, neither half is healthy against the whole network.
    assert!(
        !sim.all_healthy(),
        "healthy while partitioned: {}",
        report(&sim)
    );
    sim.heal();
    let took = heal_within(&mut sim, Duration::from_secs(120));
    println!(
        "healthy {took:?} after the partition healed; {:?}",
        sim.stats()
    );
}

#[test]
fn crashed_nodes_rejoin_from_their_persisted_peers() {
    let seed = seed(4);
    let mut sim = Sim::new(SimConfig::new(seed));
    join(&mut sim, 60);
    heal_within(&mut sim, Duration::from_secs(300));
    let mut rng = StdRng::seed_from_u64(seed);
    let mut victims: Vec<usize> = (1..60).collect();
    victims.shuffle(&mut rng);
    // The bootnode is among those that crash: nobody may need it to rejoin.
    victims.truncate(12);
    victims.push(0);
    assert_eq!(victims.len(), 13, "13 distinct nodes crash");
    for &v in &victims {
        sim.crash(v).expect("crashes");
    }
    sim.run_for(Duration::from_secs(30)).expect("runs");
    let before: Vec<_> = victims.iter().map(|&v| sim.node(v).is_none()).collect();
    assert!(before.iter().all(|&down| down));
    for &v in &victims {
        // No bootstrap call: the restarted node must find its peers in its own store.
        sim.restart(v).expect("restarts");
    }
    let took = heal_within(&mut sim, Duration::from_secs(30));
    println!(
        "healthy {took:?} after {} restarts; {:?}",
        victims.len(),
        sim.stats()
    );
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let run = |seed: u64| {
        let mut config = SimConfig::new(seed);
        config.loss = 0.05;
        let mut sim = Sim::new(config);
        join(&mut sim, 30);
        sim.run_for(Duration::from_secs(60)).expect("runs");
        let tables: Vec<_> = (0..30).map(|i| sim.node(i).map(|n| n.topology())).collect();
        (sim.stats(), tables)
    };
    let seed = seed(5);
    let (a, b) = (run(seed), run(seed));
    assert_eq!(a, b);
    assert_ne!(a.0, run(seed + 1).0, "another seed should give another run");
}

/// A peer that gossips an invalid record is disconnected and the record goes nowhere.
#[test]
fn forged_gossip_and_oversized_messages_are_refused() {
    let mut sim = Sim::new(SimConfig::new(seed(6)));
    join(&mut sim, 3);
    heal_within(&mut sim, Duration::from_secs(60));
    assert!(sim.linked(1, 2));
    // Node 1 claims node 2's overlay under its own key.
    let mut forged = sim
        .sign_record(1, 1, vec![b"evil".to_vec()])
        .expect("signs");
    let victim = sim.node(2).expect("running").overlay();
    forged.overlay = victim.0.to_vec();
    let message = OverlayMessage {
        message: Some(overlay_message::Message::Peers(Peers {
            peers: vec![forged],
        })),
    };
    let refusals = sim.node(0).expect("running").stats().refusals;
    sim.inject(1, 0, message.encode_to_vec());
    sim.run_for(Duration::from_millis(200)).expect("runs");
    assert!(!sim.linked(0, 1), "forger still connected");
    assert_eq!(sim.node(0).expect("running").stats().refusals, refusals + 1);
    // Node 0 still has node 2's genuine record.
    let record = sim
        .node(0)
        .expect("running")
        .table()
        .record(&victim)
        .cloned()
        .expect("known");
    assert!(!record.wire.underlays.contains(&b"evil".to_vec()));

    assert!(sim.linked(1, 2) || sim.linked(0, 2));
    let (a, b) = if sim.linked(1, 2) { (1, 2) } else { (0, 2) };
    let refusals = sim.node(b).expect("running").stats().refusals;
    sim.inject(
        a,
        b,
        vec![0u8; tributary_wire::MAX_OVERLAY_MESSAGE_BYTES + 1],
    );
    sim.run_for(Duration::from_millis(200)).expect("runs");
    assert!(!sim.linked(a, b), "oversized sender still connected");
    assert_eq!(sim.node(b).expect("running").stats().refusals, refusals + 1);
}
