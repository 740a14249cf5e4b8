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
    lake.append(Dataset::Escalations, esc.clone())
        .await
        .unwrap();
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
    // Samples: for each decision, the first event of each of its days (3 days here),
    // in time order.
    let samples = data["samples"].as_array().unwrap();
    for (d, _) in [
        ("allow", 0),
        ("block", 0),
        ("redact", 0),
        ("escalate", 0),
        ("flag", 0),
    ] {
        let n = samples.iter().filter(|s| s["decision"] == d).count();
        let days = (4..=6)
            .filter(|day| {
                events.iter().any(|r| {
                    let t = r.ts(1).unwrap();
                    r.str(2) == Some(d)
                        && evidex_engine::rows::utc_date(t)
                            == NaiveDate::from_ymd_opt(2026, 3, *day).unwrap()
                })
            })
            .count();
        assert_eq!(n, days, "{d}");
    }
    let times: Vec<&str> = samples
        .iter()
        .map(|s| s["timestamp"].as_str().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");

    // Escalations, computed here from the generated rows: updates inside the window
    // whose event is in scope; each event's latest status; hours from the first
    // `open` to the last close.
    let in_scope: std::collections::HashSet<&str> = events
        .iter()
        .filter(|r| {
            let t = r.ts(1).unwrap();
            t >= scope.window.start && t < scope.window.end
        })
        .map(|r| r.str(0).unwrap())
        .collect();
    let mut per_event: std::collections::BTreeMap<&str, Vec<&Row>> = Default::default();
    for u in &esc {
        let at = u.ts(3).unwrap();
        if at >= scope.window.start && at < scope.window.end && in_scope.contains(u.str(1).unwrap())
        {
            per_event.entry(u.str(1).unwrap()).or_default().push(u);
        }
    }
    let mut by_status: std::collections::BTreeMap<String, u64> = Default::default();
    let mut hours: Vec<f64> = Vec::new();
    for updates in per_event.values_mut() {
        updates.sort_by_key(|u| (u.ts(3).unwrap(), u.str(0).unwrap().to_string()));
        *by_status
            .entry(updates.last().unwrap().str(2).unwrap().to_string())
            .or_default() += 1;
        let opened = updates
            .iter()
            .filter(|u| u.str(2) == Some("open"))
            .map(|u| u.ts(3).unwrap())
            .min();
        let closed = updates
            .iter()
            .filter(|u| matches!(u.str(2), Some("resolved" | "dismissed")))
            .map(|u| u.ts(3).unwrap())
            .max();
        if let (Some(o), Some(c)) = (opened, closed) {
            hours.push((c - o) as f64 / 3_600_000_000.0);
        }
    }
    hours.sort_by(f64::total_cmp);
    let e = &data["escalations"];
    assert!(!per_event.is_empty());
    assert_eq!(e["total"], per_event.len() as u64);
    for (status, n) in &by_status {
        assert_eq!(e["by_status"][status], *n, "{status}");
    }
    let nearest =
        |p: f64| (hours[((hours.len() - 1) as f64 * p).round() as usize] * 100.0).round() / 100.0;
    assert_eq!(e["median_hours_to_close"].as_f64().unwrap(), nearest(0.5));
    assert_eq!(e["p90_hours_to_close"].as_f64().unwrap(), nearest(0.9));
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
