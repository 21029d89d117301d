//! Log records: the content of one write, its version hash, and its author's signature.
//!
//! A record's version is the hash of what it says (row, parents, time, delete flag, batch,
//! value), not of who sent it: two members that resolve the same conflict the same way make
//! the same DAG node, so neither sees the other's resolution as a new conflict. The signature
//! covers the whole record, author and generation included; a receiver recomputes the version,
//! recovers the signer, and refuses the record unless the signer is the author it names.
//!
//! One signature covers a *group*: the records of one batch in one collection (a batch
//! travels whole per collection, see `delta`), or a single record outside a batch. Every
//! record of the group carries the same signature over [`group_digest`], so verifying a
//! batch of 5,000 rows recovers one key, not 5,000; a group that arrives in part does not
//! verify, and is refused whole as it would be anyway.

use prost::Message;
use tributary_chunk::bmt::keccak256;
use tributary_overlay::identity::{Identity, recover_address};
use tributary_wire::replica::LogRecord;

use crate::types::{NodeId, Version, check_name, check_row};
use crate::{RefusalReason, ReplicaError};

const VERSION_DOMAIN: &[u8] = b"tributary-replica-version";
const GROUP_DOMAIN: &[u8] = b"tributary-replica-group";

/// The largest generation accepted: far beyond any device's writes, and far from the ends
/// of `u64`, so that no cursor or count overflows.
pub const MAX_GENERATION: u64 = 1 << 62;

/// A row's address: database, collection, key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RowId {
    /// The database.
    pub db: String,
    /// The collection.
    pub collection: String,
    /// The key.
    pub key: String,
}

/// A batch a record belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BatchRef {
    /// The batch's id (never 0).
    pub id: u64,
    /// Records of the batch in the record's collection.
    pub count: u32,
}

/// A checked log record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The row.
    pub row: RowId,
    /// The version it creates.
    pub version: Version,
    /// The versions it follows.
    pub parents: Vec<Version>,
    /// Hybrid logical clock time.
    pub time: u64,
    /// Whether it deletes the row.
    pub deleted: bool,
    /// Its batch.
    pub batch: Option<BatchRef>,
    /// The value.
    pub value: Vec<u8>,
    /// Its author.
    pub author: NodeId,
    /// The author's generation.
    pub generation: u64,
}

/// What a new write says, before it has a version, an author and a signature.
pub(crate) struct Draft<'a> {
    pub row: &'a RowId,
    pub parents: Vec<Version>,
    pub time: u64,
    pub deleted: bool,
    pub batch: Option<BatchRef>,
    pub value: &'a [u8],
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    // Names are at most 1 KiB and values 1 MiB (checked first), so the length fits.
    out.extend_from_slice(&u32::try_from(s.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(s);
}

/// The version a write with this content has.
pub(crate) fn version_of(d: &Draft<'_>) -> Version {
    let row = (
        d.row.db.as_str(),
        d.row.collection.as_str(),
        d.row.key.as_str(),
    );
    let batch = d.batch.map_or((0, 0), |b| (b.id, b.count));
    let parents = d.parents.iter().map(|p| p.0.as_slice());
    hash_content(row, parents, (d.time, d.deleted), batch, d.value)
}

/// The version a record from the wire says it has, hashed from its fields as they are (a
/// malformed field gives a version that nothing matches; [`Record::check`] refuses it).
pub(crate) fn wire_version(w: &LogRecord) -> Version {
    let row = (w.db.as_str(), w.collection.as_str(), w.key.as_str());
    let parents = w.parents.iter().map(Vec::as_slice);
    let batch = (w.batch_id, w.batch_count);
    hash_content(row, parents, (w.time, w.deleted), batch, &w.value)
}

fn hash_content<'p>(
    (db, collection, key): (&str, &str, &str),
    parents: impl ExactSizeIterator<Item = &'p [u8]>,
    (time, deleted): (u64, bool),
    (batch_id, batch_count): (u64, u32),
    value: &[u8],
) -> Version {
    let mut data = Vec::with_capacity(128 + value.len());
    data.extend_from_slice(VERSION_DOMAIN);
    put_str(&mut data, db.as_bytes());
    put_str(&mut data, collection.as_bytes());
    put_str(&mut data, key.as_bytes());
    data.push(u8::try_from(parents.len()).unwrap_or(u8::MAX));
    for p in parents {
        data.extend_from_slice(p);
    }
    data.extend_from_slice(&time.to_le_bytes());
    data.push(u8::from(deleted));
    data.extend_from_slice(&batch_id.to_le_bytes());
    data.extend_from_slice(&batch_count.to_le_bytes());
    put_str(&mut data, value);
    Version(keccak256(&data))
}

/// The digest a group's signature is over: the domain, then per record (in generation
/// order) the hash of its encoding with the signature left empty.
pub(crate) fn group_digest<'a>(wires: impl IntoIterator<Item = &'a LogRecord>) -> [u8; 32] {
    let mut data = GROUP_DOMAIN.to_vec();
    let mut buf = Vec::new();
    for wire in wires {
        data.extend_from_slice(&keccak256(unsigned_encoding(wire, &mut buf)));
    }
    keccak256(&data)
}

/// `wire` encoded with its signature left empty, in `buf`. Prost writes fields in tag order
/// and the signature's tag is the last, so that is the encoding cut before the signature
/// field (and no copy of the record is made, which a group of 5,000 noticed).
fn unsigned_encoding<'b>(wire: &LogRecord, buf: &'b mut Vec<u8>) -> &'b [u8] {
    buf.clear();
    // Encoding a message into a Vec cannot fail (the Vec grows).
    let _ = wire.encode(buf);
    let signature = if wire.signature.is_empty() {
        0
    } else {
        prost::encoding::bytes::encoded_len(SIGNATURE_TAG, &wire.signature)
    };
    &buf[..buf.len() - signature]
}

/// The field number of `LogRecord.signature`, the highest of the message.
const SIGNATURE_TAG: u32 = 13;

/// Signs a group of this node's records (in generation order): each gets the signature.
pub(crate) fn sign_group(wires: &mut [LogRecord], identity: &Identity) -> Result<(), ReplicaError> {
    let signature = identity
        .sign(&group_digest(wires.iter()))
        .map_err(|_| ReplicaError::Signing)?;
    for wire in wires {
        wire.signature.clone_from(&signature);
    }
    Ok(())
}

/// Checks a group's signature (records in generation order, all of one author): every
/// record carries the same one, and it recovers to `author`.
///
/// # Errors
/// [`RefusalReason::BadSignature`].
pub(crate) fn verify_group(wires: &[&LogRecord], author: &NodeId) -> Result<(), RefusalReason> {
    let first = wires.first().ok_or(RefusalReason::BadSignature)?;
    if wires.iter().any(|w| w.signature != first.signature) {
        return Err(RefusalReason::BadSignature);
    }
    let signer = recover_address(&group_digest(wires.iter().copied()), &first.signature)
        .map_err(|_| RefusalReason::BadSignature)?;
    if signer == author.0 {
        Ok(())
    } else {
        Err(RefusalReason::BadSignature)
    }
}

impl Record {
    /// A draft as `identity`'s generation `generation`, unsigned: the commit signs its
    /// groups ([`sign_group`]).
    pub(crate) fn unsigned(
        d: &Draft<'_>,
        identity: &Identity,
        generation: u64,
    ) -> (Self, LogRecord) {
        let record = Self {
            row: d.row.clone(),
            version: version_of(d),
            parents: d.parents.clone(),
            time: d.time,
            deleted: d.deleted,
            batch: d.batch,
            value: d.value.to_vec(),
            author: NodeId(identity.eth_address()),
            generation,
        };
        let wire = record.to_wire();
        (record, wire)
    }

    /// The wire form, unsigned.
    fn to_wire(&self) -> LogRecord {
        let (batch_id, batch_count) = self.batch.map_or((0, 0), |b| (b.id, b.count));
        LogRecord {
            db: self.row.db.clone(),
            collection: self.row.collection.clone(),
            key: self.row.key.clone(),
            version: self.version.0.to_vec(),
            parents: self.parents.iter().map(|p| p.0.to_vec()).collect(),
            time: self.time,
            deleted: self.deleted,
            batch_id,
            batch_count,
            value: self.value.clone(),
            author: self.author.0.to_vec(),
            generation: self.generation,
            signature: Vec::new(),
        }
    }

    /// Checks a record that is a group by itself (outside a batch) from the wire: its shape,
    /// its version, and its signature. Records of a batch verify as a group in `delta`.
    ///
    /// # Errors
    /// Why it is refused.
    pub fn verify(wire: &LogRecord) -> Result<Self, RefusalReason> {
        let record = Self::check(wire)?;
        verify_group(&[wire], &record.author)?;
        Ok(record)
    }

    /// Checks a record from the wire but for its signature: its shape, and its version
    /// against its content.
    ///
    /// # Errors
    /// Why it is refused.
    pub fn check(wire: &LogRecord) -> Result<Self, RefusalReason> {
        let record = Self::parse(wire)?;
        let draft = Draft {
            row: &record.row,
            parents: record.parents.clone(),
            time: record.time,
            deleted: record.deleted,
            batch: record.batch,
            value: &record.value,
        };
        if version_of(&draft) != record.version {
            return Err(RefusalReason::WrongVersion);
        }
        Ok(record)
    }

    fn parse(wire: &LogRecord) -> Result<Self, RefusalReason> {
        let malformed = |e: ReplicaError| RefusalReason::Malformed(e.to_string());
        check_name("database", &wire.db).map_err(malformed)?;
        check_name("collection", &wire.collection).map_err(malformed)?;
        check_row(&wire.key, &wire.value).map_err(malformed)?;
        if wire.parents.len() > 2 {
            return Err(RefusalReason::Malformed("more than two parents".into()));
        }
        if wire.deleted && !wire.value.is_empty() {
            return Err(RefusalReason::Malformed("a delete with a value".into()));
        }
        let parents = wire
            .parents
            .iter()
            .map(|p| Version::from_wire(p))
            .collect::<Result<Vec<_>, _>>()
            .map_err(malformed)?;
        let batch = match (wire.batch_id, wire.batch_count) {
            (0, 0) => None,
            (0, _) | (_, 0) => return Err(RefusalReason::Malformed("half a batch id".into())),
            (id, count) => Some(BatchRef { id, count }),
        };
        if wire.generation == 0 || wire.generation > MAX_GENERATION {
            return Err(RefusalReason::Malformed(format!(
                "generation {}",
                wire.generation
            )));
        }
        Ok(Self {
            row: RowId {
                db: wire.db.clone(),
                collection: wire.collection.clone(),
                key: wire.key.clone(),
            },
            version: Version::from_wire(&wire.version).map_err(malformed)?,
            parents,
            time: wire.time,
            deleted: wire.deleted,
            batch,
            value: wire.value.clone(),
            author: NodeId::from_wire(&wire.author).map_err(malformed)?,
            generation: wire.generation,
        })
    }
}

/// A digest for signing a syncgroup spec or member change: the message encoded with its
/// signature cleared, under a domain of its own.
pub(crate) fn message_digest<M: Message>(domain: &[u8], unsigned: &M) -> [u8; 32] {
    let mut data = domain.to_vec();
    unsigned.encode(&mut data).unwrap_or_default();
    keccak256(&data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unsigned_encoding_is_the_encoding_with_an_empty_signature() {
        let mut wire = LogRecord {
            db: "db".into(),
            collection: "c".into(),
            key: "k".into(),
            version: vec![7; 32],
            parents: vec![vec![1; 32], vec![2; 32]],
            time: 1 << 40,
            batch_id: 9,
            batch_count: 3,
            value: vec![5; 300],
            author: vec![3; 20],
            generation: 12,
            ..LogRecord::default()
        };
        for signature in [Vec::new(), vec![4; 65], vec![6; 200]] {
            wire.signature = signature;
            let expected = LogRecord {
                signature: Vec::new(),
                ..wire.clone()
            }
            .encode_to_vec();
            let mut buf = Vec::new();
            assert_eq!(unsigned_encoding(&wire, &mut buf), expected.as_slice());
        }
    }
}
