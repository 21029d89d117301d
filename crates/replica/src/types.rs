//! The replica's names and identifiers: node ids, versions, the hybrid logical clock, and the
//! checks on database, collection and row names that every entry point applies.

use std::fmt;

use crate::ReplicaError;

/// Longest database or collection name, in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// Longest row key, in bytes.
pub const MAX_KEY_LEN: usize = 1024;
/// Largest row value. A batch of one collection must fit a frame, so values are bounded well
/// below what the store could hold.
pub const MAX_VALUE_LEN: usize = 1024 * 1024;
/// Most rows in one batch.
pub const MAX_BATCH_ROWS: usize = 10_000;
/// Most bytes of keys and values in one batch.
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// How far ahead of our clock a received record's time may be: further, and it is refused
/// (a peer whose clock is hours ahead would otherwise drag every clock it touches with it).
pub const MAX_CLOCK_AHEAD_MS: u64 = 60 * 60 * 1000;

/// A node's id in ACLs and as a log author: the Ethereum address of its secp256k1 key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct NodeId(pub [u8; 20]);

impl NodeId {
    /// Parses 40 hex digits, with or without `0x`.
    ///
    /// # Errors
    /// [`ReplicaError::BadNodeId`].
    pub fn parse(text: &str) -> Result<Self, ReplicaError> {
        let bad = || ReplicaError::BadNodeId(text.to_string());
        let hex_part = text.strip_prefix("0x").unwrap_or(text);
        let bytes = hex::decode(hex_part).map_err(|_| bad())?;
        Ok(Self(bytes.try_into().map_err(|_| bad())?))
    }

    /// From wire bytes.
    ///
    /// # Errors
    /// [`ReplicaError::Malformed`] unless 20 bytes.
    pub fn from_wire(bytes: &[u8]) -> Result<Self, ReplicaError> {
        bytes
            .try_into()
            .map(Self)
            .map_err(|_| ReplicaError::Malformed("a node id is not 20 bytes"))
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", &hex::encode(self.0)[..8])
    }
}

/// A version of a row: the hash of the write that made it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Version(pub [u8; 32]);

impl Version {
    /// From wire bytes.
    ///
    /// # Errors
    /// [`ReplicaError::Malformed`] unless 32 bytes.
    pub fn from_wire(bytes: &[u8]) -> Result<Self, ReplicaError> {
        bytes
            .try_into()
            .map(Self)
            .map_err(|_| ReplicaError::Malformed("a version is not 32 bytes"))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0[..8]))
    }
}

impl fmt::Debug for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Hybrid logical clock: `ms << 16 | counter`. Every local write takes a time above every time
/// this node has seen (its own and received), so a write that follows another causally always
/// has the later time whatever the wall clocks say; among concurrent writes the wall clock
/// decides.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Hlc(pub u64);

impl Hlc {
    /// The wall-clock part, in ms since the Unix epoch.
    #[must_use]
    pub fn millis(self) -> u64 {
        self.0 >> 16
    }

    /// A time for a local event at wall-clock `now_ms`.
    #[must_use]
    pub fn tick(self, now_ms: u64) -> Self {
        Self((now_ms << 16).max(self.0.saturating_add(1)))
    }

    /// The clock after seeing `time`.
    #[must_use]
    pub fn observe(self, time: u64) -> Self {
        Self(self.0.max(time))
    }
}

/// Collection names the node's HTTP API uses for its own routes under `/db/{db}/`, so no
/// collection may have them.
pub const RESERVED_COLLECTIONS: [&str; 5] = ["batch", "watch", "conflicts", "rules", "blobs"];

/// Checks the name of a collection this node writes to or shares: a valid name, and not
/// one of [`RESERVED_COLLECTIONS`]. Only new local writes and specs are held to it; records
/// and specs received keep the plain rule, so data from before the names were reserved
/// still syncs.
///
/// # Errors
/// [`ReplicaError::BadName`], [`ReplicaError::ReservedName`].
pub fn check_new_collection(name: &str) -> Result<(), ReplicaError> {
    if RESERVED_COLLECTIONS.contains(&name) {
        return Err(ReplicaError::ReservedName(name.to_string()));
    }
    check_name("collection", name)
}

/// Checks a database or collection name: 1 to 64 bytes of ASCII letters, digits, `_`, `-`
/// and `.`, so names never collide with the separators of store keys or ACL prefixes.
///
/// # Errors
/// [`ReplicaError::BadName`].
pub fn check_name(kind: &'static str, name: &str) -> Result<(), ReplicaError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ReplicaError::BadName {
            kind,
            name: name.chars().take(80).collect(),
        })
    }
}

/// Checks a row key (1 to 1,024 bytes of UTF-8) and value (at most 1 MiB).
///
/// # Errors
/// [`ReplicaError::BadKey`] or [`ReplicaError::ValueTooLarge`].
pub fn check_row(key: &str, value: &[u8]) -> Result<(), ReplicaError> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(ReplicaError::BadKey { len: key.len() });
    }
    if value.len() > MAX_VALUE_LEN {
        return Err(ReplicaError::ValueTooLarge { len: value.len() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hlc_ticks_past_everything_seen() {
        let clock = Hlc::default().tick(1000);
        assert_eq!(clock.millis(), 1000);
        let later = clock.tick(1000);
        assert!(later.0 > clock.0, "same millisecond: the counter moves");
        let seen = later.observe(5000 << 16);
        let after = seen.tick(2000);
        assert!(
            after.0 > 5000 << 16,
            "a slow wall clock still writes after what it saw"
        );
        assert_eq!(Hlc(7).observe(3).0, 7);
    }

    #[test]
    fn names_and_rows_are_checked() {
        assert!(check_name("database", "notes-1.v2_x").is_ok());
        for bad in ["", "a/b", "a b", "é", &"x".repeat(65)] {
            assert!(check_name("database", bad).is_err(), "{bad:?}");
        }
        assert!(check_row("k", b"v").is_ok());
        assert!(check_row("", b"v").is_err());
        assert!(check_row(&"k".repeat(1025), b"v").is_err());
        assert!(check_row("k", &vec![0; MAX_VALUE_LEN + 1]).is_err());
        assert!(NodeId::parse(&format!("0x{}", "ab".repeat(20))).is_ok());
        assert!(NodeId::parse("abcd").is_err());
    }
}
