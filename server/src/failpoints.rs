//! Failpoints for the crash tests (issue 15, "faults at every step"): named places
//! in ingest, the export job, delivery, the scheduler and webhooks where a test
//! can stop the process or make a step fail, through the `fail` crate
//! (<https://docs.rs/fail>).
//!
//! `fail_point!` compiles to nothing unless the crate's `failpoints` feature is on,
//! which only the server's test builds enable (a dev-dependency), so `cargo build`
//! and release binaries carry none. A test build reads the `FAILPOINTS` variable:
//! `name=actions;name=actions`, with the `fail` crate's actions (`return`, `panic`,
//! `sleep(ms)`, `off`, ...) plus `kill`, which sends SIGKILL to this process (what
//! `kill -9` does: no destructor, flush or graceful shutdown runs).
//!
//! The names: `ingest.after_parse`, `lake.write_file` (`return`: a full disk
//! before the Parquet write), `lake.after_parquet_write`, `lake.before_commit`,
//! `lake.after_commit`, `ingest.before_response`, `lake.before_index_record` and
//! `lake.index_record` (the key index update after a commit: `sleep(ms)` makes it
//! slow, `return` makes it fail); `export.after_claim`,
//! `export.mid_encode`, `artifact.write` (`return`: a full disk), `export.before_publish`,
//! `export.after_publish`, `export.before_job_update`; `delivery.mid_upload`,
//! `delivery.after_upload`; `schedule.after_period`; `webhook.after_send`.

use std::collections::HashMap;

/// The variable a test build reads its failpoints from (the `fail` crate's name).
pub const VARIABLE: &str = "FAILPOINTS";

/// Configures the failpoints named in `env[FAILPOINTS]`.
///
/// # Errors
/// A text naming the entry when one is not `name=actions` or its actions do not
/// parse; or when `FAILPOINTS` is set in a build without failpoints (it would
/// silently do nothing).
pub fn install(env: &HashMap<String, String>) -> Result<(), String> {
    let Some(spec) = env.get(VARIABLE) else {
        return Ok(());
    };
    if !fail::has_failpoints() {
        return Err(format!(
            "{VARIABLE} is set, but this build has no failpoints (only test builds do); unset it"
        ));
    }
    for entry in spec.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((name, actions)) = entry.split_once('=') else {
            return Err(format!("{VARIABLE}: {entry:?} is not name=actions"));
        };
        let name = name.trim().to_string();
        if actions.trim() == "kill" {
            let point = name.clone();
            fail::cfg_callback(name, move || kill_self(&point))?;
        } else {
            fail::cfg(name, actions.trim()).map_err(|e| format!("{VARIABLE}: {entry:?}: {e}"))?;
        }
    }
    Ok(())
}

/// Ends this process with SIGKILL, as `kill -9 PID` from outside would.
fn kill_self(point: &str) {
    eprintln!("failpoint {point}: kill -9");
    let pid = std::process::id().to_string();
    // `kill` itself, as the tests' name for this fault says; the thread that reached
    // the failpoint waits here, so its step goes no further.
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid])
        .status();
    // Only if `kill` could not run: SIGABRT skips destructors and flushes too.
    std::process::abort();
}
