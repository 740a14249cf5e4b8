//! Field profiles for SIEMs: the same decision events as NDJSON / JSON records laid
//! out for Elastic Common Schema (`ecs`), OCSF API Activity (`ocsf`) or the Splunk
//! HTTP Event Collector (`splunk_hec`), beside evidex's own layout (`native`).
//!
//! Each profile is a table of [`FieldMapping`]s (source column → target field, with
//! a [`Rule`]); the encoder is built from that table and nothing else, and
//! `docs/siem-profiles.md` shows the same table (a test compares them). Every event
//! column appears as a source in every profile: what the target schema has no field
//! for goes to the profile's extension place (`evidex.*` in ECS, `unmapped` in OCSF,
//! the whole native record under `event` in HEC), so nothing is dropped.

mod ecs;
mod ocsf;
mod splunk_hec;

use std::ops::Range;

use deltalake::arrow::datatypes::SchemaRef;

use super::csv::itoa_lite;
use super::json::{JsonEncoder, JsonLayout, push_json_string, push_json_text};
use super::{ColumnData, EncodedBatch, Encoder, push_float, push_timestamp};
use crate::error::{EngineError, Result};
use crate::model::ColumnKind;

/// A record layout for JSON and NDJSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// evidex's own records: every column under its own name.
    #[default]
    Native,
    /// Elastic Common Schema 9.4 (<https://www.elastic.co/docs/reference/ecs>).
    Ecs,
    /// OCSF 1.x API Activity (class_uid 6003) with the Security Control profile
    /// (<https://schema.ocsf.io/classes/api_activity>).
    Ocsf,
    /// The Splunk HTTP Event Collector event envelope
    /// (<https://docs.splunk.com/Documentation/Splunk/latest/Data/FormateventsforHTTPEventCollector>).
    SplunkHec,
}

impl Profile {
    /// Every profile.
    pub const ALL: [Profile; 4] = [
        Profile::Native,
        Profile::Ecs,
        Profile::Ocsf,
        Profile::SplunkHec,
    ];

    /// Parses the API / CLI spelling (`native`, `ecs`, `ocsf`, `splunk_hec`).
    ///
    /// # Errors
    /// `profile: ...` naming the accepted values.
    pub fn parse(s: &str) -> Result<Profile> {
        Ok(match s {
            "native" => Profile::Native,
            "ecs" => Profile::Ecs,
            "ocsf" => Profile::Ocsf,
            "splunk_hec" | "splunk-hec" | "hec" => Profile::SplunkHec,
            other => {
                return Err(EngineError::invalid(format!(
                    "profile: unknown profile {other:?}; use native, ecs, ocsf or splunk_hec"
                )));
            }
        })
    }

    /// The API / CLI spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Native => "native",
            Profile::Ecs => "ecs",
            Profile::Ocsf => "ocsf",
            Profile::SplunkHec => "splunk_hec",
        }
    }

    /// The field mapping of a decision event (empty for `native`, which keeps every
    /// column under its own name).
    pub fn mapping(self) -> &'static [FieldMapping] {
        match self {
            Profile::Native => &[],
            Profile::Ecs => ecs::MAPPING,
            Profile::Ocsf => ocsf::MAPPING,
            Profile::SplunkHec => splunk_hec::MAPPING,
        }
    }
}

/// Where one target field's value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldMapping {
    /// Dotted path of the field in the output record (`event.action`).
    pub target: &'static str,
    /// The event column it is made from; `""` for a constant, `"*"` for the whole
    /// native record.
    pub source: &'static str,
    /// How the value is made.
    pub rule: Rule,
}

/// How a target value is made from its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// The value with its own JSON type (timestamps as RFC 3339 UTC, JSON columns
    /// nested). Absent when the source is null.
    Copy,
    /// The value as a JSON string (numbers in decimal, timestamps RFC 3339, JSON
    /// columns as their text).
    Text,
    /// A timestamp as integer milliseconds since the Unix epoch (UTC).
    EpochMillis,
    /// A timestamp as seconds since the Unix epoch with a six-digit fraction.
    EpochSeconds,
    /// Integer milliseconds as integer nanoseconds.
    MillisToNanos,
    /// The source's string value looked up in a table of JSON literals; the second
    /// field is the literal for any other value (`""`: absent).
    Map(&'static [(&'static str, &'static str)], &'static str),
    /// A constant JSON literal.
    Constant(&'static str),
    /// Like [`Rule::Copy`], with this JSON literal when the source is null (for
    /// attributes a target object requires).
    CopyOr(&'static str),
    /// The whole record in the native profile (redacted like the rest).
    NativeRecord,
}

impl Rule {
    /// The rule in words, as the mapping tables in `docs/siem-profiles.md` write it.
    pub fn describe(&self) -> String {
        match self {
            Rule::Copy => "copy".into(),
            Rule::Text => "as a string".into(),
            Rule::EpochMillis => "epoch milliseconds".into(),
            Rule::EpochSeconds => "epoch seconds, 6-digit fraction".into(),
            Rule::MillisToNanos => "milliseconds × 1,000,000 (nanoseconds)".into(),
            Rule::Map(table, default) => {
                let pairs: Vec<String> =
                    table.iter().map(|(k, v)| format!("{k} → `{v}`")).collect();
                if default.is_empty() {
                    format!("{}; else absent", pairs.join(", "))
                } else {
                    format!("{}; else `{default}`", pairs.join(", "))
                }
            }
            Rule::Constant(l) => format!("constant `{l}`"),
            Rule::CopyOr(l) => format!("copy; `{l}` when absent"),
            Rule::NativeRecord => "the native record (every column)".into(),
        }
    }
}

/// A profile's fields as a tree, resolved against one batch schema.
enum Node {
    Leaf { column: Option<usize>, rule: Rule },
    Object(Vec<(Vec<u8>, Node)>),
}

impl Node {
    fn build(mapping: &[FieldMapping], schema: &SchemaRef) -> Node {
        let mut root = Node::Object(Vec::new());
        for m in mapping {
            let column = if m.source.is_empty() || m.source == "*" {
                None
            } else {
                match schema.index_of(m.source) {
                    Ok(i) => Some(i),
                    // A column the export leaves out (`include_payloads: false`).
                    Err(_) => continue,
                }
            };
            let mut node = &mut root;
            let parts: Vec<&str> = m.target.split('.').collect();
            // `@timestamp` and OCSF's flat names are single segments.
            for (n, part) in parts.iter().enumerate() {
                let mut key = Vec::new();
                push_json_string(&mut key, part);
                key.push(b':');
                let Node::Object(children) = node else {
                    unreachable!("a leaf is never a parent: mappings are checked by a test")
                };
                let last = n + 1 == parts.len();
                let pos = children.iter().position(|(k, _)| *k == key);
                let idx = match pos {
                    Some(i) => i,
                    None => {
                        let child = if last {
                            Node::Leaf {
                                column,
                                rule: m.rule,
                            }
                        } else {
                            Node::Object(Vec::new())
                        };
                        children.push((key, child));
                        children.len() - 1
                    }
                };
                node = &mut children[idx].1;
            }
        }
        root
    }
}

/// Encodes records in a profile, as NDJSON lines or one JSON array.
pub struct ProfileEncoder {
    tree: Node,
    kinds: Vec<ColumnKind>,
    native: JsonEncoder,
    layout: JsonLayout,
    first: bool,
    itoa: itoa_lite::Buffer,
}

impl ProfileEncoder {
    /// An encoder of `profile` records for batches of `schema` (event columns).
    pub fn new(
        profile: Profile,
        schema: SchemaRef,
        kinds: Vec<ColumnKind>,
        layout: JsonLayout,
    ) -> ProfileEncoder {
        ProfileEncoder {
            tree: Node::build(profile.mapping(), &schema),
            native: JsonEncoder::new(schema, kinds.clone(), layout),
            kinds,
            layout,
            first: true,
            itoa: itoa_lite::Buffer::default(),
        }
    }

    /// Writes `node` for `row`; returns whether anything was written (an object
    /// whose fields are all absent is left out).
    fn write(&mut self, node: &Node, cols: &[ColumnData], row: usize, out: &mut Vec<u8>) -> bool {
        match node {
            Node::Object(children) => {
                let mark = out.len();
                out.push(b'{');
                let mut any = false;
                for (key, child) in children {
                    let child_mark = out.len();
                    if any {
                        out.push(b',');
                    }
                    out.extend_from_slice(key);
                    if self.write(child, cols, row, out) {
                        any = true;
                    } else {
                        out.truncate(child_mark);
                    }
                }
                if !any {
                    out.truncate(mark);
                    return false;
                }
                out.push(b'}');
                true
            }
            Node::Leaf { column, rule } => self.leaf(*column, *rule, cols, row, out),
        }
    }

    fn leaf(
        &mut self,
        column: Option<usize>,
        rule: Rule,
        cols: &[ColumnData],
        row: usize,
        out: &mut Vec<u8>,
    ) -> bool {
        match (rule, column) {
            (Rule::Constant(literal), _) => {
                out.extend_from_slice(literal.as_bytes());
                return true;
            }
            (Rule::NativeRecord, _) => {
                self.native.record(cols, row, out);
                return true;
            }
            (Rule::CopyOr(literal), Some(c)) if cols[c].is_null(row) => {
                out.extend_from_slice(literal.as_bytes());
                return true;
            }
            (_, None) => return false,
            (_, Some(c)) if cols[c].is_null(row) => return false,
            _ => {}
        }
        let c = column.expect("checked above");
        let data = &cols[c];
        match rule {
            Rule::Copy | Rule::CopyOr(_) => match data {
                ColumnData::Str(_) if self.kinds[c] == ColumnKind::Json => {
                    push_json_text(out, data.str(row))
                }
                ColumnData::Str(_) => push_json_string(out, data.str(row)),
                ColumnData::Int(_) => out.extend_from_slice(self.itoa.format(data.int(row))),
                ColumnData::Float(_) => return push_float(out, data.float(row)),
                ColumnData::Ts(_) => {
                    out.push(b'"');
                    push_timestamp(out, data.ts(row));
                    out.push(b'"');
                }
            },
            Rule::Text => match data {
                ColumnData::Str(_) => push_json_string(out, data.str(row)),
                ColumnData::Int(_) => {
                    out.push(b'"');
                    out.extend_from_slice(self.itoa.format(data.int(row)));
                    out.push(b'"');
                }
                ColumnData::Float(_) => {
                    out.push(b'"');
                    if !push_float(out, data.float(row)) {
                        return false;
                    }
                    out.push(b'"');
                }
                ColumnData::Ts(_) => {
                    out.push(b'"');
                    push_timestamp(out, data.ts(row));
                    out.push(b'"');
                }
            },
            Rule::EpochMillis => match data {
                ColumnData::Ts(_) => {
                    out.extend_from_slice(self.itoa.format(data.ts(row).div_euclid(1000)))
                }
                _ => return false,
            },
            Rule::EpochSeconds => match data {
                ColumnData::Ts(_) => {
                    let micros = data.ts(row);
                    out.extend_from_slice(self.itoa.format(micros.div_euclid(1_000_000)));
                    let frac = micros.rem_euclid(1_000_000);
                    out.extend_from_slice(format!(".{frac:06}").as_bytes());
                }
                _ => return false,
            },
            Rule::MillisToNanos => match data {
                ColumnData::Int(_) => match data.int(row).checked_mul(1_000_000) {
                    Some(n) => out.extend_from_slice(self.itoa.format(n)),
                    None => return false,
                },
                _ => return false,
            },
            Rule::Map(table, default) => {
                let value = match data {
                    ColumnData::Str(_) => data.str(row),
                    _ => return false,
                };
                let literal = table
                    .iter()
                    .find(|(k, _)| *k == value)
                    .map(|(_, v)| *v)
                    .unwrap_or(default);
                if literal.is_empty() {
                    return false;
                }
                out.extend_from_slice(literal.as_bytes());
            }
            Rule::Constant(_) | Rule::NativeRecord => unreachable!("handled above"),
        }
        true
    }
}

impl Encoder for ProfileEncoder {
    fn begin(&mut self, out: &mut Vec<u8>) -> Result<()> {
        if self.layout == JsonLayout::Array {
            out.push(b'[');
        }
        Ok(())
    }

    fn rows(&mut self, batch: &EncodedBatch, rows: Range<usize>, out: &mut Vec<u8>) -> Result<()> {
        let tree = std::mem::replace(&mut self.tree, Node::Object(Vec::new()));
        for row in rows {
            if self.layout == JsonLayout::Array {
                out.extend_from_slice(if self.first { b"\n" } else { b",\n" });
            }
            self.first = false;
            if !self.write(&tree, &batch.cols, row, out) {
                out.extend_from_slice(b"{}");
            }
            if self.layout == JsonLayout::Lines {
                out.push(b'\n');
            }
        }
        self.tree = tree;
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<()> {
        if self.layout == JsonLayout::Array {
            out.extend_from_slice(if self.first { b"]\n" } else { b"\n]\n" });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Dataset;

    /// Every event column is a source in every profile (nothing dropped), no target
    /// is both a field and an object, and no target repeats.
    #[test]
    fn mappings_cover_every_column() {
        for profile in Profile::ALL {
            let m = profile.mapping();
            if profile == Profile::Native {
                continue;
            }
            let whole = m.iter().any(|f| f.source == "*");
            for c in Dataset::Events.columns() {
                assert!(
                    whole || m.iter().any(|f| f.source == c.name),
                    "{}: column {} has no target",
                    profile.as_str(),
                    c.name
                );
            }
            for a in m {
                assert!(
                    a.source.is_empty()
                        || a.source == "*"
                        || Dataset::Events.column_index(a.source).is_some(),
                    "{}: unknown source {}",
                    profile.as_str(),
                    a.source
                );
                for b in m {
                    if std::ptr::eq(a, b) {
                        continue;
                    }
                    assert_ne!(a.target, b.target, "{}: repeated", profile.as_str());
                    assert!(
                        !b.target.starts_with(&format!("{}.", a.target)),
                        "{}: {} is a field and an object",
                        profile.as_str(),
                        a.target
                    );
                }
                if let Rule::Constant(l) | Rule::Map(_, l) | Rule::CopyOr(l) = a.rule
                    && !l.is_empty()
                {
                    serde_json::from_str::<serde_json::Value>(l).expect("literal is JSON");
                }
                if let Rule::Map(t, _) = a.rule {
                    for (_, l) in t {
                        serde_json::from_str::<serde_json::Value>(l).expect("literal is JSON");
                    }
                }
            }
        }
    }
}
