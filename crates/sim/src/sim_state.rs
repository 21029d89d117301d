//! Whole nodes, state sync: with [`crate::SimConfig::state`] set, every simulated node keeps
//! a Merkle database on its store and answers x/sync requests from it on its connections
//! (the runtime's `/tributary/statesync/1` server), and a node told to sync
//! ([`Sim::start_state_sync`]) runs the x/sync client against the full peers its overlay is
//! connected to, as `tributary state sync` does through a light overlay peer.
//!
//! A server may lie in any of the ways of the state-sync simulator ([`ServerKind`]: the same
//! corruptions, [`crate::statesync::serve_as`]). A request not answered within
//! [`StateConfig::timeout`] fails and goes back to the client, which retries it elsewhere; a
//! server without the requested root stays silent (the runtime's `Reply::Drop`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tributary_merkle::{Config, Hash, MerkleDb};
use tributary_statesync::client::{Client, ClientConfig, ClientError};
use tributary_store::KvStore;

use crate::statesync::{ServerKind, serve_as};
use crate::{Event, Frame, Sim, SimError};

/// State sync in whole nodes.
#[derive(Clone, Debug)]
pub struct StateConfig {
    /// The client's limits.
    pub client: ClientConfig,
    /// How long the client waits for an answer.
    pub timeout: Duration,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            client: ClientConfig::default(),
            timeout: Duration::from_secs(2),
        }
    }
}

/// What state sync did in a run.
#[derive(Clone, Debug, Default)]
pub struct StateStats {
    /// Requests answered, per server.
    pub served: BTreeMap<usize, u64>,
    /// Requests a server could not answer (it does not hold the root).
    pub declined: u64,
    /// Lies told.
    pub lies: u64,
    /// Requests that timed out.
    pub timeouts: u64,
    /// The client's penalties per server.
    pub penalties: BTreeMap<usize, u32>,
}

struct Sync {
    node: usize,
    /// Numbers this run: requests, answers and timeouts of another are stale (every client
    /// numbers its requests from 0).
    life: u64,
    client: Client<usize>,
    /// Requests in flight (answers to others are stale).
    waiting: BTreeSet<u64>,
    /// The wake-up queued, if any.
    armed: Option<Instant>,
}

/// Every node's state database and server kind, and the client run, if any.
pub(crate) struct StateLayer {
    config: StateConfig,
    dbs: Vec<Option<MerkleDb>>,
    kinds: Vec<ServerKind>,
    next_lie: usize,
    sync: Option<Sync>,
    lives: u64,
    stats: StateStats,
}

impl StateLayer {
    /// Keeps the penalties of a client run that ends.
    fn merge_penalties(&mut self, run: &Sync) {
        for (peer, n) in run.client.penalties() {
            *self.stats.penalties.entry(*peer).or_default() += n;
        }
    }

    pub(crate) fn new(config: StateConfig) -> Self {
        Self {
            config,
            dbs: Vec::new(),
            kinds: Vec::new(),
            next_lie: 0,
            sync: None,
            lives: 0,
            stats: StateStats::default(),
        }
    }
}

fn open(store: &Arc<tributary_store::MemStore>) -> Result<MerkleDb, ClientError> {
    let store: Arc<dyn KvStore> = store.clone();
    Ok(MerkleDb::open(store, Config::default())?)
}

impl Sim {
    /// Node `i`'s state database (`None` without state sync, or while it is down); the
    /// client's while a client run is on `i`.
    #[must_use]
    pub fn state_db(&self, i: usize) -> Option<&MerkleDb> {
        let s = self.state.as_ref()?;
        match &s.sync {
            Some(sync) if sync.node == i => Some(sync.client.db()),
            _ => s.dbs.get(i)?.as_ref(),
        }
    }

    /// Makes node `i` answer as `kind` does.
    pub fn set_server_kind(&mut self, i: usize, kind: ServerKind) {
        if let Some(s) = self.state.as_mut() {
            s.kinds[i] = kind;
        }
    }

    /// What state sync did so far.
    #[must_use]
    pub fn state_stats(&self) -> Option<StateStats> {
        let s = self.state.as_ref()?;
        let mut stats = s.stats.clone();
        if let Some(sync) = &s.sync {
            for (peer, n) in sync.client.penalties() {
                *stats.penalties.entry(*peer).or_default() += n;
            }
        }
        Some(stats)
    }

    /// Node `i` starts syncing its state database to `target` from the full peers its
    /// overlay is connected to now (a run under way ends; its database stays the node's).
    ///
    /// # Errors
    /// When its database fails, or it has no such peer.
    pub fn start_state_sync(&mut self, i: usize, target: Hash) -> Result<(), SimError> {
        let peers: Vec<usize> = self
            .net
            .peers(i)
            .into_iter()
            .filter(|&p| !self.nodes[p].light && self.nodes[p].core.is_some())
            .collect();
        let Some(s) = self.state.as_mut() else {
            return Ok(());
        };
        if let Some(old) = s.sync.take() {
            s.merge_penalties(&old);
            // The database goes back to its node: a clone shares the client's handle.
            s.dbs[old.node] = Some(old.client.db().clone());
        }
        // One handle per store: the node's database becomes the client's.
        let db = match s.dbs.get_mut(i).and_then(Option::take) {
            Some(db) => db,
            None => open(&self.nodes[i].store)?,
        };
        let client = Client::new(db, target, peers, s.config.client.clone())?;
        s.lives += 1;
        s.sync = Some(Sync {
            node: i,
            life: s.lives,
            client,
            waiting: BTreeSet::new(),
            armed: None,
        });
        self.pump_state();
        Ok(())
    }

    /// Whether the client run has reached its target (`false` if none runs).
    ///
    /// # Errors
    /// When the client's database fails.
    pub fn state_sync_done(&self) -> Result<bool, SimError> {
        match self.state.as_ref().and_then(|s| s.sync.as_ref()) {
            Some(sync) => Ok(sync.client.is_done()?),
            None => Ok(false),
        }
    }

    /// The root of the syncing node's database.
    #[must_use]
    pub fn state_sync_root(&self) -> Option<Hash> {
        let sync = self.state.as_ref()?.sync.as_ref()?;
        Some(sync.client.db().root())
    }

    /// A new node, or one restarting: its database opens on its store.
    pub(crate) fn state_start(&mut self, i: usize) -> Result<(), SimError> {
        let Some(s) = self.state.as_mut() else {
            return Ok(());
        };
        let db = open(&self.nodes[i].store)?;
        if s.dbs.len() <= i {
            s.dbs.resize_with(i + 1, || None);
            s.kinds.resize(i + 1, ServerKind::Honest);
        }
        s.dbs[i] = Some(db);
        Ok(())
    }

    /// Node `i` crashed: its database closes, and a client run on it ends.
    pub(crate) fn state_crash(&mut self, i: usize) {
        if let Some(s) = self.state.as_mut() {
            s.dbs[i] = None;
            if s.sync.as_ref().is_some_and(|sync| sync.node == i)
                && let Some(old) = s.sync.take()
            {
                s.merge_penalties(&old);
            }
        }
    }

    /// A request reached server `at`: it answers as its kind does.
    pub(crate) fn serve_state(
        &mut self,
        at: usize,
        from: usize,
        (life, id): (u64, u64),
        request: &[u8],
    ) {
        let Some(s) = self.state.as_mut() else {
            return;
        };
        let kind = s.kinds[at].this_answer(&mut s.next_lie, self.net.rng());
        let Some(db) = s.dbs[at].as_ref() else {
            return;
        };
        let Ok(served) = serve_as(db, kind, request, self.net.rng()) else {
            s.stats.declined += 1;
            return;
        };
        let Some(bytes) = served.bytes else {
            return;
        };
        *s.stats.served.entry(at).or_default() += 1;
        if kind.lies() {
            s.stats.lies += 1;
        }
        self.net
            .send(at, from, Frame::StateResponse { life, id, bytes });
    }

    /// An answer reached node `to` (the client's, if it is for the run under way).
    pub(crate) fn on_state_response(
        &mut self,
        to: usize,
        (life, id): (u64, u64),
        bytes: &[u8],
    ) -> Result<(), SimError> {
        let now = self.net.now();
        if let Some(sync) = self.state.as_mut().and_then(|s| s.sync.as_mut())
            && (sync.node, sync.life) == (to, life)
            && sync.waiting.remove(&id)
        {
            sync.client.handle_response(now, id, bytes)?;
        }
        self.pump_state();
        Ok(())
    }

    /// A request's time ran out, or the client's wake-up came.
    pub(crate) fn on_state_timer(&mut self, timeout: Option<(u64, u64)>) {
        let now = self.net.now();
        if let Some(s) = self.state.as_mut()
            && let Some(sync) = s.sync.as_mut()
        {
            match timeout {
                Some((life, id)) => {
                    if life == sync.life && sync.waiting.remove(&id) {
                        s.stats.timeouts += 1;
                        sync.client.handle_failure(now, id);
                    }
                }
                None => sync.armed = None,
            }
        }
        self.pump_state();
    }

    /// Sends what the client wants sent and arms its wake-up.
    fn pump_state(&mut self) {
        let now = self.net.now();
        let Some(s) = self.state.as_mut() else {
            return;
        };
        let Some(sync) = s.sync.as_mut() else {
            return;
        };
        while let Some(out) = sync.client.poll_request(now) {
            sync.waiting.insert(out.id);
            let at = now + s.config.timeout;
            let life = sync.life;
            self.net
                .schedule(at, Event::StateTimeout { life, id: out.id });
            let frame = Frame::StateRequest {
                life,
                id: out.id,
                bytes: out.bytes,
            };
            self.net.send(sync.node, out.peer, frame);
        }
        if let Some(at) = sync.client.next_wakeup().filter(|at| *at > now)
            && sync.armed.is_none_or(|armed| at < armed)
        {
            sync.armed = Some(at);
            self.net.schedule(at, Event::StateWake);
        }
    }
}
