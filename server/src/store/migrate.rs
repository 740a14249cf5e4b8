//! Versioned schema migrations, applied in order at start (or by `evidex migrate`
//! alone) and recorded in `schema_migrations`. One text per migration serves both
//! databases: every integer column is `BIGINT` (an integer in SQLite, 64-bit in
//! PostgreSQL) and the statements are those both accept.
//!
//! Migration 1 is the schema evidex has always created with `IF NOT EXISTS`, so a
//! SQLite database made by an earlier version is recorded as version 1 unchanged.

use anyhow::{Result, bail};

use super::db::{Conn, args};

/// `(version, name, statements)`, in order. Never edit one that has shipped: add
/// the next.
pub const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "initial schema", INITIAL),
    (2, "token lifecycle", TOKEN_LIFECYCLE),
];

/// Tokens get an optional expiry, a revocation time, the time they were last used
/// and who made them.
const TOKEN_LIFECYCLE: &str = "
ALTER TABLE tokens ADD COLUMN expires_at BIGINT;
ALTER TABLE tokens ADD COLUMN revoked_at BIGINT;
ALTER TABLE tokens ADD COLUMN last_used_at BIGINT;
ALTER TABLE tokens ADD COLUMN created_by TEXT;
";

/// The newest schema version this build knows.
pub fn latest() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

const TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version BIGINT PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at BIGINT NOT NULL
)";

/// Applies the migrations `c` lacks, in one transaction the caller holds (with the
/// store's writer lock, so two nodes starting together do not both migrate).
/// Returns the migrations applied now.
///
/// Errors: the database was migrated by a newer evidex (its version is above
/// [`latest`]): this build would misread it, so it refuses and says so.
pub fn apply(c: &mut dyn Conn, now_ms: i64) -> Result<Vec<(i64, &'static str)>> {
    c.batch(TABLE)?;
    let current: i64 = c
        .query_one(
            "SELECT CAST(coalesce(max(version), 0) AS BIGINT) FROM schema_migrations",
            &[],
        )?
        .get(0)?;
    if current > latest() {
        bail!(
            "the metadata database has schema version {current}, newer than this evidex \
             knows ({}): run the evidex version that migrated it, or a newer one",
            latest()
        );
    }
    let mut applied = Vec::new();
    for &(version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        c.batch(sql)?;
        c.execute(
            "INSERT INTO schema_migrations(version, name, applied_at) VALUES (?1, ?2, ?3)",
            args![version, name, now_ms],
        )?;
        applied.push((version, name));
    }
    Ok(applied)
}

/// The version of the schema in `c` (0 before any migration).
pub fn version(c: &mut dyn Conn) -> Result<i64> {
    c.batch(TABLE)?;
    c.query_one(
        "SELECT CAST(coalesce(max(version), 0) AS BIGINT) FROM schema_migrations",
        &[],
    )?
    .get(0)
}

const INITIAL: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    params TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_until BIGINT,
    rows_written BIGINT NOT NULL DEFAULT 0,
    rows_total BIGINT,
    error TEXT,
    created_by TEXT NOT NULL,
    created_token TEXT,
    idempotency_key TEXT,
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT,
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
    created_at BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_log (
    seq BIGINT PRIMARY KEY,
    at BIGINT NOT NULL,
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
CREATE TABLE IF NOT EXISTS presets (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL,
    format TEXT NOT NULL,
    sql TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_by TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS webhooks (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    events TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    secret_sealed TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    deleted_at BIGINT
);
CREATE TABLE IF NOT EXISTS webhook_messages (
    id TEXT PRIMARY KEY,
    webhook_id TEXT NOT NULL,
    event TEXT NOT NULL,
    export_id TEXT,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_at BIGINT NOT NULL,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    finished_at BIGINT,
    UNIQUE (webhook_id, event, export_id)
);
CREATE INDEX IF NOT EXISTS webhook_messages_due ON webhook_messages(status, next_at);
CREATE TABLE IF NOT EXISTS webhook_attempts (
    message_id TEXT NOT NULL,
    n BIGINT NOT NULL,
    at BIGINT NOT NULL,
    status_code BIGINT,
    latency_ms BIGINT NOT NULL,
    error TEXT,
    PRIMARY KEY (message_id, n)
);
CREATE TABLE IF NOT EXISTS deliveries (
    job_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    key TEXT,
    attempts BIGINT NOT NULL DEFAULT 0,
    last_error TEXT,
    next_at BIGINT NOT NULL,
    first_attempt_at BIGINT,
    lease_owner TEXT,
    lease_until BIGINT,
    created_at BIGINT NOT NULL,
    finished_at BIGINT
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(status, next_at);
CREATE TABLE IF NOT EXISTS schedules (
    id TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    run_after BIGINT NOT NULL,
    deleted_at BIGINT
);
CREATE TABLE IF NOT EXISTS schedule_runs (
    schedule_id TEXT NOT NULL,
    period TEXT NOT NULL,
    period_start BIGINT NOT NULL,
    period_end BIGINT NOT NULL,
    job_id TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (schedule_id, period)
);
CREATE TABLE IF NOT EXISTS console_sessions (
    id_hash TEXT PRIMARY KEY,
    token_id TEXT NOT NULL,
    csrf TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL
);
";
