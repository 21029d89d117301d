//! The retrieval core against scripted peers: which peer is asked, one fetch per chunk, the
//! fallbacks, the penalties and the bounds.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use tributary_chunk::{Address, Chunk};
use tributary_stream::pull::Fault;
use tributary_stream::retrieval::{
    self, FORWARD_ATTEMPTS, MAX_FETCHES, MAX_HOPS, MAX_WAITERS, ORIGIN_ATTEMPTS, Output, Requester,
    Retrieval, RetrievalConfig, RetrievalError,
};

/// An address whose first byte is `b` (the rest zero).
fn addr(b: u8) -> Address {
    let mut a = [0u8; 32];
    a[0] = b;
    Address(a)
}

fn chunk(n: u32) -> Chunk {
    Chunk::new(4, &n.to_le_bytes()).expect("chunk")
}

fn core(own: u8, peers: &[u8]) -> Retrieval {
    let mut r = Retrieval::new(addr(own), RetrievalConfig::default());
    for &p in peers {
        r.handle_connected(addr(p), false);
    }
    r
}

fn outputs(r: &mut Retrieval) -> Vec<Output> {
    std::iter::from_fn(|| r.poll_output()).collect()
}

/// The (peer, id, hops) of every request in `outs`.
fn requests(outs: &[Output]) -> Vec<(Address, u64, u32)> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Request { peer, id, request } => Some((*peer, *id, request.hops)),
            _ => None,
        })
        .collect()
}

fn answers(outs: &[Output]) -> Vec<(Requester, Result<Address, RetrievalError>)> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Answer { requester, result } => Some((
                *requester,
                result.as_ref().map(Chunk::address).map_err(Clone::clone),
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn a_reader_asks_the_closest_peer_and_gets_the_verified_chunk() {
    let c = chunk(1);
    let target = c.address().0[0];
    // Peers at XOR distance 1, 2 and 0x80 from the chunk's first byte.
    let (near, mid, far) = (target ^ 1, target ^ 2, target ^ 0x80);
    let mut r = core(target ^ 0x40, &[far, mid, near]);
    let now = Instant::now();
    r.handle_local(now, c.address(), 7);
    let outs = outputs(&mut r);
    let reqs = requests(&outs);
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].0, addr(near));
    assert_eq!(reqs[0].2, u32::from(MAX_HOPS));
    r.handle_delivery(now, reqs[0].1, Ok(Some(c.clone())));
    let outs = outputs(&mut r);
    assert!(outs.contains(&Output::Store(c.clone())));
    assert_eq!(answers(&outs), vec![(Requester::Local(7), Ok(c.address()))]);
    assert_eq!(r.fetches(), 0);
    assert_eq!(r.poll_timeout(), None, "nothing left to wait for");
}

#[test]
fn many_readers_and_forwarded_requests_share_one_fetch() {
    let c = chunk(2);
    let t = c.address().0[0];
    let mut r = core(t ^ 0x80, &[t ^ 1, t ^ 0x81]);
    let now = Instant::now();
    r.handle_local(now, c.address(), 1);
    r.handle_local(now, c.address(), 2);
    r.handle_request(now, addr(t ^ 0x81), 9, c.address(), 5);
    let outs = outputs(&mut r);
    let reqs = requests(&outs);
    assert_eq!(reqs.len(), 1, "one request however many wait: {outs:?}");
    r.handle_delivery(now, reqs[0].1, Ok(Some(c.clone())));
    let got = answers(&outputs(&mut r));
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|(_, res)| res == &Ok(c.address())));
    assert_eq!(r.stats().coalesced, 2);
}

#[test]
fn a_forwarder_asks_only_peers_closer_than_itself_and_never_the_requester() {
    let c = chunk(3);
    let t = c.address().0[0];
    // Own distance 0x10. Closer: 0x01 (the requester) and 0x08; farther: 0x20.
    let mut r = core(t ^ 0x10, &[t ^ 0x01, t ^ 0x08, t ^ 0x20]);
    let now = Instant::now();
    r.handle_request(now, addr(t ^ 0x01), 1, c.address(), 3);
    let reqs = requests(&outputs(&mut r));
    assert_eq!(reqs.len(), 1);
    assert_eq!(
        reqs[0].0,
        addr(t ^ 0x08),
        "the closest that is not the requester"
    );
    assert_eq!(reqs[0].2, 2, "one hop spent");
    r.handle_missing(now, reqs[0].1);
    let outs = outputs(&mut r);
    assert!(
        requests(&outs).is_empty(),
        "the farther peer is never asked: {outs:?}"
    );
    assert_eq!(
        answers(&outs),
        vec![(
            Requester::Peer {
                peer: addr(t ^ 0x01),
                token: 1
            },
            Err(RetrievalError::NotFound(c.address()))
        )]
    );
}

#[test]
fn a_reader_falls_back_peer_by_peer_up_to_its_attempts() {
    let c = chunk(4);
    let t = c.address().0[0];
    let peers: Vec<u8> = (1..=10).map(|i| t ^ i).collect();
    let mut r = core(t ^ 0x80, &peers);
    let now = Instant::now();
    r.handle_local(now, c.address(), 1);
    let mut asked = Vec::new();
    loop {
        let outs = outputs(&mut r);
        if let Some((peer, id, _)) = requests(&outs).first().copied() {
            asked.push(peer);
            r.handle_missing(now, id);
        } else {
            assert_eq!(
                answers(&outs),
                vec![(
                    Requester::Local(1),
                    Err(RetrievalError::NotFound(c.address()))
                )]
            );
            break;
        }
    }
    let expected: Vec<Address> = (1..=ORIGIN_ATTEMPTS).map(|i| addr(t ^ i as u8)).collect();
    assert_eq!(
        asked, expected,
        "nearest first, each once, {ORIGIN_ATTEMPTS} at most"
    );
}

#[test]
fn a_forwarder_gives_up_after_its_attempts() {
    let c = chunk(5);
    let t = c.address().0[0];
    let peers: Vec<u8> = (1..=6).map(|i| t ^ i).collect();
    let mut r = core(t ^ 0x40, &peers);
    let now = Instant::now();
    r.handle_request(now, addr(t ^ 0x7f), 1, c.address(), 4);
    let mut asked = 0;
    while let Some((_, id, _)) = requests(&outputs(&mut r)).first().copied() {
        asked += 1;
        r.handle_failure(now, id);
    }
    assert_eq!(asked, FORWARD_ATTEMPTS);
}

#[test]
fn a_wrong_chunk_penalizes_the_peer_and_the_next_one_is_asked() {
    let c = chunk(6);
    let t = c.address().0[0];
    let mut r = core(t ^ 0x80, &[t ^ 1, t ^ 2]);
    let now = Instant::now();
    r.handle_local(now, c.address(), 1);
    let first = requests(&outputs(&mut r))[0];
    r.handle_delivery(now, first.1, Ok(Some(chunk(999))));
    let outs = outputs(&mut r);
    assert!(outs.contains(&Output::Penalize {
        peer: addr(t ^ 1),
        fault: Fault::Invalid(c.address())
    }));
    assert!(
        !outs.iter().any(|o| matches!(o, Output::Store(_))),
        "nothing of a liar is stored"
    );
    let second = requests(&outs)[0];
    assert_eq!(second.0, addr(t ^ 2));
    r.handle_delivery(now, second.1, Err(Fault::Malformed("not a chunk")));
    let outs = outputs(&mut r);
    assert_eq!(
        answers(&outs),
        vec![(
            Requester::Local(1),
            Err(RetrievalError::NotFound(c.address()))
        )]
    );
    assert_eq!(r.stats().refused, 2);
    // The penalized peers are not asked again.
    r.handle_local(now, c.address(), 2);
    let outs = outputs(&mut r);
    assert!(requests(&outs).is_empty(), "{outs:?}");
}

#[test]
fn a_silent_peer_times_out_and_the_fetch_ends_at_its_deadline() {
    let c = chunk(7);
    let t = c.address().0[0];
    let config = RetrievalConfig {
        attempt_timeout: Duration::from_secs(4),
        fetch_timeout: Duration::from_secs(10),
    };
    let mut r = Retrieval::new(addr(t ^ 0x80), config);
    for i in 1..=5 {
        r.handle_connected(addr(t ^ i), false);
    }
    let start = Instant::now();
    r.handle_local(start, c.address(), 1);
    let mut asked = requests(&outputs(&mut r)).len();
    let mut now = start;
    let mut answer = None;
    while let Some(at) = r.poll_timeout() {
        assert!(at > now, "deadlines move forward");
        now = at;
        r.handle_timeout(now);
        let outs = outputs(&mut r);
        asked += requests(&outs).len();
        if let Some(a) = answers(&outs).pop() {
            answer = Some(a);
        }
    }
    assert_eq!(asked, 3, "at 0 s, 4 s and 8 s");
    assert_eq!(
        answer,
        Some((
            Requester::Local(1),
            Err(RetrievalError::Timeout(c.address()))
        ))
    );
    assert_eq!(now, start + Duration::from_secs(10));
    assert_eq!(
        r.stats().timeouts,
        3,
        "the third request's wait ends with the fetch"
    );
}

#[test]
fn a_late_answer_after_a_timeout_is_ignored() {
    let c = chunk(8);
    let t = c.address().0[0];
    let mut r = core(t ^ 0x80, &[t ^ 1, t ^ 2]);
    let now = Instant::now();
    r.handle_local(now, c.address(), 1);
    let first = requests(&outputs(&mut r))[0];
    let later = r.poll_timeout().expect("a deadline");
    r.handle_timeout(later);
    let second = requests(&outputs(&mut r))[0];
    assert!(!r.is_open(first.1));
    r.handle_delivery(later, first.1, Ok(Some(chunk(12345))));
    assert!(outputs(&mut r).is_empty(), "a stale answer does nothing");
    r.handle_delivery(later, second.1, Ok(Some(c.clone())));
    assert_eq!(
        answers(&outputs(&mut r)),
        vec![(Requester::Local(1), Ok(c.address()))]
    );
}

#[test]
fn a_request_from_a_peer_the_fetch_asked_is_a_loop() {
    let c = chunk(9);
    let t = c.address().0[0];
    let mut r = core(t ^ 0x80, &[t ^ 1]);
    let now = Instant::now();
    r.handle_local(now, c.address(), 1);
    let (asked, _, _) = requests(&outputs(&mut r))[0];
    r.handle_request(now, asked, 5, c.address(), 10);
    assert_eq!(
        answers(&outputs(&mut r)),
        vec![(
            Requester::Peer {
                peer: asked,
                token: 5
            },
            Err(RetrievalError::NotFound(c.address()))
        )]
    );
}

#[test]
fn the_hop_budget_ends_forwarding() {
    let c = chunk(10);
    let t = c.address().0[0];
    let mut r = core(t ^ 0x80, &[t ^ 1]);
    let now = Instant::now();
    r.handle_request(now, addr(t ^ 0x90), 1, c.address(), 0);
    let outs = outputs(&mut r);
    assert!(requests(&outs).is_empty());
    assert_eq!(
        answers(&outs)[0].1,
        Err(RetrievalError::HopLimit(c.address()))
    );
}

#[test]
fn light_peers_are_never_asked() {
    let c = chunk(11);
    let t = c.address().0[0];
    let mut r = Retrieval::new(addr(t ^ 0x80), RetrievalConfig::default());
    r.handle_connected(addr(t ^ 1), true);
    r.handle_connected(addr(t ^ 2), false);
    r.handle_local(Instant::now(), c.address(), 1);
    assert_eq!(requests(&outputs(&mut r))[0].0, addr(t ^ 2));
}

#[test]
fn a_disconnected_peer_fails_its_request() {
    let c = chunk(12);
    let t = c.address().0[0];
    let mut r = core(t ^ 0x80, &[t ^ 1, t ^ 2]);
    let now = Instant::now();
    r.handle_local(now, c.address(), 1);
    let first = requests(&outputs(&mut r))[0];
    r.handle_disconnected(now, first.0);
    let next = requests(&outputs(&mut r));
    assert_eq!(next[0].0, addr(t ^ 2));
}

#[test]
fn fetches_and_waiters_are_bounded() {
    let t = 0u8;
    let mut r = core(0x80, &[1]);
    let now = Instant::now();
    for i in 0..MAX_FETCHES {
        let mut a = addr(t);
        a.0[1..9].copy_from_slice(&(i as u64).to_le_bytes());
        r.handle_local(now, a, i as u64);
    }
    assert_eq!(r.fetches(), MAX_FETCHES);
    outputs(&mut r);
    let extra = addr(0x55);
    r.handle_local(now, extra, 1);
    assert_eq!(
        answers(&outputs(&mut r)),
        vec![(Requester::Local(1), Err(RetrievalError::Busy(extra)))]
    );
    let mut a = addr(t);
    a.0[1..9].copy_from_slice(&0u64.to_le_bytes());
    for i in 1..MAX_WAITERS {
        r.handle_local(now, a, 10_000 + i as u64);
    }
    r.handle_local(now, a, 99_999);
    assert_eq!(
        answers(&outputs(&mut r)),
        vec![(Requester::Local(99_999), Err(RetrievalError::Busy(a)))]
    );
}

#[test]
fn wire_answers_round_trip() {
    use prost::Message;
    let c = chunk(13);
    let bytes = retrieval::encode_answer(&Ok(c.clone())).encode_to_vec();
    assert_eq!(retrieval::decode_delivery(&bytes), Ok(Some(c.clone())));
    let err = retrieval::encode_answer(&Err(RetrievalError::NotFound(c.address())));
    assert_eq!(retrieval::decode_delivery(&err.encode_to_vec()), Ok(None));
    let req = tributary_wire::retrieval::Request {
        address: c.address().0.to_vec(),
        hops: 1000,
    };
    assert_eq!(
        retrieval::decode_request(&req.encode_to_vec()),
        Ok((c.address(), MAX_HOPS)),
        "a hop budget over the limit is capped"
    );
    let short = tributary_wire::retrieval::Request {
        address: vec![1; 31],
        hops: 1,
    };
    assert!(retrieval::decode_request(&short.encode_to_vec()).is_err());
}

proptest! {
    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..6000)) {
        let _ = retrieval::decode_delivery(&bytes);
        let _ = retrieval::decode_request(&bytes);
    }
}

#[test]
fn one_peer_cannot_take_every_fetch() {
    use tributary_stream::retrieval::MAX_PER_PEER;
    let hog = addr(0x90);
    let mut r = core(0x80, &[0x01]);
    let now = Instant::now();
    let chunk_addr = |i: usize| {
        let mut a = addr(0);
        a.0[1..9].copy_from_slice(&(i as u64).to_le_bytes());
        a
    };
    // The same chunk twice from one peer: the second is refused.
    r.handle_request(now, hog, 1, chunk_addr(0), 5);
    r.handle_request(now, hog, 2, chunk_addr(0), 5);
    let outs = outputs(&mut r);
    assert_eq!(
        answers(&outs),
        vec![(
            Requester::Peer {
                peer: hog,
                token: 2
            },
            Err(RetrievalError::Busy(chunk_addr(0)))
        )]
    );
    for i in 1..MAX_PER_PEER {
        r.handle_request(now, hog, 10 + i as u64, chunk_addr(i), 5);
    }
    assert!(answers(&outputs(&mut r)).is_empty());
    r.handle_request(now, hog, 999, chunk_addr(MAX_PER_PEER), 5);
    let refused = answers(&outputs(&mut r));
    assert_eq!(refused.len(), 1);
    assert!(matches!(refused[0].1, Err(RetrievalError::Busy(_))));
    // Another peer and a local reader still get fetches.
    r.handle_request(now, addr(0x91), 1, chunk_addr(5000), 5);
    r.handle_local(now, chunk_addr(5001), 1);
    assert_eq!(requests(&outputs(&mut r)).len(), 2);
    // Once the hog's fetches end, it may ask again.
    let later = now + Duration::from_secs(60);
    r.handle_timeout(later);
    outputs(&mut r);
    r.handle_request(later, hog, 1000, chunk_addr(7000), 5);
    assert_eq!(requests(&outputs(&mut r)).len(), 1);
}
