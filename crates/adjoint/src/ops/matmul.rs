//! Matrix products through the `gemm` crate (fastest measured on this machine), 2-D or
//! batched over leading axes with broadcasting. Transposed operands are passed as strides,
//! so the reverse rules' Aᵀ and Bᵀ cost no copies. A dense layer's Jacobian (staggered
//! copies of x) is never built: its VJP is the two products below.

use ndarray::{ArrayD, IxDyn};

use crate::autodiff::primitive::{add_optional, record, Cotangents, Primitive};
use crate::ops::kernel::{threads_for, wants};
use crate::tensor::shape::broadcast_shapes;
use crate::tensor::{Data, Element, Tensor};

struct MatMul;
impl<T: Element> Primitive<T> for MatMul {
    fn name(&self) -> &'static str {
        "matmul"
    }
    fn vjp(&self, x: &[Tensor<T>], _: &Tensor<T>, g: &Tensor<T>) -> Cotangents<T> {
        let (a, b) = (&x[0], &x[1]);
        [wants(a).then(|| g.matmul(&b.transpose())), wants(b).then(|| a.transpose().matmul(g))].into()
    }
    fn jvp(&self, x: &[Tensor<T>], _: &Tensor<T>, t: &[Option<Tensor<T>>]) -> Option<Tensor<T>> {
        add_optional(t[0].as_ref().map(|t| t.matmul(&x[1])), t[1].as_ref().map(|t| x[0].matmul(t)))
    }
}

/// Work (m·n·k) above which the product is split across threads.
pub(crate) const PARALLEL_WORK: usize = 1 << 18;

impl<T: Element> Tensor<T> {
    /// The matrix product over the last two axes: `[…, m, k] × […, k, n] → […, m, n]`,
    /// broadcasting the leading (batch) axes. A 1-D operand is a row vector on the left and
    /// a column vector on the right, as in NumPy (`[k] × [k] → []`).
    ///
    /// # Panics
    /// If either operand has fewer than two axes, the inner lengths differ, or the batch
    /// axes cannot be broadcast.
    #[track_caller]
    pub fn matmul(&self, other: &Tensor<T>) -> Tensor<T> {
        // 1-D operands as NumPy: a vector on the left is a row, on the right a column, and
        // that axis is removed from the result again.
        if self.ndim() == 1 || other.ndim() == 1 {
            assert!(
                self.ndim() >= 1 && other.ndim() >= 1,
                "matmul: needs at least 1 axis on both sides, got shapes {:?} and {:?}",
                self.shape(),
                other.shape()
            );
            let a = if self.ndim() == 1 { self.reshape(&[1, self.len()]) } else { self.clone() };
            let b = if other.ndim() == 1 { other.reshape(&[other.len(), 1]) } else { other.clone() };
            let product = a.matmul(&b);
            let mut shape = product.shape().to_vec();
            if other.ndim() == 1 {
                shape.pop();
            }
            if self.ndim() == 1 {
                shape.remove(shape.len() - 1 - usize::from(other.ndim() != 1));
            }
            return product.reshape(&shape);
        }
        let (sa, sb) = (self.shape(), other.shape());
        assert!(
            sa.len() >= 2 && sb.len() >= 2,
            "matmul: needs at least 2 axes on both sides, got shapes {sa:?} and {sb:?}"
        );
        let (m, k) = (sa[sa.len() - 2], sa[sa.len() - 1]);
        let (k2, n) = (sb[sb.len() - 2], sb[sb.len() - 1]);
        assert!(k == k2, "matmul: inner lengths differ, shapes {sa:?} and {sb:?}");
        let batch = broadcast_shapes(&sa[..sa.len() - 2], &sb[..sb.len() - 2])
            .unwrap_or_else(|| panic!("matmul: batch axes of shapes {sa:?} and {sb:?} cannot be broadcast"));
        let out = matmul_kernel(self.view(), other.view(), &batch, m, k, n);
        record(&MatMul, &[self, other], Data::from_array(out))
    }
}

fn matmul_kernel<T: Element>(
    a: ndarray::ArrayViewD<'_, T>,
    b: ndarray::ArrayViewD<'_, T>,
    batch: &[usize],
    m: usize,
    k: usize,
    n: usize,
) -> ArrayD<T> {
    crate::profile::matmul(|| gemm_into_new(a, b, batch, m, k, n))
}

fn gemm_into_new<T: Element>(
    a: ndarray::ArrayViewD<'_, T>,
    b: ndarray::ArrayViewD<'_, T>,
    batch: &[usize],
    m: usize,
    k: usize,
    n: usize,
) -> ArrayD<T> {
    let full = |tail: [usize; 2]| -> Vec<usize> { batch.iter().copied().chain(tail).collect() };
    let a = a.broadcast(IxDyn(&full([m, k]))).expect("checked broadcast");
    let b = b.broadcast(IxDyn(&full([k, n]))).expect("checked broadcast");
    let count: usize = batch.iter().product();
    if count == 0 || m == 0 || n == 0 || k == 0 {
        return crate::tensor::pool::array_zeros(&full([m, n]));
    }
    // Not zero-filled first: gemm writes every element (it does not read `dst`).
    let mut out = crate::tensor::pool::array_uninit::<T>(&full([m, n]));
    let nd = batch.len();
    let (sa, sb) = (a.strides(), b.strides());
    let threads = threads_for(m * n * k, PARALLEL_WORK);
    let dst = out.as_mut_ptr() as *mut T;
    for flat in 0..count {
        // Offsets of this batch element in each (possibly broadcast, stride-0) operand.
        let (mut rest, mut off_a, mut off_b) = (flat, 0isize, 0isize);
        for d in (0..nd).rev() {
            let i = (rest % batch[d]) as isize;
            rest /= batch[d];
            off_a += i * sa[d];
            off_b += i * sb[d];
        }
        let block = Block {
            m,
            n,
            k,
            dst: dst.wrapping_add(flat * m * n),
            dst_row: n as isize,
            a: a.as_ptr().wrapping_offset(off_a),
            a_strides: (sa[nd], sa[nd + 1]),
            b: b.as_ptr().wrapping_offset(off_b),
            b_strides: (sb[nd], sb[nd + 1]),
            accumulate: false,
        };
        // SAFETY: the offsets and strides come from valid ndarray views of these shapes, and
        // `out` is a fresh contiguous [batch, m, n] array, written only at its own elements;
        // the parts of `split` are disjoint. While this thread waits for the other parts it
        // may run stolen jobs: they get the default recording state (see `parallel`).
        if threads > 1 {
            crate::ops::kernel::for_each_part(block.split(threads), |part| unsafe { part.run() });
        } else {
            unsafe { block.run() };
        }
    }
    // SAFETY: every element of every batch's [m, n] block was written by gemm above.
    unsafe { out.assume_init() }
}

/// One product dst = a·b over raw operands with (row, column) strides; `dst`'s rows are
/// contiguous, `dst_row` apart.
///
/// Products big enough to share are cut into one block per thread, each run by gemm on one
/// thread, rather than left to gemm's own splitting: measured on the lecture network's
/// shapes (500×784×100 and its backward products, 2 threads), that is 10% faster for the
/// big product and twice as fast for the small ones (BENCHMARKS.md).
#[derive(Clone, Copy)]
struct Block<T> {
    m: usize,
    n: usize,
    k: usize,
    dst: *mut T,
    dst_row: isize,
    a: *const T,
    a_strides: (isize, isize),
    b: *const T,
    b_strides: (isize, isize),
    /// dst += a·b instead of dst = a·b.
    accumulate: bool,
}

// SAFETY: a Block only describes memory that its creator keeps alive while the parts of
// one `split` read the operands and write their disjoint parts of the output.
unsafe impl<T: Send + Sync> Send for Block<T> {}

impl<T: Element> Block<T> {
    /// Up to `parts` blocks covering this one, cut along the longer side of the output in
    /// multiples of 16 (the f32 kernels' row tile), each to be run single-threaded. The
    /// parts can be uneven (100 columns on 2 threads: 64 + 36): cuts in multiples of 8,
    /// more even, made LeNet's step slower (15.5–15.8 → 16.5–17.4 ms, 2 threads).
    fn split(self, parts: usize) -> Vec<Block<T>> {
        let long = self.m.max(self.n);
        let step = long.div_ceil(parts).next_multiple_of(16);
        (0..long)
            .step_by(step)
            .map(|start| {
                let len = step.min(long - start);
                if self.m >= self.n {
                    Block {
                        m: len,
                        dst: self.dst.wrapping_offset(start as isize * self.dst_row),
                        a: self.a.wrapping_offset(start as isize * self.a_strides.0),
                        ..self
                    }
                } else {
                    Block {
                        n: len,
                        dst: self.dst.wrapping_add(start),
                        b: self.b.wrapping_offset(start as isize * self.b_strides.1),
                        ..self
                    }
                }
            })
            .collect()
    }

    /// Runs the product on this thread.
    ///
    /// # Safety
    /// The pointers and strides must describe valid matrices of the block's shapes, and no
    /// other thread may touch this block's part of `dst`.
    unsafe fn run(&self) {
        gemm::gemm(
            self.m,
            self.n,
            self.k,
            self.dst,
            1,
            self.dst_row,
            self.accumulate,
            self.a,
            self.a_strides.1,
            self.a_strides.0,
            self.b,
            self.b_strides.1,
            self.b_strides.0,
            if self.accumulate { T::one() } else { T::zero() },
            T::one(),
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// dst = a·b, or dst += a·b when `accumulate`, into a buffer the caller keeps (for kernels
/// that run many small products, such as the recurrent sequence, without allocating per
/// product); shared between the pool's threads as [`Tensor::matmul`]'s products are. The
/// operands may have any strides; `dst`'s rows must be contiguous.
///
/// # Panics
/// If the shapes do not fit or `dst`'s columns are not contiguous.
pub(crate) fn gemm_into<T: Element>(
    dst: &mut ndarray::ArrayViewMut2<'_, T>,
    a: ndarray::ArrayView2<'_, T>,
    b: ndarray::ArrayView2<'_, T>,
    accumulate: bool,
) {
    gemm_into_on(dst, a, b, accumulate, true);
}

/// [`gemm_into`], shared between the pool's threads only when `share`: kernels that already
/// share their work (a convolution's tasks of whole images) run each product on their own
/// thread. Unshared products are not counted by `profile`: the caller's tasks overlap in
/// time.
pub(crate) fn gemm_into_on<T: Element>(
    dst: &mut ndarray::ArrayViewMut2<'_, T>,
    a: ndarray::ArrayView2<'_, T>,
    b: ndarray::ArrayView2<'_, T>,
    accumulate: bool,
    share: bool,
) {
    let (m, k, n) = (a.nrows(), a.ncols(), b.ncols());
    assert!(b.nrows() == k && dst.dim() == (m, n), "gemm_into: {:?}·{:?} into {:?}", a.shape(), b.shape(), dst.shape());
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst.fill(T::zero());
        }
        return;
    }
    assert!(n == 1 || dst.strides()[1] == 1, "gemm_into: the destination's rows are not contiguous");
    let block = Block {
        m,
        n,
        k,
        dst: dst.as_mut_ptr(),
        dst_row: dst.strides()[0],
        a: a.as_ptr(),
        a_strides: (a.strides()[0], a.strides()[1]),
        b: b.as_ptr(),
        b_strides: (b.strides()[0], b.strides()[1]),
        accumulate,
    };
    if !share {
        // SAFETY: as below, on this thread.
        unsafe { block.run() };
        return;
    }
    let threads = threads_for(m * n * k, PARALLEL_WORK);
    // SAFETY: the pointers and strides come from valid views of the checked shapes, `dst` is
    // borrowed mutably for the call, and the parts of `split` write disjoint parts of it.
    // Counted as `matmul_kernel`'s products are (see `profile`).
    crate::profile::matmul(|| {
        if threads > 1 {
            crate::ops::kernel::for_each_part(block.split(threads), |part| unsafe { part.run() });
        } else {
            unsafe { block.run() };
        }
    })
}

/// The affine map of a fully connected layer, x·Wᵀ + b, as one primitive: its rules are the
/// three products of backpropagation (∂x = δ·W, ∂W = δᵀ·x, ∂b = Σ δ), never the layer's
/// Jacobian.
struct LinearOp;
impl<T: Element> Primitive<T> for LinearOp {
    fn name(&self) -> &'static str {
        "linear"
    }
    fn vjp(&self, inputs: &[Tensor<T>], _: &Tensor<T>, g: &Tensor<T>) -> Cotangents<T> {
        let (x, w) = (&inputs[0], &inputs[1]);
        let mut out = Cotangents::new();
        out.push(wants(x).then(|| g.matmul(w)));
        out.push(wants(w).then(|| g.transpose().matmul(x)));
        if let Some(b) = inputs.get(2) {
            out.push(wants(b).then(|| g.sum(&[0], false)));
        }
        out
    }
    fn jvp(&self, inputs: &[Tensor<T>], _: &Tensor<T>, t: &[Option<Tensor<T>>]) -> Option<Tensor<T>> {
        let (x, w) = (&inputs[0], &inputs[1]);
        let tx = t[0].as_ref().map(|t| t.matmul(&w.transpose()));
        let tw = t[1].as_ref().map(|t| x.matmul(&t.transpose()));
        let tb = t.get(2).cloned().flatten();
        add_optional(add_optional(tx, tw), tb)
    }
}

impl<T: Element> Tensor<T> {
    /// A fully connected layer's map x·Wᵀ + b for x `[batch, in]`, W `[out, in]` (PyTorch's
    /// layout) and b `[out]`, as one primitive. Inputs with more leading axes (`[batch, seq,
    /// in]`) are mapped row by row, as PyTorch's `F.linear` does.
    ///
    /// # Panics
    /// If the shapes do not fit, naming them.
    #[track_caller]
    pub fn linear(&self, weight: &Tensor<T>, bias: Option<&Tensor<T>>) -> Tensor<T> {
        let (sx, sw) = (self.shape(), weight.shape());
        if sx.len() > 2 && sw.len() == 2 && sx[sx.len() - 1] == sw[1] {
            let rows: usize = sx[..sx.len() - 1].iter().product();
            let mut shape = sx[..sx.len() - 1].to_vec();
            shape.push(sw[0]);
            return self.reshape(&[rows, sw[1]]).linear(weight, bias).reshape(&shape);
        }
        assert!(
            sx.len() == 2 && sw.len() == 2 && sx[1] == sw[1],
            "linear: input of shape {sx:?} does not fit a weight of shape {sw:?} ([out, in])"
        );
        if let Some(b) = bias {
            assert!(b.shape() == [sw[0]], "linear: bias of shape {:?} for a weight of shape {sw:?}", b.shape());
        }
        let mut out = matmul_kernel(self.view(), weight.view().reversed_axes(), &[], sx[0], sx[1], sw[0]);
        if let Some(b) = bias {
            out += &b.view();
        }
        match bias {
            Some(b) => record(&LinearOp, &[self, weight, b], Data::from_array(out)),
            None => record(&LinearOp, &[self, weight], Data::from_array(out)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The product by its definition, summed in f64.
    fn naive(a: &ArrayD<f64>, b: &ArrayD<f64>) -> ArrayD<f64> {
        let (m, k, n) = (a.shape()[0], a.shape()[1], b.shape()[1]);
        ArrayD::from_shape_fn(IxDyn(&[m, n]), |ix| (0..k).map(|p| a[[ix[0], p]] * b[[p, ix[1]]]).sum())
    }

    fn filled(shape: &[usize], seed: usize) -> ArrayD<f64> {
        let mut i = seed;
        ArrayD::from_shape_simple_fn(IxDyn(shape), || {
            i = (i * 7919 + 13) % 1009;
            i as f64 / 1009.0 - 0.5
        })
    }

    #[test]
    fn products_shared_between_threads_equal_the_definition() {
        // Above PARALLEL_WORK, cut along rows (m ≥ n) or columns, into blocks of 16 and a
        // remainder, with transposed (strided) operands and 2 or 3 threads.
        let shapes = [(70, 97, 61), (37, 150, 50), (20, 2000, 10), (500, 784, 100)];
        for threads in [2, 3] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            for &(m, k, n) in &shapes {
                // These products take the split path on this pool.
                assert_eq!(pool.install(|| threads_for(m * k * n, PARALLEL_WORK)), threads);
                let (a, b) = (filled(&[m, k], m), filled(&[k, n], n));
                let expected = naive(&a, &b);
                let at = Tensor::from_array(a.t().to_owned().into_dyn());
                let bt = Tensor::from_array(b.t().to_owned().into_dyn());
                let (a, b) = (Tensor::from_array(a), Tensor::from_array(b));
                for (x, y) in [(a.clone(), b.clone()), (at.transpose(), bt.transpose()), (a.clone(), bt.transpose())] {
                    let got = pool.install(|| x.matmul(&y)).to_array();
                    let err = (&got - &expected).iter().fold(0.0f64, |e, d| e.max(d.abs()));
                    assert!(err < 1e-12, "{m}×{k}×{n} on {threads} threads: off by {err}");
                }
                let single = Tensor::from_array(a.to_array().mapv(|v| v as f32));
                let got = pool.install(|| single.matmul(&Tensor::from_array(b.to_array().mapv(|v| v as f32))));
                let err = (got.to_array().mapv(f64::from) - &expected).iter().fold(0.0f64, |e, d| e.max(d.abs()));
                assert!(err < 1e-4 * k as f64, "f32 {m}×{k}×{n}: off by {err}");
            }
        }
    }

    #[test]
    fn batched_products_shared_between_threads_equal_the_definition() {
        // A batch of 3 against one broadcast operand (stride 0 over the batch), on either
        // side, cut by columns (n > m) and by rows (m > n).
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        let (a, b) = (filled(&[3, 40, 90], 1), filled(&[90, 80], 2));
        let (c, d) = (filled(&[80, 90], 3), filled(&[3, 90, 40], 4));
        let cases = [
            (Tensor::from_array(a.clone()), Tensor::from_array(b.clone())),
            (Tensor::from_array(c.clone()), Tensor::from_array(d.clone())),
        ];
        for (case, (x, y)) in cases.into_iter().enumerate() {
            let got = pool.install(|| x.matmul(&y)).to_array();
            for i in 0..3 {
                let pick = |t: &Tensor<f64>| match t.ndim() {
                    3 => t.to_array().index_axis(ndarray::Axis(0), i).to_owned().into_dyn(),
                    _ => t.to_array(),
                };
                let expected = naive(&pick(&x), &pick(&y));
                let err = (&got.index_axis(ndarray::Axis(0), i) - &expected).iter().fold(0.0f64, |e, d| e.max(d.abs()));
                assert!(err < 1e-12, "case {case}, batch element {i}: off by {err}");
            }
        }
    }
}
