//! The export service's shared state and the validation of export requests; the
//! worker loop is in [`worker`] and the ingest batcher in [`ingest`].

mod ingest;
mod worker;

pub use ingest::{Arrival, IngestFailure, IngestItem, IngestQueue, is_storage_full, spawn_batcher};
pub use worker::{HEARTBEAT, LEASE_MS, worker_loop};

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use anyhow::Result;
use evidex_engine::EngineError;
use evidex_engine::clock::Clock;
use evidex_engine::definition::{self, Definition};
use evidex_engine::export::encode::Profile;
use evidex_engine::export::{EncodeOptions, ExportRequest, Format, Include, PinnedTables};
use evidex_engine::integrity::Signer;
use evidex_engine::lake::Lake;
use evidex_engine::model::Dataset;
use evidex_engine::redact::RedactionRules;
use evidex_engine::scope::{ExportScope, Filters, parse_decision, parse_severity};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::Config;
use crate::store::{AuditEntry, Store};

/// Everything the API handlers and workers share.
pub struct Service {
    /// The metadata database.
    pub store: Store,
    /// The event lake.
    pub lake: Lake,
    /// Configuration.
    pub config: Config,
    /// Signs manifests.
    pub signer: Arc<Signer>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Where artifacts are kept (`STATE/artifacts/JOB/`, or the configured local
    /// `artifacts` directory); with object storage, where attempts are written
    /// before they are uploaded.
    pub artifacts: PathBuf,
    /// The artifacts bucket when `artifacts = "s3://..."`: every node reads
    /// artifacts there.
    pub remote_artifacts: Option<Arc<crate::artifacts::RemoteArtifacts>>,
    /// Counters for `/metrics`.
    pub metrics: Metrics,
    /// Per-dataset ingest batchers (server only).
    pub ingest: HashMap<Dataset, IngestQueue>,
    /// Key of download links.
    pub link_key: Vec<u8>,
    /// The event stream for SIEMs (`GET /v1/events/stream`).
    pub stream: Arc<evidex_engine::stream::EventStream>,
    /// The compiled redaction rules the stream last used.
    pub stream_redactor:
        std::sync::Mutex<Option<(RedactionRules, Arc<evidex_engine::redact::Redactor>)>>,
    /// Seals the secrets stored in the metadata database (webhook signing secrets).
    pub master_key: Arc<crate::secrets::MasterKey>,
    /// Ranged downloads logged recently: (export id, requester) → when (ms). See
    /// `api::audit_download`.
    pub recent_downloads: std::sync::Mutex<HashMap<(String, String), i64>>,
    /// Per-token request rates (`[limits]`).
    pub rate_limits: crate::limits::RateLimits,
}

/// What `/metrics` exposes from this process, as `prometheus` (the crate) metrics;
/// the job counts come from the metadata database at each scrape
/// (`api::ops::metrics`).
pub struct Metrics {
    /// `evidex_ingest_records_total{dataset, outcome}`: records received over HTTP.
    pub ingest_records: prometheus::IntCounterVec,
    /// Delta commits made by the ingest batchers (shared with them: the engine
    /// knows nothing of Prometheus).
    pub ingest_commits: Arc<AtomicU64>,
    /// `evidex_http_request_duration_seconds{method, route}`.
    pub latency: prometheus::HistogramVec,
}

/// Latency buckets in seconds.
pub const BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

impl Default for Metrics {
    fn default() -> Self {
        use prometheus::{HistogramOpts, IntCounterVec, Opts};
        // Fixed names and labels: these cannot fail (the crate checks the names).
        let ingest_records = IntCounterVec::new(
            Opts::new(
                "evidex_ingest_records_total",
                "Records received over HTTP, by dataset and outcome.",
            ),
            &["dataset", "outcome"],
        )
        .expect("a valid metric");
        // Every series from the start, at 0, so a rate over it has a beginning.
        for ds in Dataset::ALL {
            for outcome in ["accepted", "rejected"] {
                ingest_records.with_label_values(&[ds.cli_name(), outcome]);
            }
        }
        Metrics {
            ingest_records,
            ingest_commits: Arc::default(),
            latency: prometheus::HistogramVec::new(
                HistogramOpts::new(
                    "evidex_http_request_duration_seconds",
                    "Request latency by route.",
                )
                .buckets(BUCKETS.to_vec()),
                &["method", "route"],
            )
            .expect("a valid metric"),
        }
    }
}

/// Longest export name.
pub const MAX_NAME_CHARS: usize = 200;

/// Filters as the API spells them.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[schema(as = Filters)]
#[serde(deny_unknown_fields, default)]
pub struct FilterParams {
    /// Policy names.
    pub policy: Vec<String>,
    /// Decisions (`allow|block|redact|escalate|flag`, past tenses accepted).
    pub decision: Vec<String>,
    /// Gateway ids.
    pub gateway: Vec<String>,
    /// Consumer groups.
    pub consumer_group: Vec<String>,
    /// Consumers.
    pub consumer: Vec<String>,
    /// Providers.
    pub provider: Vec<String>,
    /// Models.
    pub model: Vec<String>,
    /// Reason codes.
    pub reason_code: Vec<String>,
    /// `info|low|medium|high|critical`: that severity and above.
    pub min_severity: Option<String>,
}

impl FilterParams {
    /// The engine's filters.
    ///
    /// # Errors
    /// `decision: ...` or `min_severity: ...` for a value that is not one.
    pub fn to_filters(&self) -> Result<Filters, EngineError> {
        Ok(Filters {
            policy: self.policy.clone(),
            decision: self
                .decision
                .iter()
                .map(|d| parse_decision(d))
                .collect::<Result<_, _>>()?,
            gateway: self.gateway.clone(),
            consumer_group: self.consumer_group.clone(),
            consumer: self.consumer.clone(),
            provider: self.provider.clone(),
            model: self.model.clone(),
            reason_code: self.reason_code.clone(),
            min_severity: self
                .min_severity
                .as_deref()
                .map(parse_severity)
                .transpose()?,
        })
    }
}

/// The body of `POST /v1/exports` and `/v1/exports/preview`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[schema(as = ExportRequest)]
#[serde(deny_unknown_fields)]
pub struct ExportParams {
    /// Name (file name after sanitising).
    #[serde(default)]
    pub name: Option<String>,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// First day or instant.
    pub from: String,
    /// Last day (inclusive) or instant (exclusive).
    pub to: String,
    /// IANA timezone.
    #[serde(default)]
    pub timezone: Option<String>,
    /// `csv|json|ndjson|parquet`.
    #[serde(default)]
    pub format: Option<String>,
    /// Filters.
    #[serde(default)]
    pub filters: FilterParams,
    /// Datasets besides events.
    #[serde(default)]
    pub include: Vec<String>,
    /// A preset name.
    #[serde(default)]
    pub preset: Option<String>,
    /// A SQL definition.
    #[serde(default)]
    pub sql: Option<String>,
    /// Export `input` / `output` (default true).
    #[serde(default)]
    pub include_payloads: Option<bool>,
    /// Neutralise spreadsheet formulas in CSV (default from configuration).
    #[serde(default)]
    pub csv_formula_guard: Option<bool>,
    /// Start each CSV file with a UTF-8 byte-order mark (default from configuration).
    #[serde(default)]
    pub csv_bom: Option<bool>,
    /// Record layout of json / ndjson events: `native` (default), `ecs`, `ocsf`,
    /// `splunk_hec`.
    #[serde(default)]
    pub profile: Option<String>,
    /// Deliver the artifact to the delivery bucket (default: the delivery settings'
    /// `enabled`).
    #[serde(default)]
    pub deliver: Option<bool>,
    /// Set by evidex when it stores a job, never by a request: the preset's SQL as it
    /// was when the job was created, so an edited preset cannot change a queued job
    /// or a re-run.
    #[serde(default, rename = "_preset_sql")]
    #[schema(ignore)]
    pub pinned_preset_sql: Option<String>,
    /// Set by evidex when it stores a job: the redaction rules in force then.
    #[serde(default, rename = "_redaction")]
    #[schema(ignore)]
    pub pinned_redaction: Option<RedactionRules>,
}

/// What a request may name besides its own fields: every preset (built-in, from
/// `presets_dir`, saved through the API) and the redaction rules in force (the
/// stored setting, else the configuration's).
#[derive(Debug, Clone)]
pub struct Catalog {
    /// Every preset, built-in first.
    pub presets: Vec<Definition>,
    /// The redaction rules new exports apply.
    pub redaction: RedactionRules,
}

/// The redaction rules in force: the ones saved through the API, else the
/// configuration's.
pub fn current_redaction(config: &Config, store: &Store) -> anyhow::Result<RedactionRules> {
    Ok(match store.setting(REDACTION_SETTING)? {
        Some(text) => serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("the stored redaction setting is unreadable: {e}"))?,
        None => config.redaction.clone(),
    })
}

/// Name of the redaction setting in the metadata database.
pub const REDACTION_SETTING: &str = "redaction";

impl Catalog {
    /// The catalog of `config` and the saved presets and settings of `store`.
    pub fn load(config: &Config, store: &Store) -> anyhow::Result<Catalog> {
        let mut presets = presets(config)?;
        for p in store.saved_presets()? {
            presets.push(Definition {
                name: p.name,
                description: p.description,
                format: Format::parse(&p.format)?,
                sql: p.sql,
                source: format!("saved:{}", p.id),
            });
        }
        let redaction = current_redaction(config, store)?;
        Ok(Catalog { presets, redaction })
    }

    /// The catalog of the configuration alone (no saved presets or settings).
    pub fn of_config(config: &Config) -> Result<Catalog, EngineError> {
        Ok(Catalog {
            presets: presets(config)?,
            redaction: config.redaction.clone(),
        })
    }
}

/// A validated export: the engine request, and the parameters as stored.
pub struct ValidExport {
    /// What the engine runs.
    pub request: ExportRequest,
    /// Normalised parameters (stored with the job; a re-run validates them again).
    pub params: Value,
    /// Description.
    pub description: String,
}

/// The built-in presets and those of `presets_dir`.
pub fn presets(config: &Config) -> Result<Vec<Definition>, EngineError> {
    let mut all = definition::builtin_presets();
    if let Some(dir) = &config.presets_dir {
        all.extend(definition::load_dir(dir)?);
    }
    Ok(all)
}

/// Parses a request body's export parameters, refusing the fields only evidex sets.
/// A deserialisation error as `path: message`, without the fields only evidex sets.
pub fn field_error<E: std::fmt::Display>(e: &serde_path_to_error::Error<E>) -> String {
    let path = e.path().to_string();
    let msg = e
        .inner()
        .to_string()
        .replace(", `_preset_sql`, `_redaction`", "")
        .replace(", `deliver`, `_preset_sql`", ", `deliver`");
    if path == "." || path.is_empty() {
        format!("body: {msg}")
    } else {
        format!("{path}: {msg}")
    }
}

fn parse_request(body: &[u8]) -> Result<ExportParams, EngineError> {
    let params: ExportParams =
        serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(body))
            .map_err(|e| EngineError::invalid(field_error(&e)))?;
    if params.pinned_preset_sql.is_some() || params.pinned_redaction.is_some() {
        return Err(EngineError::invalid(
            "body: _preset_sql and _redaction are set by evidex when it stores a job, not by a request",
        ));
    }
    Ok(params)
}

/// Parses and validates an export body; errors name the field.
pub fn parse_export(
    body: &[u8],
    config: &Config,
    catalog: &Catalog,
) -> Result<ValidExport, EngineError> {
    validate_export(parse_request(body)?, config, catalog)
}

/// Parses and validates a preview body: the same fields as an export, but a preview
/// makes no file, so `name` is optional.
pub fn parse_preview(
    body: &[u8],
    config: &Config,
    catalog: &Catalog,
) -> Result<ValidExport, EngineError> {
    let mut params = parse_request(body)?;
    if params.name.as_deref().is_none_or(|n| n.trim().is_empty()) {
        params.name = Some("preview".to_string());
    }
    validate_export(params, config, catalog)
}

/// Validates export parameters against the presets and redaction rules of `catalog`
/// (unless the parameters pin their own, as a stored job's do); errors name the field.
pub fn validate_export(
    p: ExportParams,
    config: &Config,
    catalog: &Catalog,
) -> Result<ValidExport, EngineError> {
    let name = p.name.clone().unwrap_or_default();
    let name = name.trim().to_string();
    if name.is_empty() {
        return Err(EngineError::invalid("name: must not be empty"));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(EngineError::invalid(format!(
            "name: is {} characters; the limit is {MAX_NAME_CHARS}",
            name.chars().count()
        )));
    }
    let description = p.description.clone().unwrap_or_default();
    if description.len() > 4000 {
        return Err(EngineError::invalid("description: the limit is 4000 bytes"));
    }
    let filters = p.filters.to_filters()?;
    let timezone = p.timezone.clone().unwrap_or_else(|| "UTC".to_string());
    let scope = ExportScope::new(&p.from, &p.to, &timezone, filters)?;
    let mut include = Vec::new();
    for i in &p.include {
        let inc = Include::parse(i)?;
        if !include.contains(&inc) {
            include.push(inc);
        }
    }
    let definition = match (&p.preset, &p.sql) {
        (Some(_), Some(_)) => {
            return Err(EngineError::invalid(
                "preset: give either preset or sql, not both",
            ));
        }
        (Some(name), None) => {
            let found = catalog.presets.iter().find(|d| &d.name == name).cloned();
            match (found, &p.pinned_preset_sql) {
                // A stored job runs the SQL its preset had when the job was created,
                // checked again under today's rules.
                (found, Some(sql)) => Some(Definition {
                    name: name.clone(),
                    description: found
                        .as_ref()
                        .map(|d| d.description.clone())
                        .unwrap_or_default(),
                    format: found.as_ref().map(|d| d.format).unwrap_or(Format::Csv),
                    sql: {
                        definition::check_sql(sql)?;
                        sql.clone()
                    },
                    source: format!("preset {name} as saved when the job was created"),
                }),
                (Some(d), None) => Some(d),
                (None, None) => {
                    let names: Vec<&str> =
                        catalog.presets.iter().map(|d| d.name.as_str()).collect();
                    return Err(EngineError::invalid(format!(
                        "preset: unknown preset {name:?}; available: {}",
                        names.join(", ")
                    )));
                }
            }
        }
        (None, Some(sql)) => {
            definition::check_sql(sql)?;
            Some(Definition {
                name: "query".to_string(),
                description: "SQL definition".to_string(),
                format: Format::Csv,
                sql: sql.clone(),
                source: "request".to_string(),
            })
        }
        (None, None) => None,
    };
    let format = match (&p.format, &definition) {
        (Some(f), _) => Format::parse(f)?,
        (None, Some(d)) => d.format,
        (None, None) => Format::Csv,
    };
    let mut request = ExportRequest::new(name.clone(), scope, format);
    request.include = include;
    request.definition = definition;
    request.include_payloads = p.include_payloads.unwrap_or(true);
    request.encode = EncodeOptions {
        csv_formula_guard: p
            .csv_formula_guard
            .unwrap_or(config.export.csv_formula_guard),
        csv_bom: p.csv_bom.unwrap_or(config.export.csv_bom),
        profile: p
            .profile
            .as_deref()
            .map(Profile::parse)
            .transpose()?
            .unwrap_or_default(),
    };
    request.check()?;
    request.split_rows = config.export.split_rows;
    request.redaction = p
        .pinned_redaction
        .clone()
        .unwrap_or_else(|| catalog.redaction.clone());
    request.memory_limit = config.export.query_memory_mb << 20;
    request.report_style = config
        .report_style()
        .map_err(|e| EngineError::Config(format!("{e:#}")))?;
    let params = json!({
        "name": name,
        "description": description,
        "from": p.from,
        "to": p.to,
        "timezone": timezone,
        "format": format.as_str(),
        "filters": request.parameters()["filters"],
        "include": request.parameters()["include"],
        "preset": p.preset,
        "sql": p.sql,
        "include_payloads": request.include_payloads,
        "csv_formula_guard": request.encode.csv_formula_guard,
        "csv_bom": request.encode.csv_bom,
        "profile": request.encode.profile.as_str(),
        "deliver": p.deliver,
        "_preset_sql": p.preset.as_ref().and(request.definition.as_ref().map(|d| d.sql.clone())),
        "_redaction": request.redaction,
    });
    Ok(ValidExport {
        request,
        params,
        description,
    })
}

/// Re-validates stored parameters (a job's, for a worker or a re-run): they pin the
/// preset SQL and redaction rules of the job's creation; jobs stored before that
/// use the catalog's.
pub fn export_from_params(
    params: &Value,
    config: &Config,
    catalog: &Catalog,
) -> Result<ValidExport, EngineError> {
    let p: ExportParams = serde_json::from_value(params.clone())
        .map_err(|e| EngineError::invalid(format!("stored parameters: {e}")))?;
    validate_export(p, config, catalog)
}

/// Audit entries as the engine's `audit_log` dataset.
pub fn audit_batches(
    entries: &[AuditEntry],
) -> Result<Vec<evidex_engine::arrow::record_batch::RecordBatch>> {
    use evidex_engine::arrow::array::{
        ArrayRef, Int64Array, StringArray, TimestampMicrosecondArray,
    };
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let schema = evidex_engine::audit::schema();
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(entries.iter().map(|e| e.seq))),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(entries.iter().map(|e| e.at * 1000))
                .with_timezone("UTC"),
        ),
        Arc::new(StringArray::from_iter_values(
            entries.iter().map(|e| e.actor.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            entries.iter().map(|e| e.action.as_str()),
        )),
        Arc::new(StringArray::from_iter(
            entries.iter().map(|e| e.target.as_deref()),
        )),
        Arc::new(StringArray::from_iter(
            entries.iter().map(|e| e.details.as_deref()),
        )),
        Arc::new(StringArray::from_iter_values(
            entries.iter().map(|e| e.prev_hash.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            entries.iter().map(|e| e.hash.as_str()),
        )),
    ];
    Ok(vec![
        evidex_engine::arrow::record_batch::RecordBatch::try_new(schema, cols)?,
    ])
}

impl Service {
    /// Now, in milliseconds.
    pub fn now_ms(&self) -> i64 {
        self.clock.now().timestamp_millis()
    }

    /// The artifact directory of a job.
    pub fn job_dir(&self, id: &str) -> Result<PathBuf> {
        // Job ids are generated here (`exp_` + ULID); anything else never reaches the
        // filesystem.
        if !id.starts_with("exp_") || !id[4..].chars().all(|c| c.is_ascii_alphanumeric()) {
            anyhow::bail!("not a job id: {id:?}");
        }
        Ok(self.artifacts.join(id))
    }

    /// The directory holding a completed job's artifact: its attempt's folder
    /// (`JOB/attempt-N/`, see `run_job`), or the job's folder for jobs completed
    /// before attempts had folders.
    pub fn artifact_dir(&self, id: &str, artifact: &Value) -> Result<PathBuf> {
        let dir = self.job_dir(id)?;
        Ok(match artifact["attempt"].as_i64() {
            Some(n) => dir.join(format!("attempt-{n}")),
            None => dir,
        })
    }

    /// Everything the engine needs to run `request` now: pinned tables and the audit
    /// log when the request reads it.
    pub async fn prepare(&self, request: &mut ExportRequest) -> Result<PinnedTables> {
        let reads_audit = request.include.contains(&Include::AuditLog)
            || request
                .definition
                .as_ref()
                .is_some_and(|d| d.sql.to_ascii_lowercase().contains("audit_log"));
        if reads_audit {
            let mut all = Vec::new();
            let mut after = 0;
            loop {
                let chunk = self.store.audit_entries(after, 10_000)?;
                let Some(last) = chunk.last() else { break };
                after = last.seq;
                all.extend(chunk);
            }
            request.audit_log = audit_batches(&all)?;
        }
        Ok(PinnedTables::pin_datasets(&self.lake, &request.tables(), None).await?)
    }
}
