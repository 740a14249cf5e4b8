#!/usr/bin/env bash
# Where an export's time goes: samples the release evidex with `perf record`
# (Debian's linux-perf; the software cpu-clock event, which works where hardware
# counters are "not supported") while it exports the whole 30-day window of the
# benchmark data set to CSV, once without redaction rules and once with the
# defaults, and prints the top symbols of each. The data set is generated like
# bench/run.sh's (same rows, days, end and seed), once, into its own directory.
# Usage: bench/profile.sh [ROWS] [FORMAT]   (defaults: 1000000 csv)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/evidex-target}"
ROWS="${1:-1000000}"
FORMAT="${2:-csv}"
cargo build --release -p evidex
EVIDEX="$CARGO_TARGET_DIR/release/evidex"
DATA="bench/out/profile-data-$ROWS"
OUT="bench/out/profile"
mkdir -p "$OUT"
if ! command -v perf >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get install -y -q linux-perf >/dev/null
fi
if [ ! -f "$DATA/.generated" ]; then
  rm -rf "$DATA"
  "$EVIDEX" --data "$DATA" generate --rows "$ROWS" --days 90 --end 2026-03-31 --seed 1 >/dev/null
  "$EVIDEX" --data "$DATA" compact --min-files 2 >/dev/null
  touch "$DATA/.generated"
fi
for mode in plain redacted; do
  env=()
  if [ "$mode" = plain ]; then env=(EVIDEX_REDACTION__DETECTORS='[]'); fi
  out="$OUT/$mode.$FORMAT"
  env "${env[@]}" perf record -e cpu-clock -F 1999 -o "$OUT/$mode.perf.data" -- \
    "$EVIDEX" --data "$DATA" export --from 2026-03-01 --to 2026-03-30 --format "$FORMAT" \
    --output "$out" --split-rows 1000000000 >/dev/null 2>"$OUT/$mode.perf.log"
  echo "== $mode ($(du -h "$out" | cut -f1) $FORMAT): top symbols, % of samples"
  perf report -i "$OUT/$mode.perf.data" --stdio --no-children --sort symbol 2>/dev/null \
    | awk '/^ +[0-9]/ && n++ < 25 {sub(/ +- +- *$/, ""); print}'
  rm -f "$out"
done
