//! Writes an export's bytes to its final place: one file, or a ZIP of entries. The
//! artifact is written under a temporary name and renamed only once complete, so a
//! half-written artifact is never visible.

use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, Write};
use std::path::PathBuf;

use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use zip::CompressionMethod;
use zip::write::{SimpleFileOptions, ZipWriter};

use super::encode::Encoder;
use crate::error::{EngineError, Result};
use deltalake::arrow::record_batch::RecordBatch;

/// Where the artifact goes.
#[derive(Debug, Clone)]
pub enum ArtifactTarget {
    /// This exact file path (created atomically).
    File(PathBuf),
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

/// Messages from the export stream to the writer thread.
pub enum WriterMsg {
    /// Start a file named `name` encoded by `encoder`.
    Begin {
        /// Entry name.
        name: String,
        /// Its encoder.
        encoder: Box<dyn Encoder>,
    },
    /// Records for the current file.
    Batch(RecordBatch),
    /// Close the current file.
    End,
    /// Everything was written: publish the artifact.
    Commit,
    /// The export failed: remove what was written.
    Abort,
}

enum Sink {
    Plain(BufWriter<File>),
    Zip(ZipWriter<BufWriter<File>>),
    Stdout(io::Stdout),
}

/// Writes one artifact on a blocking thread.
pub struct ArtifactWriter {
    target: ArtifactTarget,
    temp: Option<PathBuf>,
    sink: Option<Sink>,
    stored_entries: bool,
}

/// A file under construction that counts and hashes what goes through it.
struct Current {
    name: String,
    encoder: Box<dyn Encoder>,
    hasher: Sha256,
    bytes: u64,
}

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
            (ArtifactTarget::File(path), _) => {
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
        })
    }

    /// Consumes messages until `Commit` or `Abort` (or the sender goes away, which
    /// aborts).
    pub fn run(mut self, mut rx: mpsc::Receiver<WriterMsg>) -> Result<Written> {
        let outcome = self.consume(&mut rx);
        match outcome {
            Ok(files) => self.publish(files),
            Err(e) => {
                self.discard();
                Err(e)
            }
        }
    }

    fn consume(&mut self, rx: &mut mpsc::Receiver<WriterMsg>) -> Result<Vec<ArtifactFile>> {
        let mut files = Vec::new();
        let mut current: Option<Current> = None;
        let mut buf: Vec<u8> = Vec::with_capacity(4 << 20);
        while let Some(msg) = rx.blocking_recv() {
            match msg {
                WriterMsg::Begin { name, mut encoder } => {
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
                    encoder.begin(&mut buf)?;
                    let mut cur = Current {
                        name,
                        encoder,
                        hasher: Sha256::new(),
                        bytes: 0,
                    };
                    self.emit(&mut cur, &mut buf)?;
                    current = Some(cur);
                }
                WriterMsg::Batch(batch) => {
                    let cur = current
                        .as_mut()
                        .ok_or_else(|| EngineError::Io(io::Error::other("batch before begin")))?;
                    cur.encoder.batch(&batch, &mut buf)?;
                    self.emit(cur, &mut buf)?;
                }
                WriterMsg::End => {
                    let mut cur = current
                        .take()
                        .ok_or_else(|| EngineError::Io(io::Error::other("end before begin")))?;
                    cur.encoder.finish(&mut buf)?;
                    self.emit(&mut cur, &mut buf)?;
                    files.push(ArtifactFile {
                        path: cur.name,
                        bytes: cur.bytes,
                        sha256: hex::encode(cur.hasher.finalize()),
                    });
                }
                WriterMsg::Commit => return Ok(files),
                WriterMsg::Abort => return Err(EngineError::Cancelled),
            }
        }
        Err(EngineError::Io(io::Error::other(
            "export stopped before it finished",
        )))
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

    fn publish(mut self, files: Vec<ArtifactFile>) -> Result<Written> {
        match self.sink.take().expect("sink open") {
            Sink::Plain(w) => {
                let file = w
                    .into_inner()
                    .map_err(|e| EngineError::Io(e.into_error()))?;
                file.sync_all()?;
            }
            Sink::Zip(z) => {
                let w = z.finish().map_err(zip_err)?;
                let file = w
                    .into_inner()
                    .map_err(|e| EngineError::Io(e.into_error()))?;
                file.sync_all()?;
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
            ArtifactTarget::File(path) => std::fs::rename(&temp, path)?,
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

    fn discard(&mut self) {
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
