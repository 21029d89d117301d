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
    /// A batch wrote or deleted the empty key, which fjall cannot store.
    #[error("the empty key cannot be stored")]
    EmptyKey,
    /// A batch wrote a key longer than fjall can store.
    #[error("a key of {len} bytes is longer than the {max} bytes a store key may have")]
    KeyTooLong {
        /// The key's length.
        len: usize,
        /// The limit, [`MAX_KEY_LEN`].
        max: usize,
    },
    /// A batch wrote a value longer than fjall can store.
    #[error("a value of {len} bytes is longer than the {max} bytes a store value may have")]
    ValueTooLong {
        /// The value's length.
        len: u64,
        /// The limit, [`MAX_VALUE_LEN`].
        max: u64,
    },
    /// The engine stopped flushing memtables (a flush failed: a full or failing disk), so a
    /// write waited for room in memory in vain.
    #[error(
        "the storage engine stopped flushing to disk for {seconds} s (is the disk full or failing?)"
    )]
    FlushStalled {
        /// How long the write waited.
        seconds: u64,
    },
    /// A file of the store's directory could not be read or removed.
    #[error("{}", .path.display())]
    Io {
        /// The file or directory.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The data directory is locked by another process that has the store open.
    #[error("the data directory {} is in use by another process", .0.display())]
    Locked(std::path::PathBuf),
}

/// The longest key a store holds: fjall keeps key lengths in 16 bits.
pub const MAX_KEY_LEN: usize = u16::MAX as usize;

/// The longest value a store holds: fjall keeps value lengths in 32 bits.
pub const MAX_VALUE_LEN: u64 = u32::MAX as u64;

/// Checks that `key` can be stored: not empty, at most [`MAX_KEY_LEN`] bytes.
///
/// # Errors
/// [`StoreError::EmptyKey`] or [`StoreError::KeyTooLong`].
pub fn check_key(key: &[u8]) -> Result<(), StoreError> {
    if key.is_empty() {
        return Err(StoreError::EmptyKey);
    }
    if key.len() > MAX_KEY_LEN {
        return Err(StoreError::KeyTooLong {
            len: key.len(),
            max: MAX_KEY_LEN,
        });
    }
    Ok(())
}

/// Checks that every operation of `batch` can be stored, before any of it is applied: fjall
/// panics on the empty key and on keys or values over its limits, and both stores refuse them
/// here instead, so a model test sees exactly what the node sees.
fn check_batch(batch: &WriteBatch) -> Result<(), StoreError> {
    for (_, key, value) in batch.iter() {
        check_key(key)?;
        if let Some(value) = value
            && value.len() as u64 > MAX_VALUE_LEN
        {
            return Err(StoreError::ValueTooLong {
                len: value.len() as u64,
                max: MAX_VALUE_LEN,
            });
        }
    }
    Ok(())
}

/// One key-value pair as returned by scans.
pub type KvPair = (Vec<u8>, Vec<u8>);

/// An ascending scan over one keyspace.
pub type KvIter<'a> = Box<dyn Iterator<Item = Result<KvPair, StoreError>> + Send + 'a>;

/// A set of writes applied atomically by [`KvStore::write`].
///
/// Keys and values are copied into one arena buffer, so building a batch of many small records
/// costs two allocations in all rather than two per record.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WriteBatch {
    arena: Vec<u8>,
    ops: Vec<BatchEntry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

    /// Appends every operation of `other` after those of `self` (so `self` then does what
    /// writing both, in order, would).
    pub fn append(&mut self, other: &Self) {
        let base = self.arena.len();
        self.arena.extend_from_slice(&other.arena);
        let shift = |(a, b): (usize, usize)| (a + base, b + base);
        self.ops.extend(other.ops.iter().map(|e| BatchEntry {
            ks: e.ks,
            key: shift(e.key),
            value: e.value.map(shift),
        }));
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

    /// Reads the value of `key` in `ks`. A key that cannot be stored (see [`check_key`]) is
    /// absent.
    ///
    /// # Errors
    /// When the engine fails.
    fn get(&self, ks: KeyspaceId, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Whether `key` is in `ks`. Stores that keep large values apart answer from the keys
    /// alone, without reading the value.
    ///
    /// # Errors
    /// When the engine fails.
    fn contains(&self, ks: KeyspaceId, key: &[u8]) -> Result<bool, StoreError> {
        Ok(self.get(ks, key)?.is_some())
    }

    /// Scans `ks` in ascending key order, starting at the first key `>= start`.
    fn scan_from(&self, ks: KeyspaceId, start: &[u8]) -> KvIter<'_>;

    /// Applies every operation of `batch`, in order, as one atomic unit.
    ///
    /// # Errors
    /// When a key or value cannot be stored ([`StoreError::EmptyKey`],
    /// [`StoreError::KeyTooLong`], [`StoreError::ValueTooLong`]) or the engine fails; then
    /// none of the batch is applied.
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
        assert!(store.contains(a, b"k1").expect("contains"));
        assert!(!store.contains(a, b"k3").expect("contains deleted"));
        assert!(!store.contains(b, b"k2").expect("contains other keyspace"));
        assert!(!store.contains(a, b"").expect("contains empty key"));
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

    /// What fjall cannot hold is refused by both stores, and the refused batch leaves nothing.
    fn refuses_what_fjall_refuses(store: &dyn KvStore) {
        let a = store.keyspace("a").expect("keyspace a");
        let long_key = vec![7u8; MAX_KEY_LEN + 1];
        let cases: [(&[u8], Option<&[u8]>); 3] =
            [(b"", Some(b"v")), (b"", None), (&long_key, Some(b"v"))];
        for (key, value) in cases {
            let mut batch = WriteBatch::default();
            batch.put(a, b"fine", b"first");
            match value {
                Some(v) => batch.put(a, key, v),
                None => batch.delete(a, key),
            }
            let err = store.write(batch).expect_err("refused");
            assert!(
                matches!(err, StoreError::EmptyKey | StoreError::KeyTooLong { .. }),
                "{err}"
            );
            assert_eq!(store.get(a, b"fine").expect("get"), None, "nothing applied");
        }
        assert_eq!(store.get(a, b"").expect("get empty"), None);
        assert_eq!(store.get(a, &long_key).expect("get long"), None);
        let mut batch = WriteBatch::default();
        batch.put(a, &vec![1u8; MAX_KEY_LEN], b"longest key");
        store.write(batch).expect("longest key is fine");
    }

    #[test]
    fn appended_batches_apply_in_order() {
        let store = MemStore::new();
        let a = store.keyspace("a").expect("keyspace");
        let mut first = WriteBatch::default();
        first.put(a, b"k", b"old");
        first.put(a, b"gone", b"x");
        let mut second = WriteBatch::default();
        second.put(a, b"k", b"new");
        second.delete(a, b"gone");
        first.append(&second);
        assert_eq!(first.len(), 4);
        store.write(first).expect("write");
        assert_eq!(store.get(a, b"k").expect("get"), Some(b"new".to_vec()));
        assert_eq!(store.get(a, b"gone").expect("get"), None);
    }

    #[test]
    fn mem_store_semantics() {
        exercise(&MemStore::new());
        refuses_what_fjall_refuses(&MemStore::new());
    }

    #[test]
    fn fjall_store_refuses_what_it_cannot_hold() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FjallStore::open(dir.path(), Durability::Buffered).expect("open");
        refuses_what_fjall_refuses(&store);
    }

    fn journal_bytes(dir: &std::path::Path) -> u64 {
        let mut total = 0;
        for entry in std::fs::read_dir(dir)
            .expect("list")
            .map(|e| e.expect("entry"))
        {
            let path = entry.path();
            if path.is_dir() {
                total += journal_bytes(&path);
            } else if path.extension().is_some_and(|e| e == "jnl") {
                // Blocks in use: fjall preallocates each journal to 64 MiB as a sparse file.
                use std::os::unix::fs::MetadataExt;
                total += entry.metadata().expect("metadata").blocks() * 512;
            }
        }
        total
    }

    /// Chunk data and a small index beside it, as the chunk store writes them: the journals
    /// are reclaimed as the data is flushed (the small keyspace once pinned all of them). fjall
    /// starts a new journal past 64 MB and deletes old ones once every keyspace has flushed
    /// what they hold, so at most about one journal's worth stays.
    #[test]
    fn journals_of_large_values_are_reclaimed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FjallStore::open(dir.path(), Durability::Buffered).expect("open");
        let data = store.keyspace_for_large_values("data").expect("data");
        let index = store.keyspace("index").expect("index");
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut value = vec![0u8; 4096];
        let n: u32 = 40_000; // 160 MiB: past two journal rotations
        for first in (0..n).step_by(100) {
            let mut batch = WriteBatch::default();
            for i in first..first + 100 {
                for word in value.chunks_mut(8) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    word.copy_from_slice(&x.to_le_bytes());
                }
                batch.put(data, &i.to_be_bytes(), &value);
                batch.put(index, &i.to_be_bytes(), b"i");
            }
            store.write(batch).expect("write");
        }
        drop(store);
        let journals = journal_bytes(dir.path());
        let written = u64::from(n) * 4096;
        assert!(
            journals < 100 << 20,
            "{journals} bytes of journals left after writing {written}"
        );
    }

    /// A process killed while fjall creates the database leaves its files without a complete
    /// version marker; the next open creates the database afresh instead of failing forever.
    #[test]
    fn an_unfinished_creation_is_created_again() {
        // The marker missing, empty, or cut after fjall's first write ("FJL" without the
        // version byte).
        let cut: &[u8] = b"FJL";
        for (marker, journal) in [
            (None, false),
            (None, true),
            (Some(&b""[..]), true),
            (Some(cut), true),
        ] {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("store");
            {
                let store = FjallStore::open(&path, Durability::Sync).expect("create");
                drop(store);
            }
            // Back to what a kill mid-creation leaves: no data, and the marker missing or empty.
            for entry in std::fs::read_dir(&path).expect("list") {
                let entry = entry.expect("entry");
                let name = entry.file_name();
                let keep = name == "lock"
                    || name == "keyspaces"
                    || (journal && name == "0.jnl")
                    || (marker.is_some() && name == "version");
                if !keep {
                    let p = entry.path();
                    if p.is_dir() {
                        std::fs::remove_dir_all(&p).expect("rm");
                    } else {
                        std::fs::remove_file(&p).expect("rm");
                    }
                }
            }
            if let Some(bytes) = marker {
                std::fs::write(path.join("version"), bytes).expect("cut marker");
            }
            let store = FjallStore::open(&path, Durability::Sync).expect("reopens");
            assert!(path.is_dir(), "the directory itself stays");
            let a = store.keyspace("a").expect("keyspace");
            let mut batch = WriteBatch::default();
            batch.put(a, b"k", b"v");
            store.write(batch).expect("write");
        }
        // A directory with other files is not touched: fjall's own error stands.
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("precious.txt"), b"mine").expect("write");
        std::fs::write(dir.path().join("version"), b"").expect("write");
        assert!(FjallStore::open(dir.path(), Durability::Sync).is_err());
        assert!(dir.path().join("precious.txt").exists());
    }

    #[test]
    fn second_open_of_a_directory_says_it_is_in_use() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _first = FjallStore::open(dir.path(), Durability::Buffered).expect("open");
        let err = FjallStore::open(dir.path(), Durability::Buffered).expect_err("locked");
        assert!(matches!(err, StoreError::Locked(_)), "{err:?}");
        assert!(
            err.to_string().contains("in use by another process"),
            "{err}"
        );
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
