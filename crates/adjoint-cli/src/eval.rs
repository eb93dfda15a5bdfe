//! `adjoint eval` and `adjoint predict`: use a trained model.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use adjoint::data::Dataset;
use adjoint::nn::ConfusionMatrix;
use adjoint::train::evaluate_in_chunks;

use crate::config::{load_data, DataSource};
use crate::train::data_source;
use crate::{run, CliError};

/// Arguments of `adjoint eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// The run folder holding model.safetensors.
    #[arg(long)]
    model: PathBuf,
    /// Data to evaluate on: an MNIST folder (its test set), a CSV file (every row), or for a
    /// language model a text file (all of it) [default: the test set the model was trained
    /// with].
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
    let (network, mut config) = run::load_model(&args.model)?;
    let vocabulary = config.data.vocabulary().transpose()?;
    let test: Dataset = match (&args.data, &vocabulary) {
        (None, _) => load_data(&mut config)?.1,
        (Some(path), Some(vocab)) => {
            if args.label_column.is_some() {
                return Err(CliError::Usage("--label-column goes with CSV data, not a language model's text".into()));
            }
            let text = adjoint::data::read_text(path)?;
            let ids = vocab.encode(&text).map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?;
            let d = Dataset::sequences(&ids, network.architecture.inputs(), vocab.len());
            if d.is_empty() {
                return Err(CliError::Usage(format!(
                    "{}: {} characters are fewer than one window of the model's context and the character after it \
                     ({})",
                    path.display(),
                    ids.len(),
                    network.architecture.inputs() + 1
                )));
            }
            d
        }
        (Some(path), None) => match data_source(path, args.label_column.as_deref())? {
            DataSource::Csv { path, label_column, .. } => {
                // Checked against the run's training file where it is still there to read.
                if let DataSource::Csv { path: trained_on, .. } = &config.data {
                    if trained_on.is_file() {
                        crate::config::same_columns(trained_on, &path)?;
                    }
                }
                let mut d = adjoint::data::read_csv(&path, &label_column)?;
                if let Some(n) = &network.input_norm {
                    if n.mean.len() == d.width() {
                        n.apply(&mut d);
                    }
                }
                d
            }
            DataSource::MnistDir { dir } => adjoint::data::mnist::load_test_dir(&dir, None)?,
            DataSource::BundledMnist | DataSource::Text { .. } => {
                unreachable!("a path with a label column or none is a CSV file or an MNIST folder")
            }
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
    // As the training run evaluated: its batch size per chunk, on its number of threads.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(config.threads.clamp(1, crate::config::MAX_THREADS))
        .build()
        .map_err(|e| CliError::Internal(format!("cannot start {} threads: {e}", config.threads)))?;
    let e = pool.install(|| evaluate_in_chunks(&network, &test, config.batch));
    // Non-finite outputs give a NaN loss; classes picked from them would be noise.
    if !e.loss.is_finite() {
        return Err(outputs_not_finite(&args.model));
    }
    let (accuracy, confusion) =
        (e.accuracy.unwrap_or(f64::NAN), e.confusion.unwrap_or_else(|| ConfusionMatrix::new(0)));
    if vocabulary.is_some() {
        let bits = e.loss / std::f64::consts::LN_2;
        let characters = test.len() * network.architecture.inputs();
        if args.json {
            let number = adjoint::json::number;
            println!(
                "{}",
                super::json_line(&json!({
                    "loss": number(e.loss),
                    "bits_per_char": number(bits),
                    "accuracy": number(accuracy),
                    "characters": characters,
                }))
            );
        } else {
            println!(
                "test loss {:.4} nats = {bits:.4} bits per character, next character right {:.2}% of the time \
                 ({characters} characters)",
                e.loss,
                100.0 * accuracy
            );
        }
        return Ok(());
    }
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
    let (network, config) = run::load_model(&args.model)?;
    if config.data.vocabulary().is_some() {
        return Err(CliError::Usage(format!(
            "{} is a language model: continue a text with adjoint sample --model {0}",
            args.model.display()
        )));
    }
    let adjoint::data::image::Image { width: w, height: h, mut pixels } =
        adjoint::data::image::read_image(&args.image)?;
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
    if probs.iter().any(|p| !p.is_finite()) {
        return Err(outputs_not_finite(&args.model));
    }
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

/// The refusal of `eval` and `predict` for a model whose outputs are NaN or infinite.
fn outputs_not_finite(model: &std::path::Path) -> CliError {
    CliError::Usage(format!(
        "{}: the model's outputs are not finite numbers (its weights hold NaN or infinity, e.g. from a \
         diverged run), so it cannot predict",
        model.display()
    ))
}
