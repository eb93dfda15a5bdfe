//! Matrix products through the `gemm` crate (fastest measured on this machine), 2-D or
//! batched over leading axes with broadcasting. Transposed operands are passed as strides,
//! so the reverse rules' Aᵀ and Bᵀ cost no copies. A dense layer's Jacobian (staggered
//! copies of x) is never built: its VJP is the two products below.

use ndarray::{ArrayD, IxDyn};

use crate::autodiff::primitive::{add_optional, record, Cotangents, Primitive};
use crate::ops::kernel::wants;
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
const PARALLEL_WORK: usize = 1 << 18;

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
        return ArrayD::<T>::zeros(IxDyn(&full([m, n])));
    }
    // Not zero-filled first: gemm writes every element (it does not read `dst`).
    let mut out = ArrayD::<T>::uninit(IxDyn(&full([m, n])));
    let nd = batch.len();
    let (sa, sb) = (a.strides(), b.strides());
    let parallelism = if m * n * k >= PARALLEL_WORK && rayon::current_num_threads() > 1 {
        gemm::Parallelism::Rayon(rayon::current_num_threads())
    } else {
        gemm::Parallelism::None
    };
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
        // SAFETY: the offsets and strides come from valid ndarray views of these shapes, and
        // `out` is a fresh contiguous [batch, m, n] array, written only at its own elements.
        // While gemm waits for its rayon workers, this thread may run stolen jobs: they get
        // the default recording state (see `parallel`).
        crate::autodiff::graph::parallel(|| unsafe {
            gemm::gemm(
                m,
                n,
                k,
                dst.add(flat * m * n),
                1,
                n as isize,
                false,
                a.as_ptr().offset(off_a),
                sa[nd + 1],
                sa[nd],
                b.as_ptr().offset(off_b),
                sb[nd + 1],
                sb[nd],
                T::zero(),
                T::one(),
                false,
                false,
                false,
                parallelism,
            );
        });
    }
    // SAFETY: every element of every batch's [m, n] block was written by gemm above.
    unsafe { out.assume_init() }
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
    /// layout) and b `[out]`, as one primitive.
    ///
    /// # Panics
    /// If the shapes do not fit, naming them.
    #[track_caller]
    pub fn linear(&self, weight: &Tensor<T>, bias: Option<&Tensor<T>>) -> Tensor<T> {
        let (sx, sw) = (self.shape(), weight.shape());
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
