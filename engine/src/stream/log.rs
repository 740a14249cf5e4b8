//! The events table's Delta log as the stream reads it: which data files each
//! commit appended, and from which version on every appended file is still kept.
//!
//! Delta protocol (PROTOCOL.md, "Delta Log Entries"): commit `v` is the JSON-lines
//! object `_delta_log/{v:020}.json`; an `add` with `dataChange: true` brings new
//! rows, while compaction (`OPTIMIZE`) adds and removes files with
//! `dataChange: false` — the same rows in new files — so the stream skips it, as
//! Delta's own streaming source does. `VACUUM START` records the retention it ran
//! with; every file removed before `commit time - retention` may be gone after it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures::StreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::Deserialize;
use serde_json::Value;

use crate::error::{EngineError, Result};

/// A data file a commit appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendedFile {
    /// Path relative to the table root, as in the log (percent-decoded).
    pub relative: String,
    /// Rows in the file (`stats.numRecords`).
    pub rows: u64,
    /// Size in bytes, when the log gives it.
    pub size: Option<u64>,
}

/// One commit, reduced to what the stream needs.
#[derive(Debug, Clone, Default)]
pub struct Commit {
    /// Commit time (`commitInfo.timestamp`), milliseconds since the Unix epoch (UTC).
    pub timestamp_ms: Option<i64>,
    /// Files with new rows (`add` with `dataChange: true`), in log order.
    pub appended: Vec<AppendedFile>,
    /// Files removed, with their deletion time in ms (any `remove`).
    pub removed: Vec<(String, i64)>,
    /// For `VACUUM START`: the retention it deleted with, in ms.
    pub vacuum_retention_ms: Option<i64>,
    /// `metaData.id`, when the commit carries table metadata.
    pub table_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Line {
    add: Option<AddLine>,
    remove: Option<RemoveLine>,
    commit_info: Option<Value>,
    meta_data: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AddLine {
    path: String,
    #[serde(default)]
    data_change: bool,
    stats: Option<String>,
    size: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RemoveLine {
    path: String,
    deletion_timestamp: Option<i64>,
}

/// The object path of commit `version` under a table root.
pub fn commit_path(table_root: &Path, version: u64) -> Path {
    crate::lake::paths::in_store(table_root, &format!("_delta_log/{version:020}.json"))
}

/// Parses a commit file. Unknown actions are ignored (they carry no rows).
pub fn parse_commit(bytes: &[u8]) -> Result<Commit> {
    let mut commit = Commit::default();
    for (n, line) in bytes.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let line: Line = serde_json::from_slice(line).map_err(|e| {
            EngineError::Config(format!("Delta log line {}: not a log action: {e}", n + 1))
        })?;
        if let Some(add) = line.add
            && add.data_change
        {
            let rows = add
                .stats
                .as_deref()
                .and_then(|s| serde_json::from_str::<Value>(s).ok())
                .and_then(|s| s.get("numRecords").and_then(Value::as_u64))
                .ok_or_else(|| {
                    EngineError::Config(format!(
                        "Delta log: file {} has no numRecords statistic",
                        add.path
                    ))
                })?;
            commit.appended.push(AppendedFile {
                relative: decode_path(&add.path),
                rows,
                size: add.size,
            });
        }
        if let Some(remove) = line.remove {
            commit.removed.push((
                decode_path(&remove.path),
                remove.deletion_timestamp.unwrap_or(0),
            ));
        }
        if let Some(info) = line.commit_info {
            commit.timestamp_ms = info.get("timestamp").and_then(Value::as_i64);
            if info.get("operation").and_then(Value::as_str) == Some("VACUUM START") {
                let params = info.get("operationParameters");
                let millis = |key: &str| {
                    params.and_then(|p| p.get(key)).and_then(|v| match v {
                        Value::Number(n) => n.as_i64(),
                        Value::String(s) => s.parse().ok(),
                        _ => None,
                    })
                };
                commit.vacuum_retention_ms = Some(
                    millis("specifiedRetentionMillis")
                        .or_else(|| millis("defaultRetentionMillis"))
                        .unwrap_or(0),
                );
            }
        }
        if let Some(meta) = line.meta_data {
            commit.table_id = meta.get("id").and_then(Value::as_str).map(str::to_string);
        }
    }
    Ok(commit)
}

/// The bytes of the object at `path`, `None` when there is none.
async fn fetch(store: Arc<dyn ObjectStore>, path: Path) -> Result<Option<bytes::Bytes>> {
    match store.get(&path).await {
        Ok(r) => Ok(Some(r.bytes().await?)),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(EngineError::from(e)),
    }
}

/// Paths in the Delta log are URL-encoded (RFC 3986 percent-encoding).
fn decode_path(path: &str) -> String {
    match Path::from_url_path(path) {
        Ok(p) => p.to_string(),
        Err(_) => path.to_string(),
    }
}

/// What one process knows of the log, read once and extended commit by commit.
/// Its size is bounded by the table, not its history: the appended files still in
/// the table, one entry per compaction commit not yet covered by a vacuum, and the
/// file lists of the last [`RECENT_COMMITS`] commits.
#[derive(Debug, Default)]
pub struct LogState {
    /// `metaData.id` of the table (from commit 0).
    pub table_id: Option<String>,
    /// The first version not read yet (the table's latest version + 1).
    pub next: u64,
    /// The oldest version whose appended files are all still kept.
    pub floor: u64,
    /// Appended files still in the table, with the version that appended them.
    live: HashMap<String, u64>,
    /// Per commit that removed appended files: its deletion time (ms) and the
    /// newest version among the commits that had appended them.
    removed: Vec<(i64, u64)>,
    /// The appended files of recently read commits (the stream reads them again).
    recent: BTreeMap<u64, Arc<Vec<AppendedFile>>>,
}

/// How many commits a refresh fetches at once.
const FETCH_AHEAD: usize = 16;
/// Commits whose appended files stay cached.
pub const RECENT_COMMITS: usize = 4096;

impl LogState {
    /// Reads every commit after the last one read; returns how many were new.
    pub async fn refresh(
        &mut self,
        store: &Arc<dyn ObjectStore>,
        table_root: &Path,
    ) -> Result<u64> {
        let start = self.next;
        loop {
            let versions: Vec<u64> = (self.next..self.next + FETCH_AHEAD as u64).collect();
            let requests: Vec<_> = versions
                .iter()
                .map(|v| fetch(store.clone(), commit_path(table_root, *v)))
                .collect();
            let fetched: Vec<Result<Option<bytes::Bytes>>> = futures::stream::iter(requests)
                .buffered(FETCH_AHEAD)
                .collect()
                .await;
            let mut complete = true;
            for (v, bytes) in versions.into_iter().zip(fetched) {
                let Some(bytes) = bytes? else {
                    complete = false;
                    break;
                };
                let commit = parse_commit(&bytes)
                    .map_err(|e| EngineError::Config(format!("events commit {v}: {e}")))?;
                self.apply(v, commit);
            }
            if !complete {
                return Ok(self.next - start);
            }
        }
    }

    fn apply(&mut self, version: u64, commit: Commit) {
        if self.table_id.is_none() {
            self.table_id = commit.table_id.clone();
        }
        for f in &commit.appended {
            self.live.insert(f.relative.clone(), version);
        }
        let mut removed: Option<(i64, u64)> = None;
        for (path, deleted_at) in &commit.removed {
            // Files compaction wrote (not appended) are not the stream's concern.
            if let Some(v) = self.live.remove(path) {
                let (t, m) = removed.unwrap_or((*deleted_at, v));
                removed = Some((t.max(*deleted_at), m.max(v)));
            }
        }
        self.removed.extend(removed);
        if let (Some(retention), Some(at)) = (commit.vacuum_retention_ms, commit.timestamp_ms) {
            // The vacuum deleted what was removed before `at - retention`.
            let cutoff = at - retention;
            let floor = &mut self.floor;
            self.removed.retain(|(deleted_at, newest)| {
                if *deleted_at < cutoff {
                    *floor = (*floor).max(newest + 1);
                    false
                } else {
                    true
                }
            });
        }
        if self.recent.len() >= RECENT_COMMITS {
            self.recent.pop_first();
        }
        self.recent.insert(version, Arc::new(commit.appended));
        self.next = version + 1;
    }

    /// The commit time (ms) of `version`, if the log still has it and it has one.
    pub async fn commit_time(
        &self,
        store: &Arc<dyn ObjectStore>,
        table_root: &Path,
        version: u64,
    ) -> Result<Option<i64>> {
        Ok(
            match fetch(store.clone(), commit_path(table_root, version)).await? {
                Some(bytes) => parse_commit(&bytes)?.timestamp_ms,
                None => None,
            },
        )
    }

    /// The first version whose commit time is at or after `ms` (the next version to
    /// be written when none is); it may be below the floor. A binary search over
    /// commit times: writers stamp commits with their clocks, which Delta assumes
    /// move forward (PROTOCOL.md, "Commit Provenance" / in-commit timestamps).
    pub async fn first_at_or_after(
        &self,
        store: &Arc<dyn ObjectStore>,
        table_root: &Path,
        ms: i64,
    ) -> Result<u64> {
        let (mut lo, mut hi) = (0, self.next);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.commit_time(store, table_root, mid).await? {
                Some(t) if t >= ms => hi = mid,
                _ => lo = mid + 1,
            }
        }
        Ok(lo)
    }

    /// The appended files of `version` (from the cache, or read again).
    pub async fn appended(
        &mut self,
        store: &Arc<dyn ObjectStore>,
        table_root: &Path,
        version: u64,
    ) -> Result<Option<Arc<Vec<AppendedFile>>>> {
        if let Some(files) = self.recent.get(&version) {
            return Ok(Some(files.clone()));
        }
        match store.get(&commit_path(table_root, version)).await {
            Ok(r) => {
                let commit = parse_commit(&r.bytes().await?)?;
                Ok(Some(Arc::new(commit.appended)))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_appends_and_skips_compaction() {
        let append = br#"{"add":{"path":"date=2026-01-01/part-a.parquet","partitionValues":{},"size":1,"modificationTime":1,"dataChange":true,"stats":"{\"numRecords\":3}"}}
{"commitInfo":{"timestamp":1000,"operation":"WRITE"}}
"#;
        let c = parse_commit(append).unwrap();
        assert_eq!(c.appended.len(), 1);
        assert_eq!(c.appended[0].rows, 3);
        assert_eq!(c.timestamp_ms, Some(1000));
        let optimize = br#"{"add":{"path":"date=2026-01-01/part-b.parquet","partitionValues":{},"size":1,"modificationTime":1,"dataChange":false,"stats":"{\"numRecords\":3}"}}
{"remove":{"path":"date=2026-01-01/part-a.parquet","dataChange":false,"deletionTimestamp":2000}}
{"commitInfo":{"timestamp":2000,"operation":"OPTIMIZE"}}
"#;
        let c = parse_commit(optimize).unwrap();
        assert!(c.appended.is_empty());
        assert_eq!(
            c.removed,
            vec![("date=2026-01-01/part-a.parquet".into(), 2000)]
        );
        let vacuum = br#"{"commitInfo":{"timestamp":9000,"operation":"VACUUM START","operationParameters":{"specifiedRetentionMillis":"1000","defaultRetentionMillis":"604800000"}}}"#;
        let c = parse_commit(vacuum).unwrap();
        assert_eq!(c.vacuum_retention_ms, Some(1000));

        let mut state = LogState::default();
        state.apply(0, Commit::default());
        state.apply(1, parse_commit(append).unwrap());
        state.apply(2, parse_commit(optimize).unwrap());
        assert_eq!(state.floor, 0);
        assert!(state.live.is_empty(), "the appended file was replaced");
        state.apply(3, parse_commit(vacuum).unwrap());
        assert_eq!(state.floor, 2, "the file of commit 1 was vacuumed");
        assert!(state.removed.is_empty());
    }

    #[tokio::test]
    async fn since_finds_the_first_commit_at_or_after() {
        use object_store::memory::InMemory;
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let root = Path::from("events");
        let mut state = LogState::default();
        for (v, t) in [1000, 2000, 2000, 5000].iter().enumerate() {
            let body =
                format!("{{\"commitInfo\":{{\"timestamp\":{t},\"operation\":\"WRITE\"}}}}\n");
            store
                .put(&commit_path(&root, v as u64), body.into())
                .await
                .unwrap();
        }
        assert_eq!(state.refresh(&store, &root).await.unwrap(), 4);
        for (ms, want) in [
            (0, 0),
            (1000, 0),
            (1001, 1),
            (2000, 1),
            (4999, 3),
            (5001, 4),
        ] {
            assert_eq!(
                state.first_at_or_after(&store, &root, ms).await.unwrap(),
                want,
                "{ms}"
            );
        }
        assert_eq!(
            state.commit_time(&store, &root, 3).await.unwrap(),
            Some(5000)
        );
    }
}
