//! The event lake: one Delta table per dataset under the data URL, partitioned by the
//! UTC date of each record's time column.
//!
//! The lake writes its own Parquet files and commits them to the Delta log, because it
//! keeps one layout invariant the generic writer cannot: **every data file holds one
//! date and is sorted by (time column, key columns)**. Exports rely on it to stream in
//! order without a global sort (see `table.rs`). Each file's first and last sort key
//! is kept in the Delta `tags` of its `add` action.

mod append;
mod compact;
pub mod id_index;
pub mod paths;
pub mod table;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use chrono::NaiveDate;
use deltalake::arrow::array::{Array, AsArray, RecordBatch};
use deltalake::arrow::datatypes::{DataType, Int64Type, TimestampMicrosecondType};
use deltalake::datafusion::execution::object_store::ObjectStoreUrl;
use deltalake::datafusion::prelude::SessionContext;
use deltalake::kernel::StructField;
use deltalake::protocol::SaveMode;
use deltalake::table::state::DeltaTableState;
use deltalake::{DeltaTable, DeltaTableBuilder, TableProperty};
use futures::TryStreamExt;
use object_store::ObjectStore;
use object_store::path::Path;
use serde_json::{Value, json};
use url::Url;

use crate::clock::Clock;
use crate::error::{EngineError, Result};
use crate::model::{ColumnKind, DATE_PARTITION, Dataset};

pub use append::{APPEND_ATTEMPTS, APPEND_COMMIT_WINDOW};
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

/// A commit's key index update running in the background, with the keys it records
/// (sorted), so the next append can look them up there instead of waiting for it.
struct PendingIndexUpdate {
    task: tokio::task::JoinHandle<Result<()>>,
    keys: Arc<Vec<String>>,
}

impl std::fmt::Debug for PendingIndexUpdate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingIndexUpdate")
            .field("keys", &self.keys.len())
            .finish()
    }
}

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
    /// Serialises this process's appends per dataset (the duplicate check and the
    /// commit that follows it must not interleave with another append's) and keeps
    /// the Delta state the last one left (see `append.rs`).
    append_states: Arc<[tokio::sync::Mutex<Option<append::AppendState>>; 3]>,
    /// The key index update of the last commit, which runs while the caller answers
    /// and gathers the next batch, and while the next append looks up its keys (it
    /// looks in the update's own keys too); that append's commit, a compaction or
    /// [`Lake::flush_index`] waits for it.
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
            append_states: Arc::new(Default::default()),
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
        self.files_of(dataset, table.snapshot()?)
    }

    fn files_of(&self, dataset: Dataset, state: &DeltaTableState) -> Result<TableSnapshot> {
        let table_root = self.table_root(dataset);
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
}

/// The position of a dataset in per-dataset arrays.
fn dataset_slot(dataset: Dataset) -> usize {
    match dataset {
        Dataset::Events => 0,
        Dataset::Escalations => 1,
        Dataset::ConfigVersions => 2,
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
