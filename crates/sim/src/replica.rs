//! Replicated databases in the simulator: every node runs the replica engine
//! ([`tributary_replica::Replica`]) over its own in-memory store, on the simulator's clock,
//! latencies, loss, partitions and crashes, with its own wall-clock skew.
//!
//! When each node syncs and with whom is decided by the node's own round scheduler
//! ([`tributary_replica::schedule::Scheduler`], the code the node runtime runs): rounds at
//! its interval with a member picked at random, news to the members after a local write and
//! an early round at the receiver, back-off of members whose answers fail or lie. Every
//! other node counts as connected to the scheduler, and the simulator's network
//! ([`crate::net`], the one every simulator runs on) opens a link on the first message to a
//! reachable member, as the node dials a member it asks; what a partition or a crashed node
//! drops shows up as a timeout. A sync is the GetDeltas exchange as messages on that link:
//! the request travels to the member; the responder's frames travel back in order, each
//! after its own latency; a lost frame ends the exchange, as a dropped connection would
//! (later frames are not sent, and the initiator's ask times out). News is a message
//! answered by an acknowledgement; a news without one ends at the timeout. The initiator applies every frame that arrives in one store
//! write, exactly as the node does. A crash drops the engine and the scheduler and keeps the
//! store; the restarted engine reopens from it. A liar alters the values of the records it
//! sends (the signatures then fail), and every refusal is entered in a penalty ledger.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use tributary_overlay::Identity;
use tributary_replica::schedule::{
    Action, Groups, Outcome, ScheduleConfig, Scheduler, round_inputs,
};
use tributary_replica::syncgroup::Spec;
use tributary_replica::{NodeId, Op, Replica, ReplicaConfig, ReplicaError};
use tributary_store::MemStore;
use tributary_wire::replica::{DeltaFrame, DeltaRequest};

use crate::net::{self, Check, LinkConfig, Net, Protocol};

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

/// An exchange: the initiator, its ask's number and its epoch when it asked.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Exchange {
    node: usize,
    ask: u64,
    epoch: u64,
}

/// What travels between replica nodes.
pub(crate) enum Message {
    /// A GetDeltas request of exchange `ex`.
    Request { req: DeltaRequest, ex: Exchange },
    /// One frame of the answer to `req`.
    Frame {
        req: DeltaRequest,
        frame: DeltaFrame,
        ex: Exchange,
    },
    /// "I have news" about `db`; `ex.ask` numbers it.
    News { db: String, ex: Exchange },
    /// The news of `ex` arrived.
    NewsAck { ex: Exchange },
}

/// The simulator's own events.
#[derive(Clone, Copy)]
pub(crate) enum Local {
    /// Node `i`'s scheduler deadline (stale if another was set since).
    Wake(usize, Instant),
    AskTimeout(Exchange),
    NewsTimeout(Exchange),
}

struct SimNode {
    store: Arc<MemStore>,
    identity: Identity,
    replica: Option<Replica>,
    skew_ms: i64,
    liar: bool,
    /// Bumped at each crash: frames of an exchange begun before it are dropped.
    epoch: u64,
    sched: Scheduler,
    /// Asks in flight: number → (database, member).
    asks: BTreeMap<u64, (String, NodeId)>,
    /// News in flight: number → member told.
    news: BTreeMap<u64, NodeId>,
    /// The number of the next ask or news.
    next_ask: u64,
    /// The deadline a `Wake` is queued for.
    wake_at: Option<Instant>,
}

/// Counters of a run.
#[derive(Clone, Debug, Default)]
pub struct ReplicaStats {
    /// Exchanges started (members asked).
    pub syncs: u64,
    /// News sent.
    pub news: u64,
    /// Asks that ended without a complete answer (lost, cut, refused, timed out).
    pub failed: u64,
    /// Asks per member asked.
    pub asked: BTreeMap<usize, u64>,
    /// Frames applied.
    pub frames: u64,
    /// Records applied as new versions.
    pub records: u64,
    /// Records received that were already held (sent twice).
    pub duplicates: u64,
    /// Conflicts found.
    pub conflicts: u64,
    /// Messages lost: by the loss rate, or cut by a partition or a crash.
    pub lost: u64,
    /// Refusals per sender.
    pub penalties: BTreeMap<usize, u64>,
}

/// The simulation.
pub struct ReplicaSim {
    config: ReplicaSimConfig,
    net: Net<Message, Local>,
    nodes: Vec<SimNode>,
    stats: ReplicaStats,
}

fn schedule_config(config: &ReplicaSimConfig) -> ScheduleConfig {
    ScheduleConfig {
        interval: config.sync_every,
        ..ScheduleConfig::default()
    }
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
        let links = LinkConfig {
            latency_min: config.latency_min,
            latency_max: config.latency_max,
            loss: config.loss,
        };
        let mut net = Net::new(config.seed, links);
        let mut nodes = Vec::with_capacity(config.nodes);
        for i in 0..config.nodes {
            net.add_node();
            let mut secret = [0u8; 32];
            net.rng().fill(&mut secret[..]);
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
                liar: false,
                epoch: 0,
                sched: Scheduler::new(schedule_config(&config), config.seed ^ i as u64),
                asks: BTreeMap::new(),
                news: BTreeMap::new(),
                next_ask: 0,
                wake_at: None,
            });
        }
        let mut sim = Self {
            net,
            nodes,
            stats: ReplicaStats::default(),
            config,
        };
        sim.setup_groups()?;
        for i in 0..sim.nodes.len() {
            sim.start_scheduler(i)?;
        }
        Ok(sim)
    }

    /// Node `i`'s scheduler starts afresh: every other node connected, its databases spread
    /// over the first interval.
    fn start_scheduler(&mut self, i: usize) -> Result<(), ReplicaError> {
        let ids: Vec<NodeId> = (0..self.nodes.len()).map(|n| self.id(n)).collect();
        let now = self.net.now();
        let seed = self.config.seed ^ (i as u64) ^ (self.nodes[i].epoch << 32);
        let node = &mut self.nodes[i];
        node.sched = Scheduler::new(schedule_config(&self.config), seed);
        node.asks.clear();
        node.news.clear();
        node.wake_at = None;
        for (n, id) in ids.into_iter().enumerate() {
            if n != i {
                node.sched.connected(id);
            }
        }
        let dbs = match node.replica.as_ref() {
            Some(r) => r.synced_databases()?,
            None => Vec::new(),
        };
        node.sched.databases(now, dbs);
        self.drive(i)
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
        let base = EPOCH_MS + u64::try_from(self.net.elapsed().as_millis()).unwrap_or(u64::MAX);
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
        self.net.partition(groups);
    }

    /// Heals every partition.
    pub fn heal(&mut self) {
        self.net.heal();
    }

    /// Crashes node `i`: its engine is dropped, its store kept, its links closed.
    pub fn crash(&mut self, i: usize) {
        self.nodes[i].replica = None;
        self.nodes[i].epoch += 1;
        self.net.crash(i);
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
        let Some(r) = self.nodes[i].replica.as_mut() else {
            return Ok(false);
        };
        r.put(now, DB, collection, key, value)?;
        self.wrote(i)?;
        Ok(true)
    }

    /// A local write on node `i`: its scheduler tells the members.
    fn wrote(&mut self, i: usize) -> Result<(), ReplicaError> {
        let now = self.net.now();
        self.nodes[i].sched.local_write(now, DB);
        self.drive(i)
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
        self.wrote(i)?;
        Ok(true)
    }

    /// The counters so far.
    #[must_use]
    pub fn stats(&self) -> ReplicaStats {
        ReplicaStats {
            lost: self.net.stats().lost,
            ..self.stats.clone()
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

    fn local_event(&mut self, event: Local) -> Result<(), ReplicaError> {
        let now = self.net.now();
        match event {
            Local::Wake(i, at) => {
                if self.nodes[i].wake_at == Some(at) {
                    self.nodes[i].wake_at = None;
                    self.nodes[i].sched.handle_timeout(now);
                    self.drive(i)?;
                }
            }
            Local::AskTimeout(ex) => {
                if self.nodes[ex.node].epoch == ex.epoch {
                    self.end_ask(ex, Outcome::Failed)?;
                }
            }
            Local::NewsTimeout(ex) => self.end_news(ex)?,
        }
        Ok(())
    }

    fn deliver(&mut self, from: usize, to: usize, msg: Message) -> Result<(), ReplicaError> {
        match msg {
            Message::Request { req, ex } => self.serve(to, &req, ex),
            Message::Frame { req, frame, ex } => self.take_frame(from, &req, &frame, ex),
            Message::News { db, ex } => {
                if self.is_up(to) {
                    let sender = self.id(from);
                    let now = self.net.now();
                    self.nodes[to].sched.news(now, sender, &db);
                    self.net.send(to, from, Message::NewsAck { ex });
                    self.drive(to)?;
                }
                Ok(())
            }
            Message::NewsAck { ex } => self.end_news(ex),
        }
    }

    /// Ends a news of node `ex.node` (if it is still open).
    fn end_news(&mut self, ex: Exchange) -> Result<(), ReplicaError> {
        if self.nodes[ex.node].epoch != ex.epoch {
            return Ok(());
        }
        let Some(member) = self.nodes[ex.node].news.remove(&ex.ask) else {
            return Ok(());
        };
        self.nodes[ex.node].sched.news_done(member);
        self.drive(ex.node)
    }

    /// Carries out node `i`'s scheduler actions and queues its next deadline.
    fn drive(&mut self, i: usize) -> Result<(), ReplicaError> {
        if !self.is_up(i) {
            return Ok(());
        }
        while let Some(action) = self.nodes[i].sched.poll_action() {
            match action {
                Action::Prepare { db } => {
                    let now = self.net.now();
                    let (request, groups) = match self.nodes[i].replica.as_ref() {
                        Some(r) => round_inputs(r, &db)?,
                        None => (None, Groups::new()),
                    };
                    self.nodes[i].sched.prepared(now, &db, request, groups);
                }
                Action::Ask {
                    db,
                    member,
                    request,
                } => self.ask(i, db, member, request),
                Action::News { member, db } => self.tell(i, member, db),
            }
        }
        if let Some(at) = self.nodes[i].sched.poll_timeout()
            && self.nodes[i].wake_at.is_none_or(|w| at < w)
        {
            let at = at.max(self.net.now());
            self.nodes[i].wake_at = Some(at);
            self.net.schedule(at, Local::Wake(i, at));
        }
        Ok(())
    }

    fn index_of(&self, id: NodeId) -> Option<usize> {
        (0..self.nodes.len()).find(|&n| self.id(n) == id)
    }

    /// Node `i` asks `member`: the request travels (or is lost), and the ask times out unless
    /// the last frame comes first.
    fn ask(&mut self, i: usize, db: String, member: NodeId, req: DeltaRequest) {
        self.stats.syncs += 1;
        let node = &mut self.nodes[i];
        let ask = node.next_ask;
        node.next_ask += 1;
        node.asks.insert(ask, (db, member));
        let ex = Exchange {
            node: i,
            ask,
            epoch: node.epoch,
        };
        let timeout = self.net.now() + self.config.ask_timeout;
        self.net.schedule(timeout, Local::AskTimeout(ex));
        let Some(to) = self.index_of(member) else {
            return;
        };
        *self.stats.asked.entry(to).or_default() += 1;
        self.net.send_dialing(i, to, Message::Request { req, ex });
    }

    /// Node `i` tells `member` of news; the news ends at its acknowledgement, or at the
    /// timeout if either is lost.
    fn tell(&mut self, i: usize, member: NodeId, db: String) {
        self.stats.news += 1;
        let node = &mut self.nodes[i];
        let ex = Exchange {
            node: i,
            ask: node.next_ask,
            epoch: node.epoch,
        };
        node.next_ask += 1;
        node.news.insert(ex.ask, member);
        let timeout = self.net.now() + self.config.ask_timeout;
        self.net.schedule(timeout, Local::NewsTimeout(ex));
        if let Some(to) = self.index_of(member) {
            self.net.send_dialing(i, to, Message::News { db, ex });
        }
    }

    /// Ends an ask of node `ex.node` (if it is still open) with `outcome`.
    fn end_ask(&mut self, ex: Exchange, outcome: Outcome) -> Result<(), ReplicaError> {
        let Some((db, member)) = self.nodes[ex.node].asks.remove(&ex.ask) else {
            return Ok(());
        };
        if outcome != Outcome::Complete {
            self.stats.failed += 1;
        }
        let now = self.net.now();
        self.nodes[ex.node]
            .sched
            .answered(now, &db, member, outcome);
        self.drive(ex.node)
    }

    /// The responder answers: its frames go back one after another.
    fn serve(&mut self, at: usize, req: &DeltaRequest, ex: Exchange) -> Result<(), ReplicaError> {
        let initiator = ex.node;
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
        for frame in frames {
            let req = req.clone();
            if !self
                .net
                .send(at, initiator, Message::Frame { req, frame, ex })
            {
                // A lost frame: the connection is gone, and every later frame with it.
                break;
            }
        }
        Ok(())
    }

    fn take_frame(
        &mut self,
        from: usize,
        req: &DeltaRequest,
        frame: &DeltaFrame,
        ex: Exchange,
    ) -> Result<(), ReplicaError> {
        let at = ex.node;
        let open = self.nodes[at].asks.contains_key(&ex.ask);
        if !open || self.nodes[at].epoch != ex.epoch {
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
            return self.end_ask(ex, Outcome::Fault);
        }
        if frame.last {
            self.end_ask(ex, Outcome::Complete)?;
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

impl Protocol for ReplicaSim {
    type Message = Message;
    type Local = Local;
    type Error = ReplicaError;

    fn net(&mut self) -> &mut Net<Message, Local> {
        &mut self.net
    }

    fn on_message(&mut self, from: usize, to: usize, msg: Message) -> Result<(), ReplicaError> {
        self.deliver(from, to, msg)
    }

    fn on_local(&mut self, event: Local) -> Result<(), ReplicaError> {
        self.local_event(event)
    }
}
