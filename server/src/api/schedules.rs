//! `/v1/schedules`: create, list, show (next three runs, history), edit, delete, and
//! run the latest complete period now. Reading needs any reading role; changes need
//! compliance or admin. Every change is in the audit chain.

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

use super::{ApiError, ApiResult, AppState, READ, WRITE, auth, read_body};
use crate::schedules::{self, ScheduleSpec, ScheduleView};
use crate::service::{Catalog, Service};
use crate::store::{JobView, ScheduleRow};

fn parse_spec(s: &Service, body: &[u8]) -> ApiResult<ScheduleSpec> {
    let spec: ScheduleSpec =
        serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(body))
            .map_err(|e| ApiError::bad_request(crate::service::field_error(&e)))?;
    let catalog = Catalog::load(&s.config, &s.store)?;
    spec.validate(s, &catalog, s.clock.now())
        .map_err(ApiError::bad_request)?;
    Ok(spec)
}

fn row_or_404(s: &Service, id: &str) -> ApiResult<ScheduleRow> {
    s.store
        .schedule(id)?
        .ok_or_else(|| ApiError::not_found(&format!("schedule {id}")))
}

fn new_schedule_id() -> String {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("the OS provides randomness");
    format!("sch_{}", hex::encode(b))
}

#[utoipa::path(post, path = "/v1/schedules", request_body = ScheduleSpec,
    responses((status = 201, body = ScheduleView)))]
pub(super) async fn create(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let p = auth(&s, &headers, WRITE)?;
    let body = read_body(&s, body).await?;
    let spec = parse_spec(&s, &body)?;
    let id = new_schedule_id();
    let value = serde_json::to_value(&spec).map_err(anyhow::Error::from)?;
    let now = s.now_ms();
    s.store.insert_schedule(&id, &value, &p, now)?;
    s.store
        .audit(now, &p.actor(), "schedule.created", Some(&id), Some(&value))?;
    let row = row_or_404(&s, &id)?;
    let v = schedules::typed_view(&s, &row, s.clock.now())?;
    Ok((StatusCode::CREATED, axum::Json(v)).into_response())
}

/// Every schedule.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ScheduleList {
    /// The schedules.
    pub schedules: Vec<ScheduleView>,
}

/// An export a manual run queued, and every export it queued.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RunQueued {
    /// The latest period's export.
    #[serde(flatten)]
    pub export: JobView,
    /// The ids of every export queued.
    pub queued: Vec<String>,
}

/// What a schedule would do (`POST /v1/schedules/preview`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SchedulePreview {
    /// When it runs, in words.
    pub explanation: String,
    /// The next three runs, RFC 3339 in the schedule's timezone.
    pub next_runs: Vec<String>,
    /// The periods those runs export.
    pub periods: Vec<PeriodPreview>,
}

/// One period a schedule would export.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PeriodPreview {
    /// Its label (`2026-Q1`).
    pub period: String,
    /// The export's name.
    pub name: String,
    /// Start, RFC 3339 in the schedule's timezone.
    pub from: String,
    /// End (exclusive), RFC 3339 in the schedule's timezone.
    pub to: String,
    /// When it runs (the end plus the delay).
    pub runs_at: String,
}

#[utoipa::path(get, path = "/v1/schedules", responses((status = 200, body = ScheduleList)))]
pub(super) async fn list(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<axum::Json<ScheduleList>> {
    auth(&s, &headers, READ)?;
    let now = s.clock.now();
    let mut out = Vec::new();
    for row in s.store.schedules()? {
        out.push(schedules::typed_view(&s, &row, now)?);
    }
    Ok(axum::Json(ScheduleList { schedules: out }))
}

#[utoipa::path(get, path = "/v1/schedules/{id}", params(("id" = String, Path, description = "The schedule's id (`sch_...`)")),
    responses((status = 200, body = ScheduleView)))]
pub(super) async fn get(
    State(s): State<AppState>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<axum::Json<ScheduleView>> {
    auth(&s, &headers, READ)?;
    let row = row_or_404(&s, &id)?;
    Ok(axum::Json(schedules::typed_view(&s, &row, s.clock.now())?))
}

#[utoipa::path(put, path = "/v1/schedules/{id}", params(("id" = String, Path, description = "The schedule's id (`sch_...`)")), request_body = ScheduleSpec,
    responses((status = 200, body = ScheduleView)))]
pub(super) async fn update(
    State(s): State<AppState>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    body: Body,
) -> ApiResult<axum::Json<ScheduleView>> {
    let p = auth(&s, &headers, WRITE)?;
    row_or_404(&s, &id)?;
    let body = read_body(&s, body).await?;
    let spec = parse_spec(&s, &body)?;
    let value = serde_json::to_value(&spec).map_err(anyhow::Error::from)?;
    let now = s.now_ms();
    if !s.store.update_schedule(&id, &value, now)? {
        return Err(ApiError::not_found(&format!("schedule {id}")));
    }
    s.store
        .audit(now, &p.actor(), "schedule.updated", Some(&id), Some(&value))?;
    let row = row_or_404(&s, &id)?;
    Ok(axum::Json(schedules::typed_view(&s, &row, s.clock.now())?))
}

#[utoipa::path(delete, path = "/v1/schedules/{id}", params(("id" = String, Path, description = "The schedule's id (`sch_...`)")),
    responses((status = 204, description = "Deleted; its exports stay")))]
pub(super) async fn delete(
    State(s): State<AppState>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<StatusCode> {
    let p = auth(&s, &headers, WRITE)?;
    let now = s.now_ms();
    if !s.store.delete_schedule(&id, now)? {
        return Err(ApiError::not_found(&format!("schedule {id}")));
    }
    s.store
        .audit(now, &p.actor(), "schedule.deleted", Some(&id), None)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Runs the latest period that has ended (no delay applies): 202 with the export, or
/// 409 naming the export that already ran it.
#[utoipa::path(post, path = "/v1/schedules/{id}/run", params(("id" = String, Path, description = "The schedule's id (`sch_...`)")),
    responses((status = 202, body = RunQueued),
        (status = 409, description = "The period already ran, or none has ended", body = super::ErrorBody)))]
pub(super) async fn run(
    State(s): State<AppState>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Response> {
    let p = auth(&s, &headers, WRITE)?;
    let row = row_or_404(&s, &id)?;
    let now = s.clock.now();
    match schedules::run_now(&s, &row, now)? {
        schedules::RunNow::Queued(ids) => {
            s.store.audit(
                now.timestamp_millis(),
                &p.actor(),
                "schedule.run_requested",
                Some(&id),
                Some(&json!({"export_ids": ids})),
            )?;
            let last = ids.last().cloned().unwrap_or_default();
            let job = s
                .store
                .job(&last)?
                .ok_or_else(|| ApiError::not_found(&format!("export {last}")))?;
            let v = RunQueued {
                export: job.view(),
                queued: ids,
            };
            Ok((StatusCode::ACCEPTED, axum::Json(v)).into_response())
        }
        schedules::RunNow::AlreadyRan { period, export_id } => Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("period {period} of this schedule already ran as export {export_id}"),
        )),
        schedules::RunNow::NoPeriod => Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "no period of this schedule has ended yet",
        )),
    }
}

/// `POST /v1/schedules/preview`: what a schedule would do, without saving it: the next
/// three runs in its timezone and the periods they export, and a sentence saying when
/// it runs. The body is a schedule as for `POST /v1/schedules` (checked the same way).
#[utoipa::path(post, path = "/v1/schedules/preview", request_body = ScheduleSpec,
    responses((status = 200, body = SchedulePreview)))]
pub(super) async fn preview(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<axum::Json<SchedulePreview>> {
    auth(&s, &headers, READ)?;
    let body = read_body(&s, body).await?;
    let spec = parse_spec(&s, &body)?;
    let (cadence, tz) = spec.cadence().map_err(ApiError::bad_request)?;
    let now = s.clock.now();
    let runs = schedules::period::next_runs(&cadence, tz, spec.delay(), now, 3);
    // The periods those runs export: the first three ending after `now - delay`.
    let upcoming = schedules::period::periods_due(
        &cadence,
        tz,
        spec.delay(),
        now - spec.delay(),
        chrono::DateTime::<chrono::Utc>::MAX_UTC,
        3,
    );
    let mut periods = Vec::new();
    for p in upcoming {
        let name = schedules::period::render_name(&spec.name_template, &spec.name, &p)
            .map_err(|e| ApiError::bad_request(format!("name_template: {e}")))?;
        periods.push(PeriodPreview {
            period: p.label,
            name,
            from: p.start.with_timezone(&tz).to_rfc3339(),
            to: p.end.with_timezone(&tz).to_rfc3339(),
            runs_at: p.due.with_timezone(&tz).to_rfc3339(),
        });
    }
    Ok(axum::Json(SchedulePreview {
        explanation: schedules::explain(&spec),
        next_runs: runs.iter().map(|t| t.to_rfc3339()).collect(),
        periods,
    }))
}
