//! Console sessions: a signed-in browser holds a random session id in an HttpOnly,
//! SameSite=Strict session cookie; the database keeps only its SHA-256, the token it
//! stands for (by id: the token itself is never kept) and the CSRF token of its forms.
//! Sessions end at sign-out, when the token is gone, or after 12 hours idle.

use anyhow::Result;

use super::db::args;
use super::{Principal, Role, Store, hash_token, random_hex};

/// Idle time after which a session ends.
pub const SESSION_IDLE_MS: i64 = 12 * 3_600_000;

impl Store {
    /// Starts a session for `token_id`: `(session id for the cookie, CSRF token)`.
    pub fn create_session(&self, token_id: &str, now_ms: i64) -> Result<(String, String)> {
        let id = random_hex(32);
        let csrf = random_hex(16);
        self.with(|c| {
            c.execute(
                "DELETE FROM console_sessions WHERE last_seen_at < ?1",
                args![now_ms - SESSION_IDLE_MS],
            )?;
            c.execute(
                "INSERT INTO console_sessions(id_hash, token_id, csrf, created_at, last_seen_at)
                 VALUES (?1, ?2, ?3, ?4, ?4)",
                args![hash_token(&id), token_id, &csrf, now_ms],
            )
        })?;
        Ok((id, csrf))
    }

    /// The principal and CSRF token of a live session (refreshing its idle time).
    pub fn session(&self, id: &str, now_ms: i64) -> Result<Option<(Principal, String)>> {
        let hash = hash_token(id);
        let row = self.with(|c| {
            c.query_opt(
                "SELECT t.id, t.name, t.role, s.csrf FROM console_sessions s
                   JOIN tokens t ON t.id = s.token_id
                  WHERE s.id_hash = ?1 AND s.last_seen_at >= ?2
                    AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > ?3)",
                args![&hash, now_ms - SESSION_IDLE_MS, now_ms],
            )
        })?;
        let Some(row) = row else {
            return Ok(None);
        };
        let Some(role) = Role::parse(&row.get::<String>(2)?) else {
            return Ok(None);
        };
        self.with(|c| {
            c.execute(
                "UPDATE console_sessions SET last_seen_at = ?2 WHERE id_hash = ?1",
                args![&hash, now_ms],
            )
        })?;
        Ok(Some((
            Principal {
                token_id: row.get(0)?,
                name: row.get(1)?,
                role,
            },
            row.get(3)?,
        )))
    }

    /// Ends a session.
    pub fn delete_session(&self, id: &str) -> Result<()> {
        self.with(|c| {
            c.execute(
                "DELETE FROM console_sessions WHERE id_hash = ?1",
                args![hash_token(id)],
            )
        })?;
        Ok(())
    }
}

impl Store {
    /// The principal of a token, by the token's id, if it is neither revoked nor
    /// expired at `now_ms`.
    pub fn principal(&self, token_id: &str, now_ms: i64) -> Result<Option<Principal>> {
        let row = self.with(|c| {
            c.query_opt(
                "SELECT name, role FROM tokens WHERE id = ?1
                   AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?2)",
                args![token_id, now_ms],
            )
        })?;
        let Some(row) = row else {
            return Ok(None);
        };
        Ok(Role::parse(&row.get::<String>(1)?).map(|role| Principal {
            token_id: token_id.to_string(),
            name: row.get(0).unwrap_or_default(),
            role,
        }))
    }
}
