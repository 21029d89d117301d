//! The simulator's clock and agenda: events at virtual instants, in order, ties broken by the
//! order they were scheduled in, so a run depends on nothing but its seed.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use rand::Rng;
use rand::rngs::StdRng;

struct Scheduled<E> {
    at: Instant,
    seq: u64,
    event: E,
}

impl<E> PartialEq for Scheduled<E> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl<E> Eq for Scheduled<E> {}
impl<E> PartialOrd for Scheduled<E> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<E> Ord for Scheduled<E> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// A virtual clock and the events scheduled on it.
pub(crate) struct EventQueue<E> {
    start: Instant,
    now: Instant,
    seq: u64,
    heap: BinaryHeap<Reverse<Scheduled<E>>>,
}

impl<E> EventQueue<E> {
    pub(crate) fn new() -> Self {
        let now = Instant::now();
        Self {
            start: now,
            now,
            seq: 0,
            heap: BinaryHeap::new(),
        }
    }

    /// The virtual now.
    pub(crate) fn now(&self) -> Instant {
        self.now
    }

    /// Virtual time since the start.
    pub(crate) fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// The instant `offset` after the start.
    pub(crate) fn at(&self, offset: Duration) -> Instant {
        self.start + offset
    }

    /// Schedules `event` at `at` (not before now).
    pub(crate) fn push(&mut self, at: Instant, event: E) {
        self.seq += 1;
        let at = at.max(self.now);
        self.heap.push(Reverse(Scheduled {
            at,
            seq: self.seq,
            event,
        }));
    }

    /// When the next event is due.
    pub(crate) fn next_at(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(s)| s.at)
    }

    /// Takes the next event, moving the clock to it.
    pub(crate) fn pop(&mut self) -> Option<E> {
        let Reverse(s) = self.heap.pop()?;
        self.now = self.now.max(s.at);
        Some(s.event)
    }

    /// Moves the clock forward to `to` (never back).
    pub(crate) fn advance_to(&mut self, to: Instant) {
        self.now = self.now.max(to);
    }
}

/// A one-way latency drawn uniformly from `[min, max]`.
pub(crate) fn latency(rng: &mut StdRng, min: Duration, max: Duration) -> Duration {
    if max <= min {
        return min;
    }
    min + (max - min).mul_f64(rng.random::<f64>())
}
