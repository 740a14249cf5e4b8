//! RFC 4180 CSV: header row, CRLF line ends, fields quoted when they hold a comma,
//! quote, CR or LF; an empty string written `""` and a missing value as nothing
//! (PostgreSQL's `COPY ... CSV` convention); nested values as JSON text; optional UTF-8
//! byte-order mark; optional spreadsheet formula guard (OWASP CSV injection).

use deltalake::arrow::datatypes::SchemaRef;
use std::ops::Range;

use super::{ColumnData, EncodeOptions, EncodedBatch, Encoder, push_float, push_timestamp};
use crate::error::Result;
use crate::model::ColumnKind;

/// The UTF-8 byte-order mark written first with [`EncodeOptions::csv_bom`], so Excel on
/// Windows decodes the file as UTF-8 instead of the ANSI code page.
pub const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// The formula guard's rule in words, recorded in every guarded artifact's manifest
/// (`escaping.csv_formula_guard_rule`); [`needs_formula_guard`] implements it.
pub const CSV_FORMULA_GUARD_RULE: &str = "A text cell, column names included, is written with a leading ' (inside quotes) when it starts with TAB or CR, or when its first character after any leading characters spreadsheet importers trim or do not display (Unicode White_Space, control characters Cc, Default_Ignorable_Code_Point such as U+200B, U+2060 and U+FEFF) is =, +, - or @ (OWASP CSV Injection). A cell that is exactly a plain decimal number (optional sign, digits with an optional fraction, optional exponent: -12, +3, -1.5, -.5, -1e5) is written unchanged. Numeric and timestamp columns and JSON text are never guarded.";

/// The convention for missing values and empty strings, recorded in the manifest
/// (`escaping.csv_null`).
pub const CSV_NULL_RULE: &str = "A missing value is an empty unquoted field and an empty string is \"\" (PostgreSQL COPY CSV). A file of one column writes a missing value as \"\" too, because CSV readers skip empty lines.";

/// CSV encoder.
pub struct CsvEncoder {
    schema: SchemaRef,
    kinds: Vec<ColumnKind>,
    formula_guard: bool,
    bom: bool,
    itoa: itoa_lite::Buffer,
}

impl CsvEncoder {
    /// An encoder for batches of `schema` whose columns have `kinds`, writing with
    /// `options` (formula guard, byte-order mark).
    pub fn new(schema: SchemaRef, kinds: Vec<ColumnKind>, options: EncodeOptions) -> Self {
        CsvEncoder {
            schema,
            kinds,
            formula_guard: options.csv_formula_guard,
            bom: options.csv_bom,
            itoa: itoa_lite::Buffer::default(),
        }
    }
}

/// What the first byte of a cell says about the formula guard.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lead {
    /// A visible ASCII character that starts no formula: the cell is safe.
    Safe,
    /// `=` or `@`: a formula.
    Formula,
    /// `+` or `-`: a formula unless the whole cell is a plain number.
    Sign,
    /// TAB or CR: guarded whatever follows (OWASP).
    Always,
    /// Space, another control character or a non-ASCII character: look at the first
    /// character an importer would not trim.
    Look,
}

/// [`Lead`] of every byte, so the common cell (a letter or digit first) costs one load.
const LEAD: [Lead; 256] = {
    let mut t = [Lead::Look; 256];
    let mut b = 0x21;
    while b < 0x7f {
        t[b] = Lead::Safe;
        b += 1;
    }
    t[b'=' as usize] = Lead::Formula;
    t[b'@' as usize] = Lead::Formula;
    t[b'+' as usize] = Lead::Sign;
    t[b'-' as usize] = Lead::Sign;
    t[b'\t' as usize] = Lead::Always;
    t[b'\r' as usize] = Lead::Always;
    t
};

/// Whether the formula guard prefixes the text cell `s` with `'`; see
/// [`CSV_FORMULA_GUARD_RULE`]. Only the first characters of the cell are examined
/// (all of it only when it starts with a sign and could be a number).
pub fn needs_formula_guard(s: &str) -> bool {
    let bytes = s.as_bytes();
    let Some(&first) = bytes.first() else {
        return false;
    };
    match LEAD[first as usize] {
        Lead::Safe => false,
        Lead::Formula | Lead::Always => true,
        Lead::Sign => !is_plain_number(bytes),
        Lead::Look => s
            .chars()
            .find(|&c| !is_trimmed(c))
            .is_some_and(|c| matches!(c, '=' | '+' | '-' | '@')),
    }
}

/// Characters a spreadsheet importer may trim before it decides that a cell is a
/// formula, or that a reader cannot see in front of one: Unicode White_Space (space,
/// U+00A0, U+3000, ...), control characters (Cc: C0, DEL, C1 including U+0085) and
/// Default_Ignorable_Code_Point (zero-width characters, bidi controls, variation
/// selectors, U+FEFF; Unicode 15 DerivedCoreProperties).
fn is_trimmed(c: char) -> bool {
    c.is_whitespace()
        || c.is_control()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{034F}'
                | '\u{061C}'
                | '\u{115F}'..='\u{1160}'
                | '\u{17B4}'..='\u{17B5}'
                | '\u{180B}'..='\u{180F}'
                | '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}'
                | '\u{3164}'
                | '\u{FE00}'..='\u{FE0F}'
                | '\u{FEFF}'
                | '\u{FFA0}'
                | '\u{FFF0}'..='\u{FFF8}'
                | '\u{1BCA0}'..='\u{1BCA3}'
                | '\u{1D173}'..='\u{1D17A}'
                | '\u{E0000}'..='\u{E0FFF}'
        )
}

/// Whether `b` is exactly a plain decimal number a spreadsheet reads as a number:
/// an optional sign, digits with an optional fraction (at least one digit), and an
/// optional exponent (`-12`, `+3`, `-1.5`, `-.5`, `5.`, `-1e5`, `2E-3`).
fn is_plain_number(b: &[u8]) -> bool {
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    let mut i = usize::from(matches!(b.first(), Some(b'+' | b'-')));
    let mut mantissa = digits(&mut i);
    if b.get(i) == Some(&b'.') {
        i += 1;
        mantissa += digits(&mut i);
    }
    if mantissa == 0 {
        return false;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

/// Fields shorter than this many bytes are checked for quoting byte by byte (see
/// [`push_field`]).
const SHORT_FIELD: usize = 32;

/// Bytes that make a field quoted (RFC 4180 §2.6): comma, quote, CR, LF.
const QUOTE: [bool; 256] = {
    let mut t = [false; 256];
    t[b',' as usize] = true;
    t[b'"' as usize] = true;
    t[b'\r' as usize] = true;
    t[b'\n' as usize] = true;
    t
};

/// Appends one text field (RFC 4180): an empty string as `""`, quoted when it holds a
/// comma, quote, CR or LF, and with `guard` prefixed with `'` when
/// [`needs_formula_guard`] says so.
pub(crate) fn push_field(out: &mut Vec<u8>, s: &str, guard: bool) {
    let bytes = s.as_bytes();
    if bytes.is_empty() {
        // Nothing at all is a missing value; the empty string must differ from it.
        out.extend_from_slice(b"\"\"");
        return;
    }
    let guarded = guard && needs_formula_guard(s);
    // memchr scans with SIMD; these fields are often kilobytes of prompt text. Most
    // fields of a row are short (ids, names, enum values), and for those two memchr
    // calls cost more than looking at each byte.
    let needs_quotes = guarded
        || if bytes.len() < SHORT_FIELD {
            bytes.iter().any(|&b| QUOTE[b as usize])
        } else {
            memchr::memchr3(b',', b'"', b'\n', bytes).is_some()
                || memchr::memchr(b'\r', bytes).is_some()
        };
    if !needs_quotes {
        out.extend_from_slice(bytes);
        return;
    }
    out.push(b'"');
    if guarded {
        out.push(b'\'');
    }
    let mut start = 0;
    for i in memchr::memchr_iter(b'"', bytes) {
        out.extend_from_slice(&bytes[start..=i]);
        out.push(b'"');
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

impl Encoder for CsvEncoder {
    fn begin(&mut self, out: &mut Vec<u8>) -> Result<()> {
        if self.bom {
            out.extend_from_slice(UTF8_BOM);
        }
        for (i, f) in self.schema.fields().iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            // Column names of SQL definitions are as free as the values.
            push_field(out, f.name(), self.formula_guard);
        }
        out.extend_from_slice(b"\r\n");
        Ok(())
    }

    fn rows(&mut self, batch: &EncodedBatch, rows: Range<usize>, out: &mut Vec<u8>) -> Result<()> {
        let columns = &batch.cols;
        for row in rows {
            let row_start = out.len();
            for (c, data) in columns.iter().enumerate() {
                if c > 0 {
                    out.push(b',');
                }
                if data.is_null(row) {
                    continue;
                }
                match data {
                    ColumnData::Str(text) => {
                        // Identifiers and free text are both guarded: a policy name can
                        // be as hostile as a prompt. JSON text never starts with one of
                        // the formula characters, so guarding it changes nothing.
                        let guard = self.formula_guard && self.kinds[c] != ColumnKind::Json;
                        push_field(out, text.value(row), guard);
                    }
                    ColumnData::Int(a) => out.extend_from_slice(self.itoa.format(a.value(row))),
                    ColumnData::Float(a) => {
                        push_float(out, a.value(row));
                    }
                    ColumnData::Ts(a) => push_timestamp(out, a.value(row)),
                }
            }
            if out.len() == row_start {
                // One column and nothing in it: an empty line, which CSV readers skip
                // (the record would be lost); `""` keeps the record.
                out.extend_from_slice(b"\"\"");
            }
            out.extend_from_slice(b"\r\n");
        }
        Ok(())
    }

    fn finish(&mut self, _out: &mut Vec<u8>) -> Result<()> {
        Ok(())
    }
}

/// A tiny integer formatter, so the hot loop does not go through `fmt`.
pub(crate) mod itoa_lite {
    /// Reusable digit buffer.
    #[derive(Default)]
    pub struct Buffer {
        bytes: [u8; 20],
    }

    impl Buffer {
        /// The decimal digits of `v`.
        pub fn format(&mut self, v: i64) -> &[u8] {
            let neg = v < 0;
            let mut n = v.unsigned_abs();
            let mut i = self.bytes.len();
            loop {
                i -= 1;
                self.bytes[i] = b'0' + (n % 10) as u8;
                n /= 10;
                if n == 0 {
                    break;
                }
            }
            if neg {
                i -= 1;
                self.bytes[i] = b'-';
            }
            &self.bytes[i..]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(s: &str, guard: bool) -> String {
        let mut out = Vec::new();
        push_field(&mut out, s, guard);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn quoting_and_guard() {
        assert_eq!(field("plain", true), "plain");
        assert_eq!(field("a,b", true), "\"a,b\"");
        assert_eq!(field("say \"hi\"", true), "\"say \"\"hi\"\"\"");
        assert_eq!(field("line\nbreak", true), "\"line\nbreak\"");
        assert_eq!(field("=SUM(A1)", true), "\"'=SUM(A1)\"");
        assert_eq!(field("=SUM(A1)", false), "=SUM(A1)");
        assert_eq!(field("-1+2", true), "\"'-1+2\"");
        assert_eq!(field("\tx", true), "\"'\tx\"");
        assert_eq!(field(" =A1", true), "\"' =A1\"");
        assert_eq!(field(" =A1", false), " =A1");
    }

    #[test]
    fn empty_string_is_quoted() {
        assert_eq!(field("", true), "\"\"");
        assert_eq!(field("", false), "\"\"");
    }

    #[test]
    fn formula_after_trimmed_characters_is_guarded() {
        let leads = [
            " ",
            "  ",
            "\t",
            "\r",
            "\n",
            "\r\n",
            "\u{0}",
            "\u{b}",
            "\u{c}",
            "\u{1f}",
            "\u{7f}",
            "\u{85}",
            "\u{a0}",
            "\u{1680}",
            "\u{2000}",
            "\u{2007}",
            "\u{200a}",
            "\u{2028}",
            "\u{2029}",
            "\u{202f}",
            "\u{205f}",
            "\u{3000}",
            "\u{180e}",
            "\u{200b}",
            "\u{200c}",
            "\u{200d}",
            "\u{200e}",
            "\u{202e}",
            "\u{2060}",
            "\u{feff}",
            "\u{ad}",
            "\u{fe0f}",
            " \u{feff}\u{a0}\t",
        ];
        for lead in leads {
            for start in ["=", "+", "-", "@"] {
                let s = format!("{lead}{start}HYPERLINK(\"http://x.example/\")");
                assert!(needs_formula_guard(&s), "{s:?}");
            }
            // Trimmed characters in front of plain text change nothing (TAB and CR
            // excepted: OWASP guards them whatever follows).
            let s = format!("{lead}hello");
            assert_eq!(
                needs_formula_guard(&s),
                lead.starts_with(['\t', '\r']),
                "{s:?}"
            );
        }
        for safe in [
            "hello",
            "Zürich",
            "中文 =x",
            "a=b",
            "'=x",
            "#x",
            "(1)",
            "1+2",
            "é=1",
        ] {
            assert!(!needs_formula_guard(safe), "{safe:?}");
        }
    }

    #[test]
    fn plain_numbers_are_not_guarded() {
        for n in [
            "-32602", "-12", "+3", "-1.5", "-.5", "-5.", "-1e5", "-1E+5", "+2e-3", "-0", "12",
        ] {
            assert!(!needs_formula_guard(n), "{n:?}");
            assert_eq!(field(n, true), n);
        }
        for f in [
            "-",
            "+",
            "-.",
            "-e5",
            "-1e",
            "-1e+",
            "-1+2",
            "-A1",
            "+1 (555) 010",
            "-1.2.3",
            "- 1",
            "-1 ",
            "--1",
            "-0x1F",
            "-5%",
            "-1,5",
            "+-1",
            "-1e5e5",
            "-∞",
        ] {
            assert!(needs_formula_guard(f), "{f:?}");
        }
        // Whitespace in front of a number is not a plain number: guarded.
        assert!(needs_formula_guard(" -12"));
    }

    #[test]
    fn itoa() {
        let mut b = itoa_lite::Buffer::default();
        for v in [0i64, 7, -7, 1234567890, i64::MIN, i64::MAX] {
            assert_eq!(std::str::from_utf8(b.format(v)).unwrap(), v.to_string());
        }
    }

    fn encode(columns: Vec<(&str, Vec<Option<&str>>)>, options: EncodeOptions) -> Vec<u8> {
        use deltalake::arrow::array::StringArray;
        use deltalake::arrow::datatypes::{DataType, Field, Schema};
        use deltalake::arrow::record_batch::RecordBatch;
        use std::sync::Arc;
        let schema = Arc::new(Schema::new(
            columns
                .iter()
                .map(|(name, _)| Field::new(*name, DataType::Utf8, true))
                .collect::<Vec<_>>(),
        ));
        let arrays = columns
            .into_iter()
            .map(|(_, v)| Arc::new(StringArray::from(v)) as _)
            .collect();
        let batch = RecordBatch::try_new(schema.clone(), arrays).unwrap();
        let kinds = vec![ColumnKind::Str; schema.fields().len()];
        let mut encoder = CsvEncoder::new(schema, kinds, options);
        let mut out = Vec::new();
        encoder.begin(&mut out).unwrap();
        encoder
            .batch(&EncodedBatch::new(batch).unwrap(), &mut out)
            .unwrap();
        encoder.finish(&mut out).unwrap();
        out
    }

    #[test]
    fn missing_and_empty_differ() {
        let out = encode(
            vec![
                ("a", vec![Some(""), None, Some("x")]),
                ("b", vec![None, Some(""), Some("-5")]),
            ],
            EncodeOptions::default(),
        );
        assert_eq!(out, b"a,b\r\n\"\",\r\n,\"\"\r\nx,-5\r\n");
        // One column: an empty line would be skipped by readers, so the record keeps
        // `""`.
        let out = encode(vec![("a", vec![None, Some("")])], EncodeOptions::default());
        assert_eq!(out, b"a\r\n\"\"\r\n\"\"\r\n");
    }

    #[test]
    fn bom_starts_the_file_and_headers_are_guarded() {
        let options = EncodeOptions {
            csv_formula_guard: true,
            csv_bom: true,
            ..EncodeOptions::default()
        };
        let out = encode(vec![("=x", vec![Some("Zürich")])], options);
        assert_eq!(out, "\u{feff}\"'=x\"\r\nZürich\r\n".as_bytes());
        assert!(out.starts_with(UTF8_BOM));
        let out = encode(vec![("a", vec![Some("b")])], EncodeOptions::default());
        assert_eq!(out, b"a\r\nb\r\n");
    }
}
