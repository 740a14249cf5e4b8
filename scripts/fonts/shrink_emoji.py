"""Shrink Noto Color Emoji's bitmaps so the font can be embedded in the binary.

The Debian build of Noto Color Emoji carries one 136x128 PNG per emoji (11 MB). A PDF
report prints emoji at text size, so a 3/8 scale (51x48 px, enough for 10 pt at
300 dpi) with a 32-colour palette keeps them sharp in print at a third of the size.

usage: shrink_emoji.py SRC.ttf DST.ttf SCALE COLOURS
"""
import io
import sys

from fontTools.ttLib import TTFont
from PIL import Image

src, dst, scale, colours = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
# Keep the source's timestamp, so a rebuild writes the same bytes.
font = TTFont(src, recalcTimestamp=False)
strike = font["CBLC"].strikes[0].bitmapSizeTable
for line in (strike.hori, strike.vert):
    for key in ("ascender", "descender", "widthMax"):
        setattr(line, key, round(getattr(line, key) * scale))
strike.ppemX = round(strike.ppemX * scale)
strike.ppemY = round(strike.ppemY * scale)
before = after = 0
for glyph in font["CBDT"].strikeData[0].values():
    m = glyph.metrics
    width, height = max(1, round(m.width * scale)), max(1, round(m.height * scale))
    image = Image.open(io.BytesIO(glyph.imageData)).convert("RGBA")
    image = image.resize((width, height), Image.LANCZOS)
    image = image.quantize(colors=colours, method=Image.FASTOCTREE)
    out = io.BytesIO()
    image.save(out, "PNG", optimize=True)
    before += len(glyph.imageData)
    glyph.imageData = out.getvalue()
    after += len(glyph.imageData)
    m.width, m.height = width, height
    m.BearingX = round(m.BearingX * scale)
    m.BearingY = round(m.BearingY * scale)
    m.Advance = round(m.Advance * scale)
font.save(dst)
print(f"{src}: bitmaps {before} -> {after} bytes")
