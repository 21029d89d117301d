//! Replicated databases in the runtime: `/tributary/replica/1` carries GetDeltas, joins at an
//! admin and "I have news" notifications between members; [`Replicas`] is the engine the
//! HTTP API and the driver share.
//!
//! - **The engine** ([`tributary_replica::Replica`]) reads and writes the node's store, so
//!   every call runs on the blocking pool under one mutex ([`Replicas::call`]), never on the
//!   event loop.
//! - **Rounds.** When to sync and with whom is decided by the sans-IO scheduler of the engine
//!   crate ([`tributary_replica::schedule::Scheduler`], which the simulator runs too); this
//!   driver carries out its actions. Per database with a joined syncgroup, one round at a
//!   time: read its knowledge (blocking), ask one connected member picked at random (a member
//!   that sent news, or that answered with `more`, first), apply the frames (blocking), and
//!   wait [`SYNC_INTERVAL`] (with jitter) before the next. One request covers every syncgroup
//!   of the database the two share, so a round per database, not per syncgroup.
//! - **News.** After a local write the API tells the loop; the loop sends `News` to the
//!   connected members of that database (at most every [`NEWS_GAP`]), and a member that gets
//!   it starts a round with the sender at once (or right after the round it is in). News
//!   is not relayed (see `on_applied`): a member not connected to the writer gets the write
//!   at its next round.
//! - **Serving.** At most [`MAX_SERVING`] answers are computed at once (more are refused as
//!   busy); one reply carries frames up to [`tributary_wire::REPLICA_REPLY_BUDGET`] and says
//!   `more` if the answer goes on, so the initiator asks again from the knowledge it got.
//! - **Penalties.** A reply whose records or syncgroup changes are refused, or that does not
//!   decode, disconnects the peer and backs the member off; a malformed request disconnects
//!   the requester. A member that fails (timeout, refusal) is backed off, doubling from
//!   [`BACKOFF_BASE`] to [`BACKOFF_MAX`].

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{Multiaddr, PeerId, Swarm};
use prost::Message;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, warn};
use tributary_replica::delta::Applied;
use tributary_replica::schedule::{
    Action, Groups, Outcome, ScheduleConfig, Scheduler, round_inputs,
};
use tributary_replica::syncgroup::JoinGrant;
use tributary_replica::types::check_name;
use tributary_replica::{NodeId, Replica, ReplicaError};
use tributary_wire::REPLICA_REPLY_BUDGET;
use tributary_wire::replica::{
    Ack, DeltaFrames, DeltaRequest, Grant, JoinRequest, News, Refusal, ReplicaReply,
    ReplicaRequest, replica_reply, replica_request,
};

use crate::metrics::Metric;
use crate::runtime::Behaviour;

/// How often each database syncs with a member when nothing happens.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(3);
/// Least time between two news of one database (writes in between are in the same news).
pub const NEWS_GAP: Duration = Duration::from_millis(20);
/// Answers and joins computed at once; more are refused as busy.
pub const MAX_SERVING: usize = 4;
/// Replica streams per connection, both ways.
pub const MAX_STREAMS: usize = 32;
/// How long one request may take (an answer of the full reply budget over a slow link).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a join waits for its admin to be connected.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(20);
/// Joins waiting at once.
pub const MAX_JOINS: usize = 16;
/// First back-off of a failing member.
pub const BACKOFF_BASE: Duration = Duration::from_secs(2);
/// Longest back-off.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// How often a member that is not connected is looked up among the overlay's known peers.
pub const MEMBER_DIAL_EVERY: Duration = Duration::from_secs(30);
/// Databases the driver tracks at once (each has at most one round running).
pub const MAX_DATABASES: usize = 1024;
/// Blocking jobs' results waiting for the loop.
const JOB_QUEUE: usize = 64;
/// The refusal of a responder at its limit: the initiator retries soon, without backing off.
const BUSY: &str = "busy: try later";
/// How soon a busy responder is asked again (plus up to as much jitter).
const BUSY_RETRY: Duration = Duration::from_millis(300);

/// Milliseconds since the Unix epoch: the engine's `now`.
#[must_use]
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The replica engine shared by the HTTP API and the driver, and a counter of its commits
/// that watchers wait on.
#[derive(Clone)]
pub struct Replicas {
    engine: Arc<Mutex<Replica>>,
    changes: Arc<watch::Sender<u64>>,
    /// Calls of [`Replicas::call`] on the blocking pool at once.
    calls: Arc<tokio::sync::Semaphore>,
}

/// Engine calls from the API on the blocking pool at once; more wait their turn.
pub const MAX_API_CALLS: usize = 16;

impl std::fmt::Debug for Replicas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replicas").finish_non_exhaustive()
    }
}

impl Replicas {
    /// Shares `engine`.
    #[must_use]
    pub fn new(engine: Replica) -> Self {
        Self {
            engine: Arc::new(Mutex::new(engine)),
            changes: Arc::new(watch::channel(0).0),
            calls: Arc::new(tokio::sync::Semaphore::new(MAX_API_CALLS)),
        }
    }

    /// Runs `f` on the engine, on the blocking pool, at most [`MAX_API_CALLS`] at once (so
    /// a flood of API requests queues here, not as blocking tasks ahead of the sync's).
    ///
    /// # Errors
    /// When the task panicked or was cancelled.
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Replica) -> T + Send + 'static,
    ) -> Result<T, tokio::task::JoinError> {
        // The semaphore is never closed, so the permit always comes.
        let permit = Arc::clone(&self.calls).acquire_owned().await.ok();
        let this = self.clone();
        // The permit goes with the job: a caller that gives up does not free the slot while
        // its job still waits for the engine.
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            this.call_blocking(f)
        })
        .await
    }

    /// Runs `f` on the engine on this thread (a blocking one). A panic in an earlier call
    /// leaves the mutex poisoned; the engine's state is its store, written atomically, so it
    /// is taken as it is.
    pub fn call_blocking<T>(&self, f: impl FnOnce(&mut Replica) -> T) -> T {
        let mut engine = self.engine.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut engine)
    }

    /// Says the engine committed something (watchers wake up).
    pub fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that sees every [`Replicas::changed`].
    #[must_use]
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

/// Where to find an admin to join through.
#[derive(Clone, Debug)]
pub enum Admin {
    /// A connected peer, by node id.
    Node(NodeId),
    /// A peer to dial, at these addresses.
    Peer(PeerId, Vec<Multiaddr>),
}

/// Why a join failed, for the API's status code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// The admin, named by node id, is not connected (user input: give a multiaddr).
    #[error("{0}")]
    NotConnected(String),
    /// Too many joins are waiting.
    #[error("{0}")]
    Busy(String),
    /// The admin could not be reached or did not answer.
    #[error("{0}")]
    Unreachable(String),
    /// The admin refused (not on the ACL, no such syncgroup, not an admin).
    #[error("the admin refused: {0}")]
    Refused(String),
    /// The admin's grant was not taken (it does not verify, or this node is a member).
    #[error("{0}")]
    Grant(String),
}

/// A join's outcome, for the API.
pub type Joined = Result<(), JoinError>;

/// What one sync with a member did, for `GET /syncgroups/...`.
#[derive(Clone, Copy, Debug)]
pub struct LastSync {
    /// When it ended (ms since the epoch).
    pub at_ms: u64,
    /// Records applied.
    pub records: u64,
}

/// Results of blocking jobs.
enum Job {
    Prepared {
        db: String,
        request: Option<DeltaRequest>,
        groups: Groups,
    },
    Served {
        channel: ResponseChannel<Vec<u8>>,
        peer: PeerId,
        /// The encoded reply, and the records it carries.
        reply: (Vec<u8>, u64),
        fault: bool,
        /// The database the requester was answered about (so it is a member to tell news).
        member_of: Option<String>,
    },
    Applied {
        db: String,
        peer: PeerId,
        node: NodeId,
        outcome: ApplyOutcome,
    },
    /// A round's preparation failed (the engine task panicked).
    RoundFailed {
        db: String,
    },
    Accepted {
        db: String,
        peer: PeerId,
        result: Joined,
        tx: oneshot::Sender<Joined>,
    },
    Databases(Vec<String>),
}

/// What applying a reply did: the frames applied before any error, whether the answer goes
/// on, and the error that stopped it (and whether the peer is at fault for it).
struct ApplyOutcome {
    applied: Applied,
    more: bool,
    error: Option<ApplyError>,
}

/// Why a reply was not applied (whole or in part).
enum ApplyError {
    /// The responder was at its limit: ask again soon.
    Busy,
    /// The responder broke the protocol: it is penalized.
    Fault(String),
    /// Anything else (a refusal, a store failure): the member is backed off.
    Failed(String),
}

enum Outbound {
    Delta {
        db: String,
        node: NodeId,
        request: DeltaRequest,
    },
    Join {
        db: String,
        name: String,
        tx: oneshot::Sender<Joined>,
    },
    News {
        node: NodeId,
    },
}

struct WaitingJoin {
    peer: PeerId,
    request: JoinRequest,
    tx: oneshot::Sender<Joined>,
    deadline: Instant,
}

#[derive(Debug, Default)]
struct Counters {
    records_applied: u64,
    records_received: u64,
    records_sent: u64,
    refused: u64,
    conflicts: u64,
    resolved: u64,
    served: u64,
    busy: u64,
    news_received: u64,
    penalized: u64,
}

/// The replica half of the runtime; see the module documentation.
pub struct ReplicaDriver {
    replicas: Replicas,
    /// When to sync and with whom (the sans-IO core the simulator runs too).
    sched: Scheduler,
    peers: HashMap<PeerId, NodeId>,
    nodes: HashMap<NodeId, PeerId>,
    outbound: HashMap<OutboundRequestId, (PeerId, Outbound)>,
    waiting: Vec<WaitingJoin>,
    serving: usize,
    /// Peers with an answer being computed (one each, so no peer takes every slot).
    serving_peers: HashSet<PeerId>,
    jobs_tx: mpsc::Sender<Job>,
    jobs_rx: mpsc::Receiver<Job>,
    last_sync: HashMap<(String, NodeId), LastSync>,
    /// Members not connected that were looked up to dial, and when.
    counters: Counters,
}

impl ReplicaDriver {
    /// A driver over the shared engine; `seed` spreads member picks and round jitter.
    #[must_use]
    pub fn new(replicas: Replicas, seed: u64) -> Self {
        let (jobs_tx, jobs_rx) = mpsc::channel(JOB_QUEUE);
        let config = ScheduleConfig {
            interval: SYNC_INTERVAL,
            news_gap: NEWS_GAP,
            busy_retry: BUSY_RETRY,
            backoff_base: BACKOFF_BASE,
            backoff_max: BACKOFF_MAX,
            max_databases: MAX_DATABASES,
            member_dial_every: MEMBER_DIAL_EVERY,
        };
        let driver = Self {
            replicas,
            sched: Scheduler::new(config, seed),
            peers: HashMap::new(),
            nodes: HashMap::new(),
            outbound: HashMap::new(),
            waiting: Vec::new(),
            serving: 0,
            serving_peers: HashSet::new(),
            jobs_tx,
            jobs_rx,
            last_sync: HashMap::new(),
            counters: Counters::default(),
        };
        driver.load_databases();
        driver
    }

    /// Reads the databases that have syncgroups (blocking), so rounds start at once.
    fn load_databases(&self) {
        let replicas = self.replicas.clone();
        let tx = self.jobs_tx.clone();
        tokio::task::spawn_blocking(move || {
            let listed = guarded(|| replicas.call_blocking(|r| r.synced_databases()));
            match listed {
                Ok(Ok(dbs)) => {
                    let _ = tx.blocking_send(Job::Databases(dbs));
                }
                Ok(Err(e)) => warn!("replica databases not read: {e}"),
                Err(e) => warn!("replica databases not read: {e}"),
            }
        });
    }

    /// The shared engine.
    #[must_use]
    pub fn replicas(&self) -> &Replicas {
        &self.replicas
    }

    /// Waits for the next blocking job's result.
    async fn next_job(&mut self) -> Option<Job> {
        self.jobs_rx.recv().await
    }

    /// A peer completed its handshake.
    pub fn connected(&mut self, swarm: &mut Swarm<Behaviour>, peer: PeerId, node: NodeId) {
        self.peers.insert(peer, node);
        self.nodes.insert(node, peer);
        self.sched.connected(node);
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|w| w.peer == peer);
        self.waiting = waiting;
        for w in ready {
            self.send_join(swarm, peer, w.request, w.tx);
        }
    }

    /// A peer went away.
    pub fn disconnected(&mut self, peer: &PeerId) {
        if let Some(node) = self.peers.remove(peer) {
            self.nodes.remove(&node);
            self.sched.disconnected(&node);
        }
    }

    /// The earliest deadline: a round, a news, a join giving up.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let joins = self.waiting.iter().map(|w| w.deadline);
        self.sched.poll_timeout().into_iter().chain(joins).min()
    }

    /// Starts the rounds and news that are due, and gives up joins past their deadline.
    pub fn timeout(&mut self, swarm: &mut Swarm<Behaviour>, now: Instant) {
        let (expired, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|w| w.deadline <= now);
        self.waiting = waiting;
        for w in expired {
            let _ = w.tx.send(Err(JoinError::Unreachable(format!(
                "the admin {} was not reached within {} s",
                w.peer,
                JOIN_TIMEOUT.as_secs()
            ))));
        }
        self.sched.handle_timeout(now);
        self.drain(swarm, now);
    }

    /// Carries out what the scheduler asks: reads for a round (blocking), GetDeltas and
    /// news to members (a member no longer connected fails at once).
    fn drain(&mut self, swarm: &mut Swarm<Behaviour>, now: Instant) {
        while let Some(action) = self.sched.poll_action() {
            match action {
                Action::Prepare { db } => self.prepare(db),
                Action::Ask {
                    db,
                    member,
                    request,
                } => {
                    let Some(&peer) = self.nodes.get(&member) else {
                        self.sched.answered(now, &db, member, Outcome::Failed);
                        continue;
                    };
                    let bytes = ReplicaRequest {
                        message: Some(replica_request::Message::Delta(request.clone())),
                    }
                    .encode_to_vec();
                    let id = swarm.behaviour_mut().replica.send_request(&peer, bytes);
                    let outbound = Outbound::Delta {
                        db,
                        node: member,
                        request,
                    };
                    self.outbound.insert(id, (peer, outbound));
                }
                Action::News { member, db } => {
                    let Some(&peer) = self.nodes.get(&member) else {
                        self.sched.news_done(member);
                        continue;
                    };
                    let bytes = ReplicaRequest {
                        message: Some(replica_request::Message::News(News { db })),
                    }
                    .encode_to_vec();
                    let id = swarm.behaviour_mut().replica.send_request(&peer, bytes);
                    self.outbound
                        .insert(id, (peer, Outbound::News { node: member }));
                }
            }
        }
    }

    fn prepare(&self, db: String) {
        let replicas = self.replicas.clone();
        let tx = self.jobs_tx.clone();
        tokio::task::spawn_blocking(move || {
            let inputs = guarded(|| replicas.call_blocking(|r| round_inputs(r, &db)))
                .and_then(|r| r.map_err(|e| e.to_string()));
            let job = match inputs {
                Ok((request, groups)) => Job::Prepared {
                    db,
                    request,
                    groups,
                },
                Err(e) => {
                    warn!(db, "replica round not prepared: {e}");
                    Job::RoundFailed { db }
                }
            };
            let _ = tx.blocking_send(job);
        });
    }

    /// The API wrote to `db`: tell its members soon (a database without a syncgroup is not
    /// scheduled and has no one to tell).
    pub fn local_write(&mut self, now: Instant, db: &str) {
        self.sched.local_write(now, db);
    }

    /// The API created or joined a syncgroup of `db`: its rounds start now.
    pub fn track(&mut self, now: Instant, db: &str) {
        if !self.sched.track(now, db) {
            warn!(db, "not synced: {MAX_DATABASES} databases are already");
        }
    }

    /// A news to `node` ended: the next one waiting for it goes.
    fn news_done(&mut self, swarm: &mut Swarm<Behaviour>, now: Instant, node: NodeId) {
        self.sched.news_done(node);
        self.drain(swarm, now);
    }

    /// Joins `db`/`name` through `admin`; the answer goes to `tx`.
    pub fn join(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        now: Instant,
        (db, name, admin): (String, String, Admin),
        tx: oneshot::Sender<Joined>,
    ) {
        let request = JoinRequest {
            db,
            syncgroup: name,
        };
        match admin {
            Admin::Node(node) => match self.nodes.get(&node) {
                Some(&peer) => self.send_join(swarm, peer, request, tx),
                None => {
                    let _ = tx.send(Err(JoinError::NotConnected(format!(
                        "admin {node} is not connected; give its multiaddr (/ip4/…/p2p/…)"
                    ))));
                }
            },
            Admin::Peer(peer, addrs) => {
                if self.peers.contains_key(&peer) {
                    self.send_join(swarm, peer, request, tx);
                    return;
                }
                if self.waiting.len() >= MAX_JOINS {
                    let _ = tx.send(Err(JoinError::Busy(format!(
                        "{MAX_JOINS} joins are waiting; try later"
                    ))));
                    return;
                }
                let opts = DialOpts::peer_id(peer)
                    .addresses(addrs)
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    .build();
                if let Err(e) = swarm.dial(opts) {
                    debug!(%peer, "join dial: {e}");
                }
                self.waiting.push(WaitingJoin {
                    peer,
                    request,
                    tx,
                    deadline: now + JOIN_TIMEOUT,
                });
            }
        }
    }

    /// A dial failed: joins waiting for that peer fail now, with why.
    pub fn dial_failed(&mut self, peer: &PeerId, why: &str) {
        let (failed, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|w| w.peer == *peer);
        self.waiting = waiting;
        for w in failed {
            let _ = w.tx.send(Err(JoinError::Unreachable(format!(
                "cannot reach the admin {peer}: {why}"
            ))));
        }
    }

    fn send_join(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        peer: PeerId,
        request: JoinRequest,
        tx: oneshot::Sender<Joined>,
    ) {
        let (db, name) = (request.db.clone(), request.syncgroup.clone());
        let bytes = ReplicaRequest {
            message: Some(replica_request::Message::Join(request)),
        }
        .encode_to_vec();
        let id = swarm.behaviour_mut().replica.send_request(&peer, bytes);
        self.outbound
            .insert(id, (peer, Outbound::Join { db, name, tx }));
    }

    /// Handles what the swarm reports on the replica protocol.
    pub fn on_swarm_event(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        now: Instant,
        event: request_response::Event<Vec<u8>, Vec<u8>>,
    ) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => self.on_request(swarm, now, peer, &request, channel),
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => self.on_response(swarm, now, peer, request_id, response),
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                debug!(%peer, "replica request failed: {error}");
                self.failed(swarm, now, peer, request_id, &error.to_string());
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                debug!(%peer, "replica request not answered: {error}");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    fn on_request(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        now: Instant,
        peer: PeerId,
        bytes: &[u8],
        channel: ResponseChannel<Vec<u8>>,
    ) {
        let Some(&node) = self.peers.get(&peer) else {
            // Not handshaken here yet (the other side may be ready first): busy, so it asks
            // again soon without backing this node off.
            let _ = swarm
                .behaviour_mut()
                .replica
                .send_response(channel, refusal(BUSY));
            return;
        };
        let Ok(ReplicaRequest {
            message: Some(message),
        }) = ReplicaRequest::decode(bytes)
        else {
            self.penalize(swarm, now, peer, "a malformed replica request");
            return;
        };
        if let replica_request::Message::News(news) = message {
            self.counters.news_received += 1;
            let _ = swarm
                .behaviour_mut()
                .replica
                .send_response(channel, reply(replica_reply::Message::Ack(Ack {})));
            self.on_news(now, node, &news.db);
            return;
        }
        if self.serving >= MAX_SERVING || self.serving_peers.contains(&peer) {
            self.counters.busy += 1;
            let _ = swarm
                .behaviour_mut()
                .replica
                .send_response(channel, refusal(BUSY));
            return;
        }
        self.serving += 1;
        self.serving_peers.insert(peer);
        let replicas = self.replicas.clone();
        let tx = self.jobs_tx.clone();
        let db = match &message {
            replica_request::Message::Delta(d) => d.db.clone(),
            replica_request::Message::Join(j) => j.db.clone(),
            replica_request::Message::News(n) => n.db.clone(),
        };
        tokio::task::spawn_blocking(move || {
            let (reply, fault) = guarded(|| replicas.call_blocking(|r| serve(r, node, message)))
                .unwrap_or_else(|e| {
                    warn!(%peer, "replica request not served: {e}");
                    let failed = ReplicaReply {
                        message: Some(replica_reply::Message::Refused(Refusal {
                            message: "the node failed to answer".into(),
                        })),
                    };
                    (failed, false)
                });
            let answered = !matches!(reply.message, Some(replica_reply::Message::Refused(_)));
            let records = match &reply.message {
                Some(replica_reply::Message::Frames(f)) => {
                    f.frames.iter().map(|f| f.records.len() as u64).sum()
                }
                _ => 0,
            };
            // Encoded here, not on the loop: a reply may be 36 MiB.
            let _ = tx.blocking_send(Job::Served {
                channel,
                peer,
                reply: (reply.encode_to_vec(), records),
                fault,
                member_of: answered.then_some(db),
            });
        });
    }

    /// News from a member: a round with it soon (the scheduler takes news only from a member
    /// of a database synced here, and starts at most one round per [`NEWS_GAP`]).
    fn on_news(&mut self, now: Instant, node: NodeId, db: &str) {
        if check_name("database", db).is_ok() {
            self.sched.news(now, node, db);
        }
    }

    fn on_response(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        now: Instant,
        peer: PeerId,
        id: OutboundRequestId,
        bytes: Vec<u8>,
    ) {
        let Some((_, outbound)) = self.outbound.remove(&id) else {
            return;
        };
        match outbound {
            Outbound::News { node } => self.news_done(swarm, now, node),
            // Decoded with the apply, off the loop: a reply may be 36 MiB.
            Outbound::Delta { db, node, request } => self.apply(db, peer, node, request, bytes),
            Outbound::Join { db, name, tx } => match ReplicaReply::decode(bytes.as_slice()) {
                Ok(ReplicaReply {
                    message: Some(replica_reply::Message::Grant(grant)),
                }) => self.accept(db, name, peer, *grant, tx),
                Ok(ReplicaReply {
                    message: Some(replica_reply::Message::Refused(r)),
                }) => {
                    let e = if r.message == BUSY {
                        JoinError::Busy("the admin is busy; try again".into())
                    } else {
                        JoinError::Refused(r.message)
                    };
                    let _ = tx.send(Err(e));
                }
                _ => {
                    let _ = tx.send(Err(JoinError::Unreachable(
                        "the admin answered something else".into(),
                    )));
                    self.penalize(swarm, now, peer, "a malformed replica reply");
                }
            },
        }
    }

    fn apply(
        &mut self,
        db: String,
        peer: PeerId,
        node: NodeId,
        request: DeltaRequest,
        bytes: Vec<u8>,
    ) {
        let replicas = self.replicas.clone();
        let tx = self.jobs_tx.clone();
        tokio::task::spawn_blocking(move || {
            let outcome =
                guarded(|| replicas.call_blocking(|r| apply_reply(r, &request, node, &bytes)))
                    .unwrap_or_else(|e| ApplyOutcome {
                        applied: Applied::default(),
                        more: false,
                        error: Some(ApplyError::Failed(e)),
                    });
            let _ = tx.blocking_send(Job::Applied {
                db,
                peer,
                node,
                outcome,
            });
        });
    }

    fn accept(
        &mut self,
        db: String,
        name: String,
        peer: PeerId,
        grant: Grant,
        tx: oneshot::Sender<Joined>,
    ) {
        let replicas = self.replicas.clone();
        let jobs = self.jobs_tx.clone();
        tokio::task::spawn_blocking(move || {
            let result = guarded(|| replicas.call_blocking(|r| accept_grant(r, &db, &name, grant)))
                .unwrap_or_else(|e| Err(JoinError::Grant(e)));
            let _ = jobs.blocking_send(Job::Accepted {
                db,
                peer,
                result,
                tx,
            });
        });
    }

    fn failed(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        now: Instant,
        peer: PeerId,
        id: OutboundRequestId,
        why: &str,
    ) {
        if let Some((_, outbound)) = self.outbound.remove(&id) {
            self.outbound_failed(swarm, now, peer, outbound, why);
        }
    }

    fn outbound_failed(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        now: Instant,
        peer: PeerId,
        outbound: Outbound,
        why: &str,
    ) {
        match outbound {
            Outbound::News { node } => self.news_done(swarm, now, node),
            Outbound::Join { tx, .. } => {
                let _ = tx.send(Err(JoinError::Unreachable(format!(
                    "the admin {peer}: {why}"
                ))));
            }
            Outbound::Delta { db, node, .. } => {
                debug!(%peer, db, "sync failed: {why}");
                self.sched.answered(now, &db, node, Outcome::Failed);
                self.drain(swarm, now);
            }
        }
    }

    fn penalize(&mut self, swarm: &mut Swarm<Behaviour>, now: Instant, peer: PeerId, why: &str) {
        warn!(%peer, "refused peer: {why}");
        self.counters.penalized += 1;
        if let Some(&node) = self.peers.get(&peer) {
            self.sched.penalized(now, node);
        }
        let _ = swarm.disconnect_peer_id(peer);
    }

    /// Carries out a blocking job's result.
    fn on_job(&mut self, swarm: &mut Swarm<Behaviour>, now: Instant, job: Job) {
        match job {
            Job::Databases(dbs) => self.sched.databases(now, dbs),
            Job::Prepared {
                db,
                request,
                groups,
            } => self.on_prepared(swarm, now, &db, request, groups),
            Job::RoundFailed { db } => {
                self.sched.prepare_failed(now, &db);
                self.drain(swarm, now);
            }
            Job::Served {
                channel,
                peer,
                reply: (bytes, records),
                fault,
                member_of,
            } => {
                self.serving = self.serving.saturating_sub(1);
                self.serving_peers.remove(&peer);
                if let (Some(db), Some(&node)) = (member_of, self.peers.get(&peer)) {
                    self.sched.add_member(&db, node);
                }
                self.counters.served += 1;
                self.counters.records_sent += records;
                let _ = swarm.behaviour_mut().replica.send_response(channel, bytes);
                if fault {
                    self.penalize(swarm, now, peer, "a malformed replica request");
                }
            }
            Job::Applied {
                db,
                peer,
                node,
                outcome,
            } => self.on_applied(swarm, now, (&db, peer, node), outcome),
            Job::Accepted {
                db,
                peer,
                result,
                tx,
            } => {
                if result.is_ok() {
                    self.replicas.changed();
                    let admin = self.peers.get(&peer).copied();
                    self.sched.joined(now, &db, admin);
                }
                let _ = tx.send(result);
            }
        }
    }

    fn on_prepared(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        now: Instant,
        db: &str,
        request: Option<DeltaRequest>,
        groups: Groups,
    ) {
        if request.is_some() {
            let members: HashSet<&NodeId> = groups.values().flatten().collect();
            self.last_sync
                .retain(|(d, n), _| d != db || members.contains(n));
        } else {
            // No syncgroup joined any more (left, ejected): nothing to sync; a later create
            // or join tracks the database again.
            self.last_sync.retain(|(d, _), _| d != db);
        }
        self.sched.prepared(now, db, request, groups);
        self.drain(swarm, now);
    }

    fn on_applied(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        now: Instant,
        (db, peer, node): (&str, PeerId, NodeId),
        outcome: ApplyOutcome,
    ) {
        let ApplyOutcome {
            applied,
            more,
            error,
        } = outcome;
        let c = &mut self.counters;
        c.records_applied += applied.new;
        c.conflicts += applied.conflicts;
        c.resolved += applied.resolved;
        c.refused += applied.refused.len() as u64;
        if applied.new > 0 || applied.conflicts > 0 {
            // No news relayed: in a group whose members all connect, every member would
            // relay every write to every other (n² rounds a write); members not connected
            // to a writer get its writes at their next round.
            self.replicas.changed();
        }
        let entry = self
            .last_sync
            .entry((db.to_string(), node))
            .or_insert(LastSync {
                at_ms: 0,
                records: 0,
            });
        entry.at_ms = now_ms();
        entry.records = applied.new;
        let result = match error {
            Some(ApplyError::Busy) => Outcome::Busy,
            Some(ApplyError::Fault(why)) => {
                self.penalize(swarm, now, peer, &why);
                Outcome::Fault
            }
            Some(ApplyError::Failed(why)) => {
                warn!(%peer, db, "sync not applied: {why}");
                Outcome::Failed
            }
            None => {
                if let Some(why) = sender_fault(&applied) {
                    self.penalize(swarm, now, peer, &why);
                    Outcome::Fault
                } else if !applied.refused.is_empty() {
                    // Refusals that need not be the sender's doing (a record of a writer
                    // since ejected, a clock far ahead): asked of another member next.
                    Outcome::Failed
                } else if more && applied.records == 0 {
                    // An honest answer says `more` only after a full budget of records.
                    let why = "an answer that goes on without records";
                    self.penalize(swarm, now, peer, why);
                    Outcome::Fault
                } else if more {
                    Outcome::More
                } else {
                    Outcome::Complete
                }
            }
        };
        self.sched.answered(now, db, node, result);
        self.drain(swarm, now);
    }

    /// Members of the databases synced here that are not connected, each at most once per
    /// [`MEMBER_DIAL_EVERY`]: the runtime looks them up among the overlay's known peers and
    /// dials them.
    pub fn members_to_dial(&mut self, now: Instant) -> BTreeSet<NodeId> {
        self.sched.members_to_dial(now)
    }

    /// The last sync with each member, for the API.
    #[must_use]
    pub fn last_syncs(&self, db: &str) -> Vec<(NodeId, LastSync)> {
        self.last_sync
            .iter()
            .filter(|((d, _), _)| d == db)
            .map(|((_, n), s)| (*n, *s))
            .collect()
    }

    /// Waits for a blocking job and carries it out.
    pub async fn next_event(&mut self) -> Option<JobEvent> {
        self.next_job().await.map(JobEvent)
    }

    /// Carries out what [`ReplicaDriver::next_event`] returned.
    pub fn on_event(&mut self, swarm: &mut Swarm<Behaviour>, now: Instant, event: JobEvent) {
        self.on_job(swarm, now, event.0);
    }

    /// Per (database, syncgroup): seconds since an answer of one of its members last ended
    /// complete (see the `tributary_replica_syncgroup_lag_seconds` help).
    fn lags(&self, now: Instant) -> Metric {
        let samples = self
            .sched
            .lags(now)
            .into_iter()
            .map(|(db, name, lag)| (vec![("db", db), ("syncgroup", name)], lag.as_secs_f64()))
            .collect();
        Metric {
            name: "tributary_replica_syncgroup_lag_seconds",
            help: "Per syncgroup, seconds since a sync with one of its members last ended with \
                   nothing more to send (every write that member held then is here); counted \
                   from when this process began syncing the database if none has.",
            kind: "gauge",
            samples,
        }
    }

    /// The driver's metrics at `now`.
    #[must_use]
    pub fn metrics(&self, now: Instant) -> Vec<Metric> {
        let c = &self.counters;
        let sched = self.sched.stats();
        #[expect(
            clippy::cast_precision_loss,
            reason = "metric values are approximate by nature"
        )]
        let v = |n: u64| n as f64;
        let m = |name, help, n| Metric::single(name, help, "counter", v(n));
        vec![
            m(
                "tributary_replica_rounds_total",
                "Sync rounds started.",
                sched.rounds,
            ),
            m(
                "tributary_replica_rounds_failed_total",
                "Sync rounds that failed (timeout, refusal, records refused, apply error, a peer at fault).",
                sched.rounds_failed,
            ),
            m(
                "tributary_replica_records_received_total",
                "Log records received in answers.",
                c.records_received,
            ),
            m(
                "tributary_replica_records_applied_total",
                "New log records applied.",
                c.records_applied,
            ),
            m(
                "tributary_replica_records_sent_total",
                "Log records sent in answers.",
                c.records_sent,
            ),
            m(
                "tributary_replica_records_refused_total",
                "Records and syncgroup changes refused.",
                c.refused,
            ),
            m(
                "tributary_replica_conflicts_total",
                "Rows found in conflict after a sync.",
                c.conflicts,
            ),
            m(
                "tributary_replica_conflicts_resolved_total",
                "Conflicts resolved at once by last-writer-wins.",
                c.resolved,
            ),
            m(
                "tributary_replica_answers_total",
                "GetDeltas answers served.",
                c.served,
            ),
            m(
                "tributary_replica_busy_total",
                "Requests refused for load.",
                c.busy,
            ),
            m(
                "tributary_replica_news_sent_total",
                "News sent.",
                sched.news_sent,
            ),
            m(
                "tributary_replica_news_received_total",
                "News received.",
                c.news_received,
            ),
            m(
                "tributary_replica_continuations_total",
                "Answers that went on (more) and were asked again at once.",
                sched.continuations,
            ),
            m(
                "tributary_replica_penalized_total",
                "Peers disconnected for bad replica messages or records.",
                c.penalized,
            ),
            self.lags(now),
        ]
    }
}

/// A blocking job's result, for the runtime's loop.
pub struct JobEvent(Job);

fn reply(message: replica_reply::Message) -> Vec<u8> {
    ReplicaReply {
        message: Some(message),
    }
    .encode_to_vec()
}

fn refusal(message: &str) -> Vec<u8> {
    reply(replica_reply::Message::Refused(Refusal {
        message: message.into(),
    }))
}

/// Answers one request (blocking); whether it was malformed (the requester is penalized).
fn serve(r: &mut Replica, node: NodeId, message: replica_request::Message) -> (ReplicaReply, bool) {
    let result = match message {
        replica_request::Message::Delta(req) => answer(r, node, &req),
        replica_request::Message::Join(join) => r
            .admin_join(now_ms(), &join.db, &join.syncgroup, node)
            .map(|g| {
                replica_reply::Message::Grant(Box::new(Grant {
                    state: Some(g.state),
                    checkpoint: Some(g.checkpoint),
                }))
            }),
        replica_request::Message::News(_) => Ok(replica_reply::Message::Ack(Ack {})),
    };
    match result {
        Ok(message) => (
            ReplicaReply {
                message: Some(message),
            },
            false,
        ),
        Err(e) => {
            let fault = matches!(e, ReplicaError::Malformed(_) | ReplicaError::BadName { .. });
            (
                ReplicaReply {
                    message: Some(replica_reply::Message::Refused(Refusal {
                        message: e.to_string(),
                    })),
                },
                fault,
            )
        }
    }
}

/// GetDeltas frames for `req`, up to the reply budget.
fn answer(
    r: &Replica,
    node: NodeId,
    req: &DeltaRequest,
) -> Result<replica_reply::Message, ReplicaError> {
    let mut answer = r.answer(req, node)?;
    let mut frames = Vec::new();
    let mut bytes = 0;
    let mut more = false;
    while let Some(frame) = answer.next_frame(r)? {
        // Records only: the syncgroup states of a first frame go with every answer, and
        // counting them would leave a continuation little room.
        bytes += frame
            .records
            .iter()
            .map(Message::encoded_len)
            .sum::<usize>();
        let last = frame.last;
        frames.push(frame);
        if bytes >= REPLICA_REPLY_BUDGET && !last {
            more = true;
            break;
        }
    }
    Ok(replica_reply::Message::Frames(DeltaFrames { frames, more }))
}

/// Takes an admin's grant for `db`/`name` (blocking).
fn accept_grant(r: &mut Replica, db: &str, name: &str, grant: Grant) -> Joined {
    let (Some(state), Some(checkpoint)) = (grant.state, grant.checkpoint) else {
        return Err(JoinError::Grant("the admin's grant is incomplete".into()));
    };
    let named = state.spec.as_ref().map(|s| s.name.as_str());
    if state.db != db || named != Some(name) || checkpoint.syncgroup != name {
        return Err(JoinError::Grant(
            "the admin granted another syncgroup".into(),
        ));
    }
    r.accept_join(&JoinGrant { state, checkpoint })
        .map_err(|e| JoinError::Grant(e.to_string()))
}

/// Runs `f`, turning a panic into an error (so a job always reports back, and no round or
/// serving slot is left taken).
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| {
        p.downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into())
    })
}

/// Decodes a GetDeltas reply and applies its frames (blocking); stops at the first error,
/// keeping what the frames before it applied.
fn apply_reply(
    r: &mut Replica,
    request: &DeltaRequest,
    node: NodeId,
    bytes: &[u8],
) -> ApplyOutcome {
    let mut outcome = ApplyOutcome {
        applied: Applied::default(),
        more: false,
        error: None,
    };
    let frames = match ReplicaReply::decode(bytes) {
        Ok(ReplicaReply {
            message: Some(replica_reply::Message::Frames(frames)),
        }) => frames,
        Ok(ReplicaReply {
            message: Some(replica_reply::Message::Refused(refusal)),
        }) => {
            outcome.error = Some(if refusal.message == BUSY {
                ApplyError::Busy
            } else {
                ApplyError::Failed(format!("refused: {}", refusal.message))
            });
            return outcome;
        }
        _ => {
            outcome.error = Some(ApplyError::Fault("a malformed GetDeltas reply".into()));
            return outcome;
        }
    };
    outcome.more = frames.more;
    for frame in &frames.frames {
        match r.apply_frame(now_ms(), request, node, frame) {
            Ok(applied) => outcome.applied.add(applied),
            Err(e) => {
                let fault = matches!(
                    e,
                    ReplicaError::Malformed(_)
                        | ReplicaError::BadName { .. }
                        | ReplicaError::Refused(_)
                );
                outcome.error = Some(if fault {
                    ApplyError::Fault(e.to_string())
                } else {
                    ApplyError::Failed(e.to_string())
                });
                return outcome;
            }
        }
    }
    outcome
}

/// The first refusal of `applied` that only a lying or broken sender causes (a forged or
/// altered record, two records under one generation, a malformed one, a batch cut short):
/// reasons a record of an honest relay can also have (its writer since ejected, a
/// collection outside the request, a clock far ahead) are not the sender's fault.
fn sender_fault(applied: &Applied) -> Option<String> {
    use tributary_replica::RefusalReason as R;
    let faults = applied.refused.iter().filter(|(_, _, why)| {
        matches!(
            why,
            R::Malformed(_)
                | R::WrongVersion
                | R::BadSignature
                | R::Equivocation(_)
                | R::IncompleteBatch { .. }
        )
    });
    let count = faults.clone().count();
    faults
        .take(1)
        .map(|(_, _, why)| format!("{count} refused records, the first: {why}"))
        .next()
}
