//! Limits (issue 15, item 6): per-token rate limits answer 429 with Retry-After, a
//! token's unfinished exports are capped, a request that takes too long answers a
//! JSON 408, every response carries the security headers, and SIGTERM lets a running
//! export finish before the process exits.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{Client, Server, evidex, token};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_and_the_export_cap_answer_429_naming_the_setting() {
    let e = common::env(2_000, 3);
    evidex(&e.data, &[], &["ingest", e.src.to_str().unwrap()]);
    let (comp, other, ingest) = (
        token(&e.data, "compliance"),
        token(&e.data, "compliance"),
        token(&e.data, "ingest"),
    );
    let server = Server::start(
        &e.data,
        0,
        &[
            ("EVIDEX_LIMITS__PREVIEW_PER_MINUTE", "2"),
            ("EVIDEX_LIMITS__INGEST_PER_MINUTE", "2"),
            ("EVIDEX_LIMITS__CONCURRENT_EXPORTS", "2"),
        ],
    );
    let c = Client::new(&server.base);
    let scope = json!({"from": "2026-03-02", "to": "2026-03-04"});

    // Preview: two a minute per token; the third is refused with Retry-After.
    for _ in 0..2 {
        let r = c.post("/v1/exports/preview", &comp, &scope).await;
        assert_eq!(r.status, 200, "{}", r.message());
    }
    let r = c.post("/v1/exports/preview", &comp, &scope).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"]["code"], "rate_limited");
    assert!(
        r.message().contains("limits.preview_per_minute"),
        "{}",
        r.message()
    );
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry), "{retry}");
    // Another token has its own bucket.
    let r = c.post("/v1/exports/preview", &other, &scope).await;
    assert_eq!(r.status, 200, "{}", r.message());

    // Ingest: the refused request stores nothing.
    let line = |id: &str| {
        format!(
            r#"{{"id":"{id}","timestamp":"2026-03-03T10:00:00Z","decision":"allow","severity":"info","policy":"p","gateway_id":"g","consumer_group":"c"}}"#
        )
        .into_bytes()
    };
    for id in ["rl-1", "rl-2"] {
        let r = c
            .call(
                "POST",
                "/v1/ingest/events",
                Some(&ingest),
                Some(line(id)),
                &[],
            )
            .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    let r = c
        .call(
            "POST",
            "/v1/ingest/events",
            Some(&ingest),
            Some(line("rl-3")),
            &[],
        )
        .await;
    assert_eq!(r.status, 429);
    assert!(r.headers.contains_key("retry-after"));
    // At most two unfinished exports per token (no workers here: they stay queued).
    let body = json!({"name": "cap", "from": "2026-03-02", "to": "2026-03-04", "format": "csv"});
    let mut first = None;
    for i in 0..2 {
        let r = c
            .call(
                "POST",
                "/v1/exports",
                Some(&comp),
                Some(body.to_string().into_bytes()),
                &[("idempotency-key", &format!("k{i}"))],
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.message());
        first.get_or_insert(r.json()["id"].as_str().unwrap().to_string());
    }
    let r = c.post("/v1/exports", &comp, &body).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"]["code"], "too_many_exports");
    assert!(
        r.message().contains("limits.concurrent_exports"),
        "{}",
        r.message()
    );
    // A retried request (same idempotency key) still answers its job.
    let r = c
        .call(
            "POST",
            "/v1/exports",
            Some(&comp),
            Some(body.to_string().into_bytes()),
            &[("idempotency-key", "k0")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.message());
    assert_eq!(r.json()["id"], first.clone().unwrap().as_str());
    // Cancelling one frees a place; other tokens were never capped.
    let r = c
        .call(
            "POST",
            &format!("/v1/exports/{}/cancel", first.unwrap()),
            Some(&comp),
            None,
            &[],
        )
        .await;
    assert!(r.status < 300, "{}", r.message());
    assert_eq!(c.post("/v1/exports", &comp, &body).await.status, 201);
    assert_eq!(c.post("/v1/exports", &other, &body).await.status, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_has_the_security_headers_and_slow_requests_get_408() {
    let e = common::env(500, 2);
    evidex(&e.data, &[], &["ingest", e.src.to_str().unwrap()]);
    let admin = token(&e.data, "admin");
    let server = Server::start(&e.data, 0, &[("EVIDEX_LIMITS__REQUEST_TIMEOUT_SECS", "2")]);
    let c = Client::new(&server.base);
    let api = [
        c.get("/v1/exports", &admin).await,
        c.get("/v1/exports", "wrong").await,
        c.get("/v1/nothing-here", &admin).await,
        c.get("/healthz", &admin).await,
    ];
    for r in &api {
        for (name, value) in [
            ("x-content-type-options", "nosniff"),
            ("x-frame-options", "DENY"),
            ("referrer-policy", "no-referrer"),
            (
                "content-security-policy",
                "default-src 'none'; frame-ancestors 'none'",
            ),
            ("cache-control", "no-store"),
        ] {
            assert_eq!(
                r.headers.get(name).map(|v| v.to_str().unwrap()),
                Some(value),
                "{name} on a {} response",
                r.status
            );
        }
        // Plain http here: no HSTS.
        assert!(!r.headers.contains_key("strict-transport-security"));
    }
    // The console keeps its own, stricter policy for pages that run its script.
    let page = c.call("GET", "/sign-in", None, None, &[]).await;
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert_eq!(page.headers["x-frame-options"], "DENY");

    // A long poll is cut short before the timeout: an empty page, not a 408.
    let t = Instant::now();
    let r = c
        .get(
            "/v1/events/stream?wait=60&since=2099-01-01T00:00:00Z",
            &admin,
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());

    // A body that never arrives: 408 in JSON naming the setting.
    let addr = server.base.trim_start_matches("http://").to_string();
    let answer = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        write!(
            s,
            "POST /v1/exports/preview HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {admin}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
        )
        .unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
            if out.windows(4).any(|w| w == b"\r\n\r\n") && out.ends_with(b"}") {
                break;
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("limits.request_timeout_secs"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_running_export_finish_before_exiting() {
    let e = common::env(150_000, 3);
    evidex(&e.data, &[], &["ingest", e.src.to_str().unwrap()]);
    let comp = token(&e.data, "compliance");
    let mut server = Server::start(&e.data, 1, &[]);
    let c = Client::new(&server.base);
    let body = json!({"name": "long", "from": "2026-03-02", "to": "2026-03-04", "format": "json"});
    let id = c.post("/v1/exports", &comp, &body).await.json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let start = Instant::now();
    loop {
        let j = c.get(&format!("/v1/exports/{id}"), &comp).await.json();
        if j["status"] == "processing" {
            break;
        }
        assert_eq!(j["status"], "queued", "{j}");
        assert!(start.elapsed() < Duration::from_secs(60));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = server.child.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = tokio::task::spawn_blocking(move || {
        let s = server.child.wait().unwrap();
        (s, server)
    })
    .await
    .unwrap()
    .0;
    assert!(status.success(), "{status:?}");
    // A server without workers shows what the first one left: the job completed
    // once, not abandoned mid-run to be re-run as a second attempt.
    let after = Server::start(&e.data, 0, &[]);
    let c = Client::new(&after.base);
    let j = c.get(&format!("/v1/exports/{id}"), &comp).await.json();
    assert_eq!(j["status"], "completed", "{j}");
    assert_eq!(j["attempts"], 1, "{j}");
    let dl = c.get(&format!("/v1/exports/{id}/download"), &comp).await;
    assert_eq!(dl.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_still_running_after_the_grace_is_queued_again_for_another_worker() {
    let e = common::env(150_000, 3);
    evidex(&e.data, &[], &["ingest", e.src.to_str().unwrap()]);
    let comp = token(&e.data, "compliance");
    let mut server = Server::start(&e.data, 1, &[("EVIDEX_SERVER__SHUTDOWN_GRACE_SECS", "0")]);
    let c = Client::new(&server.base);
    let body = json!({"name": "long", "from": "2026-03-02", "to": "2026-03-04", "format": "json"});
    let id = c.post("/v1/exports", &comp, &body).await.json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let start = Instant::now();
    loop {
        let j = c.get(&format!("/v1/exports/{id}"), &comp).await.json();
        if j["status"] == "processing" {
            break;
        }
        assert_eq!(j["status"], "queued", "{j}");
        assert!(start.elapsed() < Duration::from_secs(60));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = server.child.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = tokio::task::spawn_blocking(move || {
        let s = server.child.wait().unwrap();
        (s, server)
    })
    .await
    .unwrap()
    .0;
    assert!(status.success(), "{status:?}");
    // Released at once, not held until its lease runs out.
    let idle = Server::start(&e.data, 0, &[]);
    let j = Client::new(&idle.base)
        .get(&format!("/v1/exports/{id}"), &comp)
        .await
        .json();
    assert_eq!(
        (&j["status"], &j["attempts"]),
        (&json!("queued"), &json!(1)),
        "{j}"
    );
    drop(idle);
    // The next worker runs it as attempt 2, and its artifact verifies.
    let next = Server::start(&e.data, 1, &[]);
    let c = Client::new(&next.base);
    let start = Instant::now();
    let j = loop {
        let j = c.get(&format!("/v1/exports/{id}"), &comp).await.json();
        if j["status"] == "completed" {
            break j;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "{j}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(j["attempts"], 2, "{j}");
    let dl = c.get(&format!("/v1/exports/{id}/download"), &comp).await;
    assert_eq!(dl.status, 200);
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&dl.body).unwrap();
    assert_eq!(
        rows.len() as u64,
        j["progress"]["rows_written"].as_u64().unwrap()
    );
}
