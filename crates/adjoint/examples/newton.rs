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

    let mut at = Tensor::from_vec(start.to_vec(), &[2]);
    for step in 1..=20 {
        // The Newton step d solves H·d = −∇f (an LU solve, never an explicit inverse).
        let d = hessian(rosenbrock, &at).solve(&-gradient(&at));
        at = &at + &d;
        let (p, f) = (at.to_vec(), rosenbrock(&at).item());
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
