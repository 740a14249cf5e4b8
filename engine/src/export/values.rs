//! The distinct values of an event column within a scope, which a form offers as
//! filter values.

use super::ExportRequest;
use crate::error::{EngineError, Result};
use crate::lake::Lake;
use crate::lake::table::DEFAULT_BATCH_ROWS;
use crate::views::PinnedTables;

/// Event columns whose values [`distinct_values`] lists (what export filters name).
pub const VALUE_COLUMNS: [&str; 7] = [
    "policy",
    "gateway_id",
    "consumer_group",
    "consumer",
    "provider",
    "model",
    "reason_code",
];

/// The distinct non-empty values of the event `column` (one of [`VALUE_COLUMNS`])
/// within `request`'s scope, redacted exactly as the export would write them, sorted,
/// at most `limit`. This is what a form offers as filter values.
///
/// # Errors
/// `InvalidRequest` for a column outside [`VALUE_COLUMNS`]; query errors.
pub async fn distinct_values(
    lake: &Lake,
    pinned: &PinnedTables,
    request: &ExportRequest,
    column: &str,
    limit: usize,
) -> Result<Vec<String>> {
    use deltalake::arrow::array::{Array, AsArray};
    use deltalake::datafusion::prelude::{col, lit};
    if !VALUE_COLUMNS.contains(&column) {
        return Err(EngineError::invalid(format!(
            "field: '{column}' is not one of {}",
            VALUE_COLUMNS.join(", ")
        )));
    }
    let q = request.queries(lake, pinned, DEFAULT_BATCH_ROWS)?;
    let batches = q
        .events()?
        .select_columns(&[column])?
        .filter(col(column).is_not_null().and(col(column).not_eq(lit(""))))?
        .distinct()?
        .sort(vec![col(column).sort(true, false)])?
        .limit(0, Some(limit))?
        .collect()
        .await?;
    let mut out = Vec::new();
    for b in &batches {
        let a = deltalake::arrow::compute::cast(
            b.column(0),
            &deltalake::arrow::datatypes::DataType::Utf8,
        )
        .map_err(|e| EngineError::Query(e.into()))?;
        let a = a.as_string::<i32>();
        for i in 0..a.len() {
            if !a.is_null(i) {
                out.push(a.value(i).to_string());
            }
        }
    }
    Ok(out)
}
