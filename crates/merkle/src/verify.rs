//! Proof verification: avalanchego's checks (with the April 2025 fixes, #3688), then a
//! reconstruction of the end root that depends only on the proven range.
//!
//! A range proof is a change proof of all-present values against an empty trie; a change proof
//! is checked against the local database, whose keys **in the proven range** must be at the
//! start root. Steps, each failing with its own [`ProofError`]:
//!
//! 1. Syntax, in upstream order: bounds, emptiness, unexpected or missing edge proofs, sorted
//!    keys inside the range, then each edge path (`verifyProofPath`: strict prefixes, no value
//!    on a partial-byte key, a well-formed exclusion proof). Beyond upstream, proof node keys are
//!    whole tokens, child indices are below the branch factor, and proven keys respect
//!    [`crate::MAX_KEY_LEN`].
//! 2. Every proof node with a whole-byte key in `[start, last key or end]` carries exactly the
//!    value the proof sends for that key, or else the local one (`verifyChangeProofKeyValues`).
//! 3. The end trie is rebuilt bottom-up from the proof nodes: a child subtree that lies wholly
//!    outside the range takes the proof's id; one wholly inside is rebuilt from the local keys
//!    under it plus the changes under it; one that straddles a bound must hold the next proof
//!    node. Between a proof node and the next one down, and above the top one, no key of the
//!    range may exist. The result must be the expected root.
//!
//! Step 3 differs from upstream on purpose. avalanchego inserts the proof nodes into a view of
//! the *whole* local trie, so local branch nodes made by keys outside the range (state the
//! client synced at other roots) are rehashed into the result and honest proofs are refused.
//! Reading only in-range state makes the check exact: it accepts precisely the proofs whose
//! claim is true (up to SHA-256 collisions).

use std::collections::HashMap;
use std::sync::Arc;

use crate::db::{MAX_KEY_LEN, MerkleDb};
use crate::error::ProofError;
use crate::key::{BranchFactor, Key};
use crate::node::{Child, EMPTY_ROOT, Hash, Node, NodeValue, value_digest};
use crate::proof::{ChangeProof, ProofNode, RangeProof};
use crate::source::{EmptySource, NodeSource, RootRef, Subtree};
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
            changes: self
                .key_values
                .iter()
                .map(|(k, v)| (k.as_slice(), Some(v.as_slice())))
                .collect(),
        };
        verify_claim(&EmptySource, branch_factor, &claim, expected)
    }
}

impl MerkleDb {
    /// Verifies a change proof to root `expected` against this database, whose keys in the
    /// proof's range must be at the proof's start root (keys outside it may be at any state).
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
            changes: proof
                .key_changes
                .iter()
                .map(|(k, v)| (k.as_slice(), v.as_deref()))
                .collect(),
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
    check_syntax(claim)?;
    for node in claim.start_proof.iter().chain(claim.end_proof) {
        check_node_shape(node, bf)?;
    }
    let lo = claim.start.map(Key::from_bytes);
    let hi = claim
        .changes
        .last()
        .map(|(k, _)| *k)
        .or(claim.end)
        .map(Key::from_bytes);
    if let Some(lo) = &lo {
        verify_path(claim.start_proof, lo, bf.token_bits())?;
    }
    if let Some(hi) = &hi {
        verify_path(claim.end_proof, hi, bf.token_bits())?;
    }
    let rebuild = Rebuild {
        local: src,
        bf,
        lo,
        hi,
        changes: &claim.changes,
        change_map: claim.changes.iter().copied().collect(),
    };
    for node in claim.start_proof.iter().chain(claim.end_proof) {
        if rebuild.covers(&node.key) {
            rebuild.check_node_value(node)?;
        }
    }
    let got = rebuild.root(claim.start_proof, claim.end_proof)?;
    if got != *expected {
        return Err(ProofError::InvalidProof {
            got,
            expected: *expected,
        });
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
        if k.len() > MAX_KEY_LEN {
            return Err(ProofError::KeyTooLong {
                len: k.len(),
                max: MAX_KEY_LEN,
            });
        }
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
    if !node.key.bit_len().is_multiple_of(tb) {
        return Err(ProofError::KeyNotTokenAligned {
            bits: node.key.bit_len(),
            token_bits: tb,
        });
    }
    if node.key.packed().len() > MAX_KEY_LEN {
        return Err(ProofError::KeyTooLong {
            len: node.key.packed().len(),
            max: MAX_KEY_LEN,
        });
    }
    if let Some((&index, _)) = node.children.iter().next_back()
        && usize::from(index) >= bf.arity()
    {
        return Err(ProofError::ChildIndexOutOfRange {
            index: u32::from(index),
            arity: bf.arity(),
        });
    }
    Ok(())
}

/// avalanchego `verifyProofPath` (with #3688).
fn verify_path(proof: &[ProofNode], key: &Key, tb: usize) -> Result<(), ProofError> {
    let Some((last, init)) = proof.split_last() else {
        return Ok(());
    };
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
        if last
            .children
            .contains_key(&key.token(last.key.bit_len(), tb))
        {
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

/// Where the keys under a prefix lie relative to the proven range.
enum Span {
    Outside,
    Inside,
    Straddles,
}

/// Rebuilds the end root from the proof nodes, the local in-range keys and the changes.
struct Rebuild<'a> {
    local: &'a dyn NodeSource,
    bf: BranchFactor,
    /// Lower bound of the proven range.
    lo: Option<Key>,
    /// Upper bound of the proven range: the last change, else the requested end.
    hi: Option<Key>,
    changes: &'a [(&'a [u8], Option<&'a [u8]>)],
    change_map: HashMap<&'a [u8], Option<&'a [u8]>>,
}

impl Rebuild<'_> {
    /// Whether a key is inside the proven range.
    fn covers(&self, key: &Key) -> bool {
        self.lo.as_ref().is_none_or(|lo| key >= lo) && self.hi.as_ref().is_none_or(|hi| key <= hi)
    }

    fn span(&self, prefix: &Key) -> Span {
        let below = self
            .lo
            .as_ref()
            .is_some_and(|lo| prefix < lo && !lo.has_prefix(prefix));
        let above = self.hi.as_ref().is_some_and(|hi| prefix > hi);
        if below || above {
            return Span::Outside;
        }
        let inside = self.lo.as_ref().is_none_or(|lo| prefix >= lo)
            && self
                .hi
                .as_ref()
                .is_none_or(|hi| prefix < hi && !hi.has_prefix(prefix));
        if inside {
            Span::Inside
        } else {
            Span::Straddles
        }
    }

    /// The value a key has after the changes: the change's, else the local one.
    fn value(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ProofError> {
        match self.change_map.get(key) {
            Some(v) => Ok(v.map(<[u8]>::to_vec)),
            None => Ok(self.local.value(key)?),
        }
    }

    /// avalanchego `verifyChangeProofKeyValues` for one node in range.
    fn check_node_value(&self, node: &ProofNode) -> Result<(), ProofError> {
        if !node.key.is_whole_bytes() {
            return Ok(());
        }
        match (self.value(node.key.packed())?, &node.value_or_hash) {
            (None, Some(_)) => Err(ProofError::ProofNodeHasUnincludedValue),
            (Some(v), digest) if digest.as_deref() != Some(value_digest(&v).as_slice()) => {
                Err(ProofError::ProofValueDoesntMatch)
            }
            _ => Ok(()),
        }
    }

    /// The end root: proof nodes hashed deepest first, each from its children's ids.
    ///
    /// Each proof node is linked to its nearest proof ancestor once (a prefix stack over the
    /// nodes in key order), and only child indices that hold something — a proof child, a
    /// deeper proof node, a local subtree or a change — are visited, so the cost is linear in
    /// the proof and the range's changes, whatever the branch factor.
    fn root(&self, start_proof: &[ProofNode], end_proof: &[ProofNode]) -> Result<Hash, ProofError> {
        let mut nodes: Vec<&ProofNode> = start_proof.iter().chain(end_proof).collect();
        nodes.sort_by(|a, b| a.key.cmp(&b.key));
        nodes.dedup_by(|a, b| a.key == b.key && a == b);
        if nodes.windows(2).any(|w| w[0].key == w[1].key) {
            return Err(ProofError::ConflictingProofNodes);
        }
        // Keys sort prefixes first, so each node's nearest proof ancestor is on the stack.
        let mut kids: HashMap<&Key, Vec<&ProofNode>> = HashMap::with_capacity(nodes.len());
        let mut stack: Vec<&ProofNode> = Vec::new();
        let mut tops = Vec::new();
        for &node in &nodes {
            while stack.last().is_some_and(|s| !node.key.has_prefix(&s.key)) {
                stack.pop();
            }
            match stack.last() {
                Some(parent) => kids.entry(&parent.key).or_default().push(node),
                None => tops.push(node),
            }
            stack.push(node);
        }
        let [top] = tops.as_slice() else {
            return if tops.is_empty() {
                Ok(EMPTY_ROOT)
            } else {
                Err(ProofError::ConflictingProofNodes)
            };
        };
        self.check_gap(None, Some(&top.key))?;
        nodes.sort_by_key(|n| std::cmp::Reverse(n.key.bit_len()));
        let mut ids: HashMap<&Key, Hash> = HashMap::with_capacity(nodes.len());
        for node in nodes {
            let id = self.node_id(
                node,
                kids.get(&node.key).map_or(&[][..], Vec::as_slice),
                &ids,
            )?;
            ids.insert(&node.key, id);
        }
        Ok(ids.get(&top.key).copied().unwrap_or(EMPTY_ROOT))
    }

    /// The id of one proof node, given its proof children (`kids`, already in `ids`).
    fn node_id(
        &self,
        node: &ProofNode,
        kids: &[&ProofNode],
        ids: &HashMap<&Key, Hash>,
    ) -> Result<Hash, ProofError> {
        let tb = self.bf.token_bits();
        let bits = node.key.bit_len();
        let local = LocalChildren::at(self.local, &node.key, tb)?;
        let mut indices: Vec<u8> = node.children.keys().copied().collect();
        indices.extend(kids.iter().map(|k| k.key.token(bits, tb)));
        indices.extend(local.indices(bits, tb));
        let first = self
            .changes
            .partition_point(|(k, _)| *k < node.key.packed());
        for (k, _) in &self.changes[first..] {
            let key = Key::from_bytes(k);
            if !key.has_prefix(&node.key) {
                break;
            }
            if key.bit_len() > bits {
                indices.push(key.token(bits, tb));
            }
        }
        indices.sort_unstable();
        indices.dedup();
        let mut out = Node::new(node.key.clone());
        out.value = node
            .value_or_hash
            .clone()
            .map_or(NodeValue::None, NodeValue::Digest);
        for index in indices {
            let prefix = node.key.extend(index, tb, &Key::default());
            let mut below = kids.iter().filter(|k| k.key.has_prefix(&prefix));
            let id = match (below.next(), below.next()) {
                (Some(_), Some(_)) => return Err(ProofError::ConflictingProofNodes),
                (Some(kid), None) => {
                    self.check_gap(Some(&prefix), Some(&kid.key))?;
                    ids.get(&kid.key).copied()
                }
                (None, _) => match self.span(&prefix) {
                    Span::Outside => node.children.get(&index).copied(),
                    Span::Inside => self.subtree_id(&prefix, local.under(index, &node.key, tb))?,
                    Span::Straddles => {
                        // The proof shows no node here, so the end trie has nothing under this
                        // prefix: neither may the range.
                        self.check_gap(Some(&prefix), None)?;
                        if node.children.contains_key(&index) {
                            return Err(ProofError::ExclusionProofMissingEndNodes);
                        }
                        None
                    }
                },
            };
            if let Some(id) = id {
                out.set_child(
                    index,
                    Child {
                        compressed: Key::default(),
                        id,
                        has_value: false,
                        dirty: false,
                    },
                );
            }
        }
        Ok(out.id())
    }

    /// Fails if a key of the range lies under `outer` (anywhere when `None`) but not under
    /// `inner` (when `None`: anywhere under `outer`) — the proof shows the end trie has nothing
    /// there.
    fn check_gap(&self, outer: Option<&Key>, inner: Option<&Key>) -> Result<(), ProofError> {
        let in_gap = |k: &[u8]| {
            let key = Key::from_bytes(k);
            outer.is_none_or(|o| key.has_prefix(o)) && inner.is_none_or(|i| !key.has_prefix(i))
        };
        if self.changes.iter().any(|(k, v)| v.is_some() && in_gap(k)) {
            return Err(ProofError::UnprovenKey);
        }
        let upper = outer.and_then(prefix_successor);
        let mut from = outer.map(|o| o.packed().to_vec()).unwrap_or_default();
        loop {
            if let Some(lo) = &self.lo
                && lo.packed() > from.as_slice()
            {
                from = lo.packed().to_vec();
            }
            let mut jump = None;
            for entry in self.local.values_from(&from) {
                let (k, _) = entry?;
                let past_outer = upper.as_ref().is_some_and(|u| k >= *u);
                let past_range = self
                    .hi
                    .as_ref()
                    .is_some_and(|hi| k.as_slice() > hi.packed());
                if past_outer || past_range {
                    break;
                }
                if !in_gap(&k) {
                    // Under `inner`: skip its whole subtree.
                    jump = inner.map(prefix_successor);
                    break;
                }
                if !matches!(self.change_map.get(k.as_slice()), Some(None)) {
                    return Err(ProofError::UnprovenKey);
                }
            }
            match jump {
                Some(Some(next)) => from = next,
                _ => return Ok(()),
            }
        }
    }

    /// The id of the end trie's subtree under `prefix`, which lies wholly inside the range: the
    /// local subtree there (`local`) with the changes under `prefix` applied; `None` if empty.
    fn subtree_id(&self, prefix: &Key, local: Option<RootRef>) -> Result<Option<Hash>, ProofError> {
        let first = self.changes.partition_point(|(k, _)| *k < prefix.packed());
        let ops: Vec<(Vec<u8>, Option<Vec<u8>>)> = self.changes[first..]
            .iter()
            .take_while(|(k, _)| Key::from_bytes(k).has_prefix(prefix))
            .map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec)))
            .collect();
        if ops.is_empty() {
            return Ok(local.map(|r| r.id));
        }
        let sub = Subtree {
            base: self.local,
            root: local,
        };
        let mut builder = TrieBuilder::new(&sub, self.bf.token_bits());
        builder.apply(ops)?;
        Ok(builder.hash()?.map(|r| r.id))
    }
}

/// The local trie's content under one proof node's key: nothing, one subtree whose root lies
/// deeper (a compressed edge), or a node exactly there with its children.
enum LocalChildren {
    None,
    Deeper(RootRef),
    At(Arc<Node>),
}

impl LocalChildren {
    fn at(local: &dyn NodeSource, key: &Key, tb: usize) -> Result<Self, ProofError> {
        Ok(match subtree_root(local, key, tb)? {
            None => Self::None,
            Some(r) if r.key == *key => Self::At(local.expect_node(&r.key, r.has_value)?),
            Some(r) => Self::Deeper(r),
        })
    }

    /// Child indices (tokens after `bits` bits) under which the local trie has keys.
    fn indices(&self, bits: usize, tb: usize) -> Vec<u8> {
        match self {
            Self::None => Vec::new(),
            Self::Deeper(r) => vec![r.key.token(bits, tb)],
            Self::At(n) => n.children.iter().map(|(i, _)| *i).collect(),
        }
    }

    /// The local subtree under child `index` of the node at `key`.
    fn under(&self, index: u8, key: &Key, tb: usize) -> Option<RootRef> {
        match self {
            Self::None => None,
            Self::Deeper(r) => (r.key.token(key.bit_len(), tb) == index).then(|| r.clone()),
            Self::At(n) => n.child(index).map(|c| RootRef {
                key: key.extend(index, tb, &c.compressed),
                has_value: c.has_value,
                id: c.id,
            }),
        }
    }
}

/// The smallest byte string above every byte string that has the bit prefix `key`; `None` when
/// there is none (the prefix is all ones, or empty).
fn prefix_successor(key: &Key) -> Option<Vec<u8>> {
    let mut bytes = key.packed().to_vec();
    if let Some(last) = bytes.last_mut() {
        let rem = key.bit_len() % 8;
        if rem != 0 {
            *last |= 0xFF >> rem;
        }
    }
    while let Some(last) = bytes.pop() {
        if last != 0xFF {
            bytes.push(last + 1);
            return Some(bytes);
        }
    }
    None
}

/// The root of the local subtree holding exactly the keys under `prefix`.
fn subtree_root(
    local: &dyn NodeSource,
    prefix: &Key,
    tb: usize,
) -> Result<Option<RootRef>, ProofError> {
    let Some(root) = local.root() else {
        return Ok(None);
    };
    if root.key.has_prefix(prefix) {
        return Ok(Some(root));
    }
    if !prefix.has_prefix(&root.key) {
        return Ok(None);
    }
    let mut node = local.expect_node(&root.key, root.has_value)?;
    loop {
        let Some(child) = node.child(prefix.token(node.key.bit_len(), tb)) else {
            return Ok(None);
        };
        let child_key =
            node.key
                .extend(prefix.token(node.key.bit_len(), tb), tb, &child.compressed);
        if child_key.has_prefix(prefix) {
            return Ok(Some(RootRef {
                key: child_key,
                has_value: child.has_value,
                id: child.id,
            }));
        }
        if !prefix.has_prefix(&child_key) {
            return Ok(None);
        }
        node = local.expect_node(&child_key, child.has_value)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A long chain of proof nodes, each the prefix of the next, with every index of a
    /// branch-factor-256 node to consider: refused, in time linear in the chain (the rebuild
    /// once scanned all deeper nodes for each of the 256 indices of each node).
    #[test]
    fn long_adversarial_chain_is_refused() {
        let key: Vec<u8> = (0..1500u32).map(|i| (i % 251) as u8).collect();
        let chain: Vec<ProofNode> = (0..=key.len())
            .map(|n| ProofNode {
                key: Key::from_bytes(&key[..n]),
                value_or_hash: None,
                children: key
                    .get(n)
                    .map(|&b| (b, [7u8; 32]))
                    .into_iter()
                    .collect::<BTreeMap<_, _>>(),
            })
            .collect();
        let proof = RangeProof {
            start_proof: Vec::new(),
            end_proof: chain,
            key_values: Vec::new(),
        };
        let result = proof.verify(None, Some(&key), &[1; 32], BranchFactor::TwoFiftySix);
        assert!(
            matches!(result, Err(ProofError::InvalidProof { .. })),
            "{result:?}"
        );
    }
}
