//! Parquet for data teams: the export's columns with their Arrow types, row groups
//! flushed as they fill so memory stays bounded.

use deltalake::arrow::datatypes::SchemaRef;
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::parquet::arrow::ArrowWriter;
use deltalake::parquet::basic::{Compression, ZstdLevel};
use deltalake::parquet::file::properties::WriterProperties;

use super::Encoder;
use crate::error::Result;

/// Parquet encoder; its writer's buffer is drained into the caller's after each batch.
pub struct ParquetEncoder {
    writer: Option<ArrowWriter<Vec<u8>>>,
}

impl ParquetEncoder {
    /// An encoder for batches of `schema`.
    pub fn new(schema: SchemaRef) -> Result<Self> {
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
            .set_max_row_group_row_count(Some(64 * 1024))
            // Exports must be byte-identical when re-run; no wall clock or random ids
            // may enter the file.
            .set_created_by(format!("evidex {}", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(ParquetEncoder {
            writer: Some(ArrowWriter::try_new(Vec::new(), schema, Some(props))?),
        })
    }

    fn drain(&mut self, out: &mut Vec<u8>) {
        if let Some(w) = self.writer.as_mut() {
            out.append(w.inner_mut());
        }
    }
}

impl Encoder for ParquetEncoder {
    fn begin(&mut self, _out: &mut Vec<u8>) -> Result<()> {
        Ok(())
    }

    fn batch(&mut self, batch: &RecordBatch, out: &mut Vec<u8>) -> Result<()> {
        if let Some(w) = self.writer.as_mut() {
            w.write(batch)?;
        }
        self.drain(out);
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<()> {
        if let Some(w) = self.writer.take() {
            let bytes = w.into_inner()?;
            out.extend_from_slice(&bytes);
        }
        Ok(())
    }
}
