//! Conflict resolution: rules per (collection, key prefix), the longest prefix winning, and
//! what each rule does with a row that has more than one head after a sync.
//!
//! - **Last writer wins** (the default): the head with the latest time wins, ties going to
//!   the larger version. It is resolved where it is read, and nothing is written: the
//!   winner is a function of the heads, members that hold the same versions read the same
//!   value, and the next write of the row names every head as its parent, merging them in
//!   the DAG. Two earlier designs wrote the resolution as a record, and both failed in the
//!   50-node simulation: a merge version per resolver conflicted again with the other
//!   resolvers' merges (17,000 conflicts and climbing after writes stopped), and a link
//!   record per resolver (Syncbase's `LinkRec`) converged but cost every member's links
//!   delivered to every member, 25 redundant records per new one.
//! - **App resolves**: the conflict waits in [`Replica::conflicts`], grouped into closures of
//!   rows whose heads share batches (Syncbase's `cr_closure`), until the app answers with
//!   [`Replica::resolve`]; the answers are one batch whose writes name both heads.
//! - **Defer**: both heads stay and are readable ([`crate::RowState::conflict`]) until a
//!   later write, which names them all as parents.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use prost::Message;

use crate::ReplicaError;
use crate::dag::common_ancestor;
use crate::keys::{StoredConflict, StoredRule, StoredRules, decode, meta_key};
use crate::record::RowId;
use crate::replica::{Op, Replica, Txn, row_of, visible};
use crate::types::{Version, check_name};

/// A resolution rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// Last writer wins.
    Lww,
    /// The app resolves.
    App,
    /// Keep both heads until a write names them.
    Defer,
}

impl Rule {
    fn code(self) -> u32 {
        match self {
            Self::Lww => 0,
            Self::App => 1,
            Self::Defer => 2,
        }
    }

    fn from_code(code: u32) -> Self {
        match code {
            1 => Self::App,
            2 => Self::Defer,
            _ => Self::Lww,
        }
    }

    /// The rule's name on the command line.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Lww => "lww",
            Self::App => "app",
            Self::Defer => "defer",
        }
    }
}

impl std::str::FromStr for Rule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "lww" => Ok(Self::Lww),
            "app" => Ok(Self::App),
            "defer" => Ok(Self::Defer),
            other => Err(format!("unknown rule {other:?}: use lww, app or defer")),
        }
    }
}

/// How the app answers a conflict on one row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Choice {
    /// Keep this node's head before the sync.
    Local,
    /// Take the head that arrived (the last writer's, if several did).
    Remote,
    /// Write this value (`None`: delete).
    Value(Option<Vec<u8>>),
}

/// One row in conflict, as shown to a resolver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// The row.
    pub row: RowId,
    /// The rule that holds it (app or defer).
    pub rule: Rule,
    /// The values of this node's heads before the sync (`None`: deleted).
    pub local: Vec<Option<Vec<u8>>>,
    /// The values of the heads that arrived.
    pub remote: Vec<Option<Vec<u8>>>,
    /// The common ancestor's value, if one is still held.
    pub ancestor: Option<Option<Vec<u8>>>,
}

/// Most rules per database.
pub const MAX_RULES: usize = 256;

fn rules_key(db: &str) -> Vec<u8> {
    meta_key(db, "rules", &[])
}

fn conflict_key(row: &RowId) -> Vec<u8> {
    meta_key(
        &row.db,
        "conflict",
        &[row.collection.as_bytes(), row.key.as_bytes()],
    )
}

impl Replica {
    /// Sets the rule for keys of `collection` starting with `prefix` in `db` (replacing one
    /// for the same prefix). Rules are local, as Syncbase's schema is: give every member the
    /// same rules, or members resolve differently.
    ///
    /// # Errors
    /// Bad names or a store failure.
    pub fn set_rule(
        &mut self,
        db: &str,
        collection: &str,
        prefix: &str,
        rule: Rule,
    ) -> Result<(), ReplicaError> {
        check_name("database", db)?;
        check_name("collection", collection)?;
        if prefix.len() > crate::types::MAX_KEY_LEN {
            return Err(ReplicaError::BadKey { len: prefix.len() });
        }
        let mut rules = self.stored_rules(db)?;
        rules
            .rules
            .retain(|r| !(r.collection == collection && r.prefix == prefix));
        if rules.rules.len() >= MAX_RULES {
            return Err(ReplicaError::TooManyRules(MAX_RULES));
        }
        rules.rules.push(StoredRule {
            collection: collection.into(),
            prefix: prefix.into(),
            kind: rule.code(),
        });
        let mut batch = tributary_store::WriteBatch::default();
        batch.put(self.ks.meta, &rules_key(db), &rules.encode_to_vec());
        Ok(self.store.write(batch)?)
    }

    /// The rules of `db` as (collection, prefix, rule).
    ///
    /// # Errors
    /// A store failure.
    pub fn rules(&self, db: &str) -> Result<Vec<(String, String, Rule)>, ReplicaError> {
        Ok(self
            .stored_rules(db)?
            .rules
            .into_iter()
            .map(|r| (r.collection, r.prefix, Rule::from_code(r.kind)))
            .collect())
    }

    fn stored_rules(&self, db: &str) -> Result<StoredRules, ReplicaError> {
        match self.store.get(self.ks.meta, &rules_key(db))? {
            Some(b) => decode("rules", &b),
            None => Ok(StoredRules::default()),
        }
    }

    /// The rule for `row`: the longest matching prefix of its collection's rules.
    pub(crate) fn rule_for(&self, row: &RowId) -> Result<Rule, ReplicaError> {
        Ok(self
            .stored_rules(&row.db)?
            .rules
            .iter()
            .filter(|r| r.collection == row.collection && row.key.starts_with(&r.prefix))
            .max_by_key(|r| r.prefix.len())
            .map_or(Rule::Lww, |r| Rule::from_code(r.kind)))
    }

    /// The unresolved conflicts of `db`, grouped into closures: rows whose heads share a
    /// batch are one group, to be resolved together.
    ///
    /// # Errors
    /// A store failure.
    pub fn conflicts(&self, db: &str) -> Result<Vec<Vec<Conflict>>, ReplicaError> {
        check_name("database", db)?;
        let prefix = meta_key(db, "conflict", &[]);
        let mut found = Vec::new();
        for item in self.store.scan_from(self.ks.meta, &prefix) {
            let (k, v) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            let rest = k
                .get(prefix.len() + 1..)
                .ok_or(ReplicaError::Corrupt("conflict key"))?;
            let (collection, key) =
                split_once(rest).ok_or(ReplicaError::Corrupt("conflict key"))?;
            let row = row_of(db, collection, key);
            found.push((row, decode::<StoredConflict>("conflict", &v)?));
        }
        let groups = closures(&found);
        let mut out = Vec::new();
        for group in groups {
            let mut rows = Vec::new();
            for i in group {
                let (row, c) = &found[i];
                rows.push(self.describe(row, c)?);
            }
            out.push(rows);
        }
        Ok(out)
    }

    fn describe(&self, row: &RowId, c: &StoredConflict) -> Result<Conflict, ReplicaError> {
        let values = |vs: &[Vec<u8>]| -> Result<Vec<Option<Vec<u8>>>, ReplicaError> {
            vs.iter()
                .map(|v| self.value_of_version(row, &Version::from_wire(v)?))
                .map(|r| r.map(Option::flatten))
                .collect()
        };
        let ancestor = if c.ancestor.is_empty() {
            None
        } else {
            self.value_of_version(row, &Version::from_wire(&c.ancestor)?)?
        };
        Ok(Conflict {
            row: row.clone(),
            rule: Rule::from_code(c.rule),
            local: values(&c.local)?,
            remote: values(&c.remote)?,
            ancestor,
        })
    }

    /// The value of one version if its node and record are still held.
    fn value_of_version(
        &self,
        row: &RowId,
        v: &Version,
    ) -> Result<Option<Option<Vec<u8>>>, ReplicaError> {
        match crate::replica::read_node(self, row, v)? {
            Some(node) if !node.placeholder => {
                Ok(Some(crate::replica::node_value(self, row, &node)?))
            }
            _ => Ok(None),
        }
    }

    /// Resolves conflicts of `db` as the app chose, in one batch whose writes name every head
    /// of their row.
    ///
    /// # Errors
    /// [`ReplicaError::NoConflict`] for a row not in conflict; what [`Replica::batch`] refuses.
    pub fn resolve(
        &mut self,
        now_ms: u64,
        db: &str,
        answers: &[(String, String, Choice)],
    ) -> Result<(), ReplicaError> {
        let mut ops = Vec::with_capacity(answers.len());
        for (collection, key, choice) in answers {
            let row = row_of(db, collection, key);
            let stored = match self.store.get(self.ks.meta, &conflict_key(&row))? {
                Some(b) => decode::<StoredConflict>("conflict", &b)?,
                None => return Err(ReplicaError::NoConflict(collection.clone(), key.clone())),
            };
            let side = |heads: &[Vec<u8>], name: &str| {
                if heads.is_empty() {
                    Err(ReplicaError::NoSide(
                        name.into(),
                        collection.clone(),
                        key.clone(),
                    ))
                } else {
                    self.latest_of(&row, heads)
                }
            };
            let value = match choice {
                Choice::Local => side(&stored.local, "local")?,
                Choice::Remote => side(&stored.remote, "remote")?,
                Choice::Value(v) => v.clone(),
            };
            ops.push(match value {
                Some(value) => Op::Put {
                    collection: collection.clone(),
                    key: key.clone(),
                    value,
                },
                None => Op::Delete {
                    collection: collection.clone(),
                    key: key.clone(),
                },
            });
        }
        self.batch(now_ms, db, &ops).map(|_| ())
    }

    /// The value of the latest of `versions`.
    fn latest_of(
        &self,
        row: &RowId,
        versions: &[Vec<u8>],
    ) -> Result<Option<Vec<u8>>, ReplicaError> {
        let heads = versions
            .iter()
            .map(|v| Version::from_wire(v))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(visible(self, None, row, &heads)?.and_then(|s| s.value))
    }
}

fn split_once(bytes: &[u8]) -> Option<(&str, &str)> {
    let i = bytes.iter().position(|&b| b == 0)?;
    Some((
        std::str::from_utf8(&bytes[..i]).ok()?,
        std::str::from_utf8(&bytes[i + 1..]).ok()?,
    ))
}

/// Groups conflicts that share a batch (transitively), as Syncbase's `cr_closure`:
/// {B1: a, b}, {B2: b, c} is one group {a, b, c}.
fn closures(found: &[(RowId, StoredConflict)]) -> Vec<Vec<usize>> {
    let mut parent: Vec<usize> = (0..found.len()).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    let mut by_batch: BTreeMap<u64, usize> = BTreeMap::new();
    for (i, (_, c)) in found.iter().enumerate() {
        for &b in c.batches.iter().filter(|&&b| b != 0) {
            match by_batch.get(&b) {
                Some(&j) => {
                    let (a, b) = (root(&mut parent, i), root(&mut parent, j));
                    parent[a] = b;
                }
                None => {
                    by_batch.insert(b, i);
                }
            }
        }
    }
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in 0..found.len() {
        let r = root(&mut parent, i);
        groups.entry(r).or_default().push(i);
    }
    groups.into_values().collect()
}

/// After an answer is applied: every changed row with more than one head is resolved by its
/// rule (LWW now, app and defer recorded), and a row back to one head loses its conflict.
pub(crate) fn after_sync(
    txn: &mut Txn,
    r: &Replica,
    before: &HashMap<RowId, Vec<Version>>,
) -> Result<(u64, u64), ReplicaError> {
    let (mut found, mut resolved) = (0, 0);
    for row in txn.changed_rows() {
        let heads = txn.heads(r, &row)?;
        if heads.len() < 2 {
            // A conflict is only ever recorded on a row with two heads or more.
            if before.get(&row).is_none_or(|b| b.len() > 1) {
                clear_conflict(txn, r, &row);
            }
            continue;
        }
        found += 1;
        match r.rule_for(&row)? {
            Rule::Lww => {
                // Nothing to write: every member holding these heads reads the same winner.
                clear_conflict(txn, r, &row);
                resolved += 1;
            }
            rule => record_conflict(txn, r, &row, &heads, before.get(&row), rule)?,
        }
    }
    Ok((found, resolved))
}

fn record_conflict(
    txn: &mut Txn,
    r: &Replica,
    row: &RowId,
    heads: &[Version],
    before: Option<&Vec<Version>>,
    rule: Rule,
) -> Result<(), ReplicaError> {
    // A conflict already recorded keeps its sides (a later frame adds to the remote side).
    let before: BTreeSet<Version> = match r.store.get(r.ks.meta, &conflict_key(row))? {
        Some(b) => decode::<StoredConflict>("conflict", &b)?
            .local
            .iter()
            .filter_map(|v| Version::from_wire(v).ok())
            .collect(),
        None => before
            .map(|b| b.iter().copied().collect())
            .unwrap_or_default(),
    };
    let (local, remote): (Vec<Version>, Vec<Version>) =
        heads.iter().partition(|h| before.contains(h));
    let mut batches = Vec::new();
    for v in heads {
        if let Some(node) = txn.node(r, row, v)? {
            batches.push(node.batch_id);
        }
    }
    let ancestor = common_ancestor(txn, r, row, heads)?;
    let stored = StoredConflict {
        local: local.iter().map(|v| v.0.to_vec()).collect(),
        remote: remote.iter().map(|v| v.0.to_vec()).collect(),
        ancestor: ancestor.map(|v| v.0.to_vec()).unwrap_or_default(),
        batches,
        rule: rule.code(),
    };
    txn.batch
        .put(r.ks.meta, &conflict_key(row), &stored.encode_to_vec());
    Ok(())
}

/// Forgets a row's conflict (its heads were merged).
pub(crate) fn clear_conflict(txn: &mut Txn, r: &Replica, row: &RowId) {
    txn.batch.delete(r.ks.meta, &conflict_key(row));
}
