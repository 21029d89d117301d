//! The trie builder: applies puts and deletes to a revision and computes the new node ids.
//!
//! It follows avalanchego's `view.insert`, `view.remove` and `compressNodePath`, so the shapes
//! and ids it produces are avalanchego's. Commits, the rebuilding of historical revisions and
//! proof verification (for the subtrees inside a proven range) all run on it. Every node on the path to a changed key is copied into the
//! builder's change map; hashing then walks from the root through changed nodes only, deepest
//! first, so unchanged subtrees keep their stored ids.

use std::collections::BTreeMap;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::error::DbError;
use crate::key::Key;
use crate::node::{Child, EMPTY_ROOT, Node, NodeValue};
use crate::source::{Changes, NodeChange, NodeSource, RootRef, Subtree, ValueChange};

struct Slot {
    before: Option<bool>,
    after: Option<Node>,
}

/// Applies changes on top of a [`NodeSource`].
pub(crate) struct TrieBuilder<'s> {
    source: &'s dyn NodeSource,
    token_bits: usize,
    root: Option<Key>,
    nodes: FxHashMap<Key, Slot>,
    values: BTreeMap<Vec<u8>, ValueChange>,
}

impl<'s> TrieBuilder<'s> {
    pub(crate) fn new(source: &'s dyn NodeSource, token_bits: usize) -> Self {
        Self {
            source,
            token_bits,
            root: source.root().map(|r| r.key),
            nodes: FxHashMap::default(),
            values: BTreeMap::new(),
        }
    }

    /// Applies key-sorted, deduplicated operations (`None` deletes) and records value changes.
    pub(crate) fn apply(&mut self, ops: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<(), DbError> {
        self.nodes.reserve(ops.len() * 2);
        for (k, v) in ops {
            let key = Key::from_bytes(&k);
            let before = match &v {
                Some(value) => self.insert(&key, NodeValue::Value(value.clone()))?,
                None => self.remove(&key)?,
            };
            let before = match before {
                NodeValue::Value(b) => Some(b),
                NodeValue::None | NodeValue::Digest(_) => None,
            };
            if before != v {
                self.values.insert(k, ValueChange { before, after: v });
            }
        }
        Ok(())
    }

    fn slot(&self, key: &Key) -> Result<&Node, DbError> {
        self.nodes
            .get(key)
            .and_then(|s| s.after.as_ref())
            .ok_or_else(|| DbError::MissingNode(format!("{key:?} (not loaded)")))
    }

    fn slot_mut(&mut self, key: &Key) -> Result<&mut Node, DbError> {
        self.nodes
            .get_mut(key)
            .and_then(|s| s.after.as_mut())
            .ok_or_else(|| DbError::MissingNode(format!("{key:?} (not loaded)")))
    }

    /// Copies the node at `key` from the source into the change map, unless already there.
    fn load(&mut self, key: &Key, has_value: bool) -> Result<(), DbError> {
        if !self.nodes.contains_key(key) {
            let node = self.source.expect_node(key, has_value)?;
            let before = Some(node.has_value());
            self.nodes.insert(
                key.clone(),
                Slot {
                    before,
                    after: Some((*node).clone()),
                },
            );
        }
        Ok(())
    }

    fn load_root(&mut self, root: &Key) -> Result<(), DbError> {
        if self.nodes.contains_key(root) {
            return Ok(());
        }
        let has_value = self.source.root().is_some_and(|r| r.has_value);
        self.load(root, has_value)
    }

    fn put_new(&mut self, node: Node) {
        let key = node.key.clone();
        match self.nodes.get_mut(&key) {
            Some(slot) => slot.after = Some(node),
            None => {
                self.nodes.insert(
                    key,
                    Slot {
                        before: None,
                        after: Some(node),
                    },
                );
            }
        }
    }

    fn delete(&mut self, key: &Key) {
        if let Some(slot) = self.nodes.get_mut(key) {
            slot.after = None;
        }
    }

    /// Loads the nodes from the root towards `key` and returns their keys: the last one is the
    /// deepest node whose key is a prefix of `key` (avalanchego `visitPathToKey`).
    fn load_path(&mut self, key: &Key, root: Key) -> Result<Vec<Key>, DbError> {
        let tb = self.token_bits;
        let mut path = vec![root];
        while let Some(current) = path.last().filter(|c| c.bit_len() < key.bit_len()) {
            let offset = current.bit_len() + tb;
            let index = key.token(current.bit_len(), tb);
            let Some(child) = self.slot(current)?.child(index) else {
                break;
            };
            if !key.matches_at(offset, &child.compressed) {
                break;
            }
            let child_key = key.take(offset + child.compressed.bit_len());
            let has_value = child.has_value;
            let current = current.clone();
            self.load(&child_key, has_value)?;
            if let Some(entry) = self.slot_mut(&current)?.child_mut(index) {
                entry.dirty = true;
            }
            path.push(child_key);
        }
        Ok(path)
    }

    /// Sets the value at `key`, creating nodes as needed. Returns the value it replaced.
    pub(crate) fn insert(&mut self, key: &Key, value: NodeValue) -> Result<NodeValue, DbError> {
        let tb = self.token_bits;
        let Some(root) = self.root.clone() else {
            let mut node = Node::new(key.clone());
            node.value = value;
            self.put_new(node);
            self.root = Some(key.clone());
            return Ok(NodeValue::None);
        };
        self.load_root(&root)?;
        let closest = if key.has_prefix(&root) {
            let path = self.load_path(key, root)?;
            path.last().cloned().unwrap_or_default()
        } else {
            self.grow_root(key, &root)?
        };
        if closest == *key {
            return Ok(std::mem::replace(
                &mut self.slot_mut(&closest)?.value,
                value,
            ));
        }
        let index = key.token(closest.bit_len(), tb);
        let offset = closest.bit_len() + tb;
        let existing = self.slot(&closest)?.child(index).cloned();
        let (child_key, child_has_value) = match existing {
            None => {
                let has_value = value.is_some();
                self.put_new(Node {
                    key: key.clone(),
                    value,
                    children: Vec::new(),
                });
                (key.clone(), has_value)
            }
            Some(existing) => self.split_edge(key, value, offset, &existing)?,
        };
        let child = Child {
            compressed: child_key.skip(offset),
            id: EMPTY_ROOT,
            has_value: child_has_value,
            dirty: true,
        };
        self.slot_mut(&closest)?.set_child(index, child);
        Ok(NodeValue::None)
    }

    /// `key` is not below the root: a new root at their common prefix adopts the old one.
    fn grow_root(&mut self, key: &Key, root: &Key) -> Result<Key, DbError> {
        let tb = self.token_bits;
        let cp = Key::common_prefix_bits(root, key, 0, tb);
        let old = Child {
            compressed: root.skip(cp + tb),
            id: EMPTY_ROOT, // the old root is in the change map, so hashing recomputes this
            has_value: self.slot(root)?.has_value(),
            dirty: true,
        };
        let mut new_root = Node::new(root.take(cp));
        new_root.set_child(root.token(cp, tb), old);
        let new_key = new_root.key.clone();
        self.put_new(new_root);
        self.root = Some(new_key.clone());
        Ok(new_key)
    }

    /// The edge to `existing` diverges from `key` below `offset`: a branch node at the divergence
    /// takes both. Returns the branch's key and whether it holds the value.
    fn split_edge(
        &mut self,
        key: &Key,
        value: NodeValue,
        offset: usize,
        existing: &Child,
    ) -> Result<(Key, bool), DbError> {
        let tb = self.token_bits;
        let cp = Key::common_prefix_bits(&existing.compressed, key, offset, tb);
        if existing.compressed.bit_len() <= cp {
            return Err(DbError::Corrupt(format!(
                "edge below {key:?} should have been followed"
            )));
        }
        let mut branch = Node::new(key.take(offset + cp));
        let branch_bits = branch.key.bit_len();
        if key.bit_len() == branch_bits {
            branch.value = value;
        } else {
            let leaf_has_value = value.is_some();
            self.put_new(Node {
                key: key.clone(),
                value,
                children: Vec::new(),
            });
            let leaf = Child {
                compressed: key.skip(branch_bits + tb),
                id: EMPTY_ROOT,
                has_value: leaf_has_value,
                dirty: true,
            };
            branch.set_child(key.token(branch_bits, tb), leaf);
        }
        let moved = Child {
            compressed: existing.compressed.skip(cp + tb),
            id: existing.id,
            has_value: existing.has_value,
            dirty: existing.dirty,
        };
        branch.set_child(existing.compressed.token(cp, tb), moved);
        let result = (branch.key.clone(), branch.has_value());
        self.put_new(branch);
        Ok(result)
    }

    /// Removes the value at `key` and compresses the path. Returns the value removed.
    pub(crate) fn remove(&mut self, key: &Key) -> Result<NodeValue, DbError> {
        let Some(root) = self.root.clone() else {
            return Ok(NodeValue::None);
        };
        if !key.has_prefix(&root) {
            return Ok(NodeValue::None);
        }
        let exists = match self.nodes.get(key) {
            Some(slot) => slot.after.as_ref().is_some_and(Node::has_value),
            None => key.is_whole_bytes() && self.source.value(key.packed())?.is_some(),
        };
        if !exists {
            return Ok(NodeValue::None);
        }
        self.load_root(&root)?;
        let path = self.load_path(key, root)?;
        let n = path.len();
        let parent = n.checked_sub(2).map(|i| path[i].clone());
        let grandparent = n.checked_sub(3).map(|i| path[i].clone());
        let node = self.slot_mut(key)?;
        let removed = std::mem::take(&mut node.value);
        if node.children.is_empty() {
            self.delete(key);
            let Some(parent) = parent else {
                self.root = None;
                return Ok(removed);
            };
            let index = key.token(parent.bit_len(), self.token_bits);
            self.slot_mut(&parent)?.remove_child(index);
            self.compress(grandparent.as_ref(), &parent)?;
        } else {
            self.compress(parent.as_ref(), key)?;
        }
        Ok(removed)
    }

    /// Merges the node at `key` into its only child when it has no value.
    fn compress(&mut self, parent: Option<&Key>, key: &Key) -> Result<(), DbError> {
        let tb = self.token_bits;
        let node = self.slot(key)?;
        if node.children.len() != 1 || node.has_value() {
            return Ok(());
        }
        let (index, child) = node.children[0].clone();
        let child_key = key.extend(index, tb, &child.compressed);
        self.delete(key);
        match parent {
            None => {
                self.load(&child_key, child.has_value)?;
                self.root = Some(child_key);
            }
            Some(parent) => {
                let entry = Child {
                    compressed: child_key.skip(parent.bit_len() + tb),
                    id: child.id,
                    has_value: child.has_value,
                    dirty: child.dirty,
                };
                self.slot_mut(parent)?
                    .set_child(child_key.token(parent.bit_len(), tb), entry);
            }
        }
        Ok(())
    }

    /// Takes the changed node at `key` out of the map for rehashing.
    fn take_changed(&mut self, key: &Key) -> Option<Node> {
        self.nodes.get_mut(key).and_then(|slot| slot.after.take())
    }

    /// Recomputes the ids of every changed node, children before parents, and returns the root.
    pub(crate) fn hash(&mut self) -> Result<Option<RootRef>, DbError> {
        let tb = self.token_bits;
        let Some(root_key) = self.root.clone() else {
            return Ok(None);
        };
        let Some(root) = self.take_changed(&root_key) else {
            // Nothing changed at the root, so nothing changed at all.
            return Ok(self.source.root());
        };
        let mut stack: Vec<(Node, usize)> = vec![(root, 0)];
        while let Some((node, next)) = stack.last_mut() {
            if let Some(at) = node.children[*next..].iter().position(|(_, c)| c.dirty) {
                // Only children marked dirty entered the change map: visit just those.
                *next += at + 1;
                let (index, child) = &node.children[*next - 1];
                let child_key = node.key.extend(*index, tb, &child.compressed);
                let child_node = self.take_changed(&child_key).ok_or_else(|| {
                    DbError::MissingNode(format!("{child_key:?} (dirty, not in the change map)"))
                })?;
                stack.push((child_node, 0));
                continue;
            }
            let Some((node, _)) = stack.pop() else { break };
            let (id, has_value) = (node.id(), node.has_value());
            let key = node.key.clone();
            if let Some(slot) = self.nodes.get_mut(&key) {
                slot.after = Some(node);
            }
            match stack.last_mut() {
                Some((parent, next)) => {
                    let (_, child) = &mut parent.children[*next - 1];
                    child.id = id;
                    child.has_value = has_value;
                    child.dirty = false;
                }
                None => return Ok(Some(RootRef { key, has_value, id })),
            }
        }
        Err(DbError::Corrupt("hashing ended without a root".into()))
    }

    /// Hashes and freezes the builder into [`Changes`].
    pub(crate) fn finish(mut self) -> Result<Changes, DbError> {
        let root = self.hash()?;
        let nodes = self
            .nodes
            .into_iter()
            .map(|(k, s)| {
                (
                    k,
                    NodeChange {
                        before: s.before,
                        after: s.after.map(Arc::new),
                    },
                )
            })
            .collect();
        Ok(Changes {
            nodes,
            root,
            values: self.values,
        })
    }
}

/// Batches at least this large are built in parallel (below it, thread start-up and the merge
/// cost more than they save).
pub(crate) const PARALLEL_MIN_OPS: usize = 4096;

/// One operation: a key and its new value, `None` deleting.
pub(crate) type Op = (Vec<u8>, Option<Vec<u8>>);

/// Operations in key order.
pub(crate) type Ops = Vec<Op>;

/// Applies key-sorted, deduplicated `ops` to `source` and hashes the result.
///
/// Large batches whose keys all lie strictly below the root are split by the root's child
/// index: each group changes a disjoint subtree, built by its own builder on its own thread;
/// the root is then rebuilt from the new subtree roots. The result equals a sequential build
/// (the trie depends only on its contents), which the tests check.
pub(crate) fn build(
    source: &dyn NodeSource,
    token_bits: usize,
    ops: Ops,
) -> Result<Changes, DbError> {
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let big = threads > 1 && ops.len() >= PARALLEL_MIN_OPS;
    match source.root() {
        Some(root) if big && all_below(&root.key, &ops) => {
            let node = (*source.expect_node(&root.key, root.has_value)?).clone();
            build_parallel(source, token_bits, ops, node, Some(root.has_value), threads)
        }
        None if big => build_from_empty(source, token_bits, ops, threads),
        _ => {
            let mut builder = TrieBuilder::new(source, token_bits);
            builder.apply(ops)?;
            builder.finish()
        }
    }
}

/// A parallel build into an empty trie: the root will sit at the longest common prefix of the
/// keys put (deletes change nothing), so the build starts from a new node there.
fn build_from_empty(
    source: &dyn NodeSource,
    tb: usize,
    ops: Ops,
    threads: usize,
) -> Result<Changes, DbError> {
    let mut puts: Ops = ops.into_iter().filter(|(_, v)| v.is_some()).collect();
    let (Some(first), Some(last)) = (puts.first(), puts.last()) else {
        return Ok(Changes::default());
    };
    let (first, last) = (Key::from_bytes(&first.0), Key::from_bytes(&last.0));
    // Keys are sorted, so the first and last share the prefix all of them share.
    let mut root = Node::new(first.take(Key::common_prefix_bits(&first, &last, 0, tb)));
    let mut root_value = None;
    if first == root.key {
        // The first key is the prefix itself: its value sits on the root.
        let (k, v) = puts.remove(0);
        root.value = v.clone().map_or(NodeValue::None, NodeValue::Value);
        root_value = Some((
            k,
            ValueChange {
                before: None,
                after: v,
            },
        ));
    }
    let mut changes = build_parallel(source, tb, puts, root, None, threads)?;
    changes.values.extend(root_value);
    Ok(changes)
}

fn all_below(root: &Key, ops: &Ops) -> bool {
    ops.iter()
        .all(|(k, _)| k.len() * 8 > root.bit_len() && Key::from_bytes(k).has_prefix(root))
}

/// One group's result: the child index, the new subtree root, and its changes.
type GroupResult = (u8, Option<RootRef>, Changes);

fn build_parallel(
    source: &dyn NodeSource,
    tb: usize,
    ops: Ops,
    root_node: Node,
    root_before: Option<bool>,
    threads: usize,
) -> Result<Changes, DbError> {
    let root_bits = root_node.key.bit_len();
    let mut groups: Vec<(u8, Ops)> = Vec::new();
    for op in ops {
        let index = Key::from_bytes(&op.0).token(root_bits, tb);
        match groups.last_mut() {
            Some((i, group)) if *i == index => group.push(op),
            _ => groups.push((index, vec![op])),
        }
    }
    // Largest groups first, each to the least loaded worker.
    groups.sort_by_key(|(_, g)| std::cmp::Reverse(g.len()));
    let mut shares: Vec<(usize, Vec<(u8, Ops)>)> = (0..threads).map(|_| (0, Vec::new())).collect();
    for group in groups {
        let Some(share) = shares.iter_mut().min_by_key(|(load, _)| *load) else {
            break;
        };
        share.0 += group.1.len();
        share.1.push(group);
    }
    let results: Vec<Result<Vec<GroupResult>, DbError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = shares
            .into_iter()
            .map(|(_, share)| scope.spawn(|| build_groups(source, tb, &root_node, share)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(DbError::Corrupt("a build thread panicked".into())))
            })
            .collect()
    });
    let mut merged = Changes::default();
    let mut new_root = root_node;
    for result in results {
        for (index, sub_root, changes) in result? {
            merged.nodes.extend(changes.nodes);
            merged.values.extend(changes.values);
            match sub_root {
                None => new_root.remove_child(index),
                Some(r) => new_root.set_child(
                    index,
                    Child {
                        compressed: r.key.skip(root_bits + tb),
                        id: r.id,
                        has_value: r.has_value,
                        dirty: false,
                    },
                ),
            }
        }
    }
    merged.root = finish_root(&mut merged, source, tb, new_root, root_before)?;
    Ok(merged)
}

fn build_groups(
    source: &dyn NodeSource,
    tb: usize,
    root: &Node,
    share: Vec<(u8, Ops)>,
) -> Result<Vec<GroupResult>, DbError> {
    share
        .into_iter()
        .map(|(index, ops)| {
            let sub_root = root.child(index).map(|c| RootRef {
                key: root.key.extend(index, tb, &c.compressed),
                has_value: c.has_value,
                id: c.id,
            });
            let sub = Subtree {
                base: source,
                root: sub_root,
            };
            let mut builder = TrieBuilder::new(&sub, tb);
            builder.apply(ops)?;
            let changes = builder.finish()?;
            Ok((index, changes.root.clone(), changes))
        })
        .collect()
}

/// Records the rebuilt root node, compressing it away if it kept one child and no value.
fn finish_root(
    merged: &mut Changes,
    source: &dyn NodeSource,
    tb: usize,
    root: Node,
    before: Option<bool>,
) -> Result<Option<RootRef>, DbError> {
    if root.has_value() || root.children.len() > 1 {
        let id = root.id();
        let root_ref = RootRef {
            key: root.key.clone(),
            has_value: root.has_value(),
            id,
        };
        merged.nodes.insert(
            root.key.clone(),
            NodeChange {
                before,
                after: Some(Arc::new(root)),
            },
        );
        return Ok(Some(root_ref));
    }
    merged.nodes.insert(
        root.key.clone(),
        NodeChange {
            before,
            after: None,
        },
    );
    let Some((index, child)) = root.children.first() else {
        return Ok(None);
    };
    let key = root.key.extend(*index, tb, &child.compressed);
    if !merged.nodes.contains_key(&key) {
        // The lone child becomes the root unchanged; make sure it exists.
        source.expect_node(&key, child.has_value)?;
    }
    Ok(Some(RootRef {
        key,
        has_value: child.has_value,
        id: child.id,
    }))
}

/// Sorts operations by key and keeps the last operation on each key.
pub(crate) fn normalize_ops(
    mut ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    // A stable sort keeps same-key operations in submission order; keep the last of each run.
    ops.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::with_capacity(ops.len());
    for op in ops {
        match out.last_mut() {
            Some(last) if last.0 == op.0 => *last = op,
            _ => out.push(op),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{BatchOp, Config, MerkleDb};
    use crate::key::BranchFactor;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn random_ops(rng: &mut StdRng, n: usize, delete_share: f64) -> Ops {
        let ops = (0..n)
            .map(|_| {
                let len = rng.random_range(1..4);
                let key: Vec<u8> = (0..len).map(|_| rng.random_range(0..24u8) * 11).collect();
                let value = (!rng.random_bool(delete_share))
                    .then(|| vec![rng.random(); rng.random_range(0..40)]);
                (key, value)
            })
            .collect();
        normalize_ops(ops)
    }

    /// Both builds must write the same thing: the same root and value changes, and for every
    /// node either one touched, the same result wherever it differs from the base trie (the
    /// parallel build may also copy nodes it leaves as they were, which writes nothing new).
    fn assert_same(src: &dyn NodeSource, a: &Changes, b: &Changes) {
        assert_eq!(a.root, b.root, "roots");
        assert_eq!(a.values, b.values, "value changes");
        let base = |k: &Key, before: Option<bool>| -> Option<Node> {
            before
                .and_then(|hv| src.node(k, hv).expect("base node"))
                .map(|n| (*n).clone())
        };
        let effective = |c: &Changes, k: &Key| -> Option<Option<Node>> {
            c.nodes.get(k).and_then(|n| {
                let after = n.after.as_deref().cloned();
                (after != base(k, n.before)).then_some(after)
            })
        };
        for k in a.nodes.keys().chain(b.nodes.keys()) {
            assert_eq!(effective(a, k), effective(b, k), "node {k:?}");
        }
    }

    #[test]
    fn parallel_build_equals_sequential_build() {
        for bf in [
            BranchFactor::Two,
            BranchFactor::Four,
            BranchFactor::Sixteen,
            BranchFactor::TwoFiftySix,
        ] {
            for (round, delete_share) in [(0u64, 0.1), (1, 0.5), (2, 0.95), (3, 1.0)] {
                let mut rng = StdRng::seed_from_u64(round * 31 + bf.arity() as u64);
                let config = Config {
                    branch_factor: bf,
                    ..Config::default()
                };
                let db = MerkleDb::open(
                    std::sync::Arc::new(tributary_store::MemStore::new()),
                    config,
                )
                .expect("open");
                let base = random_ops(&mut rng, 3000, 0.0);
                db.commit(
                    base.iter()
                        .map(|(k, v)| BatchOp::Put(k.clone(), v.clone().unwrap_or_default())),
                )
                .expect("base");
                let ops = random_ops(&mut rng, 6000, delete_share);
                let tb = bf.token_bits();
                db.with_current(|src| {
                    let mut seq = TrieBuilder::new(src, tb);
                    seq.apply(ops.clone())?;
                    let seq = seq.finish()?;
                    let root = src.root().expect("non-empty base");
                    // The keys spread over many first bytes, so the root sits above them all
                    // and the parallel build applies; a case where it did not would compare
                    // nothing, so it fails instead.
                    assert!(
                        all_below(&root.key, &ops),
                        "root {:?} is not above every key: nothing to compare",
                        root.key
                    );
                    let node = (*src.expect_node(&root.key, root.has_value)?).clone();
                    let par = build_parallel(src, tb, ops.clone(), node, Some(root.has_value), 2)?;
                    assert_same(src, &seq, &par);
                    Ok(())
                })
                .expect("build");
            }
        }
    }

    #[test]
    fn parallel_build_from_empty_equals_sequential_build() {
        let src = crate::source::EmptySource;
        for bf in [
            BranchFactor::Two,
            BranchFactor::Sixteen,
            BranchFactor::TwoFiftySix,
        ] {
            let tb = bf.token_bits();
            for (round, prefix) in [vec![], vec![0xABu8], vec![0xAB, 0xC0]]
                .into_iter()
                .enumerate()
            {
                let mut rng = StdRng::seed_from_u64(round as u64);
                let mut ops = random_ops(&mut rng, PARALLEL_MIN_OPS + 100, 0.2);
                for (k, _) in &mut ops {
                    k.splice(0..0, prefix.iter().copied());
                }
                if round == 2 {
                    // A key equal to the common prefix puts a value on the root.
                    ops.push((prefix.clone(), Some(b"root".to_vec())));
                }
                let ops = normalize_ops(ops);
                let mut seq = TrieBuilder::new(&src, tb);
                seq.apply(ops.clone()).expect("sequential");
                let seq = seq.finish().expect("hash");
                let par = build_from_empty(&src, tb, ops, 2).expect("parallel");
                assert_same(&src, &seq, &par);
            }
        }
    }

    #[test]
    fn parallel_commit_reaches_the_same_root_as_small_commits() {
        let mut rng = StdRng::seed_from_u64(99);
        let big = MerkleDb::open(
            std::sync::Arc::new(tributary_store::MemStore::new()),
            Config::default(),
        )
        .expect("open");
        let small = MerkleDb::open(
            std::sync::Arc::new(tributary_store::MemStore::new()),
            Config::default(),
        )
        .expect("open");
        for _ in 0..3 {
            let ops = random_ops(&mut rng, 3 * PARALLEL_MIN_OPS, 0.3);
            let to_batch = |o: &(Vec<u8>, Option<Vec<u8>>)| match &o.1 {
                Some(v) => BatchOp::Put(o.0.clone(), v.clone()),
                None => BatchOp::Delete(o.0.clone()),
            };
            big.commit(ops.iter().map(to_batch)).expect("big commit");
            for chunk in ops.chunks(100) {
                small
                    .commit(chunk.iter().map(to_batch))
                    .expect("small commit");
            }
            assert_eq!(big.root(), small.root());
        }
    }
}
