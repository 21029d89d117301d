//! Every vector of `shared/vectors/swarm.json` that concerns chunks and BMT proofs.

mod common;

use common::vectors;
use tributary_chunk::bmt::SegmentProof;
use tributary_chunk::{Address, Chunk, ChunkError};

fn address(v: &serde_json::Value) -> Address {
    v.as_str()
        .expect("address string")
        .parse()
        .expect("address")
}

#[test]
fn chunk_addresses_match_bee() {
    let v = vectors("swarm.json");
    let chunks = v["chunks"].as_array().expect("chunks");
    assert_eq!(chunks.len(), 5);
    for case in chunks {
        let chunk = if let Some(wire) = case["wire_utf8"].as_str() {
            Chunk::from_wire(wire.as_bytes().to_vec()).expect("wire chunk")
        } else {
            let payload = case["payload_utf8"].as_str().expect("payload").as_bytes();
            Chunk::new(case["span"].as_u64().expect("span"), payload).expect("chunk")
        };
        assert_eq!(chunk.address(), address(&case["address"]), "{case}");
        let again = Chunk::validate(chunk.address(), chunk.data().to_vec()).expect("validates");
        assert_eq!(again, chunk);
    }
}

#[test]
fn invalid_chunks_fail_validation() {
    let v = vectors("swarm.json");
    for case in v["invalid_chunks"].as_array().expect("invalid_chunks") {
        let payload = case["payload_utf8"].as_str().expect("payload").as_bytes();
        let data = Chunk::new(payload.len() as u64, payload)
            .expect("chunk")
            .into_data();
        let claimed = address(&case["claimed_address"]);
        assert!(matches!(
            Chunk::validate(claimed, data),
            Err(ChunkError::AddressMismatch { .. })
        ));
    }
}

#[test]
fn bmt_proof_matches_bee() {
    let v = vectors("swarm.json");
    let proof = &v["bmt_proof"];
    let shared: Vec<Address> = proof["shared_sisters_levels_0_to_5"]
        .as_array()
        .expect("sisters")
        .iter()
        .map(address)
        .collect();
    let payload = b"hello world";
    let chunk_address = Chunk::new(4096, payload).expect("chunk").address();
    for (index, sister) in proof["level_6_sister"].as_object().expect("level 6") {
        let index: usize = index.parse().expect("index");
        let p = SegmentProof::new(4096, payload, index).expect("proof");
        for (level, expected) in shared.iter().enumerate() {
            assert_eq!(
                Address(p.sisters[level]),
                *expected,
                "segment {index} level {level}"
            );
        }
        assert_eq!(
            Address(p.sisters[6]),
            address(sister),
            "segment {index} level 6"
        );
        assert!(
            p.verifies(&chunk_address.0),
            "segment {index} proof verifies"
        );
    }
}
