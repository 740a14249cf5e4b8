//! `evidex delivery set|show|test`: the delivery bucket of this installation, as
//! `/v1/settings/delivery` manages it (same checks, same sealed secret). The secret
//! access key is read from a file or standard input, never from the command line
//! (which other users of the machine can see).

use std::io::Read;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use evidex_server::config::Config;
use evidex_server::delivery::{
    self, DeliverySettings, ObjectLock, ServerSideEncryption, SettingsInput, probe,
};
use evidex_server::secrets::MasterKey;
use evidex_server::store::Store;

/// `evidex delivery ...`.
#[derive(Debug, Subcommand)]
pub enum DeliveryCommand {
    /// Save the delivery bucket (replaces the settings; the stored secret is kept
    /// unless a new one is given).
    Set(Box<DeliverySetArgs>),
    /// Print the settings (never the secret).
    Show,
    /// Test the connection with the stored settings, step by step.
    Test,
}

/// `evidex delivery set`.
#[derive(Debug, Args)]
pub struct DeliverySetArgs {
    /// Bucket name.
    #[arg(long)]
    pub bucket: String,
    /// Region for signing (`us-east-1` for most S3-compatible servers, `auto` for R2).
    #[arg(long, default_value = "us-east-1")]
    pub region: String,
    /// `https://host[:port]` of an S3-compatible server; omit for AWS.
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Path-style addressing (`host/bucket/key`), which most self-hosted servers need.
    #[arg(long)]
    pub path_style: bool,
    /// Key prefix, e.g. `evidence/`.
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// Access key id.
    #[arg(long)]
    pub access_key_id: String,
    /// Read the secret access key from this file (first line).
    #[arg(long, conflicts_with = "secret_access_key_stdin")]
    pub secret_access_key_file: Option<std::path::PathBuf>,
    /// Read the secret access key from standard input (first line).
    #[arg(long)]
    pub secret_access_key_stdin: bool,
    /// Server-side encryption: AES256, aws:kms or aws:kms:dsse.
    #[arg(long)]
    pub sse: Option<String>,
    /// KMS key for --sse aws:kms.
    #[arg(long, requires = "sse")]
    pub sse_kms_key_id: Option<String>,
    /// Object Lock retention mode: GOVERNANCE or COMPLIANCE.
    #[arg(long, requires = "object_lock_days")]
    pub object_lock_mode: Option<String>,
    /// Object Lock retention in days.
    #[arg(long, requires = "object_lock_mode")]
    pub object_lock_days: Option<u32>,
    /// Only deliver exports that ask for it (`deliver: true`), instead of every one.
    #[arg(long)]
    pub only_when_asked: bool,
}

fn first_line(mut r: impl Read) -> Result<String> {
    let mut s = String::new();
    r.read_to_string(&mut s)?;
    Ok(s.lines().next().unwrap_or("").trim().to_string())
}

/// Runs `evidex delivery ...` on this data location's metadata database.
pub(super) async fn run_delivery(
    config: &Config,
    clock: &dyn evidex_engine::clock::Clock,
    cmd: &DeliveryCommand,
) -> Result<ExitCode> {
    let state = config.state_dir()?;
    let store = Store::from_config(config)?;
    let key = MasterKey::load_or_create(config.secrets.master_key_file.as_deref(), &state)?;
    match cmd {
        DeliveryCommand::Show => {
            let s = delivery::load(&store, &key)?.map(|(s, _)| s);
            println!(
                "{}",
                serde_json::to_string_pretty(&delivery::public_view(s.as_ref()))?
            );
            Ok(ExitCode::SUCCESS)
        }
        DeliveryCommand::Set(a) => {
            let secret = match (&a.secret_access_key_file, a.secret_access_key_stdin) {
                (Some(f), _) => {
                    Some(first_line(std::fs::File::open(f).with_context(|| {
                        format!("--secret-access-key-file {}", f.display())
                    })?)?)
                }
                (None, true) => Some(first_line(std::io::stdin())?),
                (None, false) => None,
            };
            let input = SettingsInput {
                settings: DeliverySettings {
                    enabled: !a.only_when_asked,
                    bucket: a.bucket.clone(),
                    region: a.region.clone(),
                    endpoint: a.endpoint.clone(),
                    path_style: a.path_style,
                    prefix: a.prefix.clone(),
                    access_key_id: a.access_key_id.clone(),
                    server_side_encryption: a.sse.as_ref().map(|alg| ServerSideEncryption {
                        algorithm: alg.clone(),
                        kms_key_id: a.sse_kms_key_id.clone(),
                    }),
                    object_lock: a.object_lock_mode.as_ref().map(|m| ObjectLock {
                        mode: m.clone(),
                        days: a.object_lock_days.unwrap_or(0),
                    }),
                },
                secret_access_key: secret,
            };
            let (settings, secret) = match delivery::resolve_input(&store, &key, &input) {
                Ok(x) => x,
                Err(e) => bail!(
                    "{}",
                    e.replace(
                        "secret_access_key: required",
                        "--secret-access-key-file or --secret-access-key-stdin: required"
                    )
                ),
            };
            let now = clock.now().timestamp_millis();
            delivery::save(&store, &key, &settings, &secret, "cli", now)?;
            let view = delivery::public_view(Some(&settings));
            store.audit(
                now,
                "cli",
                "settings.delivery.updated",
                None,
                Some(&serde_json::json!({"settings": view, "secret_changed": input.secret_access_key.is_some()})),
            )?;
            println!("{}", serde_json::to_string_pretty(&view)?);
            eprintln!("saved; the secret is stored encrypted. Check it with: evidex delivery test");
            Ok(ExitCode::SUCCESS)
        }
        DeliveryCommand::Test => {
            let Some((settings, secret)) = delivery::load(&store, &key)? else {
                bail!("delivery is not set up: run evidex delivery set first");
            };
            let report = probe::run(
                &settings,
                &secret,
                config.network.allow_private_targets,
                Duration::from_secs(config.delivery.step_timeout_secs),
            )
            .await;
            for s in &report.steps {
                let kind = s.kind.map(|k| format!(" [{k}]")).unwrap_or_default();
                println!("{:<19} {:<8}{kind} {}", s.step, s.status, s.detail);
            }
            println!("supports: {}", report.supports);
            Ok(if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}
