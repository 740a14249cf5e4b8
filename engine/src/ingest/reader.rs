//! Splits ingest input (NDJSON, or one JSON array) into records with their line numbers,
//! without ever buffering more than one record.
//!
//! A record that is too long, not UTF-8, or cut off by the end of the input becomes an
//! error for that record only; the reader goes on with the next one.

use std::io::{self, BufRead};

/// One record found in the input: the 1-based line it starts on and its bytes, or why
/// it could not be read.
#[derive(Debug)]
pub struct RawRecord {
    /// 1-based line number where the record starts.
    pub line: u64,
    /// The record's JSON text, or a message saying why it is unusable.
    pub body: Result<Vec<u8>, String>,
}

/// Reads records from NDJSON or a JSON array; which one is decided by the first
/// non-blank byte (`[` means array).
pub struct RecordReader<R> {
    input: R,
    max_record_bytes: usize,
    mode: Option<Mode>,
    line: u64,
    finished: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Ndjson,
    /// Inside the top-level array; `expect_more` is false once `]` was seen.
    Array {
        closed: bool,
    },
}

impl<R: BufRead> RecordReader<R> {
    /// Wraps `input`; a record longer than `max_record_bytes` is rejected.
    pub fn new(input: R, max_record_bytes: usize) -> Self {
        RecordReader {
            input,
            max_record_bytes,
            mode: None,
            line: 1,
            finished: false,
        }
    }

    /// Whether the input turned out to be a JSON array.
    pub fn is_array(&self) -> bool {
        matches!(self.mode, Some(Mode::Array { .. }))
    }

    /// The next record, `Ok(None)` at the end of the input, or an I/O error that ends
    /// the read.
    pub fn next_record(&mut self) -> io::Result<Option<RawRecord>> {
        if self.finished {
            return Ok(None);
        }
        if self.mode.is_none() {
            self.skip_bom()?;
            self.skip_blank()?;
            match self.peek()? {
                None => {
                    self.finished = true;
                    return Ok(None);
                }
                Some(b'[') => {
                    self.input.consume(1);
                    self.mode = Some(Mode::Array { closed: false });
                }
                Some(_) => self.mode = Some(Mode::Ndjson),
            }
        }
        match self.mode {
            Some(Mode::Ndjson) => self.next_line(),
            Some(Mode::Array { closed }) => self.next_element(closed),
            None => unreachable!("mode is set above"),
        }
    }

    fn peek(&mut self) -> io::Result<Option<u8>> {
        let buf = self.input.fill_buf()?;
        Ok(buf.first().copied())
    }

    fn skip_bom(&mut self) -> io::Result<()> {
        let buf = self.input.fill_buf()?;
        if buf.starts_with(&[0xEF, 0xBB, 0xBF]) {
            self.input.consume(3);
        }
        Ok(())
    }

    /// Skips whitespace, counting newlines.
    fn skip_blank(&mut self) -> io::Result<()> {
        loop {
            let buf = self.input.fill_buf()?;
            if buf.is_empty() {
                return Ok(());
            }
            let mut n = 0;
            for &b in buf {
                match b {
                    b'\n' => {
                        self.line += 1;
                        n += 1;
                    }
                    b' ' | b'\t' | b'\r' => n += 1,
                    _ => break,
                }
            }
            let all = n == buf.len();
            self.input.consume(n);
            if !all {
                return Ok(());
            }
        }
    }

    fn next_line(&mut self) -> io::Result<Option<RawRecord>> {
        loop {
            let start_line = self.line;
            let mut body = Vec::new();
            let mut too_long = false;
            let mut total: usize = 0;
            let mut saw_any = false;
            loop {
                let buf = self.input.fill_buf()?;
                if buf.is_empty() {
                    break;
                }
                saw_any = true;
                let (chunk, found_newline) = match memchr::memchr(b'\n', buf) {
                    Some(i) => (&buf[..i], true),
                    None => (buf, false),
                };
                total += chunk.len();
                if !too_long {
                    if total > self.max_record_bytes {
                        too_long = true;
                        body = Vec::new();
                    } else {
                        body.extend_from_slice(chunk);
                    }
                }
                let consumed = chunk.len() + usize::from(found_newline);
                self.input.consume(consumed);
                if found_newline {
                    self.line += 1;
                    break;
                }
            }
            if !saw_any {
                self.finished = true;
                return Ok(None);
            }
            if too_long {
                return Ok(Some(RawRecord {
                    line: start_line,
                    body: Err(format!(
                        "line is {total} bytes, over the limit of {} bytes per record",
                        self.max_record_bytes
                    )),
                }));
            }
            if body.last() == Some(&b'\r') {
                body.pop();
            }
            if body.iter().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            return Ok(Some(RawRecord {
                line: start_line,
                body: Ok(body),
            }));
        }
    }

    /// Reads one element of the top-level array by tracking string and nesting state,
    /// so elements are handed out one at a time however large the array is.
    fn next_element(&mut self, closed: bool) -> io::Result<Option<RawRecord>> {
        self.skip_blank()?;
        if closed {
            return match self.peek()? {
                None => {
                    self.finished = true;
                    Ok(None)
                }
                Some(_) => {
                    self.finished = true;
                    Ok(Some(RawRecord {
                        line: self.line,
                        body: Err("unexpected content after the closing `]` of the JSON array"
                            .to_string()),
                    }))
                }
            };
        }
        match self.peek()? {
            None => {
                self.finished = true;
                return Ok(Some(RawRecord {
                    line: self.line,
                    body: Err("truncated input: the JSON array has no closing `]`".to_string()),
                }));
            }
            Some(b']') => {
                self.input.consume(1);
                self.mode = Some(Mode::Array { closed: true });
                return self.next_element(true);
            }
            Some(b',') => {
                self.input.consume(1);
                self.skip_blank()?;
            }
            Some(_) => {}
        }
        let start_line = self.line;
        let mut body = Vec::new();
        let mut too_long = false;
        let mut total = 0usize;
        let mut depth = 0i64;
        let mut in_string = false;
        let mut escaped = false;
        loop {
            let buf = self.input.fill_buf()?;
            if buf.is_empty() {
                if depth == 0 && !in_string && total > 0 {
                    // A complete element; the missing `]` is reported next.
                    break;
                }
                self.finished = true;
                return Ok(Some(RawRecord {
                    line: start_line,
                    body: Err(
                        "truncated input: the record ends before its JSON is complete".to_string(),
                    ),
                }));
            }
            let mut end = None;
            for (i, &b) in buf.iter().enumerate() {
                if b == b'\n' {
                    self.line += 1;
                }
                if in_string {
                    if escaped {
                        escaped = false;
                    } else if b == b'\\' {
                        escaped = true;
                    } else if b == b'"' {
                        in_string = false;
                    }
                    continue;
                }
                match b {
                    b'"' => in_string = true,
                    b'{' | b'[' => depth += 1,
                    b']' if depth == 0 => {
                        // The `]` closing the whole array ends the last element.
                        end = Some((i, false));
                        break;
                    }
                    // A stray `}` at the top is part of this (invalid) element: it
                    // must be consumed, or the next call would stop at it again.
                    b'}' if depth == 0 => {}
                    b'}' | b']' => depth -= 1,
                    b',' if depth == 0 => {
                        end = Some((i, false));
                        break;
                    }
                    _ => {}
                }
            }
            let (take, consume) = match end {
                Some((i, _)) => (i, i),
                None => (buf.len(), buf.len()),
            };
            total += take;
            if !too_long {
                if total > self.max_record_bytes {
                    too_long = true;
                    body = Vec::new();
                } else {
                    body.extend_from_slice(&buf[..take]);
                }
            }
            self.input.consume(consume);
            if end.is_some() {
                break;
            }
        }
        if too_long {
            return Ok(Some(RawRecord {
                line: start_line,
                body: Err(format!(
                    "record is {total} bytes, over the limit of {} bytes per record",
                    self.max_record_bytes
                )),
            }));
        }
        while body.last().is_some_and(|b| b.is_ascii_whitespace()) {
            body.pop();
        }
        if body.is_empty() {
            return Ok(Some(RawRecord {
                line: start_line,
                body: Err("empty element in the JSON array".to_string()),
            }));
        }
        Ok(Some(RawRecord {
            line: start_line,
            body: Ok(body),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the property test `any_bytes_are_stored_or_rejected_with_a_line`: a
    /// `}` at the top of an array was never consumed, and the reader reported the
    /// same empty element forever (until memory ran out).
    #[test]
    fn a_stray_closing_brace_in_an_array_is_one_bad_element() {
        for input in ["[}", "[1}2]", "[{\"a\":1}},{}]", "[}\n}\n"] {
            let mut r = RecordReader::new(input.as_bytes(), 1 << 20);
            let mut n = 0;
            while let Some(rec) = r.next_record().unwrap() {
                n += 1;
                assert!(n < 10, "{input:?}: the reader does not advance ({rec:?})");
            }
        }
        let got = records("[1}2,{}]", 1 << 20);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].1, Ok("1}2".to_string()));
    }

    fn records(input: &str, max: usize) -> Vec<(u64, Result<String, String>)> {
        let mut r = RecordReader::new(input.as_bytes(), max);
        let mut out = Vec::new();
        while let Some(rec) = r.next_record().unwrap() {
            out.push((rec.line, rec.body.map(|b| String::from_utf8(b).unwrap())));
        }
        out
    }

    #[test]
    fn ndjson_lines_keep_their_numbers_and_skip_blanks() {
        let got = records("{\"a\":1}\n\n  \n{\"b\":2}\r\n{\"c\":3}", 100);
        assert_eq!(
            got,
            vec![
                (1, Ok("{\"a\":1}".into())),
                (4, Ok("{\"b\":2}".into())),
                (5, Ok("{\"c\":3}".into()))
            ]
        );
    }

    #[test]
    fn overlong_line_is_an_error_and_the_next_line_still_reads() {
        let long = format!("{{\"x\":\"{}\"}}", "a".repeat(50));
        let got = records(&format!("{long}\n{{\"ok\":1}}\n"), 20);
        assert_eq!(got.len(), 2);
        assert!(
            got[0]
                .1
                .as_ref()
                .unwrap_err()
                .contains("over the limit of 20 bytes")
        );
        assert_eq!(got[1], (2, Ok("{\"ok\":1}".into())));
    }

    #[test]
    fn array_elements_with_nested_brackets_and_strings() {
        let got = records("[\n {\"a\":\"],{\\\"\"},\n {\"b\":[1,{\"c\":2}]}\n]\n", 100);
        assert_eq!(
            got,
            vec![
                (2, Ok("{\"a\":\"],{\\\"\"}".into())),
                (3, Ok("{\"b\":[1,{\"c\":2}]}".into()))
            ]
        );
    }

    #[test]
    fn truncated_array_reports_the_cut_record() {
        let got = records("[{\"a\":1},\n{\"b\":", 100);
        assert_eq!(got[0], (1, Ok("{\"a\":1}".into())));
        assert_eq!(got[1].0, 2);
        assert!(got[1].1.as_ref().unwrap_err().contains("truncated"));
    }

    #[test]
    fn array_without_closing_bracket_is_reported() {
        let got = records("[{\"a\":1}", 100);
        assert_eq!(got.len(), 2);
        assert!(got[1].1.as_ref().unwrap_err().contains("no closing"));
    }

    #[test]
    fn empty_and_blank_inputs_have_no_records() {
        assert!(records("", 10).is_empty());
        assert!(records("\n \n", 10).is_empty());
        assert!(records("[]", 10).is_empty());
    }
}
