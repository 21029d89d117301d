//! The state-sync client: x/sync's `Manager` as a sans-IO state machine.
//!
//! It brings a [`MerkleDb`] to a target root with proofs from untrusted peers. Nothing here
//! touches a socket or a clock: the runtime asks [`Client::poll_request`] what to send to whom,
//! and reports back with [`Client::handle_response`] or [`Client::handle_failure`] (a timeout
//! or a transport error), passing the current time for backoff.
//!
//! As upstream:
//! - The key space is split into work items `[start, end]` (unbounded ends allowed), each with a
//!   priority (retry > high > medium > low) and the root its keys were last synced at (none yet:
//!   fetch a range proof; otherwise: fetch a change proof from that root to the target).
//! - At most `work_limit` requests are in flight (`SimultaneousWorkLimit`, default 8).
//! - A proof that fails verification penalizes the peer that sent it and sends the item back
//!   as a retry, with backoff `min(10 ms · 1.5^attempt, 1 s)`, to another peer.
//! - A verified proof is committed; if it stopped short of the item's end, the rest is split at
//!   the [`midpoint`] (while few items are queued, and — a departure from x/sync — only if the
//!   answer's key density says the rest needs more than one proof) and queued again. The rest
//!   starts where `findNextKey` (module `next_key`) finds the proof's end path and the
//!   database's first differ: subtrees after the last key proven whose ids already match are
//!   not fetched, and the part done extends over the keys they hold; when the paths cannot be
//!   compared it starts right after the last key proven (`last‖0x00`, upstream's fallback).
//! - [`Client::update_target`] sends every finished range back to be brought to the new root
//!   with change proofs.
//! - When nothing is queued or in flight, the database root must be the target, else
//!   [`ClientError::FinishedWithUnexpectedRoot`].
//!
//! Peers are chosen round robin among those with the fewest penalties, so a peer that lied is
//! asked again only if every peer has lied as often. A timeout is not a penalty (the network may
//! be at fault) but its item goes back with backoff. Upstream weighs peers by bandwidth
//! instead; measuring peers belongs to the runtime, which chooses the peer list.
//!
//! Every proof is verified before anything is committed, and each commit stores, in the same
//! atomic write, the client's progress record (which ranges are at which root; the `progress`
//! module): a client restarted on the database goes on from there and
//! fetches nothing it already committed (firewood's syncer starts over: firewood #5127).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use prost::Message;
use tributary_merkle::{
    BatchOp, BranchFactor, ChangeProof, DbError, EMPTY_ROOT, Hash, MerkleDb, ProofError, ProofNode,
    RangeProof, View,
};
use tributary_wire::sync::{self as pb, change_proof_response, request};

use crate::midpoint;
use crate::next_key::{self, Next};
use crate::progress::{self, CorruptProgress, RangeAt};
use crate::server::{MAX_BYTES_LIMIT, MAX_KEY_LIMIT};

/// Settings of a [`Client`].
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Requests in flight at once (x/sync `SimultaneousWorkLimit`).
    pub work_limit: usize,
    /// Keys asked for per request.
    pub key_limit: u32,
    /// Bytes asked for per request.
    pub bytes_limit: u32,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            work_limit: 8,
            key_limit: MAX_KEY_LIMIT,
            bytes_limit: MAX_BYTES_LIMIT,
        }
    }
}

/// Why syncing failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The local database failed.
    #[error("local database")]
    Db(#[from] DbError),
    /// All work is done but the root is not the target (x/sync `ErrFinishedWithUnexpectedRoot`).
    #[error("finished syncing with an unexpected root")]
    FinishedWithUnexpectedRoot,
    /// No peer to ask.
    #[error("no peers to sync from")]
    NoPeers,
    /// The stored progress record does not decode.
    #[error(transparent)]
    CorruptProgress(#[from] CorruptProgress),
    /// The peers' trie has another branch factor than the local database: every proof they
    /// send would fail, so syncing cannot go on. Detected when a range proof that does not
    /// verify under the local factor verifies under another against the asked root.
    #[error(
        "the peers' database has branch factor {theirs}, this one {ours}: sync into a new database created with branch factor {theirs}"
    )]
    BranchFactorMismatch {
        /// The local database's arity.
        ours: usize,
        /// The arity the peer's proof verified under.
        theirs: usize,
    },
    /// A limit of zero, or above what servers accept.
    #[error(
        "invalid config: work limit must be positive, key limit in 1..={MAX_KEY_LIMIT}, bytes limit in 1..={MAX_BYTES_LIMIT}"
    )]
    InvalidConfig,
}

/// What a client has done so far (the metrics of x/sync's client).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Requests sent.
    pub requests: u64,
    /// Answers verified and committed.
    pub succeeded: u64,
    /// Requests that failed in transit (timeouts, disconnects).
    pub failed: u64,
    /// Answers refused as invalid (each one a penalty).
    pub rejected: u64,
    /// Writes committed: proven key-values and key changes, and deletes of local keys a range
    /// proof showed do not exist.
    pub keys: u64,
    /// Bytes of answers received, valid or not.
    pub bytes: u64,
    /// Answers after which keys the database already held in matching subtrees were skipped
    /// (`findNextKey`) instead of fetched.
    pub skips: u64,
}

/// A request to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing<P> {
    /// Identifies the request in [`Client::handle_response`] and [`Client::handle_failure`].
    pub id: u64,
    /// Whom to send it to.
    pub peer: P,
    /// The encoded `Request`.
    pub bytes: Vec<u8>,
}

/// How soon a work item goes out (x/sync's priorities); later variants go first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Priority {
    /// The whole range at the start, and the far half of a split.
    Low,
    /// The near half of a split.
    Medium,
    /// Work synced at an old root, to bring over to the new target (and the rest of a range
    /// after an answer, at most this).
    High,
    /// A request that failed or was refused, going again.
    Retry,
}

const INITIAL_RETRY_WAIT: Duration = Duration::from_millis(10);
const MAX_RETRY_WAIT: Duration = Duration::from_secs(1);

#[derive(Clone, Debug, PartialEq, Eq)]
struct Work {
    start: Option<Vec<u8>>,
    end: Option<Vec<u8>>,
    priority: Priority,
    /// The root this range's keys were last synced at; `EMPTY_ROOT` if never.
    local_root: Hash,
    attempt: u32,
    /// Not to be sent before this.
    not_before: Option<Instant>,
}

/// x/sync's backoff: `min(10 ms · 1.5^attempt, 1 s)`, none for a first attempt.
fn backoff(attempt: u32) -> Duration {
    if attempt == 0 {
        return Duration::ZERO;
    }
    let factor = 1.5f64.powi(i32::try_from(attempt).unwrap_or(i32::MAX));
    INITIAL_RETRY_WAIT
        .mul_f64(factor.min(1_000.0))
        .min(MAX_RETRY_WAIT)
}

/// The state-sync client; `P` identifies peers.
pub struct Client<P> {
    db: MerkleDb,
    config: ClientConfig,
    target: Hash,
    queued: Vec<Work>,
    /// Requests sent: the item, the peer asked and the root asked for.
    in_flight: HashMap<u64, (Work, P, Hash)>,
    /// Finished ranges by start, with the root they were synced at.
    done: BTreeMap<Option<Vec<u8>>, Work>,
    peers: Vec<P>,
    penalties: HashMap<P, u32>,
    /// Refused answers by kind of fault.
    rejections: BTreeMap<&'static str, u64>,
    last_rejection: Option<InvalidAnswer>,
    stats: ClientStats,
    next_peer: usize,
    next_id: u64,
}

impl<P: Clone + Eq + std::hash::Hash> Client<P> {
    /// A client bringing `db` to `target` with the help of `peers`.
    ///
    /// A database that already holds keys (a restart, or a previous sync) is brought over with
    /// change proofs from its root; a peer that does not hold that root answers with a range
    /// proof instead, so a half-synced database is fixed either way.
    ///
    /// # Errors
    /// [`ClientError::NoPeers`] without peers; [`ClientError::InvalidConfig`] for limits out of
    /// range; [`ClientError::Db`] if clearing the database
    /// for an empty target fails.
    pub fn new(
        db: MerkleDb,
        target: Hash,
        peers: Vec<P>,
        config: ClientConfig,
    ) -> Result<Self, ClientError> {
        if peers.is_empty() {
            return Err(ClientError::NoPeers);
        }
        let valid = config.work_limit > 0
            && (1..=MAX_KEY_LIMIT).contains(&config.key_limit)
            && (1..=MAX_BYTES_LIMIT).contains(&config.bytes_limit);
        if !valid {
            return Err(ClientError::InvalidConfig);
        }
        let queued = resume(&db)?;
        let mut client = Self {
            db,
            config,
            target,
            queued,
            in_flight: HashMap::new(),
            done: BTreeMap::new(),
            peers,
            penalties: HashMap::new(),
            rejections: BTreeMap::new(),
            last_rejection: None,
            stats: ClientStats::default(),
            next_peer: 0,
            next_id: 0,
        };
        if target == EMPTY_ROOT {
            client.clear()?;
        }
        Ok(client)
    }

    /// The database being synced.
    #[must_use]
    pub const fn db(&self) -> &MerkleDb {
        &self.db
    }

    /// The root being synced to.
    #[must_use]
    pub const fn target(&self) -> Hash {
        self.target
    }

    /// How many times each peer sent an invalid proof.
    #[must_use]
    pub fn penalties(&self) -> &HashMap<P, u32> {
        &self.penalties
    }

    /// Answers refused so far, by [`InvalidAnswer::kind`].
    #[must_use]
    pub fn rejections(&self) -> &BTreeMap<&'static str, u64> {
        &self.rejections
    }

    /// Why the last refused answer was refused.
    #[must_use]
    pub fn last_rejection(&self) -> Option<&InvalidAnswer> {
        self.last_rejection.as_ref()
    }

    /// Counts of requests, answers, keys and bytes so far.
    #[must_use]
    pub const fn stats(&self) -> ClientStats {
        self.stats
    }

    /// Key ranges not yet at the target: queued or in flight.
    #[must_use]
    pub fn ranges_left(&self) -> usize {
        self.queued.len() + self.in_flight.len()
    }

    /// Whether all work is done: then the database is at the target root.
    ///
    /// # Errors
    /// [`ClientError::FinishedWithUnexpectedRoot`] if all work is done at another root.
    pub fn is_done(&self) -> Result<bool, ClientError> {
        if !self.queued.is_empty() || !self.in_flight.is_empty() {
            return Ok(false);
        }
        if self.db.root() != self.target {
            return Err(ClientError::FinishedWithUnexpectedRoot);
        }
        Ok(true)
    }

    /// Changes the target root mid-sync: every finished range is brought to it again with
    /// change proofs; answers to requests already sent are still verified against the root
    /// they asked for, committed, and brought over too.
    ///
    /// The empty root has no proofs: for it the database is cleared here and all work ends.
    ///
    /// # Errors
    /// [`ClientError::Db`] if clearing the database fails.
    pub fn update_target(&mut self, target: Hash) -> Result<(), ClientError> {
        if target == self.target {
            return Ok(());
        }
        self.target = target;
        for (_, mut work) in std::mem::take(&mut self.done) {
            work.priority = Priority::High;
            work.attempt = 0;
            work.not_before = None;
            self.queued.push(work);
        }
        if target == EMPTY_ROOT {
            self.clear()?;
        }
        Ok(())
    }

    /// The empty root has no proofs: the database is cleared and all work ends.
    fn clear(&mut self) -> Result<(), ClientError> {
        let ops = self
            .db
            .range_proof_ops(None, None, &RangeProof::default())?;
        self.queued.clear();
        self.in_flight.clear();
        self.done.clear();
        self.finish(whole_range(EMPTY_ROOT));
        let view = self.db.view(ops)?;
        self.commit(view)
    }

    /// The earliest time a queued item may be sent, if one is waiting on backoff.
    #[must_use]
    pub fn next_wakeup(&self) -> Option<Instant> {
        self.queued.iter().filter_map(|w| w.not_before).min()
    }

    /// The next request to send, if any may go now.
    pub fn poll_request(&mut self, now: Instant) -> Option<Outgoing<P>> {
        while self.in_flight.len() < self.config.work_limit {
            let work = self.take_ready(now)?;
            if work.local_root == self.target {
                // Already at the target (a restart at the target, or a target moved back).
                self.finish(work);
                continue;
            }
            let bytes = self.encode(&work);
            let peer = self.pick_peer();
            let id = self.next_id;
            self.next_id += 1;
            self.stats.requests += 1;
            self.in_flight.insert(id, (work, peer.clone(), self.target));
            return Some(Outgoing { id, peer, bytes });
        }
        None
    }

    fn take_ready(&mut self, now: Instant) -> Option<Work> {
        let best = self
            .queued
            .iter()
            .enumerate()
            .filter(|(_, w)| w.not_before.is_none_or(|t| t <= now))
            .max_by(|(_, a), (_, b)| {
                a.priority
                    .cmp(&b.priority)
                    .then_with(|| b.start.cmp(&a.start))
            })
            .map(|(i, _)| i)?;
        Some(self.queued.swap_remove(best))
    }

    /// Round robin over peers, skipping those with more penalties than the best peer.
    fn pick_peer(&mut self) -> P {
        let fewest = self
            .peers
            .iter()
            .map(|p| self.penalties.get(p).copied().unwrap_or(0))
            .min()
            .unwrap_or(0);
        for _ in 0..self.peers.len() {
            let peer = &self.peers[self.next_peer];
            self.next_peer = (self.next_peer + 1) % self.peers.len();
            if self.penalties.get(peer).copied().unwrap_or(0) == fewest {
                return peer.clone();
            }
        }
        // Unreachable: some peer has the fewest penalties, and the loop visits every peer.
        self.peers[0].clone()
    }

    fn encode(&self, work: &Work) -> Vec<u8> {
        // A range's keys are either untouched (empty) or at a root some peer may hold.
        let bound = |b: &Option<Vec<u8>>| {
            b.as_ref().map(|v| pb::MaybeBytes {
                value: v.clone(),
                is_nothing: false,
            })
        };
        let message = if work.local_root == EMPTY_ROOT {
            request::Message::RangeProofRequest(pb::SyncGetRangeProofRequest {
                root_hash: self.target.to_vec(),
                start_key: bound(&work.start),
                end_key: bound(&work.end),
                key_limit: self.config.key_limit,
                bytes_limit: self.config.bytes_limit,
            })
        } else {
            request::Message::ChangeProofRequest(pb::SyncGetChangeProofRequest {
                start_root_hash: work.local_root.to_vec(),
                end_root_hash: self.target.to_vec(),
                start_key: bound(&work.start),
                end_key: bound(&work.end),
                key_limit: self.config.key_limit,
                bytes_limit: self.config.bytes_limit,
            })
        };
        pb::Request {
            message: Some(message),
        }
        .encode_to_vec()
    }

    /// A request failed in transit (timeout, disconnect): try again elsewhere, later.
    pub fn handle_failure(&mut self, now: Instant, id: u64) {
        if let Some((work, _, _)) = self.in_flight.remove(&id) {
            self.stats.failed += 1;
            self.retry(now, work);
        }
    }

    fn retry(&mut self, now: Instant, mut work: Work) {
        work.priority = Priority::Retry;
        work.attempt += 1;
        work.not_before = Some(now + backoff(work.attempt));
        self.queued.push(work);
    }

    /// Handles the answer to request `id`: verifies it against the root asked for, commits it,
    /// queues what is left. Answers to unknown or cancelled requests are ignored.
    ///
    /// # Errors
    /// Only local database failures; an invalid answer penalizes its peer and is retried.
    pub fn handle_response(
        &mut self,
        now: Instant,
        id: u64,
        bytes: &[u8],
    ) -> Result<(), ClientError> {
        let Some((work, peer, asked)) = self.in_flight.remove(&id) else {
            return Ok(());
        };
        self.stats.bytes += bytes.len() as u64;
        match self.verify(&work, &asked, bytes) {
            Ok(verified) => {
                self.stats.succeeded += 1;
                self.stats.keys += verified.ops.len() as u64;
                let view = self.db.view(verified.ops)?;
                let (covered_end, next) =
                    self.split_after(&work, verified.largest, &verified.end_proof, &view)?;
                self.advance(work, &asked, covered_end, next, verified.answered);
                self.commit(view)
            }
            Err(Rejected::Peer(why)) => {
                self.stats.rejected += 1;
                *self.rejections.entry(why.kind()).or_default() += 1;
                self.last_rejection = Some(why);
                *self.penalties.entry(peer).or_default() += 1;
                self.retry(now, work);
                Ok(())
            }
            Err(Rejected::Local(e)) => Err(e.into()),
            Err(Rejected::BranchFactor(theirs)) => Err(ClientError::BranchFactorMismatch {
                ours: self.db.branch_factor().arity(),
                theirs: theirs.arity(),
            }),
        }
    }

    /// Verifies one answer about root `asked`; returns the operations that apply it and the
    /// largest key it covered (`None`: the range held nothing more).
    fn verify(&self, work: &Work, asked: &Hash, bytes: &[u8]) -> Result<Verified, Rejected> {
        let (start, end) = (work.start.as_deref(), work.end.as_deref());
        if bytes.len() > self.config.bytes_limit as usize {
            return Err(Rejected::Peer(InvalidAnswer::TooLarge {
                len: bytes.len(),
                max: self.config.bytes_limit,
            }));
        }
        let too_many = |count: usize| {
            Rejected::Peer(InvalidAnswer::TooManyKeys {
                count,
                max: self.config.key_limit,
            })
        };
        let malformed = |e| Rejected::Peer(InvalidAnswer::Malformed(e));
        let range = |proof: RangeProof| -> Result<Verified, Rejected> {
            if proof.key_values.len() > self.config.key_limit as usize {
                return Err(too_many(proof.key_values.len()));
            }
            if let Err(e) = proof.verify(start, end, asked, self.db.branch_factor()) {
                return Err(other_branch_factor(
                    &proof,
                    (start, end),
                    asked,
                    self.db.branch_factor(),
                )
                .map_or_else(|| Rejected::from(e), Rejected::BranchFactor));
            }
            let ops = self
                .db
                .range_proof_ops(start, end, &proof)
                .map_err(Rejected::Local)?;
            let largest = proof.key_values.last().map(|(k, _)| k.clone());
            Ok(Verified {
                ops,
                largest,
                answered: proof.key_values.len(),
                end_proof: proof.end_proof,
            })
        };
        if work.local_root == EMPTY_ROOT {
            return range(RangeProof::from_bytes(bytes).map_err(malformed)?);
        }
        let response = pb::SyncGetChangeProofResponse::decode(bytes)
            .map_err(|e| Rejected::Peer(InvalidAnswer::MalformedResponse(e)))?;
        match response
            .response
            .ok_or(Rejected::Peer(InvalidAnswer::EmptyResponse))?
        {
            change_proof_response::Response::RangeProof(wire) => {
                range(RangeProof::from_wire(wire).map_err(malformed)?)
            }
            change_proof_response::Response::ChangeProof(wire) => {
                let proof = ChangeProof::from_wire(wire).map_err(malformed)?;
                if proof.key_changes.len() > self.config.key_limit as usize {
                    return Err(too_many(proof.key_changes.len()));
                }
                self.db
                    .verify_change_proof(&proof, start, end, asked)
                    .map_err(Rejected::from)?;
                let largest = proof.key_changes.last().map(|(k, _)| k.clone());
                Ok(Verified {
                    ops: MerkleDb::change_proof_ops(&proof),
                    largest,
                    answered: proof.key_changes.len(),
                    end_proof: proof.end_proof,
                })
            }
        }
    }

    /// Commits `view` with the progress record of the current work state, atomically.
    fn commit(&self, view: View) -> Result<(), ClientError> {
        let ranges = self
            .done
            .values()
            .chain(&self.queued)
            .chain(self.in_flight.values().map(|(work, _, _)| work))
            .map(|w| RangeAt {
                start: w.start.clone(),
                end: w.end.clone(),
                root: w.local_root,
            })
            .collect();
        let record = progress::encode(&view.root(), ranges);
        view.commit_with_progress(&record)?;
        Ok(())
    }

    /// Where an item's part done ends and the rest begins, after an answer (about the root
    /// asked for, applied in `view`) that covered keys up to `largest` (`None`: the range held
    /// nothing more). The rest begins right after `largest` (upstream's fallback), or further
    /// on when `findNextKey` (`next_key`) shows the keys after `largest` already match: the
    /// part done then extends to the last key held before the first difference, so items
    /// still tile the key space without overlapping.
    fn split_after(
        &mut self,
        work: &Work,
        largest: Option<Vec<u8>>,
        end_proof: &[ProofNode],
        view: &View,
    ) -> Result<Split, ClientError> {
        let whole = Ok((work.end.clone(), None));
        let Some(largest) = largest.filter(|l| work.end.as_ref() != Some(l)) else {
            return whole;
        };
        let mut fallback = largest.clone();
        fallback.push(0);
        if work.end.as_ref().is_some_and(|e| fallback > *e) {
            return whole;
        }
        let local = view.proof_path(&largest)?;
        let token_bits = self.db.branch_factor().token_bits();
        let first = match next_key::first_difference(&largest, end_proof, &local, token_bits) {
            Next::Fallback => return Ok((Some(largest), Some(fallback))),
            Next::RestMatches => {
                self.stats.skips += 1;
                return whole;
            }
            Next::At(path) => next_key::smallest_key_with_prefix(&path),
        };
        if work.end.as_ref().is_some_and(|e| first > *e) {
            self.stats.skips += 1;
            return whole;
        }
        // Every key in (largest, first) matches: the part done takes those held locally.
        let last = view.last_key_in(&fallback, &first)?.unwrap_or(largest);
        let mut next = last.clone();
        next.push(0);
        if next != fallback {
            self.stats.skips += 1;
        }
        Ok((Some(last), Some(next)))
    }

    /// After a committed proof about root `asked`: the part done, `[start, covered_end]`, is
    /// finished (or queued again if the target moved meanwhile) and the rest, from `next`, is
    /// queued, split at the midpoint while few items are queued and the rest likely holds
    /// more than one proof's worth of keys (judged from the `answered` keys over the part
    /// done).
    fn advance(
        &mut self,
        work: Work,
        asked: &Hash,
        covered_end: Option<Vec<u8>>,
        next: Option<Vec<u8>>,
        answered: usize,
    ) {
        let covered_span = span(work.start.as_deref(), covered_end.as_deref());
        // Items are inclusive: the part done ends at `covered_end`, and no key lies between it
        // and `next`, so the two parts neither overlap nor leave a gap.
        let covered = Work {
            end: covered_end,
            local_root: *asked,
            ..work.clone()
        };
        if *asked == self.target {
            self.finish(covered);
        } else {
            // Synced to a root that is no longer the target: bring it over with change proofs.
            self.queued.push(Work {
                priority: Priority::High,
                attempt: 0,
                not_before: None,
                ..covered
            });
        }
        if let Some(next) = next {
            let rest = Work {
                start: Some(next),
                priority: work.priority.min(Priority::High),
                attempt: 0,
                not_before: None,
                ..work
            };
            let rest_span = span(rest.start.as_deref(), rest.end.as_deref());
            #[expect(clippy::cast_precision_loss, reason = "an estimate")]
            let expected = answered as f64 * rest_span / covered_span.max(f64::MIN_POSITIVE);
            self.enqueue(rest, expected);
        }
    }

    fn finish(&mut self, work: Work) {
        self.done.insert(work.start.clone(), work);
    }

    /// Queues `work`, expected to hold about `expected_keys` keys: split at the midpoint while
    /// fewer than `2 · work_limit` items are queued or in flight (x/sync's rule), but only if
    /// it likely needs more than one proof. x/sync splits regardless, and the halves of a
    /// nearly done range then cost two proofs, each with its boundary proof nodes, where one
    /// would do (measured: 742 proofs instead of 561 for 1,000,000 keys).
    fn enqueue(&mut self, work: Work, expected_keys: f64) {
        let busy = self.queued.len() + self.in_flight.len();
        if busy < 2 * self.config.work_limit && expected_keys > f64::from(self.config.key_limit) {
            let mid = midpoint(work.start.as_deref(), work.end.as_deref());
            if mid.is_some() && mid != work.start && mid != work.end {
                let first = Work {
                    end: mid.clone(),
                    priority: Priority::Medium,
                    ..work.clone()
                };
                // Upstream starts the second half at `mid` itself, so both halves hold a key
                // equal to `mid`; if they are then synced at different roots, a change proof
                // for one half fails on the other's value of that key and an honest peer is
                // penalized. Starting at `mid‖0x00`, the key right after `mid`, the halves
                // share nothing and leave no gap.
                let second = Work {
                    start: mid.map(|mut m| {
                        m.push(0);
                        m
                    }),
                    priority: Priority::Low,
                    ..work
                };
                self.queued.push(first);
                self.queued.push(second);
                return;
            }
        }
        self.queued.push(work);
    }
}

/// Where `key` lies in the key space, from 0 to 1: its first eight bytes read as a fraction
/// (`unbounded` for no key). Only a guide for splitting; nothing depends on it for
/// correctness.
fn position(key: Option<&[u8]>, unbounded: f64) -> f64 {
    key.map_or(unbounded, |k| {
        let mut head = [0u8; 8];
        let n = k.len().min(8);
        head[..n].copy_from_slice(&k[..n]);
        #[expect(clippy::cast_precision_loss, reason = "a position, not a key")]
        let p = u64::from_be_bytes(head) as f64;
        p / 18_446_744_073_709_551_616.0
    })
}

/// The fraction of the key space between two bounds.
fn span(start: Option<&[u8]>, end: Option<&[u8]>) -> f64 {
    (position(end, 1.0) - position(start, 0.0)).max(0.0)
}

/// The whole key space, at `root`.
const fn whole_range(root: Hash) -> Work {
    Work {
        start: None,
        end: None,
        priority: Priority::Low,
        local_root: root,
        attempt: 0,
        not_before: None,
    }
}

/// The work a client on `db` starts with: the ranges of its progress record if the record
/// describes the database as it is; otherwise (no sync ever ran, or the database changed
/// since) the whole key space at the database's root.
fn resume(db: &MerkleDb) -> Result<Vec<Work>, ClientError> {
    let Some(bytes) = db.sync_progress()? else {
        return Ok(vec![whole_range(db.root())]);
    };
    let (recorded_root, ranges) = progress::decode(&bytes)?;
    if recorded_root != db.root() {
        return Ok(vec![whole_range(db.root())]);
    }
    Ok(ranges
        .into_iter()
        .map(|r| Work {
            start: r.start,
            end: r.end,
            local_root: r.root,
            ..whole_range(r.root)
        })
        .collect())
}

/// A verified answer: how to apply it, and the largest key it covered.
/// Where an item's part done ends (inclusive; `None`: unbounded) and where the rest starts
/// (`None`: there is no rest).
type Split = (Option<Vec<u8>>, Option<Vec<u8>>);

struct Verified {
    ops: Vec<BatchOp>,
    largest: Option<Vec<u8>>,
    /// The answer's end proof: the peer's path to `largest` at the root asked for.
    end_proof: Vec<ProofNode>,
    /// Key-values or key changes the answer held.
    answered: usize,
}

/// Why an answer was not used.
enum Rejected {
    /// The peer sent something invalid.
    Peer(InvalidAnswer),
    /// The local database failed.
    Local(DbError),
    /// The proof verifies, but under this branch factor, not the local one.
    BranchFactor(BranchFactor),
}

/// The branch factor other than `ours` under which `proof` verifies against `root`, if any. A
/// proof cannot verify against a root under a factor the root was not built with (that would
/// be a hash collision), so this tells a mismatched database from a lying peer.
fn other_branch_factor(
    proof: &RangeProof,
    (start, end): (Option<&[u8]>, Option<&[u8]>),
    root: &Hash,
    ours: BranchFactor,
) -> Option<BranchFactor> {
    [
        BranchFactor::Two,
        BranchFactor::Four,
        BranchFactor::Sixteen,
        BranchFactor::TwoFiftySix,
    ]
    .into_iter()
    .filter(|bf| *bf != ours)
    .find(|bf| proof.verify(start, end, root, *bf).is_ok())
}

impl From<ProofError> for Rejected {
    fn from(e: ProofError) -> Self {
        match e {
            ProofError::Db(db) => Self::Local(db),
            e => Self::Peer(InvalidAnswer::Proof(e)),
        }
    }
}

/// Why an answer was refused (and its peer penalized).
#[derive(Debug, thiserror::Error)]
pub enum InvalidAnswer {
    /// Larger than the byte limit asked for.
    #[error("an answer of {len} bytes, over the {max} asked for")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: u32,
    },
    /// More keys than the key limit asked for.
    #[error("{count} keys, over the {max} asked for")]
    TooManyKeys {
        /// How many it held.
        count: usize,
        /// The limit.
        max: u32,
    },
    /// Not a proof message.
    #[error("not a proof message")]
    Malformed(#[source] tributary_merkle::proto::DecodeError),
    /// Not a change-proof response.
    #[error("not a change-proof response")]
    MalformedResponse(#[source] prost::DecodeError),
    /// A change-proof response holding neither proof.
    #[error("a change-proof response without a proof")]
    EmptyResponse,
    /// The proof does not verify against the root asked for.
    #[error("the proof does not verify")]
    Proof(#[source] ProofError),
}

impl InvalidAnswer {
    /// A short name of the kind of fault, for metrics.
    #[must_use]
    pub const fn kind(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "too_large",
            Self::TooManyKeys { .. } => "too_many_keys",
            Self::Malformed(_) | Self::MalformedResponse(_) | Self::EmptyResponse => "malformed",
            Self::Proof(_) => "invalid_proof",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_by_half_up_to_a_second() {
        assert_eq!(backoff(0), Duration::ZERO);
        assert_eq!(backoff(1), Duration::from_millis(15));
        assert_eq!(backoff(2), Duration::from_micros(22_500));
        assert_eq!(
            backoff(12),
            MAX_RETRY_WAIT,
            "10 ms · 1.5^12 ≈ 1.3 s is capped"
        );
        assert_eq!(backoff(u32::MAX), MAX_RETRY_WAIT);
    }
}
