//! Deliveries to the bucket: one row per export to deliver, queued in the same
//! transaction that completes the job, claimed with a lease by a process's delivery
//! dispatcher, retried until delivered or given up.

use anyhow::Result;
use serde_json::Value;

use super::Store;
use super::db::{Conn, args};

/// Queues (or re-queues) the delivery of `job_id` in the caller's transaction:
/// pending, due now, with a fresh retry window and backoff (the attempt count
/// starts again).
pub(super) fn queue(c: &mut dyn Conn, job_id: &str, now_ms: i64) -> Result<()> {
    c.execute(
        "INSERT INTO deliveries(job_id, status, next_at, created_at) VALUES (?1, 'pending', ?2, ?2)
         ON CONFLICT(job_id) DO UPDATE SET status = 'pending', next_at = ?2, attempts = 0,
             first_attempt_at = NULL, finished_at = NULL",
        args![job_id, now_ms],
    )?;
    Ok(())
}

impl Store {
    /// Queues the delivery of a completed export again (`POST
    /// /v1/exports/{id}/deliver`); `false` when the job is not completed.
    pub fn queue_delivery(&self, job_id: &str, now_ms: i64) -> Result<bool> {
        self.tx(|c| {
            let status: Option<String> = c
                .query_opt("SELECT status FROM jobs WHERE id = ?1", args![job_id])?
                .map(|r| r.get(0))
                .transpose()?;
            if status.as_deref() != Some("completed") {
                return Ok(false);
            }
            queue(c, job_id, now_ms)?;
            Ok(true)
        })
    }

    /// Claims up to `limit` due deliveries for `owner` for `lease_ms`; returns their
    /// job ids. Processes claiming together get different deliveries (PostgreSQL:
    /// `FOR UPDATE SKIP LOCKED`).
    pub fn claim_deliveries(
        &self,
        owner: &str,
        now_ms: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<String>> {
        self.tx(|c| {
            let sql = format!(
                "SELECT job_id FROM deliveries
                 WHERE status = 'pending' AND next_at <= ?1
                   AND (lease_until IS NULL OR lease_until < ?1)
                 ORDER BY next_at LIMIT ?2{}",
                c.dialect().skip_locked()
            );
            let ids: Vec<String> = c
                .query(&sql, args![now_ms, limit])?
                .iter()
                .map(|r| r.get(0))
                .collect::<Result<_>>()?;
            for id in &ids {
                c.execute(
                    "UPDATE deliveries SET lease_owner = ?2, lease_until = ?3,
                        first_attempt_at = coalesce(first_attempt_at, ?4)
                     WHERE job_id = ?1",
                    args![id, owner, now_ms + lease_ms, now_ms],
                )?;
            }
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
                args![job_id, owner, now_ms + lease_ms],
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
                args![job_id, owner, key, now_ms],
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
        self.tx(|c| {
            let lock = c.dialect().for_update();
            let row = c.query_opt(
                &format!(
                    "SELECT attempts, first_attempt_at FROM deliveries
                     WHERE job_id = ?1 AND lease_owner = ?2 AND status = 'pending'{lock}"
                ),
                args![job_id, owner],
            )?;
            let Some(row) = row else {
                return Ok("pending".to_string());
            };
            let attempts = row.get::<i64>(0)? + 1;
            let first: Option<i64> = row.get(1)?;
            let status = match next(attempts, first.unwrap_or(now_ms)) {
                Some(at) => {
                    c.execute(
                        "UPDATE deliveries SET attempts = ?2, last_error = ?3, next_at = ?4,
                            lease_owner = NULL, lease_until = NULL WHERE job_id = ?1",
                        args![job_id, attempts, error, at],
                    )?;
                    "pending"
                }
                None => {
                    c.execute(
                        "UPDATE deliveries SET status = 'failed', attempts = ?2, last_error = ?3,
                            finished_at = ?4, lease_owner = NULL, lease_until = NULL
                         WHERE job_id = ?1",
                        args![job_id, attempts, error, now_ms],
                    )?;
                    "failed"
                }
            };
            Ok(status.to_string())
        })
    }

    /// `{status, key, attempts, last_error}` of a job's delivery, if it has one.
    pub fn delivery(&self, job_id: &str) -> Result<Option<Value>> {
        self.with(|c| {
            let Some(r) = c.query_opt(
                "SELECT status, key, attempts, last_error FROM deliveries WHERE job_id = ?1",
                args![job_id],
            )?
            else {
                return Ok(None);
            };
            Ok(Some(serde_json::json!({
                "status": r.get::<String>(0)?,
                "key": r.get::<Option<String>>(1)?,
                "attempts": r.get::<i64>(2)?,
                "last_error": r.get::<Option<String>>(3)?,
            })))
        })
    }
}
