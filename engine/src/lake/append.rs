//! Appends: validated rows become sorted Parquet files committed to a dataset's Delta
//! table in one transaction, with re-sent records dropped (see [`Lake::append`]).
//!
//! Each dataset keeps its append state between calls: the Delta table state it last
//! read or committed ([`AppendState`]). When this process is the table's only writer,
//! the next commit then needs no log replay and no listing of the table's files — a
//! full load replays the last checkpoint and every commit since (measured: with one
//! client, log replay and its JSON parsing were a quarter of an ingest's CPU). The
//! commit itself proves the state is current: Delta commits are put-if-absent, so a
//! commit at version V + 1 fails when another writer got there first, and the state
//! is then loaded again and the duplicate check repeated.
//!
//! The state's file list is not advanced by each of our own commits: deltalake's
//! post-commit update replays every file of the table through the log replay to add
//! one commit's files (measured: ~20 ms of CPU per commit on a table of 5,465 files,
//! linear in files). An append needs only the version and the table's protocol and
//! configuration (the key index answers for the files), so our commits are written
//! straight to the log and the file list is brought up to date only when something
//! reads it: the commit that writes a checkpoint (every `delta.checkpointInterval`
//! commits), a compaction, a lake without a key index.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use chrono::NaiveDate;
use deltalake::DeltaTable;
use deltalake::arrow::array::RecordBatch;
use deltalake::kernel::transaction::{CommitBuilder, CommitData, CommitProperties, PROTOCOL};
use deltalake::kernel::{Action, Add};
use deltalake::logstore::{CommitOrBytes, LogStoreRef};
use deltalake::parquet::arrow::AsyncArrowWriter;
use deltalake::parquet::basic::Compression;
use deltalake::parquet::file::metadata::SortingColumn;
use deltalake::parquet::file::properties::{EnabledStatistics, WriterProperties};
use deltalake::parquet::schema::types::ColumnPath;
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::table::config::TablePropertiesExt as _;
use deltalake::table::state::DeltaTableState;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use object_store::buffered::BufWriter;
use serde_json::{Value, json};

use super::{
    AppendOutcome, Lake, PendingIndexUpdate, ROW_GROUP_ROWS, TAG_CLUSTER, TAG_COUNTS, TAG_MAX,
    TAG_MIN, dataset_slot, paths, scalar_json,
};
use crate::error::{EngineError, Result};
use crate::model::{DATE_PARTITION, Dataset};
use crate::rows::{Row, rows_to_batch, sort_rows, utc_date};

/// What appends to one dataset keep between calls, under the dataset's append lock.
pub(super) struct AppendState {
    /// The table's log store.
    pub(super) log_store: LogStoreRef,
    /// The Delta state last read, with its file list: at `version`, or behind it by
    /// commits of this process (see [`AppendState::table`]).
    table: DeltaTableState,
    /// The table's latest version as this process knows it: that of `table` or of
    /// this process's own later commits.
    pub(super) version: u64,
    /// The version whose files the key index has all read, once its pending update
    /// is flushed (`None`: unknown, the next append catches up).
    pub(super) indexed: Option<u64>,
    /// The latest commit file's ETag, modification time and size when last looked
    /// at (`None` right after our own commit).
    pub(super) seen: Option<(Option<String>, i64, u64)>,
}

impl AppendState {
    /// The state of a table just loaded: the key index's progress unknown (the next
    /// append catches it up).
    pub(super) fn loaded(table: &DeltaTable) -> Result<AppendState> {
        let state = table.snapshot()?.clone();
        Ok(AppendState {
            log_store: table.log_store(),
            version: state.version(),
            table: state,
            indexed: None,
            seen: None,
        })
    }

    /// The Delta state at `version`, with every file: replays the log from the state's
    /// own version first when this process has committed since (one pass over the
    /// table's files).
    ///
    /// # Errors
    /// The log store's, reading the commits.
    pub(super) async fn table(
        &mut self,
    ) -> std::result::Result<&DeltaTableState, deltalake::DeltaTableError> {
        if self.table.version() < self.version {
            self.table
                .update(self.log_store.as_ref(), Some(self.version))
                .await?;
        }
        Ok(&self.table)
    }

    /// Takes the state of a commit this process just made, which came with its file
    /// list.
    pub(super) fn committed(&mut self, table: DeltaTableState) {
        self.version = table.version();
        self.table = table;
        self.seen = None;
    }

    /// Commits an append's `actions` as version `self.version + 1` (put-if-absent:
    /// [`deltalake::kernel::transaction::TransactionError::VersionAlreadyExists`] when
    /// another writer got there first) and returns that version.
    ///
    /// Most commits are written straight to the log after deltalake's protocol check
    /// (`PROTOCOL.can_commit`), with the commit information deltalake's own commits
    /// carry (`CommitData`), and leave the state's file list behind (see the module
    /// docs). The commit that completes a `delta.checkpointInterval` goes through
    /// deltalake's `CommitBuilder` instead, which writes the checkpoint and removes log
    /// entries older than `delta.logRetentionDuration` (Delta protocol, "Checkpoints"
    /// and "Metadata Cleanup"); so do all commits to a log store other than
    /// deltalake's default one (put-if-absent stores: local, S3), whose commit
    /// protocol is the crate's to follow.
    ///
    /// # Errors
    /// deltalake's: the protocol check, the write, a lost race.
    async fn commit(
        &mut self,
        actions: Vec<Action>,
    ) -> std::result::Result<u64, deltalake::DeltaTableError> {
        let version = self.version + 1;
        let config = self.table.table_config();
        let checkpoint_due = (version + 1).is_multiple_of(config.checkpoint_interval().get());
        let cleanup = checkpoint_due && config.enable_expired_log_cleanup();
        let operation = DeltaOperation::Write {
            mode: SaveMode::Append,
            partition_by: Some(vec![DATE_PARTITION.to_string()]),
            predicate: None,
        };
        let metadata = [("isBlindAppend".to_string(), json!(true))];
        if !checkpoint_due && self.log_store.name() == "DefaultLogStore" {
            PROTOCOL.can_commit(&self.table, &actions, &operation)?;
            let data = CommitData::new(actions, operation, metadata.into(), Vec::new());
            let bytes = data.get_bytes()?;
            self.log_store
                .write_commit_entry(
                    version,
                    CommitOrBytes::LogBytes(bytes),
                    uuid::Uuid::new_v4(),
                )
                .await?;
            self.version = version;
            self.seen = None;
            return Ok(version);
        }
        // Expired log entries are cleaned up when a checkpoint is written, as the
        // Delta protocol describes (`delta.logRetentionDuration`); deltalake would
        // otherwise list the whole `_delta_log` after every commit.
        let props = CommitProperties::default()
            .with_max_retries(0)
            .with_cleanup_expired_logs(Some(cleanup))
            .with_metadata(metadata);
        let log_store = self.log_store.clone();
        let commit = CommitBuilder::from(props)
            .with_actions(actions)
            .build(Some(self.table().await?), log_store, operation)
            .await?;
        self.committed(commit.snapshot);
        Ok(commit.version)
    }
}

impl std::fmt::Debug for AppendState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppendState")
            .field("version", &self.version)
            .field("files_at", &self.table.version())
            .field("indexed", &self.indexed)
            .finish()
    }
}

impl Lake {
    /// Stores validated rows: drops rows whose key is already stored (retries, whatever
    /// their timestamp: the first stored copy wins) or repeated in `rows` (the first
    /// occurrence wins), writes one sorted file per date, and commits them in one
    /// atomic Delta transaction.
    ///
    /// Exactly once across processes: the duplicate check reads table version V and
    /// the commit must be version V + 1 (Delta's optimistic concurrency with no
    /// automatic retry; the commit file is created only if absent). When another
    /// process committed first, the check runs again against the new version (its
    /// files' keys are read) and, if that finds rows the other process stored, the
    /// files are written again without them; at most [`APPEND_ATTEMPTS`] times.
    pub async fn append(&self, dataset: Dataset, rows: Vec<Row>) -> Result<AppendOutcome> {
        if rows.is_empty() {
            return Ok(AppendOutcome::default());
        }
        let mut state = self.append_states[dataset_slot(dataset)].lock().await;
        let rows = Arc::new(rows);
        let total = rows.len();
        let time_idx = dataset
            .column_index(dataset.time_column())
            .expect("time column");
        let cluster_idx = dataset
            .cluster_column()
            .and_then(|c| dataset.column_index(c));
        let keys: Vec<String> = rows.iter().map(|r| r.key(dataset)).collect();
        // Keys repeated in the input.
        let mut repeated = vec![false; total];
        {
            let mut seen = HashSet::with_capacity(total);
            for (i, k) in keys.iter().enumerate() {
                if !seen.insert(k.as_str()) {
                    repeated[i] = true;
                }
            }
        }
        let keys = Arc::new(keys);
        // Files written for a given set of skipped rows, kept across attempts.
        let mut written: Option<(Vec<bool>, Vec<Action>, usize)> = None;
        let mut written_at = self.clock.now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            if let Some(s) = state.as_mut()
                && !self.is_latest(dataset, s).await?
            {
                *state = None;
            }
            if state.is_none() {
                let table = self.load_or_create(dataset).await?;
                *state = Some(AppendState::loaded(&table)?);
            }
            let current = state.as_mut().expect("loaded above");
            let version = current.version;
            // A commit reported as lost may have landed (a store that retried a
            // conditional PUT whose first try succeeded answers "already exists"):
            // if the table names our files, it did, and they must stay. (After a lost
            // commit the state was just loaded again.)
            if let Some((skipped, actions, count)) = &written {
                let snapshot = self.files_of(dataset, current.table().await?)?;
                if actions.iter().any(|a| {
                    matches!(a, Action::Add(add)
                        if snapshot.files.iter().any(|f| f.relative == add.path))
                }) {
                    let duplicate_rows: Vec<usize> = (0..total).filter(|&i| skipped[i]).collect();
                    return Ok(AppendOutcome {
                        written: *count,
                        duplicates: total - count,
                        duplicate_rows,
                        version: Some(version),
                    });
                }
            }
            let index = self.id_index()?;
            // The keys of our last commit while its index update still runs: looked up
            // there instead of waiting for it (that wait was up to half of an append's
            // serial time with 16 clients). Only when the index has read every other
            // file of this version.
            let mut pending = None;
            match &index {
                Some(index) => {
                    if current.indexed == Some(version) {
                        pending = self.pending_keys(dataset).await;
                    }
                    if pending.is_none() {
                        self.flush_index_of(dataset, Some(&mut *current)).await?;
                    }
                    // Only files of versions this process did not commit need reading.
                    if current.indexed != Some(version) {
                        let snapshot = self.files_of(dataset, current.table().await?)?;
                        self.catch_up(index, &snapshot).await?;
                        current.indexed = Some(version);
                    }
                }
                None => current.indexed = None,
            }
            let mut skip = repeated.clone();
            match &index {
                Some(index) => {
                    // Off the async runtime: a batch is tens of thousands of lookups.
                    let (index, keys) = (index.clone(), keys.clone());
                    let found = tokio::task::spawn_blocking(move || {
                        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
                        let pending = pending.as_deref().map_or(&[][..], Vec::as_slice);
                        index.contains_many(dataset, &refs, pending)
                    })
                    .await
                    .map_err(|e| EngineError::Io(std::io::Error::other(e)))?;
                    for (s, f) in skip.iter_mut().zip(found?) {
                        *s |= f;
                    }
                }
                None => {
                    let files = self.files_of(dataset, current.table().await?)?.files;
                    if !files.is_empty() {
                        let stored = self.stored_keys(dataset, files).await?;
                        for (i, k) in keys.iter().enumerate() {
                            if stored.contains(k) {
                                skip[i] = true;
                            }
                        }
                    }
                }
            }
            if let Some((before, actions, _)) = &written
                && *before != skip
            {
                // Another process stored some of these rows meanwhile: the files
                // written for the last attempt hold them; write new ones.
                self.delete_added(dataset, actions).await;
                written = None;
            }
            if written.is_none() {
                // Rows by file: the date partition and the cluster value (events: the
                // decision).
                let mut by_date: BTreeMap<(NaiveDate, Option<&str>), Vec<u32>> = BTreeMap::new();
                for (i, (row, skip)) in rows.iter().zip(&skip).enumerate() {
                    if *skip {
                        continue;
                    }
                    let date = utc_date(row.ts(time_idx).expect("validated rows have a time"));
                    let cluster = cluster_idx.and_then(|i| row.str(i));
                    by_date.entry((date, cluster)).or_default().push(i as u32);
                }
                // One task per file, so a commit's files are sorted, converted and
                // encoded on every core (that is most of an append's own CPU time).
                let mut tasks = Vec::with_capacity(by_date.len());
                let mut count = 0;
                for ((date, cluster), picked) in by_date {
                    count += picked.len();
                    let cluster = cluster.map(str::to_string);
                    let (lake, rows) = (self.clone(), rows.clone());
                    tasks.push(tokio::spawn(async move {
                        let mut refs: Vec<&Row> =
                            picked.iter().map(|&i| &rows[i as usize]).collect();
                        sort_rows(dataset, &mut refs);
                        let batch = rows_to_batch(dataset, &refs);
                        drop(refs);
                        lake.write_file(
                            dataset,
                            date,
                            cluster.as_deref(),
                            futures::stream::iter([Ok(batch)]),
                        )
                        .await
                    }));
                }
                let mut actions = Vec::with_capacity(tasks.len());
                let mut failed = None;
                for task in tasks {
                    match task.await {
                        Ok(Ok(add)) => actions.push(Action::Add(add)),
                        Ok(Err(e)) => failed = failed.or(Some(e)),
                        Err(e) => {
                            failed = failed.or(Some(EngineError::Io(std::io::Error::other(e))))
                        }
                    }
                }
                if let Some(e) = failed {
                    // Files of the tasks that succeeded are orphans; remove them.
                    self.delete_added(dataset, &actions).await;
                    return Err(e);
                }
                written = Some((skip.clone(), actions, count));
                written_at = self.clock.now();
            }
            // Files older than the window may be taken by an orphan sweep
            // (`sweep_orphans`, which waits twice as long): write them again.
            if self.clock.now() - written_at > APPEND_COMMIT_WINDOW
                && let Some((_, actions, _)) = written.take()
            {
                tracing::warn!(
                    "an append's files waited too long for their commit; writing them again"
                );
                self.delete_added(dataset, &actions).await;
                continue;
            }
            let (_, actions, count) = written.as_ref().expect("written above");
            let duplicate_rows: Vec<usize> = (0..total).filter(|&i| skip[i]).collect();
            if actions.is_empty() {
                return Ok(AppendOutcome {
                    written: 0,
                    duplicates: total,
                    duplicate_rows,
                    version: None,
                });
            }
            fail::fail_point!("lake.before_commit");
            let committed = current.commit(actions.clone()).await;
            let committed_version = match committed {
                Ok(v) => v,
                Err(e) if is_commit_race(&e) && attempt < APPEND_ATTEMPTS => {
                    tracing::debug!(attempt, "another commit came first; checking again");
                    *state = None;
                    continue;
                }
                // The commit may have landed (a timeout after the write): its files
                // stay; if it did not, they are orphans no commit names.
                Err(e) => {
                    *state = None;
                    return Err(e.into());
                }
            };
            // The commit's files are this process's own: once the index update below
            // is recorded, the index has read every file of the new version.
            current.indexed = current
                .indexed
                .filter(|_| index.is_some())
                .map(|_| committed_version);
            fail::fail_point!("lake.after_commit");
            let count = *count;
            if let Some(index) = index {
                // The update of the commit before, if the lookups above did not wait
                // for it, ends before this one starts. Had it failed, the index lacks
                // that commit's keys (the lookups above found them in its own list):
                // the next append reads the files the index has not recorded.
                if let Err(e) = self.flush_index_of(dataset, Some(&mut *current)).await {
                    tracing::warn!(
                        table = dataset.table_name(),
                        error = %e,
                        "a key index update failed; the next append reads the files it missed"
                    );
                }
                // Recorded while the caller answers and gathers its next batch, and
                // while the next append looks up its keys (in this list too). A crash
                // before it ends loses nothing: the next catch-up reads the files
                // this commit added.
                let mut stored: Vec<String> = keys
                    .iter()
                    .zip(&skip)
                    .filter(|(_, s)| !**s)
                    .map(|(k, _)| k.clone())
                    .collect();
                stored.sort_unstable();
                let stored = Arc::new(stored);
                let added: Vec<String> = actions
                    .iter()
                    .filter_map(|a| match a {
                        Action::Add(add) => Some(add.path.clone()),
                        _ => None,
                    })
                    .collect();
                let keys = stored.clone();
                let task = tokio::task::spawn_blocking(move || {
                    // Crash tests: a slow (`sleep`) or failed (`return`) index update.
                    fail::fail_point!("lake.before_index_record");
                    fail::fail_point!("lake.index_record", |_| Err(EngineError::Io(
                        std::io::Error::other("failpoint lake.index_record")
                    )));
                    let added: Vec<&str> = added.iter().map(String::as_str).collect();
                    index.record(dataset, stored.iter().map(String::as_str), &added, &[])
                });
                *self.pending_index[dataset_slot(dataset)].lock().await =
                    Some(PendingIndexUpdate { task, keys });
            }
            return Ok(AppendOutcome {
                written: count,
                duplicates: total - count,
                duplicate_rows,
                version: Some(committed_version),
            });
        }
    }

    /// Deletes data files an append wrote but did not commit (best effort: an
    /// orphan file is never read, as no commit names it).
    async fn delete_added(&self, dataset: Dataset, actions: &[Action]) {
        for a in actions {
            if let Action::Add(add) = a {
                let path = paths::in_store(&self.table_root(dataset), &add.path);
                let _ = self.store.delete(&path).await;
            }
        }
    }

    /// Whether `state` still describes the table: its latest commit file is there
    /// and unchanged. Catches a table removed or replaced under a running process,
    /// which a put-if-absent commit at the next version would not (it would start a
    /// log with a gap). One HEAD request.
    pub(super) async fn is_latest(
        &self,
        dataset: Dataset,
        state: &mut AppendState,
    ) -> Result<bool> {
        let commit_file = paths::in_store(
            &self.table_root(dataset),
            &format!("_delta_log/{:020}.json", state.version),
        );
        let meta = match self.store.head(&commit_file).await {
            Ok(m) => m,
            Err(object_store::Error::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        let id = (meta.e_tag, meta.last_modified.timestamp_millis(), meta.size);
        match &state.seen {
            Some(seen) if *seen != id => Ok(false),
            _ => {
                state.seen = Some(id);
                Ok(true)
            }
        }
    }

    /// Writes one date's rows, already sorted by (time, key), as one Parquet file and
    /// returns its `add` action.
    pub(super) async fn write_file(
        &self,
        dataset: Dataset,
        date: NaiveDate,
        cluster: Option<&str>,
        batches: impl futures::Stream<Item = Result<RecordBatch>> + Unpin,
    ) -> Result<Add> {
        // Crash tests: a full disk before anything is written (`return`).
        fail::fail_point!("lake.write_file", |_| Err(EngineError::Io(
            std::io::Error::from_raw_os_error(libc::ENOSPC)
        )));
        let relative = paths::new_data_file(date);
        let path = paths::in_store(&self.table_root(dataset), &relative);
        let writer = BufWriter::with_capacity(self.store.clone(), path.clone(), 8 << 20);
        let mut parquet = AsyncArrowWriter::try_new(
            writer,
            dataset.file_schema(),
            Some(writer_properties(dataset)),
        )?;
        let mut rows = 0usize;
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        let mut first: Option<Vec<Value>> = None;
        let mut last: Option<Vec<Value>> = None;
        let mut batches = batches;
        while let Some(batch) = batches.try_next().await? {
            if batch.num_rows() == 0 {
                continue;
            }
            if first.is_none() {
                first = Some(sort_key_json(dataset, &batch, 0));
            }
            last = Some(sort_key_json(dataset, &batch, batch.num_rows() - 1));
            if let Some(name) = dataset.counted_column() {
                count_values(&batch, name, &mut counts);
            }
            rows += batch.num_rows();
            parquet.write(&batch).await?;
        }
        parquet.close().await?;
        fail::fail_point!("lake.after_parquet_write");
        let size = self.store.head(&path).await?.size;
        let mut tags = HashMap::new();
        if let Some(c) = cluster {
            tags.insert(TAG_CLUSTER.to_string(), Some(c.to_string()));
        }
        if dataset.counted_column().is_some() {
            tags.insert(TAG_COUNTS.to_string(), Some(json!(counts).to_string()));
        }
        if let (Some(first), Some(last)) = (first, last) {
            tags.insert(TAG_MIN.to_string(), Some(Value::Array(first).to_string()));
            tags.insert(TAG_MAX.to_string(), Some(Value::Array(last).to_string()));
        }
        Ok(Add {
            path: relative,
            partition_values: HashMap::from([(
                DATE_PARTITION.to_string(),
                Some(date.format("%Y-%m-%d").to_string()),
            )]),
            size: size as i64,
            modification_time: self.clock.now().timestamp_millis(),
            data_change: true,
            stats: Some(json!({ "numRecords": rows }).to_string()),
            tags: Some(tags),
            deletion_vector: None,
            base_row_id: None,
            default_row_commit_version: None,
            clustering_provider: None,
        })
    }
}

/// How many times an append checks and commits again when other commits come
/// first.
pub const APPEND_ATTEMPTS: usize = 100;

/// The longest an append lets its written files wait for their commit (a process
/// paused meanwhile, say); older ones are written again, so an orphan sweep
/// ([`Lake::sweep_orphans`], at least [`MIN_ORPHAN_AGE`]) never deletes
/// files a commit is about to name.
pub const APPEND_COMMIT_WINDOW: chrono::Duration = chrono::Duration::hours(1);

/// Whether a commit failed because another commit took its version.
fn is_commit_race(e: &deltalake::DeltaTableError) -> bool {
    use deltalake::kernel::transaction::TransactionError;
    matches!(
        e,
        deltalake::DeltaTableError::VersionAlreadyExists(_)
            | deltalake::DeltaTableError::Transaction {
                source: TransactionError::MaxCommitAttempts(_)
                    | TransactionError::VersionAlreadyExists(_)
            }
    )
}

/// Adds the per-value row counts of a string column of `batch` to `counts`.
fn count_values(batch: &RecordBatch, column: &str, counts: &mut BTreeMap<String, u64>) {
    let Some(col) = batch.column_by_name(column) else {
        return;
    };
    for i in 0..col.len() {
        if let Value::String(v) = scalar_json(col.as_ref(), i) {
            *counts.entry(v).or_default() += 1;
        }
    }
}

/// The (time, key...) sort key of row `i` as JSON values.
fn sort_key_json(dataset: Dataset, batch: &RecordBatch, i: usize) -> Vec<Value> {
    let mut out = Vec::new();
    let names = std::iter::once(dataset.time_column()).chain(dataset.key_columns().iter().copied());
    for name in names {
        let col = batch.column_by_name(name).expect("sort column");
        out.push(scalar_json(col.as_ref(), i));
    }
    out
}

fn writer_properties(dataset: Dataset) -> WriterProperties {
    let time_idx = dataset
        .column_index(dataset.time_column())
        .expect("time column") as i32;
    let mut sorting = vec![SortingColumn {
        column_idx: time_idx,
        descending: false,
        nulls_first: false,
    }];
    for k in dataset.key_columns() {
        sorting.push(SortingColumn {
            column_idx: dataset.column_index(k).expect("key column") as i32,
            descending: false,
            nulls_first: false,
        });
    }
    let mut props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_sorting_columns(Some(sorting));
    // Keys are unique: a dictionary of them is as large as the values and building it
    // hashes every one (the dictionary interner was about 1 % of an ingest's samples
    // with ids in it, half that without). Plain encoding instead.
    for k in dataset.key_columns() {
        props = props.set_column_dictionary_enabled(ColumnPath::from(*k), false);
    }
    props.build()
}
