//! `/v1/presets` (built-in, directory and saved SQL definitions; saved ones can be
//! created, changed and deleted) and `/v1/settings/redaction` (the rules new exports
//! apply). Every change is written to the audit chain.

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use evidex_engine::definition::{self, Definition};
use evidex_engine::export::Format;
use evidex_engine::redact::RedactionRules;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ADMIN, ApiError, ApiResult, AppState, READ, WRITE, auth, read_body};
use crate::service::{self, Catalog, REDACTION_SETTING};

/// The body of `POST /v1/presets` and `PUT /v1/presets/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PresetBody {
    /// What `preset` in an export names: 1 to 63 of `a-z`, `0-9`, `-`, starting with
    /// a letter or digit.
    name: String,
    /// One line (at most 500 bytes).
    #[serde(default)]
    description: String,
    /// Default format: `csv|json|ndjson|parquet` (default `csv`).
    #[serde(default)]
    format: Option<String>,
    /// One `SELECT`/`WITH` query over the scoped views.
    sql: String,
}

fn definition_json(d: &Definition) -> Value {
    let (id, source, read_only) = match d.source.strip_prefix("saved:") {
        Some(id) => (Value::from(id), "saved", false),
        None if d.source.starts_with("queries/") => (Value::Null, "builtin", true),
        None => (Value::Null, "directory", true),
    };
    json!({"id": id, "name": d.name, "description": d.description, "format": d.format,
           "sql": d.sql, "source": source, "origin": d.source, "read_only": read_only})
}

/// Checks a preset body exactly as a definition file or `--sql` is checked (the SQL
/// rules of `definition::check_sql`), then plans it over the current tables so a
/// missing column is refused now, not when a job runs.
async fn checked(
    s: &service::Service,
    body: &[u8],
    catalog: &Catalog,
    own_id: Option<&str>,
) -> ApiResult<(String, String, Format, String)> {
    let b: PresetBody =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("body: {e}")))?;
    let name = b.name.trim().to_string();
    let valid_name = (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && !name.starts_with('-');
    if !valid_name {
        return Err(ApiError::bad_request(
            "name: use 1 to 63 characters of a-z, 0-9 and -, not starting with -",
        ));
    }
    if let Some(other) = catalog.presets.iter().find(|d| d.name == name) {
        let same = own_id.is_some_and(|id| other.source == format!("saved:{id}"));
        if !same {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!(
                    "name: a preset named {name:?} exists already ({})",
                    other.source
                ),
            ));
        }
    }
    if b.description.len() > 500 {
        return Err(ApiError::bad_request("description: the limit is 500 bytes"));
    }
    let format = Format::parse(b.format.as_deref().unwrap_or("csv"))?;
    if format == Format::Pdf {
        return Err(ApiError::bad_request(
            "format: a definition exports csv, json, ndjson or parquet; the PDF report is format pdf without a preset",
        ));
    }
    definition::check_sql(&b.sql).map_err(|e| ApiError::bad_request(e.to_string()))?;
    // Plan it like an export of it would be planned.
    let probe = json!({"name": "preset-check", "from": "2026-01-01", "to": "2026-01-01",
                       "sql": b.sql, "format": format.as_str()});
    let valid = service::parse_export(probe.to_string().as_bytes(), &s.config, catalog)?;
    super::plan_definition(s, &valid.request).await?;
    Ok((name, b.description.trim().to_string(), format, b.sql))
}

pub(super) async fn list(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<axum::Json<Value>> {
    auth(&s, &headers, READ)?;
    let catalog = Catalog::load(&s.config, &s.store)?;
    let items: Vec<Value> = catalog.presets.iter().map(definition_json).collect();
    Ok(axum::Json(json!({"items": items})))
}

pub(super) async fn get_one(
    State(s): State<AppState>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> ApiResult<axum::Json<Value>> {
    auth(&s, &headers, READ)?;
    let catalog = Catalog::load(&s.config, &s.store)?;
    catalog
        .presets
        .iter()
        .find(|d| d.name == id || d.source == format!("saved:{id}"))
        .map(|d| axum::Json(definition_json(d)))
        .ok_or_else(|| ApiError::not_found("preset"))
}

pub(super) async fn create(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let p = auth(&s, &headers, WRITE)?;
    let body = read_body(&s, body).await?;
    let catalog = Catalog::load(&s.config, &s.store)?;
    let (name, description, format, sql) = checked(&s, &body, &catalog, None).await?;
    let now = s.now_ms();
    let saved = s
        .store
        .insert_preset(&name, &description, format.as_str(), &sql, &p.actor(), now)?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("name: a preset named {name:?} exists already"),
            )
        })?;
    s.store.audit(
        now,
        &p.actor(),
        "preset.created",
        Some(&saved.id),
        Some(&json!({"name": name, "format": format.as_str(), "sql_sha256": evidex_engine::integrity::sha256_hex(sql.as_bytes())})),
    )?;
    let d = Catalog::load(&s.config, &s.store)?
        .presets
        .into_iter()
        .find(|d| d.source == format!("saved:{}", saved.id))
        .ok_or_else(|| anyhow::anyhow!("the saved preset vanished"))?;
    Ok((StatusCode::CREATED, axum::Json(definition_json(&d))).into_response())
}

/// A built-in or directory preset cannot be changed through the API.
fn read_only(d: &Definition) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "read_only",
        format!(
            "preset {:?} comes from {} and is read-only; save a copy under another name",
            d.name, d.source
        ),
    )
}

/// The saved preset `id` (or named `id`), or why it cannot be changed.
fn saved_target(catalog: &Catalog, id: &str) -> ApiResult<String> {
    let d = catalog
        .presets
        .iter()
        .find(|d| d.name == id || d.source == format!("saved:{id}"))
        .ok_or_else(|| ApiError::not_found("preset"))?;
    d.source
        .strip_prefix("saved:")
        .map(str::to_string)
        .ok_or_else(|| read_only(d))
}

pub(super) async fn update(
    State(s): State<AppState>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<axum::Json<Value>> {
    let p = auth(&s, &headers, WRITE)?;
    let body = read_body(&s, body).await?;
    let catalog = Catalog::load(&s.config, &s.store)?;
    let id = saved_target(&catalog, &id)?;
    let (name, description, format, sql) = checked(&s, &body, &catalog, Some(&id)).await?;
    let now = s.now_ms();
    if !s
        .store
        .update_preset(&id, &name, &description, format.as_str(), &sql, now)?
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("name: a preset named {name:?} exists already"),
        ));
    }
    s.store.audit(
        now,
        &p.actor(),
        "preset.updated",
        Some(&id),
        Some(&json!({"name": name, "format": format.as_str(), "sql_sha256": evidex_engine::integrity::sha256_hex(sql.as_bytes())})),
    )?;
    let d = Catalog::load(&s.config, &s.store)?
        .presets
        .into_iter()
        .find(|d| d.source == format!("saved:{id}"))
        .ok_or_else(|| ApiError::not_found("preset"))?;
    Ok(axum::Json(definition_json(&d)))
}

pub(super) async fn delete(
    State(s): State<AppState>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let p = auth(&s, &headers, WRITE)?;
    let catalog = Catalog::load(&s.config, &s.store)?;
    let id = saved_target(&catalog, &id)?;
    if !s.store.delete_preset(&id)? {
        return Err(ApiError::not_found("preset"));
    }
    s.store
        .audit(s.now_ms(), &p.actor(), "preset.deleted", Some(&id), None)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn get_redaction(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<axum::Json<Value>> {
    auth(&s, &headers, ADMIN)?;
    let catalog = Catalog::load(&s.config, &s.store)?;
    let source = if s.store.setting(REDACTION_SETTING)?.is_some() {
        "settings"
    } else {
        "configuration"
    };
    Ok(axum::Json(json!({
        "rules": catalog.redaction,
        "source": source,
        "builtin_detectors": evidex_engine::redact::BUILTIN_DETECTORS,
    })))
}

/// Replaces the redaction rules new exports apply (jobs already created keep the
/// rules they were created with). The rules are compiled before they are saved: an
/// unknown detector or a custom pattern that is not a valid regex is a 400 naming it.
pub(super) async fn put_redaction(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<axum::Json<Value>> {
    let p = auth(&s, &headers, ADMIN)?;
    let body = read_body(&s, body).await?;
    let rules: RedactionRules =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("body: {e}")))?;
    rules.compile().map_err(|e| match e {
        evidex_engine::EngineError::Config(m) | evidex_engine::EngineError::InvalidRequest(m) => {
            ApiError::bad_request(m)
        }
        other => ApiError::bad_request(other.to_string()),
    })?;
    let text = serde_json::to_string(&rules).map_err(anyhow::Error::from)?;
    let now = s.now_ms();
    s.store
        .set_setting(REDACTION_SETTING, &text, &p.actor(), now)?;
    s.store.audit(
        now,
        &p.actor(),
        "settings.redaction.updated",
        None,
        Some(&serde_json::to_value(&rules).map_err(anyhow::Error::from)?),
    )?;
    Ok(axum::Json(json!({"rules": rules, "source": "settings"})))
}
