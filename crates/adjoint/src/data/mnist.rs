//! MNIST in its IDX files: a folder holding them, or their bytes (the command-line tool
//! embeds a copy, so that training needs no download; the library does not carry it).

use std::path::Path;

use ndarray::Array2;

use super::idx::{parse_idx_limited, read_idx_limited, Idx};
use super::{DataError, Dataset};

/// The file names MNIST uses; a folder may hold them gzipped (`.gz`) or raw.
pub const FILES: [&str; 4] =
    ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"];

/// MNIST from the bytes of its four files (gzipped or raw), in the order of [`FILES`]: the
/// (training, test) sets. `origin` names where they came from in messages.
pub fn from_file_bytes(files: [&[u8]; 4], origin: &str) -> Result<(Dataset, Dataset), DataError> {
    from_file_bytes_limited(files, origin, None, None)
}

/// Like [`from_file_bytes`], keeping at most `train_limit` and `test_limit` examples, which
/// are the only ones decompressed.
pub fn from_file_bytes_limited(
    files: [&[u8]; 4],
    origin: &str,
    train_limit: Option<usize>,
    test_limit: Option<usize>,
) -> Result<(Dataset, Dataset), DataError> {
    let name = |n: &str| Path::new(origin).join(n);
    let idx = |k: usize, limit| parse_idx_limited(files[k], &name(FILES[k]), limit);
    let train = from_idx(idx(0, train_limit)?, idx(1, train_limit)?, "training set")?;
    let test = from_idx(idx(2, test_limit)?, idx(3, test_limit)?, "test set")?;
    Ok((train, test))
}

/// MNIST-format data from a folder holding the four files (each gzipped or raw).
pub fn load_dir(dir: &Path) -> Result<(Dataset, Dataset), DataError> {
    load_dir_limited(dir, None, None)
}

/// Like [`load_dir`], keeping at most `train_limit` and `test_limit` examples, which are the
/// only ones decompressed (a file claiming millions of images costs nothing beyond them).
pub fn load_dir_limited(
    dir: &Path,
    train_limit: Option<usize>,
    test_limit: Option<usize>,
) -> Result<(Dataset, Dataset), DataError> {
    let train = from_idx(find(dir, FILES[0], train_limit)?, find(dir, FILES[1], train_limit)?, "training set")?;
    let test = load_test_dir(dir, test_limit)?;
    Ok((train, test))
}

/// The test set (`t10k-*`) of an MNIST-format folder alone, at most `limit` examples: the
/// training files need not be there, and are not read.
pub fn load_test_dir(dir: &Path, limit: Option<usize>) -> Result<Dataset, DataError> {
    from_idx(find(dir, FILES[2], limit)?, find(dir, FILES[3], limit)?, "test set")
}

/// Reads `name` from `dir`, gzipped (`name.gz`) or raw.
fn find(dir: &Path, name: &str, limit: Option<usize>) -> Result<Idx, DataError> {
    let gz = dir.join(format!("{name}.gz"));
    let raw = dir.join(name);
    if gz.exists() {
        read_idx_limited(&gz, limit)
    } else if raw.exists() {
        read_idx_limited(&raw, limit)
    } else {
        Err(DataError::Io {
            path: raw,
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("neither {name} nor {name}.gz is in the folder"),
            ),
        })
    }
}

/// Pairs an image file (`[n, rows, cols]`) with a label file (`[n]`).
pub fn from_idx(images: Idx, labels: Idx, what: &str) -> Result<Dataset, DataError> {
    if images.dims.len() < 2 {
        return Err(DataError::Mismatch(format!(
            "{what}: images have dimensions {:?}, expected [n, rows, cols]",
            images.dims
        )));
    }
    if labels.dims.len() != 1 {
        return Err(DataError::Mismatch(format!("{what}: labels have dimensions {:?}, expected [n]", labels.dims)));
    }
    let n = images.dims[0];
    if labels.dims[0] != n {
        return Err(DataError::Mismatch(format!("{what}: {n} images but {} labels", labels.dims[0])));
    }
    let width = images.dims[1..].iter().product::<usize>();
    // Pixels stay bytes (a quarter of the memory of f32); batches scale them to [0, 1].
    let pixels = Array2::from_shape_vec((n, width), images.data).expect("sizes checked by the IDX reader");
    Ok(Dataset::from_bytes(pixels, 255.0, labels.data.iter().map(|&l| l as usize).collect(), 10))
}
