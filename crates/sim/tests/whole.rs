//! Whole nodes on the simulator: every node runs the overlay, the stream cores and the
//! replica layer on one store and one set of connections, as the node runtime does. Replica
//! members sync only where the overlay connected them, and dial the members it did not
//! through the overlay's known peers.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tributary_chunk::{Address, Chunk};
use tributary_replica::schedule::ScheduleConfig;
use tributary_replica::syncgroup::Spec;
use tributary_sim::{ReplicaLayerConfig, Sim, SimConfig, seed};

const NODES: usize = 48;
const DB: &str = "whole";
const COLLECTION: &str = "notes";

fn upload_random_chunks(sim: &mut Sim, rng: &mut StdRng, n: usize) -> Vec<Address> {
    let mut uploaded = Vec::new();
    for _ in 0..n / 25 {
        let batch: Vec<Chunk> = (0..25)
            .map(|_| {
                let payload: [u8; 32] = rng.random();
                Chunk::new(32, &payload).expect("chunk")
            })
            .collect();
        let at = rng.random_range(0..sim.len());
        sim.upload(at, &batch).expect("uploads");
        uploaded.extend(batch.iter().map(Chunk::address));
    }
    uploaded
}

/// Starts `n` full nodes a tenth of a second apart, each bootstrapping from node 0.
fn join_full_nodes(sim: &mut Sim, n: usize) {
    sim.add_node(false).expect("starts");
    for _ in 1..n {
        sim.run_for(Duration::from_millis(100)).expect("runs");
        let i = sim.add_node(false).expect("starts");
        sim.bootstrap(i, 0);
    }
}

/// Node 0 creates syncgroup `sg` of `members` (node 0 first, its admin); the others join
/// through it out of band, as a join grant the admin signed.
fn syncgroup(sim: &mut Sim, members: &[usize]) {
    let ids: Vec<_> = members
        .iter()
        .map(|&m| sim.replica_id(m).expect("replicas on"))
        .collect();
    let spec = Spec {
        name: "sg".into(),
        description: String::new(),
        collections: vec![COLLECTION.into()],
        readers: Vec::new(),
        writers: ids.clone(),
        admins: vec![ids[0]],
    };
    let admin = members[0];
    let now = sim.replica_now_ms(admin);
    let engine = sim.replica_mut(admin).expect("up");
    engine.create_syncgroup(now, DB, spec).expect("created");
    sim.replica_joined(admin, DB, None).expect("tracked");
    for (&m, id) in members.iter().zip(&ids).skip(1) {
        let now = sim.replica_now_ms(admin);
        let engine = sim.replica_mut(admin).expect("up");
        let grant = engine.admin_join(now, DB, "sg", *id).expect("granted");
        sim.replica_mut(m)
            .expect("up")
            .accept_join(&grant)
            .expect("joined");
        sim.replica_joined(m, DB, Some(admin)).expect("tracked");
    }
}

/// Each of `writers` puts `rows` rows named after it and `round`.
fn write_rows(sim: &mut Sim, writers: &[usize], round: u32, rows: u32) {
    for &w in writers {
        for k in 0..rows {
            let now = sim.replica_now_ms(w);
            let key = format!("r{round}-n{w}-{k}");
            let engine = sim.replica_mut(w).expect("up");
            engine
                .put(now, DB, COLLECTION, &key, key.as_bytes())
                .expect("put");
        }
        sim.replica_wrote(w, DB).expect("news");
    }
}

/// Whether every member that is up holds `expected` rows, the same on each.
fn members_agree(sim: &Sim, members: &[usize], expected: usize) -> bool {
    let mut first = None;
    for &m in members {
        let Some(engine) = sim.replica(m) else {
            continue;
        };
        let rows = engine.scan(DB, COLLECTION, "").expect("scan");
        if rows.len() != expected {
            return false;
        }
        match &first {
            None => first = Some(rows),
            Some(f) if *f != rows => return false,
            Some(_) => {}
        }
    }
    true
}

#[test]
fn whole_nodes_pull_chunks_and_replicate_over_the_overlay_through_crashes() {
    let seed = seed(31);
    let mut config = SimConfig::new(seed);
    config.replica = Some(ReplicaLayerConfig {
        schedule: ScheduleConfig {
            interval: Duration::from_secs(2),
            ..ScheduleConfig::default()
        },
        ..ReplicaLayerConfig::default()
    });
    let mut sim = Sim::new(config);
    let mut rng = StdRng::seed_from_u64(seed);
    join_full_nodes(&mut sim, NODES);
    let members: Vec<usize> = (0..NODES).step_by(4).collect();
    syncgroup(&mut sim, &members);
    let chunks = upload_random_chunks(&mut sim, &mut rng, 500);
    write_rows(&mut sim, &members, 0, 10);
    let expected = members.len() * 10;
    let start = sim.elapsed();
    let limit = start + Duration::from_secs(120);
    let agreed = sim
        .run_until(limit, |s| members_agree(s, &members, expected))
        .expect("runs");
    let agree_after = sim.elapsed() - start;
    let pulled = sim
        .run_until(limit, |s| s.missing_chunks(&chunks).is_empty())
        .expect("runs");
    let took = sim.elapsed() - start;
    let done = agreed && pulled;
    let stats = sim.replica_stats().expect("replicas on");
    println!(
        "{NODES} whole nodes: {} members agree {agree_after:?} after the writes, every chunk \
         is in its neighbourhood {took:?} after the uploads; {stats:?}; {:?}",
        members.len(),
        sim.stats()
    );
    assert!(
        done,
        "after 120 s: {} chunks missing, members agree: {}",
        sim.missing_chunks(&chunks).len(),
        members_agree(&sim, &members, expected)
    );
    assert!(stats.member_dials > 0, "no member was dialled");
    assert!(stats.penalties.is_empty(), "{:?}", stats.penalties);

    // Two members crash; the others write on; the two restart from their stores (no
    // bootnode: their overlays reconnect from the peers they persisted).
    let down = [members[2], members[5]];
    for &m in &down {
        sim.crash(m).expect("crashes");
    }
    let up: Vec<usize> = members
        .iter()
        .copied()
        .filter(|m| !down.contains(m))
        .collect();
    write_rows(&mut sim, &up, 1, 5);
    sim.run_for(Duration::from_secs(10)).expect("runs");
    for &m in &down {
        sim.restart(m).expect("restarts");
    }
    let expected = expected + up.len() * 5;
    let start = sim.elapsed();
    let done = sim
        .run_until(start + Duration::from_secs(300), |s| {
            members_agree(s, &members, expected)
        })
        .expect("runs");
    println!(
        "after 2 crashes: members agree {:?} after the restarts; {:?}",
        sim.elapsed() - start,
        sim.replica_stats()
    );
    assert!(done, "the members did not converge after the restarts");
}

/// Two members the overlay did not connect find each other through its known peers: the
/// joiner dials its admin, the overlay handshakes the dial, and the write arrives.
#[test]
fn members_the_overlay_did_not_connect_dial_each_other() {
    let seed = seed(32);
    let mut config = SimConfig::new(seed);
    config.replica = Some(ReplicaLayerConfig::default());
    let mut sim = Sim::new(config);
    join_full_nodes(&mut sim, NODES);
    sim.run_for(Duration::from_secs(20)).expect("runs");
    let (a, b) = (1..NODES)
        .flat_map(|a| (a + 1..NODES).map(move |b| (a, b)))
        .find(|&(a, b)| !sim.linked(a, b))
        .expect("an unconnected pair");
    syncgroup(&mut sim, &[a, b]);
    write_rows(&mut sim, &[a], 0, 3);
    let start = sim.elapsed();
    let done = sim
        .run_until(start + Duration::from_secs(60), |s| {
            members_agree(s, &[a, b], 3)
        })
        .expect("runs");
    let stats = sim.replica_stats().expect("replicas on");
    println!(
        "nodes {a} and {b}, not connected by the overlay: agree {:?} after the write, \
         {} member dials, linked now: {}",
        sim.elapsed() - start,
        stats.member_dials,
        sim.linked(a, b)
    );
    assert!(done, "the write never reached the other member");
    assert!(stats.member_dials > 0);
    assert!(sim.linked(a, b), "the member dial did not connect them");
}

/// Whole nodes are as deterministic as the rest: the same seed gives the same run, replica
/// layer included.
#[test]
fn the_same_seed_gives_the_same_whole_node_run() {
    let run = || {
        let seed = seed(34);
        let mut config = SimConfig::new(seed);
        config.loss = 0.05;
        config.replica = Some(ReplicaLayerConfig::default());
        let mut sim = Sim::new(config);
        let mut rng = StdRng::seed_from_u64(seed);
        join_full_nodes(&mut sim, 16);
        let members: Vec<usize> = (0..16).step_by(3).collect();
        syncgroup(&mut sim, &members);
        upload_random_chunks(&mut sim, &mut rng, 100);
        write_rows(&mut sim, &members, 0, 5);
        sim.run_for(Duration::from_secs(30)).expect("runs");
        format!("{:?} {:?}", sim.stats(), sim.replica_stats())
    };
    assert_eq!(run(), run());
}

/// Every full node serves the same state database; a light node syncs it from the full peers
/// it is connected to under 5% message loss, one of which lies in every way in turn and one of which answers half
/// of the time. The light node ends at the target root and only the liar is penalized.
#[test]
fn a_light_node_syncs_state_from_its_peers_and_the_liar_among_them_is_penalized() {
    use tributary_sim::StateConfig;
    use tributary_sim::statesync::{ServerKind, random_pairs};
    use tributary_statesync::client::ClientConfig;

    let seed = seed(33);
    let mut config = SimConfig::new(seed);
    config.loss = 0.05;
    config.state = Some(StateConfig {
        client: ClientConfig {
            key_limit: 500,
            ..ClientConfig::default()
        },
        ..StateConfig::default()
    });
    let mut sim = Sim::new(config);
    join_full_nodes(&mut sim, 24);
    for i in 0..24 {
        let pairs = random_pairs(&mut StdRng::seed_from_u64(seed), 20_000);
        sim.state_db(i)
            .expect("state on")
            .commit(pairs)
            .expect("commits");
    }
    let target = sim.state_db(0).expect("state on").root();
    let client = sim.add_node(true).expect("starts");
    sim.bootstrap(client, 0);
    sim.run_for(Duration::from_secs(10)).expect("runs");
    let peers: Vec<usize> = (0..24).filter(|&p| sim.linked(client, p)).collect();
    assert!(peers.len() >= 3, "the light node has only {peers:?}");
    let (liar, flaky) = (peers[1], peers[2]);
    sim.set_server_kind(liar, ServerKind::EveryLie);
    sim.set_server_kind(flaky, ServerKind::Flaky);
    sim.start_state_sync(client, target).expect("starts");
    let start = sim.elapsed();
    let done = sim
        .run_until(start + Duration::from_secs(120), |s| {
            s.state_sync_done().expect("client")
        })
        .expect("runs");
    let stats = sim.state_stats().expect("state on");
    println!(
        "light node, {} full peers (liar {liar}, flaky {flaky}): synced 20,000 keys in {:?}; \
         {stats:?}",
        peers.len(),
        sim.elapsed() - start
    );
    assert!(done, "not synced within 120 s");
    assert_eq!(sim.state_sync_root(), Some(target));
    assert!(
        stats.penalties.get(&liar).copied().unwrap_or(0) > 0,
        "the liar got away"
    );
    assert_eq!(
        stats.penalties.keys().copied().collect::<Vec<_>>(),
        [liar],
        "an honest peer was penalized"
    );
}

/// A partition splits whole nodes in two for 30 s while members on both sides write the same
/// rows, two of them with clocks minutes off; after the partition heals, the overlay
/// reconnects and every member ends with the same rows (last writer wins everywhere alike).
#[test]
fn whole_nodes_converge_after_a_partition_with_skewed_clocks() {
    let seed = seed(35);
    let mut config = SimConfig::new(seed);
    config.replica = Some(ReplicaLayerConfig::default());
    let mut sim = Sim::new(config);
    join_full_nodes(&mut sim, 32);
    let members: Vec<usize> = (0..32).step_by(4).collect();
    syncgroup(&mut sim, &members);
    sim.set_replica_skew(members[1], 5 * 60 * 1000);
    sim.set_replica_skew(members[6], -4 * 60 * 1000);
    write_rows(&mut sim, &members, 0, 4);
    sim.run_for(Duration::from_secs(20)).expect("runs");
    let groups: Vec<u32> = (0..32).map(|i| u32::from(i >= 16)).collect();
    sim.partition(&groups).expect("partitions");
    // Both sides write the same keys: conflicts to resolve at the heal.
    for round in 1..=3 {
        for &m in &members {
            let now = sim.replica_now_ms(m);
            let engine = sim.replica_mut(m).expect("up");
            engine
                .put(
                    now,
                    DB,
                    COLLECTION,
                    "contested",
                    format!("{m}-{round}").as_bytes(),
                )
                .expect("put");
            sim.replica_wrote(m, DB).expect("news");
        }
        sim.run_for(Duration::from_secs(10)).expect("runs");
    }
    sim.heal();
    let expected = members.len() * 4 + 1;
    let start = sim.elapsed();
    let done = sim
        .run_until(start + Duration::from_secs(300), |s| {
            members_agree(s, &members, expected)
        })
        .expect("runs");
    let stats = sim.replica_stats().expect("replicas on");
    println!(
        "partition of 30 s, 2 skewed clocks: members agree {:?} after the heal; \
         {} conflicts found; {} member dials",
        sim.elapsed() - start,
        stats.conflicts,
        stats.member_dials
    );
    assert!(done, "the members did not converge after the heal");
    assert!(stats.conflicts > 0, "the partition made no conflict");
}
