//! Wire compatibility: the prost encodings of the classic sync.proto messages equal, byte for
//! byte, those of an independent implementation (Python's `protobuf`; `golden/make_golden.py`
//! made `golden/sync.json`), and decoding the golden bytes gives the same messages.

use std::collections::BTreeMap;

use prost::Message;
use tributary_wire::sync::{
    ChangeProof, KeyChange, KeyValue, MaybeBytes, ProofNode, RangeProof, Request,
    SyncGetChangeProofRequest, SyncGetChangeProofResponse, SyncGetRangeProofRequest,
    change_proof_response, request,
};

fn some(v: &[u8]) -> Option<MaybeBytes> {
    Some(MaybeBytes {
        value: v.to_vec(),
        is_nothing: false,
    })
}

fn nothing() -> Option<MaybeBytes> {
    Some(MaybeBytes {
        value: Vec::new(),
        is_nothing: true,
    })
}

fn node(bits: u64, key: &[u8], value: Option<&[u8]>, children: &[(u32, [u8; 32])]) -> ProofNode {
    let mut node = ProofNode {
        key: Some(tributary_wire::sync::Key {
            length: bits,
            value: key.to_vec(),
        }),
        value_or_hash: value.map_or_else(nothing, some),
        children: Vec::new(),
    };
    let map: BTreeMap<u32, Vec<u8>> = children.iter().map(|(i, id)| (*i, id.to_vec())).collect();
    node.set_children(map);
    node
}

/// Decodes golden bytes, checks the message, and re-encodes it.
type Check = Box<dyn Fn(&[u8]) -> Vec<u8>>;

fn cases() -> Vec<(&'static str, Vec<u8>, Check)> {
    fn roundtrip<M: Message + Default + PartialEq + std::fmt::Debug + 'static>(
        m: M,
    ) -> (Vec<u8>, Check) {
        let bytes = m.encode_to_vec();
        let check = Box::new(move |golden: &[u8]| {
            let decoded = M::decode(golden).expect("golden bytes decode");
            assert_eq!(
                decoded, m,
                "decoding the golden bytes gives the same message"
            );
            decoded.encode_to_vec()
        });
        (bytes, check)
    }
    let range_request = Request {
        message: Some(request::Message::RangeProofRequest(
            SyncGetRangeProofRequest {
                root_hash: (0u8..32).collect(),
                start_key: some(&[1, 2]),
                end_key: None,
                key_limit: 2048,
                bytes_limit: 2_093_056,
            },
        )),
    };
    let change_request = Request {
        message: Some(request::Message::ChangeProofRequest(
            SyncGetChangeProofRequest {
                start_root_hash: vec![0x11; 32],
                end_root_hash: vec![0x22; 32],
                start_key: None,
                end_key: some(&[0xff]),
                key_limit: 100,
                bytes_limit: 1000,
            },
        )),
    };
    let range_proof = RangeProof {
        start_proof: vec![node(4, &[0x10], None, &[(0, [0xaa; 32]), (15, [0xbb; 32])])],
        end_proof: vec![
            node(0, &[], Some(b"root value"), &[(1, [0xcc; 32])]),
            node(16, &[0x12, 0x34], Some(&[0; 32]), &[]),
        ],
        key_values: vec![
            KeyValue {
                key: vec![0x12, 0x34],
                value: b"v".to_vec(),
            },
            KeyValue {
                key: vec![0x12, 0x35],
                value: Vec::new(),
            },
        ],
    };
    let change_proof = ChangeProof {
        start_proof: Vec::new(),
        end_proof: vec![node(8, &[7], None, &[(3, [1; 32])])],
        key_changes: vec![
            KeyChange {
                key: vec![7, 1],
                value: some(b"new"),
            },
            KeyChange {
                key: vec![7, 2],
                value: nothing(),
            },
        ],
    };
    let response = SyncGetChangeProofResponse {
        response: Some(change_proof_response::Response::RangeProof(RangeProof {
            start_proof: Vec::new(),
            end_proof: vec![node(8, b"k", Some(b"v"), &[])],
            key_values: vec![KeyValue {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
            }],
        })),
    };
    let (a, ca) = roundtrip(range_request);
    let (b, cb) = roundtrip(change_request);
    let (c, cc) = roundtrip(range_proof);
    let (d, cd) = roundtrip(change_proof);
    let (e, ce) = roundtrip(response);
    vec![
        ("request_range_proof", a, ca),
        ("request_change_proof", b, cb),
        ("range_proof", c, cc),
        ("change_proof", d, cd),
        ("change_proof_response_with_range_proof", e, ce),
    ]
}

#[test]
fn encodings_equal_python_protobuf() {
    let golden: serde_json::Value =
        serde_json::from_str(include_str!("golden/sync.json")).expect("golden json");
    let cases = cases();
    assert_eq!(
        golden.as_object().map(serde_json::Map::len),
        Some(cases.len())
    );
    for (name, ours, check) in cases {
        let theirs = hex::decode(golden[name].as_str().expect("golden case")).expect("hex");
        assert_eq!(
            hex::encode(&ours),
            hex::encode(&theirs),
            "{name}: prost bytes equal Python's"
        );
        assert_eq!(
            check(&theirs),
            theirs,
            "{name}: re-encoding the decoded golden bytes"
        );
    }
}
