//! Push-sync between real nodes on 127.0.0.1: a light node's upload reaches its full peers
//! with a valid receipt for every chunk; the tag counts it; a peer that forges a receipt is
//! disconnected and the upload reports the chunks it could not place.

mod common;

use std::time::Duration;

use common::rogue::{self, Seen};
use common::{Node, agent, data, eventually};
use libp2p::request_response::{Event, Message as RrMessage};
use libp2p::swarm::SwarmEvent;
use prost::Message;
use tributary_chunk::Address;
use tributary_node::runtime::BehaviourEvent;

/// POSTs `body` to `/bytes` with `swarm-deferred-upload: false`; the status and the JSON.
fn upload_waiting(node: &Node, body: &[u8]) -> (u16, serde_json::Value) {
    let mut r = agent()
        .post(&format!("{}/bytes", node.base))
        .header("swarm-deferred-upload", "false")
        .header("swarm-postage-batch-id", "00")
        .send(body)
        .expect("POST /bytes");
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().expect("body");
    (status, serde_json::from_str(&text).expect("JSON"))
}

fn peers(node: &Node) -> usize {
    node.get_json("/peers")["peers"]
        .as_array()
        .map_or(0, Vec::len)
}

#[test]
fn a_light_nodes_upload_is_pushed_to_its_full_peers_with_receipts() {
    let dirs: Vec<_> = (0..3)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let a = Node::start(dirs[0].path());
    let b = Node::start_with(dirs[1].path(), &[a.addr()], 1);
    eventually(Duration::from_secs(20), "a and b connected", || {
        peers(&a) == 1
    });
    let light = Node::start_light(dirs[2].path(), &[a.addr()]);
    eventually(Duration::from_secs(20), "the light node connected", || {
        peers(&light) >= 1
    });
    let body = data(200_000, 9);
    let (status, json) = upload_waiting(&light, &body);
    assert_eq!(status, 201, "{json}");
    let reference: Address = json["reference"]
        .as_str()
        .expect("reference")
        .parse()
        .expect("hex");
    let uid = json["tagUid"].as_u64().expect("tagUid");
    let tag = light.get_json(&format!("/tags/{uid}"));
    assert_eq!(
        tag["split"], 50,
        "200,000 bytes: 49 leaves and a root: {tag}"
    );
    assert_eq!(tag["synced"], tag["split"], "{tag}");
    assert_eq!(tag["failed"], 0);
    assert_eq!(tag["done"], true);
    assert_eq!(tag["address"], reference.to_string());
    // Every chunk has a storer among the full nodes (depth 0: the first full node it reaches).
    let stored =
        a.metric("tributary_pushsync_stored_total") + b.metric("tributary_pushsync_stored_total");
    assert!(stored >= 50.0, "{stored} chunks stored by push");
    assert_eq!(light.metric("tributary_pushsync_receipts_total"), 50.0);
    // And the file reads back from a full node that may have only part of it.
    let mut r = agent()
        .get(&format!("{}/bytes/{reference}", b.base))
        .call()
        .expect("GET");
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.body_mut().read_to_vec().expect("body") == body);
    // Tags list and delete.
    let list = light.get_json("/tags");
    assert_eq!(list["tags"].as_array().map(Vec::len), Some(1));
    let r = agent()
        .delete(&format!("{}/tags/{uid}", light.base))
        .call()
        .expect("DELETE");
    assert_eq!(r.status().as_u16(), 204);
    let r = agent()
        .get(&format!("{}/tags/{uid}", light.base))
        .call()
        .expect("GET");
    assert_eq!(r.status().as_u16(), 404);
}

#[test]
fn a_peer_forging_receipts_is_disconnected_and_the_upload_says_what_failed() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A light node whose only peer is the rogue: every push goes to it.
    let light = Node::start_light(dir.path(), &[]);
    let forger = tributary_overlay::Identity::from_secret(&[77; 32], [1; 32]).expect("key");
    let body = data(10_000, 3);
    let base = light.base.clone();
    let mut uploader = None;
    let disconnected = rogue::run(&light.addr(), 41, |swarm, _, seen| {
        match seen {
            Seen::Ready => {
                if uploader.is_none() {
                    let (base, body) = (base.clone(), body.clone());
                    uploader = Some(std::thread::spawn(move || {
                        let mut r = agent()
                            .post(&format!("{base}/bytes"))
                            .header("swarm-deferred-upload", "false")
                            .send(&body[..])
                            .expect("POST");
                        (
                            r.status().as_u16(),
                            r.body_mut().read_to_string().expect("body"),
                        )
                    }));
                }
            }
            Seen::Event(event) => {
                if let SwarmEvent::Behaviour(BehaviourEvent::Pushsync(Event::Message {
                    message:
                        RrMessage::Request {
                            request, channel, ..
                        },
                    ..
                })) = *event
                {
                    // A receipt signed by a key far from the chunk, claiming a deep depth.
                    let chunk = tributary_stream::push::decode_delivery(&request).expect("a push");
                    let receipt = forger.sign_receipt(&chunk.address(), 30, 1).expect("signs");
                    let _ = swarm
                        .behaviour_mut()
                        .pushsync_mut()
                        .send_response(channel, receipt.encode_to_vec());
                }
            }
        }
        None
    });
    assert!(disconnected, "the node kept a peer that forged a receipt");
    let (status, text) = uploader.expect("upload started").join().expect("uploader");
    assert_eq!(status, 502, "{text}");
    assert!(text.contains("no valid receipt"), "{text}");
    assert!(light.metric("tributary_pushsync_refused_total") >= 1.0);
}
