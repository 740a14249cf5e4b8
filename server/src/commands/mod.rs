//! The CLI subcommands: parse flags into engine requests, run them, print results.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use chrono::{Duration, NaiveDate};
use clap::Args;
use evidex_engine::clock::{Clock, SystemClock};
use evidex_engine::definition::{self, Definition};
use evidex_engine::export::{
    self, ArtifactTarget, EncodeOptions, Evidence, ExportControl, ExportRequest, Format, Include,
    PinnedTables,
};
use evidex_engine::generate::{self, GenerateSpec};
use evidex_engine::ingest::{self, IngestOptions};
use evidex_engine::integrity::{Manifest, Signer};
use evidex_engine::lake::{Lake, LakeOptions};
use evidex_engine::model::Dataset;
use evidex_engine::rows::Row;
use evidex_engine::scope::{ExportScope, Filters, parse_decision, parse_severity};
use evidex_engine::verify;

use crate::{Cli, Command, TokenCommand};
use evidex_server::config::Config;
use evidex_server::store::{Role, Store};

/// `evidex ingest`.
#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Dataset the records belong to: events, escalations or config-versions.
    #[arg(long, default_value = "events")]
    pub dataset: String,
    /// NDJSON or JSON-array files; `-` reads standard input.
    #[arg(required = true)]
    pub files: Vec<String>,
}

/// `evidex generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Number of decision events.
    #[arg(long)]
    pub rows: u64,
    /// Number of days the events span.
    #[arg(long, default_value_t = 90)]
    pub days: u32,
    /// Last day (YYYY-MM-DD, UTC) [default: today]
    #[arg(long)]
    pub end: Option<String>,
    /// Seed; the same seed gives the same data.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Write NDJSON here instead of ingesting (escalations and config versions go
    /// beside it as STEM.escalations.ndjson and STEM.config-versions.ndjson).
    #[arg(long)]
    pub output: Option<PathBuf>,
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

/// `evidex verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// A ZIP artifact, a single data file (its NAME.manifest.json and
    /// NAME.manifest.sig beside it), or such a manifest.
    #[arg(required_unless_present = "audit_log")]
    pub artifact: Option<PathBuf>,
    /// Check the audit log's hash chain in the metadata database instead.
    #[arg(long)]
    pub audit_log: bool,
    /// The signer's public key (hex or PEM, or a file holding either): signatures by
    /// any other key fail [default: this installation's key; without one, the key
    /// enclosed in the package, whose fingerprint you must compare yourself].
    #[arg(long)]
    pub key: Option<String>,
    /// The SHA-256 fingerprint of the signer's key (as `evidex signing-key` and
    /// GET /v1/signing-key print it): the enclosed key must have it.
    #[arg(long)]
    pub fingerprint: Option<String>,
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

/// `evidex demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Demo events to generate when the data directory is empty.
    #[arg(long, default_value_t = 200_000)]
    pub rows: u64,
    /// Address to listen on [default: server.listen, 127.0.0.1:8080].
    #[arg(long)]
    pub listen: Option<String>,
}

/// `evidex serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on [default: server.listen, 127.0.0.1:8080].
    #[arg(long)]
    pub listen: Option<String>,
    /// In-process export workers (0 for none) [default: server.workers, 2].
    #[arg(long)]
    pub workers: Option<usize>,
}

/// `evidex token create`.
#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    /// admin, compliance, viewer or ingest.
    #[arg(long)]
    pub role: String,
    /// A name to recognise the token by.
    #[arg(long, default_value = "cli")]
    pub name: String,
}

/// Runs one command; the exit code follows the SPEC (ingest: 1 when lines were rejected).
pub async fn run(cli: Cli, env: HashMap<String, String>) -> Result<ExitCode> {
    let mut config = Config::load(cli.config.as_deref(), &env)?;
    if let Some(data) = cli.data {
        config.data = data;
    }
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    // Commands that do not read the lake.
    match &cli.command {
        Command::Verify(args) => return run_verify(&config, args),
        Command::Presets => return run_presets(&config),
        Command::Token(TokenCommand::Create(args)) => {
            let Some(role) = Role::parse(&args.role) else {
                bail!(
                    "--role: unknown role {:?}; use admin, compliance, viewer or ingest",
                    args.role
                );
            };
            let store = Store::open(&config.state_dir()?)?;
            let now = clock.now().timestamp_millis();
            let (id, token) = store.create_token(&args.name, role, now)?;
            store.audit(
                now,
                "cli",
                "token.created",
                Some(&id),
                Some(&serde_json::json!({"name": args.name, "role": role.as_str()})),
            )?;
            println!("{token}");
            eprintln!(
                "token {id} ({}, {}); it is shown only now and stored hashed",
                args.name,
                role.as_str()
            );
            return Ok(ExitCode::SUCCESS);
        }
        Command::SigningKey => {
            let signer = Signer::load_or_create(&config.state_dir()?)?;
            println!("{}", signer.public_hex());
            eprintln!(
                "fingerprint (SHA-256 of the DER public key, as in every package's VERIFY.txt): {}",
                signer.fingerprint()
            );
            eprintln!(
                "(Ed25519 public key; publish the fingerprint so auditors can check packages; \
                 the private half is {})",
                signer.path().display()
            );
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let lake = Lake::open(
        &LakeOptions {
            data_url: config.data.clone(),
            storage_options: storage_options(&env),
            index_dir: config.state_dir().ok().map(|d| d.join("key-index")),
        },
        clock.clone(),
    )
    .with_context(|| format!("cannot open the data location {}", config.data))?;
    match cli.command {
        Command::Ingest(args) => run_ingest(&lake, &config, args).await,
        Command::Generate(args) => run_generate(&lake, &config, clock.as_ref(), args).await,
        Command::Export(args) => run_export(&lake, &config, clock.as_ref(), &env, args).await,
        Command::Preview(args) => run_preview(&lake, &config, args).await,
        Command::Serve(args) => run_serve(lake, config, clock, args).await,
        Command::Verify(_) | Command::Presets | Command::SigningKey | Command::Token(_) => {
            unreachable!("handled above")
        }
        Command::Compact(args) => {
            for ds in Dataset::ALL {
                let out = lake.compact(ds, args.min_files).await?;
                println!(
                    "{}: rewrote {} partitions ({} files into {})",
                    ds.table_name(),
                    out.partitions,
                    out.files_removed,
                    out.files_added
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Tables(args) => {
            for ds in Dataset::ALL {
                let snap = lake.snapshot(ds, None).await?;
                let rows: u64 = snap.files.iter().map(|f| f.rows).sum();
                let bytes: u64 = snap.files.iter().map(|f| f.size).sum();
                let version = snap
                    .version
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "-".into());
                println!(
                    "{}: version {version}, {} files, {rows} rows, {bytes} bytes",
                    ds.table_name(),
                    snap.files.len()
                );
                if args.files {
                    for f in &snap.files {
                        println!("  {}", lake.file_location(f));
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo(args) => run_demo(lake, config, clock, args).await,
    }
}

use evidex_server::storage_options;

async fn run_ingest(lake: &Lake, config: &Config, args: IngestArgs) -> Result<ExitCode> {
    let Some(dataset) = Dataset::parse(&args.dataset) else {
        bail!(
            "--dataset: unknown dataset {:?}; use events, escalations or config-versions",
            args.dataset
        );
    };
    let options = IngestOptions {
        max_record_bytes: config.ingest.max_record_bytes,
        ..IngestOptions::default()
    };
    let mut any_rejected = false;
    let mut failure = None;
    for file in &args.files {
        let input: Box<dyn BufRead + Send> = if file == "-" {
            Box::new(BufReader::with_capacity(1 << 20, std::io::stdin()))
        } else {
            match std::fs::File::open(file) {
                Ok(f) => Box::new(BufReader::with_capacity(1 << 20, f)),
                Err(e) => {
                    eprintln!("error: cannot open {file}: {e}");
                    failure = Some(());
                    continue;
                }
            }
        };
        let label = if file == "-" { "stdin" } else { file.as_str() };
        match ingest::ingest(lake, dataset, input, options).await {
            Ok(report) => {
                println!(
                    "{label}: accepted {} ({} new, {} already stored), rejected {}",
                    report.accepted,
                    report.accepted - report.duplicates,
                    report.duplicates,
                    report.rejected
                );
                if report.replaced_surrogates > 0 {
                    println!(
                        "{label}: replaced {} lone UTF-16 surrogate escapes with U+FFFD",
                        report.replaced_surrogates
                    );
                }
                for r in &report.errors {
                    println!("{label}:{}: {}", r.line, r.message);
                }
                if report.rejected > report.errors.len() as u64 {
                    println!(
                        "{label}: ... and {} more rejected lines",
                        report.rejected - report.errors.len() as u64
                    );
                }
                any_rejected |= report.rejected > 0;
            }
            Err(e) => {
                eprintln!("error: {label}: {e}");
                failure = Some(());
            }
        }
    }
    lake.compact(dataset, config.ingest.compact_min_files)
        .await
        .context("compaction after ingest")?;
    Ok(if failure.is_some() {
        ExitCode::from(2)
    } else if any_rejected {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn today(clock: &dyn Clock) -> NaiveDate {
    clock.now().date_naive()
}

async fn run_generate(
    lake: &Lake,
    config: &Config,
    clock: &dyn Clock,
    args: GenerateArgs,
) -> Result<ExitCode> {
    if args.days == 0 {
        bail!("--days must be at least 1");
    }
    let end = match &args.end {
        Some(e) => NaiveDate::parse_from_str(e, "%Y-%m-%d")
            .with_context(|| format!("--end: {e:?} is not a date (YYYY-MM-DD)"))?,
        None => today(clock),
    };
    let spec = GenerateSpec {
        rows: args.rows,
        days: args.days,
        end,
        seed: args.seed,
    };
    let started = Instant::now();
    let counts = match &args.output {
        Some(path) => generate_to_files(&spec, path)?,
        None => {
            let c = generate_into_lake(lake, &spec).await?;
            for ds in Dataset::ALL {
                lake.compact(ds, config.ingest.compact_min_files).await?;
            }
            c
        }
    };
    eprintln!(
        "generated {} events, {} escalation updates, {} config versions over {} days ending {} in {:.1}s",
        counts[0],
        counts[1],
        counts[2],
        spec.days,
        spec.end,
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

fn progress_bar(total: u64, what: &str) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({per_sec}, {eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    Some(bar)
}

async fn generate_into_lake(lake: &Lake, spec: &GenerateSpec) -> Result<[u64; 3]> {
    const CHUNK: usize = 150_000;
    let per_day = generate::rows_per_day(spec);
    let bar = progress_bar(spec.rows, "generating");
    let mut counts = [0u64; 3];
    let mut events: Vec<Row> = Vec::new();
    let mut escalations: Vec<Row> = Vec::new();
    let mut configs: Vec<Row> = Vec::new();
    let mut index = 0u64;
    // Generate the next day on a blocking thread while this one is stored.
    let mut pending = None;
    for (i, (date, n)) in per_day.iter().enumerate() {
        let spec2 = *spec;
        let (date, n, first) = (*date, *n, index);
        index += n;
        let next = tokio::task::spawn_blocking(move || {
            generate::generate_day(&spec2, i as u32, date, n, first)
        });
        if let Some(prev) = pending.replace(next) {
            let day: generate::GeneratedDay = prev.await?;
            absorb(
                day,
                &mut events,
                &mut escalations,
                &mut configs,
                &mut counts,
            );
        }
        if events.len() >= CHUNK {
            let n = events.len() as u64;
            lake.append(Dataset::Events, std::mem::take(&mut events))
                .await?;
            if let Some(b) = &bar {
                b.inc(n);
            }
        }
        if escalations.len() >= CHUNK {
            lake.append(Dataset::Escalations, std::mem::take(&mut escalations))
                .await?;
        }
    }
    if let Some(prev) = pending {
        absorb(
            prev.await?,
            &mut events,
            &mut escalations,
            &mut configs,
            &mut counts,
        );
    }
    let n = events.len() as u64;
    lake.append(Dataset::Events, events).await?;
    if let Some(b) = &bar {
        b.inc(n);
        b.finish_and_clear();
    }
    lake.append(Dataset::Escalations, escalations).await?;
    lake.append(Dataset::ConfigVersions, configs).await?;
    Ok(counts)
}

fn absorb(
    day: generate::GeneratedDay,
    events: &mut Vec<Row>,
    escalations: &mut Vec<Row>,
    configs: &mut Vec<Row>,
    counts: &mut [u64; 3],
) {
    counts[0] += day.events.len() as u64;
    counts[1] += day.escalations.len() as u64;
    counts[2] += day.config_versions.len() as u64;
    events.extend(day.events);
    escalations.extend(day.escalations);
    configs.extend(day.config_versions);
}

fn generate_to_files(spec: &GenerateSpec, path: &std::path::Path) -> Result<[u64; 3]> {
    use evidex_engine::export::encode::{EncodedBatch, Encoder, JsonEncoder, JsonLayout};
    use std::io::Write;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "events".into());
    let paths = [
        path.to_path_buf(),
        path.with_file_name(format!("{stem}.escalations.ndjson")),
        path.with_file_name(format!("{stem}.config-versions.ndjson")),
    ];
    let mut writers = Vec::new();
    let mut encoders = Vec::new();
    for (p, ds) in paths.iter().zip(Dataset::ALL) {
        let f =
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?;
        writers.push(std::io::BufWriter::with_capacity(1 << 20, f));
        let kinds = ds.columns().iter().map(|c| c.kind).collect();
        encoders.push(JsonEncoder::new(ds.file_schema(), kinds, JsonLayout::Lines));
    }
    let mut counts = [0u64; 3];
    let mut index = 0;
    let mut buf = Vec::new();
    for (i, (date, n)) in generate::rows_per_day(spec).into_iter().enumerate() {
        let day = generate::generate_day(spec, i as u32, date, n, index);
        index += n;
        for (k, rows) in [day.events, day.escalations, day.config_versions]
            .into_iter()
            .enumerate()
        {
            counts[k] += rows.len() as u64;
            if rows.is_empty() {
                continue;
            }
            let refs: Vec<&Row> = rows.iter().collect();
            let batch = evidex_engine::rows::rows_to_batch(Dataset::ALL[k], &refs);
            buf.clear();
            encoders[k].batch(&EncodedBatch::new(batch)?, &mut buf)?;
            writers[k].write_all(&buf)?;
        }
    }
    for w in &mut writers {
        w.flush()?;
    }
    Ok(counts)
}

fn scope_from_args(args: &ScopeArgs) -> Result<(ExportScope, Vec<Include>)> {
    let filters = Filters {
        policy: args.policy.clone(),
        decision: args
            .decision
            .iter()
            .map(|d| parse_decision(d))
            .collect::<Result<_, _>>()?,
        gateway: args.gateway.clone(),
        consumer_group: args.consumer_group.clone(),
        consumer: args.consumer.clone(),
        provider: args.provider.clone(),
        model: args.model.clone(),
        reason_code: args.reason_code.clone(),
        min_severity: args
            .min_severity
            .as_deref()
            .map(parse_severity)
            .transpose()?,
    };
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

async fn run_preview(lake: &Lake, config: &Config, args: PreviewArgs) -> Result<ExitCode> {
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

/// All definitions: the built-in presets, those of `presets_dir`, then the ones
/// saved through the API (when this data location has a metadata database).
fn all_presets(config: &Config) -> Result<Vec<Definition>> {
    let mut all = definition::builtin_presets();
    if let Some(dir) = &config.presets_dir {
        for d in definition::load_dir(dir)? {
            if all.iter().any(|b| b.name == d.name) {
                bail!(
                    "{}: preset name {:?} is already a built-in preset",
                    d.source,
                    d.name
                );
            }
            all.push(d);
        }
    }
    if let Some(catalog) = stored_catalog(config)? {
        all.extend(
            catalog
                .presets
                .into_iter()
                .filter(|d| d.source.starts_with("saved:")),
        );
    }
    Ok(all)
}

/// The saved presets and settings of this data location's metadata database, when
/// it has one (the CLI never creates it just to read settings).
fn stored_catalog(config: &Config) -> Result<Option<evidex_server::service::Catalog>> {
    let Some(dir) = config
        .state_dir()
        .ok()
        .filter(|d| d.join(evidex_server::store::DB_FILE).exists())
    else {
        return Ok(None);
    };
    let store = Store::open(&dir)?;
    Ok(Some(evidex_server::service::Catalog::load(config, &store)?))
}

fn run_presets(config: &Config) -> Result<ExitCode> {
    for d in all_presets(config)? {
        println!("{:<20} {:<8} {}", d.name, d.format.as_str(), d.description);
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

fn run_verify(config: &Config, args: &VerifyArgs) -> Result<ExitCode> {
    if args.audit_log {
        let store = Store::open(&config.state_dir()?)?;
        return Ok(match store.verify_audit_chain()? {
            Ok(n) => {
                println!(
                    "ok       audit log: {n} entries, every hash matches its entry and follows the previous one"
                );
                ExitCode::SUCCESS
            }
            Err(problem) => {
                println!("MISMATCH audit log: {problem}");
                ExitCode::from(1)
            }
        });
    }
    let artifact = args.artifact.as_deref().expect("clap requires it");
    let trust = match (&args.key, &args.fingerprint) {
        (Some(_), Some(_)) => bail!("--key and --fingerprint: give one of them"),
        (Some(k), None) => {
            let text = if std::path::Path::new(k).is_file() {
                std::fs::read_to_string(k).with_context(|| format!("--key: cannot read {k}"))?
            } else {
                k.clone()
            };
            verify::Trust::Key(
                evidex_engine::integrity::parse_public_key(&text)
                    .map_err(|e| anyhow::anyhow!("--key: {e}"))?,
            )
        }
        (None, Some(f)) => verify::Trust::Fingerprint(f.clone()),
        (None, None) => match config.state_dir().ok().map(|d| Signer::load(&d)) {
            Some(Ok(Some(s))) => verify::Trust::Key(
                evidex_engine::integrity::parse_public_key(&s.public_hex())
                    .map_err(|e| anyhow::anyhow!("this installation's key: {e}"))?,
            ),
            Some(Err(e)) => return Err(e.into()),
            _ => verify::Trust::Enclosed,
        },
    };
    let report = verify::verify(artifact, &trust)?;
    for line in &report.checked {
        println!("ok       {line}");
    }
    for line in &report.problems {
        println!("MISMATCH {line}");
    }
    for line in &report.notes {
        println!("NOTE     {line}");
    }
    if report.ok() {
        if let Some(m) = &report.manifest {
            println!(
                "verified: export {} ({}), {}, window [{}, {}), tables {}",
                m.export_id,
                m.name,
                m.statement,
                m.window.from,
                m.window.to,
                serde_json::to_string(&m.table_versions)?
            );
        }
        Ok(ExitCode::SUCCESS)
    } else {
        println!("verification FAILED: {} problem(s)", report.problems.len());
        Ok(ExitCode::from(1))
    }
}

async fn run_export(
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
    if reads_audit && db.exists() {
        let store = Store::open(&config.state_dir()?)?;
        let entries = store.audit_entries(0, i64::MAX)?;
        request.audit_log = evidex_server::service::audit_batches(&entries)?;
    }
    let signer = Arc::new(Signer::load_or_create(&config.state_dir()?)?);
    let now = clock.now();
    let evidence = Evidence {
        export_id: export::new_export_id(now),
        requested_by: format!(
            "cli:{}",
            env.get("USER").map(String::as_str).unwrap_or("unknown")
        ),
        created_at: now,
        previous_manifest_sha256: None,
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

async fn run_serve(
    lake: Lake,
    mut config: Config,
    clock: Arc<dyn Clock>,
    args: ServeArgs,
) -> Result<ExitCode> {
    if let Some(l) = args.listen {
        config.server.listen = l;
    }
    let workers = args.workers.unwrap_or(config.server.workers);
    let (listener, addr) = evidex_server::bind(&config.server.listen).await?;
    let service = evidex_server::build_service(config, lake, clock, true)?;
    eprintln!("evidex listening on http://{addr}/ with {workers} export worker(s)");
    evidex_server::serve(service, listener, workers).await?;
    Ok(ExitCode::SUCCESS)
}

async fn run_demo(
    lake: Lake,
    mut config: Config,
    clock: Arc<dyn Clock>,
    args: DemoArgs,
) -> Result<ExitCode> {
    let end = today(clock.as_ref()) - Duration::days(1);
    let snapshot = lake.snapshot(Dataset::Events, None).await?;
    if snapshot.files.is_empty() {
        eprintln!(
            "generating {} demo events over 90 days ending {end} ...",
            args.rows
        );
        let spec = GenerateSpec {
            rows: args.rows,
            days: 90,
            end,
            seed: 42,
        };
        generate_into_lake(&lake, &spec).await?;
        for ds in Dataset::ALL {
            lake.compact(ds, config.ingest.compact_min_files).await?;
        }
    } else {
        eprintln!("the data directory already holds events; not generating more");
    }
    if let Some(l) = args.listen {
        config.server.listen = l;
    }
    let store = Store::open(&config.state_dir()?)?;
    let now = clock.now().timestamp_millis();
    let (id, token) = store.create_token("demo-admin", Role::Admin, now)?;
    store.audit(
        now,
        "demo",
        "token.created",
        Some(&id),
        Some(&serde_json::json!({"name": "demo-admin", "role": "admin"})),
    )?;
    let workers = config.server.workers;
    let (listener, addr) = evidex_server::bind(&config.server.listen).await?;
    let service = evidex_server::build_service(config, lake.clone(), clock, true)?;
    // The period the data really covers (a reused data directory may hold another).
    let files = lake.snapshot(Dataset::Events, None).await?.files;
    let (first, last) = match (files.first(), files.last()) {
        (Some(a), Some(b)) => (a.date, b.date),
        _ => (end - Duration::days(89), end),
    };
    let from = (last - Duration::days(29))
        .max(first)
        .format("%Y-%m-%d")
        .to_string();
    let to = last.format("%Y-%m-%d").to_string();
    println!("evidex demo: decision events in {}", lake.root());
    println!("  the data covers {first} to {last} (UTC days); use dates in that period");
    println!("  console and API: http://{addr}/   (API description: http://{addr}/openapi.json)");
    println!("  admin token:     {token}");
    println!("  try, in another shell:");
    println!("    export TOKEN={token}");
    println!(
        "    curl -H \"Authorization: Bearer $TOKEN\" -d '{{\"name\":\"Last 30 days\",\"from\":\"{from}\",\"to\":\"{to}\",\"format\":\"csv\"}}' http://{addr}/v1/exports"
    );
    println!("  stop with Ctrl-C");
    evidex_server::serve(service, listener, workers).await?;
    Ok(ExitCode::SUCCESS)
}
