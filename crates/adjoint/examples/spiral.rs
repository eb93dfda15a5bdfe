//! Three interleaved spirals, which no linear model separates, learned by a small ReLU MLP
//! trained with Adam on mini-batches.
//!
//! Run: `cargo run --release --example spiral`

use adjoint::data::Dataset;
use adjoint::nn::{accuracy, cross_entropy, mlp, Activation, Module};
use adjoint::no_grad;
use adjoint::optim::Optimizer;
use rand::SeedableRng;

fn main() {
    let data = adjoint::data::spiral(3, 100, 0);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let mut net = mlp::<f32>(&[2, 64, 64, 3], Activation::RELU, None, &mut rng);
    let mut opt = Optimizer::adam(0.01);
    for epoch in 1..=200 {
        for batch in data.batches(32, Some(epoch)) {
            let loss = cross_entropy(&net.forward(&batch.x), &batch.labels);
            loss.backward();
            opt.step(&mut net);
            net.zero_grad();
        }
        if epoch % 50 == 0 {
            report(&net, &data, epoch);
        }
    }
}

fn report(net: &impl Module<f32>, data: &Dataset, epoch: u64) {
    let all = data.rows(0, data.len());
    let (x, labels) = (all.x, all.labels);
    let logits = no_grad(|| net.forward(&x));
    let loss = no_grad(|| cross_entropy(&logits, &labels)).item();
    println!("epoch {epoch}: loss {loss:.4}, accuracy {:.1}%", 100.0 * accuracy(&logits, &labels));
}
