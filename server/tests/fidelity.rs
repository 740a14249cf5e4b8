//! Evidence fidelity through the real binary: what a gateway sends is what the auditor
//! gets (numbers digit for digit, retries stored once whatever their timestamp, half
//! emoji repaired and counted), and every package can be checked with standard tools
//! only (`sha256sum`, OpenSSL 3), exactly as its `VERIFY.txt` says.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::value::RawValue;
use serde_json::{Value, json};

mod common;
use common::{Client, Server, run, text, token};

fn ok(out: Output) -> Output {
    assert!(out.status.success(), "evidex failed: {}", text(&out));
    out
}

/// An event with the usual required fields on 2026-03-02, plus `extra` (JSON members).
fn event(id: &str, extra: &str) -> String {
    format!(
        r#"{{"id":{id},"timestamp":"2026-03-02T10:00:00Z","decision":"block","severity":"high","policy":"pii","gateway_id":"gw-1","consumer_group":"cg"{extra}}}"#
    )
}

fn ingest(data: &Path, dir: &Path, name: &str, lines: &[String]) -> String {
    let file = dir.join(name);
    std::fs::write(&file, lines.join("\n")).unwrap();
    let out = run(data, &["ingest", file.to_str().unwrap()]);
    text(&out)
}

fn export(data: &Path, out: &Path, format: &str, extra: &[&str]) -> PathBuf {
    let mut args = vec![
        "export",
        "--from",
        "2026-03-01",
        "--to",
        "2026-03-05",
        "--format",
        format,
        "--name",
        "fidelity",
        "--output",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    ok(run(data, &args));
    out.to_path_buf()
}

/// The raw JSON text of each member of each record, as written.
fn raw_records(text: &str) -> Vec<HashMap<String, String>> {
    let parse = |s: &str| -> HashMap<String, String> {
        let m: HashMap<String, Box<RawValue>> = serde_json::from_str(s).unwrap();
        m.into_iter()
            .map(|(k, v)| (k, v.get().to_string()))
            .collect()
    };
    if text.trim_start().starts_with('[') {
        let items: Vec<Box<RawValue>> = serde_json::from_str(text).unwrap();
        items.iter().map(|r| parse(r.get())).collect()
    } else {
        text.lines().filter(|l| !l.is_empty()).map(parse).collect()
    }
}

const FLOATS: [&str; 4] = [
    "1.5777777777770001",
    "0.9215686321258545",
    "5e-324",
    "123456789.12345679",
];

#[test]
fn numbers_survive_digit_for_digit_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut lines = vec![
        event("98000000000000000000001", ""),
        event("98000000000000000000002", ""),
    ];
    for (i, f) in FLOATS.iter().enumerate() {
        lines.push(event(
            &format!("\"f-{i}\""),
            &format!(
                r#","cost_usd":{f},"reason_code":-32602,"metadata":{{"n": {f}, "big": 123456789012345678901234567890, "e": 1E+2}},"tokens_hint": 1.10"#
            ),
        ));
    }
    let out = ingest(&data, dir.path(), "in.ndjson", &lines);
    assert!(
        out.contains("accepted 6 (6 new, 0 already stored)"),
        "{out}"
    );

    // JSON and NDJSON: the raw text of every number is the sender's number.
    for format in ["json", "ndjson"] {
        let path = export(&data, &dir.path().join(format!("o.{format}")), format, &[]);
        let records = raw_records(&std::fs::read_to_string(path).unwrap());
        assert_eq!(records.len(), 6, "{format}");
        let ids: Vec<&str> = records.iter().map(|r| r["id"].as_str()).collect();
        assert!(ids.contains(&"\"98000000000000000000001\""), "{ids:?}");
        assert!(ids.contains(&"\"98000000000000000000002\""), "{ids:?}");
        for (i, f) in FLOATS.iter().enumerate() {
            let r = records
                .iter()
                .find(|r| r["id"] == format!("\"f-{i}\""))
                .unwrap();
            let want = f.parse::<f64>().unwrap();
            assert_eq!(
                r["cost_usd"].parse::<f64>().unwrap().to_bits(),
                want.to_bits(),
                "{format}: {} for {f}",
                r["cost_usd"]
            );
            // Nested numbers are the sender's JSON text, digit for digit.
            let meta = &r["metadata"];
            assert!(meta.contains(&format!("\"n\":{f}")), "{format}: {meta}");
            assert!(
                meta.contains("\"big\":123456789012345678901234567890"),
                "{meta}"
            );
            assert!(meta.contains("\"e\":1E+2"), "{meta}");
            assert!(meta.contains("\"tokens_hint\":1.10"), "{meta}");
            assert_eq!(r["reason_code"], "\"-32602\"");
        }
    }

    // CSV: the cells parse back to the same doubles and ids.
    let path = export(&data, &dir.path().join("o.csv"), "csv", &[]);
    let mut reader = csv::Reader::from_path(path).unwrap();
    let headers = reader.headers().unwrap().clone();
    let col = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let (id, cost) = (col("id"), col("cost_usd"));
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert!(rows.iter().any(|r| &r[id] == "98000000000000000000001"));
    assert!(rows.iter().any(|r| &r[id] == "98000000000000000000002"));
    for (i, f) in FLOATS.iter().enumerate() {
        let r = rows.iter().find(|r| r[id] == format!("f-{i}")).unwrap();
        assert_eq!(
            r[cost].parse::<f64>().unwrap().to_bits(),
            f.parse::<f64>().unwrap().to_bits(),
            "csv: {} for {f}",
            &r[cost]
        );
    }

    // Parquet: the stored doubles are the same bits.
    let path = export(&data, &dir.path().join("o.parquet"), "parquet", &[]);
    use evidex_engine::arrow::array::{Array, AsArray};
    use evidex_engine::arrow::datatypes::Float64Type;
    use evidex_engine::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let mut costs = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let c = batch.column_by_name("cost_usd").unwrap();
        let c = c.as_primitive::<Float64Type>();
        costs.extend(
            (0..c.len())
                .filter(|&i| c.is_valid(i))
                .map(|i| c.value(i).to_bits()),
        );
    }
    let mut want: Vec<u64> = FLOATS
        .iter()
        .map(|f| f.parse::<f64>().unwrap().to_bits())
        .collect();
    costs.sort_unstable();
    want.sort_unstable();
    assert_eq!(costs, want);

    // Through a SQL definition too: the values pass through DataFusion unchanged.
    let sql = dir.path().join("q.sql");
    std::fs::write(
        &sql,
        "SELECT id, cost_usd, metadata FROM events WHERE cost_usd IS NOT NULL ORDER BY id",
    )
    .unwrap();
    let path = export(
        &data,
        &dir.path().join("sql.ndjson"),
        "ndjson",
        &["--sql", sql.to_str().unwrap()],
    );
    let records = raw_records(&std::fs::read_to_string(path).unwrap());
    assert_eq!(records.len(), FLOATS.len());
    for (r, f) in records.iter().zip(FLOATS) {
        assert_eq!(
            r["cost_usd"].parse::<f64>().unwrap().to_bits(),
            f.parse::<f64>().unwrap().to_bits()
        );
        assert!(r["metadata"].contains(&format!("\"n\":{f}")), "{r:?}");
    }
}

#[test]
fn a_retry_with_another_timestamp_is_already_stored_and_the_first_copy_wins() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let first = event("\"r-1\"", "").replace("10:00:00Z", "10:00:00.123456Z");
    let out = ingest(&data, dir.path(), "a.ndjson", &[first]);
    assert!(
        out.contains("accepted 1 (1 new, 0 already stored)"),
        "{out}"
    );
    // The forwarder re-stamps: other precision, another UTC day, another offset.
    let retries = vec![
        event("\"r-1\"", "").replace("10:00:00Z", "10:00:00.123Z"),
        event("\"r-1\"", "").replace("2026-03-02T10:00:00Z", "2026-03-03T00:00:01Z"),
        event("\"r-1\"", "").replace("2026-03-02T10:00:00Z", "2026-03-02T12:00:00+02:00"),
        event("\"r-2\"", ""),
        event("\"r-2\"", "").replace("10:00:00Z", "11:00:00Z"),
    ];
    let out = ingest(&data, dir.path(), "b.ndjson", &retries);
    assert!(
        out.contains("accepted 5 (1 new, 4 already stored)"),
        "{out}"
    );
    let preview = ok(run(
        &data,
        &["preview", "--from", "2026-03-01", "--to", "2026-03-05"],
    ));
    assert!(text(&preview).contains('2'), "{}", text(&preview));
    let path = export(&data, &dir.path().join("o.ndjson"), "ndjson", &[]);
    let records: Vec<Value> = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 2);
    // Ordered by time: r-2 (10:00:00) before r-1 (its first copy, 10:00:00.123456).
    assert_eq!(records[0]["id"], "r-2");
    assert_eq!(records[0]["timestamp"], "2026-03-02T10:00:00.000000Z");
    assert_eq!(records[1]["id"], "r-1");
    assert_eq!(records[1]["timestamp"], "2026-03-02T10:00:00.123456Z");
}

#[test]
fn a_half_emoji_is_replaced_and_counted_and_bad_lines_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let lines = vec![
        event("\"s-1\"", r#","input":"nice work \ud83d""#),
        event(
            "\"s-2\"",
            r#","output":"\udc00 tail","metadata":{"k":"x\ud83d"}"#,
        ),
        event("\"s-3\"", r#","input":"a real pair \ud83d\ude00""#),
        event("\"s-4\"", r#","input":"bad \q escape""#),
    ];
    let out = ingest(&data, dir.path(), "s.ndjson", &lines);
    assert!(
        out.contains("accepted 3 (3 new, 0 already stored), rejected 1"),
        "{out}"
    );
    assert!(
        out.contains("replaced 3 lone UTF-16 surrogate escapes with U+FFFD"),
        "{out}"
    );
    assert!(out.contains(":4: field `input`: invalid JSON"), "{out}");
    let path = export(&data, &dir.path().join("o.json"), "json", &[]);
    let records: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let by_id = |id: &str| records.iter().find(|r| r["id"] == id).unwrap().clone();
    assert_eq!(by_id("s-1")["input"], "nice work \u{FFFD}");
    assert_eq!(by_id("s-2")["output"], "\u{FFFD} tail");
    assert_eq!(by_id("s-2")["metadata"]["k"], "x\u{FFFD}");
    assert_eq!(by_id("s-3")["input"], "a real pair 😀");
}

/// Runs every `$ ` command of a `VERIFY.txt` in `dir` exactly as written; returns
/// each command's success and its output.
fn run_verify_txt(dir: &Path, verify_txt: &str) -> Vec<(String, bool, String)> {
    let instructions = std::fs::read_to_string(dir.join(verify_txt)).unwrap();
    let commands: Vec<&str> = instructions
        .lines()
        .filter_map(|l| l.strip_prefix("$ "))
        .collect();
    assert_eq!(commands.len(), 4, "{instructions}");
    commands
        .into_iter()
        .map(|c| {
            let out = Command::new("sh")
                .arg("-c")
                .arg(c)
                .current_dir(dir)
                .output()
                .unwrap();
            (c.to_string(), out.status.success(), text(&out))
        })
        .collect()
}

fn all_pass(results: &[(String, bool, String)]) -> bool {
    results.iter().all(|(_, ok, _)| *ok)
}

fn unzip(zip: &Path, into: &Path) {
    std::fs::create_dir_all(into).unwrap();
    let mut z = zip::ZipArchive::new(std::fs::File::open(zip).unwrap()).unwrap();
    z.extract(into).unwrap();
}

/// Re-signs a package's `SHA256SUMS` and manifest with a key of the attacker's and
/// encloses that key, as a forger would.
fn forge(dir: &Path, prefix: &str, forger_state: &Path) {
    let sh = |c: &str| {
        let out = Command::new("sh")
            .arg("-c")
            .arg(c)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{c}: {}", text(&out));
    };
    let key = forger_state.join("forger.pem");
    sh(&format!(
        "openssl genpkey -algorithm ed25519 -out {k} && openssl pkey -in {k} -pubout -out {prefix}signing-key.pem",
        k = key.display()
    ));
    sh(&format!(
        "openssl pkeyutl -sign -inkey {k} -rawin -in {prefix}SHA256SUMS -out {prefix}SHA256SUMS.sig && \
         openssl pkeyutl -sign -inkey {k} -rawin -in {prefix}manifest.json -out {prefix}manifest.sig",
        k = key.display()
    ));
}

#[test]
fn packages_check_with_standard_tools_and_verify_needs_no_installation() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let lines: Vec<String> = (0..30)
        .map(|i| event(&format!("\"p-{i}\""), r#","input":"Grüße — Привет""#))
        .collect();
    ingest(&data, dir.path(), "p.ndjson", &lines);
    let published = {
        let out = ok(run(&data, &["signing-key"]));
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        err.split_whitespace()
            .find(|w| w.len() == 64 && w.chars().all(|c| c.is_ascii_hexdigit()))
            .unwrap_or_else(|| panic!("no fingerprint in {err}"))
            .to_string()
    };
    // An auditor's machine: no evidex data, so no installation key.
    let auditor = dir.path().join("auditor-empty");

    // A ZIP (parts) and a single CSV.
    let zip = export(
        &data,
        &dir.path().join("pkg.zip"),
        "csv",
        &["--split-rows", "10"],
    );
    let single = export(&data, &dir.path().join("single.csv"), "csv", &[]);
    let zdir = dir.path().join("unzipped");
    unzip(&zip, &zdir);
    let sdir = single.parent().unwrap().to_path_buf();
    for (folder, verify_txt) in [(&zdir, "VERIFY.txt"), (&sdir, "single.csv.VERIFY.txt")] {
        let results = run_verify_txt(folder, verify_txt);
        assert!(all_pass(&results), "{results:#?}");
        assert!(results[0].2.contains(&published), "{:?}", results[0]);
        assert!(
            std::fs::read_to_string(folder.join(verify_txt))
                .unwrap()
                .contains(&published)
        );
    }
    // evidex verify without a key checks against the enclosed one and says so.
    for artifact in [&zip, &single] {
        let out = run(&auditor, &["verify", artifact.to_str().unwrap()]);
        let t = text(&out);
        assert!(out.status.success(), "{t}");
        assert!(
            t.contains(&format!("fingerprint {published}: compare it")),
            "{t}"
        );
        let out = run(
            &auditor,
            &[
                "verify",
                artifact.to_str().unwrap(),
                "--fingerprint",
                &published,
            ],
        );
        assert!(out.status.success(), "{}", text(&out));
    }

    // Tampered: a data byte.
    let part = zdir.join("events-00001.csv");
    let original = std::fs::read(&part).unwrap();
    let mut bad = original.clone();
    let at = bad.len() - 5;
    bad[at] ^= 1;
    std::fs::write(&part, &bad).unwrap();
    let results = run_verify_txt(&zdir, "VERIFY.txt");
    assert!(
        results[1].1,
        "the signed list itself is intact: {results:#?}"
    );
    assert!(!results[2].1, "sha256sum -c must fail: {results:#?}");
    assert!(
        results[2].2.contains("events-00001.csv: FAILED"),
        "{results:#?}"
    );

    // Tampered: the data and the checksum list, consistently.
    let sums = std::fs::read_to_string(zdir.join("SHA256SUMS")).unwrap();
    let old = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&original));
    let new = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bad));
    std::fs::write(zdir.join("SHA256SUMS"), sums.replace(&old, &new)).unwrap();
    let results = run_verify_txt(&zdir, "VERIFY.txt");
    assert!(results[2].1, "the list matches the files now: {results:#?}");
    assert!(!results[1].1, "but its signature fails: {results:#?}");

    // Forged: re-signed with another key that the package encloses. The standard
    // tools pass, but the fingerprint is not the published one; evidex with the
    // published key or fingerprint fails; without one it names the other fingerprint.
    let forger = dir.path().join("forger");
    std::fs::create_dir_all(&forger).unwrap();
    forge(&zdir, "", &forger);
    let results = run_verify_txt(&zdir, "VERIFY.txt");
    assert!(all_pass(&results), "{results:#?}");
    assert!(!results[0].2.contains(&published), "{results:#?}");
    let repacked = dir.path().join("forged.zip");
    {
        let mut w = zip::ZipWriter::new(std::fs::File::create(&repacked).unwrap());
        let mut names: Vec<_> = std::fs::read_dir(&zdir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        for n in names {
            w.start_file(n.as_str(), zip::write::SimpleFileOptions::default())
                .unwrap();
            std::io::Write::write_all(&mut w, &std::fs::read(zdir.join(&n)).unwrap()).unwrap();
        }
        w.finish().unwrap();
    }
    let key_hex = String::from_utf8(ok(run(&data, &["signing-key"])).stdout).unwrap();
    let strict = run(
        &auditor,
        &[
            "verify",
            repacked.to_str().unwrap(),
            "--key",
            key_hex.trim(),
        ],
    );
    assert!(!strict.status.success(), "{}", text(&strict));
    assert!(
        text(&strict).contains("is not the trusted key"),
        "{}",
        text(&strict)
    );
    let by_fp = run(
        &auditor,
        &[
            "verify",
            repacked.to_str().unwrap(),
            "--fingerprint",
            &published,
        ],
    );
    assert!(!by_fp.status.success(), "{}", text(&by_fp));
    // Still caught without a key: the data no longer matches the signed manifest.
    let loose = run(&auditor, &["verify", repacked.to_str().unwrap()]);
    assert!(!loose.status.success(), "{}", text(&loose));
    assert!(
        text(&loose).contains("events-00001.csv"),
        "{}",
        text(&loose)
    );
    // The installation's own key is used by default where it exists.
    let here = run(&data, &["verify", repacked.to_str().unwrap()]);
    assert!(!here.status.success());

    // Two entries of one name: the first tampered, the second the original. Readers
    // that keep one copy disagree on which; verify refuses the archive.
    let doubled = dir.path().join("doubled.zip");
    let script = format!(
        "import zipfile, warnings\nwarnings.simplefilter('ignore')\n\
         src = zipfile.ZipFile({src:?})\nout = zipfile.ZipFile({dst:?}, 'w')\n\
         out.writestr('events-00001.csv', b'id\\r\\nforged\\r\\n')\n\
         for n in src.namelist(): out.writestr(n, src.read(n))\nout.close()\n",
        src = zip.to_str().unwrap(),
        dst = doubled.to_str().unwrap()
    );
    let py = Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    assert!(py.status.success(), "{}", text(&py));
    let out = run(
        &auditor,
        &[
            "verify",
            doubled.to_str().unwrap(),
            "--fingerprint",
            &published,
        ],
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("two entries share a name"),
        "{}",
        text(&out)
    );

    // A name cannot add lines (or commands) to VERIFY.txt.
    let evil = dir.path().join("evil.csv");
    ok(run(
        &data,
        &[
            "export",
            "--from",
            "2026-03-01",
            "--to",
            "2026-03-05",
            "--format",
            "csv",
            "--name",
            "q1\n$ touch pwned\n",
            "--output",
            evil.to_str().unwrap(),
        ],
    ));
    let results = run_verify_txt(&sdir, "evil.csv.VERIFY.txt");
    assert!(all_pass(&results), "{results:#?}");
    assert!(!sdir.join("pwned").exists());

    // A single file with its manifest re-signed by a forger: strict checks fail.
    forge(&sdir, "single.csv.", &forger);
    let strict = run(
        &auditor,
        &[
            "verify",
            single.to_str().unwrap(),
            "--fingerprint",
            &published,
        ],
    );
    assert!(!strict.status.success(), "{}", text(&strict));
    let loose = run(&auditor, &["verify", single.to_str().unwrap()]);
    assert!(loose.status.success(), "{}", text(&loose));
    assert!(!text(&loose).contains(&published), "{}", text(&loose));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http_retries_count_once_and_a_download_has_everything_an_auditor_needs() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let admin = token(&data, "admin");
    let ingest_token = token(&data, "ingest");
    let server = Server::start(&data, 1, &[]);
    let c = Client::new(&server.base);

    let body = [
        event("\"h-1\"", r#","input":"half \ud83d""#),
        event("\"h-2\"", ""),
        event(
            "98000000000000000000001",
            r#","cost_usd":1.5777777777770001,"metadata":{"n":0.9215686321258545}"#,
        ),
    ]
    .join("\n");
    let r = c
        .call(
            "POST",
            "/v1/ingest/events",
            Some(&ingest_token),
            Some(body.into_bytes()),
            &[],
        )
        .await;
    let j = r.json();
    assert_eq!(
        (&j["accepted"], &j["duplicates"], &j["replaced_surrogates"]),
        (&json!(3), &json!(0), &json!(1)),
        "{j}"
    );
    // The same ids re-stamped by a forwarder.
    let retry = [
        event("\"h-1\"", "").replace("10:00:00Z", "10:00:00.5Z"),
        event("\"h-2\"", "").replace("2026-03-02T10:00:00Z", "2026-03-04T09:00:00Z"),
    ]
    .join("\n");
    let j = c
        .call(
            "POST",
            "/v1/ingest/events",
            Some(&ingest_token),
            Some(retry.into_bytes()),
            &[],
        )
        .await
        .json();
    assert_eq!(
        (&j["accepted"], &j["duplicates"]),
        (&json!(2), &json!(2)),
        "{j}"
    );
    // A preview needs no name.
    let p = c
        .post(
            "/v1/exports/preview",
            &admin,
            &json!({"from": "2026-03-01", "to": "2026-03-05"}),
        )
        .await;
    assert_eq!(p.status, 200, "{}", String::from_utf8_lossy(&p.body));
    assert_eq!(p.json()["records"], 3);

    let r = c
        .post(
            "/v1/exports",
            &admin,
            &json!({"name": "Audit pack", "from": "2026-03-01", "to": "2026-03-05", "format": "csv"}),
        )
        .await;
    let id = r.json()["id"].as_str().unwrap().to_string();
    let job = c.wait(&id, &admin, Duration::from_secs(60)).await;
    assert_eq!(job["status"], "completed", "{job}");

    // Everything an auditor needs, each under the name it has beside the data.
    let out = dir.path().join("download");
    std::fs::create_dir_all(&out).unwrap();
    let d = c.get(&format!("/v1/exports/{id}/download"), &admin).await;
    assert_eq!(d.status, 200);
    // Numbers sent over HTTP come back as sent.
    let mut csv_reader = csv::Reader::from_reader(&d.body[..]);
    let headers = csv_reader.headers().unwrap().clone();
    let col = |n: &str| headers.iter().position(|h| h == n).unwrap();
    let rows: Vec<csv::StringRecord> = csv_reader.records().map(Result::unwrap).collect();
    let big = rows
        .iter()
        .find(|r| &r[col("id")] == "98000000000000000000001")
        .expect("the numeric id, digit for digit");
    assert_eq!(
        big[col("cost_usd")].parse::<f64>().unwrap().to_bits(),
        1.5777777777770001f64.to_bits()
    );
    assert!(
        big[col("metadata")].contains("0.9215686321258545"),
        "{big:?}"
    );
    std::fs::write(out.join("Audit-pack.csv"), &d.body).unwrap();
    for name in [
        "manifest.json",
        "manifest.sig",
        "SHA256SUMS",
        "SHA256SUMS.sig",
        "signing-key.pem",
        "VERIFY.txt",
    ] {
        let r = c
            .get(&format!("/v1/exports/{id}/package/{name}"), &admin)
            .await;
        assert_eq!(r.status, 200, "{name}");
        let disposition = r.headers["content-disposition"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            disposition.contains(&format!("Audit-pack.csv.{name}")),
            "{disposition}"
        );
        std::fs::write(out.join(format!("Audit-pack.csv.{name}")), &r.body).unwrap();
    }
    let bad = c
        .get(
            &format!("/v1/exports/{id}/package/..%2F..%2Fsigning-key.ed25519"),
            &admin,
        )
        .await;
    assert_eq!(bad.status, 404);
    let results = run_verify_txt(&out, "Audit-pack.csv.VERIFY.txt");
    assert!(all_pass(&results), "{results:#?}");
    let key = c.get("/v1/signing-key", &admin).await.json();
    let fp = key["fingerprint"].as_str().unwrap();
    assert!(results[0].2.contains(fp), "{results:#?}");
    let v = run(
        &dir.path().join("auditor"),
        &[
            "verify",
            out.join("Audit-pack.csv").to_str().unwrap(),
            "--fingerprint",
            fp,
        ],
    );
    assert!(v.status.success(), "{}", text(&v));
    let pem_file = dir.path().join("published.pem");
    std::fs::write(&pem_file, key["public_key_pem"].as_str().unwrap()).unwrap();
    let v = run(
        &dir.path().join("auditor"),
        &[
            "verify",
            out.join("Audit-pack.csv").to_str().unwrap(),
            "--key",
            pem_file.to_str().unwrap(),
        ],
    );
    assert!(v.status.success(), "{}", text(&v));

    // Download audit: HEAD is not a download; ranged reads of one requester count once
    // and record the range; a whole download always counts.
    let downloads = |log: &Value| -> Vec<Value> {
        log["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == "export.downloaded")
            .cloned()
            .collect()
    };
    let before = downloads(&c.get("/v1/audit-log", &admin).await.json()).len();
    assert_eq!(before, 1);
    let path = format!("/v1/exports/{id}/download");
    let h = c.call("HEAD", &path, Some(&admin), None, &[]).await;
    assert_eq!(h.status, 200);
    for range in ["bytes=-8", "bytes=0-99", "bytes=100-199"] {
        let r = c
            .call("GET", &path, Some(&admin), None, &[("range", range)])
            .await;
        assert_eq!(r.status, 206);
    }
    let log = downloads(&c.get("/v1/audit-log", &admin).await.json());
    assert_eq!(log.len(), 2, "{log:#?}");
    let len = d.body.len();
    assert_eq!(
        log[1]["details"]["range"],
        format!("bytes {}-{}/{len}", len - 8, len - 1),
        "{log:#?}"
    );
    // A Range header that is not served as a part (several ranges: the whole file
    // comes back) is a whole download, always logged.
    let r = c
        .call(
            "GET",
            &path,
            Some(&admin),
            None,
            &[("range", "bytes=0-1,5-9")],
        )
        .await;
    assert_eq!(r.status, 200);
    let log = downloads(&c.get("/v1/audit-log", &admin).await.json());
    assert_eq!(log.len(), 3, "{log:#?}");
    assert_eq!(log[2]["details"]["range"], "whole file");
    c.get(&path, &admin).await;
    let log = downloads(&c.get("/v1/audit-log", &admin).await.json());
    assert_eq!(log.len(), 4, "{log:#?}");
    assert_eq!(log[3]["details"]["range"], "whole file");
}
