//! What retrieval and push-sync share: routing toward a chunk's address (XOR distance, the
//! closest connected peer not yet tried), who waits on a fetch or a push ([`Requester`]), the
//! requests open to peers with their deadlines ([`OpenRequests`]), and the count of waiting
//! requests per peer ([`PeerCounts`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use tributary_chunk::Address;

use crate::pull::RequestId;

/// Who waits on a fetch or a push. The tokens are the runtime's (it maps them to its HTTP
/// callers and response channels).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Requester {
    /// A reader or an upload on this node.
    Local(u64),
    /// A peer's forwarded request.
    Peer {
        /// The peer's overlay.
        peer: Address,
        /// The runtime's token for its answer.
        token: u64,
    },
}

impl Requester {
    /// The peer, for a forwarded request.
    #[must_use]
    pub const fn peer(&self) -> Option<Address> {
        match self {
            Self::Local(_) => None,
            Self::Peer { peer, .. } => Some(*peer),
        }
    }
}

/// A request open to `peer` for the chunk at `address`, answered by `deadline`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Open {
    pub(crate) address: Address,
    pub(crate) peer: Address,
    pub(crate) deadline: Instant,
}

/// Requests open to peers, by id, with their deadlines in order.
#[derive(Debug, Default)]
pub(crate) struct OpenRequests {
    open: BTreeMap<RequestId, Open>,
    deadlines: BTreeSet<(Instant, RequestId)>,
}

impl OpenRequests {
    pub(crate) fn insert(&mut self, id: RequestId, open: Open) {
        self.deadlines.insert((open.deadline, id));
        self.open.insert(id, open);
    }

    pub(crate) fn take(&mut self, id: RequestId) -> Option<Open> {
        let open = self.open.remove(&id)?;
        self.deadlines.remove(&(open.deadline, id));
        Some(open)
    }

    pub(crate) fn contains(&self, id: RequestId) -> bool {
        self.open.contains_key(&id)
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(t, _)| *t)
    }

    /// Takes the first request due by `now`.
    pub(crate) fn take_due(&mut self, now: Instant) -> Option<Open> {
        let &(at, id) = self.deadlines.first()?;
        if at > now {
            return None;
        }
        self.take(id)
    }

    /// The ids of the requests open to `peer`.
    pub(crate) fn of_peer(&self, peer: &Address) -> Vec<RequestId> {
        self.open
            .iter()
            .filter(|(_, o)| o.peer == *peer)
            .map(|(id, _)| *id)
            .collect()
    }
}

/// Forwarded requests waiting, per requesting peer.
#[derive(Debug, Default)]
pub(crate) struct PeerCounts(BTreeMap<Address, usize>);

impl PeerCounts {
    pub(crate) fn count(&self, peer: &Address) -> usize {
        self.0.get(peer).copied().unwrap_or(0)
    }

    /// Counts `requester` if it is a peer's.
    pub(crate) fn add(&mut self, requester: Requester) {
        if let Some(peer) = requester.peer() {
            *self.0.entry(peer).or_default() += 1;
        }
    }

    /// `requester` stopped waiting.
    pub(crate) fn release(&mut self, requester: Requester) {
        if let Some(peer) = requester.peer()
            && let Some(n) = self.0.get_mut(&peer)
        {
            *n -= 1;
            if *n == 0 {
                self.0.remove(&peer);
            }
        }
    }

    /// Whether `requester` (a peer's) may not wait on one more: its peer is at `cap`, or is
    /// among `waiting` already.
    pub(crate) fn refuses(&self, requester: Requester, waiting: &[Requester], cap: usize) -> bool {
        let Some(peer) = requester.peer() else {
            return false;
        };
        self.count(&peer) >= cap || waiting.iter().any(|r| r.peer() == Some(peer))
    }
}

/// Whether `a` is closer to `target` than `b` (XOR distance).
#[must_use]
pub fn closer(target: &Address, a: &Address, b: &Address) -> bool {
    let da = target.0.iter().zip(a.0.iter()).map(|(t, x)| t ^ x);
    let db = target.0.iter().zip(b.0.iter()).map(|(t, x)| t ^ x);
    da.lt(db)
}

/// The peer of `peers` closest to `target` that is not in `skip` and, when `than` is given,
/// is closer to `target` than `than` (a forwarder's own address).
#[must_use]
pub fn closest(
    peers: &BTreeSet<Address>,
    target: &Address,
    skip: &BTreeSet<Address>,
    than: Option<&Address>,
) -> Option<Address> {
    peers
        .iter()
        .filter(|p| !skip.contains(p))
        .filter(|p| than.is_none_or(|own| closer(target, p, own)))
        .copied()
        .reduce(|best, p| if closer(target, &p, &best) { p } else { best })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(b: u8) -> Address {
        let mut a = [0u8; 32];
        a[0] = b;
        Address(a)
    }

    #[test]
    fn closer_is_xor_distance() {
        let t = Address([0; 32]);
        let mut a = Address([0; 32]);
        a.0[31] = 1;
        let mut b = Address([0; 32]);
        b.0[0] = 1;
        assert!(closer(&t, &a, &b));
        assert!(!closer(&t, &b, &a));
        assert!(!closer(&t, &a, &a));
    }

    #[test]
    fn closest_skips_and_keeps_to_peers_closer_than_a_bar() {
        let peers: BTreeSet<Address> = [0x01, 0x03, 0x10, 0x80].map(addr).into();
        let t = addr(0);
        assert_eq!(closest(&peers, &t, &BTreeSet::new(), None), Some(addr(1)));
        let skip = BTreeSet::from([addr(1)]);
        assert_eq!(closest(&peers, &t, &skip, None), Some(addr(3)));
        assert_eq!(closest(&peers, &t, &skip, Some(&addr(2))), None);
        assert_eq!(
            closest(&peers, &t, &BTreeSet::new(), Some(&addr(2))),
            Some(addr(1))
        );
    }
}
