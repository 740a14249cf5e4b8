//! `evidex`: the command line over the engine (and, later, the server).

mod commands;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// glibc's allocator keeps freed multi-megabyte batch buffers in per-thread arenas
/// (export peak RSS 470 MB against about 250 MB live); jemalloc returns them.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// evidex turns AI gateway decision events into compliance evidence.
#[derive(Debug, Parser)]
#[command(name = "evidex", version, about)]
pub struct Cli {
    /// Data location: a local directory or s3://bucket/prefix [default: ./evidex-data]
    #[arg(long, global = true, env = "EVIDEX_DATA")]
    pub data: Option<String>,
    /// TOML configuration file.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Fill a fresh data directory with 90 days of demo data, then serve it and print
    /// the URL and an admin token.
    Demo(commands::DemoArgs),
    /// Run the HTTP API, the ingest batcher and in-process export workers.
    Serve(commands::ServeArgs),
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Store decision events, escalation updates or configuration versions.
    Ingest(commands::IngestArgs),
    /// Generate realistic synthetic data (ingested unless --output is given).
    Generate(commands::GenerateArgs),
    /// Run an export locally and write the artifact.
    Export(commands::ExportArgs),
    /// Count the records an export of the same scope would contain.
    Preview(commands::PreviewArgs),
    /// Rewrite date partitions made of many small files into one sorted file each.
    Compact(CompactArgs),
    /// Delete data files compaction replaced longer ago than the retention (Delta
    /// VACUUM): older table versions, and stream cursors into them, stop working.
    Vacuum(VacuumArgs),
    /// Decision events in ingest order as NDJSON on stdout, from a cursor (the
    /// SIEM stream of `GET /v1/events/stream`, without a server).
    Stream(commands::StreamArgs),
    /// Show each table's current version, files and rows.
    Tables(TablesArgs),
    /// List the built-in and saved export definitions.
    Presets,
    /// Apply the metadata database's pending schema migrations (every command that
    /// opens it does so too) and print its schema version.
    Migrate,
    /// Check an artifact against its signed manifest, offline.
    Verify(commands::VerifyArgs),
    /// Print the public half of the key that signs manifests (created on first use).
    SigningKey,
    /// The S3 bucket every export is delivered to: set, show, test.
    #[command(subcommand)]
    Delivery(commands::DeliveryCommand),
    /// Keys for nodes that share a lake: `evidex keys init` makes a set.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Scheduled exports: list, show, create, update, delete, run.
    #[command(subcommand)]
    Schedule(commands::ScheduleCommand),
}

/// `evidex keys`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Make a new signing key, master key and link key for every node of a
    /// multi-node installation, and print them once (as EVIDEX_SECRETS__* lines).
    Init {
        /// Write the signing and master keys to files in this directory (mode 600)
        /// and print the lines that name them.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// `evidex token`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it once (it is stored hashed).
    Create(commands::TokenCreateArgs),
    /// List tokens: id, name, role, status, expiry, last use (never the token).
    List,
    /// Revoke a token: every node refuses it from now on, its console sessions end.
    Revoke {
        /// The token's id (`tok_...`, from `evidex token list`).
        id: String,
    },
}

/// `evidex tables`.
#[derive(Debug, Args)]
pub struct TablesArgs {
    /// Also list the location of every active data file.
    #[arg(long)]
    pub files: bool,
}

/// `evidex vacuum`.
#[derive(Debug, Args)]
pub struct VacuumArgs {
    /// Keep files replaced less than this many hours ago [default: the table's
    /// delta.deletedFileRetentionDuration, 30 days]
    #[arg(long)]
    pub retain_hours: Option<u64>,
    /// Also delete data files no commit names (left by an append or compaction that
    /// died before its commit) once they are this many minutes old; below 120
    /// only with --force, when nothing writes to the lake.
    #[arg(long, default_value_t = 1440)]
    pub orphans_older_than_minutes: u64,
    /// Allow a retention below the table's (exports pinned to older versions and
    /// stream cursors into them will fail), and a short orphan age.
    #[arg(long)]
    pub force: bool,
}

/// `evidex compact`.
#[derive(Debug, Args)]
pub struct CompactArgs {
    /// Rewrite partitions with at least this many files.
    #[arg(long, default_value_t = 2)]
    pub min_files: usize,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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
    match runtime.block_on(commands::run(cli, env)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
