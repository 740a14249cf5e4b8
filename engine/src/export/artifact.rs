//! Writes an export's bytes to its final place: one file, or a ZIP of entries. The
//! artifact is written under a temporary name and renamed only once complete, so a
//! half-written artifact is never visible.

use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, Write};
use std::path::PathBuf;

use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};

use tokio::sync::mpsc;
use zip::CompressionMethod;
use zip::write::{SimpleFileOptions, ZipWriter};

use super::encode::Encoder;
use super::merge::SortedMerge;
use crate::error::{EngineError, Result};
use deltalake::arrow::record_batch::RecordBatch;

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

enum Sink {
    Plain(BufWriter<File>),
    Zip(ZipWriter<BufWriter<File>>),
    Stdout(io::Stdout),
}

/// Writes one artifact; its methods block and run on a blocking thread.
pub struct ArtifactWriter {
    target: ArtifactTarget,
    temp: Option<PathBuf>,
    sink: Option<Sink>,
    stored_entries: bool,
    files: Vec<ArtifactFile>,
}

/// A file under construction that counts and hashes what goes through it.
struct Current {
    name: String,
    encoder: Box<dyn Encoder>,
    hasher: Sha256,
    bytes: u64,
}

/// Output is handed to the sink in pieces of about this size.
const FLUSH_BYTES: usize = 1 << 20;

impl ArtifactWriter {
    /// Opens the temporary file (or stdout). `zipped` makes a ZIP; `stored_entries`
    /// stores entries uncompressed (their format compresses already).
    pub fn create(
        target: ArtifactTarget,
        zipped: bool,
        stored_entries: bool,
    ) -> Result<ArtifactWriter> {
        let (temp, sink) = match (&target, zipped) {
            (ArtifactTarget::Stdout, false) => (None, Sink::Stdout(io::stdout())),
            (ArtifactTarget::File { path, .. }, _) => {
                let temp = temp_path(path);
                let file = File::create(&temp)?;
                let sink = if zipped {
                    Sink::Zip(ZipWriter::new(BufWriter::with_capacity(1 << 20, file)))
                } else {
                    Sink::Plain(BufWriter::with_capacity(1 << 20, file))
                };
                (Some(temp), sink)
            }
            (ArtifactTarget::Stdout, true) => {
                let temp = std::env::temp_dir()
                    .join(format!("evidex-{}.zip.partial", uuid::Uuid::new_v4()));
                let file = File::create(&temp)?;
                (
                    Some(temp),
                    Sink::Zip(ZipWriter::new(BufWriter::with_capacity(1 << 20, file))),
                )
            }
        };
        Ok(ArtifactWriter {
            target,
            temp,
            sink: Some(sink),
            stored_entries,
            files: Vec::new(),
        })
    }

    /// Writes one dataset (one file, or parts) and returns its row count.
    pub(crate) fn write_dataset(&mut self, mut job: DatasetJob) -> Result<u64> {
        let inputs = std::mem::take(&mut job.inputs);
        let mut merge = SortedMerge::new(inputs, job.merge_key.0, job.merge_key.1)?;
        let mut buf: Vec<u8> = Vec::with_capacity(2 * FLUSH_BYTES);
        let mut part = 1u32;
        let name_of = |part: u32| match &job.part_prefix {
            Some(p) => format!("{p}-{part:05}.{}", job.ext),
            None => job.single_name.clone(),
        };
        let mut current = self.start_file(name_of(part), (job.make_encoder)()?, &mut buf)?;
        let (mut in_part, mut total, mut reported) = (0u64, 0u64, 0u64);
        let cut = job.part_prefix.is_some();
        loop {
            if cut && in_part == job.split {
                if !merge.has_more()? {
                    break;
                }
                // The part is full and more rows follow: start the next one.
                self.end_file(current, &mut buf)?;
                part += 1;
                in_part = 0;
                current = self.start_file(name_of(part), (job.make_encoder)()?, &mut buf)?;
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
            current.encoder.rows(merge.batch(input), rows, &mut buf)?;
            in_part += n;
            total += n;
            if buf.len() >= FLUSH_BYTES {
                self.emit(&mut current, &mut buf)?;
            }
            if total - reported >= 65_536 {
                reported = total;
                if let Some(p) = &job.progress {
                    p(total);
                }
            }
        }
        self.end_file(current, &mut buf)?;
        if let Some(p) = &job.progress {
            p(total);
        }
        Ok(total)
    }

    fn start_file(
        &mut self,
        name: String,
        mut encoder: Box<dyn Encoder>,
        buf: &mut Vec<u8>,
    ) -> Result<Current> {
        if let Some(Sink::Zip(z)) = self.sink.as_mut() {
            let method = if self.stored_entries {
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
        buf.clear();
        encoder.begin(buf)?;
        let mut cur = Current {
            name,
            encoder,
            hasher: Sha256::new(),
            bytes: 0,
        };
        self.emit(&mut cur, buf)?;
        Ok(cur)
    }

    fn end_file(&mut self, mut cur: Current, buf: &mut Vec<u8>) -> Result<()> {
        cur.encoder.finish(buf)?;
        self.emit(&mut cur, buf)?;
        self.files.push(ArtifactFile {
            path: cur.name,
            bytes: cur.bytes,
            sha256: hex::encode(cur.hasher.finalize()),
        });
        Ok(())
    }

    fn emit(&mut self, cur: &mut Current, buf: &mut Vec<u8>) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        cur.hasher.update(&buf[..]);
        cur.bytes += buf.len() as u64;
        match self.sink.as_mut().expect("sink open") {
            Sink::Plain(w) => w.write_all(buf)?,
            Sink::Zip(z) => z.write_all(buf)?,
            Sink::Stdout(s) => s.write_all(buf)?,
        }
        buf.clear();
        Ok(())
    }

    /// Finishes the artifact and makes it visible under its final name.
    pub fn publish(mut self) -> Result<Written> {
        let files = std::mem::take(&mut self.files);
        let sync = matches!(self.target, ArtifactTarget::File { sync: true, .. });
        match self.sink.take().expect("sink open") {
            Sink::Plain(w) => {
                let file = w
                    .into_inner()
                    .map_err(|e| EngineError::Io(e.into_error()))?;
                if sync {
                    file.sync_all()?;
                }
            }
            Sink::Zip(z) => {
                let w = z.finish().map_err(zip_err)?;
                let file = w
                    .into_inner()
                    .map_err(|e| EngineError::Io(e.into_error()))?;
                if sync {
                    file.sync_all()?;
                }
            }
            Sink::Stdout(mut s) => {
                s.flush()?;
                let f = &files[0];
                return Ok(Written {
                    bytes: f.bytes,
                    sha256: f.sha256.clone(),
                    files,
                });
            }
        }
        let temp = self.temp.take().expect("file targets have a temp path");
        let (bytes, sha256) = hash_file(&temp)?;
        match &self.target {
            ArtifactTarget::File { path, .. } => std::fs::rename(&temp, path)?,
            ArtifactTarget::Stdout => {
                let mut f = File::open(&temp)?;
                io::copy(&mut f, &mut io::stdout().lock())?;
                std::fs::remove_file(&temp)?;
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
        self.sink = None;
        if let Some(temp) = self.temp.take() {
            let _ = std::fs::remove_file(temp);
        }
    }
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
    let _ = f.seek(io::SeekFrom::Start(0));
    Ok((n, hex::encode(hasher.finalize())))
}
