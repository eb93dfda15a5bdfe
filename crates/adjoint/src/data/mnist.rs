//! MNIST in its IDX files: a folder holding them, or their bytes (the command-line tool
//! embeds a copy, so that training needs no download; the library does not carry it).

use std::path::Path;

use ndarray::Array2;

use super::idx::{parse_idx, read_idx, Idx};
use super::{DataError, Dataset};

/// The file names MNIST uses; a folder may hold them gzipped (`.gz`) or raw.
pub const FILES: [&str; 4] =
    ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"];

/// MNIST from the bytes of its four files (gzipped or raw), in the order of [`FILES`]: the
/// (training, test) sets. `origin` names where they came from in messages.
pub fn from_file_bytes(files: [&[u8]; 4], origin: &str) -> Result<(Dataset, Dataset), DataError> {
    let name = |n: &str| Path::new(origin).join(n);
    let train = from_idx(parse_idx(files[0], &name(FILES[0]))?, parse_idx(files[1], &name(FILES[1]))?, "training set")?;
    let test = from_idx(parse_idx(files[2], &name(FILES[2]))?, parse_idx(files[3], &name(FILES[3]))?, "test set")?;
    Ok((train, test))
}

/// MNIST-format data from a folder holding the four files (each gzipped or raw).
pub fn load_dir(dir: &Path) -> Result<(Dataset, Dataset), DataError> {
    let find = |n: &str| -> Result<Idx, DataError> {
        let gz = dir.join(format!("{n}.gz"));
        let raw = dir.join(n);
        if gz.exists() {
            read_idx(&gz)
        } else if raw.exists() {
            read_idx(&raw)
        } else {
            Err(DataError::Io {
                path: raw,
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("neither {n} nor {n}.gz is in the folder"),
                ),
            })
        }
    };
    let train = from_idx(find(FILES[0])?, find(FILES[1])?, "training set")?;
    let test = from_idx(find(FILES[2])?, find(FILES[3])?, "test set")?;
    Ok((train, test))
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
