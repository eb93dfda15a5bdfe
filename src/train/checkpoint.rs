//! Saving and loading named `f32` arrays as safetensors, written atomically: the bytes go to a
//! temporary file in the same folder, are synced, then renamed over the target, so a failed
//! save leaves the previous file intact.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn};
use safetensors::{Dtype, SafeTensors};

/// Why a checkpoint could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not a valid checkpoint, or not one of this model.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Writes `bytes` to `path` atomically (temporary file, sync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    let io = |source| CheckpointError::Io { path: path.into(), source };
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

/// Saves named arrays (and string metadata) as a safetensors file, atomically.
pub fn save(
    path: &Path,
    arrays: &[(String, ArrayD<f32>)],
    metadata: HashMap<String, String>,
) -> Result<(), CheckpointError> {
    let invalid = |message: String| CheckpointError::Invalid { path: path.into(), message };
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = arrays
        .iter()
        .map(|(n, a)| (n.clone(), a.iter().flat_map(|v| v.to_le_bytes()).collect(), a.shape().to_vec()))
        .collect();
    let views = bytes
        .iter()
        .map(|(n, b, s)| safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), b).map(|v| (n.clone(), v)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(e.to_string()))?;
    let out = safetensors::serialize(views, Some(metadata)).map_err(|e| invalid(e.to_string()))?;
    write_atomic(path, &out)
}

/// A loaded checkpoint: named arrays and metadata.
pub struct Loaded {
    /// The arrays, by name.
    pub arrays: HashMap<String, ArrayD<f32>>,
    /// The string metadata.
    pub metadata: HashMap<String, String>,
}

/// Loads a safetensors file of `f32` arrays. Sizes and offsets are validated by the format
/// reader before any array is built.
pub fn load(path: &Path) -> Result<Loaded, CheckpointError> {
    let bytes = std::fs::read(path).map_err(|source| CheckpointError::Io { path: path.into(), source })?;
    let invalid = |message: String| CheckpointError::Invalid { path: path.into(), message };
    let st = SafeTensors::deserialize(&bytes).map_err(|e| invalid(format!("not a valid safetensors file: {e}")))?;
    let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| invalid(e.to_string()))?;
    let mut arrays = HashMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F32 {
            return Err(invalid(format!("tensor '{name}' is {:?}, expected F32", view.dtype())));
        }
        let values: Vec<f32> =
            view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        let array = ArrayD::from_shape_vec(IxDyn(view.shape()), values)
            .map_err(|_| invalid(format!("tensor '{name}': data does not fill shape {:?}", view.shape())))?;
        arrays.insert(name, array);
    }
    Ok(Loaded { arrays, metadata: meta.metadata().clone().unwrap_or_default() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let dir = std::env::temp_dir().join(format!("adjoint-ckpt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("m.safetensors");
        let a = ArrayD::from_shape_vec(IxDyn(&[2, 3]), vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        let meta: HashMap<String, String> = [("k".to_string(), "v".to_string())].into();
        save(&p, &[("w".into(), a.clone())], meta).unwrap();
        let l = load(&p).unwrap();
        assert_eq!(l.arrays["w"], a);
        assert_eq!(l.metadata["k"], "v");
        // Truncation and garbage are errors, not panics; a huge claimed header is refused.
        let bytes = std::fs::read(&p).unwrap();
        for bad in [&bytes[..bytes.len() - 3], &bytes[..5], &[0xff; 16][..]] {
            let q = dir.join("bad.safetensors");
            std::fs::write(&q, bad).unwrap();
            assert!(matches!(load(&q), Err(CheckpointError::Invalid { .. })));
        }
    }

    #[test]
    fn a_failed_save_leaves_the_old_file() {
        let dir = std::env::temp_dir().join(format!("adjoint-ckpt2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("keep.bin");
        write_atomic(&p, b"old").unwrap();
        // The target is now a directory-in-the-way: rename fails, the old file survives.
        let blocked = dir.join("blocked");
        std::fs::create_dir_all(blocked.join("x")).unwrap();
        assert!(write_atomic(&blocked, b"new").is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert!(std::fs::read_dir(&dir).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().contains(".tmp-")));
    }
}
