//! Redaction: detectors for personal data and secrets, applied to every free-text
//! value before it leaves the engine.
//!
//! The rules find what one leftmost-first alternation of them would find, but each
//! rule is searched with its own prefilter and the digit rules only in runs of digits
//! (see `scan.rs`), so text without a match costs a few fast passes and no
//! allocation. A match is then attributed to the first rule that matches it exactly; payment-card candidates must
//! also pass the Luhn check, or the span is searched again by the other rules.
//! JSON values (metadata, policy results) are rewritten string by string, keeping
//! every other byte, so their structure and key order survive.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use deltalake::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, BooleanBufferBuilder, StringViewBuilder,
};
use deltalake::arrow::compute::cast;
use deltalake::arrow::compute::kernels::zip::zip;
use deltalake::arrow::datatypes::{DataType, Field, FieldRef};
use deltalake::datafusion::common::{DataFusionError, ScalarValue};
use deltalake::datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
// Byte regexes: the built-in patterns are ASCII-only (`(?-u)`), which keeps the lazy
// DFA small and fast; every match starts and ends at an ASCII byte, so spans are
// always whole characters of the UTF-8 text.
use regex::bytes::Regex;
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};

mod detectors;
mod scan;
pub use detectors::BUILTIN_DETECTORS;
use detectors::{BUILTIN, luhn_ok};
use scan::{Caches, Scanner};

/// Field metadata key marking a text column that holds JSON documents.
pub const KIND_METADATA: &str = "evidex.kind";

/// A user-defined detector.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CustomRule {
    /// Kind written in the marker: `[REDACTED:NAME]` (upper-cased).
    pub name: String,
    /// A regular expression (Rust `regex` syntax).
    pub pattern: String,
}

/// Which redaction rules an export applies; recorded in its manifest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct RedactionRules {
    /// Built-in detectors, by name (see [`BUILTIN_DETECTORS`]); all by default.
    pub detectors: Vec<String>,
    /// Custom detectors.
    pub custom: Vec<CustomRule>,
    /// Identity columns (normally exported as they are) that the rules also apply
    /// to, e.g. `user_id`.
    pub fields: Vec<String>,
}

impl Default for RedactionRules {
    fn default() -> Self {
        RedactionRules {
            detectors: BUILTIN_DETECTORS.iter().map(|s| s.to_string()).collect(),
            custom: Vec::new(),
            fields: Vec::new(),
        }
    }
}

impl RedactionRules {
    /// No rule at all: values leave as stored.
    pub fn none() -> Self {
        RedactionRules {
            detectors: Vec::new(),
            custom: Vec::new(),
            fields: Vec::new(),
        }
    }

    /// Whether any rule applies.
    pub fn is_empty(&self) -> bool {
        self.detectors.is_empty() && self.custom.is_empty()
    }

    /// Compiles the rules; errors name the rule at fault.
    pub fn compile(&self) -> Result<Redactor> {
        Redactor::new(self)
    }
}

struct Rule {
    kind: String,
    exact: Regex,
    is_card: bool,
}

/// Compiled redaction rules.
pub struct Redactor {
    rules: RedactionRules,
    any: Option<Scanner>,
    /// Every rule except the card detector, for spans that failed the Luhn check.
    no_card: Option<Scanner>,
    /// Every rule, in order; both scanners name rules by their index here.
    list: Vec<Rule>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("rules", &self.rules)
            .finish()
    }
}

const MAX_PATTERN_BYTES: usize = 4096;

impl Redactor {
    fn new(rules: &RedactionRules) -> Result<Redactor> {
        let mut parts: Vec<(String, String)> = Vec::new();
        for name in &rules.detectors {
            let key = name.trim().to_ascii_lowercase().replace('-', "_");
            let Some(i) = BUILTIN_DETECTORS.iter().position(|d| *d == key) else {
                return Err(EngineError::Config(format!(
                    "redaction.detectors: unknown detector {name:?}; use {}",
                    BUILTIN_DETECTORS.join(", ")
                )));
            };
            let (kind, pattern) = BUILTIN[i];
            if !parts.iter().any(|(k, _)| k == kind) {
                parts.push((kind.to_string(), pattern.to_string()));
            }
        }
        for (n, c) in rules.custom.iter().enumerate() {
            let kind = c.name.trim().to_ascii_uppercase();
            if kind.is_empty()
                || !kind
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
            {
                return Err(EngineError::Config(format!(
                    "redaction.custom[{n}].name: {:?} must be letters, digits or _",
                    c.name
                )));
            }
            if c.pattern.is_empty() || c.pattern.len() > MAX_PATTERN_BYTES {
                return Err(EngineError::Config(format!(
                    "redaction.custom[{n}].pattern ({kind}): must be 1 to {MAX_PATTERN_BYTES} bytes"
                )));
            }
            let re = Regex::new(&c.pattern).map_err(|e| {
                EngineError::Config(format!("redaction.custom[{n}].pattern ({kind}): {e}"))
            })?;
            if re.is_match(b"") {
                return Err(EngineError::Config(format!(
                    "redaction.custom[{n}].pattern ({kind}): matches the empty string"
                )));
            }
            parts.push((kind, c.pattern.clone()));
        }
        let scanner = |skip_card: bool| -> Result<Option<Scanner>> {
            let (ids, rules): (Vec<usize>, Vec<(&str, &str)>) = parts
                .iter()
                .enumerate()
                .filter(|(_, (k, _))| !(skip_card && k == "CARD"))
                .map(|(i, (k, p))| (i, (k.as_str(), p.as_str())))
                .unzip();
            Scanner::new(&rules, ids)
        };
        let list = parts
            .iter()
            .map(|(kind, p)| {
                Ok(Rule {
                    kind: kind.clone(),
                    exact: Regex::new(&format!("^(?:{p})$"))
                        .map_err(|e| EngineError::Config(format!("redaction rule {kind}: {e}")))?,
                    is_card: kind == "CARD",
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Redactor {
            rules: rules.clone(),
            any: scanner(false)?,
            no_card: scanner(true)?,
            list,
        })
    }

    /// The rules this redactor applies.
    pub fn rules(&self) -> &RedactionRules {
        &self.rules
    }

    /// Whether no rule applies.
    pub fn is_noop(&self) -> bool {
        self.any.is_none()
    }

    /// `text` with every match replaced by `[REDACTED:KIND]`; borrowed when nothing
    /// matched. For many values, [`Redactor::session`] saves the search set-up.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        self.session().redact(text)
    }

    /// A JSON document with every string value redacted; keys, numbers and layout
    /// are kept byte for byte. Text that is not JSON is redacted as plain text.
    pub fn redact_json<'a>(&self, json: &'a str) -> Cow<'a, str> {
        self.session().redact_json(json)
    }

    /// The search state for redacting a batch of values; returned to the redactor
    /// for the next batch when dropped.
    pub fn session(&self) -> Session<'_> {
        Session {
            redactor: self,
            any: self.any.as_ref().map(|s| (s, s.caches())),
            no_card: self.no_card.as_ref().map(|s| (s, s.caches())),
        }
    }
}

/// [`Redactor::redact`] and [`Redactor::redact_json`] for many values, with the
/// search caches taken once (see [`Redactor::session`]).
pub struct Session<'r> {
    redactor: &'r Redactor,
    any: Option<(&'r Scanner, Caches<'r>)>,
    no_card: Option<(&'r Scanner, Caches<'r>)>,
}

impl Session<'_> {
    /// See [`Redactor::redact`].
    pub fn redact<'a>(&mut self, text: &'a str) -> Cow<'a, str> {
        let Some((any, caches)) = self.any.as_mut() else {
            return Cow::Borrowed(text);
        };
        let mut out: Option<String> = None;
        let no_card = self.no_card.as_mut().map(|(s, c)| (*s, c));
        redact_into(self.redactor, any, caches, no_card, text, &mut out);
        match out {
            // Spans that failed the Luhn check are copied back unchanged.
            Some(s) if s != text => Cow::Owned(s),
            _ => Cow::Borrowed(text),
        }
    }

    /// See [`Redactor::redact_json`].
    pub fn redact_json<'a>(&mut self, json: &'a str) -> Cow<'a, str> {
        let Some((any, caches)) = self.any.as_mut() else {
            return Cow::Borrowed(json);
        };
        // Fast path: no escapes and no match in the raw text means no string value
        // can match either (unescaped strings are their own raw bytes).
        if memchr::memchr(b'\\', json.as_bytes()).is_none()
            && !any.is_match(json.as_bytes(), caches)
        {
            return Cow::Borrowed(json);
        }
        let bytes = json.as_bytes();
        let mut out = String::with_capacity(json.len());
        let mut changed = false;
        let mut i = 0;
        let mut copied = 0;
        while let Some(q) = memchr::memchr(b'"', &bytes[i..]) {
            let start = i + q;
            let Some(end) = string_end(bytes, start) else {
                return self.redact(json);
            };
            let token = &json[start..=end];
            i = end + 1;
            let is_key = bytes[i..]
                .iter()
                .find(|b| !b.is_ascii_whitespace())
                .is_some_and(|&b| b == b':');
            if is_key {
                continue;
            }
            let inner = &token[1..token.len() - 1];
            let value: Cow<str> = if inner.contains('\\') {
                match serde_json::from_str::<String>(token) {
                    Ok(s) => Cow::Owned(s),
                    Err(_) => return self.redact(json),
                }
            } else {
                Cow::Borrowed(inner)
            };
            if let Cow::Owned(red) = self.redact(&value) {
                out.push_str(&json[copied..start]);
                out.push_str(&serde_json::to_string(&red).expect("strings serialise"));
                copied = end + 1;
                changed = true;
            }
        }
        if !changed {
            return Cow::Borrowed(json);
        }
        out.push_str(&json[copied..]);
        Cow::Owned(out)
    }
}

/// Scans `text` with `scanner`; writes into `out` (created at the first change).
/// `no_card` searches spans the card rule matched that fail the Luhn check.
fn redact_into(
    redactor: &Redactor,
    scanner: &Scanner,
    caches: &mut Caches<'_>,
    mut no_card: Option<(&Scanner, &mut Caches<'_>)>,
    text: &str,
    out: &mut Option<String>,
) {
    let mut last = 0;
    for m in scanner.find_iter(text.as_bytes(), caches) {
        // A custom pattern may end inside a character: widen to whole ones.
        let (start, end) = (floor_boundary(text, m.start), ceil_boundary(text, m.end));
        if start < last {
            continue;
        }
        let span = &text[start..end];
        // The kind: the rule of the search that found the span when it searched for
        // one rule; otherwise the first of its rules that matches the span alone.
        let rules = scanner.rules_of(m.group);
        let single = rules.len() == 1;
        let kind = rules
            .iter()
            .map(|&i| &redactor.list[i])
            .find(|r| single || r.exact.is_match(span.as_bytes()))
            .map(|r| (r.kind.as_str(), r.is_card));
        let buf = out.get_or_insert_with(|| String::with_capacity(text.len()));
        buf.push_str(&text[last..start]);
        match kind {
            Some((_, true)) if !luhn_ok(span) => {
                // Not a card number: the other rules may still find something.
                match no_card.as_mut() {
                    Some((nc, nc_caches)) => {
                        let mut inner = None;
                        redact_into(redactor, nc, nc_caches, None, span, &mut inner);
                        buf.push_str(inner.as_deref().unwrap_or(span));
                    }
                    None => buf.push_str(span),
                }
            }
            Some((kind, _)) => {
                buf.push_str("[REDACTED:");
                buf.push_str(kind);
                buf.push(']');
            }
            // Matched the alternation but no single rule exactly (a boundary
            // that only holds in context): redact without a finer kind.
            None => buf.push_str("[REDACTED:PII]"),
        }
        last = end;
    }
    if let Some(buf) = out.as_mut() {
        buf.push_str(&text[last..]);
    }
}

fn floor_boundary(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_boundary(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i += 1;
    }
    i
}

/// Index of the quote closing the JSON string that opens at `start`.
fn string_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut j = start + 1;
    loop {
        let k = j + memchr::memchr2(b'"', b'\\', &bytes[j..])?;
        if bytes[k] == b'\\' {
            j = k + 2;
            if j > bytes.len() {
                return None;
            }
        } else {
            return Some(k);
        }
    }
}

/// How a redaction UDF reads its column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TextShape {
    /// Free text.
    Plain,
    /// A JSON document whose string values are free text.
    Json,
}

/// The redaction rules as a DataFusion scalar function over a string column, so
/// redaction runs inside the scan's partitions, in parallel, before any operator or
/// user SQL sees the values.
#[derive(Debug)]
pub struct RedactUdf {
    redactor: Arc<Redactor>,
    shape: TextShape,
    signature: Signature,
}

impl RedactUdf {
    /// The function for `shape` values.
    pub fn udf(redactor: Arc<Redactor>, shape: TextShape) -> ScalarUDF {
        ScalarUDF::new_from_impl(RedactUdf {
            redactor,
            shape,
            signature: Signature::any(1, Volatility::Immutable),
        })
    }
}

impl PartialEq for RedactUdf {
    fn eq(&self, other: &Self) -> bool {
        self.shape == other.shape && self.redactor.rules == other.redactor.rules
    }
}

impl Eq for RedactUdf {}

impl Hash for RedactUdf {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.shape.hash(state);
        self.redactor.rules.hash(state);
    }
}

impl ScalarUDFImpl for RedactUdf {
    fn name(&self) -> &str {
        match self.shape {
            TextShape::Plain => "evidex_redact_text",
            TextShape::Json => "evidex_redact_json",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(
        &self,
        arg_types: &[DataType],
    ) -> deltalake::datafusion::common::Result<DataType> {
        // Views: unchanged values are not copied (see `redact_array`).
        let _ = arg_types;
        Ok(DataType::Utf8View)
    }

    fn return_field_from_args(
        &self,
        args: ReturnFieldArgs,
    ) -> deltalake::datafusion::common::Result<FieldRef> {
        let types: Vec<DataType> = args
            .arg_fields
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        let mut field = Field::new(self.name(), self.return_type(&types)?, true);
        if self.shape == TextShape::Json {
            // Tells the encoders this text is a JSON document to emit nested, even
            // after SQL definitions rename or pass it through.
            field = field.with_metadata(HashMap::from([(
                KIND_METADATA.to_string(),
                "json".to_string(),
            )]));
        }
        Ok(Arc::new(field))
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> deltalake::datafusion::common::Result<ColumnarValue> {
        let mut session = self.redactor.session();
        let mut redact = |s: &str| -> Option<String> {
            let r = match self.shape {
                TextShape::Plain => session.redact(s),
                TextShape::Json => session.redact_json(s),
            };
            match r {
                Cow::Owned(o) => Some(o),
                Cow::Borrowed(_) => None,
            }
        };
        let arg = args
            .args
            .into_iter()
            .next()
            .ok_or_else(|| DataFusionError::Plan("redaction takes one argument".to_string()))?;
        match arg {
            ColumnarValue::Scalar(v) => {
                let s = match &v {
                    ScalarValue::Utf8(s) | ScalarValue::Utf8View(s) | ScalarValue::LargeUtf8(s) => {
                        s.clone()
                    }
                    ScalarValue::Null => None,
                    other => Some(other.to_string()),
                };
                let out = s.map(|s| redact(&s).unwrap_or(s));
                Ok(ColumnarValue::Scalar(ScalarValue::Utf8View(out)))
            }
            ColumnarValue::Array(a) => Ok(ColumnarValue::Array(redact_array(&a, redact)?)),
        }
    }
}

/// Applies `redact` to each value. The result is a string-view array whose unchanged
/// values are views into the input's own buffers: redaction copies only the values it
/// changes (copying every batch of kilobyte texts cost more than the matching).
fn redact_array(
    array: &ArrayRef,
    mut redact: impl FnMut(&str) -> Option<String>,
) -> deltalake::datafusion::common::Result<ArrayRef> {
    let mut changed: Vec<(usize, String)> = Vec::new();
    let mut scan = |i: usize, v: Option<&str>| {
        if let Some(s) = v
            && let Some(r) = redact(s)
        {
            changed.push((i, r));
        }
    };
    match array.data_type() {
        DataType::Utf8 => array
            .as_string::<i32>()
            .iter()
            .enumerate()
            .for_each(|(i, v)| scan(i, v)),
        DataType::LargeUtf8 => array
            .as_string::<i64>()
            .iter()
            .enumerate()
            .for_each(|(i, v)| scan(i, v)),
        DataType::Utf8View => array
            .as_string_view()
            .iter()
            .enumerate()
            .for_each(|(i, v)| scan(i, v)),
        DataType::Null => return Ok(cast(array, &DataType::Utf8View)?),
        other => {
            return Err(DataFusionError::Plan(format!(
                "redaction applies to text, not {other}"
            )));
        }
    }
    match array.data_type() {
        // Nothing to replace: the cast builds views over the same buffers.
        _ if changed.is_empty() => Ok(cast(array, &DataType::Utf8View)?),
        DataType::Utf8View => replace_values(array, changed),
        _ => replace_values(&cast(array, &DataType::Utf8View)?, changed),
    }
}

/// The string-view array `array` with the `changed` rows (ascending) replaced; the
/// other rows keep viewing the original buffers. Through Arrow's `zip`, which copies
/// views in runs: rebuilding the array view by view re-validated the UTF-8 of every
/// unchanged value (2.6 % of a redacted export's samples).
fn replace_values(
    array: &ArrayRef,
    changed: Vec<(usize, String)>,
) -> deltalake::datafusion::common::Result<ArrayRef> {
    let len = array.len();
    let mut mask = BooleanBufferBuilder::new(len);
    mask.append_n(len, false);
    let mut replacements = StringViewBuilder::with_capacity(changed.len());
    let mut next = 0;
    for (i, s) in changed {
        // Rows the mask does not pick: empty values, never read.
        (next..i).for_each(|_| replacements.append_value(""));
        replacements.append_value(s);
        mask.set_bit(i, true);
        next = i + 1;
    }
    (next..len).for_each(|_| replacements.append_value(""));
    let mask = BooleanArray::new(mask.finish(), None);
    Ok(zip(&mask, &replacements.finish(), array)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn red(s: &str) -> String {
        RedactionRules::default()
            .compile()
            .unwrap()
            .redact(s)
            .into_owned()
    }

    #[test]
    fn builtin_detectors_find_their_kind() {
        let cases = [
            (
                "mail jane.doe@example.co.uk now",
                "mail [REDACTED:EMAIL] now",
            ),
            ("call +1 415-555-0134 today", "call [REDACTED:PHONE] today"),
            ("call (415) 555-0134", "call [REDACTED:PHONE]"),
            ("call +44 20 7946 0958", "call [REDACTED:PHONE]"),
            ("ssn 123-45-6789.", "ssn [REDACTED:SSN]."),
            ("card 4111111111111111", "card [REDACTED:CARD]"),
            ("card 4111 1111 1111 1111 ok", "card [REDACTED:CARD] ok"),
            ("card 4111-1111-1111-1111", "card [REDACTED:CARD]"),
            ("amex 3400 000000 00009", "amex [REDACTED:CARD]"),
            (
                "key sk-proj-abcdefghijklmnopqrstuvwxyz012345",
                "key [REDACTED:API_KEY]",
            ),
            ("aws AKIAIOSFODNN7EXAMPLE", "aws [REDACTED:API_KEY]"),
            (
                "gh ghp_abcdefghijklmnopqrstuvwxyz0123456789",
                "gh [REDACTED:API_KEY]",
            ),
            ("slack xoxb-123456-abcdefghijkl", "slack [REDACTED:API_KEY]"),
            ("host 10.20.30.40 up", "host [REDACTED:IPV4] up"),
            (
                "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY----- tail",
                "[REDACTED:PRIVATE_KEY] tail",
            ),
            (
                "x -----BEGIN PRIVATE KEY-----\nMIIEow (truncated",
                "x [REDACTED:PRIVATE_KEY]",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(red(input), want, "{input}");
        }
    }

    #[test]
    fn near_misses_stay() {
        for s in [
            "order 4111111111111112 is not a card",
            "version 1.2.3 and 999.1.1.1",
            "ticket 12345",
            "plain text, no secrets: café 東京 🚀",
            "",
        ] {
            assert!(
                matches!(
                    RedactionRules::default().compile().unwrap().redact(s),
                    Cow::Borrowed(_)
                ),
                "{s}"
            );
        }
        // A failed Luhn check does not hide a phone number inside the span.
        assert_eq!(red("4111111111111112"), "4111111111111112");
    }

    #[test]
    fn json_strings_are_redacted_keys_and_layout_kept() {
        let r = RedactionRules::default().compile().unwrap();
        let doc = r#"{"note":"write to a.b@example.com","n":5551234567,"list":["10.0.0.1",{"k":"ok"}],"a.b@example.com":1}"#;
        assert_eq!(
            r.redact_json(doc),
            r#"{"note":"write to [REDACTED:EMAIL]","n":5551234567,"list":["[REDACTED:IPV4]",{"k":"ok"}],"a.b@example.com":1}"#
        );
        // Escapes inside strings are decoded before matching.
        let doc = r#"{"pem":"-----BEGIN EC PRIVATE KEY-----\nAAA\n-----END EC PRIVATE KEY-----","q":"\u0061@example.com"}"#;
        assert_eq!(
            r.redact_json(doc),
            r#"{"pem":"[REDACTED:PRIVATE_KEY]","q":"[REDACTED:EMAIL]"}"#
        );
        assert!(matches!(r.redact_json(r#"{"a":"b"}"#), Cow::Borrowed(_)));
    }

    #[test]
    fn arrays_keep_unchanged_values_and_nulls() {
        use deltalake::arrow::array::{StringArray, StringViewArray};
        let r = RedactionRules::default().compile().unwrap();
        let long = "a long value that does not fit inline in a view";
        let input: Vec<Option<&str>> = vec![
            Some(long),
            None,
            Some("mail a.b@example.com please"),
            Some("short"),
            Some(""),
            Some("ip 10.1.2.3"),
        ];
        let want: Vec<Option<&str>> = vec![
            Some(long),
            None,
            Some("mail [REDACTED:EMAIL] please"),
            Some("short"),
            Some(""),
            Some("ip [REDACTED:IPV4]"),
        ];
        let plain: ArrayRef = Arc::new(StringArray::from(input.clone()).slice(0, 6));
        let views: ArrayRef = Arc::new(StringViewArray::from(input.clone()));
        let redact = |a: &ArrayRef| {
            redact_array(a, |s| match r.redact(s) {
                Cow::Owned(o) => Some(o),
                Cow::Borrowed(_) => None,
            })
            .unwrap()
        };
        for a in [&plain, &views] {
            let out = redact(a);
            let got: Vec<Option<&str>> = out.as_string_view().iter().collect();
            assert_eq!(got, want);
        }
        // Unchanged values are views into the input's bytes, not copies.
        let out = redact(&views);
        assert_eq!(
            out.as_string_view().value(0).as_ptr(),
            views.as_string_view().value(0).as_ptr()
        );
        // A slice (an offset into the views) keeps its rows.
        let sliced: ArrayRef = Arc::new(StringViewArray::from(input.clone()).slice(1, 5));
        let got: Vec<Option<String>> = redact(&sliced)
            .as_string_view()
            .iter()
            .map(|v| v.map(str::to_string))
            .collect();
        let want_sliced: Vec<Option<String>> =
            want[1..].iter().map(|v| v.map(str::to_string)).collect();
        assert_eq!(got, want_sliced);
        // Nothing to change: the same values, as views.
        let a: ArrayRef = Arc::new(StringArray::from(vec![Some(long), None]));
        let out = redact_array(&a, |_| None).unwrap();
        assert_eq!(
            out.as_string_view().iter().collect::<Vec<_>>(),
            vec![Some(long), None]
        );
    }

    #[test]
    fn custom_rules_and_selection() {
        let rules = RedactionRules {
            detectors: vec!["email".into()],
            custom: vec![CustomRule {
                name: "employee_id".into(),
                pattern: r"\bE[0-9]{6}\b".into(),
            }],
            fields: vec![],
        };
        let r = rules.compile().unwrap();
        assert_eq!(
            r.redact("E123456 wrote x@y.org from 10.0.0.1"),
            "[REDACTED:EMPLOYEE_ID] wrote [REDACTED:EMAIL] from 10.0.0.1"
        );
        assert!(RedactionRules::none().compile().unwrap().is_noop());
        // Custom patterns keep Unicode semantics; spans are whole characters.
        let rules = RedactionRules {
            detectors: vec![],
            custom: vec![CustomRule {
                name: "name".into(),
                pattern: r"\p{Lu}\w+é".into(),
            }],
            fields: vec![],
        };
        let r = rules.compile().unwrap();
        assert_eq!(r.redact("hi Josué, 東京"), "hi [REDACTED:NAME], 東京");
    }

    #[test]
    fn bad_rules_are_named() {
        let bad = |rules: RedactionRules| rules.compile().unwrap_err().to_string();
        let mut r = RedactionRules::none();
        r.detectors = vec!["emali".into()];
        assert!(bad(r).contains("\"emali\""));
        let mut r = RedactionRules::none();
        r.custom = vec![CustomRule {
            name: "X".into(),
            pattern: "(unclosed".into(),
        }];
        assert!(bad(r).contains("redaction.custom[0].pattern (X)"));
        let mut r = RedactionRules::none();
        r.custom = vec![CustomRule {
            name: "X".into(),
            pattern: "a*".into(),
        }];
        assert!(bad(r).contains("empty string"));
        let mut r = RedactionRules::none();
        r.custom = vec![CustomRule {
            name: "bad name".into(),
            pattern: "a".into(),
        }];
        assert!(bad(r).contains("redaction.custom[0].name"));
    }
}
