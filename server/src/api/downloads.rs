//! Getting an artifact out: the download route (with `Range` and conditional
//! requests), the signed manifest
//! and the other package files, signed download links, and the rule for what the
//! audit log counts as a download.

use std::io::Read;

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::{ApiError, ApiResult, AppState, READ, WRITE, auth, job_or_404};
use crate::service::Service;

/// The artifact record of a completed job (410 when it expired, 409 while it runs).
fn completed_artifact(job: &crate::store::Job) -> ApiResult<Value> {
    match job.status.as_str() {
        "completed" => {}
        "expired" => {
            return Err(ApiError::new(
                StatusCode::GONE,
                "expired",
                "the artifact was deleted after its retention period; export again with the same parameters (POST /v1/exports/{id}/rerun)",
            ));
        }
        other => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "not_ready",
                format!("the export is {other}; there is no artifact to download"),
            ));
        }
    }
    let artifact = job
        .artifact
        .clone()
        .ok_or_else(|| ApiError::not_found("artifact"))?;
    let name = artifact["file_name"].as_str().unwrap_or_default();
    // The stored name came from `sanitize_name`; it is a plain file name.
    if name.is_empty() || name.contains('/') || name.contains("..") {
        return Err(ApiError::not_found("artifact"));
    }
    Ok(artifact)
}

/// The artifact file of a completed job, in the local artifacts directory.
fn artifact_path(s: &Service, job: &crate::store::Job) -> ApiResult<(std::path::PathBuf, Value)> {
    let artifact = completed_artifact(job)?;
    let name = artifact["file_name"].as_str().unwrap_or_default();
    let dir = s.artifact_dir(&job.id, &artifact)?;
    Ok((dir.join(name), artifact))
}

/// The size of a completed job's artifact file, wherever it is kept.
async fn artifact_len(s: &Service, job: &crate::store::Job, artifact: &Value) -> ApiResult<u64> {
    let name = artifact["file_name"].as_str().unwrap_or_default();
    match &s.remote_artifacts {
        Some(r) => Ok(r
            .size(&job.id, artifact, name)
            .await?
            .ok_or_else(|| ApiError::not_found("artifact file"))?),
        None => {
            let (path, _) = artifact_path(s, job)?;
            Ok(tokio::fs::metadata(&path)
                .await
                .map_err(|_| ApiError::not_found("artifact file"))?
                .len())
        }
    }
}

/// One package file (`manifest.json`, ...) of a completed job: a ZIP entry or the
/// file beside a single-file artifact, locally; the object beside the artifact in
/// object storage (where a ZIP's package files are uploaded beside it).
async fn package_bytes(
    s: &Service,
    job: &crate::store::Job,
    artifact: &Value,
    name: &'static str,
) -> ApiResult<Option<Vec<u8>>> {
    let file_name = artifact["file_name"].as_str().unwrap_or_default();
    if let Some(r) = &s.remote_artifacts {
        return Ok(r
            .read_small(&job.id, artifact, &format!("{file_name}.{name}"))
            .await?
            .map(|b| b.to_vec()));
    }
    let (path, _) = artifact_path(s, job)?;
    let zipped = artifact["content_type"] == "application/zip";
    let bytes = tokio::task::spawn_blocking(move || -> anyhow::Result<Option<Vec<u8>>> {
        if zipped {
            let mut z = zip::ZipArchive::new(std::fs::File::open(&path)?)?;
            let Ok(mut e) = z.by_name(name) else {
                return Ok(None);
            };
            let mut b = Vec::new();
            e.read_to_end(&mut b)?;
            Ok(Some(b))
        } else {
            let side = evidex_engine::export::artifact::sidecar_path(&path, &format!(".{name}"));
            Ok(std::fs::read(side).ok())
        }
    })
    .await
    .map_err(|e| anyhow::anyhow!(e))??;
    Ok(bytes)
}

/// What a download request gets, from its `Range` and conditional headers
/// (RFC 9110 §13 and §14) against an artifact of `len` bytes whose strong entity
/// tag is its SHA-256.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Served {
    /// `If-None-Match` holds the artifact's tag: `304 Not Modified`.
    NotModified,
    /// `If-Match` names another version: `412 Precondition Failed`.
    PreconditionFailed,
    /// The whole file (`200`).
    Whole,
    /// Bytes `first..=last` (`206`).
    Part(u64, u64),
    /// A valid range with no byte in the file: `416`.
    Unsatisfiable,
}

/// The artifact's entity tag: its SHA-256 as a strong validator (`"hex"`); the
/// bytes of a finished artifact never change.
fn entity_tag(artifact: &Value) -> Option<String> {
    artifact["sha256"].as_str().map(|h| format!("\"{h}\""))
}

/// Whether an `If-Match` / `If-None-Match` list names `tag` (or is `*`). The weak
/// comparison of If-None-Match (RFC 9110 §13.1.2) ignores a `W/` prefix.
fn tag_listed(value: &str, tag: &str, weak: bool) -> bool {
    value
        .split(',')
        .map(str::trim)
        .any(|t| t == "*" || t == tag || (weak && t.strip_prefix("W/").is_some_and(|t| t == tag)))
}

/// Decides what to send (RFC 9110 §13.2.2 order: If-Match, If-None-Match, then
/// If-Range and Range). The `Range` syntax is parsed by `http-range-header`;
/// satisfiability is judged here because that crate refuses a suffix longer than
/// the file, which RFC 9110 §14.1.2 says selects all of it. A header that does not
/// parse, a reversed range, or several ranges get the whole file (a server may
/// ignore `Range`, §14.2).
fn served(headers: &HeaderMap, len: u64, tag: Option<&str>) -> Served {
    use http_range_header::{EndPosition, RangeUnsatisfiableError, StartPosition};
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    if let (Some(want), Some(tag)) = (text(header::IF_MATCH), tag)
        && !tag_listed(want, tag, false)
    {
        return Served::PreconditionFailed;
    }
    if let (Some(want), Some(tag)) = (text(header::IF_NONE_MATCH), tag)
        && tag_listed(want, tag, true)
    {
        return Served::NotModified;
    }
    let Some(range) = text(header::RANGE) else {
        return Served::Whole;
    };
    // If-Range: the range only if the client's copy is this one (a date, or another
    // tag, gets the whole file).
    if let Some(if_range) = text(header::IF_RANGE)
        && Some(if_range.trim()) != tag
    {
        return Served::Whole;
    }
    let parsed = match http_range_header::parse_range_header(range) {
        Ok(p) => p,
        Err(RangeUnsatisfiableError::ZeroSuffix) => return Served::Unsatisfiable,
        Err(_) => return Served::Whole,
    };
    let [r] = parsed.ranges.as_slice() else {
        return Served::Whole;
    };
    let Some(last_byte) = len.checked_sub(1) else {
        return Served::Unsatisfiable; // an empty file has no byte to send
    };
    let (first, last) = match (r.start, r.end) {
        (StartPosition::FromLast(n), _) => (len.saturating_sub(n), last_byte),
        (StartPosition::Index(a), EndPosition::LastByte) => (a, last_byte),
        (StartPosition::Index(a), EndPosition::Index(b)) if b < a => return Served::Whole,
        (StartPosition::Index(a), EndPosition::Index(b)) => (a, b.min(last_byte)),
    };
    if first >= len {
        return Served::Unsatisfiable;
    }
    Served::Part(first, last)
}

/// Sends a completed job's artifact file (all of it, or the one `Range` asked
/// for), streamed from the local directory or from object storage.
async fn send_artifact(
    s: &Service,
    job: &crate::store::Job,
    artifact: &Value,
    len: u64,
    served: Served,
) -> ApiResult<Response> {
    let name = artifact["file_name"].as_str().unwrap_or("export");
    let ctype = artifact["content_type"]
        .as_str()
        .unwrap_or("application/octet-stream");
    let disposition = format!("attachment; filename=\"{name}\"");
    let mut builder = Response::builder()
        .header(header::CONTENT_TYPE, ctype)
        .header(header::CONTENT_DISPOSITION, disposition)
        .header(header::ACCEPT_RANGES, "bytes");
    if let Some(sha) = artifact["sha256"].as_str() {
        builder = builder.header("x-evidex-sha256", sha);
    }
    if let Some(tag) = entity_tag(artifact) {
        builder = builder.header(header::ETAG, tag);
    }
    let (status, start, count) = match served {
        Served::Part(a, b) => {
            builder = builder.header(header::CONTENT_RANGE, format!("bytes {a}-{b}/{len}"));
            (StatusCode::PARTIAL_CONTENT, a, b - a + 1)
        }
        Served::Whole => (StatusCode::OK, 0, len),
        Served::Unsatisfiable => {
            return Ok(Response::builder()
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{len}"))
                .body(Body::empty())
                .map_err(anyhow::Error::from)?);
        }
        Served::NotModified => {
            return Ok(builder
                .status(StatusCode::NOT_MODIFIED)
                .body(Body::empty())
                .map_err(anyhow::Error::from)?);
        }
        Served::PreconditionFailed => {
            return Err(ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "precondition_failed",
                "If-Match names another version of this artifact; its ETag is its SHA-256",
            ));
        }
    };
    let body = match &s.remote_artifacts {
        Some(r) => {
            if count == 0 {
                Body::empty()
            } else {
                let stream = r
                    .read(&job.id, artifact, name, start..start + count)
                    .await?;
                Body::from_stream(stream)
            }
        }
        None => {
            let (path, _) = artifact_path(s, job)?;
            let mut file = tokio::fs::File::open(&path)
                .await
                .map_err(|_| ApiError::not_found("artifact file"))?;
            file.seek(std::io::SeekFrom::Start(start))
                .await
                .map_err(anyhow::Error::from)?;
            Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
                file.take(count),
                256 << 10,
            ))
        }
    };
    Ok(builder
        .status(status)
        .header(header::CONTENT_LENGTH, count)
        .body(body)
        .map_err(anyhow::Error::from)?)
}

#[utoipa::path(get, path = "/v1/exports/{id}/download", params(("id" = String, Path, description = "A completed export"),
        ("Range" = Option<String>, Header, description = "`bytes=START-END`, one range")),
    responses((status = 200, description = "The whole artifact, in its format's media type (`ETag`, `Last-Modified`, `Accept-Ranges: bytes`)", content(("text/csv"), ("application/json"), ("application/x-ndjson"), ("application/vnd.apache.parquet"), ("application/pdf"), ("application/zip"))),
        (status = 206, description = "The byte range asked for (RFC 9110 §14)", content(("text/csv"), ("application/json"), ("application/x-ndjson"), ("application/vnd.apache.parquet"), ("application/pdf"), ("application/zip"))),
        (status = 304, description = "Not modified (`If-None-Match`, `If-Modified-Since`)"),
        (status = 307, description = "With `artifacts_redirect_secs`: to a presigned URL of the object"),
        (status = 412, description = "`If-Match` or `If-Unmodified-Since` failed", body = super::ErrorBody),
        (status = 416, description = "The range is outside the file", body = super::ErrorBody),
        (status = 409, description = "The export is not completed", body = super::ErrorBody),
        (status = 410, description = "Its artifact expired (retention)", body = super::ErrorBody),
    ))]
pub(super) async fn download(
    State(s): State<AppState>,
    UrlPath(id): UrlPath<String>,
    method: Method,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let p = auth(&s, &headers, WRITE)?;
    let job = job_or_404(&s, &id)?;
    let artifact = completed_artifact(&job)?;
    let len = artifact_len(&s, &job, &artifact).await?;
    let what = served(&headers, len, entity_tag(&artifact).as_deref());
    audit_download(&s, &p.actor(), &p.actor(), &id, &method, what, len)?;
    if let Some(redirect) = presigned_redirect(&s, &job, &artifact, &method, None).await? {
        return Ok(redirect);
    }
    send_artifact(&s, &job, &artifact, len, what).await
}

/// With `artifacts_redirect_secs` set (artifacts on S3), a `GET` is answered `307
/// Temporary Redirect` to a presigned URL of the object, valid for that many
/// seconds and never past `not_after_ms` (a link's expiry, ms since the epoch), so
/// the bytes go from the bucket to the client without passing through this node.
/// The client sends its `Range` there. `None`: stream it here instead (not
/// configured, a `HEAD`, or a link that ends within the second).
async fn presigned_redirect(
    s: &Service,
    job: &crate::store::Job,
    artifact: &Value,
    method: &Method,
    not_after_ms: Option<i64>,
) -> ApiResult<Option<Response>> {
    let (Some(secs), Some(remote)) = (s.config.artifacts_redirect_secs, &s.remote_artifacts) else {
        return Ok(None);
    };
    if method != Method::GET {
        return Ok(None);
    }
    let left = not_after_ms.map_or(secs, |ms| ((ms - s.now_ms()) / 1000).max(0) as u64);
    let secs = secs.min(left);
    if secs == 0 {
        return Ok(None);
    }
    let name = artifact["file_name"].as_str().unwrap_or("export");
    let Some(url) = remote
        .presigned_get(
            &job.id,
            artifact,
            name,
            std::time::Duration::from_secs(secs),
        )
        .await?
    else {
        return Ok(None);
    };
    Ok(Some(
        Response::builder()
            .status(StatusCode::TEMPORARY_REDIRECT)
            .header(header::LOCATION, url.as_str())
            // The URL is a credential for `secs` seconds: no cache may keep it.
            .header(header::CACHE_CONTROL, "no-store")
            .body(Body::empty())
            .map_err(anyhow::Error::from)?,
    ))
}

/// How long ranged reads of one export by one requester count as one download.
const RANGED_DOWNLOAD_WINDOW_MS: i64 = 10 * 60 * 1000;

/// Logs `export.downloaded` for a download request, by this rule: a `HEAD` is not a
/// download (remote Parquet readers and download managers send one first), nor is a
/// range that cannot be served (416), nor an answer without the file (304, 412); a
/// response with the whole file always is one;
/// a partial response (206) is one unless the same requester (token, or the same
/// link) already had a partial download of this export logged within the last 10
/// minutes — a reader fetching a file in pieces counts once. The entry records the
/// bytes served (`bytes A-B/LEN`, or `whole file`).
fn audit_download(
    s: &Service,
    actor: &str,
    requester: &str,
    id: &str,
    method: &Method,
    what: Served,
    len: u64,
) -> ApiResult<()> {
    if method == Method::HEAD {
        return Ok(());
    }
    let served = match what {
        Served::Unsatisfiable | Served::NotModified | Served::PreconditionFailed => {
            return Ok(());
        }
        Served::Part(a, b) => Some(format!("bytes {a}-{b}/{len}")),
        Served::Whole => None,
    };
    let now = s.now_ms();
    if served.is_some() {
        let mut recent = s
            .recent_downloads
            .lock()
            .map_err(|_| anyhow::anyhow!("download log lock poisoned"))?;
        recent.retain(|_, at| now - *at < RANGED_DOWNLOAD_WINDOW_MS);
        let key = (id.to_string(), requester.to_string());
        if recent.contains_key(&key) {
            return Ok(());
        }
        recent.insert(key, now);
    }
    let details = json!({"range": served.as_deref().unwrap_or("whole file")});
    s.store
        .audit(now, actor, "export.downloaded", Some(id), Some(&details))?;
    Ok(())
}

#[utoipa::path(get, path = "/v1/exports/{id}/manifest", params(("id" = String, Path, description = "A completed export")),
    responses((status = 200, description = "The signed manifest, as stored in the artifact (its signature: `package/manifest.sig`)", body = evidex_engine::integrity::Manifest),
        (status = 409, description = "The export is not completed", body = super::ErrorBody)))]
pub(super) async fn manifest(
    State(s): State<AppState>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    auth(&s, &headers, READ)?;
    let job = job_or_404(&s, &id)?;
    let artifact = completed_artifact(&job)?;
    let bytes = package_bytes(&s, &job, &artifact, "manifest.json")
        .await?
        .ok_or_else(|| ApiError::not_found("manifest"))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], bytes).into_response())
}

/// One package file of an export: a ZIP entry, or the file beside a single-file
/// artifact, served under the name it has beside the data (`NAME.csv.manifest.sig`).
/// `file` must be one of the fixed package names: no user string reaches a path.
#[utoipa::path(get, path = "/v1/exports/{id}/package/{file}", params(("id" = String, Path, description = "A completed export"),
        ("file" = String, Path, description = "`manifest.json`, `manifest.sig`, `SHA256SUMS`, `SHA256SUMS.sig`, `signing-key.pem` or `VERIFY.txt`")),
    responses((status = 200, description = "The file, as an attachment: `manifest.json` as JSON, the signatures as bytes, the key as PEM, the rest as text",
            content(("application/json"), ("application/octet-stream"), ("application/x-pem-file"), ("text/plain"))),
        (status = 409, description = "The export is not completed", body = super::ErrorBody)))]
pub(super) async fn package_file(
    State(s): State<AppState>,
    UrlPath((id, file)): UrlPath<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    use evidex_engine::integrity::PACKAGE_NAMES;
    auth(&s, &headers, READ)?;
    let Some(name) = PACKAGE_NAMES.iter().copied().find(|n| *n == file) else {
        return Err(ApiError::not_found(&format!(
            "package file (one of {})",
            PACKAGE_NAMES.join(", ")
        )));
    };
    let job = job_or_404(&s, &id)?;
    let artifact = completed_artifact(&job)?;
    let zipped = artifact["content_type"] == "application/zip";
    let file_name = artifact["file_name"]
        .as_str()
        .unwrap_or("export")
        .to_string();
    let bytes = package_bytes(&s, &job, &artifact, name)
        .await?
        .ok_or_else(|| {
            ApiError::not_found("package file (this artifact was made before it existed)")
        })?;
    let served = if zipped {
        name.to_string()
    } else {
        format!("{file_name}.{name}")
    };
    let ctype = match name {
        "manifest.json" => "application/json",
        "manifest.sig" | "SHA256SUMS.sig" => "application/octet-stream",
        "signing-key.pem" => "application/x-pem-file",
        _ => "text/plain; charset=utf-8",
    };
    Ok((
        [
            (header::CONTENT_TYPE, ctype.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{served}\""),
            ),
        ],
        bytes,
    )
        .into_response())
}

/// HMAC-SHA256 (RFC 2104, RustCrypto's `hmac`) of `{id}.{expires_ms}` under the
/// server's link key, hex.
fn link_signature(key: &[u8], id: &str, expires_ms: i64) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(format!("{id}.{expires_ms}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn base_url(s: &Service, headers: &HeaderMap) -> String {
    if let Some(u) = &s.config.server.public_url {
        return u.trim_end_matches('/').to_string();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or(&s.config.server.listen);
    format!("http://{host}")
}

/// A signed download link.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SignedLink {
    /// `{public_url}/v1/links/{token}`: downloads without a token until it expires.
    pub url: String,
    /// `server.link_ttl_secs` from now, or the artifact's expiry if sooner; RFC 3339,
    /// UTC.
    pub expires_at: String,
}

#[utoipa::path(post, path = "/v1/exports/{id}/link", params(("id" = String, Path, description = "A completed export")),
    responses((status = 200, body = SignedLink),
        (status = 409, description = "The export is not completed", body = super::ErrorBody)))]
pub(super) async fn create_link(
    State(s): State<AppState>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> ApiResult<axum::Json<SignedLink>> {
    let p = auth(&s, &headers, WRITE)?;
    let job = job_or_404(&s, &id)?;
    let artifact = completed_artifact(&job)?;
    let now = s.clock.now();
    let mut expires = now + chrono::Duration::seconds(s.config.server.link_ttl_secs as i64);
    if let Some(a) = artifact["expires_at"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
    {
        expires = expires.min(a.with_timezone(&chrono::Utc));
    }
    let ms = expires.timestamp_millis();
    let token = format!("{id}.{ms}.{}", link_signature(&s.link_key, &id, ms));
    s.store.audit(
        now.timestamp_millis(),
        &p.actor(),
        "export.linked",
        Some(&id),
        Some(&json!({"expires_at": crate::store::rfc3339(ms)})),
    )?;
    Ok(axum::Json(SignedLink {
        url: format!("{}/v1/links/{token}", base_url(&s, &headers)),
        expires_at: crate::store::rfc3339(ms),
    }))
}

#[utoipa::path(get, path = "/v1/links/{token}", params(("token" = String, Path, description = "The token of a signed link")),
    responses((status = 200, description = "The whole artifact, in its format's media type (`ETag`, `Last-Modified`, `Accept-Ranges: bytes`)", content(("text/csv"), ("application/json"), ("application/x-ndjson"), ("application/vnd.apache.parquet"), ("application/pdf"), ("application/zip"))),
        (status = 206, description = "The byte range asked for (RFC 9110 §14)", content(("text/csv"), ("application/json"), ("application/x-ndjson"), ("application/vnd.apache.parquet"), ("application/pdf"), ("application/zip"))),
        (status = 304, description = "Not modified (`If-None-Match`, `If-Modified-Since`)"),
        (status = 307, description = "With `artifacts_redirect_secs`: to a presigned URL of the object"),
        (status = 412, description = "`If-Match` or `If-Unmodified-Since` failed", body = super::ErrorBody),
        (status = 416, description = "The range is outside the file", body = super::ErrorBody),
        (status = 410, description = "The link or the artifact expired", body = super::ErrorBody),
    ))]
pub(super) async fn follow_link(
    State(s): State<AppState>,
    UrlPath(token): UrlPath<String>,
    method: Method,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let forbidden = || {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "invalid_link",
            "this link is not valid (it was altered or not made here); ask for a new link",
        )
    };
    let mut parts = token.rsplitn(3, '.');
    let (Some(sig), Some(ms), Some(id)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(forbidden());
    };
    let ms: i64 = ms.parse().map_err(|_| forbidden())?;
    // Constant-time comparison (the hmac crate's `verify_slice`).
    let same = hex::decode(sig).is_ok_and(|sig| {
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<Sha256>::new_from_slice(&s.link_key).expect("any key length");
        mac.update(format!("{id}.{ms}").as_bytes());
        mac.verify_slice(&sig).is_ok()
    });
    if !same {
        return Err(forbidden());
    }
    if s.now_ms() > ms {
        return Err(ApiError::new(
            StatusCode::GONE,
            "link_expired",
            format!(
                "this link expired at {}; export again with the same parameters (POST /v1/exports/{id}/rerun) and make a new link",
                crate::store::rfc3339(ms)
            ),
        ));
    }
    let job = job_or_404(&s, id)?;
    let artifact = completed_artifact(&job)?;
    let len = artifact_len(&s, &job, &artifact).await?;
    let what = served(&headers, len, entity_tag(&artifact).as_deref());
    audit_download(&s, "link", &token, id, &method, what, len)?;
    if let Some(redirect) = presigned_redirect(&s, &job, &artifact, &method, Some(ms)).await? {
        return Ok(redirect);
    }
    send_artifact(&s, &job, &artifact, len, what).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    const TAG: &str = "\"abc\"";

    /// RFC 9110 §14.1.2 examples and edge cases, on a file of 100 bytes.
    #[test]
    fn ranges_follow_rfc_9110() {
        let s = |range: &str| served(&with(&[("range", range)]), 100, Some(TAG));
        assert_eq!(s("bytes=0-9"), Served::Part(0, 9));
        assert_eq!(s("bytes=90-"), Served::Part(90, 99));
        assert_eq!(s("bytes=-10"), Served::Part(90, 99));
        // A suffix longer than the file selects all of it; an end past it is cut.
        assert_eq!(s("bytes=-500"), Served::Part(0, 99));
        assert_eq!(s("bytes=50-500"), Served::Part(50, 99));
        assert_eq!(s("bytes=100-"), Served::Unsatisfiable);
        assert_eq!(s("bytes=-0"), Served::Unsatisfiable);
        // Invalid, reversed or several ranges: the whole file.
        for ignored in [
            "bytes=9-0",
            "items=0-9",
            "bytes=a-b",
            "bytes=0-1,5-9",
            "bytes= 0-9",
        ] {
            assert_eq!(s(ignored), Served::Whole, "{ignored}");
        }
        assert_eq!(
            served(&with(&[("range", "bytes=0-0")]), 0, Some(TAG)),
            Served::Unsatisfiable
        );
    }

    /// RFC 9110 §13.2.2: If-Match, then If-None-Match, then If-Range.
    #[test]
    fn conditional_requests_use_the_sha256_tag() {
        let s = |h: &[(&'static str, &str)]| served(&with(h), 100, Some(TAG));
        assert_eq!(s(&[("if-none-match", TAG)]), Served::NotModified);
        assert_eq!(s(&[("if-none-match", "W/\"abc\"")]), Served::NotModified);
        assert_eq!(
            s(&[("if-none-match", "\"x\", \"abc\"")]),
            Served::NotModified
        );
        assert_eq!(s(&[("if-none-match", "\"x\"")]), Served::Whole);
        assert_eq!(s(&[("if-match", "\"x\"")]), Served::PreconditionFailed);
        assert_eq!(s(&[("if-match", "*")]), Served::Whole);
        assert_eq!(
            s(&[("if-match", "\"x\""), ("if-none-match", TAG)]),
            Served::PreconditionFailed
        );
        assert_eq!(
            s(&[("range", "bytes=0-9"), ("if-range", TAG)]),
            Served::Part(0, 9)
        );
        assert_eq!(
            s(&[("range", "bytes=0-9"), ("if-range", "\"x\"")]),
            Served::Whole
        );
        assert_eq!(
            s(&[
                ("range", "bytes=0-9"),
                ("if-range", "Tue, 01 Dec 2026 00:00:00 GMT")
            ]),
            Served::Whole
        );
    }
}
