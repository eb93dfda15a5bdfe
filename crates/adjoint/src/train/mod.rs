//! Training a [`Network`] on a [`Dataset`]: the epoch loop, evaluation and checkpoints;
//! and any [`Module`] with the user's loss and data ([`ModuleTrainer`]).
//!
//! The loss follows the data: softmax cross-entropy for class labels, mean squared error for
//! regression targets. A [`Trainer`] runs its work on a pool of `settings.threads` threads.
//!
//! Determinism: the weights come from the network's seed, epoch e shuffles with a seed
//! derived from (seed, e), and a checkpoint keeps the optimiser and schedule state, so 2
//! epochs and 2 resumed epochs give the same weights as 4 in one go (same seed and threads).
//!
//! Data-parallel training: with a [`Communicator`] of N ranks
//! ([`Trainer::set_communicator`]) every rank runs the same calls on the same data, takes its
//! share of each global batch and sums gradients with the others once per step; see
//! [`crate::dist`].
//!
//! ```
//! use adjoint::data::Dataset;
//! use adjoint::nn::{Activation, Architecture, Network};
//! use adjoint::optim::{LrSchedule, Optimizer, Scheduler};
//! use adjoint::train::{TrainSettings, Trainer};
//! // y = x₀ − 2x₁ from 64 examples, with a 2-8-1 network.
//! let x = adjoint::ndarray::Array2::from_shape_fn((64, 2), |(i, j)| ((i * 7 + j * 3) % 11) as f32 / 11.0);
//! let y = x.map_axis(adjoint::ndarray::Axis(1), |r| r[0] - 2.0 * r[1]).insert_axis(adjoint::ndarray::Axis(1));
//! let (train, test) = Dataset::regression(x, y).split(0.25, 1);
//! let network = Network::new(Architecture::mlp(&[2, 8, 1], Activation::TANH, None), 1).unwrap();
//! let settings = TrainSettings { batch: 8, epochs: 30, ..TrainSettings::default() };
//! let mut trainer = Trainer::new(network, Optimizer::adam(0.02), Scheduler::new(LrSchedule::Constant, 0.02), settings).unwrap();
//! let history = trainer.fit(&train, &test).unwrap();
//! assert!(history.last().unwrap().test_loss < history[0].test_loss);
//! ```

pub mod checkpoint;
pub mod module_trainer;

pub use module_trainer::{DataSource, LoopMetrics, LoopSettings, ModuleTrainer};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::autodiff::no_grad;
use crate::data::{Batch, Dataset, Targets};
use crate::dist::{CommError, Communicator, SingleProcess};
use crate::nn::inspect::LayerStats;
use crate::nn::{cross_entropy, mse, ConfusionMatrix, Module, Network};
use crate::optim::{clip_grad_norm, Optimizer, Scheduler};
use crate::tensor::Tensor;

/// How a [`Trainer`] trains (the network, optimiser and schedule are given separately).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainSettings {
    /// The mini-batch size.
    pub batch: usize,
    /// The total number of epochs [`Trainer::fit`] trains to.
    pub epochs: usize,
    /// The seed of the shuffling.
    pub seed: u64,
    /// Worker threads for the matrix products and elementwise kernels.
    pub threads: usize,
    /// Clip gradients to this global L2 norm.
    pub clip: Option<f64>,
    /// Record per-layer statistics (activations, gradient norms, dead units) every epoch.
    #[serde(default)]
    pub watch: bool,
    /// Train on past a non-finite loss or gradient instead of stopping.
    #[serde(default)]
    pub keep_going: bool,
}

impl Default for TrainSettings {
    /// Batch 32, 10 epochs, seed 1, 2 threads, no clipping.
    fn default() -> Self {
        TrainSettings { batch: 32, epochs: 10, seed: 1, threads: 2, clip: None, watch: false, keep_going: false }
    }
}

/// Why training could not run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The settings, the network and the data do not fit together.
    #[error("{0}")]
    Mismatch(String),
    /// A checkpoint could not be read or written.
    #[error(transparent)]
    Io(#[from] crate::io::IoError),
    /// The network could not be built or loaded.
    #[error(transparent)]
    Network(#[from] crate::nn::NetworkError),
    /// An epoch stopped before its end.
    #[error(transparent)]
    Stopped(#[from] Stopped),
    /// The ranks of a data-parallel job could not work together.
    #[error(transparent)]
    Communication(#[from] CommError),
    /// The worker threads could not be started.
    #[error("cannot start {threads} worker threads: {message}")]
    Threads {
        /// How many were asked for.
        threads: usize,
        /// Why they could not start.
        message: String,
    },
}

/// Why an epoch stopped before its end.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Stopped {
    /// Asked to stop (Ctrl-C): the epoch's progress is kept and continues on the next call.
    #[error("interrupted at epoch {epoch}, step {step} of {steps}")]
    Interrupted {
        /// 1-based epoch.
        epoch: usize,
        /// Steps of the epoch done.
        step: usize,
        /// Steps in the epoch.
        steps: usize,
    },
    /// A loss or a gradient was not finite; the step was not applied.
    #[error("training diverged at epoch {epoch}, step {step} of {steps}: {what}")]
    Diverged {
        /// 1-based epoch.
        epoch: usize,
        /// 1-based step within the epoch.
        step: usize,
        /// Steps in the epoch.
        steps: usize,
        /// What was not finite.
        what: String,
    },
    /// The ranks of a data-parallel job could not work together: a rank left, or the ranks
    /// differ in what they train ([`CommError::Disagree`]; see [`crate::dist`]).
    #[error("training stopped in epoch {epoch} after {step} of {steps} steps: {error}")]
    Communication {
        /// 1-based epoch.
        epoch: usize,
        /// Steps of the epoch done (and kept: resuming continues after them).
        step: usize,
        /// Steps in the epoch.
        steps: usize,
        /// What failed.
        error: CommError,
    },
}

/// How far an interrupted epoch got (kept in checkpoints, so that resuming continues it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochProgress {
    /// 0-based epoch.
    pub epoch: usize,
    /// Steps done.
    pub steps: usize,
    /// Sum of batch loss × batch size so far.
    #[serde(with = "crate::json::float")]
    pub loss_sum: f64,
    /// Examples seen so far.
    pub seen: usize,
    /// Seconds trained so far in this epoch.
    #[serde(with = "crate::json::float")]
    pub seconds: f64,
}

/// The first parameter whose gradient holds a non-finite number, if any.
fn non_finite_gradient<M: Module<f32> + ?Sized>(model: &M) -> Option<String> {
    let mut found = None;
    model.visit(&mut String::new(), &mut |name, p| {
        if found.is_none() && p.grad().is_some_and(|g| !all_finite(&g)) {
            found = Some(name.to_string());
        }
    });
    found
}

/// Whether every element is finite. Checked on every step, so written to vectorise: a float
/// is not finite exactly when its exponent bits are all ones, and the largest exponent field
/// is an integer maximum, which the compiler turns into SIMD (an early-exit `any` is not).
fn all_finite(t: &Tensor<f32>) -> bool {
    const EXPONENT: u32 = 0x7F80_0000;
    let view = t.view();
    let largest = match view.as_slice_memory_order() {
        Some(values) => values.iter().map(|v| v.to_bits() & EXPONENT).max(),
        None => view.iter().map(|v| v.to_bits() & EXPONENT).max(),
    };
    largest.is_none_or(|e| e != EXPONENT)
}

/// The end of a training step once the gradient is in place: the divergence checks (a
/// non-finite `loss` or gradient, unless `keep_going`), clipping, the schedule's rate for
/// step `step` of `steps` in `epoch`, the optimiser's step, and the gradient forgotten.
/// Returns what was not finite instead (the step not applied, the gradient dropped).
fn finish_step<M: Module<f32> + ?Sized>(
    model: &mut M,
    (optimizer, scheduler): (&mut Optimizer<f32>, &Scheduler),
    (clip, keep_going): (Option<f64>, bool),
    loss: f64,
    (epoch, step, steps): (usize, usize, usize),
) -> Result<(), String> {
    if !keep_going {
        let what = if loss.is_finite() {
            non_finite_gradient(model).map(|name| format!("the gradient of {name} is not finite"))
        } else {
            Some(format!("the loss is {loss}"))
        };
        if let Some(what) = what {
            model.zero_grad();
            return Err(what);
        }
    }
    if let Some(max) = clip {
        clip_grad_norm(model, max);
    }
    optimizer.set_lr(scheduler.lr_at(epoch, step, steps));
    optimizer.step(model);
    model.zero_grad();
    Ok(())
}

/// The optimiser's and schedule's part of a checkpoint's metadata (with `optim.{i}.{k}`
/// tensors for the optimiser's state, added by the caller).
fn optimizer_metadata(optimizer: &Optimizer<f32>, scheduler: &Scheduler, meta: &mut HashMap<String, String>) {
    let kind = serde_json::to_string(&optimizer.kind).expect("plain data serialises");
    meta.insert("optimizer".into(), kind);
    meta.insert("lr".into(), optimizer.lr().to_string());
    meta.insert("optimizer_steps".into(), optimizer.steps.to_string());
    if optimizer.decay_matrices_only {
        // AdamW as language-model recipes use it leaves biases and norms undecayed.
        meta.insert("decay_matrices_only".into(), "true".into());
    }
    meta.insert("scheduler".into(), serde_json::to_string(scheduler).expect("plain data serialises"));
}

/// Gives every rank of `comm` rank 0's parameters and buffers (`flat` is the message
/// buffer).
fn broadcast_state<M: Module<f32> + ?Sized>(
    model: &mut M,
    comm: &dyn Communicator,
    flat: &mut Vec<f32>,
) -> Result<(), CommError> {
    flat.clear();
    model.visit(&mut String::new(), &mut |_, p| flat.extend(p.view().iter()));
    let mut buffers: Vec<(String, Vec<usize>)> = Vec::new();
    model.visit_buffers(&mut String::new(), &mut |name, b| {
        buffers.push((name.to_string(), b.shape().to_vec()));
        flat.extend(b.iter());
    });
    comm.broadcast_f32(flat, 0)?;
    let mut offset = 0;
    model.visit_mut(&mut String::new(), &mut |_, p| {
        let n = p.len();
        p.update(|mut v| v.iter_mut().zip(&flat[offset..offset + n]).for_each(|(x, y)| *x = *y));
        offset += n;
    });
    let mut values = HashMap::new();
    for (name, shape) in buffers {
        let n: usize = shape.iter().product();
        let value = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&shape), flat[offset..offset + n].to_vec())
            .expect("a buffer's numbers fit its shape");
        offset += n;
        values.insert(name, value);
    }
    model.load_buffers(&mut String::new(), &values);
    Ok(())
}

/// The one all-reduce of a data-parallel step: every parameter's gradient × `share` and the
/// `extras` (a loss, a stop flag) summed over the ranks of `comm` in one message. Leaves
/// the sum in every parameter's gradient and returns the summed extras. `flat` is the
/// message buffer, kept between steps.
fn all_reduce_gradients<M: Module<f32> + ?Sized>(
    model: &M,
    comm: &dyn Communicator,
    flat: &mut Vec<f32>,
    share: f32,
    extras: &[f32],
    stats: &mut CommunicationStats,
) -> Result<Vec<f32>, CommError> {
    flat.clear();
    // Per parameter, whether this rank has a gradient for it: a parameter no rank used
    // (frozen, or not on this batch's path) is left without one, as one process leaves it.
    let mut count = 0;
    model.visit(&mut String::new(), &mut |_, p| {
        flat.push(f32::from(u8::from(p.grad().is_some())));
        count += 1;
    });
    model.visit(&mut String::new(), &mut |_, p| match p.grad() {
        Some(g) => flat.extend(g.view().iter().map(|v| v * share)),
        None => flat.extend(std::iter::repeat_n(0.0, p.len())),
    });
    let parameters = flat.len();
    flat.extend_from_slice(extras);
    let started = Instant::now();
    comm.all_reduce_sum_f32(flat)?;
    stats.seconds += started.elapsed().as_secs_f64();
    stats.steps += 1;
    stats.bytes_per_step = std::mem::size_of_val(flat.as_slice());
    let (used, values) = flat.split_at(count);
    let (mut k, mut offset) = (0, 0);
    model.visit(&mut String::new(), &mut |_, p| {
        let values = &values[offset..offset + p.len()];
        offset += p.len();
        k += 1;
        if used[k - 1] == 0.0 {
            p.set_grad(None);
            return;
        }
        // The sum goes into the gradient's own buffer: taken out of the parameter first,
        // it is the only owner, so `update` writes in place instead of allocating.
        let sum = match p.grad() {
            Some(mut g) => {
                p.set_grad(None);
                g.update(|mut v| v.iter_mut().zip(values).for_each(|(x, y)| *x = *y));
                g
            }
            None => Tensor::from_vec(values.to_vec(), p.shape()),
        };
        p.set_grad(Some(sum));
    });
    Ok(flat[parameters..].to_vec())
}

/// One epoch's figures (one line of a run's `metrics.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Mean training loss over the epoch's batches (weighted by batch size).
    #[serde(with = "crate::json::float")]
    pub train_loss: f64,
    /// Mean test loss.
    #[serde(with = "crate::json::float")]
    pub test_loss: f64,
    /// Test accuracy (classification only; for a language model, of the next character).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::json::option_float")]
    pub test_accuracy: Option<f64>,
    /// For a language model (sequence targets): the test loss in bits per character
    /// (`test_loss / ln 2`).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::json::option_float")]
    pub test_bits_per_char: Option<f64>,
    /// The learning rate used.
    #[serde(with = "crate::json::float")]
    pub lr: f64,
    /// Seconds in the epoch's training steps (batching included, evaluation excluded).
    #[serde(with = "crate::json::float")]
    pub train_seconds: f64,
    /// Seconds for the whole epoch.
    #[serde(with = "crate::json::float")]
    pub seconds: f64,
    /// Training examples per second.
    #[serde(with = "crate::json::float")]
    pub samples_per_second: f64,
    /// With `watch`: per-layer statistics on a fixed training batch at the end of the epoch.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub layers: Option<Vec<LayerStats>>,
    /// With `watch`, for a language model with attention: every head's spread and reach on
    /// the first held-out window at the end of the epoch.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub attention: Option<Vec<crate::nn::inspect::HeadStats>>,
    /// In data-parallel training: what the gradient all-reduce cost this epoch.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub communication: Option<CommunicationStats>,
}

/// The cost of a data-parallel epoch's gradient exchange.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommunicationStats {
    /// The number of ranks.
    pub ranks: usize,
    /// Bytes each rank contributes to the all-reduce of one step (gradients, loss, flags).
    pub bytes_per_step: usize,
    /// All-reduces this epoch (one per step).
    pub steps: usize,
    /// Seconds this rank spent in them (waiting for slower ranks included).
    #[serde(with = "crate::json::float")]
    pub seconds: f64,
}

/// A model's loss (and for classification accuracy and confusion matrix; for a language
/// model the accuracy of the next character) on a dataset.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// Mean loss (cross-entropy or mean squared error).
    pub loss: f64,
    /// Fraction classified correctly (classification only).
    pub accuracy: Option<f64>,
    /// Counts of (true, predicted) (classification only).
    pub confusion: Option<ConfusionMatrix>,
}

/// The loss of a batch for the network's outputs: cross-entropy for labels, mean squared
/// error for values. Outputs with a sequence axis (`[b, steps, classes]`, a language
/// model's) are scored at every position: the mean over all `b × steps` labels.
pub fn batch_loss(outputs: &Tensor<f32>, batch: &Batch) -> Tensor<f32> {
    match &batch.values {
        Some(values) => mse(outputs, values),
        None => cross_entropy(&per_position(outputs), &batch.labels),
    }
}

/// Outputs `[b, steps, classes]` as rows `[b × steps, classes]` (others unchanged).
fn per_position(outputs: &Tensor<f32>) -> Tensor<f32> {
    match *outputs.shape() {
        [b, steps, classes] => outputs.reshape(&[b * steps, classes]),
        _ => outputs.clone(),
    }
}

/// A network being trained, with its optimiser, schedule and history.
pub struct Trainer {
    /// The network (for classification its outputs are logits).
    pub network: Network<f32>,
    /// The optimiser with its state.
    pub optimizer: Optimizer<f32>,
    /// The learning-rate schedule with its state.
    pub scheduler: Scheduler,
    /// How to train.
    pub settings: TrainSettings,
    /// Metrics of every epoch done so far.
    pub history: Vec<EpochMetrics>,
    /// The progress of an epoch that was interrupted, if any.
    pub progress: Option<EpochProgress>,
    pool: Arc<rayon::ThreadPool>,
    comm: Arc<dyn Communicator>,
    /// The flat all-reduce buffer, kept between steps.
    flat: Vec<f32>,
}

/// The most worker threads a trainer starts: more only slow training down, and a number
/// read from a file is not trusted to start millions.
pub const MAX_THREADS: usize = 1024;

/// A pool of `threads` workers for a trainer's kernels, or why it cannot be had.
fn worker_pool(threads: usize) -> Result<Arc<rayon::ThreadPool>, TrainError> {
    if threads == 0 || threads > MAX_THREADS {
        return Err(TrainError::Threads { threads, message: format!("between 1 and {MAX_THREADS} are possible") });
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| TrainError::Threads { threads, message: e.to_string() })?;
    Ok(Arc::new(pool))
}

/// Refuses a clipping norm that is not a positive number.
fn check_clip(clip: Option<f64>) -> Result<(), TrainError> {
    match clip {
        Some(c) if !(c.is_finite() && c > 0.0) => {
            Err(TrainError::Mismatch("the clipping norm must be a positive number".into()))
        }
        _ => Ok(()),
    }
}

impl Trainer {
    /// A trainer for `network`.
    ///
    /// # Errors
    /// If the settings are not usable (a batch of 0, no threads, a clip that is not a
    /// positive number) or the threads cannot be started.
    pub fn new(
        network: Network<f32>,
        optimizer: Optimizer<f32>,
        scheduler: Scheduler,
        settings: TrainSettings,
    ) -> Result<Self, TrainError> {
        let bad = |m: &str| Err(TrainError::Mismatch(m.into()));
        if settings.batch == 0 {
            return bad("the batch size must be at least 1");
        }
        check_clip(settings.clip)?;
        let pool = worker_pool(settings.threads)?;
        Ok(Trainer {
            network,
            optimizer,
            scheduler,
            settings,
            history: Vec::new(),
            progress: None,
            pool,
            comm: Arc::new(SingleProcess),
            flat: Vec::new(),
        })
    }

    /// Changes the settings (more epochs, another thread count on resuming).
    ///
    /// # Errors
    /// As [`Trainer::new`].
    pub fn set_settings(&mut self, settings: TrainSettings) -> Result<(), TrainError> {
        if settings.threads != self.settings.threads {
            self.pool = worker_pool(settings.threads)?;
        }
        if settings.batch == 0 || settings.threads == 0 {
            return Err(TrainError::Mismatch("the batch size and the thread count must be at least 1".into()));
        }
        self.settings = settings;
        Ok(())
    }

    /// Epochs completed.
    pub fn epochs_done(&self) -> usize {
        self.history.len()
    }

    /// Fails, naming both, if the data does not fit the network's widths.
    ///
    /// # Errors
    /// [`TrainError::Mismatch`] saying what does not fit.
    pub fn check_data(&self, data: &Dataset) -> Result<(), TrainError> {
        let (inputs, outputs) = (self.network.architecture.inputs(), self.network.architecture.outputs());
        let bad = |m: String| Err(TrainError::Mismatch(m));
        if data.width() != inputs {
            return bad(format!("the data has {} features per example but the network takes {inputs}", data.width()));
        }
        match data.targets() {
            Targets::Classes { classes, .. } if *classes > outputs => {
                return bad(format!("the data has {classes} classes but the network has {outputs} outputs"))
            }
            Targets::Values(v) if v.ncols() != outputs => {
                return bad(format!("the data has {} target values but the network has {outputs} outputs", v.ncols()))
            }
            Targets::Sequences { classes, .. } if *classes > outputs => {
                return bad(format!("the text has {classes} distinct characters but the network has {outputs} outputs"))
            }
            _ => {}
        }
        let per_step = matches!(data.targets(), Targets::Sequences { .. });
        let gives_steps = self.network.architecture.shapes().is_ok_and(|s| s.last().is_some_and(|l| l.len() == 2));
        match (per_step, gives_steps) {
            (true, false) => {
                return bad("the data has a target per position (text) but the network gives one output per example; \
                            build it as a language model"
                    .into())
            }
            (false, true) => {
                return bad("the network gives an output per position (a language model) but the data has one \
                            target per example"
                    .into())
            }
            _ => {}
        }
        if data.is_empty() {
            return bad("the data has no examples".into());
        }
        Ok(())
    }

    /// Trains epochs until `settings.epochs` are done, evaluating on `test` after each.
    ///
    /// # Errors
    /// If the data does not fit the network, or an epoch stops ([`TrainError::Stopped`]):
    /// divergence, or in data-parallel training a rank that left or ranks that differ.
    pub fn fit(&mut self, train: &Dataset, test: &Dataset) -> Result<Vec<EpochMetrics>, TrainError> {
        let checked = self.check_data(train).and_then(|()| self.check_data(test));
        if self.comm.size() > 1 {
            // Every rank learns whether any rank's data does not fit, so that none waits for it.
            let mut failed = [f64::from(u8::from(checked.is_err()))];
            self.comm.all_reduce_sum_f64(&mut failed)?;
            if failed[0] > 0.0 {
                let others =
                    format!("the data of {} of {} ranks does not fit the network", failed[0], self.comm.size());
                return Err(checked.err().unwrap_or(TrainError::Mismatch(others)));
            }
        }
        checked?;
        while self.epochs_done() < self.settings.epochs {
            self.run_epoch(train, test, |_, _, _| {}, || false).map_err(TrainError::Stopped)?;
        }
        Ok(self.history.clone())
    }

    /// Trains one epoch on `train` (or the rest of an interrupted one) and evaluates on
    /// `test`. `on_batch(done, total, loss)` is called after every step (for progress bars);
    /// `stop()` is asked after every step (in a data-parallel group: before each step's
    /// all-reduce, and the group stops after the step at which any rank said so; answers
    /// during the last step are not acted on, so a stop must keep saying so), and when it
    /// says so the epoch stops there: its
    /// progress is kept in the trainer (and in checkpoints), so that the next call continues
    /// from the next step exactly as if nothing had happened.
    ///
    /// # Errors
    /// [`Stopped::Interrupted`] when `stop()` said so; [`Stopped::Diverged`] at the first
    /// non-finite loss or gradient (before the step that would apply it) unless
    /// `settings.keep_going`.
    pub fn run_epoch(
        &mut self,
        train: &Dataset,
        test: &Dataset,
        on_batch: impl FnMut(usize, usize, f64) + Send,
        stop: impl Fn() -> bool + Send + Sync,
    ) -> Result<EpochMetrics, Stopped> {
        let pool = self.pool.clone();
        // The caller's anomaly mode follows the work onto the pool's threads.
        if crate::autodiff::anomaly_mode() {
            pool.install(|| crate::autodiff::detect_anomaly(|| self.epoch(train, test, on_batch, stop)))
        } else {
            pool.install(|| self.epoch(train, test, on_batch, stop))
        }
    }

    fn epoch(
        &mut self,
        train: &Dataset,
        test: &Dataset,
        mut on_batch: impl FnMut(usize, usize, f64),
        stop: impl Fn() -> bool,
    ) -> Result<EpochMetrics, Stopped> {
        let start = Instant::now();
        let epoch = self.epochs_done();
        // The rate reported for the epoch is its first step's (per-step schedules and the
        // warm-up change it at every step, below).
        let lr = self.scheduler.lr_at(epoch, 0, train.len().div_ceil(self.settings.batch));
        let shuffle = self.settings.seed ^ (epoch as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let (rank, ranks) = (self.comm.rank(), self.comm.size());
        let batches = train.batches(self.settings.batch, Some(shuffle)).shard(rank, ranks);
        let total = batches.len();
        let failed =
            |step: usize, error: CommError| Stopped::Communication { epoch: epoch + 1, step, steps: total, error };
        // Before the progress is taken out: the position in the epoch is part of the check.
        if ranks > 1 {
            if let Err(e) = self.synchronize(train, test) {
                return Err(failed(self.progress.as_ref().filter(|p| p.epoch == epoch).map_or(0, |p| p.steps), e));
            }
        }
        let mut progress =
            self.progress.take().filter(|p| p.epoch == epoch).unwrap_or(EpochProgress { epoch, ..Default::default() });
        let mut communication =
            (ranks > 1).then_some(CommunicationStats { ranks, bytes_per_step: 0, steps: 0, seconds: 0.0 });
        self.network.set_training(true);
        for (i, batch) in batches.enumerate().skip(progress.steps) {
            // Dropout masks depend only on (seed, epoch, step): a resumed run draws the same.
            let key = shuffle ^ (i as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03);
            let diverged = |what: String| Stopped::Diverged { epoch: epoch + 1, step: i + 1, steps: total, what };
            // The global batch's rows; this rank's share, `batch`, starts at `first_row` of them.
            let rows = self.settings.batch.min(train.len() - i * self.settings.batch);
            let first_row = crate::dist::shard(rows, rank, ranks).start;
            let (value, stop_now) = match communication.as_mut() {
                None => {
                    let outputs = crate::nn::with_random_key(key, || self.network.forward(&batch.x));
                    let loss = batch_loss(&outputs, &batch);
                    let value = loss.item() as f64;
                    if !value.is_finite() && !self.settings.keep_going {
                        self.progress = Some(progress);
                        return Err(diverged(format!("the loss is {value}")));
                    }
                    loss.backward();
                    (value, None)
                }
                Some(stats) => match self.all_reduce_step(&batch, (first_row, rows), key, stop(), stats) {
                    Ok(reduced) => reduced,
                    Err(e) => {
                        self.network.zero_grad();
                        self.progress = Some(progress);
                        return Err(failed(i, e));
                    }
                },
            };
            let settings = (self.settings.clip, self.settings.keep_going);
            let optimizer = (&mut self.optimizer, &self.scheduler);
            if let Err(what) = finish_step(&mut self.network, optimizer, settings, value, (epoch, i, total)) {
                self.progress = Some(progress);
                return Err(diverged(what));
            }
            progress.loss_sum += value * rows as f64;
            progress.seen += rows;
            progress.steps = i + 1;
            on_batch(i + 1, total, value);
            // Alone, the stop is asked after the step; in a group every rank asked before the
            // all-reduce, and all act on the reduced answer at the same step.
            if i + 1 < total && stop_now.unwrap_or_else(&stop) {
                progress.seconds += start.elapsed().as_secs_f64();
                let step = progress.steps;
                self.progress = Some(progress);
                return Err(Stopped::Interrupted { epoch: epoch + 1, step, steps: total });
            }
        }
        self.network.set_training(false);
        let train_seconds = progress.seconds + start.elapsed().as_secs_f64();
        let evaluated = if ranks > 1 {
            self.synchronize(train, test).and_then(|()| self.evaluate_shared(test))
        } else {
            // Evaluation can take long (a large test set): a stop is asked between chunks.
            match evaluate_rows(&self.network, test, 0..test.len(), self.settings.batch, &stop) {
                Some((loss_sum, tally)) => Ok(evaluation(loss_sum, tally, test.len())),
                None => {
                    // The epoch's steps are done: resuming evaluates and finishes it.
                    progress.seconds += start.elapsed().as_secs_f64();
                    self.progress = Some(progress);
                    return Err(Stopped::Interrupted { epoch: epoch + 1, step: total, steps: total });
                }
            }
        };
        let eval = match evaluated {
            Ok(eval) => eval,
            Err(e) => {
                // The epoch's steps are done: resuming evaluates and finishes it.
                self.progress = Some(progress);
                return Err(failed(total, e));
            }
        };
        let train_loss = progress.loss_sum / progress.seen.max(1) as f64;
        self.scheduler.observe(train_loss);
        let layers = (self.settings.watch && matches!(train.targets(), Targets::Classes { .. })).then(|| {
            // A fixed batch (the first 256 training examples), so epochs compare.
            let batch = train.rows(0, 256);
            let activation = self.network.architecture.activation().unwrap_or(crate::nn::Activation::Identity);
            crate::nn::inspect::inspect(&self.network.model, activation, &batch.x, &batch.labels, 0)
        });
        let attention = (self.settings.watch && matches!(test.targets(), Targets::Sequences { .. }))
            .then(|| {
                let window = test.rows(0, 1);
                crate::nn::inspect::attention_stats(&self.network.attention_maps(&window.x))
            })
            .filter(|heads| !heads.is_empty());
        let metrics = EpochMetrics {
            epoch: epoch + 1,
            train_loss,
            test_loss: eval.loss,
            test_accuracy: eval.accuracy,
            test_bits_per_char: matches!(test.targets(), Targets::Sequences { .. })
                .then(|| eval.loss / std::f64::consts::LN_2),
            lr,
            train_seconds,
            seconds: progress.seconds + start.elapsed().as_secs_f64(),
            samples_per_second: progress.seen as f64 / train_seconds.max(1e-9),
            layers,
            attention,
            communication,
        };
        self.history.push(metrics.clone());
        Ok(metrics)
    }

    /// One step's forward and backward pass on this rank's rows, then the one all-reduce of
    /// [gradients × share, loss × share, stop flag]: leaves the global gradient in every
    /// parameter and returns the global batch's loss and whether any rank was asked to stop.
    fn all_reduce_step(
        &mut self,
        batch: &Batch,
        (first_row, rows): (usize, usize),
        key: u64,
        stop: bool,
        stats: &mut CommunicationStats,
    ) -> Result<(f64, Option<bool>), CommError> {
        let mine = batch.x.shape()[0];
        // A rank may have no rows in a last, partial batch: it adds zeros.
        let local_loss = (mine > 0).then(|| {
            // Dropout numbers the rows as in the global batch, so the masks are those one
            // process would draw.
            let outputs = crate::nn::with_random_key_from_row(key, first_row, || self.network.forward(&batch.x));
            let loss = batch_loss(&outputs, batch);
            loss.backward();
            loss.item()
        });
        // The loss is a mean over the rank's rows: weighting by the share of rows makes the
        // sum over ranks the mean over the global batch.
        let share = mine as f32 / rows as f32;
        let extras = [local_loss.map_or(0.0, |l| l * share), if stop { 1.0 } else { 0.0 }];
        let summed = all_reduce_gradients(&self.network, self.comm.as_ref(), &mut self.flat, share, &extras, stats)?;
        Ok((summed[0] as f64, Some(summed[1] > 0.0)))
    }

    /// The communicator the trainer sums gradients with ([`SingleProcess`] unless set).
    pub fn communicator(&self) -> &Arc<dyn Communicator> {
        &self.comm
    }

    /// Trains as one rank of a data-parallel group: every rank of `comm` must make the same
    /// calls ([`Trainer::run_epoch`], [`Trainer::fit`]) with the same data and settings; the
    /// first one checks that they agree and gives every rank rank 0's weights. A rank that
    /// stops making the calls leaves the others waiting, as in MPI (a [`LocalGroup`]'s
    /// ranks are released with an error when its communicator is dropped).
    ///
    /// [`LocalGroup`]: crate::dist::LocalGroup
    pub fn set_communicator(&mut self, comm: Arc<dyn Communicator>) {
        self.comm = comm;
    }

    /// Checks that every rank has the same settings, architecture, optimiser (kind, learning
    /// rate, state), schedule, position in training and data (by [`Dataset::fingerprint`]),
    /// then gives every rank rank 0's parameters and buffers (a collective call, made at the
    /// start and end of every epoch; nothing happens in a single process).
    ///
    /// # Errors
    /// [`CommError::Disagree`] if the ranks differ, or if a rank left.
    fn synchronize(&mut self, train: &Dataset, test: &Dataset) -> Result<(), CommError> {
        if self.comm.size() == 1 {
            return Ok(());
        }
        // Each rank adds its fingerprint in 16-bit pieces and their squares: all ranks agree
        // exactly when N·Σx² = (Σx)² for every piece (exact in f64 for any realistic N).
        let print = {
            use std::hash::{Hash, Hasher};
            let mut h = rustc_hash::FxHasher::default();
            self.fingerprint().hash(&mut h);
            (train.fingerprint(), test.fingerprint()).hash(&mut h);
            h.finish()
        };
        let n = self.comm.size() as f64;
        let mut b = [0.0f64; 8];
        for k in 0..4 {
            let piece = ((print >> (16 * k)) & 0xFFFF) as f64;
            b[k] = piece;
            b[4 + k] = piece * piece;
        }
        self.comm.all_reduce_sum_f64(&mut b)?;
        if (0..4).any(|k| n * b[4 + k] != b[k] * b[k]) {
            return Err(CommError::Disagree(
                "the ranks differ in their settings, network, optimiser, schedule, data or position \
                 in training"
                    .into(),
            ));
        }
        broadcast_state(&mut self.network, self.comm.as_ref(), &mut self.flat)
    }

    /// A hash of what every rank must agree on: settings (the thread count and watching may
    /// differ), architecture, optimiser and its state, schedule, position in training. The
    /// weights are not in it: every rank takes rank 0's.
    fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = rustc_hash::FxHasher::default();
        fn json(v: &impl Serialize) -> String {
            serde_json::to_string(v).unwrap_or_default()
        }
        let settings = TrainSettings { threads: 0, watch: false, ..self.settings.clone() };
        json(&settings).hash(&mut h);
        json(&self.network.architecture).hash(&mut h);
        json(&self.optimizer.kind).hash(&mut h);
        json(&self.scheduler).hash(&mut h);
        self.optimizer.lr().to_bits().hash(&mut h);
        self.optimizer.steps.hash(&mut h);
        for (name, state) in self.optimizer.state_arrays() {
            name.hash(&mut h);
            state.iter().for_each(|v| v.to_bits().hash(&mut h));
        }
        self.epochs_done().hash(&mut h);
        self.progress.as_ref().map(|p| (p.epoch, p.steps)).hash(&mut h);
        self.network.visit(&mut String::new(), &mut |name, p| (name, p.shape()).hash(&mut h));
        h.finish()
    }

    /// [`Trainer::evaluate`] with the rows shared among the ranks and the sums all-reduced.
    fn evaluate_shared(&self, data: &Dataset) -> Result<Evaluation, CommError> {
        let rows = crate::dist::shard(data.len(), self.comm.rank(), self.comm.size());
        let (loss_sum, mut tally) = evaluate_rows(&self.network, data, rows, self.settings.batch, &|| false)
            .expect("an evaluation nobody stops finishes");
        // Every rank's matrix must have the same size to be summed, rows or not.
        if let Tally::Confusion(c) = &mut tally {
            c.grow(self.network.architecture.outputs());
        }
        let mut sums: Vec<f64> = vec![loss_sum];
        match &tally {
            Tally::Confusion(c) => sums.extend(c.counts.iter().flatten().map(|&k| k as f64)),
            Tally::Hits { correct, total } => sums.extend([*correct as f64, *total as f64]),
            Tally::Nothing => {}
        }
        self.comm.all_reduce_sum_f64(&mut sums)?;
        match &mut tally {
            Tally::Confusion(c) => {
                for (k, count) in c.counts.iter_mut().flatten().enumerate() {
                    *count = sums[1 + k] as u64;
                }
            }
            Tally::Hits { correct, total } => (*correct, *total) = (sums[1] as u64, sums[2] as u64),
            Tally::Nothing => {}
        }
        Ok(evaluation(sums[0], tally, data.len()))
    }

    /// Loss (and accuracy) on `data`, without recording a graph, `settings.batch` rows at a
    /// time (so that it needs no more memory than a training step), in the network's current
    /// mode.
    pub fn evaluate(&self, data: &Dataset) -> Evaluation {
        self.pool.install(|| evaluate_in_chunks(&self.network, data, self.settings.batch))
    }
}

/// The rows [`evaluate`] passes through a model at a time.
pub const EVALUATION_ROWS: usize = 1000;

/// Loss (and for classification accuracy and the confusion matrix) of `model` on `data`,
/// without recording a graph, [`EVALUATION_ROWS`] rows at a time. The model runs in its
/// current mode: switch it to evaluation first ([`Module::eval`]) if it has dropout or batch
/// norm.
pub fn evaluate<M: Module<f32> + ?Sized>(model: &M, data: &Dataset) -> Evaluation {
    evaluate_in_chunks(model, data, EVALUATION_ROWS)
}

/// [`evaluate`] with `chunk` rows at a time (at least 1): what bounds the memory of the
/// activations, as the batch size does in training.
pub fn evaluate_in_chunks<M: Module<f32> + ?Sized>(model: &M, data: &Dataset, chunk: usize) -> Evaluation {
    let (loss_sum, tally) =
        evaluate_rows(model, data, 0..data.len(), chunk, &|| false).expect("an evaluation nobody stops finishes");
    evaluation(loss_sum, tally, data.len())
}

/// What an evaluation counts besides the loss.
enum Tally {
    /// Classes: every (true, predicted) pair.
    Confusion(ConfusionMatrix),
    /// Sequences (a language model's characters): only how many are right, since a
    /// vocabulary of thousands would make the matrix take gigabytes.
    Hits { correct: u64, total: u64 },
    /// Regression.
    Nothing,
}

fn evaluation(loss_sum: f64, tally: Tally, rows: usize) -> Evaluation {
    let loss = loss_sum / rows.max(1) as f64;
    match tally {
        Tally::Confusion(c) => Evaluation { loss, accuracy: Some(c.accuracy()), confusion: Some(c) },
        Tally::Hits { correct, total } => {
            Evaluation { loss, accuracy: Some(correct as f64 / total.max(1) as f64), confusion: None }
        }
        Tally::Nothing => Evaluation { loss, accuracy: None, confusion: None },
    }
}

/// The summed loss (and the counts of right answers) of `model` on the rows `rows` of
/// `data`, `chunk` rows at a time; `None` if `stop()` said so between chunks.
fn evaluate_rows<M: Module<f32> + ?Sized>(
    model: &M,
    data: &Dataset,
    rows: std::ops::Range<usize>,
    chunk: usize,
    stop: &dyn Fn() -> bool,
) -> Option<(f64, Tally)> {
    let mut tally = match data.targets() {
        Targets::Sequences { .. } => Tally::Hits { correct: 0, total: 0 },
        Targets::Classes { classes, .. } => Tally::Confusion(ConfusionMatrix::new(*classes)),
        Targets::Values(_) => Tally::Nothing,
    };
    let mut loss_sum = 0.0;
    no_grad(|| {
        for start in rows.clone().step_by(chunk.max(1)) {
            if stop() {
                return None;
            }
            let batch = data.rows(start, (start + chunk.max(1)).min(rows.end));
            let outputs = model.forward(&batch.x);
            loss_sum += batch_loss(&outputs, &batch).item() as f64 * batch.x.shape()[0] as f64;
            match &mut tally {
                Tally::Confusion(c) => c.add(&outputs, &batch.labels),
                Tally::Hits { correct, total } => {
                    let predicted = per_position(&outputs).argmax_rows();
                    *correct += predicted.iter().zip(&batch.labels).filter(|(p, l)| p == l).count() as u64;
                    *total += batch.labels.len() as u64;
                }
                Tally::Nothing => {}
            }
        }
        Some(())
    })?;
    Some((loss_sum, tally))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_finite_finds_every_kind_of_non_finite_number_anywhere() {
        let values = |n: usize| (0..n).map(|i| (i as f32 - 20.0) * 1e37).collect::<Vec<f32>>();
        assert!(all_finite(&Tensor::from_vec(values(40), &[40])));
        assert!(all_finite(&Tensor::from_vec(vec![f32::MAX, f32::MIN, f32::MIN_POSITIVE, -0.0, 1e-45], &[5])));
        assert!(all_finite(&Tensor::from_vec(Vec::<f32>::new(), &[0])));
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -f32::NAN] {
            for at in [0, 17, 39] {
                let mut v = values(40);
                v[at] = bad;
                assert!(!all_finite(&Tensor::from_vec(v.clone(), &[40])), "{bad} at {at}");
                // And in an array that is not contiguous (every other element of 80).
                let spread: Vec<f32> = v.iter().flat_map(|&x| [x, 0.0]).collect();
                let strided = ndarray::Array1::from(spread).slice_move(ndarray::s![..;2]).into_dyn();
                assert!(strided.as_slice_memory_order().is_none());
                assert!(!all_finite(&Tensor::from_array(strided)), "{bad} at {at}, strided");
            }
        }
    }
}
