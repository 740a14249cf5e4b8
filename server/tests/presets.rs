//! Saved presets and redaction settings through the HTTP API, against the real
//! `evidex serve`: what is saved is checked like `--sql`, built-ins stay read-only,
//! queued jobs keep the SQL and rules they were created with, the CLI sees the same
//! presets and rules, and every change is in the audit chain.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

mod common;
use common::{Client, Server, run, text, token};

/// Ingests a few events whose input holds an e-mail address and a phone number.
fn ingest_events(data: &Path, dir: &Path) {
    let lines: Vec<String> = (0..12)
        .map(|i| {
            format!(
                r#"{{"id":"e-{i}","timestamp":"2026-03-02T10:00:{i:02}Z","decision":"{}","severity":"high","policy":"pii","gateway_id":"gw","consumer_group":"cg","input":"mail ana{i}@example.com or call +1 415 555 01{i:02}"}}"#,
                if i % 3 == 0 { "block" } else { "allow" }
            )
        })
        .collect();
    let f = dir.join("in.ndjson");
    std::fs::write(&f, lines.join("\n")).unwrap();
    let out = run(data, &["ingest", f.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
}

const BLOCKS: &str = "SELECT id, decision FROM events WHERE decision = 'block' ORDER BY id";
const ALLOWS: &str = "SELECT id, decision FROM events WHERE decision = 'allow' ORDER BY id";

async fn download_text(c: &Client, id: &str, tok: &str) -> String {
    let job = c.wait(id, tok, Duration::from_secs(60)).await;
    assert_eq!(job["status"], "completed", "{job}");
    let d = c.get(&format!("/v1/exports/{id}/download"), tok).await;
    String::from_utf8(d.body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saved_presets_are_checked_pinned_listed_and_audited() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ingest_events(&data, dir.path());
    let compliance = token(&data, "compliance");
    let viewer = token(&data, "viewer");
    let admin = token(&data, "admin");
    // No workers: jobs stay queued until a worker process is started below.
    let mut server = Server::start(&data, 0, &[]);
    let c = Client::new(&server.base);

    // Bad input: each error names the field, nothing is saved.
    for (body, status, want) in [
        (json!({"name": "Blocks!", "sql": BLOCKS}), 400, "name:"),
        (
            json!({"name": "policy-violations", "sql": BLOCKS}),
            409,
            "exists already",
        ),
        (
            json!({"name": "blocks", "sql": "DROP TABLE events"}),
            400,
            "sql: DROP",
        ),
        (
            json!({"name": "blocks", "sql": "SELECT nope FROM events"}),
            400,
            "nope",
        ),
        (
            json!({"name": "blocks", "sql": BLOCKS, "format": "pdf"}),
            400,
            "format:",
        ),
        (
            json!({"name": "blocks", "sql": BLOCKS, "colour": "red"}),
            400,
            "unknown field",
        ),
        (json!({"name": "blocks"}), 400, "missing field `sql`"),
    ] {
        let r = c.post("/v1/presets", &compliance, &body).await;
        assert_eq!(
            r.status,
            status,
            "{body}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert!(r.message().contains(want), "{body}: {}", r.message());
    }
    let r = c
        .post("/v1/presets", &viewer, &json!({"name": "x", "sql": BLOCKS}))
        .await;
    assert_eq!(r.status, 403);

    // Save one; it is listed with its id beside the built-ins.
    let r = c
        .post(
            "/v1/presets",
            &compliance,
            &json!({"name": "blocks", "description": "Blocked events", "format": "ndjson", "sql": BLOCKS}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let saved = r.json();
    let pid = saved["id"].as_str().unwrap().to_string();
    assert!(pid.starts_with("pre_"), "{saved}");
    assert_eq!(saved["source"], "saved");
    let list = c.get("/v1/presets", &viewer).await.json();
    let items = list["items"].as_array().unwrap();
    assert!(
        items
            .iter()
            .any(|p| p["name"] == "blocks" && p["id"] == pid.as_str())
    );
    assert!(
        items
            .iter()
            .any(|p| p["name"] == "policy-violations" && p["read_only"] == true)
    );
    assert_eq!(
        c.get("/v1/presets/blocks", &viewer).await.json()["id"],
        pid.as_str()
    );
    let again = c
        .post(
            "/v1/presets",
            &compliance,
            &json!({"name": "blocks", "sql": ALLOWS}),
        )
        .await;
    assert_eq!(again.status, 409);

    // Built-ins are read-only.
    for method in ["PUT", "DELETE"] {
        let r = c
            .call(
                method,
                "/v1/presets/policy-violations",
                Some(&compliance),
                Some(
                    json!({"name": "policy-violations", "sql": BLOCKS})
                        .to_string()
                        .into_bytes(),
                ),
                &[],
            )
            .await;
        assert_eq!(r.status, 409, "{method}");
        assert!(r.message().contains("read-only"), "{}", r.message());
    }

    // A job made from the preset, then the preset is edited: the queued job keeps the
    // SQL it was created with; a new job gets the new SQL.
    let r = c
        .post(
            "/v1/exports",
            &compliance,
            &json!({"name": "before", "from": "2026-03-01", "to": "2026-03-03", "preset": "blocks"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let before = r.json()["id"].as_str().unwrap().to_string();
    let r = c
        .call(
            "PUT",
            &format!("/v1/presets/{pid}"),
            Some(&compliance),
            Some(
                json!({"name": "blocks", "description": "now allows", "format": "ndjson", "sql": ALLOWS})
                    .to_string()
                    .into_bytes(),
            ),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let bad_edit = c
        .call(
            "PUT",
            &format!("/v1/presets/{pid}"),
            Some(&compliance),
            Some(
                json!({"name": "blocks", "sql": "SELECT 1; SELECT 2"})
                    .to_string()
                    .into_bytes(),
            ),
            &[],
        )
        .await;
    assert_eq!(bad_edit.status, 400);
    let r = c
        .post(
            "/v1/exports",
            &compliance,
            &json!({"name": "after", "from": "2026-03-01", "to": "2026-03-03", "preset": "blocks"}),
        )
        .await;
    let after = r.json()["id"].as_str().unwrap().to_string();
    server.kill();
    let server = Server::start(&data, 1, &[]);
    let c = Client::new(&server.base);
    let old = download_text(&c, &before, &compliance).await;
    assert_eq!(old.lines().count(), 4, "{old}");
    assert!(old.lines().all(|l| l.contains("\"block\"")), "{old}");
    let new = download_text(&c, &after, &compliance).await;
    assert_eq!(new.lines().count(), 8, "{new}");
    let manifest = c
        .get(&format!("/v1/exports/{before}/manifest"), &compliance)
        .await
        .json();
    assert_eq!(manifest["sql"], BLOCKS);

    // The CLI sees the saved preset.
    let out = run(&data, &["presets"]);
    assert!(text(&out).contains("blocks"), "{}", text(&out));

    // Delete: gone for new exports.
    let r = c
        .call(
            "DELETE",
            &format!("/v1/presets/{pid}"),
            Some(&compliance),
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, 204);
    let r = c
        .post(
            "/v1/exports",
            &compliance,
            &json!({"name": "gone", "from": "2026-03-01", "to": "2026-03-03", "preset": "blocks"}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.message().contains("unknown preset"), "{}", r.message());

    let log = c.get("/v1/audit-log", &admin).await.json();
    let actions: Vec<&str> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for a in ["preset.created", "preset.updated", "preset.deleted"] {
        assert_eq!(
            actions.iter().filter(|x| **x == a).count(),
            1,
            "{a}: {actions:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redaction_settings_are_checked_applied_and_audited() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ingest_events(&data, dir.path());
    let admin = token(&data, "admin");
    let compliance = token(&data, "compliance");
    let server = Server::start(&data, 1, &[]);
    let c = Client::new(&server.base);

    let r = c.get("/v1/settings/redaction", &admin).await.json();
    assert_eq!(r["source"], "configuration");
    assert!(
        r["rules"]["detectors"].as_array().unwrap().len() >= 7,
        "{r}"
    );
    assert_eq!(
        c.get("/v1/settings/redaction", &compliance).await.status,
        403
    );

    let put = |body: Value| {
        let c = &c;
        let admin = admin.clone();
        async move {
            c.call(
                "PUT",
                "/v1/settings/redaction",
                Some(&admin),
                Some(body.to_string().into_bytes()),
                &[],
            )
            .await
        }
    };
    // Bad rules are refused, naming what is wrong; the old rules stay.
    for (body, want) in [
        (json!({"detectors": ["email", "dna"]}), "dna"),
        (
            json!({"custom": [{"name": "ticket", "pattern": "TCK-("}]}),
            "redaction.custom[0].pattern",
        ),
        (json!({"detectors": "email"}), "body:"),
        (json!({"colour": 1}), "unknown field"),
    ] {
        let r = put(body.clone()).await;
        assert_eq!(r.status, 400, "{body}");
        assert!(r.message().contains(want), "{body}: {}", r.message());
    }
    assert_eq!(
        c.get("/v1/settings/redaction", &admin).await.json()["source"],
        "configuration"
    );

    // E-mail addresses only: phone numbers now pass.
    let r = put(json!({"detectors": ["email"]})).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = c
        .post(
            "/v1/exports",
            &compliance,
            &json!({"name": "mails", "from": "2026-03-01", "to": "2026-03-03", "format": "ndjson"}),
        )
        .await;
    let id = r.json()["id"].as_str().unwrap().to_string();
    let body = download_text(&c, &id, &compliance).await;
    assert!(body.contains("[REDACTED:EMAIL]"), "{body}");
    assert!(!body.contains("@example.com"), "{body}");
    assert!(body.contains("+1 415 555 01"), "{body}");
    let manifest = c
        .get(&format!("/v1/exports/{id}/manifest"), &compliance)
        .await
        .json();
    assert_eq!(
        manifest["redaction"]["rules"]["detectors"],
        json!(["email"])
    );

    // The CLI applies the same stored rules.
    let out_file = dir.path().join("cli.ndjson");
    let out = run(
        &data,
        &[
            "export",
            "--from",
            "2026-03-01",
            "--to",
            "2026-03-03",
            "--format",
            "ndjson",
            "--output",
            out_file.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let cli = std::fs::read_to_string(&out_file).unwrap();
    assert!(
        cli.contains("[REDACTED:EMAIL]") && cli.contains("+1 415 555 01"),
        "{cli}"
    );

    let log = c.get("/v1/audit-log", &admin).await.json();
    let changes: Vec<&Value> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "settings.redaction.updated")
        .collect();
    assert_eq!(changes.len(), 1, "{log}");
    assert_eq!(changes[0]["details"]["detectors"], json!(["email"]));
}
