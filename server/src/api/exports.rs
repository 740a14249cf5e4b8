//! `/v1/exports`: preview, create (with `Idempotency-Key`), list, get, cancel and
//! re-run export jobs, and the retention sweep that expires old artifacts.

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use evidex_engine::export;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{
    ApiError, ApiResult, AppState, Params, READ, WRITE, auth, job_or_404, plan_definition,
    read_body,
};
use crate::limits::Limited;
use crate::service::{self, ExportParams, Service};
use crate::store::{JobView, Principal};

/// What `POST /v1/exports/preview` counts.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PreviewCounts {
    /// Records of the main dataset (events, or a definition's rows).
    pub records: u64,
    /// Rows per dataset: `events` (or the definition's name) and each included one.
    pub by_dataset: BTreeMap<String, u64>,
}

/// The distinct values of an event field (`POST /v1/exports/values`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FieldValues {
    /// The field asked for.
    pub field: String,
    /// At most 200, redacted like an export, sorted.
    pub values: Vec<String>,
}

/// A page of export jobs, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ExportPage {
    /// The jobs.
    pub items: Vec<JobView>,
    /// Pass as `cursor` for the next page; null on the last.
    pub next_cursor: Option<String>,
}

#[utoipa::path(post, path = "/v1/exports/preview", request_body = ExportParams,
    responses((status = 200, body = PreviewCounts)))]
pub(super) async fn preview(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<axum::Json<PreviewCounts>> {
    let principal = auth(&s, &headers, READ)?;
    s.rate_limits.check(Limited::Preview, &principal.token_id)?;
    let body = read_body(&s, body).await?;
    let (valid, pinned) = scoped(&s, &body).await?;
    let p = export::preview(&s.lake, &pinned, &valid.request).await?;
    Ok(axum::Json(PreviewCounts {
        records: p.records,
        by_dataset: p.by_dataset,
    }))
}

/// `POST /v1/exports/values`: `{field, from, to, timezone, filters, ...}` gives the
/// distinct values of an event field (policy, gateway_id, consumer_group, consumer,
/// provider, model, reason_code) within that scope, redacted like an export, at most
/// 200: what the console offers as filter values.
#[utoipa::path(post, path = "/v1/exports/values",
    request_body(content = ref("#/components/schemas/ValuesRequest"), description = "A preview's scope and the field"),
    responses((status = 200, body = FieldValues)))]
pub(super) async fn values(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<axum::Json<FieldValues>> {
    let principal = auth(&s, &headers, READ)?;
    s.rate_limits.check(Limited::Preview, &principal.token_id)?;
    let body = read_body(&s, body).await?;
    let mut v: serde_json::Map<String, Value> =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("body: {e}")))?;
    let field = match v.remove("field") {
        Some(Value::String(f)) => f,
        _ => return Err(ApiError::bad_request("field: required, e.g. \"policy\"")),
    };
    let rest = serde_json::to_vec(&v).map_err(anyhow::Error::from)?;
    let (valid, pinned) = scoped(&s, &rest).await?;
    let values = export::distinct_values(&s.lake, &pinned, &valid.request, &field, 200).await?;
    Ok(axum::Json(FieldValues { field, values }))
}

/// A preview-shaped body checked and its tables pinned: what preview and values read.
async fn scoped(
    s: &Service,
    body: &[u8],
) -> ApiResult<(service::ValidExport, export::PinnedTables)> {
    let catalog = service::Catalog::load(&s.config, &s.store)?;
    let mut valid = service::parse_preview(body, &s.config, &catalog)?;
    let pinned = s.prepare(&mut valid.request).await?;
    Ok((valid, pinned))
}

async fn create_job_from(
    s: &Service,
    principal: &Principal,
    valid: service::ValidExport,
    idempotency_key: Option<&str>,
    action: &str,
) -> ApiResult<Response> {
    s.rate_limits.check(Limited::Create, &principal.token_id)?;
    if valid.request.definition.is_some() {
        // Plan the SQL now: a missing column is the caller's error, not a worker's.
        plan_definition(s, &valid.request).await?;
    }
    let now = s.clock.now();
    let id = export::new_export_id(now);
    let (job, created) = s.store.create_job_capped(
        &id,
        &valid.request.name,
        &valid.description,
        &valid.params,
        principal,
        idempotency_key,
        now.timestamp_millis(),
        Some(s.config.limits.concurrent_exports),
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
    Ok((status, axum::Json(job.view())).into_response())
}

#[utoipa::path(post, path = "/v1/exports", request_body = ExportParams,
    params(("Idempotency-Key" = Option<String>, Header,
        description = "1 to 200 characters: the same key answers the job it created (200) instead of a new one")),
    responses(
        (status = 201, description = "Created", body = JobView),
        (status = 200, description = "The job this Idempotency-Key created before", body = JobView),
    ))]
pub(super) async fn create_export(
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

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    /// Only jobs in this status: `queued`, `processing`, `completed`, `failed`,
    /// `cancelled` or `expired`.
    #[param(value_type = String, required = false)]
    status: Option<String>,
    /// Jobs per page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500, value_type = i64, required = false)]
    limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    #[param(value_type = String, required = false)]
    cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/exports", params(ListQuery),
    responses((status = 200, body = ExportPage)))]
pub(super) async fn list_exports(
    State(s): State<AppState>,
    headers: HeaderMap,
    Params(q): Params<ListQuery>,
) -> ApiResult<axum::Json<ExportPage>> {
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
    let items = jobs.iter().take(limit as usize).map(|j| j.view()).collect();
    let next = if more {
        jobs.get(limit as usize - 1).map(|j| j.id.clone())
    } else {
        None
    };
    Ok(axum::Json(ExportPage {
        items,
        next_cursor: next,
    }))
}

#[utoipa::path(get, path = "/v1/exports/{id}", params(("id" = String, Path, description = "The job's id (`exp_...`)")),
    responses((status = 200, body = JobView)))]
pub(super) async fn get_export(
    State(s): State<AppState>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> ApiResult<axum::Json<JobView>> {
    auth(&s, &headers, READ)?;
    Ok(axum::Json(job_or_404(&s, &id)?.view()))
}

#[utoipa::path(post, path = "/v1/exports/{id}/cancel", params(("id" = String, Path, description = "The job's id")),
    responses((status = 200, description = "The cancelled job", body = JobView)))]
pub(super) async fn cancel_export(
    State(s): State<AppState>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> ApiResult<axum::Json<JobView>> {
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
    Ok(axum::Json(job_or_404(&s, &id)?.view()))
}

#[utoipa::path(post, path = "/v1/exports/{id}/rerun", params(("id" = String, Path, description = "The job to run again")),
    responses((status = 201, description = "The new job", body = JobView)))]
pub(super) async fn rerun_export(
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

/// Removes artifacts past their retention (from object storage too) and marks
/// their jobs expired. Every `serve` node runs it; deleting twice is harmless.
pub async fn expire_artifacts(s: &Service) -> anyhow::Result<usize> {
    let ids = s.store.expired_artifacts(s.now_ms())?;
    for id in &ids {
        if let Some(remote) = &s.remote_artifacts {
            remote.delete_job(id, None).await?;
        }
        let dir = s.job_dir(id)?;
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        s.store.mark_expired(id)?;
    }
    Ok(ids.len())
}
