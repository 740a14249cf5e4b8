//! API tokens and their lifecycle: created (shown once, stored as a SHA-256 hash),
//! optionally expiring, revoked at once on every node (each request reads the
//! database, nothing is cached), and stamped with when they were last used.

use anyhow::{Result, bail};
use serde::Serialize;

use super::db::{Row, args};
use super::{Principal, Role, Store, hash_token, random_hex, rfc3339};

/// How often (ms) a token's last-used time is written: at most once a minute, so
/// a busy token does not turn every request into a write.
const LAST_USED_EVERY_MS: i64 = 60_000;

/// A token as listed (never its secret or hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// `tok_` + 16 hex digits.
    pub id: String,
    /// The name it was given.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Who created it (`cli`, `token:NAME (admin)`); `None` for tokens made before
    /// this was recorded.
    pub created_by: Option<String>,
    /// Milliseconds since the epoch.
    pub created_at: i64,
    /// When it stops working (ms), if it expires.
    pub expires_at: Option<i64>,
    /// When it was revoked (ms).
    pub revoked_at: Option<i64>,
    /// The last request it authenticated (ms, to the minute).
    pub last_used_at: Option<i64>,
}

impl TokenInfo {
    /// `active`, `expired` or `revoked` at `now_ms`.
    pub fn status(&self, now_ms: i64) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if self.expires_at.is_some_and(|e| e <= now_ms) {
            "expired"
        } else {
            "active"
        }
    }

    /// The API representation (times in RFC 3339, UTC).
    pub fn view(&self, now_ms: i64) -> TokenView {
        TokenView {
            id: self.id.clone(),
            name: self.name.clone(),
            role: self.role.as_str(),
            status: self.status(now_ms),
            created_by: self.created_by.clone(),
            created_at: rfc3339(self.created_at),
            expires_at: self.expires_at.map(rfc3339),
            revoked_at: self.revoked_at.map(rfc3339),
            last_used_at: self.last_used_at.map(rfc3339),
            token: None,
        }
    }

    fn from_row(r: &Row) -> Result<TokenInfo> {
        let role: String = r.get(2)?;
        Ok(TokenInfo {
            id: r.get(0)?,
            name: r.get(1)?,
            role: Role::parse(&role).ok_or_else(|| anyhow::anyhow!("unknown role {role:?}"))?,
            created_by: r.get(3)?,
            created_at: r.get(4)?,
            expires_at: r.get(5)?,
            revoked_at: r.get(6)?,
            last_used_at: r.get(7)?,
        })
    }
}

/// A token as the API shows it: never its secret or hash, except `token` once, in
/// the answer that created it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = Token)]
pub struct TokenView {
    /// `tok_` + 16 hex digits.
    pub id: String,
    /// The name it was given.
    pub name: String,
    /// `admin`, `compliance`, `viewer`, `ingest` or `siem`.
    pub role: &'static str,
    /// `active`, `expired` or `revoked`.
    pub status: &'static str,
    /// Who created it (`cli`, `token:NAME (admin)`).
    pub created_by: Option<String>,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// When it stops working, RFC 3339, UTC.
    pub expires_at: Option<String>,
    /// When it was revoked, RFC 3339, UTC.
    pub revoked_at: Option<String>,
    /// The last request it authenticated (to the minute), RFC 3339, UTC.
    pub last_used_at: Option<String>,
    /// The secret (`evx_...`): only in the answer that created it; only its
    /// SHA-256 is stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// Why a presented token is not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenRefusal {
    /// No token has this value.
    Unknown,
    /// It expired at this time (ms).
    Expired(i64),
    /// It was revoked at this time (ms).
    Revoked(i64),
}

impl std::fmt::Display for TokenRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenRefusal::Unknown => f.write_str("the token is not valid"),
            TokenRefusal::Expired(at) => write!(f, "the token expired at {}", rfc3339(*at)),
            TokenRefusal::Revoked(at) => write!(f, "the token was revoked at {}", rfc3339(*at)),
        }
    }
}

const COLUMNS: &str =
    "id, name, role, created_by, created_at, expires_at, revoked_at, last_used_at";

impl Store {
    /// Creates a token that does not expire; returns `(id, token)`. Only the
    /// token's hash is stored.
    pub fn create_token(&self, name: &str, role: Role, now_ms: i64) -> Result<(String, String)> {
        self.issue_token(name, role, now_ms, None, "cli")
    }

    /// Creates a token for `created_by`, expiring at `expires_at` (ms) if given;
    /// returns `(id, token)`. The token is shown only now: its SHA-256 is stored.
    ///
    /// Errors: the name is empty or longer than 100 characters; the expiry is not
    /// in the future.
    pub fn issue_token(
        &self,
        name: &str,
        role: Role,
        now_ms: i64,
        expires_at: Option<i64>,
        created_by: &str,
    ) -> Result<(String, String)> {
        if name.trim().is_empty() || name.len() > 100 {
            bail!("name: a token name is 1 to 100 characters");
        }
        if let Some(at) = expires_at
            && at <= now_ms
        {
            bail!("expires_at: {} is not in the future", rfc3339(at));
        }
        let id = format!("tok_{}", &random_hex(8));
        let token = format!("evx_{}", random_hex(24));
        self.with(|c| {
            c.execute(
                "INSERT INTO tokens(id, name, role, hash, created_at, expires_at, created_by)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                args![
                    &id,
                    name,
                    role.as_str(),
                    hash_token(&token),
                    now_ms,
                    expires_at,
                    created_by
                ],
            )
        })?;
        Ok((id, token))
    }

    /// The principal a bearer token belongs to, if it is known, not revoked and not
    /// expired at `now_ms`; records its use (to the minute).
    pub fn authenticate(&self, token: &str, now_ms: i64) -> Result<Option<Principal>> {
        Ok(self.check_token(token, now_ms)?.ok())
    }

    /// Like [`Store::authenticate`], saying why a token is refused.
    pub fn check_token(
        &self,
        token: &str,
        now_ms: i64,
    ) -> Result<std::result::Result<Principal, TokenRefusal>> {
        let hash = hash_token(token);
        let row = self.with(|c| {
            c.query_opt(
                &format!("SELECT {COLUMNS} FROM tokens WHERE hash = ?1"),
                args![hash],
            )
        })?;
        let Some(info) = row.as_ref().map(TokenInfo::from_row).transpose()? else {
            return Ok(Err(TokenRefusal::Unknown));
        };
        if let Some(at) = info.revoked_at {
            return Ok(Err(TokenRefusal::Revoked(at)));
        }
        if let Some(at) = info.expires_at.filter(|at| *at <= now_ms) {
            return Ok(Err(TokenRefusal::Expired(at)));
        }
        if info
            .last_used_at
            .is_none_or(|t| t + LAST_USED_EVERY_MS <= now_ms)
        {
            self.with(|c| {
                c.execute(
                    "UPDATE tokens SET last_used_at = ?2 WHERE id = ?1",
                    args![&info.id, now_ms],
                )
            })?;
        }
        Ok(Ok(Principal {
            token_id: info.id,
            name: info.name,
            role: info.role,
        }))
    }

    /// Every token, newest first (revoked and expired ones too).
    pub fn tokens(&self) -> Result<Vec<TokenInfo>> {
        self.with(|c| {
            c.query(
                &format!("SELECT {COLUMNS} FROM tokens ORDER BY created_at DESC, id DESC"),
                &[],
            )?
            .iter()
            .map(TokenInfo::from_row)
            .collect()
        })
    }

    /// One token.
    pub fn token(&self, id: &str) -> Result<Option<TokenInfo>> {
        self.with(|c| {
            c.query_opt(
                &format!("SELECT {COLUMNS} FROM tokens WHERE id = ?1"),
                args![id],
            )?
            .as_ref()
            .map(TokenInfo::from_row)
            .transpose()
        })
    }

    /// Revokes a token at `now_ms` and ends its console sessions, in one
    /// transaction; `false` when there is no such token or it was already revoked.
    pub fn revoke_token(&self, id: &str, now_ms: i64) -> Result<bool> {
        self.tx(|c| {
            let n = c.execute(
                "UPDATE tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                args![id, now_ms],
            )?;
            c.execute(
                "DELETE FROM console_sessions WHERE token_id = ?1",
                args![id],
            )?;
            Ok(n == 1)
        })
    }
}
