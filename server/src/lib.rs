//! evidex server: configuration, the metadata store, the HTTP API, export workers and
//! the ingest batcher. The binaries (`evidex`, `worker_export`) are thin layers over it.

pub mod api;
pub mod artifacts;
pub mod config;
pub mod console;
pub mod delivery;
pub mod failpoints;
pub mod keys;
pub mod limits;
pub mod network;
pub mod schedules;
pub mod secrets;
pub mod service;
pub mod store;
pub mod webhooks;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use evidex_engine::clock::Clock;
use evidex_engine::lake::{Lake, LakeOptions};
use evidex_engine::model::Dataset;

use crate::config::Config;
use crate::service::{Metrics, Service, spawn_batcher};
use crate::store::Store;

/// Object store options from the usual AWS variables (`AWS_ENDPOINT_URL`, keys,
/// region, `AWS_ALLOW_HTTP`, ...), lower-cased as object_store expects.
pub fn storage_options(env: &HashMap<String, String>) -> HashMap<String, String> {
    env.iter()
        .filter(|(k, _)| k.starts_with("AWS_"))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect()
}

/// Opens the lake of `config`.
pub fn open_lake(
    config: &Config,
    env: &HashMap<String, String>,
    clock: Arc<dyn Clock>,
) -> Result<Lake> {
    Lake::open(
        &LakeOptions {
            data_url: config.data.clone(),
            storage_options: storage_options(env),
            index_dir: config.state_dir().ok().map(|d| d.join("key-index")),
        },
        clock,
    )
    .with_context(|| format!("cannot open the data location {}", config.data))
}

/// The event stream of `lake`, its cursors signed with a key derived from the
/// master key (the same on every node given that key, and for the CLI).
pub fn stream_of(lake: &Lake, master: &secrets::MasterKey) -> evidex_engine::stream::EventStream {
    evidex_engine::stream::EventStream::new(
        lake.clone(),
        evidex_engine::stream::CursorKey::new(master.derive("stream cursors")),
    )
}

/// Builds the service of a `serve` or `worker_export` node: refuses to start when
/// it would run with keys other than those the lake's other nodes use (see
/// [`keys`]), then builds the service and records or compares its keys.
pub async fn build_node(
    config: Config,
    lake: Lake,
    clock: Arc<dyn Clock>,
    ingest: bool,
) -> Result<Arc<Service>> {
    keys::check_before_start(&lake, &config).await?;
    let service = build_service(config, lake.clone(), clock, ingest)?;
    let node_keys = keys::Keys {
        signer: service.signer.clone(),
        master: service.master_key.clone(),
        link_key: service.link_key.clone(),
    };
    keys::record_or_compare(&lake, &node_keys).await?;
    Ok(service)
}

/// Builds the service. `ingest` starts the ingest batchers (the server process is
/// the lake's only ingest writer; workers never ingest).
pub fn build_service(
    config: Config,
    lake: Lake,
    clock: Arc<dyn Clock>,
    ingest: bool,
) -> Result<Arc<Service>> {
    let state = config.state_dir()?;
    let store = Store::from_config(&config)?;
    let keys::Keys {
        signer,
        master: master_key,
        link_key,
    } = keys::load(&config, &store)?;
    let stream = Arc::new(stream_of(&lake, &master_key));
    let (artifacts, remote_artifacts) = match config.artifacts.as_deref() {
        Some(url) if url.starts_with("s3://") => (
            state.join("artifacts"),
            Some(Arc::new(artifacts::RemoteArtifacts::open(
                url,
                &config.storage_options.0,
            )?)),
        ),
        Some(dir) => (
            std::path::PathBuf::from(dir.strip_prefix("file://").unwrap_or(dir)),
            None,
        ),
        None => (state.join("artifacts"), None),
    };
    let metrics = Metrics::default();
    let mut batchers = HashMap::new();
    if ingest {
        for ds in Dataset::ALL {
            batchers.insert(
                ds,
                spawn_batcher(
                    lake.clone(),
                    ds,
                    Duration::from_millis(config.server.ingest_linger_ms),
                    200_000,
                    config.ingest.compact_min_files,
                    Some(metrics.ingest_commits.clone()),
                ),
            );
        }
    }
    Ok(Arc::new(Service {
        store,
        lake,
        signer,
        clock,
        artifacts,
        remote_artifacts,
        metrics,
        ingest: batchers,
        link_key,
        stream,
        stream_redactor: Default::default(),
        master_key,
        recent_downloads: Default::default(),
        rate_limits: limits::RateLimits::new(&config.limits),
        config,
    }))
}

/// Starts `n` worker loops on a runtime of their own; returns the flag that stops
/// them. Exports keep every core busy: on the API's runtime their decode tasks would
/// queue in front of request handlers (p99 of a job list during an export went from
/// 73 ms to 8 ms with separate threads, which the OS schedules fairly).
pub fn start_workers(service: &Arc<Service>, n: usize, name: &str) -> Workers {
    let stop = Arc::new(AtomicBool::new(false));
    let owners: Vec<String> = (0..n)
        .map(|i| format!("{name}-{}-{i}-{}", std::process::id(), ulid::Ulid::new()))
        .collect();
    let none = |stop| Workers {
        stop,
        thread: None,
        service: service.clone(),
        owners: Vec::new(),
    };
    if n == 0 {
        return none(stop);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
        .thread_name("evidex-export")
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot start the export runtime: {e}");
            return none(stop);
        }
    };
    let (svc, flag, names) = (service.clone(), stop.clone(), owners.clone());
    let thread = std::thread::spawn(move || {
        runtime.block_on(async move {
            let mut loops = Vec::new();
            for owner in names {
                let service = &svc;
                loops.push(tokio::spawn(service::worker_loop(
                    service.clone(),
                    owner,
                    flag.clone(),
                )));
            }
            for l in loops {
                let _ = l.await;
            }
        });
    });
    Workers {
        stop,
        thread: Some(thread),
        service: service.clone(),
        owners,
    }
}

/// The export workers of a process, as [`start_workers`] started them.
pub struct Workers {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    service: Arc<Service>,
    /// The lease owner name of each worker.
    owners: Vec<String>,
}

impl Workers {
    /// Graceful stop: no worker claims another job; running jobs may finish for up
    /// to `grace`. Returns whether they all did. A job still running when the grace
    /// ends is released ([`store::Store::release`]): queued again at once for
    /// another worker (or this node, restarted), which runs it as its next attempt;
    /// nothing is lost, and the fenced writes keep the abandoned attempt from
    /// landing.
    pub async fn shutdown(mut self, grace: Duration) -> bool {
        self.stop.store(true, Ordering::Relaxed);
        let Some(thread) = self.thread.take() else {
            return true;
        };
        let joined = tokio::task::spawn_blocking(move || thread.join());
        if matches!(tokio::time::timeout(grace, joined).await, Ok(Ok(_))) {
            return true;
        }
        for owner in &self.owners {
            match self.service.store.release(owner) {
                Ok(0) => {}
                Ok(n) => tracing::warn!(
                    "released {n} running export job(s) of {owner} for another worker"
                ),
                Err(e) => tracing::error!(
                    "cannot release the jobs of {owner}: {e:#}; their leases run out instead"
                ),
            }
        }
        false
    }
}

/// Resolves when SIGINT or SIGTERM arrives.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let term = async move {
            match term.as_mut() {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Serves the API on `listener` with `workers` in-process workers until a signal;
/// deletes expired artifacts every minute (more often with a short retention).
pub async fn serve(
    service: Arc<Service>,
    listener: tokio::net::TcpListener,
    workers: usize,
) -> Result<()> {
    let workers = start_workers(&service, workers, "server");
    let retention = {
        let service = service.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = api::expire_artifacts(&service).await {
                    tracing::warn!("expiring artifacts: {e:#}");
                }
                let every = (service.config.server.retention_secs / 4).clamp(1, 60);
                tokio::time::sleep(Duration::from_secs(every)).await;
            }
        })
    };
    // Data files an append or compaction wrote and never committed (its process
    // died): deleted once a day old, at start and every hour.
    let orphans = {
        let lake = service.lake.clone();
        tokio::spawn(async move {
            loop {
                for ds in evidex_engine::model::Dataset::ALL {
                    match lake
                        .sweep_orphans(ds, chrono::Duration::hours(24), false)
                        .await
                    {
                        Ok(o) if o.files_deleted > 0 => tracing::info!(
                            "{}: deleted {} data files no commit names",
                            ds.table_name(),
                            o.files_deleted
                        ),
                        Ok(_) => {}
                        Err(e) => tracing::warn!("sweeping {}: {e}", ds.table_name()),
                    }
                }
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
        })
    };
    let webhooks = tokio::spawn(webhooks::dispatcher(service.clone()));
    let deliveries = tokio::spawn(delivery::dispatcher(service.clone()));
    let scheduler = tokio::spawn(schedules::scheduler(service.clone()));
    let app = api::router(service.clone());
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("the HTTP server failed")?;
    // In-flight requests were answered; now let running jobs finish.
    let grace = Duration::from_secs(service.config.server.shutdown_grace_secs);
    if !workers.shutdown(grace).await {
        tracing::warn!(
            "export jobs still running after {} s (server.shutdown_grace_secs) were queued again for another worker",
            grace.as_secs()
        );
    }
    retention.abort();
    orphans.abort();
    webhooks.abort();
    deliveries.abort();
    scheduler.abort();
    Ok(())
}

/// Binds `listen`.
pub async fn bind(listen: &str) -> Result<(tokio::net::TcpListener, SocketAddr)> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}
