//! Proof verification, as avalanchego's `VerifyChangeProof` with the April 2025 fixes (#3688).
//!
//! A range proof is verified as a change proof of all-present values against an empty trie; a
//! change proof against the local database, whose keys in the proven range must be at the start
//! root (the state a sync client is in). Steps, each failing with its own [`ProofError`]:
//!
//! 1. Syntax, in upstream order: bounds, emptiness, unexpected or missing edge proofs, sorted
//!    keys inside the range, then each edge path (`verifyProofPath`: strict prefixes, no value
//!    on a partial-byte key, and a well-formed exclusion proof).
//! 2. Every proof node with a whole-byte key in `[start, last key or end]` carries exactly the
//!    value the proof sends for that key, or else the local one.
//! 3. The local trie plus the changes, plus the proof nodes inserted deepest first with their
//!    digests forced and their children outside the range copied in, must hash to the root.
//!
//! Beyond upstream, proof node keys must be whole tokens and child indices below the branch
//! factor; no honest server produces anything else, and the builder relies on both.

use std::collections::HashMap;

use crate::db::MerkleDb;
use crate::error::ProofError;
use crate::key::{BranchFactor, Key};
use crate::node::{EMPTY_ROOT, Hash, value_digest};
use crate::proof::{ChangeProof, ProofNode, RangeProof};
use crate::source::{EmptySource, NodeSource};
use crate::trie::TrieBuilder;

/// The parts of a proof that verification looks at.
struct Claim<'a> {
    start: Option<&'a [u8]>,
    end: Option<&'a [u8]>,
    start_proof: &'a [ProofNode],
    end_proof: &'a [ProofNode],
    changes: Vec<(&'a [u8], Option<&'a [u8]>)>,
}

impl RangeProof {
    /// Verifies that this proof shows the key-values of the trie with root `expected` from
    /// `start` up to its last key (or `end`).
    ///
    /// # Errors
    /// The [`ProofError`] of the first check that fails.
    pub fn verify(
        &self,
        start: Option<&[u8]>,
        end: Option<&[u8]>,
        expected: &Hash,
        branch_factor: BranchFactor,
    ) -> Result<(), ProofError> {
        let claim = Claim {
            start,
            end,
            start_proof: &self.start_proof,
            end_proof: &self.end_proof,
            changes: self.key_values.iter().map(|(k, v)| (k.as_slice(), Some(v.as_slice()))).collect(),
        };
        verify_claim(&EmptySource, branch_factor, &claim, expected)
    }
}

impl MerkleDb {
    /// Verifies a change proof to root `expected` against this database, whose keys in the
    /// proof's range must be at the proof's start root.
    ///
    /// # Errors
    /// The [`ProofError`] of the first check that fails; [`ProofError::Db`] if the local
    /// database fails.
    pub fn verify_change_proof(
        &self,
        proof: &ChangeProof,
        start: Option<&[u8]>,
        end: Option<&[u8]>,
        expected: &Hash,
    ) -> Result<(), ProofError> {
        let claim = Claim {
            start,
            end,
            start_proof: &proof.start_proof,
            end_proof: &proof.end_proof,
            changes: proof.key_changes.iter().map(|(k, v)| (k.as_slice(), v.as_deref())).collect(),
        };
        let bf = self.branch_factor();
        self.with_current(|src| Ok(verify_claim(src, bf, &claim, expected)))?
    }
}

fn verify_claim(
    src: &dyn NodeSource,
    bf: BranchFactor,
    claim: &Claim<'_>,
    expected: &Hash,
) -> Result<(), ProofError> {
    let tb = bf.token_bits();
    check_syntax(claim)?;
    for node in claim.start_proof.iter().chain(claim.end_proof) {
        check_node_shape(node, bf)?;
    }
    let start_key = claim.start.map(Key::from_bytes);
    let end_proof_key = claim.changes.last().map(|(k, _)| *k).or(claim.end).map(Key::from_bytes);
    if let Some(start_key) = &start_key {
        verify_path(claim.start_proof, start_key, tb)?;
    }
    if let Some(end_key) = &end_proof_key {
        verify_path(claim.end_proof, end_key, tb)?;
    }
    let changes: HashMap<&[u8], Option<&[u8]>> = claim.changes.iter().copied().collect();
    for node in claim.start_proof.iter().chain(claim.end_proof) {
        let in_range = node.key.is_whole_bytes()
            && start_key.as_ref().is_none_or(|s| node.key >= *s)
            && end_proof_key.as_ref().is_none_or(|e| node.key <= *e);
        if in_range {
            check_node_value(src, node, &changes)?;
        }
    }
    let mut builder = TrieBuilder::new(src, tb);
    builder.apply(claim.changes.iter().map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec))).collect())?;
    for node in claim.start_proof.iter().rev().chain(claim.end_proof.iter().rev()) {
        builder.add_proof_node(
            &node.key,
            node.value_or_hash.as_deref(),
            &node.children,
            start_key.as_ref(),
            end_proof_key.as_ref(),
        )?;
    }
    let got = builder.hash()?.map_or(EMPTY_ROOT, |r| r.id);
    if got != *expected {
        return Err(ProofError::InvalidProof { got, expected: *expected });
    }
    Ok(())
}

/// avalanchego `validateChangeProof`, up to the path checks.
fn check_syntax(claim: &Claim<'_>) -> Result<(), ProofError> {
    let no_changes = claim.changes.is_empty();
    if let (Some(s), Some(e)) = (claim.start, claim.end)
        && s > e
    {
        return Err(ProofError::StartAfterEnd);
    }
    if no_changes && claim.start_proof.is_empty() && claim.end_proof.is_empty() {
        return Err(ProofError::EmptyProof);
    }
    if claim.end.is_none() && no_changes && !claim.end_proof.is_empty() {
        return Err(ProofError::UnexpectedEndProof);
    }
    if claim.start.is_none() && !claim.start_proof.is_empty() {
        return Err(ProofError::UnexpectedStartProof);
    }
    if claim.end_proof.is_empty() && (claim.end.is_some() || !no_changes) {
        return Err(ProofError::NoEndProof);
    }
    for (i, (k, _)) in claim.changes.iter().enumerate() {
        if claim.changes.get(i + 1).is_some_and(|(next, _)| k >= next) {
            return Err(ProofError::NonIncreasingValues);
        }
        if claim.start.is_some_and(|s| *k < s) || claim.end.is_some_and(|e| *k > e) {
            return Err(ProofError::StateFromOutsideOfRange);
        }
    }
    Ok(())
}

fn check_node_shape(node: &ProofNode, bf: BranchFactor) -> Result<(), ProofError> {
    let tb = bf.token_bits();
    if node.key.bit_len() % tb != 0 {
        return Err(ProofError::KeyNotTokenAligned { bits: node.key.bit_len(), token_bits: tb });
    }
    if let Some((&index, _)) = node.children.iter().next_back()
        && usize::from(index) >= bf.arity()
    {
        return Err(ProofError::ChildIndexOutOfRange { index: u32::from(index), arity: bf.arity() });
    }
    Ok(())
}

/// avalanchego `verifyProofPath` (with #3688).
fn verify_path(proof: &[ProofNode], key: &Key, tb: usize) -> Result<(), ProofError> {
    let Some((last, init)) = proof.split_last() else { return Ok(()) };
    for (i, node) in init.iter().enumerate() {
        if !node.key.is_whole_bytes() && node.value_or_hash.is_some() {
            return Err(ProofError::PartialByteLengthWithValue);
        }
        if !key.has_strict_prefix(&node.key) {
            return Err(ProofError::ProofNodeNotForKey);
        }
        if !proof[i + 1].key.has_strict_prefix(&node.key) {
            return Err(ProofError::NonIncreasingProofNodes);
        }
    }
    if !last.key.is_whole_bytes() && last.value_or_hash.is_some() {
        return Err(ProofError::PartialByteLengthWithValue);
    }
    if last.key == *key {
        return Ok(());
    }
    if key.has_prefix(&last.key) {
        if last.children.contains_key(&key.token(last.key.bit_len(), tb)) {
            return Err(ProofError::ExclusionProofMissingEndNodes);
        }
    } else if let Some(parent) = init.last() {
        let bits = parent.key.bit_len() + tb;
        if last.key.bit_len() < bits || !key.has_prefix(&last.key.take(bits)) {
            return Err(ProofError::ExclusionProofInvalidNode);
        }
    }
    Ok(())
}

/// avalanchego `verifyChangeProofKeyValues` for one node.
fn check_node_value(
    src: &dyn NodeSource,
    node: &ProofNode,
    changes: &HashMap<&[u8], Option<&[u8]>>,
) -> Result<(), ProofError> {
    let key = node.key.packed();
    let value = match changes.get(key) {
        Some(v) => v.map(<[u8]>::to_vec),
        None => src.value(key)?,
    };
    match (value, &node.value_or_hash) {
        (None, Some(_)) => Err(ProofError::ProofNodeHasUnincludedValue),
        (Some(v), digest) if digest.as_deref() != Some(value_digest(&v).as_slice()) => {
            Err(ProofError::ProofValueDoesntMatch)
        }
        _ => Ok(()),
    }
}
