//! The metadata store: export jobs with their leases, API tokens (hashed), the
//! hash-chained audit log, server secrets, presets, settings, webhooks, deliveries,
//! schedules and console sessions.
//!
//! Two databases behind one set of operations: SQLite (WAL) in the state directory,
//! the embedded default, which the server and every `worker_export` on one machine
//! open together (SQLite's locking serialises writers); or PostgreSQL
//! (`database_url`), shared by any number of nodes. Each operation is written once
//! (see `db.rs`); `tests/store_contract.rs` runs the same checks on both.

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use rusqlite::Connection;
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

mod db;
mod deliveries;
mod migrate;
mod pg;
mod schedules;
mod sessions;
mod settings;
mod tokens;
mod webhooks;
pub use db::Dialect;
use db::{Conn, Row, SqliteConn, args};
pub use migrate::{MIGRATIONS, latest as latest_schema_version};
pub use schedules::{NewRun, ScheduleRow, ScheduleRun};
pub use sessions::SESSION_IDLE_MS;
pub use settings::SavedPreset;
pub use tokens::{TokenInfo, TokenRefusal};
pub use webhooks::{Webhook, WebhookAttempt, WebhookMessage};

/// The metadata store, shared by the tasks of one process (cheap to clone).
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    jobs: Arc<JobSignal>,
}

/// Wakes idle workers when a job may have become claimable: a counter bumped by
/// this process's own job writes and, on PostgreSQL, by every node's (`NOTIFY
/// evidex_jobs` in the writing transaction, heard by one `LISTEN` connection).
struct JobSignal {
    tx: tokio::sync::watch::Sender<u64>,
    listening: std::sync::Once,
}

impl JobSignal {
    fn new() -> Arc<JobSignal> {
        Arc::new(JobSignal {
            tx: tokio::sync::watch::channel(0).0,
            listening: std::sync::Once::new(),
        })
    }

    fn bump(&self) {
        self.tx.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// The PostgreSQL notification channel of new or re-queued jobs.
const JOBS_CHANNEL: &str = "evidex_jobs";

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.backend {
            Backend::Sqlite(_) => f.write_str("Store(SQLite)"),
            Backend::Postgres(pool) => write!(f, "Store({})", pool.target()),
        }
    }
}

#[derive(Clone)]
enum Backend {
    Sqlite(Arc<Mutex<Connection>>),
    Postgres(Arc<pg::Pool>),
}

/// The PostgreSQL advisory lock (`pg_advisory_xact_lock`) that serialises the
/// writes SQLite serialises by itself (`BEGIN IMMEDIATE`): the audit chain, job
/// creation with idempotency keys, migrations. Any fixed 64-bit number would do;
/// this one reads "evidex" in ASCII.
const WRITER_LOCK: i64 = 0x0065_7669_6465_78;

/// A job row with its delivery and its schedule period.
const JOB_SELECT: &str = "SELECT jobs.*,
    d.status AS delivery_status, d.key AS delivery_key, d.attempts AS delivery_attempts,
    d.last_error AS delivery_last_error, r.period AS period
  FROM jobs
  LEFT JOIN deliveries d ON d.job_id = jobs.id
  LEFT JOIN schedule_runs r ON r.job_id = jobs.id";

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

    fn from_row(r: &Row) -> Result<AuditEntry> {
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

/// When a migration was applied, for the record only (no decision depends on it,
/// so it does not take the service's `Clock`).
#[allow(clippy::disallowed_methods, reason = "an informational timestamp")]
fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Store {
    /// Opens (creating) the SQLite database in `state_dir` and applies the
    /// migrations it lacks.
    ///
    /// Errors: the directory cannot be created, the file cannot be opened, or it
    /// was migrated by a newer evidex.
    pub fn open(state_dir: &Path) -> Result<Store> {
        std::fs::create_dir_all(state_dir)
            .with_context(|| format!("cannot create state directory {}", state_dir.display()))?;
        let path = state_dir.join(DB_FILE);
        let conn = Connection::open(&path)
            .with_context(|| format!("cannot open the metadata database {}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        let store = Store {
            backend: Backend::Sqlite(Arc::new(Mutex::new(conn))),
            jobs: JobSignal::new(),
        };
        store
            .migrate()
            .with_context(|| format!("cannot migrate the metadata database {}", path.display()))?;
        Ok(store)
    }

    /// Connects to the PostgreSQL database at `url` (`postgres://user:password@host:
    /// port/database`) and applies the migrations it lacks (one node at a time).
    ///
    /// Errors: the URL does not parse, the server cannot be reached or refuses the
    /// login, or the schema is newer than this evidex. No message repeats the URL's
    /// password.
    pub fn connect_postgres(url: &str) -> Result<Store> {
        let pool = pg::Pool::connect(url)?;
        let target = pool.target();
        let store = Store {
            backend: Backend::Postgres(Arc::new(pool)),
            jobs: JobSignal::new(),
        };
        store
            .migrate()
            .with_context(|| format!("cannot migrate the metadata database {target}"))?;
        Ok(store)
    }

    /// The store `config` names: PostgreSQL when `database_url` is set, else SQLite
    /// in the state directory.
    pub fn from_config(config: &crate::config::Config) -> Result<Store> {
        match &config.database_url {
            Some(url) => Store::connect_postgres(&url.0),
            None => Store::open(&config.state_dir()?),
        }
    }

    /// Which database this is.
    pub fn dialect(&self) -> Dialect {
        match self.backend {
            Backend::Sqlite(_) => Dialect::Sqlite,
            Backend::Postgres(_) => Dialect::Postgres,
        }
    }

    /// A receiver that changes when a job may have become claimable, for a worker
    /// to wait on between claims instead of polling. On SQLite it hears only this
    /// process (workers in other processes still poll); on PostgreSQL every node.
    /// Leases that run out are not signalled: wait with a timeout.
    pub fn job_signal(&self) -> tokio::sync::watch::Receiver<u64> {
        if let Backend::Postgres(pool) = &self.backend {
            let jobs = self.jobs.clone();
            self.jobs.listening.call_once(|| {
                pool.listen(JOBS_CHANNEL, move || jobs.bump());
            });
        }
        self.jobs.tx.subscribe()
    }

    /// Announces a claimable job (in the caller's transaction on PostgreSQL, so it
    /// is heard when, and only if, the transaction commits).
    fn announce_job(c: &mut dyn Conn) -> Result<()> {
        if c.dialect() == Dialect::Postgres {
            c.execute("SELECT pg_notify(?1, '')", args![JOBS_CHANNEL])?;
        }
        Ok(())
    }

    /// Applies the migrations the database lacks; returns those applied now
    /// (`(version, name)`).
    pub fn migrate(&self) -> Result<Vec<(i64, &'static str)>> {
        self.tx_serial(|c| migrate::apply(c, wall_clock_ms()))
    }

    /// The database's schema version.
    pub fn schema_version(&self) -> Result<i64> {
        self.with(migrate::version)
    }

    /// Runs `f` on a connection, each statement on its own.
    fn with<T>(&self, f: impl FnOnce(&mut dyn Conn) -> Result<T>) -> Result<T> {
        match &self.backend {
            Backend::Sqlite(conn) => {
                let conn = conn
                    .lock()
                    .map_err(|_| anyhow::anyhow!("the metadata database lock is poisoned"))?;
                f(&mut SqliteConn(&conn))
            }
            Backend::Postgres(pool) => f(&mut pool.get()?),
        }
    }

    /// Runs `f` in one transaction: committed when it returns `Ok`, rolled back on
    /// `Err`.
    fn tx<T>(&self, f: impl FnOnce(&mut dyn Conn) -> Result<T>) -> Result<T> {
        self.transaction(false, f)
    }

    /// Like [`Store::tx`], and no other serialised transaction runs at the same time
    /// (any node): for read-then-write sequences such as appending to the audit chain.
    fn tx_serial<T>(&self, f: impl FnOnce(&mut dyn Conn) -> Result<T>) -> Result<T> {
        self.transaction(true, f)
    }

    fn transaction<T>(
        &self,
        serial: bool,
        f: impl FnOnce(&mut dyn Conn) -> Result<T>,
    ) -> Result<T> {
        match &self.backend {
            Backend::Sqlite(conn) => {
                let mut conn = conn
                    .lock()
                    .map_err(|_| anyhow::anyhow!("the metadata database lock is poisoned"))?;
                // IMMEDIATE: take the write lock now, not at the first write (a
                // deferred transaction that later writes can fail with SQLITE_BUSY).
                let tx =
                    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let v = f(&mut SqliteConn(&tx))?;
                tx.commit()?;
                Ok(v)
            }
            Backend::Postgres(pool) => {
                let mut c = pool.get()?;
                c.batch("BEGIN")?;
                let r = (|| {
                    if serial {
                        c.execute("SELECT pg_advisory_xact_lock(?1)", args![WRITER_LOCK])?;
                    }
                    f(&mut c)
                })();
                match r {
                    Ok(v) => {
                        c.batch("COMMIT")?;
                        Ok(v)
                    }
                    Err(e) => {
                        if c.batch("ROLLBACK").is_err() {
                            c.discard();
                        }
                        Err(e)
                    }
                }
            }
        }
    }

    /// A named secret, created (random, 32 bytes) on first use.
    pub fn secret(&self, name: &str) -> Result<Vec<u8>> {
        let fresh = random_hex(32);
        let value: String = self.with(|c| {
            c.execute(
                "INSERT INTO secrets(name, value) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                args![name, fresh],
            )?;
            c.query_one("SELECT value FROM secrets WHERE name = ?1", args![name])?
                .get(0)
        })?;
        Ok(hex::decode(value)?)
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
        self.tx_serial(|c| {
            let prev = c.query_opt(
                "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1",
                &[],
            )?;
            let (seq, prev_hash) = match prev {
                Some(r) => (r.get::<i64>(0)? + 1, r.get::<String>(1)?),
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
            c.execute(
                "INSERT INTO audit_log(seq, at, actor, action, target, details, prev_hash, hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                args![
                    entry.seq,
                    entry.at,
                    &entry.actor,
                    &entry.action,
                    entry.target.clone(),
                    entry.details.clone(),
                    &entry.prev_hash,
                    &entry.hash
                ],
            )?;
            Ok(entry)
        })
    }

    /// Audit entries with `seq > after`, at most `limit`.
    pub fn audit_entries(&self, after: i64, limit: i64) -> Result<Vec<AuditEntry>> {
        self.with(|c| {
            c.query(
                "SELECT seq, at, actor, action, target, details, prev_hash, hash FROM audit_log
                 WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                args![after, limit],
            )?
            .iter()
            .map(AuditEntry::from_row)
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
