//! State sync as Avalanche's `x/sync`: a client brings a MerkleDB to a target root with range
//! and change proofs from untrusted peers; a server answers them.
//!
//! So far: [`midpoint`], how the client splits a key range into two work items. The server and
//! the client manager (sans-IO state machines driven by the node runtime) come next.

mod midpoint;

pub use midpoint::midpoint;
