//! Scaled dot-product attention as one primitive:
//! softmax(q·kᵀ·scale + mask) · v, with a causal option and dropout on the weights.
//!
//! What is stored: the record keeps q, k, v, the output and one number per query row (the
//! log of its softmax denominator), all linear in the sequence length. The `n × n` weights
//! are never kept: the forward pass and the first-order backward pass work on blocks of
//! [`BLOCK`] query rows at a time, recomputing the weights of a block from q, k and the
//! stored row statistics (as FlashAttention does), so their peak extra memory is
//! `BLOCK × n` per thread.
//!
//! Higher order: when the backward pass is itself recorded (`create_graph`, nested
//! transforms), and for forward mode, the rules are the composed definition written over
//! tensors (matmul, softmax, …), so derivatives of any order follow; those materialise the
//! `n × n` weights. The fused first-order kernels are tested against the composed rules.
//!
//! Fully masked query rows (every key masked) give an output row of zeros and no gradient,
//! where the composed definition would give NaN.
//!
//! Causal: a block of [`BLOCK`] query rows multiplies only by the keys its last row can
//! see (the others have weight 0 there), as FlashAttention skips them. So a non-finite key
//! or value at position j reaches the rows of the blocks that end after j, not all rows as
//! 0 × ∞ = NaN spreads in the composed definition; with finite inputs both agree.
//!
//! Dropout: the weights are multiplied by a keep mask scaled by 1/(1 − p), drawn as a pure
//! function of (seed, position), so the backward pass draws it again instead of storing it.

use std::sync::Arc;

use ndarray::{s, Array2, ArrayD, ArrayView2, ArrayViewD, ArrayViewMut2, Axis, IxDyn};
use rayon::prelude::*;

use crate::autodiff::graph::is_recording;
use crate::autodiff::primitive::{Cotangents, Primitive};
use crate::ops::kernel::mix;
use crate::ops::matmul::gemm_into_on;
use crate::tensor::{Element, Tensor};

/// Query rows per block of the fused kernels.
pub const BLOCK: usize = 64;

/// How [`Tensor::scaled_dot_product_attention`] attends.
#[derive(Clone, Debug)]
pub struct AttentionOptions<T: Element> {
    /// Added to the scores before the softmax, broadcast to `[…, Lq, Lk]`. A constant: a
    /// tracked mask (a learned bias) is refused rather than silently given no gradient.
    /// `−∞` masks a position; [`attention_mask`] makes one from booleans.
    pub mask: Option<Tensor<T>>,
    /// Query i attends only to keys j ≤ i (PyTorch's `is_causal`, aligned at the top left).
    pub causal: bool,
    /// The probability of dropping an attention weight, in [0, 1).
    pub dropout: f64,
    /// The seed of the dropout masks (masks are a pure function of the seed and position):
    /// calls with the same seed drop the same weights, so give each call its own (the layers
    /// in [`crate::nn`] draw one per call).
    pub seed: u64,
    /// The factor on q·kᵀ; `None` is 1/√d.
    pub scale: Option<f64>,
    /// The number of the first batch element (leading axes flattened) among all of a
    /// data-parallel step's: dropout masks are numbered from it, so that ranks that split a
    /// batch draw what one process would. 0 outside data-parallel training.
    pub first: usize,
}

impl<T: Element> Default for AttentionOptions<T> {
    fn default() -> Self {
        AttentionOptions { mask: None, causal: false, dropout: 0.0, seed: 0, scale: None, first: 0 }
    }
}

/// An additive mask from booleans (`true`: may attend): 0 where allowed, −∞ elsewhere.
/// PyTorch's boolean `attn_mask` has this meaning; its `key_padding_mask` the opposite.
pub fn attention_mask<T: Element>(allowed: &ArrayD<bool>) -> Tensor<T> {
    Tensor::from_array(allowed.mapv(|a| if a { T::zero() } else { T::neg_infinity() }))
}

/// The constant settings of one attention call.
#[derive(Clone)]
struct Settings<T: Element> {
    /// The additive mask as given (broadcast when used).
    mask: Option<Arc<ArrayD<T>>>,
    causal: bool,
    dropout: f64,
    seed: u64,
    scale: f64,
    /// The global number of batch element 0 (for dropout).
    first: usize,
    /// Leading (batch) shape, query length, key length.
    lead: Vec<usize>,
    lq: usize,
    lk: usize,
}

impl<T: Element> Settings<T> {
    /// The settings of a call on `q` `[…, Lq, d]` and `k` `[…, Lk, d]`.
    ///
    /// # Panics
    /// If q or k has fewer than two axes (naming the op).
    fn new(q: &Tensor<T>, k: &Tensor<T>, options: &AttentionOptions<T>) -> Self {
        let (qs, ks) = (q.shape(), k.shape());
        assert!(
            qs.len() >= 2 && ks.len() >= 2,
            "scaled_dot_product_attention: q {qs:?} and k {ks:?} need at least two axes ([…, L, d])"
        );
        let n = qs.len();
        Settings {
            mask: options.mask.as_ref().map(|m| Arc::new(m.to_array())),
            causal: options.causal,
            dropout: options.dropout,
            seed: options.seed,
            scale: options.scale.unwrap_or(1.0 / (qs[n - 1].max(1) as f64).sqrt()),
            first: options.first,
            lead: qs[..n - 2].to_vec(),
            lq: qs[n - 2],
            lk: ks[ks.len() - 2],
        }
    }

    /// Whether weight (n, i, j) is kept by dropout.
    fn kept(&self, n: usize, i: usize, j: usize) -> bool {
        let position = (((n + self.first) * self.lq + i) * self.lk + j) as u64;
        let threshold = (self.dropout * 2f64.powi(53)) as u64;
        mix(self.seed ^ mix(position)) >> 11 >= threshold
    }

    /// How many keys the query rows `first..first + rows` may see together: all, or the
    /// first `first + rows` when causal (the kernels' products skip the rest).
    fn keys_of_block(&self, first: usize, rows: usize) -> usize {
        if self.causal {
            (first + rows).min(self.lk)
        } else {
            self.lk
        }
    }

    /// How many keys query row i may see: all, or the first i + 1 when causal.
    fn visible(&self, i: usize) -> usize {
        if self.causal {
            (i + 1).min(self.lk)
        } else {
            self.lk
        }
    }

    /// The mask's `[Lq, Lk]` view for batch element n (broadcast).
    fn mask_of<'a>(&self, full: &'a Option<ArrayViewD<'a, T>>, n: usize) -> Option<ArrayView2<'a, T>> {
        let full = full.as_ref()?;
        let mut view = full.view();
        let mut rest = n;
        let mut index = vec![0; self.lead.len()];
        for (slot, &len) in index.iter_mut().zip(&self.lead).rev() {
            *slot = rest % len;
            rest /= len;
        }
        for i in index {
            view = view.index_axis_move(Axis(0), i);
        }
        Some(view.into_dimensionality().expect("a [Lq, Lk] mask"))
    }

    fn full_mask(&self) -> Option<ArrayViewD<'_, T>> {
        let mut shape = self.lead.clone();
        shape.extend([self.lq, self.lk]);
        self.mask.as_ref().map(|m| {
            m.broadcast(IxDyn(&shape)).unwrap_or_else(|| {
                panic!("scaled_dot_product_attention: a mask of shape {:?} does not broadcast to {shape:?}", m.shape())
            })
        })
    }

    /// Scores of query rows `first…` of batch element n against the first `k.nrows()` keys:
    /// q·kᵀ·scale + mask, −∞ where causal.
    /// `share`: whether the product may be split between threads (not when the caller's
    /// tasks already run on all of them).
    fn scores(
        &self,
        q: ArrayView2<'_, T>,
        k: ArrayView2<'_, T>,
        mask: Option<ArrayView2<'_, T>>,
        first: usize,
        share: bool,
    ) -> Array2<T> {
        let keys = k.nrows();
        let mut s = Array2::<T>::zeros((q.nrows(), keys));
        gemm_into_on(&mut s.view_mut(), q, k.t(), false, share);
        let scale = T::from_f64_lossy(self.scale);
        for (r, mut row) in s.outer_iter_mut().enumerate() {
            let i = first + r;
            // Whole rows at a time, so that the loops vectorise.
            row.mapv_inplace(|v| v * scale);
            if let Some(m) = &mask {
                ndarray::Zip::from(&mut row).and(m.slice(s![i, ..keys])).for_each(|v, &b| *v += b);
            }
            if self.causal && i + 1 < keys {
                row.slice_mut(s![i + 1..]).fill(T::neg_infinity());
            }
        }
        s
    }

    /// The keep-and-rescale mask of weights, `[…, Lq, Lk]`, for the composed rules.
    fn keep_tensor(&self) -> Option<Tensor<T>> {
        if self.dropout == 0.0 {
            return None;
        }
        let n_all: usize = self.lead.iter().product();
        let scale = T::from_f64_lossy(1.0 / (1.0 - self.dropout));
        let mut values = Vec::with_capacity(n_all * self.lq * self.lk);
        for n in 0..n_all {
            for i in 0..self.lq {
                for j in 0..self.lk {
                    values.push(if self.kept(n, i, j) { scale } else { T::zero() });
                }
            }
        }
        let mut shape = self.lead.clone();
        shape.extend([self.lq, self.lk]);
        Some(Tensor::from_vec(values, &shape))
    }

    /// The additive constant of the composed definition: the mask plus −∞ above the diagonal.
    fn bias_tensor(&self) -> Option<Tensor<T>> {
        let causal = self.causal.then(|| {
            Tensor::from_array(
                Array2::from_shape_fn((self.lq, self.lk), |(i, j)| if j > i { T::neg_infinity() } else { T::zero() })
                    .into_dyn(),
            )
        });
        let mask = self.mask.as_ref().map(|m| Tensor::from_array(m.as_ref().clone()));
        match (mask, causal) {
            (Some(m), Some(c)) => Some(&m + &c),
            (m, c) => m.or(c),
        }
    }

    /// The additive constant and, if some query rows are fully masked, a `[…, Lq, 1]` factor
    /// that is 0 on those rows (whose bias is then made 0, so that their softmax stays
    /// finite): the composed rules then give zeros there, as the fused kernels do, instead of
    /// NaN that the sums over query rows would spread to every gradient of k and v.
    fn bias_and_alive(&self) -> (Option<Tensor<T>>, Option<Tensor<T>>) {
        let Some(bias) = self.bias_tensor() else { return (None, None) };
        let mut shape = self.lead.clone();
        shape.extend([self.lq, self.lk]);
        let Some(full) = bias.view().broadcast(IxDyn(&shape)).map(|b| b.to_owned()) else {
            return (Some(bias), None);
        };
        let mut rows_shape = shape.clone();
        let last = rows_shape.len() - 1;
        rows_shape[last] = 1;
        let alive =
            full.map_axis(
                Axis(last),
                |row| {
                    if row.iter().any(|&b| b != T::neg_infinity()) {
                        T::one()
                    } else {
                        T::zero()
                    }
                },
            );
        if alive.iter().all(|&a| a == T::one()) {
            return (Some(bias), None);
        }
        let mut fixed = full;
        for (mut row, &a) in fixed.lanes_mut(Axis(last)).into_iter().zip(alive.iter()) {
            if a == T::zero() {
                row.fill(T::zero());
            }
        }
        let alive = alive.into_shape_with_order(IxDyn(&rows_shape)).expect("same size");
        (Some(Tensor::from_array(fixed)), Some(Tensor::from_array(alive)))
    }

    /// The composed definition: (weights before dropout, weights after, output).
    fn composed(&self, q: &Tensor<T>, k: &Tensor<T>, v: &Tensor<T>) -> (Tensor<T>, Tensor<T>, Tensor<T>) {
        let mut scores = q.matmul(&swap_last(k)) * T::from_f64_lossy(self.scale);
        let (bias, alive) = self.bias_and_alive();
        if let Some(b) = bias {
            scores = scores + b;
        }
        let mut p = scores.softmax(-1);
        if let Some(a) = alive {
            p = p * a;
        }
        let dropped = match self.keep_tensor() {
            Some(keep) => &p * &keep,
            None => p.clone(),
        };
        let out = dropped.matmul(v);
        (p, dropped, out)
    }
}

/// `x` with its last two axes swapped.
fn swap_last<T: Element>(x: &Tensor<T>) -> Tensor<T> {
    let n = x.ndim();
    let mut axes: Vec<usize> = (0..n).collect();
    axes.swap(n - 2, n - 1);
    x.permute(&axes[..])
}

/// The `[L, d]` matrices of a `[…, L, d]` array, one per leading index in row-major order,
/// as views of its values in whatever layout they have: heads split off by a permutation
/// (`[B, L, H, d]` viewed as `[B, H, L, d]`) are read where they are, not copied.
fn matrices<'a, T: Element>(x: ArrayViewD<'a, T>) -> Vec<ArrayView2<'a, T>> {
    if x.ndim() == 2 {
        return vec![x.into_dimensionality().expect("two axes")];
    }
    (0..x.len_of(Axis(0))).flat_map(|i| matrices(x.clone().index_axis_move(Axis(0), i))).collect()
}

/// The `[L, d]` matrices of a `[…, L, d]` array as disjoint mutable views, as [`matrices`].
fn matrices_mut<'a, T: Element>(mut x: ndarray::ArrayViewMutD<'a, T>) -> Vec<ArrayViewMut2<'a, T>> {
    if x.ndim() == 2 {
        return vec![x.into_dimensionality().expect("two axes")];
    }
    let mut out = Vec::new();
    while x.len_of(Axis(0)) > 0 {
        let (first, rest) = x.split_at(Axis(0), 1);
        out.extend(matrices_mut(first.index_axis_move(Axis(0), 0)));
        x = rest;
    }
    out
}

/// Zeros of `shape` laid out in memory in the order of `like`'s axes (by decreasing
/// stride), when `like`'s last axis is its innermost; standard layout otherwise. Attention's
/// inputs are usually heads permuted out of `[B, L, H, d]`: the output and the gradients
/// made in that order become standard again when permuted back, so merging the heads
/// (a reshape) costs no copy.
fn zeros_laid_out_like<T: Element>(like: &ArrayViewD<'_, T>, shape: &[usize]) -> ArrayD<T> {
    let n = shape.len();
    let strides = like.strides();
    let innermost = strides[n - 1] == 1 && strides[..n - 1].iter().all(|&st| st.unsigned_abs() > 1);
    if !innermost {
        return crate::tensor::pool::array_zeros(shape);
    }
    // Memory order: axes by decreasing stride (stable, so ties keep their logical order).
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&a| std::cmp::Reverse(strides[a].unsigned_abs()));
    let memory_shape: Vec<usize> = order.iter().map(|&a| shape[a]).collect();
    let mut logical = vec![0; n];
    for (position, &axis) in order.iter().enumerate() {
        logical[axis] = position;
    }
    crate::tensor::pool::array_zeros(&memory_shape).permuted_axes(IxDyn(&logical))
}

struct Attention<T: Element> {
    settings: Settings<T>,
    /// log Σⱼ exp(score) per query row, `[N, Lq]`: the softmax recomputed from it.
    log_sums: Arc<Array2<T>>,
}

impl<T: Element> Primitive<T> for Attention<T> {
    fn name(&self) -> &'static str {
        "attention"
    }

    fn vjp(&self, x: &[Tensor<T>], out: &Tensor<T>, g: &Tensor<T>) -> Cotangents<T> {
        let tracked = x.iter().any(Tensor::is_tracked) || g.is_tracked();
        if is_recording() && tracked {
            return composed_vjp(&self.settings, x, g);
        }
        let (dq, dk, dv) = fused_backward(&self.settings, x, out, g, &self.log_sums);
        [Some(dq), Some(dk), Some(dv)].into()
    }

    fn jvp(&self, x: &[Tensor<T>], _: &Tensor<T>, t: &[Option<Tensor<T>>]) -> Option<Tensor<T>> {
        let st = &self.settings;
        let (q, k, v) = (&x[0], &x[1], &x[2]);
        let (p, dropped, _) = st.composed(q, k, v);
        let scale = T::from_f64_lossy(st.scale);
        let mut d_scores: Option<Tensor<T>> = None;
        if let Some(tq) = &t[0] {
            d_scores = Some(tq.matmul(&swap_last(k)) * scale);
        }
        if let Some(tk) = &t[1] {
            let term = q.matmul(&swap_last(tk)) * scale;
            d_scores = Some(match d_scores {
                Some(d) => d + term,
                None => term,
            });
        }
        let mut tangent: Option<Tensor<T>> = d_scores.map(|ds| {
            // softmax's JVP: P ∘ (dS − Σⱼ P dS)
            let dp = &p * &(&ds - &(&p * &ds).sum(&[-1], true));
            let dp = match st.keep_tensor() {
                Some(keep) => dp * keep,
                None => dp,
            };
            dp.matmul(v)
        });
        if let Some(tv) = &t[2] {
            let term = dropped.matmul(tv);
            tangent = Some(match tangent {
                Some(a) => a + term,
                None => term,
            });
        }
        tangent
    }

    fn parameters(&self) -> Vec<f64> {
        vec![self.settings.scale, self.settings.dropout]
    }
}

/// The reverse rule over tensors (recorded when the backward pass is).
fn composed_vjp<T: Element>(st: &Settings<T>, x: &[Tensor<T>], g: &Tensor<T>) -> Cotangents<T> {
    let (q, k, v) = (&x[0], &x[1], &x[2]);
    let (p, dropped, _) = st.composed(q, k, v);
    let dv = swap_last(&dropped).matmul(g);
    let mut dp = g.matmul(&swap_last(v));
    if let Some(keep) = st.keep_tensor() {
        dp = dp * keep;
    }
    let ds = &p * &(&dp - &(&p * &dp).sum(&[-1], true));
    let ds = ds * T::from_f64_lossy(st.scale);
    let dq = ds.matmul(k);
    let dk = swap_last(&ds).matmul(q);
    [Some(dq), Some(dk), Some(dv)].into()
}

/// Softmax of a block's scores in place from the row statistics: exp(s − log Σ), 0 for
/// fully masked rows.
fn weights_from<T: Element>(st: &Settings<T>, s: &mut Array2<T>, log_sums: &[T], first: usize) {
    for (r, (mut row, &l)) in s.outer_iter_mut().zip(log_sums).enumerate() {
        let limit = st.visible(first + r);
        row.slice_mut(s![limit..]).fill(T::zero());
        if l == T::neg_infinity() {
            row.fill(T::zero());
        } else {
            row.slice_mut(s![..limit]).mapv_inplace(|v| (v - l).exp_fast());
        }
    }
}

/// The forward kernel: the output `[…, Lq, dv]` (laid out as q is) and the row statistics
/// `[N, Lq]` (leading axes flattened).
fn fused_forward<T: Element>(
    st: &Settings<T>,
    q: ArrayViewD<'_, T>,
    k: ArrayViewD<'_, T>,
    v: ArrayViewD<'_, T>,
) -> (ArrayD<T>, Array2<T>) {
    let (d, dv) = (q.shape()[q.ndim() - 1], v.shape()[v.ndim() - 1]);
    let mut shape = q.shape().to_vec();
    *shape.last_mut().expect("two axes") = dv;
    let mut out = zeros_laid_out_like(&q, &shape);
    let (q, k, v) = (matrices(q), matrices(k), matrices(v));
    let n_all = q.len();
    let mut log_sums = Array2::<T>::zeros((n_all, st.lq));
    let full = st.full_mask();
    let keep_scale = T::from_f64_lossy(1.0 / (1.0 - st.dropout));
    let mut tasks = Vec::new();
    for (n, (out_n, sums_n)) in matrices_mut(out.view_mut()).into_iter().zip(log_sums.outer_iter_mut()).enumerate() {
        // Blocks of query rows, each a view with the output's lifetime (split off in turn).
        let (mut rest_out, mut rest_sums, mut first) = (out_n, sums_n, 0);
        while first < st.lq {
            let rows = BLOCK.min(st.lq - first);
            let (o, more_out) = rest_out.split_at(Axis(0), rows);
            let (l, more_sums) = rest_sums.split_at(Axis(0), rows);
            tasks.push((n, first, o, l));
            (rest_out, rest_sums, first) = (more_out, more_sums, first + rows);
        }
    }
    let work = n_all * st.lq * st.lk * (d + dv);
    // Blocks run on all threads when there are enough of them; their products then stay on
    // the thread of their block.
    let parallel = work > 1 << 16 && tasks.len() > 1;
    let run = |(n, first, mut o, mut l): (usize, usize, ArrayViewMut2<'_, T>, ndarray::ArrayViewMut1<'_, T>)| {
        let rows = o.nrows();
        let qb = q[n].slice(s![first..first + rows, ..]);
        let keys = st.keys_of_block(first, rows);
        let mut s = st.scores(qb, k[n].slice(s![..keys, ..]), st.mask_of(&full, n), first, !parallel);
        for (r, mut full_row) in s.outer_iter_mut().enumerate() {
            let i = first + r;
            // Causal rows use only their first i + 1 keys: the rest are zero weights.
            let limit = st.visible(i);
            full_row.slice_mut(s![limit..]).fill(T::zero());
            let mut row = full_row.slice_mut(s![..limit]);
            let m = row.iter().fold(T::neg_infinity(), |m, &v| if v > m { v } else { m });
            if m == T::neg_infinity() {
                row.fill(T::zero());
                l[r] = T::neg_infinity();
                continue;
            }
            // The exponentials first (a loop that vectorises), then their sum.
            row.mapv_inplace(|v| (v - m).exp_fast());
            let sum = row.iter().fold(T::zero(), |s, &e| s + e);
            l[r] = m + sum.ln();
            let inverse = T::one() / sum;
            for (j, w) in row.iter_mut().enumerate() {
                *w *= inverse;
                if st.dropout > 0.0 {
                    *w = if st.kept(n, i, j) { *w * keep_scale } else { T::zero() };
                }
            }
        }
        gemm_into_on(&mut o, s.view(), v[n].slice(s![..keys, ..]), false, !parallel);
    };
    if parallel {
        tasks.into_par_iter().for_each(run);
    } else {
        tasks.into_iter().for_each(run);
    }
    (out, log_sums)
}

/// One batch element's share of the backward kernel: its index and its rows of dq, dk, dv.
type GradParts<'a, T> = (usize, ((ArrayViewMut2<'a, T>, ArrayViewMut2<'a, T>), ArrayViewMut2<'a, T>));

/// The first-order backward kernel: (dq, dk, dv) in the inputs' shapes, each laid out as its
/// input is.
fn fused_backward<T: Element>(
    st: &Settings<T>,
    x: &[Tensor<T>],
    out: &Tensor<T>,
    g: &Tensor<T>,
    log_sums: &Array2<T>,
) -> (Tensor<T>, Tensor<T>, Tensor<T>) {
    let (xq, xk, xv) = (x[0].view(), x[1].view(), x[2].view());
    let (d, dv) = (xq.shape()[xq.ndim() - 1], xv.shape()[xv.ndim() - 1]);
    let mut dq = zeros_laid_out_like(&xq, xq.shape());
    let mut dk = zeros_laid_out_like(&xk, xk.shape());
    let mut dvv = zeros_laid_out_like(&xv, xv.shape());
    let (q, k, v) = (matrices(xq.clone()), matrices(xk.clone()), matrices(xv.clone()));
    let (o, g3) = (matrices(out.view()), matrices(g.view()));
    let n_all = q.len();
    let full = st.full_mask();
    let keep_scale = T::from_f64_lossy(1.0 / (1.0 - st.dropout));
    let scale = T::from_f64_lossy(st.scale);
    let work = n_all * st.lq * st.lk * (d + dv);
    let parallel = work > 1 << 16 && n_all > 1;
    // One task per batch element: it accumulates its own dk and dv over the query blocks.
    let run = |(n, ((mut dq_n, mut dk_n), mut dv_n)): GradParts<'_, T>| {
        let (k_n, v_n) = (k[n], v[n]);
        let mask = st.mask_of(&full, n);
        let mut first = 0;
        while first < st.lq {
            let rows = BLOCK.min(st.lq - first);
            let range = first..first + rows;
            let qb = q[n].slice(s![range.clone(), ..]);
            let gb = g3[n].slice(s![range.clone(), ..]);
            let ob = o[n].slice(s![range.clone(), ..]);
            let keys = st.keys_of_block(first, rows);
            let (k_b, v_b) = (k_n.slice(s![..keys, ..]), v_n.slice(s![..keys, ..]));
            let mut p = st.scores(qb, k_b, mask, first, !parallel);
            weights_from(st, &mut p, log_sums.slice(s![n, range.clone()]).as_slice().expect("contiguous rows"), first);
            // dv += (dropped weights)ᵀ·dO.
            if st.dropout > 0.0 {
                let mut dropped = p.clone();
                for (r, mut row) in dropped.outer_iter_mut().enumerate() {
                    for (j, w) in row.iter_mut().enumerate() {
                        *w = if st.kept(n, first + r, j) { *w * keep_scale } else { T::zero() };
                    }
                }
                gemm_into_on(&mut dv_n.slice_mut(s![..keys, ..]), dropped.t(), gb, true, !parallel);
            } else {
                gemm_into_on(&mut dv_n.slice_mut(s![..keys, ..]), p.t(), gb, true, !parallel);
            }
            // dP = dO·vᵀ (through the dropout mask), then dS = P ∘ (dP − Σⱼ P dP) · scale,
            // where Σⱼ P dP = dO·O row by row.
            let mut dp = Array2::<T>::zeros((rows, keys));
            gemm_into_on(&mut dp.view_mut(), gb, v_b.t(), false, !parallel);
            for (r, (mut ds_row, p_row)) in dp.outer_iter_mut().zip(p.outer_iter()).enumerate() {
                let delta = gb.row(r).iter().zip(ob.row(r)).fold(T::zero(), |acc, (&a, &b)| acc + a * b);
                if st.dropout > 0.0 {
                    for (j, ds) in ds_row.iter_mut().enumerate() {
                        *ds = if st.kept(n, first + r, j) { *ds * keep_scale } else { T::zero() };
                    }
                }
                ndarray::Zip::from(&mut ds_row).and(&p_row).for_each(|ds, &pw| *ds = pw * (*ds - delta) * scale);
            }
            gemm_into_on(&mut dq_n.slice_mut(s![range.clone(), ..]), dp.view(), k_b, false, !parallel);
            gemm_into_on(&mut dk_n.slice_mut(s![..keys, ..]), dp.t(), qb, true, !parallel);
            first += rows;
        }
    };
    let parts = matrices_mut(dq.view_mut())
        .into_iter()
        .zip(matrices_mut(dk.view_mut()))
        .zip(matrices_mut(dvv.view_mut()))
        .enumerate();
    if parallel {
        parts.collect::<Vec<_>>().into_par_iter().for_each(run);
    } else {
        parts.for_each(run);
    }
    (Tensor::from_array(dq), Tensor::from_array(dk), Tensor::from_array(dvv))
}

impl<T: Element> Tensor<T> {
    /// Scaled dot-product attention, softmax(q·kᵀ·scale + mask)·v, as one primitive (see the
    /// [module docs](self) for what it stores): `q` is `[…, Lq, d]`, `k` `[…, Lk, d]`, `v`
    /// `[…, Lk, dv]` with the same leading axes (batch, heads); the result is `[…, Lq, dv]`.
    ///
    /// ```
    /// use adjoint::{ops::AttentionOptions, Tensor};
    /// let q = Tensor::<f64>::rand_normal(&[2, 5, 4], 0.0, 1.0, 1);
    /// let (k, v) = (Tensor::rand_normal(&[2, 7, 4], 0.0, 1.0, 2), Tensor::rand_normal(&[2, 7, 3], 0.0, 1.0, 3));
    /// let out = Tensor::scaled_dot_product_attention(&q, &k, &v, &AttentionOptions::default());
    /// assert_eq!(out.shape(), &[2, 5, 3]);
    /// // Each output row is a weighted mean of v's rows: with v = 1, every output is 1.
    /// let ones = Tensor::scaled_dot_product_attention(&q, &k, &Tensor::ones(&[2, 7, 3]), &AttentionOptions::default());
    /// assert!(ones.to_vec().iter().all(|&o| (o - 1.0).abs() < 1e-12));
    /// ```
    ///
    /// # Panics
    /// If the shapes do not fit (naming them), the mask does not broadcast to
    /// `[…, Lq, Lk]`, or the dropout probability is not in [0, 1).
    #[track_caller]
    pub fn scaled_dot_product_attention(
        q: &Tensor<T>,
        k: &Tensor<T>,
        v: &Tensor<T>,
        options: &AttentionOptions<T>,
    ) -> Tensor<T> {
        let (qs, ks, vs) = (q.shape(), k.shape(), v.shape());
        let fits = qs.len() >= 2
            && ks.len() == qs.len()
            && vs.len() == qs.len()
            && qs[..qs.len() - 2] == ks[..ks.len() - 2]
            && ks[..ks.len() - 1] == vs[..vs.len() - 1]
            && qs[qs.len() - 1] == ks[ks.len() - 1];
        assert!(
            fits,
            "scaled_dot_product_attention: q {qs:?}, k {ks:?} and v {vs:?} do not fit ([…, Lq, d], […, Lk, d], […, Lk, dv])"
        );
        assert!(
            (0.0..1.0).contains(&options.dropout),
            "scaled_dot_product_attention: dropout must be in [0, 1), got {}",
            options.dropout
        );
        assert!(
            !options.mask.as_ref().is_some_and(Tensor::is_tracked),
            "scaled_dot_product_attention: the mask is tracked, but no gradient flows into a mask; detach it"
        );
        let settings = Settings::new(q, k, options);
        // Checks the mask's shape before any work.
        drop(settings.full_mask());
        let (value, log_sums) = fused_forward(&settings, q.view(), k.view(), v.view());
        Tensor::apply(Attention { settings, log_sums: Arc::new(log_sums) }, &[q, k, v], value)
    }

    /// The composed definition of [`Tensor::scaled_dot_product_attention`] (matmul, softmax,
    /// …, storing the `n × n` weights): the reference the primitive is tested against.
    pub fn scaled_dot_product_attention_composed(
        q: &Tensor<T>,
        k: &Tensor<T>,
        v: &Tensor<T>,
        options: &AttentionOptions<T>,
    ) -> Tensor<T> {
        let settings = Settings::new(q, k, options);
        settings.composed(q, k, v).2
    }
}

/// The attention weights softmax(q·kᵀ·scale + mask) (before dropout) as a constant `[…, Lq,
/// Lk]` tensor, for pictures of what each head attends to.
pub fn attention_weights<T: Element>(q: &Tensor<T>, k: &Tensor<T>, options: &AttentionOptions<T>) -> Tensor<T> {
    let settings = Settings { dropout: 0.0, ..Settings::new(q, k, options) };
    // The weights do not depend on v: a one-column stand-in keeps the product cheap.
    let mut v_shape = k.shape().to_vec();
    let last = v_shape.len() - 1;
    v_shape[last] = 1;
    crate::autodiff::no_grad(|| settings.composed(&q.detach(), &k.detach(), &Tensor::zeros(&v_shape)).0)
}
