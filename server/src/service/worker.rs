//! The worker loop: claim a queued job, hold its lease by heartbeat, run the export
//! into the attempt's own folder, publish the artifact and finish the attempt (fenced
//! by its attempt number, so a worker paused past its lease cannot overwrite the
//! attempt that replaced it).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use evidex_engine::EngineError;
use evidex_engine::export::{self, ArtifactTarget, Evidence, ExportControl};
use serde_json::{Value, json};

use super::{Catalog, Service, export_from_params};

/// How often a worker renews its lease and looks for a cancel.
pub const HEARTBEAT: Duration = Duration::from_millis(1000);
/// How long a lease lasts without a heartbeat.
pub const LEASE_MS: i64 = 10_000;

/// Runs jobs until `stop` is set: claim, run under a lease, publish or fail.
pub async fn worker_loop(service: Arc<Service>, owner: String, stop: Arc<AtomicBool>) {
    // Idle workers wait for a new job to be announced rather than poll the
    // database; the timeout still finds leases that ran out (nobody announces
    // those) and, on SQLite, jobs other processes queued.
    let mut signal = service.store.job_signal();
    let idle = match service.store.dialect() {
        crate::store::Dialect::Sqlite => Duration::from_millis(250),
        crate::store::Dialect::Postgres => Duration::from_secs(2),
    };
    while !stop.load(Ordering::Relaxed) {
        signal.mark_unchanged();
        let claimed = service.store.claim(&owner, service.now_ms(), LEASE_MS);
        match claimed {
            Ok(Some(job)) => {
                fail::fail_point!("export.after_claim");
                let id = job.id.clone();
                if let Err(e) = run_job(&service, &owner, job).await {
                    tracing::error!("job {id}: {e:#}");
                }
            }
            Ok(None) => {
                let _ = tokio::time::timeout(idle, signal.changed()).await;
            }
            Err(e) => {
                tracing::error!("claiming a job: {e:#}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

async fn run_job(service: &Arc<Service>, owner: &str, job: crate::store::Job) -> Result<()> {
    // Each attempt writes in a folder of its own: a worker that was paused past its
    // lease and wakes up while another attempt runs or has finished writes, and
    // cleans up, only its own folder, and its result is refused by the store (the
    // lease is no longer its own), so the attempt that won keeps its artifact.
    let job_dir = service.job_dir(&job.id)?;
    let dir = job_dir.join(format!("attempt-{}", job.attempts));
    // This attempt may have run before on this machine and died mid-write.
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir)?;
    let cleanup = |dir: &Path| {
        let _ = std::fs::remove_dir_all(dir);
        // The job's folder goes too once no attempt holds anything in it.
        let _ = std::fs::remove_dir(&job_dir);
    };
    let cancel = Arc::new(AtomicBool::new(false));
    let rows = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    // Heartbeat: renew the lease, publish progress, notice a cancel.
    let hb = {
        let (service, owner, id) = (service.clone(), owner.to_string(), job.id.clone());
        let (cancel, rows, done) = (cancel.clone(), rows.clone(), done.clone());
        let attempt = job.attempts;
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                tokio::time::sleep(HEARTBEAT).await;
                let status = service.store.heartbeat(
                    &id,
                    &owner,
                    attempt,
                    service.now_ms(),
                    LEASE_MS,
                    rows.load(Ordering::Relaxed) as i64,
                );
                match status {
                    Ok(Some(s)) if s == "processing" => {}
                    // Cancelled, or the lease went to another worker: stop.
                    Ok(_) => cancel.store(true, Ordering::Relaxed),
                    Err(e) => tracing::warn!("heartbeat of {id}: {e:#}"),
                }
            }
        })
    };
    let mut result = execute(service, owner, &job, &dir, cancel.clone(), rows.clone()).await;
    // With object storage, the attempt is uploaded before the job record names it.
    let published = match (&result, &service.remote_artifacts) {
        (Ok((_, artifact)), Some(remote)) => {
            let file_name = artifact["file_name"].as_str().unwrap_or_default();
            let zipped = artifact["content_type"] == "application/zip";
            match remote
                .publish(&job.id, job.attempts, &dir, file_name, zipped)
                .await
            {
                Ok(()) => Ok(()),
                Err(e) => {
                    let _ = remote.delete_attempt(&job.id, job.attempts).await;
                    Err(e.context(format!("publishing the artifact to {}", remote.url())))
                }
            }
        }
        _ => Ok(()),
    };
    if let Err(e) = published {
        result = Err(e);
    }
    done.store(true, Ordering::Relaxed);
    hb.abort();
    let now = service.now_ms();
    match result {
        Ok((n, mut artifact)) => {
            artifact["attempt"] = json!(job.attempts);
            fail::fail_point!("export.before_job_update");
            if service.store.complete(
                &job.id,
                owner,
                job.attempts,
                now,
                n as i64,
                &artifact,
                crate::delivery::wanted(service, &job.params)?,
            )? {
                if let Some(remote) = &service.remote_artifacts {
                    // The local copy was only the upload's source; earlier attempts'
                    // objects (a dead or paused worker's) are garbage.
                    let _ = std::fs::remove_dir_all(&job_dir);
                    if let Err(e) = remote.delete_job(&job.id, Some(job.attempts)).await {
                        tracing::warn!("job {}: removing earlier attempts: {e:#}", job.id);
                    }
                }
                // Earlier attempts' folders (a dead or paused worker's) are garbage.
                if let Ok(entries) = std::fs::read_dir(&job_dir) {
                    for e in entries.flatten() {
                        if e.path() != dir {
                            let _ = std::fs::remove_dir_all(e.path());
                        }
                    }
                }
                crate::webhooks::notify(service, "export.completed", &job.id)?;
            } else {
                // Cancelled meanwhile, or the lease went to another attempt: this
                // artifact is not offered. A cancelled job keeps no folder at all
                // (earlier attempts' leftovers included).
                cleanup(&dir);
                if let Some(remote) = &service.remote_artifacts {
                    let _ = remote.delete_attempt(&job.id, job.attempts).await;
                }
                if service
                    .store
                    .job(&job.id)?
                    .is_some_and(|j| j.status == "cancelled")
                {
                    let _ = std::fs::remove_dir_all(&job_dir);
                }
            }
        }
        Err(e) => {
            cleanup(&dir);
            let permanent = matches!(
                e.downcast_ref::<EngineError>(),
                Some(EngineError::InvalidRequest(_) | EngineError::Cancelled)
            );
            let msg = format!("{e:#}");
            if service
                .store
                .fail(&job.id, owner, job.attempts, now, &msg, permanent)?
                == "failed"
            {
                // No attempt will run again: earlier attempts' leftovers go too.
                let _ = std::fs::remove_dir_all(&job_dir);
                crate::webhooks::notify(service, "export.failed", &job.id)?;
            }
        }
    }
    Ok(())
}

async fn execute(
    service: &Arc<Service>,
    owner: &str,
    job: &crate::store::Job,
    dir: &Path,
    cancel: Arc<AtomicBool>,
    rows: Arc<AtomicU64>,
) -> Result<(u64, Value)> {
    let catalog = Catalog::load(&service.config, &service.store)?;
    let mut valid = export_from_params(&job.params, &service.config, &catalog)?;
    let pinned = service.prepare(&mut valid.request).await?;
    let preview = export::preview(&service.lake, &pinned, &valid.request).await?;
    service
        .store
        .set_total(&job.id, owner, job.attempts, preview.records as i64)?;
    let now = service.clock.now();
    let (schedule, previous_manifest_sha256) = crate::schedules::chain_of(service, &job.id)?;
    let evidence = Evidence {
        export_id: job.id.clone(),
        requested_by: job.created_by.clone(),
        created_at: now,
        previous_manifest_sha256,
        schedule,
        signer: service.signer.clone(),
    };
    let progress_rows = rows.clone();
    let control = ExportControl {
        cancel,
        progress: Some(Arc::new(move |n: u64| {
            progress_rows.store(n, Ordering::Relaxed);
        })),
        expected_rows: Some(preview.records),
    };
    let dir_owned = dir.to_path_buf();
    let outcome = export::run_export(
        &service.lake,
        &pinned,
        &valid.request,
        &evidence,
        move |file_name: &str| ArtifactTarget::File {
            path: dir_owned.join(file_name),
            sync: true,
        },
        &control,
    )
    .await?;
    let expires = now + chrono::Duration::seconds(service.config.server.retention_secs as i64);
    let artifact = json!({
        "file_name": outcome.file_name,
        "bytes": outcome.bytes,
        "sha256": outcome.sha256,
        "content_type": outcome.content_type,
        "expires_at": expires.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "manifest_sha256": outcome.manifest_sha256,
        "rows": outcome.rows,
        "table_versions": outcome.manifest.table_versions,
    });
    Ok((outcome.manifest.total_rows, artifact))
}
