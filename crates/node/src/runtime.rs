//! The libp2p runtime: one tokio task that owns the swarm and drives the protocol cores.
//!
//! Transport: TCP + Noise + Yamux and QUIC, with the node's secp256k1 key. Protocols are
//! libp2p request-response protocols with [`BytesCodec`] (size-capped, timed out):
//!
//! - `/tributary/overlay/1`: the overlay core's messages (handshake, hive, depth); each is a
//!   request answered with an empty acknowledgement.
//! - `/tributary/statesync/1`: x/sync requests answered by [`tributary_statesync::server`]
//!   from the node's state database, on the blocking pool, at most [`MAX_SERVING`] at once.
//! - `/tributary/pullsync/1`: chunk pull-sync, driven by [`crate::pullsync::PullDriver`]
//!   (the downstream core and the upstream answers).
//! - `/tributary/retrieval/1`: chunk retrieval, driven by
//!   [`crate::retrieval::RetrievalDriver`] (fetches for the API and forwarded requests).
//! - `/tributary/pushsync/1`: push-sync of uploads with signed receipts, driven by
//!   [`crate::pushsync::PushDriver`].
//! - `/tributary/replica/1`: replicated databases (GetDeltas, joins, news), driven by
//!   [`crate::replica::ReplicaDriver`].
//!
//! The loop moves transport events into the overlay core, carries out its outputs, wakes it at
//! its deadlines, re-dials the bootnodes every [`BOOTSTRAP_RETRY`] while no peer is connected,
//! and answers the HTTP API's queries over a bounded channel.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use libp2p::futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, ProtocolSupport, ResponseChannel};
use libp2p::swarm::SwarmEvent;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, noise, tcp, yamux};
use prost::Message;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};
use tributary_merkle::MerkleDb;
use tributary_overlay::{DisconnectReason, NodeKey, Output, Overlay, Topology};
use tributary_statesync::server::{self, Reply};
use tributary_store::{KvStore, StoreError, WriteBatch};
use tributary_wire::{
    MAX_OVERLAY_MESSAGE_BYTES, MAX_PULL_MESSAGE_BYTES, MAX_PULL_REQUEST_BYTES,
    MAX_PUSH_MESSAGE_BYTES, MAX_PUSH_REQUEST_BYTES, MAX_REPLICA_REPLY_BYTES,
    MAX_REPLICA_REQUEST_BYTES, MAX_RETRIEVAL_MESSAGE_BYTES, MAX_RETRIEVAL_REQUEST_BYTES,
    MAX_SYNC_MESSAGE_BYTES, MAX_SYNC_REQUEST_BYTES,
};

use crate::NodeError;
use crate::codec::BytesCodec;
use crate::identity::{node_key, peer_id};
use crate::metrics::Metric;
use crate::pullsync::PullDriver;
use crate::pushsync::PushDriver;
use crate::replica::{Admin, Joined, LastSync, ReplicaDriver, Replicas};
use crate::retrieval::RetrievalDriver;
use crate::slots::HandshakeSlots;

/// The overlay protocol.
pub const OVERLAY_PROTOCOL: StreamProtocol = StreamProtocol::new("/tributary/overlay/1");
/// The state-sync protocol.
pub const STATESYNC_PROTOCOL: StreamProtocol = StreamProtocol::new("/tributary/statesync/1");
/// The pull-sync protocol.
pub const PULLSYNC_PROTOCOL: StreamProtocol = StreamProtocol::new("/tributary/pullsync/1");
/// The push-sync protocol.
pub const PUSHSYNC_PROTOCOL: StreamProtocol = StreamProtocol::new("/tributary/pushsync/1");
/// The retrieval protocol.
pub const RETRIEVAL_PROTOCOL: StreamProtocol = StreamProtocol::new("/tributary/retrieval/1");
/// The replica protocol.
pub const REPLICA_PROTOCOL: StreamProtocol = StreamProtocol::new("/tributary/replica/1");
/// Pull-sync streams per connection, both ways: each side's core has at most
/// [`tributary_stream::pull::MAX_REQUESTS_PER_PEER`] requests open to the other.
const MAX_PULL_STREAMS: usize = 2 * tributary_stream::pull::MAX_REQUESTS_PER_PEER + 8;
/// How long an overlay message may take.
const OVERLAY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a state-sync request may take.
pub const STATESYNC_TIMEOUT: Duration = Duration::from_secs(30);
/// State-sync requests served at once; more are refused (the stream is dropped).
pub const MAX_SERVING: usize = 16;
/// Overlay streams per connection.
const MAX_STREAMS: usize = 64;
/// State-sync streams per connection: no more than are ever served at once, so a connection
/// holds at most `MAX_SERVING` requests of at most [`MAX_SYNC_REQUEST_BYTES`] each (256 KiB in
/// all) being read before any is counted. libp2p counts inbound and outbound streams together,
/// so this also bounds a client's requests in flight per peer (`state sync --work-limit` is at
/// most 16).
const MAX_SYNC_STREAMS: usize = MAX_SERVING;
/// Malformed state-sync requests after which a peer is disconnected.
pub const MAX_SYNC_FAULTS: u32 = 3;
/// How often an isolated node dials its bootnodes again.
pub const BOOTSTRAP_RETRY: Duration = Duration::from_secs(5);
/// Dials started for one mDNS answer at most.
const MAX_MDNS_DIALS: usize = 16;
/// Queries from the API waiting for the loop.
pub const QUERY_QUEUE: usize = 64;

#[expect(
    missing_docs,
    reason = "the NetworkBehaviour derive generates an undocumented event enum"
)]
mod behaviour {
    use libp2p::request_response;
    use libp2p::swarm::NetworkBehaviour;

    use crate::codec::BytesCodec;

    /// The libp2p behaviour: one request-response protocol per Tributary protocol.
    #[derive(NetworkBehaviour)]
    pub struct Behaviour {
        pub(crate) overlay: request_response::Behaviour<BytesCodec>,
        pub(crate) statesync: request_response::Behaviour<BytesCodec>,
        pub(crate) pullsync: request_response::Behaviour<BytesCodec>,
        pub(crate) retrieval: request_response::Behaviour<BytesCodec>,
        pub(crate) pushsync: request_response::Behaviour<BytesCodec>,
        pub(crate) replica: request_response::Behaviour<BytesCodec>,
        pub(crate) mdns: libp2p::swarm::behaviour::toggle::Toggle<libp2p::mdns::tokio::Behaviour>,
    }
}

pub use behaviour::{Behaviour, BehaviourEvent};

impl Behaviour {
    /// The overlay protocol (for tests that speak it by hand).
    pub fn overlay_mut(&mut self) -> &mut request_response::Behaviour<BytesCodec> {
        &mut self.overlay
    }

    /// The state-sync protocol (the client of `tributary state sync` sends on it).
    pub fn statesync_mut(&mut self) -> &mut request_response::Behaviour<BytesCodec> {
        &mut self.statesync
    }

    /// The pull-sync protocol (for tests that speak it by hand).
    pub fn pullsync_mut(&mut self) -> &mut request_response::Behaviour<BytesCodec> {
        &mut self.pullsync
    }

    /// The retrieval protocol (for tests that speak it by hand).
    pub fn retrieval_mut(&mut self) -> &mut request_response::Behaviour<BytesCodec> {
        &mut self.retrieval
    }

    /// The push-sync protocol (for tests that speak it by hand).
    pub fn pushsync_mut(&mut self) -> &mut request_response::Behaviour<BytesCodec> {
        &mut self.pushsync
    }

    /// The replica protocol (for tests that speak it by hand).
    pub fn replica_mut(&mut self) -> &mut request_response::Behaviour<BytesCodec> {
        &mut self.replica
    }
}

fn protocol(
    name: StreamProtocol,
    codec: BytesCodec,
    (timeout, streams): (Duration, usize),
    support: ProtocolSupport,
) -> request_response::Behaviour<BytesCodec> {
    let config = request_response::Config::default()
        .with_request_timeout(timeout)
        .with_max_concurrent_streams(streams);
    request_response::Behaviour::with_codec(codec, [(name, support)], config)
}

/// Builds a swarm with the node's key, without mDNS. `serve_state` says whether this swarm
/// answers state sync requests (a node) or only makes them (`tributary state sync`).
///
/// # Errors
/// When the transport cannot be built.
pub fn build_swarm(
    keypair: libp2p::identity::Keypair,
    serve_state: bool,
) -> Result<Swarm<Behaviour>, NodeError> {
    build_swarm_with(keypair, serve_state, false)
}

/// [`build_swarm`], with libp2p's mDNS discovery of peers on the local network if `mdns`.
///
/// # Errors
/// When the transport or the mDNS socket cannot be built.
pub fn build_swarm_with(
    keypair: libp2p::identity::Keypair,
    serve_state: bool,
    mdns: bool,
) -> Result<Swarm<Behaviour>, NodeError> {
    fn transport_err(e: impl std::error::Error + Send + Sync + 'static) -> NodeError {
        NodeError::Transport(Box::new(e))
    }
    let sync_support = if serve_state {
        ProtocolSupport::Full
    } else {
        ProtocolSupport::Outbound
    };
    let swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(transport_err)?
        .with_quic()
        .with_behaviour(
            |key| -> Result<Behaviour, Box<dyn std::error::Error + Send + Sync>> {
                let mdns = if mdns {
                    let peer = key.public().to_peer_id();
                    Some(libp2p::mdns::tokio::Behaviour::new(
                        libp2p::mdns::Config::default(),
                        peer,
                    )?)
                } else {
                    None
                };
                Ok(Behaviour {
                    mdns: mdns.into(),
                    overlay: protocol(
                        OVERLAY_PROTOCOL,
                        BytesCodec::new(MAX_OVERLAY_MESSAGE_BYTES, 0),
                        (OVERLAY_TIMEOUT, MAX_STREAMS),
                        ProtocolSupport::Full,
                    ),
                    statesync: protocol(
                        STATESYNC_PROTOCOL,
                        BytesCodec::new(MAX_SYNC_REQUEST_BYTES, MAX_SYNC_MESSAGE_BYTES),
                        (STATESYNC_TIMEOUT, MAX_SYNC_STREAMS),
                        sync_support,
                    ),
                    pullsync: protocol(
                        PULLSYNC_PROTOCOL,
                        BytesCodec::new(MAX_PULL_REQUEST_BYTES, MAX_PULL_MESSAGE_BYTES),
                        (PullDriver::transport_timeout(), MAX_PULL_STREAMS),
                        ProtocolSupport::Full,
                    ),
                    retrieval: protocol(
                        RETRIEVAL_PROTOCOL,
                        BytesCodec::new(MAX_RETRIEVAL_REQUEST_BYTES, MAX_RETRIEVAL_MESSAGE_BYTES),
                        (
                            RetrievalDriver::transport_timeout(),
                            crate::retrieval::MAX_STREAMS,
                        ),
                        ProtocolSupport::Full,
                    ),
                    pushsync: protocol(
                        PUSHSYNC_PROTOCOL,
                        BytesCodec::new(MAX_PUSH_REQUEST_BYTES, MAX_PUSH_MESSAGE_BYTES),
                        (
                            PushDriver::transport_timeout(),
                            crate::pushsync::MAX_STREAMS,
                        ),
                        ProtocolSupport::Full,
                    ),
                    replica: protocol(
                        REPLICA_PROTOCOL,
                        BytesCodec::new(MAX_REPLICA_REQUEST_BYTES, MAX_REPLICA_REPLY_BYTES),
                        (crate::replica::REQUEST_TIMEOUT, crate::replica::MAX_STREAMS),
                        ProtocolSupport::Full,
                    ),
                })
            },
        )
        .map_err(transport_err)?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build();
    Ok(swarm)
}

/// Starts listening on `addrs` and waits until each listener reports its address.
///
/// # Errors
/// When an address cannot be listened on.
pub async fn listen(
    swarm: &mut Swarm<Behaviour>,
    addrs: &[Multiaddr],
) -> Result<Vec<Multiaddr>, NodeError> {
    let mut pending = std::collections::HashSet::new();
    for addr in addrs {
        let id = swarm
            .listen_on(addr.clone())
            .map_err(|e| NodeError::Listen {
                addr: addr.to_string(),
                reason: e.to_string(),
            })?;
        pending.insert(id);
    }
    let mut bound = Vec::new();
    let deadline = tokio::time::sleep(Duration::from_secs(10));
    tokio::pin!(deadline);
    while !pending.is_empty() {
        tokio::select! {
            event = swarm.select_next_some() => match event {
                SwarmEvent::NewListenAddr { listener_id, address } => {
                    pending.remove(&listener_id);
                    bound.push(address);
                }
                SwarmEvent::ListenerError { error, .. } | SwarmEvent::ListenerClosed { reason: Err(error), .. } => {
                    return Err(NodeError::Listen { addr: format!("{addrs:?}"), reason: error.to_string() });
                }
                _ => {}
            },
            () = &mut deadline => {
                return Err(NodeError::Listen { addr: format!("{addrs:?}"), reason: "no address within 10 s".into() });
            }
        }
    }
    Ok(bound)
}

/// A connected peer, for `/peers`.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    /// Its libp2p id.
    pub peer_id: PeerId,
    /// Its overlay.
    pub overlay: tributary_chunk::Address,
    /// Whether it is light.
    pub light: bool,
}

/// What the API asks the loop.
#[derive(Debug)]
pub enum Query {
    /// The Kademlia table.
    Topology(oneshot::Sender<Topology>),
    /// Peers whose handshake completed.
    Peers(oneshot::Sender<Vec<PeerInfo>>),
    /// Metrics.
    Metrics(oneshot::Sender<Vec<Metric>>),
    /// Pull-sync progress per (peer, bin).
    PullProgress(oneshot::Sender<Vec<tributary_stream::pull::BinProgress>>),
    /// Fetch a chunk the store lacks from the network.
    Retrieve(
        tributary_chunk::Address,
        oneshot::Sender<crate::retrieval::Fetched>,
    ),
    /// Push an uploaded chunk to its neighbourhood.
    Push(
        tributary_chunk::Chunk,
        oneshot::Sender<crate::pushsync::Pushed>,
    ),
    /// The API wrote to a database.
    ReplicaNews(String),
    /// The API created a syncgroup of a database: sync it.
    ReplicaTrack(String),
    /// Join a syncgroup (database, name) through an admin.
    ReplicaJoin(String, String, Admin, oneshot::Sender<Joined>),
    /// The last sync with each member of a database.
    ReplicaSyncs(
        String,
        oneshot::Sender<Vec<(tributary_replica::NodeId, LastSync)>>,
    ),
}

#[derive(Debug, Default)]
struct Counters {
    overlay_in: u64,
    overlay_out: u64,
    overlay_send_failures: u64,
    sync_served: u64,
    sync_dropped: u64,
    sync_refused: u64,
    sync_busy: u64,
    sync_faulty_peers: u64,
    handshake_slots_full: u64,
    peer_write_failures: u64,
    mdns_discovered: u64,
}

type SyncAnswer = (
    ResponseChannel<Vec<u8>>,
    PeerId,
    Result<Reply, server::ServerError>,
);

/// The event loop of a node.
pub struct Runtime {
    swarm: Swarm<Behaviour>,
    overlay: Overlay,
    db: Arc<MerkleDb>,
    bootnodes: Vec<Multiaddr>,
    next_bootstrap: Instant,
    served_tx: mpsc::Sender<SyncAnswer>,
    served_rx: mpsc::Receiver<SyncAnswer>,
    serving: usize,
    /// Where the overlay core's peer records go.
    peer_store: Arc<dyn KvStore>,
    /// Peer-record writes not yet handed to the writer, merged in order.
    unwritten: WriteBatch,
    /// Whether a peer-record write is running on the blocking pool (at most one is).
    /// The peer-record write running on the blocking pool, if any (at most one is).
    write_task: Option<tokio::task::JoinHandle<Result<(), StoreError>>>,
    /// Malformed state-sync requests per connected peer (dropped when the peer disconnects).
    sync_faults: HashMap<PeerId, u32>,
    /// Inbound connections awaiting their handshake, per remote address.
    slots: HandshakeSlots,
    counters: Counters,
    pull: PullDriver,
    retrieval: RetrievalDriver,
    push: PushDriver,
    replica: ReplicaDriver,
    /// The depth the pull-sync core last heard of.
    pull_depth: Option<u8>,
}

impl Runtime {
    /// A loop over a listening swarm and a started overlay core (`light`: this node pulls
    /// nothing, caches no retrieved chunk and stores no pushed one).
    #[must_use]
    pub fn new(
        swarm: Swarm<Behaviour>,
        overlay: Overlay,
        (db, peer_store): (Arc<MerkleDb>, Arc<dyn KvStore>),
        chunks: Arc<tributary_chunk::store::ChunkStore>,
        (identity, network_id): (tributary_overlay::Identity, u64),
        (bootnodes, light): (Vec<Multiaddr>, bool),
        (replicas, seed): (Replicas, u64),
    ) -> Self {
        let (served_tx, served_rx) = mpsc::channel(MAX_SERVING);
        Self {
            replica: ReplicaDriver::new(replicas, seed),
            push: PushDriver::new(Arc::clone(&chunks), identity, network_id, light),
            retrieval: RetrievalDriver::new(Arc::clone(&chunks), light),
            pull: PullDriver::new(chunks, light),
            pull_depth: None,
            peer_store,
            unwritten: WriteBatch::default(),
            write_task: None,
            swarm,
            overlay,
            db,
            bootnodes,
            next_bootstrap: Instant::now(),
            served_tx,
            served_rx,
            serving: 0,
            sync_faults: HashMap::new(),
            slots: HandshakeSlots::default(),
            counters: Counters::default(),
        }
    }

    /// Runs until `shutdown` completes, then finishes the peer-record writes (also when the
    /// loop ends with an error).
    ///
    /// # Errors
    /// When dialling fails for a reason other than the peer.
    pub async fn run(
        mut self,
        queries: mpsc::Receiver<Query>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), NodeError> {
        let result = self.event_loop(queries, shutdown).await;
        self.finish_writes().await;
        self.pull.finish_writes().await;
        self.retrieval.finish_writes().await;
        self.push.finish_writes().await;
        result
    }

    async fn event_loop(
        &mut self,
        mut queries: mpsc::Receiver<Query>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), NodeError> {
        tokio::pin!(shutdown);
        // The first tick: it arms the core's timer and dials the peers it knows from its store.
        self.overlay.handle_timeout(Instant::now());
        self.drain()?;
        loop {
            self.bootstrap_if_isolated();
            let wake = self.next_wake();
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event)?,
                () = tokio::time::sleep_until(wake.into()) => {
                    let now = Instant::now();
                    self.overlay.handle_timeout(now);
                    self.pull.timeout(&mut self.swarm, now);
                    self.retrieval.timeout(now);
                    self.push.timeout(now);
                    self.replica.timeout(&mut self.swarm, now);
                    self.dial_members(now);
                }
                Some(event) = self.replica.next_event() => {
                    self.replica.on_event(&mut self.swarm, Instant::now(), event);
                }
                event = self.pull.next_event() => {
                    self.pull.on_event(&mut self.swarm, Instant::now(), event)?;
                }
                event = self.retrieval.next_event() => {
                    self.retrieval.on_event(&mut self.swarm, Instant::now(), event);
                }
                event = self.push.next_event() => {
                    self.push.on_event(&mut self.swarm, Instant::now(), event);
                }
                Some(query) = queries.recv() => {
                    // Readers and uploads wait on these: a loop busy with sync traffic still
                    // takes every query waiting (at most the queue's capacity) per wake.
                    self.answer(query);
                    for _ in 1..QUERY_QUEUE {
                        let Ok(query) = queries.try_recv() else { break };
                        self.answer(query);
                    }
                }
                Some(served) = self.served_rx.recv() => self.on_served(served),
                written = finished(&mut self.write_task) => {
                    self.write_task = None;
                    self.on_written(written);
                }
                () = &mut shutdown => break,
            }
            self.drain()?;
        }
        info!("shutting down");
        Ok(())
    }

    /// Hands the peer records waiting to be written to the blocking pool, unless a write is
    /// running already (then they go, merged, when it is done). The store fsyncs each batch,
    /// which must never happen on this loop.
    fn start_write(&mut self) {
        if self.write_task.is_some() || self.unwritten.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.unwritten);
        let store = Arc::clone(&self.peer_store);
        self.write_task = Some(tokio::task::spawn_blocking(move || store.write(batch)));
    }

    /// A write ended: counted if it failed or panicked (its task's join error), and the next
    /// one started.
    fn on_written(&mut self, result: Result<Result<(), StoreError>, tokio::task::JoinError>) {
        let failure = match result {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(e) => Some(e.to_string()),
        };
        if let Some(e) = failure {
            // Peer records are hints for the next start; the node goes on without them.
            self.counters.peer_write_failures += 1;
            warn!("peer records not persisted: {e}");
        }
        self.start_write();
    }

    /// Waits for the running write and writes what is left, so a stop keeps every peer
    /// record the store takes.
    async fn finish_writes(&mut self) {
        self.start_write();
        while let Some(task) = self.write_task.take() {
            let result = task.await;
            self.on_written(result);
        }
    }

    /// The overlay's next deadline, and the next bootnode dial while isolated; an hour away
    /// if neither (the loop must never wait on a deadline already past, or it spins).
    fn next_wake(&self) -> Instant {
        let mut wake = [
            self.overlay.poll_timeout(),
            self.pull.poll_timeout(),
            self.retrieval.poll_timeout(),
            self.push.poll_timeout(),
            self.replica.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min();
        if !self.bootnodes.is_empty() && self.overlay.is_isolated() {
            wake = Some(wake.map_or(self.next_bootstrap, |t| t.min(self.next_bootstrap)));
        }
        wake.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))
    }

    fn bootstrap_if_isolated(&mut self) {
        let now = Instant::now();
        if self.bootnodes.is_empty() || now < self.next_bootstrap || !self.overlay.is_isolated() {
            return;
        }
        self.next_bootstrap = now + BOOTSTRAP_RETRY;
        for addr in self.bootnodes.clone() {
            debug!(%addr, "dialling bootnode");
            if let Err(e) = self.swarm.dial(addr.clone()) {
                warn!(%addr, "cannot dial bootnode: {e}");
            }
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) -> Result<(), NodeError> {
        let now = Instant::now();
        match event {
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint,
                num_established,
                ..
            } => {
                let Some(key) = node_key(&peer_id) else {
                    warn!(%peer_id, "refused peer: its id carries no secp256k1 key");
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                    return Ok(());
                };
                if num_established.get() == 1 {
                    if !endpoint.is_dialer()
                        && !self.slots.take(peer_id, endpoint.get_remote_address())
                    {
                        debug!(%peer_id, "refused peer: too many handshakes from its address");
                        self.counters.handshake_slots_full += 1;
                        let _ = self.swarm.disconnect_peer_id(peer_id);
                        return Ok(());
                    }
                    self.overlay
                        .handle_connected(now, key, endpoint.is_dialer());
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                self.sync_faults.remove(&peer_id);
                self.slots.release(&peer_id);
                if let Some(key) = node_key(&peer_id) {
                    self.overlay.handle_disconnected(now, key);
                }
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer_id),
                error,
                ..
            } => {
                debug!(%peer_id, "dial failed: {error}");
                self.replica.dial_failed(&peer_id, &error.to_string());
                if let Some(key) = node_key(&peer_id) {
                    self.overlay.handle_dial_failed(now, key);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Overlay(event)) => {
                self.on_overlay_event(now, event)?;
            }
            SwarmEvent::Behaviour(BehaviourEvent::Statesync(event)) => {
                self.on_statesync_event(event);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Pullsync(event)) => {
                self.pull.on_swarm_event(now, event);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Retrieval(event)) => {
                self.retrieval.on_swarm_event(&mut self.swarm, now, event);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Pushsync(event)) => {
                self.push.on_swarm_event(&mut self.swarm, now, event);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Replica(event)) => {
                self.replica.on_swarm_event(&mut self.swarm, now, event);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(libp2p::mdns::Event::Discovered(found))) => {
                self.on_discovered(found);
            }
            SwarmEvent::NewListenAddr { address, .. } => info!(%address, "listening"),
            _ => {}
        }
        Ok(())
    }

    /// Dials the replica members that are not connected but that the overlay knows (by the
    /// Ethereum address of a known peer's key).
    fn dial_members(&mut self, now: Instant) {
        let wanted = self.replica.members_to_dial(now);
        if wanted.is_empty() {
            return;
        }
        let found: Vec<(NodeKey, Vec<Vec<u8>>)> = self
            .overlay
            .table()
            .known_records()
            .filter(|r| {
                r.key
                    .eth_address()
                    .is_ok_and(|eth| wanted.contains(&tributary_replica::NodeId(eth)))
            })
            .map(|r| (r.key, r.wire.underlays.clone()))
            .collect();
        for (key, underlays) in found {
            let Some(peer) = peer_id(&key) else { continue };
            if self.swarm.is_connected(&peer) {
                continue;
            }
            let addrs: Vec<Multiaddr> = underlays
                .into_iter()
                .filter_map(|u| Multiaddr::try_from(u).ok())
                .collect();
            // Not through `dial`: a failure here is not the overlay's to count.
            let opts = DialOpts::peer_id(peer)
                .addresses(addrs)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            if let Err(e) = self.swarm.dial(opts) {
                debug!(%peer, "member dial: {e}");
            }
        }
    }

    /// Peers mDNS found on the local network: dialled if not connected (the overlay
    /// handshakes them like any other; one of another network is refused there).
    fn on_discovered(&mut self, found: Vec<(PeerId, Multiaddr)>) {
        // At most MAX_MDNS_DIALS per answer: a host on the network may announce thousands.
        for (peer, addr) in found.into_iter().take(MAX_MDNS_DIALS) {
            self.counters.mdns_discovered += 1;
            if self.swarm.is_connected(&peer) || node_key(&peer).is_none() {
                continue;
            }
            let opts = DialOpts::peer_id(peer)
                .addresses(vec![addr])
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            if let Err(e) = self.swarm.dial(opts) {
                debug!(%peer, "mDNS dial: {e}");
            }
        }
    }

    fn on_overlay_event(
        &mut self,
        now: Instant,
        event: request_response::Event<Vec<u8>, Vec<u8>>,
    ) -> Result<(), NodeError> {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                self.counters.overlay_in += 1;
                // The acknowledgement carries nothing; if the peer is gone it fails harmlessly.
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .overlay
                    .send_response(channel, Vec::new());
                if let Some(key) = node_key(&peer) {
                    self.overlay.handle_message(now, key, &request);
                }
            }
            request_response::Event::OutboundFailure { peer, error, .. } => {
                self.counters.overlay_send_failures += 1;
                debug!(%peer, "overlay message failed: {error}");
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                debug!(%peer, "overlay message not received: {error}");
            }
            _ => {}
        }
        Ok(())
    }

    fn on_statesync_event(&mut self, event: request_response::Event<Vec<u8>, Vec<u8>>) {
        if let request_response::Event::Message {
            peer,
            message:
                request_response::Message::Request {
                    request, channel, ..
                },
            ..
        } = event
        {
            if request.len() > MAX_SYNC_REQUEST_BYTES {
                self.counters.sync_refused += 1;
                self.sync_fault(
                    peer,
                    &format!("a request over {MAX_SYNC_REQUEST_BYTES} bytes"),
                );
                return;
            }
            if self.serving >= MAX_SERVING {
                self.counters.sync_busy += 1;
                debug!(%peer, "state sync request dropped: {MAX_SERVING} already being served");
                return;
            }
            self.serving += 1;
            let db = Arc::clone(&self.db);
            let tx = self.served_tx.clone();
            tokio::task::spawn_blocking(move || {
                let result = server::handle(&db, &request);
                // The loop owns the receiver until it exits; a send after that is moot.
                let _ = tx.blocking_send((channel, peer, result));
            });
        }
    }

    fn on_served(&mut self, (channel, peer, result): SyncAnswer) {
        self.serving = self.serving.saturating_sub(1);
        match result {
            Ok(Reply::Bytes(bytes)) => {
                self.counters.sync_served += 1;
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .statesync
                    .send_response(channel, bytes);
            }
            Ok(Reply::Drop) => self.counters.sync_dropped += 1,
            Err(e) if e.is_peer_fault() => {
                self.counters.sync_refused += 1;
                self.sync_fault(peer, &e);
            }
            Err(e) => warn!(%peer, "state sync request failed: {e}"),
        }
    }

    /// A malformed state-sync request: counted against the peer, which is disconnected once
    /// it has sent [`MAX_SYNC_FAULTS`].
    fn sync_fault(&mut self, peer: PeerId, e: &dyn std::fmt::Display) {
        if !self.swarm.is_connected(&peer) {
            return; // gone already; an entry now would outlive it
        }
        let faults = self.sync_faults.entry(peer).or_default();
        *faults += 1;
        if *faults >= MAX_SYNC_FAULTS {
            warn!(%peer, "refused peer: {faults} malformed state sync requests, the last: {e}");
            self.counters.sync_faulty_peers += 1;
            self.sync_faults.remove(&peer);
            let _ = self.swarm.disconnect_peer_id(peer);
        } else {
            warn!(%peer, "refused state sync request: {e}");
        }
    }

    fn drain(&mut self) -> Result<(), NodeError> {
        let now = Instant::now();
        while let Some(output) = self.overlay.poll_output() {
            match output {
                Output::Dial { key, underlays } => self.dial(now, key, &underlays)?,
                Output::Send { to, message } => {
                    if let Some(peer) = peer_id(&to) {
                        self.counters.overlay_out += 1;
                        self.swarm
                            .behaviour_mut()
                            .overlay
                            .send_request(&peer, message.encode_to_vec());
                    }
                }
                Output::Disconnect { peer, reason } => {
                    let Some(peer) = peer_id(&peer) else { continue };
                    match &reason {
                        DisconnectReason::Refused(r) => warn!(%peer, "refused peer: {r}"),
                        other => info!(%peer, "disconnecting: {other}"),
                    }
                    let _ = self.swarm.disconnect_peer_id(peer);
                }
                Output::PeerConnected {
                    key,
                    overlay,
                    light,
                } => {
                    let peer = peer_id(&key);
                    if let Some(peer) = &peer {
                        self.slots.release(peer);
                    }
                    if let (Some(peer), Ok(eth)) = (peer, key.eth_address()) {
                        let node = tributary_replica::NodeId(eth);
                        self.replica.connected(&mut self.swarm, peer, node);
                    }
                    if let Some(peer) = peer {
                        self.pull.connected(now, overlay, peer, light);
                        self.retrieval.connected(overlay, peer, light);
                        self.push.connected(overlay, peer, light);
                    }
                    let peer = peer.map(|p| p.to_string()).unwrap_or_default();
                    info!(%peer, %overlay, light, "peer connected");
                }
                Output::PeerDisconnected { key, overlay } => {
                    self.pull.disconnected(now, overlay);
                    self.retrieval.disconnected(now, overlay);
                    self.push.disconnected(now, overlay);
                    if let Some(peer) = peer_id(&key) {
                        self.replica.disconnected(&peer);
                    }
                    let peer = peer_id(&key).map(|p| p.to_string()).unwrap_or_default();
                    info!(%peer, %overlay, "peer disconnected");
                }
                Output::Persist(batch) => {
                    self.unwritten.append(&batch);
                    self.start_write();
                }
            }
        }
        let depth = self.overlay.table().depth();
        if self.pull_depth != Some(depth) {
            self.pull_depth = Some(depth);
            self.pull.depth(now, depth);
            self.push.depth(depth);
        }
        self.pull.drain(&mut self.swarm, now);
        self.retrieval.drain(&mut self.swarm, now);
        self.push.drain(&mut self.swarm, now);
        Ok(())
    }

    fn dial(&mut self, now: Instant, key: NodeKey, underlays: &[Vec<u8>]) -> Result<(), NodeError> {
        let addrs: Vec<Multiaddr> = underlays
            .iter()
            .filter_map(|u| Multiaddr::try_from(u.clone()).ok())
            .collect();
        let dialled = peer_id(&key).is_some_and(|peer| {
            let opts = DialOpts::peer_id(peer)
                .addresses(addrs)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            self.swarm.dial(opts).is_ok()
        });
        if !dialled {
            self.overlay.handle_dial_failed(now, key);
        }
        Ok(())
    }

    fn answer(&mut self, query: Query) {
        // A query whose asker gave up is simply not answered.
        match query {
            Query::Topology(tx) => {
                let _ = tx.send(self.overlay.topology());
            }
            Query::Peers(tx) => {
                let peers = self
                    .overlay
                    .peers()
                    .into_iter()
                    .filter_map(|(key, overlay, light)| {
                        Some(PeerInfo {
                            peer_id: peer_id(&key)?,
                            overlay,
                            light,
                        })
                    })
                    .collect();
                let _ = tx.send(peers);
            }
            Query::Metrics(tx) => {
                let mut metrics = self.metrics();
                metrics.extend(self.pull.metrics());
                metrics.extend(self.retrieval.metrics());
                metrics.extend(self.push.metrics());
                metrics.extend(self.replica.metrics(Instant::now()));
                let _ = tx.send(metrics);
            }
            Query::PullProgress(tx) => {
                let _ = tx.send(self.pull.progress());
            }
            Query::Retrieve(address, tx) => {
                self.retrieval.fetch(Instant::now(), address, tx);
            }
            Query::Push(chunk, tx) => self.push.push(Instant::now(), chunk, tx),
            Query::ReplicaNews(db) => self.replica.local_write(Instant::now(), &db),
            Query::ReplicaTrack(db) => self.replica.track(Instant::now(), &db),
            Query::ReplicaJoin(db, name, admin, tx) => {
                self.replica
                    .join(&mut self.swarm, Instant::now(), (db, name, admin), tx);
            }
            Query::ReplicaSyncs(db, tx) => {
                let _ = tx.send(self.replica.last_syncs(&db));
            }
        }
    }

    fn metrics(&self) -> Vec<Metric> {
        let s = self.overlay.stats();
        let t = self.overlay.table();
        let c = &self.counters;
        #[expect(
            clippy::cast_precision_loss,
            reason = "metric values are approximate by nature"
        )]
        let v = |n: u64| n as f64;
        #[expect(
            clippy::cast_precision_loss,
            reason = "metric values are approximate by nature"
        )]
        let u = |n: usize| n as f64;
        vec![
            Metric::single(
                "tributary_overlay_depth",
                "Kademlia neighbourhood depth.",
                "gauge",
                f64::from(t.depth()),
            ),
            Metric::single(
                "tributary_overlay_connected_peers",
                "Peers connected in the Kademlia table.",
                "gauge",
                u(t.connected_len()),
            ),
            Metric::single(
                "tributary_overlay_known_peers",
                "Peers known in the Kademlia table.",
                "gauge",
                u(t.known_len()),
            ),
            Metric::single(
                "tributary_overlay_handshakes_total",
                "Handshakes completed.",
                "counter",
                v(s.handshakes),
            ),
            Metric::single(
                "tributary_overlay_refusals_total",
                "Peers refused for breaking the protocol.",
                "counter",
                v(s.refusals),
            ),
            Metric::single(
                "tributary_overlay_dials_total",
                "Dials started by the table.",
                "counter",
                v(s.dials),
            ),
            Metric::single(
                "tributary_overlay_dial_failures_total",
                "Dials that failed.",
                "counter",
                v(s.dial_failures),
            ),
            Metric::single(
                "tributary_overlay_pruned_total",
                "Connections pruned from over-saturated bins.",
                "counter",
                v(s.pruned),
            ),
            Metric::single(
                "tributary_hive_records_received_total",
                "Peer records received in hive messages.",
                "counter",
                v(s.records_received),
            ),
            Metric::single(
                "tributary_hive_records_sent_total",
                "Peer records sent in hive messages.",
                "counter",
                v(s.records_sent),
            ),
            Metric::single(
                "tributary_overlay_messages_received_total",
                "Overlay messages received.",
                "counter",
                v(c.overlay_in),
            ),
            Metric::single(
                "tributary_overlay_messages_sent_total",
                "Overlay messages sent.",
                "counter",
                v(c.overlay_out),
            ),
            Metric::single(
                "tributary_overlay_send_failures_total",
                "Overlay messages that failed or timed out.",
                "counter",
                v(c.overlay_send_failures),
            ),
            Metric::single(
                "tributary_statesync_served_total",
                "State sync requests answered.",
                "counter",
                v(c.sync_served),
            ),
            Metric::single(
                "tributary_statesync_dropped_total",
                "State sync requests for roots not held.",
                "counter",
                v(c.sync_dropped),
            ),
            Metric::single(
                "tributary_statesync_refused_total",
                "Malformed state sync requests.",
                "counter",
                v(c.sync_refused),
            ),
            Metric::single(
                "tributary_peer_record_write_failures_total",
                "Batches of peer records the store failed to write.",
                "counter",
                v(c.peer_write_failures),
            ),
            Metric::single(
                "tributary_handshake_slots_full_total",
                "Inbound connections closed: too many awaiting a handshake from one address.",
                "counter",
                v(c.handshake_slots_full),
            ),
            Metric::single(
                "tributary_statesync_faulty_peers_total",
                "Peers disconnected for malformed state sync requests.",
                "counter",
                v(c.sync_faulty_peers),
            ),
            Metric::single(
                "tributary_mdns_discovered_total",
                "Peer addresses found by mDNS on the local network.",
                "counter",
                v(c.mdns_discovered),
            ),
            Metric::single(
                "tributary_statesync_busy_total",
                "State sync requests dropped for load.",
                "counter",
                v(c.sync_busy),
            ),
        ]
    }
}

/// The outcome of the running blocking task (a store write); never, if none runs.
pub(crate) async fn finished<T>(
    task: &mut Option<tokio::task::JoinHandle<T>>,
) -> Result<T, tokio::task::JoinError> {
    match task {
        Some(task) => task.await,
        None => std::future::pending().await,
    }
}

/// Appends `/p2p/<peer>` to an address.
#[must_use]
pub fn with_peer(addr: &Multiaddr, peer: PeerId) -> Multiaddr {
    let mut addr = addr.clone();
    if !matches!(addr.iter().last(), Some(Protocol::P2p(_))) {
        addr.push(Protocol::P2p(peer));
    }
    addr
}

/// Seconds since the Unix epoch (for record timestamps).
#[must_use]
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
