//! The overlay protocol core: connections, handshake, hive gossip and dialling, sans-IO.
//!
//! The runtime (or the simulator) reports transport events — a connection opened or closed,
//! a dial failed, a message arrived — through `handle_*(now, …)` and carries out what
//! [`Overlay::poll_output`] returns: dial a peer, send a message, close a connection. Time is
//! only what the caller passes in; [`Overlay::poll_timeout`] names the next deadline.
//!
//! **Handshake.** Each side sends one [`Handshake`] on a new connection, the dialer first, the
//! other on receipt of the dialer's (so simultaneous dials that leave each side believing it
//! dialled still exchange exactly one each). A handshake is refused — the connection closed
//! with a [`Refusal`] the runtime logs — for another protocol version, another network id, a
//! record that does not verify, a record signed by another key than the one the transport
//! authenticated, or our own overlay. A connection that has not completed its handshake within
//! `handshake_timeout` is closed.
//!
//! **Hive.** A new peer is sent the records nearest to it (and a few per bin), and announced to
//! every other connected peer at the next tick; every `hive_interval` each connected peer is
//! sent the records nearest to it again, which repairs what message loss took. Each node also
//! tells its peers its depth (old Swarm's `subPeersMsg`) when it changes and with every
//! refresh, so that a node does not prune a peer whose neighbourhood it is in. Messages may
//! arrive in any order (libp2p request-response opens a stream per message); gossip that
//! overtakes the handshake is dropped and repeated by the next refresh. A batch holds
//! at most [`MAX_PEERS_PER_MESSAGE`] records; each record is verified (unless exactly that
//! record is already known) before it enters the table and the store, and a peer that sends
//! an invalid one is disconnected. Known records are persisted and loaded again at start, so a
//! restarted node rejoins without a bootnode.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tributary_chunk::Address;
use tributary_store::{KeyspaceId, KvStore, StoreError, WriteBatch};
use tributary_wire::MAX_OVERLAY_MESSAGE_BYTES;
use tributary_wire::overlay::{
    Depth, Handshake, OverlayMessage, PeerRecord, Peers, overlay_message,
};

use crate::identity::{NodeKey, RecordError, VerifiedRecord, verify_record};
use crate::kademlia::{Added, Kademlia, KademliaConfig, Topology};

/// The overlay protocol version this node speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// Most records in one hive message (bee's batch size).
pub const MAX_PEERS_PER_MESSAGE: usize = 30;
/// Records announced to one peer that may wait for the next tick.
const MAX_PENDING_ANNOUNCES: usize = MAX_PEERS_PER_MESSAGE;
/// Keyspace of persisted peer records.
const PEERS_KEYSPACE: &str = "overlay_peers";

/// Parameters of the overlay.
#[derive(Clone, Debug)]
pub struct OverlayConfig {
    /// Peers of other networks are refused.
    pub network_id: u64,
    /// Whether this node is light (takes no place in others' tables).
    pub light: bool,
    /// The table's parameters.
    pub kademlia: KademliaConfig,
    /// How long a connection may take to complete its handshake.
    pub handshake_timeout: Duration,
    /// How long a dial may stay unanswered before it counts as failed.
    pub dial_timeout: Duration,
    /// Most dials in flight.
    pub max_dials: usize,
    /// Most connections, handshaking or not; more are closed at once.
    pub max_connections: usize,
    /// Most inbound connections still without a completed handshake; more are closed at once,
    /// so peers that connect and stay silent cannot fill `max_connections`.
    pub max_inbound_handshakes: usize,
    /// How often connected peers are sent the records nearest them again.
    pub hive_interval: Duration,
    /// How often the table is looked at (dials, pruning, announcements).
    pub tick: Duration,
    /// Seed of the redial jitter.
    pub seed: u64,
}

impl Default for OverlayConfig {
    fn default() -> Self {
        Self {
            network_id: 1,
            light: false,
            kademlia: KademliaConfig::default(),
            handshake_timeout: Duration::from_secs(15),
            dial_timeout: Duration::from_secs(30),
            max_dials: 8,
            max_connections: 256,
            max_inbound_handshakes: 32,
            hive_interval: Duration::from_secs(20),
            tick: Duration::from_millis(500),
            seed: 0,
        }
    }
}

/// Why a peer's connection was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Another protocol version.
    #[error("protocol version {theirs}, we speak {ours}")]
    Version {
        /// Ours.
        ours: u32,
        /// Theirs.
        theirs: u32,
    },
    /// Another network.
    #[error("network id {theirs}, ours is {ours}")]
    Network {
        /// Ours.
        ours: u64,
        /// Theirs.
        theirs: u64,
    },
    /// A record that does not verify.
    #[error("invalid peer record: {0}")]
    Record(RecordError),
    /// The handshake's record is signed by another key than the connection's.
    #[error("handshake record signed by another key than the connection's")]
    KeyMismatch,
    /// The peer claims our own overlay.
    #[error("peer claims our own overlay")]
    OwnOverlay,
    /// A message over the size limit.
    #[error("message of {len} bytes, limit {max}")]
    Oversized {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A message that does not decode.
    #[error("undecodable message: {0}")]
    Malformed(String),
    /// A hive batch over [`MAX_PEERS_PER_MESSAGE`].
    #[error("{0} records in one message, limit {MAX_PEERS_PER_MESSAGE}")]
    TooManyRecords(usize),
    /// A second handshake.
    #[error("message out of order: {0}")]
    OutOfOrder(&'static str),
}

/// Why the core closes a connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DisconnectReason {
    /// The peer broke the protocol or failed verification.
    #[error("refused: {0}")]
    Refused(Refusal),
    /// No handshake in time.
    #[error("handshake timed out")]
    HandshakeTimeout,
    /// Its bin holds more peers than the table keeps.
    #[error("pruned from an over-saturated bin")]
    Pruned,
    /// The node holds as many connections as it may.
    #[error("connection limit reached")]
    Full,
    /// The node holds as many inbound connections without a handshake as it may.
    #[error("too many inbound connections without a handshake")]
    TooManyHandshakes,
}

/// Errors of the overlay core.
#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    /// The store failed.
    #[error("peer store")]
    Store(#[from] StoreError),
    /// The node's own record does not verify in its network.
    #[error("own record: {0}")]
    OwnRecord(RecordError),
}

/// What the core asks the runtime to do, or tells it.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Open a connection.
    Dial {
        /// The peer's transport key.
        key: NodeKey,
        /// Its underlays.
        underlays: Vec<Vec<u8>>,
    },
    /// Send a message on the connection to `to`.
    Send {
        /// The peer.
        to: NodeKey,
        /// The message.
        message: OverlayMessage,
    },
    /// Close the connection to `peer`.
    Disconnect {
        /// The peer.
        peer: NodeKey,
        /// Why (for the log).
        reason: DisconnectReason,
    },
    /// A handshake completed.
    PeerConnected {
        /// The peer's key.
        key: NodeKey,
        /// Its overlay.
        overlay: Address,
        /// Whether it is light.
        light: bool,
    },
    /// A connected peer went away.
    PeerDisconnected {
        /// The peer's key.
        key: NodeKey,
        /// Its overlay.
        overlay: Address,
    },
    /// Write this batch of peer records (puts of new or newer records, deletes of forgotten
    /// ones) to the store the core was loaded from, off the event loop. Batches must be written
    /// in the order given; the runtime may merge successive ones into one write. Nothing the
    /// core does waits on their durability: peer records are hints for the next start, and a
    /// crash that loses the last ones costs only their re-learning.
    Persist(WriteBatch),
}

#[derive(Debug)]
enum ConnState {
    Handshaking {
        deadline: Instant,
        dialled: Option<Address>,
    },
    Ready {
        overlay: Address,
        light: bool,
    },
}

#[derive(Debug)]
struct Conn {
    sent_handshake: bool,
    /// The peer opened it.
    inbound: bool,
    state: ConnState,
    announce: Vec<PeerRecord>,
}

/// Counters for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OverlayStats {
    /// Handshakes completed.
    pub handshakes: u64,
    /// Connections refused.
    pub refusals: u64,
    /// Records received in hive messages.
    pub records_received: u64,
    /// Records sent in hive messages.
    pub records_sent: u64,
    /// Dials started.
    pub dials: u64,
    /// Dials that failed.
    pub dial_failures: u64,
    /// Connections pruned.
    pub pruned: u64,
    /// Batches of peer records handed out to persist.
    pub persists: u64,
}

/// The handshake a node sends first on every connection: this protocol version, the network,
/// the node's signed record and whether it is light. Also what a peer that only wants to make
/// requests (a state-sync client) sends to be accepted.
#[must_use]
pub fn handshake(network_id: u64, record: PeerRecord, light: bool) -> OverlayMessage {
    OverlayMessage {
        message: Some(overlay_message::Message::Handshake(Handshake {
            version: PROTOCOL_VERSION,
            network_id,
            record: Some(record),
            light,
        })),
    }
}

/// The overlay core of one node.
pub struct Overlay {
    config: OverlayConfig,
    own: VerifiedRecord,
    table: Kademlia,
    conns: BTreeMap<NodeKey, Conn>,
    dialing: BTreeMap<NodeKey, (Address, Instant)>,
    out: VecDeque<Output>,
    keyspace: KeyspaceId,
    rng: StdRng,
    next_tick: Option<Instant>,
    next_refresh: Option<Instant>,
    advertised_depth: Option<u8>,
    stats: OverlayStats,
}

impl std::fmt::Debug for Overlay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Overlay")
            .field("overlay", &self.own.overlay)
            .field("connected", &self.table.connected_len())
            .field("known", &self.table.known_len())
            .finish_non_exhaustive()
    }
}

impl Overlay {
    /// A core for the node whose signed record is `own`, loading the peers persisted in
    /// `store` (records that no longer verify, say after a network id change, are dropped from
    /// it). This is the only time the core touches the store: from then on it hands out what to
    /// write as [`Output::Persist`].
    ///
    /// # Errors
    /// When `own` does not verify in `config.network_id` or the store fails.
    pub fn new(
        now: Instant,
        config: OverlayConfig,
        own: &PeerRecord,
        store: &dyn KvStore,
    ) -> Result<Self, OverlayError> {
        let own = verify_record(own, config.network_id).map_err(OverlayError::OwnRecord)?;
        let keyspace = store.keyspace(PEERS_KEYSPACE)?;
        let mut table = Kademlia::new(own.overlay, config.kademlia.clone());
        let mut stale = WriteBatch::default();
        for item in store.scan_from(keyspace, &[]) {
            let (key, value) = item?;
            let record = PeerRecord::decode(value.as_slice())
                .ok()
                .and_then(|r| verify_record(&r, config.network_id).ok());
            match record {
                Some(r) if r.overlay.0.as_slice() == key.as_slice() => {
                    if let Added::Changed {
                        evicted: Some(evicted),
                    } = table.add_known(now, r, false)
                    {
                        stale.delete(keyspace, &evicted.0);
                    }
                }
                _ => stale.delete(keyspace, &key),
            }
        }
        if !stale.is_empty() {
            store.write(stale)?;
        }
        Ok(Self {
            rng: StdRng::seed_from_u64(config.seed),
            config,
            own,
            table,
            conns: BTreeMap::new(),
            dialing: BTreeMap::new(),
            out: VecDeque::new(),
            keyspace,
            next_tick: None,
            next_refresh: None,
            advertised_depth: None,
            stats: OverlayStats::default(),
        })
    }

    /// This node's overlay address.
    #[must_use]
    pub fn overlay(&self) -> Address {
        self.own.overlay
    }

    /// The table.
    #[must_use]
    pub fn table(&self) -> &Kademlia {
        &self.table
    }

    /// A snapshot of the table.
    #[must_use]
    pub fn topology(&self) -> Topology {
        self.table.topology()
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> OverlayStats {
        self.stats
    }

    /// Peers whose handshake completed: key, overlay, light.
    #[must_use]
    pub fn peers(&self) -> Vec<(NodeKey, Address, bool)> {
        let mut out: Vec<_> = self
            .conns
            .iter()
            .filter_map(|(k, c)| match c.state {
                ConnState::Ready { overlay, light } => Some((*k, overlay, light)),
                ConnState::Handshaking { .. } => None,
            })
            .collect();
        out.sort_by_key(|(_, o, _)| *o);
        out
    }

    /// Whether no connection has completed its handshake: the runtime then dials its
    /// bootnodes again.
    #[must_use]
    pub fn is_isolated(&self) -> bool {
        !self
            .conns
            .values()
            .any(|c| matches!(c.state, ConnState::Ready { .. }))
    }

    /// The next output, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`Overlay::handle_timeout`] should be called next. `None` before the first call,
    /// which the driver makes right after [`Overlay::new`]: from then on the core ticks.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_tick
    }

    /// A transport connection to `key` opened; `outbound` if this node dialled it.
    pub fn handle_connected(&mut self, now: Instant, key: NodeKey, outbound: bool) {
        let dialled = self.dialing.remove(&key).map(|(overlay, _)| overlay);
        if self.conns.contains_key(&key) {
            return;
        }
        if self.conns.len() >= self.config.max_connections {
            self.out.push_back(Output::Disconnect {
                peer: key,
                reason: DisconnectReason::Full,
            });
            return;
        }
        if !outbound && self.inbound_handshakes() >= self.config.max_inbound_handshakes {
            self.out.push_back(Output::Disconnect {
                peer: key,
                reason: DisconnectReason::TooManyHandshakes,
            });
            return;
        }
        let mut conn = Conn {
            sent_handshake: false,
            inbound: !outbound,
            state: ConnState::Handshaking {
                deadline: now + self.config.handshake_timeout,
                dialled,
            },
            announce: Vec::new(),
        };
        if outbound {
            self.send_handshake(key, &mut conn);
        }
        self.conns.insert(key, conn);
        self.schedule(now);
    }

    /// Inbound connections whose handshake has not completed.
    fn inbound_handshakes(&self) -> usize {
        self.conns
            .values()
            .filter(|c| c.inbound && matches!(c.state, ConnState::Handshaking { .. }))
            .count()
    }

    /// The transport connection to `key` closed.
    pub fn handle_disconnected(&mut self, now: Instant, key: NodeKey) {
        self.dialing.remove(&key);
        if let Some(conn) = self.conns.remove(&key) {
            self.connection_ended(now, key, &conn);
        }
    }

    /// A dial to `key` failed.
    pub fn handle_dial_failed(&mut self, now: Instant, key: NodeKey) {
        if let Some((overlay, _)) = self.dialing.remove(&key) {
            self.stats.dial_failures += 1;
            let jitter = self.jitter();
            if self.table.dial_failed(&overlay, now, jitter) {
                self.forget(&overlay);
            }
        }
    }

    /// `bytes` arrived from `from`.
    pub fn handle_message(&mut self, now: Instant, from: NodeKey, bytes: &[u8]) {
        if !self.conns.contains_key(&from) {
            return;
        }
        if bytes.len() > MAX_OVERLAY_MESSAGE_BYTES {
            let len = bytes.len();
            return self.refuse(
                now,
                from,
                Refusal::Oversized {
                    len,
                    max: MAX_OVERLAY_MESSAGE_BYTES,
                },
            );
        }
        let message = match OverlayMessage::decode(bytes) {
            Ok(OverlayMessage { message: Some(m) }) => m,
            Ok(_) => return self.refuse(now, from, Refusal::Malformed("empty message".into())),
            Err(e) => return self.refuse(now, from, Refusal::Malformed(e.to_string())),
        };
        let result = match message {
            overlay_message::Message::Handshake(h) => self.on_handshake(now, from, &h),
            overlay_message::Message::Peers(p) => self.on_peers(now, from, p.peers),
            overlay_message::Message::Depth(d) => self.on_depth(from, d.depth),
        };
        if let Err(refusal) = result {
            self.refuse(now, from, refusal);
        }
    }

    /// Time passed: expire handshakes and dials, announce new peers, refresh gossip, prune,
    /// dial.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.next_tick.is_some_and(|t| t > now) {
            return;
        }
        self.next_tick = Some(now + self.config.tick);
        self.expire(now);
        self.flush_announcements();
        self.advertise_depth();
        if self.next_refresh.is_none_or(|t| t <= now) {
            self.next_refresh = Some(now + self.config.hive_interval);
            self.refresh_gossip();
        }
        self.prune(now);
        self.dial(now);
    }

    fn schedule(&mut self, now: Instant) {
        if self.next_tick.is_none() {
            self.next_tick = Some(now);
        }
    }

    fn jitter(&mut self) -> f64 {
        self.rng.random_range(0.85..1.15)
    }

    fn send(&mut self, to: NodeKey, message: overlay_message::Message) {
        self.out.push_back(Output::Send {
            to,
            message: OverlayMessage {
                message: Some(message),
            },
        });
    }

    fn send_handshake(&mut self, to: NodeKey, conn: &mut Conn) {
        conn.sent_handshake = true;
        let handshake = handshake(
            self.config.network_id,
            self.own.wire.clone(),
            self.config.light,
        );
        self.out.push_back(Output::Send {
            to,
            message: handshake,
        });
    }

    fn on_handshake(&mut self, now: Instant, from: NodeKey, h: &Handshake) -> Result<(), Refusal> {
        let record = self.check_handshake(from, h)?;
        let Some(mut conn) = self.conns.remove(&from) else {
            return Ok(());
        };
        if matches!(conn.state, ConnState::Ready { .. }) {
            self.conns.insert(from, conn);
            return Err(Refusal::OutOfOrder("second handshake"));
        }
        if !conn.sent_handshake {
            self.send_handshake(from, &mut conn);
        }
        let overlay = record.overlay;
        conn.state = ConnState::Ready {
            overlay,
            light: h.light,
        };
        self.conns.insert(from, conn);
        self.stats.handshakes += 1;
        self.out.push_back(Output::PeerConnected {
            key: from,
            overlay,
            light: h.light,
        });
        if !h.light {
            let wire = record.wire.clone();
            self.remember(now, vec![record], true);
            self.table.connect(overlay, from, now);
            for (key, other) in &mut self.conns {
                if *key != from
                    && matches!(other.state, ConnState::Ready { .. })
                    && other.announce.len() < MAX_PENDING_ANNOUNCES
                {
                    other.announce.push(wire.clone());
                }
            }
        }
        self.gossip_to(from, &overlay);
        if let Some(depth) = self.advertised_depth {
            self.send(
                from,
                overlay_message::Message::Depth(Depth {
                    depth: u32::from(depth),
                }),
            );
        }
        Ok(())
    }

    fn on_depth(&mut self, from: NodeKey, depth: u32) -> Result<(), Refusal> {
        let Some(ConnState::Ready { overlay, .. }) = self.conns.get(&from).map(|c| &c.state) else {
            // Overtook the handshake (see `on_peers`); the next refresh repeats it.
            return Ok(());
        };
        let depth = u8::try_from(depth)
            .ok()
            .filter(|d| *d <= tributary_chunk::MAX_PO)
            .ok_or_else(|| Refusal::Malformed(format!("depth {depth}")))?;
        let overlay = *overlay;
        self.table.set_peer_depth(&overlay, depth);
        Ok(())
    }

    /// Tells every connected peer our depth when it changed.
    fn advertise_depth(&mut self) {
        let depth = self.table.depth();
        if self.advertised_depth == Some(depth) {
            return;
        }
        self.advertised_depth = Some(depth);
        for (key, _, _) in self.peers() {
            self.send(
                key,
                overlay_message::Message::Depth(Depth {
                    depth: u32::from(depth),
                }),
            );
        }
    }

    fn check_handshake(&self, from: NodeKey, h: &Handshake) -> Result<VerifiedRecord, Refusal> {
        if h.version != PROTOCOL_VERSION {
            return Err(Refusal::Version {
                ours: PROTOCOL_VERSION,
                theirs: h.version,
            });
        }
        if h.network_id != self.config.network_id {
            return Err(Refusal::Network {
                ours: self.config.network_id,
                theirs: h.network_id,
            });
        }
        let wire = h
            .record
            .as_ref()
            .ok_or(Refusal::Malformed("handshake without record".into()))?;
        // A record byte for byte equal to one already verified needs no second recovery.
        let record = match self.table.identical_record(wire) {
            Some(known) => known.clone(),
            None => verify_record(wire, self.config.network_id).map_err(Refusal::Record)?,
        };
        if record.key != from {
            return Err(Refusal::KeyMismatch);
        }
        if record.overlay == self.own.overlay {
            return Err(Refusal::OwnOverlay);
        }
        Ok(record)
    }

    fn on_peers(
        &mut self,
        now: Instant,
        from: NodeKey,
        records: Vec<PeerRecord>,
    ) -> Result<(), Refusal> {
        if !self
            .conns
            .get(&from)
            .is_some_and(|c| matches!(c.state, ConnState::Ready { .. }))
        {
            // Each message travels on its own stream, so gossip may overtake the handshake:
            // drop it, the next refresh repeats it.
            return Ok(());
        }
        if records.len() > MAX_PEERS_PER_MESSAGE {
            return Err(Refusal::TooManyRecords(records.len()));
        }
        self.stats.records_received += records.len() as u64;
        let mut fresh = Vec::new();
        for wire in records {
            if self.table.has_record(&wire) {
                continue;
            }
            match verify_record(&wire, self.config.network_id) {
                Ok(r) if r.overlay == self.own.overlay => {}
                Ok(r) => fresh.push(r),
                Err(e) => return Err(Refusal::Record(e)),
            }
        }
        self.remember(now, fresh, false);
        Ok(())
    }

    /// Adds verified records to the table and asks for those that changed it to be persisted,
    /// in one batch.
    fn remember(&mut self, now: Instant, records: Vec<VerifiedRecord>, direct: bool) {
        let mut batch = WriteBatch::default();
        for record in records {
            let (key, value) = (record.overlay.0, record.wire.encode_to_vec());
            if let Added::Changed { evicted } = self.table.add_known(now, record, direct) {
                batch.put(self.keyspace, &key, &value);
                if let Some(evicted) = evicted {
                    batch.delete(self.keyspace, &evicted.0);
                }
            }
        }
        self.persist(batch);
    }

    fn forget(&mut self, overlay: &Address) {
        let mut batch = WriteBatch::default();
        batch.delete(self.keyspace, &overlay.0);
        self.persist(batch);
    }

    /// Hands `batch` to the runtime to write (see [`Output::Persist`]).
    fn persist(&mut self, batch: WriteBatch) {
        if !batch.is_empty() {
            self.stats.persists += 1;
            self.out.push_back(Output::Persist(batch));
        }
    }

    fn refuse(&mut self, now: Instant, peer: NodeKey, refusal: Refusal) {
        self.stats.refusals += 1;
        self.out.push_back(Output::Disconnect {
            peer,
            reason: DisconnectReason::Refused(refusal),
        });
        if let Some(conn) = self.conns.remove(&peer) {
            self.connection_ended(now, peer, &conn);
        }
    }

    fn connection_ended(&mut self, now: Instant, key: NodeKey, conn: &Conn) {
        let jitter = self.jitter();
        let forgotten = match conn.state {
            ConnState::Handshaking {
                dialled: Some(overlay),
                ..
            } => self
                .table
                .dial_failed(&overlay, now, jitter)
                .then_some(overlay),
            ConnState::Handshaking { dialled: None, .. } => None,
            ConnState::Ready { overlay, light } => {
                self.out
                    .push_back(Output::PeerDisconnected { key, overlay });
                (!light && self.table.disconnect(&overlay, now, jitter)).then_some(overlay)
            }
        };
        if let Some(overlay) = forgotten {
            self.forget(&overlay);
        }
    }

    fn expire(&mut self, now: Instant) {
        let late: Vec<NodeKey> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c.state, ConnState::Handshaking { deadline, .. } if deadline <= now))
            .map(|(k, _)| *k)
            .collect();
        for key in late {
            self.out.push_back(Output::Disconnect {
                peer: key,
                reason: DisconnectReason::HandshakeTimeout,
            });
            if let Some(conn) = self.conns.remove(&key) {
                self.connection_ended(now, key, &conn);
            }
        }
        let stuck: Vec<NodeKey> = self
            .dialing
            .iter()
            .filter(|(_, (_, since))| {
                now.saturating_duration_since(*since) >= self.config.dial_timeout
            })
            .map(|(k, _)| *k)
            .collect();
        for key in stuck {
            self.handle_dial_failed(now, key);
        }
    }

    fn flush_announcements(&mut self) {
        let pending: Vec<(NodeKey, Vec<PeerRecord>)> = self
            .conns
            .iter_mut()
            .filter(|(_, c)| !c.announce.is_empty())
            .map(|(k, c)| (*k, std::mem::take(&mut c.announce)))
            .collect();
        for (key, peers) in pending {
            self.stats.records_sent += peers.len() as u64;
            self.send(key, overlay_message::Message::Peers(Peers { peers }));
        }
    }

    fn gossip_to(&mut self, key: NodeKey, overlay: &Address) {
        let peers = self
            .table
            .records_for(overlay, 20, 2, MAX_PEERS_PER_MESSAGE);
        if !peers.is_empty() {
            self.stats.records_sent += peers.len() as u64;
            self.send(key, overlay_message::Message::Peers(Peers { peers }));
        }
    }

    fn refresh_gossip(&mut self) {
        let depth = self.table.depth();
        for (key, overlay, _) in self.peers() {
            self.gossip_to(key, &overlay);
            self.send(
                key,
                overlay_message::Message::Depth(Depth {
                    depth: u32::from(depth),
                }),
            );
        }
    }

    fn prune(&mut self, now: Instant) {
        for (overlay, key) in self.table.prune(now) {
            self.stats.pruned += 1;
            self.conns.remove(&key);
            self.table.disconnect_pruned(&overlay);
            self.out.push_back(Output::Disconnect {
                peer: key,
                reason: DisconnectReason::Pruned,
            });
            self.out
                .push_back(Output::PeerDisconnected { key, overlay });
        }
    }

    fn dial(&mut self, now: Instant) {
        let slots = self.config.max_dials.saturating_sub(self.dialing.len());
        if slots == 0 {
            return;
        }
        let busy = |k: &NodeKey| self.dialing.contains_key(k) || self.conns.contains_key(k);
        let suggestions = self.table.suggest(now, slots, busy);
        for s in suggestions {
            self.stats.dials += 1;
            self.dialing.insert(s.key, (s.overlay, now));
            self.out.push_back(Output::Dial {
                key: s.key,
                underlays: s.underlays,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Identity;
    use tributary_store::MemStore;

    fn core(config: OverlayConfig) -> Overlay {
        core_with_key(config, 1).0
    }

    fn core_with_key(config: OverlayConfig, secret: u8) -> (Overlay, NodeKey) {
        let id = Identity::from_secret(&[secret; 32], [0; 32]).expect("key");
        let record = id.sign_record(config.network_id, vec![], 1).expect("signs");
        let overlay =
            Overlay::new(Instant::now(), config, &record, &MemStore::new()).expect("starts");
        (overlay, id.node_key())
    }

    /// A's handshake to B after A dialled B, passed through `edit`; B's outputs.
    fn handshake_through(edit: impl FnOnce(&mut Handshake)) -> Vec<Output> {
        let now = Instant::now();
        let (mut a, ka) = core_with_key(OverlayConfig::default(), 1);
        let (mut b, kb) = core_with_key(OverlayConfig::default(), 2);
        a.handle_connected(now, kb, true);
        b.handle_connected(now, ka, false);
        let Some(Output::Send { message, .. }) = a.poll_output() else {
            panic!("the dialer sends its handshake first");
        };
        let Some(overlay_message::Message::Handshake(mut h)) = message.message else {
            panic!("not a handshake");
        };
        edit(&mut h);
        let bytes = OverlayMessage {
            message: Some(overlay_message::Message::Handshake(h)),
        }
        .encode_to_vec();
        b.handle_message(now, ka, &bytes);
        std::iter::from_fn(|| b.poll_output()).collect()
    }

    fn refusal(outputs: &[Output]) -> Option<&Refusal> {
        outputs.iter().find_map(|o| match o {
            Output::Disconnect {
                reason: DisconnectReason::Refused(r),
                ..
            } => Some(r),
            _ => None,
        })
    }

    #[test]
    fn a_valid_handshake_connects_and_is_answered() {
        let outputs = handshake_through(|_| {});
        assert!(refusal(&outputs).is_none(), "{outputs:?}");
        assert!(
            outputs
                .iter()
                .any(|o| matches!(o, Output::PeerConnected { light: false, .. }))
        );
        assert!(outputs.iter().any(|o| matches!(
            o,
            Output::Send {
                message: OverlayMessage {
                    message: Some(overlay_message::Message::Handshake(_))
                },
                ..
            }
        )));
        // The peer's record is handed out to persist, not written by the core; a core loaded
        // from a store holding that batch knows the peer.
        let batch = outputs
            .iter()
            .find_map(|o| match o {
                Output::Persist(batch) => Some(batch.clone()),
                _ => None,
            })
            .expect("the new peer's record is to be persisted");
        let store = MemStore::new();
        store.keyspace(PEERS_KEYSPACE).expect("keyspace");
        store.write(batch).expect("write");
        let id = Identity::from_secret(&[2; 32], [0; 32]).expect("key");
        let record = id.sign_record(1, vec![], 1).expect("signs");
        let b = Overlay::new(Instant::now(), OverlayConfig::default(), &record, &store)
            .expect("restarts");
        assert_eq!(b.table.known_len(), 1, "the persisted peer is loaded");
    }

    #[test]
    fn handshakes_of_another_version_network_or_key_are_refused() {
        let version = handshake_through(|h| h.version = 2);
        assert_eq!(
            refusal(&version),
            Some(&Refusal::Version { ours: 1, theirs: 2 })
        );
        let network = handshake_through(|h| h.network_id = 5);
        assert_eq!(
            refusal(&network),
            Some(&Refusal::Network { ours: 1, theirs: 5 })
        );
        let forged = handshake_through(|h| {
            if let Some(r) = h.record.as_mut() {
                r.signature[3] ^= 1;
            }
        });
        assert!(
            matches!(
                refusal(&forged),
                Some(Refusal::Record(_) | Refusal::KeyMismatch)
            ),
            "{forged:?}"
        );
        let stolen = handshake_through(|h| {
            // A record genuinely signed, by another key than the connection's.
            let other = Identity::from_secret(&[9; 32], [0; 32]).expect("key");
            h.record = Some(other.sign_record(1, vec![], 1).expect("signs"));
        });
        assert_eq!(refusal(&stolen), Some(&Refusal::KeyMismatch));
        for outputs in [&version, &network, &forged, &stolen] {
            assert!(
                !outputs
                    .iter()
                    .any(|o| matches!(o, Output::PeerConnected { .. }))
            );
        }
    }

    #[test]
    fn connections_beyond_the_limit_are_closed_at_once() {
        let mut overlay = core(OverlayConfig {
            max_connections: 1,
            ..OverlayConfig::default()
        });
        let now = Instant::now();
        let (a, b) = (NodeKey([2; 33]), NodeKey([3; 33]));
        overlay.handle_connected(now, a, false);
        assert_eq!(overlay.poll_output(), None);
        overlay.handle_connected(now, b, false);
        assert_eq!(
            overlay.poll_output(),
            Some(Output::Disconnect {
                peer: b,
                reason: DisconnectReason::Full
            })
        );
    }

    #[test]
    fn silent_inbound_connections_cannot_fill_the_connection_limit() {
        let mut overlay = core(OverlayConfig {
            max_inbound_handshakes: 2,
            ..OverlayConfig::default()
        });
        let now = Instant::now();
        let silent = [NodeKey([2; 33]), NodeKey([3; 33])];
        for key in silent {
            overlay.handle_connected(now, key, false);
        }
        while let Some(out) = overlay.poll_output() {
            assert!(!matches!(out, Output::Disconnect { .. }), "{out:?}");
        }
        let third = NodeKey([4; 33]);
        overlay.handle_connected(now, third, false);
        assert_eq!(
            overlay.poll_output(),
            Some(Output::Disconnect {
                peer: third,
                reason: DisconnectReason::TooManyHandshakes
            })
        );
        // Our own dials are not held back by strangers' silence.
        overlay.handle_connected(now, NodeKey([5; 33]), true);
        while let Some(out) = overlay.poll_output() {
            assert!(!matches!(out, Output::Disconnect { .. }), "{out:?}");
        }
        // A slot frees when a silent connection goes.
        overlay.handle_disconnected(now, silent[0]);
        overlay.handle_connected(now, third, false);
        while let Some(out) = overlay.poll_output() {
            assert!(!matches!(out, Output::Disconnect { .. }), "{out:?}");
        }
    }

    #[test]
    fn a_silent_connection_is_closed_after_the_handshake_timeout() {
        let config = OverlayConfig::default();
        let timeout = config.handshake_timeout;
        let mut overlay = core(config);
        let now = Instant::now();
        let peer = NodeKey([2; 33]);
        overlay.handle_connected(now, peer, false);
        overlay.handle_timeout(now);
        while overlay.poll_output().is_some() {}
        overlay.handle_timeout(now + timeout + Duration::from_secs(1));
        let outputs: Vec<Output> = std::iter::from_fn(|| overlay.poll_output()).collect();
        assert!(
            outputs.contains(&Output::Disconnect {
                peer,
                reason: DisconnectReason::HandshakeTimeout
            }),
            "{outputs:?}"
        );
    }
}
