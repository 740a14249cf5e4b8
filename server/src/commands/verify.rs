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

pub(super) fn run_verify(config: &Config, args: &VerifyArgs) -> Result<ExitCode> {
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
