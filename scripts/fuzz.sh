#!/usr/bin/env bash
# Runs every fuzz target for a fixed time from a seed corpus of valid inputs, then prints, per
# target, the inputs executed, the corpus size and the findings (crash artifacts). Not in CI.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     # default 60 s, every target
#
# Needs a nightly toolchain (cargo-fuzz builds with sanitizers) and cargo-fuzz, installed here
# from crates.io if missing. The corpus is regenerated from the repository's fixtures first
# (`cargo run -p tributary-sim --example fuzz-corpus`); what the fuzzer adds stays in
# fuzz/corpus between runs. Exits 1 if any target found a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(proof_verify chunk_join overlay_message sync_request pull_message chunk_message)
fi
if ! rustup toolchain list | grep -q '^nightly'; then
  echo "error: a nightly toolchain is needed (rustup toolchain install nightly)" >&2
  exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install --locked cargo-fuzz
fi
cargo run --quiet -p tributary-sim --example fuzz-corpus -- fuzz/corpus
count_files() {
  if [ -d "$1" ]; then find "$1" -type f | wc -l; else echo 0; fi
}
failed=0
summary=()
for target in "${targets[@]}"; do
  log="$(mktemp)"
  before=$(count_files "fuzz/artifacts/$target")
  if cargo +nightly fuzz run "$target" "fuzz/corpus/$target" -- \
      -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
    status=ok
  else
    status=FAILED
    failed=1
  fi
  after=$(count_files "fuzz/artifacts/$target")
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1 || true)
  corpus=$(count_files "fuzz/corpus/$target")
  summary+=("$target: ${execs:-?} inputs in ${seconds} s, corpus ${corpus}, findings $((after - before)) ($status)")
  if [ "$status" = FAILED ]; then
    tail -30 "$log" >&2
  fi
  rm -f "$log"
done
printf '%s\n' "${summary[@]}"
exit "$failed"
