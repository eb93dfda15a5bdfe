//! Function transforms and higher-order derivatives.

use adjoint::autodiff::transforms::{
    grad, hessian, hvp, jacobian, jacobian_fwd, jacobian_rev, jvp, value_and_grad, value_and_grad_many, vjp,
};
use adjoint::{check_gradients, Cotangents, Primitive, Tensor};
use ndarray::{ArrayD, IxDyn};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn vec_tensor(v: Vec<f64>) -> Tensor<f64> {
    let n = v.len();
    Tensor::from_vec(v, &[n])
}

fn close(a: &Tensor<f64>, b: &Tensor<f64>, tol: f64) {
    assert_eq!(a.shape(), b.shape());
    for (x, y) in a.to_vec().iter().zip(b.to_vec()) {
        assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{a:?}\n vs\n{b:?}");
    }
}

/// A random smooth program Rⁿ → Rᵐ built from a seed.
fn program(seed: u64, m: usize) -> impl Fn(&Tensor<f64>) -> Tensor<f64> {
    move |x: &Tensor<f64>| {
        let mut rng = StdRng::seed_from_u64(seed);
        let n = x.len();
        let a = Tensor::from_array(ArrayD::from_shape_fn(IxDyn(&[n, m]), |_| rng.random_range(-1.0..1.0)));
        let mut h = x.reshape(&[1, n]).matmul(&a).reshape(&[m]);
        for _ in 0..3 {
            h = match rng.random_range(0..4) {
                0 => h.tanh() * 1.5,
                1 => h.sin() + &h.sqr() * 0.1,
                2 => h.softmax(0) * 3.0,
                _ => &h * &h.sigmoid(),
            };
        }
        h + x.sum_all().exp() * 0.01
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, .. ProptestConfig::default() })]

    #[test]
    fn forward_and_reverse_jacobians_agree(seed in any::<u64>(), n in 1usize..5, m in 1usize..5) {
        let f = program(seed, m);
        let mut rng = StdRng::seed_from_u64(seed ^ 1);
        let x = vec_tensor((0..n).map(|_| rng.random_range(-1.0..1.0)).collect());
        let (jr, jf) = (jacobian_rev(&f, &x), jacobian_fwd(&f, &x));
        prop_assert_eq!(jr.shape(), &[m, n][..]);
        close(&jr, &jf, 1e-10);
        close(&jacobian(&f, &x), &jr, 1e-10);
        prop_assert!(!jr.is_tracked() && !jf.is_tracked(), "a top-level transform returns plain values");
    }

    #[test]
    fn hessians_are_symmetric_and_match_differences_of_the_gradient(seed in any::<u64>(), n in 1usize..5) {
        let g = program(seed, 2);
        let f = move |x: &Tensor<f64>| g(x).sum_all();
        let mut rng = StdRng::seed_from_u64(seed ^ 2);
        let x: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
        let h = hessian(&f, &vec_tensor(x.clone())).to_vec();
        let gradient = grad(&f);
        let step = 1e-5;
        for j in 0..n {
            let (mut up, mut down) = (x.clone(), x.clone());
            up[j] += step;
            down[j] -= step;
            let (gu, gd) = (gradient(&vec_tensor(up)).to_vec(), gradient(&vec_tensor(down)).to_vec());
            for i in 0..n {
                let fd = (gu[i] - gd[i]) / (2.0 * step);
                prop_assert!((h[i * n + j] - fd).abs() < 1e-6 * (1.0 + fd.abs()), "H[{i},{j}] = {} but FD {fd}", h[i * n + j]);
                prop_assert!((h[i * n + j] - h[j * n + i]).abs() < 1e-10);
            }
        }
        let v: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
        let hv = hvp(&f, &vec_tensor(x.clone()), &vec_tensor(v.clone())).to_vec();
        for i in 0..n {
            let expected: f64 = (0..n).map(|j| h[i * n + j] * v[j]).sum();
            prop_assert!((hv[i] - expected).abs() < 1e-10 * (1.0 + expected.abs()));
        }
    }
}

#[test]
fn hessian_of_a_quadratic_form_is_a_plus_a_transpose() {
    let a = Tensor::from_vec(vec![1.0, 2.0, 0.5, -3.0, 4.0, 1.0, 0.0, 2.0, -1.0], &[3, 3]);
    let f = |x: &Tensor<f64>| x.reshape(&[1, 3]).matmul(&a).matmul(&x.reshape(&[3, 1])).sum_all();
    let h = hessian(f, &vec_tensor(vec![0.3, -0.2, 0.9]));
    let expected = &a + &a.transpose();
    close(&h, &expected, 1e-12);
}

#[test]
fn hessian_of_logsumexp_is_diag_p_minus_p_p_transpose() {
    let x = vec_tensor(vec![0.5, -1.0, 2.0, 0.0]);
    let h = hessian(|x: &Tensor<f64>| x.logsumexp(0, false), &x).to_vec();
    let p = x.softmax(0).to_vec();
    for i in 0..4 {
        for j in 0..4 {
            let expected = if i == j { p[i] } else { 0.0 } - p[i] * p[j];
            assert!((h[i * 4 + j] - expected).abs() < 1e-12);
        }
    }
}

#[test]
fn nested_derivatives_do_not_confuse_perturbations() {
    // d/dx [x · d/dy (x + y)] = d/dx [x · 1] = 1 at any x.
    for x0 in [-2.0, 0.0, 3.5] {
        let outer = grad(|x: &Tensor<f64>| {
            let inner = grad(|y: &Tensor<f64>| x + y);
            x * &inner(&Tensor::scalar(1.0))
        });
        assert_eq!(outer(&Tensor::scalar(x0)).item(), 1.0);
    }
}

#[test]
fn third_derivative_of_sin_is_minus_cos() {
    let d3 = grad(grad(grad(|x: &Tensor<f64>| x.sin())));
    for x in [0.0, 0.7, -2.0] {
        assert!((d3(&Tensor::scalar(x)).item() + f64::cos(x)).abs() < 1e-12);
    }
    let d4 = grad(grad(grad(grad(|x: &Tensor<f64>| x.sin()))));
    assert!((d4(&Tensor::scalar(0.7)).item() - f64::sin(0.7)).abs() < 1e-12);
}

#[test]
fn lecture_mixed_partial_by_hessian() {
    let f = |v: &Tensor<f64>| {
        let (x, y) = (v.narrow(0, 0, 1), v.narrow(0, 1, 1));
        ((&x * &y + x.sin() + 4.0) * (y.sqr() * 3.0 + 6.0)).sum_all()
    };
    let h = hessian(f, &vec_tensor(vec![2.0, 8.0])).to_vec();
    assert!((h[1] - 562.0249518).abs() < 1e-6 && (h[2] - 562.0249518).abs() < 1e-6, "{h:?}");
}

#[test]
fn value_and_grad_vjp_and_jvp_with_several_inputs_and_outputs() {
    let (v, g) = value_and_grad(|x: &Tensor<f64>| x.sqr().sum_all())(&vec_tensor(vec![1.0, 2.0]));
    assert_eq!((v.item(), g.to_vec()), (5.0, vec![2.0, 4.0]));
    let f = |x: &[Tensor<f64>]| (&x[0] * &x[1]).sum_all();
    let (_, gs) = value_and_grad_many(f)(&[vec_tensor(vec![1.0, 2.0]), vec_tensor(vec![3.0, 4.0])]);
    assert_eq!((gs[0].to_vec(), gs[1].to_vec()), (vec![3.0, 4.0], vec![1.0, 2.0]));

    let two = |x: &[Tensor<f64>]| vec![&x[0] * &x[1], x[0].sin()];
    let xs = [Tensor::scalar(0.5), Tensor::scalar(3.0)];
    let (ys, pullback) = vjp(two, &xs);
    assert_eq!(ys.len(), 2);
    for (c0, c1) in [(1.0, 0.0), (0.0, 1.0), (2.0, -1.0)] {
        let g = pullback.call(&[Tensor::scalar(c0), Tensor::scalar(c1)]);
        assert!((g[0].item() - (c0 * 3.0 + c1 * 0.5f64.cos())).abs() < 1e-12);
        assert!((g[1].item() - c0 * 0.5).abs() < 1e-12);
    }
    drop(pullback);
    let (_, t) = jvp(two, &xs, &[Tensor::scalar(1.0), Tensor::scalar(1.0)]);
    assert!((t[0].item() - 3.5).abs() < 1e-12 && (t[1].item() - 0.5f64.cos()).abs() < 1e-12);
}

/// The lectures' hand-written node op: f(x) = x·eˣ with its own rules.
struct XExp;
impl Primitive<f64> for XExp {
    fn name(&self) -> &'static str {
        "x_exp"
    }
    fn vjp(&self, x: &[Tensor<f64>], _: &Tensor<f64>, g: &Tensor<f64>) -> Cotangents<f64> {
        [Some(g * &(x[0].exp() * (&x[0] + 1.0)))].into()
    }
    fn jvp(&self, x: &[Tensor<f64>], _: &Tensor<f64>, t: &[Option<Tensor<f64>>]) -> Option<Tensor<f64>> {
        t[0].as_ref().map(|t| t * &(x[0].exp() * (&x[0] + 1.0)))
    }
}

fn x_exp(x: &Tensor<f64>) -> Tensor<f64> {
    Tensor::apply(XExp, &[x], x.view().mapv(|v| v * v.exp()))
}

#[test]
fn custom_primitives_pass_the_gradient_check_and_nest() {
    let input = ArrayD::from_shape_vec(IxDyn(&[3]), vec![-0.5, 0.1, 1.2]).unwrap();
    let r = check_gradients(|x| x_exp(&x[0]).sum_all(), &[input], 1e-6);
    assert!(r.passes(1e-7, 1e-6), "{:?}", r.summary);
    // Its rules are written over tensors, so second derivatives work too: (x eˣ)'' = eˣ(x + 2).
    let d2 = grad(grad(|x: &Tensor<f64>| x_exp(x)))(&Tensor::scalar(0.3)).item();
    assert!((d2 - 0.3f64.exp() * 2.3).abs() < 1e-12);
}

#[test]
fn gradient_hooks_read_and_modify_the_flow() {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(0.0));
    let s = seen.clone();
    let x = Tensor::var(2.0);
    let h = x.sqr().with_grad_hook(move |g| {
        *s.lock().unwrap() = g.item();
        g * 10.0
    });
    let y = h.sin();
    y.backward();
    assert!((*seen.lock().unwrap() - 4f64.cos()).abs() < 1e-12, "the hook saw dy/dh");
    assert!((x.grad().unwrap().item() - 10.0 * 4f64.cos() * 4.0).abs() < 1e-9);
}
