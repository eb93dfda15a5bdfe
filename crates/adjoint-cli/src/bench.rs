//! `adjoint bench`: the speed figures users can reproduce on their own machine — a training
//! step of the lectures' network and of a large MLP, a scalar graph, and matrix products
//! alone — with per-step time, achieved GFLOP/s, the share of time in matrix products,
//! allocations per step and peak memory.
//!
//! Times are medians of blocks of steps after a warm-up. Compare frameworks in one run on
//! the same machine (see BENCHMARKS.md): two shared cores make absolute times move.

use std::time::Instant;

use adjoint::data::Dataset;
use adjoint::nn::{cross_entropy, Activation, Architecture, Init, LayerSpec, Module, Network};
use adjoint::optim::Optimizer;
use adjoint::{no_grad, Tensor};
use clap::{Args, ValueEnum};
use serde_json::{json, Map, Value};

use crate::alloc;
use crate::CliError;

/// What to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Row {
    /// 784-100-10 tanh, softmax cross-entropy, batch 500, SGD: one step on MNIST batches.
    Lecture,
    /// 784-1024-1024-10 ReLU, batch 256, SGD: one step.
    Big,
    /// A chain of 10⁶ scalar operations, build + backward, tensor engine and scalar tape.
    Scalar,
    /// f32 matrix products alone, 1024³ and the lecture net's shapes.
    Gemm,
    /// Step time of a 784-W-W-10 ReLU net as the batch and the width W grow.
    Scaling,
    /// LeNet (conv:20:5,relu,maxpool:2,conv:50:5,relu,maxpool:2,flatten,fc:500,relu,fc:10),
    /// batch 64, SGD: one step.
    Lenet,
    /// LSTM(128) over the 28 rows of an MNIST image, then fc:10; batch 64, Adam: one step
    /// (PyTorch's side: `bench_rnn.py --cell lstm`).
    Lstm,
    /// GRU(128), the same.
    Gru,
}

/// Arguments of `adjoint bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Which rows [default: lecture,big,scalar,gemm; scaling, lenet, lstm and gru only
    /// when asked].
    #[arg(long, value_enum, value_delimiter = ',', action = clap::ArgAction::Set)]
    rows: Option<Vec<Row>>,
    /// Worker threads for matrix products and kernels.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Blocks of steps timed (the median is reported).
    #[arg(long, default_value_t = 7)]
    repeats: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// The most timed blocks `--repeats` takes: each block's time is kept, and a thousand
/// medians are already steady.
const MAX_REPEATS: usize = 1000;

/// One measured figure set.
struct Measured {
    name: &'static str,
    seconds: f64,
    flops: f64,
    matmul_share: Option<f64>,
    allocations: Option<f64>,
    extra: Map<String, Value>,
}

/// Median seconds per call of `f` over `repeats` blocks of `per_block` calls, after warming up.
fn time(repeats: usize, per_block: usize, mut f: impl FnMut(usize)) -> f64 {
    for i in 0..per_block.min(5) {
        f(i);
    }
    let mut blocks: Vec<f64> = (0..repeats)
        .map(|r| {
            let t = Instant::now();
            for i in 0..per_block {
                f(r * per_block + i);
            }
            t.elapsed().as_secs_f64() / per_block as f64
        })
        .collect();
    blocks.sort_by(f64::total_cmp);
    blocks[blocks.len() / 2]
}

/// Share of matrix-product time and allocations per call over `calls` more calls.
fn profile(calls: usize, mut f: impl FnMut(usize)) -> (f64, f64) {
    adjoint::profile::reset();
    adjoint::profile::enable(true);
    let allocs = alloc::count();
    let t = Instant::now();
    for i in 0..calls {
        f(i);
    }
    let total = t.elapsed().as_secs_f64();
    adjoint::profile::enable(false);
    let per_call = (alloc::count() - allocs) as f64 / calls as f64;
    (adjoint::profile::matmul_seconds() / total, per_call)
}

fn mlp_step_row(
    name: &'static str,
    widths: &[usize],
    activation: Activation,
    batches: &[(Tensor<f32>, Vec<usize>)],
    repeats: usize,
) -> Result<Measured, CliError> {
    let arch = Architecture::mlp(widths, activation, Some(Init::XavierUniform));
    step_row(name, arch, Optimizer::sgd(0.1), batches, repeats)
}

/// One training step (forward, cross-entropy, backward, SGD) of `arch` on `batches`; the
/// flop count is 6 per multiply-add of the forward pass (the backward pass costs twice it).
fn step_row(
    name: &'static str,
    arch: Architecture,
    mut opt: Optimizer<f32>,
    batches: &[(Tensor<f32>, Vec<usize>)],
    repeats: usize,
) -> Result<Measured, CliError> {
    let macs_per_example = multiply_adds(&arch)?;
    let mut net = Network::<f32>::new(arch, 0)?;
    let mut step = |i: usize| {
        let (x, y) = &batches[i % batches.len()];
        cross_entropy(&net.forward(x), y).backward();
        opt.step(&mut net);
        net.zero_grad();
    };
    let seconds = time(repeats, 10, &mut step);
    let (share, allocations) = profile(20, &mut step);
    let forward = time(repeats, 10, |i| {
        let (x, y) = &batches[i % batches.len()];
        no_grad(|| cross_entropy(&net.forward(x), y).item());
    });
    let batch = batches[0].0.shape()[0];
    let macs = macs_per_example * batch;
    let mut extra = Map::new();
    extra.insert("forward_ms".into(), json!(forward * 1e3));
    extra.insert("batch".into(), json!(batch));
    // Forward (2 flops per multiply-add) and backward (twice that).
    Ok(Measured {
        name,
        seconds,
        flops: 6.0 * macs as f64,
        matmul_share: Some(share),
        allocations: Some(allocations),
        extra,
    })
}

/// Multiply-adds of one example's forward pass through the weighted layers.
fn multiply_adds(arch: &Architecture) -> Result<usize, CliError> {
    let shapes = arch.shapes()?;
    Ok(arch
        .layers
        .iter()
        .zip(shapes.windows(2))
        .map(|(layer, around)| match *layer {
            // Per step of a sequence.
            LayerSpec::Linear { inputs, .. } => inputs * around[1].iter().product::<usize>(),
            LayerSpec::Conv2d { inputs, kernel, .. } => inputs * kernel * kernel * around[1].iter().product::<usize>(),
            // Every step: the gates from the input and from the state.
            LayerSpec::Recurrent { cell, inputs, hidden, layers, bidirectional, .. } => {
                let steps = around[0].iter().product::<usize>() / inputs.max(1);
                let directions = if bidirectional { 2 } else { 1 };
                // The first layer reads the input; the others the layer below (D·H wide).
                let first = steps * cell.gates() * hidden * (inputs + hidden);
                let rest = steps * cell.gates() * hidden * (directions * hidden + hidden);
                directions * (first + (layers - 1) * rest)
            }
            // Per step: the four projections, the feed-forward block, and scores and mixing
            // with the steps before it (half the square, causal or not, for a rough count).
            LayerSpec::Transformer { width, feed_forward, .. } => {
                let steps = around[0][0];
                steps * (4 * width * width + 2 * width * feed_forward + steps * width)
            }
            _ => 0,
        })
        .sum())
}

fn synthetic(rows: usize, width: usize, classes: usize) -> (Tensor<f32>, Vec<usize>) {
    let mut s = 0x9E37_79B9u64;
    let x: Vec<f32> = (0..rows * width)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (s >> 40) as f32 / (1u64 << 24) as f32
        })
        .collect();
    (Tensor::from_vec(x, &[rows, width]), (0..rows).map(|i| i % classes).collect())
}

fn scalar_row() -> Measured {
    const STEPS: usize = 250_000;
    let ops = (4 * STEPS) as f64;
    let tensor = {
        let run = || {
            let x = Tensor::<f64>::var(0.5);
            let c = Tensor::<f64>::var(0.999);
            let mut y = x.clone();
            for _ in 0..STEPS {
                y = (&y * &c + y.sin()) * 0.5;
            }
            y.backward();
        };
        run();
        let t = Instant::now();
        run();
        t.elapsed().as_secs_f64() / ops
    };
    let tape = {
        let run = || {
            let tape = adjoint::scalar::Tape::new();
            let x = tape.var(0.5);
            let c = tape.var(0.999);
            let mut y = x;
            for _ in 0..STEPS {
                y = (y * c + y.sin()) * 0.5;
            }
            std::hint::black_box(tape.gradient(y)[x]);
        };
        run();
        let t = Instant::now();
        run();
        t.elapsed().as_secs_f64() / ops
    };
    let mut extra = Map::new();
    extra.insert("tensor_engine_ns_per_op".into(), json!(tensor * 1e9));
    extra.insert("scalar_tape_ns_per_op".into(), json!(tape * 1e9));
    Measured { name: "scalar graph (per op)", seconds: tape, flops: 0.0, matmul_share: None, allocations: None, extra }
}

/// f32 products alone: 1024³, and the lecture network's two big products in the layouts its
/// step uses (the forward x·Wᵀ with W stored `[out, in]`, and ∂W = δᵀ·x), both given as
/// strides, not copies. `scripts/bench_gemm_torch.py` times the same products in PyTorch.
fn gemm_rows(repeats: usize) -> Vec<Measured> {
    let ones = |shape: &[usize]| Tensor::<f32>::ones(shape);
    let rows: [(&'static str, Tensor<f32>, Tensor<f32>); 4] = [
        ("gemm 1024³", ones(&[1024, 1024]), ones(&[1024, 1024])),
        ("gemm 500×784×100", ones(&[500, 784]), ones(&[784, 100])),
        ("gemm x·Wᵀ 500×784×100 (lecture forward)", ones(&[500, 784]), ones(&[100, 784]).transpose()),
        ("gemm δᵀ·x 100×500×784 (lecture ∂W)", ones(&[500, 100]).transpose(), ones(&[500, 784])),
    ];
    rows.into_iter()
        .map(|(name, a, b)| {
            let (m, k, n) = (a.shape()[0], a.shape()[1], b.shape()[1]);
            let seconds = time(repeats, if m * k * n > 1 << 28 { 3 } else { 20 }, |_| {
                std::hint::black_box(a.matmul(&b));
            });
            Measured {
                name,
                seconds,
                flops: 2.0 * (m * k * n) as f64,
                matmul_share: None,
                allocations: None,
                extra: Map::new(),
            }
        })
        .collect()
}

/// The bundled MNIST's first training batches, or synthetic ones of the same shape.
fn lecture_batches() -> Vec<(Tensor<f32>, Vec<usize>)> {
    let train: Option<Dataset> = crate::mnist::bundled().ok().map(|(t, _)| t);
    match train {
        Some(t) => t.batches(500, Some(1)).take(20).map(|b| (b.x, b.labels)).collect(),
        None => vec![synthetic(500, 784, 10)],
    }
}

pub(crate) fn run(args: BenchArgs) -> Result<(), CliError> {
    if args.repeats == 0 || args.repeats > MAX_REPEATS {
        return Err(CliError::Usage(format!("--repeats must be between 1 and {MAX_REPEATS}")));
    }
    if args.threads == 0 || args.threads > crate::config::MAX_THREADS {
        return Err(CliError::Usage(format!("--threads must be between 1 and {}", crate::config::MAX_THREADS)));
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .build()
        .map_err(|e| CliError::Internal(format!("cannot start {} threads: {e}", args.threads)))?;
    let rows = args.rows.clone().unwrap_or_else(|| vec![Row::Lecture, Row::Big, Row::Scalar, Row::Gemm]);
    // (--rows scaling adds the scaling grid; it is not in the default set.)
    let results: Vec<Measured> = pool.install(|| -> Result<Vec<Measured>, CliError> {
        let mut results = Vec::new();
        for row in &rows {
            match row {
                Row::Lecture => results.push(mlp_step_row(
                    "lecture net step (784-100-10 tanh, batch 500)",
                    &[784, 100, 10],
                    Activation::TANH,
                    &lecture_batches(),
                    args.repeats,
                )?),
                Row::Big => results.push(mlp_step_row(
                    "big net step (784-1024-1024-10 ReLU, batch 256)",
                    &[784, 1024, 1024, 10],
                    Activation::RELU,
                    &[synthetic(256, 784, 10)],
                    args.repeats,
                )?),
                Row::Lenet => results.push(step_row(
                    "LeNet step (conv 20:5, conv 50:5, fc 500, batch 64)",
                    Architecture::parse("lenet", &[1, 28, 28], Some(Init::HeNormal))
                        .map_err(|e| CliError::Internal(e.to_string()))?,
                    Optimizer::sgd(0.1),
                    &[synthetic(64, 784, 10)],
                    args.repeats,
                )?),
                Row::Lstm | Row::Gru => {
                    let (name, spec) = if *row == Row::Lstm {
                        ("LSTM(128) step (28 rows of 28, fc 10, batch 64, Adam)", "lstm:128,fc:10")
                    } else {
                        ("GRU(128) step (28 rows of 28, fc 10, batch 64, Adam)", "gru:128,fc:10")
                    };
                    results.push(step_row(
                        name,
                        Architecture::parse(spec, &[1, 28, 28], None).map_err(|e| CliError::Internal(e.to_string()))?,
                        Optimizer::adam(0.002),
                        &[synthetic(64, 784, 10)],
                        args.repeats,
                    )?)
                }
                Row::Scalar => results.push(scalar_row()),
                Row::Gemm => results.extend(gemm_rows(args.repeats)),
                Row::Scaling => {
                    for (batch, width) in [(64, 1024), (256, 1024), (1024, 1024), (256, 256), (256, 512), (256, 2048)] {
                        let mut m = mlp_step_row(
                            "scaling",
                            &[784, width, width, 10],
                            Activation::RELU,
                            &[synthetic(batch, 784, 10)],
                            args.repeats.min(3),
                        )?;
                        m.name = Box::leak(format!("784-{width}-{width}-10 ReLU, batch {batch}").into_boxed_str());
                        results.push(m);
                    }
                }
            }
        }
        Ok(results)
    })?;
    let peak = alloc::peak_rss_bytes();
    if args.json {
        let rows: Vec<Value> = results
            .iter()
            .map(|m| {
                let mut o = Map::new();
                o.insert("name".into(), json!(m.name));
                o.insert("ms".into(), adjoint::json::number(m.seconds * 1e3));
                if m.flops > 0.0 {
                    o.insert("gflops".into(), adjoint::json::number(m.flops / m.seconds / 1e9));
                }
                if let Some(s) = m.matmul_share {
                    o.insert("matmul_share".into(), adjoint::json::number(s));
                }
                if let Some(a) = m.allocations {
                    o.insert("allocations_per_step".into(), adjoint::json::number(a));
                }
                o.extend(m.extra.clone());
                Value::Object(o)
            })
            .collect();
        let out = json!({
            "threads": args.threads,
            "cpu": adjoint::cpu::model_name(),
            "kernels": adjoint::cpu::level().name(),
            "gemm_kernels": adjoint::cpu::gemm_level().name(),
            "rows": rows,
            "peak_rss_mib": peak.map(|b| b as f64 / 1048576.0)
        });
        println!("{}", crate::json_line(&out));
        return Ok(());
    }
    println!("adjoint bench, {} thread(s)", args.threads);
    println!(
        "  CPU: {}; kernels: {}{}; matrix products: {}",
        adjoint::cpu::model_name().unwrap_or_else(|| "unknown".into()),
        adjoint::cpu::level(),
        if adjoint::cpu::level_forced().is_some() { " (forced by ADJOINT_KERNELS)" } else { "" },
        adjoint::cpu::gemm_level()
    );
    for m in &results {
        // Per-operation rows (the scalar graph) take nanoseconds: a millisecond column would
        // show 0.000.
        let mut line = if m.seconds < 1e-5 {
            format!("  {:<50} {:>9.1} ns", m.name, m.seconds * 1e9)
        } else {
            format!("  {:<50} {:>9.3} ms", m.name, m.seconds * 1e3)
        };
        if m.flops > 0.0 {
            line += &format!("  {:>6.1} GFLOP/s", m.flops / m.seconds / 1e9);
        }
        if let Some(s) = m.matmul_share {
            line += &format!("  matmul {:>4.1}%", 100.0 * s);
        }
        if let Some(a) = m.allocations {
            line += &format!("  {a:.0} allocations/step");
        }
        for (k, v) in &m.extra {
            if let Some(x) = v.as_f64() {
                line += &format!("  {k} {x:.3}");
            }
        }
        println!("{line}");
    }
    if let Some(p) = peak {
        println!("  peak resident memory {:.0} MiB", p as f64 / 1048576.0);
    }
    Ok(())
}
