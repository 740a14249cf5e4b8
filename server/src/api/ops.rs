//! Operational routes: liveness, readiness, Prometheus metrics, the OpenAPI
//! document, the signing key and the audit log.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use evidex_engine::model::Dataset;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ANY, ApiError, ApiResult, AppState, Params, WRITE, auth};

#[utoipa::path(get, path = "/readyz",
    responses((status = 200, description = "`ready`", body = String, content_type = "text/plain")))]
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
#[utoipa::path(get, path = "/metrics",
    responses((status = 200, description = "Prometheus text exposition format 0.0.4", body = String, content_type = "text/plain; version=0.0.4")))]
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

#[utoipa::path(get, path = "/openapi.json",
    responses((status = 200, description = "This document (OpenAPI 3.1)", body = Object)))]
pub(super) async fn openapi() -> Response {
    // Built once per process: the document depends only on the build.
    static DOCUMENT: std::sync::LazyLock<axum::body::Bytes> = std::sync::LazyLock::new(|| {
        serde_json::to_vec(&super::openapi::openapi_document())
            .expect("a JSON value serializes")
            .into()
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT.clone(),
    )
        .into_response()
}

/// Liveness.
#[utoipa::path(get, path = "/healthz",
    responses((status = 200, description = "`ok`", body = String, content_type = "text/plain")))]
pub(super) async fn healthz() -> &'static str {
    "ok"
}

/// The public key manifests are signed with (`GET /v1/signing-key`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SigningKey {
    /// Always `ed25519` (RFC 8032).
    pub algorithm: &'static str,
    /// The 32-byte public key, hex.
    pub public_key: String,
    /// The same key as a PEM `PUBLIC KEY` (RFC 8410 SubjectPublicKeyInfo).
    pub public_key_pem: String,
    /// SHA-256 of the DER SubjectPublicKeyInfo, hex.
    pub fingerprint: String,
    /// How to compute the fingerprint with openssl.
    pub fingerprint_method: &'static str,
}

#[utoipa::path(get, path = "/v1/signing-key",
    responses((status = 200, body = SigningKey)))]
pub(super) async fn signing_key(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<axum::Json<SigningKey>> {
    auth(&s, &headers, ANY)?;
    Ok(axum::Json(SigningKey {
        algorithm: "ed25519",
        public_key: s.signer.public_hex(),
        public_key_pem: s.signer.public_pem(),
        fingerprint: s.signer.fingerprint(),
        fingerprint_method: "SHA-256 of the DER SubjectPublicKeyInfo (openssl pkey -pubin -outform DER | sha256sum)",
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct AuditQuery {
    /// Entries after this sequence number (default 0: from the first).
    #[param(value_type = i64, required = false)]
    after: Option<i64>,
    /// Entries per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000, value_type = i64, required = false)]
    limit: Option<i64>,
}

/// One entry of the hash-chained audit log.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// Position in the chain, from 1.
    pub seq: i64,
    /// When, RFC 3339 in UTC.
    pub at: String,
    /// Who: `token:NAME (ROLE)`, `session:...` or `system`.
    pub actor: String,
    /// What: `export.created`, `token.revoked`, ...
    pub action: String,
    /// The id it was done to.
    pub target: Option<String>,
    /// Details of the action.
    #[schema(value_type = Option<Object>)]
    pub details: Option<Value>,
    /// The previous entry's hash, hex (64 zeros for the first).
    pub prev_hash: String,
    /// SHA-256 over this entry and `prev_hash`, hex.
    pub hash: String,
}

/// A page of audit entries.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    /// Oldest first.
    pub items: Vec<AuditEntry>,
}

#[utoipa::path(get, path = "/v1/audit-log", params(AuditQuery),
    responses((status = 200, body = AuditPage)))]
pub(super) async fn audit_log(
    State(s): State<AppState>,
    headers: HeaderMap,
    Params(q): Params<AuditQuery>,
) -> ApiResult<axum::Json<AuditPage>> {
    auth(&s, &headers, WRITE)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit: use 1 to 1000"));
    }
    let entries = s.store.audit_entries(q.after.unwrap_or(0), limit)?;
    let items = entries
        .iter()
        .map(|e| AuditEntry {
            seq: e.seq,
            at: crate::store::rfc3339(e.at),
            actor: e.actor.clone(),
            action: e.action.clone(),
            target: e.target.clone(),
            details: e
                .details
                .as_deref()
                .and_then(|d| serde_json::from_str::<Value>(d).ok()),
            prev_hash: e.prev_hash.clone(),
            hash: e.hash.clone(),
        })
        .collect();
    Ok(axum::Json(AuditPage { items }))
}
