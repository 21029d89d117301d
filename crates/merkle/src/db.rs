//! [`MerkleDb`]: the trie kept in a [`KvStore`], its revisions, views and commits.
//!
//! The current revision is the checkpointed trie in the store seen through the pending changes
//! of the commits since ([`crate::persist`] describes the layout and why). Historical revisions
//! are the current one seen through the changes that undo later commits ([`crate::history`]).
//!
//! # Concurrency
//!
//! Building a view (applying a batch and hashing it) holds a read lock, so it runs beside
//! readers and sees one consistent revision. A commit holds the write lock while it writes its
//! durable record and merges its changes; readers therefore always see a whole revision.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use quick_cache::sync::Cache;
use tributary_store::{Durability, FjallStore, KvStore, WriteBatch};

use crate::error::DbError;
use crate::history::{self, Record};
use crate::key::{BranchFactor, Key};
use crate::node::{EMPTY_ROOT, Hash, Node};
use crate::persist::{self, Spaces, StoreSource};
use crate::source::{Changed, Changes, NodeSource};
use crate::trie::{Ops, build, normalize_ops};

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
    /// How many decoded checkpointed nodes to keep in memory.
    pub node_cache_entries: usize,
    /// Write the trie nodes at least every this many commits.
    pub checkpoint_interval: u64,
    /// Write the trie nodes once this many are pending (bounds the memory they take).
    pub max_pending_nodes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            branch_factor: BranchFactor::Sixteen,
            history_length: 300,
            node_cache_entries: 1 << 19,
            checkpoint_interval: 32,
            max_pending_nodes: 400_000,
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

struct State {
    /// The last commit.
    revision: u64,
    /// The revision whose nodes are in the store.
    checkpoint: u64,
    /// The root of the checkpointed trie.
    checkpoint_root: Option<crate::source::RootRef>,
    /// A checkpoint being written in the background, if any.
    inflight: Option<Inflight>,
    /// Node and value changes not yet written (on top of the in-flight checkpoint's); its root
    /// is the current root.
    pending: Changes,
    /// Retained revisions and their roots, oldest first.
    roots: VecDeque<(u64, Hash)>,
}

impl State {
    fn root(&self) -> Hash {
        self.pending.root_id()
    }
}

/// A checkpoint being written by a background thread: the pending changes it froze and the
/// revision they bring the store to. Readers see the store through them until it is finished.
struct Inflight {
    revision: u64,
    changes: Arc<Changes>,
    writer: std::thread::JoinHandle<Result<(), DbError>>,
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
    cache: Arc<Cache<Key, Arc<Node>>>,
    historical: Mutex<Option<Historical>>,
}

/// A Merkle radix trie whose roots equal avalanchego merkledb's, with persisted history.
///
/// Cloning is cheap and shares the database. Dropping the last handle writes the pending trie
/// nodes; if the process dies first, the next open rebuilds them from the history records.
#[derive(Clone)]
pub struct MerkleDb {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MerkleDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MerkleDb")
            .field("root", &hex(&self.root()))
            .finish_non_exhaustive()
    }
}

impl Inner {
    fn disk(&self, state: &State) -> StoreSource<'_> {
        StoreSource {
            store: self.store.as_ref(),
            ks: &self.ks,
            cache: &self.cache,
            root: state.checkpoint_root.clone(),
        }
    }

    fn write_state(&self) -> RwLockWriteGuard<'_, State> {
        // State is updated only after the store accepted a write, by assignments that cannot
        // panic halfway; a poisoned lock still guards a consistent state.
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the current revision: the store, seen through the in-flight checkpoint's
    /// changes and the pending ones.
    fn with_current<T>(&self, state: &State, f: impl FnOnce(&dyn NodeSource) -> T) -> T {
        let disk = self.disk(state);
        match &state.inflight {
            Some(inflight) => {
                let frozen = Changed {
                    base: &disk,
                    changes: &inflight.changes,
                };
                f(&Changed {
                    base: &frozen,
                    changes: &state.pending,
                })
            }
            None => f(&Changed {
                base: &disk,
                changes: &state.pending,
            }),
        }
    }

    /// Writes every pending node now; afterwards the store holds the current revision's trie.
    fn checkpoint(&self, state: &mut State) -> Result<(), DbError> {
        self.finish_inflight(state, true)?;
        if state.checkpoint == state.revision {
            return Ok(());
        }
        let changes = Arc::new(std::mem::take(&mut state.pending));
        state.pending.root = changes.root.clone();
        let written = write_checkpoint(
            self.store.as_ref(),
            &self.ks,
            &self.cache,
            state.revision,
            &changes,
        );
        self.finish(state, state.revision, changes, written)
    }

    /// Starts writing the pending nodes on a background thread, unless a write is in flight.
    fn start_checkpoint(&self, state: &mut State) {
        if state.inflight.is_some() || state.checkpoint == state.revision {
            return;
        }
        let changes = Arc::new(std::mem::take(&mut state.pending));
        state.pending.root = changes.root.clone();
        let (store, ks, cache) = (self.store.clone(), self.ks, self.cache.clone());
        let (revision, frozen) = (state.revision, changes.clone());
        let writer = std::thread::spawn(move || {
            write_checkpoint(store.as_ref(), &ks, &cache, revision, &frozen)
        });
        state.inflight = Some(Inflight {
            revision,
            changes,
            writer,
        });
    }

    /// Completes the in-flight checkpoint if it is done, or (with `wait`) once it is.
    fn finish_inflight(&self, state: &mut State, wait: bool) -> Result<(), DbError> {
        let Some(inflight) = state.inflight.take() else {
            return Ok(());
        };
        if !wait && !inflight.writer.is_finished() {
            state.inflight = Some(inflight);
            return Ok(());
        }
        let written = inflight
            .writer
            .join()
            .unwrap_or(Err(DbError::CheckpointWriterPanicked));
        self.finish(state, inflight.revision, inflight.changes, written)
    }

    /// Records a checkpoint's outcome. On failure its changes go back under the pending ones,
    /// so the next checkpoint writes them again.
    fn finish(
        &self,
        state: &mut State,
        revision: u64,
        changes: Arc<Changes>,
        written: Result<(), DbError>,
    ) -> Result<(), DbError> {
        if let Err(e) = written {
            // The cache may hold nodes the store did not take: start it over.
            self.cache.clear();
            let mut merged = Arc::try_unwrap(changes).unwrap_or_else(|shared| (*shared).clone());
            merged.absorb(std::mem::take(&mut state.pending));
            state.pending = merged;
            return Err(e);
        }
        state.checkpoint = revision;
        state.checkpoint_root = changes.root.clone();
        // Freeing hundreds of thousands of nodes takes a while; nobody needs to wait for it.
        std::thread::spawn(move || drop(changes));
        Ok(())
    }

    /// Brings the checkpointed trie up to the last commit by replaying the records in between.
    fn recover(&self, state: &mut State) -> Result<(), DbError> {
        let records = ((state.checkpoint + 1)..=state.revision)
            .map(|r| load_record(self, r))
            .collect::<Result<Vec<Record>, DbError>>()?;
        let disk = self.disk(state);
        let changes = build(
            &disk,
            self.config.branch_factor.token_bits(),
            history::replay_ops(records),
        )?;
        let recorded = recorded_root(state, state.revision).unwrap_or(EMPTY_ROOT);
        if changes.root_id() != recorded {
            return Err(DbError::HistoryCorrupt {
                revision: state.revision,
                got: changes.root_id(),
                recorded,
            });
        }
        state.pending = changes;
        self.checkpoint(state)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        let mut state = std::mem::replace(
            state,
            State {
                revision: 0,
                checkpoint: 0,
                checkpoint_root: None,
                inflight: None,
                pending: Changes::default(),
                roots: VecDeque::new(),
            },
        );
        // A failure here loses nothing: the records are durable and the next open replays them.
        let _ = self.checkpoint(&mut state);
    }
}

/// Writes `changes` as the checkpoint of `revision` and puts its branch nodes in the cache.
///
/// Safe beside readers: they look nodes up in `changes` before the cache or the store for as
/// long as the checkpoint is unfinished.
fn write_checkpoint(
    store: &dyn KvStore,
    ks: &Spaces,
    cache: &Cache<Key, Arc<Node>>,
    revision: u64,
    changes: &Changes,
) -> Result<(), DbError> {
    store.write(persist::checkpoint_batch(ks, revision, changes))?;
    for (key, change) in &changes.nodes {
        match &change.after {
            // Branch nodes are on every path and read again and again; a new leaf is rarely
            // read before it changes, so caching it would only evict branches.
            Some(node) if !node.children.is_empty() => cache.insert(key.clone(), node.clone()),
            _ => {
                cache.remove(key);
            }
        }
    }
    Ok(())
}

fn load_record(inner: &Inner, revision: u64) -> Result<Record, DbError> {
    let bytes = inner
        .store
        .get(inner.ks.history, &history::revision_key(revision))?
        .ok_or_else(|| DbError::Corrupt(format!("history record {revision} missing")))?;
    history::decode_record(&bytes)
}

impl MerkleDb {
    /// Opens the trie kept in `store`, creating it if the store holds none. A trie whose
    /// process died between checkpoints is caught up from its history records here.
    ///
    /// # Errors
    /// When the store fails, holds a trie of another branch factor, or is corrupt.
    pub fn open(store: Arc<dyn KvStore>, mut config: Config) -> Result<Self, DbError> {
        config.history_length = config.history_length.max(1);
        let ks = Spaces::open(store.as_ref())?;
        persist::check_branch_factor(store.as_ref(), &ks, config.branch_factor)?;
        let revision = persist::meta_revision(store.as_ref(), &ks, b"rev")?;
        let checkpoint = persist::meta_revision(store.as_ref(), &ks, b"nodes_rev")?;
        let keep = config.history_length.max(1) as u64;
        let roots = persist::load_roots(store.as_ref(), &ks, revision, keep)?;
        let inner = Inner {
            cache: Arc::new(Cache::new(config.node_cache_entries.max(16))),
            state: RwLock::new(State {
                revision,
                checkpoint,
                checkpoint_root: None,
                inflight: None,
                pending: Changes::default(),
                roots,
            }),
            historical: Mutex::new(None),
            store,
            ks,
            config,
        };
        {
            let mut state = inner.write_state();
            let root = persist::load_checkpoint_root(&inner.disk(&state))?;
            state.checkpoint_root = root.clone();
            state.pending.root = root;
            if state.checkpoint > state.revision {
                return Err(DbError::Corrupt(
                    "nodes are newer than the last commit".into(),
                ));
            }
            if state.checkpoint < state.revision {
                inner.recover(&mut state)?;
            }
            if let Some(&(r, recorded)) = state.roots.back()
                && (r != state.revision || recorded != state.root())
            {
                return Err(DbError::Corrupt(format!(
                    "revision {} has root {}, history says revision {r} has {}",
                    state.revision,
                    hex(&state.root()),
                    hex(&recorded)
                )));
            }
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
        persist::stored_branch_factor(store, &Spaces::open(store)?)
    }

    /// Opens (or creates) the trie in a fjall database in directory `dir`.
    ///
    /// # Errors
    /// As [`MerkleDb::open`].
    pub fn open_dir(dir: &Path, config: Config, durability: Durability) -> Result<Self, DbError> {
        let store = FjallStore::open(dir, durability)?;
        Self::open(Arc::new(store), config)
    }

    /// Writes the pending trie nodes now (commits are durable without this; it only shortens
    /// the catch-up of a reopen after a crash).
    ///
    /// # Errors
    /// When the store fails.
    pub fn flush(&self) -> Result<(), DbError> {
        self.inner.checkpoint(&mut self.inner.write_state())
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
        self.inner
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The current root (32 zero bytes for an empty trie).
    #[must_use]
    pub fn root(&self) -> Hash {
        self.read_state().root()
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
        self.with_current(|src| src.value(key))
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
        let changes = self
            .inner
            .with_current(&state, |current| build(current, self.token_bits(), ops))?;
        Ok(View {
            db: self.clone(),
            base_revision: state.revision,
            changes,
        })
    }

    /// The progress record last stored with [`View::commit_with_progress`], if any.
    ///
    /// # Errors
    /// Storage errors.
    pub fn sync_progress(&self) -> Result<Option<Vec<u8>>, DbError> {
        Ok(self
            .inner
            .store
            .get(self.inner.ks.meta, persist::SYNC_PROGRESS)?)
    }

    /// Applies `ops` and commits them; returns the new root.
    ///
    /// # Errors
    /// As [`MerkleDb::view`] and [`View::commit`].
    pub fn commit(&self, ops: impl IntoIterator<Item = BatchOp>) -> Result<Hash, DbError> {
        self.view(ops)?.commit()
    }

    /// Runs `f` on the current revision.
    pub(crate) fn with_current<T>(
        &self,
        f: impl FnOnce(&dyn NodeSource) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        let state = self.read_state();
        self.inner.with_current(&state, f)
    }

    /// Runs `f` on the revision whose root is `root` (current or retained).
    pub(crate) fn with_root<T>(
        &self,
        root: &Hash,
        f: impl FnOnce(&dyn NodeSource) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        let state = self.read_state();
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
        self.inner.with_current(state, |current| {
            if revision == state.revision {
                return f(current);
            }
            let changes = self.historical_changes(state, current, revision)?;
            f(&Changed {
                base: current,
                changes: &changes,
            })
        })
    }

    /// The changes that take the current revision back to `revision`, rebuilt from history
    /// (and cached until the next commit: a sync server answers many requests per root).
    fn historical_changes(
        &self,
        state: &State,
        current: &dyn NodeSource,
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
        load_record(&self.inner, revision)
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

    fn commit_changes(
        &self,
        base_revision: u64,
        changes: Changes,
        progress: Option<&[u8]>,
    ) -> Result<Hash, DbError> {
        let inner = &self.inner;
        let mut state = inner.write_state();
        if state.revision != base_revision {
            return Err(DbError::StaleView {
                view: base_revision,
                current: state.revision,
            });
        }
        let new_root = changes.root_id();
        if changes.values.is_empty() && new_root == state.root() {
            if let Some(progress) = progress {
                let mut batch = WriteBatch::with_capacity(1);
                batch.put(inner.ks.meta, persist::SYNC_PROGRESS, progress);
                inner.store.write(batch)?;
            }
            return Ok(new_root);
        }
        let revision = state.revision + 1;
        let keep = inner.config.history_length.max(1) as u64;
        // This commit prunes record `revision - keep`; a reopen after a crash needs every
        // record after the stored checkpoint, so the store must not lag further behind.
        if revision - state.checkpoint > keep {
            inner.checkpoint(&mut state)?;
        }
        inner.store.write(persist::commit_batch(
            &inner.ks, revision, &changes, keep, progress,
        ))?;
        // Durable from here on.
        state.pending.absorb(changes);
        state.revision = revision;
        state.roots.push_back((revision, new_root));
        while state.roots.len() > inner.config.history_length {
            state.roots.pop_front();
        }
        inner.finish_inflight(&mut state, false)?;
        let written = state
            .inflight
            .as_ref()
            .map_or(state.checkpoint, |i| i.revision);
        let due = revision - written >= inner.config.checkpoint_interval.max(1);
        let full = state.pending.nodes.len() >= inner.config.max_pending_nodes;
        if full
            && state.inflight.is_some()
            && state.pending.nodes.len() >= 2 * inner.config.max_pending_nodes
        {
            // Writing falls behind: wait rather than let pending nodes grow without bound.
            inner.finish_inflight(&mut state, true)?;
        }
        if due || full {
            inner.start_checkpoint(&mut state);
        }
        Ok(new_root)
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
        let current = self.db.revision();
        if current != self.base_revision {
            return Err(DbError::StaleView {
                view: self.base_revision,
                current,
            });
        }
        self.db.get(key)
    }

    /// The path from the view's root towards `key`, as a proof's end proof holds it: the
    /// nodes whose keys prefix `key`, plus the node where `key` would be if it is absent. An
    /// empty trie has no path.
    ///
    /// # Errors
    /// [`DbError::StaleView`] once the database has moved past the view's base revision;
    /// storage errors.
    pub fn proof_path(&self, key: &[u8]) -> Result<Vec<crate::proof::ProofNode>, DbError> {
        let token_bits = self.db.token_bits();
        self.with_source(|src| match crate::proof::proof_path(src, token_bits, key) {
            Err(DbError::EmptyTrie) => Ok(Vec::new()),
            other => other,
        })
    }

    /// The largest key in `[from, before)` the view holds, if any (a forward scan).
    ///
    /// # Errors
    /// As [`View::proof_path`].
    pub fn last_key_in(&self, from: &[u8], before: &[u8]) -> Result<Option<Vec<u8>>, DbError> {
        self.with_source(|src| {
            let mut last = None;
            for item in src.values_from(from) {
                let (key, _) = item?;
                if key.as_slice() >= before {
                    break;
                }
                last = Some(key);
            }
            Ok(last)
        })
    }

    /// Runs `f` on the trie this view describes.
    fn with_source<T>(
        &self,
        f: impl FnOnce(&dyn NodeSource) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        let state = self.db.read_state();
        if state.revision != self.base_revision {
            return Err(DbError::StaleView {
                view: self.base_revision,
                current: state.revision,
            });
        }
        self.db.inner.with_current(&state, |base| {
            f(&Changed {
                base,
                changes: &self.changes,
            })
        })
    }

    /// Makes this view the current revision, durably and atomically; returns its root.
    ///
    /// # Errors
    /// [`DbError::StaleView`] if another commit happened since the view was built; storage
    /// errors (then the revision was not committed, unless the error came from writing the
    /// checkpoint that may follow a commit).
    pub fn commit(self) -> Result<Hash, DbError> {
        self.db
            .commit_changes(self.base_revision, self.changes, None)
    }

    /// As [`View::commit`], and stores `progress` as the database's sync progress record in
    /// the same atomic write (also when the view changes nothing), so a state-sync client's
    /// record of what it has synced never disagrees with what was committed.
    ///
    /// # Errors
    /// As [`View::commit`].
    pub fn commit_with_progress(self, progress: &[u8]) -> Result<Hash, DbError> {
        self.db
            .commit_changes(self.base_revision, self.changes, Some(progress))
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

fn latest_revision_with_root(state: &State, root: &Hash, at_most: u64) -> Option<u64> {
    if state.revision <= at_most && state.root() == *root {
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
    ::hex::encode(h)
}
