//! Every object path the lake writes is built here, from typed parts only: no user
//! string ever becomes a path.

use chrono::NaiveDate;
use object_store::path::Path;
use uuid::Uuid;

use crate::model::{DATE_PARTITION, Dataset};

/// Where a table lives, relative to the data root (`events/`).
pub fn table_dir(dataset: Dataset) -> &'static str {
    match dataset {
        Dataset::Events => "events/",
        Dataset::Escalations => "escalations/",
        Dataset::ConfigVersions => "config_versions/",
    }
}

/// A new data file's path relative to its table (`date=2026-03-01/part-<uuid>.parquet`).
pub fn new_data_file(date: NaiveDate) -> String {
    format!(
        "{DATE_PARTITION}={}/part-{}.parquet",
        date.format("%Y-%m-%d"),
        Uuid::new_v4()
    )
}

/// Joins a table-relative file path onto the table's location in the object store.
pub fn in_store(table_root: &Path, relative: &str) -> Path {
    let relative = relative.trim_start_matches('/');
    if table_root.as_ref().is_empty() {
        Path::from_iter(relative.split('/'))
    } else {
        Path::from_iter(
            table_root
                .parts()
                .map(|p| p.as_ref().to_string())
                .chain(relative.split('/').map(str::to_string)),
        )
    }
}
