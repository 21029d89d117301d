//! The handshaken peers of a protocol driver, both ways: overlay → libp2p id for sending,
//! libp2p id → overlay for what arrives.

use std::collections::HashMap;

use libp2p::PeerId;
use tributary_chunk::Address;

/// Handshaken peers by overlay and by libp2p id.
#[derive(Debug, Default)]
pub struct PeerMap {
    by_overlay: HashMap<Address, PeerId>,
    by_id: HashMap<PeerId, Address>,
}

impl PeerMap {
    /// A peer completed its handshake.
    pub fn insert(&mut self, overlay: Address, peer: PeerId) {
        self.by_overlay.insert(overlay, peer);
        self.by_id.insert(peer, overlay);
    }

    /// A peer went away; its libp2p id, if it was known.
    pub fn remove(&mut self, overlay: &Address) -> Option<PeerId> {
        let peer = self.by_overlay.remove(overlay)?;
        self.by_id.remove(&peer);
        Some(peer)
    }

    /// The libp2p id of the peer at `overlay`.
    #[must_use]
    pub fn id(&self, overlay: &Address) -> Option<PeerId> {
        self.by_overlay.get(overlay).copied()
    }

    /// The overlay of the handshaken peer `peer`.
    #[must_use]
    pub fn overlay(&self, peer: &PeerId) -> Option<Address> {
        self.by_id.get(peer).copied()
    }

    /// Whether `peer` completed its handshake.
    #[must_use]
    pub fn contains(&self, peer: &PeerId) -> bool {
        self.by_id.contains_key(peer)
    }
}
