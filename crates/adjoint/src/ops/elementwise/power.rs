//! Powers and roots: `pow` (aᵇ, both differentiable), `powi` and `powf` (constant exponent,
//! any base), `sqr`, `sqrt`, and `abs`.
//!
//! Edge values follow PyTorch (float64) and JAX: ∂(aᵇ)/∂a is 0 where b = 0 (also at
//! a = 0, where b·aᵇ⁻¹ would be 0·∞), and ∂(aᵇ)/∂b is 0 where a = 0 and b ≥ 0 (where
//! aᵇ·ln a would be 0·(−∞) or 1·(−∞)); 0⁻¹ keeps its infinite partials.

use super::{
    binary_entry, call, unary_entry, Binary, Domain, Function, Param, Sign, Step, Syntax, Unary, Value, Xlogy,
};
use crate::tensor::{Element, Tensor};

pub(super) const FUNCTIONS: &[&dyn Function] = &[
    binary_entry::<Pow>(),
    unary_entry::<Powi>(),
    unary_entry::<Powf>(),
    unary_entry::<Sqr>(),
    unary_entry::<Sqrt>(),
    unary_entry::<Abs>(),
];

/// aᵇ
pub struct Pow;
impl Binary for Pow {
    const NAME: &'static str = "pow";
    const DOC: &'static str = "a raised to the power b";
    const SYNTAX: Syntax = Syntax::Infix { symbol: '^', precedence: 4, right_assoc: true };
    const DOMAIN: Domain = Domain::Positive;
    fn eval<T: Element>(a: T, b: T) -> T {
        a.powf(b)
    }
    /// b·aᵇ⁻¹, written b·a^(b − |sign b|) so that it is b·a⁰ = 0 where b = 0 (JAX's
    /// rule; PyTorch gives 0 there too).
    fn partial_a<V: Value>(a: &V, b: &V, _: &V) -> V {
        let one_less = b.sub(&call::<Abs, V>(&call::<Sign, V>(b)));
        b.mul(&a.binary::<Pow>(&one_less))
    }
    /// aᵇ·ln a, written xlogy(aᵇ, a′) with a′ = 1 where a = 0 and b ≥ 0 (else a′ = a), so
    /// that it is 0 there, as in PyTorch; the indicators' own derivatives are 0.
    fn partial_b<V: Value>(a: &V, b: &V, y: &V) -> V {
        let a_is_zero = a.lit(1.0).sub(&call::<Abs, V>(&call::<Sign, V>(a)));
        let b_not_negative = b.lit(1.0).sub(&call::<Step, V>(&b.neg()));
        let a_safe = a.add(&a_is_zero.mul(&b_not_negative));
        y.binary::<Xlogy>(&a_safe)
    }
}

/// xⁿ for a constant integer n.
pub struct Powi;
impl Unary for Powi {
    const NAME: &'static str = "powi";
    const DOC: &'static str = "x to a constant integer power n";
    const PARAMS: &'static [Param] = &[Param { name: "n", default: 2.0 }];
    /// n must be a whole number that fits an `i32` (`powf` takes real exponents).
    fn check_params(p: &[f64]) -> Result<(), String> {
        match p.first() {
            Some(&n) if n.fract() != 0.0 || !n.is_finite() || n.abs() > i32::MAX as f64 => {
                Err(format!("powi's n must be a whole number, got {n} (use powf(x, {n}) or x^{n} for a real power)"))
            }
            _ => Ok(()),
        }
    }
    fn eval<T: Element>(x: T, p: &[f64]) -> T {
        x.powi(p[0] as i32)
    }
    fn derivative<V: Value>(x: &V, _: &V, p: &[f64]) -> V {
        let n = p[0];
        if n == 0.0 {
            x.lit(0.0)
        } else {
            x.lit(n).mul(&x.unary::<Powi>(&[n - 1.0]))
        }
    }
}

/// xᵖ for a constant real p.
pub struct Powf;
impl Unary for Powf {
    const NAME: &'static str = "powf";
    const DOC: &'static str = "x to a constant real power p";
    const PARAMS: &'static [Param] = &[Param { name: "p", default: 0.5 }];
    const DOMAIN: Domain = Domain::Positive;
    fn eval<T: Element>(x: T, p: &[f64]) -> T {
        x.powf(T::from_f64_lossy(p[0]))
    }
    fn derivative<V: Value>(x: &V, _: &V, p: &[f64]) -> V {
        if p[0] == 0.0 {
            x.lit(0.0)
        } else {
            x.lit(p[0]).mul(&x.unary::<Powf>(&[p[0] - 1.0]))
        }
    }
}

/// x²
pub struct Sqr;
impl Unary for Sqr {
    const NAME: &'static str = "sqr";
    const DOC: &'static str = "x²";
    fn eval<T: Element>(x: T, _: &[f64]) -> T {
        x * x
    }
    fn derivative<V: Value>(x: &V, _: &V, _: &[f64]) -> V {
        x.lit(2.0).mul(x)
    }
}

/// √x
pub struct Sqrt;
impl Unary for Sqrt {
    const NAME: &'static str = "sqrt";
    const DOC: &'static str = "square root";
    const DOMAIN: Domain = Domain::Positive;
    fn eval<T: Element>(x: T, _: &[f64]) -> T {
        x.sqrt()
    }
    /// 1/(2√x)
    fn derivative<V: Value>(_: &V, y: &V, _: &[f64]) -> V {
        y.lit(1.0).div(&y.lit(2.0).mul(y))
    }
}

/// |x|; its derivative at 0 is taken as 0 (sign(0)), as in PyTorch and JAX.
pub struct Abs;
impl Unary for Abs {
    const NAME: &'static str = "abs";
    const DOC: &'static str = "absolute value";
    const DOMAIN: Domain = Domain::Kinked(&[0.0]);
    fn eval<T: Element>(x: T, _: &[f64]) -> T {
        x.abs()
    }
    fn derivative<V: Value>(x: &V, _: &V, _: &[f64]) -> V {
        call::<Sign, V>(x)
    }
}

impl<T: Element> Tensor<T> {
    /// `self` raised to the power `exponent`, elementwise (broadcasting); both are
    /// differentiable. For a constant exponent prefer [`Tensor::powi`] or [`Tensor::powf`].
    #[track_caller]
    pub fn pow(&self, exponent: &Tensor<T>) -> Tensor<T> {
        self.apply_binary::<Pow>(exponent)
    }
    /// xⁿ for an integer n, elementwise.
    #[track_caller]
    pub fn powi(&self, n: i32) -> Tensor<T> {
        self.apply_unary::<Powi>(&[n as f64])
    }
    /// xᵖ for a real constant p, elementwise.
    #[track_caller]
    pub fn powf(&self, p: f64) -> Tensor<T> {
        self.apply_unary::<Powf>(&[p])
    }
    /// x², elementwise.
    #[track_caller]
    pub fn sqr(&self) -> Tensor<T> {
        self.apply_unary::<Sqr>(&[])
    }
    /// √x, elementwise.
    #[track_caller]
    pub fn sqrt(&self) -> Tensor<T> {
        self.apply_unary::<Sqrt>(&[])
    }
    /// |x|, elementwise; the derivative at 0 is taken as 0.
    #[track_caller]
    pub fn abs(&self) -> Tensor<T> {
        self.apply_unary::<Abs>(&[])
    }
}
