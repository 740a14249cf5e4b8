//! `POST /v1/ingest/{dataset}`: checks line lengths, parses the body off the async
//! threads and hands the rows to that dataset's ingest batcher.

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use evidex_engine::ingest;
use evidex_engine::model::Dataset;
use serde::Serialize;

use super::{ApiError, ApiResult, AppState, INGEST, auth, decode_body, read_body};
use crate::service::IngestItem;

/// The datasets that take records.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "kebab-case")]
#[allow(dead_code)] // named in the OpenAPI document only: the path is checked by `Dataset::parse`
pub(super) enum IngestDataset {
    /// Decision events.
    Events,
    /// Escalation updates.
    Escalations,
    /// Configuration versions.
    ConfigVersions,
}

/// What an ingest request stored.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IngestResult {
    /// Valid records in the request (stored now or before).
    pub accepted: u64,
    /// Of those, records whose id was already stored: not stored again.
    pub duplicates: u64,
    /// Lines refused.
    pub rejected: usize,
    /// Unpaired UTF-16 surrogates in JSON strings replaced with U+FFFD.
    pub replaced_surrogates: u64,
    /// The first 100 refused lines, with why.
    pub errors: Vec<LineError>,
}

/// A refused line.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LineError {
    /// 1-based line (or array element) number.
    pub line: u64,
    /// What is wrong, naming the field.
    pub message: String,
}

/// Each response comes after the records are committed to the lake (durable); a
/// request is stored whole or not at all.
#[utoipa::path(post, path = "/v1/ingest/{dataset}",
    params(("dataset" = IngestDataset, Path, description = "Which table the records go to")),
    request_body(description = "NDJSON, or a JSON array of records (`Content-Encoding: gzip` accepted)",
        content(("application/x-ndjson"), ("application/json"))),
    responses(
        (status = 200, description = "Stored (or already stored); refused lines named", body = IngestResult),
        (status = 413, description = "The body, or one line, is over its limit", body = super::ErrorBody),
        (status = 507, description = "The disk is full: nothing of the request was stored", body = super::ErrorBody),
    ))]
pub(super) async fn ingest_handler(
    State(s): State<AppState>,
    UrlPath(dataset): UrlPath<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<axum::Json<IngestResult>> {
    let principal = auth(&s, &headers, INGEST)?;
    s.rate_limits
        .check(crate::limits::Limited::Ingest, &principal.token_id)?;
    let Some(ds) = Dataset::parse(&dataset).filter(|_| dataset != "config_versions") else {
        return Err(ApiError::not_found("dataset"));
    };
    let batcher = s
        .ingest
        .get(&ds)
        .ok_or_else(|| anyhow::anyhow!("no ingest batcher in this process"))?;
    // From here until its rows are queued, the batcher knows this request is coming.
    let arrival = batcher.arrive();
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
    fail::fail_point!("ingest.after_parse");
    let (rows, rejected) = (parsed.rows, parsed.rejected);
    let accepted = rows.len() as u64;
    let mut duplicates = 0;
    if !rows.is_empty() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        batcher
            .send(IngestItem { rows, reply: tx }, arrival)
            .await?;
        duplicates = rx
            .await
            .map_err(|_| anyhow::anyhow!("the ingest batcher stopped"))?
            .map_err(|e| {
                if e.storage_full {
                    // RFC 4918 §11.5: the server cannot store what the request needs.
                    ApiError::new(
                        StatusCode::INSUFFICIENT_STORAGE,
                        "insufficient_storage",
                        format!(
                            "storing the records failed, the disk is full: {}; none of this request was stored, send it again once space is freed",
                            e.message
                        ),
                    )
                } else {
                    anyhow::anyhow!("storing the records failed: {}", e.message).into()
                }
            })?;
        fail::fail_point!("ingest.before_response");
    }
    let records = &s.metrics.ingest_records;
    records
        .with_label_values(&[ds.cli_name(), "accepted"])
        .inc_by(accepted);
    records
        .with_label_values(&[ds.cli_name(), "rejected"])
        .inc_by(rejected.len() as u64);
    let errors = rejected
        .iter()
        .take(100)
        .map(|r| LineError {
            line: r.line,
            message: r.message.clone(),
        })
        .collect();
    Ok(axum::Json(IngestResult {
        accepted,
        duplicates,
        rejected: rejected.len(),
        replaced_surrogates: parsed.replaced_surrogates,
        errors,
    }))
}
