//! Graph cost benchmarks (issue: the graph costs little beyond the arithmetic).
//!
//! (a) scalar graphs: build + backward of 10⁶ scalar nodes; report ns per node.
//! (b) tensor graphs: forward + backward of a matmul-heavy MLP through the tape, against the
//!     same products and elementwise kernels called directly with nothing recorded (the
//!     reference in the same run); the ratio is the graph's overhead.

use std::hint::black_box;
use std::time::{Duration, Instant};

use adjoint::{autodiff::live_nodes, no_grad, Tensor};
use criterion::{criterion_group, criterion_main, Criterion};
use ndarray::{ArrayD, IxDyn};

/// Builds a scalar graph with `steps` iterations of 4 primitives each and backpropagates it.
fn scalar_graph(steps: usize) -> (f64, usize) {
    let x = Tensor::<f64>::var(0.5);
    let c = Tensor::<f64>::var(0.999);
    let mut y = x.clone();
    for _ in 0..steps {
        // 4 nodes: mul, sin, add, mul-by-constant
        y = (&y * &c + y.sin()) * 0.5;
    }
    let nodes = live_nodes();
    let g = y.backward();
    (black_box(g.wrt(&x).map_or(0.0, |g| g.item())), nodes)
}

fn bench_scalar(c: &mut Criterion) {
    let steps = 250_000; // 10⁶ recorded nodes (+2 leaves)
    let (_, nodes) = scalar_graph(steps);
    let mut group = c.benchmark_group("scalar_graph");
    group.sample_size(10).measurement_time(Duration::from_secs(8));
    group.bench_function(format!("build+backward {nodes} nodes"), |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                scalar_graph(steps);
            }
            let elapsed = start.elapsed();
            eprintln!("scalar graph: {:.1} ns per node", elapsed.as_nanos() as f64 / (iters as f64 * nodes as f64));
            elapsed
        })
    });
    group.finish();
}

fn random(shape: &[usize], seed: u64) -> ArrayD<f32> {
    let mut s = seed;
    ArrayD::from_shape_fn(IxDyn(shape), |_| {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((s >> 33) as f32 / (1u64 << 31) as f32 - 0.5) * 0.1
    })
}

/// The MLP through the tape: forward, loss, backward.
fn mlp_graph(x: &Tensor<f32>, ws: &[Tensor<f32>]) -> f32 {
    let mut h = x.clone();
    for (i, w) in ws.iter().enumerate() {
        h = h.matmul(w);
        if i + 1 < ws.len() {
            h = h.relu();
        }
    }
    let loss = h.sqr().mean_all();
    loss.backward();
    loss.item()
}

/// The same arithmetic, nothing recorded: forward, then the backward products by hand.
fn mlp_bare(x: &Tensor<f32>, ws: &[Tensor<f32>]) -> f32 {
    no_grad(|| {
        let mut hs = vec![x.clone()];
        let mut zs = Vec::new();
        for (i, w) in ws.iter().enumerate() {
            let z = hs.last().unwrap().matmul(w);
            zs.push(z.clone());
            hs.push(if i + 1 < ws.len() { z.relu() } else { z });
        }
        let out = hs.last().unwrap();
        let loss = out.sqr().mean_all();
        let mut g = out * (2.0 / out.len() as f32);
        for i in (0..ws.len()).rev() {
            if i + 1 < ws.len() {
                g = &g * &zs[i].gt_mask(&Tensor::scalar(0.0));
            }
            black_box(hs[i].transpose().matmul(&g));
            if i > 0 {
                g = g.matmul(&ws[i].transpose());
            }
        }
        loss.item()
    })
}

fn bench_tensor(c: &mut Criterion) {
    let widths = [784, 1024, 1024, 10];
    let x = Tensor::from_array(random(&[256, 784], 1));
    let ws: Vec<Tensor<f32>> = widths
        .windows(2)
        .enumerate()
        .map(|(i, w)| Tensor::from_array(random(&[w[0], w[1]], i as u64 + 2)).requires_grad())
        .collect();
    let mut group = c.benchmark_group("tensor_graph_784_1024_1024_10_b256");
    group.sample_size(20).measurement_time(Duration::from_secs(10));
    group.bench_function("bare_kernels", |b| b.iter(|| mlp_bare(&x, &ws)));
    group.bench_function("through_tape", |b| {
        b.iter(|| {
            ws.iter().for_each(|w| w.zero_grad());
            mlp_graph(&x, &ws)
        })
    });
    group.finish();
}

criterion_group!(benches, bench_scalar, bench_tensor);
criterion_main!(benches);
