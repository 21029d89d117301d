//! Every vector of `shared/vectors/merkledb.json` reproduced: node ids and trie roots.

mod common;

use common::{mem_db, unhex, vectors};
use sha2::{Digest, Sha256};
use tributary_merkle::node::node_id;
use tributary_merkle::{BatchOp, BranchFactor, Key, to_hex};

fn uvarint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
    out
}

#[test]
fn node_ids_match_avalanchego() {
    let v = vectors("merkledb.json");
    let cases = v["node_ids"].as_array().expect("node_ids");
    assert_eq!(cases.len(), 6);
    for case in cases {
        let bits = case["key_bits"].as_u64().expect("key_bits") as usize;
        let key =
            Key::from_packed(bits, unhex(case["key_hex"].as_str().expect("key_hex"))).expect("key");
        let value = case["value"].as_str().map(unhex);
        let children: Vec<(u8, [u8; 32])> = case["children"]
            .as_object()
            .expect("children")
            .iter()
            .map(|(i, id)| {
                (
                    i.parse().expect("index"),
                    unhex(id.as_str().expect("id"))
                        .try_into()
                        .expect("32 bytes"),
                )
            })
            .collect();
        let id = node_id(&key, value.as_deref(), &children);
        assert_eq!(
            to_hex(&id),
            case["id"].as_str().expect("id"),
            "{}",
            case["case"]
        );
    }
}

fn pairs_of(case: &serde_json::Value) -> Vec<(Vec<u8>, Vec<u8>)> {
    if let Some(pairs) = case["pairs"].as_array() {
        return pairs
            .iter()
            .map(|p| {
                (
                    unhex(p[0].as_str().expect("key")),
                    unhex(p[1].as_str().expect("value")),
                )
            })
            .collect();
    }
    let generator = &case["generator"];
    assert_eq!(
        generator["kind"], "uvarint_sha256",
        "unknown generator in {case}"
    );
    let n = generator["n"].as_u64().expect("n");
    (0..n)
        .map(|i| {
            let k = uvarint(i);
            let v = Sha256::digest(&k).to_vec();
            (k, v)
        })
        .collect()
}

#[test]
fn roots_match_avalanchego() {
    let v = vectors("merkledb.json");
    let cases = v["roots"].as_array().expect("roots");
    assert!(cases.len() >= 10);
    for case in cases {
        let bf = BranchFactor::from_arity(case["branch_factor"].as_u64().expect("bf") as usize)
            .expect("bf");
        let pairs = pairs_of(case);
        let expected = case["root"].as_str().expect("root");
        // One batch.
        let db = mem_db(bf);
        let root = db
            .commit(
                pairs
                    .iter()
                    .map(|(k, v)| BatchOp::Put(k.clone(), v.clone())),
            )
            .expect("commit");
        assert_eq!(to_hex(&root), expected, "{} (one batch)", case["case"]);
        // One key per commit, in reverse: the root depends only on the contents.
        let db = mem_db(bf);
        for (k, v) in pairs.iter().rev() {
            db.commit([BatchOp::Put(k.clone(), v.clone())])
                .expect("commit");
        }
        assert_eq!(
            to_hex(&db.root()),
            expected,
            "{} (one key per commit)",
            case["case"]
        );
    }
}

/// avalanchego `Test_HashChangedNodes` goes up to 100,000 keys; the vectors file holds the
/// small cases, and this checks the large ones against a second build order.
#[test]
fn uvarint_generator_roots_are_history_independent_at_10k() {
    let pairs: Vec<_> = (0..10_000u64)
        .map(|i| (uvarint(i), Sha256::digest(uvarint(i)).to_vec()))
        .collect();
    let one = mem_db(BranchFactor::Sixteen);
    one.commit(
        pairs
            .iter()
            .map(|(k, v)| BatchOp::Put(k.clone(), v.clone())),
    )
    .expect("commit");
    let chunked = mem_db(BranchFactor::Sixteen);
    for chunk in pairs.chunks(777).rev() {
        chunked
            .commit(
                chunk
                    .iter()
                    .map(|(k, v)| BatchOp::Put(k.clone(), v.clone())),
            )
            .expect("commit");
    }
    assert_eq!(one.root(), chunked.root());
}
