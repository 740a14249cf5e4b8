//! The key index: every record key stored in the lake, so that a re-sent record is
//! recognised as "already stored" whatever its timestamp (SPEC, "Data in": `id` alone
//! is the key, and the first stored copy wins).
//!
//! The Parquet files cannot answer "is this id stored?" cheaply: files are laid out by
//! date, and a retry re-stamped by a forwarder can land on any date. Scanning every
//! file's ids per commit would make ingest cost grow with the lake, so the lake keeps
//! this index beside its state: an LSM tree (`fjall`, a well-kept embedded key-value
//! store) whose writes are sequential and whose point lookups of absent keys are
//! answered by per-segment Bloom filters — the usual case at ingest, where most ids
//! are new. Memory stays bounded by fjall's cache, not by the number of ids.
//!
//! The index is *derived* data: the Delta table stays the truth. It records which data
//! files it has read (`files` keyspace); before every append the lake hands it the
//! current table snapshot, and files it has not seen (written by another process, or
//! committed just before a crash that lost the index update) have their keys read and
//! added. So the index can be deleted at any time and is rebuilt on the next append.
//! Writes are not synced to disk for the same reason: what a crash loses is re-read.
//!
//! The index folder is named by the lake's location (a state directory may serve
//! several lakes), and a `.root` file beside it names that location. A local lake
//! whose directory was moved finds its index again: when its own folder is missing
//! and exactly one index belongs to a local lake that no longer exists, that folder
//! is renamed, not rebuilt (a 10 M-key rebuild reads every file and costs a quarter
//! of the CPU of ingest while LSM merges run).
//!
//! One process at a time holds the index (fjall locks its folder). Another process
//! that appends while the server holds it (`evidex ingest` beside `evidex serve`)
//! gets [`IdIndex::open`] = `None` and the lake falls back to reading the stored keys
//! of every file, which is exact but slower. Two processes that append the same new
//! id in the same instant can both store it: each checks before the other commits.
//! One ingest writer per lake (the server's batcher) avoids that; several ingest
//! nodes will need a shared key table (a unique key in PostgreSQL).
//!
//! Keys of events that retention later deletes stay in the index, so re-sending a
//! purged event counts as "already stored".

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use fjall::config::PartitioningPolicy;
use fjall::{Database, Keyspace, KeyspaceCreateOptions};
use sha2::{Digest, Sha256};

use super::append::AppendState;
use super::{Lake, TableSnapshot, dataset_slot};
use crate::error::{EngineError, Result};
use crate::integrity::sha256_hex;
use crate::model::Dataset;

/// Keys up to this many bytes are stored as they are; longer ones as a SHA-256 (a
/// collision would need a second preimage), so the index never holds megabyte keys.
const MAX_PLAIN_KEY: usize = 256;

/// Options of the keyspaces that hold keys: Bloom filters and block indexes split into
/// partitions at every level, so a lookup loads one small partition through the cache.
/// With fjall's defaults (whole per-table filters above level 3, unpinned below level
/// 0) the filters of a few million keys outgrow the cache, and every lookup re-read
/// and re-checksummed a table's whole filter: measured, `evidex generate` of 10 M
/// events slowed from 1 M events per 7 s to a crawl after about 6 M (`perf`: file
/// reads and `xxh3` over long inputs, 96 % of samples).
fn key_options() -> KeyspaceCreateOptions {
    KeyspaceCreateOptions::default()
        .filter_block_partitioning_policy(PartitioningPolicy::all(true))
        .index_block_partitioning_policy(PartitioningPolicy::all(true))
}

/// The key index's folder name under the state directory's `key-index`: the lake's
/// hash plus the layout version (fjall keeps a keyspace's options from its creation,
/// so new options need a new index; the old folder is removed).
const LAYOUT: &str = "2";

/// The key index of one lake, shared by every `Lake` handle of the process.
pub struct IdIndex {
    db: Database,
    keys: HashMap<Dataset, Keyspace>,
    files: Keyspace,
    /// Which Delta table (its `metaData.id`) each dataset's keys came from.
    tables: Keyspace,
}

impl std::fmt::Debug for IdIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdIndex")
    }
}

/// Indexes opened by this process, by folder: a second `Lake::open` of the same data
/// shares the first one's index instead of failing on fjall's lock.
static OPEN: Mutex<Vec<(PathBuf, Weak<IdIndex>)>> = Mutex::new(Vec::new());

impl IdIndex {
    /// Opens (or creates) the index in `dir`. `Ok(None)` when another process holds
    /// it; other failures (permissions, a corrupt folder) are errors.
    pub fn open(dir: &Path) -> Result<Option<Arc<IdIndex>>> {
        let mut open = OPEN.lock().expect("index registry lock");
        open.retain(|(_, w)| w.strong_count() > 0);
        if let Some(index) = open
            .iter()
            .find(|(p, _)| p == dir)
            .and_then(|(_, w)| w.upgrade())
        {
            return Ok(Some(index));
        }
        std::fs::create_dir_all(dir)?;
        let db = match Database::builder(dir)
            .cache_size(16 << 20)
            .worker_threads(1)
            .open()
        {
            Ok(db) => db,
            Err(fjall::Error::Locked) => return Ok(None),
            Err(e) => return Err(index_error(dir, e)),
        };
        let mut keys = HashMap::new();
        for ds in Dataset::ALL {
            let ks = db
                .keyspace(ds.table_name(), key_options)
                .map_err(|e| index_error(dir, e))?;
            keys.insert(ds, ks);
        }
        let files = db
            .keyspace("indexed_files", KeyspaceCreateOptions::default)
            .map_err(|e| index_error(dir, e))?;
        let tables = db
            .keyspace("tables", KeyspaceCreateOptions::default)
            .map_err(|e| index_error(dir, e))?;
        let index = Arc::new(IdIndex {
            db,
            keys,
            files,
            tables,
        });
        open.push((dir.to_path_buf(), Arc::downgrade(&index)));
        Ok(Some(index))
    }

    /// The index's form of a record key.
    fn encode(key: &str) -> Vec<u8> {
        Self::with_encoded(key, <[u8]>::to_vec)
    }

    /// Calls `f` with the index's form of `key`, without allocating for the usual
    /// short key (lookups are on the ingest hot path).
    fn with_encoded<R>(key: &str, f: impl FnOnce(&[u8]) -> R) -> R {
        if key.len() <= MAX_PLAIN_KEY {
            f(key.as_bytes())
        } else {
            let prefix = b"\xffsha256:";
            let mut v = Vec::with_capacity(prefix.len() + 32);
            v.extend_from_slice(prefix);
            v.extend_from_slice(&Sha256::digest(key.as_bytes()));
            f(&v)
        }
    }

    fn file_key(dataset: Dataset, relative: &str) -> Vec<u8> {
        format!("{}/{relative}", dataset.table_name()).into_bytes()
    }

    /// Makes sure the index holds keys of the Delta table `table_id` (its
    /// `metaData.id`; `None`: the table does not exist). When the table was
    /// replaced — the data directory deleted or pointed elsewhere while the state
    /// stayed — every key of the dataset is forgotten, so no record of the new table
    /// is ever taken for a record of the old one.
    pub fn ensure_table(&self, dataset: Dataset, table_id: Option<&str>) -> Result<()> {
        let err = |e| index_error(self.db_path(), e);
        let name = dataset.table_name();
        let stored = self.tables.get(name).map_err(err)?;
        let same = match (&stored, table_id) {
            (Some(s), Some(t)) => s.as_ref() == t.as_bytes(),
            (None, None) => true,
            _ => false,
        };
        if same {
            return Ok(());
        }
        if stored.is_some() {
            tracing::warn!(
                table = name,
                "the lake's table is not the one the key index was built from; rebuilding the index"
            );
        }
        self.keys[&dataset].clear().map_err(err)?;
        let prefix = format!("{name}/");
        let mut batch = self.db.batch();
        for kv in self.files.prefix(prefix.as_bytes()) {
            let key = kv.key().map_err(err)?;
            batch.remove(&self.files, key);
        }
        match table_id {
            Some(t) => batch.insert(&self.tables, name, t.as_bytes()),
            None => batch.remove(&self.tables, name),
        }
        batch.commit().map_err(err)
    }

    /// Whether the keys of data file `relative` are in the index.
    pub fn has_file(&self, dataset: Dataset, relative: &str) -> Result<bool> {
        self.files
            .contains_key(Self::file_key(dataset, relative))
            .map_err(|e| index_error(self.db_path(), e))
    }

    /// Whether `key` is stored.
    pub fn contains(&self, dataset: Dataset, key: &str) -> Result<bool> {
        Self::with_encoded(key, |k| self.keys[&dataset].contains_key(k))
            .map_err(|e| index_error(self.db_path(), e))
    }

    /// Which of `keys` are stored, or are in `pending` (keys of a commit whose index
    /// update may still be running; sorted), looked up on two threads when there are
    /// many (the lookups are the ingest commit's serial part; the other core is
    /// usually parsing the next requests, but not all the time).
    ///
    /// The keys are looked up in sorted order: consecutive lookups then walk the
    /// same memtable skiplist nodes and table blocks, which are still in the CPU
    /// cache (measured: the lookups took about a third less time than in arrival
    /// order on random ids). The same order finds `pending` keys in one merge pass.
    pub fn contains_many(
        &self,
        dataset: Dataset,
        keys: &[&str],
        pending: &[String],
    ) -> Result<Vec<bool>> {
        let mut order: Vec<u32> = (0..keys.len() as u32).collect();
        order.sort_unstable_by_key(|&i| keys[i as usize]);
        let mut out = vec![false; keys.len()];
        if !pending.is_empty() {
            // Both sorted: a merge, and the keys found there need no index lookup.
            let mut p = 0;
            order.retain(|&i| {
                let k = keys[i as usize];
                while p < pending.len() && pending[p].as_str() < k {
                    p += 1;
                }
                let found = pending.get(p).is_some_and(|q| q == k);
                out[i as usize] = found;
                !found
            });
        }
        let lookup = |part: &[u32]| -> Result<Vec<bool>> {
            part.iter()
                .map(|&i| self.contains(dataset, keys[i as usize]))
                .collect()
        };
        let found = if order.len() < 4096 {
            lookup(&order)?
        } else {
            let (a, b) = order.split_at(order.len() / 2);
            let (ra, rb) = std::thread::scope(|s| {
                let h = s.spawn(|| lookup(b));
                (lookup(a), h.join())
            });
            let mut out = ra?;
            out.extend(rb.map_err(|_| {
                EngineError::Io(std::io::Error::other("a key index lookup thread panicked"))
            })??);
            out
        };
        for (&i, f) in order.iter().zip(found) {
            out[i as usize] = f;
        }
        Ok(out)
    }

    /// Records `keys` as stored in the data files `added`, and forgets the files
    /// `removed` (their keys live on in the files that replaced them), atomically.
    pub fn record<'a>(
        &self,
        dataset: Dataset,
        keys: impl IntoIterator<Item = &'a str>,
        added: &[&str],
        removed: &[&str],
    ) -> Result<()> {
        let mut batch = self.db.batch();
        let ks = &self.keys[&dataset];
        // Inserted in sorted order, for the same cache reason as in `contains_many`.
        let mut encoded: Vec<Vec<u8>> = keys.into_iter().map(Self::encode).collect();
        encoded.sort_unstable();
        for key in encoded {
            batch.insert(ks, key, b"");
        }
        for f in added {
            batch.insert(&self.files, Self::file_key(dataset, f), b"");
        }
        for f in removed {
            batch.remove(&self.files, Self::file_key(dataset, f));
        }
        batch.commit().map_err(|e| index_error(self.db_path(), e))
    }

    fn db_path(&self) -> &Path {
        self.files.path()
    }
}

fn index_error(dir: &Path, e: fjall::Error) -> EngineError {
    EngineError::Io(std::io::Error::other(format!(
        "key index {}: {e} (it is rebuilt from the lake if you delete the folder)",
        dir.display()
    )))
}

/// The file beside an index folder that names the lake it was built for (its root
/// URL), so that a moved lake finds its index again.
fn root_file(index_dir: &Path) -> PathBuf {
    let mut name = index_dir.as_os_str().to_owned();
    name.push(".root");
    PathBuf::from(name)
}

/// The index folder under `dir` (the state directory's `key-index`) of a local lake
/// whose directory no longer exists — the lake this process opens, moved — when
/// there is exactly one such folder of the current layout. `None` when there is none,
/// or several (which one moved is then unknown; the lake's index is rebuilt).
fn moved_index(dir: &Path) -> Option<PathBuf> {
    let suffix = format!("-{LAYOUT}.root");
    let mut found = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(&suffix)) else {
            continue;
        };
        let folder = dir.join(format!("{stem}-{LAYOUT}"));
        let gone = std::fs::read_to_string(entry.path())
            .ok()
            .and_then(|root| url::Url::parse(root.trim()).ok())
            .filter(|root| root.scheme() == "file")
            .and_then(|root| root.to_file_path().ok())
            .is_some_and(|path| !path.exists());
        if gone && folder.is_dir() {
            if found.is_some() {
                return None;
            }
            found = Some(folder);
        }
    }
    found
}

/// The lake's use of its key index: opening it once per process, waiting for the
/// update of the last commit, catching up with files it has not read.
impl Lake {
    /// Waits for the key index updates of the last commits (see `pending_index`).
    ///
    /// # Errors
    /// The error of an update that failed; the next append then reads the files the
    /// index missed.
    pub async fn flush_index(&self) -> Result<()> {
        for ds in Dataset::ALL {
            let mut state = self.append_states[dataset_slot(ds)].lock().await;
            self.flush_index_of(ds, state.as_mut()).await?;
        }
        Ok(())
    }

    /// Waits for the last commit's key index update of `dataset`, taking it from its
    /// slot; the caller holds the dataset's append lock and passes its `state`. When
    /// the update failed, the state no longer says the index is complete — an append
    /// that then finds no pending update would otherwise trust an index that lacks
    /// that commit's keys — and the error is returned.
    pub(super) async fn flush_index_of(
        &self,
        dataset: Dataset,
        state: Option<&mut AppendState>,
    ) -> Result<()> {
        let pending = self.pending_index[dataset_slot(dataset)]
            .lock()
            .await
            .take();
        let flushed = match pending {
            Some(p) => p
                .task
                .await
                .map_err(|e| EngineError::Io(std::io::Error::other(e)))
                .and_then(|r| r),
            None => Ok(()),
        };
        if flushed.is_err()
            && let Some(s) = state
        {
            s.indexed = None;
        }
        flushed
    }

    /// The keys of the last commit's index update while it is still running (`None`
    /// once it has ended, or when there is none).
    pub(super) async fn pending_keys(&self, dataset: Dataset) -> Option<Arc<Vec<String>>> {
        let pending = self.pending_index[dataset_slot(dataset)].lock().await;
        pending
            .as_ref()
            .filter(|p| !p.task.is_finished())
            .map(|p| p.keys.clone())
    }

    /// The key index, opened on first use; `None` without an index folder or while
    /// another process holds it.
    pub(super) fn id_index(&self) -> Result<Option<Arc<IdIndex>>> {
        let Some(dir) = &self.index_dir else {
            return Ok(None);
        };
        let mut slot = self.index.lock().expect("index slot lock");
        match &*slot {
            Some(Ok(index)) => return Ok(Some(index.clone())),
            Some(Err(at)) if at.elapsed() < std::time::Duration::from_secs(60) => return Ok(None),
            _ => {}
        }
        // One index per lake: a state directory may serve lakes at several data
        // locations (a local directory and a bucket, say).
        let hash = &sha256_hex(self.root.as_str().as_bytes())[..16];
        let name = format!("{hash}-{LAYOUT}");
        let lake_dir = dir.join(&name);
        if !lake_dir.exists()
            && let Some(moved) = moved_index(dir)
        {
            // The data directory was moved (its state with it): keep its index rather
            // than reading every key again. Had another lake's index been taken,
            // `ensure_table` finds other table ids and clears it.
            tracing::info!(from = %moved.display(), "the lake moved; its key index goes with it");
            std::fs::rename(&moved, &lake_dir)?;
            let _ = std::fs::remove_file(root_file(&moved));
        }
        let index = IdIndex::open(&lake_dir)?;
        if index.is_some() {
            let root = root_file(&lake_dir);
            if std::fs::read_to_string(&root).ok().as_deref() != Some(self.root.as_str()) {
                std::fs::write(&root, self.root.as_str())?;
            }
        }
        if index.is_some() && dir.join(hash).is_dir() {
            // The index of the previous layout: derived data, rebuilt in the new one.
            if let Err(e) = std::fs::remove_dir_all(dir.join(hash)) {
                tracing::warn!(dir = %dir.join(hash).display(), error = %e, "could not remove the old key index");
            }
        }
        match &index {
            Some(i) => *slot = Some(Ok(i.clone())),
            None => {
                tracing::warn!(
                    dir = %dir.display(),
                    "the key index is held by another evidex process; this process checks \
                     re-sent records against every stored file instead (and tries the index \
                     again in a minute)"
                );
                *slot = Some(Err(std::time::Instant::now()));
            }
        }
        Ok(index)
    }

    /// Adds the keys of snapshot files the index has not read yet (written by another
    /// process, or committed before a crash lost the index update).
    pub(super) async fn catch_up(
        &self,
        index: &Arc<IdIndex>,
        snapshot: &TableSnapshot,
    ) -> Result<()> {
        index.ensure_table(snapshot.dataset, snapshot.table_id.as_deref())?;
        let mut missing = Vec::new();
        for f in &snapshot.files {
            if !index.has_file(snapshot.dataset, &f.relative)? {
                missing.push(f.clone());
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        tracing::info!(
            table = snapshot.dataset.table_name(),
            files = missing.len(),
            "adding stored keys to the key index"
        );
        // A few files at a time, so a first build over a large lake stays bounded.
        for group in missing.chunks(16) {
            let keys = self.stored_keys(snapshot.dataset, group.to_vec()).await?;
            let added: Vec<String> = group.iter().map(|f| f.relative.clone()).collect();
            // Off the async threads: a group is tens of thousands of inserts (measured:
            // ~30 ms each while a copied 1 M-event lake was indexed, during which that
            // runtime thread served no other request).
            let (index, dataset) = (index.clone(), snapshot.dataset);
            tokio::task::spawn_blocking(move || {
                let added: Vec<&str> = added.iter().map(String::as_str).collect();
                index.record(dataset, keys.iter().map(String::as_str), &added, &[])
            })
            .await
            .map_err(|e| EngineError::Io(std::io::Error::other(e)))??;
        }
        Ok(())
    }
}
