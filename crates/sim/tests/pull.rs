//! Pull-sync scenarios on the simulator, with the overlay core running beside it.
//!
//! The god's-eye rule every scenario ends on: every running full node holds every uploaded
//! chunk whose proximity to the node is at least the node's depth. Limits are a few times what
//! the default seed takes (each test prints it), so a regression that slows syncing fails.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tributary_chunk::{Address, Chunk};
use tributary_sim::pull::Lie;
use tributary_sim::{Sim, SimConfig, seed};
use tributary_stream::pull::Fault;
use tributary_wire::PULL_BATCH;

fn chunks(rng: &mut StdRng, n: usize) -> Vec<Chunk> {
    (0..n)
        .map(|_| {
            let payload: [u8; 32] = rng.random();
            Chunk::new(32, &payload).expect("chunk")
        })
        .collect()
}

/// Starts `n` nodes a tenth of a second apart through node 0, uploading `per_join` chunks
/// at a random running node after each join; returns what was uploaded.
fn join_uploading(sim: &mut Sim, rng: &mut StdRng, n: usize, per_join: usize) -> Vec<Address> {
    let mut uploaded = Vec::new();
    sim.add_node(false).expect("starts");
    for _ in 1..n {
        sim.run_for(Duration::from_millis(100)).expect("runs");
        let i = sim.add_node(false).expect("starts");
        sim.bootstrap(i, 0);
        let at = rng.random_range(0..sim.len());
        let batch = chunks(rng, per_join);
        sim.upload(at, &batch).expect("uploads");
        uploaded.extend(batch.iter().map(Chunk::address));
    }
    uploaded
}

fn upload_at_random(sim: &mut Sim, rng: &mut StdRng, n: usize) -> Vec<Address> {
    let mut uploaded = Vec::new();
    for batch in chunks(rng, n).chunks(50) {
        let at = rng.random_range(0..sim.len());
        sim.upload(at, batch).expect("uploads");
        uploaded.extend(batch.iter().map(Chunk::address));
    }
    uploaded
}

/// Runs until the god's-eye rule holds for `chunks`, at most `limit` from now.
fn sync_within(sim: &mut Sim, chunks: &[Address], limit: Duration) -> Duration {
    let start = sim.elapsed();
    let done = sim
        .run_until(start + limit, |s| s.missing_chunks(chunks).is_empty())
        .expect("runs");
    let missing = sim.missing_chunks(chunks);
    assert!(
        done,
        "{} (node, chunk) pairs missing after {limit:?}, e.g. {:?}; {:?}; historical streams {}",
        missing.len(),
        &missing[..missing.len().min(5)],
        sim.stats(),
        sim.historical_streams()
    );
    sim.elapsed() - start
}

fn sixty_four_nodes(loss: f64, default_seed: u64, limit: Duration) {
    let seed = seed(default_seed);
    let mut config = SimConfig::new(seed);
    config.loss = loss;
    let mut sim = Sim::new(config);
    let mut rng = StdRng::seed_from_u64(seed);
    // 1,000 chunks during the joins, 1,000 after.
    let mut uploaded = join_uploading(&mut sim, &mut rng, 64, 16);
    uploaded.extend(upload_at_random(&mut sim, &mut rng, 2000 - uploaded.len()));
    let took = sync_within(&mut sim, &uploaded, limit);
    let report = sim.pull_report();
    println!(
        "64 nodes, {} chunks, loss {loss}: synced {took:?} after the last upload; \
         {} chunks received in all, {} twice; {:?}",
        uploaded.len(),
        report.received.iter().sum::<u64>(),
        report.transferred_twice,
        sim.stats()
    );
    assert_eq!(report.transferred_twice, 0, "a chunk was transferred twice");
    assert!(report.penalties.is_empty(), "{:?}", report.penalties);
}

#[test]
fn sixty_four_nodes_pull_every_chunk_into_its_neighbourhood() {
    sixty_four_nodes(0.0, 1, Duration::from_secs(120));
}

#[test]
fn sixty_four_nodes_pull_every_chunk_under_ten_percent_loss() {
    sixty_four_nodes(0.1, 2, Duration::from_secs(800));
}

#[test]
fn a_node_that_joins_after_the_uploads_catches_up_through_historical_sync() {
    let seed = seed(3);
    let mut sim = Sim::new(SimConfig::new(seed));
    let mut rng = StdRng::seed_from_u64(seed);
    join_uploading(&mut sim, &mut rng, 24, 0);
    let uploaded = upload_at_random(&mut sim, &mut rng, 1000);
    sync_within(&mut sim, &uploaded, Duration::from_secs(120));
    let late = sim.add_node(false).expect("starts");
    sim.bootstrap(late, 0);
    let took = sync_within(&mut sim, &uploaded, Duration::from_secs(120));
    let received = sim.pull_report().received[late];
    println!("the late node caught up {took:?} after joining, with {received} chunks");
    assert!(received > 0, "the late node received nothing");
    assert_eq!(sim.pull_report().transferred_twice, 0);
}

#[test]
fn nodes_killed_mid_sync_resume_from_their_intervals() {
    let seed = seed(4);
    let mut sim = Sim::new(SimConfig::new(seed));
    let mut rng = StdRng::seed_from_u64(seed);
    join_uploading(&mut sim, &mut rng, 24, 0);
    sim.run_for(Duration::from_secs(10)).expect("runs");
    let uploaded = upload_at_random(&mut sim, &mut rng, 2000);
    // A little sync, then a quarter of the nodes die and come back.
    sim.run_for(Duration::from_millis(300)).expect("runs");
    let victims: Vec<usize> = (0..sim.len()).filter(|i| i % 4 == 1).collect();
    let before: Vec<u64> = victims
        .iter()
        .map(|&v| sim.pull_report().received[v])
        .collect();
    for &v in &victims {
        sim.crash(v).expect("crashes");
    }
    sim.run_for(Duration::from_secs(2)).expect("runs");
    for &v in &victims {
        sim.restart(v).expect("restarts");
        sim.bootstrap(v, 0);
    }
    let took = sync_within(&mut sim, &uploaded, Duration::from_secs(180));
    let report = sim.pull_report();
    let twice = report.transferred_twice;
    println!(
        "{} nodes killed mid-sync (having received {before:?}); synced {took:?} after; \
         {twice} chunks transferred twice",
        victims.len()
    );
    assert!(
        before.iter().any(|n| *n > 0),
        "the crash came before any sync"
    );
    // Resumed from their intervals: a node starting afresh is offered every bin id up to each
    // upstream's cursor; the restarted ones were offered only what their intervals lacked.
    let (offered, fresh): (u64, u64) = victims
        .iter()
        .map(|&v| {
            let offered = sim.pull_stats(v).map_or(0, |s| s.offered);
            let fresh: u64 = sim.pull_progress(v).iter().map(|p| p.cursor).sum();
            (offered, fresh)
        })
        .fold((0, 0), |(a, b), (c, d)| (a + c, b + d));
    println!(
        "after the restart the victims were offered {offered} of the {fresh} bin ids a fresh start is"
    );
    assert!(offered < fresh, "offered {offered}, a fresh start {fresh}");
    // A stream loses at most the batch it was receiving.
    assert!(
        twice <= (victims.len() * PULL_BATCH) as u64,
        "{twice} chunks transferred twice"
    );
}

#[test]
fn a_peer_that_lies_is_penalized_and_sync_completes_from_honest_peers() {
    for (lie, default_seed) in [(Lie::WrongChunk, 5), (Lie::Unrequested, 6)] {
        let seed = seed(default_seed);
        let mut sim = Sim::new(SimConfig::new(seed));
        let mut rng = StdRng::seed_from_u64(seed);
        join_uploading(&mut sim, &mut rng, 16, 0);
        sim.run_for(Duration::from_secs(10)).expect("runs");
        // The liar and an honest node hold the same chunks.
        let liar = 3;
        let batch = chunks(&mut rng, 600);
        sim.upload(liar, &batch).expect("uploads");
        sim.upload(7, &batch).expect("uploads");
        sim.set_lie(liar, lie);
        let uploaded: Vec<Address> = batch.iter().map(Chunk::address).collect();
        let took = sync_within(&mut sim, &uploaded, Duration::from_secs(120));
        let report = sim.pull_report();
        println!(
            "{lie:?}: synced {took:?}; penalties {:?}",
            report.penalties.len()
        );
        assert!(
            !report.penalties.is_empty(),
            "{lie:?}: nobody was penalized"
        );
        for (_, peer, fault) in &report.penalties {
            assert_eq!(
                Some(*peer),
                sim.node(liar).map(tributary_overlay::Overlay::overlay)
            );
            match (lie, fault) {
                (Lie::WrongChunk, Fault::Invalid(_))
                | (Lie::Unrequested, Fault::Unrequested { .. }) => {}
                other => panic!("unexpected fault {other:?}"),
            }
        }
        let fake = Chunk::new(9, b"not asked").expect("chunk").address();
        assert!(
            (0..sim.len()).all(|i| i == liar || !sim.has_chunk(i, &fake)),
            "{lie:?}: the liar's chunk was stored"
        );
    }
}

/// The same seed gives the same run, also in another process: nothing the cores or the
/// simulator iterate over may depend on a per-process hash seed (each `HashMap` gets its own,
/// so two runs in one process differ where one would).
#[test]
fn the_same_seed_gives_the_same_pull_sync() {
    let run = || {
        let seed = seed(21);
        let mut config = SimConfig::new(seed);
        config.loss = 0.05;
        let mut sim = Sim::new(config);
        let mut rng = StdRng::seed_from_u64(seed);
        let mut uploaded = join_uploading(&mut sim, &mut rng, 24, 10);
        uploaded.extend(upload_at_random(&mut sim, &mut rng, 200));
        let took = sync_within(&mut sim, &uploaded, Duration::from_secs(300));
        let report = sim.pull_report();
        (took, sim.stats(), report.received)
    };
    assert_eq!(run(), run());
}
