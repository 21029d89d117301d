//! Helpers shared by the integration tests.

use std::path::PathBuf;

/// `../shared/vectors/<name>`. Missing vectors fail the test: they are part of the contract.
pub fn vectors(name: &str) -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/vectors")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("test vectors {} are required: {e}", path.display()));
    serde_json::from_str(&text).expect("vectors are JSON")
}
