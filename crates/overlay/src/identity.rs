//! A node's identity and signed peer records.
//!
//! One secp256k1 key per node gives everything else: the transport identity ([`NodeKey`], the
//! compressed public key, from which the runtime derives the libp2p `PeerId`), the Ethereum
//! address, and the overlay address `keccak256(eth address ‖ network id as u64 LE ‖ nonce)`
//! (bee's `crypto.NewOverlayAddress`). A [`PeerRecord`] (bee's `BzzAddress`) carries the overlay,
//! the underlays and a recoverable signature over both and the network id; [`verify_record`]
//! recovers the key and checks that it owns the overlay, so no node can claim an address it
//! cannot sign for, and a record of another network does not verify.

use k256::ecdsa::{RecoveryId, Signature, SigningKey, VerifyingKey};
use tributary_chunk::Address;
use tributary_chunk::bmt::keccak256;
use tributary_wire::overlay::PeerRecord;
use tributary_wire::pushsync::Receipt;

/// Domain separation for record signatures.
const RECORD_DOMAIN: &[u8] = b"tributary-overlay-record";
/// Domain separation for push-sync receipts.
const RECEIPT_DOMAIN: &[u8] = b"tributary-push-receipt";
/// Most underlays a record may carry.
pub const MAX_UNDERLAYS: usize = 8;
/// Longest underlay (binary multiaddr) a record may carry.
pub const MAX_UNDERLAY_BYTES: usize = 128;

/// The compressed secp256k1 public key a transport authenticates a peer by.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeKey(pub [u8; 33]);

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeKey(")?;
        self.0[..6].iter().try_for_each(|b| write!(f, "{b:02x}"))?;
        write!(f, "…)")
    }
}

impl NodeKey {
    /// The Ethereum address of this key: how replica ACLs name a connected peer.
    ///
    /// # Errors
    /// [`RecordError::BadKey`] when the bytes are not a secp256k1 point.
    pub fn eth_address(&self) -> Result<[u8; 20], RecordError> {
        let key = VerifyingKey::from_sec1_bytes(&self.0).map_err(|_| RecordError::BadKey)?;
        Ok(eth_address(&key))
    }
}

/// Why an identity or a peer record was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The secret key is not a valid secp256k1 scalar.
    #[error("invalid secret key")]
    BadSecret,
    /// A field has the wrong length.
    #[error("{field} has {len} bytes, expected {expected}")]
    BadLength {
        /// The field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The length it must have.
        expected: usize,
    },
    /// Too many or too long underlays.
    #[error("too many or too long underlays ({count})")]
    BadUnderlays {
        /// How many there were.
        count: usize,
    },
    /// The signature does not recover to a public key.
    #[error("signature does not verify")]
    BadSignature,
    /// A public key is not a secp256k1 point.
    #[error("not a secp256k1 public key")]
    BadKey,
    /// The signer does not own the overlay address.
    #[error("overlay {claimed} is not the signer's ({derived})")]
    OverlayMismatch {
        /// The overlay the record claims.
        claimed: Address,
        /// The overlay the signer's key gives.
        derived: Address,
    },
}

/// A node's secret key and nonce.
#[derive(Clone)]
pub struct Identity {
    key: SigningKey,
    nonce: [u8; 32],
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("key", &self.node_key())
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// An identity from a 32-byte secret key and a 32-byte nonce.
    ///
    /// # Errors
    /// When `secret` is zero or not below the curve order.
    pub fn from_secret(secret: &[u8; 32], nonce: [u8; 32]) -> Result<Self, RecordError> {
        let key = SigningKey::from_slice(secret).map_err(|_| RecordError::BadSecret)?;
        Ok(Self { key, nonce })
    }

    /// The secret key's bytes (to store in the data directory).
    #[must_use]
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.key.to_bytes().into()
    }

    /// The nonce.
    #[must_use]
    pub fn nonce(&self) -> [u8; 32] {
        self.nonce
    }

    /// The transport identity.
    #[must_use]
    pub fn node_key(&self) -> NodeKey {
        node_key_of(self.key.verifying_key())
    }

    /// The Ethereum address of the key.
    #[must_use]
    pub fn eth_address(&self) -> [u8; 20] {
        eth_address(self.key.verifying_key())
    }

    /// The overlay address in network `network_id`.
    #[must_use]
    pub fn overlay(&self, network_id: u64) -> Address {
        overlay_address(&self.eth_address(), network_id, &self.nonce)
    }

    /// A signed record of this node's overlay and `underlays` in network `network_id`.
    ///
    /// # Errors
    /// When there are more than [`MAX_UNDERLAYS`] underlays or one is longer than
    /// [`MAX_UNDERLAY_BYTES`].
    pub fn sign_record(
        &self,
        network_id: u64,
        underlays: Vec<Vec<u8>>,
        timestamp: u64,
    ) -> Result<PeerRecord, RecordError> {
        check_underlays(&underlays)?;
        let overlay = self.overlay(network_id);
        let digest = record_digest(&overlay, network_id, timestamp, &underlays);
        let sig = self.sign(&digest)?;
        Ok(PeerRecord {
            overlay: overlay.0.to_vec(),
            underlays,
            nonce: self.nonce.to_vec(),
            timestamp,
            signature: sig,
        })
    }
}

impl Identity {
    /// A recoverable signature (r ‖ s ‖ v, 65 bytes) over `digest`.
    ///
    /// # Errors
    /// [`RecordError::BadSignature`] if signing fails.
    pub fn sign(&self, digest: &[u8; 32]) -> Result<Vec<u8>, RecordError> {
        let (signature, recovery) = self
            .key
            .sign_prehash_recoverable(digest)
            .map_err(|_| RecordError::BadSignature)?;
        let mut sig = signature.to_bytes().to_vec();
        sig.push(recovery.to_byte());
        Ok(sig)
    }

    /// This node's push-sync receipt for the chunk at `address`, stored at `depth`, in
    /// network `network_id`.
    ///
    /// # Errors
    /// [`RecordError::BadSignature`] if signing fails.
    pub fn sign_receipt(
        &self,
        address: &Address,
        depth: u8,
        network_id: u64,
    ) -> Result<Receipt, RecordError> {
        let digest = receipt_digest(address, depth, network_id);
        let sig = self.sign(&digest)?;
        Ok(Receipt {
            address: address.0.to_vec(),
            signature: sig,
            nonce: self.nonce.to_vec(),
            depth: u32::from(depth),
            error: String::new(),
        })
    }
}

/// A receipt whose signature was checked: who stored which chunk at which depth.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedReceipt {
    /// The chunk.
    pub address: Address,
    /// The storer's overlay, derived from the signing key and the nonce.
    pub storer: Address,
    /// The storer's depth.
    pub depth: u8,
    /// The receipt as received (to relay unchanged).
    pub wire: Receipt,
}

/// Checks a push-sync receipt of network `network_id`: field lengths, the signature, and
/// the storer's overlay it gives. Whether that storer's neighbourhood holds the chunk is the
/// push core's check.
///
/// # Errors
/// Which check failed.
pub fn verify_receipt(wire: &Receipt, network_id: u64) -> Result<VerifiedReceipt, RecordError> {
    let address = Address(fixed::<32>("address", &wire.address)?);
    let nonce = fixed::<32>("nonce", &wire.nonce)?;
    let sig = fixed::<65>("signature", &wire.signature)?;
    let depth = u8::try_from(wire.depth).map_err(|_| RecordError::BadLength {
        field: "depth",
        len: 4,
        expected: 1,
    })?;
    let signer = recover(&receipt_digest(&address, depth, network_id), &sig)?;
    Ok(VerifiedReceipt {
        address,
        storer: overlay_address(&eth_address(&signer), network_id, &nonce),
        depth,
        wire: wire.clone(),
    })
}

/// The key whose recoverable signature `sig` is over `digest`.
fn recover(digest: &[u8; 32], sig: &[u8; 65]) -> Result<VerifyingKey, RecordError> {
    let signature = Signature::from_slice(&sig[..64]).map_err(|_| RecordError::BadSignature)?;
    let recovery = RecoveryId::from_byte(sig[64]).ok_or(RecordError::BadSignature)?;
    VerifyingKey::recover_from_prehash(digest, &signature, recovery)
        .map_err(|_| RecordError::BadSignature)
}

/// The Ethereum address of the key whose recoverable signature `sig` is over `digest`: how
/// signed replica records and syncgroup changes name their author.
///
/// # Errors
/// [`RecordError::BadLength`] unless `sig` is 65 bytes; [`RecordError::BadSignature`] if it
/// recovers no key.
pub fn recover_address(digest: &[u8; 32], sig: &[u8]) -> Result<[u8; 20], RecordError> {
    use secp256k1::ecdsa::{RecoverableSignature, RecoveryId as LibRecoveryId};
    let sig = fixed::<65>("signature", sig)?;
    // libsecp256k1 rather than k256 here: replicas recover one key per log record received,
    // and its recovery takes a fraction of k256's time. The same signatures recover alike
    // (`recover_address_agrees_with_k256`).
    let recovery =
        LibRecoveryId::try_from(i32::from(sig[64])).map_err(|_| RecordError::BadSignature)?;
    let signature = RecoverableSignature::from_compact(&sig[..64], recovery)
        .map_err(|_| RecordError::BadSignature)?;
    // Low-S only, as k256 verifies: otherwise (r, n − s) with the other recovery id would be
    // a second valid signature of every message.
    let mut standard = signature.to_standard();
    standard.normalize_s();
    if standard != signature.to_standard() {
        return Err(RecordError::BadSignature);
    }
    let key = secp256k1::SECP256K1
        .recover_ecdsa(secp256k1::Message::from_digest(*digest), &signature)
        .map_err(|_| RecordError::BadSignature)?;
    let point = key.serialize_uncompressed();
    let hash = keccak256(&point[1..]);
    let mut out = [0u8; 20];
    out.copy_from_slice(&hash[12..]);
    Ok(out)
}

fn receipt_digest(address: &Address, depth: u8, network_id: u64) -> [u8; 32] {
    let mut data = Vec::with_capacity(RECEIPT_DOMAIN.len() + 41);
    data.extend_from_slice(RECEIPT_DOMAIN);
    data.extend_from_slice(&address.0);
    data.push(depth);
    data.extend_from_slice(&network_id.to_le_bytes());
    keccak256(&data)
}

/// A record whose signature and overlay were checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedRecord {
    /// The overlay address.
    pub overlay: Address,
    /// The key that signed it.
    pub key: NodeKey,
    /// The record as received (to gossip and persist unchanged).
    pub wire: PeerRecord,
}

/// Checks a record: field lengths, the signature, and that the signer owns the overlay in
/// network `network_id`.
///
/// # Errors
/// Which check failed.
pub fn verify_record(wire: &PeerRecord, network_id: u64) -> Result<VerifiedRecord, RecordError> {
    let overlay = Address(fixed::<32>("overlay", &wire.overlay)?);
    let nonce = fixed::<32>("nonce", &wire.nonce)?;
    let sig = fixed::<65>("signature", &wire.signature)?;
    check_underlays(&wire.underlays)?;
    let digest = record_digest(&overlay, network_id, wire.timestamp, &wire.underlays);
    let signer = recover(&digest, &sig)?;
    let derived = overlay_address(&eth_address(&signer), network_id, &nonce);
    if derived != overlay {
        return Err(RecordError::OverlayMismatch {
            claimed: overlay,
            derived,
        });
    }
    Ok(VerifiedRecord {
        overlay,
        key: node_key_of(&signer),
        wire: wire.clone(),
    })
}

/// `keccak256(eth address ‖ network id as u64 LE ‖ nonce)`.
#[must_use]
pub fn overlay_address(eth: &[u8; 20], network_id: u64, nonce: &[u8; 32]) -> Address {
    let mut data = Vec::with_capacity(60);
    data.extend_from_slice(eth);
    data.extend_from_slice(&network_id.to_le_bytes());
    data.extend_from_slice(nonce);
    Address(keccak256(&data))
}

fn eth_address(key: &VerifyingKey) -> [u8; 20] {
    let point = key.to_encoded_point(false);
    let hash = keccak256(&point.as_bytes()[1..]);
    let mut out = [0u8; 20];
    out.copy_from_slice(&hash[12..]);
    out
}

fn node_key_of(key: &VerifyingKey) -> NodeKey {
    let mut out = [0u8; 33];
    out.copy_from_slice(key.to_encoded_point(true).as_bytes());
    NodeKey(out)
}

fn record_digest(
    overlay: &Address,
    network_id: u64,
    timestamp: u64,
    underlays: &[Vec<u8>],
) -> [u8; 32] {
    let mut data = Vec::with_capacity(128);
    data.extend_from_slice(RECORD_DOMAIN);
    data.extend_from_slice(&overlay.0);
    data.extend_from_slice(&network_id.to_le_bytes());
    data.extend_from_slice(&timestamp.to_le_bytes());
    for underlay in underlays {
        // Bounded by MAX_UNDERLAY_BYTES, checked before signing and verifying.
        let len = u32::try_from(underlay.len()).unwrap_or(u32::MAX);
        data.extend_from_slice(&len.to_le_bytes());
        data.extend_from_slice(underlay);
    }
    keccak256(&data)
}

fn check_underlays(underlays: &[Vec<u8>]) -> Result<(), RecordError> {
    if underlays.len() > MAX_UNDERLAYS || underlays.iter().any(|u| u.len() > MAX_UNDERLAY_BYTES) {
        return Err(RecordError::BadUnderlays {
            count: underlays.len(),
        });
    }
    Ok(())
}

fn fixed<const N: usize>(field: &'static str, bytes: &[u8]) -> Result<[u8; N], RecordError> {
    bytes.try_into().map_err(|_| RecordError::BadLength {
        field,
        len: bytes.len(),
        expected: N,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recover_address_agrees_with_k256() {
        for seed in 1..=40u8 {
            let id = identity(seed);
            let digest = keccak256(&[seed; 7]);
            let mut sig = id.sign(&digest).expect("signs");
            assert_eq!(recover_address(&digest, &sig), Ok(id.eth_address()));
            let fixed_sig: [u8; 65] = sig.clone().try_into().expect("65 bytes");
            let k = recover(&digest, &fixed_sig).expect("k256 recovers");
            assert_eq!(eth_address(&k), id.eth_address());
            // Another digest, a flipped bit, a bad recovery id: never this signer.
            let other = keccak256(&[seed; 8]);
            assert_ne!(recover_address(&other, &sig), Ok(id.eth_address()));
            sig[10] ^= 1;
            assert_ne!(recover_address(&digest, &sig), Ok(id.eth_address()));
            sig[10] ^= 1;
            sig[64] = 4;
            assert_eq!(
                recover_address(&digest, &sig),
                Err(RecordError::BadSignature)
            );
            assert_eq!(
                recover_address(&digest, &sig[..64]),
                Err(RecordError::BadLength {
                    field: "signature",
                    len: 64,
                    expected: 65
                })
            );
        }
        assert_eq!(
            recover_address(&[0; 32], &[0; 65]),
            Err(RecordError::BadSignature)
        );
    }

    #[test]
    fn a_high_s_twin_of_a_signature_is_refused() {
        let id = identity(3);
        let digest = keccak256(b"twin");
        let sig = id.sign(&digest).expect("signs");
        let low = Signature::from_slice(&sig[..64]).expect("signature");
        let (r, s) = low.split_scalars();
        let high = Signature::from_scalars(r, -*s).expect("high-S twin");
        let mut twin = high.to_bytes().to_vec();
        twin.push(sig[64] ^ 1);
        // k256 refuses it, and so does recover_address.
        let fixed_twin: [u8; 65] = twin.clone().try_into().expect("65 bytes");
        assert!(recover(&digest, &fixed_twin).is_err());
        assert_eq!(
            recover_address(&digest, &twin),
            Err(RecordError::BadSignature)
        );
        assert_eq!(recover_address(&digest, &sig), Ok(id.eth_address()));
    }

    fn identity(seed: u8) -> Identity {
        Identity::from_secret(&[seed; 32], [seed.wrapping_add(1); 32]).expect("valid key")
    }

    #[test]
    fn a_receipt_names_its_signer_and_nothing_else_verifies() {
        let id = identity(3);
        let chunk = Address([9; 32]);
        let receipt = id.sign_receipt(&chunk, 4, 1).expect("signs");
        let v = verify_receipt(&receipt, 1).expect("verifies");
        assert_eq!((v.address, v.storer, v.depth), (chunk, id.overlay(1), 4));
        // Another network, another depth or another chunk: another signer (or none).
        let elsewhere = verify_receipt(&receipt, 2).map(|v| v.storer);
        assert_ne!(elsewhere, Ok(id.overlay(2)));
        let mut deeper = receipt.clone();
        deeper.depth = 5;
        assert_ne!(
            verify_receipt(&deeper, 1).map(|v| v.storer),
            Ok(id.overlay(1))
        );
        let mut other = receipt.clone();
        other.address = vec![8; 32];
        assert_ne!(
            verify_receipt(&other, 1).map(|v| v.storer),
            Ok(id.overlay(1))
        );
        // Another nonce claims another overlay than the signer's.
        let mut renamed = receipt.clone();
        renamed.nonce = vec![0; 32];
        assert_ne!(
            verify_receipt(&renamed, 1).map(|v| v.storer),
            Ok(id.overlay(1))
        );
        let mut short = receipt;
        short.signature.pop();
        assert!(verify_receipt(&short, 1).is_err());
    }

    #[test]
    fn overlay_is_keccak_of_eth_address_network_and_nonce() {
        // Key 0x…01 is the generator: its Ethereum address is well known.
        let mut secret = [0u8; 32];
        secret[31] = 1;
        let id = Identity::from_secret(&secret, [0; 32]).expect("valid key");
        assert_eq!(
            hex::encode(id.eth_address()),
            "7e5f4552091a69125d5dfcb7b8c2659029395bdf"
        );
        let mut data = id.eth_address().to_vec();
        data.extend_from_slice(&7u64.to_le_bytes());
        data.extend_from_slice(&[0; 32]);
        assert_eq!(id.overlay(7).0, keccak256(&data));
        assert_ne!(id.overlay(7), id.overlay(8));
    }

    #[test]
    fn records_verify_and_name_their_signer() {
        let id = identity(3);
        let record = id
            .sign_record(1, vec![b"/ip4/x".to_vec()], 99)
            .expect("signs");
        let verified = verify_record(&record, 1).expect("verifies");
        assert_eq!(verified.overlay, id.overlay(1));
        assert_eq!(verified.key, id.node_key());
    }

    #[test]
    fn forged_and_foreign_records_are_refused() {
        let id = identity(3);
        let record = id
            .sign_record(1, vec![b"/ip4/x".to_vec()], 99)
            .expect("signs");
        // Another network.
        assert!(verify_record(&record, 2).is_err());
        // Someone else's overlay under this key's signature.
        let mut forged = record.clone();
        forged.overlay = identity(4).overlay(1).0.to_vec();
        assert!(verify_record(&forged, 1).is_err());
        // Changed underlay, timestamp, signature byte, truncated fields.
        let mut moved = record.clone();
        moved.underlays[0].push(b'1');
        assert!(verify_record(&moved, 1).is_err());
        let mut later = record.clone();
        later.timestamp += 1;
        assert!(verify_record(&later, 1).is_err());
        let mut flipped = record.clone();
        flipped.signature[10] ^= 1;
        assert!(verify_record(&flipped, 1).is_err());
        let mut short = record;
        short.nonce.pop();
        assert!(matches!(
            verify_record(&short, 1),
            Err(RecordError::BadLength { field: "nonce", .. })
        ));
        assert!(identity(5).sign_record(1, vec![vec![0; 200]], 1).is_err());
    }
}
