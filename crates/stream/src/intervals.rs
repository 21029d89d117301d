//! The bin-id ranges a downstream node has synced from one upstream bin: bee's
//! `intervalstore` semantics, which old Swarm's `network/stream/intervals` had too.
//!
//! A set of closed ranges `[start, end]` above a start limit, kept sorted and merged: adding a
//! range clamps it to the limit and merges it with every range it overlaps or touches
//! (`end + 1 == start`). [`Intervals::next`] names the first gap, the next bin ids to ask for;
//! [`Intervals::last`] the highest id held. Persisted with the chunks of the range they record
//! (see `tributary_chunk::store`), so a restarted node resumes at its first gap.

/// Merged, sorted closed ranges of bin ids, at or above a start limit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Intervals {
    start: u64,
    ranges: Vec<(u64, u64)>,
}

/// The first gap of an [`Intervals`], as [`Intervals::next`] returns it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gap {
    /// Its first bin id.
    pub start: u64,
    /// Its last bin id; without a ceiling, 0 means open-ended (nothing is held above), as in
    /// bee. Bin ids start at 1 in the pull index, so a real gap of `[0, 0]` does not arise.
    pub end: u64,
    /// Whether the gap, clamped to the ceiling, holds no id at all (everything up to the
    /// ceiling is synced).
    pub empty: bool,
}

impl Intervals {
    /// No range, ids below `start` never wanted.
    #[must_use]
    pub fn new(start: u64) -> Self {
        Self {
            start,
            ranges: Vec::new(),
        }
    }

    /// Rebuilds a set from ranges (say, decoded from the store); they are clamped and merged
    /// as if added one by one.
    #[must_use]
    pub fn from_ranges(start: u64, ranges: impl IntoIterator<Item = (u64, u64)>) -> Self {
        let mut set = Self::new(start);
        for (a, b) in ranges {
            set.add(a, b);
        }
        set
    }

    /// The ranges, sorted, none overlapping or touching.
    #[must_use]
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges
    }

    /// The start limit.
    #[must_use]
    pub const fn start(&self) -> u64 {
        self.start
    }

    /// Adds `[start, end]` (ignored if `end < start`), clamped to the start limit.
    pub fn add(&mut self, start: u64, end: u64) {
        let start = start.max(self.start);
        if end < start {
            return;
        }
        // Ranges entirely before (not touching) stay; those overlapping or touching merge.
        let first = self
            .ranges
            .partition_point(|&(_, e)| e.saturating_add(1) < start);
        let mut last = first;
        let (mut lo, mut hi) = (start, end);
        while last < self.ranges.len() && self.ranges[last].0 <= end.saturating_add(1) {
            lo = lo.min(self.ranges[last].0);
            hi = hi.max(self.ranges[last].1);
            last += 1;
        }
        self.ranges.splice(first..last, [(lo, hi)]);
    }

    /// Adds every range of `other`.
    pub fn merge(&mut self, other: &Self) {
        for &(a, b) in &other.ranges {
            self.add(a, b);
        }
    }

    /// The first gap: from the start limit if nothing is held there, else after the first
    /// range, up to the next range (or open-ended). A non-zero `ceiling` clamps the gap's end;
    /// a gap that then holds nothing is `empty`, reported as `[ceiling, ceiling]`.
    #[must_use]
    pub fn next(&self, ceiling: u64) -> Gap {
        // `None`: open-ended. Bee reports that as an end of 0, which is ambiguous with a gap
        // that is exactly `[0, 0]`, so openness is kept apart here until the answer is made.
        let (start, end) = match self.ranges.first() {
            None => (self.start, None),
            Some(&(a, _)) if a > self.start => (self.start, Some(a - 1)),
            Some(&(_, b)) => (b.saturating_add(1), self.ranges.get(1).map(|&(a, _)| a - 1)),
        };
        if ceiling == 0 {
            return Gap {
                start,
                end: end.unwrap_or(0),
                empty: false,
            };
        }
        let end = end.map_or(ceiling, |e| e.min(ceiling));
        if start > end {
            return Gap {
                start: ceiling,
                end: ceiling,
                empty: true,
            };
        }
        Gap {
            start,
            end,
            empty: false,
        }
    }

    /// The first gap at or after `from` (and the start limit), as `(start, end)` with `end`
    /// clamped to `ceiling` (`u64::MAX` when open-ended); `None` when every id from there up
    /// to the ceiling is held. Unlike [`Intervals::next`] it skips what is held below `from`,
    /// which a stream with ranges still in flight needs.
    #[must_use]
    pub fn gap_from(&self, from: u64, ceiling: u64) -> Option<(u64, u64)> {
        let mut start = from.max(self.start);
        let i = self.ranges.partition_point(|&(_, e)| e < start);
        let mut next = self.ranges.get(i);
        if let Some(&(a, b)) = next
            && a <= start
        {
            start = b.checked_add(1)?;
            next = self.ranges.get(i + 1);
        }
        let end = next.map_or(u64::MAX, |&(a, _)| a - 1).min(ceiling);
        (start <= end).then_some((start, end))
    }

    /// The highest id held, 0 if none.
    #[must_use]
    pub fn last(&self) -> u64 {
        self.ranges.last().map_or(0, |&(_, b)| b)
    }

    /// Whether `id` is held.
    #[must_use]
    pub fn contains(&self, id: u64) -> bool {
        let i = self.ranges.partition_point(|&(_, e)| e < id);
        self.ranges.get(i).is_some_and(|&(a, _)| a <= id)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    /// The ranges a plain set of integers makes: maximal runs of consecutive ids.
    fn runs(set: &BTreeSet<u64>) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for &id in set {
            match out.last_mut() {
                Some((_, e)) if *e + 1 == id => *e = id,
                _ => out.push((id, id)),
            }
        }
        out
    }

    proptest! {
        /// Adding ranges equals inserting their ids into a set, clamped to the start limit;
        /// `contains`, `last` and `next` agree with the set.
        #[test]
        fn intervals_are_a_set_of_integers(
            start in 0u64..20,
            adds in prop::collection::vec((0u64..200, 0u64..30), 0..20),
            ceiling in 0u64..250,
        ) {
            let mut intervals = Intervals::new(start);
            let mut set = BTreeSet::new();
            for (a, len) in adds {
                intervals.add(a, a + len);
                set.extend((a..=a + len).filter(|id| *id >= start));
            }
            let expected = runs(&set);
            prop_assert_eq!(intervals.ranges(), expected.as_slice());
            prop_assert_eq!(intervals.last(), set.last().copied().unwrap_or(0));
            for id in 0..260 {
                prop_assert_eq!(intervals.contains(id), set.contains(&id));
            }
            let gap = intervals.next(ceiling);
            let first_missing = (start..).find(|id| !set.contains(id)).expect("a gap");
            if ceiling != 0 && first_missing > ceiling {
                prop_assert!(gap.empty, "{gap:?}");
                prop_assert_eq!((gap.start, gap.end), (ceiling, ceiling));
            } else {
                prop_assert!(!gap.empty);
                prop_assert_eq!(gap.start, first_missing);
                let next_held = set.range(first_missing..).next().copied();
                let end = match (next_held, ceiling) {
                    (None, c) => c, // open-ended (0) without a ceiling
                    (Some(held), 0) => held - 1,
                    (Some(held), c) => (held - 1).min(c),
                };
                prop_assert_eq!(gap.end, end);
            }
            for from in [0, 1, 5, 40, 120, 199, 240] {
                let c = if ceiling == 0 { u64::MAX } else { ceiling };
                let missing = (from.max(start)..=c.min(300)).find(|id| !set.contains(id));
                let expected = missing.map(|m| {
                    let held = set.range(m..).next().copied();
                    (m, held.map_or(c, |h| (h - 1).min(c)))
                });
                prop_assert_eq!(intervals.gap_from(from, c), expected, "from {}", from);
            }
        }
    }
}
