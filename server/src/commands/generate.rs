//! `evidex ingest` (files or standard input into the lake) and `evidex generate`
//! (synthetic data into the lake or into NDJSON files).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use chrono::NaiveDate;
use clap::Args;
use evidex_engine::clock::Clock;
use evidex_engine::generate::{self, GenerateSpec};
use evidex_engine::ingest::{self, IngestOptions};
use evidex_engine::lake::Lake;
use evidex_engine::model::Dataset;
use evidex_engine::rows::Row;
use evidex_server::config::Config;

use super::{progress_bar, today};

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

pub(super) async fn run_ingest(lake: &Lake, config: &Config, args: IngestArgs) -> Result<ExitCode> {
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

pub(super) async fn run_generate(
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

pub(super) async fn generate_into_lake(lake: &Lake, spec: &GenerateSpec) -> Result<[u64; 3]> {
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
