//! Graphs are freed when the values that need them are dropped: inference loops outside
//! `no_grad`, a backward pass, long chains. One test in its own binary, because it counts the
//! graph nodes alive in the process (other tests would add theirs).

use adjoint::autodiff::live_nodes;
use adjoint::nn::{mlp, Activation, Module};
use adjoint::Tensor;
use rand::SeedableRng;

#[test]
fn dropped_values_take_their_graphs_with_them() {
    let start = live_nodes();
    let layer = Tensor::<f32>::from_vec(vec![0.01; 64 * 64], &[64, 64]).requires_grad();
    let x = Tensor::<f32>::ones(&[8, 64]);
    assert_eq!(live_nodes(), start + 1, "one leaf");

    // 5,000 forward passes with recording on, outputs dropped: nothing accumulates.
    for _ in 0..5_000 {
        let y = x.matmul(&layer).tanh().sum_all();
        assert!(y.is_tracked());
    }
    assert_eq!(live_nodes(), start + 1);

    // A network's predictions in a loop, as a server would make them.
    let net = mlp::<f32>(&[64, 32, 10], Activation::RELU, None, &mut rand::rngs::StdRng::seed_from_u64(0));
    let with_params = live_nodes();
    for _ in 0..2_000 {
        let _ = net.forward(&x).softmax(-1).argmax_rows();
    }
    assert_eq!(live_nodes(), with_params);

    // A backward pass frees what it used, the graph's last owner frees the rest.
    let y = x.matmul(&layer).sigmoid().sum_all();
    assert!(live_nodes() > with_params);
    y.backward();
    drop(y);
    assert_eq!(live_nodes(), with_params);

    // A million-node scalar chain is freed without recursion.
    let v = Tensor::<f64>::var(0.5);
    let mut h = v.clone();
    for _ in 0..1_000_000 {
        h = h.sin();
    }
    assert_eq!(live_nodes(), with_params + 1_000_001);
    drop(h);
    drop(v);
    assert_eq!(live_nodes(), with_params);
}
