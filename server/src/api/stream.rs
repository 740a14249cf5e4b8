//! `GET /v1/events/stream`: decision events for SIEM pipelines, in ingest order,
//! one NDJSON page per request, the next page's cursor in the `Evidex-Cursor`
//! header (see `evidex_engine::stream` for why following it never skips or repeats
//! an event).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use evidex_engine::export::encode::Profile;
use evidex_engine::stream::{MAX_LIMIT, Start, StreamError, StreamRequest};
use serde_json::json;

use super::{ApiError, ApiResult, AppState, STREAM, auth};
use crate::service::{FilterParams, current_redaction};

/// Records per page when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 1000;
/// The longest `wait`, in seconds.
pub const MAX_WAIT_SECS: u64 = 60;

/// The response header holding the next page's cursor.
pub const CURSOR_HEADER: &str = "evidex-cursor";

/// The query of one page, parsed from `?cursor=&since=&limit=&profile=&wait=&...`.
#[derive(Debug, Default)]
pub struct StreamQuery {
    /// `cursor`.
    pub cursor: Option<String>,
    /// `since`: RFC 3339.
    pub since: Option<DateTime<Utc>>,
    /// `limit`.
    pub limit: Option<usize>,
    /// `profile`.
    pub profile: Profile,
    /// `wait`, seconds.
    pub wait: u64,
    /// `include_payloads` (default true).
    pub include_payloads: bool,
    /// The filters (repeat a parameter for several values).
    pub filters: FilterParams,
}

impl StreamQuery {
    /// Parses a query string (`application/x-www-form-urlencoded`).
    ///
    /// # Errors
    /// A message naming the parameter: unknown, repeated where one value is meant,
    /// or not a valid value.
    pub fn parse(query: &str) -> Result<StreamQuery, String> {
        let mut q = StreamQuery {
            include_payloads: true,
            ..StreamQuery::default()
        };
        let mut seen: Vec<String> = Vec::new();
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            let value = value.into_owned();
            let single = !matches!(
                key.as_ref(),
                "policy"
                    | "decision"
                    | "gateway"
                    | "consumer_group"
                    | "consumer"
                    | "provider"
                    | "model"
                    | "reason_code"
            );
            if single {
                if seen.iter().any(|k| k == key.as_ref()) {
                    return Err(format!("{key}: given more than once"));
                }
                seen.push(key.to_string());
            }
            let f = &mut q.filters;
            match key.as_ref() {
                "cursor" => q.cursor = Some(value).filter(|v| !v.is_empty()),
                "since" => {
                    let t = DateTime::parse_from_rfc3339(&value).map_err(|e| {
                        let hint = if value.contains(' ') {
                            " (a + in a query string means a space: write it %2B, or use Z)"
                        } else {
                            ""
                        };
                        format!("since: {value:?} is not an RFC 3339 instant like 2026-11-30T00:00:00Z{hint}: {e}")
                    })?;
                    q.since = Some(t.with_timezone(&Utc));
                }
                "limit" => {
                    let n: usize = value.parse().map_err(|_| {
                        format!("limit: {value:?} is not a whole number from 1 to {MAX_LIMIT}")
                    })?;
                    if n == 0 {
                        return Err("limit: must be at least 1".into());
                    }
                    q.limit = Some(n);
                }
                "profile" => q.profile = Profile::parse(&value).map_err(|e| e.to_string())?,
                "wait" => {
                    let n: u64 = value
                        .parse()
                        .map_err(|_| format!("wait: {value:?} is not a whole number of seconds"))?;
                    if n > MAX_WAIT_SECS {
                        return Err(format!("wait: at most {MAX_WAIT_SECS} seconds"));
                    }
                    q.wait = n;
                }
                "include_payloads" => {
                    q.include_payloads = match value.as_str() {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => {
                            return Err(format!(
                                "include_payloads: {value:?} is not true or false"
                            ));
                        }
                    }
                }
                "policy" => f.policy.push(value),
                "decision" => f.decision.push(value),
                "gateway" => f.gateway.push(value),
                "consumer_group" => f.consumer_group.push(value),
                "consumer" => f.consumer.push(value),
                "provider" => f.provider.push(value),
                "model" => f.model.push(value),
                "reason_code" => f.reason_code.push(value),
                "min_severity" => f.min_severity = Some(value),
                other => {
                    return Err(format!(
                        "{other}: unknown parameter; the stream takes cursor, since, limit, profile, wait, include_payloads and the export filters (policy, decision, gateway, consumer_group, consumer, provider, model, reason_code, min_severity)"
                    ));
                }
            }
        }
        if q.cursor.is_some() && q.since.is_some() {
            return Err("since: give either a cursor or since, not both".into());
        }
        Ok(q)
    }
}

/// Adds the stream's query parameters, headers and `410` to its OpenAPI operation.
pub fn describe(op: &mut serde_json::Value) {
    let string = json!({"type": "string"});
    let list = json!({"type": "array", "items": {"type": "string"}});
    let mut params = vec![
        json!({"name": "cursor", "in": "query", "schema": string, "description": "The Evidex-Cursor of the previous page"}),
        json!({"name": "since", "in": "query", "schema": {"type": "string", "format": "date-time"}, "description": "Start at the first commit at or after this ingest time (not with cursor)"}),
        json!({"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}, "description": format!("Records per page; a larger value is capped at {MAX_LIMIT}")}),
        json!({"name": "profile", "in": "query", "schema": {"type": "string", "enum": ["native", "ecs", "ocsf", "splunk_hec"], "default": "native"}}),
        json!({"name": "wait", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": MAX_WAIT_SECS, "default": 0}, "description": "Seconds to wait for new events when there are none"}),
        json!({"name": "include_payloads", "in": "query", "schema": {"type": "boolean", "default": true}}),
        json!({"name": "min_severity", "in": "query", "schema": {"type": "string", "enum": ["info", "low", "medium", "high", "critical"]}}),
    ];
    params.push(json!({"name": "decision", "in": "query", "style": "form", "explode": true,
        "schema": {"type": "array", "items": {"type": "string", "enum": ["allow", "block", "redact", "escalate", "flag"]}}}));
    for name in [
        "policy",
        "gateway",
        "consumer_group",
        "consumer",
        "provider",
        "model",
        "reason_code",
    ] {
        params.push(
            json!({"name": name, "in": "query", "schema": list, "style": "form", "explode": true}),
        );
    }
    op["parameters"] = json!(params);
    op["responses"]["200"] = json!({
        "description": "NDJSON, one event per line, in ingest order",
        "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
        "headers": {
            "Evidex-Cursor": {"schema": string, "description": "Where the next page starts"},
            "Evidex-Records": {"schema": {"type": "integer"}, "description": "Records in this page"},
            "Evidex-At-End": {"schema": {"type": "boolean"}, "description": "The page reached the newest data"},
            "Evidex-Limit": {"schema": {"type": "integer"}, "description": "The limit applied"},
        },
    });
    op["responses"]["410"] = json!({"description": "The cursor points at data retention has removed: {\"error\": {\"code\": \"cursor_expired\", \"message\", \"oldest_cursor\", \"oldest_version\", \"oldest_time\"}}"});
}

/// `GET /v1/events/stream`. Its query parameters are parsed by hand (a filter may
/// repeat), so [`describe`] adds them to the operation.
#[utoipa::path(get, path = "/v1/events/stream", responses((status = 200, description = "NDJSON")))]
pub async fn stream(
    State(s): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    auth(&s, &headers, STREAM)?;
    let q = StreamQuery::parse(query.as_deref().unwrap_or("")).map_err(ApiError::bad_request)?;
    let filters = q.filters.to_filters()?;
    let redactor = {
        let rules = current_redaction(&s.config, &s.store)?;
        let mut cached = s
            .stream_redactor
            .lock()
            .map_err(|_| anyhow::anyhow!("stream redactor lock poisoned"))?;
        match cached.as_ref() {
            Some((r, compiled)) if *r == rules => compiled.clone(),
            _ => {
                let compiled = Arc::new(rules.compile()?);
                *cached = Some((rules, compiled.clone()));
                compiled
            }
        }
    };
    let asked = q.limit.unwrap_or(DEFAULT_LIMIT);
    let request = StreamRequest {
        start: match (q.cursor, q.since) {
            (Some(c), _) => Start::Cursor(c),
            (None, Some(t)) => Start::Since(t),
            (None, None) => Start::Oldest,
        },
        limit: asked,
        filters,
        profile: q.profile,
        redactor,
        include_payloads: q.include_payloads,
    };
    // A long poll ends before the request timeout would cut it (an empty page then,
    // as when the wait runs out).
    let wait = q
        .wait
        .min(s.config.limits.request_timeout_secs.saturating_sub(1));
    let page = match s.stream.page(&request, Duration::from_secs(wait)).await {
        Ok(p) => p,
        Err(StreamError::Invalid(m)) => return Err(ApiError::bad_request(m)),
        Err(StreamError::Expired {
            message,
            oldest_cursor,
            oldest_version,
            oldest_time,
        }) => {
            let body = json!({"error": {
                "code": "cursor_expired",
                "message": message,
                "oldest_cursor": oldest_cursor,
                "oldest_version": oldest_version,
                "oldest_time": oldest_time.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            }});
            return Ok((StatusCode::GONE, axum::Json(body)).into_response());
        }
        Err(StreamError::Engine(e)) => return Err(e.into()),
    };
    let mut response = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(futures::stream::iter(
            page.body.into_iter().map(Ok::<_, std::convert::Infallible>),
        )),
    )
        .into_response();
    let h = response.headers_mut();
    let value = |v: String| HeaderValue::from_str(&v).expect("ASCII header value");
    h.insert(CURSOR_HEADER, value(page.cursor));
    h.insert("evidex-records", value(page.records.to_string()));
    h.insert("evidex-at-end", value(page.at_end.to_string()));
    h.insert("evidex-limit", value(asked.min(MAX_LIMIT).to_string()));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
