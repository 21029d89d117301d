//! The classic x/sync messages (`proto/sync.proto`): range and change proofs and the requests
//! for them, with cryftgo's `Request` wrapper.

use prost::Message;
use std::collections::BTreeMap;

/// `Request`: cryftgo's wrapper around the two request kinds.
#[derive(Clone, PartialEq, Message)]
pub struct Request {
    /// The wrapped request.
    #[prost(oneof = "request::Message", tags = "1, 2")]
    pub message: Option<request::Message>,
}

/// The oneof of [`Request`].
pub mod request {
    /// Which request a [`super::Request`] carries.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Message {
        /// A range-proof request.
        #[prost(message, tag = "1")]
        RangeProofRequest(super::SyncGetRangeProofRequest),
        /// A change-proof request.
        #[prost(message, tag = "2")]
        ChangeProofRequest(super::SyncGetChangeProofRequest),
    }
}

/// `SyncGetRangeProofRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct SyncGetRangeProofRequest {
    /// Root the proof is asked against (32 bytes).
    #[prost(bytes = "vec", tag = "1")]
    pub root_hash: Vec<u8>,
    /// Lower bound; absent means unbounded.
    #[prost(message, optional, tag = "2")]
    pub start_key: Option<MaybeBytes>,
    /// Upper bound; absent means unbounded.
    #[prost(message, optional, tag = "3")]
    pub end_key: Option<MaybeBytes>,
    /// Most key-values wanted.
    #[prost(uint32, tag = "4")]
    pub key_limit: u32,
    /// Most bytes wanted.
    #[prost(uint32, tag = "5")]
    pub bytes_limit: u32,
}

/// `SyncGetChangeProofRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct SyncGetChangeProofRequest {
    /// Root the requester has (32 bytes).
    #[prost(bytes = "vec", tag = "1")]
    pub start_root_hash: Vec<u8>,
    /// Root the requester wants (32 bytes).
    #[prost(bytes = "vec", tag = "2")]
    pub end_root_hash: Vec<u8>,
    /// Lower bound; absent means unbounded.
    #[prost(message, optional, tag = "3")]
    pub start_key: Option<MaybeBytes>,
    /// Upper bound; absent means unbounded.
    #[prost(message, optional, tag = "4")]
    pub end_key: Option<MaybeBytes>,
    /// Most key changes wanted.
    #[prost(uint32, tag = "5")]
    pub key_limit: u32,
    /// Most bytes wanted.
    #[prost(uint32, tag = "6")]
    pub bytes_limit: u32,
}

/// `SyncGetChangeProofResponse`.
#[derive(Clone, PartialEq, Message)]
pub struct SyncGetChangeProofResponse {
    /// A change proof, or a range proof when the server lacks the history.
    #[prost(oneof = "change_proof_response::Response", tags = "1, 2")]
    pub response: Option<change_proof_response::Response>,
}

/// The oneof of [`SyncGetChangeProofResponse`].
pub mod change_proof_response {
    /// What a [`super::SyncGetChangeProofResponse`] carries.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Response {
        /// The change proof asked for.
        #[prost(message, tag = "1")]
        ChangeProof(super::ChangeProof),
        /// A range proof at the end root, sent when the start root is not in history.
        #[prost(message, tag = "2")]
        RangeProof(super::RangeProof),
    }
}

/// `ChangeProof`.
#[derive(Clone, PartialEq, Message)]
pub struct ChangeProof {
    /// Proof of the lower bound.
    #[prost(message, repeated, tag = "1")]
    pub start_proof: Vec<ProofNode>,
    /// Proof of the last change, or of the upper bound.
    #[prost(message, repeated, tag = "2")]
    pub end_proof: Vec<ProofNode>,
    /// The changes, by increasing key.
    #[prost(message, repeated, tag = "3")]
    pub key_changes: Vec<KeyChange>,
}

/// `RangeProof`.
#[derive(Clone, PartialEq, Message)]
pub struct RangeProof {
    /// Proof of the lower bound.
    #[prost(message, repeated, tag = "1")]
    pub start_proof: Vec<ProofNode>,
    /// Proof of the last key, or of the upper bound.
    #[prost(message, repeated, tag = "2")]
    pub end_proof: Vec<ProofNode>,
    /// The key-values, by increasing key.
    #[prost(message, repeated, tag = "3")]
    pub key_values: Vec<KeyValue>,
}

/// `ProofNode`.
#[derive(Clone, PartialEq, Message)]
pub struct ProofNode {
    /// The node's key.
    #[prost(message, optional, tag = "1")]
    pub key: Option<Key>,
    /// The value digest: the value if shorter than 32 bytes, else its SHA-256; Nothing if none.
    #[prost(message, optional, tag = "2")]
    pub value_or_hash: Option<MaybeBytes>,
    /// The `map<uint32, bytes> children` field (child index → 32-byte id), as the repeated
    /// entry messages a protobuf map is on the wire. Entries carry their key and value with
    /// explicit presence so that, like Go's and Python's encoders, a zero key is written
    /// (prost's own map encoding leaves it out). Decoders treat a missing key as 0 and a
    /// repeated key as replacing the earlier entry, as for any protobuf map.
    #[prost(message, repeated, tag = "3")]
    pub children: Vec<ChildEntry>,
}

/// One entry of [`ProofNode::children`].
#[derive(Clone, PartialEq, Message)]
pub struct ChildEntry {
    /// The child index.
    #[prost(uint32, optional, tag = "1")]
    pub key: Option<u32>,
    /// The child id.
    #[prost(bytes = "vec", optional, tag = "2")]
    pub value: Option<Vec<u8>>,
}

impl ProofNode {
    /// The children as a map, with protobuf map semantics (missing key = 0, last entry wins).
    #[must_use]
    pub fn children_map(&self) -> BTreeMap<u32, Vec<u8>> {
        self.children
            .iter()
            .map(|e| (e.key.unwrap_or(0), e.value.clone().unwrap_or_default()))
            .collect()
    }

    /// Sets the children from a map, in ascending key order.
    pub fn set_children(&mut self, children: impl IntoIterator<Item = (u32, Vec<u8>)>) {
        self.children = children
            .into_iter()
            .map(|(k, v)| ChildEntry {
                key: Some(k),
                value: Some(v),
            })
            .collect();
    }
}

/// `KeyChange`.
#[derive(Clone, PartialEq, Message)]
pub struct KeyChange {
    /// The key.
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    /// The new value; Nothing means deleted.
    #[prost(message, optional, tag = "2")]
    pub value: Option<MaybeBytes>,
}

/// `Key`: a key of `length` bits packed MSB-first.
#[derive(Clone, PartialEq, Message)]
pub struct Key {
    /// Length in bits.
    #[prost(uint64, tag = "1")]
    pub length: u64,
    /// The packed bits, `ceil(length / 8)` bytes.
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// `MaybeBytes`: bytes or Nothing.
#[derive(Clone, PartialEq, Message)]
pub struct MaybeBytes {
    /// The bytes, when not Nothing.
    #[prost(bytes = "vec", tag = "1")]
    pub value: Vec<u8>,
    /// True for Nothing.
    #[prost(bool, tag = "2")]
    pub is_nothing: bool,
}

/// `KeyValue`.
#[derive(Clone, PartialEq, Message)]
pub struct KeyValue {
    /// The key.
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    /// The value.
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}
