//! Replicated databases in the simulator: every node runs the replica layer
//! (`replicas`: the engine over its own in-memory store and the node's own round
//! scheduler, [`tributary_replica::schedule::Scheduler`], the code the node runtime runs:
//! rounds at its interval with a member picked at random, news to the members after a local
//! write and an early round at the receiver, back-off of members whose answers fail or lie),
//! on the network every simulator runs on (`net`), with its own wall-clock skew.
//!
//! Every other node counts as connected to the scheduler, and the network opens a link on
//! the first message to a reachable member, as the node dials a member it asks; what a
//! partition or a crashed node drops shows up as a timeout. The initiator applies every
//! frame that arrives in one store write, exactly as the node does. A crash drops the engine
//! and the scheduler and keeps the store; the restarted engine reopens from it. (The
//! whole-node simulator, [`crate::Sim`] with [`crate::SimConfig::replica`] set, runs the same
//! layer beside the overlay, connected only where the overlay connects.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use tributary_overlay::Identity;
use tributary_replica::schedule::ScheduleConfig;
use tributary_replica::syncgroup::Spec;
use tributary_replica::{NodeId, Op, Replica, ReplicaConfig, ReplicaError};
use tributary_store::MemStore;

use crate::net::{self, Check, LinkConfig, Net, Protocol};
pub use crate::replicas::ReplicaStats;
use crate::replicas::{Message, ReplicaLayerConfig, Replicas, Timer, Transport};

/// A collection's rows as a node reads them: key and value (`None`: deleted).
pub type Rows = Vec<(String, Option<Vec<u8>>)>;

/// The database every simulated node uses.
pub const DB: &str = "sim";

/// A syncgroup of the scenario: who is in it, sharing which collection.
#[derive(Clone, Debug)]
pub struct GroupPlan {
    /// Member indices; the first is the admin.
    pub members: Vec<usize>,
    /// The collection it shares.
    pub collection: String,
}

/// Parameters of a replica simulation.
#[derive(Clone, Debug)]
pub struct ReplicaSimConfig {
    /// The seed of everything random.
    pub seed: u64,
    /// Nodes.
    pub nodes: usize,
    /// The syncgroups.
    pub groups: Vec<GroupPlan>,
    /// Shortest one-way latency.
    pub latency_min: Duration,
    /// Longest one-way latency.
    pub latency_max: Duration,
    /// Probability that a message is lost.
    pub loss: f64,
    /// Each node's round interval (its scheduler adds ±25%).
    pub sync_every: Duration,
    /// How long an ask or a news waits for its answer.
    pub ask_timeout: Duration,
    /// Pruning by common knowledge on every node.
    pub prune: bool,
    /// Frame size target (small, so answers take several frames).
    pub frame_bytes: usize,
}

impl Default for ReplicaSimConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            nodes: 10,
            groups: Vec::new(),
            latency_min: Duration::from_millis(5),
            latency_max: Duration::from_millis(50),
            loss: 0.0,
            sync_every: Duration::from_secs(2),
            ask_timeout: Duration::from_secs(5),
            prune: true,
            frame_bytes: 2048,
        }
    }
}

/// The simulation.
pub struct ReplicaSim {
    config: ReplicaSimConfig,
    net: Net<Message, (usize, Timer)>,
    layer: Replicas,
}

/// Messages dial on demand: every node counts every other as connected.
impl Transport for Net<Message, (usize, Timer)> {
    fn now(&self) -> Instant {
        Net::now(self)
    }

    fn elapsed(&self) -> Duration {
        Net::elapsed(self)
    }

    fn send(&mut self, from: usize, to: usize, msg: Message) -> bool {
        self.send_dialing(from, to, msg)
    }

    fn timer(&mut self, at: Instant, node: usize, timer: Timer) {
        self.schedule(at, (node, timer));
    }
}

fn layer_config(config: &ReplicaSimConfig) -> ReplicaLayerConfig {
    ReplicaLayerConfig {
        schedule: ScheduleConfig {
            interval: config.sync_every,
            ..ScheduleConfig::default()
        },
        engine: ReplicaConfig {
            prune: config.prune,
            frame_bytes: config.frame_bytes,
            ..ReplicaConfig::default()
        },
        ask_timeout: config.ask_timeout,
    }
}

impl ReplicaSim {
    /// Builds the nodes and their syncgroups (joins done out of band, through the admin).
    ///
    /// # Errors
    /// When an engine cannot open or a syncgroup cannot be set up.
    pub fn new(config: ReplicaSimConfig) -> Result<Self, ReplicaError> {
        let links = LinkConfig {
            latency_min: config.latency_min,
            latency_max: config.latency_max,
            loss: config.loss,
        };
        let mut net = Net::new(config.seed, links);
        let mut layer = Replicas::new(layer_config(&config), config.seed);
        for _ in 0..config.nodes {
            net.add_node();
            let mut secret = [0u8; 32];
            net.rng().fill(&mut secret[..]);
            secret[0] = secret[0].max(1) & 0x7f;
            let identity =
                Identity::from_secret(&secret, [0; 32]).map_err(|_| ReplicaError::Signing)?;
            layer.add(Arc::new(MemStore::new()), identity)?;
        }
        let mut sim = Self { net, layer, config };
        sim.setup_groups()?;
        for i in 0..sim.config.nodes {
            sim.start_scheduler(i)?;
        }
        Ok(sim)
    }

    /// Node `i`'s scheduler starts afresh: every other node connected.
    fn start_scheduler(&mut self, i: usize) -> Result<(), ReplicaError> {
        let others: Vec<NodeId> = (0..self.config.nodes)
            .filter(|&n| n != i)
            .map(|n| self.id(n))
            .collect();
        self.layer.start(i, &others, &mut self.net)
    }

    fn setup_groups(&mut self) -> Result<(), ReplicaError> {
        for (g, plan) in self.config.groups.clone().iter().enumerate() {
            let ids: Vec<NodeId> = plan.members.iter().map(|&m| self.id(m)).collect();
            let spec = Spec {
                name: format!("sg{g}"),
                description: String::new(),
                collections: vec![plan.collection.clone()],
                readers: Vec::new(),
                writers: ids.clone(),
                admins: vec![ids[0]],
            };
            let now = self.now_ms(plan.members[0]);
            self.engine(plan.members[0])
                .create_syncgroup(now, DB, spec)?;
            for &m in &plan.members[1..] {
                let joiner = self.id(m);
                let now = self.now_ms(plan.members[0]);
                let grant =
                    self.engine(plan.members[0])
                        .admin_join(now, DB, &format!("sg{g}"), joiner)?;
                self.engine(m).accept_join(&grant)?;
            }
        }
        Ok(())
    }

    /// The node id of node `i`.
    #[must_use]
    pub fn id(&self, i: usize) -> NodeId {
        self.layer.id(i)
    }

    /// Node `i`'s engine.
    ///
    /// # Panics
    /// If the node is down (a scenario bug).
    pub fn engine(&mut self, i: usize) -> &mut Replica {
        self.layer.engine_mut(i).expect("the node is up")
    }

    /// Whether node `i` is up.
    #[must_use]
    pub fn is_up(&self, i: usize) -> bool {
        self.layer.engine(i).is_some()
    }

    /// Node `i`'s wall clock, in ms (virtual time plus its skew).
    #[must_use]
    pub fn now_ms(&self, i: usize) -> u64 {
        self.layer.now_ms(i, self.net.elapsed())
    }

    /// Sets node `i`'s clock skew.
    pub fn set_skew(&mut self, i: usize, skew_ms: i64) {
        self.layer.set_skew(i, skew_ms);
    }

    /// Makes node `i` alter the records it sends.
    pub fn set_liar(&mut self, i: usize) {
        self.layer.set_liar(i);
    }

    /// Puts each node in partition `groups[i]`; messages cross no partition.
    pub fn partition(&mut self, groups: &[u32]) {
        self.net.partition(groups);
    }

    /// Heals every partition.
    pub fn heal(&mut self) {
        self.net.heal();
    }

    /// Crashes node `i`: its engine is dropped, its store kept, its links closed.
    pub fn crash(&mut self, i: usize) {
        self.layer.crash(i);
        self.net.crash(i);
    }

    /// Restarts node `i` from its store.
    ///
    /// # Errors
    /// When the engine cannot reopen.
    pub fn restart(&mut self, i: usize) -> Result<(), ReplicaError> {
        self.layer.reopen(i)?;
        self.net.restart(i);
        self.start_scheduler(i)
    }

    /// Node `i` writes `value` to `key` of `collection`; `Ok(false)` if it is down.
    ///
    /// # Errors
    /// What the engine refuses.
    pub fn write(
        &mut self,
        i: usize,
        collection: &str,
        key: &str,
        value: &[u8],
    ) -> Result<bool, ReplicaError> {
        let now = self.now_ms(i);
        let Some(r) = self.layer.engine_mut(i) else {
            return Ok(false);
        };
        r.put(now, DB, collection, key, value)?;
        self.layer.wrote(i, DB, &mut self.net)?;
        Ok(true)
    }

    /// Node `i` writes `ops` as one batch.
    ///
    /// # Errors
    /// What the engine refuses.
    pub fn write_batch(&mut self, i: usize, ops: &[Op]) -> Result<bool, ReplicaError> {
        let now = self.now_ms(i);
        let Some(r) = self.layer.engine_mut(i) else {
            return Ok(false);
        };
        r.batch(now, DB, ops)?;
        self.layer.wrote(i, DB, &mut self.net)?;
        Ok(true)
    }

    /// The counters so far.
    #[must_use]
    pub fn stats(&self) -> ReplicaStats {
        ReplicaStats {
            lost: self.net.stats().lost,
            ..self.layer.stats().clone()
        }
    }

    /// Virtual time since the start.
    #[must_use]
    pub fn elapsed(&self) -> Duration {
        self.net.elapsed()
    }

    /// Runs events for `d` of virtual time.
    ///
    /// # Errors
    /// When an engine fails (a store error: a bug, the in-memory store does not fail).
    pub fn run_for(&mut self, d: Duration) -> Result<(), ReplicaError> {
        let until = self.net.now() + d;
        net::run(self, until, Check::Every(d), |_| Ok(false)).map(|_| ())
    }

    /// Per syncgroup, whether every member that is up holds the same rows of its collection.
    ///
    /// # Errors
    /// A store failure.
    pub fn diverging_groups(&self) -> Result<Vec<String>, ReplicaError> {
        let mut out = Vec::new();
        for (g, plan) in self.config.groups.iter().enumerate() {
            let mut seen = None;
            for &m in &plan.members {
                let Some(r) = self.layer.engine(m) else {
                    continue;
                };
                let rows = r.scan(DB, &plan.collection, "")?;
                match &seen {
                    None => seen = Some(rows),
                    Some(first) if *first != rows => {
                        out.push(format!("sg{g}"));
                        break;
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(out)
    }

    /// The rows node `i` holds of `collection`.
    ///
    /// # Errors
    /// A store failure.
    pub fn rows(&self, i: usize, collection: &str) -> Result<Rows, ReplicaError> {
        let Some(r) = self.layer.engine(i) else {
            return Ok(Vec::new());
        };
        Ok(r.scan(DB, collection, "")?
            .into_iter()
            .map(|(k, s)| (k, s.value))
            .collect())
    }

    /// Log records node `i` holds.
    ///
    /// # Errors
    /// A store failure.
    pub fn log_len(&self, i: usize) -> Result<u64, ReplicaError> {
        self.layer.engine(i).map_or(Ok(0), |r| r.log_len(DB))
    }
}

impl Protocol for ReplicaSim {
    type Message = Message;
    type Local = (usize, Timer);
    type Error = ReplicaError;

    fn net(&mut self) -> &mut Net<Message, (usize, Timer)> {
        &mut self.net
    }

    fn on_message(&mut self, from: usize, to: usize, msg: Message) -> Result<(), ReplicaError> {
        self.layer.on_message(from, to, msg, &mut self.net)
    }

    fn on_local(&mut self, (node, timer): (usize, Timer)) -> Result<(), ReplicaError> {
        self.layer.on_timer(node, timer, &mut self.net)
    }
}
