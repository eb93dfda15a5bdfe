//! Linear algebra and the structural ops users reach for: `check_grads` to order 2 (JAX's
//! test for its linalg rules), closed forms, and the behaviour PyTorch and JAX show at the
//! edges (singular matrices, non-positive-definite input).

use adjoint::autodiff::gradcheck::{check_grads, CheckOptions};
use adjoint::Tensor;

type T = Tensor<f64>;

fn m(values: &[f64], n: usize) -> T {
    Tensor::from_vec(values.to_vec(), &[n, values.len() / n])
}

/// A well-conditioned, non-symmetric 3×3 matrix.
fn a3() -> T {
    m(&[4.0, 1.0, -0.5, 0.3, 3.0, 0.8, -1.1, 0.6, 5.0], 3)
}

fn order_2(f: impl Fn(&[T]) -> Vec<T> + 'static, args: &[T]) {
    check_grads(f, args, CheckOptions::default()).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn solve_inverse_det_logdet_pass_check_grads_at_order_2() {
    let b = m(&[1.0, -2.0, 0.5, 0.3, 2.0, -1.0], 3);
    order_2(|v| vec![v[0].solve(&v[1])], &[a3(), b.clone()]);
    order_2(|v| vec![v[0].solve(&v[1])], &[a3(), Tensor::from_vec(vec![1.0, -2.0, 0.5], &[3])]);
    order_2(|v| vec![v[0].inverse()], &[a3()]);
    order_2(|v| vec![v[0].det()], &[a3()]);
    order_2(|v| vec![v[0].logdet()], &[a3()]);
    // A negative determinant: log|det| still has the gradient A⁻ᵀ.
    order_2(|v| vec![v[0].logdet()], &[m(&[0.0, 1.0, 1.0, 0.5], 2)]);
}

#[test]
fn cholesky_passes_check_grads_at_order_2_on_symmetric_input() {
    // As JAX tests it: through a symmetrisation, since only the lower triangle is read.
    let sym = |a: &T| (a + &a.transpose()) * Tensor::scalar(0.5);
    let spd = m(&[4.0, 1.2, -0.4, 1.2, 3.0, 0.7, -0.4, 0.7, 2.5], 3);
    order_2(move |v| vec![sym(&v[0]).cholesky()], &[spd]);
}

#[test]
fn closed_forms() {
    let a = a3();
    // ∂ det A / ∂A = det(A)·A⁻ᵀ (Jacobi's formula); ∂ log|det A| / ∂A = A⁻ᵀ.
    let x = a.clone().requires_grad();
    x.det().backward();
    let expected = a.inverse().transpose().to_vec();
    let d = a.det().item();
    for (g, e) in x.grad().unwrap().to_vec().iter().zip(&expected) {
        assert!((g - d * e).abs() < 1e-10, "{g} vs {}", d * e);
    }
    // A·A⁻¹ = I, LLᵀ = A, det(2A) = 2³ det A, logdet = ln|det|.
    let product = a.matmul(&a.inverse()).to_vec();
    for (k, v) in product.iter().enumerate() {
        assert!((v - if k % 4 == 0 { 1.0 } else { 0.0 }).abs() < 1e-12);
    }
    let spd = m(&[4.0, 1.2, -0.4, 1.2, 3.0, 0.7, -0.4, 0.7, 2.5], 3);
    let l = spd.cholesky();
    let back = l.matmul(&l.transpose()).to_vec();
    assert!(back.iter().zip(spd.to_vec()).all(|(x, y)| (x - y).abs() < 1e-12));
    assert!(l.to_vec()[1] == 0.0 && l.to_vec()[2] == 0.0 && l.to_vec()[5] == 0.0, "lower triangular");
    assert!(((&a * Tensor::scalar(2.0)).det().item() - 8.0 * d).abs() < 1e-9);
    assert!((a.logdet().item() - d.abs().ln()).abs() < 1e-12);
}

#[test]
fn edge_values_follow_jax() {
    // Singular: infinities or NaN, never a panic.
    let singular = m(&[1.0, 2.0, 2.0, 4.0], 2);
    assert_eq!(singular.det().item(), 0.0);
    assert_eq!(singular.logdet().item(), f64::NEG_INFINITY);
    assert!(singular.solve(&Tensor::from_vec(vec![1.0, 1.0], &[2])).to_vec().iter().any(|v| !v.is_finite()));
    // Not positive definite: NaN (JAX), where PyTorch raises.
    assert!(m(&[1.0, 2.0, 2.0, 1.0], 2).cholesky().to_vec().iter().all(|v| v.is_nan()));
    let e = std::panic::catch_unwind(|| m(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2).det()).unwrap_err();
    let msg = e.downcast_ref::<String>().unwrap();
    assert!(msg.contains("det") && msg.contains("[2, 3]"), "{msg}");
}

#[test]
fn cumsum_stack_and_creation() {
    let x = m(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2);
    assert_eq!(x.cumsum(1).to_vec(), [1.0, 3.0, 6.0, 4.0, 9.0, 15.0]);
    assert_eq!(x.cumsum(0).to_vec(), [1.0, 2.0, 3.0, 5.0, 7.0, 9.0]);
    assert_eq!(x.cumsum_reverse(-1).to_vec(), [6.0, 5.0, 3.0, 15.0, 11.0, 6.0]);
    order_2(|v| vec![v[0].cumsum(1).sqr()], std::slice::from_ref(&x));
    order_2(|v| vec![v[0].cumsum_reverse(0).sin()], std::slice::from_ref(&x));
    let y = m(&[0.5, -1.0, 2.0, 0.1, 0.2, 0.3], 2);
    let s = Tensor::stack(&[&x, &y], 1);
    assert_eq!(s.shape(), [2, 2, 3]);
    assert_eq!(s.to_vec()[..6], [1.0, 2.0, 3.0, 0.5, -1.0, 2.0]);
    order_2(|v| vec![Tensor::stack(&[&v[0], &v[1]], 0).tanh()], &[x, y]);
    assert_eq!(Tensor::<f64>::arange(0.0, 1.0, 0.25).to_vec(), [0.0, 0.25, 0.5, 0.75]);
    assert_eq!(Tensor::<f64>::arange(3.0, 0.0, -1.0).to_vec(), [3.0, 2.0, 1.0]);
    assert_eq!(Tensor::<f64>::arange(0.0, -1.0, 1.0).len(), 0);
    assert_eq!(Tensor::<f32>::eye(2).to_vec(), [1.0, 0.0, 0.0, 1.0]);
    let u = Tensor::<f64>::rand_uniform(&[1000], -1.0, 1.0, 7);
    assert_eq!(u.to_vec(), Tensor::<f64>::rand_uniform(&[1000], -1.0, 1.0, 7).to_vec(), "seeded");
    assert!(u.to_vec().iter().all(|v| (-1.0..1.0).contains(v)));
    let n = Tensor::<f64>::rand_normal(&[20000], 2.0, 0.5, 3).to_vec();
    let mean = n.iter().sum::<f64>() / n.len() as f64;
    let std = (n.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n.len() as f64).sqrt();
    assert!((mean - 2.0).abs() < 0.02 && (std - 0.5).abs() < 0.02, "{mean} {std}");
}
