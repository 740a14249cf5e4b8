//! `/v1/settings/delivery` (admin): the bucket every export is delivered to, its test
//! connection, and `POST /v1/exports/{id}/deliver` to deliver (again) by hand. The
//! secret access key is write-only: no response, log line or audit entry holds it.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{ADMIN, ApiError, ApiResult, AppState, WRITE, auth, job_or_404, read_body};
use crate::delivery::probe::Report as ProbeReport;
use crate::delivery::{self, SettingsInput, probe};
use crate::store::JobView;

/// `GET /v1/settings/delivery`: the settings without the secret
/// (`configured: true` and `secret_access_key_set: true` instead), or
/// `{configured: false}`.
#[utoipa::path(get, path = "/v1/settings/delivery",
    responses((status = 200, description = "The settings with `secret_access_key_set: true` (never the secret), or `{\"configured\": false}`", body = ref("#/components/schemas/DeliverySettingsView"))))]
pub(super) async fn get_settings(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<axum::Json<Value>> {
    auth(&s, &headers, ADMIN)?;
    let settings = delivery::load(&s.store, &s.master_key)?.map(|(d, _)| d);
    Ok(axum::Json(delivery::public_view(settings.as_ref())))
}

/// `PUT /v1/settings/delivery`: replaces the settings; a body without
/// `secret_access_key` keeps the stored secret.
#[utoipa::path(put, path = "/v1/settings/delivery", request_body(content = ref("#/components/schemas/DeliverySettingsRequest"), description = "The settings, and `secret_access_key` (write-only; kept as stored when left out)"),
    responses((status = 200, description = "The settings as stored (without the secret)", body = ref("#/components/schemas/DeliverySettingsView"))))]
pub(super) async fn put_settings(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<axum::Json<Value>> {
    let p = auth(&s, &headers, ADMIN)?;
    let body = read_body(&s, body).await?;
    let input = SettingsInput::parse(&body).map_err(ApiError::bad_request)?;
    let (settings, secret) =
        delivery::resolve_input(&s.store, &s.master_key, &input).map_err(ApiError::bad_request)?;
    delivery::save(
        &s.store,
        &s.master_key,
        &settings,
        &secret,
        &p.actor(),
        s.now_ms(),
    )?;
    let view = delivery::public_view(Some(&settings));
    s.store.audit(
        s.now_ms(),
        &p.actor(),
        "settings.delivery.updated",
        None,
        Some(&json!({"settings": view, "secret_changed": input.secret_access_key.is_some()})),
    )?;
    Ok(axum::Json(view))
}

/// `POST /v1/settings/delivery/test`: the test connection, with the body's settings
/// (before saving; the stored secret when the body has none) or, for an empty
/// body, the stored ones. Always 200 with `{ok, steps, supports}` once it ran.
#[utoipa::path(post, path = "/v1/settings/delivery/test", request_body(content = ref("#/components/schemas/DeliverySettingsRequest"), description = "The settings to test (an empty body: the stored ones), and `secret_access_key` (the stored one when left out)"),
    responses((status = 200, description = "The test ran: each step and what the store supports", body = ProbeReport)))]
pub(super) async fn test(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<axum::Json<ProbeReport>> {
    auth(&s, &headers, ADMIN)?;
    let body = read_body(&s, body).await?;
    let (settings, secret) = if body.iter().all(u8::is_ascii_whitespace) {
        delivery::load(&s.store, &s.master_key)?.ok_or_else(|| {
            ApiError::bad_request(
                "delivery is not set up: send the settings to test, or PUT /v1/settings/delivery first",
            )
        })?
    } else {
        let input = SettingsInput::parse(&body).map_err(ApiError::bad_request)?;
        delivery::resolve_input(&s.store, &s.master_key, &input).map_err(ApiError::bad_request)?
    };
    let report = probe::run(
        &settings,
        &secret,
        s.config.network.allow_private_targets,
        Duration::from_secs(s.config.delivery.step_timeout_secs),
    )
    .await;
    Ok(axum::Json(report))
}

/// `POST /v1/exports/{id}/deliver`: queues the delivery of a completed export now
/// (a new retry window); 202 with the job.
#[utoipa::path(post, path = "/v1/exports/{id}/deliver", params(("id" = String, Path, description = "A completed export")),
    responses((status = 202, description = "Queued; the job with its delivery", body = JobView),
        (status = 409, description = "Delivery is not set up, or the export is not completed", body = super::ErrorBody)))]
pub(super) async fn deliver(
    State(s): State<AppState>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Response> {
    let p = auth(&s, &headers, WRITE)?;
    let job = job_or_404(&s, &id)?;
    if delivery::load(&s.store, &s.master_key)?.is_none() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "delivery is not set up (PUT /v1/settings/delivery)",
        ));
    }
    if !s.store.queue_delivery(&job.id, s.now_ms())? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!(
                "export {} is {}; only a completed export can be delivered",
                job.id, job.status
            ),
        ));
    }
    s.store.audit(
        s.now_ms(),
        &p.actor(),
        "export.delivery_requested",
        Some(&job.id),
        None,
    )?;
    let job = job_or_404(&s, &id)?;
    Ok((StatusCode::ACCEPTED, axum::Json(job.view())).into_response())
}
