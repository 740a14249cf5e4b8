//! Compaction: rewriting each crowded date partition's many small files into one
//! sorted file, all of them in one Delta commit.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::NaiveDate;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Remove};
use deltalake::protocol::DeltaOperation;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;

use super::append::AppendState;
use super::{DataFile, Lake, LakeTable, dataset_slot, paths, table};
use crate::error::{EngineError, Result};
use crate::model::{DATE_PARTITION, Dataset};

/// What a compaction did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactOutcome {
    /// Date partitions rewritten.
    pub partitions: usize,
    /// Files replaced.
    pub files_removed: usize,
    /// Files written.
    pub files_added: usize,
}

impl Lake {
    /// Rewrites every date partition that has at least `min_files` files into one
    /// sorted file each, all in one commit (Delta's OPTIMIZE: `dataChange` false).
    /// Readers of older versions keep their files (until vacuum); readers of the new
    /// version see each row exactly once.
    ///
    /// # Errors
    /// Store, query and commit errors; the files written for a commit that failed
    /// are deleted (unless the table names them after all). A commit that lost to
    /// another writer's is not an error: nothing changes, and it is logged.
    pub async fn compact(&self, dataset: Dataset, min_files: usize) -> Result<CompactOutcome> {
        // Under the append lock from here to the end: no append runs meanwhile (the
        // server's batcher compacts between its batches anyway). So the last append's
        // key index update can end first — the index has then read every file this
        // compaction replaces — and the Delta state the appends keep serves as the
        // compaction's snapshot, and is advanced by its commit: neither the
        // compaction nor the next append loads the table again.
        let mut appends = self.append_states[dataset_slot(dataset)].lock().await;
        self.flush_index_of(dataset, appends.as_mut()).await?;
        if let Some(s) = appends.as_mut()
            && !self.is_latest(dataset, s).await?
        {
            *appends = None;
        }
        if appends.is_none() {
            let Some(table) = self.load(dataset, None).await? else {
                return Ok(CompactOutcome::default());
            };
            *appends = Some(AppendState::loaded(&table)?);
        }
        let state = appends.as_mut().expect("loaded above");
        let snapshot = self.files_of(dataset, state.table().await?)?;
        let mut by_date: BTreeMap<(NaiveDate, Option<String>), Vec<DataFile>> = BTreeMap::new();
        for f in snapshot.files {
            by_date
                .entry((f.date, f.cluster.clone()))
                .or_default()
                .push(f);
        }
        let due: Vec<_> = by_date
            .into_iter()
            .filter(|(_, files)| files.len() >= min_files.max(2))
            .collect();
        if due.is_empty() {
            return Ok(CompactOutcome::default());
        }
        // Every due partition in one commit: a commit per partition cost a Delta
        // commit, a state update and (in the server) a reload of the table by the
        // next append each — measured with one ingest client, compactions of five
        // partitions took 450-580 ms, most of it that overhead, and the requests
        // behind them waited.
        let ctx = table::session_context(self, 256 << 20);
        let now = self.clock.now().timestamp_millis();
        let mut actions: Vec<Action> = Vec::new();
        // Per partition: the new file (relative path) and the files it replaces.
        let mut rewritten: Vec<(String, Vec<String>)> = Vec::new();
        for ((date, cluster), files) in &due {
            let provider = LakeTable::new(dataset, files.clone(), self.store_url.clone(), true);
            let written = async {
                let df = ctx.read_table(Arc::new(provider))?;
                let df = df.sort(table::sort_exprs(dataset))?;
                let stream = df.execute_stream().await?;
                self.write_file(
                    dataset,
                    *date,
                    cluster.as_deref(),
                    stream.map_err(EngineError::from),
                )
                .await
            }
            .await;
            let mut add = match written {
                Ok(add) => add,
                Err(e) => {
                    // The files written so far are orphans no commit names.
                    self.delete_rewritten(dataset, &rewritten).await;
                    return Err(e);
                }
            };
            add.data_change = false;
            actions.extend(files.iter().map(|f| {
                Action::Remove(Remove {
                    path: f.relative.clone(),
                    data_change: false,
                    deletion_timestamp: Some(now),
                    extended_file_metadata: Some(true),
                    partition_values: Some(HashMap::from([(
                        DATE_PARTITION.to_string(),
                        Some(date.format("%Y-%m-%d").to_string()),
                    )])),
                    size: Some(f.size as i64),
                    tags: None,
                    deletion_vector: None,
                    base_row_id: None,
                    default_row_commit_version: None,
                })
            }));
            rewritten.push((
                add.path.clone(),
                files.iter().map(|f| f.relative.clone()).collect(),
            ));
            actions.push(Action::Add(add));
        }
        let operation = DeltaOperation::Optimize {
            predicate: None,
            target_size: 0,
        };
        let log_store = state.log_store.clone();
        let committed = CommitBuilder::from(CommitProperties::default().with_max_retries(20))
            .with_actions(actions)
            .build(Some(state.table().await?), log_store, operation)
            .await;
        let mut outcome = CompactOutcome::default();
        match committed {
            Ok(commit) => {
                // Each new file holds exactly the keys of the files it replaced.
                let mut all_recorded = true;
                if let Some(index) = self.id_index()? {
                    for (new, removed) in &rewritten {
                        let removed: Vec<&str> = removed.iter().map(String::as_str).collect();
                        if removed.iter().try_fold(true, |all, f| {
                            Ok::<_, EngineError>(all && index.has_file(dataset, f)?)
                        })? {
                            index.record(dataset, [], &[new.as_str()], &removed)?;
                        } else {
                            all_recorded = false;
                        }
                    }
                }
                // Another writer's commits may have come in between (Delta rebased
                // this one on them): then the next append loads the table again
                // and the key index reads their files. Otherwise the appends go on
                // from this commit's state.
                if commit.version == state.version + 1 {
                    state.committed(commit.snapshot);
                    state.indexed = state
                        .indexed
                        .filter(|_| all_recorded)
                        .map(|_| state.version);
                } else {
                    *appends = None;
                }
                outcome.partitions = rewritten.len();
                outcome.files_removed = rewritten.iter().map(|(_, r)| r.len()).sum();
                outcome.files_added = rewritten.len();
            }
            Err(e) => {
                // Someone else rewrote one of these partitions first, and our files
                // are orphans, unless the commit landed after all (a retried
                // conditional PUT): never delete a file the table names.
                *appends = None;
                let Some(table) = self.load(dataset, None).await? else {
                    return Ok(outcome);
                };
                let named = self.files_of(dataset, table.snapshot()?)?.files;
                if !rewritten
                    .iter()
                    .any(|(new, _)| named.iter().any(|f| &f.relative == new))
                {
                    self.delete_rewritten(dataset, &rewritten).await;
                }
                tracing::warn!(error = %e, "compaction commit lost a race");
            }
        }
        Ok(outcome)
    }

    /// Deletes the new files of a compaction that did not commit (best effort).
    async fn delete_rewritten(&self, dataset: Dataset, rewritten: &[(String, Vec<String>)]) {
        for (new, _) in rewritten {
            let path = paths::in_store(&self.table_root(dataset), new);
            let _ = self.store.delete(&path).await;
        }
    }
}

/// What a vacuum did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VacuumOutcome {
    /// Data files deleted.
    pub files_deleted: usize,
}

impl Lake {
    /// Deletes the data files compaction replaced more than `retention` ago (Delta
    /// VACUUM, lite mode: only files the log removed). Table versions older than
    /// that can no longer be read, re-runs pinned to them fail, and event stream
    /// cursors into the commits that appended those files expire (`410`).
    ///
    /// `retention` defaults to the table's `delta.deletedFileRetentionDuration`
    /// (30 days for tables evidex creates); a shorter one is refused unless `force`.
    ///
    /// # Errors
    /// [`EngineError::Delta`] when the retention is below the table's and `force` is
    /// not set, or the vacuum fails.
    pub async fn vacuum(
        &self,
        dataset: Dataset,
        retention: Option<chrono::Duration>,
        force: bool,
    ) -> Result<VacuumOutcome> {
        let Some(table) = self.load(dataset, None).await? else {
            return Ok(VacuumOutcome::default());
        };
        let mut builder = table
            .vacuum()
            .with_enforce_retention_duration(!force)
            .with_clock(Arc::new(LakeClock(self.clock.clone())));
        if let Some(r) = retention {
            builder = builder.with_retention_period(r);
        }
        let (_, metrics) = builder.await?;
        Ok(VacuumOutcome {
            files_deleted: metrics.files_deleted.len(),
        })
    }
}

/// The lake's clock as deltalake's vacuum asks for it.
#[derive(Debug)]
struct LakeClock(Arc<dyn crate::clock::Clock>);

impl deltalake::operations::vacuum::Clock for LakeClock {
    fn current_timestamp_millis(&self) -> i64 {
        self.0.now().timestamp_millis()
    }
}

/// What an orphan sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepOutcome {
    /// Data files deleted: written by an append or compaction that never committed
    /// them (the process died, or the commit failed).
    pub files_deleted: usize,
}

/// The least age of an orphan file that a sweep deletes without `force`: twice
/// [`super::APPEND_COMMIT_WINDOW`], so a running append's files are never taken.
pub const MIN_ORPHAN_AGE: chrono::Duration = chrono::Duration::hours(2);

impl Lake {
    /// Deletes the data files of `dataset` that no version of the Delta log names
    /// (not in the current version, and not removed by a commit whose files vacuum
    /// has yet to delete) and that were last modified more than `older_than` ago:
    /// the leftovers of appends and compactions that wrote files and died before
    /// their commit. Delta's own full VACUUM would delete them only after the
    /// table's whole retention (30 days) and together with the files time travel
    /// still reads; this keeps the two apart. Hidden paths (`_delta_log/`, names
    /// starting with `_` or `.`) are never touched.
    ///
    /// Safe beside running writers as long as `older_than` is at least
    /// [`MIN_ORPHAN_AGE`]: an append writes its files again rather than commit
    /// files older than [`super::APPEND_COMMIT_WINDOW`]. A shorter age is refused
    /// unless `force` (for a lake no process is writing to).
    ///
    /// # Errors
    /// [`EngineError::Config`] for a short age without `force`; store and log
    /// errors otherwise (files already deleted stay deleted).
    pub async fn sweep_orphans(
        &self,
        dataset: Dataset,
        older_than: chrono::Duration,
        force: bool,
    ) -> Result<SweepOutcome> {
        if older_than < MIN_ORPHAN_AGE && !force {
            return Err(EngineError::Config(format!(
                "an orphan sweep age of {} minutes could delete the files of an append still running; use at least {} minutes, or force it when nothing writes to the lake",
                older_than.num_minutes(),
                MIN_ORPHAN_AGE.num_minutes()
            )));
        }
        let Some(table) = self.load(dataset, None).await? else {
            return Ok(SweepOutcome::default());
        };
        let mut named: std::collections::HashSet<String> = self
            .files_of(dataset, table.snapshot()?)?
            .files
            .into_iter()
            .map(|f| f.relative)
            .collect();
        let log_store = table.log_store();
        let state = table.snapshot()?;
        let mut tombstones = state.all_tombstones(log_store.as_ref());
        while let Some(t) = tombstones.try_next().await? {
            named.insert(t.path().into_owned());
        }
        let root = self.table_root(dataset);
        let prefix = format!("{}/", root.as_ref());
        let cutoff = self.clock.now() - older_than;
        let mut listing = self.store.list(Some(&root));
        let mut orphans = Vec::new();
        while let Some(meta) = listing.try_next().await? {
            let full = meta.location.as_ref();
            let relative = full.strip_prefix(&prefix).unwrap_or(full);
            let hidden = relative
                .split('/')
                .any(|part| part.starts_with('_') || part.starts_with('.'));
            if hidden || !relative.ends_with(".parquet") || named.contains(relative) {
                continue;
            }
            if meta.last_modified <= cutoff {
                orphans.push(meta.location);
            }
        }
        let mut outcome = SweepOutcome::default();
        for path in orphans {
            tracing::info!(path = %path, "deleting a data file no commit names");
            match self.store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => outcome.files_deleted += 1,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(outcome)
    }
}
