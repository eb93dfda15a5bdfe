//! CSV datasets: a header line, numeric feature columns and one integer label column.

use std::path::Path;

use ndarray::Array2;

use super::{DataError, Dataset};

/// Reads a CSV file whose header names the columns; `label_column` holds class indices
/// (0, 1, …) and every other column is a numeric feature. Ragged rows, non-numbers and
/// bad labels are errors naming the line.
pub fn read_csv(path: &Path, label_column: &str) -> Result<Dataset, DataError> {
    parse_csv(&read_text(path)?, label_column, path)
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
        2,
    ))
}

/// Reads a CSV file for regression: the `target_columns` are the values to predict, every
/// other column is a numeric feature.
pub fn read_csv_regression(path: &Path, target_columns: &[&str]) -> Result<Dataset, DataError> {
    let (features, targets, rows) = parse(&read_text(path)?, path, target_columns, false)?;
    let width = features.len() / rows.max(1);
    Ok(Dataset::regression(
        Array2::from_shape_vec((rows, width), features).expect("rows checked"),
        Array2::from_shape_vec((rows, target_columns.len()), targets).expect("rows checked"),
    ))
}

fn read_text(path: &Path) -> Result<String, DataError> {
    std::fs::read_to_string(path).map_err(|source| DataError::Io { path: path.into(), source })
}

/// (features row-major, targets row-major, rows).
fn parse(
    text: &str,
    path: &Path,
    target_columns: &[&str],
    class_labels: bool,
) -> Result<(Vec<f32>, Vec<f32>, usize), DataError> {
    let err = |line: usize, message: String| DataError::Csv { path: path.into(), line, message };
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let Some((_, header)) = lines.next() else {
        return Err(DataError::format(path, "the file is empty (a header line is needed)"));
    };
    let names: Vec<&str> = header.split(',').map(str::trim).collect();
    let mut target_at = Vec::new();
    for column in target_columns {
        let Some(i) = names.iter().position(|n| n == column) else {
            return Err(DataError::format(path, format!("no column named '{column}' (columns: {})", names.join(", "))));
        };
        target_at.push(i);
    }
    let (mut features, mut targets, mut rows) = (Vec::new(), Vec::new(), 0);
    for (i, line) in lines {
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        if cells.len() != names.len() {
            return Err(err(i + 1, format!("{} fields, but the header has {}", cells.len(), names.len())));
        }
        for (j, cell) in cells.iter().enumerate() {
            if target_at.contains(&j) && class_labels {
                let label: usize = cell
                    .parse()
                    .ok()
                    .filter(|&l: &usize| l < 1 << 24)
                    .ok_or_else(|| err(i + 1, format!("label '{cell}' is not a class index (0, 1, 2, …)")))?;
                targets.push(label as f32);
                continue;
            }
            let v: f32 = cell
                .parse()
                .ok()
                .filter(|v: &f32| v.is_finite())
                .ok_or_else(|| err(i + 1, format!("'{cell}' in column '{}' is not a finite number", names[j])))?;
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
    }
}
