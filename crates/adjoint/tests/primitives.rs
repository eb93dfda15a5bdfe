//! Property tests for every primitive, in f64, on random values within each primitive's
//! domain and random broadcastable shapes:
//! - the VJP against central finite differences;
//! - the dot-product test ⟨u, Jᵀv⟩ = ⟨Ju, v⟩, which ties the JVP rule to the VJP rule;
//! - forward against reverse mode on random composed programs.

use adjoint::{check_gradients, gradients, jvp_sweep, BackwardOptions, Tensor};
use ndarray::{ArrayD, IxDyn};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

type F = fn(&[Tensor<f64>]) -> Tensor<f64>;

/// How to draw an input's values.
#[derive(Clone, Copy)]
enum Domain {
    Any,
    Positive,
    /// Away from zero (for divisors and kinks): |x| in [0.3, 2].
    NonZero,
    Small,
}

/// How the input shapes relate.
#[derive(Clone, Copy)]
enum Shapes {
    /// One input of a random shape.
    One,
    /// Two inputs whose shapes broadcast together.
    Broadcast,
    /// [b?, m, k] × [b?, k, n].
    MatMul,
    /// One input of at least two axes.
    AtLeast2,
}

struct Case {
    name: &'static str,
    domains: &'static [Domain],
    shapes: Shapes,
    f: F,
}

use Domain::*;

const CASES: &[Case] = &[
    Case { name: "add", domains: &[Any, Any], shapes: Shapes::Broadcast, f: |x| &x[0] + &x[1] },
    Case { name: "sub", domains: &[Any, Any], shapes: Shapes::Broadcast, f: |x| &x[0] - &x[1] },
    Case { name: "mul", domains: &[Any, Any], shapes: Shapes::Broadcast, f: |x| &x[0] * &x[1] },
    Case { name: "div", domains: &[Any, NonZero], shapes: Shapes::Broadcast, f: |x| &x[0] / &x[1] },
    Case { name: "neg", domains: &[Any], shapes: Shapes::One, f: |x| -&x[0] },
    Case { name: "maximum", domains: &[Any, Any], shapes: Shapes::Broadcast, f: |x| x[0].maximum(&x[1]) },
    Case { name: "minimum", domains: &[Any, Any], shapes: Shapes::Broadcast, f: |x| x[0].minimum(&x[1]) },
    Case { name: "pow", domains: &[Positive, Any], shapes: Shapes::Broadcast, f: |x| x[0].pow(&x[1]) },
    Case { name: "powi", domains: &[Any], shapes: Shapes::One, f: |x| x[0].powi(3) },
    Case { name: "powf", domains: &[Positive], shapes: Shapes::One, f: |x| x[0].powf(1.7) },
    Case { name: "sqr", domains: &[Any], shapes: Shapes::One, f: |x| x[0].sqr() },
    Case { name: "sqrt", domains: &[Positive], shapes: Shapes::One, f: |x| x[0].sqrt() },
    Case { name: "exp", domains: &[Any], shapes: Shapes::One, f: |x| x[0].exp() },
    Case { name: "log", domains: &[Positive], shapes: Shapes::One, f: |x| x[0].log() },
    Case { name: "sin", domains: &[Any], shapes: Shapes::One, f: |x| x[0].sin() },
    Case { name: "cos", domains: &[Any], shapes: Shapes::One, f: |x| x[0].cos() },
    Case { name: "tan", domains: &[Small], shapes: Shapes::One, f: |x| x[0].tan() },
    Case { name: "tanh", domains: &[Any], shapes: Shapes::One, f: |x| x[0].tanh() },
    Case { name: "sigmoid", domains: &[Any], shapes: Shapes::One, f: |x| x[0].sigmoid() },
    Case { name: "relu", domains: &[NonZero], shapes: Shapes::One, f: |x| x[0].relu() },
    Case { name: "leaky_relu", domains: &[NonZero], shapes: Shapes::One, f: |x| x[0].leaky_relu(0.1) },
    Case { name: "abs", domains: &[NonZero], shapes: Shapes::One, f: |x| x[0].abs() },
    Case { name: "matmul", domains: &[Any, Any], shapes: Shapes::MatMul, f: |x| x[0].matmul(&x[1]) },
    Case { name: "transpose", domains: &[Any], shapes: Shapes::AtLeast2, f: |x| x[0].transpose() * 1.5 },
    Case {
        name: "permute",
        domains: &[Any],
        shapes: Shapes::One,
        f: |x| x[0].permute(&(0..x[0].ndim()).rev().collect::<Vec<_>>()),
    },
    Case { name: "reshape", domains: &[Any], shapes: Shapes::One, f: |x| x[0].reshape(&[x[0].len()]) },
    Case {
        name: "broadcast_to",
        domains: &[Any],
        shapes: Shapes::One,
        f: |x| x[0].broadcast_to(&[2].iter().chain(x[0].shape()).copied().collect::<Vec<_>>()),
    },
    Case {
        name: "sum_to",
        domains: &[Any],
        shapes: Shapes::AtLeast2,
        f: |x| x[0].sum_to(&[1, *x[0].shape().last().unwrap()]),
    },
    Case { name: "concat", domains: &[Any], shapes: Shapes::One, f: |x| Tensor::concat(&[&x[0], &x[0].sqr()], -1) },
    Case {
        name: "narrow",
        domains: &[Any],
        shapes: Shapes::One,
        f: |x| {
            let n = x[0].shape()[0];
            x[0].narrow(0, n / 2, n - n / 2)
        },
    },
    Case {
        name: "index_select",
        domains: &[Any],
        shapes: Shapes::One,
        f: |x| {
            let n = x[0].shape()[0];
            x[0].index_select(0, &[n - 1, 0, n - 1])
        },
    },
    Case {
        name: "gather",
        domains: &[Any],
        shapes: Shapes::AtLeast2,
        f: |x| {
            let (r, c) = (x[0].shape()[0], x[0].shape()[1]);
            let mut idx_shape = x[0].shape().to_vec();
            idx_shape[1] = 1;
            let idx = ArrayD::from_shape_fn(IxDyn(&idx_shape), |p| (p[0] * 7 + 3) % c);
            let _ = r;
            x[0].gather(1, &idx)
        },
    },
    Case {
        name: "where",
        domains: &[Any, Any],
        shapes: Shapes::Broadcast,
        f: |x| {
            let mask = x[0].gt_mask(&Tensor::scalar(0.0));
            Tensor::where_(&mask, &x[0].sqr(), &x[1])
        },
    },
    Case { name: "sum", domains: &[Any], shapes: Shapes::One, f: |x| x[0].sum(&[0], false) },
    Case { name: "sum_keepdims", domains: &[Any], shapes: Shapes::One, f: |x| x[0].sum(&[-1], true) },
    Case { name: "sum_all", domains: &[Any], shapes: Shapes::One, f: |x| x[0].sum_all() },
    Case { name: "mean", domains: &[Any], shapes: Shapes::One, f: |x| x[0].mean(&[-1], false) },
    Case { name: "max", domains: &[Any], shapes: Shapes::One, f: |x| x[0].max(-1, false) },
    Case { name: "max_keepdims", domains: &[Any], shapes: Shapes::One, f: |x| x[0].max(0, true) },
    Case { name: "softmax", domains: &[Any], shapes: Shapes::One, f: |x| x[0].softmax(-1) },
    Case { name: "log_softmax", domains: &[Any], shapes: Shapes::One, f: |x| x[0].log_softmax(-1) },
    Case { name: "logsumexp", domains: &[Any], shapes: Shapes::One, f: |x| x[0].logsumexp(-1, false) },
    Case { name: "logsumexp_keepdims", domains: &[Any], shapes: Shapes::One, f: |x| x[0].logsumexp(0, true) },
];

fn random_shape(rng: &mut StdRng, min_ndim: usize) -> Vec<usize> {
    let ndim = rng.random_range(min_ndim..=3);
    (0..ndim).map(|_| rng.random_range(1..=4)).collect()
}

fn shapes_for(case: &Case, rng: &mut StdRng) -> Vec<Vec<usize>> {
    match case.shapes {
        Shapes::One => vec![random_shape(rng, 1)],
        Shapes::AtLeast2 => vec![random_shape(rng, 2)],
        Shapes::Broadcast => {
            let a = random_shape(rng, 1);
            // b: a suffix of a with some axes shrunk to 1; randomly swap the roles.
            let drop = rng.random_range(0..=a.len());
            let b: Vec<usize> = a[drop..].iter().map(|&d| if rng.random_bool(0.3) { 1 } else { d }).collect();
            if rng.random_bool(0.5) {
                vec![a, b]
            } else {
                vec![b, a]
            }
        }
        Shapes::MatMul => {
            let (m, k, n) = (rng.random_range(1..=4), rng.random_range(1..=4), rng.random_range(1..=4));
            match rng.random_range(0..3) {
                0 => vec![vec![m, k], vec![k, n]],
                1 => vec![vec![2, m, k], vec![k, n]],
                _ => vec![vec![3, m, k], vec![3, k, n]],
            }
        }
    }
}

fn sample(domain: Domain, rng: &mut StdRng) -> f64 {
    match domain {
        Any => rng.random_range(-2.0..2.0),
        Positive => rng.random_range(0.3..2.5),
        NonZero => rng.random_range(0.3..2.0) * if rng.random_bool(0.5) { 1.0 } else { -1.0 },
        Small => rng.random_range(-1.0..1.0),
    }
}

fn inputs_for(case: &Case, seed: u64) -> Vec<ArrayD<f64>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let shapes = shapes_for(case, &mut rng);
    shapes.iter().zip(case.domains).map(|(s, &d)| ArrayD::from_shape_fn(IxDyn(s), |_| sample(d, &mut rng))).collect()
}

fn random_like(shape: &[usize], rng: &mut StdRng) -> Tensor<f64> {
    Tensor::from_array(ArrayD::from_shape_fn(IxDyn(shape), |_| rng.random_range(-1.0..1.0)))
}

fn dot(a: &Tensor<f64>, b: &Tensor<f64>) -> f64 {
    a.view().iter().zip(b.view().iter()).map(|(x, y)| x * y).sum()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    #[test]
    fn vjp_matches_central_differences(seed in any::<u64>()) {
        for case in CASES {
            let inputs = inputs_for(case, seed);
            let report = check_gradients(case.f, &inputs, 1e-6);
            prop_assert!(report.passes(1e-6, 1e-5), "{}: {:?} on shapes {:?}", case.name, report.summary,
                inputs.iter().map(|a| a.shape().to_vec()).collect::<Vec<_>>());
        }
    }

    #[test]
    fn jvp_and_vjp_agree_by_the_dot_product_test(seed in any::<u64>()) {
        for case in CASES {
            let inputs = inputs_for(case, seed);
            let mut rng = StdRng::seed_from_u64(seed ^ 0xd07);
            let xs: Vec<Tensor<f64>> = inputs.iter().map(|a| Tensor::from_array(a.clone()).requires_grad()).collect();
            let out = (case.f)(&xs);
            let v = random_like(out.shape(), &mut rng);
            let us: Vec<Tensor<f64>> = xs.iter().map(|x| random_like(x.shape(), &mut rng)).collect();
            let refs: Vec<&Tensor<f64>> = xs.iter().collect();
            let jtv = gradients(&out, &refs, Some(v.clone()), false);
            let seeds: Vec<(&Tensor<f64>, Tensor<f64>)> = xs.iter().zip(us.iter().cloned()).collect();
            let ju = jvp_sweep(&[&out], &seeds, false).remove(0);
            let lhs: f64 = us.iter().zip(&jtv).map(|(u, g)| g.as_ref().map_or(0.0, |g| dot(u, g))).sum();
            let rhs = dot(&ju, &v);
            prop_assert!((lhs - rhs).abs() <= 1e-9 * (1.0 + lhs.abs()), "{}: <u, J^T v> = {lhs} but <Ju, v> = {rhs}", case.name);
        }
    }

    #[test]
    fn forward_and_reverse_mode_agree_on_random_programs(seed in any::<u64>(), steps in 1usize..12) {
        let mut rng = StdRng::seed_from_u64(seed);
        let shape = vec![rng.random_range(1..=3), rng.random_range(1..=3)];
        let n = shape[0];
        let xs: Vec<Tensor<f64>> = (0..3).map(|_| random_like(&shape, &mut rng).requires_grad()).collect();
        let mut pool: Vec<Tensor<f64>> = xs.clone();
        for _ in 0..steps {
            let a = pool[rng.random_range(0..pool.len())].clone();
            let b = pool[rng.random_range(0..pool.len())].clone();
            let next = match rng.random_range(0..10) {
                0 => &a + &b,
                1 => &a * &b,
                2 => a.tanh(),
                3 => a.sin() - &b,
                4 => a.sigmoid() * 2.0,
                5 => a.transpose().matmul(&b).narrow(0, 0, 1).broadcast_to(&[n, shape[1]]).narrow(1, 0, shape[1]).reshape(&shape).sum(&[0], true) + &b,
                6 => a.softmax(-1) + b.exp(),
                7 => a.maximum(&b) / (b.sqr() + 1.0),
                8 => if a.sum_all().item() > 0.0 { a.sqr() } else { a.cos() }, // control flow
                _ => a.log_softmax(0) * &b,
            };
            pool.push(next);
        }
        let out = pool.last().unwrap().sum_all();
        let refs: Vec<&Tensor<f64>> = xs.iter().collect();
        let reverse = gradients(&out, &refs, None, false);
        for (i, x) in xs.iter().enumerate() {
            for j in 0..x.len() {
                let mut e = vec![0.0; x.len()];
                e[j] = 1.0;
                let tangent = jvp_sweep(&[&out], &[(x, Tensor::from_vec(e, x.shape()))], false).remove(0).item();
                let r = reverse[i].as_ref().map_or(0.0, |g| g.to_vec()[j]);
                prop_assert!((tangent - r).abs() <= 1e-10 * (1.0 + r.abs()), "input {i} element {j}: forward {tangent}, reverse {r}");
            }
        }
    }
}

#[test]
fn softmax_family_is_finite_for_huge_logits() {
    let logits = Tensor::from_vec(vec![1e4, -1e4, 0.0, 1e4 - 1.0], &[1, 4]).requires_grad();
    for out in [logits.softmax(-1), logits.log_softmax(-1), logits.logsumexp(-1, true)] {
        assert!(out.to_vec().iter().all(|v: &f64| v.is_finite()), "{out:?}");
        let g = gradients(&out.sum_all(), &[&logits], None, false).remove(0).unwrap();
        assert!(g.to_vec().iter().all(|v: &f64| v.is_finite()), "{g:?}");
    }
    let lse = Tensor::<f64>::from_vec(vec![1e4, 1e4], &[2]).logsumexp(0, false).item();
    assert!((lse - (1e4 + 2f64.ln())).abs() < 1e-9);
}

#[test]
fn max_splits_the_gradient_evenly_between_ties_like_pytorch_amax_and_jax() {
    let x = Tensor::from_vec(vec![1.0, 5.0, 5.0, 2.0], &[4]).requires_grad();
    x.max(0, false).backward();
    assert_eq!(x.grad().unwrap().to_vec(), vec![0.0, 0.5, 0.5, 0.0]);
    let y = Tensor::from_vec(vec![1.0, 5.0, 3.0, 2.0], &[4]).requires_grad();
    y.max(0, false).backward();
    assert_eq!(y.grad().unwrap().to_vec(), vec![0.0, 1.0, 0.0, 0.0]);
}

#[test]
fn maximum_sends_the_gradient_to_the_selected_input() {
    let a = Tensor::from_vec(vec![1.0, 4.0], &[2]).requires_grad();
    let b = Tensor::from_vec(vec![3.0, 2.0], &[2]).requires_grad();
    a.maximum(&b).sum_all().backward();
    assert_eq!(a.grad().unwrap().to_vec(), vec![0.0, 1.0]);
    assert_eq!(b.grad().unwrap().to_vec(), vec![1.0, 0.0]);
}

#[test]
#[should_panic(expected = "add: shapes [2, 3] and [4] cannot be broadcast together")]
fn shape_errors_name_the_op_and_both_shapes() {
    let _ = Tensor::<f64>::zeros(&[2, 3]) + Tensor::zeros(&[4]);
}

#[test]
#[should_panic(expected = "matmul: inner lengths differ, shapes [2, 3] and [4, 5]")]
fn matmul_shape_errors_name_both_shapes() {
    let _ = Tensor::<f32>::zeros(&[2, 3]).matmul(&Tensor::zeros(&[4, 5]));
}

#[test]
fn no_grad_and_detach_stop_gradients() {
    let x = Tensor::var(3.0);
    let y = adjoint::no_grad(|| &x * &x);
    assert!(!y.is_tracked());
    let z = &x * &x.detach();
    let g = gradients(&z, &[&x], None, false).remove(0).unwrap();
    assert_eq!(g.item(), 3.0);
}

#[test]
fn intermediate_adjoints_are_available() {
    let x = Tensor::var(2.0);
    let h = x.sqr();
    let y = h.sin();
    let g = y.backward_with(BackwardOptions { keep_intermediate: true, ..Default::default() });
    assert!((g.wrt(&h).unwrap().item() - 4f64.cos()).abs() < 1e-12);
    // By default a backward pass keeps only the leaves' adjoints (the rest are freed as the
    // sweep passes them); gradients() gives any value's on request.
    let y = x.sqr().sin();
    assert!(y.backward().wrt(&h).is_none());
}
