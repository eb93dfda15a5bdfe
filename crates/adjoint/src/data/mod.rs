//! Data: IDX files (MNIST's format), CSV, an in-memory dataset (classification or regression)
//! with seeded, stratified splits, standardisation and mini-batch loading, and text for
//! language models (a character vocabulary and windows of next-character targets).
//!
//! Everything that reads files returns a typed [`DataError`] naming the file; no size a file
//! claims is trusted before the bytes are there.

mod csv;
mod dataset;
pub mod idx;
pub mod image;
pub mod mnist;
mod text;

pub use csv::{
    csv_columns, csv_header, fingerprint, parse_csv, read_csv, read_csv_fingerprinted, read_csv_regression,
    MAX_CSV_BYTES,
};
pub use dataset::{Batch, Batches, Dataset, InputNorm, Targets};
pub use text::{read_text, text_datasets, Vocabulary, MAX_TEXT_BYTES};

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

/// The classic toy problem of `classes` interleaved spirals with `per_class` noisy points
/// each (seeded), features in [−1, 1]².
pub fn spiral(classes: usize, per_class: usize, seed: u64) -> Dataset {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut features = Vec::with_capacity(classes * per_class * 2);
    let mut labels = Vec::with_capacity(classes * per_class);
    for c in 0..classes {
        for i in 0..per_class {
            let r = i as f32 / per_class as f32;
            let t = c as f32 * 4.0 + r * 4.0 + rng.random_range(-0.2..0.2);
            features.extend([r * t.sin(), r * t.cos()]);
            labels.push(c);
        }
    }
    Dataset::new(ndarray::Array2::from_shape_vec((labels.len(), 2), features).expect("sizes"), labels, classes)
}

/// XOR as a 2-class problem: the four corners of the unit square, repeated `copies` times.
pub fn xor(copies: usize) -> Dataset {
    let corners = [([0.0f32, 0.0], 0usize), ([0.0, 1.0], 1), ([1.0, 0.0], 1), ([1.0, 1.0], 0)];
    let features: Vec<f32> = (0..copies).flat_map(|_| corners.iter().flat_map(|(x, _)| *x)).collect();
    let labels = (0..copies).flat_map(|_| corners.iter().map(|(_, y)| *y)).collect();
    Dataset::new(ndarray::Array2::from_shape_vec((4 * copies, 2), features).expect("sizes"), labels, 2)
}
