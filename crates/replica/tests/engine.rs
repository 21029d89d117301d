//! The engine end to end on in-memory stores: local writes, GetDeltas between replicas,
//! conflicts under each rule, signatures and ACLs, watch, pruning, cut syncs.

mod common;

use common::{join, replica, spec, text};
use prost::Message;
use tributary_replica::delta::sync_once;
use tributary_replica::resolve::{Choice, Rule};
use tributary_replica::{Op, RefusalReason, Replica, ReplicaError};
use tributary_wire::replica::DeltaFrame;

const DB: &str = "app";

fn pair() -> (tributary_replica::Replica, tributary_replica::Replica) {
    let (mut a, _) = replica(1);
    let (mut b, _) = replica(2);
    a.create_syncgroup(1000, DB, spec(&["notes", "tasks"], &[b.id()]))
        .expect("create");
    join(&mut a, &mut b, 1000, DB, "sg");
    (a, b)
}

#[test]
fn scans_come_in_pages_by_rows_and_by_bytes() {
    use tributary_replica::Page;
    let (mut a, _) = replica(1);
    for i in 0..25 {
        a.put(1000 + i, DB, "notes", &format!("k{i:02}"), b"ten bytes!")
            .expect("put");
    }
    a.put(2000, DB, "notesx", "k00", b"another collection")
        .expect("put");
    a.delete(2001, DB, "notes", "k05").expect("delete");
    let pages = |rows, bytes| {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = Page {
                after: after.as_deref(),
                rows,
                bytes,
            };
            let (got, more) = a.scan_page(DB, "notes", "k", &page).expect("page");
            after = got.last().map(|(k, _)| k.clone());
            out.push(got.len());
            if !more {
                return out;
            }
        }
    };
    assert_eq!(pages(10, usize::MAX), [10, 10, 4]);
    assert_eq!(pages(100, 25), [3, 3, 3, 3, 3, 3, 3, 3]);
    assert_eq!(pages(100, 0), [1; 24], "a page holds at least one row");
    let all: Vec<String> = a
        .scan(DB, "notes", "")
        .expect("scan")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(all.len(), 24);
    let after_last = Page {
        after: Some("k24"),
        rows: 10,
        bytes: usize::MAX,
    };
    assert_eq!(
        a.scan_page(DB, "notes", "", &after_last).expect("page"),
        (Vec::new(), false)
    );
    let before_prefix = Page {
        after: Some("a"),
        rows: 2,
        bytes: usize::MAX,
    };
    let (got, more) = a
        .scan_page(DB, "notes", "k1", &before_prefix)
        .expect("page");
    assert_eq!(
        got.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        ["k10", "k11"]
    );
    assert!(more);
}

#[test]
fn local_writes_reads_and_bad_input() {
    let (mut a, _) = replica(1);
    a.put(1000, DB, "notes", "k1", b"one").expect("put");
    a.put(1001, DB, "notes", "k2", b"two").expect("put");
    a.put(1002, DB, "other", "k1", b"elsewhere").expect("put");
    assert_eq!(text(&a, DB, "notes", "k1").as_deref(), Some("one"));
    a.delete(1003, DB, "notes", "k1").expect("delete");
    assert_eq!(text(&a, DB, "notes", "k1"), None);
    let keys: Vec<String> = a
        .scan(DB, "notes", "")
        .expect("scan")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys, ["k2"]);
    assert!(matches!(
        a.put(1, DB, "notes", "", b"v"),
        Err(ReplicaError::BadKey { .. })
    ));
    assert!(matches!(
        a.put(1, "bad/db", "notes", "k", b"v"),
        Err(ReplicaError::BadName { .. })
    ));
    assert!(matches!(
        a.batch(1, DB, &[]),
        Err(ReplicaError::BadBatch { .. })
    ));
    let big = vec![0u8; tributary_replica::types::MAX_VALUE_LEN + 1];
    assert!(matches!(
        a.put(1, DB, "notes", "k", &big),
        Err(ReplicaError::ValueTooLarge { .. })
    ));
    assert_eq!(
        text(&a, DB, "notes", "k2").as_deref(),
        Some("two"),
        "refused writes change nothing"
    );
}

#[test]
fn writes_on_each_side_arrive_on_the_other() {
    let (mut a, mut b) = pair();
    a.put(2000, DB, "notes", "from-a", b"A").expect("put");
    let report = sync_once(&mut b, &a, 2001, DB).expect("sync");
    assert_eq!(report.applied.new, 1);
    assert!(report.applied.refused.is_empty());
    assert_eq!(text(&b, DB, "notes", "from-a").as_deref(), Some("A"));
    b.put(2002, DB, "tasks", "from-b", b"B").expect("put");
    sync_once(&mut a, &b, 2003, DB).expect("sync");
    assert_eq!(text(&a, DB, "tasks", "from-b").as_deref(), Some("B"));
    // Nothing more to send either way.
    assert_eq!(
        sync_once(&mut a, &b, 2004, DB)
            .expect("sync")
            .applied
            .records,
        0
    );
    assert_eq!(
        sync_once(&mut b, &a, 2004, DB)
            .expect("sync")
            .applied
            .records,
        0
    );
}

#[test]
fn lww_resolves_the_same_everywhere_and_settles() {
    let (mut a, mut b) = pair();
    a.put(2000, DB, "notes", "k", b"base").expect("put");
    sync_once(&mut b, &a, 2001, DB).expect("sync");
    a.put(3000, DB, "notes", "k", b"from-a").expect("put");
    b.put(3500, DB, "notes", "k", b"from-b (later)")
        .expect("put");
    let r1 = sync_once(&mut a, &b, 4000, DB).expect("sync");
    let r2 = sync_once(&mut b, &a, 4000, DB).expect("sync");
    assert_eq!((r1.applied.conflicts, r1.applied.resolved), (1, 1));
    assert_eq!((r2.applied.conflicts, r2.applied.resolved), (1, 1));
    assert_eq!(
        r1.applied.records + r2.applied.records,
        2,
        "resolving writes nothing"
    );
    for r in [&a, &b] {
        assert_eq!(text(r, DB, "notes", "k").as_deref(), Some("from-b (later)"));
    }
    assert_eq!(
        a.get(DB, "notes", "k").expect("get"),
        b.get(DB, "notes", "k").expect("get")
    );
    for _ in 0..3 {
        assert_eq!(
            sync_once(&mut a, &b, 5000, DB).expect("sync").applied.new,
            0
        );
        assert_eq!(
            sync_once(&mut b, &a, 5000, DB).expect("sync").applied.new,
            0
        );
    }
}

#[test]
fn both_sides_resolving_at_once_make_one_version() {
    let (mut a, mut b) = pair();
    let (mut c, _) = replica(3);
    let mut wider = spec(&["notes", "tasks"], &[b.id(), c.id()]);
    wider.admins = vec![a.id()];
    a.update_spec(DB, wider, 1).expect("spec");
    join(&mut a, &mut c, 1000, DB, "sg");
    sync_once(&mut b, &a, 2000, DB).expect("b learns the spec that adds c");
    a.put(3000, DB, "notes", "k", b"a").expect("put");
    b.put(3001, DB, "notes", "k", b"b").expect("put");
    // c gets both writes and resolves; a gets b's write and resolves on its own.
    sync_once(&mut c, &a, 4000, DB).expect("sync");
    sync_once(&mut c, &b, 4000, DB).expect("sync");
    sync_once(&mut a, &b, 4000, DB).expect("sync");
    let from_c = sync_once(&mut a, &c, 4001, DB).expect("sync");
    assert_eq!(
        from_c.applied.conflicts, 0,
        "c's resolution is the version a made"
    );
    assert_eq!(
        a.get(DB, "notes", "k").expect("get"),
        c.get(DB, "notes", "k").expect("get")
    );
}

#[test]
fn a_causally_later_write_with_an_older_clock_wins() {
    let (mut a, mut b) = pair();
    // a's wall clock is an hour ahead of b's.
    a.put(3_600_000 + 10_000, DB, "notes", "k", b"a, fast clock")
        .expect("put");
    sync_once(&mut b, &a, 10_000, DB).expect("sync");
    b.put(10_001, DB, "notes", "k", b"b, after seeing a")
        .expect("put");
    sync_once(&mut a, &b, 3_600_000 + 10_002, DB).expect("sync");
    assert_eq!(
        text(&a, DB, "notes", "k").as_deref(),
        Some("b, after seeing a")
    );
    assert_eq!(
        text(&b, DB, "notes", "k").as_deref(),
        Some("b, after seeing a")
    );
}

#[test]
fn rules_are_bounded() {
    let (mut a, _) = replica(1);
    for i in 0..tributary_replica::resolve::MAX_RULES {
        a.set_rule(DB, "notes", &format!("p{i}"), Rule::Defer)
            .expect("rule");
    }
    assert!(matches!(
        a.set_rule(DB, "notes", "one-more", Rule::App),
        Err(ReplicaError::TooManyRules(_))
    ));
    a.set_rule(DB, "notes", "p0", Rule::App)
        .expect("replacing one is fine");
    assert!(matches!(
        a.set_rule(DB, "notes", &"x".repeat(2000), Rule::App),
        Err(ReplicaError::BadKey { .. })
    ));
    assert_eq!(
        a.rules(DB).expect("rules").len(),
        tributary_replica::resolve::MAX_RULES
    );
}

#[test]
fn defer_keeps_both_heads_until_a_write_names_them() {
    let (mut a, mut b) = pair();
    for r in [&mut a, &mut b] {
        r.set_rule(DB, "notes", "", Rule::Defer).expect("rule");
    }
    a.put(3000, DB, "notes", "k", b"a").expect("put");
    b.put(3001, DB, "notes", "k", b"b").expect("put");
    sync_once(&mut a, &b, 4000, DB).expect("sync");
    let state = a.get(DB, "notes", "k").expect("get").expect("row");
    assert_eq!(state.value.as_deref(), Some(&b"b"[..]));
    assert_eq!(state.conflict, vec![Some(b"a".to_vec())]);
    assert_eq!(a.conflicts(DB).expect("conflicts").len(), 1);
    a.put(5000, DB, "notes", "k", b"merged").expect("put");
    assert!(a.conflicts(DB).expect("conflicts").is_empty());
    sync_once(&mut b, &a, 5001, DB).expect("sync");
    let state = b.get(DB, "notes", "k").expect("get").expect("row");
    assert_eq!(
        (state.value.as_deref(), state.conflict.len()),
        (Some(&b"merged"[..]), 0)
    );
}

#[test]
fn app_conflicts_come_in_batch_closures_and_resolve_once() {
    let (mut a, mut b) = pair();
    for r in [&mut a, &mut b] {
        r.set_rule(DB, "notes", "", Rule::App).expect("rule");
    }
    let put = |k: &str, v: &str| Op::Put {
        collection: "notes".into(),
        key: k.into(),
        value: v.into(),
    };
    // {B1: x, y} on a and {B2: y, z} on b: one closure {x, y, z}; w alone.
    a.batch(3000, DB, &[put("x", "a"), put("y", "a")])
        .expect("batch");
    b.batch(3001, DB, &[put("y", "b"), put("z", "b")])
        .expect("batch");
    a.put(3002, DB, "notes", "z", b"a").expect("put");
    a.put(3003, DB, "notes", "w", b"a").expect("put");
    b.put(3004, DB, "notes", "w", b"b").expect("put");
    b.put(3005, DB, "notes", "x", b"b").expect("put");
    sync_once(&mut a, &b, 4000, DB).expect("sync");
    let groups = a.conflicts(DB).expect("conflicts");
    let mut sizes: Vec<usize> = groups.iter().map(Vec::len).collect();
    sizes.sort();
    assert_eq!(sizes, [1, 3], "{groups:?}");
    let answers: Vec<_> = ["w", "x", "y", "z"]
        .iter()
        .map(|k| ("notes".to_string(), (*k).to_string(), Choice::Remote))
        .collect();
    a.resolve(5000, DB, &answers).expect("resolve");
    assert!(a.conflicts(DB).expect("conflicts").is_empty());
    assert!(matches!(
        a.resolve(5001, DB, &answers[..1]),
        Err(ReplicaError::NoConflict(..))
    ));
    let back = sync_once(&mut b, &a, 5002, DB).expect("sync");
    assert_eq!(
        back.applied.conflicts, 0,
        "b takes the resolution without a conflict"
    );
    for k in ["w", "x", "y", "z"] {
        assert_eq!(text(&b, DB, "notes", k).as_deref(), Some("b"), "{k}");
        assert_eq!(text(&a, DB, "notes", k).as_deref(), Some("b"), "{k}");
    }
}

#[test]
fn forged_and_unauthorised_records_are_refused() {
    let (mut a, mut b) = pair();
    let (mut outsider, _) = replica(9);
    a.put(2000, DB, "notes", "k", b"honest").expect("put");
    // A record with its value changed after signing: the version restored from its content
    // is not the one signed; sent whole with its old version, the version does not match.
    let req = b.delta_request(DB).expect("request");
    let frame = || {
        let mut answer = a.answer(&req, b.id()).expect("answer");
        answer.next_frame(&a).expect("frame").expect("some")
    };
    let compact = frame();
    let mut whole = frame();
    whole.records = tributary_replica::compact::restore_all(&whole.records);
    for (mut forged, reason) in [
        (compact, RefusalReason::BadSignature),
        (whole, RefusalReason::WrongVersion),
    ] {
        forged.records[0].value = b"forged".to_vec();
        let applied = b.apply_frame(2001, &req, a.id(), &forged).expect("apply");
        assert_eq!(applied.new, 0);
        assert_eq!(applied.refused[0].2, reason);
        assert_eq!(text(&b, DB, "notes", "k"), None);
    }
    // A record signed by a node that is no writer.
    outsider
        .put(2002, DB, "notes", "k", b"intruder")
        .expect("put");
    let req = outsider.delta_request(DB).expect("request");
    assert!(req.knowledge.is_empty(), "the outsider is in no syncgroup");
    let mut answer = a
        .answer(&b.delta_request(DB).expect("r"), b.id())
        .expect("answer");
    let mut frame = answer.next_frame(&a).expect("frame").expect("some");
    frame.records = vec![outsider_record(&mut outsider)];
    let applied = b
        .apply_frame(2003, &req_of(&b), a.id(), &frame)
        .expect("apply");
    assert!(
        matches!(applied.refused[0].2, RefusalReason::NotWriter { .. }),
        "{:?}",
        applied.refused
    );
    assert_eq!(text(&b, DB, "notes", "k"), None);
    // A signature moved onto another author's record.
    let mut from_scratch = req_of(&b);
    from_scratch.knowledge[0].gens.clear();
    let mut frame2 = a
        .answer(&from_scratch, b.id())
        .expect("answer")
        .next_frame(&a)
        .expect("f")
        .expect("s");
    frame2.records[0].author = outsider.id().0.to_vec();
    let applied = b
        .apply_frame(2004, &from_scratch, a.id(), &frame2)
        .expect("apply");
    assert_eq!(applied.refused[0].2, RefusalReason::BadSignature);
}

fn req_of(r: &tributary_replica::Replica) -> tributary_wire::replica::DeltaRequest {
    r.delta_request(DB).expect("request")
}

/// The outsider's own signed record of notes/k, taken from its answer to itself.
fn outsider_record(
    outsider: &mut tributary_replica::Replica,
) -> tributary_wire::replica::LogRecord {
    outsider
        .create_syncgroup(1, DB, spec(&["notes"], &[]))
        .expect("own syncgroup");
    let me = outsider.id();
    let mut req = outsider.delta_request(DB).expect("request");
    req.knowledge[0].gens.clear();
    // Answer an imaginary peer with empty knowledge: the log as a stranger would get it.
    let stranger = common::identity(200);
    let stranger_id = tributary_replica::NodeId(stranger.eth_address());
    outsider
        .update_spec(
            DB,
            {
                let mut s = spec(&["notes"], &[]);
                s.readers = vec![stranger_id];
                s.admins = vec![me];
                s
            },
            1,
        )
        .expect("spec");
    req.initiator = stranger_id.0.to_vec();
    let mut answer = outsider.answer(&req, stranger_id).expect("answer");
    answer
        .next_frame(outsider)
        .expect("frame")
        .expect("some")
        .records
        .remove(0)
}

#[test]
fn a_revoked_reader_receives_nothing_more() {
    let (mut a, mut b) = pair();
    a.put(2000, DB, "notes", "k1", b"v1").expect("put");
    sync_once(&mut b, &a, 2001, DB).expect("sync");
    a.eject(2002, DB, "sg", b.id()).expect("eject");
    a.put(2003, DB, "notes", "k2", b"v2").expect("put");
    assert!(matches!(
        sync_once(&mut b, &a, 2004, DB),
        Err(ReplicaError::NotAuthorized(_))
    ));
    assert_eq!(text(&b, DB, "notes", "k2"), None);
    assert_eq!(
        text(&b, DB, "notes", "k1").as_deref(),
        Some("v1"),
        "what it had stays"
    );
}

#[test]
fn a_batch_arrives_whole_or_not_at_all() {
    let (mut a, mut b) = pair();
    let ops: Vec<Op> = (0..100)
        .map(|i| Op::Put {
            collection: "notes".into(),
            key: format!("row{i:03}"),
            value: b"batch".to_vec(),
        })
        .collect();
    a.batch(2000, DB, &ops).expect("batch");
    let req = req_of(&b);
    let mut frame = a
        .answer(&req, b.id())
        .expect("answer")
        .next_frame(&a)
        .expect("f")
        .expect("s");
    assert_eq!(frame.records.len(), 100);
    frame.records.truncate(60);
    let applied = b.apply_frame(2001, &req, a.id(), &frame).expect("apply");
    assert!(matches!(
        applied.refused[0].2,
        RefusalReason::IncompleteBatch {
            got: 60,
            count: 100,
            ..
        }
    ));
    assert!(
        b.scan(DB, "notes", "").expect("scan").is_empty(),
        "no half batch is visible"
    );
    sync_once(&mut b, &a, 2002, DB).expect("sync");
    assert_eq!(b.scan(DB, "notes", "").expect("scan").len(), 100);
}

#[test]
fn a_cut_sync_keeps_whole_frames_and_knowledge_says_so() {
    let (mut a, _) = replica(1);
    let (mut b, _) = replica(2);
    a.create_syncgroup(1000, DB, spec(&["notes"], &[b.id()]))
        .expect("create");
    join(&mut a, &mut b, 1000, DB, "sg");
    let value = vec![b'x'; 10_000];
    for i in 0..100 {
        a.put(2000 + i, DB, "notes", &format!("k{i:03}"), &value)
            .expect("put");
    }
    let req = req_of(&b);
    let mut answer = a.answer(&req, b.id()).expect("answer");
    let first = answer.next_frame(&a).expect("frame").expect("some");
    assert!(
        !first.last && first.records.len() < 100,
        "several frames: {}",
        first.records.len()
    );
    let got = first.records.len();
    b.apply_frame(3000, &req, a.id(), &first).expect("apply");
    // The connection drops here. The next round asks only for the rest.
    let report = sync_once(&mut b, &a, 3001, DB).expect("sync");
    assert_eq!(
        report.applied.records as usize,
        100 - got,
        "nothing sent twice"
    );
    assert_eq!(b.scan(DB, "notes", "").expect("scan").len(), 100);
    let bytes = first.encode_to_vec().len();
    assert!(bytes <= tributary_wire::MAX_REPLICA_FRAME_BYTES, "{bytes}");
    let _ = DeltaFrame::default();
}

#[test]
fn watch_resumes_after_its_marker() {
    let (mut a, mut b) = pair();
    a.put(2000, DB, "notes", "k1", b"v1").expect("put");
    a.put(2001, DB, "notes", "k2", b"v2").expect("put");
    let first = a.watch(DB, 0, 1).expect("watch");
    assert_eq!((first.len(), first[0].key.as_str()), (1, "k1"));
    let rest = a.watch(DB, first[0].seq, 100).expect("watch");
    assert_eq!(
        rest.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(),
        ["k2"]
    );
    sync_once(&mut b, &a, 2002, DB).expect("sync");
    let on_b = b.watch(DB, 0, 100).expect("watch");
    assert_eq!(on_b.len(), 2);
    assert!(on_b.iter().all(|e| e.from_sync));
}

#[test]
fn a_pending_joiner_writes_only_after_reaching_the_checkpoint() {
    let (mut a, _) = replica(1);
    let (mut b, _) = replica(2);
    a.create_syncgroup(1000, DB, spec(&["notes"], &[b.id()]))
        .expect("create");
    a.put(1500, DB, "notes", "k", b"before the join")
        .expect("put");
    join(&mut a, &mut b, 2000, DB, "sg");
    assert!(matches!(
        b.put(2001, DB, "notes", "k2", b"v"),
        Err(ReplicaError::JoinPending(_))
    ));
    sync_once(&mut b, &a, 2002, DB).expect("sync");
    b.put(2003, DB, "notes", "k2", b"v")
        .expect("put after sync");
    let (mut c, _) = replica(3);
    assert!(matches!(
        a.admin_join(2004, DB, "sg", c.id()),
        Err(ReplicaError::NotAllowed(..))
    ));
    assert!(matches!(
        b.admin_join(2004, DB, "sg", c.id()),
        Err(ReplicaError::NotAdmin(..))
    ));
    let _ = &mut c;
}

#[test]
fn pruning_keeps_the_log_bounded_under_steady_writes() {
    let (mut a, mut b) = pair();
    let mut sizes = Vec::new();
    for round in 0..200u64 {
        let now = 10_000 + round * 10;
        a.put(now, DB, "notes", &format!("k{}", round % 10), b"a")
            .expect("put");
        b.put(
            now + 1,
            DB,
            "notes",
            &format!("k{}", (round + 5) % 10),
            b"b",
        )
        .expect("put");
        sync_once(&mut a, &b, now + 2, DB).expect("sync");
        sync_once(&mut b, &a, now + 3, DB).expect("sync");
        sizes.push(a.log_len(DB).expect("len"));
    }
    let max_late = *sizes[100..].iter().max().expect("sizes");
    assert!(
        max_late <= 40,
        "log of 10 rows stays near its heads: {:?}",
        &sizes[190..]
    );
    assert_eq!(
        a.scan(DB, "notes", "").expect("scan"),
        b.scan(DB, "notes", "").expect("scan")
    );
}

#[test]
fn cut_syncs_from_many_authors_never_resend() {
    let (mut a, _) = replica(1);
    let (mut b, _) = replica(2);
    let (mut c, _) = replica(3);
    let (mut d, _) = replica(4);
    let writers = vec![b.id(), c.id(), d.id()];
    a.create_syncgroup(1000, DB, spec(&["notes"], &writers))
        .expect("create");
    for r in [&mut b, &mut c, &mut d] {
        join(&mut a, r, 1000, DB, "sg");
    }
    sync_once(&mut b, &a, 1001, DB).expect("sync");
    sync_once(&mut c, &a, 1001, DB).expect("sync");
    let value = vec![b'x'; 300];
    for i in 0..60u64 {
        // b's clock runs five minutes ahead of c's.
        b.put(300_000 + 2000 + i, DB, "notes", &format!("b{i}"), &value)
            .expect("put");
        c.put(2000 + i, DB, "notes", &format!("c{i}"), &value)
            .expect("put");
    }
    sync_once(&mut a, &b, 400_000, DB).expect("sync");
    sync_once(&mut a, &c, 400_000, DB).expect("sync");
    let mut d = d;
    let mut received = 0;
    let mut rounds = 0;
    loop {
        let req = req_of(&d);
        let mut answer = a.answer(&req, d.id()).expect("answer");
        let Some(frame) = answer.next_frame(&a).expect("frame") else {
            break;
        };
        let applied = d.apply_frame(400_002, &req, a.id(), &frame).expect("apply");
        assert_eq!(
            applied.duplicates, 0,
            "round {rounds}: a cut sync sends nothing twice"
        );
        received += applied.new;
        rounds += 1;
        if frame.last {
            break;
        }
    }
    assert_eq!(received, 120, "after {rounds} cut rounds");
    assert_eq!(d.scan(DB, "notes", "").expect("scan").len(), 120);
}

#[test]
fn an_admin_handing_over_keeps_the_members_it_signed() {
    let (mut a, _) = replica(1);
    let (mut b, _) = replica(2);
    let (mut c, _) = replica(3);
    let mut s = spec(&["notes"], &[c.id()]);
    s.admins = vec![a.id(), b.id()];
    a.create_syncgroup(1000, DB, s.clone()).expect("create");
    join(&mut a, &mut b, 1001, DB, "sg");
    join(&mut a, &mut c, 1002, DB, "sg");
    s.admins = vec![b.id()];
    a.update_spec(DB, s, 1).expect("a hands over to b");
    let report = sync_once(&mut b, &a, 1003, DB).expect("sync");
    assert!(
        report.applied.refused.is_empty(),
        "{:?}",
        report.applied.refused
    );
    let info = b.syncgroup(DB, "sg").expect("sg");
    assert_eq!((info.version, info.members.len()), (2, 3));
    let report = sync_once(&mut c, &b, 1004, DB).expect("c syncs from the new admin");
    assert!(
        report.applied.refused.is_empty(),
        "{:?}",
        report.applied.refused
    );
}

#[test]
fn a_joiner_after_pruning_gets_whole_batches() {
    let (mut a, mut b) = pair();
    let put = |k: &str, v: &str| Op::Put {
        collection: "notes".into(),
        key: k.into(),
        value: v.into(),
    };
    a.batch(2000, DB, &[put("x", "1"), put("y", "1")])
        .expect("batch");
    a.put(2001, DB, "notes", "y", b"2").expect("put");
    for now in 2002..2006 {
        sync_once(&mut b, &a, now, DB).expect("sync");
        sync_once(&mut a, &b, now, DB).expect("sync");
    }
    let (mut c, _) = replica(3);
    let mut wider = spec(&["notes", "tasks"], &[b.id(), c.id()]);
    wider.admins = vec![a.id()];
    a.update_spec(DB, wider, 1).expect("spec");
    join(&mut a, &mut c, 2007, DB, "sg");
    let report = sync_once(&mut c, &a, 2008, DB).expect("sync");
    assert!(
        report.applied.refused.is_empty(),
        "{:?}",
        report.applied.refused
    );
    assert_eq!(text(&c, DB, "notes", "x").as_deref(), Some("1"));
    assert_eq!(text(&c, DB, "notes", "y").as_deref(), Some("2"));
}

#[test]
fn one_key_in_two_directories_is_caught() {
    let (mut a, _) = replica(1);
    let (mut twin, _) = replica(2);
    let (mut b, _) = replica(2);
    let (mut c, _) = replica(3);
    a.create_syncgroup(1000, DB, spec(&["notes"], &[b.id(), c.id()]))
        .expect("create");
    join(&mut a, &mut b, 1000, DB, "sg");
    join(&mut a, &mut twin, 1000, DB, "sg");
    join(&mut a, &mut c, 1000, DB, "sg");
    for r in [&mut b, &mut twin, &mut c] {
        sync_once(r, &a, 1001, DB).expect("sync");
    }
    b.put(2000, DB, "notes", "k", b"from b").expect("put");
    twin.put(2000, DB, "notes", "k2", b"from b's copied key")
        .expect("put");
    sync_once(&mut c, &b, 2001, DB).expect("sync");
    // The twin's answer to a request from scratch (as a third member relaying it would send).
    let mut req = req_of(&c);
    req.knowledge[0].gens.clear();
    let frame = twin
        .answer(&req, c.id())
        .expect("answer")
        .next_frame(&twin)
        .expect("f")
        .expect("s");
    let applied = c.apply_frame(2002, &req, twin.id(), &frame).expect("apply");
    let report = tributary_replica::delta::SyncReport {
        applied,
        ..Default::default()
    };
    assert!(
        report
            .applied
            .refused
            .iter()
            .any(|(_, _, why)| matches!(why, RefusalReason::Equivocation(_))),
        "{:?}",
        report.applied.refused
    );
    assert_eq!(
        text(&c, DB, "notes", "k").as_deref(),
        Some("from b"),
        "the first record stands"
    );
    assert_eq!(text(&c, DB, "notes", "k2"), None);
}

#[test]
fn generations_near_the_end_of_u64_are_refused() {
    let (mut a, mut b) = pair();
    a.put(2000, DB, "notes", "k", b"v").expect("put");
    let req = req_of(&b);
    let mut frame = a
        .answer(&req, b.id())
        .expect("answer")
        .next_frame(&a)
        .expect("f")
        .expect("s");
    frame.records[0].generation = u64::MAX;
    let applied = b.apply_frame(2001, &req, a.id(), &frame).expect("apply");
    assert!(
        matches!(applied.refused[0].2, RefusalReason::Malformed(_)),
        "{:?}",
        applied.refused
    );
    let mut far = req_of(&b);
    far.knowledge[0]
        .gens
        .push(tributary_wire::replica::GenEntry {
            device: a.id().0.to_vec(),
            generation: u64::MAX,
        });
    assert!(matches!(
        a.answer(&far, b.id()),
        Err(ReplicaError::Refused(RefusalReason::Malformed(_)))
    ));
}

#[test]
fn picking_a_side_that_does_not_exist_is_an_error() {
    let (mut a, mut b) = pair();
    let (mut c, _) = replica(3);
    let mut wider = spec(&["notes", "tasks"], &[b.id(), c.id()]);
    wider.admins = vec![a.id()];
    a.update_spec(DB, wider, 1).expect("spec");
    join(&mut a, &mut c, 1000, DB, "sg");
    sync_once(&mut b, &a, 2000, DB).expect("b learns the spec");
    sync_once(&mut c, &a, 2000, DB).expect("c joins");
    for r in [&mut a, &mut b, &mut c] {
        r.set_rule(DB, "notes", "", Rule::App).expect("rule");
    }
    b.put(3000, DB, "notes", "k", b"b").expect("put");
    c.put(3001, DB, "notes", "k", b"c").expect("put");
    sync_once(&mut b, &c, 3002, DB).expect("sync");
    // Both heads reach a together: a held no version of the row, so it has no local side.
    sync_once(&mut a, &b, 3003, DB).expect("sync");
    let local = [("notes".to_string(), "k".to_string(), Choice::Local)];
    assert!(matches!(
        a.resolve(3004, DB, &local),
        Err(ReplicaError::NoSide(..))
    ));
    assert!(
        a.get(DB, "notes", "k").expect("get").is_some(),
        "nothing deleted"
    );
    let remote = [("notes".to_string(), "k".to_string(), Choice::Remote)];
    a.resolve(3005, DB, &remote).expect("remote exists");
    assert_eq!(
        text(&a, DB, "notes", "k").as_deref(),
        Some("c"),
        "the later remote head"
    );
}

#[test]
fn ordinary_members_sync_after_an_admin_handover() {
    let (mut a, _) = replica(1);
    let (mut b, _) = replica(2);
    let (mut c, _) = replica(3);
    let (mut d, _) = replica(4);
    let mut s = spec(&["notes"], &[c.id()]);
    s.admins = vec![a.id(), b.id()];
    a.create_syncgroup(1000, DB, s.clone()).expect("create");
    join(&mut a, &mut b, 1001, DB, "sg");
    join(&mut a, &mut c, 1002, DB, "sg");
    s.admins = vec![b.id()];
    a.update_spec(DB, s, 1).expect("a hands over to b");
    sync_once(&mut b, &a, 1003, DB).expect("sync");
    sync_once(&mut c, &b, 1004, DB).expect("sync");
    // A joiner let in by the new admin, and two ordinary members syncing with each other.
    let mut s = b.syncgroup(DB, "sg").expect("sg").spec;
    s.readers.push(d.id());
    b.update_spec(DB, s, 2).expect("b adds a reader");
    join(&mut b, &mut d, 1005, DB, "sg");
    let report = sync_once(&mut c, &b, 1005, DB).expect("c learns of d");
    assert!(
        report.applied.refused.is_empty(),
        "{:?}",
        report.applied.refused
    );
    let report = sync_once(&mut d, &c, 1006, DB).expect("d syncs from c");
    assert!(
        report.applied.refused.is_empty(),
        "{:?}",
        report.applied.refused
    );
    let report = sync_once(&mut c, &d, 1007, DB).expect("c syncs from d");
    assert!(
        report.applied.refused.is_empty(),
        "{:?}",
        report.applied.refused
    );
}

#[test]
fn a_refusal_in_one_frame_holds_for_the_rest_of_the_answer() {
    let (mut a, mut b) = pair();
    let value = vec![b'x'; 10_000];
    for i in 0..60 {
        a.put(2000 + i, DB, "notes", &format!("k{i:03}"), &value)
            .expect("put");
    }
    let req = req_of(&b);
    let mut answer = a.answer(&req, b.id()).expect("answer");
    let mut first = true;
    while let Some(mut frame) = answer.next_frame(&a).expect("frame") {
        if first {
            frame.records[0].value = b"forged".to_vec();
            first = false;
        }
        b.apply_frame(3000, &req, a.id(), &frame).expect("apply");
    }
    assert_eq!(
        b.scan(DB, "notes", "").expect("scan").len(),
        59,
        "the forgery is refused"
    );
    sync_once(&mut b, &a, 3001, DB).expect("sync");
    assert_eq!(
        b.scan(DB, "notes", "").expect("scan").len(),
        60,
        "the genuine record is asked for again"
    );
}

#[test]
fn a_member_that_left_can_join_again() {
    let (mut a, mut b) = pair();
    b.leave_syncgroup(2000, DB, "sg").expect("leave");
    assert!(b.delta_request(DB).expect("request").knowledge.is_empty());
    join(&mut a, &mut b, 2001, DB, "sg");
    a.put(2002, DB, "notes", "k", b"v").expect("put");
    sync_once(&mut b, &a, 2003, DB).expect("sync");
    assert_eq!(text(&b, DB, "notes", "k").as_deref(), Some("v"));
}

#[test]
fn synced_databases_lists_those_with_syncgroups_only() {
    let (mut a, _store) = common::replica(1);
    assert!(a.synced_databases().expect("list").is_empty());
    // A database with rows but no syncgroup, and a node-wide key (the clock) in the space.
    a.put(1_000, "plain", "c", "k", b"v").expect("put");
    let id = a.id();
    for db in ["zeta", "alpha", "alpha-2"] {
        a.create_syncgroup(1_000, db, common::spec(&["c"], &[id]))
            .expect("create");
    }
    assert_eq!(
        a.synced_databases().expect("list"),
        ["alpha", "alpha-2", "zeta"]
    );
}

#[test]
fn a_batch_is_signed_once_per_collection_and_verifies_only_whole() {
    let (mut a, mut b) = pair();
    let ops: Vec<Op> = (0..50)
        .flat_map(|i| {
            ["notes", "tasks"].map(|c| Op::Put {
                collection: c.into(),
                key: format!("k{i:02}"),
                value: b"v".to_vec(),
            })
        })
        .collect();
    a.batch(2000, DB, &ops).expect("batch");
    a.put(2001, DB, "notes", "single", b"s").expect("put");
    let req = req_of(&b);
    let frame = a
        .answer(&req, b.id())
        .expect("answer")
        .next_frame(&a)
        .expect("f")
        .expect("s");
    // As the receiver sees them, each with its version, names, author and signature.
    let mut frame = frame;
    frame.records = tributary_replica::compact::restore_all(&frame.records);
    let signatures: std::collections::BTreeSet<&[u8]> = frame
        .records
        .iter()
        .map(|r| r.signature.as_slice())
        .collect();
    assert_eq!(frame.records.len(), 101);
    assert_eq!(
        signatures.len(),
        3,
        "one per collection of the batch, one for the single"
    );

    // A record of the notes group carrying the tasks group's (valid) signature: the notes
    // group is refused whole, the tasks group and the single row are taken.
    let mut tampered = frame.clone();
    let tasks_sig = tampered
        .records
        .iter()
        .find(|r| r.collection == "tasks")
        .expect("a tasks record")
        .signature
        .clone();
    let notes = tampered
        .records
        .iter_mut()
        .find(|r| r.collection == "notes" && r.batch_id != 0)
        .expect("a notes record");
    notes.signature = tasks_sig;
    let applied = b.apply_frame(2002, &req, a.id(), &tampered).expect("apply");
    assert!(
        applied
            .refused
            .iter()
            .all(|(_, _, why)| *why == RefusalReason::BadSignature),
        "{:?}",
        applied.refused
    );
    assert_eq!(applied.refused.len(), 50, "the notes group, whole");
    assert!(b.scan(DB, "notes", "k").expect("scan").is_empty());
    assert_eq!(b.scan(DB, "tasks", "").expect("scan").len(), 50);
    assert_eq!(text(&b, DB, "notes", "single").as_deref(), Some("s"));
}

/// A member that missed a spec version which changed the admins still follows: the answer
/// carries the chain of specs since, each signed by an admin of the one before.
#[test]
fn a_member_that_missed_an_admin_handover_follows_the_spec_chain() {
    let (_a, mut b, mut c) = handover_missed_by_c();
    b.put(1004, DB, "notes", "k", b"from b").expect("put");
    let report = sync_once(&mut c, &b, 1005, DB).expect("c syncs from b");
    assert!(
        report.applied.refused.is_empty(),
        "{:?}",
        report.applied.refused
    );
    let info = c.syncgroup(DB, "sg").expect("sg");
    assert_eq!(info.version, 3, "c followed the chain");
    assert_eq!(info.spec.description, "after the handover");
    let row = c.get(DB, "notes", "k").expect("get").map(|r| r.value);
    assert_eq!(row, Some(Some(b"from b".to_vec())));
}

/// Hands `a`'s syncgroup over to `b` (v2, signed by `a`) and lets `b` edit it (v3, signed by
/// `b`); `c` stays at v1, where `b` is no admin.
fn handover_missed_by_c() -> (Replica, Replica, Replica) {
    let (mut a, _) = replica(1);
    let (mut b, _) = replica(2);
    let (mut c, _) = replica(3);
    let mut s = spec(&["notes"], &[b.id(), c.id()]);
    s.admins = vec![a.id()];
    a.create_syncgroup(1000, DB, s.clone()).expect("create");
    join(&mut a, &mut b, 1001, DB, "sg");
    join(&mut a, &mut c, 1002, DB, "sg");
    s.admins = vec![b.id()];
    a.update_spec(DB, s.clone(), 1).expect("a hands over to b");
    sync_once(&mut b, &a, 1003, DB).expect("sync");
    s.description = "after the handover".into();
    b.update_spec(DB, s, 2).expect("b edits");
    (a, b, c)
}

/// A history entry that does not verify (here: v2 altered after it was signed) is refused,
/// and the member keeps the spec it had.
#[test]
fn a_forged_spec_in_the_history_is_refused_and_changes_nothing() {
    let (_a, b, mut c) = handover_missed_by_c();
    let req = c.delta_request(DB).expect("request");
    let mut answer = b.answer(&req, c.id()).expect("answer");
    let mut frame = answer
        .next_frame(&b)
        .expect("frame")
        .expect("a first frame");
    let state = &mut frame.syncgroups[0];
    assert_eq!(state.history.len(), 2, "v1 and v2 travel with v3");
    state.history[1].admins.push(c.id().0.to_vec());
    let applied = c.apply_frame(1005, &req, b.id(), &frame).expect("applied");
    assert!(!applied.refused.is_empty(), "the forgery was taken");
    assert_eq!(c.syncgroup(DB, "sg").expect("sg").version, 1);
}

/// Two admins publish version 2 at once; the tie goes to the larger digest. A member that
/// took the losing fork follows the winner's chain: the winning fork travels in the history,
/// and its new admin's version 3 is then checked against it.
#[test]
fn a_member_on_the_losing_fork_follows_the_winning_chain() {
    let (mut a, _) = replica(1);
    let (mut b, _) = replica(2);
    let (mut c, _) = replica(3);
    let (mut d, _) = replica(4);
    let (mut x, _) = replica(5);
    let (mut y, _) = replica(6);
    let writers = [a.id(), b.id(), c.id(), d.id(), x.id(), y.id()];
    let mut s = spec(&["notes"], &writers);
    s.admins = vec![a.id(), b.id()];
    a.create_syncgroup(1000, DB, s.clone()).expect("create");
    for (n, joiner) in [&mut b, &mut c, &mut d, &mut x, &mut y]
        .into_iter()
        .enumerate()
    {
        join(&mut a, joiner, 1001 + n as u64, DB, "sg");
    }
    // v2a by a makes c an admin; v2b by b makes d one. x takes v2a, y takes v2b.
    let mut s2a = s.clone();
    s2a.admins.push(c.id());
    a.update_spec(DB, s2a, 1).expect("v2a");
    let mut s2b = s;
    s2b.admins.push(d.id());
    b.update_spec(DB, s2b, 1).expect("v2b");
    sync_once(&mut x, &a, 1010, DB).expect("x syncs from a");
    sync_once(&mut y, &b, 1011, DB).expect("y syncs from b");
    for (who, report) in [
        (
            "a from b",
            sync_once(&mut a, &b, 1012, DB).expect("a meets b"),
        ),
        (
            "b from a",
            sync_once(&mut b, &a, 1013, DB).expect("b meets a"),
        ),
    ] {
        assert!(
            report.applied.refused.is_empty(),
            "{who}: {:?}",
            report.applied.refused
        );
    }
    let winner = a.syncgroup(DB, "sg").expect("sg").spec;
    assert_eq!(
        winner,
        b.syncgroup(DB, "sg").expect("sg").spec,
        "one fork won"
    );
    // The winning fork's new admin publishes v3; the member on the losing fork syncs from it.
    let (newcomer, loser) = if winner.admins.contains(&c.id()) {
        (&mut c, &mut y)
    } else {
        (&mut d, &mut x)
    };
    sync_once(newcomer, &a, 1014, DB).expect("the newcomer takes the winner");
    let mut s3 = winner;
    s3.description = "v3".into();
    newcomer.update_spec(DB, s3, 2).expect("v3 by the newcomer");
    let report = sync_once(loser, newcomer, 1015, DB).expect("sync");
    assert!(
        report.applied.refused.is_empty(),
        "{:?}",
        report.applied.refused
    );
    let info = loser.syncgroup(DB, "sg").expect("sg");
    assert_eq!((info.version, info.spec.description.as_str()), (3, "v3"));
}

/// Admins removed at version 2 each publish their own version 2 naming only themselves; some
/// of those forks have a larger digest than the real one. None is taken: a fork must be
/// signed by an admin of the spec held, so a removed admin cannot take the syncgroup back.
#[test]
fn an_admin_removed_at_a_version_cannot_take_it_back_with_a_fork() {
    let (mut a, _) = replica(1);
    let (mut x, _) = replica(2);
    let mut removed: Vec<Replica> = (10..18).map(|n| replica(n).0).collect();
    let mut writers = vec![a.id(), x.id()];
    writers.extend(removed.iter().map(Replica::id));
    let mut s = spec(&["notes"], &writers);
    s.admins = std::iter::once(a.id())
        .chain(removed.iter().map(Replica::id))
        .collect();
    a.create_syncgroup(1000, DB, s.clone()).expect("create");
    join(&mut a, &mut x, 1001, DB, "sg");
    for (n, m) in removed.iter_mut().enumerate() {
        join(&mut a, m, 1002 + n as u64, DB, "sg");
    }
    s.admins = vec![a.id()];
    a.update_spec(DB, s.clone(), 1)
        .expect("a removes the other admins");
    sync_once(&mut x, &a, 1020, DB).expect("x takes version 2");
    let mut refused = 0;
    for (n, m) in removed.iter_mut().enumerate() {
        let mut fork = s.clone();
        fork.admins = vec![m.id()];
        fork.description = format!("fork {n}");
        m.update_spec(DB, fork, 1).expect("a fork of version 2");
        let report = sync_once(&mut x, m, 1030 + n as u64, DB).expect("sync");
        refused += usize::from(!report.applied.refused.is_empty());
        let held = x.syncgroup(DB, "sg").expect("sg");
        assert_eq!(held.version, 2);
        assert_eq!(held.spec.admins, [a.id()], "fork {n} took the syncgroup");
    }
    // Forks with a smaller digest lose the tie and are not even candidates.
    assert!(
        refused > 0,
        "no fork had a larger digest: the test proved nothing"
    );
    println!("{refused} of 8 forks with a larger digest refused");
}

/// A member that joined after an admin was removed keeps the grant's spec history, so the
/// entries that removed admin signed, still held by a member that has not synced since,
/// are stale to it and not forged: the honest member is not refused.
#[test]
fn a_joiner_takes_entries_signed_under_the_spec_before_as_stale() {
    let (mut a, _) = replica(1);
    let (mut b, _) = replica(2);
    let (mut x, _) = replica(3);
    let (mut m, _) = replica(4);
    let (mut j, _) = replica(5);
    let mut s = spec(&["notes"], &[b.id(), x.id(), m.id(), j.id()]);
    s.admins = vec![a.id(), b.id()];
    a.create_syncgroup(1000, DB, s.clone()).expect("create");
    join(&mut a, &mut b, 1001, DB, "sg");
    join(&mut a, &mut x, 1002, DB, "sg");
    join(&mut b, &mut m, 1003, DB, "sg");
    sync_once(&mut x, &b, 1004, DB).expect("x learns m's entry, signed by b");
    sync_once(&mut a, &b, 1005, DB).expect("a learns it too");
    s.admins = vec![a.id()];
    a.update_spec(DB, s, 1)
        .expect("a removes b (and re-signs m's entry)");
    join(&mut a, &mut j, 1006, DB, "sg");
    let report = sync_once(&mut j, &x, 1007, DB).expect("j syncs from x, still at version 1");
    assert!(
        report.applied.refused.is_empty(),
        "an honest member refused: {:?}",
        report.applied.refused
    );
    let info = j.syncgroup(DB, "sg").expect("sg");
    assert_eq!(info.version, 2);
    assert!(
        info.members
            .contains(&(m.id(), tributary_replica::syncgroup::MemberState::Joined))
    );
}

/// A frame holds at most `MAX_REPLICA_FRAME_RECORDS` records, however small, so restoring
/// what they leave out stays bounded: the responder closes frames at a batch boundary below
/// it, and the initiator refuses a frame over it.
#[test]
fn frames_hold_a_bounded_number_of_records() {
    use tributary_replica::ReplicaConfig;
    use tributary_wire::MAX_REPLICA_FRAME_RECORDS;
    let config = ReplicaConfig {
        frame_bytes: usize::MAX,
        ..ReplicaConfig::default()
    };
    let (mut a, a_store) = replica(1);
    let (mut b, _) = replica(2);
    a.create_syncgroup(1000, DB, spec(&["notes"], &[b.id()]))
        .expect("create");
    join(&mut a, &mut b, 1000, DB, "sg");
    for n in 0..4u64 {
        let ops: Vec<Op> = (0..10_000)
            .map(|i| Op::Put {
                collection: "notes".into(),
                key: format!("{n}-{i:05}"),
                value: Vec::new(),
            })
            .collect();
        a.batch(2000 + n, DB, &ops).expect("batch");
    }
    let a = common::reopen(1, &a_store, config);
    let req = req_of(&b);
    let mut answer = a.answer(&req, b.id()).expect("answer");
    let mut sizes = Vec::new();
    let mut first = None;
    while let Some(frame) = answer.next_frame(&a).expect("frame") {
        sizes.push(frame.records.len());
        first.get_or_insert(frame);
    }
    assert_eq!(
        sizes,
        [30_000, 10_000],
        "closed at the batch boundary past the bound"
    );
    let mut over = first.expect("a frame");
    let one = over.records[1].clone();
    over.records.resize(MAX_REPLICA_FRAME_RECORDS + 1, one);
    assert!(matches!(
        b.apply_frame(3000, &req, a.id(), &over),
        Err(ReplicaError::Malformed(_))
    ));
    assert_eq!(b.scan(DB, "notes", "").expect("scan").len(), 0);
}
