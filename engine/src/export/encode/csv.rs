//! RFC 4180 CSV: header row, CRLF line ends, fields quoted when they hold a comma,
//! quote, CR or LF; nested values as JSON text; optional spreadsheet formula guard.

use deltalake::arrow::datatypes::SchemaRef;
use std::ops::Range;

use super::{ColumnData, EncodedBatch, Encoder, push_float, push_timestamp};
use crate::error::Result;
use crate::model::ColumnKind;

/// CSV encoder.
pub struct CsvEncoder {
    schema: SchemaRef,
    kinds: Vec<ColumnKind>,
    formula_guard: bool,
    itoa: itoa_lite::Buffer,
}

impl CsvEncoder {
    /// An encoder for batches of `schema`.
    pub fn new(schema: SchemaRef, kinds: Vec<ColumnKind>, formula_guard: bool) -> Self {
        CsvEncoder {
            schema,
            kinds,
            formula_guard,
            itoa: itoa_lite::Buffer::default(),
        }
    }
}

/// Whether a spreadsheet would treat a cell starting with this byte as a formula.
fn is_formula_start(b: u8) -> bool {
    matches!(b, b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r')
}

/// Appends one text field, quoting it when needed and neutralising formulas.
pub(crate) fn push_field(out: &mut Vec<u8>, s: &str, guard: bool) {
    let bytes = s.as_bytes();
    let guarded = guard && bytes.first().is_some_and(|&b| is_formula_start(b));
    // memchr scans with SIMD; these fields are often kilobytes of prompt text.
    let needs_quotes = guarded
        || memchr::memchr3(b',', b'"', b'\n', bytes).is_some()
        || memchr::memchr(b'\r', bytes).is_some();
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
        for (i, f) in self.schema.fields().iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            push_field(out, f.name(), false);
        }
        out.extend_from_slice(b"\r\n");
        Ok(())
    }

    fn rows(&mut self, batch: &EncodedBatch, rows: Range<usize>, out: &mut Vec<u8>) -> Result<()> {
        let columns = &batch.cols;
        for row in rows {
            for (c, data) in columns.iter().enumerate() {
                if c > 0 {
                    out.push(b',');
                }
                if data.is_null(row) {
                    continue;
                }
                match data {
                    ColumnData::Str(_) => {
                        // Identifiers and free text are both guarded: a policy name can
                        // be as hostile as a prompt. JSON text never starts with one of
                        // the formula bytes, so guarding it changes nothing.
                        let guard = self.formula_guard && self.kinds[c] != ColumnKind::Json;
                        push_field(out, data.str(row), guard);
                    }
                    ColumnData::Int(_) => out.extend_from_slice(self.itoa.format(data.int(row))),
                    ColumnData::Float(_) => {
                        push_float(out, data.float(row));
                    }
                    ColumnData::Ts(_) => push_timestamp(out, data.ts(row)),
                }
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
        assert_eq!(field("", true), "");
    }

    #[test]
    fn itoa() {
        let mut b = itoa_lite::Buffer::default();
        for v in [0i64, 7, -7, 1234567890, i64::MIN, i64::MAX] {
            assert_eq!(std::str::from_utf8(b.format(v)).unwrap(), v.to_string());
        }
    }
}
