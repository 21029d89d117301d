//! What the fuzz targets (`fuzz/`) share with the repository: their fixtures, and the seed
//! corpus that starts each target from valid inputs instead of nothing.
//!
//! A fuzzer that starts from empty inputs rarely builds a range proof that verifies or a chunk
//! tree that joins, so the deep paths of the verifiers go unexercised. [`write_corpus`] writes,
//! per target, valid inputs in the target's input format (and a few near-misses); the fuzzer
//! mutates from there. `cargo run -p tributary-sim --example fuzz-corpus -- fuzz/corpus`
//! writes them; `scripts/fuzz.sh` does so before every run.
//!
//! | target | input |
//! |---|---|
//! | `proof_verify` | selector byte (bounds, range or change) ‖ a `RangeProof` or `ChangeProof` |
//! | `chunk_join` | records of claimed address (32) ‖ length (u16 LE) ‖ chunk data; the first is the root |
//! | `overlay_message` | an `OverlayMessage` as a peer sends it |
//! | `sync_request` | a `sync.proto` `Request` as a state-sync client sends it |

use std::path::Path;
use std::sync::Arc;

use prost::Message;
use tributary_chunk::file::{ChunkSink, Splitter, StoreError};
use tributary_chunk::{Address, Chunk};
use tributary_merkle::{BatchOp, Config, Hash, MerkleDb};
use tributary_overlay::Identity;
use tributary_store::MemStore;
use tributary_wire::overlay::{Depth, Handshake, OverlayMessage, Peers, overlay_message};
use tributary_wire::sync::{self as pb, MaybeBytes, request};

/// The trie every proof target verifies against: 40 keys committed in two revisions.
pub struct ProofFixture {
    /// The database (branch factor 16).
    pub db: MerkleDb,
    /// Its root after both commits.
    pub root: Hash,
    /// Its root after the first commit.
    pub old_root: Hash,
    /// Its key-values, in key order.
    pub pairs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Builds the [`ProofFixture`].
///
/// # Panics
/// Never: its fixed data (no empty key, small values) goes into an in-memory store, which
/// takes it.
#[must_use]
pub fn proof_fixture() -> ProofFixture {
    let db = MerkleDb::open(Arc::new(MemStore::new()), Config::default())
        .expect("an in-memory store opens");
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0u8..40)
        .map(|i| (vec![i / 8, i % 8, i], vec![i; usize::from(i) % 40]))
        .collect();
    let put = |p: &[(Vec<u8>, Vec<u8>)]| {
        p.iter()
            .map(|(k, v)| BatchOp::Put(k.clone(), v.clone()))
            .collect::<Vec<_>>()
    };
    let old_root = db.commit(put(&pairs[..20])).expect("fixture commit");
    let root = db.commit(put(&pairs[20..])).expect("fixture commit");
    ProofFixture {
        db,
        root,
        old_root,
        pairs,
    }
}

/// The bounds `proof_verify` derives from its selector byte: bit 3 sets a start key from bits
/// 0–2, bit 4 the end key `[4]`; bit 5 picks change proofs.
#[must_use]
pub fn proof_bounds(selector: u8) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    let start = (selector & 0x08 != 0).then(|| vec![selector & 0x07, 0, 0]);
    let end = (selector & 0x10 != 0).then(|| vec![4u8]);
    (start, end)
}

/// Errors of writing the corpus.
#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    /// Writing a file failed.
    #[error("writing {path}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The fixture could not make a proof.
    #[error("making a proof of the fixture")]
    Proof(#[from] tributary_merkle::DbError),
    /// A record could not be signed.
    #[error("signing a record")]
    Record(#[from] tributary_overlay::RecordError),
    /// A chunk tree could not be built.
    #[error("splitting a file")]
    Split(#[from] tributary_chunk::file::FileError),
    /// A chunk could not be made.
    #[error("making a chunk")]
    Chunk(#[from] tributary_chunk::ChunkError),
}

/// Writes the seed corpus of every target under `dir/<target>/`; returns how many inputs.
///
/// # Errors
/// When a file cannot be written or a fixture cannot be built.
pub fn write_corpus(dir: &Path) -> Result<usize, CorpusError> {
    let mut written = 0;
    for (target, inputs) in [
        ("proof_verify", proof_inputs()?),
        ("chunk_join", chunk_inputs()?),
        ("overlay_message", overlay_inputs()?),
        ("sync_request", sync_inputs()),
        ("pull_message", pull_inputs()),
        ("chunk_message", chunk_message_inputs()?),
    ] {
        let sub = dir.join(target);
        let io = |source| CorpusError::Io {
            path: sub.display().to_string(),
            source,
        };
        std::fs::create_dir_all(&sub).map_err(io)?;
        for (i, input) in inputs.iter().enumerate() {
            std::fs::write(sub.join(format!("seed-{i:03}")), input).map_err(io)?;
            written += 1;
        }
    }
    Ok(written)
}

/// Valid pull-sync requests and answers of each kind.
fn pull_inputs() -> Vec<Vec<u8>> {
    use tributary_wire::pullsync::{
        Cursors, CursorsRequest, Delivery, Get, Offer, Request, Response, Want, bitvector, request,
        response,
    };
    let chunk = |i: u32| {
        Chunk::new(4, &i.to_le_bytes())
            .map(Chunk::into_data)
            .unwrap_or_default()
    };
    let requests = [
        request::Message::Cursors(CursorsRequest {}),
        request::Message::Get(Get {
            bin: 0,
            start: 1,
            end: 100,
            epoch: 7,
        }),
        request::Message::Get(Get {
            bin: 1,
            start: 5,
            end: 0,
            epoch: 0,
        }),
        request::Message::Want(Want {
            bin: 0,
            start: 1,
            count: 20,
            bitvector: bitvector::encode(20, [0, 3, 19]),
            epoch: 7,
        }),
    ];
    let responses = [
        response::Message::Cursors(Cursors {
            cursors: (0..32).collect(),
            epoch: 7,
        }),
        response::Message::Offer(Offer {
            topmost: 3,
            addresses: vec![0xAB; 96],
        }),
        response::Message::Delivery(Delivery {
            chunks: vec![chunk(1), chunk(2)],
        }),
    ];
    requests
        .into_iter()
        .map(|m| Request::new(m).encode_to_vec())
        .chain(
            responses
                .into_iter()
                .map(|m| Response::new(m).encode_to_vec()),
        )
        .collect()
}

fn proof_inputs() -> Result<Vec<Vec<u8>>, CorpusError> {
    let f = proof_fixture();
    let mut inputs = Vec::new();
    for selector in [0u8, 0x08, 0x0B, 0x10, 0x18, 0x1B] {
        let (start, end) = proof_bounds(selector);
        for limit in [1, 3, 40] {
            let proof =
                f.db.range_proof(&f.root, start.as_deref(), end.as_deref(), limit)?;
            inputs.push([&[selector][..], &proof.to_bytes()].concat());
            if let Ok(change) = f.db.change_proof(
                &f.old_root,
                &f.root,
                start.as_deref(),
                end.as_deref(),
                limit,
            ) {
                inputs.push([&[selector | 0x20][..], &change.to_bytes()].concat());
            }
        }
    }
    Ok(inputs)
}

/// Collects a splitter's chunks as `chunk_join` records.
#[derive(Default)]
struct Records(Vec<(Address, Vec<u8>)>);

impl ChunkSink for Records {
    fn put(&mut self, chunk: Chunk) -> Result<(), StoreError> {
        self.0.push((chunk.address(), chunk.into_data()));
        Ok(())
    }
}

fn chunk_inputs() -> Result<Vec<Vec<u8>>, CorpusError> {
    let mut inputs = Vec::new();
    // One chunk, a leaf boundary, and trees of two levels (the root chunk comes last).
    for size in [0usize, 1, 4096, 4097, 10_000, 128 * 4096 + 1] {
        let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        let mut splitter = Splitter::new(Records::default());
        splitter.write(&data)?;
        let (root, records) = splitter.finish()?;
        let mut chunks = records.0;
        chunks.sort_by_key(|(a, _)| *a != root); // the root first: the target joins from it
        let mut input = Vec::new();
        for (address, data) in chunks {
            let len = u16::try_from(data.len()).unwrap_or(u16::MAX);
            input.extend_from_slice(&address.0);
            input.extend_from_slice(&len.to_le_bytes());
            input.extend_from_slice(&data);
        }
        inputs.push(input);
    }
    Ok(inputs)
}

fn overlay_inputs() -> Result<Vec<Vec<u8>>, CorpusError> {
    let record = |secret: u8| -> Result<_, CorpusError> {
        let id = Identity::from_secret(&[secret; 32], [secret; 32])?;
        Ok(id.sign_record(1, vec![b"/ip4/127.0.0.1/tcp/1634".to_vec()], 1_700_000_000)?)
    };
    let message = |m| OverlayMessage { message: Some(m) }.encode_to_vec();
    let handshake = |record, light| {
        message(overlay_message::Message::Handshake(Handshake {
            version: 1,
            network_id: 1,
            record: Some(record),
            light,
        }))
    };
    let peers = (2..6).map(record).collect::<Result<Vec<_>, _>>()?;
    Ok(vec![
        handshake(record(1)?, false),
        handshake(record(1)?, true),
        message(overlay_message::Message::Peers(Peers { peers })),
        message(overlay_message::Message::Depth(Depth { depth: 3 })),
    ])
}

fn sync_inputs() -> Vec<Vec<u8>> {
    let f = proof_fixture();
    let bound = |b: &[u8]| {
        Some(MaybeBytes {
            value: b.to_vec(),
            is_nothing: false,
        })
    };
    let range = pb::SyncGetRangeProofRequest {
        root_hash: f.root.to_vec(),
        start_key: bound(&[1]),
        end_key: bound(&[3, 9]),
        key_limit: 8,
        bytes_limit: 1 << 20,
    };
    let change = pb::SyncGetChangeProofRequest {
        start_root_hash: f.old_root.to_vec(),
        end_root_hash: f.root.to_vec(),
        start_key: None,
        end_key: bound(&[4]),
        key_limit: 16,
        bytes_limit: 1 << 20,
    };
    let whole = pb::SyncGetRangeProofRequest {
        start_key: None,
        end_key: None,
        key_limit: 2048,
        ..range.clone()
    };
    [
        request::Message::RangeProofRequest(range),
        request::Message::RangeProofRequest(whole),
        request::Message::ChangeProofRequest(change),
    ]
    .into_iter()
    .map(|m| pb::Request { message: Some(m) }.encode_to_vec())
    .collect()
}

/// Seeds of `chunk_message`: a retrieval request and both answers, a push and a receipt
/// signed for the chunk the target pushes.
fn chunk_message_inputs() -> Result<Vec<Vec<u8>>, CorpusError> {
    use tributary_wire::{pushsync, retrieval};
    let chunk = Chunk::new(4, b"seed")?;
    let signer = tributary_overlay::Identity::from_secret(&[5; 32], [6; 32])?;
    Ok(vec![
        retrieval::Request {
            address: chunk.address().0.to_vec(),
            hops: 20,
        }
        .encode_to_vec(),
        retrieval::Delivery {
            chunk: chunk.data().to_vec(),
            error: String::new(),
        }
        .encode_to_vec(),
        retrieval::Delivery {
            chunk: Vec::new(),
            error: "not found".into(),
        }
        .encode_to_vec(),
        pushsync::Delivery {
            chunk: chunk.data().to_vec(),
        }
        .encode_to_vec(),
        signer.sign_receipt(&chunk.address(), 0, 1)?.encode_to_vec(),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every seed is what its target expects: the proofs verify, the trees join, the messages
    /// and requests decode (a corpus of garbage would start the fuzzer from nothing again).
    #[test]
    fn seeds_are_valid_inputs_of_their_targets() {
        let f = proof_fixture();
        for input in proof_inputs().expect("proofs") {
            let (selector, body) = input.split_first().expect("selector");
            let (start, end) = proof_bounds(*selector);
            if selector & 0x20 == 0 {
                let proof = tributary_merkle::RangeProof::from_bytes(body).expect("decodes");
                proof
                    .verify(
                        start.as_deref(),
                        end.as_deref(),
                        &f.root,
                        Default::default(),
                    )
                    .expect("verifies");
            } else {
                let proof = tributary_merkle::ChangeProof::from_bytes(body).expect("decodes");
                assert!(!proof.key_changes.is_empty(), "a change proof with changes");
            }
        }
        assert_eq!(chunk_inputs().expect("chunks").len(), 6);
        for input in overlay_inputs().expect("overlay") {
            OverlayMessage::decode(input.as_slice()).expect("decodes");
        }
        for input in sync_inputs() {
            let reply = tributary_statesync::server::handle(&f.db, &input).expect("served");
            assert!(matches!(
                reply,
                tributary_statesync::server::Reply::Bytes(_)
            ));
        }
        let pull = pull_inputs();
        assert_eq!(pull.len(), 7);
        for input in &pull[..4] {
            tributary_wire::pullsync::Request::decode(input.as_slice()).expect("a request");
        }
        for input in &pull[4..] {
            let r = tributary_wire::pullsync::Response::decode(input.as_slice()).expect("decodes");
            assert!(r.message.is_some(), "an answer");
        }
        let chunk = chunk_message_inputs().expect("chunk messages");
        assert!(tributary_stream::retrieval::decode_request(&chunk[0]).is_ok());
        assert!(matches!(
            tributary_stream::retrieval::decode_delivery(&chunk[1]),
            Ok(Some(_))
        ));
        assert_eq!(
            tributary_stream::retrieval::decode_delivery(&chunk[2]),
            Ok(None)
        );
        assert!(tributary_stream::push::decode_delivery(&chunk[3]).is_ok());
        let receipt = tributary_stream::push::decode_receipt(&chunk[4])
            .expect("decodes")
            .expect("a receipt");
        tributary_overlay::identity::verify_receipt(&receipt, 1).expect("verifies");
    }
}
