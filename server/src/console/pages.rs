//! The console's pages: each reads what it shows from the store and renders a
//! template; changes go through `console.js` to the `/v1` API (so the console checks
//! and audits exactly what the API does), except sign-in and sign-out.

use std::sync::Arc;

use axum::extract::{Extension, Form, Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::context;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{COOKIE, Session, render, require};
use crate::service::{Catalog, Service};
use crate::store::Role;

pub(super) const READ: &[Role] = &[Role::Admin, Role::Compliance, Role::Viewer];
pub(super) const WRITE: &[Role] = &[Role::Admin, Role::Compliance];
pub(super) const ADMIN: &[Role] = &[Role::Admin];

type S = State<Arc<Service>>;
type Sess = Option<Extension<Session>>;

fn sess(s: &Sess) -> Option<&Session> {
    s.as_ref().map(|e| &e.0)
}

fn internal(e: anyhow::Error) -> Response {
    tracing::error!("console: {e:#}");
    (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
}

/// The web console's start page.
#[utoipa::path(get, path = "/",
    responses((status = 303, description = "To `/exports` with a console session, else to `/sign-in`")))]
pub(crate) async fn home(session: Sess) -> Response {
    match sess(&session) {
        Some(_) => Redirect::to("/exports").into_response(),
        None => Redirect::to("/sign-in").into_response(),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct NextQuery {
    #[serde(default)]
    next: Option<String>,
}

/// Only a path of this site: `/x`, never `//host` or a scheme.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_string(),
        _ => "/exports".to_string(),
    }
}

pub(super) async fn sign_in_page(session: Sess, Query(q): Query<NextQuery>) -> Response {
    if sess(&session).is_some() {
        return Redirect::to(&safe_next(q.next.as_deref())).into_response();
    }
    render(
        "sign_in.html",
        None,
        context! { next => safe_next(q.next.as_deref()), error => None::<String> },
        StatusCode::OK,
    )
}

#[derive(Debug, Deserialize)]
pub(super) struct SignInForm {
    token: String,
    #[serde(default)]
    next: Option<String>,
}

/// Whether a form post comes from this site: an `Origin` header, when the browser
/// sends one, must name the host the request was sent to (login CSRF: another site
/// must not sign a visitor in with its own token).
fn same_origin(headers: &HeaderMap, public_url: Option<&str>) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    // Behind a proxy that rewrites Host, the configured public URL is this site.
    if public_url.is_some_and(|p| p.trim_end_matches('/').eq_ignore_ascii_case(origin)) {
        return true;
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    url::Url::parse(origin).is_ok_and(|u| {
        let o = match u.port() {
            Some(p) => format!("{}:{p}", u.host_str().unwrap_or_default()),
            None => u.host_str().unwrap_or_default().to_string(),
        };
        o.eq_ignore_ascii_case(host)
    })
}

pub(super) async fn sign_in(
    State(s): S,
    headers: HeaderMap,
    Form(f): Form<SignInForm>,
) -> Response {
    if !same_origin(&headers, s.config.server.public_url.as_deref()) {
        return (
            StatusCode::FORBIDDEN,
            "sign-in must come from this site's own form",
        )
            .into_response();
    }
    let next = safe_next(f.next.as_deref());
    let principal = match s.store.authenticate(f.token.trim(), s.now_ms()) {
        Ok(p) => p,
        Err(e) => return internal(e),
    };
    let Some(p) = principal.filter(|p| !matches!(p.role, Role::Ingest | Role::Siem)) else {
        return render(
            "sign_in.html",
            None,
            context! { next => next, error => "This token is not valid for the console (unknown, revoked, expired, or an ingest-only or siem token)." },
            StatusCode::UNAUTHORIZED,
        );
    };
    let now = s.now_ms();
    let (id, _) = match s.store.create_session(&p.token_id, now) {
        Ok(x) => x,
        Err(e) => return internal(e),
    };
    if let Err(e) = s
        .store
        .audit(now, &p.actor(), "console.signed_in", None, None)
    {
        return internal(e);
    }
    let secure = s
        .config
        .server
        .public_url
        .as_deref()
        .is_some_and(|u| u.starts_with("https://"));
    // No Max-Age or Expires: a session cookie, gone when the browser session ends.
    let cookie = format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    );
    (
        StatusCode::SEE_OTHER,
        [(header::SET_COOKIE, cookie), (header::LOCATION, next)],
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
pub(super) struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

pub(super) async fn sign_out(
    State(s): S,
    session: Sess,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Some(sn) = sess(&session) {
        if sn.csrf != f.csrf {
            return (
                StatusCode::FORBIDDEN,
                "the form's CSRF token does not match",
            )
                .into_response();
        }
        if let Some(id) = super::cookie(&headers, COOKIE) {
            let _ = s.store.delete_session(&id);
        }
    }
    (
        StatusCode::SEE_OTHER,
        [
            (
                header::SET_COOKIE,
                format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
            ),
            (header::LOCATION, "/sign-in".to_string()),
        ],
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
pub(super) struct ExportsQuery {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    q: Option<String>,
    #[serde(default)]
    before: Option<String>,
}

const PAGE: usize = 25;

/// One job as the tables show it.
fn job_row(j: &crate::store::Job) -> Value {
    let v = j.to_json();
    json!({
        "id": j.id, "name": j.name, "status": j.status, "error": j.error,
        "format": v["format"], "from": local(&v["from"], &v["timezone"]),
        "to": local(&v["to"], &v["timezone"]), "timezone": v["timezone"],
        "rows": j.rows_written, "percent": v["progress"]["percent"],
        "bytes": j.artifact.as_ref().and_then(|a| a["bytes"].as_u64()),
        "size": j.artifact.as_ref().and_then(|a| a["bytes"].as_u64()).map(human_bytes),
        "created_by": j.created_by, "created_at": j.created_at,
        "expires_at": j.artifact.as_ref().and_then(|a| a["expires_at"].as_str().map(str::to_string)),
        "period": j.period, "schedule_id": j.schedule_id, "delivery": j.delivery,
    })
}

/// An instant bound (`2026-06-30T22:00:00Z`) shown in the export's timezone
/// (`2026-07-01 00:00`); day bounds stay as they are.
fn local(v: &Value, tz: &Value) -> Value {
    if let (Some(t), Some(tz)) = (v.as_str(), tz.as_str())
        && t.contains('T')
        && let Ok(d) = chrono::DateTime::parse_from_rfc3339(t)
        && let Ok(z) = tz.parse::<chrono_tz::Tz>()
    {
        return json!(d.with_timezone(&z).format("%Y-%m-%d %H:%M").to_string());
    }
    v.clone()
}

fn human_bytes(b: u64) -> String {
    const U: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1000.0 && i < U.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

pub(super) async fn exports(State(s): S, session: Sess, Query(q): Query<ExportsQuery>) -> Response {
    let sn = match require(sess(&session), READ, "/exports") {
        Ok(x) => x,
        Err(r) => return r,
    };
    let status = q.status.as_deref().filter(|s| {
        [
            "queued",
            "processing",
            "completed",
            "failed",
            "cancelled",
            "expired",
        ]
        .contains(s)
    });
    let text = q.q.as_deref().map(str::trim).filter(|t| !t.is_empty());
    let before = q.before.as_deref().filter(|b| b.starts_with("exp_"));
    // A text filter is applied to a larger window so a page still fills up.
    let window = if text.is_some() {
        2000
    } else {
        PAGE as i64 + 1
    };
    let jobs = match s.store.jobs(status, window, before) {
        Ok(j) => j,
        Err(e) => return internal(e),
    };
    let needle = text.map(str::to_lowercase);
    let mut rows: Vec<_> = jobs
        .iter()
        .filter(|j| {
            needle.as_ref().is_none_or(|n| {
                j.name.to_lowercase().contains(n) || j.id.to_lowercase().contains(n)
            })
        })
        .take(PAGE + 1)
        .collect();
    let more = rows.len() > PAGE;
    rows.truncate(PAGE);
    let next = more.then(|| rows.last().map(|j| j.id.clone())).flatten();
    let rows: Vec<Value> = rows.into_iter().map(job_row).collect();
    render(
        "exports.html",
        Some(&sn),
        context! {
            page => "exports", jobs => rows, status => status, q => text, next => next,
            filtered => status.is_some() || text.is_some() || before.is_some(),
        },
        StatusCode::OK,
    )
}

pub(super) async fn new_export(
    State(s): S,
    session: Sess,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
) -> Response {
    let sn = match require(sess(&session), WRITE, "/exports/new") {
        Ok(x) => x,
        Err(r) => return r,
    };
    // The URL holds the wizard's state: single values and repeated keys for lists.
    let mut single = serde_json::Map::new();
    let mut lists: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (k, v) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        lists.entry(k.to_string()).or_default().push(v.to_string());
        single.insert(k.to_string(), json!(v));
    }
    let presets: Vec<Value> = match Catalog::load(&s.config, &s.store) {
        Ok(c) => c
            .presets
            .iter()
            .map(|d| json!({"name": d.name, "description": d.description}))
            .collect(),
        Err(e) => return internal(e),
    };
    let step = single
        .get("step")
        .and_then(|v| v.as_str())
        .filter(|s| *s == "2")
        .map_or(1, |_| 2);
    render(
        "export_new.html",
        Some(&sn),
        context! {
            page => "exports", step => step, v => Value::Object(single), lists => lists,
            presets => presets,
            decisions => ["allow", "block", "redact", "escalate", "flag"],
            severities => ["info", "low", "medium", "high", "critical"],
            formats => ["csv", "json", "ndjson", "parquet", "pdf"],
            includes => ["escalations", "config_versions", "summary", "report"],
        },
        StatusCode::OK,
    )
}

pub(super) async fn export_detail(
    State(s): S,
    session: Sess,
    UrlPath(id): UrlPath<String>,
) -> Response {
    let sn = match require(sess(&session), READ, &format!("/exports/{id}")) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let job = match s.store.job(&id) {
        Ok(Some(j)) => j,
        Ok(None) => {
            return render(
                "message.html",
                Some(&sn),
                context! { title => "Not found", message => format!("There is no export {id}.") },
                StatusCode::NOT_FOUND,
            );
        }
        Err(e) => return internal(e),
    };
    let check = verify_artifact(&s, &job).await;
    render(
        "export_detail.html",
        Some(&sn),
        context! {
            page => "exports", job => job_row(&job), params => job.to_json(),
            artifact => job.artifact, check => check,
            can_download => sn.principal.role != Role::Viewer,
        },
        StatusCode::OK,
    )
}

/// The server's own check of the artifact against its signed manifest (files, hashes,
/// counts, signature with this installation's key), for artifacts up to 200 MB.
async fn verify_artifact(s: &Service, job: &crate::store::Job) -> Value {
    let Some(a) = job.artifact.clone() else {
        return Value::Null;
    };
    if job.status != "completed" {
        return Value::Null;
    }
    if a["bytes"].as_u64().unwrap_or(0) > 200_000_000 {
        return json!({"ok": Value::Null, "summary": "too large to check on page load; run evidex verify"});
    }
    if s.remote_artifacts.is_some() {
        return json!({"ok": Value::Null, "summary": "kept in object storage; download it and run evidex verify"});
    }
    let Ok(dir) = s.artifact_dir(&job.id, &a) else {
        return Value::Null;
    };
    let path = dir.join(a["file_name"].as_str().unwrap_or_default());
    let key = s.signer.public_hex();
    let r = tokio::task::spawn_blocking(move || {
        let key = evidex_engine::integrity::parse_public_key(&key).ok()?;
        evidex_engine::verify::verify(&path, &evidex_engine::verify::Trust::Key(key)).ok()
    })
    .await
    .ok()
    .flatten();
    match r {
        Some(r) => json!({
            "ok": r.ok(),
            "summary": if r.ok() { format!("signature and {} checks verified by the server", r.checked.len()) }
                       else { r.problems.join("; ") },
            "files": r.manifest.as_ref().map(|m| m.files.iter().map(|f| json!({"name": f.path, "dataset": f.dataset, "rows": f.rows, "sha256": f.sha256, "bytes": f.bytes})).collect::<Vec<_>>()),
            "total_rows": r.manifest.as_ref().map(|m| m.total_rows),
            "statement": r.manifest.as_ref().map(|m| m.statement.clone()),
        }),
        None => json!({"ok": false, "summary": "the artifact could not be read"}),
    }
}

pub(super) async fn schedules(State(s): S, session: Sess) -> Response {
    let sn = match require(sess(&session), READ, "/schedules") {
        Ok(x) => x,
        Err(r) => return r,
    };
    let now = s.clock.now();
    let mut list = Vec::new();
    match s.store.schedules() {
        Ok(rows) => {
            for row in rows {
                match crate::schedules::view(&s, &row, now) {
                    Ok(v) => list.push(v),
                    Err(e) => return internal(e),
                }
            }
        }
        Err(e) => return internal(e),
    }
    render(
        "schedules.html",
        Some(&sn),
        context! { page => "schedules", schedules => list, presets => preset_names(&s) },
        StatusCode::OK,
    )
}

pub(super) async fn schedule_detail(
    State(s): S,
    session: Sess,
    UrlPath(id): UrlPath<String>,
) -> Response {
    let sn = match require(sess(&session), READ, &format!("/schedules/{id}")) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let row = match s.store.schedule(&id) {
        Ok(Some(r)) => r,
        Ok(None) => {
            return render(
                "message.html",
                Some(&sn),
                context! { title => "Not found", message => format!("There is no schedule {id}.") },
                StatusCode::NOT_FOUND,
            );
        }
        Err(e) => return internal(e),
    };
    let view = match crate::schedules::view(&s, &row, s.clock.now()) {
        Ok(v) => v,
        Err(e) => return internal(e),
    };
    // The fields the form shows one by one; the rest of the export parameters go in
    // its JSON box.
    let ex = row.spec["export"].clone();
    let mut extra = ex.as_object().cloned().unwrap_or_default();
    for k in ["format", "preset", "include", "include_payloads"] {
        extra.remove(k);
    }
    if let Some(Value::Object(f)) = extra.get_mut("filters") {
        f.remove("decision");
        f.remove("min_severity");
        if f.is_empty() {
            extra.remove("filters");
        }
    }
    let extra_json = (!extra.is_empty())
        .then(|| serde_json::to_string(&Value::Object(extra)).unwrap_or_default());
    render(
        "schedule_detail.html",
        Some(&sn),
        context! {
            page => "schedules", sc => view, ex => ex, extra_json => extra_json,
            presets => preset_names(&s),
        },
        StatusCode::OK,
    )
}

pub(super) async fn presets(State(s): S, session: Sess) -> Response {
    let sn = match require(sess(&session), READ, "/presets") {
        Ok(x) => x,
        Err(r) => return r,
    };
    let catalog = match Catalog::load(&s.config, &s.store) {
        Ok(c) => c,
        Err(e) => return internal(e),
    };
    let list: Vec<Value> = catalog
        .presets
        .iter()
        .map(|d| {
            json!({"name": d.name, "description": d.description, "format": d.format.as_str(),
                   "sql": d.sql, "saved": d.source.strip_prefix("saved:"),
                   "source": d.source})
        })
        .collect();
    render(
        "presets.html",
        Some(&sn),
        context! { page => "presets", presets => list },
        StatusCode::OK,
    )
}

#[derive(Debug, Deserialize)]
pub(super) struct AuditQuery {
    #[serde(default)]
    after: Option<i64>,
}

pub(super) async fn audit(State(s): S, session: Sess, Query(q): Query<AuditQuery>) -> Response {
    let sn = match require(sess(&session), WRITE, "/audit") {
        Ok(x) => x,
        Err(r) => return r,
    };
    let after = q.after.unwrap_or(0).max(0);
    let entries = match s.store.audit_entries(after, 51) {
        Ok(e) => e,
        Err(e) => return internal(e),
    };
    let chain = match s.store.verify_audit_chain() {
        Ok(Ok(n)) => {
            json!({"ok": true, "text": format!("chain verified: {n} entries, each hash matches")})
        }
        Ok(Err(p)) => json!({"ok": false, "text": format!("chain broken: {p}")}),
        Err(e) => return internal(e),
    };
    let more = entries.len() > 50;
    let rows: Vec<Value> = entries
        .iter()
        .take(50)
        .map(|e| {
            json!({"seq": e.seq, "at": crate::store::rfc3339(e.at), "actor": e.actor,
                   "action": e.action, "target": e.target, "details": e.details,
                   "hash": &e.hash[..16]})
        })
        .collect();
    let next = more.then(|| entries.get(49).map(|e| e.seq)).flatten();
    render(
        "audit.html",
        Some(&sn),
        context! { page => "audit", entries => rows, chain => chain, next => next, after => after },
        StatusCode::OK,
    )
}

pub(super) async fn settings_delivery(State(s): S, session: Sess) -> Response {
    let sn = match require(sess(&session), ADMIN, "/settings/delivery") {
        Ok(x) => x,
        Err(r) => return r,
    };
    let settings = match crate::delivery::load(&s.store, &s.master_key) {
        Ok(x) => x.map(|(d, _)| d),
        Err(e) => return internal(e),
    };
    render(
        "settings_delivery.html",
        Some(&sn),
        context! { page => "delivery", d => crate::delivery::public_view(settings.as_ref()) },
        StatusCode::OK,
    )
}

pub(super) async fn settings_webhooks(State(s): S, session: Sess) -> Response {
    let sn = match require(sess(&session), ADMIN, "/settings/webhooks") {
        Ok(x) => x,
        Err(r) => return r,
    };
    let mut hooks = Vec::new();
    match s.store.webhooks() {
        Ok(list) => {
            for w in list {
                let recent: Vec<Value> = s
                    .store
                    .webhook_messages(&w.id, 5)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(m, _)| json!({"event": m.event, "status": m.status, "attempts": m.attempts, "export_id": m.export_id, "error": m.last_error}))
                    .collect();
                hooks.push(json!({"id": w.id, "url": w.url, "events": w.events, "description": w.description,
                                  "created_at": crate::store::rfc3339(w.created_at), "recent": recent}));
            }
        }
        Err(e) => return internal(e),
    }
    render(
        "settings_webhooks.html",
        Some(&sn),
        context! { page => "webhooks", hooks => hooks, events => crate::webhooks::EVENTS },
        StatusCode::OK,
    )
}

pub(super) async fn settings_redaction(State(s): S, session: Sess) -> Response {
    let sn = match require(sess(&session), ADMIN, "/settings/redaction") {
        Ok(x) => x,
        Err(r) => return r,
    };
    let catalog = match Catalog::load(&s.config, &s.store) {
        Ok(c) => c,
        Err(e) => return internal(e),
    };
    render(
        "settings_redaction.html",
        Some(&sn),
        context! {
            page => "redaction",
            rules => serde_json::to_value(&catalog.redaction).unwrap_or(Value::Null),
            detectors => evidex_engine::redact::BUILTIN_DETECTORS,
        },
        StatusCode::OK,
    )
}

/// Every preset's name, for the schedule forms.
fn preset_names(s: &Service) -> Vec<Value> {
    Catalog::load(&s.config, &s.store)
        .map(|c| c.presets.iter().map(|d| json!({"name": d.name})).collect())
        .unwrap_or_default()
}
