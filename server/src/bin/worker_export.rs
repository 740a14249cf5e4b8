//! `worker_export`: an export worker only. It claims jobs from the same metadata
//! database and data location as the server, runs them under a lease with
//! heartbeats, and publishes their artifacts. Several can run at once, on this or
//! other machines sharing the state directory.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use evidex_engine::clock::{Clock, SystemClock};
use evidex_server::config::Config;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Runs export jobs queued through the evidex API.
#[derive(Debug, Parser)]
#[command(name = "worker_export", version)]
struct Args {
    /// Data location: a local directory or s3://bucket/prefix [default: ./evidex-data]
    #[arg(long, env = "EVIDEX_DATA")]
    data: Option<String>,
    /// TOML configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Jobs run at once by this process.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EVIDEX_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        // A log line that cannot be written (stderr closed by whoever started us)
        // must not become a panic that ends the task that logged it.
        .log_internal_errors(false)
        .init();
    let env: HashMap<String, String> = std::env::vars().collect();
    if let Err(e) = evidex_server::failpoints::install(&env) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async move {
        let mut config = Config::load(args.config.as_deref(), &env)?;
        if let Some(w) = config.ignored_env_warning() {
            eprintln!("{w}");
        }
        if let Some(d) = args.data {
            config.data = d;
        }
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let lake = evidex_server::open_lake(&config, &env, clock.clone())?;
        let service = evidex_server::build_node(config, lake, clock, false).await?;
        let grace = Duration::from_secs(service.config.server.shutdown_grace_secs);
        let workers = evidex_server::start_workers(&service, args.concurrency.max(1), "worker");
        eprintln!(
            "worker_export: running {} job(s) at a time; stop with SIGTERM",
            args.concurrency.max(1)
        );
        evidex_server::shutdown_signal().await;
        eprintln!("worker_export: stopping; running jobs may finish for {} s", grace.as_secs());
        if !workers.shutdown(grace).await {
            eprintln!(
                "worker_export: jobs still running after {} s (server.shutdown_grace_secs) were queued again for another worker",
                grace.as_secs()
            );
        }
        anyhow::Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
