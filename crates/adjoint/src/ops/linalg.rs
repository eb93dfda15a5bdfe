//! Linear algebra with derivatives: `solve`, `inverse`, `det`, `logdet`, `cholesky`.
//!
//! The factorisations come from `faer` (computed in f64 and returned in the element type).
//! The rules are the standard matrix-calculus ones (Giles 2008, Murray 2016), written over
//! tensors with `solve` and `matmul`, so derivatives of any order follow:
//!
//! - X = A⁻¹B: B̄ = A⁻ᵀX̄, Ā = −B̄Xᵀ; Ẋ = A⁻¹(Ḃ − ȦX);
//! - d = det A: Ā = ḡ·d·A⁻ᵀ; ḋ = d·tr(A⁻¹Ȧ); log|det A| likewise without the factor d;
//! - A = LLᵀ: L̇ = L·Φ(L⁻¹ȦL⁻ᵀ), Ā = sym(L⁻ᵀΦ(LᵀL̄)L⁻¹), Φ taking the lower triangle with
//!   half the diagonal.
//!
//! Invariants: matrices are 2-D and square. A singular matrix gives infinities or NaN, as
//! in JAX (no panic: it is a property of the data); `cholesky` of a matrix that is not
//! positive definite gives NaN. `cholesky` reads only the lower triangle, and its gradient
//! is symmetric, as PyTorch's and JAX's.

use faer::linalg::solvers::Solve;
use faer::Mat;
use ndarray::{ArrayD, IxDyn};

use crate::autodiff::primitive::{add_optional, record_rule, Cotangents, Primitive};
use crate::ops::kernel::wants;
use crate::tensor::{Data, Element, Tensor};

fn to_faer<T: Element>(t: &Tensor<T>) -> Mat<f64> {
    let v = t.view();
    let (rows, cols) = (v.shape()[0], v.shape().get(1).copied().unwrap_or(1));
    if v.ndim() == 1 {
        Mat::from_fn(rows, 1, |i, _| v[[i]].to_f64_lossless())
    } else {
        Mat::from_fn(rows, cols, |i, j| v[[i, j]].to_f64_lossless())
    }
}

fn from_faer<T: Element>(m: faer::MatRef<'_, f64>, shape: &[usize]) -> ArrayD<T> {
    let cols = m.ncols();
    ArrayD::from_shape_fn(IxDyn(shape), |i| {
        let (r, c) = if shape.len() == 1 { (i[0], 0) } else { (i[0], i[1]) };
        debug_assert!(c < cols);
        T::from_f64_lossy(m[(r, c)])
    })
}

#[track_caller]
fn square(op: &str, a: &[usize]) -> usize {
    assert!(a.len() == 2 && a[0] == a[1], "{op}: needs a square matrix, got shape {a:?}");
    a[0]
}

/// X = A⁻¹B.
struct SolveOp;
impl<T: Element> Primitive<T> for SolveOp {
    fn name(&self) -> &'static str {
        "solve"
    }
    fn vjp(&self, x: &[Tensor<T>], out: &Tensor<T>, g: &Tensor<T>) -> Cotangents<T> {
        let (a, b) = (&x[0], &x[1]);
        let b_bar = a.transpose().solve(g);
        let a_bar = wants(a).then(|| {
            let (bb, xx) = if out.ndim() == 1 {
                (b_bar.reshape(&[-1, 1]), out.reshape(&[1, -1]))
            } else {
                (b_bar.clone(), out.transpose())
            };
            -bb.matmul(&xx)
        });
        [a_bar, wants(b).then_some(b_bar)].into()
    }
    fn jvp(&self, x: &[Tensor<T>], out: &Tensor<T>, t: &[Option<Tensor<T>>]) -> Option<Tensor<T>> {
        let rhs = add_optional(t[1].clone(), t[0].as_ref().map(|ta| -ta.matmul(out)))?;
        Some(x[0].solve(&rhs))
    }
}

/// det A.
struct Det;
impl<T: Element> Primitive<T> for Det {
    fn name(&self) -> &'static str {
        "det"
    }
    fn vjp(&self, x: &[Tensor<T>], out: &Tensor<T>, g: &Tensor<T>) -> Cotangents<T> {
        [Some(x[0].inverse().transpose() * (g * out))].into()
    }
    fn jvp(&self, x: &[Tensor<T>], out: &Tensor<T>, t: &[Option<Tensor<T>>]) -> Option<Tensor<T>> {
        t[0].as_ref().map(|t| out * &trace_of(&x[0].solve(t)))
    }
}

/// log|det A|.
struct LogDet;
impl<T: Element> Primitive<T> for LogDet {
    fn name(&self) -> &'static str {
        "logdet"
    }
    fn vjp(&self, x: &[Tensor<T>], _: &Tensor<T>, g: &Tensor<T>) -> Cotangents<T> {
        [Some(x[0].inverse().transpose() * g)].into()
    }
    fn jvp(&self, x: &[Tensor<T>], _: &Tensor<T>, t: &[Option<Tensor<T>>]) -> Option<Tensor<T>> {
        t[0].as_ref().map(|t| trace_of(&x[0].solve(t)))
    }
}

/// L with A = LLᵀ.
struct Cholesky;
impl<T: Element> Primitive<T> for Cholesky {
    fn name(&self) -> &'static str {
        "cholesky"
    }
    fn vjp(&self, _: &[Tensor<T>], l: &Tensor<T>, g: &Tensor<T>) -> Cotangents<T> {
        let phi = lower_half_diagonal(&l.transpose().matmul(g));
        // S = L⁻ᵀ Φ L⁻¹ = (L⁻ᵀ (L⁻ᵀ Φᵀ)ᵀ)…: two solves against Lᵀ.
        let lt = l.transpose();
        let s = lt.solve(&lt.solve(&phi.transpose()).transpose());
        [Some((&s + &s.transpose()) * crate::ops::kernel::c::<T>(0.5))].into()
    }
    fn jvp(&self, _: &[Tensor<T>], l: &Tensor<T>, t: &[Option<Tensor<T>>]) -> Option<Tensor<T>> {
        // L⁻¹ Ȧ L⁻ᵀ = L⁻¹ (L⁻¹ Ȧᵀ)ᵀ; only the lower triangle of Ȧ is read, as in the forward.
        let ta = t[0].as_ref()?;
        let sym = symmetric_from_lower(ta);
        let inner = l.solve(&l.solve(&sym.transpose()).transpose());
        Some(l.matmul(&lower_half_diagonal(&inner)))
    }
}

/// The trace of a square matrix, as a 0-d tensor (differentiable).
fn trace_of<T: Element>(m: &Tensor<T>) -> Tensor<T> {
    let n = m.shape()[0];
    (m * &Tensor::eye(n)).sum_all()
}

/// Φ(M): the lower triangle of M with its diagonal halved.
fn lower_half_diagonal<T: Element>(m: &Tensor<T>) -> Tensor<T> {
    let n = m.shape()[0];
    let mask = ArrayD::from_shape_fn(IxDyn(&[n, n]), |i| {
        T::from_f64_lossy(match i[0].cmp(&i[1]) {
            std::cmp::Ordering::Greater => 1.0,
            std::cmp::Ordering::Equal => 0.5,
            std::cmp::Ordering::Less => 0.0,
        })
    });
    m * &Tensor::from_array(mask)
}

/// The symmetric matrix whose lower triangle is that of M.
fn symmetric_from_lower<T: Element>(m: &Tensor<T>) -> Tensor<T> {
    let half = lower_half_diagonal(m);
    &half + &half.transpose()
}

impl<T: Element> Tensor<T> {
    /// X with AX = B for a square A (`self`) and B `[n]` or `[n, k]`, by LU with partial
    /// pivoting. Differentiable in both.
    ///
    /// ```
    /// use adjoint::Tensor;
    /// let a = Tensor::<f64>::from_vec(vec![2.0, 1.0, 1.0, 3.0], &[2, 2]);
    /// let x = a.solve(&Tensor::from_vec(vec![3.0, 5.0], &[2]));
    /// assert!((x.to_vec()[0] - 0.8).abs() < 1e-12 && (x.to_vec()[1] - 1.4).abs() < 1e-12);
    /// ```
    ///
    /// # Panics
    /// If A is not square or B does not have A's number of rows.
    #[track_caller]
    pub fn solve(&self, b: &Tensor<T>) -> Tensor<T> {
        let n = square("solve", self.shape());
        assert!(
            (b.ndim() == 1 || b.ndim() == 2) && b.shape()[0] == n,
            "solve: right-hand side of shape {:?} for a matrix of shape {:?}",
            b.shape(),
            self.shape()
        );
        let x = self_lu(self).solve(to_faer(b));
        let out = from_faer::<T>(x.as_ref(), b.shape());
        record_rule(SolveOp, &[self, b], Data::from_array(out))
    }

    /// A⁻¹ (as `solve(A, I)`; prefer [`Tensor::solve`] where a product with the inverse is
    /// all that is needed).
    ///
    /// # Panics
    /// If the matrix is not square.
    #[track_caller]
    pub fn inverse(&self) -> Tensor<T> {
        let n = square("inverse", self.shape());
        self.solve(&Tensor::eye(n))
    }

    /// The determinant, as a 0-d tensor.
    ///
    /// # Panics
    /// If the matrix is not square.
    #[track_caller]
    pub fn det(&self) -> Tensor<T> {
        square("det", self.shape());
        let d = to_faer(self).as_ref().determinant();
        record_rule(Det, &[self], Data::Scalar(T::from_f64_lossy(d)))
    }

    /// log |det A|, as a 0-d tensor (finite where `det` would overflow).
    ///
    /// # Panics
    /// If the matrix is not square.
    #[track_caller]
    pub fn logdet(&self) -> Tensor<T> {
        let n = square("logdet", self.shape());
        let lu = self_lu(self);
        // |det A| = Π |U_ii|; summing logs avoids the product's overflow.
        let u = lu.U();
        let value: f64 = (0..n).map(|i| u[(i, i)].abs().ln()).sum();
        record_rule(LogDet, &[self], Data::Scalar(T::from_f64_lossy(value)))
    }

    /// The lower-triangular L with A = LLᵀ for a symmetric positive definite A (only the
    /// lower triangle is read); NaN where A is not positive definite.
    ///
    /// # Panics
    /// If the matrix is not square.
    #[track_caller]
    pub fn cholesky(&self) -> Tensor<T> {
        let n = square("cholesky", self.shape());
        let a = to_faer(self);
        let out = match a.llt(faer::Side::Lower) {
            Ok(llt) => {
                let l = llt.L();
                ArrayD::from_shape_fn(IxDyn(&[n, n]), |i| {
                    T::from_f64_lossy(if i[1] <= i[0] { l[(i[0], i[1])] } else { 0.0 })
                })
            }
            Err(_) => ArrayD::from_elem(IxDyn(&[n, n]), T::nan()),
        };
        record_rule(Cholesky, &[self], Data::from_array(out))
    }
}

fn self_lu<T: Element>(a: &Tensor<T>) -> faer::linalg::solvers::PartialPivLu<f64> {
    to_faer(a).partial_piv_lu()
}
