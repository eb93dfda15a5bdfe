//! MNIST: the bundled copy (embedded in the binary, so training needs no download and works
//! from any directory) and folders of IDX files named as MNIST's.

use std::path::Path;

use ndarray::Array2;

use super::idx::{parse_idx, read_idx, Idx};
use super::{DataError, Dataset};

const TRAIN_IMAGES: &[u8] = include_bytes!("../../data/mnist/train-images-idx3-ubyte.gz");
const TRAIN_LABELS: &[u8] = include_bytes!("../../data/mnist/train-labels-idx1-ubyte.gz");
const TEST_IMAGES: &[u8] = include_bytes!("../../data/mnist/t10k-images-idx3-ubyte.gz");
const TEST_LABELS: &[u8] = include_bytes!("../../data/mnist/t10k-labels-idx1-ubyte.gz");

/// The file names MNIST uses; a folder may hold them gzipped (`.gz`) or raw.
pub const FILES: [&str; 4] =
    ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"];

/// The bundled MNIST: (60,000 training, 10,000 test) examples, pixels scaled to [0, 1].
pub fn bundled() -> Result<(Dataset, Dataset), DataError> {
    let name = |n: &str| Path::new("<bundled>").join(format!("{n}.gz"));
    let train = from_idx(
        parse_idx(TRAIN_IMAGES, &name(FILES[0]))?,
        parse_idx(TRAIN_LABELS, &name(FILES[1]))?,
        "bundled training set",
    )?;
    let test = from_idx(
        parse_idx(TEST_IMAGES, &name(FILES[2]))?,
        parse_idx(TEST_LABELS, &name(FILES[3]))?,
        "bundled test set",
    )?;
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
    let pixels: Vec<f32> = images.data.iter().map(|&p| p as f32 / 255.0).collect();
    let features = Array2::from_shape_vec((n, width), pixels).expect("sizes checked by the IDX reader");
    Ok(Dataset::new(features, labels.data.iter().map(|&l| l as usize).collect(), 10))
}
