//! Training on your own data with the library's `Trainer`: a classification problem (two
//! interleaved half-moons) and a regression problem (y = sin(3x₀)·x₁ + noise), each split
//! into training and test sets (seeded; stratified for the classes), trained, saved with its
//! architecture and input standardisation, loaded back and used for predictions.
//!
//! Run: `cargo run --release --example own_data`

use adjoint::data::{Dataset, InputNorm};
use adjoint::ndarray::Array2;
use adjoint::nn::{Activation, Architecture, Network};
use adjoint::optim::{LrSchedule, Optimizer, Scheduler};
use adjoint::rand::{Rng, SeedableRng};
use adjoint::train::{TrainSettings, Trainer};

/// Two half-moons of `n` points each, with some noise.
fn moons(n: usize, rng: &mut impl Rng) -> Dataset {
    let mut x = Vec::with_capacity(4 * n);
    let mut labels = Vec::with_capacity(2 * n);
    for i in 0..2 * n {
        let (class, t) = (i % 2, std::f32::consts::PI * rng.random::<f32>());
        let (cx, cy) = if class == 0 { (t.cos(), t.sin()) } else { (1.0 - t.cos(), 0.5 - t.sin()) };
        x.extend([cx * 3.0 + rng.random_range(-0.3..0.3), cy * 3.0 + rng.random_range(-0.3..0.3)]);
        labels.push(class);
    }
    Dataset::new(Array2::from_shape_vec((2 * n, 2), x).expect("rows"), labels, 2)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut rng = adjoint::rand::rngs::StdRng::seed_from_u64(7);
    let dir = std::env::temp_dir().join("adjoint-own-data");
    std::fs::create_dir_all(&dir)?;

    // Classification.
    let (mut train, mut test) = moons(500, &mut rng).split(0.2, 1);
    let norm = InputNorm::fit(&train);
    norm.apply(&mut train);
    norm.apply(&mut test);
    let mut network = Network::new(Architecture::mlp(&[2, 32, 32, 2], Activation::RELU, None), 1)?;
    network.input_norm = Some(norm);
    let settings = TrainSettings { batch: 32, epochs: 30, ..TrainSettings::default() };
    let mut trainer =
        Trainer::new(network, Optimizer::adam(0.01), Scheduler::new(LrSchedule::Constant, 0.01), settings)?;
    let history = trainer.fit(&train, &test)?;
    let last = history.last().expect("epochs");
    println!("moons: test accuracy {:.1}% after {} epochs", 100.0 * last.test_accuracy.unwrap_or(0.0), last.epoch);
    let path = dir.join("moons.safetensors");
    trainer.network.save(&path)?;
    let loaded = Network::<f32>::load(&path)?;
    // Raw (unstandardised) features: the saved standardisation is applied by predict().
    let points = Array2::from_shape_vec((2, 2), vec![0.0f32, 3.0, 3.0, -1.5])?;
    let p = loaded.predict(&points).softmax(-1).to_vec();
    println!("moons: P(class 1) at (0, 3) = {:.3}, at (3, −1.5) = {:.3}", p[1], p[3]);

    // Regression.
    let n = 2000;
    let x = Array2::from_shape_fn((n, 2), |_| rng.random_range(-1.0f32..1.0));
    let y = Array2::from_shape_fn((n, 1), |(i, _)| (3.0 * x[[i, 0]]).sin() * x[[i, 1]] + rng.random_range(-0.01..0.01));
    let (train, test) = Dataset::regression(x, y).split(0.2, 2);
    let network = Network::new(Architecture::mlp(&[2, 64, 64, 1], Activation::TANH, None), 2)?;
    let settings = TrainSettings { batch: 64, epochs: 60, ..TrainSettings::default() };
    let schedule = Scheduler::new(LrSchedule::Cosine { epochs: 60, min_lr: 1e-4 }, 0.005);
    let mut trainer = Trainer::new(network, Optimizer::adam(0.005), schedule, settings)?;
    let history = trainer.fit(&train, &test)?;
    println!(
        "regression: test mean squared error {:.5} (first epoch {:.5}; the target's variance is about 0.17)",
        history.last().expect("epochs").test_loss,
        history[0].test_loss
    );
    let path = dir.join("sine.safetensors");
    trainer.network.save(&path)?;
    let loaded = Network::<f32>::load(&path)?;
    let at = Array2::from_shape_vec((1, 2), vec![0.5f32, 0.8])?;
    println!("regression: f(0.5, 0.8) ≈ {:.4} (exact {:.4})", loaded.predict(&at).item(), (1.5f32).sin() * 0.8);
    Ok(())
}
