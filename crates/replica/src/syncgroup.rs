//! Syncgroups: which collections of a database are shared, who may read, write and
//! administer them (node ids), and who the members are.
//!
//! A spec version is signed by an admin of the version it replaces (version 1 by its
//! creator); an update is a compare-and-swap on the version. Joins go through an admin, who
//! checks the ACL, adds the member (a member entry it signs) and hands back the syncgroup
//! with its knowledge as a checkpoint: the joiner writes nothing into the shared collections
//! until it has synced that far. Members leave by signing their own entry; an admin ejects
//! one by signing its entry and removing it from the ACL. The state travels in the first
//! frame of every answer and merges as Syncbase's does: the higher spec version wins (ties:
//! the larger digest), and per member the later change.
//!
//! An update re-signs the member entries signed by admins it removes, so they still verify.
//! A spec received is held to the rules a local one is, whoever signed it; a refused spec
//! step or member entry is left out alone, and the rest of the state still merges. A joiner
//! keeps the grant's spec history, so it can hand it on and tell stale entries from forged.
//! Known limits: a spec is checked against the admins of the spec the receiver holds, so a
//! member that missed a version which changed the admins refuses the later ones until it
//! gets that version; and two admins that publish the same version at once, each removing
//! the other, split the members that saw one first from those that saw the other.

use std::collections::BTreeMap;

use prost::Message;
use tributary_overlay::identity::recover_address;
use tributary_wire::replica::{self as wire, Member, SyncgroupSpec, SyncgroupState};

use crate::keys::{StoredSyncgroup, decode, meta_key};
use crate::record::message_digest;
use crate::replica::{Replica, own_id_gen};
use crate::types::{NodeId, check_name};
use crate::{RefusalReason, ReplicaError};

/// A generation vector: device → highest generation held.
pub type Knowledge = BTreeMap<NodeId, u64>;

const SPEC_DOMAIN: &[u8] = b"tributary-replica-spec";
const MEMBER_DOMAIN: &[u8] = b"tributary-replica-member";
/// Most syncgroups per database.
pub const MAX_SYNCGROUPS: usize = 64;
/// Most collections per syncgroup, and most ids per ACL list.
pub const MAX_LIST: usize = 1024;

/// A member's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum MemberState {
    /// A member.
    Joined = 1,
    /// Left on its own.
    Left = 2,
    /// Ejected by an admin.
    Ejected = 3,
}

impl MemberState {
    fn from_code(code: u32) -> Option<Self> {
        match code {
            1 => Some(Self::Joined),
            2 => Some(Self::Left),
            3 => Some(Self::Ejected),
            _ => None,
        }
    }

    /// The state's name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Joined => "joined",
            Self::Left => "left",
            Self::Ejected => "ejected",
        }
    }
}

/// What a syncgroup shares and with whom.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Spec {
    /// Unique in the database.
    pub name: String,
    /// Free text.
    pub description: String,
    /// The shared collections.
    pub collections: Vec<String>,
    /// May read.
    pub readers: Vec<NodeId>,
    /// May read and write.
    pub writers: Vec<NodeId>,
    /// May read, write and administer.
    pub admins: Vec<NodeId>,
}

/// A syncgroup as this node holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncgroupInfo {
    /// The database.
    pub db: String,
    /// The spec.
    pub spec: Spec,
    /// Its version.
    pub version: u64,
    /// The members and their states.
    pub members: Vec<(NodeId, MemberState)>,
    /// This node's knowledge.
    pub knowledge: Knowledge,
    /// What each member was last known to hold.
    pub member_knowledge: BTreeMap<NodeId, Knowledge>,
    /// Whether this node joined and has not yet synced up to the admin's checkpoint.
    pub pending: bool,
}

/// What an admin hands a joiner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinGrant {
    /// The syncgroup, the joiner a member.
    pub state: SyncgroupState,
    /// The admin's knowledge at the join.
    pub checkpoint: wire::Knowledge,
}

fn ids(list: &[Vec<u8>]) -> Result<Vec<NodeId>, RefusalReason> {
    list.iter()
        .map(|b| NodeId::from_wire(b).map_err(|e| RefusalReason::Malformed(e.to_string())))
        .collect()
}

fn wire_ids(list: &[NodeId]) -> Vec<Vec<u8>> {
    list.iter().map(|id| id.0.to_vec()).collect()
}

/// The spec of a wire state.
pub(crate) fn spec_of(state: &SyncgroupState) -> Result<(Spec, u64), RefusalReason> {
    let s = state
        .spec
        .as_ref()
        .ok_or_else(|| RefusalReason::Malformed("a syncgroup without a spec".into()))?;
    parse_spec(s)
}

/// A wire spec, parsed (its lists within their bounds, its ids well formed).
fn parse_spec(s: &SyncgroupSpec) -> Result<(Spec, u64), RefusalReason> {
    if s.collections.len() > MAX_LIST
        || s.readers.len() + s.writers.len() + s.admins.len() > 3 * MAX_LIST
    {
        return Err(RefusalReason::Malformed(
            "a syncgroup spec over its limits".into(),
        ));
    }
    Ok((
        Spec {
            name: s.name.clone(),
            description: s.description.clone(),
            collections: s.collections.clone(),
            readers: ids(&s.readers)?,
            writers: ids(&s.writers)?,
            admins: ids(&s.admins)?,
        },
        s.version,
    ))
}

impl Spec {
    /// Whether `id` may read.
    #[must_use]
    pub fn may_read(&self, id: &NodeId) -> bool {
        self.readers.contains(id) || self.may_write(id)
    }

    /// Whether `id` may write.
    #[must_use]
    pub fn may_write(&self, id: &NodeId) -> bool {
        self.writers.contains(id) || self.is_admin(id)
    }

    /// Whether `id` is an admin.
    #[must_use]
    pub fn is_admin(&self, id: &NodeId) -> bool {
        self.admins.contains(id)
    }

    /// Checks a spec this node makes.
    fn check(&self) -> Result<(), ReplicaError> {
        self.check_received()?;
        self.collections
            .iter()
            .try_for_each(|c| crate::types::check_new_collection(c))
    }

    /// Checks a spec received in a sync: the rules of [`Spec::check`], but collection names
    /// by the plain rule (as records received are), so a syncgroup shared before some names
    /// were reserved still syncs.
    fn check_received(&self) -> Result<(), ReplicaError> {
        check_name("syncgroup", &self.name)?;
        if self.collections.is_empty() || self.collections.len() > MAX_LIST {
            return Err(ReplicaError::BadName {
                kind: "collection list",
                name: format!("{} collections (1 to {MAX_LIST})", self.collections.len()),
            });
        }
        for c in &self.collections {
            check_name("collection", c)?;
        }
        if self.admins.is_empty() {
            return Err(ReplicaError::BadName {
                kind: "admin list",
                name: "empty (a syncgroup needs an admin)".into(),
            });
        }
        if self.description.len() > 4096
            || [&self.readers, &self.writers, &self.admins]
                .iter()
                .any(|l| l.len() > MAX_LIST)
        {
            return Err(ReplicaError::BadName {
                kind: "syncgroup spec",
                name: "a description over 4 KiB or an ACL list over 1,024 ids".into(),
            });
        }
        Ok(())
    }
}

fn spec_digest(db: &str, spec: &SyncgroupSpec) -> [u8; 32] {
    let mut unsigned = spec.clone();
    unsigned.signature.clear();
    let context = wire::SyncgroupState {
        db: db.into(),
        spec: Some(unsigned),
        members: Vec::new(),
        history: Vec::new(),
    };
    message_digest(SPEC_DOMAIN, &context)
}

fn member_digest(db: &str, name: &str, member: &Member) -> [u8; 32] {
    let mut unsigned = member.clone();
    unsigned.signature.clear();
    let context = wire::SyncgroupState {
        db: db.into(),
        spec: Some(SyncgroupSpec {
            name: name.into(),
            ..SyncgroupSpec::default()
        }),
        members: vec![unsigned],
        history: Vec::new(),
    };
    message_digest(MEMBER_DOMAIN, &context)
}

fn sg_key(db: &str, name: &str) -> Vec<u8> {
    meta_key(db, "sg", &[name.as_bytes()])
}

fn knowledge_key(db: &str, name: &str) -> Vec<u8> {
    meta_key(db, "k", &[name.as_bytes()])
}

fn peer_knowledge_key(db: &str, name: &str, peer: &NodeId) -> Vec<u8> {
    meta_key(db, "pk", &[name.as_bytes(), &peer.0])
}

/// A vector from the wire.
pub(crate) fn from_wire(k: &wire::Knowledge) -> Result<Knowledge, RefusalReason> {
    if k.gens.len() > 4 * MAX_LIST {
        return Err(RefusalReason::Malformed(
            "a generation vector of over 4,096 devices".into(),
        ));
    }
    k.gens
        .iter()
        .map(|e| {
            if e.generation > crate::record::MAX_GENERATION {
                return Err(RefusalReason::Malformed(format!(
                    "generation {} in a vector",
                    e.generation
                )));
            }
            NodeId::from_wire(&e.device)
                .map(|d| (d, e.generation))
                .map_err(|e| RefusalReason::Malformed(e.to_string()))
        })
        .collect()
}

/// A vector for the wire.
pub(crate) fn to_wire(name: &str, k: &Knowledge) -> wire::Knowledge {
    wire::Knowledge {
        syncgroup: name.into(),
        gens: k
            .iter()
            .map(|(d, &generation)| wire::GenEntry {
                device: d.0.to_vec(),
                generation,
            })
            .collect(),
    }
}

impl Replica {
    fn load_sg(&self, db: &str, name: &str) -> Result<Option<StoredSyncgroup>, ReplicaError> {
        self.store
            .get(self.ks.meta, &sg_key(db, name))?
            .map(|b| decode::<StoredSyncgroup>("syncgroup", &b))
            .transpose()
    }

    fn need_sg(
        &self,
        db: &str,
        name: &str,
    ) -> Result<(StoredSyncgroup, SyncgroupState), ReplicaError> {
        let stored = self
            .load_sg(db, name)?
            .ok_or_else(|| ReplicaError::NoSyncgroup {
                db: db.into(),
                name: name.into(),
            })?;
        let state = stored
            .state
            .clone()
            .ok_or(ReplicaError::Corrupt("syncgroup"))?;
        Ok((stored, state))
    }

    pub(crate) fn save_sg(
        &self,
        batch: &mut tributary_store::WriteBatch,
        db: &str,
        name: &str,
        sg: &StoredSyncgroup,
    ) {
        batch.put(self.ks.meta, &sg_key(db, name), &sg.encode_to_vec());
    }

    /// The databases that hold at least one syncgroup: a skip-scan of the meta keyspace, one
    /// seek per database (`db ‖ 1` is past every key of `db`, names hold no 0 or 1 byte);
    /// node-wide keys (no 0 byte) are stepped over.
    ///
    /// # Errors
    /// A store failure, a corrupt key.
    pub fn synced_databases(&self) -> Result<Vec<String>, ReplicaError> {
        let mut out = Vec::new();
        let mut from = Vec::new();
        loop {
            let Some((key, _)) = self
                .store
                .scan_from(self.ks.meta, &from)
                .next()
                .transpose()?
            else {
                break;
            };
            let Some(end) = key.iter().position(|&b| b == 0) else {
                // A node-wide key (the clock): no database; go on right after it.
                from = key.clone();
                from.push(0);
                continue;
            };
            let db = std::str::from_utf8(&key[..end])
                .map_err(|_| ReplicaError::Corrupt("meta key"))?
                .to_string();
            from = key[..end].to_vec();
            from.push(1);
            if !self.syncgroup_names(&db)?.is_empty() {
                out.push(db);
            }
        }
        Ok(out)
    }

    /// The names of `db`'s syncgroups this node holds.
    ///
    /// # Errors
    /// A store failure.
    pub fn syncgroup_names(&self, db: &str) -> Result<Vec<String>, ReplicaError> {
        let prefix = meta_key(db, "sg", &[]);
        let mut out = Vec::new();
        for item in self.store.scan_from(self.ks.meta, &prefix) {
            let (k, _) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            let name = std::str::from_utf8(k.get(prefix.len() + 1..).unwrap_or_default())
                .map_err(|_| ReplicaError::Corrupt("syncgroup key"))?;
            out.push(name.to_string());
        }
        Ok(out)
    }

    /// Creates a syncgroup of `db` with this node as its first admin and member.
    ///
    /// # Errors
    /// Bad names or lists, a syncgroup of that name, too many syncgroups, a store failure.
    pub fn create_syncgroup(
        &mut self,
        now_ms: u64,
        db: &str,
        mut spec: Spec,
    ) -> Result<(), ReplicaError> {
        check_name("database", db)?;
        if !spec.admins.contains(&self.id) {
            spec.admins.push(self.id);
        }
        spec.check()?;
        if self.load_sg(db, &spec.name)?.is_some() {
            return Err(ReplicaError::SyncgroupExists(spec.name));
        }
        if self.syncgroup_names(db)?.len() >= MAX_SYNCGROUPS {
            return Err(ReplicaError::BadName {
                kind: "syncgroup",
                name: format!(
                    "{} (a database has at most {MAX_SYNCGROUPS} syncgroups)",
                    spec.name
                ),
            });
        }
        let wire_spec = self.sign_spec(db, &spec, 1)?;
        let mut state = SyncgroupState {
            db: db.into(),
            spec: Some(wire_spec),
            members: Vec::new(),
            history: Vec::new(),
        };
        let time = self.tick(now_ms);
        state
            .members
            .push(self.sign_member(db, &spec.name, self.id, MemberState::Joined, time)?);
        let mut batch = tributary_store::WriteBatch::default();
        self.save_sg(
            &mut batch,
            db,
            &spec.name,
            &StoredSyncgroup {
                state: Some(state),
                checkpoint: None,
            },
        );
        Ok(self.store.write(batch)?)
    }

    fn tick(&mut self, now_ms: u64) -> u64 {
        self.clock = self.clock.tick(now_ms);
        self.clock.0
    }

    fn sign_spec(
        &self,
        db: &str,
        spec: &Spec,
        version: u64,
    ) -> Result<SyncgroupSpec, ReplicaError> {
        let mut wire_spec = SyncgroupSpec {
            name: spec.name.clone(),
            description: spec.description.clone(),
            collections: spec.collections.clone(),
            readers: wire_ids(&spec.readers),
            writers: wire_ids(&spec.writers),
            admins: wire_ids(&spec.admins),
            version,
            signer: self.id.0.to_vec(),
            signature: Vec::new(),
        };
        wire_spec.signature = self
            .identity
            .sign(&spec_digest(db, &wire_spec))
            .map_err(|_| ReplicaError::Signing)?;
        Ok(wire_spec)
    }

    fn sign_member(
        &self,
        db: &str,
        name: &str,
        id: NodeId,
        state: MemberState,
        time: u64,
    ) -> Result<Member, ReplicaError> {
        let mut m = Member {
            id: id.0.to_vec(),
            state: state as u32,
            time,
            signer: self.id.0.to_vec(),
            signature: Vec::new(),
        };
        m.signature = self
            .identity
            .sign(&member_digest(db, name, &m))
            .map_err(|_| ReplicaError::Signing)?;
        Ok(m)
    }

    /// A syncgroup as this node holds it.
    ///
    /// # Errors
    /// [`ReplicaError::NoSyncgroup`], or a store failure.
    pub fn syncgroup(&self, db: &str, name: &str) -> Result<SyncgroupInfo, ReplicaError> {
        let (stored, state) = self.need_sg(db, name)?;
        let (spec, version) = spec_of(&state)?;
        let members = members_of(&state);
        let mut member_knowledge = BTreeMap::new();
        for (id, _) in &members {
            if *id != self.id {
                member_knowledge.insert(*id, self.peer_knowledge(db, name, id)?);
            }
        }
        Ok(SyncgroupInfo {
            db: db.into(),
            spec,
            version,
            members,
            knowledge: self.knowledge(db, name)?,
            member_knowledge,
            pending: stored.checkpoint.is_some(),
        })
    }

    /// As an admin: lets `joiner` into the syncgroup and returns what it needs to join.
    ///
    /// # Errors
    /// [`ReplicaError::NotAdmin`], [`ReplicaError::NotAllowed`], or a store failure.
    pub fn admin_join(
        &mut self,
        now_ms: u64,
        db: &str,
        name: &str,
        joiner: NodeId,
    ) -> Result<JoinGrant, ReplicaError> {
        let (mut stored, mut state) = self.need_sg(db, name)?;
        let (spec, _) = spec_of(&state)?;
        if !spec.is_admin(&self.id) || member_state(&state, &self.id) != Some(MemberState::Joined) {
            return Err(ReplicaError::NotAdmin(self.id, name.into()));
        }
        if !spec.may_read(&joiner) {
            return Err(ReplicaError::NotAllowed(joiner, name.into()));
        }
        let time = self.tick(now_ms);
        let entry = self.sign_member(db, name, joiner, MemberState::Joined, time)?;
        merge_member(&mut state, entry);
        stored.state = Some(state.clone());
        let mut batch = tributary_store::WriteBatch::default();
        self.save_sg(&mut batch, db, name, &stored);
        self.store.write(batch)?;
        Ok(JoinGrant {
            state,
            checkpoint: to_wire(name, &self.knowledge(db, name)?),
        })
    }

    /// As the joiner: takes the admin's grant. Writes to the shared collections wait until
    /// this node's knowledge covers the checkpoint.
    ///
    /// # Errors
    /// A grant whose spec or membership does not verify, or a store failure.
    pub fn accept_join(&mut self, grant: &JoinGrant) -> Result<(), ReplicaError> {
        let db = grant.state.db.clone();
        check_name("database", &db)?;
        let spec_wire = grant
            .state
            .spec
            .as_ref()
            .ok_or(ReplicaError::Malformed("a grant without a spec"))?;
        let (spec, _) = spec_of(&grant.state)?;
        spec.check_received()?;
        let signer = verify_spec_signature(&db, spec_wire)?;
        if !spec.is_admin(&signer) {
            return Err(RefusalReason::BadSyncgroupChange(spec.name).into());
        }
        let mut state = SyncgroupState {
            db: db.clone(),
            spec: Some(spec_wire.clone()),
            members: Vec::new(),
            history: granted_history(&db, &grant.state.history, spec_wire),
        };
        for m in &grant.state.members {
            // An entry that does not verify is left out; the joiner's own must verify.
            if verify_member(&db, &spec, &spec_wire.signer, m).is_ok() {
                merge_member(&mut state, m.clone());
            }
        }
        if member_state(&state, &self.id) != Some(MemberState::Joined) {
            return Err(ReplicaError::NotAllowed(self.id, spec.name));
        }
        let held = self.load_sg(&db, &spec.name)?;
        let rejoin = held
            .as_ref()
            .and_then(|h| h.state.as_ref())
            .is_some_and(|st| member_state(st, &self.id) != Some(MemberState::Joined));
        if held.is_some() && !rejoin {
            return Err(ReplicaError::SyncgroupExists(spec.name));
        }
        if !rejoin && self.syncgroup_names(&db)?.len() >= MAX_SYNCGROUPS {
            return Err(ReplicaError::BadName {
                kind: "syncgroup",
                name: format!(
                    "{} (a database has at most {MAX_SYNCGROUPS} syncgroups)",
                    spec.name
                ),
            });
        }
        let checkpoint = from_wire(&grant.checkpoint)?;
        let mut batch = tributary_store::WriteBatch::default();
        let pending = !covers(&self.knowledge(&db, &spec.name)?, &checkpoint, &self.id);
        self.save_sg(
            &mut batch,
            &db,
            &spec.name,
            &StoredSyncgroup {
                state: Some(state),
                checkpoint: pending.then(|| grant.checkpoint.clone()),
            },
        );
        Ok(self.store.write(batch)?)
    }

    /// Leaves a syncgroup: this node stops syncing it and keeps its data.
    ///
    /// # Errors
    /// [`ReplicaError::NoSyncgroup`], or a store failure.
    pub fn leave_syncgroup(
        &mut self,
        now_ms: u64,
        db: &str,
        name: &str,
    ) -> Result<(), ReplicaError> {
        self.set_member(now_ms, db, name, self.id, MemberState::Left)
    }

    /// As an admin: ejects `member` (its entry, and its place in the ACL lists).
    ///
    /// # Errors
    /// [`ReplicaError::NotAdmin`], [`ReplicaError::NoSyncgroup`], or a store failure.
    pub fn eject(
        &mut self,
        now_ms: u64,
        db: &str,
        name: &str,
        member: NodeId,
    ) -> Result<(), ReplicaError> {
        let info = self.syncgroup(db, name)?;
        if !info.spec.is_admin(&self.id) {
            return Err(ReplicaError::NotAdmin(self.id, name.into()));
        }
        let mut spec = info.spec;
        spec.readers.retain(|id| *id != member);
        spec.writers.retain(|id| *id != member);
        spec.admins.retain(|id| *id != member);
        if spec.admins.is_empty() {
            return Err(ReplicaError::NotAllowed(
                member,
                format!("{name} (its last admin cannot be ejected)"),
            ));
        }
        self.update_spec(db, spec, info.version)?;
        self.set_member(now_ms, db, name, member, MemberState::Ejected)
    }

    fn set_member(
        &mut self,
        now_ms: u64,
        db: &str,
        name: &str,
        id: NodeId,
        to: MemberState,
    ) -> Result<(), ReplicaError> {
        let (mut stored, mut state) = self.need_sg(db, name)?;
        let (spec, _) = spec_of(&state)?;
        if id != self.id && !spec.is_admin(&self.id) {
            return Err(ReplicaError::NotAdmin(self.id, name.into()));
        }
        let time = self.tick(now_ms);
        let entry = self.sign_member(db, name, id, to, time)?;
        merge_member(&mut state, entry);
        stored.state = Some(state);
        let mut batch = tributary_store::WriteBatch::default();
        self.save_sg(&mut batch, db, name, &stored);
        Ok(self.store.write(batch)?)
    }

    /// As an admin: replaces the spec if it is still at `expected_version`; returns the new
    /// version. The name cannot change.
    ///
    /// # Errors
    /// [`ReplicaError::SpecVersion`], [`ReplicaError::NotAdmin`], bad lists, a store failure.
    pub fn update_spec(
        &mut self,
        db: &str,
        spec: Spec,
        expected_version: u64,
    ) -> Result<u64, ReplicaError> {
        spec.check()?;
        let (mut stored, mut state) = self.need_sg(db, &spec.name)?;
        let (current, version) = spec_of(&state)?;
        if !current.is_admin(&self.id) {
            return Err(ReplicaError::NotAdmin(self.id, spec.name));
        }
        if version != expected_version {
            return Err(ReplicaError::SpecVersion {
                name: spec.name,
                expected: expected_version,
                actual: version,
            });
        }
        let next = self.sign_spec(db, &spec, version + 1)?;
        advance_spec(&mut state, next);
        // Entries signed by admins the new spec drops would no longer verify: re-sign them
        // (same member, state and time) so that the change reaches every member.
        for m in &mut state.members {
            let signer = NodeId::from_wire(&m.signer).unwrap_or_default();
            let self_left = m.state == MemberState::Left as u32 && m.signer == m.id;
            if !spec.is_admin(&signer) && signer != self.id && !self_left {
                let id = NodeId::from_wire(&m.id).map_err(|_| ReplicaError::Corrupt("member"))?;
                let st = MemberState::from_code(m.state).ok_or(ReplicaError::Corrupt("member"))?;
                *m = self.sign_member(db, &spec.name, id, st, m.time)?;
            }
        }
        stored.state = Some(state);
        let mut batch = tributary_store::WriteBatch::default();
        self.save_sg(&mut batch, db, &spec.name, &stored);
        self.store.write(batch)?;
        Ok(version + 1)
    }

    /// This node's knowledge of a syncgroup, its own generation included.
    pub(crate) fn knowledge(&self, db: &str, name: &str) -> Result<Knowledge, ReplicaError> {
        let mut k = match self.store.get(self.ks.meta, &knowledge_key(db, name))? {
            Some(b) => from_wire(&decode::<wire::Knowledge>("knowledge", &b)?)?,
            None => Knowledge::new(),
        };
        let (id, generation) = own_id_gen(self, db)?;
        if generation > 0 {
            k.insert(id, generation);
        }
        Ok(k)
    }

    pub(crate) fn save_knowledge(
        &self,
        batch: &mut tributary_store::WriteBatch,
        db: &str,
        name: &str,
        k: &Knowledge,
    ) {
        let mut k = k.clone();
        k.remove(&self.id);
        batch.put(
            self.ks.meta,
            &knowledge_key(db, name),
            &to_wire(name, &k).encode_to_vec(),
        );
    }

    pub(crate) fn peer_knowledge(
        &self,
        db: &str,
        name: &str,
        peer: &NodeId,
    ) -> Result<Knowledge, ReplicaError> {
        match self
            .store
            .get(self.ks.meta, &peer_knowledge_key(db, name, peer))?
        {
            Some(b) => Ok(from_wire(&decode::<wire::Knowledge>("knowledge", &b)?)?),
            None => Ok(Knowledge::new()),
        }
    }

    pub(crate) fn save_peer_knowledge(
        &self,
        batch: &mut tributary_store::WriteBatch,
        db: &str,
        name: &str,
        peer: &NodeId,
        k: &Knowledge,
    ) {
        batch.put(
            self.ks.meta,
            &peer_knowledge_key(db, name, peer),
            &to_wire(name, k).encode_to_vec(),
        );
    }

    /// The syncgroups of `db` this node is a member of, with their state and checkpoint.
    pub(crate) fn joined(
        &self,
        db: &str,
    ) -> Result<Vec<(String, StoredSyncgroup, Spec)>, ReplicaError> {
        let mut out = Vec::new();
        for name in self.syncgroup_names(db)? {
            let (stored, state) = self.need_sg(db, &name)?;
            if member_state(&state, &self.id) == Some(MemberState::Joined) {
                let (spec, _) = spec_of(&state)?;
                out.push((name, stored, spec));
            }
        }
        Ok(out)
    }
}

/// The members of a state, in id order.
pub(crate) fn members_of(state: &SyncgroupState) -> Vec<(NodeId, MemberState)> {
    let mut out: Vec<_> = state
        .members
        .iter()
        .filter_map(|m| {
            Some((
                NodeId::from_wire(&m.id).ok()?,
                MemberState::from_code(m.state)?,
            ))
        })
        .collect();
    out.sort();
    out
}

pub(crate) fn member_state(state: &SyncgroupState, id: &NodeId) -> Option<MemberState> {
    state
        .members
        .iter()
        .find(|m| m.id == id.0)
        .and_then(|m| MemberState::from_code(m.state))
}

/// Keeps the later change of each member.
fn merge_member(state: &mut SyncgroupState, entry: Member) {
    match state.members.iter_mut().find(|m| m.id == entry.id) {
        Some(m) if (entry.time, entry.state) > (m.time, m.state) => *m = entry,
        Some(_) => {}
        None => state.members.push(entry),
    }
}

fn verify_spec_signature(db: &str, spec: &SyncgroupSpec) -> Result<NodeId, RefusalReason> {
    let signer = recover_address(&spec_digest(db, spec), &spec.signature)
        .map_err(|_| RefusalReason::BadSyncgroupChange(spec.name.clone()))?;
    if signer != spec.signer.as_slice() {
        return Err(RefusalReason::BadSyncgroupChange(spec.name.clone()));
    }
    Ok(NodeId(signer))
}

/// Checks a member entry: signed by an admin of `spec`, or by the admin who signed `spec`
/// (who re-signs, when it publishes a spec, the entries of the admins it removes, itself
/// included), or (leaving) by the member itself.
fn verify_member(
    db: &str,
    spec: &Spec,
    spec_signer: &[u8],
    m: &Member,
) -> Result<(), RefusalReason> {
    let bad = || RefusalReason::BadSyncgroupChange(spec.name.clone());
    let signed = member_signer(db, &spec.name, m).ok_or_else(bad)?;
    if !may_sign(spec, spec_signer, &signed) {
        return Err(bad());
    }
    Ok(())
}

/// Who signed member entry `m` (checked against its `signer` field), whom it is about, and
/// its state; `None` if the signature or the fields do not hold.
fn member_signer(db: &str, name: &str, m: &Member) -> Option<(NodeId, NodeId, MemberState)> {
    let signer = NodeId(recover_address(&member_digest(db, name, m), &m.signature).ok()?);
    let id = NodeId::from_wire(&m.id).ok()?;
    let state = MemberState::from_code(m.state)?;
    (signer.0 == m.signer.as_slice()).then_some((signer, id, state))
}

/// Whether the signer of a member entry may sign it under `spec` (signed by `spec_signer`):
/// an admin, the spec's signer, or the member itself leaving.
fn may_sign(
    spec: &Spec,
    spec_signer: &[u8],
    (signer, id, state): &(NodeId, NodeId, MemberState),
) -> bool {
    spec.is_admin(signer)
        || signer.0 == spec_signer
        || (*state == MemberState::Left && signer == id)
}

/// The spec before `ours`'s current one (its history's last entry), parsed, with its signer.
fn previous_spec(ours: &SyncgroupState) -> Option<(Spec, Vec<u8>)> {
    let h = ours.history.last()?;
    parse_spec(h).ok().map(|(spec, _)| (spec, h.signer.clone()))
}

/// Merges a syncgroup state received from a peer into ours. Returns whether ours changed,
/// and why a spec or a member entry was refused if one was: a refused entry or spec step is
/// left out alone, and the rest still merges (each step is checked against the spec held,
/// so one after a refused step needs nothing from it).
pub(crate) fn merge_remote(
    ours: &mut SyncgroupState,
    theirs: &SyncgroupState,
) -> Result<(bool, Option<RefusalReason>), RefusalReason> {
    let db = ours.db.clone();
    let (_, version) = spec_of(ours)?;
    let mut changed = false;
    let mut refused = None;
    if let Some(their_spec) = &theirs.spec {
        if theirs.history.len() > MAX_SPEC_HISTORY {
            return Err(RefusalReason::Malformed(format!(
                "a spec history over {MAX_SPEC_HISTORY} versions"
            )));
        }
        // The versions we missed (a fork of ours included: the tie-break may prefer it),
        // then their current spec (whose signature is checked even when it is not newer).
        let missed = theirs.history.iter().filter(|h| h.version >= version);
        for step in missed.chain(std::iter::once(their_spec)) {
            match follow_spec(ours, &db, step) {
                Ok(followed) => changed |= followed,
                Err(reason) => refused = Some(reason),
            }
        }
    }
    let (spec, _) = spec_of(ours)?;
    let spec_signer = ours
        .spec
        .as_ref()
        .map(|s| s.signer.clone())
        .unwrap_or_default();
    if theirs.members.len() > MAX_LIST {
        return Err(RefusalReason::Malformed("over 1,024 members".into()));
    }
    let former = previous_spec(ours);
    for m in &theirs.members {
        // An entry that does not verify is refused alone: the spec and the other entries
        // still merge. One signed by an admin of the spec before ours is stale, not forged
        // (its sender has not had it re-signed yet): left out. One recovery per entry.
        let signed = member_signer(&db, &spec.name, m);
        if !signed
            .as_ref()
            .is_some_and(|s| may_sign(&spec, &spec_signer, s))
        {
            let stale = signed
                .as_ref()
                .is_some_and(|s| former.as_ref().is_some_and(|(f, by)| may_sign(f, by, s)));
            if !stale {
                refused = Some(RefusalReason::BadSyncgroupChange(spec.name.clone()));
            }
            continue;
        }
        let before = ours.members.clone();
        // A held entry that no longer verifies (its signer left the admins) gives way to a
        // verified one, such as the copy the new spec's signer re-signed.
        if let Some(held) = ours.members.iter_mut().find(|h| h.id == m.id)
            && verify_member(&db, &spec, &spec_signer, held).is_err()
            && (m.time, m.state) >= (held.time, held.state)
        {
            *held = m.clone();
        } else {
            merge_member(ours, m.clone());
        }
        changed |= before != ours.members;
    }
    Ok((changed, refused))
}

/// The part of a grant's spec history a joiner keeps: the newest entries that are signed,
/// of the same syncgroup and of increasing versions below `current`, within the history's
/// bounds. The joiner needs none of them itself, but it hands them on to members that
/// missed versions, and the last one tells it which member entries are stale (signed under
/// the spec before) rather than forged. Each receiver checks every step again.
fn granted_history(
    db: &str,
    history: &[SyncgroupSpec],
    current: &SyncgroupSpec,
) -> Vec<SyncgroupSpec> {
    let mut kept: Vec<SyncgroupSpec> = Vec::new();
    let (mut above, mut bytes) = (current, 0);
    for h in history.iter().rev().take(MAX_SPEC_HISTORY) {
        bytes += h.encoded_len();
        if h.name != current.name
            || h.version >= above.version
            || bytes > MAX_SPEC_HISTORY_BYTES
            || verify_spec_signature(db, h).is_err()
        {
            break;
        }
        kept.push(h.clone());
        above = h;
    }
    kept.reverse();
    kept
}

/// Specs kept before the current one ([`SyncgroupState::history`]), for members that
/// missed versions: at most this many, within [`MAX_SPEC_HISTORY_BYTES`].
pub const MAX_SPEC_HISTORY: usize = 16;

/// The encoded bytes of spec history kept per syncgroup, all entries counted (every
/// syncgroup's state rides in the first frame of every answer, so this adds at most 2 MiB
/// to it over 64 syncgroups). A spec larger than this is kept in no history.
pub const MAX_SPEC_HISTORY_BYTES: usize = 32 * 1024;

/// Makes `next` the spec of `state`, keeping the one it replaces in the history if it is an
/// older version (a same-version fork that loses the digest tie is no link of the chain),
/// the oldest dropped past the bounds.
fn advance_spec(state: &mut SyncgroupState, next: SyncgroupSpec) {
    if let Some(old) = state.spec.take()
        && old.version < next.version
    {
        state.history.push(old);
        let bytes = |h: &[SyncgroupSpec]| h.iter().map(Message::encoded_len).sum::<usize>();
        while !state.history.is_empty()
            && (state.history.len() > MAX_SPEC_HISTORY
                || bytes(&state.history) > MAX_SPEC_HISTORY_BYTES)
        {
            state.history.remove(0);
        }
    }
    state.spec = Some(next);
}

/// Takes `step` as the next spec of `ours` if it is newer (a higher version, or the same
/// version with a larger digest); whether it did. A newer spec must be signed by an admin
/// of the spec held.
fn follow_spec(
    ours: &mut SyncgroupState,
    db: &str,
    step: &SyncgroupSpec,
) -> Result<bool, RefusalReason> {
    let (current, version) = spec_of(ours)?;
    let signer = verify_spec_signature(db, step)?;
    if step.name != current.name {
        return Err(RefusalReason::BadSyncgroupChange(current.name));
    }
    let newer = step.version > version
        || (step.version == version
            && ours
                .spec
                .as_ref()
                .is_some_and(|s| spec_digest(db, step) > spec_digest(db, s)));
    if !newer {
        return Ok(false);
    }
    // Always an admin of the spec held, a fork of the same version included: checking a
    // fork against the version it replaced would let an admin removed at this version
    // publish a fork with a larger digest and take the syncgroup back.
    if !current.is_admin(&signer) {
        return Err(RefusalReason::BadSyncgroupChange(current.name));
    }
    // An admin's signature does not make a spec well formed: it is held to the rules a
    // local update is (an admin left, collections named as local writes require, bounds).
    let (next, _) = parse_spec(step)?;
    if let Err(e) = next.check_received() {
        return Err(RefusalReason::Malformed(format!(
            "syncgroup {} version {}: {e}",
            current.name, step.version
        )));
    }
    advance_spec(ours, step.clone());
    Ok(true)
}

/// Whether `k` holds everything of `checkpoint` (this node's own entry aside).
pub(crate) fn covers(k: &Knowledge, checkpoint: &Knowledge, me: &NodeId) -> bool {
    checkpoint
        .iter()
        .all(|(d, g)| d == me || k.get(d).is_some_and(|have| have >= g))
}

/// Refuses a local write into a collection this node may not write, or whose syncgroup join
/// is still pending.
/// `joined` is [`Replica::joined`] of the database, read once per batch.
pub(crate) fn check_local_write(
    r: &Replica,
    joined: &[(String, StoredSyncgroup, Spec)],
    collection: &str,
) -> Result<(), ReplicaError> {
    for (name, stored, spec) in joined {
        if !spec.collections.iter().any(|c| c == collection) {
            continue;
        }
        if !spec.may_write(&r.id) {
            return Err(ReplicaError::NotWriter {
                collection: collection.into(),
                syncgroup: name.clone(),
            });
        }
        if stored.checkpoint.is_some() {
            return Err(ReplicaError::JoinPending(name.clone()));
        }
    }
    Ok(())
}

/// Per syncgroup this node is in: its collections, and what all its members hold.
pub(crate) fn common_knowledge(
    r: &Replica,
    db: &str,
) -> Result<BTreeMap<String, (Vec<String>, Knowledge)>, ReplicaError> {
    let mut out = BTreeMap::new();
    for (name, stored, spec) in r.joined(db)? {
        let state = stored.state.ok_or(ReplicaError::Corrupt("syncgroup"))?;
        let mut common = r.knowledge(db, &name)?;
        for (id, st) in members_of(&state) {
            if id == r.id || st != MemberState::Joined {
                continue;
            }
            let theirs = r.peer_knowledge(db, &name, &id)?;
            common.retain(|d, g| match theirs.get(d) {
                Some(t) => {
                    *g = (*g).min(*t);
                    true
                }
                None => false,
            });
        }
        out.insert(name, (spec.collections, common));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DB: &str = "db";

    fn replica(seed: u8) -> Replica {
        let mut secret = [7u8; 32];
        secret[0] = seed;
        secret[31] = seed;
        let identity = tributary_overlay::Identity::from_secret(&secret, [0; 32]).expect("key");
        let store = std::sync::Arc::new(tributary_store::MemStore::new());
        Replica::open(store, identity, crate::ReplicaConfig::default()).expect("open")
    }

    /// An admin `a` of syncgroup `sg` (version 1, `other` a writer) and the state it holds.
    fn created(other: NodeId) -> (Replica, Spec, SyncgroupState) {
        let mut a = replica(1);
        let spec = Spec {
            name: "sg".into(),
            description: String::new(),
            collections: vec!["notes".into()],
            readers: Vec::new(),
            writers: vec![other],
            admins: vec![a.id()],
        };
        a.create_syncgroup(1000, DB, spec.clone()).expect("create");
        let held = a.load_sg(DB, "sg").expect("load");
        let state = held.and_then(|s| s.state).expect("a state");
        (a, spec, state)
    }

    /// A spec signed by a rightful admin is still held to the spec rules; refused, it is
    /// left out alone: the member entry that came with it merges.
    #[test]
    fn a_signed_spec_that_breaks_the_rules_is_refused_and_the_rest_still_merges() {
        let other = NodeId([9; 20]);
        let (a, good, held) = created(other);
        let newcomer = a
            .sign_member(DB, "sg", other, MemberState::Joined, 5000)
            .expect("entry");
        type Spoil = fn(&mut Spec);
        let cases: [(&str, Spoil, bool); 5] = [
            (
                "a description edited",
                |s| s.description = "v2".into(),
                true,
            ),
            ("no admin", |s| s.admins.clear(), false),
            ("no collection", |s| s.collections.clear(), false),
            (
                "a collection a/b",
                |s| s.collections.push("a/b".into()),
                false,
            ),
            (
                "a description over 4 KiB",
                |s| s.description = "x".repeat(4097),
                false,
            ),
        ];
        for (what, spoil, taken) in cases {
            let mut next = good.clone();
            spoil(&mut next);
            let theirs = SyncgroupState {
                db: DB.into(),
                spec: Some(a.sign_spec(DB, &next, 2).expect("signed")),
                members: vec![newcomer.clone()],
                history: held.spec.iter().cloned().collect(),
            };
            let mut ours = held.clone();
            let (changed, refused) = merge_remote(&mut ours, &theirs).expect(what);
            assert!(changed, "{what}: nothing merged");
            assert_eq!(
                member_state(&ours, &other),
                Some(MemberState::Joined),
                "{what}"
            );
            let version = spec_of(&ours).expect("spec").1;
            if taken {
                assert_eq!((version, refused), (2, None), "{what}");
            } else {
                assert_eq!(version, 1, "{what}: taken");
                assert!(
                    matches!(refused, Some(RefusalReason::Malformed(_))),
                    "{what}: {refused:?}"
                );
            }
        }
    }

    /// A joiner keeps the newest run of the grant's history that verifies, within bounds.
    #[test]
    fn a_joiner_keeps_the_verified_end_of_the_granted_history() {
        let (a, good, _) = created(NodeId([9; 20]));
        let signed: Vec<SyncgroupSpec> = (1..=20)
            .map(|v| a.sign_spec(DB, &good, v).expect("signed"))
            .collect();
        let versions = |kept: &[SyncgroupSpec]| kept.iter().map(|s| s.version).collect::<Vec<_>>();
        let (current, history) = signed.split_last().expect("specs");
        assert_eq!(
            versions(&granted_history(DB, history, current)),
            (4..=19).collect::<Vec<_>>(),
            "the newest 16"
        );
        let mut forged = history.to_vec();
        forged[15].description = "altered after signing".into();
        assert_eq!(
            versions(&granted_history(DB, &forged, current)),
            (17..=19).collect::<Vec<_>>(),
            "kept down to the forgery"
        );
        let mut unordered = history.to_vec();
        unordered.swap(17, 18);
        assert_eq!(versions(&granted_history(DB, &unordered, current)), [18]);
        let mut renamed = history.to_vec();
        let other = Spec {
            name: "other".into(),
            ..good
        };
        renamed[18] = a.sign_spec(DB, &other, 19).expect("signed");
        assert!(granted_history(DB, &renamed, current).is_empty());
    }

    fn spec(version: u64, readers: usize) -> SyncgroupSpec {
        SyncgroupSpec {
            name: "sg".into(),
            readers: vec![vec![7; 20]; readers],
            version,
            ..SyncgroupSpec::default()
        }
    }

    #[test]
    fn the_spec_history_keeps_the_chain_within_its_bounds() {
        let mut state = SyncgroupState {
            spec: Some(spec(1, 0)),
            ..SyncgroupState::default()
        };
        for v in 2..=20 {
            advance_spec(&mut state, spec(v, 0));
        }
        let versions: Vec<u64> = state.history.iter().map(|s| s.version).collect();
        assert_eq!(
            versions,
            (4..=19).collect::<Vec<_>>(),
            "the last 16, oldest first"
        );
        // A fork of the same version is not a link of the chain.
        advance_spec(&mut state, spec(20, 1));
        assert_eq!(state.history.len(), 16);
        assert_eq!(state.history.last().map(|s| s.version), Some(19));
        // Large specs: bounded by bytes in all.
        for v in 21..=30 {
            advance_spec(&mut state, spec(v, 1000));
        }
        let bytes: usize = state.history.iter().map(Message::encoded_len).sum();
        assert!(bytes <= MAX_SPEC_HISTORY_BYTES, "{bytes} bytes of history");
        assert_eq!(
            state.history.len(),
            1,
            "one spec of 1,000 ids fits, two do not"
        );
        assert_eq!(state.history[0].version, 29);
        advance_spec(&mut state, spec(31, 2000));
        advance_spec(&mut state, spec(32, 0));
        assert_eq!(
            state.history.len(),
            0,
            "a spec of 2,000 ids fits in no history"
        );
    }
}
