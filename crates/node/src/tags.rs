//! Upload tags (bee's): each `POST /bytes` gets a tag whose counters say how far its chunks
//! are — split from the body, stored in this node, sent to the network, synced (a valid
//! receipt from a node of the chunk's neighbourhood came back) — readable while the push runs
//! (`GET /tags/{uid}`).
//!
//! [`TagSink`] counts and stores the chunks as the splitter makes them and keeps their
//! addresses; [`push_upload`] then pushes them from the store in the background, at most
//! [`PUSH_WINDOW`] at once, each tried up to [`PUSH_ROUNDS`] times. Tags live in memory (a
//! restart forgets them and their unfinished pushes; the chunks are stored and pull-sync
//! still spreads them); at most [`MAX_TAGS`] are kept, finished ones evicted oldest first. A
//! tag is done while no upload counting on it runs: a tag made by `POST /tags` and never used
//! is done (and evictable), and uploads sharing one tag add up their counts.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tributary_chunk::file::ChunkSink;
use tributary_chunk::store::{ChunkStore, ChunkStoreError};
use tributary_chunk::{Address, Chunk};

use crate::network::{Network, NetworkError};

/// Tags kept at most; a new upload beyond them evicts the oldest finished one, or is refused.
pub const MAX_TAGS: usize = 1024;
/// Pushes of one upload in flight at once (about 2 MiB of chunks). Storers write what
/// arrives together in one durable batch, so a wide window amortizes their fsyncs: a 20 MB
/// upload on a 16-node devnet took 9.6 s to its last receipt with 64, 6.2 s with 512
/// (`MB=20 scripts/bench-network.py`).
pub const PUSH_WINDOW: usize = 512;
/// Times a chunk's push is tried before it counts as failed.
pub const PUSH_ROUNDS: usize = 3;
/// Pause before a failed push is tried again.
const RETRY_PAUSE: Duration = Duration::from_secs(1);
/// Chunks stored per write while splitting.
const STORE_BATCH: usize = 512;

/// One upload's counters, as `GET /tags/{uid}` shows them (bee's shape, plus `failed` and
/// `done`).
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Tag {
    /// The tag's id.
    pub uid: u32,
    /// When the upload started (RFC 3339, UTC).
    pub started_at: String,
    /// Chunks split from the body.
    pub split: u64,
    /// Chunks that were already stored (bee's `seen`; this node counts none: 0).
    pub seen: u64,
    /// Chunks stored in this node.
    pub stored: u64,
    /// Chunks handed to push-sync.
    pub sent: u64,
    /// Chunks with a valid receipt.
    pub synced: u64,
    /// Chunks whose every push failed.
    pub failed: u64,
    /// The file's reference, once split (empty before).
    pub address: String,
    /// Whether no upload counting on the tag is still running.
    pub done: bool,
    /// Uploads counting on the tag still running.
    #[serde(skip)]
    active: u32,
}

/// Why a tag could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TagError {
    /// Every kept tag belongs to an upload still pushing.
    #[error("{MAX_TAGS} uploads are still pushing; try again later")]
    Full,
}

/// The node's tags.
#[derive(Debug, Default)]
pub struct Tags {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    next: u32,
    tags: BTreeMap<u32, Tag>,
}

impl Tags {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves counters, nothing worth refusing reads for.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new tag, started now.
    ///
    /// # Errors
    /// [`TagError::Full`] when [`MAX_TAGS`] are kept and none is done.
    pub fn create(&self) -> Result<u32, TagError> {
        let mut inner = self.lock();
        if inner.tags.len() >= MAX_TAGS {
            let oldest_done = inner.tags.values().find(|t| t.done).map(|t| t.uid);
            let uid = oldest_done.ok_or(TagError::Full)?;
            inner.tags.remove(&uid);
        }
        inner.next = inner.next.wrapping_add(1).max(1);
        let uid = inner.next;
        let started_at = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
        inner.tags.insert(
            uid,
            Tag {
                uid,
                started_at: started_at.to_string(),
                done: true,
                ..Tag::default()
            },
        );
        Ok(uid)
    }

    /// An upload starts counting on tag `uid`.
    pub fn begin(&self, uid: u32) {
        self.update(uid, |t| {
            t.active += 1;
            t.done = false;
        });
    }

    /// An upload counting on tag `uid` ended, with `failed` chunks that got no receipt; the
    /// tag is done once no upload on it runs.
    pub fn end(&self, uid: u32, failed: u64) {
        self.update(uid, |t| {
            t.failed += failed;
            t.active = t.active.saturating_sub(1);
            t.done = t.active == 0;
        });
    }

    /// The tag `uid`, if kept.
    #[must_use]
    pub fn get(&self, uid: u32) -> Option<Tag> {
        self.lock().tags.get(&uid).cloned()
    }

    /// Every kept tag, oldest first.
    #[must_use]
    pub fn list(&self) -> Vec<Tag> {
        self.lock().tags.values().cloned().collect()
    }

    /// Forgets tag `uid` (its push, if running, goes on uncounted); whether it was kept.
    pub fn remove(&self, uid: u32) -> bool {
        self.lock().tags.remove(&uid).is_some()
    }

    /// Uploads whose push is still running.
    #[must_use]
    pub fn pushing(&self) -> usize {
        self.lock().tags.values().filter(|t| !t.done).count()
    }

    fn update(&self, uid: u32, f: impl FnOnce(&mut Tag)) {
        if let Some(tag) = self.lock().tags.get_mut(&uid) {
            f(tag);
        }
    }
}

/// The splitter's sink for an upload: stores chunks in batches, counts them on the tag, and
/// keeps their addresses for the push.
pub struct TagSink<'a> {
    store: &'a ChunkStore,
    tags: &'a Tags,
    uid: u32,
    pending: Vec<Chunk>,
    addresses: Vec<Address>,
}

impl<'a> TagSink<'a> {
    /// A sink into `store` counting on tag `uid`.
    #[must_use]
    pub fn new(store: &'a ChunkStore, tags: &'a Tags, uid: u32) -> Self {
        Self {
            store,
            tags,
            uid,
            pending: Vec::with_capacity(STORE_BATCH),
            addresses: Vec::new(),
        }
    }

    /// Stores what is pending; returns the addresses of every chunk split.
    ///
    /// # Errors
    /// When the store fails.
    pub fn finish(mut self) -> Result<Vec<Address>, ChunkStoreError> {
        self.flush()?;
        Ok(self.addresses)
    }

    fn flush(&mut self) -> Result<(), ChunkStoreError> {
        self.store.put_many(&self.pending)?;
        let n = self.pending.len() as u64;
        self.tags.update(self.uid, |t| t.stored += n);
        self.pending.clear();
        Ok(())
    }
}

impl ChunkSink for TagSink<'_> {
    fn put(&mut self, chunk: Chunk) -> Result<(), tributary_chunk::file::StoreError> {
        self.addresses.push(chunk.address());
        self.pending.push(chunk);
        self.tags.update(self.uid, |t| t.split += 1);
        if self.pending.len() >= STORE_BATCH {
            self.flush()?;
        }
        Ok(())
    }
}

/// Marks tag `uid` with its file's reference.
pub fn set_reference(tags: &Tags, uid: u32, reference: Address) {
    tags.update(uid, |t| t.address = reference.to_string());
}

/// Pushes an upload's chunks from the store and counts them on tag `uid`; returns how many
/// got no receipt. Ends early (counting the rest as failed) when the node stops.
pub async fn push_upload(
    tags: Arc<Tags>,
    uid: u32,
    store: Arc<ChunkStore>,
    network: Network,
    addresses: Vec<Address>,
) -> u64 {
    use futures_util::StreamExt;
    let total = addresses.len() as u64;
    let results = futures_util::stream::iter(addresses)
        .map(|address| push_one(&tags, uid, &store, &network, address))
        .buffer_unordered(PUSH_WINDOW)
        .collect::<Vec<bool>>()
        .await;
    let failed = results.iter().filter(|ok| !**ok).count() as u64;
    tags.end(uid, failed);
    debug_assert!(failed <= total);
    failed
}

/// Pushes one chunk, up to [`PUSH_ROUNDS`] times; whether it got a receipt.
async fn push_one(
    tags: &Tags,
    uid: u32,
    store: &Arc<ChunkStore>,
    network: &Network,
    address: Address,
) -> bool {
    let store = Arc::clone(store);
    let read = tokio::task::spawn_blocking(move || {
        let data = store.get(&address).ok().flatten()?;
        Chunk::validate(address, data).ok()
    })
    .await;
    let Ok(Some(chunk)) = read else {
        return false; // not in the store (or corrupt): nothing to push
    };
    tags.update(uid, |t| t.sent += 1);
    for round in 0..PUSH_ROUNDS {
        match network.push(chunk.clone()).await {
            Ok(_) => {
                tags.update(uid, |t| t.synced += 1);
                return true;
            }
            Err(NetworkError::Stopped) => return false,
            Err(_) if round + 1 < PUSH_ROUNDS => tokio::time::sleep(RETRY_PAUSE).await,
            Err(_) => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_is_done_while_no_upload_on_it_runs_and_shared_counts_add_up() {
        let tags = Tags::default();
        let uid = tags.create().expect("tag");
        assert!(tags.get(uid).expect("kept").done, "an unused tag is done");
        tags.begin(uid);
        tags.begin(uid);
        assert_eq!(tags.pushing(), 1);
        tags.end(uid, 1);
        assert!(!tags.get(uid).expect("kept").done, "one upload still runs");
        tags.end(uid, 2);
        let t = tags.get(uid).expect("kept");
        assert!(t.done);
        assert_eq!(t.failed, 3);
    }

    #[test]
    fn a_full_table_evicts_the_oldest_done_tag_or_refuses() {
        let tags = Tags::default();
        let first = tags.create().expect("tag");
        for _ in 1..MAX_TAGS {
            let uid = tags.create().expect("tag");
            tags.begin(uid);
        }
        // The first is done (never used): it makes room.
        let next = tags.create().expect("evicts the done one");
        assert!(tags.get(first).is_none());
        tags.begin(next);
        assert!(
            matches!(tags.create(), Err(TagError::Full)),
            "every tag is busy"
        );
    }
}
