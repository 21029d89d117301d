#!/usr/bin/env bash
# The local ingest path a syncing node is bound by: hashing a file into chunks
# (`tributary chunk hash`, nothing stored) and ingesting it into a fresh data directory
# (`tributary upload --db`). Prints MB/s of each, best of RUNS (default 3), for a file of
# SIZE_MB (default 256) random bytes. Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
size_mb="${SIZE_MB:-256}"
runs="${RUNS:-3}"
cargo build --release --bin tributary
bin=target/release/tributary
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
head -c "$((size_mb * 1024 * 1024))" /dev/urandom > "$tmp/file"
best() { # command... → best wall seconds of $runs runs
  local best=""
  for _ in $(seq "$runs"); do
    rm -rf "$tmp/data"
    local start end
    start=$(date +%s.%N)
    "$@" > /dev/null
    end=$(date +%s.%N)
    best=$(python3 -c "import sys; t=float(sys.argv[2])-float(sys.argv[1]); b=sys.argv[3]; print(t if not b or t < float(b) else b)" "$start" "$end" "$best")
  done
  echo "$best"
}
hash_s=$(best "$bin" chunk hash "$tmp/file")
upload_s=$(best "$bin" upload "$tmp/file" --db "$tmp/data")
python3 - "$size_mb" "$hash_s" "$upload_s" "$runs" <<'PY'
import sys
mb, h, u, runs = int(sys.argv[1]) * 1048576 / 1e6, float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
print(f"{sys.argv[1]} MiB file, best of {runs}: chunk hash {mb / h:.1f} MB/s ({h:.2f} s), "
      f"upload --db {mb / u:.1f} MB/s ({u:.2f} s)")
PY
