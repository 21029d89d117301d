//! Every case of `shared/vectors/intervals.json` (bee's `intervals_test.go` table): adding,
//! merging adjacent ranges, clamping to the start limit, `Next` with and without a ceiling,
//! `Last`, and `Merge`.

use std::path::PathBuf;

use serde_json::Value;
use tributary_stream::intervals::Intervals;

fn vectors() -> Value {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vectors/intervals.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("test vectors {} are required: {e}", path.display()));
    serde_json::from_str(&text).expect("vectors are JSON")
}

fn ranges(v: &Value) -> Vec<(u64, u64)> {
    v.as_array()
        .expect("ranges")
        .iter()
        .map(|r| (r[0].as_u64().expect("start"), r[1].as_u64().expect("end")))
        .collect()
}

fn n(v: &Value, field: &str) -> u64 {
    v[field].as_u64().unwrap_or_else(|| panic!("{field}"))
}

#[test]
fn bee_add_next_and_last_cases() {
    let cases = vectors()["add"].as_array().expect("add cases").clone();
    assert!(cases.len() >= 38, "the whole table: {} cases", cases.len());
    for (i, case) in cases.iter().enumerate() {
        let mut intervals = Intervals::from_ranges(n(case, "startLimit"), ranges(&case["initial"]));
        intervals.add(n(case, "start"), n(case, "end"));
        assert_eq!(
            intervals.ranges(),
            ranges(&case["expected"]).as_slice(),
            "case {i}: {case}"
        );
        let gap = intervals.next(n(case, "ceiling"));
        assert_eq!(
            (gap.start, gap.end, gap.empty),
            (
                n(case, "nextStart"),
                n(case, "nextEnd"),
                case["nextEmptyRange"].as_bool().expect("bool")
            ),
            "case {i}: next of {case}"
        );
        assert_eq!(
            intervals.last(),
            n(case, "last"),
            "case {i}: last of {case}"
        );
    }
}

#[test]
fn bee_merge_cases() {
    let cases = vectors()["merge"].as_array().expect("merge cases").clone();
    assert!(!cases.is_empty());
    for (i, case) in cases.iter().enumerate() {
        let mut intervals = Intervals::from_ranges(0, ranges(&case["initial"]));
        intervals.merge(&Intervals::from_ranges(0, ranges(&case["merge"])));
        assert_eq!(
            intervals.ranges(),
            ranges(&case["expected"]).as_slice(),
            "case {i}: {case}"
        );
    }
}
