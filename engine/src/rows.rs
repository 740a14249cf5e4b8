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

/// Builds a record batch in `dataset`'s file schema from rows.
pub fn rows_to_batch(dataset: Dataset, rows: &[&Row]) -> RecordBatch {
    let columns = dataset.columns();
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(columns.len());
    for (i, col) in columns.iter().enumerate() {
        let array: ArrayRef = match col.kind {
            ColumnKind::Str | ColumnKind::Text | ColumnKind::Json => {
                let mut b = StringBuilder::with_capacity(rows.len(), rows.len() * 16);
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
