//! The HTTP API (axum): routes, bearer-token roles on every route, JSON errors
//! `{"error": {"code", "message"}}`, downloads with `Range`, signed links, ingest.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Path as UrlPath, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use evidex_engine::EngineError;
use evidex_engine::export::{self, PinnedTables};
use evidex_engine::ingest;
use evidex_engine::model::Dataset;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::service::{self, IngestItem, Service, dataset_index};
use crate::store::{Principal, Role};

/// An API error.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
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

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        ApiError::from_engine(&e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (self.status, axum::Json(body)).into_response()
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

mod downloads;
mod presets;
mod webhooks;

/// Every route: method, path, roles allowed (empty: no token needed), summary. The
/// router, `/openapi.json` and the role tests are all driven by this list.
pub const ROUTES: &[(&str, &str, &[Role], &str)] = &[
    (
        "GET",
        "/",
        PUBLIC,
        "A start page linking the API description",
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
        "/v1/ingest/events",
        INGEST,
        "Store decision events (NDJSON or a JSON array; gzip accepted)",
    ),
    (
        "POST",
        "/v1/ingest/escalations",
        INGEST,
        "Store escalation updates",
    ),
    (
        "POST",
        "/v1/ingest/config-versions",
        INGEST,
        "Store configuration versions",
    ),
    (
        "POST",
        "/v1/exports/preview",
        READ,
        "Count the records an export would contain",
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
        "The artifact (supports Range)",
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
        "Download through a signed link (410 once expired)",
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
        "/v1/audit-log",
        WRITE,
        "The hash-chained audit log (after, limit)",
    ),
];

/// The router.
pub fn router(service: AppState) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route("/v1/signing-key", get(signing_key))
        .route("/v1/ingest/{dataset}", post(ingest_handler))
        .route("/v1/exports/preview", post(preview))
        .route("/v1/exports", post(create_export).get(list_exports))
        .route("/v1/exports/{id}", get(get_export))
        .route("/v1/exports/{id}/cancel", post(cancel_export))
        .route("/v1/exports/{id}/rerun", post(rerun_export))
        .route("/v1/exports/{id}/download", get(downloads::download))
        .route("/v1/exports/{id}/manifest", get(downloads::manifest))
        .route(
            "/v1/exports/{id}/package/{file}",
            get(downloads::package_file),
        )
        .route("/v1/exports/{id}/link", post(downloads::create_link))
        .route("/v1/links/{token}", get(downloads::follow_link))
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
        .route("/v1/webhooks", get(webhooks::list).post(webhooks::create))
        .route("/v1/webhooks/{id}", axum::routing::delete(webhooks::delete))
        .route("/v1/webhooks/{id}/deliveries", get(webhooks::deliveries))
        .route("/v1/audit-log", get(audit_log))
        .fallback(|| async { ApiError::not_found("route") })
        .layer(middleware::from_fn_with_state(service.clone(), observe))
        .with_state(service)
}

/// Records each request's latency under its route.
async fn observe(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let key = format!("{} {route}", req.method());
    let started = Instant::now();
    let response = next.run(req).await;
    if let Ok(mut l) = s.metrics.latency.lock() {
        l.entry(key)
            .or_default()
            .observe(started.elapsed().as_secs_f64());
    }
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
    let Some(token) = token else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a bearer token is required (Authorization: Bearer TOKEN)",
        ));
    };
    let Some(p) = s.store.authenticate(token)? else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the token is not valid",
        ));
    };
    if !allowed.contains(&p.role) {
        let names: Vec<&str> = allowed.iter().map(|r| r.as_str()).collect();
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "the {} role may not do this; it needs {}",
                p.role.as_str(),
                names.join(" or ")
            ),
        ));
    }
    Ok(p)
}

async fn root() -> Response {
    let body = format!(
        "<!doctype html><meta charset=utf-8><title>evidex</title>\
         <h1>evidex {}</h1><p>Compliance evidence exports. The API is described at \
         <a href=\"/openapi.json\">/openapi.json</a>; every /v1 route takes \
         <code>Authorization: Bearer TOKEN</code>.</p>",
        evidex_engine::VERSION
    );
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

async fn readyz(State(s): State<AppState>) -> ApiResult<&'static str> {
    s.store.job_counts()?;
    s.lake
        .snapshot(Dataset::Events, None)
        .await
        .map_err(ApiError::from)?;
    Ok("ready")
}

async fn metrics(State(s): State<AppState>) -> ApiResult<Response> {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "# HELP evidex_jobs Export jobs by status.");
    let _ = writeln!(out, "# TYPE evidex_jobs gauge");
    let counts = s.store.job_counts()?;
    for status in [
        "queued",
        "processing",
        "completed",
        "failed",
        "cancelled",
        "expired",
    ] {
        let n = counts
            .iter()
            .find(|(st, _)| st == status)
            .map_or(0, |(_, n)| *n);
        let _ = writeln!(out, "evidex_jobs{{status=\"{status}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP evidex_rows_exported_total Rows written by completed exports (all workers)."
    );
    let _ = writeln!(out, "# TYPE evidex_rows_exported_total counter");
    let _ = writeln!(
        out,
        "evidex_rows_exported_total {}",
        s.store.rows_exported()?
    );
    let _ = writeln!(
        out,
        "# HELP evidex_ingest_records_total Records received over HTTP, by dataset and outcome."
    );
    let _ = writeln!(out, "# TYPE evidex_ingest_records_total counter");
    for ds in Dataset::ALL {
        let i = dataset_index(ds);
        for (outcome, v) in [
            ("accepted", &s.metrics.ingest_accepted[i]),
            ("rejected", &s.metrics.ingest_rejected[i]),
        ] {
            let _ = writeln!(
                out,
                "evidex_ingest_records_total{{dataset=\"{}\",outcome=\"{outcome}\"}} {}",
                ds.cli_name(),
                v.load(Ordering::Relaxed)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP evidex_ingest_commits_total Delta commits made by the ingest batchers."
    );
    let _ = writeln!(out, "# TYPE evidex_ingest_commits_total counter");
    let _ = writeln!(
        out,
        "evidex_ingest_commits_total {}",
        s.metrics.ingest_commits.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP evidex_http_request_duration_seconds Request latency by route."
    );
    let _ = writeln!(out, "# TYPE evidex_http_request_duration_seconds histogram");
    let latency = s
        .metrics
        .latency
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default();
    for (key, h) in latency {
        let (method, route) = key.split_once(' ').unwrap_or(("", &key));
        let labels = format!("method=\"{method}\",route=\"{route}\"");
        for (i, b) in service::BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "evidex_http_request_duration_seconds_bucket{{{labels},le=\"{b}\"}} {}",
                h.buckets[i]
            );
        }
        let _ = writeln!(
            out,
            "evidex_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(
            out,
            "evidex_http_request_duration_seconds_sum{{{labels}}} {}",
            h.sum
        );
        let _ = writeln!(
            out,
            "evidex_http_request_duration_seconds_count{{{labels}}} {}",
            h.count
        );
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response())
}

/// The OpenAPI 3.1 description, generated from [`ROUTES`].
pub fn openapi_document() -> Value {
    let mut paths = serde_json::Map::new();
    for (method, path, roles, summary) in ROUTES {
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        let roles: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        let mut op = json!({
            "summary": summary,
            "x-roles": roles,
            "responses": {
                "200": {"description": "OK"},
                "400": {"description": "Invalid request: {\"error\": {\"code\", \"message\"}} naming the field"},
            },
        });
        if !roles.is_empty() {
            op["security"] = json!([{"bearer": []}]);
            op["responses"]["401"] = json!({"description": "No or unknown token"});
            op["responses"]["403"] = json!({"description": "The token's role may not do this"});
        }
        let params: Vec<Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        if !params.is_empty() {
            op["parameters"] = json!(params);
        }
        entry[method.to_ascii_lowercase()] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "evidex", "version": evidex_engine::VERSION,
                 "description": "Compliance evidence exports from AI gateway decision events."},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": paths,
    })
}

async fn openapi() -> axum::Json<Value> {
    axum::Json(openapi_document())
}

async fn signing_key(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<axum::Json<Value>> {
    auth(&s, &headers, ANY)?;
    Ok(axum::Json(json!({
        "algorithm": "ed25519",
        "public_key": s.signer.public_hex(),
        "public_key_pem": s.signer.public_pem(),
        "fingerprint": s.signer.fingerprint(),
        "fingerprint_method": "SHA-256 of the DER SubjectPublicKeyInfo (openssl pkey -pubin -outform DER | sha256sum)",
    })))
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

async fn ingest_handler(
    State(s): State<AppState>,
    UrlPath(dataset): UrlPath<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<axum::Json<Value>> {
    auth(&s, &headers, INGEST)?;
    let Some(ds) = Dataset::parse(&dataset).filter(|_| dataset != "config_versions") else {
        return Err(ApiError::not_found("dataset"));
    };
    let raw = read_body(&s, body).await?;
    let body = decode_body(&headers, raw, s.config.server.max_body_bytes)?;
    let max_line = s.config.ingest.max_record_bytes;
    // A line over the limit refuses the whole request, naming the line.
    let mut line_start = 0;
    for (n, end) in memchr::memchr_iter(b'\n', &body)
        .chain(std::iter::once(body.len()))
        .enumerate()
    {
        if end - line_start > max_line {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("line {}: longer than the limit of {max_line} bytes", n + 1),
            ));
        }
        line_start = end + 1;
    }
    let parsed = tokio::task::spawn_blocking(move || ingest::parse_body(ds, &body, max_line))
        .await
        .map_err(|e| anyhow::anyhow!(e))?
        .map_err(|e| ApiError::bad_request(format!("body: {e}")))?;
    let (rows, rejected) = (parsed.rows, parsed.rejected);
    let accepted = rows.len() as u64;
    let mut duplicates = 0;
    if !rows.is_empty() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let batcher = s
            .ingest
            .get(&ds)
            .ok_or_else(|| anyhow::anyhow!("no ingest batcher in this process"))?;
        batcher
            .send(IngestItem { rows, reply: tx })
            .await
            .map_err(|_| anyhow::anyhow!("the ingest batcher stopped"))?;
        duplicates = rx
            .await
            .map_err(|_| anyhow::anyhow!("the ingest batcher stopped"))?
            .map_err(|e| anyhow::anyhow!("storing the records failed: {e}"))?;
    }
    let i = dataset_index(ds);
    s.metrics.ingest_accepted[i].fetch_add(accepted, Ordering::Relaxed);
    s.metrics.ingest_rejected[i].fetch_add(rejected.len() as u64, Ordering::Relaxed);
    let errors: Vec<Value> = rejected
        .iter()
        .take(100)
        .map(|r| json!({"line": r.line, "message": r.message}))
        .collect();
    Ok(axum::Json(json!({
        "accepted": accepted,
        "duplicates": duplicates,
        "rejected": rejected.len(),
        "replaced_surrogates": parsed.replaced_surrogates,
        "errors": errors,
    })))
}

async fn preview(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<axum::Json<Value>> {
    auth(&s, &headers, READ)?;
    let body = read_body(&s, body).await?;
    let catalog = service::Catalog::load(&s.config, &s.store)?;
    let mut valid = service::parse_preview(&body, &s.config, &catalog)?;
    let pinned = s.prepare(&mut valid.request).await?;
    let p = export::preview(&s.lake, &pinned, &valid.request).await?;
    Ok(axum::Json(
        json!({"records": p.records, "by_dataset": p.by_dataset}),
    ))
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

async fn create_job_from(
    s: &Service,
    principal: &Principal,
    valid: service::ValidExport,
    idempotency_key: Option<&str>,
    action: &str,
) -> ApiResult<Response> {
    if valid.request.definition.is_some() {
        // Plan the SQL now: a missing column is the caller's error, not a worker's.
        plan_definition(s, &valid.request).await?;
    }
    let now = s.clock.now();
    let id = export::new_export_id(now);
    let (job, created) = s.store.create_job(
        &id,
        &valid.request.name,
        &valid.description,
        &valid.params,
        principal,
        idempotency_key,
        now.timestamp_millis(),
    )?;
    if created {
        s.store.audit(
            now.timestamp_millis(),
            &principal.actor(),
            action,
            Some(&job.id),
            Some(&json!({"name": job.name, "format": valid.params["format"],
                         "from": valid.params["from"], "to": valid.params["to"]})),
        )?;
    }
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(job.to_json())).into_response())
}

async fn create_export(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let p = auth(&s, &headers, WRITE)?;
    let body = read_body(&s, body).await?;
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let k = v
                .to_str()
                .ok()
                .filter(|k| !k.is_empty() && k.len() <= 200)
                .ok_or_else(|| {
                    ApiError::bad_request("Idempotency-Key: use 1 to 200 visible characters")
                })?;
            Some(k.to_string())
        }
    };
    let catalog = service::Catalog::load(&s.config, &s.store)?;
    let valid = service::parse_export(&body, &s.config, &catalog)?;
    create_job_from(&s, &p, valid, key.as_deref(), "export.created").await
}

#[derive(Deserialize)]
struct ListQuery {
    status: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

async fn list_exports(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> ApiResult<axum::Json<Value>> {
    auth(&s, &headers, READ)?;
    if let Some(st) = &q.status
        && ![
            "queued",
            "processing",
            "completed",
            "failed",
            "cancelled",
            "expired",
        ]
        .contains(&st.as_str())
    {
        return Err(ApiError::bad_request(format!(
            "status: unknown status {st:?}"
        )));
    }
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request("limit: use 1 to 500"));
    }
    let jobs = s
        .store
        .jobs(q.status.as_deref(), limit + 1, q.cursor.as_deref())?;
    let more = jobs.len() as i64 > limit;
    let items: Vec<Value> = jobs
        .iter()
        .take(limit as usize)
        .map(|j| j.to_json())
        .collect();
    let next = if more {
        jobs.get(limit as usize - 1).map(|j| j.id.clone())
    } else {
        None
    };
    Ok(axum::Json(json!({"items": items, "next_cursor": next})))
}

fn job_or_404(s: &Service, id: &str) -> ApiResult<crate::store::Job> {
    s.store
        .job(id)?
        .ok_or_else(|| ApiError::not_found("export"))
}

async fn get_export(
    State(s): State<AppState>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> ApiResult<axum::Json<Value>> {
    auth(&s, &headers, READ)?;
    Ok(axum::Json(job_or_404(&s, &id)?.to_json()))
}

async fn cancel_export(
    State(s): State<AppState>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> ApiResult<axum::Json<Value>> {
    let p = auth(&s, &headers, WRITE)?;
    let job = job_or_404(&s, &id)?;
    if !matches!(job.status.as_str(), "queued" | "processing") {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!(
                "the export is {}; only queued or processing exports can be cancelled",
                job.status
            ),
        ));
    }
    s.store.cancel(&id, s.now_ms())?;
    s.store
        .audit(s.now_ms(), &p.actor(), "export.cancelled", Some(&id), None)?;
    Ok(axum::Json(job_or_404(&s, &id)?.to_json()))
}

async fn rerun_export(
    State(s): State<AppState>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let p = auth(&s, &headers, WRITE)?;
    let job = job_or_404(&s, &id)?;
    let catalog = service::Catalog::load(&s.config, &s.store)?;
    // A re-run keeps the SQL its preset had, but applies the redaction rules in force
    // now: rules tightened after a leak must not be undone by re-running old jobs.
    let mut params = job.params.clone();
    if let Some(p) = params.as_object_mut() {
        p.remove("_redaction");
    }
    let valid = service::export_from_params(&params, &s.config, &catalog)?;
    create_job_from(&s, &p, valid, None, "export.rerun").await
}

#[derive(Deserialize)]
struct AuditQuery {
    after: Option<i64>,
    limit: Option<i64>,
}

async fn audit_log(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<AuditQuery>,
) -> ApiResult<axum::Json<Value>> {
    auth(&s, &headers, WRITE)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit: use 1 to 1000"));
    }
    let entries = s.store.audit_entries(q.after.unwrap_or(0), limit)?;
    let items: Vec<Value> = entries
        .iter()
        .map(|e| {
            json!({
                "seq": e.seq, "at": crate::store::rfc3339(e.at), "actor": e.actor,
                "action": e.action, "target": e.target,
                "details": e.details.as_deref().and_then(|d| serde_json::from_str::<Value>(d).ok()),
                "prev_hash": e.prev_hash, "hash": e.hash,
            })
        })
        .collect();
    Ok(axum::Json(json!({"items": items})))
}

/// Removes artifacts past their retention and marks their jobs expired.
pub fn expire_artifacts(s: &Service) -> anyhow::Result<usize> {
    let ids = s.store.expired_artifacts(s.now_ms())?;
    for id in &ids {
        let dir = s.job_dir(id)?;
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        s.store.mark_expired(id)?;
    }
    Ok(ids.len())
}
