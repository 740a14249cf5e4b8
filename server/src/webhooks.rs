//! Webhooks: `export.completed`, `export.failed` and `export.delivered` are POSTed as JSON to the endpoints subscribed to them, signed
//! per the Standard Webhooks specification (standardwebhooks.com, "Signature
//! scheme"): headers `webhook-id` (the message id, the same on every retry),
//! `webhook-timestamp` (Unix seconds) and `webhook-signature: v1,<base64 of
//! HMAC-SHA256(secret, "{id}.{timestamp}.{body}")>`, where the secret is the bytes
//! base64-encoded after the `whsec_` prefix.
//!
//! A message is queued in the metadata database in the same step that finishes the
//! job, then sent by a dispatcher task on every `serve` process (each claims due
//! messages with a short lease, so two processes never send one message at once).
//! Failures and timeouts are retried with exponential backoff and jitter, for at
//! most [`MAX_ATTEMPTS`] attempts; every attempt is recorded. Each attempt resolves
//! the URL through the outbound network guard and connects to the checked address.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::network;
use crate::service::Service;
use crate::store::{Job, WebhookAttempt, WebhookMessage};

/// The events a webhook can subscribe to.
pub const EVENTS: [&str; 3] = ["export.completed", "export.failed", "export.delivered"];

/// Attempts before a message is given up (about 11 hours of backoff in all).
pub const MAX_ATTEMPTS: i64 = 10;

/// How long one attempt may take, connection included.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// A new signing secret: `whsec_` + base64 of 24 random bytes.
pub fn new_secret() -> String {
    let mut b = [0u8; 24];
    getrandom::fill(&mut b).expect("the OS provides randomness");
    format!("whsec_{}", STANDARD.encode(b))
}

/// The `webhook-signature` header value for one message.
pub fn signature(secret: &str, msg_id: &str, timestamp: i64, body: &[u8]) -> Result<String> {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .map_err(|e| anyhow::anyhow!("webhook secret: not base64 after whsec_: {e}"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key length");
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(format!(
        "v1,{}",
        STANDARD.encode(mac.finalize().into_bytes())
    ))
}

/// Delay before attempt `n + 1` after `n` failed ones: 5 s doubling to at most an
/// hour, plus up to 20 % jitter so endpoints that come back are not hit in step.
pub fn backoff_ms(n: i64) -> i64 {
    let base = (5_000i64 << n.clamp(0, 10) as u32).min(3_600_000);
    let mut r = [0u8; 2];
    let _ = getrandom::fill(&mut r);
    base + base * i64::from(u16::from_le_bytes(r)) / (5 * 65_536)
}

/// The JSON body of `event` about `job` (Standard Webhooks payload shape: `type`,
/// `timestamp`, `data`).
pub fn payload(service: &Service, event: &str, job: &Job, now_ms: i64) -> Value {
    let artifact = job.artifact.as_ref().map(|a| {
        json!({"file_name": a["file_name"], "bytes": a["bytes"], "sha256": a["sha256"],
               "content_type": a["content_type"], "expires_at": a["expires_at"]})
    });
    let link = service
        .config
        .server
        .public_url
        .as_ref()
        .map(|u| format!("{}/v1/exports/{}", u.trim_end_matches('/'), job.id));
    json!({
        "type": event,
        "timestamp": crate::store::rfc3339(now_ms),
        "data": {
            "export_id": job.id,
            "name": job.name,
            "status": job.status,
            "format": job.params["format"],
            "from": job.params["from"],
            "to": job.params["to"],
            "schedule_id": job.schedule_id,
            "period": job.period,
            "artifact": artifact,
            "delivery_key": job.delivery.as_ref().and_then(|d| d["key"].as_str()),
            "error": job.error,
            "url": link,
        }
    })
}

/// Queues `event` about the job `id` (as it is now) for every subscribed webhook.
pub fn notify(service: &Service, event: &str, id: &str) -> Result<()> {
    notify_at(service, event, id, service.now_ms())
}

/// Queues `event` about the job `id`, which happened at `happened_at` (ms), for every
/// webhook subscribed to it that existed then.
fn notify_at(service: &Service, event: &str, id: &str, happened_at: i64) -> Result<()> {
    let Some(job) = service.store.job(id)? else {
        return Ok(());
    };
    let now = service.now_ms();
    let body = payload(service, event, &job, now).to_string();
    service
        .store
        .enqueue_webhook_event(event, id, &body, now, happened_at)?;
    Ok(())
}

/// Queues the events of the last hour that a crash kept from being queued when the
/// job ended (the job's end and the queuing are two steps). Messages are unique per
/// (webhook, event, export), so this never queues one twice.
pub fn sweep(service: &Service) -> Result<usize> {
    let since = service.now_ms() - 3_600_000;
    let missing = service.store.missing_webhook_events(since)?;
    for (export_id, event, at) in &missing {
        tracing::info!(export = %export_id, %event, "queuing a webhook event missed by a stopped process");
        notify_at(service, event, export_id, *at)?;
    }
    Ok(missing.len())
}

/// Sends due messages every second until the process ends; every 30 s (and at
/// start) queues events a stopped process missed ([`sweep`]).
pub async fn dispatcher(service: Arc<Service>) {
    let mut last_sweep: Option<Instant> = None;
    loop {
        if last_sweep.is_none_or(|t| t.elapsed() > Duration::from_secs(30)) {
            last_sweep = Some(Instant::now());
            if let Err(e) = sweep(&service) {
                tracing::warn!("webhook sweep: {e:#}");
            }
        }
        match service.store.claim_webhook_messages(
            service.now_ms(),
            2 * ATTEMPT_TIMEOUT.as_millis() as i64,
            16,
        ) {
            Ok(due) => {
                let sends = due.into_iter().map(|m| {
                    let service = service.clone();
                    async move {
                        if let Err(e) = attempt(&service, &m).await {
                            tracing::warn!(message = %m.id, "webhook attempt not recorded: {e:#}");
                        }
                    }
                });
                futures::future::join_all(sends).await;
            }
            Err(e) => tracing::warn!("webhook queue: {e:#}"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// One attempt to deliver `m`, recorded whatever happens.
async fn attempt(service: &Service, m: &WebhookMessage) -> Result<()> {
    let n = m.attempts + 1;
    let started_ms = service.now_ms();
    let started = Instant::now();
    let outcome = send(service, m).await;
    fail::fail_point!("webhook.after_send");
    let latency_ms = started.elapsed().as_millis() as i64;
    let (status_code, error) = match outcome {
        Ok((code, None)) => (Some(code), None),
        Ok((code, Some(e))) => (Some(code), Some(e)),
        Err(e) => (None, Some(e)),
    };
    let delivered = error.is_none();
    let retry_at =
        (!delivered && n < MAX_ATTEMPTS).then(|| started_ms + latency_ms + backoff_ms(n - 1));
    if delivered {
        tracing::info!(message = %m.id, event = %m.event, attempt = n, latency_ms, "webhook delivered");
    } else {
        tracing::warn!(message = %m.id, event = %m.event, attempt = n, error = ?error, "webhook attempt failed");
    }
    service.store.record_webhook_attempt(
        &m.id,
        &WebhookAttempt {
            n,
            at: started_ms,
            status_code,
            latency_ms,
            error,
        },
        delivered,
        retry_at,
    )
}

/// Sends `m` once: `Ok((status, None))` for a 2xx answer, `Ok((status, Some(why)))`
/// for another answer, `Err(why)` when no answer came.
async fn send(
    service: &Service,
    m: &WebhookMessage,
) -> std::result::Result<(i64, Option<String>), String> {
    let (hook, deleted) = service
        .store
        .webhook(&m.webhook_id)
        .map_err(|e| format!("{e:#}"))?
        .ok_or("the webhook no longer exists")?;
    if deleted {
        return Err("the webhook was deleted".to_string());
    }
    let secret = service
        .master_key
        .open(&format!("webhook:{}", hook.id), &hook.secret_sealed)
        .map_err(|e| format!("{e:#}"))?;
    let secret = String::from_utf8(secret).map_err(|_| "the stored secret is not text")?;
    let target = network::resolve_target(
        &hook.url,
        service.config.network.allow_private_targets,
        ATTEMPT_TIMEOUT,
    )
    .await
    .map_err(|e| e.to_string())?;
    let client = network::pinned_client(&target, ATTEMPT_TIMEOUT).map_err(|e| e.to_string())?;
    let ts = service.now_ms() / 1000;
    let sig = signature(&secret, &m.id, ts, m.payload.as_bytes()).map_err(|e| format!("{e:#}"))?;
    let r = client
        .post(target.url.clone())
        .header("content-type", "application/json")
        .header("user-agent", concat!("evidex/", env!("CARGO_PKG_VERSION")))
        .header("webhook-id", &m.id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", sig)
        .body(m.payload.clone())
        .send()
        .await
        .map_err(|e| {
            if e.is_timeout() {
                format!("no answer within {} s", ATTEMPT_TIMEOUT.as_secs())
            } else if e.is_connect() {
                format!("cannot connect to {}: {e}", target.addr)
            } else {
                e.to_string()
            }
        })?;
    let code = i64::from(r.status().as_u16());
    if r.status().is_success() {
        Ok((code, None))
    } else if r.status().is_redirection() {
        Ok((
            code,
            Some(format!("answered {code}; redirects are not followed")),
        ))
    } else {
        Ok((code, Some(format!("answered {code}"))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_specification_example() {
        // The example of the Standard Webhooks specification (signature scheme).
        let sig = signature(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        )
        .unwrap();
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn backoff_grows_and_is_bounded() {
        assert!((5_000..=6_000).contains(&backoff_ms(0)));
        assert!((10_000..=12_000).contains(&backoff_ms(1)));
        assert!(backoff_ms(20) <= 3_600_000 * 6 / 5);
        let secret = new_secret();
        assert!(secret.starts_with("whsec_"));
        assert_eq!(STANDARD.decode(&secret[6..]).unwrap().len(), 24);
    }
}
