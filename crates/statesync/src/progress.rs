//! The client's progress record: which key ranges are at which root, stored in the database's
//! metadata in the same atomic write as each commit of synced keys (see
//! `View::commit_with_progress`), so a restarted client fetches nothing it already committed.
//!
//! Layout (version 1): `0x01`, the 32-byte database root the record describes, a `u32` count,
//! then per range its start and end bound (`0x00` unbounded, or `0x01`, a `u32` length and the
//! key) and the 32-byte root its keys are at. Integers are big-endian. Ranges are sorted by
//! start and cover the whole key space; neighbours at the same root are merged.

use tributary_merkle::Hash;

const VERSION: u8 = 1;

/// A key range `[start, end]` (inclusive; `None` unbounded) whose keys are at `root`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RangeAt {
    pub start: Option<Vec<u8>>,
    pub end: Option<Vec<u8>>,
    pub root: Hash,
}

/// A record that does not decode.
#[derive(Debug, thiserror::Error)]
#[error("corrupt sync progress record")]
pub struct CorruptProgress;

/// Encodes the record of a database at `db_root` whose ranges are `ranges`, in any order.
pub(crate) fn encode(db_root: &Hash, mut ranges: Vec<RangeAt>) -> Vec<u8> {
    ranges.sort_by(|a, b| a.start.cmp(&b.start));
    let mut merged: Vec<RangeAt> = Vec::with_capacity(ranges.len());
    for range in ranges {
        match merged.last_mut() {
            Some(last) if last.root == range.root => last.end = range.end,
            _ => merged.push(range),
        }
    }
    let mut out = vec![VERSION];
    out.extend_from_slice(db_root);
    out.extend_from_slice(&len_u32(merged.len()).to_be_bytes());
    for range in &merged {
        put_bound(&mut out, range.start.as_deref());
        put_bound(&mut out, range.end.as_deref());
        out.extend_from_slice(&range.root);
    }
    out
}

/// Decodes a record: the database root it describes and its ranges, sorted by start.
pub(crate) fn decode(bytes: &[u8]) -> Result<(Hash, Vec<RangeAt>), CorruptProgress> {
    let mut reader = Reader(bytes);
    if reader.take(1)? != [VERSION] {
        return Err(CorruptProgress);
    }
    let db_root = reader.hash()?;
    let count = reader.u32()?;
    let mut ranges = Vec::new();
    for _ in 0..count {
        let start = reader.bound()?;
        let end = reader.bound()?;
        ranges.push(RangeAt {
            start,
            end,
            root: reader.hash()?,
        });
    }
    let sorted = ranges.windows(2).all(|w| w[0].start < w[1].start);
    let covers = ranges.first().is_some_and(|r| r.start.is_none())
        && ranges.last().is_some_and(|r| r.end.is_none());
    if !reader.0.is_empty() || !sorted || !covers {
        return Err(CorruptProgress);
    }
    Ok((db_root, ranges))
}

fn len_u32(n: usize) -> u32 {
    // Keys are at most 4 KiB and ranges a few thousand: far below u32::MAX.
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn put_bound(out: &mut Vec<u8>, bound: Option<&[u8]>) {
    match bound {
        None => out.push(0),
        Some(key) => {
            out.push(1);
            out.extend_from_slice(&len_u32(key.len()).to_be_bytes());
            out.extend_from_slice(key);
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CorruptProgress> {
        if self.0.len() < n {
            return Err(CorruptProgress);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, CorruptProgress> {
        let bytes = self.take(4)?;
        Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn hash(&mut self) -> Result<Hash, CorruptProgress> {
        self.take(32)?.try_into().map_err(|_| CorruptProgress)
    }

    fn bound(&mut self) -> Result<Option<Vec<u8>>, CorruptProgress> {
        match self.take(1)? {
            [0] => Ok(None),
            [1] => {
                let len = self.u32()? as usize;
                Ok(Some(self.take(len)?.to_vec()))
            }
            _ => Err(CorruptProgress),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: Option<&[u8]>, end: Option<&[u8]>, root: u8) -> RangeAt {
        RangeAt {
            start: start.map(<[u8]>::to_vec),
            end: end.map(<[u8]>::to_vec),
            root: [root; 32],
        }
    }

    #[test]
    fn records_round_trip_sorted_and_merged() {
        let ranges = vec![
            at(Some(b"m"), Some(b"t"), 1),
            at(None, Some(b"c"), 1),
            at(Some(b"c\0"), Some(b"m"), 1),
            at(Some(b"t\0"), None, 2),
        ];
        let bytes = encode(&[9; 32], ranges);
        let (root, decoded) = decode(&bytes).expect("decodes");
        assert_eq!(root, [9; 32]);
        assert_eq!(
            decoded,
            vec![at(None, Some(b"t"), 1), at(Some(b"t\0"), None, 2)]
        );
    }

    #[test]
    fn damaged_records_are_refused() {
        let bytes = encode(
            &[9; 32],
            vec![at(None, Some(b"k"), 1), at(Some(b"k\0"), None, 2)],
        );
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "truncated at {cut}");
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(decode(&extra).is_err(), "trailing byte");
        let mut version = bytes;
        version[0] = 2;
        assert!(decode(&version).is_err(), "unknown version");
        let gap = encode(&[9; 32], vec![at(Some(b"a"), None, 1)]);
        assert!(decode(&gap).is_err(), "does not cover the key space");
    }
}
