//! Export jobs: creation (with idempotency keys), listing, claims under a lease,
//! heartbeats, and the writes that end an attempt, each fenced by the attempt
//! number; retention's expiry.

use anyhow::Result;
use serde_json::Value;

use super::db::{Row, args};
use super::{Job, MAX_ATTEMPTS, Principal, Store, deliveries, rfc3339};

/// A job row with its delivery and its schedule period.
const JOB_SELECT: &str = "SELECT jobs.*,
    d.status AS delivery_status, d.key AS delivery_key, d.attempts AS delivery_attempts,
    d.last_error AS delivery_last_error, r.period AS period
  FROM jobs
  LEFT JOIN deliveries d ON d.job_id = jobs.id
  LEFT JOIN schedule_runs r ON r.job_id = jobs.id";

impl Store {
    fn job_from_row(r: &Row) -> Result<Job> {
        let ms = |v: Option<i64>| v.map(rfc3339);
        let delivery = match r.named::<Option<String>>("delivery_status")? {
            Some(status) => Some(serde_json::json!({
                "status": status,
                "key": r.named::<Option<String>>("delivery_key")?,
                "attempts": r.named::<i64>("delivery_attempts")?,
                "last_error": r.named::<Option<String>>("delivery_last_error")?,
            })),
            None => None,
        };
        Ok(Job {
            id: r.named("id")?,
            name: r.named("name")?,
            description: r.named("description")?,
            params: serde_json::from_str(&r.named::<String>("params")?).unwrap_or(Value::Null),
            status: r.named("status")?,
            attempts: r.named("attempts")?,
            rows_written: r.named("rows_written")?,
            rows_total: r.named("rows_total")?,
            error: r.named("error")?,
            created_by: r.named("created_by")?,
            created_at: rfc3339(r.named("created_at")?),
            started_at: ms(r.named("started_at")?),
            finished_at: ms(r.named("finished_at")?),
            artifact: r
                .named::<Option<String>>("artifact")?
                .and_then(|a| serde_json::from_str(&a).ok()),
            schedule_id: r.named("schedule_id")?,
            period: r.named("period")?,
            delivery,
        })
    }

    /// Inserts a queued job, or returns the job an earlier request with the same
    /// idempotency key created (`false` then).
    #[allow(clippy::too_many_arguments, reason = "one row's columns")]
    pub fn create_job(
        &self,
        id: &str,
        name: &str,
        description: &str,
        params: &Value,
        created_by: &Principal,
        idempotency_key: Option<&str>,
        now_ms: i64,
    ) -> Result<(Job, bool)> {
        self.create_job_capped(
            id,
            name,
            description,
            params,
            created_by,
            idempotency_key,
            now_ms,
            None,
        )
    }

    /// [`Store::create_job`], refused with [`crate::limits::TooManyExports`] when
    /// `cap` is set and the token already has that many jobs queued or running. The
    /// count and the insert are one serialised transaction, so two nodes cannot
    /// both take the last place. A repeated idempotency key still answers its job.
    #[allow(clippy::too_many_arguments, reason = "one row's columns")]
    pub fn create_job_capped(
        &self,
        id: &str,
        name: &str,
        description: &str,
        params: &Value,
        created_by: &Principal,
        idempotency_key: Option<&str>,
        now_ms: i64,
        cap: Option<u32>,
    ) -> Result<(Job, bool)> {
        let params_text = params.to_string();
        let created = self.tx_serial(|c| {
            if let Some(key) = idempotency_key {
                let existing = c.query_opt(
                    "SELECT id FROM jobs WHERE created_token = ?1 AND idempotency_key = ?2",
                    args![&created_by.token_id, key],
                )?;
                if let Some(existing) = existing {
                    return Ok((existing.get::<String>(0)?, false));
                }
            }
            if let Some(cap) = cap.filter(|c| *c > 0) {
                let unfinished: i64 = c
                    .query_opt(
                        "SELECT COUNT(*) FROM jobs
                         WHERE created_token = ?1 AND status IN ('queued', 'processing')",
                        args![&created_by.token_id],
                    )?
                    .map(|r| r.get::<i64>(0))
                    .transpose()?
                    .unwrap_or(0);
                if unfinished >= i64::from(cap) {
                    return Err(crate::limits::TooManyExports { cap }.into());
                }
            }
            c.execute(
                "INSERT INTO jobs(id, name, description, params, status, created_by, created_token,
                                  idempotency_key, created_at)
                 VALUES (?1, ?2, ?3, ?4, 'queued', ?5, ?6, ?7, ?8)",
                args![
                    id,
                    name,
                    description,
                    &params_text,
                    created_by.actor(),
                    &created_by.token_id,
                    idempotency_key,
                    now_ms
                ],
            )?;
            Self::announce_job(c)?;
            Ok((id.to_string(), true))
        })?;
        if created.1 {
            self.jobs.bump();
        }
        let job = self
            .job(&created.0)?
            .ok_or_else(|| anyhow::anyhow!("job {} vanished", created.0))?;
        Ok((job, created.1))
    }

    /// One job.
    pub fn job(&self, id: &str) -> Result<Option<Job>> {
        self.with(|c| {
            c.query_opt(&format!("{JOB_SELECT} WHERE jobs.id = ?1"), args![id])?
                .as_ref()
                .map(Self::job_from_row)
                .transpose()
        })
    }

    /// Jobs, newest first, optionally of one status; `before` is a job id cursor.
    pub fn jobs(&self, status: Option<&str>, limit: i64, before: Option<&str>) -> Result<Vec<Job>> {
        self.with(|c| {
            c.query(
                &format!(
                    "{JOB_SELECT}
                     WHERE (CAST(?1 AS TEXT) IS NULL OR jobs.status = ?1)
                       AND (CAST(?2 AS TEXT) IS NULL OR jobs.id < ?2)
                     ORDER BY jobs.id DESC LIMIT ?3"
                ),
                args![status, before, limit],
            )?
            .iter()
            .map(Self::job_from_row)
            .collect()
        })
    }

    /// Counts of jobs by status.
    pub fn job_counts(&self) -> Result<Vec<(String, i64)>> {
        self.with(|c| {
            c.query(
                "SELECT status, CAST(count(*) AS BIGINT) FROM jobs GROUP BY status",
                &[],
            )?
            .iter()
            .map(|r| Ok((r.get(0)?, r.get(1)?)))
            .collect()
        })
    }

    /// Event rows written by every completed export (any process).
    pub fn rows_exported(&self) -> Result<i64> {
        self.with(|c| {
            c.query_one(
                "SELECT CAST(coalesce(sum(rows_written), 0) AS BIGINT) FROM jobs
                 WHERE status IN ('completed', 'expired')",
                &[],
            )?
            .get(0)
        })
    }

    /// Claims the oldest runnable job for `owner` with a lease until `now + lease_ms`:
    /// a queued job, or a processing one whose lease ran out (its worker died). A
    /// job whose lease ran out after its last attempt is failed instead. The claim
    /// starts the next attempt: the job's `attempts` is the attempt number the
    /// worker passes back to fence its writes ([`Store::heartbeat`],
    /// [`Store::complete`], [`Store::fail`]).
    ///
    /// On PostgreSQL, workers claiming at the same moment skip each other's rows
    /// (`FOR UPDATE SKIP LOCKED`) instead of waiting or claiming the same job.
    pub fn claim(&self, owner: &str, now_ms: i64, lease_ms: i64) -> Result<Option<Job>> {
        let id: Option<String> = self.tx(|c| {
            c.execute(
                "UPDATE jobs SET status = 'failed', finished_at = ?1, lease_owner = NULL,
                   error = coalesce(error, 'the worker stopped responding') ||
                           ' (gave up after ' || CAST(attempts AS TEXT) || ' attempts)'
                 WHERE status = 'processing' AND lease_until < ?1 AND attempts >= ?2",
                args![now_ms, MAX_ATTEMPTS],
            )?;
            let id = c.query_opt(
                // A scheduled run waits for the schedule's earlier runs: its
                // manifest records the hash of the previous run's manifest.
                &format!(
                    "SELECT id FROM jobs
                     WHERE (status = 'queued' OR (status = 'processing' AND lease_until < ?1))
                       AND NOT EXISTS (
                         SELECT 1 FROM schedule_runs r1
                           JOIN schedule_runs r0 ON r0.schedule_id = r1.schedule_id
                                                AND r0.period_start < r1.period_start
                           JOIN jobs j0 ON j0.id = r0.job_id
                          WHERE r1.job_id = jobs.id AND j0.status IN ('queued', 'processing'))
                     ORDER BY created_at, id LIMIT 1{}",
                    c.dialect().skip_locked()
                ),
                args![now_ms],
            )?;
            let Some(id) = id else {
                return Ok(None);
            };
            let id: String = id.get(0)?;
            c.execute(
                "UPDATE jobs SET status = 'processing', lease_owner = ?2, lease_until = ?3,
                   attempts = attempts + 1, rows_written = 0,
                   started_at = coalesce(started_at, ?4)
                 WHERE id = ?1",
                args![&id, owner, now_ms + lease_ms, now_ms],
            )?;
            Ok(Some(id))
        })?;
        match id {
            Some(id) => self.job(&id),
            None => Ok(None),
        }
    }

    /// Extends the lease of attempt `attempt` and records progress; returns the
    /// job's status (a user may have cancelled it) or `None` when the lease is no
    /// longer this attempt's.
    pub fn heartbeat(
        &self,
        id: &str,
        owner: &str,
        attempt: i64,
        now_ms: i64,
        lease_ms: i64,
        rows_written: i64,
    ) -> Result<Option<String>> {
        self.with(|c| {
            c.execute(
                "UPDATE jobs SET lease_until = ?4,
                   rows_written = CASE WHEN rows_written > ?5 THEN rows_written ELSE ?5 END
                 WHERE id = ?1 AND lease_owner = ?2 AND attempts = ?3 AND status = 'processing'",
                args![id, owner, attempt, now_ms + lease_ms, rows_written],
            )?;
            c.query_opt(
                "SELECT status FROM jobs WHERE id = ?1 AND lease_owner = ?2 AND attempts = ?3",
                args![id, owner, attempt],
            )?
            .map(|r| r.get(0))
            .transpose()
        })
    }

    /// Gives back the jobs `owner` holds (graceful shutdown past its grace): they are
    /// queued again at once, for any worker, instead of waiting for their lease to
    /// run out. The next claim starts a new attempt, so every later write of the
    /// released attempt is refused by the fence. Returns how many were released.
    pub fn release(&self, owner: &str) -> Result<u64> {
        self.with(|c| {
            c.execute(
                "UPDATE jobs SET status = 'queued', lease_owner = NULL, lease_until = NULL
                 WHERE lease_owner = ?1 AND status = 'processing'",
                args![owner],
            )
        })
    }

    /// Records the preview count of a running attempt.
    pub fn set_total(&self, id: &str, owner: &str, attempt: i64, total: i64) -> Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE jobs SET rows_total = ?4
                 WHERE id = ?1 AND lease_owner = ?2 AND attempts = ?3",
                args![id, owner, attempt, total],
            )
        })?;
        Ok(())
    }

    /// Marks a job completed by attempt `attempt` of `owner` (queuing its delivery
    /// in the same transaction when `deliver`); `false` if that attempt no longer
    /// holds the job (cancelled, or its lease went to a later attempt).
    #[allow(
        clippy::too_many_arguments,
        reason = "the fence and the result's fields"
    )]
    pub fn complete(
        &self,
        id: &str,
        owner: &str,
        attempt: i64,
        now_ms: i64,
        rows: i64,
        artifact: &Value,
        deliver: bool,
    ) -> Result<bool> {
        let n = self.tx(|c| {
            let n = c.execute(
                "UPDATE jobs SET status = 'completed', finished_at = ?4, rows_written = ?5,
                   artifact = ?6, error = NULL, lease_owner = NULL
                 WHERE id = ?1 AND lease_owner = ?2 AND attempts = ?3 AND status = 'processing'",
                args![id, owner, attempt, now_ms, rows, artifact.to_string()],
            )?;
            if n == 1 && deliver {
                deliveries::queue(c, id, now_ms)?;
            }
            if n == 1 {
                // A schedule's next run may have waited for this one.
                Self::announce_job(c)?;
            }
            Ok(n)
        })?;
        if n == 1 {
            self.jobs.bump();
        }
        Ok(n == 1)
    }

    /// Records a failed attempt: back to the queue, or failed for good after the last
    /// attempt or when `permanent` (the request itself is wrong). Returns the job's
    /// status afterwards (unchanged when the attempt no longer held the job).
    pub fn fail(
        &self,
        id: &str,
        owner: &str,
        attempt: i64,
        now_ms: i64,
        error: &str,
        permanent: bool,
    ) -> Result<String> {
        let status: String = self.tx(|c| {
            c.execute(
                "UPDATE jobs SET error = ?4, lease_owner = NULL,
                   status = CASE WHEN ?5 OR attempts >= ?6 THEN 'failed' ELSE 'queued' END,
                   finished_at = CASE WHEN ?5 OR attempts >= ?6 THEN CAST(?7 AS BIGINT) ELSE NULL END
                 WHERE id = ?1 AND lease_owner = ?2 AND attempts = ?3 AND status = 'processing'",
                args![id, owner, attempt, error, permanent, MAX_ATTEMPTS, now_ms],
            )?;
            let status: String = c
                .query_one("SELECT status FROM jobs WHERE id = ?1", args![id])?
                .get(0)?;
            if status == "queued" {
                Self::announce_job(c)?;
            }
            Ok(status)
        })?;
        if status == "queued" {
            self.jobs.bump();
        }
        Ok(status)
    }

    /// Cancels a queued or processing job; returns its status afterwards.
    pub fn cancel(&self, id: &str, now_ms: i64) -> Result<Option<String>> {
        self.with(|c| {
            c.execute(
                "UPDATE jobs SET status = 'cancelled', finished_at = ?2
                 WHERE id = ?1 AND status IN ('queued', 'processing')",
                args![id, now_ms],
            )?;
            c.query_opt("SELECT status FROM jobs WHERE id = ?1", args![id])?
                .map(|r| r.get(0))
                .transpose()
        })
    }

    /// Completed jobs whose artifact expired before `now_ms`: their ids.
    pub fn expired_artifacts(&self, now_ms: i64) -> Result<Vec<String>> {
        let now = rfc3339(now_ms);
        self.with(|c| {
            let sql = format!(
                "SELECT id FROM jobs WHERE status = 'completed' AND {} < ?1",
                c.dialect().json_text("artifact", "expires_at")
            );
            c.query(&sql, args![now])?
                .iter()
                .map(|r| r.get(0))
                .collect()
        })
    }

    /// Marks a job's artifact gone.
    pub fn mark_expired(&self, id: &str) -> Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE jobs SET status = 'expired' WHERE id = ?1 AND status = 'completed'",
                args![id],
            )
        })?;
        Ok(())
    }
}
