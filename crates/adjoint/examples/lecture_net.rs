//! The lectures' two-layer network (784-100-10, tanh, softmax, cross-entropy over a batch),
//! written directly with primitives, as the lectures write it in C++:
//!
//! ```text
//! w1 = param(784,100); b1 = param(1,100); l1 = tanh(dot(x,w1)+b1); ...
//! loss = -mean(sum(y*log(l2),axis=1)); backward(); w1.grad()
//! ```
//!
//! Run: `cargo run --release --example lecture_net`

use std::path::PathBuf;

use adjoint::data::mnist;
use adjoint::nn::{loss::one_hot, Init};
use adjoint::{no_grad, Tensor};
use rand::SeedableRng;

/// The MNIST files: `$MNIST_DIR`, or the copy the command-line tool embeds.
fn mnist_dir() -> PathBuf {
    std::env::var_os("MNIST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../adjoint-cli/data/mnist")))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let mut param = |rows: usize, cols: usize| -> Tensor<f32> {
        Tensor::from_array(Init::XavierUniform.sample(&[rows, cols], rows, cols, &mut rng)).requires_grad()
    };
    let (mut w1, mut b1) = (param(784, 100), Tensor::zeros(&[1, 100]).requires_grad());
    let (mut w2, mut b2) = (param(100, 10), Tensor::zeros(&[1, 10]).requires_grad());

    let (train, test) = mnist::load_dir(&mnist_dir())?;
    let lr = 0.5f32;
    for epoch in 1..=3 {
        let mut total = 0.0;
        for batch in train.batches(100, Some(epoch)) {
            let (x, y) = (batch.x, one_hot::<f32>(&batch.labels, 10));
            let l1 = (x.matmul(&w1) + &b1).tanh();
            let l2 = (l1.matmul(&w2) + &b2).softmax(-1);
            let loss = -(y * l2.log()).sum(&[1], false).mean_all();
            loss.backward();
            for p in [&mut w1, &mut b1, &mut w2, &mut b2] {
                let g = p.grad().expect("every parameter is used");
                p.update(|mut v| v.scaled_add(-lr, &g.view()));
                p.zero_grad();
            }
            total += loss.item();
        }
        let all = test.rows(0, test.len());
        let logits = no_grad(|| (all.x.matmul(&w1) + &b1).tanh().matmul(&w2) + &b2);
        let acc = adjoint::nn::accuracy(&logits, &all.labels);
        println!("epoch {epoch}: mean training loss {:.4}, test accuracy {:.2}%", total / 600.0, acc * 100.0);
    }
    Ok(())
}
