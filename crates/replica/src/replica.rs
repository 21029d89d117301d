//! The engine over one store: local writes, reads, and the transaction every change goes
//! through ([`Txn`]), which reads its own writes and commits as one store batch.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use prost::Message;
use tributary_overlay::Identity;
use tributary_store::{KvStore, WriteBatch};
use tributary_wire::replica::LogRecord;

use crate::keys::{
    self, CLOCK_KEY, DagNode, Heads, Spaces, dag_key, decode, log_key, meta_key, row_key,
};
use crate::record::{BatchRef, Draft, Record, RowId};
use crate::types::{Hlc, MAX_BATCH_BYTES, MAX_BATCH_ROWS, NodeId, Version, check_name, check_row};
use crate::{ReplicaError, syncgroup};

/// Bytes a record takes on the wire beside its names and value: version, two parents,
/// author, signature, numbers and field tags (about 290), rounded up.
const RECORD_OVERHEAD: usize = 320;

/// Settings of a replica.
#[derive(Clone, Debug)]
pub struct ReplicaConfig {
    /// Prune what every member knows after each applied answer.
    pub prune: bool,
    /// A frame closes at the first batch boundary after this many bytes.
    pub frame_bytes: usize,
    /// Watch entries kept per database; older markers must rescan.
    pub watch_keep: u64,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        Self {
            prune: true,
            frame_bytes: 256 * 1024,
            watch_keep: 100_000,
        }
    }
}

/// One operation of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Set a row.
    Put {
        /// The collection.
        collection: String,
        /// The key.
        key: String,
        /// The value.
        value: Vec<u8>,
    },
    /// Delete a row.
    Delete {
        /// The collection.
        collection: String,
        /// The key.
        key: String,
    },
}

impl Op {
    fn parts(&self) -> (&str, &str, Option<&[u8]>) {
        match self {
            Self::Put {
                collection,
                key,
                value,
            } => (collection, key, Some(value)),
            Self::Delete { collection, key } => (collection, key, None),
        }
    }
}

/// Which page of a scan ([`Replica::scan_page`]).
#[derive(Clone, Copy, Debug)]
pub struct Page<'a> {
    /// The last key of the page before (`None`: the first page).
    pub after: Option<&'a str>,
    /// Rows at most.
    pub rows: usize,
    /// Value bytes after which the page ends.
    pub bytes: usize,
}

/// What a read sees of a row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowState {
    /// The visible value (the last writer's among conflicting heads); `None` if deleted.
    pub value: Option<Vec<u8>>,
    /// The visible version.
    pub version: Version,
    /// The values of the other heads while an `app` or `defer` conflict is unresolved
    /// (`None`: a delete). Under last-writer-wins the winner is all a reader sees.
    pub conflict: Vec<Option<Vec<u8>>>,
}

/// A replicated-database engine over one store, writing as one node identity.
pub struct Replica {
    pub(crate) store: Arc<dyn KvStore>,
    pub(crate) ks: Spaces,
    pub(crate) identity: Identity,
    pub(crate) id: NodeId,
    pub(crate) clock: Hlc,
    pub(crate) config: ReplicaConfig,
    /// Per responder, how far the knowledge of the answer being applied may be believed
    /// (refusals in one frame bind the answer's later frames too); `None`: not at all.
    pub(crate) answer_caps: BTreeMap<NodeId, Option<crate::syncgroup::Knowledge>>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Replica {
    /// Opens the replica state in `store`, writing as `identity`.
    ///
    /// # Errors
    /// When the store fails or holds a corrupt clock.
    pub fn open(
        store: Arc<dyn KvStore>,
        identity: Identity,
        config: ReplicaConfig,
    ) -> Result<Self, ReplicaError> {
        let ks = Spaces::open(store.as_ref())?;
        let clock = match store.get(ks.meta, CLOCK_KEY)? {
            Some(b) => Hlc(u64::from_be_bytes(
                b.as_slice()
                    .try_into()
                    .map_err(|_| ReplicaError::Corrupt("clock"))?,
            )),
            None => Hlc::default(),
        };
        Ok(Self {
            store,
            ks,
            id: NodeId(identity.eth_address()),
            identity,
            clock,
            config,
            answer_caps: BTreeMap::new(),
        })
    }

    /// This node's id (its ACL name and log author).
    #[must_use]
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The settings.
    #[must_use]
    pub fn config(&self) -> &ReplicaConfig {
        &self.config
    }

    /// Sets `collection/key` of `db` to `value`.
    ///
    /// # Errors
    /// Bad names or sizes, no write access, a pending join, or a store failure.
    pub fn put(
        &mut self,
        now_ms: u64,
        db: &str,
        collection: &str,
        key: &str,
        value: &[u8],
    ) -> Result<Version, ReplicaError> {
        let op = Op::Put {
            collection: collection.into(),
            key: key.into(),
            value: value.to_vec(),
        };
        one_version(&self.batch(now_ms, db, &[op])?)
    }

    /// Deletes `collection/key` of `db` (a tombstone version, so the delete syncs).
    ///
    /// # Errors
    /// As [`Replica::put`].
    pub fn delete(
        &mut self,
        now_ms: u64,
        db: &str,
        collection: &str,
        key: &str,
    ) -> Result<Version, ReplicaError> {
        let op = Op::Delete {
            collection: collection.into(),
            key: key.into(),
        };
        one_version(&self.batch(now_ms, db, &[op])?)
    }

    /// Applies `ops` atomically, locally and on every member: one commit time, one batch id.
    /// A row written twice in one batch keeps the last write.
    ///
    /// # Errors
    /// As [`Replica::put`], or [`ReplicaError::BadBatch`]; nothing is written then.
    pub fn batch(
        &mut self,
        now_ms: u64,
        db: &str,
        ops: &[Op],
    ) -> Result<Vec<Version>, ReplicaError> {
        check_name("database", db)?;
        let record_bytes = |op: &Op| {
            let (c, k, v) = op.parts();
            db.len() + c.len() + k.len() + v.map_or(0, <[u8]>::len) + RECORD_OVERHEAD
        };
        let bytes: usize = ops.iter().map(record_bytes).sum();
        if ops.is_empty() || ops.len() > MAX_BATCH_ROWS || bytes > MAX_BATCH_BYTES {
            return Err(ReplicaError::BadBatch {
                rows: ops.len(),
                bytes,
            });
        }
        let joined = self.joined(db)?;
        let mut last: BTreeMap<RowId, Option<&[u8]>> = BTreeMap::new();
        for op in ops {
            let (collection, key, value) = op.parts();
            crate::types::check_new_collection(collection)?;
            check_row(key, value.unwrap_or_default())?;
            syncgroup::check_local_write(self, &joined, collection)?;
            let row = RowId {
                db: db.into(),
                collection: collection.into(),
                key: key.into(),
            };
            last.insert(row, value);
        }
        let time = self.clock.tick(now_ms).0;
        let mut txn = Txn::new(self, db, false)?;
        let batch_id = if last.len() > 1 {
            // Unique per author: its first generation in the batch, with the high bit set so
            // that it is never 0.
            Some((txn.generation + 1) | 1 << 63)
        } else {
            None
        };
        // Records per collection: a row with more than two heads (concurrent writes not yet
        // merged) takes a chain of records, two parents each.
        let mut per_collection: BTreeMap<&str, u32> = BTreeMap::new();
        let mut encoded = 0;
        for (row, value) in &last {
            let heads = txn.heads(self, row)?.len();
            let records = heads.saturating_sub(1).max(1);
            encoded += records
                * (db.len()
                    + row.collection.len()
                    + row.key.len()
                    + value.map_or(0, <[u8]>::len)
                    + RECORD_OVERHEAD);
            let records = u32::try_from(records).unwrap_or(u32::MAX);
            *per_collection.entry(row.collection.as_str()).or_default() += records;
        }
        // The batch travels in one frame: its records, chains included, must fit.
        if encoded > MAX_BATCH_BYTES {
            return Err(ReplicaError::BadBatch {
                rows: ops.len(),
                bytes: encoded,
            });
        }
        let mut versions = Vec::with_capacity(ops.len());
        for (row, value) in &last {
            let batch = batch_id.map(|id| BatchRef {
                id,
                count: per_collection[row.collection.as_str()],
            });
            versions.push(txn.local_write(self, row, *value, time, batch)?);
        }
        txn.commit(self)?;
        // One version per op, in order (a row written twice reports its surviving version).
        let by_row: BTreeMap<&RowId, Version> = last.keys().zip(versions.iter().copied()).collect();
        Ok(ops
            .iter()
            .filter_map(|op| {
                let (collection, key, _) = op.parts();
                // Every op's row is a key of `last`.
                by_row.get(&row_of(db, collection, key)).copied()
            })
            .collect())
    }

    /// Reads a row; `None` if it was never written or the deletion is its only head.
    ///
    /// # Errors
    /// Bad names or a store failure.
    pub fn get(
        &self,
        db: &str,
        collection: &str,
        key: &str,
    ) -> Result<Option<RowState>, ReplicaError> {
        check_name("database", db)?;
        check_name("collection", collection)?;
        check_row(key, &[])?;
        let row = RowId {
            db: db.into(),
            collection: collection.into(),
            key: key.into(),
        };
        let heads = read_heads(self, &row)?;
        self.visible(&row, &heads)
    }

    /// The rows of `collection` whose keys start with `prefix`, in key order (deleted rows
    /// left out unless in conflict).
    ///
    /// # Errors
    /// Bad names or a store failure.
    pub fn scan(
        &self,
        db: &str,
        collection: &str,
        prefix: &str,
    ) -> Result<Vec<(String, RowState)>, ReplicaError> {
        let page = Page {
            after: None,
            rows: usize::MAX,
            bytes: usize::MAX,
        };
        Ok(self.scan_page(db, collection, prefix, &page)?.0)
    }

    /// A page of [`Replica::scan`]: the rows after `page.after` (from the first if `None`),
    /// at most `page.rows` of them, and no more once their values (conflicting heads' values
    /// included) reach `page.bytes` (a page holds at least one row); and whether rows follow.
    ///
    /// # Errors
    /// Bad names or a store failure.
    pub fn scan_page(
        &self,
        db: &str,
        collection: &str,
        prefix: &str,
        page: &Page<'_>,
    ) -> Result<(Vec<(String, RowState)>, bool), ReplicaError> {
        check_name("database", db)?;
        check_name("collection", collection)?;
        let row = |key: &str| {
            row_key(&RowId {
                db: db.into(),
                collection: collection.into(),
                key: key.into(),
            })
        };
        let start = row(prefix);
        let after = page.after.map(row).filter(|a| *a >= start);
        let from = after.clone().unwrap_or_else(|| start.clone());
        let (mut out, mut bytes) = (Vec::new(), 0usize);
        for item in self.store.scan_from(self.ks.heads, &from) {
            let (k, v) = item?;
            if !k.starts_with(&start) {
                break;
            }
            if after.as_ref() == Some(&k) {
                continue;
            }
            if out.len() >= page.rows || (bytes >= page.bytes && !out.is_empty()) {
                return Ok((out, true));
            }
            let row = keys::parse_row_key(&k).ok_or(ReplicaError::Corrupt("row key"))?;
            let heads = versions_of(&decode::<Heads>("heads", &v)?)?;
            if let Some(state) = self.visible(&row, &heads)? {
                let conflicts = state.conflict.iter().flatten().map(Vec::len);
                let size = state.value.as_ref().map_or(0, Vec::len) + conflicts.sum::<usize>();
                bytes = bytes.saturating_add(size);
                out.push((row.key, state));
            }
        }
        Ok((out, false))
    }

    /// What a reader sees of a row with these heads.
    pub(crate) fn visible(
        &self,
        row: &RowId,
        heads: &[Version],
    ) -> Result<Option<RowState>, ReplicaError> {
        visible(self, None, row, heads)
    }

    /// Whether this node holds `version` of a row (not counting pruned or placeholder nodes).
    ///
    /// # Errors
    /// A store failure.
    pub fn has_version(&self, row: &RowId, version: &Version) -> Result<bool, ReplicaError> {
        Ok(read_node(self, row, version)?.is_some_and(|n| !n.placeholder))
    }

    /// This node's last generation in `db`.
    pub(crate) fn own_gen(&self, db: &str) -> Result<u64, ReplicaError> {
        read_u64(self, &meta_key(db, "generation", &[]))
    }
}

/// What a reader sees of a row with these heads, reading the nodes and values a transaction
/// has added before the store's.
pub(crate) fn visible(
    r: &Replica,
    txn: Option<&Txn>,
    row: &RowId,
    heads: &[Version],
) -> Result<Option<RowState>, ReplicaError> {
    let mut nodes = Vec::with_capacity(heads.len());
    for v in heads {
        let node = match txn {
            Some(t) => t.node(r, row, v)?,
            None => read_node(r, row, v)?,
        }
        .ok_or(ReplicaError::Corrupt("head node"))?;
        nodes.push((node.time, *v, node));
    }
    nodes.sort_by_key(|n| std::cmp::Reverse((n.0, n.1)));
    let Some((_, version, winner)) = nodes.first() else {
        return Ok(None);
    };
    if winner.deleted && (nodes.len() == 1 || r.rule_for(row)? == crate::resolve::Rule::Lww) {
        return Ok(None);
    }
    let value_of = |v: &Version, node: &DagNode| match txn.and_then(|t| t.value(row, v)) {
        Some(value) => Ok(value.clone()),
        None => node_value(r, row, node),
    };
    let mut conflict = Vec::new();
    if nodes.len() > 1 && r.rule_for(row)? != crate::resolve::Rule::Lww {
        for (_, v, node) in &nodes[1..] {
            conflict.push(value_of(v, node)?);
        }
    }
    Ok(Some(RowState {
        value: value_of(version, winner)?,
        version: *version,
        conflict,
    }))
}

/// The value a DAG node wrote (`None` for a delete), from its log record.
pub(crate) fn node_value(
    r: &Replica,
    row: &RowId,
    node: &DagNode,
) -> Result<Option<Vec<u8>>, ReplicaError> {
    if node.deleted {
        return Ok(None);
    }
    let author = NodeId::from_wire(&node.author).map_err(|_| ReplicaError::Corrupt("node"))?;
    let bytes = r
        .store
        .get(r.ks.log, &log_key(&row.db, &author, node.generation))?
        .ok_or(ReplicaError::Corrupt("log record of a head"))?;
    Ok(Some(decode::<LogRecord>("log record", &bytes)?.value))
}

fn one_version(versions: &[Version]) -> Result<Version, ReplicaError> {
    versions
        .first()
        .copied()
        .ok_or(ReplicaError::Corrupt("batch result"))
}

/// The row `db/collection/key`.
pub(crate) fn row_of(db: &str, collection: &str, key: &str) -> RowId {
    RowId {
        db: db.into(),
        collection: collection.into(),
        key: key.into(),
    }
}

/// This node's id and last generation in `db`.
pub(crate) fn own_id_gen(r: &Replica, db: &str) -> Result<(NodeId, u64), ReplicaError> {
    Ok((r.id, r.own_gen(db)?))
}

pub(crate) fn read_u64(r: &Replica, key: &[u8]) -> Result<u64, ReplicaError> {
    match r.store.get(r.ks.meta, key)? {
        Some(b) => Ok(u64::from_be_bytes(
            b.as_slice()
                .try_into()
                .map_err(|_| ReplicaError::Corrupt("counter"))?,
        )),
        None => Ok(0),
    }
}

pub(crate) fn versions_of(heads: &Heads) -> Result<Vec<Version>, ReplicaError> {
    heads
        .versions
        .iter()
        .map(|v| Version::from_wire(v).map_err(|_| ReplicaError::Corrupt("heads")))
        .collect()
}

pub(crate) fn read_heads(r: &Replica, row: &RowId) -> Result<Vec<Version>, ReplicaError> {
    match r.store.get(r.ks.heads, &row_key(row))? {
        Some(b) => versions_of(&decode::<Heads>("heads", &b)?),
        None => Ok(Vec::new()),
    }
}

pub(crate) fn read_node(
    r: &Replica,
    row: &RowId,
    v: &Version,
) -> Result<Option<DagNode>, ReplicaError> {
    r.store
        .get(r.ks.dag, &dag_key(row, v))?
        .map(|b| decode::<DagNode>("dag node", &b))
        .transpose()
}

/// What a transaction knows of one row: its heads (as read from the store once, or as it
/// set them) and the DAG nodes and values it added. A row has a handful of versions in one
/// change, so they are kept in small vectors.
#[derive(Default)]
struct RowCache {
    heads: Option<Vec<Version>>,
    changed: bool,
    nodes: Vec<(Version, DagNode)>,
    values: Vec<(Version, Option<Vec<u8>>)>,
}

/// One atomic change of one database: the store batch being built, and the heads, nodes and
/// generation it has changed so far (read back by later steps of the same change).
///
/// Rows are looked up by hash (a frame of 5,000 records touches 5,000 rows, and ordered maps
/// keyed by three strings spent most of an apply comparing them); where order matters (watch
/// entries, conflict handling) the changed rows are taken sorted, as before.
pub(crate) struct Txn {
    pub db: String,
    pub batch: WriteBatch,
    rows: HashMap<RowId, RowCache>,
    changed: Vec<RowId>,
    pub generation: u64,
    pub from_sync: bool,
    pub max_time: u64,
    /// This node's new records, unsigned until the commit.
    pub own: Vec<LogRecord>,
}

impl Txn {
    pub(crate) fn new(r: &Replica, db: &str, from_sync: bool) -> Result<Self, ReplicaError> {
        Ok(Self {
            db: db.into(),
            batch: WriteBatch::default(),
            rows: HashMap::new(),
            changed: Vec::new(),
            generation: r.own_gen(db)?,
            from_sync,
            max_time: r.clock.0,
            own: Vec::new(),
        })
    }

    /// The row's heads, read from the store the first time and kept.
    pub(crate) fn heads(&mut self, r: &Replica, row: &RowId) -> Result<Vec<Version>, ReplicaError> {
        if let Some(heads) = self.rows.get(row).and_then(|c| c.heads.as_ref()) {
            return Ok(heads.clone());
        }
        let heads = read_heads(r, row)?;
        self.rows.entry(row.clone()).or_default().heads = Some(heads.clone());
        Ok(heads)
    }

    /// Whether the row has no heads, stored or set (and so no DAG node at all: heads are
    /// never deleted, and every node is added with a head).
    pub(crate) fn is_new_row(&mut self, r: &Replica, row: &RowId) -> Result<bool, ReplicaError> {
        Ok(self.heads(r, row)?.is_empty() && self.rows.get(row).is_none_or(|c| c.nodes.is_empty()))
    }

    pub(crate) fn node(
        &self,
        r: &Replica,
        row: &RowId,
        v: &Version,
    ) -> Result<Option<DagNode>, ReplicaError> {
        let held = self
            .rows
            .get(row)
            .and_then(|c| c.nodes.iter().rev().find(|(nv, _)| nv == v));
        match held {
            Some((_, n)) => Ok(Some(n.clone())),
            None => read_node(r, row, v),
        }
    }

    /// The value this change gave version `v` of `row`, if it added that version.
    pub(crate) fn value(&self, row: &RowId, v: &Version) -> Option<&Option<Vec<u8>>> {
        let cache = self.rows.get(row)?;
        cache
            .values
            .iter()
            .rev()
            .find(|(nv, _)| nv == v)
            .map(|(_, value)| value)
    }

    pub(crate) fn set_value(&mut self, row: &RowId, v: Version, value: Option<Vec<u8>>) {
        self.cache(row).values.push((v, value));
    }

    /// The rows this change set heads of, in row order.
    pub(crate) fn changed_rows(&self) -> Vec<RowId> {
        let mut rows = self.changed.clone();
        rows.sort();
        rows
    }

    pub(crate) fn has_changes(&self) -> bool {
        !self.changed.is_empty()
    }

    fn cache(&mut self, row: &RowId) -> &mut RowCache {
        if !self.rows.contains_key(row) {
            self.rows.insert(row.clone(), RowCache::default());
        }
        // Inserted just above if it was missing.
        self.rows.get_mut(row).expect("the row's cache exists")
    }

    pub(crate) fn set_heads(&mut self, r: &Replica, row: &RowId, heads: Vec<Version>) {
        let stored = Heads {
            versions: heads.iter().map(|v| v.0.to_vec()).collect(),
        };
        self.batch
            .put(r.ks.heads, &row_key(row), &stored.encode_to_vec());
        let cache = self.cache(row);
        cache.heads = Some(heads);
        if !cache.changed {
            cache.changed = true;
            self.changed.push(row.clone());
        }
    }

    pub(crate) fn set_node(&mut self, r: &Replica, row: &RowId, v: Version, node: DagNode) {
        self.batch
            .put(r.ks.dag, &dag_key(row, &v), &node.encode_to_vec());
        let nodes = &mut self.cache(row).nodes;
        nodes.retain(|(nv, _)| *nv != v);
        nodes.push((v, node));
    }

    /// A local write of `row` (`None`: delete) following all its heads: one record, or a
    /// chain of records two parents at a time if a deferred conflict left more than two.
    pub(crate) fn local_write(
        &mut self,
        r: &Replica,
        row: &RowId,
        value: Option<&[u8]>,
        time: u64,
        batch: Option<BatchRef>,
    ) -> Result<Version, ReplicaError> {
        let heads = self.heads(r, row)?;
        let conflicted = heads.len() > 1;
        let mut parents: Vec<Version> = heads.iter().take(2).copied().collect();
        let mut rest = heads.iter().skip(2).copied();
        loop {
            let version = self.write_own(r, row, parents, value, time, batch)?;
            match rest.next() {
                Some(next) => parents = vec![version, next],
                None => {
                    // A conflict is only ever recorded on a row with two heads or more.
                    if conflicted {
                        crate::resolve::clear_conflict(self, r, row);
                    }
                    return Ok(version);
                }
            }
        }
    }

    /// Signs and adds one record of this node.
    pub(crate) fn write_own(
        &mut self,
        r: &Replica,
        row: &RowId,
        parents: Vec<Version>,
        value: Option<&[u8]>,
        time: u64,
        batch: Option<BatchRef>,
    ) -> Result<Version, ReplicaError> {
        let draft = Draft {
            row,
            parents,
            time,
            deleted: value.is_none(),
            batch,
            value: value.unwrap_or_default(),
        };
        self.generation += 1;
        let (record, wire) = Record::unsigned(&draft, &r.identity, self.generation);
        self.max_time = self.max_time.max(time);
        crate::dag::add_record(self, r, &record, &wire)?;
        Ok(record.version)
    }

    pub(crate) fn put_log(&mut self, r: &Replica, record: &Record, wire: &LogRecord) {
        if !self.from_sync && record.author == r.id {
            // This node's new record: signed with its group at the commit.
            self.own.push(wire.clone());
            return;
        }
        let key = log_key(&self.db, &record.author, record.generation);
        self.batch.put(r.ks.log, &key, &wire.encode_to_vec());
    }

    /// Signs this node's new records, one signature per group (a batch's records in one
    /// collection; a record outside a batch alone), and puts them in the log.
    fn sign_own(&mut self, r: &Replica) -> Result<(), ReplicaError> {
        let mut groups: BTreeMap<(u64, String, u64), Vec<LogRecord>> = BTreeMap::new();
        for wire in std::mem::take(&mut self.own) {
            let key = if wire.batch_id == 0 {
                (0, String::new(), wire.generation)
            } else {
                (wire.batch_id, wire.collection.clone(), 0)
            };
            groups.entry(key).or_default().push(wire);
        }
        for mut group in groups.into_values() {
            group.sort_by_key(|w| w.generation);
            crate::record::sign_group(&mut group, &r.identity)?;
            for wire in &group {
                let key = log_key(&self.db, &r.id, wire.generation);
                self.batch.put(r.ks.log, &key, &wire.encode_to_vec());
            }
        }
        Ok(())
    }

    /// Commits: the watch entries of the rows changed, the generation, the clock, then one
    /// store write.
    pub(crate) fn commit(mut self, r: &mut Replica) -> Result<(), ReplicaError> {
        self.sign_own(r)?;
        crate::watch::record_changes(&mut self, r)?;
        self.batch.put(
            r.ks.meta,
            &meta_key(&self.db, "generation", &[]),
            &self.generation.to_be_bytes(),
        );
        let clock = r.clock.observe(self.max_time);
        self.batch.put(r.ks.meta, CLOCK_KEY, &clock.0.to_be_bytes());
        r.store.write(self.batch)?;
        r.clock = clock;
        Ok(())
    }
}
