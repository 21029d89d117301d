//! Wants: queued by class, sent within the per-peer and global bounds, and the deliveries
//! they bring (checked against the wanted addresses, then stored).

use std::collections::VecDeque;
use std::time::Instant;

use tributary_chunk::{Address, Chunk};
use tributary_wire::pullsync::{Request, Want, bitvector, request};

use super::*;

impl PullSync {
    /// Queues an offer's want for a slot and sends what the peer's slots allow (a fallback
    /// may queue a want on a peer that has nothing else in flight to wake it); an offer that
    /// holds a slot is queued again when its chunks are stored.
    pub(super) fn queue_want(&mut self, now: Instant, peer: Address, offer: u64) {
        let Some(o) = self.offers.get_mut(&offer) else {
            return;
        };
        if o.queued || o.want_request.is_some() || o.holds_slot || o.to_want.is_empty() {
            return;
        }
        o.queued = true;
        let class = o.lane.class() as usize;
        if let Some(p) = self.peers.get_mut(&peer) {
            p.queued[class].push_back(offer);
        }
        self.send_wants(now, peer);
    }

    /// Sends queued wants while the peer has slots, highest class first.
    pub(super) fn send_wants(&mut self, now: Instant, peer: Address) {
        loop {
            let Some(p) = self.peers.get_mut(&peer) else {
                return;
            };
            if p.wants >= MAX_WANTS_PER_PEER {
                return;
            }
            if self.wants >= MAX_WANTS {
                if p.queued.iter().any(|q| !q.is_empty()) {
                    self.starved.insert(peer);
                }
                return;
            }
            let Some(offer) = p.queued.iter_mut().find_map(VecDeque::pop_front) else {
                return;
            };
            let Some(o) = self.offers.get_mut(&offer) else {
                continue;
            };
            o.queued = false;
            if o.to_want.is_empty() || o.want_request.is_some() {
                continue;
            }
            p.wants += 1;
            self.wants += 1;
            o.holds_slot = true;
            // The upstream delivers in bit order; fallbacks may have added indices out of it.
            o.wanted = std::mem::take(&mut o.to_want);
            o.wanted.sort_unstable();
            o.wanted.dedup();
            let count = o.addresses.len();
            let want = Want {
                bin: u32::from(o.bin),
                start: o.start,
                count: u32::try_from(count).unwrap_or(u32::MAX),
                bitvector: bitvector::encode(count, o.wanted.iter().copied()),
                epoch: self.epoch,
            };
            let class = o.lane.class();
            self.stats.wanted += o.wanted.len() as u64;
            let id = self.next_id;
            o.want_request = Some(id);
            let r = Request::new(request::Message::Want(want));
            self.request(now, peer, Pending::Want { offer }, class, r);
        }
    }

    pub(super) fn on_delivery(
        &mut self,
        now: Instant,
        offer: u64,
        chunks: Vec<Chunk>,
    ) -> Result<(), Fault> {
        let Some(o) = self.offers.get_mut(&offer) else {
            return Ok(());
        };
        o.want_request = None;
        let wanted = std::mem::take(&mut o.wanted);
        if chunks.len() > wanted.len() {
            return Err(Fault::Unrequested {
                wanted: wanted.len(),
                delivered: chunks.len(),
            });
        }
        // A `Chunk`'s address is the hash of its content: comparing it is the verification.
        for (chunk, &i) in chunks.iter().zip(&wanted) {
            if chunk.address() != o.addresses[i] {
                return Err(Fault::Invalid(o.addresses[i]));
            }
        }
        let verified = chunks;
        // A short delivery: the missing chunks fall back to other offers, or to a later pass.
        let missing: Vec<Address> = wanted[verified.len()..]
            .iter()
            .map(|&i| o.addresses[i])
            .collect();
        self.stats.delivered += verified.len() as u64;
        let token = self.id();
        let mut job = StoreJob::default();
        for chunk in &verified {
            let address = chunk.address();
            if let Some(t) = self.transfers.get_mut(&address) {
                t.storing = true;
            }
            job.chunks.push(address);
        }
        let Some(o) = self.offers.get_mut(&offer) else {
            return Ok(());
        };
        if o.holds_slot {
            job.slots.push(offer);
        }
        if !missing.is_empty() {
            o.short = true;
            for address in &missing {
                o.remaining.remove(address);
            }
        }
        let peer = o.peer;
        let mut records = Vec::new();
        let completes = !o.short && o.remaining.iter().all(|a| job.chunks.contains(a));
        if completes && let Some((key, record)) = self.record_offer(offer) {
            job.records.push(key);
            records.push(record);
        }
        self.jobs.insert(token, job);
        let origin = self
            .peers
            .get(&peer)
            .and_then(|p| p.cursors.as_ref())
            .map(|(epoch, _)| Origin::of(&peer, *epoch));
        self.outputs.push_back(Output::Store {
            token,
            chunks: verified,
            origin,
            records,
        });
        for address in missing {
            self.fail_transfer(now, address);
        }
        Ok(())
    }
}
