//! The cost law from the lectures: for f: Rⁿ → R, the reverse-mode gradient costs a small
//! constant times one evaluation of f, whatever n, while forward mode needs n sweeps.
//! Measured for n = 10, 100, 1000 on f(x) = Σ sin(x)·x² + logsumexp(x); the ratios to the
//! evaluation of f (the reference, in the same run) are what to read.

use std::hint::black_box;
use std::time::Duration;

use adjoint::autodiff::transforms::{grad, jacobian_fwd};
use adjoint::{no_grad, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

fn f(x: &Tensor<f64>) -> Tensor<f64> {
    (x.sin() * x.sqr()).sum_all() + x.logsumexp(0, false)
}

fn bench_cost_law(c: &mut Criterion) {
    let mut group = c.benchmark_group("cost_law");
    group.sample_size(20).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_millis(500));
    for n in [10usize, 100, 1000] {
        let x = Tensor::from_vec((0..n).map(|i| (i as f64 * 0.37).sin()).collect(), &[n]);
        group.bench_with_input(BenchmarkId::new("f", n), &x, |b, x| b.iter(|| no_grad(|| black_box(f(x)))));
        let g = grad(f);
        group.bench_with_input(BenchmarkId::new("reverse_gradient", n), &x, |b, x| b.iter(|| black_box(g(x))));
        group.bench_with_input(BenchmarkId::new("forward_n_sweeps", n), &x, |b, x| {
            b.iter(|| black_box(jacobian_fwd(f, x)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_cost_law);
criterion_main!(benches);
