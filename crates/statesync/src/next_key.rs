//! x/sync's `findNextKey`: after an answer that stopped at `largest` (its key limit), where
//! the rest of the range can first differ from what the database already holds.
//!
//! The answer's end proof is the path to `largest` in the peer's trie at the root asked for
//! (verified with the answer); the database's own path to `largest` comes from the database
//! with the answer applied. Every key after `largest` lies under a child, with an index after
//! `largest`'s token, of a node on that path. Walking the nodes deepest first (deeper subtrees
//! hold smaller keys) and their children in index order, the first child whose id differs
//! between the two tries is where the next request must start; children with equal ids hold
//! identical subtrees (the id hashes the whole subtree), so they need not be fetched. A node on
//! one path but not the other cannot be compared: the search stops there, conservatively.
//! Nothing differing means the whole rest of the range already matches.

use std::collections::BTreeMap;

use tributary_merkle::{Hash, Key, ProofNode};

/// What follows `largest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Next {
    /// The paths cannot be compared: go on right after `largest` (upstream's fallback).
    Fallback,
    /// Every key after `largest` and before the smallest key starting with this token path
    /// already matches.
    At(Key),
    /// Every key after `largest` already matches.
    RestMatches,
}

/// Where the tries first differ after `largest` (see the module documentation).
pub(crate) fn first_difference(
    largest: &[u8],
    remote: &[ProofNode],
    local: &[ProofNode],
    token_bits: usize,
) -> Next {
    let target = Key::from_bytes(largest);
    let on_path = |n: &&ProofNode| target.has_prefix(&n.key);
    // Both paths must reach `largest` itself (it was proven to exist and has been applied);
    // otherwise, say the last change proven was a deletion, do not skip.
    let reaches = |path: &[ProofNode]| {
        path.last().is_some_and(|n| n.key == target) && path.iter().all(|n| on_path(&n))
    };
    if !reaches(remote) || !reaches(local) {
        return Next::Fallback;
    }
    let remote: BTreeMap<usize, &BTreeMap<u8, Hash>> = remote
        .iter()
        .map(|n| (n.key.bit_len(), &n.children))
        .collect();
    let local: BTreeMap<usize, &BTreeMap<u8, Hash>> = local
        .iter()
        .map(|n| (n.key.bit_len(), &n.children))
        .collect();
    let mut depths: Vec<usize> = remote.keys().chain(local.keys()).copied().collect();
    depths.sort_unstable_by(|a, b| b.cmp(a));
    depths.dedup();
    let arity = 1usize << token_bits;
    for bits in depths {
        let prefix = target.take(bits);
        // Children after `largest`'s token here; all children of `largest`'s own node.
        let first = if bits == target.bit_len() {
            0
        } else {
            usize::from(target.token(bits, token_bits)) + 1
        };
        let (Some(r), Some(l)) = (remote.get(&bits), local.get(&bits)) else {
            if first < arity {
                return Next::At(child(&prefix, first, token_bits));
            }
            continue;
        };
        for index in first..arity {
            // `index < arity ≤ 256`.
            let i = u8::try_from(index).unwrap_or(u8::MAX);
            if r.get(&i) != l.get(&i) {
                return Next::At(child(&prefix, index, token_bits));
            }
        }
    }
    Next::RestMatches
}

fn child(prefix: &Key, index: usize, token_bits: usize) -> Key {
    // `index < 2^token_bits ≤ 256`.
    prefix.extend(
        u8::try_from(index).unwrap_or(u8::MAX),
        token_bits,
        &Key::default(),
    )
}

/// The smallest byte key that starts with `path` (its bits padded with zeros).
#[must_use]
pub(crate) fn smallest_key_with_prefix(path: &Key) -> Vec<u8> {
    path.packed().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tributary_merkle::{BatchOp, BranchFactor, Config, MerkleDb};
    use tributary_store::MemStore;

    fn db(bf: BranchFactor, keys: &[(&[u8], &[u8])]) -> MerkleDb {
        let db = MerkleDb::open(
            Arc::new(MemStore::new()),
            Config {
                branch_factor: bf,
                ..Config::default()
            },
        )
        .expect("opens");
        db.commit(
            keys.iter()
                .map(|(k, v)| BatchOp::Put(k.to_vec(), v.to_vec())),
        )
        .expect("commits");
        db
    }

    fn path(db: &MerkleDb, key: &[u8]) -> Vec<ProofNode> {
        db.view(Vec::new())
            .expect("view")
            .proof_path(key)
            .expect("path")
    }

    #[test]
    fn identical_tries_differ_nowhere_after_the_key() {
        let keys: &[(&[u8], &[u8])] = &[(b"a", b"1"), (b"b", b"2"), (b"c", b"3")];
        let (x, y) = (
            db(BranchFactor::Sixteen, keys),
            db(BranchFactor::Sixteen, keys),
        );
        assert_eq!(
            first_difference(b"a", &path(&x, b"a"), &path(&y, b"a"), 4),
            Next::RestMatches
        );
    }

    #[test]
    fn the_first_differing_subtree_is_found() {
        let bf = BranchFactor::Sixteen;
        let remote = db(
            bf,
            &[(b"a", b"1"), (b"b", b"2"), (b"c", b"3"), (b"d", b"4")],
        );
        let local = db(
            bf,
            &[(b"a", b"1"), (b"b", b"2"), (b"c", b"X"), (b"d", b"4")],
        );
        let Next::At(k) = first_difference(b"a", &path(&remote, b"a"), &path(&local, b"a"), 4)
        else {
            panic!("no difference found");
        };
        let start = smallest_key_with_prefix(&k);
        // "b" matches and is skipped; the difference is at "c".
        assert!(
            start.as_slice() > b"b".as_slice() && start.as_slice() <= b"c".as_slice(),
            "{start:?}"
        );
    }

    #[test]
    fn paths_that_do_not_reach_the_key_are_not_compared() {
        let keys: &[(&[u8], &[u8])] = &[(b"a", b"1"), (b"c", b"3")];
        let x = db(BranchFactor::Sixteen, keys);
        // "b" is absent: its path ends at the node where it would be.
        assert_eq!(
            first_difference(b"b", &path(&x, b"b"), &path(&x, b"b"), 4),
            Next::Fallback
        );
    }

    #[test]
    fn a_missing_local_key_is_a_difference() {
        let bf = BranchFactor::TwoFiftySix;
        let remote = db(bf, &[(b"a", b"1"), (b"b", b"2")]);
        let local = db(bf, &[(b"a", b"1")]);
        let Next::At(k) = first_difference(b"a", &path(&remote, b"a"), &path(&local, b"a"), 8)
        else {
            panic!("no difference found");
        };
        assert!(smallest_key_with_prefix(&k).as_slice() <= b"b".as_slice());
    }
}
