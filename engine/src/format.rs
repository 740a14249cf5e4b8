//! The export file formats and their names, media types and extensions: what a
//! definition, a job and an encoder all name, so it sits below all of them.

use crate::error::{EngineError, Result};

/// An export file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// RFC 4180 CSV with a header row.
    Csv,
    /// One JSON array.
    Json,
    /// One JSON object per line.
    Ndjson,
    /// Apache Parquet.
    Parquet,
    /// The PDF evidence report (see `report/`).
    Pdf,
}

impl Format {
    /// Parses the API / CLI spelling.
    pub fn parse(s: &str) -> Result<Format> {
        Ok(match s {
            "csv" => Format::Csv,
            "json" => Format::Json,
            "ndjson" | "jsonl" => Format::Ndjson,
            "parquet" => Format::Parquet,
            "pdf" => Format::Pdf,
            other => {
                return Err(EngineError::invalid(format!(
                    "format: unknown format {other:?}; use csv, json, ndjson, parquet or pdf"
                )));
            }
        })
    }

    /// File extension.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Json => "json",
            Format::Ndjson => "ndjson",
            Format::Parquet => "parquet",
            Format::Pdf => "pdf",
        }
    }

    /// MIME type.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; charset=utf-8",
            Format::Json => "application/json",
            Format::Ndjson => "application/x-ndjson",
            Format::Parquet => "application/vnd.apache.parquet",
            Format::Pdf => "application/pdf",
        }
    }

    /// The API / CLI spelling.
    pub fn as_str(self) -> &'static str {
        self.extension()
    }
}
