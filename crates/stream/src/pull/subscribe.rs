//! Subscriptions: a peer's cursors and epoch, the bins the Kademlia rule gives it, and the
//! intervals each bin resumes from.

use std::collections::BTreeSet;
use std::time::Instant;

use tributary_chunk::Address;
use tributary_wire::pullsync::{Request, request};

use super::*;
use crate::intervals::Intervals;
use crate::record::{self, FIRST_BIN_ID};

impl PullSync {
    pub(super) fn ask_cursors(&mut self, now: Instant, peer: Address) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        p.retry_cursors_at = None;
        if p.cursors_request.is_some() || p.cursors.is_some() {
            return;
        }
        let id = self.next_id;
        p.cursors_request = Some(id);
        let r = Request::new(request::Message::Cursors(
            tributary_wire::pullsync::CursorsRequest {},
        ));
        self.request(now, peer, Pending::Cursors, Class::Live, r);
    }

    pub(super) fn on_cursors(
        &mut self,
        now: Instant,
        peer: Address,
        epoch: u64,
        cursors: Vec<u64>,
        index: &dyn PullIndex,
    ) -> Result<(), Fault> {
        if cursors.len() != usize::from(MAX_PO) + 1 {
            return Err(Fault::Malformed("cursors of another number of bins"));
        }
        if let Some(p) = self.peers.get_mut(&peer) {
            p.cursors_request = None;
            p.cursors = Some((epoch, cursors));
        }
        self.resubscribe(now, peer, index);
        Ok(())
    }

    /// Brings a peer's bins in line with the rule: drops the unwanted, opens the new.
    pub(super) fn resubscribe(&mut self, now: Instant, peer: Address, index: &dyn PullIndex) {
        let Some(p) = self.peers.get(&peer) else {
            return;
        };
        let Some((epoch, cursors)) = p.cursors.clone() else {
            return;
        };
        let wanted: BTreeSet<u8> = bins_for(p.po, self.depth).into_iter().collect();
        let gone: Vec<u8> = p
            .bins
            .keys()
            .filter(|b| !wanted.contains(b))
            .copied()
            .collect();
        let new: Vec<u8> = wanted
            .iter()
            .filter(|b| !p.bins.contains_key(b))
            .copied()
            .collect();
        for bin in gone {
            self.quit_bin(now, peer, bin);
        }
        for bin in new {
            let cursor = cursors.get(usize::from(bin)).copied().unwrap_or(0);
            let pending = self.unwritten.get(&(peer, bin));
            let stored = match pending {
                Some(u) => Ok(Some(record::encode(u.epoch, &u.synced))),
                None => index.sync_record(&record::key(&peer, bin)),
            };
            let synced = match stored {
                Ok(Some(v)) => match record::decode(&v) {
                    Some((e, intervals)) if e == epoch => intervals,
                    // Another epoch (the upstream's store was re-created), or unreadable.
                    _ => Intervals::new(FIRST_BIN_ID),
                },
                Ok(None) => Intervals::new(FIRST_BIN_ID),
                Err(_) => {
                    self.stats.store_errors += 1;
                    Intervals::new(FIRST_BIN_ID)
                }
            };
            let sync = BinSync {
                cursor,
                synced,
                streams: [
                    Stream::new(cursor.saturating_add(1), None),
                    Stream::new(FIRST_BIN_ID, Some(cursor)),
                ],
            };
            if let Some(p) = self.peers.get_mut(&peer) {
                p.bins.insert(bin, sync);
            }
        }
        self.pump_peer(now, peer, index);
    }

    pub(super) fn quit_bin(&mut self, now: Instant, peer: Address, bin: u8) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.bins.remove(&bin);
        }
        self.close_where(|o| {
            o.peer == peer && matches!(o.what, Pending::Get { bin: b, .. } if b == bin)
        });
        let offers: Vec<u64> = self
            .offers
            .iter()
            .filter(|(_, o)| o.peer == peer && o.bin == bin)
            .map(|(id, _)| *id)
            .collect();
        for offer in offers {
            self.drop_offer(now, offer);
        }
    }
}
