//! CSV datasets: a header line, numeric feature columns and one integer label column.

use std::path::Path;

use ndarray::Array2;

use super::{DataError, Dataset};

/// Reads a CSV file whose header names the columns; `label_column` holds class indices
/// (0, 1, …) and every other column is a numeric feature. Ragged rows, non-numbers and
/// bad labels are errors naming the line.
pub fn read_csv(path: &Path, label_column: &str) -> Result<Dataset, DataError> {
    let text = std::fs::read_to_string(path).map_err(|source| DataError::Io { path: path.into(), source })?;
    let err = |line: usize, message: String| DataError::Csv { path: path.into(), line, message };
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let Some((_, header)) = lines.next() else {
        return Err(DataError::format(path, "the file is empty (a header line is needed)"));
    };
    let names: Vec<&str> = header.split(',').map(str::trim).collect();
    let Some(label_at) = names.iter().position(|n| *n == label_column) else {
        return Err(DataError::format(
            path,
            format!("no column named '{label_column}' (columns: {})", names.join(", ")),
        ));
    };
    let width = names.len() - 1;
    let (mut features, mut labels) = (Vec::new(), Vec::new());
    for (i, line) in lines {
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        if cells.len() != names.len() {
            return Err(err(i + 1, format!("{} fields, but the header has {}", cells.len(), names.len())));
        }
        for (j, cell) in cells.iter().enumerate() {
            if j == label_at {
                let label: usize = cell
                    .parse()
                    .map_err(|_| err(i + 1, format!("label '{cell}' is not a class index (0, 1, 2, …)")))?;
                labels.push(label);
            } else {
                let v: f32 =
                    cell.parse().ok().filter(|v: &f32| v.is_finite()).ok_or_else(|| {
                        err(i + 1, format!("'{cell}' in column '{}' is not a finite number", names[j]))
                    })?;
                features.push(v);
            }
        }
    }
    if labels.is_empty() {
        return Err(DataError::format(path, "no data rows after the header"));
    }
    let features = Array2::from_shape_vec((labels.len(), width), features).expect("rows checked");
    Ok(Dataset::new(features, labels, 2))
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
        assert_eq!(d.features.as_slice().unwrap(), &[1.0, 2.0, 3.0, 4.5]);
        assert_eq!(d.labels, vec![0, 1]);
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
