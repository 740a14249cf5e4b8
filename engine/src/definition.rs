//! SQL export definitions: one read-only query over the scope's views, checked
//! before it is planned; and the built-in presets (the `.sql` files in `queries/`).
//!
//! The views (`events`, `escalations`, `config_versions`, `audit_log`) are the only
//! tables in the session a definition runs in, and each is already restricted to the
//! export's window, filters and redaction (see `views`). The checks here
//! refuse everything that is not a query, with the statement or name at fault and its
//! position; DataFusion's own SQL options refuse DDL, DML and statements again.

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::path::Path;

use deltalake::datafusion::sql::parser::{DFParser, Statement as DfStatement};
use deltalake::datafusion::sql::sqlparser::ast::{
    ObjectName, ObjectNamePart, Query, Select, SetExpr, Spanned, Statement, TableFactor, Visit,
    Visitor,
};
use deltalake::datafusion::sql::sqlparser::dialect::GenericDialect;
use deltalake::datafusion::sql::sqlparser::keywords::Keyword;
use deltalake::datafusion::sql::sqlparser::tokenizer::{Location, Token, Tokenizer};
use serde::Serialize;

use crate::error::{EngineError, Result};
use crate::format::Format;

/// The views a definition reads.
pub const VIEWS: [&str; 4] = ["events", "escalations", "config_versions", "audit_log"];

/// Table functions a definition may call: they generate rows, they read nothing.
const ALLOWED_TABLE_FUNCTIONS: [&str; 2] = ["generate_series", "range"];

/// Longest definition accepted, in bytes.
pub const MAX_SQL_BYTES: usize = 64 * 1024;

/// A named export definition.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Definition {
    /// Name (`policy-violations`); what `--preset` takes.
    pub name: String,
    /// One line saying what it exports.
    pub description: String,
    /// Format used when the export does not name one.
    pub format: Format,
    /// The query.
    pub sql: String,
    /// Where it came from (`queries/policy-violations.sql`, `--sql report.sql`).
    pub source: String,
}

/// What the checks learned about a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqlShape {
    /// The query orders its result itself (a top-level `ORDER BY`).
    pub ordered: bool,
}

fn at(loc: Location) -> String {
    if loc.line == 0 {
        String::new()
    } else {
        format!(" at line {}, column {}", loc.line, loc.column)
    }
}

fn refuse(msg: String) -> EngineError {
    EngineError::invalid(format!("sql: {msg}"))
}

/// Checks that `sql` is one `SELECT` / `WITH` query that reads only the views.
pub fn check_sql(sql: &str) -> Result<SqlShape> {
    if sql.trim().is_empty() {
        return Err(refuse("the definition is empty".into()));
    }
    if sql.len() > MAX_SQL_BYTES {
        return Err(refuse(format!(
            "the definition is {} bytes; the limit is {MAX_SQL_BYTES}",
            sql.len()
        )));
    }
    let dialect = GenericDialect {};
    let tokens = Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .map_err(|e| refuse(format!("syntax error: {e}")))?;
    // Split on `;` (string literals are single tokens, so this is exact).
    let mut statements: Vec<Vec<usize>> = vec![Vec::new()];
    for (i, t) in tokens.iter().enumerate() {
        match &t.token {
            Token::SemiColon => statements.push(Vec::new()),
            Token::Whitespace(_) => {}
            _ => statements.last_mut().expect("never empty").push(i),
        }
    }
    statements.retain(|s| !s.is_empty());
    let Some(first) = statements.first() else {
        return Err(refuse("the definition holds only comments".into()));
    };
    if let Some(second) = statements.get(1) {
        let t = &tokens[second[0]];
        return Err(refuse(format!(
            "a definition is one query, but a second statement starts{}",
            at(t.span.start)
        )));
    }
    let head = &tokens[first[0]];
    let is_query = match &head.token {
        Token::Word(w) => matches!(w.keyword, Keyword::SELECT | Keyword::WITH),
        Token::LParen => true,
        _ => false,
    };
    if !is_query {
        // Name the statement by its leading keywords: `CREATE EXTERNAL TABLE`, `COPY`.
        let mut words = Vec::new();
        for &i in first.iter().take(4) {
            match &tokens[i].token {
                Token::Word(w) if matches!(w.keyword, Keyword::SELECT | Keyword::WITH) => break,
                Token::Word(w) if w.keyword != Keyword::NoKeyword || words.is_empty() => {
                    words.push(w.value.to_ascii_uppercase());
                    // The object kind ends the name: `CREATE EXTERNAL TABLE`, `DELETE FROM`.
                    if matches!(
                        w.keyword,
                        Keyword::TABLE
                            | Keyword::VIEW
                            | Keyword::INDEX
                            | Keyword::FUNCTION
                            | Keyword::SCHEMA
                            | Keyword::DATABASE
                            | Keyword::INTO
                            | Keyword::FROM
                    ) {
                        break;
                    }
                }
                _ => break,
            }
        }
        let what = if words.is_empty() {
            format!("{:?}", head.token.to_string())
        } else {
            words.join(" ")
        };
        return Err(refuse(format!(
            "{what} is not allowed{}: a definition is one SELECT or WITH query over {}",
            at(head.span.start),
            VIEWS.join(", ")
        )));
    }
    let parsed = DFParser::parse_sql_with_dialect(sql, &dialect)
        .map_err(|e| refuse(format!("syntax error: {}", strip_df(&e.to_string()))))?;
    let query = match parsed.into_iter().next() {
        Some(DfStatement::Statement(s)) => match *s {
            Statement::Query(q) => q,
            other => {
                return Err(refuse(format!(
                    "only a query is allowed, not this statement{}",
                    at(other.span().start)
                )));
            }
        },
        _ => return Err(refuse("only a query is allowed".into())),
    };
    let mut checker = Checker {
        ctes: HashSet::new(),
    };
    if let ControlFlow::Break(e) = query.visit(&mut checker) {
        return Err(e);
    }
    Ok(SqlShape {
        ordered: query.order_by.is_some(),
    })
}

fn strip_df(msg: &str) -> &str {
    msg.trim_start_matches("SQL error: ")
        .trim_start_matches("ParserError(")
}

struct Checker {
    ctes: HashSet<String>,
}

fn ident_name(name: &ObjectName) -> Option<String> {
    match name.0.as_slice() {
        [ObjectNamePart::Identifier(id)] => Some(if id.quote_style.is_some() {
            id.value.clone()
        } else {
            id.value.to_lowercase()
        }),
        _ => None,
    }
}

impl Visitor for Checker {
    type Break = EngineError;

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<EngineError> {
        if let Some(with) = &query.with {
            for cte in &with.cte_tables {
                let id = &cte.alias.name;
                self.ctes.insert(if id.quote_style.is_some() {
                    id.value.clone()
                } else {
                    id.value.to_lowercase()
                });
            }
        }
        if let SetExpr::Insert(s) | SetExpr::Update(s) | SetExpr::Delete(s) | SetExpr::Merge(s) =
            query.body.as_ref()
        {
            return ControlFlow::Break(refuse(format!(
                "data changes are not allowed{}",
                at(s.span().start)
            )));
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_statement(&mut self, statement: &Statement) -> ControlFlow<EngineError> {
        ControlFlow::Break(refuse(format!(
            "statements inside a query are not allowed{}",
            at(statement.span().start)
        )))
    }

    fn pre_visit_select(&mut self, select: &Select) -> ControlFlow<EngineError> {
        if let Some(into) = &select.into {
            return ControlFlow::Break(refuse(format!(
                "SELECT INTO creates a table and is not allowed{}",
                at(into.name.span().start)
            )));
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<EngineError> {
        let refused = match factor {
            TableFactor::Table { name, args, .. } => {
                let simple = ident_name(name);
                if args.is_some() {
                    let allowed = simple
                        .as_deref()
                        .is_some_and(|n| ALLOWED_TABLE_FUNCTIONS.contains(&n));
                    (!allowed).then(|| {
                        format!(
                            "table function {name} is not allowed{} (definitions read only {}; generate_series and range are available)",
                            at(name.span().start),
                            VIEWS.join(", ")
                        )
                    })
                } else {
                    let known = simple
                        .as_deref()
                        .is_some_and(|n| VIEWS.contains(&n) || self.ctes.contains(n));
                    (!known).then(|| {
                        format!(
                            "unknown table {name}{}: definitions read only {}",
                            at(name.span().start),
                            VIEWS.join(", ")
                        )
                    })
                }
            }
            TableFactor::Derived { .. }
            | TableFactor::NestedJoin { .. }
            | TableFactor::UNNEST { .. }
            | TableFactor::Pivot { .. }
            | TableFactor::Unpivot { .. } => None,
            other => Some(format!(
                "this table expression is not allowed{}: definitions read only {}",
                at(other.span().start),
                VIEWS.join(", ")
            )),
        };
        match refused {
            Some(msg) => ControlFlow::Break(refuse(msg)),
            None => ControlFlow::Continue(()),
        }
    }
}

/// Parses a definition file: a header of `-- key: value` comment lines (`name`,
/// `description`, `format`) and the query. Errors name `source`.
pub fn parse_definition(source: &str, text: &str) -> Result<Definition> {
    let bad = |msg: String| EngineError::invalid(format!("{source}: {msg}"));
    let (mut name, mut description, mut format) = (None, None, None);
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some(comment) = line.strip_prefix("--") else {
            break;
        };
        let Some((key, value)) = comment.split_once(':') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim().to_string());
        let slot = match key {
            "name" => &mut name,
            "description" => &mut description,
            "format" => &mut format,
            _ if key.contains(' ') => continue,
            other => {
                return Err(bad(format!(
                    "line {}: unknown header key {other:?}; use name, description, format",
                    n + 1
                )));
            }
        };
        if slot.is_some() {
            return Err(bad(format!("line {}: {key} is given twice", n + 1)));
        }
        *slot = Some(value);
    }
    let name = name.ok_or_else(|| bad("the header has no `-- name:` line".into()))?;
    validate_name(&name).map_err(|e| bad(e.to_string()))?;
    let description =
        description.ok_or_else(|| bad("the header has no `-- description:` line".into()))?;
    if description.is_empty() {
        return Err(bad("description is empty".into()));
    }
    let format = format.ok_or_else(|| bad("the header has no `-- format:` line".into()))?;
    let format = Format::parse(&format).map_err(|e| bad(e.to_string()))?;
    check_sql(text).map_err(|e| bad(e.to_string()))?;
    Ok(Definition {
        name,
        description,
        format,
        sql: text.to_string(),
        source: source.to_string(),
    })
}

/// A definition name: 1–64 of lowercase letters, digits, `-`, `_`.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(EngineError::invalid(format!(
            "name {name:?}: use 1 to 64 lowercase letters, digits, - or _"
        )))
    }
}

include!(concat!(env!("OUT_DIR"), "/presets.rs"));

/// The built-in presets, in name order. They are checked when the engine is built
/// and by its tests; a broken one would be a bug in this repository.
pub fn builtin_presets() -> Vec<Definition> {
    let mut all: Vec<Definition> = PRESET_FILES
        .iter()
        .map(|(file, text)| {
            parse_definition(&format!("queries/{file}"), text)
                .unwrap_or_else(|e| panic!("built-in preset: {e}"))
        })
        .collect();
    all.sort_by(|a, b| a.name.cmp(&b.name));
    all
}

/// Loads the `.sql` files of `dir` (saved or customer presets); any malformed file
/// fails the load with its file name.
pub fn load_dir(dir: &Path) -> Result<Vec<Definition>> {
    let mut out: Vec<Definition> = Vec::new();
    let entries = std::fs::read_dir(dir)
        .map_err(|e| EngineError::Config(format!("presets directory {}: {e}", dir.display())))?;
    let mut paths: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| EngineError::Config(format!("{}: {e}", path.display())))?;
        let def = parse_definition(&path.display().to_string(), &text)
            .map_err(|e| EngineError::Config(e.to_string()))?;
        if let Some(prev) = out.iter().find(|d| d.name == def.name) {
            return Err(EngineError::Config(format!(
                "{}: preset name {:?} is already used by {}",
                path.display(),
                def.name,
                prev.source
            )));
        }
        out.push(def);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_over_views_pass() {
        for sql in [
            "SELECT * FROM events",
            "select policy, count(*) from events group by policy order by 2 desc",
            "WITH e AS (SELECT id FROM events) SELECT * FROM e JOIN escalations x ON x.event_id = e.id",
            "(SELECT id FROM events) UNION ALL (SELECT id FROM escalations)",
            "SELECT * FROM generate_series(1, 3)",
            "SELECT (SELECT count(*) FROM audit_log), * FROM config_versions -- trailing comment;",
            "SELECT 'a;b' AS s;",
        ] {
            check_sql(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        assert!(!check_sql("SELECT 1").unwrap().ordered);
        assert!(
            check_sql("SELECT id FROM events ORDER BY id")
                .unwrap()
                .ordered
        );
    }

    #[test]
    fn everything_else_is_refused_with_what_and_where() {
        let cases = [
            (
                "CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION '/etc'",
                "CREATE EXTERNAL TABLE is not allowed at line 1, column 1",
            ),
            ("COPY (SELECT 1) TO '/tmp/x.csv'", "COPY is not allowed"),
            (
                "SET datafusion.execution.batch_size = 1",
                "SET is not allowed",
            ),
            (
                "INSERT INTO events VALUES (1)",
                "INSERT INTO is not allowed",
            ),
            ("DROP TABLE events", "DROP TABLE is not allowed"),
            (
                "  \n  DELETE FROM events",
                "DELETE FROM is not allowed at line 2, column 3",
            ),
            ("EXPLAIN SELECT 1", "EXPLAIN is not allowed"),
            (
                "SELECT 1; DROP TABLE events",
                "second statement starts at line 1, column 11",
            ),
            (
                "SELECT 1;\nSELECT 2",
                "second statement starts at line 2, column 1",
            ),
            (
                "SELECT * FROM read_parquet('/etc/passwd')",
                "table function read_parquet is not allowed at line 1, column 15",
            ),
            ("SELECT * FROM '/etc/passwd'", "unknown table"),
            (
                "SELECT * FROM lake_events",
                "unknown table lake_events at line 1, column 15",
            ),
            (
                "SELECT * FROM datafusion.public.events",
                "unknown table datafusion.public.events",
            ),
            (
                "SELECT * FROM events e JOIN information_schema.tables t ON true",
                "unknown table information_schema.tables",
            ),
            ("SELECT * INTO copy FROM events", "SELECT INTO"),
            (
                "SELECT * FROM (SELECT * FROM secret)",
                "unknown table secret",
            ),
            ("", "empty"),
            ("-- only a comment", "only comments"),
            ("SELECT FROM WHERE (", "syntax error"),
        ];
        let mut wrong = Vec::new();
        for (sql, want) in cases {
            match check_sql(sql) {
                Ok(_) => wrong.push(format!("{sql}: accepted")),
                Err(e) => {
                    let e = e.to_string();
                    if !e.starts_with("sql: ") || !e.contains(want) {
                        wrong.push(format!("{sql}: got {e:?}, want {want:?}"));
                    }
                }
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn definition_files_need_a_full_header() {
        let ok = "-- name: x\n-- description: d\n-- format: csv\nSELECT 1";
        let d = parse_definition("queries/x.sql", ok).unwrap();
        assert_eq!((d.name.as_str(), d.format), ("x", Format::Csv));
        for (text, want) in [
            (
                "-- description: d\n-- format: csv\nSELECT 1",
                "no `-- name:`",
            ),
            (
                "-- name: x\n-- format: csv\nSELECT 1",
                "no `-- description:`",
            ),
            ("-- name: x\n-- description: d\nSELECT 1", "no `-- format:`"),
            (
                "-- name: x\n-- description: d\n-- format: xlsx\nSELECT 1",
                "unknown format",
            ),
            (
                "-- name: X Y\n-- description: d\n-- format: csv\nSELECT 1",
                "lowercase",
            ),
            (
                "-- name: x\n-- description: d\n-- format: csv\n-- colour: red\nSELECT 1",
                "unknown header key",
            ),
            (
                "-- name: x\n-- description: d\n-- format: csv\nDROP TABLE events",
                "DROP TABLE",
            ),
        ] {
            let e = parse_definition("queries/bad.sql", text)
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("queries/bad.sql: "), "{e}");
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn builtin_presets_load() {
        let all = builtin_presets();
        let names: Vec<&str> = all.iter().map(|d| d.name.as_str()).collect();
        for want in [
            "decision-events",
            "policy-violations",
            "escalations",
            "config-changes",
            "daily-summary",
            "export-activity",
        ] {
            assert!(names.contains(&want), "{names:?}");
        }
    }

    #[test]
    fn a_bad_file_in_a_presets_directory_fails_the_load_by_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("good.sql"),
            "-- name: good\n-- description: d\n-- format: csv\nSELECT 1",
        )
        .unwrap();
        assert_eq!(load_dir(dir.path()).unwrap().len(), 1);
        std::fs::write(dir.path().join("broken.sql"), "-- name: b\nSELECT 1").unwrap();
        let e = load_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("broken.sql"), "{e}");
    }
}
