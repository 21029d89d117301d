//! Persistence on fjall: reopening keeps the root and the history (proofs at old roots still
//! work), history is pruned to its length, and a process killed during a commit reopens at the
//! previous or the new revision, never a mix.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tributary_merkle::{BatchOp, BranchFactor, Config, DbError, Hash, MerkleDb};
use tributary_store::Durability;

fn config(history_length: usize) -> Config {
    Config {
        branch_factor: BranchFactor::Sixteen,
        history_length,
        ..Config::default()
    }
}

fn batch(seed: u64, round: u64, n: usize) -> Vec<BatchOp> {
    let mut rng = StdRng::seed_from_u64(seed ^ round.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    (0..n)
        .map(|_| {
            let key: Vec<u8> = (0..rng.random_range(0..6))
                .map(|_| rng.random_range(0..8u8))
                .collect();
            if rng.random_bool(0.2) {
                BatchOp::Delete(key)
            } else {
                BatchOp::Put(
                    key,
                    (0..rng.random_range(0..40)).map(|_| rng.random()).collect(),
                )
            }
        })
        .collect()
}

fn fresh_root(db: &MerkleDb) -> Hash {
    let all = db
        .key_values(&db.root(), None, None, usize::MAX)
        .expect("scan");
    let copy = common::mem_db(db.branch_factor());
    copy.commit(all.into_iter().map(|(k, v)| BatchOp::Put(k, v)))
        .expect("rebuild")
}

/// The empty key (avalanchego allows it) survives a checkpoint and a reopen on fjall, which
/// refuses the empty store key: it once became one, panicked in the checkpoint on drop, and left
/// a database that never opened again.
#[test]
fn the_empty_key_survives_checkpoints_and_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = {
        let db = MerkleDb::open_dir(dir.path(), config(4), Durability::Sync).expect("open");
        db.commit([BatchOp::Put(Vec::new(), vec![1])])
            .expect("commit");
        let root = db
            .commit([BatchOp::Put(vec![0x10], vec![2])])
            .expect("commit");
        db.flush().expect("checkpoint with the empty key");
        root
    };
    let db = MerkleDb::open_dir(dir.path(), config(4), Durability::Sync).expect("reopen");
    assert_eq!(db.root(), root);
    assert_eq!(db.get(&[]).expect("get"), Some(vec![1]));
    assert_eq!(fresh_root(&db), root);
    db.commit([BatchOp::Delete(Vec::new())]).expect("delete");
    db.flush().expect("checkpoint deleting the empty key");
    assert_eq!(db.get(&[]).expect("get"), None);
}

#[test]
fn reopen_keeps_root_and_history() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut roots = Vec::new();
    {
        let db = MerkleDb::open_dir(dir.path(), config(4), Durability::Sync).expect("open");
        for round in 0..6 {
            roots.push(db.commit(batch(7, round, 50)).expect("commit"));
        }
    }
    let db = MerkleDb::open_dir(dir.path(), config(4), Durability::Sync).expect("reopen");
    assert_eq!(db.root(), roots[5]);
    assert_eq!(db.revision(), 6);
    assert_eq!(
        db.history().iter().map(|(_, h)| *h).collect::<Vec<_>>(),
        roots[2..].to_vec()
    );
    for old in &roots[2..5] {
        let proof = db
            .range_proof(old, None, None, 1000)
            .expect("proof at an old root after reopen");
        proof
            .verify(None, None, old, BranchFactor::Sixteen)
            .expect("verifies");
        let change = db
            .change_proof(old, &roots[5], None, None, 1000)
            .expect("change proof after reopen");
        assert!(!change.key_changes.is_empty());
    }
    assert!(matches!(
        db.range_proof(&roots[1], None, None, 10),
        Err(DbError::RootNotInHistory(_))
    ));
    assert_eq!(fresh_root(&db), db.root());
    drop(db);
    // A shorter history on reopen prunes the older records.
    let db = MerkleDb::open_dir(dir.path(), config(2), Durability::Sync).expect("reopen shorter");
    assert_eq!(db.history().len(), 2);
    assert!(matches!(
        db.range_proof(&roots[3], None, None, 10),
        Err(DbError::RootNotInHistory(_))
    ));
    drop(db);
    let wrong = Config {
        branch_factor: BranchFactor::TwoFiftySix,
        ..config(2)
    };
    assert!(matches!(
        MerkleDb::open_dir(dir.path(), wrong, Durability::Sync),
        Err(DbError::BranchFactorMismatch {
            stored: 16,
            requested: 256
        })
    ));
}

const CHILD_ENV: &str = "TRIBUTARY_CRASH_CHILD";
const TEST_NAME: &str = "killed_commit_reopens_at_a_whole_revision";

/// In the child: commit seeded batches forever, printing each root once its commit returned.
fn child_main(dir: &Path, seed: u64) {
    // Checkpoints every other commit, so the kill often lands in a background write.
    let cfg = Config {
        checkpoint_interval: 2,
        ..config(8)
    };
    let db = MerkleDb::open_dir(dir, cfg, Durability::Sync).expect("child open");
    for round in 0.. {
        let root = db.commit(batch(seed, round, 3000)).expect("child commit");
        println!("ROOT {}", tributary_merkle::to_hex(&root));
    }
}

#[test]
fn killed_commit_reopens_at_a_whole_revision() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        let seed = std::env::var("TRIBUTARY_CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1);
        child_main(Path::new(&dir), seed);
        return;
    }
    let seed = common::seed(TEST_NAME);
    let mut rng = StdRng::seed_from_u64(seed);
    // The roots the child goes through, computed in memory.
    let model = common::mem_db(BranchFactor::Sixteen);
    let expected: Vec<Hash> = (0..60)
        .map(|r| model.commit(batch(seed, r, 3000)).expect("model"))
        .collect();
    for attempt in 0..4 {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .env("TRIBUTARY_CRASH_SEED", seed.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("child stdout");
        let wanted = rng.random_range(1..6);
        let mut seen = 0;
        for line in BufReader::new(stdout).lines() {
            if line.expect("read child").starts_with("ROOT ") {
                seen += 1;
                if seen == wanted {
                    break;
                }
            }
        }
        std::thread::sleep(Duration::from_micros(rng.random_range(0..20_000)));
        child.kill().expect("SIGKILL the child");
        child.wait().expect("reap");
        let db =
            MerkleDb::open_dir(dir.path(), config(8), Durability::Sync).expect("reopen after kill");
        let root = db.root();
        let at = expected.iter().position(|r| *r == root);
        assert!(
            at.is_some_and(|i| i + 1 >= seen),
            "attempt {attempt}: reopened root {} is not a committed revision at or after #{seen} (seed {seed})",
            tributary_merkle::to_hex(&root)
        );
        assert_eq!(
            db.revision() as usize,
            at.map_or(0, |i| i + 1),
            "revision counts the commits"
        );
        assert_eq!(
            fresh_root(&db),
            root,
            "attempt {attempt}: contents and root disagree after the kill"
        );
        if let Some(&(_, previous)) = db.history().iter().rev().nth(1) {
            let proof = db
                .range_proof(&previous, None, None, 100)
                .expect("history usable after the kill");
            proof
                .verify(None, None, &previous, BranchFactor::Sixteen)
                .expect("verifies");
        }
    }
}

/// A process that dies between checkpoints leaves only durable commit records; reopening
/// replays them onto the checkpointed nodes.
#[test]
fn reopen_after_lost_checkpoint_replays_the_history() {
    let store = tributary_store::MemStore::new();
    let cfg = Config {
        checkpoint_interval: 1000,
        ..config(20)
    };
    let db = MerkleDb::open(std::sync::Arc::new(store.clone()), cfg.clone()).expect("open");
    db.commit(batch(3, 100, 200)).expect("first commit");
    db.flush().expect("checkpoint after the first commit");
    let roots: Vec<Hash> = (0..7)
        .map(|r| db.commit(batch(3, r, 200)).expect("commit"))
        .collect();
    // The process "dies": no checkpoint runs on drop.
    std::mem::forget(db);
    let db = MerkleDb::open(std::sync::Arc::new(store), cfg).expect("reopen replays");
    assert_eq!(db.root(), roots[6]);
    assert_eq!(db.revision(), 8);
    assert_eq!(
        fresh_root(&db),
        db.root(),
        "replayed nodes agree with the values"
    );
    for old in &roots[..6] {
        let proof = db
            .range_proof(old, None, None, 1000)
            .expect("old root still provable");
        proof
            .verify(None, None, old, BranchFactor::Sixteen)
            .expect("verifies");
    }
}
