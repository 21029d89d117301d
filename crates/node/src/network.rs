//! The HTTP API's handle on the network: it reads chunks the store lacks through retrieval
//! and pushes uploads through push-sync, by queries to the runtime's loop over its bounded
//! query channel, each answered on a oneshot (the cores answer every request by its
//! deadline).
//!
//! [`NetworkSource`] is where a download's joiner reads: the store, then the network. The
//! joiner asks for one chunk at a time; so that a download is not one round trip per chunk,
//! reading an intermediate chunk starts fetches of the children the store lacks, at most
//! [`READ_AHEAD`] ahead of the joiner and [`READ_AHEAD_BUDGET`] over the node's downloads; a
//! read-ahead that failed is asked again when the joiner needs it. Read-ahead follows the
//! tree, not the requested range: a ranged download may fetch up to an intermediate chunk's
//! worth of children outside its range.

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

/// Read-ahead fetches at once over every download of the node: well below the retrieval
/// core's 1,024 fetches, so downloads leave room for peers' requests.
pub const READ_AHEAD_BUDGET: usize = 512;
/// Upload pushes at once over every upload of the node: below the push core's 1,024, so
/// forwarded pushes find room; an upload waits for a slot rather than fail.
pub const PUSH_BUDGET: usize = 768;
/// Longest wait for the loop's answer: past the cores' own deadlines (30 s), so the cores
/// decide, but a lost answer cannot hang a download or an upload.
const ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(45);

/// A cloneable handle on the runtime's loop.
#[derive(Clone, Debug)]
pub struct Network {
    queries: mpsc::Sender<Query>,
    read_ahead: Arc<tokio::sync::Semaphore>,
    pushes: Arc<tokio::sync::Semaphore>,
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
    /// The node's loop did not answer in time.
    #[error("the node did not answer in time")]
    NoAnswer,
    /// The node is stopping.
    #[error("the node is stopping")]
    Stopped,
}

impl Network {
    /// A handle over the loop's query channel.
    #[must_use]
    pub fn new(queries: mpsc::Sender<Query>) -> Self {
        Self {
            queries,
            read_ahead: Arc::new(tokio::sync::Semaphore::new(READ_AHEAD_BUDGET)),
            pushes: Arc::new(tokio::sync::Semaphore::new(PUSH_BUDGET)),
        }
    }

    /// Sends `query` and waits for its answer on `rx`, at most [`ANSWER_TIMEOUT`].
    async fn ask<T, E: Into<NetworkError>>(
        &self,
        query: Query,
        rx: oneshot::Receiver<Result<T, E>>,
    ) -> Result<T, NetworkError> {
        self.queries
            .send(query)
            .await
            .map_err(|_| NetworkError::Stopped)?;
        match tokio::time::timeout(ANSWER_TIMEOUT, rx).await {
            Ok(Ok(result)) => result.map_err(Into::into),
            Ok(Err(_)) => Err(NetworkError::Stopped),
            Err(_) => Err(NetworkError::NoAnswer),
        }
    }

    /// Fetches `address` from the network.
    ///
    /// # Errors
    /// When no peer delivers it, or the node stops.
    pub async fn fetch(&self, address: Address) -> Result<Chunk, NetworkError> {
        let (tx, rx) = oneshot::channel();
        self.ask(Query::Retrieve(address, tx), rx).await
    }

    /// Pushes `chunk` to its neighbourhood; the storer's verified receipt.
    ///
    /// # Errors
    /// When no valid receipt comes back, or the node stops.
    pub async fn push(&self, chunk: Chunk) -> Result<Receipt, NetworkError> {
        // Closed only if the handle is dropped, which cannot happen while `self` lives.
        let _slot = self
            .pushes
            .acquire()
            .await
            .map_err(|_| NetworkError::Stopped)?;
        let (tx, rx) = oneshot::channel();
        self.ask(Query::Push(chunk, tx), rx).await
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

    /// The chunk from its read-ahead if one ran, else (or if that failed: busy, timed out)
    /// fetched now; runs on the joiner's blocking thread.
    fn fetch(&self, address: &Address) -> Result<Option<Vec<u8>>, StoreError> {
        let Some((network, runtime)) = &self.network else {
            return Ok(None);
        };
        let early = self.ahead().remove(address);
        let fetched = match early.map(|rx| rx.blocking_recv()) {
            Some(Ok(r @ (Ok(_) | Err(NetworkError::Stopped)))) => r,
            _ => runtime.block_on(network.fetch(*address)),
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
            let Ok(permit) = Arc::clone(&network.read_ahead).try_acquire_owned() else {
                break; // the node-wide budget is spent: the joiner fetches as it goes
            };
            let (tx, rx) = oneshot::channel();
            let network = network.clone();
            runtime.spawn(async move {
                let _ = tx.send(network.fetch(child).await);
                drop(permit);
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
