//! Faults at every step (issue 15 item 3): the real `evidex serve` is stopped with
//! `kill -9` at each failpoint of ingest, the export job, delivery, the scheduler and
//! webhooks (`FAILPOINTS=name=kill`, see `server/src/failpoints.rs`), then started
//! again on the same data directory; a full disk (`ENOSPC`) is injected at the
//! Parquet and the artifact writes. After the restart: every acknowledged event is
//! stored once, every job completed once with one artifact, every delivery and
//! webhook sent at least once and recorded once, and no temporary or orphaned file
//! is left after the sweep. The matrix is printed as a table.
//!
//! The rows run side by side (each in its own directory, with its own servers):
//! most of a row is waiting for a lease to run out.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;
use common::{Client, Receiver, S3sFs, Server, token};

const ALLOW: (&str, &str) = ("EVIDEX_NETWORK__ALLOW_PRIVATE_TARGETS", "true");

/// One row of the printed matrix.
#[derive(Debug, Default, Clone)]
struct Row {
    step: String,
    fault: &'static str,
    acked: usize,
    present: usize,
    jobs_completed: usize,
    artifacts: usize,
    deliveries: String,
    webhooks: String,
    leftovers: usize,
}

/// Events `{prefix}-0 ..` as NDJSON, all on 2026-03-02 (UTC).
fn events(prefix: &str, n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| {
            format!(
                r#"{{"id":"{prefix}-{i}","timestamp":"2026-03-02T10:{:02}:{:02}Z","decision":"block","severity":"high","policy":"p","gateway_id":"g","consumer_group":"c","input":"text {i}"}}"#,
                i / 60,
                i % 60
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
        .into_bytes()
}

/// A fresh data directory with 30 events (ingested by the CLI) and admin and
/// compliance tokens.
fn fresh(dir: &Path) -> (PathBuf, String, String) {
    let data = dir.join("data");
    let f = dir.join("seed.ndjson");
    std::fs::write(&f, events("seed", 30)).unwrap();
    common::evidex(&data, &[], &["ingest", f.to_str().unwrap()]);
    (
        data.clone(),
        token(&data, "admin"),
        token(&data, "compliance"),
    )
}

/// Starts `evidex serve` with `FAILPOINTS=point=kill`.
fn start_armed(data: &Path, workers: usize, point: &str, extra: &[(&str, &str)]) -> Server {
    let spec = format!("{point}=kill");
    let mut envs = vec![("FAILPOINTS", spec.as_str())];
    envs.extend_from_slice(extra);
    Server::start(data, workers, &envs)
}

/// Waits until the server ends and checks it was killed by SIGKILL (the failpoint
/// fired), not that it exited.
fn died_by_kill_9(server: &mut Server, point: &str) {
    let start = Instant::now();
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            assert_eq!(
                status.signal(),
                Some(9),
                "{point}: the server ended with {status}, not by kill -9 at the failpoint"
            );
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "{point}: the failpoint was never reached"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Posts NDJSON to the ingest endpoint; `None` when no answer came (the server died).
async fn post_events(c: &Client, token: &str, body: Vec<u8>) -> Option<(u16, Value)> {
    let r = c
        .http
        .post(format!("{}/v1/ingest/events", c.base))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .ok()?;
    let status = r.status().as_u16();
    let body = r.bytes().await.ok()?;
    Some((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

/// The ids of every stored event, read back through the event stream.
async fn stored_ids(c: &Client, token: &str) -> Vec<String> {
    let r = c.get("/v1/events/stream?limit=100000", token).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    String::from_utf8(r.body)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        out.push(p.clone());
        if p.is_dir() {
            walk(&p, out);
        }
    }
}

/// Files that should not outlive a crash once the sweep ran: temporary names
/// (`.partial`, object_store's `#` staging files, `.delivery-` folders, `.tmp`) and
/// Parquet files of a table that no entry of its Delta log names.
fn leftovers(data: &Path) -> Vec<PathBuf> {
    let mut all = Vec::new();
    walk(data, &mut all);
    let mut bad: Vec<PathBuf> = all
        .iter()
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.contains(".partial")
                || name.contains('#')
                || name.starts_with(".delivery-")
                || name.ends_with(".tmp")
        })
        .cloned()
        .collect();
    for table in ["events", "escalations", "config_versions"] {
        let root = data.join(table);
        let mut named = BTreeSet::new();
        for e in std::fs::read_dir(root.join("_delta_log"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.path().extension().is_some_and(|x| x == "json") {
                for line in std::fs::read_to_string(e.path()).unwrap().lines() {
                    let v: Value = serde_json::from_str(line).unwrap();
                    for kind in ["add", "remove"] {
                        if let Some(p) = v[kind]["path"].as_str() {
                            named.insert(p.to_string());
                        }
                    }
                }
            }
        }
        let mut files = Vec::new();
        walk(&root, &mut files);
        for f in files {
            if f.extension().is_some_and(|x| x == "parquet") {
                let rel = f.strip_prefix(&root).unwrap().to_string_lossy().to_string();
                if !named.contains(&rel) {
                    bad.push(f);
                }
            }
        }
    }
    bad
}

/// Runs the orphan sweep with no age limit (nothing writes to the lake now).
fn sweep(data: &Path) {
    common::evidex(
        data,
        &[],
        &["vacuum", "--orphans-older-than-minutes", "0", "--force"],
    );
}

/// Runs the sweep, then checks nothing temporary or uncommitted is left.
fn assert_swept_clean(data: &Path, point: &str) {
    sweep(data);
    let left = leftovers(data);
    assert!(left.is_empty(), "{point}: left behind {left:?}");
}

/// Ingest: batch A acknowledged before; the server dies at `point` while storing
/// batch B; after the restart the gateway sends B again (as it would, having no
/// answer). A and B are each stored once.
async fn ingest_row(point: &'static str) -> Row {
    let dir = tempfile::tempdir().unwrap();
    let (data, admin, _) = fresh(dir.path());
    let (a, b) = (events("a", 200), events("b", 200));
    {
        let server = Server::start(&data, 0, &[]);
        let c = Client::new(&server.base);
        let (status, body) = post_events(&c, &admin, a.clone()).await.unwrap();
        assert_eq!(status, 200, "{body}");
    }
    {
        let mut server = start_armed(&data, 0, point, &[]);
        let c = Client::new(&server.base);
        let answer = post_events(&c, &admin, b.clone()).await;
        assert!(
            answer.is_none(),
            "{point}: B was answered although the server was killed: {answer:?}"
        );
        died_by_kill_9(&mut server, point);
    }
    let present;
    {
        let server = Server::start(&data, 0, &[]);
        let c = Client::new(&server.base);
        let (status, body) = post_events(&c, &admin, b).await.unwrap();
        assert_eq!(status, 200, "{point}: {body}");
        let ids = stored_ids(&c, &admin).await;
        let unique: BTreeSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "{point}: an event is stored twice");
        for p in ["seed", "a", "b"] {
            let n = if p == "seed" { 30 } else { 200 };
            for i in 0..n {
                assert!(
                    unique.contains(&format!("{p}-{i}")),
                    "{point}: {p}-{i} is missing"
                );
            }
        }
        assert_eq!(ids.len(), 430, "{point}");
        present = ids.len() - 30;
    }
    assert_swept_clean(&data, point);
    Row {
        step: point.to_string(),
        fault: "kill -9",
        acked: 400,
        present,
        ..Row::default()
    }
}

/// A full disk when the Parquet file is written: 507 naming it, nothing stored, the
/// table intact; the same request succeeds once space is back.
async fn ingest_full_disk_row() -> Row {
    let point = "lake.write_file";
    let dir = tempfile::tempdir().unwrap();
    let (data, admin, _) = fresh(dir.path());
    let b = events("b", 200);
    {
        let server = Server::start(&data, 0, &[("FAILPOINTS", "lake.write_file=return")]);
        let c = Client::new(&server.base);
        let (status, body) = post_events(&c, &admin, b.clone()).await.unwrap();
        assert_eq!(status, 507, "{body}");
        assert_eq!(body["error"]["code"], "insufficient_storage", "{body}");
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(msg.contains("No space left on device"), "{msg}");
        assert!(msg.contains("none of this request was stored"), "{msg}");
        assert_eq!(
            stored_ids(&c, &admin).await.len(),
            30,
            "nothing of B stored"
        );
    }
    let present;
    {
        let server = Server::start(&data, 0, &[]);
        let c = Client::new(&server.base);
        let (status, body) = post_events(&c, &admin, b).await.unwrap();
        assert_eq!(status, 200, "{body}");
        let ids = stored_ids(&c, &admin).await;
        assert_eq!(ids.len(), 230);
        assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), 230);
        present = ids.len() - 30;
    }
    assert_swept_clean(&data, point);
    Row {
        step: point.to_string(),
        fault: "ENOSPC",
        acked: 200,
        present,
        ..Row::default()
    }
}

async fn create_export(c: &Client, token: &str, name: &str, extra: Value) -> String {
    let mut body = json!({"name": name, "from": "2026-03-01", "to": "2026-03-03", "format": "csv"});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let r = c.post("/v1/exports", token, &body).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    r.json()["id"].as_str().unwrap().to_string()
}

/// Queues an export through a server that has no workers, then stops it. An armed
/// server with a worker could claim the job and die at its failpoint before the POST
/// is answered, leaving the test without the job's id.
async fn queue_export(
    data: &Path,
    token: &str,
    name: &str,
    extra: Value,
    env: &[(&str, &str)],
) -> String {
    let server = Server::start(data, 0, env);
    let c = Client::new(&server.base);
    create_export(&c, token, name, extra).await
}

/// Checks a completed job: one artifact, the one the record names, whole.
async fn check_job(c: &Client, token: &str, data: &Path, id: &str, what: &str) -> (usize, usize) {
    let j = c.wait(id, token, Duration::from_secs(120)).await;
    assert_eq!(j["status"], "completed", "{what}: {j}");
    let r = c.get(&format!("/v1/exports/{id}/download"), token).await;
    assert_eq!(r.status, 200, "{what}");
    assert_eq!(
        sha256_hex(&r.body),
        j["artifact"]["sha256"].as_str().unwrap(),
        "{what}: the download is the artifact the record names"
    );
    // One attempt folder remains: the one that completed.
    let job_dir = data.join("_state").join("artifacts").join(id);
    let attempts: Vec<String> = std::fs::read_dir(&job_dir)
        .unwrap_or_else(|e| panic!("{what}: {}: {e}", job_dir.display()))
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(
        attempts,
        vec![format!("attempt-{}", j["attempts"])],
        "{what}: {j}"
    );
    (1, attempts.len())
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

/// Export: the worker's server dies at `point`; after the restart the job's lease
/// runs out and another attempt completes it.
async fn export_row(point: &'static str) -> Row {
    let dir = tempfile::tempdir().unwrap();
    let (data, _, compliance) = fresh(dir.path());
    let id = queue_export(&data, &compliance, "Crash", json!({}), &[]).await;
    {
        let mut server = start_armed(&data, 1, point, &[]);
        died_by_kill_9(&mut server, point);
    }
    let server = Server::start(&data, 1, &[]);
    let c = Client::new(&server.base);
    let (jobs, artifacts) = check_job(&c, &compliance, &data, &id, point).await;
    let j = c
        .get(&format!("/v1/exports/{id}"), &compliance)
        .await
        .json();
    assert_eq!(j["attempts"], 2, "{point}: {j}");
    drop(server);
    assert_swept_clean(&data, point);
    Row {
        step: point.to_string(),
        fault: "kill -9",
        jobs_completed: jobs,
        artifacts,
        ..Row::default()
    }
}

/// A full disk while the artifact is written: the attempt fails naming it, the job
/// goes back to the queue (its half artifact removed), the next attempt completes.
async fn export_full_disk_row() -> Row {
    let point = "artifact.write";
    let dir = tempfile::tempdir().unwrap();
    let (data, _, compliance) = fresh(dir.path());
    let id;
    {
        // The first write fails; the retry then waits at its first write, so the
        // failed attempt's record can be looked at.
        let server = Server::start(
            &data,
            1,
            &[("FAILPOINTS", "artifact.write=1*return->pause")],
        );
        let c = Client::new(&server.base);
        id = create_export(&c, &compliance, "Full", json!({})).await;
        let start = Instant::now();
        loop {
            let j = c
                .get(&format!("/v1/exports/{id}"), &compliance)
                .await
                .json();
            if j["attempts"] == 2 {
                let err = j["error"].as_str().unwrap_or_default();
                assert!(err.contains("No space left on device"), "{j}");
                assert_ne!(j["status"], "failed", "{j}");
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(60), "{j}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Attempt 1's half artifact is gone.
        assert!(
            !data
                .join("_state")
                .join("artifacts")
                .join(&id)
                .join("attempt-1")
                .exists(),
            "attempt 1's folder is removed"
        );
    }
    let server = Server::start(&data, 1, &[]);
    let c = Client::new(&server.base);
    let (jobs, artifacts) = check_job(&c, &compliance, &data, &id, point).await;
    drop(server);
    assert_swept_clean(&data, point);
    Row {
        step: point.to_string(),
        fault: "ENOSPC",
        jobs_completed: jobs,
        artifacts,
        ..Row::default()
    }
}

/// Delivery: the server dies at `point` while delivering; after the restart the
/// delivery's lease runs out and it is delivered and recorded once.
async fn delivery_row(point: &'static str, s3_root: PathBuf, endpoint: String) -> Row {
    let dir = tempfile::tempdir().unwrap();
    let (data, admin, compliance) = fresh(dir.path());
    let prefix = format!("{}/", point.replace('.', "-"));
    {
        let server = Server::start(&data, 0, &[ALLOW]);
        let c = Client::new(&server.base);
        let settings = json!({
            "bucket": "evidence-bucket", "region": "us-east-1", "endpoint": endpoint,
            "path_style": true, "prefix": prefix,
            "access_key_id": S3sFs::ACCESS_KEY, "secret_access_key": S3sFs::SECRET_KEY,
        });
        let r = c
            .call(
                "PUT",
                "/v1/settings/delivery",
                Some(&admin),
                Some(settings.to_string().into_bytes()),
                &[],
            )
            .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    let id = queue_export(
        &data,
        &compliance,
        "Delivered",
        json!({"deliver": true}),
        &[ALLOW],
    )
    .await;
    {
        let mut server = start_armed(&data, 1, point, &[ALLOW]);
        died_by_kill_9(&mut server, point);
    }
    let server = Server::start(&data, 1, &[ALLOW]);
    let c = Client::new(&server.base);
    let (jobs, artifacts) = check_job(&c, &compliance, &data, &id, point).await;
    let start = Instant::now();
    let job = loop {
        let j = c
            .get(&format!("/v1/exports/{id}"), &compliance)
            .await
            .json();
        if j["delivery"]["status"] != "pending" {
            break j;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "{point}: {j}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(job["delivery"]["status"], "delivered", "{point}: {job}");
    let key = job["delivery"]["key"].as_str().unwrap().to_string();
    assert_eq!(key, format!("{prefix}Delivered.csv"));
    // In the bucket, whole: the object's bytes are the artifact's.
    let object = std::fs::read(s3_root.join("evidence-bucket").join(&key)).unwrap();
    assert_eq!(
        sha256_hex(&object),
        job["artifact"]["sha256"].as_str().unwrap()
    );
    // Recorded once: one `export.delivered` entry in the audit chain.
    let audit = c.get("/v1/audit-log", &admin).await;
    let delivered = String::from_utf8_lossy(&audit.body)
        .lines()
        .filter(|l| l.contains("export.delivered") && l.contains(&id))
        .count();
    assert_eq!(delivered, 1, "{point}");
    drop(server);
    assert_swept_clean(&data, point);
    Row {
        step: point.to_string(),
        fault: "kill -9",
        jobs_completed: jobs,
        artifacts,
        deliveries: format!("sent, {delivered} recorded"),
        ..Row::default()
    }
}

/// Webhook: the server dies after the endpoint answered and before the attempt is
/// recorded; after the restart the message is sent again (the same webhook-id) and
/// recorded once.
async fn webhook_row() -> Row {
    let point = "webhook.after_send";
    let dir = tempfile::tempdir().unwrap();
    let (data, admin, compliance) = fresh(dir.path());
    let receiver = Receiver::start(dir.path(), 0);
    let hook_id;
    {
        let server = Server::start(&data, 0, &[ALLOW]);
        let c = Client::new(&server.base);
        let r = c
            .post(
                "/v1/webhooks",
                &admin,
                &json!({"url": format!("http://localhost:{}/hook", receiver.port),
                        "events": ["export.completed"]}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        let created = r.json();
        hook_id = created["id"].as_str().unwrap().to_string();
        std::fs::write(&receiver.secret_file, created["secret"].as_str().unwrap()).unwrap();
    }
    let id = queue_export(&data, &compliance, "Hooked", json!({}), &[ALLOW]).await;
    {
        let mut server = start_armed(&data, 1, point, &[ALLOW]);
        died_by_kill_9(&mut server, point);
    }
    let server = Server::start(&data, 1, &[ALLOW]);
    let c = Client::new(&server.base);
    let (jobs, artifacts) = check_job(&c, &compliance, &data, &id, point).await;
    let start = Instant::now();
    let items = loop {
        let log = c
            .get(&format!("/v1/webhooks/{hook_id}/deliveries"), &admin)
            .await
            .json();
        let items = log["items"].as_array().cloned().unwrap_or_default();
        if items.iter().any(|m| m["status"] == "delivered") {
            break items;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "{point}: {log}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(items.len(), 1, "{point}: one message: {items:?}");
    assert_eq!(items[0]["attempts"], 1, "{point}: recorded once: {items:?}");
    let got: Vec<Value> = receiver
        .requests()
        .into_iter()
        .filter(|r| r["payload"]["data"]["export_id"] == id.as_str())
        .collect();
    assert!(
        got.len() >= 2,
        "{point}: sent before the kill and again: {got:?}"
    );
    assert!(got.iter().all(|r| r["verified"] == true), "{got:?}");
    assert!(
        got.iter().all(|r| r["id"] == got[0]["id"]),
        "one webhook-id"
    );
    drop(server);
    assert_swept_clean(&data, point);
    Row {
        step: point.to_string(),
        fault: "kill -9",
        jobs_completed: jobs,
        artifacts,
        webhooks: format!("sent {}, recorded 1", got.len()),
        ..Row::default()
    }
}

/// Scheduler: the server dies between a period's row and its job (one
/// transaction, so both roll back); after the restart every period is queued once.
async fn schedule_row() -> Row {
    let point = "schedule.after_period";
    let dir = tempfile::tempdir().unwrap();
    let (data, _, compliance) = fresh(dir.path());
    let tick = ("EVIDEX_SCHEDULER__TICK_SECS", "1");
    let schedule_id;
    {
        // Created on an unarmed server whose scheduler looks only every 30 s (once at
        // its start, before the schedule exists): with the 1 s tick the armed server
        // could queue a period and die before the POST is answered.
        let server = Server::start(&data, 0, &[]);
        let c = Client::new(&server.base);
        let r = c
            .post(
                "/v1/schedules",
                &compliance,
                &json!({"name": "Crash", "kind": "cron", "cron": "*/2 * * * * *",
                        "timezone": "UTC", "export": {"format": "csv"}}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        schedule_id = r.json()["id"].as_str().unwrap().to_string();
    }
    {
        let mut server = start_armed(&data, 0, point, &[tick]);
        died_by_kill_9(&mut server, point);
    }
    let server = Server::start(&data, 1, &[tick]);
    let c = Client::new(&server.base);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let r = c
        .call(
            "DELETE",
            &format!("/v1/schedules/{schedule_id}"),
            Some(&compliance),
            None,
            &[],
        )
        .await;
    assert!(r.status < 300, "{}", String::from_utf8_lossy(&r.body));
    let jobs = c.get("/v1/exports?limit=500", &compliance).await.json();
    let mut per_period: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for j in jobs["items"].as_array().unwrap() {
        if j["schedule_id"] == schedule_id.as_str() {
            per_period
                .entry(j["period"].as_str().unwrap().to_string())
                .or_default()
                .push(j["id"].as_str().unwrap().to_string());
        }
    }
    assert!(!per_period.is_empty(), "{point}: nothing was queued");
    assert!(
        per_period.values().all(|ids| ids.len() == 1),
        "{point}: a period queued twice: {per_period:?}"
    );
    let mut completed = 0;
    let mut artifacts = 0;
    for ids in per_period.values() {
        let (j, a) = check_job(&c, &compliance, &data, &ids[0], point).await;
        completed += j;
        artifacts += a;
    }
    drop(server);
    assert_swept_clean(&data, point);
    Row {
        step: point.to_string(),
        fault: "kill -9",
        jobs_completed: completed,
        artifacts,
        ..Row::default()
    }
}

/// Runs `row` on a thread of its own, with a runtime of its own (the server starts
/// and process waits block).
fn spawn<F>(row: F) -> std::thread::JoinHandle<Row>
where
    F: std::future::Future<Output = Row> + Send + 'static,
{
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(row)
    })
}

#[test]
fn kill_9_at_every_step_and_a_full_disk_lose_and_double_nothing() {
    let s3_dir = tempfile::tempdir().unwrap();
    let s3 = S3sFs::start(s3_dir.path(), &["evidence-bucket"]);
    let mut rows = Vec::new();
    for point in [
        "ingest.after_parse",
        "lake.after_parquet_write",
        "lake.before_commit",
        "lake.after_commit",
        "ingest.before_response",
    ] {
        rows.push(spawn(ingest_row(point)));
    }
    rows.push(spawn(ingest_full_disk_row()));
    for point in [
        "export.after_claim",
        "export.mid_encode",
        "export.before_publish",
        "export.after_publish",
        "export.before_job_update",
    ] {
        rows.push(spawn(export_row(point)));
    }
    rows.push(spawn(export_full_disk_row()));
    for point in ["delivery.mid_upload", "delivery.after_upload"] {
        rows.push(spawn(delivery_row(
            point,
            s3_dir.path().to_path_buf(),
            s3.endpoint(),
        )));
    }
    rows.push(spawn(schedule_row()));
    rows.push(spawn(webhook_row()));
    let mut failed = Vec::new();
    let mut table = vec![
        "| step | fault | events acknowledged / present once | jobs completed / artifacts | deliveries | webhooks | leftovers after the sweep |".to_string(),
        "|---|---|---|---|---|---|---|".to_string(),
    ];
    for handle in rows {
        match handle.join() {
            Ok(r) => table.push(format!(
                "| {} | {} | {} | {} | {} | {} | {} |",
                r.step,
                r.fault,
                if r.acked > 0 {
                    format!("{} / {}", r.acked, r.present)
                } else {
                    "-".to_string()
                },
                if r.jobs_completed > 0 {
                    format!("{} / {}", r.jobs_completed, r.artifacts)
                } else {
                    "-".to_string()
                },
                if r.deliveries.is_empty() {
                    "-"
                } else {
                    &r.deliveries
                },
                if r.webhooks.is_empty() {
                    "-"
                } else {
                    &r.webhooks
                },
                r.leftovers
            )),
            Err(e) => failed.push(
                e.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default(),
            ),
        }
    }
    println!("{}", table.join("\n"));
    assert!(failed.is_empty(), "rows failed:\n{}", failed.join("\n"));
}

/// Re-sends of the previous commit's events while that commit's key index update is
/// still running (`lake.before_index_record=sleep`) are found in the update's own
/// keys; when that update then fails (`lake.index_record=return`), nothing is lost
/// or doubled: the request that looked past it is answered, and a later re-send is
/// still found (the next append reads the files the index missed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resends_during_a_slow_or_failed_key_index_update_are_duplicates() {
    /// `{prefix}-{i}` for each `i`, at the times of [`events`].
    fn some(prefix: &str, ids: impl IntoIterator<Item = usize>) -> Vec<u8> {
        let all = String::from_utf8(events(prefix, 200)).unwrap();
        let lines: Vec<&str> = all.lines().collect();
        ids.into_iter()
            .map(|i| lines[i])
            .collect::<Vec<_>>()
            .join("\n")
            .into_bytes()
    }
    for (case, failpoints) in [
        ("slow", "lake.before_index_record=sleep(1500)"),
        (
            "slow, then failed",
            "lake.before_index_record=1*sleep(1500);lake.index_record=1*return",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (data, admin, _) = fresh(dir.path());
        let server = Server::start(&data, 0, &[("FAILPOINTS", failpoints)]);
        let c = Client::new(&server.base);
        let post = |body: Vec<u8>| {
            let (c, admin) = (&c, &admin);
            async move {
                let (status, body) = post_events(c, admin, body).await.unwrap();
                assert_eq!(status, 200, "{case}: {body}");
                (
                    body["accepted"].as_u64().unwrap(),
                    body["duplicates"].as_u64().unwrap(),
                )
            }
        };
        // A: 100 new events; its index update is held back 1.5 s.
        assert_eq!(post(some("a", 0..100)).await, (100, 0), "{case}");
        // B, at once: half of A again and 50 new ones.
        let mut b = some("a", 0..50);
        b.push(b'\n');
        b.extend(some("b", 0..50));
        assert_eq!(
            post(b).await,
            (100, 50),
            "{case}: re-sends of A during its index update"
        );
        // C: one of A, one of B, 10 new (with the failure: A's keys come from its files).
        let mut c3 = some("a", [60]);
        c3.push(b'\n');
        c3.extend(some("b", [10]));
        c3.push(b'\n');
        c3.extend(some("c", 0..10));
        assert_eq!(post(c3).await, (12, 2), "{case}: re-sends after the update");
        let ids = stored_ids(&c, &admin).await;
        let unique: BTreeSet<&String> = ids.iter().collect();
        assert_eq!(ids.len(), 30 + 100 + 50 + 10, "{case}: every event once");
        assert_eq!(unique.len(), ids.len(), "{case}: no event twice");
    }
}

/// The batcher compacts a crowded day partition every 16 commits: 40 one-request
/// batches into one day, each re-sending an event of the batch before, store every
/// event once, report every re-send as a duplicate (also the first batch after a
/// compaction, whose key index update waited for the batch before), and leave the
/// day compacted. Also when the key index update of the 16th commit fails (the
/// compaction that waits for it gets the error): the next batch's re-send of that
/// commit's event is still found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_with_compaction_loses_and_doubles_nothing() {
    for failpoints in ["", "lake.index_record=15*off->1*return"] {
        ingest_with_compaction(failpoints).await;
    }
}

async fn ingest_with_compaction(failpoints: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (data, admin, _) = fresh(dir.path());
    let env: &[(&str, &str)] = if failpoints.is_empty() {
        &[]
    } else {
        &[("FAILPOINTS", failpoints)]
    };
    let server = Server::start(&data, 0, env);
    let c = Client::new(&server.base);
    let lines: Vec<String> = String::from_utf8(events("k", 40 * 20))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    for (n, batch) in lines.chunks(20).enumerate() {
        let mut body = batch.join("\n");
        if n > 0 {
            // A re-send of the batch before's first event.
            body = format!("{}\n{body}", lines[(n - 1) * 20]);
        }
        let (status, answer) = post_events(&c, &admin, body.into_bytes()).await.unwrap();
        assert_eq!(status, 200, "{failpoints}: batch {n}: {answer}");
        assert_eq!(
            answer["duplicates"],
            u64::from(n > 0),
            "{failpoints}: batch {n}: {answer}"
        );
    }
    let ids = stored_ids(&c, &admin).await;
    assert_eq!(ids.len(), 30 + 800, "{failpoints}: every event once");
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), ids.len());
    // 41 commits into one day (the seed's and 40 batches): compacted at least once,
    // so fewer current files than commits.
    // Replaced files stay on disk for time travel until vacuum: the table's
    // current files are listed by the CLI.
    let day_files = || {
        let listing = common::text(&common::evidex(&data, &[], &["tables", "--files"]));
        let n = listing
            .lines()
            .skip_while(|l| !l.starts_with("events"))
            .skip(1)
            .take_while(|l| l.starts_with(' '))
            .filter(|l| l.contains("date=2026-03-02"))
            .count();
        (n, listing)
    };
    let start = Instant::now();
    let (mut current, mut listing) = day_files();
    while current >= 41 && start.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        (current, listing) = day_files();
    }
    assert!(
        current < 41,
        "compacted: {current} current files\n{listing}"
    );
}
