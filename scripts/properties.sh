#!/usr/bin/env bash
# The property tests of engine/tests/properties.rs for longer than the default run
# (64 cases each): PROPTEST_CASES cases per property (default 20000, a few minutes
# on two cores). A failure is saved in engine/tests/properties.proptest-regressions
# and replayed first by every later run, the default one included: commit it with
# its fix.
set -euo pipefail
cd "$(dirname "$0")/.."
export PROPTEST_CASES="${PROPTEST_CASES:-20000}"
exec cargo test --release -p evidex-engine --test properties -- --nocapture "$@"
