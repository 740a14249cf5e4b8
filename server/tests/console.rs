//! The web console end to end, in a real headless chromium against `evidex serve` on
//! loopback: sign in and out, the Create Export wizard (live count equal to `POST
//! /v1/exports/preview`, a rejected field shown beside it, state kept in the URL
//! across a reload), a job turning completed without a reload, its download equal to
//! the API's, what a viewer may not do, the settings pages (delivery tested against
//! `s3s-fs`, webhooks with their secret shown once), a schedule created, edited, run
//! and deleted, and axe-core on every page with a screenshot of each (committed under
//! `docs/screenshots/`).

use std::collections::{BTreeMap, HashMap};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

mod common;
use common::{Browser, Client, Env, S3sFs, Server, env, evidex, token};

/// How long a job may take to turn completed in the page.
const JOB_TIMEOUT: Duration = Duration::from_secs(90);

/// A server over generated data (1 to 4 March 2026), tokens for each console role
/// (each named after its role), the API and a browser.
struct Console {
    browser: Browser,
    api: Client,
    tokens: HashMap<&'static str, String>,
    /// Held so that the server stops with the test.
    server: Server,
    /// The server's export workers, for [`Console::restart`].
    workers: usize,
    e: Env,
}

/// The server setting that lets delivery and webhooks reach this machine (the test
/// S3 server and receivers listen on loopback).
const ALLOW_PRIVATE: &[(&str, &str)] = &[("EVIDEX_NETWORK__ALLOW_PRIVATE_TARGETS", "true")];

impl Console {
    /// `workers` export workers in the server; 0 keeps created jobs queued until a
    /// [`Console::worker`] is started.
    async fn start(workers: usize) -> Console {
        Console::start_with(workers, &[]).await
    }

    /// [`Console::start`] with `envs` set for the server.
    async fn start_with(workers: usize, envs: &[(&str, &str)]) -> Console {
        let e = env(2_000, 4);
        evidex(&e.data, &[], &["ingest", e.src.to_str().unwrap()]);
        let tokens = ["admin", "compliance", "viewer"]
            .into_iter()
            .map(|r| (r, token(&e.data, r)))
            .collect();
        let server = Server::start(&e.data, workers, envs);
        let api = Client::new(&server.base);
        let browser = Browser::start(&server.base).await;
        Console {
            browser,
            api,
            tokens,
            server,
            workers,
            e,
        }
    }

    /// Stops the server and starts another on the same data with `envs`; the API and
    /// the browser follow it to its new port. Sessions live in the store, so a
    /// signed-in browser stays signed in (cookies do not depend on the port).
    fn restart(&mut self, envs: &[(&str, &str)]) {
        self.server.kill();
        self.server = Server::start(&self.e.data, self.workers, envs);
        self.api = Client::new(&self.server.base);
        self.browser.base = self.server.base.clone();
    }

    fn token(&self, role: &str) -> &str {
        &self.tokens[role]
    }

    /// Signs the browser in with `role`'s token through the sign-in form.
    async fn sign_in(&self, role: &str) {
        let b = &self.browser;
        b.goto("/sign-in").await;
        b.type_into("input#token", self.token(role)).await;
        b.click("button#sign-in").await;
        b.wait_for_location(|l| l.starts_with("/exports"), common::BROWSER_WAIT)
            .await;
    }

    /// Creates an export through the API and returns its id.
    async fn create(&self, role: &str, body: &Value) -> String {
        let r = self.api.post("/v1/exports", self.token(role), body).await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        r.json()["id"].as_str().unwrap().to_string()
    }

    /// `POST /v1/exports/preview` of `scope`: its record count.
    async fn preview(&self, scope: &Value) -> u64 {
        let r = self
            .api
            .post("/v1/exports/preview", self.token("compliance"), scope)
            .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.json()["records"].as_u64().unwrap()
    }

    /// A `worker_export` process on the same data; the caller kills it.
    fn worker(&self) -> Child {
        Command::new(env!("CARGO_BIN_EXE_worker_export"))
            .arg("--data")
            .arg(&self.e.data)
            .env_remove("EVIDEX_DATA")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("worker_export starts")
    }

    /// Fetches `path` as the signed-in browser would (with its session cookie).
    async fn fetch_as_browser(&self, path: &str) -> common::Resp {
        let cookie = self.browser.cookie_header().await;
        self.api
            .call("GET", path, None, None, &[("cookie", &cookie)])
            .await
    }

    /// Fills step 1 of the wizard (on `/exports/new`) and goes on with `#next`.
    async fn wizard_step1(&self, name: &str, from: &str, to: &str) {
        let b = &self.browser;
        b.type_into("#name", name).await;
        b.set_value("#from", &[from]).await;
        b.set_value("#to", &[to]).await;
        b.set_value("#timezone", &["Europe/Berlin"]).await;
        b.set_value("#format", &["csv"]).await;
        b.click("button#next").await;
    }
}

/// The API scope the wizard's fields above stand for.
fn scope(name: &str, from: &str, to: &str, decision: &[&str]) -> Value {
    let mut s = json!({"name": name, "from": from, "to": to,
                       "timezone": "Europe/Berlin", "format": "csv"});
    if !decision.is_empty() {
        s["filters"] = json!({ "decision": decision });
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_helper_drives_headless_chromium() {
    // Checks the test harness itself on a page of its own, without the server.
    let dir = tempfile::tempdir().unwrap();
    let b = Browser::start("").await;
    let page = r#"<!doctype html><html lang="en"><head><title>self-check</title></head>
        <body><main><h1 id="h">Hello # there</h1><img src="nothing.png">
        <label for="d">Day</label><input id="d" type="date">
        <label for="s">Pick</label><select id="s" multiple>
        <option value="a">A</option><option value="b">B</option></select></main></body></html>"#;
    b.goto(&data_url(page)).await;
    assert_eq!(b.text("#h").await, "Hello # there");
    assert!(b.try_find("#absent").await.is_none());
    b.set_value("#d", &["2026-03-02"]).await;
    assert_eq!(b.value("#d").await, "2026-03-02");
    b.set_value("#s", &["b"]).await;
    assert_eq!(b.value("#s").await, "b");

    let png = dir.path().join("wide.png");
    b.screenshot_to(&png).await;
    assert_eq!(png_size(&std::fs::read(&png).unwrap()), (1280, 800));
    b.set_size(768, 1024).await;
    b.screenshot_to(&png).await;
    assert_eq!(png_size(&std::fs::read(&png).unwrap()), (768, 1024));

    // The image without alternative text is a critical violation; nothing else is.
    let violations = b.axe().await;
    assert_eq!(violations.len(), 1, "{violations:#?}");
    assert!(violations[0].starts_with("image-alt "), "{violations:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_shows_who_and_sign_out_ends_the_session() {
    let c = Console::start(0).await;
    let b = &c.browser;
    b.goto("/sign-in").await;
    assert_eq!(
        b.attr("input#token", "type").await.as_deref(),
        Some("password")
    );

    // A wrong token keeps the browser on the sign-in page.
    b.type_into("input#token", "evx_not_a_token").await;
    b.click("button#sign-in").await;
    b.find("input#token").await;
    assert!(b.location().await.starts_with("/sign-in"));
    assert!(b.try_find("#whoami").await.is_none());

    c.sign_in("admin").await;
    assert_eq!(b.text("#whoami").await, "admin · admin");
    for nav in [
        "exports",
        "schedules",
        "presets",
        "audit",
        "delivery",
        "webhooks",
        "redaction",
    ] {
        b.find(&format!("#nav-{nav}")).await;
    }
    b.find("#empty").await;
    // The token is in neither the URL nor a cookie: the cookie names a session.
    assert!(!b.location().await.contains(c.token("admin")));
    let cookie = b.cookie_header().await;
    assert!(!cookie.is_empty());
    assert!(!cookie.contains(c.token("admin")), "{cookie}");
    let signed_in = c.fetch_as_browser("/exports").await;
    assert_eq!(signed_in.status, 200);
    assert!(String::from_utf8_lossy(&signed_in.body).contains("whoami"));

    b.click("button#sign-out").await;
    b.wait_for_location(|l| l.starts_with("/sign-in"), common::BROWSER_WAIT)
        .await;
    b.find("input#token").await;
    assert!(b.try_find("#whoami").await.is_none());
    // The old session cookie no longer opens a page.
    let again = c
        .api
        .call("GET", "/exports", None, None, &[("cookie", &cookie)])
        .await;
    assert!(
        !String::from_utf8_lossy(&again.body).contains("whoami"),
        "signed out, the old cookie still opens /exports ({})",
        again.status
    );
    b.goto("/exports").await;
    assert!(b.try_find("table#jobs").await.is_none());
    assert!(b.try_find("#whoami").await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wizard_counts_like_the_preview_and_creates_the_job() {
    let c = Console::start(0).await;
    let b = &c.browser;
    let (from, to) = ("2026-03-02", "2026-03-03");
    let all = c.preview(&scope("Blocked", from, to, &[])).await;
    let blocked = c.preview(&scope("Blocked", from, to, &["block"])).await;
    assert!(0 < blocked && blocked < all, "{blocked} of {all}");

    c.sign_in("compliance").await;
    b.find("#empty").await;
    b.click("a#create-export").await;
    b.wait_for_location(|l| l.starts_with("/exports/new"), common::BROWSER_WAIT)
        .await;
    c.wizard_step1("Blocked", from, to).await;
    b.find("button#submit").await;
    assert!(
        b.location().await.contains("step=2"),
        "{}",
        b.location().await
    );
    let want = all.to_string();
    b.wait_for_text("#count", common::BROWSER_WAIT, |t| t == want)
        .await;
    b.set_value("#decision", &["block"]).await;
    let want = blocked.to_string();
    b.wait_for_text("#count", common::BROWSER_WAIT, |t| t == want)
        .await;

    b.click("button#submit").await;
    b.wait_for_location(is_exports_list, JOB_TIMEOUT).await;
    let list = c.api.get("/v1/exports", c.token("compliance")).await.json();
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{list}");
    let job = &items[0];
    assert_eq!(job["name"], "Blocked");
    assert_eq!(
        (job["from"].as_str(), job["to"].as_str()),
        (Some(from), Some(to))
    );
    assert_eq!(job["timezone"], "Europe/Berlin");
    assert_eq!(job["format"], "csv");
    assert_eq!(job["filters"]["decision"], json!(["block"]), "{job}");
    let id = job["id"].as_str().unwrap();
    b.find(&format!("tr[data-job-id=\"{id}\"]")).await;
    assert!(b.try_find("#empty").await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_date_range_is_shown_beside_the_field_and_nothing_is_lost() {
    let c = Console::start(0).await;
    let b = &c.browser;
    let (from, to) = ("2026-03-04", "2026-03-02");
    let api = c
        .api
        .post(
            "/v1/exports/preview",
            c.token("compliance"),
            &scope("Keep me", from, to, &[]),
        )
        .await;
    assert_eq!(api.status, 400, "{}", String::from_utf8_lossy(&api.body));
    let message = api.message();

    c.sign_in("compliance").await;
    b.goto("/exports/new").await;
    c.wizard_step1("Keep me", from, to).await;
    // The wizard may check the range when leaving step 1 or only on submit (once).
    let start = std::time::Instant::now();
    let mut submitted = false;
    let shown = loop {
        if let Some(t) = date_error(b).await {
            break t;
        }
        if !submitted && let Some(submit) = b.try_find("button#submit").await {
            submit.click().await.unwrap();
            submitted = true;
        }
        assert!(
            start.elapsed() < common::BROWSER_WAIT,
            "no message in #err-from or #err-to on {}:\n{}",
            b.location().await,
            b.body_text().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The API's own words, with or without the field name it starts with.
    let bare = message
        .split_once(": ")
        .map_or(message.as_str(), |(_, m)| m);
    assert!(
        shown.trim() == message || shown.trim() == bare,
        "the page says {shown:?}, the API {message:?}"
    );
    assert_eq!(b.value("#name").await, "Keep me");
    assert_eq!(b.value("#from").await, from);
    assert_eq!(b.value("#to").await, to);
    assert_eq!(b.value("#timezone").await, "Europe/Berlin");
    assert_eq!(b.value("#format").await, "csv");
    let jobs = c.api.get("/v1/exports", c.token("compliance")).await.json();
    assert_eq!(jobs["items"], json!([]), "{jobs}");
}

/// The text of `#err-from` or `#err-to`, whichever says something.
async fn date_error(b: &Browser) -> Option<String> {
    for css in ["#err-from", "#err-to"] {
        if let Some(e) = b.try_find(css).await
            && let Ok(t) = e.text().await
            && !t.trim().is_empty()
        {
            return Some(t);
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_of_the_wizard_keeps_its_state() {
    let c = Console::start(0).await;
    let b = &c.browser;
    let (from, to) = ("2026-03-01", "2026-03-02");
    let blocked = c
        .preview(&scope("Reloaded", from, to, &["block"]))
        .await
        .to_string();
    c.sign_in("compliance").await;
    b.goto("/exports/new").await;
    c.wizard_step1("Reloaded", from, to).await;
    b.find("button#submit").await;
    b.set_value("#decision", &["block"]).await;
    b.wait_for_text("#count", common::BROWSER_WAIT, |t| t == blocked)
        .await;
    let before = b.location().await;
    assert!(before.contains("step=2"), "{before}");

    b.client.refresh().await.unwrap();
    b.find("button#submit").await;
    assert_eq!(b.location().await, before);
    assert_eq!(selected(b, "#decision").await, ["block"]);
    b.wait_for_text("#count", common::BROWSER_WAIT, |t| t == blocked)
        .await;
    // Opening the same URL afresh is the same as a reload.
    b.goto(&before).await;
    assert_eq!(selected(b, "#decision").await, ["block"]);

    // What step 1 held survived too: the job has it.
    b.click("button#submit").await;
    b.wait_for_location(is_exports_list, JOB_TIMEOUT).await;
    let list = c.api.get("/v1/exports", c.token("compliance")).await.json();
    let job = &list["items"][0];
    assert_eq!(job["name"], "Reloaded", "{list}");
    assert_eq!(
        (job["from"].as_str(), job["to"].as_str()),
        (Some(from), Some(to))
    );
    assert_eq!(job["timezone"], "Europe/Berlin");
    assert_eq!(job["filters"]["decision"], json!(["block"]), "{job}");
}

/// The values of the selected options of a `<select>`.
async fn selected(b: &Browser, css: &str) -> Vec<String> {
    let el = b.find(css).await;
    let r = b
        .client
        .execute(
            "return [...arguments[0].selectedOptions].map(o => o.value);",
            vec![serde_json::to_value(&el).unwrap()],
        )
        .await
        .unwrap();
    serde_json::from_value(r).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_completes_in_the_table_without_a_reload_and_downloads_like_the_api() {
    let c = Console::start(0).await;
    let b = &c.browser;
    let id = c
        .create(
            "compliance",
            &scope("Live", "2026-03-01", "2026-03-04", &[]),
        )
        .await;
    c.sign_in("compliance").await;
    let status = format!("tr[data-job-id=\"{id}\"] td.status");
    assert!(is(&b.text(&status).await, "queued"));
    assert!(
        b.try_find(&format!("tr[data-job-id=\"{id}\"] a.download"))
            .await
            .is_none()
    );
    // A mark in the page's JavaScript state disappears if the page is reloaded.
    b.client
        .execute("window.__notReloaded = true;", vec![])
        .await
        .unwrap();

    let mut worker = c.worker();
    b.wait_for_text(&status, JOB_TIMEOUT, |t| is(t, "completed"))
        .await;
    let kept = b
        .client
        .execute("return window.__notReloaded === true;", vec![])
        .await
        .unwrap();
    let _ = worker.kill();
    let _ = worker.wait();
    assert_eq!(kept, json!(true), "the page was reloaded");

    let link = b
        .find(&format!("tr[data-job-id=\"{id}\"] a.download"))
        .await
        .attr("href")
        .await
        .unwrap()
        .expect("a.download has an href");
    let path = format!("/v1/exports/{id}/download");
    assert!(link.ends_with(&path), "{link}");
    let api = c.api.get(&path, c.token("compliance")).await;
    assert_eq!(api.status, 200);
    let mine = c.fetch_as_browser(&link).await;
    assert_eq!(mine.status, 200, "{}", String::from_utf8_lossy(&mine.body));
    assert!(mine.body == api.body, "the console's download differs");

    // The detail page agrees.
    b.goto(&format!("/exports/{id}")).await;
    assert!(is(&b.text("#status").await, "completed"));
    assert!(
        b.attr("a#download", "href")
            .await
            .is_some_and(|h| h.ends_with(&path))
    );
    assert!(b.try_find("button#cancel").await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_job_is_cancelled_from_its_page() {
    let c = Console::start(0).await;
    let b = &c.browser;
    let id = c
        .create(
            "compliance",
            &scope("Stop", "2026-03-01", "2026-03-04", &[]),
        )
        .await;
    c.sign_in("compliance").await;
    b.goto(&format!("/exports/{id}")).await;
    assert!(is(&b.text("#status").await, "queued"));
    b.click("button#cancel").await;
    // A confirmation dialog, if the page asks for one, is accepted.
    let _ = b.client.accept_alert().await;
    b.wait_for_text("#status", common::BROWSER_WAIT, |t| is(t, "cancelled"))
        .await;
    let job = c
        .api
        .get(&format!("/v1/exports/{id}"), c.token("compliance"))
        .await
        .json();
    assert_eq!(job["status"], "cancelled", "{job}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_sees_no_create_button_and_cannot_open_the_wizard() {
    let c = Console::start(0).await;
    let b = &c.browser;
    let id = c
        .create(
            "compliance",
            &scope("Seen", "2026-03-01", "2026-03-02", &[]),
        )
        .await;
    c.sign_in("viewer").await;
    assert_eq!(b.text("#whoami").await, "viewer · viewer");
    b.find(&format!("tr[data-job-id=\"{id}\"]")).await;
    assert!(b.try_find("a#create-export").await.is_none());

    b.goto("/exports/new").await;
    assert!(b.try_find("#name").await.is_none());
    assert!(b.try_find("button#next").await.is_none());
    assert!(!b.body_text().await.trim().is_empty());
    assert_eq!(c.fetch_as_browser("/exports/new").await.status, 403);
    assert_eq!(c.fetch_as_browser("/exports/new?step=2").await.status, 403);

    // The same pages answer a compliance officer: the 403 is about the role.
    b.goto("/exports").await;
    b.click("button#sign-out").await;
    b.wait_for_location(|l| l.starts_with("/sign-in"), common::BROWSER_WAIT)
        .await;
    c.sign_in("compliance").await;
    b.find("a#create-export").await;
    assert_eq!(c.fetch_as_browser("/exports/new").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_passes_axe_and_is_screenshotted() {
    let c = Console::start(1).await;
    let b = &c.browser;
    let id = c
        .create(
            "compliance",
            &scope("Q1 evidence", "2026-03-01", "2026-03-04", &["block"]),
        )
        .await;
    let job = c.api.wait(&id, c.token("compliance"), JOB_TIMEOUT).await;
    assert_eq!(job["status"], "completed", "{job}");

    let mut violations = Vec::new();
    b.goto("/sign-in").await;
    b.find("input#token").await;
    violations.extend(check_page(b, "sign-in").await);

    c.sign_in("admin").await;
    b.find(&format!("tr[data-job-id=\"{id}\"]")).await;
    violations.extend(check_page(b, "exports").await);
    b.goto("/exports/new").await;
    violations.extend(check_page(b, "export-new").await);
    c.wizard_step1("Q2 evidence", "2026-03-01", "2026-03-04")
        .await;
    b.find("button#submit").await;
    b.set_value("#decision", &["block", "escalate"]).await;
    b.wait_for_text("#count", common::BROWSER_WAIT, |t| {
        !t.is_empty() && t.bytes().all(|c| c.is_ascii_digit())
    })
    .await;
    violations.extend(check_page(b, "export-new-filters").await);

    for (path, name) in [
        (&format!("/exports/{id}") as &str, "export-detail"),
        ("/schedules", "schedules"),
        ("/presets", "presets"),
        ("/audit", "audit"),
        ("/settings/delivery", "settings-delivery"),
        ("/settings/webhooks", "settings-webhooks"),
        ("/settings/redaction", "settings-redaction"),
    ] {
        assert_eq!(c.fetch_as_browser(path).await.status, 200, "{path}");
        b.goto(path).await;
        b.find("#whoami").await;
        violations.extend(check_page(b, name).await);
    }

    b.set_size(768, 1024).await;
    b.goto("/exports").await;
    b.find(&format!("tr[data-job-id=\"{id}\"]")).await;
    violations.extend(check_page(b, "exports-768").await);
    assert!(
        violations.is_empty(),
        "serious or critical accessibility violations:\n{}",
        violations.join("\n")
    );
}

/// Screenshots the current page as `docs/screenshots/{name}.png` and returns its
/// serious and critical axe violations, each prefixed with the page's name.
async fn check_page(b: &Browser, name: &str) -> Vec<String> {
    // Let the page's script finish its first requests, so the picture shows data
    // rather than loading states.
    tokio::time::sleep(Duration::from_millis(500)).await;
    b.screenshot(name).await;
    b.axe()
        .await
        .into_iter()
        .map(|v| format!("{name}: {v}"))
        .collect()
}

/// Whether the page is the exports list (possibly filtered).
fn is_exports_list(location: &str) -> bool {
    location == "/exports" || location.starts_with("/exports?")
}

/// Whether a status shown on a page is `status` (a stylesheet may capitalise it).
fn is(shown: &str, status: &str) -> bool {
    shown.trim().eq_ignore_ascii_case(status)
}

/// A `data:` URL of an HTML page.
fn data_url(html: &str) -> String {
    let mut url = "data:text/html;charset=utf-8,".to_string();
    for b in html.bytes() {
        if b.is_ascii_alphanumeric() || b" <>=/\"'.-!".contains(&b) {
            url.push(b as char);
        } else {
            url.push_str(&format!("%{b:02X}"));
        }
    }
    url
}

/// Width and height of a PNG, from its IHDR chunk.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let be = |i: usize| u32::from_be_bytes(png[i..i + 4].try_into().unwrap());
    (be(16), be(20))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_settings_are_tested_against_s3s_fs_and_saved_with_a_write_only_secret() {
    let c = Console::start_with(0, ALLOW_PRIVATE).await;
    let b = &c.browser;
    let s3 = S3sFs::start(&c.e.dir.path().join("s3root"), &["evidence-bucket"]);
    let admin = c.token("admin");
    c.sign_in("admin").await;
    b.goto("/settings/delivery").await;
    b.type_into("#d-bucket", "evidence-bucket").await;
    b.type_into("#d-region", "us-east-1").await;
    b.type_into("#d-endpoint", &s3.endpoint()).await;
    b.type_into("#d-prefix", "evidence/").await;
    b.type_into("#d-ak", S3sFs::ACCESS_KEY).await;
    b.type_into("#d-sk", S3sFs::SECRET_KEY).await;
    b.set_checked(r#"input[name="path_style"]"#, true).await;
    b.set_checked(r#"input[name="enabled"]"#, true).await;

    // Test connection before saving: every step passes, and nothing is saved.
    b.click("button#test-connection").await;
    let steps = test_steps(b).await;
    for s in ["resolve", "connect", "bucket", "write", "read", "delete"] {
        assert_eq!(step_status(&steps, s), "ok", "{s}: {steps:#?}");
    }
    assert_eq!(
        step_status(&steps, "tls"),
        "skipped",
        "plain http: {steps:#?}"
    );
    let supports = b.text("#test-supports").await;
    assert!(supports.starts_with("All steps passed."), "{supports}");
    assert!(supports.contains("Conditional create: "), "{supports}");
    assert_eq!(
        c.api.get("/v1/settings/delivery", admin).await.json()["configured"],
        false
    );
    b.scroll_to("#test-result").await;
    assert_accessible(b, "settings-delivery-tested").await;

    b.click("button#save-delivery").await;
    b.wait_for_text("#delivery-form [data-ok]", common::BROWSER_WAIT, |t| {
        t == "Saved."
    })
    .await;
    assert_eq!(b.text("#delivery-form [data-error]").await, "");
    let saved = c.api.get("/v1/settings/delivery", admin).await;
    let v = saved.json();
    assert_eq!(v["bucket"], "evidence-bucket", "{v}");
    assert_eq!(v["endpoint"], s3.endpoint(), "{v}");
    assert_eq!(v["prefix"], "evidence/", "{v}");
    assert_eq!(v["access_key_id"], S3sFs::ACCESS_KEY, "{v}");
    assert_eq!(v["path_style"], true, "{v}");
    assert_eq!(v["enabled"], true, "{v}");
    assert_eq!(v["secret_access_key_set"], true, "{v}");
    assert!(!String::from_utf8_lossy(&saved.body).contains(S3sFs::SECRET_KEY));

    // After a reload the form shows what was saved, except the secret.
    b.client.refresh().await.unwrap();
    assert_eq!(b.value("#d-bucket").await, "evidence-bucket");
    assert_eq!(b.value("#d-endpoint").await, s3.endpoint());
    assert_eq!(b.value("#d-prefix").await, "evidence/");
    assert_eq!(b.value("#d-ak").await, S3sFs::ACCESS_KEY);
    assert!(b.is_checked(r#"input[name="path_style"]"#).await);
    assert_eq!(b.value("#d-sk").await, "");
    let placeholder = b.attr("#d-sk", "placeholder").await.unwrap_or_default();
    assert!(placeholder.contains("stored"), "{placeholder:?}");
    let page = c.fetch_as_browser("/settings/delivery").await;
    assert!(!String::from_utf8_lossy(&page.body).contains(S3sFs::SECRET_KEY));

    // A wrong secret fails at the bucket step, as credentials, and the later steps
    // are not run.
    b.type_into("#d-sk", "wrong-secret").await;
    b.click("button#test-connection").await;
    let steps = test_steps(b).await;
    assert_eq!(step_status(&steps, "resolve"), "ok", "{steps:#?}");
    assert_eq!(step_status(&steps, "bucket"), "failed", "{steps:#?}");
    assert!(steps["bucket"].1.contains("credentials"), "{steps:#?}");
    assert_eq!(step_status(&steps, "write"), "skipped", "{steps:#?}");
    let supports = b.text("#test-supports").await;
    assert!(supports.starts_with("A step failed."), "{supports}");
    // Testing saved nothing: the stored secret is still the good one.
    let rep = c
        .api
        .call(
            "POST",
            "/v1/settings/delivery/test",
            Some(admin),
            Some(Vec::new()),
            &[],
        )
        .await
        .json();
    assert_eq!(rep["ok"], true, "{rep}");
}

/// The Test connection result on the delivery page, once it is shown: each step's
/// name with its status (`ok`, `failed` or `skipped`, from the `step` item's class)
/// and its text.
async fn test_steps(b: &Browser) -> BTreeMap<String, (String, String)> {
    // The steps are drawn all at once, so the first one means all of them.
    b.wait_for("ol#test-steps li[data-step]", Duration::from_secs(60))
        .await;
    let mut out = BTreeMap::new();
    for li in b.find_all("ol#test-steps li[data-step]").await {
        let step = li.attr("data-step").await.unwrap().unwrap_or_default();
        let class = li.attr("class").await.unwrap().unwrap_or_default();
        let classes: Vec<&str> = class.split_whitespace().collect();
        assert!(classes.contains(&"step"), "{step}: class {class:?}");
        let status = ["ok", "failed", "skipped"]
            .into_iter()
            .find(|s| classes.contains(s))
            .unwrap_or("")
            .to_string();
        out.insert(step, (status, li.text().await.unwrap_or_default()));
    }
    out
}

/// The status of `step` in [`test_steps`]' result; fails the test when it is absent.
fn step_status<'a>(steps: &'a BTreeMap<String, (String, String)>, step: &str) -> &'a str {
    match steps.get(step) {
        Some((status, _)) => status,
        None => panic!("no step {step} in {steps:#?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_is_added_with_its_secret_shown_once_and_a_refused_url_shows_why() {
    let mut c = Console::start(0).await;
    let admin = c.token("admin").to_string();
    let hook = "http://localhost:9/hook";
    let refused = c
        .api
        .post(
            "/v1/webhooks",
            &admin,
            &json!({"url": hook, "events": ["export.completed"]}),
        )
        .await;
    assert_eq!(
        refused.status,
        400,
        "{}",
        String::from_utf8_lossy(&refused.body)
    );
    let message = refused.message();
    assert!(message.contains("allow_private_targets"), "{message}");

    // Without network.allow_private_targets, the page shows the API's refusal and
    // keeps what was typed.
    c.sign_in("admin").await;
    {
        let b = &c.browser;
        b.goto("/settings/webhooks").await;
        b.find("#empty").await;
        b.type_into("#w-url", hook).await;
        b.type_into("#w-desc", "SIEM").await;
        b.click("button#add-webhook").await;
        let shown = b
            .wait_for_text("#webhook-form [data-error]", common::BROWSER_WAIT, |t| {
                !t.trim().is_empty()
            })
            .await;
        assert_eq!(shown.trim(), message);
        assert!(!b.find("#secret-once").await.is_displayed().await.unwrap());
        assert_eq!(b.value("#w-url").await, hook);
        assert_eq!(b.value("#w-desc").await, "SIEM");
    }
    let list = c.api.get("/v1/webhooks", &admin).await.json();
    assert_eq!(list["items"], json!([]), "{list}");

    // With it, the webhook is added and its secret shown once.
    c.restart(ALLOW_PRIVATE);
    let b = &c.browser;
    b.goto("/settings/webhooks").await;
    assert_eq!(b.text("#whoami").await, "admin · admin");
    b.type_into("#w-url", hook).await;
    b.type_into("#w-desc", "SIEM").await;
    b.set_checked(r#"input[name="events"][value="export.failed"]"#, false)
        .await;
    b.click("button#add-webhook").await;
    let secret = b
        .wait_for_text("#secret-value", common::BROWSER_WAIT, |t| {
            t.starts_with("whsec_")
        })
        .await;
    assert!(b.find("#secret-once").await.is_displayed().await.unwrap());
    assert_eq!(b.text("#webhook-form [data-error]").await, "");
    b.scroll_to("#secret-once").await;
    assert_accessible(b, "settings-webhooks-added").await;
    let list = c.api.get("/v1/webhooks", &admin).await.json();
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{list}");
    assert_eq!(items[0]["url"], hook);
    assert_eq!(
        items[0]["events"],
        json!(["export.completed", "export.delivered"])
    );
    assert_eq!(items[0]["description"], "SIEM");

    // After a reload the table lists it, and the secret is gone for good.
    b.client.refresh().await.unwrap();
    let table = b.text("table#webhooks").await;
    assert!(table.contains(hook), "{table}");
    assert!(!b.body_text().await.contains(&secret));
    assert!(
        !String::from_utf8_lossy(&c.fetch_as_browser("/settings/webhooks").await.body)
            .contains(&secret)
    );

    // Remove, after a confirmation.
    b.click(r#"table#webhooks button[data-api-click^="DELETE"]"#)
        .await;
    let asked = b.accept_dialog(common::BROWSER_WAIT).await;
    assert!(asked.contains(hook), "{asked}");
    b.find("#empty").await;
    let list = c.api.get("/v1/webhooks", &admin).await.json();
    assert_eq!(list["items"], json!([]), "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_is_created_edited_run_and_deleted() {
    let c = Console::start(0).await;
    let b = &c.browser;
    let token = c.token("compliance");
    c.sign_in("compliance").await;
    b.goto("/schedules").await;
    b.find("#empty").await;
    b.type_into("#s-name", "SOC2").await;
    b.set_value("#s-kind", &["quarterly"]).await;
    b.type_into("#s-tz", "Europe/Berlin").await;
    b.type_into("#s-export", r#"{"format":"csv"}"#).await;
    b.click(r#"#schedule-form button[type="submit"]"#).await;
    let id = b
        .find("table#schedules tr[data-schedule-id]")
        .await
        .attr("data-schedule-id")
        .await
        .unwrap()
        .expect("a schedule id");
    let v = c
        .api
        .get(&format!("/v1/schedules/{id}"), token)
        .await
        .json();
    assert_eq!(v["name"], "SOC2", "{v}");
    assert_eq!(v["kind"], "quarterly", "{v}");
    assert_eq!(v["timezone"], "Europe/Berlin", "{v}");
    assert_eq!(v["name_template"], "{name}-{period}", "{v}");
    assert_eq!(v["export"]["format"], "csv", "{v}");

    // Its own page: the next three runs (those of the API) and the form, prefilled.
    let detail = format!("/schedules/{id}");
    b.click(&format!(r#"tr[data-schedule-id="{id}"] a.schedule-link"#))
        .await;
    b.wait_for_location(|l| l == detail, common::BROWSER_WAIT)
        .await;
    let runs = next_runs(b).await;
    let want: Vec<String> = v["next_runs"]
        .as_array()
        .expect("next_runs")
        .iter()
        .take(3)
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    assert_eq!(want.len(), 3, "{v}");
    assert_eq!(runs, want);
    assert_eq!(b.value("#s-name").await, "SOC2");
    assert_eq!(b.value("#s-kind").await, "quarterly");
    assert_eq!(b.value("#s-tz").await, "Europe/Berlin");
    assert_eq!(b.value("#s-template").await, "{name}-{period}");
    // The export parameters are form fields; only what has none goes in the JSON box.
    assert_eq!(b.value("#s-format").await, "csv");
    assert_eq!(b.value("#s-export").await, "");
    // The form says in words what the schedule does, with the next periods' names.
    let said = b
        .wait_for_text("#schedule-preview", Duration::from_secs(10), |t| {
            t.contains("quarter")
        })
        .await;
    assert!(
        said.contains("Europe/Berlin") && said.contains("SOC2-2026-Q4"),
        "{said}"
    );

    // Edit: PUT, "Saved.", and the change survives a reload.
    b.type_into("#s-template", "{period}-{name}").await;
    b.click(r#"#schedule-form button[type="submit"]"#).await;
    b.wait_for_text("#schedule-form [data-ok]", common::BROWSER_WAIT, |t| {
        t == "Saved."
    })
    .await;
    let v = c
        .api
        .get(&format!("/v1/schedules/{id}"), token)
        .await
        .json();
    assert_eq!(v["name_template"], "{period}-{name}", "{v}");
    assert_eq!(v["kind"], "quarterly", "{v}");
    assert_eq!(v["timezone"], "Europe/Berlin", "{v}");
    assert_eq!(v["export"]["format"], "csv", "{v}");
    b.client.refresh().await.unwrap();
    assert_eq!(b.value("#s-template").await, "{period}-{name}");

    // Run now: the latest quarter that ended in Berlin, named by the new template.
    let period = last_ended_quarter(chrono_tz::Europe::Berlin);
    b.click("button[data-run-schedule]").await;
    b.wait_for_location(
        |l| l.starts_with("/exports/") && !l.starts_with("/exports/new"),
        common::BROWSER_WAIT,
    )
    .await;
    let job_id = b.location().await["/exports/".len()..].to_string();
    b.find("#status").await;
    let job = c
        .api
        .get(&format!("/v1/exports/{job_id}"), token)
        .await
        .json();
    assert_eq!(job["period"], period.as_str(), "{job}");
    assert_eq!(job["name"], format!("{period}-SOC2").as_str(), "{job}");
    assert_eq!(job["schedule_id"], id.as_str(), "{job}");

    // Back on the schedule's page, its history lists that period with its export.
    b.goto(&detail).await;
    let link = format!(r#"table#history a[href$="/exports/{job_id}"]"#);
    b.find(&link).await;
    let mut periods = Vec::new();
    for tr in b.find_all("table#history tbody tr").await {
        let text = tr.text().await.unwrap();
        if text.contains(&job_id) {
            periods.push(text);
        }
    }
    assert!(
        periods.len() == 1 && periods[0].contains(&period),
        "{periods:?}"
    );
    assert_accessible(b, "schedule-detail").await;

    // Delete, after a confirmation: back at the list, without it; its export stays.
    b.click("button[data-delete-schedule]").await;
    let asked = b.accept_dialog(common::BROWSER_WAIT).await;
    assert!(asked.contains("SOC2"), "{asked}");
    b.wait_for_location(|l| l == "/schedules", common::BROWSER_WAIT)
        .await;
    b.find("#empty").await;
    assert!(
        b.try_find(&format!(r#"tr[data-schedule-id="{id}"]"#))
            .await
            .is_none()
    );
    assert_eq!(
        c.api
            .get(&format!("/v1/schedules/{id}"), token)
            .await
            .status,
        404
    );
    assert_eq!(
        c.api
            .get(&format!("/v1/exports/{job_id}"), token)
            .await
            .status,
        200
    );
}

/// The next run times on a schedule's page: the `datetime` of each `ul#next-runs li`'s
/// `time` (the page's script rewrites the text in the browser's timezone), or the
/// item's text when it has none.
async fn next_runs(b: &Browser) -> Vec<String> {
    b.find("ul#next-runs").await;
    let mut out = Vec::new();
    for li in b.find_all("ul#next-runs li").await {
        let t = match li.find(fantoccini::Locator::Css("time[datetime]")).await {
            Ok(time) => time.attr("datetime").await.unwrap().unwrap_or_default(),
            Err(_) => li.text().await.unwrap(),
        };
        out.push(t.trim().to_string());
    }
    out
}

/// The label (`2026-Q3`) of the latest calendar quarter that has ended in `tz`, which
/// is what "Run now" of a quarterly schedule without runs queues.
#[allow(
    clippy::disallowed_methods,
    reason = "the server under test runs on the wall clock, so the expected period follows it"
)]
fn last_ended_quarter(tz: chrono_tz::Tz) -> String {
    use chrono::Datelike;
    let now = chrono::Utc::now().with_timezone(&tz);
    match now.month0() / 3 {
        0 => format!("{}-Q4", now.year() - 1),
        q => format!("{}-Q{q}", now.year()),
    }
}

/// [`check_page`], failing the test on any serious or critical violation.
async fn assert_accessible(b: &Browser, name: &str) {
    let violations = check_page(b, name).await;
    assert!(
        violations.is_empty(),
        "serious or critical accessibility violations:\n{}",
        violations.join("\n")
    );
}

/// A job that is running (a SQL definition slow enough to be caught while it
/// processes) is cancelled from its page: the worker stops and the page says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_job_is_cancelled_from_its_page() {
    let c = Console::start(1).await;
    let b = &c.browser;
    // Every pair of events of a week: millions of rows, minutes of work here.
    let mut body = scope("Long", "2026-01-01", "2026-03-04", &[]);
    body["sql"] = json!("SELECT a.id AS a, b.id AS b FROM events a CROSS JOIN events b");
    let id = c.create("compliance", &body).await;
    let start = std::time::Instant::now();
    loop {
        let j = c
            .api
            .get(&format!("/v1/exports/{id}"), c.token("compliance"))
            .await
            .json();
        if j["status"] == "processing" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60) && j["status"] == "queued",
            "{j}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.sign_in("compliance").await;
    b.goto(&format!("/exports/{id}")).await;
    assert!(is(&b.text("#status").await, "processing"));
    b.click("button#cancel").await;
    let _ = b.client.accept_alert().await;
    b.wait_for_text("#status", Duration::from_secs(30), |t| is(t, "cancelled"))
        .await;
    let job = c
        .api
        .get(&format!("/v1/exports/{id}"), c.token("compliance"))
        .await
        .json();
    assert_eq!(job["status"], "cancelled", "{job}");
}

/// Redaction settings as a form: a pattern the server cannot compile is refused with
/// its reason and nothing is saved; a good one is saved and used by the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redaction_rules_are_edited_and_checked() {
    let c = Console::start(0).await;
    let b = &c.browser;
    c.sign_in("admin").await;
    b.goto("/settings/redaction").await;
    b.type_into("#custom", "broken: (unclosed").await;
    b.click("#save-redaction").await;
    let err = b
        .wait_for_text(
            "#redaction-form [data-error]",
            Duration::from_secs(10),
            |t| !t.is_empty(),
        )
        .await;
    assert!(
        err.contains("custom") && err.contains("unclosed group"),
        "{err}"
    );
    let before = c
        .api
        .get("/v1/settings/redaction", c.token("admin"))
        .await
        .json();
    assert!(
        before["rules"]["custom"].as_array().unwrap().is_empty(),
        "{before}"
    );
    b.type_into("#custom", "ticket: TCK-[0-9]{6}").await;
    b.type_into("#fields", "consumer").await;
    b.click("#save-redaction").await;
    b.wait_for_text("#redaction-form [data-ok]", Duration::from_secs(10), |t| {
        t.contains("Saved")
    })
    .await;
    let after = c
        .api
        .get("/v1/settings/redaction", c.token("admin"))
        .await
        .json();
    assert_eq!(after["rules"]["custom"][0]["name"], "ticket", "{after}");
    assert_eq!(
        after["rules"]["custom"][0]["pattern"], "TCK-[0-9]{6}",
        "{after}"
    );
    assert_eq!(after["rules"]["fields"][0], "consumer", "{after}");
    // The page shows what is stored after a reload.
    b.goto("/settings/redaction").await;
    assert!(b.value("#custom").await.contains("ticket: TCK-[0-9]{6}"));
    assert!(b.axe().await.is_empty());
}
