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

/// A module that remembers the most rows it was given at once.
struct Widest<M> {
    inner: M,
    most: std::sync::atomic::AtomicUsize,
}

impl<M: Module<f32>> Module<f32> for Widest<M> {
    fn forward(&self, x: &Tensor<f32>) -> Tensor<f32> {
        self.most.fetch_max(x.shape()[0], std::sync::atomic::Ordering::Relaxed);
        self.inner.forward(x)
    }
    fn visit<'a>(&'a self, path: &mut String, f: &mut dyn FnMut(&str, &'a Tensor<f32>)) {
        self.inner.visit(path, f)
    }
    fn visit_mut(&mut self, path: &mut String, f: &mut dyn FnMut(&str, &mut Tensor<f32>)) {
        self.inner.visit_mut(path, f)
    }
}

#[test]
fn evaluation_in_chunks_sees_at_most_a_chunk_and_gives_the_same_numbers() {
    use adjoint::train::{evaluate, evaluate_in_chunks};
    let data = spiral(3, 400, 5);
    let net = Widest {
        inner: mlp::<f32>(&[2, 16, 3], Activation::TANH, None, &mut rand::rngs::StdRng::seed_from_u64(1)),
        most: 0.into(),
    };
    let whole = evaluate(&net, &data);
    assert_eq!(net.most.swap(0, std::sync::atomic::Ordering::Relaxed), 1000);
    let chunked = evaluate_in_chunks(&net, &data, 7);
    assert_eq!(net.most.load(std::sync::atomic::Ordering::Relaxed), 7);
    assert_eq!(whole.confusion, chunked.confusion);
    assert!((whole.loss - chunked.loss).abs() < 1e-6);
}

#[test]
fn a_stop_during_evaluation_keeps_the_finished_steps_and_resuming_only_evaluates() {
    use adjoint::nn::{Architecture, Network};
    use adjoint::optim::{LrSchedule, Scheduler};
    use adjoint::train::{Stopped, TrainSettings, Trainer};
    let (train_set, test_set) = spiral(3, 300, 2).split(0.3, 1);
    let trainer = || {
        let net = Network::new(Architecture::mlp(&[2, 16, 3], Activation::TANH, None), 4).unwrap();
        let settings = TrainSettings { batch: 16, epochs: 1, threads: 1, ..TrainSettings::default() };
        Trainer::new(net, Optimizer::adam(0.01), Scheduler::new(LrSchedule::Constant, 0.01), settings).unwrap()
    };
    let mut whole = trainer();
    let expected = whole.run_epoch(&train_set, &test_set, |_, _, _| {}, || false).unwrap();
    // The stop is asked after each step but the last, then before each chunk of the
    // evaluation: the first answer of "yes" comes inside the evaluation.
    let steps = train_set.len().div_ceil(16);
    let asked = std::sync::atomic::AtomicUsize::new(0);
    let mut stopped = trainer();
    let stop = || asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= steps - 1;
    let e = stopped.run_epoch(&train_set, &test_set, |_, _, _| {}, stop).unwrap_err();
    assert_eq!(e, Stopped::Interrupted { epoch: 1, step: steps, steps });
    assert_eq!(stopped.epochs_done(), 0);
    let resumed = stopped.run_epoch(&train_set, &test_set, |_, _, _| {}, || false).unwrap();
    assert_eq!(resumed.test_loss, expected.test_loss);
    assert_eq!(resumed.test_accuracy, expected.test_accuracy);
    assert_eq!(resumed.train_loss, expected.train_loss);
}

#[test]
fn a_per_step_schedule_with_warm_up_resumes_mid_epoch_exactly_and_moves_every_step() {
    use adjoint::nn::{Architecture, Network};
    use adjoint::optim::{LrSchedule, Scheduler};
    use adjoint::train::{Stopped, TrainSettings, Trainer};
    let (train_set, test_set) = spiral(3, 300, 2).split(0.3, 1);
    let steps = train_set.len().div_ceil(16);
    let scheduler =
        Scheduler::new(LrSchedule::Cosine { epochs: 2, min_lr: 0.0 }, 0.05).warmup(steps / 2).per_step(true);
    let trainer = |scheduler: Scheduler| {
        let net = Network::new(Architecture::mlp(&[2, 16, 3], Activation::TANH, None), 4).unwrap();
        let settings = TrainSettings { batch: 16, epochs: 2, threads: 1, ..TrainSettings::default() };
        Trainer::new(net, Optimizer::sgd(0.05), scheduler, settings).unwrap()
    };
    let weights = |t: &Trainer| {
        let mut all = Vec::new();
        t.network.visit(&mut String::new(), &mut |_, p| all.extend(p.to_vec()));
        all
    };
    let mut whole = trainer(scheduler.clone());
    let mut rates = Vec::new();
    for _ in 0..2 {
        whole.run_epoch(&train_set, &test_set, |_, _, _| {}, || false).unwrap();
        rates.push(whole.optimizer.lr());
    }
    // The last step's rate is the schedule's, near the end of the cosine.
    assert_eq!(rates[1], scheduler.lr_at(1, steps - 1, steps));
    assert!(rates[1] < 1e-3 && rates[0] > 0.02, "{rates:?}");

    // Stopped after 3 steps of the second epoch, then run on: the same weights to the bit.
    let mut stopped = trainer(scheduler.clone());
    stopped.run_epoch(&train_set, &test_set, |_, _, _| {}, || false).unwrap();
    let asked = std::sync::atomic::AtomicUsize::new(0);
    let stop = || asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= 2;
    let e = stopped.run_epoch(&train_set, &test_set, |_, _, _| {}, stop).unwrap_err();
    assert_eq!(e, Stopped::Interrupted { epoch: 2, step: 3, steps });
    stopped.run_epoch(&train_set, &test_set, |_, _, _| {}, || false).unwrap();
    assert_eq!(weights(&stopped), weights(&whole));

    // Per epoch, with no warm-up, gives other weights: the schedule did act per step.
    let mut per_epoch = trainer(Scheduler::new(LrSchedule::Cosine { epochs: 2, min_lr: 0.0 }, 0.05));
    for _ in 0..2 {
        per_epoch.run_epoch(&train_set, &test_set, |_, _, _| {}, || false).unwrap();
    }
    assert_ne!(weights(&per_epoch), weights(&whole));
}

/// AdamW as language-model recipes use it (biases and norms undecayed) stays so through a
/// checkpoint.
#[test]
fn a_checkpoint_keeps_adamws_choice_of_what_to_decay() {
    use adjoint::nn::{Architecture, Network};
    use adjoint::optim::{LrSchedule, Scheduler};
    use adjoint::train::{TrainSettings, Trainer};
    let net = Network::new(Architecture::mlp(&[2, 3, 2], Activation::TANH, None), 1).unwrap();
    let t = Trainer::new(
        net,
        Optimizer::adamw(0.01, 0.1),
        Scheduler::new(LrSchedule::Constant, 0.01),
        TrainSettings::default(),
    )
    .unwrap();
    let path = std::env::temp_dir().join(format!("adjoint-adamw-{}.safetensors", std::process::id()));
    t.save_checkpoint(&path, &Default::default()).unwrap();
    let (back, _) = Trainer::load_checkpoint(&path).unwrap();
    assert!(back.optimizer.decay_matrices_only);
    std::fs::remove_file(&path).ok();
}
