//! `evidex serve` (the API, ingest batchers and workers) and `evidex demo` (demo data,
//! an admin token, then the same server).

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Result;
use chrono::Duration;
use clap::Args;
use evidex_engine::clock::Clock;
use evidex_engine::generate::GenerateSpec;
use evidex_engine::lake::Lake;
use evidex_engine::model::Dataset;
use evidex_server::config::Config;
use evidex_server::store::{Role, Store};

use super::generate::generate_into_lake;
use super::today;

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

pub(super) async fn run_serve(
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
    let service = evidex_server::build_node(config, lake, clock, true).await?;
    eprintln!("evidex listening on http://{addr}/ with {workers} export worker(s)");
    evidex_server::serve(service, listener, workers).await?;
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn run_demo(
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
    let store = Store::from_config(&config)?;
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
    let service = evidex_server::build_node(config, lake.clone(), clock, true).await?;
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
