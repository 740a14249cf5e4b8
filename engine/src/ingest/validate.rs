//! Validates one ingest record against its dataset's rules and turns it into a [`Row`].
//!
//! Messages name the field at fault, because the person reading them has to find the
//! line in their own file and fix it.
//!
//! Values are kept exactly as the sender wrote them (SPEC, "Data in"): the record is
//! split into its top-level fields as raw JSON text (`serde_json::value::RawValue`)
//! instead of being parsed into `serde_json::Value`, whose `f64` numbers lose digits.
//! A numeric `id` (or any string field sent as a number) keeps its digits as written,
//! floats are parsed by Rust's correctly rounded `f64::from_str` (so they round-trip to
//! the same double), and `metadata`, `policies_evaluated` and unknown fields keep the
//! sender's JSON text, only with insignificant whitespace removed.

use std::borrow::Cow;
use std::fmt;

use chrono::DateTime;
use serde::Deserialize;
use serde::de::{MapAccess, Visitor};
use serde_json::value::RawValue;

use super::json_text::{compact_json, json_string, replace_lone_surrogates};
use crate::model::{ColumnKind, Dataset, Decision, EscalationStatus, Severity, parse_resolution};
use crate::rows::{Cell, Row};

/// A validated record and what validation had to repair in it.
#[derive(Debug, Clone, PartialEq)]
pub struct Validated {
    /// The record's cells.
    pub row: Row,
    /// Lone UTF-16 surrogate escapes (`\ud83d` without its pair, as JavaScript string
    /// truncation produces) replaced by U+FFFD; reported so the repair is not silent.
    pub replaced_surrogates: u32,
}

/// Parses and validates one record's JSON text.
pub fn validate_record(dataset: Dataset, body: &[u8]) -> Result<Row, String> {
    validate(dataset, body).map(|v| v.row)
}

/// Parses and validates one record's JSON text, returning the repairs made.
///
/// Errors name the field at fault; a JSON syntax error inside a field's value names
/// that field too (`field `input`: invalid escape ...`).
pub fn validate(dataset: Dataset, body: &[u8]) -> Result<Validated, String> {
    let text = std::str::from_utf8(body)
        .map_err(|e| format!("invalid UTF-8 at byte {}", e.valid_up_to()))?;
    let (text, replaced_surrogates) = replace_lone_surrogates(text);
    let first = text.trim_start().as_bytes().first().copied();
    if first.is_some() && first != Some(b'{') {
        // Not an object: say what it is, if it is valid JSON at all.
        return Err(match serde_json::from_str::<&RawValue>(&text) {
            Ok(raw) => format!("expected a JSON object, got {}", raw_kind(raw.get())),
            Err(e) => json_error(&text, &e),
        });
    }
    let fields: RawObject = serde_json::from_str(&text).map_err(|e| json_error(&text, &e))?;
    let row = validate_fields(dataset, fields.0)?;
    Ok(Validated {
        row,
        replaced_surrogates,
    })
}

/// Describes a serde_json error, naming the top-level field whose value it is in.
fn json_error(text: &str, e: &serde_json::Error) -> String {
    let what = if e.is_eof() {
        "truncated JSON"
    } else {
        "invalid JSON"
    };
    match field_at(text, e.line(), e.column()) {
        Some(field) => format!("field `{field}`: {what}: {e}"),
        None => format!("{what}: {e}"),
    }
}

/// The top-level key whose value holds the 1-based `line`/`column` position, if any.
fn field_at(text: &str, line: usize, column: usize) -> Option<String> {
    let mut offset = 0;
    for (n, l) in text.split_inclusive('\n').enumerate() {
        if n + 1 == line {
            offset += column.saturating_sub(1).min(l.len());
            break;
        }
        offset += l.len();
    }
    let bytes = text.as_bytes();
    let (mut depth, mut i, mut key) = (0usize, 0usize, None);
    let mut expect_key = false;
    while i < bytes.len() && i < offset {
        match bytes[i] {
            b'{' | b'[' => {
                depth += 1;
                expect_key = bytes[i] == b'{' && depth == 1;
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b',' if depth == 1 => expect_key = true,
            b'"' => {
                let start = i + 1;
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                if depth == 1 && expect_key {
                    let end = i.min(bytes.len());
                    key = Some(text.get(start..end).unwrap_or("").to_string());
                    expect_key = false;
                }
            }
            _ => {}
        }
        i += 1;
    }
    key
}

/// A JSON object's top-level fields in the sender's order, each as raw JSON text.
struct RawObject<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for RawObject<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = RawObject<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<RawObject<'a>, M::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(16));
                while let Some((k, v)) = map.next_entry::<Cow<'de, str>, &'de RawValue>()? {
                    fields.push((k, v));
                }
                Ok(RawObject(fields))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// Turns a record's top-level fields into a row of `dataset`: each known field is
/// converted by its column's kind, required ones must be there and not empty, and an
/// event's unknown fields are kept in `metadata`.
fn validate_fields<'a>(
    dataset: Dataset,
    mut fields: Vec<(Cow<'a, str>, &'a RawValue)>,
) -> Result<Row, String> {
    // Aliases gateways send for canonical field names.
    if dataset == Dataset::Events {
        for (alias, canonical) in [("verdict", "decision"), ("policy_name", "policy")] {
            if !fields.iter().any(|(k, _)| k == canonical)
                && let Some(pos) = fields.iter().rposition(|(k, _)| k == alias)
            {
                fields[pos].0 = Cow::Borrowed(canonical);
            }
        }
    }
    // Each field to its column in one pass (the last occurrence of a key wins, as in
    // every JSON parser that keeps one value per key); the rest are unknown fields.
    // Gateways send fields in a fixed order, so the column after the last match is
    // tried first.
    let columns = dataset.columns();
    let mut values: Vec<Option<&RawValue>> = vec![None; columns.len()];
    let mut next = 0;
    fields.retain(|(k, v)| {
        let found = if columns.get(next).is_some_and(|c| c.name == k.as_ref()) {
            Some(next)
        } else {
            columns.iter().position(|c| c.name == k.as_ref())
        };
        match found {
            Some(i) => {
                values[i] = Some(*v);
                next = i + 1;
                false
            }
            None => true,
        }
    });
    let mut cells = Vec::with_capacity(columns.len());
    for (col, raw) in columns.iter().zip(values) {
        let raw = raw.map(RawValue::get);
        let Some(raw) = raw.filter(|r| *r != "null") else {
            if col.required {
                return Err(format!("missing required field `{}`", col.name));
            }
            cells.push(Cell::Null);
            continue;
        };
        let cell = convert(dataset, col.name, col.kind, raw)?;
        if col.required && cell == Cell::Str(String::new()) {
            return Err(format!("field `{}` must not be empty", col.name));
        }
        cells.push(cell);
    }
    // Unknown top-level fields of an event are kept in `metadata`, never dropped.
    if dataset == Dataset::Events && !fields.is_empty() {
        let idx = dataset
            .column_index("metadata")
            .expect("events have metadata");
        let existing = match &cells[idx] {
            Cell::Str(s) => s.clone(),
            _ => "{}".to_string(),
        };
        let metadata: RawObject =
            serde_json::from_str(&existing).map_err(|e| format!("field `metadata`: {e}"))?;
        let mut out = String::with_capacity(existing.len() + 64);
        out.push('{');
        let mut first = true;
        let mut push = |out: &mut String, k: &str, v: &str| {
            if !std::mem::take(&mut first) {
                out.push(',');
            }
            out.push_str(&serde_json::to_string(k).expect("strings serialize"));
            out.push(':');
            out.push_str(v);
        };
        for (k, v) in &metadata.0 {
            push(&mut out, k, v.get());
        }
        // A set, not a scan per field: a record may hold tens of thousands of keys.
        let metadata_keys: std::collections::HashSet<&str> =
            metadata.0.iter().map(|(k, _)| k.as_ref()).collect();
        // An unknown key sent twice keeps its last value, as known fields do.
        let mut last: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for (i, (k, _)) in fields.iter().enumerate() {
            last.insert(k.as_ref(), i);
        }
        let mut clashes = String::new();
        for (i, (k, v)) in fields.iter().enumerate() {
            if last.get(k.as_ref()) != Some(&i) {
                continue;
            }
            let v = compact_json(v.get());
            if metadata_keys.contains(k.as_ref()) {
                clashes.push(if clashes.is_empty() { '{' } else { ',' });
                clashes.push_str(&serde_json::to_string(k.as_ref()).expect("strings serialize"));
                clashes.push(':');
                clashes.push_str(&v);
            } else {
                push(&mut out, k, &v);
            }
        }
        if !clashes.is_empty() {
            clashes.push('}');
            push(&mut out, "_top_level", &clashes);
        }
        out.push('}');
        cells[idx] = Cell::Str(out);
    }
    Ok(Row { cells })
}

/// Whether raw JSON text is a number (RFC 8259 §6: starts with `-` or a digit).
fn is_number(raw: &str) -> bool {
    raw.as_bytes()
        .first()
        .is_some_and(|b| *b == b'-' || b.is_ascii_digit())
}

fn convert(dataset: Dataset, name: &str, kind: ColumnKind, raw: &str) -> Result<Cell, String> {
    match kind {
        ColumnKind::Str | ColumnKind::Text => {
            let s = if raw.starts_with('"') {
                json_string(raw).map_err(|e| format!("field `{name}`: {e}"))?
            } else if is_number(raw) {
                // Digit for digit as the sender wrote it: `98000000000000000000001`
                // must not become `9.8e22`.
                raw.to_string()
            } else if raw == "true" || raw == "false" {
                raw.to_string()
            } else {
                return Err(format!(
                    "field `{name}` must be a string, got {}",
                    raw_kind(raw)
                ));
            };
            Ok(Cell::Str(normalise_enum(dataset, name, s)?))
        }
        ColumnKind::Int => {
            if !is_number(raw) {
                return Err(format!(
                    "field `{name}` must be an integer, got {}",
                    raw_kind(raw)
                ));
            }
            if let Ok(i) = raw.parse::<i64>() {
                return Ok(Cell::Int(i));
            }
            // `5.0` or `1e3` are integers written as floats; accept them while the
            // value is exact in a double.
            match raw.parse::<f64>() {
                Ok(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(Cell::Int(f as i64)),
                _ => Err(format!(
                    "field `{name}` must be an integer between -2^63 and 2^63-1, got {raw}"
                )),
            }
        }
        ColumnKind::Float => {
            if !is_number(raw) {
                return Err(format!(
                    "field `{name}` must be a number, got {}",
                    raw_kind(raw)
                ));
            }
            // Rust's parser rounds correctly (IEEE 754 round-to-nearest), so the
            // shortest text written back on export is the sender's number.
            match raw.parse::<f64>() {
                Ok(f) if f.is_finite() => Ok(Cell::Float(f)),
                _ => Err(format!(
                    "field `{name}` is out of the range of a 64-bit float: {raw}"
                )),
            }
        }
        ColumnKind::Timestamp => {
            if !raw.starts_with('"') {
                return Err(format!(
                    "field `{name}` must be an RFC 3339 timestamp string, got {}",
                    raw_kind(raw)
                ));
            }
            let s = json_string(raw).map_err(|e| format!("field `{name}`: {e}"))?;
            parse_timestamp(&s)
                .map(Cell::Ts)
                .ok_or_else(|| format!("field `{name}` must be an RFC 3339 timestamp, got {s:?}"))
        }
        ColumnKind::Json => {
            check_json_shape(dataset, name, raw)?;
            Ok(Cell::Str(compact_json(raw).into_owned()))
        }
    }
}

/// Parses RFC 3339 with any offset into UTC microseconds (sub-microsecond digits are
/// truncated).
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let dt = DateTime::parse_from_rfc3339(s).ok()?;
    Some(dt.timestamp_micros())
}

fn normalise_enum(dataset: Dataset, name: &str, s: String) -> Result<String, String> {
    let canonical: Option<&'static str> = match (dataset, name) {
        (Dataset::Events, "decision") => Some(
            Decision::parse(&s)
                .ok_or_else(|| {
                    format!(
                        "field `decision` must be one of allow, block, redact, escalate, flag \
                         (or allowed, blocked, redacted, escalated, flagged), got {s:?}"
                    )
                })?
                .as_str(),
        ),
        (Dataset::Events | Dataset::Escalations, "severity") => Some(
            Severity::parse(&s)
                .ok_or_else(|| {
                    format!(
                        "field `severity` must be one of info, low, medium, high, critical, got {s:?}"
                    )
                })?
                .as_str(),
        ),
        (Dataset::Escalations, "status") => Some(
            EscalationStatus::parse(&s)
                .ok_or_else(|| {
                    format!(
                        "field `status` must be one of open, claimed, resolved, dismissed, expired \
                         (or pending, queued, acknowledged), got {s:?}"
                    )
                })?
                .as_str(),
        ),
        (Dataset::Escalations, "resolution") => Some(parse_resolution(&s).ok_or_else(|| {
            format!("field `resolution` must be approved or denied (or rejected), got {s:?}")
        })?),
        _ => None,
    };
    Ok(canonical.map(str::to_string).unwrap_or(s))
}

fn check_json_shape(dataset: Dataset, name: &str, raw: &str) -> Result<(), String> {
    match (dataset, name) {
        (Dataset::Events, "metadata") if !raw.starts_with('{') => Err(format!(
            "field `metadata` must be a JSON object, got {}",
            raw_kind(raw)
        )),
        (Dataset::Events, "policies_evaluated") => {
            let Ok(items) = serde_json::from_str::<Vec<&RawValue>>(raw) else {
                return Err(format!(
                    "field `policies_evaluated` must be an array, got {}",
                    raw_kind(raw)
                ));
            };
            for (i, item) in items.iter().enumerate() {
                if !item.get().starts_with('{') {
                    return Err(format!(
                        "field `policies_evaluated[{i}]` must be an object with name, result, \
                         latency_ms, entities_found; got {}",
                        raw_kind(item.get())
                    ));
                }
            }
            Ok(())
        }
        (Dataset::ConfigVersions, "policies") => {
            match serde_json::from_str::<Vec<&RawValue>>(raw) {
                Ok(items) if items.iter().all(|v| v.get().starts_with('"')) => Ok(()),
                _ => Err("field `policies` must be an array of policy names".to_string()),
            }
        }
        _ => Ok(()),
    }
}

/// What kind of JSON value raw JSON text holds, for messages.
fn raw_kind(raw: &str) -> &'static str {
    match raw.as_bytes().first() {
        Some(b'n') => "null",
        Some(b't' | b'f') => "a boolean",
        Some(b'"') => "a string",
        Some(b'[') => "an array",
        Some(b'{') => "an object",
        _ => "a number",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn event(extra: &str) -> String {
        format!(
            r#"{{"id":"e1","timestamp":"2026-03-01T01:30:00+02:00","decision":"blocked",
            "severity":"high","policy":"pii","gateway_id":"gw","consumer_group":"cg"{extra}}}"#
        )
    }

    #[test]
    fn normalises_aliases_and_offsets() {
        let row = validate_record(Dataset::Events, event("").as_bytes()).unwrap();
        assert_eq!(row.cells[2], Cell::Str("block".into()));
        // 01:30 at +02:00 is 23:30 UTC on the previous day.
        assert_eq!(
            row.cells[1],
            Cell::Ts(parse_timestamp("2026-02-28T23:30:00Z").unwrap())
        );
    }

    #[test]
    fn strings_decode_the_same_with_and_without_escapes() {
        // The fast path (no backslash) and serde_json's decoding must agree.
        for raw in [
            r#""plain""#,
            r#""""#,
            r#""é ü 😀""#,
            r#""a\"b""#,
            r#""tab\tnew\nline""#,
            r#""\u00e9\ud83d\ude00""#,
            r#""back\\slash""#,
        ] {
            assert_eq!(
                json_string(raw).unwrap(),
                serde_json::from_str::<String>(raw).unwrap(),
                "{raw}"
            );
        }
        let row = validate_record(
            Dataset::Events,
            event(r#","user_id":"a\"b\u00e9""#).as_bytes(),
        )
        .unwrap();
        let idx = Dataset::Events.column_index("user_id").unwrap();
        assert_eq!(row.cells[idx], Cell::Str("a\"b\u{e9}".into()));
    }

    #[test]
    fn verdict_and_policy_name_are_accepted() {
        let body = r#"{"id":"e1","timestamp":"2026-03-01T00:00:00Z","verdict":"allow",
            "severity":"info","policy_name":"p","gateway_id":"g","consumer_group":"c"}"#;
        let row = validate_record(Dataset::Events, body.as_bytes()).unwrap();
        assert_eq!(row.cells[2], Cell::Str("allow".into()));
        assert_eq!(row.cells[4], Cell::Str("p".into()));
    }

    #[test]
    fn unknown_fields_go_to_metadata() {
        let row = validate_record(
            Dataset::Events,
            event(r#","metadata":{"a":1,"team":"x"},"team":"y","region":"eu""#).as_bytes(),
        )
        .unwrap();
        let Cell::Str(m) = &row.cells[21] else {
            panic!()
        };
        let m: Value = serde_json::from_str(m).unwrap();
        assert_eq!(m["region"], "eu");
        assert_eq!(m["team"], "x");
        assert_eq!(m["_top_level"]["team"], "y");
        let row = validate_record(
            Dataset::Events,
            event(r#","region":"eu","region":"us""#).as_bytes(),
        )
        .unwrap();
        assert_eq!(row.cells[21], Cell::Str(r#"{"region":"us"}"#.into()));
    }

    #[test]
    fn a_known_field_sent_twice_keeps_its_last_value_in_any_order() {
        // Fields out of the column order, and `severity` twice: the last one wins and
        // neither copy lands in `metadata`.
        let body = r#"{"consumer_group":"c","severity":"low","id":"e1","gateway_id":"g",
            "timestamp":"2026-03-01T00:00:00Z","policy":"p","decision":"allow",
            "severity":"high"}"#;
        let row = validate_record(Dataset::Events, body.as_bytes()).unwrap();
        let at = |name| Dataset::Events.column_index(name).unwrap();
        assert_eq!(row.cells[at("severity")], Cell::Str("high".into()));
        assert_eq!(row.cells[at("consumer_group")], Cell::Str("c".into()));
        assert_eq!(row.cells[at("id")], Cell::Str("e1".into()));
        assert_eq!(row.cells[at("metadata")], Cell::Null);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (r#"{"id":"e1"}"#, "missing required field `timestamp`"),
            (
                &event(r#","latency_ms":"fast""#),
                "field `latency_ms` must be an integer",
            ),
            (
                &event(r#","metadata":[1]"#),
                "field `metadata` must be a JSON object",
            ),
            (
                &event(r#","policies_evaluated":{}"#),
                "field `policies_evaluated` must be an array",
            ),
            (
                &event("").replace("blocked", "permit"),
                "field `decision` must be one of",
            ),
            (
                &event("").replace("high", "severe"),
                "field `severity` must be one of",
            ),
            (
                &event("").replace("2026-03-01T01:30:00+02:00", "yesterday"),
                "field `timestamp` must be an RFC 3339",
            ),
            (
                &event("").replace("\"e1\"", "\"\""),
                "field `id` must not be empty",
            ),
            ("[1,2]", "expected a JSON object, got an array"),
            ("{\"id\":", "truncated JSON"),
        ];
        for (body, want) in cases {
            let err = validate_record(Dataset::Events, body.as_bytes()).unwrap_err();
            assert!(err.contains(want), "{body}: {err}");
        }
    }

    #[test]
    fn invalid_utf8_is_reported_with_its_offset() {
        let err = validate_record(Dataset::Events, b"{\"id\":\"\xff\"}").unwrap_err();
        assert_eq!(err, "invalid UTF-8 at byte 7");
    }

    #[test]
    fn escalation_aliases() {
        let body = r#"{"id":"x1","event_id":"e1","status":"acknowledged","at":"2026-03-01T00:00:00Z",
            "actor":"ana","resolution":"rejected"}"#;
        let row = validate_record(Dataset::Escalations, body.as_bytes()).unwrap();
        assert_eq!(row.cells[2], Cell::Str("claimed".into()));
        assert_eq!(row.cells[5], Cell::Str("denied".into()));
    }

    #[test]
    fn numbers_keep_their_digits() {
        let a = validate_record(
            Dataset::Events,
            event("")
                .replace("\"e1\"", "98000000000000000000001")
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(a.cells[0], Cell::Str("98000000000000000000001".into()));
        for (text, want) in [
            ("1.5777777777770001", 1.5777777777770001f64),
            ("0.9215686321258545", 0.9215686321258545),
            ("5e-324", 5e-324),
            ("-0.1", -0.1),
            ("1e21", 1e21),
        ] {
            let row = validate_record(
                Dataset::Events,
                event(&format!(",\"cost_usd\":{text}")).as_bytes(),
            )
            .unwrap();
            let Cell::Float(f) = row.cells[16] else {
                panic!("{:?}", row.cells[16])
            };
            assert_eq!(f.to_bits(), want.to_bits(), "{text}");
            assert_eq!(
                f.to_string().parse::<f64>().unwrap().to_bits(),
                want.to_bits()
            );
        }
        let row = validate_record(
            Dataset::Events,
            event(r#","metadata":{ "n": 1.5777777777770001, "big": 98000000000000000000001, "e": 1E+2 },"x":[ 1.10 ]"#)
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(
            row.cells[21],
            Cell::Str(
                r#"{"n":1.5777777777770001,"big":98000000000000000000001,"e":1E+2,"x":[1.10]}"#
                    .into()
            )
        );
        let e =
            validate_record(Dataset::Events, event(r#","cost_usd":1e400"#).as_bytes()).unwrap_err();
        assert!(e.contains("field `cost_usd`"), "{e}");
        let e = validate_record(
            Dataset::Events,
            event(r#","latency_ms":98000000000000000000001"#).as_bytes(),
        )
        .unwrap_err();
        assert!(e.contains("field `latency_ms`"), "{e}");
    }

    #[test]
    fn lone_surrogates_become_replacement_characters() {
        let v = validate(
            Dataset::Events,
            event(r#","input":"nice work \ud83d","output":"ok \ud83d\ude00 \\ud83d \udc00x""#)
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(v.replaced_surrogates, 2);
        assert_eq!(v.row.cells[18], Cell::Str("nice work \u{FFFD}".into()));
        assert_eq!(v.row.cells[19], Cell::Str("ok 😀 \\ud83d \u{FFFD}x".into()));
        let v = validate(
            Dataset::Events,
            event(r#","metadata":{"k":"\uDBFF"}"#).as_bytes(),
        )
        .unwrap();
        assert_eq!(v.replaced_surrogates, 1);
    }

    #[test]
    fn syntax_errors_name_the_field() {
        let e = validate_record(
            Dataset::Events,
            event(r#","input":"bad \q escape""#).as_bytes(),
        )
        .unwrap_err();
        assert!(e.starts_with("field `input`: invalid JSON"), "{e}");
        let e = validate_record(
            Dataset::Events,
            event(r#","metadata":{"a": [1, 2,, 3]}"#).as_bytes(),
        )
        .unwrap_err();
        assert!(e.starts_with("field `metadata`: invalid JSON"), "{e}");
    }
}
