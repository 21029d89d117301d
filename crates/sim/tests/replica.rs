//! Replicated databases at network scale in the simulator: 50 nodes, 5 overlapping
//! syncgroups, writers everywhere, partitions that heal, clocks minutes apart, crashes and
//! restarts, a revoked reader, a liar, and the log's size under pruning. Seeds are printed;
//! `TRIBUTARY_SEED` replays one.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tributary_replica::Op;
use tributary_sim::replica::{DB, GroupPlan, ReplicaSim, ReplicaSimConfig};
use tributary_sim::seed;

/// Five syncgroups of 15 over 50 nodes, each on its own collection, overlapping (node n is
/// in groups n % 5 and (n / 10) % 5, so most nodes are in two).
fn groups() -> Vec<GroupPlan> {
    (0..5)
        .map(|g| GroupPlan {
            members: (0..50)
                .filter(|n| n % 5 == g || (n / 10) % 5 == g)
                .collect(),
            collection: format!("c{g}"),
        })
        .collect()
}

fn member_groups(plans: &[GroupPlan], n: usize) -> Vec<usize> {
    (0..plans.len())
        .filter(|&g| plans[g].members.contains(&n))
        .collect()
}

/// Writes at random members for `rounds` of 1 s, some as batches across two collections.
fn write_round(
    sim: &mut ReplicaSim,
    rng: &mut StdRng,
    plans: &[GroupPlan],
    round: usize,
    written: &mut u64,
) {
    for _ in 0..10 {
        let n = rng.random_range(0..50);
        let mine = member_groups(plans, n);
        if mine.is_empty() || !sim.is_up(n) {
            continue;
        }
        let key = format!("k{}", rng.random_range(0..40));
        let value = format!("{n}@{round}").into_bytes();
        let ok = if mine.len() > 1 && rng.random_bool(0.2) {
            let ops: Vec<Op> = mine
                .iter()
                .map(|&g| Op::Put {
                    collection: plans[g].collection.clone(),
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect();
            sim.write_batch(n, &ops).expect("batch")
        } else {
            let g = mine[rng.random_range(0..mine.len())];
            sim.write(n, &plans[g].collection, &key, &value)
                .expect("write")
        };
        *written += u64::from(ok);
    }
}

/// Runs until every syncgroup's members agree, or `limit` of virtual time passes.
fn settle(sim: &mut ReplicaSim, limit: Duration) -> Duration {
    let start = sim.elapsed();
    while !sim.diverging_groups().expect("compare").is_empty() {
        assert!(
            sim.elapsed() - start < limit,
            "no convergence within {limit:?}: {:?}",
            sim.diverging_groups()
        );
        sim.run_for(Duration::from_secs(1)).expect("run");
    }
    sim.elapsed() - start
}

#[test]
fn fifty_nodes_converge_through_partitions_skew_and_crashes() {
    let seed = seed(12);
    let plans = groups();
    let config = ReplicaSimConfig {
        seed,
        nodes: 50,
        groups: plans.clone(),
        loss: 0.05,
        ..ReplicaSimConfig::default()
    };
    let mut sim = ReplicaSim::new(config).expect("sim");
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    for n in (0..50).step_by(7) {
        sim.set_skew(n, if n % 2 == 0 { 5 * 60_000 } else { -4 * 60_000 });
    }
    let mut written = 0;
    for round in 0..60 {
        if round == 10 {
            sim.partition(&(0..50).map(|n| u32::from(n >= 25)).collect::<Vec<_>>());
        }
        if round == 30 {
            sim.heal();
        }
        if round % 15 == 5 {
            for n in [3, 17, 29, 41] {
                sim.crash(n);
            }
        }
        if round % 15 == 9 {
            for n in [3, 17, 29, 41] {
                sim.restart(n).expect("restart");
            }
        }
        write_round(&mut sim, &mut rng, &plans, round, &mut written);
        sim.run_for(Duration::from_secs(1)).expect("run");
    }
    let took = settle(&mut sim, Duration::from_secs(600));
    let stats = sim.stats();
    println!(
        "{written} writes; converged {took:?} after the last; {} syncs ({} failed), {} news, {} frames, {} records applied, {} conflicts, {} messages lost",
        stats.syncs,
        stats.failed,
        stats.news,
        stats.frames,
        stats.records,
        stats.conflicts,
        stats.lost
    );
    assert!(
        stats.penalties.is_empty(),
        "honest nodes are never penalized: {:?}",
        stats.penalties
    );
    assert!(stats.conflicts > 0, "the scenario makes concurrent writes");
    for plan in &plans {
        let rows = sim.rows(plan.members[0], &plan.collection).expect("rows");
        assert!(!rows.is_empty(), "{} has rows", plan.collection);
    }
}

#[test]
fn a_revoked_reader_stops_receiving() {
    let seed = seed(13);
    let plans = vec![GroupPlan {
        members: vec![0, 1, 2, 3],
        collection: "c".into(),
    }];
    let mut sim = ReplicaSim::new(ReplicaSimConfig {
        seed,
        nodes: 4,
        groups: plans,
        ..ReplicaSimConfig::default()
    })
    .expect("sim");
    sim.write(0, "c", "before", b"1").expect("write");
    sim.run_for(Duration::from_secs(20)).expect("run");
    assert_eq!(
        sim.rows(3, "c").expect("rows").len(),
        1,
        "node 3 reads while a member"
    );
    let now = sim.now_ms(0);
    let ejected = sim.id(3);
    sim.engine(0).eject(now, DB, "sg0", ejected).expect("eject");
    sim.run_for(Duration::from_secs(20)).expect("run");
    for (i, key) in [(0, "after-0"), (1, "after-1"), (2, "after-2")] {
        sim.write(i, "c", key, b"2").expect("write");
    }
    sim.run_for(Duration::from_secs(60)).expect("run");
    let on_3: Vec<String> = sim
        .rows(3, "c")
        .expect("rows")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        on_3,
        ["before"],
        "nothing written after the ejection reaches node 3"
    );
    assert_eq!(
        sim.rows(1, "c").expect("rows").len(),
        4,
        "the others still sync"
    );
}

#[test]
fn forged_records_are_refused_and_the_liar_penalized() {
    let seed = seed(14);
    let plans = vec![GroupPlan {
        members: (0..6).collect(),
        collection: "c".into(),
    }];
    let mut sim = ReplicaSim::new(ReplicaSimConfig {
        seed,
        nodes: 6,
        groups: plans,
        ..ReplicaSimConfig::default()
    })
    .expect("sim");
    sim.set_liar(5);
    for i in 0..6 {
        sim.write(i, "c", &format!("k{i}"), b"honest")
            .expect("write");
    }
    sim.run_for(Duration::from_secs(120)).expect("run");
    let stats = sim.stats();
    assert!(
        stats.penalties.get(&5).is_some_and(|&p| p > 0),
        "the liar is penalized: {:?}",
        stats.penalties
    );
    assert_eq!(
        stats.penalties.keys().copied().collect::<Vec<_>>(),
        [5],
        "only the liar"
    );
    // Each lie backs the liar off at the node it lied to (2 s doubling to 60 s: asked at
    // most 7 times in 120 s), where an honest member is asked about 60 times.
    let asked = |n: usize| stats.asked.get(&n).copied().unwrap_or(0);
    println!("asks of each node: {:?}", stats.asked);
    assert!(
        asked(5) <= 5 * 7 && (0..5).all(|n| asked(n) > 40),
        "the liar is backed off: {:?}",
        stats.asked
    );
    for i in 0..5 {
        let rows = sim.rows(i, "c").expect("rows");
        assert_eq!(
            rows.len(),
            5,
            "node {i} has every honest row (node 5 only ever sends forgeries)"
        );
        assert!(
            rows.iter()
                .all(|(_, v)| v.as_deref() == Some(&b"honest"[..])),
            "no forgery applied"
        );
    }
}

#[test]
fn pruning_keeps_the_log_bounded_over_ten_thousand_rounds() {
    let seed = seed(15);
    let plans = vec![GroupPlan {
        members: (0..5).collect(),
        collection: "c".into(),
    }];
    let config = ReplicaSimConfig {
        seed,
        nodes: 5,
        groups: plans,
        sync_every: Duration::from_millis(500),
        ..ReplicaSimConfig::default()
    };
    let mut sim = ReplicaSim::new(config).expect("sim");
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut max_late, mut samples) = (0, Vec::new());
    for round in 0..10_000u32 {
        let n = rng.random_range(0..5);
        sim.write(
            n,
            "c",
            &format!("k{}", rng.random_range(0..20)),
            &round.to_le_bytes(),
        )
        .expect("write");
        sim.run_for(Duration::from_millis(200)).expect("run");
        if round % 1000 == 999 {
            let len = sim.log_len(0).expect("len");
            samples.push(len);
            if round >= 2000 {
                max_late = max_late.max(len);
            }
        }
    }
    println!("log records on node 0 every 1,000 rounds (20 rows, 5 writers): {samples:?}");
    assert!(max_late < 200, "the log stays bounded: {samples:?}");
    settle(&mut sim, Duration::from_secs(60));
}

#[test]
fn a_causally_later_write_with_an_older_clock_wins() {
    let seed = seed(16);
    let plans = vec![GroupPlan {
        members: vec![0, 1, 2],
        collection: "c".into(),
    }];
    let mut sim = ReplicaSim::new(ReplicaSimConfig {
        seed,
        nodes: 3,
        groups: plans,
        ..ReplicaSimConfig::default()
    })
    .expect("sim");
    sim.set_skew(0, 10 * 60_000);
    sim.write(0, "c", "k", b"fast clock, first").expect("write");
    sim.run_for(Duration::from_secs(30)).expect("run");
    assert_eq!(
        sim.rows(1, "c").expect("rows").len(),
        1,
        "node 1 has seen node 0's write"
    );
    sim.write(1, "c", "k", b"slow clock, after it")
        .expect("write");
    // Node 1's write follows node 0's (its parent), though its wall clock is 10 minutes behind.
    sim.run_for(Duration::from_secs(60)).expect("run");
    for i in 0..3 {
        assert_eq!(
            sim.rows(i, "c").expect("rows"),
            [("k".to_string(), Some(b"slow clock, after it".to_vec()))],
            "node {i}"
        );
    }
}

#[test]
fn news_brings_a_write_to_every_member_long_before_the_next_round() {
    let seed = seed(17);
    let plans = vec![GroupPlan {
        members: (0..10).collect(),
        collection: "c".into(),
    }];
    let mut sim = ReplicaSim::new(ReplicaSimConfig {
        seed,
        nodes: 10,
        groups: plans,
        // Rounds every 60 s: only news can bring a write within a second.
        sync_every: Duration::from_secs(60),
        ..ReplicaSimConfig::default()
    })
    .expect("sim");
    sim.run_for(Duration::from_secs(120)).expect("run");
    for writer in [0, 7] {
        let value = format!("from {writer}").into_bytes();
        sim.write(writer, "c", "k", &value).expect("write");
        sim.run_for(Duration::from_secs(1)).expect("run");
        for i in 0..10 {
            assert_eq!(
                sim.rows(i, "c").expect("rows"),
                [("k".to_string(), Some(value.clone()))],
                "node {i}, a second after node {writer} wrote"
            );
        }
    }
    println!("{} news, {} syncs", sim.stats().news, sim.stats().syncs);
}
