//! The state-sync server: answers x/sync requests (cryftgo's `Request` wrapper around
//! `SyncGetRangeProofRequest` / `SyncGetChangeProofRequest`) from a [`MerkleDb`].
//!
//! As x/sync's handlers: a request is validated (limits above zero, 32-byte roots, a non-empty
//! end root, no Nothing bound carrying bytes, start not after end); its limits are clamped to
//! 2,048 keys and 2 MiB − 4 KiB; the proof is generated and, while its encoding is not under
//! the byte limit, regenerated with half as many keys. A change request whose start root is not
//! in history is answered with a range proof at the end root. A range request for a root not in
//! history gets no answer ([`Reply::Drop`]; the client tries another peer).
//!
//! Replies are the protobuf bytes the wire carries: a `RangeProof` for range requests, a
//! `SyncGetChangeProofResponse` for change requests.

use prost::Message;
use tributary_merkle::{ChangeProof, DbError, EMPTY_ROOT, Hash, MerkleDb, RangeProof};
use tributary_wire::sync::{self as pb, change_proof_response, request};

/// Most key-values or key changes in one proof (x/sync `maxKeyValuesLimit`).
pub const MAX_KEY_LIMIT: u32 = 2048;
/// Most bytes in one proof: the 2 MiB message limit less 4 KiB of overhead.
pub const MAX_BYTES_LIMIT: u32 = 2 * 1024 * 1024 - 4 * 1024;

/// What to send back.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// These bytes.
    Bytes(Vec<u8>),
    /// Nothing: the root asked for is not held.
    Drop,
}

/// Why a request was not answered.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Not a protobuf `Request`.
    #[error("malformed request")]
    Malformed(#[from] prost::DecodeError),
    /// A `Request` with no message in it.
    #[error("empty request")]
    Empty,
    /// A byte limit of zero.
    #[error("bytes limit must be greater than 0")]
    InvalidBytesLimit,
    /// A key limit of zero.
    #[error("key limit must be greater than 0")]
    InvalidKeyLimit,
    /// A root that is not 32 bytes.
    #[error("{0} root hash must have length 32")]
    InvalidRootHash(&'static str),
    /// The empty root, which has no proof.
    #[error("the empty trie has no proof")]
    EmptyRoot,
    /// A Nothing bound with bytes in it.
    #[error("{0} key is Nothing but has value")]
    InvalidBound(&'static str),
    /// A start key after the end key.
    #[error("start key is greater than end key")]
    InvalidBounds,
    /// Even a single key's proof exceeds the byte limit.
    #[error("cannot generate any proof within the requested limit")]
    MinProofSizeIsTooLarge,
    /// The database failed, or the change proof's end root is not held.
    #[error("database")]
    Db(#[from] DbError),
}

impl ServerError {
    /// Whether the requester sent something invalid (as opposed to a limit of this server).
    #[must_use]
    pub const fn is_peer_fault(&self) -> bool {
        !matches!(self, Self::Db(_) | Self::MinProofSizeIsTooLarge)
    }
}

/// Answers one request.
///
/// # Errors
/// A [`ServerError`] for invalid requests, proofs that cannot fit, or database failures.
pub fn handle(db: &MerkleDb, request: &[u8]) -> Result<Reply, ServerError> {
    match pb::Request::decode(request)?
        .message
        .ok_or(ServerError::Empty)?
    {
        request::Message::RangeProofRequest(r) => range(db, &r),
        request::Message::ChangeProofRequest(r) => change(db, &r),
    }
}

fn root(bytes: &[u8], which: &'static str) -> Result<Hash, ServerError> {
    let root: Hash = bytes
        .try_into()
        .map_err(|_| ServerError::InvalidRootHash(which))?;
    Ok(root)
}

/// A request bound: absent or `is_nothing` means unbounded.
fn bound(b: Option<&pb::MaybeBytes>, which: &'static str) -> Result<Option<Vec<u8>>, ServerError> {
    match b {
        None => Ok(None),
        Some(m) if m.is_nothing && !m.value.is_empty() => Err(ServerError::InvalidBound(which)),
        Some(m) if m.is_nothing => Ok(None),
        Some(m) => Ok(Some(m.value.clone())),
    }
}

/// The validated, clamped parameters common to both requests.
struct Query {
    start: Option<Vec<u8>>,
    end: Option<Vec<u8>>,
    keys: usize,
    bytes: usize,
}

fn query(
    start: Option<&pb::MaybeBytes>,
    end: Option<&pb::MaybeBytes>,
    keys: u32,
    bytes: u32,
) -> Result<Query, ServerError> {
    if bytes == 0 {
        return Err(ServerError::InvalidBytesLimit);
    }
    if keys == 0 {
        return Err(ServerError::InvalidKeyLimit);
    }
    let (start, end) = (bound(start, "start")?, bound(end, "end")?);
    if let (Some(s), Some(e)) = (&start, &end)
        && s > e
    {
        return Err(ServerError::InvalidBounds);
    }
    Ok(Query {
        start,
        end,
        keys: keys.min(MAX_KEY_LIMIT) as usize,
        bytes: bytes.min(MAX_BYTES_LIMIT) as usize,
    })
}

/// Generates proofs of fewer and fewer keys until one encodes under the byte limit.
fn fit<P>(
    q: &Query,
    mut prove: impl FnMut(usize) -> Result<P, ServerError>,
    encode: impl Fn(&P) -> Vec<u8>,
    len: impl Fn(&P) -> usize,
) -> Result<Vec<u8>, ServerError> {
    let mut keys = q.keys;
    while keys > 0 {
        let proof = prove(keys)?;
        let bytes = encode(&proof);
        if bytes.len() < q.bytes {
            return Ok(bytes);
        }
        keys = len(&proof) / 2;
    }
    Err(ServerError::MinProofSizeIsTooLarge)
}

fn range(db: &MerkleDb, r: &pb::SyncGetRangeProofRequest) -> Result<Reply, ServerError> {
    let q = query(
        r.start_key.as_ref(),
        r.end_key.as_ref(),
        r.key_limit,
        r.bytes_limit,
    )?;
    let root = root(&r.root_hash, "range proof")?;
    if root == EMPTY_ROOT {
        return Err(ServerError::EmptyRoot);
    }
    match range_bytes(db, &root, &q, |p| p.to_bytes()) {
        Err(ServerError::Db(DbError::RootNotInHistory(_))) => Ok(Reply::Drop),
        other => other.map(Reply::Bytes),
    }
}

fn range_bytes(
    db: &MerkleDb,
    root: &Hash,
    q: &Query,
    encode: impl Fn(&RangeProof) -> Vec<u8>,
) -> Result<Vec<u8>, ServerError> {
    fit(
        q,
        |keys| Ok(db.range_proof(root, q.start.as_deref(), q.end.as_deref(), keys)?),
        encode,
        |p| p.key_values.len(),
    )
}

fn change(db: &MerkleDb, r: &pb::SyncGetChangeProofRequest) -> Result<Reply, ServerError> {
    let q = query(
        r.start_key.as_ref(),
        r.end_key.as_ref(),
        r.key_limit,
        r.bytes_limit,
    )?;
    let start_root = root(&r.start_root_hash, "start")?;
    let end_root = root(&r.end_root_hash, "end")?;
    if end_root == EMPTY_ROOT {
        return Err(ServerError::EmptyRoot);
    }
    let respond = |response| {
        pb::SyncGetChangeProofResponse {
            response: Some(response),
        }
        .encode_to_vec()
    };
    let proved = fit(
        &q,
        |keys| {
            Ok(db.change_proof(
                &start_root,
                &end_root,
                q.start.as_deref(),
                q.end.as_deref(),
                keys,
            )?)
        },
        |p: &ChangeProof| respond(change_proof_response::Response::ChangeProof(p.to_wire())),
        |p| p.key_changes.len(),
    );
    match proved {
        // Without the history, a range proof at the end root lets the client go on.
        Err(ServerError::Db(DbError::InsufficientHistory(_))) => {
            range_bytes(db, &end_root, &q, |p| {
                respond(change_proof_response::Response::RangeProof(p.to_wire()))
            })
            .map(Reply::Bytes)
        }
        other => other.map(Reply::Bytes),
    }
}
