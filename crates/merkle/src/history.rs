//! Persisted history: what each commit changed, so that any of the last N revisions can be
//! rebuilt for reads and proofs.
//!
//! Revision `r`'s record holds, for every key whose value the commit changed, the value before
//! and after it (sorted by key); its root is stored beside it. The trie is a function of its
//! key-values (history independence), so:
//!
//! - revision `b` is the current trie with each key touched since `b` set back to its value
//!   before the earliest later commit that touched it ([`revert_ops`]);
//! - the current trie is the last node checkpoint with each key touched since then set to its
//!   value after the latest commit that touched it ([`replay_ops`]): this is how a database
//!   reopened after a crash catches its nodes up (see `persist`).
//!
//! Records are small (keys and values, not trie nodes) and are the durable part of a commit,
//! written in one atomic batch with its root; only the list of retained roots is kept in memory.
//! avalanchego keeps its 300 change summaries in memory only, so a restarted node loses them;
//! here they survive restarts.

use std::collections::BTreeMap;

use crate::error::DbError;
use crate::node::Hash;
use crate::trie::{Op, Ops};
use crate::varint;

/// One commit's value changes, sorted by key.
pub(crate) type Record = Vec<RecordEntry>;

/// A key with its value before and after a commit (`None`: absent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RecordEntry {
    pub key: Vec<u8>,
    pub before: Option<Vec<u8>>,
    pub after: Option<Vec<u8>>,
}

/// Storage key of revision `r`'s entries (big-endian, so revisions scan in order).
pub(crate) fn revision_key(r: u64) -> Vec<u8> {
    r.to_be_bytes().to_vec()
}

pub(crate) fn decode_revision_key(k: &[u8]) -> Result<u64, DbError> {
    let bytes: [u8; 8] = k
        .try_into()
        .map_err(|_| DbError::Corrupt("history key is not 8 bytes".into()))?;
    Ok(u64::from_be_bytes(bytes))
}

pub(crate) fn decode_root(v: &[u8]) -> Result<Hash, DbError> {
    v.try_into()
        .map_err(|_| DbError::Corrupt("history root is not 32 bytes".into()))
}

fn put_maybe(out: &mut Vec<u8>, v: Option<&Vec<u8>>) {
    match v {
        None => out.push(0),
        Some(v) => {
            out.push(1);
            varint::put(out, v.len() as u64);
            out.extend_from_slice(v);
        }
    }
}

/// Encodes a record: `uvarint(n) ‖ (uvarint(len) key ‖ maybe before ‖ maybe after)*`, where a
/// maybe is `0`, or `1 ‖ uvarint(len) ‖ bytes`.
pub(crate) fn encode_record<'a>(
    entries: impl ExactSizeIterator<Item = (&'a Vec<u8>, Option<&'a Vec<u8>>, Option<&'a Vec<u8>>)>,
) -> Vec<u8> {
    let mut out = Vec::new();
    varint::put(&mut out, entries.len() as u64);
    for (k, before, after) in entries {
        varint::put(&mut out, k.len() as u64);
        out.extend_from_slice(k);
        put_maybe(&mut out, before);
        put_maybe(&mut out, after);
    }
    out
}

struct RecordReader<'a> {
    buf: &'a [u8],
}

impl RecordReader<'_> {
    fn corrupt() -> DbError {
        DbError::Corrupt("undecodable history record".into())
    }

    fn varint(&mut self) -> Result<usize, DbError> {
        let (v, used) = varint::get(self.buf).ok_or_else(Self::corrupt)?;
        self.buf = &self.buf[used..];
        usize::try_from(v).map_err(|_| Self::corrupt())
    }

    fn take(&mut self, n: usize) -> Result<Vec<u8>, DbError> {
        if self.buf.len() < n {
            return Err(Self::corrupt());
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head.to_vec())
    }

    fn maybe(&mut self) -> Result<Option<Vec<u8>>, DbError> {
        match self.take(1)?.as_slice() {
            [0] => Ok(None),
            [1] => {
                let len = self.varint()?;
                Ok(Some(self.take(len)?))
            }
            _ => Err(Self::corrupt()),
        }
    }
}

pub(crate) fn decode_record(buf: &[u8]) -> Result<Record, DbError> {
    let mut r = RecordReader { buf };
    let n = r.varint()?;
    let mut record = Vec::with_capacity(n.min(1 << 16));
    for _ in 0..n {
        let klen = r.varint()?;
        let key = r.take(klen)?;
        let before = r.maybe()?;
        let after = r.maybe()?;
        record.push(RecordEntry { key, before, after });
    }
    if !r.buf.is_empty() {
        return Err(RecordReader::corrupt());
    }
    Ok(record)
}

/// The operations that take the current trie back to the revision before the records given,
/// newest record first: each key gets its before-value from the oldest record that touched it.
pub(crate) fn revert_ops(newest_first: impl IntoIterator<Item = Record>) -> Ops {
    last_wins(newest_first, |e| (e.key, e.before))
}

/// The operations that take a trie forward through the records given, oldest record first:
/// each key gets its after-value from the newest record that touched it.
pub(crate) fn replay_ops(oldest_first: impl IntoIterator<Item = Record>) -> Ops {
    last_wins(oldest_first, |e| (e.key, e.after))
}

/// One operation per key, in key order: `pick`'s choice from the last record touching it.
fn last_wins(records: impl IntoIterator<Item = Record>, pick: fn(RecordEntry) -> Op) -> Ops {
    let ops: BTreeMap<_, _> = records.into_iter().flatten().map(pick).collect();
    ops.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(k: &[u8], before: Option<&[u8]>, after: Option<&[u8]>) -> RecordEntry {
        RecordEntry {
            key: k.to_vec(),
            before: before.map(<[u8]>::to_vec),
            after: after.map(<[u8]>::to_vec),
        }
    }

    #[test]
    fn record_round_trip_revert_and_replay() {
        let older: Record = vec![entry(b"k", None, Some(b"1")), entry(b"z", Some(b"1"), None)];
        let bytes = encode_record(
            older
                .iter()
                .map(|e| (&e.key, e.before.as_ref(), e.after.as_ref())),
        );
        assert_eq!(decode_record(&bytes).expect("decodes"), older);
        assert!(decode_record(&bytes[..bytes.len() - 1]).is_err());
        let newer: Record = vec![entry(b"k", Some(b"1"), Some(b"2"))];
        let revert = revert_ops([newer.clone(), older.clone()]);
        assert_eq!(
            revert,
            vec![(b"k".to_vec(), None), (b"z".to_vec(), Some(b"1".to_vec()))]
        );
        let replay = replay_ops([older, newer]);
        assert_eq!(
            replay,
            vec![(b"k".to_vec(), Some(b"2".to_vec())), (b"z".to_vec(), None)]
        );
    }
}
