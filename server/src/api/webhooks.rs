//! `/v1/webhooks` (admin): create an endpoint (its `whsec_` secret is shown once and
//! stored sealed), list, delete, and list what was sent to it with every attempt.

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{ADMIN, ApiError, ApiResult, AppState, Params, auth, read_body};
use crate::network;
use crate::store::{Store, Webhook};
use crate::webhooks::{EVENTS, new_secret};

/// The body of `POST /v1/webhooks`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = WebhookRequest)]
pub(super) struct WebhookBody {
    /// An `http://` or `https://` URL; its host must resolve to public addresses
    /// unless `network.allow_private_targets` is set.
    url: String,
    /// Some of `export.completed`, `export.failed`, `export.delivered`.
    events: Vec<String>,
    /// Free text (at most 500 bytes).
    #[serde(default)]
    description: String,
}

/// A webhook endpoint as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Webhook)]
pub struct WebhookView {
    /// `wh_` + ULID.
    pub id: String,
    /// Where messages are POSTed.
    pub url: String,
    /// The events it receives.
    pub events: Vec<String>,
    /// Free text.
    pub description: String,
    /// Who created it.
    pub created_by: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// The signing secret (`whsec_...`, Standard Webhooks): only in the answer that
    /// created it; stored sealed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// Every webhook endpoint.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookList {
    /// The endpoints.
    pub items: Vec<WebhookView>,
}

/// One message sent (or to be sent) to an endpoint.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookMessageView {
    /// The `webhook-id` header: the same on every attempt (`msg_` + ULID).
    pub id: String,
    /// `export.completed`, `export.failed` or `export.delivered`.
    pub event: String,
    /// The export it is about.
    pub export_id: Option<String>,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    /// Attempts made.
    pub attempts: i64,
    /// The last attempt's error.
    pub last_error: Option<String>,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// While pending: the next attempt, RFC 3339, UTC.
    pub next_attempt_at: Option<String>,
    /// RFC 3339, UTC.
    pub finished_at: Option<String>,
    /// Every attempt, first to last.
    pub attempt_log: Vec<AttemptView>,
}

/// One attempt to send a message.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AttemptView {
    /// 1, 2, ...
    pub n: i64,
    /// RFC 3339, UTC.
    pub at: String,
    /// The endpoint's HTTP status, if it answered.
    pub status_code: Option<i64>,
    /// Milliseconds until the answer or the error.
    pub latency_ms: i64,
    /// Why it failed.
    pub error: Option<String>,
}

/// Messages to one endpoint, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookMessages {
    /// The messages.
    pub items: Vec<WebhookMessageView>,
}

fn webhook_view(w: &Webhook) -> WebhookView {
    WebhookView {
        id: w.id.clone(),
        url: w.url.clone(),
        events: w.events.clone(),
        description: w.description.clone(),
        created_by: w.created_by.clone(),
        created_at: crate::store::rfc3339(w.created_at),
        secret: None,
    }
}

#[utoipa::path(post, path = "/v1/webhooks", request_body = WebhookBody,
    responses((status = 201, description = "Created; `secret` is shown this once", body = WebhookView)))]
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
    let mut out = webhook_view(&w);
    // Shown once: only its sealed form is stored.
    out.secret = Some(secret);
    Ok((StatusCode::CREATED, axum::Json(out)).into_response())
}

#[utoipa::path(get, path = "/v1/webhooks", responses((status = 200, body = WebhookList)))]
pub(super) async fn list(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<axum::Json<WebhookList>> {
    auth(&s, &headers, ADMIN)?;
    let items = s.store.webhooks()?.iter().map(webhook_view).collect();
    Ok(axum::Json(WebhookList { items }))
}

#[utoipa::path(delete, path = "/v1/webhooks/{id}", params(("id" = String, Path, description = "The endpoint's id")),
    responses((status = 204, description = "Deleted; nothing more is sent to it")))]
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

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct DeliveriesQuery {
    /// Messages, newest first, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000, value_type = i64, required = false)]
    limit: Option<i64>,
}

#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries",
    params(("id" = String, Path, description = "The endpoint's id"), DeliveriesQuery),
    responses((status = 200, body = WebhookMessages)))]
pub(super) async fn deliveries(
    State(s): State<AppState>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    Params(q): Params<DeliveriesQuery>,
) -> ApiResult<axum::Json<WebhookMessages>> {
    auth(&s, &headers, ADMIN)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit: use 1 to 1000"));
    }
    if s.store.webhook(&id)?.is_none() {
        return Err(ApiError::not_found("webhook"));
    }
    let items = s
        .store
        .webhook_messages(&id, limit)?
        .into_iter()
        .map(|(m, attempts)| WebhookMessageView {
            next_attempt_at: (m.status == "pending").then(|| crate::store::rfc3339(m.next_at)),
            created_at: crate::store::rfc3339(m.created_at),
            finished_at: m.finished_at.map(crate::store::rfc3339),
            attempt_log: attempts
                .into_iter()
                .map(|a| AttemptView {
                    n: a.n,
                    at: crate::store::rfc3339(a.at),
                    status_code: a.status_code,
                    latency_ms: a.latency_ms,
                    error: a.error,
                })
                .collect(),
            id: m.id,
            event: m.event,
            export_id: m.export_id,
            status: m.status,
            attempts: m.attempts,
            last_error: m.last_error,
        })
        .collect();
    Ok(axum::Json(WebhookMessages { items }))
}
