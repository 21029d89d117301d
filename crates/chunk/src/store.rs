//! The chunk store: chunks by address, and a pull index per proximity bin that pull-sync
//! serves from.
//!
//! | keyspace | key | value |
//! |---|---|---|
//! | `chunk.data` (large values) | address | span ‖ payload |
//! | `chunk.pull` | bin (1 byte) ‖ bin id (u64 BE) | address, and the [`Origin`] of a pulled chunk |
//! | `chunk.meta` | `base`, `epoch`, `bin` ‖ bin | the overlay bins are relative to, the store's epoch, the last bin id of a bin |
//! | `chunk.sync` | chosen by the caller | what pull-sync has synced (written with the chunks it covers) |
//! | `chunk.cache` | address | `1`: the chunk in `chunk.data` is cached only, not in the pull index |
//!
//! A chunk's bin is its proximity order to the node's overlay address (the base). Bin ids
//! start at 1 and increase by one per chunk stored in the bin, never reused; a chunk, its pull
//! entry and the bin's counter are written in one atomic batch, so the index never points at a
//! missing chunk or reuses an id after a crash. Storing a chunk twice is a no-op. Opening the
//! store with another base (the node's identity changed) rebuilds the pull index and starts a
//! new **epoch**: bin ids are only comparable within one epoch, so a downstream peer that sees
//! the epoch change forgets what it synced from this store (bee's cursors carry the same).
//!
//! For pull-sync the store also answers which of a batch of offered addresses it holds
//! ([`ChunkStore::have_many`]) and keeps opaque **sync records** (the stream crate's
//! intervals), written in the same atomic batch as the chunks they account for
//! ([`ChunkStore::put_many_with_records`]), so a crash never leaves a record claiming chunks
//! the store lacks, nor chunks the record forgot.
//!
//! **Cached** chunks ([`ChunkStore::cache_many`]: what retrieval fetched or forwarded) are
//! stored by address with a cache marker, outside the pull index: they answer reads, but are
//! not offered to pull-sync peers (offering every chunk a node read would set all its peers
//! pulling it; bee keeps such chunks in a cache apart from its reserve too). A have-check
//! counts them as not held, and a later put (pull-sync, push-sync, an upload) indexes them and
//! drops the marker, so a chunk a node cached first still reaches its neighbourhood. There is
//! no eviction yet: the cache grows with what the node reads.
//!
//! A chunk pull-sync brought from a peer carries that peer's [`Origin`] (its overlay and
//! store epoch) in its pull entry, so that when the same peer pulls this bin, the chunks it
//! gave are not offered back to it ([`ChunkStore::bin_from`] reports the origin; the serving
//! side skips them). Without it, every chunk of a two-way sync is offered twice, once to the
//! node that lacks it and once back to the node it came from: 32 bytes an offer for nothing.
//! A re-index (another base) drops the origins: those chunks are offered back once more.
//!
//! Only [`Chunk`]s enter: their address was checked against their content.

use std::sync::atomic::{AtomicU64, Ordering};
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
    sync: KeyspaceId,
    cache: KeyspaceId,
}

/// Chunks by address with a pull index per proximity bin; see the module documentation.
pub struct ChunkStore {
    store: Arc<dyn KvStore>,
    ks: Spaces,
    base: Address,
    /// The last bin id of each bin; the lock also serializes puts, and is held while a put
    /// writes (an fsync), so readers use `published`.
    last: Mutex<[u64; BINS]>,
    /// The last bin id of each bin as of the last completed write: read without waiting on a
    /// write in progress (the node's event loop reads cursors).
    published: [AtomicU64; BINS],
    epoch: Mutex<u64>,
    /// Called after every write that stored a chunk (pull-sync's live streams wait on it).
    listener: Mutex<Option<Listener>>,
}

/// What [`ChunkStore::set_listener`] takes.
pub type Listener = Arc<dyn Fn() + Send + Sync>;

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

/// The peer a pulled chunk came from, as its overlay address and store epoch hashed to 8
/// bytes: a store re-created under the same overlay has another epoch, so the chunks it lost
/// are offered to it again. (Two origins share a tag with probability 2⁻⁶⁴; the cost of that
/// is one chunk not offered to one peer, which its other peers still offer.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Origin(pub [u8; 8]);

impl Origin {
    /// The origin of chunks pulled from the store of `peer` in its `epoch`.
    #[must_use]
    pub fn of(peer: &Address, epoch: u64) -> Self {
        let mut input = [0u8; 40];
        input[..32].copy_from_slice(&peer.0);
        input[32..].copy_from_slice(&epoch.to_be_bytes());
        let digest = crate::bmt::keccak256(&input);
        let mut tag = [0u8; 8];
        tag.copy_from_slice(&digest[..8]);
        Self(tag)
    }
}

/// One entry of a bin of the pull index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PullEntry {
    /// Its bin id.
    pub id: u64,
    /// The chunk's address.
    pub address: Address,
    /// The peer it was pulled from, if it was.
    pub origin: Option<Origin>,
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
        // bee takes the store's creation time as its epoch; any value a restarted store will
        // not give out again would do.
        let now = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        };
        Self::open_with_epoch(store, base, now)
    }

    /// As [`ChunkStore::open`], with the epoch a new (or re-indexed) store takes from
    /// `new_epoch` (deterministic callers such as the simulator pass their own).
    ///
    /// # Errors
    /// When the store fails or holds unreadable metadata.
    pub fn open_with_epoch(
        store: Arc<dyn KvStore>,
        base: Address,
        new_epoch: impl Fn() -> u64,
    ) -> Result<Self, ChunkStoreError> {
        let ks = Spaces {
            data: store.keyspace_for_large_values("chunk.data")?,
            pull: store.keyspace("chunk.pull")?,
            meta: store.keyspace("chunk.meta")?,
            sync: store.keyspace("chunk.sync")?,
            cache: store.keyspace("chunk.cache")?,
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
        let epoch = match store.get(ks.meta, b"epoch")? {
            Some(v) => u64::from_be_bytes(
                v.as_slice()
                    .try_into()
                    .map_err(|_| ChunkStoreError::Corrupt("epoch"))?,
            ),
            None => 0,
        };
        let this = Self {
            store,
            ks,
            base,
            published: last.map(AtomicU64::new),
            last: Mutex::new(last),
            epoch: Mutex::new(epoch),
            listener: Mutex::new(None),
        };
        match this.store.get(ks.meta, b"base")? {
            Some(stored) if stored.as_slice() == base.0 && epoch != 0 => {}
            Some(stored) if stored.as_slice() == base.0 => this.set_epoch(new_epoch())?,
            Some(_) => this.reindex(new_epoch())?,
            None => {
                let mut batch = WriteBatch::default();
                batch.put(ks.meta, b"base", &base.0);
                this.store.write(batch)?;
                this.set_epoch(new_epoch())?;
            }
        }
        Ok(this)
    }

    fn set_epoch(&self, epoch: u64) -> Result<(), ChunkStoreError> {
        let mut batch = WriteBatch::default();
        batch.put(self.ks.meta, b"epoch", &epoch.to_be_bytes());
        self.store.write(batch)?;
        *self.epoch.lock().unwrap_or_else(PoisonError::into_inner) = epoch;
        Ok(())
    }

    /// The store's epoch: bin ids of one epoch are never reused; a re-indexed store has
    /// another.
    #[must_use]
    pub fn epoch(&self) -> u64 {
        *self.epoch.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The last bin id of every bin, bin 0 first (bee's cursors), as of the last completed
    /// write; never waits on a write in progress.
    #[must_use]
    pub fn cursors(&self) -> Vec<u64> {
        self.published
            .iter()
            .map(|c| c.load(Ordering::Acquire))
            .collect()
    }

    fn publish(&self, last: &[u64; BINS]) {
        for (slot, id) in self.published.iter().zip(last) {
            slot.store(*id, Ordering::Release);
        }
    }

    /// Which of `addresses` the store holds, in order (from the keys alone: no chunk is read).
    ///
    /// # Errors
    /// When the store fails.
    pub fn have_many(&self, addresses: &[Address]) -> Result<Vec<bool>, ChunkStoreError> {
        addresses.iter().map(|a| self.indexed(a)).collect()
    }

    /// Whether the chunk at `address` is stored and in the pull index (not only cached).
    fn indexed(&self, address: &Address) -> Result<bool, ChunkStoreError> {
        Ok(self.store.contains(self.ks.data, &address.0)?
            && !self.store.contains(self.ks.cache, &address.0)?)
    }

    /// Calls `listener` after every write that stores a new chunk, from the writing thread
    /// (it must be quick: a live pull-sync stream's wake-up). Replaces the previous one.
    pub fn set_listener(&self, listener: Listener) {
        *self.listener.lock().unwrap_or_else(PoisonError::into_inner) = Some(listener);
    }

    /// The sync record under `key` (see the module documentation).
    ///
    /// # Errors
    /// When the store fails.
    pub fn sync_record(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ChunkStoreError> {
        Ok(self.store.get(self.ks.sync, key)?)
    }

    /// Deletes the sync records under `keys` (say, a peer's intervals after its epoch changed),
    /// in one atomic batch.
    ///
    /// # Errors
    /// When the store fails.
    pub fn delete_sync_records(&self, keys: &[&[u8]]) -> Result<(), ChunkStoreError> {
        let mut batch = WriteBatch::default();
        for key in keys {
            batch.delete(self.ks.sync, key);
        }
        Ok(self.store.write(batch)?)
    }

    /// The overlay address bins are relative to.
    #[must_use]
    pub const fn base(&self) -> Address {
        self.base
    }

    /// Rebuilds the pull index for the current base: every chunk gets a new bin and id, in a
    /// new epoch.
    fn reindex(&self, epoch: u64) -> Result<(), ChunkStoreError> {
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
            if self.store.contains(self.ks.cache, &address.0)? {
                continue; // cached only: stays out of the index
            }
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
        batch.put(self.ks.meta, b"epoch", &epoch.to_be_bytes());
        self.store.write(batch)?;
        self.publish(&last);
        *self.epoch.lock().unwrap_or_else(PoisonError::into_inner) = epoch;
        Ok(())
    }

    /// Stores chunks (one atomic batch); chunks already held, or repeated, are skipped.
    ///
    /// # Errors
    /// When the store fails; then none of the chunks was stored.
    pub fn put_many(&self, chunks: &[Chunk]) -> Result<Vec<Put>, ChunkStoreError> {
        self.put_entries(chunks.iter().map(|c| (c, None)), chunks.len(), &[])
    }

    /// As [`ChunkStore::put_many`] for chunks pulled from peers, each with its [`Origin`], and
    /// sets each sync record `(key, value)` of `records` in the same atomic batch (in order: a
    /// later one of the same key wins).
    ///
    /// # Errors
    /// When the store fails (then neither the chunks nor the records were written), or a
    /// record's key is one the store cannot hold.
    pub fn put_many_with_records(
        &self,
        chunks: &[(Chunk, Option<Origin>)],
        records: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<Vec<Put>, ChunkStoreError> {
        self.put_entries(chunks.iter().map(|(c, o)| (c, *o)), chunks.len(), records)
    }

    fn put_entries<'a>(
        &self,
        chunks: impl Iterator<Item = (&'a Chunk, Option<Origin>)>,
        n: usize,
        records: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<Vec<Put>, ChunkStoreError> {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next = *last;
        let mut batch = WriteBatch::with_capacity(n * 3);
        let mut outcomes = Vec::with_capacity(n);
        let mut seen = std::collections::HashSet::new();
        for (chunk, origin) in chunks {
            let address = chunk.address();
            if !seen.insert(address) || self.indexed(&address)? {
                outcomes.push(Put::Existing);
                continue;
            }
            let bin = proximity(&self.base, &address);
            let id = next[usize::from(bin)] + 1;
            next[usize::from(bin)] = id;
            // A cached chunk is indexed now; its data is written again (the same bytes).
            batch.delete(self.ks.cache, &address.0);
            batch.put(self.ks.data, &address.0, chunk.data());
            let mut entry = [0u8; 40];
            entry[..32].copy_from_slice(&address.0);
            let len = match origin {
                Some(o) => {
                    entry[32..].copy_from_slice(&o.0);
                    40
                }
                None => 32,
            };
            batch.put(self.ks.pull, &pull_key(bin, id), &entry[..len]);
            outcomes.push(Put::Stored { bin, id });
        }
        for (bin, id) in next.iter().enumerate() {
            if *id != last[bin] {
                batch.put(self.ks.meta, &bin_key(bin as u8), &id.to_be_bytes());
            }
        }
        for (key, value) in records {
            batch.put(self.ks.sync, key, value);
        }
        self.store.write(batch)?;
        let stored = next != *last;
        *last = next;
        self.publish(&next);
        drop(last);
        if stored {
            let listener = self
                .listener
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            if let Some(listener) = listener {
                listener();
            }
        }
        Ok(outcomes)
    }

    /// Stores chunks by address only, outside the pull index (see the module documentation);
    /// chunks already held are skipped. Returns how many were new.
    ///
    /// # Errors
    /// When the store fails; then none was stored.
    pub fn cache_many(&self, chunks: &[Chunk]) -> Result<usize, ChunkStoreError> {
        // Under the put lock: a put indexing the same chunk meanwhile must not be undone by
        // a cache marker written after it.
        let _last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let mut batch = WriteBatch::with_capacity(2 * chunks.len());
        let mut seen = std::collections::HashSet::new();
        let mut n = 0;
        for chunk in chunks {
            let address = chunk.address();
            if seen.insert(address) && !self.store.contains(self.ks.data, &address.0)? {
                batch.put(self.ks.data, &address.0, chunk.data());
                batch.put(self.ks.cache, &address.0, &[1]);
                n += 1;
            }
        }
        if n > 0 {
            self.store.write(batch)?;
        }
        Ok(n)
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

    /// The last bin id given out in `bin` (0 if none), as of the last completed write.
    #[must_use]
    pub fn last_bin_id(&self, bin: u8) -> u64 {
        self.published
            .get(usize::from(bin))
            .map_or(0, |c| c.load(Ordering::Acquire))
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
    ) -> Result<Vec<PullEntry>, ChunkStoreError> {
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
            let corrupt = || ChunkStoreError::Corrupt("pull entry");
            let address = Address(
                value
                    .get(..32)
                    .and_then(|a| a.try_into().ok())
                    .ok_or_else(corrupt)?,
            );
            let origin = match value.len() {
                32 => None,
                40 => Some(Origin(value[32..].try_into().map_err(|_| corrupt())?)),
                _ => return Err(corrupt()),
            };
            out.push(PullEntry {
                id,
                address,
                origin,
            });
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
    fn cached_chunks_are_read_not_indexed_and_promoted_by_a_put() {
        let mem = MemStore::new();
        let base = Address([0x55; 32]);
        let store = ChunkStore::open_with_epoch(Arc::new(mem.clone()), base, || 1).expect("open");
        let chunks: Vec<Chunk> = (0..10).map(chunk).collect();
        store.put_many(&chunks[..2]).expect("put");
        let fired = Arc::new(AtomicU64::new(0));
        let f = Arc::clone(&fired);
        store.set_listener(Arc::new(move || {
            f.fetch_add(1, Ordering::Relaxed);
        }));
        // The two held are skipped; the rest are stored by address, marked cached.
        assert_eq!(store.cache_many(&chunks).expect("cache"), 8);
        assert_eq!(store.cache_many(&chunks).expect("cache"), 0);
        for c in &chunks {
            assert_eq!(
                store.get(&c.address()).expect("get"),
                Some(c.data().to_vec())
            );
        }
        let all: Vec<Address> = chunks.iter().map(Chunk::address).collect();
        let held = store.have_many(&all).expect("have");
        assert_eq!(
            held,
            [vec![true; 2], vec![false; 8]].concat(),
            "cached is not held"
        );
        assert_eq!(
            store.cursors().iter().sum::<u64>(),
            2,
            "not in the pull index"
        );
        let indexed = |s: &ChunkStore| -> usize {
            (0..BINS as u8)
                .map(|b| s.bin_from(b, 1, 100).expect("bin").len())
                .sum()
        };
        assert_eq!(indexed(&store), 2);
        assert_eq!(fired.load(Ordering::Relaxed), 0, "no pull-sync wake-up");
        // A put of a cached chunk indexes it (pull-sync or push-sync brought it).
        let puts = store.put_many(&chunks[2..4]).expect("put");
        assert!(
            puts.iter().all(|p| matches!(p, Put::Stored { .. })),
            "{puts:?}"
        );
        assert_eq!(indexed(&store), 4);
        assert!(
            store
                .have_many(&all[2..4])
                .expect("have")
                .iter()
                .all(|h| *h)
        );
        // A re-index (another base) leaves the cached ones out.
        drop(store);
        let store =
            ChunkStore::open_with_epoch(Arc::new(mem), Address([0xAA; 32]), || 2).expect("open");
        assert_eq!(indexed(&store), 4);
        assert_eq!(store.cursors().iter().sum::<u64>(), 4);
    }

    fn pulled(chunks: &[Chunk], origin: Origin) -> Vec<(Chunk, Option<Origin>)> {
        chunks.iter().map(|c| (c.clone(), Some(origin))).collect()
    }

    #[test]
    fn epoch_cursors_have_and_sync_records() {
        let mem = MemStore::new();
        let base = Address([0x55; 32]);
        let open = |base, epoch: u64| {
            ChunkStore::open_with_epoch(Arc::new(mem.clone()), base, move || epoch).expect("open")
        };
        let store = open(base, 7);
        assert_eq!(store.epoch(), 7);
        let chunks: Vec<Chunk> = (0..50).map(chunk).collect();
        let record: &[u8] = b"peer-bin";
        store
            .put_many_with_records(
                &pulled(&chunks[..40], Origin::of(&Address([1; 32]), 3)),
                &[(record.to_vec(), b"intervals v1".to_vec())],
            )
            .expect("put");
        let origins: Vec<_> = (0..=MAX_PO)
            .flat_map(|b| store.bin_from(b, 1, usize::MAX).expect("scan"))
            .map(|e| e.origin)
            .collect();
        assert_eq!(origins.len(), 40);
        assert!(
            origins
                .iter()
                .all(|o| *o == Some(Origin::of(&Address([1; 32]), 3)))
        );
        assert_ne!(
            Origin::of(&Address([1; 32]), 3),
            Origin::of(&Address([1; 32]), 4),
            "another epoch of the same peer is another origin"
        );
        let cursors = store.cursors();
        assert_eq!(cursors.len(), BINS);
        assert_eq!(cursors.iter().sum::<u64>(), 40);
        for (bin, cursor) in cursors.iter().enumerate() {
            assert_eq!(*cursor, store.last_bin_id(bin as u8));
        }
        let asked: Vec<Address> = chunks[35..45].iter().map(Chunk::address).collect();
        let held = store.have_many(&asked).expect("have");
        assert_eq!(held, [vec![true; 5], vec![false; 5]].concat());
        assert_eq!(
            store.sync_record(record).expect("get"),
            Some(b"intervals v1".to_vec())
        );
        // A refused batch writes neither the chunks nor the record.
        let refused = store.put_many_with_records(
            &pulled(&chunks[40..], Origin([0; 8])),
            &[(Vec::new(), b"bad".to_vec())],
        );
        assert!(refused.is_err());
        assert!(!store.have_many(&[chunks[45].address()]).expect("have")[0]);
        assert_eq!(store.cursors().iter().sum::<u64>(), 40);
        // Reopened with the same base: same epoch, same cursors, same record.
        drop(store);
        let store = open(base, 8);
        assert_eq!(store.epoch(), 7);
        assert_eq!(store.cursors().iter().sum::<u64>(), 40);
        store.delete_sync_records(&[record]).expect("delete");
        assert_eq!(store.sync_record(record).expect("get"), None);
        // Another base re-indexes: a new epoch.
        drop(store);
        let store = open(Address([0xAA; 32]), 9);
        assert_eq!(store.epoch(), 9);
        assert_eq!(store.cursors().iter().sum::<u64>(), 40);
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
                    .all(|(i, e)| e.id == i as u64 + 1 && e.origin.is_none()),
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
                .all(|e| moved.get(&e.address).expect("get").is_some())
        );
    }
}
