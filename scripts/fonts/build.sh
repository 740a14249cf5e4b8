#!/usr/bin/env bash
# Rebuilds engine/fonts/ from Debian's font packages. The fonts are committed, so
# building evidex never needs this (or the network); run it to update them.
# Needs: apt-get download (any Debian/Ubuntu), python3 with fonttools and pillow.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
out="$root/engine/fonts"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
apt-get download fonts-noto-core fonts-droid-fallback fonts-noto-color-emoji
for deb in *.deb; do dpkg-deb -x "$deb" x; done
noto=x/usr/share/fonts/truetype/noto
for script in Arabic Hebrew Devanagari Bengali Tamil Thai Georgian Armenian; do
  cp "$noto/NotoSans$script-Regular.ttf" "$out/"
done
cp x/usr/share/fonts-droid-fallback/truetype/DroidSansFallback.ttf "$out/"
python3 "$root/scripts/fonts/shrink_emoji.py" "$noto/NotoColorEmoji.ttf" "$out/NotoColorEmoji-small.ttf" 0.375 32
cp x/usr/share/doc/fonts-noto-core/copyright "$out/LICENSE-noto.txt"
cp x/usr/share/doc/fonts-noto-color-emoji/copyright "$out/LICENSE-noto-emoji.txt"
cp x/usr/share/doc/fonts-droid-fallback/copyright "$out/LICENSE-droid.txt"
ls -la "$out"
