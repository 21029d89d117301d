//! A hand-driven libp2p peer for hostile-peer tests: it dials a node, completes the overlay
//! handshake as a full node, then hands every event to a script.

use std::time::Duration;

use libp2p::futures::StreamExt;
use libp2p::request_response::{Event, Message as RrMessage};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm};
use prost::Message;
use tributary_chunk::Address;
use tributary_node::NodeIdentity;
use tributary_node::runtime::{Behaviour, BehaviourEvent};
use tributary_overlay::protocol::handshake;

/// What the script sees.
pub enum Seen {
    /// The node acknowledged the handshake: the rogue is its peer.
    Ready,
    /// Any other event.
    Event(Box<SwarmEvent<BehaviourEvent>>),
}

/// The overlay address of the rogue with this secret.
pub fn overlay(secret: u8) -> Address {
    identity(secret).identity.overlay(1)
}

fn identity(secret: u8) -> NodeIdentity {
    NodeIdentity::from_secret(&[secret; 32], [7; 32]).expect("key")
}

/// Runs a rogue against `addr` until the node closes the connection (true), the script says
/// to stop (its answer), or 20 s pass (false).
pub fn run(
    addr: &str,
    secret: u8,
    mut script: impl FnMut(&mut Swarm<Behaviour>, PeerId, Seen) -> Option<bool>,
) -> bool {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let id = identity(secret);
    let record = id.identity.sign_record(1, vec![], 1).expect("signs");
    let hello = handshake(1, record, false).encode_to_vec();
    let addr: Multiaddr = addr.parse().expect("multiaddr");
    let Some(libp2p::multiaddr::Protocol::P2p(node)) = addr.iter().last() else {
        panic!("address without /p2p")
    };
    rt.block_on(async move {
        let mut swarm = tributary_node::runtime::build_swarm(id.keypair, false).expect("swarm");
        swarm.dial(addr).expect("dials");
        let deadline = tokio::time::sleep(Duration::from_secs(20));
        tokio::pin!(deadline);
        loop {
            let event = tokio::select! {
                event = swarm.select_next_some() => event,
                () = &mut deadline => return false,
            };
            let seen = match event {
                SwarmEvent::ConnectionEstablished { .. } => {
                    swarm
                        .behaviour_mut()
                        .overlay_mut()
                        .send_request(&node, hello.clone());
                    continue;
                }
                SwarmEvent::ConnectionClosed {
                    num_established: 0, ..
                } => return true,
                SwarmEvent::Behaviour(BehaviourEvent::Overlay(Event::Message {
                    message: RrMessage::Request { channel, .. },
                    ..
                })) => {
                    // The node's handshake (or gossip): acknowledged.
                    let _ = swarm
                        .behaviour_mut()
                        .overlay_mut()
                        .send_response(channel, Vec::new());
                    Seen::Ready
                }
                other => Seen::Event(Box::new(other)),
            };
            if let Some(done) = script(&mut swarm, node, seen) {
                return done;
            }
        }
    })
}
