//! Committing verified proofs: how a state-sync client writes what it fetched
//! (avalanchego `CommitRangeProof`, `CommitChangeProof`).
//!
//! Callers verify first; these functions only apply.

use crate::db::{BatchOp, MerkleDb};
use crate::error::DbError;
use crate::node::Hash;
use crate::proof::{ChangeProof, RangeProof};

impl MerkleDb {
    /// The operations that apply a verified range proof for `[start, end]`: its key-values,
    /// and deletes of the local keys in `[start, last key returned]` (or `[start, end]` when
    /// none) that the proof lacks.
    ///
    /// # Errors
    /// Storage errors reading the local keys.
    pub fn range_proof_ops(
        &self,
        start: Option<&[u8]>,
        end: Option<&[u8]>,
        proof: &RangeProof,
    ) -> Result<Vec<BatchOp>, DbError> {
        let largest = proof.key_values.last().map(|(k, _)| k.as_slice()).or(end);
        let proven: std::collections::HashSet<&[u8]> =
            proof.key_values.iter().map(|(k, _)| k.as_slice()).collect();
        let mut ops = Vec::with_capacity(proof.key_values.len());
        let root = self.root();
        for (k, _) in self.key_values(&root, start, largest, usize::MAX)? {
            if !proven.contains(k.as_slice()) {
                ops.push(BatchOp::Delete(k));
            }
        }
        ops.extend(
            proof
                .key_values
                .iter()
                .map(|(k, v)| BatchOp::Put(k.clone(), v.clone())),
        );
        Ok(ops)
    }

    /// The operations that apply a verified change proof: its puts and deletes.
    #[must_use]
    pub fn change_proof_ops(proof: &ChangeProof) -> Vec<BatchOp> {
        proof
            .key_changes
            .iter()
            .map(|(k, v)| match v {
                Some(v) => BatchOp::Put(k.clone(), v.clone()),
                None => BatchOp::Delete(k.clone()),
            })
            .collect()
    }

    /// Writes a verified range proof (see [`MerkleDb::range_proof_ops`]); returns the new root.
    ///
    /// # Errors
    /// Storage errors, or [`DbError::StaleView`] under a concurrent commit.
    pub fn commit_range_proof(
        &self,
        start: Option<&[u8]>,
        end: Option<&[u8]>,
        proof: &RangeProof,
    ) -> Result<Hash, DbError> {
        self.commit(self.range_proof_ops(start, end, proof)?)
    }

    /// Applies a verified change proof's puts and deletes. Returns the new root.
    ///
    /// # Errors
    /// Storage errors, or [`DbError::StaleView`] under a concurrent commit.
    pub fn commit_change_proof(&self, proof: &ChangeProof) -> Result<Hash, DbError> {
        self.commit(Self::change_proof_ops(proof))
    }
}
