//! The push-sync messages (`proto/pushsync.proto`): a chunk delivery and its receipt.
//! Only the syntax is checked here; `tributary_stream::push` and
//! `tributary_overlay::identity` enforce the rest.

use prost::Message;

/// A pushed chunk.
#[derive(Clone, PartialEq, Message)]
pub struct Delivery {
    /// The chunk's wire form (span ‖ payload).
    #[prost(bytes = "vec", tag = "1")]
    pub chunk: Vec<u8>,
}

/// A storer's signed receipt, or (with `error`) why the push failed.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct Receipt {
    /// The chunk's address (32 bytes).
    #[prost(bytes = "vec", tag = "1")]
    pub address: Vec<u8>,
    /// Recoverable signature, 65 bytes.
    #[prost(bytes = "vec", tag = "2")]
    pub signature: Vec<u8>,
    /// The storer's overlay nonce (32 bytes).
    #[prost(bytes = "vec", tag = "3")]
    pub nonce: Vec<u8>,
    /// The storer's depth when it stored the chunk.
    #[prost(uint32, tag = "4")]
    pub depth: u32,
    /// Why the push failed (the other fields empty).
    #[prost(string, tag = "5")]
    pub error: String,
}
