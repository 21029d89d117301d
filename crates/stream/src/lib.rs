//! Chunk streams between nodes, as Swarm's `network/stream` syncing: what a node has synced of
//! each upstream bin, and (to come) the pull-sync core that offers, wants and delivers chunks.
//!
//! Built so far: [`intervals`], the persisted bin-id ranges a downstream node holds of each
//! upstream bin, with bee's `intervalstore` semantics. The offer → want → deliver core, its
//! subscriptions per bin, retrieval and push-sync are still to come (issues 10 and 11).

pub mod intervals;
