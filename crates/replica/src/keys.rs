//! How the replica lays its state over the store's keyspaces, and the stored forms of what is
//! not a wire message. Every key starts with the database name and a 0 byte (names hold no
//! 0 byte, see [`crate::types::check_name`]), so one database is one key range per keyspace.
//!
//! | keyspace | key | value |
//! |---|---|---|
//! | `replica.log` | db, author, generation (BE) | the signed [`LogRecord`] |
//! | `replica.dag` | db, collection, key, version | [`DagNode`] |
//! | `replica.heads` | db, collection, key | [`Heads`] |
//! | `replica.meta` | db, tag, … | generations, knowledge, syncgroups, rules, conflicts |
//! | `replica.watch` | db, sequence (BE) | [`WatchEntry`] |
//! | `replica.prune` | db, author, generation (BE) | the DAG key of a record no longer a head |

use prost::Message;
use tributary_store::{KeyspaceId, KvStore, StoreError};

use crate::record::RowId;
use crate::types::{NodeId, Version};

/// The keyspaces.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Spaces {
    pub log: KeyspaceId,
    pub dag: KeyspaceId,
    pub heads: KeyspaceId,
    pub meta: KeyspaceId,
    pub watch: KeyspaceId,
    pub prune: KeyspaceId,
}

impl Spaces {
    pub(crate) fn open(store: &dyn KvStore) -> Result<Self, StoreError> {
        Ok(Self {
            log: store.keyspace_for_large_values("replica.log")?,
            dag: store.keyspace("replica.dag")?,
            heads: store.keyspace("replica.heads")?,
            meta: store.keyspace("replica.meta")?,
            watch: store.keyspace("replica.watch")?,
            prune: store.keyspace("replica.prune")?,
        })
    }
}

/// `db ‖ 0`.
pub(crate) fn db_prefix(db: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(db.len() + 40);
    k.extend_from_slice(db.as_bytes());
    k.push(0);
    k
}

/// `db ‖ 0 ‖ collection ‖ 0 ‖ key`: the heads key of a row.
pub(crate) fn row_key(row: &RowId) -> Vec<u8> {
    let mut k = db_prefix(&row.db);
    k.extend_from_slice(row.collection.as_bytes());
    k.push(0);
    k.extend_from_slice(row.key.as_bytes());
    k
}

/// The row of a heads key (the inverse of [`row_key`]).
pub(crate) fn parse_row_key(k: &[u8]) -> Option<RowId> {
    let mut parts = k.splitn(3, |&b| b == 0);
    let db = std::str::from_utf8(parts.next()?).ok()?;
    let collection = std::str::from_utf8(parts.next()?).ok()?;
    let key = std::str::from_utf8(parts.next()?).ok()?;
    Some(RowId {
        db: db.into(),
        collection: collection.into(),
        key: key.into(),
    })
}

/// The DAG key of one version of a row: its row key, 0, the version (fixed length last, so
/// the key is unambiguous whatever bytes the row key holds).
pub(crate) fn dag_key(row: &RowId, version: &Version) -> Vec<u8> {
    let mut k = row_key(row);
    k.push(0);
    k.extend_from_slice(&version.0);
    k
}

/// `db ‖ 0 ‖ author ‖ generation (BE)`: a log position.
pub(crate) fn log_key(db: &str, author: &NodeId, generation: u64) -> Vec<u8> {
    let mut k = db_prefix(db);
    k.extend_from_slice(&author.0);
    k.extend_from_slice(&generation.to_be_bytes());
    k
}

/// The author and generation of a log key of `db`.
pub(crate) fn parse_log_key(db: &str, k: &[u8]) -> Option<(NodeId, u64)> {
    let rest = k.strip_prefix(db_prefix(db).as_slice())?;
    if rest.len() != 28 {
        return None;
    }
    let author = NodeId(rest[..20].try_into().ok()?);
    Some((author, u64::from_be_bytes(rest[20..].try_into().ok()?)))
}

/// A meta key: `db ‖ 0 ‖ tag ‖ parts joined by 0`.
pub(crate) fn meta_key(db: &str, tag: &str, parts: &[&[u8]]) -> Vec<u8> {
    let mut k = db_prefix(db);
    k.extend_from_slice(tag.as_bytes());
    for p in parts {
        k.push(0);
        k.extend_from_slice(p);
    }
    k
}

/// The key of the node-wide clock (no database name starts with a 1 byte).
pub(crate) const CLOCK_KEY: &[u8] = b"\x01clock";

/// A version of a row in the DAG. A node that is only known as some record's parent (it was
/// pruned where that record came from) is kept as a placeholder, so that if it arrives later
/// it is not taken for a new head.
#[derive(Clone, PartialEq, Eq, Message)]
pub(crate) struct DagNode {
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub parents: Vec<Vec<u8>>,
    #[prost(uint64, tag = "2")]
    pub time: u64,
    #[prost(bool, tag = "3")]
    pub deleted: bool,
    #[prost(bytes = "vec", tag = "4")]
    pub author: Vec<u8>,
    #[prost(uint64, tag = "5")]
    pub generation: u64,
    #[prost(bool, tag = "6")]
    pub placeholder: bool,
    #[prost(uint64, tag = "7")]
    pub batch_id: u64,
}

/// The current versions of a row: one, or several while a conflict is unresolved.
#[derive(Clone, PartialEq, Eq, Message)]
pub(crate) struct Heads {
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub versions: Vec<Vec<u8>>,
}

/// One change of a row's visible state, in the watch feed.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct WatchEntry {
    /// Position in the feed (the resume marker after it).
    #[prost(uint64, tag = "1")]
    pub seq: u64,
    /// The collection.
    #[prost(string, tag = "2")]
    pub collection: String,
    /// The row key.
    #[prost(string, tag = "3")]
    pub key: String,
    /// The visible value after the change.
    #[prost(bytes = "vec", tag = "4")]
    pub value: Vec<u8>,
    /// Whether the row is now deleted.
    #[prost(bool, tag = "5")]
    pub deleted: bool,
    /// The visible version.
    #[prost(bytes = "vec", tag = "6")]
    pub version: Vec<u8>,
    /// Whether the change came from a sync (not a local write).
    #[prost(bool, tag = "7")]
    pub from_sync: bool,
    /// Whether the row is in conflict after the change.
    #[prost(bool, tag = "8")]
    pub conflict: bool,
}

/// An unresolved conflict (rule `app` or `defer`).
#[derive(Clone, PartialEq, Eq, Message)]
pub(crate) struct StoredConflict {
    /// Heads this node held before the remote ones arrived.
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub local: Vec<Vec<u8>>,
    /// Heads that arrived.
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub remote: Vec<Vec<u8>>,
    /// The common ancestor (empty: none known).
    #[prost(bytes = "vec", tag = "3")]
    pub ancestor: Vec<u8>,
    /// The batches of the heads, to group conflicts into closures.
    #[prost(uint64, repeated, tag = "4")]
    pub batches: Vec<u64>,
    /// 1 app, 2 defer.
    #[prost(uint32, tag = "5")]
    pub rule: u32,
}

/// Resolution rules of one database.
#[derive(Clone, PartialEq, Eq, Message)]
pub(crate) struct StoredRules {
    #[prost(message, repeated, tag = "1")]
    pub rules: Vec<StoredRule>,
}

/// One rule.
#[derive(Clone, PartialEq, Eq, Message)]
pub(crate) struct StoredRule {
    #[prost(string, tag = "1")]
    pub collection: String,
    #[prost(string, tag = "2")]
    pub prefix: String,
    /// 0 lww, 1 app, 2 defer.
    #[prost(uint32, tag = "3")]
    pub kind: u32,
}

/// A syncgroup as this node holds it.
#[derive(Clone, PartialEq, Eq, Message)]
pub(crate) struct StoredSyncgroup {
    #[prost(message, optional, tag = "1")]
    pub state: Option<tributary_wire::replica::SyncgroupState>,
    /// The knowledge the admin had when this node joined: no local writes into the
    /// syncgroup's collections until this node's knowledge covers it.
    #[prost(message, optional, tag = "2")]
    pub checkpoint: Option<tributary_wire::replica::Knowledge>,
}

/// Decodes a stored message; a stored value that does not decode is corruption.
pub(crate) fn decode<M: Message + Default>(
    what: &'static str,
    bytes: &[u8],
) -> Result<M, crate::ReplicaError> {
    M::decode(bytes).map_err(|_| crate::ReplicaError::Corrupt(what))
}
