//! `LakeTable`: a DataFusion table over a chosen set of a table version's data files.
//!
//! Its scan pushes every filter into the Parquet reader (row-group and page pruning,
//! then late materialisation: wide text columns are decoded only for rows that pass
//! the filter). In ordered mode it also tells DataFusion how the files are sorted, so a
//! `ORDER BY time, key` becomes a streaming merge instead of a sort of the whole export.

use std::sync::Arc;

use async_trait::async_trait;
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use deltalake::datafusion::catalog::{Session, TableProvider};
use deltalake::datafusion::common::stats::Precision;
use deltalake::datafusion::common::{ColumnStatistics, ScalarValue, Statistics, ToDFSchema};
use deltalake::datafusion::datasource::TableType;
use deltalake::datafusion::datasource::listing::PartitionedFile;
use deltalake::datafusion::datasource::physical_plan::{
    FileGroup, FileScanConfigBuilder, ParquetSource,
};
use deltalake::datafusion::datasource::source::DataSourceExec;
use deltalake::datafusion::error::Result as DfResult;
use deltalake::datafusion::execution::memory_pool::FairSpillPool;
use deltalake::datafusion::execution::object_store::ObjectStoreUrl;
use deltalake::datafusion::execution::runtime_env::RuntimeEnvBuilder;
use deltalake::datafusion::logical_expr::utils::conjunction;
use deltalake::datafusion::logical_expr::{Expr, SortExpr, TableProviderFilterPushDown};
use deltalake::datafusion::physical_expr::{LexOrdering, PhysicalSortExpr};
use deltalake::datafusion::physical_plan::ExecutionPlan;
use deltalake::datafusion::physical_plan::expressions::Column as PhysicalColumn;
use deltalake::datafusion::prelude::{SessionConfig, SessionContext, col};
use serde_json::Value;

use super::{DataFile, Lake};
use crate::model::{ColumnKind, Dataset};

/// Builds a query context over the lake's object store whose queries spill to disk
/// rather than exceed `memory_limit` bytes.
pub fn session_context(lake: &Lake, memory_limit: usize) -> SessionContext {
    session_context_with_batch(lake, memory_limit, DEFAULT_BATCH_ROWS)
}

/// Rows per record batch of export scans: small, because text rows are wide and every
/// sorted partition holds a few batches in flight.
pub const DEFAULT_BATCH_ROWS: usize = 2048;

/// Like [`session_context`], with `batch_size` rows per batch.
pub fn session_context_with_batch(
    lake: &Lake,
    memory_limit: usize,
    batch_size: usize,
) -> SessionContext {
    session_context_tuned(lake, memory_limit, batch_size, |_| {})
}

/// Like [`session_context_with_batch`], with `tune` applied to the options last.
pub fn session_context_tuned(
    lake: &Lake,
    memory_limit: usize,
    batch_size: usize,
    tune: impl FnOnce(&mut deltalake::datafusion::config::ConfigOptions),
) -> SessionContext {
    let mut config = SessionConfig::new()
        .with_target_partitions(2)
        .with_batch_size(batch_size)
        .with_information_schema(false);
    let options = config.options_mut();
    options.execution.parquet.pushdown_filters = true;
    options.execution.parquet.reorder_filters = true;
    options.execution.parquet.enable_page_index = true;
    // Our files are the unit of ordering; splitting them by byte range would lose it.
    options.optimizer.repartition_file_scans = false;
    options.optimizer.prefer_existing_sort = true;
    // Each partition reads exactly its own file group: groups are built so their
    // files never overlap (ordered mode), and a partition that "steals" a sibling's
    // files would also hold two files' buffers at once.
    options.execution.enable_file_stream_work_stealing = false;
    // Sorts keep this much back for merging their spill files; DataFusion's 10 MB
    // default would not leave a small limit anything to sort with.
    options.execution.sort_spill_reservation_bytes = (memory_limit / 8).clamp(256 << 10, 10 << 20);
    tune(options);
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(FairSpillPool::new(memory_limit)))
        // Each context runs one export; caching every file's footer and page index
        // (50 MB by default) only adds to its peak memory.
        .with_metadata_cache_limit(0)
        .build_arc()
        .expect("runtime environment builds");
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    lake.register_store(&ctx);
    ctx
}

/// The order exports and files use: time column, then key columns, ascending.
pub fn sort_exprs(dataset: Dataset) -> Vec<SortExpr> {
    std::iter::once(dataset.time_column())
        .chain(dataset.key_columns().iter().copied())
        .map(|c| col(c).sort(true, false))
        .collect()
}

/// The schema scans produce: the files' schema, with free text and JSON documents as
/// string views. The Parquet reader then decodes them as views into its decompressed
/// pages instead of copying every value into a new buffer (the largest copy of an
/// export: these columns are nearly all of its bytes); identifiers stay plain strings.
fn scan_schema(dataset: Dataset) -> SchemaRef {
    let fields: Vec<Field> = dataset
        .columns()
        .iter()
        .zip(dataset.file_schema().fields())
        .map(|(c, f)| match c.kind {
            ColumnKind::Text | ColumnKind::Json => {
                f.as_ref().clone().with_data_type(DataType::Utf8View)
            }
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// A table over some data files of one dataset.
#[derive(Debug)]
pub struct LakeTable {
    dataset: Dataset,
    schema: SchemaRef,
    files: Vec<DataFile>,
    store_url: ObjectStoreUrl,
    ordered: bool,
}

impl LakeTable {
    /// A table over `files`. With `ordered`, scans declare the (time, key) order, which
    /// lets DataFusion merge instead of sort.
    pub fn new(
        dataset: Dataset,
        files: Vec<DataFile>,
        store_url: ObjectStoreUrl,
        ordered: bool,
    ) -> Self {
        LakeTable {
            dataset,
            schema: scan_schema(dataset),
            files,
            store_url,
            ordered,
        }
    }

    fn partitioned_file(&self, f: &DataFile) -> PartitionedFile {
        let mut pf = PartitionedFile::new(f.path.to_string(), f.size);
        if let Some(stats) = self.file_statistics(f) {
            pf = pf.with_statistics(Arc::new(stats));
        }
        pf
    }

    /// Row count and min/max of the sort columns. The log keeps the file's first and
    /// last sort key (time, key columns): the time column's are its true min and max,
    /// but a key column's are only the values at the first and last time, not its
    /// range, so key columns get bounds that hold for any value. They must hold:
    /// DataFusion prunes files with them (a file whose real ids lie outside the first
    /// and last row's would silently drop out of `WHERE id = ...`), and it checks
    /// with them that the files of a group do not overlap in sort order, which the
    /// time column alone decides (a group holds one file per date).
    fn file_statistics(&self, f: &DataFile) -> Option<Statistics> {
        let (min, max) = f.bounds.as_ref()?;
        let mut columns = vec![ColumnStatistics::new_unknown(); self.schema.fields().len()];
        let time = self.dataset.column_index(self.dataset.time_column())?;
        columns[time] = ColumnStatistics::new_unknown()
            .with_min_value(Precision::Exact(json_scalar(
                ColumnKind::Timestamp,
                min.first()?,
            )?))
            .with_max_value(Precision::Exact(json_scalar(
                ColumnKind::Timestamp,
                max.first()?,
            )?));
        for name in self.dataset.key_columns() {
            let idx = self.dataset.column_index(name)?;
            let (lo, hi) = match self.dataset.columns()[idx].kind {
                ColumnKind::Int => (
                    ScalarValue::Int64(Some(i64::MIN)),
                    ScalarValue::Int64(Some(i64::MAX)),
                ),
                ColumnKind::Str | ColumnKind::Text | ColumnKind::Json => (
                    ScalarValue::Utf8(Some(String::new())),
                    ScalarValue::Utf8(Some(char::MAX.to_string().repeat(16))),
                ),
                ColumnKind::Timestamp | ColumnKind::Float => return None,
            };
            columns[idx] = ColumnStatistics::new_unknown()
                .with_min_value(Precision::Inexact(lo))
                .with_max_value(Precision::Inexact(hi));
        }
        Some(Statistics {
            num_rows: Precision::Exact(f.rows as usize),
            total_byte_size: Precision::Absent,
            column_statistics: columns,
        })
    }

    /// Ordered mode: the i-th file of every date goes to group i. Files of different
    /// dates never overlap, so each group is sorted end to end and few files are open
    /// at once however long the window is.
    fn ordered_groups(&self) -> Vec<FileGroup> {
        let mut groups: Vec<Vec<PartitionedFile>> = Vec::new();
        let mut i = 0;
        let mut current = None;
        for f in &self.files {
            if current != Some(f.date) {
                current = Some(f.date);
                i = 0;
            }
            if f.bounds.is_none() {
                // Without bounds DataFusion cannot verify a multi-file group's order.
                groups.push(vec![self.partitioned_file(f)]);
                continue;
            }
            if groups.len() <= i {
                groups.push(Vec::new());
            }
            groups[i].push(self.partitioned_file(f));
            i += 1;
        }
        groups
            .into_iter()
            .filter(|g| !g.is_empty())
            .map(FileGroup::new)
            .collect()
    }

    fn unordered_groups(&self, partitions: usize) -> Vec<FileGroup> {
        let n = partitions.max(1).min(self.files.len().max(1));
        let mut groups: Vec<Vec<PartitionedFile>> = vec![Vec::new(); n];
        for (i, f) in self.files.iter().enumerate() {
            groups[i % n].push(self.partitioned_file(f));
        }
        groups
            .into_iter()
            .filter(|g| !g.is_empty())
            .map(FileGroup::new)
            .collect()
    }

    fn ordering(&self) -> Option<LexOrdering> {
        let names = std::iter::once(self.dataset.time_column())
            .chain(self.dataset.key_columns().iter().copied());
        let exprs: Vec<PhysicalSortExpr> = names
            .map(|name| {
                let idx = self.dataset.column_index(name).expect("sort column");
                PhysicalSortExpr::new_default(Arc::new(PhysicalColumn::new(name, idx)))
            })
            .collect();
        LexOrdering::new(exprs)
    }
}

fn json_scalar(kind: ColumnKind, v: &Value) -> Option<ScalarValue> {
    Some(match kind {
        ColumnKind::Timestamp => {
            ScalarValue::TimestampMicrosecond(Some(v.as_i64()?), Some("UTC".into()))
        }
        ColumnKind::Int => ScalarValue::Int64(Some(v.as_i64()?)),
        ColumnKind::Str | ColumnKind::Text | ColumnKind::Json => {
            ScalarValue::Utf8(Some(v.as_str()?.to_string()))
        }
        ColumnKind::Float => return None,
    })
}

#[async_trait]
impl TableProvider for LakeTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        // Inexact: the Parquet reader prunes with them, and DataFusion still applies
        // them above the scan, so correctness never depends on the pruning.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if self.files.is_empty() {
            // An empty scope still has one (empty) partition: a scan of zero file
            // groups has zero, which a single-partition sort above it rejects.
            let schema = match projection {
                Some(p) => Arc::new(self.schema.project(p)?),
                None => self.schema.clone(),
            };
            return Ok(Arc::new(
                deltalake::datafusion::physical_plan::empty::EmptyExec::new(schema),
            ));
        }
        let mut source = ParquetSource::new(self.schema.clone())
            .with_table_parquet_options(state.table_options().parquet.clone())
            .with_pushdown_filters(true)
            .with_reorder_filters(true)
            .with_enable_page_index(true);
        if let Some(predicate) = conjunction(filters.to_vec()) {
            let df_schema = self.schema.clone().to_dfschema()?;
            let physical = state.create_physical_expr(predicate, &df_schema)?;
            source = source.with_predicate(physical);
        }
        let groups = if self.ordered {
            self.ordered_groups()
        } else {
            self.unordered_groups(state.config().target_partitions())
        };
        let mut builder = FileScanConfigBuilder::new(self.store_url.clone(), Arc::new(source))
            .with_file_groups(groups)
            .with_preserve_order(self.ordered)
            .with_limit(limit);
        if self.ordered
            && let Some(ordering) = self.ordering()
        {
            builder = builder.with_output_ordering(vec![ordering]);
        }
        let builder = builder.with_projection_indices(projection.cloned())?;
        Ok(DataSourceExec::from_data_source(builder.build()))
    }
}
