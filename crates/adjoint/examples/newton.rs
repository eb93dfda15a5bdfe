//! Newton's method against plain gradient descent on Rosenbrock's banana function
//! f(x, y) = (1 − x)² + 100(y − x²)², minimum at (1, 1). Newton steps solve H·d = −∇f with the
//! Hessian from forward-over-reverse; gradient descent only follows −∇f.
//!
//! Run: `cargo run --release --example newton`

use adjoint::autodiff::transforms::{grad, hessian};
use adjoint::Tensor;

fn rosenbrock(v: &Tensor<f64>) -> Tensor<f64> {
    let (x, y) = (v.narrow(0, 0, 1), v.narrow(0, 1, 1));
    ((1.0 - &x).sqr() + (y - x.sqr()).sqr() * 100.0).sum_all()
}

fn main() {
    let start = [-1.2, 1.0];
    let gradient = grad(rosenbrock);

    let mut p = start;
    for step in 1..=20 {
        let at = Tensor::from_vec(p.to_vec(), &[2]);
        let g = gradient(&at).to_vec();
        let h = hessian(rosenbrock, &at).to_vec();
        // Solve the 2×2 system H·d = −g.
        let det = h[0] * h[3] - h[1] * h[2];
        let d = [(-g[0] * h[3] + g[1] * h[1]) / det, (-g[1] * h[0] + g[0] * h[2]) / det];
        p = [p[0] + d[0], p[1] + d[1]];
        let f = rosenbrock(&Tensor::from_vec(p.to_vec(), &[2])).item();
        println!("Newton step {step:>2}: ({:.6}, {:.6})  f = {f:.3e}", p[0], p[1]);
        if f < 1e-20 {
            break;
        }
    }

    let mut p = start;
    let lr = 1e-3;
    for step in 1..=20_000 {
        let g = gradient(&Tensor::from_vec(p.to_vec(), &[2])).to_vec();
        p = [p[0] - lr * g[0], p[1] - lr * g[1]];
        if step % 5_000 == 0 {
            let f = rosenbrock(&Tensor::from_vec(p.to_vec(), &[2])).item();
            println!("gradient descent step {step:>6}: ({:.6}, {:.6})  f = {f:.3e}", p[0], p[1]);
        }
    }
}
