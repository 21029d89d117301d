//! Helpers shared by the integration tests.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::path::PathBuf;
use std::sync::Arc;

use tributary_merkle::{BranchFactor, Config, MerkleDb};
use tributary_store::MemStore;

/// `../shared/vectors/<name>`, beside the repository. Missing vectors fail the test: they are
/// part of the project's contract, not optional.
pub fn vectors(name: &str) -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/vectors")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("test vectors {} are required: {e}", path.display()));
    serde_json::from_str(&text).expect("vectors are JSON")
}

pub fn mem_db(bf: BranchFactor) -> MerkleDb {
    let config = Config {
        branch_factor: bf,
        ..Config::default()
    };
    MerkleDb::open(Arc::new(MemStore::new()), config).expect("open in-memory db")
}

pub fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).expect("hex in vectors")
}

/// A seed from `TRIBUTARY_SEED` or the clock, printed so a failure can be replayed.
pub fn seed(test: &str) -> u64 {
    let seed = std::env::var("TRIBUTARY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("{test}: seed {seed} (replay with TRIBUTARY_SEED={seed})");
    seed
}
