#!/usr/bin/env bash
# Engine benchmark: builds evidex in release, installs DuckDB and Polars from PyPI
# into bench/.venv, generates the data set (once per row count) and measures.
# Usage: bench/run.sh [ROWS ...]   (default: 1000000 2000000 10000000)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/evidex-target}"
cargo build --release -p evidex
# The peers' versions are pinned, so that a change between runs is evidex's or the
# machine's, not a new release's (these ran the README's table).
if [ ! -x bench/.venv/bin/python ]; then
  python3 -m venv bench/.venv
fi
bench/.venv/bin/pip install --quiet duckdb==2.0.1 polars==2.2.0
exec bench/.venv/bin/python bench/bench.py "$@"
