//! Benchmark (not in CI): the replica engine's `GetDeltas` sync beside Automerge's sync
//! protocol, on the same rows, in one process.
//!
//! - Tributary: A writes ROWS rows (keys of 12 bytes, values of 100, batches of 5,000) into
//!   a syncgroup's collection on a fjall store (fsync at every commit, as the node runs); an empty B joins through A's grant (out of
//!   band) and syncs with `sync_once` (every message encoded and decoded, every record
//!   verified) until a round brings nothing new. Then 1,000 more writes on each side and a
//!   sync both ways.
//! - Automerge: the same rows as keys of the root map of one document on A, committed per
//!   5,000; B starts empty; the two exchange sync messages until neither has one to send.
//!   Then the same 1,000 + 1,000 writes and a sync.
//!
//! Each prints round trips (a message each way), time, records/s applied, bytes sent over
//! payload bytes (key + value) and B's stored size (the store directory; the saved document).
//!
//! `cargo run --release --manifest-path bench/replica-vs-automerge/Cargo.toml -- [ROWS]`

use std::error::Error;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use automerge::sync::{State, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{AutoCommit, ROOT, ReadDoc};
use prost::Message as _;
use tributary_overlay::Identity;
use tributary_replica::delta::sync_once;
use tributary_replica::syncgroup::Spec;
use tributary_replica::{Op, Replica, ReplicaConfig};
use tributary_store::{Durability, FjallStore};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

const DB: &str = "bench";
const COLLECTION: &str = "rows";
const BATCH: usize = 5_000;
const VALUE: usize = 100;

fn key(side: &str, i: usize) -> String {
    format!("{side}{i:011}")
}

/// `VALUE` pseudo-random bytes, a function of `i` (splitmix64): incompressible, so that
/// neither side gains by compressing what the other does not.
fn value(i: usize) -> Vec<u8> {
    let mut x = i as u64;
    (0..VALUE.div_ceil(8))
        .flat_map(|_| {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)).to_le_bytes()
        })
        .take(VALUE)
        .collect()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Disk space used under `dir` (allocated blocks, as `du` counts: a file's length would
/// count the journal fjall sizes ahead of its contents).
fn dir_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .flatten()
            .map(|e| match e.metadata() {
                Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                Ok(m) => m.blocks() * 512,
                Err(_) => 0,
            })
            .sum()
    })
}

/// What one sync did.
struct Figures {
    round_trips: u64,
    took: Duration,
    records: u64,
    bytes: u64,
    payload: u64,
}

impl Figures {
    fn new(payload: u64) -> Self {
        Self {
            round_trips: 0,
            took: Duration::ZERO,
            records: 0,
            bytes: 0,
            payload,
        }
    }

    fn print(&self, who: &str, what: &str, stored: u64) {
        #[expect(clippy::cast_precision_loss, reason = "figures for a person")]
        let (rate, ratio) = (
            self.records as f64 / self.took.as_secs_f64().max(1e-9),
            self.bytes as f64 / self.payload.max(1) as f64,
        );
        println!(
            "{who:<10} {what:<24} {} round trip(s), {:.3} s, {} records, {rate:>9.0} records/s, \
             {} bytes sent = {ratio:.2}x payload, B stores {stored} bytes",
            self.round_trips,
            self.took.as_secs_f64(),
            self.records,
            self.bytes,
        );
    }
}

fn replica(dir: &Path, seed: u8) -> Result<Replica> {
    let store = Arc::new(FjallStore::open(dir, Durability::Sync)?);
    let identity = Identity::from_secret(&[seed; 32], [0; 32])?;
    Ok(Replica::open(store, identity, ReplicaConfig::default())?)
}

fn write_rows(r: &mut Replica, side: &str, rows: std::ops::Range<usize>) -> Result<()> {
    let all: Vec<usize> = rows.collect();
    for chunk in all.chunks(BATCH) {
        let ops: Vec<Op> = chunk
            .iter()
            .map(|&i| Op::Put {
                collection: COLLECTION.into(),
                key: key(side, i),
                value: value(i),
            })
            .collect();
        r.batch(now_ms(), DB, &ops)?;
    }
    Ok(())
}

/// `to` syncs from `from` until a round brings nothing new. The last, empty round is the
/// benchmark's check, not the protocol's (an answer's last frame ends the sync), so it is
/// not counted; every counted round's request and frames are.
fn tributary_sync(to: &mut Replica, from: &Replica, payload: u64) -> Result<Figures> {
    let start = Instant::now();
    let mut f = Figures::new(payload);
    loop {
        let request_bytes = to.delta_request(DB)?.encoded_len() as u64;
        let report = sync_once(to, from, now_ms(), DB)?;
        if !report.applied.refused.is_empty() {
            return Err(format!("refused: {:?}", report.applied.refused).into());
        }
        if report.applied.new == 0 {
            break;
        }
        f.round_trips += 1;
        f.records += report.applied.new;
        f.bytes += report.bytes + request_bytes;
    }
    f.took = start.elapsed();
    Ok(f)
}

fn tributary(rows: usize) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (a_dir, b_dir) = (tmp.path().join("a"), tmp.path().join("b"));
    let mut a = replica(&a_dir, 1)?;
    let mut b = replica(&b_dir, 2)?;
    let spec = Spec {
        name: "sg".into(),
        description: String::new(),
        collections: vec![COLLECTION.into()],
        readers: Vec::new(),
        writers: vec![a.id(), b.id()],
        admins: vec![a.id()],
    };
    a.create_syncgroup(now_ms(), DB, spec)?;
    let grant = a.admin_join(now_ms(), DB, "sg", b.id())?;
    b.accept_join(&grant)?;
    let row_bytes = (12 + VALUE) as u64;
    let start = Instant::now();
    write_rows(&mut a, "a", 0..rows)?;
    println!(
        "tributary  A wrote {rows} rows in {:.2} s",
        start.elapsed().as_secs_f64()
    );
    let join = tributary_sync(&mut b, &a, rows as u64 * row_bytes)?;
    join.print("tributary", "B joins", dir_bytes(&b_dir));
    write_rows(&mut a, "a", rows..rows + 1_000)?;
    write_rows(&mut b, "b", 0..1_000)?;
    let mut both = tributary_sync(&mut b, &a, 1_000 * row_bytes)?;
    let back = tributary_sync(&mut a, &b, 1_000 * row_bytes)?;
    both.round_trips += back.round_trips;
    both.records += back.records;
    both.bytes += back.bytes;
    both.took += back.took;
    both.payload += back.payload;
    both.print("tributary", "+1,000 each, both ways", dir_bytes(&b_dir));
    let (ra, rb) = (a.scan(DB, COLLECTION, "")?, b.scan(DB, COLLECTION, "")?);
    if ra.len() != rows + 2_000 || ra != rb {
        return Err(format!("A holds {} rows, B {}", ra.len(), rb.len()).into());
    }
    Ok(())
}

fn automerge_write(doc: &mut AutoCommit, side: &str, rows: std::ops::Range<usize>) -> Result<()> {
    for (n, i) in rows.enumerate() {
        doc.put(ROOT, key(side, i), automerge::ScalarValue::Bytes(value(i)))?;
        if (n + 1) % BATCH == 0 {
            doc.commit();
        }
    }
    doc.commit();
    Ok(())
}

/// Sync messages back and forth until neither side has one; a round trip is a message
/// each way (the last one may be one way: the protocol needs it). Records: the keys the two
/// sides gained, counted.
fn automerge_sync(a: &mut AutoCommit, b: &mut AutoCommit, payload: u64) -> Result<Figures> {
    let before = a.length(ROOT) + b.length(ROOT);
    let (mut sa, mut sb) = (State::new(), State::new());
    let start = Instant::now();
    let mut f = Figures::new(payload);
    loop {
        let mut sent = false;
        if let Some(m) = b.sync().generate_sync_message(&mut sb) {
            let bytes = m.encode();
            f.bytes += bytes.len() as u64;
            a.sync()
                .receive_sync_message(&mut sa, automerge::sync::Message::decode(&bytes)?)?;
            sent = true;
        }
        if let Some(m) = a.sync().generate_sync_message(&mut sa) {
            let bytes = m.encode();
            f.bytes += bytes.len() as u64;
            b.sync()
                .receive_sync_message(&mut sb, automerge::sync::Message::decode(&bytes)?)?;
            sent = true;
        }
        if !sent {
            break;
        }
        f.round_trips += 1;
    }
    f.took = start.elapsed();
    f.records = (a.length(ROOT) + b.length(ROOT) - before) as u64;
    Ok(f)
}

fn automerge(rows: usize) -> Result<()> {
    let mut a = AutoCommit::new();
    let mut b = AutoCommit::new();
    let row_bytes = (12 + VALUE) as u64;
    let start = Instant::now();
    automerge_write(&mut a, "a", 0..rows)?;
    println!(
        "automerge  A wrote {rows} rows in {:.2} s",
        start.elapsed().as_secs_f64()
    );
    let join = automerge_sync(&mut a, &mut b, rows as u64 * row_bytes)?;
    join.print("automerge", "B joins", b.save().len() as u64);
    automerge_write(&mut a, "a", rows..rows + 1_000)?;
    automerge_write(&mut b, "b", 0..1_000)?;
    let both = automerge_sync(&mut a, &mut b, 2_000 * row_bytes)?;
    both.print("automerge", "+1,000 each, both ways", b.save().len() as u64);
    let (na, nb) = (a.length(ROOT), b.length(ROOT));
    if na != rows + 2_000 || nb != na {
        return Err(format!("A holds {na} keys, B {nb}").into());
    }
    Ok(())
}

fn main() -> Result<()> {
    let rows = match std::env::args().nth(1) {
        Some(n) => n.parse()?,
        None => 100_000,
    };
    tributary(rows)?;
    automerge(rows)
}
