//! Tests of the chain check on artifacts made by the real export path.

use std::sync::Arc;

use chrono::{NaiveDate, TimeZone};

use super::*;
use crate::clock::FixedClock;
use crate::export::{
    ArtifactTarget, Evidence, ExportControl, ExportRequest, Format, Include, PinnedTables,
    new_export_id, run_export,
};
use crate::generate::{GenerateSpec, generate_day, rows_per_day};
use crate::integrity::{Manifest, Signer, parse_public_key};
use crate::lake::{Lake, LakeOptions};
use crate::model::Dataset;
use crate::scope::{ExportScope, Filters};

const SCHEDULE: &str = "sch_01JQ0000000000000000000000";

/// A lake holding events of 2026 Q1 and a signing key: what the scheduler has
/// when it runs a schedule's exports. Artifacts are made by the real export path.
struct Fixture {
    dir: tempfile::TempDir,
    lake: Lake,
    pinned: PinnedTables,
    signer: Arc<Signer>,
}

/// A run the fixture made.
struct Made {
    period: String,
    manifest_sha256: String,
    /// The artifact: the ZIP or the single CSV.
    path: PathBuf,
}

/// One monthly run of a schedule: period `2026-MM` unless `period` says otherwise.
#[derive(Clone, Copy)]
struct RunSpec<'a> {
    /// Folder (under the fixture's) the artifact is written to.
    out: &'a str,
    schedule: &'a str,
    month: u32,
    period: Option<&'a str>,
    /// Export name, hence file name; `SOC2-{period}` by default.
    name: Option<&'a str>,
    previous: Option<&'a Made>,
    /// A ZIP package (with escalations) instead of a single CSV.
    zip: bool,
    /// `false`: an export no schedule made.
    scheduled: bool,
}

fn run<'a>(out: &'a str, month: u32, previous: Option<&'a Made>) -> RunSpec<'a> {
    RunSpec {
        out,
        schedule: SCHEDULE,
        month,
        period: None,
        name: None,
        previous,
        zip: false,
        scheduled: true,
    }
}

impl Fixture {
    async fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let clock = FixedClock(Utc.with_ymd_and_hms(2026, 4, 1, 0, 0, 0).unwrap());
        let lake = Lake::open(
            &LakeOptions {
                data_url: dir.path().to_str().unwrap().to_string(),
                ..Default::default()
            },
            Arc::new(clock),
        )
        .unwrap();
        let spec = GenerateSpec {
            rows: 300,
            days: 90,
            end: NaiveDate::from_ymd_opt(2026, 3, 31).unwrap(),
            seed: 5,
        };
        let (mut events, mut escalations) = (Vec::new(), Vec::new());
        let mut first = 0;
        for (i, (d, n)) in rows_per_day(&spec).into_iter().enumerate() {
            let day = generate_day(&spec, i as u32, d, n, first);
            first += n;
            events.extend(day.events);
            escalations.extend(day.escalations);
        }
        lake.append(Dataset::Events, events).await.unwrap();
        lake.append(Dataset::Escalations, escalations)
            .await
            .unwrap();
        let pinned = PinnedTables::pin(&lake, None).await.unwrap();
        let signer = Arc::new(Signer::load_or_create(&dir.path().join("_state")).unwrap());
        Fixture {
            dir,
            lake,
            pinned,
            signer,
        }
    }

    fn path(&self, out: &str) -> PathBuf {
        self.dir.path().join(out)
    }

    /// Runs the export `spec` describes, as the scheduler would.
    async fn run(&self, spec: RunSpec<'_>) -> Made {
        let period = spec
            .period
            .map(str::to_string)
            .unwrap_or_else(|| format!("2026-{:02}", spec.month));
        let start = Utc.with_ymd_and_hms(2026, spec.month, 1, 0, 0, 0).unwrap();
        let end = Utc
            .with_ymd_and_hms(2026, spec.month + 1, 1, 0, 0, 0)
            .unwrap();
        let scope = ExportScope::new(
            &start.to_rfc3339(),
            &end.to_rfc3339(),
            "UTC",
            Filters::default(),
        )
        .unwrap();
        let name = spec
            .name
            .map(str::to_string)
            .unwrap_or_else(|| format!("SOC2-{period}"));
        let mut request = ExportRequest::new(name, scope, Format::Csv);
        if spec.zip {
            request.include = vec![Include::Escalations];
        }
        let created_at = end + chrono::Duration::hours(1);
        let schedule = spec.scheduled.then(|| {
            ManifestSchedule::new(
                spec.schedule,
                "SOC2 monthly",
                &period,
                start,
                end,
                spec.previous.map(|p| p.period.clone()),
            )
        });
        let evidence = Evidence {
            export_id: new_export_id(created_at),
            requested_by: format!("schedule:{}", spec.schedule),
            created_at,
            previous_manifest_sha256: spec.previous.map(|p| p.manifest_sha256.clone()),
            schedule,
            signer: self.signer.clone(),
        };
        let out = self.path(spec.out);
        std::fs::create_dir_all(&out).unwrap();
        let outcome = run_export(
            &self.lake,
            &self.pinned,
            &request,
            &evidence,
            |file| ArtifactTarget::File {
                path: out.join(file),
                sync: false,
            },
            &ExportControl::default(),
        )
        .await
        .unwrap();
        Made {
            period,
            manifest_sha256: outcome.manifest_sha256,
            path: outcome.path.unwrap(),
        }
    }

    /// Verifies `inputs` as a chain, trusting the fixture's key.
    fn check(&self, inputs: &[&Path]) -> ChainReport {
        let inputs: Vec<PathBuf> = inputs.iter().map(|p| p.to_path_buf()).collect();
        let key = parse_public_key(&self.signer.public_hex()).unwrap();
        verify_chain(&inputs, &Trust::Key(key)).unwrap()
    }
}

fn periods(series: &SeriesReport) -> Vec<&str> {
    series
        .runs
        .iter()
        .map(|r| r.schedule.period.as_str())
        .collect()
}

fn manifest_json(made: &Made) -> serde_json::Value {
    let path = made
        .path
        .with_file_name(format!("{}{MANIFEST_SUFFIX}", file_name(&made.path)));
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_chain_verifies_link_by_link_from_a_directory_or_a_list() {
    let fx = Fixture::new().await;
    let jan = fx.run(run("q1", 1, None)).await;
    let feb = fx
        .run(RunSpec {
            zip: true,
            ..run("q1", 2, Some(&jan))
        })
        .await;
    let mar = fx.run(run("q1", 3, Some(&feb))).await;

    let m = manifest_json(&mar);
    assert_eq!(m["previous_manifest_sha256"], feb.manifest_sha256);
    assert_eq!(
        m["schedule"],
        serde_json::json!({
            "schedule_id": SCHEDULE,
            "schedule_name": "SOC2 monthly",
            "period": "2026-03",
            "period_start": "2026-03-01T00:00:00.000000Z",
            "period_end": "2026-04-01T00:00:00.000000Z",
            "previous_period": "2026-02",
        })
    );
    assert_eq!(
        manifest_json(&jan)["schedule"]["previous_period"],
        serde_json::Value::Null
    );

    let report = fx.check(&[&fx.path("q1")]);
    assert!(report.ok(), "{report:#?}");
    assert_eq!(report.series.len(), 1);
    let series = &report.series[0];
    assert_eq!(series.schedule_id, SCHEDULE);
    assert_eq!(periods(series), ["2026-01", "2026-02", "2026-03"]);
    assert_eq!(
        series.checked,
        [
            "2026-01 (SOC2-2026-01.csv): the schedule's first run (no previous period)".to_string(),
            format!(
                "2026-01 → 2026-02: SOC2-2026-02.zip records the manifest sha256 {} of SOC2-2026-01.csv",
                jan.manifest_sha256
            ),
            format!(
                "2026-02 → 2026-03: SOC2-2026-03.csv records the manifest sha256 {} of SOC2-2026-02.zip",
                feb.manifest_sha256
            ),
        ]
    );
    assert!(series.notes.is_empty(), "{:?}", series.notes);
    assert_eq!(report.checked.len(), 3, "{:?}", report.checked);
    assert!(series.runs.iter().all(|r| r.verified));

    // The same artifacts named one by one (a data file, a ZIP, a manifest), in
    // any order, and once more through their folder: the same chain, each once.
    let manifest = mar.path.with_file_name("SOC2-2026-03.csv.manifest.json");
    let listed = fx.check(&[&manifest, &feb.path, &jan.path, &fx.path("q1")]);
    assert!(listed.ok(), "{listed:#?}");
    assert_eq!(listed.series[0].checked, series.checked);
    assert_eq!(listed.checked.len(), 3);

    // A second schedule in the same folder is its own series.
    let other = "sch_01JQ1111111111111111111111";
    let a = fx
        .run(RunSpec {
            schedule: other,
            name: Some("ISO-2026-01"),
            ..run("q1", 1, None)
        })
        .await;
    fx.run(RunSpec {
        schedule: other,
        name: Some("ISO-2026-02"),
        ..run("q1", 2, Some(&a))
    })
    .await;
    let both = fx.check(&[&fx.path("q1")]);
    assert!(both.ok(), "{both:#?}");
    let ids: Vec<&str> = both.series.iter().map(|s| s.schedule_id.as_str()).collect();
    assert_eq!(ids, [SCHEDULE, other]);
    assert_eq!(periods(&both.series[1]), ["2026-01", "2026-02"]);

    // Without a trusted key, the enclosed key's note is given once for all.
    let enclosed = verify_chain(&[fx.path("q1")], &Trust::Enclosed).unwrap();
    assert!(enclosed.ok(), "{enclosed:#?}");
    assert_eq!(enclosed.notes.len(), 1, "{:?}", enclosed.notes);
    assert!(
        enclosed.notes[0].starts_with(
            "ISO-2026-01.csv, ISO-2026-02.csv, SOC2-2026-01.csv, SOC2-2026-02.zip, SOC2-2026-03.csv: signed with the key enclosed"
        ),
        "{}",
        enclosed.notes[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_middle_period_is_a_problem_a_missing_start_a_note() {
    let fx = Fixture::new().await;
    let jan = fx.run(run("q1", 1, None)).await;
    let feb = fx
        .run(RunSpec {
            zip: true,
            ..run("q1", 2, Some(&jan))
        })
        .await;
    let mar = fx.run(run("q1", 3, Some(&feb))).await;

    let tail = fx.check(&[&feb.path, &mar.path]);
    assert!(tail.ok(), "{tail:#?}");
    assert_eq!(
        tail.series[0].notes,
        [format!(
            "the series given starts after 2026-01 (not given): 2026-02 (SOC2-2026-02.zip) follows it (previous manifest sha256 {})",
            jan.manifest_sha256
        )]
    );

    std::fs::remove_file(&feb.path).unwrap();
    let gap = fx.check(&[&fx.path("q1")]);
    assert!(!gap.ok());
    assert!(gap.problems.is_empty(), "{:?}", gap.problems);
    assert_eq!(periods(&gap.series[0]), ["2026-01", "2026-03"]);
    assert_eq!(
        gap.series[0].problems,
        [format!(
            "2026-02 is missing: 2026-03 (SOC2-2026-03.csv) follows it (previous manifest sha256 {})",
            feb.manifest_sha256
        )]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_period_is_named_with_both_hashes() {
    let fx = Fixture::new().await;
    let jan = fx.run(run("q1", 1, None)).await;
    let feb = fx
        .run(RunSpec {
            zip: true,
            ..run("q1", 2, Some(&jan))
        })
        .await;
    let mar = fx.run(run("q1", 3, Some(&feb))).await;
    // February exported again, signed by the same key, put in the original's place.
    let again = fx
        .run(RunSpec {
            zip: true,
            ..run("again", 2, Some(&jan))
        })
        .await;
    assert_ne!(again.manifest_sha256, feb.manifest_sha256);
    std::fs::copy(&again.path, &feb.path).unwrap();

    let report = fx.check(&[&fx.path("q1")]);
    assert!(!report.ok());
    // Each artifact is sound on its own: only the chain shows the replacement.
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let series = &report.series[0];
    assert_eq!(
        series.problems,
        [format!(
            "2026-02 was replaced: its manifest (SOC2-2026-02.zip) hashes to {}, 2026-03 (SOC2-2026-03.csv) recorded {}",
            again.manifest_sha256, feb.manifest_sha256
        )]
    );
    assert_eq!(series.checked.len(), 2, "{:?}", series.checked);
    assert!(series.runs.iter().any(|r| r.path == mar.path));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_forks_and_backward_links_are_out_of_order() {
    let fx = Fixture::new().await;

    // February run twice: both files named.
    let jan = fx.run(run("dup", 1, None)).await;
    let feb = fx.run(run("dup", 2, Some(&jan))).await;
    fx.run(RunSpec {
        name: Some("SOC2-2026-02-rerun"),
        ..run("dup", 2, Some(&jan))
    })
    .await;
    fx.run(run("dup", 3, Some(&feb))).await;
    let dup = fx.check(&[&fx.path("dup")]);
    assert_eq!(
        dup.series[0].problems,
        [
            "2026-02 was run more than once (a duplicate run): SOC2-2026-02-rerun.csv and SOC2-2026-02.csv hold different manifests for it"
        ]
    );
    // A copy of one run under another name is no second run.
    std::fs::create_dir(fx.path("copy")).unwrap();
    let copy = fx.path("copy").join("SOC2-2026-02-copy.csv");
    std::fs::copy(&feb.path, &copy).unwrap();
    let mut name = file_name(&feb.path);
    name.push_str(MANIFEST_SUFFIX);
    std::fs::copy(
        feb.path.with_file_name(&name),
        fx.path("copy").join("SOC2-2026-02-copy.csv.manifest.json"),
    )
    .unwrap();
    let copied = fx.check(&[&jan.path, &feb.path, &copy]);
    assert!(copied.series[0].ok(), "{:#?}", copied.series[0]);
    assert_eq!(
        copied.series[0].notes,
        [
            "2026-02: SOC2-2026-02-copy.csv and SOC2-2026-02.csv are copies of one run (identical manifests)"
        ]
    );

    // March chained to January, as February was: a fork.
    let jan = fx.run(run("fork", 1, None)).await;
    fx.run(run("fork", 2, Some(&jan))).await;
    fx.run(run("fork", 3, Some(&jan))).await;
    let fork = fx.check(&[&fx.path("fork")]);
    let series = &fork.series[0];
    assert_eq!(
        series.problems,
        [
            "out of order: a fork after 2026-01: 2026-02 (SOC2-2026-02.csv) and 2026-03 (SOC2-2026-03.csv) both name it as their previous period"
        ]
    );
    assert!(
        series.notes.contains(&"2026-01 (SOC2-2026-01.csv) ends at 2026-02-01T00:00:00.000000Z but 2026-03 (SOC2-2026-03.csv) starts at 2026-03-01T00:00:00.000000Z: a gap between the periods".to_string()),
        "{:?}",
        series.notes
    );

    // January made after February and chained to it: a link backwards in time.
    let feb = fx.run(run("back", 2, None)).await;
    fx.run(run("back", 1, Some(&feb))).await;
    let back = fx.check(&[&fx.path("back")]);
    assert!(back.problems.is_empty(), "{:?}", back.problems);
    assert_eq!(
        back.series[0].problems,
        [
            "out of order: 2026-01 (SOC2-2026-01.csv, starting 2026-01-01T00:00:00.000000Z) names 2026-02 (SOC2-2026-02.csv, starting 2026-02-01T00:00:00.000000Z) as its previous period, which does not start before it",
            "2026-02 (SOC2-2026-02.csv) names no previous period, but 2026-01 (SOC2-2026-01.csv) comes before it: the chain restarts here",
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_artifact_in_a_sound_chain_is_reported() {
    let fx = Fixture::new().await;
    let jan = fx.run(run("q1", 1, None)).await;
    let feb = fx.run(run("q1", 2, Some(&jan))).await;
    fx.run(run("q1", 3, Some(&feb))).await;
    let mut csv = std::fs::read(&feb.path).unwrap();
    csv.extend_from_slice(b"forged,row\n");
    std::fs::write(&feb.path, csv).unwrap();

    let report = fx.check(&[&fx.path("q1")]);
    assert!(!report.ok());
    assert!(report.series[0].ok(), "{:?}", report.series[0].problems);
    assert!(!report.problems.is_empty());
    assert!(
        report
            .problems
            .iter()
            .all(|p| p.starts_with("SOC2-2026-02.csv: ")),
        "{:?}",
        report.problems
    );
    assert!(
        report.problems.iter().any(|p| p.contains("SHA-256")),
        "{:?}",
        report.problems
    );
    let verified: Vec<bool> = report.series[0].runs.iter().map(|r| r.verified).collect();
    assert_eq!(verified, [true, false, true]);
    assert_eq!(report.checked.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unscheduled_artifacts_are_named_and_keep_their_manifests() {
    let fx = Fixture::new().await;
    let plain = fx
        .run(RunSpec {
            scheduled: false,
            zip: true,
            ..run("plain", 1, None)
        })
        .await;
    let report = fx.check(&[&plain.path]);
    assert!(!report.ok());
    assert!(report.series.is_empty());
    assert_eq!(
        report.problems,
        ["SOC2-2026-01.zip: not part of a scheduled series (its manifest has no schedule)"]
    );
    // No `schedule` key at all: an unscheduled manifest reads and writes back
    // byte for byte, as every manifest made before schedules did.
    let mut zip = zip::ZipArchive::new(File::open(&plain.path).unwrap()).unwrap();
    let mut bytes = Vec::new();
    zip.by_name(MANIFEST_NAME)
        .unwrap()
        .read_to_end(&mut bytes)
        .unwrap();
    assert!(!String::from_utf8_lossy(&bytes).contains("\"schedule\""));
    let manifest: Manifest = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(manifest.to_bytes(), bytes);
}

#[test]
fn bad_input_is_an_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let error = |inputs: &[&Path]| {
        let inputs: Vec<PathBuf> = inputs.iter().map(|p| p.to_path_buf()).collect();
        verify_chain(&inputs, &Trust::Enclosed)
            .unwrap_err()
            .to_string()
    };
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let e = error(&[&empty]);
    assert!(
        e.starts_with(&format!("no artifacts found in {}", empty.display())),
        "{e}"
    );
    assert!(error(&[]).contains("no paths given"));

    let absent = dir.path().join("absent.zip");
    let e = error(&[&absent]);
    assert!(e.contains(&absent.display().to_string()), "{e}");

    let data = dir.path().join("x.csv");
    std::fs::write(&data, "a\n1\n").unwrap();
    let e = error(&[&data]);
    assert!(e.contains("neither a ZIP package nor a data file"), "{e}");

    let manifest = dir.path().join("x.csv.manifest.json");
    std::fs::write(&manifest, "not json").unwrap();
    for input in [data, dir.path().to_path_buf()] {
        let e = error(&[&input]);
        assert!(
            e.starts_with(&format!("{}: not JSON", manifest.display())),
            "{e}"
        );
    }

    let zip = empty.join("broken.zip");
    std::fs::write(&zip, "PK\x03\x04 but no more").unwrap();
    let e = error(&[&empty]);
    assert!(
        e.starts_with(&format!("{}: not a readable ZIP", zip.display())),
        "{e}"
    );
}
