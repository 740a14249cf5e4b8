//! Output formats. Each encoder has the same shape: record batches in, bytes appended
//! to a buffer out; the caller moves the buffer to the sink after every batch, so no
//! encoder ever holds more than one batch of output.

mod csv;
mod json;
mod parquet;
pub mod profile;

use std::ops::Range;

use deltalake::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, LargeStringArray, StringArray,
    StringViewArray, TimestampMicrosecondArray,
};
use deltalake::arrow::datatypes::{
    DataType, Float64Type, Int64Type, SchemaRef, TimestampMicrosecondType,
};
use deltalake::arrow::record_batch::RecordBatch;

use crate::error::{EngineError, Result};
use crate::model::{ColumnKind, Dataset};

pub use self::csv::{
    CSV_FORMULA_GUARD_RULE, CSV_NULL_RULE, CsvEncoder, UTF8_BOM, needs_formula_guard,
};
pub use self::json::{JSON_LINE_TERMINATOR_RULE, JsonEncoder, JsonLayout};
pub use self::parquet::ParquetEncoder;
pub use self::profile::{FieldMapping, Profile, ProfileEncoder, Rule};

pub use crate::format::Format;

/// Options that change the bytes an encoder writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodeOptions {
    /// Neutralise CSV cells a spreadsheet would execute by prefixing `'` (OWASP CSV
    /// injection; the rule is [`CSV_FORMULA_GUARD_RULE`]).
    pub csv_formula_guard: bool,
    /// Start every CSV file (each part of a ZIP too) with a UTF-8 byte-order mark, so
    /// Excel on Windows reads it as UTF-8.
    pub csv_bom: bool,
    /// The record layout of JSON and NDJSON event records (see [`Profile`]).
    pub profile: Profile,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions {
            csv_formula_guard: true,
            csv_bom: false,
            profile: Profile::Native,
        }
    }
}

/// A record batch with its columns normalised once for encoding, so encoders can
/// write any range of its rows cheaply (the merge hands them short runs).
pub struct EncodedBatch {
    /// The batch.
    pub batch: RecordBatch,
    pub(crate) cols: Vec<ColumnData>,
}

impl EncodedBatch {
    /// Prepares `batch`.
    pub fn new(batch: RecordBatch) -> Result<EncodedBatch> {
        let cols = batch
            .columns()
            .iter()
            .map(ColumnData::new)
            .collect::<Result<_>>()?;
        Ok(EncodedBatch { batch, cols })
    }

    /// Number of rows.
    pub fn num_rows(&self) -> usize {
        self.batch.num_rows()
    }

    /// Timestamp (UTC microseconds) of `row` in column `col`.
    pub(crate) fn ts(&self, col: usize, row: usize) -> i64 {
        self.cols[col].ts(row)
    }

    /// String of `row` in column `col` (empty for null).
    pub(crate) fn str(&self, col: usize, row: usize) -> &str {
        if self.cols[col].is_null(row) {
            ""
        } else {
            self.cols[col].str(row)
        }
    }
}

/// Turns record batches into bytes of one format.
pub trait Encoder: Send {
    /// Bytes before the first record (CSV header, `[`).
    fn begin(&mut self, out: &mut Vec<u8>) -> Result<()>;
    /// Rows `rows` of `batch`, in order.
    fn rows(&mut self, batch: &EncodedBatch, rows: Range<usize>, out: &mut Vec<u8>) -> Result<()>;
    /// Bytes after the last record; the encoder is done afterwards.
    fn finish(&mut self, out: &mut Vec<u8>) -> Result<()>;

    /// Every row of `batch`.
    fn batch(&mut self, batch: &EncodedBatch, out: &mut Vec<u8>) -> Result<()> {
        self.rows(batch, 0..batch.num_rows(), out)
    }
}

/// A new encoder for `format` over batches with `schema` holding `dataset`'s columns
/// (`None`: derived columns, typed by their Arrow type and metadata).
pub fn encoder(
    format: Format,
    dataset: Option<Dataset>,
    schema: SchemaRef,
    options: EncodeOptions,
) -> Result<Box<dyn Encoder>> {
    let kinds = column_kinds(dataset, &schema);
    Ok(match format {
        Format::Csv => Box::new(CsvEncoder::new(schema, kinds, options)),
        Format::Json | Format::Ndjson => {
            let layout = if format == Format::Json {
                JsonLayout::Array
            } else {
                JsonLayout::Lines
            };
            // Profiles lay out decision events; other datasets of a package keep
            // their own columns.
            if options.profile != Profile::Native && dataset == Some(Dataset::Events) {
                Box::new(ProfileEncoder::new(options.profile, schema, kinds, layout))
            } else {
                Box::new(JsonEncoder::new(schema, kinds, layout))
            }
        }
        Format::Parquet => Box::new(ParquetEncoder::new(schema, &kinds)?),
        Format::Pdf => {
            return Err(EngineError::invalid(
                "format: pdf is a report of the whole scope, not a per-record format",
            ));
        }
    })
}

/// An NDJSON / JSON encoder of decision events (columns named as in the events
/// table) in `profile`, for the event stream.
pub fn encoder_for_stream(
    profile: Profile,
    schema: SchemaRef,
    layout: JsonLayout,
) -> Box<dyn Encoder> {
    let kinds = column_kinds(Some(Dataset::Events), &schema);
    if profile == Profile::Native {
        Box::new(JsonEncoder::new(schema, kinds, layout))
    } else {
        Box::new(ProfileEncoder::new(profile, schema, kinds, layout))
    }
}

/// The kind of each schema column: JSON when its metadata says so (see
/// [`crate::redact::KIND_METADATA`]), from the dataset when the name matches, else
/// from the Arrow type (derived columns of SQL definitions).
fn column_kinds(dataset: Option<Dataset>, schema: &SchemaRef) -> Vec<ColumnKind> {
    schema
        .fields()
        .iter()
        .map(|f| {
            let marked_json = f
                .metadata()
                .get(crate::redact::KIND_METADATA)
                .is_some_and(|k| k == "json")
                && matches!(
                    f.data_type(),
                    DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8
                );
            if marked_json {
                return ColumnKind::Json;
            }
            dataset
                .and_then(|d| d.column_index(f.name()).map(|i| d.columns()[i].kind))
                .filter(|k| *k != ColumnKind::Json)
                .filter(|k| {
                    k.arrow_type() == *f.data_type()
                        || matches!(f.data_type(), DataType::Utf8View | DataType::LargeUtf8)
                })
                .unwrap_or(match f.data_type() {
                    DataType::Int8
                    | DataType::Int16
                    | DataType::Int32
                    | DataType::Int64
                    | DataType::UInt8
                    | DataType::UInt16
                    | DataType::UInt32
                    | DataType::UInt64 => ColumnKind::Int,
                    DataType::Float16
                    | DataType::Float32
                    | DataType::Float64
                    | DataType::Decimal128(_, _) => ColumnKind::Float,
                    DataType::Timestamp(_, _) => ColumnKind::Timestamp,
                    _ => ColumnKind::Str,
                })
        })
        .collect()
}

/// A column normalised to one of a few physical types for the encoders, held as its
/// concrete array type: the encoders read every cell of every row through it, and a
/// dynamic downcast per cell (type check, virtual calls) was a measurable share of
/// an export's time.
pub(crate) enum ColumnData {
    Str(Text),
    Int(Int64Array),
    Float(Float64Array),
    Ts(TimestampMicrosecondArray),
}

/// A text column in one of Arrow's three layouts.
pub(crate) enum Text {
    Utf8(StringArray),
    Large(LargeStringArray),
    View(StringViewArray),
}

impl Text {
    /// The string at `i`.
    #[inline]
    pub(crate) fn value(&self, i: usize) -> &str {
        match self {
            Text::View(a) => a.value(i),
            Text::Utf8(a) => a.value(i),
            Text::Large(a) => a.value(i),
        }
    }

    fn is_null(&self, i: usize) -> bool {
        match self {
            Text::View(a) => a.is_null(i),
            Text::Utf8(a) => a.is_null(i),
            Text::Large(a) => a.is_null(i),
        }
    }
}

impl ColumnData {
    /// Normalises `array` (casting unusual types) for encoding.
    pub(crate) fn new(array: &ArrayRef) -> Result<ColumnData> {
        use deltalake::arrow::compute::cast;
        use deltalake::arrow::datatypes::TimeUnit;
        Ok(match array.data_type() {
            DataType::Utf8View => ColumnData::Str(Text::View(array.as_string_view().clone())),
            DataType::Utf8 => ColumnData::Str(Text::Utf8(array.as_string::<i32>().clone())),
            DataType::LargeUtf8 => ColumnData::Str(Text::Large(array.as_string::<i64>().clone())),
            DataType::Int64 => ColumnData::Int(array.as_primitive::<Int64Type>().clone()),
            DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64 => ColumnData::Int(
                cast(array, &DataType::Int64)?
                    .as_primitive::<Int64Type>()
                    .clone(),
            ),
            DataType::Float64 => ColumnData::Float(array.as_primitive::<Float64Type>().clone()),
            DataType::Float16 | DataType::Float32 | DataType::Decimal128(_, _) => {
                ColumnData::Float(
                    cast(array, &DataType::Float64)?
                        .as_primitive::<Float64Type>()
                        .clone(),
                )
            }
            DataType::Timestamp(TimeUnit::Microsecond, _) => {
                ColumnData::Ts(array.as_primitive::<TimestampMicrosecondType>().clone())
            }
            DataType::Timestamp(_, tz) => ColumnData::Ts(
                cast(
                    array,
                    &DataType::Timestamp(TimeUnit::Microsecond, tz.clone()),
                )?
                .as_primitive::<TimestampMicrosecondType>()
                .clone(),
            ),
            _ => ColumnData::Str(Text::Utf8(
                cast(array, &DataType::Utf8)?.as_string::<i32>().clone(),
            )),
        })
    }

    #[inline]
    pub(crate) fn is_null(&self, i: usize) -> bool {
        match self {
            ColumnData::Str(t) => t.is_null(i),
            ColumnData::Int(a) => a.is_null(i),
            ColumnData::Float(a) => a.is_null(i),
            ColumnData::Ts(a) => a.is_null(i),
        }
    }

    /// The string at `i` (only for `Str`).
    #[inline]
    pub(crate) fn str(&self, i: usize) -> &str {
        match self {
            ColumnData::Str(t) => t.value(i),
            _ => "",
        }
    }

    #[inline]
    pub(crate) fn int(&self, i: usize) -> i64 {
        match self {
            ColumnData::Int(a) => a.value(i),
            _ => 0,
        }
    }

    #[inline]
    pub(crate) fn float(&self, i: usize) -> f64 {
        match self {
            ColumnData::Float(a) => a.value(i),
            _ => 0.0,
        }
    }

    #[inline]
    pub(crate) fn ts(&self, i: usize) -> i64 {
        match self {
            ColumnData::Ts(a) => a.value(i),
            _ => 0,
        }
    }
}

/// Appends RFC 3339 UTC with microseconds (`2026-03-01T09:30:00.000000Z`) without
/// going through a formatter: this runs once per row of every export.
pub(crate) fn push_timestamp(out: &mut Vec<u8>, micros: i64) {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000) as u32;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400) as u32;
    let (y, m, d) = civil_from_days(days);
    if !(0..=9999).contains(&y) {
        out.extend_from_slice(crate::scope::format_micros(micros).as_bytes());
        return;
    }
    let mut buf = *b"0000-00-00T00:00:00.000000Z";
    let put = |buf: &mut [u8; 27], at: usize, v: u32, width: usize| {
        let mut v = v;
        for k in (0..width).rev() {
            buf[at + k] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(&mut buf, 0, y as u32, 4);
    put(&mut buf, 5, m, 2);
    put(&mut buf, 8, d, 2);
    put(&mut buf, 11, sod / 3600, 2);
    put(&mut buf, 14, (sod / 60) % 60, 2);
    put(&mut buf, 17, sod % 60, 2);
    put(&mut buf, 20, frac, 6);
    out.extend_from_slice(&buf);
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's
/// algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Appends a float the way JSON and CSV readers parse back exactly.
pub(crate) fn push_float(out: &mut Vec<u8>, v: f64) -> bool {
    if !v.is_finite() {
        return false;
    }
    use std::io::Write;
    let _ = write!(out, "{v}");
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_match_chrono() {
        for micros in [
            0i64,
            1,
            86_399_999_999,
            1_772_323_200_000_000,
            951_782_400_123_456,
            -1,
        ] {
            let mut out = Vec::new();
            push_timestamp(&mut out, micros);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                crate::scope::format_micros(micros)
            );
        }
    }
}
