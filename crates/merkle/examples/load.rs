//! Loads random 32-byte keys in batches of 10,000 into a fjall-backed trie and prints the time
//! (a profiling aid: `perf record target/release/examples/load 200000`).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tributary_merkle::{BatchOp, Config, MerkleDb};
use tributary_store::{
    Durability, FjallStore, KeyspaceId, KvIter, KvStore, StoreError, WriteBatch,
};

/// Times the store's batch writes.
struct Timed {
    inner: FjallStore,
    writing: Mutex<(Duration, usize)>,
}

impl KvStore for Timed {
    fn keyspace(&self, name: &str) -> Result<KeyspaceId, StoreError> {
        self.inner.keyspace(name)
    }
    fn get(&self, ks: KeyspaceId, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(ks, key)
    }
    fn scan_from(&self, ks: KeyspaceId, start: &[u8]) -> KvIter<'_> {
        self.inner.scan_from(ks, start)
    }
    fn write(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let n = batch.len();
        let t = Instant::now();
        let r = self.inner.write(batch);
        let mut w = self.writing.lock().expect("lock");
        w.0 += t.elapsed();
        w.1 += n;
        r
    }
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000);
    let mut rng = StdRng::seed_from_u64(1);
    let pairs: Vec<([u8; 32], [u8; 32])> = (0..n).map(|_| (rng.random(), rng.random())).collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(Timed {
        inner: FjallStore::open(dir.path(), durability()).expect("open"),
        writing: Mutex::new((Duration::ZERO, 0)),
    });
    let mut config = Config::default();
    if let Some(n) = std::env::var("MAX_PENDING")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        config.max_pending_nodes = n;
    }
    let db = MerkleDb::open(store.clone(), config).expect("open");
    let t = Instant::now();
    let (mut building, mut committing) = (std::time::Duration::ZERO, std::time::Duration::ZERO);
    let batch: usize = std::env::var("BATCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    for chunk in pairs.chunks(batch) {
        let t0 = std::time::Instant::now();
        let view = db
            .view(
                chunk
                    .iter()
                    .map(|(k, v)| BatchOp::Put(k.to_vec(), v.to_vec())),
            )
            .expect("view");
        let t1 = std::time::Instant::now();
        view.commit().expect("commit");
        building += t1 - t0;
        committing += t1.elapsed();
    }
    let t2 = Instant::now();
    db.flush().expect("flush");
    committing += t2.elapsed();
    let (writing, records) = *store.writing.lock().expect("lock");
    println!(
        "{n} keys in {:?}: building views {building:?}, committing {committing:?} of which store writes {writing:?} ({records} records)",
        t.elapsed()
    );
}

fn durability() -> Durability {
    if std::env::var("BUFFERED").is_ok() {
        Durability::Buffered
    } else {
        Durability::Sync
    }
}
