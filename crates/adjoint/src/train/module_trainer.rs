//! Training any [`Module`] with the user's loss and data: [`ModuleTrainer`].
//!
//! The same loop as [`Trainer`](super::Trainer)'s, for models that are not a
//! [`Network`](crate::nn::Network) — a language model written as a struct of layers, a
//! model with two inputs — and data that is not a [`Dataset`](crate::data::Dataset): the
//! trainer takes a module, a [`DataSource`] of batches of any type, and a loss function of
//! the two. It keeps what the network trainer gives: per-step learning-rate schedules,
//! gradient clipping, divergence checks (a non-finite loss or gradient stops the epoch
//! before the step that would apply it), a stop request between steps (Ctrl-C) whose
//! progress is kept, checkpoints that resume exactly, and data-parallel training over a
//! [`Communicator`].
//!
//! Invariants: batch `(epoch, index)` of a source is always the same batch, and dropout
//! draws its masks from (seed, epoch, step), so an epoch interrupted, checkpointed and
//! resumed gives the weights the uninterrupted epoch gives, bit for bit (same threads).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use ndarray::ArrayD;
use serde::{Deserialize, Serialize};

use super::{all_reduce_gradients, broadcast_state, check_clip, finish_step, CommunicationStats, EpochProgress};
use super::{worker_pool, Stopped, TrainError};
use crate::dist::{CommError, Communicator, SingleProcess};
use crate::io::{self, IoError, Limits};
use crate::nn::Module;
use crate::optim::{Optimizer, OptimizerKind, Scheduler};
use crate::tensor::Tensor;

/// The `format` metadata of a [`ModuleTrainer`] checkpoint.
pub const MODULE_CHECKPOINT_FORMAT: &str = "adjoint-module-checkpoint-v1";

/// Batches of any type, in an order fixed per epoch.
///
/// ```
/// use adjoint::train::DataSource;
/// // Three fixed batches, reshuffled every epoch by a rotation.
/// struct Rotating(Vec<Vec<f32>>);
/// impl DataSource for Rotating {
///     type Batch = Vec<f32>;
///     fn len(&self) -> usize {
///         self.0.len()
///     }
///     fn batch(&self, epoch: usize, index: usize) -> Vec<f32> {
///         self.0[(index + epoch) % self.0.len()].clone()
///     }
/// }
/// assert_eq!(Rotating(vec![vec![1.0], vec![2.0]]).batch(1, 0), [2.0]);
/// ```
pub trait DataSource {
    /// One batch, as the loss function takes it.
    type Batch;
    /// Batches in every epoch.
    fn len(&self) -> usize;
    /// Whether an epoch has no batches.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Batch `index` (below [`DataSource::len`]) of 0-based `epoch`. The same arguments
    /// must give the same batch, so that a resumed epoch continues with the batches the
    /// interrupted one would have seen (shuffle with a seed made of `epoch`).
    fn batch(&self, epoch: usize, index: usize) -> Self::Batch;
}

/// Batches given once, the same order every epoch.
impl<B: Clone> DataSource for Vec<B> {
    type Batch = B;
    fn len(&self) -> usize {
        <[B]>::len(self)
    }
    fn batch(&self, _epoch: usize, index: usize) -> B {
        self[index].clone()
    }
}

/// How a [`ModuleTrainer`] trains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoopSettings {
    /// The total number of epochs [`ModuleTrainer::fit`] trains to.
    pub epochs: usize,
    /// The seed of the dropout masks (with the epoch and the step).
    pub seed: u64,
    /// Worker threads for the kernels.
    pub threads: usize,
    /// Clip gradients to this global L2 norm.
    pub clip: Option<f64>,
    /// Train on past a non-finite loss or gradient instead of stopping.
    pub keep_going: bool,
}

impl Default for LoopSettings {
    /// 10 epochs, seed 1, 2 threads, no clipping, stop on divergence.
    fn default() -> Self {
        LoopSettings { epochs: 10, seed: 1, threads: 2, clip: None, keep_going: false }
    }
}

/// One epoch of a [`ModuleTrainer`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoopMetrics {
    /// 1-based epoch.
    pub epoch: usize,
    /// The mean of the epoch's batch losses (over all ranks).
    #[serde(with = "crate::json::float")]
    pub train_loss: f64,
    /// The learning rate of the epoch's first step.
    #[serde(with = "crate::json::float")]
    pub lr: f64,
    /// Steps taken.
    pub steps: usize,
    /// Seconds of training (across interruptions).
    #[serde(with = "crate::json::float")]
    pub seconds: f64,
}

/// A [`Module`] being trained with a loss and data of the user's (see the module docs).
///
/// ```
/// use adjoint::nn::{Linear, Init, Module};
/// use adjoint::optim::{LrSchedule, Optimizer, Scheduler};
/// use adjoint::train::{LoopSettings, ModuleTrainer};
/// use adjoint::Tensor;
/// use rand::SeedableRng;
/// // Fit y = 3x − 1 with one linear unit, from batches of (x, y).
/// let model = Linear::<f32>::new(1, 1, Init::XavierUniform, &mut rand::rngs::StdRng::seed_from_u64(0));
/// let data: Vec<(Tensor<f32>, Tensor<f32>)> = (0..4)
///     .map(|b| {
///         let x: Vec<f32> = (0..8).map(|i| (b * 8 + i) as f32 / 32.0).collect();
///         let y = x.iter().map(|v| 3.0 * v - 1.0).collect();
///         (Tensor::from_vec(x, &[8, 1]), Tensor::from_vec(y, &[8, 1]))
///     })
///     .collect();
/// let loss = |m: &Linear<f32>, (x, y): &(Tensor<f32>, Tensor<f32>)| (m.forward(x) - y).sqr().mean_all();
/// let settings = LoopSettings { epochs: 200, ..LoopSettings::default() };
/// let mut trainer =
///     ModuleTrainer::new(model, Optimizer::adam(0.05), Scheduler::new(LrSchedule::Constant, 0.05), settings).unwrap();
/// let history = trainer.fit(&data, loss).unwrap();
/// assert!(history.last().unwrap().train_loss < 1e-3);
/// ```
pub struct ModuleTrainer<M: Module<f32>> {
    /// The model.
    pub model: M,
    /// The optimiser with its state.
    pub optimizer: Optimizer<f32>,
    /// The learning-rate schedule with its state.
    pub scheduler: Scheduler,
    /// How to train.
    pub settings: LoopSettings,
    /// Every finished epoch's figures.
    pub history: Vec<LoopMetrics>,
    /// How far an interrupted epoch got.
    pub progress: Option<EpochProgress>,
    pool: Arc<rayon::ThreadPool>,
    comm: Arc<dyn Communicator>,
    flat: Vec<f32>,
}

impl<M: Module<f32>> ModuleTrainer<M> {
    /// A trainer for `model`.
    ///
    /// # Errors
    /// If the settings are not usable (no threads, a clip that is not a positive number) or
    /// the threads cannot be started.
    pub fn new(
        model: M,
        optimizer: Optimizer<f32>,
        scheduler: Scheduler,
        settings: LoopSettings,
    ) -> Result<Self, TrainError> {
        check_clip(settings.clip)?;
        let pool = worker_pool(settings.threads)?;
        Ok(ModuleTrainer {
            model,
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

    /// Epochs finished.
    pub fn epochs_done(&self) -> usize {
        self.history.len()
    }

    /// Trains as one rank of a data-parallel group: every rank makes the same calls with a
    /// source of its own share of each batch (the same number of batches); gradients and
    /// losses are averaged over the ranks once per step (a parameter no rank gave a
    /// gradient stays untouched), and each epoch starts from rank 0's parameters and
    /// buffers. Without dropout (or `Embedding::max_norm`, which renormalises only the rows
    /// a rank looked up) this trains as one process on the whole batches; with dropout
    /// each rank draws its own masks.
    pub fn set_communicator(&mut self, comm: Arc<dyn Communicator>) {
        self.comm = comm;
    }

    /// Trains epochs until `settings.epochs` are done.
    ///
    /// # Errors
    /// [`TrainError::Stopped`] if an epoch stops (divergence, a rank that left).
    pub fn fit<D: DataSource + Sync>(
        &mut self,
        data: &D,
        loss: impl Fn(&M, &D::Batch) -> Tensor<f32> + Sync,
    ) -> Result<Vec<LoopMetrics>, TrainError> {
        while self.epochs_done() < self.settings.epochs {
            self.run_epoch(data, &loss, |_, _, _| {}, || false)?;
        }
        Ok(self.history.clone())
    }

    /// Trains one epoch (or the rest of an interrupted one): for every batch, the loss of
    /// the model in training mode, its gradient, the divergence checks, clipping, the
    /// schedule's rate for the step and the optimiser's step. `on_batch(done, total, loss)`
    /// follows every step; `stop()` is asked after every step (in a group, before each
    /// step's all-reduce, and all ranks stop at the same step), and the epoch then stops
    /// with its progress kept, so the next call (or a checkpoint's) continues it.
    ///
    /// # Errors
    /// [`Stopped::Interrupted`], [`Stopped::Diverged`] (unless `keep_going`; the step is
    /// not applied), [`Stopped::Communication`].
    pub fn run_epoch<D: DataSource + Sync>(
        &mut self,
        data: &D,
        loss: &(impl Fn(&M, &D::Batch) -> Tensor<f32> + Sync),
        on_batch: impl FnMut(usize, usize, f64) + Send,
        stop: impl Fn() -> bool + Send + Sync,
    ) -> Result<LoopMetrics, Stopped> {
        let pool = self.pool.clone();
        pool.install(|| self.epoch(data, loss, on_batch, stop))
    }

    fn epoch<D: DataSource>(
        &mut self,
        data: &D,
        loss: &impl Fn(&M, &D::Batch) -> Tensor<f32>,
        mut on_batch: impl FnMut(usize, usize, f64),
        stop: impl Fn() -> bool,
    ) -> Result<LoopMetrics, Stopped> {
        let start = Instant::now();
        let epoch = self.epochs_done();
        let total = data.len();
        let lr = self.scheduler.lr_at(epoch, 0, total);
        let seed = self.settings.seed ^ (epoch as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let ranks = self.comm.size();
        let mut progress =
            self.progress.take().filter(|p| p.epoch == epoch).unwrap_or(EpochProgress { epoch, ..Default::default() });
        let failed =
            |step: usize, error: CommError| Stopped::Communication { epoch: epoch + 1, step, steps: total, error };
        let mut stats = CommunicationStats { ranks, bytes_per_step: 0, steps: 0, seconds: 0.0 };
        if ranks > 1 {
            if let Err(e) = broadcast_state(&mut self.model, self.comm.as_ref(), &mut self.flat) {
                let steps = progress.steps;
                self.progress = Some(progress);
                return Err(failed(steps, e));
            }
        }
        self.model.set_training(true);
        for i in progress.steps..total {
            let diverged = |what: String| Stopped::Diverged { epoch: epoch + 1, step: i + 1, steps: total, what };
            let batch = data.batch(epoch, i);
            // Each rank draws its own masks (its rows are its own; the trainer cannot know
            // where they sit in a global batch, so data-parallel dropout is not one process's).
            let key = seed
                ^ (i as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03)
                ^ (self.comm.rank() as u64).wrapping_mul(0x94D0_49BB_1331_11EB);
            let value = crate::nn::with_random_key(key, || loss(&self.model, &batch));
            assert!(value.len() == 1, "ModuleTrainer: the loss must be one number, got shape {:?}", value.shape());
            let mut loss_value = value.item() as f64;
            if ranks == 1 && !loss_value.is_finite() && !self.settings.keep_going {
                self.progress = Some(progress);
                return Err(diverged(format!("the loss is {loss_value}")));
            }
            value.backward();
            let mut stop_now = None;
            if ranks > 1 {
                // Every rank's share counts alike: the sum of gradients / ranks is the mean.
                let share = 1.0 / ranks as f32;
                let extras = [value.item() * share, if stop() { 1.0 } else { 0.0 }];
                match all_reduce_gradients(&self.model, self.comm.as_ref(), &mut self.flat, share, &extras, &mut stats)
                {
                    Ok(summed) => {
                        loss_value = summed[0] as f64;
                        stop_now = Some(summed[1] > 0.0);
                    }
                    Err(e) => {
                        self.model.zero_grad();
                        self.progress = Some(progress);
                        return Err(failed(i, e));
                    }
                }
            }
            let settings = (self.settings.clip, self.settings.keep_going);
            let optimizer = (&mut self.optimizer, &self.scheduler);
            if let Err(what) = finish_step(&mut self.model, optimizer, settings, loss_value, (epoch, i, total)) {
                self.progress = Some(progress);
                return Err(diverged(what));
            }
            progress.loss_sum += loss_value;
            progress.seen += 1;
            progress.steps = i + 1;
            on_batch(i + 1, total, loss_value);
            if i + 1 < total && stop_now.unwrap_or_else(&stop) {
                progress.seconds += start.elapsed().as_secs_f64();
                let step = progress.steps;
                self.progress = Some(progress);
                self.model.set_training(false);
                return Err(Stopped::Interrupted { epoch: epoch + 1, step, steps: total });
            }
        }
        self.model.set_training(false);
        let train_loss = progress.loss_sum / progress.seen.max(1) as f64;
        self.scheduler.observe(train_loss);
        let metrics = LoopMetrics {
            epoch: epoch + 1,
            train_loss,
            lr,
            steps: total,
            seconds: progress.seconds + start.elapsed().as_secs_f64(),
        };
        self.history.push(metrics.clone());
        Ok(metrics)
    }

    /// Writes the model's state dict (parameters and buffers, under their names), the
    /// optimiser's state, the schedule, the settings, the history and an interrupted
    /// epoch's progress to one safetensors file, atomically.
    ///
    /// # Errors
    /// If the file cannot be written.
    pub fn save_checkpoint(&self, path: &Path) -> Result<(), TrainError> {
        let mut tensors = self.model.state_dict();
        tensors.extend(self.optimizer.state_arrays().into_iter().map(|(n, a)| (format!("optim.{n}"), a.clone())));
        let mut meta = HashMap::new();
        meta.insert("format".to_string(), MODULE_CHECKPOINT_FORMAT.to_string());
        meta.insert("settings".into(), json(&self.settings));
        super::optimizer_metadata(&self.optimizer, &self.scheduler, &mut meta);
        meta.insert("history".into(), json(&self.history));
        if let Some(p) = &self.progress {
            meta.insert("progress".into(), json(p));
        }
        Ok(io::save(path, &tensors, &meta)?)
    }

    /// A trainer continuing from a checkpoint written by [`ModuleTrainer::save_checkpoint`]:
    /// `model` (built by the caller, of the same structure) takes the saved state dict
    /// strictly; the optimiser, schedule, settings, history and progress are the file's.
    ///
    /// # Errors
    /// If the file cannot be read, is not such a checkpoint, or does not fit the model
    /// (naming the tensor).
    pub fn load_checkpoint(path: &Path, mut model: M) -> Result<Self, TrainError> {
        let file = io::load::<f32>(path, &Limits::default())?;
        let meta = file.metadata;
        let invalid = |m: String| TrainError::Io(IoError::invalid(path, m));
        if meta.get("format").map(String::as_str) != Some(MODULE_CHECKPOINT_FORMAT) {
            return Err(invalid(format!(
                "not a module checkpoint (metadata 'format' is not '{MODULE_CHECKPOINT_FORMAT}')"
            )));
        }
        let get = |k: &str| meta.get(k).ok_or_else(|| invalid(format!("metadata '{k}' is missing")));
        fn parse<T: serde::de::DeserializeOwned>(text: &str, what: &str, path: &Path) -> Result<T, TrainError> {
            serde_json::from_str(text).map_err(|e| TrainError::Io(IoError::invalid(path, format!("bad {what}: {e}"))))
        }
        let settings: LoopSettings = parse(get("settings")?, "settings", path)?;
        let kind: OptimizerKind = parse(get("optimizer")?, "optimizer", path)?;
        let lr: f64 = get("lr")?.parse().map_err(|_| invalid("bad lr".into()))?;
        let steps: u64 = get("optimizer_steps")?.parse().map_err(|_| invalid("bad optimizer_steps".into()))?;
        let scheduler: Scheduler = parse(get("scheduler")?, "scheduler", path)?;
        let history: Vec<LoopMetrics> = parse(get("history")?, "history", path)?;
        let progress: Option<EpochProgress> = match meta.get("progress") {
            Some(p) => Some(parse(p, "progress", path)?),
            None => None,
        };
        let (state, mut optim): (HashMap<String, ArrayD<f32>>, HashMap<String, ArrayD<f32>>) =
            file.tensors.into_iter().partition(|(k, _)| !k.starts_with("optim."));
        model.load_state_dict(&state).map_err(|e| invalid(e.to_string()))?;
        let shapes: Vec<Vec<usize>> = model.parameters().iter().map(|(_, p)| p.shape().to_vec()).collect();
        let mut optimizer = Optimizer::new(kind, lr);
        optimizer.decay_matrices_only = meta.get("decay_matrices_only").is_some_and(|v| v == "true");
        optimizer
            .restore_state(steps, &shapes, |n| optim.remove(&format!("optim.{n}")))
            .map_err(|e| invalid(e.to_string()))?;
        let mut trainer = ModuleTrainer::new(model, optimizer, scheduler, settings)?;
        trainer.history = history;
        trainer.progress = progress;
        Ok(trainer)
    }
}

fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("plain data serialises")
}
