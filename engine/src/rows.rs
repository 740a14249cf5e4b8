//! Validated records as typed cells, and their conversion to Arrow record batches in
//! the lake's file schema.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate};
use deltalake::arrow::array::{
    ArrayRef, Float64Builder, Int64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};

use crate::model::{ColumnKind, Dataset};

/// One validated value.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// Absent or null.
    Null,
    /// Text; JSON columns hold their compact JSON text.
    Str(String),
    /// Integer.
    Int(i64),
    /// Float.
    Float(f64),
    /// UTC microseconds since the epoch.
    Ts(i64),
}

/// A validated record: one cell per column of its dataset, in column order.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Cells in the dataset's column order.
    pub cells: Vec<Cell>,
}

impl Row {
    /// The value of a string column, if set.
    pub fn str(&self, index: usize) -> Option<&str> {
        match &self.cells[index] {
            Cell::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value of a timestamp column in UTC microseconds.
    pub fn ts(&self, index: usize) -> Option<i64> {
        match self.cells[index] {
            Cell::Ts(t) => Some(t),
            _ => None,
        }
    }

    /// The record's identity (its key columns joined), used to drop retries.
    pub fn key(&self, dataset: Dataset) -> String {
        let mut key = String::new();
        for (n, name) in dataset.key_columns().iter().enumerate() {
            if n > 0 {
                key.push('@');
            }
            let idx = dataset.column_index(name).expect("key column exists");
            match &self.cells[idx] {
                Cell::Str(s) => key.push_str(s),
                Cell::Int(i) => key.push_str(&i.to_string()),
                other => key.push_str(&format!("{other:?}")),
            }
        }
        key
    }
}

/// The UTC date a microsecond timestamp falls on: the partition it is stored in.
pub fn utc_date(micros: i64) -> NaiveDate {
    DateTime::from_timestamp_micros(micros)
        .map(|d| d.date_naive())
        .unwrap_or(NaiveDate::MIN)
}

/// Sorts rows by the lake's file order: the time column, then the key columns, each
/// ascending with nulls first — the order Arrow's `lexsort` with default options
/// gives a record batch of the same rows (integers and timestamps by value, strings
/// by their UTF-8 bytes; the property test below checks it against `lexsort`).
/// Sorting the rows before they become a batch saves copying every column once more
/// (Arrow's `take`).
pub fn sort_rows(dataset: Dataset, rows: &mut [&Row]) {
    let order: Vec<usize> = std::iter::once(dataset.time_column())
        .chain(dataset.key_columns().iter().copied())
        .map(|c| dataset.column_index(c).expect("sort column exists"))
        .collect();
    rows.sort_unstable_by(|a, b| {
        for &i in &order {
            let o = cmp_cells(&a.cells[i], &b.cells[i]);
            if o.is_ne() {
                return o;
            }
        }
        std::cmp::Ordering::Equal
    });
}

/// Orders two cells of one column as Arrow's sort kernels do (nulls first).
fn cmp_cells(a: &Cell, b: &Cell) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (a, b) {
        (Cell::Null, Cell::Null) => Ordering::Equal,
        (Cell::Null, _) => Ordering::Less,
        (_, Cell::Null) => Ordering::Greater,
        (Cell::Str(x), Cell::Str(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Cell::Int(x), Cell::Int(y)) | (Cell::Ts(x), Cell::Ts(y)) => x.cmp(y),
        (Cell::Float(x), Cell::Float(y)) => x.total_cmp(y),
        // One column holds one kind of cell (validation); never reached.
        _ => Ordering::Equal,
    }
}

/// Builds a record batch in `dataset`'s file schema from rows.
pub fn rows_to_batch(dataset: Dataset, rows: &[&Row]) -> RecordBatch {
    let columns = dataset.columns();
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(columns.len());
    for (i, col) in columns.iter().enumerate() {
        let array: ArrayRef = match col.kind {
            ColumnKind::Str | ColumnKind::Text | ColumnKind::Json => {
                // Sized exactly: growing by doubling copied each column's text up to
                // twice and faulted in fresh pages each time (measured on ingest).
                let bytes = rows
                    .iter()
                    .map(|r| match &r.cells[i] {
                        Cell::Str(s) => s.len(),
                        _ => 0,
                    })
                    .sum();
                let mut b = StringBuilder::with_capacity(rows.len(), bytes);
                for r in rows {
                    match &r.cells[i] {
                        Cell::Str(s) => b.append_value(s),
                        _ => b.append_null(),
                    }
                }
                Arc::new(b.finish())
            }
            ColumnKind::Int => {
                let mut b = Int64Builder::with_capacity(rows.len());
                for r in rows {
                    match r.cells[i] {
                        Cell::Int(v) => b.append_value(v),
                        _ => b.append_null(),
                    }
                }
                Arc::new(b.finish())
            }
            ColumnKind::Float => {
                let mut b = Float64Builder::with_capacity(rows.len());
                for r in rows {
                    match r.cells[i] {
                        Cell::Float(v) => b.append_value(v),
                        _ => b.append_null(),
                    }
                }
                Arc::new(b.finish())
            }
            ColumnKind::Timestamp => {
                let mut b = TimestampMicrosecondBuilder::with_capacity(rows.len());
                for r in rows {
                    match r.cells[i] {
                        Cell::Ts(v) => b.append_value(v),
                        _ => b.append_null(),
                    }
                }
                Arc::new(b.finish().with_timezone("UTC"))
            }
        };
        arrays.push(array);
    }
    RecordBatch::try_new(dataset.file_schema(), arrays).expect("rows match the dataset schema")
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use deltalake::arrow::compute::{SortColumn, lexsort_to_indices, take_record_batch};

    use super::*;

    /// The reference order: Arrow's `lexsort` of a batch by (time column, key columns).
    fn sort_batch(dataset: Dataset, batch: &RecordBatch) -> RecordBatch {
        let mut cols = vec![SortColumn {
            values: batch
                .column_by_name(dataset.time_column())
                .expect("time column")
                .clone(),
            options: None,
        }];
        for k in dataset.key_columns() {
            cols.push(SortColumn {
                values: batch.column_by_name(k).expect("key column").clone(),
                options: None,
            });
        }
        let idx = lexsort_to_indices(&cols, None).unwrap();
        take_record_batch(batch, &idx).unwrap()
    }

    /// A row of `dataset` with the given time and key cells and a fixed value of its
    /// kind in every other column.
    fn row(dataset: Dataset, ts: i64, keys: &[Cell]) -> Row {
        let time = dataset.column_index(dataset.time_column()).unwrap();
        let mut cells: Vec<Cell> = dataset
            .columns()
            .iter()
            .map(|c| match c.kind {
                ColumnKind::Int => Cell::Int(1),
                ColumnKind::Float => Cell::Float(0.5),
                ColumnKind::Timestamp => Cell::Ts(0),
                ColumnKind::Json => Cell::Str("{}".into()),
                ColumnKind::Str | ColumnKind::Text => Cell::Str("x".into()),
            })
            .collect();
        cells[time] = Cell::Ts(ts);
        for (name, cell) in dataset.key_columns().iter().zip(keys) {
            cells[dataset.column_index(name).unwrap()] = cell.clone();
        }
        Row { cells }
    }

    proptest! {
        /// `sort_rows` then a batch is the batch Arrow's own sort gives (the reference):
        /// ties on time broken by the keys, strings by their bytes (non-ASCII too),
        /// integers by value (negative ones too).
        #[test]
        fn rows_sort_as_arrow_sorts_their_batch(
            events in proptest::collection::vec((0i64..4, "[a-c\u{e9}\u{1F600}]{0,3}"), 1..40),
            configs in proptest::collection::vec((0i64..3, "[ab]{0,2}", -3i64..3), 1..40),
        ) {
            let mut seen = std::collections::HashSet::new();
            let events: Vec<Row> = events
                .into_iter()
                .filter(|(_, id)| seen.insert(id.clone()))
                .map(|(ts, id)| row(Dataset::Events, ts, &[Cell::Str(id)]))
                .collect();
            let mut seen = std::collections::HashSet::new();
            let configs: Vec<Row> = configs
                .into_iter()
                .filter(|(_, id, v)| seen.insert((id.clone(), *v)))
                .map(|(ts, id, v)| row(Dataset::ConfigVersions, ts, &[Cell::Str(id), Cell::Int(v)]))
                .collect();
            for (dataset, rows) in [(Dataset::Events, events), (Dataset::ConfigVersions, configs)] {
                let mut refs: Vec<&Row> = rows.iter().collect();
                let reference = sort_batch(dataset, &rows_to_batch(dataset, &refs));
                sort_rows(dataset, &mut refs);
                prop_assert_eq!(rows_to_batch(dataset, &refs), reference);
            }
        }
    }
}
