//! adjoint's side of `scripts/bench_transformer_torch.py`: a character transformer's training
//! step, and attention's memory against the sequence length.
//!
//! `--step`: embedding(65, 128) + learned positions → 4 pre-norm encoder layers (4 heads,
//! width 128, feed-forward 512, GELU, causal, no dropout) → layer norm → linear to 65 logits;
//! cross-entropy on next characters; batch 32 × context 128; AdamW 3e-4 (decay 0.1 on
//! matrices). Prints the median step time over `--steps` after 3 warm-up steps.
//!
//! `--memory`: for sequence lengths 256…2048 (one batch, 4 heads of 32), the peak bytes
//! allocated above the inputs by one forward and backward pass of attention, fused and
//! composed (the composed definition keeps the n × n weights). A counting allocator measures.
//!
//! Run: `cargo run --release --example bench_transformer -- --step --threads 2`

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use adjoint::nn::{
    cross_entropy, AttentionMasks, Embedding, FeedForwardActivation, LayerNorm, Linear, Module, PositionalEmbedding,
    TransformerEncoderLayer, TransformerOptions,
};
use adjoint::ops::AttentionOptions;
use adjoint::optim::Optimizer;
use adjoint::Tensor;
use rand::{Rng, SeedableRng};

/// The system allocator, counting the bytes in use and their peak.
struct Counting;

static IN_USE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = IN_USE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned()).unwrap_or_else(|| default.into())
}

fn step_bench() {
    let (vocab, width, context, batch) = (65, 128, 128, 32);
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let options = TransformerOptions {
        dim_feedforward: 4 * width,
        dropout: 0.0,
        activation: FeedForwardActivation::Gelu,
        batch_first: true,
        norm_first: true,
        ..TransformerOptions::new(width, 4)
    };
    let mut model = Model {
        embed: Embedding::new(vocab, width, &mut rng),
        positions: PositionalEmbedding::new(context, width, &mut rng),
        layers0: TransformerEncoderLayer::new(options, &mut rng),
        layers1: TransformerEncoderLayer::new(options, &mut rng),
        layers2: TransformerEncoderLayer::new(options, &mut rng),
        layers3: TransformerEncoderLayer::new(options, &mut rng),
        norm: LayerNorm::new(width),
        head: Linear::new(width, vocab, adjoint::nn::Init::XavierUniform, &mut rng),
    };
    let mut opt = Optimizer::adamw(3e-4, 0.1);
    let steps: usize = arg("--steps", "10").parse().expect("--steps N");
    let mut times = Vec::new();
    for i in 0..steps + 3 {
        let ids = ndarray::ArrayD::from_shape_fn(ndarray::IxDyn(&[batch, context + 1]), |_| rng.random_range(0..vocab));
        let start = Instant::now();
        let input = ids.slice(ndarray::s![.., ..context]).to_owned().into_dyn();
        let targets: Vec<usize> = ids.slice(ndarray::s![.., 1..]).iter().copied().collect();
        let logits = model.logits(&input).reshape(&[batch * context, vocab]);
        let loss = cross_entropy(&logits, &targets);
        loss.backward();
        opt.step(&mut model);
        model.zero_grad();
        if i >= 3 {
            times.push(start.elapsed().as_secs_f64());
        }
        if i == 0 {
            println!("first_loss={:.4}", loss.item());
        }
    }
    times.sort_by(f64::total_cmp);
    println!("step_ms={:.2}", 1e3 * times[times.len() / 2]);
}

struct Model {
    embed: Embedding<f32>,
    positions: PositionalEmbedding<f32>,
    layers0: TransformerEncoderLayer<f32>,
    layers1: TransformerEncoderLayer<f32>,
    layers2: TransformerEncoderLayer<f32>,
    layers3: TransformerEncoderLayer<f32>,
    norm: LayerNorm<f32>,
    head: Linear<f32>,
}

impl Model {
    fn logits(&self, ids: &ndarray::ArrayD<usize>) -> Tensor<f32> {
        let mut x = self.positions.forward(&self.embed.ids(ids));
        let masks = AttentionMasks { is_causal: true, ..Default::default() };
        for layer in [&self.layers0, &self.layers1, &self.layers2, &self.layers3] {
            x = layer.forward_masked(&x, &masks);
        }
        self.head.forward(&self.norm.forward(&x))
    }
}

impl Module<f32> for Model {
    fn forward(&self, _: &Tensor<f32>) -> Tensor<f32> {
        unreachable!("the model reads ids")
    }
    adjoint::parameters!(f32: ; modules: embed, positions, layers0, layers1, layers2, layers3, norm, head);
}

fn memory_bench() {
    println!("length,fused_peak_mib,composed_peak_mib");
    for len in [256usize, 512, 1024, 2048] {
        let shape = [1, 4, len, 32];
        let peak = |composed: bool| -> f64 {
            let q = Tensor::<f32>::rand_normal(&shape, 0.0, 1.0, 1).requires_grad();
            let k = Tensor::<f32>::rand_normal(&shape, 0.0, 1.0, 2).requires_grad();
            let v = Tensor::<f32>::rand_normal(&shape, 0.0, 1.0, 3).requires_grad();
            adjoint::tensor::pool::release();
            let base = IN_USE.load(Ordering::Relaxed);
            PEAK.store(base, Ordering::Relaxed);
            let options = AttentionOptions { causal: true, ..Default::default() };
            let out = if composed {
                Tensor::scaled_dot_product_attention_composed(&q, &k, &v, &options)
            } else {
                Tensor::scaled_dot_product_attention(&q, &k, &v, &options)
            };
            out.sum_all().backward();
            let peak = PEAK.load(Ordering::Relaxed) - base;
            drop((q, k, v, out));
            adjoint::tensor::pool::release();
            peak as f64 / (1 << 20) as f64
        };
        // One thread, so that per-thread block buffers do not blur the comparison.
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("a pool");
        let (fused, composed) = pool.install(|| (peak(false), peak(true)));
        println!("{len},{fused:.2},{composed:.2}");
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let threads: usize = arg("--threads", "2").parse().expect("--threads N");
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("a pool");
    if args.iter().any(|a| a == "--memory") {
        memory_bench();
    }
    if args.iter().any(|a| a == "--step") {
        pool.install(step_bench);
    }
}
