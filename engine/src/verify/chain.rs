//! Verifying a schedule's series of artifacts: each artifact on its own (with
//! [`verify`]), then the chain its manifests form. Each scheduled run records the
//! label of the schedule's previous run and the SHA-256 of that run's `manifest.json`,
//! so a period that was deleted, replaced, run twice or put out of order is named.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Deserialize as _;

use super::{Trust, VerifyReport, verify};
use crate::error::{EngineError, Result};
use crate::integrity::{MANIFEST_NAME, ManifestSchedule, sha256_hex};

/// How a single data file's manifest is named beside it (`NAME.csv.manifest.json`).
const MANIFEST_SUFFIX: &str = ".manifest.json";

/// What [`verify_chain`] found. Problems of single artifacts are here; problems of the
/// links between runs are in each [`SeriesReport`], so nothing is reported twice.
#[derive(Debug, Default)]
pub struct ChainReport {
    /// One per schedule among the artifacts, ordered by schedule id.
    pub series: Vec<SeriesReport>,
    /// Each artifact's verification problems, prefixed by its file name, and each
    /// artifact that belongs to no schedule.
    pub problems: Vec<String>,
    /// What the reader must still do or know (an enclosed key's fingerprint to
    /// compare, a window that differs from its period), prefixed by the file names.
    pub notes: Vec<String>,
    /// One line per artifact that verified on its own.
    pub checked: Vec<String>,
}

impl ChainReport {
    /// Whether every artifact verified, belongs to a series, and every series is an
    /// unbroken chain.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
            && !self.checked.is_empty()
            && self.series.iter().all(SeriesReport::ok)
    }
}

/// The chain of one schedule's runs among the artifacts given.
#[derive(Debug, Clone)]
pub struct SeriesReport {
    /// The schedule's id (`sch_…`).
    pub schedule_id: String,
    /// The schedule's name as its latest run given records it.
    pub schedule_name: String,
    /// The runs, ordered by `period_start` (then period label, then file name).
    pub runs: Vec<ChainRun>,
    /// Broken links: a period missing in the middle, replaced, run twice, out of
    /// order, a fork.
    pub problems: Vec<String>,
    /// What is not wrong but worth knowing: the series given starts after the
    /// schedule's first run, a gap or overlap between periods, a renamed schedule.
    pub notes: Vec<String>,
    /// One line per link checked (and one for the schedule's first run).
    pub checked: Vec<String>,
}

impl SeriesReport {
    /// Whether the chain has no problem.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// One scheduled run among the artifacts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainRun {
    /// The artifact's file name as the messages name it (its full path when two
    /// artifacts given share a file name).
    pub label: String,
    /// The artifact: the ZIP, or the single data file its manifest sits beside.
    pub path: PathBuf,
    /// The run's schedule and period, from its manifest.
    pub schedule: ManifestSchedule,
    /// The previous run's manifest hash this run records.
    pub previous_manifest_sha256: Option<String>,
    /// SHA-256 (lowercase hex) of this run's `manifest.json` bytes as stored.
    pub manifest_sha256: String,
    /// Whether the artifact passed [`verify`] on its own.
    pub verified: bool,
}

/// Verifies a schedule's artifacts and the chain their manifests form.
///
/// `artifacts` are files and directories. A directory contributes every `*.zip` and
/// every `*.manifest.json` directly inside it (the latter standing for the data file
/// beside it); a file is a ZIP, a single data file with its `NAME.manifest.json`
/// beside it, or that manifest. Each artifact is checked with [`verify`] using
/// `trust`, then the artifacts are grouped by schedule and each series is checked
/// link by link, in `period_start` order.
///
/// Fails, naming the path, when no artifact is found, a file cannot be read, a ZIP
/// has no readable `manifest.json`, or a manifest is not JSON; everything the
/// artifacts themselves get wrong is in the report.
pub fn verify_chain(artifacts: &[PathBuf], trust: &Trust) -> Result<ChainReport> {
    let found = find_artifacts(artifacts)?;
    // Read every manifest before verifying anything, so bad input fails at once.
    let mut read = Vec::new();
    for (artifact, label) in found.iter().zip(labels(&found)) {
        let bytes = artifact.read_manifest()?;
        let fields = chain_fields(artifact, &bytes)?;
        read.push((artifact, label, sha256_hex(&bytes), fields));
    }
    let mut report = ChainReport::default();
    let mut notes: Vec<(String, Vec<String>)> = Vec::new();
    let mut series: BTreeMap<String, Vec<ChainRun>> = BTreeMap::new();
    for (artifact, label, manifest_sha256, fields) in read {
        let alone = verify(artifact.verify_path(), trust)?;
        let verified = alone.ok();
        record_verification(&label, artifact.path(), alone, &mut report, &mut notes);
        let schedule = match fields.schedule {
            Ok(Some(s)) => s,
            Ok(None) => {
                report.problems.push(format!(
                    "{label}: not part of a scheduled series (its manifest has no schedule)"
                ));
                continue;
            }
            Err(e) => {
                report.problems.push(format!(
                    "{label}: its manifest's schedule cannot be read: {e}"
                ));
                continue;
            }
        };
        if let Some((from, to)) = fields.window
            && !(same_instant(&from, &schedule.period_start)
                && same_instant(&to, &schedule.period_end))
        {
            report.notes.push(format!(
                "{label}: its window [{from}, {to}) is not its period {} [{}, {})",
                schedule.period, schedule.period_start, schedule.period_end
            ));
        }
        series
            .entry(schedule.schedule_id.clone())
            .or_default()
            .push(ChainRun {
                label,
                path: artifact.path().to_path_buf(),
                schedule,
                previous_manifest_sha256: fields.previous_manifest_sha256,
                manifest_sha256,
                verified,
            });
    }
    for (note, labels) in notes {
        report.notes.push(format!("{}: {note}", labels.join(", ")));
    }
    report.series = series
        .into_iter()
        .map(|(id, runs)| check_series(id, runs))
        .collect();
    Ok(report)
}

/// Adds one artifact's [`verify`] result to `report`: its problems named by `label`,
/// one checked line when it verified, its notes merged with identical notes of the
/// other artifacts (the enclosed key's note repeats for every artifact it signed).
fn record_verification(
    label: &str,
    path: &Path,
    alone: VerifyReport,
    report: &mut ChainReport,
    notes: &mut Vec<(String, Vec<String>)>,
) {
    if alone.ok() {
        report.checked.push(format!(
            "{label}: verified ({} checks passed)",
            alone.checked.len()
        ));
    } else if alone.problems.is_empty() {
        report
            .problems
            .push(format!("{label}: nothing in it could be checked"));
    }
    for problem in &alone.problems {
        report.problems.push(attribute(label, path, problem));
    }
    for note in alone.notes {
        match notes.iter_mut().find(|(n, _)| *n == note) {
            Some((_, labels)) => labels.push(label.to_string()),
            None => notes.push((note, vec![label.to_string()])),
        }
    }
}

/// Names `problem` by the artifact's `label`. [`verify`] names files by their full
/// path (`/dir/a.zip/data.csv: …`); that prefix becomes the label (`a.zip/data.csv:
/// …`), and any other problem gets the label in front.
fn attribute(label: &str, path: &Path, problem: &str) -> String {
    let full = path.display().to_string();
    match problem.strip_prefix(&full) {
        Some(rest) if rest.starts_with(['/', ':', '.']) => format!("{label}{rest}"),
        _ => format!("{label}: {problem}"),
    }
}

/// Checks one schedule's runs as a chain; see [`verify_chain`].
fn check_series(schedule_id: String, mut runs: Vec<ChainRun>) -> SeriesReport {
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    let mut checked = Vec::new();
    for run in &runs {
        let s = &run.schedule;
        let (start, end) = (instant(&s.period_start), instant(&s.period_end));
        for (field, value, parsed) in [
            ("period_start", &s.period_start, start),
            ("period_end", &s.period_end, end),
        ] {
            if parsed.is_none() {
                problems.push(format!(
                    "{} ({}): its {field} {value:?} is not an RFC 3339 time",
                    s.period, run.label
                ));
            }
        }
        if let (Some(start), Some(end)) = (start, end)
            && end <= start
        {
            problems.push(format!(
                "{} ({}): its period_end {} is not after its period_start {}",
                s.period, run.label, s.period_end, s.period_start
            ));
        }
    }
    // Runs whose start cannot be read go last: they are reported above.
    runs.sort_by(|a, b| {
        let key = |r: &ChainRun| {
            let start = instant(&r.schedule.period_start);
            (
                start.is_none(),
                start,
                r.schedule.period.clone(),
                r.label.clone(),
            )
        };
        key(a).cmp(&key(b))
    });

    check_duplicates(&runs, &mut problems, &mut notes);
    check_forks(&runs, &mut problems);

    for run in &runs {
        let s = &run.schedule;
        let start = instant(&s.period_start);
        // The nearest run of another period that starts before this one.
        let before = runs.iter().rev().find(|r| {
            r.schedule.period != s.period
                && matches!((instant(&r.schedule.period_start), start), (Some(a), Some(b)) if a < b)
        });
        let (previous, hash) = match (&s.previous_period, &run.previous_manifest_sha256) {
            (Some(p), Some(h)) => (p, h),
            (None, None) => {
                match before {
                    None => checked.push(format!(
                        "{} ({}): the schedule's first run (no previous period)",
                        s.period, run.label
                    )),
                    Some(b) => problems.push(format!(
                        "{} ({}) names no previous period, but {} ({}) comes before it: the chain restarts here",
                        s.period, run.label, b.schedule.period, b.label
                    )),
                }
                continue;
            }
            (None, Some(h)) => {
                problems.push(format!(
                    "{} ({}) records a previous manifest sha256 ({h}) but no previous period",
                    s.period, run.label
                ));
                continue;
            }
            (Some(p), None) => {
                problems.push(format!(
                    "{} ({}) names {p} as its previous period but records no previous manifest sha256",
                    s.period, run.label
                ));
                continue;
            }
        };
        let candidates: Vec<&ChainRun> = runs
            .iter()
            .filter(|r| r.schedule.period == *previous)
            .collect();
        if candidates.is_empty() {
            if before.is_none() {
                notes.push(format!(
                    "the series given starts after {previous} (not given): {} ({}) follows it (previous manifest sha256 {hash})",
                    s.period, run.label
                ));
            } else {
                problems.push(format!(
                    "{previous} is missing: {} ({}) follows it (previous manifest sha256 {hash})",
                    s.period, run.label
                ));
            }
            continue;
        }
        let not_before = candidates.iter().find(
            |q| matches!((instant(&q.schedule.period_start), start), (Some(a), Some(b)) if a >= b),
        );
        if let Some(q) = not_before {
            problems.push(format!(
                "out of order: {} ({}, starting {}) names {previous} ({}, starting {}) as its previous period, which does not start before it",
                s.period, run.label, s.period_start, q.label, q.schedule.period_start
            ));
            continue;
        }
        match candidates
            .iter()
            .find(|q| q.manifest_sha256.eq_ignore_ascii_case(hash))
        {
            Some(q) => {
                checked.push(format!(
                    "{previous} → {}: {} records the manifest sha256 {hash} of {}",
                    s.period, run.label, q.label
                ));
                note_gap(q, run, &mut notes);
            }
            None => {
                for q in candidates {
                    problems.push(format!(
                        "{previous} was replaced: its manifest ({}) hashes to {}, {} ({}) recorded {hash}",
                        q.label, q.manifest_sha256, s.period, run.label
                    ));
                }
            }
        }
    }

    let mut names: Vec<&str> = Vec::new();
    for run in &runs {
        if names.last() != Some(&run.schedule.schedule_name.as_str()) {
            names.push(&run.schedule.schedule_name);
        }
    }
    if names.len() > 1 {
        notes.push(format!("the schedule was renamed: {}", names.join(" → ")));
    }
    SeriesReport {
        schedule_id,
        schedule_name: names.last().map(|n| n.to_string()).unwrap_or_default(),
        runs,
        problems,
        notes,
        checked,
    }
}

/// Two artifacts of one period: copies of one run (identical manifests) are a note,
/// different runs a problem, as each (schedule, period) runs exactly once.
fn check_duplicates(runs: &[ChainRun], problems: &mut Vec<String>, notes: &mut Vec<String>) {
    let mut by_period: BTreeMap<&str, Vec<&ChainRun>> = BTreeMap::new();
    for run in runs {
        by_period
            .entry(run.schedule.period.as_str())
            .or_default()
            .push(run);
    }
    for (period, same) in by_period {
        if same.len() < 2 {
            continue;
        }
        let labels: Vec<&str> = same.iter().map(|r| r.label.as_str()).collect();
        let hashes: BTreeSet<&str> = same.iter().map(|r| r.manifest_sha256.as_str()).collect();
        if hashes.len() == 1 {
            notes.push(format!(
                "{period}: {} are copies of one run (identical manifests)",
                labels.join(" and ")
            ));
        } else {
            problems.push(format!(
                "{period} was run more than once (a duplicate run): {} hold different manifests for it",
                labels.join(" and ")
            ));
        }
    }
}

/// Runs of different periods that name the same previous period.
fn check_forks(runs: &[ChainRun], problems: &mut Vec<String>) {
    let mut followers: BTreeMap<&str, Vec<&ChainRun>> = BTreeMap::new();
    for run in runs {
        if let Some(p) = &run.schedule.previous_period {
            let list = followers.entry(p.as_str()).or_default();
            // Duplicates of one period are reported as such, not as a fork.
            if !list
                .iter()
                .any(|r| r.schedule.period == run.schedule.period)
            {
                list.push(run);
            }
        }
    }
    for (previous, list) in followers {
        if list.len() < 2 {
            continue;
        }
        let named: Vec<String> = list
            .iter()
            .map(|r| format!("{} ({})", r.schedule.period, r.label))
            .collect();
        let (named, all) = match named.as_slice() {
            [a, b] => (format!("{a} and {b}"), "both"),
            _ => (named.join(", "), "all"),
        };
        problems.push(format!(
            "out of order: a fork after {previous}: {named} {all} name it as their previous period"
        ));
    }
}

/// A note when `next` does not start where `previous` ended (a schedule changed
/// its interval, or periods were skipped by a server that chained them anyway).
fn note_gap(previous: &ChainRun, next: &ChainRun, notes: &mut Vec<String>) {
    let (p, n) = (&previous.schedule, &next.schedule);
    let (Some(end), Some(start)) = (instant(&p.period_end), instant(&n.period_start)) else {
        return;
    };
    let what = if end < start {
        "a gap"
    } else if end > start {
        "an overlap"
    } else {
        return;
    };
    notes.push(format!(
        "{} ({}) ends at {} but {} ({}) starts at {}: {what} between the periods",
        p.period, previous.label, p.period_end, n.period, next.label, n.period_start
    ));
}

fn instant(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn same_instant(a: &str, b: &str) -> bool {
    match (instant(a), instant(b)) {
        (Some(a), Some(b)) => a == b,
        _ => a == b,
    }
}

/// What the chain needs from a manifest, read leniently: a manifest that is JSON but
/// not a valid evidex manifest is [`verify`]'s to report.
struct ChainFields {
    /// The schedule, `Ok(None)` when the manifest has none.
    schedule: std::result::Result<Option<ManifestSchedule>, serde_json::Error>,
    previous_manifest_sha256: Option<String>,
    /// The window `[from, to)`.
    window: Option<(String, String)>,
}

fn chain_fields(artifact: &Artifact, bytes: &[u8]) -> Result<ChainFields> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        EngineError::invalid(format!("{}: not JSON: {e}", artifact.manifest_label()))
    })?;
    let text = |pointer: &str| {
        value
            .pointer(pointer)
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    let schedule = match value.get("schedule") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(s) => ManifestSchedule::deserialize(s).map(Some),
    };
    Ok(ChainFields {
        schedule,
        previous_manifest_sha256: text("/previous_manifest_sha256"),
        window: text("/window/from").zip(text("/window/to")),
    })
}

/// One artifact found among the paths given.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Artifact {
    /// A ZIP package, `manifest.json` inside.
    Zip(PathBuf),
    /// A single data file with `NAME.manifest.json` beside it.
    Single { data: PathBuf, manifest: PathBuf },
}

impl Artifact {
    /// The single data file for a manifest path `NAME.manifest.json`.
    fn beside(manifest: PathBuf, name: &str) -> Artifact {
        let stem = name.strip_suffix(MANIFEST_SUFFIX).unwrap_or(name);
        Artifact::Single {
            data: manifest.with_file_name(stem),
            manifest,
        }
    }

    /// The artifact as the user knows it: the ZIP or the data file.
    fn path(&self) -> &Path {
        match self {
            Artifact::Zip(p) => p,
            Artifact::Single { data, .. } => data,
        }
    }

    /// What [`verify`] is given: the manifest of a single file, so that a missing
    /// data file is a problem it reports rather than a file not found.
    fn verify_path(&self) -> &Path {
        match self {
            Artifact::Zip(p) => p,
            Artifact::Single { manifest, .. } => manifest,
        }
    }

    fn manifest_label(&self) -> String {
        match self {
            Artifact::Zip(p) => format!("{}/{MANIFEST_NAME}", p.display()),
            Artifact::Single { manifest, .. } => manifest.display().to_string(),
        }
    }

    /// The manifest's bytes exactly as stored.
    fn read_manifest(&self) -> Result<Vec<u8>> {
        match self {
            Artifact::Single { manifest, .. } => {
                std::fs::read(manifest).map_err(|e| io_at(manifest, e))
            }
            Artifact::Zip(path) => {
                let file = File::open(path).map_err(|e| io_at(path, e))?;
                let mut zip = zip::ZipArchive::new(BufReader::new(file)).map_err(|e| {
                    EngineError::invalid(format!("{}: not a readable ZIP: {e}", path.display()))
                })?;
                let mut entry = zip.by_name(MANIFEST_NAME).map_err(|e| {
                    EngineError::invalid(format!(
                        "{}: no readable {MANIFEST_NAME}: {e}",
                        path.display()
                    ))
                })?;
                let mut bytes = Vec::new();
                entry
                    .read_to_end(&mut bytes)
                    .map_err(|e| io_at(&path.join(MANIFEST_NAME), e))?;
                Ok(bytes)
            }
        }
    }
}

/// The artifacts among `inputs`, each once, in the order given (a directory's in
/// name order).
fn find_artifacts(inputs: &[PathBuf]) -> Result<Vec<Artifact>> {
    let mut found = Vec::new();
    for input in inputs {
        let meta = std::fs::metadata(input).map_err(|e| io_at(input, e))?;
        if meta.is_dir() {
            let mut entries = Vec::new();
            for entry in std::fs::read_dir(input).map_err(|e| io_at(input, e))? {
                entries.push(entry.map_err(|e| io_at(input, e))?.path());
            }
            entries.sort();
            for path in entries {
                let name = file_name(&path);
                if !path.is_file() {
                    continue;
                }
                if name.ends_with(".zip") {
                    found.push(Artifact::Zip(path));
                } else if name.ends_with(MANIFEST_SUFFIX) {
                    found.push(Artifact::beside(path, &name));
                }
            }
        } else {
            found.push(classify_file(input)?);
        }
    }
    let mut seen = BTreeSet::new();
    found.retain(|a| {
        let p = a.verify_path();
        seen.insert(std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf()))
    });
    if found.is_empty() {
        let given: Vec<String> = inputs.iter().map(|p| p.display().to_string()).collect();
        return Err(EngineError::invalid(format!(
            "no artifacts found in {}: give ZIP packages, data files with their .manifest.json beside them, or directories holding them",
            if given.is_empty() {
                "nothing (no paths given)".to_string()
            } else {
                given.join(", ")
            }
        )));
    }
    Ok(found)
}

/// A file given by name: a manifest, a ZIP, or a data file with its manifest beside.
fn classify_file(path: &Path) -> Result<Artifact> {
    let name = file_name(path);
    if name.ends_with(MANIFEST_SUFFIX) {
        return Ok(Artifact::beside(path.to_path_buf(), &name));
    }
    let mut head = [0u8; 4];
    let mut file = File::open(path).map_err(|e| io_at(path, e))?;
    match file.read_exact(&mut head) {
        Ok(()) if head == *b"PK\x03\x04" => return Ok(Artifact::Zip(path.to_path_buf())),
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {}
        Err(e) => return Err(io_at(path, e)),
    }
    let manifest = path.with_file_name(format!("{name}{MANIFEST_SUFFIX}"));
    if !manifest.is_file() {
        return Err(EngineError::invalid(format!(
            "{}: neither a ZIP package nor a data file with its manifest {} beside it",
            path.display(),
            manifest.display()
        )));
    }
    Ok(Artifact::Single {
        data: path.to_path_buf(),
        manifest,
    })
}

/// Each artifact's name in messages: its file name, or its full path where two
/// artifacts share a file name.
fn labels(found: &[Artifact]) -> Vec<String> {
    let names: Vec<String> = found.iter().map(|a| file_name(a.path())).collect();
    names
        .iter()
        .zip(found)
        .map(|(name, a)| {
            if names.iter().filter(|n| *n == name).count() > 1 {
                a.path().display().to_string()
            } else {
                name.clone()
            }
        })
        .collect()
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// An I/O error that names the path it happened on, keeping its kind.
fn io_at(path: &Path, e: io::Error) -> EngineError {
    EngineError::Io(io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests;
