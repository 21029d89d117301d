//! The retrieval messages (`proto/retrieval.proto`): a request for one chunk and its answer.
//! Only the syntax is checked here; `tributary_stream::retrieval` enforces the rest.

use prost::Message;

/// A request for one chunk.
#[derive(Clone, PartialEq, Message)]
pub struct Request {
    /// The chunk's address (32 bytes).
    #[prost(bytes = "vec", tag = "1")]
    pub address: Vec<u8>,
    /// How many more times the receiver may forward the request.
    #[prost(uint32, tag = "2")]
    pub hops: u32,
}

/// The answer: the chunk, or (empty chunk) why there is none.
#[derive(Clone, PartialEq, Message)]
pub struct Delivery {
    /// The chunk's wire form (span ‖ payload), empty when not found.
    #[prost(bytes = "vec", tag = "1")]
    pub chunk: Vec<u8>,
    /// Why there is no chunk.
    #[prost(string, tag = "2")]
    pub error: String,
}
