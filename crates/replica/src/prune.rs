//! Pruning by common knowledge (Syncbase left it a TODO): a log record, and the DAG node it
//! made, go once the node is no longer a head and every member of every syncgroup sharing
//! its collection is known to hold the record. Records of collections no syncgroup shares go
//! as soon as they are superseded. Heads are never pruned, so a member that joins later still
//! receives every row's current version (with its pruned parents as placeholders).
//!
//! What a member holds is what it said it holds: its knowledge sent with its requests and
//! answers; a member never heard from holds nothing, and nothing it shares is pruned.
//! A known gap: a record pruned here and received again later through a syncgroup joined
//! afterwards is taken for a new version (LWW then resolves it against the current head).

use std::collections::BTreeMap;

use tributary_wire::replica::LogRecord;

use crate::keys::{db_prefix, decode, log_key};
use crate::record::RowId;
use crate::replica::{Replica, Txn};
use crate::syncgroup::{self, Knowledge};
use crate::types::{NodeId, Version};
use crate::{ReplicaError, keys};

fn entry_key(db: &str, author: &NodeId, generation: u64) -> Vec<u8> {
    log_key(db, author, generation)
}

/// Marks the record `(author, generation)` prunable once common knowledge covers it; `node` is the
/// DAG node it made, if it made one (a duplicate record made none).
pub(crate) fn mark(
    txn: &mut Txn,
    r: &Replica,
    author: &NodeId,
    generation: u64,
    node: Option<(&RowId, &Version)>,
) {
    let value = node
        .map(|(row, v)| keys::dag_key(row, v))
        .unwrap_or_default();
    txn.batch
        .put(r.ks.prune, &entry_key(&txn.db, author, generation), &value);
}

/// What one pruning pass removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Log records removed.
    pub records: u64,
    /// DAG nodes removed.
    pub nodes: u64,
    /// Superseded records kept because some member may not hold them.
    pub waiting: u64,
}

impl Replica {
    /// Removes what every member of `db`'s syncgroups already holds.
    ///
    /// # Errors
    /// A store failure or corrupt state.
    pub fn prune(&mut self, db: &str) -> Result<Pruned, ReplicaError> {
        let common = syncgroup::common_knowledge(self, db)?;
        let prefix = db_prefix(db);
        let mut batch = tributary_store::WriteBatch::default();
        let mut out = Pruned::default();
        let mut batches: BTreeMap<(NodeId, u64), bool> = BTreeMap::new();
        for item in self.store.scan_from(self.ks.prune, &prefix) {
            let (k, dag) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            let (author, generation) =
                keys::parse_log_key(db, &k).ok_or(ReplicaError::Corrupt("prune entry"))?;
            let Some(bytes) = self.store.get(self.ks.log, &k)? else {
                batch.delete(self.ks.prune, &k);
                continue;
            };
            let record = decode::<LogRecord>("log record", &bytes)?;
            let whole_batch = record.batch_id == 0
                || *batches
                    .entry((author, record.batch_id))
                    .or_insert(self.batch_prunable(db, &common, &author, record.batch_id)?);
            if !covered(&common, &record.collection, &author, generation) || !whole_batch {
                out.waiting += 1;
                continue;
            }
            batch.delete(self.ks.log, &k);
            batch.delete(self.ks.prune, &k);
            out.records += 1;
            if !dag.is_empty() {
                batch.delete(self.ks.dag, &dag);
                out.nodes += 1;
            }
        }
        if !batch.is_empty() {
            self.store.write(batch)?;
        }
        Ok(out)
    }

    /// Whether every record of a batch may go: a batch is pruned whole, or a member that joins
    /// later would receive part of it and refuse it as incomplete. A batch's records are
    /// consecutive generations from the one its id names.
    fn batch_prunable(
        &self,
        db: &str,
        common: &BTreeMap<String, (Vec<String>, Knowledge)>,
        author: &NodeId,
        batch_id: u64,
    ) -> Result<bool, ReplicaError> {
        let first = batch_id & !(1 << 63);
        let limit = 2 * crate::types::MAX_BATCH_ROWS;
        let start = log_key(db, author, first);
        let mut seen = 0;
        for item in self.store.scan_from(self.ks.log, &start).take(limit + 1) {
            let (k, v) = item?;
            let Some((a, generation)) = keys::parse_log_key(db, &k) else {
                break;
            };
            let record = decode::<LogRecord>("log record", &v)?;
            if a != *author || record.batch_id != batch_id {
                break;
            }
            seen += 1;
            let superseded = self.store.contains(self.ks.prune, &k)?;
            if !superseded || !covered(common, &record.collection, author, generation) {
                return Ok(false);
            }
        }
        // Nothing found where the id points: an id not made by this scheme; keep it.
        Ok(seen > 0 && seen <= limit)
    }

    /// Log records of `db` held (pruned ones gone).
    ///
    /// # Errors
    /// A store failure.
    pub fn log_len(&self, db: &str) -> Result<u64, ReplicaError> {
        let prefix = db_prefix(db);
        let mut n = 0;
        for item in self.store.scan_from(self.ks.log, &prefix) {
            if !item?.0.starts_with(&prefix) {
                break;
            }
            n += 1;
        }
        Ok(n)
    }
}

/// Whether every syncgroup sharing `collection` is known by all its members past `generation` of
/// `author`.
fn covered(
    common: &BTreeMap<String, (Vec<String>, Knowledge)>,
    collection: &str,
    author: &NodeId,
    generation: u64,
) -> bool {
    common
        .values()
        .filter(|(collections, _)| collections.iter().any(|c| c == collection))
        .all(|(_, k)| k.get(author).is_some_and(|&g| g >= generation))
}
