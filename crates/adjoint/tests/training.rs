//! Training behaviour on small seeded problems: the loss goes down, and the lectures'
//! gradient-descent example converges.

use adjoint::data::{spiral, xor, Dataset};
use adjoint::nn::{accuracy, cross_entropy, mlp, Activation, Init, Module};
use adjoint::optim::{minimize, GradientDescent, Optimizer};
use adjoint::{no_grad, Tensor};
use rand::SeedableRng;

fn full_batch_loss(net: &impl Module<f32>, data: &Dataset) -> (f32, f64) {
    let all = data.rows(0, data.len());
    no_grad(|| {
        let logits = net.forward(&all.x);
        (cross_entropy(&logits, &all.labels).item(), accuracy(&logits, &all.labels))
    })
}

fn train(
    data: &Dataset,
    widths: &[usize],
    act: Activation,
    mut opt: Optimizer<f32>,
    epochs: usize,
    batch: usize,
) -> (f32, f32, f64) {
    let mut net = mlp::<f32>(widths, act, None, &mut rand::rngs::StdRng::seed_from_u64(3));
    let (before, _) = full_batch_loss(&net, data);
    for epoch in 0..epochs {
        for b in data.batches(batch, Some(epoch as u64)) {
            cross_entropy(&net.forward(&b.x), &b.labels).backward();
            opt.step(&mut net);
            net.zero_grad();
        }
    }
    let (after, acc) = full_batch_loss(&net, data);
    (before, after, acc)
}

#[test]
fn xor_is_learned_by_a_hidden_layer() {
    let (before, after, acc) = train(&xor(8), &[2, 8, 2], Activation::TANH, Optimizer::adam(0.05), 150, 8);
    assert!(after < before * 0.2, "loss {before} -> {after}");
    assert_eq!(acc, 1.0);
}

#[test]
fn spiral_loss_decreases_with_sgd_and_momentum() {
    let data = spiral(3, 60, 1);
    let kind = adjoint::optim::OptimizerKind::Sgd { momentum: 0.9, nesterov: true, weight_decay: 1e-4 };
    let (before, after, acc) = train(&data, &[2, 32, 32, 3], Activation::RELU, Optimizer::new(kind, 0.05), 150, 16);
    assert!(after < before * 0.5, "loss {before} -> {after}");
    assert!(acc > 0.8, "accuracy {acc}");
}

#[test]
fn constant_initialisation_never_breaks_symmetry() {
    // Equal weights get equal updates: every hidden unit stays identical.
    let mut net = mlp::<f32>(
        &[2, 4, 2],
        Activation::TANH,
        Some(Init::Constant { value: 0.3 }),
        &mut rand::rngs::StdRng::seed_from_u64(0),
    );
    let mut opt = Optimizer::sgd(0.5);
    let data = xor(4);
    for _ in 0..20 {
        let b = data.rows(0, 16);
        cross_entropy(&net.forward(&b.x), &b.labels).backward();
        opt.step(&mut net);
        net.zero_grad();
    }
    // W1 is [hidden, in]: every hidden unit (row) has the same weights.
    let w1 = net.parameters()[0].1.to_array();
    for column in w1.columns() {
        assert!(column.iter().all(|&v| (v - column[0]).abs() < 1e-6), "hidden units diverged: {w1}");
    }
}

#[test]
fn gradient_descent_minimises_the_lectures_quadratic() {
    // min (x − 5)²: with α = 0.1 each step shrinks the error by 0.8.
    let mut x = [Tensor::<f64>::var(0.0)];
    let gd = GradientDescent { lr: 0.1, tolerance: 1e-6, max_steps: 10_000, decay: 1.0 };
    let r = minimize(|p| (&p[0] - 5.0).sqr(), &mut x, gd);
    assert!(r.converged);
    assert!((x[0].item() - 5.0).abs() < 1e-5);
    // α‖∇L‖ = 0.1·2·5·0.8ᵏ = 0.8ᵏ ≤ 1e-6 first at k = ⌈ln 1e-6 / ln 0.8⌉ = 62
    assert_eq!(r.steps, 62);
    let mut y = [Tensor::<f64>::var(0.0)];
    let capped = minimize(|p| (&p[0] - 5.0).sqr(), &mut y, GradientDescent { max_steps: 3, ..gd });
    assert!(!capped.converged && capped.steps == 3);
    assert!((y[0].item() - 5.0 * (1.0 - 0.8f64.powi(3))).abs() < 1e-12);
}
