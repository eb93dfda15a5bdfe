//! Data: IDX files (MNIST's format), CSV, an in-memory dataset with mini-batch loading, and
//! the bundled MNIST.
//!
//! Everything that reads files returns a typed [`DataError`] naming the file; no size a file
//! claims is trusted before the bytes are there.

mod csv;
mod dataset;
pub mod idx;
pub mod mnist;

pub use csv::read_csv;
pub use dataset::{Batches, Dataset};

use std::path::PathBuf;

/// Why data could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file was read but its contents are wrong (corrupt, truncated, wrong format).
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A CSV line is malformed.
    #[error("{path}, line {line}: {message}")]
    Csv {
        /// The file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The pieces do not fit together (e.g. image and label counts differ).
    #[error("{0}")]
    Mismatch(String),
}

impl DataError {
    pub(crate) fn format(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        DataError::Format { path: path.into(), message: message.into() }
    }
}
