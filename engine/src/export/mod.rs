//! Running an export: pin table versions, count, stream each dataset's record batches
//! through its encoder into the artifact (one file, or a ZIP of parts), and report
//! what was written.
//!
//! Decoding runs on the async side, encoding and writing on a blocking thread, joined
//! by a channel of a few batches: two cores busy, memory bounded by the channel.

pub mod artifact;
mod direct;
pub mod encode;
mod merge;
pub mod scoped;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use deltalake::arrow::datatypes::SchemaRef;
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::datafusion::dataframe::DataFrame;
use deltalake::datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use deltalake::datafusion::physical_plan::{ExecutionPlanProperties, execute_stream};
use futures::StreamExt;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::error::{EngineError, Result};
use crate::lake::Lake;
use crate::lake::table::DEFAULT_BATCH_ROWS;
use crate::model::{ColumnKind, Dataset};
use crate::scope::ExportScope;
pub use artifact::{ArtifactFile, ArtifactTarget};
use artifact::{ArtifactWriter, DatasetJob};
pub use encode::{EncodeOptions, Format};
pub use scoped::{Include, PinnedTables, ScopedQueries};

/// Default rows per file before an export becomes a ZIP of parts.
pub const DEFAULT_SPLIT_ROWS: u64 = 1_000_000;

/// Everything that defines an export's bytes.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    /// Display name; becomes the file name after [`sanitize_name`].
    pub name: String,
    /// Window and filters.
    pub scope: ExportScope,
    /// Output format.
    pub format: Format,
    /// Datasets besides events.
    pub include: Vec<Include>,
    /// Whether `input` and `output` are exported.
    pub include_payloads: bool,
    /// Encoder options.
    pub encode: EncodeOptions,
    /// Rows per file before splitting into a ZIP of parts.
    pub split_rows: u64,
}

/// Record counts of a scope, per dataset.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Preview {
    /// Event records the export will contain.
    pub records: u64,
    /// Rows per dataset (`events`, and each included one).
    pub by_dataset: BTreeMap<String, u64>,
}

/// What an export wrote.
#[derive(Debug, Clone)]
pub struct ExportOutcome {
    /// Artifact file name (`Q1-2026-SOC2-Audit.csv` or `.zip`).
    pub file_name: String,
    /// Where it was written (`None` for standard output).
    pub path: Option<PathBuf>,
    /// Artifact content type.
    pub content_type: &'static str,
    /// The files written (one, or the ZIP's entries).
    pub files: Vec<ArtifactFile>,
    /// Artifact size in bytes.
    pub bytes: u64,
    /// SHA-256 of the artifact, hex.
    pub sha256: String,
    /// Rows per dataset.
    pub rows: BTreeMap<String, u64>,
    /// Delta versions read.
    pub versions: BTreeMap<Dataset, Option<u64>>,
}

/// Lets a caller follow and stop a running export.
#[derive(Clone, Default)]
pub struct ExportControl {
    /// Set to stop the export at the next batch.
    pub cancel: Arc<AtomicBool>,
    /// Called with the number of event rows written so far.
    pub progress: Option<Arc<dyn Fn(u64) + Send + Sync>>,
}

/// Makes a name safe as a file name: letters, digits, `-`, `_`, `.` kept, anything
/// else becomes `-`; never empty, never starting with `.`, at most 120 characters.
pub fn sanitize_name(name: &str) -> String {
    let mut out = String::new();
    for c in name.trim().chars() {
        let c = if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
            c
        } else {
            '-'
        };
        if c == '-' && out.ends_with('-') {
            continue;
        }
        out.push(c);
    }
    let out = out.trim_matches(|c| c == '-' || c == '.').to_string();
    let mut out: String = out.chars().take(120).collect();
    if out.is_empty() {
        out = "export".to_string();
    }
    out
}

/// The event columns an export writes.
pub fn event_columns(include_payloads: bool) -> Vec<&'static str> {
    Dataset::Events
        .columns()
        .iter()
        .filter(|c| {
            include_payloads
                || !(c.kind == ColumnKind::Text && matches!(c.name, "input" | "output"))
        })
        .map(|c| c.name)
        .collect()
}

/// Counts what an export of `scope` would contain.
pub async fn preview(
    lake: &Lake,
    pinned: &PinnedTables,
    scope: &ExportScope,
    include: &[Include],
) -> Result<Preview> {
    let q = ScopedQueries::new(lake, pinned, scope);
    let records = q.count_events().await?;
    let mut by_dataset = BTreeMap::from([("events".to_string(), records)]);
    for inc in include {
        let n = match inc {
            Include::Escalations => ScopedQueries::count(q.escalations()?).await?,
            Include::ConfigHistory => ScopedQueries::count(q.config_history()?).await?,
            Include::Summary => ScopedQueries::count(q.summary().await?).await?,
            Include::AuditLog => return Err(audit_log_unavailable()),
        };
        by_dataset.insert(inc.name().to_string(), n);
    }
    Ok(Preview {
        records,
        by_dataset,
    })
}

fn audit_log_unavailable() -> EngineError {
    EngineError::invalid(
        "include: audit_log is kept by the server; it cannot be exported from a bare data directory",
    )
}

/// Runs an export; `target` is told the artifact's file name and says where it goes.
pub async fn run_export(
    lake: &Lake,
    pinned: &PinnedTables,
    request: &ExportRequest,
    target: impl FnOnce(&str) -> ArtifactTarget,
    control: &ExportControl,
) -> Result<ExportOutcome> {
    if request.include.contains(&Include::AuditLog) {
        return Err(audit_log_unavailable());
    }
    // The Parquet encoder is the slowest stage and buffers row groups of its own;
    // smaller decode batches keep the partitions' batches in flight from adding up.
    let batch_rows = if request.format == Format::Parquet {
        1024
    } else {
        DEFAULT_BATCH_ROWS
    };
    let q = ScopedQueries::with_batch_rows(lake, pinned, &request.scope, batch_rows);
    let event_rows = q.count_events().await?;
    let split = request.split_rows.max(1);
    let zipped = !request.include.is_empty() || event_rows > split;
    let base = sanitize_name(&request.name);
    let ext = request.format.extension();
    let file_name = if zipped {
        format!("{base}.zip")
    } else {
        format!("{base}.{ext}")
    };
    let content_type = if zipped {
        "application/zip"
    } else {
        request.format.content_type()
    };

    let target = target(&file_name);
    let path = match &target {
        ArtifactTarget::File { path, .. } => Some(path.clone()),
        ArtifactTarget::Stdout => None,
    };
    let writer = ArtifactWriter::create(target, zipped, request.format == Format::Parquet)?;
    let mut writer = Some(writer);
    let result = async {
        let mut rows = BTreeMap::new();
        let columns = event_columns(request.include_payloads);
        let events = q.events_ordered(&columns)?;
        let single_name = format!("{base}.{ext}");
        let part_prefix = zipped.then(|| "events".to_string());
        let n = write_dataset(
            &mut writer,
            events,
            Dataset::Events,
            request,
            part_prefix,
            single_name,
            split,
            control,
        )
        .await?;
        rows.insert("events".to_string(), n);
        for inc in &request.include {
            let (df, ds) = match inc {
                Include::Escalations => (q.escalations()?, Dataset::Escalations),
                Include::ConfigHistory => (q.config_history()?, Dataset::ConfigVersions),
                Include::Summary => (q.summary().await?, Dataset::Events),
                Include::AuditLog => return Err(audit_log_unavailable()),
            };
            let name = format!("{}.{ext}", inc.name());
            let quiet = ExportControl {
                cancel: control.cancel.clone(),
                progress: None,
            };
            let n =
                write_dataset(&mut writer, df, ds, request, None, name, u64::MAX, &quiet).await?;
            rows.insert(inc.name().to_string(), n);
        }
        Ok::<_, EngineError>(rows)
    }
    .await;
    let writer = writer
        .ok_or_else(|| EngineError::Io(std::io::Error::other("the artifact writer panicked")))?;
    let rows = match result {
        Ok(rows) => rows,
        Err(e) => {
            writer.discard();
            return Err(e);
        }
    };
    let written = tokio::task::spawn_blocking(move || writer.publish())
        .await
        .map_err(|e| EngineError::Io(std::io::Error::other(e)))??;
    Ok(ExportOutcome {
        file_name,
        path,
        content_type,
        files: written.files,
        bytes: written.bytes,
        sha256: written.sha256,
        rows,
        versions: pinned.versions(),
    })
}

/// Runs `df` and writes its rows through `writer` on a blocking thread. For events
/// the plan's sorted partitions are merged by the writer itself (see `merge.rs`);
/// other datasets arrive as one sorted stream.
#[allow(
    clippy::too_many_arguments,
    reason = "internal helper; the arguments are distinct roles"
)]
async fn write_dataset(
    writer: &mut Option<ArtifactWriter>,
    df: DataFrame,
    dataset: Dataset,
    request: &ExportRequest,
    part_prefix: Option<String>,
    single_name: String,
    split: u64,
    control: &ExportControl,
) -> Result<u64> {
    let (inputs, schema) = sorted_inputs(df, dataset == Dataset::Events).await?;
    let merge_key = (
        schema.index_of(dataset.time_column()).unwrap_or(0),
        schema.index_of(dataset.key_columns()[0]).unwrap_or(0),
    );
    if inputs.len() > 1
        && (schema.index_of(dataset.time_column()).is_err() || schema.index_of("id").is_err())
    {
        return Err(EngineError::invalid(
            "a merged export must contain its time and id columns",
        ));
    }
    let (format, encode) = (request.format, request.encode);
    let job = DatasetJob {
        inputs,
        merge_key,
        make_encoder: Box::new(move || encode::encoder(format, dataset, schema.clone(), encode)),
        part_prefix,
        single_name,
        ext: request.format.extension(),
        split,
        cancel: control.cancel.clone(),
        progress: control.progress.clone(),
    };
    let mut w = writer.take().expect("writer present between datasets");
    let (w, result) = tokio::task::spawn_blocking(move || {
        let r = w.write_dataset(job);
        (w, r)
    })
    .await
    .map_err(|e| EngineError::Io(std::io::Error::other(e)))?;
    *writer = Some(w);
    result
}

/// Executes `df` into sorted streams, each forwarded by its own task into a channel of
/// one batch (so partitions decode in parallel while memory stays bounded). With
/// `split`, a plan that ends in a sort-preserving merge is executed below the merge,
/// one stream per sorted partition; DataFusion's planner guarantees each is sorted.
async fn sorted_inputs(
    df: DataFrame,
    split: bool,
) -> Result<(Vec<mpsc::Receiver<Result<RecordBatch>>>, SchemaRef)> {
    let task_ctx = Arc::new(df.task_ctx());
    let plan = df.create_physical_plan().await?;
    let schema = plan.schema();
    let mut streams = Vec::new();
    let merge = plan
        .downcast_ref::<SortPreservingMergeExec>()
        .filter(|m| m.fetch().is_none());
    match merge {
        Some(spm) if split => {
            let child = spm.input();
            for p in 0..child.output_partitioning().partition_count() {
                streams.push(child.execute(p, task_ctx.clone())?);
            }
        }
        _ => streams.push(execute_stream(plan, task_ctx)?),
    }
    let mut receivers = Vec::new();
    for mut stream in streams {
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            while let Some(batch) = stream.next().await {
                if tx.send(batch.map_err(EngineError::from)).await.is_err() {
                    break;
                }
            }
        });
        receivers.push(rx);
    }
    Ok((receivers, schema))
}

/// Where a CLI `--output` goes: a directory receives `file_name`, anything else is the
/// file path itself.
pub fn resolve_output(output: &Path, file_name: &str) -> PathBuf {
    if output.is_dir() {
        output.join(file_name)
    } else {
        output.to_path_buf()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_never_become_paths() {
        assert_eq!(sanitize_name("Q1 2026 SOC2 Audit"), "Q1-2026-SOC2-Audit");
        assert_eq!(sanitize_name("../../etc/passwd"), "etc-passwd");
        assert_eq!(sanitize_name("..."), "export");
        assert_eq!(sanitize_name(""), "export");
        assert_eq!(sanitize_name("a/b\\c:d"), "a-b-c-d");
        assert_eq!(sanitize_name(&"x".repeat(500)).len(), 120);
    }
}
