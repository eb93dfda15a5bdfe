//! Hyperbolic functions: sinh, cosh, tanh.

use super::{call, unary_entry, ActivationFamily, Function, Unary, Value};
use crate::tensor::{Element, Tensor};

pub(super) const FUNCTIONS: &[&dyn Function] = &[unary_entry::<Sinh>(), unary_entry::<Cosh>(), unary_entry::<Tanh>()];

/// sinh x
pub struct Sinh;
impl Unary for Sinh {
    const NAME: &'static str = "sinh";
    const DOC: &'static str = "hyperbolic sine";
    fn eval<T: Element>(x: T, _: &[f64]) -> T {
        x.sinh()
    }
    fn derivative<V: Value>(x: &V, _: &V, _: &[f64]) -> V {
        call::<Cosh, V>(x)
    }
}

/// cosh x
pub struct Cosh;
impl Unary for Cosh {
    const NAME: &'static str = "cosh";
    const DOC: &'static str = "hyperbolic cosine";
    fn eval<T: Element>(x: T, _: &[f64]) -> T {
        x.cosh()
    }
    fn derivative<V: Value>(x: &V, _: &V, _: &[f64]) -> V {
        call::<Sinh, V>(x)
    }
}

/// tanh x
pub struct Tanh;
impl Unary for Tanh {
    const NAME: &'static str = "tanh";
    const DOC: &'static str = "hyperbolic tangent";
    const ACTIVATION: ActivationFamily = ActivationFamily::Saturating;
    fn eval<T: Element>(x: T, _: &[f64]) -> T {
        x.tanh_fast()
    }
    /// 1 − tanh²x
    fn derivative<V: Value>(_: &V, y: &V, _: &[f64]) -> V {
        y.lit(1.0).sub(&y.mul(y))
    }
}

impl<T: Element> Tensor<T> {
    /// Hyperbolic sine, elementwise.
    #[track_caller]
    pub fn sinh(&self) -> Tensor<T> {
        self.apply_unary::<Sinh>(&[])
    }
    /// Hyperbolic cosine, elementwise.
    #[track_caller]
    pub fn cosh(&self) -> Tensor<T> {
        self.apply_unary::<Cosh>(&[])
    }
    /// Hyperbolic tangent, elementwise. `f32`: a vectorised rational approximation within
    /// 8 ulp; `f64`: the library function.
    #[track_caller]
    pub fn tanh(&self) -> Tensor<T> {
        self.apply_unary::<Tanh>(&[])
    }
}
