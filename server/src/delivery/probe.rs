//! The test connection (`POST /v1/settings/delivery/test`, `evidex delivery test`):
//! resolve the bucket's host, connect, TLS, check the bucket and the keys, write a
//! probe object under the prefix, read it back and compare, see whether the store
//! honours `If-None-Match: *` (conditional create), delete the probe, and read the
//! bucket's Object Lock configuration. Each step is bounded by
//! `delivery.step_timeout_secs`; the answer names the first step that failed and
//! why (name resolution, connection, TLS, credentials, permission, bucket missing,
//! Object Lock not enabled), and what the store supports.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::DeliverySettings;
use super::s3::{Answer, Bucket, Unreachable, xml_text};
use crate::network::TargetError;

/// One step of a test connection.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = ProbeStep)]
pub struct Step {
    /// `resolve`, `connect`, `tls`, `bucket`, `write`, `read`, `conditional_create`,
    /// `delete`, `object_lock`.
    pub step: &'static str,
    /// `ok`, `failed`, or `skipped` (an earlier step failed, or not applicable).
    pub status: &'static str,
    /// What failed (`credentials`, `permission`, `bucket_missing`, `connection`,
    /// `tls`, `name_resolution`, `refused_address`, `timeout`,
    /// `object_lock_disabled`, `mismatch`, `store_error`), when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    /// One sentence for people.
    pub detail: String,
    /// How long it took, in milliseconds.
    pub ms: u64,
}

/// What a test connection found.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = ProbeReport)]
pub struct Report {
    /// Every step passed.
    pub ok: bool,
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// What the store supports: `conditional_create` and `object_lock` (`null`:
    /// not found out, because an earlier step failed).
    #[schema(value_type = Object)]
    pub supports: Value,
}

const ALL_STEPS: [&str; 9] = [
    "resolve",
    "connect",
    "tls",
    "bucket",
    "write",
    "read",
    "conditional_create",
    "delete",
    "object_lock",
];

struct Run {
    steps: Vec<Step>,
    started: Instant,
}

impl Run {
    fn ok(&mut self, step: &'static str, detail: impl Into<String>) {
        self.push(step, "ok", None, detail.into());
    }
    fn fail(&mut self, step: &'static str, kind: &'static str, detail: impl Into<String>) {
        self.push(step, "failed", Some(kind), detail.into());
    }
    fn skip(&mut self, step: &'static str, detail: impl Into<String>) {
        self.push(step, "skipped", None, detail.into());
    }
    fn push(
        &mut self,
        step: &'static str,
        status: &'static str,
        kind: Option<&'static str>,
        detail: String,
    ) {
        self.steps.push(Step {
            step,
            status,
            kind,
            detail,
            ms: self.started.elapsed().as_millis() as u64,
        });
        self.started = Instant::now();
    }
    fn finish(mut self, conditional: Option<bool>, lock: Option<bool>) -> Report {
        let done: Vec<&str> = self.steps.iter().map(|s| s.step).collect();
        for s in ALL_STEPS {
            if !done.contains(&s) {
                self.skip(s, "not run: an earlier step failed");
            }
        }
        Report {
            ok: self.steps.iter().all(|s| s.status != "failed"),
            steps: self.steps,
            supports: json!({"conditional_create": conditional, "object_lock": lock}),
        }
    }
}

fn unreachable_kind(e: &Unreachable) -> &'static str {
    match e {
        Unreachable::Target(TargetError::Unresolvable { .. }) => "name_resolution",
        Unreachable::Target(TargetError::Refused { .. }) => "refused_address",
        Unreachable::Target(TargetError::BadUrl(_)) => "bad_endpoint",
        Unreachable::Connect { .. } => "connection",
        Unreachable::Tls { .. } => "tls",
        Unreachable::Timeout(_) => "timeout",
        Unreachable::Other(_) => "connection",
    }
}

/// Classifies an S3 error answer of a step that needs the keys.
fn answer_kind(a: &Answer) -> &'static str {
    match (a.status, a.s3_code().as_deref()) {
        (
            _,
            Some("InvalidAccessKeyId" | "SignatureDoesNotMatch" | "InvalidToken" | "ExpiredToken"),
        ) => "credentials",
        (_, Some("NoSuchBucket")) => "bucket_missing",
        (_, Some("AuthorizationHeaderMalformed" | "PermanentRedirect")) => "wrong_region",
        (403, _) => "permission",
        (404, _) => "bucket_missing",
        (301 | 307, _) => "wrong_region",
        _ => "store_error",
    }
}

fn explain(kind: &str, a: &Answer, what: &str) -> String {
    let base = match kind {
        "credentials" => "the access key id or secret access key is wrong".to_string(),
        "bucket_missing" => "the bucket does not exist".to_string(),
        "permission" => format!("the keys are valid but may not {what}"),
        "wrong_region" => "the bucket is in another region than the one set".to_string(),
        _ => format!("the store refused to {what}"),
    };
    format!("{base} ({})", a.describe())
}

/// Runs the test connection for `settings` with `secret`.
pub async fn run(
    settings: &DeliverySettings,
    secret: &str,
    allow_private: bool,
    timeout: Duration,
) -> Report {
    let mut run = Run {
        steps: Vec::new(),
        started: Instant::now(),
    };
    let bucket = match Bucket::connect(settings, secret, allow_private, timeout).await {
        Ok(b) => {
            run.ok(
                "resolve",
                format!("{} resolves to {}", b.host(), b.addr.ip()),
            );
            b
        }
        Err(e) => {
            let kind = unreachable_kind(&e);
            run.fail("resolve", kind, e.to_string());
            return run.finish(None, None);
        }
    };
    if let Err(e) = bucket.tcp_check(timeout).await {
        run.fail("connect", unreachable_kind(&e), e.to_string());
        return run.finish(None, None);
    }
    run.ok("connect", format!("connected to {}", bucket.addr));
    // The bucket step also proves TLS: it is the first request.
    let probe_key = format!("{}.evidex-probe-{}", settings.prefix, ulid::Ulid::new());
    let call = |method: Method, key: Option<&str>, query: &str, headers: HeaderMap, body: Bytes| {
        let bucket = &bucket;
        let key = key.map(str::to_string);
        let query = query.to_string();
        async move {
            match tokio::time::timeout(
                timeout,
                bucket.request(method, key.as_deref(), &query, headers, body),
            )
            .await
            {
                Ok(r) => r,
                Err(_) => Err(Unreachable::Timeout(timeout.as_secs())),
            }
        }
    };
    // HEAD carries no error document, so the bucket is checked with a listing of
    // at most one key under the prefix (or its location when listing is denied).
    let list_query = format!(
        "list-type=2&max-keys=1&prefix={}",
        url::form_urlencoded::byte_serialize(settings.prefix.as_bytes()).collect::<String>()
    );
    match call(
        Method::GET,
        None,
        &list_query,
        HeaderMap::new(),
        Bytes::new(),
    )
    .await
    {
        Err(e) => {
            // TCP worked (the connect step), so this is the handshake or the request.
            let step = match e {
                Unreachable::Tls { .. } => "tls",
                _ => "bucket",
            };
            run.fail(step, unreachable_kind(&e), e.to_string());
            return run.finish(None, None);
        }
        Ok(a) => {
            if bucket.is_https() {
                run.ok("tls", format!("TLS with {} verified", bucket.host()));
            } else {
                run.skip("tls", "the endpoint is plain http (no TLS)");
            }
            match a.status {
                200 => run.ok(
                    "bucket",
                    format!("bucket {} found, keys accepted", settings.bucket),
                ),
                _ => {
                    let kind = answer_kind(&a);
                    if kind == "permission" {
                        // Listing may be denied to a write-only key: go on to writing.
                        run.ok(
                            "bucket",
                            format!(
                                "the keys may not list the bucket ({}); going on",
                                a.describe()
                            ),
                        );
                    } else {
                        run.fail("bucket", kind, explain(kind, &a, "list the bucket"));
                        return run.finish(None, None);
                    }
                }
            }
        }
    }
    let body = Bytes::from(format!("evidex delivery probe {}\n", ulid::Ulid::new()));
    let mut headers = bucket.sse_headers();
    headers.insert("if-none-match", HeaderValue::from_static("*"));
    headers.insert("content-type", HeaderValue::from_static("text/plain"));
    use base64::Engine;
    let sha = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&body));
    if let Ok(v) = HeaderValue::from_str(&sha) {
        headers.insert("x-amz-checksum-sha256", v);
    }
    match call(
        Method::PUT,
        Some(&probe_key),
        "",
        headers.clone(),
        body.clone(),
    )
    .await
    {
        Err(e) => {
            run.fail("write", unreachable_kind(&e), e.to_string());
            return run.finish(None, None);
        }
        Ok(a) if (200..300).contains(&a.status) => {
            run.ok("write", format!("wrote {probe_key}"));
        }
        Ok(a) => {
            let kind = answer_kind(&a);
            run.fail("write", kind, explain(kind, &a, "write under the prefix"));
            return run.finish(None, None);
        }
    }
    let mut failed = false;
    match call(
        Method::GET,
        Some(&probe_key),
        "",
        HeaderMap::new(),
        Bytes::new(),
    )
    .await
    {
        Err(e) => {
            run.fail("read", unreachable_kind(&e), e.to_string());
            failed = true;
        }
        Ok(a) if a.status == 200 && a.body == body => {
            run.ok("read", "read the probe back: same bytes");
        }
        Ok(a) if a.status == 200 => {
            run.fail(
                "read",
                "mismatch",
                "the probe read back differs from what was written",
            );
            failed = true;
        }
        Ok(a) => {
            let kind = answer_kind(&a);
            run.fail("read", kind, explain(kind, &a, "read objects back"));
            failed = true;
        }
    }
    // A second create of the same key must be refused (412 Precondition Failed;
    // Cloudflare R2 and some servers answer 409 or 304).
    let conditional = match call(Method::PUT, Some(&probe_key), "", headers, body.clone()).await {
        Ok(a) if matches!(a.status, 412 | 409 | 304) => {
            run.ok(
                "conditional_create",
                "the store refuses to overwrite (If-None-Match: *)",
            );
            Some(true)
        }
        Ok(a) if (200..300).contains(&a.status) => {
            run.ok(
                "conditional_create",
                "the store ignores If-None-Match: * (evidex checks each key before writing instead; two writers at once could overwrite)",
            );
            Some(false)
        }
        Ok(a) => {
            run.ok(
                "conditional_create",
                format!("not supported: {}", a.describe()),
            );
            Some(false)
        }
        Err(e) => {
            run.fail("conditional_create", unreachable_kind(&e), e.to_string());
            failed = true;
            None
        }
    };
    match call(
        Method::DELETE,
        Some(&probe_key),
        "",
        HeaderMap::new(),
        Bytes::new(),
    )
    .await
    {
        Ok(a) if (200..300).contains(&a.status) => run.ok("delete", "deleted the probe"),
        Ok(a) => {
            let kind = answer_kind(&a);
            run.fail("delete", kind, explain(kind, &a, "delete the probe object"));
            failed = true;
        }
        Err(e) => {
            run.fail("delete", unreachable_kind(&e), e.to_string());
            failed = true;
        }
    }
    let _ = failed;
    let lock = match call(
        Method::GET,
        None,
        "object-lock",
        HeaderMap::new(),
        Bytes::new(),
    )
    .await
    {
        Ok(a) if a.status == 200 => {
            Some(xml_text(&a.body, "ObjectLockEnabled").as_deref() == Some("Enabled"))
        }
        Ok(a)
            if a.status == 404
                || a.s3_code().as_deref() == Some("ObjectLockConfigurationNotFoundError") =>
        {
            Some(false)
        }
        Ok(a) if a.status == 403 => None,
        Ok(_) => Some(false),
        Err(_) => None,
    };
    match (&settings.object_lock, lock) {
        (Some(l), Some(false)) => run.fail(
            "object_lock",
            "object_lock_disabled",
            format!(
                "Object Lock is not enabled on bucket {} (retention {} for {} days is set); it can only be turned on for the bucket by its owner",
                settings.bucket, l.mode, l.days
            ),
        ),
        (Some(_), None) => run.fail(
            "object_lock",
            "permission",
            "cannot read the bucket's Object Lock configuration (s3:GetBucketObjectLockConfiguration)",
        ),
        (Some(l), Some(true)) => run.ok(
            "object_lock",
            format!("Object Lock is enabled; objects get {} retention for {} days", l.mode, l.days),
        ),
        (None, Some(true)) => run.ok("object_lock", "Object Lock is enabled on the bucket (no retention set here)"),
        (None, _) => run.skip("object_lock", "no retention set; Object Lock not enabled or not readable"),
    }
    run.finish(conditional, lock)
}
