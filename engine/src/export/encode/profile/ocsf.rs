//! OCSF API Activity (class_uid 6003, category Application Activity) with the
//! Security Control and AI Operation profiles (<https://schema.ocsf.io/classes/api_activity>,
//! schema 1.9.0-dev): the gateway's verdict on one model API call. The decision
//! gives `action_id`, `disposition_id` and `status_id`; the policy is the `policy`
//! object; the consumer is the `actor`; the model call is `ai_model` and
//! `message_context`. What OCSF has no attribute for goes to `unmapped.evidex`
//! (OCSF's place for source data without a mapping), among it the event time with
//! microseconds (`time` is milliseconds).

use super::{FieldMapping, Rule};

const fn f(target: &'static str, source: &'static str, rule: Rule) -> FieldMapping {
    FieldMapping {
        target,
        source,
        rule,
    }
}

/// Decision → `action_id` / `action` (security_control profile).
const ACTION_ID: &[(&str, &str)] = &[
    ("allow", "1"),
    ("block", "2"),
    ("redact", "4"),
    ("escalate", "99"),
    ("flag", "3"),
];
const ACTION: &[(&str, &str)] = &[
    ("allow", r#""Allowed""#),
    ("block", r#""Denied""#),
    ("redact", r#""Modified""#),
    ("escalate", r#""Escalated""#),
    ("flag", r#""Observed""#),
];

/// Decision → `disposition_id` / `disposition`.
const DISPOSITION_ID: &[(&str, &str)] = &[
    ("allow", "1"),
    ("block", "2"),
    ("redact", "99"),
    ("escalate", "14"),
    ("flag", "15"),
];
const DISPOSITION: &[(&str, &str)] = &[
    ("allow", r#""Allowed""#),
    ("block", r#""Blocked""#),
    ("redact", r#""Redacted""#),
    ("escalate", r#""Delayed""#),
    ("flag", r#""Detected""#),
];

/// Decision → `status_id` / `status`: a blocked call failed; an escalated one is
/// not decided yet.
const STATUS_ID: &[(&str, &str)] = &[
    ("allow", "1"),
    ("block", "2"),
    ("redact", "1"),
    ("escalate", "0"),
    ("flag", "1"),
];
const STATUS: &[(&str, &str)] = &[
    ("allow", r#""Success""#),
    ("block", r#""Failure""#),
    ("redact", r#""Success""#),
    ("escalate", r#""Unknown""#),
    ("flag", r#""Success""#),
];

/// Decision → `is_alert`.
const IS_ALERT: &[(&str, &str)] = &[
    ("allow", "false"),
    ("block", "true"),
    ("redact", "false"),
    ("escalate", "true"),
    ("flag", "true"),
];

/// Severity → `severity_id` / `severity`.
const SEVERITY_ID: &[(&str, &str)] = &[
    ("info", "1"),
    ("low", "2"),
    ("medium", "3"),
    ("high", "4"),
    ("critical", "5"),
];
const SEVERITY: &[(&str, &str)] = &[
    ("info", r#""Informational""#),
    ("low", r#""Low""#),
    ("medium", r#""Medium""#),
    ("high", r#""High""#),
    ("critical", r#""Critical""#),
];

/// The OCSF profile's field mapping.
pub const MAPPING: &[FieldMapping] = &[
    f("class_uid", "", Rule::Constant("6003")),
    f("class_name", "", Rule::Constant(r#""API Activity""#)),
    f("category_uid", "", Rule::Constant("6")),
    f(
        "category_name",
        "",
        Rule::Constant(r#""Application Activity""#),
    ),
    f("activity_id", "", Rule::Constant("99")),
    f("activity_name", "", Rule::Constant(r#""Invoke""#)),
    f("type_uid", "", Rule::Constant("600399")),
    f("type_name", "", Rule::Constant(r#""API Activity: Other""#)),
    f("time", "timestamp", Rule::EpochMillis),
    f("severity_id", "severity", Rule::Map(SEVERITY_ID, "0")),
    f("severity", "severity", Rule::Map(SEVERITY, r#""Unknown""#)),
    f("action_id", "decision", Rule::Map(ACTION_ID, "0")),
    f("action", "decision", Rule::Map(ACTION, r#""Unknown""#)),
    f("disposition_id", "decision", Rule::Map(DISPOSITION_ID, "0")),
    f(
        "disposition",
        "decision",
        Rule::Map(DISPOSITION, r#""Unknown""#),
    ),
    f("status_id", "decision", Rule::Map(STATUS_ID, "0")),
    f("status", "decision", Rule::Map(STATUS, r#""Unknown""#)),
    f("is_alert", "decision", Rule::Map(IS_ALERT, "false")),
    f("status_code", "reason_code", Rule::Copy),
    f("metadata.uid", "id", Rule::Copy),
    f("metadata.version", "", Rule::Constant(r#""1.9.0-dev""#)),
    f(
        "metadata.profiles",
        "",
        Rule::Constant(r#"["security_control","ai_operation"]"#),
    ),
    f("metadata.product.name", "", Rule::Constant(r#""evidex""#)),
    f(
        "metadata.product.vendor_name",
        "",
        Rule::Constant(r#""evidex""#),
    ),
    f("metadata.correlation_uid", "request_id", Rule::Copy),
    f("metadata.reporter.uid", "gateway_id", Rule::Copy),
    f("metadata.tenant_uid", "consumer_group", Rule::Copy),
    f("actor.user.uid", "user_id", Rule::Copy),
    f("actor.app_name", "consumer", Rule::Copy),
    f("actor.app_uid", "consumer_group", Rule::Copy),
    f("src_endpoint.svc_name", "consumer_group", Rule::Copy),
    f("api.operation", "", Rule::Constant(r#""model.invoke""#)),
    f("api.request.uid", "request_id", Rule::Copy),
    f("api.service.name", "provider", Rule::Copy),
    f("policy.name", "policy", Rule::Copy),
    f("policy.version", "config_version", Rule::Text),
    f("policy.is_applied", "", Rule::Constant("true")),
    f("policy.data", "policies_evaluated", Rule::Copy),
    f("ai_model.name", "model", Rule::CopyOr(r#""unknown""#)),
    f(
        "ai_model.ai_provider",
        "provider",
        Rule::CopyOr(r#""unknown""#),
    ),
    f(
        "message_context.service.name",
        "provider",
        Rule::CopyOr(r#""unknown""#),
    ),
    f("message_context.prompt_tokens", "input_tokens", Rule::Copy),
    f(
        "message_context.completion_tokens",
        "output_tokens",
        Rule::Copy,
    ),
    f("message_context.prompt_text", "input", Rule::Copy),
    f("message_context.response_text", "output", Rule::Copy),
    f("unmapped.evidex.timestamp", "timestamp", Rule::Copy),
    f("unmapped.evidex.decision", "decision", Rule::Copy),
    f("unmapped.evidex.severity", "severity", Rule::Copy),
    f("unmapped.evidex.cost_usd", "cost_usd", Rule::Copy),
    f("unmapped.evidex.latency_ms", "latency_ms", Rule::Copy),
    f("unmapped.evidex.metadata", "metadata", Rule::Copy),
];
