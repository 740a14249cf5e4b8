#!/usr/bin/env bash
# SIEM stream benchmark: builds evidex in release and measures how fast a client
# follows GET /v1/events/stream, and how soon an ingested event is visible on it
# (see bench/stream.py).
# Usage: bench/stream.sh [EVENTS]   (default 1000000)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/evidex-target}"
cargo build --release -p evidex
exec python3 bench/stream.py "$@"
