//! JSON (one array) and NDJSON (one object per line). JSON columns are embedded as
//! nested values, never as escaped strings, so `metadata` stays an object.

use deltalake::arrow::datatypes::SchemaRef;
use std::ops::Range;

use super::csv::itoa_lite;
use super::{ColumnData, EncodedBatch, Encoder, push_float, push_timestamp};
use crate::error::Result;
use crate::model::ColumnKind;

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

/// Bytes that must be escaped inside a JSON string.
const NEEDS_ESCAPE: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// Appends `s` as a JSON string literal.
pub(crate) fn push_json_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        // Long runs of plain text are the common case: skip them in one tight loop.
        while i < bytes.len() && !NEEDS_ESCAPE[bytes[i] as usize] {
            i += 1;
        }
        if i == bytes.len() {
            break;
        }
        let b = bytes[i];
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
                    ColumnData::Str(_) if self.kinds[c] == ColumnKind::Json => {
                        // Stored JSON text was produced by serde_json at ingest and is
                        // valid; embed it as a nested value.
                        out.extend_from_slice(data.str(row).as_bytes())
                    }
                    ColumnData::Str(_) => push_json_string(out, data.str(row)),
                    ColumnData::Int(_) => out.extend_from_slice(self.itoa.format(data.int(row))),
                    ColumnData::Float(_) => {
                        if !push_float(out, data.float(row)) {
                            out.extend_from_slice(b"null");
                        }
                    }
                    ColumnData::Ts(_) => {
                        out.push(b'"');
                        push_timestamp(out, data.ts(row));
                        out.push(b'"');
                    }
                }
            }
            out.push(b'}');
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

    #[test]
    fn escapes_round_trip_through_serde() {
        for s in [
            "plain",
            "q\"uote",
            "back\\slash",
            "nl\ncr\rtab\t",
            "\u{1}\u{1f}",
            "emoji 🎉 עברית",
        ] {
            let mut out = Vec::new();
            push_json_string(&mut out, s);
            let back: String = serde_json::from_slice(&out).unwrap();
            assert_eq!(back, s);
        }
    }
}
