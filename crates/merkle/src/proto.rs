//! Proofs to and from the classic `sync.proto` messages, with strict decoding
//! (research/merkledb.md §4): `value_or_hash` and `KeyChange.value` must be present, a Nothing
//! must carry no bytes, a key's byte length must be `ceil(bits/8)` (padding bits are masked),
//! child indices fit a byte and child ids are 32 bytes. Nothing is encoded as
//! `{is_nothing: true}`, as the classic Go code does.

use std::collections::BTreeMap;

use prost::Message;
use tributary_wire::{MAX_SYNC_MESSAGE_BYTES, sync as pb};

use crate::key::Key;
use crate::node::Hash;
use crate::proof::{ChangeProof, ProofNode, RangeProof};

/// Why bytes are not a well-formed proof message.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not protobuf, or not this message.
    #[error("malformed protobuf")]
    Protobuf(#[from] prost::DecodeError),
    /// Larger than any state-sync message may be.
    #[error("message of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A proof node without a key (`ErrNilKey`).
    #[error("proof node key is missing")]
    NilKey,
    /// A proof node without `value_or_hash` (`ErrNilValueOrHash`).
    #[error("proof node's value_or_hash is missing")]
    NilValueOrHash,
    /// A key change without a value (`ErrNilMaybeBytes`).
    #[error("key change value is missing")]
    NilMaybeBytes,
    /// `is_nothing` set on non-empty bytes (`ErrInvalidMaybe`).
    #[error("maybe is nothing but has value")]
    InvalidMaybe,
    /// A key's bytes do not match its bit length (`ErrInvalidKeyLength`).
    #[error("key length doesn't match bytes length")]
    InvalidKeyLength,
    /// A child index above 255.
    #[error("child index {0} too large")]
    ChildIndexTooLarge(u32),
    /// A child id that is not 32 bytes.
    #[error("child id is {0} bytes, not 32")]
    InvalidChildId(usize),
}

fn maybe_to_wire(v: Option<&[u8]>) -> pb::MaybeBytes {
    match v {
        Some(v) => pb::MaybeBytes {
            value: v.to_vec(),
            is_nothing: false,
        },
        None => pb::MaybeBytes {
            value: Vec::new(),
            is_nothing: true,
        },
    }
}

fn maybe_from_wire(
    m: Option<pb::MaybeBytes>,
    missing: DecodeError,
) -> Result<Option<Vec<u8>>, DecodeError> {
    let m = m.ok_or(missing)?;
    match (m.is_nothing, m.value.is_empty()) {
        (true, false) => Err(DecodeError::InvalidMaybe),
        (true, true) => Ok(None),
        (false, _) => Ok(Some(m.value)),
    }
}

impl ProofNode {
    /// The wire form.
    #[must_use]
    pub fn to_wire(&self) -> pb::ProofNode {
        let mut node = pb::ProofNode {
            key: Some(pb::Key {
                length: self.key.bit_len() as u64,
                value: self.key.packed().to_vec(),
            }),
            value_or_hash: Some(maybe_to_wire(self.value_or_hash.as_deref())),
            children: Vec::new(),
        };
        node.set_children(
            self.children
                .iter()
                .map(|(i, id)| (u32::from(*i), id.to_vec())),
        );
        node
    }

    /// Strictly decodes the wire form.
    ///
    /// # Errors
    /// The [`DecodeError`] of the first rule broken.
    pub fn from_wire(node: pb::ProofNode) -> Result<Self, DecodeError> {
        let entries = node.children_map();
        let key = node.key.ok_or(DecodeError::NilKey)?;
        let bits = usize::try_from(key.length).map_err(|_| DecodeError::InvalidKeyLength)?;
        let key = Key::from_packed(bits, key.value).ok_or(DecodeError::InvalidKeyLength)?;
        let value_or_hash = maybe_from_wire(node.value_or_hash, DecodeError::NilValueOrHash)?;
        let mut children = BTreeMap::new();
        for (index, id) in entries {
            let index = u8::try_from(index).map_err(|_| DecodeError::ChildIndexTooLarge(index))?;
            let id: Hash = id
                .as_slice()
                .try_into()
                .map_err(|_| DecodeError::InvalidChildId(id.len()))?;
            children.insert(index, id);
        }
        Ok(Self {
            key,
            value_or_hash,
            children,
        })
    }
}

fn nodes_from_wire(nodes: Vec<pb::ProofNode>) -> Result<Vec<ProofNode>, DecodeError> {
    nodes.into_iter().map(ProofNode::from_wire).collect()
}

fn check_size(bytes: &[u8]) -> Result<(), DecodeError> {
    if bytes.len() > MAX_SYNC_MESSAGE_BYTES {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            max: MAX_SYNC_MESSAGE_BYTES,
        });
    }
    Ok(())
}

impl RangeProof {
    /// The wire form.
    #[must_use]
    pub fn to_wire(&self) -> pb::RangeProof {
        pb::RangeProof {
            start_proof: self.start_proof.iter().map(ProofNode::to_wire).collect(),
            end_proof: self.end_proof.iter().map(ProofNode::to_wire).collect(),
            key_values: self
                .key_values
                .iter()
                .map(|(k, v)| pb::KeyValue {
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect(),
        }
    }

    /// Strictly decodes the wire form.
    ///
    /// # Errors
    /// The [`DecodeError`] of the first rule broken.
    pub fn from_wire(p: pb::RangeProof) -> Result<Self, DecodeError> {
        Ok(Self {
            start_proof: nodes_from_wire(p.start_proof)?,
            end_proof: nodes_from_wire(p.end_proof)?,
            key_values: p
                .key_values
                .into_iter()
                .map(|kv| (kv.key, kv.value))
                .collect(),
        })
    }

    /// The encoded `RangeProof` message.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_wire().encode_to_vec()
    }

    /// Decodes a `RangeProof` message.
    ///
    /// # Errors
    /// Oversized or malformed input.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        check_size(bytes)?;
        Self::from_wire(pb::RangeProof::decode(bytes)?)
    }
}

impl ChangeProof {
    /// The wire form.
    #[must_use]
    pub fn to_wire(&self) -> pb::ChangeProof {
        pb::ChangeProof {
            start_proof: self.start_proof.iter().map(ProofNode::to_wire).collect(),
            end_proof: self.end_proof.iter().map(ProofNode::to_wire).collect(),
            key_changes: self
                .key_changes
                .iter()
                .map(|(k, v)| pb::KeyChange {
                    key: k.clone(),
                    value: Some(maybe_to_wire(v.as_deref())),
                })
                .collect(),
        }
    }

    /// Strictly decodes the wire form.
    ///
    /// # Errors
    /// The [`DecodeError`] of the first rule broken.
    pub fn from_wire(p: pb::ChangeProof) -> Result<Self, DecodeError> {
        let key_changes = p
            .key_changes
            .into_iter()
            .map(|kc| {
                Ok((
                    kc.key,
                    maybe_from_wire(kc.value, DecodeError::NilMaybeBytes)?,
                ))
            })
            .collect::<Result<_, DecodeError>>()?;
        Ok(Self {
            start_proof: nodes_from_wire(p.start_proof)?,
            end_proof: nodes_from_wire(p.end_proof)?,
            key_changes,
        })
    }

    /// The encoded `ChangeProof` message.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_wire().encode_to_vec()
    }

    /// Decodes a `ChangeProof` message.
    ///
    /// # Errors
    /// Oversized or malformed input.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        check_size(bytes)?;
        Self::from_wire(pb::ChangeProof::decode(bytes)?)
    }
}
