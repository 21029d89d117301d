//! Errors of database operations ([`DbError`]) and of proof verification ([`ProofError`]).
//!
//! Proof errors mirror avalanchego's (`x/merkledb/proof.go`), one variant per upstream error, so
//! a sync client can tell a lying peer from a local failure: every [`ProofError`] except
//! [`ProofError::Db`] means the proof is invalid.

use crate::node::{CodecError, Hash};
use tributary_store::StoreError;

use crate::db::hex;

/// Errors of [`crate::MerkleDb`] operations.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The storage engine failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored node could not be decoded.
    #[error("corrupt node")]
    Codec(#[from] CodecError),
    /// A node that the trie references is not in the store.
    #[error("node {0} is referenced but missing: the store is corrupt")]
    MissingNode(String),
    /// Stored metadata is unreadable or inconsistent.
    #[error("corrupt database: {0}")]
    Corrupt(String),
    /// The database was written by another version of the storage layout.
    #[error(
        "database uses storage layout {0}, this build reads layout {layout}: re-create it (e.g. `state import` into a new directory)",
        layout = crate::persist::LAYOUT
    )]
    UnknownLayout(u8),
    /// The database was created with another branch factor.
    #[error("database has branch factor {stored}, but {requested} was requested")]
    BranchFactorMismatch {
        /// Arity stored in the database.
        stored: usize,
        /// Arity asked for.
        requested: usize,
    },
    /// A view was committed after another commit changed the revision it was built on.
    #[error("view was built on revision {view}, but the database is at revision {current}")]
    StaleView {
        /// The view's base revision.
        view: u64,
        /// The current revision.
        current: u64,
    },
    /// The root is neither current nor in the retained history.
    #[error("root {} is not in history", hex(.0))]
    RootNotInHistory(Hash),
    /// A change proof's end root is not in history (avalanchego `ErrNoEndRoot`).
    #[error("end root {} is not in history", hex(.0))]
    NoEndRoot(Hash),
    /// A change proof's start root is not in history before its end root
    /// (avalanchego `ErrInsufficientHistory`).
    #[error("insufficient history to prove changes from root {}", hex(.0))]
    InsufficientHistory(Hash),
    /// A change proof was asked between a root and itself.
    #[error("start root equals end root")]
    SameRoot,
    /// A proof of an empty trie was asked for (avalanchego `ErrEmptyProof`).
    #[error("cannot prove anything about an empty trie")]
    EmptyTrie,
    /// A range with start after end.
    #[error("start key is after end key")]
    StartAfterEnd,
    /// A proof with a key limit of zero.
    #[error("key limit must be greater than zero")]
    ZeroLimit,
    /// A key longer than [`crate::MAX_KEY_LEN`].
    #[error("key of {len} bytes exceeds the limit of {max}")]
    KeyTooLong {
        /// The key's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The thread writing a checkpoint panicked (a bug); its nodes stay pending.
    #[error("the checkpoint writer panicked")]
    CheckpointWriterPanicked,
    /// A value longer than [`crate::MAX_VALUE_LEN`].
    #[error("value of {len} bytes exceeds the limit of {max}")]
    ValueTooLong {
        /// The value's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Reconstructing a historical revision did not give the recorded root.
    #[error("history is corrupt: revision {revision} rebuilt to {}, recorded {}", hex(.got), hex(.recorded))]
    HistoryCorrupt {
        /// The revision.
        revision: u64,
        /// The rebuilt root.
        got: Hash,
        /// The recorded root.
        recorded: Hash,
    },
}

/// Why a range or change proof was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    /// `start > end` (`ErrStartAfterEnd`).
    #[error("start key is after end key")]
    StartAfterEnd,
    /// No key-values and no proof nodes (`ErrEmptyProof`).
    #[error("proof is empty")]
    EmptyProof,
    /// End is unbounded and nothing was returned, yet an end proof was sent
    /// (`ErrUnexpectedEndProof`).
    #[error("end proof should be empty")]
    UnexpectedEndProof,
    /// Start is unbounded, yet a start proof was sent (`ErrUnexpectedStartProof`).
    #[error("start proof should be empty")]
    UnexpectedStartProof,
    /// End is bounded or key-values were returned, but there is no end proof (`ErrNoEndProof`).
    #[error("no end proof")]
    NoEndProof,
    /// Keys not strictly increasing (`ErrNonIncreasingValues`).
    #[error("keys sent are not in increasing order")]
    NonIncreasingValues,
    /// A key outside `[start, end]` (`ErrStateFromOutsideOfRange`).
    #[error("state key falls outside of the start->end range")]
    StateFromOutsideOfRange,
    /// A proof node whose key ends inside a byte holds a value (`ErrPartialByteLengthWithValue`).
    #[error("proof node with a partial-byte key has a value")]
    PartialByteLengthWithValue,
    /// A proof node's key is not a prefix of the proven key (`ErrProofNodeNotForKey`).
    #[error("the provided path has a key that is not a prefix of the specified key")]
    ProofNodeNotForKey,
    /// Proof node keys not each a strict prefix of the next (`ErrNonIncreasingProofNodes`).
    #[error("each proof node key must be a strict prefix of the next")]
    NonIncreasingProofNodes,
    /// An exclusion proof ends at a node that has a child where the key would be
    /// (`ErrExclusionProofMissingEndNodes`).
    #[error("missing end nodes from exclusion proof path")]
    ExclusionProofMissingEndNodes,
    /// An exclusion proof's last node is not at the key's index under its parent
    /// (`ErrExclusionProofInvalidNode`).
    #[error("invalid node for exclusion proof")]
    ExclusionProofInvalidNode,
    /// A proof node in range has a value that was not sent (`ErrProofNodeHasUnincludedValue`).
    #[error(
        "the provided proof has a value for a key within the range that is not present in the provided key/values"
    )]
    ProofNodeHasUnincludedValue,
    /// A proof node in range disagrees with the sent value (`ErrProofValueDoesntMatch`).
    #[error("the provided value does not match the proof node for the provided key's value")]
    ProofValueDoesntMatch,
    /// A proof node key is not a whole number of tokens for the branch factor.
    #[error("proof node key of {bits} bits is not a whole number of {token_bits}-bit tokens")]
    KeyNotTokenAligned {
        /// The key's bit length.
        bits: usize,
        /// Bits per token.
        token_bits: usize,
    },
    /// A proof node names a child index the branch factor does not have.
    #[error("child index {index} out of range for branch factor {arity}")]
    ChildIndexOutOfRange {
        /// The index.
        index: u32,
        /// The branch factor.
        arity: usize,
    },
    /// A proven key longer than [`crate::MAX_KEY_LEN`].
    #[error("proven key of {len} bytes exceeds the limit of {max}")]
    KeyTooLong {
        /// The key's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Proof nodes that do not form one trie: two different nodes at one key or one position,
    /// a node outside the top node's subtree, or a node no other node leads to.
    #[error("proof nodes do not form a trie")]
    ConflictingProofNodes,
    /// A key of the range (sent, or held locally and not deleted by the proof) lies where the
    /// proof shows the trie has nothing.
    #[error("a key in the proven range is not accounted for by the proof")]
    UnprovenKey,
    /// The proof does not produce the expected root (`ErrInvalidProof`).
    #[error("proof obtained an invalid root ID: {}, expected {}", hex(.got), hex(.expected))]
    InvalidProof {
        /// The root the proof produced.
        got: Hash,
        /// The root it should have produced.
        expected: Hash,
    },
    /// The local database failed while verifying (not the peer's fault).
    #[error("local database failed")]
    Db(#[from] DbError),
}

impl ProofError {
    /// Whether the error proves the proof wrong (as opposed to a local failure).
    #[must_use]
    pub const fn is_peer_fault(&self) -> bool {
        !matches!(self, Self::Db(_))
    }
}
