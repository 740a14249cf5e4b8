//! The thin layer between the store's operations and its two databases: values,
//! rows, and a [`Conn`] that runs a statement on SQLite (rusqlite) or PostgreSQL
//! (tokio-postgres, see `pg.rs`).
//!
//! Every store operation is written once, in the SQL both databases accept:
//! `?N` placeholders (rewritten to `$N` for PostgreSQL), `ON CONFLICT` upserts,
//! `CASE` instead of two-argument `max`, `CAST(... AS BIGINT)` around aggregates.
//! The few places where the dialects must differ ask [`Dialect`]. One code path
//! for both is what lets one contract suite (`tests/store_contract.rs`) hold them
//! to the same behaviour.

use std::sync::Arc;

use anyhow::{Result, anyhow};

/// Which database a connection talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// The embedded default: one SQLite file in the state directory.
    Sqlite,
    /// The scale-out store: a PostgreSQL server shared by every node.
    Postgres,
}

impl Dialect {
    /// The row-locking clause of a claim: PostgreSQL skips rows another
    /// transaction is claiming (`FOR UPDATE SKIP LOCKED`, PostgreSQL manual, "The
    /// Locking Clause"); SQLite has one writer at a time and needs none.
    pub fn skip_locked(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
        }
    }

    /// The clause that locks the rows a read-then-write transaction selects
    /// (`FOR UPDATE` on PostgreSQL; SQLite's write lock already covers them).
    pub fn for_update(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE",
        }
    }

    /// The text of top-level `key` of the JSON text in column `column`.
    pub fn json_text(self, column: &str, key: &str) -> String {
        match self {
            Dialect::Sqlite => format!("json_extract({column}, '$.{key}')"),
            Dialect::Postgres => format!("(({column})::jsonb ->> '{key}')"),
        }
    }
}

/// A statement parameter or a column value.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    /// SQL NULL.
    Null,
    /// A 64-bit integer (every integer column is BIGINT).
    Int(i64),
    /// Text.
    Text(String),
    /// A boolean (stored as 0/1 by SQLite).
    Bool(bool),
}

impl From<i64> for Val {
    fn from(v: i64) -> Val {
        Val::Int(v)
    }
}
impl From<bool> for Val {
    fn from(v: bool) -> Val {
        Val::Bool(v)
    }
}
impl From<&str> for Val {
    fn from(v: &str) -> Val {
        Val::Text(v.to_string())
    }
}
impl From<String> for Val {
    fn from(v: String) -> Val {
        Val::Text(v)
    }
}
impl From<&String> for Val {
    fn from(v: &String) -> Val {
        Val::Text(v.clone())
    }
}
impl<T: Into<Val>> From<Option<T>> for Val {
    fn from(v: Option<T>) -> Val {
        v.map_or(Val::Null, Into::into)
    }
}

/// The parameters of a statement: `args![id, now_ms, Some("x")]`.
macro_rules! args {
    ($($e:expr),* $(,)?) => { &[$($crate::store::db::Val::from($e)),*][..] };
}
pub(crate) use args;

/// A value read back from a column.
pub trait FromVal: Sized {
    /// Converts, or says what was found instead.
    fn from_val(v: &Val) -> std::result::Result<Self, String>;
}

impl FromVal for i64 {
    fn from_val(v: &Val) -> std::result::Result<Self, String> {
        match v {
            Val::Int(i) => Ok(*i),
            Val::Bool(b) => Ok(i64::from(*b)),
            other => Err(format!("expected an integer, found {other:?}")),
        }
    }
}
impl FromVal for bool {
    fn from_val(v: &Val) -> std::result::Result<Self, String> {
        match v {
            Val::Bool(b) => Ok(*b),
            Val::Int(i) => Ok(*i != 0),
            other => Err(format!("expected a boolean, found {other:?}")),
        }
    }
}
impl FromVal for String {
    fn from_val(v: &Val) -> std::result::Result<Self, String> {
        match v {
            Val::Text(s) => Ok(s.clone()),
            other => Err(format!("expected text, found {other:?}")),
        }
    }
}
impl<T: FromVal> FromVal for Option<T> {
    fn from_val(v: &Val) -> std::result::Result<Self, String> {
        match v {
            Val::Null => Ok(None),
            v => T::from_val(v).map(Some),
        }
    }
}

/// One result row: column names (lower case) and values.
#[derive(Debug, Clone)]
pub struct Row {
    pub(crate) columns: Arc<[String]>,
    pub(crate) values: Vec<Val>,
}

impl Row {
    /// Column `i` (from 0).
    pub fn get<T: FromVal>(&self, i: usize) -> Result<T> {
        let v = self
            .values
            .get(i)
            .ok_or_else(|| anyhow!("the metadata query returned no column {i}"))?;
        T::from_val(v).map_err(|e| anyhow!("metadata column {}: {e}", self.name(i)))
    }

    /// The column named `name`.
    pub fn named<T: FromVal>(&self, name: &str) -> Result<T> {
        let i = self
            .columns
            .iter()
            .position(|c| c == name)
            .ok_or_else(|| anyhow!("the metadata query returned no column {name}"))?;
        self.get(i)
    }

    fn name(&self, i: usize) -> &str {
        self.columns.get(i).map_or("?", String::as_str)
    }
}

/// A connection (or an open transaction) of either database.
pub trait Conn {
    /// Which database this is.
    fn dialect(&self) -> Dialect;
    /// Runs a statement; returns the rows it changed.
    fn execute(&mut self, sql: &str, args: &[Val]) -> Result<u64>;
    /// Runs a query; returns every row (metadata results are small and bounded by
    /// the caller's `LIMIT`).
    fn query(&mut self, sql: &str, args: &[Val]) -> Result<Vec<Row>>;
    /// Runs several `;`-separated statements without parameters (migrations).
    fn batch(&mut self, sql: &str) -> Result<()>;
}

impl dyn Conn + '_ {
    /// The first row, if any.
    pub fn query_opt(&mut self, sql: &str, args: &[Val]) -> Result<Option<Row>> {
        Ok(self.query(sql, args)?.into_iter().next())
    }

    /// The first row; an error when there is none.
    pub fn query_one(&mut self, sql: &str, args: &[Val]) -> Result<Row> {
        self.query_opt(sql, args)?
            .ok_or_else(|| anyhow!("the metadata query returned no row"))
    }
}

/// Whether `e` is a unique-constraint violation (a name or key already taken).
pub fn is_unique_violation(e: &anyhow::Error) -> bool {
    if let Some(e) = e.downcast_ref::<rusqlite::Error>() {
        return e.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation);
    }
    if let Some(e) = e.downcast_ref::<tokio_postgres::Error>() {
        return e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION);
    }
    false
}

// ---- SQLite ----

impl rusqlite::ToSql for Val {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, Value, ValueRef};
        Ok(match self {
            Val::Null => ToSqlOutput::Owned(Value::Null),
            Val::Int(i) => ToSqlOutput::Owned(Value::Integer(*i)),
            Val::Bool(b) => ToSqlOutput::Owned(Value::Integer(i64::from(*b))),
            Val::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        })
    }
}

/// A SQLite connection or transaction (a `rusqlite::Transaction` derefs to one).
pub struct SqliteConn<'a>(pub &'a rusqlite::Connection);

impl Conn for SqliteConn<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn execute(&mut self, sql: &str, args: &[Val]) -> Result<u64> {
        let mut st = self.0.prepare_cached(sql)?;
        Ok(st.execute(rusqlite::params_from_iter(args.iter()))? as u64)
    }

    fn query(&mut self, sql: &str, args: &[Val]) -> Result<Vec<Row>> {
        use rusqlite::types::ValueRef;
        let mut st = self.0.prepare_cached(sql)?;
        let columns: Arc<[String]> = st
            .column_names()
            .iter()
            .map(|c| c.to_ascii_lowercase())
            .collect();
        let n = columns.len();
        let mut rows = st.query(rusqlite::params_from_iter(args.iter()))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let mut values = Vec::with_capacity(n);
            for i in 0..n {
                values.push(match r.get_ref(i)? {
                    ValueRef::Null => Val::Null,
                    ValueRef::Integer(v) => Val::Int(v),
                    ValueRef::Text(t) => Val::Text(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Real(v) => Val::Text(v.to_string()),
                    ValueRef::Blob(_) => {
                        return Err(anyhow!("metadata column {} holds a blob", columns[i]));
                    }
                });
            }
            out.push(Row {
                columns: columns.clone(),
                values,
            });
        }
        Ok(out)
    }

    fn batch(&mut self, sql: &str) -> Result<()> {
        Ok(self.0.execute_batch(sql)?)
    }
}

/// Rewrites `?N` placeholders to PostgreSQL's `$N`, leaving quoted text alone.
pub fn postgres_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quoted = false;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                quoted = !quoted;
                out.push(c);
            }
            '?' if !quoted && chars.peek().is_some_and(char::is_ascii_digit) => out.push('$'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_dollar_numbers_outside_quotes() {
        assert_eq!(
            postgres_placeholders("SELECT '?1', x FROM t WHERE a = ?1 AND b = ?12 OR c = ?"),
            "SELECT '?1', x FROM t WHERE a = $1 AND b = $12 OR c = ?"
        );
    }

    #[test]
    fn values_convert_both_ways() {
        assert_eq!(i64::from_val(&Val::Bool(true)), Ok(1));
        assert_eq!(bool::from_val(&Val::Int(0)), Ok(false));
        assert_eq!(Option::<String>::from_val(&Val::Null), Ok(None));
        assert!(String::from_val(&Val::Int(1)).is_err());
        assert_eq!(Val::from(None::<&str>), Val::Null);
        assert_eq!(Val::from(Some(3i64)), Val::Int(3));
    }
}
