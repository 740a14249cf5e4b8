//! The metadata database (SQLite, WAL): export jobs with their leases, API tokens
//! (hashed), the hash-chained audit log, and server secrets. The server and every
//! `worker_export` process open the same file; SQLite's locking serialises writers.

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// File name of the database inside the state directory.
pub const DB_FILE: &str = "evidex.sqlite";

/// Attempts before a job is failed for good.
pub const MAX_ATTEMPTS: i64 = 3;

/// A role a token grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything.
    Admin,
    /// Exports, presets, downloads, the audit log.
    Compliance,
    /// Reads the job list and summaries; no downloads.
    Viewer,
    /// Pushes events only.
    Ingest,
    /// Reads the event stream (`GET /v1/events/stream`) only: a SIEM pipeline.
    Siem,
}

impl Role {
    /// Parses `admin|compliance|viewer|ingest|siem`.
    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "admin" => Role::Admin,
            "compliance" => Role::Compliance,
            "viewer" => Role::Viewer,
            "ingest" => Role::Ingest,
            "siem" => Role::Siem,
            _ => return None,
        })
    }

    /// The spelling used in the API and database.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Compliance => "compliance",
            Role::Viewer => "viewer",
            Role::Ingest => "ingest",
            Role::Siem => "siem",
        }
    }
}

/// A caller authenticated by token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Token id.
    pub token_id: String,
    /// Token name (`ci-pipeline`).
    pub name: String,
    /// Its role.
    pub role: Role,
}

impl Principal {
    /// How the audit log and jobs name the caller.
    pub fn actor(&self) -> String {
        format!("token:{} ({})", self.name, self.role.as_str())
    }
}

/// An export job as stored.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Job {
    /// `exp_` + ULID.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// The request as the API received it (normalised).
    pub params: Value,
    /// `queued|processing|completed|failed|cancelled|expired`.
    pub status: String,
    /// Attempts started so far.
    pub attempts: i64,
    /// Event rows written so far.
    pub rows_written: i64,
    /// Rows the preview counted.
    pub rows_total: Option<i64>,
    /// Last error.
    pub error: Option<String>,
    /// Who created it.
    pub created_by: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub started_at: Option<String>,
    /// RFC 3339.
    pub finished_at: Option<String>,
    /// `{file_name, bytes, sha256, content_type, expires_at, manifest_sha256}`.
    pub artifact: Option<Value>,
    /// Schedule that made it.
    pub schedule_id: Option<String>,
    /// The schedule's period it covers (`2026-Q1`), for scheduled runs.
    pub period: Option<String>,
    /// `{status: pending|delivered|failed, key, attempts, last_error}` when the
    /// export is delivered to the bucket.
    pub delivery: Option<Value>,
}

impl Job {
    /// The API representation.
    pub fn to_json(&self) -> Value {
        let total = self.rows_total.unwrap_or(0);
        let percent = match self.status.as_str() {
            "completed" => 100.0,
            _ if total > 0 => ((self.rows_written as f64 / total as f64) * 100.0).min(99.9),
            _ => 0.0,
        };
        let p = &self.params;
        serde_json::json!({
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "from": p["from"],
            "to": p["to"],
            "timezone": p["timezone"],
            "format": p["format"],
            "filters": p["filters"],
            "include": p["include"],
            "preset": p["preset"],
            "sql": p["sql"],
            "include_payloads": p["include_payloads"],
            "status": self.status,
            "attempts": self.attempts,
            "progress": {
                "rows_written": self.rows_written,
                "rows_total": self.rows_total,
                "percent": (percent * 10.0).round() / 10.0,
            },
            "created_by": self.created_by,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "error": self.error,
            "artifact": self.artifact,
            "schedule_id": self.schedule_id,
            "period": self.period,
            "delivery": self.delivery,
        })
    }
}

/// Milliseconds since the epoch to RFC 3339.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

mod deliveries;
mod schedules;
mod sessions;
mod settings;
mod webhooks;
pub use schedules::{NewRun, ScheduleRow, ScheduleRun};
pub use settings::SavedPreset;
pub use webhooks::{Webhook, WebhookAttempt, WebhookMessage};

/// The database, shared by the tasks of one process.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    params TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_until INTEGER,
    rows_written INTEGER NOT NULL DEFAULT 0,
    rows_total INTEGER,
    error TEXT,
    created_by TEXT NOT NULL,
    created_token TEXT,
    idempotency_key TEXT,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER,
    artifact TEXT,
    schedule_id TEXT
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status, created_at);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency ON jobs(created_token, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_log (
    seq INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    details TEXT,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS secrets (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
";

/// A job row with its delivery (as a JSON object) and its schedule period.
const JOB_SELECT: &str = "SELECT jobs.*,
    (SELECT json_object('status', d.status, 'key', d.key, 'attempts', d.attempts,
                        'last_error', d.last_error)
       FROM deliveries d WHERE d.job_id = jobs.id) AS delivery,
    (SELECT r.period FROM schedule_runs r WHERE r.job_id = jobs.id) AS period
  FROM jobs";

/// The hash of the audit entry before the first.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit-log entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditEntry {
    /// Position in the chain, from 1.
    pub seq: i64,
    /// Milliseconds since the epoch.
    pub at: i64,
    /// Who.
    pub actor: String,
    /// What (`export.created`, `token.created`, ...).
    pub action: String,
    /// On what (an export id).
    pub target: Option<String>,
    /// JSON details.
    pub details: Option<String>,
    /// The previous entry's hash.
    pub prev_hash: String,
    /// SHA-256 over this entry's fields and `prev_hash`.
    pub hash: String,
}

impl AuditEntry {
    /// The hash this entry must carry.
    pub fn compute_hash(&self) -> String {
        let mut h = Sha256::new();
        for part in [
            self.seq.to_string(),
            self.at.to_string(),
            self.actor.clone(),
            self.action.clone(),
            self.target.clone().unwrap_or_default(),
            self.details.clone().unwrap_or_default(),
            self.prev_hash.clone(),
        ] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        hex::encode(h.finalize())
    }
}

fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).expect("the OS provides randomness");
    hex::encode(b)
}

impl Store {
    /// Opens (creating) the database in `state_dir`.
    pub fn open(state_dir: &Path) -> Result<Store> {
        std::fs::create_dir_all(state_dir)
            .with_context(|| format!("cannot create state directory {}", state_dir.display()))?;
        let path = state_dir.join(DB_FILE);
        let conn = Connection::open(&path)
            .with_context(|| format!("cannot open the metadata database {}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(SCHEMA)
            .context("cannot create the metadata tables")?;
        conn.execute_batch(settings::SCHEMA)
            .context("cannot create the presets and settings tables")?;
        conn.execute_batch(webhooks::SCHEMA)
            .context("cannot create the webhook tables")?;
        conn.execute_batch(deliveries::SCHEMA)
            .context("cannot create the delivery tables")?;
        conn.execute_batch(schedules::SCHEMA)
            .context("cannot create the schedule tables")?;
        conn.execute_batch(sessions::SCHEMA)
            .context("cannot create the console session table")?;
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> Result<T> {
        let mut conn = self
            .conn
            .lock()
            .map_err(|_| anyhow::anyhow!("the metadata database lock is poisoned"))?;
        Ok(f(&mut conn)?)
    }

    /// A named secret, created (random, 32 bytes) on first use.
    pub fn secret(&self, name: &str) -> Result<Vec<u8>> {
        let fresh = random_hex(32);
        let value: String = self.with(|c| {
            c.execute(
                "INSERT OR IGNORE INTO secrets(name, value) VALUES (?1, ?2)",
                params![name, fresh],
            )?;
            c.query_row(
                "SELECT value FROM secrets WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
        })?;
        Ok(hex::decode(value)?)
    }

    /// Creates a token; returns `(id, token)`. Only the token's hash is stored.
    pub fn create_token(&self, name: &str, role: Role, now_ms: i64) -> Result<(String, String)> {
        if name.trim().is_empty() || name.len() > 100 {
            bail!("--name: a token name is 1 to 100 characters");
        }
        let id = format!("tok_{}", &random_hex(8));
        let token = format!("evx_{}", random_hex(24));
        self.with(|c| {
            c.execute(
                "INSERT INTO tokens(id, name, role, hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id, name, role.as_str(), hash_token(&token), now_ms],
            )
        })?;
        Ok((id, token))
    }

    /// The principal a bearer token belongs to.
    pub fn authenticate(&self, token: &str) -> Result<Option<Principal>> {
        let hash = hash_token(token);
        self.with(|c| {
            c.query_row(
                "SELECT id, name, role FROM tokens WHERE hash = ?1",
                params![hash],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                },
            )
            .optional()
        })
        .map(|row| {
            row.and_then(|(token_id, name, role)| {
                Role::parse(&role).map(|role| Principal {
                    token_id,
                    name,
                    role,
                })
            })
        })
    }

    /// Appends an audit entry, chained to the previous one.
    pub fn audit(
        &self,
        now_ms: i64,
        actor: &str,
        action: &str,
        target: Option<&str>,
        details: Option<&Value>,
    ) -> Result<AuditEntry> {
        let details = details.map(|d| d.to_string());
        self.with(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let prev: Option<(i64, String)> = tx
                .query_row(
                    "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let (seq, prev_hash) = match prev {
                Some((s, h)) => (s + 1, h),
                None => (1, GENESIS_HASH.to_string()),
            };
            let mut entry = AuditEntry {
                seq,
                at: now_ms,
                actor: actor.to_string(),
                action: action.to_string(),
                target: target.map(str::to_string),
                details,
                prev_hash,
                hash: String::new(),
            };
            entry.hash = entry.compute_hash();
            tx.execute(
                "INSERT INTO audit_log(seq, at, actor, action, target, details, prev_hash, hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    entry.seq,
                    entry.at,
                    entry.actor,
                    entry.action,
                    entry.target,
                    entry.details,
                    entry.prev_hash,
                    entry.hash
                ],
            )?;
            tx.commit()?;
            Ok(entry)
        })
    }

    /// Audit entries with `seq > after`, at most `limit`.
    pub fn audit_entries(&self, after: i64, limit: i64) -> Result<Vec<AuditEntry>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT seq, at, actor, action, target, details, prev_hash, hash FROM audit_log
                 WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            st.query_map(params![after, limit], |r| {
                Ok(AuditEntry {
                    seq: r.get(0)?,
                    at: r.get(1)?,
                    actor: r.get(2)?,
                    action: r.get(3)?,
                    target: r.get(4)?,
                    details: r.get(5)?,
                    prev_hash: r.get(6)?,
                    hash: r.get(7)?,
                })
            })?
            .collect()
        })
    }

    /// Checks the whole chain; returns the number of entries, or the first break.
    pub fn verify_audit_chain(&self) -> Result<std::result::Result<i64, String>> {
        let mut prev = GENESIS_HASH.to_string();
        let mut expected_seq = 1;
        let mut after = 0;
        loop {
            let batch = self.audit_entries(after, 10_000)?;
            if batch.is_empty() {
                return Ok(Ok(expected_seq - 1));
            }
            for e in batch {
                if e.seq != expected_seq {
                    return Ok(Err(format!(
                        "entry {expected_seq} is missing (the next entry is {})",
                        e.seq
                    )));
                }
                if e.prev_hash != prev {
                    return Ok(Err(format!(
                        "entry {} does not follow entry {}: its prev_hash differs",
                        e.seq,
                        e.seq - 1
                    )));
                }
                if e.compute_hash() != e.hash {
                    return Ok(Err(format!(
                        "entry {} was changed: its hash does not match its content",
                        e.seq
                    )));
                }
                prev = e.hash.clone();
                expected_seq += 1;
                after = e.seq;
            }
        }
    }

    fn job_from_row(r: &rusqlite::Row) -> rusqlite::Result<Job> {
        let ms = |v: Option<i64>| v.map(rfc3339);
        Ok(Job {
            id: r.get("id")?,
            name: r.get("name")?,
            description: r.get("description")?,
            params: serde_json::from_str(&r.get::<_, String>("params")?).unwrap_or(Value::Null),
            status: r.get("status")?,
            attempts: r.get("attempts")?,
            rows_written: r.get("rows_written")?,
            rows_total: r.get("rows_total")?,
            error: r.get("error")?,
            created_by: r.get("created_by")?,
            created_at: rfc3339(r.get("created_at")?),
            started_at: ms(r.get("started_at")?),
            finished_at: ms(r.get("finished_at")?),
            artifact: r
                .get::<_, Option<String>>("artifact")?
                .and_then(|a| serde_json::from_str(&a).ok()),
            schedule_id: r.get("schedule_id")?,
            period: r.get("period")?,
            delivery: r
                .get::<_, Option<String>>("delivery")?
                .and_then(|a| serde_json::from_str(&a).ok()),
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
        let params_text = params.to_string();
        let created = self.with(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            if let Some(key) = idempotency_key {
                let existing: Option<String> = tx
                    .query_row(
                        "SELECT id FROM jobs WHERE created_token = ?1 AND idempotency_key = ?2",
                        params![created_by.token_id, key],
                        |r| r.get(0),
                    )
                    .optional()?;
                if let Some(existing) = existing {
                    return Ok((existing, false));
                }
            }
            tx.execute(
                "INSERT INTO jobs(id, name, description, params, status, created_by, created_token,
                                  idempotency_key, created_at)
                 VALUES (?1, ?2, ?3, ?4, 'queued', ?5, ?6, ?7, ?8)",
                params![
                    id,
                    name,
                    description,
                    params_text,
                    created_by.actor(),
                    created_by.token_id,
                    idempotency_key,
                    now_ms
                ],
            )?;
            tx.commit()?;
            Ok((id.to_string(), true))
        })?;
        let job = self
            .job(&created.0)?
            .ok_or_else(|| anyhow::anyhow!("job {} vanished", created.0))?;
        Ok((job, created.1))
    }

    /// One job.
    pub fn job(&self, id: &str) -> Result<Option<Job>> {
        self.with(|c| {
            c.query_row(&format!("{JOB_SELECT} WHERE id = ?1"), params![id], |r| {
                Self::job_from_row(r)
            })
            .optional()
        })
    }

    /// Jobs, newest first, optionally of one status; `before` is a job id cursor.
    pub fn jobs(&self, status: Option<&str>, limit: i64, before: Option<&str>) -> Result<Vec<Job>> {
        self.with(|c| {
            let mut st = c.prepare(&format!(
                "{JOB_SELECT}
                 WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR id < ?2)
                 ORDER BY id DESC LIMIT ?3"
            ))?;
            st.query_map(params![status, before, limit], Self::job_from_row)?
                .collect()
        })
    }

    /// Counts of jobs by status.
    pub fn job_counts(&self) -> Result<Vec<(String, i64)>> {
        self.with(|c| {
            let mut st = c.prepare("SELECT status, count(*) FROM jobs GROUP BY status")?;
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect()
        })
    }

    /// Event rows written by every completed export (any process).
    pub fn rows_exported(&self) -> Result<i64> {
        self.with(|c| {
            c.query_row(
                "SELECT coalesce(sum(rows_written), 0) FROM jobs WHERE status IN ('completed', 'expired')",
                [],
                |r| r.get(0),
            )
        })
    }

    /// Claims the oldest runnable job for `owner` with a lease until `now + lease_ms`:
    /// a queued job, or a processing one whose lease ran out (its worker died). A
    /// job whose lease ran out after its last attempt is failed instead.
    pub fn claim(&self, owner: &str, now_ms: i64, lease_ms: i64) -> Result<Option<Job>> {
        let id: Option<String> = self.with(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            tx.execute(
                "UPDATE jobs SET status = 'failed', finished_at = ?1, lease_owner = NULL,
                   error = coalesce(error, 'the worker stopped responding') ||
                           ' (gave up after ' || attempts || ' attempts)'
                 WHERE status = 'processing' AND lease_until < ?1 AND attempts >= ?2",
                params![now_ms, MAX_ATTEMPTS],
            )?;
            let id: Option<String> = tx
                .query_row(
                    // A scheduled run waits for the schedule's earlier runs: its
                    // manifest records the hash of the previous run's manifest.
                    "SELECT id FROM jobs
                     WHERE (status = 'queued' OR (status = 'processing' AND lease_until < ?1))
                       AND NOT EXISTS (
                         SELECT 1 FROM schedule_runs r1
                           JOIN schedule_runs r0 ON r0.schedule_id = r1.schedule_id
                                                AND r0.period_start < r1.period_start
                           JOIN jobs j0 ON j0.id = r0.job_id
                          WHERE r1.job_id = jobs.id AND j0.status IN ('queued', 'processing'))
                     ORDER BY created_at, id LIMIT 1",
                    params![now_ms],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(id) = &id {
                tx.execute(
                    "UPDATE jobs SET status = 'processing', lease_owner = ?2, lease_until = ?3,
                       attempts = attempts + 1, rows_written = 0,
                       started_at = coalesce(started_at, ?4)
                     WHERE id = ?1",
                    params![id, owner, now_ms + lease_ms, now_ms],
                )?;
            }
            tx.commit()?;
            Ok(id)
        })?;
        match id {
            Some(id) => self.job(&id),
            None => Ok(None),
        }
    }

    /// Extends the lease and records progress; returns the job's status (a user may
    /// have cancelled it) or `None` when the lease is no longer ours.
    pub fn heartbeat(
        &self,
        id: &str,
        owner: &str,
        now_ms: i64,
        lease_ms: i64,
        rows_written: i64,
    ) -> Result<Option<String>> {
        self.with(|c| {
            c.execute(
                "UPDATE jobs SET lease_until = ?3, rows_written = max(rows_written, ?4)
                 WHERE id = ?1 AND lease_owner = ?2 AND status = 'processing'",
                params![id, owner, now_ms + lease_ms, rows_written],
            )?;
            c.query_row(
                "SELECT status FROM jobs WHERE id = ?1 AND lease_owner = ?2",
                params![id, owner],
                |r| r.get(0),
            )
            .optional()
        })
    }

    /// Records the preview count of a running job.
    pub fn set_total(&self, id: &str, owner: &str, total: i64) -> Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE jobs SET rows_total = ?3 WHERE id = ?1 AND lease_owner = ?2",
                params![id, owner, total],
            )
        })?;
        Ok(())
    }

    /// Marks a job this worker holds completed (queuing its delivery in the same
    /// transaction when `deliver`); `false` if it no longer holds it.
    pub fn complete(
        &self,
        id: &str,
        owner: &str,
        now_ms: i64,
        rows: i64,
        artifact: &Value,
        deliver: bool,
    ) -> Result<bool> {
        let n = self.with(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let n = tx.execute(
                "UPDATE jobs SET status = 'completed', finished_at = ?3, rows_written = ?4,
                   artifact = ?5, error = NULL, lease_owner = NULL
                 WHERE id = ?1 AND lease_owner = ?2 AND status = 'processing'",
                params![id, owner, now_ms, rows, artifact.to_string()],
            )?;
            if n == 1 && deliver {
                deliveries::queue(&tx, id, now_ms)?;
            }
            tx.commit()?;
            Ok(n)
        })?;
        Ok(n == 1)
    }

    /// Records a failed attempt: back to the queue, or failed for good after the last
    /// attempt or when `permanent` (the request itself is wrong).
    pub fn fail(
        &self,
        id: &str,
        owner: &str,
        now_ms: i64,
        error: &str,
        permanent: bool,
    ) -> Result<String> {
        self.with(|c| {
            c.execute(
                "UPDATE jobs SET error = ?3, lease_owner = NULL,
                   status = CASE WHEN ?4 OR attempts >= ?5 THEN 'failed' ELSE 'queued' END,
                   finished_at = CASE WHEN ?4 OR attempts >= ?5 THEN ?6 ELSE NULL END
                 WHERE id = ?1 AND lease_owner = ?2 AND status = 'processing'",
                params![id, owner, error, permanent, MAX_ATTEMPTS, now_ms],
            )?;
            c.query_row("SELECT status FROM jobs WHERE id = ?1", params![id], |r| {
                r.get(0)
            })
        })
    }

    /// Cancels a queued or processing job; returns its status afterwards.
    pub fn cancel(&self, id: &str, now_ms: i64) -> Result<Option<String>> {
        self.with(|c| {
            c.execute(
                "UPDATE jobs SET status = 'cancelled', finished_at = ?2
                 WHERE id = ?1 AND status IN ('queued', 'processing')",
                params![id, now_ms],
            )?;
            c.query_row("SELECT status FROM jobs WHERE id = ?1", params![id], |r| {
                r.get(0)
            })
            .optional()
        })
    }

    /// Completed jobs whose artifact expired before `now_ms`: `(id, file_name)`.
    pub fn expired_artifacts(&self, now_ms: i64) -> Result<Vec<String>> {
        let now = rfc3339(now_ms);
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT id FROM jobs WHERE status = 'completed'
                 AND json_extract(artifact, '$.expires_at') < ?1",
            )?;
            st.query_map(params![now], |r| r.get(0))?.collect()
        })
    }

    /// Marks a job's artifact gone.
    pub fn mark_expired(&self, id: &str) -> Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE jobs SET status = 'expired' WHERE id = ?1 AND status = 'completed'",
                params![id],
            )
        })?;
        Ok(())
    }
}
