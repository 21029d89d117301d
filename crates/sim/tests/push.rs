//! Push-sync and retrieval together on the simulator, as a user sees the network: files
//! uploaded at random nodes (light ones too) are pushed to their neighbourhoods with a valid
//! receipt per chunk, and download byte for byte at every other node. Also: 10% loss, crashes
//! at random times, receipt forgers and wrong-data forwarders, coalesced reads, and the hop
//! limit for a chunk that does not exist. Limits are a few times what the default seed takes
//! (each test prints it).

use std::collections::HashMap;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tributary_chunk::file::{ChunkSink, ChunkSource, Joiner, Splitter, StoreError};
use tributary_chunk::{Address, Chunk, proximity};
use tributary_sim::pull::Lie;
use tributary_sim::{Sim, SimConfig, seed};
use tributary_stream::retrieval::RetrievalError;

/// A file as the splitter makes it: its bytes, its reference and its chunks.
struct File {
    bytes: Vec<u8>,
    reference: Address,
    chunks: Vec<Chunk>,
}

#[derive(Default)]
struct Collect(Vec<Chunk>);

impl ChunkSink for Collect {
    fn put(&mut self, chunk: Chunk) -> Result<(), StoreError> {
        self.0.push(chunk);
        Ok(())
    }
}

struct Map(HashMap<Address, Vec<u8>>);

impl ChunkSource for Map {
    fn get(&self, address: &Address) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.0.get(address).cloned())
    }
}

fn file(rng: &mut StdRng, len: usize) -> File {
    let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
    let mut splitter = Splitter::new(Collect::default());
    splitter.write(&bytes).expect("splits");
    let (reference, Collect(chunks)) = splitter.finish().expect("splits");
    File {
        bytes,
        reference,
        chunks,
    }
}

/// `full` full and `light` light nodes joined through node 0, run until every table is
/// healthy; loss starts afterwards.
fn network(seed: u64, (full, light): (usize, usize), loss: f64) -> Sim {
    let mut sim = Sim::new(SimConfig::new(seed));
    sim.add_node(false).expect("starts");
    for k in 1..full + light {
        let i = sim.add_node(k >= full).expect("starts");
        sim.bootstrap(i, 0);
        sim.run_for(Duration::from_millis(100)).expect("runs");
    }
    let healthy = sim
        .run_until(Duration::from_secs(120), Sim::all_healthy)
        .expect("runs");
    assert!(healthy, "the overlay did not settle");
    sim.set_loss(loss);
    sim
}

/// Uploads each file at a random node (of `uploaders`), pushes until every push has ended
/// (retrying failed ones up to twice, as an upload does); asserts every chunk got a receipt
/// whose storer is of its neighbourhood and holds it.
fn upload(sim: &mut Sim, rng: &mut StdRng, files: &[File], uploaders: &[usize], limit: Duration) {
    let mut pending: Vec<(usize, Chunk, u64)> = Vec::new();
    for f in files {
        let at = uploaders[rng.random_range(0..uploaders.len())];
        let tokens = sim.push_upload(at, &f.chunks).expect("uploads");
        pending.extend(
            f.chunks
                .iter()
                .cloned()
                .zip(tokens)
                .map(|(c, t)| (at, c, t)),
        );
    }
    let start = sim.elapsed();
    for round in 0..3 {
        let ended = sim
            .run_until(start + limit, |s| {
                pending.iter().all(|&(i, _, t)| s.pushed(i, t).is_some())
            })
            .expect("runs");
        assert!(ended, "pushes still running after {limit:?}");
        let failed: Vec<(usize, Chunk)> = pending
            .iter()
            .filter(|&&(i, _, t)| sim.pushed(i, t).is_some_and(|r| r.is_err()))
            .map(|(i, c, _)| (*i, c.clone()))
            .collect();
        println!(
            "push round {round}: {} of {} failed",
            failed.len(),
            pending.len()
        );
        for (i, c) in failed.iter().take(3) {
            let why = pending
                .iter()
                .find(|(j, d, _)| j == i && d == c)
                .and_then(|&(j, _, t)| sim.pushed(j, t));
            println!(
                "  {} at node {i}: {why:?}; {:?}; connected {:?}",
                c.address(),
                sim.push_stats(*i),
                sim.node(*i).map(|n| n.table().depth())
            );
        }
        let mut next = Vec::new();
        for (i, c) in failed {
            let t = sim
                .push_upload(i, std::slice::from_ref(&c))
                .expect("uploads");
            next.push((i, c, t[0]));
        }
        pending.retain(|&(i, _, t)| sim.pushed(i, t).is_some_and(|r| r.is_ok()));
        let ok = pending.clone();
        check_receipts(sim, &ok);
        if next.is_empty() {
            return;
        }
        pending = next;
    }
    panic!(
        "{} chunks without a receipt after three pushes",
        pending.len()
    );
}

/// Each receipt's storer has the chunk in its neighbourhood (by its depth now) and, if
/// running, holds it.
fn check_receipts(sim: &Sim, pushed: &[(usize, Chunk, u64)]) {
    let by_overlay: HashMap<Address, usize> = (0..sim.len())
        .filter_map(|i| sim.node(i).map(|n| (n.overlay(), i)))
        .collect();
    for &(i, ref c, t) in pushed {
        let r = sim.pushed(i, t).expect("ended").expect("receipted");
        assert_eq!(r.address, c.address());
        let Some(&storer) = by_overlay.get(&r.storer) else {
            continue; // crashed since
        };
        let depth = sim.node(storer).expect("running").table().depth();
        assert!(
            proximity(&r.storer, &c.address()) + 1 >= depth,
            "storer {storer} at proximity {} with depth {depth}",
            proximity(&r.storer, &c.address())
        );
        assert!(sim.has_chunk(storer, &c.address()), "the storer holds it");
    }
}

/// Every node of `readers` reads every file through retrieval, all at once (reads that fail
/// are tried again up to twice, as a user would); returns the (reader, file) reads that
/// failed for good.
fn download_everywhere(sim: &mut Sim, files: &[File], readers: &[usize], limit: Duration) -> usize {
    // (reader, file) → the chunks it got.
    let mut got: HashMap<(usize, usize), HashMap<Address, Vec<u8>>> = HashMap::new();
    let mut missing: Vec<(usize, usize, Address)> = readers
        .iter()
        .flat_map(|&r| {
            files
                .iter()
                .enumerate()
                .flat_map(move |(f, file)| file.chunks.iter().map(move |c| (r, f, c.address())))
        })
        .collect();
    for _ in 0..3 {
        let reads: Vec<(usize, usize, Address, u64)> = missing
            .iter()
            .map(|&(r, f, a)| (r, f, a, sim.retrieve(r, a).expect("reads")))
            .collect();
        let start = sim.elapsed();
        sim.run_until(start + limit, |s| {
            reads
                .iter()
                .all(|&(r, _, _, t)| s.retrieved(r, t).is_some())
        })
        .expect("runs");
        missing.clear();
        for (r, f, a, t) in reads {
            match sim.retrieved_chunk(r, t) {
                Some(c) => {
                    got.entry((r, f)).or_default().insert(a, c.into_data());
                }
                None => missing.push((r, f, a)),
            }
        }
        if missing.is_empty() {
            break;
        }
    }
    let mut failed = 0;
    for &r in readers {
        for (f, file) in files.iter().enumerate() {
            let chunks = got.remove(&(r, f)).unwrap_or_default();
            if !joins_to(&chunks, file) {
                failed += 1;
            }
        }
    }
    failed
}

fn joins_to(chunks: &HashMap<Address, Vec<u8>>, f: &File) -> bool {
    let source = Map(chunks.clone());
    if source.0.len() < f.chunks.len() {
        return false;
    }
    let mut out = Vec::new();
    Joiner::new(&source, f.reference)
        .and_then(|j| j.read_all(&mut out))
        .is_ok()
        && out == f.bytes
}

fn running(sim: &Sim) -> Vec<usize> {
    (0..sim.len()).filter(|&i| sim.node(i).is_some()).collect()
}

fn files_everywhere(loss: f64, default_seed: u64) {
    let seed = seed(default_seed);
    let mut sim = network(seed, (64, 4), loss);
    let mut rng = StdRng::seed_from_u64(seed);
    let files: Vec<File> = (0..3).map(|_| file(&mut rng, 60_000)).collect();
    let all: Vec<usize> = (0..sim.len()).collect();
    upload(&mut sim, &mut rng, &files, &all, Duration::from_secs(60));
    let pushed = sim.elapsed();
    let failed = download_everywhere(&mut sim, &files, &all, Duration::from_secs(60));
    println!(
        "3 files of 60,000 bytes, {:.0}% loss: pushed by {pushed:?}, read at all 68 nodes \
         by {:?}; {failed} reads failed",
        loss * 100.0,
        sim.elapsed()
    );
    assert_eq!(failed, 0);
}

#[test]
fn files_uploaded_anywhere_download_byte_for_byte_everywhere() {
    files_everywhere(0.0, 41);
}

#[test]
fn files_upload_and_download_under_ten_percent_loss() {
    files_everywhere(0.1, 42);
}

#[test]
fn files_survive_nodes_crashing_at_random_times() {
    let seed = seed(43);
    let mut sim = network(seed, (64, 0), 0.0);
    let mut rng = StdRng::seed_from_u64(seed);
    let files: Vec<File> = (0..3).map(|_| file(&mut rng, 60_000)).collect();
    // 7 nodes (10.9%; not node 0) crash at random moments of the first 20 s and come back
    // 10 s later.
    let mut victims = std::collections::BTreeSet::new();
    while victims.len() < 7 {
        victims.insert(rng.random_range(1..64usize));
    }
    let mut crashes: Vec<(Duration, usize)> = victims
        .into_iter()
        .map(|node| {
            let at = sim.elapsed() + Duration::from_millis(rng.random_range(0..20_000));
            (at, node)
        })
        .collect();
    crashes.sort();
    let uploaders: Vec<usize> = (0..64).collect();
    let mut tokens = Vec::new();
    for f in &files {
        let at = uploaders[rng.random_range(0..64)];
        tokens.push((at, sim.push_upload(at, &f.chunks).expect("uploads")));
    }
    for &(at, node) in &crashes {
        sim.run_until(at, |_| false).expect("runs");
        if sim.node(node).is_some() {
            sim.crash(node).expect("crashes");
        }
    }
    sim.run_for(Duration::from_secs(10)).expect("runs");
    for &(_, node) in &crashes {
        sim.restart(node).expect("restarts");
        sim.bootstrap(node, 0);
    }
    let settled = sim.elapsed() + Duration::from_secs(120);
    assert!(sim.run_until(settled, Sim::all_healthy).expect("runs"));
    // Pushes that failed while their storer was down are pushed again, as an upload retries.
    for (f, (at, toks)) in files.iter().zip(&tokens) {
        let failed: Vec<Chunk> = f
            .chunks
            .iter()
            .zip(toks)
            .filter(|&(_, &t)| sim.pushed(*at, t).is_none_or(|r| r.is_err()))
            .map(|(c, _)| c.clone())
            .collect();
        println!("{} chunks to push again", failed.len());
        let depths: Vec<u8> = running(&sim)
            .iter()
            .map(|&i| sim.node(i).expect("running").table().depth())
            .collect();
        println!("depths {depths:?}");
        if sim.node(*at).is_some() && !failed.is_empty() {
            upload(
                &mut sim,
                &mut rng,
                &[File {
                    bytes: vec![],
                    reference: f.reference,
                    chunks: failed,
                }],
                &[*at],
                Duration::from_secs(60),
            );
        }
    }
    let readers = running(&sim);
    let failed = download_everywhere(&mut sim, &files, &readers, Duration::from_secs(60));
    println!(
        "after 7 nodes crashed: {failed} of {} reads failed",
        readers.len() * files.len()
    );
    assert_eq!(failed, 0);
}

#[test]
fn receipt_forgers_and_wrong_data_forwarders_are_penalized_and_routed_around() {
    let seed = seed(44);
    let mut sim = network(seed, (64, 0), 0.0);
    let mut rng = StdRng::seed_from_u64(seed);
    let forgers: Vec<usize> = (1..64).filter(|i| i % 10 == 3).collect();
    let corrupters: Vec<usize> = (1..64).filter(|i| i % 10 == 7).collect();
    for &i in &forgers {
        sim.set_lie(i, Lie::ForgedReceipt);
    }
    for &i in &corrupters {
        sim.set_lie(i, Lie::WrongChunk);
    }
    let liars: Vec<Address> = forgers
        .iter()
        .chain(&corrupters)
        .map(|&i| sim.node(i).expect("running").overlay())
        .collect();
    let honest: Vec<usize> = (0..64).filter(|i| i % 10 != 3 && i % 10 != 7).collect();
    let files: Vec<File> = (0..3).map(|_| file(&mut rng, 60_000)).collect();
    upload(&mut sim, &mut rng, &files, &honest, Duration::from_secs(60));
    let penalties = sim.push_penalties();
    println!(
        "{} forgers, {} corrupters: {} push penalties",
        forgers.len(),
        corrupters.len(),
        penalties.len()
    );
    assert!(!penalties.is_empty(), "no liar was ever on a path");
    for (by, peer, _) in &penalties {
        if honest.contains(by) {
            assert!(liars.contains(peer), "node {by} penalized an honest peer");
        }
    }
}

#[test]
fn twenty_readers_of_one_chunk_send_at_most_one_request_per_hop() {
    let seed = seed(45);
    let mut config = SimConfig::new(seed);
    config.pull_sync = false;
    let mut sim = Sim::new(config);
    sim.add_node(false).expect("starts");
    for _ in 1..64 {
        let i = sim.add_node(false).expect("starts");
        sim.bootstrap(i, 0);
        sim.run_for(Duration::from_millis(100)).expect("runs");
    }
    assert!(
        sim.run_until(Duration::from_secs(120), Sim::all_healthy)
            .expect("runs")
    );
    let mut rng = StdRng::seed_from_u64(seed);
    let c = Chunk::new(8, &rng.random::<[u8; 8]>()).expect("chunk");
    let holder = (0..64)
        .min_by_key(|&i| {
            let o = sim.node(i).expect("running").overlay();
            o.0.iter()
                .zip(c.address().0.iter())
                .map(|(a, b)| a ^ b)
                .collect::<Vec<u8>>()
        })
        .expect("nodes");
    sim.place(holder, std::slice::from_ref(&c)).expect("places");
    let readers: Vec<usize> = (0..64).filter(|&i| i != holder).take(20).collect();
    let reads: Vec<(usize, u64)> = readers
        .iter()
        .map(|&r| (r, sim.retrieve(r, c.address()).expect("reads")))
        .collect();
    let start = sim.elapsed();
    sim.run_until(start + Duration::from_secs(30), |s| {
        reads.iter().all(|&(i, t)| s.retrieved(i, t).is_some())
    })
    .expect("runs");
    assert!(
        reads
            .iter()
            .all(|&(i, t)| sim.retrieved(i, t) == Some(Ok(c.address())))
    );
    let most = sim.most_requests_per_link(&c.address());
    println!(
        "20 readers at once: {} requests in all, at most {most} per link",
        sim.retrieval_requests()
    );
    assert_eq!(most, 1, "a link carried the same request twice");
}

#[test]
fn a_chunk_that_does_not_exist_is_a_clean_not_found() {
    let seed = seed(46);
    let mut sim = network(seed, (64, 0), 0.0);
    let mut rng = StdRng::seed_from_u64(seed);
    let absent: Vec<Address> = (0..20)
        .map(|_| {
            Chunk::new(8, &rng.random::<[u8; 8]>())
                .expect("chunk")
                .address()
        })
        .collect();
    let reads: Vec<(usize, u64)> = absent
        .iter()
        .map(|a| {
            let r = rng.random_range(0..64);
            (r, sim.retrieve(r, *a).expect("reads"))
        })
        .collect();
    let start = sim.elapsed();
    let ended = sim
        .run_until(start + Duration::from_secs(60), |s| {
            reads.iter().all(|&(i, t)| s.retrieved(i, t).is_some())
        })
        .expect("runs");
    assert!(ended, "reads of absent chunks did not end");
    let took = sim.elapsed() - start;
    println!(
        "20 absent chunks: all ended within {took:?}, {} requests",
        sim.retrieval_requests()
    );
    for &(i, t) in &reads {
        match sim.retrieved(i, t) {
            Some(Err(RetrievalError::NotFound(_) | RetrievalError::HopLimit(_))) => {}
            other => panic!("an absent chunk read as {other:?}"),
        }
    }
    assert!(
        took < Duration::from_secs(10),
        "not found took {took:?}: it timed out instead"
    );
}
