//! [`KvStore`] on fjall: one fjall database per directory, one fjall keyspace per
//! [`KeyspaceId`]. A [`WriteBatch`] becomes one fjall batch, which fjall journals as a single
//! record, so it survives a crash whole or not at all.

use std::path::Path;
use std::sync::{PoisonError, RwLock};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, KvSeparationOptions, PersistMode};

use crate::{
    Durability, KeyspaceId, KvIter, KvStore, StoreError, WriteBatch, check_batch, check_key,
};

/// Memtable size of keyspaces of large values.
const LARGE_VALUE_MEMTABLE: u64 = 8 * 1024 * 1024;
/// Sealed memtables of a large-value keyspace that may await their flush before a writer
/// waits.
const MAX_SEALED_LARGE: usize = 2;
/// How long a write waits for the flushes of large values before it fails: far more than a
/// flush of 8 MiB takes (milliseconds), so only a stopped engine reaches it.
const FLUSH_STALL: std::time::Duration = std::time::Duration::from_secs(60);

/// A [`KvStore`] kept in a directory by fjall.
pub struct FjallStore {
    db: Database,
    keyspaces: RwLock<Vec<(String, Keyspace)>>,
    /// Bytes written to keyspaces of large values since they were last flushed.
    large_unflushed: std::sync::atomic::AtomicU64,
    durability: Durability,
}

impl std::fmt::Debug for FjallStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FjallStore")
            .field("durability", &self.durability)
            .finish_non_exhaustive()
    }
}

impl FjallStore {
    /// Upper bound on keyspaces per database.
    const MAX_KEYSPACES: usize = 64;

    /// Opens (or creates) the database in `dir`.
    ///
    /// # Errors
    /// When the directory cannot be opened as a fjall database.
    pub fn open(dir: &Path, durability: Durability) -> Result<Self, StoreError> {
        clear_unfinished_creation(dir)?;
        let db = Database::builder(dir).open().map_err(|e| match e {
            fjall::Error::Locked => StoreError::Locked(dir.to_path_buf()),
            e => StoreError::Engine(e),
        })?;
        Ok(Self {
            db,
            keyspaces: RwLock::new(Vec::new()),
            large_unflushed: std::sync::atomic::AtomicU64::new(0),
            durability,
        })
    }

    fn open_keyspace(&self, name: &str, large_values: bool) -> Result<KeyspaceId, StoreError> {
        let mut keyspaces = self
            .keyspaces
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(i) = keyspaces.iter().position(|(n, _)| n == name) {
            return Ok(KeyspaceId(i));
        }
        if keyspaces.len() >= Self::MAX_KEYSPACES {
            return Err(StoreError::TooManyKeyspaces {
                max: Self::MAX_KEYSPACES,
            });
        }
        let options = move || {
            let options = KeyspaceCreateOptions::default();
            if large_values {
                options.with_kv_separation(Some(KvSeparationOptions::default()))
            } else {
                options
            }
        };
        let handle = self.db.keyspace(name, options)?;
        keyspaces.push((name.to_owned(), handle));
        Ok(KeyspaceId(keyspaces.len() - 1))
    }

    fn handle(&self, ks: KeyspaceId) -> Result<Keyspace, StoreError> {
        let keyspaces = self
            .keyspaces
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        keyspaces
            .get(ks.0)
            .map(|(_, k)| k.clone())
            .ok_or(StoreError::UnknownKeyspace(ks.0))
    }
}

/// What fjall 3.1 writes while it creates a database, its version marker last.
const CREATION_FILES: [&str; 4] = ["lock", "0.jnl", "keyspaces", "version"];

/// fjall creates a database in steps and writes its version marker last (and not atomically:
/// it creates the file, then writes it), so a process killed during creation leaves a
/// directory fjall refuses to open ("InvalidVersion", or a leftover journal it will not
/// create again). No batch can have been written to it: writes start only once the marker is
/// complete. Such a directory is removed, under fjall's own lock, so the open creates it
/// afresh. A directory holding anything else is left alone (fjall then says what is wrong).
/// Found by `scripts/crash-test.py` (a `state import` killed within its first milliseconds).
fn clear_unfinished_creation(dir: &Path) -> Result<(), StoreError> {
    let io = |source| StoreError::Io {
        path: dir.to_path_buf(),
        source,
    };
    // fjall writes the marker as "FJL" and a version byte, in two writes.
    let marker = std::fs::read(dir.join("version"));
    if marker.is_ok_and(|m| m.len() >= 4 && m.starts_with(b"FJL")) || !dir.is_dir() {
        return Ok(());
    }
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let name = entry.map_err(io)?.file_name();
        match CREATION_FILES.iter().find(|f| name == **f) {
            Some(f) => found.push(*f),
            None => return Ok(()),
        }
    }
    // With only the lock file and the keyspaces folder, fjall's creation simply goes on; and a
    // process that creates the journal holds the lock by then, so another one still creating
    // is never mistaken for a dead one.
    if !found.iter().any(|f| *f == "0.jnl" || *f == "version") {
        return Ok(());
    }
    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join("lock"))
        .map_err(io)?;
    if lock.try_lock().is_err() {
        return Err(StoreError::Locked(dir.to_path_buf()));
    }
    // Only fjall's own files go; the directory itself (a mount point, a symlink, its
    // permissions) stays. The lock file goes last, while it is held.
    for name in found.iter().filter(|f| **f != "lock") {
        let path = dir.join(name);
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(|source| StoreError::Io { path, source })?;
    }
    let _ = std::fs::remove_file(dir.join("lock"));
    drop(lock);
    Ok(())
}

impl KvStore for FjallStore {
    fn keyspace(&self, name: &str) -> Result<KeyspaceId, StoreError> {
        self.open_keyspace(name, false)
    }

    fn keyspace_for_large_values(&self, name: &str) -> Result<KeyspaceId, StoreError> {
        self.open_keyspace(name, true)
    }

    fn get(&self, ks: KeyspaceId, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if check_key(key).is_err() {
            return Ok(None);
        }
        Ok(self.handle(ks)?.get(key)?.map(|v| v.to_vec()))
    }

    fn contains(&self, ks: KeyspaceId, key: &[u8]) -> Result<bool, StoreError> {
        if check_key(key).is_err() {
            return Ok(false);
        }
        Ok(self.handle(ks)?.contains_key(key)?)
    }

    fn scan_from(&self, ks: KeyspaceId, start: &[u8]) -> KvIter<'_> {
        let handle = match self.handle(ks) {
            Ok(h) => h,
            Err(e) => return Box::new(std::iter::once(Err(e))),
        };
        Box::new(handle.range(start.to_vec()..).map(|guard| {
            let (k, v) = guard.into_inner()?;
            Ok((k.to_vec(), v.to_vec()))
        }))
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        check_batch(&batch)?;
        let keyspaces = self
            .keyspaces
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let mode = match self.durability {
            Durability::Sync => Some(PersistMode::SyncAll),
            Durability::Buffered => Some(PersistMode::Buffer),
        };
        let mut fj = self.db.batch().durability(mode);
        // Key order makes successive memtable inserts land next to each other (measured: the
        // skiplist search was the largest single cost of a commit). The sort is stable, so
        // operations on one key keep their order; comparing an 8-byte prefix first avoids most
        // full key comparisons.
        let entries = batch.entries();
        let mut order: Vec<(usize, u64, usize)> = entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let (ks, key, _) = batch.resolve(e);
                let mut prefix = [0u8; 8];
                let n = key.len().min(8);
                prefix[..n].copy_from_slice(&key[..n]);
                (ks.0, u64::from_be_bytes(prefix), i)
            })
            .collect();
        order.sort_by(|a, b| {
            (a.0, a.1).cmp(&(b.0, b.1)).then_with(|| {
                batch
                    .resolve(&entries[a.2])
                    .1
                    .cmp(batch.resolve(&entries[b.2]).1)
            })
        });
        let mut large_bytes = 0u64;
        for (_, _, i) in order {
            let (ks, key, value) = batch.resolve(&entries[i]);
            let (_, handle) = keyspaces
                .get(ks.0)
                .ok_or(StoreError::UnknownKeyspace(ks.0))?;
            if handle.is_kv_separated() {
                large_bytes += value.map_or(0, |v| v.len() as u64);
            }
            match value {
                Some(v) => fj.insert(handle, key, v),
                None => fj.remove(handle, key),
            }
        }
        drop(keyspaces);
        // Room first, so that a stalled engine fails the write before anything of it lands.
        self.flush_large_values(large_bytes)?;
        fj.commit()?;
        Ok(())
    }
}

impl FjallStore {
    /// Backpressure: fjall 3.1 neither enforces its write-buffer limit nor slows batch writers,
    /// so a writer faster than the flushes piles up memtables of large values in memory
    /// (measured: a 1 GiB upload peaked at 181 MB). Every [`LARGE_VALUE_MEMTABLE`] bytes written
    /// to such keyspaces, their memtables are sealed and handed to fjall's flush workers, and
    /// the writer waits only while more than [`MAX_SEALED_LARGE`] of them are still unflushed
    /// (so at most about 24 MiB of chunk data is in memory). Waiting for each flush to finish,
    /// as fjall's own `rotate_memtable_and_wait` does (it polls every 10 ms), stalled every
    /// writer for tens of milliseconds per 8 MiB.
    ///
    /// Every *other* keyspace is sealed too: a journal is deleted only once every keyspace
    /// written in it has flushed its memtable, and the small keyspaces written beside chunk
    /// data (the pull index, the bin counters) never fill theirs, so they pinned every journal
    /// of an upload (measured: 266 MB of journals left after a 256 MiB upload). Their memtables
    /// hold a few dozen bytes per chunk, so flushing them is cheap.
    fn flush_large_values(&self, written: u64) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering;
        let total = self.large_unflushed.fetch_add(written, Ordering::Relaxed) + written;
        if total < LARGE_VALUE_MEMTABLE {
            return Ok(());
        }
        self.large_unflushed.store(0, Ordering::Relaxed);
        let keyspaces: Vec<Keyspace> = self
            .keyspaces
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(_, k)| k.clone())
            .collect();
        for keyspace in &keyspaces {
            keyspace.rotate_memtable()?;
        }
        let started = std::time::Instant::now();
        for keyspace in keyspaces.iter().filter(|k| k.is_kv_separated()) {
            while keyspace.sealed_memtable_count() > MAX_SEALED_LARGE {
                // A failed flush is not retried by fjall 3.1: without a bound this would wait
                // forever, and the writer with it.
                if started.elapsed() > FLUSH_STALL {
                    return Err(StoreError::FlushStalled {
                        seconds: FLUSH_STALL.as_secs(),
                    });
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        Ok(())
    }
}
