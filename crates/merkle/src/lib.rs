//! MerkleDB: a Merkle radix trie whose root hashes equal avalanchego's `x/merkledb`.
//!
//! The base of Tributary's state sync. A [`MerkleDb`] keeps a key-value state in a
//! [`tributary_store::KvStore`] as a trie of branch factor 2, 4, 16 or 256 with avalanchego's
//! shape (a dynamic root at the longest common prefix, path compression) and node ids
//! ([`node`]), so its roots, range proofs and change proofs are interchangeable with
//! avalanchego's.
//!
//! - [`MerkleDb::view`] applies a batch to the current revision and yields the new root without
//!   writing; [`View::commit`] makes it the next revision in one atomic write.
//! - The last N revisions (default 300) serve reads and proofs by root; their history is
//!   persisted (module `history`), so it survives restarts.
//! - [`MerkleDb::range_proof`] / [`RangeProof::verify`] and [`MerkleDb::change_proof`] /
//!   [`MerkleDb::verify_change_proof`] produce and check proofs; every way a proof can be wrong
//!   is its own [`ProofError`].
//! - [`proto`] converts proofs to and from the classic `sync.proto` messages.
//!
//! Module map: [`key`] (bit strings and tokens) → [`node`] (ids and storage encoding) →
//! `trie` (the builder shared by commits, history and verification) → `persist` (storage
//! layout, durable commits, node checkpoints) → `db` (revisions, views, commits) → `proof`
//! (generation) and `verify` (verification).

mod db;
mod error;
mod history;
pub mod key;
pub mod node;
mod persist;
mod proof;
pub mod proto;
mod source;
mod sync_apply;
mod trie;
mod varint;
mod verify;

pub use db::{BatchOp, Config, KeyValue, MAX_KEY_LEN, MAX_VALUE_LEN, MerkleDb, View};
pub use error::{DbError, ProofError};
pub use key::{BranchFactor, Key};
pub use node::{EMPTY_ROOT, Hash};
pub use proof::{ChangeProof, ProofNode, RangeProof};

/// Formats a root or id as 64 lowercase hex characters.
#[must_use]
pub fn to_hex(hash: &Hash) -> String {
    db::hex(hash)
}

/// Parses 64 hex characters into a root or id.
///
/// # Errors
/// When the text is not 64 hex characters.
pub fn parse_hash(text: &str) -> Result<Hash, ParseHashError> {
    fn nibble(c: u8) -> Option<u8> {
        (c as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
    }
    let text = text.trim().as_bytes();
    if text.len() != 64 {
        return Err(ParseHashError(text.len()));
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        let (hi, lo) = (nibble(pair[0]), nibble(pair[1]));
        *byte = hi
            .zip(lo)
            .map(|(h, l)| (h << 4) | l)
            .ok_or(ParseHashError(64))?;
    }
    Ok(out)
}

/// A root given as text was not 64 hex characters.
#[derive(Debug, thiserror::Error)]
#[error("expected a root of 64 hex characters (got {0} characters, or non-hex digits)")]
pub struct ParseHashError(usize);
