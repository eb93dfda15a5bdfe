//! Exact derivatives in every program: the cases reported against earlier versions (nested
//! transforms dropping cross terms, pullbacks differentiating through their cotangent, one
//! backward pass releasing another graph), edge values compared with PyTorch and JAX, and
//! JAX-style `check_grads` to order 2 over every primitive.
//!
//! Expected values come from closed forms with non-zero cross terms, or from PyTorch 2.15 /
//! JAX 0.10 where stated.

use adjoint::autodiff::gradcheck::{check_grads, CheckOptions};
use adjoint::autodiff::transforms::{grad, grad_many, hessian, jvp, value_and_grad, vjp};
use adjoint::autodiff::{gradients, BackwardOptions, GraphError};
use adjoint::ops::{functions, Function};
use adjoint::Tensor;
use ndarray::{ArrayD, IxDyn};

type T = Tensor<f64>;

fn s(v: f64) -> T {
    Tensor::scalar(v)
}

fn v(values: &[f64]) -> T {
    Tensor::from_vec(values.to_vec(), &[values.len()])
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + b.abs()) || (a.is_nan() && b.is_nan())
}

/// The lectures' function (x·y + sin x + 4)·(3y² + 6).
fn lecture(x: &T, y: &T) -> T {
    (x * y + x.sin() + 4.0) * (y.sqr() * 3.0 + 6.0)
}

const LECTURE_DXDY: f64 = 562.0249518457372;

// --- Nested transforms -------------------------------------------------------------------

#[test]
fn nested_grad_keeps_the_cross_term_of_a_captured_outer_variable() {
    // d/dx [d/dy (x·y)] = 1, with x captured by the inner closure before the outer function
    // has used it.
    let d = grad(|x: &T| {
        let x = x.clone();
        grad(move |y: &T| &x * y)(&s(3.0))
    })(&s(2.0));
    assert_eq!(d.item(), 1.0);
}

#[test]
fn nested_grad_gives_the_lectures_mixed_partial() {
    let d = grad(|x: &T| {
        let x = x.clone();
        grad(move |y: &T| lecture(&x, y))(&s(8.0))
    })(&s(2.0));
    assert!(close(d.item(), LECTURE_DXDY, 1e-12), "{}", d.item());
    // And the other order.
    let d = grad(|y: &T| {
        let y = y.clone();
        grad(move |x: &T| lecture(x, &y))(&s(2.0))
    })(&s(8.0));
    assert!(close(d.item(), LECTURE_DXDY, 1e-12), "{}", d.item());
}

#[test]
fn nested_derivative_of_an_expression_that_uses_the_outer_variable_twice() {
    // D(x·D(x·y)(2))(1): the inner derivative is x, so the outer one is d(x²)/dx = 2.
    let d = grad(|x: &T| {
        let inner = {
            let x = x.clone();
            grad(move |y: &T| &x * y)(&s(2.0))
        };
        x * &inner
    })(&s(1.0));
    assert_eq!(d.item(), 2.0);
}

#[test]
fn perturbations_are_not_confused_when_the_inner_input_is_the_outer_variable() {
    // d/dx [x · (d/dy (x + y))(x)] = d/dx [x · 1] = 1 (JAX's perturbation-confusion example;
    // a confused implementation gives 2).
    let d = grad(|x: &T| {
        let inner = {
            let captured = x.clone();
            grad(move |y: &T| &captured + y)(x)
        };
        x * &inner
    })(&s(1.0));
    assert_eq!(d.item(), 1.0);
}

#[test]
fn third_order_nesting_with_captured_values() {
    // f(x, y, z) = x²·y³·z: ∂³f/∂x∂y∂z = 2x·3y² = 6·1·4 at (1, 2, 3) → 24.
    let d = grad(|x: &T| {
        let x = x.clone();
        grad(move |y: &T| {
            let (x, y) = (x.clone(), y.clone());
            grad(move |z: &T| x.sqr() * y.powi(3) * z)(&s(3.0))
        })(&s(2.0))
    })(&s(1.0));
    assert_eq!(d.item(), 24.0);
}

#[test]
fn grad_many_and_value_and_grad_with_cross_terms() {
    let g = grad_many(|v: &[T]| lecture(&v[0], &v[1]));
    let d = g(&[s(2.0), s(8.0)]);
    assert!(close(d[0].item(), 1501.6029263638, 1e-9) && close(d[1].item(), 1399.6462764876, 1e-9));
    // The Hessian's off-diagonal is the mixed partial.
    let h = hessian(|x: &T| lecture(&x.narrow(0, 0, 1), &x.narrow(0, 1, 1)).sum_all(), &v(&[2.0, 8.0]));
    assert!(close(h.to_vec()[1], LECTURE_DXDY, 1e-12));
}

// --- Pullbacks ----------------------------------------------------------------------------

#[test]
fn a_pullback_never_differentiates_through_its_cotangent() {
    // f = 3x, called with the cotangent f(x) = 3x: Jᵀc = 3·3x = 9 at x = 1, inside an outer
    // transform (whose derivative is d(9x)/dx = 9).
    let (value, slope) = value_and_grad(|x: &T| {
        let (ys, pullback) = vjp(|v: &[T]| vec![&v[0] * 3.0], std::slice::from_ref(x));
        pullback.call(&ys).remove(0)
    })(&s(1.0));
    assert_eq!((value.item(), slope.item()), (9.0, 9.0));
}

#[test]
fn a_pullback_of_a_function_that_returns_its_input_is_the_identity() {
    let x = v(&[1.0, 2.0, 5.0]);
    let (ys, pullback) = vjp(|v: &[T]| vec![v[0].reshape(&[3])], std::slice::from_ref(&x));
    assert_eq!(pullback.call(&ys)[0].to_vec(), vec![1.0, 2.0, 5.0]);
    let (ys, pullback) = vjp(|v: &[T]| vec![v[0].clone()], std::slice::from_ref(&x));
    assert_eq!(pullback.call(&ys)[0].to_vec(), vec![1.0, 2.0, 5.0]);
}

#[test]
fn jvp_inside_grad_differentiates_through_tangents_too() {
    // g(x) = jvp(sin)(x; t = x) = cos(x)·x; g'(x) = cos x − x sin x.
    let d = grad(|x: &T| jvp(|v: &[T]| vec![v[0].sin()], std::slice::from_ref(x), std::slice::from_ref(x)).1.remove(0))(
        &s(0.7),
    );
    assert!(close(d.item(), 0.7f64.cos() - 0.7 * 0.7f64.sin(), 1e-14));
}

// --- Graph lifetime -----------------------------------------------------------------------

#[test]
fn a_value_whose_graph_was_freed_cannot_be_differentiated_through_again() {
    let x = Tensor::<f64>::var(0.5);
    let h = x.tanh();
    h.sum_all().backward();
    x.zero_grad();
    let again = (&(&h * &h) + &x).sum_all();
    match again.try_backward() {
        Err(GraphError::Freed { op, .. }) => assert_eq!(op, "tanh"),
        other => panic!("expected a freed-graph error, got {:?}", other.map(|_| ())),
    }
    assert!(x.grad().is_none(), "a failed pass accumulates nothing");
    let message = again.try_backward().err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("retain_graph") && message.contains("tanh"), "{message}");
}

#[test]
fn with_retain_graph_the_value_can_be_differentiated_again() {
    let x = Tensor::<f64>::var(0.5);
    let h = x.tanh();
    h.sum_all().backward_with(BackwardOptions { retain_graph: true, ..Default::default() });
    x.zero_grad();
    (&(&h * &h) + &x).sum_all().backward();
    assert!(close(x.grad().unwrap().item(), 1.7268619813835873, 1e-15));
}

#[test]
#[should_panic(expected = "freed by an earlier backward pass")]
fn backward_through_a_freed_graph_panics_with_what_to_do() {
    let x = Tensor::<f64>::var(0.5);
    let h = x.exp();
    h.backward();
    h.backward();
}

#[test]
fn two_losses_on_one_leaf_accumulate_like_pytorch() {
    let x = Tensor::<f64>::from_vec(vec![0.5, -1.0], &[2]).requires_grad();
    let l1 = x.sqr().sum_all();
    let l2 = x.sin().sum_all();
    l1.backward();
    l2.backward();
    let g = x.grad().unwrap().to_vec();
    assert!(close(g[0], 1.0 + 0.5f64.cos(), 1e-15) && close(g[1], -2.0 + 1f64.cos(), 1e-15));
}

#[test]
fn one_backward_pass_leaves_other_graphs_intact() {
    let x = Tensor::<f64>::var(1.5);
    let a = x.sqr();
    let b = x.exp();
    a.backward();
    // b's graph was not used by a's pass: it still differentiates.
    let g = gradients(&b, &[&x], None, false).remove(0).unwrap();
    assert!(close(g.item(), 1.5f64.exp(), 1e-15));
}

#[test]
fn leaves_keep_their_identity_across_graphs() {
    let (x, y) = (Tensor::var(2.0), Tensor::var(8.0));
    for _ in 0..3 {
        x.zero_grad();
        y.zero_grad();
        lecture(&x, &y).backward();
        assert!(close(x.grad().unwrap().item(), 1501.6029263638, 1e-9));
        assert!(close(y.grad().unwrap().item(), 1399.6462764876, 1e-9));
    }
}

// --- Library helpers leave the caller's graph alone ----------------------------------------

/// A graph the caller is building, with a gradient already accumulated on its leaf.
struct Caller {
    x: T,
    loss: T,
}

impl Caller {
    fn new() -> Self {
        let x = Tensor::from_vec(vec![0.3, -0.7], &[2]).requires_grad();
        x.sin().sum_all().backward();
        let loss = (&x * &x).sum_all();
        Caller { x, loss }
    }

    /// The graph still differentiates, and the earlier gradient was neither lost nor changed.
    fn check(self) {
        let before = self.x.grad().unwrap().to_vec();
        assert!(close(before[0], 0.3f64.cos(), 1e-15) && close(before[1], 0.7f64.cos(), 1e-15), "{before:?}");
        self.loss.backward();
        let after = self.x.grad().unwrap().to_vec();
        assert!(close(after[0], 0.3f64.cos() + 0.6, 1e-15) && close(after[1], 0.7f64.cos() - 1.4, 1e-15));
    }
}

#[test]
fn minimize_leaves_the_callers_graph_as_it_was() {
    let c = Caller::new();
    let mut params = vec![s(3.0).requires_grad()];
    adjoint::optim::minimize(|p| (&p[0] - 5.0).sqr(), &mut params, Default::default());
    c.check();
}

#[test]
fn gradient_checks_leave_the_callers_graph_as_it_was() {
    let c = Caller::new();
    adjoint::check_gradients(|v| v[0].sin().sum_all(), &[ArrayD::from_elem(IxDyn(&[2]), 0.4)], 1e-6);
    check_grads(|v: &[T]| vec![v[0].sin()], &[v(&[0.1])], CheckOptions::default()).unwrap();
    c.check();
}

#[test]
fn transforms_leave_the_callers_graph_as_it_was() {
    let c = Caller::new();
    hessian(|x: &T| x.sin().sum_all(), &v(&[0.2, 0.4]));
    let _ = vjp(|x: &[T]| vec![x[0].exp()], &[s(0.3)]).1.call(&[s(1.0)]);
    c.check();
}

#[test]
fn inspect_leaves_the_models_gradients_as_they_were() {
    use adjoint::nn::{mlp, Activation, Module};
    use rand::SeedableRng;
    let net = mlp::<f32>(&[4, 5, 3], Activation::TANH, None, &mut rand::rngs::StdRng::seed_from_u64(3));
    let x = Tensor::<f32>::from_vec((0..8).map(|i| i as f32 * 0.1).collect(), &[2, 4]);
    adjoint::nn::cross_entropy(&net.forward(&x), &[0, 2]).backward();
    let before: Vec<Vec<f32>> = net.parameters().iter().map(|(_, p)| p.grad().unwrap().to_vec()).collect();
    let stats = adjoint::nn::inspect::inspect(&net, Activation::TANH, &x, &[1, 1], 4);
    assert_eq!(stats.len(), 2);
    assert!(stats.iter().all(|s| s.grad_norm > 0.0));
    let after: Vec<Vec<f32>> = net.parameters().iter().map(|(_, p)| p.grad().unwrap().to_vec()).collect();
    assert_eq!(before, after);
}

// --- Threads ------------------------------------------------------------------------------

#[test]
fn a_trained_model_is_shared_by_several_threads_for_inference() {
    use adjoint::nn::{mlp, Activation, Module};
    use rand::SeedableRng;
    let net =
        std::sync::Arc::new(mlp::<f32>(&[3, 8, 2], Activation::RELU, None, &mut rand::rngs::StdRng::seed_from_u64(1)));
    let inputs: Vec<Tensor<f32>> =
        (0..8).map(|i| Tensor::from_vec(vec![i as f32, 1.0 - i as f32 * 0.3, 0.5], &[1, 3])).collect();
    let expected: Vec<Vec<f32>> = inputs.iter().map(|x| net.forward(x).to_vec()).collect();
    let handles: Vec<_> = inputs
        .into_iter()
        .map(|x| {
            let net = net.clone();
            std::thread::spawn(move || {
                let mut out = Vec::new();
                for _ in 0..50 {
                    out = net.forward(&x).to_vec();
                }
                out
            })
        })
        .collect();
    for (h, e) in handles.into_iter().zip(expected) {
        assert_eq!(h.join().unwrap(), e);
    }
    // And a model can be moved to another thread and trained there.
    let moved = mlp::<f64>(&[2, 3, 1], Activation::TANH, None, &mut rand::rngs::StdRng::seed_from_u64(2));
    let g = std::thread::spawn(move || {
        let y = moved.forward(&Tensor::from_vec(vec![0.5, -0.5], &[1, 2])).sum_all();
        y.backward();
        moved.parameters()[0].1.grad().unwrap().to_vec()
    })
    .join()
    .unwrap();
    assert!(g.iter().any(|v| *v != 0.0));
}

/// A small training run, deterministic for a seed: the weights after a few Adam steps.
fn train_run(seed: u64) -> Vec<f32> {
    use adjoint::nn::{cross_entropy, mlp, Activation, Module};
    use adjoint::optim::Optimizer;
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut net = mlp::<f32>(&[16, 64, 4], Activation::TANH, None, &mut rng);
    let x = Tensor::<f32>::from_vec((0..64 * 16).map(|_| rng.random_range(-1.0..1.0)).collect(), &[64, 16]);
    let labels: Vec<usize> = (0..64).map(|i| i % 4).collect();
    let mut opt = Optimizer::adam(0.01);
    for _ in 0..20 {
        net.zero_grad();
        cross_entropy(&net.forward(&x), &labels).backward();
        opt.step(&mut net);
        // Inference inside no_grad in the middle of training: must not leak into other jobs.
        adjoint::no_grad(|| net.forward(&x).matmul(&Tensor::ones(&[4, 256])).sum_all());
    }
    net.parameters().iter().flat_map(|(_, p)| p.to_vec()).collect()
}

#[test]
fn independent_training_runs_on_a_rayon_pool_match_runs_one_after_another() {
    use rayon::prelude::*;
    let seeds: Vec<u64> = (0..6).collect();
    let sequential: Vec<Vec<f32>> = seeds.iter().map(|&s| train_run(s)).collect();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    let parallel: Vec<Vec<f32>> = pool.install(|| seeds.par_iter().map(|&s| train_run(s)).collect());
    assert_eq!(sequential, parallel);
}

#[test]
fn recording_switches_do_not_leak_into_jobs_stolen_during_a_parallel_kernel() {
    use rayon::prelude::*;
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    let big = Tensor::<f32>::ones(&[256, 256]);
    // Half the jobs multiply large matrices inside no_grad (their threads wait in rayon and
    // may steal other jobs); the other half must still record.
    let tracked: Vec<bool> = pool.install(|| {
        (0..64)
            .into_par_iter()
            .map(|i| {
                if i % 2 == 0 {
                    adjoint::no_grad(|| big.matmul(&big).sum_all());
                    true
                } else {
                    let x = Tensor::<f32>::var(1.0);
                    (&x * &x).is_tracked()
                }
            })
            .collect()
    });
    assert!(tracked.iter().all(|&t| t));
}

// --- Edge values (PyTorch 2.15 and JAX 0.10 agree on each) ----------------------------------

fn grads2(f: impl Fn(&T, &T) -> T, a: f64, b: f64) -> (f64, f64, f64) {
    let (x, y) = (Tensor::var(a), Tensor::var(b));
    let out = f(&x, &y);
    let g = gradients(&out, &[&x, &y], None, false);
    let get = |g: &Option<T>| g.as_ref().map_or(0.0, |g| g.item());
    (out.item(), get(&g[0]), get(&g[1]))
}

#[test]
fn pow_has_finite_gradients_at_a_zero_base() {
    // torch: pow(0., 2.) → grads (0, 0); jax.grad(lambda a, b: a ** b, (0, 1))(0., 2.) → (0, 0).
    assert_eq!(grads2(|a, b| a.pow(b), 0.0, 2.0), (0.0, 0.0, 0.0));
    // 0^x for x > 0: value 0, ∂/∂x 0 (not 0·(−∞)).
    let (value, _, db) = grads2(|a, b| a.pow(b), 0.0, 1.5);
    assert_eq!((value, db), (0.0, 0.0));
    // Away from 0 the usual values.
    let (_, da, db) = grads2(|a, b| a.pow(b), 2.0, 3.0);
    assert!(close(da, 12.0, 1e-15) && close(db, 8.0 * 2f64.ln(), 1e-15));
}

#[test]
fn nan_propagates_through_max_maximum_and_relu() {
    let nan = f64::NAN;
    assert!(v(&[1.0, nan]).max_all().item().is_nan());
    assert!(v(&[nan, 1.0]).max_all().item().is_nan());
    assert!(s(nan).maximum(&s(1.0)).item().is_nan());
    assert!(s(1.0).maximum(&s(nan)).item().is_nan());
    assert!(s(nan).minimum(&s(1.0)).item().is_nan());
    assert!(s(1.0).minimum(&s(nan)).item().is_nan());
    assert!(s(nan).relu().item().is_nan());
    assert!(s(nan).leaky_relu(0.1).item().is_nan());
    assert!(s(nan).clamp(-1.0, 1.0).item().is_nan());
}

#[test]
fn ties_split_the_gradient_evenly() {
    assert_eq!(grads2(|a, b| a.maximum(b), 2.0, 2.0), (2.0, 0.5, 0.5));
    assert_eq!(grads2(|a, b| a.minimum(b), 2.0, 2.0), (2.0, 0.5, 0.5));
    let x = v(&[3.0, 1.0, 3.0, 3.0]).requires_grad();
    x.max_all().backward();
    let third = 1.0 / 3.0;
    assert_eq!(x.grad().unwrap().to_vec(), vec![third, 0.0, third, third]);
    // amax over several axes shares among the ties of each group.
    let m = Tensor::<f64>::from_vec(vec![1.0, 4.0, 4.0, 2.0, 0.0, 5.0], &[2, 3]).requires_grad();
    let top = m.amax(&[-1], false);
    assert_eq!(top.to_vec(), vec![4.0, 5.0]);
    top.sum_all().backward();
    assert_eq!(m.grad().unwrap().to_vec(), vec![0.0, 0.5, 0.5, 0.0, 0.0, 1.0]);
}

#[test]
fn softmax_of_an_all_minus_infinity_row_is_nan() {
    let row = Tensor::<f64>::from_vec(vec![f64::NEG_INFINITY; 2], &[1, 2]);
    assert!(row.softmax(-1).to_vec().iter().all(|v| v.is_nan()));
    assert!(row.log_softmax(-1).to_vec().iter().all(|v| v.is_nan()));
    assert_eq!(row.logsumexp(-1, false).item(), f64::NEG_INFINITY);
    // One −∞ among finite logits is just a zero probability.
    let p = Tensor::<f64>::from_vec(vec![f64::NEG_INFINITY, 0.0], &[2]).softmax(0).to_vec();
    assert_eq!(p, vec![0.0, 1.0]);
}

#[test]
fn softmax_family_of_a_zero_dimensional_tensor() {
    // torch.softmax(torch.tensor(3.), 0) → 1; log_softmax → 0; logsumexp → 3.
    let x = Tensor::<f64>::var(3.0);
    assert_eq!(x.softmax(0).item(), 1.0);
    assert_eq!(x.log_softmax(-1).item(), 0.0);
    assert_eq!(x.logsumexp(0, false).item(), 3.0);
    assert_eq!(x.softmax(0).shape(), &[] as &[usize]);
    let g = gradients(&x.logsumexp(0, false), &[&x], None, false).remove(0).unwrap();
    assert_eq!(g.item(), 1.0);
}

#[test]
fn cross_entropy_keeps_the_loss_at_extreme_logits() {
    // Ten equal logits of 1e30: PyTorch's F.cross_entropy gives ln 10 = 2.3026.
    for big in [1e8f32, 1e30] {
        let logits = Tensor::<f32>::full(&[1, 10], big);
        let loss = adjoint::nn::cross_entropy(&logits, &[3]).item();
        assert!((loss - 10f32.ln()).abs() < 1e-5, "{big}: {loss}");
    }
    let logits = Tensor::<f64>::from_vec(vec![1e30, 1e30 - 1e15, 1e30], &[1, 3]);
    let loss = adjoint::nn::cross_entropy(&logits, &[1]).item();
    assert!(loss > 1e14, "the loss of a far-behind label is kept: {loss}");
}

// --- Porting conveniences ------------------------------------------------------------------

#[test]
fn negative_axes_reshape_with_minus_one_and_one_dimensional_matmul() {
    let x = Tensor::<f64>::from_vec((0..24).map(f64::from).collect(), &[2, 3, 4]);
    assert_eq!(x.reshape(&[4, -1]).shape(), &[4, 6]);
    assert_eq!(x.reshape(&[-1]).shape(), &[24]);
    assert_eq!(x.permute(&[-1, 0, 1]).shape(), &[4, 2, 3]);
    assert_eq!(x.sum(&[-1, 0], false).shape(), &[3]);
    assert_eq!(x.amax(&[0, -1], true).shape(), &[1, 3, 1]);
    let a = v(&[1.0, 2.0, 3.0]);
    let m = Tensor::<f64>::from_vec(vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0], &[3, 2]);
    assert_eq!(a.matmul(&a).item(), 14.0);
    assert_eq!(a.matmul(&m).to_vec(), vec![4.0, 5.0]);
    assert_eq!(m.transpose().matmul(&a).to_vec(), vec![4.0, 5.0]);
    // Gradients flow through the reshapes of the 1-D product.
    let x = v(&[1.0, 2.0, 3.0]).requires_grad();
    x.matmul(&m).sum_all().backward();
    assert_eq!(x.grad().unwrap().to_vec(), vec![1.0, 1.0, 2.0]);
}

#[test]
fn strided_slicing_and_its_gradient() {
    let x = Tensor::<f64>::from_vec((0..10).map(f64::from).collect(), &[10]).requires_grad();
    assert_eq!(x.slice(0, 1, Some(-1), 3).to_vec(), vec![1.0, 4.0, 7.0]);
    assert_eq!(x.slice(-1, 0, None, 4).to_vec(), vec![0.0, 4.0, 8.0]);
    assert_eq!(x.slice(0, -3, None, 1).to_vec(), vec![7.0, 8.0, 9.0]);
    assert_eq!(x.slice(0, 20, None, 1).len(), 0);
    (x.slice(0, 1, Some(-1), 3) * 2.0).sum_all().backward();
    assert_eq!(x.grad().unwrap().to_vec(), vec![0.0, 2.0, 0.0, 0.0, 2.0, 0.0, 0.0, 2.0, 0.0, 0.0]);
}

#[test]
fn prod_and_its_gradient_with_zeros() {
    let x = Tensor::<f64>::from_vec(vec![2.0, 3.0, 0.0, 4.0, 5.0, 6.0], &[2, 3]).requires_grad();
    let p = x.prod(&[1], false);
    assert_eq!(p.to_vec(), vec![0.0, 120.0]);
    p.sum_all().backward();
    assert_eq!(x.grad().unwrap().to_vec(), vec![0.0, 0.0, 6.0, 30.0, 24.0, 20.0]);
}

#[test]
fn unused_inputs_get_zeros_on_request() {
    let (x, y) = (Tensor::<f64>::var(1.0), Tensor::<f64>::from_vec(vec![1.0, 2.0], &[2]).requires_grad());
    let out = x.sin();
    assert!(gradients(&out, &[&y], None, false)[0].is_none());
    let g = adjoint::gradients_or_zeros(&out, &[&x, &y], None, false);
    assert_eq!(g[1].to_vec(), vec![0.0, 0.0]);
}

// --- check_grads to order 2 over every primitive ---------------------------------------------

fn sample(f: &dyn Function, k: usize, n: usize) -> T {
    use adjoint::ops::elementwise::Domain;
    let base = [0.37, -0.81, 1.23, -1.6, 0.66, 2.1, -0.45];
    let values: Vec<f64> = (0..n)
        .map(|i| {
            let mut x: f64 = base[(i + 3 * k) % base.len()];
            match f.domain() {
                Domain::Positive => x = x.abs() + 0.3,
                Domain::Kinked(points) => {
                    // Keep away from the kinks (for a binary function, from a = b).
                    if f.arity() == 2 && k == 1 {
                        x += 0.4;
                    }
                    if points.iter().any(|p| (x - p).abs() < 0.2) {
                        x += 0.5;
                    }
                }
                _ => {}
            }
            x
        })
        .collect();
    v(&values)
}

#[test]
fn every_elementwise_function_passes_check_grads_at_order_2() {
    for f in functions() {
        // Step functions are constant away from their jump: nothing to check but zeros.
        let args: Vec<T> = (0..f.arity()).map(|k| sample(*f, k, 3)).collect();
        let params: Vec<f64> = f.params().iter().map(|p| p.default).collect();
        let func = *f;
        let result = check_grads(
            move |x: &[T]| {
                let refs: Vec<&T> = x.iter().collect();
                vec![func.apply_f64(&refs, &params)]
            },
            &args,
            CheckOptions::default(),
        );
        assert!(result.is_ok(), "{}: {}", f.name(), result.unwrap_err());
    }
}

type Case = (&'static str, fn(&[T]) -> Vec<T>, Vec<Vec<usize>>);

fn structural_cases() -> Vec<Case> {
    fn labels() -> ArrayD<usize> {
        ArrayD::from_shape_vec(IxDyn(&[2, 1]), vec![2, 0]).unwrap()
    }
    vec![
        ("matmul", |x| vec![x[0].matmul(&x[1])], vec![vec![2, 3], vec![3, 2]]),
        ("matmul batched", |x| vec![x[0].matmul(&x[1])], vec![vec![2, 2, 3], vec![3, 2]]),
        ("matmul 1-D", |x| vec![x[0].matmul(&x[1])], vec![vec![3], vec![3, 2]]),
        ("reshape", |x| vec![x[0].reshape(&[3, -1]).sin()], vec![vec![2, 3]]),
        ("permute", |x| vec![x[0].permute(&[2, 0, 1]) * &x[0].permute(&[2, 0, 1])], vec![vec![2, 2, 3]]),
        ("transpose", |x| vec![x[0].transpose().matmul(&x[0])], vec![vec![3, 2]]),
        ("broadcast_to", |x| vec![x[0].broadcast_to(&[2, 3]).sqr()], vec![vec![3]]),
        ("sum_to", |x| vec![x[0].sqr().sum_to(&[1, 3])], vec![vec![2, 3]]),
        ("sum", |x| vec![x[0].sqr().sum(&[0], true)], vec![vec![2, 3]]),
        ("mean", |x| vec![(x[0].sqr() * &x[0]).mean(&[-1], false)], vec![vec![2, 3]]),
        ("amax", |x| vec![x[0].amax(&[1], false) * &x[0].amax(&[0, 1], false)], vec![vec![2, 3]]),
        ("prod", |x| vec![x[0].prod(&[1], false)], vec![vec![2, 3]]),
        ("softmax", |x| vec![x[0].softmax(-1)], vec![vec![2, 3]]),
        ("log_softmax", |x| vec![x[0].log_softmax(0)], vec![vec![2, 3]]),
        ("logsumexp", |x| vec![x[0].logsumexp(1, true)], vec![vec![2, 3]]),
        ("concat", |x| vec![Tensor::concat(&[&x[0], &x[1].sqr()], 0)], vec![vec![2, 3], vec![1, 3]]),
        ("narrow", |x| vec![x[0].narrow(1, 1, 2).exp()], vec![vec![2, 3]]),
        ("slice", |x| vec![x[0].slice(1, 0, Some(-1), 2).sqr()], vec![vec![2, 5]]),
        ("index_select", |x| vec![x[0].index_select(0, &[1, 0, 1]).sqr()], vec![vec![2, 3]]),
        ("gather", |x| vec![x[0].gather(1, &labels()).exp()], vec![vec![2, 3]]),
        (
            "where",
            |x| {
                let mask = Tensor::from_vec(vec![1.0, 0.0, 1.0], &[3]);
                vec![Tensor::where_(&mask, &x[0].sqr(), &x[1].sin())]
            },
            vec![vec![2, 3], vec![3]],
        ),
        ("cross_entropy", |x| vec![adjoint::nn::cross_entropy(&x[0], &[2, 0])], vec![vec![2, 3]]),
        ("identity", |x| vec![x[0].identity().sqr()], vec![vec![3]]),
    ]
}

#[test]
fn every_structural_primitive_passes_check_grads_at_order_2() {
    for (name, f, shapes) in structural_cases() {
        let args: Vec<T> = shapes
            .iter()
            .enumerate()
            .map(|(k, shape)| {
                let n: usize = shape.iter().product();
                // Distinct values (no ties for amax), away from zero (prod).
                let values = (0..n)
                    .map(|i| 0.3 + 0.17 * i as f64 + 0.05 * k as f64)
                    .map(|x| if i_odd(x) { -x } else { x })
                    .collect();
                Tensor::from_vec(values, shape)
            })
            .collect();
        let result = check_grads(f, &args, CheckOptions::default());
        assert!(result.is_ok(), "{name}: {}", result.unwrap_err());
    }
}

fn i_odd(x: f64) -> bool {
    ((x * 100.0).round() as i64) % 3 == 0
}

#[test]
fn check_grads_catches_wrong_rules() {
    use adjoint::{Cotangents, Primitive};
    /// sin with a VJP that is off by a factor 2 (the JVP is right).
    struct BadSin;
    impl Primitive<f64> for BadSin {
        fn name(&self) -> &'static str {
            "bad_sin"
        }
        fn vjp(&self, x: &[T], _: &T, g: &T) -> Cotangents<f64> {
            [Some(g * &x[0].cos() * 2.0)].into()
        }
        fn jvp(&self, x: &[T], _: &T, t: &[Option<T>]) -> Option<T> {
            t[0].as_ref().map(|t| t * &x[0].cos())
        }
    }
    let bad = |x: &[T]| vec![Tensor::apply(BadSin, &[&x[0]], x[0].view().mapv(f64::sin))];
    let err = check_grads(bad, &[v(&[0.3, 0.9])], CheckOptions::default()).unwrap_err();
    assert!(err.path.starts_with("vjp"), "{err}");
    /// A second-order error only: the rule is right but not differentiable again (its
    /// derivative is computed outside the graph).
    struct Frozen;
    impl Primitive<f64> for Frozen {
        fn name(&self) -> &'static str {
            "frozen_sin"
        }
        fn vjp(&self, x: &[T], _: &T, g: &T) -> Cotangents<f64> {
            [Some(g * &x[0].cos().detach())].into()
        }
        fn jvp(&self, x: &[T], _: &T, t: &[Option<T>]) -> Option<T> {
            t[0].as_ref().map(|t| t * &x[0].cos().detach())
        }
    }
    let frozen = |x: &[T]| vec![Tensor::apply(Frozen, &[&x[0]], x[0].view().mapv(f64::sin))];
    let first = CheckOptions { order: 1, ..CheckOptions::default() };
    assert!(check_grads(frozen, &[v(&[0.3, 0.9])], first).is_ok());
    assert!(check_grads(frozen, &[v(&[0.3, 0.9])], CheckOptions::default()).is_err());
}
