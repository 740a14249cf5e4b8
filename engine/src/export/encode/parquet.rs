//! Parquet for data teams: the export's columns with their Arrow types, row groups
//! flushed as they fill so memory stays bounded.

use std::ops::Range;
use std::sync::Arc;

use deltalake::arrow::compute::{cast, concat_batches};
use deltalake::arrow::datatypes::{DataType, Schema, SchemaRef};
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
    /// Schema written: string views become plain strings, the type data tools expect.
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
                DataType::Utf8View | DataType::LargeUtf8 => {
                    Arc::new(f.as_ref().clone().with_data_type(DataType::Utf8))
                }
                _ => f.clone(),
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
