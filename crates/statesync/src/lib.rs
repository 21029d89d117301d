//! State sync as Avalanche's `x/sync`: a client brings a MerkleDB to a target root with range
//! and change proofs from untrusted peers; a server answers them.
//!
//! So far: [`server`], which answers range- and change-proof requests from a MerkleDB, and
//! [`midpoint`], how the client splits a key range into two work items. The client manager (a
//! sans-IO state machine driven by the node runtime) comes next.

mod midpoint;
pub mod server;

pub use midpoint::midpoint;
