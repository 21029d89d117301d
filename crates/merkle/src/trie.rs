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
use crate::source::{Changes, NodeChange, NodeSource, RootRef, ValueChange};

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
        loop {
            let Some(current) = path.last() else { break };
            if current.bit_len() >= key.bit_len() {
                break;
            }
            let offset = current.bit_len() + tb;
            let node = self.slot(current)?;
            let Some(child) = node.child(key.token(current.bit_len(), tb)) else {
                break;
            };
            if !key.matches_at(offset, &child.compressed) {
                break;
            }
            let child_key = key.take(offset + child.compressed.bit_len());
            let has_value = child.has_value;
            self.load(&child_key, has_value)?;
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
            Some(existing) => self.split_edge(key, value, offset, existing)?,
        };
        let child = Child {
            compressed: child_key.skip(offset),
            id: EMPTY_ROOT,
            has_value: child_has_value,
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
        existing: Child,
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
            };
            branch.set_child(key.token(branch_bits, tb), leaf);
        }
        let moved = Child {
            compressed: existing.compressed.skip(cp + tb),
            id: existing.id,
            has_value: existing.has_value,
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
            if let Some((index, child)) = node.children.get(*next) {
                *next += 1;
                let child_key = node.key.extend(*index, tb, &child.compressed);
                if let Some(child_node) = self.take_changed(&child_key) {
                    stack.push((child_node, 0));
                }
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
