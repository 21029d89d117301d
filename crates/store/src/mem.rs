//! The in-memory model of [`KvStore`]: one `BTreeMap` per keyspace under one lock, so a batch is
//! trivially atomic. Used by tests and the simulator.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, PoisonError, RwLock};

use crate::{KeyspaceId, KvIter, KvPair, KvStore, StoreError, WriteBatch, check_batch, check_key};

type Maps = Vec<(String, BTreeMap<Vec<u8>, Vec<u8>>)>;

/// An in-memory [`KvStore`]. Cloning shares the same data.
#[derive(Clone, Default, Debug)]
pub struct MemStore {
    maps: Arc<RwLock<Maps>>,
}

impl MemStore {
    /// Upper bound on keyspaces, far above what any component declares.
    const MAX_KEYSPACES: usize = 64;

    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Maps> {
        // A panic while holding the lock cannot leave a map half-updated (each op is one
        // insert/remove), so a poisoned lock still guards consistent data.
        self.maps.read().unwrap_or_else(PoisonError::into_inner)
    }
}

impl KvStore for MemStore {
    fn keyspace(&self, name: &str) -> Result<KeyspaceId, StoreError> {
        let mut maps = self.maps.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(i) = maps.iter().position(|(n, _)| n == name) {
            return Ok(KeyspaceId(i));
        }
        if maps.len() >= Self::MAX_KEYSPACES {
            return Err(StoreError::TooManyKeyspaces {
                max: Self::MAX_KEYSPACES,
            });
        }
        maps.push((name.to_owned(), BTreeMap::new()));
        Ok(KeyspaceId(maps.len() - 1))
    }

    fn get(&self, ks: KeyspaceId, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let maps = self.read();
        if check_key(key).is_err() {
            return Ok(None);
        }
        let (_, map) = maps.get(ks.0).ok_or(StoreError::UnknownKeyspace(ks.0))?;
        Ok(map.get(key).cloned())
    }

    fn scan_from(&self, ks: KeyspaceId, start: &[u8]) -> KvIter<'_> {
        let mut cursor = Bound::Included(start.to_vec());
        Box::new(std::iter::from_fn(move || {
            let maps = self.read();
            let Some((_, map)) = maps.get(ks.0) else {
                return Some(Err(StoreError::UnknownKeyspace(ks.0)));
            };
            let next: Option<KvPair> = map
                .range((cursor.clone(), Bound::Unbounded))
                .next()
                .map(|(k, v)| (k.clone(), v.clone()));
            if let Some((k, _)) = &next {
                cursor = Bound::Excluded(k.clone());
            }
            next.map(Ok)
        }))
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StoreError> {
        check_batch(&batch)?;
        let mut maps = self.maps.write().unwrap_or_else(PoisonError::into_inner);
        if let Some((ks, _, _)) = batch.iter().find(|(ks, _, _)| ks.0 >= maps.len()) {
            return Err(StoreError::UnknownKeyspace(ks.0));
        }
        for (ks, key, value) in batch.iter() {
            let map = &mut maps[ks.0].1;
            match value {
                Some(v) => {
                    map.insert(key.to_vec(), v.to_vec());
                }
                None => {
                    map.remove(key);
                }
            }
        }
        Ok(())
    }
}
