//! The HTTP API's handle on the network: it reads chunks the store lacks through retrieval
//! and pushes uploads through push-sync, by queries to the runtime's loop over its bounded
//! query channel, each answered on a oneshot (the cores answer every request by its
//! deadline).

use tokio::sync::{mpsc, oneshot};
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
