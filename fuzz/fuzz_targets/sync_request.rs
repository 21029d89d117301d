//! Whatever bytes a client sends on `/tributary/statesync/1` never panic the state-sync server,
//! every answer fits the message limit, and every range proof it answers verifies against the
//! root and bounds asked for (the server never lies, whatever it is asked).
//!
//! Run: `scripts/fuzz.sh` (all targets, seeded corpus), or `cargo +nightly fuzz run sync_request`.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use prost::Message;
use tributary_merkle::{BranchFactor, RangeProof};
use tributary_sim::fuzzing::{ProofFixture, proof_fixture};
use tributary_statesync::server::{self, Reply};
use tributary_wire::MAX_SYNC_MESSAGE_BYTES;
use tributary_wire::sync::{self as pb, MaybeBytes, request};

fn fixture() -> &'static ProofFixture {
    static F: OnceLock<ProofFixture> = OnceLock::new();
    F.get_or_init(proof_fixture)
}

fn bound(b: Option<&MaybeBytes>) -> Option<&[u8]> {
    b.filter(|b| !b.is_nothing).map(|b| b.value.as_slice())
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let Ok(Reply::Bytes(answer)) = server::handle(&f.db, data) else {
        return;
    };
    assert!(answer.len() <= MAX_SYNC_MESSAGE_BYTES, "an answer of {} bytes", answer.len());
    let Ok(pb::Request {
        message: Some(request::Message::RangeProofRequest(r)),
    }) = pb::Request::decode(data)
    else {
        return;
    };
    let root: [u8; 32] = r.root_hash.as_slice().try_into().expect("served: a 32-byte root");
    let proof = RangeProof::from_bytes(&answer).expect("the server's answer decodes");
    proof
        .verify(
            bound(r.start_key.as_ref()),
            bound(r.end_key.as_ref()),
            &root,
            BranchFactor::Sixteen,
        )
        .expect("the server's range proof verifies");
});
