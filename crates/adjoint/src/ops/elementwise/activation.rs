//! Activation functions: sigmoid, relu, leaky_relu, elu, softplus, gelu (exact, erf form, as
//! PyTorch's default), silu. Each declares how it serves as a hidden-layer activation.
//!
//! Edge values follow PyTorch: relu(NaN) is NaN (a diverging run is not hidden), and the
//! derivative of the rectifiers at 0 is that of the left side.

use std::f64::consts::{FRAC_1_SQRT_2, PI};

use super::{call, unary_entry, ActivationFamily, Domain, Erf, Exp, Function, Param, Step, Unary, Value};
use crate::tensor::{Element, Tensor};

pub(super) const FUNCTIONS: &[&dyn Function] = &[
    unary_entry::<Sigmoid>(),
    unary_entry::<Relu>(),
    unary_entry::<LeakyRelu>(),
    unary_entry::<Elu>(),
    unary_entry::<Softplus>(),
    unary_entry::<Gelu>(),
    unary_entry::<Silu>(),
];

fn sigmoid<T: Element>(v: T) -> T {
    // Stable for large |v|: never exponentiates a large positive number. Both sides are
    // computed and one selected, so the loop vectorises.
    let e = (-v.abs()).exp_fast();
    let s = T::one() / (T::one() + e);
    if v >= T::zero() {
        s
    } else {
        e * s
    }
}

/// 1/(1 + e⁻ˣ)
pub struct Sigmoid;
impl Unary for Sigmoid {
    const NAME: &'static str = "sigmoid";
    const DOC: &'static str = "the logistic function 1/(1 + e⁻ˣ)";
    const ACTIVATION: ActivationFamily = ActivationFamily::Saturating;
    fn eval<T: Element>(x: T, _: &[f64]) -> T {
        sigmoid(x)
    }
    /// σ(x)(1 − σ(x))
    fn derivative<V: Value>(_: &V, y: &V, _: &[f64]) -> V {
        y.mul(&y.lit(1.0).sub(y))
    }
}

/// max(x, 0)
pub struct Relu;
impl Unary for Relu {
    const NAME: &'static str = "relu";
    const DOC: &'static str = "max(x, 0)";
    const DOMAIN: Domain = Domain::Kinked(&[0.0]);
    const ACTIVATION: ActivationFamily = ActivationFamily::Rectifier;
    fn eval<T: Element>(x: T, _: &[f64]) -> T {
        if x > T::zero() || x.is_nan() {
            x
        } else {
            T::zero()
        }
    }
    fn derivative<V: Value>(x: &V, _: &V, _: &[f64]) -> V {
        call::<Step, V>(x)
    }
}

/// x for x > 0, else αx
pub struct LeakyRelu;
impl Unary for LeakyRelu {
    const NAME: &'static str = "leaky_relu";
    const DOC: &'static str = "x for x > 0, else αx";
    const PARAMS: &'static [Param] = &[Param { name: "alpha", default: 0.01 }];
    const DOMAIN: Domain = Domain::Kinked(&[0.0]);
    const ACTIVATION: ActivationFamily = ActivationFamily::Rectifier;
    fn eval<T: Element>(x: T, p: &[f64]) -> T {
        if x > T::zero() || x.is_nan() {
            x
        } else {
            x * T::from_f64_lossy(p[0])
        }
    }
    /// step(x) + (1 − step(x))·α
    fn derivative<V: Value>(x: &V, _: &V, p: &[f64]) -> V {
        let s = call::<Step, V>(x);
        s.add(&x.lit(1.0).sub(&s).mul(&x.lit(p[0])))
    }
}

/// x for x > 0, else α(eˣ − 1)
pub struct Elu;
impl Unary for Elu {
    const NAME: &'static str = "elu";
    const DOC: &'static str = "x for x > 0, else α(eˣ − 1)";
    const PARAMS: &'static [Param] = &[Param { name: "alpha", default: 1.0 }];
    const DOMAIN: Domain = Domain::Kinked(&[0.0]);
    const ACTIVATION: ActivationFamily = ActivationFamily::Rectifier;
    fn eval<T: Element>(x: T, p: &[f64]) -> T {
        if x > T::zero() || x.is_nan() {
            x
        } else {
            T::from_f64_lossy(p[0]) * x.exp_m1()
        }
    }
    /// step(x) + (1 − step(x))·(y + α): written with the output, which stays finite where
    /// eˣ would overflow.
    fn derivative<V: Value>(x: &V, y: &V, p: &[f64]) -> V {
        let s = call::<Step, V>(x);
        s.add(&x.lit(1.0).sub(&s).mul(&y.add(&x.lit(p[0]))))
    }
}

/// ln(1 + eˣ)
pub struct Softplus;
impl Unary for Softplus {
    const NAME: &'static str = "softplus";
    const DOC: &'static str = "ln(1 + eˣ), a smooth ReLU";
    const ACTIVATION: ActivationFamily = ActivationFamily::Saturating;
    fn eval<T: Element>(x: T, _: &[f64]) -> T {
        // max(x, 0) + ln(1 + e^−|x|): no overflow for large x.
        x.max(T::zero()) + (-x.abs()).exp().ln_1p()
    }
    fn derivative<V: Value>(x: &V, _: &V, _: &[f64]) -> V {
        x.unary::<Sigmoid>(&[])
    }
}

/// x·Φ(x) with Φ the standard normal distribution function (the exact, erf form).
pub struct Gelu;
impl Unary for Gelu {
    const NAME: &'static str = "gelu";
    const DOC: &'static str = "x·Φ(x), the Gaussian error linear unit (erf form)";
    const ACTIVATION: ActivationFamily = ActivationFamily::Rectifier;
    fn eval<T: Element>(x: T, _: &[f64]) -> T {
        let half = T::from_f64_lossy(0.5);
        half * x * (T::one() + Erf::eval(x * T::from_f64_lossy(FRAC_1_SQRT_2), &[]))
    }
    /// Φ(x) + x·φ(x)
    fn derivative<V: Value>(x: &V, _: &V, _: &[f64]) -> V {
        let cdf = x.lit(0.5).mul(&x.lit(1.0).add(&call::<Erf, V>(&x.mul(&x.lit(FRAC_1_SQRT_2)))));
        let pdf = call::<Exp, V>(&x.mul(x).mul(&x.lit(-0.5))).mul(&x.lit(1.0 / (2.0 * PI).sqrt()));
        cdf.add(&x.mul(&pdf))
    }
}

/// x·σ(x) (also called swish)
pub struct Silu;
impl Unary for Silu {
    const NAME: &'static str = "silu";
    const DOC: &'static str = "x·σ(x), the sigmoid linear unit";
    const ACTIVATION: ActivationFamily = ActivationFamily::Rectifier;
    fn eval<T: Element>(x: T, _: &[f64]) -> T {
        x * sigmoid(x)
    }
    /// σ(x)·(1 + x(1 − σ(x)))
    fn derivative<V: Value>(x: &V, _: &V, _: &[f64]) -> V {
        let s = x.unary::<Sigmoid>(&[]);
        s.mul(&x.lit(1.0).add(&x.mul(&x.lit(1.0).sub(&s))))
    }
}

impl<T: Element> Tensor<T> {
    /// The logistic function 1/(1+e⁻ˣ), elementwise; stable for large |x|.
    #[track_caller]
    pub fn sigmoid(&self) -> Tensor<T> {
        self.apply_unary::<Sigmoid>(&[])
    }
    /// max(x, 0), elementwise; NaN stays NaN; the derivative at 0 is 0.
    #[track_caller]
    pub fn relu(&self) -> Tensor<T> {
        self.apply_unary::<Relu>(&[])
    }
    /// x where x > 0, else αx (leaky ReLU), elementwise.
    #[track_caller]
    pub fn leaky_relu(&self, alpha: f64) -> Tensor<T> {
        self.apply_unary::<LeakyRelu>(&[alpha])
    }
    /// x where x > 0, else α(eˣ − 1) (ELU), elementwise.
    #[track_caller]
    pub fn elu(&self, alpha: f64) -> Tensor<T> {
        self.apply_unary::<Elu>(&[alpha])
    }
    /// ln(1 + eˣ), elementwise, without overflow.
    #[track_caller]
    pub fn softplus(&self) -> Tensor<T> {
        self.apply_unary::<Softplus>(&[])
    }
    /// x·Φ(x) (GELU, exact erf form as PyTorch's default), elementwise.
    #[track_caller]
    pub fn gelu(&self) -> Tensor<T> {
        self.apply_unary::<Gelu>(&[])
    }
    /// x·σ(x) (SiLU, swish), elementwise.
    #[track_caller]
    pub fn silu(&self) -> Tensor<T> {
        self.apply_unary::<Silu>(&[])
    }
}
