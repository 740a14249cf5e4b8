//! Webhook endpoints, the events queued for them (one row per message: its id is the
//! `webhook-id` header, the same on every retry) and every delivery attempt.

use anyhow::Result;
use serde::Serialize;

use super::db::{Row, args};
use super::{Store, random_hex};

/// A webhook endpoint (the secret stays sealed in the database).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Webhook {
    /// `wh_` + 16 hex digits.
    pub id: String,
    /// Where events are POSTed.
    pub url: String,
    /// The events it receives.
    pub events: Vec<String>,
    /// Free text.
    pub description: String,
    /// Who created it.
    pub created_by: String,
    /// Milliseconds since the epoch.
    pub created_at: i64,
    /// The signing secret, sealed with the master key (never serialised).
    #[serde(skip)]
    pub secret_sealed: String,
}

/// One message queued for a webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WebhookMessage {
    /// `msg_` + 24 hex digits: the `webhook-id` header.
    pub id: String,
    /// The endpoint.
    pub webhook_id: String,
    /// `export.completed`, `export.failed`, `export.delivered`.
    pub event: String,
    /// The export it is about.
    pub export_id: Option<String>,
    /// The JSON body sent.
    #[serde(skip)]
    pub payload: String,
    /// `pending`, `delivered`, `failed`.
    pub status: String,
    /// Attempts made.
    pub attempts: i64,
    /// When the next attempt is due (ms).
    pub next_at: i64,
    /// The last attempt's error.
    pub last_error: Option<String>,
    /// When it was queued (ms).
    pub created_at: i64,
    /// When it was delivered or given up (ms).
    pub finished_at: Option<i64>,
}

/// One attempt to deliver a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WebhookAttempt {
    /// 1 for the first attempt.
    pub n: i64,
    /// When it started (ms).
    pub at: i64,
    /// The HTTP status answered, if any.
    pub status_code: Option<i64>,
    /// How long it took.
    pub latency_ms: i64,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

fn webhook_row(r: &Row) -> Result<Webhook> {
    let events: String = r.get(2)?;
    Ok(Webhook {
        id: r.get(0)?,
        url: r.get(1)?,
        events: serde_json::from_str(&events).unwrap_or_default(),
        description: r.get(3)?,
        secret_sealed: r.get(4)?,
        created_by: r.get(5)?,
        created_at: r.get(6)?,
    })
}

fn message_row(r: &Row) -> Result<WebhookMessage> {
    Ok(WebhookMessage {
        id: r.get(0)?,
        webhook_id: r.get(1)?,
        event: r.get(2)?,
        export_id: r.get(3)?,
        payload: r.get(4)?,
        status: r.get(5)?,
        attempts: r.get(6)?,
        next_at: r.get(7)?,
        last_error: r.get(8)?,
        created_at: r.get(9)?,
        finished_at: r.get(10)?,
    })
}

const WEBHOOK_COLUMNS: &str = "id, url, events, description, secret_sealed, created_by, created_at";
const MESSAGE_COLUMNS: &str = "id, webhook_id, event, export_id, payload, status, attempts, next_at, last_error, created_at, finished_at";

impl Store {
    /// A new webhook id (`wh_...`), for sealing its secret before it is stored.
    pub fn new_webhook_id() -> String {
        format!("wh_{}", random_hex(8))
    }

    /// Stores a webhook.
    pub fn insert_webhook(&self, w: &Webhook) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO webhooks(id, url, events, description, secret_sealed, created_by, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                args![
                    &w.id,
                    &w.url,
                    serde_json::to_string(&w.events).unwrap_or_default(),
                    &w.description,
                    &w.secret_sealed,
                    &w.created_by,
                    w.created_at
                ],
            )
        })?;
        Ok(())
    }

    /// The webhooks not deleted, oldest first.
    pub fn webhooks(&self) -> Result<Vec<Webhook>> {
        self.with(|c| {
            c.query(
                &format!(
                    "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE deleted_at IS NULL ORDER BY created_at, id"
                ),
                &[],
            )?
            .iter()
            .map(webhook_row)
            .collect()
        })
    }

    /// One webhook (also a deleted one, whose messages are still listed).
    pub fn webhook(&self, id: &str) -> Result<Option<(Webhook, bool)>> {
        self.with(|c| {
            c.query_opt(
                &format!(
                    "SELECT {WEBHOOK_COLUMNS}, deleted_at IS NOT NULL FROM webhooks WHERE id = ?1"
                ),
                args![id],
            )?
            .map(|r| Ok((webhook_row(&r)?, r.get::<bool>(7)?)))
            .transpose()
        })
    }

    /// Deletes a webhook: no new messages, and its pending ones are dropped.
    /// Whether it existed.
    pub fn delete_webhook(&self, id: &str, now_ms: i64) -> Result<bool> {
        self.with(|c| {
            let n = c.execute(
                "UPDATE webhooks SET deleted_at = ?2 WHERE id = ?1 AND deleted_at IS NULL",
                args![id, now_ms],
            )?;
            c.execute(
                "UPDATE webhook_messages SET status = 'failed', last_error = 'the webhook was deleted',
                   finished_at = ?2 WHERE webhook_id = ?1 AND status = 'pending'",
                args![id, now_ms],
            )?;
            Ok(n > 0)
        })
    }

    /// Queues `event` about `export_id` for every webhook subscribed to it, in one
    /// transaction; an event already queued for a webhook is not queued again.
    /// Returns the messages queued.
    pub fn enqueue_webhook_event(
        &self,
        event: &str,
        export_id: &str,
        payload: &str,
        now_ms: i64,
        happened_at: i64,
    ) -> Result<usize> {
        // A webhook hears of events that happened after it was created.
        let hooks: Vec<String> = self
            .webhooks()?
            .into_iter()
            .filter(|w| w.created_at <= happened_at)
            .filter(|w| w.events.iter().any(|e| e == event))
            .map(|w| w.id)
            .collect();
        self.tx(|c| {
            let mut n = 0;
            for hook in &hooks {
                n += c.execute(
                    "INSERT INTO webhook_messages(id, webhook_id, event, export_id, payload, status, next_at, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?6) ON CONFLICT DO NOTHING",
                    args![format!("msg_{}", random_hex(12)), hook, event, export_id, payload, now_ms],
                )? as usize;
            }
            Ok(n)
        })
    }

    /// Claims up to `limit` due messages: each claimed one's `next_at` moves to
    /// `now + lease_ms`, so another process does not send it at the same time.
    pub fn claim_webhook_messages(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<WebhookMessage>> {
        self.tx(|c| {
            let sql = format!(
                "SELECT {MESSAGE_COLUMNS} FROM webhook_messages
                 WHERE status = 'pending' AND next_at <= ?1 ORDER BY next_at LIMIT ?2{}",
                c.dialect().skip_locked()
            );
            let due: Vec<WebhookMessage> = c
                .query(&sql, args![now_ms, limit])?
                .iter()
                .map(message_row)
                .collect::<Result<_>>()?;
            for m in &due {
                c.execute(
                    "UPDATE webhook_messages SET next_at = ?2 WHERE id = ?1",
                    args![&m.id, now_ms + lease_ms],
                )?;
            }
            Ok(due)
        })
    }

    /// Records one attempt and its outcome: delivered, retried at `retry_at`, or
    /// failed for good (`retry_at` = `None` after an error).
    pub fn record_webhook_attempt(
        &self,
        message_id: &str,
        attempt: &WebhookAttempt,
        delivered: bool,
        retry_at: Option<i64>,
    ) -> Result<()> {
        self.tx(|c| {
            c.execute(
                "INSERT INTO webhook_attempts(message_id, n, at, status_code, latency_ms, error)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(message_id, n) DO UPDATE SET at = excluded.at,
                   status_code = excluded.status_code, latency_ms = excluded.latency_ms,
                   error = excluded.error",
                args![
                    message_id,
                    attempt.n,
                    attempt.at,
                    attempt.status_code,
                    attempt.latency_ms,
                    attempt.error.clone()
                ],
            )?;
            let end = attempt.at + attempt.latency_ms;
            match (delivered, retry_at) {
                (true, _) => c.execute(
                    "UPDATE webhook_messages SET status = 'delivered', attempts = ?2, last_error = NULL,
                       finished_at = ?3 WHERE id = ?1",
                    args![message_id, attempt.n, end],
                )?,
                (false, Some(at)) => c.execute(
                    "UPDATE webhook_messages SET attempts = ?2, last_error = ?3, next_at = ?4 WHERE id = ?1",
                    args![message_id, attempt.n, attempt.error.clone(), at],
                )?,
                (false, None) => c.execute(
                    "UPDATE webhook_messages SET status = 'failed', attempts = ?2, last_error = ?3,
                       finished_at = ?4 WHERE id = ?1",
                    args![message_id, attempt.n, attempt.error.clone(), end],
                )?,
            };
            Ok(())
        })
    }

    /// A webhook's messages, newest first, each with its attempts.
    pub fn webhook_messages(
        &self,
        webhook_id: &str,
        limit: i64,
    ) -> Result<Vec<(WebhookMessage, Vec<WebhookAttempt>)>> {
        self.with(|c| {
            let msgs: Vec<WebhookMessage> = c
                .query(
                    &format!(
                        "SELECT {MESSAGE_COLUMNS} FROM webhook_messages WHERE webhook_id = ?1
                         ORDER BY created_at DESC, id DESC LIMIT ?2"
                    ),
                    args![webhook_id, limit],
                )?
                .iter()
                .map(message_row)
                .collect::<Result<_>>()?;
            let mut out = Vec::with_capacity(msgs.len());
            for m in msgs {
                let attempts = c
                    .query(
                        "SELECT n, at, status_code, latency_ms, error FROM webhook_attempts
                         WHERE message_id = ?1 ORDER BY n",
                        args![&m.id],
                    )?
                    .iter()
                    .map(|r| {
                        Ok(WebhookAttempt {
                            n: r.get(0)?,
                            at: r.get(1)?,
                            status_code: r.get(2)?,
                            latency_ms: r.get(3)?,
                            error: r.get(4)?,
                        })
                    })
                    .collect::<Result<_>>()?;
                out.push((m, attempts));
            }
            Ok(out)
        })
    }
}

impl Store {
    /// Events of the last `since_ms`.. that a subscribed webhook (created before the
    /// event) has no message for: `(export_id, event, when it happened in ms)`. A process that stops between
    /// finishing a job and queuing its messages leaves such gaps; the dispatcher
    /// fills them.
    pub fn missing_webhook_events(&self, since_ms: i64) -> Result<Vec<(String, String, i64)>> {
        self.with(|c| {
            c.query(
                "WITH events(export_id, event, at) AS (
                    SELECT id, CASE status WHEN 'completed' THEN 'export.completed'
                                           ELSE 'export.failed' END, finished_at
                      FROM jobs WHERE status IN ('completed', 'failed') AND finished_at >= ?1
                    UNION ALL
                    SELECT job_id, 'export.delivered', finished_at
                      FROM deliveries WHERE status = 'delivered' AND finished_at >= ?1)
                 SELECT DISTINCT e.export_id, e.event, e.at FROM events e
                   JOIN webhooks w ON w.deleted_at IS NULL AND w.created_at <= e.at
                        AND w.events LIKE ('%\"' || e.event || '\"%')
                  WHERE NOT EXISTS (SELECT 1 FROM webhook_messages m
                                     WHERE m.webhook_id = w.id AND m.event = e.event
                                       AND m.export_id = e.export_id)",
                args![since_ms],
            )?
            .iter()
            .map(|r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .collect()
        })
    }
}
