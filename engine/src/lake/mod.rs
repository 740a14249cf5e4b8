//! The event lake: one Delta table per dataset under the data URL, partitioned by the
//! UTC date of each record's time column.
//!
//! The lake writes its own Parquet files and commits them to the Delta log, because it
//! keeps one layout invariant the generic writer cannot: **every data file holds one
//! date and is sorted by (time column, key columns)**. Exports rely on it to stream in
//! order without a global sort (see `table.rs`). Each file's first and last sort key
//! is kept in the Delta `tags` of its `add` action.

mod compact;
pub mod id_index;
pub mod paths;
pub mod table;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use chrono::NaiveDate;
use deltalake::arrow::array::{Array, AsArray, RecordBatch};
use deltalake::arrow::compute::{SortColumn, lexsort_to_indices, take_record_batch};
use deltalake::arrow::datatypes::{DataType, Int64Type, TimestampMicrosecondType};
use deltalake::datafusion::execution::object_store::ObjectStoreUrl;
use deltalake::datafusion::prelude::SessionContext;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Add, StructField};
use deltalake::parquet::arrow::AsyncArrowWriter;
use deltalake::parquet::basic::Compression;
use deltalake::parquet::file::metadata::SortingColumn;
use deltalake::parquet::file::properties::{EnabledStatistics, WriterProperties};
use deltalake::parquet::schema::types::ColumnPath;
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::{DeltaTable, DeltaTableBuilder, TableProperty};
use futures::TryStreamExt;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use serde_json::{Value, json};
use url::Url;

use crate::clock::Clock;
use crate::error::{EngineError, Result};
use crate::model::{ColumnKind, DATE_PARTITION, Dataset};
use crate::rows::{Row, rows_to_batch, sort_rows, utc_date};

pub use compact::{CompactOutcome, MIN_ORPHAN_AGE, SweepOutcome, VacuumOutcome};
pub use id_index::IdIndex;
pub use table::LakeTable;

/// Delta `add` tags evidex writes on each data file.
const TAG_MIN: &str = "evidex.min";
const TAG_MAX: &str = "evidex.max";
const TAG_CLUSTER: &str = "evidex.cluster";
const TAG_COUNTS: &str = "evidex.counts";

/// Rows per Parquet row group: small enough that one open file decodes in a few
/// tens of MB, large enough that narrow columns compress well.
pub const ROW_GROUP_ROWS: usize = 16 * 1024;

/// How to reach the data.
#[derive(Debug, Clone, Default)]
pub struct LakeOptions {
    /// `s3://bucket/prefix`, `file:///abs/dir`, or a local path.
    pub data_url: String,
    /// Object store options (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, ...), passed
    /// through to object_store and deltalake.
    pub storage_options: HashMap<String, String>,
    /// Local folder of the key index that finds re-sent records (see
    /// [`id_index`]); `None` reads the stored keys of every file on each append
    /// instead (exact, but its cost grows with the lake).
    pub index_dir: Option<PathBuf>,
}

/// A data file of a table version, as the read path needs it.
#[derive(Debug, Clone)]
pub struct DataFile {
    /// Path inside the object store.
    pub path: Path,
    /// Path relative to the table root, as written in the Delta log.
    pub relative: String,
    /// The UTC date partition.
    pub date: NaiveDate,
    /// Size in bytes.
    pub size: u64,
    /// Number of rows.
    pub rows: u64,
    /// First and last sort key (time, key columns) of the file, as JSON arrays.
    pub bounds: Option<(Vec<Value>, Vec<Value>)>,
    /// The value of the dataset's cluster column shared by every row of the file.
    pub cluster: Option<String>,
    /// Rows per value of the dataset's counted column.
    pub counts: Option<BTreeMap<String, u64>>,
}

/// The files of one table version.
#[derive(Debug, Clone)]
pub struct TableSnapshot {
    /// Which dataset.
    pub dataset: Dataset,
    /// Delta version read; `None` when the table does not exist yet (no data).
    pub version: Option<u64>,
    /// Active data files, ordered by date then first key.
    pub files: Vec<DataFile>,
    /// The Delta table's identity (`metaData.id`, a UUID set when it was created).
    pub table_id: Option<String>,
}

impl TableSnapshot {
    /// Files whose date lies in `[first, last]`.
    pub fn files_between(&self, first: NaiveDate, last: NaiveDate) -> Vec<DataFile> {
        self.files
            .iter()
            .filter(|f| f.date >= first && f.date <= last)
            .cloned()
            .collect()
    }
}

/// What an append stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Rows written.
    pub written: usize,
    /// Rows skipped because their key was already stored or repeated in the input.
    pub duplicates: usize,
    /// Positions (in the input) of the skipped rows, ascending.
    pub duplicate_rows: Vec<usize>,
    /// Delta version committed, if anything was written.
    pub version: Option<u64>,
}

/// The key index once opened, or when an attempt found it held by another process.
type IndexSlot = std::result::Result<Arc<IdIndex>, std::time::Instant>;

/// A commit's key index update running in the background.
type PendingIndexUpdate = tokio::task::JoinHandle<Result<()>>;

/// The event lake.
#[derive(Debug, Clone)]
pub struct Lake {
    root: Url,
    store: Arc<dyn ObjectStore>,
    store_url: ObjectStoreUrl,
    root_path: Path,
    storage_options: HashMap<String, String>,
    clock: Arc<dyn Clock>,
    index_dir: Option<PathBuf>,
    /// The key index once opened, or when the last attempt found it held by
    /// another process (tried again a minute later).
    index: Arc<std::sync::Mutex<Option<IndexSlot>>>,
    /// Serialises this process's appends per dataset: the duplicate check and the
    /// commit that follows it must not interleave with another append's.
    append_locks: Arc<[tokio::sync::Mutex<()>; 3]>,
    /// The key index update of the last commit, which runs while the caller answers
    /// and gathers the next batch; the next append (or compaction) waits for it.
    pending_index: Arc<[tokio::sync::Mutex<Option<PendingIndexUpdate>>; 3]>,
}

impl Lake {
    /// Opens the lake at `options.data_url`; a local directory is created if missing.
    pub fn open(options: &LakeOptions, clock: Arc<dyn Clock>) -> Result<Lake> {
        let root = data_url_to_url(&options.data_url)?;
        let (store, root_path) = object_store::parse_url_opts(&root, &options.storage_options)
            .map_err(|e| EngineError::Config(format!("data URL {root}: {e}")))?;
        let store_url = ObjectStoreUrl::parse(format!(
            "{}://{}",
            root.scheme(),
            root.host_str().unwrap_or("")
        ))
        .map_err(|e| EngineError::Config(format!("data URL {root}: {e}")))?;
        Ok(Lake {
            root,
            store: Arc::from(store),
            store_url,
            root_path,
            storage_options: options.storage_options.clone(),
            clock,
            index_dir: options.index_dir.clone(),
            index: Arc::default(),
            append_locks: Arc::new(Default::default()),
            pending_index: Arc::new(Default::default()),
        })
    }

    /// The data root URL (ends with `/`).
    pub fn root(&self) -> &Url {
        &self.root
    }

    /// The clock the lake stamps files and commits with.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The object store URL to register with DataFusion.
    pub fn store_url(&self) -> &ObjectStoreUrl {
        &self.store_url
    }

    /// Where evidex keeps facts about the lake shared by every node that uses it
    /// (`_evidex/NAME` under the data root; `name` is one of evidex's constants).
    pub fn control_path(&self, name: &'static str) -> Path {
        paths::in_store(&self.root_path, &format!("_evidex/{name}"))
    }

    /// The object store holding the data root.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// A data file's full location (`file:///...` or `s3://bucket/...`), for tools
    /// that read the Parquet files directly.
    pub fn file_location(&self, file: &DataFile) -> String {
        format!("{}{}", self.store_url.as_str(), file.path)
    }

    /// Registers the lake's object store with a DataFusion context.
    pub fn register_store(&self, ctx: &SessionContext) {
        ctx.register_object_store(self.store_url.as_ref(), self.store.clone());
    }

    fn table_url(&self, dataset: Dataset) -> Url {
        self.root
            .join(paths::table_dir(dataset))
            .expect("table dir is a relative URL")
    }

    pub(crate) fn table_root(&self, dataset: Dataset) -> Path {
        paths::in_store(&self.root_path, paths::table_dir(dataset))
    }

    async fn load(&self, dataset: Dataset, version: Option<u64>) -> Result<Option<DeltaTable>> {
        let url = self.table_url(dataset);
        if url.scheme() == "file" {
            let dir = url
                .to_file_path()
                .map_err(|_| EngineError::Config(format!("bad path {url}")))?;
            if !dir.join("_delta_log").exists() {
                return Ok(None);
            }
        }
        let mut builder =
            DeltaTableBuilder::from_url(url)?.with_storage_options(self.storage_options.clone());
        if let Some(v) = version {
            builder = builder.with_version(v);
        }
        match builder.load().await {
            Ok(t) => Ok(Some(t)),
            Err(deltalake::DeltaTableError::NotATable(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn load_or_create(&self, dataset: Dataset) -> Result<DeltaTable> {
        if let Some(t) = self.load(dataset, None).await? {
            return Ok(t);
        }
        let url = self.table_url(dataset);
        if url.scheme() == "file" {
            let dir = url
                .to_file_path()
                .map_err(|_| EngineError::Config(format!("bad path {url}")))?;
            std::fs::create_dir_all(&dir)?;
        }
        let mut columns: Vec<StructField> = dataset
            .columns()
            .iter()
            .map(|c| StructField::new(c.name, delta_type(c.kind), !c.required))
            .collect();
        columns.push(StructField::new(
            DATE_PARTITION,
            deltalake::kernel::DataType::DATE,
            false,
        ));
        let table = DeltaTableBuilder::from_url(url)?
            .with_storage_options(self.storage_options.clone())
            .build()?;
        let created = table
            .create()
            .with_table_name(dataset.table_name())
            .with_columns(columns)
            .with_partition_columns([DATE_PARTITION])
            // Old versions must stay readable for `--as-of-manifest` re-runs; vacuum
            // keeps the files they need for this long.
            .with_configuration_property(
                TableProperty::DeletedFileRetentionDuration,
                Some("interval 30 days"),
            )
            .with_configuration_property(
                TableProperty::LogRetentionDuration,
                Some("interval 90 days"),
            )
            .with_save_mode(SaveMode::Ignore)
            .await;
        match created {
            Ok(t) => Ok(t),
            // Another process created it between our check and our create.
            Err(_) => self.load(dataset, None).await?.ok_or_else(|| {
                EngineError::Config(format!("cannot create table {}", dataset.table_name()))
            }),
        }
    }

    /// The files of a table at `version` (latest when `None`).
    pub async fn snapshot(&self, dataset: Dataset, version: Option<u64>) -> Result<TableSnapshot> {
        let Some(table) = self.load(dataset, version).await? else {
            if let Some(v) = version {
                return Err(EngineError::invalid(format!(
                    "table {} has no version {v}: it does not exist",
                    dataset.table_name()
                )));
            }
            return Ok(TableSnapshot {
                dataset,
                version: None,
                files: Vec::new(),
                table_id: None,
            });
        };
        self.files_of(dataset, &table)
    }

    fn files_of(&self, dataset: Dataset, table: &DeltaTable) -> Result<TableSnapshot> {
        let table_root = self.table_root(dataset);
        let state = table.snapshot()?;
        let mut files = Vec::new();
        for view in state.log_data().iter() {
            let relative = view.path().to_string();
            let partition = view.partition_values_map();
            let date = partition
                .get(DATE_PARTITION)
                .and_then(|v| v.as_deref())
                .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
                .ok_or_else(|| {
                    EngineError::Config(format!("data file {relative} has no valid date partition"))
                })?;
            #[allow(deprecated, reason = "add_action is the only public way to read tags")]
            let tags = view.add_action().tags.unwrap_or_default();
            let bounds = match (tag_json(&tags, TAG_MIN), tag_json(&tags, TAG_MAX)) {
                (Some(Value::Array(a)), Some(Value::Array(b))) => Some((a, b)),
                _ => None,
            };
            let cluster = tags.get(TAG_CLUSTER).cloned().flatten();
            let counts = tag_json(&tags, TAG_COUNTS).and_then(|v| serde_json::from_value(v).ok());
            files.push(DataFile {
                path: paths::in_store(&table_root, &relative),
                relative,
                date,
                size: view.size() as u64,
                rows: view.num_records().unwrap_or(0) as u64,
                bounds,
                cluster,
                counts,
            });
        }
        files.sort_by(|a, b| {
            a.date.cmp(&b.date).then_with(|| {
                let ka = a.bounds.as_ref().map(|b| b.0.clone()).unwrap_or_default();
                let kb = b.bounds.as_ref().map(|b| b.0.clone()).unwrap_or_default();
                cmp_json_keys(&ka, &kb)
            })
        });
        // The kernel keeps `metaData.id` crate-private; its serialised form has it.
        let table_id = serde_json::to_value(state.metadata())
            .ok()
            .and_then(|m| m.get("id").and_then(Value::as_str).map(str::to_string));
        Ok(TableSnapshot {
            dataset,
            version: Some(state.version()),
            files,
            table_id,
        })
    }

    /// The current version of every table (`None` for a table that does not exist).
    pub async fn versions(&self) -> Result<BTreeMap<Dataset, Option<u64>>> {
        let mut out = BTreeMap::new();
        for ds in Dataset::ALL {
            out.insert(
                ds,
                self.load(ds, None).await?.map(|t| t.version().unwrap_or(0)),
            );
        }
        Ok(out)
    }

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
        let _serial = self.append_locks[dataset_slot(dataset)].lock().await;
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
            let table = self.load_or_create(dataset).await?;
            let snapshot = self.files_of(dataset, &table)?;
            // A commit reported as lost may have landed (a store that retried a
            // conditional PUT whose first try succeeded answers "already exists"):
            // if the table names our files, it did, and they must stay.
            if let Some((skipped, actions, count)) = &written
                && actions.iter().any(|a| {
                    matches!(a, Action::Add(add)
                        if snapshot.files.iter().any(|f| f.relative == add.path))
                })
            {
                let duplicate_rows: Vec<usize> = (0..total).filter(|&i| skipped[i]).collect();
                return Ok(AppendOutcome {
                    written: *count,
                    duplicates: total - count,
                    duplicate_rows,
                    version: snapshot.version,
                });
            }
            let index = self.id_index()?;
            if let Some(index) = &index {
                self.flush_index_of(dataset).await?;
                self.catch_up(index, &snapshot).await?;
            }
            let mut skip = repeated.clone();
            match &index {
                Some(index) => {
                    // Off the async runtime: a batch is tens of thousands of lookups.
                    let (index, keys) = (index.clone(), keys.clone());
                    let found = tokio::task::spawn_blocking(move || {
                        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
                        index.contains_many(dataset, &refs)
                    })
                    .await
                    .map_err(|e| EngineError::Io(std::io::Error::other(e)))?;
                    for (s, f) in skip.iter_mut().zip(found?) {
                        *s |= f;
                    }
                }
                None if !snapshot.files.is_empty() => {
                    let stored = self.stored_keys(dataset, snapshot.files.clone()).await?;
                    for (i, k) in keys.iter().enumerate() {
                        if stored.contains(k) {
                            skip[i] = true;
                        }
                    }
                }
                None => {}
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
            let props = CommitProperties::default()
                .with_max_retries(0)
                .with_metadata([("isBlindAppend".to_string(), json!(true))]);
            let operation = DeltaOperation::Write {
                mode: SaveMode::Append,
                partition_by: Some(vec![DATE_PARTITION.to_string()]),
                predicate: None,
            };
            fail::fail_point!("lake.before_commit");
            let committed = CommitBuilder::from(props)
                .with_actions(actions.clone())
                .build(Some(table.snapshot()?), table.log_store(), operation)
                .await;
            let commit = match committed {
                Ok(c) => c,
                Err(e) if is_commit_race(&e) && attempt < APPEND_ATTEMPTS => {
                    tracing::debug!(attempt, "another commit came first; checking again");
                    continue;
                }
                // The commit may have landed (a timeout after the write): its files
                // stay; if it did not, they are orphans no commit names.
                Err(e) => return Err(e.into()),
            };
            fail::fail_point!("lake.after_commit");
            let count = *count;
            if let Some(index) = index {
                // Recorded while the caller answers and gathers its next batch; the
                // next append waits for it. A crash before it ends loses nothing:
                // the next catch-up reads the files this commit added.
                let stored: Vec<String> = keys
                    .iter()
                    .zip(&skip)
                    .filter(|(_, s)| !**s)
                    .map(|(k, _)| k.clone())
                    .collect();
                let added: Vec<String> = actions
                    .iter()
                    .filter_map(|a| match a {
                        Action::Add(add) => Some(add.path.clone()),
                        _ => None,
                    })
                    .collect();
                let task = tokio::task::spawn_blocking(move || {
                    let added: Vec<&str> = added.iter().map(String::as_str).collect();
                    index.record(dataset, stored.iter().map(String::as_str), &added, &[])
                });
                *self.pending_index[dataset_slot(dataset)].lock().await = Some(task);
            }
            return Ok(AppendOutcome {
                written: count,
                duplicates: total - count,
                duplicate_rows,
                version: Some(commit.version()),
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

    /// Keys of the rows stored in `files`.
    async fn stored_keys(&self, dataset: Dataset, files: Vec<DataFile>) -> Result<HashSet<String>> {
        let ctx = table::session_context(self, 64 << 20);
        let provider = LakeTable::new(dataset, files, self.store_url.clone(), false);
        let df = ctx.read_table(Arc::new(provider))?;
        let keys: Vec<_> = dataset
            .key_columns()
            .iter()
            .map(|c| deltalake::datafusion::prelude::col(*c))
            .collect();
        let mut stream = df.select(keys)?.execute_stream().await?;
        let mut out = HashSet::new();
        while let Some(batch) = stream.try_next().await? {
            for i in 0..batch.num_rows() {
                out.insert(batch_key(&batch, i));
            }
        }
        Ok(out)
    }

    /// Writes one date's rows, already sorted by (time, key), as one Parquet file and
    /// returns its `add` action.
    async fn write_file(
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

/// The position of a dataset in per-dataset arrays.
fn dataset_slot(dataset: Dataset) -> usize {
    match dataset {
        Dataset::Events => 0,
        Dataset::Escalations => 1,
        Dataset::ConfigVersions => 2,
    }
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

fn tag_json(tags: &HashMap<String, Option<String>>, key: &str) -> Option<Value> {
    tags.get(key)?
        .as_deref()
        .and_then(|s| serde_json::from_str(s).ok())
}

/// Compares two sort keys written by [`sort_key_json`].
pub(crate) fn cmp_json_keys(a: &[Value], b: &[Value]) -> std::cmp::Ordering {
    for (x, y) in a.iter().zip(b) {
        let o = match (x, y) {
            (Value::Number(x), Value::Number(y)) => {
                x.as_i64().unwrap_or(0).cmp(&y.as_i64().unwrap_or(0))
            }
            (Value::String(x), Value::String(y)) => x.cmp(y),
            _ => std::cmp::Ordering::Equal,
        };
        if o.is_ne() {
            return o;
        }
    }
    a.len().cmp(&b.len())
}

fn delta_type(kind: ColumnKind) -> deltalake::kernel::DataType {
    use deltalake::kernel::DataType as D;
    match kind {
        ColumnKind::Str | ColumnKind::Text | ColumnKind::Json => D::STRING,
        ColumnKind::Int => D::LONG,
        ColumnKind::Float => D::DOUBLE,
        ColumnKind::Timestamp => D::TIMESTAMP,
    }
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

/// Sorts a batch by (time column, key columns).
pub fn sort_batch(dataset: Dataset, batch: &RecordBatch) -> Result<RecordBatch> {
    let mut cols = vec![SortColumn {
        values: batch
            .column_by_name(dataset.time_column())
            .expect("time column")
            .clone(),
        options: None,
    }];
    for k in dataset.key_columns() {
        cols.push(SortColumn {
            values: batch.column_by_name(k).expect("key column").clone(),
            options: None,
        });
    }
    let idx = lexsort_to_indices(&cols, None)?;
    Ok(take_record_batch(batch, &idx)?)
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

fn scalar_json(col: &dyn Array, i: usize) -> Value {
    if col.is_null(i) {
        return Value::Null;
    }
    match col.data_type() {
        DataType::Timestamp(_, _) => json!(col.as_primitive::<TimestampMicrosecondType>().value(i)),
        DataType::Int64 => json!(col.as_primitive::<Int64Type>().value(i)),
        DataType::Utf8 => json!(col.as_string::<i32>().value(i)),
        DataType::Utf8View => json!(col.as_string_view().value(i)),
        DataType::LargeUtf8 => json!(col.as_string::<i64>().value(i)),
        other => json!(format!("{other}")),
    }
}

/// The key of row `i` of a batch whose columns are exactly the key columns, in the
/// same spelling as [`Row::key`].
fn batch_key(batch: &RecordBatch, i: usize) -> String {
    let mut key = String::new();
    for (n, col) in batch.columns().iter().enumerate() {
        if n > 0 {
            key.push('@');
        }
        match scalar_json(col.as_ref(), i) {
            Value::String(s) => key.push_str(&s),
            Value::Number(x) => key.push_str(&x.to_string()),
            other => key.push_str(&other.to_string()),
        }
    }
    key
}

/// Turns the user's data location into a URL: `s3://`, `file://`, or a local path
/// (created if missing, made absolute).
pub fn data_url_to_url(data: &str) -> Result<Url> {
    let mut url = if data.contains("://") {
        Url::parse(data).map_err(|e| EngineError::Config(format!("data URL {data:?}: {e}")))?
    } else {
        std::fs::create_dir_all(data).map_err(|e| {
            EngineError::Config(format!("cannot create data directory {data:?}: {e}"))
        })?;
        let abs = std::fs::canonicalize(data)?;
        Url::from_directory_path(&abs)
            .map_err(|_| EngineError::Config(format!("data directory {data:?} is not absolute")))?
    };
    match url.scheme() {
        "file" => {
            let path = url
                .to_file_path()
                .map_err(|_| EngineError::Config(format!("bad path {url}")))?;
            std::fs::create_dir_all(&path).map_err(|e| {
                EngineError::Config(format!(
                    "cannot create data directory {}: {e}",
                    path.display()
                ))
            })?;
        }
        "s3" | "s3a" | "memory" => {}
        other => {
            return Err(EngineError::Config(format!(
                "data URL scheme {other:?} is not supported (use a local path, file:// or s3://)"
            )));
        }
    }
    if !url.path().ends_with('/') {
        let p = format!("{}/", url.path());
        url.set_path(&p);
    }
    Ok(url)
}
