//! An LSTM reads each MNIST digit row by row (28 steps of 28 pixels) and classifies it from
//! its last hidden state: back-propagation through time on the ordinary graph, written as a
//! user would, with a custom module and a hand-written training loop.
//!
//! Run: `cargo run --release --example lstm_mnist [MNIST_DIR] [EPOCHS]`
//! (default: the bundled copy in crates/adjoint-cli/data/mnist, 3 epochs; ~97.5–98.5%).
//! `adjoint train --arch lstm:128,fc:10` trains the same network from the command line.

use std::path::PathBuf;

use adjoint::nn::{cross_entropy, CellKind, Init, Linear, Module, Recurrent};
use adjoint::optim::Optimizer;
use adjoint::rand::SeedableRng;
use adjoint::{parameters, Tensor};

/// 28 rows → LSTM(28 → 128) → last state → 10 logits.
struct RowReader {
    lstm: Recurrent<f32>,
    head: Linear<f32>,
}

impl Module<f32> for RowReader {
    fn forward(&self, x: &Tensor<f32>) -> Tensor<f32> {
        let rows = x.reshape(&[x.shape()[0], 28, 28]);
        self.head.forward(&self.lstm.forward(&rows))
    }
    parameters!(f32: ; modules: lstm, head);
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().map_or_else(|| PathBuf::from("crates/adjoint-cli/data/mnist"), PathBuf::from);
    let epochs: usize = args.next().map_or(Ok(3), |e| e.parse())?;
    let (train, test) = adjoint::data::mnist::load_dir_limited(&dir, None, None)?;
    let mut rng = adjoint::rand::rngs::StdRng::seed_from_u64(1);
    let mut model = RowReader {
        lstm: Recurrent::new(CellKind::Lstm, 28, 128, true, &mut rng),
        head: Linear::new(128, 10, Init::XavierUniform, &mut rng),
    };
    let mut optimizer = Optimizer::adam(0.002);
    for epoch in 1..=epochs {
        let start = std::time::Instant::now();
        let mut loss_sum = 0.0;
        for (step, batch) in train.batches(64, Some(epoch as u64)).enumerate() {
            let loss = cross_entropy(&model.forward(&batch.x), &batch.labels);
            loss_sum += loss.item() as f64;
            loss.backward(); // through all 28 steps of every sequence
            optimizer.step(&mut model);
            model.zero_grad();
            if step % 200 == 0 {
                println!("epoch {epoch} step {step:>4}  loss {:.4}", loss_sum / (step + 1) as f64);
            }
        }
        let accuracy = adjoint::train::evaluate(&model, &test).accuracy.unwrap_or(0.0);
        println!("epoch {epoch}: test accuracy {:.2}%  ({:.0} s)", 100.0 * accuracy, start.elapsed().as_secs_f64());
    }
    Ok(())
}
