//! Token lifecycle over the API and the CLI: create (shown once, optional expiry),
//! list (never the token), revoke (refused at once by every server on the database),
//! expiry, last use, and the audit entries.

use std::time::Duration;

use serde_json::{Value, json};

mod common;
use common::{Client, Server, evidex, token};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_created_listed_expired_and_revoked_on_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let admin = token(&data, "admin");
    let compliance = token(&data, "compliance");
    let a = Server::start(&data, 0, &[]);
    let b = Server::start(&data, 0, &[]);
    let (ca, cb) = (Client::new(&a.base), Client::new(&b.base));

    // Only admins manage tokens; bad requests name the field.
    let body = json!({"name": "siem-prod", "role": "siem", "expires_in_days": 30});
    assert_eq!(ca.post("/v1/tokens", &compliance, &body).await.status, 403);
    assert_eq!(ca.get("/v1/tokens", &compliance).await.status, 403);
    for (bad, says) in [
        (json!({"name": "x", "role": "root"}), "role: unknown role"),
        (json!({"name": "", "role": "viewer"}), "name: a token name"),
        (
            json!({"name": "x", "role": "viewer", "expires_in_days": 0}),
            "expires_in_days",
        ),
        (
            json!({"name": "x", "role": "viewer", "expires_at": "tomorrow"}),
            "expires_at",
        ),
        (
            json!({"name": "x", "role": "viewer", "expires_at": "2020-01-01T00:00:00Z"}),
            "not in the future",
        ),
        (
            json!({"name": "x", "role": "viewer", "scope": "all"}),
            "unknown field",
        ),
    ] {
        let r = ca.post("/v1/tokens", &admin, &bad).await;
        assert_eq!(r.status, 400, "{bad}");
        assert!(r.message().contains(says), "{bad}: {}", r.message());
    }

    // Create: the token is in this answer only.
    let r = ca.post("/v1/tokens", &admin, &body).await;
    assert_eq!(r.status, 201, "{}", r.message());
    let created = r.json();
    let siem = created["token"].as_str().unwrap().to_string();
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(
        (created["role"].as_str(), created["status"].as_str()),
        (Some("siem"), Some("active"))
    );
    assert!(created["expires_at"].as_str().is_some());
    assert!(created["created_by"].as_str().unwrap().contains("admin"));
    // It works on the other node (stream, its role's only route).
    let s = cb.get("/v1/events/stream?limit=1", &siem).await;
    assert_eq!(s.status, 200, "{}", s.message());
    let listed = cb.get("/v1/tokens", &admin).await;
    let text = String::from_utf8_lossy(&listed.body).to_string();
    assert!(!text.contains(&siem), "a listing never shows a token");
    let items = listed.json()["items"].as_array().unwrap().clone();
    let mine: &Value = items.iter().find(|t| t["id"] == id.as_str()).unwrap();
    assert!(mine["last_used_at"].as_str().is_some(), "{mine}");
    assert!(
        items
            .iter()
            .all(|t| t.get("token").is_none() && t.get("hash").is_none())
    );

    // Revoke on node A: node B refuses it at the next request.
    let r = ca
        .call(
            "DELETE",
            &format!("/v1/tokens/{id}"),
            Some(&admin),
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.message());
    let refused = cb.get("/v1/events/stream?limit=1", &siem).await;
    assert_eq!(refused.status, 401);
    assert!(
        refused.message().contains("the token was revoked at"),
        "{}",
        refused.message()
    );
    let again = ca
        .call(
            "DELETE",
            &format!("/v1/tokens/{id}"),
            Some(&admin),
            None,
            &[],
        )
        .await;
    assert_eq!(again.status, 409);
    let none = ca
        .call(
            "DELETE",
            "/v1/tokens/tok_0000000000000000",
            Some(&admin),
            None,
            &[],
        )
        .await;
    assert_eq!(none.status, 404);

    // Expiry, on the wall clock the servers read.
    #[allow(
        clippy::disallowed_methods,
        reason = "the servers under test read the wall clock"
    )]
    let soon = (chrono::Utc::now() + chrono::Duration::seconds(2))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let r = ca
        .post(
            "/v1/tokens",
            &admin,
            &json!({"name": "short", "role": "viewer", "expires_at": soon}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.message());
    let short = r.json()["token"].as_str().unwrap().to_string();
    assert_eq!(cb.get("/v1/exports", &short).await.status, 200);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let expired = cb.get("/v1/exports", &short).await;
    assert_eq!(expired.status, 401);
    assert!(
        expired.message().contains("the token expired at"),
        "{}",
        expired.message()
    );

    // The audit chain records creation and revocation.
    let log = ca.get("/v1/audit-log?limit=1000", &admin).await.json();
    let actions: Vec<(String, String)> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap_or_default().to_string(),
                e["target"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert!(
        actions.contains(&("token.created".to_string(), id.clone())),
        "{actions:?}"
    );
    assert!(
        actions.contains(&("token.revoked".to_string(), id.clone())),
        "{actions:?}"
    );

    // The CLI: list shows every token with its status; revoke names what is wrong.
    let out = evidex(&data, &[], &["token", "list"]);
    let list = String::from_utf8_lossy(&out.stdout).to_string();
    let line = list.lines().find(|l| l.contains(&id)).unwrap();
    assert!(
        line.contains("siem-prod") && line.contains("revoked"),
        "{list}"
    );
    assert!(!list.contains("evx_"), "{list}");
    let out = common::run(&data, &["token", "revoke", &id]);
    assert!(!out.status.success());
    assert!(
        common::text(&out).contains("already revoked"),
        "{}",
        common::text(&out)
    );
    let out = common::run(&data, &["token", "revoke", "tok_nope"]);
    assert!(
        common::text(&out).contains("no token \"tok_nope\""),
        "{}",
        common::text(&out)
    );
    let out = common::run(
        &data,
        &[
            "token",
            "create",
            "--role",
            "viewer",
            "--expires-in-days",
            "0",
        ],
    );
    assert!(!out.status.success());
    assert!(
        common::text(&out).contains("--expires-in-days"),
        "{}",
        common::text(&out)
    );
    let out = evidex(
        &data,
        &[],
        &[
            "token",
            "create",
            "--role",
            "viewer",
            "--name",
            "cli-temp",
            "--expires-in-days",
            "7",
        ],
    );
    let cli_token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        common::text(&out).contains("expires 20"),
        "{}",
        common::text(&out)
    );
    assert_eq!(ca.get("/v1/exports", &cli_token).await.status, 200);
    let cli_id = ca.get("/v1/tokens", &admin).await.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "cli-temp")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    evidex(&data, &[], &["token", "revoke", &cli_id]);
    assert_eq!(cb.get("/v1/exports", &cli_token).await.status, 401);
}
