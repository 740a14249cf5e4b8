//! Ingest: reads NDJSON or a JSON array, validates every record, stores the good ones
//! in chunks and reports the bad ones by line number.
//!
//! Each chunk is one atomic Delta commit, so an error half-way (a broken pipe, a full
//! disk) keeps every chunk committed before it, and a re-run of the same input adds
//! nothing twice: keys already stored are skipped.

mod json_text;
pub mod reader;
pub mod validate;

use std::io::BufRead;

use serde::Serialize;
use tokio::sync::mpsc;

use crate::error::{EngineError, Result};
use crate::lake::Lake;
use crate::model::Dataset;
use crate::rows::Row;
use reader::RecordReader;

/// Ingest limits and batching.
#[derive(Debug, Clone, Copy)]
pub struct IngestOptions {
    /// Longest accepted record in bytes.
    pub max_record_bytes: usize,
    /// Records per commit.
    pub chunk_rows: usize,
    /// Rejections listed in the report (all are counted).
    pub max_listed_errors: usize,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            max_record_bytes: 1 << 20,
            chunk_rows: 200_000,
            max_listed_errors: 1000,
        }
    }
}

/// One rejected record.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Rejection {
    /// 1-based line where the record starts.
    pub line: u64,
    /// What is wrong, naming the field.
    pub message: String,
}

/// What an ingest did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct IngestReport {
    /// Records that passed validation.
    pub accepted: u64,
    /// Of those, records already stored (retries), not stored again.
    pub duplicates: u64,
    /// Records rejected.
    pub rejected: u64,
    /// Lone UTF-16 surrogate escapes replaced by U+FFFD in accepted records (SPEC,
    /// "Data in": a half emoji never drops an event, and the repair is not silent).
    pub replaced_surrogates: u64,
    /// The first rejections, in input order.
    pub errors: Vec<Rejection>,
    /// The last Delta version committed.
    pub version: Option<u64>,
}

/// Reads `input` on a blocking thread, validating as it goes, and appends chunks of
/// good rows to `dataset`. An empty input is an error; a read error stops the ingest
/// but keeps the chunks committed before it.
pub async fn ingest<R: BufRead + Send + 'static>(
    lake: &Lake,
    dataset: Dataset,
    input: R,
    options: IngestOptions,
) -> Result<IngestReport> {
    let (tx, mut rx) = mpsc::channel::<Chunk>(2);
    let reader = tokio::task::spawn_blocking(move || read_chunks(dataset, input, options, tx));
    let mut report = IngestReport::default();
    let mut store_error = None;
    while let Some(chunk) = rx.recv().await {
        report.rejected += chunk.rejected.len() as u64;
        report.replaced_surrogates += chunk.replaced_surrogates;
        for r in chunk.rejected {
            if report.errors.len() < options.max_listed_errors {
                report.errors.push(r);
            }
        }
        if chunk.rows.is_empty() {
            continue;
        }
        let n = chunk.rows.len() as u64;
        match lake.append(dataset, chunk.rows).await {
            Ok(outcome) => {
                report.accepted += n;
                report.duplicates += outcome.duplicates as u64;
                if outcome.version.is_some() {
                    report.version = outcome.version;
                }
            }
            Err(e) => {
                store_error = Some(e);
                break;
            }
        }
    }
    drop(rx);
    let read = reader
        .await
        .map_err(|e| EngineError::Io(std::io::Error::other(e)))?;
    if let Some(e) = store_error {
        return Err(e);
    }
    let seen = read?;
    if seen == 0 {
        return Err(EngineError::invalid("input is empty: it holds no records"));
    }
    Ok(report)
}

struct Chunk {
    rows: Vec<Row>,
    rejected: Vec<Rejection>,
    replaced_surrogates: u64,
}

/// Returns how many records were seen.
fn read_chunks<R: BufRead>(
    dataset: Dataset,
    input: R,
    options: IngestOptions,
    tx: mpsc::Sender<Chunk>,
) -> Result<u64> {
    let mut reader = RecordReader::new(input, options.max_record_bytes);
    let mut rows = Vec::new();
    let mut rejected = Vec::new();
    let mut replaced_surrogates = 0u64;
    let mut seen = 0u64;
    loop {
        let record = match reader.next_record() {
            Ok(r) => r,
            Err(e) => {
                // Store what was read so far; the error still ends the ingest.
                let _ = tx.blocking_send(Chunk {
                    rows: std::mem::take(&mut rows),
                    rejected: std::mem::take(&mut rejected),
                    replaced_surrogates,
                });
                return Err(EngineError::Io(e));
            }
        };
        let Some(record) = record else { break };
        seen += 1;
        match record
            .body
            .and_then(|body| validate::validate(dataset, &body))
        {
            Ok(v) => {
                replaced_surrogates += u64::from(v.replaced_surrogates);
                rows.push(v.row)
            }
            Err(message) => rejected.push(Rejection {
                line: record.line,
                message,
            }),
        }
        if rows.len() >= options.chunk_rows {
            let chunk = Chunk {
                rows: std::mem::take(&mut rows),
                rejected: std::mem::take(&mut rejected),
                replaced_surrogates: std::mem::take(&mut replaced_surrogates),
            };
            if tx.blocking_send(chunk).is_err() {
                return Ok(seen);
            }
        }
    }
    let _ = tx.blocking_send(Chunk {
        rows,
        rejected,
        replaced_surrogates,
    });
    Ok(seen)
}

/// What a request body holds once validated.
#[derive(Debug, Default)]
pub struct ParsedBody {
    /// The valid rows, in input order.
    pub rows: Vec<Row>,
    /// The rejected records, by line.
    pub rejected: Vec<Rejection>,
    /// Records seen (valid or not).
    pub seen: u64,
    /// Lone surrogate escapes replaced by U+FFFD in the valid rows.
    pub replaced_surrogates: u64,
}

/// Validates a request body (NDJSON or a JSON array). The body is already in memory
/// (the HTTP API bounds its size); the rows are appended by the caller, who may batch
/// several bodies into one commit. An empty body is an error.
pub fn parse_body(dataset: Dataset, body: &[u8], max_record_bytes: usize) -> Result<ParsedBody> {
    let mut reader = RecordReader::new(body, max_record_bytes);
    let mut out = ParsedBody::default();
    while let Some(record) = reader.next_record()? {
        out.seen += 1;
        match record.body.and_then(|b| validate::validate(dataset, &b)) {
            Ok(v) => {
                out.replaced_surrogates += u64::from(v.replaced_surrogates);
                out.rows.push(v.row);
            }
            Err(message) => out.rejected.push(Rejection {
                line: record.line,
                message,
            }),
        }
    }
    if out.seen == 0 {
        return Err(EngineError::invalid("input is empty: it holds no records"));
    }
    Ok(out)
}
