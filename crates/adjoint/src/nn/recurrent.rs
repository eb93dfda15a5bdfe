//! Sequences: [`Embedding`], and the recurrent layers [`Recurrent`] (Elman RNN, LSTM, GRU)
//! over batch-first sequences `[N, L, features]`, trained by back-propagation through time
//! on the ordinary graph: each step's operations are recorded like any others, so the
//! reverse sweep walks back through time by itself.
//!
//! Parameter names, shapes and gate orders are PyTorch's (`weight_ih_l0` `[gates·H, in]`,
//! `weight_hh_l0` `[gates·H, H]`, `bias_ih_l0`, `bias_hh_l0`; LSTM gates i, f, g, o; GRU
//! gates r, z, n), so state dicts load into `nn.LSTM(batch_first=True)` and the others.

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::{Init, Module};
use crate::tensor::{Element, Tensor};

/// Rows of a table picked by integer ids (PyTorch's `nn.Embedding`): ids `[…]` (whole
/// numbers stored in the tensor) → `[…, dim]`.
pub struct Embedding<T: Element> {
    /// `[count, dim]`
    pub weight: Tensor<T>,
}

impl<T: Element> Embedding<T> {
    /// A table of `count` vectors of `dim`, drawn from N(0, 1) as PyTorch's.
    pub fn new(count: usize, dim: usize, rng: &mut impl Rng) -> Self {
        let w = Init::Normal { std: 1.0 }.sample::<T>(&[count, dim], count, dim, rng);
        Embedding { weight: Tensor::from_array(w).requires_grad() }
    }

    /// The vectors of `ids`, `[ids.len(), dim]`.
    ///
    /// # Panics
    /// If an id is not below the table's size.
    pub fn lookup(&self, ids: &[usize]) -> Tensor<T> {
        self.weight.index_select(0, ids)
    }
}

impl<T: Element> Module<T> for Embedding<T> {
    /// Ids as whole numbers in a tensor of any shape.
    ///
    /// # Panics
    /// If an element is not a whole number below the table's size.
    fn forward(&self, ids: &Tensor<T>) -> Tensor<T> {
        let count = self.weight.shape()[0];
        let picked: Vec<usize> = ids
            .view()
            .iter()
            .map(|&v| {
                let f = v.to_f64_lossless();
                assert!(
                    f >= 0.0 && f.fract() == 0.0 && (f as usize) < count,
                    "embedding: id {f} is not a whole number below the table's {count} rows"
                );
                f as usize
            })
            .collect();
        let mut shape = ids.shape().to_vec();
        shape.push(self.weight.shape()[1]);
        self.lookup(&picked).reshape(&shape)
    }
    fn describe(&self) -> String {
        format!("embedding {}×{}", self.weight.shape()[0], self.weight.shape()[1])
    }
    crate::parameters!(T: weight);
}

/// Which recurrent cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CellKind {
    /// Elman: h′ = tanh(W_ih x + b_ih + W_hh h + b_hh).
    Rnn,
    /// Long short-term memory: gates i, f, g, o; c′ = f⊙c + i⊙g, h′ = o⊙tanh(c′).
    Lstm,
    /// Gated recurrent unit: gates r, z, n; h′ = (1 − z)⊙n + z⊙h.
    Gru,
}

impl CellKind {
    /// Gate blocks in the weights (1, 4 or 3).
    pub fn gates(self) -> usize {
        match self {
            CellKind::Rnn => 1,
            CellKind::Lstm => 4,
            CellKind::Gru => 3,
        }
    }

    /// The name in the layer language (`rnn`, `lstm`, `gru`).
    pub fn name(self) -> &'static str {
        match self {
            CellKind::Rnn => "rnn",
            CellKind::Lstm => "lstm",
            CellKind::Gru => "gru",
        }
    }
}

/// A one-layer recurrent network over batch-first sequences `[N, L, in]`, starting from a
/// zero state. [`Module::forward`] gives the last hidden state `[N, H]` when `last_only`
/// (for classifying a sequence) and every step's `[N, L, H]` otherwise. An input of
/// `[N, 1, L, in]` (one-channel images: rows as time steps) is read as `[N, L, in]`.
pub struct Recurrent<T: Element> {
    /// The cell.
    pub kind: CellKind,
    /// `[gates·H, in]`
    pub weight_ih_l0: Tensor<T>,
    /// `[gates·H, H]`
    pub weight_hh_l0: Tensor<T>,
    /// `[gates·H]`
    pub bias_ih_l0: Tensor<T>,
    /// `[gates·H]`
    pub bias_hh_l0: Tensor<T>,
    /// Whether `forward` returns only the last hidden state.
    pub last_only: bool,
}

impl<T: Element> Recurrent<T> {
    /// A layer of `hidden` units over `inputs` features, every weight and bias drawn from
    /// U(−1/√H, 1/√H) as PyTorch's.
    pub fn new(kind: CellKind, inputs: usize, hidden: usize, last_only: bool, rng: &mut impl Rng) -> Self {
        let bound = 1.0 / (hidden.max(1) as f64).sqrt();
        let rows = kind.gates() * hidden;
        let mut draw = |shape: &[usize]| {
            let n: usize = shape.iter().product();
            let values = (0..n).map(|_| T::from_f64_lossy(rng.random_range(-bound..=bound))).collect();
            Tensor::from_vec(values, shape).requires_grad()
        };
        Recurrent {
            kind,
            weight_ih_l0: draw(&[rows, inputs]),
            weight_hh_l0: draw(&[rows, hidden]),
            bias_ih_l0: draw(&[rows]),
            bias_hh_l0: draw(&[rows]),
            last_only,
        }
    }

    /// Hidden units.
    pub fn hidden(&self) -> usize {
        self.weight_hh_l0.shape()[1]
    }

    /// Every step's hidden state `[N, L, H]` and the last one `[N, H]`.
    ///
    /// # Panics
    /// If the input is not `[N, L, in]` (or `[N, 1, L, in]`) with this layer's `in`.
    pub fn sequence(&self, x: &Tensor<T>) -> (Tensor<T>, Tensor<T>) {
        let x = if x.ndim() == 4 && x.shape()[1] == 1 {
            let s = x.shape();
            x.reshape(&[s[0], s[2], s[3]])
        } else {
            x.clone()
        };
        let inputs = self.weight_ih_l0.shape()[1];
        assert!(
            x.ndim() == 3 && x.shape()[2] == inputs,
            "{}: input of shape {:?} is not [batch, steps, {inputs}]",
            self.kind.name(),
            x.shape()
        );
        let (n, steps, h) = (x.shape()[0], x.shape()[1], self.hidden());
        let rows = self.kind.gates() * h;
        // The input's share of every gate, for all steps in one product.
        let projected = x
            .reshape(&[n * steps, inputs])
            .linear(&self.weight_ih_l0, Some(&self.bias_ih_l0))
            .reshape(&[n, steps, rows]);
        let mut state = Tensor::zeros(&[n, h]);
        let mut cell = Tensor::zeros(&[n, h]);
        let mut outputs = Vec::with_capacity(steps);
        for t in 0..steps {
            let from_input = projected.narrow(1, t, 1).reshape(&[n, rows]);
            let from_state = state.linear(&self.weight_hh_l0, Some(&self.bias_hh_l0));
            let gate = |g: &Tensor<T>, k: usize| g.narrow(1, k * h, h);
            state = match self.kind {
                CellKind::Rnn => (from_input + from_state).tanh(),
                CellKind::Lstm => {
                    let z = from_input + from_state;
                    let (i, f) = (gate(&z, 0).sigmoid(), gate(&z, 1).sigmoid());
                    let (g, o) = (gate(&z, 2).tanh(), gate(&z, 3).sigmoid());
                    cell = f * &cell + i * g;
                    o * cell.tanh()
                }
                CellKind::Gru => {
                    let r = (gate(&from_input, 0) + gate(&from_state, 0)).sigmoid();
                    let z = (gate(&from_input, 1) + gate(&from_state, 1)).sigmoid();
                    let candidate = (gate(&from_input, 2) + r * gate(&from_state, 2)).tanh();
                    // (1 − z)⊙n + z⊙h = n + z⊙(h − n)
                    &candidate + &(z * (&state - &candidate))
                }
            };
            outputs.push(state.clone());
        }
        let refs: Vec<&Tensor<T>> = outputs.iter().collect();
        (Tensor::stack(&refs, 1), state)
    }
}

impl<T: Element> Module<T> for Recurrent<T> {
    fn forward(&self, x: &Tensor<T>) -> Tensor<T> {
        let (all, last) = self.sequence(x);
        if self.last_only {
            last
        } else {
            all
        }
    }
    fn describe(&self) -> String {
        format!("{} {}→{}", self.kind.name(), self.weight_ih_l0.shape()[1], self.hidden())
    }
    crate::parameters!(T: weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0);
}
