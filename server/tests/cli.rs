//! End-to-end tests of the `evidex` binary: generate, ingest, preview and export real
//! data in a temporary data directory, and compare every export with an independent
//! computation of the same scope from the source records.

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::{Value, json};

/// Runs evidex without redaction rules: these tests compare exported values with the
/// source byte for byte (redaction has its own tests in `evidence.rs`).
fn evidex(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_evidex"))
        .arg("--data")
        .arg(data)
        .args(args)
        .env_remove("EVIDEX_DATA")
        .env("EVIDEX_REDACTION__DETECTORS", "[]")
        .output()
        .expect("evidex runs")
}

fn evidex_stdin(data: &Path, args: &[&str], input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_evidex"))
        .arg("--data")
        .arg(data)
        .args(args)
        .env("EVIDEX_REDACTION__DETECTORS", "[]")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("evidex runs");
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "evidex failed ({:?}):\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Source records, read back from the generator's NDJSON.
fn read_ndjson(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The `id` of every line of an NDJSON export, in order.
fn ndjson_ids(ndjson: &str) -> Vec<String> {
    ndjson
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

fn micros(v: &Value) -> i64 {
    DateTime::parse_from_rfc3339(v.as_str().unwrap())
        .unwrap()
        .timestamp_micros()
}

/// An independent statement of a scope, evaluated in plain Rust over source records.
#[derive(Clone, Default)]
struct Scope {
    from: String,
    to: String,
    tz: Option<&'static str>,
    decisions: Vec<&'static str>,
    policies: Vec<String>,
    min_severity: Option<&'static str>,
}

impl Scope {
    fn days(from: &str, to: &str) -> Scope {
        Scope {
            from: from.into(),
            to: to.into(),
            ..Scope::default()
        }
    }

    fn window(&self) -> (i64, i64) {
        let tz: Tz = self.tz.unwrap_or("UTC").parse().unwrap();
        let bound = |s: &str, end: bool| -> i64 {
            match NaiveDate::parse_from_str(s, "%Y-%m-%d") {
                Ok(d) => {
                    let d = if end { d.succ_opt().unwrap() } else { d };
                    tz.from_local_datetime(&d.and_hms_opt(0, 0, 0).unwrap())
                        .earliest()
                        .unwrap()
                        .with_timezone(&Utc)
                        .timestamp_micros()
                }
                Err(_) => DateTime::parse_from_rfc3339(s).unwrap().timestamp_micros(),
            }
        };
        (bound(&self.from, false), bound(&self.to, true))
    }

    fn matches(&self, e: &Value) -> bool {
        let (start, end) = self.window();
        let t = micros(&e["timestamp"]);
        let sev = ["info", "low", "medium", "high", "critical"];
        let rank = |s: &str| sev.iter().position(|x| *x == s).unwrap();
        t >= start
            && t < end
            && (self.decisions.is_empty()
                || self.decisions.contains(&e["decision"].as_str().unwrap()))
            && (self.policies.is_empty()
                || self
                    .policies
                    .iter()
                    .any(|p| p == e["policy"].as_str().unwrap()))
            && self
                .min_severity
                .is_none_or(|m| rank(e["severity"].as_str().unwrap()) >= rank(m))
    }

    fn expected<'a>(&self, events: &'a [Value]) -> Vec<&'a Value> {
        let mut v: Vec<&Value> = events.iter().filter(|e| self.matches(e)).collect();
        v.sort_by(|a, b| {
            micros(&a["timestamp"])
                .cmp(&micros(&b["timestamp"]))
                .then_with(|| a["id"].as_str().cmp(&b["id"].as_str()))
        });
        v
    }

    fn args(&self) -> Vec<String> {
        let mut a = vec![
            "--from".into(),
            self.from.clone(),
            "--to".into(),
            self.to.clone(),
        ];
        if let Some(tz) = self.tz {
            a.extend(["--timezone".into(), tz.into()]);
        }
        for d in &self.decisions {
            a.extend(["--decision".into(), d.to_string()]);
        }
        for p in &self.policies {
            a.extend(["--policy".into(), p.clone()]);
        }
        if let Some(m) = self.min_severity {
            a.extend(["--min-severity".into(), m.into()]);
        }
        a
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    data: PathBuf,
    out: PathBuf,
    events: Vec<Value>,
}

/// Generates source NDJSON, ingests it through the CLI, and keeps the source.
fn fixture(rows: u64, days: u32, end: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let src = dir.path().join("src.ndjson");
    ok(&evidex(
        &data,
        &[
            "generate",
            "--rows",
            &rows.to_string(),
            "--days",
            &days.to_string(),
            "--end",
            end,
            "--seed",
            "7",
            "--output",
            src.to_str().unwrap(),
        ],
    ));
    let o = evidex(&data, &["ingest", src.to_str().unwrap()]);
    let s = ok(&o);
    assert!(
        s.contains(&format!(
            "accepted {rows} ({rows} new, 0 already stored), rejected 0"
        )),
        "{s}"
    );
    for (ds, file) in [
        ("escalations", "src.escalations.ndjson"),
        ("config-versions", "src.config-versions.ndjson"),
    ] {
        ok(&evidex(
            &data,
            &[
                "ingest",
                "--dataset",
                ds,
                dir.path().join(file).to_str().unwrap(),
            ],
        ));
    }
    let events = read_ndjson(&src);
    assert_eq!(events.len() as u64, rows);
    Fixture {
        _dir: dir,
        data,
        out,
        events,
    }
}

fn export(f: &Fixture, scope: &Scope, format: &str, extra: &[&str], name: &str) -> PathBuf {
    let mut args: Vec<String> = vec![
        "export".into(),
        "--format".into(),
        format.into(),
        "--name".into(),
        name.into(),
    ];
    args.extend(scope.args());
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(["--output".into(), f.out.to_str().unwrap().into()]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(&evidex(&f.data, &refs));
    let ext = if extra.iter().any(|e| e.starts_with("--include")) {
        "zip"
    } else {
        format
    };
    f.out.join(format!("{name}.{ext}"))
}

fn preview(f: &Fixture, scope: &Scope) -> u64 {
    let mut args: Vec<String> = vec!["preview".into()];
    args.extend(scope.args());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(&evidex(&f.data, &refs)).trim().parse().unwrap()
}

fn guard(s: &str) -> String {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_string()
    }
}

/// The CSV text a source value must come back as.
fn csv_expected(column: &str, v: &Value, formula_guard: bool) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) if formula_guard => guard(s),
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other if ["metadata", "policies_evaluated"].contains(&column) => other.to_string(),
        other => other.to_string(),
    }
}

fn check_csv(path: &Path, expected: &[&Value], formula_guard: bool) {
    let mut reader = csv::Reader::from_path(path).unwrap();
    let headers: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(headers[0], "id");
    let mut n = 0;
    for (i, record) in reader.records().enumerate() {
        let record = record.unwrap();
        let want = expected[i];
        for (c, h) in headers.iter().enumerate() {
            let got = &record[c];
            let v = &want[h.as_str()];
            if h == "cost_usd" && !v.is_null() {
                assert_eq!(
                    got.parse::<f64>().unwrap(),
                    v.as_f64().unwrap(),
                    "row {i} {h}"
                );
            } else {
                assert_eq!(got, csv_expected(h, v, formula_guard), "row {i} column {h}");
            }
        }
        n += 1;
    }
    assert_eq!(n, expected.len());
}

fn check_ndjson(path: &Path, expected: &[&Value]) {
    let got = read_ndjson(path);
    assert_eq!(got.len(), expected.len());
    for (g, w) in got.iter().zip(expected) {
        assert_eq!(g, *w);
    }
}

#[test]
fn exports_match_an_independent_computation() {
    let f = fixture(30_000, 20, "2026-03-20");
    let scopes = [
        Scope::days("2026-03-05", "2026-03-11"),
        Scope {
            tz: Some("America/New_York"),
            ..Scope::days("2026-03-05", "2026-03-11")
        },
        Scope {
            tz: Some("Asia/Kolkata"),
            decisions: vec!["block", "redact", "escalate"],
            min_severity: Some("high"),
            ..Scope::days("2026-03-01", "2026-03-20")
        },
        Scope {
            policies: vec!["pii-detection".into(), "secrets-leak".into()],
            ..Scope::days("2026-03-10", "2026-03-10")
        },
        Scope::days("2026-03-02T13:15:00+01:00", "2026-03-04T00:00:00Z"),
        Scope::days("2025-01-01", "2025-01-31"),
    ];
    for (k, scope) in scopes.iter().enumerate() {
        let expected = scope.expected(&f.events);
        assert_eq!(
            preview(&f, scope),
            expected.len() as u64,
            "preview of scope {k}"
        );
        let csv = export(&f, scope, "csv", &[], &format!("s{k}"));
        check_csv(&csv, &expected, true);
        let nd = export(&f, scope, "ndjson", &[], &format!("s{k}"));
        check_ndjson(&nd, &expected);
        let json = export(&f, scope, "json", &[], &format!("s{k}"));
        let arr: Vec<Value> =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(arr.len(), expected.len());
        assert!(
            arr.iter().zip(&expected).all(|(a, b)| a == *b),
            "json scope {k}"
        );
        let pq = export(&f, scope, "parquet", &[], &format!("s{k}"));
        let ids = parquet_ids(&pq);
        let want: Vec<&str> = expected.iter().map(|e| e["id"].as_str().unwrap()).collect();
        assert_eq!(ids, want, "parquet scope {k}");
    }
}

fn parquet_ids(path: &Path) -> Vec<String> {
    use evidex_engine_reexports::*;
    let file = std::fs::File::open(path).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let mut ids = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let col = batch.column_by_name("id").unwrap();
        let col = col.as_any().downcast_ref::<StringArray>().unwrap();
        ids.extend(col.iter().map(|s| s.unwrap().to_string()));
    }
    ids
}

mod evidex_engine_reexports {
    pub use evidex_engine::arrow::array::StringArray;
    pub use evidex_engine::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
}

#[test]
fn formula_guard_can_be_turned_off_and_payloads_dropped() {
    let f = fixture(3_000, 3, "2026-03-03");
    let scope = Scope::days("2026-03-01", "2026-03-03");
    let expected = scope.expected(&f.events);
    let hostile = expected
        .iter()
        .filter(|e| {
            e["input"]
                .as_str()
                .is_some_and(|s| s.starts_with(['=', '+', '-', '@', '\t']))
        })
        .count();
    assert!(hostile > 0, "the generator plants formula-like inputs");
    let csv = export(&f, &scope, "csv", &["--no-formula-guard"], "raw");
    check_csv(&csv, &expected, false);
    let nd = export(&f, &scope, "ndjson", &["--no-payloads"], "nopay");
    for line in read_ndjson(&nd) {
        assert!(line.get("input").is_none() && line.get("output").is_none());
        assert!(line.get("policy").is_some());
    }
}

#[test]
fn includes_and_split_rows_make_a_zip_of_parts() {
    let f = fixture(5_000, 5, "2026-03-05");
    let scope = Scope::days("2026-03-01", "2026-03-05");
    let expected = scope.expected(&f.events);
    let zip_path = export(&f, &scope, "ndjson", &["--split-rows", "1500"], "parts");
    let zip_path = zip_path.with_extension("zip");
    let mut archive = zip::ZipArchive::new(std::fs::File::open(&zip_path).unwrap()).unwrap();
    let mut names: Vec<String> = (0..archive.len())
        .map(|i| archive.by_index(i).unwrap().name().to_string())
        .collect();
    // The package files (signed manifest, signed checksums, key, how to verify)
    // close every ZIP.
    assert_eq!(
        names.split_off(names.len() - 6),
        [
            "manifest.json",
            "manifest.sig",
            "SHA256SUMS",
            "SHA256SUMS.sig",
            "signing-key.pem",
            "VERIFY.txt"
        ]
    );
    let parts = expected.len().div_ceil(1500);
    assert_eq!(names.len(), parts);
    let mut all = Vec::new();
    for (i, name) in names.iter().enumerate() {
        assert_eq!(name, &format!("events-{:05}.ndjson", i + 1));
        let mut s = String::new();
        archive
            .by_name(name)
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        all.extend(s.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()));
    }
    assert_eq!(all.len(), expected.len());
    assert!(all.iter().zip(&expected).all(|(a, b)| a == *b));

    let zip_path = export(
        &f,
        &scope,
        "csv",
        &["--include", "escalations", "--include", "config_history"],
        "withinc",
    );
    let mut archive = zip::ZipArchive::new(std::fs::File::open(&zip_path).unwrap()).unwrap();
    let mut names: Vec<String> = (0..archive.len())
        .map(|i| archive.by_index(i).unwrap().name().to_string())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "SHA256SUMS",
            "SHA256SUMS.sig",
            "VERIFY.txt",
            "config_history.csv",
            "escalations.csv",
            "events-00001.csv",
            "manifest.json",
            "manifest.sig",
            "signing-key.pem",
        ]
    );
    let mut s = String::new();
    archive
        .by_name("escalations.csv")
        .unwrap()
        .read_to_string(&mut s)
        .unwrap();
    let ids: HashSet<&str> = expected.iter().map(|e| e["id"].as_str().unwrap()).collect();
    let mut rdr = csv::Reader::from_reader(s.as_bytes());
    let mut n = 0;
    for r in rdr.records() {
        let r = r.unwrap();
        assert!(
            ids.contains(&r[1]),
            "escalation of an event outside the scope"
        );
        n += 1;
    }
    assert!(n > 0);
}

/// Events at the very first and last microsecond of the first and last day, in UTC
/// and in a timezone east of UTC.
#[test]
fn day_boundaries_are_inclusive_whole_days() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mk = |id: &str, ts: &str| {
        json!({"id": id, "timestamp": ts, "decision": "allow", "severity": "info", "policy": "p",
               "gateway_id": "g", "consumer_group": "c"})
        .to_string()
    };
    let lines = [
        mk("before", "2026-02-28T23:59:59.999999Z"),
        mk("first", "2026-03-01T00:00:00Z"),
        mk("last", "2026-03-03T23:59:59.999999Z"),
        mk("after", "2026-03-04T00:00:00Z"),
        // Berlin is UTC+1 in March: its 1 March starts at 2026-02-28T23:00:00Z.
        mk("berlin-first", "2026-03-01T00:00:00+01:00"),
        mk("berlin-before", "2026-02-28T23:59:59.999999+01:00"),
        mk("berlin-last", "2026-03-03T23:59:59.999999+01:00"),
        mk("berlin-after", "2026-03-04T00:00:00+01:00"),
    ];
    let input = lines.join("\n");
    ok(&evidex_stdin(&data, &["ingest", "-"], input.as_bytes()));
    let ids = |tz: &str| -> Vec<String> {
        let out = ok(&evidex(
            &data,
            &[
                "export",
                "--from",
                "2026-03-01",
                "--to",
                "2026-03-03",
                "--timezone",
                tz,
                "--format",
                "ndjson",
                "--output",
                "-",
            ],
        ));
        ndjson_ids(&out)
    };
    // UTC: berlin-first is 2026-02-28T23:00Z (out); berlin-after is 2026-03-03T23:00Z (in).
    assert_eq!(ids("UTC"), ["first", "berlin-last", "berlin-after", "last"]);
    assert_eq!(
        ids("Europe/Berlin"),
        ["berlin-first", "before", "first", "berlin-last"]
    );
}

#[test]
fn bad_lines_are_reported_and_good_lines_kept() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let good = |id: &str| {
        json!({"id": id, "timestamp": "2026-03-01T10:00:00Z", "verdict": "blocked", "severity": "high", "policy": "p", "gateway_id": "g", "consumer_group": "c", "team": "x"}).to_string()
    };
    let input = [
        good("a"),
        r#"{"id":"b","timestamp":"2026-03-01T10:00:00Z","decision":"nope","severity":"high","policy":"p","gateway_id":"g","consumer_group":"c"}"#.to_string(),
        good("c"),
        "not json at all".to_string(),
        r#"{"id":"d","timestamp":"yesterday","decision":"allow","severity":"high","policy":"p","gateway_id":"g","consumer_group":"c"}"#.to_string(),
        good("e"),
    ]
    .join("\n");
    let file = dir.path().join("in.ndjson");
    std::fs::write(&file, &input).unwrap();
    let out = evidex(&data, &["ingest", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("accepted 3 (3 new, 0 already stored), rejected 3"),
        "{t}"
    );
    assert!(t.contains(":2: field `decision` must be one of"), "{t}");
    assert!(t.contains(":4: invalid JSON"), "{t}");
    assert!(
        t.contains(":5: field `timestamp` must be an RFC 3339"),
        "{t}"
    );

    // Re-ingesting the same file stores nothing twice.
    let out = evidex(&data, &["ingest", file.to_str().unwrap()]);
    assert!(
        text(&out).contains("accepted 3 (0 new, 3 already stored)"),
        "{}",
        text(&out)
    );
    let count = |data: &Path| -> u64 {
        ok(&evidex(
            data,
            &["preview", "--from", "2026-03-01", "--to", "2026-03-01"],
        ))
        .trim()
        .parse()
        .unwrap()
    };
    assert_eq!(count(&data), 3);
    // Unknown fields were kept in metadata; the alias was normalised.
    let nd = ok(&evidex(
        &data,
        &[
            "export",
            "--from",
            "2026-03-01",
            "--to",
            "2026-03-01",
            "--format",
            "ndjson",
            "--output",
            "-",
        ],
    ));
    let first: Value = serde_json::from_str(nd.lines().next().unwrap()).unwrap();
    assert_eq!(first["metadata"]["team"], "x");
    assert_eq!(first["decision"], "block");

    // Invalid UTF-8, a truncated last line, and a 10 MB line: each is reported, the
    // rest is stored, and nothing stored before is lost.
    let mut bytes = good("f").into_bytes();
    bytes.extend_from_slice(b"\n{\"id\":\"g\xff\"}\n");
    bytes.extend_from_slice(
        format!(
            "{{\"id\":\"big\",\"input\":\"{}\"}}\n",
            "x".repeat(10 << 20)
        )
        .as_bytes(),
    );
    bytes.extend_from_slice(good("h").as_bytes());
    bytes.extend_from_slice(b"\n{\"id\":\"trunc\",\"timestamp\":\"2026-03-01T1");
    let out = evidex_stdin(&data, &["ingest", "-"], &bytes);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("stdin:2: invalid UTF-8 at byte"), "{t}");
    assert!(t.contains("stdin:3: line is 10485"), "{t}");
    assert!(t.contains("over the limit of 1048576 bytes"), "{t}");
    assert!(
        t.contains("stdin:5: field `timestamp`: truncated JSON"),
        "{t}"
    );
    assert!(t.contains("accepted 2 (2 new"), "{t}");
    assert_eq!(count(&data), 5);

    // Empty input is an error that names the problem, and loses nothing.
    let out = evidex_stdin(&data, &["ingest", "-"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("input is empty"), "{}", text(&out));
    let out = evidex_stdin(&data, &["ingest", "-"], b"  \n\n");
    assert_eq!(out.status.code(), Some(2));
    let out = evidex(
        &data,
        &[
            "ingest",
            dir.path().join("missing.ndjson").to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("cannot open"), "{}", text(&out));
    // A JSON array with a cut-off end keeps its complete elements.
    let arr = format!("[{},\n{},\n{{\"id\":", good("i"), good("j"));
    let out = evidex_stdin(&data, &["ingest", "-"], arr.as_bytes());
    let t = text(&out);
    assert!(
        t.contains("accepted 2") && t.contains("stdin:3: truncated"),
        "{t}"
    );
    assert_eq!(count(&data), 7);
}

#[test]
fn bad_requests_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cases: &[(&[&str], &str)] = &[
        (
            &["preview", "--from", "2026-03-05", "--to", "2026-03-01"],
            "from:",
        ),
        (
            &["preview", "--from", "2026-02-30", "--to", "2026-03-01"],
            "from:",
        ),
        (
            &[
                "preview",
                "--from",
                "2026-03-01",
                "--to",
                "2026-03-02",
                "--timezone",
                "Mars/Base",
            ],
            "timezone:",
        ),
        (
            &[
                "preview",
                "--from",
                "2026-03-01",
                "--to",
                "2026-03-02",
                "--decision",
                "maybe",
            ],
            "decision:",
        ),
        (
            &[
                "preview",
                "--from",
                "2026-03-01",
                "--to",
                "2026-03-02",
                "--min-severity",
                "huge",
            ],
            "min_severity:",
        ),
        (
            &[
                "preview",
                "--from",
                "2026-03-01",
                "--to",
                "2026-03-02",
                "--include",
                "everything",
            ],
            "include:",
        ),
        (
            &[
                "export",
                "--from",
                "2026-03-01",
                "--to",
                "2026-03-02",
                "--format",
                "xlsx",
                "--output",
                "-",
            ],
            "format:",
        ),
        (
            &[
                "export",
                "--from",
                "2026-03-01",
                "--to",
                "2026-03-02",
                "--format",
                "csv",
                "--output",
                "/nonexistent/dir/x.csv",
            ],
            "does not exist",
        ),
        (&["ingest", "--dataset", "users", "-"], "--dataset"),
    ];
    for (args, want) in cases {
        let out = evidex(&data, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(text(&out).contains(want), "{args:?}: {}", text(&out));
    }
}

#[test]
fn many_small_appends_are_compacted_without_duplicates_or_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut all = Vec::new();
    for batch in 0..12 {
        let lines: Vec<String> = (0..50)
            .map(|i| {
                let n = batch * 50 + i;
                json!({"id": format!("e{n:04}"), "timestamp": format!("2026-03-0{}T{:02}:{:02}:00Z", 1 + n % 2, n % 24, n % 60),
                       "decision": "allow", "severity": "low", "policy": "p", "gateway_id": "g", "consumer_group": "c"})
                .to_string()
            })
            .collect();
        all.extend(
            lines
                .iter()
                .map(|l| serde_json::from_str::<Value>(l).unwrap()),
        );
        ok(&evidex_stdin(
            &data,
            &["ingest", "-"],
            lines.join("\n").as_bytes(),
        ));
    }
    // Compaction ran after ingests (8 files per partition by default): count the files.
    let files = |d: &str| {
        std::fs::read_dir(data.join("events").join(format!("date={d}")))
            .unwrap()
            .count()
    };
    assert!(files("2026-03-01") >= 1);
    let scope = Scope::days("2026-03-01", "2026-03-02");
    let want: Vec<&str> = scope
        .expected(&all)
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    let got = |data: &Path| -> Vec<String> {
        let out = ok(&evidex(
            data,
            &[
                "export",
                "--from",
                "2026-03-01",
                "--to",
                "2026-03-02",
                "--format",
                "ndjson",
                "--output",
                "-",
            ],
        ));
        ndjson_ids(&out)
    };
    assert_eq!(got(&data), want);
    let out = ok(&evidex(&data, &["compact", "--min-files", "2"]));
    assert!(out.contains("events:"), "{out}");
    assert_eq!(got(&data), want);
}

#[test]
fn reported_sizes_and_hashes_match_the_written_files() {
    use sha2::{Digest, Sha256};
    let f = fixture(2_000, 2, "2026-03-02");
    let scope = Scope::days("2026-03-01", "2026-03-02");
    for extra in [&[][..], &["--include", "config_history"][..]] {
        let mut args: Vec<String> = vec![
            "export".into(),
            "--format".into(),
            "csv".into(),
            "--json".into(),
        ];
        args.extend(scope.args());
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend(["--output".into(), f.out.to_str().unwrap().into()]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = evidex(&f.data, &refs);
        ok(&out);
        let summary: Value = serde_json::from_slice(&out.stderr).unwrap();
        let path = PathBuf::from(summary["path"].as_str().unwrap());
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(summary["bytes"], bytes.len() as u64);
        assert_eq!(summary["sha256"], hex::encode(Sha256::digest(&bytes)));
        // No temporary file is left beside the artifact.
        let leftovers: Vec<_> = std::fs::read_dir(&f.out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".partial-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}

/// Variables a platform sets (Kubernetes: `EVIDEX_PORT`, `EVIDEX_SERVICE_HOST` for a
/// Service named evidex; scripts: `EVIDEX_BIN`) do not stop evidex, and are named
/// in a warning; a misspelt key of a known section still stops it, naming the key.
#[test]
fn platform_variables_warn_and_misspelt_keys_fail() {
    let dir = tempfile::tempdir().unwrap();
    let run = |vars: &[(&str, &str)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_evidex"));
        cmd.arg("--data").arg(dir.path()).arg("tables");
        for (k, v) in vars {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let out = run(&[
        ("EVIDEX_PORT", "tcp://10.96.0.12:8080"),
        ("EVIDEX_SERVICE_HOST", "10.96.0.12"),
        ("EVIDEX_BIN", "/usr/local/bin/evidex"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning: ignoring EVIDEX_BIN, EVIDEX_PORT, EVIDEX_SERVICE_HOST"),
        "{err}"
    );
    let out = run(&[("EVIDEX_SERVER__LISTN", "0.0.0.0:1")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("did you mean EVIDEX_SERVER__LISTEN?"),
        "{}",
        text(&out)
    );
}
