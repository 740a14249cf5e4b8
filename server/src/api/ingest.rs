//! `POST /v1/ingest/{dataset}`: checks line lengths, parses the body off the async
//! threads and hands the rows to that dataset's ingest batcher.

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use evidex_engine::ingest;
use evidex_engine::model::Dataset;
use serde_json::{Value, json};

use super::{ApiError, ApiResult, AppState, INGEST, auth, decode_body, read_body};
use crate::service::IngestItem;

pub(super) async fn ingest_handler(
    State(s): State<AppState>,
    UrlPath(dataset): UrlPath<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<axum::Json<Value>> {
    let principal = auth(&s, &headers, INGEST)?;
    s.rate_limits
        .check(crate::limits::Limited::Ingest, &principal.token_id)?;
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
    fail::fail_point!("ingest.after_parse");
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
