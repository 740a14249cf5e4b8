//! evidex engine: the event lake, ingest, export planning and encoders.
//!
//! The engine knows nothing about HTTP, command lines or environment variables, and
//! never reads the wall clock: callers pass a [`clock::Clock`]. See ARCHITECTURE.md.

pub mod audit;
pub mod clock;
pub mod definition;
pub mod error;
pub mod export;
pub mod format;
pub mod generate;
pub mod ingest;
pub mod integrity;
pub mod lake;
pub mod model;
pub mod redact;
pub mod report;
pub mod rows;
pub mod scope;
pub mod stream;
pub mod verify;
pub mod views;

pub use error::{EngineError, Result};

/// The Arrow and Parquet crates the engine speaks, for callers that read its output.
pub use deltalake::{arrow, parquet};

/// The engine's version, recorded in artifacts.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
