//! How a [`crate::MerkleDb`] sits in its [`KvStore`]: keyspaces, the durable part of a commit,
//! node checkpoints, and reading the checkpointed trie.
//!
//! | keyspace | key | value |
//! |---|---|---|
//! | `merkle.values` | `0x00` ‖ the key's bytes | node encoding of a node with a value |
//! | `merkle.branches` | packed key ‖ bit length mod 8 | node encoding of a value-less node |
//! | `merkle.meta` | `bf`, `layout`, `rev`, `root`, `nodes_rev`, `nodes_root` | branch factor, last commit, its root key, checkpointed revision, its root key |
//! | `merkle.roots` | revision (u64 BE) | that revision's root |
//! | `merkle.history` | revision (u64 BE) | that commit's value changes ([`crate::history`]) |
//!
//! A **commit** writes only its history record, its root and the revision, in one atomic
//! batch: that is what makes it durable. Its trie nodes join the in-memory pending changes,
//! and a **checkpoint** writes all pending nodes with the revision they belong to
//! (`nodes_rev`), in one atomic batch, every few commits and on close. The nodes in the store
//! are therefore always exactly the trie of revision `nodes_rev`; a database reopened with
//! `nodes_rev < rev` (the process died between checkpoints) replays the after-values of the
//! records in between onto it and checks the result against the recorded root.
//!
//! Deferring node writes matters: the branch nodes near the root change on every commit, so
//! writing them once per checkpoint instead of once per commit removes most of the bytes and
//! records a commit would otherwise write (measured: the store writes were 45% of commit time).
//! Value nodes are keyed by their bytes behind one `0x00` byte, so scanning `merkle.values`
//! scans key-values in order, as avalanchego's value node DB, and the empty trie key (which
//! avalanchego allows) is not the empty store key (which fjall refuses).

use std::collections::VecDeque;
use std::sync::Arc;

use quick_cache::sync::Cache;
use tributary_store::{KeyspaceId, KvStore, WriteBatch};

use crate::error::DbError;
use crate::history;
use crate::key::{BranchFactor, Key};
use crate::node::{self, Hash, Node};
use crate::source::{Changes, NodeSource, RootRef, ValueIter};
use crate::varint;

/// The keyspaces of the layout.
#[derive(Clone, Copy)]
pub(crate) struct Spaces {
    pub values: KeyspaceId,
    pub branches: KeyspaceId,
    pub meta: KeyspaceId,
    pub roots: KeyspaceId,
    pub history: KeyspaceId,
}

impl Spaces {
    pub(crate) fn open(store: &dyn KvStore) -> Result<Self, DbError> {
        Ok(Self {
            values: store.keyspace("merkle.values")?,
            branches: store.keyspace("merkle.branches")?,
            meta: store.keyspace("merkle.meta")?,
            roots: store.keyspace("merkle.roots")?,
            history: store.keyspace("merkle.history")?,
        })
    }
}

/// The checkpointed trie, read through the node cache (which holds checkpointed nodes only).
pub(crate) struct StoreSource<'a> {
    pub store: &'a dyn KvStore,
    pub ks: &'a Spaces,
    pub cache: &'a Cache<Key, Arc<Node>>,
    pub root: Option<RootRef>,
}

/// The version of this layout, kept in `merkle.meta` under `layout`. Version 2 put the `0x00`
/// byte before value keys; a database without it was written by an older layout.
pub(crate) const LAYOUT: u8 = 2;

/// The byte before every key of `merkle.values`.
const VALUE_KEY_PREFIX: u8 = 0x00;

/// The store key of the value node at trie key `key`.
pub(crate) fn value_storage_key(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 1);
    out.push(VALUE_KEY_PREFIX);
    out.extend_from_slice(key);
    out
}

pub(crate) fn branch_storage_key_into(key: &Key, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(key.packed());
    out.push((key.bit_len() % 8) as u8);
}

impl NodeSource for StoreSource<'_> {
    fn root(&self) -> Option<RootRef> {
        self.root.clone()
    }

    fn node(&self, key: &Key, has_value: bool) -> Result<Option<Arc<Node>>, DbError> {
        if let Some(node) = self.cache.get(key) {
            return Ok(Some(node));
        }
        let stored = if has_value {
            self.store
                .get(self.ks.values, &value_storage_key(key.packed()))?
        } else {
            let mut storage_key = Vec::with_capacity(key.packed().len() + 1);
            branch_storage_key_into(key, &mut storage_key);
            self.store.get(self.ks.branches, &storage_key)?
        };
        let Some(bytes) = stored else { return Ok(None) };
        let node = Arc::new(Node::decode(key.clone(), &bytes)?);
        self.cache.insert(key.clone(), node.clone());
        Ok(Some(node))
    }

    fn value(&self, key: &[u8]) -> Result<Option<Vec<u8>>, DbError> {
        match self.store.get(self.ks.values, &value_storage_key(key))? {
            Some(bytes) => Ok(node::decode_stored_value(&bytes)?),
            None => Ok(None),
        }
    }

    fn values_from(&self, start: &[u8]) -> ValueIter<'_> {
        Box::new(
            self.store
                .scan_from(self.ks.values, &value_storage_key(start))
                .filter_map(|r| match r {
                    Err(e) => Some(Err(e.into())),
                    Ok((mut k, v)) => match node::decode_stored_value(&v) {
                        Err(e) => Some(Err(e.into())),
                        Ok(value) => value.map(|value| {
                            k.remove(0);
                            Ok((k, value))
                        }),
                    },
                }),
        )
    }
}

/// The durable part of commit `revision`: its history record, root and revision number, and
/// the pruning of the record that falls out of a history of `keep` revisions, and the sync
/// progress record if one is given.
pub(crate) fn commit_batch(
    ks: &Spaces,
    revision: u64,
    changes: &Changes,
    keep: u64,
    progress: Option<&[u8]>,
) -> WriteBatch {
    let mut batch = WriteBatch::with_capacity(8);
    if let Some(progress) = progress {
        batch.put(ks.meta, SYNC_PROGRESS, progress);
    }
    let rk = history::revision_key(revision);
    batch.put(ks.roots, &rk, &changes.root_id());
    let record = history::encode_record(
        changes
            .values
            .iter()
            .map(|(k, c)| (k, c.before.as_ref(), c.after.as_ref())),
    );
    batch.put(ks.history, &rk, &record);
    if let Some(expired) = revision.checked_sub(keep).filter(|r| *r > 0) {
        batch.delete(ks.roots, &history::revision_key(expired));
        batch.delete(ks.history, &history::revision_key(expired));
    }
    batch.put(ks.meta, b"rev", &rk);
    match &changes.root {
        Some(root) => batch.put(ks.meta, b"root", &encode_root(root)),
        None => batch.delete(ks.meta, b"root"),
    }
    batch
}

/// Writes every pending node as of `revision`, which becomes the checkpointed revision.
pub(crate) fn checkpoint_batch(ks: &Spaces, revision: u64, pending: &Changes) -> WriteBatch {
    let mut batch = WriteBatch::with_capacity(pending.nodes.len() + 4);
    let mut storage_key = Vec::with_capacity(64);
    for (key, change) in &pending.nodes {
        let after_has_value = change.after.as_ref().map(|n| n.has_value());
        if let Some(node) = &change.after {
            if node.has_value() {
                batch.put_with(ks.values, &value_storage_key(key.packed()), |out| {
                    node.encode_into(out);
                });
            } else {
                branch_storage_key_into(key, &mut storage_key);
                batch.put_with(ks.branches, &storage_key, |out| node.encode_into(out));
            }
        }
        match (change.before, after_has_value) {
            (Some(true), None | Some(false)) => {
                batch.delete(ks.values, &value_storage_key(key.packed()));
            }
            (Some(false), None | Some(true)) => {
                branch_storage_key_into(key, &mut storage_key);
                batch.delete(ks.branches, &storage_key);
            }
            _ => {}
        }
    }
    batch.put(ks.meta, b"nodes_rev", &history::revision_key(revision));
    match &pending.root {
        Some(root) => batch.put(ks.meta, b"nodes_root", &encode_root(root)),
        None => batch.delete(ks.meta, b"nodes_root"),
    }
    batch
}

/// The metadata key of the state-sync client's progress record.
pub(crate) const SYNC_PROGRESS: &[u8] = b"sync_progress";

/// The revision number stored under `name` in the metadata (0 if none).
pub(crate) fn meta_revision(store: &dyn KvStore, ks: &Spaces, name: &[u8]) -> Result<u64, DbError> {
    match store.get(ks.meta, name)? {
        Some(v) => history::decode_revision_key(&v),
        None => Ok(0),
    }
}

fn encode_root(root: &RootRef) -> Vec<u8> {
    let mut out = vec![u8::from(root.has_value)];
    varint::put(&mut out, root.key.bit_len() as u64);
    out.extend_from_slice(root.key.packed());
    out
}

/// The checkpointed root, with its id computed from the stored root node.
pub(crate) fn load_checkpoint_root(source: &StoreSource<'_>) -> Result<Option<RootRef>, DbError> {
    let Some(bytes) = source.store.get(source.ks.meta, b"nodes_root")? else {
        return Ok(None);
    };
    let corrupt = || DbError::Corrupt("unreadable root record".into());
    let (&flag, rest) = bytes.split_first().ok_or_else(corrupt)?;
    let (bits, used) = varint::get(rest).ok_or_else(corrupt)?;
    let bits = usize::try_from(bits).map_err(|_| corrupt())?;
    let key = Key::from_packed(bits, rest[used..].to_vec()).ok_or_else(corrupt)?;
    let has_value = flag == 1;
    let node = source.expect_node(&key, has_value)?;
    Ok(Some(RootRef {
        key,
        has_value,
        id: node.id(),
    }))
}

/// The retained revisions and roots; records outside the window are deleted.
pub(crate) fn load_roots(
    store: &dyn KvStore,
    ks: &Spaces,
    revision: u64,
    keep: u64,
) -> Result<VecDeque<(u64, Hash)>, DbError> {
    let oldest = revision.saturating_sub(keep.saturating_sub(1)).max(1);
    let mut roots = VecDeque::new();
    let mut stale = WriteBatch::default();
    for entry in store.scan_from(ks.roots, &[]) {
        let (k, v) = entry?;
        let r = history::decode_revision_key(&k)?;
        if r < oldest || r > revision {
            stale.delete(ks.roots, &k);
            stale.delete(ks.history, &k);
        } else {
            roots.push_back((r, history::decode_root(&v)?));
        }
    }
    store.write(stale)?;
    Ok(roots)
}

/// Checks the stored branch factor against `requested`, recording it in a new database.
pub(crate) fn check_branch_factor(
    store: &dyn KvStore,
    ks: &Spaces,
    requested: BranchFactor,
) -> Result<(), DbError> {
    match stored_branch_factor(store, ks)? {
        Some(stored) if stored != requested => Err(DbError::BranchFactorMismatch {
            stored: stored.arity(),
            requested: requested.arity(),
        }),
        Some(_) => match store.get(ks.meta, b"layout")?.as_deref() {
            Some([LAYOUT]) => Ok(()),
            Some([found]) => Err(DbError::UnknownLayout(*found)),
            None => Err(DbError::UnknownLayout(1)),
            Some(_) => Err(DbError::Corrupt("unreadable layout version".into())),
        },
        None => {
            let mut batch = WriteBatch::default();
            batch.put(ks.meta, b"bf", &[requested.token_bits() as u8]);
            batch.put(ks.meta, b"layout", &[LAYOUT]);
            Ok(store.write(batch)?)
        }
    }
}

pub(crate) fn stored_branch_factor(
    store: &dyn KvStore,
    ks: &Spaces,
) -> Result<Option<BranchFactor>, DbError> {
    match store.get(ks.meta, b"bf")?.as_deref() {
        None => Ok(None),
        Some([bits @ (1 | 2 | 4 | 8)]) => Ok(BranchFactor::from_arity(1 << bits)),
        Some(_) => Err(DbError::Corrupt("unreadable branch factor".into())),
    }
}
