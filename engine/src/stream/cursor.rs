//! The stream cursor: an opaque, signed position in the events table's commit log.
//!
//! Layout before base64url (RFC 4648 §5, no padding): format byte `1`, the table's
//! identity (16 bytes: its `metaData.id` UUID), the filters' digest (16 bytes), the
//! position (commit version u64, file index u32, row u64, big-endian), then the first
//! 16 bytes of HMAC-SHA256 (RFC 2104) over everything before it. A cursor is only
//! valid for the table and filters it was issued for.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::scope::Filters;

const FORMAT: u8 = 1;
const MAC_LEN: usize = 16;
const BODY_LEN: usize = 1 + 16 + 16 + 8 + 4 + 8;

/// The secret cursors are signed with (32 bytes; the server derives it from its
/// master key, so every node and the CLI issue and accept the same cursors).
#[derive(Clone)]
pub struct CursorKey([u8; 32]);

impl std::fmt::Debug for CursorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CursorKey(..)")
    }
}

impl CursorKey {
    /// A key from 32 secret bytes.
    pub fn new(key: [u8; 32]) -> CursorKey {
        CursorKey(key)
    }

    fn mac(&self, body: &[u8]) -> [u8; MAC_LEN] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("any key length");
        mac.update(b"evidex stream cursor v1\0");
        mac.update(body);
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&full[..MAC_LEN]);
        out
    }
}

/// A position in the log: the next record to return is row `row` of the `file`-th
/// appended file of commit `version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    /// Delta commit version.
    pub version: u64,
    /// Index of the file among the commit's appended files, in log order.
    pub file: u32,
    /// Row within that file (0-based, before filtering).
    pub row: u64,
}

impl Position {
    /// The start of commit `version`.
    pub fn at(version: u64) -> Position {
        Position {
            version,
            file: 0,
            row: 0,
        }
    }
}

/// A decoded cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// 16 bytes naming the table (see [`table_tag`]).
    pub table: [u8; 16],
    /// The filters' digest (see [`filters_digest`]).
    pub filters: [u8; 16],
    /// Where the next page starts.
    pub position: Position,
}

impl Cursor {
    /// The cursor's text form.
    pub fn encode(&self, key: &CursorKey) -> String {
        let mut body = Vec::with_capacity(BODY_LEN + MAC_LEN);
        body.push(FORMAT);
        body.extend_from_slice(&self.table);
        body.extend_from_slice(&self.filters);
        body.extend_from_slice(&self.position.version.to_be_bytes());
        body.extend_from_slice(&self.position.file.to_be_bytes());
        body.extend_from_slice(&self.position.row.to_be_bytes());
        let mac = key.mac(&body);
        body.extend_from_slice(&mac);
        URL_SAFE_NO_PAD.encode(body)
    }

    /// Parses and checks a cursor's text form.
    ///
    /// # Errors
    /// A message starting `cursor:` when the text is not base64url, has the wrong
    /// length or format, or its signature does not match (edited, or issued by an
    /// installation with another master key).
    pub fn decode(text: &str, key: &CursorKey) -> std::result::Result<Cursor, String> {
        let bytes = URL_SAFE_NO_PAD
            .decode(text.trim())
            .map_err(|_| "cursor: not a cursor evidex issued (not base64url)".to_string())?;
        if bytes.len() != BODY_LEN + MAC_LEN || bytes[0] != FORMAT {
            return Err("cursor: not a cursor evidex issued (wrong length or format)".into());
        }
        let (body, mac) = bytes.split_at(BODY_LEN);
        // Constant-time comparison (hmac's verify_truncated_left).
        let mut check = <Hmac<Sha256> as Mac>::new_from_slice(&key.0).expect("any key length");
        check.update(b"evidex stream cursor v1\0");
        check.update(body);
        check.verify_truncated_left(mac).map_err(|_| {
            "cursor: signature does not match (the cursor was changed, or another installation issued it)"
                .to_string()
        })?;
        let mut table = [0u8; 16];
        table.copy_from_slice(&body[1..17]);
        let mut filters = [0u8; 16];
        filters.copy_from_slice(&body[17..33]);
        let u64_at = |i: usize| u64::from_be_bytes(body[i..i + 8].try_into().expect("8 bytes"));
        Ok(Cursor {
            table,
            filters,
            position: Position {
                version: u64_at(33),
                file: u32::from_be_bytes(body[41..45].try_into().expect("4 bytes")),
                row: u64_at(45),
            },
        })
    }
}

/// 16 bytes naming a table: its `metaData.id` UUID, or a hash of whatever id it has.
pub fn table_tag(table_id: &str) -> [u8; 16] {
    match uuid::Uuid::parse_str(table_id) {
        Ok(u) => *u.as_bytes(),
        Err(_) => {
            let mut out = [0u8; 16];
            out.copy_from_slice(&Sha256::digest(table_id.as_bytes())[..16]);
            out
        }
    }
}

/// A digest of the filters a cursor is bound to: the same set of values (in any
/// order, repeated or not) gives the same digest.
pub fn filters_digest(filters: &Filters) -> [u8; 16] {
    let mut h = Sha256::new();
    let mut list = |name: &str, values: Vec<&str>| {
        let mut values = values;
        values.sort_unstable();
        values.dedup();
        h.update(name.as_bytes());
        h.update([0]);
        for v in values {
            h.update((v.len() as u64).to_be_bytes());
            h.update(v.as_bytes());
        }
        h.update([1]);
    };
    fn strings(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }
    list("policy", strings(&filters.policy));
    list(
        "decision",
        filters.decision.iter().map(|d| d.as_str()).collect(),
    );
    list("gateway", strings(&filters.gateway));
    list("consumer_group", strings(&filters.consumer_group));
    list("consumer", strings(&filters.consumer));
    list("provider", strings(&filters.provider));
    list("model", strings(&filters.model));
    list("reason_code", strings(&filters.reason_code));
    list(
        "min_severity",
        filters.min_severity.iter().map(|s| s.as_str()).collect(),
    );
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.finalize()[..16]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let key = CursorKey::new([7; 32]);
        let c = Cursor {
            table: table_tag("5d0b7c1e-8a53-4c39-9d55-0b8f1e3c2a10"),
            filters: filters_digest(&Filters::default()),
            position: Position {
                version: 42,
                file: 3,
                row: 1_000_001,
            },
        };
        let text = c.encode(&key);
        assert_eq!(Cursor::decode(&text, &key).unwrap(), c);
        // Every single-character change is refused.
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        for i in 0..text.len() {
            let orig = text.as_bytes()[i] as char;
            let other = alphabet.chars().find(|c| *c != orig).unwrap();
            let mut t = text.clone();
            t.replace_range(i..i + 1, &other.to_string());
            assert!(Cursor::decode(&t, &key).is_err(), "changed at {i}");
        }
        assert!(Cursor::decode(&text, &CursorKey::new([8; 32])).is_err());
        assert!(Cursor::decode("not a cursor", &key).is_err());
    }

    #[test]
    fn filters_digest_ignores_order() {
        let a = Filters {
            policy: vec!["b".into(), "a".into(), "a".into()],
            ..Filters::default()
        };
        let b = Filters {
            policy: vec!["a".into(), "b".into()],
            ..Filters::default()
        };
        assert_eq!(filters_digest(&a), filters_digest(&b));
        let c = Filters {
            gateway: vec!["a".into(), "b".into()],
            ..Filters::default()
        };
        assert_ne!(filters_digest(&a), filters_digest(&c));
    }
}
