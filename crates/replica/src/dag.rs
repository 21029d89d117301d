//! The version DAG of each row: adding a record (new node, duplicate, or a placeholder filled
//! in), moving the heads, and finding the common ancestor of conflicting heads.
//!
//! A record's parents leave the heads; the record joins them unless some known node already
//! names it as a parent (it arrived after a child, because the sender had pruned it or sent
//! out of order). Two or more heads after an answer is applied are a conflict, handled by
//! [`crate::resolve`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use tributary_wire::replica::LogRecord;

use crate::keys::DagNode;
use crate::record::{Record, RowId};
use crate::replica::{Replica, Txn};
use crate::types::Version;
use crate::{NodeId, ReplicaError, prune};

/// What adding a record did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Added {
    /// A new version.
    New,
    /// A version already known (another member wrote the same, or a repeat).
    Duplicate,
}

/// Adds a verified record to the log and the DAG of its row.
pub(crate) fn add_record(
    txn: &mut Txn,
    r: &Replica,
    record: &Record,
    wire: &LogRecord,
) -> Result<Added, ReplicaError> {
    let row = &record.row;
    let existing = txn.node(r, row, &record.version)?;
    txn.put_log(r, record, wire);
    if existing.as_ref().is_some_and(|n| !n.placeholder) {
        // Its log record only completes the author's log; the node has another record.
        prune::mark(txn, r, &record.author, record.generation, None);
        return Ok(Added::Duplicate);
    }
    let node = DagNode {
        parents: record.parents.iter().map(|p| p.0.to_vec()).collect(),
        time: record.time,
        deleted: record.deleted,
        author: record.author.0.to_vec(),
        generation: record.generation,
        placeholder: false,
        batch_id: record.batch.map_or(0, |b| b.id),
    };
    txn.set_node(r, row, record.version, node);
    txn.values.insert(
        (row.clone(), record.version),
        (!record.deleted).then(|| record.value.clone()),
    );
    let mut heads = txn.heads(r, row)?;
    for parent in &record.parents {
        match txn.node(r, row, parent)? {
            None => txn.set_node(r, row, *parent, placeholder()),
            Some(p) if heads.contains(parent) && !p.placeholder => {
                let author =
                    NodeId::from_wire(&p.author).map_err(|_| ReplicaError::Corrupt("node"))?;
                prune::mark(txn, r, &author, p.generation, Some((row, parent)));
            }
            Some(_) => {}
        }
    }
    heads.retain(|h| !record.parents.contains(h));
    if existing.is_some() {
        // A placeholder: a known node follows it, so it is history, not a head.
        prune::mark(
            txn,
            r,
            &record.author,
            record.generation,
            Some((row, &record.version)),
        );
    } else if !heads.contains(&record.version) {
        heads.push(record.version);
        heads.sort();
    }
    txn.set_heads(r, row, heads);
    Ok(Added::New)
}

fn placeholder() -> DagNode {
    DagNode {
        placeholder: true,
        ..DagNode::default()
    }
}

/// Most nodes visited looking for a common ancestor: past this the conflict is reported
/// without one (an app resolver then sees no ancestor value).
const MAX_ANCESTOR_WALK: usize = 10_000;

/// The common ancestor of `heads` with the latest time (ties: the larger version), among
/// the nodes still held.
pub(crate) fn common_ancestor(
    txn: &Txn,
    r: &Replica,
    row: &RowId,
    heads: &[Version],
) -> Result<Option<Version>, ReplicaError> {
    let mut reach: BTreeMap<Version, (usize, u64)> = BTreeMap::new();
    for (i, head) in heads.iter().enumerate() {
        let mut seen = BTreeSet::new();
        let mut queue = VecDeque::from([*head]);
        while let Some(v) = queue.pop_front() {
            if seen.len() >= MAX_ANCESTOR_WALK || !seen.insert(v) {
                continue;
            }
            let Some(node) = txn.node(r, row, &v)? else {
                continue;
            };
            if node.placeholder {
                continue;
            }
            let entry = reach.entry(v).or_insert((0, node.time));
            if entry.0 == i {
                entry.0 += 1;
            }
            for p in &node.parents {
                queue.push_back(Version::from_wire(p).map_err(|_| ReplicaError::Corrupt("node"))?);
            }
        }
    }
    Ok(reach
        .into_iter()
        .filter(|(v, (n, _))| *n == heads.len() && !heads.contains(v))
        .max_by_key(|(v, (_, time))| (*time, *v))
        .map(|(v, _)| v))
}
