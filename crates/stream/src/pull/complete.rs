//! How offers end: recorded once all their chunks are durable, or dropped and asked for
//! again when a transfer, a request or a peer fails.

use std::time::Instant;

use tributary_chunk::Address;

use super::*;
use crate::intervals::Intervals;
use crate::record::{self, FIRST_BIN_ID};

impl PullSync {
    /// Adds an offer's range to its bin's intervals and returns the record to write, which
    /// stays in `unwritten` until its batch is durable.
    pub(super) fn record_offer(&mut self, offer: u64) -> Option<((Address, u8), SyncRecord)> {
        let o = self.offers.get_mut(&offer)?;
        if o.recorded || o.short {
            return None;
        }
        o.recorded = true;
        let (peer, bin, start, topmost) = (o.peer, o.bin, o.start, o.topmost);
        let p = self.peers.get_mut(&peer)?;
        let epoch = p.cursors.as_ref()?.0;
        let b = p.bins.get_mut(&bin)?;
        b.synced.add(start, topmost);
        let value = record::encode(epoch, &b.synced);
        let u = self.unwritten.entry((peer, bin)).or_insert(Unwritten {
            records: 0,
            epoch,
            synced: Intervals::new(FIRST_BIN_ID),
        });
        u.records += 1;
        u.epoch = epoch;
        u.synced = b.synced.clone();
        Some(((peer, bin), (record::key(&peer, bin), value)))
    }

    /// Ends an offer whose chunks are all stored and whose slot is free: its range is
    /// recorded, or, if a delivery came short, asked for again after a delay.
    pub(super) fn finish_if_complete(&mut self, now: Instant, offer: u64) {
        let Some(o) = self.offers.get(&offer) else {
            return;
        };
        if !o.remaining.is_empty() || o.holds_slot || o.want_request.is_some() {
            return;
        }
        if let Some((key, r)) = self.record_offer(offer) {
            let token = self.id();
            let job = StoreJob {
                records: vec![key],
                ..StoreJob::default()
            };
            self.jobs.insert(token, job);
            self.outputs.push_back(Output::Store {
                token,
                chunks: Vec::new(),
                origin: None,
                records: vec![r],
            });
        }
        // Transfers it still owns (a fallback handed back after its last chunk came short)
        // go to the offers waiting on them, so none is left owned by an offer that is gone.
        let owned: Vec<Address> = self.offers.get(&offer).map_or_else(Vec::new, |o| {
            o.addresses
                .iter()
                .filter(|a| self.transfers.get(a).is_some_and(|t| t.offer == offer))
                .copied()
                .collect()
        });
        let retry = now + self.config.retry_delay;
        if let Some(o) = self.offers.remove(&offer)
            && let Some(b) = self
                .peers
                .get_mut(&o.peer)
                .and_then(|p| p.bins.get_mut(&o.bin))
        {
            let s = &mut b.streams[o.lane as usize];
            s.offers = s.offers.saturating_sub(1);
            if o.short {
                s.next = s.next.min(o.start);
                s.retry_at = Some(retry);
                self.retries.insert((retry, o.peer));
            }
        }
        for address in owned {
            self.fail_transfer(now, address);
        }
    }

    /// A chunk's transfer failed: the first offer still waiting on it wants it instead.
    pub(super) fn fail_transfer(&mut self, now: Instant, address: Address) {
        let Some(transfer) = self.transfers.remove(&address) else {
            return;
        };
        if transfer.storing {
            // Delivered and being written: it did not fail. Keep it.
            self.transfers.insert(address, transfer);
            return;
        }
        let mut waiting = transfer.waiting.into_iter();
        while let Some(next) = waiting.next() {
            let Some(o) = self.offers.get_mut(&next) else {
                continue;
            };
            let Some(i) = o.addresses.iter().position(|a| *a == address) else {
                continue;
            };
            o.to_want.push(i);
            let peer = o.peer;
            self.transfers.insert(
                address,
                Transfer {
                    offer: next,
                    waiting: waiting.collect(),
                    storing: false,
                },
            );
            self.queue_want(now, peer, next);
            return;
        }
    }

    /// Forgets an offer that cannot complete: its own transfers fall back, its stream asks for
    /// its range again after a delay.
    pub(super) fn drop_offer(&mut self, now: Instant, offer: u64) {
        let Some(o) = self.offers.remove(&offer) else {
            return;
        };
        if o.holds_slot {
            self.wants = self.wants.saturating_sub(1);
            if let Some(p) = self.peers.get_mut(&o.peer) {
                p.wants = p.wants.saturating_sub(1);
            }
            for peer in std::mem::take(&mut self.starved) {
                self.send_wants(now, peer);
            }
        }
        let owned: Vec<Address> = o
            .remaining
            .iter()
            .filter(|a| self.transfers.get(a).is_some_and(|t| t.offer == offer))
            .copied()
            .collect();
        for address in owned {
            self.fail_transfer(now, address);
        }
        let retry = now + self.config.retry_delay;
        if let Some(b) = self
            .peers
            .get_mut(&o.peer)
            .and_then(|p| p.bins.get_mut(&o.bin))
        {
            let s = &mut b.streams[o.lane as usize];
            s.offers = s.offers.saturating_sub(1);
            s.next = s.next.min(o.start);
            s.retry_at = Some(retry);
            self.retries.insert((retry, o.peer));
        }
    }

    pub(super) fn fail(&mut self, now: Instant, open: &Open) {
        let retry = now + self.config.retry_delay;
        match open.what {
            Pending::Cursors => {
                if let Some(p) = self.peers.get_mut(&open.peer) {
                    p.cursors_request = None;
                    p.retry_cursors_at = Some(retry);
                    self.retries.insert((retry, open.peer));
                }
            }
            Pending::Get { bin, lane, .. } => {
                if let Some(b) = self
                    .peers
                    .get_mut(&open.peer)
                    .and_then(|p| p.bins.get_mut(&bin))
                {
                    let s = &mut b.streams[lane as usize];
                    s.get = None;
                    s.retry_at = Some(retry);
                    self.retries.insert((retry, open.peer));
                }
            }
            Pending::Want { offer } => {
                if let Some(o) = self.offers.get_mut(&offer) {
                    o.want_request = None;
                }
                self.drop_offer(now, offer);
            }
        }
    }

    pub(super) fn penalize(&mut self, now: Instant, peer: Address, fault: Fault) {
        self.stats.refused += 1;
        self.banned.insert(peer, now + self.config.ban);
        self.handle_disconnected(now, peer);
        self.outputs.push_back(Output::Penalize { peer, fault });
    }
}
