//! Persisted history: what each commit changed, so that any of the last N revisions can be
//! rebuilt for reads and proofs.
//!
//! Revision `r`'s record holds its root and, for every key whose value the commit changed, the
//! value *before* it (sorted by key). The trie is a function of its key-values (history
//! independence), so revision `b` is the current trie with each key touched since `b` set back
//! to its value before the earliest later commit that touched it; [`revert_ops`] computes those
//! operations, and the trie builder turns them into the nodes of revision `b`.
//!
//! Records are small (a key and a value per changed key, not trie nodes) and live in the
//! store, written in the same atomic batch as the commit they describe; only the list of
//! retained roots is kept in memory. avalanchego keeps its 300 change summaries in memory only,
//! so a restarted node loses them; here they survive restarts.

use std::collections::BTreeMap;

use crate::error::DbError;
use crate::node::Hash;
use crate::varint;

/// The before-values of one commit, sorted by key.
pub(crate) type Record = Vec<(Vec<u8>, Option<Vec<u8>>)>;

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

/// Encodes a record: `uvarint(n) ‖ (uvarint(len) key ‖ 0 | 1 uvarint(len) value)*`.
pub(crate) fn encode_record<'a>(
    entries: impl ExactSizeIterator<Item = (&'a Vec<u8>, Option<&'a Vec<u8>>)>,
) -> Vec<u8> {
    let mut out = Vec::new();
    varint::put(&mut out, entries.len() as u64);
    for (k, before) in entries {
        varint::put(&mut out, k.len() as u64);
        out.extend_from_slice(k);
        match before {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                varint::put(&mut out, v.len() as u64);
                out.extend_from_slice(v);
            }
        }
    }
    out
}

pub(crate) fn decode_record(mut buf: &[u8]) -> Result<Record, DbError> {
    let corrupt = || DbError::Corrupt("undecodable history record".into());
    let next_varint = |buf: &mut &[u8]| -> Result<usize, DbError> {
        let (v, used) = varint::get(buf).ok_or_else(corrupt)?;
        *buf = &buf[used..];
        usize::try_from(v).map_err(|_| corrupt())
    };
    let take = |buf: &mut &[u8], n: usize| -> Result<Vec<u8>, DbError> {
        if buf.len() < n {
            return Err(corrupt());
        }
        let (head, tail) = buf.split_at(n);
        *buf = tail;
        Ok(head.to_vec())
    };
    let n = next_varint(&mut buf)?;
    let mut record = Vec::with_capacity(n.min(1 << 16));
    for _ in 0..n {
        let klen = next_varint(&mut buf)?;
        let key = take(&mut buf, klen)?;
        let before = match take(&mut buf, 1)?.as_slice() {
            [0] => None,
            [1] => {
                let vlen = next_varint(&mut buf)?;
                Some(take(&mut buf, vlen)?)
            }
            _ => return Err(corrupt()),
        };
        record.push((key, before));
    }
    if !buf.is_empty() {
        return Err(corrupt());
    }
    Ok(record)
}

/// The operations that take the current trie back to the revision before the records given,
/// newest record first: each key gets its before-value from the oldest record that touched it.
pub(crate) fn revert_ops(
    newest_first: impl IntoIterator<Item = Record>,
) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    let mut ops = BTreeMap::new();
    for record in newest_first {
        for (k, before) in record {
            ops.insert(k, before);
        }
    }
    ops.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trip_and_revert_takes_oldest_before() {
        let a: Record = vec![(b"k".to_vec(), None), (b"z".to_vec(), Some(b"1".to_vec()))];
        let bytes = encode_record(a.iter().map(|(k, v)| (k, v.as_ref())));
        assert_eq!(decode_record(&bytes).expect("decodes"), a);
        assert!(decode_record(&bytes[..bytes.len() - 1]).is_err());
        let newer: Record = vec![(b"k".to_vec(), Some(b"new".to_vec()))];
        let ops = revert_ops([newer, a]);
        assert_eq!(
            ops,
            vec![(b"k".to_vec(), None), (b"z".to_vec(), Some(b"1".to_vec()))]
        );
    }
}
