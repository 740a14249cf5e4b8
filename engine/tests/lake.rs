//! Lake-level tests: file layout invariants, the shape of export plans, time travel
//! across compaction.

use std::sync::Arc;

use chrono::{NaiveDate, TimeZone, Utc};
use deltalake::datafusion::physical_plan::displayable;
use evidex_engine::clock::FixedClock;
use evidex_engine::export::{PinnedTables, ScopedQueries, event_columns};
use evidex_engine::generate::{GenerateSpec, generate_day, rows_per_day};
use evidex_engine::lake::{Lake, LakeOptions};
use evidex_engine::model::Dataset;
use evidex_engine::rows::Row;
use evidex_engine::scope::{ExportScope, Filters};
use futures::TryStreamExt;

fn lake(dir: &std::path::Path) -> Lake {
    let clock = Arc::new(FixedClock(
        Utc.with_ymd_and_hms(2026, 4, 1, 0, 0, 0).unwrap(),
    ));
    Lake::open(
        &LakeOptions {
            data_url: dir.to_str().unwrap().to_string(),
            ..Default::default()
        },
        clock,
    )
    .unwrap()
}

fn events(rows: u64, days: u32) -> Vec<Row> {
    let spec = GenerateSpec {
        rows,
        days,
        end: NaiveDate::from_ymd_opt(2026, 3, 10).unwrap(),
        seed: 3,
    };
    let mut out = Vec::new();
    let mut first = 0;
    for (i, (d, n)) in rows_per_day(&spec).into_iter().enumerate() {
        out.extend(generate_day(&spec, i as u32, d, n, first).events);
        first += n;
    }
    out
}

/// The distinct (UTC date, decision) pairs of `rows`: one data file each per append.
fn date_decision_pairs(rows: &[Row]) -> std::collections::HashSet<(NaiveDate, String)> {
    rows.iter()
        .map(|r| {
            (
                evidex_engine::rows::utc_date(r.ts(1).unwrap()),
                r.str(2).unwrap().to_string(),
            )
        })
        .collect()
}

async fn ids(lake: &Lake, pinned: &PinnedTables, scope: &ExportScope) -> Vec<String> {
    let q = ScopedQueries::new(lake, pinned, scope);
    let df = q.events_ordered(&["id", "timestamp"]).unwrap();
    let batches: Vec<_> = df
        .execute_stream()
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let mut out = Vec::new();
    for b in batches {
        let col = b
            .column(0)
            .as_any()
            .downcast_ref::<deltalake::arrow::array::StringArray>()
            .unwrap();
        out.extend(col.iter().map(|s| s.unwrap().to_string()));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_exports_merge_sorted_files_instead_of_sorting() {
    let dir = tempfile::tempdir().unwrap();
    let lake = lake(dir.path());
    let all = events(6_000, 6);
    // Three appends, each covering every day: three files per date partition.
    for k in 0..3 {
        let chunk: Vec<Row> = all.iter().skip(k).step_by(3).cloned().collect();
        lake.append(Dataset::Events, chunk).await.unwrap();
    }
    let snap = lake.snapshot(Dataset::Events, None).await.unwrap();
    // One file per (date, decision) per append, each knowing its decision and its
    // rows per severity.
    let combos = date_decision_pairs(&all);
    assert_eq!(snap.files.len(), 3 * combos.len());
    for f in &snap.files {
        assert!(f.bounds.is_some() && f.rows > 0);
        assert!(f.cluster.is_some());
        assert_eq!(f.counts.as_ref().unwrap().values().sum::<u64>(), f.rows);
    }

    let scope = ExportScope::new("2026-03-05", "2026-03-09", "UTC", Filters::default()).unwrap();
    let pinned = PinnedTables::pin(&lake, None).await.unwrap();
    // With every redaction rule on: redaction is a projection inside each sorted
    // partition and must not cost the merge.
    let redactor = std::sync::Arc::new(
        evidex_engine::redact::RedactionRules::default()
            .compile()
            .unwrap(),
    );
    let q = ScopedQueries::new(&lake, &pinned, &scope).with_redaction(redactor, true);
    let df = q.events_ordered(&event_columns(true)).unwrap();
    let plan = df.create_physical_plan().await.unwrap();
    let text = displayable(plan.as_ref()).indent(true).to_string();
    if std::env::var_os("EVIDEX_SHOW_PLAN").is_some() {
        eprintln!("{text}");
    }
    assert!(
        !text.contains("SortExec"),
        "export plan sorts instead of merging:\n{text}"
    );
    assert!(text.contains("SortPreservingMergeExec"), "{text}");
    assert!(text.contains("evidex_redact_text"), "{text}");
    assert!(
        text.contains("predicate="),
        "filters are not pushed into the scan:\n{text}"
    );

    // And the merged order is the (timestamp, id) order of the source.
    let got = ids(&lake, &pinned, &scope).await;
    let mut want: Vec<(i64, String)> = all
        .iter()
        .filter_map(|r| {
            let t = r.ts(1).unwrap();
            (t >= scope.window.start && t < scope.window.end)
                .then(|| (t, r.str(0).unwrap().to_string()))
        })
        .collect();
    want.sort();
    assert_eq!(got, want.into_iter().map(|(_, id)| id).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_keeps_old_versions_readable_and_rows_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let lake = lake(dir.path());
    let all = events(3_000, 3);
    for chunk in all.chunks(500) {
        lake.append(Dataset::Events, chunk.to_vec()).await.unwrap();
    }
    let scope = ExportScope::new("2026-03-08", "2026-03-10", "UTC", Filters::default()).unwrap();
    let before = PinnedTables::pin(&lake, None).await.unwrap();
    let ids_before = ids(&lake, &before, &scope).await;
    assert_eq!(ids_before.len(), 3_000);

    let outcome = lake.compact(Dataset::Events, 2).await.unwrap();
    let combos = date_decision_pairs(&all);
    assert_eq!(outcome.partitions, combos.len());
    let after = PinnedTables::pin(&lake, None).await.unwrap();
    assert_eq!(after.snapshots[&Dataset::Events].files.len(), combos.len());
    assert!(after.versions()[&Dataset::Events] > before.versions()[&Dataset::Events]);
    assert_eq!(ids(&lake, &after, &scope).await, ids_before);

    // The version read before compaction still reads the same rows.
    let pinned_old = PinnedTables::pin(&lake, Some(&before.versions()))
        .await
        .unwrap();
    assert_eq!(
        pinned_old.snapshots[&Dataset::Events].files.len(),
        before.snapshots[&Dataset::Events].files.len()
    );
    assert_eq!(ids(&lake, &pinned_old, &scope).await, ids_before);

    // Re-appending the same rows adds nothing.
    let again = lake
        .append(Dataset::Events, all[..1000].to_vec())
        .await
        .unwrap();
    assert_eq!((again.written, again.duplicates), (0, 1000));
}
