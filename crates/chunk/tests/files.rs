//! Files: bee's file reference vectors, split/join round trips around every size boundary,
//! byte ranges, and refusal of missing or tampered chunks.

use std::collections::HashMap;

use proptest::prelude::*;
use tributary_chunk::file::{
    ChunkSink, ChunkSource, FileError, Joiner, Splitter, StoreError, reference_of,
};
use tributary_chunk::{Address, Chunk};

mod common;

#[derive(Default)]
struct MemChunks(HashMap<Address, Vec<u8>>);

impl ChunkSink for MemChunks {
    fn put(&mut self, chunk: Chunk) -> Result<(), StoreError> {
        self.0.insert(chunk.address(), chunk.into_data());
        Ok(())
    }
}

impl ChunkSource for MemChunks {
    fn get(&self, address: &Address) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.0.get(address).cloned())
    }
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 255) as u8).collect()
}

fn split(bytes: &[u8], piece: usize) -> (Address, MemChunks) {
    let mut splitter = Splitter::new(MemChunks::default());
    for part in bytes.chunks(piece.max(1)) {
        splitter.write(part).expect("write");
    }
    if bytes.is_empty() {
        splitter.write(&[]).expect("write");
    }
    splitter.finish().expect("finish")
}

fn join(store: &MemChunks, reference: Address, start: u64, end: u64) -> Vec<u8> {
    let joiner = Joiner::new(store, reference).expect("root chunk");
    let mut out = Vec::new();
    joiner.read_range(start, end, &mut out).expect("read range");
    out
}

#[test]
fn file_references_match_bee() {
    let v = common::vectors("swarm.json");
    let cases = v["files"]["cases"].as_array().expect("cases");
    assert!(cases.len() >= 15, "the file vectors are there");
    for case in cases {
        let len = case["length"].as_u64().expect("length") as usize;
        let expected: Address = case["reference"]
            .as_str()
            .expect("reference")
            .parse()
            .expect("address");
        let bytes = data(len);
        assert_eq!(
            reference_of(bytes.as_slice()).expect("reference"),
            expected,
            "length {len}"
        );
        if len <= 600_000 {
            let (reference, store) = split(&bytes, 1000);
            assert_eq!(reference, expected, "length {len}, written in pieces");
            assert_eq!(
                join(&store, reference, 0, len as u64),
                bytes,
                "length {len} joins back"
            );
        }
    }
}

const C: usize = 4096;

#[test]
fn round_trips_around_every_boundary() {
    let sizes = [
        0,
        1,
        C - 1,
        C,
        C + 1,
        128 * C - 1,
        128 * C,
        128 * C + 1,
        128 * 128 * C - 1,
        128 * 128 * C,
        128 * 128 * C + 1,
    ];
    for size in sizes {
        let bytes = data(size);
        let (reference, store) = split(&bytes, 65_536);
        let joiner = Joiner::new(&store, reference).expect("root");
        assert_eq!(joiner.size(), size as u64);
        let mut out = Vec::with_capacity(size);
        joiner.read_all(&mut out).expect("join");
        assert!(out == bytes, "size {size} round trips");
        // Ranges across leaf and intermediate boundaries.
        let s = size as u64;
        for (a, b) in [
            (0, s.min(1)),
            (s / 3, s / 3 * 2),
            (s.saturating_sub(C as u64 + 7), s),
            (s / 2, s / 2),
        ] {
            assert_eq!(
                join(&store, reference, a, b),
                bytes[a as usize..b as usize],
                "size {size} range {a}..{b}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn any_split_joins_back_in_any_range(size in 0usize..(3 * C + 17), piece in 1usize..9000, a in 0u64..20_000, b in 0u64..20_000) {
        let bytes = data(size);
        let (reference, store) = split(&bytes, piece);
        prop_assert_eq!(reference, reference_of(bytes.as_slice()).expect("reference"));
        let (a, b) = (a.min(b).min(size as u64), a.max(b).min(size as u64));
        prop_assert_eq!(join(&store, reference, a, b), bytes[a as usize..b as usize].to_vec());
    }
}

#[test]
fn missing_tampered_and_out_of_range_are_refused() {
    let bytes = data(3 * C + 5);
    let (reference, mut store) = split(&bytes, 4096);
    let joiner = Joiner::new(&store, reference).expect("root");
    assert!(matches!(
        joiner.read_range(0, 3 * C as u64 + 6, &mut Vec::new()),
        Err(FileError::Range { .. })
    ));
    // The smallest address other than the root: deterministic, and every chunk here has a
    // payload, so byte 8 (the first after the span) exists.
    let leaf = *store
        .0
        .keys()
        .filter(|a| **a != reference)
        .min()
        .expect("a leaf");
    let mut tampered = store.0.get(&leaf).cloned().expect("leaf data");
    tampered[8] ^= 1;
    store.0.insert(leaf, tampered);
    let err = Joiner::new(&store, reference)
        .expect("root")
        .read_all(&mut Vec::new());
    assert!(matches!(err, Err(FileError::Chunk(_))), "{err:?}");
    store.0.remove(&leaf);
    let err = Joiner::new(&store, reference)
        .expect("root")
        .read_all(&mut Vec::new());
    assert!(
        matches!(err, Err(FileError::Missing(a)) if a == leaf),
        "{err:?}"
    );
}
