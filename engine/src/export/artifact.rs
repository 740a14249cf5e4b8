//! Writes an export's bytes to its final place: one file, or a ZIP of entries. The
//! artifact is written under a temporary name and renamed only once complete, so a
//! half-written artifact is never visible.
//!
//! Four stages keep both cores busy: DataFusion tasks decode batches, the writer (on
//! a blocking thread) merges and encodes them, one sink thread hashes the bytes and
//! another writes them — on this machine writing 4 GB to the page cache alone costs
//! about 10 s of kernel time. (Encoding runs of rows on several threads was measured
//! too: no faster on two cores, and 40 MB more memory.)

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;

use deltalake::arrow::record_batch::RecordBatch;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use zip::CompressionMethod;
use zip::write::{SimpleFileOptions, ZipWriter};

use super::direct::{BLOCK, DirectWriter, align_buffer};
use super::encode::Encoder;
use super::merge::SortedMerge;
use crate::error::{EngineError, Result};

/// Where the artifact goes.
#[derive(Debug, Clone)]
pub enum ArtifactTarget {
    /// This exact file path, created atomically (written under a temporary name,
    /// renamed when complete).
    File {
        /// Final path.
        path: PathBuf,
        /// fsync before the rename, so the artifact survives a crash once published.
        /// A service publishing artifacts needs it; a user's own output file, like
        /// `cp`, does not pay for it.
        sync: bool,
    },
    /// Standard output.
    Stdout,
}

/// One file of an artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactFile {
    /// Name (the ZIP entry name, or the single file's name).
    pub path: String,
    /// Size in bytes (uncompressed).
    pub bytes: u64,
    /// Records written (0 for metadata files).
    pub rows: u64,
    /// SHA-256 of the bytes, hex.
    pub sha256: String,
}

/// What the writer produced.
#[derive(Debug, Clone)]
pub struct Written {
    /// Files (entries).
    pub files: Vec<ArtifactFile>,
    /// Artifact bytes.
    pub bytes: u64,
    /// Artifact SHA-256, hex.
    pub sha256: String,
}

/// One dataset to write: sorted inputs, how to encode them, how to name the files.
pub(crate) struct DatasetJob {
    /// Sorted batch streams; more than one are merged by (time, key).
    pub inputs: Vec<mpsc::Receiver<Result<RecordBatch>>>,
    /// Column indexes of the merge key (time, key) in the batches.
    pub merge_key: (usize, usize),
    /// Makes the encoder of each file.
    pub make_encoder: Box<dyn FnMut() -> Result<Box<dyn Encoder>> + Send>,
    /// `Some("events")` cuts parts named `events-00001.EXT` of at most `split` rows.
    pub part_prefix: Option<String>,
    /// The file name when not cut into parts.
    pub single_name: String,
    /// File extension of parts.
    pub ext: &'static str,
    /// Rows per part.
    pub split: u64,
    /// Stops the export when set.
    pub cancel: Arc<AtomicBool>,
    /// Told the rows written so far.
    pub progress: Option<Arc<dyn Fn(u64) + Send + Sync>>,
}

impl DatasetJob {
    /// The name of file `part` (from 1).
    fn part_name(&self, part: u32) -> String {
        match &self.part_prefix {
            Some(p) => format!("{p}-{part:05}.{}", self.ext),
            None => self.single_name.clone(),
        }
    }
}

enum Sink {
    Direct(DirectWriter),
    Plain(BufWriter<File>),
    // Boxed: the ZIP writer's state is large and there is one sink per artifact.
    Zip(Box<ZipWriter<BufWriter<File>>>),
    Stdout(io::Stdout),
}

enum SinkMsg {
    Start(String),
    /// Bytes of the file from the given offset of the buffer on (the filler before
    /// it aligns them in memory, see [`align_buffer`]).
    Data(Vec<u8>, usize),
    /// The file is complete with this many records.
    End(u64),
}

/// The two threads that own the output: one hashes every file, the other writes it.
/// Apart, because `O_DIRECT` writes wait for the disk and the hashing waited with
/// them; measured on the benchmark's whole-window CSV export of 2 M events (814 MB):
/// 1.86 s in one thread, 1.69–1.72 s in two.
struct SinkThread {
    tx: std_mpsc::SyncSender<SinkMsg>,
    /// Emptied data buffers back from the writer, to be filled again: a fresh
    /// buffer per flush cost page faults on every megabyte the encoder wrote
    /// (1.6 % of a whole-window CSV export's samples).
    recycled: std_mpsc::Receiver<Vec<u8>>,
    /// Each file, once the sink has hashed all of it and queued it for writing.
    done: std_mpsc::Receiver<ArtifactFile>,
    handle: JoinHandle<Result<Sink>>,
}

impl SinkThread {
    fn spawn(mut sink: Sink, stored_entries: bool) -> Result<SinkThread> {
        let (tx, rx) = std_mpsc::sync_channel::<SinkMsg>(4);
        let (done_tx, done) = std_mpsc::channel::<ArtifactFile>();
        let (write_tx, write_rx) = std_mpsc::sync_channel::<SinkMsg>(4);
        let (recycle_tx, recycled) = std_mpsc::sync_channel::<Vec<u8>>(RECYCLED_BUFFERS);
        let writer = std::thread::Builder::new()
            .name("evidex-artifact-write".into())
            .spawn(move || -> Result<Sink> {
                for msg in write_rx {
                    match msg {
                        SinkMsg::Start(name) => {
                            if let Sink::Zip(z) = &mut sink {
                                let method = if stored_entries {
                                    CompressionMethod::Stored
                                } else {
                                    CompressionMethod::Deflated
                                };
                                // A fixed timestamp keeps re-runs byte-identical.
                                let options = SimpleFileOptions::default()
                                    .compression_method(method)
                                    .last_modified_time(zip::DateTime::default())
                                    .large_file(true)
                                    .unix_permissions(0o644);
                                z.start_file(name.as_str(), options).map_err(zip_err)?;
                            }
                        }
                        SinkMsg::Data(mut buf, start) => {
                            let data = &buf[start..];
                            match &mut sink {
                                Sink::Direct(w) => w.write_all(data)?,
                                Sink::Plain(w) => w.write_all(data)?,
                                Sink::Zip(z) => z.write_all(data)?,
                                Sink::Stdout(s) => s.write_all(data)?,
                            }
                            // Only the encoder's own buffers; when enough are
                            // waiting, this one is freed.
                            if buf.capacity() >= BUFFER_BYTES {
                                buf.clear();
                                let _ = recycle_tx.try_send(buf);
                            }
                        }
                        SinkMsg::End(_) => {}
                    }
                }
                Ok(sink)
            })?;
        let handle = std::thread::Builder::new()
            .name("evidex-artifact-hash".into())
            .spawn(move || {
                let mut current: Option<(String, Sha256, u64)> = None;
                for msg in rx {
                    let file = match &msg {
                        SinkMsg::Start(name) => {
                            current = Some((name.clone(), Sha256::new(), 0));
                            None
                        }
                        SinkMsg::Data(buf, start) => {
                            if let Some((_, hasher, bytes)) = current.as_mut() {
                                hasher.update(&buf[*start..]);
                                *bytes += (buf.len() - start) as u64;
                            }
                            None
                        }
                        SinkMsg::End(rows) => {
                            current.take().map(|(path, hasher, bytes)| ArtifactFile {
                                path,
                                bytes,
                                rows: *rows,
                                sha256: hex::encode(hasher.finalize()),
                            })
                        }
                    };
                    if write_tx.send(msg).is_err() {
                        // The writer stopped: its error is the one to report.
                        break;
                    }
                    if let Some(file) = file {
                        let _ = done_tx.send(file);
                    }
                }
                drop(write_tx);
                writer.join().map_err(|_| {
                    EngineError::Io(io::Error::other("the artifact writer panicked"))
                })?
            })?;
        Ok(SinkThread {
            tx,
            recycled,
            done,
            handle,
        })
    }

    fn finish(self) -> Result<Sink> {
        drop(self.tx);
        self.handle
            .join()
            .map_err(|_| EngineError::Io(io::Error::other("the artifact sink panicked")))?
    }
}

/// Writes one artifact; its methods block and run on a blocking thread.
pub struct ArtifactWriter {
    target: ArtifactTarget,
    temp: Option<PathBuf>,
    sink: Option<SinkThread>,
    zipped: bool,
    /// Every file completed so far.
    files: Vec<ArtifactFile>,
    /// Files published beside a single-file artifact: (suffix, bytes).
    sidecars: Vec<(String, Vec<u8>)>,
    /// Where the data of the encoder's current buffer starts (see [`align_buffer`]).
    /// Kept, not computed from the buffer's address: a buffer that grew past its
    /// capacity (one huge row) was moved with its filler, so its data still starts
    /// here but no longer at a block boundary (the direct writer then copies it).
    start: usize,
}

/// Output is handed to the sink in pieces of about this size.
const FLUSH_BYTES: usize = 1 << 20;

/// Capacity of the encoder's buffers: a flush's worth of data, the batch that went
/// past it, and the filler that aligns the data.
const BUFFER_BYTES: usize = 2 * FLUSH_BYTES + BLOCK;

/// Emptied buffers the writer keeps for reuse (see [`SinkThread::recycled`]).
const RECYCLED_BUFFERS: usize = 4;

impl ArtifactWriter {
    /// Opens the temporary file (or stdout). `zipped` makes a ZIP; `stored_entries`
    /// stores entries uncompressed (their format compresses already).
    pub fn create(
        target: ArtifactTarget,
        zipped: bool,
        stored_entries: bool,
    ) -> Result<ArtifactWriter> {
        let open = |path: &std::path::Path| -> Result<(Option<PathBuf>, Sink)> {
            if !zipped && let Some(direct) = DirectWriter::open(path)? {
                return Ok((Some(path.to_path_buf()), Sink::Direct(direct)));
            }
            let file = BufWriter::with_capacity(1 << 20, File::create(path)?);
            let sink = if zipped {
                Sink::Zip(Box::new(ZipWriter::new(file)))
            } else {
                Sink::Plain(file)
            };
            Ok((Some(path.to_path_buf()), sink))
        };
        let (temp, sink) = match (&target, zipped) {
            (ArtifactTarget::Stdout, false) => (None, Sink::Stdout(io::stdout())),
            (ArtifactTarget::File { path, .. }, _) => open(&temp_path(path))?,
            // A ZIP needs to seek back; it is built in a temporary file first.
            (ArtifactTarget::Stdout, true) => open(
                &std::env::temp_dir().join(format!("evidex-{}.zip.partial", uuid::Uuid::new_v4())),
            )?,
        };
        let sink = SinkThread::spawn(sink, stored_entries)?;
        Ok(ArtifactWriter {
            target,
            temp,
            sink: Some(sink),
            zipped,
            files: Vec::new(),
            sidecars: Vec::new(),
            start: 0,
        })
    }

    /// Hands a message to the sink thread; if it has stopped, returns the error it
    /// stopped with (a full disk, say).
    fn send(&mut self, msg: SinkMsg) -> Result<()> {
        let sink = self
            .sink
            .as_mut()
            .ok_or_else(|| EngineError::Io(io::Error::other("the artifact sink stopped")))?;
        if sink.tx.send(msg).is_ok() {
            return Ok(());
        }
        let stopped = self.sink.take().expect("checked above").finish();
        Err(match stopped.map(|_| ()) {
            Err(e) => e,
            Ok(_) => EngineError::Io(io::Error::other("the artifact sink stopped")),
        })
    }

    /// Writes one dataset (one file, or parts) and returns its row count.
    pub(crate) fn write_dataset(&mut self, mut job: DatasetJob) -> Result<u64> {
        let inputs = std::mem::take(&mut job.inputs);
        let mut merge = SortedMerge::new(inputs, job.merge_key.0, job.merge_key.1)?;
        let mut buf: Vec<u8> = Vec::with_capacity(BUFFER_BYTES);
        self.start = align_buffer(&mut buf);
        let mut part = 1u32;
        let mut encoder = self.start_file(job.part_name(part), (job.make_encoder)()?, &mut buf)?;
        let (mut in_part, mut total, mut reported) = (0u64, 0u64, 0u64);
        let cut = job.part_prefix.is_some();
        loop {
            if cut && in_part == job.split {
                if !merge.has_more()? {
                    break;
                }
                // The part is full and more rows follow: start the next one.
                self.end_file(encoder, &mut buf, in_part)?;
                part += 1;
                in_part = 0;
                encoder = self.start_file(job.part_name(part), (job.make_encoder)()?, &mut buf)?;
            }
            let room = if cut {
                (job.split - in_part).min(8192) as usize
            } else {
                8192
            };
            let Some((input, rows)) = merge.next_run(room)? else {
                break;
            };
            if job.cancel.load(AtomicOrdering::Relaxed) {
                return Err(EngineError::Cancelled);
            }
            let n = rows.len() as u64;
            encoder.rows(merge.batch(input), rows, &mut buf)?;
            in_part += n;
            total += n;
            // Crash tests: the artifact is half written.
            fail::fail_point!("export.mid_encode", total == n, |_| Err(EngineError::Io(
                io::Error::other("failpoint export.mid_encode")
            )));
            if buf.len() >= FLUSH_BYTES {
                self.flush(&mut buf, false)?;
            }
            if total - reported >= 65_536 {
                reported = total;
                if let Some(p) = &job.progress {
                    p(total);
                }
            }
        }
        self.end_file(encoder, &mut buf, in_part)?;
        if let Some(p) = &job.progress {
            p(total);
        }
        Ok(total)
    }

    /// Hands the bytes in `buf` (from `self.start` on) to the sink and
    /// leaves a fresh buffer. Unless the file ends (`file_end`), the bytes past the
    /// last whole [`BLOCK`] move to the fresh buffer instead: every buffer but a
    /// file's last is then whole aligned blocks, which the direct writer writes
    /// without copying.
    fn flush(&mut self, buf: &mut Vec<u8>, file_end: bool) -> Result<()> {
        // Crash tests: the disk is full (`return`).
        fail::fail_point!("artifact.write", |_| Err(EngineError::Io(
            io::Error::from_raw_os_error(libc::ENOSPC)
        )));
        let data = buf.len() - self.start;
        let keep = if file_end { 0 } else { data % BLOCK };
        if data > keep {
            let mut fresh = self
                .sink
                .as_ref()
                .and_then(|s| s.recycled.try_recv().ok())
                .unwrap_or_else(|| Vec::with_capacity(BUFFER_BYTES));
            let fresh_start = align_buffer(&mut fresh);
            fresh.extend_from_slice(&buf[buf.len() - keep..]);
            buf.truncate(buf.len() - keep);
            let full = std::mem::replace(buf, fresh);
            let start = std::mem::replace(&mut self.start, fresh_start);
            self.send(SinkMsg::Data(full, start))?;
        }
        Ok(())
    }

    fn start_file(
        &mut self,
        name: String,
        mut encoder: Box<dyn Encoder>,
        buf: &mut Vec<u8>,
    ) -> Result<Box<dyn Encoder>> {
        self.send(SinkMsg::Start(name))?;
        encoder.begin(buf)?;
        Ok(encoder)
    }

    fn end_file(
        &mut self,
        mut encoder: Box<dyn Encoder>,
        buf: &mut Vec<u8>,
        rows: u64,
    ) -> Result<()> {
        encoder.finish(buf)?;
        self.flush(buf, true)?;
        self.send(SinkMsg::End(rows))?;
        self.await_file()
    }

    /// Waits until the sink has written the file just ended and records it.
    fn await_file(&mut self) -> Result<()> {
        let done = self
            .sink
            .as_ref()
            .ok_or_else(|| EngineError::Io(io::Error::other("the artifact sink stopped")))?
            .done
            .recv();
        match done {
            Ok(file) => {
                self.files.push(file);
                Ok(())
            }
            Err(_) => {
                let stopped = self.sink.take().expect("checked above").finish();
                Err(match stopped.map(|_| ()) {
                    Err(e) => e,
                    Ok(_) => EngineError::Io(io::Error::other("the artifact sink stopped")),
                })
            }
        }
    }

    /// Writes one whole file of `rows` records (a rendered report).
    pub fn write_file(&mut self, name: String, bytes: Vec<u8>, rows: u64) -> Result<()> {
        self.send(SinkMsg::Start(name))?;
        self.send(SinkMsg::Data(bytes, 0))?;
        self.send(SinkMsg::End(rows))?;
        self.await_file()
    }

    /// The files completed so far.
    pub fn files(&self) -> &[ArtifactFile] {
        &self.files
    }

    /// Whether the artifact is a ZIP.
    pub fn is_zip(&self) -> bool {
        self.zipped
    }

    /// Adds a metadata file (the manifest, its signature): a ZIP entry named `name`,
    /// or, for a single file, a file beside it named after it plus `.{name}` with
    /// `manifest` in place of the extension (`X.csv.manifest.json`).
    pub fn add_metadata_file(&mut self, name: &str, bytes: Vec<u8>) -> Result<()> {
        if self.zipped {
            self.send(SinkMsg::Start(name.to_string()))?;
            self.send(SinkMsg::Data(bytes, 0))?;
            self.send(SinkMsg::End(0))?;
            self.await_file()
        } else {
            self.sidecars.push((format!(".{name}"), bytes));
            Ok(())
        }
    }

    /// Finishes the artifact and makes it visible under its final name.
    pub fn publish(mut self) -> Result<Written> {
        let sink = self
            .sink
            .take()
            .ok_or_else(|| EngineError::Io(io::Error::other("the artifact sink stopped")))?;
        let sink = sink.finish()?;
        let files = std::mem::take(&mut self.files);
        let sync = matches!(self.target, ArtifactTarget::File { sync: true, .. });
        let single = files.first().cloned();
        let zipped = match sink {
            Sink::Direct(w) => {
                let file = w.finish()?;
                if sync {
                    file.sync_all()?;
                }
                false
            }
            Sink::Plain(w) => {
                let file = w
                    .into_inner()
                    .map_err(|e| EngineError::Io(e.into_error()))?;
                if sync {
                    file.sync_all()?;
                }
                false
            }
            Sink::Zip(z) => {
                let w = z.finish().map_err(zip_err)?;
                let file = w
                    .into_inner()
                    .map_err(|e| EngineError::Io(e.into_error()))?;
                if sync {
                    file.sync_all()?;
                }
                true
            }
            Sink::Stdout(mut s) => {
                s.flush()?;
                false
            }
        };
        // A single file's hash was taken while it was written; only a ZIP (whose
        // headers are patched after the entries) is hashed again from disk.
        let (bytes, sha256) = match (zipped, &self.temp, single) {
            (true, Some(temp), _) => hash_file(temp)?,
            (false, _, Some(f)) => (f.bytes, f.sha256),
            _ => (0, hex::encode(Sha256::digest(b""))),
        };
        fail::fail_point!("export.before_publish");
        if let Some(temp) = self.temp.take() {
            match &self.target {
                ArtifactTarget::File { path, .. } => {
                    // Sidecars first: once the artifact is visible, so is its manifest.
                    for (suffix, bytes) in std::mem::take(&mut self.sidecars) {
                        let side = sidecar_path(path, &suffix);
                        let tmp = temp_path(&side);
                        let mut f = File::create(&tmp)?;
                        f.write_all(&bytes)?;
                        if sync {
                            f.sync_all()?;
                        }
                        std::fs::rename(&tmp, &side)?;
                    }
                    std::fs::rename(&temp, path)?;
                    fail::fail_point!("export.after_publish");
                }
                ArtifactTarget::Stdout => {
                    let mut f = File::open(&temp)?;
                    io::copy(&mut f, &mut io::stdout().lock())?;
                    std::fs::remove_file(&temp)?;
                }
            }
        }
        Ok(Written {
            files,
            bytes,
            sha256,
        })
    }

    /// Removes everything written so far.
    pub fn discard(mut self) {
        if let Some(sink) = self.sink.take() {
            let _ = sink.finish();
        }
        if let Some(temp) = self.temp.take() {
            let _ = std::fs::remove_file(temp);
        }
    }
}

/// `X.csv` + `.manifest.json` → `X.csv.manifest.json`.
pub fn sidecar_path(path: &std::path::Path, suffix: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!("{name}{suffix}"))
}

fn temp_path(path: &std::path::Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.partial-{}", uuid::Uuid::new_v4()))
}

fn zip_err(e: zip::result::ZipError) -> EngineError {
    EngineError::Io(io::Error::other(e))
}

/// Size and SHA-256 of a file.
pub fn hash_file(path: &std::path::Path) -> Result<(u64, String)> {
    let mut f = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        hasher.update(&buf[..k]);
        n += k as u64;
    }
    Ok((n, hex::encode(hasher.finalize())))
}
