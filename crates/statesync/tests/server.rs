//! The state-sync server against x/sync's handler rules: answers verify, limits are clamped and
//! halved to fit, a change request without history gets a range proof at the end root, and
//! every kind of malformed request is refused with its own error.

use std::sync::Arc;

use prost::Message;
use tributary_merkle::{
    BatchOp, BranchFactor, ChangeProof, Config, EMPTY_ROOT, Hash, MerkleDb, RangeProof,
};
use tributary_statesync::server::{MAX_KEY_LIMIT, Reply, ServerError, handle};
use tributary_store::MemStore;
use tributary_wire::sync::{self as pb, change_proof_response, request};

fn db_with(pairs: impl Iterator<Item = (Vec<u8>, Vec<u8>)>) -> MerkleDb {
    let db = MerkleDb::open(Arc::new(MemStore::new()), Config::default()).expect("open");
    db.commit(pairs.map(|(k, v)| BatchOp::Put(k, v)))
        .expect("commit");
    db
}

fn key(i: u32) -> Vec<u8> {
    i.to_be_bytes().to_vec()
}

fn range_request(root: &[u8], keys: u32, bytes: u32) -> pb::SyncGetRangeProofRequest {
    pb::SyncGetRangeProofRequest {
        root_hash: root.to_vec(),
        start_key: None,
        end_key: None,
        key_limit: keys,
        bytes_limit: bytes,
    }
}

fn send(db: &MerkleDb, message: request::Message) -> Result<Reply, ServerError> {
    handle(
        db,
        &pb::Request {
            message: Some(message),
        }
        .encode_to_vec(),
    )
}

fn bytes(reply: Result<Reply, ServerError>) -> Vec<u8> {
    match reply.expect("answered") {
        Reply::Bytes(b) => b,
        Reply::Drop => panic!("dropped"),
    }
}

#[test]
fn range_requests_are_answered_within_limits() {
    let db = db_with((0..5000).map(|i| (key(i), vec![i as u8; 40])));
    let root = db.root();
    let proof = RangeProof::from_bytes(&bytes(send(
        &db,
        request::Message::RangeProofRequest(range_request(&root, 100, u32::MAX)),
    )))
    .expect("decodes");
    assert_eq!(proof.key_values.len(), 100);
    proof
        .verify(None, None, &root, BranchFactor::Sixteen)
        .expect("verifies");

    let clamped = RangeProof::from_bytes(&bytes(send(
        &db,
        request::Message::RangeProofRequest(range_request(&root, 1_000_000, u32::MAX)),
    )))
    .expect("decodes");
    assert_eq!(clamped.key_values.len(), MAX_KEY_LIMIT as usize);

    let small = bytes(send(
        &db,
        request::Message::RangeProofRequest(range_request(&root, 2048, 3000)),
    ));
    assert!(small.len() < 3000, "the proof fits the byte limit");
    let small = RangeProof::from_bytes(&small).expect("decodes");
    assert!(
        !small.key_values.is_empty() && small.key_values.len() < 64,
        "the key limit was halved"
    );
    small
        .verify(None, None, &root, BranchFactor::Sixteen)
        .expect("verifies");

    assert!(matches!(
        send(
            &db,
            request::Message::RangeProofRequest(range_request(&root, 10, 50))
        ),
        Err(ServerError::MinProofSizeIsTooLarge)
    ));
    assert_eq!(
        send(
            &db,
            request::Message::RangeProofRequest(range_request(&[9; 32], 10, 10_000))
        )
        .expect("no error"),
        Reply::Drop
    );
}

#[test]
fn change_requests_use_history_or_fall_back_to_range_proofs() {
    let db = db_with((0..2000).map(|i| (key(i), vec![1; 8])));
    let before = db.root();
    let local = db_with((0..2000).map(|i| (key(i), vec![1; 8])));
    let after = db
        .commit(
            (0..2000)
                .step_by(7)
                .map(|i| BatchOp::Put(key(i), vec![2; 8])),
        )
        .expect("commit");
    let ask = |start: Hash| {
        request::Message::ChangeProofRequest(pb::SyncGetChangeProofRequest {
            start_root_hash: start.to_vec(),
            end_root_hash: after.to_vec(),
            start_key: None,
            end_key: None,
            key_limit: 2048,
            bytes_limit: u32::MAX,
        })
    };
    let response = pb::SyncGetChangeProofResponse::decode(bytes(send(&db, ask(before))).as_slice())
        .expect("response");
    let Some(change_proof_response::Response::ChangeProof(wire)) = response.response else {
        panic!("a change proof")
    };
    let proof = ChangeProof::from_wire(wire).expect("decodes");
    assert_eq!(proof.key_changes.len(), 286);
    local
        .verify_change_proof(&proof, None, None, &after)
        .expect("verifies against the start state");

    let response =
        pb::SyncGetChangeProofResponse::decode(bytes(send(&db, ask([7; 32]))).as_slice())
            .expect("response");
    let Some(change_proof_response::Response::RangeProof(wire)) = response.response else {
        panic!("a range proof")
    };
    RangeProof::from_wire(wire)
        .expect("decodes")
        .verify(None, None, &after, BranchFactor::Sixteen)
        .expect("verifies at the end root");
}

#[test]
fn malformed_requests_are_refused() {
    let db = db_with((0..10).map(|i| (key(i), vec![1])));
    let root = db.root();
    assert!(matches!(
        handle(&db, b"\xff\xff\xff"),
        Err(ServerError::Malformed(_))
    ));
    assert!(matches!(handle(&db, &[]), Err(ServerError::Empty)));
    let with = |f: &dyn Fn(&mut pb::SyncGetRangeProofRequest)| {
        let mut r = range_request(&root, 10, 10_000);
        f(&mut r);
        send(&db, request::Message::RangeProofRequest(r))
    };
    assert!(matches!(
        with(&|r| r.bytes_limit = 0),
        Err(ServerError::InvalidBytesLimit)
    ));
    assert!(matches!(
        with(&|r| r.key_limit = 0),
        Err(ServerError::InvalidKeyLimit)
    ));
    assert!(matches!(
        with(&|r| r.root_hash.truncate(31)),
        Err(ServerError::InvalidRootHash(_))
    ));
    assert!(matches!(
        with(&|r| r.root_hash = EMPTY_ROOT.to_vec()),
        Err(ServerError::EmptyRoot)
    ));
    let nothing_with_bytes = Some(pb::MaybeBytes {
        value: vec![1],
        is_nothing: true,
    });
    assert!(matches!(
        with(&|r| r.start_key = nothing_with_bytes.clone()),
        Err(ServerError::InvalidBound("start"))
    ));
    assert!(matches!(
        with(&|r| r.end_key = nothing_with_bytes.clone()),
        Err(ServerError::InvalidBound("end"))
    ));
    let bounds = |r: &mut pb::SyncGetRangeProofRequest| {
        r.start_key = Some(pb::MaybeBytes {
            value: vec![9],
            is_nothing: false,
        });
        r.end_key = Some(pb::MaybeBytes {
            value: vec![1],
            is_nothing: false,
        });
    };
    assert!(matches!(with(&bounds), Err(ServerError::InvalidBounds)));
    let unknown_end = pb::SyncGetChangeProofRequest {
        start_root_hash: root.to_vec(),
        end_root_hash: vec![5; 32],
        start_key: None,
        end_key: None,
        key_limit: 10,
        bytes_limit: 10_000,
    };
    assert!(matches!(
        send(&db, request::Message::ChangeProofRequest(unknown_end)),
        Err(ServerError::Db(_))
    ));
}
