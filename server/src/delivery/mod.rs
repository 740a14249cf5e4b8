//! S3 delivery: the bucket settings (`/v1/settings/delivery`, `evidex delivery`),
//! the test connection ([`probe`]), and the upload of every completed export to
//! `{prefix}{file_name}` with its manifest, signature and package files.
//!
//! A delivery is a row queued in the same transaction that completes the job, so it
//! survives any crash; a dispatcher task on every `serve` process claims due rows with
//! a lease (renewed while it uploads) and retries failures with exponential backoff
//! and jitter for `delivery.retry_for_secs`. An existing object is never overwritten:
//! each object is checked first and written with `If-None-Match: *` (conditional
//! create, S3 API PutObject); when the name is taken by another object the artifact
//! goes to `{prefix}{job_id}/{file_name}` instead, and an object that carries this
//! artifact's own SHA-256 (`x-amz-meta-evidex-sha256`, from an earlier attempt) counts
//! as delivered.

pub mod multipart;
pub mod probe;
pub mod s3;
pub(crate) mod upload;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::secrets::MasterKey;
use crate::service::Service;
use crate::store::Store;
use s3::Bucket;
use upload::{Failure, upload};

/// Name of the stored setting.
pub const SETTING: &str = "delivery";
/// Purpose the secret access key is sealed for.
const SECRET_PURPOSE: &str = "delivery:secret_access_key";
/// Metadata that records an uploaded object's SHA-256 (hex).
const SHA_METADATA: &str = "evidex-sha256";
/// Metadata that records which export uploaded an object.
const EXPORT_METADATA: &str = "evidex-export-id";
/// How long a claimed delivery is held without a renewal.
const LEASE_MS: i64 = 30_000;

/// Server-side encryption of delivered objects (S3 API: `x-amz-server-side-encryption`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerSideEncryption {
    /// `AES256` (SSE-S3), `aws:kms` (SSE-KMS) or `aws:kms:dsse`.
    pub algorithm: String,
    /// The KMS key for `aws:kms`; the bucket's default key when absent.
    #[serde(default)]
    pub kms_key_id: Option<String>,
}

/// Object Lock retention put on every delivered object (S3 Object Lock: the bucket
/// must have been created with Object Lock enabled).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ObjectLock {
    /// `GOVERNANCE` or `COMPLIANCE`.
    pub mode: String,
    /// Days from the upload until the object may be deleted or overwritten.
    pub days: u32,
}

/// The delivery target as stored and shown (the secret is never part of it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DeliverySettings {
    /// Deliver every completed export (exports and schedules may still say
    /// `deliver: false`, or `true` when this is off).
    pub enabled: bool,
    /// Bucket name.
    pub bucket: String,
    /// Region for request signing (`us-east-1` for most S3-compatible servers,
    /// `auto` for Cloudflare R2).
    pub region: String,
    /// `https://host[:port]` of an S3-compatible server (MinIO, R2, ...); empty for
    /// AWS, which uses `https://s3.{region}.amazonaws.com`.
    pub endpoint: Option<String>,
    /// Path-style addressing (`https://host/bucket/key`) instead of virtual-hosted
    /// (`https://bucket.host/key`); most self-hosted servers need it.
    pub path_style: bool,
    /// Prepended to every key, e.g. `evidence/`.
    pub prefix: String,
    /// Access key id.
    pub access_key_id: String,
    /// Optional server-side encryption.
    pub server_side_encryption: Option<ServerSideEncryption>,
    /// Optional Object Lock retention.
    pub object_lock: Option<ObjectLock>,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        DeliverySettings {
            enabled: true,
            bucket: String::new(),
            region: "us-east-1".to_string(),
            endpoint: None,
            path_style: false,
            prefix: String::new(),
            access_key_id: String::new(),
            server_side_encryption: None,
            object_lock: None,
        }
    }
}

/// What a `PUT /v1/settings/delivery` (or a test before saving) sends: the settings
/// and, optionally, the secret access key (kept as stored when omitted). Its `Debug`
/// never shows the secret.
#[derive(Clone)]
pub struct SettingsInput {
    /// The settings.
    pub settings: DeliverySettings,
    /// The secret access key.
    pub secret_access_key: Option<String>,
}

impl std::fmt::Debug for SettingsInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SettingsInput")
            .field("settings", &self.settings)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl SettingsInput {
    /// Parses a JSON object of [`DeliverySettings`] fields plus `secret_access_key`;
    /// an unknown field or a wrong type is an error naming it.
    pub fn parse(body: &[u8]) -> std::result::Result<SettingsInput, String> {
        let mut map: serde_json::Map<String, Value> =
            serde_json::from_slice(body).map_err(|e| format!("body: {e}"))?;
        let secret = match map.remove("secret_access_key") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(_) => return Err("secret_access_key: must be a string".to_string()),
        };
        // What GET shows besides the settings: a GET body can be PUT back.
        map.remove("secret_access_key_set");
        map.remove("configured");
        let settings: DeliverySettings = serde_path_to_error::deserialize(Value::Object(map))
            .map_err(|e| {
                let mut m = crate::service::field_error(&e);
                if m.contains("unknown field") {
                    m.push_str(" (and `secret_access_key`)");
                }
                m
            })?;
        Ok(SettingsInput {
            settings,
            secret_access_key: secret,
        })
    }
}

/// Stored form: the settings and the sealed secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    settings: DeliverySettings,
    secret_sealed: String,
}

impl DeliverySettings {
    /// Checks every field; the error names the field and the rule.
    pub fn validate(&self) -> std::result::Result<(), String> {
        // S3 bucket naming rules (docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html).
        let b = &self.bucket;
        if !(3..=63).contains(&b.len())
            || !b
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.')
            || !b.starts_with(|c: char| c.is_ascii_alphanumeric())
            || !b.ends_with(|c: char| c.is_ascii_alphanumeric())
        {
            return Err(format!(
                "bucket: '{b}' is not a valid bucket name (3-63 lowercase letters, digits, '-' and '.', starting and ending with a letter or digit)"
            ));
        }
        if self.region.is_empty()
            || !self
                .region
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-')
        {
            return Err(format!("region: '{}' is not a region name", self.region));
        }
        if let Some(e) = self.endpoint.as_deref().filter(|e| !e.is_empty()) {
            crate::network::parse_target_url(e).map_err(|e| format!("endpoint: {e}"))?;
        }
        Bucket::bucket_url(self).map_err(|e| e.to_string())?;
        // S3's "safe characters" for key names, so keys need no escaping anywhere.
        if self.prefix.starts_with('/')
            || self.prefix.contains("//")
            || self.prefix.len() > 512
            || !self
                .prefix
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"!-_.'()/".contains(&c))
            || self.prefix.split('/').any(|seg| seg == "." || seg == "..")
        {
            return Err(format!(
                "prefix: '{}' may hold only letters, digits and ! - _ . ' ( ) /, must not start with / or contain //, . or .. segments",
                self.prefix
            ));
        }
        // Access key ids are letters and digits on AWS, R2 and MinIO; anything that
        // cannot go into an HTTP header is refused here, not at the first request.
        if self.access_key_id.is_empty()
            || self.access_key_id.len() > 128
            || !self
                .access_key_id
                .bytes()
                .all(|c| c.is_ascii_graphic() && c != b'/' && c != b',')
        {
            return Err(
                "access_key_id: required, at most 128 printable characters without spaces, '/' or ','"
                    .to_string(),
            );
        }
        if let Some(sse) = &self.server_side_encryption
            && !["AES256", "aws:kms", "aws:kms:dsse"].contains(&sse.algorithm.as_str())
        {
            return Err(format!(
                "server_side_encryption.algorithm: '{}' is not AES256, aws:kms or aws:kms:dsse",
                sse.algorithm
            ));
        }
        if let Some(lock) = &self.object_lock {
            if !["GOVERNANCE", "COMPLIANCE"].contains(&lock.mode.as_str()) {
                return Err(format!(
                    "object_lock.mode: '{}' is not GOVERNANCE or COMPLIANCE",
                    lock.mode
                ));
            }
            if !(1..=36_500).contains(&lock.days) {
                return Err("object_lock.days: between 1 and 36500".to_string());
            }
        }
        Ok(())
    }
}

/// The stored settings and the opened secret, if delivery was ever set up.
pub fn load(store: &Store, key: &MasterKey) -> Result<Option<(DeliverySettings, String)>> {
    let Some(text) = store.setting(SETTING)? else {
        return Ok(None);
    };
    let stored: Stored =
        serde_json::from_str(&text).context("the stored delivery settings are unreadable")?;
    let secret = key.open(SECRET_PURPOSE, &stored.secret_sealed)?;
    let secret = String::from_utf8(secret).context("the stored secret is not text")?;
    Ok(Some((stored.settings, secret)))
}

/// Settings to use for `input`: its secret, or the stored one when it has none.
/// Errors name the field at fault.
pub fn resolve_input(
    store: &Store,
    key: &MasterKey,
    input: &SettingsInput,
) -> std::result::Result<(DeliverySettings, String), String> {
    input.settings.validate()?;
    let secret = match input.secret_access_key.as_deref() {
        Some(s) if !s.is_empty() => s.to_string(),
        _ => match load(store, key).map_err(|e| format!("{e:#}"))? {
            Some((_, s)) => s,
            None => {
                return Err(
                    "secret_access_key: required (no delivery secret is stored yet)".to_string(),
                );
            }
        },
    };
    if secret.len() > 1024 {
        return Err("secret_access_key: longer than 1024 characters".to_string());
    }
    Ok((input.settings.clone(), secret))
}

/// Saves settings and their secret (sealed with the master key `key`).
pub fn save(
    store: &Store,
    key: &MasterKey,
    settings: &DeliverySettings,
    secret: &str,
    by: &str,
    now_ms: i64,
) -> Result<()> {
    let stored = Stored {
        settings: settings.clone(),
        secret_sealed: key.seal(SECRET_PURPOSE, secret.as_bytes())?,
    };
    store.set_setting(SETTING, &serde_json::to_string(&stored)?, by, now_ms)
}

/// The settings as every response shows them: no secret, only whether one is set.
pub fn public_view(settings: Option<&DeliverySettings>) -> Value {
    match settings {
        Some(s) => {
            let mut v = serde_json::to_value(s).unwrap_or(Value::Null);
            v["configured"] = json!(true);
            v["secret_access_key_set"] = json!(true);
            v
        }
        None => json!({"configured": false}),
    }
}

/// Whether a job's export asks to be delivered: its own `deliver` parameter, else
/// the settings' `enabled` (and never without settings).
pub fn wanted(service: &Service, params: &Value) -> Result<bool> {
    let Some(text) = service.store.setting(SETTING)? else {
        return Ok(false);
    };
    let stored: Stored = serde_json::from_str(&text)?;
    Ok(params["deliver"]
        .as_bool()
        .unwrap_or(stored.settings.enabled))
}

/// Delay before attempt `n + 1`: 2 s doubling to at most 5 minutes, with up to 20 %
/// jitter.
fn backoff_ms(n: i64) -> i64 {
    let base = (2_000i64 << n.clamp(0, 8) as u32).min(300_000);
    let mut r = [0u8; 2];
    let _ = getrandom::fill(&mut r);
    base + base * i64::from(u16::from_le_bytes(r)) / (5 * 65_536)
}

/// Runs due deliveries every second until the process ends.
pub async fn dispatcher(service: Arc<Service>) {
    let owner = format!("delivery-{}-{}", std::process::id(), ulid::Ulid::new());
    loop {
        match service
            .store
            .claim_deliveries(&owner, service.now_ms(), LEASE_MS, 4)
        {
            Ok(due) => {
                let runs = due.into_iter().map(|job_id| {
                    let (service, owner) = (service.clone(), owner.clone());
                    async move {
                        if let Err(e) = attempt(&service, &owner, &job_id).await {
                            tracing::warn!(export = %job_id, "delivery attempt not recorded: {e:#}");
                        }
                    }
                });
                futures::future::join_all(runs).await;
            }
            Err(e) => tracing::warn!("delivery queue: {e:#}"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// One attempt to deliver the export `job_id` (claimed by `owner`), recorded
/// whatever happens.
async fn attempt(service: &Arc<Service>, owner: &str, job_id: &str) -> Result<()> {
    /// Stops the lease renewal however the attempt ends (a panic included).
    struct AbortOnDrop(tokio::task::JoinHandle<()>);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let renew = {
        let (service, owner, job_id) = (service.clone(), owner.to_string(), job_id.to_string());
        AbortOnDrop(tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(LEASE_MS as u64 / 3)).await;
                let _ =
                    service
                        .store
                        .renew_delivery_lease(&job_id, &owner, service.now_ms(), LEASE_MS);
            }
        }))
    };
    let outcome = upload(service, job_id).await;
    if outcome.is_ok() {
        fail::fail_point!("delivery.after_upload");
    }
    drop(renew);
    let now = service.now_ms();
    match outcome {
        Ok(key) => {
            if service.store.delivery_done(job_id, owner, &key, now)? {
                tracing::info!(export = %job_id, %key, "delivered");
                service.store.audit(
                    now,
                    "evidex",
                    "export.delivered",
                    Some(job_id),
                    Some(&json!({"key": key})),
                )?;
                crate::webhooks::notify(service, "export.delivered", job_id)?;
            }
        }
        Err(Failure { reason, permanent }) => {
            let retry_for = service.config.delivery.retry_for_secs as i64 * 1000;
            let status = service.store.delivery_failed(
                job_id,
                owner,
                &reason,
                now,
                |attempts, first_at| {
                    let next = now + backoff_ms(attempts - 1);
                    (!permanent && next < first_at + retry_for).then_some(next)
                },
            )?;
            tracing::warn!(export = %job_id, error = %reason, %status, "delivery attempt failed");
            if status == "failed" {
                service.store.audit(
                    now,
                    "evidex",
                    "export.delivery_failed",
                    Some(job_id),
                    Some(&json!({"error": reason})),
                )?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> DeliverySettings {
        DeliverySettings {
            bucket: "evidence-bucket".into(),
            access_key_id: "AKIA".into(),
            prefix: "evidence/".into(),
            ..DeliverySettings::default()
        }
    }

    #[test]
    fn settings_are_checked_field_by_field() {
        assert_eq!(good().validate(), Ok(()));
        let cases: Vec<(DeliverySettings, &str)> = vec![
            (
                DeliverySettings {
                    bucket: "Bad_Bucket".into(),
                    ..good()
                },
                "bucket:",
            ),
            (
                DeliverySettings {
                    region: "eu west".into(),
                    ..good()
                },
                "region:",
            ),
            (
                DeliverySettings {
                    prefix: "/abs".into(),
                    ..good()
                },
                "prefix:",
            ),
            (
                DeliverySettings {
                    prefix: "a b/".into(),
                    ..good()
                },
                "prefix:",
            ),
            (
                DeliverySettings {
                    access_key_id: String::new(),
                    ..good()
                },
                "access_key_id:",
            ),
            (
                DeliverySettings {
                    endpoint: Some("file:///etc".into()),
                    ..good()
                },
                "endpoint:",
            ),
            (
                DeliverySettings {
                    object_lock: Some(ObjectLock {
                        mode: "LEGAL".into(),
                        days: 1,
                    }),
                    ..good()
                },
                "object_lock.mode",
            ),
            (
                DeliverySettings {
                    object_lock: Some(ObjectLock {
                        mode: "COMPLIANCE".into(),
                        days: 0,
                    }),
                    ..good()
                },
                "object_lock.days",
            ),
            (
                DeliverySettings {
                    server_side_encryption: Some(ServerSideEncryption {
                        algorithm: "rot13".into(),
                        kms_key_id: None,
                    }),
                    ..good()
                },
                "server_side_encryption.algorithm",
            ),
        ];
        for (s, want) in cases {
            let e = s.validate().unwrap_err();
            assert!(e.starts_with(want), "{want}: {e}");
        }
    }

    #[test]
    fn backoff_grows_to_a_bound() {
        assert!((2_000..=2_400).contains(&backoff_ms(0)));
        assert!((4_000..=4_800).contains(&backoff_ms(1)));
        assert!(backoff_ms(30) <= 360_000);
    }
}
