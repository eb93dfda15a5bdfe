//! Layers that behave differently in training and evaluation, and normalisation:
//! [`Dropout`], [`BatchNorm`] and [`LayerNorm`].
//!
//! Each is composed of tensor primitives, so its derivatives (of any order) follow.
//!
//! Determinism: dropout masks are a pure function of (the layer's seed, a key, a call
//! number, the element's position). The [`Trainer`](crate::train::Trainer) sets the key of
//! every training step from (seed, epoch, step) with [`with_random_key`], so a resumed run
//! draws the masks an uninterrupted one would. Outside such a scope each layer counts its
//! own calls. Batch norm's running statistics are buffers: saved with the model and in
//! checkpoints.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use ndarray::{ArrayD, IxDyn};

use super::module::with_name;
use super::Module;
use crate::ops::kernel::mix;
use crate::tensor::{Element, Tensor};

/// The random key of the current training step on this thread.
#[derive(Clone, Copy)]
struct StepKey {
    key: u64,
    /// Dropout calls made under the key so far.
    calls: u64,
    /// The batch row that row 0 of this process's tensors stands for.
    first_row: u64,
}

thread_local! {
    static KEY: Cell<Option<StepKey>> = const { Cell::new(None) };
}

/// Runs `f` with dropout masks drawn from `key` (e.g. a hash of seed, epoch and step) on
/// this thread, so that they can be drawn again identically.
pub fn with_random_key<R>(key: u64, f: impl FnOnce() -> R) -> R {
    with_random_key_from_row(key, 0, f)
}

/// [`with_random_key`] for a share of a batch that starts at row `first_row` of it: row `r`
/// of each tensor gets the mask that row `first_row + r` of the whole batch would get, so
/// ranks that split a batch draw together what one process would draw. Rows are along
/// axis 0, the batch axis of every tensor the built-in layers pass to dropout.
pub fn with_random_key_from_row<R>(key: u64, first_row: usize, f: impl FnOnce() -> R) -> R {
    let before = KEY.with(|k| k.replace(Some(StepKey { key, calls: 0, first_row: first_row as u64 })));
    let out = f();
    KEY.with(|k| k.set(before));
    out
}

/// The random stream of one dropout call: from the training step's key (and the number of
/// calls made under it) when a [`with_random_key`] scope is active, else from the layer's own
/// call counter; with the batch row that row 0 stands for.
pub(crate) fn dropout_stream(calls: &AtomicU64) -> (u64, u64) {
    KEY.with(|k| match k.get() {
        Some(step) => {
            k.set(Some(StepKey { calls: step.calls + 1, ..step }));
            (mix(step.key ^ mix(step.calls)), step.first_row)
        }
        None => (mix(calls.fetch_add(1, Ordering::Relaxed) ^ 0xD1B5_4A32_D192_ED03), 0),
    })
}

/// Zeroes each element with probability `p` in training and scales the rest by 1/(1 − p)
/// (inverted dropout, as PyTorch's); the identity in evaluation.
pub struct Dropout {
    /// The probability of dropping an element, in [0, 1).
    pub p: f64,
    /// Distinguishes this layer's masks from other layers'.
    pub seed: u64,
    training: bool,
    calls: AtomicU64,
}

impl Dropout {
    /// A dropout layer (in training mode) with drop probability `p`.
    ///
    /// # Panics
    /// If `p` is not in [0, 1).
    pub fn new(p: f64, seed: u64) -> Self {
        assert!((0.0..1.0).contains(&p), "Dropout::new: p must be in [0, 1), got {p}");
        Dropout { p, seed, training: true, calls: AtomicU64::new(0) }
    }

    /// Whether the layer drops elements (training mode) or passes its input on (evaluation).
    pub fn is_training(&self) -> bool {
        self.training
    }
}

impl<T: Element> Module<T> for Dropout {
    fn forward(&self, x: &Tensor<T>) -> Tensor<T> {
        if !self.training || self.p == 0.0 {
            return x.clone();
        }
        let (stream, first_row) = dropout_stream(&self.calls);
        let base = mix(self.seed ^ stream);
        let keep = T::from_f64_lossy(1.0 / (1.0 - self.p));
        let threshold = (self.p * 2f64.powi(53)) as u64;
        // Element i's draw depends only on (base, i): the mask needs no sequential state.
        // Elements are numbered as in the whole batch (rows before `first_row` come first).
        let per_row = x.shape().first().filter(|&&rows| rows > 0).map_or(0, |&rows| x.len() / rows) as u64;
        let offset = first_row * per_row;
        let draws = (offset..offset + x.len() as u64).map(|i| {
            if mix(base ^ i.wrapping_mul(0x9E37_79B9)) >> 11 >= threshold {
                keep
            } else {
                T::zero()
            }
        });
        x * &Tensor::from_vec(draws.collect(), x.shape())
    }
    fn describe(&self) -> String {
        format!("dropout {}", self.p)
    }
    fn set_training(&mut self, training: bool) {
        self.training = training;
    }
    fn visit<'a>(&'a self, _: &mut String, _: &mut dyn FnMut(&str, &'a Tensor<T>)) {}
    fn visit_mut(&mut self, _: &mut String, _: &mut dyn FnMut(&str, &mut Tensor<T>)) {}
}

/// Batch normalisation over the channel axis (axis 1) of `[N, C]`, `[N, C, L]` (PyTorch's
/// `BatchNorm1d`), `[N, C, H, W]` (`BatchNorm2d`) or `[N, C, D, H, W]` (`BatchNorm3d`):
/// y = (x − μ)/√(σ² + ε)·γ + β with the batch's statistics in training (and running
/// averages updated with `momentum`, the variance unbiased, as PyTorch's), the running
/// statistics in evaluation. Parameters `weight` (γ) and `bias` (β); buffers
/// `running_mean`, `running_var` and `num_batches_tracked` (saved as I64, as PyTorch does;
/// optional when loading).
///
/// ```
/// use adjoint::nn::{BatchNorm, Module};
/// use adjoint::Tensor;
/// // PyTorch: nn.BatchNorm1d(3) over sequences [N, C, L]
/// let mut norm = BatchNorm::<f64>::new(3);
/// let x = Tensor::from_vec((0..24).map(|i| (i as f64 * 0.7).sin()).collect(), &[2, 3, 4]);
/// let y = norm.forward(&x).to_vec();
/// // Channel 0 (positions 0..4 and 12..16) has mean 0 over the batch and the sequence.
/// let mean: f64 = y[0..4].iter().chain(&y[12..16]).sum::<f64>() / 8.0;
/// assert!(mean.abs() < 1e-12);
/// norm.eval(); // the running statistics from now on
/// assert_eq!(norm.num_batches_tracked(), 1);
/// ```
pub struct BatchNorm<T: Element> {
    /// γ, `[C]`
    pub weight: Tensor<T>,
    /// β, `[C]`
    pub bias: Tensor<T>,
    /// ε
    pub eps: f64,
    /// The weight of a new batch in the running averages.
    pub momentum: f64,
    running: RwLock<(ArrayD<T>, ArrayD<T>)>,
    /// Training batches seen (PyTorch's `num_batches_tracked`).
    batches_tracked: AtomicU64,
    training: bool,
}

impl<T: Element> BatchNorm<T> {
    /// Batch norm over `channels` (γ = 1, β = 0, running mean 0 and variance 1; ε = 1e-5,
    /// momentum 0.1 as PyTorch's).
    pub fn new(channels: usize) -> Self {
        BatchNorm {
            weight: Tensor::ones(&[channels]).requires_grad(),
            bias: Tensor::zeros(&[channels]).requires_grad(),
            eps: 1e-5,
            momentum: 0.1,
            running: RwLock::new((ArrayD::zeros(IxDyn(&[channels])), ArrayD::ones(IxDyn(&[channels])))),
            batches_tracked: AtomicU64::new(0),
            training: true,
        }
    }

    /// Whether the layer normalises with the batch's statistics and updates its running
    /// averages (training mode) or uses the running statistics (evaluation).
    pub fn is_training(&self) -> bool {
        self.training
    }

    /// The training batches whose statistics went into the running averages.
    pub fn num_batches_tracked(&self) -> u64 {
        self.batches_tracked.load(Ordering::Relaxed)
    }

    /// The running mean and variance.
    pub fn running(&self) -> (ArrayD<T>, ArrayD<T>) {
        self.running.read().expect("not poisoned").clone()
    }
}

impl<T: Element> Module<T> for BatchNorm<T> {
    fn forward(&self, x: &Tensor<T>) -> Tensor<T> {
        let c = self.weight.len();
        assert!(
            (2..=5).contains(&x.ndim()) && x.shape()[1] == c,
            "batch_norm: input of shape {:?} does not have {c} channels on axis 1 ([N, C], [N, C, L], [N, C, H, W] \
             or [N, C, D, H, W])",
            x.shape()
        );
        // Statistics over every axis but the channels'.
        let axes: Vec<isize> = (0..x.ndim() as isize).filter(|&a| a != 1).collect();
        let mut shape = vec![1; x.ndim()];
        shape[1] = c;
        let eps = Tensor::scalar(T::from_f64_lossy(self.eps));
        let (centred, var) = if self.training {
            let mean = x.mean(&axes[..], true);
            let centred = x - &mean;
            let var = centred.sqr().mean(&axes[..], true);
            let count = x.len() / c;
            let unbiased = count as f64 / (count.max(2) - 1) as f64;
            let m = self.momentum;
            let mut running = self.running.write().expect("not poisoned");
            let blend = |old: &ArrayD<T>, new: &Tensor<T>, scale: f64| {
                let new = new.view().to_shape(IxDyn(&[c])).expect("one per channel").to_owned();
                ndarray::Zip::from(old).and(&new).map_collect(|&o, &v| {
                    T::from_f64_lossy((1.0 - m) * o.to_f64_lossless() + m * scale * v.to_f64_lossless())
                })
            };
            let mean_next = blend(&running.0, &mean, 1.0);
            let var_next = blend(&running.1, &var, unbiased);
            *running = (mean_next, var_next);
            self.batches_tracked.fetch_add(1, Ordering::Relaxed);
            (centred, var)
        } else {
            let (mean, var) = self.running();
            let mean = Tensor::from_array(mean.into_shape_with_order(IxDyn(&shape)).expect("one per channel"));
            let var = Tensor::from_array(var.into_shape_with_order(IxDyn(&shape)).expect("one per channel"));
            (x - &mean, var)
        };
        let normalised = centred / (var + eps).sqrt();
        normalised * self.weight.reshape(&shape) + self.bias.reshape(&shape)
    }
    fn describe(&self) -> String {
        format!("batchnorm {}", self.weight.len())
    }
    fn set_training(&mut self, training: bool) {
        self.training = training;
    }
    fn visit_buffers(&self, path: &mut String, f: &mut dyn FnMut(&str, ArrayD<T>)) {
        let (mean, var) = self.running();
        with_name(path, "running_mean", false, |p| f(p, mean));
        with_name(path, "running_var", false, |p| f(p, var));
        let count = T::from_f64_lossy(self.num_batches_tracked() as f64);
        with_name(path, "num_batches_tracked", false, |p| f(p, ArrayD::from_elem(IxDyn(&[]), count)));
    }
    fn load_buffers(&mut self, path: &mut String, values: &HashMap<String, ArrayD<T>>) {
        let mut running = self.running.write().expect("not poisoned");
        if let Some(v) = with_name(path, "running_mean", false, |p| values.get(p.as_str()).cloned()) {
            running.0 = v;
        }
        if let Some(v) = with_name(path, "running_var", false, |p| values.get(p.as_str()).cloned()) {
            running.1 = v;
        }
        if let Some(v) = with_name(path, "num_batches_tracked", false, |p| values.get(p.as_str()).cloned()) {
            let count = v.iter().next().map_or(0.0, |c| c.to_f64_lossless());
            self.batches_tracked
                .store(if count.is_finite() && count > 0.0 { count as u64 } else { 0 }, Ordering::Relaxed);
        }
    }
    crate::parameters!(T: weight, bias);
}

/// Layer normalisation over the trailing axes: each example's features normalised to mean 0
/// and variance 1 (the biased variance), then scaled by `weight` and shifted by `bias`
/// (PyTorch's `LayerNorm`, whose `normalized_shape` is the weight's shape); the same in
/// training and evaluation.
///
/// ```
/// use adjoint::nn::{LayerNorm, Module};
/// use adjoint::Tensor;
/// // PyTorch: nn.LayerNorm([4, 5]) over [N, C, 4, 5]
/// let norm = LayerNorm::<f64>::with_shape(&[4, 5]);
/// let y = norm.forward(&Tensor::from_vec((0..120).map(f64::from).collect(), &[2, 3, 4, 5]));
/// let first: f64 = y.to_vec()[..20].iter().sum();
/// assert!(first.abs() < 1e-9); // each [4, 5] block has mean 0
/// ```
pub struct LayerNorm<T: Element> {
    /// `normalized_shape`
    pub weight: Tensor<T>,
    /// `normalized_shape`
    pub bias: Tensor<T>,
    /// ε
    pub eps: f64,
}

impl<T: Element> LayerNorm<T> {
    /// Layer norm over the last axis of `features` (γ = 1, β = 0, ε = 1e-5).
    pub fn new(features: usize) -> Self {
        Self::with_shape(&[features])
    }

    /// Layer norm over the trailing axes of `shape` (PyTorch's `normalized_shape`).
    ///
    /// # Panics
    /// If `shape` is empty.
    pub fn with_shape(shape: &[usize]) -> Self {
        assert!(!shape.is_empty(), "LayerNorm::with_shape: normalized_shape must have at least one axis");
        LayerNorm { weight: Tensor::ones(shape).requires_grad(), bias: Tensor::zeros(shape).requires_grad(), eps: 1e-5 }
    }
}

impl<T: Element> Module<T> for LayerNorm<T> {
    fn forward(&self, x: &Tensor<T>) -> Tensor<T> {
        let normalized = self.weight.shape();
        let k = normalized.len();
        assert!(
            x.ndim() >= k && &x.shape()[x.ndim() - k..] == normalized,
            "layer_norm: input of shape {:?} does not end in {normalized:?}",
            x.shape()
        );
        let axes: Vec<isize> = (-(k as isize)..0).collect();
        let centred = x - &x.mean(&axes[..], true);
        let var = centred.sqr().mean(&axes[..], true);
        let eps = Tensor::scalar(T::from_f64_lossy(self.eps));
        centred / (var + eps).sqrt() * &self.weight + &self.bias
    }
    fn describe(&self) -> String {
        match self.weight.shape() {
            [f] => format!("layernorm {f}"),
            shape => format!("layernorm {shape:?}"),
        }
    }
    crate::parameters!(T: weight, bias);
}
