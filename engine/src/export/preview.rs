//! Counting what an export would contain before running it, and checking its SQL
//! definition plans.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{ExportRequest, include_frame};
use crate::error::Result;
use crate::lake::Lake;
use crate::lake::table::DEFAULT_BATCH_ROWS;
use crate::views::{PinnedTables, ScopedQueries};

/// Record counts of a scope, per dataset.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Preview {
    /// Records of the main dataset (events, or a definition's rows).
    pub records: u64,
    /// Rows per dataset (`events` or the definition's name, and each included one).
    pub by_dataset: BTreeMap<String, u64>,
}

/// Counts what an export of `request` would contain.
pub async fn preview(
    lake: &Lake,
    pinned: &PinnedTables,
    request: &ExportRequest,
) -> Result<Preview> {
    let q = request.queries(lake, pinned, DEFAULT_BATCH_ROWS)?;
    let records = match &request.definition {
        None => q.count_events().await?,
        Some(d) => ScopedQueries::count(q.definition(&d.sql).await?).await?,
    };
    let mut by_dataset = BTreeMap::from([(request.main_dataset(), records)]);
    for inc in &request.include {
        if let Some((df, _)) = include_frame(&q, *inc).await? {
            by_dataset.insert(inc.name().to_string(), ScopedQueries::count(df).await?);
        }
    }
    Ok(Preview {
        records,
        by_dataset,
    })
}

/// Plans `request`'s SQL definition (without running it), so a create request with
/// a definition that names a missing column fails at once, not in a worker.
pub async fn check_definition(
    lake: &Lake,
    pinned: &PinnedTables,
    request: &ExportRequest,
) -> Result<()> {
    if let Some(d) = &request.definition {
        let q = request.queries(lake, pinned, DEFAULT_BATCH_ROWS)?;
        q.definition(&d.sql).await?;
    }
    Ok(())
}
