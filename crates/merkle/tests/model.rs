//! The trie against a `BTreeMap` model, for every branch factor: random batches of puts and
//! deletes; gets agree; the root equals a fresh build of the model's contents (history
//! independence); every generated range and change proof verifies, at the current root and at
//! historical ones; and tampered proofs are refused.
//!
//! Soundness oracle for tampering: a tampered proof may only be accepted if what it claims is
//! still true of the model (dropping a redundant proof node, or changing the id of a child inside
//! the range, which verification recomputes, leaves a correct proof). Tampers that change the
//! claim (a key dropped, added or reordered, a value changed) must always be refused, and every
//! tamper kind must be refused at least once per run, so the test cannot pass vacuously.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::{mem_db, seed};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tributary_merkle::{
    BatchOp, BranchFactor, ChangeProof, Config, DbError, EMPTY_ROOT, Hash, MerkleDb, RangeProof,
};
use tributary_store::MemStore;

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

fn random_key(rng: &mut StdRng) -> Vec<u8> {
    let len = rng.random_range(0..=3);
    (0..len)
        .map(|_| match rng.random_range(0..6) {
            0 => 0x00,
            1 => 0x01,
            2 => 0x10,
            3 => 0xFF,
            _ => rng.random(),
        })
        .collect()
}

fn random_value(rng: &mut StdRng) -> Vec<u8> {
    let len = match rng.random_range(0..6) {
        0 => 0,
        1 => 31,
        2 => 32,
        3 => 33,
        _ => rng.random_range(1..64),
    };
    (0..len).map(|_| rng.random()).collect()
}

fn random_batch(rng: &mut StdRng, model: &Model) -> Vec<BatchOp> {
    (0..rng.random_range(1..30))
        .map(|_| {
            let existing = (!model.is_empty() && rng.random_bool(0.5))
                .then(|| model.keys().nth(rng.random_range(0..model.len())).cloned())
                .flatten();
            let key = existing.unwrap_or_else(|| random_key(rng));
            if rng.random_bool(0.7) {
                BatchOp::Put(key, random_value(rng))
            } else {
                BatchOp::Delete(key)
            }
        })
        .collect()
}

fn apply(model: &mut Model, batch: &[BatchOp]) {
    for op in batch {
        match op {
            BatchOp::Put(k, v) => {
                model.insert(k.clone(), v.clone());
            }
            BatchOp::Delete(k) => {
                model.remove(k);
            }
        }
    }
}

/// A new in-memory database holding exactly `model`.
fn db_of(bf: BranchFactor, model: &Model) -> MerkleDb {
    let db = mem_db(bf);
    db.commit(
        model
            .iter()
            .map(|(k, v)| BatchOp::Put(k.clone(), v.clone())),
    )
    .expect("build from model");
    db
}

fn random_bounds(rng: &mut StdRng) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    let mut start = rng.random_bool(0.7).then(|| random_key(rng));
    let mut end = rng.random_bool(0.7).then(|| random_key(rng));
    if let (Some(s), Some(e)) = (&start, &end)
        && s > e
    {
        std::mem::swap(&mut start, &mut end);
    }
    (start, end)
}

/// What a range proof claims: its key-values are all of the model's from `start` to its last
/// key (or to `end` when it returns none).
fn range_claim_true(
    model: &Model,
    start: Option<&[u8]>,
    end: Option<&[u8]>,
    kvs: &[(Vec<u8>, Vec<u8>)],
) -> bool {
    let lo = start.unwrap_or_default().to_vec();
    let hi = kvs.last().map(|(k, _)| k.as_slice()).or(end);
    let truth: Vec<_> = model
        .range(lo..)
        .take_while(|(k, _)| hi.is_none_or(|h| k.as_slice() <= h))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    truth == kvs
}

#[derive(Default, Debug)]
struct Tally {
    refused: BTreeMap<&'static str, usize>,
    accepted_true: BTreeMap<&'static str, usize>,
}

struct Case<'a> {
    bf: BranchFactor,
    root: Hash,
    model: &'a Model,
    start: Option<&'a [u8]>,
    end: Option<&'a [u8]>,
}

impl Case<'_> {
    /// Checks one tampered proof against the oracle.
    fn judge(
        &self,
        kind: &'static str,
        claim_changed: bool,
        proof: &RangeProof,
        tally: &mut Tally,
    ) {
        if proof
            .verify(self.start, self.end, &self.root, self.bf)
            .is_err()
        {
            *tally.refused.entry(kind).or_default() += 1;
            return;
        }
        assert!(
            !claim_changed,
            "{kind}: a proof claiming something else was accepted: {proof:?}"
        );
        assert!(
            range_claim_true(self.model, self.start, self.end, &proof.key_values),
            "{kind}: a false range proof was accepted: {proof:?}"
        );
        *tally.accepted_true.entry(kind).or_default() += 1;
    }
}

fn tamper_range_proof(rng: &mut StdRng, case: &Case<'_>, proof: &RangeProof, tally: &mut Tally) {
    let n = proof.key_values.len();
    if n > 0 {
        for i in [0, n / 2, n - 1] {
            let mut p = proof.clone();
            p.key_values.remove(i);
            case.judge("drop key", true, &p, tally);
            let mut p = proof.clone();
            p.key_values[i].1.push(0x5A);
            case.judge("change value", true, &p, tally);
        }
        let mut p = proof.clone();
        let extra = random_key(rng);
        let in_range = case.start.is_none_or(|s| extra.as_slice() >= s)
            && case.end.is_none_or(|e| extra.as_slice() <= e);
        if in_range && !case.model.contains_key(&extra) {
            let at = p.key_values.partition_point(|(k, _)| *k < extra);
            p.key_values.insert(at, (extra, b"forged".to_vec()));
            case.judge("add key", true, &p, tally);
        }
    }
    if n > 1 {
        let mut p = proof.clone();
        let i = rng.random_range(0..n - 1);
        p.key_values.swap(i, i + 1);
        case.judge("reorder keys", true, &p, tally);
    }
    for side in 0..2 {
        let nodes = if side == 0 {
            &proof.start_proof
        } else {
            &proof.end_proof
        };
        if nodes.is_empty() {
            continue;
        }
        let i = rng.random_range(0..nodes.len());
        let mut p = proof.clone();
        let nodes_mut = if side == 0 {
            &mut p.start_proof
        } else {
            &mut p.end_proof
        };
        nodes_mut.remove(i);
        case.judge("drop proof node", false, &p, tally);
        let mut p = proof.clone();
        let nodes_mut = if side == 0 {
            &mut p.start_proof
        } else {
            &mut p.end_proof
        };
        if let Some(id) = nodes_mut[i].children.values_mut().next() {
            id[0] ^= 1;
            case.judge("change child id", false, &p, tally);
        }
    }
    let bytes = proof.to_bytes();
    for _ in 0..4 {
        let mut flipped = bytes.clone();
        if flipped.is_empty() {
            break;
        }
        let at = rng.random_range(0..flipped.len());
        flipped[at] ^= 1 << rng.random_range(0..8);
        match RangeProof::from_bytes(&flipped) {
            Err(_) => *tally.refused.entry("flip byte").or_default() += 1,
            Ok(p) if p == *proof => {} // e.g. a padding bit, which decoding masks
            Ok(p) => case.judge("flip byte", false, &p, tally),
        }
    }
}

fn check_range_proofs(
    rng: &mut StdRng,
    bf: BranchFactor,
    db: &MerkleDb,
    snapshots: &[(Hash, Model)],
    tally: &mut Tally,
) {
    for _ in 0..3 {
        let (root, model) = &snapshots[rng.random_range(0..snapshots.len())];
        let (start, end) = random_bounds(rng);
        let limit = rng.random_range(1..12);
        let result = db.range_proof(root, start.as_deref(), end.as_deref(), limit);
        if model.is_empty() {
            assert!(
                matches!(result, Err(DbError::EmptyTrie)),
                "empty trie must not be provable"
            );
            continue;
        }
        let proof = result.expect("range proof");
        let expected: Vec<_> = model
            .range(start.clone().unwrap_or_default()..)
            .take_while(|(k, _)| end.as_ref().is_none_or(|e| *k <= e))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(proof.key_values, expected, "range proof key-values");
        if let Err(e) = proof.verify(start.as_deref(), end.as_deref(), root, bf) {
            panic!(
                "generated range proof fails: {e}\nbf {bf:?} start {start:02x?} end {end:02x?} limit {limit}\nmodel keys {:02x?}\nproof {proof:02x?}",
                model.keys().collect::<Vec<_>>()
            );
        }
        let decoded = RangeProof::from_bytes(&proof.to_bytes()).expect("round trip");
        assert_eq!(decoded, proof);
        let case = Case {
            bf,
            root: *root,
            model,
            start: start.as_deref(),
            end: end.as_deref(),
        };
        tamper_range_proof(rng, &case, &proof, tally);
    }
}

fn check_change_proof(
    rng: &mut StdRng,
    bf: BranchFactor,
    db: &MerkleDb,
    snapshots: &[(Hash, Model)],
    tally: &mut Tally,
) {
    let a = rng.random_range(0..snapshots.len());
    let b = rng.random_range(0..snapshots.len());
    let (a, b) = (a.min(b), a.max(b));
    let ((root_a, model_a), (root_b, model_b)) = (&snapshots[a], &snapshots[b]);
    if root_a == root_b || *root_b == EMPTY_ROOT {
        return;
    }
    let (start, end) = random_bounds(rng);
    let limit = rng.random_range(1..12);
    let proof = db
        .change_proof(root_a, root_b, start.as_deref(), end.as_deref(), limit)
        .expect("change proof");
    let local = db_of(bf, model_a);
    if let Err(e) = local.verify_change_proof(&proof, start.as_deref(), end.as_deref(), root_b) {
        panic!(
            "generated change proof fails: {e}\nbf {bf:?} start {start:02x?} end {end:02x?} limit {limit}\nmodel_a {model_a:02x?}\nmodel_b {model_b:02x?}\nproof {proof:#?}"
        );
    }
    assert_eq!(
        ChangeProof::from_bytes(&proof.to_bytes()).expect("round trip"),
        proof
    );
    if let Some(i) =
        (!proof.key_changes.is_empty()).then(|| rng.random_range(0..proof.key_changes.len()))
    {
        let mut dropped = proof.clone();
        dropped.key_changes.remove(i);
        let refused = local
            .verify_change_proof(&dropped, start.as_deref(), end.as_deref(), root_b)
            .is_err();
        // Dropping the last change leaves a true claim about a shorter range; any other drop
        // leaves out a change inside the claimed range and must be refused.
        let was_last = i + 1 == proof.key_changes.len();
        assert!(
            refused || was_last,
            "change proof with change {i} of {} dropped was accepted",
            proof.key_changes.len()
        );
        if refused {
            *tally.refused.entry("change proof drop").or_default() += 1;
        }
        let mut altered = proof.clone();
        altered.key_changes[i].1 = Some(b"forged".to_vec());
        let refused = local
            .verify_change_proof(&altered, start.as_deref(), end.as_deref(), root_b)
            .is_err();
        let true_claim = model_b.get(&altered.key_changes[i].0) == Some(&b"forged".to_vec());
        assert!(refused || true_claim, "a forged change was accepted");
        if refused {
            *tally
                .refused
                .entry("change proof forged value")
                .or_default() += 1;
        }
    }
    local
        .commit_change_proof(&proof)
        .expect("apply change proof");
    let hi = proof
        .key_changes
        .last()
        .map(|(k, _)| k.clone())
        .or(end.clone());
    let lo = start.clone().unwrap_or_default();
    let in_span = |k: &&Vec<u8>| **k >= lo && hi.as_ref().is_none_or(|h| *k <= h);
    let got: Vec<_> = local
        .key_values(&local.root(), None, None, usize::MAX)
        .expect("scan")
        .into_iter()
        .filter(|(k, _)| in_span(&k))
        .collect();
    let want: Vec<_> = model_b
        .iter()
        .filter(|(k, _)| in_span(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(
        got, want,
        "after applying the change proof, the proven span equals the end state"
    );
    if start.is_none() && end.is_none() && proof.key_changes.len() < limit {
        assert_eq!(
            local.root(),
            *root_b,
            "a complete change proof brings the whole trie to the end root"
        );
    }
}

fn run(bf: BranchFactor, seed: u64) -> Tally {
    let mut rng = StdRng::seed_from_u64(seed);
    // Short checkpoint intervals put background checkpoints in flight under the proofs.
    let config = Config {
        branch_factor: bf,
        history_length: 16,
        checkpoint_interval: 1 + seed % 5,
        ..Config::default()
    };
    let db = MerkleDb::open(Arc::new(MemStore::new()), config).expect("open");
    let mut model = Model::new();
    let mut snapshots: Vec<(Hash, Model)> = Vec::new();
    let mut tally = Tally::default();
    for _ in 0..40 {
        let batch = random_batch(&mut rng, &model);
        apply(&mut model, &batch);
        let root = db.commit(batch).expect("commit");
        assert_eq!(root, db.root());
        for (k, v) in &model {
            assert_eq!(db.get(k).expect("get").as_ref(), Some(v), "get {k:02x?}");
        }
        assert_eq!(db.get(b"\xAA\xBB\xCC\xDD").expect("get"), None);
        assert_eq!(
            root,
            db_of(bf, &model).root(),
            "root equals a fresh build of the contents"
        );
        if snapshots.last().is_none_or(|(r, _)| *r != root) {
            snapshots.push((root, model.clone()));
        }
        // Only roots still in history can be proven.
        let retained: Vec<Hash> = db.history().iter().map(|(_, h)| *h).collect();
        snapshots.retain(|(r, _)| retained.contains(r) || *r == root);
        check_range_proofs(&mut rng, bf, &db, &snapshots, &mut tally);
        check_change_proof(&mut rng, bf, &db, &snapshots, &mut tally);
    }
    tally
}

#[test]
fn trie_agrees_with_model_for_every_branch_factor() {
    let seed = seed("trie_agrees_with_model_for_every_branch_factor");
    let mut total = Tally::default();
    for (i, bf) in [
        BranchFactor::Two,
        BranchFactor::Four,
        BranchFactor::Sixteen,
        BranchFactor::TwoFiftySix,
    ]
    .into_iter()
    .enumerate()
    {
        for round in 0..3u64 {
            let tally = run(bf, seed.wrapping_add(i as u64 * 1000 + round));
            for (k, v) in tally.refused {
                *total.refused.entry(k).or_default() += v;
            }
            for (k, v) in tally.accepted_true {
                *total.accepted_true.entry(k).or_default() += v;
            }
        }
    }
    eprintln!("tampered proofs refused: {:?}", total.refused);
    eprintln!(
        "tampered but still-true proofs accepted: {:?}",
        total.accepted_true
    );
    for kind in [
        "drop key",
        "change value",
        "add key",
        "reorder keys",
        "drop proof node",
        "change child id",
        "flip byte",
        "change proof drop",
        "change proof forged value",
    ] {
        assert!(
            total.refused.get(kind).copied().unwrap_or(0) > 0,
            "no '{kind}' tamper was exercised and refused"
        );
    }
}
