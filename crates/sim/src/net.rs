//! The one network every simulator runs on: a virtual clock, links between nodes, latency,
//! loss, partitions and crashes, all drawn from one seeded random stream.
//!
//! The overlay and stream simulator ([`crate::Sim`]), the state-sync simulator
//! ([`crate::statesync::SyncSim`]) and the replica simulator ([`crate::replica::ReplicaSim`])
//! each drive their protocol cores over a [`Net`], through the small [`Protocol`] trait that
//! [`run`] calls; so every protocol meets the same transport:
//!
//! - A *link* joins two nodes, as a libp2p connection does. It is opened by a dial
//!   ([`Net::connect`], or [`Net::send_dialing`] for protocols that dial on demand) only
//!   when both nodes are up and in the same partition, and it is closed by either end, by a
//!   partition that separates them, or by a crash of either.
//! - A message travels on a link: it is lost with the link's loss probability, else it
//!   arrives after a latency drawn from `[latency_min, latency_max]`, never before an earlier
//!   message in the same direction (a link is ordered, as a stream is). A message still in
//!   flight when its link closes is lost, as are messages sent on no link.
//! - A crashed node is down until restarted: its links close and no dial reaches it. What a
//!   node keeps across a crash (its store) is the simulator's business, not the network's.
//! - Besides messages, a simulator schedules its own events (timers, dials, scenario steps)
//!   on the same clock; ties between events are broken by the order they were scheduled in.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::queue::{self, EventQueue};

/// Latency and loss of every link.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LinkConfig {
    /// Shortest one-way latency.
    pub(crate) latency_min: Duration,
    /// Longest one-way latency.
    pub(crate) latency_max: Duration,
    /// Probability that a message is lost.
    pub(crate) loss: f64,
}

/// Messages counted by the network.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NetStats {
    /// Messages sent.
    pub sent: u64,
    /// Messages lost: by the loss rate, sent on no link, or in flight when their link closed.
    pub lost: u64,
    /// Messages delivered.
    pub delivered: u64,
}

/// What the network hands its simulator next.
pub(crate) enum Arrival<M, L> {
    /// Message `msg` from node `from` reached node `to`.
    Message { from: usize, to: usize, msg: M },
    /// One of the simulator's own events came due.
    Local(L),
}

enum Event<M, L> {
    Deliver {
        from: usize,
        to: usize,
        link: u64,
        msg: M,
    },
    Local(L),
}

/// An open link: its number (never reused) and, per direction, when its last message arrives.
struct Link {
    id: u64,
    last: [Instant; 2],
}

/// Nodes, their links and the clock: see the module documentation.
pub(crate) struct Net<M, L> {
    queue: EventQueue<Event<M, L>>,
    rng: StdRng,
    config: LinkConfig,
    up: Vec<bool>,
    group: Vec<u32>,
    links: BTreeMap<(usize, usize), Link>,
    next_link: u64,
    stats: NetStats,
}

fn pair(a: usize, b: usize) -> (usize, usize) {
    (a.min(b), a.max(b))
}

impl<M, L> Net<M, L> {
    /// A network without nodes whose randomness comes from `seed`.
    pub(crate) fn new(seed: u64, config: LinkConfig) -> Self {
        Self {
            queue: EventQueue::new(),
            rng: StdRng::seed_from_u64(seed),
            config,
            up: Vec::new(),
            group: Vec::new(),
            links: BTreeMap::new(),
            next_link: 0,
            stats: NetStats::default(),
        }
    }

    /// The random stream of the whole run (the simulator's draws share it).
    pub(crate) fn rng(&mut self) -> &mut StdRng {
        &mut self.rng
    }

    /// The virtual now.
    pub(crate) fn now(&self) -> Instant {
        self.queue.now()
    }

    /// Virtual time since the start.
    pub(crate) fn elapsed(&self) -> Duration {
        self.queue.elapsed()
    }

    /// The instant `offset` after the start.
    pub(crate) fn at(&self, offset: Duration) -> Instant {
        self.queue.at(offset)
    }

    /// Messages counted so far.
    pub(crate) fn stats(&self) -> NetStats {
        self.stats
    }

    /// Adds a node, up and in partition 0; returns its index.
    pub(crate) fn add_node(&mut self) -> usize {
        self.up.push(true);
        self.group.push(0);
        self.up.len() - 1
    }

    /// Whether node `i` is up.
    pub(crate) fn is_up(&self, i: usize) -> bool {
        self.up.get(i).copied().unwrap_or(false)
    }

    /// Whether `a` and `b` can reach each other: both up, in the same partition.
    pub(crate) fn reachable(&self, a: usize, b: usize) -> bool {
        self.is_up(a) && self.is_up(b) && self.group.get(a) == self.group.get(b)
    }

    /// Whether `a` and `b` have a link.
    pub(crate) fn linked(&self, a: usize, b: usize) -> bool {
        self.links.contains_key(&pair(a, b))
    }

    /// The nodes linked to `i`.
    pub(crate) fn peers(&self, i: usize) -> Vec<usize> {
        self.links
            .keys()
            .filter_map(|&(a, b)| (a == i).then_some(b).or((b == i).then_some(a)))
            .collect()
    }

    /// Opens a link from `from` to `to`: `None` if they cannot reach each other, else whether
    /// the link is new (`false`: they were linked already).
    pub(crate) fn connect(&mut self, from: usize, to: usize) -> Option<bool> {
        if !self.reachable(from, to) || from == to {
            return None;
        }
        if self.linked(from, to) {
            return Some(false);
        }
        self.next_link += 1;
        let now = self.now();
        self.links.insert(
            pair(from, to),
            Link {
                id: self.next_link,
                last: [now; 2],
            },
        );
        Some(true)
    }

    /// Closes the link between `a` and `b`; whether there was one. Its messages in flight
    /// are lost.
    pub(crate) fn close(&mut self, a: usize, b: usize) -> bool {
        self.links.remove(&pair(a, b)).is_some()
    }

    /// Node `i` goes down: its links close. Returns the nodes it was linked to.
    pub(crate) fn crash(&mut self, i: usize) -> Vec<usize> {
        let peers = self.peers(i);
        for &peer in &peers {
            self.close(i, peer);
        }
        if let Some(up) = self.up.get_mut(i) {
            *up = false;
        }
        peers
    }

    /// Node `i` is up again (without links).
    pub(crate) fn restart(&mut self, i: usize) {
        if let Some(up) = self.up.get_mut(i) {
            *up = true;
        }
    }

    /// Node `i` goes to partition `groups[i]` (0 for nodes past its end); links across
    /// partitions close. Returns the pairs whose link closed.
    pub(crate) fn partition(&mut self, groups: &[u32]) -> Vec<(usize, usize)> {
        self.group = groups.to_vec();
        self.group.resize(self.up.len(), 0);
        let cut: Vec<(usize, usize)> = self
            .links
            .keys()
            .copied()
            .filter(|&(a, b)| self.group[a] != self.group[b])
            .collect();
        for &(a, b) in &cut {
            self.close(a, b);
        }
        cut
    }

    /// Ends every partition (links stay closed until dialled again).
    pub(crate) fn heal(&mut self) {
        self.group.iter_mut().for_each(|g| *g = 0);
    }

    /// Sets the loss probability from now on.
    pub(crate) fn set_loss(&mut self, loss: f64) {
        self.config.loss = loss;
    }

    /// A one-way latency.
    pub(crate) fn latency(&mut self) -> Duration {
        queue::latency(
            &mut self.rng,
            self.config.latency_min,
            self.config.latency_max,
        )
    }

    /// Sends `msg` from `from` to `to` on their link; whether it is on its way (`false`: no
    /// link, or lost).
    pub(crate) fn send(&mut self, from: usize, to: usize, msg: M) -> bool {
        self.stats.sent += 1;
        let lost = self.rng.random::<f64>() < self.config.loss;
        let arrive = self.now() + self.latency();
        let Some(link) = self.links.get_mut(&pair(from, to)) else {
            self.stats.lost += 1;
            return false;
        };
        if lost {
            self.stats.lost += 1;
            return false;
        }
        let direction = usize::from(from > to);
        let at = arrive.max(link.last[direction]);
        link.last[direction] = at;
        let link = link.id;
        self.queue.push(
            at,
            Event::Deliver {
                from,
                to,
                link,
                msg,
            },
        );
        true
    }

    /// Sends `msg` as [`Net::send`] does, first opening a link if there is none and the two
    /// can reach each other (the dial of a protocol that connects on demand).
    pub(crate) fn send_dialing(&mut self, from: usize, to: usize, msg: M) -> bool {
        self.connect(from, to);
        self.send(from, to, msg)
    }

    /// Schedules the simulator's own `event` at `at` (not before now).
    pub(crate) fn schedule(&mut self, at: Instant, event: L) {
        self.queue.push(at, Event::Local(event));
    }

    /// The next arrival due no later than `end`, moving the clock to it; `None` if nothing
    /// is due by then. Messages whose link closed meanwhile are counted lost and skipped.
    pub(crate) fn next_before(&mut self, end: Instant) -> Option<Arrival<M, L>> {
        while self.queue.next_at().is_some_and(|t| t <= end) {
            match self.queue.pop()? {
                Event::Local(event) => return Some(Arrival::Local(event)),
                Event::Deliver {
                    from,
                    to,
                    link,
                    msg,
                } => {
                    if self.links.get(&pair(from, to)).map(|l| l.id) != Some(link) {
                        self.stats.lost += 1;
                        continue;
                    }
                    self.stats.delivered += 1;
                    return Some(Arrival::Message { from, to, msg });
                }
            }
        }
        None
    }

    /// Moves the clock forward to `to` (never back).
    pub(crate) fn advance_to(&mut self, to: Instant) {
        self.queue.advance_to(to);
    }
}

/// A simulator's protocol side: the cores it runs and what it does with what the network
/// brings them. [`run`] is the one event loop of every simulator.
pub(crate) trait Protocol {
    /// What travels on a link.
    type Message;
    /// The simulator's own events.
    type Local;
    /// What stops a run.
    type Error;

    /// The network it runs on.
    fn net(&mut self) -> &mut Net<Self::Message, Self::Local>;

    /// Message `msg` from `from` reached `to`.
    ///
    /// # Errors
    /// What the cores' stores report.
    fn on_message(&mut self, from: usize, to: usize, msg: Self::Message)
    -> Result<(), Self::Error>;

    /// One of its own events came due.
    ///
    /// # Errors
    /// What the cores' stores report.
    fn on_local(&mut self, event: Self::Local) -> Result<(), Self::Error>;
}

/// When [`run`] asks whether the run is done.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Check {
    /// Before every event.
    EveryEvent,
    /// Every span of virtual time.
    Every(Duration),
}

/// Runs `p`'s events until `end`, or until `done` holds (asked as `check` says). Returns
/// whether `done` held.
///
/// # Errors
/// The first error of `p` or of `done`.
pub(crate) fn run<P: Protocol>(
    p: &mut P,
    end: Instant,
    check: Check,
    mut done: impl FnMut(&P) -> Result<bool, P::Error>,
) -> Result<bool, P::Error> {
    loop {
        if done(p)? {
            return Ok(true);
        }
        let until = match check {
            Check::EveryEvent => end,
            Check::Every(span) => (p.net().now() + span).min(end),
        };
        let mut progressed = false;
        while let Some(arrival) = p.net().next_before(until) {
            progressed = true;
            match arrival {
                Arrival::Message { from, to, msg } => p.on_message(from, to, msg)?,
                Arrival::Local(event) => p.on_local(event)?,
            }
            if matches!(check, Check::EveryEvent) {
                break;
            }
        }
        if !progressed || matches!(check, Check::Every(_)) {
            p.net().advance_to(until);
            if until >= end {
                return done(p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(loss: f64) -> Net<u32, ()> {
        let mut net = Net::new(
            7,
            LinkConfig {
                latency_min: Duration::from_millis(1),
                latency_max: Duration::from_millis(50),
                loss,
            },
        );
        for _ in 0..3 {
            net.add_node();
        }
        net
    }

    /// Every message delivered before `end`, as (from, to, message).
    fn drain(net: &mut Net<u32, ()>, end: Duration) -> Vec<(usize, usize, u32)> {
        let end = net.at(end);
        let mut out = Vec::new();
        while let Some(arrival) = net.next_before(end) {
            if let Arrival::Message { from, to, msg } = arrival {
                out.push((from, to, msg));
            }
        }
        out
    }

    #[test]
    fn a_link_delivers_in_order_and_only_while_open() {
        let mut net = net(0.0);
        assert_eq!(net.connect(0, 1), Some(true));
        assert_eq!(net.connect(1, 0), Some(false), "one link per pair");
        for m in 0..200 {
            assert!(net.send(0, 1, m));
        }
        assert!(!net.send(0, 2, 999), "no link to node 2");
        let got: Vec<u32> = drain(&mut net, Duration::from_secs(1))
            .into_iter()
            .map(|(_, _, m)| m)
            .collect();
        assert_eq!(got, (0..200).collect::<Vec<_>>(), "in order, none lost");
        for m in 0..10 {
            net.send(1, 0, m);
        }
        assert!(net.close(0, 1));
        assert!(drain(&mut net, Duration::from_secs(2)).is_empty());
        let stats = net.stats();
        assert_eq!((stats.sent, stats.delivered, stats.lost), (211, 200, 11));
    }

    #[test]
    fn partitions_and_crashes_cut_links_and_dials() {
        let mut net = net(0.0);
        net.connect(0, 1);
        net.connect(1, 2);
        net.send(0, 1, 1);
        assert_eq!(net.partition(&[0, 1, 1]), vec![(0, 1)]);
        assert_eq!(net.connect(0, 2), None, "no dial across a partition");
        assert!(!net.send_dialing(0, 1, 2));
        net.heal();
        assert!(
            net.send_dialing(0, 1, 3),
            "a dial after healing opens a link"
        );
        net.send(2, 1, 4);
        assert_eq!(net.crash(1), vec![0, 2]);
        assert_eq!(net.connect(0, 1), None, "no dial reaches a crashed node");
        assert!(drain(&mut net, Duration::from_secs(1)).is_empty());
        net.restart(1);
        assert!(net.send_dialing(2, 1, 5));
        assert_eq!(drain(&mut net, Duration::from_secs(2)), vec![(2, 1, 5)]);
    }

    #[test]
    fn loss_drops_about_its_share() {
        let mut net = net(0.25);
        net.connect(0, 1);
        let sent = (0..4_000).filter(|&m| net.send(0, 1, m)).count();
        assert!((2_800..3_200).contains(&sent), "{sent} of 4000 sent");
        assert_eq!(drain(&mut net, Duration::from_secs(1)).len(), sent);
    }
}
