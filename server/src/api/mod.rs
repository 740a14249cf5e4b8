//! The HTTP API (axum): routes, bearer-token roles on every route, JSON errors
//! `{"error": {"code", "message"}}`, downloads with `Range`, signed links, ingest.
//! This module holds the route table, the router, auth, the error type and the body
//! helpers every resource shares; each resource's handlers live in their own file.

use std::io::Read;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use evidex_engine::EngineError;
use evidex_engine::export::{self, PinnedTables};
use serde::Serialize;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::service::Service;
use crate::store::{Principal, Role};

/// An API error.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// `Retry-After`, seconds (429).
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        if let Some(engine) = e.downcast_ref::<EngineError>() {
            return ApiError::from_engine(engine);
        }
        if let Some(cap) = e.downcast_ref::<crate::limits::TooManyExports>() {
            return ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_exports",
                cap.to_string(),
            );
        }
        tracing::error!("{e:#}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("{e:#}"),
        )
    }
}

impl ApiError {
    fn from_engine(e: &EngineError) -> Self {
        match e {
            EngineError::InvalidRequest(m) => ApiError::bad_request(m.clone()),
            other => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                other.to_string(),
            ),
        }
    }
}

impl From<crate::limits::RateLimited> for ApiError {
    fn from(r: crate::limits::RateLimited) -> Self {
        let secs = r.retry_after_secs();
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "too many {} requests for this token: at most {} a minute (limits.{}_per_minute); retry in {secs} s",
                r.kind.as_str(),
                r.per_minute,
                r.kind.as_str()
            ),
        );
        e.retry_after = Some(secs);
        e
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        ApiError::from_engine(&e)
    }
}

/// The query string as `T` (like axum's `Query`), whose rejection is the API's own
/// JSON 400 naming the parameter rather than axum's plain-text one.
pub(super) struct Params<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequestParts<S>
    for Params<T>
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| Params(v))
            .map_err(|e| {
                let text = e.body_text();
                ApiError::bad_request(format!(
                    "query: {}",
                    text.strip_prefix("Failed to deserialize query string: ")
                        .unwrap_or(&text)
                ))
            })
    }
}

/// Every error answer: `{"error": {"code", "message"}}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The `error` member of an error answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable and machine-readable: `invalid_request`, `not_found`, `rate_limited`, ...
    pub code: String,
    /// What is wrong, naming the field or setting.
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
            },
        };
        let mut res = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            res.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        }
        res
    }
}

type ApiResult<T> = Result<T, ApiError>;
type AppState = Arc<Service>;

const READ: &[Role] = &[Role::Admin, Role::Compliance, Role::Viewer];
const WRITE: &[Role] = &[Role::Admin, Role::Compliance];
const INGEST: &[Role] = &[Role::Admin, Role::Ingest];
const ANY: &[Role] = &[Role::Admin, Role::Compliance, Role::Viewer, Role::Ingest];
const PUBLIC: &[Role] = &[];
const ADMIN: &[Role] = &[Role::Admin];
/// The event stream: exports' readers and SIEM pipelines (whose `siem` role may read
/// nothing else).
const STREAM: &[Role] = &[Role::Admin, Role::Compliance, Role::Siem];

mod delivery;
mod downloads;
mod exports;
mod ingest;
mod openapi;
mod ops;
mod presets;
mod schedules;
pub mod stream;
pub mod tokens;
mod webhooks;

pub use exports::expire_artifacts;
pub use openapi::openapi_document;

/// Every route: method, path, roles allowed (empty: no token needed), summary. The
/// OpenAPI document takes each operation's roles and summary from here (its
/// schemas come from the handlers' types), and the role tests walk it.
pub const ROUTES: &[(&str, &str, &[Role], &str)] = &[
    (
        "GET",
        "/",
        PUBLIC,
        "The web console (redirects to its sign-in page or to Exports)",
    ),
    ("GET", "/healthz", PUBLIC, "Liveness: the process answers"),
    (
        "GET",
        "/readyz",
        PUBLIC,
        "Readiness: the metadata database and the lake answer",
    ),
    (
        "GET",
        "/metrics",
        PUBLIC,
        "Prometheus metrics: jobs by status, rows exported, ingest counts, request latencies",
    ),
    ("GET", "/openapi.json", PUBLIC, "This API description"),
    (
        "GET",
        "/v1/signing-key",
        ANY,
        "The Ed25519 public key manifests are signed with",
    ),
    (
        "POST",
        "/v1/ingest/{dataset}",
        INGEST,
        "Store records: decision events (events), escalation updates (escalations) or configuration versions (config-versions); NDJSON or a JSON array, gzip accepted",
    ),
    (
        "GET",
        "/v1/events/stream",
        STREAM,
        "Decision events in ingest order as NDJSON pages (cursor, since, limit, profile: native|ecs|ocsf|splunk_hec, wait, include_payloads, the export filters); the next page's cursor is in the Evidex-Cursor header",
    ),
    (
        "POST",
        "/v1/exports/preview",
        READ,
        "Count the records an export would contain",
    ),
    (
        "POST",
        "/v1/exports/values",
        READ,
        "The distinct values of an event field (policy, gateway_id, consumer_group, consumer, provider, model, reason_code) in a scope, redacted: filter suggestions",
    ),
    (
        "POST",
        "/v1/exports",
        WRITE,
        "Create an export job (honours Idempotency-Key)",
    ),
    (
        "GET",
        "/v1/exports",
        READ,
        "List export jobs, newest first (status, limit, cursor)",
    ),
    ("GET", "/v1/exports/{id}", READ, "One export job"),
    (
        "POST",
        "/v1/exports/{id}/cancel",
        WRITE,
        "Cancel a queued or running job",
    ),
    (
        "POST",
        "/v1/exports/{id}/rerun",
        WRITE,
        "A new job with the same parameters",
    ),
    (
        "GET",
        "/v1/exports/{id}/download",
        WRITE,
        "The artifact (supports Range); with artifacts_redirect_secs, 307 to a presigned URL of the object",
    ),
    (
        "GET",
        "/v1/exports/{id}/manifest",
        READ,
        "The artifact's signed manifest",
    ),
    (
        "GET",
        "/v1/exports/{id}/package/{file}",
        READ,
        "One of the package files an auditor needs beside a single-file artifact (inside a ZIP they are entries): manifest.json, manifest.sig, SHA256SUMS, SHA256SUMS.sig, signing-key.pem or VERIFY.txt",
    ),
    (
        "POST",
        "/v1/exports/{id}/link",
        WRITE,
        "A signed download link that needs no token",
    ),
    (
        "GET",
        "/v1/links/{token}",
        PUBLIC,
        "Download through a signed link (410 once expired; 307 to a presigned URL ending no later than the link with artifacts_redirect_secs)",
    ),
    (
        "GET",
        "/v1/presets",
        READ,
        "Every SQL definition: built-in, from presets_dir, and saved (with id)",
    ),
    (
        "POST",
        "/v1/presets",
        WRITE,
        "Save a SQL definition {name, description, format, sql}; checked and planned like --sql",
    ),
    (
        "GET",
        "/v1/presets/{id}",
        READ,
        "One definition, by saved id or by name",
    ),
    (
        "PUT",
        "/v1/presets/{id}",
        WRITE,
        "Replace a saved definition (built-in and directory ones are read-only: 409)",
    ),
    (
        "DELETE",
        "/v1/presets/{id}",
        WRITE,
        "Delete a saved definition (queued jobs keep the SQL they were created with)",
    ),
    (
        "GET",
        "/v1/settings/redaction",
        ADMIN,
        "The redaction rules new exports apply, and where they come from",
    ),
    (
        "PUT",
        "/v1/settings/redaction",
        ADMIN,
        "Replace the redaction rules {detectors, custom, fields}; compiled before saving",
    ),
    (
        "GET",
        "/v1/tokens",
        ADMIN,
        "API tokens, newest first, with role, status (active, expired, revoked), expiry and last use; never the token itself",
    ),
    (
        "POST",
        "/v1/tokens",
        ADMIN,
        "Create a token {name, role, expires_at (RFC 3339) or expires_in_days}; answers the token once",
    ),
    (
        "DELETE",
        "/v1/tokens/{id}",
        ADMIN,
        "Revoke a token: refused at once on every node, its console sessions end",
    ),
    (
        "GET",
        "/v1/webhooks",
        ADMIN,
        "Webhook endpoints (their secrets are never shown again)",
    ),
    (
        "POST",
        "/v1/webhooks",
        ADMIN,
        "Add an endpoint {url, events, description}; answers its whsec_ signing secret once",
    ),
    (
        "DELETE",
        "/v1/webhooks/{id}",
        ADMIN,
        "Remove an endpoint; its pending messages are dropped",
    ),
    (
        "GET",
        "/v1/webhooks/{id}/deliveries",
        ADMIN,
        "Messages sent to an endpoint, newest first, with every attempt (status, latency, error)",
    ),
    (
        "GET",
        "/v1/settings/delivery",
        ADMIN,
        "The delivery bucket (the secret access key is never shown: secret_access_key_set)",
    ),
    (
        "PUT",
        "/v1/settings/delivery",
        ADMIN,
        "Replace the delivery bucket settings; without secret_access_key the stored one is kept",
    ),
    (
        "POST",
        "/v1/settings/delivery/test",
        ADMIN,
        "Test connection step by step (resolve, connect, TLS, bucket, write, read, conditional create, delete, Object Lock), with the body's settings or the stored ones",
    ),
    (
        "POST",
        "/v1/exports/{id}/deliver",
        WRITE,
        "Deliver a completed export to the bucket now (again)",
    ),
    (
        "GET",
        "/v1/schedules",
        READ,
        "Every schedule with its next three runs and history",
    ),
    (
        "POST",
        "/v1/schedules",
        WRITE,
        "Create a schedule {name, kind: weekly|monthly|quarterly|cron, cron, timezone, name_template, delay_minutes, deliver, export}",
    ),
    (
        "POST",
        "/v1/schedules/preview",
        READ,
        "What a schedule would do, without saving it: explanation, next three runs, the periods they export",
    ),
    (
        "GET",
        "/v1/schedules/{id}",
        READ,
        "One schedule: next three runs in its timezone, history of (period, export, status)",
    ),
    (
        "PUT",
        "/v1/schedules/{id}",
        WRITE,
        "Replace a schedule; periods it already ran are never run again",
    ),
    (
        "DELETE",
        "/v1/schedules/{id}",
        WRITE,
        "Delete a schedule (its exports stay)",
    ),
    (
        "POST",
        "/v1/schedules/{id}/run",
        WRITE,
        "Run the latest period that has ended, now (409 if it already ran)",
    ),
    (
        "GET",
        "/v1/audit-log",
        WRITE,
        "The hash-chained audit log (after, limit)",
    ),
];

/// The router.
pub fn router(service: AppState) -> Router {
    let router = Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .route("/v1/signing-key", get(ops::signing_key))
        .route("/v1/ingest/{dataset}", post(ingest::ingest_handler))
        // NDJSON pages compress about 10:1; gzip when the client asks for it.
        .route(
            "/v1/events/stream",
            get(stream::stream).layer(tower_http::compression::CompressionLayer::new()),
        )
        .route("/v1/exports/preview", post(exports::preview))
        .route("/v1/exports/values", post(exports::values))
        .route(
            "/v1/exports",
            post(exports::create_export).get(exports::list_exports),
        )
        .route("/v1/exports/{id}", get(exports::get_export))
        .route("/v1/exports/{id}/cancel", post(exports::cancel_export))
        .route("/v1/exports/{id}/rerun", post(exports::rerun_export))
        .route("/v1/exports/{id}/download", get(downloads::download))
        .route("/v1/exports/{id}/manifest", get(downloads::manifest))
        .route(
            "/v1/exports/{id}/package/{file}",
            get(downloads::package_file),
        )
        .route("/v1/exports/{id}/link", post(downloads::create_link))
        .route("/v1/links/{token}", get(downloads::follow_link))
        .route(
            "/v1/settings/delivery",
            get(delivery::get_settings).put(delivery::put_settings),
        )
        .route("/v1/settings/delivery/test", post(delivery::test))
        .route("/v1/exports/{id}/deliver", post(delivery::deliver))
        .route(
            "/v1/schedules",
            get(schedules::list).post(schedules::create),
        )
        .route(
            "/v1/schedules/{id}",
            get(schedules::get)
                .put(schedules::update)
                .delete(schedules::delete),
        )
        .route("/v1/schedules/{id}/run", post(schedules::run))
        .route("/v1/schedules/preview", post(schedules::preview))
        .route("/v1/presets", get(presets::list).post(presets::create))
        .route(
            "/v1/presets/{id}",
            get(presets::get_one)
                .put(presets::update)
                .delete(presets::delete),
        )
        .route(
            "/v1/settings/redaction",
            get(presets::get_redaction).put(presets::put_redaction),
        )
        .route("/v1/tokens", get(tokens::list).post(tokens::create))
        .route("/v1/tokens/{id}", axum::routing::delete(tokens::revoke))
        .route("/v1/webhooks", get(webhooks::list).post(webhooks::create))
        .route("/v1/webhooks/{id}", axum::routing::delete(webhooks::delete))
        .route("/v1/webhooks/{id}/deliveries", get(webhooks::deliveries))
        .route("/v1/audit-log", get(ops::audit_log))
        .merge(crate::console::router())
        .fallback(|| async { ApiError::not_found("route") })
        .layer(middleware::from_fn_with_state(
            service.clone(),
            crate::console::sessions,
        ))
        .layer(middleware::from_fn_with_state(service.clone(), time_limit))
        .layer(middleware::from_fn_with_state(service.clone(), observe));
    security_headers(router.with_state(service.clone()), &service)
}

/// Headers on every response, console and API alike, unless a handler set its own
/// (the console sets a stricter `Content-Security-Policy` for its pages): no MIME
/// sniffing, no framing (OWASP Secure Headers Project), no referrer, and nothing
/// kept by caches — every answer holds evidence or is about it. With an `https`
/// `server.public_url`, HSTS too (RFC 6797).
fn security_headers(router: Router, s: &Service) -> Router {
    use header::HeaderValue;
    let hsts = s
        .config
        .server
        .public_url
        .as_deref()
        .is_some_and(|u| u.starts_with("https://"))
        .then(|| HeaderValue::from_static("max-age=31536000"));
    router
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::STRICT_TRANSPORT_SECURITY,
            hsts,
        ))
}

/// Ends a request whose response has not started within
/// `limits.request_timeout_secs` with `408` (its work is dropped; a job it queued
/// stays queued). A streamed body (download, event stream) is not cut once it
/// started.
async fn time_limit(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let secs = s.config.limits.request_timeout_secs;
    match tokio::time::timeout(std::time::Duration::from_secs(secs), next.run(req)).await {
        Ok(res) => res,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            format!("the request took longer than {secs} s (limits.request_timeout_secs)"),
        )
        .into_response(),
    }
}

/// Records each request's latency under its route.
async fn observe(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = req.method().clone();
    let started = Instant::now();
    let response = next.run(req).await;
    s.metrics
        .latency
        .with_label_values(&[method.as_str(), route.as_str()])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Authenticates the bearer token and checks its role.
fn auth(s: &Service, headers: &HeaderMap, allowed: &[Role]) -> ApiResult<Principal> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    // A console session (checked, CSRF included, by the console's middleware, which
    // removes this header from every incoming request first).
    let session = headers
        .get(crate::console::SESSION_PRINCIPAL)
        .and_then(|v| v.to_str().ok());
    let now = s.now_ms();
    let p = match (token, session) {
        (Some(token), _) => match s.store.check_token(token, now)? {
            Ok(p) => Some(p),
            Err(why) => {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    why.to_string(),
                ));
            }
        },
        (None, Some(token_id)) => s.store.principal(token_id, now)?,
        (None, None) => {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a bearer token is required (Authorization: Bearer TOKEN)",
            ));
        }
    };
    let Some(p) = p else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the token is not valid",
        ));
    };
    if !allowed.contains(&p.role) {
        let names: Vec<&str> = allowed.iter().map(|r| r.as_str()).collect();
        let needs = match names.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => names.join(""),
        };
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "the {} role may not do this; it needs {needs}",
                p.role.as_str()
            ),
        ));
    }
    Ok(p)
}

/// Reads at most `limit` bytes of `body`, decoding gzip when the header says so.
fn decode_body(headers: &HeaderMap, body: Bytes, limit: usize) -> ApiResult<Bytes> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("body: larger than the limit of {limit} bytes"),
        )
    };
    let gzip = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    if !gzip {
        return Ok(body);
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body.as_ref())
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| ApiError::bad_request(format!("body: not valid gzip: {e}")))?;
    if out.len() > limit {
        return Err(too_large());
    }
    Ok(Bytes::from(out))
}

async fn read_body(s: &Service, body: Body) -> ApiResult<Bytes> {
    let limit = s.config.server.max_body_bytes;
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("body: larger than the limit of {limit} bytes"),
        )
    })
}

/// Plans a request's SQL definition over the current tables (nothing runs), so a
/// missing column or a type error is refused with a 400.
async fn plan_definition(s: &Service, request: &export::ExportRequest) -> ApiResult<()> {
    let pinned = PinnedTables::pin_datasets(&s.lake, &request.tables(), None)
        .await
        .map_err(ApiError::from)?;
    export::check_definition(&s.lake, &pinned, request).await?;
    Ok(())
}

fn job_or_404(s: &Service, id: &str) -> ApiResult<crate::store::Job> {
    s.store
        .job(id)?
        .ok_or_else(|| ApiError::not_found("export"))
}
