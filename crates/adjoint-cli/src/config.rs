//! A training run's configuration (`config.json` in the run folder): the network, optimiser,
//! schedule, data and settings the flags describe, and how to turn it into the library's
//! pieces. The JSON format is that of earlier versions, with new fields defaulted.

use std::path::PathBuf;

use adjoint::data::{self, Dataset, InputNorm};
use adjoint::nn::{Activation, Architecture, Init};
use adjoint::optim::{LrSchedule, Optimizer, OptimizerKind, Scheduler};
use adjoint::train::TrainSettings;
use serde::{Deserialize, Serialize};

use crate::CliError;

/// Where the data comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DataSource {
    /// The MNIST copy embedded in the binary.
    BundledMnist,
    /// A folder of IDX files named as MNIST's.
    MnistDir {
        /// The folder.
        dir: PathBuf,
    },
    /// A CSV file (features and a label column). Unless a test file is given, a seeded,
    /// stratified `test_fraction` of the rows is held out for testing. Features are
    /// standardised with the training rows' statistics.
    Csv {
        /// The file (absolute since version 0.3, so that a run folder names it from
        /// anywhere).
        path: PathBuf,
        /// The label column's name (or 0-based index).
        label_column: String,
        /// A CSV file with the same columns to test on (instead of holding rows out).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        test_path: Option<PathBuf>,
        /// The fraction of rows held out for testing when no test file is given.
        #[serde(default = "default_test_fraction")]
        test_fraction: f64,
        /// The fingerprint of the file's bytes when the run started (see
        /// [`data::fingerprint`]): a resume or a default `eval` refuses a file that changed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fingerprint: Option<String>,
        /// The same for the test file.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        test_fingerprint: Option<String>,
    },
    /// A UTF-8 text file for a character language model: windows of `context` characters,
    /// each position's target the next character; the last `test_fraction` of the text is
    /// held out.
    Text {
        /// The file (absolute).
        path: PathBuf,
        /// Characters per window.
        context: usize,
        /// The fraction of the text (its end) held out for testing.
        test_fraction: f64,
        /// The characters of the text, in id order (see [`adjoint::data::Vocabulary`]).
        vocabulary: String,
        /// The fingerprint of the file's bytes when the run started.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fingerprint: Option<String>,
    },
}

/// The default context of `--text` runs.
pub const DEFAULT_CONTEXT: usize = 128;
/// The longest context a run may ask for.
pub const MAX_CONTEXT: usize = 1 << 16;
/// The default held-out fraction of a text.
pub const DEFAULT_TEXT_TEST_FRACTION: f64 = 0.1;
/// The network of a `--text` run without `--arch`: a small causal transformer.
pub const DEFAULT_LANGUAGE_MODEL: &str = "embed:128,pos,transformer:4,transformer:4,layernorm,fc";

/// A text file's vocabulary and fingerprint, read for a new run.
pub fn text_source(path: &std::path::Path, context: usize, test_fraction: f64) -> Result<DataSource, CliError> {
    let text = data::read_text(path)?;
    let vocabulary = data::Vocabulary::of(&text).to_string();
    Ok(DataSource::Text {
        path: path.into(),
        context,
        test_fraction,
        vocabulary,
        fingerprint: Some(data::fingerprint(text.as_bytes())),
    })
}

impl DataSource {
    /// The vocabulary of a text run.
    pub fn vocabulary(&self) -> Option<Result<data::Vocabulary, CliError>> {
        match self {
            DataSource::Text { vocabulary, .. } => Some(data::Vocabulary::parse(vocabulary).map_err(|e| {
                CliError::Usage(format!("the run's vocabulary is damaged ({e}); it was not written by adjoint train"))
            })),
            _ => None,
        }
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn default_test_fraction() -> f64 {
    0.2
}

/// Everything that determines a training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Layer widths, input first, e.g. [784, 100, 10].
    pub layers: Vec<usize>,
    /// The hidden layers' activation.
    pub activation: Activation,
    /// The weight initialiser.
    pub init: Init,
    /// The optimiser.
    pub optimizer: OptimizerKind,
    /// The base learning rate.
    pub lr: f64,
    /// The learning-rate schedule.
    pub schedule: LrSchedule,
    /// Steps of linear warm-up before the schedule (0: none; absent before version 0.3).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub warmup: usize,
    /// Whether the schedule moves at every step rather than at epoch boundaries.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub schedule_per_step: bool,
    /// The mini-batch size.
    pub batch: usize,
    /// The total number of epochs.
    pub epochs: usize,
    /// The seed of weights and shuffling.
    pub seed: u64,
    /// Worker threads for the matrix products and elementwise kernels.
    pub threads: usize,
    /// Clip gradients to this global norm.
    pub clip: Option<f64>,
    /// The data.
    pub data: DataSource,
    /// Train on the first N training examples only.
    pub limit: Option<usize>,
    /// Evaluate on the first N test examples only.
    pub test_limit: Option<usize>,
    /// Record per-layer gradient norms and dead-unit fractions every epoch.
    #[serde(default)]
    pub watch: bool,
    /// Train on past a non-finite loss or gradient instead of stopping.
    #[serde(default)]
    pub keep_going: bool,
    /// The network, when given as an architecture (`--arch`) rather than MLP widths; then
    /// `layers`, `activation` and `init` are not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Architecture>,
}

impl Default for TrainConfig {
    /// The lectures' network (784-100-10, tanh, softmax cross-entropy) with settings that
    /// reach ≥ 97.5% test accuracy on MNIST (see BENCHMARKS.md).
    fn default() -> Self {
        TrainConfig {
            layers: vec![784, 100, 10],
            activation: Activation::TANH,
            init: Init::XavierUniform,
            optimizer: OptimizerKind::Sgd { momentum: 0.9, nesterov: false, weight_decay: 0.0 },
            lr: 0.05,
            schedule: LrSchedule::Exponential { gamma: 0.85 },
            warmup: 0,
            schedule_per_step: false,
            batch: 32,
            epochs: 15,
            seed: 1,
            threads: 2,
            clip: None,
            data: DataSource::BundledMnist,
            limit: None,
            test_limit: None,
            watch: false,
            keep_going: false,
            network: None,
        }
    }
}

impl TrainConfig {
    /// The defaults of a `--text` run (before its data and network are set): AdamW at 0.001
    /// with weight decay 0.01 on weight matrices, a constant rate, 10 epochs.
    pub fn language_model() -> Self {
        TrainConfig {
            optimizer: OptimizerKind::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01, decoupled: true },
            lr: 0.001,
            schedule: LrSchedule::Constant,
            epochs: 10,
            ..TrainConfig::default()
        }
    }
}

/// The most threads a run may ask for.
pub const MAX_THREADS: usize = 256;

/// The most parameters a network may have (4 GiB of `f32` weights, before gradients and
/// optimiser state): larger claims are refused before anything is allocated.
pub const MAX_PARAMETERS: usize = 1 << 30;

impl TrainConfig {
    /// The network the configuration describes.
    pub fn architecture(&self) -> Architecture {
        match &self.network {
            Some(arch) => arch.clone(),
            None => Architecture::mlp(&self.layers, self.activation, Some(self.init)),
        }
    }

    /// The network as the flags gave it, for messages: `--arch SPEC` or `--layers W,W,…`.
    pub fn network_flag(&self) -> String {
        match &self.network {
            Some(arch) => format!("--arch {}", arch.spec()),
            None => format!("--layers {}", join(&self.layers)),
        }
    }

    /// The library's training settings.
    pub fn settings(&self) -> TrainSettings {
        TrainSettings {
            batch: self.batch,
            epochs: self.epochs,
            seed: self.seed,
            threads: self.threads,
            clip: self.clip,
            watch: self.watch,
            keep_going: self.keep_going,
        }
    }

    /// The optimiser, fresh.
    pub fn optimizer(&self) -> Optimizer<f32> {
        Optimizer::new(self.optimizer, self.lr)
    }

    /// The schedule, fresh.
    pub fn scheduler(&self) -> Scheduler {
        Scheduler::new(self.schedule, self.lr).warmup(self.warmup).per_step(self.schedule_per_step)
    }

    /// Checks the configuration before any work, with messages that name the flags.
    pub fn validate(&self) -> Result<(), CliError> {
        let bad = |m: String| Err(CliError::Usage(m));
        if self.network.is_none() && (self.layers.len() < 2 || self.layers.contains(&0)) {
            return bad(format!("--layers needs at least two positive widths, got {}", join(&self.layers)));
        }
        if self.batch == 0 {
            return bad("--batch must be at least 1".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("--lr must be a positive number, got {}", self.lr));
        }
        if self.threads == 0 || self.threads > MAX_THREADS {
            return bad(format!("--threads must be between 1 and {MAX_THREADS}, got {}", self.threads));
        }
        if self.clip.is_some_and(|c| !(c.is_finite() && c > 0.0)) {
            return bad("--clip must be a positive number".into());
        }
        if matches!(self.activation, Activation::Softmax) {
            return bad("softmax is applied by the loss; pick another hidden activation".into());
        }
        if let DataSource::Csv { test_fraction, test_path, .. } = &self.data {
            if test_path.is_none() && !(*test_fraction > 0.0 && *test_fraction < 1.0) {
                return bad(format!("--test-fraction must be between 0 and 1, got {test_fraction}"));
            }
        }
        if let DataSource::Text { test_fraction, context, .. } = &self.data {
            if !(*test_fraction > 0.0 && *test_fraction < 1.0) {
                return bad(format!("--test-fraction must be between 0 and 1, got {test_fraction}"));
            }
            if *context == 0 || *context > MAX_CONTEXT {
                return bad(format!("--context must be between 1 and {MAX_CONTEXT}, got {context}"));
            }
            if self.network.is_none() {
                return bad("a --text run needs a language model's --arch".into());
            }
        }
        if let Err(e) = self.architecture().check(MAX_PARAMETERS) {
            return bad(format!("{}: {e}", self.network_flag()));
        }
        Ok(())
    }
}

/// The shape of one example of `data`, read without loading it: `[1, 28, 28]` for MNIST,
/// `[features]` for a CSV file (from its header).
pub fn example_shape(data: &DataSource) -> Result<Vec<usize>, CliError> {
    match data {
        DataSource::BundledMnist | DataSource::MnistDir { .. } => Ok(vec![1, 28, 28]),
        DataSource::Csv { path, .. } => {
            let columns = data::csv_columns(path)?;
            if columns < 2 {
                return Err(CliError::Usage(format!("{}: needs feature columns and a label column", path.display())));
            }
            Ok(vec![columns - 1])
        }
        DataSource::Text { context, .. } => Ok(vec![*context]),
    }
}

/// Reads a CSV file of a run, checking it against the fingerprint the run saved (or saving
/// the file's fingerprint if the run has none yet).
fn read_run_csv(path: &std::path::Path, label_column: &str, saved: &mut Option<String>) -> Result<Dataset, CliError> {
    let (data, print) = data::read_csv_fingerprinted(path, label_column)?;
    match saved {
        Some(old) if *old != print => Err(CliError::Usage(format!(
            "{} has changed since the run was trained on it (fingerprint then {old}, now {print}): its seeded \
             split of training and test rows would not be the same; restore the file, or start a new run on it",
            path.display()
        ))),
        Some(_) => Ok(data),
        None => {
            *saved = Some(print);
            Ok(data)
        }
    }
}

/// Refuses a CSV file whose header names other columns, or the same in another order, than
/// the training file's: columns are matched by position, so either would feed features to
/// the wrong inputs without a word. Headerless files are compared by width alone (later).
pub fn same_columns(training: &std::path::Path, other: &std::path::Path) -> Result<(), CliError> {
    if let (Some(a), Some(b)) = (data::csv_header(training)?, data::csv_header(other)?) {
        if a != b {
            return Err(CliError::Usage(format!(
                "{} has the columns {} but the training data {} has {}: columns are matched by position, so \
                 give the file the training data's columns in the same order",
                other.display(),
                b.join(","),
                training.display(),
                a.join(",")
            )));
        }
    }
    Ok(())
}

/// Loads the training and test sets a configuration names (limits applied) and, for CSV
/// data, the standardisation fitted on the training rows (already applied to both). CSV
/// files are checked against the fingerprints the configuration holds, and their
/// fingerprints recorded where it holds none.
pub fn load_data(config: &mut TrainConfig) -> Result<(Dataset, Dataset, Option<InputNorm>), CliError> {
    let seed = config.seed;
    let (mut train, mut test, norm) = match &mut config.data {
        // Limits are applied while decoding: nothing beyond them is decompressed.
        DataSource::BundledMnist => {
            let (a, b) = crate::mnist::bundled_limited(config.limit, config.test_limit)?;
            (a, b, None)
        }
        DataSource::MnistDir { dir } => {
            let (a, b) = data::mnist::load_dir_limited(dir, config.limit, config.test_limit)?;
            (a, b, None)
        }
        DataSource::Csv { path, label_column, test_path, test_fraction, fingerprint, test_fingerprint } => {
            let all = read_run_csv(path, label_column, fingerprint)?;
            let (mut train, mut test) = match test_path {
                Some(t) => {
                    same_columns(path, t)?;
                    (all, read_run_csv(t, label_column, test_fingerprint)?)
                }
                None => all.split(*test_fraction, seed),
            };
            if test.width() != train.width() {
                return Err(CliError::Usage(format!(
                    "the test data has {} features but the training data {}",
                    test.width(),
                    train.width()
                )));
            }
            let norm = InputNorm::fit(&train);
            norm.apply(&mut train);
            norm.apply(&mut test);
            (train, test, Some(norm))
        }
        DataSource::Text { path, context, test_fraction, vocabulary, fingerprint } => {
            let text = data::read_text(path)?;
            let print = data::fingerprint(text.as_bytes());
            if fingerprint.as_ref().is_some_and(|old| *old != print) {
                return Err(CliError::Usage(format!(
                    "{} has changed since the run was trained on it: its vocabulary and held-out part would not be \
                     the same; restore the file, or start a new run on it",
                    path.display()
                )));
            }
            *fingerprint = Some(print);
            let vocab = data::Vocabulary::parse(vocabulary).map_err(|e| CliError::Usage(e.to_string()))?;
            let ids = vocab.encode(&text).map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?;
            let (train, test) = data::text_datasets(&ids, *context, vocab.len(), *test_fraction)
                .map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?;
            (train, test, None)
        }
    };
    if let Some(n) = config.limit {
        train = train.take(n);
    }
    if let Some(n) = config.test_limit {
        test = test.take(n);
    }
    Ok((train, test, norm))
}

/// `784,100,10`
pub fn join(xs: &[usize]) -> String {
    xs.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}
