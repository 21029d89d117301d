//! BMT and keccak throughput on this CPU (not part of CI):
//! `cargo bench -p tributary-chunk --bench bmt`.
//!
//! Prints: 64-byte Keccak-256 hashes per second for each candidate crate; the single-lane
//! keccak-f1600 limit (permutations per second, and as chunks per second: a full chunk costs
//! 128 permutations); BMT chunk addresses per second and MB/s on one core and on all cores;
//! and the reference of a `BENCH_FILE_MB` (default 256) MiB file split with all cores.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;
use std::time::{Duration, Instant};

use tributary_chunk::bmt::{CHUNK_SIZE, chunk_address};
use tributary_chunk::file::reference_of;

const HASHES: usize = 2_000_000;

fn per_second(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn time(n: usize, mut f: impl FnMut(usize)) -> f64 {
    let t = Instant::now();
    for i in 0..n {
        f(i);
    }
    per_second(n, t.elapsed())
}

fn candidates() {
    let data = [7u8; 64];
    let asm = time(HASHES, |_| {
        black_box(<keccak_asm::Keccak256 as keccak_asm::Digest>::digest(
            black_box(&data),
        ));
    });
    let sha3 = time(HASHES, |_| {
        black_box(<sha3::Keccak256 as sha3::Digest>::digest(black_box(&data)));
    });
    let tiny = time(HASHES, |_| {
        use tiny_keccak::Hasher;
        let mut k = tiny_keccak::Keccak::v256();
        k.update(black_box(&data));
        let mut out = [0u8; 32];
        k.finalize(&mut out);
        black_box(out);
    });
    let mut state = [0u64; 25];
    let mut perms = 0.0;
    keccak::Keccak::new().with_f1600(|f| {
        perms = time(HASHES, |i| {
            state[0] ^= i as u64;
            f(&mut state);
        });
    });
    black_box(state);
    println!(
        "64-byte keccak256 per second, one core: keccak-asm {asm:.0}, sha3 {sha3:.0}, tiny-keccak {tiny:.0}"
    );
    // A 64-byte keccak256 is one permutation, so the fastest hash rate is the single-lane
    // permutation rate; a full chunk costs 128 permutations.
    let limit = asm.max(perms);
    println!(
        "single-lane keccak-f1600 limit: {limit:.0} permutations/s (portable f1600: {perms:.0}) = {:.0} chunks/s = {:.1} MB/s per core",
        limit / 128.0,
        limit / 128.0 * CHUNK_SIZE as f64 / 1e6
    );
}

fn bmt_rate(threads: usize, per_thread: usize) -> f64 {
    let payload: Vec<u8> = (0..CHUNK_SIZE).map(|i| (i * 31) as u8).collect();
    let t = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                for i in 0..per_thread {
                    black_box(chunk_address(i as u64, black_box(&payload)).expect("4096 bytes"));
                }
            });
        }
    });
    per_second(threads * per_thread, t.elapsed())
}

fn main() {
    candidates();
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let n = 40_000;
    let one = bmt_rate(1, n);
    let all = bmt_rate(cores, n);
    let mb = |chunks: f64| chunks * CHUNK_SIZE as f64 / 1e6;
    println!(
        "BMT chunk addresses: one core {one:.0} chunks/s ({:.1} MB/s); {cores} cores {all:.0} chunks/s ({:.1} MB/s)",
        mb(one),
        mb(all)
    );
    let mib: usize = std::env::var("BENCH_FILE_MB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(256);
    let file: Vec<u8> = (0..mib << 20).map(|i| (i % 255) as u8).collect();
    let t = Instant::now();
    let reference = reference_of(file.as_slice()).expect("split");
    let took = t.elapsed();
    println!(
        "file of {mib} MiB split (all cores): {:.1} MB/s, reference {reference}",
        file.len() as f64 / took.as_secs_f64() / 1e6
    );
}
