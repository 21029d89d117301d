//! Whatever bytes a peer sends on `/tributary/pullsync/1`, as a request or as an answer,
//! nothing panics: the upstream answers from a chunk store of 300 chunks within the message
//! limit or refuses, and a downstream core brought honestly to each of its request kinds
//! (cursors, Get, Want) takes the bytes as that request's answer without panicking.
//!
//! Run: `scripts/fuzz.sh 60 pull_message`, or `cargo +nightly fuzz run pull_message`.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use prost::Message;
use tributary_chunk::store::ChunkStore;
use tributary_chunk::{Address, Chunk};
use tributary_store::MemStore;
use tributary_stream::pull::{Output, PullConfig, PullSync};
use tributary_stream::serve::{self, Answer};
use tributary_wire::MAX_PULL_MESSAGE_BYTES;
use tributary_wire::pullsync::request;

fn store() -> &'static ChunkStore {
    static S: OnceLock<ChunkStore> = OnceLock::new();
    S.get_or_init(|| {
        let store = ChunkStore::open_with_epoch(Arc::new(MemStore::new()), Address([7; 32]), || 1)
            .expect("opens");
        let chunks: Vec<Chunk> = (0u32..300)
            .map(|i| Chunk::new(4, &i.to_le_bytes()).expect("chunk"))
            .collect();
        store.put_many(&chunks).expect("stores");
        store
    })
}

fn empty() -> &'static ChunkStore {
    static S: OnceLock<ChunkStore> = OnceLock::new();
    S.get_or_init(|| {
        ChunkStore::open_with_epoch(Arc::new(MemStore::new()), Address([9; 32]), || 1)
            .expect("opens")
    })
}

/// Drives a fresh downstream core (over an empty store) against the store's node honestly
/// until it sends a request of the kind `wanted` picks; returns the core and that request's id.
fn core_asking(wanted: fn(&request::Message) -> bool) -> Option<(PullSync, u64)> {
    let (store, own, now) = (store(), empty(), Instant::now());
    let mut core = PullSync::new(Address([9; 32]), PullConfig::default());
    core.handle_connected(now, store.base(), false);
    while let Some(output) = core.poll_output() {
        let Output::Request { id, request, .. } = output else {
            continue;
        };
        let message = request.message.as_ref()?;
        if wanted(message) {
            return Some((core, id));
        }
        if let Ok(Answer::Reply(r)) = serve::answer(store, &request.encode_to_vec()) {
            core.handle_response(now, id, &r.encode_to_vec(), own);
        }
    }
    None
}

fuzz_target!(|data: &[u8]| {
    let store = store();
    if let Ok(Answer::Reply(r)) = serve::answer(store, data) {
        assert!(r.encoded_len() <= MAX_PULL_MESSAGE_BYTES, "an answer of {} bytes", r.encoded_len());
    }
    let kinds: [fn(&request::Message) -> bool; 3] = [
        |m| matches!(m, request::Message::Cursors(_)),
        |m| matches!(m, request::Message::Get(_)),
        |m| matches!(m, request::Message::Want(_)),
    ];
    for kind in kinds {
        let (mut core, id) = core_asking(kind).expect("an honest exchange reaches every kind");
        core.handle_response(Instant::now(), id, data, empty());
        while core.poll_output().is_some() {}
    }
});
