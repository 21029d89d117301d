//! The chunk store: chunks by address, and a pull index per proximity bin that pull-sync
//! serves from.
//!
//! | keyspace | key | value |
//! |---|---|---|
//! | `chunk.data` (large values) | address | span ‖ payload |
//! | `chunk.pull` | bin (1 byte) ‖ bin id (u64 BE) | address |
//! | `chunk.meta` | `base`, `bin` ‖ bin | the overlay bins are relative to, the last bin id of a bin |
//!
//! A chunk's bin is its proximity order to the node's overlay address (the base). Bin ids
//! start at 1 and increase by one per chunk stored in the bin, never reused; a chunk, its pull
//! entry and the bin's counter are written in one atomic batch, so the index never points at a
//! missing chunk or reuses an id after a crash. Storing a chunk twice is a no-op. Opening the
//! store with another base (the node's identity changed) rebuilds the pull index.
//!
//! Only [`Chunk`]s enter: their address was checked against their content.

use std::sync::{Arc, Mutex, PoisonError};

use tributary_store::{KeyspaceId, KvStore, StoreError, WriteBatch};

use crate::file::{ChunkSink, ChunkSource};
use crate::{Address, Chunk, MAX_PO, proximity};

const BINS: usize = MAX_PO as usize + 1;

/// Errors of the chunk store.
#[derive(Debug, thiserror::Error)]
pub enum ChunkStoreError {
    /// The storage engine failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Stored metadata is unreadable.
    #[error("corrupt chunk store: {0}")]
    Corrupt(&'static str),
}

#[derive(Clone, Copy)]
struct Spaces {
    data: KeyspaceId,
    pull: KeyspaceId,
    meta: KeyspaceId,
}

/// Chunks by address with a pull index per proximity bin; see the module documentation.
pub struct ChunkStore {
    store: Arc<dyn KvStore>,
    ks: Spaces,
    base: Address,
    /// The last bin id of each bin; the lock also serializes puts.
    last: Mutex<[u64; BINS]>,
}

impl std::fmt::Debug for ChunkStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkStore")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// What a put did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Put {
    /// Stored under this bin and bin id.
    Stored {
        /// The chunk's bin.
        bin: u8,
        /// Its id in the bin.
        id: u64,
    },
    /// The chunk was already there.
    Existing,
}

fn bin_key(bin: u8) -> [u8; 4] {
    [b'b', b'i', b'n', bin]
}

fn pull_key(bin: u8, id: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = bin;
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

impl ChunkStore {
    /// Opens the chunk store in `store`, with bins relative to `base` (the node's overlay).
    ///
    /// # Errors
    /// When the store fails or holds unreadable metadata.
    pub fn open(store: Arc<dyn KvStore>, base: Address) -> Result<Self, ChunkStoreError> {
        let ks = Spaces {
            data: store.keyspace_for_large_values("chunk.data")?,
            pull: store.keyspace("chunk.pull")?,
            meta: store.keyspace("chunk.meta")?,
        };
        let mut last = [0u64; BINS];
        for (bin, slot) in last.iter_mut().enumerate() {
            if let Some(v) = store.get(ks.meta, &bin_key(bin as u8))? {
                *slot = u64::from_be_bytes(
                    v.as_slice()
                        .try_into()
                        .map_err(|_| ChunkStoreError::Corrupt("bin counter"))?,
                );
            }
        }
        let this = Self {
            store,
            ks,
            base,
            last: Mutex::new(last),
        };
        match this.store.get(ks.meta, b"base")? {
            Some(stored) if stored.as_slice() == base.0 => {}
            Some(_) => this.reindex()?,
            None => {
                let mut batch = WriteBatch::default();
                batch.put(ks.meta, b"base", &base.0);
                this.store.write(batch)?;
            }
        }
        Ok(this)
    }

    /// The overlay address bins are relative to.
    #[must_use]
    pub const fn base(&self) -> Address {
        self.base
    }

    /// Rebuilds the pull index for the current base: every chunk gets a new bin and id.
    fn reindex(&self) -> Result<(), ChunkStoreError> {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let mut batch = WriteBatch::default();
        for entry in self.store.scan_from(self.ks.pull, &[]) {
            batch.delete(self.ks.pull, &entry?.0);
        }
        *last = [0; BINS];
        for entry in self.store.scan_from(self.ks.data, &[]) {
            let (key, _) = entry?;
            let address = Address(
                key.as_slice()
                    .try_into()
                    .map_err(|_| ChunkStoreError::Corrupt("chunk key"))?,
            );
            let bin = proximity(&self.base, &address);
            last[usize::from(bin)] += 1;
            batch.put(
                self.ks.pull,
                &pull_key(bin, last[usize::from(bin)]),
                &address.0,
            );
        }
        for (bin, id) in last.iter().enumerate() {
            batch.put(self.ks.meta, &bin_key(bin as u8), &id.to_be_bytes());
        }
        batch.put(self.ks.meta, b"base", &self.base.0);
        self.store.write(batch)?;
        Ok(())
    }

    /// Stores chunks (one atomic batch); chunks already held, or repeated, are skipped.
    ///
    /// # Errors
    /// When the store fails; then none of the chunks was stored.
    pub fn put_many(&self, chunks: &[Chunk]) -> Result<Vec<Put>, ChunkStoreError> {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next = *last;
        let mut batch = WriteBatch::with_capacity(chunks.len() * 3);
        let mut outcomes = Vec::with_capacity(chunks.len());
        let mut seen = std::collections::HashSet::new();
        for chunk in chunks {
            let address = chunk.address();
            if !seen.insert(address) || self.store.get(self.ks.data, &address.0)?.is_some() {
                outcomes.push(Put::Existing);
                continue;
            }
            let bin = proximity(&self.base, &address);
            let id = next[usize::from(bin)] + 1;
            next[usize::from(bin)] = id;
            batch.put(self.ks.data, &address.0, chunk.data());
            batch.put(self.ks.pull, &pull_key(bin, id), &address.0);
            outcomes.push(Put::Stored { bin, id });
        }
        for (bin, id) in next.iter().enumerate() {
            if *id != last[bin] {
                batch.put(self.ks.meta, &bin_key(bin as u8), &id.to_be_bytes());
            }
        }
        self.store.write(batch)?;
        *last = next;
        Ok(outcomes)
    }

    /// Stores one chunk; a no-op if it is already held.
    ///
    /// # Errors
    /// When the store fails.
    pub fn put(&self, chunk: &Chunk) -> Result<Put, ChunkStoreError> {
        Ok(self
            .put_many(std::slice::from_ref(chunk))?
            .pop()
            .unwrap_or(Put::Existing))
    }

    /// The wire data of the chunk at `address`.
    ///
    /// # Errors
    /// When the store fails.
    pub fn get(&self, address: &Address) -> Result<Option<Vec<u8>>, ChunkStoreError> {
        Ok(self.store.get(self.ks.data, &address.0)?)
    }

    /// The last bin id given out in `bin` (0 if none).
    #[must_use]
    pub fn last_bin_id(&self, bin: u8) -> u64 {
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(usize::from(bin))
            .copied()
            .unwrap_or(0)
    }

    /// Up to `limit` entries of `bin` with ids `>= from`, in id order.
    ///
    /// # Errors
    /// When the store fails or holds an unreadable entry.
    pub fn bin_from(
        &self,
        bin: u8,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Address)>, ChunkStoreError> {
        let mut out = Vec::new();
        for entry in self.store.scan_from(self.ks.pull, &pull_key(bin, from)) {
            let (key, value) = entry?;
            if key.first() != Some(&bin) || out.len() >= limit {
                break;
            }
            let id = u64::from_be_bytes(
                key[1..]
                    .try_into()
                    .map_err(|_| ChunkStoreError::Corrupt("pull key"))?,
            );
            let address = Address(
                value
                    .as_slice()
                    .try_into()
                    .map_err(|_| ChunkStoreError::Corrupt("pull entry"))?,
            );
            out.push((id, address));
        }
        Ok(out)
    }
}

impl ChunkSource for ChunkStore {
    fn get(&self, address: &Address) -> Result<Option<Vec<u8>>, crate::file::StoreError> {
        Ok(ChunkStore::get(self, address)?)
    }
}

/// A [`ChunkSink`] that stores into a [`ChunkStore`] in batches of `batch` chunks (one atomic,
/// durable write each); [`Batched::flush`] writes the rest.
pub struct Batched<'a> {
    store: &'a ChunkStore,
    pending: Vec<Chunk>,
    batch: usize,
    stored: u64,
}

impl<'a> Batched<'a> {
    /// A batching sink into `store`.
    #[must_use]
    pub fn new(store: &'a ChunkStore, batch: usize) -> Self {
        Self {
            store,
            pending: Vec::with_capacity(batch),
            batch: batch.max(1),
            stored: 0,
        }
    }

    /// Writes the chunks still pending; returns how many chunks were newly stored in all.
    ///
    /// # Errors
    /// When the store fails.
    pub fn flush(&mut self) -> Result<u64, ChunkStoreError> {
        let puts = self.store.put_many(&self.pending)?;
        self.stored += puts
            .iter()
            .filter(|p| matches!(p, Put::Stored { .. }))
            .count() as u64;
        self.pending.clear();
        Ok(self.stored)
    }
}

impl ChunkSink for Batched<'_> {
    fn put(&mut self, chunk: Chunk) -> Result<(), crate::file::StoreError> {
        self.pending.push(chunk);
        if self.pending.len() >= self.batch {
            self.flush()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_store::MemStore;

    fn chunk(i: u32) -> Chunk {
        Chunk::new(4, &i.to_le_bytes()).expect("chunk")
    }

    #[test]
    fn bins_ids_idempotence_and_iteration() {
        let mem = MemStore::new();
        let base = Address([0x55; 32]);
        let store = ChunkStore::open(Arc::new(mem.clone()), base).expect("open");
        let chunks: Vec<Chunk> = (0..300).map(chunk).collect();
        let puts = store.put_many(&chunks).expect("put");
        assert!(puts.iter().all(|p| matches!(p, Put::Stored { .. })));
        assert_eq!(store.put(&chunks[7]).expect("again"), Put::Existing);
        assert_eq!(
            store.put_many(&[chunk(1000), chunk(1000)]).expect("dup")[1],
            Put::Existing
        );
        let extra = chunk(1000);
        for bin in 0..=MAX_PO {
            let in_bin: Vec<_> = chunks
                .iter()
                .chain([&extra])
                .filter(|c| proximity(&base, &c.address()) == bin)
                .collect();
            let listed = store.bin_from(bin, 1, usize::MAX).expect("scan");
            assert_eq!(listed.len(), in_bin.len(), "bin {bin}");
            assert!(
                listed
                    .iter()
                    .enumerate()
                    .all(|(i, (id, _))| *id == i as u64 + 1),
                "ids 1, 2, 3… in bin {bin}"
            );
            assert_eq!(store.last_bin_id(bin), in_bin.len() as u64);
            if listed.len() > 2 {
                assert_eq!(store.bin_from(bin, 2, 1).expect("scan")[0], listed[1]);
            }
        }
        assert_eq!(
            store.get(&chunks[3].address()).expect("get"),
            Some(chunks[3].data().to_vec())
        );
        // Reopening keeps counters; another base rebuilds the index.
        drop(store);
        let store = ChunkStore::open(Arc::new(mem.clone()), base).expect("reopen");
        let before: u64 = (0..=MAX_PO).map(|b| store.last_bin_id(b)).sum();
        assert_eq!(before, 301);
        let moved = ChunkStore::open(Arc::new(mem), Address([0xAA; 32])).expect("new base");
        let after: Vec<_> = (0..=MAX_PO)
            .flat_map(|b| moved.bin_from(b, 1, usize::MAX).expect("scan"))
            .collect();
        assert_eq!(after.len(), 301);
        assert!(
            after
                .iter()
                .all(|(_, a)| moved.get(a).expect("get").is_some())
        );
    }
}
