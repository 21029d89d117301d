//! Ordered key-value storage behind one small trait.
//!
//! Every Tributary component that persists state (the Merkle trie, later the chunk store and the
//! replicated databases) lays its records out over a few named *keyspaces* of an ordered
//! key-value store. [`KvStore`] is the whole interface they need: point reads, ascending range
//! scans, and an atomic multi-keyspace [`WriteBatch`]. Two implementations exist:
//!
//! - [`FjallStore`], the node's on-disk store (an LSM tree; one database per data directory);
//! - [`MemStore`], a `BTreeMap` model used by the simulator and unit tests.
//!
//! Atomicity is the contract that matters: a batch is applied entirely or not at all, including
//! across a crash (fjall writes the whole batch as one journal record). Durability is chosen per
//! store with [`Durability`].

mod fjall_store;
mod mem;

pub use fjall_store::FjallStore;
pub use mem::MemStore;

/// A handle to one keyspace of a store, obtained from [`KvStore::keyspace`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KeyspaceId(pub(crate) usize);

/// How hard a committed batch is pushed to stable storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Durability {
    /// fsync every batch before `write` returns: a batch that returned survives power loss.
    #[default]
    Sync,
    /// Leave flushing to the operating system: a crashed *process* loses nothing, a crashed
    /// *machine* may lose the last batches (never part of one).
    Buffered,
}

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The storage engine failed (I/O error, corruption detected by the engine, poisoned state).
    #[error("storage engine failed")]
    Engine(#[from] fjall::Error),
    /// A keyspace name was asked for that the store cannot hold.
    #[error("too many keyspaces (at most {max})")]
    TooManyKeyspaces {
        /// The limit.
        max: usize,
    },
    /// A [`KeyspaceId`] from another store was used.
    #[error("unknown keyspace handle {0}")]
    UnknownKeyspace(usize),
}

/// One key-value pair as returned by scans.
pub type KvPair = (Vec<u8>, Vec<u8>);

/// An ascending scan over one keyspace.
pub type KvIter<'a> = Box<dyn Iterator<Item = Result<KvPair, StoreError>> + Send + 'a>;

/// A set of writes applied atomically by [`KvStore::write`].
///
/// Keys and values are copied into one arena buffer, so building a batch of many small records
/// costs two allocations in all rather than two per record.
#[derive(Debug, Default, Clone)]
pub struct WriteBatch {
    arena: Vec<u8>,
    ops: Vec<BatchEntry>,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchEntry {
    pub(crate) ks: KeyspaceId,
    key: (usize, usize),
    value: Option<(usize, usize)>,
}

impl WriteBatch {
    /// An empty batch with room for `n` operations.
    #[must_use]
    pub fn with_capacity(n: usize) -> Self {
        Self {
            arena: Vec::with_capacity(n * 64),
            ops: Vec::with_capacity(n),
        }
    }

    fn push_bytes(&mut self, bytes: &[u8]) -> (usize, usize) {
        let start = self.arena.len();
        self.arena.extend_from_slice(bytes);
        (start, self.arena.len())
    }

    /// Sets `key` to `value` in keyspace `ks`.
    pub fn put(&mut self, ks: KeyspaceId, key: &[u8], value: &[u8]) {
        let key = self.push_bytes(key);
        let value = Some(self.push_bytes(value));
        self.ops.push(BatchEntry { ks, key, value });
    }

    /// Sets `key` to a value written by `write` straight into the batch's buffer.
    pub fn put_with(&mut self, ks: KeyspaceId, key: &[u8], write: impl FnOnce(&mut Vec<u8>)) {
        let key = self.push_bytes(key);
        let start = self.arena.len();
        write(&mut self.arena);
        let value = Some((start, self.arena.len()));
        self.ops.push(BatchEntry { ks, key, value });
    }

    /// Removes `key` from keyspace `ks` (a no-op if absent).
    pub fn delete(&mut self, ks: KeyspaceId, key: &[u8]) {
        let key = self.push_bytes(key);
        self.ops.push(BatchEntry {
            ks,
            key,
            value: None,
        });
    }

    /// Number of operations in the batch.
    #[must_use]
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the batch holds no operation.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The operations as `(keyspace, key, value)`, `None` meaning delete, in the order given.
    pub fn iter(&self) -> impl Iterator<Item = (KeyspaceId, &[u8], Option<&[u8]>)> {
        self.ops.iter().map(|e| self.resolve(e))
    }

    pub(crate) fn resolve(&self, e: &BatchEntry) -> (KeyspaceId, &[u8], Option<&[u8]>) {
        let slice = |(a, b): (usize, usize)| &self.arena[a..b];
        (e.ks, slice(e.key), e.value.map(slice))
    }

    pub(crate) fn entries(&self) -> &[BatchEntry] {
        &self.ops
    }
}

/// An ordered key-value store with named keyspaces and atomic batches.
///
/// Keys compare as byte strings. Implementations are shared between threads; a reader never
/// observes part of a batch.
pub trait KvStore: Send + Sync {
    /// Opens (creating if needed) the keyspace called `name` and returns its handle.
    ///
    /// # Errors
    /// When the engine fails or the keyspace cannot be created.
    fn keyspace(&self, name: &str) -> Result<KeyspaceId, StoreError>;

    /// As [`KvStore::keyspace`], for a keyspace of large values (kilobytes, such as chunk
    /// data): stores that can keep such values apart from the keys (fjall's key-value
    /// separation) do, so compaction does not rewrite them.
    ///
    /// # Errors
    /// As [`KvStore::keyspace`].
    fn keyspace_for_large_values(&self, name: &str) -> Result<KeyspaceId, StoreError> {
        self.keyspace(name)
    }

    /// Reads the value of `key` in `ks`.
    ///
    /// # Errors
    /// When the engine fails.
    fn get(&self, ks: KeyspaceId, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Scans `ks` in ascending key order, starting at the first key `>= start`.
    fn scan_from(&self, ks: KeyspaceId, start: &[u8]) -> KvIter<'_>;

    /// Applies every operation of `batch`, in order, as one atomic unit.
    ///
    /// # Errors
    /// When the engine fails; then none of the batch is applied.
    fn write(&self, batch: WriteBatch) -> Result<(), StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exercise(store: &dyn KvStore) {
        let a = store.keyspace("a").expect("keyspace a");
        let b = store.keyspace("b").expect("keyspace b");
        assert_eq!(store.keyspace("a").expect("reopen a"), a);
        let mut batch = WriteBatch::default();
        batch.put(a, b"k2", b"v2");
        batch.put(a, b"k1", b"v1");
        batch.put(b, b"k1", b"other");
        batch.put(a, b"k3", b"v3");
        batch.delete(a, b"k3");
        store.write(batch).expect("write");
        assert_eq!(store.get(a, b"k1").expect("get"), Some(b"v1".to_vec()));
        assert_eq!(store.get(a, b"k3").expect("get"), None);
        assert_eq!(store.get(b, b"k1").expect("get"), Some(b"other".to_vec()));
        let scanned: Vec<_> = store
            .scan_from(a, b"k15")
            .map(|r| r.expect("scan"))
            .collect();
        assert_eq!(scanned, vec![(b"k2".to_vec(), b"v2".to_vec())]);
        let all: Vec<_> = store
            .scan_from(a, b"")
            .map(|r| r.expect("scan").0)
            .collect();
        assert_eq!(all, vec![b"k1".to_vec(), b"k2".to_vec()]);
    }

    #[test]
    fn mem_store_semantics() {
        exercise(&MemStore::new());
    }

    #[test]
    fn fjall_store_semantics_and_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = FjallStore::open(dir.path(), Durability::Sync).expect("open");
            exercise(&store);
        }
        let store = FjallStore::open(dir.path(), Durability::Sync).expect("reopen");
        let a = store.keyspace("a").expect("keyspace");
        assert_eq!(store.get(a, b"k2").expect("get"), Some(b"v2".to_vec()));
    }
}
