//! CSV datasets: numeric feature columns and one integer label column (or, for regression,
//! numeric target columns).
//!
//! Fields are read by the `csv` crate, so quoted fields (`"b,x"`, `"class"`) and quotes
//! inside them follow RFC 4180; a UTF-8 byte-order mark before the header is dropped; cells
//! are trimmed. The label column is named by its header name or by its 0-based index. A file
//! whose first line is all numbers has no header: its columns can only be named by index,
//! and its first line is data.

use std::path::Path;

use ndarray::Array2;

use super::{DataError, Dataset};

/// Reads a CSV file whose header names the columns; `label_column` (a header name, or a
/// 0-based column index) holds class indices (0, 1, …) and every other column is a numeric
/// feature. Ragged rows, non-numbers and bad labels are errors naming the line.
pub fn read_csv(path: &Path, label_column: &str) -> Result<Dataset, DataError> {
    parse_csv(&read_text(path)?, label_column, path)
}

/// Like [`read_csv`], also returning a fingerprint of the file's bytes (16 hex digits,
/// the same on every machine), so that a caller can tell later whether the file changed.
///
/// # Errors
/// As [`read_csv`].
pub fn read_csv_fingerprinted(path: &Path, label_column: &str) -> Result<(Dataset, String), DataError> {
    let text = read_text(path)?;
    let print = fingerprint(text.as_bytes());
    Ok((parse_csv(&text, label_column, path)?, print))
}

/// A fingerprint of `bytes`: 16 hex digits of a 64-bit FxHash, stable across builds.
pub fn fingerprint(bytes: &[u8]) -> String {
    use std::hash::Hasher;
    let mut h = rustc_hash::FxHasher::default();
    h.write(bytes);
    h.write_u64(bytes.len() as u64);
    format!("{:016x}", h.finish())
}

/// Parses CSV text as [`read_csv`] reads a file; `origin` names it in errors.
///
/// # Errors
/// As [`read_csv`], but for reading.
pub fn parse_csv(text: &str, label_column: &str, origin: &Path) -> Result<Dataset, DataError> {
    let (features, targets, rows) = parse(text, origin, &[label_column], true)?;
    let labels = targets.into_iter().map(|v| v as usize).collect();
    Ok(Dataset::new(
        Array2::from_shape_vec((rows, features.len() / rows.max(1)), features).expect("rows checked"),
        labels,
        1,
    ))
}

/// Reads a CSV file for regression: the `target_columns` (names or 0-based indices) are the
/// values to predict, every other column is a numeric feature.
pub fn read_csv_regression(path: &Path, target_columns: &[&str]) -> Result<Dataset, DataError> {
    let (features, targets, rows) = parse(&read_text(path)?, path, target_columns, false)?;
    let width = features.len() / rows.max(1);
    Ok(Dataset::regression(
        Array2::from_shape_vec((rows, width), features).expect("rows checked"),
        Array2::from_shape_vec((rows, target_columns.len()), targets).expect("rows checked"),
    ))
}

/// The number of columns of a CSV file, read from its first line alone (at most its first
/// MiB): how wide a network for it must be before the whole file is read.
///
/// # Errors
/// If the file cannot be read or its first line is not a CSV record.
pub fn csv_columns(path: &Path) -> Result<usize, DataError> {
    first_record(path)?
        .map(|r| r.len())
        .ok_or_else(|| DataError::format(path, "the file is empty (a header line is needed)"))
}

/// The first record of a CSV file (a UTF-8 BOM dropped), read from at most its first MiB;
/// `None` for an empty file.
fn first_record(path: &Path) -> Result<Option<::csv::StringRecord>, DataError> {
    use std::io::Read;
    let file = super::open_regular(path)?;
    let mut head = Vec::new();
    file.take(1 << 20).read_to_end(&mut head).map_err(|source| DataError::Io { path: path.into(), source })?;
    let head = head.strip_prefix("\u{feff}".as_bytes()).unwrap_or(&head);
    let mut reader = ::csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(head);
    reader.records().next().transpose().map_err(|e| csv_error(path, e))
}

/// The largest CSV file read: parsing takes about 7 times a file's size in memory, so a
/// larger file (or an endless one such as `/dev/zero`) is refused before it is read whole.
pub const MAX_CSV_BYTES: u64 = 1 << 30;

/// The column names of a CSV file, if its first line is a header (a field that is not a
/// number), read from that line alone (at most its first MiB); `None` for a headerless file.
///
/// # Errors
/// If the file cannot be read or its first line is not a CSV record.
pub fn csv_header(path: &Path) -> Result<Option<Vec<String>>, DataError> {
    Ok(first_record(path)?.and_then(|r| {
        let names: Vec<String> = r.iter().map(|f| f.trim().to_string()).collect();
        names.iter().any(|f| f.parse::<f64>().is_err()).then_some(names)
    }))
}

fn read_text(path: &Path) -> Result<String, DataError> {
    read_text_limited(path, MAX_CSV_BYTES, "a CSV file")
}

/// A UTF-8 file of at most `max` bytes (`what` names the kind of file in the error).
pub(crate) fn read_text_limited(path: &Path, max: u64, what: &str) -> Result<String, DataError> {
    use std::io::Read;
    let io = |source| DataError::Io { path: path.into(), source };
    let too_large = || {
        DataError::format(
            path,
            format!("is larger than {} MiB, the most {what} may hold (split it, or sample it)", max >> 20),
        )
    };
    let file = super::open_regular(path)?;
    let meta = file.metadata().map_err(io)?;
    if meta.len() > max {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    // Devices and pipes claim no size: read one byte past the limit to tell.
    file.take(max + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > max {
        return Err(too_large());
    }
    String::from_utf8(bytes).map_err(|e| {
        DataError::format(path, format!("is not UTF-8 text (invalid byte at offset {})", e.utf8_error().valid_up_to()))
    })
}

/// (features row-major, targets row-major, rows).
fn parse(
    text: &str,
    path: &Path,
    target_columns: &[&str],
    class_labels: bool,
) -> Result<(Vec<f32>, Vec<f32>, usize), DataError> {
    let err = |line: u64, message: String| DataError::Csv { path: path.into(), line: line as usize, message };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut reader = ::csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(::csv::Trim::All)
        .from_reader(text.as_bytes());
    let mut records = reader.records().filter(|r| !matches!(r, Ok(r) if r.iter().all(str::is_empty)));
    let first = match records.next() {
        None => return Err(DataError::format(path, "the file is empty (a header line is needed)")),
        Some(Err(e)) => return Err(csv_error(path, e)),
        Some(Ok(r)) => r,
    };
    let first_line = first.position().map_or(1, |p| p.line());
    let names: Vec<String> = first.iter().map(str::to_string).collect();
    // A first line of numbers is data, not a header.
    let headerless = names.iter().all(|n| n.parse::<f64>().is_ok());
    let mut target_at = Vec::new();
    for column in target_columns {
        let by_name = if headerless { None } else { names.iter().position(|n| n == column) };
        let by_index = column.parse::<usize>().ok();
        let at = match (by_name, by_index) {
            (Some(i), _) => i,
            (None, Some(i)) if i < names.len() => i,
            (None, Some(i)) => {
                return Err(DataError::format(
                    path,
                    format!("column index {i} is past the last column ({} columns, numbered from 0)", names.len()),
                ))
            }
            (None, None) if headerless => {
                return Err(DataError::format(
                    path,
                    format!(
                        "has no header line (its first line is all numbers), so no column is named '{column}': \
                         give the label column's 0-based index (0 to {}), or add a header line naming the columns",
                        names.len() - 1
                    ),
                ))
            }
            (None, None) => {
                return Err(DataError::format(
                    path,
                    format!("no column named '{column}' (columns: {}); a 0-based index works too", names.join(", ")),
                ))
            }
        };
        target_at.push(at);
    }
    if names.len() <= target_at.len() {
        return Err(DataError::format(path, "has no feature columns besides the label"));
    }
    let column_name = |j: usize| if headerless { format!("{j}") } else { names[j].clone() };
    let (mut features, mut targets, mut rows) = (Vec::new(), Vec::new(), 0);
    let data = headerless.then(|| Ok(first.clone())).into_iter().chain(records);
    for record in data {
        let record = record.map_err(|e| csv_error(path, e))?;
        let line = record.position().map_or(first_line, |p| p.line());
        if record.len() != names.len() {
            return Err(err(line, format!("{} fields, but the first line has {}", record.len(), names.len())));
        }
        for (j, cell) in record.iter().enumerate() {
            if target_at.contains(&j) && class_labels {
                let label: usize = cell.parse().ok().filter(|&l: &usize| l < 1 << 24).ok_or_else(|| {
                    let hint = if cell.parse::<f64>().is_ok() {
                        "; adjoint train classifies: labels must be class indices. For a numeric target, \
                         fit a regression with the library (data::read_csv_regression)"
                    } else {
                        ""
                    };
                    err(
                        line,
                        format!(
                            "label '{cell}' in column '{}' is not a class index (0, 1, 2, …){hint}",
                            column_name(j)
                        ),
                    )
                })?;
                targets.push(label as f32);
                continue;
            }
            let v: f32 =
                cell.parse().ok().filter(|v: &f32| v.is_finite()).ok_or_else(|| {
                    err(line, format!("'{cell}' in column '{}' is not a finite number", column_name(j)))
                })?;
            if target_at.contains(&j) {
                targets.push(v);
            } else {
                features.push(v);
            }
        }
        rows += 1;
    }
    if rows == 0 {
        return Err(DataError::format(path, "no data rows after the header"));
    }
    Ok((features, targets, rows))
}

fn csv_error(path: &Path, e: ::csv::Error) -> DataError {
    let line = e.position().map_or(0, |p| p.line() as usize);
    DataError::Csv { path: path.into(), line, message: e.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("adjoint-csv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn reads_features_and_labels() {
        let d = read_csv(&write("ok.csv", "a,label,b\n1,0,2\n3,1,4.5\n"), "label").unwrap();
        assert_eq!(d.features().as_slice().unwrap(), &[1.0, 2.0, 3.0, 4.5]);
        assert_eq!(d.labels(), &[0, 1]);
        let r = read_csv_regression(&write("reg.csv", "a,y,b\n1,0.5,2\n3,-1,4.5\n"), &["y"]).unwrap();
        assert_eq!(r.features().as_slice().unwrap(), &[1.0, 2.0, 3.0, 4.5]);
        assert_eq!(r.outputs(), 1);
    }

    #[test]
    fn quoted_fields_a_byte_order_mark_and_column_indices() {
        let text = "\u{feff}\"a\",\"b,x\",\"class\"\n\"1\",2,0\n3,\"4.5\",1\n";
        let d = read_csv(&write("quoted.csv", text), "class").unwrap();
        assert_eq!(d.features().as_slice().unwrap(), &[1.0, 2.0, 3.0, 4.5]);
        assert_eq!(d.labels(), &[0, 1]);
        // The BOM is not part of the first column's name.
        let d = read_csv(&write("bom.csv", "\u{feff}label,a\n1,2\n0,3\n"), "label").unwrap();
        assert_eq!(d.labels(), &[1, 0]);
        // By index.
        let d = read_csv(&write("index.csv", "a,b,c\n1,2,0\n3,4,1\n"), "2").unwrap();
        assert_eq!(d.labels(), &[0, 1]);
    }

    #[test]
    fn a_headerless_file_is_read_by_index_and_refused_by_name() {
        let p = write("headerless.csv", "1,2,0\n3,4,1\n5,6,1\n");
        let d = read_csv(&p, "2").unwrap();
        assert_eq!(d.len(), 3, "the first line is data");
        assert_eq!(d.labels(), &[0, 1, 1]);
        let e = read_csv(&p, "label").unwrap_err().to_string();
        assert!(e.contains("no header line") && e.contains("index"), "{e}");
    }

    #[test]
    fn one_class_is_one_class_and_regression_labels_get_a_hint() {
        let d = read_csv(&write("one.csv", "a,label\n1,0\n2,0\n"), "label").unwrap();
        assert_eq!(d.classes(), 1);
        let e = read_csv(&write("reg-as-class.csv", "a,y\n1,-0.516\n"), "y").unwrap_err().to_string();
        assert!(e.contains("classifies") && e.contains("regression"), "{e}");
    }

    #[test]
    fn bad_rows_are_errors_with_line_numbers() {
        let e = read_csv(&write("ragged.csv", "a,label\n1,0\n2\n"), "label").unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("1 fields"), "{e}");
        let e = read_csv(&write("nan.csv", "a,label\nx,0\n"), "label").unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("'x'"), "{e}");
        let e = read_csv(&write("lab.csv", "a,label\n1,cat\n"), "label").unwrap_err().to_string();
        assert!(e.contains("'cat'"), "{e}");
        let e = read_csv(&write("nolabel.csv", "a,b\n1,0\n"), "label").unwrap_err().to_string();
        assert!(e.contains("no column named 'label'"), "{e}");
        assert!(read_csv(&write("empty.csv", ""), "label").is_err());
        let e = read_csv(&write("quote.csv", "a,label\n\"1,0\n"), "label").unwrap_err().to_string();
        assert!(e.contains("line"), "{e}");
        let e = read_csv(&write("only-label.csv", "label\n0\n"), "label").unwrap_err().to_string();
        assert!(e.contains("no feature columns"), "{e}");
    }
}
