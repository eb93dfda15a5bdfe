//! `adjoint eval` and `adjoint predict`: use a trained model.

use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::json;

use adjoint::data::Dataset;
use adjoint::nn::ConfusionMatrix;
use adjoint::train::evaluate;

use crate::config::{load_data, DataSource};
use crate::train::data_source;
use crate::{run, CliError};

/// Arguments of `adjoint eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// The run folder holding model.safetensors.
    #[arg(long)]
    model: PathBuf,
    /// Data to evaluate on: an MNIST folder (its test set) or a CSV file (every row) [default:
    /// the test set the model was trained with].
    #[arg(long)]
    data: Option<PathBuf>,
    /// The CSV column holding class indices.
    #[arg(long)]
    label_column: Option<String>,
    /// Print {"accuracy": A, "confusion": [[...]]}.
    #[arg(long)]
    json: bool,
}

pub(crate) fn eval(args: EvalArgs) -> Result<(), CliError> {
    let (network, config) = run::load_model(&args.model)?;
    let test: Dataset = match &args.data {
        None => load_data(&config)?.1,
        Some(path) => match data_source(path, args.label_column.as_deref())? {
            DataSource::Csv { path, label_column, .. } => {
                let mut d = adjoint::data::read_csv(&path, &label_column)?;
                if let Some(n) = &network.input_norm {
                    if n.mean.len() == d.width() {
                        n.apply(&mut d);
                    }
                }
                d
            }
            DataSource::MnistDir { dir } => adjoint::data::mnist::load_test_dir(&dir, None)?,
            DataSource::BundledMnist => unreachable!("a path is never the bundled set"),
        },
    };
    let (inputs, outputs) = (network.architecture.inputs(), network.architecture.outputs());
    if test.width() != inputs || test.classes() > outputs {
        return Err(CliError::Usage(format!(
            "the data ({} features, {} classes) does not fit the model ({inputs} inputs, {outputs} classes)",
            test.width(),
            test.classes()
        )));
    }
    if test.is_empty() {
        return Err(CliError::Usage("the test data has no examples".into()));
    }
    let e = evaluate(&network, &test);
    let (accuracy, confusion) =
        (e.accuracy.unwrap_or(f64::NAN), e.confusion.unwrap_or_else(|| ConfusionMatrix::new(0)));
    if args.json {
        println!(
            "{}",
            super::json_line(&json!({ "accuracy": adjoint::json::number(accuracy), "confusion": confusion.counts }))
        );
    } else {
        println!("test accuracy {:.2}% on {} examples (loss {:.4})", 100.0 * accuracy, test.len(), e.loss);
        print!("{}", confusion.to_table());
    }
    Ok(())
}

/// Arguments of `adjoint predict`.
#[derive(Args, Debug)]
pub struct PredictArgs {
    /// The run folder holding model.safetensors.
    #[arg(long)]
    model: PathBuf,
    /// A greyscale image (PGM or PNG) with as many pixels as the model has inputs (28×28
    /// for MNIST). Dark digits on a light background are inverted to MNIST's convention.
    image: PathBuf,
    /// Print {"class": C, "probabilities": [...]}.
    #[arg(long)]
    json: bool,
}

pub(crate) fn predict(args: PredictArgs) -> Result<(), CliError> {
    let (network, _) = run::load_model(&args.model)?;
    let (w, h, mut pixels) = read_image(&args.image)?;
    if w * h != network.architecture.inputs() {
        return Err(CliError::Usage(format!(
            "{} is {w}×{h} = {} pixels but the model takes {} inputs (28×28 for MNIST)",
            args.image.display(),
            w * h,
            network.architecture.inputs()
        )));
    }
    let mean = pixels.iter().sum::<f32>() / pixels.len().max(1) as f32;
    if mean > 0.5 {
        pixels.iter_mut().for_each(|p| *p = 1.0 - *p);
    }
    let x = adjoint::ndarray::Array2::from_shape_vec((1, pixels.len()), pixels).expect("one row");
    let probs = network.predict(&x).softmax(-1).to_vec();
    let best = probs.iter().enumerate().fold(0, |b, (i, &p)| if p > probs[b] { i } else { b });
    if args.json {
        let probabilities: Vec<_> = probs.iter().map(|&p| adjoint::json::number(p as f64)).collect();
        println!("{}", super::json_line(&json!({ "class": best, "probabilities": probabilities })));
    } else {
        println!("class {best}");
        for (i, p) in probs.iter().enumerate() {
            println!("  {i}: {:6.2}% {}", 100.0 * p, "#".repeat((p * 40.0).round() as usize));
        }
    }
    Ok(())
}

/// The largest image file read.
const MAX_IMAGE_BYTES: u64 = 64 << 20;

/// Reads a PGM (P2 or P5) or PNG image as greyscale values in [0, 1].
pub(crate) fn read_image(path: &Path) -> Result<(usize, usize, Vec<f32>), CliError> {
    let bad = |m: String| CliError::Usage(format!("{}: {m}", path.display()));
    // Read at most one byte more than any image accepted (a device or a huge file is refused
    // without reading it all).
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| std::io::Read::read_to_end(&mut std::io::Read::take(f, MAX_IMAGE_BYTES + 1), &mut bytes))
        .map_err(|e| bad(e.to_string()))?;
    if bytes.len() as u64 > MAX_IMAGE_BYTES {
        return Err(bad(format!("larger than the {} MiB an image may have", MAX_IMAGE_BYTES >> 20)));
    }
    if bytes.starts_with(b"\x89PNG") {
        let mut decoder = png::Decoder::new(std::io::Cursor::new(&bytes));
        // Palette and 1–4-bit images become 8-bit grey or colour.
        decoder.set_transformations(png::Transformations::EXPAND);
        let mut reader = decoder.read_info().map_err(|e| bad(format!("not a readable PNG: {e}")))?;
        let (w, h) = (reader.info().width as usize, reader.info().height as usize);
        if w * h > 1 << 24 {
            return Err(bad(format!("{w}×{h} is too large")));
        }
        let mut buf = vec![0; reader.output_buffer_size().ok_or_else(|| bad("image too large".into()))?];
        let frame = reader.next_frame(&mut buf).map_err(|e| bad(format!("not a readable PNG: {e}")))?;
        let data = &buf[..frame.buffer_size()];
        let channels = frame.color_type.samples();
        let depth = match frame.bit_depth {
            png::BitDepth::Eight => 1,
            png::BitDepth::Sixteen => 2,
            other => return Err(bad(format!("unsupported PNG bit depth {other:?}"))),
        };
        let stride = channels * depth;
        let pixels = data
            .chunks_exact(stride)
            .map(|px| {
                let c = |i: usize| px[i * depth] as f32 / 255.0;
                if channels >= 3 {
                    0.299 * c(0) + 0.587 * c(1) + 0.114 * c(2)
                } else {
                    c(0)
                }
            })
            .collect::<Vec<_>>();
        if pixels.len() != w * h {
            return Err(bad("unsupported PNG pixel layout".into()));
        }
        return Ok((w, h, pixels));
    }
    parse_pgm(&bytes).map_err(bad)
}

/// Parses PGM: `P5` (binary) or `P2` (text), with comments, maxval up to 65535.
fn parse_pgm(bytes: &[u8]) -> Result<(usize, usize, Vec<f32>), String> {
    let mut pos = 0;
    let mut token = || -> Option<String> {
        loop {
            while pos < bytes.len() && bytes[pos].is_ascii_whitespace() {
                pos += 1;
            }
            if pos < bytes.len() && bytes[pos] == b'#' {
                while pos < bytes.len() && bytes[pos] != b'\n' {
                    pos += 1;
                }
                continue;
            }
            break;
        }
        let start = pos;
        while pos < bytes.len() && !bytes[pos].is_ascii_whitespace() {
            pos += 1;
        }
        (pos > start).then(|| String::from_utf8_lossy(&bytes[start..pos]).to_string())
    };
    let magic = token().ok_or("empty file")?;
    if magic != "P5" && magic != "P2" {
        return Err("not a PGM (P2/P5) or PNG image".into());
    }
    let mut num = |what: &str| -> Result<usize, String> {
        token().and_then(|t| t.parse().ok()).ok_or_else(|| format!("bad PGM header: {what} missing"))
    };
    let (w, h, max) = (num("width")?, num("height")?, num("maxval")?);
    if w.saturating_mul(h) > 1 << 24 {
        return Err(format!("bad PGM header: {w}×{h} is too large (at most 2^24 pixels)"));
    }
    if w == 0 || h == 0 || max == 0 || max > 65535 {
        return Err(format!("bad PGM header: {w}×{h}, maxval {max}"));
    }
    let n = w * h;
    let values: Vec<usize> = if magic == "P2" {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(num("pixel")?);
        }
        if token().is_some() {
            return Err(format!("more than the {n} pixels a {w}×{h} PGM has"));
        }
        v
    } else {
        let start = pos + 1; // one whitespace byte after maxval
        let size = if max > 255 { 2 } else { 1 };
        let data = bytes.get(start..start + n * size).ok_or("truncated PGM pixel data")?;
        if bytes.len() > start + n * size {
            return Err(format!("{} bytes after the pixels of a {w}×{h} PGM", bytes.len() - start - n * size));
        }
        data.chunks_exact(size)
            .map(|c| if size == 2 { (c[0] as usize) << 8 | c[1] as usize } else { c[0] as usize })
            .collect()
    };
    if let Some(v) = values.iter().find(|&&v| v > max) {
        return Err(format!("pixel value {v} is above the maxval {max}"));
    }
    Ok((w, h, values.into_iter().map(|v| v as f32 / max as f32).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgm_in_both_encodings() {
        let (w, h, p) = parse_pgm(b"P2\n# comment\n2 1\n255\n0 255\n").unwrap();
        assert_eq!((w, h, p), (2, 1, vec![0.0, 1.0]));
        let (w, h, p) = parse_pgm(b"P5 2 1 255\n\x00\xff").unwrap();
        assert_eq!((w, h, p), (2, 1, vec![0.0, 1.0]));
        assert!(parse_pgm(b"P5 2 2 255\n\x00").is_err());
        assert!(parse_pgm(b"GIF89a").is_err());
        assert!(parse_pgm(b"P2 2 1 10\n0 11\n").unwrap_err().contains("above the maxval"));
        assert!(parse_pgm(b"P2 2 1 10\n0 1 2\n").unwrap_err().contains("more than"));
        assert!(parse_pgm(b"P5 2 1 255\n\x00\xffjunk").unwrap_err().contains("after the pixels"));
    }
}
