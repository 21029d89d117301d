//! Protobuf messages of Tributary's protocols and their size limits.
//!
//! Messages are declared with `prost` derives (no code generation step, so no `protoc` is needed
//! to build); each module mirrors a `.proto` file under `proto/` that documents the wire format
//! and is what other implementations compile. Decoding here is only *syntactic*: the protocol
//! crates convert these types into their domain types and enforce the semantic rules there
//! (for state sync: research/merkledb.md §4).

pub mod overlay;
pub mod pullsync;
pub mod pushsync;
pub mod replica;
pub mod retrieval;
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

/// Chunks offered in one pull-sync offer, and so at most delivered per delivery: old Swarm's
/// `BatchSize` of 128. Its offer (4 KiB of addresses) is one chunk's worth, and its delivery
/// (128 × 4,104 B ≈ 513 KiB) is big enough that the request round trips are a small part of
/// the time on loopback, yet small enough that a lost delivery costs little; bee's 250 would
/// double the message for no gain measured here.
pub const PULL_BATCH: usize = 128;

/// Largest pull-sync request: a Want holds a 16-byte bitvector and three integers.
pub const MAX_PULL_REQUEST_BYTES: usize = 1024;

/// Largest pull-sync answer: a delivery of [`PULL_BATCH`] chunks of at most 4,104 bytes, each
/// with a few bytes of framing, plus the wrapper.
pub const MAX_PULL_MESSAGE_BYTES: usize = PULL_BATCH * (4104 + 8) + 1024;

/// Largest retrieval request: a 32-byte address and a hop count, framed.
pub const MAX_RETRIEVAL_REQUEST_BYTES: usize = 64;

/// Largest retrieval answer: one chunk of at most 4,104 bytes, or an error of at most 256
/// bytes, framed.
pub const MAX_RETRIEVAL_MESSAGE_BYTES: usize = 4104 + 512;

/// Largest push-sync request: one chunk of at most 4,104 bytes, framed.
pub const MAX_PUSH_REQUEST_BYTES: usize = 4104 + 64;

/// Largest push-sync answer: a receipt (32 + 65 + 32 bytes and a depth) or an error of at most
/// 256 bytes, framed.
pub const MAX_PUSH_MESSAGE_BYTES: usize = 512;

/// Largest replica request: the knowledge of at most 64 syncgroups of at most 1,024 devices.
pub const MAX_REPLICA_REQUEST_BYTES: usize = 2 * 1024 * 1024;

/// Largest replica answer frame: a frame closes at the first batch boundary after 256 KiB,
/// and a batch is at most 4 MiB as records; the first frame also carries the syncgroups
/// asked for (at most 64, each at most about 180 KB at its ACL and member limits).
pub const MAX_REPLICA_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// Most records in a replica answer frame. The records of a frame leave out what they share
/// with the one before (and their version), so this bounds what restoring them may add: at
/// most about 250 bytes a record, 8 MiB a frame. A responder closes a frame at a batch
/// boundary once it holds this many less a batch's most rows.
pub const MAX_REPLICA_FRAME_RECORDS: usize = 32 * 1024;

/// Records a replica answer gathers before it is cut (`more`): after this many bytes of
/// records the responder closes the reply at the next frame boundary.
pub const REPLICA_REPLY_BUDGET: usize = 4 * 1024 * 1024;

/// Largest replica reply: a first frame at its bound (it carries the syncgroups), records up
/// to the budget, one more frame at its bound, and framing.
pub const MAX_REPLICA_REPLY_BYTES: usize =
    REPLICA_REPLY_BUDGET + 2 * MAX_REPLICA_FRAME_BYTES + 4096;
