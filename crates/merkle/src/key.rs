//! Keys as token sequences, as avalanchego's merkledb `Key`.
//!
//! A key is a string of bits packed MSB-first into bytes whose padding bits are zero. A trie of
//! branch factor 2, 4, 16 or 256 reads keys one *token* of 1, 2, 4 or 8 bits at a time. Byte keys
//! given by users are whole bytes; keys of interior nodes may end inside a byte.
//!
//! Ordering matches avalanchego's `Key.Compare`: by the packed bytes, then by bit length, so a
//! prefix sorts before every key it prefixes.

use std::cmp::Ordering;

use smallvec::SmallVec;

/// Key bytes, inline up to 32 bytes (the common key size), so most keys never allocate.
type Bytes = SmallVec<[u8; 32]>;

/// The number of children a trie node may have: 2, 4, 16 (avalanchego's default) or 256.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum BranchFactor {
    /// 1-bit tokens.
    Two,
    /// 2-bit tokens.
    Four,
    /// 4-bit tokens (nibbles). The default.
    #[default]
    Sixteen,
    /// 8-bit tokens (bytes).
    TwoFiftySix,
}

impl BranchFactor {
    /// Bits per token.
    #[must_use]
    pub const fn token_bits(self) -> usize {
        match self {
            Self::Two => 1,
            Self::Four => 2,
            Self::Sixteen => 4,
            Self::TwoFiftySix => 8,
        }
    }

    /// The number of children a node may have.
    #[must_use]
    pub const fn arity(self) -> usize {
        1 << self.token_bits()
    }

    /// The branch factor with `arity` children, if it is one of 2, 4, 16, 256.
    #[must_use]
    pub const fn from_arity(arity: usize) -> Option<Self> {
        match arity {
            2 => Some(Self::Two),
            4 => Some(Self::Four),
            16 => Some(Self::Sixteen),
            256 => Some(Self::TwoFiftySix),
            _ => None,
        }
    }
}

/// A bit string: `bits` bits packed MSB-first into `bytes`, padding bits zero.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Key {
    bits: usize,
    bytes: Bytes,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({}b:", self.bits)?;
        for b in &self.bytes {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

const fn bytes_for(bits: usize) -> usize {
    bits.div_ceil(8)
}

/// Zeroes the padding bits after `bits` in the last byte of `bytes`.
fn mask_padding(bytes: &mut [u8], bits: usize) {
    let rem = bits % 8;
    if rem != 0
        && let Some(last) = bytes.last_mut()
    {
        *last &= 0xFF << (8 - rem);
    }
}

impl Key {
    /// The key of a whole-byte string.
    #[must_use]
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self {
            bits: bytes.len() * 8,
            bytes: Bytes::from_slice(bytes),
        }
    }

    /// A key of `bits` bits taken from `bytes`, which must hold exactly `ceil(bits/8)` bytes;
    /// padding bits are masked. Returns `None` when the length does not match.
    #[must_use]
    pub fn from_packed(bits: usize, bytes: Vec<u8>) -> Option<Self> {
        if bytes.len() != bytes_for(bits) {
            return None;
        }
        let mut bytes = Bytes::from_vec(bytes);
        mask_padding(&mut bytes, bits);
        Some(Self { bits, bytes })
    }

    /// Length in bits.
    #[must_use]
    pub const fn bit_len(&self) -> usize {
        self.bits
    }

    /// The packed bytes (padding bits zero).
    #[must_use]
    pub fn packed(&self) -> &[u8] {
        &self.bytes
    }

    /// Whether the key is a whole number of bytes (only such keys may hold values).
    #[must_use]
    pub const fn is_whole_bytes(&self) -> bool {
        self.bits.is_multiple_of(8)
    }

    /// The token of `token_bits` bits starting at bit `offset`.
    ///
    /// Callers guarantee `offset + token_bits <= bit_len()` and that tokens do not straddle
    /// bytes (offsets are multiples of `token_bits`, which divides 8).
    #[must_use]
    pub fn token(&self, offset: usize, token_bits: usize) -> u8 {
        debug_assert!(
            offset + token_bits <= self.bits,
            "token past the end of {self:?}"
        );
        let byte = self.bytes[offset / 8];
        let shift = 8 - token_bits - offset % 8;
        let mask = ((1u16 << token_bits) - 1) as u8;
        (byte >> shift) & mask
    }

    /// The first `bits` bits.
    #[must_use]
    pub fn take(&self, bits: usize) -> Self {
        debug_assert!(bits <= self.bits);
        let mut bytes = Bytes::from_slice(&self.bytes[..bytes_for(bits)]);
        mask_padding(&mut bytes, bits);
        Self { bits, bytes }
    }

    /// Everything after the first `bits` bits.
    #[must_use]
    pub fn skip(&self, bits: usize) -> Self {
        debug_assert!(bits <= self.bits);
        let len = self.bits - bits;
        let start = bits / 8;
        let shift = bits % 8;
        let mut bytes = Bytes::with_capacity(bytes_for(len));
        if shift == 0 {
            bytes.extend_from_slice(&self.bytes[start..]);
        } else {
            for i in start..self.bytes.len() {
                let next = self.bytes.get(i + 1).copied().unwrap_or(0);
                bytes.push((self.bytes[i] << shift) | (next >> (8 - shift)));
            }
        }
        bytes.truncate(bytes_for(len));
        mask_padding(&mut bytes, len);
        Self { bits: len, bytes }
    }

    /// Appends the bits of `other`.
    fn append(&mut self, other: &Self) {
        let shift = self.bits % 8;
        if shift == 0 {
            self.bytes.extend_from_slice(&other.bytes);
        } else {
            for &b in &other.bytes {
                if let Some(last) = self.bytes.last_mut() {
                    *last |= b >> shift;
                }
                self.bytes.push(b << (8 - shift));
            }
        }
        self.bits += other.bits;
        self.bytes.truncate(bytes_for(self.bits));
        mask_padding(&mut self.bytes, self.bits);
    }

    /// This key followed by one token and then `tail`: the full key of a child.
    #[must_use]
    pub fn extend(&self, token: u8, token_bits: usize, tail: &Self) -> Self {
        let mut out = Self {
            bits: self.bits,
            bytes: Bytes::with_capacity(bytes_for(self.bits + token_bits + tail.bits)),
        };
        out.bytes.extend_from_slice(&self.bytes);
        out.append(&Self::token_key(token, token_bits));
        out.append(tail);
        out
    }

    /// A one-token key.
    fn token_key(token: u8, token_bits: usize) -> Self {
        Self {
            bits: token_bits,
            bytes: smallvec::smallvec![token << (8 - token_bits)],
        }
    }

    /// Whether `prefix` is a prefix of this key (every key is a prefix of itself).
    #[must_use]
    pub fn has_prefix(&self, prefix: &Self) -> bool {
        if prefix.bits > self.bits {
            return false;
        }
        let whole = prefix.bits / 8;
        if self.bytes[..whole] != prefix.bytes[..whole] {
            return false;
        }
        let rem = prefix.bits % 8;
        rem == 0 || (self.bytes[whole] & (0xFF << (8 - rem))) == prefix.bytes[whole]
    }

    /// Whether `prefix` is a prefix of this key and shorter than it.
    #[must_use]
    pub fn has_strict_prefix(&self, prefix: &Self) -> bool {
        prefix.bits < self.bits && self.has_prefix(prefix)
    }

    /// Whether the bits of `part` appear in this key starting at bit `offset`.
    #[must_use]
    pub fn matches_at(&self, offset: usize, part: &Self) -> bool {
        if offset + part.bits > self.bits {
            return false;
        }
        if offset.is_multiple_of(8) {
            let start = offset / 8;
            let whole = part.bits / 8;
            if self.bytes[start..start + whole] != part.bytes[..whole] {
                return false;
            }
            let rem = part.bits % 8;
            return rem == 0
                || (self.bytes[start + whole] & (0xFF << (8 - rem))) == part.bytes[whole];
        }
        (0..part.bits).all(|i| self.bit(offset + i) == part.bit(i))
    }

    fn bit(&self, i: usize) -> bool {
        self.bytes[i / 8] & (0x80 >> (i % 8)) != 0
    }

    /// The length in bits of the longest common prefix of `first` and `second[offset..]`,
    /// counted in whole tokens of `token_bits`.
    #[must_use]
    pub fn common_prefix_bits(
        first: &Self,
        second: &Self,
        offset: usize,
        token_bits: usize,
    ) -> usize {
        let mut n = 0;
        while n + token_bits <= first.bits
            && offset + n + token_bits <= second.bits
            && first.token(n, token_bits) == second.token(offset + n, token_bits)
        {
            n += token_bits;
        }
        n
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        self.bytes
            .cmp(&other.bytes)
            .then(self.bits.cmp(&other.bits))
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(bits: usize, bytes: &[u8]) -> Key {
        Key::from_packed(bits, bytes.to_vec()).expect("valid packed key")
    }

    #[test]
    fn tokens_for_every_branch_factor() {
        let key = Key::from_bytes(&[0b1011_0010]);
        assert_eq!(key.token(0, 1), 1);
        assert_eq!(key.token(1, 1), 0);
        assert_eq!(key.token(2, 2), 0b11);
        assert_eq!(key.token(4, 4), 0b0010);
        assert_eq!(key.token(0, 8), 0b1011_0010);
    }

    #[test]
    fn take_skip_extend_round_trip() {
        let key = Key::from_bytes(&[0xAB, 0xCD, 0xEF]);
        for cut in 0..=24 {
            let head = key.take(cut);
            let tail = key.skip(cut);
            assert_eq!(head.bit_len() + tail.bit_len(), 24);
            let mut joined = head.clone();
            joined.append(&tail);
            assert_eq!(joined, key, "cut at {cut}");
            assert!(key.has_prefix(&head));
        }
        let ext = k(4, &[0xA0]).extend(0xB, 4, &k(12, &[0xCD, 0xE0]));
        assert_eq!(ext, k(20, &[0xAB, 0xCD, 0xE0]));
    }

    #[test]
    fn padding_is_masked_and_ordering_puts_prefixes_first() {
        assert_eq!(k(4, &[0xAF]).packed(), &[0xA0]);
        assert!(Key::from_packed(4, vec![]).is_none());
        assert!(k(4, &[0xA0]) < Key::from_bytes(&[0xA0]));
        assert!(Key::from_bytes(&[0x01]) < Key::from_bytes(&[0x01, 0x00]));
        assert!(Key::from_bytes(&[0x01, 0xFF]) < Key::from_bytes(&[0x02]));
    }

    #[test]
    fn common_prefix_is_token_aligned() {
        let a = Key::from_bytes(&[0x12, 0x34]);
        let b = Key::from_bytes(&[0x12, 0x3F]);
        assert_eq!(Key::common_prefix_bits(&a, &b, 0, 4), 12);
        assert_eq!(Key::common_prefix_bits(&a, &b, 0, 8), 8);
        assert_eq!(Key::common_prefix_bits(&a.skip(4), &b, 4, 4), 8);
    }
}
