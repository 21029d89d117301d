//! Shared helpers: replicas on in-memory stores with seeded keys.

#![allow(dead_code, reason = "each test binary uses a part")]

use std::sync::Arc;

use tributary_overlay::Identity;
use tributary_replica::syncgroup::Spec;
use tributary_replica::{NodeId, Replica, ReplicaConfig};
use tributary_store::MemStore;

/// A replica whose key is derived from `seed`, on a fresh store (returned to reopen it).
pub fn replica(seed: u8) -> (Replica, Arc<MemStore>) {
    let store = Arc::new(MemStore::new());
    (reopen(seed, &store, ReplicaConfig::default()), store)
}

/// The replica of `seed` over an existing store (a restart).
pub fn reopen(seed: u8, store: &Arc<MemStore>, config: ReplicaConfig) -> Replica {
    let identity = identity(seed);
    Replica::open(store.clone(), identity, config).expect("open")
}

/// The key of `seed`.
pub fn identity(seed: u8) -> Identity {
    let mut secret = [7u8; 32];
    secret[0] = seed.max(1);
    secret[31] = seed;
    Identity::from_secret(&secret, [0; 32]).expect("key")
}

/// A syncgroup `sg` over `collections` where every replica in `writers` writes.
pub fn spec(collections: &[&str], writers: &[NodeId]) -> Spec {
    Spec {
        name: "sg".into(),
        description: "test".into(),
        collections: collections.iter().map(|c| (*c).to_string()).collect(),
        readers: Vec::new(),
        writers: writers.to_vec(),
        admins: Vec::new(),
    }
}

/// `joiner` joins syncgroup `name` of `db` through `admin`.
pub fn join(admin: &mut Replica, joiner: &mut Replica, now: u64, db: &str, name: &str) {
    let grant = admin
        .admin_join(now, db, name, joiner.id())
        .expect("admin join");
    joiner.accept_join(&grant).expect("accept join");
}

/// The visible value of a row as text, or `None`.
pub fn text(r: &Replica, db: &str, c: &str, k: &str) -> Option<String> {
    r.get(db, c, k)
        .expect("get")
        .and_then(|s| s.value)
        .map(|v| String::from_utf8(v).expect("utf8"))
}
