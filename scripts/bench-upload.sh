#!/usr/bin/env bash
# Uploads a file of random bytes (default 1 GiB; SIZE_MB to change) into a fresh data
# directory and prints MB/s and the peak resident memory of `tributary upload`.
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
python3 - "$size_mb" "$seconds" "$peak_kb" "$(cat "$tmp/ref")" <<'PY'
import sys
size_mb, seconds, peak_kb, ref = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
print(f"upload of {size_mb} MiB: {size_mb * 1048576 / seconds / 1e6:.1f} MB/s, {seconds:.2f} s, "
      f"peak memory {peak_kb / 1024:.1f} MiB, reference {ref}")
PY
