//! The overlay messages (`proto/overlay.proto`): handshake and hive gossip.

use prost::Message;

/// `PeerRecord`: a node's signed overlay address and underlays (bee's `BzzAddress`).
#[derive(Clone, PartialEq, Eq, Hash, Message)]
pub struct PeerRecord {
    /// The 32-byte overlay address.
    #[prost(bytes = "vec", tag = "1")]
    pub overlay: Vec<u8>,
    /// Binary multiaddrs.
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub underlays: Vec<Vec<u8>>,
    /// The 32-byte nonce.
    #[prost(bytes = "vec", tag = "3")]
    pub nonce: Vec<u8>,
    /// Unix seconds of signing.
    #[prost(uint64, tag = "4")]
    pub timestamp: u64,
    /// The 65-byte recoverable signature.
    #[prost(bytes = "vec", tag = "5")]
    pub signature: Vec<u8>,
}

/// `Handshake`.
#[derive(Clone, PartialEq, Message)]
pub struct Handshake {
    /// Protocol version.
    #[prost(uint32, tag = "1")]
    pub version: u32,
    /// Network id.
    #[prost(uint64, tag = "2")]
    pub network_id: u64,
    /// The sender's record.
    #[prost(message, optional, tag = "3")]
    pub record: Option<PeerRecord>,
    /// Whether the sender is a light node.
    #[prost(bool, tag = "4")]
    pub light: bool,
}

/// `Peers`: hive gossip.
#[derive(Clone, PartialEq, Message)]
pub struct Peers {
    /// The records.
    #[prost(message, repeated, tag = "1")]
    pub peers: Vec<PeerRecord>,
}

/// `Depth`: the sender's neighbourhood depth.
#[derive(Clone, PartialEq, Message)]
pub struct Depth {
    /// The depth.
    #[prost(uint32, tag = "1")]
    pub depth: u32,
}

/// `OverlayMessage`: what travels on `/tributary/overlay/1`.
#[derive(Clone, PartialEq, Message)]
pub struct OverlayMessage {
    /// The message.
    #[prost(oneof = "overlay_message::Message", tags = "1, 2, 3")]
    pub message: Option<overlay_message::Message>,
}

/// The oneof of [`OverlayMessage`].
pub mod overlay_message {
    /// Which message an [`super::OverlayMessage`] carries.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Message {
        /// A handshake.
        #[prost(message, tag = "1")]
        Handshake(super::Handshake),
        /// Hive gossip.
        #[prost(message, tag = "2")]
        Peers(super::Peers),
        /// The sender's depth.
        #[prost(message, tag = "3")]
        Depth(super::Depth),
    }
}
