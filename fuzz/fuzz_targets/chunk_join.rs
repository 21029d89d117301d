//! Chunk validation and the joiner on untrusted chunks never panic, and whatever the joiner
//! returns was verified: the input is a list of (claimed address, chunk data) records stored
//! under their claimed addresses, joined from the first one.
//!
//! Run: `cargo +nightly fuzz run chunk_join` (from the repository root).
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use tributary_chunk::file::{ChunkSource, Joiner, StoreError};
use tributary_chunk::{Address, Chunk};

struct Records(HashMap<Address, Vec<u8>>);

impl ChunkSource for Records {
    fn get(&self, address: &Address) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.0.get(address).cloned())
    }
}

fuzz_target!(|data: &[u8]| {
    let mut records = HashMap::new();
    let mut first = None;
    let mut rest = data;
    while rest.len() >= 34 {
        let address = Address(rest[..32].try_into().expect("32 bytes"));
        let len = usize::from(u16::from_le_bytes([rest[32], rest[33]])).min(rest.len() - 34);
        let chunk = rest[34..34 + len].to_vec();
        rest = &rest[34 + len..];
        if let Ok(valid) = Chunk::validate(address, chunk.clone()) {
            assert_eq!(valid.address(), address);
        }
        first.get_or_insert(address);
        records.insert(address, chunk);
    }
    let Some(root) = first else { return };
    let source = Records(records);
    if let Ok(joiner) = Joiner::new(&source, root) {
        let size = joiner.size().min(1 << 20);
        let mut out = Vec::new();
        if joiner.read_range(0, size, &mut out).is_ok() {
            assert_eq!(out.len() as u64, size);
        }
    }
});
