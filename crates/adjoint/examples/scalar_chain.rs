//! A long scalar chain (10⁶ recorded nodes): build it, backpropagate it, report ns per node.
use adjoint::{autodiff::live_nodes, Tensor};
use std::time::Instant;
fn main() {
    for _ in 0..3 {
        let start = Instant::now();
        let x = Tensor::<f64>::var(0.5);
        let c = Tensor::<f64>::var(0.999);
        let mut y = x.clone();
        for _ in 0..250_000 {
            y = (&y * &c + y.sin()) * 0.5;
        }
        let nodes = live_nodes();
        let built = start.elapsed();
        let g = y.backward();
        let total = start.elapsed();
        println!(
            "{nodes} nodes: build {:.1} ns/node, total {:.1} ns/node, dy/dx = {:e}",
            built.as_nanos() as f64 / nodes as f64,
            total.as_nanos() as f64 / nodes as f64,
            g.wrt(&x).map_or(0.0, |g| g.item())
        );
    }
}
