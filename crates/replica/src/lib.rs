//! Replicated databases in the manner of Vanadium Syncbase's `vsync`: multi-writer
//! collections kept in sync among the members of syncgroups, offline writes included.
//!
//! - Every local commit becomes signed [log records](record) in the same atomic store write
//!   as the rows it changes ([`Replica::put`], [`Replica::batch`]); times come from a hybrid
//!   logical clock ([`types::Hlc`]).
//! - A row's versions form a DAG; two heads are a conflict, resolved by the rule of the
//!   longest matching (collection, key prefix): last writer wins, the app resolves, or defer
//!   ([`resolve`]).
//! - Knowledge is a generation vector per syncgroup. GetDeltas ([`delta`]): the initiator
//!   sends its knowledge, the responder checks read access, diffs, and sends exactly the
//!   missing records in frames; the initiator verifies each record (signature, version, that
//!   its author may write there) and applies each frame in one atomic store write.
//! - Syncgroups ([`syncgroup`]) carry the ACL and the members; joining goes through an
//!   admin and waits for the admin's knowledge checkpoint before writing.
//! - Log records and DAG ancestors that every member already knows are pruned ([`prune`]);
//!   a watch feed with resume markers reports every change ([`watch`]).
//!
//! The engine is deterministic: it is given `now` (ms) and does no I/O but through the
//! [`tributary_store::KvStore`] it is opened on, so the simulator runs it on the in-memory
//! store. It depends on `tributary-overlay` only for the node identity's signatures.

pub mod compact;
mod dag;
pub mod delta;
mod keys;
pub mod prune;
pub mod record;
mod replica;
pub mod resolve;
pub mod schedule;
pub mod syncgroup;
pub mod types;
pub mod watch;

pub use keys::WatchEntry;
pub use record::{Record, RowId};
pub use replica::{Op, Page, Replica, ReplicaConfig, RowState};
pub use types::{NodeId, Version};

use tributary_store::StoreError;

/// Why a received record or syncgroup change was refused. Every refusal is the sender's
/// fault (or its source's): the caller penalizes the peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefusalReason {
    /// A field is out of its bounds.
    #[error("malformed: {0}")]
    Malformed(String),
    /// The version is not the hash of the content.
    #[error("the version is not the hash of the record")]
    WrongVersion,
    /// The signature does not recover to the author.
    #[error("the signature is not the author's")]
    BadSignature,
    /// The author may not write the collection in any syncgroup we share with the sender.
    #[error("{author} may not write collection {collection}")]
    NotWriter {
        /// The author.
        author: NodeId,
        /// The collection.
        collection: String,
    },
    /// The record is in no syncgroup asked for.
    #[error("collection {0} is in no syncgroup asked for")]
    OutsideRequest(String),
    /// A batch arrived in part.
    #[error("batch {id:x} of {author} arrived with {got} of its {count} records in {collection}")]
    IncompleteBatch {
        /// The author.
        author: NodeId,
        /// The batch.
        id: u64,
        /// The collection.
        collection: String,
        /// Records that arrived.
        got: usize,
        /// Records the batch says it has.
        count: u32,
    },
    /// The record's time is too far ahead of our clock.
    #[error("the record's time is {ahead_ms} ms ahead of our clock")]
    ClockAhead {
        /// By how much.
        ahead_ms: u64,
    },
    /// Two different records under one (author, generation): a forger, or one key used by
    /// two data directories.
    #[error("{0} signed two different records under one generation")]
    Equivocation(NodeId),
    /// A syncgroup change not signed by someone allowed to make it.
    #[error("syncgroup {0}: the change is not signed by an admin")]
    BadSyncgroupChange(String),
}

/// Errors of the replica engine.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// The store failed.
    #[error("store")]
    Store(#[from] StoreError),
    /// A database or collection name is not allowed.
    #[error("bad {kind} name {name:?}: use 1 to 64 ASCII letters, digits, '_', '-' or '.'")]
    BadName {
        /// What was named.
        kind: &'static str,
        /// The name (truncated).
        name: String,
    },
    /// A collection name the HTTP API keeps for its routes.
    #[error(
        "collection name {0:?} is reserved (batch, watch, conflicts, rules and blobs are HTTP routes)"
    )]
    ReservedName(String),
    /// A row key is empty or too long.
    #[error("a row key must be 1 to {} bytes, not {len}", types::MAX_KEY_LEN)]
    BadKey {
        /// Its length.
        len: usize,
    },
    /// A value is too large.
    #[error(
        "a value of {len} bytes is over the {} byte limit",
        types::MAX_VALUE_LEN
    )]
    ValueTooLarge {
        /// Its length.
        len: usize,
    },
    /// A batch is empty or too large.
    #[error(
        "a batch must have 1 to {} rows and at most {} bytes as records: {rows} rows, {bytes} bytes",
        types::MAX_BATCH_ROWS,
        types::MAX_BATCH_BYTES
    )]
    BadBatch {
        /// Rows.
        rows: usize,
        /// Bytes of keys and values.
        bytes: usize,
    },
    /// A node id is not 40 hex digits.
    #[error("bad node id {0:?}: expected 40 hex digits")]
    BadNodeId(String),
    /// A message from a peer does not parse.
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    /// A stored value does not decode.
    #[error("corrupt stored {0}")]
    Corrupt(&'static str),
    /// The node key failed to sign.
    #[error("signing failed")]
    Signing,
    /// This node may not write the collection.
    #[error("this node may not write collection {collection} (syncgroup {syncgroup})")]
    NotWriter {
        /// The collection.
        collection: String,
        /// The syncgroup that shares it.
        syncgroup: String,
    },
    /// Writes wait until a join has synced up to the admin's checkpoint.
    #[error(
        "syncgroup {0} was joined but has not synced up to the admin's checkpoint yet; sync first"
    )]
    JoinPending(String),
    /// No such syncgroup.
    #[error("no syncgroup {name} in database {db}")]
    NoSyncgroup {
        /// The database.
        db: String,
        /// The syncgroup.
        name: String,
    },
    /// A syncgroup of that name exists.
    #[error("syncgroup {0} exists")]
    SyncgroupExists(String),
    /// This node is not an admin.
    #[error("{0} is not an admin of syncgroup {1}")]
    NotAdmin(NodeId, String),
    /// A joiner is not on the ACL.
    #[error("{0} is not a reader, writer or admin of syncgroup {1}")]
    NotAllowed(NodeId, String),
    /// A spec update lost the compare-and-swap.
    #[error("syncgroup {name} is at version {actual}, not {expected}")]
    SpecVersion {
        /// The syncgroup.
        name: String,
        /// The version the update expected.
        expected: u64,
        /// The version it is at.
        actual: u64,
    },
    /// The initiator may read none of the syncgroups it asked for.
    #[error("{0} may read none of the syncgroups asked for")]
    NotAuthorized(NodeId),
    /// A database has as many rules as it may.
    #[error("a database has at most {0} conflict rules")]
    TooManyRules(usize),
    /// No conflict on that row.
    #[error("row {0}/{1} is not in conflict")]
    NoConflict(String, String),
    /// The conflict has no head on the side picked (its row was new here, say).
    #[error("row {1}/{2} has no {0} head to pick; give a value")]
    NoSide(String, String, String),
    /// A watch marker older than the feed keeps.
    #[error("watch marker {marker} is older than the feed's oldest entry {oldest}; rescan")]
    MarkerTooOld {
        /// The marker.
        marker: u64,
        /// The oldest entry kept.
        oldest: u64,
    },
    /// A received syncgroup was refused.
    #[error("refused: {0}")]
    Refused(#[from] RefusalReason),
}
