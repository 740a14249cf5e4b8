//! The search behind redaction: finds, in order, the matches one alternation of all
//! rules would find, without scanning the text with that alternation.
//!
//! Why not the single alternation: the regex crate skips ahead to candidates with a
//! literal prefilter only when every alternative has one, and the e-mail rule starts
//! with a character class, so the combined pattern ran its lazy DFA over every byte
//! — about 530 MB/s here, a third of a whole-window export's CPU. Each rule on its
//! own keeps its prefilter (the `@` of an e-mail address, the prefixes of API keys,
//! `-----BEGIN`). The rules over digits (card, SSN, phone, IPv4) have no literal to
//! skip to, and prose is full of digits (a regex prefilter on them measured no
//! faster than the DFA); but every match of theirs lies within one run of the bytes
//! `0-9 .()+-` holding at least 4 digits (IPv4's minimum; cards need 13), so only
//! such runs are searched, found by a word-at-a-time digit scan. Measured on the
//! benchmark's export (388 MB): the four digit rules 1.02 s as an alternation,
//! 0.47 s windowed; the other three 1.20 s as an alternation, 0.10–0.13 s each alone.
//!
//! Exactness: a leftmost-first alternation `R1|R2|…` finds, from a position `p`, the
//! leftmost start at which any rule matches, and there the first rule (in order)
//! that matches, with that rule's own preferred match. [`Scanner`] computes each
//! rule's (or group's) leftmost match from `p` and takes the same winner, searching
//! a rule again only once the text it had found lies behind `p`. The property test
//! in this module checks it against the alternation itself.

use std::sync::Mutex;

use regex_automata::meta::{self, Cache, Regex};
use regex_automata::util::syntax;
use regex_automata::{Input, MatchKind};

use super::detectors::BUILTIN;
use crate::error::{EngineError, Result};

/// The built-in rules whose every match consists of [`is_digit_run_byte`] bytes only,
/// with at least this many digits (see their patterns in `detectors.rs`: a card has
/// 13 to 19 digits, an SSN 9, a phone number 10, or 5 after a `+`, an IPv4 address 4).
const DIGIT_RULES: &[(&str, usize)] = &[("CARD", 13), ("SSN", 9), ("PHONE", 5), ("IPV4", 4)];

/// The bytes a match of a digit rule can contain.
fn is_digit_run_byte(b: u8) -> bool {
    matches!(b, b'0'..=b'9' | b' ' | b'.' | b'(' | b')' | b'+' | b'-')
}

/// Leftmost-first search over an ordered list of rules.
pub(super) struct Scanner {
    /// Consecutive rules that can share a search, in rule order.
    groups: Vec<Group>,
    /// The rules of each group, as ranges of `ids`.
    rules: Vec<std::ops::Range<usize>>,
    /// The caller's id of each rule given to [`Scanner::new`].
    ids: Vec<usize>,
    /// Search caches (one per group) not in use. A search takes a set for a whole
    /// batch of values: through the regex crate's own per-call pool, every thread but
    /// the first paid a lock per value and rule (4 % of a redacted export's samples).
    idle: Mutex<Vec<Vec<Cache>>>,
}

/// A set of search caches of one [`Scanner`], returned to it when dropped.
pub(super) struct Caches<'s> {
    scanner: &'s Scanner,
    caches: Vec<Cache>,
    /// What [`Matches`] knows of each group's next match; kept here so that a
    /// search per value allocates nothing.
    next: Vec<Next>,
}

impl Drop for Caches<'_> {
    fn drop(&mut self) {
        let caches = std::mem::take(&mut self.caches);
        if let Ok(mut idle) = self.scanner.idle.lock() {
            idle.push(caches);
        }
    }
}

/// One search of a [`Scanner`].
enum Group {
    /// The whole text, with the regex crate's own prefilter.
    Text(Regex),
    /// Only runs of [`is_digit_run_byte`] bytes holding at least `min_digits` digits.
    DigitRuns { regex: Regex, min_digits: usize },
}

impl Group {
    fn regex(&self) -> &Regex {
        match self {
            Group::Text(regex) | Group::DigitRuns { regex, .. } => regex,
        }
    }

    /// The leftmost match starting in `from..`, as `(start, end)`.
    fn find(&self, hay: &[u8], from: usize, cache: &mut Cache) -> Option<(usize, usize)> {
        match self {
            Group::Text(regex) => regex
                .search_with(cache, &Input::new(hay).range(from..))
                .map(|m| (m.start(), m.end())),
            Group::DigitRuns { regex, min_digits } => {
                let mut at = from;
                loop {
                    let digit = next_digit(hay, at)?;
                    let mut start = digit;
                    while start > from && is_digit_run_byte(hay[start - 1]) {
                        start -= 1;
                    }
                    let (mut end, mut digits) = (digit, 0);
                    while end < hay.len() && is_digit_run_byte(hay[end]) {
                        digits += usize::from(hay[end].is_ascii_digit());
                        end += 1;
                    }
                    // The span limits where a match lies; the look-around (`\b`) still
                    // sees the bytes on either side.
                    if digits >= *min_digits
                        && let Some(m) =
                            regex.search_with(cache, &Input::new(hay).range(start..end))
                    {
                        return Some((m.start(), m.end()));
                    }
                    // hay[end] cannot be part of a match: the next run starts after it.
                    at = end + 1;
                    if at >= hay.len() {
                        return None;
                    }
                }
            }
        }
    }
}

/// Position of the first ASCII digit in `hay[from..]`. Eight bytes at a time: a byte
/// `x` is a digit when `x ^ 0x30 < 10`, tested for all eight lanes with the classic
/// "has a byte less than n" bit trick (its lowest flagged lane is exact; the lanes
/// are re-checked one by one anyway). Hand-written because prose is full of digits
/// and this loop runs over every redacted byte: about 4× the speed of a byte loop.
fn next_digit(hay: &[u8], from: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let mut i = from;
    while let Some(chunk) = hay.get(i..i + 8) {
        let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let x = word ^ (0x30 * ONES);
        if x.wrapping_sub(10 * ONES) & !x & (0x80 * ONES) != 0
            && let Some(k) = chunk.iter().position(u8::is_ascii_digit)
        {
            return Some(i + k);
        }
        i += 8;
    }
    hay.get(i..)?
        .iter()
        .position(u8::is_ascii_digit)
        .map(|k| i + k)
}

impl Scanner {
    /// Compiles `rules` — `(kind, pattern)` in priority order, with the caller's id of
    /// each in `ids` — or `None` when empty. Consecutive digit rules share one search
    /// with the digit prefilter; consecutive custom rules share one search; every
    /// other built-in rule has its own.
    pub(super) fn new(rules: &[(&str, &str)], ids: Vec<usize>) -> Result<Option<Scanner>> {
        debug_assert_eq!(rules.len(), ids.len());
        #[derive(PartialEq, Clone, Copy)]
        enum Kind {
            Digits,
            Custom,
            Own,
        }
        // A rule is built-in when kind and pattern are a built-in's: a custom rule
        // may be named like one.
        let kind_of = |(kind, pattern): (&str, &str)| {
            if !BUILTIN.contains(&(kind, pattern)) {
                Kind::Custom
            } else if DIGIT_RULES.iter().any(|(k, _)| *k == kind) {
                Kind::Digits
            } else {
                Kind::Own
            }
        };
        let mut groups = Vec::new();
        let mut ranges = Vec::new();
        let mut i = 0;
        while i < rules.len() {
            let k = kind_of(rules[i]);
            let mut j = i + 1;
            while k != Kind::Own && j < rules.len() && kind_of(rules[j]) == k {
                j += 1;
            }
            let alternation: Vec<String> = rules[i..j]
                .iter()
                .map(|(_, p)| format!("(?:{p})"))
                .collect();
            let regex = build(&alternation.join("|"))?;
            groups.push(if k == Kind::Digits {
                let min_digits = rules[i..j]
                    .iter()
                    .filter_map(|(kind, _)| DIGIT_RULES.iter().find(|(k, _)| k == kind))
                    .map(|(_, n)| *n)
                    .min()
                    .unwrap_or(1);
                Group::DigitRuns { regex, min_digits }
            } else {
                Group::Text(regex)
            });
            ranges.push(i..j);
            i = j;
        }
        Ok((!groups.is_empty()).then_some(Scanner {
            groups,
            rules: ranges,
            ids,
            idle: Mutex::new(Vec::new()),
        }))
    }

    /// A set of search caches for this scanner, for as many searches as the caller
    /// likes (a batch of values).
    pub(super) fn caches(&self) -> Caches<'_> {
        let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        Caches {
            scanner: self,
            next: Vec::with_capacity(self.groups.len()),
            caches: idle.unwrap_or_else(|| {
                self.groups
                    .iter()
                    .map(|g| g.regex().create_cache())
                    .collect()
            }),
        }
    }

    /// The ids (as given to [`Scanner::new`], in rule order) of the rules that
    /// `group` of a [`Match`] searched for: one of them made the match.
    pub(super) fn rules_of(&self, group: usize) -> &[usize] {
        &self.ids[self.rules[group].clone()]
    }

    /// Whether any rule matches anywhere in `hay`.
    pub(super) fn is_match(&self, hay: &[u8], caches: &mut Caches<'_>) -> bool {
        self.groups
            .iter()
            .zip(caches.caches.iter_mut())
            .any(|(g, cache)| g.find(hay, 0, cache).is_some())
    }

    /// The matches one leftmost-first alternation of the rules would report, in
    /// order, with byte offsets; an empty match right where the previous match ended
    /// is skipped, as the regex crate's iterators do.
    pub(super) fn find_iter<'s, 'h, 'c>(
        &'s self,
        hay: &'h [u8],
        caches: &'c mut Caches<'_>,
    ) -> Matches<'s, 'h, 'c> {
        Matches {
            scanner: self,
            caches: &mut caches.caches,
            next: {
                caches.next.clear();
                caches.next.resize(self.groups.len(), Next::Unknown);
                &mut caches.next
            },
            hay,
            at: 0,
            last_end: None,
        }
    }
}

fn build(pattern: &str) -> Result<Regex> {
    let config = meta::Config::new()
        .match_kind(MatchKind::LeftmostFirst)
        .utf8_empty(false)
        .nfa_size_limit(Some(64 << 20))
        .hybrid_cache_capacity(64 << 20);
    // The syntax of `regex::bytes::Regex`: Unicode classes on, but the haystack is
    // bytes (a pattern may use `(?-u)` and match any byte).
    Regex::builder()
        .syntax(syntax::Config::new().utf8(false))
        .configure(config)
        .build(pattern)
        .map_err(|e| EngineError::Config(format!("redaction rules: {e}")))
}

/// A match of a [`Scanner`]: bytes `start..end`, found by the search of `group`
/// (see [`Scanner::rules_of`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Match {
    pub start: usize,
    pub end: usize,
    pub group: usize,
}

/// What is known of a group's next match.
#[derive(Clone, Copy)]
enum Next {
    /// Not searched since the position moved past what was found.
    Unknown,
    /// Its leftmost match at or after the position searched from.
    At(usize, usize),
    /// No match at or after the position searched from, so none further on.
    Never,
}

/// Iterator of [`Scanner::find_iter`].
pub(super) struct Matches<'s, 'h, 'c> {
    scanner: &'s Scanner,
    caches: &'c mut [Cache],
    hay: &'h [u8],
    at: usize,
    last_end: Option<usize>,
    next: &'c mut [Next],
}

impl Matches<'_, '_, '_> {
    /// The leftmost match starting at or after `self.at`; ties go to the earlier
    /// group, as in the alternation.
    fn leftmost(&mut self) -> Option<Match> {
        let mut best: Option<Match> = None;
        for (g, next) in self.next.iter_mut().enumerate() {
            if let Next::At(start, _) = *next
                && start < self.at
            {
                *next = Next::Unknown;
            }
            if let Next::Unknown = *next {
                *next = match self.scanner.groups[g].find(self.hay, self.at, &mut self.caches[g]) {
                    Some((start, end)) => Next::At(start, end),
                    None => Next::Never,
                };
            }
            if let Next::At(start, end) = *next
                && best.is_none_or(|b| start < b.start)
            {
                best = Some(Match {
                    start,
                    end,
                    group: g,
                });
            }
        }
        best
    }
}

impl Iterator for Matches<'_, '_, '_> {
    type Item = Match;

    fn next(&mut self) -> Option<Match> {
        loop {
            if self.at > self.hay.len() {
                return None;
            }
            let m = self.leftmost()?;
            if m.start == m.end && Some(m.end) == self.last_end {
                self.at = m.start + 1;
                continue;
            }
            self.at = m.end;
            self.last_end = Some(m.end);
            return Some(m);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn scanner(rules: &[(&str, &str)]) -> Scanner {
        Scanner::new(rules, (0..rules.len()).collect())
            .unwrap()
            .unwrap()
    }

    /// The alternation of `rules`, each rule in a group named by its index.
    fn alternation(rules: &[(&str, &str)]) -> regex::bytes::Regex {
        let alts: Vec<String> = rules
            .iter()
            .enumerate()
            .map(|(i, (_, p))| format!("(?P<r{i}>{p})"))
            .collect();
        regex::bytes::RegexBuilder::new(&alts.join("|"))
            .size_limit(64 << 20)
            .dfa_size_limit(64 << 20)
            .build()
            .unwrap()
    }

    fn same_as_alternation(rules: &[(&str, &str)], text: &[u8]) {
        let scanner = scanner(rules);
        let mut caches = scanner.caches();
        let ours: Vec<Match> = scanner.find_iter(text, &mut caches).collect();
        assert_eq!(scanner.is_match(text, &mut caches), !ours.is_empty());
        // (start, end, the rule that won) as the alternation reports them.
        let theirs: Vec<(usize, usize, usize)> = alternation(rules)
            .captures_iter(text)
            .map(|c| {
                let m = c.get(0).expect("the whole match");
                let rule = (0..rules.len())
                    .find(|i| c.name(&format!("r{i}")).is_some())
                    .expect("one rule matched");
                (m.start(), m.end(), rule)
            })
            .collect();
        let our_spans: Vec<(usize, usize)> = ours.iter().map(|m| (m.start, m.end)).collect();
        let their_spans: Vec<(usize, usize)> = theirs.iter().map(|t| (t.0, t.1)).collect();
        assert_eq!(
            our_spans,
            their_spans,
            "{:?}",
            String::from_utf8_lossy(text)
        );
        for (m, (_, _, rule)) in ours.iter().zip(&theirs) {
            assert!(
                scanner.rules_of(m.group).contains(rule),
                "{m:?} from the group of rules {:?}, but rule {rule} won in the alternation: {:?}",
                scanner.rules_of(m.group),
                String::from_utf8_lossy(text)
            );
        }
    }

    /// Pieces that make near-misses and overlaps between the rules likely.
    fn text() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just("4111 1111 1111 1111".to_string()),
            Just("4111-1111-1111-1112".to_string()),
            Just("123-45-6789".to_string()),
            Just("(555) 123-4567".to_string()),
            Just("+44 20 7946 0958".to_string()),
            Just("+4915112345678".to_string()),
            Just("192.168.1.20".to_string()),
            Just("999.1.1.1".to_string()),
            // The fewest digits each rule matches: IPv4 4, phone 5.
            Just("1.2.3.4".to_string()),
            Just("+1 22 33".to_string()),
            Just("jane.doe+x@mail.example.com".to_string()),
            Just("a@b.c".to_string()),
            Just("sk-proj-ABCDEFGHIJKLMNOPQRSTUVWX".to_string()),
            Just("AKIAABCDEFGHIJKLMNOP".to_string()),
            Just(
                "-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----".to_string()
            ),
            Just("-----BEGIN PRIVATE KEY-----".to_string()),
            "[0-9]{1,20}",
            "[0-9 .()+@-]{1,12}",
            "[a-zA-Z_]{1,8}",
            "[ \n.,;é]{1,3}",
        ];
        proptest::collection::vec(piece, 0..12).prop_map(|v| v.concat().into_bytes())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// The default rules, any subset of them in any order, and custom rules
        /// (one that can match empty in context) find what the alternation finds.
        #[test]
        fn finds_what_the_alternation_finds(
            text in text(),
            order in Just((0..BUILTIN.len()).collect::<Vec<_>>()).prop_shuffle(),
            keep in 1..=BUILTIN.len(),
            custom in any::<bool>(),
        ) {
            same_as_alternation(BUILTIN, &text);
            let mut rules: Vec<(&str, &str)> = order[..keep].iter().map(|&i| BUILTIN[i]).collect();
            if custom {
                rules.push(("TICKET", r"T-[0-9]+"));
                // Named like a built-in: still searched as a custom rule.
                rules.push(("CARD", r"[a-z]+-[0-9]"));
                rules.push(("EDGE", r"\b"));
            }
            same_as_alternation(&rules, &text);
        }
    }

    #[test]
    fn next_digit_finds_the_first_digit() {
        let text = b"abcdefghij klmnop 7 qrs 0x9";
        for from in 0..=text.len() {
            let expected = (from..text.len()).find(|&i| text[i].is_ascii_digit());
            assert_eq!(next_digit(text, from), expected, "from {from}");
        }
        // Bytes just outside '0'..='9' and high bytes are not digits.
        assert_eq!(next_digit(b"/:/:\xff\x80\xb0\xb9////", 0), None);
        assert_eq!(next_digit("ééééé9".as_bytes(), 0), Some(10));
    }

    #[test]
    fn empty_matches_advance() {
        same_as_alternation(&[("EDGE", r"\b"), ("X", "x*")], b"ab xx c");
        same_as_alternation(&[("X", "x*")], b"");
    }
}
