//! [`MerkleDb`]: the trie kept in a [`KvStore`], its revisions, views and commits.
//!
//! # Layout
//!
//! Five keyspaces of one store (the node's fjall database, shared with other components):
//!
//! | keyspace | key | value |
//! |---|---|---|
//! | `merkle.values` | the key's bytes | node encoding of a node with a value |
//! | `merkle.branches` | packed key ‖ bit length mod 8 | node encoding of a value-less node |
//! | `merkle.meta` | `bf`, `rev`, `root` | branch factor, current revision, root key |
//! | `merkle.roots` | revision (u64 BE) | that revision's root |
//! | `merkle.history` | revision (u64 BE) | that commit's before-values ([`crate::history`]) |
//!
//! Value nodes are keyed by their bytes, so a scan of `merkle.values` is a scan of key-values in
//! order (as avalanchego's value node DB). A commit writes its nodes, its history record, the
//! pruning of the oldest record and the new metadata in **one atomic batch**: a crash leaves the
//! previous revision or the new one, never a mix.
//!
//! # Concurrency
//!
//! Building a view (applying a batch and hashing it) holds a read lock, so it runs beside
//! readers and sees one consistent revision. Applying a commit holds the write lock only while
//! the batch is written; readers therefore always see a whole revision.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard};

use quick_cache::sync::Cache;
use tributary_store::{Durability, FjallStore, KeyspaceId, KvStore, WriteBatch};

use crate::error::DbError;
use crate::history::{self, Record};
use crate::key::{BranchFactor, Key};
use crate::node::{self, EMPTY_ROOT, Hash, Node};
use crate::source::{Changes, NodeSource, Overlay, RootRef, ValueIter};
use crate::trie::{Ops, build, normalize_ops};
use crate::varint;

/// Longest key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 4096;
/// Longest value accepted, in bytes: a value must fit in one state-sync message.
pub const MAX_VALUE_LEN: usize = 1 << 20;

/// Settings of a [`MerkleDb`].
#[derive(Clone, Debug)]
pub struct Config {
    /// Branch factor; fixed when the database is created.
    pub branch_factor: BranchFactor,
    /// How many recent revisions serve reads and proofs by root (avalanchego: 300).
    pub history_length: usize,
    /// How many decoded nodes to keep in memory.
    pub node_cache_entries: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            branch_factor: BranchFactor::Sixteen,
            history_length: 300,
            node_cache_entries: 1 << 19,
        }
    }
}

/// A key and its value.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// One operation of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchOp {
    /// Set a key to a value.
    Put(Vec<u8>, Vec<u8>),
    /// Remove a key.
    Delete(Vec<u8>),
}

struct Spaces {
    values: KeyspaceId,
    branches: KeyspaceId,
    meta: KeyspaceId,
    roots: KeyspaceId,
    history: KeyspaceId,
}

struct State {
    revision: u64,
    root: Option<RootRef>,
    /// Retained revisions and their roots, oldest first.
    roots: VecDeque<(u64, Hash)>,
}

/// A rebuilt historical revision, valid while the database is at `built_at`.
struct Historical {
    revision: u64,
    built_at: u64,
    changes: Arc<Changes>,
}

struct Inner {
    store: Arc<dyn KvStore>,
    ks: Spaces,
    config: Config,
    state: RwLock<State>,
    cache: Cache<Key, Arc<Node>>,
    historical: Mutex<Option<Historical>>,
}

/// A Merkle radix trie whose roots equal avalanchego merkledb's, with persisted history.
///
/// Cloning is cheap and shares the database.
#[derive(Clone)]
pub struct MerkleDb {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MerkleDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MerkleDb")
            .field("root", &self.root())
            .finish_non_exhaustive()
    }
}

/// The current revision of the database, read through its cache.
pub(crate) struct DbSource<'a> {
    inner: &'a Inner,
    root: Option<RootRef>,
}

fn branch_storage_key(key: &Key) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.packed().len() + 1);
    branch_storage_key_into(key, &mut k);
    k
}

fn branch_storage_key_into(key: &Key, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(key.packed());
    out.push((key.bit_len() % 8) as u8);
}

impl NodeSource for DbSource<'_> {
    fn root(&self) -> Option<RootRef> {
        self.root.clone()
    }

    fn node(&self, key: &Key, has_value: bool) -> Result<Option<Arc<Node>>, DbError> {
        if let Some(node) = self.inner.cache.get(key) {
            return Ok(Some(node));
        }
        let ks = &self.inner.ks;
        let stored = if has_value {
            self.inner.store.get(ks.values, key.packed())?
        } else {
            self.inner
                .store
                .get(ks.branches, &branch_storage_key(key))?
        };
        let Some(bytes) = stored else { return Ok(None) };
        let node = Arc::new(Node::decode(key.clone(), &bytes)?);
        self.inner.cache.insert(key.clone(), node.clone());
        Ok(Some(node))
    }

    fn value(&self, key: &[u8]) -> Result<Option<Vec<u8>>, DbError> {
        match self.inner.store.get(self.inner.ks.values, key)? {
            Some(bytes) => Ok(node::decode_stored_value(&bytes)?),
            None => Ok(None),
        }
    }

    fn values_from(&self, start: &[u8]) -> ValueIter<'_> {
        Box::new(
            self.inner
                .store
                .scan_from(self.inner.ks.values, start)
                .filter_map(|r| match r {
                    Err(e) => Some(Err(e.into())),
                    Ok((k, v)) => match node::decode_stored_value(&v) {
                        Err(e) => Some(Err(e.into())),
                        Ok(value) => value.map(|value| Ok((k, value))),
                    },
                }),
        )
    }
}

impl MerkleDb {
    /// Opens the trie kept in `store`, creating it if the store holds none.
    ///
    /// # Errors
    /// When the store fails, holds a trie of another branch factor, or is corrupt.
    pub fn open(store: Arc<dyn KvStore>, config: Config) -> Result<Self, DbError> {
        let ks = Spaces {
            values: store.keyspace("merkle.values")?,
            branches: store.keyspace("merkle.branches")?,
            meta: store.keyspace("merkle.meta")?,
            roots: store.keyspace("merkle.roots")?,
            history: store.keyspace("merkle.history")?,
        };
        check_branch_factor(store.as_ref(), &ks, config.branch_factor)?;
        let revision = match store.get(ks.meta, b"rev")? {
            Some(v) => history::decode_revision_key(&v)?,
            None => 0,
        };
        let inner = Inner {
            cache: Cache::new(config.node_cache_entries.max(16)),
            state: RwLock::new(State {
                revision,
                root: None,
                roots: VecDeque::new(),
            }),
            historical: Mutex::new(None),
            store,
            ks,
            config,
        };
        let root = load_root(&inner)?;
        let roots = load_roots(&inner, revision)?;
        if let Some(&(r, recorded)) = roots.back() {
            let actual = root.as_ref().map_or(EMPTY_ROOT, |r| r.id);
            if r != revision || recorded != actual {
                return Err(DbError::Corrupt(format!(
                    "revision {revision} has root {}, history says revision {r} has {}",
                    hex(&actual),
                    hex(&recorded)
                )));
            }
        }
        {
            let mut state = inner.state.write().unwrap_or_else(PoisonError::into_inner);
            state.root = root;
            state.roots = roots;
        }
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// The branch factor of the trie kept in `store`, if it holds one.
    ///
    /// # Errors
    /// When the store fails or the stored value is unreadable.
    pub fn stored_branch_factor(store: &dyn KvStore) -> Result<Option<BranchFactor>, DbError> {
        let meta = store.keyspace("merkle.meta")?;
        match store.get(meta, b"bf")?.as_deref() {
            None => Ok(None),
            Some([bits @ (1 | 2 | 4 | 8)]) => Ok(BranchFactor::from_arity(1 << bits)),
            Some(_) => Err(DbError::Corrupt("unreadable branch factor".into())),
        }
    }

    /// Opens (or creates) the trie in a fjall database in directory `dir`.
    ///
    /// # Errors
    /// As [`MerkleDb::open`].
    pub fn open_dir(dir: &Path, config: Config, durability: Durability) -> Result<Self, DbError> {
        let store = FjallStore::open(dir, durability)?;
        Self::open(Arc::new(store), config)
    }

    pub(crate) fn token_bits(&self) -> usize {
        self.inner.config.branch_factor.token_bits()
    }

    /// The branch factor.
    #[must_use]
    pub fn branch_factor(&self) -> BranchFactor {
        self.inner.config.branch_factor
    }

    fn read_state(&self) -> RwLockReadGuard<'_, State> {
        // Commits update the state only after their batch is written, with plain assignments
        // that cannot panic halfway; a poisoned lock still guards a consistent state.
        self.inner
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The current root (32 zero bytes for an empty trie).
    #[must_use]
    pub fn root(&self) -> Hash {
        self.read_state().root.as_ref().map_or(EMPTY_ROOT, |r| r.id)
    }

    /// The current revision: the number of commits ever made.
    #[must_use]
    pub fn revision(&self) -> u64 {
        self.read_state().revision
    }

    /// The retained revisions and their roots, oldest first.
    #[must_use]
    pub fn history(&self) -> Vec<(u64, Hash)> {
        self.read_state().roots.iter().copied().collect()
    }

    /// The value of `key` at the current revision.
    ///
    /// # Errors
    /// When the store fails or is corrupt.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, DbError> {
        let state = self.read_state();
        DbSource {
            inner: &self.inner,
            root: state.root.clone(),
        }
        .value(key)
    }

    /// Up to `limit` key-values with keys in `[start, end]` at root `root`.
    ///
    /// # Errors
    /// When the root is not retained, or the store fails.
    pub fn key_values(
        &self,
        root: &Hash,
        start: Option<&[u8]>,
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyValue>, DbError> {
        self.with_root(root, |src| {
            src.values_from(start.unwrap_or_default())
                .take_while(|r| match (r, end) {
                    (Ok((k, _)), Some(end)) => k.as_slice() <= end,
                    _ => true,
                })
                .take(limit)
                .collect()
        })
    }

    /// Applies `ops` to the current revision without writing anything.
    ///
    /// # Errors
    /// When a key or value exceeds its limit, or the store fails.
    pub fn view(&self, ops: impl IntoIterator<Item = BatchOp>) -> Result<View, DbError> {
        let ops = normalize_ops(validate_ops(ops)?);
        let state = self.read_state();
        let source = DbSource {
            inner: &self.inner,
            root: state.root.clone(),
        };
        let changes = build(&source, self.token_bits(), ops)?;
        Ok(View {
            db: self.clone(),
            base_revision: state.revision,
            changes,
        })
    }

    /// Applies `ops` and commits them; returns the new root.
    ///
    /// # Errors
    /// As [`MerkleDb::view`] and [`View::commit`].
    pub fn commit(&self, ops: impl IntoIterator<Item = BatchOp>) -> Result<Hash, DbError> {
        self.view(ops)?.commit()
    }

    /// Runs `f` on the revision whose root is `root` (current or retained).
    pub(crate) fn with_root<T>(
        &self,
        root: &Hash,
        f: impl FnOnce(&dyn NodeSource) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        let state = self.read_state();
        let current = DbSource {
            inner: &self.inner,
            root: state.root.clone(),
        };
        if current.root.as_ref().map_or(EMPTY_ROOT, |r| r.id) == *root {
            return f(&current);
        }
        let revision = latest_revision_with_root(&state, root, state.revision)
            .ok_or(DbError::RootNotInHistory(*root))?;
        self.with_revision(&state, revision, f)
    }

    /// Runs `f` on retained revision `revision`; `state` is the read-locked current state.
    fn with_revision<T>(
        &self,
        state: &State,
        revision: u64,
        f: impl FnOnce(&dyn NodeSource) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        let current = DbSource {
            inner: &self.inner,
            root: state.root.clone(),
        };
        if revision == state.revision {
            return f(&current);
        }
        let changes = self.historical_changes(state, &current, revision)?;
        f(&Overlay {
            base: &current,
            changes: &changes,
        })
    }

    /// The changes that take the current revision back to `revision`, rebuilt from history
    /// (and cached until the next commit: a sync server answers many requests per root).
    fn historical_changes(
        &self,
        state: &State,
        current: &DbSource<'_>,
        revision: u64,
    ) -> Result<Arc<Changes>, DbError> {
        let mut cached = self
            .inner
            .historical
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(h) = cached.as_ref()
            && h.revision == revision
            && h.built_at == state.revision
        {
            return Ok(h.changes.clone());
        }
        let records = ((revision + 1)..=state.revision)
            .rev()
            .map(|r| self.load_record(r))
            .collect::<Result<Vec<Record>, DbError>>()?;
        let changes = Arc::new(build(
            current,
            self.token_bits(),
            history::revert_ops(records),
        )?);
        let recorded =
            recorded_root(state, revision).ok_or(DbError::RootNotInHistory(EMPTY_ROOT))?;
        if changes.root_id() != recorded {
            return Err(DbError::HistoryCorrupt {
                revision,
                got: changes.root_id(),
                recorded,
            });
        }
        *cached = Some(Historical {
            revision,
            built_at: state.revision,
            changes: changes.clone(),
        });
        Ok(changes)
    }

    pub(crate) fn load_record(&self, revision: u64) -> Result<Record, DbError> {
        let bytes = self
            .inner
            .store
            .get(self.inner.ks.history, &history::revision_key(revision))?
            .ok_or_else(|| DbError::Corrupt(format!("history record {revision} missing")))?;
        history::decode_record(&bytes)
    }

    /// Finds the retained revisions of a change proof from `start_root` to `end_root` and runs
    /// `f` with them and the end revision's source.
    pub(crate) fn with_change_span<T>(
        &self,
        start_root: &Hash,
        end_root: &Hash,
        f: impl FnOnce(u64, u64, &dyn NodeSource) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        let state = self.read_state();
        let end_rev = latest_revision_with_root(&state, end_root, state.revision)
            .ok_or(DbError::NoEndRoot(*end_root))?;
        let start_rev = end_rev
            .checked_sub(1)
            .and_then(|before| latest_revision_with_root(&state, start_root, before))
            .ok_or(DbError::InsufficientHistory(*start_root))?;
        self.with_revision(&state, end_rev, |src| f(start_rev, end_rev, src))
    }

    /// Runs `f` on the current revision.
    pub(crate) fn with_current<T>(
        &self,
        f: impl FnOnce(&dyn NodeSource) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        let state = self.read_state();
        f(&DbSource {
            inner: &self.inner,
            root: state.root.clone(),
        })
    }

    fn commit_changes(&self, base_revision: u64, changes: Changes) -> Result<Hash, DbError> {
        let mut state = self
            .inner
            .state
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if state.revision != base_revision {
            return Err(DbError::StaleView {
                view: base_revision,
                current: state.revision,
            });
        }
        let current_root = state.root.as_ref().map_or(EMPTY_ROOT, |r| r.id);
        let new_root = changes.root_id();
        if changes.values.is_empty() && new_root == current_root {
            return Ok(current_root);
        }
        let revision = state.revision + 1;
        let batch = self.commit_batch(revision, &changes)?;
        let new_root_ref = changes.root.clone();
        // The write lock keeps readers out until both are done, so the cache may be updated
        // beside the store write (on the second core); the changes are freed there too.
        let written = std::thread::scope(|scope| {
            scope.spawn(|| self.update_cache(changes));
            self.inner.store.write(batch)
        });
        if let Err(e) = written {
            // The cache may now hold nodes of a revision that was not written: drop it all.
            self.inner.cache.clear();
            return Err(e.into());
        }
        state.revision = revision;
        state.root = new_root_ref;
        state.roots.push_back((revision, new_root));
        while state.roots.len() > self.inner.config.history_length {
            state.roots.pop_front();
        }
        Ok(new_root)
    }

    fn update_cache(&self, changes: Changes) {
        for (key, change) in changes.nodes {
            match change.after {
                // Branch nodes are on every path and read again and again; a new leaf is rarely
                // read before it changes, so caching it would only evict branches.
                Some(node) if !node.children.is_empty() => self.inner.cache.insert(key, node),
                _ => {
                    self.inner.cache.remove(&key);
                }
            }
        }
    }

    fn commit_batch(&self, revision: u64, changes: &Changes) -> Result<WriteBatch, DbError> {
        let ks = &self.inner.ks;
        let mut batch = WriteBatch::with_capacity(changes.nodes.len() * 2 + 8);
        let mut storage_key = Vec::with_capacity(64);
        for (key, change) in &changes.nodes {
            let after_has_value = change.after.as_ref().map(|n| n.has_value());
            if let Some(node) = &change.after {
                if node.has_value() {
                    batch.put_with(ks.values, key.packed(), |out| node.encode_into(out));
                } else {
                    branch_storage_key_into(key, &mut storage_key);
                    batch.put_with(ks.branches, &storage_key, |out| node.encode_into(out));
                }
            }
            match (change.before, after_has_value) {
                (Some(true), None | Some(false)) => batch.delete(ks.values, key.packed()),
                (Some(false), None | Some(true)) => {
                    branch_storage_key_into(key, &mut storage_key);
                    batch.delete(ks.branches, &storage_key);
                }
                _ => {}
            }
        }
        let rk = history::revision_key(revision);
        batch.put(ks.roots, &rk, &changes.root_id());
        let record =
            history::encode_record(changes.values.iter().map(|(k, c)| (k, c.before.as_ref())));
        batch.put(ks.history, &rk, &record);
        let keep = self.inner.config.history_length.max(1) as u64;
        if let Some(expired) = revision.checked_sub(keep).filter(|r| *r > 0) {
            batch.delete(ks.roots, &history::revision_key(expired));
            batch.delete(ks.history, &history::revision_key(expired));
        }
        batch.put(ks.meta, b"rev", &rk);
        match &changes.root {
            Some(root) => batch.put(ks.meta, b"root", &encode_root(root)),
            None => batch.delete(ks.meta, b"root"),
        }
        Ok(batch)
    }
}

/// A batch applied to a revision: its root is known, nothing is written until [`View::commit`].
pub struct View {
    db: MerkleDb,
    base_revision: u64,
    changes: Changes,
}

impl std::fmt::Debug for View {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("View")
            .field("base_revision", &self.base_revision)
            .field("root", &hex(&self.root()))
            .finish_non_exhaustive()
    }
}

impl View {
    /// The root the trie would have after this view's batch.
    #[must_use]
    pub fn root(&self) -> Hash {
        self.changes.root_id()
    }

    /// The revision this view was built on.
    #[must_use]
    pub const fn base_revision(&self) -> u64 {
        self.base_revision
    }

    /// Number of values the batch really changes.
    #[must_use]
    pub fn changed_values(&self) -> usize {
        self.changes.values.len()
    }

    /// The value of `key` as the view sees it.
    ///
    /// # Errors
    /// [`DbError::StaleView`] once the database has moved past the view's base revision.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, DbError> {
        if let Some(change) = self.changes.values.get(key) {
            return Ok(change.after.clone());
        }
        let state = self.db.read_state();
        if state.revision != self.base_revision {
            return Err(DbError::StaleView {
                view: self.base_revision,
                current: state.revision,
            });
        }
        DbSource {
            inner: &self.db.inner,
            root: state.root.clone(),
        }
        .value(key)
    }

    /// Makes this view the current revision, atomically; returns its root.
    ///
    /// # Errors
    /// [`DbError::StaleView`] if another commit happened since the view was built; storage
    /// errors (then nothing was written).
    pub fn commit(self) -> Result<Hash, DbError> {
        self.db.commit_changes(self.base_revision, self.changes)
    }
}

fn validate_ops(ops: impl IntoIterator<Item = BatchOp>) -> Result<Ops, DbError> {
    ops.into_iter()
        .map(|op| {
            let (k, v) = match op {
                BatchOp::Put(k, v) => (k, Some(v)),
                BatchOp::Delete(k) => (k, None),
            };
            if k.len() > MAX_KEY_LEN {
                return Err(DbError::KeyTooLong {
                    len: k.len(),
                    max: MAX_KEY_LEN,
                });
            }
            if let Some(v) = &v
                && v.len() > MAX_VALUE_LEN
            {
                return Err(DbError::ValueTooLong {
                    len: v.len(),
                    max: MAX_VALUE_LEN,
                });
            }
            Ok((k, v))
        })
        .collect()
}

fn check_branch_factor(
    store: &dyn KvStore,
    ks: &Spaces,
    requested: BranchFactor,
) -> Result<(), DbError> {
    match store.get(ks.meta, b"bf")? {
        Some(stored) => {
            let arity = match stored.as_slice() {
                [bits @ (1 | 2 | 4 | 8)] => 1usize << bits,
                _ => return Err(DbError::Corrupt("unreadable branch factor".into())),
            };
            if arity != requested.arity() {
                return Err(DbError::BranchFactorMismatch {
                    stored: arity,
                    requested: requested.arity(),
                });
            }
            Ok(())
        }
        None => {
            let mut batch = WriteBatch::default();
            batch.put(ks.meta, b"bf", &[requested.token_bits() as u8]);
            Ok(store.write(batch)?)
        }
    }
}

fn encode_root(root: &RootRef) -> Vec<u8> {
    let mut out = vec![u8::from(root.has_value)];
    varint::put(&mut out, root.key.bit_len() as u64);
    out.extend_from_slice(root.key.packed());
    out
}

fn load_root(inner: &Inner) -> Result<Option<RootRef>, DbError> {
    let Some(bytes) = inner.store.get(inner.ks.meta, b"root")? else {
        return Ok(None);
    };
    let corrupt = || DbError::Corrupt("unreadable root record".into());
    let (&flag, rest) = bytes.split_first().ok_or_else(corrupt)?;
    let (bits, used) = varint::get(rest).ok_or_else(corrupt)?;
    let bits = usize::try_from(bits).map_err(|_| corrupt())?;
    let key = Key::from_packed(bits, rest[used..].to_vec()).ok_or_else(corrupt)?;
    let has_value = flag == 1;
    let source = DbSource { inner, root: None };
    let node = source.expect_node(&key, has_value)?;
    Ok(Some(RootRef {
        key,
        has_value,
        id: node.id(),
    }))
}

fn load_roots(inner: &Inner, revision: u64) -> Result<VecDeque<(u64, Hash)>, DbError> {
    let keep = inner.config.history_length.max(1) as u64;
    let oldest = revision.saturating_sub(keep - 1).max(1);
    let mut roots = VecDeque::new();
    let mut stale = WriteBatch::default();
    for entry in inner.store.scan_from(inner.ks.roots, &[]) {
        let (k, v) = entry?;
        let r = history::decode_revision_key(&k)?;
        if r < oldest || r > revision {
            stale.delete(inner.ks.roots, &k);
            stale.delete(inner.ks.history, &k);
        } else {
            roots.push_back((r, history::decode_root(&v)?));
        }
    }
    inner.store.write(stale)?;
    Ok(roots)
}

fn latest_revision_with_root(state: &State, root: &Hash, at_most: u64) -> Option<u64> {
    if state.revision <= at_most && state.root.as_ref().map_or(EMPTY_ROOT, |r| r.id) == *root {
        return Some(state.revision);
    }
    state
        .roots
        .iter()
        .rev()
        .find(|(r, h)| *r <= at_most && h == root)
        .map(|(r, _)| *r)
}

fn recorded_root(state: &State, revision: u64) -> Option<Hash> {
    state
        .roots
        .iter()
        .find(|(r, _)| *r == revision)
        .map(|(_, h)| *h)
}

pub(crate) fn hex(h: &Hash) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}
