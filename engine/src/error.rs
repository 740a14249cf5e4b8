//! The engine's error type: each variant says what the caller can do about it.

use deltalake::datafusion::error::DataFusionError;

/// Errors the engine returns.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The request itself is wrong (bad date, unknown filter value, bad SQL); the
    /// message names the field. Fix the request and retry.
    #[error("{0}")]
    InvalidRequest(String),
    /// The data URL or storage configuration is unusable.
    #[error("storage configuration: {0}")]
    Config(String),
    /// Reading or writing the object store failed; retrying may help.
    #[error("storage: {0}")]
    Storage(#[from] object_store::Error),
    /// A Delta table operation failed (commit conflicts exhausted, corrupt log).
    #[error("delta table: {0}")]
    Delta(#[from] deltalake::DeltaTableError),
    /// Query planning or execution failed.
    #[error("query: {0}")]
    Query(#[from] DataFusionError),
    /// Encoding a batch failed.
    #[error("arrow: {0}")]
    Arrow(#[from] deltalake::arrow::error::ArrowError),
    /// Writing Parquet failed.
    #[error("parquet: {0}")]
    Parquet(#[from] deltalake::parquet::errors::ParquetError),
    /// Local I/O failed (reading input, writing output).
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The job was cancelled while running.
    #[error("cancelled")]
    Cancelled,
}

/// Result alias for engine operations.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

impl EngineError {
    /// Shorthand for [`EngineError::InvalidRequest`].
    pub fn invalid(msg: impl Into<String>) -> Self {
        EngineError::InvalidRequest(msg.into())
    }
}
