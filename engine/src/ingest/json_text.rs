//! JSON text as the sender wrote it: lone UTF-16 surrogate escapes repaired before
//! parsing, a string token's value decoded, insignificant whitespace removed. Used by
//! [`super::validate`] on text serde_json has already checked (RFC 8259).

use std::borrow::Cow;

/// Replaces every `\uD800`–`\uDFFF` escape that is not part of a valid surrogate pair
/// with `\uFFFD` (RFC 8259 §8.2 allows such escapes syntactically but they encode no
/// Unicode scalar value, and serde_json refuses them). Returns the text and the count.
pub(super) fn replace_lone_surrogates(text: &str) -> (Cow<'_, str>, u32) {
    let bytes = text.as_bytes();
    // Fast path: no `\u` escape of a surrogate at all.
    let has_candidate = memchr::memmem::find_iter(bytes, b"\\u").any(|i| {
        bytes.get(i + 2).is_some_and(|b| matches!(b, b'd' | b'D'))
            && bytes
                .get(i + 3)
                .is_some_and(|b| matches!(b, b'8'..=b'9' | b'a'..=b'f' | b'A'..=b'F'))
    });
    if !has_candidate {
        return (Cow::Borrowed(text), 0);
    }
    let hex4 = |at: usize| -> Option<u16> {
        let h = text.get(at..at + 4)?;
        if h.bytes().all(|b| b.is_ascii_hexdigit()) {
            u16::from_str_radix(h, 16).ok()
        } else {
            None
        }
    };
    let mut out = String::with_capacity(text.len());
    let mut count = 0;
    let (mut i, mut copied) = (0usize, 0usize);
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            i += 1;
            continue;
        }
        // An escape: `\\`, `\"`, ... are two bytes; `\uXXXX` six.
        if bytes.get(i + 1) != Some(&b'u') {
            i += 2;
            continue;
        }
        let Some(unit) = hex4(i + 2) else {
            i += 2;
            continue;
        };
        match unit {
            0xD800..=0xDBFF => {
                let low = (bytes.get(i + 6) == Some(&b'\\') && bytes.get(i + 7) == Some(&b'u'))
                    .then(|| hex4(i + 8))
                    .flatten();
                if matches!(low, Some(0xDC00..=0xDFFF)) {
                    i += 12;
                    continue;
                }
            }
            0xDC00..=0xDFFF => {}
            _ => {
                i += 6;
                continue;
            }
        }
        out.push_str(&text[copied..i]);
        out.push_str("\\uFFFD");
        count += 1;
        i += 6;
        copied = i;
    }
    if count == 0 {
        return (Cow::Borrowed(text), 0);
    }
    out.push_str(&text[copied..]);
    (Cow::Owned(out), count)
}

/// The value of `raw`, a JSON string token the record's parse already checked.
/// Without a backslash its text between the quotes *is* the value (the parser has
/// refused control characters), so the usual string skips a second parse; one with
/// escapes is decoded by [`unescape_checked`], and by serde_json (with its error)
/// when that finds an escape it does not take.
pub(super) fn json_string(raw: &str) -> serde_json::Result<String> {
    let decoded = raw
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .and_then(|inner| match memchr::memchr(b'\\', inner.as_bytes()) {
            None => Some(inner.to_string()),
            Some(first) => unescape_checked(inner, first),
        });
    match decoded {
        Some(s) => Ok(s),
        None => serde_json::from_str(raw),
    }
}

/// Decodes the escapes (RFC 8259 §7) of a JSON string's text between its quotes;
/// `first` is the position of its first backslash. `None` for an escape that is not
/// one of RFC 8259's or a `\u` surrogate without its pair.
///
/// Hand-written for speed: prompts and outputs are long and most hold escapes (`\n`),
/// and serde_json's decoding scans such a string again byte by byte after the record's
/// parse has checked it (the decoding was ~4 % of the server's CPU under ingest). This
/// copies the runs between escapes whole. Its output is checked against serde_json's
/// on generated strings (the `unescape_matches_serde_json` property test).
fn unescape_checked(inner: &str, first: usize) -> Option<String> {
    let bytes = inner.as_bytes();
    let hex4 = |at: usize| -> Option<u32> {
        let digits = bytes.get(at..at + 4)?;
        digits
            .iter()
            .try_fold(0u32, |acc, &b| Some(acc * 16 + char::from(b).to_digit(16)?))
    };
    let mut out = String::with_capacity(inner.len());
    let mut copied = 0;
    let mut at = first;
    loop {
        out.push_str(&inner[copied..at]);
        let mut next = at + 2;
        let c = match *bytes.get(at + 1)? {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let unit = hex4(at + 2)?;
                next = at + 6;
                if (0xD800..0xDC00).contains(&unit) {
                    // A high surrogate: its low half must follow as `\uDC00`–`\uDFFF`.
                    if bytes.get(next..next + 2)? != b"\\u" {
                        return None;
                    }
                    let low = hex4(next + 2).filter(|l| (0xDC00..0xE000).contains(l))?;
                    next += 6;
                    char::from_u32(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00))?
                } else {
                    // A lone low surrogate is no character: `None`.
                    char::from_u32(unit)?
                }
            }
            _ => return None,
        };
        out.push(c);
        copied = next;
        // An escape ends within the text (`get` above), so `next <= bytes.len()`.
        match memchr::memchr(b'\\', &bytes[next..]) {
            Some(off) => at = next + off,
            None => break,
        }
    }
    out.push_str(&inner[copied..]);
    Some(out)
}

/// Removes insignificant whitespace (RFC 8259 §2) outside strings, keeping every other
/// byte — numbers keep their digits and strings their escapes.
pub(super) fn compact_json(raw: &str) -> Cow<'_, str> {
    let bytes = raw.as_bytes();
    if memchr::memchr3(b' ', b'\n', b'\r', bytes).is_none()
        && memchr::memchr(b'\t', bytes).is_none()
    {
        return Cow::Borrowed(raw);
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut in_string = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            out.push(b);
            if b == b'\\' {
                if let Some(&next) = bytes.get(i + 1) {
                    out.push(next);
                }
                i += 1;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
            out.push(b);
        } else if !matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
            out.push(b);
        }
        i += 1;
    }
    Cow::Owned(String::from_utf8(out).expect("only ASCII whitespace was removed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A piece of a JSON string's text: a character as it is, or escaped.
    fn string_piece() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            // Characters that need no escape (no control character, quote or backslash).
            any::<char>()
                .prop_filter("needs no escape", |c| !c.is_control()
                    && *c != '"'
                    && *c != '\\')
                .prop_map(String::from),
            Just("\\\"".to_string()),
            Just("\\\\".to_string()),
            Just("\\/".to_string()),
            Just("\\b".to_string()),
            Just("\\f".to_string()),
            Just("\\n".to_string()),
            Just("\\r".to_string()),
            Just("\\t".to_string()),
            // `\uXXXX` of any character (a pair for those above U+FFFF), either case.
            (any::<char>(), any::<bool>()).prop_map(|(c, upper)| {
                let mut units = [0u16; 2];
                let text: String = c
                    .encode_utf16(&mut units)
                    .iter()
                    .map(|u| format!("\\u{u:04x}"))
                    .collect();
                if upper {
                    text.to_uppercase().replace("\\U", "\\u")
                } else {
                    text
                }
            }),
            // Escapes serde_json refuses: a lone surrogate, a bad letter, short hex.
            Just("\\ud800".to_string()),
            Just("\\udc00x".to_string()),
            Just("\\x".to_string()),
            Just("\\u12".to_string()),
        ]
    }

    proptest::proptest! {
        #[test]
        fn unescape_matches_serde_json(pieces in proptest::collection::vec(string_piece(), 0..12)) {
            let inner: String = pieces.concat();
            let raw = format!("\"{inner}\"");
            let reference = serde_json::from_str::<String>(&raw).ok();
            let ours = memchr::memchr(b'\\', inner.as_bytes())
                .map_or(Some(inner.clone()), |first| unescape_checked(&inner, first));
            // Where serde_json decodes, ours gives the same text; where it refuses,
            // ours declines too (and `json_string` reports serde_json's error).
            proptest::prop_assert_eq!(&ours, &reference, "{}", raw);
            proptest::prop_assert_eq!(json_string(&raw).ok(), reference);
        }
    }
}
