//! The scoped views: the datasets of one export as DataFusion queries over pinned
//! table versions, restricted to the export's window, filters and redaction. The
//! layer the encoders' input, the SQL definitions and the PDF report all stand on;
//! it imports none of them (only the definition checker, a pure function of the SQL
//! text).

use std::collections::BTreeMap;
use std::sync::Arc;

use deltalake::arrow::record_batch::RecordBatch;
use deltalake::datafusion::dataframe::DataFrame;
use deltalake::datafusion::functions_aggregate::expr_fn::count;
use deltalake::datafusion::logical_expr::{Expr, lit};
use deltalake::datafusion::prelude::{SessionContext, col};

use deltalake::datafusion::datasource::MemTable;
use deltalake::datafusion::execution::context::SQLOptions;

use crate::audit;
use crate::definition::check_sql;
use crate::error::{EngineError, Result};
use crate::lake::table::{
    DEFAULT_BATCH_ROWS, session_context_tuned, session_context_with_batch, sort_exprs,
};
use crate::lake::{DataFile, Lake, LakeTable, TableSnapshot};
use crate::model::{ColumnKind, Dataset};
use crate::redact::{RedactUdf, RedactionRules, Redactor, TextShape};
use crate::scope::{ExportScope, Filters};

mod local_date;

/// Memory one export's queries may use before they spill to disk.
pub const QUERY_MEMORY_LIMIT: usize = 192 << 20;

/// A dataset an export can carry besides `events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Include {
    /// Escalation updates of the scope's events.
    Escalations,
    /// Configuration versions changed in the window.
    ConfigHistory,
    /// Daily counts by decision and severity.
    Summary,
    /// The export-activity audit trail (kept by the server).
    AuditLog,
    /// The PDF evidence report of the scope, beside the data.
    Report,
}

impl Include {
    /// Parses the API / CLI spelling.
    pub fn parse(s: &str) -> Result<Include> {
        Ok(match s {
            "escalations" => Include::Escalations,
            "config_history" | "config-history" | "config_versions" => Include::ConfigHistory,
            "summary" => Include::Summary,
            "audit_log" | "audit-log" => Include::AuditLog,
            "report" => Include::Report,
            other => {
                return Err(EngineError::invalid(format!(
                    "include: unknown dataset {other:?}; use escalations, config_history, summary, audit_log or report"
                )));
            }
        })
    }

    /// The name used for files and `by_dataset`.
    pub fn name(self) -> &'static str {
        match self {
            Include::Escalations => "escalations",
            Include::ConfigHistory => "config_history",
            Include::Summary => "summary",
            Include::AuditLog => "audit_log",
            Include::Report => "report",
        }
    }
}

/// The table versions an export reads, fixed before it starts so the preview count,
/// the export and its manifest all describe the same data.
#[derive(Debug, Clone)]
pub struct PinnedTables {
    /// One snapshot per dataset.
    pub snapshots: BTreeMap<Dataset, TableSnapshot>,
}

impl PinnedTables {
    /// Pins the latest versions, or the given ones, of every table.
    pub async fn pin(
        lake: &Lake,
        versions: Option<&BTreeMap<Dataset, Option<u64>>>,
    ) -> Result<PinnedTables> {
        Self::pin_tables(lake, versions, &Dataset::ALL).await
    }

    /// Pins only the tables an export with `include` reads; the others are recorded
    /// as not read (`None`). Each Delta log load costs milliseconds, and the preview
    /// has a 100 ms budget.
    pub async fn pin_for(
        lake: &Lake,
        include: &[Include],
        versions: Option<&BTreeMap<Dataset, Option<u64>>>,
    ) -> Result<PinnedTables> {
        let mut needed = vec![Dataset::Events];
        if include.contains(&Include::Escalations) {
            needed.push(Dataset::Escalations);
        }
        if include.contains(&Include::ConfigHistory) {
            needed.push(Dataset::ConfigVersions);
        }
        if include.contains(&Include::Report) {
            needed = Dataset::ALL.to_vec();
        }
        Self::pin_tables(lake, versions, &needed).await
    }

    /// Pins `needed` (latest, or the given versions); other tables are recorded as
    /// not read.
    pub async fn pin_datasets(
        lake: &Lake,
        needed: &[Dataset],
        versions: Option<&BTreeMap<Dataset, Option<u64>>>,
    ) -> Result<PinnedTables> {
        Self::pin_tables(lake, versions, needed).await
    }

    async fn pin_tables(
        lake: &Lake,
        versions: Option<&BTreeMap<Dataset, Option<u64>>>,
        needed: &[Dataset],
    ) -> Result<PinnedTables> {
        let mut snapshots = BTreeMap::new();
        for ds in Dataset::ALL {
            if !needed.contains(&ds) {
                let empty = TableSnapshot {
                    dataset: ds,
                    version: None,
                    files: Vec::new(),
                    table_id: None,
                };
                snapshots.insert(ds, empty);
                continue;
            }
            let version = versions.and_then(|v| v.get(&ds).copied().flatten());
            let pinned_absent = versions.is_some_and(|v| matches!(v.get(&ds), Some(None)));
            let snap = if pinned_absent {
                TableSnapshot {
                    dataset: ds,
                    version: None,
                    files: Vec::new(),
                    table_id: None,
                }
            } else {
                lake.snapshot(ds, version).await?
            };
            snapshots.insert(ds, snap);
        }
        Ok(PinnedTables { snapshots })
    }

    /// The version read of each table.
    pub fn versions(&self) -> BTreeMap<Dataset, Option<u64>> {
        self.snapshots
            .iter()
            .map(|(d, s)| (*d, s.version))
            .collect()
    }
}

/// `columns` of `dataset` as expressions, free text passed through `redactor`
/// (JSON columns always through the JSON form, which marks them as JSON for the
/// encoders). Exports and the event stream project with this, so both apply the
/// same rules.
pub(crate) fn redacted_projection(
    redactor: &Arc<Redactor>,
    dataset: Dataset,
    columns: &[&str],
) -> Vec<Expr> {
    let text = RedactUdf::udf(redactor.clone(), TextShape::Plain);
    let json = RedactUdf::udf(redactor.clone(), TextShape::Json);
    let fields = &redactor.rules().fields;
    columns
        .iter()
        .map(|name| {
            let kind = dataset
                .column_index(name)
                .map(|i| dataset.columns()[i].kind);
            match kind {
                Some(ColumnKind::Json) => json.call(vec![col(*name)]).alias(*name),
                Some(ColumnKind::Text) if !redactor.is_noop() => {
                    text.call(vec![col(*name)]).alias(*name)
                }
                Some(ColumnKind::Str)
                    if !redactor.is_noop() && fields.iter().any(|f| f == name) =>
                {
                    text.call(vec![col(*name)]).alias(*name)
                }
                _ => col(*name),
            }
        })
        .collect()
}

/// Query builder for one export's scope.
pub struct ScopedQueries {
    ctx: SessionContext,
    lake: Lake,
    scope: ExportScope,
    pinned: PinnedTables,
    redactor: Arc<Redactor>,
    include_payloads: bool,
    audit_log: Vec<RecordBatch>,
    batch_rows: usize,
    memory_limit: usize,
}

impl ScopedQueries {
    /// Queries over `pinned` restricted to `scope`.
    pub fn new(lake: &Lake, pinned: &PinnedTables, scope: &ExportScope) -> Self {
        Self::with_batch_rows(lake, pinned, scope, DEFAULT_BATCH_ROWS)
    }

    /// Like [`ScopedQueries::new`], decoding `batch_rows` rows per batch.
    pub fn with_batch_rows(
        lake: &Lake,
        pinned: &PinnedTables,
        scope: &ExportScope,
        batch_rows: usize,
    ) -> Self {
        Self::with_limits(lake, pinned, scope, batch_rows, QUERY_MEMORY_LIMIT)
    }

    /// Like [`ScopedQueries::with_batch_rows`]; operators that need more than
    /// `memory_limit` bytes (sorts, aggregations, joins of SQL definitions) spill to
    /// disk.
    pub fn with_limits(
        lake: &Lake,
        pinned: &PinnedTables,
        scope: &ExportScope,
        batch_rows: usize,
        memory_limit: usize,
    ) -> Self {
        ScopedQueries {
            ctx: session_context_with_batch(lake, memory_limit, batch_rows),
            memory_limit,
            lake: lake.clone(),
            scope: scope.clone(),
            pinned: pinned.clone(),
            redactor: Arc::new(
                RedactionRules::none()
                    .compile()
                    .expect("no rules always compile"),
            ),
            include_payloads: true,
            audit_log: Vec::new(),
            batch_rows,
        }
    }

    /// Applies `redactor` to every free-text value the queries return, and drops
    /// `input` / `output` unless `include_payloads`.
    pub fn with_redaction(mut self, redactor: Arc<Redactor>, include_payloads: bool) -> Self {
        self.redactor = redactor;
        self.include_payloads = include_payloads;
        self
    }

    /// The audit-log entries the `audit_log` view and dataset read (kept by the
    /// server; see [`crate::audit`]).
    pub fn with_audit_log(mut self, batches: Vec<RecordBatch>) -> Self {
        self.audit_log = batches;
        self
    }

    /// The columns of `dataset` this scope exports.
    pub fn columns(&self, dataset: Dataset) -> Vec<&'static str> {
        dataset
            .columns()
            .iter()
            .filter(|c| {
                self.include_payloads
                    || !(dataset == Dataset::Events && matches!(c.name, "input" | "output"))
            })
            .map(|c| c.name)
            .collect()
    }

    /// `columns` of `dataset` as expressions, free text passed through redaction.
    fn projection(&self, dataset: Dataset, columns: &[&str]) -> Vec<Expr> {
        redacted_projection(&self.redactor, dataset, columns)
    }

    /// The session the queries run in.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// The files of `dataset` the scope can touch: the window's date partitions, and
    /// for events only the files of the filtered decisions (each file holds one).
    fn scope_files(&self, dataset: Dataset) -> Vec<DataFile> {
        let (first, last) = self.scope.window.utc_dates();
        let mut files = self.pinned.snapshots[&dataset].files_between(first, last);
        if dataset == Dataset::Events && !self.scope.filters.decision.is_empty() {
            let wanted: Vec<&str> = self
                .scope
                .filters
                .decision
                .iter()
                .map(|d| d.as_str())
                .collect();
            files.retain(|f| f.cluster.as_deref().is_none_or(|c| wanted.contains(&c)));
        }
        files
    }

    fn table(&self, dataset: Dataset, ordered: bool) -> Result<DataFrame> {
        let files = self.scope_files(dataset);
        let table = LakeTable::new(dataset, files, self.lake.store_url().clone(), ordered);
        Ok(self.ctx.read_table(Arc::new(table))?)
    }

    /// The scope's events, all columns, unordered (for counts and aggregates).
    pub fn events(&self) -> Result<DataFrame> {
        Ok(self
            .table(Dataset::Events, false)?
            .filter(self.scope.event_predicate())?)
    }

    /// The scope's events in export order, with `columns`.
    pub fn events_ordered(&self, columns: &[&str]) -> Result<DataFrame> {
        let df = self
            .table(Dataset::Events, true)?
            .filter(self.scope.event_predicate())?;
        // Project before sorting, so the plan ends in the merge and its sorted
        // partitions can be handed to the export writer (see `export::sorted_inputs`).
        Ok(df
            .select(self.projection(Dataset::Events, columns))?
            .sort(sort_exprs(Dataset::Events))?)
    }

    /// The scope's event ids and times, unordered (for digests).
    pub fn event_ids(&self) -> Result<DataFrame> {
        Ok(self.events_view()?.select_columns(&["id", "timestamp"])?)
    }

    /// The scope this queries.
    pub fn scope(&self) -> &ExportScope {
        &self.scope
    }

    /// The `events` view: the scope's events, redacted, all exported columns.
    fn events_view(&self) -> Result<DataFrame> {
        let columns = self.columns(Dataset::Events);
        Ok(self
            .table(Dataset::Events, true)?
            .filter(self.scope.event_predicate())?
            .select(self.projection(Dataset::Events, &columns))?)
    }

    /// The `escalations` view: updates inside the window whose event is in scope.
    fn escalations_view(&self) -> Result<DataFrame> {
        let updates = self
            .table(Dataset::Escalations, false)?
            .filter(self.scope.window.predicate("at"))?;
        let ids = self
            .events()?
            .select(vec![col("id").alias("scoped_event_id")])?;
        let joined = updates.join(
            ids,
            deltalake::datafusion::common::JoinType::LeftSemi,
            &["event_id"],
            &["scoped_event_id"],
            None,
        )?;
        let columns = self.columns(Dataset::Escalations);
        Ok(joined.select(self.projection(Dataset::Escalations, &columns))?)
    }

    /// Escalation updates inside the window whose event is in scope, by time.
    pub fn escalations(&self) -> Result<DataFrame> {
        Ok(self
            .escalations_view()?
            .sort(sort_exprs(Dataset::Escalations))?)
    }

    /// The `config_versions` view: versions changed inside the window; with a policy
    /// filter, those that touch a filtered policy or name no policy (global changes).
    fn config_view(&self) -> Result<DataFrame> {
        let mut df = self
            .table(Dataset::ConfigVersions, false)?
            .filter(self.scope.window.predicate("changed_at"))?;
        if !self.scope.filters.policy.is_empty() {
            let mut touches: Expr = col("policies").is_null();
            for p in &self.scope.filters.policy {
                let needle = serde_json::to_string(p).expect("string serialises");
                touches = touches.or(deltalake::datafusion::functions::expr_fn::strpos(
                    col("policies"),
                    lit(needle),
                )
                .gt(lit(0)));
            }
            df = df.filter(touches)?;
        }
        let columns = self.columns(Dataset::ConfigVersions);
        Ok(df.select(self.projection(Dataset::ConfigVersions, &columns))?)
    }

    /// Configuration versions of the scope, by time.
    pub fn config_history(&self) -> Result<DataFrame> {
        Ok(self
            .config_view()?
            .sort(sort_exprs(Dataset::ConfigVersions))?)
    }

    /// The `audit_log` view: entries inside the window, details redacted.
    fn audit_view(&self) -> Result<DataFrame> {
        let schema = audit::schema();
        let table = MemTable::try_new(schema.clone(), vec![self.audit_log.clone()])?;
        let json = RedactUdf::udf(self.redactor.clone(), TextShape::Json);
        let exprs: Vec<Expr> = schema
            .fields()
            .iter()
            .map(|f| {
                if f.name() == "details" {
                    json.call(vec![col("details")]).alias("details")
                } else {
                    col(f.name().as_str())
                }
            })
            .collect();
        Ok(self
            .ctx
            .read_table(Arc::new(table))?
            .filter(self.scope.window.predicate("at"))?
            .select(exprs)?)
    }

    /// Audit-log entries of the window, in chain order.
    pub fn audit_log(&self) -> Result<DataFrame> {
        Ok(self
            .audit_view()?
            .sort(vec![col("seq").sort(true, false)])?)
    }

    /// Runs a SQL definition over the scope's views, in a session that holds nothing
    /// else. Without a top-level `ORDER BY`, rows are ordered by every column so
    /// re-runs give the same bytes.
    pub async fn definition(&self, sql: &str) -> Result<DataFrame> {
        self.query(sql, true).await
    }

    /// Like [`ScopedQueries::definition`]; with `stable_order` false, rows come in
    /// whatever order the plan gives (for aggregates that are re-aggregated).
    pub async fn query(&self, sql: &str, stable_order: bool) -> Result<DataFrame> {
        let shape = check_sql(sql)?;
        // One sort over the combined partitions instead of a sort per partition under
        // a merge: the merge cannot spill, and under a tight limit it is what fails.
        // Scans, filters and redaction still run in parallel below it.
        let ctx = session_context_tuned(&self.lake, self.memory_limit, self.batch_rows, |o| {
            o.optimizer.repartition_sorts = false;
        });
        ctx.register_table("events", self.events_view()?.into_view())?;
        ctx.register_table("escalations", self.escalations_view()?.into_view())?;
        ctx.register_table("config_versions", self.config_view()?.into_view())?;
        ctx.register_table("audit_log", self.audit_view()?.into_view())?;
        ctx.register_udf(local_date::udf(self.scope.timezone));
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let df = ctx
            .sql_with_options(sql, options)
            .await
            .map_err(|e| EngineError::invalid(format!("sql: {}", first_line(&e.to_string()))))?;
        if shape.ordered || !stable_order {
            return Ok(df);
        }
        let order: Vec<_> = df
            .schema()
            .columns()
            .into_iter()
            .map(|c| Expr::Column(c).sort(true, true))
            .collect();
        Ok(df.sort(order)?)
    }

    /// Events per day (in the export's timezone), decision and severity.
    pub async fn summary(&self) -> Result<DataFrame> {
        let tz = self.scope.timezone.name().to_string();
        let events = self.events()?;
        self.ctx
            .register_table("scoped_events_for_summary", events.into_view())?;
        let sql = format!(
            "SELECT to_char(arrow_cast(timestamp, 'Timestamp(Microsecond, Some(\"{tz}\"))'), '%Y-%m-%d') AS day, \
             decision, severity, count(*) AS events \
             FROM scoped_events_for_summary GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
        );
        Ok(self.ctx.sql(&sql).await?)
    }

    /// Number of rows `df` yields.
    pub async fn count(df: DataFrame) -> Result<u64> {
        let batches = df
            .aggregate(vec![], vec![count(lit(1)).alias("n")])?
            .collect()
            .await?;
        let mut n = 0u64;
        for b in batches {
            let col = b
                .column(0)
                .as_any()
                .downcast_ref::<deltalake::arrow::array::Int64Array>();
            if let Some(c) = col {
                n += c.iter().flatten().sum::<i64>() as u64;
            }
        }
        Ok(n)
    }

    /// The number of scope events, reading as little as possible: whole UTC days
    /// inside the window with no filter are counted from the Delta log.
    pub async fn count_events(&self) -> Result<u64> {
        let filters = &self.scope.filters;
        // Decision and severity filters can be answered from the per-file counts in
        // the Delta log; any other filter needs the data.
        let metadata_only = Filters {
            decision: Vec::new(),
            min_severity: None,
            ..filters.clone()
        }
        .is_empty();
        if !metadata_only {
            return Self::count(self.events()?).await;
        }
        let severities: Option<Vec<&str>> = filters
            .min_severity
            .map(|m| m.at_or_above().map(|s| s.as_str()).collect());
        let mut n = 0u64;
        let mut scan = Vec::new();
        for f in self.scope_files(Dataset::Events) {
            let whole_day = self.scope.window.covers_day(f.date);
            let known = match (&severities, &f.counts) {
                (None, _) if f.rows > 0 && (filters.decision.is_empty() || f.cluster.is_some()) => {
                    Some(f.rows)
                }
                (Some(wanted), Some(counts))
                    if f.cluster.is_some() || filters.decision.is_empty() =>
                {
                    Some(
                        wanted
                            .iter()
                            .map(|s| counts.get(*s).copied().unwrap_or(0))
                            .sum(),
                    )
                }
                _ => None,
            };
            match known {
                Some(k) if whole_day => n += k,
                // Nothing in this file can match: no need to read it.
                Some(0) => {}
                _ => scan.push(f),
            }
        }
        if !scan.is_empty() {
            let table = LakeTable::new(Dataset::Events, scan, self.lake.store_url().clone(), false);
            let df = self
                .ctx
                .read_table(Arc::new(table))?
                .filter(self.scope.event_predicate())?;
            n += Self::count(df).await?;
        }
        Ok(n)
    }
}

fn first_line(msg: &str) -> &str {
    msg.lines().next().unwrap_or(msg)
}
