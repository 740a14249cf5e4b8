//! Deliveries to the bucket: one row per export to deliver, queued in the same
//! transaction that completes the job, claimed with a lease by a process's delivery
//! dispatcher, retried until delivered or given up.

use anyhow::Result;
use rusqlite::{OptionalExtension, params};
use serde_json::Value;

use super::Store;

/// Tables of this module; created with the rest of the schema.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS deliveries (
    job_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    key TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    next_at INTEGER NOT NULL,
    first_attempt_at INTEGER,
    lease_owner TEXT,
    lease_until INTEGER,
    created_at INTEGER NOT NULL,
    finished_at INTEGER
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(status, next_at);
";

/// Queues (or re-queues) the delivery of `job_id` on `tx`: pending, due now, with a
/// fresh retry window and backoff (the attempt count starts again).
pub(super) fn queue(c: &rusqlite::Connection, job_id: &str, now_ms: i64) -> rusqlite::Result<()> {
    c.execute(
        "INSERT INTO deliveries(job_id, status, next_at, created_at) VALUES (?1, 'pending', ?2, ?2)
         ON CONFLICT(job_id) DO UPDATE SET status = 'pending', next_at = ?2, attempts = 0,
             first_attempt_at = NULL, finished_at = NULL",
        params![job_id, now_ms],
    )?;
    Ok(())
}

impl Store {
    /// Queues the delivery of a completed export again (`POST
    /// /v1/exports/{id}/deliver`); `false` when the job is not completed.
    pub fn queue_delivery(&self, job_id: &str, now_ms: i64) -> Result<bool> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let status: Option<String> = tx
                .query_row(
                    "SELECT status FROM jobs WHERE id = ?1",
                    params![job_id],
                    |r| r.get(0),
                )
                .optional()?;
            if status.as_deref() != Some("completed") {
                return Ok(false);
            }
            queue(&tx, job_id, now_ms)?;
            tx.commit()?;
            Ok(true)
        })
    }

    /// Claims up to `limit` due deliveries for `owner` for `lease_ms`; returns their
    /// job ids.
    pub fn claim_deliveries(
        &self,
        owner: &str,
        now_ms: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<String>> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let ids: Vec<String> = {
                let mut st = tx.prepare(
                    "SELECT job_id FROM deliveries
                     WHERE status = 'pending' AND next_at <= ?1
                       AND (lease_until IS NULL OR lease_until < ?1)
                     ORDER BY next_at LIMIT ?2",
                )?;
                st.query_map(params![now_ms, limit], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?
            };
            for id in &ids {
                tx.execute(
                    "UPDATE deliveries SET lease_owner = ?2, lease_until = ?3,
                        first_attempt_at = coalesce(first_attempt_at, ?4)
                     WHERE job_id = ?1",
                    params![id, owner, now_ms + lease_ms, now_ms],
                )?;
            }
            tx.commit()?;
            Ok(ids)
        })
    }

    /// Extends `owner`'s lease on a delivery it is running.
    pub fn renew_delivery_lease(
        &self,
        job_id: &str,
        owner: &str,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE deliveries SET lease_until = ?3 WHERE job_id = ?1 AND lease_owner = ?2",
                params![job_id, owner, now_ms + lease_ms],
            )
        })?;
        Ok(())
    }

    /// Records a successful attempt; `false` if `owner` no longer held the delivery.
    pub fn delivery_done(&self, job_id: &str, owner: &str, key: &str, now_ms: i64) -> Result<bool> {
        let n = self.with(|c| {
            c.execute(
                "UPDATE deliveries SET status = 'delivered', key = ?3, attempts = attempts + 1,
                    last_error = NULL, finished_at = ?4, lease_owner = NULL, lease_until = NULL
                 WHERE job_id = ?1 AND lease_owner = ?2 AND status = 'pending'",
                params![job_id, owner, key, now_ms],
            )
        })?;
        Ok(n == 1)
    }

    /// Records a failed attempt. `next(attempts, first_attempt_at)` says when to try
    /// again (`None`: give up). Returns the status afterwards.
    pub fn delivery_failed(
        &self,
        job_id: &str,
        owner: &str,
        error: &str,
        now_ms: i64,
        next: impl FnOnce(i64, i64) -> Option<i64>,
    ) -> Result<String> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let row: Option<(i64, Option<i64>)> = tx
                .query_row(
                    "SELECT attempts, first_attempt_at FROM deliveries
                     WHERE job_id = ?1 AND lease_owner = ?2 AND status = 'pending'",
                    params![job_id, owner],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let Some((attempts, first)) = row else {
                return Ok("pending".to_string());
            };
            let attempts = attempts + 1;
            let status = match next(attempts, first.unwrap_or(now_ms)) {
                Some(at) => {
                    tx.execute(
                        "UPDATE deliveries SET attempts = ?2, last_error = ?3, next_at = ?4,
                            lease_owner = NULL, lease_until = NULL WHERE job_id = ?1",
                        params![job_id, attempts, error, at],
                    )?;
                    "pending"
                }
                None => {
                    tx.execute(
                        "UPDATE deliveries SET status = 'failed', attempts = ?2, last_error = ?3,
                            finished_at = ?4, lease_owner = NULL, lease_until = NULL
                         WHERE job_id = ?1",
                        params![job_id, attempts, error, now_ms],
                    )?;
                    "failed"
                }
            };
            tx.commit()?;
            Ok(status.to_string())
        })
    }

    /// `{status, key, attempts, last_error}` of a job's delivery, if it has one.
    pub fn delivery(&self, job_id: &str) -> Result<Option<Value>> {
        self.with(|c| {
            c.query_row(
                "SELECT status, key, attempts, last_error FROM deliveries WHERE job_id = ?1",
                params![job_id],
                |r| {
                    Ok(serde_json::json!({
                        "status": r.get::<_, String>(0)?,
                        "key": r.get::<_, Option<String>>(1)?,
                        "attempts": r.get::<_, i64>(2)?,
                        "last_error": r.get::<_, Option<String>>(3)?,
                    }))
                },
            )
            .optional()
        })
    }
}
