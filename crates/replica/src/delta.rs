//! GetDeltas, Syncbase's one-round-trip sync: the initiator sends its knowledge of each
//! syncgroup it is in ([`Replica::delta_request`]); the responder keeps the syncgroups the
//! initiator may read, diffs the vectors, and streams exactly the missing records in frames
//! ([`Replica::answer`], [`Answer::next_frame`]); the initiator verifies every record and
//! applies each frame in one store write ([`Replica::apply_frame`]).
//!
//! Order: each device's records go in generation order, and the devices' streams are merged
//! by time, so parents come before children (a child's time is above its parents': the
//! hybrid clock) and a frame's knowledge can say "device d up to the last generation sent".
//! A frame closes at a batch boundary, so a batch is applied whole; a cut sync leaves whole
//! frames applied and the knowledge saying exactly that. A frame's records travel without
//! what the receiver restores (their versions, and names, author and signature repeated
//! from the record before: `compact`).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use prost::Message;
use tributary_wire::replica::{DeltaFrame, DeltaRequest, LogRecord};
use tributary_wire::{MAX_REPLICA_FRAME_BYTES, MAX_REPLICA_FRAME_RECORDS};

use crate::compact::{Compactor, restore_all};
use crate::keys::{StoredSyncgroup, db_prefix, decode, log_key, parse_log_key};
use crate::record::{Record, RowId};
use crate::replica::{Replica, Txn};
use crate::syncgroup::{self, Knowledge, MemberState, Spec, from_wire, member_state, to_wire};
use crate::types::{MAX_BATCH_ROWS, MAX_CLOCK_AHEAD_MS, NodeId, Version, check_name};
use crate::{RefusalReason, ReplicaError};

/// One syncgroup of an answer: its collections, and the two vectors.
#[derive(Clone, Debug)]
struct Part {
    name: String,
    collections: BTreeSet<String>,
    theirs: Knowledge,
    ours: Knowledge,
}

/// A responder's answer in progress: per device, the next generation to look at and the
/// last one to send. Frames are read from the store one at a time, so an answer of any size
/// holds one frame in memory.
#[derive(Debug)]
pub struct Answer {
    db: String,
    parts: Vec<Part>,
    cursors: BTreeMap<NodeId, (u64, u64)>,
    /// Per device, the next records the initiator lacks, read ahead of the frames.
    read_ahead: BTreeMap<NodeId, VecDeque<LogRecord>>,
    last_sent: BTreeMap<NodeId, u64>,
    syncgroups: Vec<tributary_wire::replica::SyncgroupState>,
    done: bool,
}

/// What applying one frame did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Records in the frame.
    pub records: u64,
    /// New versions added.
    pub new: u64,
    /// Records of versions already held.
    pub duplicates: u64,
    /// Rows found with more than one head.
    pub conflicts: u64,
    /// Of those, resolved at once by last-writer-wins.
    pub resolved: u64,
    /// Records and syncgroup changes refused, and why: the sender is to be penalized.
    pub refused: Vec<(NodeId, u64, RefusalReason)>,
}

impl Applied {
    /// Adds another frame's counts.
    pub fn add(&mut self, other: Self) {
        self.records += other.records;
        self.new += other.new;
        self.duplicates += other.duplicates;
        self.conflicts += other.conflicts;
        self.resolved += other.resolved;
        self.refused.extend(other.refused);
    }
}

impl Replica {
    /// The initiator's request for `db`: its knowledge of every syncgroup it is in.
    ///
    /// # Errors
    /// Bad names, a store failure.
    pub fn delta_request(&self, db: &str) -> Result<DeltaRequest, ReplicaError> {
        check_name("database", db)?;
        let mut knowledge = Vec::new();
        for (name, _, _) in self.joined(db)? {
            knowledge.push(to_wire(&name, &self.knowledge(db, &name)?));
        }
        Ok(DeltaRequest {
            db: db.into(),
            initiator: self.id.0.to_vec(),
            knowledge,
        })
    }

    /// Starts answering `req` from `initiator` (the peer's authenticated id). Syncgroups the
    /// initiator may not read, or that this node is not in, are left out without saying why
    /// (so their existence does not leak).
    ///
    /// # Errors
    /// [`ReplicaError::NotAuthorized`] if none is left; a malformed request; a store failure.
    pub fn answer(&self, req: &DeltaRequest, initiator: NodeId) -> Result<Answer, ReplicaError> {
        check_name("database", &req.db)?;
        if NodeId::from_wire(&req.initiator)? != initiator {
            return Err(ReplicaError::Malformed(
                "the request names another initiator",
            ));
        }
        if req.knowledge.len() > syncgroup::MAX_SYNCGROUPS {
            return Err(ReplicaError::Malformed("knowledge of too many syncgroups"));
        }
        let mut parts = Vec::new();
        let mut syncgroups = Vec::new();
        for k in &req.knowledge {
            let Some((stored, spec)) = self.readable(&req.db, &k.syncgroup, &initiator)? else {
                continue;
            };
            parts.push(Part {
                name: k.syncgroup.clone(),
                collections: spec.collections.iter().cloned().collect(),
                theirs: from_wire(k)?,
                ours: self.knowledge(&req.db, &k.syncgroup)?,
            });
            syncgroups.extend(stored.state);
        }
        if parts.is_empty() {
            return Err(ReplicaError::NotAuthorized(initiator));
        }
        let mut cursors: BTreeMap<NodeId, (u64, u64)> = BTreeMap::new();
        for part in &parts {
            for (device, &ours) in &part.ours {
                let theirs = part.theirs.get(device).copied().unwrap_or(0);
                if *device == initiator || ours <= theirs {
                    continue;
                }
                let c = cursors.entry(*device).or_insert((theirs + 1, ours));
                // theirs < ours, so theirs + 1 does not overflow.
                c.0 = c.0.min(theirs + 1);
                c.1 = c.1.max(ours);
            }
        }
        Ok(Answer {
            db: req.db.clone(),
            parts,
            cursors,
            read_ahead: BTreeMap::new(),
            last_sent: BTreeMap::new(),
            syncgroups,
            done: false,
        })
    }

    /// A syncgroup this node is in and `peer` may read (and was not ejected from).
    fn readable(
        &self,
        db: &str,
        name: &str,
        peer: &NodeId,
    ) -> Result<Option<(StoredSyncgroup, Spec)>, ReplicaError> {
        let Ok(info) = self.syncgroup(db, name) else {
            return Ok(None);
        };
        let Some((_, stored, spec)) = self.joined(db)?.into_iter().find(|(n, _, _)| n == name)
        else {
            return Ok(None);
        };
        let state = stored
            .state
            .as_ref()
            .ok_or(ReplicaError::Corrupt("syncgroup"))?;
        let ejected = member_state(state, peer) == Some(MemberState::Ejected);
        Ok((info.spec.may_read(peer) && !ejected).then_some((stored, spec)))
    }
}

impl Answer {
    /// The next frame, or `None` after the last.
    ///
    /// # Errors
    /// A store failure or a corrupt log.
    pub fn next_frame(&mut self, r: &Replica) -> Result<Option<DeltaFrame>, ReplicaError> {
        if self.done {
            return Ok(None);
        }
        let mut frame = DeltaFrame {
            syncgroups: std::mem::take(&mut self.syncgroups),
            ..DeltaFrame::default()
        };
        let mut bytes = 0;
        let mut last_batch: Option<(Vec<u8>, u64)> = None;
        let mut compactor = Compactor::default();
        loop {
            let Some((device, record)) = self.pick(r)? else {
                self.done = true;
                frame.last = true;
                break;
            };
            let batch = (record.author.clone(), record.batch_id);
            let same_batch = record.batch_id != 0 && last_batch.as_ref() == Some(&batch);
            let full = bytes >= r.config.frame_bytes
                || frame.records.len() >= MAX_REPLICA_FRAME_RECORDS - MAX_BATCH_ROWS;
            if full && !same_batch {
                break;
            }
            let mut record = self
                .take(device)
                .ok_or(ReplicaError::Corrupt("answer cursor"))?;
            self.last_sent.insert(device, record.generation);
            last_batch = Some(batch);
            compactor.compact(&mut record);
            bytes += record.encoded_len();
            frame.records.push(record);
        }
        frame.knowledge = self.frame_knowledge(frame.last);
        Ok(Some(frame))
    }

    /// The device whose next record has the earliest time, and that record.
    fn pick(&mut self, r: &Replica) -> Result<Option<(NodeId, &LogRecord)>, ReplicaError> {
        let devices: Vec<NodeId> = self.cursors.keys().copied().collect();
        for d in devices {
            if self.read_ahead.get(&d).is_none_or(VecDeque::is_empty) {
                self.read_run(r, d)?;
            }
        }
        let best = self
            .read_ahead
            .iter()
            .filter_map(|(d, run)| run.front().map(|rec| (rec.time, *d, rec.generation)))
            .min();
        Ok(best.and_then(|(_, d, _)| self.read_ahead.get(&d)?.front().map(|rec| (d, rec))))
    }

    fn take(&mut self, device: NodeId) -> Option<LogRecord> {
        self.read_ahead.get_mut(&device)?.pop_front()
    }

    /// Reads the next run of `device`'s records the initiator lacks (one store scan per run,
    /// not one per record), moving its cursor past the run; drops the cursor at the end.
    fn read_run(&mut self, r: &Replica, device: NodeId) -> Result<(), ReplicaError> {
        let Some(&(from, to)) = self.cursors.get(&device) else {
            return Ok(());
        };
        let prefix = db_prefix(&self.db);
        let (mut run, mut bytes, mut ended) = (VecDeque::new(), 0, true);
        for item in r
            .store
            .scan_from(r.ks.log, &log_key(&self.db, &device, from))
        {
            let (k, v) = item?;
            let Some((author, generation)) =
                parse_log_key(&self.db, &k).filter(|_| k.starts_with(&prefix))
            else {
                break;
            };
            if author != device || generation > to {
                break;
            }
            self.cursors
                .insert(device, (generation.saturating_add(1), to));
            let record = decode::<LogRecord>("log record", &v)?;
            let wanted = self.parts.iter().any(|p| {
                p.collections.contains(&record.collection)
                    && generation > p.theirs.get(&device).copied().unwrap_or(0)
                    && generation <= p.ours.get(&device).copied().unwrap_or(0)
            });
            if wanted {
                bytes += v.len();
                run.push_back(record);
                if run.len() >= READ_AHEAD_RECORDS || bytes >= READ_AHEAD_BYTES {
                    ended = false;
                    break;
                }
            }
        }
        if ended && run.is_empty() {
            // Kept while a run is buffered, so that the end is found by one more scan.
            self.cursors.remove(&device);
        }
        self.read_ahead.insert(device, run);
        Ok(())
    }

    /// What the frames so far complete, per syncgroup: all of ours after the last frame;
    /// before it, per device the last generation sent (each device goes in order).
    fn frame_knowledge(&self, last: bool) -> Vec<tributary_wire::replica::Knowledge> {
        self.parts
            .iter()
            .map(|p| {
                let k: Knowledge = if last {
                    p.ours.clone()
                } else {
                    self.last_sent
                        .iter()
                        .filter_map(|(d, &sent)| {
                            let ours = p.ours.get(d).copied()?;
                            Some((*d, sent.min(ours)))
                        })
                        .collect()
                };
                to_wire(&p.name, &k)
            })
            .collect()
    }
}

impl Replica {
    /// Applies one frame of the answer to `req` from `responder`, in one store write:
    /// syncgroup changes, then every record that verifies, then conflict resolution, then the
    /// knowledge. Refused records (and the rest of their batch) are reported, not applied.
    ///
    /// # Errors
    /// A frame over its size bound or about another database; a store failure.
    pub fn apply_frame(
        &mut self,
        now_ms: u64,
        req: &DeltaRequest,
        responder: NodeId,
        frame: &DeltaFrame,
    ) -> Result<Applied, ReplicaError> {
        if frame.encoded_len() > MAX_REPLICA_FRAME_BYTES {
            return Err(ReplicaError::Malformed("a frame over its size limit"));
        }
        if frame.records.len() > MAX_REPLICA_FRAME_RECORDS {
            return Err(ReplicaError::Malformed("a frame of over 32,768 records"));
        }
        let records = restore_all(&frame.records);
        let db = req.db.clone();
        let mut report = Applied {
            records: frame.records.len() as u64,
            ..Applied::default()
        };
        let mut txn = Txn::new(self, &db, true)?;
        let requested: BTreeSet<&str> =
            req.knowledge.iter().map(|k| k.syncgroup.as_str()).collect();
        let mut joined = self.merge_syncgroups(&mut txn, &db, responder, frame, &mut report)?;
        joined.retain(|(name, _, _)| requested.contains(name.as_str()));
        let specs: Vec<&Spec> = joined.iter().map(|(_, _, spec)| spec).collect();
        let (accepted, caps) =
            self.verify_records(now_ms, &db, &specs, responder, &records, &mut report);
        let caps = self.answer_caps(responder, frame, caps);
        let mut known = BTreeMap::new();
        for (name, _, _) in &joined {
            known.insert(name.clone(), self.knowledge(&db, name)?);
        }
        let mut before: HashMap<RowId, Vec<Version>> = HashMap::new();
        for (record, wire) in &accepted {
            if already_known(&joined, &known, record) {
                // Held, or held and pruned: a replay must not come back as a new head.
                report.duplicates += 1;
                continue;
            }
            if !before.contains_key(&record.row) {
                before.insert(record.row.clone(), txn.heads(self, &record.row)?);
            }
            txn.max_time = txn.max_time.max(record.time);
            match crate::dag::add_record(&mut txn, self, record, wire)? {
                crate::dag::Added::New => report.new += 1,
                crate::dag::Added::Duplicate => report.duplicates += 1,
            }
        }
        let (found, resolved) = crate::resolve::after_sync(&mut txn, self, &before)?;
        report.conflicts = found;
        report.resolved = resolved;
        self.merge_knowledge(&mut txn, &db, joined, responder, frame, caps.as_ref())?;
        txn.commit(self)?;
        if frame.last && self.config.prune {
            self.prune(&db)?;
        }
        Ok(report)
    }

    /// The caps of this frame joined with those of the earlier frames of the same answer (an
    /// answer's first frame carries the syncgroups and starts afresh; its last one ends it).
    fn answer_caps(
        &mut self,
        responder: NodeId,
        frame: &DeltaFrame,
        caps: Option<Knowledge>,
    ) -> Option<Knowledge> {
        if !frame.syncgroups.is_empty() {
            self.answer_caps.remove(&responder);
        }
        let joined = match (self.answer_caps.remove(&responder), caps) {
            (None, caps) => caps,
            (Some(None), _) | (Some(Some(_)), None) => None,
            (Some(Some(mut earlier)), Some(now)) => {
                for (d, g) in now {
                    let e = earlier.entry(d).or_insert(g);
                    *e = (*e).min(g);
                }
                Some(earlier)
            }
        };
        if !frame.last {
            self.answer_caps.insert(responder, joined.clone());
        }
        joined
    }

    /// Merges the syncgroup states of the frame into ours (refusing bad changes), and
    /// returns the specs of the syncgroups this node is in, as they stand after.
    fn merge_syncgroups(
        &self,
        txn: &mut Txn,
        db: &str,
        responder: NodeId,
        frame: &DeltaFrame,
        report: &mut Applied,
    ) -> Result<Vec<(String, StoredSyncgroup, Spec)>, ReplicaError> {
        let mut out = Vec::new();
        for (name, mut stored, spec) in self.joined(db)? {
            let mut spec = spec;
            let theirs = frame
                .syncgroups
                .iter()
                .find(|s| s.db == db && s.spec.as_ref().is_some_and(|sp| sp.name == name));
            if let (Some(theirs), Some(ours)) = (theirs, stored.state.as_mut()) {
                let mut merged = ours.clone();
                match syncgroup::merge_remote(&mut merged, theirs) {
                    Ok((changed, refused)) => {
                        if changed {
                            *ours = merged;
                            spec = syncgroup::spec_of(ours)?.0;
                            self.save_sg(&mut txn.batch, db, &name, &stored);
                        }
                        if let Some(reason) = refused {
                            report.refused.push((responder, 0, reason));
                        }
                    }
                    Err(reason) => report.refused.push((responder, 0, reason)),
                }
            }
            out.push((name, stored, spec));
        }
        Ok(out)
    }

    /// Checks every record of the frame; returns those accepted, whole batches only, and how
    /// far the frame's knowledge may be believed per device: below a refused record that a
    /// genuine one may stand for (a forgery, a batch cut short, a clock too far ahead), so
    /// that the genuine record is asked for again; `None` if none of it may.
    fn verify_records<'f>(
        &self,
        now_ms: u64,
        db: &str,
        specs: &[&Spec],
        responder: NodeId,
        records: &'f [LogRecord],
        report: &mut Applied,
    ) -> (Vec<(Record, &'f LogRecord)>, Option<Knowledge>) {
        // From our wall clock alone: accepted times feed our clock, and a bound from the
        // clock would let a peer push it an hour further each frame.
        let limit = (now_ms << 16).saturating_add(MAX_CLOCK_AHEAD_MS << 16);
        let mut seen: BTreeMap<(NodeId, u64), Version> = BTreeMap::new();
        let mut checked = Vec::with_capacity(records.len());
        for verified in verify_all(records) {
            let result = verified.and_then(|rec| {
                self.check_record(&rec, db, specs, limit)?;
                match seen.insert((rec.author, rec.generation), rec.version) {
                    Some(v) if v != rec.version => Err(RefusalReason::Equivocation(rec.author)),
                    _ => Ok(rec),
                }
            });
            checked.push(result);
        }
        let mut caps = Some(Knowledge::new());
        let mut cap = |author: Option<NodeId>, generation: u64| match (author, caps.as_mut()) {
            (Some(a), Some(c)) => {
                let e = c.entry(a).or_insert(u64::MAX);
                *e = (*e).min(generation.saturating_sub(1));
            }
            _ => caps = None,
        };
        // Whole batches per collection: count the distinct generations of each
        // (author, batch, collection); a group short of its count, or with a refused record,
        // is dropped whole.
        type Group = (NodeId, u64, String);
        let mut counts: BTreeMap<Group, (BTreeSet<u64>, u32)> = BTreeMap::new();
        for rec in checked.iter().flatten() {
            if let Some(b) = rec.batch {
                let e = counts
                    .entry((rec.author, b.id, rec.row.collection.clone()))
                    .or_insert((BTreeSet::new(), b.count));
                e.0.insert(rec.generation);
            }
        }
        let mut bad: BTreeSet<Group> = BTreeSet::new();
        for ((author, id, collection), (got, count)) in &counts {
            if got.len() != *count as usize {
                bad.insert((*author, *id, collection.clone()));
                report.refused.push((
                    responder,
                    0,
                    RefusalReason::IncompleteBatch {
                        author: *author,
                        id: *id,
                        collection: collection.clone(),
                        got: got.len(),
                        count: *count,
                    },
                ));
            }
        }
        for (wire, result) in records.iter().zip(&checked) {
            if let Err(reason) = result {
                let author = NodeId::from_wire(&wire.author).ok();
                if wire.batch_id != 0 {
                    bad.insert((
                        author.unwrap_or_default(),
                        wire.batch_id,
                        wire.collection.clone(),
                    ));
                }
                report
                    .refused
                    .push((responder, wire.generation, reason.clone()));
                // A record that can never be valid (its author may not write, or it is in no
                // syncgroup asked for) may be skipped; any other may stand for a genuine one.
                if !matches!(
                    reason,
                    RefusalReason::NotWriter { .. } | RefusalReason::OutsideRequest(_)
                ) {
                    cap(author, wire.generation);
                }
            }
        }
        let mut accepted = Vec::with_capacity(records.len());
        for (wire, result) in records.iter().zip(checked) {
            let Ok(rec) = result else { continue };
            let dropped = rec
                .batch
                .is_some_and(|b| bad.contains(&(rec.author, b.id, rec.row.collection.clone())));
            if dropped {
                // A valid record dropped with its batch must be asked for again.
                cap(Some(rec.author), rec.generation);
            } else {
                accepted.push((rec, wire));
            }
        }
        (accepted, caps)
    }

    fn check_record(
        &self,
        rec: &Record,
        db: &str,
        specs: &[&Spec],
        limit: u64,
    ) -> Result<(), RefusalReason> {
        if rec.row.db != db {
            return Err(RefusalReason::Malformed(
                "a record of another database".into(),
            ));
        }
        let sharing: Vec<&&Spec> = specs
            .iter()
            .filter(|s| s.collections.contains(&rec.row.collection))
            .collect();
        if sharing.is_empty() {
            return Err(RefusalReason::OutsideRequest(rec.row.collection.clone()));
        }
        if !sharing.iter().any(|s| s.may_write(&rec.author)) {
            return Err(RefusalReason::NotWriter {
                author: rec.author,
                collection: rec.row.collection.clone(),
            });
        }
        if let Ok(Some(held)) = self
            .store
            .get(self.ks.log, &log_key(db, &rec.author, rec.generation))
            && let Ok(held) = LogRecord::decode(held.as_slice())
            && held.version != rec.version.0
        {
            return Err(RefusalReason::Equivocation(rec.author));
        }
        if rec.time > limit {
            return Err(RefusalReason::ClockAhead {
                ahead_ms: (rec.time - limit) >> 16,
            });
        }
        Ok(())
    }

    /// Raises our knowledge to what the frame completes, and remembers the responder's
    /// (after the last frame) for pruning. A pending join whose checkpoint is now covered
    /// may write.
    fn merge_knowledge(
        &self,
        txn: &mut Txn,
        db: &str,
        joined: Vec<(String, StoredSyncgroup, Spec)>,
        responder: NodeId,
        frame: &DeltaFrame,
        caps: Option<&Knowledge>,
    ) -> Result<(), ReplicaError> {
        let Some(caps) = caps else { return Ok(()) };
        for (name, mut stored, spec) in joined {
            let Some(k) = frame.knowledge.iter().find(|k| k.syncgroup == name) else {
                continue;
            };
            // Only a member that may read the syncgroup speaks for what it holds.
            let state = stored
                .state
                .as_ref()
                .ok_or(ReplicaError::Corrupt("syncgroup"))?;
            if member_state(state, &responder) != Some(MemberState::Joined)
                || !spec.may_read(&responder)
            {
                continue;
            }
            let mut theirs = from_wire(k)?;
            for (d, g) in &mut theirs {
                *g = (*g).min(caps.get(d).copied().unwrap_or(u64::MAX));
            }
            let mut ours = self.knowledge(db, &name)?;
            for (d, &g) in &theirs {
                if *d != self.id {
                    let e = ours.entry(*d).or_insert(0);
                    *e = (*e).max(g);
                }
            }
            self.save_knowledge(&mut txn.batch, db, &name, &ours);
            if frame.last && caps.is_empty() {
                self.save_peer_knowledge(&mut txn.batch, db, &name, &responder, &theirs);
            }
            if let Some(cp) = &stored.checkpoint
                && syncgroup::covers(&ours, &from_wire(cp)?, &self.id)
            {
                stored.checkpoint = None;
                self.save_sg(&mut txn.batch, db, &name, &stored);
            }
        }
        Ok(())
    }
}

/// Most records, and bytes of records, an answer reads ahead of its frames per device: a
/// run per store scan, so that reading costs one seek per run and not one per record.
const READ_AHEAD_RECORDS: usize = 512;
const READ_AHEAD_BYTES: usize = 256 * 1024;

/// Groups in a frame below which their signatures are checked on one thread.
const PARALLEL_FROM: usize = 16;

/// Every record checked: its shape and version ([`Record::check`]), then its group's one
/// signature (a batch's records in one collection, or a record alone). A batch group whose
/// records do not number its count is refused whole as incomplete, unsigned or not; a group
/// whose signature fails is refused whole. The recoveries (most of the work of applying a
/// frame) are spread over the machine's cores.
fn verify_all(records: &[LogRecord]) -> Vec<Result<Record, RefusalReason>> {
    let mut out: Vec<Result<Record, RefusalReason>> = records.iter().map(Record::check).collect();
    let mut groups: BTreeMap<(&[u8], u64, &str, u64), Vec<usize>> = BTreeMap::new();
    for (i, w) in records.iter().enumerate() {
        let key = if w.batch_id == 0 {
            (w.author.as_slice(), 0, "", w.generation)
        } else {
            (w.author.as_slice(), w.batch_id, w.collection.as_str(), 0)
        };
        groups.entry(key).or_default().push(i);
    }
    let mut to_check = Vec::new();
    for mut members in groups.into_values() {
        members.sort_by_key(|&i| records[i].generation);
        let first = &records[members[0]];
        let gens: BTreeSet<u64> = members.iter().map(|&i| records[i].generation).collect();
        let whole = first.batch_id == 0
            || (gens.len() == members.len()
                && members
                    .iter()
                    .all(|&i| records[i].batch_count == first.batch_count)
                && gens.len() == first.batch_count as usize);
        if !whole {
            let reason = RefusalReason::IncompleteBatch {
                author: NodeId::from_wire(&first.author).unwrap_or_default(),
                id: first.batch_id,
                collection: first.collection.clone(),
                got: gens.len(),
                count: first.batch_count,
            };
            refuse(&mut out, &members, &reason);
            continue;
        }
        to_check.push(members);
    }
    let check = |members: &Vec<usize>| {
        let author = NodeId::from_wire(&records[members[0]].author).unwrap_or_default();
        let wires: Vec<&LogRecord> = members.iter().map(|&i| &records[i]).collect();
        crate::record::verify_group(&wires, &author)
    };
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let results: Vec<Result<(), RefusalReason>> = if threads < 2 || to_check.len() < PARALLEL_FROM {
        to_check.iter().map(check).collect()
    } else {
        let per = to_check.len().div_ceil(threads.min(8));
        std::thread::scope(|scope| {
            let parts: Vec<_> = to_check
                .chunks(per)
                .map(|part| scope.spawn(move || part.iter().map(check).collect::<Vec<_>>()))
                .collect();
            parts
                .into_iter()
                .zip(to_check.chunks(per))
                .flat_map(|(h, part)| {
                    // A check parses and hashes; it does not panic on any input. If a thread
                    // died anyway, its groups are refused, not taken unchecked.
                    h.join()
                        .unwrap_or_else(|_| vec![Err(RefusalReason::BadSignature); part.len()])
                })
                .collect()
        })
    };
    for (members, result) in to_check.iter().zip(results) {
        if let Err(reason) = result {
            refuse(&mut out, members, &reason);
        }
    }
    out
}

/// Refuses the records of a group that passed their own checks (the others keep their
/// reason).
fn refuse(out: &mut [Result<Record, RefusalReason>], members: &[usize], reason: &RefusalReason) {
    for &i in members {
        if out[i].is_ok() {
            out[i] = Err(reason.clone());
        }
    }
}

/// Whether every syncgroup sharing the record's collection already knows its generation
/// (so this node holds it, or held it and pruned it).
fn already_known(
    joined: &[(String, StoredSyncgroup, Spec)],
    known: &BTreeMap<String, Knowledge>,
    record: &Record,
) -> bool {
    let mut sharing = joined
        .iter()
        .filter(|(_, _, spec)| spec.collections.contains(&record.row.collection))
        .peekable();
    sharing.peek().is_some()
        && sharing.all(|(name, _, _)| {
            known
                .get(name)
                .and_then(|k| k.get(&record.author))
                .is_some_and(|&g| g >= record.generation)
        })
}

/// What one in-process sync did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Frames applied.
    pub frames: u64,
    /// Bytes of the frames on the wire.
    pub bytes: u64,
    /// The counts of every frame.
    pub applied: Applied,
}

/// One GetDeltas round of `initiator` with `responder` in one process, every message
/// encoded and decoded as on the wire and every record verified as if from a stranger.
///
/// # Errors
/// [`ReplicaError::NotAuthorized`], a malformed frame, a store failure.
pub fn sync_once(
    initiator: &mut Replica,
    responder: &Replica,
    now_ms: u64,
    db: &str,
) -> Result<SyncReport, ReplicaError> {
    let req = initiator.delta_request(db)?;
    let req = DeltaRequest::decode(req.encode_to_vec().as_slice())
        .map_err(|_| ReplicaError::Malformed("request"))?;
    let mut answer = responder.answer(&req, initiator.id())?;
    let mut report = SyncReport::default();
    while let Some(frame) = answer.next_frame(responder)? {
        let bytes = frame.encode_to_vec();
        let frame =
            DeltaFrame::decode(bytes.as_slice()).map_err(|_| ReplicaError::Malformed("frame"))?;
        report.frames += 1;
        report.bytes += bytes.len() as u64;
        report
            .applied
            .add(initiator.apply_frame(now_ms, &req, responder.id(), &frame)?);
    }
    Ok(report)
}
