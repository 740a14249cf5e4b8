//! The three datasets evidex stores, their columns, and the enums their values come from.
//!
//! Every other module (ingest, lake, export, encoders) is driven by these column lists,
//! so adding a column happens here and nowhere else.

use std::sync::Arc;

use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// What kind of value a column holds; decides its Arrow type, its validation and how
/// encoders print it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    /// A short identifier or enum value (policy names, ids, decisions).
    Str,
    /// Free text written by people or models; the target of redaction.
    Text,
    /// Any JSON value, stored as its compact JSON text and emitted nested.
    Json,
    /// A 64-bit integer.
    Int,
    /// A 64-bit float.
    Float,
    /// A UTC instant with microsecond precision.
    Timestamp,
}

impl ColumnKind {
    /// The Arrow type the lake stores this kind as.
    pub fn arrow_type(self) -> DataType {
        match self {
            ColumnKind::Str | ColumnKind::Text | ColumnKind::Json => DataType::Utf8,
            ColumnKind::Int => DataType::Int64,
            ColumnKind::Float => DataType::Float64,
            ColumnKind::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        }
    }
}

/// One column of a dataset.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    /// Column name, as in the ingest JSON and in every export.
    pub name: &'static str,
    /// Value kind.
    pub kind: ColumnKind,
    /// Whether ingest requires it.
    pub required: bool,
}

const fn req(name: &'static str, kind: ColumnKind) -> Column {
    Column {
        name,
        kind,
        required: true,
    }
}
const fn opt(name: &'static str, kind: ColumnKind) -> Column {
    Column {
        name,
        kind,
        required: false,
    }
}

use ColumnKind::{Float, Int, Json, Str, Text, Timestamp as Ts};

/// Columns of a decision event, in export order.
pub const EVENT_COLUMNS: &[Column] = &[
    req("id", Str),
    req("timestamp", Ts),
    req("decision", Str),
    req("severity", Str),
    req("policy", Str),
    req("gateway_id", Str),
    req("consumer_group", Str),
    opt("reason_code", Str),
    opt("consumer", Str),
    opt("user_id", Str),
    opt("request_id", Str),
    opt("config_version", Int),
    opt("provider", Str),
    opt("model", Str),
    opt("input_tokens", Int),
    opt("output_tokens", Int),
    opt("cost_usd", Float),
    opt("latency_ms", Int),
    opt("input", Text),
    opt("output", Text),
    opt("policies_evaluated", Json),
    opt("metadata", Json),
];

/// Columns of an escalation update, in export order.
pub const ESCALATION_COLUMNS: &[Column] = &[
    req("id", Str),
    req("event_id", Str),
    req("status", Str),
    req("at", Ts),
    req("actor", Str),
    opt("resolution", Str),
    opt("severity", Str),
    opt("note", Text),
];

/// Columns of a configuration version, in export order.
pub const CONFIG_COLUMNS: &[Column] = &[
    req("config_id", Str),
    req("version", Int),
    req("changed_at", Ts),
    req("changed_by", Str),
    req("summary", Text),
    opt("policies", Json),
    opt("diff", Text),
];

/// A stored dataset: one Delta table each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dataset {
    /// Decision events.
    Events,
    /// Escalation updates (one row per status change).
    Escalations,
    /// Policy configuration versions.
    ConfigVersions,
}

impl Dataset {
    /// All datasets, in the order exports list them.
    pub const ALL: [Dataset; 3] = [
        Dataset::Events,
        Dataset::Escalations,
        Dataset::ConfigVersions,
    ];

    /// The table's folder name under the data root and the name SQL sees.
    pub fn table_name(self) -> &'static str {
        match self {
            Dataset::Events => "events",
            Dataset::Escalations => "escalations",
            Dataset::ConfigVersions => "config_versions",
        }
    }

    /// The CLI / API spelling (`config-versions`).
    pub fn cli_name(self) -> &'static str {
        match self {
            Dataset::Events => "events",
            Dataset::Escalations => "escalations",
            Dataset::ConfigVersions => "config-versions",
        }
    }

    /// Parses the CLI / API spelling; accepts the table name too.
    pub fn parse(s: &str) -> Option<Dataset> {
        match s {
            "events" => Some(Dataset::Events),
            "escalations" => Some(Dataset::Escalations),
            "config-versions" | "config_versions" => Some(Dataset::ConfigVersions),
            _ => None,
        }
    }

    /// The dataset's columns in export order.
    pub fn columns(self) -> &'static [Column] {
        match self {
            Dataset::Events => EVENT_COLUMNS,
            Dataset::Escalations => ESCALATION_COLUMNS,
            Dataset::ConfigVersions => CONFIG_COLUMNS,
        }
    }

    /// The column whose UTC date partitions the table and orders exports.
    pub fn time_column(self) -> &'static str {
        match self {
            Dataset::Events => "timestamp",
            Dataset::Escalations => "at",
            Dataset::ConfigVersions => "changed_at",
        }
    }

    /// The columns that identify a record; a re-sent record with the same key is a
    /// retry and is not stored twice. Exports order by time, then these.
    pub fn key_columns(self) -> &'static [&'static str] {
        match self {
            Dataset::Events | Dataset::Escalations => &["id"],
            Dataset::ConfigVersions => &["config_id", "version"],
        }
    }

    /// The column whose value splits a date's rows into separate files (events: one
    /// file per decision). A filter on it then skips whole files, and exports of rare
    /// decisions never touch the text of common ones.
    pub fn cluster_column(self) -> Option<&'static str> {
        match self {
            Dataset::Events => Some("decision"),
            Dataset::Escalations | Dataset::ConfigVersions => None,
        }
    }

    /// The column whose value counts each data file keeps in the Delta log (events:
    /// severity), so previews filtered on it are answered without reading data.
    pub fn counted_column(self) -> Option<&'static str> {
        match self {
            Dataset::Events => Some("severity"),
            Dataset::Escalations | Dataset::ConfigVersions => None,
        }
    }

    /// Index of a column by name.
    pub fn column_index(self, name: &str) -> Option<usize> {
        self.columns().iter().position(|c| c.name == name)
    }

    /// The Arrow schema of the rows as stored in data files (without the `date`
    /// partition column, which lives in the Delta log).
    pub fn file_schema(self) -> SchemaRef {
        let fields: Vec<Field> = self
            .columns()
            .iter()
            .map(|c| Field::new(c.name, c.kind.arrow_type(), !c.required))
            .collect();
        Arc::new(Schema::new(fields))
    }
}

/// Name of the partition column of every table: the UTC date of the time column.
pub const DATE_PARTITION: &str = "date";

/// A gateway's verdict on one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Decision {
    /// Passed unchanged.
    Allow,
    /// Refused.
    Block,
    /// Passed with parts removed.
    Redact,
    /// Held for a human.
    Escalate,
    /// Passed and marked for review.
    Flag,
}

impl Decision {
    /// All decisions in canonical order.
    pub const ALL: [Decision; 5] = [
        Decision::Allow,
        Decision::Block,
        Decision::Redact,
        Decision::Escalate,
        Decision::Flag,
    ];

    /// Canonical spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Block => "block",
            Decision::Redact => "redact",
            Decision::Escalate => "escalate",
            Decision::Flag => "flag",
        }
    }

    /// Parses the canonical or past-tense spelling (`blocked`).
    pub fn parse(s: &str) -> Option<Decision> {
        Some(match s {
            "allow" | "allowed" => Decision::Allow,
            "block" | "blocked" => Decision::Block,
            "redact" | "redacted" => Decision::Redact,
            "escalate" | "escalated" => Decision::Escalate,
            "flag" | "flagged" => Decision::Flag,
            _ => return None,
        })
    }
}

/// How serious a decision is, ordered from least to most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    /// Informational.
    Info,
    /// Low.
    Low,
    /// Medium.
    Medium,
    /// High.
    High,
    /// Critical.
    Critical,
}

impl Severity {
    /// All severities from least to most serious.
    pub const ALL: [Severity; 5] = [
        Severity::Info,
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    /// Canonical spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// Parses the canonical spelling.
    pub fn parse(s: &str) -> Option<Severity> {
        Severity::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// This severity and every one above it.
    pub fn at_or_above(self) -> impl Iterator<Item = Severity> {
        Severity::ALL.into_iter().filter(move |s| *s >= self)
    }
}

/// Status of an escalation after an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EscalationStatus {
    /// Waiting for a reviewer.
    Open,
    /// A reviewer took it.
    Claimed,
    /// Decided.
    Resolved,
    /// Closed without a decision.
    Dismissed,
    /// Timed out.
    Expired,
}

impl EscalationStatus {
    /// Canonical spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            EscalationStatus::Open => "open",
            EscalationStatus::Claimed => "claimed",
            EscalationStatus::Resolved => "resolved",
            EscalationStatus::Dismissed => "dismissed",
            EscalationStatus::Expired => "expired",
        }
    }

    /// Parses the canonical spelling and the accepted aliases.
    pub fn parse(s: &str) -> Option<EscalationStatus> {
        Some(match s {
            "open" | "pending" | "queued" => EscalationStatus::Open,
            "claimed" | "acknowledged" => EscalationStatus::Claimed,
            "resolved" => EscalationStatus::Resolved,
            "dismissed" => EscalationStatus::Dismissed,
            "expired" => EscalationStatus::Expired,
            _ => return None,
        })
    }
}

/// The outcome of a resolved escalation.
pub fn parse_resolution(s: &str) -> Option<&'static str> {
    match s {
        "approved" => Some("approved"),
        "denied" | "rejected" => Some("denied"),
        _ => None,
    }
}
