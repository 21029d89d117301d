//! Trie nodes: their ids (avalanchego's `hashing.go`) and their storage encoding.
//!
//! A node exists for every key with a value and for every branch point with two or more
//! children. It records, per child, the child's *compressed key* (the bits between the child
//! index and the child's own key), the child's id and whether the child holds a value; this lets
//! an insert split an edge without loading the node below it.
//!
//! The id is SHA-256 over
//! `uvarint(#children) ‖ (uvarint(index) ‖ child id)* ‖ value digest ‖ uvarint(key bits) ‖ key`,
//! where the value digest is `0x00` for no value and `0x01 ‖ uvarint(len) ‖ d` otherwise, `d`
//! being the value itself when shorter than 32 bytes and its SHA-256 when not. Compressed keys and
//! `has_value` are not hashed; the node's *full* key is.

use sha2::{Digest, Sha256};

use crate::key::Key;
use crate::varint;

/// A 32-byte node id or root hash.
pub type Hash = [u8; 32];

/// The root of an empty trie (avalanchego's `ids.Empty`).
pub const EMPTY_ROOT: Hash = [0; 32];

/// Values of this length or more are represented in node ids by their SHA-256.
pub const HASH_LEN: usize = 32;

/// What a node holds in place of a value.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub(crate) enum NodeValue {
    /// No value: a pure branch node.
    #[default]
    None,
    /// A value.
    Value(Vec<u8>),
    /// Only the value digest is known. Proof verification builds nodes from proof nodes, which
    /// carry digests, not values.
    Digest(Vec<u8>),
}

impl NodeValue {
    pub(crate) const fn is_some(&self) -> bool {
        !matches!(self, Self::None)
    }

    /// The value digest as it enters the node id; `None` when there is no value.
    pub(crate) fn digest(&self) -> Option<Vec<u8>> {
        self.digest_ref().map(|d| d.as_slice().to_vec())
    }

    fn digest_ref(&self) -> Option<DigestRef<'_>> {
        match self {
            Self::None => None,
            Self::Value(v) if v.len() < HASH_LEN => Some(DigestRef::Raw(v)),
            Self::Value(v) => Some(DigestRef::Hashed(Sha256::digest(v).into())),
            Self::Digest(d) => Some(DigestRef::Raw(d)),
        }
    }
}

/// A value digest without allocating: the short value itself, or its hash.
enum DigestRef<'a> {
    Raw(&'a [u8]),
    Hashed([u8; 32]),
}

impl DigestRef<'_> {
    fn as_slice(&self) -> &[u8] {
        match self {
            Self::Raw(r) => r,
            Self::Hashed(h) => h,
        }
    }
}

/// The digest of a value as it appears in node ids and proof nodes.
#[must_use]
pub fn value_digest(value: &[u8]) -> Vec<u8> {
    if value.len() < HASH_LEN {
        value.to_vec()
    } else {
        Sha256::digest(value).to_vec()
    }
}

/// A parent's record of one child.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Child {
    /// The key bits between the child's index token and the child's own key.
    pub compressed: Key,
    /// The child's id.
    pub id: Hash,
    /// Whether the child holds a value (selects where it is stored).
    pub has_value: bool,
    /// Set while the child's node is changed in a trie builder and its id is stale; cleared
    /// when hashing recomputes the id. Never stored.
    pub dirty: bool,
}

/// A trie node.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub(crate) struct Node {
    pub key: Key,
    pub value: NodeValue,
    /// Children by increasing index.
    pub children: Vec<(u8, Child)>,
}

impl Node {
    pub(crate) fn new(key: Key) -> Self {
        Self {
            key,
            value: NodeValue::None,
            children: Vec::new(),
        }
    }

    pub(crate) const fn has_value(&self) -> bool {
        self.value.is_some()
    }

    pub(crate) fn child(&self, index: u8) -> Option<&Child> {
        self.children
            .binary_search_by_key(&index, |(i, _)| *i)
            .ok()
            .map(|p| &self.children[p].1)
    }

    pub(crate) fn set_child(&mut self, index: u8, child: Child) {
        match self.children.binary_search_by_key(&index, |(i, _)| *i) {
            Ok(p) => self.children[p].1 = child,
            Err(p) => self.children.insert(p, (index, child)),
        }
    }

    pub(crate) fn child_mut(&mut self, index: u8) -> Option<&mut Child> {
        self.children
            .binary_search_by_key(&index, |(i, _)| *i)
            .ok()
            .map(|p| &mut self.children[p].1)
    }

    pub(crate) fn remove_child(&mut self, index: u8) {
        if let Ok(p) = self.children.binary_search_by_key(&index, |(i, _)| *i) {
            self.children.remove(p);
        }
    }

    /// The node id.
    pub(crate) fn id(&self) -> Hash {
        let mut h = Sha256::new();
        let mut varint_buf = [0u8; 10];
        h.update(varint::encode(&mut varint_buf, self.children.len() as u64));
        for (index, child) in &self.children {
            h.update(varint::encode(&mut varint_buf, u64::from(*index)));
            h.update(child.id);
        }
        match self.value.digest_ref() {
            None => h.update([0]),
            Some(d) => {
                let d = d.as_slice();
                h.update([1]);
                h.update(varint::encode(&mut varint_buf, d.len() as u64));
                h.update(d);
            }
        }
        h.update(varint::encode(&mut varint_buf, self.key.bit_len() as u64));
        h.update(self.key.packed());
        h.finalize().into()
    }

    /// The storage encoding (the key is the storage key, not part of the encoding):
    /// `value: (0 | 1 uvarint(len) bytes) ‖ uvarint(#children) ‖
    /// (uvarint(index) ‖ uvarint(bits) compressed ‖ id ‖ has_value)*`.
    ///
    /// Nodes with a digest-only value exist only inside proof verification and are never stored.
    #[cfg(test)]
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(48 + self.children.len() * 40);
        self.encode_into(&mut out);
        out
    }

    /// Appends the storage encoding to `out`.
    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        match &self.value {
            NodeValue::Value(v) => {
                out.push(1);
                varint::put(out, v.len() as u64);
                out.extend_from_slice(v);
            }
            NodeValue::None | NodeValue::Digest(_) => out.push(0),
        }
        varint::put(out, self.children.len() as u64);
        for (index, child) in &self.children {
            varint::put(out, u64::from(*index));
            varint::put(out, child.compressed.bit_len() as u64);
            out.extend_from_slice(child.compressed.packed());
            out.extend_from_slice(&child.id);
            out.push(u8::from(child.has_value));
        }
    }

    /// Decodes a node stored under `key`. Strict: canonical varints, booleans 0 or 1, strictly
    /// increasing child indices, zero padding bits, nothing left over.
    pub(crate) fn decode(key: Key, bytes: &[u8]) -> Result<Self, CodecError> {
        let mut r = Reader { buf: bytes };
        let value = decode_value(&mut r)?;
        let n = r.varint()?;
        let mut children = Vec::with_capacity(n.min(256) as usize);
        for _ in 0..n {
            let index = u8::try_from(r.varint()?).map_err(|_| CodecError::ChildIndex)?;
            if children.last().is_some_and(|(prev, _)| *prev >= index) {
                return Err(CodecError::ChildOrder);
            }
            let bits = usize::try_from(r.varint()?).map_err(|_| CodecError::Truncated)?;
            let packed = r.take(bits.div_ceil(8))?.to_vec();
            let compressed = Key::from_packed(bits, packed.clone()).ok_or(CodecError::Truncated)?;
            if compressed.packed() != packed.as_slice() {
                return Err(CodecError::Padding);
            }
            let id: Hash = r.take(32)?.try_into().map_err(|_| CodecError::Truncated)?;
            let has_value = r.bool()?;
            children.push((
                index,
                Child {
                    compressed,
                    id,
                    has_value,
                    dirty: false,
                },
            ));
        }
        if !r.buf.is_empty() {
            return Err(CodecError::TrailingBytes);
        }
        Ok(Self {
            key,
            value,
            children,
        })
    }
}

/// Decodes only the value of a stored node (iteration over key-values needs no children).
pub(crate) fn decode_stored_value(bytes: &[u8]) -> Result<Option<Vec<u8>>, CodecError> {
    match decode_value(&mut Reader { buf: bytes })? {
        NodeValue::Value(v) => Ok(Some(v)),
        NodeValue::None | NodeValue::Digest(_) => Ok(None),
    }
}

fn decode_value(r: &mut Reader<'_>) -> Result<NodeValue, CodecError> {
    if r.bool()? {
        let len = usize::try_from(r.varint()?).map_err(|_| CodecError::Truncated)?;
        Ok(NodeValue::Value(r.take(len)?.to_vec()))
    } else {
        Ok(NodeValue::None)
    }
}

/// A stored node could not be decoded: the store is corrupt or was written by something else.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The encoding ended early.
    #[error("node encoding truncated")]
    Truncated,
    /// A varint was not in its shortest form or overflowed.
    #[error("non-canonical varint in node encoding")]
    Varint,
    /// A boolean byte was neither 0 nor 1.
    #[error("invalid boolean in node encoding")]
    Bool,
    /// A child index above 255.
    #[error("child index out of range in node encoding")]
    ChildIndex,
    /// Child indices not strictly increasing.
    #[error("child indices not increasing in node encoding")]
    ChildOrder,
    /// Nonzero padding bits in a compressed key.
    #[error("nonzero padding bits in node encoding")]
    Padding,
    /// Bytes after the last field.
    #[error("trailing bytes after node encoding")]
    TrailingBytes,
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.buf.len() < n {
            return Err(CodecError::Truncated);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn varint(&mut self) -> Result<u64, CodecError> {
        let (v, used) = varint::get(self.buf).ok_or(CodecError::Varint)?;
        self.buf = &self.buf[used..];
        Ok(v)
    }

    fn bool(&mut self) -> Result<bool, CodecError> {
        match self.take(1)? {
            [0] => Ok(false),
            [1] => Ok(true),
            _ => Err(CodecError::Bool),
        }
    }
}

/// The id of a node with `key`, `value` and children `(index, id)`, as avalanchego computes it.
/// For checking ids against other implementations; the trie computes ids itself.
#[must_use]
pub fn node_id(key: &Key, value: Option<&[u8]>, children: &[(u8, Hash)]) -> Hash {
    let mut node = Node::new(key.clone());
    node.value = value.map_or(NodeValue::None, |v| NodeValue::Value(v.to_vec()));
    for (index, id) in children {
        node.set_child(
            *index,
            Child {
                compressed: Key::default(),
                id: *id,
                has_value: false,
                dirty: false,
            },
        );
    }
    node.id()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_round_trips_and_is_strict() {
        let mut node = Node::new(Key::from_bytes(&[1, 2]));
        node.value = NodeValue::Value(b"hello".to_vec());
        node.set_child(
            3,
            Child {
                compressed: Key::from_bytes(&[9]).take(4),
                id: [7; 32],
                has_value: true,
                dirty: false,
            },
        );
        node.set_child(
            1,
            Child {
                compressed: Key::default(),
                id: [8; 32],
                has_value: false,
                dirty: false,
            },
        );
        let bytes = node.encode();
        assert_eq!(Node::decode(node.key.clone(), &bytes), Ok(node.clone()));
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(
            Node::decode(node.key.clone(), &trailing),
            Err(CodecError::TrailingBytes)
        );
        assert_eq!(
            Node::decode(node.key.clone(), &bytes[..bytes.len() - 1]),
            Err(CodecError::Truncated)
        );
        let mut bad_bool = bytes;
        bad_bool[0] = 2;
        assert_eq!(Node::decode(node.key, &bad_bool), Err(CodecError::Bool));
    }

    #[test]
    fn value_digest_switches_at_32_bytes() {
        assert_eq!(value_digest(&[1; 31]), vec![1; 31]);
        assert_eq!(value_digest(&[1; 32]).len(), 32);
        assert_ne!(value_digest(&[1; 32]), vec![1; 32]);
    }
}
