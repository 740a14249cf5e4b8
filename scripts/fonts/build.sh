#!/usr/bin/env bash
# Rebuilds engine/fonts/ from Debian's font packages. The fonts are committed, so
# building evidex never needs this (or the network); run it to update them.
# Needs: apt-get download (any Debian/Ubuntu), python3 with fonttools and pillow
# (the committed files were built with fonttools 4.68.0 and pillow 13.0.0).
#
# The aim is one font for every script Unicode lists as in current use (UAX #31,
# Table 4 "Recommended Scripts" and Table 7 "Limited Use Scripts") that Debian ships
# a Noto font for. Latin, Greek and Cyrillic come from typst-assets (Libertinus
# Serif); Han, Hiragana, Katakana, Hangul and Bopomofo from DroidSansFallback.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
out="$root/engine/fonts"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
apt-get download fonts-noto-core fonts-droid-fallback fonts-noto-color-emoji
for deb in *.deb; do dpkg-deb -x "$deb" x; done
noto=x/usr/share/fonts/truetype/noto

# Start from an empty directory so a script dropped from the lists below does not
# leave its font behind.
rm -f "$out"/*.ttf "$out"/LICENSE-*.txt

# The Regular weight of Noto Sans for each script (file names as in fonts-noto-core).
sans=(
  # Recommended scripts.
  Arabic Armenian Bengali Devanagari Ethiopic Georgian Gujarati Gurmukhi Hebrew
  Kannada Khmer Lao Malayalam Myanmar Oriya Sinhala Tamil Telugu Thaana Thai
  # Limited use scripts.
  Adlam Balinese Bamum Batak CanadianAboriginal Chakma Cham Cherokee HanifiRohingya
  Javanese KayahLi Lepcha Limbu Lisu Mandaic MeeteiMayek Miao NewTaiLue Newa NKo
  OlChiki Osage Saurashtra Sundanese SylotiNagri Syriac TaiLe TaiTham TaiViet
  Tifinagh Vai Wancho Yi
)
# Scripts for which Debian has only the serif design.
serif=(Tibetan NyiakengPuachueHmong)

fonts=()
for s in "${sans[@]}"; do fonts+=("NotoSans$s-Regular.ttf"); done
for s in "${serif[@]}"; do fonts+=("NotoSerif$s-Regular.ttf"); done
for f in "${fonts[@]}"; do
  # Keep every glyph, code point, OpenType feature and name record, but drop the
  # TrueType hinting (instructions, fpgm/prep/cvt): a PDF is drawn from outlines,
  # and hinting is a third of some of these files. fontTools keeps the timestamps,
  # and packs the layout tables itself rather than with HarfBuzz when uharfbuzz
  # happens to be installed, so the output is the same on every run.
  python3 -m fontTools.subset "$noto/$f" --output-file="$out/$f" \
    --glyphs='*' --unicodes='*' --layout-features='*' --notdef-outline \
    --name-IDs='*' --name-languages='*' --name-legacy --no-hinting \
    --no-harfbuzz-repacker
done
cp x/usr/share/fonts-droid-fallback/truetype/DroidSansFallback.ttf "$out/"
python3 "$root/scripts/fonts/shrink_emoji.py" "$noto/NotoColorEmoji.ttf" "$out/NotoColorEmoji-small.ttf" 0.375 32
cp x/usr/share/doc/fonts-noto-core/copyright "$out/LICENSE-noto.txt"
cp x/usr/share/doc/fonts-noto-color-emoji/copyright "$out/LICENSE-noto-emoji.txt"
cp x/usr/share/doc/fonts-droid-fallback/copyright "$out/LICENSE-droid.txt"
ls -la "$out"
du -sb "$out"
