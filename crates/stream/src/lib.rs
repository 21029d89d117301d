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
//! - [`retrieval`]: fetching a chunk the node lacks from the peers closest to it, forwarded
//!   hop by hop toward its neighbourhood, one fetch per chunk, at [`pull::Class::Retrieval`]
//!   priority.
//!
//! Push-sync (issue 11) will sit beside them.

pub mod intervals;
pub mod pull;
pub mod push;
pub mod record;
pub mod retrieval;
pub mod route;
pub mod serve;
