//! adjoint's side of `shared/bench/bench_mlp.py`: the same work, printed as `name=value`
//! lines, so that a figure can be quoted as a ratio to numpy/JAX/PyTorch measured in the same
//! session.
//!
//! `--net small`: 784-100-10 tanh, softmax cross-entropy, batch 500, SGD 0.1: step and
//! forward times, then a 5-epoch run (`train_s`, `test_accuracy`).
//! `--net big`: 784-1024-1024-10 ReLU, batch 256: step time and GFLOP/s.
//!
//! Run: `cargo run --release --example bench_mlp -- --net small --threads 2 [--epochs 5]`
//!
//! `--plain`: the loop runs straight from `main` on rayon's global pool, as a program
//! written from the docs does (no `pool.install`; `--threads` is then ignored).
//! `--no-pool`: the buffer pool is turned off (`adjoint::tensor::pool::set_limit(0)`), to
//! measure what it saves in the same build.

use std::time::Instant;

use adjoint::data::mnist;
use adjoint::nn::{cross_entropy, Linear, Module, Sequential};
use adjoint::nn::{Activation, ActivationLayer, Init};
use adjoint::optim::Optimizer;
use adjoint::{no_grad, Tensor};
use rand::SeedableRng;

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned()).unwrap_or_else(|| default.into())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--no-pool") {
        adjoint::tensor::pool::set_limit(0);
    }
    if args.iter().any(|a| a == "--plain") {
        println!("plain_main=1");
        return run(rayon::current_num_threads());
    }
    let threads: usize = arg("--threads", "2").parse()?;
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build()?;
    // The loop runs on one of the pool's threads (as `adjoint train` does), so that the
    // kernels' parallel sections start without handing work over from an outside thread.
    Ok(pool.install(|| run(threads).map_err(|e| e.to_string()))?)
}

fn run(threads: usize) -> Result<(), Box<dyn std::error::Error>> {
    let net = arg("--net", "small");
    let epochs: usize = arg("--epochs", if net == "small" { "5" } else { "0" }).parse()?;
    let (sizes, act, batch): (Vec<usize>, Activation, usize) = match net.as_str() {
        "small" => (vec![784, 100, 10], Activation::TANH, 500),
        _ => (vec![784, 1024, 1024, 10], Activation::RELU, 256),
    };
    println!(
        "framework=adjoint\nnet={}_{act}_batch{batch}\nthreads={threads}",
        sizes.iter().map(ToString::to_string).collect::<Vec<_>>().join("-")
    );
    let make = || {
        // U(±1/√fan_in) weights and zero biases, as the reference script.
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let mut m = Sequential::<f32>::new();
        for (k, w) in sizes.windows(2).enumerate() {
            let mut layer = Linear::<f32>::new(w[0], w[1], Init::Constant { value: 0.0 }, &mut rng);
            let a = 1.0 / (w[0] as f64).sqrt();
            let u = rand_distr::Uniform::new(-a, a).expect("range");
            layer.weight.update(|mut v| v.mapv_inplace(|_| rand_distr::Distribution::sample(&u, &mut rng) as f32));
            m.push(layer);
            if k + 2 < sizes.len() {
                m.push(ActivationLayer(act));
            }
        }
        m
    };
    let pool_before = adjoint::tensor::pool::stats();
    let dir = std::env::var_os("MNIST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/../adjoint-cli/data/mnist").into());
    let (train, test) = mnist::load_dir(&dir)?;
    let batches: Vec<(Tensor<f32>, Vec<usize>)> =
        train.batches(batch, Some(1)).take(20).map(|b| (b.x, b.labels)).collect();
    let mut model = make();
    let mut opt = Optimizer::sgd(0.1);
    let mut step = |model: &mut Sequential<f32>, x: &Tensor<f32>, y: &[usize]| -> f32 {
        let loss = cross_entropy(&model.forward(x), y);
        loss.backward();
        opt.step(model);
        model.zero_grad();
        loss.item()
    };
    let time_blocks = |f: &mut dyn FnMut(usize)| -> Vec<f64> {
        for i in 0..5 {
            f(i);
        }
        (0..7)
            .map(|r| {
                let t = Instant::now();
                for i in 0..10 {
                    f(r * 10 + i);
                }
                t.elapsed().as_secs_f64() / 10.0
            })
            .collect()
    };
    let steps = time_blocks(&mut |i| {
        let (x, y) = &batches[i % batches.len()];
        step(&mut model, x, y);
    });
    let fwds = time_blocks(&mut |i| {
        let (x, y) = &batches[i % batches.len()];
        no_grad(|| cross_entropy(&model.forward(x), y).item());
    });
    let (t_step, t_fwd) = (median(steps.clone()), median(fwds));
    let flop: usize = sizes.windows(2).map(|w| w[0] * w[1]).sum::<usize>() * batch;
    println!("step_ms_median={:.3}", t_step * 1e3);
    println!("step_ms_min={:.3}", steps.iter().copied().fold(f64::INFINITY, f64::min) * 1e3);
    println!("fwd_ms_median={:.3}", t_fwd * 1e3);
    println!("step_over_fwd={:.2}", t_step / t_fwd);
    println!("train_gflops={:.1}", 6.0 * flop as f64 / t_step / 1e9);
    let pool_after = adjoint::tensor::pool::stats();
    let (hits, misses) = (pool_after.hits - pool_before.hits, pool_after.misses - pool_before.misses);
    println!("pool_hit_rate={:.3}", hits as f64 / (hits + misses).max(1) as f64);
    println!("pool_kept_mib={:.1}", pool_after.kept_bytes as f64 / (1 << 20) as f64);
    if epochs > 0 {
        let mut model = make();
        let t = Instant::now();
        for e in 0..epochs {
            for b in train.batches(batch, Some(e as u64 + 2)) {
                if b.labels.len() == batch {
                    step(&mut model, &b.x, &b.labels);
                }
            }
        }
        let train_s = t.elapsed().as_secs_f64();
        let all = test.rows(0, test.len());
        let acc = no_grad(|| adjoint::nn::accuracy(&model.forward(&all.x), &all.labels));
        println!("train_epochs={epochs}\ntrain_s={train_s:.3}\ntest_accuracy={acc:.4}");
    }
    Ok(())
}
