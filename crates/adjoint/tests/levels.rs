//! The kernels at every instruction-set level this machine has (baseline, AVX2, AVX-512; see
//! `adjoint::cpu`) give the same bits (any NaN counted as one): elementwise functions and their rules at the edge
//! values, and whole training steps, on one and two threads.

use adjoint::cpu::{self, Level};
use adjoint::nn::{cross_entropy, Activation, Architecture, CellKind, Module, Network, Recurrent};
use adjoint::optim::Optimizer;
use adjoint::Tensor;
use rand::SeedableRng;

fn edge_values() -> Vec<f32> {
    let mut v: Vec<f32> = (0..40_001).map(|i| (i as f32 - 20_000.0) * 7e-4).collect();
    v.extend([0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 1e-40, -1e-40, 88.7, -88.7, 1e30]);
    v
}

/// The bits of every element, with every NaN as one canonical NaN: which NaN an
/// instruction returns (sign, payload) differs between SSE and AVX forms, as in every
/// library; that a value is NaN does not.
fn bits(t: &Tensor<f32>) -> Vec<u32> {
    t.to_vec().iter().map(|v| if v.is_nan() { f32::NAN.to_bits() } else { v.to_bits() }).collect()
}

/// Every elementwise function of the registry (and its gradient), then a few training
/// steps of a small network: all the numbers as bits.
fn workload() -> Vec<Vec<u32>> {
    let x = Tensor::from_vec(edge_values(), &[edge_values().len()]);
    let mut out = Vec::new();
    for f in adjoint::ops::functions() {
        let params: Vec<f64> = f.params().iter().map(|p| p.default).collect();
        let leaf = x.clone().requires_grad();
        let y = match f.arity() {
            1 => f.apply_f32(&[&leaf], &params),
            _ => f.apply_f32(&[&leaf, &(&x * 0.5 + 0.25)], &params),
        };
        out.push(bits(&y));
        y.sum_all().backward();
        // Piecewise-constant functions (sign, step, …) pass no gradient at all.
        out.push(leaf.grad().map(|g| bits(&g)).unwrap_or_default());
    }
    let batch = Tensor::from_vec((0..64 * 30).map(|i| ((i * 37 % 101) as f32) / 101.0).collect(), &[64, 30]);
    let labels: Vec<usize> = (0..64).map(|i| i % 5).collect();
    let mut net = Network::<f32>::new(Architecture::mlp(&[30, 40, 5], Activation::TANH, None), 3).unwrap();
    let mut opt = Optimizer::adam(0.01);
    for _ in 0..3 {
        cross_entropy(&net.forward(&batch), &labels).backward();
        opt.step(&mut net);
        net.zero_grad();
    }
    net.visit(&mut String::new(), &mut |_, p| out.push(bits(p)));
    // The recurrent cells' fused kernels, forward and backward through time.
    for kind in [CellKind::Rnn, CellKind::RnnRelu, CellKind::Lstm, CellKind::Gru] {
        let layer = Recurrent::<f32>::new(kind, 30, 37, false, &mut rand::rngs::StdRng::seed_from_u64(4));
        let (all, state) = layer.forward_with_state(&batch.reshape(&[8, 8, 30]), None);
        out.push(bits(&all));
        (all.tanh().sum_all() + state.h.sum_all()).backward();
        layer.visit(&mut String::new(), &mut |_, p| out.push(bits(&p.grad().unwrap())));
    }
    out
}

#[test]
fn every_level_gives_the_bits_of_the_baseline_on_one_and_two_threads() {
    let levels = cpu::available();
    eprintln!("levels on this CPU: {levels:?}");
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        let mut results = Vec::new();
        for &level in &levels {
            cpu::force_level(Some(level));
            assert_eq!(cpu::level(), level);
            results.push((level, pool.install(workload)));
        }
        cpu::force_level(None);
        let (_, baseline) = &results[0];
        for (level, r) in &results[1..] {
            for (k, (a, b)) in r.iter().zip(baseline).enumerate() {
                assert!(a == b, "{level} differs from the baseline in result {k} on {threads} thread(s)");
            }
        }
    }
}

#[test]
fn a_level_above_the_cpus_is_never_used() {
    let before = cpu::force_level(Some(Level::Avx512));
    assert!(cpu::level() <= cpu::detected());
    cpu::force_level(before);
}
