//! Routing toward a chunk's address, shared by retrieval and push-sync: XOR distance, and the
//! closest connected peer not yet tried.

use std::collections::{BTreeSet, HashSet};

use tributary_chunk::Address;

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
    skip: &HashSet<Address>,
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
        assert_eq!(closest(&peers, &t, &HashSet::new(), None), Some(addr(1)));
        let skip = HashSet::from([addr(1)]);
        assert_eq!(closest(&peers, &t, &skip, None), Some(addr(3)));
        assert_eq!(closest(&peers, &t, &skip, Some(&addr(2))), None);
        assert_eq!(
            closest(&peers, &t, &HashSet::new(), Some(&addr(2))),
            Some(addr(1))
        );
    }
}
