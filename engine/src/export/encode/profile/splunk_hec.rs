//! The Splunk HTTP Event Collector event format
//! (<https://docs.splunk.com/Documentation/Splunk/latest/Data/FormateventsforHTTPEventCollector>):
//! `time` in epoch seconds with a fraction, `host`, `source`, `sourcetype`, the
//! native record as `event`, and the fields a search filters on as flat string
//! `fields` (indexed fields must be strings or arrays of strings).

use super::{FieldMapping, Rule};

const fn f(target: &'static str, source: &'static str, rule: Rule) -> FieldMapping {
    FieldMapping {
        target,
        source,
        rule,
    }
}

/// The Splunk HEC profile's field mapping.
pub const MAPPING: &[FieldMapping] = &[
    f("time", "timestamp", Rule::EpochSeconds),
    f("host", "gateway_id", Rule::Copy),
    f("source", "", Rule::Constant(r#""evidex""#)),
    f("sourcetype", "", Rule::Constant(r#""evidex:decision""#)),
    f("event", "*", Rule::NativeRecord),
    f("fields.decision", "decision", Rule::Text),
    f("fields.severity", "severity", Rule::Text),
    f("fields.policy", "policy", Rule::Text),
    f("fields.consumer_group", "consumer_group", Rule::Text),
    f("fields.gateway_id", "gateway_id", Rule::Text),
];
