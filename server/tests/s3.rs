//! The lake on a real S3-compatible server (`s3s-fs`, which checks SigV4 signatures)
//! gives byte-for-byte the same exports as the lake in a local directory.

mod common;

use std::process::{Command, Output};

use common::S3sFs;

fn evidex(data: &str, envs: &[(&str, String)], args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_evidex"));
    cmd.arg("--data").arg(data).args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "evidex {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn s3_lake_exports_match_local_lake_exports() {
    let dir = tempfile::tempdir().unwrap();
    let server = S3sFs::start(&dir.path().join("s3root"), &["evidex-bucket"]);
    let envs = vec![
        ("AWS_ENDPOINT_URL", server.endpoint()),
        ("AWS_ACCESS_KEY_ID", S3sFs::ACCESS_KEY.to_string()),
        ("AWS_SECRET_ACCESS_KEY", S3sFs::SECRET_KEY.to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
        ("AWS_ALLOW_HTTP", "true".to_string()),
        ("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "false".to_string()),
        ("AWS_S3_ADDRESSING_STYLE", "path".to_string()),
        // Keys and metadata stay local when the data is on S3.
        (
            "EVIDEX_STATE_DIR",
            dir.path().join("state").display().to_string(),
        ),
    ];
    let src = dir.path().join("src.ndjson");
    let local = dir.path().join("local");
    let local = local.to_str().unwrap();
    let s3 = "s3://evidex-bucket/lake";
    evidex(
        local,
        &[],
        &[
            "generate",
            "--rows",
            "4000",
            "--days",
            "4",
            "--end",
            "2026-03-04",
            "--output",
            src.to_str().unwrap(),
        ],
    );
    // Two ingests of halves, then the whole file again: retries add nothing on S3 either.
    for data in [local, s3] {
        evidex(data, &envs, &["ingest", src.to_str().unwrap()]);
        let again = evidex(data, &envs, &["ingest", src.to_str().unwrap()]);
        assert!(
            String::from_utf8_lossy(&again.stdout)
                .contains("accepted 4000 (0 new, 4000 already stored)")
        );
    }
    assert!(
        dir.path()
            .join("s3root/evidex-bucket/lake/events/_delta_log")
            .is_dir(),
        "the lake was written through S3"
    );
    let scope = [
        "--from",
        "2026-03-02",
        "--to",
        "2026-03-03",
        "--timezone",
        "Europe/Paris",
        "--min-severity",
        "medium",
    ];
    let count = |data: &str| -> String {
        let mut args = vec!["preview"];
        args.extend(scope);
        String::from_utf8_lossy(&evidex(data, &envs, &args).stdout)
            .trim()
            .to_string()
    };
    assert_eq!(count(local), count(s3));
    assert_ne!(count(local), "0");
    // Without a state directory an S3-backed export has nowhere to keep its key.
    let no_state: Vec<(&str, String)> = envs
        .iter()
        .filter(|(k, _)| *k != "EVIDEX_STATE_DIR")
        .cloned()
        .collect();
    let mut args = vec!["export", "--format", "csv", "--output", "-"];
    args.extend(scope);
    let out = Command::new(env!("CARGO_BIN_EXE_evidex"))
        .arg("--data")
        .arg(s3)
        .args(&args)
        .envs(no_state.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("state_dir must be set"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for format in ["csv", "ndjson", "parquet"] {
        let export = |data: &str| -> Vec<u8> {
            let mut args = vec!["export", "--format", format, "--output", "-"];
            args.extend(scope);
            evidex(data, &envs, &args).stdout
        };
        let a = export(local);
        assert!(a.len() > 1000);
        assert!(
            a == export(s3),
            "{format} export differs between local and S3 lakes"
        );
    }
}
