//! Addresses, proximity order, and chunks validated against their address.

use std::fmt;
use std::str::FromStr;

use crate::ChunkError;
use crate::bmt::{self, CHUNK_SIZE};

/// The largest proximity order, as bee's `swarm.MaxPO`: bins are 0 to 31.
pub const MAX_PO: u8 = 31;

/// A 32-byte Swarm address: of a chunk, a file reference, or a node's overlay.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Address(pub [u8; 32]);

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({self})")
    }
}

impl FromStr for Address {
    type Err = ChunkError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ChunkError::BadAddress(s.to_owned());
        let text = s.trim().as_bytes();
        if text.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
            let digit = |c: u8| (c as char).to_digit(16);
            let (hi, lo) = (
                digit(pair[0]).ok_or_else(bad)?,
                digit(pair[1]).ok_or_else(bad)?,
            );
            *byte = u8::try_from(hi * 16 + lo).map_err(|_| bad())?;
        }
        Ok(Self(out))
    }
}

/// The proximity order of two addresses: the number of leading bits they share, at most
/// [`MAX_PO`] (bee `swarm.Proximity`).
#[must_use]
pub fn proximity(a: &Address, b: &Address) -> u8 {
    let mut po = 0u32;
    for (x, y) in a.0.iter().zip(&b.0) {
        let diff = x ^ y;
        if diff != 0 {
            po += diff.leading_zeros();
            break;
        }
        po += 8;
    }
    po.min(u32::from(MAX_PO)) as u8
}

/// A chunk whose address matches its content: `data` is the wire form, span (u64
/// little-endian) followed by a payload of at most 4096 bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Chunk {
    address: Address,
    data: Vec<u8>,
}

impl fmt::Debug for Chunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Chunk({}, span {}, {} bytes)",
            self.address,
            self.span(),
            self.payload().len()
        )
    }
}

impl Chunk {
    /// A chunk of `payload` covering `span` bytes of data (for a leaf, the payload's length;
    /// for an intermediate chunk, the bytes below it).
    ///
    /// # Errors
    /// [`ChunkError::PayloadTooLong`].
    pub fn new(span: u64, payload: &[u8]) -> Result<Self, ChunkError> {
        let address = Address(bmt::chunk_address(span, payload)?);
        let mut data = Vec::with_capacity(8 + payload.len());
        data.extend_from_slice(&span.to_le_bytes());
        data.extend_from_slice(payload);
        Ok(Self { address, data })
    }

    /// The chunk whose wire form is `data`, with the address it hashes to.
    ///
    /// # Errors
    /// [`ChunkError::TooShort`] or [`ChunkError::PayloadTooLong`].
    pub fn from_wire(data: Vec<u8>) -> Result<Self, ChunkError> {
        let (span, payload) = split(&data)?;
        let address = Address(bmt::chunk_address(span, payload)?);
        Ok(Self { address, data })
    }

    /// Checks untrusted `data` against the `address` it was fetched or offered under.
    ///
    /// # Errors
    /// [`ChunkError::AddressMismatch`] when it hashes elsewhere, or a malformed-data error.
    pub fn validate(address: Address, data: Vec<u8>) -> Result<Self, ChunkError> {
        let chunk = Self::from_wire(data)?;
        if chunk.address != address {
            return Err(ChunkError::AddressMismatch {
                claimed: address,
                actual: chunk.address,
            });
        }
        Ok(chunk)
    }

    /// The chunk's address.
    #[must_use]
    pub const fn address(&self) -> Address {
        self.address
    }

    /// The span: how many bytes of data the chunk covers.
    #[must_use]
    pub fn span(&self) -> u64 {
        split(&self.data).map_or(0, |(span, _)| span)
    }

    /// The payload (data for a leaf, child references for an intermediate chunk).
    #[must_use]
    pub fn payload(&self) -> &[u8] {
        &self.data[8..]
    }

    /// The wire form: span ‖ payload.
    #[must_use]
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The wire form, by value.
    #[must_use]
    pub fn into_data(self) -> Vec<u8> {
        self.data
    }
}

fn split(data: &[u8]) -> Result<(u64, &[u8]), ChunkError> {
    let (span, payload) = data
        .split_first_chunk::<8>()
        .ok_or(ChunkError::TooShort(data.len()))?;
    if payload.len() > CHUNK_SIZE {
        return Err(ChunkError::PayloadTooLong(payload.len()));
    }
    Ok((u64::from_le_bytes(*span), payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proximity_counts_leading_shared_bits_up_to_31() {
        let a = Address([0; 32]);
        let mut b = [0u8; 32];
        b[0] = 0x80;
        assert_eq!(proximity(&a, &Address(b)), 0);
        b[0] = 0x01;
        assert_eq!(proximity(&a, &Address(b)), 7);
        b[0] = 0;
        b[2] = 0x20;
        assert_eq!(proximity(&a, &Address(b)), 18);
        assert_eq!(proximity(&a, &a), MAX_PO);
    }

    #[test]
    fn address_text_round_trips_and_rejects_bad_input() {
        let a = Address([0xAB; 32]);
        assert_eq!(a.to_string().parse::<Address>(), Ok(a));
        assert!("ab".parse::<Address>().is_err());
        assert!("zz".repeat(32).parse::<Address>().is_err());
        assert!("é".repeat(32).parse::<Address>().is_err());
    }
}
