#!/usr/bin/env bash
# Keeps a persistent cargo build directory from filling the disk: every change of a
# test binary's dependencies leaves the old binary (about 1 GB each here) and its
# incremental cache behind. Deletes all but the newest of each in debug/ and release/.
# Usage: scripts/prune-target.sh [TARGET_DIR]
set -euo pipefail
target="${1:-${CARGO_TARGET_DIR:-target}}"
for profile in debug release; do
  deps="$target/$profile/deps"
  if [ -d "$deps" ]; then
    find "$deps" -maxdepth 1 -type f -perm -u+x -name '*-*' ! -name '*.*' -printf '%T@ %p\n' \
      | sort -rn \
      | awk '{ n = $2; sub(/-[0-9a-f]+$/, "", n); if (seen[n]++) print $2 }' \
      | xargs -r rm -f
  fi
  inc="$target/$profile/incremental"
  if [ -d "$inc" ]; then
    find "$inc" -mindepth 1 -maxdepth 1 -type d -printf '%T@ %p\n' \
      | sort -rn \
      | awk '{ n = $2; sub(/-[0-9a-z]+$/, "", n); if (seen[n]++) print $2 }' \
      | xargs -r rm -rf
  fi
done
