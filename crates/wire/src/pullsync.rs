//! The pull-sync messages (`proto/pullsync.proto`): cursors, Get → Offer → Want → Delivery.
//! Only the syntax is checked here; `tributary_stream` enforces the rest.

use prost::Message;

/// A downstream node's request.
#[derive(Clone, PartialEq, Message)]
pub struct Request {
    /// The request.
    #[prost(oneof = "request::Message", tags = "1, 2, 3")]
    pub message: Option<request::Message>,
}

/// The oneof of [`Request`].
pub mod request {
    /// Which request a [`super::Request`] carries.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Message {
        /// The upstream's cursors and epoch.
        #[prost(message, tag = "1")]
        Cursors(super::CursorsRequest),
        /// An offer of a range of a bin.
        #[prost(message, tag = "2")]
        Get(super::Get),
        /// Chunks of an offer.
        #[prost(message, tag = "3")]
        Want(super::Want),
    }
}

/// An upstream node's answer.
#[derive(Clone, PartialEq, Message)]
pub struct Response {
    /// The answer.
    #[prost(oneof = "response::Message", tags = "1, 2, 3")]
    pub message: Option<response::Message>,
}

/// The oneof of [`Response`].
pub mod response {
    /// Which answer a [`super::Response`] carries.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Message {
        /// Cursors and epoch.
        #[prost(message, tag = "1")]
        Cursors(super::Cursors),
        /// An offer.
        #[prost(message, tag = "2")]
        Offer(super::Offer),
        /// Wanted chunks.
        #[prost(message, tag = "3")]
        Delivery(super::Delivery),
    }
}

/// `CursorsRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct CursorsRequest {}

/// `Cursors`: the last bin id per bin and the store's epoch.
#[derive(Clone, PartialEq, Message)]
pub struct Cursors {
    /// The last bin id of each bin, bin 0 first.
    #[prost(uint64, repeated, tag = "1")]
    pub cursors: Vec<u64>,
    /// The store's epoch.
    #[prost(uint64, tag = "2")]
    pub epoch: u64,
}

/// `Get`: an offer of bin ids `[start, end]` of `bin` (`end` 0: open-ended, live).
#[derive(Clone, PartialEq, Message)]
pub struct Get {
    /// The bin.
    #[prost(uint32, tag = "1")]
    pub bin: u32,
    /// First bin id.
    #[prost(uint64, tag = "2")]
    pub start: u64,
    /// Last bin id, 0 for open-ended.
    #[prost(uint64, tag = "3")]
    pub end: u64,
    /// The requester's own store epoch (0: none): chunks the upstream pulled from it in
    /// that epoch are not offered.
    #[prost(uint64, tag = "4")]
    pub epoch: u64,
}

/// `Offer`: addresses in bin-id order and the highest bin id covered.
#[derive(Clone, PartialEq, Message)]
pub struct Offer {
    /// Highest bin id the offer covers.
    #[prost(uint64, tag = "1")]
    pub topmost: u64,
    /// 32-byte addresses, concatenated.
    #[prost(bytes = "vec", tag = "2")]
    pub addresses: Vec<u8>,
}

/// `Want`: a bitvector over the `count` entries of `bin` from `start`.
#[derive(Clone, PartialEq, Message)]
pub struct Want {
    /// The bin.
    #[prost(uint32, tag = "1")]
    pub bin: u32,
    /// The offer's first bin id.
    #[prost(uint64, tag = "2")]
    pub start: u64,
    /// How many entries the offer held.
    #[prost(uint32, tag = "3")]
    pub count: u32,
    /// Bit i (LSB first) wants the i-th entry.
    #[prost(bytes = "vec", tag = "4")]
    pub bitvector: Vec<u8>,
    /// The epoch of the Get that brought the offer.
    #[prost(uint64, tag = "5")]
    pub epoch: u64,
}

/// `Delivery`: the wanted chunks, in bit order.
#[derive(Clone, PartialEq, Message)]
pub struct Delivery {
    /// Each chunk's wire data (span ‖ payload).
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub chunks: Vec<Vec<u8>>,
}

impl Request {
    /// Wraps a request.
    #[must_use]
    pub const fn new(message: request::Message) -> Self {
        Self {
            message: Some(message),
        }
    }
}

impl Response {
    /// Wraps an answer.
    #[must_use]
    pub const fn new(message: response::Message) -> Self {
        Self {
            message: Some(message),
        }
    }
}

/// Bitvectors as Swarm's `bitvector` package lays them out: bit `i` is bit `i % 8` (LSB first)
/// of byte `i / 8`.
pub mod bitvector {
    /// A bitvector of `len` bits with the bits of `set` on. Swarm allocates `len / 8 + 1`
    /// bytes; this takes the `len.div_ceil(8)` that hold them (a reader accepts either).
    #[must_use]
    pub fn encode(len: usize, set: impl IntoIterator<Item = usize>) -> Vec<u8> {
        let mut bytes = vec![0u8; len.div_ceil(8)];
        for i in set {
            if let Some(b) = bytes.get_mut(i / 8) {
                *b |= 1 << (i % 8);
            }
        }
        bytes
    }

    /// Whether bit `i` is on (bits beyond the bytes are off).
    #[must_use]
    pub fn get(bytes: &[u8], i: usize) -> bool {
        bytes.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0)
    }
}
