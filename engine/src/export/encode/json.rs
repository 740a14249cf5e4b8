//! JSON (one array) and NDJSON (one object per line), RFC 8259. JSON columns are
//! embedded as nested values, never as escaped strings, so `metadata` stays an object.
//! No record holds a raw line terminator of any kind (LF, CR, VT, FF, NEL, U+2028,
//! U+2029), inside nested values included, so NDJSON is one record per line for every
//! line reader.

use deltalake::arrow::datatypes::SchemaRef;
use std::ops::Range;

use super::csv::itoa_lite;
use super::{ColumnData, EncodedBatch, Encoder, push_float, push_timestamp};
use crate::error::Result;
use crate::model::ColumnKind;

/// The escapes beyond RFC 8259's, recorded in the manifest
/// (`escaping.json_line_terminators`).
pub const JSON_LINE_TERMINATOR_RULE: &str = "U+0085, U+2028 and U+2029 are written as \\u0085, \\u2028 and \\u2029 in every string, nested values included, and C0 controls (U+000A-U+000D among them) as escapes (RFC 8259), so no record holds a line terminator (ECMAScript, Unicode) and each NDJSON record is one line. Values are unchanged.";

/// How records are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonLayout {
    /// `[rec,\nrec]`.
    Array,
    /// `rec\nrec\n`.
    Lines,
}

/// JSON / NDJSON encoder.
pub struct JsonEncoder {
    keys: Vec<Vec<u8>>,
    kinds: Vec<ColumnKind>,
    layout: JsonLayout,
    first: bool,
    itoa: itoa_lite::Buffer,
}

impl JsonEncoder {
    /// An encoder for batches of `schema`.
    pub fn new(schema: SchemaRef, kinds: Vec<ColumnKind>, layout: JsonLayout) -> Self {
        let keys = schema
            .fields()
            .iter()
            .map(|f| {
                let mut k = Vec::new();
                push_json_string(&mut k, f.name());
                k.push(b':');
                k
            })
            .collect();
        JsonEncoder {
            keys,
            kinds,
            layout,
            first: true,
            itoa: itoa_lite::Buffer::default(),
        }
    }
}

impl JsonEncoder {
    /// Appends row `row` as one JSON object (no separator, no line end).
    pub(crate) fn record(&mut self, columns: &[ColumnData], row: usize, out: &mut Vec<u8>) {
        out.push(b'{');
        for (c, data) in columns.iter().enumerate() {
            if c > 0 {
                out.push(b',');
            }
            out.extend_from_slice(&self.keys[c]);
            if data.is_null(row) {
                out.extend_from_slice(b"null");
                continue;
            }
            match data {
                ColumnData::Str(text) if self.kinds[c] == ColumnKind::Json => {
                    // Stored JSON text was validated and compacted at ingest; embed
                    // it as a nested value.
                    push_json_text(out, text.value(row))
                }
                ColumnData::Str(text) => push_json_string(out, text.value(row)),
                ColumnData::Int(a) => out.extend_from_slice(self.itoa.format(a.value(row))),
                ColumnData::Float(a) => {
                    if !push_float(out, a.value(row)) {
                        out.extend_from_slice(b"null");
                    }
                }
                ColumnData::Ts(a) => {
                    out.push(b'"');
                    push_timestamp(out, a.value(row));
                    out.push(b'"');
                }
            }
        }
        out.push(b'}');
    }
}

/// Bytes that must be escaped inside a JSON string (RFC 8259 §7: quote, backslash,
/// C0 controls), and the lead bytes of the Unicode line terminators U+0085 (`C2 85`)
/// and U+2028/U+2029 (`E2 80 A8`/`E2 80 A9`), which are looked at more closely.
const NEEDS_ESCAPE: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t[0xC2] = true;
    t[0xE2] = true;
    t
};

/// Whether any of the eight bytes of `word` may need escaping: a C0 control, `"`,
/// `\`, or a byte of a multi-byte character (some are line terminators; see
/// [`NEEDS_ESCAPE`]). Never false for such a byte; may be true for none (then the
/// bytes are looked at one by one). The bit tricks are the classic "has a byte less
/// than n" / "has a zero byte" tests (Sean Anderson, *Bit Twiddling Hacks*): hand
/// written because this scan is most of an NDJSON export's own encoding work and
/// a byte loop does one byte per step.
#[inline]
fn needs_look(word: u64) -> bool {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |v: u64| v.wrapping_sub(LO) & !v & HI != 0;
    let below_space = word.wrapping_sub(LO * 0x20) & !word & HI != 0;
    word & HI != 0
        || below_space
        || zero_byte(word ^ (LO * u64::from(b'"')))
        || zero_byte(word ^ (LO * u64::from(b'\\')))
}

/// The `\uXXXX` escape of the Unicode line terminator starting at `bytes[i]` (U+0085
/// NEL, U+2028 LINE SEPARATOR, U+2029 PARAGRAPH SEPARATOR) and its length in bytes.
/// JSON allows them raw (RFC 8259), but line readers (ECMAScript before ES2019,
/// Python's `splitlines`, many log shippers) split records at them; escaped, the value
/// is unchanged and every reader sees one record per line.
#[inline]
fn line_terminator_at(bytes: &[u8], i: usize) -> Option<(&'static [u8], usize)> {
    match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
        (0xC2, Some(0x85), _) => Some((b"\\u0085", 2)),
        (0xE2, Some(0x80), Some(0xA8)) => Some((b"\\u2028", 3)),
        (0xE2, Some(0x80), Some(0xA9)) => Some((b"\\u2029", 3)),
        _ => None,
    }
}

/// Appends `s` as a JSON string literal (RFC 8259): `"` and `\` escaped, C0 controls
/// as `\n`, `\r`, `\t` or `\u00XX` (U+000B and U+000C included), and the Unicode
/// line terminators U+0085, U+2028 and U+2029 as `\uXXXX`, so the literal never holds
/// a character any reader treats as a line end.
pub(crate) fn push_json_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        // Long runs of plain text are the common case: skip them eight bytes at a
        // time while no byte of a word needs a look, then byte by byte.
        while let Some(word) = bytes.get(i..i + 8) {
            if needs_look(u64::from_le_bytes(word.try_into().expect("eight bytes"))) {
                break;
            }
            i += 8;
        }
        while i < bytes.len() && !NEEDS_ESCAPE[bytes[i] as usize] {
            i += 1;
        }
        if i == bytes.len() {
            break;
        }
        let b = bytes[i];
        if b >= 0x80 {
            // A lead byte of a multi-byte character: escape it only if it is a line
            // terminator, else skip the whole character.
            match line_terminator_at(bytes, i) {
                Some((escape, len)) => {
                    out.extend_from_slice(&bytes[start..i]);
                    out.extend_from_slice(escape);
                    i += len;
                    start = i;
                }
                None => i += if b == 0xC2 { 2 } else { 3 },
            }
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 15) as usize],
            ]),
        }
        i += 1;
        start = i;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Appends stored JSON text as a nested value, escaping the Unicode line terminators
/// U+0085, U+2028 and U+2029 as `\uXXXX` (in valid JSON they can only stand inside
/// strings, where the escape denotes the same character, so the value is unchanged).
/// Every other byte is copied; C0 controls cannot occur raw in valid JSON text.
pub(crate) fn push_json_text(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    let mut start = 0;
    for i in memchr::memchr2_iter(0xC2, 0xE2, bytes) {
        if let Some((escape, len)) = line_terminator_at(bytes, i) {
            out.extend_from_slice(&bytes[start..i]);
            out.extend_from_slice(escape);
            start = i + len;
        }
    }
    out.extend_from_slice(&bytes[start..]);
}

impl Encoder for JsonEncoder {
    fn begin(&mut self, out: &mut Vec<u8>) -> Result<()> {
        if self.layout == JsonLayout::Array {
            out.push(b'[');
        }
        Ok(())
    }

    fn rows(&mut self, batch: &EncodedBatch, rows: Range<usize>, out: &mut Vec<u8>) -> Result<()> {
        let columns = &batch.cols;
        for row in rows {
            if self.layout == JsonLayout::Array {
                out.extend_from_slice(if self.first { b"\n" } else { b",\n" });
            }
            self.first = false;
            self.record(columns, row, out);
            if self.layout == JsonLayout::Lines {
                out.push(b'\n');
            }
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<()> {
        if self.layout == JsonLayout::Array {
            out.extend_from_slice(if self.first { b"]\n" } else { b"\n]\n" });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any text, and long ASCII runs with one special byte at any position
        /// (the eight-byte scan's words and their edges): serde_json reads back the
        /// same string, and no raw line terminator is written.
        #[test]
        fn any_string_round_trips_through_serde(
            s in prop_oneof![
                any::<String>(),
                ("[ -~]{0,40}", "[\"\\\\\u{0}-\u{1f}\u{7f}\u{85}\u{2028}\u{2029}éΩ€🎉]", "[ -~]{0,40}")
                    .prop_map(|(a, b, c)| format!("{a}{b}{c}")),
            ]
        ) {
            let mut out = Vec::new();
            push_json_string(&mut out, &s);
            prop_assert!(!has_raw_line_end(&out), "{}", String::from_utf8_lossy(&out));
            prop_assert_eq!(serde_json::from_slice::<String>(&out).unwrap(), s);
        }
    }

    /// Each byte the word test must catch, at each of the eight positions.
    #[test]
    fn the_word_test_catches_every_byte_that_needs_a_look() {
        for b in 0..=255u8 {
            for pos in 0..8 {
                let mut word = *b"abcdefgh";
                word[pos] = b;
                if NEEDS_ESCAPE[b as usize] {
                    assert!(needs_look(u64::from_le_bytes(word)), "byte {b:#x} at {pos}");
                }
            }
        }
        assert!(!needs_look(u64::from_le_bytes(*b"plain ~!")));
    }

    #[test]
    fn escapes_round_trip_through_serde() {
        for s in [
            "plain",
            "q\"uote",
            "back\\slash",
            "nl\ncr\rtab\t",
            "\u{1}\u{1f}",
            "emoji 🎉 עברית",
            "first line\u{2028}second line",
            "a\u{2029}b\u{85}c\u{b}d\u{c}e\u{1c}f",
            "dash — quote “x” § £ \u{a0} end\u{2028}",
            "\u{2028}",
            "\u{85}\u{85}",
        ] {
            let mut out = Vec::new();
            push_json_string(&mut out, s);
            let back: String = serde_json::from_slice(&out).unwrap();
            assert_eq!(back, s);
        }
    }

    /// Characters a line reader may split a record at: C0 line ends, NEL and the
    /// Unicode separators (Python's `str.splitlines` splits at all of these).
    fn has_raw_line_end(bytes: &[u8]) -> bool {
        let s = std::str::from_utf8(bytes).unwrap();
        s.chars().any(|c| {
            matches!(
                c,
                '\n' | '\r' | '\u{b}' | '\u{c}' | '\u{1c}'
                    ..='\u{1e}' | '\u{85}' | '\u{2028}' | '\u{2029}'
            )
        })
    }

    #[test]
    fn strings_hold_no_raw_line_terminator() {
        for s in [
            "first line\u{2028}second line",
            "\u{2029}\u{85}\u{b}\u{c}\n\r\u{1e}",
            "€ — “quoted” \u{2027}\u{202a}",
        ] {
            let mut out = Vec::new();
            push_json_string(&mut out, s);
            assert!(!has_raw_line_end(&out), "{}", String::from_utf8_lossy(&out));
            assert_eq!(serde_json::from_slice::<String>(&out).unwrap(), s);
        }
        let mut out = Vec::new();
        push_json_string(&mut out, "a\u{2028}b\u{2029}c\u{85}d");
        assert_eq!(out, br#""a\u2028b\u2029c\u0085d""#);
    }

    #[test]
    fn nested_json_text_keeps_its_value() {
        let value = serde_json::json!({
            "note": "first line\u{2028}second line",
            "list": ["\u{2029}", "nel\u{85}", "dash —", {"k\u{2028}ey": "€"}],
            "n": -1.5e3,
        });
        let text = serde_json::to_string(&value).unwrap();
        assert!(
            has_raw_line_end(text.as_bytes()),
            "serde_json writes them raw"
        );
        let mut out = Vec::new();
        push_json_text(&mut out, &text);
        assert!(!has_raw_line_end(&out));
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&out).unwrap(),
            value
        );
        let mut plain = Vec::new();
        push_json_text(&mut plain, r#"{"a":"— “x”"}"#);
        assert_eq!(plain, r#"{"a":"— “x”"}"#.as_bytes());
    }
}
