//! Logistic regression with an L2 penalty, as in the lectures: labels y = ±1,
//! p(y|x) = σ(y·wᵀx), and L(w) = ½‖w‖² − λ Σᵢ log p(yᵢ|xᵢ), minimised by gradient descent.
//!
//! Run: `cargo run --release --example logistic_regression`

use adjoint::optim::{minimize, GradientDescent};
use adjoint::Tensor;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};

fn main() {
    // Two Gaussian clouds in 2-D, centred at (1, 1) (label +1) and (−1, −1) (label −1), plus a
    // constant feature for the bias.
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let noise = Normal::new(0.0, 0.8).expect("valid");
    let n = 200;
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let y: f64 = if rng.random_bool(0.5) { 1.0 } else { -1.0 };
        xs.extend([y + noise.sample(&mut rng), y + noise.sample(&mut rng), 1.0]);
        ys.push(y);
    }
    let x = Tensor::from_vec(xs, &[n, 3]);
    let y = Tensor::from_vec(ys.clone(), &[n, 1]);
    let lambda = 1.0;

    let loss = |w: &[Tensor<f64>]| {
        let margin = x.matmul(&w[0]) * &y; // y·wᵀx per example
        let log_p = -((-margin).exp() + 1.0).log(); // log σ(m) = −log(1 + e^(−m))
        w[0].sqr().sum_all() * 0.5 - log_p.sum_all() * lambda
    };
    let mut w = [Tensor::zeros(&[3, 1]).requires_grad()];
    let settings = GradientDescent { lr: 0.002, tolerance: 1e-8, max_steps: 5000, decay: 1.0 };
    let result = minimize(loss, &mut w, settings);
    let scores = x.matmul(&w[0]).to_vec();
    let correct = scores.iter().zip(&ys).filter(|(s, y)| s.signum() == y.signum()).count();
    println!("{result:?}");
    println!("w = {:?}", w[0].to_vec());
    println!("training accuracy {:.1}%", 100.0 * correct as f64 / n as f64);
}
