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
    let existing = if txn.is_new_row(r, row)? {
        None
    } else {
        txn.node(r, row, &record.version)?
    };
    if let Some(node) = existing.as_ref().filter(|n| !n.placeholder) {
        if node.author == record.author.0 && node.generation == record.generation {
            // The very record again: its log entry is the node's own, and must stay.
            return Ok(Added::Duplicate);
        }
        // Another author's record of the same write: it only completes that author's log.
        txn.put_log(r, record, wire);
        prune::mark(txn, r, &record.author, record.generation, None);
        return Ok(Added::Duplicate);
    }
    txn.put_log(r, record, wire);
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
    txn.set_value(
        row,
        record.version,
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

/// Table-driven DAG scenarios in the manner of vsync's `testdata/*.sync` files, our own
/// cases from research §1–§2. Each step is one line:
///
/// - `l V P…`: a local write of version label `V` after parents `P…`;
/// - `r V P…`: a remote record (another author); consecutive `r` lines are one answer,
///   after which conflicts are detected (the rule is defer, so the heads stay to be seen);
/// - `prune`: a pruning pass (the collection is in no syncgroup: all superseded is pruned).
///
/// A label names one write's content: a label seen again is the same write (a duplicate).
#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use tributary_overlay::Identity;
    use tributary_store::MemStore;

    use super::*;
    use crate::record::Draft;
    use crate::resolve::Rule;
    use crate::{Replica, ReplicaConfig};

    struct Case {
        name: &'static str,
        steps: &'static [&'static str],
        heads: &'static [&'static str],
        conflict: bool,
        ancestor: Option<&'static str>,
        held: &'static [&'static str],
        gone: &'static [&'static str],
    }

    const CASES: &[Case] = &[
        Case {
            name: "local chain",
            steps: &["l v1", "l v2 v1"],
            heads: &["v2"],
            conflict: false,
            ancestor: None,
            held: &["v1", "v2"],
            gone: &[],
        },
        Case {
            name: "remote fast-forward",
            steps: &["l v1", "r v2 v1"],
            heads: &["v2"],
            conflict: false,
            ancestor: None,
            held: &[],
            gone: &[],
        },
        Case {
            name: "remote conflict with an ancestor",
            steps: &["l v1", "l v2 v1", "r v3 v1"],
            heads: &["v2", "v3"],
            conflict: true,
            ancestor: Some("v1"),
            held: &[],
            gone: &[],
        },
        Case {
            name: "remote chain conflicting",
            steps: &["l v1", "l v2 v1", "r v3 v1", "r v4 v3", "r v5 v4"],
            heads: &["v2", "v5"],
            conflict: true,
            ancestor: Some("v1"),
            held: &[],
            gone: &[],
        },
        Case {
            name: "two grafts: the later ancestor",
            steps: &["l v1", "l v2 v1", "l v3 v2", "r v4 v1", "r v5 v4 v2"],
            heads: &["v3", "v5"],
            conflict: true,
            ancestor: Some("v2"),
            held: &[],
            gone: &[],
        },
        Case {
            name: "no common ancestor",
            steps: &["l v1", "r v2"],
            heads: &["v1", "v2"],
            conflict: true,
            ancestor: None,
            held: &[],
            gone: &[],
        },
        Case {
            name: "a remote merge resolves",
            steps: &["l v1", "l v2 v1", "r v3 v1", "l v9 v2", "r v4 v9 v3"],
            heads: &["v4"],
            conflict: false,
            ancestor: None,
            held: &[],
            gone: &[],
        },
        Case {
            name: "a child before its parent",
            steps: &["l v1", "r v3 v2", "r v2 v1"],
            heads: &["v3"],
            conflict: false,
            ancestor: None,
            held: &["v2"],
            gone: &[],
        },
        Case {
            name: "a duplicate of a local write",
            steps: &["l v1", "r v1"],
            heads: &["v1"],
            conflict: false,
            ancestor: None,
            held: &["v1"],
            gone: &[],
        },
        Case {
            name: "three heads, then a local write names them all",
            steps: &["l v1", "r v2 v1", "r v3 v1", "l v4 v1", "l v5"],
            heads: &["v5"],
            conflict: false,
            ancestor: None,
            held: &[],
            gone: &[],
        },
        Case {
            name: "pruning keeps the head only",
            steps: &["l v1", "l v2 v1", "l v3 v2", "prune", "r v4 v3"],
            heads: &["v4"],
            conflict: false,
            ancestor: None,
            held: &["v3"],
            gone: &["v1", "v2"],
        },
        Case {
            name: "a deleted head conflicts like any other",
            steps: &["l v1", "l -v2 v1", "r v3 v1"],
            heads: &["v2", "v3"],
            conflict: true,
            ancestor: Some("v1"),
            held: &[],
            gone: &[],
        },
    ];

    struct Table {
        local: Replica,
        remote: Identity,
        versions: BTreeMap<String, (Version, u64)>,
        remote_gen: u64,
        clock: u64,
        row: RowId,
    }

    impl Table {
        fn new() -> Self {
            let key = |b: u8| Identity::from_secret(&[b; 32], [0; 32]).expect("key");
            let mut local =
                Replica::open(Arc::new(MemStore::new()), key(1), ReplicaConfig::default())
                    .expect("open");
            local.set_rule("db", "c", "", Rule::Defer).expect("rule");
            Self {
                local,
                remote: key(2),
                versions: BTreeMap::new(),
                remote_gen: 0,
                clock: 1 << 20,
                row: RowId {
                    db: "db".into(),
                    collection: "c".into(),
                    key: "k".into(),
                },
            }
        }

        fn draft_parts(&mut self, words: &[&str]) -> (String, bool, Vec<Version>) {
            let (label, deleted) = match words[1].strip_prefix('-') {
                Some(l) => (l.to_string(), true),
                None => (words[1].to_string(), false),
            };
            let parents = words[2..]
                .iter()
                .map(|p| self.version_of_label(p))
                .collect();
            (label, deleted, parents)
        }

        /// A label's version: the same content as before, or a new write's.
        fn version_of_label(&mut self, label: &str) -> Version {
            self.versions.get(label).map(|v| v.0).unwrap_or_else(|| {
                // A parent never written here (the remote's own history): a stand-in hash.
                Version(tributary_chunk::bmt::keccak256(label.as_bytes()))
            })
        }

        /// `l V`: a write after all heads; `l V P…`: after the parents named.
        fn local(&mut self, words: &[&str]) {
            let (label, deleted, parents) = self.draft_parts(words);
            self.clock += 1;
            let mut txn = Txn::new(&self.local, "db", false).expect("txn");
            let value = (!deleted).then_some(label.as_bytes());
            let v = if words.len() == 2 {
                txn.local_write(&self.local, &self.row, value, self.clock, None)
            } else {
                txn.write_own(&self.local, &self.row, parents, value, self.clock, None)
            }
            .expect("write");
            txn.commit(&mut self.local).expect("commit");
            self.versions.insert(label, (v, self.clock));
        }

        /// The draft of a remote line; its parents' versions are resolved first (a parent may
        /// be a later line of the same answer).
        fn remote_version(&mut self, lines: &[Vec<&str>], label: &str) -> Version {
            if let Some(v) = self.versions.get(label) {
                return v.0;
            }
            let Some(words) = lines.iter().find(|w| w[1].trim_start_matches('-') == label) else {
                return self.version_of_label(label);
            };
            let parents: Vec<Version> = words[2..]
                .iter()
                .map(|p| self.remote_version(lines, p))
                .collect();
            self.clock += 1;
            let deleted = words[1].starts_with('-');
            let value = if deleted {
                Vec::new()
            } else {
                label.as_bytes().to_vec()
            };
            let draft = Draft {
                row: &self.row,
                parents,
                time: self.clock,
                deleted,
                batch: None,
                value: &value,
            };
            let v = crate::record::version_of(&draft);
            self.versions.insert(label.to_string(), (v, self.clock));
            v
        }

        fn remote(&mut self, lines: &[Vec<&str>]) {
            let mut txn = Txn::new(&self.local, "db", true).expect("txn");
            let mut before = std::collections::HashMap::new();
            before.insert(
                self.row.clone(),
                txn.heads(&self.local, &self.row).expect("heads"),
            );
            for words in lines {
                let label = words[1].trim_start_matches('-');
                self.remote_version(lines, label);
            }
            for words in lines {
                let (label, deleted, parents) = self.draft_parts(words);
                let time = self.versions[&label].1;
                let value = if deleted {
                    Vec::new()
                } else {
                    label.as_bytes().to_vec()
                };
                let draft = Draft {
                    row: &self.row,
                    parents,
                    time,
                    deleted,
                    batch: None,
                    value: &value,
                };
                self.remote_gen += 1;
                let (record, wire) = Record::unsigned(&draft, &self.remote, self.remote_gen);
                let mut wire = [wire];
                crate::record::sign_group(&mut wire, &self.remote).expect("sign");
                let [wire] = wire;
                assert_eq!(
                    record.version, self.versions[&label].0,
                    "a label is one write"
                );
                assert_eq!(Record::verify(&wire).expect("verifies"), record);
                add_record(&mut txn, &self.local, &record, &wire).expect("add");
            }
            crate::resolve::after_sync(&mut txn, &self.local, &before).expect("after sync");
            txn.commit(&mut self.local).expect("commit");
        }

        fn label(&self, v: &Version) -> String {
            self.versions
                .iter()
                .find(|(_, (x, _))| x == v)
                .map_or_else(|| format!("?{v}"), |(l, _)| l.clone())
        }
    }

    fn run(case: &Case) {
        let mut t = Table::new();
        let mut pending: Vec<Vec<&str>> = Vec::new();
        for step in case.steps.iter().chain(std::iter::once(&"end")) {
            let words: Vec<&str> = step.split_whitespace().collect();
            if words[0] != "r" && !pending.is_empty() {
                t.remote(&std::mem::take(&mut pending));
            }
            match words[0] {
                "l" => t.local(&words),
                "r" => pending.push(words),
                "prune" => {
                    t.local.prune("db").expect("prune");
                }
                _ => {}
            }
        }
        let heads = t
            .local
            .visible(
                &t.row,
                &crate::replica::read_heads(&t.local, &t.row).expect("heads"),
            )
            .expect("visible");
        let mut labels: Vec<String> = crate::replica::read_heads(&t.local, &t.row)
            .expect("heads")
            .iter()
            .map(|v| t.label(v))
            .collect();
        labels.sort();
        assert_eq!(labels, case.heads, "{}: heads", case.name);
        let conflicts = t.local.conflicts("db").expect("conflicts");
        assert_eq!(
            !conflicts.is_empty(),
            case.conflict,
            "{}: conflict",
            case.name
        );
        if case.conflict {
            let state = heads.expect("visible row");
            assert_eq!(state.conflict.len() + 1, case.heads.len(), "{}", case.name);
            let txn = Txn::new(&t.local, "db", false).expect("txn");
            let heads = crate::replica::read_heads(&t.local, &t.row).expect("heads");
            let ancestor = common_ancestor(&txn, &t.local, &t.row, &heads).expect("ancestor");
            assert_eq!(
                ancestor.map(|v| t.label(&v)).as_deref(),
                case.ancestor,
                "{}: ancestor",
                case.name
            );
        }
        for label in case.held {
            let v = t.versions[*label].0;
            assert!(
                t.local.has_version(&t.row, &v).expect("has"),
                "{}: {label} held",
                case.name
            );
        }
        for label in case.gone {
            let v = t.versions[*label].0;
            assert!(
                !t.local.has_version(&t.row, &v).expect("has"),
                "{}: {label} pruned",
                case.name
            );
        }
    }

    #[test]
    fn dag_scenarios() {
        for case in CASES {
            run(case);
        }
    }
}
