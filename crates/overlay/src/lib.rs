//! Swarm's overlay network, sans-IO.
//!
//! - [`identity`]: the node key, overlay addresses and signed peer records (bee's
//!   `BzzAddress`).
//! - [`kademlia`]: the Kademlia table — bins, depth, saturation, which peer to dial, pruning,
//!   redial backoff, nearest-first iteration, health against a god's-eye view.
//! - [`protocol`]: the [`Overlay`] core — handshake, hive gossip, dialling — driven by the node
//!   runtime over libp2p and by the simulator.
//!
//! Facts: `research/swarm.md` §1. Nothing here does IO, reads a clock or draws unseeded
//! randomness.

pub mod identity;
pub mod kademlia;
pub mod protocol;

pub use identity::{Identity, NodeKey, RecordError, VerifiedRecord, verify_record};
pub use kademlia::{Added, Health, Kademlia, KademliaConfig, Topology};
pub use protocol::{
    DisconnectReason, Output, Overlay, OverlayConfig, OverlayError, OverlayStats, Refusal,
};
