//! Real nodes on 127.0.0.1 (port 0) over libp2p: handshake, hive, `/topology`, restarts, and
//! refusals of a wrong network id, a forged overlay record and an oversized message.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Node, eventually};
use libp2p::futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId};
use prost::Message;
use tributary_chunk::{Address, proximity};
use tributary_node::NodeIdentity;
use tributary_overlay::Identity;
use tributary_wire::MAX_OVERLAY_MESSAGE_BYTES;
use tributary_wire::overlay::{Handshake, OverlayMessage, overlay_message};

fn connected(node: &Node) -> u64 {
    node.get_json("/topology")["connected"]
        .as_u64()
        .expect("connected")
}

fn overlay(node: &Node) -> Address {
    node.info["overlay"]
        .as_str()
        .expect("overlay")
        .parse()
        .expect("hex")
}

#[test]
fn nodes_handshake_gossip_and_report_their_topology() {
    let dirs: Vec<_> = (0..4)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let boot = Node::start(dirs[0].path());
    let mut nodes = vec![boot];
    for dir in &dirs[1..] {
        let addr = nodes[0].addr();
        nodes.push(Node::start_with(dir.path(), &[addr], 1));
    }
    // Four nodes: depth 0, every node a neighbour of every other. Nodes 1–3 dialled only the
    // bootnode, so knowing each other is hive's work.
    let took = eventually(Duration::from_secs(30), "all connected", || {
        nodes.iter().all(|n| {
            let t = n.get_json("/topology");
            t["connected"] == 3 && t["population"] == 3
        })
    });
    println!("4 nodes fully connected in {took:?}");
    let overlays: BTreeSet<Address> = nodes.iter().map(overlay).collect();
    for node in &nodes {
        let t = node.get_json("/topology");
        let base = overlay(node);
        assert_eq!(t["baseAddr"].as_str(), Some(base.to_string().as_str()));
        assert_eq!(t["depth"], 0);
        let bins = t["bins"].as_object().expect("bins");
        assert_eq!(bins.len(), 32);
        let mut seen = 0;
        for po in 0..32u8 {
            let bin = &bins[&format!("bin_{po}")];
            for peer in bin["connectedPeers"].as_array().expect("list") {
                let addr: Address = peer["address"]
                    .as_str()
                    .expect("address")
                    .parse()
                    .expect("hex");
                assert!(overlays.contains(&addr) && addr != base);
                assert_eq!(proximity(&base, &addr), po, "peer in the wrong bin");
                seen += 1;
            }
            assert_eq!(bin["population"], bin["connected"]);
        }
        assert_eq!(seen, 3);
        let peers = node.get_json("/peers");
        assert_eq!(peers["peers"].as_array().expect("peers").len(), 3);
        assert!(node.metric("tributary_overlay_handshakes_total") >= 3.0);
        assert!(node.get_json("/node")["peer_id"].is_string());
    }
}

#[test]
fn a_restarted_node_keeps_its_overlay_and_rejoins_without_the_bootnode() {
    let dirs: Vec<_> = (0..3)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let boot = Node::start(dirs[0].path());
    let b = Node::start_with(dirs[1].path(), &[boot.addr()], 1);
    let c = Node::start_with(dirs[2].path(), &[boot.addr()], 1);
    eventually(Duration::from_secs(30), "all connected", || {
        [&boot, &b, &c].iter().all(|n| connected(n) == 2)
    });
    let (b_overlay, b_peer) = (overlay(&b), b.info["peer_id"].clone());
    b.stop();
    // The bootnode goes away too: only B's persisted peer records can bring it back to C.
    boot.stop();
    let b = Node::start_with(dirs[1].path(), &[], 1);
    assert_eq!(overlay(&b), b_overlay);
    assert_eq!(b.info["peer_id"], b_peer);
    let c_overlay = overlay(&c).to_string();
    let took = eventually(Duration::from_secs(30), "B reconnects to C", || {
        let peers = b.get_json("/peers");
        peers["peers"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["address"].as_str() == Some(&c_overlay)))
    });
    println!("restarted node reconnected in {took:?}");
}

#[test]
fn nodes_connect_over_quic() {
    let dirs: Vec<_> = (0..2)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let quic = "/ip4/127.0.0.1/udp/0/quic-v1";
    let a = Node::start_on(dirs[0].path(), quic, &[], 1);
    assert!(a.addr().contains("/quic-v1/p2p/"), "{}", a.addr());
    let b = Node::start_on(dirs[1].path(), quic, &[a.addr()], 1);
    eventually(Duration::from_secs(20), "connected over QUIC", || {
        connected(&a) == 1 && connected(&b) == 1
    });
}

#[test]
fn another_network_id_is_refused() {
    let dirs: Vec<_> = (0..2)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let a = Node::start(dirs[0].path());
    let d = Node::start_with(dirs[1].path(), &[a.addr()], 2);
    eventually(Duration::from_secs(20), "refusal counted", || {
        a.metric("tributary_overlay_refusals_total") >= 1.0
    });
    assert_eq!(connected(&a), 0);
    assert_eq!(connected(&d), 0);
}

/// A hand-driven libp2p peer that speaks the overlay protocol with whatever bytes it likes.
struct Rogue {
    swarm: libp2p::Swarm<tributary_node::runtime::Behaviour>,
    identity: Identity,
    rt: tokio::runtime::Runtime,
}

impl Rogue {
    fn new(secret: u8) -> Self {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let id = NodeIdentity::from_secret(&[secret; 32], [7; 32]).expect("key");
        let swarm = rt
            .block_on(async { tributary_node::runtime::build_swarm(id.keypair, false) })
            .expect("swarm");
        Self {
            swarm,
            identity: id.identity,
            rt,
        }
    }

    /// Dials `addr`, sends `bytes` on the overlay protocol and returns whether the node closed
    /// the connection within 10 s.
    fn send_and_wait_for_close(&mut self, addr: &str, bytes: Vec<u8>) -> bool {
        let addr: Multiaddr = addr.parse().expect("multiaddr");
        let Some(libp2p::multiaddr::Protocol::P2p(peer)) = addr.iter().last() else {
            panic!("address without /p2p")
        };
        let peer: PeerId = peer;
        let swarm = &mut self.swarm;
        self.rt.block_on(async move {
            swarm.dial(addr).expect("dials");
            let mut sent = false;
            let deadline = tokio::time::sleep(Duration::from_secs(10));
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    event = swarm.select_next_some() => match event {
                        SwarmEvent::ConnectionEstablished { .. } if !sent => {
                            swarm.behaviour_mut().overlay_mut().send_request(&peer, bytes.clone());
                            sent = true;
                        }
                        SwarmEvent::ConnectionClosed { num_established: 0, .. } => return true,
                        _ => {}
                    },
                    () = &mut deadline => return false,
                }
            }
        })
    }
}

#[test]
fn forged_records_and_oversized_messages_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Node::start(dir.path());
    let mut rogue = Rogue::new(9);
    // A handshake claiming node A's own overlay under the rogue's signature.
    let mut record = rogue.identity.sign_record(1, vec![], 1).expect("signs");
    record.overlay = overlay(&a).0.to_vec();
    let forged = OverlayMessage {
        message: Some(overlay_message::Message::Handshake(Handshake {
            version: 1,
            network_id: 1,
            record: Some(record),
            light: false,
        })),
    };
    assert!(
        rogue.send_and_wait_for_close(&a.addr(), forged.encode_to_vec()),
        "forger not disconnected"
    );
    assert_eq!(a.metric("tributary_overlay_refusals_total"), 1.0);
    let oversized = vec![0u8; MAX_OVERLAY_MESSAGE_BYTES + 100];
    assert!(
        rogue.send_and_wait_for_close(&a.addr(), oversized),
        "oversized sender not disconnected"
    );
    assert_eq!(a.metric("tributary_overlay_refusals_total"), 2.0);
    assert_eq!(connected(&a), 0);
}

impl Rogue {
    /// Dials `addr` and sends `requests` on the state-sync protocol one after the other, each
    /// once the one before has an outcome. Returns how many had an outcome, and whether the
    /// node closed the connection (before all did, or within 15 s).
    fn sync_requests(&mut self, addr: &str, requests: &[Vec<u8>]) -> (usize, bool) {
        use libp2p::request_response::Event;
        use tributary_node::runtime::BehaviourEvent;
        let addr: Multiaddr = addr.parse().expect("multiaddr");
        let Some(libp2p::multiaddr::Protocol::P2p(peer)) = addr.iter().last() else {
            panic!("address without /p2p")
        };
        let swarm = &mut self.swarm;
        self.rt.block_on(async move {
            swarm.dial(addr).expect("dials");
            let mut done = 0;
            let deadline = tokio::time::sleep(Duration::from_secs(15));
            tokio::pin!(deadline);
            loop {
                let event = tokio::select! {
                    event = swarm.select_next_some() => event,
                    () = &mut deadline => return (done, false),
                };
                match event {
                    SwarmEvent::ConnectionEstablished { .. } => {}
                    SwarmEvent::Behaviour(BehaviourEvent::Statesync(
                        Event::OutboundFailure { .. } | Event::Message { .. },
                    )) => done += 1,
                    SwarmEvent::ConnectionClosed {
                        num_established: 0, ..
                    } => return (done, true),
                    _ => continue,
                }
                match requests.get(done) {
                    Some(r) => {
                        swarm
                            .behaviour_mut()
                            .statesync_mut()
                            .send_request(&peer, r.clone());
                    }
                    None => return (done, false),
                }
            }
        })
    }
}

/// Malformed state-sync requests are refused and counted; a peer that keeps sending them is
/// disconnected. A request over the request size cap is not even read as one.
#[test]
fn peers_sending_malformed_state_sync_requests_are_disconnected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Node::start(dir.path());
    let mut rogue = Rogue::new(11);
    let garbage = vec![vec![0xFF; 40]; 10];
    let (answered, closed) = rogue.sync_requests(&a.addr(), &garbage);
    assert!(closed, "a peer sending malformed requests is disconnected");
    assert!(
        answered <= tributary_node::runtime::MAX_SYNC_FAULTS as usize,
        "disconnected only after {answered} malformed requests"
    );
    eventually(Duration::from_secs(5), "counted", || {
        a.metric("tributary_statesync_faulty_peers_total") == 1.0
    });
    assert!(a.metric("tributary_statesync_refused_total") >= 3.0);
    // Requests over the request cap (far below the 2 MiB of an answer) count as malformed.
    let mut rogue = Rogue::new(12);
    let oversized = vec![vec![0u8; tributary_wire::MAX_SYNC_REQUEST_BYTES + 1]; 10];
    let (answered, closed) = rogue.sync_requests(&a.addr(), &oversized);
    assert!(closed, "a peer sending oversized requests is disconnected");
    assert!(answered <= tributary_node::runtime::MAX_SYNC_FAULTS as usize);
    eventually(Duration::from_secs(5), "counted", || {
        a.metric("tributary_statesync_faulty_peers_total") == 2.0
    });
}

/// CPU time this process has used, from `/proc/self/stat` (utime + stime, in clock ticks of
/// 1/100 s on Linux).
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("procfs");
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

/// An idle node (and its bootnode-less loop) sleeps between its ticks instead of spinning.
#[test]
fn idle_nodes_do_not_spin() {
    let dirs: Vec<_> = (0..2)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let a = Node::start(dirs[0].path());
    let b = Node::start_with(dirs[1].path(), &[a.addr()], 1);
    eventually(Duration::from_secs(20), "connected", || {
        connected(&a) == 1 && connected(&b) == 1
    });
    let before = cpu_ticks();
    std::thread::sleep(Duration::from_secs(3));
    let used = cpu_ticks() - before;
    // Two idle nodes tick twice a second each; a spinning loop burns ~300 ticks here.
    assert!(used < 60, "two idle nodes used {used} ticks of CPU in 3 s");
}
