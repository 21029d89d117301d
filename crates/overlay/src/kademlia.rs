//! The Kademlia table: which peers a node knows and is connected to, by proximity-order bin.
//!
//! Parameters and the depth rule are old Swarm's (`network/kademlia.go`), not bee's, because
//! its depth is a function of the connected set alone and has a matching god's-eye definition
//! to test against; bee's connectivity depth was replaced upstream by the reserve's storage
//! radius, which has no meaning before a reserve exists. What this table does:
//!
//! - **depth** = min(radius, shallowest empty bin), where the radius is the proximity order of
//!   the `neighbourhood_size`-th nearest connected peer (0 while there are no more than
//!   `neighbourhood_size` connections). `neighbourhood_size` is 4, not old Swarm's 2, so that
//!   every neighbourhood holds at least four nodes to replicate chunks to.
//! - **neighbourhood cut** = min(depth over connected peers, depth over known peers): every
//!   known peer at or beyond it is a neighbour and gets connected; bins below it are filled to
//!   the expected size `clamp(min_bin_size + depth − po − 1, min_bin_size, max_bin_size)`,
//!   emptiest bins first (old Swarm's `SuggestPeer`).
//! - **pruning** (old Swarm had none; this is bee's rule): a bin below the cut with more than
//!   `max_bin_size` connections sheds its newest connections, once they are older than a grace
//!   period, so a peer that joined through this node has time to learn other addresses first.
//! - **redial backoff**: `retry_interval · 2^(failures − 1)`, ±15% jitter, capped; a peer that
//!   failed `max_failures` times in a row is forgotten (bee removes it after 4–6 attempts).
//!   A connection the peer ends before it was stable counts as a failure, so a node that a
//!   peer keeps pruning backs off; a connection this node prunes does not.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tributary_chunk::{Address, MAX_PO, proximity};
use tributary_wire::overlay::PeerRecord;

use crate::identity::{NodeKey, VerifiedRecord};

const BINS: usize = MAX_PO as usize + 1;

/// Parameters of the table.
#[derive(Clone, Debug)]
pub struct KademliaConfig {
    /// How many nearest connected peers define the radius (old Swarm: `NeighbourhoodSize`).
    pub neighbourhood_size: usize,
    /// Least expected connections in a bin below depth.
    pub min_bin_size: usize,
    /// Most connections kept in a bin below the neighbourhood cut.
    pub max_bin_size: usize,
    /// First redial delay.
    pub retry_interval: Duration,
    /// Longest redial delay.
    pub max_retry_interval: Duration,
    /// Consecutive failures after which a peer is forgotten.
    pub max_failures: u32,
    /// How long a connection must last to reset a peer's failures.
    pub stable_after: Duration,
    /// How long a new connection is safe from pruning.
    pub prune_grace: Duration,
    /// Most peers known (gossip cannot grow the table, or the store behind it, without
    /// bound). At the limit a new record evicts an unconnected peer (see
    /// `Kademlia::eviction_victim`) if the new one is nearer, or if it comes from the peer's
    /// own handshake; connected peers are never evicted.
    pub max_known: usize,
}

impl Default for KademliaConfig {
    fn default() -> Self {
        Self {
            neighbourhood_size: 4,
            min_bin_size: 2,
            max_bin_size: 16,
            retry_interval: Duration::from_secs(2),
            max_retry_interval: Duration::from_secs(120),
            max_failures: 8,
            stable_after: Duration::from_secs(60),
            prune_grace: Duration::from_secs(15),
            max_known: 10_000,
        }
    }
}

/// How often a known peer's record may be replaced by a gossiped one: anyone can gossip a
/// peer's re-signed records, and each replacement is a store write.
pub const RECORD_UPDATE_INTERVAL: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
struct Known {
    record: VerifiedRecord,
    failures: u32,
    next_dial: Option<Instant>,
    /// When the record was last taken in.
    updated: Instant,
}

#[derive(Clone, Copy, Debug)]
struct Connected {
    key: NodeKey,
    since: Instant,
    /// The depth the peer last told us: if we are beyond it, we are its neighbour.
    their_depth: Option<u8>,
}

/// What [`Kademlia::add_known`] did with a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Added {
    /// Nothing: the record was known, older, our own, or the table is full of nearer peers.
    Unchanged,
    /// A new peer, or a newer record of a known one.
    Changed {
        /// The peer evicted to make room, whose record the store should drop too.
        evicted: Option<Address>,
    },
}

impl Added {
    /// Whether the table changed.
    #[must_use]
    pub fn changed(self) -> bool {
        matches!(self, Self::Changed { .. })
    }
}

/// A peer the table wants dialled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Suggestion {
    /// Its overlay.
    pub overlay: Address,
    /// Its transport key.
    pub key: NodeKey,
    /// Its underlays.
    pub underlays: Vec<Vec<u8>>,
}

/// The table.
#[derive(Clone, Debug)]
pub struct Kademlia {
    base: Address,
    config: KademliaConfig,
    known: BTreeMap<Address, Known>,
    connected: BTreeMap<Address, Connected>,
    /// Known peers per bin (kept with `known`, so depth is O(bins), not a sort per tick).
    known_bins: [usize; BINS],
    /// Connected peers per bin.
    connected_bins: [usize; BINS],
}

/// The health of a table held against a god's-eye view of the network (old Swarm's
/// `Health`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    /// The depth the whole network gives this node.
    pub expected_depth: u8,
    /// The table's depth.
    pub depth: u8,
    /// Nearest neighbours (po ≥ expected depth) the table does not know.
    pub unknown_neighbours: Vec<Address>,
    /// Nearest neighbours it is not connected to.
    pub unconnected_neighbours: Vec<Address>,
    /// Bins below the expected depth with fewer connections than `min_bin_size` (or than the
    /// bin's population, if smaller).
    pub unsaturated_bins: Vec<u8>,
}

impl Health {
    /// Knows and is connected to every nearest neighbour, bins saturated, depth as expected.
    #[must_use]
    pub fn is_healthy(&self) -> bool {
        self.expected_depth == self.depth
            && self.unknown_neighbours.is_empty()
            && self.unconnected_neighbours.is_empty()
            && self.unsaturated_bins.is_empty()
    }
}

/// One bin of a [`Topology`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BinInfo {
    /// Known peers in the bin.
    pub population: usize,
    /// Connected peers in the bin.
    pub connected: usize,
    /// Their overlays.
    pub connected_peers: Vec<Address>,
    /// Known, not connected peers.
    pub disconnected_peers: Vec<Address>,
}

/// A snapshot of the table (bee's `/topology`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    /// This node's overlay.
    pub base: Address,
    /// Known peers.
    pub population: usize,
    /// Connected peers.
    pub connected: usize,
    /// The depth.
    pub depth: u8,
    /// Bins 0 to 31.
    pub bins: Vec<BinInfo>,
}

/// The depth of a node at `base` whose peers are `peers`: min(radius, shallowest empty bin).
#[must_use]
pub fn depth_of(
    base: &Address,
    peers: impl IntoIterator<Item = Address>,
    neighbourhood_size: usize,
) -> u8 {
    let mut pos: Vec<u8> = peers.into_iter().map(|p| proximity(base, &p)).collect();
    if pos.len() <= neighbourhood_size {
        return 0;
    }
    pos.sort_unstable_by(|a, b| b.cmp(a));
    let radius = pos[neighbourhood_size.saturating_sub(1)];
    let mut occupied = [false; BINS];
    for po in pos {
        occupied[usize::from(po)] = true;
    }
    let empty = occupied.iter().position(|o| !o).unwrap_or(BINS);
    // `empty` ≤ 32 by construction.
    radius.min(u8::try_from(empty).unwrap_or(u8::MAX))
}

/// [`depth_of`] from the number of peers in each bin: the radius is the bin where the count
/// from the deepest bin reaches `neighbourhood_size`.
fn depth_of_bins(bins: &[usize; BINS], neighbourhood_size: usize) -> u8 {
    if bins.iter().sum::<usize>() <= neighbourhood_size {
        return 0;
    }
    let mut seen = 0;
    let mut radius = 0;
    for po in (0..BINS).rev() {
        seen += bins[po];
        if seen >= neighbourhood_size.max(1) {
            radius = po;
            break;
        }
    }
    let empty = bins.iter().position(|n| *n == 0).unwrap_or(BINS);
    // Both are at most 32.
    u8::try_from(radius.min(empty)).unwrap_or(u8::MAX)
}

/// XOR distance, comparable as bytes.
#[must_use]
pub fn distance(a: &Address, b: &Address) -> [u8; 32] {
    std::array::from_fn(|i| a.0[i] ^ b.0[i])
}

impl Kademlia {
    /// An empty table around `base`.
    #[must_use]
    pub fn new(base: Address, config: KademliaConfig) -> Self {
        Self {
            base,
            config,
            known: BTreeMap::new(),
            connected: BTreeMap::new(),
            known_bins: [0; BINS],
            connected_bins: [0; BINS],
        }
    }

    fn bin(&self, overlay: &Address) -> usize {
        usize::from(proximity(&self.base, overlay))
    }

    /// The node's own overlay.
    #[must_use]
    pub fn base(&self) -> Address {
        self.base
    }

    /// Adds or refreshes a verified record. Says whether anything changed: a new peer, or
    /// a newer record of a known one (which keeps its dial history). A `direct` record (from
    /// the peer's own handshake) also replaces a different one of the same second, as a node
    /// restarted within a second on new ports signs. A gossiped record replaces a known one
    /// at most once per [`RECORD_UPDATE_INTERVAL`]. At [`KademliaConfig::max_known`] a new
    /// peer evicts another (see there), or is dropped.
    pub fn add_known(&mut self, now: Instant, record: VerifiedRecord, direct: bool) -> Added {
        if record.overlay == self.base {
            return Added::Unchanged;
        }
        let mut evicted = None;
        if !self.known.contains_key(&record.overlay) && self.known.len() >= self.config.max_known {
            match self.eviction_victim(&record.overlay, direct) {
                Some(victim) => {
                    self.remove_known(&victim);
                    evicted = Some(victim);
                }
                None => return Added::Unchanged,
            }
        }
        match self.known.get_mut(&record.overlay) {
            Some(k) if k.record.wire == record.wire => Added::Unchanged,
            Some(k) if k.record.wire.timestamp > record.wire.timestamp => Added::Unchanged,
            Some(k) if k.record.wire.timestamp == record.wire.timestamp && !direct => {
                Added::Unchanged
            }
            Some(k)
                if !direct && now.saturating_duration_since(k.updated) < RECORD_UPDATE_INTERVAL =>
            {
                Added::Unchanged
            }
            Some(k) => {
                k.record = record;
                k.updated = now;
                Added::Changed { evicted: None }
            }
            None => {
                let known = Known {
                    record,
                    failures: 0,
                    next_dial: None,
                    updated: now,
                };
                let bin = self.bin(&known.record.overlay);
                self.known_bins[bin] += 1;
                self.known.insert(known.record.overlay, known);
                Added::Changed { evicted }
            }
        }
    }

    /// The known peer a record of `newcomer` would evict from a full table: among unconnected
    /// peers, one that failed its last dials first, then the farthest, then the one taken in
    /// longest ago (local time: a signed timestamp is the peer's to choose), if `newcomer` is
    /// nearer than it or `direct`. A flood of gossiped records can thus only replace peers by
    /// nearer ones, and peers that handshake (each costing a connection) replace unreachable
    /// ones before reachable ones. One scan of the table, only when it is full.
    fn eviction_victim(&self, newcomer: &Address, direct: bool) -> Option<Address> {
        let (victim, _) = self
            .known
            .iter()
            .filter(|(a, _)| !self.connected.contains_key(*a))
            .min_by_key(|(a, k)| (k.failures == 0, proximity(&self.base, a), k.updated))?;
        let nearer = proximity(&self.base, newcomer) > proximity(&self.base, victim);
        (direct || nearer).then_some(*victim)
    }

    fn remove_known(&mut self, overlay: &Address) {
        if self.known.remove(overlay).is_some() {
            let bin = self.bin(overlay);
            self.known_bins[bin] -= 1;
        }
    }

    /// Whether exactly this record is already known (so it need not be verified again).
    #[must_use]
    pub fn has_record(&self, wire: &PeerRecord) -> bool {
        self.identical_record(wire).is_some()
    }

    /// The known, verified record with exactly these bytes, if any.
    #[must_use]
    pub fn identical_record(&self, wire: &PeerRecord) -> Option<&VerifiedRecord> {
        let overlay = <[u8; 32]>::try_from(wire.overlay.as_slice()).ok()?;
        self.known
            .get(&Address(overlay))
            .map(|k| &k.record)
            .filter(|r| r.wire == *wire)
    }

    /// The record of a known peer.
    #[must_use]
    pub fn record(&self, overlay: &Address) -> Option<&VerifiedRecord> {
        self.known.get(overlay).map(|k| &k.record)
    }

    /// The records of every known peer, connected or not.
    pub fn known_records(&self) -> impl Iterator<Item = &VerifiedRecord> {
        self.known.values().map(|k| &k.record)
    }

    /// Marks a peer connected; it must be known.
    pub fn connect(&mut self, overlay: Address, key: NodeKey, now: Instant) {
        if self.known.contains_key(&overlay) {
            let fresh = Connected {
                key,
                since: now,
                their_depth: None,
            };
            if self.connected.insert(overlay, fresh).is_none() {
                let bin = self.bin(&overlay);
                self.connected_bins[bin] += 1;
            }
        }
    }

    /// Marks a peer disconnected. A connection that ended before it was stable counts as a
    /// failure. Returns whether the peer was forgotten.
    pub fn disconnect(&mut self, overlay: &Address, now: Instant, jitter: f64) -> bool {
        let Some(conn) = self.remove_connected(overlay) else {
            return false;
        };
        if now.saturating_duration_since(conn.since) >= self.config.stable_after {
            if let Some(k) = self.known.get_mut(overlay) {
                k.failures = 0;
                k.next_dial = None;
            }
            return false;
        }
        self.record_failure(overlay, now, jitter)
    }

    /// Records the depth a connected peer announced.
    pub fn set_peer_depth(&mut self, overlay: &Address, depth: u8) {
        if let Some(c) = self.connected.get_mut(overlay) {
            c.their_depth = Some(depth);
        }
    }

    /// Marks a peer disconnected by this node's own choice (pruning): no failure is recorded,
    /// and it may be dialled again as soon as the table wants it.
    pub fn disconnect_pruned(&mut self, overlay: &Address) {
        self.remove_connected(overlay);
    }

    fn remove_connected(&mut self, overlay: &Address) -> Option<Connected> {
        let conn = self.connected.remove(overlay)?;
        let bin = self.bin(overlay);
        self.connected_bins[bin] -= 1;
        Some(conn)
    }

    /// Records a failed dial. Returns whether the peer was forgotten.
    pub fn dial_failed(&mut self, overlay: &Address, now: Instant, jitter: f64) -> bool {
        self.record_failure(overlay, now, jitter)
    }

    fn record_failure(&mut self, overlay: &Address, now: Instant, jitter: f64) -> bool {
        let Some(k) = self.known.get_mut(overlay) else {
            return false;
        };
        k.failures += 1;
        if k.failures >= self.config.max_failures && !self.connected.contains_key(overlay) {
            self.remove_known(overlay);
            return true;
        }
        let exp = 2f64.powi(i32::try_from(k.failures - 1).unwrap_or(i32::MAX).min(30));
        let delay = self
            .config
            .retry_interval
            .mul_f64(exp * jitter)
            .min(self.config.max_retry_interval);
        k.next_dial = Some(now + delay);
        false
    }

    /// A known peer's consecutive failures and when it may be dialled again.
    #[must_use]
    pub fn dial_state(&self, overlay: &Address) -> Option<(u32, Option<Instant>)> {
        self.known.get(overlay).map(|k| (k.failures, k.next_dial))
    }

    /// Whether a peer is connected.
    #[must_use]
    pub fn is_connected(&self, overlay: &Address) -> bool {
        self.connected.contains_key(overlay)
    }

    /// Whether `overlay` is a known peer.
    #[must_use]
    pub fn knows(&self, overlay: &Address) -> bool {
        self.known.contains_key(overlay)
    }

    /// Number of known peers.
    #[must_use]
    pub fn known_len(&self) -> usize {
        self.known.len()
    }

    /// Number of connected peers.
    #[must_use]
    pub fn connected_len(&self) -> usize {
        self.connected.len()
    }

    /// The depth over connected peers.
    #[must_use]
    pub fn depth(&self) -> u8 {
        depth_of_bins(&self.connected_bins, self.config.neighbourhood_size)
    }

    /// min(depth over connected peers, depth over known peers): peers at or beyond it are
    /// neighbours, all to be connected.
    #[must_use]
    pub fn neighbourhood_cut(&self) -> u8 {
        let known = depth_of_bins(&self.known_bins, self.config.neighbourhood_size);
        self.depth().min(known)
    }

    fn connected_in_bin(&self, po: u8) -> usize {
        self.connected_bins[usize::from(po)]
    }

    fn expected_bin_size(&self, po: u8, depth: u8) -> usize {
        let extra = usize::from(depth.saturating_sub(po).saturating_sub(1));
        (self.config.min_bin_size + extra).clamp(self.config.min_bin_size, self.config.max_bin_size)
    }

    fn callable(&self, k: &Known, now: Instant) -> bool {
        !self.connected.contains_key(&k.record.overlay) && k.next_dial.is_none_or(|t| t <= now)
    }

    /// Up to `max` peers to dial now, skipping those `busy` says are being dialled: every
    /// callable neighbour nearest first, then peers for bins below their expected size,
    /// emptiest bins first.
    #[must_use]
    pub fn suggest(
        &self,
        now: Instant,
        max: usize,
        busy: impl Fn(&NodeKey) -> bool,
    ) -> Vec<Suggestion> {
        let cut = self.neighbourhood_cut();
        let depth = self.depth();
        let mut candidates: Vec<&Known> = self
            .known
            .values()
            .filter(|k| self.callable(k, now) && !busy(&k.record.key))
            .collect();
        candidates.sort_by_key(|k| distance(&self.base, &k.record.overlay));
        let mut out: Vec<&Known> = candidates
            .iter()
            .copied()
            .filter(|k| proximity(&self.base, &k.record.overlay) >= cut)
            .take(max)
            .collect();
        let mut bins: Vec<(usize, u8)> = (0..cut)
            .map(|po| (self.connected_in_bin(po), po))
            .filter(|&(n, po)| n < self.expected_bin_size(po, depth))
            .collect();
        bins.sort_unstable();
        for (have, po) in bins {
            let want = self.expected_bin_size(po, depth) - have;
            let room = max.saturating_sub(out.len());
            out.extend(
                candidates
                    .iter()
                    .copied()
                    .filter(|k| proximity(&self.base, &k.record.overlay) == po)
                    .take(want.min(room)),
            );
        }
        out.into_iter()
            .map(|k| Suggestion {
                overlay: k.record.overlay,
                key: k.record.key,
                underlays: k.record.wire.underlays.clone(),
            })
            .collect()
    }

    /// Connections to shed: in each bin below the neighbourhood cut holding more than
    /// `max_bin_size`, the newest beyond that number that are past their grace period and
    /// have told their depth — except peers whose neighbourhood this node is in by that depth
    /// (they need this connection even though this node does not). A peer whose depth has not
    /// arrived (lost, or not sent yet) is kept until it does.
    #[must_use]
    pub fn prune(&self, now: Instant) -> Vec<(Address, NodeKey)> {
        let cut = self.neighbourhood_cut();
        let mut out = Vec::new();
        for po in 0..cut {
            let bin: Vec<(&Address, &Connected)> = self
                .connected
                .iter()
                .filter(|(a, _)| proximity(&self.base, a) == po)
                .collect();
            let Some(surplus) = bin.len().checked_sub(self.config.max_bin_size) else {
                continue;
            };
            let mut prunable: Vec<(&Address, &Connected)> = bin
                .into_iter()
                .filter(|(_, c)| c.their_depth.is_some_and(|d| po < d))
                .filter(|(_, c)| now.saturating_duration_since(c.since) >= self.config.prune_grace)
                .collect();
            prunable.sort_by_key(|(_, c)| std::cmp::Reverse(c.since));
            out.extend(prunable.into_iter().take(surplus).map(|(a, c)| (*a, c.key)));
        }
        out
    }

    /// Known records nearest `target` first, skipping `target` itself: for hive gossip, the
    /// `nearest` closest, then up to `per_bin` of each bin (relative to `target`) among the
    /// rest, at most `max` in all.
    #[must_use]
    pub fn records_for(
        &self,
        target: &Address,
        nearest: usize,
        per_bin: usize,
        max: usize,
    ) -> Vec<PeerRecord> {
        let mut all: Vec<&Known> = self
            .known
            .values()
            .filter(|k| k.record.overlay != *target)
            .collect();
        all.sort_by_key(|k| distance(target, &k.record.overlay));
        let mut out: Vec<PeerRecord> = all
            .iter()
            .take(nearest.min(max))
            .map(|k| k.record.wire.clone())
            .collect();
        let mut per = [0usize; BINS];
        for k in all.iter().skip(nearest) {
            if out.len() >= max {
                break;
            }
            let po = usize::from(proximity(target, &k.record.overlay));
            if per[po] < per_bin {
                per[po] += 1;
                out.push(k.record.wire.clone());
            }
        }
        out
    }

    /// Connected peers, nearest `target` first (old Swarm's `EachConn`).
    #[must_use]
    pub fn each_conn(&self, target: &Address) -> Vec<(Address, NodeKey)> {
        let mut out: Vec<(Address, NodeKey)> =
            self.connected.iter().map(|(a, c)| (*a, c.key)).collect();
        out.sort_by_key(|(a, _)| distance(target, a));
        out
    }

    /// Known peers, connected or not, nearest `target` first (old Swarm's `EachAddr`).
    #[must_use]
    pub fn each_addr(&self, target: &Address) -> Vec<Address> {
        let mut out: Vec<Address> = self.known.keys().copied().collect();
        out.sort_by_key(|a| distance(target, a));
        out
    }

    /// This table held against `all`, the overlays of every node in the network.
    #[must_use]
    pub fn health(&self, all: &[Address]) -> Health {
        let others = || all.iter().copied().filter(|a| *a != self.base);
        let expected_depth = depth_of(&self.base, others(), self.config.neighbourhood_size);
        let neighbours: Vec<Address> = others()
            .filter(|a| proximity(&self.base, a) >= expected_depth)
            .collect();
        let mut population = [0usize; BINS];
        for a in others() {
            population[usize::from(proximity(&self.base, &a))] += 1;
        }
        let unsaturated_bins = (0..expected_depth)
            .filter(|&po| {
                let want = self.config.min_bin_size.min(population[usize::from(po)]);
                self.connected_in_bin(po) < want
            })
            .collect();
        Health {
            expected_depth,
            depth: self.depth(),
            unknown_neighbours: neighbours
                .iter()
                .copied()
                .filter(|a| !self.known.contains_key(a))
                .collect(),
            unconnected_neighbours: neighbours
                .into_iter()
                .filter(|a| !self.connected.contains_key(a))
                .collect(),
            unsaturated_bins,
        }
    }

    /// A snapshot for the API.
    #[must_use]
    pub fn topology(&self) -> Topology {
        let mut bins = vec![BinInfo::default(); BINS];
        for overlay in self.known.keys() {
            let bin = &mut bins[usize::from(proximity(&self.base, overlay))];
            bin.population += 1;
            if self.connected.contains_key(overlay) {
                bin.connected += 1;
                bin.connected_peers.push(*overlay);
            } else {
                bin.disconnected_peers.push(*overlay);
            }
        }
        Topology {
            base: self.base,
            population: self.known.len(),
            connected: self.connected.len(),
            depth: self.depth(),
            bins,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(first: u8) -> Address {
        let mut a = [0u8; 32];
        a[0] = first;
        Address(a)
    }

    #[test]
    fn the_table_knows_at_most_max_known_peers() {
        let record = |seed: u8| {
            let id = crate::Identity::from_secret(&[seed; 32], [0; 32]).expect("key");
            crate::verify_record(&id.sign_record(1, vec![], 1).expect("signs"), 1)
                .expect("verifies")
        };
        let config = KademliaConfig {
            max_known: 2,
            ..KademliaConfig::default()
        };
        let base = addr(0);
        let now = Instant::now();
        let mut table = Kademlia::new(base, config);
        // Peers by proximity to the base: find three of distinct bins, far to near.
        let mut by_po: BTreeMap<u8, VerifiedRecord> = BTreeMap::new();
        for seed in 1..=254u8 {
            let r = record(seed);
            by_po.entry(proximity(&base, &r.overlay)).or_insert(r);
        }
        let mut ranked = by_po.into_values();
        let (far, mid, near) = (
            ranked.next().expect("a far peer"),
            ranked.next().expect("a middle peer"),
            ranked.next().expect("a near peer"),
        );
        assert_eq!(
            table.add_known(now, mid.clone(), false),
            Added::Changed { evicted: None }
        );
        assert!(table.add_known(now, near.clone(), false).changed());
        // Full of nearer peers: a gossiped far record is dropped...
        assert_eq!(table.add_known(now, far.clone(), false), Added::Unchanged);
        assert_eq!(table.known_len(), 2);
        // ...but the handshake of a peer that just connected evicts the farthest one.
        assert_eq!(
            table.add_known(now, far.clone(), true),
            Added::Changed {
                evicted: Some(mid.overlay)
            }
        );
        table.connect(far.overlay, far.key, now);
        // Full again, with the far peer connected: a gossiped record not nearer than the one
        // unconnected peer is dropped; a handshake evicts that one, never the connected peer.
        assert_eq!(table.add_known(now, mid.clone(), false), Added::Unchanged);
        assert_eq!(
            table.add_known(now, mid, true),
            Added::Changed {
                evicted: Some(near.overlay)
            }
        );
        assert!(table.knows(&far.overlay), "the connected peer stays");
        assert_eq!(table.known_len(), 2);
    }

    #[test]
    fn depth_from_bin_counts_equals_depth_from_the_peers() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..2_000 {
            let base = Address(rng.random());
            let n = rng.random_range(0..40);
            let ns = rng.random_range(1..6);
            // Addresses near `base` in places, so deep bins are populated too.
            let peers: Vec<Address> = (0..n)
                .map(|_| {
                    let mut a = base;
                    let flip = rng.random_range(0..24);
                    a.0[flip / 8] ^= 0x80 >> (flip % 8);
                    for byte in a.0.iter_mut().skip(flip / 8 + 1) {
                        *byte = rng.random();
                    }
                    a
                })
                .collect();
            let mut bins = [0usize; BINS];
            for p in &peers {
                bins[usize::from(proximity(&base, p))] += 1;
            }
            assert_eq!(
                depth_of_bins(&bins, ns),
                depth_of(&base, peers.iter().copied(), ns)
            );
        }
    }

    #[test]
    fn gossip_replaces_a_known_record_at_most_once_per_interval() {
        let id = crate::Identity::from_secret(&[3; 32], [0; 32]).expect("key");
        let signed = |timestamp| {
            crate::verify_record(&id.sign_record(1, vec![], timestamp).expect("signs"), 1)
                .expect("verifies")
        };
        let mut table = Kademlia::new(addr(0), KademliaConfig::default());
        let now = Instant::now();
        assert!(table.add_known(now, signed(1), false).changed());
        let soon = now + RECORD_UPDATE_INTERVAL / 2;
        assert_eq!(
            table.add_known(soon, signed(2), false),
            Added::Unchanged,
            "a re-signed record gossiped too soon is not taken"
        );
        assert!(
            table.add_known(soon, signed(3), true).changed(),
            "the peer's own handshake always is"
        );
        let later = soon + RECORD_UPDATE_INTERVAL;
        assert!(table.add_known(later, signed(4), false).changed());
    }

    #[test]
    fn iteration_is_nearest_first() {
        let record = |seed: u8| {
            let id = crate::Identity::from_secret(&[seed; 32], [0; 32]).expect("key");
            crate::verify_record(&id.sign_record(1, vec![], 1).expect("signs"), 1)
                .expect("verifies")
        };
        let mut table = Kademlia::new(addr(0), KademliaConfig::default());
        let now = Instant::now();
        for seed in 1..=12 {
            let r = record(seed);
            let (overlay, key) = (r.overlay, r.key);
            assert!(table.add_known(now, r, false).changed());
            if seed % 2 == 0 {
                table.connect(overlay, key, now);
            }
        }
        let target = addr(0x5a);
        let addrs = table.each_addr(&target);
        assert_eq!(addrs.len(), 12);
        assert!(
            addrs
                .windows(2)
                .all(|w| distance(&target, &w[0]) < distance(&target, &w[1]))
        );
        let conns = table.each_conn(&target);
        assert_eq!(conns.len(), 6);
        assert!(
            conns
                .windows(2)
                .all(|w| distance(&target, &w[0].0) < distance(&target, &w[1].0))
        );
        assert!(conns.iter().all(|(a, _)| table.is_connected(a)));
    }

    #[test]
    fn depth_is_min_of_radius_and_shallowest_empty_bin() {
        let base = addr(0);
        // POs: 0 (0x80), 1 (0x40), 2 (0x20), 3 (0x10), 4 (0x08).
        let peers = [0x80, 0x40, 0x20, 0x10, 0x08].map(addr);
        // Five peers, neighbourhood 4: the 4th nearest has PO 1, no empty bin below 5.
        assert_eq!(depth_of(&base, peers, 4), 1);
        assert_eq!(depth_of(&base, peers, 2), 3);
        // No more than neighbourhood_size peers: depth 0.
        assert_eq!(depth_of(&base, peers, 5), 0);
        // Bin 0 empty: depth 0 whatever the radius.
        let deep = [0x40, 0x20, 0x10, 0x08, 0x04].map(addr);
        assert_eq!(depth_of(&base, deep, 2), 0);
        // Bin 2 empty.
        let gap = [0x80, 0x81, 0x40, 0x10, 0x08, 0x04].map(addr);
        assert_eq!(depth_of(&base, gap, 2), 2);
    }
}
