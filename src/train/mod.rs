//! Training a classifier MLP: the configuration, the epoch loop, evaluation, and run folders
//! that can be resumed.
//!
//! A run folder holds `config.json` (the exact configuration), `model.safetensors` (weights,
//! with the configuration in its metadata, so it is self-contained), `checkpoint.safetensors`
//! (weights, optimiser state and history: everything a resume needs, in one atomically
//! written file), `metrics.jsonl` (one JSON object per epoch) and `loss.svg`, `accuracy.svg`.
//!
//! Determinism: the weights come from the seed, epoch e shuffles with a seed derived from
//! (seed, e), and the optimiser and schedule state are saved, so 2 epochs and 2 resumed
//! epochs give the same weights as 4 epochs in one go (same seed and threads).

pub mod checkpoint;
pub mod plot;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ndarray::{Array1, ArrayD, Axis};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::autodiff::no_grad;
use crate::data::{DataError, Dataset};
use crate::nn::{cross_entropy, mlp, Activation, ConfusionMatrix, Init, Module, Sequential};
use crate::optim::{clip_grad_norm, LrSchedule, Optimizer, OptimizerKind, Scheduler};
use crate::tensor::Tensor;
use checkpoint::CheckpointError;

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
    /// A CSV file (features and a label column); 20% of the rows, picked by the seed, are
    /// held out for testing and features are standardised with the training rows' statistics.
    Csv {
        /// The file.
        path: PathBuf,
        /// The label column's name.
        label_column: String,
    },
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
            batch: 32,
            epochs: 15,
            seed: 1,
            threads: 2,
            clip: None,
            data: DataSource::BundledMnist,
            limit: None,
            test_limit: None,
            watch: false,
        }
    }
}

/// Why training could not run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The configuration or the inputs do not fit together (bad input).
    #[error("{0}")]
    Config(String),
    /// The data could not be loaded.
    #[error(transparent)]
    Data(#[from] DataError),
    /// A checkpoint could not be read or written.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}

impl TrainError {
    /// Whether the failure is the user's input (as opposed to an internal or I/O failure).
    pub fn is_bad_input(&self) -> bool {
        match self {
            TrainError::Config(_) | TrainError::Data(_) => true,
            TrainError::Checkpoint(CheckpointError::Invalid { .. }) => true,
            TrainError::Checkpoint(CheckpointError::Io { source, .. }) => {
                matches!(source.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::InvalidData)
            }
        }
    }
}

/// One epoch's figures, one line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Mean training loss over the epoch's batches (weighted by batch size).
    pub train_loss: f64,
    /// Mean test loss.
    pub test_loss: f64,
    /// Test accuracy.
    pub test_accuracy: f64,
    /// The learning rate used.
    pub lr: f64,
    /// Seconds in the epoch's training steps (batching included, evaluation excluded).
    pub train_seconds: f64,
    /// Seconds for the whole epoch.
    pub seconds: f64,
    /// Training examples per second.
    pub samples_per_second: f64,
    /// With `watch`: per-layer statistics on a fixed training batch at the end of the epoch.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub layers: Option<Vec<crate::nn::inspect::LayerStats>>,
}

/// Loss, accuracy and confusion matrix of a model on a dataset.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// Mean cross-entropy.
    pub loss: f64,
    /// Fraction classified correctly.
    pub accuracy: f64,
    /// Counts of (true, predicted).
    pub confusion: ConfusionMatrix,
}

/// Standardisation fitted on the training features (CSV data), applied at evaluation too.
#[derive(Debug, Clone, PartialEq)]
pub struct InputNorm {
    /// Per-feature mean.
    pub mean: Array1<f32>,
    /// Per-feature standard deviation (1 where constant).
    pub std: Array1<f32>,
}

impl InputNorm {
    /// Fits on `data`.
    pub fn fit(data: &Dataset) -> Self {
        let (mean, std) = data.feature_stats();
        InputNorm { mean, std }
    }

    /// Applies to `data` in place.
    pub fn apply(&self, data: &mut Dataset) {
        data.features -= &self.mean;
        data.features /= &self.std;
    }
}

/// Loads the training and test sets a configuration names (limits applied).
pub fn load_data(config: &TrainConfig) -> Result<(Dataset, Dataset, Option<InputNorm>), TrainError> {
    let (mut train, mut test, norm) = match &config.data {
        DataSource::BundledMnist => {
            let (a, b) = crate::data::mnist::bundled()?;
            (a, b, None)
        }
        DataSource::MnistDir { dir } => {
            let (a, b) = crate::data::mnist::load_dir(dir)?;
            (a, b, None)
        }
        DataSource::Csv { path, label_column } => {
            let all = crate::data::read_csv(path, label_column)?;
            let (mut train, mut test) = split(&all, 0.2, config.seed);
            let norm = InputNorm::fit(&train);
            norm.apply(&mut train);
            norm.apply(&mut test);
            (train, test, Some(norm))
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

/// Splits off a seeded `fraction` of the rows as a test set.
fn split(data: &Dataset, fraction: f64, seed: u64) -> (Dataset, Dataset) {
    use rand::seq::SliceRandom;
    let mut order: Vec<usize> = (0..data.len()).collect();
    order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed ^ 0x5_1175));
    let n_test = ((data.len() as f64 * fraction).round() as usize)
        .clamp(usize::from(data.len() > 1), data.len().saturating_sub(1));
    let pick = |rows: &[usize]| {
        let f = data.features.select(Axis(0), rows);
        Dataset::new(f, rows.iter().map(|&r| data.labels[r]).collect(), data.classes)
    };
    (pick(&order[n_test..]), pick(&order[..n_test]))
}

/// A model being trained, with its optimiser, schedule and history.
pub struct Trainer {
    /// The configuration.
    pub config: TrainConfig,
    /// The network (outputs are logits).
    pub model: Sequential<f32>,
    /// The optimiser with its state.
    pub optimizer: Optimizer<f32>,
    /// The learning-rate schedule with its state.
    pub scheduler: Scheduler,
    /// Metrics of every epoch done so far.
    pub history: Vec<EpochMetrics>,
    /// Input standardisation (CSV data).
    pub input_norm: Option<InputNorm>,
}

const FORMAT: &str = "adjoint-mlp-v1";

impl Trainer {
    /// A fresh model and optimiser for `config`.
    pub fn new(config: TrainConfig) -> Result<Self, TrainError> {
        validate(&config)?;
        let mut rng = rand::rngs::StdRng::seed_from_u64(config.seed);
        let model = mlp::<f32>(&config.layers, config.activation, Some(config.init), &mut rng);
        let optimizer = Optimizer::new(config.optimizer, config.lr);
        let scheduler = Scheduler::new(config.schedule, config.lr);
        Ok(Trainer { config, model, optimizer, scheduler, history: Vec::new(), input_norm: None })
    }

    /// Epochs completed.
    pub fn epochs_done(&self) -> usize {
        self.history.len()
    }

    /// Fails, naming both, if the data does not fit the network's widths.
    pub fn check_data(&self, data: &Dataset) -> Result<(), TrainError> {
        let (inputs, outputs) = (self.config.layers[0], *self.config.layers.last().expect("validated"));
        if data.width() != inputs {
            return Err(TrainError::Config(format!(
                "the data has {} features per example but the first layer width is {inputs} (--layers {})",
                data.width(),
                join(&self.config.layers)
            )));
        }
        if data.classes > outputs {
            return Err(TrainError::Config(format!(
                "the data has {} classes but the last layer width is {outputs} (--layers {})",
                data.classes,
                join(&self.config.layers)
            )));
        }
        if data.is_empty() {
            return Err(TrainError::Config("the data has no examples".into()));
        }
        Ok(())
    }

    /// Trains one epoch on `train` and evaluates on `test`. `on_batch(done, total, loss)` is
    /// called after every step (for progress bars).
    pub fn run_epoch(
        &mut self,
        train: &Dataset,
        test: &Dataset,
        mut on_batch: impl FnMut(usize, usize, f64),
    ) -> EpochMetrics {
        let start = Instant::now();
        let epoch = self.epochs_done();
        let lr = self.scheduler.lr(epoch);
        self.optimizer.set_lr(lr);
        let shuffle = self.config.seed ^ (epoch as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let batches = train.batches(self.config.batch, Some(shuffle));
        let total = batches.len();
        let (mut loss_sum, mut seen) = (0.0f64, 0usize);
        self.model.set_training(true);
        for (i, (x, labels)) in batches.enumerate() {
            let loss = cross_entropy(&self.model.forward(&x), &labels);
            let value = loss.item() as f64;
            loss.backward();
            let mut params: Vec<&mut Tensor<f32>> = self.model.parameters_mut().into_iter().map(|(_, p)| p).collect();
            if let Some(max) = self.config.clip {
                let refs: Vec<&Tensor<f32>> = params.iter().map(|p| &**p).collect();
                clip_grad_norm(&refs, max);
            }
            self.optimizer.step(&mut params);
            params.iter().for_each(|p| p.zero_grad());
            loss_sum += value * labels.len() as f64;
            seen += labels.len();
            on_batch(i + 1, total, value);
        }
        let train_seconds = start.elapsed().as_secs_f64();
        let eval = self.evaluate(test);
        let train_loss = loss_sum / seen.max(1) as f64;
        self.scheduler.observe(train_loss);
        let layers = self.config.watch.then(|| {
            // A fixed batch (the first 256 training examples), so epochs compare.
            let (x, labels) = train.batches(256.min(train.len()), None).next().expect("non-empty data");
            crate::nn::inspect::inspect(&self.model, self.config.activation, &x, &labels, 0)
        });
        let metrics = EpochMetrics {
            epoch: epoch + 1,
            train_loss,
            test_loss: eval.loss,
            test_accuracy: eval.accuracy,
            lr,
            train_seconds,
            seconds: start.elapsed().as_secs_f64(),
            samples_per_second: seen as f64 / train_seconds.max(1e-9),
            layers,
        };
        self.history.push(metrics.clone());
        metrics
    }

    /// Loss, accuracy and confusion matrix on `data`, without recording a graph.
    pub fn evaluate(&self, data: &Dataset) -> Evaluation {
        evaluate(&self.model, data, *self.config.layers.last().expect("validated"))
    }

    /// Writes the run folder (see the module docs). Every file is written atomically.
    pub fn save(&self, dir: &Path) -> Result<(), TrainError> {
        std::fs::create_dir_all(dir).map_err(|source| CheckpointError::Io { path: dir.into(), source })?;
        let config_json = serde_json::to_string_pretty(&self.config).expect("config serialises");
        checkpoint::write_atomic(&dir.join("config.json"), config_json.as_bytes())?;
        let mut weights: Vec<(String, ArrayD<f32>)> =
            self.model.parameters().into_iter().map(|(n, p)| (n, p.to_array())).collect();
        if let Some(norm) = &self.input_norm {
            weights.push(("input.mean".into(), norm.mean.clone().into_dyn()));
            weights.push(("input.std".into(), norm.std.clone().into_dyn()));
        }
        let mut meta: HashMap<String, String> = HashMap::new();
        meta.insert("format".into(), FORMAT.into());
        meta.insert("config".into(), serde_json::to_string(&self.config).expect("config serialises"));
        checkpoint::save(&dir.join("model.safetensors"), &weights, meta.clone())?;
        // The checkpoint adds the optimiser state and the history, for resuming.
        let mut all = weights;
        all.extend(self.optimizer.state_arrays().into_iter().map(|(n, a)| (format!("optim.{n}"), a.clone())));
        meta.insert("optimizer_steps".into(), self.optimizer.steps.to_string());
        meta.insert("scheduler".into(), serde_json::to_string(&self.scheduler).expect("serialises"));
        meta.insert("history".into(), serde_json::to_string(&self.history).expect("serialises"));
        checkpoint::save(&dir.join("checkpoint.safetensors"), &all, meta)?;
        let lines: String = self.history.iter().map(|m| serde_json::to_string(m).expect("serialises") + "\n").collect();
        checkpoint::write_atomic(&dir.join("metrics.jsonl"), lines.as_bytes())?;
        self.plot(dir);
        Ok(())
    }

    /// Loss and accuracy curves; a failure to draw is reported but does not stop training.
    fn plot(&self, dir: &Path) {
        let pts = |f: fn(&EpochMetrics) -> f64| -> Vec<(f64, f64)> {
            self.history.iter().map(|m| (m.epoch as f64, f(m))).collect()
        };
        let loss = [("train loss", pts(|m| m.train_loss)), ("test loss", pts(|m| m.test_loss))];
        let acc = [("test accuracy", pts(|m| m.test_accuracy))];
        for r in [
            plot::line_chart(&dir.join("loss.svg"), "Cross-entropy loss", "epoch", "loss", &loss),
            plot::line_chart(&dir.join("accuracy.svg"), "Test accuracy", "epoch", "accuracy", &acc),
        ] {
            if let Err(e) = r {
                eprintln!("adjoint: could not draw a chart: {e}");
            }
        }
    }

    /// Loads a run folder for resuming (from `checkpoint.safetensors`).
    pub fn resume(dir: &Path) -> Result<Self, TrainError> {
        let path = dir.join("checkpoint.safetensors");
        let loaded = checkpoint::load(&path)?;
        let invalid = |m: String| TrainError::Checkpoint(CheckpointError::Invalid { path: path.clone(), message: m });
        let meta = |k: &str| loaded.metadata.get(k).ok_or_else(|| invalid(format!("metadata '{k}' is missing")));
        let config: TrainConfig =
            serde_json::from_str(meta("config")?).map_err(|e| invalid(format!("bad config: {e}")))?;
        let mut trainer = Trainer::new(config)?;
        load_weights(&mut trainer.model, &loaded.arrays, &path)?;
        trainer.input_norm = input_norm(&loaded.arrays);
        let steps: u64 = meta("optimizer_steps")?.parse().map_err(|_| invalid("bad optimizer_steps".into()))?;
        let shapes: Vec<Vec<usize>> = trainer.model.parameters().iter().map(|(_, p)| p.shape().to_vec()).collect();
        trainer
            .optimizer
            .restore_state(steps, &shapes, |n| loaded.arrays.get(&format!("optim.{n}")).cloned())
            .map_err(invalid)?;
        trainer.scheduler =
            serde_json::from_str(meta("scheduler")?).map_err(|e| invalid(format!("bad scheduler: {e}")))?;
        trainer.history = serde_json::from_str(meta("history")?).map_err(|e| invalid(format!("bad history: {e}")))?;
        Ok(trainer)
    }
}

/// A trained model loaded for evaluation or prediction.
pub struct TrainedModel {
    /// Its configuration.
    pub config: TrainConfig,
    /// The network.
    pub model: Sequential<f32>,
    /// Input standardisation, if the model was trained on CSV data.
    pub input_norm: Option<InputNorm>,
}

impl TrainedModel {
    /// Loads `model.safetensors` from a run folder.
    pub fn load(dir: &Path) -> Result<Self, TrainError> {
        let path = dir.join("model.safetensors");
        let loaded = checkpoint::load(&path)?;
        let invalid = |m: String| TrainError::Checkpoint(CheckpointError::Invalid { path: path.clone(), message: m });
        if loaded.metadata.get("format").map(String::as_str) != Some(FORMAT) {
            return Err(invalid(format!("not an adjoint model (metadata 'format' is not '{FORMAT}')")));
        }
        let config: TrainConfig = serde_json::from_str(loaded.metadata.get("config").map_or("", String::as_str))
            .map_err(|e| invalid(format!("bad config: {e}")))?;
        validate(&config).map_err(|e| invalid(e.to_string()))?;
        let mut model =
            mlp::<f32>(&config.layers, config.activation, Some(config.init), &mut rand::rngs::StdRng::seed_from_u64(0));
        load_weights(&mut model, &loaded.arrays, &path)?;
        Ok(TrainedModel { input_norm: input_norm(&loaded.arrays), config, model })
    }

    /// Evaluates on `data` (already standardised if needed).
    pub fn evaluate(&self, data: &Dataset) -> Evaluation {
        evaluate(&self.model, data, *self.config.layers.last().expect("validated"))
    }

    /// Class probabilities for one example.
    pub fn predict(&self, features: &[f32]) -> Vec<f32> {
        let mut x = ndarray::Array1::from(features.to_vec());
        if let Some(n) = &self.input_norm {
            x = (x - &n.mean) / &n.std;
        }
        let x = Tensor::from_array(x.insert_axis(Axis(0)).into_dyn());
        no_grad(|| self.model.forward(&x).softmax(-1).to_vec())
    }
}

fn input_norm(arrays: &HashMap<String, ArrayD<f32>>) -> Option<InputNorm> {
    let mean = arrays.get("input.mean")?.clone().into_dimensionality().ok()?;
    let std = arrays.get("input.std")?.clone().into_dimensionality().ok()?;
    Some(InputNorm { mean, std })
}

fn load_weights(
    model: &mut Sequential<f32>,
    arrays: &HashMap<String, ArrayD<f32>>,
    path: &Path,
) -> Result<(), TrainError> {
    for (name, p) in model.parameters_mut() {
        let a = arrays.get(&name).ok_or_else(|| {
            TrainError::Checkpoint(CheckpointError::Invalid {
                path: path.into(),
                message: format!("tensor '{name}' is missing"),
            })
        })?;
        if a.shape() != p.shape() {
            return Err(TrainError::Checkpoint(CheckpointError::Invalid {
                path: path.into(),
                message: format!("tensor '{name}' has shape {:?}, the model needs {:?}", a.shape(), p.shape()),
            }));
        }
        p.set_value(a.clone());
    }
    Ok(())
}

fn evaluate(model: &Sequential<f32>, data: &Dataset, classes: usize) -> Evaluation {
    let mut confusion = ConfusionMatrix::new(classes);
    let mut loss_sum = 0.0;
    no_grad(|| {
        for (x, labels) in data.batches(1000, None) {
            let logits = model.forward(&x);
            loss_sum += cross_entropy(&logits, &labels).item() as f64 * labels.len() as f64;
            confusion.add(&logits, &labels);
        }
    });
    Evaluation { loss: loss_sum / data.len().max(1) as f64, accuracy: confusion.accuracy(), confusion }
}

fn validate(config: &TrainConfig) -> Result<(), TrainError> {
    let bad = |m: String| Err(TrainError::Config(m));
    if config.layers.len() < 2 || config.layers.contains(&0) {
        return bad(format!("--layers needs at least two positive widths, got {}", join(&config.layers)));
    }
    if config.batch == 0 {
        return bad("--batch must be at least 1".into());
    }
    if !(config.lr.is_finite() && config.lr > 0.0) {
        return bad(format!("--lr must be a positive number, got {}", config.lr));
    }
    if config.threads == 0 {
        return bad("--threads must be at least 1".into());
    }
    if config.clip.is_some_and(|c| !(c.is_finite() && c > 0.0)) {
        return bad("--clip must be a positive number".into());
    }
    if matches!(config.activation, Activation::Softmax) {
        return bad("softmax is applied by the loss; pick another hidden activation".into());
    }
    Ok(())
}

fn join(xs: &[usize]) -> String {
    xs.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}
