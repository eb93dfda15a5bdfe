//! Comparisons: maximum and minimum (NaN propagates; at a tie the gradient is split evenly
//! between the two inputs, as PyTorch and JAX do; where an input is NaN both inputs get the
//! whole cotangent, as in PyTorch), clamp (no gradient at or beyond its bounds, as
//! PyTorch's `clamp` with number bounds), and the step functions their derivatives are
//! written with (whose own derivative is taken as 0).

use super::{binary_entry, call, unary_entry, Binary, Domain, Function, Param, Unary, Value};
use crate::tensor::{Element, Tensor};

pub(super) const FUNCTIONS: &[&dyn Function] = &[
    binary_entry::<Maximum>(),
    binary_entry::<Minimum>(),
    unary_entry::<Clamp>(),
    unary_entry::<Step>(),
    unary_entry::<Heaviside>(),
    binary_entry::<Above>(),
    unary_entry::<Sign>(),
];

/// The larger of a and b.
pub struct Maximum;
impl Binary for Maximum {
    const NAME: &'static str = "max";
    const DOC: &'static str = "the larger of a and b (NaN if either is NaN)";
    const DOMAIN: Domain = Domain::Kinked(&[0.0]);
    fn eval<T: Element>(a: T, b: T) -> T {
        if a.is_nan() || b.is_nan() {
            T::nan()
        } else if a >= b {
            a
        } else {
            b
        }
    }
    /// 1 − above(b, a): 1 where a wins, ½ at a tie (infinite ones too), 0 where b wins, and
    /// 1 where either is NaN (PyTorch's rule).
    fn partial_a<V: Value>(a: &V, b: &V, _: &V) -> V {
        a.lit(1.0).sub(&b.binary::<Above>(a))
    }
    fn partial_b<V: Value>(a: &V, b: &V, _: &V) -> V {
        a.lit(1.0).sub(&a.binary::<Above>(b))
    }
}

/// The smaller of a and b.
pub struct Minimum;
impl Binary for Minimum {
    const NAME: &'static str = "min";
    const DOC: &'static str = "the smaller of a and b (NaN if either is NaN)";
    const DOMAIN: Domain = Domain::Kinked(&[0.0]);
    fn eval<T: Element>(a: T, b: T) -> T {
        if a.is_nan() || b.is_nan() {
            T::nan()
        } else if a <= b {
            a
        } else {
            b
        }
    }
    /// 1 − above(a, b): as for [`Maximum`], the other way round.
    fn partial_a<V: Value>(a: &V, b: &V, _: &V) -> V {
        a.lit(1.0).sub(&a.binary::<Above>(b))
    }
    fn partial_b<V: Value>(a: &V, b: &V, _: &V) -> V {
        a.lit(1.0).sub(&b.binary::<Above>(a))
    }
}

/// x limited to [lo, hi]
pub struct Clamp;
impl Unary for Clamp {
    const NAME: &'static str = "clamp";
    const DOC: &'static str = "x limited to [lo, hi]";
    const PARAMS: &'static [Param] = &[Param { name: "lo", default: -1.0 }, Param { name: "hi", default: 1.0 }];
    const DOMAIN: Domain = Domain::Kinked(&[-1.0, 1.0]);
    /// lo ≤ hi, both numbers (infinite bounds are allowed: one-sided clamps).
    fn check_params(p: &[f64]) -> Result<(), String> {
        match p {
            [lo, ..] | [.., lo] if lo.is_nan() => Err("clamp's bounds must be numbers, got NaN".into()),
            [lo, hi] if lo > hi => Err(format!("clamp's lower bound {lo} is above its upper bound {hi}")),
            _ => Ok(()),
        }
    }
    fn eval<T: Element>(x: T, p: &[f64]) -> T {
        let (lo, hi) = (T::from_f64_lossy(p[0]), T::from_f64_lossy(p[1]));
        if x < lo {
            lo
        } else if x > hi {
            hi
        } else {
            x
        }
    }
    /// 1 strictly inside (lo, hi), 0 at the bounds and beyond (as PyTorch's `clamp` with
    /// number bounds; NaN gets 0).
    fn derivative<V: Value>(x: &V, _: &V, p: &[f64]) -> V {
        let above_lo = call::<Step, V>(&x.sub(&x.lit(p[0])));
        let below_hi = call::<Step, V>(&x.lit(p[1]).sub(x));
        above_lo.mul(&below_hi)
    }
}

/// 1 for x > 0, else 0 (the derivative of relu).
pub struct Step;
impl Unary for Step {
    const NAME: &'static str = "step";
    const DOC: &'static str = "1 for x > 0, else 0";
    const DOMAIN: Domain = Domain::Kinked(&[0.0]);
    fn eval<T: Element>(x: T, _: &[f64]) -> T {
        if x > T::zero() {
            T::one()
        } else {
            T::zero()
        }
    }
    fn derivative<V: Value>(x: &V, _: &V, _: &[f64]) -> V {
        x.lit(0.0)
    }
}

/// 0 for x < 0, ½ at 0, 1 for x > 0 (NaN stays NaN, as NumPy's `heaviside`).
pub struct Heaviside;
impl Unary for Heaviside {
    const NAME: &'static str = "heaviside";
    const DOC: &'static str = "0 for x < 0, ½ at 0, 1 for x > 0";
    const DOMAIN: Domain = Domain::Kinked(&[0.0]);
    fn eval<T: Element>(x: T, _: &[f64]) -> T {
        if x > T::zero() {
            T::one()
        } else if x < T::zero() {
            T::zero()
        } else if x == T::zero() {
            T::from_f64_lossy(0.5)
        } else {
            x
        }
    }
    fn derivative<V: Value>(x: &V, _: &V, _: &[f64]) -> V {
        x.lit(0.0)
    }
}

/// 1 for a > b, ½ for a = b, 0 for a < b or where either is NaN: how max and min share their
/// gradient. Compared, not subtracted, so that equal infinities tie.
pub struct Above;
impl Binary for Above {
    const NAME: &'static str = "above";
    const DOC: &'static str = "1 for a > b, ½ for a = b, 0 for a < b or NaN";
    const DOMAIN: Domain = Domain::Kinked(&[0.0]);
    fn eval<T: Element>(a: T, b: T) -> T {
        if a > b {
            T::one()
        } else if a == b {
            T::from_f64_lossy(0.5)
        } else {
            T::zero()
        }
    }
    fn partial_a<V: Value>(a: &V, _: &V, _: &V) -> V {
        a.lit(0.0)
    }
    fn partial_b<V: Value>(a: &V, _: &V, _: &V) -> V {
        a.lit(0.0)
    }
}

/// −1, 0 or 1 by the sign of x (the derivative of abs).
pub struct Sign;
impl Unary for Sign {
    const NAME: &'static str = "sign";
    const DOC: &'static str = "−1, 0 or 1 by the sign of x";
    const DOMAIN: Domain = Domain::Kinked(&[0.0]);
    fn eval<T: Element>(x: T, _: &[f64]) -> T {
        if x > T::zero() {
            T::one()
        } else if x < T::zero() {
            -T::one()
        } else {
            x
        }
    }
    fn derivative<V: Value>(x: &V, _: &V, _: &[f64]) -> V {
        x.lit(0.0)
    }
}

impl<T: Element> Tensor<T> {
    /// The elementwise larger of `self` and `other` (broadcasting). NaN propagates; at a tie
    /// each input gets half the gradient; where either is NaN, both get the whole gradient
    /// (as in PyTorch).
    #[track_caller]
    pub fn maximum(&self, other: &Tensor<T>) -> Tensor<T> {
        self.apply_binary::<Maximum>(other)
    }
    /// The elementwise smaller of `self` and `other` (broadcasting). NaN propagates; at a tie
    /// each input gets half the gradient; where either is NaN, both get the whole gradient
    /// (as in PyTorch).
    #[track_caller]
    pub fn minimum(&self, other: &Tensor<T>) -> Tensor<T> {
        self.apply_binary::<Minimum>(other)
    }
    /// Each element limited to [`lo`, `hi`]; the gradient flows where lo < x < hi (not at
    /// the bounds, as PyTorch's `clamp` with number bounds).
    ///
    /// # Panics
    /// If `lo > hi`.
    #[track_caller]
    pub fn clamp(&self, lo: f64, hi: f64) -> Tensor<T> {
        assert!(lo <= hi, "clamp: lower bound {lo} is above upper bound {hi}");
        self.apply_unary::<Clamp>(&[lo, hi])
    }
    /// −1, 0 or 1 by the sign of each element (no gradient flows through it).
    #[track_caller]
    pub fn sign(&self) -> Tensor<T> {
        self.apply_unary::<Sign>(&[])
    }
}
