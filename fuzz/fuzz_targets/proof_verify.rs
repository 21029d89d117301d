//! Decoding and verifying untrusted proof bytes never panics, and nothing that verifies is
//! false: any range proof accepted against the fixture trie's root lists exactly the fixture's
//! key-values from its start to its last key.
//!
//! Run: `scripts/fuzz.sh` (all targets, seeded corpus), or `cargo +nightly fuzz run proof_verify`.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tributary_merkle::{BranchFactor, ChangeProof, RangeProof};
use tributary_sim::fuzzing::{ProofFixture, proof_bounds, proof_fixture};

fn fixture() -> &'static ProofFixture {
    static F: OnceLock<ProofFixture> = OnceLock::new();
    F.get_or_init(proof_fixture)
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let (selector, body) = data.split_first().unwrap_or((&0, &[]));
    let (start, end) = proof_bounds(*selector);
    let (start, end) = (start.as_deref(), end.as_deref());
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
