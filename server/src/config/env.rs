//! `EVIDEX_*` environment variables as configuration: which variables are keys (and
//! the closest valid name for a misspelt one), how their text becomes TOML values,
//! and where a parse error points.

use anyhow::{Result, bail};
use evidex_engine::redact::RedactionRules;
use serde::Deserialize;

use super::{
    Config, DeliveryConfig, ExportConfig, IngestConfig, NetworkConfig, ReportConfig,
    SchedulerConfig, SecretsConfig, ServerConfig,
};

pub(super) fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<()> {
    let (last, parents) = path.split_last().expect("non-empty path");
    let mut t = table;
    for p in parents {
        let entry = t
            .entry(p.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        t = match entry {
            toml::Value::Table(t) => t,
            _ => bail!("{p} is not a section"),
        };
    }
    t.insert(last.clone(), value);
    Ok(())
}

pub(super) fn parse_env_value(s: &str) -> toml::Value {
    if let Ok(i) = s.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    // Lists and tables in TOML syntax: EVIDEX_REDACTION__DETECTORS='["email"]'.
    if s.trim_start().starts_with('[')
        && let Ok(t) = format!("v = {s}").parse::<toml::Table>()
        && let Some(v) = t.get("v")
    {
        return v.clone();
    }
    match s {
        "true" => toml::Value::Boolean(true),
        "false" => toml::Value::Boolean(false),
        _ => toml::Value::String(s.to_string()),
    }
}

/// ` (at section.key)` for the line of `text` holding byte `offset`.
pub(super) fn key_at(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    let key = line.split('=').next().unwrap_or("").trim();
    let section = before[..line_start].lines().rev().find_map(|l| {
        l.trim()
            .strip_prefix('[')
            .and_then(|l| l.strip_suffix(']'))
            .map(str::to_string)
    });
    match (section, key.is_empty() || key.starts_with('[')) {
        (_, true) => String::new(),
        (Some(s), false) => format!(" (at {s}.{key})"),
        (None, false) => format!(" (at {key})"),
    }
}

/// `EVIDEX_*` variables evidex reads that are not configuration keys.
pub(super) const NOT_CONFIG_VARS: &[&str] = &["EVIDEX_LOG"];

/// What an `EVIDEX_*` variable is.
pub(super) enum EnvKey {
    /// A configuration key: its path (`["server", "listen"]`).
    Config(Vec<String>),
    /// Not a configuration key (a platform's variable, or a tool's).
    NotConfig,
}

/// Sorts an `EVIDEX_*` variable: `EVIDEX_KEY` for a top-level key (`EVIDEX_DATA`),
/// `EVIDEX_SECTION__KEY` for a key of a section. A variable that names a known
/// section, or comes within two edits of a known name, is meant as configuration:
/// an unknown key in it is an error naming the closest valid one. Anything else
/// (Kubernetes sets `EVIDEX_PORT`, `EVIDEX_SERVICE_HOST`, `EVIDEX_PORT_8080_TCP_ADDR`
/// for a Service named `evidex`) is not configuration.
pub(super) fn env_key_path(key: &str) -> Result<EnvKey> {
    let rest = key
        .strip_prefix("EVIDEX_")
        .unwrap_or(key)
        .to_ascii_lowercase();
    let sections = config_sections();
    let top: Vec<&str> = fields_of::<Config>()
        .iter()
        .copied()
        .filter(|f| !sections.iter().any(|(s, _)| s == f))
        .collect();
    let Some((section, field)) = rest.split_once("__") else {
        if top.contains(&rest.as_str()) {
            return Ok(EnvKey::Config(vec![rest]));
        }
        if let Some(close) = closest(&rest, &top) {
            bail!(
                "environment variable {key}: no configuration key {rest:?}; did you mean EVIDEX_{}?",
                close.to_ascii_uppercase()
            );
        }
        return Ok(EnvKey::NotConfig);
    };
    let Some((_, fields)) = sections.iter().find(|(s, _)| *s == section) else {
        let names: Vec<&str> = sections.iter().map(|(s, _)| *s).collect();
        if let Some(close) = closest(section, &names) {
            bail!(
                "environment variable {key}: no configuration section {section:?}; did you mean EVIDEX_{}__{}?",
                close.to_ascii_uppercase(),
                field.to_ascii_uppercase()
            );
        }
        return Ok(EnvKey::NotConfig);
    };
    let mut path = vec![section.to_string()];
    path.extend(field.split("__").map(str::to_string));
    if path.iter().any(String::is_empty) {
        bail!("environment variable {key}: use EVIDEX_SECTION__KEY with double underscores");
    }
    // Tables inside a section (`redaction.custom`) are checked when parsed.
    if !fields.contains(&path[1].as_str()) {
        let hint = match closest(&path[1], fields) {
            Some(c) => format!(
                "did you mean EVIDEX_{}__{}?",
                section.to_ascii_uppercase(),
                c.to_ascii_uppercase()
            ),
            None => format!("the keys of [{section}] are {}", fields.join(", ")),
        };
        bail!(
            "environment variable {key}: [{section}] has no key {:?}; {hint}",
            path[1]
        );
    }
    Ok(EnvKey::Config(path))
}

/// The configuration's sections and their keys.
fn config_sections() -> Vec<(&'static str, &'static [&'static str])> {
    vec![
        ("export", fields_of::<ExportConfig>()),
        ("ingest", fields_of::<IngestConfig>()),
        ("redaction", fields_of::<RedactionRules>()),
        ("server", fields_of::<ServerConfig>()),
        ("report", fields_of::<ReportConfig>()),
        ("network", fields_of::<NetworkConfig>()),
        ("secrets", fields_of::<SecretsConfig>()),
        ("delivery", fields_of::<DeliveryConfig>()),
        ("scheduler", fields_of::<SchedulerConfig>()),
        ("limits", fields_of::<crate::limits::LimitsConfig>()),
    ]
}

/// The closest of `names` to `word`, if within two edits (Levenshtein).
fn closest<'a>(word: &str, names: &[&'a str]) -> Option<&'a str> {
    names
        .iter()
        .map(|n| (strsim::levenshtein(word, n), *n))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, n)| n)
}

/// The field names a struct's `Deserialize` accepts, read from what it passes to
/// `deserialize_struct` (so the list can never drift from the structs).
pub(super) fn fields_of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    struct Probe;
    #[derive(Debug)]
    struct Fields(&'static [&'static str]);
    impl std::fmt::Display for Fields {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "fields")
        }
    }
    impl std::error::Error for Fields {}
    impl serde::de::Error for Fields {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Fields(&[])
        }
    }
    impl<'de> serde::Deserializer<'de> for Probe {
        type Error = Fields;
        fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Fields> {
            Err(Fields(&[]))
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Fields> {
            Err(Fields(fields))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map
            enum identifier ignored_any
        }
    }
    match T::deserialize(Probe) {
        Err(Fields(f)) => f,
        Ok(_) => &[],
    }
}
