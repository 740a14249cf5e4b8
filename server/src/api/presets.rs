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
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{ADMIN, ApiError, ApiResult, AppState, READ, WRITE, auth, read_body};
use crate::service::{self, Catalog, REDACTION_SETTING};

/// The body of `POST /v1/presets` and `PUT /v1/presets/{id}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PresetRequest)]
pub(super) struct PresetBody {
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

/// A SQL definition as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Preset)]
pub struct PresetView {
    /// The saved preset's id; null for built-in and directory ones.
    pub id: Option<String>,
    /// What `preset` in an export names.
    pub name: String,
    /// One line saying what it exports.
    pub description: String,
    /// Default format.
    pub format: &'static str,
    /// The query over the scoped views.
    pub sql: String,
    /// `builtin`, `directory` or `saved`.
    pub source: &'static str,
    /// Where it comes from: `queries/NAME.sql`, a file of `presets_dir`, or
    /// `saved:ID`.
    pub origin: String,
    /// Built-in and directory presets cannot be changed through the API.
    pub read_only: bool,
}

/// Every SQL definition.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PresetList {
    /// Built-in first, then directory, then saved ones.
    pub items: Vec<PresetView>,
}

/// The redaction rules in force.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RedactionSetting {
    /// The rules new exports apply.
    pub rules: RedactionRules,
    /// `settings` (saved through the API) or `configuration`.
    pub source: &'static str,
    /// The names `rules.detectors` may use (only in `GET`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub builtin_detectors: Option<Vec<&'static str>>,
}

fn definition_view(d: &Definition) -> PresetView {
    let (id, source, read_only) = match d.source.strip_prefix("saved:") {
        Some(id) => (Some(id.to_string()), "saved", false),
        None if d.source.starts_with("queries/") => (None, "builtin", true),
        None => (None, "directory", true),
    };
    PresetView {
        id,
        name: d.name.clone(),
        description: d.description.clone(),
        format: d.format.as_str(),
        sql: d.sql.clone(),
        source,
        origin: d.source.clone(),
        read_only,
    }
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

#[utoipa::path(get, path = "/v1/presets", responses((status = 200, body = PresetList)))]
pub(super) async fn list(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<axum::Json<PresetList>> {
    auth(&s, &headers, READ)?;
    let catalog = Catalog::load(&s.config, &s.store)?;
    let items = catalog.presets.iter().map(definition_view).collect();
    Ok(axum::Json(PresetList { items }))
}

#[utoipa::path(get, path = "/v1/presets/{id}", params(("id" = String, Path, description = "A saved preset's id, or any preset's name")), responses((status = 200, body = PresetView)))]
pub(super) async fn get_one(
    State(s): State<AppState>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> ApiResult<axum::Json<PresetView>> {
    auth(&s, &headers, READ)?;
    let catalog = Catalog::load(&s.config, &s.store)?;
    catalog
        .presets
        .iter()
        .find(|d| d.name == id || d.source == format!("saved:{id}"))
        .map(|d| axum::Json(definition_view(d)))
        .ok_or_else(|| ApiError::not_found("preset"))
}

#[utoipa::path(post, path = "/v1/presets", request_body = PresetBody,
    responses((status = 201, body = PresetView),
        (status = 409, description = "A preset of that name exists", body = super::ErrorBody)))]
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
    Ok((StatusCode::CREATED, axum::Json(definition_view(&d))).into_response())
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

#[utoipa::path(put, path = "/v1/presets/{id}", params(("id" = String, Path, description = "A saved preset's id, or any preset's name")), request_body = PresetBody,
    responses((status = 200, body = PresetView),
        (status = 409, description = "Read-only, or the name is taken", body = super::ErrorBody)))]
pub(super) async fn update(
    State(s): State<AppState>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<axum::Json<PresetView>> {
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
    Ok(axum::Json(definition_view(&d)))
}

#[utoipa::path(delete, path = "/v1/presets/{id}", params(("id" = String, Path, description = "A saved preset's id, or any preset's name")),
    responses((status = 204, description = "Deleted"),
        (status = 409, description = "Built-in and directory presets are read-only", body = super::ErrorBody)))]
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

#[utoipa::path(get, path = "/v1/settings/redaction", responses((status = 200, body = RedactionSetting)))]
pub(super) async fn get_redaction(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<axum::Json<RedactionSetting>> {
    auth(&s, &headers, ADMIN)?;
    let catalog = Catalog::load(&s.config, &s.store)?;
    let source = if s.store.setting(REDACTION_SETTING)?.is_some() {
        "settings"
    } else {
        "configuration"
    };
    Ok(axum::Json(RedactionSetting {
        rules: catalog.redaction,
        source,
        builtin_detectors: Some(evidex_engine::redact::BUILTIN_DETECTORS.to_vec()),
    }))
}

/// Replaces the redaction rules new exports apply (jobs already created keep the
/// rules they were created with). The rules are compiled before they are saved: an
/// unknown detector or a custom pattern that is not a valid regex is a 400 naming it.
#[utoipa::path(put, path = "/v1/settings/redaction", request_body = RedactionRules,
    responses((status = 200, body = RedactionSetting)))]
pub(super) async fn put_redaction(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<axum::Json<RedactionSetting>> {
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
    Ok(axum::Json(RedactionSetting {
        rules,
        source: "settings",
        builtin_detectors: None,
    }))
}
