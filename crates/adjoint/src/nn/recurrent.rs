//! Sequences: [`Embedding`], and the recurrent layers [`Recurrent`] (Elman RNN, LSTM, GRU)
//! over batch-first sequences `[N, L, features]`. A layer's whole sequence is one primitive
//! with a fused backward through time for ordinary training; recorded backward passes and
//! forward mode differentiate the same loop written with tensor operations, so every order
//! is exact (see `ops::recurrent`).
//!
//! Parameter names, shapes and gate orders are PyTorch's (`weight_ih_l0` `[gates·H, in]`,
//! `weight_hh_l0` `[gates·H, H]`, `bias_ih_l0`, `bias_hh_l0`; LSTM gates i, f, g, o; GRU
//! gates r, z, n), so state dicts load into `nn.LSTM(batch_first=True)` and the others.

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::{Init, Module};
use crate::ops::Cell;
use crate::tensor::{Element, Tensor};

/// Rows of a table picked by integer ids (PyTorch's `nn.Embedding`): ids `[…]` → `[…, dim]`.
/// Ids are given as integers ([`Embedding::ids`], [`Embedding::lookup`]) or, through
/// [`Module::forward`], as whole numbers in a tensor.
///
/// ```
/// use adjoint::nn::Embedding;
/// use adjoint::ndarray::array;
/// let table = Embedding::<f32>::new(10, 4, &mut adjoint::rand::thread_rng()).padding_idx(0);
/// let x = table.ids(&array![[3usize, 1, 0], [0, 0, 9]].into_dyn()); // [2, 3, 4]
/// assert_eq!(x.shape(), &[2, 3, 4]);
/// assert!(x.to_vec()[8..12].iter().all(|&v| v == 0.0)); // the padding id's row is zeros
/// ```
pub struct Embedding<T: Element> {
    /// `[count, dim]`
    pub weight: Tensor<T>,
    /// The id whose row is kept at zero and gets no gradient (PyTorch's `padding_idx`).
    pub padding_idx: Option<usize>,
}

impl<T: Element> Embedding<T> {
    /// A table of `count` vectors of `dim`, drawn from N(0, 1) as PyTorch's.
    pub fn new(count: usize, dim: usize, rng: &mut impl Rng) -> Self {
        let w = Init::Normal { std: 1.0 }.sample::<T>(&[count, dim], count, dim, rng);
        Embedding { weight: Tensor::from_array(w).requires_grad(), padding_idx: None }
    }

    /// The same table with `id`'s row set to zeros and kept out of training: looking it up
    /// gives zeros and passes no gradient to the row (PyTorch's `padding_idx`).
    ///
    /// # Panics
    /// If `id` is not below the table's size.
    pub fn padding_idx(mut self, id: usize) -> Self {
        let count = self.weight.shape()[0];
        assert!(id < count, "embedding: padding_idx {id} is not below the table's {count} rows");
        self.weight.update(|mut w| w.index_axis_mut(ndarray::Axis(0), id).fill(T::zero()));
        self.padding_idx = Some(id);
        self
    }

    /// The vectors of `ids`, `[ids.len(), dim]`.
    ///
    /// # Panics
    /// If an id is not below the table's size.
    #[track_caller]
    pub fn lookup(&self, ids: &[usize]) -> Tensor<T> {
        let count = self.weight.shape()[0];
        if let Some(bad) = ids.iter().find(|&&id| id >= count) {
            panic!("embedding: id {bad} is not below the table's {count} rows");
        }
        let rows = self.weight.index_select(0, ids);
        match self.padding_idx {
            // Zeros, by a constant mask, so that no gradient reaches the padding row even if
            // an optimiser's weight decay moved it.
            Some(pad) if ids.contains(&pad) => {
                let keep: Vec<T> = ids.iter().map(|&id| if id == pad { T::zero() } else { T::one() }).collect();
                rows * Tensor::from_vec(keep, &[ids.len(), 1])
            }
            _ => rows,
        }
    }

    /// The vectors of integer `ids` of any shape, `[…, dim]`.
    ///
    /// # Panics
    /// If an id is not below the table's size.
    #[track_caller]
    pub fn ids(&self, ids: &ndarray::ArrayD<usize>) -> Tensor<T> {
        let flat: Vec<usize> = ids.iter().copied().collect();
        let mut shape = ids.shape().to_vec();
        shape.push(self.weight.shape()[1]);
        self.lookup(&flat).reshape(&shape)
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
                    f >= 0.0 && f.fract() == 0.0 && f < count as f64,
                    "embedding: id {f} is not a whole number below the table's {count} rows"
                );
                f as usize
            })
            .collect();
        self.ids(&ndarray::ArrayD::from_shape_vec(ids.shape(), picked).expect("one id per element"))
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
    /// Elman with ReLU: h′ = max(W_ih x + b_ih + W_hh h + b_hh, 0) (PyTorch's
    /// `nonlinearity="relu"`).
    RnnRelu,
    /// Long short-term memory: gates i, f, g, o; c′ = f⊙c + i⊙g, h′ = o⊙tanh(c′).
    Lstm,
    /// Gated recurrent unit: gates r, z, n; h′ = (1 − z)⊙n + z⊙h.
    Gru,
}

impl CellKind {
    /// Gate blocks in the weights (1, 4 or 3).
    pub fn gates(self) -> usize {
        match self {
            CellKind::Rnn | CellKind::RnnRelu => 1,
            CellKind::Lstm => 4,
            CellKind::Gru => 3,
        }
    }

    /// The name in the layer language (`rnn`, `rnn-relu`, `lstm`, `gru`).
    pub fn name(self) -> &'static str {
        match self {
            CellKind::Rnn => "rnn",
            CellKind::RnnRelu => "rnn-relu",
            CellKind::Lstm => "lstm",
            CellKind::Gru => "gru",
        }
    }

    /// The primitive that runs this cell over a sequence.
    pub fn cell(self) -> Cell {
        match self {
            CellKind::Rnn => Cell::Tanh,
            CellKind::RnnRelu => Cell::Relu,
            CellKind::Lstm => Cell::Lstm,
            CellKind::Gru => Cell::Gru,
        }
    }
}

/// A recurrent layer's state between calls: the hidden state `h` `[N, H]` and, for the
/// LSTM, the cell state `c` `[N, H]` (PyTorch's `(h_n, c_n)` for one layer).
#[derive(Clone, Debug)]
pub struct RecurrentState<T: Element> {
    /// The hidden state `[N, H]`.
    pub h: Tensor<T>,
    /// The LSTM's cell state `[N, H]`; `None` for the other cells.
    pub c: Option<Tensor<T>>,
}

impl<T: Element> RecurrentState<T> {
    /// The same state cut off from the graph, for truncated back-propagation through time:
    /// gradients of later chunks stop here.
    pub fn detach(&self) -> Self {
        RecurrentState { h: self.h.detach(), c: self.c.as_ref().map(Tensor::detach) }
    }
}

/// A one-layer recurrent network over batch-first sequences `[N, L, in]`, with PyTorch's
/// equations, gate order and parameter names (`weight_ih_l0`, …), so state dicts load.
///
/// [`Module::forward`] starts from a zero state and gives the last hidden state `[N, H]`
/// when `last_only` (for classifying a sequence) and every step's `[N, L, H]` otherwise.
/// [`Recurrent::forward_with_state`] takes and returns the state (`lstm(x, (h0, c0))` →
/// `(out, (h_n, c_n))`), and [`Recurrent::step`] runs one step (as `LSTMCell`), for
/// sampling and truncated back-propagation through time. An input of `[N, 1, L, in]`
/// (one-channel images: rows as time steps) is read as `[N, L, in]`.
///
/// The whole sequence is one primitive (`Tensor::recurrent_sequence`): one product for
/// the input's share of every gate over all steps, one small product per step for the
/// state's share, the gate arithmetic fused, and a fused backward through time.
///
/// ```
/// use adjoint::nn::{CellKind, Recurrent};
/// use adjoint::Tensor;
/// use rand::SeedableRng;
/// let lstm = Recurrent::<f32>::new(CellKind::Lstm, 3, 8, false, &mut rand::rngs::StdRng::seed_from_u64(0));
/// let x = Tensor::zeros(&[2, 5, 3]);
/// let (out, state) = lstm.forward_with_state(&x, None);
/// assert_eq!(out.shape(), [2, 5, 8]);
/// // Go on where the sequence stopped, one step at a time.
/// let next = lstm.step(&Tensor::zeros(&[2, 3]), Some(&state));
/// assert_eq!(next.h.shape(), [2, 8]);
/// assert!(next.c.is_some());
/// ```
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

    /// A zero state for a batch of `batch` sequences.
    pub fn zero_state(&self, batch: usize) -> RecurrentState<T> {
        let h = self.hidden();
        RecurrentState {
            h: Tensor::zeros(&[batch, h]),
            c: (self.kind == CellKind::Lstm).then(|| Tensor::zeros(&[batch, h])),
        }
    }

    /// Every step's hidden state `[N, L, H]` and the last one `[N, H]`, from a zero state.
    ///
    /// # Panics
    /// If the input is not `[N, L, in]` (or `[N, 1, L, in]`) with this layer's `in`.
    #[track_caller]
    pub fn sequence(&self, x: &Tensor<T>) -> (Tensor<T>, Tensor<T>) {
        let (all, state) = self.forward_with_state(x, None);
        (all, state.h)
    }

    /// Every step's hidden state `[N, L, H]` and the final state, starting from `state`
    /// (zeros when `None`), as PyTorch's `lstm(x, (h0, c0))` → `(out, (h_n, c_n))`. For
    /// an empty sequence the final state is the initial one.
    ///
    /// # Panics
    /// If the input is not `[N, L, in]` (or `[N, 1, L, in]`) with this layer's `in`, or the
    /// state is not `[N, H]` (with a cell state exactly for the LSTM).
    #[track_caller]
    pub fn forward_with_state(
        &self,
        x: &Tensor<T>,
        state: Option<&RecurrentState<T>>,
    ) -> (Tensor<T>, RecurrentState<T>) {
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
        let initial = match state {
            Some(s) => {
                let lstm = self.kind == CellKind::Lstm;
                assert!(
                    s.c.is_some() == lstm,
                    "{}: a state {} a cell state (only the LSTM's has one)",
                    self.kind.name(),
                    if s.c.is_some() { "with" } else { "without" }
                );
                let fits = |t: &Tensor<T>| t.shape() == [n, h];
                assert!(
                    fits(&s.h) && s.c.as_ref().is_none_or(fits),
                    "{}: a state of shape {:?}{} for a batch of {n} and {h} hidden units: expected [{n}, {h}] \
                     (one layer: no leading layer axis)",
                    self.kind.name(),
                    s.h.shape(),
                    s.c.as_ref().map_or(String::new(), |c| format!(" (cell {:?})", c.shape()))
                );
                s.clone()
            }
            None => self.zero_state(n),
        };
        if steps == 0 {
            return (Tensor::zeros(&[n, 0, h]), initial);
        }
        let rows = self.kind.gates() * h;
        // The input's share of every gate, for all steps in one product.
        let projected = x
            .reshape(&[n * steps, inputs])
            .linear(&self.weight_ih_l0, Some(&self.bias_ih_l0))
            .reshape(&[n, steps, rows]);
        let mut starts = vec![&initial.h];
        starts.extend(initial.c.as_ref());
        let packed =
            Tensor::recurrent_sequence(self.kind.cell(), &projected, &self.weight_hh_l0, &self.bias_hh_l0, &starts);
        let last = |block: usize| packed.narrow(1, steps - 1, 1).narrow(2, block * h, h).reshape(&[n, h]);
        let (all, c) = match self.kind {
            CellKind::Lstm => (packed.narrow(2, 0, h), Some(last(1))),
            _ => (packed.clone(), None),
        };
        (all, RecurrentState { h: last(0), c })
    }

    /// One step: the input `[N, in]` of one time step and the state before it (zeros when
    /// `None`) give the state after it; its `h` is the step's output (PyTorch's `LSTMCell`,
    /// `GRUCell`, `RNNCell`).
    ///
    /// # Panics
    /// As [`Recurrent::forward_with_state`], for an input that is not `[N, in]`.
    #[track_caller]
    pub fn step(&self, x: &Tensor<T>, state: Option<&RecurrentState<T>>) -> RecurrentState<T> {
        let inputs = self.weight_ih_l0.shape()[1];
        assert!(
            x.ndim() == 2 && x.shape()[1] == inputs,
            "{}: one step's input of shape {:?} is not [batch, {inputs}]",
            self.kind.name(),
            x.shape()
        );
        let s = x.shape();
        self.forward_with_state(&x.reshape(&[s[0], 1, s[1]]), state).1
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
    fn forward_carrying(
        &self,
        x: &Tensor<T>,
        state: Option<&RecurrentState<T>>,
    ) -> Option<(Tensor<T>, RecurrentState<T>)> {
        let (all, state) = self.forward_with_state(x, state);
        Some((if self.last_only { state.h.clone() } else { all }, state))
    }
    crate::parameters!(T: weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0);
}
