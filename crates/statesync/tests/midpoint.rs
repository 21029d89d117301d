//! `midpoint` against x/sync's `Test_Midpoint`: the vectors of `shared/vectors/merkledb.json`
//! and 5,000 random ranges whose midpoint must lie strictly inside.

use std::path::PathBuf;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tributary_statesync::midpoint;

fn vectors() -> serde_json::Value {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vectors/merkledb.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("vectors {} are required: {e}", path.display()));
    serde_json::from_str(&text).expect("json")
}

fn bound(v: &serde_json::Value) -> Option<Vec<u8>> {
    v.as_str().map(|s| hex::decode(s).expect("hex"))
}

#[test]
fn midpoints_match_x_sync() {
    let v = vectors();
    let cases = v["sync_midpoint"]["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), 12);
    for case in cases {
        let (start, end) = (bound(&case["start"]), bound(&case["end"]));
        let got = midpoint(start.as_deref(), end.as_deref()).map(hex::encode);
        assert_eq!(got.as_deref(), case["mid"].as_str(), "{case}");
    }
    assert_eq!(
        midpoint(None, Some(&[0x7f])),
        Some(vec![0x3f, 0x7f]),
        "low half, as upstream"
    );
    assert_eq!(
        midpoint(Some(&[0x7f]), None),
        Some(vec![0xbf]),
        "high half, as upstream"
    );
    assert_eq!(midpoint(Some(&[]), Some(&[])), None);
}

#[test]
fn random_midpoints_lie_strictly_inside() {
    // Upstream seeds each of its 5,000 cases with its index; so does this.
    for i in 0..5000u64 {
        let mut rng = StdRng::seed_from_u64(i);
        let mut start: Vec<u8> = (0..rng.random_range(1..100))
            .map(|_| rng.random())
            .collect();
        let mut end: Vec<u8> = (0..rng.random_range(1..100))
            .map(|_| rng.random())
            .collect();
        while start == end {
            end = (0..end.len()).map(|_| rng.random()).collect();
        }
        if start > end {
            std::mem::swap(&mut start, &mut end);
        }
        let mid = midpoint(Some(&start), Some(&end)).expect("a midpoint");
        assert!(
            start < mid && mid < end,
            "case {i}: {start:02x?} < {mid:02x?} < {end:02x?}"
        );
    }
}
