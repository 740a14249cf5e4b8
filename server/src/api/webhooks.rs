//! `/v1/webhooks` (admin): create an endpoint (its `whsec_` secret is shown once and
//! stored sealed), list, delete, and list what was sent to it with every attempt.

use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ADMIN, ApiError, ApiResult, AppState, auth, read_body};
use crate::network;
use crate::store::{Store, Webhook};
use crate::webhooks::{EVENTS, new_secret};

/// The body of `POST /v1/webhooks`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookBody {
    /// An `http://` or `https://` URL; its host must resolve to public addresses
    /// unless `network.allow_private_targets` is set.
    url: String,
    /// Some of `export.completed`, `export.failed`, `export.delivered`.
    events: Vec<String>,
    /// Free text (at most 500 bytes).
    #[serde(default)]
    description: String,
}

fn webhook_json(w: &Webhook) -> Value {
    json!({"id": w.id, "url": w.url, "events": w.events, "description": w.description,
           "created_by": w.created_by, "created_at": crate::store::rfc3339(w.created_at)})
}

pub(super) async fn create(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let p = auth(&s, &headers, ADMIN)?;
    let body = read_body(&s, body).await?;
    let b: WebhookBody =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("body: {e}")))?;
    if b.url.len() > 2000 {
        return Err(ApiError::bad_request("url: the limit is 2000 bytes"));
    }
    if b.events.is_empty() {
        return Err(ApiError::bad_request(format!(
            "events: name at least one of {}",
            EVENTS.join(", ")
        )));
    }
    let mut events = Vec::new();
    for e in &b.events {
        if !EVENTS.contains(&e.as_str()) {
            return Err(ApiError::bad_request(format!(
                "events: unknown event {e:?}; use {}",
                EVENTS.join(", ")
            )));
        }
        if !events.contains(e) {
            events.push(e.clone());
        }
    }
    // Checked now, so a typo or a refused address is the caller's 400, and again on
    // every attempt (DNS may change).
    network::resolve_target(
        &b.url,
        s.config.network.allow_private_targets,
        std::time::Duration::from_secs(5),
    )
    .await
    .map_err(|e| match e {
        network::TargetError::BadUrl(m) => ApiError::bad_request(m),
        other => ApiError::bad_request(format!("url: {other}")),
    })?;
    if b.description.len() > 500 {
        return Err(ApiError::bad_request("description: the limit is 500 bytes"));
    }
    let id = Store::new_webhook_id();
    let secret = new_secret();
    let w = Webhook {
        secret_sealed: s
            .master_key
            .seal(&format!("webhook:{id}"), secret.as_bytes())?,
        id,
        url: b.url,
        events,
        description: b.description,
        created_by: p.actor(),
        created_at: s.now_ms(),
    };
    s.store.insert_webhook(&w)?;
    s.store.audit(
        w.created_at,
        &p.actor(),
        "webhook.created",
        Some(&w.id),
        Some(&json!({"url": w.url, "events": w.events})),
    )?;
    let mut out = webhook_json(&w);
    // Shown once: only its sealed form is stored.
    out["secret"] = Value::from(secret);
    Ok((StatusCode::CREATED, axum::Json(out)).into_response())
}

pub(super) async fn list(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<axum::Json<Value>> {
    auth(&s, &headers, ADMIN)?;
    let items: Vec<Value> = s.store.webhooks()?.iter().map(webhook_json).collect();
    Ok(axum::Json(json!({"items": items})))
}

pub(super) async fn delete(
    State(s): State<AppState>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let p = auth(&s, &headers, ADMIN)?;
    let now = s.now_ms();
    if !s.store.delete_webhook(&id, now)? {
        return Err(ApiError::not_found("webhook"));
    }
    s.store
        .audit(now, &p.actor(), "webhook.deleted", Some(&id), None)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
pub(super) struct DeliveriesQuery {
    limit: Option<i64>,
}

pub(super) async fn deliveries(
    State(s): State<AppState>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    Query(q): Query<DeliveriesQuery>,
) -> ApiResult<axum::Json<Value>> {
    auth(&s, &headers, ADMIN)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit: use 1 to 1000"));
    }
    if s.store.webhook(&id)?.is_none() {
        return Err(ApiError::not_found("webhook"));
    }
    let items: Vec<Value> = s
        .store
        .webhook_messages(&id, limit)?
        .into_iter()
        .map(|(m, attempts)| {
            let attempts: Vec<Value> = attempts
                .iter()
                .map(|a| {
                    json!({"n": a.n, "at": crate::store::rfc3339(a.at), "status_code": a.status_code,
                           "latency_ms": a.latency_ms, "error": a.error})
                })
                .collect();
            json!({
                "id": m.id, "event": m.event, "export_id": m.export_id, "status": m.status,
                "attempts": m.attempts, "last_error": m.last_error,
                "created_at": crate::store::rfc3339(m.created_at),
                "next_attempt_at": (m.status == "pending").then(|| crate::store::rfc3339(m.next_at)),
                "finished_at": m.finished_at.map(crate::store::rfc3339),
                "attempt_log": attempts,
            })
        })
        .collect();
    Ok(axum::Json(json!({"items": items})))
}
