//! The HTTP API's handle on the network: it reads chunks the store lacks through retrieval
//! and pushes uploads through push-sync, by queries to the runtime's loop over its bounded
//! query channel, each answered on a oneshot (the cores answer every request by its
//! deadline).
//!
//! [`NetworkSource`] is where a download's joiner reads: the store, then the network. The
//! joiner asks for one chunk at a time; so that a download is not one round trip per chunk,
//! reading an intermediate chunk starts fetches of the children the store lacks, at most
//! [`READ_AHEAD`] ahead of the joiner.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{mpsc, oneshot};
use tributary_chunk::bmt::CHUNK_SIZE;
use tributary_chunk::file::{ChunkSource, StoreError};
use tributary_chunk::store::ChunkStore;
use tributary_chunk::{Address, Chunk};
use tributary_stream::push::{PushError, Receipt};
use tributary_stream::retrieval::RetrievalError;

use crate::runtime::Query;

/// A cloneable handle on the runtime's loop.
#[derive(Clone, Debug)]
pub struct Network {
    queries: mpsc::Sender<Query>,
}

/// Why the network could not serve a read or a push.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// No peer delivered the chunk (or not in time).
    #[error(transparent)]
    Retrieval(#[from] RetrievalError),
    /// No valid receipt came back.
    #[error(transparent)]
    Push(#[from] PushError),
    /// The node is stopping.
    #[error("the node is stopping")]
    Stopped,
}

impl Network {
    /// A handle over the loop's query channel.
    #[must_use]
    pub const fn new(queries: mpsc::Sender<Query>) -> Self {
        Self { queries }
    }

    /// Fetches `address` from the network.
    ///
    /// # Errors
    /// When no peer delivers it, or the node stops.
    pub async fn fetch(&self, address: Address) -> Result<Chunk, NetworkError> {
        let (tx, rx) = oneshot::channel();
        self.queries
            .send(Query::Retrieve(address, tx))
            .await
            .map_err(|_| NetworkError::Stopped)?;
        Ok(rx.await.map_err(|_| NetworkError::Stopped)??)
    }

    /// [`Self::fetch`] from a blocking thread (the file joiner's).
    ///
    /// # Errors
    /// When no peer delivers it, or the node stops.
    pub fn fetch_blocking(&self, address: Address) -> Result<Chunk, NetworkError> {
        let (tx, rx) = oneshot::channel();
        self.queries
            .blocking_send(Query::Retrieve(address, tx))
            .map_err(|_| NetworkError::Stopped)?;
        Ok(rx.blocking_recv().map_err(|_| NetworkError::Stopped)??)
    }

    /// Pushes `chunk` to its neighbourhood; the storer's verified receipt.
    ///
    /// # Errors
    /// When no valid receipt comes back, or the node stops.
    pub async fn push(&self, chunk: Chunk) -> Result<Receipt, NetworkError> {
        let (tx, rx) = oneshot::channel();
        self.queries
            .send(Query::Push(chunk, tx))
            .await
            .map_err(|_| NetworkError::Stopped)?;
        Ok(rx.await.map_err(|_| NetworkError::Stopped)??)
    }
}

/// Chunks a download fetches ahead of its joiner at most (about 1 MiB).
pub const READ_AHEAD: usize = 256;

type Ahead = oneshot::Receiver<Result<Chunk, NetworkError>>;

/// A download's chunks: the store first, then (if given a network) retrieval, reading ahead.
pub struct NetworkSource {
    store: Arc<ChunkStore>,
    network: Option<(Network, tokio::runtime::Handle)>,
    ahead: Mutex<HashMap<Address, Ahead>>,
}

impl NetworkSource {
    /// Reads from `store`, and what it lacks through `network` (none: the store only), whose
    /// fetches run on `runtime`.
    #[must_use]
    pub fn new(store: Arc<ChunkStore>, network: Option<(Network, tokio::runtime::Handle)>) -> Self {
        Self {
            store,
            network,
            ahead: Mutex::new(HashMap::new()),
        }
    }

    fn ahead(&self) -> std::sync::MutexGuard<'_, HashMap<Address, Ahead>> {
        // A panic while holding the lock leaves a map of receivers, still usable.
        self.ahead.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn fetch(&self, address: &Address) -> Result<Option<Vec<u8>>, StoreError> {
        let Some((network, _)) = &self.network else {
            return Ok(None);
        };
        let early = self.ahead().remove(address);
        let fetched = match early {
            Some(rx) => rx.blocking_recv().unwrap_or(Err(NetworkError::Stopped)),
            None => network.fetch_blocking(*address),
        };
        match fetched {
            Ok(chunk) => Ok(Some(chunk.into_data())),
            Err(NetworkError::Stopped) => Err(Box::new(NetworkError::Stopped)),
            Err(_) => Ok(None),
        }
    }

    /// Starts fetches of the children of an intermediate chunk that the store lacks.
    fn read_ahead(&self, data: &[u8]) -> Result<(), StoreError> {
        let Some((network, runtime)) = &self.network else {
            return Ok(());
        };
        let span = data
            .first_chunk::<8>()
            .map_or(0, |s| u64::from_le_bytes(*s));
        if span <= CHUNK_SIZE as u64 {
            return Ok(()); // a leaf
        }
        let children: Vec<Address> = data[8..]
            .chunks_exact(32)
            .filter_map(|c| c.try_into().ok().map(Address))
            .collect();
        let held = self.store.have_many(&children)?;
        let mut ahead = self.ahead();
        for (child, held) in children.into_iter().zip(held) {
            if held || ahead.contains_key(&child) {
                continue;
            }
            if ahead.len() >= READ_AHEAD {
                break;
            }
            let (tx, rx) = oneshot::channel();
            let network = network.clone();
            runtime.spawn(async move {
                let _ = tx.send(network.fetch(child).await);
            });
            ahead.insert(child, rx);
        }
        Ok(())
    }
}

impl ChunkSource for NetworkSource {
    fn get(&self, address: &Address) -> Result<Option<Vec<u8>>, StoreError> {
        let data = match self.store.get(address)? {
            Some(data) => Some(data),
            None => self.fetch(address)?,
        };
        if let Some(data) = &data {
            self.read_ahead(data)?;
        }
        Ok(data)
    }
}
