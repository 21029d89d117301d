//! Protobuf messages of Tributary's protocols and their size limits.
//!
//! Messages are declared with `prost` derives (no code generation step, so no `protoc` is needed
//! to build); each module mirrors a `.proto` file under `proto/` that documents the wire format
//! and is what other implementations compile. Decoding here is only *syntactic*: the protocol
//! crates convert these types into their domain types and enforce the semantic rules there
//! (for state sync: research/merkledb.md §4).

pub mod overlay;
pub mod sync;

/// Largest overlay message accepted or produced: a handshake, or a hive batch of at most 30
/// records with a few underlays each, fits with room to spare.
pub const MAX_OVERLAY_MESSAGE_BYTES: usize = 32 * 1024;

/// Largest state-sync message accepted or produced: the x/sync byte limit (2 MiB − 4 KiB) plus
/// room for the request wrapper.
pub const MAX_SYNC_MESSAGE_BYTES: usize = 2 * 1024 * 1024;

/// Largest state-sync *request* accepted or produced. A request holds at most two 32-byte
/// roots, two key bounds (keys are at most 4 KiB; a next start key one byte more) and two
/// limits; 16 KiB leaves room for the framing. Capped apart from the answers so that a peer
/// cannot make a node buffer megabytes per stream before a request is even looked at.
pub const MAX_SYNC_REQUEST_BYTES: usize = 16 * 1024;
