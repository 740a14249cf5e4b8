#!/usr/bin/env bash
# HTTP load test: builds evidex in release and measures ingest throughput, concurrent
# job creation and API latency during an export (see bench/load.py).
# Usage: bench/load.sh [EVENTS]   (default 300000)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/evidex-target}"
cargo build --release -p evidex
exec python3 bench/load.py "$@"
