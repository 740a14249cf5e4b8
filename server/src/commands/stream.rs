//! `evidex stream`: the event stream's cursor walk on the command line, NDJSON to
//! stdout, for log shippers (Fluent Bit, Vector, a Splunk forwarder) that read a
//! process's output.
//!
//! With `--cursor-file F` the cursor is saved after each page is written and
//! flushed (written to a temporary file, synced, renamed over F), and read back on
//! start, so a restarted shipper goes on where the last flushed page ended. SIGINT
//! and SIGTERM are only acted on between pages, never between a page's output and
//! its cursor.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use evidex_engine::export::encode::Profile;
use evidex_engine::lake::Lake;
use evidex_engine::stream::{Start, StreamError, StreamRequest};
use evidex_server::config::Config;
use evidex_server::service::current_redaction;
use evidex_server::store::Store;

use super::export::FilterArgs;

/// `evidex stream`.
#[derive(Debug, Args)]
pub struct StreamArgs {
    /// Start after this cursor (from an earlier page or `--cursor-file`).
    #[arg(long, conflicts_with = "since")]
    pub cursor: Option<String>,
    /// Start at the first commit made at or after this RFC 3339 instant.
    #[arg(long)]
    pub since: Option<String>,
    /// Keep the cursor in this file: read on start (when it exists), replaced after
    /// every page written.
    #[arg(long)]
    pub cursor_file: Option<PathBuf>,
    /// Keep following: wait for new events instead of stopping at the end.
    #[arg(long)]
    pub follow: bool,
    /// Record layout: native, ecs, ocsf or splunk_hec.
    #[arg(long, default_value = "native")]
    pub profile: String,
    /// Records per page (at most 10,000; the API's default is 1,000).
    #[arg(long, default_value_t = 5000)]
    pub limit: usize,
    /// Stop after this many events (the cursor printed or saved is the one after
    /// the last).
    #[arg(long)]
    pub max_events: Option<u64>,
    /// Leave out `input` and `output`.
    #[arg(long)]
    pub no_payloads: bool,
    /// Event filters (a saved cursor is bound to them).
    #[command(flatten)]
    pub filters: FilterArgs,
}

pub(super) async fn run_stream(lake: &Lake, config: &Config, args: StreamArgs) -> Result<ExitCode> {
    if args.limit == 0 {
        bail!("--limit: must be at least 1");
    }
    let store = Store::from_config(config)?;
    evidex_server::keys::check_before_start(lake, config).await?;
    let keys = evidex_server::keys::load(config, &store)?;
    let stream = evidex_server::stream_of(lake, &keys.master);
    let redactor = Arc::new(current_redaction(config, &store)?.compile()?);
    let saved = match &args.cursor_file {
        Some(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
                && !dir.is_dir()
            {
                bail!(
                    "--cursor-file {}: the directory {} does not exist",
                    path.display(),
                    dir.display()
                );
            }
            read_cursor_file(path)?
        }
        None => None,
    };
    let start = match (&args.cursor, &args.since, saved) {
        (Some(c), _, _) => Start::Cursor(c.clone()),
        (None, Some(_), Some(_)) => bail!(
            "--since: the cursor file {} already holds a position; remove it to start from --since",
            args.cursor_file
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        ),
        (None, Some(t), None) => Start::Since(
            chrono::DateTime::parse_from_rfc3339(t)
                .with_context(|| {
                    format!("--since: {t:?} is not an RFC 3339 instant like 2026-11-30T00:00:00Z")
                })?
                .with_timezone(&chrono::Utc),
        ),
        (None, None, Some(c)) => Start::Cursor(c),
        (None, None, None) => Start::Oldest,
    };
    let mut request = StreamRequest {
        start,
        limit: args.limit,
        filters: args.filters.to_filters()?,
        profile: Profile::parse(&args.profile)?,
        redactor,
        include_payloads: !args.no_payloads,
    };
    let wait = if args.follow {
        Duration::from_secs(10)
    } else {
        Duration::ZERO
    };
    let from_file = args.cursor.is_none() && matches!(request.start, Start::Cursor(_));
    let mut shutdown = Box::pin(shutdown_signal());
    // A writer thread prints each page and then saves its cursor, while the next
    // page is read. It answers how many events it wrote and the cursor after them.
    let (pages, inbox) = std::sync::mpsc::sync_channel::<(Vec<bytes::Bytes>, String, u64)>(1);
    let cursor_file = args.cursor_file.clone();
    let writer = std::thread::spawn(move || -> Result<(u64, String)> {
        let mut out = std::io::stdout().lock();
        let (mut written, mut last) = (0u64, String::new());
        for (body, cursor, records) in inbox {
            let result = body
                .iter()
                .try_for_each(|chunk| out.write_all(chunk))
                .and_then(|_| out.flush());
            match result {
                Ok(()) => {}
                // The reader went away: stop; the cursor file keeps the last page
                // it did get.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => break,
                Err(e) => return Err(e).context("writing to stdout"),
            }
            written += records;
            if !cursor.is_empty() {
                last = cursor;
                if let Some(path) = &cursor_file {
                    write_cursor_file(path, &last)?;
                }
            }
        }
        Ok((written, last))
    });
    let mut read = 0u64;
    let mut expired = false;
    let mut failure: Option<anyhow::Error> = None;
    loop {
        if let Some(max) = args.max_events {
            if read >= max {
                break;
            }
            request.limit = args.limit.min((max - read) as usize);
        }
        let page = tokio::select! {
            page = stream.page(&request, wait) => page,
            _ = &mut shutdown => break,
        };
        let page = match page {
            Ok(p) => p,
            Err(StreamError::Expired {
                message,
                oldest_cursor,
                ..
            }) => {
                eprintln!("error: {message}");
                eprintln!("oldest cursor: {oldest_cursor}");
                expired = true;
                break;
            }
            Err(StreamError::Invalid(m)) => {
                let m = match (&args.cursor_file, from_file) {
                    (Some(f), true) => format!("--cursor-file {}: {m}", f.display()),
                    _ => m,
                };
                failure = Some(anyhow::anyhow!(m));
                break;
            }
            Err(StreamError::Engine(e)) => {
                failure = Some(e.into());
                break;
            }
        };
        read += page.records as u64;
        if !page.cursor.is_empty() {
            request.start = Start::Cursor(page.cursor.clone());
        }
        let at_end = page.at_end;
        if pages
            .send((page.body, page.cursor, page.records as u64))
            .is_err()
        {
            break; // the writer stopped (an error it reports)
        }
        if at_end && !args.follow {
            break;
        }
    }
    drop(pages);
    let (written, last) = writer
        .join()
        .map_err(|_| anyhow::anyhow!("the stdout writer panicked"))??;
    if let Some(e) = failure {
        return Err(e);
    }
    if expired {
        return Ok(ExitCode::from(3));
    }
    if args.cursor_file.is_none() {
        if last.is_empty() {
            eprintln!(
                "{written} events written; no page was written whole: start again as this run did"
            );
        } else {
            eprintln!("{written} events written; next cursor: {last}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The cursor saved in `path`, if the file exists and is not empty.
fn read_cursor_file(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) if s.trim().is_empty() => Ok(None),
        Ok(s) => Ok(Some(s.trim().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("--cursor-file: cannot read {}", path.display())),
    }
}

/// Replaces `path` with `cursor` atomically: a reader (or a crash) sees the old
/// cursor or the new one, never a mix.
fn write_cursor_file(path: &Path, cursor: &str) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(&dir)
        .with_context(|| format!("--cursor-file: cannot write in {}", dir.display()))?;
    tmp.write_all(cursor.as_bytes())?;
    tmp.write_all(b"\n")?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("--cursor-file: cannot replace {}", path.display()))?;
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
