//! Elastic Common Schema 9.4 (<https://www.elastic.co/docs/reference/ecs/ecs-field-reference>):
//! a decision is an `api` event (`event.category`) whose `event.type` and
//! `event.outcome` follow the decision; the policy is the `rule`, the gateway the
//! `observer`, the consumer the `user`, the model call `gen_ai`. Fields ECS has no
//! place for go under the custom namespace `evidex.*` (ECS: "Custom fields").

use super::{FieldMapping, Rule};

/// The ECS version the records declare in `ecs.version`.
pub const ECS_VERSION: &str = "\"9.4.0\"";

const fn f(target: &'static str, source: &'static str, rule: Rule) -> FieldMapping {
    FieldMapping {
        target,
        source,
        rule,
    }
}

/// Decision → `event.type` (ECS allowed values for the `api` category).
const EVENT_TYPE: &[(&str, &str)] = &[
    ("allow", r#"["allowed"]"#),
    ("block", r#"["denied"]"#),
    ("redact", r#"["allowed","change"]"#),
    ("escalate", r#"["info"]"#),
    ("flag", r#"["allowed","info"]"#),
];

/// Decision → `event.outcome`: a blocked request failed; an escalated one is
/// undecided.
const EVENT_OUTCOME: &[(&str, &str)] = &[
    ("allow", r#""success""#),
    ("block", r#""failure""#),
    ("redact", r#""success""#),
    ("escalate", r#""unknown""#),
    ("flag", r#""success""#),
];

/// Severity → `event.severity` (ECS leaves the scale to the source: 1 info … 5
/// critical).
pub(super) const SEVERITY_NUMBER: &[(&str, &str)] = &[
    ("info", "1"),
    ("low", "2"),
    ("medium", "3"),
    ("high", "4"),
    ("critical", "5"),
];

/// The ECS profile's field mapping.
pub const MAPPING: &[FieldMapping] = &[
    f("@timestamp", "timestamp", Rule::Copy),
    f("ecs.version", "", Rule::Constant(ECS_VERSION)),
    f("event.id", "id", Rule::Copy),
    f("event.kind", "", Rule::Constant(r#""event""#)),
    f("event.category", "", Rule::Constant(r#"["api"]"#)),
    f(
        "event.type",
        "decision",
        Rule::Map(EVENT_TYPE, r#"["info"]"#),
    ),
    f(
        "event.outcome",
        "decision",
        Rule::Map(EVENT_OUTCOME, r#""unknown""#),
    ),
    f("event.action", "decision", Rule::Copy),
    f("event.severity", "severity", Rule::Map(SEVERITY_NUMBER, "")),
    f("event.reason", "reason_code", Rule::Copy),
    f("event.duration", "latency_ms", Rule::MillisToNanos),
    f("event.module", "", Rule::Constant(r#""evidex""#)),
    f("event.dataset", "", Rule::Constant(r#""evidex.decision""#)),
    f("rule.name", "policy", Rule::Copy),
    f("rule.version", "config_version", Rule::Text),
    f("observer.name", "gateway_id", Rule::Copy),
    f("observer.type", "", Rule::Constant(r#""gateway""#)),
    f("user.id", "user_id", Rule::Copy),
    f("user.name", "consumer", Rule::Copy),
    f("user.group.name", "consumer_group", Rule::Copy),
    f("http.request.id", "request_id", Rule::Copy),
    f("gen_ai.system", "provider", Rule::Copy),
    f("gen_ai.request.model", "model", Rule::Copy),
    f("gen_ai.usage.input_tokens", "input_tokens", Rule::Copy),
    f("gen_ai.usage.output_tokens", "output_tokens", Rule::Copy),
    f("evidex.severity", "severity", Rule::Copy),
    f("evidex.cost_usd", "cost_usd", Rule::Copy),
    f("evidex.input", "input", Rule::Copy),
    f("evidex.output", "output", Rule::Copy),
    f(
        "evidex.policies_evaluated",
        "policies_evaluated",
        Rule::Copy,
    ),
    f("evidex.metadata", "metadata", Rule::Copy),
];
