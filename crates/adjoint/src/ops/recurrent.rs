//! A recurrent layer's whole sequence as one primitive: the loop over time steps of an Elman
//! (tanh or ReLU), LSTM or GRU cell, with PyTorch's gate order and equations.
//!
//! Inputs, in order: the input's share of every gate for every step, `projected`
//! `[N, L, G·H]` (x·W_ihᵀ + b_ih, one product for the whole sequence, made by the caller);
//! `weight_hh` `[G·H, H]`; `bias_hh` `[G·H]`; the initial state `h0` `[N, H]`; for the LSTM
//! also `c0` `[N, H]`. G is the number of gate blocks (1, 4, 3).
//!
//! Output: every step's state packed as `[N, L, S·H]`, S = 2 for the LSTM (`h_t` then `c_t`
//! along the last axis) and 1 otherwise; callers cut it with `narrow`.
//!
//! How it is differentiated:
//! - first order, not recorded (ordinary training): a fused backward through time in raw
//!   buffers, one small product per step for the state's cotangent and one product for
//!   the whole sequence's weight gradient; gate math in one pass per step. The forward
//!   keeps the gates' activations for it (`[L, N, G·H]`, plus W_hn·h + b_hn for the GRU).
//! - recorded (`create_graph`, `grad` of `grad`) and forward mode: the same loop written
//!   with tensor operations ([`composed`]) is differentiated instead, so every order is
//!   exact. Tests hold the fused rules to the composed ones.

use ndarray::{s, Array2, Array3, ArrayD, Axis, Ix2};

use crate::autodiff::graph::{is_recording, record_with, with_recording, Rule};
use crate::autodiff::primitive::{Cotangents, Primitive};
use crate::ops::kernel::wants;
use crate::ops::matmul::{gemm_into, gemm_into_on};
use crate::tensor::{pool, Data, Element, Tensor};

/// Which cell a recurrent sequence runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cell {
    /// h′ = tanh(z), z = W_ih x + b_ih + W_hh h + b_hh.
    Tanh,
    /// h′ = max(z, 0) (PyTorch's `nonlinearity="relu"`).
    Relu,
    /// Gates i, f, g, o: c′ = σ(f)⊙c + σ(i)⊙tanh(g), h′ = σ(o)⊙tanh(c′).
    Lstm,
    /// Gates r, z, n: n = tanh(x_n + σ(r)⊙(W_hn h + b_hn)), h′ = (1 − σ(z))⊙n + σ(z)⊙h.
    Gru,
}

impl Cell {
    /// Gate blocks in the weights (1, 4, 3).
    pub fn gates(self) -> usize {
        match self {
            Cell::Tanh | Cell::Relu => 1,
            Cell::Lstm => 4,
            Cell::Gru => 3,
        }
    }

    /// Blocks of H in each step's packed output: 2 for the LSTM (h, c), else 1.
    pub fn packed(self) -> usize {
        if self == Cell::Lstm {
            2
        } else {
            1
        }
    }

    fn name(self) -> &'static str {
        match self {
            Cell::Tanh => "rnn_tanh_sequence",
            Cell::Relu => "rnn_relu_sequence",
            Cell::Lstm => "lstm_sequence",
            Cell::Gru => "gru_sequence",
        }
    }
}

/// σ(x) as ½ + ½·tanh(x/2): no branch, no overflow, and vectorised with the f32 tanh.
#[inline]
fn sigmoid<T: Element>(x: T) -> T {
    let half = T::from_f64_lossy(0.5);
    half + half * (x * half).tanh_fast()
}

/// Runs `$generic(arg)` in the build for the current [`crate::cpu::level`].
macro_rules! level_dispatch {
    ($generic:ident, $avx2:ident, $avx512:ident, $arg:expr) => {{
        let arg = $arg;
        #[cfg(target_arch = "x86_64")]
        match crate::cpu::level() {
            // SAFETY: `level` never exceeds what this CPU has, and each build is compiled for
            // exactly its level's features.
            crate::cpu::Level::Avx512 => unsafe { $avx512(arg) },
            crate::cpu::Level::Avx2 => unsafe { $avx2(arg) },
            crate::cpu::Level::Baseline => $generic(arg),
        }
        #[cfg(not(target_arch = "x86_64"))]
        $generic(arg)
    }};
}

/// Builds of `$generic` for AVX2 and AVX-512 (the body is inlined into each).
macro_rules! level_builds {
    ($generic:ident, $avx2:ident, $avx512:ident, $arg:ident) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn $avx2<T: Element>(step: $arg<'_, T>) {
            $generic(step)
        }
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
        unsafe fn $avx512<T: Element>(step: $arg<'_, T>) {
            $generic(step)
        }
    };
}

/// The `k`-th of the blocks of `h` in `v`, with its length known to the compiler (so that
/// loops over `0..h` need no bounds checks and vectorise).
#[inline(always)]
fn block<T>(v: &[T], k: usize, h: usize) -> &[T] {
    &v[k * h..][..h]
}

/// One time step's gate arithmetic over every row, after the state's product.
struct ForwardStep<'a, T> {
    cell: Cell,
    h: usize,
    steps: usize,
    t: usize,
    /// `[N, L, G·H]`
    projected: &'a [T],
    /// W_hh·h of every row, `[N, G·H]`
    from_state: &'a [T],
    bias: &'a [T],
    /// h before the step, replaced by h after it, `[N, H]`.
    state: &'a mut [T],
    /// The LSTM's c, likewise.
    memory: Option<&'a mut [T]>,
    /// This step's gate activations `[N, G·H]` (empty for the Elman cells).
    gates: &'a mut [T],
    /// The GRU's W_hn·h + b_hn for this step, `[N, H]`.
    hidden_n: Option<&'a mut [T]>,
    /// The packed output `[N, L, S·H]`.
    out: &'a mut [T],
}

level_builds!(forward_rows, forward_rows_avx2, forward_rows_avx512, ForwardStep);

#[inline(always)]
fn forward_rows<T: Element>(step: ForwardStep<'_, T>) {
    let ForwardStep { cell, h, steps, t, projected, from_state, bias, state, mut memory, gates, mut hidden_n, out } =
        step;
    let gh = cell.gates() * h;
    let packed = cell.packed() * h;
    let n = state.len() / h.max(1);
    let zero = T::zero();
    for r in 0..n {
        let x = &projected[(r * steps + t) * gh..][..gh];
        let zh = &from_state[r * gh..][..gh];
        let b = &bias[..gh];
        let hrow = &mut state[r * h..][..h];
        let row_out = &mut out[(r * steps + t) * packed..][..packed];
        match cell {
            Cell::Tanh => {
                for j in 0..h {
                    hrow[j] = (x[j] + zh[j] + b[j]).tanh_fast();
                }
            }
            Cell::Relu => {
                for j in 0..h {
                    let z = x[j] + zh[j] + b[j];
                    // NaN stays NaN, as `relu` keeps it.
                    hrow[j] = if z.is_nan() || z > zero { z } else { zero };
                }
            }
            Cell::Lstm => {
                let crow = &mut memory.as_deref_mut().expect("lstm")[r * h..][..h];
                let gate = &mut gates[r * gh..][..gh];
                let (gi, rest) = gate.split_at_mut(h);
                let (gf, rest) = rest.split_at_mut(h);
                let (gg, go) = rest.split_at_mut(h);
                let (go, c_out) = (&mut go[..h], &mut row_out[h..2 * h]);
                lstm_row(
                    [block(x, 0, h), block(x, 1, h), block(x, 2, h), block(x, 3, h)],
                    zh,
                    b,
                    crow,
                    hrow,
                    c_out,
                    gi,
                    gf,
                    gg,
                    go,
                );
            }
            Cell::Gru => {
                let hn = &mut hidden_n.as_deref_mut().expect("gru")[r * h..][..h];
                let gate = &mut gates[r * gh..][..gh];
                let (gr, rest) = gate.split_at_mut(h);
                let (gz, gn) = rest.split_at_mut(h);
                let gn = &mut gn[..h];
                gru_row([block(x, 0, h), block(x, 1, h), block(x, 2, h)], zh, b, hrow, hn, gr, gz, gn);
            }
        }
        row_out[..h].copy_from_slice(hrow);
    }
}

/// One row of an LSTM step. The slices come in as arguments of their own (not fields of a
/// struct) so that the compiler knows they do not overlap and vectorises the loop.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn lstm_row<T: Element>(
    x: [&[T]; 4],
    zh: &[T],
    b: &[T],
    crow: &mut [T],
    hrow: &mut [T],
    c_out: &mut [T],
    gi: &mut [T],
    gf: &mut [T],
    gg: &mut [T],
    go: &mut [T],
) {
    let h = hrow.len();
    let (zi, zf, zg, zo) = (block(zh, 0, h), block(zh, 1, h), block(zh, 2, h), block(zh, 3, h));
    let (bi, bf, bg, bo) = (block(b, 0, h), block(b, 1, h), block(b, 2, h), block(b, 3, h));
    let [xi, xf, xg, xo] = x.map(|v| &v[..h]);
    let (crow, c_out, gi, gf, gg, go) =
        (&mut crow[..h], &mut c_out[..h], &mut gi[..h], &mut gf[..h], &mut gg[..h], &mut go[..h]);
    for j in 0..h {
        let i = sigmoid(xi[j] + zi[j] + bi[j]);
        let f = sigmoid(xf[j] + zf[j] + bf[j]);
        let g = (xg[j] + zg[j] + bg[j]).tanh_fast();
        let o = sigmoid(xo[j] + zo[j] + bo[j]);
        let c = f * crow[j] + i * g;
        crow[j] = c;
        c_out[j] = c;
        hrow[j] = o * c.tanh_fast();
        gi[j] = i;
        gf[j] = f;
        gg[j] = g;
        go[j] = o;
    }
}

/// One row of a GRU step (see [`lstm_row`] for why the slices are arguments).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn gru_row<T: Element>(
    x: [&[T]; 3],
    zh: &[T],
    b: &[T],
    hrow: &mut [T],
    hn: &mut [T],
    gr: &mut [T],
    gz: &mut [T],
    gn: &mut [T],
) {
    let h = hrow.len();
    let (zr, zz, zn) = (block(zh, 0, h), block(zh, 1, h), block(zh, 2, h));
    let (br, bz, bn) = (block(b, 0, h), block(b, 1, h), block(b, 2, h));
    let [xr, xz, xn] = x.map(|v| &v[..h]);
    let (hn, gr, gz, gn) = (&mut hn[..h], &mut gr[..h], &mut gz[..h], &mut gn[..h]);
    for j in 0..h {
        let rg = sigmoid(xr[j] + zr[j] + br[j]);
        let zg = sigmoid(xz[j] + zz[j] + bz[j]);
        let hnj = zn[j] + bn[j];
        let ng = (xn[j] + rg * hnj).tanh_fast();
        hrow[j] = ng + zg * (hrow[j] - ng);
        hn[j] = hnj;
        gr[j] = rg;
        gz[j] = zg;
        gn[j] = ng;
    }
}

/// The backward of one LSTM row (slices as arguments, as in [`lstm_row`]): the gates'
/// pre-activation cotangents into `dz`, and c's cotangent for the step before into `dc`.
#[inline(always)]
fn lstm_row_backward<T: Element>(gate: &[T], c: &[T], gc: &[T], cp: &[T], dh: &[T], dc: &mut [T], dz: [&mut [T]; 4]) {
    let h = dh.len();
    let one = T::one();
    let (gi, gf, gg, go) = (block(gate, 0, h), block(gate, 1, h), block(gate, 2, h), block(gate, 3, h));
    let (c, gc, cp, dc) = (&c[..h], &gc[..h], &cp[..h], &mut dc[..h]);
    let [di, df, dg, d_o] = dz;
    let (di, df, dg, d_o) = (&mut di[..h], &mut df[..h], &mut dg[..h], &mut d_o[..h]);
    for j in 0..h {
        let (i, f, g, o) = (gi[j], gf[j], gg[j], go[j]);
        let tc = c[j].tanh_fast();
        let dct = gc[j] + dc[j] + dh[j] * o * (one - tc * tc);
        di[j] = dct * g * i * (one - i);
        df[j] = dct * cp[j] * f * (one - f);
        dg[j] = dct * i * (one - g * g);
        d_o[j] = dh[j] * tc * o * (one - o);
        dc[j] = dct * f;
    }
}

/// The backward of one GRU row: the pre-activation cotangents as the input's share (`dz`)
/// and the state's (`dzs`), and the direct path to the state before (`direct`).
#[inline(always)]
fn gru_row_backward<T: Element>(
    gate: &[T],
    hn: &[T],
    hp: &[T],
    dh: &[T],
    dz: &mut [T],
    dzs: &mut [T],
    direct: &mut [T],
) {
    let h = dh.len();
    let one = T::one();
    let (gr, gz, gn) = (block(gate, 0, h), block(gate, 1, h), block(gate, 2, h));
    let (hn, hp, direct) = (&hn[..h], &hp[..h], &mut direct[..h]);
    let (dzr, rest) = dz.split_at_mut(h);
    let (dzz, dzn) = rest.split_at_mut(h);
    let dzn = &mut dzn[..h];
    let (dsr, rest) = dzs.split_at_mut(h);
    let (dsz, dsn) = rest.split_at_mut(h);
    let dsn = &mut dsn[..h];
    for j in 0..h {
        let (rg, zg, ng) = (gr[j], gz[j], gn[j]);
        let d = dh[j];
        let dn = d * (one - zg) * (one - ng * ng);
        let dr = dn * hn[j] * rg * (one - rg);
        let dzg = d * (hp[j] - ng) * zg * (one - zg);
        dzr[j] = dr;
        dzz[j] = dzg;
        dzn[j] = dn;
        dsr[j] = dr;
        dsz[j] = dzg;
        dsn[j] = dn * rg;
        direct[j] = d * zg;
    }
}

/// Row `r`'s state before step `t` (for t = 0 the initial state `h0`, or `c0` for `block`
/// 1, the LSTM's c), read from the packed output `[N, L, S·H]`; `dims` is (L, H, S·H).
#[inline(always)]
fn state_before<'a, T>(
    out: &'a [T],
    h0: &'a [T],
    c0: Option<&'a [T]>,
    (steps, h, packed): (usize, usize, usize),
    r: usize,
    t: usize,
    block: usize,
) -> &'a [T] {
    if t == 0 {
        let initial = if block == 0 { h0 } else { c0.expect("the LSTM's initial cell state") };
        &initial[r * h..][..h]
    } else {
        &out[(r * steps + t - 1) * packed + block * h..][..h]
    }
}

/// One time step of the backward: the pre-activations' cotangents of every row.
struct BackwardStep<'a, T> {
    cell: Cell,
    h: usize,
    steps: usize,
    t: usize,
    /// The packed output and its cotangent, `[N, L, S·H]`.
    out: &'a [T],
    cotangent: &'a [T],
    /// The states before step 0, `[N, H]`.
    h0: &'a [T],
    c0: Option<&'a [T]>,
    /// This step's gate activations `[N, G·H]` and the GRU's W_hn·h + b_hn `[N, H]`.
    gates: &'a [T],
    hidden_n: Option<&'a [T]>,
    /// h's cotangent from the steps after (in), plus this step's own (out), `[N, H]`.
    dh: &'a mut [T],
    /// The LSTM's c cotangent from the steps after, replaced by the one for the step before.
    dc: &'a mut [T],
    /// The GRU's direct path to the state before: dh⊙z.
    direct: &'a mut [T],
    /// This step's pre-activation cotangents, as the input's share and (GRU) the state's.
    d_projected: &'a mut [T],
    d_from_state: Option<&'a mut [T]>,
}

level_builds!(backward_rows, backward_rows_avx2, backward_rows_avx512, BackwardStep);

#[inline(always)]
fn backward_rows<T: Element>(step: BackwardStep<'_, T>) {
    let BackwardStep {
        cell,
        h,
        steps,
        t,
        out,
        cotangent,
        h0,
        c0,
        gates,
        hidden_n,
        dh,
        dc,
        direct,
        d_projected,
        mut d_from_state,
    } = step;
    let gh = cell.gates() * h;
    let packed = cell.packed() * h;
    let n = dh.len() / h.max(1);
    let (zero, one) = (T::zero(), T::one());
    let before = |r: usize, block: usize| state_before(out, h0, c0, (steps, h, packed), r, t, block);
    for r in 0..n {
        let dhr = &mut dh[r * h..][..h];
        let gr = &cotangent[(r * steps + t) * packed..][..packed];
        for j in 0..h {
            dhr[j] += gr[j];
        }
        let dz = &mut d_projected[r * gh..][..gh];
        let hr = &out[(r * steps + t) * packed..][..h];
        match cell {
            Cell::Tanh => {
                for j in 0..h {
                    dz[j] = dhr[j] * (one - hr[j] * hr[j]);
                }
            }
            Cell::Relu => {
                for j in 0..h {
                    dz[j] = if hr[j] > zero { dhr[j] } else { zero };
                }
            }
            Cell::Lstm => {
                let gate = &gates[r * gh..][..gh];
                let c = &out[(r * steps + t) * packed + h..][..h];
                let gc = &gr[h..2 * h];
                let cp = before(r, 1);
                let dcr = &mut dc[r * h..][..h];
                let (di, rest) = dz.split_at_mut(h);
                let (df, rest) = rest.split_at_mut(h);
                let (dg, d_o) = rest.split_at_mut(h);
                let d_o = &mut d_o[..h];
                lstm_row_backward(gate, c, gc, cp, dhr, dcr, [di, df, dg, d_o]);
            }
            Cell::Gru => {
                let gate = &gates[r * gh..][..gh];
                let hn = &hidden_n.expect("gru")[r * h..][..h];
                let hp = before(r, 0);
                let dzs = &mut d_from_state.as_deref_mut().expect("gru")[r * gh..][..gh];
                let dr_direct = &mut direct[r * h..][..h];
                gru_row_backward(gate, hn, hp, dhr, dz, dzs, dr_direct);
            }
        }
    }
}

struct SequenceOp<T: Element> {
    cell: Cell,
    /// The gates' activations of every step, `[L, N, G·H]` (GRU: r, z, n; LSTM: i, f, g, o).
    gates: Array3<T>,
    /// GRU only: W_hn·h + b_hn of every step, `[L, N, H]`.
    hidden_n: Option<Array3<T>>,
}

impl<T: Element> Drop for SequenceOp<T> {
    /// The kept gates go back to the buffer pool, for the next step's forward pass.
    fn drop(&mut self) {
        pool::give_array(std::mem::replace(&mut self.gates, Array3::zeros((0, 0, 0))));
        if let Some(hidden_n) = self.hidden_n.take() {
            pool::give_array(hidden_n);
        }
    }
}

/// Zeros `[a, b, c]` in a buffer from the pool.
fn zeros3<T: Element>(a: usize, b: usize, c: usize) -> Array3<T> {
    pool::array_zeros(&[a, b, c]).into_dimensionality().expect("three axes")
}

/// Zeros `[a, b]` in a buffer from the pool.
fn zeros2<T: Element>(a: usize, b: usize) -> Array2<T> {
    pool::array_zeros(&[a, b]).into_dimensionality().expect("two axes")
}

/// Checks the shapes and returns (N, L, H).
#[track_caller]
fn dimensions<T: Element>(cell: Cell, inputs: &[&Tensor<T>]) -> (usize, usize, usize) {
    let expected = if cell == Cell::Lstm { 2 } else { 1 };
    assert!(
        inputs.len() == 3 + expected,
        "{}: {} initial states, expected {expected} (h0{})",
        cell.name(),
        inputs.len().saturating_sub(3),
        if cell == Cell::Lstm { " and c0" } else { "" }
    );
    let (p, w, b, h0) = (inputs[0].shape(), inputs[1].shape(), inputs[2].shape(), inputs[3].shape());
    let g = cell.gates();
    let ok = w.len() == 2
        && w[0] == g * w[1]
        && p.len() == 3
        && p[2] == w[0]
        && b == [w[0]]
        && h0 == [p[0], w[1]]
        && (cell != Cell::Lstm || inputs[4].shape() == h0);
    assert!(
        ok,
        "{}: shapes projected {p:?}, weight_hh {w:?}, bias_hh {b:?}, initial state {h0:?}{} do not fit \
         ([N, L, {g}·H], [{g}·H, H], [{g}·H], [N, H])",
        cell.name(),
        if cell == Cell::Lstm { format!(", cell {:?}", inputs[4].shape()) } else { String::new() }
    );
    (p[0], p[1], w[1])
}

impl<T: Element> Tensor<T> {
    /// Runs a recurrent cell over a whole sequence as one primitive (see the module docs of
    /// `ops::recurrent` for the inputs and the packed output `[N, L, S·H]`).
    ///
    /// `projected` is `[N, L, G·H]` (the input's share of every gate, x·W_ihᵀ + b_ih),
    /// `initial` is `h0` (and `c0` for the LSTM), each `[N, H]`.
    ///
    /// # Panics
    /// If the shapes do not fit, naming them.
    #[track_caller]
    pub fn recurrent_sequence(
        cell: Cell,
        projected: &Tensor<T>,
        weight_hh: &Tensor<T>,
        bias_hh: &Tensor<T>,
        initial: &[&Tensor<T>],
    ) -> Tensor<T> {
        let mut inputs = vec![projected, weight_hh, bias_hh];
        inputs.extend_from_slice(initial);
        let (n, steps, h) = dimensions(cell, &inputs);
        let (value, op) = forward(cell, &inputs, n, steps, h);
        record_with(|| Rule::Shared(std::sync::Arc::new(op)), &inputs, Data::from_array(value))
    }
}

fn forward<T: Element>(
    cell: Cell,
    inputs: &[&Tensor<T>],
    n: usize,
    steps: usize,
    h: usize,
) -> (ArrayD<T>, SequenceOp<T>) {
    let gh = cell.gates() * h;
    let projected = inputs[0].view();
    let projected = projected.as_standard_layout();
    let projected = projected.as_slice().expect("standard layout");
    let weight_t = inputs[1].view().into_dimensionality::<Ix2>().expect("2-d").reversed_axes();
    let bias: Vec<T> = inputs[2].view().iter().copied().collect();
    let mut state = inputs[3].view().into_dimensionality::<Ix2>().expect("2-d").as_standard_layout().into_owned();
    let mut memory = (cell == Cell::Lstm)
        .then(|| inputs[4].view().into_dimensionality::<Ix2>().expect("2-d").as_standard_layout().into_owned());
    let packed = cell.packed() * h;
    let mut out = zeros3::<T>(n, steps, packed);
    let keeps_gates = matches!(cell, Cell::Lstm | Cell::Gru);
    let mut gates = zeros3::<T>(if keeps_gates { steps } else { 0 }, n, gh);
    let mut hidden_n = (cell == Cell::Gru).then(|| zeros3::<T>(steps, n, h));
    let mut from_state = zeros2::<T>(n, gh);
    for t in 0..steps {
        // Each step's product stays on this thread: handing a product this small
        // (N × H × G·H) to the other thread and back every step cost more than it saved
        // (LSTM step 15–17 → 8 ms on 2 threads).
        gemm_into_on(&mut from_state.view_mut(), state.view(), weight_t, false, false);
        let step = ForwardStep {
            cell,
            h,
            steps,
            t,
            projected,
            from_state: from_state.as_slice().expect("standard layout"),
            bias: &bias,
            state: state.as_slice_mut().expect("standard layout"),
            memory: memory.as_mut().map(|m| m.as_slice_mut().expect("standard layout")),
            gates: if keeps_gates {
                &mut gates.as_slice_mut().expect("standard layout")[t * n * gh..][..n * gh]
            } else {
                &mut []
            },
            hidden_n: hidden_n.as_mut().map(|a| &mut a.as_slice_mut().expect("standard layout")[t * n * h..][..n * h]),
            out: out.as_slice_mut().expect("standard layout"),
        };
        level_dispatch!(forward_rows, forward_rows_avx2, forward_rows_avx512, step);
    }
    pool::give_array(from_state);
    (out.into_dyn(), SequenceOp { cell, gates, hidden_n })
}

impl<T: Element> SequenceOp<T> {
    /// The fused backward through time: cotangents of (projected, weight_hh, bias_hh, h0, c0).
    fn backward(&self, inputs: &[Tensor<T>], output: &Tensor<T>, cotangent: &Tensor<T>) -> Vec<ArrayD<T>> {
        let cell = self.cell;
        let refs: Vec<&Tensor<T>> = inputs.iter().collect();
        let (n, steps, h) = dimensions(cell, &refs);
        let gh = cell.gates() * h;
        let packed = cell.packed() * h;
        let weight = inputs[1].view().into_dimensionality::<Ix2>().expect("2-d");
        let out = output.view();
        let out = out.as_standard_layout();
        let out = out.as_slice().expect("standard layout");
        let g = cotangent.view();
        let g = g.broadcast(output.shape()).expect("a cotangent in the output's shape");
        let g = g.as_standard_layout();
        let g = g.as_slice().expect("standard layout");
        let h0 = inputs[3].view();
        let h0 = h0.as_standard_layout();
        let h0 = h0.as_slice().expect("standard layout");
        let c0 = (cell == Cell::Lstm).then(|| inputs[4].view().as_standard_layout().into_owned());
        let c0 = c0.as_ref().map(|c| c.as_slice().expect("standard layout"));
        // The cotangent of every step's pre-activations: as the input's share (`d_projected`,
        // time-major) and as the state's share (`d_from_state`: the same but for the GRU's
        // candidate gate, which the reset gate scales).
        let mut d_projected = zeros3::<T>(steps, n, gh);
        let mut d_from_state = (cell == Cell::Gru).then(|| zeros3::<T>(steps, n, gh));
        let mut dh = Array2::<T>::zeros((n, h));
        let mut dc = Array2::<T>::zeros((n, h));
        let mut direct = Array2::<T>::zeros((n, h));
        let gates = self.gates.as_slice().expect("standard layout");
        for t in (0..steps).rev() {
            let step = BackwardStep {
                cell,
                h,
                steps,
                t,
                out,
                cotangent: g,
                h0,
                c0,
                gates: if gates.is_empty() { &[] } else { &gates[t * n * gh..][..n * gh] },
                hidden_n: self.hidden_n.as_ref().map(|a| &a.as_slice().expect("standard layout")[t * n * h..][..n * h]),
                dh: dh.as_slice_mut().expect("standard layout"),
                dc: dc.as_slice_mut().expect("standard layout"),
                direct: direct.as_slice_mut().expect("standard layout"),
                d_projected: &mut d_projected.as_slice_mut().expect("standard layout")[t * n * gh..][..n * gh],
                d_from_state: d_from_state
                    .as_mut()
                    .map(|a| &mut a.as_slice_mut().expect("standard layout")[t * n * gh..][..n * gh]),
            };
            level_dispatch!(backward_rows, backward_rows_avx2, backward_rows_avx512, step);
            // The state's cotangent for the step before: through W_hh, plus the GRU's direct path.
            let from_state = match &d_from_state {
                Some(d) => d.index_axis(Axis(0), t),
                None => d_projected.index_axis(Axis(0), t),
            };
            if cell == Cell::Gru {
                std::mem::swap(&mut dh, &mut direct);
                gemm_into_on(&mut dh.view_mut(), from_state, weight, true, false);
            } else {
                gemm_into_on(&mut dh.view_mut(), from_state, weight, false, false);
            }
        }
        // ∂W_hh = Σ_t δ_tᵀ·h_{t−1} and ∂b_hh = Σ_t Σ_n δ_t: one product over the whole sequence.
        let d_state = d_from_state.as_ref().unwrap_or(&d_projected);
        let mut states_before = zeros3::<T>(steps, n, h);
        for t in 0..steps {
            for r in 0..n {
                states_before
                    .slice_mut(s![t, r, ..])
                    .as_slice_mut()
                    .expect("contiguous")
                    .copy_from_slice(state_before(out, h0, c0, (steps, h, packed), r, t, 0));
            }
        }
        let flat_d = d_state.view().into_shape_with_order((steps * n, gh)).expect("contiguous");
        let flat_h = states_before.view().into_shape_with_order((steps * n, h)).expect("contiguous");
        let mut d_weight = zeros2::<T>(gh, h);
        gemm_into(&mut d_weight.view_mut(), flat_d.t(), flat_h, false);
        let d_bias = flat_d.sum_axis(Axis(0));
        // Batch-major, as the input: a copy into a buffer from the pool.
        let batch_major = pool::standard_copy(&d_projected.view().permuted_axes([1, 0, 2]).into_dyn());
        pool::give_array(d_projected);
        pool::give_array(states_before);
        if let Some(d) = d_from_state {
            pool::give_array(d);
        }
        let mut result = vec![batch_major, d_weight.into_dyn(), d_bias.into_dyn(), dh.into_dyn()];
        if cell == Cell::Lstm {
            result.push(dc.into_dyn());
        }
        result
    }
}

impl<T: Element> Primitive<T> for SequenceOp<T> {
    fn name(&self) -> &'static str {
        self.cell.name()
    }

    fn vjp(&self, inputs: &[Tensor<T>], output: &Tensor<T>, cotangent: &Tensor<T>) -> Cotangents<T> {
        if is_recording() {
            // A recorded backward (higher orders): the composed loop's own rules.
            let cell = self.cell;
            let (_, pullback) = crate::autodiff::transforms::vjp(|xs| vec![composed(cell, xs)], inputs);
            let grads = pullback.call(std::slice::from_ref(cotangent));
            return inputs.iter().zip(grads).map(|(x, g)| wants(x).then_some(g)).collect();
        }
        let grads = self.backward(inputs, output, cotangent);
        inputs.iter().zip(grads).map(|(x, g)| wants(x).then(|| Tensor::from_array(g))).collect()
    }

    fn jvp(&self, inputs: &[Tensor<T>], _: &Tensor<T>, tangents: &[Option<Tensor<T>>]) -> Option<Tensor<T>> {
        let cell = self.cell;
        let full: Vec<Tensor<T>> =
            inputs.iter().zip(tangents).map(|(x, t)| t.clone().unwrap_or_else(|| Tensor::zeros(x.shape()))).collect();
        // The composed loop must be recorded to be swept, also where the caller's forward
        // sweep runs with recording off (the transform's own scope keeps it local).
        let (_, out) =
            with_recording(true, || crate::autodiff::transforms::jvp(|xs| vec![composed(cell, xs)], inputs, &full));
        out.into_iter().next()
    }
}

/// The sequence written with tensor operations, step by step: the definition the fused
/// rules are held to, and what recorded backward passes and forward mode differentiate.
pub(crate) fn composed<T: Element>(cell: Cell, inputs: &[Tensor<T>]) -> Tensor<T> {
    let refs: Vec<&Tensor<T>> = inputs.iter().collect();
    let (n, steps, h) = dimensions(cell, &refs);
    let gh = cell.gates() * h;
    let (projected, weight, bias) = (&inputs[0], &inputs[1], &inputs[2]);
    let mut state = inputs[3].clone();
    let mut cell_state = (cell == Cell::Lstm).then(|| inputs[4].clone());
    let mut outputs = Vec::with_capacity(steps);
    let gate = |g: &Tensor<T>, k: usize| g.narrow(1, k * h, h);
    for t in 0..steps {
        let from_input = projected.narrow(1, t, 1).reshape(&[n, gh]);
        let from_state = state.linear(weight, Some(bias));
        state = match cell {
            Cell::Tanh => (from_input + from_state).tanh(),
            Cell::Relu => (from_input + from_state).relu(),
            Cell::Lstm => {
                let z = from_input + from_state;
                let (i, f) = (gate(&z, 0).sigmoid(), gate(&z, 1).sigmoid());
                let (g, o) = (gate(&z, 2).tanh(), gate(&z, 3).sigmoid());
                let c = f * cell_state.as_ref().expect("lstm") + i * g;
                let next = o * c.tanh();
                cell_state = Some(c);
                next
            }
            Cell::Gru => {
                let r = (gate(&from_input, 0) + gate(&from_state, 0)).sigmoid();
                let z = (gate(&from_input, 1) + gate(&from_state, 1)).sigmoid();
                let candidate = (gate(&from_input, 2) + r * gate(&from_state, 2)).tanh();
                &candidate + &(z * (&state - &candidate))
            }
        };
        outputs.push(match &cell_state {
            Some(c) => Tensor::concat(&[&state, c], 1),
            None => state.clone(),
        });
    }
    if steps == 0 {
        return Tensor::zeros(&[n, 0, cell.packed() * h]);
    }
    let refs: Vec<&Tensor<T>> = outputs.iter().collect();
    Tensor::stack(&refs, 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autodiff::gradcheck::{check_grads, CheckOptions};

    const CELLS: [Cell; 4] = [Cell::Tanh, Cell::Relu, Cell::Lstm, Cell::Gru];

    fn filled(shape: &[usize], k: usize) -> Tensor<f64> {
        let n: usize = shape.iter().product();
        Tensor::from_vec((0..n).map(|i| (0.37 * (i + 1) as f64 + 1.3 * k as f64).sin() * 0.6).collect(), shape)
    }

    fn inputs(cell: Cell, n: usize, steps: usize, h: usize) -> Vec<Tensor<f64>> {
        let gh = cell.gates() * h;
        let mut v = vec![filled(&[n, steps, gh], 0), filled(&[gh, h], 1), filled(&[gh], 2), filled(&[n, h], 3)];
        if cell == Cell::Lstm {
            v.push(filled(&[n, h], 4));
        }
        v
    }

    fn fused(cell: Cell, xs: &[Tensor<f64>]) -> Tensor<f64> {
        let initial: Vec<&Tensor<f64>> = xs[3..].iter().collect();
        Tensor::recurrent_sequence(cell, &xs[0], &xs[1], &xs[2], &initial)
    }

    fn max_diff(a: &Tensor<f64>, b: &Tensor<f64>) -> f64 {
        assert_eq!(a.shape(), b.shape());
        a.to_vec().iter().zip(b.to_vec()).fold(0.0, |m, (x, y)| m.max((x - y).abs()))
    }

    #[test]
    fn the_fused_sequence_equals_the_composed_loop_in_value_and_gradient() {
        for cell in CELLS {
            for (n, steps, h) in [(3, 6, 5), (1, 1, 2), (2, 0, 3)] {
                let xs: Vec<Tensor<f64>> = inputs(cell, n, steps, h).into_iter().map(Tensor::requires_grad).collect();
                let (a, b) = (fused(cell, &xs), composed(cell, &xs));
                assert!(max_diff(&a, &b) < 1e-13, "{cell:?} value differs by {}", max_diff(&a, &b));
                // A cotangent with every entry different, over h and c alike.
                let weights = filled(a.shape(), 7);
                let ga =
                    crate::autodiff::transforms::grad_many(|x: &[Tensor<f64>]| (fused(cell, x) * &weights).sum_all())(
                        &xs,
                    );
                let gb = crate::autodiff::transforms::grad_many(|x: &[Tensor<f64>]| {
                    (composed(cell, x) * &weights).sum_all()
                })(&xs);
                for (k, (x, y)) in ga.iter().zip(&gb).enumerate() {
                    assert!(
                        max_diff(x, y) < 1e-12,
                        "{cell:?} {n}×{steps}×{h}: gradient of input {k} differs by {}",
                        max_diff(x, y)
                    );
                }
            }
        }
    }

    #[test]
    fn the_sequence_passes_check_grads_to_order_2() {
        for cell in CELLS {
            let xs = inputs(cell, 2, 3, 2);
            let f = move |x: &[Tensor<f64>]| vec![fused(cell, x)];
            check_grads(f, &xs, CheckOptions::default()).unwrap_or_else(|e| panic!("{cell:?}: {e}"));
        }
    }

    #[test]
    fn the_fused_rules_run_on_two_threads_as_on_one() {
        // Products above the split size take the threaded path.
        let cell = Cell::Lstm;
        let xs: Vec<Tensor<f32>> = inputs(cell, 64, 4, 128)
            .into_iter()
            .map(|t| Tensor::from_vec(t.to_vec().iter().map(|&v| v as f32).collect(), t.shape()).requires_grad())
            .collect();
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let initial: Vec<&Tensor<f32>> = xs[3..].iter().collect();
                let y = Tensor::recurrent_sequence(cell, &xs[0], &xs[1], &xs[2], &initial);
                let grads = crate::autodiff::transforms::grad_many(|x: &[Tensor<f32>]| {
                    let initial: Vec<&Tensor<f32>> = x[3..].iter().collect();
                    Tensor::recurrent_sequence(cell, &x[0], &x[1], &x[2], &initial).sqr().sum_all()
                })(&xs);
                (y.to_vec(), grads.iter().map(|g| g.to_vec()).collect::<Vec<_>>())
            })
        };
        assert!(run(1) == run(2));
    }

    #[test]
    #[should_panic(expected = "lstm_sequence: shapes")]
    fn shapes_that_do_not_fit_are_named() {
        let xs = inputs(Cell::Lstm, 2, 3, 2);
        Tensor::recurrent_sequence(Cell::Lstm, &xs[0], &xs[1], &xs[2], &[&xs[3], &Tensor::zeros(&[2, 3])]);
    }
}
