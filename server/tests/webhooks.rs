//! Webhooks end to end: `evidex serve` sends `export.completed` / `export.failed` to a
//! local receiver that checks every signature with the Standard Webhooks project's
//! reference library (PyPI `standardwebhooks`, an implementation nobody here wrote),
//! fails the first attempt, and sees the same `webhook-id` again; the outbound
//! guard refuses loopback targets unless `network.allow_private_targets` is set; the
//! signing secret is shown once and never stored in clear.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;
use common::{Client, Receiver, Server, files_containing, token};

fn ingest(data: &Path, dir: &Path) {
    let lines: Vec<String> = (0..20)
        .map(|i| {
            format!(
                r#"{{"id":"w-{i}","timestamp":"2026-03-02T10:00:{i:02}Z","decision":"block","severity":"high","policy":"p","gateway_id":"g","consumer_group":"c","input":"text {i}"}}"#
            )
        })
        .collect();
    let f = dir.join("in.ndjson");
    std::fs::write(&f, lines.join("\n")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_evidex"))
        .arg("--data")
        .arg(data)
        .args(["ingest", f.to_str().unwrap()])
        .env_remove("EVIDEX_DATA")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether `check` became true within `timeout`.
async fn wait_for(timeout: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let start = Instant::now();
    while !check().await {
        if start.elapsed() > timeout {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_webhooks_are_retried_with_the_same_id_and_verified_independently() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ingest(&data, dir.path());
    let admin = token(&data, "admin");
    let compliance = token(&data, "compliance");
    let receiver = Receiver::start(dir.path(), 1);
    let hook_url = format!("http://localhost:{}/hook", receiver.port);

    // Without the flag, a target on this machine is refused, naming why.
    {
        let mut server = Server::start(&data, 0, &[]);
        let c = Client::new(&server.base);
        let r = c
            .post(
                "/v1/webhooks",
                &admin,
                &json!({"url": hook_url, "events": ["export.completed"]}),
            )
            .await;
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
        assert!(r.message().contains("loopback"), "{}", r.message());
        assert!(
            r.message().contains("allow_private_targets"),
            "{}",
            r.message()
        );
        for (body, want) in [
            (
                json!({"url": "ftp://x.example/", "events": ["export.completed"]}),
                "scheme",
            ),
            (
                json!({"url": "http://u:p@x.example/", "events": ["export.completed"]}),
                "credentials",
            ),
            (
                json!({"url": "http://169.254.169.254/", "events": ["export.completed"]}),
                "metadata",
            ),
            (
                json!({"url": "http://10.0.0.1/", "events": ["export.completed"]}),
                "private",
            ),
            (json!({"url": hook_url, "events": []}), "events:"),
            (
                json!({"url": hook_url, "events": ["export.exploded"]}),
                "unknown event",
            ),
        ] {
            let r = c.post("/v1/webhooks", &admin, &body).await;
            assert_eq!(r.status, 400, "{body}");
            assert!(r.message().contains(want), "{body}: {}", r.message());
        }
        assert_eq!(
            c.post(
                "/v1/webhooks",
                &compliance,
                &json!({"url": hook_url, "events": ["export.completed"]})
            )
            .await
            .status,
            403
        );
        server.kill();
    }

    let envs = [("EVIDEX_NETWORK__ALLOW_PRIVATE_TARGETS", "true")];
    let server = Server::start(&data, 1, &envs);
    let c = Client::new(&server.base);
    let r = c
        .post(
            "/v1/webhooks",
            &admin,
            &json!({"url": hook_url, "events": ["export.completed", "export.failed"], "description": "SIEM"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let created = r.json();
    let hook_id = created["id"].as_str().unwrap().to_string();
    let secret = created["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"));
    std::fs::write(&receiver.secret_file, &secret).unwrap();
    let listed = c.get("/v1/webhooks", &admin).await;
    assert!(!String::from_utf8_lossy(&listed.body).contains(&secret));
    assert_eq!(listed.json()["items"][0]["id"], hook_id.as_str());

    // A job that completes, and one that fails at run time (planning cannot see it).
    let r = c
        .post(
            "/v1/exports",
            &compliance,
            &json!({"name": "hooked", "from": "2026-03-01", "to": "2026-03-03", "format": "csv"}),
        )
        .await;
    let done_id = r.json()["id"].as_str().unwrap().to_string();
    let r = c
        .post(
            "/v1/exports",
            &compliance,
            &json!({"name": "doomed", "from": "2026-03-01", "to": "2026-03-03", "format": "csv",
                    "sql": "SELECT arrow_cast(input, 'Int64') AS n FROM events"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let failed_id = r.json()["id"].as_str().unwrap().to_string();
    let done = c.wait(&done_id, &compliance, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "completed");
    let failed = c
        .wait(&failed_id, &compliance, Duration::from_secs(90))
        .await;
    assert_eq!(failed["status"], "failed", "{failed}");

    // Each message: first attempt answered 500, the retry (same webhook-id) 204;
    // every request's signature verified by the reference library.
    let delivered = wait_for(Duration::from_secs(60), async || {
        receiver
            .requests()
            .iter()
            .filter(|r| r["answered"] == 204)
            .count()
            >= 2
    })
    .await;
    if !delivered {
        let log = c
            .get(&format!("/v1/webhooks/{hook_id}/deliveries"), &admin)
            .await
            .json();
        panic!(
            "not delivered: received {:#?}; delivery log {log:#}",
            receiver.requests()
        );
    }
    let requests = receiver.requests();
    assert!(
        requests.iter().all(|r| r["verified"] == true),
        "{requests:#?}"
    );
    for (export, event) in [
        (&done_id, "export.completed"),
        (&failed_id, "export.failed"),
    ] {
        let mine: Vec<&Value> = requests
            .iter()
            .filter(|r| r["payload"]["data"]["export_id"] == export.as_str())
            .collect();
        assert_eq!(mine.len(), 2, "{event}: {requests:#?}");
        assert_eq!(
            mine[0]["id"], mine[1]["id"],
            "the same webhook-id on the retry"
        );
        assert_eq!(
            (&mine[0]["answered"], &mine[1]["answered"]),
            (&json!(500), &json!(204))
        );
        assert_eq!(mine[1]["payload"]["type"], event);
    }
    let completed = requests
        .iter()
        .find(|r| r["payload"]["type"] == "export.completed")
        .unwrap();
    assert_eq!(
        completed["payload"]["data"]["artifact"]["sha256"],
        done["artifact"]["sha256"]
    );
    let failed_msg = requests
        .iter()
        .find(|r| r["payload"]["type"] == "export.failed")
        .unwrap();
    assert!(
        failed_msg["payload"]["data"]["error"].as_str().is_some(),
        "{failed_msg}"
    );

    // The delivery log lists both attempts of each message.
    let log = c
        .get(&format!("/v1/webhooks/{hook_id}/deliveries"), &admin)
        .await
        .json();
    let items = log["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{log}");
    for m in items {
        assert_eq!(m["status"], "delivered", "{m}");
        assert_eq!(m["attempts"], 2);
        let codes: Vec<&Value> = m["attempt_log"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| &a["status_code"])
            .collect();
        assert_eq!(codes, [&json!(500), &json!(204)], "{m}");
    }

    // The secret is nowhere in clear: not in the database, keys or artifacts.
    let found = files_containing(&data, secret.as_bytes());
    assert!(found.is_empty(), "secret in clear in {found:?}");
    let audit = c.get("/v1/audit-log", &admin).await;
    assert!(!String::from_utf8_lossy(&audit.body).contains(&secret));

    // Deleted: listed no more, audited.
    let r = c
        .call(
            "DELETE",
            &format!("/v1/webhooks/{hook_id}"),
            Some(&admin),
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        c.get("/v1/webhooks", &admin).await.json()["items"],
        json!([])
    );
    let actions: Vec<String> = audit_actions(&c, &admin).await;
    assert!(actions.contains(&"webhook.created".to_string()));
    assert!(actions.contains(&"webhook.deleted".to_string()));
}

async fn audit_actions(c: &Client, admin: &str) -> Vec<String> {
    c.get("/v1/audit-log", admin).await.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect()
}

/// A process that stops between finishing a job and queuing its webhook messages
/// loses nothing: the dispatcher's sweep queues them (once, however often it runs).
#[test]
fn events_missed_by_a_stopped_process_are_queued_by_the_sweep() {
    use evidex_engine::clock::{Clock, FixedClock};
    use evidex_server::store::{Principal, Role, Webhook};
    let dir = tempfile::tempdir().unwrap();
    let mut config = evidex_server::config::Config {
        data: dir.path().join("data").to_str().unwrap().to_string(),
        ..Default::default()
    };
    config.network.allow_private_targets = true;
    let now = chrono::DateTime::parse_from_rfc3339("2026-03-05T12:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let clock: std::sync::Arc<dyn Clock> = std::sync::Arc::new(FixedClock(now));
    let lake = evidex_server::open_lake(&config, &std::collections::HashMap::new(), clock.clone())
        .unwrap();
    let s = evidex_server::build_service(config, lake, clock, false).unwrap();
    let t = now.timestamp_millis();
    let hook = Webhook {
        id: evidex_server::store::Store::new_webhook_id(),
        url: "http://127.0.0.1:9/hook".into(),
        events: vec!["export.completed".into()],
        description: String::new(),
        created_by: "test".into(),
        created_at: t - 10_000,
        secret_sealed: s.master_key.seal("webhook:x", b"whsec_AAAA").unwrap(),
    };
    s.store.insert_webhook(&hook).unwrap();
    let p = Principal {
        token_id: "t".into(),
        name: "t".into(),
        role: Role::Admin,
    };
    let (job, _) = s
        .store
        .create_job(
            "exp_01SWEEP",
            "swept",
            "",
            &json!({"format": "csv"}),
            &p,
            None,
            t,
        )
        .unwrap();
    let claimed = s.store.claim("w", t, 60_000).unwrap().unwrap();
    assert_eq!(claimed.id, job.id);
    // Completed, and the process "dies" before notify().
    assert!(
        s.store
            .complete(
                &job.id,
                "w",
                claimed.attempts,
                t,
                0,
                &json!({"file_name": "x.csv"}),
                false
            )
            .unwrap()
    );
    assert!(s.store.webhook_messages(&hook.id, 10).unwrap().is_empty());
    // A webhook created after the job ended does not hear of it.
    let late = Webhook {
        id: evidex_server::store::Store::new_webhook_id(),
        created_at: t + 5_000,
        ..hook.clone()
    };
    s.store.insert_webhook(&late).unwrap();
    assert_eq!(evidex_server::webhooks::sweep(&s).unwrap(), 1);
    assert!(s.store.webhook_messages(&late.id, 10).unwrap().is_empty());
    assert_eq!(evidex_server::webhooks::sweep(&s).unwrap(), 0);
    let msgs = s.store.webhook_messages(&hook.id, 10).unwrap();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].0.event, "export.completed");
    assert_eq!(msgs[0].0.export_id.as_deref(), Some(job.id.as_str()));
}
