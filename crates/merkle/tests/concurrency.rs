//! Readers keep a consistent revision while commits run: every proof a reader generates for a
//! root it observed verifies against that root, and every value it reads belongs to one whole
//! revision, even with a writer committing (and checkpointing) beside it.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tributary_merkle::{BatchOp, BranchFactor, Config, MerkleDb};
use tributary_store::MemStore;

#[test]
fn readers_see_whole_revisions_during_commits() {
    let config = Config {
        checkpoint_interval: 3,
        history_length: 64,
        ..Config::default()
    };
    let db = MerkleDb::open(Arc::new(MemStore::new()), config).expect("open");
    // Revision r sets every key k in 0..64 to [r, k]: a reader seeing two different r in one
    // revision would have seen half a commit.
    let batch = |r: u8| (0..64u8).map(move |k| BatchOp::Put(vec![k, k], vec![r, k]));
    db.commit(batch(0)).expect("first commit");
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let readers: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| {
                    let mut checked = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let root = db.root();
                        let proof = db
                            .range_proof(&root, None, None, 100)
                            .expect("proof at an observed root");
                        proof
                            .verify(None, None, &root, BranchFactor::Sixteen)
                            .expect("verifies");
                        let revision = proof.key_values[0].1[0];
                        assert!(
                            proof.key_values.iter().all(|(_, v)| v[0] == revision),
                            "a proof mixed revisions"
                        );
                        let all = db.key_values(&root, None, None, 100).expect("scan");
                        assert!(
                            all.iter().all(|(_, v)| v[0] == all[0].1[0]),
                            "a scan mixed revisions"
                        );
                        checked += 1;
                    }
                    checked
                })
            })
            .collect();
        for r in 1..=120u8 {
            db.commit(batch(r)).expect("commit");
        }
        stop.store(true, Ordering::Relaxed);
        for reader in readers {
            assert!(reader.join().expect("reader") > 0, "the reader ran");
        }
    });
}
