//! The watch feed: every change of a row's visible state, local or from a sync, written in
//! the same store batch as the change, numbered from 1. A reader resumes after the number of
//! the last entry it saw (its marker) and so misses nothing and sees nothing twice. The feed
//! keeps the last [`crate::ReplicaConfig::watch_keep`] entries; an older marker is refused.

use prost::Message;

use crate::ReplicaError;
use crate::keys::{WatchEntry, db_prefix, decode, meta_key};
use crate::replica::{Replica, Txn, read_u64, visible};

fn entry_key(db: &str, seq: u64) -> Vec<u8> {
    let mut k = db_prefix(db);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Adds a watch entry for every row `txn` changed.
pub(crate) fn record_changes(txn: &mut Txn, r: &Replica) -> Result<(), ReplicaError> {
    if !txn.has_changes() {
        return Ok(());
    }
    let seq_key = meta_key(&txn.db, "watch", &[]);
    let mut seq = read_u64(r, &seq_key)?;
    for row in txn.changed_rows() {
        let heads = txn.heads(r, &row)?;
        let state = visible(r, Some(txn), &row, &heads)?;
        seq += 1;
        let entry = WatchEntry {
            seq,
            collection: row.collection.clone(),
            key: row.key.clone(),
            deleted: state.as_ref().is_none_or(|s| s.value.is_none()),
            version: state
                .as_ref()
                .map(|s| s.version.0.to_vec())
                .unwrap_or_default(),
            conflict: state.as_ref().is_some_and(|s| !s.conflict.is_empty()),
            value: state.and_then(|s| s.value).unwrap_or_default(),
            from_sync: txn.from_sync,
        };
        txn.batch
            .put(r.ks.watch, &entry_key(&txn.db, seq), &entry.encode_to_vec());
        if seq > r.config.watch_keep {
            txn.batch
                .delete(r.ks.watch, &entry_key(&txn.db, seq - r.config.watch_keep));
        }
    }
    txn.batch.put(r.ks.meta, &seq_key, &seq.to_be_bytes());
    Ok(())
}

impl Replica {
    /// Up to `limit` changes of `db` after marker `from` (0: from the start of the feed).
    ///
    /// # Errors
    /// [`ReplicaError::MarkerTooOld`] if entries after `from` were dropped; a store failure.
    pub fn watch(
        &self,
        db: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<WatchEntry>, ReplicaError> {
        crate::types::check_name("database", db)?;
        let prefix = db_prefix(db);
        // The oldest entry still held, whatever `watch_keep` was when it was written.
        let oldest = match self
            .store
            .scan_from(self.ks.watch, &prefix)
            .next()
            .transpose()?
        {
            Some((k, v)) if k.starts_with(&prefix) => decode::<WatchEntry>("watch entry", &v)?.seq,
            _ => read_u64(self, &meta_key(db, "watch", &[]))?.saturating_add(1),
        };
        if from.saturating_add(1) < oldest {
            return Err(ReplicaError::MarkerTooOld {
                marker: from,
                oldest,
            });
        }
        let mut out = Vec::new();
        for item in self
            .store
            .scan_from(self.ks.watch, &entry_key(db, from.saturating_add(1)))
        {
            let (k, v) = item?;
            if !k.starts_with(&prefix) || out.len() >= limit {
                break;
            }
            let entry = decode::<WatchEntry>("watch entry", &v)?;
            // Entries are consecutive: a gap means some after the marker were dropped.
            let expected = out
                .last()
                .map_or(from.saturating_add(1), |e: &WatchEntry| e.seq + 1);
            if entry.seq != expected {
                return Err(ReplicaError::MarkerTooOld {
                    marker: from,
                    oldest: entry.seq,
                });
            }
            out.push(entry);
        }
        Ok(out)
    }
}
