//! Read access to one revision of a trie, whatever holds it.
//!
//! A [`NodeSource`] is what the trie builder reads from and what proofs are generated from: the
//! database at its current revision, a historical revision (the database plus the changes that
//! undo later commits: [`Changed`]), or nothing at all ([`EmptySource`], for verifying range
//! proofs).

use std::collections::BTreeMap;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::error::DbError;
use crate::key::Key;
use crate::node::{Hash, Node};

/// The root of a revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RootRef {
    pub key: Key,
    pub has_value: bool,
    pub id: Hash,
}

/// Key-values in ascending key order.
pub(crate) type ValueIter<'a> = Box<dyn Iterator<Item = Result<(Vec<u8>, Vec<u8>), DbError>> + 'a>;

/// One revision of a trie. Sources are shared by the threads of a parallel build.
pub(crate) trait NodeSource: Sync {
    /// The root node, `None` for an empty trie.
    fn root(&self) -> Option<RootRef>;
    /// The node at `key`; `has_value` says where to look for it.
    fn node(&self, key: &Key, has_value: bool) -> Result<Option<Arc<Node>>, DbError>;
    /// The value of a byte key.
    fn value(&self, key: &[u8]) -> Result<Option<Vec<u8>>, DbError>;
    /// Key-values from the first key `>= start`.
    fn values_from(&self, start: &[u8]) -> ValueIter<'_>;

    /// The node at `key`, which the trie references: missing is corruption.
    fn expect_node(&self, key: &Key, has_value: bool) -> Result<Arc<Node>, DbError> {
        self.node(key, has_value)?
            .ok_or_else(|| DbError::MissingNode(format!("{key:?}")))
    }
}

/// The empty trie.
pub(crate) struct EmptySource;

impl NodeSource for EmptySource {
    fn root(&self) -> Option<RootRef> {
        None
    }
    fn node(&self, _: &Key, _: bool) -> Result<Option<Arc<Node>>, DbError> {
        Ok(None)
    }
    fn value(&self, _: &[u8]) -> Result<Option<Vec<u8>>, DbError> {
        Ok(None)
    }
    fn values_from(&self, _: &[u8]) -> ValueIter<'_> {
        Box::new(std::iter::empty())
    }
}

/// The part of `base` under one of its nodes, seen as a trie of its own whose root is that
/// node (`None`: nothing there). Parallel builds give each group of keys the subtree they
/// change; proof verification rebuilds in-range subtrees from the local ones.
pub(crate) struct Subtree<'a> {
    pub base: &'a dyn NodeSource,
    pub root: Option<RootRef>,
}

impl NodeSource for Subtree<'_> {
    fn root(&self) -> Option<RootRef> {
        self.root.clone()
    }
    fn node(&self, key: &Key, has_value: bool) -> Result<Option<Arc<Node>>, DbError> {
        self.base.node(key, has_value)
    }
    fn value(&self, key: &[u8]) -> Result<Option<Vec<u8>>, DbError> {
        self.base.value(key)
    }
    fn values_from(&self, start: &[u8]) -> ValueIter<'_> {
        self.base.values_from(start)
    }
}

/// A change to one node: where it was stored before (`None` if new) and what it became
/// (`None` if deleted).
#[derive(Clone, Debug)]
pub(crate) struct NodeChange {
    pub before: Option<bool>,
    pub after: Option<Arc<Node>>,
}

/// A change to one value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ValueChange {
    pub before: Option<Vec<u8>>,
    pub after: Option<Vec<u8>>,
}

/// The result of applying a batch to a revision: every node changed, the new root, and the
/// values changed (no-ops excluded).
#[derive(Clone, Debug, Default)]
pub(crate) struct Changes {
    pub nodes: FxHashMap<Key, NodeChange>,
    pub root: Option<RootRef>,
    pub values: BTreeMap<Vec<u8>, ValueChange>,
}

impl Changes {
    pub(crate) fn root_id(&self) -> Hash {
        self.root.as_ref().map_or(crate::node::EMPTY_ROOT, |r| r.id)
    }

    /// Adds the changes `newer` made on top of these: each node and value keeps its first
    /// `before` (relative to what these changes started from) and takes `newer`'s `after`.
    pub(crate) fn absorb(&mut self, newer: Self) {
        use std::collections::btree_map;
        use std::collections::hash_map;
        self.nodes.reserve(newer.nodes.len());
        for (k, c) in newer.nodes {
            match self.nodes.entry(k) {
                hash_map::Entry::Occupied(mut e) => e.get_mut().after = c.after,
                hash_map::Entry::Vacant(e) => {
                    e.insert(c);
                }
            }
        }
        for (k, v) in newer.values {
            match self.values.entry(k) {
                btree_map::Entry::Occupied(mut e) => e.get_mut().after = v.after,
                btree_map::Entry::Vacant(e) => {
                    e.insert(v);
                }
            }
        }
        self.root = newer.root;
    }
}

/// A revision seen as `base` with `changes` applied on top.
pub(crate) struct Changed<'a> {
    pub base: &'a dyn NodeSource,
    pub changes: &'a Changes,
}

impl NodeSource for Changed<'_> {
    fn root(&self) -> Option<RootRef> {
        self.changes.root.clone()
    }

    fn node(&self, key: &Key, has_value: bool) -> Result<Option<Arc<Node>>, DbError> {
        match self.changes.nodes.get(key) {
            Some(change) => Ok(change.after.clone()),
            None => self.base.node(key, has_value),
        }
    }

    fn value(&self, key: &[u8]) -> Result<Option<Vec<u8>>, DbError> {
        match self.changes.values.get(key) {
            Some(change) => Ok(change.after.clone()),
            None => self.base.value(key),
        }
    }

    fn values_from(&self, start: &[u8]) -> ValueIter<'_> {
        let mut base = self.base.values_from(start).peekable();
        let mut over = self.changes.values.range(start.to_vec()..).peekable();
        Box::new(std::iter::from_fn(move || {
            loop {
                let take_over = match (base.peek(), over.peek()) {
                    (None, None) => return None,
                    (Some(Err(_)), _) => return base.next(),
                    (Some(Ok((bk, _))), Some((ok, _))) => *ok <= bk,
                    (None, Some(_)) => true,
                    (Some(Ok(_)), None) => false,
                };
                if !take_over {
                    return base.next();
                }
                let (k, change) = over.next()?;
                if matches!(base.peek(), Some(Ok((bk, _))) if bk == k) {
                    base.next();
                }
                if let Some(v) = &change.after {
                    return Some(Ok((k.clone(), v.clone())));
                }
            }
        }))
    }
}
