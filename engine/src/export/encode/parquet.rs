//! Parquet for data teams: the export's columns with their Arrow types, row groups
//! flushed as they fill so memory stays bounded. Every timestamp is written as
//! `TIMESTAMP(isAdjustedToUTC = true, unit = MICROS)` (Parquet logical types), the one
//! form Spark, Athena, Trino and pandas all read as an instant.

use std::ops::Range;
use std::sync::Arc;

use deltalake::arrow::compute::{cast, concat_batches};
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::parquet::arrow::ArrowWriter;
use deltalake::parquet::basic::{Compression, ZstdLevel};
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::parquet::schema::types::ColumnPath;

use crate::model::ColumnKind;

use super::{EncodedBatch, Encoder};
use crate::error::Result;

/// Rows per write: the merge hands over short runs, and the Parquet writer's per-call
/// cost is high, so runs are gathered into batches of this size first.
const WRITE_ROWS: usize = 8192;

/// Most bytes a row group may buffer before it is written out.
const MAX_BUFFERED_BYTES: usize = 16 << 20;

/// Parquet encoder; its writer's buffer is drained into the caller's after each write.
pub struct ParquetEncoder {
    /// Schema of incoming batches.
    input: SchemaRef,
    /// Schema written (see [`written_type`]).
    schema: SchemaRef,
    writer: Option<ArrowWriter<Vec<u8>>>,
    pending: Vec<RecordBatch>,
    pending_rows: usize,
}

impl ParquetEncoder {
    /// An encoder for batches of `schema`.
    pub fn new(input: SchemaRef, kinds: &[ColumnKind]) -> Result<Self> {
        let fields: Vec<_> = input
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                // String views become plain strings, the type data tools expect.
                DataType::Utf8View | DataType::LargeUtf8 => {
                    Arc::new(f.as_ref().clone().with_data_type(DataType::Utf8))
                }
                t => Arc::new(f.as_ref().clone().with_data_type(written_type(t))),
            })
            .collect();
        let schema = Arc::new(Schema::new_with_metadata(fields, input.metadata().clone()));
        let mut props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(1)?))
            .set_max_row_group_row_count(Some(16 * 1024))
            // Min/max of kilobyte prompts in every page index help nobody.
            .set_statistics_truncate_length(Some(64))
            // Exports must be byte-identical when re-run; no wall clock or random ids
            // may enter the file.
            .set_created_by(format!("evidex {}", env!("CARGO_PKG_VERSION")));
        for (field, kind) in schema.fields().iter().zip(kinds) {
            if matches!(kind, ColumnKind::Text | ColumnKind::Json) {
                // Free text rarely repeats: a dictionary only costs memory and time
                // before the writer gives up on it.
                props = props
                    .set_column_dictionary_enabled(ColumnPath::from(field.name().as_str()), false);
            }
        }
        let props = props.build();
        let writer = ArrowWriter::try_new(Vec::new(), schema.clone(), Some(props))?;
        Ok(ParquetEncoder {
            input,
            schema,
            writer: Some(writer),
            pending: Vec::new(),
            pending_rows: 0,
        })
    }

    fn flush(&mut self, out: &mut Vec<u8>) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = concat_batches(&self.input, &self.pending)?;
        let columns = batch
            .columns()
            .iter()
            .zip(self.schema.fields())
            .map(|(c, f)| {
                if c.data_type() == f.data_type() {
                    Ok(c.clone())
                } else {
                    cast(c, f.data_type())
                }
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let batch = RecordBatch::try_new(self.schema.clone(), columns)?;
        self.pending.clear();
        self.pending_rows = 0;
        if let Some(w) = self.writer.as_mut() {
            w.write(&batch)?;
            // Close the row group early when its buffered pages grow large (wide
            // text rows), so the encoder's memory stays bounded.
            if w.memory_size() > MAX_BUFFERED_BYTES {
                w.flush()?;
            }
            out.append(w.inner_mut());
        }
        Ok(())
    }
}

/// The type a column of Arrow type `t` is written as: every timestamp, of any unit
/// and timezone (or none), and also inside lists and structs, becomes
/// `Timestamp(Microsecond, "UTC")`, which the Parquet writer stores as
/// `TIMESTAMP(isAdjustedToUTC = true, MICROS)`. Arrow timestamps count from the epoch
/// in UTC whatever their timezone, so the instant is unchanged; a timestamp without
/// timezone (`CAST(x AS TIMESTAMP)` in a SQL definition) is taken as UTC. Nanosecond,
/// non-UTC timestamps are refused or misread by Spark, Athena and similar readers.
pub(crate) fn written_type(t: &DataType) -> DataType {
    let field = |f: &Field| Arc::new(f.clone().with_data_type(written_type(f.data_type())));
    match t {
        DataType::Timestamp(_, _) => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        DataType::List(f) => DataType::List(field(f)),
        DataType::LargeList(f) => DataType::LargeList(field(f)),
        DataType::FixedSizeList(f, n) => DataType::FixedSizeList(field(f), *n),
        DataType::Struct(fields) => DataType::Struct(fields.iter().map(|f| field(f)).collect()),
        other => other.clone(),
    }
}

impl Encoder for ParquetEncoder {
    fn begin(&mut self, _out: &mut Vec<u8>) -> Result<()> {
        Ok(())
    }

    fn rows(&mut self, batch: &EncodedBatch, rows: Range<usize>, out: &mut Vec<u8>) -> Result<()> {
        self.pending_rows += rows.len();
        self.pending.push(batch.batch.slice(rows.start, rows.len()));
        if self.pending_rows >= WRITE_ROWS {
            self.flush(out)?;
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<()> {
        self.flush(out)?;
        if let Some(w) = self.writer.take() {
            let bytes = w.into_inner()?;
            out.extend_from_slice(&bytes);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::array::{
        Array, AsArray, TimestampMillisecondArray, TimestampNanosecondArray,
    };
    use deltalake::arrow::datatypes::TimestampMicrosecondType;
    use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use deltalake::parquet::basic::{LogicalType, TimeUnit as ParquetUnit};

    #[test]
    fn every_timestamp_is_written_as_utc_microseconds() {
        // 2026-03-02T10:00:00.123456Z, as nanoseconds without timezone and as
        // milliseconds in Berlin (the same instant, truncated to milliseconds).
        let micros = 1_772_445_600_123_456i64;
        let naive = TimestampNanosecondArray::from(vec![Some(micros * 1000 + 789), None]);
        let berlin = TimestampMillisecondArray::from(vec![micros / 1000, micros / 1000])
            .with_timezone("Europe/Berlin");
        let schema = Arc::new(Schema::new(vec![
            Field::new("naive", naive.data_type().clone(), true),
            Field::new("berlin", berlin.data_type().clone(), false),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(naive) as _, Arc::new(berlin) as _],
        )
        .unwrap();
        let mut encoder = ParquetEncoder::new(schema, &[ColumnKind::Timestamp; 2]).unwrap();
        let mut out = Vec::new();
        encoder.begin(&mut out).unwrap();
        encoder
            .batch(&EncodedBatch::new(batch).unwrap(), &mut out)
            .unwrap();
        encoder.finish(&mut out).unwrap();

        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(out)).unwrap();
        let parquet_schema = reader.parquet_schema();
        for i in 0..2 {
            assert_eq!(
                parquet_schema.column(i).logical_type_ref(),
                Some(&LogicalType::timestamp(true, ParquetUnit::MICROS)),
                "column {i}"
            );
        }
        let batches: Vec<RecordBatch> = reader.build().unwrap().map(|b| b.unwrap()).collect();
        let utc = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        assert_eq!(batches[0].schema().field(0).data_type(), &utc);
        assert_eq!(batches[0].schema().field(1).data_type(), &utc);
        let naive = batches[0]
            .column(0)
            .as_primitive::<TimestampMicrosecondType>();
        assert_eq!(naive.value(0), micros);
        assert!(naive.is_null(1));
        let berlin = batches[0]
            .column(1)
            .as_primitive::<TimestampMicrosecondType>();
        assert_eq!(berlin.value(0), micros / 1000 * 1000);
    }

    #[test]
    fn nested_timestamps_are_normalised_too() {
        let ns = DataType::Timestamp(TimeUnit::Nanosecond, None);
        let utc = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let list = DataType::List(Arc::new(Field::new("item", ns.clone(), true)));
        assert_eq!(
            written_type(&list),
            DataType::List(Arc::new(Field::new("item", utc.clone(), true)))
        );
        let st = DataType::Struct(
            vec![
                Field::new("t", ns, true),
                Field::new("n", DataType::Int64, true),
            ]
            .into(),
        );
        assert_eq!(
            written_type(&st),
            DataType::Struct(
                vec![
                    Field::new("t", utc, true),
                    Field::new("n", DataType::Int64, true)
                ]
                .into()
            )
        );
        assert_eq!(written_type(&DataType::Utf8), DataType::Utf8);
    }
}
