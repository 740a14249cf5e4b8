//! `evidex export` and `evidex preview`: their scope flags, the definition `--preset`
//! or `--sql` names, and `--as-of-manifest`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use evidex_engine::clock::Clock;
use evidex_engine::definition::{self, Definition};
use evidex_engine::export::encode::Profile;
use evidex_engine::export::{
    self, ArtifactTarget, EncodeOptions, Evidence, ExportControl, ExportRequest, Format, Include,
    PinnedTables,
};
use evidex_engine::integrity::Manifest;
use evidex_engine::lake::Lake;
use evidex_engine::model::Dataset;
use evidex_engine::scope::{ExportScope, Filters, parse_decision, parse_severity};
use evidex_server::config::Config;
use evidex_server::store::Store;

use super::presets::{all_presets, stored_catalog};
use super::progress_bar;

/// Event filter flags shared by `export`, `preview` and `stream`.
#[derive(Debug, Args)]
pub struct FilterArgs {
    /// Policy filter (repeatable).
    #[arg(long)]
    pub policy: Vec<String>,
    /// Decision filter (repeatable).
    #[arg(long)]
    pub decision: Vec<String>,
    /// Gateway filter (repeatable).
    #[arg(long)]
    pub gateway: Vec<String>,
    /// Consumer group filter (repeatable).
    #[arg(long)]
    pub consumer_group: Vec<String>,
    /// Consumer filter (repeatable).
    #[arg(long)]
    pub consumer: Vec<String>,
    /// Provider filter (repeatable).
    #[arg(long)]
    pub provider: Vec<String>,
    /// Model filter (repeatable).
    #[arg(long)]
    pub model: Vec<String>,
    /// Reason code filter (repeatable).
    #[arg(long)]
    pub reason_code: Vec<String>,
    /// Only events at or above this severity.
    #[arg(long)]
    pub min_severity: Option<String>,
}

impl FilterArgs {
    /// The engine's filters.
    pub fn to_filters(&self) -> Result<Filters> {
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

/// Scope flags shared by `export` and `preview`.
#[derive(Debug, Args)]
pub struct ScopeArgs {
    /// First day (YYYY-MM-DD, inclusive) or an RFC 3339 instant.
    #[arg(long)]
    pub from: String,
    /// Last day (YYYY-MM-DD, inclusive) or an RFC 3339 instant (exclusive).
    #[arg(long)]
    pub to: String,
    /// IANA timezone of the day boundaries.
    #[arg(long, default_value = "UTC")]
    pub timezone: String,
    /// Event filters.
    #[command(flatten)]
    pub filters: FilterArgs,
    /// Datasets besides events: escalations, config_history, summary, audit_log,
    /// and report (the PDF evidence report in the ZIP) (repeatable).
    #[arg(long)]
    pub include: Vec<String>,
    /// Run a preset definition (see `evidex presets`) instead of the event export.
    #[arg(long, conflicts_with = "sql")]
    pub preset: Option<String>,
    /// Run the SQL definition in this file (one SELECT / WITH query over events,
    /// escalations, config_versions, audit_log).
    #[arg(long)]
    pub sql: Option<PathBuf>,
}

/// `evidex export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub scope: ScopeArgs,
    /// csv, json, ndjson or parquet [default: the preset's format, else csv].
    #[arg(long)]
    pub format: Option<String>,
    /// Export name; becomes the file name.
    #[arg(long)]
    pub name: Option<String>,
    /// Leave out the input and output texts.
    #[arg(long)]
    pub no_payloads: bool,
    /// Do not neutralise spreadsheet formulas in CSV cells.
    #[arg(long)]
    pub no_formula_guard: bool,
    /// Start each CSV file with a UTF-8 byte-order mark, so Excel on Windows reads it
    /// as UTF-8 [default: export.csv_bom].
    #[arg(long)]
    pub csv_bom: bool,
    /// Record layout of json / ndjson events: native, ecs, ocsf or splunk_hec (see
    /// docs/siem-profiles.md).
    #[arg(long, default_value = "native")]
    pub profile: String,
    /// Rows per file before the export becomes a ZIP of parts.
    #[arg(long)]
    pub split_rows: Option<u64>,
    /// Output file, a directory (receives NAME.EXT), or `-` for standard output.
    #[arg(long)]
    pub output: String,
    /// Print a JSON summary on standard error.
    #[arg(long)]
    pub json: bool,
    /// Read the table versions recorded in this manifest, so the data files come out
    /// byte-identical to that export's.
    #[arg(long)]
    pub as_of_manifest: Option<PathBuf>,
}

/// `evidex preview`.
#[derive(Debug, Args)]
pub struct PreviewArgs {
    #[command(flatten)]
    pub scope: ScopeArgs,
    /// Print `{records, by_dataset}` as JSON.
    #[arg(long)]
    pub json: bool,
}

fn scope_from_args(args: &ScopeArgs) -> Result<(ExportScope, Vec<Include>)> {
    let filters = args.filters.to_filters()?;
    let scope = ExportScope::new(&args.from, &args.to, &args.timezone, filters)?;
    let mut include = Vec::new();
    for i in &args.include {
        let inc = Include::parse(i)?;
        if !include.contains(&inc) {
            include.push(inc);
        }
    }
    Ok((scope, include))
}

pub(super) async fn run_preview(
    lake: &Lake,
    config: &Config,
    args: PreviewArgs,
) -> Result<ExitCode> {
    let (scope, include) = scope_from_args(&args.scope)?;
    let definition = definition_from_args(config, &args.scope)?;
    let mut request = ExportRequest::new("preview", scope, Format::Csv);
    request.include = include;
    request.definition = definition;
    request.memory_limit = config.export.query_memory_mb << 20;
    let pinned = PinnedTables::pin_datasets(lake, &request.tables(), None).await?;
    let preview = export::preview(lake, &pinned, &request).await?;
    if args.json {
        println!("{}", serde_json::to_string(&preview)?);
    } else {
        println!("{}", preview.records);
    }
    Ok(ExitCode::SUCCESS)
}

/// The definition `--preset` or `--sql` names.
fn definition_from_args(config: &Config, args: &ScopeArgs) -> Result<Option<Definition>> {
    if let Some(name) = &args.preset {
        let all = all_presets(config)?;
        return match all.into_iter().find(|d| &d.name == name) {
            Some(d) => Ok(Some(d)),
            None => {
                let names: Vec<String> = all_presets(config)?.into_iter().map(|d| d.name).collect();
                bail!(
                    "--preset: unknown preset {name:?}; available: {}",
                    names.join(", ")
                )
            }
        };
    }
    let Some(path) = &args.sql else {
        return Ok(None);
    };
    let meta = std::fs::metadata(path)
        .with_context(|| format!("--sql: cannot read {}", path.display()))?;
    if meta.len() > definition::MAX_SQL_BYTES as u64 {
        bail!(
            "--sql: {} is {} bytes; a definition is at most {}",
            path.display(),
            meta.len(),
            definition::MAX_SQL_BYTES
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--sql: cannot read {} as UTF-8 text", path.display()))?;
    let label = path.display().to_string();
    if text.trim_start().starts_with("-- name:") {
        return Ok(Some(definition::parse_definition(&label, &text)?));
    }
    definition::check_sql(&text).with_context(|| format!("--sql {label}"))?;
    let stem: String = path
        .file_stem()
        .map(|s| s.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    Ok(Some(Definition {
        name: if stem.is_empty() {
            "query".into()
        } else {
            stem
        },
        description: format!("SQL definition from {label}"),
        format: Format::Csv,
        sql: text,
        source: label,
    }))
}

/// Table versions recorded in a manifest.
fn versions_from_manifest(path: &std::path::Path) -> Result<BTreeMap<Dataset, Option<u64>>> {
    let text = std::fs::read(path)
        .with_context(|| format!("--as-of-manifest: cannot read {}", path.display()))?;
    let manifest: Manifest = serde_json::from_slice(&text).with_context(|| {
        format!(
            "--as-of-manifest: {} is not an evidex manifest",
            path.display()
        )
    })?;
    let mut versions = BTreeMap::new();
    for (table, v) in manifest.table_versions {
        let Some(ds) = Dataset::parse(&table) else {
            bail!(
                "--as-of-manifest: {} names an unknown table {table:?}",
                path.display()
            );
        };
        versions.insert(ds, v);
    }
    Ok(versions)
}

pub(super) async fn run_export(
    lake: &Lake,
    config: &Config,
    clock: &dyn Clock,
    env: &HashMap<String, String>,
    args: ExportArgs,
) -> Result<ExitCode> {
    let (scope, include) = scope_from_args(&args.scope)?;
    let definition = definition_from_args(config, &args.scope)?;
    let format = match (&args.format, &definition) {
        (Some(f), _) => Format::parse(f)?,
        (None, Some(d)) => d.format,
        (None, None) => Format::Csv,
    };
    let name = args.name.clone().unwrap_or_else(|| match &definition {
        Some(d) => format!("{}-{}-{}", d.name, args.scope.from, args.scope.to),
        None => format!("evidex-{}-{}", args.scope.from, args.scope.to),
    });
    let mut request = ExportRequest::new(name, scope, format);
    request.include = include;
    request.include_payloads = !args.no_payloads;
    request.encode = EncodeOptions {
        csv_formula_guard: config.export.csv_formula_guard && !args.no_formula_guard,
        csv_bom: config.export.csv_bom || args.csv_bom,
        profile: Profile::parse(&args.profile)?,
    };
    request.split_rows = args.split_rows.unwrap_or(config.export.split_rows);
    request.definition = definition;
    // The rules set through the API (`/v1/settings/redaction`) apply here too.
    request.redaction = match stored_catalog(config)? {
        Some(catalog) => catalog.redaction,
        None => config.redaction.clone(),
    };
    request.memory_limit = config.export.query_memory_mb << 20;
    request.report_style = config.report_style()?;
    let versions = args
        .as_of_manifest
        .as_deref()
        .map(versions_from_manifest)
        .transpose()?;
    // The audit log lives in the metadata database, when this data location has one.
    let reads_audit = request.include.contains(&Include::AuditLog)
        || request
            .definition
            .as_ref()
            .is_some_and(|d| d.sql.to_ascii_lowercase().contains("audit_log"));
    let db = config.state_dir()?.join(evidex_server::store::DB_FILE);
    if reads_audit && (config.database_url.is_some() || db.exists()) {
        let store = Store::from_config(config)?;
        let entries = store.audit_entries(0, i64::MAX)?;
        request.audit_log = evidex_server::service::audit_batches(&entries)?;
    }
    // Never create a signing key of its own on a lake other nodes sign for.
    evidex_server::keys::check_before_start(lake, config).await?;
    let signer = Arc::new(evidex_server::keys::signer(config)?);
    let now = clock.now();
    let evidence = Evidence {
        export_id: export::new_export_id(now),
        requested_by: format!(
            "cli:{}",
            env.get("USER").map(String::as_str).unwrap_or("unknown")
        ),
        created_at: now,
        previous_manifest_sha256: None,
        schedule: None,
        signer,
    };
    if request.split_rows == 0 {
        bail!("--split-rows must be at least 1");
    }
    let output = args.output.clone();
    if output != "-" {
        let p = PathBuf::from(&output);
        if !p.is_dir() {
            let parent = p
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            if !parent.is_dir() {
                bail!("--output: directory {} does not exist", parent.display());
            }
        }
    }
    let pinned = PinnedTables::pin_datasets(lake, &request.tables(), versions.as_ref()).await?;
    let started = Instant::now();
    let bar = if output != "-" {
        progress_bar(0, "exporting")
    } else {
        None
    };
    let control = ExportControl {
        cancel: Default::default(),
        progress: bar
            .clone()
            .map(|b| Arc::new(move |n: u64| b.set_position(n)) as Arc<dyn Fn(u64) + Send + Sync>),
        expected_rows: None,
    };
    let target = move |file_name: &str| {
        if output == "-" {
            ArtifactTarget::Stdout
        } else {
            ArtifactTarget::File {
                path: export::resolve_output(std::path::Path::new(&output), file_name),
                sync: false,
            }
        }
    };
    let outcome = export::run_export(lake, &pinned, &request, &evidence, target, &control).await?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let versions: serde_json::Map<String, serde_json::Value> = outcome
        .versions
        .iter()
        .map(|(d, v)| (d.table_name().to_string(), serde_json::json!(v)))
        .collect();
    if args.json {
        let files: Vec<_> = outcome
            .files
            .iter()
            .map(|f| serde_json::json!({"path": f.path, "bytes": f.bytes, "rows": f.rows, "sha256": f.sha256}))
            .collect();
        eprintln!(
            "{}",
            serde_json::json!({
                "file_name": outcome.file_name,
                "path": outcome.path.as_ref().map(|p| p.display().to_string()),
                "content_type": outcome.content_type,
                "bytes": outcome.bytes,
                "sha256": outcome.sha256,
                "rows": outcome.rows,
                "files": files,
                "table_versions": versions,
                "export_id": outcome.manifest.export_id,
                "manifest_sha256": outcome.manifest_sha256,
            })
        );
    } else {
        eprintln!(
            "wrote {} ({} bytes, {} records) in {:.2}s; table versions read: {}",
            outcome
                .path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "standard output".into()),
            outcome.bytes,
            outcome.manifest.total_rows,
            started.elapsed().as_secs_f64(),
            serde_json::Value::Object(versions)
        );
    }
    match (&outcome.path, outcome.content_type == "application/zip") {
        _ if args.json => {}
        (Some(_), true) => eprintln!(
            "the package files (manifest.json, its signature, SHA256SUMS, signing-key.pem, VERIFY.txt) are inside the ZIP (manifest sha256 {})",
            outcome.manifest_sha256
        ),
        (Some(p), false) => eprintln!(
            "package files beside it: {}.manifest.json (and .manifest.sig, .SHA256SUMS, .SHA256SUMS.sig, .signing-key.pem, .VERIFY.txt: how to check it without evidex)",
            p.display()
        ),
        (None, _) => eprintln!(
            "note: a single file written to standard output has no manifest beside it; write to a file (or a ZIP) to keep one"
        ),
    }
    Ok(ExitCode::SUCCESS)
}
