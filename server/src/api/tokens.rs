//! `/v1/tokens` (admin): list tokens, create one (shown once), revoke one. A revoked
//! or expired token is refused at once on every node: each request reads the
//! metadata database. Creation and revocation go into the audit chain.

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{ADMIN, ApiError, ApiResult, AppState, auth, read_body};
use crate::store::{Role, TokenView};

/// Longest lifetime a token may be given: ten years.
const MAX_DAYS: i64 = 3650;

/// The body of `POST /v1/tokens`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = TokenRequest)]
pub(super) struct TokenBody {
    /// 1 to 100 characters.
    #[schema(min_length = 1, max_length = 100)]
    name: String,
    /// `admin`, `compliance`, `viewer`, `ingest` or `siem`.
    role: String,
    /// When it stops working (RFC 3339, with an offset).
    #[serde(default)]
    expires_at: Option<String>,
    /// Or: days from now until it stops working (1 to 3650).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 3650)]
    expires_in_days: Option<i64>,
}

/// The expiry (ms) asked for by `expires_at` or `expires_in_days`, at most ten
/// years from `now_ms`.
///
/// Errors: both given, a timestamp that is not RFC 3339, not in the future, or
/// too far away; a day count outside 1..=3650.
pub fn expiry(
    expires_at: Option<&str>,
    expires_in_days: Option<i64>,
    now_ms: i64,
) -> Result<Option<i64>, String> {
    let max = now_ms + MAX_DAYS * 86_400_000;
    match (expires_at, expires_in_days) {
        (Some(_), Some(_)) => Err("give expires_at or expires_in_days, not both".to_string()),
        (Some(t), None) => {
            let at = chrono::DateTime::parse_from_rfc3339(t)
                .map_err(|e| {
                    format!("expires_at: {t:?} is not an RFC 3339 time (2027-01-31T00:00:00Z): {e}")
                })?
                .timestamp_millis();
            if at <= now_ms {
                return Err(format!("expires_at: {t} is not in the future"));
            }
            if at > max {
                return Err(format!("expires_at: {t} is more than {MAX_DAYS} days away"));
            }
            Ok(Some(at))
        }
        (None, Some(d)) if (1..=MAX_DAYS).contains(&d) => Ok(Some(now_ms + d * 86_400_000)),
        (None, Some(d)) => Err(format!(
            "expires_in_days: {d} is not between 1 and {MAX_DAYS}"
        )),
        (None, None) => Ok(None),
    }
}

/// Every token, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenList {
    /// The tokens.
    pub items: Vec<TokenView>,
}

#[utoipa::path(get, path = "/v1/tokens", responses((status = 200, body = TokenList)))]
pub(super) async fn list(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<axum::Json<TokenList>> {
    auth(&s, &headers, ADMIN)?;
    let now = s.now_ms();
    let items = s.store.tokens()?.iter().map(|t| t.view(now)).collect();
    Ok(axum::Json(TokenList { items }))
}

#[utoipa::path(post, path = "/v1/tokens", request_body = TokenBody,
    responses((status = 201, description = "Created; `token` is shown this once", body = TokenView)))]
pub(super) async fn create(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let p = auth(&s, &headers, ADMIN)?;
    let body = read_body(&s, body).await?;
    let b: TokenBody =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("body: {e}")))?;
    let Some(role) = Role::parse(&b.role) else {
        return Err(ApiError::bad_request(format!(
            "role: unknown role {:?}; use admin, compliance, viewer, ingest or siem",
            b.role
        )));
    };
    let now = s.now_ms();
    let expires =
        expiry(b.expires_at.as_deref(), b.expires_in_days, now).map_err(ApiError::bad_request)?;
    let (id, token) = s
        .store
        .issue_token(&b.name, role, now, expires, &p.actor())
        .map_err(|e| ApiError::bad_request(format!("{e:#}")))?;
    s.store.audit(
        now,
        &p.actor(),
        "token.created",
        Some(&id),
        Some(&json!({"name": b.name, "role": role.as_str(),
                     "expires_at": expires.map(crate::store::rfc3339)})),
    )?;
    let info = s
        .store
        .token(&id)?
        .ok_or_else(|| ApiError::not_found("token"))?;
    let mut out = info.view(now);
    // Shown once: only its SHA-256 is stored.
    out.token = Some(token);
    Ok((StatusCode::CREATED, axum::Json(out)).into_response())
}

#[utoipa::path(delete, path = "/v1/tokens/{id}", params(("id" = String, Path, description = "The token's id (`tok_...`)")),
    responses((status = 204, description = "Revoked, on every node at once"),
        (status = 409, description = "Already revoked", body = super::ErrorBody)))]
pub(super) async fn revoke(
    State(s): State<AppState>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let p = auth(&s, &headers, ADMIN)?;
    let now = s.now_ms();
    let Some(info) = s.store.token(&id)? else {
        return Err(ApiError::not_found("token"));
    };
    if !s.store.revoke_token(&id, now)? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_revoked",
            format!(
                "the token was revoked at {}",
                info.revoked_at
                    .map(crate::store::rfc3339)
                    .unwrap_or_default()
            ),
        ));
    }
    s.store.audit(
        now,
        &p.actor(),
        "token.revoked",
        Some(&id),
        Some(&json!({"name": info.name, "role": info.role.as_str()})),
    )?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::expiry;

    #[test]
    fn expiry_is_checked() {
        let now = 1_780_000_000_000; // 2026-05-28
        assert_eq!(expiry(None, None, now), Ok(None));
        assert_eq!(expiry(None, Some(2), now), Ok(Some(now + 2 * 86_400_000)));
        assert_eq!(
            expiry(Some("2027-01-01T00:00:00Z"), None, now),
            Ok(Some(1_798_761_600_000))
        );
        for (at, days, says) in [
            (Some("2027-01-01T00:00:00Z"), Some(3), "not both"),
            (Some("next week"), None, "not an RFC 3339 time"),
            (Some("2020-01-01T00:00:00Z"), None, "not in the future"),
            (Some("2099-01-01T00:00:00Z"), None, "more than 3650 days"),
            (None, Some(0), "between 1 and 3650"),
            (None, Some(4000), "between 1 and 3650"),
        ] {
            let err = expiry(at, days, now).unwrap_err();
            assert!(err.contains(says), "{at:?} {days:?}: {err}");
        }
    }
}
