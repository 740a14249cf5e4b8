//! Validates one ingest record against its dataset's rules and turns it into a [`Row`].
//!
//! Messages name the field at fault, because the person reading them has to find the
//! line in their own file and fix it.

use chrono::DateTime;
use serde_json::{Map, Value};

use crate::model::{ColumnKind, Dataset, Decision, EscalationStatus, Severity, parse_resolution};
use crate::rows::{Cell, Row};

/// Parses and validates one record's JSON text.
pub fn validate_record(dataset: Dataset, body: &[u8]) -> Result<Row, String> {
    let text = std::str::from_utf8(body)
        .map_err(|e| format!("invalid UTF-8 at byte {}", e.valid_up_to()))?;
    let value: Value = serde_json::from_str(text).map_err(|e| {
        if e.is_eof() {
            format!("truncated JSON: {e}")
        } else {
            format!("invalid JSON: {e}")
        }
    })?;
    let Value::Object(object) = value else {
        return Err(format!("expected a JSON object, got {}", kind_of(&value)));
    };
    validate_object(dataset, object)
}

/// Validates an already parsed JSON object.
pub fn validate_object(dataset: Dataset, mut object: Map<String, Value>) -> Result<Row, String> {
    // Aliases gateways send for canonical field names.
    if dataset == Dataset::Events {
        for (alias, canonical) in [("verdict", "decision"), ("policy_name", "policy")] {
            if !object.contains_key(canonical)
                && let Some(v) = object.remove(alias)
            {
                object.insert(canonical.to_string(), v);
            }
        }
    }
    let mut cells = Vec::with_capacity(dataset.columns().len());
    for col in dataset.columns() {
        let value = object.remove(col.name).unwrap_or(Value::Null);
        if value.is_null() {
            if col.required {
                return Err(format!("missing required field `{}`", col.name));
            }
            cells.push(Cell::Null);
            continue;
        }
        let cell = convert(dataset, col.name, col.kind, value)?;
        if col.required && cell == Cell::Str(String::new()) {
            return Err(format!("field `{}` must not be empty", col.name));
        }
        cells.push(cell);
    }
    // Unknown top-level fields of an event are kept in `metadata`, never dropped.
    if dataset == Dataset::Events && !object.is_empty() {
        let idx = dataset
            .column_index("metadata")
            .expect("events have metadata");
        let mut metadata = match &cells[idx] {
            Cell::Str(s) => match serde_json::from_str::<Value>(s) {
                Ok(Value::Object(m)) => m,
                _ => Map::new(),
            },
            _ => Map::new(),
        };
        let mut clashes = Map::new();
        for (k, v) in object {
            if metadata.contains_key(&k) {
                clashes.insert(k, v);
            } else {
                metadata.insert(k, v);
            }
        }
        if !clashes.is_empty() {
            metadata.insert("_top_level".to_string(), Value::Object(clashes));
        }
        cells[idx] = Cell::Str(Value::Object(metadata).to_string());
    }
    Ok(Row { cells })
}

fn convert(dataset: Dataset, name: &str, kind: ColumnKind, value: Value) -> Result<Cell, String> {
    match kind {
        ColumnKind::Str | ColumnKind::Text => {
            let s = match value {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => {
                    return Err(format!(
                        "field `{name}` must be a string, got {}",
                        kind_of(&other)
                    ));
                }
            };
            Ok(Cell::Str(normalise_enum(dataset, name, s)?))
        }
        ColumnKind::Int => match &value {
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Ok(Cell::Int(i))
                } else if let Some(f) = n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                {
                    Ok(Cell::Int(f as i64))
                } else {
                    Err(format!("field `{name}` must be an integer, got {n}"))
                }
            }
            other => Err(format!(
                "field `{name}` must be an integer, got {}",
                kind_of(other)
            )),
        },
        ColumnKind::Float => match &value {
            Value::Number(n) => Ok(Cell::Float(n.as_f64().unwrap_or(f64::NAN))),
            other => Err(format!(
                "field `{name}` must be a number, got {}",
                kind_of(other)
            )),
        },
        ColumnKind::Timestamp => match &value {
            Value::String(s) => parse_timestamp(s)
                .map(Cell::Ts)
                .ok_or_else(|| format!("field `{name}` must be an RFC 3339 timestamp, got {s:?}")),
            other => Err(format!(
                "field `{name}` must be an RFC 3339 timestamp string, got {}",
                kind_of(other)
            )),
        },
        ColumnKind::Json => {
            check_json_shape(dataset, name, &value)?;
            Ok(Cell::Str(value.to_string()))
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

fn check_json_shape(dataset: Dataset, name: &str, value: &Value) -> Result<(), String> {
    match (dataset, name) {
        (Dataset::Events, "metadata") if !value.is_object() => Err(format!(
            "field `metadata` must be a JSON object, got {}",
            kind_of(value)
        )),
        (Dataset::Events, "policies_evaluated") => {
            let Value::Array(items) = value else {
                return Err(format!(
                    "field `policies_evaluated` must be an array, got {}",
                    kind_of(value)
                ));
            };
            for (i, item) in items.iter().enumerate() {
                if !item.is_object() {
                    return Err(format!(
                        "field `policies_evaluated[{i}]` must be an object with name, result, \
                         latency_ms, entities_found; got {}",
                        kind_of(item)
                    ));
                }
            }
            Ok(())
        }
        (Dataset::ConfigVersions, "policies") => match value {
            Value::Array(items) if items.iter().all(Value::is_string) => Ok(()),
            _ => Err("field `policies` must be an array of policy names".to_string()),
        },
        _ => Ok(()),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
