//! What an export covers: a time window (whole days in a timezone, or an exact
//! `[from, to)`) and the filters, validated once and turned into query predicates.

use chrono::{DateTime, Duration, LocalResult, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use deltalake::datafusion::logical_expr::{Expr, lit};
use deltalake::datafusion::prelude::col;
use deltalake::datafusion::scalar::ScalarValue;

use crate::error::{EngineError, Result};
use crate::model::{Decision, Severity};
use crate::rows::utc_date;

/// Event filters: AND across filters, OR within one. Empty lists mean "any".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    /// Policy names.
    pub policy: Vec<String>,
    /// Decisions.
    pub decision: Vec<Decision>,
    /// Gateway ids.
    pub gateway: Vec<String>,
    /// Consumer groups.
    pub consumer_group: Vec<String>,
    /// Consumers.
    pub consumer: Vec<String>,
    /// Model providers.
    pub provider: Vec<String>,
    /// Models.
    pub model: Vec<String>,
    /// Reason codes.
    pub reason_code: Vec<String>,
    /// Only events at or above this severity.
    pub min_severity: Option<Severity>,
}

impl Filters {
    /// Whether no filter is set.
    pub fn is_empty(&self) -> bool {
        *self == Filters::default()
    }

    /// The predicate over the `events` columns.
    pub fn event_predicate(&self) -> Option<Expr> {
        let mut parts = Vec::new();
        let strings = [
            ("policy", &self.policy),
            ("gateway_id", &self.gateway),
            ("consumer_group", &self.consumer_group),
            ("consumer", &self.consumer),
            ("provider", &self.provider),
            ("model", &self.model),
            ("reason_code", &self.reason_code),
        ];
        for (column, values) in strings {
            if !values.is_empty() {
                parts.push(in_list(column, values.iter().map(String::as_str)));
            }
        }
        if !self.decision.is_empty() {
            parts.push(in_list(
                "decision",
                self.decision.iter().map(|d| d.as_str()),
            ));
        }
        if let Some(min) = self.min_severity {
            parts.push(in_list("severity", min.at_or_above().map(|s| s.as_str())));
        }
        parts.into_iter().reduce(Expr::and)
    }
}

fn in_list<'a>(column: &str, values: impl Iterator<Item = &'a str>) -> Expr {
    let mut values: Vec<&str> = values.collect();
    values.sort_unstable();
    values.dedup();
    if values.len() == 1 {
        col(column).eq(lit(values[0]))
    } else {
        col(column).in_list(values.into_iter().map(lit).collect(), false)
    }
}

/// A half-open UTC window `[start, end)` in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Inclusive start.
    pub start: i64,
    /// Exclusive end.
    pub end: i64,
}

impl Window {
    /// The UTC dates (partitions) the window touches.
    pub fn utc_dates(&self) -> (NaiveDate, NaiveDate) {
        (utc_date(self.start), utc_date(self.end - 1))
    }

    /// Whether the whole UTC day `date` lies inside the window.
    pub fn covers_day(&self, date: NaiveDate) -> bool {
        let start = date
            .and_hms_opt(0, 0, 0)
            .expect("midnight")
            .and_utc()
            .timestamp_micros();
        let end = start + 86_400_000_000;
        start >= self.start && end <= self.end
    }

    /// `time_column` within the window.
    pub fn predicate(&self, time_column: &str) -> Expr {
        let start = lit(ScalarValue::TimestampMicrosecond(
            Some(self.start),
            Some("UTC".into()),
        ));
        let end = lit(ScalarValue::TimestampMicrosecond(
            Some(self.end),
            Some("UTC".into()),
        ));
        col(time_column).gt_eq(start).and(col(time_column).lt(end))
    }

    /// Start as an RFC 3339 UTC string.
    pub fn start_rfc3339(&self) -> String {
        format_micros(self.start)
    }

    /// End as an RFC 3339 UTC string.
    pub fn end_rfc3339(&self) -> String {
        format_micros(self.end)
    }
}

/// Formats UTC microseconds as RFC 3339 with microseconds (`2026-03-01T00:00:00.000000Z`).
pub fn format_micros(micros: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(micros)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
        .unwrap_or_else(|| micros.to_string())
}

/// The validated scope of an export.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportScope {
    /// The UTC window.
    pub window: Window,
    /// The timezone whole days were taken in.
    pub timezone: Tz,
    /// `from` as the user gave it.
    pub from: String,
    /// `to` as the user gave it.
    pub to: String,
    /// Filters.
    pub filters: Filters,
}

impl ExportScope {
    /// Validates `from` / `to` (dates are inclusive whole days in `timezone`; RFC 3339
    /// timestamps are an exact half-open window) and the timezone name.
    pub fn new(from: &str, to: &str, timezone: &str, filters: Filters) -> Result<ExportScope> {
        let tz: Tz = timezone.parse().map_err(|_| {
            EngineError::invalid(format!(
                "timezone: unknown IANA timezone {timezone:?} (e.g. UTC, Europe/Berlin)"
            ))
        })?;
        let start = parse_bound("from", from, tz, false)?;
        let end = parse_bound("to", to, tz, true)?;
        if start >= end {
            return Err(EngineError::invalid(format!(
                "from: {from:?} is not before to {to:?}; the window would be empty"
            )));
        }
        Ok(ExportScope {
            window: Window { start, end },
            timezone: tz,
            from: from.to_string(),
            to: to.to_string(),
            filters,
        })
    }

    /// The predicate selecting this scope's events.
    pub fn event_predicate(&self) -> Expr {
        let window = self.window.predicate("timestamp");
        match self.filters.event_predicate() {
            Some(f) => window.and(f),
            None => window,
        }
    }
}

/// Parses one end of the window. A date is the start of that day in `tz` (for `to`,
/// the start of the next day, so the day is included).
fn parse_bound(field: &str, value: &str, tz: Tz, is_end: bool) -> Result<i64> {
    let value = value.trim();
    if let Ok(date) = NaiveDate::parse_from_str(value, "%Y-%m-%d") {
        let day = if is_end {
            date.succ_opt().ok_or_else(|| {
                EngineError::invalid(format!("{field}: {value:?} is out of range"))
            })?
        } else {
            date
        };
        return Ok(start_of_day(day, tz)?.timestamp_micros());
    }
    match DateTime::parse_from_rfc3339(value) {
        Ok(t) => Ok(t.timestamp_micros()),
        Err(_) => Err(EngineError::invalid(format!(
            "{field}: {value:?} is neither a date (YYYY-MM-DD) nor an RFC 3339 timestamp"
        ))),
    }
}

/// Midnight of `day` in `tz`; where a DST change skips midnight, the first instant
/// of the day that exists.
pub fn start_of_day(day: NaiveDate, tz: Tz) -> Result<DateTime<Utc>> {
    let midnight = day.and_hms_opt(0, 0, 0).expect("midnight exists");
    for minutes in (0..=180).step_by(15) {
        match tz.from_local_datetime(&(midnight + Duration::minutes(minutes))) {
            LocalResult::Single(t) => return Ok(t.with_timezone(&Utc)),
            LocalResult::Ambiguous(a, _) => return Ok(a.with_timezone(&Utc)),
            LocalResult::None => continue,
        }
    }
    Err(EngineError::invalid(format!(
        "{day} has no start of day in {tz}"
    )))
}

/// Parses a decision filter value (canonical or past tense).
pub fn parse_decision(s: &str) -> Result<Decision> {
    Decision::parse(s).ok_or_else(|| {
        EngineError::invalid(format!(
            "decision: unknown decision {s:?}; use allow, block, redact, escalate or flag"
        ))
    })
}

/// Parses a severity filter value.
pub fn parse_severity(s: &str) -> Result<Severity> {
    Severity::parse(s).ok_or_else(|| {
        EngineError::invalid(format!(
            "min_severity: unknown severity {s:?}; use info, low, medium, high or critical"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_micros()
    }

    #[test]
    fn whole_days_in_a_timezone() {
        let s = ExportScope::new(
            "2026-03-01",
            "2026-03-31",
            "America/New_York",
            Filters::default(),
        )
        .unwrap();
        assert_eq!(s.window.start, us("2026-03-01T05:00:00Z"));
        // DST starts on 8 March in New York: the end is midnight EDT (UTC-4).
        assert_eq!(s.window.end, us("2026-04-01T04:00:00Z"));
        assert_eq!(
            s.window.utc_dates(),
            (
                NaiveDate::from_ymd_opt(2026, 3, 1).unwrap(),
                NaiveDate::from_ymd_opt(2026, 4, 1).unwrap()
            )
        );
    }

    #[test]
    fn exact_window() {
        let s = ExportScope::new(
            "2026-03-01T10:00:00+01:00",
            "2026-03-01T12:00:00Z",
            "UTC",
            Filters::default(),
        )
        .unwrap();
        assert_eq!(
            s.window,
            Window {
                start: us("2026-03-01T09:00:00Z"),
                end: us("2026-03-01T12:00:00Z")
            }
        );
    }

    #[test]
    fn errors_name_the_field() {
        let f = Filters::default;
        let err = |a, b, tz| ExportScope::new(a, b, tz, f()).unwrap_err().to_string();
        assert!(err("2026-03-05", "2026-03-01", "UTC").starts_with("from:"));
        assert!(err("2026-13-01", "2026-03-01", "UTC").starts_with("from:"));
        assert!(err("2026-03-01", "soon", "UTC").starts_with("to:"));
        assert!(err("2026-03-01", "2026-03-02", "Mars/Olympus").starts_with("timezone:"));
        // A single day is a valid inclusive range.
        assert!(ExportScope::new("2026-03-01", "2026-03-01", "UTC", f()).is_ok());
    }

    #[test]
    fn covers_day() {
        let s =
            ExportScope::new("2026-03-01", "2026-03-03", "Asia/Tokyo", Filters::default()).unwrap();
        let d = |n| NaiveDate::from_ymd_opt(2026, 3, n).unwrap();
        assert!(s.window.covers_day(d(1)));
        assert!(!s.window.covers_day(d(3)));
        assert!(
            !s.window
                .covers_day(NaiveDate::from_ymd_opt(2026, 2, 28).unwrap())
        );
    }
}
