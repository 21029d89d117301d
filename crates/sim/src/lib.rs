//! The deterministic simulator: many nodes' protocol cores in one process on a virtual clock.
//!
//! Every link has a latency drawn from a range, every message may be lost, nodes can be
//! partitioned into groups that cannot reach each other, and a node can crash (its core is
//! dropped, its store kept) and restart from what it persisted. All randomness comes from one
//! seed, so the same seed gives the same run; tests print the seed they use
//! (`TRIBUTARY_SEED` overrides it).
//!
//! Every node runs the overlay core ([`tributary_overlay::Overlay`]) and, beside it, the
//! pull-sync core ([`tributary_stream::pull::PullSync`]), the retrieval core
//! ([`tributary_stream::retrieval::Retrieval`]) and the push-sync core
//! ([`tributary_stream::push::PushSync`]) over a chunk store on the node's in-memory store,
//! told of the overlay's peers and depth as the runtime tells them (see [`pull`],
//! [`retrieval`] and [`push`]); with [`SimConfig::replica`] set, it also runs the replica
//! layer (engine and round scheduler) on the same store and connections (`sim_replica`), and
//! with [`SimConfig::state`] a state database it serves x/sync from, with the x/sync client
//! run against a node's peers on demand (`sim_state`): the whole node the runtime runs. The
//! transport is the network every simulator of this crate
//! runs on (`net`: links, latency, loss, partitions, crashes, one seeded random stream and one
//! event loop; the state-sync simulator [`statesync`] and the replica simulator [`replica`]
//! run on it too), used connection-oriented as libp2p is: a dial either opens a connection,
//! seen by both ends at once, or fails after a delay; a closed connection is seen by both ends
//! at once; messages on a connection arrive in order or not at all, and none survive the
//! connection.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use rand::Rng;
use tributary_chunk::Address;
use tributary_overlay::{Health, Identity, NodeKey, Output, Overlay, OverlayConfig, OverlayError};
use tributary_store::{KvStore, MemStore};
use tributary_stream::pull::PullConfig;
use tributary_stream::push::PushConfig;
use tributary_stream::retrieval::RetrievalConfig;
use tributary_wire::overlay::PeerRecord;

use crate::net::{Check, LinkConfig, Net, NetStats, Protocol};
pub use crate::replicas::{ReplicaLayerConfig, ReplicaStats};
pub use crate::sim_state::{StateConfig, StateStats};

pub mod fuzzing;
mod net;
pub mod pull;
pub mod push;
mod queue;
pub mod replica;
mod replicas;
pub mod retrieval;
mod sim_replica;
mod sim_state;
pub mod statesync;

/// Errors of a simulation: a core could not start, or a node's store failed.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The overlay core.
    #[error(transparent)]
    Overlay(#[from] OverlayError),
    /// A node's store.
    #[error(transparent)]
    Store(#[from] tributary_store::StoreError),
    /// A node's chunk store.
    #[error(transparent)]
    Chunks(#[from] tributary_chunk::store::ChunkStoreError),
    /// A node's replica engine.
    #[error(transparent)]
    Replica(#[from] tributary_replica::ReplicaError),
    /// A node's state-sync client or state database.
    #[error(transparent)]
    State(#[from] tributary_statesync::client::ClientError),
}

/// How often an isolated node dials its bootnode again (the node runtime does the same).
pub const BOOTSTRAP_RETRY: Duration = Duration::from_secs(5);

/// Unix time the virtual clock starts at (for record timestamps).
const EPOCH_SECS: u64 = 1_700_000_000;

/// Parameters of a simulation.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The seed of everything random.
    pub seed: u64,
    /// Shortest one-way latency.
    pub latency_min: Duration,
    /// Longest one-way latency.
    pub latency_max: Duration,
    /// Probability that a message is lost.
    pub loss: f64,
    /// How long a dial to a dead or unreachable node takes to fail.
    pub dial_failure: Duration,
    /// The overlay configuration of every node (its seed is replaced per node).
    pub overlay: OverlayConfig,
    /// The pull-sync configuration of every node (`light` is the node's).
    pub pull: PullConfig,
    /// Whether nodes pull-sync (off: chunks stay where they are put, for retrieval tests).
    pub pull_sync: bool,
    /// The retrieval configuration of every node.
    pub retrieval: RetrievalConfig,
    /// The push-sync configuration of every node.
    pub push: PushConfig,
    /// If set, every node also runs the replica layer (engine and round scheduler) on its
    /// store, over the overlay's connections (see `sim_replica`).
    pub replica: Option<ReplicaLayerConfig>,
    /// If set, every node also keeps a state database and serves state sync from it, and a
    /// node can run the state-sync client against its peers (see `sim_state`).
    pub state: Option<StateConfig>,
}

impl SimConfig {
    /// Defaults with the given seed: 5–50 ms latency, no loss, dials fail after 2 s.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            latency_min: Duration::from_millis(5),
            latency_max: Duration::from_millis(50),
            loss: 0.0,
            dial_failure: Duration::from_secs(2),
            overlay: OverlayConfig::default(),
            pull: PullConfig::default(),
            pull_sync: true,
            retrieval: RetrievalConfig::default(),
            push: PushConfig::default(),
            replica: None,
            state: None,
        }
    }
}

/// The simulator's own events, beside the messages the network carries.
#[derive(Clone, Copy, Debug)]
enum Event {
    /// A dial from `from` reaches `to` (or finds it down or partitioned away). `life` is
    /// the start of `from` that dialled: a dial of an earlier life is void.
    Connect {
        from: usize,
        to: usize,
        life: u64,
    },
    /// A replica member dial: as `Connect`, but a failure is not the overlay's (the runtime
    /// does not tell the overlay of it either).
    MemberDial {
        from: usize,
        to: usize,
        life: u64,
    },
    DialFailed {
        from: usize,
        key: NodeKey,
        life: u64,
    },
    Timer {
        node: usize,
        at: Instant,
    },
    /// A deadline of node `node`'s replica layer.
    Replica {
        node: usize,
        timer: replicas::Timer,
    },
    /// A state-sync request's time is up (`life`: the client run that sent it).
    StateTimeout {
        life: u64,
        id: u64,
    },
    /// The state-sync client's wake-up.
    StateWake,
}

/// What a message on a link carries: an overlay message, or a pull-sync or retrieval request
/// or answer.
#[derive(Debug)]
enum Frame {
    Overlay(Vec<u8>),
    PullRequest { id: u64, bytes: Vec<u8> },
    PullResponse { id: u64, bytes: Vec<u8> },
    RetrievalRequest { id: u64, bytes: Vec<u8> },
    RetrievalResponse { id: u64, bytes: Vec<u8> },
    PushRequest { id: u64, bytes: Vec<u8> },
    PushResponse { id: u64, bytes: Vec<u8> },
    Replica(replicas::Message),
    StateRequest { life: u64, id: u64, bytes: Vec<u8> },
    StateResponse { life: u64, id: u64, bytes: Vec<u8> },
}

struct SimNode {
    identity: Identity,
    store: Arc<MemStore>,
    core: Option<Overlay>,
    pull: Option<pull::PullNode>,
    timer: Option<Instant>,
    starts: u64,
    light: bool,
    bootnode: Option<usize>,
    next_bootstrap: Option<Instant>,
}

/// Counters of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SimStats {
    /// Messages sent.
    pub sent: u64,
    /// Messages lost (dropped by the loss rate, or cut by a closed link).
    pub lost: u64,
    /// Messages delivered.
    pub delivered: u64,
    /// Handshakes completed, counted at both ends.
    pub handshakes: u64,
    /// Connections closed by a core (refusals, timeouts, pruning).
    pub disconnects: u64,
    /// Dials that failed.
    pub dial_failures: u64,
}

/// A simulated network of overlay nodes.
pub struct Sim {
    config: SimConfig,
    net: Net<Frame, Event>,
    nodes: Vec<SimNode>,
    by_key: HashMap<NodeKey, usize>,
    stats: SimStats,
    ledger: pull::PullLedger,
    retrievals: retrieval::RetrievalLedger,
    pushes: push::PushLedger,
    replicas: Option<replicas::Replicas>,
    state: Option<sim_state::StateLayer>,
}

impl Sim {
    /// An empty network.
    #[must_use]
    pub fn new(config: SimConfig) -> Self {
        let links = LinkConfig {
            latency_min: config.latency_min,
            latency_max: config.latency_max,
            loss: config.loss,
        };
        let replicas = config
            .replica
            .clone()
            .map(|c| replicas::Replicas::new(c, config.seed));
        let state = config.state.clone().map(sim_state::StateLayer::new);
        Self {
            net: Net::new(config.seed, links),
            config,
            nodes: Vec::new(),
            by_key: HashMap::new(),
            stats: SimStats::default(),
            ledger: pull::PullLedger::default(),
            retrievals: retrieval::RetrievalLedger::default(),
            pushes: push::PushLedger::default(),
            replicas,
            state,
        }
    }

    /// Virtual time since the start.
    #[must_use]
    pub fn elapsed(&self) -> Duration {
        self.net.elapsed()
    }

    /// Counters so far.
    #[must_use]
    pub fn stats(&self) -> SimStats {
        let NetStats {
            sent,
            lost,
            delivered,
        } = self.net.stats();
        SimStats {
            sent,
            lost,
            delivered,
            ..self.stats
        }
    }

    /// Number of nodes, dead or alive.
    #[must_use]
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no nodes.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The core of node `i`, if it is running.
    #[must_use]
    pub fn node(&self, i: usize) -> Option<&Overlay> {
        self.nodes.get(i).and_then(|n| n.core.as_ref())
    }

    /// Adds and starts a node with a fresh key; returns its index.
    ///
    /// # Errors
    /// When its core cannot start.
    pub fn add_node(&mut self, light: bool) -> Result<usize, SimError> {
        let identity = loop {
            let secret: [u8; 32] = self.net.rng().random();
            let nonce = self.net.rng().random();
            if let Ok(id) = Identity::from_secret(&secret, nonce) {
                break id;
            }
        };
        let index = self.net.add_node();
        self.by_key.insert(identity.node_key(), index);
        self.nodes.push(SimNode {
            identity,
            store: Arc::new(MemStore::new()),
            core: None,
            pull: None,
            timer: None,
            starts: 0,
            light,
            bootnode: None,
            next_bootstrap: None,
        });
        self.replica_add(index)?;
        self.start_node(index)?;
        Ok(index)
    }

    fn start_node(&mut self, i: usize) -> Result<(), SimError> {
        let mut config = self.config.overlay.clone();
        let elapsed = self.elapsed().as_secs();
        let node = &mut self.nodes[i];
        node.starts += 1;
        config.seed = self.config.seed ^ ((i as u64) << 20) ^ node.starts;
        config.light = node.light;
        let timestamp = EPOCH_SECS + elapsed + node.starts;
        let underlay = format!("sim/{i}").into_bytes();
        let record = node
            .identity
            .sign_record(config.network_id, vec![underlay], timestamp)
            .map_err(OverlayError::OwnRecord)?;
        let now = self.net.now();
        node.core = Some(Overlay::new(now, config, &record, node.store.as_ref())?);
        node.timer = None;
        let overlay = node.identity.overlay(self.config.overlay.network_id);
        node.pull = Some(pull::PullNode::start(
            &node.store,
            overlay,
            node.light,
            &self.config,
        )?);
        self.push(
            self.net.now(),
            Event::Timer {
                node: i,
                at: self.net.now(),
            },
        );
        self.nodes[i].timer = Some(self.net.now());
        let restarted = self.nodes[i].starts > 1;
        self.state_start(i)?;
        self.replica_start(i, restarted)
    }

    /// Makes node `to` the bootnode of node `from` and dials it, as the runtime does: out of
    /// band (the core does not know the bootnode's key), and again every
    /// [`BOOTSTRAP_RETRY`] while the node is isolated.
    pub fn bootstrap(&mut self, from: usize, to: usize) {
        self.nodes[from].bootnode = Some(to);
        self.dial_bootnode(from);
    }

    fn dial_bootnode(&mut self, from: usize) {
        let Some(to) = self.nodes[from].bootnode else {
            return;
        };
        self.nodes[from].next_bootstrap = Some(self.net.now() + BOOTSTRAP_RETRY);
        let at = self.net.now() + self.net.latency();
        let life = self.nodes[from].starts;
        self.push(at, Event::Connect { from, to, life });
    }

    /// Crashes node `i`: its core is dropped, its connections close, its store survives.
    pub fn crash(&mut self, i: usize) -> Result<(), SimError> {
        self.nodes[i].core = None;
        self.nodes[i].pull = None;
        self.nodes[i].timer = None;
        self.replica_crash(i);
        self.state_crash(i);
        for peer in self.net.crash(i) {
            self.closed(i, peer)?;
        }
        Ok(())
    }

    /// Restarts a crashed node from its store, without a bootnode.
    ///
    /// # Errors
    /// When its core cannot start.
    pub fn restart(&mut self, i: usize) -> Result<(), SimError> {
        self.nodes[i].bootnode = None;
        if self.nodes[i].core.is_none() {
            self.net.restart(i);
            self.start_node(i)?;
        }
        Ok(())
    }

    /// Splits the network: node `i` goes to group `groups[i]`; links across groups close and
    /// nothing crosses them until [`Sim::heal`].
    pub fn partition(&mut self, groups: &[u32]) -> Result<(), SimError> {
        for (a, b) in self.net.partition(groups) {
            self.closed(a, b)?;
        }
        Ok(())
    }

    /// Sets the probability that a message is lost from now on.
    pub fn set_loss(&mut self, loss: f64) {
        self.net.set_loss(loss);
    }

    /// Ends a partition.
    pub fn heal(&mut self) {
        self.net.heal();
    }

    /// The overlays of every running full node.
    #[must_use]
    pub fn live_overlays(&self) -> Vec<Address> {
        self.nodes
            .iter()
            .filter(|n| !n.light)
            .filter_map(|n| n.core.as_ref().map(Overlay::overlay))
            .collect()
    }

    /// Each running full node's health against the god's-eye view of the running full nodes.
    #[must_use]
    pub fn health(&self) -> Vec<(usize, Health)> {
        let all = self.live_overlays();
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| !n.light)
            .filter_map(|(i, n)| n.core.as_ref().map(|c| (i, c.table().health(&all))))
            .collect()
    }

    /// Whether every running full node is healthy.
    #[must_use]
    pub fn all_healthy(&self) -> bool {
        self.health().iter().all(|(_, h)| h.is_healthy())
    }

    /// Runs until virtual time `limit` has passed since the start, or until `done` holds
    /// (checked every virtual second). Returns whether `done` held.
    ///
    /// # Errors
    /// When a core's store fails.
    pub fn run_until(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&Self) -> bool,
    ) -> Result<bool, SimError> {
        let end = self.net.at(limit);
        net::run(self, end, Check::Every(Duration::from_secs(1)), |sim| {
            Ok(done(sim))
        })
    }

    /// Runs for `span` of virtual time.
    ///
    /// # Errors
    /// When a core's store fails.
    pub fn run_for(&mut self, span: Duration) -> Result<(), SimError> {
        let limit = self.elapsed() + span;
        self.run_until(limit, |_| false).map(|_| ())
    }

    fn push(&mut self, at: Instant, event: Event) {
        self.net.schedule(at, event);
    }

    fn on_event(&mut self, event: Event) -> Result<(), SimError> {
        let now = self.net.now();
        match event {
            Event::Connect { from, life, .. }
            | Event::MemberDial { from, life, .. }
            | Event::DialFailed { from, life, .. }
                if life != self.nodes[from].starts => {}
            Event::Connect { from, to, .. } => self.on_connect(from, to, true)?,
            Event::MemberDial { from, to, .. } => self.on_connect(from, to, false)?,
            Event::DialFailed { from, key, .. } => {
                self.stats.dial_failures += 1;
                if let Some(core) = self.nodes[from].core.as_mut() {
                    core.handle_dial_failed(now, key);
                }
                self.drain(from)?;
            }
            Event::Timer { node, at } => {
                if self.nodes[node].timer != Some(at) {
                    return Ok(());
                }
                self.nodes[node].timer = None;
                let due = self.nodes[node].next_bootstrap.is_some_and(|t| t <= now);
                if let Some(core) = self.nodes[node].core.as_mut() {
                    core.handle_timeout(now);
                    if due && core.is_isolated() {
                        self.dial_bootnode(node);
                    }
                }
                self.pull_timeout(node);
                self.dial_members(node);
                self.drain(node)?;
            }
            Event::Replica { node, timer } => self.replica_timer(node, timer)?,
            Event::StateTimeout { life, id } => self.on_state_timer(Some((life, id))),
            Event::StateWake => self.on_state_timer(None),
        }
        Ok(())
    }

    fn on_frame(&mut self, from: usize, to: usize, frame: Frame) -> Result<(), SimError> {
        let now = self.net.now();
        match frame {
            Frame::Overlay(bytes) => {
                let key = self.nodes[from].identity.node_key();
                if let Some(core) = self.nodes[to].core.as_mut() {
                    core.handle_message(now, key, &bytes);
                }
            }
            Frame::PullRequest { id, bytes } => self.serve_pull(to, from, id, &bytes),
            Frame::PullResponse { id, bytes } => {
                if let Some(p) = self.nodes[to].pull.as_mut() {
                    p.core.handle_response(now, id, &bytes, p.chunks.as_ref());
                }
            }
            Frame::RetrievalRequest { id, bytes } => {
                self.serve_retrieval(to, from, id, &bytes);
            }
            Frame::RetrievalResponse { id, bytes } => {
                self.on_retrieval_response(to, id, &bytes);
            }
            Frame::PushRequest { id, bytes } => self.serve_push(to, from, id, &bytes),
            Frame::PushResponse { id, bytes } => self.on_push_response(to, id, &bytes),
            Frame::Replica(msg) => self.replica_message(from, to, msg)?,
            Frame::StateRequest { life, id, bytes } => {
                self.serve_state(to, from, (life, id), &bytes);
            }
            Frame::StateResponse { life, id, bytes } => {
                self.on_state_response(to, (life, id), &bytes)?;
            }
        }
        self.drain(to)
    }

    /// A dial from `from` reaches `to`; a failure is reported to `from`'s overlay if
    /// `overlay_dial`.
    fn on_connect(&mut self, from: usize, to: usize, overlay_dial: bool) -> Result<(), SimError> {
        if !self.net.is_up(from) {
            return Ok(());
        }
        match self.net.connect(from, to) {
            None if !overlay_dial => return Ok(()),
            None => {
                let key = self.nodes[to].identity.node_key();
                let at = self.net.now() + self.config.dial_failure;
                let life = self.nodes[from].starts;
                self.push(at, Event::DialFailed { from, key, life });
                return Ok(());
            }
            Some(false) => return Ok(()),
            Some(true) => {}
        }
        let now = self.net.now();
        let (from_key, to_key) = (
            self.nodes[from].identity.node_key(),
            self.nodes[to].identity.node_key(),
        );
        if let Some(core) = self.nodes[from].core.as_mut() {
            core.handle_connected(now, to_key, true);
        }
        if let Some(core) = self.nodes[to].core.as_mut() {
            core.handle_connected(now, from_key, false);
        }
        self.drain(from)?;
        self.drain(to)
    }

    /// Closes the link between `a` and `b`, telling both running ends.
    fn close(&mut self, a: usize, b: usize) -> Result<(), SimError> {
        if self.net.close(a, b) {
            self.closed(a, b)?;
        }
        Ok(())
    }

    /// Tells both running ends of the link between `a` and `b` that it closed.
    fn closed(&mut self, a: usize, b: usize) -> Result<(), SimError> {
        let now = self.net.now();
        for (me, other) in [(a, b), (b, a)] {
            let key = self.nodes[other].identity.node_key();
            if let Some(core) = self.nodes[me].core.as_mut() {
                core.handle_disconnected(now, key);
            }
        }
        self.drain(a)?;
        self.drain(b)
    }

    /// Carries out what node `i`'s cores asked for and re-arms its timer.
    fn drain(&mut self, i: usize) -> Result<(), SimError> {
        while let Some(output) = self.nodes[i].core.as_mut().and_then(Overlay::poll_output) {
            self.carry_out(i, output)?;
        }
        self.drain_pull(i)?;
        self.drain_retrieval(i)?;
        self.drain_push(i)?;
        let wake = [
            self.nodes[i].core.as_ref().and_then(Overlay::poll_timeout),
            self.nodes[i]
                .pull
                .as_ref()
                .and_then(pull::PullNode::poll_timeout),
        ]
        .into_iter()
        .flatten()
        .min();
        if let Some(at) = wake
            && self.nodes[i].timer.is_none_or(|t| at < t)
        {
            self.nodes[i].timer = Some(at);
            self.push(at.max(self.net.now()), Event::Timer { node: i, at });
        }
        Ok(())
    }

    fn carry_out(&mut self, i: usize, output: Output) -> Result<(), SimError> {
        match output {
            Output::Dial { key, .. } => {
                let life = self.nodes[i].starts;
                let Some(&to) = self.by_key.get(&key) else {
                    let at = self.net.now() + self.config.dial_failure;
                    self.push(at, Event::DialFailed { from: i, key, life });
                    return Ok(());
                };
                let at = self.net.now() + self.net.latency();
                self.push(at, Event::Connect { from: i, to, life });
            }
            Output::Send { to, message } => {
                let Some(&to) = self.by_key.get(&to) else {
                    return Ok(());
                };
                self.send(i, to, Frame::Overlay(message.encode_to_vec()));
            }
            Output::Disconnect { peer, .. } => {
                self.stats.disconnects += 1;
                if let Some(&other) = self.by_key.get(&peer) {
                    self.close(i, other)?;
                }
            }
            Output::PeerConnected {
                key,
                overlay,
                light,
            } => {
                self.stats.handshakes += 1;
                self.replica_peer(i, &key, true)?;
                let now = self.net.now();
                let pull_sync = self.config.pull_sync;
                if let Some(p) = self.nodes[i].pull.as_mut() {
                    if pull_sync {
                        p.core.handle_connected(now, overlay, light);
                    }
                    p.fetch.handle_connected(overlay, light);
                    p.push.handle_connected(overlay, light);
                }
            }
            Output::PeerDisconnected { key, overlay } => {
                self.replica_peer(i, &key, false)?;
                let now = self.net.now();
                if let Some(p) = self.nodes[i].pull.as_mut() {
                    p.disconnected(now, overlay);
                }
            }
            // Written at once: the simulated store is as durable as the moment it is told.
            Output::Persist(batch) => self.nodes[i].store.write(batch)?,
        }
        Ok(())
    }

    fn send(&mut self, from: usize, to: usize, frame: Frame) {
        self.net.send(from, to, frame);
    }

    /// Sends raw bytes from node `from` to node `to` on their connection, as a misbehaving
    /// peer would (for refusal tests).
    pub fn inject(&mut self, from: usize, to: usize, bytes: Vec<u8>) {
        self.send(from, to, Frame::Overlay(bytes));
    }

    /// Whether nodes `a` and `b` have a connection.
    #[must_use]
    pub fn linked(&self, a: usize, b: usize) -> bool {
        self.net.linked(a, b)
    }

    /// A record signed by node `i`'s key (for tests that forge or replay records).
    ///
    /// # Errors
    /// When the record cannot be signed.
    pub fn sign_record(
        &self,
        i: usize,
        network_id: u64,
        underlays: Vec<Vec<u8>>,
    ) -> Result<PeerRecord, tributary_overlay::RecordError> {
        self.nodes[i]
            .identity
            .sign_record(network_id, underlays, EPOCH_SECS)
    }
}

impl Protocol for Sim {
    type Message = Frame;
    type Local = Event;
    type Error = SimError;

    fn net(&mut self) -> &mut Net<Frame, Event> {
        &mut self.net
    }

    fn on_message(&mut self, from: usize, to: usize, frame: Frame) -> Result<(), SimError> {
        self.on_frame(from, to, frame)
    }

    fn on_local(&mut self, event: Event) -> Result<(), SimError> {
        self.on_event(event)
    }
}

/// The seed for a test: `TRIBUTARY_SEED` if set, else `default`; printed so a failure shows it.
#[must_use]
pub fn seed(default: u64) -> u64 {
    let seed = std::env::var("TRIBUTARY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    println!("seed = {seed} (set TRIBUTARY_SEED to replay)");
    seed
}
