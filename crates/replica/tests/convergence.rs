//! Property test: K replicas, random writes, deletes and batches, random pairwise syncs in
//! random orders, some cut after their first frame. After a final all-pairs round every
//! replica has the same rows, equal to the model (per row, the value of the write with the
//! latest time: LWW over hybrid clocks); no batch is ever seen in part.

mod common;

use std::collections::BTreeMap;

use common::{join, replica, spec};
use proptest::prelude::*;
use tributary_replica::delta::sync_once;
use tributary_replica::{Op, Replica, ReplicaConfig, RowId, Version};

const DB: &str = "db";
const KEYS: u8 = 6;

#[derive(Clone, Debug)]
enum Step {
    Put { at: usize, key: u8, value: u8 },
    Delete { at: usize, key: u8 },
    Batch { at: usize, keys: Vec<u8>, value: u8 },
    Sync { to: usize, from: usize, cut: bool },
}

fn step(k: usize) -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..k, 0..KEYS, any::<u8>()).prop_map(|(at, key, value)| Step::Put { at, key, value }),
        1 => (0..k, 0..KEYS).prop_map(|(at, key)| Step::Delete { at, key }),
        1 => (0..k, prop::collection::vec(0..KEYS, 2..5), any::<u8>())
            .prop_map(|(at, keys, value)| Step::Batch { at, keys, value }),
        4 => (0..k, 0..k, any::<bool>()).prop_map(|(to, from, cut)| Step::Sync { to, from, cut }),
    ]
}

/// Per row, the latest write: (time order = step number, value).
type Model = BTreeMap<String, (u64, Option<u8>)>;

fn row(key: &str) -> RowId {
    RowId {
        db: DB.into(),
        collection: "c".into(),
        key: key.into(),
    }
}

fn setup(k: usize) -> Vec<Replica> {
    let mut replicas: Vec<Replica> = (0..k)
        .map(|i| {
            let (_, store) = replica(0);
            common::reopen(
                u8::try_from(i + 1).expect("small"),
                &store,
                ReplicaConfig {
                    prune: false,
                    frame_bytes: 200,
                    ..ReplicaConfig::default()
                },
            )
        })
        .collect();
    let ids: Vec<_> = replicas.iter().map(Replica::id).collect();
    replicas[0]
        .create_syncgroup(1, DB, spec(&["c"], &ids))
        .expect("create");
    for i in 1..k {
        let (admin, rest) = replicas.split_at_mut(1);
        join(&mut admin[0], &mut rest[i - 1], 1, DB, "sg");
        let (first, rest) = replicas.split_at_mut(i);
        sync_once(&mut rest[0], &first[0], 2, DB).expect("initial sync");
    }
    replicas
}

fn sync_pair(replicas: &mut [Replica], to: usize, from: usize, now: u64, cut: bool) {
    if to == from {
        return;
    }
    let (a, b) = if to < from {
        let (l, r) = replicas.split_at_mut(from);
        (&mut l[to], &r[0])
    } else {
        let (l, r) = replicas.split_at_mut(to);
        (&mut r[0], &l[from])
    };
    if cut {
        let req = a.delta_request(DB).expect("request");
        let mut answer = b.answer(&req, a.id()).expect("answer");
        if let Some(frame) = answer.next_frame(b).expect("frame") {
            let applied = a.apply_frame(now, &req, b.id(), &frame).expect("apply");
            assert!(applied.refused.is_empty(), "{:?}", applied.refused);
        }
    } else {
        let report = sync_once(a, b, now, DB).expect("sync");
        assert!(
            report.applied.refused.is_empty(),
            "{:?}",
            report.applied.refused
        );
    }
}

fn check_batches(replicas: &[Replica], batches: &[Vec<(String, Version)>]) {
    for (i, r) in replicas.iter().enumerate() {
        for batch in batches {
            let held = batch
                .iter()
                .filter(|(k, v)| r.has_version(&row(k), v).expect("has"))
                .count();
            assert!(
                held == 0 || held == batch.len(),
                "replica {i} holds {held} of {} rows of a batch",
                batch.len()
            );
        }
    }
}

fn run(k: usize, steps: &[Step]) {
    let mut replicas = setup(k);
    let mut model = Model::new();
    let mut batches = Vec::new();
    for (n, s) in steps.iter().enumerate() {
        let now = 1_000_000 + n as u64 * 1000;
        match s {
            Step::Put { at, key, value } => {
                let key = format!("k{key}");
                replicas[*at]
                    .put(now, DB, "c", &key, &[*value])
                    .expect("put");
                model.insert(key, (now, Some(*value)));
            }
            Step::Delete { at, key } => {
                let key = format!("k{key}");
                replicas[*at].delete(now, DB, "c", &key).expect("delete");
                model.insert(key, (now, None));
            }
            Step::Batch { at, keys, value } => {
                let ops: Vec<Op> = keys
                    .iter()
                    .map(|k| Op::Put {
                        collection: "c".into(),
                        key: format!("k{k}"),
                        value: vec![*value],
                    })
                    .collect();
                let versions = replicas[*at].batch(now, DB, &ops).expect("batch");
                let mut rows: BTreeMap<String, Version> = BTreeMap::new();
                for (op, v) in ops.iter().zip(versions) {
                    if let Op::Put { key, .. } = op {
                        rows.insert(key.clone(), v);
                        model.insert(key.clone(), (now, Some(*value)));
                    }
                }
                batches.push(rows.into_iter().collect::<Vec<_>>());
            }
            Step::Sync { to, from, cut } => sync_pair(&mut replicas, *to, *from, now, *cut),
        }
        check_batches(&replicas, &batches);
    }
    let end = 1_000_000 + steps.len() as u64 * 1000 + 1000;
    for _round in 0..2 {
        for to in 0..k {
            for from in 0..k {
                sync_pair(&mut replicas, to, from, end, false);
            }
        }
    }
    let expected: Vec<(String, u8)> = model
        .iter()
        .filter_map(|(k, (_, v))| v.map(|v| (k.clone(), v)))
        .collect();
    for (i, r) in replicas.iter().enumerate() {
        let rows: Vec<(String, u8)> = r
            .scan(DB, "c", "")
            .expect("scan")
            .into_iter()
            .map(|(k, s)| {
                assert!(s.conflict.is_empty(), "LWW leaves no conflict");
                (k, s.value.expect("visible")[0])
            })
            .collect();
        assert_eq!(rows, expected, "replica {i} differs from the model");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn replicas_converge_to_the_model(k in 2usize..5, steps in prop::collection::vec(step(4), 1..40)) {
        let steps: Vec<Step> = steps.into_iter().map(|s| clamp(s, k)).collect();
        run(k, &steps);
    }
}

fn clamp(s: Step, k: usize) -> Step {
    match s {
        Step::Put { at, key, value } => Step::Put {
            at: at % k,
            key,
            value,
        },
        Step::Delete { at, key } => Step::Delete { at: at % k, key },
        Step::Batch { at, keys, value } => Step::Batch {
            at: at % k,
            keys,
            value,
        },
        Step::Sync { to, from, cut } => Step::Sync {
            to: to % k,
            from: from % k,
            cut,
        },
    }
}
