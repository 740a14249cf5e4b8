//! The ingest batcher: concurrent ingest requests' rows gathered into one Delta
//! commit, each request answered after that commit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Result;
use evidex_engine::lake::Lake;
use evidex_engine::model::Dataset;
use evidex_engine::rows::Row;
use tokio::sync::{Notify, mpsc, oneshot};

/// One ingest request's rows, waiting for the batch commit.
pub struct IngestItem {
    /// Valid rows.
    pub rows: Vec<Row>,
    /// Told the commit's result: how many of these rows were already stored.
    pub reply: oneshot::Sender<Result<u64, IngestFailure>>,
}

/// Why a batch commit failed; none of its rows were stored.
#[derive(Debug, Clone)]
pub struct IngestFailure {
    /// The error and its causes.
    pub message: String,
    /// The disk or volume is full (`ENOSPC`): sending again after space is freed
    /// succeeds.
    pub storage_full: bool,
}

/// Whether `e` or one of its causes is a full disk (`ENOSPC`, POSIX.1-2017 errno;
/// `std::io::ErrorKind::StorageFull`). Object stores that keep only the message
/// of an `io::Error` are matched by the OS's text for it.
pub fn is_storage_full(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && (io.kind() == std::io::ErrorKind::StorageFull || io.raw_os_error() == Some(28))
        {
            return true;
        }
        if err.to_string().contains("No space left on device") {
            return true;
        }
        cur = err.source();
    }
    false
}

/// A dataset's ingest batcher as request handlers reach it: a request takes an
/// [`Arrival`] as soon as it is known to be an ingest request (before its body is read
/// and parsed) and hands it back with its rows in [`IngestQueue::send`].
pub struct IngestQueue {
    tx: mpsc::Sender<IngestItem>,
    arriving: Arc<Arriving>,
}

/// Ingest requests on their way to a batcher: body being read or parsed.
#[derive(Default)]
struct Arriving {
    count: AtomicUsize,
    /// Signalled when `count` drops to zero (a permit is kept if nobody waits).
    none_left: Notify,
}

/// One request on its way to the batcher; dropping it (sent, refused or failed) says
/// so.
pub struct Arrival(Arc<Arriving>);

impl Drop for Arrival {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.none_left.notify_one();
        }
    }
}

impl IngestQueue {
    /// Counts a request as arriving until the returned guard is dropped.
    pub fn arrive(&self) -> Arrival {
        self.arriving.count.fetch_add(1, Ordering::SeqCst);
        Arrival(self.arriving.clone())
    }

    /// Queues a request's rows, then ends its arrival (in that order, so a batcher
    /// that sees no request arriving has every queued one). Errors when the batcher
    /// has stopped.
    pub async fn send(&self, item: IngestItem, arrival: Arrival) -> Result<()> {
        let sent = self.tx.send(item).await;
        drop(arrival);
        sent.map_err(|_| anyhow::anyhow!("the ingest batcher stopped"))
    }
}

/// Starts the batcher of `dataset`: concurrent requests' rows are committed together,
/// so many small requests make few files; every 16 commits the dataset's crowded
/// partitions are compacted. Requests are answered after their commit, so accepted
/// rows are durable. `counter` counts commits.
///
/// A batch closes as soon as no other request is on its way (none is being read or
/// parsed), when it holds `max_rows`, or `linger` after its first request, whichever
/// comes first: a lone client's request is committed at once, and clients sending
/// together still share one commit without waiting out the linger.
pub fn spawn_batcher(
    lake: Lake,
    dataset: Dataset,
    linger: Duration,
    max_rows: usize,
    compact_min_files: usize,
    counter: Option<Arc<AtomicU64>>,
) -> IngestQueue {
    let (tx, mut rx) = mpsc::channel::<IngestItem>(1024);
    let arriving = Arc::new(Arriving::default());
    let queue = IngestQueue {
        tx,
        arriving: arriving.clone(),
    };
    tokio::spawn(async move {
        let mut since_compaction = 0u32;
        while let Some(first) = rx.recv().await {
            let mut items = vec![first];
            let mut n: usize = items[0].rows.len();
            let deadline = tokio::time::Instant::now() + linger;
            'gather: while n < max_rows {
                while n < max_rows
                    && let Ok(item) = rx.try_recv()
                {
                    n += item.rows.len();
                    items.push(item);
                }
                if n >= max_rows || arriving.count.load(Ordering::SeqCst) == 0 {
                    break;
                }
                tokio::select! {
                    item = rx.recv() => match item {
                        Some(item) => {
                            n += item.rows.len();
                            items.push(item);
                        }
                        None => break 'gather,
                    },
                    () = arriving.none_left.notified() => {}
                    () = tokio::time::sleep_until(deadline) => break 'gather,
                }
            }
            let mut rows = Vec::with_capacity(n);
            let mut replies = Vec::with_capacity(items.len());
            for item in items {
                let start = rows.len();
                rows.extend(item.rows);
                replies.push((start..rows.len(), item.reply));
            }
            // Requests are appended in arrival order, so of two requests carrying the
            // same id, the earlier one's copy is stored.
            let result = lake.append(dataset, rows).await;
            if let Some(c) = &counter {
                c.fetch_add(1, Ordering::Relaxed);
            }
            for (range, reply) in replies {
                let answer = match &result {
                    Ok(outcome) => Ok(outcome
                        .duplicate_rows
                        .iter()
                        .filter(|i| range.contains(i))
                        .count() as u64),
                    Err(e) => Err(IngestFailure {
                        message: e.to_string(),
                        storage_full: is_storage_full(e),
                    }),
                };
                let _ = reply.send(answer);
            }
            since_compaction += 1;
            if since_compaction >= 16 {
                since_compaction = 0;
                if let Err(e) = lake.compact(dataset, compact_min_files).await {
                    tracing::warn!("compacting {}: {e}", dataset.table_name());
                }
            }
        }
    });
    queue
}
