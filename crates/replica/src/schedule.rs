//! When to sync: the round scheduler of the replica protocol, sans-IO.
//!
//! The engine ([`crate::Replica`]) answers and applies GetDeltas; this core decides when a
//! database syncs and with whom, as Syncbase's initiator thread does. It holds no engine and
//! does no I/O: the node runtime and the simulator feed it events with the time
//! (`connected`, `prepared`, `answered`, `news`, `handle_timeout`…), carry out the
//! [`Action`]s it queues ([`Scheduler::poll_action`]), and wake it at
//! [`Scheduler::poll_timeout`].
//!
//! - **Rounds.** Each database with a joined syncgroup runs one round at a time: its
//!   knowledge is read ([`Action::Prepare`], an engine call the caller makes off its event
//!   loop), then one connected member is asked ([`Action::Ask`]): the member that sent news
//!   or whose answer goes on, else one at random. The next round follows after the interval
//!   (±25%, so members do not sync in lockstep); the first rounds of the databases known at
//!   start are spread over one interval.
//! - **News.** A local write sends [`Action::News`] to the connected members of the database,
//!   at most once per news gap, one in flight per member (later ones wait for it). News from a
//!   member starts a round with it, at most once per news gap; news that comes during a round
//!   starts the next one as soon as the gap allows.
//! - **Failures.** A member whose answer failed or broke the protocol is backed off, 2 s
//!   doubling to 60 s (counted once per back-off, remembered until a complete answer); a busy
//!   member is asked again within 0.3–0.6 s, not backed off. One GetDeltas is in flight per
//!   member.
//! - **Lag.** Per syncgroup, when an answer of one of its members last ended complete
//!   ([`Scheduler::lags`]); before any has, since the scheduler began tracking the database
//!   (its start, or the create or join).
//!
//! Everything is ordered (B-tree maps) and the randomness is seeded, so the same inputs give
//! the same actions: the simulator runs this very code.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use tributary_wire::replica::DeltaRequest;

use crate::syncgroup::MemberState;
use crate::{NodeId, Replica, ReplicaError};

/// splitmix64's output function: enough to spread picks.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The joined members (this node left out) of each syncgroup of a database.
pub type Groups = BTreeMap<String, BTreeSet<NodeId>>;

/// Timing and bounds of the scheduler.
#[derive(Clone, Debug)]
pub struct ScheduleConfig {
    /// Time between rounds of a database (±25%).
    pub interval: Duration,
    /// Least time between two news sent, and between two news-driven rounds, of a database.
    pub news_gap: Duration,
    /// A busy member is asked again after this, plus up to 300 ms.
    pub busy_retry: Duration,
    /// The first back-off of a failing member; it doubles at each failure.
    pub backoff_base: Duration,
    /// The longest back-off.
    pub backoff_max: Duration,
    /// Databases scheduled at most.
    pub max_databases: usize,
    /// A member that is not connected is offered for a dial at most this often.
    pub member_dial_every: Duration,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(3),
            news_gap: Duration::from_millis(20),
            busy_retry: Duration::from_millis(300),
            backoff_base: Duration::from_secs(2),
            backoff_max: Duration::from_secs(60),
            max_databases: 1024,
            member_dial_every: Duration::from_secs(30),
        }
    }
}

/// What the scheduler asks the caller to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Read the database's GetDeltas request and syncgroup members from the engine, then call
    /// [`Scheduler::prepared`] (or [`Scheduler::prepare_failed`]).
    Prepare {
        /// The database.
        db: String,
    },
    /// Send `request` to `member`; report how it ended with [`Scheduler::answered`].
    Ask {
        /// The database.
        db: String,
        /// The member asked.
        member: NodeId,
        /// The GetDeltas request.
        request: DeltaRequest,
    },
    /// Tell `member` that `db` changed here; call [`Scheduler::news_done`] when it ends.
    News {
        /// The member told.
        member: NodeId,
        /// The database.
        db: String,
    },
}

/// How an [`Action::Ask`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The answer ended and was applied.
    Complete,
    /// The answer was applied and goes on: the same member is asked again at once.
    More,
    /// The member was at its limit.
    Busy,
    /// It failed: a timeout, a refusal, records refused that need not be the member's fault,
    /// a store error.
    Failed,
    /// The member broke the protocol (the caller penalizes it).
    Fault,
}

/// Counters for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScheduleStats {
    /// Members asked.
    pub rounds: u64,
    /// Rounds that ended failed or at fault, or whose preparation failed.
    pub rounds_failed: u64,
    /// Answers that went on and were asked again at once.
    pub continuations: u64,
    /// News sent.
    pub news_sent: u64,
}

/// One database's rounds.
#[derive(Debug)]
struct Rounds {
    busy: bool,
    next_round: Instant,
    prefer: Option<NodeId>,
    /// News came during the round.
    again: bool,
    groups: Groups,
    /// Every member of `groups`, and requesters answered about the database since.
    members: BTreeSet<NodeId>,
    news_due: Option<Instant>,
    last_news: Option<Instant>,
    last_round: Option<Instant>,
    caught_up: BTreeMap<String, Instant>,
    since: Instant,
}

impl Rounds {
    fn new(now: Instant) -> Self {
        Self {
            busy: false,
            next_round: now,
            prefer: None,
            again: false,
            groups: Groups::new(),
            members: BTreeSet::new(),
            news_due: None,
            last_news: None,
            last_round: None,
            caught_up: BTreeMap::new(),
            since: now,
        }
    }
}

/// The round scheduler; see the module documentation.
#[derive(Debug)]
pub struct Scheduler {
    config: ScheduleConfig,
    dbs: BTreeMap<String, Rounds>,
    connected: BTreeSet<NodeId>,
    /// Members with a GetDeltas in flight.
    asking: BTreeSet<NodeId>,
    backoff: BTreeMap<NodeId, (u32, Instant)>,
    /// Members with a news in flight, and the databases whose news waits for it to end.
    news_in_flight: BTreeMap<NodeId, BTreeSet<String>>,
    /// When each unconnected member was last offered for a dial.
    dialled: BTreeMap<NodeId, Instant>,
    rng: u64,
    actions: VecDeque<Action>,
    stats: ScheduleStats,
}

impl Scheduler {
    /// A scheduler with no database and no member connected; `seed` spreads member picks and
    /// round jitter.
    #[must_use]
    pub fn new(config: ScheduleConfig, seed: u64) -> Self {
        Self {
            config,
            dbs: BTreeMap::new(),
            connected: BTreeSet::new(),
            asking: BTreeSet::new(),
            backoff: BTreeMap::new(),
            news_in_flight: BTreeMap::new(),
            dialled: BTreeMap::new(),
            // Mixed once, so that nearby seeds (the simulator's node indices) do not give
            // nearby streams.
            rng: mix(seed),
            actions: VecDeque::new(),
            stats: ScheduleStats::default(),
        }
    }

    fn random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.rng)
    }

    fn millis(d: Duration) -> u64 {
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
    }

    /// 75% to 125% of the interval.
    fn interval(&mut self) -> Duration {
        let ms = Self::millis(self.config.interval);
        Duration::from_millis(ms * 3 / 4 + self.random() % (ms / 2 + 1))
    }

    /// The databases that have syncgroups, known at start: their first rounds are spread
    /// over one interval.
    pub fn databases(&mut self, now: Instant, dbs: impl IntoIterator<Item = String>) {
        for db in dbs {
            let offset = self.random() % Self::millis(self.config.interval).max(1);
            if let Some(state) = self.state(now, &db) {
                state.next_round = now + Duration::from_millis(offset);
            }
        }
    }

    /// A syncgroup of `db` was created or joined here: its rounds start now. `false` if the
    /// scheduler already has its [`ScheduleConfig::max_databases`].
    pub fn track(&mut self, now: Instant, db: &str) -> bool {
        let Some(state) = self.state(now, db) else {
            return false;
        };
        state.next_round = state.next_round.min(now);
        true
    }

    fn state(&mut self, now: Instant, db: &str) -> Option<&mut Rounds> {
        if !self.dbs.contains_key(db) && self.dbs.len() >= self.config.max_databases {
            return None;
        }
        Some(
            self.dbs
                .entry(db.to_string())
                .or_insert_with(|| Rounds::new(now)),
        )
    }

    /// A join of a syncgroup of `db` through `admin` succeeded: sync with the admin now
    /// (after the round under way, if one is).
    pub fn joined(&mut self, now: Instant, db: &str, admin: Option<NodeId>) {
        let Some(state) = self.state(now, db) else {
            return;
        };
        state.members.extend(admin);
        state.prefer = admin;
        if state.busy {
            state.again = true;
        } else {
            state.next_round = now;
        }
    }

    /// `node` was answered about `db`: it is a member, and hears of the writes here.
    pub fn add_member(&mut self, db: &str, node: NodeId) {
        if let Some(state) = self.dbs.get_mut(db) {
            state.members.insert(node);
        }
    }

    /// A member's connection is up.
    pub fn connected(&mut self, node: NodeId) {
        self.connected.insert(node);
    }

    /// A member's connection went away (its asks in flight end as [`Outcome::Failed`] when
    /// the caller reports them).
    pub fn disconnected(&mut self, node: &NodeId) {
        self.connected.remove(node);
        self.news_in_flight.remove(node);
    }

    /// The request and members read for [`Action::Prepare`]: asks a member, or ends the
    /// round if none is ready. `request` `None` (no syncgroup joined any more) drops the
    /// database until it is tracked again.
    pub fn prepared(
        &mut self,
        now: Instant,
        db: &str,
        request: Option<DeltaRequest>,
        groups: Groups,
    ) {
        let Some(request) = request else {
            self.dbs.remove(db);
            return;
        };
        let Some(state) = self.dbs.get_mut(db) else {
            return;
        };
        state.members = groups.values().flatten().copied().collect();
        state.caught_up.retain(|name, _| groups.contains_key(name));
        state.groups = groups;
        let prefer = state.prefer.take();
        let Some(member) = self.pick(now, db, prefer) else {
            self.round_done(now, db, None);
            return;
        };
        if let Some(state) = self.dbs.get_mut(db) {
            state.last_round = Some(now);
        }
        self.stats.rounds += 1;
        self.asking.insert(member);
        self.actions.push_back(Action::Ask {
            db: db.to_string(),
            member,
            request,
        });
    }

    /// Reading the request for [`Action::Prepare`] failed.
    pub fn prepare_failed(&mut self, now: Instant, db: &str) {
        self.stats.rounds_failed += 1;
        self.round_done(now, db, None);
    }

    /// The member to ask: `prefer` if it is a connected member ready to be asked, else one
    /// at random among those.
    fn pick(&mut self, now: Instant, db: &str, prefer: Option<NodeId>) -> Option<NodeId> {
        let members = &self.dbs.get(db)?.members;
        let ready = |node: &NodeId| {
            self.connected.contains(node)
                && !self.asking.contains(node)
                && self
                    .backoff
                    .get(node)
                    .is_none_or(|(_, until)| *until <= now)
        };
        if let Some(node) = prefer.filter(|n| members.contains(n) && ready(n)) {
            return Some(node);
        }
        let candidates: Vec<NodeId> = members.iter().filter(|n| ready(n)).copied().collect();
        if candidates.is_empty() {
            return None;
        }
        let i = usize::try_from(self.random() % candidates.len() as u64).unwrap_or(0);
        Some(candidates[i])
    }

    /// How the [`Action::Ask`] of `db` to `member` ended.
    pub fn answered(&mut self, now: Instant, db: &str, member: NodeId, outcome: Outcome) {
        self.asking.remove(&member);
        match outcome {
            Outcome::Busy => {
                let jitter = Duration::from_millis(self.random() % 300);
                self.round_done(now, db, None);
                let retry = now + self.config.busy_retry + jitter;
                if let Some(state) = self.dbs.get_mut(db) {
                    state.next_round = retry;
                }
            }
            Outcome::Failed | Outcome::Fault => {
                self.stats.rounds_failed += 1;
                self.back_off(now, member);
                self.round_done(now, db, None);
            }
            Outcome::More => {
                self.backoff.remove(&member);
                self.stats.continuations += 1;
                self.round_done(now, db, Some(member));
            }
            Outcome::Complete => {
                self.backoff.remove(&member);
                if let Some(state) = self.dbs.get_mut(db) {
                    for (name, members) in &state.groups {
                        if members.contains(&member) {
                            state.caught_up.insert(name.clone(), now);
                        }
                    }
                }
                self.round_done(now, db, None);
            }
        }
    }

    /// `node` was penalized outside a round (a bad request): it is backed off.
    pub fn penalized(&mut self, now: Instant, node: NodeId) {
        self.back_off(now, node);
    }

    /// Backs a member off: the base, doubling to the longest. The count goes up at most once
    /// per back-off, so a burst of failures at one moment counts once.
    fn back_off(&mut self, now: Instant, node: NodeId) {
        let entry = self.backoff.entry(node).or_insert((0, now));
        if entry.1 > now {
            return;
        }
        entry.0 = entry.0.saturating_add(1);
        let wait = self
            .config
            .backoff_base
            .saturating_mul(1 << entry.0.min(6).saturating_sub(1))
            .min(self.config.backoff_max);
        entry.1 = now + wait;
    }

    /// A round of `db` ended; the next one is due at once if the answer went on (`next` is
    /// then the member to ask), soon if news came, else after the interval.
    fn round_done(&mut self, now: Instant, db: &str, next: Option<NodeId>) {
        let interval = self.interval();
        let gap = self.config.news_gap;
        let Some(state) = self.dbs.get_mut(db) else {
            return;
        };
        state.busy = false;
        if next.is_some() {
            state.prefer = next;
        }
        state.next_round = if next.is_some() {
            now
        } else if state.again {
            state.last_round.map_or(now, |t| (t + gap).max(now))
        } else {
            now + interval
        };
        state.again = false;
    }

    /// A local write to `db`: its members hear of it soon.
    pub fn local_write(&mut self, now: Instant, db: &str) {
        let gap = self.config.news_gap;
        let Some(state) = self.dbs.get_mut(db) else {
            return;
        };
        let due = state.last_news.map_or(now, |t| (t + gap).max(now));
        state.news_due = Some(state.news_due.map_or(due, |d| d.min(due)));
    }

    /// News of `db` from `from`: a round with it soon, if it is a member of a database
    /// scheduled here. Returns whether it was.
    pub fn news(&mut self, now: Instant, from: NodeId, db: &str) -> bool {
        let gap = self.config.news_gap;
        let Some(state) = self.dbs.get_mut(db) else {
            return false;
        };
        if !state.members.contains(&from) {
            return false;
        }
        state.prefer = Some(from);
        if state.busy {
            state.again = true;
        } else {
            let earliest = state.last_round.map_or(now, |t| (t + gap).max(now));
            state.next_round = state.next_round.min(earliest);
        }
        true
    }

    fn send_news(&mut self, now: Instant, db: &str) {
        let Some(state) = self.dbs.get_mut(db) else {
            return;
        };
        state.news_due = None;
        state.last_news = Some(now);
        let targets: Vec<NodeId> = state
            .members
            .iter()
            .filter(|n| self.connected.contains(n))
            .copied()
            .collect();
        for member in targets {
            if let Some(waiting) = self.news_in_flight.get_mut(&member) {
                waiting.insert(db.to_string());
                continue;
            }
            self.news_in_flight.insert(member, BTreeSet::new());
            self.stats.news_sent += 1;
            self.actions.push_back(Action::News {
                member,
                db: db.to_string(),
            });
        }
    }

    /// A news to `member` ended (answered or failed): the next one waiting for it goes.
    pub fn news_done(&mut self, member: NodeId) {
        let Some(waiting) = self.news_in_flight.remove(&member) else {
            return;
        };
        if !self.connected.contains(&member) {
            return;
        }
        let mut waiting = waiting.into_iter();
        if let Some(db) = waiting.next() {
            self.news_in_flight.insert(member, waiting.collect());
            self.stats.news_sent += 1;
            self.actions.push_back(Action::News { member, db });
        }
    }

    /// Starts the rounds and sends the news that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        // A back-off is remembered for the longest back-off after it ends (so repeated
        // failures double it), then forgotten: the map does not grow with every peer ever
        // penalized, and a member that recovered starts again from the base.
        let keep = self.config.backoff_max;
        self.backoff
            .retain(|_, (_, until)| now < until.checked_add(keep).unwrap_or(*until));
        let due: Vec<String> = self
            .dbs
            .iter_mut()
            .filter(|(_, d)| !d.busy && d.next_round <= now)
            .map(|(db, d)| {
                d.busy = true;
                d.again = false;
                db.clone()
            })
            .collect();
        for db in due {
            self.actions.push_back(Action::Prepare { db });
        }
        let news: Vec<String> = self
            .dbs
            .iter()
            .filter(|(_, d)| d.news_due.is_some_and(|t| t <= now))
            .map(|(db, _)| db.clone())
            .collect();
        for db in news {
            self.send_news(now, &db);
        }
    }

    /// The next deadline: a round or a news due.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.dbs
            .values()
            .flat_map(|d| [(!d.busy).then_some(d.next_round), d.news_due])
            .flatten()
            .min()
    }

    /// The next action to carry out.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The members of `db`, if it is scheduled.
    #[must_use]
    pub fn members(&self, db: &str) -> Option<&BTreeSet<NodeId>> {
        self.dbs.get(db).map(|d| &d.members)
    }

    /// The members to dial now: of the scheduled databases, not connected, and not offered
    /// in the last [`ScheduleConfig::member_dial_every`] (the caller looks them up, in the
    /// overlay's known peers for the node, and dials those it finds).
    pub fn members_to_dial(&mut self, now: Instant) -> BTreeSet<NodeId> {
        let every = self.config.member_dial_every;
        self.dialled
            .retain(|_, at| now.saturating_duration_since(*at) < every);
        let due: BTreeSet<NodeId> = self
            .unconnected_members()
            .into_iter()
            .filter(|m| !self.dialled.contains_key(m))
            .collect();
        for m in &due {
            self.dialled.insert(*m, now);
        }
        due
    }

    /// Members of the scheduled databases that are not connected.
    #[must_use]
    pub fn unconnected_members(&self) -> BTreeSet<NodeId> {
        self.dbs
            .values()
            .flat_map(|d| &d.members)
            .filter(|n| !self.connected.contains(n))
            .copied()
            .collect()
    }

    /// Per (database, syncgroup with another member): how long since an answer of one of its
    /// members last ended complete, or since this scheduler began tracking the database if
    /// none has.
    #[must_use]
    pub fn lags(&self, now: Instant) -> Vec<(String, String, Duration)> {
        let mut out = Vec::new();
        for (db, state) in &self.dbs {
            for (name, _) in state.groups.iter().filter(|(_, m)| !m.is_empty()) {
                let at = state.caught_up.get(name).copied().unwrap_or(state.since);
                out.push((db.clone(), name.clone(), now.saturating_duration_since(at)));
            }
        }
        out
    }

    /// The counters.
    #[must_use]
    pub fn stats(&self) -> ScheduleStats {
        self.stats
    }
}

/// What [`Action::Prepare`] asks the caller to read from the engine, for
/// [`Scheduler::prepared`]: the database's GetDeltas request (`None` if no syncgroup of it is
/// joined) and the joined members of each of its syncgroups, this node left out. A syncgroup
/// that cannot be read is left out of the round.
///
/// # Errors
/// When the request cannot be read.
pub fn round_inputs(r: &Replica, db: &str) -> Result<(Option<DeltaRequest>, Groups), ReplicaError> {
    let req = r.delta_request(db)?;
    let request = (!req.knowledge.is_empty()).then_some(req);
    let mut groups = Groups::new();
    for name in r.syncgroup_names(db).unwrap_or_default() {
        if let Ok(info) = r.syncgroup(db, &name) {
            let members = info
                .members
                .iter()
                .filter(|(id, s)| *s == MemberState::Joined && *id != r.id())
                .map(|(id, _)| *id)
                .collect();
            groups.insert(name, members);
        }
    }
    Ok((request, groups))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(i: u8) -> NodeId {
        NodeId([i; 20])
    }

    fn request() -> DeltaRequest {
        DeltaRequest {
            db: "db".into(),
            ..DeltaRequest::default()
        }
    }

    fn groups(members: &[u8]) -> Groups {
        let mut g = Groups::new();
        g.insert("sg".into(), members.iter().map(|&i| node(i)).collect());
        g
    }

    fn actions(s: &mut Scheduler) -> Vec<Action> {
        std::iter::from_fn(|| s.poll_action()).collect()
    }

    /// Runs one round at `now`: returns the member asked, if any.
    fn round(s: &mut Scheduler, now: Instant, members: &[u8]) -> Option<NodeId> {
        s.handle_timeout(now);
        assert_eq!(actions(s), [Action::Prepare { db: "db".into() }]);
        s.prepared(now, "db", Some(request()), groups(members));
        match actions(s).as_slice() {
            [Action::Ask { member, .. }] => Some(*member),
            [] => None,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rounds_ask_connected_members_then_wait_the_interval() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(ScheduleConfig::default(), 7);
        assert!(s.track(t0, "db"));
        assert_eq!(round(&mut s, t0, &[1, 2]), None, "nobody connected");
        let next = s.poll_timeout().expect("a next round");
        let wait = next - t0;
        assert!(wait >= Duration::from_millis(2250) && wait <= Duration::from_millis(3750));
        s.connected(node(2));
        assert_eq!(round(&mut s, next, &[1, 2]), Some(node(2)));
        assert_eq!(s.poll_timeout(), None, "one round at a time");
        s.answered(next, "db", node(2), Outcome::More);
        assert_eq!(
            s.poll_timeout(),
            Some(next),
            "an answer that goes on: at once"
        );
        assert_eq!(round(&mut s, next, &[1, 2]), Some(node(2)));
        s.answered(next, "db", node(2), Outcome::Complete);
        assert_eq!(s.lags(next), [("db".into(), "sg".into(), Duration::ZERO)]);
        assert_eq!(s.stats().rounds, 2);
        assert_eq!(s.stats().continuations, 1);
    }

    #[test]
    fn unconnected_members_are_offered_for_a_dial_once_per_period() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(ScheduleConfig::default(), 3);
        s.track(t0, "db");
        assert!(s.members_to_dial(t0).is_empty(), "no member known yet");
        s.connected(node(1));
        round(&mut s, t0, &[1, 2, 3]);
        let both: BTreeSet<NodeId> = [node(2), node(3)].into();
        assert_eq!(s.members_to_dial(t0), both, "the unconnected ones");
        let soon = t0 + Duration::from_secs(29);
        assert!(s.members_to_dial(soon).is_empty(), "not again within 30 s");
        s.connected(node(2));
        let later = t0 + Duration::from_secs(30);
        assert_eq!(s.members_to_dial(later), [node(3)].into());
    }

    #[test]
    fn a_failing_member_is_backed_off_doubling_and_a_busy_one_is_not() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(ScheduleConfig::default(), 1);
        s.track(t0, "db");
        s.connected(node(1));
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..7 {
            assert_eq!(round(&mut s, now, &[1]), Some(node(1)));
            s.answered(now, "db", node(1), Outcome::Failed);
            let until = s.backoff[&node(1)].1;
            waits.push((until - now).as_secs());
            now = until.max(s.poll_timeout().expect("a next round"));
        }
        assert_eq!(waits, [2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(round(&mut s, now, &[1]), Some(node(1)));
        s.answered(now, "db", node(1), Outcome::Busy);
        let retry = s.poll_timeout().expect("retry") - now;
        assert!(retry >= Duration::from_millis(300) && retry < Duration::from_millis(600));
        assert!(
            s.backoff.contains_key(&node(1)),
            "busy keeps the back-off count"
        );
        assert_eq!(round(&mut s, now + retry, &[1]), Some(node(1)));
        s.answered(now + retry, "db", node(1), Outcome::Complete);
        assert!(
            !s.backoff.contains_key(&node(1)),
            "a complete answer clears it"
        );
        // A back-off ends and, the longest back-off later, is forgotten.
        let later = now + Duration::from_secs(10);
        s.penalized(later, node(1));
        s.handle_timeout(later + Duration::from_secs(61));
        assert!(
            s.backoff.contains_key(&node(1)),
            "kept a while after it ends"
        );
        s.handle_timeout(later + Duration::from_secs(63));
        assert!(!s.backoff.contains_key(&node(1)), "then forgotten");
    }

    #[test]
    fn news_goes_to_connected_members_once_per_gap_and_one_in_flight() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(ScheduleConfig::default(), 3);
        s.track(t0, "db");
        for i in [1, 2] {
            s.connected(node(i));
        }
        let asked = round(&mut s, t0, &[1, 2, 3]).expect("asked");
        s.answered(t0, "db", asked, Outcome::Complete);
        s.local_write(t0, "db");
        s.handle_timeout(t0);
        let sent: Vec<Action> = actions(&mut s);
        assert_eq!(
            sent,
            [1, 2]
                .map(|i| Action::News {
                    member: node(i),
                    db: "db".into()
                })
                .to_vec()
        );
        // Another write within the gap: due at the gap, and waits for the one in flight.
        s.local_write(t0, "db");
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_millis(20)));
        s.handle_timeout(t0 + Duration::from_millis(20));
        assert!(actions(&mut s).is_empty(), "one news in flight per member");
        s.news_done(node(1));
        assert_eq!(
            actions(&mut s),
            [Action::News {
                member: node(1),
                db: "db".into()
            }]
        );
        // News from a member starts a round with it; from a stranger, nothing.
        let now = t0 + Duration::from_millis(50);
        assert!(!s.news(now, node(9), "db"));
        assert!(s.news(now, node(2), "db"));
        assert_eq!(s.poll_timeout(), Some(now));
        assert_eq!(round(&mut s, now, &[1, 2, 3]), Some(node(2)));
    }

    #[test]
    fn a_database_left_is_dropped_and_picks_follow_the_seed() {
        let t0 = Instant::now();
        let picks = |seed| {
            let mut s = Scheduler::new(ScheduleConfig::default(), seed);
            s.track(t0, "db");
            for i in 1..=5 {
                s.connected(node(i));
            }
            let mut now = t0;
            let mut out = Vec::new();
            for _ in 0..20 {
                let m = round(&mut s, now, &[1, 2, 3, 4, 5]).expect("asked");
                s.answered(now, "db", m, Outcome::Complete);
                out.push(m.0[0]);
                now = s.poll_timeout().expect("next");
            }
            out
        };
        assert_eq!(picks(5), picks(5));
        assert_ne!(picks(4), picks(5), "neighbouring seeds give other picks");
        assert!(picks(5).iter().collect::<BTreeSet<_>>().len() >= 4);
        let mut s = Scheduler::new(ScheduleConfig::default(), 1);
        s.track(t0, "db");
        s.handle_timeout(t0);
        actions(&mut s);
        s.prepared(t0, "db", None, Groups::new());
        assert_eq!(s.poll_timeout(), None);
        assert!(s.members("db").is_none());
    }
}
