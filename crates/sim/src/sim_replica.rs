//! Whole nodes: the replica layer ([`crate::replicas`]) running in [`Sim`]'s nodes beside
//! the overlay and stream cores, on their store and their connections, as the node runtime
//! runs it.
//!
//! A node's scheduler counts as connected the peers its overlay handshook (and forgets them
//! when the overlay reports them gone, failing its asks of them); replica messages travel
//! only on those connections. A member the node is not connected to is dialled when the
//! overlay knows it (a known peer whose key's Ethereum address is the member's node id), at
//! most once per `member_dial_every` of the scheduler's configuration per member, as the
//! runtime's member dials do; the dial is an ordinary connection the overlay then handshakes.

use std::time::{Duration, Instant};

use tributary_overlay::NodeKey;
use tributary_replica::{NodeId, Replica};

use crate::net::Net;
use crate::replicas::{Message, ReplicaStats, Timer, Transport};
use crate::{Event, Frame, Sim, SimError};

/// Replica messages travel on the overlay's connections only.
impl Transport for Net<Frame, Event> {
    fn now(&self) -> Instant {
        Net::now(self)
    }

    fn elapsed(&self) -> Duration {
        Net::elapsed(self)
    }

    fn send(&mut self, from: usize, to: usize, msg: Message) -> bool {
        Net::send(self, from, to, Frame::Replica(msg))
    }

    fn timer(&mut self, at: Instant, node: usize, timer: Timer) {
        self.schedule(at, Event::Replica { node, timer });
    }
}

fn node_id(key: &NodeKey) -> Option<NodeId> {
    key.eth_address().ok().map(NodeId)
}

impl Sim {
    /// Node `i`'s replica engine, if the nodes run replicas and `i` is up.
    #[must_use]
    pub fn replica(&self, i: usize) -> Option<&Replica> {
        self.replicas.as_ref()?.engine(i)
    }

    /// Node `i`'s replica engine, to write or set up syncgroups with (then tell the
    /// scheduler: [`Sim::replica_joined`], [`Sim::replica_wrote`]).
    pub fn replica_mut(&mut self, i: usize) -> Option<&mut Replica> {
        self.replicas.as_mut()?.engine_mut(i)
    }

    /// Node `i`'s replica node id.
    #[must_use]
    pub fn replica_id(&self, i: usize) -> Option<NodeId> {
        self.replicas.as_ref().map(|r| r.id(i))
    }

    /// Node `i`'s wall clock for its engine, in ms.
    #[must_use]
    pub fn replica_now_ms(&self, i: usize) -> u64 {
        self.replicas
            .as_ref()
            .map_or(0, |r| r.now_ms(i, self.net.elapsed()))
    }

    /// Sets node `i`'s replica clock skew (its engine's wall clock runs `skew_ms` off).
    pub fn set_replica_skew(&mut self, i: usize, skew_ms: i64) {
        if let Some(r) = self.replicas.as_mut() {
            r.set_skew(i, skew_ms);
        }
    }

    /// The replica layer's counters (`None` if the nodes run no replicas).
    #[must_use]
    pub fn replica_stats(&self) -> Option<ReplicaStats> {
        self.replicas.as_ref().map(|r| r.stats().clone())
    }

    /// Node `i` created a syncgroup of `db` (`admin` `None`) or joined one through node
    /// `admin`: its scheduler starts rounds of `db`.
    ///
    /// # Errors
    /// When the engine's store fails.
    pub fn replica_joined(
        &mut self,
        i: usize,
        db: &str,
        admin: Option<usize>,
    ) -> Result<(), SimError> {
        let admin = admin.and_then(|a| self.replica_id(a));
        if let Some(r) = self.replicas.as_mut() {
            r.track(i, db, admin, &mut self.net)?;
        }
        Ok(())
    }

    /// Node `i` wrote to `db`: its scheduler tells the members.
    ///
    /// # Errors
    /// When the engine's store fails.
    pub fn replica_wrote(&mut self, i: usize, db: &str) -> Result<(), SimError> {
        if let Some(r) = self.replicas.as_mut() {
            r.wrote(i, db, &mut self.net)?;
        }
        Ok(())
    }

    /// Opens node `i`'s engine on its store (a new node).
    pub(crate) fn replica_add(&mut self, i: usize) -> Result<(), SimError> {
        let node = &self.nodes[i];
        if let Some(r) = self.replicas.as_mut() {
            r.add(node.store.clone(), node.identity.clone())?;
        }
        Ok(())
    }

    /// Starts node `i`'s scheduler, reopening its engine after a crash.
    pub(crate) fn replica_start(&mut self, i: usize, reopen: bool) -> Result<(), SimError> {
        if let Some(r) = self.replicas.as_mut() {
            if reopen {
                r.reopen(i)?;
            }
            r.start(i, &[], &mut self.net)?;
        }
        Ok(())
    }

    pub(crate) fn replica_crash(&mut self, i: usize) {
        if let Some(r) = self.replicas.as_mut() {
            r.crash(i);
        }
    }

    /// The overlay of node `i` handshook (`up`) or lost the peer with `key`.
    pub(crate) fn replica_peer(
        &mut self,
        i: usize,
        key: &NodeKey,
        up: bool,
    ) -> Result<(), SimError> {
        let (Some(r), Some(peer)) = (self.replicas.as_mut(), node_id(key)) else {
            return Ok(());
        };
        if up {
            r.connected(i, peer, &mut self.net)?;
        } else {
            r.disconnected(i, peer, &mut self.net)?;
        }
        Ok(())
    }

    pub(crate) fn replica_message(
        &mut self,
        from: usize,
        to: usize,
        msg: Message,
    ) -> Result<(), SimError> {
        if let Some(r) = self.replicas.as_mut() {
            r.on_message(from, to, msg, &mut self.net)?;
        }
        Ok(())
    }

    pub(crate) fn replica_timer(&mut self, node: usize, timer: Timer) -> Result<(), SimError> {
        if let Some(r) = self.replicas.as_mut() {
            r.on_timer(node, timer, &mut self.net)?;
        }
        Ok(())
    }

    /// Dials the members node `i` is not connected to that its overlay knows.
    pub(crate) fn dial_members(&mut self, i: usize) {
        let now = self.net.now();
        let Some(r) = self.replicas.as_mut() else {
            return;
        };
        let wanted = r.members_to_dial(i, now);
        if wanted.is_empty() {
            return;
        }
        let Some(core) = self.nodes[i].core.as_ref() else {
            return;
        };
        let found: Vec<usize> = core
            .table()
            .known_records()
            .filter(|rec| node_id(&rec.key).is_some_and(|id| wanted.contains(&id)))
            .filter_map(|rec| self.by_key.get(&rec.key).copied())
            .filter(|&to| !self.net.linked(i, to))
            .collect();
        for &to in &found {
            let at = now + self.net.latency();
            let life = self.nodes[i].starts;
            self.net
                .schedule(at, Event::MemberDial { from: i, to, life });
        }
        if let Some(r) = self.replicas.as_mut() {
            r.dialled_members(found.len() as u64);
        }
    }
}
