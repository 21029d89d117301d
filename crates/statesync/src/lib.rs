//! State sync as Avalanche's `x/sync`: a client brings a MerkleDB to a target root with range
//! and change proofs from untrusted peers; a server answers them.
//!
//! [`server`] answers range- and change-proof requests from a MerkleDB; [`client`] is the sync
//! manager, a sans-IO state machine the runtime (or a test loop) drives; [`midpoint`] is how the
//! client splits a key range into two work items.

pub mod client;
mod midpoint;
mod next_key;
mod progress;
pub mod server;

pub use midpoint::midpoint;
pub use progress::CorruptProgress;
