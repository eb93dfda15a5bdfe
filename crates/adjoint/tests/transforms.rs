//! The function transforms and the thread's recording switch.

#[test]
fn transforms_give_derivatives_inside_no_grad() {
    use adjoint::autodiff::transforms::{grad, hessian, jvp, vjp};
    use adjoint::{no_grad, Tensor};
    no_grad(|| {
        let d = grad(|x: &Tensor<f64>| x.powi(3))(&Tensor::scalar(2.0));
        assert_eq!(d.item(), 12.0);
        let h = hessian(|x: &Tensor<f64>| x.powi(3).sum_all(), &Tensor::from_vec(vec![1.0], &[1]));
        assert_eq!(h.to_vec(), vec![6.0]);
        let (_, t) = jvp(|x: &[Tensor<f64>]| vec![x[0].sin()], &[Tensor::scalar(0.0)], &[Tensor::scalar(1.0)]);
        assert_eq!(t[0].item(), 1.0);
        let (_, pullback) = vjp(|x: &[Tensor<f64>]| vec![x[0].sqr()], &[Tensor::scalar(3.0)]);
        assert_eq!(pullback.call(&[Tensor::scalar(1.0)])[0].item(), 6.0);
        assert!(!adjoint::autodiff::is_recording(), "the caller's setting is restored");
    });
}
