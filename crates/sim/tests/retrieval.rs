//! Retrieval scenarios on the simulator, pull-sync off so that chunks stay where they are
//! put: a read travels toward the chunk's neighbourhood hop by hop and the chunk comes back.
//! Limits are a few times what the default seed takes (each test prints it).

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tributary_chunk::{Address, Chunk, proximity};
use tributary_sim::pull::Lie;
use tributary_sim::{Sim, SimConfig, seed};

fn chunks(rng: &mut StdRng, n: usize) -> Vec<Chunk> {
    (0..n)
        .map(|_| {
            let payload: [u8; 32] = rng.random();
            Chunk::new(32, &payload).expect("chunk")
        })
        .collect()
}

/// `n` full nodes joined through node 0, pull-sync off, run until every table is healthy.
fn network(seed: u64, loss: f64, n: usize) -> Sim {
    let mut config = SimConfig::new(seed);
    config.pull_sync = false;
    let mut sim = Sim::new(config);
    sim.add_node(false).expect("starts");
    for _ in 1..n {
        let i = sim.add_node(false).expect("starts");
        sim.bootstrap(i, 0);
        sim.run_for(Duration::from_millis(100)).expect("runs");
    }
    let healthy = sim
        .run_until(Duration::from_secs(120), Sim::all_healthy)
        .expect("runs");
    assert!(healthy, "the overlay did not settle");
    // Loss only once the overlay stands: these tests are about retrieval.
    sim.set_loss(loss);
    sim
}

fn overlay(sim: &Sim, i: usize) -> Address {
    sim.node(i).expect("running").overlay()
}

/// The node closest (XOR) to `a`.
fn closest(sim: &Sim, a: &Address) -> usize {
    (0..sim.len())
        .min_by_key(|&i| {
            let o = overlay(sim, i);
            let d: Vec<u8> = o.0.iter().zip(a.0.iter()).map(|(x, y)| x ^ y).collect();
            d
        })
        .expect("nodes")
}

/// Nodes whose neighbourhood holds `a` (proximity at least their depth).
fn neighbourhood(sim: &Sim, a: &Address) -> Vec<usize> {
    (0..sim.len())
        .filter(|&i| {
            let n = sim.node(i).expect("running");
            proximity(&n.overlay(), a) >= n.table().depth()
        })
        .collect()
}

/// Reads each chunk at a node that lacks it; runs until every read has ended (at most
/// `limit`); returns how many failed and how long it took.
fn read_all(
    sim: &mut Sim,
    rng: &mut StdRng,
    chunks: &[Chunk],
    limit: Duration,
) -> (usize, Duration) {
    let mut reads = Vec::new();
    for c in chunks {
        let reader = loop {
            let i = rng.random_range(0..sim.len());
            if !sim.has_chunk(i, &c.address()) {
                break i;
            }
        };
        reads.push((reader, sim.retrieve(reader, c.address()).expect("reads")));
    }
    let start = sim.elapsed();
    let ended = sim
        .run_until(start + limit, |s| {
            reads.iter().all(|&(i, t)| s.retrieved(i, t).is_some())
        })
        .expect("runs");
    assert!(ended, "reads still running after {limit:?}");
    let failed: Vec<_> = reads
        .iter()
        .filter_map(|&(i, t)| sim.retrieved(i, t).filter(Result::is_err))
        .collect();
    if !failed.is_empty() {
        println!("failed reads, e.g. {:?}", &failed[..failed.len().min(3)]);
    }
    (failed.len(), sim.elapsed() - start)
}

fn from_the_closest_node_only(loss: f64, default_seed: u64, limit: Duration) {
    let seed = seed(default_seed);
    let mut sim = network(seed, loss, 64);
    let mut rng = StdRng::seed_from_u64(seed);
    let chunks = chunks(&mut rng, 200);
    for c in &chunks {
        let at = closest(&sim, &c.address());
        sim.place(at, std::slice::from_ref(c)).expect("places");
    }
    let (failed, took) = read_all(&mut sim, &mut rng, &chunks, limit);
    let forwarded: u64 = (0..sim.len())
        .filter_map(|i| sim.retrieval_stats(i))
        .map(|s| s.forwarded)
        .sum();
    println!(
        "200 reads of chunks held by one node each, {:.0}% loss: {failed} failed, {took:?} of \
         virtual time, {} requests, {forwarded} forwards",
        loss * 100.0,
        sim.retrieval_requests()
    );
    assert_eq!(failed, 0, "every chunk is found at the node closest to it");
    assert!(forwarded > 0, "some reads took more than one hop");
    // Cache on forward: chunks now sit at nodes they were never put on besides the readers.
    let copies: usize = chunks
        .iter()
        .map(|c| {
            (0..sim.len())
                .filter(|&i| sim.holds(i, &c.address()))
                .count()
        })
        .sum();
    assert!(
        copies > 2 * chunks.len(),
        "{copies} copies: forwarders cached nothing"
    );
}

#[test]
fn every_chunk_is_retrieved_from_the_one_node_closest_to_it() {
    from_the_closest_node_only(0.0, 31, Duration::from_secs(30));
}

#[test]
fn retrieval_survives_ten_percent_loss() {
    from_the_closest_node_only(0.1, 32, Duration::from_secs(120));
}

#[test]
fn lying_neighbours_are_penalized_and_reads_complete_from_honest_ones() {
    let seed = seed(33);
    let mut sim = network(seed, 0.0, 48);
    let mut rng = StdRng::seed_from_u64(seed);
    let liars: Vec<usize> = (0..sim.len()).filter(|i| i % 6 == 1).collect();
    for &l in &liars {
        sim.set_lie(l, Lie::WrongChunk);
    }
    let liar_overlays: Vec<Address> = liars.iter().map(|&l| overlay(&sim, l)).collect();
    let chunks = chunks(&mut rng, 100);
    for c in &chunks {
        for i in neighbourhood(&sim, &c.address()) {
            sim.place(i, std::slice::from_ref(c)).expect("places");
        }
    }
    let (failed, took) = read_all(&mut sim, &mut rng, &chunks, Duration::from_secs(60));
    let penalties = sim.retrieval_penalties();
    println!(
        "100 reads, {} liars: {failed} failed, {took:?}, {} penalties",
        liars.len(),
        penalties.len()
    );
    assert_eq!(failed, 0, "honest neighbours hold every chunk");
    assert!(!penalties.is_empty(), "no liar was ever asked");
    for (_, peer, _) in &penalties {
        assert!(liar_overlays.contains(peer), "an honest peer was penalized");
    }
}

#[test]
fn many_readers_of_one_chunk_share_fetches() {
    let seed = seed(34);
    let mut sim = network(seed, 0.0, 64);
    let mut rng = StdRng::seed_from_u64(seed);
    let c = chunks(&mut rng, 1).remove(0);
    let holder = closest(&sim, &c.address());
    sim.place(holder, std::slice::from_ref(&c)).expect("places");
    let reads: Vec<(usize, u64)> = (0..sim.len())
        .filter(|&i| i != holder)
        .map(|i| (i, sim.retrieve(i, c.address()).expect("reads")))
        .collect();
    let ended = sim
        .run_until(sim.elapsed() + Duration::from_secs(30), |s| {
            reads.iter().all(|&(i, t)| s.retrieved(i, t).is_some())
        })
        .expect("runs");
    assert!(ended);
    assert!(
        reads
            .iter()
            .all(|&(i, t)| sim.retrieved(i, t) == Some(Ok(c.address()))),
        "every reader got the chunk"
    );
    let coalesced: u64 = (0..sim.len())
        .filter_map(|i| sim.retrieval_stats(i))
        .map(|s| s.coalesced)
        .sum();
    println!(
        "63 readers at once: {} requests, {coalesced} joined a running fetch",
        sim.retrieval_requests()
    );
    assert!(
        coalesced > 0,
        "forwarded requests joined the readers' own fetches"
    );
    assert!(
        sim.retrieval_requests() < 2 * 63,
        "one fetch per chunk per node"
    );
}
