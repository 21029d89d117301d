//! The streams of a (peer, bin): Gets for the next range, and the offers they bring back
//! (checked, then sorted into chunks to want, to wait on, or held already).

use std::collections::BTreeSet;
use std::time::Instant;

use tributary_chunk::{Address, proximity};
use tributary_wire::PULL_BATCH;
use tributary_wire::pullsync::{Get, Request, request};

use super::*;

impl PullSync {
    /// Sends what a peer's streams and queued wants can send now.
    pub(super) fn pump_peer(&mut self, now: Instant, peer: Address, _index: &dyn PullIndex) {
        let Some(p) = self.peers.get(&peer) else {
            return;
        };
        if p.cursors.is_none() {
            return;
        }
        let bins: Vec<u8> = p.bins.keys().copied().collect();
        for bin in bins {
            for lane in [Lane::Live, Lane::Historical] {
                self.pump_stream(now, peer, bin, lane);
            }
        }
        self.send_wants(now, peer);
    }

    pub(super) fn pump_stream(&mut self, now: Instant, peer: Address, bin: u8, lane: Lane) {
        let Some(b) = self.peers.get_mut(&peer).and_then(|p| p.bins.get_mut(&bin)) else {
            return;
        };
        let stream = &mut b.streams[lane as usize];
        if stream.get.is_some() || stream.offers >= MAX_OFFERS_PER_STREAM {
            return;
        }
        if stream.retry_at.is_some_and(|t| t > now) {
            return;
        }
        stream.retry_at = None;
        let (start, end) = match stream.ceiling {
            Some(ceiling) => match b.synced.gap_from(stream.next, ceiling) {
                Some(gap) => gap,
                None => return, // historical part done
            },
            None => (stream.next, 0),
        };
        stream.next = start;
        let id = self.next_id;
        stream.get = Some(id);
        let get = Get {
            bin: u32::from(bin),
            start,
            end,
            epoch: self.epoch,
        };
        let r = Request::new(request::Message::Get(get));
        self.request(
            now,
            peer,
            Pending::Get { bin, lane, start },
            lane.class(),
            r,
        );
    }

    pub(super) fn on_offer(
        &mut self,
        now: Instant,
        peer: Address,
        (bin, lane, start): (u8, Lane, u64),
        offer: &tributary_wire::pullsync::Offer,
        index: &dyn PullIndex,
    ) -> Result<(), Fault> {
        let retry = now + self.config.retry_delay;
        let Some(stream) = self.stream_mut(peer, bin, lane) else {
            return Ok(());
        };
        stream.get = None;
        if !offer.addresses.len().is_multiple_of(32) {
            return Err(Fault::Malformed(
                "offer addresses not a multiple of 32 bytes",
            ));
        }
        let count = offer.addresses.len() / 32;
        let topmost = offer.topmost;
        let covered = topmost
            .checked_sub(start)
            .map_or(0, |d| d.saturating_add(1));
        let beyond_ceiling = stream.ceiling.is_some_and(|c| topmost > c);
        if count > PULL_BATCH
            || topmost < start.saturating_sub(1)
            || (count as u64) > covered
            || beyond_ceiling
        {
            return Err(Fault::Malformed("offer out of its range"));
        }
        if count == 0 && topmost < start {
            // A live Get that waited for nothing: ask again (not at once, so an upstream that
            // answers empty without waiting cannot make this a busy loop).
            stream.retry_at = Some(retry);
            self.retries.insert((retry, peer));
            return Ok(());
        }
        // A failure since this Get was sent may have rewound the stream below its start: the
        // rewind wins, or the failed range would never be asked for again.
        if stream.next >= start {
            stream.next = stream.next.max(topmost.saturating_add(1));
        }
        stream.offers += 1;
        let addresses: Vec<Address> = offer
            .addresses
            .chunks_exact(32)
            .map(|a| {
                let mut bytes = [0u8; 32];
                bytes.copy_from_slice(a);
                Address(bytes)
            })
            .collect();
        // Every address must be of the bin asked for: PO with the upstream equal to the bin.
        if addresses.iter().any(|a| proximity(&peer, a) != bin) {
            return Err(Fault::Malformed("offered a chunk of another bin"));
        }
        // A bin lists a chunk once: an offer naming one twice would wait on its own transfer.
        if addresses.iter().collect::<BTreeSet<_>>().len() != addresses.len() {
            return Err(Fault::Malformed("offered a chunk twice"));
        }
        self.stats.offered += count as u64;
        let Ok(have) = index.have_many(&addresses) else {
            self.stats.store_errors += 1;
            if let Some(stream) = self.stream_mut(peer, bin, lane) {
                stream.offers -= 1;
                // Back to this offer's start, unless a failure rewound further already.
                stream.next = stream.next.min(start);
                stream.retry_at = Some(retry);
            }
            self.retries.insert((retry, peer));
            return Ok(());
        };
        let id = self.id();
        let mut state = OfferState {
            peer,
            bin,
            lane,
            start,
            topmost,
            addresses,
            to_want: Vec::new(),
            wanted: Vec::new(),
            want_request: None,
            queued: false,
            holds_slot: false,
            remaining: BTreeSet::new(),
            recorded: false,
            short: false,
        };
        for (i, (address, held)) in state.addresses.iter().zip(have).enumerate() {
            if held {
                continue;
            }
            state.remaining.insert(*address);
            match self.transfers.get_mut(address) {
                Some(t) => t.waiting.push(id),
                None => {
                    self.transfers.insert(
                        *address,
                        Transfer {
                            offer: id,
                            waiting: Vec::new(),
                            storing: false,
                        },
                    );
                    state.to_want.push(i);
                }
            }
        }
        let queue = !state.to_want.is_empty();
        self.offers.insert(id, state);
        if queue {
            self.queue_want(now, peer, id);
        } else {
            self.finish_if_complete(now, id);
        }
        Ok(())
    }

    pub(super) fn stream_mut(&mut self, peer: Address, bin: u8, lane: Lane) -> Option<&mut Stream> {
        let b = self.peers.get_mut(&peer)?.bins.get_mut(&bin)?;
        Some(&mut b.streams[lane as usize])
    }
}
