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

use std::path::{Path, PathBuf};

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

/// Opens `path` for reading if it is a regular file. A device or a pipe claims no size and
/// may never end, and opening a pipe waits for a writer: every reader of outside data opens
/// its files through here.
pub(crate) fn open_regular(path: &Path) -> Result<std::fs::File, DataError> {
    let io = |source| DataError::Io { path: path.into(), source };
    if !std::fs::metadata(path).map_err(io)?.is_file() {
        return Err(DataError::format(path, "is not a regular file (a device, a pipe or a folder)"));
    }
    std::fs::File::open(path).map_err(io)
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

#[cfg(test)]
mod special_files {
    use std::path::Path;

    /// Every reader of outside data refuses a pipe, a device and a folder without opening it
    /// (opening a pipe would wait for a writer forever).
    #[test]
    fn pipes_devices_and_folders_are_refused_unopened() {
        let dir = std::env::temp_dir().join(format!("adjoint-special-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("pipe");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().is_ok_and(|s| s.success());
        let mut paths = vec![Path::new("/dev/zero").to_path_buf(), dir.clone()];
        if made {
            paths.push(fifo);
        }
        for p in &paths {
            let errors = [
                super::read_csv(p, "label").map(drop),
                super::csv_columns(p).map(drop),
                super::csv_header(p).map(drop),
                super::idx::read_idx(p).map(drop),
                super::image::read_image(p).map(drop),
                super::text::read_text(p).map(drop),
            ];
            for e in errors {
                let message = e.expect_err("a special file was read").to_string();
                assert!(message.contains("not a regular file"), "{}: {message}", p.display());
            }
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
