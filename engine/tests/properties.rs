//! Property tests (proptest): generated input against the ingest reader and
//! validator, the SQL definition checker, the scope parser and the CSV encoder.
//!
//! The default run tries 64 cases per property; `scripts/properties.sh` runs each
//! for minutes (`PROPTEST_CASES`). A failure proptest finds is saved under
//! `proptest-regressions/` and replayed first on every later run: commit it.

use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDate, TimeZone};
use chrono_tz::Tz;
use deltalake::arrow::array::{ArrayRef, StringArray};
use deltalake::arrow::datatypes::{DataType, Field, Schema};
use deltalake::arrow::record_batch::RecordBatch;
use evidex_engine::definition::{VIEWS, check_sql};
use evidex_engine::export::encode::{EncodeOptions, EncodedBatch, Format, encoder};
use evidex_engine::ingest::parse_body;
use evidex_engine::model::Dataset;
use evidex_engine::rows::Cell;
use evidex_engine::scope::{ExportScope, Filters};
use proptest::prelude::*;
use serde_json::{Value, json};

/// 64 cases unless `PROPTEST_CASES` asks for more (the long run).
fn config() -> ProptestConfig {
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = 64;
    }
    c
}

// ---------------------------------------------------------------- ingest

/// Any JSON value, a few levels deep, with any text in strings and keys.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A decision event every gateway could send: required fields valid, free text
/// (`input`, `user_id`, `reason_code`) anything at all.
fn valid_event() -> impl Strategy<Value = (Value, i64)> {
    (
        "[A-Za-z0-9_-]{1,24}",
        // 1971..2100, whole microseconds, any UTC offset in whole minutes.
        (
            31_536_000_000_000i64..4_102_444_800_000_000,
            -1439i32..=1439,
        ),
        prop::sample::select(vec![
            "allow", "block", "blocked", "redact", "escalate", "flag",
        ]),
        prop::sample::select(vec!["info", "low", "medium", "high", "critical"]),
        "[a-z][a-z0-9-]{0,12}",
        any::<String>(),
        any::<String>(),
        any::<String>(),
    )
        .prop_map(
            |(id, (micros, offset_min), decision, severity, policy, input, user, reason)| {
                let offset = chrono::FixedOffset::east_opt(offset_min * 60).unwrap();
                let t = DateTime::from_timestamp_micros(micros)
                    .unwrap()
                    .with_timezone(&offset);
                let v = json!({
                    "id": id,
                    "timestamp": t.to_rfc3339_opts(chrono::SecondsFormat::Micros, false),
                    "decision": decision,
                    "severity": severity,
                    "policy": policy,
                    "gateway_id": "gw",
                    "consumer_group": "cg",
                    "input": input,
                    "user_id": user,
                    "reason_code": reason,
                });
                (v, micros)
            },
        )
}

/// One NDJSON line of a generated body: a valid event (must be stored, exactly as
/// sent), any other JSON value (stored or rejected), or arbitrary text.
#[derive(Debug, Clone)]
enum Line {
    Event(Value, i64),
    Json(Value),
    Text(String),
}

fn line() -> impl Strategy<Value = Line> {
    prop_oneof![
        3 => valid_event().prop_map(|(v, t)| Line::Event(v, t)),
        2 => json_value().prop_map(Line::Json),
        1 => "[^\n]{1,40}".prop_map(Line::Text),
    ]
}

fn column(name: &str) -> usize {
    Dataset::Events.column_index(name).unwrap()
}

proptest! {
    #![proptest_config(config())]

    /// Arbitrary bytes never panic the reader or the validator, and every record
    /// seen is either stored or rejected with a line number inside the input.
    #[test]
    fn any_bytes_are_stored_or_rejected_with_a_line(body in prop::collection::vec(any::<u8>(), 0..2048)) {
        let lines = body.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
        if let Ok(parsed) = parse_body(Dataset::Events, &body, 1 << 20) {
            prop_assert_eq!(parsed.seen, (parsed.rows.len() + parsed.rejected.len()) as u64);
            let mut last = 0;
            for r in &parsed.rejected {
                prop_assert!(r.line >= 1 && r.line <= lines, "line {} of {}", r.line, lines);
                prop_assert!(r.line >= last, "rejections out of order");
                prop_assert!(!r.message.is_empty());
                last = r.line;
            }
        }
    }

    /// Arbitrary JSON text per line: each line is one record, stored or rejected
    /// with its own line number; valid events are always stored, with their text
    /// and timestamp exactly as sent; a value that is not an object is rejected.
    #[test]
    fn every_json_line_is_stored_or_rejected_by_number(
        (first, first_ts) in valid_event(),
        more in prop::collection::vec(line(), 0..12),
    ) {
        // The first line is an event, so the body is NDJSON (a `[` first would make
        // it one JSON array).
        let mut lines = vec![Line::Event(first, first_ts)];
        lines.extend(more);
        let body: String = lines
            .iter()
            .map(|l| match l {
                Line::Event(v, _) | Line::Json(v) => v.to_string(),
                Line::Text(t) => t.clone(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        let parsed = parse_body(Dataset::Events, body.as_bytes(), 1 << 20).unwrap();
        let rejected: Vec<u64> = parsed.rejected.iter().map(|r| r.line).collect();
        let mut stored = parsed.rows.iter();
        for (i, l) in lines.iter().enumerate() {
            let n = i as u64 + 1;
            let is_rejected = rejected.contains(&n);
            match l {
                Line::Text(t) if t.trim().is_empty() => continue,
                Line::Event(v, micros) => {
                    prop_assert!(!is_rejected, "valid event on line {n} rejected: {:?}", parsed.rejected);
                    let row = stored.next().unwrap();
                    prop_assert_eq!(&row.cells[column("timestamp")], &Cell::Ts(*micros));
                    for f in ["id", "input", "user_id", "reason_code"] {
                        let want = v[f].as_str().unwrap();
                        // An empty optional text is stored as given, never dropped.
                        prop_assert_eq!(&row.cells[column(f)], &Cell::Str(want.to_string()), "{}", f);
                    }
                }
                Line::Json(v) if !v.is_object() => {
                    prop_assert!(is_rejected, "line {n} ({v}) is not an object but was stored");
                }
                _ => {
                    if !is_rejected {
                        stored.next().unwrap();
                    }
                }
            }
        }
        prop_assert!(stored.next().is_none(), "more rows stored than lines accepted");
    }
}

// ---------------------------------------------------------------- SQL checker

fn ident() -> impl Strategy<Value = String> {
    "[a-z_][a-z0-9_]{0,10}"
}

/// A table name that is none of the views.
fn other_table() -> impl Strategy<Value = String> {
    prop_oneof![
        ident().prop_filter("not a view", |t| !VIEWS.contains(&t.as_str())),
        Just("information_schema.tables".to_string()),
        Just("information_schema.df_settings".to_string()),
        prop::sample::select(VIEWS.to_vec()).prop_map(|v| format!("datafusion.public.{v}")),
        prop::sample::select(VIEWS.to_vec()).prop_map(|v| format!("other.{v}")),
    ]
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("/etc/passwd".to_string()),
        "[a-z]{1,8}\\.(csv|parquet|json|avro|arrow)",
        "(s3|file|gs|http)://[a-z]{1,8}/[a-z]{1,8}\\.parquet",
        Just("../_state/metadata.sqlite".to_string()),
    ]
}

/// A query-shaped piece that reads something other than the views.
fn bad_source() -> impl Strategy<Value = String> {
    prop_oneof![
        other_table().prop_map(|t| format!("SELECT * FROM {t}")),
        path().prop_map(|p| format!("SELECT * FROM '{p}'")),
        (
            prop::sample::select(vec![
                "read_parquet",
                "read_csv",
                "read_json",
                "parquet_scan",
                "read_avro",
                "parquet_metadata",
            ]),
            path()
        )
            .prop_map(|(f, p)| format!("SELECT * FROM {f}('{p}')")),
        (ident(), path())
            .prop_filter("not an allowed table function", |(f, _)| {
                f != "generate_series" && f != "range"
            })
            .prop_map(|(f, p)| format!("SELECT * FROM {f}('{p}')")),
        (ident(), prop::sample::select(VIEWS.to_vec()))
            .prop_map(|(t, v)| format!("SELECT * INTO {t} FROM {v}")),
    ]
}

/// A statement that is not a query: writes, DDL, settings, file output.
fn not_a_query() -> impl Strategy<Value = String> {
    let table = prop_oneof![
        ident(),
        prop::sample::select(VIEWS.to_vec()).prop_map(String::from)
    ];
    (table, path(), 0usize..14).prop_map(|(t, p, k)| match k {
        0 => format!("INSERT INTO {t} VALUES (1)"),
        1 => format!("INSERT INTO {t} SELECT * FROM events"),
        2 => format!("UPDATE {t} SET id = 'x'"),
        3 => format!("DELETE FROM {t}"),
        4 => format!("CREATE TABLE {t} AS SELECT * FROM events"),
        5 => format!("CREATE EXTERNAL TABLE {t} STORED AS PARQUET LOCATION '{p}'"),
        6 => format!("CREATE VIEW {t} AS SELECT * FROM events"),
        7 => format!("DROP TABLE {t}"),
        8 => format!("COPY {t} TO '{p}'"),
        9 => format!("COPY (SELECT * FROM events) TO '{p}' STORED AS CSV"),
        10 => "SET datafusion.execution.batch_size = 1".to_string(),
        11 => format!("TRUNCATE TABLE {t}"),
        12 => format!("EXPLAIN ANALYZE COPY {t} TO '{p}'"),
        _ => format!("ALTER TABLE {t} ADD COLUMN x INT"),
    })
}

/// A refused piece in every position a query can hold one.
fn refused_sql() -> impl Strategy<Value = String> {
    let good = prop::sample::select(VIEWS.to_vec()).prop_map(|v| format!("SELECT * FROM {v}"));
    prop_oneof![
        not_a_query(),
        bad_source(),
        (good.clone(), not_a_query()).prop_map(|(g, b)| format!("{g}; {b}")),
        (good.clone(), bad_source()).prop_map(|(g, b)| format!("{g};\n{b};")),
        bad_source().prop_map(|b| format!("WITH x AS ({b}) SELECT * FROM x")),
        bad_source().prop_map(|b| format!("WITH events AS ({b}) SELECT * FROM events")),
        bad_source().prop_map(|b| format!("SELECT * FROM ({b}) AS s")),
        (good.clone(), bad_source()).prop_map(|(g, b)| format!("{g} UNION ALL {b}")),
        bad_source()
            .prop_map(|b| format!("SELECT * FROM events WHERE id IN (SELECT id FROM ({b}) AS s)")),
        bad_source()
            .prop_map(|b| format!("SELECT (SELECT count(*) FROM ({b}) AS s) AS n FROM events")),
        other_table().prop_map(|t| format!("SELECT e.id FROM events e JOIN {t} o ON e.id = o.id")),
        not_a_query().prop_map(|b| format!("/* a comment */ {b}")),
        not_a_query().prop_map(|b| format!("-- header\n{b}")),
    ]
}

/// A query over the views that must be accepted, with arbitrary text in its
/// string literal (quotes doubled, as SQL writes them).
fn accepted_sql() -> impl Strategy<Value = String> {
    (
        prop::sample::select(VIEWS.to_vec()),
        any::<String>().prop_filter("no NUL", |s| !s.contains('\0')),
        ident().prop_filter("not a view", |t| !VIEWS.contains(&t.as_str())),
        0usize..4,
        1u32..1000,
    )
        .prop_map(|(v, text, cte, k, n)| {
            let lit = text.replace('\'', "''");
            match k {
                0 => format!("SELECT * FROM {v} WHERE CAST(id AS VARCHAR) = '{lit}' LIMIT {n}"),
                1 => format!("WITH {cte} AS (SELECT * FROM {v}) SELECT count(*) AS n FROM {cte}"),
                2 => format!("SELECT '{lit}' AS label, count(*) AS n FROM {v}"),
                _ => format!("SELECT * FROM {v} UNION ALL SELECT * FROM {v}"),
            }
        })
}

/// Upper- or lower-cases the keywords and names of a statement (SQL is case
/// insensitive; the checker must not be).
fn recase(sql: String, upper: bool) -> String {
    if upper {
        sql.to_uppercase()
    } else {
        sql.to_lowercase()
    }
}

proptest! {
    #![proptest_config(config())]

    /// Nothing that writes, reads files or reads past the views is accepted,
    /// wherever in the statement it hides.
    #[test]
    fn the_checker_refuses_writes_files_and_other_tables(sql in refused_sql(), upper in any::<bool>()) {
        let sql = recase(sql, upper);
        let r = check_sql(&sql);
        prop_assert!(r.is_err(), "accepted: {sql}");
        let msg = r.unwrap_err().to_string();
        prop_assert!(msg.contains("sql:"), "{msg}");
    }

    /// Queries over the views pass, whatever their string literals hold.
    #[test]
    fn the_checker_accepts_queries_over_the_views(sql in accepted_sql()) {
        prop_assert!(check_sql(&sql).is_ok(), "refused: {sql}: {:?}", check_sql(&sql));
    }

    /// Arbitrary text never panics the checker.
    #[test]
    fn any_text_is_checked_without_panic(sql in any::<String>()) {
        let _ = check_sql(&sql);
    }
}

// ---------------------------------------------------------------- scope

fn timezone() -> impl Strategy<Value = Tz> {
    prop::sample::select(chrono_tz::TZ_VARIANTS.to_vec())
}

fn date() -> impl Strategy<Value = NaiveDate> {
    // 1972..2037: the tz database's modern rules.
    (0i64..(65 * 366))
        .prop_map(|d| NaiveDate::from_ymd_opt(1972, 1, 1).unwrap() + Duration::days(d))
}

fn local_date(micros: i64, tz: Tz) -> NaiveDate {
    DateTime::from_timestamp_micros(micros)
        .unwrap()
        .with_timezone(&tz)
        .date_naive()
}

/// Whether `day` has no local time at all in its first three hours (a whole day a
/// zone skipped, as Pacific/Apia did on 2011-12-30).
fn day_without_start(day: NaiveDate, tz: Tz) -> bool {
    (0..=180).step_by(15).all(|m| {
        tz.from_local_datetime(&(day.and_hms_opt(0, 0, 0).unwrap() + Duration::minutes(m)))
            .earliest()
            .is_none()
    })
}

proptest! {
    #![proptest_config(config())]

    /// Dates are whole local days: the window starts at the first instant of `from`
    /// in the zone and ends (exclusive) at the first instant of the day after `to`,
    /// across DST changes, in every IANA zone.
    #[test]
    fn date_windows_are_half_open_whole_local_days(tz in timezone(), from in date(), days in 0i64..40) {
        let to = from + Duration::days(days);
        let r = ExportScope::new(&from.to_string(), &to.to_string(), tz.name(), Filters::default());
        let scope = match r {
            Ok(s) => s,
            Err(e) => {
                prop_assert!(
                    day_without_start(from, tz) || day_without_start(to + Duration::days(1), tz),
                    "{from}..{to} in {tz}: {e}"
                );
                return Ok(());
            }
        };
        let w = scope.window;
        prop_assert!(w.start < w.end);
        // The first instant is on `from`, the one before it on an earlier day.
        prop_assert_eq!(local_date(w.start, tz), from);
        prop_assert!(local_date(w.start - 1, tz) < from);
        // The last instant inside is on `to`; the end itself is on a later day.
        prop_assert_eq!(local_date(w.end - 1, tz), to);
        prop_assert!(local_date(w.end, tz) > to);
        // Consecutive ranges tile the time line: no gap, no overlap.
        let next = to + Duration::days(1);
        if let Ok(after) = ExportScope::new(&next.to_string(), &next.to_string(), tz.name(), Filters::default()) {
            prop_assert_eq!(after.window.start, w.end);
        }
    }

    /// RFC 3339 bounds are the exact half-open window, whatever the zone.
    #[test]
    fn timestamp_bounds_are_exact(
        tz in timezone(),
        start in 0i64..4_000_000_000_000_000,
        len in 1i64..100_000_000_000,
        offset in -1439i32..=1439,
    ) {
        let o = chrono::FixedOffset::east_opt(offset * 60).unwrap();
        let fmt = |m: i64| DateTime::from_timestamp_micros(m).unwrap().with_timezone(&o)
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, false);
        let scope = ExportScope::new(&fmt(start), &fmt(start + len), tz.name(), Filters::default()).unwrap();
        prop_assert_eq!((scope.window.start, scope.window.end), (start, start + len));
        // A window that is empty or backwards is refused, naming `from`.
        let e = ExportScope::new(&fmt(start + len), &fmt(start), tz.name(), Filters::default()).unwrap_err();
        prop_assert!(e.to_string().contains("from"), "{e}");
    }

    /// A zone that is not an IANA name is refused, naming the field.
    #[test]
    fn unknown_timezones_are_refused(name in "[A-Za-z/_+-]{0,20}") {
        prop_assume!(name.parse::<Tz>().is_err());
        let e = ExportScope::new("2026-03-01", "2026-03-02", &name, Filters::default()).unwrap_err();
        prop_assert!(e.to_string().contains("timezone"), "{e}");
    }
}

// ---------------------------------------------------------------- CSV

fn cell_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        // Formula-looking text, with what importers trim in front of it.
        "[ \t\r\u{a0}\u{200b}\u{feff}]{0,2}[=+@-][ -~]{0,12}",
        // Numbers, which stay unguarded.
        "[+-]?([0-9]{1,6}(\\.[0-9]{0,3})?|\\.[0-9]{1,3})([eE][+-]?[0-9]{1,2})?",
        "[,\"\r\n ]{0,4}[a-z]{0,4}[,\"\r\n ]{0,4}",
        // Around the length where the encoder stops checking byte by byte (32).
        "[a-z ]{24,40}[,\"\r\n]?[a-z]{0,8}",
    ]
}

fn table() -> impl Strategy<Value = (usize, Vec<Vec<Option<String>>>)> {
    (1usize..4).prop_flat_map(|cols| {
        (
            Just(cols),
            prop::collection::vec(
                prop::collection::vec(prop::option::weighted(0.85, cell_text()), cols),
                0..16,
            ),
        )
    })
}

/// `-12`, `+3`, `-1.5`, `-.5`, `-1e5`: what the guard leaves alone.
fn is_plain_number(s: &str) -> bool {
    let re = regex::Regex::new(r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$").unwrap();
    re.is_match(s)
}

fn encode_csv(cols: usize, rows: &[Vec<Option<String>>], guard: bool) -> Vec<u8> {
    let fields: Vec<Field> = (0..cols)
        .map(|i| Field::new(format!("c{i}"), DataType::Utf8, true))
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let arrays: Vec<ArrayRef> = (0..cols)
        .map(|c| {
            Arc::new(StringArray::from(
                rows.iter().map(|r| r[c].clone()).collect::<Vec<_>>(),
            )) as ArrayRef
        })
        .collect();
    let batch = RecordBatch::try_new(schema.clone(), arrays).unwrap();
    let options = EncodeOptions {
        csv_formula_guard: guard,
        ..Default::default()
    };
    let mut enc = encoder(Format::Csv, None, schema, options).unwrap();
    let mut out = Vec::new();
    enc.begin(&mut out).unwrap();
    enc.batch(&EncodedBatch::new(batch).unwrap(), &mut out)
        .unwrap();
    enc.finish(&mut out).unwrap();
    out
}

proptest! {
    #![proptest_config(config())]

    /// Every value reads back through the `csv` crate's reader as written (a
    /// missing value and an empty string both read as empty; a guarded cell has its
    /// `'` in front), and with the guard on no cell a reader sees starts a formula.
    #[test]
    fn csv_round_trips_through_the_csv_crate((cols, rows) in table(), guard in any::<bool>()) {
        let bytes = encode_csv(cols, &rows, guard);
        let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(bytes.as_slice());
        let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
        prop_assert_eq!(header, (0..cols).map(|i| format!("c{i}")).collect::<Vec<_>>());
        let read: Vec<Vec<String>> = reader
            .records()
            .map(|r| r.unwrap().iter().map(String::from).collect())
            .collect();
        prop_assert_eq!(read.len(), rows.len(), "{}", String::from_utf8_lossy(&bytes));
        for (got_row, want_row) in read.iter().zip(&rows) {
            for (got, want) in got_row.iter().zip(want_row) {
                let want = want.as_deref().unwrap_or("");
                if guard && got.len() == want.len() + 1 && got.starts_with('\'') && &got[1..] == want {
                    // Guarded: the original follows the quote.
                } else {
                    prop_assert_eq!(got.as_str(), want);
                }
                if guard && !got.starts_with('\'') {
                    let first = got.chars().find(|c| !(c.is_whitespace() || c.is_control()));
                    let formula = got.starts_with(['\t', '\r'])
                        || first.is_some_and(|c| matches!(c, '=' | '+' | '-' | '@'));
                    prop_assert!(!formula || is_plain_number(got), "unguarded formula {got:?}");
                }
                if !guard {
                    prop_assert_eq!(got.as_str(), want);
                }
            }
        }
    }
}
