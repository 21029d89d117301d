//! Swarm-compatible content-addressed chunks: the data that chunk streams sync.
//!
//! - [`bmt`]: the Binary Merkle Tree address of a chunk and inclusion proofs for its segments.
//! - [`Address`] and [`proximity`]: 32-byte addresses and the proximity order between them,
//!   the one definition the overlay network shares.
//! - [`Chunk`]: a validated chunk (its address matches its content).
//! - [`file`]: the streaming splitter that turns a byte stream into a tree of chunks and the
//!   joiner that streams it back, verifying every chunk, with byte ranges.
//!
//! Compatibility is correctness here: addresses and file references equal Swarm's (bee's), as
//! the vectors in `shared/vectors/swarm.json` check.

pub mod bmt;
mod chunk;
pub mod file;
mod hasher;
pub mod store;

pub use chunk::{Address, Chunk, MAX_PO, proximity};

/// Errors of chunk construction and validation.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// A payload longer than 4096 bytes.
    #[error("chunk payload of {0} bytes exceeds 4096")]
    PayloadTooLong(usize),
    /// Chunk data shorter than its 8-byte span.
    #[error("chunk data of {0} bytes is shorter than the 8-byte span")]
    TooShort(usize),
    /// A segment index past 127.
    #[error("segment index {0} is out of range (0 to 127)")]
    SegmentIndex(usize),
    /// The content does not hash to the claimed address.
    #[error("chunk content hashes to {actual}, not to its address {claimed}")]
    AddressMismatch {
        /// The address claimed.
        claimed: Address,
        /// The address of the content.
        actual: Address,
    },
    /// Text that is not a 64-hex-character address.
    #[error("not an address (64 hex characters): {0:?}")]
    BadAddress(String),
}
