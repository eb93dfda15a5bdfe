//! The numbers from the lecture slides, in radians.

use adjoint::{gradients, jvp_sweep, BackwardOptions, Tensor};
use approx::assert_abs_diff_eq;

const F: f64 = 4140.0408905;
const DFDX: f64 = 1501.6029263;
const DFDY: f64 = 1399.6462764;

fn lecture(x: &Tensor<f64>, y: &Tensor<f64>) -> Tensor<f64> {
    (x * y + x.sin() + 4.0) * (y.sqr() * 3.0 + 6.0)
}

#[test]
fn reverse_mode_gives_value_and_both_partials_in_one_sweep() {
    let (x, y) = (Tensor::var(2.0), Tensor::var(8.0));
    let f = lecture(&x, &y);
    let g = f.backward();
    assert_abs_diff_eq!(f.item(), F, epsilon = 1e-6);
    assert_abs_diff_eq!(g.wrt(&x).unwrap().item(), DFDX, epsilon = 1e-6);
    assert_abs_diff_eq!(g.wrt(&y).unwrap().item(), DFDY, epsilon = 1e-6);
    // backward() also accumulates into the leaves, as PyTorch's .grad does.
    assert_abs_diff_eq!(x.grad().unwrap().item(), DFDX, epsilon = 1e-6);
}

#[test]
fn forward_mode_gives_one_partial_per_sweep() {
    let (x, y) = (Tensor::var(2.0), Tensor::var(8.0));
    let f = lecture(&x, &y);
    let dy = jvp_sweep(&[&f], &[(&y, Tensor::scalar(1.0))], false);
    assert_abs_diff_eq!(dy[0].item(), DFDY, epsilon = 1e-6);
    let dx = jvp_sweep(&[&f], &[(&x, Tensor::scalar(1.0))], false);
    assert_abs_diff_eq!(dx[0].item(), DFDX, epsilon = 1e-6);
}

#[test]
fn leaves_take_part_in_new_graphs_after_a_backward_pass_frees_the_old_one() {
    let (x, y) = (Tensor::var(2.0), Tensor::var(8.0));
    for _ in 0..3 {
        x.zero_grad();
        lecture(&x, &y).backward();
        assert_abs_diff_eq!(x.grad().unwrap().item(), DFDX, epsilon = 1e-6);
    }
}

#[test]
fn mixed_partial_by_recording_the_backward_pass() {
    let (x, y) = (Tensor::var(2.0), Tensor::var(8.0));
    let f = lecture(&x, &y);
    let dfdx = gradients(&f, &[&x], None, true).remove(0).unwrap();
    let d2 = gradients(&dfdx, &[&y], None, false).remove(0).unwrap();
    assert_abs_diff_eq!(d2.item(), 562.0249518, epsilon = 1e-6);
}

#[test]
fn gradients_accumulate_over_every_path() {
    // y = x·x·x uses x three times: dy/dx = 3x².
    let x = Tensor::var(1.5);
    let y = &x * &x * &x;
    let g = y.backward_with(BackwardOptions::default());
    assert_abs_diff_eq!(g.wrt(&x).unwrap().item(), 3.0 * 1.5 * 1.5, epsilon = 1e-12);
}
