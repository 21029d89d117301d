//! Retrieval between real nodes on 127.0.0.1: a light node reads a file it does not hold
//! from its full peer, caching nothing; a missing chunk is a clean 404; a peer that
//! delivers another chunk than the one asked for, or sends a malformed request, is
//! disconnected and nothing of it is stored.

mod common;

use std::time::Duration;

use common::rogue::{self, Seen};
use common::{Node, agent, data, eventually};
use libp2p::request_response::{Event, Message as RrMessage};
use libp2p::swarm::SwarmEvent;
use prost::Message;
use tributary_chunk::Chunk;
use tributary_node::runtime::BehaviourEvent;
use tributary_wire::retrieval::Delivery;

fn upload(node: &Node, body: &[u8]) -> String {
    let text = agent()
        .post(&format!("{}/bytes", node.base))
        .send(body)
        .expect("POST /bytes")
        .body_mut()
        .read_to_string()
        .expect("body");
    let json: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    json["reference"].as_str().expect("reference").to_owned()
}

fn get(node: &Node, path: &str) -> (u16, Vec<u8>) {
    let mut response = agent()
        .get(&format!("{}{path}", node.base))
        .call()
        .expect("GET");
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_vec().expect("body");
    (status, body)
}

#[test]
fn a_light_node_reads_a_file_from_its_full_peer_and_caches_nothing() {
    let dirs = [
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    ];
    let full = Node::start(dirs[0].path());
    let body = data(300_000, 5);
    let reference = upload(&full, &body);
    let light = Node::start_light(dirs[1].path(), &[full.addr()]);
    eventually(
        Duration::from_secs(20),
        "the light node is connected",
        || {
            light.get_json("/peers")["peers"]
                .as_array()
                .is_some_and(|p| !p.is_empty())
        },
    );

    let (status, _) = get(&light, &format!("/bytes/{reference}?local=true"));
    assert_eq!(status, 404, "the light node holds none of it");
    let (status, got) = get(&light, &format!("/bytes/{reference}"));
    assert_eq!(status, 200);
    assert!(got == body, "the file read through retrieval differs");
    let (status, chunk) = get(&light, &format!("/chunks/{reference}"));
    assert_eq!(status, 200);
    Chunk::validate(reference.parse().expect("address"), chunk).expect("a valid chunk");

    assert_eq!(
        light.get_json("/reserve")["chunks"],
        0,
        "a light node caches nothing"
    );
    let chunks = 75.0; // 300,000 bytes: 74 leaves and their root
    assert!(light.metric("tributary_retrieval_delivered_total") >= chunks);
    assert!(full.metric("tributary_retrieval_served_total") >= chunks);
    assert_eq!(light.metric("tributary_retrieval_refused_total"), 0.0);
}

#[test]
fn a_chunk_no_peer_has_is_a_404() {
    let dirs = [
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    ];
    let full = Node::start(dirs[0].path());
    let light = Node::start_light(dirs[1].path(), &[full.addr()]);
    eventually(Duration::from_secs(20), "connected", || {
        light.get_json("/peers")["peers"]
            .as_array()
            .is_some_and(|p| !p.is_empty())
    });
    let missing = Chunk::new(3, b"abc").expect("chunk").address();
    let (status, body) = get(&light, &format!("/chunks/{missing}"));
    assert_eq!(status, 404);
    let json: serde_json::Value = serde_json::from_slice(&body).expect("JSON error");
    assert!(
        json["message"]
            .as_str()
            .is_some_and(|m| m.contains("not found")),
        "{json}"
    );
    let (status, _) = get(&light, &format!("/chunks/{missing}?local=maybe"));
    assert_eq!(status, 400);
    assert_eq!(full.metric("tributary_retrieval_forwarded_total"), 1.0);
}

/// A rogue full peer that answers every retrieval request with `answer`; true when the node
/// disconnects it.
fn rogue_answering(addr: &str, secret: u8, answer: &[u8], ready: impl FnOnce()) -> bool {
    let mut ready = Some(ready);
    rogue::run(addr, secret, |swarm, _, seen| {
        match seen {
            Seen::Ready => {
                if let Some(f) = ready.take() {
                    f();
                }
            }
            Seen::Event(event) => {
                if let SwarmEvent::Behaviour(BehaviourEvent::Retrieval(Event::Message {
                    message: RrMessage::Request { channel, .. },
                    ..
                })) = *event
                {
                    let _ = swarm
                        .behaviour_mut()
                        .retrieval_mut()
                        .send_response(channel, answer.to_vec());
                }
            }
        }
        None
    })
}

#[test]
fn a_peer_delivering_another_chunk_is_disconnected_and_nothing_is_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path());
    let wanted = Chunk::new(3, b"abc").expect("chunk").address();
    let wrong = Delivery {
        chunk: Chunk::new(3, b"xyz").expect("chunk").into_data(),
        error: String::new(),
    }
    .encode_to_vec();
    let base = node.base.clone();
    let reader = std::sync::Mutex::new(None);
    let disconnected = rogue_answering(&node.addr(), 31, &wrong, || {
        // Once the rogue is a peer, read a chunk nobody has: the node asks the rogue.
        *reader.lock().expect("lock") = Some(std::thread::spawn(move || {
            agent()
                .get(&format!("{base}/chunks/{wanted}"))
                .call()
                .expect("GET")
                .status()
                .as_u16()
        }));
    });
    assert!(
        disconnected,
        "the node kept a peer that delivered a wrong chunk"
    );
    let status = reader
        .lock()
        .expect("lock")
        .take()
        .expect("reader started")
        .join()
        .expect("reader");
    assert_eq!(status, 404);
    assert_eq!(node.metric("tributary_retrieval_refused_total"), 1.0);
    assert_eq!(
        node.get_json("/reserve")["chunks"],
        0,
        "nothing of the liar stored"
    );
}

#[test]
fn a_peer_sending_a_malformed_retrieval_request_is_disconnected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path());
    let mut sent = false;
    let disconnected = rogue::run(&node.addr(), 32, |swarm, peer, seen| {
        if matches!(seen, Seen::Ready) && !sent {
            sent = true;
            swarm
                .behaviour_mut()
                .retrieval_mut()
                .send_request(&peer, vec![0x0a, 3, 1, 2, 3]); // a 3-byte address
        }
        None
    });
    assert!(
        disconnected,
        "the node kept a peer that sent a malformed request"
    );
    eventually(Duration::from_secs(5), "counted", || {
        node.metric("tributary_retrieval_refused_requests_total") == 1.0
    });
}
