//! Whatever bytes a peer sends on `/tributary/retrieval/1` or `/tributary/pushsync/1`, as a
//! request or as an answer, nothing panics: the decoders refuse or accept them, a retrieval
//! core with a request open takes them as its answer, and a push core with a push open takes
//! them as its receipt (its signature recovered as the runtime does).
//!
//! Run: `scripts/fuzz.sh 60 chunk_message`, or `cargo +nightly fuzz run chunk_message`.
#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use tributary_chunk::{Address, Chunk};
use tributary_overlay::identity::verify_receipt;
use tributary_stream::pull::Fault;
use tributary_stream::push::{self, PushConfig, PushSync, Receipt};
use tributary_stream::retrieval::{self, Retrieval, RetrievalConfig};

fn first_request_id<O>(outputs: impl Iterator<Item = O>, id: impl Fn(&O) -> Option<u64>) -> u64 {
    outputs.filter_map(|o| id(&o)).next().expect("a request")
}

fuzz_target!(|data: &[u8]| {
    let _ = retrieval::decode_request(data);
    let _ = push::decode_delivery(data);
    let now = Instant::now();
    let chunk = Chunk::new(4, b"seed").expect("chunk");

    let mut r = Retrieval::new(Address([0x80; 32]), RetrievalConfig::default());
    r.handle_connected(Address([1; 32]), false);
    r.handle_local(now, chunk.address(), 1);
    let id = first_request_id(std::iter::from_fn(|| r.poll_output()), |o| match o {
        retrieval::Output::Request { id, .. } => Some(*id),
        _ => None,
    });
    r.handle_delivery(now, id, retrieval::decode_delivery(data));
    while r.poll_output().is_some() {}

    let mut p = PushSync::new(Address([0x80; 32]), false, PushConfig::default());
    // Deep enough that the chunk is not this node's own: it pushes to its one peer.
    p.handle_depth(31);
    p.handle_connected(Address([1; 32]), false);
    p.handle_local(now, chunk, 1);
    let id = first_request_id(std::iter::from_fn(|| p.poll_output()), |o| match o {
        push::Output::Request { id, .. } => Some(*id),
        _ => None,
    });
    let receipt = push::decode_receipt(data).and_then(|w| {
        w.map(|wire| {
            verify_receipt(&wire, 1)
                .map(|v| Receipt {
                    address: v.address,
                    storer: v.storer,
                    depth: v.depth,
                    wire: v.wire,
                })
                .map_err(|_| Fault::Malformed("a bad receipt"))
        })
        .transpose()
    });
    p.handle_receipt(now, id, receipt);
    while p.poll_output().is_some() {}
});
