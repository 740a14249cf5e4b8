//! `evidex verify`: an artifact against its signed manifest, or the audit log's
//! hash chain, offline.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;
use evidex_engine::integrity::Signer;
use evidex_engine::verify;
use evidex_server::config::Config;
use evidex_server::store::Store;

/// `evidex verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// A ZIP artifact, a single data file (its NAME.manifest.json and
    /// NAME.manifest.sig beside it), or such a manifest.
    #[arg(required_unless_present_any = ["audit_log", "chain"])]
    pub artifact: Option<PathBuf>,
    /// Check a schedule's series instead: the artifacts given (directories: every
    /// artifact directly inside) each verified, and each run's manifest recording the
    /// hash of the previous run's manifest; names a period that is missing, replaced
    /// or out of order.
    #[arg(long, num_args = 1.., value_name = "DIR_OR_ARTIFACT", conflicts_with_all = ["artifact", "audit_log"])]
    pub chain: Vec<PathBuf>,
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

pub(super) fn run_verify(config: &Config, args: &VerifyArgs) -> Result<ExitCode> {
    if args.audit_log {
        let store = Store::from_config(config)?;
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
    if !args.chain.is_empty() {
        return run_chain(&args.chain, &trust);
    }
    let artifact = args.artifact.as_deref().expect("clap requires it");
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

/// `evidex verify --chain`: every artifact, then each schedule's links.
fn run_chain(paths: &[PathBuf], trust: &verify::Trust) -> Result<ExitCode> {
    let report = verify::verify_chain(paths, trust)?;
    for line in &report.checked {
        println!("ok       {line}");
    }
    for line in &report.problems {
        println!("MISMATCH {line}");
    }
    for line in &report.notes {
        println!("NOTE     {line}");
    }
    for series in &report.series {
        println!(
            "series {} ({}): {} run(s), {} to {}",
            series.schedule_id,
            series.schedule_name,
            series.runs.len(),
            series.runs.first().map_or("-", |r| r.label.as_str()),
            series.runs.last().map_or("-", |r| r.label.as_str()),
        );
        for line in &series.checked {
            println!("ok       {line}");
        }
        for line in &series.problems {
            println!("MISMATCH {line}");
        }
        for line in &series.notes {
            println!("NOTE     {line}");
        }
    }
    if report.ok() {
        println!("chain verified");
        Ok(ExitCode::SUCCESS)
    } else {
        let n = report.problems.len()
            + report
                .series
                .iter()
                .map(|s| s.problems.len())
                .sum::<usize>();
        println!("chain verification FAILED: {n} problem(s)");
        Ok(ExitCode::from(1))
    }
}
