//! Unsigned LEB128 varints, as Go's `binary.PutUvarint`, with strict (canonical) decoding.

/// Appends `v` as an unsigned varint.
pub(crate) fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Encodes `v` into `buf` and returns the bytes used.
pub(crate) fn encode(buf: &mut [u8; 10], mut v: u64) -> &[u8] {
    let mut n = 0;
    while v >= 0x80 {
        buf[n] = (v as u8) | 0x80;
        v >>= 7;
        n += 1;
    }
    buf[n] = v as u8;
    &buf[..=n]
}

/// Decodes a canonical varint from the front of `buf`: the value and the bytes used. `None` if
/// truncated, longer than 10 bytes, overflowing, or not in shortest form.
pub(crate) fn get(buf: &[u8]) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    for (i, &b) in buf.iter().enumerate().take(10) {
        let part = u64::from(b & 0x7F);
        if i == 9 && b > 1 {
            return None;
        }
        v |= part << (7 * i);
        if b & 0x80 == 0 {
            // A final zero byte after the first is a padded, non-canonical encoding.
            if i > 0 && b == 0 {
                return None;
            }
            return Some((v, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_reject_non_canonical() {
        for v in [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            let mut buf = Vec::new();
            put(&mut buf, v);
            assert_eq!(get(&buf), Some((v, buf.len())));
        }
        assert_eq!(get(&[0x80, 0x00]), None);
        assert_eq!(get(&[0x80]), None);
        assert_eq!(get(&[0xFF; 11]), None);
    }
}
