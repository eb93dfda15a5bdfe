//! Exponentials and logarithms: exp, log, expm1, log1p (accurate near 0), and xlogy
//! (x·ln y, 0 where x = 0, as in SciPy and PyTorch).

use super::{binary_entry, unary_entry, Binary, Domain, Function, Unary, Value};
use crate::tensor::{Element, Tensor};

pub(super) const FUNCTIONS: &[&dyn Function] = &[
    unary_entry::<Exp>(),
    unary_entry::<Log>(),
    unary_entry::<Expm1>(),
    unary_entry::<Log1p>(),
    binary_entry::<Xlogy>(),
];

/// eˣ
pub struct Exp;
impl Unary for Exp {
    const NAME: &'static str = "exp";
    const DOC: &'static str = "eˣ";
    fn eval<T: Element>(x: T, _: &[f64]) -> T {
        // f32 values take a vectorisable polynomial within 2 ulp (as PyTorch's vectorised
        // exp is within 1): GELU's, erf's and softmax's derivatives call it per element.
        // f64 values the library function.
        x.exp_fast()
    }
    fn derivative<V: Value>(_: &V, y: &V, _: &[f64]) -> V {
        y.clone()
    }
}

/// ln x
pub struct Log;
impl Unary for Log {
    const NAME: &'static str = "log";
    const DOC: &'static str = "natural logarithm";
    const DOMAIN: Domain = Domain::Positive;
    fn eval<T: Element>(x: T, _: &[f64]) -> T {
        x.ln()
    }
    fn derivative<V: Value>(x: &V, _: &V, _: &[f64]) -> V {
        x.lit(1.0).div(x)
    }
}

/// eˣ − 1
pub struct Expm1;
impl Unary for Expm1 {
    const NAME: &'static str = "expm1";
    const DOC: &'static str = "eˣ − 1, accurate for small x";
    fn eval<T: Element>(x: T, _: &[f64]) -> T {
        x.exp_m1()
    }
    fn derivative<V: Value>(_: &V, y: &V, _: &[f64]) -> V {
        y.add(&y.lit(1.0))
    }
}

/// ln(1 + x)
pub struct Log1p;
impl Unary for Log1p {
    const NAME: &'static str = "log1p";
    const DOC: &'static str = "ln(1 + x), accurate for small x";
    const DOMAIN: Domain = Domain::Positive;
    fn eval<T: Element>(x: T, _: &[f64]) -> T {
        x.ln_1p()
    }
    fn derivative<V: Value>(x: &V, _: &V, _: &[f64]) -> V {
        x.lit(1.0).div(&x.add(&x.lit(1.0)))
    }
}

/// x·ln y, and 0 where x = 0 (whatever y).
pub struct Xlogy;
impl Binary for Xlogy {
    const NAME: &'static str = "xlogy";
    const DOC: &'static str = "x·ln y, 0 where x = 0";
    const DOMAIN: Domain = Domain::Positive;
    fn eval<T: Element>(x: T, y: T) -> T {
        if x == T::zero() && !y.is_nan() {
            T::zero()
        } else {
            x * y.ln()
        }
    }
    fn partial_a<V: Value>(_: &V, b: &V, _: &V) -> V {
        b.unary::<Log>(&[])
    }
    fn partial_b<V: Value>(a: &V, b: &V, _: &V) -> V {
        a.div(b)
    }
}

impl<T: Element> Tensor<T> {
    /// eˣ, elementwise. `f32`: a vectorised polynomial within 2 ulp; `f64`: the library
    /// function.
    #[track_caller]
    pub fn exp(&self) -> Tensor<T> {
        self.apply_unary::<Exp>(&[])
    }
    /// Natural logarithm, elementwise.
    #[track_caller]
    pub fn log(&self) -> Tensor<T> {
        self.apply_unary::<Log>(&[])
    }
    /// eˣ − 1, elementwise (accurate for small x).
    #[track_caller]
    pub fn expm1(&self) -> Tensor<T> {
        self.apply_unary::<Expm1>(&[])
    }
    /// ln(1 + x), elementwise (accurate for small x).
    #[track_caller]
    pub fn log1p(&self) -> Tensor<T> {
        self.apply_unary::<Log1p>(&[])
    }
    /// `self`·ln(`other`), elementwise with broadcasting; 0 where `self` is 0.
    #[track_caller]
    pub fn xlogy(&self, other: &Tensor<T>) -> Tensor<T> {
        self.apply_binary::<Xlogy>(other)
    }
}
