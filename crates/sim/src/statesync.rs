//! State sync on the simulator: one x/sync client and servers that answer honestly, lie in
//! each of the ways of avalanchego's `Test_Sync_Result_Correct_Root`, stay silent or flake,
//! over links with latency and loss, with the target moving and the client crashing.
//!
//! The client is node 0 of the simulator's network (`net`, the one every simulator
//! runs on) and server `k` its node `k + 1`; the client dials a server with its first
//! request. Every server answers from one source database (its answers are then corrupted as
//! its [`ServerKind`] kind says); a request or answer may be lost, and a request with no
//! answer within [`SyncConfig::timeout`] fails. A crash drops the client and closes its
//! links, with the requests and answers in flight on them; the restart opens a new client on
//! the same store, as `tributary state sync` does after a kill.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use rand::Rng;
use rand::rngs::StdRng;
use tributary_merkle::{BatchOp, Config, Hash, MerkleDb};
use tributary_statesync::client::{Client, ClientConfig, ClientError};
use tributary_statesync::server::{Reply, handle};
use tributary_store::MemStore;
use tributary_wire::sync::{self as pb, change_proof_response, request};

use crate::net::{self, Check, LinkConfig, Net, Protocol};
use crate::queue;

/// How a server answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServerKind {
    /// As the server core answers.
    Honest,
    /// Adds a key after the last one.
    AddLeaf,
    /// Leaves out the first key.
    DropFirst,
    /// Leaves out a middle key.
    DropMiddle,
    /// Changes a middle value.
    Tamper,
    /// Removes the start and end proofs.
    StripProofs,
    /// Sends an empty proof.
    Empty,
    /// Random bytes.
    Garbage,
    /// Each answer a different lie, in turn through [`LIES`].
    EveryLie,
    /// Never answers: requests time out.
    Silent,
    /// Answers honestly half of the time, else not at all.
    Flaky,
}

/// Every way of lying.
pub const LIES: [ServerKind; 7] = [
    ServerKind::AddLeaf,
    ServerKind::DropFirst,
    ServerKind::DropMiddle,
    ServerKind::Tamper,
    ServerKind::StripProofs,
    ServerKind::Empty,
    ServerKind::Garbage,
];

impl ServerKind {
    /// How this kind answers one request: [`ServerKind::EveryLie`] tells the lie after
    /// `next_lie` (and advances it), [`ServerKind::Flaky`] is honest or silent at random, the
    /// others are themselves.
    pub(crate) fn this_answer(self, next_lie: &mut usize, rng: &mut StdRng) -> Self {
        match self {
            Self::EveryLie => {
                *next_lie = (*next_lie + 1) % LIES.len();
                LIES[*next_lie]
            }
            Self::Flaky if rng.random_bool(0.5) => Self::Silent,
            Self::Flaky => Self::Honest,
            other => other,
        }
    }

    /// Whether this kind of server sends invalid answers.
    #[must_use]
    pub const fn lies(self) -> bool {
        !matches!(self, Self::Honest | Self::Silent | Self::Flaky)
    }
}

/// Parameters of a state-sync simulation.
#[derive(Clone, Debug)]
pub struct SyncConfig {
    /// The seed.
    pub seed: u64,
    /// Shortest one-way latency.
    pub latency_min: Duration,
    /// Longest one-way latency.
    pub latency_max: Duration,
    /// Probability that a request or an answer is lost.
    pub loss: f64,
    /// How long the client waits for an answer.
    pub timeout: Duration,
    /// If set, the client crashes after a uniformly drawn time in this range, again and again.
    pub crash_every: Option<(Duration, Duration)>,
    /// How long a crashed client stays down.
    pub restart_after: Duration,
    /// The client's limits.
    pub client: ClientConfig,
}

impl SyncConfig {
    /// 5–50 ms latency, no loss, 2 s timeouts, no crashes, default client limits.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            latency_min: Duration::from_millis(5),
            latency_max: Duration::from_millis(50),
            loss: 0.0,
            timeout: Duration::from_secs(2),
            crash_every: None,
            restart_after: Duration::from_millis(100),
            client: ClientConfig::default(),
        }
    }
}

/// What happened in a run.
#[derive(Clone, Debug, Default)]
pub struct SyncStats {
    /// Range-proof requests served.
    pub range_requests: u64,
    /// Change-proof requests served.
    pub change_requests: u64,
    /// Lies told, by kind.
    pub lies: BTreeMap<ServerKind, u64>,
    /// Penalties the client gave each server (summed over the client's lives).
    pub penalties: BTreeMap<usize, u32>,
    /// Requests that timed out.
    pub timeouts: u64,
    /// Requests and answers lost.
    pub lost: u64,
    /// Crashes.
    pub crashes: u64,
    /// How often each key arrived in an honest answer delivered to a request still waiting
    /// for it, at each root: a key fetched twice at the same root is wasted work.
    pub received: HashMap<(Hash, Vec<u8>), u32>,
}

impl SyncStats {
    /// Keys that arrived more than once for the same root.
    #[must_use]
    pub fn fetched_twice(&self) -> usize {
        self.received.values().filter(|n| **n > 1).count()
    }
}

/// What travels between the client and a server.
#[derive(Debug)]
pub(crate) enum Message {
    Request {
        id: u64,
        bytes: Vec<u8>,
    },
    Answer {
        id: u64,
        bytes: Vec<u8>,
        keys: Option<(Hash, Vec<Vec<u8>>)>,
    },
}

/// The simulator's own events.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Event {
    Timeout { life: u64, id: u64 },
    Wake,
    Crash,
    Restart,
    MoveTarget { new_keys: usize },
}

/// The client's node on the network (server `k` is node `k + 1`).
const CLIENT: usize = 0;

/// A client, its servers and the links between them.
pub struct SyncSim {
    config: SyncConfig,
    net: Net<Message, Event>,
    source: MerkleDb,
    servers: Vec<ServerKind>,
    next_lie: usize,
    store: Arc<MemStore>,
    client: Option<Client<usize>>,
    life: u64,
    waiting: BTreeSet<u64>,
    armed: Option<std::time::Instant>,
    target: Hash,
    targets: Vec<Hash>,
    stats: SyncStats,
}

fn open(store: &Arc<MemStore>) -> Result<MerkleDb, ClientError> {
    Ok(MerkleDb::open(
        Arc::clone(store) as Arc<dyn tributary_store::KvStore>,
        Config::default(),
    )?)
}

/// `n` random pairs: keys of 1–24 bytes, values of 0–80.
#[must_use]
pub fn random_pairs(rng: &mut StdRng, n: usize) -> Vec<BatchOp> {
    (0..n)
        .map(|_| {
            let key: Vec<u8> = (0..rng.random_range(1..24)).map(|_| rng.random()).collect();
            let value: Vec<u8> = (0..rng.random_range(0..80)).map(|_| rng.random()).collect();
            BatchOp::Put(key, value)
        })
        .collect()
}

impl SyncSim {
    /// A source of `keys` random pairs, served by `servers`, and a client with an empty
    /// database syncing to its root.
    ///
    /// # Errors
    /// When a database fails.
    pub fn new(
        config: SyncConfig,
        keys: usize,
        servers: Vec<ServerKind>,
    ) -> Result<Self, ClientError> {
        let links = LinkConfig {
            latency_min: config.latency_min,
            latency_max: config.latency_max,
            loss: config.loss,
        };
        let mut net = Net::new(config.seed, links);
        for _ in 0..=servers.len() {
            net.add_node();
        }
        let source = open(&Arc::new(MemStore::new()))?;
        source.commit(random_pairs(net.rng(), keys))?;
        let target = source.root();
        let mut sim = Self {
            config,
            net,
            source,
            servers,
            next_lie: 0,
            store: Arc::new(MemStore::new()),
            client: None,
            life: 0,
            waiting: BTreeSet::new(),
            armed: None,
            target,
            targets: vec![target],
            stats: SyncStats::default(),
        };
        sim.start_client()?;
        Ok(sim)
    }

    /// What happened so far.
    #[must_use]
    pub fn stats(&self) -> SyncStats {
        SyncStats {
            lost: self.net.stats().lost,
            ..self.stats.clone()
        }
    }

    /// The roots the target has been, in order.
    #[must_use]
    pub fn targets(&self) -> &[Hash] {
        &self.targets
    }

    /// The source's keys and values at the current target.
    ///
    /// # Errors
    /// When the source fails.
    pub fn source_len(&self) -> Result<usize, ClientError> {
        Ok(self
            .source
            .key_values(&self.target, None, None, usize::MAX)?
            .len())
    }

    /// The root of the client's database (opened from its store).
    ///
    /// # Errors
    /// When the database fails.
    pub fn client_root(&self) -> Result<Hash, ClientError> {
        match &self.client {
            Some(c) => Ok(c.db().root()),
            None => Ok(open(&self.store)?.root()),
        }
    }

    /// Virtual time since the start.
    #[must_use]
    pub fn elapsed(&self) -> Duration {
        self.net.elapsed()
    }

    /// At virtual time `at`, the source changes (a third of its keys changed, a third deleted,
    /// `new_keys / 3` added) and the client is told the new target.
    pub fn move_target_at(&mut self, at: Duration, new_keys: usize) {
        let at = self.net.at(at);
        self.net.schedule(at, Event::MoveTarget { new_keys });
    }

    /// Runs until the client is done, or `limit` of virtual time has passed. Returns whether
    /// it is done.
    ///
    /// # Errors
    /// A client failure (a database error, or finishing at another root than the target).
    pub fn run(&mut self, limit: Duration) -> Result<bool, ClientError> {
        let end = self.net.at(limit);
        net::run(self, end, Check::EveryEvent, Self::is_done)
    }

    fn is_done(&self) -> Result<bool, ClientError> {
        match &self.client {
            Some(c) => c.is_done(),
            None => Ok(false),
        }
    }

    fn start_client(&mut self) -> Result<(), ClientError> {
        let peers = (0..self.servers.len()).collect();
        let client = Client::new(
            open(&self.store)?,
            self.target,
            peers,
            self.config.client.clone(),
        )?;
        self.client = Some(client);
        self.life += 1;
        if let Some((lo, hi)) = self.config.crash_every {
            let after = queue::latency(self.net.rng(), lo, hi);
            let at = self.net.now() + after;
            self.net.schedule(at, Event::Crash);
        }
        self.pump();
        Ok(())
    }

    /// Sends what the client wants sent and arms its wake-up.
    fn pump(&mut self) {
        let now = self.net.now();
        let Some(client) = self.client.as_mut() else {
            return;
        };
        let mut sends = Vec::new();
        while let Some(out) = client.poll_request(now) {
            sends.push(out);
        }
        let wake = client.next_wakeup();
        for out in sends {
            self.waiting.insert(out.id);
            let life = self.life;
            self.net.schedule(
                now + self.config.timeout,
                Event::Timeout { life, id: out.id },
            );
            let request = Message::Request {
                id: out.id,
                bytes: out.bytes,
            };
            self.net.send_dialing(CLIENT, out.peer + 1, request);
        }
        // A wake-up not after now is moot: the client had its chance to send. One armed at a
        // time, the earliest.
        if let Some(at) = wake.filter(|at| *at > now)
            && self.armed.is_none_or(|armed| at < armed)
        {
            self.armed = Some(at);
            self.net.schedule(at, Event::Wake);
        }
    }

    /// A message reached node `to`: a request reached server `to - 1`, or an answer the client.
    fn deliver(&mut self, to: usize, msg: Message) -> Result<(), ClientError> {
        let now = self.net.now();
        match msg {
            Message::Request { id, bytes } => {
                if let Some(server) = to.checked_sub(1) {
                    self.serve(id, server, &bytes)?;
                }
            }
            Message::Answer { id, bytes, keys } => {
                if self.waiting.remove(&id) {
                    if let Some((root, keys)) = keys {
                        for key in keys {
                            *self.stats.received.entry((root, key)).or_default() += 1;
                        }
                    }
                    if let Some(client) = self.client.as_mut() {
                        client.handle_response(now, id, &bytes)?;
                    }
                }
            }
        }
        self.pump();
        Ok(())
    }

    fn local(&mut self, event: Event) -> Result<(), ClientError> {
        let now = self.net.now();
        match event {
            Event::Timeout { life, id } => {
                if life == self.life && self.waiting.remove(&id) {
                    self.stats.timeouts += 1;
                    if let Some(client) = self.client.as_mut() {
                        client.handle_failure(now, id);
                    }
                }
            }
            Event::Wake => self.armed = None,
            Event::Crash => self.crash(),
            Event::Restart => {
                self.net.restart(CLIENT);
                self.start_client()?;
            }
            Event::MoveTarget { new_keys } => {
                self.churn(new_keys)?;
                if let Some(client) = self.client.as_mut() {
                    client.update_target(self.target)?;
                }
            }
        }
        self.pump();
        Ok(())
    }

    fn crash(&mut self) {
        if let Some(client) = self.client.take() {
            for (peer, n) in client.penalties() {
                *self.stats.penalties.entry(*peer).or_default() += n;
            }
        }
        self.stats.crashes += 1;
        self.life += 1;
        self.waiting.clear();
        self.net.crash(CLIENT);
        let at = self.net.now() + self.config.restart_after;
        self.net.schedule(at, Event::Restart);
    }

    /// The penalties of the running client added to those of its earlier lives.
    #[must_use]
    pub fn penalties(&self) -> BTreeMap<usize, u32> {
        let mut all = self.stats.penalties.clone();
        if let Some(client) = &self.client {
            for (peer, n) in client.penalties() {
                *all.entry(*peer).or_default() += n;
            }
        }
        all
    }

    fn churn(&mut self, new_keys: usize) -> Result<(), ClientError> {
        let keys: Vec<Vec<u8>> = self
            .source
            .key_values(&self.target, None, None, usize::MAX)?
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        let mut ops: Vec<BatchOp> = Vec::new();
        for key in keys {
            match self.net.rng().random_range(0..3) {
                0 => ops.push(BatchOp::Put(key, vec![self.net.rng().random(); 9])),
                1 => ops.push(BatchOp::Delete(key)),
                _ => {}
            }
        }
        ops.extend(random_pairs(self.net.rng(), new_keys / 3));
        self.target = self.source.commit(ops)?;
        self.targets.push(self.target);
        Ok(())
    }

    fn serve(&mut self, id: u64, peer: usize, request: &[u8]) -> Result<(), ClientError> {
        let kind = self.servers[peer].this_answer(&mut self.next_lie, self.net.rng());
        let Ok(served) = serve_as(&self.source, kind, request, self.net.rng()) else {
            return Ok(());
        };
        if served.is_range {
            self.stats.range_requests += 1;
        } else {
            self.stats.change_requests += 1;
        }
        let Some(bytes) = served.bytes else {
            return Ok(());
        };
        if kind.lies() {
            *self.stats.lies.entry(kind).or_default() += 1;
        }
        let keys = (kind == ServerKind::Honest).then_some((served.root, served.keys));
        let answer = Message::Answer { id, bytes, keys };
        self.net.send(peer + 1, CLIENT, answer);
        Ok(())
    }
}

impl Protocol for SyncSim {
    type Message = Message;
    type Local = Event;
    type Error = ClientError;

    fn net(&mut self) -> &mut Net<Message, Event> {
        &mut self.net
    }

    fn on_message(&mut self, _from: usize, to: usize, msg: Message) -> Result<(), ClientError> {
        self.deliver(to, msg)
    }

    fn on_local(&mut self, event: Event) -> Result<(), ClientError> {
        self.local(event)
    }
}

/// What a server of one kind makes of a request.
#[derive(Debug)]
pub struct Response {
    /// Whether it was a range-proof request (else a change-proof request).
    pub is_range: bool,
    /// The root the request asked about (its end root for a change proof).
    pub root: Hash,
    /// The answer sent, `None` if the server stays silent.
    pub bytes: Option<Vec<u8>>,
    /// The keys the answer carries (none for garbage).
    pub keys: Vec<Vec<u8>>,
}

/// The answer a server of `kind` sends to `request`, from `source`: the server core's answer,
/// corrupted as `kind` lies, random bytes for [`ServerKind::Garbage`], nothing for
/// [`ServerKind::Silent`]. `kind` must be resolved ([`ServerKind::Flaky`] and [`ServerKind::EveryLie`]
/// choose per answer, so the caller chooses first).
///
/// # Errors
/// What the server core refuses; [`ServerError::Declined`] when it holds no such root.
pub fn serve_as(
    source: &MerkleDb,
    kind: ServerKind,
    request: &[u8],
    rng: &mut StdRng,
) -> Result<Response, ServerError> {
    let honest = match handle(source, request)? {
        Reply::Bytes(bytes) => bytes,
        Reply::Drop => return Err(ServerError::Declined),
    };
    // `handle` decoded it already: it is a well-formed request.
    let (is_range, root) = match pb::Request::decode(request).map(|r| r.message) {
        Ok(Some(request::Message::RangeProofRequest(r))) => (true, r.root_hash),
        Ok(Some(request::Message::ChangeProofRequest(r))) => (false, r.end_root_hash),
        _ => return Err(ServerError::Declined),
    };
    let root: Hash = root.as_slice().try_into().unwrap_or_default();
    let (bytes, keys) = match kind {
        ServerKind::Silent => (None, Vec::new()),
        ServerKind::Garbage => {
            let len = rng.random_range(1..300);
            (Some((0..len).map(|_| rng.random()).collect()), Vec::new())
        }
        _ => {
            let (bytes, keys) = corrupt(kind, is_range, &honest);
            (Some(bytes), keys)
        }
    };
    Ok(Response {
        is_range,
        root,
        bytes,
        keys,
    })
}

/// Why [`serve_as`] gave nothing.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The server core refused the request.
    #[error(transparent)]
    Refused(#[from] tributary_statesync::server::ServerError),
    /// The server holds no such root.
    #[error("root not held")]
    Declined,
}

/// An honest answer (to a range-proof request if `is_range`, else to a change-proof request)
/// with `lie` applied, and the keys the result carries. [`ServerKind::Garbage`] and the kinds that
/// do not lie leave it as it is.
#[must_use]
fn corrupt(lie: ServerKind, is_range: bool, honest: &[u8]) -> (Vec<u8>, Vec<Vec<u8>>) {
    if is_range {
        // The server's own encoding decodes.
        let mut proof = pb::RangeProof::decode(honest).unwrap_or_default();
        lie_about_range(lie, &mut proof);
        let keys = proof.key_values.iter().map(|kv| kv.key.clone()).collect();
        return (proof.encode_to_vec(), keys);
    }
    let mut response = pb::SyncGetChangeProofResponse::decode(honest).unwrap_or_default();
    let keys = match response.response.as_mut() {
        Some(change_proof_response::Response::RangeProof(proof)) => {
            lie_about_range(lie, proof);
            proof.key_values.iter().map(|kv| kv.key.clone()).collect()
        }
        Some(change_proof_response::Response::ChangeProof(proof)) => {
            lie_about_changes(lie, proof);
            proof.key_changes.iter().map(|kc| kc.key.clone()).collect()
        }
        None => Vec::new(),
    };
    (response.encode_to_vec(), keys)
}

/// Applies `lie` to a proof's items and proofs; a lie that would change nothing (dropping from
/// an empty proof) adds a leaf instead.
fn lie_about<T>(
    lie: ServerKind,
    items: &mut Vec<T>,
    proofs: [&mut Vec<pb::ProofNode>; 2],
    forge: impl FnOnce(&mut T),
    leaf: T,
) {
    let n = items.len();
    let [start_proof, end_proof] = proofs;
    let has_proofs = !start_proof.is_empty() || !end_proof.is_empty();
    match lie {
        ServerKind::Honest
        | ServerKind::Silent
        | ServerKind::Flaky
        | ServerKind::Garbage
        | ServerKind::EveryLie => {}
        ServerKind::DropFirst if n > 0 => drop(items.remove(0)),
        ServerKind::DropMiddle if n > 1 => drop(items.remove(n / 2)),
        ServerKind::Tamper if n > 0 => forge(&mut items[n / 2]),
        ServerKind::StripProofs if has_proofs => {
            start_proof.clear();
            end_proof.clear();
        }
        ServerKind::Empty if n > 0 || has_proofs => {
            items.clear();
            start_proof.clear();
            end_proof.clear();
        }
        _ => items.push(leaf),
    }
}

fn lie_about_range(lie: ServerKind, proof: &mut pb::RangeProof) {
    lie_about(
        lie,
        &mut proof.key_values,
        [&mut proof.start_proof, &mut proof.end_proof],
        |kv| kv.value.push(1),
        pb::KeyValue {
            key: vec![0xff; 40],
            value: vec![1],
        },
    );
}

fn lie_about_changes(lie: ServerKind, proof: &mut pb::ChangeProof) {
    let forged = pb::MaybeBytes {
        value: b"forged".to_vec(),
        is_nothing: false,
    };
    lie_about(
        lie,
        &mut proof.key_changes,
        [&mut proof.start_proof, &mut proof.end_proof],
        |kc| kc.value = Some(forged.clone()),
        pb::KeyChange {
            key: vec![0xff; 40],
            value: Some(forged.clone()),
        },
    );
}
