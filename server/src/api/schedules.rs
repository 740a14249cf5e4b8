//! `/v1/schedules`: create, list, show (next three runs, history), edit, delete, and
//! run the latest complete period now. Reading needs any reading role; changes need
//! compliance or admin. Every change is in the audit chain.

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{ApiError, ApiResult, AppState, READ, WRITE, auth, read_body};
use crate::schedules::{self, ScheduleSpec};
use crate::service::{Catalog, Service};
use crate::store::ScheduleRow;

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
    let v = schedules::view(&s, &row, s.clock.now())?;
    Ok((StatusCode::CREATED, axum::Json(v)).into_response())
}

pub(super) async fn list(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<axum::Json<Value>> {
    auth(&s, &headers, READ)?;
    let now = s.clock.now();
    let mut out = Vec::new();
    for row in s.store.schedules()? {
        out.push(schedules::view(&s, &row, now)?);
    }
    Ok(axum::Json(json!({"schedules": out})))
}

pub(super) async fn get(
    State(s): State<AppState>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<axum::Json<Value>> {
    auth(&s, &headers, READ)?;
    let row = row_or_404(&s, &id)?;
    Ok(axum::Json(schedules::view(&s, &row, s.clock.now())?))
}

pub(super) async fn update(
    State(s): State<AppState>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    body: Body,
) -> ApiResult<axum::Json<Value>> {
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
    Ok(axum::Json(schedules::view(&s, &row, s.clock.now())?))
}

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
            let mut v = job.to_json();
            v["queued"] = json!(ids);
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
pub(super) async fn preview(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<axum::Json<Value>> {
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
        periods.push(json!({"period": p.label, "name": name,
            "from": p.start.with_timezone(&tz).to_rfc3339(),
            "to": p.end.with_timezone(&tz).to_rfc3339(),
            "runs_at": p.due.with_timezone(&tz).to_rfc3339()}));
    }
    Ok(axum::Json(json!({
        "explanation": schedules::explain(&spec),
        "next_runs": runs.iter().map(|t| t.to_rfc3339()).collect::<Vec<_>>(),
        "periods": periods,
    })))
}
