//! Running an export: pin table versions, count, stream each dataset's record batches
//! through its encoder into the artifact (one file, or a ZIP of parts), and report
//! what was written.
//!
//! Decoding runs on the async side, encoding and writing on a blocking thread, joined
//! by a channel of a few batches: two cores busy, memory bounded by the channel.

pub mod artifact;
mod direct;
pub mod encode;
mod manifest;
mod merge;
mod pdf;
mod preview;
mod values;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use deltalake::arrow::datatypes::SchemaRef;
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::datafusion::dataframe::DataFrame;
use deltalake::datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use deltalake::datafusion::physical_plan::{ExecutionPlanProperties, execute_stream};
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::definition::Definition;
use crate::error::{EngineError, Result};
use crate::integrity::{
    IdDigest, Manifest, ManifestFile, ManifestReport, ManifestSchedule, REPORT_BINDING_METHOD,
    Signer, sha256_hex,
};
use crate::lake::Lake;
use crate::lake::table::DEFAULT_BATCH_ROWS;
use crate::model::{ColumnKind, Dataset};
use crate::redact::RedactionRules;
use crate::scope::ExportScope;
pub use crate::views::{Include, PinnedTables, ScopedQueries};
pub use artifact::{ArtifactFile, ArtifactTarget};
use artifact::{ArtifactWriter, DatasetJob};
pub use encode::{EncodeOptions, Format};
use manifest::{build_manifest, package_files};
use pdf::{bind_report, render_report, run_report};
pub use preview::{Preview, check_definition, preview};
pub use values::{VALUE_COLUMNS, distinct_values};

/// Batches each sorted partition may decode ahead of the merge. Deeper queues did not
/// make exports faster here (both cores are already busy) and only hold more memory.
const INPUT_QUEUE_BATCHES: usize = 1;

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
    /// A SQL definition whose result takes the place of the events dataset.
    pub definition: Option<Definition>,
    /// Redaction applied to every free-text value.
    pub redaction: RedactionRules,
    /// Audit-log entries (kept by the server) the `audit_log` view reads.
    pub audit_log: Vec<RecordBatch>,
    /// Memory the export's queries may hold before they spill to disk.
    pub memory_limit: usize,
    /// How PDF reports look.
    pub report_style: crate::report::ReportStyle,
}

impl ExportRequest {
    /// A request with the defaults for everything but scope, format and name.
    pub fn new(name: impl Into<String>, scope: ExportScope, format: Format) -> Self {
        ExportRequest {
            name: name.into(),
            scope,
            format,
            include: Vec::new(),
            include_payloads: true,
            encode: EncodeOptions::default(),
            split_rows: DEFAULT_SPLIT_ROWS,
            definition: None,
            redaction: RedactionRules::default(),
            audit_log: Vec::new(),
            memory_limit: crate::views::QUERY_MEMORY_LIMIT,
            report_style: crate::report::ReportStyle::default(),
        }
    }

    /// The tables this request reads.
    pub fn tables(&self) -> Vec<Dataset> {
        // Definitions and the report may read every view.
        if self.definition.is_some()
            || self.format == Format::Pdf
            || self.include.contains(&Include::Report)
        {
            return Dataset::ALL.to_vec();
        }
        let mut needed = vec![Dataset::Events];
        if self.include.contains(&Include::Escalations) {
            needed.push(Dataset::Escalations);
        }
        if self.include.contains(&Include::ConfigHistory) {
            needed.push(Dataset::ConfigVersions);
        }
        needed
    }

    /// Refuses combinations that cannot make an artifact; errors name the field.
    pub fn check(&self) -> Result<()> {
        let report = self.format == Format::Pdf || self.include.contains(&Include::Report);
        if report && self.definition.is_some() {
            return Err(EngineError::invalid(
                "format: the pdf report summarises the scope's events; it cannot accompany a preset or SQL definition (export the definition separately)",
            ));
        }
        if self.encode.profile != encode::Profile::Native {
            if !matches!(self.format, Format::Json | Format::Ndjson) {
                return Err(EngineError::invalid(format!(
                    "profile: the {} profile lays out JSON records; use format json or ndjson (format {} has no profiles)",
                    self.encode.profile.as_str(),
                    self.format.as_str()
                )));
            }
            if self.definition.is_some() {
                return Err(EngineError::invalid(
                    "profile: profiles map the event columns; a preset or SQL definition chooses its own columns",
                ));
            }
        }
        if self.format == Format::Pdf && !self.include.is_empty() {
            return Err(EngineError::invalid(
                "include: format pdf is the report alone; to package the report with data, use a data format (csv, json, ndjson, parquet) with include [\"report\", ...]",
            ));
        }
        Ok(())
    }

    /// Name of the main dataset: `events`, or the definition's name.
    pub fn main_dataset(&self) -> String {
        match &self.definition {
            Some(d) => d.name.clone(),
            None => "events".to_string(),
        }
    }

    /// The parameters as the manifest and API record them.
    pub fn parameters(&self) -> serde_json::Value {
        let f = &self.scope.filters;
        let mut filters = serde_json::Map::new();
        let lists = [
            ("policy", &f.policy),
            ("gateway", &f.gateway),
            ("consumer_group", &f.consumer_group),
            ("consumer", &f.consumer),
            ("provider", &f.provider),
            ("model", &f.model),
            ("reason_code", &f.reason_code),
        ];
        for (k, v) in lists {
            if !v.is_empty() {
                filters.insert(k.into(), serde_json::json!(v));
            }
        }
        if !f.decision.is_empty() {
            let d: Vec<&str> = f.decision.iter().map(|d| d.as_str()).collect();
            filters.insert("decision".into(), serde_json::json!(d));
        }
        if let Some(m) = f.min_severity {
            filters.insert("min_severity".into(), serde_json::json!(m.as_str()));
        }
        let include: Vec<&str> = self.include.iter().map(|i| i.name()).collect();
        let mut parameters = serde_json::json!({
            "from": self.scope.from,
            "to": self.scope.to,
            "timezone": self.scope.timezone.name(),
            "format": self.format.as_str(),
            "filters": filters,
            "include": include,
            "include_payloads": self.include_payloads,
            "preset": self.definition.as_ref().map(|d| d.name.clone()),
            "split_rows": self.split_rows,
        });
        // Only when set, so manifests of native exports keep their bytes.
        if self.encode.profile != encode::Profile::Native {
            parameters["profile"] = serde_json::json!(self.encode.profile.as_str());
        }
        parameters
    }

    fn queries(
        &self,
        lake: &Lake,
        pinned: &PinnedTables,
        batch_rows: usize,
    ) -> Result<ScopedQueries> {
        Ok(
            ScopedQueries::with_limits(lake, pinned, &self.scope, batch_rows, self.memory_limit)
                .with_redaction(Arc::new(self.redaction.compile()?), self.include_payloads)
                .with_audit_log(self.audit_log.clone()),
        )
    }
}

/// Who made an export, when, and the key that signs its manifest.
#[derive(Debug, Clone)]
pub struct Evidence {
    /// Export id (`exp_` + ULID).
    pub export_id: String,
    /// The requester.
    pub requested_by: String,
    /// When the export ran (also its `as_of`: the tables were pinned before).
    pub created_at: DateTime<Utc>,
    /// For a scheduled run after the first: SHA-256 (lowercase hex) of the previous
    /// run's `manifest.json` bytes as stored in its artifact
    /// ([`ExportOutcome::manifest_sha256`] of that run).
    pub previous_manifest_sha256: Option<String>,
    /// The schedule and period of a scheduled run (`None` otherwise), recorded in the
    /// manifest; its `previous_period` names the run `previous_manifest_sha256`
    /// hashes.
    pub schedule: Option<ManifestSchedule>,
    /// Signs the manifest.
    pub signer: Arc<Signer>,
}

/// A new export id: `exp_` + ULID.
pub fn new_export_id(now: DateTime<Utc>) -> String {
    let ms = now.timestamp_millis().max(0) as u64;
    let ulid = ulid::Ulid::from_parts(ms, rand_u128());
    format!("exp_{ulid}")
}

fn rand_u128() -> u128 {
    let mut b = [0u8; 16];
    // Without entropy the id is still unique enough from the time; never fail here.
    let _ = getrandom::fill(&mut b);
    u128::from_le_bytes(b)
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
    /// The data files written (one, or the ZIP's entries besides the manifest).
    pub files: Vec<ArtifactFile>,
    /// Artifact size in bytes.
    pub bytes: u64,
    /// SHA-256 of the artifact, hex.
    pub sha256: String,
    /// Rows per dataset.
    pub rows: BTreeMap<String, u64>,
    /// Delta versions read.
    pub versions: BTreeMap<Dataset, Option<u64>>,
    /// The signed manifest.
    pub manifest: Manifest,
    /// SHA-256 of `manifest.json`, hex.
    pub manifest_sha256: String,
}

/// Lets a caller follow and stop a running export.
#[derive(Clone, Default)]
pub struct ExportControl {
    /// Set to stop the export at the next batch.
    pub cancel: Arc<AtomicBool>,
    /// Called with the number of event rows written so far (for a PDF report, which
    /// writes no rows as it goes, a share of `expected_rows` that follows its stages).
    pub progress: Option<Arc<dyn Fn(u64) + Send + Sync>>,
    /// The preview count, when the caller has it: the scale of a report's stages.
    pub expected_rows: Option<u64>,
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

/// An included dataset's rows; `None` for the report, which is not a dataset.
async fn include_frame(
    q: &ScopedQueries,
    inc: Include,
) -> Result<Option<(DataFrame, Option<Dataset>)>> {
    Ok(Some(match inc {
        Include::Escalations => (q.escalations()?, Some(Dataset::Escalations)),
        Include::ConfigHistory => (q.config_history()?, Some(Dataset::ConfigVersions)),
        Include::Summary => (q.summary().await?, None),
        Include::AuditLog => (q.audit_log()?, None),
        Include::Report => return Ok(None),
    }))
}

/// Runs an export; `target` is told the artifact's file name and says where it goes.
/// The artifact carries a manifest signed with `evidence.signer`: inside a ZIP, or
/// beside a single file (`NAME.manifest.json`, `NAME.manifest.sig`).
pub async fn run_export(
    lake: &Lake,
    pinned: &PinnedTables,
    request: &ExportRequest,
    evidence: &Evidence,
    target: impl FnOnce(&str) -> ArtifactTarget,
    control: &ExportControl,
) -> Result<ExportOutcome> {
    request.check()?;
    if request.format == Format::Pdf {
        return run_report(lake, pinned, request, evidence, target, control).await;
    }
    // The Parquet encoder is the slowest stage and buffers row groups of its own;
    // smaller decode batches keep the partitions' batches in flight from adding up.
    let batch_rows = if request.format == Format::Parquet {
        1024
    } else {
        DEFAULT_BATCH_ROWS
    };
    let q = request.queries(lake, pinned, batch_rows)?;
    let main = match &request.definition {
        None => None,
        Some(d) => Some(q.definition(&d.sql).await?),
    };
    let main_rows = match &main {
        None => q.count_events().await?,
        Some(df) => ScopedQueries::count(df.clone()).await?,
    };
    let split = request.split_rows.max(1);
    let zipped = !request.include.is_empty() || main_rows > split;
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
    // A single file is recorded under the name it is published as.
    let single_name = match (&path, zipped) {
        (Some(p), false) => p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| file_name.clone()),
        _ => format!("{base}.{ext}"),
    };
    let writer = ArtifactWriter::create(target, zipped, request.format == Format::Parquet)?;
    let mut writer = Some(writer);
    let digest = Arc::new(Mutex::new(IdDigest::default()));
    let main_name = request.main_dataset();
    let result = async {
        let mut rows = BTreeMap::new();
        let mut datasets: Vec<(usize, String)> = Vec::new();
        let (frame, dataset, merge) = match main {
            None => {
                let columns = q.columns(Dataset::Events);
                (q.events_ordered(&columns)?, Some(Dataset::Events), true)
            }
            Some(df) => (df, None, false),
        };
        let part_prefix = zipped.then(|| sanitize_name(&main_name));
        let n = write_dataset(
            &mut writer,
            DatasetOutput {
                df: frame,
                dataset,
                merge,
                part_prefix,
                single_name,
                split,
                digest: Some(digest.clone()),
            },
            request,
            control,
        )
        .await?;
        rows.insert(main_name.clone(), n);
        datasets.push((files_so_far(&writer), main_name.clone()));
        for inc in &request.include {
            let Some((df, ds)) = include_frame(&q, *inc).await? else {
                continue;
            };
            let quiet = ExportControl {
                cancel: control.cancel.clone(),
                progress: None,
                expected_rows: None,
            };
            let n = write_dataset(
                &mut writer,
                DatasetOutput {
                    df,
                    dataset: ds,
                    merge: false,
                    part_prefix: None,
                    single_name: format!("{}.{ext}", inc.name()),
                    split: u64::MAX,
                    digest: None,
                },
                request,
                &quiet,
            )
            .await?;
            rows.insert(inc.name().to_string(), n);
            datasets.push((files_so_far(&writer), inc.name().to_string()));
        }
        Ok::<_, EngineError>((rows, datasets))
    }
    .await;
    let mut writer = writer
        .ok_or_else(|| EngineError::Io(std::io::Error::other("the artifact writer panicked")))?;
    let (rows, datasets) = match result {
        Ok(r) => r,
        Err(e) => {
            writer.discard();
            return Err(e);
        }
    };
    let digest = digest.lock().map(|d| d.clone()).unwrap_or_default();
    let total = rows.get(&main_name).copied().unwrap_or(0);
    let mut manifest = build_manifest(
        request,
        evidence,
        pinned,
        writer.files(),
        &datasets,
        total,
        &digest,
    );
    if request.include.contains(&Include::Report) {
        let pdf = match render_report(
            lake,
            pinned,
            request,
            &q,
            evidence,
            &digest,
            &manifest.sha256(),
            &|_| {},
        )
        .await
        {
            Ok(pdf) => pdf,
            Err(e) => {
                writer.discard();
                return Err(e);
            }
        };
        if let Err(e) = writer.write_file(REPORT_ENTRY.to_string(), pdf, total) {
            writer.discard();
            return Err(e);
        }
        manifest = bind_report(manifest, writer.files());
    }
    let data_files = writer.files().to_vec();
    let manifest_bytes = manifest.to_bytes();
    let manifest_sha256 = sha256_hex(&manifest_bytes);
    let package = package_files(
        evidence,
        &manifest,
        &manifest_bytes,
        writer.files(),
        writer.is_zip(),
    );
    let written = tokio::task::spawn_blocking(move || {
        let r = package
            .into_iter()
            .try_for_each(|(name, bytes)| writer.add_metadata_file(name, bytes));
        match r {
            Ok(()) => writer.publish(),
            Err(e) => {
                writer.discard();
                Err(e)
            }
        }
    })
    .await
    .map_err(|e| EngineError::Io(std::io::Error::other(e)))??;
    Ok(ExportOutcome {
        file_name,
        path,
        content_type,
        files: data_files,
        bytes: written.bytes,
        sha256: written.sha256,
        rows,
        versions: pinned.versions(),
        manifest,
        manifest_sha256,
    })
}

/// The report's entry name inside a ZIP package.
pub const REPORT_ENTRY: &str = "report.pdf";

fn files_so_far(writer: &Option<ArtifactWriter>) -> usize {
    writer.as_ref().map_or(0, |w| w.files().len())
}

/// One dataset's rows and where they go.
struct DatasetOutput {
    df: DataFrame,
    /// The stored dataset the columns come from (`None`: derived columns).
    dataset: Option<Dataset>,
    /// Merge the plan's sorted partitions in the writer (events only).
    merge: bool,
    part_prefix: Option<String>,
    single_name: String,
    split: u64,
    /// Accumulates the ids and times of the rows written.
    digest: Option<Arc<Mutex<IdDigest>>>,
}

/// Runs `out.df` and writes its rows through `writer` on a blocking thread. For
/// events the plan's sorted partitions are merged by the writer itself (see
/// `merge.rs`); other datasets arrive as one sorted stream.
async fn write_dataset(
    writer: &mut Option<ArtifactWriter>,
    out: DatasetOutput,
    request: &ExportRequest,
    control: &ExportControl,
) -> Result<u64> {
    let (inputs, schema) = sorted_inputs(out.df, out.merge, out.digest).await?;
    let time = out.dataset.map_or("timestamp", |d| d.time_column());
    let key = out.dataset.map_or("id", |d| d.key_columns()[0]);
    let merge_key = (
        schema.index_of(time).unwrap_or(0),
        schema.index_of(key).unwrap_or(0),
    );
    if inputs.len() > 1 && (schema.index_of(time).is_err() || schema.index_of(key).is_err()) {
        return Err(EngineError::invalid(
            "a merged export must contain its time and id columns",
        ));
    }
    let (format, encode, dataset) = (request.format, request.encode, out.dataset);
    let job = DatasetJob {
        inputs,
        merge_key,
        make_encoder: Box::new(move || encode::encoder(format, dataset, schema.clone(), encode)),
        part_prefix: out.part_prefix,
        single_name: out.single_name,
        ext: request.format.extension(),
        split: out.split,
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
/// With `digest`, each task also adds its batches' ids and times to it (before it
/// closes its channel, so the digest is complete once every input has ended).
async fn sorted_inputs(
    df: DataFrame,
    split: bool,
    digest: Option<Arc<Mutex<IdDigest>>>,
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
        let (tx, rx) = mpsc::channel(INPUT_QUEUE_BATCHES);
        let digest = digest.clone();
        tokio::spawn(async move {
            let mut local = IdDigest::default();
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(EngineError::from);
                if digest.is_some()
                    && let Ok(b) = &batch
                {
                    local.add_batch(b);
                }
                if tx.send(batch).await.is_err() {
                    return;
                }
            }
            if let Some(d) = digest
                && let Ok(mut d) = d.lock()
            {
                d.merge(&local);
            }
            drop(tx);
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
