//! Operational routes: the start page, readiness, Prometheus metrics, the OpenAPI
//! description generated from [`ROUTES`], the signing key and the audit log.

use std::sync::atomic::Ordering;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use evidex_engine::model::Dataset;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ANY, ApiError, ApiResult, AppState, ROUTES, WRITE, auth};

pub(super) async fn readyz(State(s): State<AppState>) -> ApiResult<&'static str> {
    s.store.job_counts()?;
    s.lake
        .snapshot(Dataset::Events, None)
        .await
        .map_err(ApiError::from)?;
    Ok("ready")
}

/// Prometheus text exposition (format 0.0.4) through the `prometheus` crate: this
/// process's counters and latency histograms, and the job counts and rows exported
/// of the whole deployment, read from the metadata database at each scrape.
pub(super) async fn metrics(State(s): State<AppState>) -> ApiResult<Response> {
    use prometheus::{Encoder, IntCounter, IntGaugeVec, Opts, Registry, TextEncoder};
    let registry = Registry::new();
    let jobs = IntGaugeVec::new(
        Opts::new("evidex_jobs", "Export jobs by status."),
        &["status"],
    )
    .map_err(anyhow::Error::from)?;
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
        jobs.with_label_values(&[status]).set(n);
    }
    let rows = IntCounter::new(
        "evidex_rows_exported_total",
        "Rows written by completed exports (all workers).",
    )
    .map_err(anyhow::Error::from)?;
    rows.inc_by(u64::try_from(s.store.rows_exported()?).unwrap_or(0));
    let commits = IntCounter::new(
        "evidex_ingest_commits_total",
        "Delta commits made by the ingest batchers.",
    )
    .map_err(anyhow::Error::from)?;
    commits.inc_by(s.metrics.ingest_commits.load(Ordering::Relaxed));
    for c in [
        Box::new(jobs) as Box<dyn prometheus::core::Collector>,
        Box::new(rows),
        Box::new(commits),
        Box::new(s.metrics.ingest_records.clone()),
        Box::new(s.metrics.latency.clone()),
    ] {
        registry.register(c).map_err(anyhow::Error::from)?;
    }
    let encoder = TextEncoder::new();
    let mut out = Vec::new();
    encoder
        .encode(&registry.gather(), &mut out)
        .map_err(anyhow::Error::from)?;
    Ok((
        [(header::CONTENT_TYPE, encoder.format_type().to_string())],
        out,
    )
        .into_response())
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
                "400": error_response("Invalid request; the message names the field"),
                "default": error_response("Any other error (404, 408, 409, 410, 412, 429, 507, 5xx)"),
            },
        });
        if !roles.is_empty() {
            op["security"] = json!([{"bearer": []}]);
            op["responses"]["401"] = error_response("No, unknown, expired or revoked token");
            op["responses"]["403"] = error_response("The token's role may not do this");
        }
        let params: Vec<Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        if !params.is_empty() {
            op["parameters"] = json!(params);
        }
        if *path == "/v1/events/stream" {
            super::stream::describe(&mut op);
        }
        entry[method.to_ascii_lowercase()] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "evidex", "version": evidex_engine::VERSION,
                 "description": "Compliance evidence exports from AI gateway decision events."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": {
                "type": "object",
                "required": ["error"],
                "properties": {"error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {
                        "code": {"type": "string", "description": "Stable, machine-readable (`not_found`, `rate_limited`, ...)"},
                        "message": {"type": "string", "description": "What is wrong, naming the field or setting"},
                    },
                }},
            }},
        },
        "paths": paths,
    })
}

/// An error answer: `{"error": {"code", "message"}}` in JSON.
fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    })
}

pub(super) async fn openapi() -> axum::Json<Value> {
    axum::Json(openapi_document())
}

pub(super) async fn signing_key(
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

#[derive(Deserialize)]
pub(super) struct AuditQuery {
    after: Option<i64>,
    limit: Option<i64>,
}

pub(super) async fn audit_log(
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
