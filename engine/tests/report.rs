//! The report's numbers come from the same scoped views as the exports: counts are
//! checked against the generated source rows, and the rendered PDF is read back.

use std::sync::Arc;

use chrono::{NaiveDate, TimeZone, Utc};
use evidex_engine::clock::FixedClock;
use evidex_engine::export::{PinnedTables, ScopedQueries};
use evidex_engine::generate::{GenerateSpec, generate_day, rows_per_day};
use evidex_engine::lake::{Lake, LakeOptions};
use evidex_engine::model::Dataset;
use evidex_engine::redact::RedactionRules;
use evidex_engine::rows::Row;
use evidex_engine::scope::{ExportScope, Filters};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_numbers_match_the_source_and_render() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(
        &LakeOptions {
            data_url: dir.path().to_str().unwrap().to_string(),
            ..Default::default()
        },
        Arc::new(FixedClock(
            Utc.with_ymd_and_hms(2026, 4, 1, 0, 0, 0).unwrap(),
        )),
    )
    .unwrap();
    let spec = GenerateSpec {
        rows: 6_000,
        days: 6,
        end: NaiveDate::from_ymd_opt(2026, 3, 6).unwrap(),
        seed: 9,
    };
    let (mut events, mut esc, mut cfg): (Vec<Row>, Vec<Row>, Vec<Row>) = Default::default();
    let mut first = 0;
    for (i, (d, n)) in rows_per_day(&spec).into_iter().enumerate() {
        let day = generate_day(&spec, i as u32, d, n, first);
        first += n;
        events.extend(day.events);
        esc.extend(day.escalations);
        cfg.extend(day.config_versions);
    }
    lake.append(Dataset::Events, events.clone()).await.unwrap();
    lake.append(Dataset::Escalations, esc).await.unwrap();
    lake.append(Dataset::ConfigVersions, cfg).await.unwrap();

    let scope = ExportScope::new("2026-03-04", "2026-03-06", "UTC", Filters::default()).unwrap();
    let prev = ExportScope::new("2026-03-01", "2026-03-03", "UTC", Filters::default()).unwrap();
    let pinned = PinnedTables::pin(&lake, None).await.unwrap();
    let redactor = Arc::new(RedactionRules::default().compile().unwrap());
    let q = ScopedQueries::new(&lake, &pinned, &scope).with_redaction(redactor.clone(), true);
    let p = ScopedQueries::new(&lake, &pinned, &prev).with_redaction(redactor, true);
    let data = evidex_engine::report::collect(&q, &p, 20).await.unwrap();

    let count = |s: &ExportScope, decision: &str| -> u64 {
        events
            .iter()
            .filter(|r| {
                let t = r.ts(1).unwrap();
                t >= s.window.start && t < s.window.end && r.str(2) == Some(decision)
            })
            .count() as u64
    };
    for row in data["summary"].as_array().unwrap() {
        let d = row["decision"].as_str().unwrap();
        assert_eq!(row["count"], count(&scope, d), "{d}");
        assert_eq!(row["previous"], count(&prev, d), "{d}");
    }
    let total: u64 = ["allow", "block", "redact", "escalate", "flag"]
        .iter()
        .map(|d| count(&scope, d))
        .sum();
    assert_eq!(data["totals"]["decisions"], total);
    let violations: u64 = data["breakdown"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["events"].as_u64().unwrap())
        .sum();
    assert_eq!(violations, total - count(&scope, "allow"));
    let daily: u64 = data["daily"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["events"].as_u64().unwrap())
        .sum();
    assert_eq!(daily, total);
    assert_eq!(data["samples"].as_array().unwrap().len(), 20);
    assert!(data["escalations"]["total"].as_u64().unwrap() > 0);
    // Samples are redacted like every export.
    assert!(!data["samples"].to_string().contains("PRIVATE KEY-----"));

    // Render with the cover fields and read the numbers back.
    let mut doc = data.clone();
    for (k, v) in [
        ("title", serde_json::json!("Report test")),
        (
            "period",
            serde_json::json!({"from": "2026-03-04", "to": "2026-03-06", "timezone": "UTC"}),
        ),
        ("filters", serde_json::json!("none")),
        ("export_id", serde_json::json!("exp_01REPORTTEST")),
        ("generated_at", serde_json::json!("2026-04-01T00:00:00Z")),
        ("event_ids_digest", serde_json::json!("0".repeat(64))),
    ] {
        doc[k] = v;
    }
    let pdf =
        evidex_engine::report::render_pdf(evidex_engine::report::EVIDENCE_TEMPLATE, &doc).unwrap();
    let path = dir.path().join("r.pdf");
    std::fs::write(&path, &pdf).unwrap();
    // To look at it: EVIDEX_REPORT_DUMP=/tmp/r.pdf, then pdftoppm.
    if let Some(p) = std::env::var_os("EVIDEX_REPORT_DUMP") {
        std::fs::write(p, &pdf).unwrap();
    }
    let out = std::process::Command::new("pdftotext")
        .args(["-layout", path.to_str().unwrap(), "-"])
        .output()
        .expect("pdftotext (poppler-utils) is installed");
    let text = String::from_utf8_lossy(&out.stdout);
    let blocked = count(&scope, "block").to_string();
    assert!(
        text.lines()
            .any(|l| l.contains("Blocked") && l.split_whitespace().any(|w| w == blocked)),
        "blocked count {blocked} not in:\n{text}"
    );
}
