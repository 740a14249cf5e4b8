//! The built-in detectors: the pattern of each kind of personal data or secret the
//! engine finds without configuration, and the Luhn check payment-card matches pass.

/// The built-in detectors: `(kind, pattern)`. Digits are `[0-9]` and word boundaries
/// ASCII (`(?-u:\b)`), which keeps the scan in the fast DFA on any input.
pub(super) const BUILTIN: &[(&str, &str)] = &[
    (
        "PRIVATE_KEY",
        r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----(?s-u:.*?-----END [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----|.*)",
    ),
    (
        "API_KEY",
        r"(?-u:\b)(?:sk-(?:proj-|ant-(?:api[0-9]{2}-)?|svcacct-)?[A-Za-z0-9_-]{20,}|(?:AKIA|ASIA)[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,}|xox[abposr]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35}|(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{20,}|glpat-[0-9A-Za-z_-]{20,}|hf_[A-Za-z0-9]{30,}|eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,})",
    ),
    (
        "EMAIL",
        r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?-u:\b)",
    ),
    ("CARD", r"(?-u:\b)[0-9](?:[ -]?[0-9]){12,18}(?-u:\b)"),
    ("SSN", r"(?-u:\b)[0-9]{3}-[0-9]{2}-[0-9]{4}(?-u:\b)"),
    (
        "PHONE",
        r"(?:\+[0-9]{1,3}[ .-]?)?(?:\([0-9]{3}\)|(?-u:\b)[0-9]{3})[ .-]?[0-9]{3}[ .-][0-9]{4}(?-u:\b)|\+[0-9]{1,3}(?:[ .-][0-9]{2,4}){2,5}(?-u:\b)|\+[0-9]{8,15}(?-u:\b)",
    ),
    (
        "IPV4",
        r"(?-u:\b)(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(?-u:\b)",
    ),
];

/// Names of the built-in detectors, as configured (`email`, `phone`, ...).
pub const BUILTIN_DETECTORS: &[&str] = &[
    "private_key",
    "api_key",
    "email",
    "card",
    "ssn",
    "phone",
    "ipv4",
];

/// Luhn check over the digits of `s` (separators ignored); 13–19 digits.
pub(super) fn luhn_ok(s: &str) -> bool {
    let digits: Vec<u32> = s.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let mut sum = 0;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = *d;
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum % 10 == 0
}
