//! The IDX format (MNIST's): big-endian; magic `00 00 TYPE NDIM`, NDIM dimensions as u32,
//! then the elements row-major. Only unsigned bytes (TYPE 0x08) are supported. Files may be
//! gzipped (detected by their first two bytes).

use std::io::{Read, Write};
use std::path::Path;

use flate2::read::GzDecoder;

use super::DataError;

/// An IDX array of unsigned bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idx {
    /// The dimensions, outermost first.
    pub dims: Vec<usize>,
    /// The elements, row-major.
    pub data: Vec<u8>,
}

/// Reads an IDX file, gzipped or raw.
pub fn read_idx(path: &Path) -> Result<Idx, DataError> {
    read_idx_limited(path, None)
}

/// Reads at most the first `limit` items (along the outer dimension) of an IDX file: the
/// rest is neither decompressed nor stored, so a limit bounds the memory whatever the file
/// claims.
pub fn read_idx_limited(path: &Path, limit: Option<usize>) -> Result<Idx, DataError> {
    let file = super::open_regular(path)?;
    let mut r = std::io::BufReader::new(file);
    let mut head = [0u8; 2];
    let n = r.read(&mut head).map_err(|source| DataError::Io { path: path.into(), source })?;
    let rest = std::io::Read::chain(&head[..n], r);
    if head[..n] == [0x1f, 0x8b] {
        parse_stream(GzDecoder::new(rest), path, true, limit)
    } else {
        parse_stream(rest, path, false, limit)
    }
}

/// Parses IDX bytes (gzipped or raw); `path` names the source in errors.
pub fn parse_idx(bytes: &[u8], path: &Path) -> Result<Idx, DataError> {
    parse_idx_limited(bytes, path, None)
}

/// Parses at most the first `limit` items of IDX bytes (see [`read_idx_limited`]).
pub fn parse_idx_limited(bytes: &[u8], path: &Path, limit: Option<usize>) -> Result<Idx, DataError> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        parse_stream(GzDecoder::new(bytes), path, true, limit)
    } else {
        parse_stream(bytes, path, false, limit)
    }
}

fn parse_stream(mut r: impl Read, path: &Path, gzipped: bool, limit: Option<usize>) -> Result<Idx, DataError> {
    let corrupt = |e: std::io::Error| {
        let what = if gzipped { "corrupt gzip stream" } else { "read error" };
        DataError::format(path, format!("{what}: {e}"))
    };
    let mut magic = [0u8; 4];
    read_exact_or(&mut r, &mut magic, path, "the 4-byte magic number").map_err(|e| e.or_corrupt(corrupt))?;
    if magic[0] != 0 || magic[1] != 0 {
        return Err(DataError::format(
            path,
            format!("not an IDX file (magic {:02x}{:02x}{:02x}{:02x})", magic[0], magic[1], magic[2], magic[3]),
        ));
    }
    if magic[2] != 0x08 {
        return Err(DataError::format(
            path,
            format!("unsupported IDX element type 0x{:02x} (only unsigned bytes, 0x08)", magic[2]),
        ));
    }
    let ndim = magic[3] as usize;
    if !(1..=4).contains(&ndim) {
        return Err(DataError::format(path, format!("IDX file claims {ndim} dimensions (1 to 4 supported)")));
    }
    let mut dims = Vec::with_capacity(ndim);
    for i in 0..ndim {
        let mut d = [0u8; 4];
        read_exact_or(&mut r, &mut d, path, &format!("dimension {}", i + 1)).map_err(|e| e.or_corrupt(corrupt))?;
        dims.push(u32::from_be_bytes(d) as usize);
    }
    // Only the first `limit` items are read; the claimed total still has to be sane.
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| DataError::format(path, format!("dimensions {dims:?} overflow")))?;
    let limited = limit.is_some_and(|l| l < dims[0]);
    if let Some(l) = limit.filter(|_| limited) {
        dims[0] = l;
    }
    let expected: usize = dims.iter().product();
    // Read at most one byte more than claimed: the claim sizes nothing until the bytes arrive.
    let mut data = Vec::new();
    let wanted = expected as u64 + u64::from(!limited);
    r.by_ref().take(wanted).read_to_end(&mut data).map_err(corrupt)?;
    if data.len() < expected {
        return Err(DataError::format(
            path,
            format!("truncated: dimensions {dims:?} need {expected} bytes of data, found {}", data.len()),
        ));
    }
    if data.len() > expected && !limited {
        return Err(DataError::format(
            path,
            format!("{} bytes of data expected for dimensions {dims:?}, but there is more", expected),
        ));
    }
    Ok(Idx { dims, data })
}

/// An error while reading a fixed-size header part: truncation, or an I/O error to classify.
enum HeaderError {
    Truncated(DataError),
    Io(std::io::Error),
}

impl HeaderError {
    fn or_corrupt(self, corrupt: impl Fn(std::io::Error) -> DataError) -> DataError {
        match self {
            HeaderError::Truncated(e) => e,
            HeaderError::Io(e) => corrupt(e),
        }
    }
}

fn read_exact_or(r: &mut impl Read, buf: &mut [u8], path: &Path, what: &str) -> Result<(), HeaderError> {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            HeaderError::Truncated(DataError::format(path, format!("truncated: the file ends inside {what}")))
        } else {
            HeaderError::Io(e)
        }
    })
}

/// Writes an IDX file of unsigned bytes, gzipped if `gzip`.
///
/// # Panics
/// If `data.len()` is not the product of `dims` or there are not 1 to 4 dimensions.
pub fn write_idx(path: &Path, dims: &[usize], data: &[u8], gzip: bool) -> std::io::Result<()> {
    assert!((1..=4).contains(&dims.len()), "write_idx: {} dimensions (1 to 4 supported)", dims.len());
    assert_eq!(dims.iter().product::<usize>(), data.len(), "write_idx: data does not fill dimensions {dims:?}");
    let mut bytes = vec![0, 0, 0x08, dims.len() as u8];
    for &d in dims {
        let d = u32::try_from(d).map_err(|_| std::io::Error::other("dimension exceeds u32"))?;
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.extend_from_slice(data);
    let mut file = std::fs::File::create(path)?;
    if gzip {
        let mut enc = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
        enc.write_all(&bytes)?;
        enc.finish()?.sync_all()
    } else {
        file.write_all(&bytes)?;
        file.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("adjoint-idx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[test]
    fn round_trip_raw_and_gzipped() {
        let data: Vec<u8> = (0..24).collect();
        for gzip in [false, true] {
            let p = tmp(&format!("rt-{gzip}.idx"));
            write_idx(&p, &[2, 3, 4], &data, gzip).unwrap();
            assert_eq!(read_idx(&p).unwrap(), Idx { dims: vec![2, 3, 4], data: data.clone() });
        }
    }

    #[test]
    fn a_gzip_bomb_is_decompressed_only_as_far_as_its_header_claims() {
        use std::io::Write;
        // 2 images of 2×2, then 64 MiB of zeros that compress to about 64 KiB.
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(&[0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2]).unwrap();
        encoder.write_all(&[7; 8]).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..64 {
            encoder.write_all(&zeros).unwrap();
        }
        let bomb = encoder.finish().unwrap();
        assert!(bomb.len() < 1 << 20);
        let e = parse_idx(&bomb, Path::new("bomb.gz")).unwrap_err().to_string();
        assert!(e.contains("bomb.gz") && e.contains("more"), "{e}");
        let one = parse_idx_limited(&bomb, Path::new("bomb.gz"), Some(1)).unwrap();
        assert_eq!(one, Idx { dims: vec![1, 2, 2], data: vec![7; 4] });
    }

    #[test]
    fn corrupt_files_are_errors_naming_the_file() {
        let p = tmp("bad.idx");
        let check = |bytes: &[u8], needle: &str| {
            std::fs::write(&p, bytes).unwrap();
            let e = read_idx(&p).unwrap_err().to_string();
            assert!(e.contains("bad.idx") && e.contains(needle), "{e}");
        };
        check(&[0, 0, 8], "truncated");
        check(&[1, 2, 3, 4], "not an IDX file");
        check(&[0, 0, 0x0d, 1, 0, 0, 0, 1], "unsupported IDX element type");
        check(&[0, 0, 8, 9], "9 dimensions");
        check(&[0, 0, 8, 1, 0, 0, 0, 5, 1, 2], "truncated");
        check(&[0, 0, 8, 1, 0, 0, 0, 1, 1, 2], "more");
        // A header that claims 4 GiB of data is answered from what is there, not allocated.
        check(&[0, 0, 8, 2, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 2, 7], "truncated");
        // A gzip header followed by garbage.
        check(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 0xde, 0xad, 0xbe, 0xef], "corrupt gzip");
        assert!(matches!(read_idx(Path::new("/nonexistent/x.idx")), Err(DataError::Io { .. })));
    }
}
