//! Push-sync in the simulator: each node's [`tributary_stream::push::PushSync`] core beside
//! its pull-sync and retrieval cores, over the same chunk store, links, latency, loss and
//! crashes.
//!
//! The node runtime's rules, kept here: a push is decoded (hashed) before the core sees it; a
//! chunk the core stores here is written, then this node's receipt is signed with its key; a
//! receipt's signature is recovered before the core checks the storer's neighbourhood; a
//! penalized peer's link closes. For hostile-peer tests a node that [`Lie`]s with
//! `WrongChunk` forwards another chunk than it was given, and one that lies with
//! `ForgedReceipt` answers every push with its own receipt, claiming a deep depth, without
//! storing anything.

use std::collections::HashMap;

use prost::Message;
use tributary_chunk::{Address, Chunk};
use tributary_overlay::identity::verify_receipt;
use tributary_stream::pull::Fault;
use tributary_stream::push::{self, Output, PushError, PushStats, Receipt, Requester};

use crate::pull::Lie;
use crate::{Frame, Sim, SimError};

/// A receipt as the god's-eye checks see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Receipted {
    /// The chunk.
    pub address: Address,
    /// Who signed it.
    pub storer: Address,
    /// The depth the storer claimed.
    pub depth: u8,
}

/// What the push cores of a run did, beside their own counters.
#[derive(Default)]
pub(crate) struct PushLedger {
    /// Uploads' pushes: (node, token) → the receipt or why not, once answered.
    results: HashMap<(usize, u64), Result<Receipted, PushError>>,
    /// Peers' pushes waiting on a core: (node, token) → (pusher, its request id).
    inbound: HashMap<(usize, u64), (usize, u64)>,
    next_token: u64,
    penalties: Vec<(usize, Address, Fault)>,
}

impl Sim {
    /// Node `i` uploads `chunks`: stores them and pushes each to its neighbourhood, as
    /// `POST /bytes` does. Returns the tokens [`Sim::pushed`] answers under, in order.
    ///
    /// # Errors
    /// When the node's store fails.
    pub fn push_upload(&mut self, i: usize, chunks: &[Chunk]) -> Result<Vec<u64>, SimError> {
        let now = self.net.now();
        let mut tokens = Vec::with_capacity(chunks.len());
        if let Some(p) = self.nodes[i].pull.as_mut() {
            p.chunks.put_many(chunks)?;
            for c in chunks {
                self.pushes.next_token += 1;
                let token = self.pushes.next_token;
                p.push.handle_local(now, c.clone(), token);
                tokens.push(token);
            }
        }
        self.drain(i)?;
        Ok(tokens)
    }

    /// How node `i`'s push `token` ended, once it has.
    #[must_use]
    pub fn pushed(&self, i: usize, token: u64) -> Option<Result<Receipted, PushError>> {
        self.pushes.results.get(&(i, token)).copied()
    }

    /// Push-sync penalties so far: (node, peer it penalized, why).
    #[must_use]
    pub fn push_penalties(&self) -> Vec<(usize, Address, Fault)> {
        self.pushes.penalties.clone()
    }

    /// The counters of node `i`'s running push core (since its last start).
    #[must_use]
    pub fn push_stats(&self, i: usize) -> Option<PushStats> {
        self.nodes[i].pull.as_ref().map(|p| p.push.stats())
    }

    /// A push from node `from` arrives at node `at`.
    pub(crate) fn serve_push(&mut self, at: usize, from: usize, id: u64, bytes: &[u8]) {
        let now = self.net.now();
        let network_id = self.config.overlay.network_id;
        let from_overlay = self.nodes[from].identity.overlay(network_id);
        // A malformed push: none of the simulated cores sends one.
        let Ok(chunk) = push::decode_delivery(bytes) else {
            return;
        };
        if self.ledger.lies.get(&at) == Some(&Lie::ForgedReceipt) {
            let forged = self.nodes[at]
                .identity
                .sign_receipt(&chunk.address(), 31, network_id);
            if let Ok(receipt) = forged {
                let bytes = receipt.encode_to_vec();
                self.send(at, from, Frame::PushResponse { id, bytes });
            }
            return;
        }
        let Some(p) = self.nodes[at].pull.as_mut() else {
            return;
        };
        self.pushes.next_token += 1;
        let token = self.pushes.next_token;
        self.pushes.inbound.insert((at, token), (from, id));
        p.push.handle_request(now, from_overlay, token, chunk);
    }

    /// An answer to node `at`'s push `id` arrives.
    pub(crate) fn on_push_response(&mut self, at: usize, id: u64, bytes: &[u8]) {
        let now = self.net.now();
        let network_id = self.config.overlay.network_id;
        let receipt = push::decode_receipt(bytes).and_then(|r| {
            r.map(|wire| {
                verify_receipt(&wire, network_id)
                    .map(|v| Receipt {
                        address: v.address,
                        storer: v.storer,
                        depth: v.depth,
                        wire: v.wire,
                    })
                    .map_err(|_| Fault::Malformed("a bad receipt"))
            })
            .transpose()
        });
        if let Some(p) = self.nodes[at].pull.as_mut() {
            p.push.handle_receipt(now, id, receipt);
        }
    }

    /// Tells node `i`'s push core the overlay's depth, then carries out its outputs.
    pub(crate) fn drain_push(&mut self, i: usize) -> Result<(), SimError> {
        let depth = self.nodes[i].core.as_ref().map(|c| c.table().depth());
        if let (Some(d), Some(p)) = (depth, self.nodes[i].pull.as_mut()) {
            p.push.handle_depth(d);
        }
        while let Some(output) = self.nodes[i]
            .pull
            .as_mut()
            .and_then(|p| p.push.poll_output())
        {
            self.carry_out_push(i, output)?;
        }
        Ok(())
    }

    fn carry_out_push(&mut self, i: usize, output: Output) -> Result<(), SimError> {
        match output {
            Output::Request { peer, id, chunk } => {
                let Some(&to) = self.ledger.by_overlay.get(&peer) else {
                    return Ok(());
                };
                let chunk = if self.ledger.lies.get(&i) == Some(&Lie::WrongChunk) {
                    Chunk::new(9, b"not pushed").unwrap_or(chunk)
                } else {
                    chunk
                };
                let bytes = tributary_wire::pushsync::Delivery {
                    chunk: chunk.into_data(),
                }
                .encode_to_vec();
                self.send(i, to, Frame::PushRequest { id, bytes });
            }
            Output::Store {
                requester,
                chunk,
                depth,
            } => {
                if let Some(p) = self.nodes[i].pull.as_ref() {
                    p.chunks.put(&chunk)?;
                }
                self.wake_parked(i);
                let network_id = self.config.overlay.network_id;
                let identity = &self.nodes[i].identity;
                let result = identity
                    .sign_receipt(&chunk.address(), depth, network_id)
                    .map(|wire| Receipt {
                        address: chunk.address(),
                        storer: identity.overlay(network_id),
                        depth,
                        wire,
                    })
                    .map_err(|_| PushError::NoPeer(chunk.address()));
                self.answer_push(i, requester, result);
            }
            Output::Answer { requester, result } => self.answer_push(i, requester, result),
            Output::Penalize { peer, fault } => {
                self.pushes.penalties.push((i, peer, fault));
                if let Some(&other) = self.ledger.by_overlay.get(&peer) {
                    self.close(i, other)?;
                }
            }
        }
        Ok(())
    }

    fn answer_push(&mut self, i: usize, requester: Requester, result: Result<Receipt, PushError>) {
        match requester {
            Requester::Local(token) => {
                let result = result.map(|r| Receipted {
                    address: r.address,
                    storer: r.storer,
                    depth: r.depth,
                });
                self.pushes.results.insert((i, token), result);
            }
            Requester::Peer { token, .. } => {
                if let Some((to, id)) = self.pushes.inbound.remove(&(i, token)) {
                    let wire = match result {
                        Ok(r) => r.wire,
                        Err(e) => push::encode_error(&e.to_string()),
                    };
                    let bytes = wire.encode_to_vec();
                    self.send(i, to, Frame::PushResponse { id, bytes });
                }
            }
        }
    }
}
