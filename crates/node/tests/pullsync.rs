//! Hostile peers on `/tributary/pullsync/1` against a real node on 127.0.0.1: a hand-driven
//! libp2p peer completes the overlay handshake, then sends a malformed pull-sync request, or
//! serves the node a chunk other than the one it offered. Either way the node disconnects it
//! and stores nothing from it.

mod common;

use std::time::Duration;

use common::rogue::{self, Seen};
use common::{Node, eventually};
use libp2p::request_response::{Event, Message as RrMessage};
use libp2p::swarm::SwarmEvent;
use prost::Message;
use tributary_chunk::{Chunk, proximity};
use tributary_node::runtime::BehaviourEvent;
use tributary_wire::pullsync::{Cursors, Delivery, Offer, Request, Response, request, response};

/// How the rogue answers the node's pull-sync requests.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Script {
    /// Sends one malformed request of its own once connected; answers nothing.
    MalformedRequest,
    /// Offers one chunk of its bin 0 and delivers another.
    WrongChunk,
}

/// Runs a rogue against `addr` until the node closes the connection (true) or 20 s pass.
fn rogue(addr: &str, secret: u8, script: Script) -> bool {
    let own = rogue::overlay(secret);
    // A chunk the rogue's bin 0 could hold, and the one it delivers instead.
    let offered = (0u32..)
        .map(|i| Chunk::new(4, &i.to_le_bytes()).expect("chunk"))
        .find(|c| proximity(&own, &c.address()) == 0)
        .expect("a chunk of bin 0");
    let delivered = Chunk::new(5, b"other").expect("chunk");
    let mut sent_garbage = false;
    rogue::run(addr, secret, |swarm, node, seen| {
        match seen {
            Seen::Ready if script == Script::MalformedRequest && !sent_garbage => {
                sent_garbage = true;
                swarm
                    .behaviour_mut()
                    .pullsync_mut()
                    .send_request(&node, vec![0xFF; 40]);
            }
            Seen::Event(event) if script == Script::WrongChunk => {
                if let SwarmEvent::Behaviour(BehaviourEvent::Pullsync(Event::Message {
                    message:
                        RrMessage::Request {
                            request, channel, ..
                        },
                    ..
                })) = *event
                    && let Some(answer) = answer(&request, &offered, &delivered)
                {
                    let _ = swarm
                        .behaviour_mut()
                        .pullsync_mut()
                        .send_response(channel, answer.encode_to_vec());
                }
            }
            _ => {}
        }
        None
    })
}

/// The lying upstream's answer: a cursor of 1 in bin 0, an offer of `offered`, a delivery of
/// `delivered`; live Gets are left waiting.
fn answer(bytes: &[u8], offered: &Chunk, delivered: &Chunk) -> Option<Response> {
    let message = Request::decode(bytes).ok()?.message?;
    let m = match message {
        request::Message::Cursors(_) => {
            let mut cursors = vec![0; 32];
            cursors[0] = 1;
            response::Message::Cursors(Cursors { cursors, epoch: 1 })
        }
        request::Message::Get(g) if g.bin == 0 && g.start == 1 && g.end == 1 => {
            response::Message::Offer(Offer {
                topmost: 1,
                addresses: offered.address().0.to_vec(),
            })
        }
        request::Message::Get(_) => return None,
        request::Message::Want(_) => response::Message::Delivery(Delivery {
            chunks: vec![delivered.data().to_vec()],
        }),
    };
    Some(Response::new(m))
}

#[test]
fn a_peer_sending_a_malformed_pull_request_is_disconnected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Node::start(dir.path());
    assert!(
        rogue(&a.addr(), 21, Script::MalformedRequest),
        "the node kept a peer that sent a malformed pull-sync request"
    );
    eventually(Duration::from_secs(5), "counted", || {
        a.metric("tributary_pullsync_refused_requests_total") == 1.0
    });
}

#[test]
fn a_peer_delivering_another_chunk_than_it_offered_is_disconnected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Node::start(dir.path());
    assert!(
        rogue(&a.addr(), 22, Script::WrongChunk),
        "the node kept a peer that delivered a chunk it did not offer"
    );
    eventually(Duration::from_secs(5), "counted", || {
        a.metric("tributary_pullsync_refused_total") == 1.0
    });
    assert_eq!(a.metric("tributary_pullsync_delivered_total"), 0.0);
    assert_eq!(
        a.get_json("/reserve")["chunks"],
        0,
        "nothing from the liar was stored"
    );
}
