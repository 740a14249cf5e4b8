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

/// An export job as the API shows it (`GET /v1/exports/{id}`, and in lists).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = Export)]
pub struct JobView {
    /// `exp_` + ULID.
    pub id: String,
    /// Display name (the artifact's file name after sanitising).
    pub name: String,
    /// Free text.
    pub description: String,
    /// First day (`YYYY-MM-DD`, in `timezone`) or instant (RFC 3339).
    pub from: Option<String>,
    /// Last day (inclusive) or instant (exclusive).
    pub to: Option<String>,
    /// IANA time zone of the window's days.
    pub timezone: Option<String>,
    /// `csv`, `json`, `ndjson`, `parquet` or `pdf`.
    pub format: Option<String>,
    /// The filters as requested (`policy`, `decision`, `min_severity`, ...).
    #[schema(value_type = Object)]
    pub filters: Value,
    /// Datasets exported besides events (`escalations`, `config_versions`).
    pub include: Vec<String>,
    /// The preset it runs, if any.
    pub preset: Option<String>,
    /// The SQL definition it runs, if any.
    pub sql: Option<String>,
    /// Whether `input` / `output` are exported.
    pub include_payloads: Option<bool>,
    /// `queued`, `processing`, `completed`, `failed`, `cancelled` or `expired`.
    pub status: String,
    /// Attempts started so far (a crashed or released attempt counts).
    pub attempts: i64,
    /// Rows written against rows counted.
    pub progress: Progress,
    /// Who created it: `token:NAME (ROLE)` or `schedule:ID`.
    pub created_by: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// RFC 3339, UTC: when the latest attempt started.
    pub started_at: Option<String>,
    /// RFC 3339, UTC.
    pub finished_at: Option<String>,
    /// The last attempt's error.
    pub error: Option<String>,
    /// Once completed: `{file_name, bytes, sha256, content_type, expires_at,
    /// manifest_sha256, attempt}`.
    #[schema(value_type = Option<Object>)]
    pub artifact: Option<Value>,
    /// The schedule that queued it.
    pub schedule_id: Option<String>,
    /// The schedule's period it covers (`2026-Q1`).
    pub period: Option<String>,
    /// When delivered to the bucket: `{status: pending|delivered|failed, key,
    /// attempts, last_error}`.
    #[schema(value_type = Option<Object>)]
    pub delivery: Option<Value>,
}

/// How far a job is.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Progress {
    /// Event rows written so far.
    pub rows_written: i64,
    /// Rows the preview counted.
    pub rows_total: Option<i64>,
    /// 0 to 100, one decimal; 100 only once completed.
    pub percent: f64,
}

impl Job {
    /// The API representation.
    pub fn view(&self) -> JobView {
        let total = self.rows_total.unwrap_or(0);
        let percent = match self.status.as_str() {
            "completed" => 100.0,
            _ if total > 0 => ((self.rows_written as f64 / total as f64) * 100.0).min(99.9),
            _ => 0.0,
        };
        let p = &self.params;
        let text = |k: &str| p[k].as_str().map(str::to_string);
        JobView {
            id: self.id.clone(),
            name: self.name.clone(),
            description: self.description.clone(),
            from: text("from"),
            to: text("to"),
            timezone: text("timezone"),
            format: text("format"),
            filters: match &p["filters"] {
                f @ Value::Object(_) => f.clone(),
                _ => Value::Object(serde_json::Map::new()),
            },
            include: p["include"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            preset: text("preset"),
            sql: text("sql"),
            include_payloads: p["include_payloads"].as_bool(),
            status: self.status.clone(),
            attempts: self.attempts,
            progress: Progress {
                rows_written: self.rows_written,
                rows_total: self.rows_total,
                percent: (percent * 10.0).round() / 10.0,
            },
            created_by: self.created_by.clone(),
            created_at: self.created_at.clone(),
            started_at: self.started_at.clone(),
            finished_at: self.finished_at.clone(),
            error: self.error.clone(),
            artifact: self.artifact.clone(),
            schedule_id: self.schedule_id.clone(),
            period: self.period.clone(),
            delivery: self.delivery.clone(),
        }
    }

    /// The API representation as JSON (webhook payloads, the console).
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self.view()).expect("a job view serializes")
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
mod jobs;
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
pub use tokens::{TokenInfo, TokenRefusal, TokenView};
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
const WRITER_LOCK: i64 = 0x6576_6964_6578;

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
        Store::connect_postgres_with(url, None)
    }

    /// [`Store::connect_postgres`], trusting the PEM certificates of `ca_file` for
    /// the server's TLS certificate besides the system's roots.
    ///
    /// Errors: those of [`Store::connect_postgres`]; `ca_file` unreadable or
    /// without a certificate; the server's certificate not trusted (TLS is verified
    /// whenever it is used).
    pub fn connect_postgres_with(url: &str, ca_file: Option<&std::path::Path>) -> Result<Store> {
        let pool = pg::Pool::connect(url, ca_file)?;
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
            Some(url) => Store::connect_postgres_with(&url.0, config.database_ca_file.as_deref()),
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
}
