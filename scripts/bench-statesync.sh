#!/usr/bin/env bash
# State sync between two processes over loopback: a `tributary node` serving a database of N
# random pairs (default 1,000,000) and `tributary state sync --peer` bringing an empty one to
# its root. Prints the sync's wall time beside `tributary state import` of the same pairs
# (target ratio <= 1.5), and bytes on the wire (the loopback interface's received bytes:
# requests and answers with TCP/IP, Noise and Yamux framing, plus whatever else used loopback
# meanwhile) and proof bytes beside the raw key+value bytes (target <= 1.15).
# Usage: scripts/bench-statesync.sh [N] [WORK_LIMIT]
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-1000000}"
WORK="${2:-8}"
cargo build --release --bin tributary >/dev/null
BIN="$PWD/target/release/tributary"
W="$(mktemp -d)"
trap 'kill "${NODE:-}" 2>/dev/null || true; rm -rf "$W"' EXIT

RAW=$(python3 scripts/gen-pairs.py "$N" 1 2>&1 >"$W/pairs.txt")
secs() { python3 -c 'import time; print(time.monotonic())'; }

t0=$(secs)
ROOT=$("$BIN" state import --db "$W/src" "$W/pairs.txt")
t1=$(secs)
IMPORT=$(python3 -c "print(f'{$t1 - $t0:.2f}')")

"$BIN" node --data-dir "$W/src" --api 127.0.0.1:0 --listen /ip4/127.0.0.1/tcp/0 --no-mdns 2>"$W/node.log" &
NODE=$!
for _ in $(seq 1 300); do [ -f "$W/src/node.json" ] && break; sleep 0.1; done
PEER=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['listen'][0])" "$W/src/node.json")

lo_bytes() { awk '/^ *lo:/ { print $2 }' /proc/net/dev; }  # every loopback packet is counted once as received
b0=$(lo_bytes)
t0=$(secs)
SUMMARY=$("$BIN" state sync --db "$W/dst" --peer "$PEER" --root "$ROOT" --work-limit "$WORK" --json)
t1=$(secs)
b1=$(lo_bytes)
SYNC=$(python3 -c "print(f'{$t1 - $t0:.2f}')")

python3 - "$SUMMARY" "$ROOT" "$RAW" "$IMPORT" "$SYNC" "$((b1 - b0))" "$N" "$WORK" <<'PY'
import json, sys
summary, root, raw, imp, sync, wire, n, work = sys.argv[1:]
s = json.loads(summary)
raw, imp, sync, wire = int(raw), float(imp), float(sync), int(wire)
assert s["root"] == root, f"synced to {s['root']}, expected {root}"
mib = lambda b: b / 1048576
print(f"{int(n):,} pairs, {mib(raw):.1f} MiB of keys and values; work limit {work}")
print(f"import: {imp:.2f} s   sync over loopback: {sync:.2f} s   ratio {sync / imp:.2f} (target <= 1.5)")
print(f"proof bytes {mib(s['bytes']):.1f} MiB = {s['bytes'] / raw:.3f}x raw; "
      f"bytes on the wire (loopback, with TCP/IP, Noise and Yamux framing) {mib(wire):.1f} MiB = {wire / raw:.3f}x raw (target <= 1.15)")
print(f"{s['proofs']} proofs, {s['requests']} requests, {s['failed']} failed, {s['rejected']} rejected")
PY
