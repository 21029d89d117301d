//! The node's key in its data directory, and the mapping between libp2p peer ids and overlay
//! node keys.
//!
//! `DIR/identity.json` holds `{"secret_key": "<64 hex>", "nonce": "<64 hex>"}`, written once
//! with mode 0600 (through a temporary file and a rename, so a crash never leaves half a key).
//! The same secp256k1 key is the libp2p identity (so the `PeerId` is derived from it) and the
//! overlay key (so the overlay address is too): a peer authenticated by Noise is exactly the
//! key that must have signed its overlay record.

use std::path::{Path, PathBuf};

use libp2p::PeerId;
use libp2p::identity::{Keypair, PublicKey, secp256k1};
use serde::{Deserialize, Serialize};
use tributary_overlay::{Identity, NodeKey, RecordError};

/// File name of the key in the data directory.
pub const IDENTITY_FILE: &str = "identity.json";

/// Errors of loading or creating the key.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file does not hold a valid key.
    #[error("{path} does not hold a valid key: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The operating system gave no randomness.
    #[error("no randomness for a new key: {0}")]
    Random(String),
}

#[derive(Serialize, Deserialize)]
struct KeyFile {
    secret_key: String,
    nonce: String,
}

/// The node's identity in both forms.
#[derive(Clone, Debug)]
pub struct NodeIdentity {
    /// The overlay identity.
    pub identity: Identity,
    /// The libp2p keypair (the same secret).
    pub keypair: Keypair,
}

impl NodeIdentity {
    /// Both forms of the identity with this secret key and nonce.
    ///
    /// # Errors
    /// When `secret` is not a valid secp256k1 secret key.
    pub fn from_secret(secret: &[u8; 32], nonce: [u8; 32]) -> Result<Self, RecordError> {
        let identity = Identity::from_secret(secret, nonce)?;
        let mut libp2p_secret = *secret;
        let key = secp256k1::SecretKey::try_from_bytes(&mut libp2p_secret)
            .map_err(|_| RecordError::BadSecret)?;
        let keypair = Keypair::from(secp256k1::Keypair::from(key));
        Ok(Self { identity, keypair })
    }

    /// A fresh random identity (the key file's, or a throwaway one for a sync client).
    ///
    /// # Errors
    /// When the operating system gives no randomness.
    pub fn random() -> Result<Self, IdentityError> {
        loop {
            let mut secret = [0u8; 32];
            let mut nonce = [0u8; 32];
            getrandom::fill(&mut secret).map_err(|e| IdentityError::Random(e.to_string()))?;
            getrandom::fill(&mut nonce).map_err(|e| IdentityError::Random(e.to_string()))?;
            // A random 32-byte string is a valid scalar except with probability ~2^-128.
            if let Ok(identity) = Self::from_secret(&secret, nonce) {
                return Ok(identity);
            }
        }
    }

    /// The libp2p peer id.
    #[must_use]
    pub fn peer_id(&self) -> PeerId {
        self.keypair.public().to_peer_id()
    }
}

/// Loads `DIR/identity.json`, creating it with a fresh random key if it does not exist.
///
/// # Errors
/// When the file cannot be read or written or does not hold a valid key.
pub fn load_or_create(dir: &Path) -> Result<NodeIdentity, IdentityError> {
    let path = dir.join(IDENTITY_FILE);
    let io = |source| IdentityError::Io {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => parse(&path, &text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let identity = NodeIdentity::random()?.identity;
            let file = KeyFile {
                secret_key: hex::encode(identity.secret_bytes()),
                nonce: hex::encode(identity.nonce()),
            };
            let text = serde_json::to_string_pretty(&file).map_err(|e| io(e.into()))?;
            write_private(&path, text.as_bytes()).map_err(io)?;
            parse(&path, &text)
        }
        Err(e) => Err(io(e)),
    }
}

fn parse(path: &Path, text: &str) -> Result<NodeIdentity, IdentityError> {
    let invalid = |reason: String| IdentityError::Invalid {
        path: path.to_owned(),
        reason,
    };
    let file: KeyFile = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
    let bytes32 = |field: &str, hex_text: &str| -> Result<[u8; 32], IdentityError> {
        let bytes = hex::decode(hex_text).map_err(|e| invalid(format!("{field}: {e}")))?;
        bytes
            .try_into()
            .map_err(|_| invalid(format!("{field} is not 32 bytes")))
    };
    let secret = bytes32("secret_key", &file.secret_key)?;
    let nonce = bytes32("nonce", &file.nonce)?;
    NodeIdentity::from_secret(&secret, nonce).map_err(|e| invalid(e.to_string()))
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// The overlay key of a libp2p peer, if its id embeds a secp256k1 key (every Tributary node's
/// does; other peers are not spoken to).
#[must_use]
pub fn node_key(peer: &PeerId) -> Option<NodeKey> {
    let multihash = peer.as_ref();
    // Code 0 is the identity multihash: the digest is the protobuf-encoded public key.
    if multihash.code() != 0 {
        return None;
    }
    let key = PublicKey::try_decode_protobuf(multihash.digest()).ok()?;
    Some(NodeKey(key.try_into_secp256k1().ok()?.to_bytes()))
}

/// The libp2p peer id of an overlay key.
#[must_use]
pub fn peer_id(key: &NodeKey) -> Option<PeerId> {
    let public = secp256k1::PublicKey::try_from_bytes(&key.0).ok()?;
    Some(PublicKey::from(public).to_peer_id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_created_once_and_maps_both_ways() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = load_or_create(dir.path()).expect("creates");
        let b = load_or_create(dir.path()).expect("loads");
        assert_eq!(a.peer_id(), b.peer_id());
        assert_eq!(a.identity.overlay(1), b.identity.overlay(1));
        let key = a.identity.node_key();
        assert_eq!(node_key(&a.peer_id()), Some(key));
        assert_eq!(peer_id(&key), Some(a.peer_id()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(IDENTITY_FILE))
                .expect("exists")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_damaged_key_file_is_an_error_not_a_new_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join(IDENTITY_FILE),
            "{\"secret_key\":\"00\",\"nonce\":\"00\"}",
        )
        .expect("writes");
        let err = load_or_create(dir.path()).expect_err("refused");
        assert!(err.to_string().contains("not 32 bytes"), "{err}");
    }
}
