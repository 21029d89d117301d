//! Handshake slots per remote IP address: how many inbound connections from one address may be
//! waiting for their overlay handshake at once. The overlay core bounds such connections in
//! all (`OverlayConfig::max_inbound_handshakes`) but sees no addresses; this bound keeps one
//! host from taking every one of those slots.
//!
//! Loopback addresses are exempt: every node of a devnet, and every test, connects from
//! 127.0.0.1, and a host can only attack itself through them.

use std::collections::HashMap;
use std::net::IpAddr;

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

/// Inbound connections from one (non-loopback) address that may await their handshake.
pub const MAX_HANDSHAKES_PER_IP: usize = 4;

/// Which peers await their handshake, by the address they connected from.
#[derive(Debug, Default)]
pub struct HandshakeSlots {
    by_ip: HashMap<IpAddr, usize>,
    pending: HashMap<PeerId, IpAddr>,
}

/// The IP address of a multiaddr, if it has one.
#[must_use]
pub fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

impl HandshakeSlots {
    /// An inbound connection of `peer` from `remote`: whether it may await its handshake.
    /// Taking a slot it already holds is a no-op that succeeds.
    pub fn take(&mut self, peer: PeerId, remote: &Multiaddr) -> bool {
        let Some(ip) = ip_of(remote).filter(|ip| !ip.is_loopback()) else {
            return true;
        };
        if self.pending.contains_key(&peer) {
            return true;
        }
        let used = self.by_ip.entry(ip).or_default();
        if *used >= MAX_HANDSHAKES_PER_IP {
            return false;
        }
        *used += 1;
        self.pending.insert(peer, ip);
        true
    }

    /// `peer` completed its handshake or disconnected: its slot is free.
    pub fn release(&mut self, peer: &PeerId) {
        let Some(ip) = self.pending.remove(peer) else {
            return;
        };
        if let Some(used) = self.by_ip.get_mut(&ip) {
            *used -= 1;
            if *used == 0 {
                self.by_ip.remove(&ip);
            }
        }
    }

    /// Peers holding a slot.
    #[must_use]
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether no peer holds a slot.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_gets_a_few_slots_and_loopback_is_exempt() {
        let mut slots = HandshakeSlots::default();
        let remote: Multiaddr = "/ip4/192.0.2.7/tcp/4000".parse().expect("addr");
        let other: Multiaddr = "/ip6/2001:db8::1/udp/9/quic-v1".parse().expect("addr");
        let peers: Vec<PeerId> = (0..MAX_HANDSHAKES_PER_IP + 1)
            .map(|_| PeerId::random())
            .collect();
        for peer in &peers[..MAX_HANDSHAKES_PER_IP] {
            assert!(slots.take(*peer, &remote));
        }
        assert!(slots.take(peers[0], &remote), "a held slot is held");
        let last = peers[MAX_HANDSHAKES_PER_IP];
        assert!(!slots.take(last, &remote), "one address, too many");
        assert!(slots.take(last, &other), "another address has its own");
        slots.release(&last);
        slots.release(&peers[0]);
        assert!(slots.take(last, &remote), "a released slot is free again");
        let local: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().expect("addr");
        for _ in 0..100 {
            assert!(slots.take(PeerId::random(), &local));
        }
        assert_eq!(slots.len(), MAX_HANDSHAKES_PER_IP);
    }
}
