//! Named arrays in safetensors files: written atomically and byte-for-byte reproducibly, read
//! with every size checked before anything is allocated.
//!
//! - **Atomic**: bytes go to a temporary file in the same folder, are synced, then renamed
//!   over the target, so a failed or interrupted save leaves the previous file intact.
//! - **Reproducible**: the header lists tensors in the order given and metadata keys sorted,
//!   so the same arrays and metadata give the same bytes (the `safetensors` crate's writer
//!   orders metadata by hash, differently in every process).
//! - **Checked**: files are parsed and validated by the `safetensors` crate; `f32` and `f64`
//!   data is accepted for either element type (converted), anything else is an error.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn};
use safetensors::{Dtype, SafeTensors};

use crate::tensor::Element;

/// Named arrays, in order.
pub type Tensors<T> = Vec<(String, ArrayD<T>)>;

/// Why a file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not a valid tensor file, or does not fit what was asked of it.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl IoError {
    /// An [`IoError::Invalid`] for `path`.
    pub fn invalid(path: &Path, message: impl Into<String>) -> Self {
        IoError::Invalid { path: path.into(), message: message.into() }
    }
}

/// The temporary name `write_atomic` writes to before renaming: `.NAME.tmp-PID`.
pub fn temporary_name(path: &Path) -> PathBuf {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    dir.join(format!(".{name}.tmp-{}", std::process::id()))
}

/// Writes `bytes` to `path` atomically (temporary file, sync, rename, sync of the folder).
///
/// # Errors
/// If any step fails; the temporary file is removed and `path` is left as it was.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), IoError> {
    let io = |source| IoError::Io { path: path.into(), source };
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = temporary_name(path);
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

fn dtype_of<T: Element>() -> (Dtype, &'static str, usize) {
    if T::NAME == "f64" {
        (Dtype::F64, "F64", 8)
    } else {
        (Dtype::F32, "F32", 4)
    }
}

/// Whether `name` is one of PyTorch's integer buffers (batch norm's `num_batches_tracked`),
/// written as I64 and optional when loading (PyTorch's own files before version 0.4.1, and
/// adjoint's before 0.3, lack it).
pub fn is_integer_buffer(name: &str) -> bool {
    name == "num_batches_tracked" || name.ends_with(".num_batches_tracked")
}

/// The safetensors encoding of `tensors` and `metadata` (deterministic: see the module docs).
pub fn encode<T: Element>(tensors: &[(String, ArrayD<T>)], metadata: &HashMap<String, String>) -> Vec<u8> {
    let (_, dtype, size) = dtype_of::<T>();
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        let sorted: BTreeMap<&String, &String> = metadata.iter().collect();
        header.insert("__metadata__".into(), serde_json::json!(sorted));
    }
    let mut data: Vec<u8> = Vec::with_capacity(tensors.iter().map(|(_, a)| a.len() * size).sum());
    for (name, array) in tensors {
        let start = data.len();
        if is_integer_buffer(name) {
            // PyTorch keeps this count as int64; written so, `torch.load_state_dict` and
            // `safetensors.torch.load_file` see the dtype PyTorch itself saves.
            for &v in array.as_standard_layout().iter() {
                data.extend_from_slice(&(v.to_f64_lossless() as i64).to_le_bytes());
            }
            header.insert(
                name.clone(),
                serde_json::json!({ "dtype": "I64", "shape": array.shape(), "data_offsets": [start, data.len()] }),
            );
            continue;
        }
        for &v in array.as_standard_layout().iter() {
            if size == 8 {
                data.extend_from_slice(&v.to_f64_lossless().to_le_bytes());
            } else {
                data.extend_from_slice(&(v.to_f64_lossless() as f32).to_le_bytes());
            }
        }
        header.insert(
            name.clone(),
            serde_json::json!({ "dtype": dtype, "shape": array.shape(), "data_offsets": [start, data.len()] }),
        );
    }
    let mut header = serde_json::to_string(&header).expect("a JSON map serialises").into_bytes();
    // The format pads the header with spaces to a multiple of 8 bytes.
    header.resize(header.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + header.len() + data.len());
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&data);
    out
}

/// Saves `tensors` with string `metadata` as a safetensors file, atomically.
///
/// # Errors
/// If the file cannot be written.
pub fn save<T: Element>(
    path: &Path,
    tensors: &[(String, ArrayD<T>)],
    metadata: &HashMap<String, String>,
) -> Result<(), IoError> {
    write_atomic(path, &encode(tensors, metadata))
}

/// A loaded file: arrays by name and the string metadata.
#[derive(Debug, Clone)]
pub struct Loaded<T: Element> {
    /// The arrays, by name.
    pub tensors: HashMap<String, ArrayD<T>>,
    /// The string metadata.
    pub metadata: HashMap<String, String>,
}

/// Bounds on what [`load`] accepts.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The largest file read, in bytes.
    pub max_file_bytes: u64,
}

impl Default for Limits {
    /// 4 GiB.
    fn default() -> Self {
        Limits { max_file_bytes: 4 << 30 }
    }
}

/// Loads a safetensors file as arrays of `T` (floating-point, integer and boolean tensors
/// are converted). The file's size is checked
/// against `limits` before it is read; the header is validated (offsets, shapes, coverage)
/// before any array is built.
///
/// # Errors
/// [`IoError`] naming the file and what is wrong.
pub fn load<T: Element>(path: &Path, limits: &Limits) -> Result<Loaded<T>, IoError> {
    use std::io::Read;
    let io = |source| IoError::Io { path: path.into(), source };
    let too_large =
        |size: u64| IoError::invalid(path, format!("{size} bytes is more than the {} accepted", limits.max_file_bytes));
    // A device or a pipe claims no size and may never end (opening a pipe waits for a
    // writer): only regular files are opened and read.
    if !std::fs::metadata(path).map_err(io)?.is_file() {
        return Err(IoError::invalid(path, "is not a regular file (a device, a pipe or a folder)"));
    }
    let file = std::fs::File::open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if meta.len() > limits.max_file_bytes {
        return Err(too_large(meta.len()));
    }
    // The size may change while reading: never more than the limit is read.
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(limits.max_file_bytes.saturating_add(1)).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > limits.max_file_bytes {
        return Err(too_large(bytes.len() as u64));
    }
    decode(&bytes, path)
}

/// Parses safetensors bytes (see [`load`]); `path` names them in errors.
///
/// # Errors
/// [`IoError::Invalid`] saying what is wrong.
pub fn decode<T: Element>(bytes: &[u8], path: &Path) -> Result<Loaded<T>, IoError> {
    decode_bytes(bytes).map_err(|m| IoError::invalid(path, m))
}

/// The elements of a tensor stored as `dtype`, as `T` (integers beyond 2⁵³ and, into f32,
/// beyond 2²⁴ round to the nearest representable value), or `None` for a dtype not read.
fn convert<T: Element>(dtype: Dtype, data: &[u8]) -> Option<Vec<T>> {
    fn each<const N: usize, T: Element>(data: &[u8], f: impl Fn([u8; N]) -> f64) -> Vec<T> {
        data.chunks_exact(N).map(|c| T::from_f64_lossy(f(c.try_into().expect("N bytes")))).collect()
    }
    Some(match dtype {
        Dtype::F64 => each::<8, T>(data, f64::from_le_bytes),
        Dtype::F32 => each::<4, T>(data, |b| f32::from_le_bytes(b) as f64),
        Dtype::F16 => each::<2, T>(data, |b| half::f16::from_le_bytes(b).to_f64()),
        Dtype::BF16 => each::<2, T>(data, |b| half::bf16::from_le_bytes(b).to_f64()),
        Dtype::I64 => each::<8, T>(data, |b| i64::from_le_bytes(b) as f64),
        Dtype::I32 => each::<4, T>(data, |b| i32::from_le_bytes(b) as f64),
        Dtype::I16 => each::<2, T>(data, |b| i16::from_le_bytes(b) as f64),
        Dtype::I8 => each::<1, T>(data, |b| i8::from_le_bytes(b) as f64),
        Dtype::U64 => each::<8, T>(data, |b| u64::from_le_bytes(b) as f64),
        Dtype::U32 => each::<4, T>(data, |b| u32::from_le_bytes(b) as f64),
        Dtype::U16 => each::<2, T>(data, |b| u16::from_le_bytes(b) as f64),
        Dtype::U8 => each::<1, T>(data, |b| b[0] as f64),
        Dtype::BOOL => each::<1, T>(data, |b| if b[0] != 0 { 1.0 } else { 0.0 }),
        _ => return None,
    })
}

fn decode_bytes<T: Element>(bytes: &[u8]) -> Result<Loaded<T>, String> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| format!("not a valid safetensors file: {e}"))?;
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| e.to_string())?;
    let mut tensors = HashMap::new();
    for (name, view) in st.tensors() {
        let data = view.data();
        let values = convert::<T>(view.dtype(), data).ok_or_else(|| {
            format!(
                "tensor '{name}' is {:?}; F64, F32, F16, BF16, integer and BOOL tensors are supported",
                view.dtype()
            )
        })?;
        let array = ArrayD::from_shape_vec(IxDyn(view.shape()), values)
            .map_err(|_| format!("tensor '{name}': data does not fill shape {:?}", view.shape()))?;
        tensors.insert(name, array);
    }
    Ok(Loaded { tensors, metadata: meta.metadata().clone().unwrap_or_default() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("adjoint-io-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn round_trip_in_both_element_types_and_across_them() {
        let dir = tmp("rt");
        let p = dir.join("m.safetensors");
        let a = ArrayD::from_shape_vec(IxDyn(&[2, 3]), vec![1.0f64, 2.0, 3.0, 4.0, 5.0, 6.5]).unwrap();
        let meta: HashMap<String, String> = [("k".to_string(), "v".to_string())].into();
        save(&p, &[("w".into(), a.clone())], &meta).unwrap();
        let l = load::<f64>(&p, &Limits::default()).unwrap();
        assert_eq!((l.tensors["w"].clone(), l.metadata["k"].as_str()), (a.clone(), "v"));
        // An f64 file loads as f32 too.
        assert_eq!(load::<f32>(&p, &Limits::default()).unwrap().tensors["w"], a.mapv(|v| v as f32));
        // The bytes are exactly what the safetensors crate reads, and reproducible.
        let meta2: HashMap<String, String> = (0..20).map(|i| (format!("key{i}"), i.to_string())).collect();
        let one = encode(&[("b".into(), a.clone()), ("a".into(), a.clone())], &meta2);
        let two = encode(&[("b".into(), a.clone()), ("a".into(), a)], &meta2.clone().into_iter().collect());
        assert_eq!(one, two);
        assert!(SafeTensors::deserialize(&one).is_ok());
    }

    #[test]
    fn corruption_and_oversized_files_are_errors_not_panics() {
        let dir = tmp("bad");
        let p = dir.join("m.safetensors");
        let a = ArrayD::from_shape_vec(IxDyn(&[2]), vec![1.0f32, 2.0]).unwrap();
        save(&p, &[("w".into(), a)], &HashMap::new()).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        for bad in [&bytes[..bytes.len() - 3], &bytes[..5], &[0xff; 16][..]] {
            let q = dir.join("bad.safetensors");
            std::fs::write(&q, bad).unwrap();
            assert!(matches!(load::<f32>(&q, &Limits::default()), Err(IoError::Invalid { .. })));
        }
        assert!(matches!(load::<f32>(&p, &Limits { max_file_bytes: 10 }), Err(IoError::Invalid { .. })));
    }

    #[test]
    fn a_failed_save_leaves_the_old_file() {
        let dir = tmp("atomic");
        let p = dir.join("keep.bin");
        write_atomic(&p, b"old").unwrap();
        // The target is a folder in the way: rename fails, the old file survives.
        let blocked = dir.join("blocked");
        std::fs::create_dir_all(blocked.join("x")).unwrap();
        assert!(write_atomic(&blocked, b"new").is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert!(std::fs::read_dir(&dir).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().contains(".tmp-")));
    }
}
