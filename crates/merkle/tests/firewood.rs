//! Differential test against firewood 0.3.1 (`NodeHashAlgorithm::MerkleDB`, branch factor 16):
//! equal roots after every commit of random batches of puts and deletes, over key sets that
//! include the empty key, empty values, and values of 31, 32 and 33 bytes (the digest switch).

mod common;

use firewood::api::{Db as _, Proposal as _};
use firewood::db::{BatchOp as FwOp, Db, DbConfig};
use firewood_storage::NodeHashAlgorithm;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tributary_merkle::{BatchOp, BranchFactor, EMPTY_ROOT, Hash};

fn firewood_root(db: &Db) -> Hash {
    db.root_hash().map_or(EMPTY_ROOT, |h| {
        let bytes: &[u8] = h.as_ref();
        bytes.try_into().expect("32-byte root")
    })
}

fn random_key(rng: &mut StdRng) -> Vec<u8> {
    match rng.random_range(0..10) {
        0 => Vec::new(),
        1..=3 => (0..rng.random_range(1..3))
            .map(|_| rng.random_range(0..4u8))
            .collect(),
        _ => (0..rng.random_range(1..34)).map(|_| rng.random()).collect(),
    }
}

fn random_value(rng: &mut StdRng) -> Vec<u8> {
    let len = [0, 1, 31, 32, 33, 64][rng.random_range(0..6)];
    (0..len).map(|_| rng.random()).collect()
}

#[test]
fn roots_equal_firewood_after_every_commit() {
    let seed = common::seed("roots_equal_firewood_after_every_commit");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = DbConfig::builder()
        .node_hash_algorithm(NodeHashAlgorithm::MerkleDB)
        .truncate(true)
        .build();
    let fw = Db::new(dir.path().join("firewood"), cfg).expect("open firewood");
    let ours = common::mem_db(BranchFactor::Sixteen);
    let mut live: Vec<Vec<u8>> = Vec::new();
    let mut with_empty_key = 0;
    for round in 0..60 {
        let mut batch: Vec<BatchOp> = Vec::new();
        for _ in 0..rng.random_range(1..40) {
            if !live.is_empty() && rng.random_bool(0.25) {
                let k = live.swap_remove(rng.random_range(0..live.len()));
                batch.push(BatchOp::Delete(k));
            } else {
                let k = random_key(&mut rng);
                live.push(k.clone());
                batch.push(BatchOp::Put(k, random_value(&mut rng)));
            }
        }
        // Firewood applies a batch in order; give both the same last-write-wins view of it.
        let mut last: std::collections::BTreeMap<Vec<u8>, Option<Vec<u8>>> = Default::default();
        for op in &batch {
            match op {
                BatchOp::Put(k, v) => last.insert(k.clone(), Some(v.clone())),
                BatchOp::Delete(k) => last.insert(k.clone(), None),
            };
        }
        live.retain(|k| last.get(k).is_none_or(Option::is_some));
        live.sort();
        live.dedup();
        let fw_ops: Vec<FwOp<Vec<u8>, Vec<u8>>> = last
            .iter()
            .map(|(k, v)| match v {
                Some(v) => FwOp::Put {
                    key: k.clone(),
                    value: v.clone(),
                },
                None => FwOp::Delete { key: k.clone() },
            })
            .collect();
        fw.propose(fw_ops)
            .expect("firewood propose")
            .commit()
            .expect("firewood commit");
        let root = ours.commit(batch).expect("commit");
        assert_eq!(
            tributary_merkle::to_hex(&root),
            tributary_merkle::to_hex(&firewood_root(&fw)),
            "round {round}: roots differ (seed {seed})"
        );
        if ours.get(&[]).expect("get").is_some() {
            with_empty_key += 1;
        }
    }
    // The empty key is the case fjall cannot store directly; the run must have covered it.
    assert!(
        with_empty_key > 0,
        "no round held the empty key (seed {seed})"
    );
}
