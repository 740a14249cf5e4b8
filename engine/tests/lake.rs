//! Lake-level tests: file layout invariants, the shape of export plans, time travel
//! across compaction.

use std::sync::Arc;

use chrono::{NaiveDate, TimeZone, Utc};
use deltalake::datafusion::physical_plan::displayable;
use evidex_engine::clock::FixedClock;
use evidex_engine::export::{PinnedTables, ScopedQueries, event_columns};
use evidex_engine::generate::{GenerateSpec, generate_day, rows_per_day};
use evidex_engine::lake::{AppendOutcome, Lake, LakeOptions};
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
    // Every partition in one commit.
    assert_eq!(
        after.versions()[&Dataset::Events],
        before.versions()[&Dataset::Events].map(|v| v + 1)
    );
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

fn lake_with_index(dir: &std::path::Path, index: Option<std::path::PathBuf>) -> Lake {
    let clock = Arc::new(FixedClock(
        Utc.with_ymd_and_hms(2026, 4, 1, 0, 0, 0).unwrap(),
    ));
    Lake::open(
        &LakeOptions {
            data_url: dir.to_str().unwrap().to_string(),
            index_dir: index,
            ..Default::default()
        },
        clock,
    )
    .unwrap()
}

fn event_at(id: &str, ts: &str) -> Row {
    let body = format!(
        r#"{{"id":"{id}","timestamp":"{ts}","decision":"block","severity":"high",
        "policy":"p","gateway_id":"g","consumer_group":"c"}}"#
    );
    evidex_engine::ingest::validate::validate_record(Dataset::Events, body.as_bytes()).unwrap()
}

/// Appends events given as (id, RFC 3339 timestamp) pairs (see [`event_at`]).
async fn append_events(lake: &Lake, events: &[(&str, &str)]) -> AppendOutcome {
    let rows = events.iter().map(|(id, ts)| event_at(id, ts)).collect();
    lake.append(Dataset::Events, rows).await.unwrap()
}

async fn stored_ids(lake: &Lake) -> Vec<String> {
    let snapshot = lake.snapshot(Dataset::Events, None).await.unwrap();
    let ctx = deltalake::datafusion::prelude::SessionContext::new();
    lake.register_store(&ctx);
    let provider = evidex_engine::lake::LakeTable::new(
        Dataset::Events,
        snapshot.files,
        lake.store_url().clone(),
        false,
    );
    let batches = ctx
        .read_table(Arc::new(provider))
        .unwrap()
        .select_columns(&["id"])
        .unwrap()
        .collect()
        .await
        .unwrap();
    let mut out = Vec::new();
    for b in batches {
        let col = b.column(0);
        let col = deltalake::arrow::array::AsArray::as_string::<i32>(col.as_ref());
        out.extend(col.iter().map(|v| v.unwrap().to_string()));
    }
    out.sort();
    out
}

/// `id` alone is the key: a retry re-stamped by a forwarder (other precision, other
/// UTC day) is "already stored", with the key index and without it, and after the
/// index is deleted (it is rebuilt from the lake) or compaction rewrote the files.
#[tokio::test]
async fn a_retry_is_a_duplicate_whatever_its_timestamp() {
    for mode in ["index", "no index", "index deleted", "compacted"] {
        let dir = tempfile::tempdir().unwrap();
        let index_dir = dir.path().join("key-index");
        let with_index = mode != "no index";
        let lake = lake_with_index(
            &dir.path().join("data"),
            with_index.then(|| index_dir.clone()),
        );
        let first = append_events(
            &lake,
            &[
                ("r-1", "2026-03-02T10:00:00.123456Z"),
                ("r-2", "2026-03-02T23:59:59.999999Z"),
            ],
        )
        .await;
        assert_eq!((first.written, first.duplicates), (2, 0), "{mode}");
        let lake = match mode {
            "index deleted" => {
                lake.flush_index().await.unwrap();
                drop(lake);
                std::fs::remove_dir_all(&index_dir).unwrap();
                lake_with_index(&dir.path().join("data"), Some(index_dir.clone()))
            }
            "compacted" => {
                append_events(&lake, &[("r-3", "2026-03-02T11:00:00Z")]).await;
                let c = lake.compact(Dataset::Events, 2).await.unwrap();
                assert_eq!(c.partitions, 1);
                lake
            }
            _ => lake,
        };
        let retry = append_events(
            &lake,
            &[
                ("r-1", "2026-03-02T10:00:00.123Z"),
                ("r-2", "2026-03-03T00:00:00+00:00"),
                ("r-1", "2025-12-31T10:00:00Z"),
                ("n-1", "2026-03-05T10:00:00Z"),
                ("n-1", "2026-03-06T10:00:00Z"),
            ],
        )
        .await;
        assert_eq!(retry.written, 1, "{mode}");
        assert_eq!(retry.duplicate_rows, vec![0, 1, 2, 4], "{mode}");
        let mut want = vec!["n-1", "r-1", "r-2"];
        if mode == "compacted" {
            want.push("r-3");
            want.sort();
        }
        assert_eq!(stored_ids(&lake).await, want, "{mode}");
    }
}

/// The key index belongs to one table: a lake deleted and created again under the
/// same state (or another data location sharing the state directory) never has its
/// records taken for the old table's.
#[tokio::test]
async fn the_key_index_follows_the_table_it_was_built_from() {
    let dir = tempfile::tempdir().unwrap();
    let index_dir = dir.path().join("state").join("key-index");
    let data = dir.path().join("data");
    let other = dir.path().join("other");
    let lake = lake_with_index(&data, Some(index_dir.clone()));
    let first = append_events(&lake, &[("k-1", "2026-03-02T10:00:00Z")]).await;
    assert_eq!(first.written, 1);
    lake.flush_index().await.unwrap();
    // Another data location with the same state directory: its own index.
    let elsewhere = lake_with_index(&other, Some(index_dir.clone()));
    let out = append_events(&elsewhere, &[("k-1", "2026-03-02T10:00:00Z")]).await;
    assert_eq!(out.written, 1, "another lake's ids are not this lake's");
    // The data directory deleted and filled again: the index forgets the old table.
    std::fs::remove_dir_all(&data).unwrap();
    let again = append_events(&lake, &[("k-1", "2026-03-02T10:00:00Z")]).await;
    assert_eq!(again.written, 1, "the new table holds nothing yet");
    // Created anew (version 0) and appended to (1): the append did not go on from
    // the removed table's version.
    assert_eq!(again.version, Some(1));
    assert_eq!(stored_ids(&lake).await, vec!["k-1"]);
    let retry = append_events(&lake, &[("k-1", "2026-03-03T10:00:00Z")]).await;
    assert_eq!(retry.duplicate_rows, vec![0]);
}

/// A data directory moved with its state folder (as in the embedded default, where
/// the key index lives in `DATA/_state/key-index`) keeps its key index: the folder is
/// renamed for the new location instead of rebuilt, and nothing of the old location
/// is left. A copy (the original still there) builds an index of its own.
#[tokio::test]
async fn a_moved_lake_keeps_its_key_index() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let open = |name: &str| {
        let data = dir.path().join(name);
        lake_with_index(&data, Some(data.join("_state/key-index")))
    };
    // (folder name, inode) of each index folder, and the `.root` files.
    let listing = |name: &str| {
        let mut folders = Vec::new();
        let mut roots = Vec::new();
        for e in std::fs::read_dir(dir.path().join(name).join("_state/key-index")).unwrap() {
            let e = e.unwrap();
            let n = e.file_name().into_string().unwrap();
            if e.file_type().unwrap().is_dir() {
                folders.push((n, e.metadata().unwrap().ino()));
            } else {
                roots.push((n, std::fs::read_to_string(e.path()).unwrap()));
            }
        }
        folders.sort();
        roots.sort();
        (folders, roots)
    };
    let a = open("a");
    let first = append_events(&a, &[("k-1", "2026-03-02T10:00:00Z")]).await;
    assert_eq!(first.written, 1);
    a.flush_index().await.unwrap();
    drop(a);
    let (before, roots) = listing("a");
    assert_eq!(before.len(), 1, "{before:?}");
    assert_eq!(roots.len(), 1, "{roots:?}");
    assert!(roots[0].1.ends_with("/a/"), "{roots:?}");

    std::fs::rename(dir.path().join("a"), dir.path().join("b")).unwrap();
    let b = open("b");
    let moved = append_events(
        &b,
        &[
            ("k-1", "2026-03-04T10:00:00Z"),
            ("k-2", "2026-03-04T11:00:00Z"),
        ],
    )
    .await;
    assert_eq!(moved.duplicate_rows, vec![0]);
    b.flush_index().await.unwrap();
    drop(b);
    let (after, roots) = listing("b");
    assert_eq!(after.len(), 1, "one index folder: {after:?}");
    assert_ne!(after[0].0, before[0].0, "named for the new location");
    assert_eq!(after[0].1, before[0].1, "the same folder, renamed");
    assert_eq!(roots.len(), 1, "{roots:?}");
    assert_eq!(roots[0].0, format!("{}.root", after[0].0));
    assert!(roots[0].1.ends_with("/b/"), "{roots:?}");

    // A copy: the original still exists, so its index is not taken.
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(dir.path().join("b"))
        .arg(dir.path().join("c"))
        .status()
        .unwrap();
    assert!(copied.success());
    let c = open("c");
    let resent = append_events(&c, &[("k-2", "2026-03-05T10:00:00Z")]).await;
    assert_eq!(
        resent.duplicate_rows,
        vec![0],
        "rebuilt from the copy's files"
    );
    drop(c);
    let (copy, _) = listing("c");
    assert_eq!(copy.len(), 2, "{copy:?}");
    assert_eq!(listing("b").0, after, "the original's index is untouched");
}

/// An append keeps the Delta state it committed and does not read the log again
/// before its next commit; another writer's commit in between (another node, with
/// its own key index) makes that commit lose the race, and the append then reads
/// the new version: rows the other writer stored are duplicates, its own are stored
/// once, and every version of the log is there.
#[tokio::test]
async fn an_append_after_another_writers_commit_sees_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for index in [true, false] {
        let _ = std::fs::remove_dir_all(&data);
        let node = |name: &str| lake_with_index(&data, index.then(|| dir.path().join(name)));
        let (a, b) = (node("index-a"), node("index-b"));
        let first = append_events(&a, &[("a-1", "2026-03-02T10:00:00Z")]).await;
        assert_eq!((first.written, first.version), (1, Some(1)));
        let other = append_events(
            &b,
            &[
                ("b-1", "2026-03-02T11:00:00Z"),
                ("both", "2026-03-02T12:00:00Z"),
            ],
        )
        .await;
        assert_eq!((other.written, other.version), (2, Some(2)));
        let next = append_events(
            &a,
            &[
                ("both", "2026-03-03T12:00:00Z"),
                ("a-2", "2026-03-02T13:00:00Z"),
            ],
        )
        .await;
        assert_eq!(next.written, 1, "index {index}");
        assert_eq!(next.duplicate_rows, vec![0], "index {index}");
        assert_eq!(next.version, Some(3), "index {index}");
        // And `b`, whose state is now behind, the same way round.
        let back = append_events(&b, &[("a-2", "2026-03-04T13:00:00Z")]).await;
        assert_eq!((back.written, back.version), (0, None), "index {index}");
        assert_eq!(stored_ids(&a).await, vec!["a-1", "a-2", "b-1", "both"]);
        let log: Vec<String> = (0..=3).map(|v| format!("{v:020}.json")).collect();
        for name in &log {
            assert!(
                data.join("events/_delta_log").join(name).exists(),
                "{name} (index {index})"
            );
        }
        // `a` compacts from its state of version 3 after `b` committed version 4:
        // the compaction lands after it, and `a` still finds `b`'s rows.
        let late = append_events(&b, &[("b-2", "2026-03-02T14:00:00Z")]).await;
        assert_eq!(late.version, Some(4), "index {index}");
        let compacted = a.compact(Dataset::Events, 2).await.unwrap();
        assert_eq!(compacted.partitions, 1, "index {index}");
        let resent = append_events(
            &a,
            &[
                ("b-2", "2026-03-05T14:00:00Z"),
                ("a-3", "2026-03-05T15:00:00Z"),
            ],
        )
        .await;
        assert_eq!(resent.duplicate_rows, vec![0], "index {index}");
        assert_eq!(
            stored_ids(&b).await,
            vec!["a-1", "a-2", "a-3", "b-1", "b-2", "both"],
            "index {index}"
        );
    }
}

/// Appends write their commits straight to the log and leave the file list of their
/// state behind; the commits that complete a checkpoint interval (100) go through
/// deltalake's commit with its checkpoint, and compaction brings the file list up to
/// date first. Over 205 appends and a compaction, with the key index and without: the
/// versions follow each other with no gap, each re-send is a duplicate, deltalake
/// itself (a fresh load, from the checkpoints) names the same files, and the directly
/// written commits carry the same commit information as deltalake's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_past_deltalakes_post_commit_update_keep_a_whole_log() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for index in [true, false] {
        let _ = std::fs::remove_dir_all(&data);
        let lake = lake_with_index(&data, index.then(|| dir.path().join("index")));
        let mut expected = Vec::new();
        let mut version = 0;
        for i in 0..205u32 {
            let id = format!("e-{i:03}");
            let day = 1 + i % 20;
            let mut rows = vec![event_at(&id, &format!("2026-03-{day:02}T10:00:00Z"))];
            if i > 0 {
                // A re-send of an earlier event, on another day.
                let old = format!("e-{:03}", i / 2);
                rows.push(event_at(&old, "2026-03-28T09:00:00Z"));
            }
            let out = lake.append(Dataset::Events, rows).await.unwrap();
            version += 1;
            let ctx = format!("append {i}, index {index}");
            assert_eq!(out.written, 1, "{ctx}");
            assert_eq!(
                out.duplicate_rows,
                if i > 0 { vec![1] } else { vec![] },
                "{ctx}"
            );
            assert_eq!(out.version, Some(version), "{ctx}");
            expected.push(id);
            if i == 150 {
                let compacted = lake.compact(Dataset::Events, 2).await.unwrap();
                assert_eq!(compacted.partitions, 20, "index {index}");
                version += 1;
            }
        }
        assert_eq!(stored_ids(&lake).await, expected, "index {index}");
        let log = data.join("events/_delta_log");
        for v in 0..=version {
            assert!(
                log.join(format!("{v:020}.json")).exists(),
                "version {v}, index {index}"
            );
        }
        assert!(!log.join(format!("{:020}.json", version + 1)).exists());
        for v in [99, 199] {
            let name = format!("{v:020}.checkpoint.parquet");
            assert!(log.join(&name).exists(), "{name}, index {index}");
        }
        // deltalake's own view of the table, loaded from the last checkpoint.
        let url = url::Url::from_directory_path(data.join("events")).unwrap();
        let table = deltalake::open_table(url).await.unwrap();
        assert_eq!(table.version(), Some(version), "index {index}");
        let mut theirs: Vec<String> = table
            .get_file_uris()
            .unwrap()
            .map(|u| u.rsplit('/').next().unwrap().to_string())
            .collect();
        let mut ours: Vec<String> = lake
            .snapshot(Dataset::Events, None)
            .await
            .unwrap()
            .files
            .iter()
            .map(|f| f.relative.rsplit('/').next().unwrap().to_string())
            .collect();
        theirs.sort();
        ours.sort();
        assert_eq!(theirs, ours, "index {index}");
        assert_eq!(ours.len(), 20 + 54, "index {index}");
        // A direct commit (5) and one of deltalake's (99): the same commit information.
        let info = |v: u64| {
            let text = std::fs::read_to_string(log.join(format!("{v:020}.json"))).unwrap();
            let first: serde_json::Value =
                serde_json::from_str(text.lines().next().unwrap()).unwrap();
            let info = first["commitInfo"].as_object().unwrap().clone();
            assert_eq!(info["operation"], "WRITE", "version {v}");
            assert_eq!(info["isBlindAppend"], true, "version {v}");
            assert_eq!(info["operationParameters"]["mode"], "Append", "version {v}");
            let adds = text.lines().filter(|l| l.starts_with(r#"{"add""#)).count();
            assert_eq!(adds, 1, "version {v}");
            info.keys().cloned().collect::<Vec<_>>()
        };
        assert_eq!(info(5), info(99), "index {index}");
    }
}

/// An index of the previous layout (fjall keeps a keyspace's options from creation,
/// so the partitioned filters need a new index) is removed and the new one rebuilt
/// from the lake: a retry of a record stored before the upgrade is still a duplicate.
#[tokio::test]
async fn an_index_of_the_old_layout_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let index_dir = dir.path().join("key-index");
    let data = dir.path().join("data");
    let lake = lake_with_index(&data, Some(index_dir.clone()));
    append_events(&lake, &[("u-1", "2026-03-02T10:00:00Z")]).await;
    lake.flush_index().await.unwrap();
    drop(lake);
    // The index folder (beside it, the `.root` file naming its lake).
    let names: Vec<String> = std::fs::read_dir(&index_dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_dir())
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    let (hash, layout) = names[0].rsplit_once('-').expect("hash-layout");
    assert_eq!(layout, "2");
    // What an older evidex left: the index under the bare hash.
    let old = index_dir.join(hash);
    std::fs::create_dir_all(old.join("keyspaces")).unwrap();
    std::fs::write(old.join("version"), b"old").unwrap();
    std::fs::remove_dir_all(index_dir.join(&names[0])).unwrap();
    let lake = lake_with_index(&data, Some(index_dir.clone()));
    let retry = append_events(&lake, &[("u-1", "2026-03-05T10:00:00Z")]).await;
    assert_eq!(retry.duplicate_rows, vec![0], "rebuilt from the lake");
    assert!(!old.exists(), "the old layout's folder is removed");
    assert!(index_dir.join(&names[0]).is_dir());
}

/// The orphan sweep deletes only data files no version of the log names: a file an
/// append wrote and never committed goes; the current files, the files compaction
/// removed (time travel still reads them) and hidden paths stay. Too short an age is
/// refused unless forced, and files younger than the age are kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_orphan_sweep_takes_uncommitted_files_only() {
    let dir = tempfile::tempdir().unwrap();
    let writer = lake(dir.path());
    let all = events(2_000, 2);
    for chunk in all.chunks(500) {
        writer
            .append(Dataset::Events, chunk.to_vec())
            .await
            .unwrap();
    }
    let before = PinnedTables::pin(&writer, None).await.unwrap();
    writer.compact(Dataset::Events, 2).await.unwrap();
    let scope = ExportScope::new("2026-03-09", "2026-03-10", "UTC", Filters::default()).unwrap();
    let ids_before = ids(&writer, &before, &scope).await;

    // An append that died between its Parquet write and its commit.
    let table = dir.path().join("events");
    let current = &PinnedTables::pin(&writer, None).await.unwrap().snapshots[&Dataset::Events];
    let some_file = table.join(&current.files[0].relative);
    let orphan = some_file.with_file_name("part-00000-crashed.parquet");
    std::fs::copy(&some_file, &orphan).unwrap();
    let hidden = table.join("_staging.parquet");
    std::fs::write(&hidden, b"not ours").unwrap();

    let err = writer
        .sweep_orphans(Dataset::Events, chrono::Duration::minutes(10), false)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("120 minutes"), "{err}");
    assert!(orphan.exists());

    // By the lake's clock (2026-04-01) the files were written in the future: none
    // is older than a day, so nothing goes.
    let young = writer
        .sweep_orphans(Dataset::Events, chrono::Duration::days(1), false)
        .await
        .unwrap();
    assert_eq!(young.files_deleted, 0);
    assert!(orphan.exists());

    // A day later than every file: the orphan goes, nothing else.
    let later = Lake::open(
        &LakeOptions {
            data_url: dir.path().to_str().unwrap().to_string(),
            ..Default::default()
        },
        Arc::new(FixedClock(
            Utc.with_ymd_and_hms(2100, 1, 1, 0, 0, 0).unwrap(),
        )),
    )
    .unwrap();
    let swept = later
        .sweep_orphans(Dataset::Events, chrono::Duration::days(1), false)
        .await
        .unwrap();
    assert_eq!(swept.files_deleted, 1);
    assert!(!orphan.exists());
    assert!(hidden.exists(), "hidden paths are never touched");
    let pinned_old = PinnedTables::pin(&later, Some(&before.versions()))
        .await
        .unwrap();
    assert_eq!(
        ids(&later, &pinned_old, &scope).await,
        ids_before,
        "time travel still reads"
    );
    let now = PinnedTables::pin(&later, None).await.unwrap();
    assert_eq!(ids(&later, &now, &scope).await, ids_before);
}
