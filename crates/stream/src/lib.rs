//! Chunk streams between nodes, as Swarm's `network/stream` syncing, sans-IO.
//!
//! - [`pull`]: the downstream pull-sync core — subscriptions per bin by the Kademlia rule, a
//!   historical and a live stream per (peer, bin), offer → want → deliver, one transfer per
//!   chunk, priorities, bounds. It emits requests and store writes; the runtime (or the
//!   simulator) carries them out.
//! - [`serve`]: the upstream side, answering requests from the chunk store.
//! - [`intervals`] and [`record`]: what a downstream has synced of each upstream bin, and how
//!   it is persisted with the chunks.
//!
//! Retrieval and push-sync (issue 11) will sit beside pull-sync and share its [`pull::Class`]
//! priorities.

pub mod intervals;
pub mod pull;
pub mod record;
pub mod serve;
