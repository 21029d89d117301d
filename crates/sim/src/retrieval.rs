//! Retrieval in the simulator: each node's [`tributary_stream::retrieval::Retrieval`] core
//! beside its pull-sync core, over the same chunk store, links, latency, loss and crashes.
//!
//! The node runtime's rules, kept here: a peer's request is answered from the store when it
//! holds the chunk, and otherwise handed to the core (which forwards it); answers are decoded
//! and hashed before the core sees them; verified chunks are stored (a light node stores
//! none); a penalized peer's link closes. A node that [`Lie`]s answers requests with another
//! valid chunk. Tests read what each local fetch ended with through [`Sim::retrieved`].

use std::collections::HashMap;

use prost::Message;
use tributary_chunk::{Address, Chunk};
use tributary_stream::pull::Fault;
use tributary_stream::retrieval::{self, Output, Requester, RetrievalError, RetrievalStats};

use crate::pull::Lie;
use crate::{Frame, Sim, SimError};

/// What the retrieval cores of a run did, beside their own counters.
#[derive(Default)]
pub(crate) struct RetrievalLedger {
    /// Local fetches: (node, token) → the chunk or why not, once answered.
    results: HashMap<(usize, u64), Result<Chunk, RetrievalError>>,
    /// Requests per (sender, receiver, chunk).
    per_link: HashMap<(usize, usize, Address), u32>,
    /// Peers' requests waiting on a core: (node, token) → (requester, its request id).
    inbound: HashMap<(usize, u64), (usize, u64)>,
    next_token: u64,
    penalties: Vec<(usize, Address, Fault)>,
    /// Requests sent, over every node and start.
    requests: u64,
}

impl Sim {
    /// Node `i` reads `address` as `GET /chunks` does: from its store, else through
    /// retrieval. Returns the token [`Sim::retrieved`] answers under.
    ///
    /// # Errors
    /// When the node's store fails.
    pub fn retrieve(&mut self, i: usize, address: Address) -> Result<u64, SimError> {
        self.retrievals.next_token += 1;
        let token = self.retrievals.next_token;
        let now = self.net.now();
        if let Some(p) = self.nodes[i].pull.as_mut() {
            // The simulated store holds only verified chunks.
            if let Some(chunk) = p
                .chunks
                .get(&address)?
                .and_then(|data| Chunk::validate(address, data).ok())
            {
                self.retrievals.results.insert((i, token), Ok(chunk));
                return Ok(token);
            }
            p.fetch.handle_local(now, address, token);
        }
        self.drain(i)?;
        Ok(token)
    }

    /// How node `i`'s fetch `token` ended, once it has.
    #[must_use]
    pub fn retrieved(&self, i: usize, token: u64) -> Option<Result<Address, RetrievalError>> {
        self.retrievals
            .results
            .get(&(i, token))
            .map(|r| r.as_ref().map(Chunk::address).map_err(|e| *e))
    }

    /// The chunk node `i`'s fetch `token` got, once it has.
    #[must_use]
    pub fn retrieved_chunk(&self, i: usize, token: u64) -> Option<Chunk> {
        self.retrievals
            .results
            .get(&(i, token))?
            .as_ref()
            .ok()
            .cloned()
    }

    /// The most retrieval requests for `address` any node sent any one peer.
    #[must_use]
    pub fn most_requests_per_link(&self, address: &Address) -> u32 {
        self.retrievals
            .per_link
            .iter()
            .filter(|((_, _, a), _)| a == address)
            .map(|(_, n)| *n)
            .max()
            .unwrap_or(0)
    }

    /// Retrieval penalties so far: (node, peer it penalized, why).
    #[must_use]
    pub fn retrieval_penalties(&self) -> Vec<(usize, Address, Fault)> {
        self.retrievals.penalties.clone()
    }

    /// Retrieval requests sent so far, over every node.
    #[must_use]
    pub const fn retrieval_requests(&self) -> u64 {
        self.retrievals.requests
    }

    /// The counters of node `i`'s running retrieval core (since its last start).
    #[must_use]
    pub fn retrieval_stats(&self, i: usize) -> Option<RetrievalStats> {
        self.nodes[i].pull.as_ref().map(|p| p.fetch.stats())
    }

    /// Whether running node `i` holds the chunk at `address`, cached or not.
    #[must_use]
    pub fn holds(&self, i: usize, address: &Address) -> bool {
        self.nodes[i]
            .pull
            .as_ref()
            .and_then(|p| p.chunks.get(address).ok())
            .is_some_and(|d| d.is_some())
    }

    /// Stores `chunks` at node `i` without telling anyone (for retrieval tests that place
    /// chunks by hand).
    ///
    /// # Errors
    /// When the node's store fails.
    pub fn place(&mut self, i: usize, chunks: &[Chunk]) -> Result<(), SimError> {
        if let Some(p) = self.nodes[i].pull.as_ref() {
            p.chunks.put_many(chunks)?;
        }
        Ok(())
    }

    /// A retrieval request from node `from` arrives at node `at`.
    pub(crate) fn serve_retrieval(&mut self, at: usize, from: usize, id: u64, bytes: &[u8]) {
        let now = self.net.now();
        let from_overlay = self.nodes[from]
            .identity
            .overlay(self.config.overlay.network_id);
        let lie = self.ledger.lies.get(&at).copied().unwrap_or(Lie::Honest);
        let Some(p) = self.nodes[at].pull.as_mut() else {
            return;
        };
        // A malformed request: none of the simulated cores sends one.
        let Ok((address, hops)) = retrieval::decode_request(bytes) else {
            return;
        };
        let held = p.chunks.get(&address).ok().flatten();
        let answer = match (held, lie) {
            (Some(data), Lie::Honest | Lie::ForgedReceipt) => {
                Some(tributary_wire::retrieval::Delivery {
                    chunk: data,
                    error: String::new(),
                })
            }
            // A liar delivers a valid chunk, but not the one asked for.
            (Some(_), Lie::WrongChunk | Lie::Unrequested) => Chunk::new(9, b"not asked")
                .ok()
                .map(|c| retrieval::encode_answer(&Ok(c))),
            (None, _) => None,
        };
        if let Some(answer) = answer {
            let bytes = answer.encode_to_vec();
            self.send(at, from, Frame::RetrievalResponse { id, bytes });
            return;
        }
        self.retrievals.next_token += 1;
        let token = self.retrievals.next_token;
        self.retrievals.inbound.insert((at, token), (from, id));
        p.fetch
            .handle_request(now, from_overlay, token, address, hops);
    }

    /// An answer to node `at`'s retrieval request `id` arrives.
    pub(crate) fn on_retrieval_response(&mut self, at: usize, id: u64, bytes: &[u8]) {
        let now = self.net.now();
        if let Some(p) = self.nodes[at].pull.as_mut() {
            p.fetch
                .handle_delivery(now, id, retrieval::decode_delivery(bytes));
        }
    }

    /// Carries out node `i`'s retrieval outputs.
    pub(crate) fn drain_retrieval(&mut self, i: usize) -> Result<(), SimError> {
        while let Some(output) = self.nodes[i]
            .pull
            .as_mut()
            .and_then(|p| p.fetch.poll_output())
        {
            self.carry_out_retrieval(i, output)?;
        }
        Ok(())
    }

    fn carry_out_retrieval(&mut self, i: usize, output: Output) -> Result<(), SimError> {
        match output {
            Output::Request { peer, id, request } => {
                if let Some(&to) = self.ledger.by_overlay.get(&peer) {
                    self.retrievals.requests += 1;
                    if let Ok(a) = <[u8; 32]>::try_from(request.address.as_slice()) {
                        *self
                            .retrievals
                            .per_link
                            .entry((i, to, Address(a)))
                            .or_default() += 1;
                    }
                    self.send(
                        i,
                        to,
                        Frame::RetrievalRequest {
                            id,
                            bytes: request.encode_to_vec(),
                        },
                    );
                }
            }
            Output::Answer { requester, result } => match requester {
                Requester::Local(token) => {
                    self.retrievals.results.insert((i, token), result);
                }
                Requester::Peer { token, .. } => {
                    if let Some((to, id)) = self.retrievals.inbound.remove(&(i, token)) {
                        let bytes = retrieval::encode_answer(&result).encode_to_vec();
                        self.send(i, to, Frame::RetrievalResponse { id, bytes });
                    }
                }
            },
            Output::Store(chunk) => {
                if !self.nodes[i].light
                    && let Some(p) = self.nodes[i].pull.as_ref()
                {
                    p.chunks.cache_many(std::slice::from_ref(&chunk))?;
                }
            }
            Output::Penalize { peer, fault } => {
                self.retrievals.penalties.push((i, peer, fault));
                if let Some(&other) = self.ledger.by_overlay.get(&peer) {
                    self.close(i, other)?;
                }
            }
        }
        Ok(())
    }
}
