//! Trigonometric functions (radians): sin, cos, tan, atan.

use super::{call, unary_entry, Function, Unary, Value};
use crate::tensor::{Element, Tensor};

pub(super) const FUNCTIONS: &[&dyn Function] =
    &[unary_entry::<Sin>(), unary_entry::<Cos>(), unary_entry::<Tan>(), unary_entry::<Atan>()];

/// sin x
pub struct Sin;
impl Unary for Sin {
    const NAME: &'static str = "sin";
    const DOC: &'static str = "sine (radians)";
    fn eval<T: Element>(x: T, _: &[f64]) -> T {
        x.sin()
    }
    fn derivative<V: Value>(x: &V, _: &V, _: &[f64]) -> V {
        call::<Cos, V>(x)
    }
}

/// cos x
pub struct Cos;
impl Unary for Cos {
    const NAME: &'static str = "cos";
    const DOC: &'static str = "cosine (radians)";
    fn eval<T: Element>(x: T, _: &[f64]) -> T {
        x.cos()
    }
    fn derivative<V: Value>(x: &V, _: &V, _: &[f64]) -> V {
        call::<Sin, V>(x).neg()
    }
}

/// tan x
pub struct Tan;
impl Unary for Tan {
    const NAME: &'static str = "tan";
    const DOC: &'static str = "tangent (radians)";
    fn eval<T: Element>(x: T, _: &[f64]) -> T {
        x.tan()
    }
    /// 1 + tan²x
    fn derivative<V: Value>(_: &V, y: &V, _: &[f64]) -> V {
        y.lit(1.0).add(&y.mul(y))
    }
}

/// arctan x
pub struct Atan;
impl Unary for Atan {
    const NAME: &'static str = "atan";
    const DOC: &'static str = "arctangent (radians)";
    fn eval<T: Element>(x: T, _: &[f64]) -> T {
        x.atan()
    }
    fn derivative<V: Value>(x: &V, _: &V, _: &[f64]) -> V {
        x.lit(1.0).div(&x.lit(1.0).add(&x.mul(x)))
    }
}

impl<T: Element> Tensor<T> {
    /// Sine (radians), elementwise.
    #[track_caller]
    pub fn sin(&self) -> Tensor<T> {
        self.apply_unary::<Sin>(&[])
    }
    /// Cosine (radians), elementwise.
    #[track_caller]
    pub fn cos(&self) -> Tensor<T> {
        self.apply_unary::<Cos>(&[])
    }
    /// Tangent (radians), elementwise.
    #[track_caller]
    pub fn tan(&self) -> Tensor<T> {
        self.apply_unary::<Tan>(&[])
    }
    /// Arctangent, elementwise.
    #[track_caller]
    pub fn atan(&self) -> Tensor<T> {
        self.apply_unary::<Atan>(&[])
    }
}
