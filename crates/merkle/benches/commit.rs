//! MerkleDB commit and proof benchmark, Tributary beside firewood 0.3.1 (merkledb hashing) in
//! the same run. Not part of CI: `cargo bench -p tributary-merkle --bench commit`.
//!
//! Workload (issue #2): `BENCH_KEYS` (default 1,000,000) random 32-byte keys with 32-byte
//! values, committed in batches of 10,000 and in one batch, `BENCH_RUNS` (default 3) times
//! each, alternating the two stores, with every run and the medians printed; then range proofs
//! of 2,048 keys
//! generated (both) and verified (Tributary; firewood 0.3.1's `verify_range_proof` is a
//! `todo!()`). Tributary fsyncs every commit (`Durability::Sync`) and its time includes the
//! final write of pending trie nodes; firewood 0.3.1 never calls fsync. Prints keys/s and the
//! ratio.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use firewood::api::{Db as _, DbView as _, Proposal as _};
use firewood::db::{BatchOp as FwOp, Db, DbConfig};
use firewood_storage::NodeHashAlgorithm;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tributary_merkle::{BatchOp, BranchFactor, Config, MerkleDb};
use tributary_store::Durability;

const SEED: u64 = 0x7121_B07A;
const PROOF_KEYS: usize = 2048;

fn pairs(n: usize) -> Vec<([u8; 32], [u8; 32])> {
    let mut rng = StdRng::seed_from_u64(SEED);
    (0..n).map(|_| (rng.random(), rng.random())).collect()
}

fn tributary_load(
    pairs: &[([u8; 32], [u8; 32])],
    batch: usize,
) -> (Duration, MerkleDb, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = MerkleDb::open_dir(dir.path(), Config::default(), Durability::Sync).expect("open");
    let start = Instant::now();
    for chunk in pairs.chunks(batch) {
        db.commit(
            chunk
                .iter()
                .map(|(k, v)| BatchOp::Put(k.to_vec(), v.to_vec())),
        )
        .expect("commit");
    }
    (start.elapsed(), db, dir)
}

fn firewood_load(
    pairs: &[([u8; 32], [u8; 32])],
    batch: usize,
) -> (Duration, Db, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = DbConfig::builder()
        .node_hash_algorithm(NodeHashAlgorithm::MerkleDB)
        .truncate(true)
        .build();
    let db = Db::new(dir.path().join("fw"), cfg).expect("open firewood");
    let start = Instant::now();
    for chunk in pairs.chunks(batch) {
        let ops: Vec<FwOp<Vec<u8>, Vec<u8>>> = chunk
            .iter()
            .map(|(k, v)| FwOp::Put {
                key: k.to_vec(),
                value: v.to_vec(),
            })
            .collect();
        db.propose(ops).expect("propose").commit().expect("commit");
    }
    (start.elapsed(), db, dir)
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn proofs(db: &MerkleDb, fw: &Db, n: usize) {
    let mut rng = StdRng::seed_from_u64(SEED + 1);
    let starts: Vec<[u8; 32]> = (0..n).map(|_| rng.random()).collect();
    let root = db.root();
    let t = Instant::now();
    let generated: Vec<_> = starts
        .iter()
        .map(|s| {
            db.range_proof(&root, Some(s), None, PROOF_KEYS)
                .expect("range proof")
        })
        .collect();
    let ours_gen = t.elapsed();
    let t = Instant::now();
    for (s, p) in starts.iter().zip(&generated) {
        p.verify(Some(s), None, &root, BranchFactor::Sixteen)
            .expect("verifies");
    }
    let ours_verify = t.elapsed();
    let bytes: usize = generated.iter().map(|p| p.to_bytes().len()).sum();
    let fw_root = fw.root_hash().expect("firewood root");
    let view = fw.revision(fw_root).expect("firewood revision");
    let limit = NonZeroUsize::new(PROOF_KEYS);
    let t = Instant::now();
    for s in &starts {
        view.range_proof(Some(s.as_slice()), None::<&[u8]>, limit)
            .expect("firewood range proof");
    }
    let fw_gen = t.elapsed();
    println!(
        "range proofs of {PROOF_KEYS} keys: generate {:>8.1}/s tributary, {:>8.1}/s firewood (ratio {:.2}); \
         verify {:>8.1}/s tributary, firewood 0.3.1 has no verifier; avg proof {} bytes",
        rate(n, ours_gen),
        rate(n, fw_gen),
        rate(n, ours_gen) / rate(n, fw_gen),
        rate(n, ours_verify),
        bytes / n.max(1)
    );
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let n: usize = std::env::var("BENCH_KEYS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let proof_count: usize = std::env::var("BENCH_PROOFS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
        .max(1);
    println!(
        "merkledb commit benchmark: {n} random 32-byte keys, 32-byte values, seed {SEED:#x}, {runs} runs each (alternating)"
    );
    let data = pairs(n);
    for batch in [10_000, n] {
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for run in 0..runs {
            let (t_ours, db, _dir) = tributary_load(&data, batch);
            let (t_theirs, fw, _fwdir) = firewood_load(&data, batch);
            assert_eq!(
                tributary_merkle::to_hex(&db.root()),
                tributary_merkle::to_hex(
                    &fw.root_hash()
                        .expect("root")
                        .as_ref()
                        .try_into()
                        .expect("32 bytes")
                ),
                "roots differ"
            );
            println!(
                "  run {run}: batches of {batch:>9}: tributary {:>6.2}s | firewood {:>6.2}s | ratio {:.2}x",
                t_ours.as_secs_f64(),
                t_theirs.as_secs_f64(),
                t_theirs.as_secs_f64() / t_ours.as_secs_f64()
            );
            if batch == 10_000 && run + 1 == runs {
                proofs(&db, &fw, proof_count);
            }
            ours.push(t_ours);
            theirs.push(t_theirs);
        }
        let (ours, theirs) = (median(ours), median(theirs));
        println!(
            "median, batches of {batch:>9}: tributary {:>6.2}s {:>9.0} keys/s | firewood {:>6.2}s {:>9.0} keys/s | ratio {:.2}x",
            ours.as_secs_f64(),
            rate(n, ours),
            theirs.as_secs_f64(),
            rate(n, theirs),
            theirs.as_secs_f64() / ours.as_secs_f64()
        );
    }
}
