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

use super::{Dropout, Init, Module};
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
    /// Rows looked up are renormalised to this norm when theirs is larger (PyTorch's
    /// `max_norm`; see [`Embedding::max_norm`]).
    max_norm: Option<(f64, f64)>,
    /// Per row, whether it was looked up since the weight was last renormalised in place
    /// (one flag per row, so inference that never steps keeps it bounded).
    pending: std::sync::Mutex<Vec<bool>>,
}

impl<T: Element> Embedding<T> {
    /// A table of `count` vectors of `dim`, drawn from N(0, 1) as PyTorch's.
    pub fn new(count: usize, dim: usize, rng: &mut impl Rng) -> Self {
        let w = Init::Normal { std: 1.0 }.sample::<T>(&[count, dim], count, dim, rng);
        Embedding {
            weight: Tensor::from_array(w).requires_grad(),
            padding_idx: None,
            max_norm: None,
            pending: Default::default(),
        }
    }

    /// The same table with PyTorch's `max_norm` and `norm_type`: a row looked up whose
    /// `norm_type`-norm exceeds `max_norm` is scaled by `max_norm / (norm + 1e-7)`.
    ///
    /// PyTorch rescales those rows of the weight in place, outside the graph, before the
    /// lookup. Here the lookup gives the rescaled rows with the gradient PyTorch gives (the
    /// upstream gradient, unscaled), and the weight itself is rescaled the next time it is
    /// visited mutably — by an optimiser step, as in PyTorch before its step, or a load — so
    /// training follows PyTorch's step for step. A weight read between a lookup and the next
    /// step (a state dict saved then) still holds the rows as they were.
    ///
    /// ```
    /// use adjoint::nn::Embedding;
    /// let table = Embedding::<f64>::new(5, 3, &mut adjoint::rand::thread_rng()).max_norm(0.5, 2.0);
    /// let rows = table.lookup(&[1, 4, 1]).to_vec();
    /// for row in rows.chunks(3) {
    ///     assert!(row.iter().map(|v| v * v).sum::<f64>().sqrt() <= 0.5);
    /// }
    /// ```
    ///
    /// # Panics
    /// If `max_norm` is not positive or `norm_type` is not a positive number.
    pub fn max_norm(mut self, max_norm: f64, norm_type: f64) -> Self {
        assert!(
            max_norm > 0.0 && norm_type > 0.0 && !norm_type.is_nan(),
            "embedding: max_norm {max_norm} and norm_type {norm_type} must be positive"
        );
        self.max_norm = Some((max_norm, norm_type));
        self
    }

    /// Each row's scale under `max_norm` (1 for rows within it).
    fn renorm_scale<'a>(row: impl Iterator<Item = &'a T>, max_norm: f64, norm_type: f64) -> f64 {
        let magnitudes = row.map(|v| v.to_f64_lossless().abs());
        let norm = if norm_type.is_infinite() {
            magnitudes.fold(0.0f64, f64::max)
        } else {
            magnitudes.map(|v| v.powf(norm_type)).sum::<f64>().powf(1.0 / norm_type)
        };
        if norm > max_norm {
            max_norm / (norm + 1e-7)
        } else {
            1.0
        }
    }

    /// Rescales the rows looked up since the last call, in place (what PyTorch does in
    /// its forward).
    fn apply_pending_renorm(&mut self) {
        let Some((max_norm, norm_type)) = self.max_norm else { return };
        let pending = std::mem::take(self.pending.get_mut().unwrap_or_else(|e| e.into_inner()));
        if !pending.contains(&true) {
            return;
        }
        self.weight.update(|mut w| {
            for id in pending.iter().enumerate().filter_map(|(id, &seen)| seen.then_some(id)) {
                let scale = Self::renorm_scale(w.index_axis(ndarray::Axis(0), id).iter(), max_norm, norm_type);
                if scale != 1.0 {
                    w.index_axis_mut(ndarray::Axis(0), id)
                        .mapv_inplace(|v| T::from_f64_lossy(v.to_f64_lossless() * scale));
                }
            }
        });
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
        let mut rows = self.weight.index_select(0, ids);
        if let Some((max_norm, norm_type)) = self.max_norm {
            // The rescaled rows, with the upstream gradient passed to the weight unscaled (as
            // PyTorch's in-place renormalisation outside the graph gives).
            let view = rows.view();
            let mut shift = ndarray::Array2::<T>::zeros((ids.len(), view.shape()[1]));
            for (k, row) in view.outer_iter().enumerate() {
                let scale = Self::renorm_scale(row.iter(), max_norm, norm_type);
                if scale != 1.0 {
                    for (s, &v) in shift.row_mut(k).iter_mut().zip(row) {
                        *s = T::from_f64_lossy(v.to_f64_lossless() * scale) - v;
                    }
                }
            }
            drop(view);
            rows = rows + Tensor::from_array(shift.into_dyn());
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.resize(count, false);
            ids.iter().for_each(|&id| pending[id] = true);
        }
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
    fn visit<'a>(&'a self, path: &mut String, f: &mut dyn FnMut(&str, &'a Tensor<T>)) {
        super::module::visit_tensor(&self.weight, path, "weight", f);
    }
    fn visit_mut(&mut self, path: &mut String, f: &mut dyn FnMut(&str, &mut Tensor<T>)) {
        // PyTorch rescaled these rows in its forward; they are rescaled before anyone
        // changes the weight (an optimiser's step), so the step sees what PyTorch's sees.
        self.apply_pending_renorm();
        super::module::visit_tensor_mut(&mut self.weight, path, "weight", f);
    }
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

/// The options of a recurrent module beyond its cell and sizes, with PyTorch's names and
/// defaults (`num_layers = 1`, `bidirectional = False`, `dropout = 0`, `proj_size = 0`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecurrentOptions {
    /// Layers stacked in one module, each reading the one below's every step (at least 1).
    pub num_layers: usize,
    /// Whether each layer also reads the sequence backwards; its outputs are the forward
    /// and backward directions' states side by side (`[…, 2·H]`).
    pub bidirectional: bool,
    /// Dropout on every layer's output but the last, in training (in [0, 1)).
    pub dropout: f64,
    /// LSTM only: when not 0, each step's hidden state is projected to this width,
    /// h′ = W_hr·(o⊙tanh(c′)) with `weight_hr_l{k}` `[P, H]`, and h is P wide everywhere (in
    /// the outputs, the state and `weight_hh` `[4·H, P]`); the cell state stays H wide.
    /// Below the hidden size, as PyTorch requires.
    pub proj_size: usize,
}

impl Default for RecurrentOptions {
    fn default() -> Self {
        RecurrentOptions { num_layers: 1, bidirectional: false, dropout: 0.0, proj_size: 0 }
    }
}

/// One layer's weights in one direction.
pub struct CellWeights<T: Element> {
    /// `[gates·H, in]`
    pub weight_ih: Tensor<T>,
    /// `[gates·H, H]`, or `[4·H, P]` with a projection
    pub weight_hh: Tensor<T>,
    /// `[gates·H]`
    pub bias_ih: Tensor<T>,
    /// `[gates·H]`
    pub bias_hh: Tensor<T>,
    /// The LSTM's projection of the hidden state, `[P, H]` (PyTorch's `weight_hr_l{k}`), or
    /// `None` without one.
    pub weight_hr: Option<Tensor<T>>,
}

impl<T: Element> CellWeights<T> {
    /// Every weight and bias drawn from U(−1/√H, 1/√H), in PyTorch's order; a projection
    /// to `proj` when it is not 0.
    fn new(kind: CellKind, inputs: usize, hidden: usize, proj: usize, rng: &mut impl Rng) -> Self {
        let bound = 1.0 / (hidden.max(1) as f64).sqrt();
        let rows = kind.gates() * hidden;
        let mut draw = |shape: &[usize]| {
            let n: usize = shape.iter().product();
            let values = (0..n).map(|_| T::from_f64_lossy(rng.random_range(-bound..=bound))).collect();
            Tensor::from_vec(values, shape).requires_grad()
        };
        let width = if proj > 0 { proj } else { hidden };
        CellWeights {
            weight_ih: draw(&[rows, inputs]),
            weight_hh: draw(&[rows, width]),
            bias_ih: draw(&[rows]),
            bias_hh: draw(&[rows]),
            weight_hr: (proj > 0).then(|| draw(&[proj, hidden])),
        }
    }
}

/// A recurrent network over batch-first sequences `[N, L, in]` (PyTorch's `nn.RNN`,
/// `nn.LSTM` and `nn.GRU` with `batch_first=True`): one layer by default, or several stacked
/// with dropout between them, in one direction or both. Equations, gate order, parameter
/// names and layouts are PyTorch's (`weight_ih_l0`, `weight_hh_l0`, `bias_ih_l0`,
/// `bias_hh_l0`, then `…_l0_reverse` for the backward direction, `…_l1` for the next layer,
/// whose input is `D·H` wide with D = 2 directions or 1), so state dicts load both ways.
///
/// [`Module::forward`] starts from a zero state and gives every step's output `[N, L, D·H]`
/// (the last layer's states, both directions side by side), or, when `last_only` (for
/// classifying a sequence), the last layer's final states `[N, D·H]` (the forward
/// direction's after the last step, the backward direction's after the first: PyTorch's
/// `cat(h_n[-2], h_n[-1])`). [`Recurrent::forward_with_state`] takes and returns the state
/// (`lstm(x, (h0, c0))` → `(out, (h_n, c_n))`), and [`Recurrent::step`] runs one step (as
/// `LSTMCell`), for sampling and truncated back-propagation through time. An input of
/// `[N, 1, L, in]` (one-channel images: rows as time steps) is read as `[N, L, in]`.
///
/// Each layer's direction is one primitive (`Tensor::recurrent_sequence`): one product
/// for the input's share of every gate over all steps, one small product per step for the
/// state's share, the gate arithmetic fused, and a fused backward through time. An LSTM
/// with a projection (`proj_size`, `weight_hr_l{k}`) runs its steps as tensor operations
/// instead; its h is P wide in the outputs and states, its c H wide.
///
/// ```
/// use adjoint::nn::{CellKind, Recurrent, RecurrentOptions};
/// use adjoint::Tensor;
/// use rand::SeedableRng;
/// let mut rng = rand::rngs::StdRng::seed_from_u64(0);
/// let lstm = Recurrent::<f32>::new(CellKind::Lstm, 3, 8, false, &mut rng);
/// let x = Tensor::zeros(&[2, 5, 3]);
/// let (out, state) = lstm.forward_with_state(&x, None);
/// assert_eq!(out.shape(), [2, 5, 8]);
/// // Go on where the sequence stopped, one step at a time.
/// let next = lstm.step(&Tensor::zeros(&[2, 3]), Some(&state));
/// assert_eq!(next.h.shape(), [2, 8]);
/// assert!(next.c.is_some());
///
/// // nn.GRU(3, 8, num_layers=2, bidirectional=True, batch_first=True)
/// let options = RecurrentOptions { num_layers: 2, bidirectional: true, ..Default::default() };
/// let gru = Recurrent::<f32>::with_options(CellKind::Gru, 3, 8, options, false, &mut rng);
/// let (out, state) = gru.forward_with_state(&x, None);
/// assert_eq!(out.shape(), [2, 5, 16]);
/// assert_eq!(state.h.shape(), [4, 2, 8]); // [layers·directions, N, H]
///
/// // nn.LSTM(3, 8, num_layers=2, proj_size=5, batch_first=True)
/// let options = RecurrentOptions { num_layers: 2, proj_size: 5, ..Default::default() };
/// let projected = Recurrent::<f32>::with_options(CellKind::Lstm, 3, 8, options, false, &mut rng);
/// let (out, state) = projected.forward_with_state(&x, None);
/// assert_eq!(out.shape(), [2, 5, 5]); // h is projected to 5
/// assert_eq!((state.h.shape(), state.c.unwrap().shape()), (&[2, 2, 5][..], &[2, 2, 8][..]));
/// ```
pub struct Recurrent<T: Element> {
    /// The cell.
    pub kind: CellKind,
    /// The weights of every layer and direction, in PyTorch's order: layer 0 forward,
    /// layer 0 backward (when bidirectional), layer 1 forward, …
    pub cells: Vec<CellWeights<T>>,
    /// Whether each layer reads the sequence in both directions.
    pub bidirectional: bool,
    /// Whether `forward` returns only the final states.
    pub last_only: bool,
    /// The dropout between layers (in training).
    dropout: Dropout,
}

impl<T: Element> Recurrent<T> {
    /// One layer of `hidden` units over `inputs` features, in one direction, every weight and
    /// bias drawn from U(−1/√H, 1/√H) as PyTorch's.
    pub fn new(kind: CellKind, inputs: usize, hidden: usize, last_only: bool, rng: &mut impl Rng) -> Self {
        Self::with_options(kind, inputs, hidden, RecurrentOptions::default(), last_only, rng)
    }

    /// A recurrent network with PyTorch's `num_layers`, `bidirectional` and `dropout`, every
    /// weight and bias drawn from U(−1/√H, 1/√H) as PyTorch's.
    ///
    /// # Panics
    /// If `num_layers` is 0, `dropout` is not in [0, 1), or `proj_size` is not 0 for a cell
    /// other than the LSTM or not below `hidden`.
    pub fn with_options(
        kind: CellKind,
        inputs: usize,
        hidden: usize,
        options: RecurrentOptions,
        last_only: bool,
        rng: &mut impl Rng,
    ) -> Self {
        let RecurrentOptions { num_layers, bidirectional, dropout, proj_size } = options;
        assert!(num_layers > 0, "{}: num_layers must be at least 1", kind.name());
        assert!((0.0..1.0).contains(&dropout), "{}: dropout must be in [0, 1), got {dropout}", kind.name());
        assert!(
            proj_size == 0 || (kind == CellKind::Lstm && proj_size < hidden),
            "{}: proj_size {proj_size} needs an LSTM and a hidden size above it (hidden {hidden})",
            kind.name()
        );
        let directions = if bidirectional { 2 } else { 1 };
        let output = if proj_size > 0 { proj_size } else { hidden };
        let mut cells = Vec::with_capacity(num_layers * directions);
        for layer in 0..num_layers {
            let width = if layer == 0 { inputs } else { directions * output };
            for _ in 0..directions {
                cells.push(CellWeights::new(kind, width, hidden, proj_size, rng));
            }
        }
        // The dropout's seed is drawn only when it drops anything, so that a network without
        // it is drawn from a seed exactly as before.
        let seed = if dropout > 0.0 { rng.random() } else { 0 };
        Recurrent { kind, cells, bidirectional, last_only, dropout: Dropout::new(dropout, seed) }
    }

    /// Hidden units (per direction): the cell state's width.
    pub fn hidden(&self) -> usize {
        self.cells[0].weight_hh.shape()[0] / self.kind.gates()
    }

    /// The width of `h` (per direction): the projection's when there is one, else the
    /// hidden size.
    pub fn output_width(&self) -> usize {
        self.cells[0].weight_hh.shape()[1]
    }

    /// The LSTM's projection size (PyTorch's `proj_size`), 0 without one.
    pub fn proj_size(&self) -> usize {
        self.cells[0].weight_hr.as_ref().map_or(0, |w| w.shape()[0])
    }

    /// Input features.
    pub fn inputs(&self) -> usize {
        self.cells[0].weight_ih.shape()[1]
    }

    /// Layers stacked in this module.
    pub fn num_layers(&self) -> usize {
        self.cells.len() / self.directions()
    }

    /// 2 when bidirectional, else 1.
    pub fn directions(&self) -> usize {
        if self.bidirectional {
            2
        } else {
            1
        }
    }

    /// The dropout probability between layers.
    pub fn dropout(&self) -> f64 {
        self.dropout.p
    }

    /// Whether the state is one layer's `[N, H]` (one layer, one direction) rather than
    /// PyTorch's `[layers·directions, N, H]`.
    fn single(&self) -> bool {
        self.cells.len() == 1
    }

    /// A zero state for a batch of `batch` sequences: `[N, H]` for one layer in one
    /// direction, else `[layers·directions, N, H]` (with a projection, h is P wide).
    pub fn zero_state(&self, batch: usize) -> RecurrentState<T> {
        let lstm = self.kind == CellKind::Lstm;
        RecurrentState {
            h: Tensor::zeros(&self.state_shape(batch, self.output_width())),
            c: lstm.then(|| Tensor::zeros(&self.state_shape(batch, self.hidden()))),
        }
    }

    fn state_shape(&self, batch: usize, width: usize) -> Vec<usize> {
        if self.single() {
            vec![batch, width]
        } else {
            vec![self.cells.len(), batch, width]
        }
    }

    /// Every step's output `[N, L, D·H]` and the last layer's final states `[N, D·H]`, from a
    /// zero state.
    ///
    /// # Panics
    /// If the input is not `[N, L, in]` (or `[N, 1, L, in]`) with this module's `in`.
    #[track_caller]
    pub fn sequence(&self, x: &Tensor<T>) -> (Tensor<T>, Tensor<T>) {
        let (all, state) = self.forward_with_state(x, None);
        (all, self.last_states(&state))
    }

    /// The last layer's final states side by side, `[N, D·H]`.
    fn last_states(&self, state: &RecurrentState<T>) -> Tensor<T> {
        if self.single() {
            return state.h.clone();
        }
        let d = self.directions();
        let finals: Vec<Tensor<T>> = (self.cells.len() - d..self.cells.len())
            .map(|k| state.h.narrow(0, k, 1).reshape(&state.h.shape()[1..]))
            .collect();
        Tensor::concat(&finals.iter().collect::<Vec<_>>(), 1)
    }

    /// Every step's output `[N, L, D·H]` and the final state, starting from `state` (zeros
    /// when `None`), as PyTorch's `lstm(x, (h0, c0))` → `(out, (h_n, c_n))`. States are
    /// `[N, H]` for one layer in one direction and `[layers·directions, N, H]` (PyTorch's
    /// layout) otherwise. For an empty sequence the final state is the initial one.
    ///
    /// # Panics
    /// If the input is not `[N, L, in]` (or `[N, 1, L, in]`) with this module's `in`, or the
    /// state is not of the shape above (with a cell state exactly for the LSTM).
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
        let directions = self.directions();
        assert!(
            !self.cells.is_empty() && self.cells.len().is_multiple_of(directions),
            "{}: {} cell(s) for {directions} direction(s): `cells` must hold layers × directions",
            self.kind.name(),
            self.cells.len()
        );
        let inputs = self.inputs();
        assert!(
            x.ndim() == 3 && x.shape()[2] == inputs,
            "{}: input of shape {:?} is not [batch, steps, {inputs}]",
            self.kind.name(),
            x.shape()
        );
        let (n, steps, h, width) = (x.shape()[0], x.shape()[1], self.hidden(), self.output_width());
        let lstm = self.kind == CellKind::Lstm;
        let initial = match state {
            Some(s) => {
                assert!(
                    s.c.is_some() == lstm,
                    "{}: a state {} a cell state (only the LSTM's has one)",
                    self.kind.name(),
                    if s.c.is_some() { "with" } else { "without" }
                );
                let (shape, cell_shape) = (self.state_shape(n, width), self.state_shape(n, h));
                assert!(
                    s.h.shape() == shape.as_slice() && s.c.as_ref().is_none_or(|c| c.shape() == cell_shape.as_slice()),
                    "{}: a state of shape {:?}{} for a batch of {n}: expected {shape:?}{}{}",
                    self.kind.name(),
                    s.h.shape(),
                    s.c.as_ref().map_or(String::new(), |c| format!(" (cell {:?})", c.shape())),
                    if lstm { format!(" (cell {cell_shape:?})") } else { String::new() },
                    if self.single() {
                        " (one layer: no leading layer axis)"
                    } else {
                        " ([layers·directions, batch, hidden])"
                    }
                );
                s.clone()
            }
            None => self.zero_state(n),
        };
        if steps == 0 {
            return (Tensor::zeros(&[n, 0, self.directions() * width]), initial);
        }
        // One cell's starting state: row k of a stacked state, or the whole of a single one.
        let start = |t: &Tensor<T>, k: usize| {
            if self.single() {
                t.clone()
            } else {
                t.narrow(0, k, 1).reshape(&t.shape()[1..])
            }
        };
        let reversed: Vec<usize> = (0..steps).rev().collect();
        let mut input = x;
        let (mut finals_h, mut finals_c) = (Vec::new(), Vec::new());
        for layer in 0..self.num_layers() {
            if layer > 0 {
                input = Module::forward(&self.dropout, &input);
            }
            let mut outputs = Vec::with_capacity(self.directions());
            for direction in 0..self.directions() {
                let k = layer * self.directions() + direction;
                let read = if direction == 1 { input.index_select(1, &reversed) } else { input.clone() };
                let s0 = RecurrentState { h: start(&initial.h, k), c: initial.c.as_ref().map(|c| start(c, k)) };
                let (all, last) = self.run_cell(&self.cells[k], &read, &s0);
                outputs.push(if direction == 1 { all.index_select(1, &reversed) } else { all });
                finals_h.push(last.h);
                finals_c.extend(last.c);
            }
            input = if outputs.len() == 1 {
                outputs.pop().expect("one direction")
            } else {
                Tensor::concat(&outputs.iter().collect::<Vec<_>>(), 2)
            };
        }
        let gather = |mut finals: Vec<Tensor<T>>| {
            if self.single() {
                finals.pop().expect("one cell")
            } else {
                Tensor::stack(&finals.iter().collect::<Vec<_>>(), 0)
            }
        };
        let c = lstm.then(|| gather(finals_c));
        (input, RecurrentState { h: gather(finals_h), c })
    }

    /// One layer in one direction over `x` `[N, L, in]` (L ≥ 1) from `state` (`[N, H]`).
    fn run_cell(
        &self,
        cell: &CellWeights<T>,
        x: &Tensor<T>,
        state: &RecurrentState<T>,
    ) -> (Tensor<T>, RecurrentState<T>) {
        let (n, steps, inputs) = (x.shape()[0], x.shape()[1], x.shape()[2]);
        let h = self.hidden();
        let rows = self.kind.gates() * h;
        // The input's share of every gate, for all steps in one product.
        let projected =
            x.reshape(&[n * steps, inputs]).linear(&cell.weight_ih, Some(&cell.bias_ih)).reshape(&[n, steps, rows]);
        if let Some(weight_hr) = &cell.weight_hr {
            return projected_lstm(cell, weight_hr, &projected, state);
        }
        let mut starts = vec![&state.h];
        starts.extend(state.c.as_ref());
        let packed = Tensor::recurrent_sequence(self.kind.cell(), &projected, &cell.weight_hh, &cell.bias_hh, &starts);
        let last = |block: usize| packed.narrow(1, steps - 1, 1).narrow(2, block * h, h).reshape(&[n, h]);
        let (all, c) = match self.kind {
            CellKind::Lstm => (packed.narrow(2, 0, h), Some(last(1))),
            _ => (packed.clone(), None),
        };
        (all, RecurrentState { h: last(0), c })
    }

    /// One step: the input `[N, in]` of one time step and the state before it (zeros when
    /// `None`) give the state after it; for one layer in one direction its `h` is the step's
    /// output (PyTorch's `LSTMCell`, `GRUCell`, `RNNCell`). A bidirectional module's backward
    /// direction reads each call's input on its own, so stepping (or carrying state between
    /// pieces of a sequence) continues only its forward direction exactly.
    ///
    /// # Panics
    /// As [`Recurrent::forward_with_state`], for an input that is not `[N, in]`.
    #[track_caller]
    pub fn step(&self, x: &Tensor<T>, state: Option<&RecurrentState<T>>) -> RecurrentState<T> {
        let inputs = self.inputs();
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

/// An LSTM with a projection over `projected` `[N, L, 4·H]` (the input's share of the gates)
/// from `state` (h `[N, P]`, c `[N, H]`): every step's h `[N, L, P]` and the final state.
/// The fused sequence primitive keeps h H wide, so this loop is written with tensor
/// operations (differentiable to any order, slower).
fn projected_lstm<T: Element>(
    cell: &CellWeights<T>,
    weight_hr: &Tensor<T>,
    projected: &Tensor<T>,
    state: &RecurrentState<T>,
) -> (Tensor<T>, RecurrentState<T>) {
    let (n, steps, rows) = (projected.shape()[0], projected.shape()[1], projected.shape()[2]);
    let hidden = rows / 4;
    let mut h = state.h.clone();
    let mut c = state.c.clone().expect("an LSTM state has a cell state");
    let mut outputs = Vec::with_capacity(steps);
    for t in 0..steps {
        let z = projected.narrow(1, t, 1).reshape(&[n, rows]) + h.linear(&cell.weight_hh, Some(&cell.bias_hh));
        let gate = |k: usize| z.narrow(1, k * hidden, hidden);
        c = gate(1).sigmoid() * &c + gate(0).sigmoid() * gate(2).tanh();
        h = (gate(3).sigmoid() * c.tanh()).linear(weight_hr, None);
        outputs.push(h.clone());
    }
    let all = Tensor::stack(&outputs.iter().collect::<Vec<_>>(), 1);
    (all, RecurrentState { h, c: Some(c) })
}

/// The name of a parameter of cell `k` (`weight_ih_l1_reverse`).
fn cell_name(directions: usize, k: usize, what: &str) -> String {
    let suffix = if directions == 2 && k % 2 == 1 { "_reverse" } else { "" };
    format!("{what}_l{}{suffix}", k / directions)
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
        let mut s = format!("{} {}→{}", self.kind.name(), self.inputs(), self.hidden());
        if self.num_layers() > 1 {
            s += &format!(" ×{} layers", self.num_layers());
        }
        if self.bidirectional {
            s += " bidirectional";
        }
        if self.proj_size() > 0 {
            s += &format!(" projected to {}", self.proj_size());
        }
        s
    }
    fn forward_carrying(
        &self,
        x: &Tensor<T>,
        state: Option<&RecurrentState<T>>,
    ) -> Option<(Tensor<T>, RecurrentState<T>)> {
        let (all, state) = self.forward_with_state(x, state);
        Some((if self.last_only { self.last_states(&state) } else { all }, state))
    }
    fn set_training(&mut self, training: bool) {
        Module::<T>::set_training(&mut self.dropout, training);
    }
    fn visit<'a>(&'a self, path: &mut String, f: &mut dyn FnMut(&str, &'a Tensor<T>)) {
        let d = self.directions();
        for (k, cell) in self.cells.iter().enumerate() {
            for (what, t) in [
                ("weight_ih", &cell.weight_ih),
                ("weight_hh", &cell.weight_hh),
                ("bias_ih", &cell.bias_ih),
                ("bias_hh", &cell.bias_hh),
            ] {
                super::module::visit_tensor(t, path, &cell_name(d, k, what), f);
            }
            if let Some(t) = &cell.weight_hr {
                super::module::visit_tensor(t, path, &cell_name(d, k, "weight_hr"), f);
            }
        }
    }
    fn visit_mut(&mut self, path: &mut String, f: &mut dyn FnMut(&str, &mut Tensor<T>)) {
        let d = self.directions();
        for (k, cell) in self.cells.iter_mut().enumerate() {
            for (what, t) in [
                ("weight_ih", &mut cell.weight_ih),
                ("weight_hh", &mut cell.weight_hh),
                ("bias_ih", &mut cell.bias_ih),
                ("bias_hh", &mut cell.bias_hh),
            ] {
                super::module::visit_tensor_mut(t, path, &cell_name(d, k, what), f);
            }
            if let Some(t) = &mut cell.weight_hr {
                super::module::visit_tensor_mut(t, path, &cell_name(d, k, "weight_hr"), f);
            }
        }
    }
}
