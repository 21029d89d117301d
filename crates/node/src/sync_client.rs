//! State sync over libp2p: the x/sync client ([`tributary_statesync::client::Client`]) driven
//! against remote nodes on `/tributary/statesync/1`.
//!
//! The client joins as a light overlay peer with a fresh key (it serves nothing and takes no
//! place in anyone's Kademlia table), so the nodes it talks to complete a handshake with it
//! rather than dropping it as a silent connection. Requests are capped by the codec
//! ([`tributary_wire::MAX_SYNC_MESSAGE_BYTES`]) and time out after
//! [`crate::runtime::STATESYNC_TIMEOUT`]; a timed-out or failed request goes back to the client,
//! which retries it on another peer with backoff, and a proof that does not verify penalizes its
//! peer. Every proof is verified before it is committed, with the client's progress record in
//! the same write, so an interrupted sync resumes where it stopped.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use libp2p::futures::StreamExt;
use libp2p::request_response::{self, OutboundRequestId};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm};
use prost::Message;
use tributary_merkle::{Hash, MerkleDb};
use tributary_statesync::client::{Client, ClientConfig, ClientError};

use crate::identity::NodeIdentity;
use crate::runtime::{Behaviour, BehaviourEvent, build_swarm, unix_now};

/// How long the peers may take to accept the connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the client goes on with no peer connected before giving up.
pub const NO_PEER_TIMEOUT: Duration = Duration::from_secs(30);

/// Errors of a sync from peers.
#[derive(Debug, thiserror::Error)]
pub enum PeerSyncError {
    /// The client's identity, record or transport could not be made.
    #[error("setting up the sync client's node")]
    Setup(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// No peer could be connected.
    #[error("none of the {tried} peers could be connected: {reasons}")]
    NoPeers {
        /// How many were tried.
        tried: usize,
        /// Why each failed.
        reasons: String,
    },
    /// Every peer went away and none came back.
    #[error(
        "all peers disconnected for {0:?} (a node closes the connection of a peer of another \
         network: check --network-id)"
    )]
    PeersGone(Duration),
    /// The client failed (its database, or the final root).
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The blocking task that commits an answer panicked or was cancelled.
    #[error("the commit task failed")]
    CommitTask(#[source] tokio::task::JoinError),
}

/// How to sync.
#[derive(Clone, Debug)]
pub struct PeerSyncConfig {
    /// The nodes to sync from (with `/p2p/<peer id>`, or without).
    pub peers: Vec<Multiaddr>,
    /// The root to bring the database to.
    pub target: Hash,
    /// The client's limits.
    pub client: ClientConfig,
    /// The network the peers are in (for the light handshake).
    pub network_id: u64,
}

struct Session {
    swarm: Swarm<Behaviour>,
    handshake: Vec<u8>,
    connected: HashSet<PeerId>,
}

impl Session {
    fn new(network_id: u64) -> Result<Self, PeerSyncError> {
        let id = NodeIdentity::random().map_err(|e| PeerSyncError::Setup(Box::new(e)))?;
        let swarm =
            build_swarm(id.keypair, false).map_err(|e| PeerSyncError::Setup(Box::new(e)))?;
        let record = id
            .identity
            .sign_record(network_id, Vec::new(), unix_now())
            .map_err(|e| PeerSyncError::Setup(Box::new(e)))?;
        let handshake =
            tributary_overlay::protocol::handshake(network_id, record, true).encode_to_vec();
        Ok(Self {
            swarm,
            handshake,
            connected: HashSet::new(),
        })
    }

    /// Handles what is not state sync: connections and the overlay's messages. Returns the
    /// state-sync event, if it was one.
    fn on_event(
        &mut self,
        event: SwarmEvent<BehaviourEvent>,
    ) -> Option<request_response::Event<Vec<u8>, Vec<u8>>> {
        match event {
            SwarmEvent::ConnectionEstablished {
                peer_id,
                num_established,
                ..
            } if num_established.get() == 1 => {
                self.connected.insert(peer_id);
                let hello = self.handshake.clone();
                self.swarm
                    .behaviour_mut()
                    .overlay_mut()
                    .send_request(&peer_id, hello);
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                self.connected.remove(&peer_id);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Overlay(request_response::Event::Message {
                message: request_response::Message::Request { channel, .. },
                ..
            })) => {
                // Gossip is of no use to a light client; acknowledge it and move on.
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .overlay_mut()
                    .send_response(channel, Vec::new());
            }
            SwarmEvent::Behaviour(BehaviourEvent::Statesync(e)) => return Some(e),
            _ => {}
        }
        None
    }

    /// Dials every address and waits until each dial connected or failed (several addresses
    /// of one node give one peer).
    async fn connect(&mut self, addrs: &[Multiaddr]) -> Result<Vec<PeerId>, PeerSyncError> {
        let mut failures = Vec::new();
        let mut pending = 0usize;
        for addr in addrs {
            match self.swarm.dial(addr.clone()) {
                Ok(()) => pending += 1,
                Err(e) => failures.push(format!("{addr}: {e}")),
            }
        }
        let deadline = tokio::time::sleep(CONNECT_TIMEOUT);
        tokio::pin!(deadline);
        while pending > 0 {
            tokio::select! {
                event = self.swarm.select_next_some() => {
                    match &event {
                        SwarmEvent::OutgoingConnectionError { error, .. } => {
                            failures.push(error.to_string());
                            pending = pending.saturating_sub(1);
                        }
                        SwarmEvent::ConnectionEstablished { endpoint, .. } if endpoint.is_dialer() => {
                            pending = pending.saturating_sub(1);
                        }
                        _ => {}
                    }
                    let _ = self.on_event(event);
                }
                () = &mut deadline => break,
            }
        }
        if self.connected.is_empty() {
            return Err(PeerSyncError::NoPeers {
                tried: addrs.len(),
                reasons: failures.join("; "),
            });
        }
        let mut peers: Vec<PeerId> = self.connected.iter().copied().collect();
        peers.sort();
        Ok(peers)
    }
}

/// Brings `db` to `config.target` from `config.peers`, calling `progress` after every answer
/// and at least every second. Returns the finished client (its stats, penalties, database).
///
/// Verifying and committing an answer (with an fsync) is blocking work: it runs on the blocking
/// pool, the client moved there and back, while this loop goes on polling the swarm; answers
/// and failures that arrive meanwhile wait in order (at most the requests in flight).
///
/// # Errors
/// When no peer can be reached, all of them go away, or the client fails.
pub async fn sync_from_peers(
    db: MerkleDb,
    config: PeerSyncConfig,
    mut progress: impl FnMut(&Client<PeerId>),
) -> Result<Client<PeerId>, PeerSyncError> {
    let mut session = Session::new(config.network_id)?;
    let peers = session.connect(&config.peers).await?;
    let mut client = Some(Client::new(db, config.target, peers, config.client)?);
    let mut committing: Option<Committing> = None;
    let mut waiting: VecDeque<Outcome> = VecDeque::new();
    let mut pending: HashMap<OutboundRequestId, u64> = HashMap::new();
    let mut alone_since: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if let Some(mut idle) = client.take() {
            // Failures first (cheap), then new requests, so the pipeline stays full while the
            // next answer is committed.
            let next = take_failures(&mut idle, &mut waiting, now);
            while let Some(out) = idle.poll_request(now) {
                let rid = session
                    .swarm
                    .behaviour_mut()
                    .statesync_mut()
                    .send_request(&out.peer, out.bytes);
                pending.insert(rid, out.id);
            }
            match next {
                Some((id, bytes)) => {
                    committing = Some(tokio::task::spawn_blocking(move || {
                        let result = idle.handle_response(Instant::now(), id, &bytes);
                        (idle, result)
                    }));
                }
                None if idle.is_done()? => {
                    progress(&idle);
                    return Ok(idle);
                }
                None => client = Some(idle),
            }
        }
        if session.connected.is_empty() {
            let since = *alone_since.get_or_insert(now);
            if now.duration_since(since) > NO_PEER_TIMEOUT {
                return Err(PeerSyncError::PeersGone(NO_PEER_TIMEOUT));
            }
        } else {
            alone_since = None;
        }
        // A wake-up already past means an item is ready but the work limit is full: the next
        // answer or failure wakes the loop, so only future backoffs count (else it spins).
        let second = now + Duration::from_secs(1);
        let wake = client
            .as_ref()
            .and_then(Client::next_wakeup)
            .filter(|t| *t > now)
            .map_or(second, |t| t.min(second));
        tokio::select! {
            event = session.swarm.select_next_some() => {
                if let Some(event) = session.on_event(event) {
                    waiting.extend(outcome(&mut pending, event));
                }
            }
            joined = committed(&mut committing) => {
                committing = None;
                let (done, result) = joined.map_err(PeerSyncError::CommitTask)?;
                result?;
                client = Some(done); // progress is shown below
            }
            () = tokio::time::sleep_until(wake.into()) => {}
        }
        if let Some(idle) = &client {
            progress(idle);
        }
    }
}

/// A commit running on the blocking pool, and the client it holds.
type Committing = tokio::task::JoinHandle<(Client<PeerId>, Result<(), ClientError>)>;

/// The end of a running commit; never, if none runs.
async fn committed(
    task: &mut Option<Committing>,
) -> Result<(Client<PeerId>, Result<(), ClientError>), tokio::task::JoinError> {
    match task {
        Some(task) => task.await,
        None => std::future::pending().await,
    }
}

/// What became of a request, waiting for the client to take it in.
enum Outcome {
    /// Its answer.
    Answer(u64, Vec<u8>),
    /// It failed or timed out.
    Failed(u64),
}

/// Takes in the failures at the head of `waiting` (cheap); returns the answer after them, if
/// any, to commit next.
fn take_failures(
    client: &mut Client<PeerId>,
    waiting: &mut VecDeque<Outcome>,
    now: Instant,
) -> Option<(u64, Vec<u8>)> {
    while let Some(outcome) = waiting.pop_front() {
        match outcome {
            Outcome::Failed(id) => client.handle_failure(now, id),
            Outcome::Answer(id, bytes) => return Some((id, bytes)),
        }
    }
    None
}

fn outcome(
    pending: &mut HashMap<OutboundRequestId, u64>,
    event: request_response::Event<Vec<u8>, Vec<u8>>,
) -> Option<Outcome> {
    match event {
        request_response::Event::Message {
            message:
                request_response::Message::Response {
                    request_id,
                    response,
                },
            ..
        } => pending
            .remove(&request_id)
            .map(|id| Outcome::Answer(id, response)),
        request_response::Event::OutboundFailure {
            request_id,
            error,
            peer,
            ..
        } => {
            tracing::debug!(%peer, "state sync request failed: {error}");
            pending.remove(&request_id).map(Outcome::Failed)
        }
        _ => None,
    }
}
