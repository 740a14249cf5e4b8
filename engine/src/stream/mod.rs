//! The event stream for SIEM pipelines: decision events in ingest order, page by
//! page, each page ending in a signed cursor where the next one starts.
//!
//! The stream walks the events table's Delta commits in version order (see
//! [`log`]): a commit's appended files in log order, each file's rows in file order.
//! An event is in exactly one appended file of exactly one commit, whatever its
//! event time, and a compaction appends nothing (its files have `dataChange: false`),
//! so following the cursors returns every event exactly once, across compactions,
//! restarts and any number of processes (they all read the same log). The position
//! counts rows *before* filtering, so filtered pages never shift it.
//!
//! Retention: a vacuum deletes files compaction replaced; a commit whose appended
//! files are gone can no longer be streamed. A cursor older than the oldest commit
//! still kept gets [`StreamError::Expired`] naming that commit, never a silent jump.

pub mod cursor;
pub mod log;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use deltalake::arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch};
use deltalake::arrow::compute::prep_null_mask_filter;
use deltalake::arrow::datatypes::{Field, Schema};
use deltalake::datafusion::common::DFSchema;
use deltalake::datafusion::physical_expr::PhysicalExpr;
use deltalake::datafusion::prelude::SessionContext;
use deltalake::parquet::arrow::ParquetRecordBatchStreamBuilder;
#[allow(deprecated, reason = "see PageReader::read_file")]
use deltalake::parquet::arrow::async_reader::ParquetObjectReader;
use futures::TryStreamExt;

pub use cursor::{Cursor, CursorKey, Position};

use self::log::{AppendedFile, LogState};
use crate::error::{EngineError, Result};
use crate::export::encode::{EncodedBatch, Encoder, JsonLayout, Profile, encoder_for_stream};
use crate::lake::{Lake, paths};
use crate::model::Dataset;
use crate::redact::Redactor;
use crate::scope::Filters;
use crate::views::redacted_projection;

/// The most records one page returns, whatever `limit` asks.
pub const MAX_LIMIT: usize = 10_000;
/// A page stops after the record that brings its body to this many bytes.
pub const MAX_PAGE_BYTES: usize = 16 << 20;
/// A page stops after reading this many stored rows, even when few pass the filters
/// (its cursor still moves on).
pub const MAX_SCAN_ROWS: u64 = 1 << 20;

/// Where a page starts.
#[derive(Debug, Clone)]
pub enum Start {
    /// The oldest commit still kept.
    Oldest,
    /// The first commit made at or after this instant (ingest time, UTC).
    Since(DateTime<Utc>),
    /// A cursor from an earlier page.
    Cursor(String),
}

/// One page's request.
#[derive(Debug, Clone)]
pub struct StreamRequest {
    /// Where it starts.
    pub start: Start,
    /// At most this many records (capped at [`MAX_LIMIT`]).
    pub limit: usize,
    /// Which events (the same filters as exports; a cursor is bound to them).
    pub filters: Filters,
    /// The record layout.
    pub profile: Profile,
    /// Redaction applied to free text, as in exports.
    pub redactor: Arc<Redactor>,
    /// Whether `input` / `output` are included.
    pub include_payloads: bool,
}

/// One page of the stream.
#[derive(Debug, Clone)]
pub struct Page {
    /// NDJSON, one record per line, in pieces (one per file read; joined, they
    /// are the page's body).
    pub body: Vec<bytes::Bytes>,
    /// Records in `body`.
    pub records: usize,
    /// The cursor of the next page.
    pub cursor: String,
    /// The position that cursor holds.
    pub position: Position,
    /// Whether the page reached the newest commit (nothing more to read now).
    pub at_end: bool,
    /// The newest commit version read (`None`: the table has no commits yet).
    pub head: Option<u64>,
}

/// Why a page cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The request is wrong: a cursor that does not verify, or that belongs to
    /// other filters; `since` together with a cursor. The message starts with the
    /// parameter's name.
    #[error("{0}")]
    Invalid(String),
    /// The cursor points at data retention has removed.
    #[error("{message}")]
    Expired {
        /// What happened, naming the oldest position.
        message: String,
        /// A cursor at the oldest commit still kept.
        oldest_cursor: String,
        /// That commit's version.
        oldest_version: u64,
        /// That commit's time, when known.
        oldest_time: Option<DateTime<Utc>>,
    },
    /// Reading failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// The event stream of one lake. Holds what it has read of the Delta log, so a
/// long-lived holder (the server) reads each commit once for its bookkeeping.
#[derive(Debug)]
pub struct EventStream {
    lake: Lake,
    key: CursorKey,
    log: tokio::sync::Mutex<LogState>,
}

impl EventStream {
    /// A stream over `lake`'s events whose cursors are signed with `key`.
    pub fn new(lake: Lake, key: CursorKey) -> EventStream {
        EventStream {
            lake,
            key,
            log: tokio::sync::Mutex::new(LogState::default()),
        }
    }

    /// Reads one page; with `wait`, waits up to that long for a new commit when the
    /// page would be empty at the end of the log (polling every 200 ms, so events
    /// ingested by any process show up within that).
    ///
    /// # Errors
    /// [`StreamError::Invalid`] for a bad cursor or `since`, [`StreamError::Expired`]
    /// for a cursor retention has passed, [`StreamError::Engine`] when reading fails.
    pub async fn page(
        &self,
        request: &StreamRequest,
        wait: Duration,
    ) -> std::result::Result<Page, StreamError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut request = request.clone();
        loop {
            let page = match self.page_once(&request).await {
                Ok(p) => p,
                Err(StreamError::Expired {
                    message,
                    oldest_cursor,
                    oldest_version,
                    ..
                }) => return Err(self.expired(message, oldest_cursor, oldest_version).await),
                Err(e) => return Err(e),
            };
            if page.records > 0 || !page.at_end || tokio::time::Instant::now() >= deadline {
                return Ok(page);
            }
            // Nothing new: continue from the returned cursor (which pins a start
            // given as `Oldest` / `Since` to a position).
            if !page.cursor.is_empty() {
                request.start = Start::Cursor(page.cursor.clone());
            }
            let nap = Duration::from_millis(200)
                .min(deadline.saturating_duration_since(tokio::time::Instant::now()));
            tokio::time::sleep(nap).await;
        }
    }

    /// The expiry error, its message naming the oldest position and its time.
    async fn expired(&self, what: String, oldest_cursor: String, floor: u64) -> StreamError {
        let store = self.lake.store().clone();
        let table_root = self.lake.table_root(Dataset::Events);
        let oldest_time = match self
            .log
            .lock()
            .await
            .commit_time(&store, &table_root, floor)
            .await
        {
            Ok(t) => t.and_then(|ms| Utc.timestamp_millis_opt(ms).single()),
            Err(e) => return e.into(),
        };
        StreamError::Expired {
            message: format!(
                "{what}; the oldest position still kept is commit {floor}{}: start again there (the events in between are in exports) or from no cursor",
                oldest_time
                    .map(|t| format!(
                        " ({})",
                        t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                    ))
                    .unwrap_or_default()
            ),
            oldest_cursor,
            oldest_version: floor,
            oldest_time,
        }
    }

    async fn page_once(&self, request: &StreamRequest) -> std::result::Result<Page, StreamError> {
        let store = self.lake.store().clone();
        let table_root = self.lake.table_root(Dataset::Events);
        let mut log = self.log.lock().await;
        log.refresh(&store, &table_root).await?;
        let Some(table_id) = log.table_id.clone() else {
            // No table yet: an empty page whose cursor starts at the beginning.
            return Ok(Page {
                body: Vec::new(),
                records: 0,
                cursor: String::new(),
                position: Position::default(),
                at_end: true,
                head: None,
            });
        };
        let table = cursor::table_tag(&table_id);
        let filters = cursor::filters_digest(&request.filters);
        let make_cursor = |position: Position| {
            Cursor {
                table,
                filters,
                position,
            }
            .encode(&self.key)
        };
        let next = log.next;
        let head = next.checked_sub(1);
        let floor = log.floor;
        let since = match &request.start {
            Start::Since(t) => Some(
                log.first_at_or_after(&store, &table_root, t.timestamp_millis())
                    .await?,
            ),
            _ => None,
        };
        // The rest reads files; other requests may use the log meanwhile.
        drop(log);
        let appended = |version: u64| {
            let (store, table_root) = (&store, &table_root);
            async move {
                self.log
                    .lock()
                    .await
                    .appended(store, table_root, version)
                    .await
            }
        };
        // Finished (with the oldest commit's time) by `page`.
        let expired = |what: String| StreamError::Expired {
            message: what,
            oldest_cursor: make_cursor(Position::at(floor)),
            oldest_version: floor,
            oldest_time: None,
        };
        let mut position = match &request.start {
            Start::Oldest => Position::at(floor),
            Start::Since(t) => {
                let first = since.unwrap_or(next);
                if first < floor {
                    return Err(expired(format!(
                        "since: {} falls at commit {first}, whose files a vacuum removed",
                        t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                    )));
                }
                Position::at(first)
            }
            Start::Cursor(text) => {
                let c = Cursor::decode(text, &self.key).map_err(StreamError::Invalid)?;
                if c.table != table {
                    return Err(expired(
                        "cursor: the cursor belongs to an events table that no longer exists (it was deleted and created again)".into(),
                    ));
                }
                if c.filters != filters {
                    return Err(StreamError::Invalid(
                        "cursor: the cursor was issued for other filters; send the same filters with it (or start without a cursor)".into(),
                    ));
                }
                if c.position.version > next {
                    return Err(StreamError::Invalid(
                        "cursor: it points past the end of the log (was the table restored to an older version?)".into(),
                    ));
                }
                if c.position.version < floor {
                    return Err(expired(format!(
                        "cursor: the cursor is at commit {}, whose files a vacuum removed",
                        c.position.version
                    )));
                }
                c.position
            }
        };

        let limit = request.limit.clamp(1, MAX_LIMIT);
        let reader = Arc::new(PageReader::new(request)?);
        let mut out = Vec::new();
        let mut bytes_out = 0usize;
        let mut records = 0usize;
        let mut scanned = 0u64;
        // Files are decoded, filtered, redacted and encoded by tasks running ahead
        // (on every core), and their pieces joined in log order. A task reads at
        // most what the page still needed when it started; the piece that reaches
        // the limit is cut at a record boundary, which it knows the row of.
        let mut running = Running::default();
        let mut ahead = position; // where the next task starts
        'page: loop {
            // Start another file only while the running ones cannot fill the page
            // (with no filter they fill it exactly, so no work is thrown away).
            while running.tasks.len() < READ_AHEAD
                && ahead.version < next
                && records + running.most < limit
            {
                let Some(files) = appended(ahead.version).await? else {
                    return Err(expired(format!(
                        "cursor: commit {} is no longer in the Delta log",
                        ahead.version
                    )));
                };
                let Some(file) = files.get(ahead.file as usize).cloned() else {
                    ahead = Position::at(ahead.version + 1);
                    continue;
                };
                if ahead.row >= file.rows {
                    ahead = Position {
                        version: ahead.version,
                        file: ahead.file + 1,
                        row: 0,
                    };
                    continue;
                }
                let want = limit - records;
                let (reader, store) = (reader.clone(), store.clone());
                let path = paths::in_store(&table_root, &file.relative);
                let row = ahead.row;
                let task_file = file.clone();
                let handle = tokio::spawn(async move {
                    reader.read_file(&store, path, &task_file, row, want).await
                });
                let most = want.min((file.rows - row) as usize);
                running.most += most;
                running.tasks.push_back((ahead, file, handle, most));
                ahead = Position {
                    version: ahead.version,
                    file: ahead.file + 1,
                    row: 0,
                };
            }
            let Some((at, file, handle, most)) = running.tasks.pop_front() else {
                break;
            };
            running.most -= most;
            let piece = match handle.await {
                Ok(Ok(p)) => p,
                Ok(Err(ReadError::Missing)) => {
                    return Err(expired(format!(
                        "cursor: data file {} of commit {} is gone (vacuumed)",
                        file.relative, at.version
                    )));
                }
                Ok(Err(ReadError::Engine(e))) => return Err(e.into()),
                Err(e) => return Err(EngineError::Io(std::io::Error::other(e)).into()),
            };
            scanned += piece.scanned;
            let need = limit - records;
            if need > 0 && piece.ends.len() >= need {
                let (end, row) = piece.ends[need - 1];
                let mut body = piece.body;
                body.truncate(end);
                out.push(bytes::Bytes::from(body));
                records += need;
                position = Position { row, ..at };
                break 'page;
            }
            bytes_out += piece.body.len();
            if !piece.body.is_empty() {
                out.push(bytes::Bytes::from(piece.body));
            }
            records += piece.ends.len();
            position = Position {
                row: piece.next_row,
                ..at
            };
            if piece.next_row < file.rows || bytes_out >= MAX_PAGE_BYTES || scanned >= MAX_SCAN_ROWS
            {
                // The file was not finished (a byte limit), or the page is full.
                break;
            }
        }
        running.abort();
        // Normalise: a position at the end of a file or commit moves to the next
        // one, so equal progress always gives the same cursor.
        loop {
            if position.version >= next {
                break;
            }
            let Some(files) = appended(position.version).await? else {
                break;
            };
            match files.get(position.file as usize) {
                None => position = Position::at(position.version + 1),
                Some(f) if position.row >= f.rows => {
                    position = Position {
                        version: position.version,
                        file: position.file + 1,
                        row: 0,
                    }
                }
                Some(_) => break,
            }
        }
        Ok(Page {
            body: out,
            records,
            cursor: make_cursor(position),
            position,
            at_end: position.version >= next,
            head,
        })
    }
}

/// Files decoded ahead of the one being joined (their records together are never
/// more than the page still needs).
const READ_AHEAD: usize = 16;

/// One file's records, encoded.
struct Piece {
    body: Vec<u8>,
    /// Each record's end in `body`, and the file row after it.
    ends: Vec<(usize, u64)>,
    /// The row after the last one consumed.
    next_row: u64,
    /// Rows read.
    scanned: u64,
}

type ReadTask = tokio::task::JoinHandle<std::result::Result<Piece, ReadError>>;

/// The read tasks of a page, in log order; aborted when the page ends early.
#[derive(Default)]
struct Running {
    /// Each task's start, file, and the most records it can return.
    tasks: std::collections::VecDeque<(Position, AppendedFile, ReadTask, usize)>,
    /// The sum of those.
    most: usize,
}

impl Running {
    fn abort(&mut self) {
        for (_, _, t, _) in self.tasks.drain(..) {
            t.abort();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.abort();
    }
}

enum ReadError {
    /// The file is gone.
    Missing,
    Engine(EngineError),
}

impl From<EngineError> for ReadError {
    fn from(e: EngineError) -> Self {
        ReadError::Engine(e)
    }
}

/// The filter and redacted projection of one page, compiled once.
struct PageReader {
    predicate: Option<Arc<dyn PhysicalExpr>>,
    projection: Vec<(String, Arc<dyn PhysicalExpr>)>,
    profile: Profile,
}

impl PageReader {
    fn new(request: &StreamRequest) -> Result<PageReader> {
        let ctx = SessionContext::new();
        let schema = Dataset::Events.file_schema();
        let df_schema = DFSchema::try_from(schema.as_ref().clone())?;
        let predicate = request
            .filters
            .event_predicate()
            .map(|e| ctx.create_physical_expr(e, &df_schema))
            .transpose()?;
        let columns: Vec<&str> = Dataset::Events
            .columns()
            .iter()
            .map(|c| c.name)
            .filter(|n| request.include_payloads || !matches!(*n, "input" | "output"))
            .collect();
        let projection = redacted_projection(&request.redactor, Dataset::Events, &columns)
            .into_iter()
            .zip(&columns)
            .map(|(e, name)| Ok((name.to_string(), ctx.create_physical_expr(e, &df_schema)?)))
            .collect::<Result<_>>()?;
        Ok(PageReader {
            predicate,
            projection,
            profile: request.profile,
        })
    }

    /// Reads `file` from row `row`: up to `want` records that pass the filters,
    /// encoded, with each record's end in the body and the row after it.
    #[allow(
        deprecated,
        reason = "ParquetObjectReader is the object_store adapter this parquet release ships; its replacement is a hand-written AsyncFileReader"
    )]
    async fn read_file(
        &self,
        store: &Arc<dyn object_store::ObjectStore>,
        path: object_store::path::Path,
        file: &AppendedFile,
        row: u64,
        want: usize,
    ) -> std::result::Result<Piece, ReadError> {
        let mut reader = ParquetObjectReader::new(store.clone(), path);
        if let Some(size) = file.size {
            reader = reader.with_file_size(size);
        }
        let builder = match ParquetRecordBatchStreamBuilder::new(reader).await {
            Ok(b) => b,
            Err(e) if is_not_found(&e) => return Err(ReadError::Missing),
            Err(e) => return Err(EngineError::from(e).into()),
        };
        // Enough rows per batch for the records still wanted, so an unfiltered
        // page decodes little more than it returns.
        let batch_rows = want.clamp(64, 8192);
        let mut stream = builder
            .with_batch_size(batch_rows)
            .with_offset(row as usize)
            .build()
            .map_err(EngineError::from)?;
        let mut piece = Piece {
            body: Vec::new(),
            ends: Vec::new(),
            next_row: row,
            scanned: 0,
        };
        let mut encoder: Option<Box<dyn Encoder>> = None;
        // A piece stops after MAX_PAGE_BYTES / 4 (the page then ends with it), so
        // the pieces in flight hold at most READ_AHEAD of those.
        while piece.ends.len() < want && piece.body.len() < MAX_PAGE_BYTES / 4 {
            let batch = match stream.try_next().await {
                Ok(Some(b)) => b,
                Ok(None) => break,
                Err(e) if is_not_found(&e) => return Err(ReadError::Missing),
                Err(e) => return Err(EngineError::from(e).into()),
            };
            let n = batch.num_rows();
            piece.scanned += n as u64;
            let still = want - piece.ends.len();
            // Rows (within the batch) that pass the filters, at most `still`.
            let passing: Vec<usize> = match &self.predicate {
                None => (0..n.min(still)).collect(),
                Some(p) => {
                    let mask = p
                        .evaluate(&batch)
                        .and_then(|v| v.into_array(n))
                        .map_err(EngineError::from)?;
                    let mask = mask
                        .as_any()
                        .downcast_ref::<BooleanArray>()
                        .ok_or_else(|| EngineError::invalid("filter did not give booleans"))?;
                    let mask = if mask.null_count() > 0 {
                        prep_null_mask_filter(mask)
                    } else {
                        mask.clone()
                    };
                    mask.values().set_indices().take(still).collect()
                }
            };
            // The batch is consumed up to the last row taken when the page is full,
            // else entirely.
            let consumed = if passing.len() == still {
                passing.last().map_or(n, |i| i + 1)
            } else {
                n
            };
            let base = piece.next_row;
            piece.next_row += consumed as u64;
            if !passing.is_empty() {
                let selected = if passing.len() == n {
                    batch
                } else {
                    let idx = deltalake::arrow::array::UInt32Array::from_iter_values(
                        passing.iter().map(|i| *i as u32),
                    );
                    deltalake::arrow::compute::take_record_batch(&batch, &idx)
                        .map_err(EngineError::from)?
                };
                let projected = self.project(&selected)?;
                let enc = match &mut encoder {
                    Some(e) => e,
                    None => encoder.insert(encoder_for_stream(
                        self.profile,
                        projected.schema(),
                        JsonLayout::Lines,
                    )),
                };
                let encoded = EncodedBatch::new(projected)?;
                for (k, raw) in passing.iter().enumerate() {
                    enc.rows(&encoded, k..k + 1, &mut piece.body)?;
                    piece.ends.push((piece.body.len(), base + *raw as u64 + 1));
                }
            }
            if consumed < n {
                break;
            }
        }
        Ok(piece)
    }

    fn project(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let mut fields = Vec::with_capacity(self.projection.len());
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(self.projection.len());
        for (name, expr) in &self.projection {
            let array = expr
                .evaluate(batch)
                .and_then(|v| v.into_array(batch.num_rows()))?;
            // The redaction function marks JSON columns in its return field's
            // metadata; the encoders nest them by that mark.
            let metadata = expr
                .return_field(batch.schema_ref())
                .map(|f| f.metadata().clone())
                .unwrap_or_default();
            fields.push(Field::new(name, array.data_type().clone(), true).with_metadata(metadata));
            arrays.push(array);
        }
        Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?)
    }
}

fn is_not_found(e: &deltalake::parquet::errors::ParquetError) -> bool {
    match e {
        deltalake::parquet::errors::ParquetError::External(inner) => inner
            .downcast_ref::<object_store::Error>()
            .is_some_and(|e| matches!(e, object_store::Error::NotFound { .. })),
        _ => false,
    }
}
