//! Linear algebra with derivatives: `solve`, `inverse`, `det`, `logdet`, `cholesky`.
//!
//! The factorisations come from `faer` (computed in f64 and returned in the element type).
//! The rules are the standard matrix-calculus ones (Giles 2008, Murray 2016), written over
//! tensors with `solve` and `matmul`, so derivatives of any order follow:
//!
//! - X = A⁻¹B: B̄ = A⁻ᵀX̄, Ā = −B̄Xᵀ; Ẋ = A⁻¹(Ḃ − ȦX);
//! - d = det A: Ā = ḡ·cof A and ḋ = ⟨cof A, Ȧ⟩, with the cofactor matrix cof A (= d·A⁻ᵀ
//!   where A is invertible) computed from the SVD, so that both stay finite and right for a
//!   singular A (PyTorch and JAX do the same); log|det A| as ḡ·A⁻ᵀ and tr(A⁻¹Ȧ);
//! - C = cof A: Ċ = tr(A⁻¹Ȧ)·C − C·(A⁻¹Ȧ)ᵀ where A is well conditioned (written with
//!   `solve`, so differentiable again); near a singular A the same derivative in the SVD's
//!   frame, A = UΣVᵀ: Ċ = s·U·D(UᵀȦV)·Vᵀ with D exact for any rank (so det's Hessian is
//!   right at singular matrices; higher orders there treat U, Σ, V as constants);
//! - A = LLᵀ: L̇ = L·Φ(L⁻¹ sym(Ȧ) L⁻ᵀ), Ā = sym(L⁻ᵀΦ(LᵀL̄)L⁻¹), Φ taking the lower triangle
//!   with half the diagonal and sym(M) = (M + Mᵀ)/2: both rules are those of
//!   chol(sym(A)), so that forward and reverse mode agree for any direction, as in JAX and
//!   PyTorch.
//!
//! Every operation also takes a batch `[…, n, n]`: the leading axes (broadcast together
//! for `solve`, as NumPy and PyTorch do) index independent matrices, each handled by the
//! 2-D operation and stacked, so the rules above apply per matrix unchanged.
//!
//! Invariants: the rules see 2-D square matrices. A singular matrix gives infinities or NaN from
//! `solve`, `inverse` and `logdet`, as in JAX (no panic: it is a property of the data), and
//! 0 from `det`; `cholesky` of a matrix that is not positive definite gives NaN. `cholesky`
//! reads only the lower triangle, and its derivatives treat A as symmetric.

use faer::linalg::solvers::Solve;
use faer::Mat;
use ndarray::{ArrayD, IxDyn};

use crate::autodiff::primitive::{add_optional, record_rule, Cotangents, Primitive};
use crate::ops::kernel::wants;
use crate::tensor::shape::broadcast_shapes;
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
    fn vjp(&self, x: &[Tensor<T>], _: &Tensor<T>, g: &Tensor<T>) -> Cotangents<T> {
        [Some(x[0].cofactor() * g)].into()
    }
    fn jvp(&self, x: &[Tensor<T>], _: &Tensor<T>, t: &[Option<Tensor<T>>]) -> Option<Tensor<T>> {
        t[0].as_ref().map(|t| (&x[0].cofactor() * t).sum_all())
    }
}

/// The cofactor matrix C = cof A (Cᵢⱼ = (−1)ⁱ⁺ʲ det of A without row i and column j).
struct Cofactor;

/// Whether `a` is far enough from singular for the rules written with `solve` (whose
/// derivatives of every order are exact); otherwise the rules work in the SVD's frame.
fn well_conditioned(a: &Mat<f64>) -> bool {
    match a.svd() {
        Ok(svd) => {
            let s = svd.S().column_vector();
            let (hi, lo) = (0..s.nrows()).fold((0.0f64, f64::INFINITY), |(h, l), i| (h.max(s[i]), l.min(s[i])));
            lo > 1e-8 * hi && lo.is_finite()
        }
        Err(_) => false,
    }
}

/// The SVD frame of `a` = UΣVᵀ: U, V, s = det U·det V, and R with Rᵢₖ = Π over l ∉ {i, k}
/// of σₗ (0 on the diagonal): D(E) = diag(R·diag E) − R∘Eᵀ is the derivative of cof at Σ.
struct Frame {
    u: Mat<f64>,
    v: Mat<f64>,
    sign: f64,
    r: Mat<f64>,
    sigma: Vec<f64>,
}

fn frame(a: &Mat<f64>) -> Option<Frame> {
    let svd = a.svd().ok()?;
    let n = a.nrows();
    let s = svd.S().column_vector();
    let sigma: Vec<f64> = (0..n).map(|i| s[i]).collect();
    let r =
        Mat::from_fn(
            n,
            n,
            |i, k| if i == k { 0.0 } else { (0..n).filter(|&l| l != i && l != k).map(|l| sigma[l]).product() },
        );
    let (u, v) = (svd.U().to_owned(), svd.V().to_owned());
    let sign = orthogonal_sign(&u) * orthogonal_sign(&v);
    Some(Frame { u, v, sign, r, sigma })
}

/// det Q = ±1 of an orthogonal Q, from its LU factors.
fn orthogonal_sign(q: &Mat<f64>) -> f64 {
    let d = lu_determinant(q);
    if d < 0.0 {
        -1.0
    } else {
        1.0
    }
}

/// det A from the LU factors with partial pivoting: exactly 0 where a pivot is 0.
fn lu_determinant(a: &Mat<f64>) -> f64 {
    let n = a.nrows();
    if n == 0 {
        return 1.0;
    }
    let finite = (0..n).all(|i| (0..n).all(|j| a[(i, j)].is_finite()));
    let lu = a.partial_piv_lu();
    let u = lu.U();
    // A zero pivot means the rest of the column was zero too: det is 0, and what the
    // factorisation wrote after it (0/0) is not to be multiplied in.
    if finite && (0..n).any(|i| u[(i, i)] == 0.0) {
        return 0.0;
    }
    let product: f64 = (0..n).map(|i| u[(i, i)]).product();
    // The permutation's sign: (−1)^(n − number of cycles).
    let (forward, _) = lu.P().arrays();
    let mut seen = vec![false; n];
    let mut cycles = 0;
    for start in 0..n {
        if !seen[start] {
            cycles += 1;
            let mut i = start;
            while !seen[i] {
                seen[i] = true;
                i = forward[i];
            }
        }
    }
    if (n - cycles) % 2 == 1 {
        -product
    } else {
        product
    }
}

fn constant<T: Element>(m: &Mat<f64>) -> Tensor<T> {
    Tensor::from_array(from_faer::<T>(m.as_ref(), &[m.nrows(), m.ncols()]))
}

impl<T: Element> Primitive<T> for Cofactor {
    fn name(&self) -> &'static str {
        "cofactor"
    }
    fn vjp(&self, x: &[Tensor<T>], c: &Tensor<T>, g: &Tensor<T>) -> Cotangents<T> {
        let a = &x[0];
        let n = a.shape()[0];
        let fa = to_faer(a);
        if well_conditioned(&fa) {
            // ⟨Ḡ, tr(X)C − CXᵀ⟩ with X = A⁻¹Ȧ is ⟨⟨Ḡ, C⟩I − ḠᵀC, X⟩, so Ā = A⁻ᵀ(⟨Ḡ, C⟩I − ḠᵀC).
            let inner = (g * c).sum_all();
            let m = &Tensor::eye(n) * &inner - g.transpose().matmul(c);
            return [Some(a.transpose().solve(&m))].into();
        }
        let Some(f) = frame(&fa) else { return [Some(Tensor::full(&[n, n], T::nan()))].into() };
        // The adjoint of E ↦ s·U·(diag(R·diag Ẽ) − R∘Ẽᵀ)·Vᵀ with Ẽ = UᵀEV.
        let (u, v, r) = (constant::<T>(&f.u), constant::<T>(&f.v), constant::<T>(&f.r));
        let gt = u.transpose().matmul(g).matmul(&v) * crate::ops::kernel::c::<T>(f.sign);
        let diagonal = (&gt * &Tensor::eye(n)).sum(&[1][..], false);
        let e_bar =
            diag_matrix(&r.transpose().matmul(&diagonal.reshape(&[-1, 1])).reshape(&[-1])) - (&gt * &r).transpose();
        [Some(u.matmul(&e_bar).matmul(&v.transpose()))].into()
    }
    fn jvp(&self, x: &[Tensor<T>], c: &Tensor<T>, t: &[Option<Tensor<T>>]) -> Option<Tensor<T>> {
        let (a, e) = (&x[0], t[0].as_ref()?);
        let n = a.shape()[0];
        let fa = to_faer(a);
        if well_conditioned(&fa) {
            let xm = a.solve(e);
            return Some(c * &trace_of(&xm) - c.matmul(&xm.transpose()));
        }
        let Some(f) = frame(&fa) else { return Some(Tensor::full(&[n, n], T::nan())) };
        let (u, v, r) = (constant::<T>(&f.u), constant::<T>(&f.v), constant::<T>(&f.r));
        let et = u.transpose().matmul(e).matmul(&v);
        let diagonal = (&et * &Tensor::eye(n)).sum(&[1][..], false);
        let d = diag_matrix(&r.matmul(&diagonal.reshape(&[-1, 1])).reshape(&[-1])) - &r * &et.transpose();
        Some(u.matmul(&d).matmul(&v.transpose()) * crate::ops::kernel::c::<T>(f.sign))
    }
}

/// The diagonal matrix with `d` on its diagonal (differentiable in `d`).
fn diag_matrix<T: Element>(d: &Tensor<T>) -> Tensor<T> {
    let n = d.shape()[0];
    &d.reshape(&[1, -1]) * &Tensor::eye(n)
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
        // L⁻¹ sym(Ȧ) L⁻ᵀ = L⁻¹ (L⁻¹ sym(Ȧ))ᵀ: the direction is symmetrised, as the reverse
        // rule's result is, so that ⟨u, Jᵀv⟩ = ⟨Ju, v⟩ for any u.
        let ta = t[0].as_ref()?;
        let sym = (ta + &ta.transpose()) * crate::ops::kernel::c::<T>(0.5);
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

/// Applies `f` to each matrix of a batch. Input `i` is `[batch…, core…]` with its last
/// `core[i]` axes the matrix (or vector); the batch axes of all inputs broadcast together.
/// The results, each of shape `result`, are stacked in the batch's shape.
#[track_caller]
fn per_matrix<T: Element>(
    op: &str,
    inputs: &[(&Tensor<T>, usize)],
    result: &[usize],
    f: impl Fn(&[Tensor<T>]) -> Tensor<T>,
) -> Tensor<T> {
    let mut batch: Vec<usize> = Vec::new();
    for (x, core) in inputs {
        let lead = &x.shape()[..x.ndim() - core];
        batch = broadcast_shapes(&batch, lead).unwrap_or_else(|| {
            let shapes: Vec<&[usize]> = inputs.iter().map(|(x, _)| x.shape()).collect();
            panic!("{op}: the batch axes of {shapes:?} do not broadcast together")
        });
    }
    let count: usize = batch.iter().product();
    let flat: Vec<Tensor<T>> = inputs
        .iter()
        .map(|(x, core)| {
            let core_shape = &x.shape()[x.ndim() - core..];
            let full: Vec<usize> = batch.iter().chain(core_shape).copied().collect();
            let rows: Vec<usize> = std::iter::once(count).chain(core_shape.iter().copied()).collect();
            x.broadcast_to(&full).reshape(&rows[..])
        })
        .collect();
    let mut shape = batch.clone();
    shape.extend_from_slice(result);
    if count == 0 {
        return Tensor::zeros(&shape);
    }
    let one: Vec<usize> = std::iter::once(1).chain(result.iter().copied()).collect();
    let results: Vec<Tensor<T>> = (0..count)
        .map(|i| {
            let matrices: Vec<Tensor<T>> = flat
                .iter()
                .zip(inputs)
                .map(|(x, (t, core))| x.narrow(0, i, 1).reshape(&t.shape()[t.ndim() - core..]))
                .collect();
            f(&matrices).reshape(&one[..])
        })
        .collect();
    let parts: Vec<&Tensor<T>> = results.iter().collect();
    Tensor::concat(&parts, 0).reshape(&shape[..])
}

/// The size n of a batch of square matrices `[…, n, n]`, or a panic naming `op`.
#[track_caller]
fn batch_square(op: &str, a: &[usize]) -> usize {
    let k = a.len();
    assert!(k >= 2 && a[k - 1] == a[k - 2], "{op}: needs square matrices [.., n, n], got shape {a:?}");
    a[k - 1]
}

impl<T: Element> Tensor<T> {
    /// X with AX = B for square A (`self`, `[n, n]` or a batch `[…, n, n]`) and B a vector
    /// (`[n]`, or `[…, n]` with A's batch axes) or matrices `[…, n, k]`, by LU with
    /// partial pivoting; batch axes broadcast as in PyTorch's `linalg.solve`.
    /// Differentiable in both.
    ///
    /// ```
    /// use adjoint::Tensor;
    /// let a = Tensor::<f64>::from_vec(vec![2.0, 1.0, 1.0, 3.0], &[2, 2]);
    /// let x = a.solve(&Tensor::from_vec(vec![3.0, 5.0], &[2]));
    /// assert!((x.to_vec()[0] - 0.8).abs() < 1e-12 && (x.to_vec()[1] - 1.4).abs() < 1e-12);
    /// // A batch of two systems sharing one right-hand side.
    /// let batch = Tensor::concat(&[&a.reshape(&[1, 2, 2]), &(a.reshape(&[1, 2, 2]) * 2.0)], 0);
    /// let x = batch.solve(&Tensor::from_vec(vec![3.0, 5.0], &[2, 1]));
    /// assert_eq!(x.shape(), [2, 2, 1]);
    /// assert!((x.to_vec()[2] - 0.4).abs() < 1e-12);
    /// ```
    ///
    /// # Panics
    /// If A is not square, B does not have A's number of rows, or the batch axes do not
    /// broadcast.
    #[track_caller]
    pub fn solve(&self, b: &Tensor<T>) -> Tensor<T> {
        let n = batch_square("solve", self.shape());
        if self.ndim() == 2 && b.ndim() <= 2 {
            return self.solve_matrix(b);
        }
        // PyTorch's rule: B is a batch of vectors when it is A's shape without the last axis.
        let vector = b.ndim() == 1 || (b.ndim() == self.ndim() - 1 && b.shape() == &self.shape()[..self.ndim() - 1]);
        let rows_ok = if vector { b.shape()[b.ndim() - 1] == n } else { b.ndim() >= 2 && b.shape()[b.ndim() - 2] == n };
        assert!(rows_ok, "solve: right-hand side of shape {:?} for matrices of shape {:?}", b.shape(), self.shape());
        let (core, result) = if vector { (1, vec![n]) } else { (2, vec![n, b.shape()[b.ndim() - 1]]) };
        per_matrix("solve", &[(self, 2), (b, core)], &result, |m| m[0].solve_matrix(&m[1]))
    }

    /// X with AX = B for one matrix.
    #[track_caller]
    fn solve_matrix(&self, b: &Tensor<T>) -> Tensor<T> {
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

    /// A⁻¹ of a matrix or of each matrix of a batch `[…, n, n]` (as `solve(A, I)`; prefer
    /// [`Tensor::solve`] where a product with the inverse is all that is needed).
    ///
    /// # Panics
    /// If the matrices are not square.
    #[track_caller]
    pub fn inverse(&self) -> Tensor<T> {
        let n = batch_square("inverse", self.shape());
        let eye = Tensor::eye(n);
        if self.ndim() == 2 {
            return self.solve_matrix(&eye);
        }
        per_matrix("inverse", &[(self, 2)], &[n, n], |m| m[0].solve_matrix(&eye))
    }

    /// The determinant, as a 0-d tensor (by LU with partial pivoting: exactly 0 for a
    /// matrix with a zero pivot), or one per matrix of a batch `[…, n, n]`. Its derivatives
    /// stay finite and right at singular matrices (they go through [`Tensor::cofactor`],
    /// not A⁻¹).
    ///
    /// # Panics
    /// If the matrices are not square.
    #[track_caller]
    pub fn det(&self) -> Tensor<T> {
        batch_square("det", self.shape());
        if self.ndim() > 2 {
            return per_matrix("det", &[(self, 2)], &[], |m| m[0].det());
        }
        let d = lu_determinant(&to_faer(self));
        record_rule(Det, &[self], Data::Scalar(T::from_f64_lossy(d)))
    }

    /// The cofactor matrix cof A (entry (i, j) is (−1)ⁱ⁺ʲ times the determinant of A without
    /// row i and column j): the gradient of `det`, equal to det(A)·A⁻ᵀ where A is invertible
    /// and finite at any rank (computed from the SVD). Differentiable; see the module docs
    /// for how far at singular matrices.
    ///
    /// ```
    /// use adjoint::Tensor;
    /// // A rank-1 matrix: det is 0, its gradient is not.
    /// let a = Tensor::<f64>::from_vec(vec![1.0, 2.0, 2.0, 4.0], &[2, 2]);
    /// let c = a.cofactor().to_vec();
    /// assert!((c[0] - 4.0).abs() < 1e-12 && (c[1] + 2.0).abs() < 1e-12 && (c[3] - 1.0).abs() < 1e-12);
    /// ```
    ///
    /// # Panics
    /// If the matrix is not square.
    #[track_caller]
    pub fn cofactor(&self) -> Tensor<T> {
        let n = square("cofactor", self.shape());
        let a = to_faer(self);
        let value = if n <= 1 {
            Mat::from_fn(n, n, |_, _| 1.0)
        } else {
            match frame(&a) {
                // C = s·U·diag(Πⱼ≠ᵢ σⱼ)·Vᵀ
                Some(f) => {
                    let scaled = Mat::from_fn(n, n, |i, j| {
                        f.sign * f.u[(i, j)] * (0..n).filter(|&l| l != j).map(|l| f.sigma[l]).product::<f64>()
                    });
                    &scaled * f.v.transpose()
                }
                None => Mat::from_fn(n, n, |_, _| f64::NAN),
            }
        };
        record_rule(Cofactor, &[self], Data::from_array(from_faer::<T>(value.as_ref(), &[n, n])))
    }

    /// log |det A|, as a 0-d tensor (finite where `det` would overflow), or one per matrix
    /// of a batch `[…, n, n]`.
    ///
    /// # Panics
    /// If the matrices are not square.
    #[track_caller]
    pub fn logdet(&self) -> Tensor<T> {
        let n = batch_square("logdet", self.shape());
        if self.ndim() > 2 {
            return per_matrix("logdet", &[(self, 2)], &[], |m| m[0].logdet());
        }
        let lu = self_lu(self);
        // |det A| = Π |U_ii|; summing logs avoids the product's overflow.
        let u = lu.U();
        let value: f64 = (0..n).map(|i| u[(i, i)].abs().ln()).sum();
        record_rule(LogDet, &[self], Data::Scalar(T::from_f64_lossy(value)))
    }

    /// The lower-triangular L with A = LLᵀ for a symmetric positive definite A (only the
    /// lower triangle is read), or one per matrix of a batch `[…, n, n]`; NaN where A is not
    /// positive definite.
    ///
    /// # Panics
    /// If the matrices are not square.
    #[track_caller]
    pub fn cholesky(&self) -> Tensor<T> {
        let n = batch_square("cholesky", self.shape());
        if self.ndim() > 2 {
            return per_matrix("cholesky", &[(self, 2)], &[n, n], |m| m[0].cholesky());
        }
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

    /// The upper-triangular U with A = UᵀU (PyTorch's `linalg.cholesky(A, upper=True)`):
    /// only the upper triangle is read, so U = `cholesky(Aᵀ)ᵀ`; batched like
    /// [`Tensor::cholesky`].
    ///
    /// ```
    /// use adjoint::Tensor;
    /// let a = Tensor::<f64>::from_vec(vec![4.0, 2.0, 2.0, 5.0], &[2, 2]);
    /// let u = a.cholesky_upper();
    /// assert_eq!(u.to_vec(), [2.0, 1.0, 0.0, 2.0]);
    /// assert_eq!(u.transpose().matmul(&u).to_vec(), a.to_vec());
    /// ```
    ///
    /// # Panics
    /// If the matrices are not square.
    #[track_caller]
    pub fn cholesky_upper(&self) -> Tensor<T> {
        batch_square("cholesky_upper", self.shape());
        self.transpose().cholesky().transpose()
    }
}

fn self_lu<T: Element>(a: &Tensor<T>) -> faer::linalg::solvers::PartialPivLu<f64> {
    to_faer(a).partial_piv_lu()
}
