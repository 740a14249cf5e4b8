//! The CLI subcommands: parse flags into engine requests, run them, print results.
//! This module dispatches each command and holds the helpers several share; each
//! command group (with its flags) lives in its own file.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use chrono::NaiveDate;
use clap::Args;
use evidex_engine::clock::{Clock, SystemClock};
use evidex_engine::lake::{Lake, LakeOptions};
use evidex_engine::model::Dataset;

use crate::{Cli, Command, KeysCommand, TokenCommand};
use evidex_server::config::Config;
use evidex_server::storage_options;
use evidex_server::store::{Role, Store};

mod delivery;
mod export;
mod generate;
mod presets;
mod schedule;
mod serve;
mod stream;
mod verify;

pub use delivery::DeliveryCommand;
pub use export::{ExportArgs, PreviewArgs};
pub use generate::{GenerateArgs, IngestArgs};
pub use schedule::ScheduleCommand;
pub use serve::{DemoArgs, ServeArgs};
pub use stream::StreamArgs;
pub use verify::VerifyArgs;

use export::{run_export, run_preview};
use generate::{run_generate, run_ingest};
use presets::run_presets;
use serve::{run_demo, run_serve};
use verify::run_verify;

/// `evidex token create`.
#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    /// admin, compliance, viewer, ingest or siem.
    #[arg(long)]
    pub role: String,
    /// A name to recognise the token by.
    #[arg(long, default_value = "cli")]
    pub name: String,
    /// When it stops working (RFC 3339, e.g. 2027-01-31T00:00:00Z).
    #[arg(long)]
    pub expires_at: Option<String>,
    /// Or: days from now until it stops working (1 to 3650).
    #[arg(long)]
    pub expires_in_days: Option<i64>,
}

/// Runs one command; the exit code follows the SPEC (ingest: 1 when lines were rejected).
pub async fn run(cli: Cli, env: HashMap<String, String>) -> Result<ExitCode> {
    let mut config = Config::load(cli.config.as_deref(), &env)?;
    // A platform's own EVIDEX_* variables do not stop evidex, but are named.
    if let Some(w) = config.ignored_env_warning() {
        eprintln!("{w}");
    }
    if let Some(data) = cli.data {
        config.data = data;
    }
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    // Commands that do not read the lake.
    match &cli.command {
        Command::Verify(args) => return run_verify(&config, args),
        Command::Presets => return run_presets(&config),
        Command::Delivery(cmd) => {
            return delivery::run_delivery(&config, clock.as_ref(), cmd).await;
        }
        Command::Token(TokenCommand::Create(args)) => {
            let Some(role) = Role::parse(&args.role) else {
                bail!(
                    "--role: unknown role {:?}; use admin, compliance, viewer, ingest or siem",
                    args.role
                );
            };
            let now = clock.now().timestamp_millis();
            let expires = evidex_server::api::tokens::expiry(
                args.expires_at.as_deref(),
                args.expires_in_days,
                now,
            )
            .map_err(|e| {
                anyhow::anyhow!(
                    "{}",
                    e.replace("expires_at", "--expires-at")
                        .replace("expires_in_days", "--expires-in-days")
                )
            })?;
            let store = Store::from_config(&config)?;
            let (id, token) = store
                .issue_token(&args.name, role, now, expires, "cli")
                .map_err(|e| anyhow::anyhow!("--{e:#}"))?;
            store.audit(
                now,
                "cli",
                "token.created",
                Some(&id),
                Some(
                    &serde_json::json!({"name": args.name, "role": role.as_str(),
                    "expires_at": expires.map(evidex_server::store::rfc3339)}),
                ),
            )?;
            println!("{token}");
            let until = expires
                .map(|e| format!(", expires {}", evidex_server::store::rfc3339(e)))
                .unwrap_or_default();
            eprintln!(
                "token {id} ({}, {}{until}); it is shown only now and stored hashed",
                args.name,
                role.as_str()
            );
            return Ok(ExitCode::SUCCESS);
        }
        Command::Token(TokenCommand::List) => {
            let store = Store::from_config(&config)?;
            let now = clock.now().timestamp_millis();
            let when = |t: Option<i64>| t.map_or("-".to_string(), evidex_server::store::rfc3339);
            println!(
                "{:<20}  {:<24}  {:<10}  {:<7}  {:<24}  {:<24}  last used",
                "id", "name", "role", "status", "created", "expires"
            );
            for t in store.tokens()? {
                println!(
                    "{:<20}  {:<24}  {:<10}  {:<7}  {:<24}  {:<24}  {}",
                    t.id,
                    t.name,
                    t.role.as_str(),
                    t.status(now),
                    evidex_server::store::rfc3339(t.created_at),
                    when(t.expires_at),
                    when(t.last_used_at)
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
        Command::Token(TokenCommand::Revoke { id }) => {
            let store = Store::from_config(&config)?;
            let now = clock.now().timestamp_millis();
            let Some(info) = store.token(id)? else {
                bail!("no token {id:?}; `evidex token list` shows the ids");
            };
            if !store.revoke_token(id, now)? {
                bail!(
                    "token {id} was already revoked at {}",
                    info.revoked_at
                        .map(evidex_server::store::rfc3339)
                        .unwrap_or_default()
                );
            }
            store.audit(
                now,
                "cli",
                "token.revoked",
                Some(id),
                Some(&serde_json::json!({"name": info.name, "role": info.role.as_str()})),
            )?;
            eprintln!(
                "token {id} ({}) revoked: every node refuses it from now on",
                info.name
            );
            return Ok(ExitCode::SUCCESS);
        }
        Command::Keys(KeysCommand::Init { out }) => {
            let (lines, fingerprint) = evidex_server::keys::init(out.as_deref())?;
            for l in lines {
                println!("{l}");
            }
            eprintln!(
                "signing key fingerprint: {fingerprint}\nGive every node these values (they are shown only now; keep them in your secret store) and publish the fingerprint for auditors."
            );
            return Ok(ExitCode::SUCCESS);
        }
        Command::Migrate => {
            // Opening the store applies the migrations it lacks.
            let store = Store::from_config(&config)?;
            let version = store.schema_version()?;
            let applied = evidex_server::store::MIGRATIONS
                .iter()
                .filter(|m| m.0 <= version)
                .map(|m| format!("{} {}", m.0, m.1))
                .collect::<Vec<_>>();
            println!("metadata schema version {version} ({:?})", store.dialect());
            for m in applied {
                println!("  applied: {m}");
            }
            return Ok(ExitCode::SUCCESS);
        }
        Command::SigningKey => {
            let signer = evidex_server::keys::signer(&config)?;
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
        Command::Stream(args) => stream::run_stream(&lake, &config, args).await,
        Command::Vacuum(args) => {
            for ds in Dataset::ALL {
                let out = lake
                    .vacuum(
                        ds,
                        args.retain_hours.map(|h| chrono::Duration::hours(h as i64)),
                        args.force,
                    )
                    .await?;
                let orphans = lake
                    .sweep_orphans(
                        ds,
                        chrono::Duration::minutes(args.orphans_older_than_minutes as i64),
                        args.force,
                    )
                    .await?;
                println!(
                    "{}: {} files deleted, {} orphan files deleted",
                    ds.table_name(),
                    out.files_deleted,
                    orphans.files_deleted
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(args) => run_serve(lake, config, clock, args).await,
        Command::Verify(_)
        | Command::Presets
        | Command::Keys(_)
        | Command::SigningKey
        | Command::Migrate
        | Command::Token(_)
        | Command::Delivery(_) => {
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
        Command::Schedule(cmd) => schedule::run_schedule(lake, config, clock, &cmd).await,
    }
}

fn today(clock: &dyn Clock) -> NaiveDate {
    clock.now().date_naive()
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
