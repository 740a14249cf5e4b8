//! End-to-end tests of the HTTP service: the real `evidex serve` (and `worker_export`)
//! processes on a loopback port, driven over HTTP only.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_export_download_link_and_audit_over_http() {
    let e = env(6_000, 4);
    let admin = token(&e.data, "admin");
    let compliance = token(&e.data, "compliance");
    let envs = [("EVIDEX_SERVER__LINK_TTL_SECS", "3")];
    let server = Server::start(&e.data, 1, &envs);
    let c = Client::new(&server.base);
    let ingest = token(&e.data, "ingest");

    // Ingest: half as NDJSON, half gzipped, plus a bad line; then everything again.
    let text = std::fs::read_to_string(&e.src).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let (a, b) = lines.split_at(lines.len() / 2);
    let mut first = a.join("\n");
    first.push_str("\n{\"id\": \"bad\", \"timestamp\": \"yesterday\"}\n");
    let r = c
        .call(
            "POST",
            "/v1/ingest/events",
            Some(&ingest),
            Some(first.into_bytes()),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let j = r.json();
    assert_eq!(j["accepted"], a.len());
    assert_eq!(j["rejected"], 1);
    assert_eq!(j["errors"][0]["line"], a.len() + 1);
    assert!(
        j["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("timestamp"),
        "{j}"
    );
    let r = c
        .call(
            "POST",
            "/v1/ingest/events",
            Some(&ingest),
            Some(gzip(b.join("\n").as_bytes())),
            &[("content-encoding", "gzip")],
        )
        .await;
    assert_eq!(r.json()["accepted"], b.len());
    let again = c
        .call(
            "POST",
            "/v1/ingest/events",
            Some(&ingest),
            Some(text.clone().into_bytes()),
            &[],
        )
        .await;
    assert_eq!(again.json()["accepted"], lines.len());

    // A JSON array body works too (configuration versions here).
    let cfg = std::fs::read_to_string(e.dir.path().join("src.config-versions.ndjson")).unwrap();
    let cfg_rows: Vec<Value> = cfg
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let r = c
        .call(
            "POST",
            "/v1/ingest/config-versions",
            Some(&ingest),
            Some(Value::from(cfg_rows.clone()).to_string().into_bytes()),
            &[],
        )
        .await;
    assert_eq!(
        r.json()["accepted"],
        cfg_rows.len(),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(
        c.call(
            "POST",
            "/v1/ingest/nope",
            Some(&ingest),
            Some(b"{}".to_vec()),
            &[]
        )
        .await
        .status,
        404
    );

    // Preview counts what was stored once: retries made no duplicates.
    let scope = json!({"name": "All", "from": "2026-03-01", "to": "2026-03-04"});
    let p = c
        .post("/v1/exports/preview", &compliance, &scope)
        .await
        .json();
    assert_eq!(p["records"], lines.len(), "{p}");

    // Create, poll, download; the bytes equal the CLI's export of the same scope.
    let body = json!({"name": "Q1 2026 SOC2 Audit", "from": "2026-03-02", "to": "2026-03-03",
                      "timezone": "Europe/Berlin", "format": "csv",
                      "filters": {"decision": ["block", "escalate"], "min_severity": "medium"}});
    let r = c.post("/v1/exports", &compliance, &body).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let id = r.json()["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("exp_"));
    let job = c.wait(&id, &compliance, Duration::from_secs(60)).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["progress"]["percent"], 100.0);
    assert_eq!(
        job["progress"]["rows_written"],
        job["progress"]["rows_total"]
    );
    let dl = c
        .get(&format!("/v1/exports/{id}/download"), &compliance)
        .await;
    assert_eq!(dl.status, 200);
    assert_eq!(dl.headers["content-type"], "text/csv; charset=utf-8");
    assert_eq!(
        dl.headers["content-disposition"],
        "attachment; filename=\"Q1-2026-SOC2-Audit.csv\""
    );
    let out = e.dir.path().join("cli.csv");
    evidex(
        &e.data,
        &[],
        &[
            "export",
            "--from",
            "2026-03-02",
            "--to",
            "2026-03-03",
            "--timezone",
            "Europe/Berlin",
            "--decision",
            "block",
            "--decision",
            "escalate",
            "--min-severity",
            "medium",
            "--format",
            "csv",
            "--output",
            out.to_str().unwrap(),
        ],
    );
    assert!(
        dl.body == std::fs::read(&out).unwrap(),
        "API download differs from the CLI export"
    );
    let rows = csv::Reader::from_reader(dl.body.as_slice())
        .records()
        .count();
    assert_eq!(job["progress"]["rows_total"], rows);
    // Range.
    let part = c
        .call(
            "GET",
            &format!("/v1/exports/{id}/download"),
            Some(&compliance),
            None,
            &[("range", "bytes=10-19")],
        )
        .await;
    assert_eq!(part.status, 206);
    assert_eq!(part.body, dl.body[10..20]);
    assert_eq!(
        part.headers["content-range"],
        format!("bytes 10-19/{}", dl.body.len())
    );
    let bad = c
        .call(
            "GET",
            &format!("/v1/exports/{id}/download"),
            Some(&compliance),
            None,
            &[("range", "bytes=999999999-")],
        )
        .await;
    assert_eq!(bad.status, 416);
    // Conditional requests: the ETag is the artifact's SHA-256 (RFC 9110 §13).
    let etag = dl.headers["etag"].to_str().unwrap().to_string();
    assert_eq!(
        etag,
        format!("\"{}\"", dl.headers["x-evidex-sha256"].to_str().unwrap())
    );
    let path = format!("/v1/exports/{id}/download");
    let call = |h: Vec<(&'static str, String)>| {
        let c = &c;
        let (path, compliance) = (&path, &compliance);
        async move {
            let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
            c.call("GET", path, Some(compliance), None, &h).await
        }
    };
    let same = call(vec![("if-none-match", etag.clone())]).await;
    assert_eq!(same.status, 304);
    assert!(same.body.is_empty());
    let stale = call(vec![("if-match", "\"0000\"".into())]).await;
    assert_eq!(
        stale.status,
        412,
        "{}",
        String::from_utf8_lossy(&stale.body)
    );
    let resumed = call(vec![
        ("range", "bytes=10-19".into()),
        ("if-range", etag.clone()),
    ])
    .await;
    assert_eq!((resumed.status, &resumed.body[..]), (206, &dl.body[10..20]));
    let changed = call(vec![
        ("range", "bytes=10-19".into()),
        ("if-range", "\"other\"".into()),
    ])
    .await;
    assert_eq!((changed.status, changed.body.len()), (200, dl.body.len()));
    // The manifest matches the download.
    let m = c
        .get(&format!("/v1/exports/{id}/manifest"), &compliance)
        .await
        .json();
    assert_eq!(m["export_id"], id.as_str());
    assert_eq!(
        m["files"][0]["sha256"],
        dl.headers["x-evidex-sha256"].to_str().unwrap()
    );
    assert_eq!(m["total_rows"], rows);
    let key = c.get("/v1/signing-key", &compliance).await.json();
    assert_eq!(key["public_key"], m["signing_key"]);

    // The PDF report in the ZIP beside the data, over the API; evidex verify checks
    // the downloaded package, report binding included.
    let pkg_body = json!({"name": "Package", "from": "2026-03-02", "to": "2026-03-03",
                      "format": "ndjson", "include": ["report"]});
    let r = c.post("/v1/exports", &compliance, &pkg_body).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let pkg = r.json()["id"].as_str().unwrap().to_string();
    let pkg_job = c.wait(&pkg, &compliance, Duration::from_secs(120)).await;
    assert_eq!(pkg_job["status"], "completed", "{pkg_job}");
    let zip = c
        .get(&format!("/v1/exports/{pkg}/download"), &compliance)
        .await;
    assert_eq!(zip.headers["content-type"], "application/zip");
    let path = e.dir.path().join("Package.zip");
    std::fs::write(&path, &zip.body).unwrap();
    let out = evidex(&e.data, &[], &["verify", path.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("report.pdf: names manifest"), "{said}");

    // Idempotent create and rerun.
    let h = [("idempotency-key", "abc-1")];
    let r1 = c
        .call(
            "POST",
            "/v1/exports",
            Some(&compliance),
            Some(body.to_string().into_bytes()),
            &h,
        )
        .await;
    let r2 = c
        .call(
            "POST",
            "/v1/exports",
            Some(&compliance),
            Some(body.to_string().into_bytes()),
            &h,
        )
        .await;
    assert_eq!((r1.status, r2.status), (201, 200));
    assert_eq!(r1.json()["id"], r2.json()["id"]);
    let rerun = c
        .call(
            "POST",
            &format!("/v1/exports/{id}/rerun"),
            Some(&compliance),
            None,
            &[],
        )
        .await;
    assert_eq!(rerun.status, 201);
    assert_ne!(rerun.json()["id"], id.as_str());
    assert_eq!(rerun.json()["filters"], job["filters"]);

    // Links: work without a token, 403 when altered, 410 once expired.
    let link = c
        .call(
            "POST",
            &format!("/v1/exports/{id}/link"),
            Some(&compliance),
            None,
            &[],
        )
        .await
        .json();
    let url = link["url"].as_str().unwrap().to_string();
    let via = c.call("GET", &url, None, None, &[]).await;
    assert_eq!(via.status, 200);
    assert!(via.body == dl.body);
    let mut tampered = url.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == '0' { '1' } else { '0' });
    assert_eq!(c.call("GET", &tampered, None, None, &[]).await.status, 403);
    let other_id = url.replace(&id, r1.json()["id"].as_str().unwrap());
    assert_eq!(c.call("GET", &other_id, None, None, &[]).await.status, 403);
    tokio::time::sleep(Duration::from_millis(3_300)).await;
    let gone = c.call("GET", &url, None, None, &[]).await;
    assert_eq!(gone.status, 410);
    assert!(
        gone.message().contains("export again"),
        "{}",
        gone.message()
    );

    // Bad requests name the field.
    let cases = [
        (
            json!({"name": "x", "from": "2026-13-01", "to": "2026-03-03"}),
            "from:",
        ),
        (
            json!({"name": "x", "from": "2026-03-04", "to": "2026-03-01"}),
            "not before",
        ),
        (
            json!({"name": "x", "from": "2026-03-01", "to": "2026-03-03", "format": "xlsx"}),
            "format:",
        ),
        (
            json!({"name": "x", "from": "2026-03-01", "to": "2026-03-03", "timezone": "Mars/Base"}),
            "timezone:",
        ),
        (
            json!({"name": "x", "from": "2026-03-01", "to": "2026-03-03", "filters": {"colour": ["red"]}}),
            "colour",
        ),
        (
            json!({"name": "x", "from": "2026-03-01", "to": "2026-03-03", "filters": {"decision": ["maybe"]}}),
            "decision",
        ),
        (
            json!({"name": "x", "from": "2026-03-01", "to": "2026-03-03", "preset": "nope"}),
            "preset: unknown preset",
        ),
        (
            json!({"name": "x", "from": "2026-03-01", "to": "2026-03-03", "sql": "DROP TABLE events"}),
            "sql: DROP TABLE is not allowed",
        ),
        (
            json!({"name": "x", "from": "2026-03-01", "to": "2026-03-03", "sql": "SELECT nope FROM events"}),
            "nope",
        ),
        (
            json!({"name": "  ", "from": "2026-03-01", "to": "2026-03-03"}),
            "name:",
        ),
        (
            json!({"name": "x".repeat(201), "from": "2026-03-01", "to": "2026-03-03"}),
            "name:",
        ),
        (json!({"from": "2026-03-01"}), "body:"),
        (
            json!({"name": "x", "from": "2026-03-01", "to": "2026-03-03", "format": "pdf", "include": ["escalations"]}),
            "include: format pdf is the report alone",
        ),
        (
            json!({"name": "x", "from": "2026-03-01", "to": "2026-03-03", "preset": "policy-violations", "include": ["report"]}),
            "format: the pdf report summarises the scope's events",
        ),
    ];
    for (body, want) in cases {
        let r = c.post("/v1/exports", &compliance, &body).await;
        assert_eq!(
            r.status,
            400,
            "{body}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.json()["error"]["code"], "invalid_request");
        assert!(r.message().contains(want), "{body}: {}", r.message());
    }
    let r = c
        .call(
            "POST",
            "/v1/exports",
            Some(&compliance),
            Some(b"{not json".to_vec()),
            &[],
        )
        .await;
    assert_eq!(r.status, 400);

    // Cancel: a queued job cannot then complete; a completed one cannot be cancelled.
    let done = c
        .call(
            "POST",
            &format!("/v1/exports/{id}/cancel"),
            Some(&compliance),
            None,
            &[],
        )
        .await;
    assert_eq!(done.status, 409);

    // The audit log saw it all, chained.
    let log = c.get("/v1/audit-log?limit=1000", &admin).await.json();
    let actions: Vec<&str> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for want in [
        "token.created",
        "export.created",
        "export.downloaded",
        "export.linked",
        "export.rerun",
    ] {
        assert!(actions.contains(&want), "{actions:?}");
    }
    let items = log["items"].as_array().unwrap();
    for w in items.windows(2) {
        assert_eq!(w[1]["prev_hash"], w[0]["hash"]);
    }
    let metrics = String::from_utf8(c.call("GET", "/metrics", None, None, &[]).await.body).unwrap();
    assert!(
        metrics.contains("evidex_jobs{status=\"completed\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "evidex_ingest_records_total{{dataset=\"events\",outcome=\"accepted\"}} {}",
            2 * lines.len()
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "evidex_http_request_duration_seconds_bucket{method=\"GET\",route=\"/v1/exports/{id}\""
        ),
        "{metrics}"
    );
    // Prometheus's own linter accepts the exposition (format, names, units, help).
    let promtool = std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".to_string());
    let mut check = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("{promtool}: {e} (scripts/test.sh installs Debian's prometheus)")
        });
    use std::io::Write as _;
    check
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}\n{metrics}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_checks_roles() {
    let e = env(500, 2);
    let tokens: Vec<(&str, String)> = ["admin", "compliance", "viewer", "ingest", "siem"]
        .iter()
        .map(|r| (*r, token(&e.data, r)))
        .collect();
    let server = Server::start(&e.data, 0, &[]);
    let c = Client::new(&server.base);
    let doc = c.call("GET", "/openapi.json", None, None, &[]).await.json();
    let paths = doc["paths"].as_object().unwrap();
    let mut checked = 0;
    for (path, ops) in paths {
        for (method, op) in ops.as_object().unwrap() {
            let concrete = path
                .replace("{id}", "exp_01ABCDEFGHJKMNPQRSTVWXYZ00")
                .replace("{token}", "x.1.y")
                .replace("{dataset}", "events")
                .replace("{file}", "manifest.json");
            let method = method.to_ascii_uppercase();
            let roles: Vec<&str> = op["x-roles"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap())
                .collect();
            let anon = c.call(&method, &concrete, None, None, &[]).await;
            if roles.is_empty() {
                assert_ne!(anon.status, 401, "{method} {path} is public");
                assert_ne!(anon.status, 404, "{method} {path} is not routed");
                continue;
            }
            assert_eq!(anon.status, 401, "{method} {path} without a token");
            assert_eq!(anon.json()["error"]["code"], "unauthorized");
            let bogus = c
                .call(&method, &concrete, Some("evx_not_a_token"), None, &[])
                .await;
            assert_eq!(bogus.status, 401, "{method} {path} with a bad token");
            for (role, tok) in &tokens {
                let r = c
                    .call(&method, &concrete, Some(tok), Some(b"{}".to_vec()), &[])
                    .await;
                if roles.contains(role) {
                    assert!(
                        ![401, 403].contains(&r.status),
                        "{role} may {method} {path}: {}",
                        r.status
                    );
                } else {
                    assert_eq!(r.status, 403, "{role} may not {method} {path}");
                    assert!(
                        r.message().contains(&format!("the {role} role may not")),
                        "{}",
                        r.message()
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 60, "{checked}");
    // The matrix the SPEC gives, spelled out for the important routes.
    let role_of = |path: &str, method: &str| -> Vec<String> {
        paths[path][method]["x-roles"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        role_of("/v1/exports/{id}/download", "get"),
        ["admin", "compliance"]
    );
    assert_eq!(
        role_of("/v1/exports", "get"),
        ["admin", "compliance", "viewer"]
    );
    assert_eq!(role_of("/v1/ingest/{dataset}", "post"), ["admin", "ingest"]);
    assert_eq!(
        role_of("/v1/events/stream", "get"),
        ["admin", "compliance", "siem"]
    );
    // The siem role reads the stream and nothing else.
    let siem_routes: Vec<String> = paths
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .iter()
                .filter(|(_, op)| {
                    op["x-roles"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|r| r == "siem")
                })
                .map(move |(m, _)| format!("{m} {path}"))
        })
        .collect();
    assert_eq!(siem_routes, ["get /v1/events/stream"]);

    // A query parameter of the wrong type is the API's JSON 400 naming it, not the
    // framework's plain text (Schemathesis found `?limit=null` answered so).
    let admin = &tokens[0].1;
    for url in [
        "/v1/exports?limit=null",
        "/v1/audit-log?after=x",
        "/v1/webhooks/wh_0/deliveries?limit=1.5",
    ] {
        let r = c.get(url, admin).await;
        assert_eq!(r.status, 400, "{url}");
        assert_eq!(r.json()["error"]["code"], "invalid_request", "{url}");
        let param = url.split('?').nth(1).unwrap().split('=').next().unwrap();
        assert!(r.message().contains(param), "{url}: {}", r.message());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_jobs_survive_restart_and_cancel_stops_them() {
    let e = env(3_000, 3);
    evidex(&e.data, &[], &["ingest", e.src.to_str().unwrap()]);
    let tok = token(&e.data, "compliance");
    let mut server = Server::start(&e.data, 0, &[]);
    let c = Client::new(&server.base);
    let body =
        |n: &str| json!({"name": n, "from": "2026-03-02", "to": "2026-03-04", "format": "ndjson"});
    let a = c.post("/v1/exports", &tok, &body("a")).await.json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let b = c.post("/v1/exports", &tok, &body("b")).await.json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let cancel = c
        .call(
            "POST",
            &format!("/v1/exports/{b}/cancel"),
            Some(&tok),
            None,
            &[],
        )
        .await;
    assert_eq!(cancel.json()["status"], "cancelled");
    server.kill();
    // A new server with a worker picks the queued job up; the cancelled one stays so.
    let server = Server::start(&e.data, 1, &[]);
    let c = Client::new(&server.base);
    let ja = c.wait(&a, &tok, Duration::from_secs(60)).await;
    assert_eq!(ja["status"], "completed", "{ja}");
    assert_eq!(
        c.get(&format!("/v1/exports/{b}"), &tok).await.json()["status"],
        "cancelled"
    );
    let dl = c.get(&format!("/v1/exports/{b}/download"), &tok).await;
    assert_eq!(dl.status, 409);
    let list = c.get("/v1/exports?status=completed", &tok).await.json();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let bad = c.get("/v1/exports?status=done", &tok).await;
    assert_eq!(bad.status, 400);

    // The audit log is an exportable dataset: the export-activity preset reads it.
    let act = json!({"name": "activity", "from": "2026-01-01", "to": "2030-12-31", "preset": "export-activity"});
    let id = c.post("/v1/exports", &tok, &act).await.json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        c.wait(&id, &tok, Duration::from_secs(60)).await["status"],
        "completed"
    );
    let csv_text = String::from_utf8(
        c.get(&format!("/v1/exports/{id}/download"), &tok)
            .await
            .body,
    )
    .unwrap();
    assert!(
        csv_text.starts_with("seq,at,actor,action,target,details,prev_hash,hash"),
        "{csv_text}"
    );
    assert!(
        csv_text.contains("export.created") && csv_text.contains("export.cancelled"),
        "{csv_text}"
    );
    assert!(csv_text.contains(&a), "{csv_text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_loses_its_lease_and_the_job_completes() {
    let e = env(40_000, 3);
    evidex(&e.data, &[], &["ingest", e.src.to_str().unwrap()]);
    let tok = token(&e.data, "compliance");
    let server = Server::start(&e.data, 0, &[]);
    let c = Client::new(&server.base);
    let spawn_worker = || {
        Command::new(env!("CARGO_BIN_EXE_worker_export"))
            .arg("--data")
            .arg(&e.data)
            .env_remove("EVIDEX_DATA")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("worker_export starts")
    };
    let body = json!({"name": "big", "from": "2026-03-02", "to": "2026-03-04", "format": "json"});
    let id = c.post("/v1/exports", &tok, &body).await.json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut w1 = spawn_worker();
    // Wait until it is running and has written rows, then kill -9.
    let start = Instant::now();
    loop {
        let j = c.get(&format!("/v1/exports/{id}"), &tok).await.json();
        if j["status"] == "processing" && j["progress"]["rows_total"].as_i64().unwrap_or(0) > 0 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{j}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    w1.kill().unwrap();
    w1.wait().unwrap();
    // Nothing is downloadable while no worker holds it.
    assert_eq!(
        c.get(&format!("/v1/exports/{id}/download"), &tok)
            .await
            .status,
        409
    );
    let mut w2 = spawn_worker();
    let j = c.wait(&id, &tok, Duration::from_secs(120)).await;
    w2.kill().unwrap();
    let _ = w2.wait();
    assert_eq!(j["status"], "completed", "{j}");
    assert_eq!(j["attempts"], 2, "{j}");
    let dl = c.get(&format!("/v1/exports/{id}/download"), &tok).await;
    let out = e.dir.path().join("cli.json");
    evidex(
        &e.data,
        &[],
        &[
            "export",
            "--from",
            "2026-03-02",
            "--to",
            "2026-03-04",
            "--format",
            "json",
            "--output",
            out.to_str().unwrap(),
        ],
    );
    assert!(
        dl.body == std::fs::read(&out).unwrap(),
        "the retried artifact differs"
    );
    // Only the winning attempt's folder is left, with no partial file.
    let dir = e.data.join("_state/artifacts").join(&id);
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["attempt-2"]);
    let files: Vec<String> = std::fs::read_dir(dir.join("attempt-2"))
        .unwrap()
        .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(files.iter().all(|n| !n.contains("partial")), "{files:?}");

    // A worker paused past its lease (SIGSTOP: a long GC pause, a partition) and
    // resumed after another worker finished the job cannot replace or delete the
    // result of the attempt that won.
    let body =
        json!({"name": "paused", "from": "2026-03-02", "to": "2026-03-04", "format": "json"});
    let pid_job = c.post("/v1/exports", &tok, &body).await.json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut w1 = spawn_worker();
    let start = Instant::now();
    loop {
        let j = c.get(&format!("/v1/exports/{pid_job}"), &tok).await.json();
        if j["status"] == "processing" && j["progress"]["rows_total"].as_i64().unwrap_or(0) > 0 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{j}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let signal = |sig: &str, pid: u32| {
        Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap()
    };
    signal("-STOP", w1.id());
    let mut w2 = spawn_worker();
    let j = c.wait(&pid_job, &tok, Duration::from_secs(120)).await;
    assert_eq!(j["status"], "completed", "{j}");
    assert_eq!(j["attempts"], 2, "{j}");
    let won = c
        .get(&format!("/v1/exports/{pid_job}/download"), &tok)
        .await
        .body;
    signal("-CONT", w1.id());
    // The resumed worker notices on its next heartbeat that the lease is gone.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let after = c.get(&format!("/v1/exports/{pid_job}"), &tok).await.json();
    assert_eq!(after["status"], "completed", "{after}");
    assert_eq!(after["attempts"], 2, "{after}");
    assert_eq!(
        after["artifact"], j["artifact"],
        "the job record is the winner's"
    );
    let again = c
        .get(&format!("/v1/exports/{pid_job}/download"), &tok)
        .await;
    assert_eq!(again.status, 200);
    assert!(again.body == won, "the artifact is the winner's");
    assert!(
        won == std::fs::read(&out).unwrap(),
        "and it is the right export"
    );
    w1.kill().unwrap();
    let _ = w1.wait();
    w2.kill().unwrap();
    let _ = w2.wait();

    // Cancelling a running job stops its worker promptly; no artifact appears.
    let big =
        json!({"name": "cancel-me", "from": "2026-03-02", "to": "2026-03-04", "format": "parquet"});
    let cid = c.post("/v1/exports", &tok, &big).await.json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut w = spawn_worker();
    let start = Instant::now();
    while c.get(&format!("/v1/exports/{cid}"), &tok).await.json()["status"] != "processing" {
        assert!(start.elapsed() < Duration::from_secs(60));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = c
        .call(
            "POST",
            &format!("/v1/exports/{cid}/cancel"),
            Some(&tok),
            None,
            &[],
        )
        .await;
    assert_eq!(r.json()["status"], "cancelled");
    let cdir = e.data.join("_state/artifacts").join(&cid);
    let stopped = Instant::now();
    while cdir.exists() {
        assert!(
            stopped.elapsed() < Duration::from_secs(5),
            "the worker kept writing after cancel"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let j = c.get(&format!("/v1/exports/{cid}"), &tok).await.json();
    assert_eq!(j["status"], "cancelled", "{j}");
    assert!(j["artifact"].is_null());
    w.kill().unwrap();
    let _ = w.wait();

    // A job that fails every time is failed after 3 attempts, with the error.
    let boom = json!({"name": "boom", "from": "2026-03-02", "to": "2026-03-04",
                      "sql": "SELECT id, 1 / (length(id) - length(id)) AS x FROM events"});
    let bid = c.post("/v1/exports", &tok, &boom).await.json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut w3 = spawn_worker();
    let j = c.wait(&bid, &tok, Duration::from_secs(60)).await;
    w3.kill().unwrap();
    let _ = w3.wait();
    assert_eq!(j["status"], "failed", "{j}");
    assert_eq!(j["attempts"], 3, "{j}");
    assert!(
        j["error"]
            .as_str()
            .unwrap()
            .to_ascii_lowercase()
            .contains("divide by zero"),
        "{j}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_events_survive_kill_9_and_artifacts_expire() {
    let e = env(2_000, 2);
    let ingest = token(&e.data, "ingest");
    let tok = token(&e.data, "compliance");
    let envs = [("EVIDEX_SERVER__RETENTION_SECS", "4")];
    let mut server = Server::start(&e.data, 1, &envs);
    let c = Client::new(&server.base);
    let text = std::fs::read(&e.src).unwrap();
    let r = c
        .call("POST", "/v1/ingest/events", Some(&ingest), Some(text), &[])
        .await;
    assert_eq!(r.json()["accepted"], 2000);
    server.kill(); // SIGKILL right after the response
    let server = Server::start(&e.data, 1, &envs);
    let c = Client::new(&server.base);
    let p = c
        .post(
            "/v1/exports/preview",
            &tok,
            &json!({"name": "x", "from": "2026-03-01", "to": "2026-03-04"}),
        )
        .await
        .json();
    assert_eq!(p["records"], 2000);
    // Many small concurrent requests are committed in a few batches, not one each.
    let commits = |m: &str| -> u64 {
        m.lines()
            .find(|l| l.starts_with("evidex_ingest_commits_total"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    let before =
        commits(&String::from_utf8(c.call("GET", "/metrics", None, None, &[]).await.body).unwrap());
    let esc = std::fs::read_to_string(e.dir.path().join("src.escalations.ndjson")).unwrap();
    let esc_lines: Vec<String> = esc.lines().map(str::to_string).collect();
    let chunks: Vec<String> = esc_lines
        .chunks(esc_lines.len().div_ceil(40))
        .map(|c| c.join("\n"))
        .collect();
    let sends = chunks.iter().map(|chunk| {
        c.call(
            "POST",
            "/v1/ingest/escalations",
            Some(&ingest),
            Some(chunk.clone().into_bytes()),
            &[],
        )
    });
    let results = futures::future::join_all(sends).await;
    let accepted: u64 = results
        .iter()
        .map(|r| r.json()["accepted"].as_u64().unwrap())
        .sum();
    assert_eq!(accepted, esc_lines.len() as u64);
    let after =
        commits(&String::from_utf8(c.call("GET", "/metrics", None, None, &[]).await.body).unwrap());
    assert!(
        after - before < chunks.len() as u64 / 2,
        "{} requests made {} commits",
        chunks.len(),
        after - before
    );

    // Body and line limits answer 413 with the limit.
    let big = vec![b'x'; 2 << 20];
    let r = c
        .call("POST", "/v1/ingest/events", Some(&ingest), Some(big), &[])
        .await;
    assert_eq!(r.status, 413);
    assert!(
        r.message().contains("limit of 1048576 bytes"),
        "{}",
        r.message()
    );

    // An artifact past retention is deleted and its job expires.
    let id = c
        .post(
            "/v1/exports",
            &tok,
            &json!({"name": "short", "from": "2026-03-01", "to": "2026-03-04"}),
        )
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        c.wait(&id, &tok, Duration::from_secs(60)).await["status"],
        "completed"
    );
    let start = Instant::now();
    loop {
        let j = c.get(&format!("/v1/exports/{id}"), &tok).await.json();
        if j["status"] == "expired" {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{j}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let dl = c.get(&format!("/v1/exports/{id}/download"), &tok).await;
    assert_eq!(dl.status, 410);
    assert!(dl.message().contains("export again"));
    assert!(!e.data.join("_state/artifacts").join(&id).exists());
}

#[test]
fn verify_audit_log_detects_edited_and_deleted_entries() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for role in ["admin", "viewer", "ingest", "compliance"] {
        token(&data, role);
    }
    let check = |want_ok: bool, want: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_evidex"))
            .arg("--data")
            .arg(&data)
            .args(["verify", "--audit-log"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(out.status.success(), want_ok, "{text}");
        assert!(text.contains(want), "{text}");
    };
    check(true, "audit log: 4 entries");
    let db = rusqlite::Connection::open(data.join("_state/evidex.sqlite")).unwrap();
    db.execute(
        "UPDATE audit_log SET actor = 'someone else' WHERE seq = 2",
        [],
    )
    .unwrap();
    check(false, "entry 2 was changed");
    db.execute("DELETE FROM audit_log WHERE seq = 2", [])
        .unwrap();
    check(false, "entry 2 is missing");
}

/// The console's pages: without a session they send the browser to sign in; with one,
/// each role gets the pages it may see and a 403 page for the others; ingest tokens
/// cannot sign in; a console session calls the API only with its CSRF token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_pages_check_roles_and_csrf() {
    let e = env(200, 2);
    let server = Server::start(&e.data, 0, &[]);
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let base = server.base.clone();
    let sign_in = |role: &'static str| {
        let (plain, base, data) = (plain.clone(), base.clone(), e.data.clone());
        async move {
            let tok = token(&data, role);
            let r = plain
                .post(format!("{base}/sign-in"))
                .form(&[("token", tok.as_str()), ("next", "/exports")])
                .send()
                .await
                .unwrap();
            let cookie = r
                .headers()
                .get("set-cookie")
                .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string());
            (r.status().as_u16(), cookie)
        }
    };
    for role in ["ingest", "siem"] {
        let (status, cookie) = sign_in(role).await;
        assert_eq!(status, 401, "{role} tokens do not open the console");
        assert!(cookie.is_none());
    }
    // Another site's form cannot sign a visitor in (login CSRF).
    let tok = token(&e.data, "compliance");
    let r = plain
        .post(format!("{base}/sign-in"))
        .header("origin", "https://evil.example")
        .form(&[("token", tok.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    assert!(r.headers().get("set-cookie").is_none());
    let mut checked = 0;
    for role in ["admin", "compliance", "viewer"] {
        let (status, cookie) = sign_in(role).await;
        assert_eq!(status, 303, "{role}");
        let cookie = cookie.unwrap();
        for (method, path, roles) in evidex_server::console::PAGES {
            if *method != "GET"
                || path.starts_with("/assets")
                || *path == "/"
                || *path == "/sign-in"
            {
                continue;
            }
            let concrete = path.replace("{id}", "exp_01ABCDEFGHJKMNPQRSTVWXYZ00");
            let anon = plain.get(format!("{base}{concrete}")).send().await.unwrap();
            assert_eq!(anon.status().as_u16(), 303, "{path} without a session");
            let r = plain
                .get(format!("{base}{concrete}"))
                .header("cookie", &cookie)
                .send()
                .await
                .unwrap();
            let code = r.status().as_u16();
            let csp = r.headers()["content-security-policy"]
                .to_str()
                .unwrap()
                .to_string();
            assert!(
                csp.contains("script-src 'self'") && !csp.contains("unsafe"),
                "{csp}"
            );
            let allowed = roles.iter().any(|r| r.as_str() == role);
            if concrete.contains("exp_01") {
                assert_eq!(code, if allowed { 404 } else { 403 }, "{role} {path}");
            } else {
                assert_eq!(code, if allowed { 200 } else { 403 }, "{role} {path}");
            }
            checked += 1;
        }
        // The session works for the API: reading freely, changing only with the CSRF
        // token that the pages carry.
        let page = plain
            .get(format!("{base}/exports"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let csrf = page
            .split("name=\"csrf-token\" content=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_string();
        let list = plain
            .get(format!("{base}/v1/exports"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(list.status().as_u16(), 200);
        let body = json!({"name": "via-console", "from": "2026-03-01", "to": "2026-03-03", "format": "csv"});
        let no_csrf = plain
            .post(format!("{base}/v1/exports"))
            .header("cookie", &cookie)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(no_csrf.status().as_u16(), 403, "{role}");
        let with = plain
            .post(format!("{base}/v1/exports"))
            .header("cookie", &cookie)
            .header("x-csrf-token", &csrf)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let want = if role == "viewer" { 403 } else { 201 };
        assert_eq!(with.status().as_u16(), want, "{role}");
        // Sign out ends the session.
        let out = plain
            .post(format!("{base}/sign-out"))
            .header("cookie", &cookie)
            .form(&[("csrf", csrf.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(out.status().as_u16(), 303);
        let after = plain
            .get(format!("{base}/exports"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(after.status().as_u16(), 303, "{role}: signed out");
    }
    let pages = evidex_server::console::PAGES
        .iter()
        .filter(|(m, p, _)| {
            *m == "GET" && !p.starts_with("/assets") && *p != "/" && *p != "/sign-in"
        })
        .count();
    assert!(pages >= 10, "{pages}");
    assert_eq!(checked, 3 * pages, "every GET page, for three roles");
}
