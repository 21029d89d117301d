//! The replica layer of a simulated node: its engine ([`tributary_replica::Replica`]) and
//! its round scheduler ([`tributary_replica::schedule::Scheduler`]), driven as the node
//! runtime's driver drives them, over whatever carries its messages ([`Transport`]).
//!
//! Two simulators host it: the replica simulator ([`crate::replica::ReplicaSim`]), whose
//! nodes count every other node as connected and dial a member with their first message to
//! it, and the whole-node simulator ([`crate::Sim`]), whose nodes run it beside the overlay
//! and stream cores, count as connected the peers their overlay handshook, and dial members
//! they are not connected to through the overlay's known peers (as the runtime's member
//! dials do). A sync is the GetDeltas exchange as messages: the request travels to the
//! member; the responder's frames travel back in order; a lost frame ends the exchange, as a
//! dropped connection would (later frames are not sent, and the initiator's ask times out).
//! News is a message answered by an acknowledgement; a news without one ends at the timeout.
//! A liar alters the values of the records it sends (the signatures then fail), and every
//! refusal is entered in a penalty ledger.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tributary_overlay::Identity;
use tributary_replica::schedule::{
    Action, Groups, Outcome, ScheduleConfig, Scheduler, round_inputs,
};
use tributary_replica::{NodeId, Replica, ReplicaConfig, ReplicaError};
use tributary_store::MemStore;
use tributary_wire::replica::{DeltaFrame, DeltaRequest};

/// Wall-clock ms the virtual clock starts at.
const EPOCH_MS: u64 = 1_700_000_000_000;

/// An exchange: the initiator, its ask's number and its epoch when it asked.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Exchange {
    node: usize,
    ask: u64,
    epoch: u64,
}

/// What travels between replica nodes.
#[derive(Debug)]
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

/// A replica node's own deadlines.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Timer {
    /// The scheduler's deadline (stale if another was set since).
    Wake(Instant),
    AskTimeout(Exchange),
    NewsTimeout(Exchange),
}

/// What the layer needs of its simulator.
pub(crate) trait Transport {
    /// The virtual now.
    fn now(&self) -> Instant;
    /// Virtual time since the start.
    fn elapsed(&self) -> Duration;
    /// Sends `msg` from node `from` to node `to`; whether it is on its way.
    fn send(&mut self, from: usize, to: usize, msg: Message) -> bool;
    /// Calls [`Replicas::on_timer`] for `node` at `at`.
    fn timer(&mut self, at: Instant, node: usize, timer: Timer);
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
    /// Messages lost: by the loss rate, or cut by a partition or a crash (the replica
    /// simulator's count; whole nodes count every protocol's in `SimStats::lost`, and leave
    /// this 0).
    pub lost: u64,
    /// Refusals per sender.
    pub penalties: BTreeMap<usize, u64>,
    /// Dials of members found among the overlay's known peers (whole-node simulator).
    pub member_dials: u64,
}

/// The layer's settings.
#[derive(Clone, Debug)]
pub struct ReplicaLayerConfig {
    /// The scheduler's settings.
    pub schedule: ScheduleConfig,
    /// The engine's settings.
    pub engine: ReplicaConfig,
    /// How long an ask or a news waits for its answer.
    pub ask_timeout: Duration,
}

impl Default for ReplicaLayerConfig {
    fn default() -> Self {
        Self {
            schedule: ScheduleConfig::default(),
            engine: ReplicaConfig::default(),
            ask_timeout: Duration::from_secs(5),
        }
    }
}

struct ReplicaNode {
    store: Arc<MemStore>,
    identity: Identity,
    id: NodeId,
    replica: Option<Replica>,
    skew_ms: i64,
    liar: bool,
    /// Bumped at each crash: answers to an exchange begun before it are dropped.
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

/// Every node's replica layer; node `i` here is node `i` of the simulator.
pub(crate) struct Replicas {
    config: ReplicaLayerConfig,
    seed: u64,
    nodes: Vec<ReplicaNode>,
    by_id: BTreeMap<NodeId, usize>,
    stats: ReplicaStats,
}

impl Replicas {
    /// No nodes yet; schedulers are seeded from `seed`.
    pub(crate) fn new(config: ReplicaLayerConfig, seed: u64) -> Self {
        Self {
            config,
            seed,
            nodes: Vec::new(),
            by_id: BTreeMap::new(),
            stats: ReplicaStats::default(),
        }
    }

    /// Opens the engine of the next node on `store`; its scheduler starts at
    /// [`Replicas::start`].
    pub(crate) fn add(
        &mut self,
        store: Arc<MemStore>,
        identity: Identity,
    ) -> Result<usize, ReplicaError> {
        let replica = Replica::open(store.clone(), identity.clone(), self.config.engine.clone())?;
        let id = NodeId(identity.eth_address());
        let i = self.nodes.len();
        self.by_id.insert(id, i);
        self.nodes.push(ReplicaNode {
            store,
            identity,
            id,
            replica: Some(replica),
            skew_ms: 0,
            liar: false,
            epoch: 0,
            sched: Scheduler::new(self.config.schedule.clone(), self.seed ^ i as u64),
            asks: BTreeMap::new(),
            news: BTreeMap::new(),
            next_ask: 0,
            wake_at: None,
        });
        Ok(i)
    }

    /// The counters so far.
    pub(crate) fn stats(&self) -> &ReplicaStats {
        &self.stats
    }

    /// The node id of node `i`.
    pub(crate) fn id(&self, i: usize) -> NodeId {
        self.nodes[i].id
    }

    /// Node `i`'s engine, if it is up.
    pub(crate) fn engine(&self, i: usize) -> Option<&Replica> {
        self.nodes.get(i).and_then(|n| n.replica.as_ref())
    }

    /// Node `i`'s engine, if it is up.
    pub(crate) fn engine_mut(&mut self, i: usize) -> Option<&mut Replica> {
        self.nodes.get_mut(i).and_then(|n| n.replica.as_mut())
    }

    /// Node `i`'s wall clock, in ms (virtual time plus its skew).
    pub(crate) fn now_ms(&self, i: usize, elapsed: Duration) -> u64 {
        let base = EPOCH_MS + u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        base.saturating_add_signed(self.nodes[i].skew_ms)
    }

    /// Sets node `i`'s clock skew.
    pub(crate) fn set_skew(&mut self, i: usize, skew_ms: i64) {
        self.nodes[i].skew_ms = skew_ms;
    }

    /// Makes node `i` alter the records it sends.
    pub(crate) fn set_liar(&mut self, i: usize) {
        self.nodes[i].liar = true;
    }

    /// Node `i` crashes: its engine and scheduler are dropped, its store kept.
    pub(crate) fn crash(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.replica = None;
        node.epoch += 1;
        node.wake_at = None;
    }

    /// Node `i`'s engine reopens from its store (its scheduler starts at
    /// [`Replicas::start`]).
    pub(crate) fn reopen(&mut self, i: usize) -> Result<(), ReplicaError> {
        let n = &mut self.nodes[i];
        n.replica = Some(Replica::open(
            n.store.clone(),
            n.identity.clone(),
            self.config.engine.clone(),
        )?);
        Ok(())
    }

    /// Node `i`'s scheduler starts afresh with `connected` members connected and its
    /// databases spread over the first interval.
    pub(crate) fn start(
        &mut self,
        i: usize,
        connected: &[NodeId],
        net: &mut impl Transport,
    ) -> Result<(), ReplicaError> {
        let now = net.now();
        let seed = self.seed ^ (i as u64) ^ (self.nodes[i].epoch << 32);
        let node = &mut self.nodes[i];
        node.sched = Scheduler::new(self.config.schedule.clone(), seed);
        node.asks.clear();
        node.news.clear();
        node.wake_at = None;
        for id in connected {
            node.sched.connected(*id);
        }
        let dbs = match node.replica.as_ref() {
            Some(r) => r.synced_databases()?,
            None => Vec::new(),
        };
        node.sched.databases(now, dbs);
        self.drive(i, net)
    }

    /// Node `i` handshook `peer`.
    pub(crate) fn connected(
        &mut self,
        i: usize,
        peer: NodeId,
        net: &mut impl Transport,
    ) -> Result<(), ReplicaError> {
        self.nodes[i].sched.connected(peer);
        self.drive(i, net)
    }

    /// Node `i` lost its connection to `peer`: its asks of `peer` fail.
    pub(crate) fn disconnected(
        &mut self,
        i: usize,
        peer: NodeId,
        net: &mut impl Transport,
    ) -> Result<(), ReplicaError> {
        let node = &mut self.nodes[i];
        node.sched.disconnected(&peer);
        // The scheduler forgot the news in flight to `peer`: so do we, or its timeout would
        // end a later news to the same member.
        node.news.retain(|_, m| *m != peer);
        let cut: Vec<u64> = node
            .asks
            .iter()
            .filter(|(_, (_, m))| *m == peer)
            .map(|(a, _)| *a)
            .collect();
        let epoch = node.epoch;
        for ask in cut {
            self.end_ask(
                Exchange {
                    node: i,
                    ask,
                    epoch,
                },
                Outcome::Failed,
                net,
            )?;
        }
        self.drive(i, net)
    }

    /// The members node `i` should dial now (its scheduler's
    /// [`Scheduler::members_to_dial`]).
    pub(crate) fn members_to_dial(&mut self, i: usize, now: Instant) -> BTreeSet<NodeId> {
        self.nodes[i].sched.members_to_dial(now)
    }

    /// Counts `n` member dials.
    pub(crate) fn dialled_members(&mut self, n: u64) {
        self.stats.member_dials += n;
    }

    /// Node `i` created a syncgroup of `db` (`admin` `None`) or joined one through `admin`:
    /// its scheduler starts rounds of `db` (with the admin first), as the runtime's does.
    pub(crate) fn track(
        &mut self,
        i: usize,
        db: &str,
        admin: Option<NodeId>,
        net: &mut impl Transport,
    ) -> Result<(), ReplicaError> {
        let now = net.now();
        match admin {
            Some(admin) => self.nodes[i].sched.joined(now, db, Some(admin)),
            None => {
                self.nodes[i].sched.track(now, db);
            }
        }
        self.drive(i, net)
    }

    /// A local write on node `i`: its scheduler tells the members.
    pub(crate) fn wrote(
        &mut self,
        i: usize,
        db: &str,
        net: &mut impl Transport,
    ) -> Result<(), ReplicaError> {
        let now = net.now();
        self.nodes[i].sched.local_write(now, db);
        self.drive(i, net)
    }

    /// One of node `i`'s deadlines came due.
    pub(crate) fn on_timer(
        &mut self,
        i: usize,
        timer: Timer,
        net: &mut impl Transport,
    ) -> Result<(), ReplicaError> {
        match timer {
            Timer::Wake(at) => {
                if self.nodes[i].wake_at == Some(at) {
                    self.nodes[i].wake_at = None;
                    self.nodes[i].sched.handle_timeout(net.now());
                    self.drive(i, net)?;
                }
            }
            Timer::AskTimeout(ex) => {
                if self.nodes[ex.node].epoch == ex.epoch {
                    self.end_ask(ex, Outcome::Failed, net)?;
                }
            }
            Timer::NewsTimeout(ex) => self.end_news(ex, net)?,
        }
        Ok(())
    }

    /// A message from `from` reached `to`.
    pub(crate) fn on_message(
        &mut self,
        from: usize,
        to: usize,
        msg: Message,
        net: &mut impl Transport,
    ) -> Result<(), ReplicaError> {
        match msg {
            Message::Request { req, ex } => self.serve(to, &req, ex, net),
            Message::Frame { req, frame, ex } => self.take_frame(from, &req, &frame, ex, net),
            Message::News { db, ex } => {
                if self.nodes[to].replica.is_some() {
                    let sender = self.id(from);
                    self.nodes[to].sched.news(net.now(), sender, &db);
                    net.send(to, from, Message::NewsAck { ex });
                    self.drive(to, net)?;
                }
                Ok(())
            }
            Message::NewsAck { ex } => self.end_news(ex, net),
        }
    }

    /// Carries out node `i`'s scheduler actions and queues its next deadline.
    fn drive(&mut self, i: usize, net: &mut impl Transport) -> Result<(), ReplicaError> {
        if self.nodes[i].replica.is_none() {
            return Ok(());
        }
        while let Some(action) = self.nodes[i].sched.poll_action() {
            match action {
                Action::Prepare { db } => {
                    let (request, groups) = match self.nodes[i].replica.as_ref() {
                        Some(r) => round_inputs(r, &db)?,
                        None => (None, Groups::new()),
                    };
                    self.nodes[i]
                        .sched
                        .prepared(net.now(), &db, request, groups);
                }
                Action::Ask {
                    db,
                    member,
                    request,
                } => self.ask(i, db, member, request, net),
                Action::News { member, db } => self.tell(i, member, db, net),
            }
        }
        let node = &mut self.nodes[i];
        if let Some(at) = node.sched.poll_timeout()
            && node.wake_at.is_none_or(|w| at < w)
        {
            let at = at.max(net.now());
            node.wake_at = Some(at);
            net.timer(at, i, Timer::Wake(at));
        }
        Ok(())
    }

    /// A new exchange of node `i` (an ask or a news).
    fn exchange(&mut self, i: usize) -> Exchange {
        let node = &mut self.nodes[i];
        node.next_ask += 1;
        Exchange {
            node: i,
            ask: node.next_ask,
            epoch: node.epoch,
        }
    }

    /// Node `i` asks `member`: the request travels (or is lost), and the ask times out unless
    /// the last frame comes first.
    fn ask(
        &mut self,
        i: usize,
        db: String,
        member: NodeId,
        req: DeltaRequest,
        net: &mut impl Transport,
    ) {
        self.stats.syncs += 1;
        let ex = self.exchange(i);
        self.nodes[i].asks.insert(ex.ask, (db, member));
        net.timer(
            net.now() + self.config.ask_timeout,
            i,
            Timer::AskTimeout(ex),
        );
        let Some(&to) = self.by_id.get(&member) else {
            return;
        };
        *self.stats.asked.entry(to).or_default() += 1;
        net.send(i, to, Message::Request { req, ex });
    }

    /// Node `i` tells `member` of news; the news ends at its acknowledgement, or at the
    /// timeout if either is lost.
    fn tell(&mut self, i: usize, member: NodeId, db: String, net: &mut impl Transport) {
        self.stats.news += 1;
        let ex = self.exchange(i);
        self.nodes[i].news.insert(ex.ask, member);
        net.timer(
            net.now() + self.config.ask_timeout,
            i,
            Timer::NewsTimeout(ex),
        );
        if let Some(&to) = self.by_id.get(&member) {
            net.send(i, to, Message::News { db, ex });
        }
    }

    /// Ends an ask of node `ex.node` (if it is still open) with `outcome`.
    fn end_ask(
        &mut self,
        ex: Exchange,
        outcome: Outcome,
        net: &mut impl Transport,
    ) -> Result<(), ReplicaError> {
        let Some((db, member)) = self.nodes[ex.node].asks.remove(&ex.ask) else {
            return Ok(());
        };
        if outcome != Outcome::Complete {
            self.stats.failed += 1;
        }
        self.nodes[ex.node]
            .sched
            .answered(net.now(), &db, member, outcome);
        self.drive(ex.node, net)
    }

    /// Ends a news of node `ex.node` (if it is still open).
    fn end_news(&mut self, ex: Exchange, net: &mut impl Transport) -> Result<(), ReplicaError> {
        if self.nodes[ex.node].epoch != ex.epoch {
            return Ok(());
        }
        let Some(member) = self.nodes[ex.node].news.remove(&ex.ask) else {
            return Ok(());
        };
        self.nodes[ex.node].sched.news_done(member);
        self.drive(ex.node, net)
    }

    /// The responder answers: its frames go back in order, until one is lost.
    fn serve(
        &mut self,
        at: usize,
        req: &DeltaRequest,
        ex: Exchange,
        net: &mut impl Transport,
    ) -> Result<(), ReplicaError> {
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
        while let Some(mut frame) = answer.next_frame(r)? {
            if liar {
                for rec in &mut frame.records {
                    rec.value = b"forged".to_vec();
                }
            }
            let req = req.clone();
            if !net.send(at, initiator, Message::Frame { req, frame, ex }) {
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
        net: &mut impl Transport,
    ) -> Result<(), ReplicaError> {
        let at = ex.node;
        let open = self.nodes[at].asks.contains_key(&ex.ask);
        if !open || self.nodes[at].epoch != ex.epoch {
            return Ok(());
        }
        let now = self.now_ms(at, net.elapsed());
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
            return self.end_ask(ex, Outcome::Fault, net);
        }
        if frame.last {
            self.end_ask(ex, Outcome::Complete, net)?;
        }
        Ok(())
    }
}
