//! Range and change proofs: their types and their generation (avalanchego `getProof`,
//! `getRangeProof`, `GetChangeProof`). Verification is in [`crate::verify`].
//!
//! A range proof carries up to `limit` consecutive key-values from `start`, a proof path to the
//! last key returned (or to `end` if none), and a path to `start` minus the nodes it shares with
//! the end path. A change proof carries the keys whose values differ between two roots, within
//! `[start, end]`, with paths taken in the trie at the end root.

use std::collections::{BTreeMap, btree_map::Entry};

use crate::db::MerkleDb;
use crate::error::DbError;
use crate::key::Key;
use crate::node::{Hash, Node};
use crate::source::NodeSource;

/// A node on a proof path: its key, value digest and children's ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProofNode {
    /// The node's key.
    pub key: Key,
    /// The value if shorter than 32 bytes, else its SHA-256; `None` without a value.
    pub value_or_hash: Option<Vec<u8>>,
    /// Child index → child id.
    pub children: BTreeMap<u8, Hash>,
}

impl ProofNode {
    pub(crate) fn of(node: &Node) -> Self {
        Self {
            key: node.key.clone(),
            value_or_hash: node.value.digest(),
            children: node.children.iter().map(|(i, c)| (*i, c.id)).collect(),
        }
    }
}

/// A proof that `key_values` are all the key-values of a trie in a range, from its start up to
/// the last key returned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeProof {
    /// Path to the range's start, without the nodes shared with `end_proof`.
    pub start_proof: Vec<ProofNode>,
    /// Path to the last key returned, or to the range's end if none.
    pub end_proof: Vec<ProofNode>,
    /// Consecutive key-values from the range's start, by increasing key.
    pub key_values: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A proof of the value changes between two roots in a range (`None`: deleted).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChangeProof {
    /// Path to the range's start in the end trie, without the nodes shared with `end_proof`.
    pub start_proof: Vec<ProofNode>,
    /// Path to the last change, or to the range's end if none, in the end trie.
    pub end_proof: Vec<ProofNode>,
    /// Consecutive changes from the range's start, by increasing key.
    pub key_changes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

/// The path from the root towards `key` (avalanchego `getProof`): the nodes whose keys prefix
/// `key`, plus, when `key` is absent, the node sitting where it would be.
pub(crate) fn proof_path(
    src: &dyn NodeSource,
    token_bits: usize,
    key: &[u8],
) -> Result<Vec<ProofNode>, DbError> {
    let root = src.root().ok_or(DbError::EmptyTrie)?;
    let key = Key::from_bytes(key);
    let mut node = src.expect_node(&root.key, root.has_value)?;
    if !key.has_prefix(&root.key) {
        return Ok(vec![ProofNode::of(&node)]);
    }
    let mut path = Vec::new();
    loop {
        path.push(ProofNode::of(&node));
        if node.key.bit_len() >= key.bit_len() {
            return Ok(path);
        }
        let index = key.token(node.key.bit_len(), token_bits);
        let Some(child) = node.child(index) else {
            return Ok(path);
        };
        let offset = node.key.bit_len() + token_bits;
        let child_key = node.key.extend(index, token_bits, &child.compressed);
        let next = src.expect_node(&child_key, child.has_value)?;
        if !key.matches_at(offset, &child.compressed) {
            // The node where `key` would be: it proves `key` absent.
            path.push(ProofNode::of(&next));
            return Ok(path);
        }
        node = next;
    }
}

/// Drops the leading nodes `start` shares with `end` (they are in `end` already).
fn strip_shared(mut start: Vec<ProofNode>, end: &[ProofNode]) -> Vec<ProofNode> {
    let shared = start
        .iter()
        .zip(end)
        .take_while(|(a, b)| a.key == b.key)
        .count();
    start.drain(..shared);
    start
}

fn check_range(start: Option<&[u8]>, end: Option<&[u8]>, limit: usize) -> Result<(), DbError> {
    if let (Some(s), Some(e)) = (start, end)
        && s > e
    {
        return Err(DbError::StartAfterEnd);
    }
    if limit == 0 {
        return Err(DbError::ZeroLimit);
    }
    Ok(())
}

/// Start and end proofs for a response whose last key is `largest`.
fn edge_proofs(
    src: &dyn NodeSource,
    token_bits: usize,
    start: Option<&[u8]>,
    largest: Option<&[u8]>,
) -> Result<(Vec<ProofNode>, Vec<ProofNode>), DbError> {
    let end_proof = match largest {
        Some(k) => proof_path(src, token_bits, k)?,
        None => Vec::new(),
    };
    let start_proof = match start {
        Some(s) => strip_shared(proof_path(src, token_bits, s)?, &end_proof),
        None => Vec::new(),
    };
    Ok((start_proof, end_proof))
}

pub(crate) fn range_proof(
    src: &dyn NodeSource,
    token_bits: usize,
    start: Option<&[u8]>,
    end: Option<&[u8]>,
    limit: usize,
) -> Result<RangeProof, DbError> {
    check_range(start, end, limit)?;
    if src.root().is_none() {
        return Err(DbError::EmptyTrie);
    }
    let mut key_values = Vec::new();
    for entry in src.values_from(start.unwrap_or_default()) {
        let (k, v) = entry?;
        if end.is_some_and(|end| k.as_slice() > end) || key_values.len() >= limit {
            break;
        }
        key_values.push((k, v));
    }
    let largest = key_values.last().map(|(k, _)| k.as_slice()).or(end);
    let (start_proof, end_proof) = edge_proofs(src, token_bits, start, largest)?;
    Ok(RangeProof {
        start_proof,
        end_proof,
        key_values,
    })
}

impl MerkleDb {
    /// A proof of up to `limit` key-values in `[start, end]` at root `root` (current or
    /// retained). `None` bounds are unbounded.
    ///
    /// # Errors
    /// [`DbError::RootNotInHistory`], [`DbError::EmptyTrie`], [`DbError::StartAfterEnd`],
    /// [`DbError::ZeroLimit`], or a storage error.
    pub fn range_proof(
        &self,
        root: &Hash,
        start: Option<&[u8]>,
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<RangeProof, DbError> {
        check_range(start, end, limit)?;
        let tb = self.token_bits();
        self.with_root(root, |src| range_proof(src, tb, start, end, limit))
    }

    /// A proof of up to `limit` value changes in `[start, end]` from `start_root` to `end_root`.
    ///
    /// # Errors
    /// [`DbError::SameRoot`], [`DbError::EmptyTrie`] (end root empty), [`DbError::NoEndRoot`],
    /// [`DbError::InsufficientHistory`], range errors, or a storage error.
    pub fn change_proof(
        &self,
        start_root: &Hash,
        end_root: &Hash,
        start: Option<&[u8]>,
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<ChangeProof, DbError> {
        check_range(start, end, limit)?;
        if start_root == end_root {
            return Err(DbError::SameRoot);
        }
        if *end_root == crate::node::EMPTY_ROOT {
            return Err(DbError::EmptyTrie);
        }
        let tb = self.token_bits();
        self.with_change_span(start_root, end_root, |start_rev, end_rev, src| {
            let mut before: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
            for r in (start_rev + 1)..=end_rev {
                for entry in self.load_record(r)? {
                    let k = entry.key;
                    let in_range = start.is_none_or(|s| k.as_slice() >= s)
                        && end.is_none_or(|e| k.as_slice() <= e);
                    if let (true, Entry::Vacant(slot)) = (in_range, before.entry(k)) {
                        slot.insert(entry.before);
                    }
                }
            }
            let mut key_changes = Vec::new();
            for (k, old) in before {
                if key_changes.len() >= limit {
                    break;
                }
                let new = src.value(&k)?;
                if new != old {
                    key_changes.push((k, new));
                }
            }
            let largest = key_changes.last().map(|(k, _)| k.as_slice()).or(end);
            let (start_proof, end_proof) = edge_proofs(src, tb, start, largest)?;
            Ok(ChangeProof {
                start_proof,
                end_proof,
                key_changes,
            })
        })
    }
}
