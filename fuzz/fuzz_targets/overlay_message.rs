//! Whatever bytes a peer sends on `/tributary/overlay/1` never panic the overlay core, before
//! and after a completed handshake, and never make it ask for more than a bounded amount of
//! work; records inside are verified (a forged one refuses the peer).
//!
//! Run: `scripts/fuzz.sh` (all targets, seeded corpus), or `cargo +nightly fuzz run overlay_message`.
#![no_main]

use std::sync::OnceLock;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use prost::Message;
use tributary_overlay::{Identity, Overlay, OverlayConfig};
use tributary_store::MemStore;
use tributary_wire::overlay::{Handshake, OverlayMessage, PeerRecord, overlay_message};

fn identity(secret: u8) -> Identity {
    Identity::from_secret(&[secret; 32], [secret; 32]).expect("a valid secret")
}

/// The node's own record and a valid handshake of a second peer: signed once, as signing is
/// most of the cost of an input otherwise.
fn signed() -> &'static (PeerRecord, Vec<u8>) {
    static SIGNED: OnceLock<(PeerRecord, Vec<u8>)> = OnceLock::new();
    SIGNED.get_or_init(|| {
        let own = identity(9).sign_record(1, vec![], 1).expect("signs");
        let handshake = OverlayMessage {
            message: Some(overlay_message::Message::Handshake(Handshake {
                version: 1,
                network_id: 1,
                record: Some(identity(2).sign_record(1, vec![], 1).expect("signs")),
                light: false,
            })),
        }
        .encode_to_vec();
        (own, handshake)
    })
}

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let (own, handshake) = signed();
    let mut core = Overlay::new(now, OverlayConfig::default(), own, &MemStore::new())
        .expect("starts");
    // As the first message of a connection (the handshake path), from the key that signed the
    // corpus's handshake record.
    let first = identity(1).node_key();
    core.handle_connected(now, first, false);
    core.handle_message(now, first, data);
    // After a valid handshake (the hive and depth paths).
    let second = identity(2).node_key();
    core.handle_connected(now, second, false);
    core.handle_message(now, second, handshake);
    core.handle_message(now, second, data);
    core.handle_timeout(now);
    let outputs = std::iter::from_fn(|| core.poll_output()).count();
    assert!(outputs < 200, "{outputs} outputs for two messages");
});
