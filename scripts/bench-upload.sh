#!/usr/bin/env bash
# Uploads a file of random bytes (default 1 GiB; SIZE_MB to change) into a fresh data
# directory and prints MB/s, the peak resident memory of `tributary upload`, and the disk the
# data directory uses after the command exits (blocks in use, as `du` counts them; fjall's
# journals are sparse 64 MiB files), in all and in journals.
# Not part of CI. Needs GNU time (Debian package `time`).
set -euo pipefail
cd "$(dirname "$0")/.."
size_mb="${SIZE_MB:-1024}"
if ! [ -x /usr/bin/time ]; then
  echo "error: /usr/bin/time (GNU time) is missing: apt-get install time" >&2
  exit 1
fi
cargo build --release --bin tributary
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
head -c "$((size_mb * 1024 * 1024))" /dev/urandom > "$tmp/file"
/usr/bin/time -o "$tmp/time" -f "%e %M" target/release/tributary upload "$tmp/file" --db "$tmp/data" > "$tmp/ref"
read -r seconds peak_kb < "$tmp/time"
disk_kb="$(du -sk "$tmp/data" | cut -f1)"
journal_kb="$(find "$tmp/data" -name '*.jnl' -print0 | du -ck --files0-from=- | tail -1 | cut -f1)"
python3 - "$size_mb" "$seconds" "$peak_kb" "$(cat "$tmp/ref")" "$disk_kb" "$journal_kb" <<'PY'
import sys
size_mb, seconds, peak_kb, ref = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
disk_kb, journal_kb = int(sys.argv[5]), int(sys.argv[6])
print(f"upload of {size_mb} MiB: {size_mb * 1048576 / seconds / 1e6:.1f} MB/s, {seconds:.2f} s, "
      f"peak memory {peak_kb / 1024:.1f} MiB, reference {ref}")
print(f"data directory after exit: {disk_kb / 1024:.1f} MiB ({disk_kb / 1024 / size_mb:.3f}x the file), "
      f"of which journals {journal_kb / 1024:.1f} MiB")
PY
