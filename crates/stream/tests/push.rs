//! The push-sync core against scripted peers: who stores, where a push goes, which receipts
//! are accepted, the fallbacks and the bounds.

use std::time::Instant;

use proptest::prelude::*;
use tributary_chunk::{Address, Chunk, proximity};
use tributary_stream::pull::Fault;
use tributary_stream::push::{
    self, FORWARD_ATTEMPTS, ORIGIN_ATTEMPTS, Output, PushConfig, PushError, PushSync, Receipt,
    Requester,
};

/// The chunk's address with its first byte replaced by `b` (a peer at a chosen distance).
fn near(c: &Chunk, b: u8) -> Address {
    let mut a = c.address();
    a.0[0] ^= b;
    a
}

fn chunk(n: u32) -> Chunk {
    Chunk::new(4, &n.to_le_bytes()).expect("chunk")
}

fn core(own: Address, depth: u8, peers: &[Address]) -> PushSync {
    let mut p = PushSync::new(own, false, PushConfig::default());
    p.handle_depth(depth);
    for &peer in peers {
        p.handle_connected(peer, false);
    }
    p
}

fn outputs(p: &mut PushSync) -> Vec<Output> {
    std::iter::from_fn(|| p.poll_output()).collect()
}

fn requests(outs: &[Output]) -> Vec<(Address, u64)> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Request { peer, id, .. } => Some((*peer, *id)),
            _ => None,
        })
        .collect()
}

fn receipt(c: &Chunk, storer: Address, depth: u8) -> Receipt {
    Receipt {
        address: c.address(),
        storer,
        depth,
        wire: tributary_wire::pushsync::Receipt::default(),
    }
}

fn answers(outs: &[Output]) -> Vec<(Requester, Result<Address, PushError>)> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Answer { requester, result } => Some((
                *requester,
                result.as_ref().map(|r| r.storer).map_err(|e| *e),
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn a_node_of_the_chunks_neighbourhood_stores_it_and_signs() {
    let c = chunk(1);
    let own = near(&c, 0x01); // proximity 7 with the chunk
    let mut p = core(own, 3, &[near(&c, 0x80)]);
    let from = near(&c, 0x80);
    p.handle_request(Instant::now(), from, 5, c.clone());
    assert_eq!(
        outputs(&mut p),
        vec![Output::Store {
            requester: Requester::Peer {
                peer: from,
                token: 5
            },
            chunk: c,
            depth: 3
        }]
    );
}

#[test]
fn a_node_outside_forwards_to_the_closest_closer_peer_and_relays_the_receipt() {
    let c = chunk(2);
    let own = near(&c, 0x40); // proximity 1
    let (closer, closest) = (near(&c, 0x10), near(&c, 0x01));
    let mut p = core(own, 4, &[near(&c, 0x20), closer, closest, near(&c, 0x80)]);
    let now = Instant::now();
    // The requester is the closest peer of all but is never pushed back to.
    p.handle_request(now, closest, 7, c.clone());
    let reqs = requests(&outputs(&mut p));
    assert_eq!(reqs.len(), 1);
    assert_eq!(
        reqs[0].0, closer,
        "the closest peer closer than this node, bar the requester"
    );
    let storer = near(&c, 0x03);
    p.handle_receipt(now, reqs[0].1, Ok(Some(receipt(&c, storer, 4))));
    assert_eq!(
        answers(&outputs(&mut p)),
        vec![(
            Requester::Peer {
                peer: closest,
                token: 7
            },
            Ok(storer)
        )]
    );
    assert_eq!(p.pushes(), 0);
}

#[test]
fn invalid_receipts_penalize_the_peer_and_the_next_one_is_tried() {
    let c = chunk(3);
    let own = near(&c, 0x80); // proximity 0, depth 2: not in its neighbourhood
    let peers = [
        near(&c, 0x01),
        near(&c, 0x02),
        near(&c, 0x04),
        near(&c, 0x08),
    ];
    let mut p = core(own, 2, &peers);
    let now = Instant::now();
    p.handle_local(now, c.clone(), 1);
    let mut id = requests(&outputs(&mut p))[0].1;
    let outsider = near(&c, 0x80); // proximity 0 with the chunk
    let bad = [
        // Another chunk's receipt.
        Receipt {
            address: chunk(99).address(),
            ..receipt(&c, near(&c, 0x01), 2)
        },
        // A storer outside the depth it claims.
        receipt(&c, outsider, 2),
    ];
    for r in bad {
        p.handle_receipt(now, id, Ok(Some(r)));
        let outs = outputs(&mut p);
        assert!(
            outs.iter().any(|o| matches!(o, Output::Penalize { .. })),
            "{outs:?}"
        );
        id = requests(&outs)[0].1;
    }
    p.handle_receipt(now, id, Ok(Some(receipt(&c, near(&c, 0x01), 2))));
    assert_eq!(
        answers(&outputs(&mut p)),
        vec![(Requester::Local(1), Ok(near(&c, 0x01)))]
    );
    assert_eq!(p.stats().refused, 2);
}

#[test]
fn a_receipt_too_shallow_is_tried_elsewhere_without_a_penalty() {
    let c = chunk(13);
    let mut p = core(near(&c, 0x80), 5, &[near(&c, 0x01), near(&c, 0x02)]);
    let now = Instant::now();
    p.handle_local(now, c.clone(), 1);
    let first = requests(&outputs(&mut p))[0].1;
    // An honest storer at depth 1 (its table still filling) with proximity 1 to the chunk:
    // true, but not proof enough for a node at depth 5.
    p.handle_receipt(now, first, Ok(Some(receipt(&c, near(&c, 0x40), 1))));
    let outs = outputs(&mut p);
    assert!(
        !outs.iter().any(|o| matches!(o, Output::Penalize { .. })),
        "{outs:?}"
    );
    assert_eq!(requests(&outs).len(), 1, "tried elsewhere");
    assert_eq!(p.stats().shallow, 1);
}

#[test]
fn a_malformed_answer_penalizes_and_a_refusal_does_not() {
    let c = chunk(4);
    let mut p = core(
        near(&c, 0x80),
        1,
        &[near(&c, 0x01), near(&c, 0x02), near(&c, 0x03)],
    );
    let now = Instant::now();
    p.handle_local(now, c, 1);
    let first = requests(&outputs(&mut p))[0].1;
    p.handle_receipt(now, first, Ok(None));
    let outs = outputs(&mut p);
    assert!(!outs.iter().any(|o| matches!(o, Output::Penalize { .. })));
    let second = requests(&outs)[0].1;
    p.handle_receipt(now, second, Err(Fault::Malformed("not a receipt")));
    assert!(
        outputs(&mut p)
            .iter()
            .any(|o| matches!(o, Output::Penalize { .. }))
    );
}

#[test]
fn the_uploader_pushes_first_even_from_inside_the_neighbourhood() {
    let c = chunk(5);
    let own = near(&c, 0x02); // proximity 6, depth 2: its own neighbourhood
    let farther = near(&c, 0x40);
    let mut p = core(own, 2, &[farther]);
    p.handle_local(Instant::now(), c.clone(), 1);
    let outs = outputs(&mut p);
    assert!(
        matches!(
            outs.as_slice(),
            [Output::Store {
                requester: Requester::Local(1),
                ..
            }]
        ),
        "no peer closer and the chunk is its own: it signs itself: {outs:?}"
    );
    let closer = near(&c, 0x01);
    let mut p = core(own, 2, &[farther, closer]);
    p.handle_local(Instant::now(), c, 1);
    assert_eq!(requests(&outputs(&mut p))[0].0, closer);
}

#[test]
fn an_uploader_outside_pushes_to_a_farther_peer_when_none_is_closer() {
    let c = chunk(6);
    let own = near(&c, 0x40); // proximity 1, depth 3: not its neighbourhood
    let farther = near(&c, 0x80);
    let mut p = core(own, 3, &[farther]);
    p.handle_local(Instant::now(), c, 1);
    assert_eq!(requests(&outputs(&mut p))[0].0, farther);
}

#[test]
fn a_forwarder_with_no_closer_peer_stores_the_chunk_itself_and_claims_no_deeper_than_it_is() {
    let c = chunk(7);
    let own = near(&c, 0x40); // proximity 1 with the chunk, depth 5
    let from = near(&c, 0x80);
    let mut p = core(own, 5, &[from]);
    p.handle_request(Instant::now(), from, 3, c.clone());
    let outs = outputs(&mut p);
    assert!(
        matches!(
            outs.as_slice(),
            [Output::Store {
                requester: Requester::Peer { .. },
                depth: 1,
                ..
            }]
        ),
        "{outs:?}"
    );
    // Its receipt passes the checks of the node it came from: no penalty for an honest storer.
    let mut upstream = core(from, 1, &[own]);
    let now = Instant::now();
    upstream.handle_local(now, c.clone(), 1);
    let id = requests(&outputs(&mut upstream))[0].1;
    upstream.handle_receipt(now, id, Ok(Some(receipt(&c, own, 1))));
    assert_eq!(
        answers(&outputs(&mut upstream)),
        vec![(Requester::Local(1), Ok(own))]
    );
}

#[test]
fn attempts_are_bounded_and_the_push_ends_without_a_receipt() {
    let c = chunk(8);
    let peers: Vec<Address> = (1..=12).map(|i| near(&c, i)).collect();
    let mut p = core(near(&c, 0x80), 0, &peers);
    let now = Instant::now();
    p.handle_local(now, c.clone(), 1);
    let mut tried = 0;
    let last = loop {
        let outs = outputs(&mut p);
        match requests(&outs).first() {
            Some(&(_, id)) => {
                tried += 1;
                p.handle_failure(now, id);
            }
            None => break answers(&outs),
        }
    };
    assert_eq!(tried, ORIGIN_ATTEMPTS);
    assert_eq!(
        last,
        vec![(Requester::Local(1), Err(PushError::NoPeer(c.address())))]
    );

    let mut p = core(near(&c, 0x80), 3, &peers);
    p.handle_request(now, near(&c, 0xc0), 1, c);
    let mut tried = 0;
    while let Some(&(_, id)) = requests(&outputs(&mut p)).first() {
        tried += 1;
        p.handle_failure(now, id);
    }
    assert_eq!(tried, FORWARD_ATTEMPTS);
}

#[test]
fn a_silent_peer_times_out_and_the_next_is_tried() {
    let c = chunk(9);
    let mut p = core(near(&c, 0x80), 0, &[near(&c, 1), near(&c, 2)]);
    let now = Instant::now();
    p.handle_local(now, c.clone(), 1);
    let first = requests(&outputs(&mut p))[0];
    let at = p.poll_timeout().expect("a deadline");
    p.handle_timeout(at);
    let second = requests(&outputs(&mut p))[0];
    assert_eq!(second.0, near(&c, 2));
    assert!(!p.is_open(first.1));
    // A late receipt from the first peer is ignored.
    p.handle_receipt(at, first.1, Ok(Some(receipt(&c, near(&c, 1), 0))));
    assert!(outputs(&mut p).is_empty());
}

#[test]
fn one_push_per_chunk_however_many_ask() {
    let c = chunk(10);
    let mut p = core(near(&c, 0x80), 0, &[near(&c, 1)]);
    let now = Instant::now();
    p.handle_local(now, c.clone(), 1);
    p.handle_local(now, c.clone(), 2);
    let reqs = requests(&outputs(&mut p));
    assert_eq!(reqs.len(), 1);
    p.handle_receipt(now, reqs[0].1, Ok(Some(receipt(&c, near(&c, 1), 0))));
    assert_eq!(answers(&outputs(&mut p)).len(), 2);
}

#[test]
fn light_peers_are_never_pushed_to_and_a_light_node_never_stores() {
    let c = chunk(11);
    let mut p = PushSync::new(near(&c, 0x01), true, PushConfig::default());
    p.handle_connected(near(&c, 0x02), true);
    p.handle_connected(near(&c, 0x80), false);
    p.handle_local(Instant::now(), c, 1);
    let reqs = requests(&outputs(&mut p));
    assert_eq!(reqs, vec![(reqs[0].0, reqs[0].1)]);
    assert_ne!(reqs[0].0, near(&chunk(11), 0x02), "never a light peer");
    assert!(proximity(&reqs[0].0, &chunk(11).address()) == 0);
}

#[test]
fn wire_round_trips() {
    use prost::Message;
    let c = chunk(12);
    let d = tributary_wire::pushsync::Delivery {
        chunk: c.data().to_vec(),
    };
    assert_eq!(push::decode_delivery(&d.encode_to_vec()), Ok(c));
    let err = push::encode_error("");
    assert_eq!(push::decode_receipt(&err.encode_to_vec()), Ok(None));
}

proptest! {
    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..6000)) {
        let _ = push::decode_delivery(&bytes);
        let _ = push::decode_receipt(&bytes);
    }
}
