//! A long scalar chain (10⁶ recorded operations): build it and backpropagate it, with the
//! tensor engine and with the scalar tape, and report nanoseconds per operation.
//!
//! Run: `cargo run --release --example scalar_chain`
use std::time::Instant;

use adjoint::scalar::Tape;
use adjoint::Tensor;

const STEPS: usize = 250_000; // 4 operations each: mul, sin, add, mul by a constant

fn main() {
    for _ in 0..3 {
        let start = Instant::now();
        let x = Tensor::<f64>::var(0.5);
        let c = Tensor::<f64>::var(0.999);
        let mut y = x.clone();
        for _ in 0..STEPS {
            y = (&y * &c + y.sin()) * 0.5;
        }
        let built = start.elapsed();
        let g = y.backward();
        let total = start.elapsed();
        let nodes = (4 * STEPS) as f64;
        println!(
            "tensor engine: build {:.1} ns/op, total {:.1} ns/op, dy/dx = {:e}",
            built.as_nanos() as f64 / nodes,
            total.as_nanos() as f64 / nodes,
            g.wrt(&x).map_or(0.0, |g| g.item())
        );

        let start = Instant::now();
        let tape = Tape::with_capacity(4 * STEPS + 2);
        let x = tape.var(0.5);
        let c = tape.var(0.999);
        let mut y = x;
        for _ in 0..STEPS {
            y = (y * c + y.sin()) * 0.5;
        }
        let built = start.elapsed();
        let g = tape.gradient(y);
        let total = start.elapsed();
        println!(
            "scalar tape:   build {:.1} ns/op, total {:.1} ns/op, dy/dx = {:e}",
            built.as_nanos() as f64 / nodes,
            total.as_nanos() as f64 / nodes,
            g[x]
        );
    }
}
