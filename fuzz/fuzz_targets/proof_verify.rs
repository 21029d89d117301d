//! Decoding and verifying untrusted proof bytes never panics, and nothing that verifies is
//! false: any range proof accepted against the fixture trie's root lists exactly the fixture's
//! key-values from its start to its last key.
//!
//! Run: `cargo +nightly fuzz run proof_verify` (from the repository root).
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use tributary_merkle::{BatchOp, BranchFactor, ChangeProof, Config, Hash, MerkleDb, RangeProof};
use tributary_store::MemStore;

struct Fixture {
    db: MerkleDb,
    root: Hash,
    old_root: Hash,
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let db = MerkleDb::open(Arc::new(MemStore::new()), Config::default()).expect("open");
        let pairs: Vec<(Vec<u8>, Vec<u8>)> =
            (0u8..40).map(|i| (vec![i / 8, i % 8, i], vec![i; (i as usize) % 40])).collect();
        let old_root = db.commit(pairs[..20].iter().map(|(k, v)| BatchOp::Put(k.clone(), v.clone()))).expect("commit");
        let root = db.commit(pairs[20..].iter().map(|(k, v)| BatchOp::Put(k.clone(), v.clone()))).expect("commit");
        Fixture { db, root, old_root, pairs }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let (selector, body) = data.split_first().unwrap_or((&0, &[]));
    let start = [selector & 0x07, 0, 0];
    let start = (selector & 0x08 != 0).then_some(&start[..]);
    let end = [4u8];
    let end = (selector & 0x10 != 0).then_some(&end[..]);
    if selector & 0x20 == 0 {
        if let Ok(proof) = RangeProof::from_bytes(body)
            && proof.verify(start, end, &f.root, BranchFactor::Sixteen).is_ok()
        {
            let lo = start.unwrap_or_default();
            let hi = proof.key_values.last().map(|(k, _)| k.as_slice()).or(end);
            let truth: Vec<_> = f
                .pairs
                .iter()
                .filter(|(k, _)| k.as_slice() >= lo && hi.is_none_or(|h| k.as_slice() <= h))
                .cloned()
                .collect();
            assert_eq!(proof.key_values, truth, "a false range proof verified");
        }
    } else if let Ok(proof) = ChangeProof::from_bytes(body) {
        let _ = f.db.verify_change_proof(&proof, start, end, &f.old_root);
    }
});
