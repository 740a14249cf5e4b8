#!/usr/bin/env bash
# PDF report benchmark (see bench/report.py). Usage: bench/report.sh [ROWS]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/evidex-target}"
cargo build --release -p evidex
command -v pdfinfo >/dev/null || { echo "pdfinfo (poppler-utils) is needed" >&2; exit 2; }
exec python3 bench/report.py "$@"
