//! End-to-end tests of evidence features through the `evidex` binary: redaction in
//! every format, SQL definitions and presets that cannot leave their scope, signed
//! manifests that `evidex verify` checks against every kind of tampering, and
//! byte-identical re-runs pinned to a manifest.

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use chrono::DateTime;
use regex::Regex;
use serde_json::Value;

fn run(data: &Path, envs: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_evidex"));
    cmd.arg("--data")
        .arg(data)
        .args(args)
        .env_remove("EVIDEX_DATA");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("evidex runs")
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "evidex failed ({:?}):\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn all_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

struct Fixture {
    dir: tempfile::TempDir,
    data: PathBuf,
    out: PathBuf,
    events: Vec<Value>,
    escalations: Vec<Value>,
    configs: Vec<Value>,
}

fn read_ndjson(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Generates source files with the CLI, ingests all three datasets, keeps the source.
fn fixture(rows: u64, days: u32, end: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let src = dir.path().join("src.ndjson");
    ok(run(
        &data,
        &[],
        &[
            "generate",
            "--rows",
            &rows.to_string(),
            "--days",
            &days.to_string(),
            "--end",
            end,
            "--seed",
            "11",
            "--output",
            src.to_str().unwrap(),
        ],
    ));
    let esc = dir.path().join("src.escalations.ndjson");
    let cfg = dir.path().join("src.config-versions.ndjson");
    ok(run(&data, &[], &["ingest", src.to_str().unwrap()]));
    ok(run(
        &data,
        &[],
        &["ingest", "--dataset", "escalations", esc.to_str().unwrap()],
    ));
    ok(run(
        &data,
        &[],
        &[
            "ingest",
            "--dataset",
            "config-versions",
            cfg.to_str().unwrap(),
        ],
    ));
    Fixture {
        events: read_ndjson(&src),
        escalations: read_ndjson(&esc),
        configs: read_ndjson(&cfg),
        dir,
        data,
        out,
    }
}

fn micros(v: &Value) -> i64 {
    DateTime::parse_from_rfc3339(v.as_str().unwrap())
        .unwrap()
        .timestamp_micros()
}

fn luhn(digits: &str) -> bool {
    let d: Vec<u32> = digits.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&d.len()) {
        return false;
    }
    let sum: u32 = d
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &x)| {
            if i % 2 == 1 {
                let y = x * 2;
                if y > 9 { y - 9 } else { y }
            } else {
                x
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// The test's own patterns for what the generator plants (written independently of
/// the engine's detectors).
struct Secrets {
    kinds: Vec<(&'static str, Regex)>,
}

impl Secrets {
    fn new() -> Secrets {
        let r = |p: &str| Regex::new(p).unwrap();
        Secrets {
            kinds: vec![
                ("email", r(r"[a-z]+\.[a-z]+@[a-z]+(\.[a-z]+)+")),
                ("ssn", r(r"\b\d{3}-\d{2}-\d{4}\b")),
                ("card", r(r"\b\d{4}[ -]?\d{4}[ -]?\d{4}[ -]?\d{1,4}\b")),
                (
                    "key",
                    r(
                        r"sk-proj-[A-Za-z0-9]{40}|AKIA[A-Z0-9]{16}|ghp_[A-Za-z0-9]{36}|xoxb-\d+-[A-Za-z0-9]{24}",
                    ),
                ),
                ("private_key", r(r"BEGIN RSA PRIVATE KEY")),
                ("phone", r(r"\+1 \d{3}-555-\d{4}")),
            ],
        }
    }

    /// Every planted value in `text`, by kind.
    fn find(&self, text: &str, into: &mut BTreeMap<&'static str, HashSet<String>>) {
        for (kind, re) in &self.kinds {
            for m in re.find_iter(text) {
                if *kind == "card" && !luhn(m.as_str()) {
                    continue;
                }
                into.entry(kind).or_default().insert(m.as_str().to_string());
            }
        }
    }

    /// Free text of the source records: the values redaction must cover.
    fn planted(&self, f: &Fixture) -> BTreeMap<&'static str, HashSet<String>> {
        let mut found = BTreeMap::new();
        let mut strings = Vec::new();
        fn collect(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::String(s) => out.push(s.clone()),
                Value::Array(a) => a.iter().for_each(|x| collect(x, out)),
                Value::Object(o) => o.values().for_each(|x| collect(x, out)),
                _ => {}
            }
        }
        for e in &f.events {
            for k in ["input", "output", "metadata", "policies_evaluated"] {
                collect(&e[k], &mut strings);
            }
        }
        for e in &f.escalations {
            collect(&e["note"], &mut strings);
        }
        for c in &f.configs {
            collect(&c["diff"], &mut strings);
            collect(&c["summary"], &mut strings);
        }
        for s in strings {
            self.find(&s, &mut found);
        }
        found
    }

    /// Asserts that no planted value survives in `text` (an export's content).
    fn assert_absent(
        &self,
        label: &str,
        text: &str,
        planted: &BTreeMap<&'static str, HashSet<String>>,
    ) {
        let mut seen = BTreeMap::new();
        self.find(text, &mut seen);
        for (kind, values) in &seen {
            if let Some(p) = planted.get(kind) {
                let leaked: Vec<&String> =
                    values.iter().filter(|v| p.contains(*v)).take(3).collect();
                assert!(
                    leaked.is_empty(),
                    "{label}: planted {kind} leaked: {leaked:?}"
                );
            }
        }
        assert!(
            !text.contains("PRIVATE KEY-----"),
            "{label}: a private key block leaked"
        );
    }
}

/// All string values of a Parquet file, one per line.
fn parquet_text(bytes: Vec<u8>) -> String {
    use evidex_engine::arrow::array::{Array, AsArray};
    use evidex_engine::arrow::datatypes::DataType;
    use evidex_engine::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
        .unwrap()
        .build()
        .unwrap();
    let mut out = String::new();
    for batch in reader {
        let batch = batch.unwrap();
        for col in batch.columns() {
            let strings: Vec<Option<&str>> = match col.data_type() {
                DataType::Utf8 => col.as_string::<i32>().iter().collect(),
                DataType::Utf8View => col.as_string_view().iter().collect(),
                DataType::LargeUtf8 => col.as_string::<i64>().iter().collect(),
                _ => continue,
            };
            for s in strings.into_iter().flatten() {
                out.push_str(s);
                out.push('\n');
            }
        }
    }
    out
}

fn zip_entries(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut z = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    let mut out = BTreeMap::new();
    for i in 0..z.len() {
        let mut e = z.by_index(i).unwrap();
        let mut b = Vec::new();
        e.read_to_end(&mut b).unwrap();
        out.insert(e.name().to_string(), b);
    }
    out
}

const SCOPE: [&str; 4] = ["--from", "2026-03-02", "--to", "2026-03-04"];

fn export(f: &Fixture, envs: &[(&str, &str)], extra: &[&str], name: &str) -> Output {
    let mut args = vec!["export", "--name", name];
    args.extend(SCOPE);
    args.extend(extra);
    args.extend(["--output", f.out.to_str().unwrap()]);
    ok(run(&f.data, envs, &args))
}

#[test]
fn redaction_leaves_no_planted_secret_in_any_format() {
    let f = fixture(6_000, 5, "2026-03-05");
    let secrets = Secrets::new();
    let planted = secrets.planted(&f);
    for kind in ["email", "ssn", "card", "key", "private_key", "phone"] {
        assert!(
            planted.get(kind).is_some_and(|s| !s.is_empty()),
            "the generator planted no {kind}: {planted:?}"
        );
    }
    let mut checked = 0;
    for format in ["csv", "json", "ndjson", "parquet"] {
        export(&f, &[], &["--format", format], &format!("r-{format}"));
        let bytes = std::fs::read(f.out.join(format!("r-{format}.{format}"))).unwrap();
        let text = if format == "parquet" {
            parquet_text(bytes)
        } else {
            String::from_utf8(bytes).unwrap()
        };
        assert!(
            text.contains("[REDACTED:EMAIL]"),
            "{format}: nothing redacted"
        );
        secrets.assert_absent(format, &text, &planted);
        checked += 1;
    }
    // ZIP parts and the other datasets (escalation notes, configuration diffs).
    export(
        &f,
        &[],
        &[
            "--format",
            "ndjson",
            "--split-rows",
            "1000",
            "--include",
            "escalations",
            "--include",
            "config_history",
        ],
        "r-zip",
    );
    let entries = zip_entries(&f.out.join("r-zip.zip"));
    assert!(
        entries.contains_key("events-00002.ndjson"),
        "{:?}",
        entries.keys()
    );
    for (name, bytes) in &entries {
        secrets.assert_absent(name, &String::from_utf8_lossy(bytes), &planted);
        checked += 1;
    }
    assert!(String::from_utf8_lossy(&entries["escalations.ndjson"]).contains("[REDACTED:"));
    // SQL definitions read the redacted views too.
    let sql = f.dir.path().join("raw.sql");
    std::fs::write(
        &sql,
        "SELECT id, input, output, metadata, policies_evaluated FROM events ORDER BY id",
    )
    .unwrap();
    export(
        &f,
        &[],
        &["--sql", sql.to_str().unwrap(), "--format", "json"],
        "r-sql",
    );
    let text = std::fs::read_to_string(f.out.join("r-sql.json")).unwrap();
    secrets.assert_absent("sql", &text, &planted);
    // Metadata stays nested JSON after redaction.
    let rows: Vec<Value> = serde_json::from_str(&text).unwrap();
    assert!(rows.iter().any(|r| r["metadata"].is_object()));
    assert!(checked >= 8);

    // The rules come from configuration and are recorded in the manifest.
    let envs = [("EVIDEX_REDACTION__DETECTORS", "[\"ssn\"]")];
    export(&f, &envs, &["--format", "csv"], "only-ssn");
    let text = std::fs::read_to_string(f.out.join("only-ssn.csv")).unwrap();
    assert!(text.contains("[REDACTED:SSN]") && !text.contains("[REDACTED:EMAIL]"));
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(f.out.join("only-ssn.csv.manifest.json")).unwrap())
            .unwrap();
    assert_eq!(
        manifest["redaction"]["rules"]["detectors"],
        serde_json::json!(["ssn"])
    );

    // --no-payloads drops input and output entirely.
    export(&f, &[], &["--format", "csv", "--no-payloads"], "nopay");
    let text = std::fs::read_to_string(f.out.join("nopay.csv")).unwrap();
    let header = text.lines().next().unwrap();
    assert!(
        !header.split(',').any(|c| c == "input" || c == "output"),
        "{header}"
    );
    let out = run(
        &f.data,
        &[],
        &[
            "export",
            "--from",
            "2026-03-02",
            "--to",
            "2026-03-04",
            "--no-payloads",
            "--sql",
            sql.to_str().unwrap(),
            "--output",
            "-",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(all_text(&out).contains("input"), "{}", all_text(&out));
}

fn sql_file(f: &Fixture, name: &str, sql: &str) -> String {
    let p = f.dir.path().join(format!("{name}.sql"));
    std::fs::write(&p, sql).unwrap();
    p.display().to_string()
}

/// Runs a definition over the fixture's filtered scope; returns the CSV rows.
fn query(f: &Fixture, envs: &[(&str, &str)], sql: &str) -> Vec<Vec<String>> {
    query_in(
        f,
        envs,
        sql,
        &[
            "--decision",
            "block",
            "--decision",
            "escalate",
            "--min-severity",
            "medium",
        ],
    )
}

fn query_in(f: &Fixture, envs: &[(&str, &str)], sql: &str, filters: &[&str]) -> Vec<Vec<String>> {
    let file = sql_file(f, "q", sql);
    let mut args = vec!["export", "--format", "csv", "--sql", &file, "--output", "-"];
    args.extend(SCOPE);
    args.extend(filters);
    let out = ok(run(&f.data, envs, &args));
    let mut rdr = csv::Reader::from_reader(out.stdout.as_slice());
    rdr.records()
        .map(|r| r.unwrap().iter().map(str::to_string).collect())
        .collect()
}

#[test]
fn sql_definitions_cannot_leave_their_scope() {
    let f = fixture(5_000, 5, "2026-03-05");
    let (start, end) = (
        micros(&Value::from("2026-03-02T00:00:00Z")),
        micros(&Value::from("2026-03-05T00:00:00Z")),
    );
    let rank = |s: &str| {
        ["info", "low", "medium", "high", "critical"]
            .iter()
            .position(|x| *x == s)
            .unwrap()
    };
    let in_scope: HashSet<&str> = f
        .events
        .iter()
        .filter(|e| {
            let t = micros(&e["timestamp"]);
            t >= start
                && t < end
                && ["block", "escalate"].contains(&e["decision"].as_str().unwrap())
                && rank(e["severity"].as_str().unwrap()) >= 2
        })
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    let n = in_scope.len();
    assert!(n > 50);
    let one = |sql: &str| -> String { query(&f, &[], sql)[0][0].clone() };
    assert_eq!(one("SELECT count(*) AS n FROM events"), n.to_string());
    // Nothing outside the window or the filters, whatever the query asks for.
    assert_eq!(
        one(
            "SELECT count(*) AS n FROM events WHERE decision NOT IN ('block', 'escalate') OR severity IN ('info', 'low') OR timestamp < '2026-03-02T00:00:00Z' OR timestamp >= '2026-03-05T00:00:00Z'"
        ),
        "0"
    );
    assert_eq!(
        one("SELECT count(*) AS n FROM (SELECT id FROM events UNION ALL SELECT id FROM events) t"),
        (2 * n).to_string()
    );
    assert_eq!(
        one(
            "WITH all_ids AS (SELECT id FROM events UNION SELECT event_id FROM escalations) SELECT count(*) FROM all_ids"
        ),
        n.to_string()
    );
    // Escalations of the scope only: updates inside the window of in-scope events.
    let want = f
        .escalations
        .iter()
        .filter(|x| {
            let t = micros(&x["at"]);
            t >= start && t < end && in_scope.contains(x["event_id"].as_str().unwrap())
        })
        .count();
    assert!(want > 0);
    assert_eq!(one("SELECT count(*) FROM escalations"), want.to_string());
    assert_eq!(
        one(
            "SELECT count(*) FROM escalations x LEFT JOIN events e ON e.id = x.event_id WHERE e.id IS NULL"
        ),
        "0"
    );
    let rows = query(
        &f,
        &[],
        "SELECT min(changed_at), max(changed_at), count(*) FROM config_versions",
    );
    let cfg_want = f
        .configs
        .iter()
        .filter(|c| (start..end).contains(&micros(&c["changed_at"])))
        .count();
    assert_eq!(rows[0][2], cfg_want.to_string());

    // A definition over an empty scope (no files at all) yields its header, no rows.
    let file = sql_file(&f, "empty", "SELECT id, policy FROM events");
    let out = ok(run(
        &f.data,
        &[],
        &[
            "export",
            "--from",
            "2020-01-01",
            "--to",
            "2020-01-02",
            "--sql",
            &file,
            "--output",
            "-",
        ],
    ));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "id,policy\r\n");

    // Every way out is refused before anything runs, naming what and where.
    let victim = f.dir.path().join("copied.csv");
    let events_dir = f.data.join("events");
    let refused = [
        (
            format!("SELECT * FROM '{}'", events_dir.display()),
            "unknown table".to_string(),
        ),
        (
            format!("SELECT * FROM read_parquet('{}')", events_dir.display()),
            "table function read_parquet is not allowed at line 1, column 15".to_string(),
        ),
        (
            format!("COPY (SELECT * FROM events) TO '{}'", victim.display()),
            "COPY is not allowed at line 1, column 1".to_string(),
        ),
        (
            format!(
                "CREATE EXTERNAL TABLE raw STORED AS PARQUET LOCATION '{}'",
                events_dir.display()
            ),
            "CREATE EXTERNAL TABLE is not allowed".to_string(),
        ),
        (
            "SELECT 1;\nDROP TABLE events".to_string(),
            "second statement starts at line 2, column 1".to_string(),
        ),
        (
            "SET datafusion.execution.target_partitions = 1".to_string(),
            "SET is not allowed".to_string(),
        ),
        (
            "INSERT INTO events SELECT * FROM events".to_string(),
            "INSERT INTO is not allowed".to_string(),
        ),
        (
            "SELECT * FROM lake.events".to_string(),
            "unknown table lake.events".to_string(),
        ),
        (
            "SELECT * FROM information_schema.tables".to_string(),
            "unknown table information_schema.tables".to_string(),
        ),
        (
            "SELECT * INTO stolen FROM events".to_string(),
            "SELECT INTO".to_string(),
        ),
    ];
    for (sql, want) in refused {
        let file = sql_file(&f, "bad", &sql);
        let mut args = vec!["export", "--sql", &file, "--output", "-"];
        args.extend(SCOPE);
        let out = run(&f.data, &[], &args);
        assert_eq!(out.status.code(), Some(2), "{sql}: {}", all_text(&out));
        let msg = String::from_utf8_lossy(&out.stderr);
        assert!(msg.contains("sql: ") && msg.contains(&want), "{sql}: {msg}");
        assert!(out.stdout.is_empty());
    }
    assert!(!victim.exists(), "COPY wrote a file");

    // A memory limit far below the data makes a large sort spill instead of failing:
    // ~3,000 events × 64 copies of their text, sorted by it, under 16 MiB.
    let window = f
        .events
        .iter()
        .filter(|e| (start..end).contains(&micros(&e["timestamp"])))
        .count();
    let text_bytes: usize = f
        .events
        .iter()
        .filter(|e| (start..end).contains(&micros(&e["timestamp"])))
        .map(|e| e["input"].as_str().map_or(0, str::len))
        .sum();
    assert!(
        64 * text_bytes > 4 * (16 << 20),
        "too little data to need a spill: {text_bytes}"
    );
    let envs = [("EVIDEX_EXPORT__QUERY_MEMORY_MB", "16")];
    let rows = query_in(
        &f,
        &envs,
        "SELECT e.id, x.k FROM events e CROSS JOIN generate_series(1, 64) AS x(k) ORDER BY e.input DESC, e.id, x.k",
        &[],
    );
    assert_eq!(rows.len(), 64 * window);
}

#[test]
fn presets_are_listed_run_and_count_like_the_source() {
    let f = fixture(4_000, 4, "2026-03-04");
    let listed = String::from_utf8(ok(run(&f.data, &[], &["presets"])).stdout).unwrap();
    for name in [
        "decision-events",
        "policy-violations",
        "escalations",
        "config-changes",
        "daily-summary",
        "export-activity",
    ] {
        assert!(listed.contains(name), "{listed}");
    }
    // policy × reason × decision × severity, against the source.
    let (start, end) = (
        micros(&Value::from("2026-03-02T00:00:00Z")),
        micros(&Value::from("2026-03-05T00:00:00Z")),
    );
    let mut want: BTreeMap<(String, String, String, String), u64> = BTreeMap::new();
    for e in f
        .events
        .iter()
        .filter(|e| (start..end).contains(&micros(&e["timestamp"])))
    {
        if e["decision"] == "allow" {
            continue;
        }
        let s = |k: &str| e[k].as_str().unwrap_or("").to_string();
        *want
            .entry((s("policy"), s("reason_code"), s("decision"), s("severity")))
            .or_default() += 1;
    }
    export(&f, &[], &["--preset", "policy-violations"], "pv");
    let mut rdr = csv::Reader::from_path(f.out.join("pv.csv")).unwrap();
    assert_eq!(
        rdr.headers().unwrap().iter().collect::<Vec<_>>(),
        [
            "policy",
            "reason_code",
            "decision",
            "severity",
            "events",
            "pct_of_violations",
            "pct_of_decisions"
        ]
    );
    let mut got = BTreeMap::new();
    for r in rdr.records() {
        let r = r.unwrap();
        got.insert(
            (
                r[0].to_string(),
                r[1].to_string(),
                r[2].to_string(),
                r[3].to_string(),
            ),
            r[4].parse::<u64>().unwrap(),
        );
    }
    assert_eq!(got, want);

    // Every preset runs on the same scope in each format it may be asked for.
    for name in [
        "decision-events",
        "escalations",
        "config-changes",
        "daily-summary",
        "export-activity",
    ] {
        for format in ["csv", "json", "parquet"] {
            export(
                &f,
                &[],
                &["--preset", name, "--format", format],
                &format!("{name}-{format}"),
            );
        }
    }
    let days = std::fs::read_to_string(f.out.join("daily-summary-csv.csv")).unwrap();
    assert_eq!(days.lines().count(), 1 + 3, "{days}");
    let total: u64 = days
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap().parse::<u64>().unwrap())
        .sum();
    let in_window = f
        .events
        .iter()
        .filter(|e| (start..end).contains(&micros(&e["timestamp"])))
        .count();
    assert_eq!(total, in_window as u64);

    // Unknown presets and malformed preset files are named.
    let out = run(
        &f.data,
        &[],
        &[
            "export",
            "--from",
            "2026-03-02",
            "--to",
            "2026-03-04",
            "--preset",
            "nope",
            "--output",
            "-",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        all_text(&out).contains("unknown preset \"nope\"; available: config-changes"),
        "{}",
        all_text(&out)
    );
    let dir = f.dir.path().join("presets");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("mine.sql"),
        "-- name: mine\n-- description: x\n-- format: ndjson\nSELECT id FROM events ORDER BY id",
    )
    .unwrap();
    let dir_s = dir.display().to_string();
    let envs = [("EVIDEX_PRESETS_DIR", dir_s.as_str())];
    assert!(
        String::from_utf8(ok(run(&f.data, &envs, &["presets"])).stdout)
            .unwrap()
            .contains("mine")
    );
    std::fs::write(
        dir.join("broken.sql"),
        "-- name: broken\n-- format: csv\nSELECT 1",
    )
    .unwrap();
    let out = run(&f.data, &envs, &["presets"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        all_text(&out).contains("broken.sql") && all_text(&out).contains("description"),
        "{}",
        all_text(&out)
    );
}

fn verify(f: &Fixture, path: &Path, key: Option<&str>) -> Output {
    let mut args = vec!["verify", path.to_str().unwrap()];
    if let Some(k) = key {
        args.extend(["--key", k]);
    }
    run(&f.data, &[], &args)
}

fn assert_fails(f: &Fixture, path: &Path, key: Option<&str>, want: &str) {
    let out = verify(f, path, key);
    let text = all_text(&out);
    assert_eq!(out.status.code(), Some(1), "{want}: {text}");
    assert!(text.contains(want), "want {want:?} in:\n{text}");
}

fn flip_byte(path: &Path, at: usize) {
    let mut b = std::fs::read(path).unwrap();
    let i = at.min(b.len() - 1);
    b[i] ^= 0x01;
    std::fs::write(path, b).unwrap();
}

/// Rewrites a ZIP with `change` applied to its list of (name, bytes) entries.
fn rewrite_zip(src: &Path, dst: &Path, change: impl FnOnce(&mut Vec<(String, Vec<u8>)>)) {
    let mut entries: Vec<(String, Vec<u8>)> = zip_entries(src).into_iter().collect();
    change(&mut entries);
    let mut w = zip::ZipWriter::new(std::fs::File::create(dst).unwrap());
    for (name, bytes) in entries {
        w.start_file(name.as_str(), zip::write::SimpleFileOptions::default())
            .unwrap();
        w.write_all(&bytes).unwrap();
    }
    w.finish().unwrap();
}

#[test]
fn verify_catches_every_kind_of_tampering() {
    let f = fixture(3_000, 3, "2026-03-04");
    export(&f, &[], &["--format", "csv"], "single");
    let single = f.out.join("single.csv");
    let out = ok(verify(&f, &single, None));
    let text = all_text(&out);
    assert!(
        text.contains("signature: valid") && text.contains("records, sha256"),
        "{text}"
    );
    ok(verify(&f, &f.out.join("single.csv.manifest.json"), None));
    let key = String::from_utf8(ok(run(&f.data, &[], &["signing-key"])).stdout).unwrap();
    ok(verify(&f, &single, Some(key.trim())));

    // A key from elsewhere is refused.
    let other = tempfile::tempdir().unwrap();
    let other_key =
        String::from_utf8(ok(run(&other.path().join("d"), &[], &["signing-key"])).stdout).unwrap();
    assert_fails(
        &f,
        &single,
        Some(other_key.trim()),
        "signature does not match",
    );

    // One byte of the data file.
    let copy = |name: &str| -> PathBuf {
        let dir = f.out.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for suffix in ["", ".manifest.json", ".manifest.sig"] {
            std::fs::copy(
                f.out.join(format!("single.csv{suffix}")),
                dir.join(format!("single.csv{suffix}")),
            )
            .unwrap();
        }
        dir.join("single.csv")
    };
    let t = copy("t1");
    flip_byte(&t, 5000);
    assert_fails(&f, &t, None, "single.csv: SHA-256");
    // The manifest (row count edited): the signature no longer matches.
    let t = copy("t2");
    let m = t.with_file_name("single.csv.manifest.json");
    let edited = std::fs::read_to_string(&m)
        .unwrap()
        .replacen("\"rows\": ", "\"rows\": 1", 1);
    std::fs::write(&m, edited).unwrap();
    assert_fails(
        &f,
        &t,
        None,
        "single.csv.manifest.json: manifest.sig: the signature does not match",
    );
    // The signature itself, or its absence.
    let t = copy("t3");
    flip_byte(&t.with_file_name("single.csv.manifest.sig"), 3);
    assert_fails(&f, &t, None, "signature");
    let t = copy("t4");
    std::fs::remove_file(t.with_file_name("single.csv.manifest.sig")).unwrap();
    assert_fails(&f, &t, None, "the signature file is missing");
    let t = copy("t5");
    std::fs::remove_file(&t).unwrap();
    assert_fails(
        &f,
        &t.with_file_name("single.csv.manifest.json"),
        None,
        "listed in the manifest but missing",
    );

    // ZIP artifacts.
    export(
        &f,
        &[],
        &[
            "--format",
            "csv",
            "--include",
            "escalations",
            "--include",
            "summary",
        ],
        "pkg",
    );
    let zip = f.out.join("pkg.zip");
    let text = all_text(&ok(verify(&f, &zip, None)));
    for entry in ["events-00001.csv", "escalations.csv", "summary.csv"] {
        assert!(text.contains(&format!("pkg.zip/{entry}: ")), "{text}");
    }
    let t = f.out.join("tampered.zip");
    rewrite_zip(&zip, &t, |e| {
        let (_, b) = e.iter_mut().find(|(n, _)| n == "escalations.csv").unwrap();
        let i = b.len() / 2;
        b[i] ^= 0x01;
    });
    assert_fails(&f, &t, None, "tampered.zip/escalations.csv: SHA-256");
    rewrite_zip(&zip, &t, |e| e.retain(|(n, _)| n != "summary.csv"));
    assert_fails(
        &f,
        &t,
        None,
        "tampered.zip/summary.csv: listed in the manifest but missing",
    );
    rewrite_zip(&zip, &t, |e| {
        e.push(("extra.csv".into(), b"a,b\r\n".to_vec()))
    });
    assert_fails(
        &f,
        &t,
        None,
        "tampered.zip/extra.csv: in the archive but not in the manifest",
    );
    rewrite_zip(&zip, &t, |e| {
        e.push(("../../escape.csv".into(), b"x".to_vec()))
    });
    assert_fails(&f, &t, None, "has a path that escapes the archive's folder");
    rewrite_zip(&zip, &t, |e| e.retain(|(n, _)| n != "manifest.sig"));
    assert_fails(&f, &t, None, "the signature file is missing");
    // An unchanged rewrite still verifies: the checks are about content, not layout.
    rewrite_zip(&zip, &t, |_| {});
    ok(verify(&f, &t, None));

    // An empty scope still gets a signed manifest stating 0 records.
    let out = ok(run(
        &f.data,
        &[],
        &[
            "export",
            "--from",
            "2020-01-01",
            "--to",
            "2020-01-02",
            "--format",
            "json",
            "--name",
            "nothing",
            "--output",
            f.out.to_str().unwrap(),
        ],
    ));
    drop(out);
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(f.out.join("nothing.json.manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["statement"], "0 records");
    assert_eq!(manifest["total_rows"], 0);
    ok(verify(&f, &f.out.join("nothing.json"), None));
}

#[test]
fn reruns_pinned_to_a_manifest_are_byte_identical() {
    let f = fixture(4_000, 4, "2026-03-04");
    let args = [
        "--format",
        "parquet",
        "--include",
        "escalations",
        "--include",
        "config_history",
        "--split-rows",
        "900",
    ];
    export(&f, &[], &args, "first");
    export(&f, &[], &["--format", "csv"], "first-single");
    let first = zip_entries(&f.out.join("first.zip"));
    let first_manifest: Value = serde_json::from_slice(&first["manifest.json"]).unwrap();
    let versions = first_manifest["table_versions"].clone();

    // More events for the same days, more escalations, then compaction.
    let extra = f.dir.path().join("more.ndjson");
    ok(run(
        &f.data,
        &[],
        &[
            "generate",
            "--rows",
            "1500",
            "--days",
            "3",
            "--end",
            "2026-03-04",
            "--seed",
            "99",
            "--output",
            extra.to_str().unwrap(),
        ],
    ));
    ok(run(&f.data, &[], &["ingest", extra.to_str().unwrap()]));
    let more_esc = f.dir.path().join("more.escalations.ndjson");
    ok(run(
        &f.data,
        &[],
        &[
            "ingest",
            "--dataset",
            "escalations",
            more_esc.to_str().unwrap(),
        ],
    ));
    ok(run(&f.data, &[], &["compact", "--min-files", "2"]));

    export(&f, &[], &args, "latest");
    let latest = zip_entries(&f.out.join("latest.zip"));
    let latest_manifest: Value = serde_json::from_slice(&latest["manifest.json"]).unwrap();
    assert_ne!(latest_manifest["table_versions"], versions);
    assert_ne!(
        latest_manifest["event_ids_digest"],
        first_manifest["event_ids_digest"]
    );

    let pin = |name: &str, manifest_path: &Path, args: &[&str]| {
        let m = manifest_path.to_str().unwrap().to_string();
        let mut a: Vec<&str> = args.to_vec();
        a.extend(["--as-of-manifest", &m]);
        export(&f, &[], &a, name);
    };
    let manifest_file = f.dir.path().join("first-manifest.json");
    std::fs::write(&manifest_file, &first["manifest.json"]).unwrap();
    pin("again", &manifest_file, &args);
    let again = zip_entries(&f.out.join("again.zip"));
    // The data files; the package files name the export (id, time) and differ.
    let package = evidex_engine::integrity::PACKAGE_NAMES;
    let data_names: Vec<&String> = first
        .keys()
        .filter(|n| !package.contains(&n.as_str()))
        .collect();
    assert!(data_names.len() >= 5, "{data_names:?}");
    for name in data_names {
        assert!(
            again.get(name) == first.get(name),
            "{name} differs on the pinned re-run"
        );
    }
    let again_manifest: Value = serde_json::from_slice(&again["manifest.json"]).unwrap();
    assert_eq!(again_manifest["table_versions"], versions);
    assert_eq!(
        again_manifest["event_ids_digest"],
        first_manifest["event_ids_digest"]
    );
    assert_eq!(again_manifest["files"], first_manifest["files"]);
    assert_ne!(again_manifest["export_id"], first_manifest["export_id"]);

    pin(
        "again-single",
        &f.out.join("first-single.csv.manifest.json"),
        &["--format", "csv"],
    );
    assert!(
        std::fs::read(f.out.join("again-single.csv")).unwrap()
            == std::fs::read(f.out.join("first-single.csv")).unwrap(),
        "single CSV differs on the pinned re-run"
    );

    // A file that is not a manifest is refused by name.
    let out = run(
        &f.data,
        &[],
        &[
            "export",
            "--from",
            "2026-03-02",
            "--to",
            "2026-03-04",
            "--as-of-manifest",
            extra.to_str().unwrap(),
            "--output",
            "-",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        all_text(&out).contains("is not an evidex manifest"),
        "{}",
        all_text(&out)
    );
}

fn pdf_text(pdf: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.pdf");
    std::fs::write(&path, pdf).unwrap();
    let out = Command::new("pdftotext")
        .args(["-layout", path.to_str().unwrap(), "-"])
        .output()
        .expect("pdftotext (poppler-utils) is installed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every decision count and the report's sections, against counts from a CSV.
fn assert_report_counts(text: &str, by_decision: &BTreeMap<String, u64>) {
    for (decision, label) in [
        ("allow", "Allowed"),
        ("block", "Blocked"),
        ("redact", "Redacted"),
        ("escalate", "Escalated"),
        ("flag", "Flagged"),
    ] {
        let want = by_decision.get(decision).copied().unwrap_or(0).to_string();
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("no {label} line in the report"));
        assert!(
            line.split_whitespace().any(|w| w == want),
            "{label}: want {want} in {line:?}"
        );
    }
    let total: u64 = by_decision.values().sum();
    assert!(
        text.contains(&format!("Total decisions: {total}")),
        "no total {total}"
    );
    for section in [
        "Executive summary",
        "Policy violation breakdown",
        "Decisions over time",
        "Escalations",
        "Configuration changes",
        "What this evidence covers",
        "EU AI Act",
        "SOC 2",
        "HIPAA",
    ] {
        assert!(text.contains(section), "missing {section}");
    }
}

/// The breakdown table (policy, decision, one column per severity, total) and the
/// consumer-group chart of the report, against counts from the CSV of the scope.
fn assert_breakdown(text: &str, mut rdr: csv::Reader<impl Read>) {
    let headers = rdr.headers().unwrap().clone();
    let at = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let (pol, dec, sev, grp) = (
        at("policy"),
        at("decision"),
        at("severity"),
        at("consumer_group"),
    );
    let mut cells: BTreeMap<(String, String, String), u64> = BTreeMap::new();
    let mut groups: BTreeMap<String, u64> = BTreeMap::new();
    for r in rdr.records() {
        let r = r.unwrap();
        if &r[dec] == "allow" {
            continue;
        }
        *cells
            .entry((r[pol].to_string(), r[dec].to_string(), r[sev].to_string()))
            .or_default() += 1;
        *groups.entry(r[grp].to_string()).or_default() += 1;
    }
    let header = text
        .lines()
        .find(|l| l.split_whitespace().take(2).eq(["Policy", "Decision"]))
        .expect("the breakdown table's header");
    let severities: Vec<&str> = header
        .split_whitespace()
        .skip(2)
        .take_while(|w| *w != "Total")
        .collect();
    assert!(!severities.is_empty(), "{header}");
    let pairs: std::collections::BTreeSet<(String, String)> = cells
        .keys()
        .map(|(p, d, _)| (p.clone(), d.clone()))
        .collect();
    assert!(pairs.len() > 5, "{pairs:?}");
    for (policy, decision) in &pairs {
        let line = text
            .lines()
            .find(|l| {
                l.split_whitespace()
                    .take(2)
                    .eq([policy.as_str(), decision.as_str()])
            })
            .unwrap_or_else(|| panic!("no breakdown row for {policy} / {decision}"));
        let numbers: Vec<u64> = line
            .split_whitespace()
            .skip(2)
            .map(|w| w.parse().unwrap())
            .collect();
        let mut want: Vec<u64> = severities
            .iter()
            .map(|s| {
                cells
                    .get(&(policy.clone(), decision.clone(), s.to_string()))
                    .copied()
                    .unwrap_or(0)
            })
            .collect();
        want.push(want.iter().sum());
        assert_eq!(numbers, want, "{policy} / {decision}: {line:?}");
    }
    // The charts by severity and by decision, and the top policies.
    let mut by: BTreeMap<String, u64> = BTreeMap::new();
    let mut policies: BTreeMap<String, u64> = BTreeMap::new();
    for ((p, d, s), n) in &cells {
        *by.entry(s.clone()).or_default() += n;
        *by.entry(d.clone()).or_default() += n;
        *policies.entry(p.clone()).or_default() += n;
    }
    // The two charts stand side by side: a bar is "label count", first on its line
    // or right after the other chart's count.
    for (label, n) in &by {
        let bar = text
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find_map(|w| {
                (0..w.len().saturating_sub(1)).find_map(|i| {
                    let starts = i == 0 || w[i - 1].parse::<u64>().is_ok();
                    let count = w[i + 1].parse::<u64>().ok();
                    (starts && w[i] == label && count.is_some()).then(|| count.unwrap())
                })
            })
            .unwrap_or_else(|| panic!("no chart bar for {label}"));
        assert_eq!(bar, *n, "{label}");
    }
    let mut top: Vec<(&String, &u64)> = policies.iter().collect();
    top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (policy, n) in top.iter().take(10) {
        let line = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(policy.as_str()))
            .unwrap_or_else(|| panic!("no chart bar for {policy}"));
        assert_eq!(
            line.split_whitespace().last(),
            Some(n.to_string().as_str()),
            "{policy}: {line:?}"
        );
    }
    // The chart shows the ten groups with the most violations, with their counts.
    let mut top: Vec<(&String, &u64)> = groups.iter().collect();
    top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    assert!(top.len() >= 3, "{top:?}");
    for (group, n) in top.iter().take(10) {
        let line = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(group.as_str()))
            .unwrap_or_else(|| panic!("no chart bar for {group}"));
        assert_eq!(
            line.split_whitespace().last(),
            Some(n.to_string().as_str()),
            "{group}: {line:?}"
        );
    }
}

fn counts_by_decision(rdr: csv::Reader<impl Read>) -> BTreeMap<String, u64> {
    let mut rdr = rdr;
    let col = rdr
        .headers()
        .unwrap()
        .iter()
        .position(|h| h == "decision")
        .unwrap();
    let mut by_decision: BTreeMap<String, u64> = BTreeMap::new();
    for r in rdr.records() {
        *by_decision.entry(r.unwrap()[col].to_string()).or_default() += 1;
    }
    by_decision
}

#[test]
fn the_report_travels_in_the_zip_beside_the_data_and_the_manifest_covers_it() {
    let f = fixture(3_000, 4, "2026-03-04");
    export(
        &f,
        &[],
        &[
            "--format",
            "csv",
            "--include",
            "report",
            "--include",
            "escalations",
        ],
        "package",
    );
    let zip_path = f.out.join("package.zip");
    let out = ok(run(&f.data, &[], &["verify", zip_path.to_str().unwrap()]));
    assert!(
        all_text(&out).contains("report.pdf: names manifest"),
        "{}",
        all_text(&out)
    );
    let mut zip = zip::ZipArchive::new(std::fs::File::open(&zip_path).unwrap()).unwrap();
    let mut names: Vec<String> = zip.file_names().map(String::from).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "SHA256SUMS",
            "SHA256SUMS.sig",
            "VERIFY.txt",
            "escalations.csv",
            "events-00001.csv",
            "manifest.json",
            "manifest.sig",
            "report.pdf",
            "signing-key.pem",
        ]
    );
    let entry = |zip: &mut zip::ZipArchive<std::fs::File>, name: &str| {
        let mut buf = Vec::new();
        zip.by_name(name).unwrap().read_to_end(&mut buf).unwrap();
        buf
    };
    let manifest_bytes = entry(&mut zip, "manifest.json");
    let manifest: Value = serde_json::from_slice(&manifest_bytes).unwrap();
    let pdf = entry(&mut zip, "report.pdf");
    let listed = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "report.pdf")
        .expect("the manifest lists the report");
    assert_eq!(listed["sha256"], evidex_engine::integrity::sha256_hex(&pdf));
    assert_eq!(listed["bytes"], pdf.len() as u64);
    // The report's numbers are the numbers of the CSV beside it.
    let by_decision = counts_by_decision(csv::Reader::from_reader(
        &entry(&mut zip, "events-00001.csv")[..],
    ));
    let text = pdf_text(&pdf);
    assert_report_counts(&text, &by_decision);
    let bound = manifest["report"]["manifest_sha256"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(text.contains(&bound), "the cover lacks {bound}");
    // The cover names the signing key's fingerprint, as the package's key file does.
    let pem = String::from_utf8(entry(&mut zip, "signing-key.pem")).unwrap();
    let fingerprint = pem
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("SHA-256 fingerprint: "))
        .unwrap()
        .to_string();
    assert!(text.contains(&fingerprint), "the cover lacks {fingerprint}");

    // A manifest whose report binding was changed, even signed with the right key,
    // fails: the binding is recomputed from the manifest itself.
    let mut forged: Value = manifest.clone();
    forged["report"]["manifest_sha256"] = Value::from("0".repeat(64));
    let forged_bytes = serde_json::to_vec_pretty(&forged).unwrap();
    let signer = evidex_engine::integrity::Signer::load(&f.data.join("_state"))
        .unwrap()
        .expect("the export created the key");
    let bad = f.out.join("forged.zip");
    let mut w = zip::ZipWriter::new(std::fs::File::create(&bad).unwrap());
    for name in ["events-00001.csv", "escalations.csv", "report.pdf"] {
        w.start_file(name, zip::write::SimpleFileOptions::default())
            .unwrap();
        w.write_all(&entry(&mut zip, name)).unwrap();
    }
    w.start_file("manifest.json", zip::write::SimpleFileOptions::default())
        .unwrap();
    w.write_all(&forged_bytes).unwrap();
    w.start_file("manifest.sig", zip::write::SimpleFileOptions::default())
        .unwrap();
    w.write_all(&signer.sign(&forged_bytes)).unwrap();
    w.finish().unwrap();
    let out = run(&f.data, &[], &["verify", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", all_text(&out));
    assert!(
        all_text(&out).contains("the report is bound to manifest"),
        "{}",
        all_text(&out)
    );

    // A report with a SQL definition is refused, naming the field.
    let out = run(
        &f.data,
        &[],
        &[
            "export",
            "--from",
            "2026-03-02",
            "--to",
            "2026-03-04",
            "--preset",
            "policy-violations",
            "--include",
            "report",
            "--output",
            "-",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", all_text(&out));
    assert!(
        all_text(&out).contains("format: the pdf report"),
        "{}",
        all_text(&out)
    );
}

#[test]
fn pdf_report_counts_equal_the_csv_of_the_same_scope() {
    let f = fixture(4_000, 4, "2026-03-04");
    let scope = ["--timezone", "Europe/Berlin", "--min-severity", "low"];
    export(
        &f,
        &[],
        &[&["--format", "pdf"][..], &scope[..]].concat(),
        "report",
    );
    export(
        &f,
        &[],
        &[&["--format", "csv"][..], &scope[..]].concat(),
        "report-data",
    );
    let pdf = f.out.join("report.pdf");
    assert!(std::fs::read(&pdf).unwrap().starts_with(b"%PDF-"));
    ok(run(&f.data, &[], &["verify", pdf.to_str().unwrap()]));
    let by_decision =
        counts_by_decision(csv::Reader::from_path(f.out.join("report-data.csv")).unwrap());
    let text = pdf_text(&std::fs::read(&pdf).unwrap());
    assert_report_counts(&text, &by_decision);
    assert_breakdown(
        &text,
        csv::Reader::from_path(f.out.join("report-data.csv")).unwrap(),
    );
    // The cover names the manifest without the report's entry, as the manifest's
    // `report` field records it.
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(f.out.join("report.pdf.manifest.json")).unwrap())
            .unwrap();
    let bound = manifest["report"]["manifest_sha256"].as_str().unwrap();
    assert_eq!(manifest["report"]["path"], "report.pdf");
    assert!(text.contains(bound), "cover lacks {bound}");
    // An empty scope is a clear report, not an error.
    let out = ok(run(
        &f.data,
        &[],
        &[
            "export",
            "--from",
            "2020-01-01",
            "--to",
            "2020-01-31",
            "--format",
            "pdf",
            "--name",
            "empty",
            "--output",
            f.out.to_str().unwrap(),
        ],
    ));
    drop(out);
    let out = Command::new("pdftotext")
        .args([f.out.join("empty.pdf").to_str().unwrap(), "-"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("There were no decision events"));
}

#[test]
fn sql_filters_on_ids_find_every_matching_event() {
    // Regression: file statistics once gave the first and last row's id as the id
    // range, so `WHERE id = ...` dropped events whose id sorted outside it.
    let f = fixture(3_000, 3, "2026-03-04");
    let ids: Vec<String> = f
        .events
        .iter()
        .filter(|e| {
            let t = e["timestamp"].as_str().unwrap();
            ("2026-03-02".."2026-03-05").contains(&t)
        })
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert!(ids.len() > 1000);
    let picked: Vec<&String> = ids.iter().step_by(97).collect();
    let list: Vec<String> = picked.iter().map(|id| format!("'{id}'")).collect();
    let sql = f.dir.path().join("ids.sql");
    let eq: Vec<String> = picked.iter().map(|id| format!("id = '{id}'")).collect();
    for (name, query) in [
        (
            "in",
            format!("SELECT id FROM events WHERE id IN ({})", list.join(", ")),
        ),
        (
            "or",
            format!("SELECT id FROM events WHERE {}", eq.join(" OR ")),
        ),
    ] {
        std::fs::write(&sql, &query).unwrap();
        let out = ok(run(
            &f.data,
            &[],
            &[
                &["export", "--sql", sql.to_str().unwrap(), "--output", "-"][..],
                &SCOPE[..],
            ]
            .concat(),
        ));
        let got: HashSet<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .skip(1)
            .map(str::to_string)
            .collect();
        for id in &picked {
            assert!(got.contains(*id), "{name}: {id} missing");
        }
        assert_eq!(got.len(), picked.len(), "{name}");
    }
    // Every single id, one query each, for a handful spread over the files.
    for id in ids.iter().step_by(401) {
        std::fs::write(&sql, format!("SELECT id FROM events WHERE id = '{id}'")).unwrap();
        let out = ok(run(
            &f.data,
            &[],
            &[
                &["export", "--sql", sql.to_str().unwrap(), "--output", "-"][..],
                &SCOPE[..],
            ]
            .concat(),
        ));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(id.as_str()),
            "{id}"
        );
    }
}
