//! How a downstream node persists what it synced of an upstream bin: one sync record per
//! (peer overlay, bin) in the chunk store's `chunk.sync` keyspace, holding the upstream's epoch
//! and the merged [`Intervals`].
//!
//! | key | value |
//! |---|---|
//! | `pull` ‖ peer overlay (32 B) ‖ bin (1 B) | epoch (u64 BE) ‖ for each range: start, end (u64 BE) |
//!
//! A record that does not decode is treated as absent: the bin is synced again, which costs
//! offers but loses nothing.

use tributary_chunk::Address;

use crate::intervals::Intervals;

/// Bin ids start at 1 in the pull index; so do intervals.
pub const FIRST_BIN_ID: u64 = 1;

/// The record key of `peer`'s `bin`.
#[must_use]
pub fn key(peer: &Address, bin: u8) -> Vec<u8> {
    let mut key = Vec::with_capacity(37);
    key.extend_from_slice(b"pull");
    key.extend_from_slice(&peer.0);
    key.push(bin);
    key
}

/// The record value of `intervals` synced in the upstream's `epoch`.
#[must_use]
pub fn encode(epoch: u64, intervals: &Intervals) -> Vec<u8> {
    let mut value = Vec::with_capacity(8 + 16 * intervals.ranges().len());
    value.extend_from_slice(&epoch.to_be_bytes());
    for &(a, b) in intervals.ranges() {
        value.extend_from_slice(&a.to_be_bytes());
        value.extend_from_slice(&b.to_be_bytes());
    }
    value
}

/// Decodes a record value into its epoch and intervals; `None` if it is malformed.
#[must_use]
pub fn decode(value: &[u8]) -> Option<(u64, Intervals)> {
    let (epoch, ranges) = value.split_first_chunk::<8>()?;
    if ranges.len() % 16 != 0 {
        return None;
    }
    let ranges = ranges.chunks_exact(16).map(|r| {
        let (a, b) = r.split_at(8);
        (be(a), be(b))
    });
    Some((
        u64::from_be_bytes(*epoch),
        Intervals::from_ranges(FIRST_BIN_ID, ranges),
    ))
}

fn be(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(bytes);
    u64::from_be_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_malformed_ones_are_absent() {
        let intervals = Intervals::from_ranges(1, [(1, 10), (20, 20), (30, 99)]);
        let value = encode(42, &intervals);
        assert_eq!(decode(&value), Some((42, intervals)));
        assert_eq!(decode(&value[..value.len() - 1]), None);
        assert_eq!(decode(&[1, 2, 3]), None);
        assert_eq!(
            decode(&encode(7, &Intervals::new(1))),
            Some((7, Intervals::new(1)))
        );
        assert_eq!(key(&Address([9; 32]), 31).len(), 37);
    }
}
