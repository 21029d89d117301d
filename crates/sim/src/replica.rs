//! Replicated databases in the simulator: every node runs the replica engine
//! ([`tributary_replica::Replica`]) over its own in-memory store, on the simulator's clock,
//! latencies, loss, partitions and crashes, with its own wall-clock skew.
//!
//! A sync is the GetDeltas exchange as messages: the initiator's request travels to a member
//! picked at random among its syncgroups' members; the responder's frames travel back one
//! after another, each after its own latency; a lost frame ends the exchange, as a dropped
//! connection would (later frames never arrive). The initiator applies every frame that
//! arrives in one store write, exactly as the node does. A crash drops the engine and keeps
//! the store; the restarted engine reopens from it. A liar alters the values of the records
//! it sends (the signatures then fail), and every refusal is entered in a penalty ledger.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tributary_overlay::Identity;
use tributary_replica::syncgroup::Spec;
use tributary_replica::{NodeId, Op, Replica, ReplicaConfig, ReplicaError};
use tributary_store::MemStore;
use tributary_wire::replica::{DeltaFrame, DeltaRequest};

use crate::queue::{EventQueue, latency};

/// A collection's rows as a node reads them: key and value (`None`: deleted).
pub type Rows = Vec<(String, Option<Vec<u8>>)>;

/// The database every simulated node uses.
pub const DB: &str = "sim";

/// Wall-clock ms the virtual clock starts at.
const EPOCH_MS: u64 = 1_700_000_000_000;

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
    /// Each node starts a sync this often (with jitter).
    pub sync_every: Duration,
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
            prune: true,
            frame_bytes: 2048,
        }
    }
}

enum Event {
    Sync(usize),
    Request {
        to: usize,
        from: usize,
        req: DeltaRequest,
        epoch: u64,
    },
    Frame {
        to: usize,
        from: usize,
        req: DeltaRequest,
        frame: DeltaFrame,
        epoch: u64,
    },
}

struct SimNode {
    store: Arc<MemStore>,
    identity: Identity,
    replica: Option<Replica>,
    skew_ms: i64,
    partition: u32,
    liar: bool,
    /// Bumped at each crash: frames of an exchange begun before it are dropped.
    epoch: u64,
}

/// Counters of a run.
#[derive(Clone, Debug, Default)]
pub struct ReplicaStats {
    /// Exchanges started.
    pub syncs: u64,
    /// Frames applied.
    pub frames: u64,
    /// Records applied as new versions.
    pub records: u64,
    /// Records received that were already held (sent twice).
    pub duplicates: u64,
    /// Conflicts found.
    pub conflicts: u64,
    /// Messages lost or cut.
    pub lost: u64,
    /// Refusals per sender.
    pub penalties: BTreeMap<usize, u64>,
}

/// The simulation.
pub struct ReplicaSim {
    config: ReplicaSimConfig,
    queue: EventQueue<Event>,
    rng: StdRng,
    nodes: Vec<SimNode>,
    stats: ReplicaStats,
}

fn engine_config(config: &ReplicaSimConfig) -> ReplicaConfig {
    ReplicaConfig {
        prune: config.prune,
        frame_bytes: config.frame_bytes,
        ..ReplicaConfig::default()
    }
}

impl ReplicaSim {
    /// Builds the nodes and their syncgroups (joins done out of band, through the admin).
    ///
    /// # Errors
    /// When an engine cannot open or a syncgroup cannot be set up.
    pub fn new(config: ReplicaSimConfig) -> Result<Self, ReplicaError> {
        let mut rng = StdRng::seed_from_u64(config.seed);
        let mut nodes = Vec::with_capacity(config.nodes);
        for _ in 0..config.nodes {
            let mut secret = [0u8; 32];
            rng.fill(&mut secret[..]);
            secret[0] = secret[0].max(1) & 0x7f;
            let identity =
                Identity::from_secret(&secret, [0; 32]).map_err(|_| ReplicaError::Signing)?;
            let store = Arc::new(MemStore::new());
            let replica = Replica::open(store.clone(), identity.clone(), engine_config(&config))?;
            nodes.push(SimNode {
                store,
                identity,
                replica: Some(replica),
                skew_ms: 0,
                partition: 0,
                liar: false,
                epoch: 0,
            });
        }
        let mut sim = Self {
            queue: EventQueue::new(),
            rng,
            nodes,
            stats: ReplicaStats::default(),
            config,
        };
        sim.setup_groups()?;
        for i in 0..sim.nodes.len() {
            let first = sim.jitter(sim.config.sync_every);
            sim.queue.push(sim.queue.now() + first, Event::Sync(i));
        }
        Ok(sim)
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

    fn jitter(&mut self, every: Duration) -> Duration {
        every.mul_f64(0.5 + self.rng.random::<f64>())
    }

    /// The node id of node `i`.
    #[must_use]
    pub fn id(&self, i: usize) -> NodeId {
        NodeId(self.nodes[i].identity.eth_address())
    }

    /// Node `i`'s engine.
    ///
    /// # Panics
    /// If the node is down (a scenario bug).
    pub fn engine(&mut self, i: usize) -> &mut Replica {
        self.nodes[i].replica.as_mut().expect("the node is up")
    }

    /// Whether node `i` is up.
    #[must_use]
    pub fn is_up(&self, i: usize) -> bool {
        self.nodes[i].replica.is_some()
    }

    /// Node `i`'s wall clock, in ms (virtual time plus its skew).
    #[must_use]
    pub fn now_ms(&self, i: usize) -> u64 {
        let base = EPOCH_MS + u64::try_from(self.queue.elapsed().as_millis()).unwrap_or(u64::MAX);
        base.saturating_add_signed(self.nodes[i].skew_ms)
    }

    /// Sets node `i`'s clock skew.
    pub fn set_skew(&mut self, i: usize, skew_ms: i64) {
        self.nodes[i].skew_ms = skew_ms;
    }

    /// Makes node `i` alter the records it sends.
    pub fn set_liar(&mut self, i: usize) {
        self.nodes[i].liar = true;
    }

    /// Puts each node in partition `groups[i]`; messages cross no partition.
    pub fn partition(&mut self, groups: &[u32]) {
        for (n, g) in self.nodes.iter_mut().zip(groups) {
            n.partition = *g;
        }
    }

    /// Heals every partition.
    pub fn heal(&mut self) {
        for n in &mut self.nodes {
            n.partition = 0;
        }
    }

    /// Crashes node `i`: its engine is dropped, its store kept.
    pub fn crash(&mut self, i: usize) {
        self.nodes[i].replica = None;
        self.nodes[i].epoch += 1;
    }

    /// Restarts node `i` from its store.
    ///
    /// # Errors
    /// When the engine cannot reopen.
    pub fn restart(&mut self, i: usize) -> Result<(), ReplicaError> {
        let n = &mut self.nodes[i];
        n.replica = Some(Replica::open(
            n.store.clone(),
            n.identity.clone(),
            engine_config(&self.config),
        )?);
        Ok(())
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
        let Some(r) = self.nodes[i].replica.as_mut() else {
            return Ok(false);
        };
        r.put(now, DB, collection, key, value)?;
        Ok(true)
    }

    /// Node `i` writes `ops` as one batch.
    ///
    /// # Errors
    /// What the engine refuses.
    pub fn write_batch(&mut self, i: usize, ops: &[Op]) -> Result<bool, ReplicaError> {
        let now = self.now_ms(i);
        let Some(r) = self.nodes[i].replica.as_mut() else {
            return Ok(false);
        };
        r.batch(now, DB, ops)?;
        Ok(true)
    }

    /// The counters so far.
    #[must_use]
    pub fn stats(&self) -> &ReplicaStats {
        &self.stats
    }

    /// Virtual time since the start.
    #[must_use]
    pub fn elapsed(&self) -> Duration {
        self.queue.elapsed()
    }

    /// Runs events for `d` of virtual time.
    ///
    /// # Errors
    /// When an engine fails (a store error: a bug, the in-memory store does not fail).
    pub fn run_for(&mut self, d: Duration) -> Result<(), ReplicaError> {
        let until = self.queue.now() + d;
        while self.queue.next_at().is_some_and(|at| at <= until) {
            let Some(event) = self.queue.pop() else { break };
            self.handle(event)?;
        }
        self.queue.advance_to(until);
        Ok(())
    }

    fn reachable(&self, a: usize, b: usize) -> bool {
        self.nodes[a].partition == self.nodes[b].partition && self.is_up(a) && self.is_up(b)
    }

    fn deliver_at(&mut self) -> Option<Instant> {
        if self.rng.random::<f64>() < self.config.loss {
            self.stats.lost += 1;
            return None;
        }
        let l = latency(
            &mut self.rng,
            self.config.latency_min,
            self.config.latency_max,
        );
        Some(self.queue.now() + l)
    }

    fn handle(&mut self, event: Event) -> Result<(), ReplicaError> {
        match event {
            Event::Sync(i) => self.start_sync(i)?,
            Event::Request {
                to,
                from,
                req,
                epoch,
            } => self.serve(to, from, &req, epoch)?,
            Event::Frame {
                to,
                from,
                req,
                frame,
                epoch,
            } => self.take_frame(to, from, &req, &frame, epoch)?,
        }
        Ok(())
    }

    /// Node `i` picks a random member of one of its syncgroups and sends its request.
    fn start_sync(&mut self, i: usize) -> Result<(), ReplicaError> {
        let next = self.jitter(self.config.sync_every);
        self.queue.push(self.queue.now() + next, Event::Sync(i));
        let Some(r) = self.nodes[i].replica.as_ref() else {
            return Ok(());
        };
        let me = r.id();
        let mut peers = BTreeSet::new();
        for name in r.syncgroup_names(DB)? {
            let info = r.syncgroup(DB, &name)?;
            peers.extend(
                info.members
                    .iter()
                    .map(|(id, _)| *id)
                    .filter(|id| *id != me),
            );
        }
        let peers: Vec<NodeId> = peers.into_iter().collect();
        if peers.is_empty() {
            return Ok(());
        }
        let pick = peers[self.rng.random_range(0..peers.len())];
        let Some(to) = (0..self.nodes.len()).find(|&n| self.id(n) == pick) else {
            return Ok(());
        };
        let req = r.delta_request(DB)?;
        self.stats.syncs += 1;
        if let Some(at) = self.deliver_at()
            && self.reachable(i, to)
        {
            let epoch = self.nodes[i].epoch;
            self.queue.push(
                at,
                Event::Request {
                    to,
                    from: i,
                    req,
                    epoch,
                },
            );
        }
        Ok(())
    }

    /// The responder answers: its frames go back one after another.
    fn serve(
        &mut self,
        at: usize,
        initiator: usize,
        req: &DeltaRequest,
        epoch: u64,
    ) -> Result<(), ReplicaError> {
        if !self.reachable(at, initiator) {
            return Ok(());
        }
        let initiator_id = self.id(initiator);
        let liar = self.nodes[at].liar;
        let Some(r) = self.nodes[at].replica.as_ref() else {
            return Ok(());
        };
        let mut answer = match r.answer(req, initiator_id) {
            Ok(a) => a,
            Err(ReplicaError::NotAuthorized(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut frames = Vec::new();
        while let Some(mut frame) = answer.next_frame(r)? {
            if liar {
                for rec in &mut frame.records {
                    rec.value = b"forged".to_vec();
                }
            }
            frames.push(frame);
        }
        let mut t = self.queue.now();
        for frame in frames {
            let Some(arrive) = self.deliver_at() else {
                // A lost frame: the connection is gone, and every later frame with it.
                break;
            };
            t = t.max(arrive);
            self.queue.push(
                t,
                Event::Frame {
                    to: initiator,
                    from: at,
                    req: req.clone(),
                    frame,
                    epoch,
                },
            );
        }
        Ok(())
    }

    fn take_frame(
        &mut self,
        at: usize,
        from: usize,
        req: &DeltaRequest,
        frame: &DeltaFrame,
        epoch: u64,
    ) -> Result<(), ReplicaError> {
        if !self.reachable(at, from) || self.nodes[at].epoch != epoch {
            return Ok(());
        }
        let now = self.now_ms(at);
        let responder = self.id(from);
        let Some(r) = self.nodes[at].replica.as_mut() else {
            return Ok(());
        };
        let applied = r.apply_frame(now, req, responder, frame)?;
        self.stats.frames += 1;
        self.stats.records += applied.new;
        self.stats.conflicts += applied.conflicts;
        self.stats.duplicates += applied.duplicates;
        if !applied.refused.is_empty() {
            *self.stats.penalties.entry(from).or_default() += applied.refused.len() as u64;
        }
        Ok(())
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
                let Some(r) = self.nodes[m].replica.as_ref() else {
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
        let Some(r) = self.nodes[i].replica.as_ref() else {
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
        self.nodes[i]
            .replica
            .as_ref()
            .map_or(Ok(0), |r| r.log_len(DB))
    }
}
