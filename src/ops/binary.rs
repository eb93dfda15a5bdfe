//! Elementwise functions of two tensors beyond arithmetic: maximum, minimum (the gradient
//! goes to the input selected in the forward pass, ties to the first) and a general power.

use smallvec::smallvec;

use crate::autodiff::primitive::{add_optional, record, record_rule, Cotangents, Primitive};
use crate::ops::arith::wants;
use crate::ops::kernel::{lit, zip};
use crate::ops::unary::c;
use crate::tensor::{Element, Tensor};

/// Routes the gradient by a mask recorded in the forward pass (1 where `a` was selected).
struct Select<T: Element> {
    name: &'static str,
    mask: Tensor<T>,
}

impl<T: Element> Primitive<T> for Select<T> {
    fn name(&self) -> &'static str {
        self.name
    }
    fn vjp(&self, x: &[Tensor<T>], _: &Tensor<T>, g: &Tensor<T>) -> Cotangents<T> {
        let other = || c::<T>(1.0) - &self.mask;
        smallvec![wants(&x[0]).then(|| g * &self.mask), wants(&x[1]).then(|| g * &other())]
    }
    fn jvp(&self, _: &[Tensor<T>], _: &Tensor<T>, t: &[Option<Tensor<T>>]) -> Option<Tensor<T>> {
        let other = c::<T>(1.0) - &self.mask;
        add_optional(t[0].as_ref().map(|t| t * &self.mask), t[1].as_ref().map(|t| t * &other))
    }
}

impl<T: Element> Tensor<T> {
    /// The elementwise larger of `self` and `other` (broadcasting); on a tie, `self`.
    pub fn maximum(&self, other: &Tensor<T>) -> Tensor<T> {
        self.select_by("maximum", other, |a, b| a >= b)
    }

    /// The elementwise smaller of `self` and `other` (broadcasting); on a tie, `self`.
    pub fn minimum(&self, other: &Tensor<T>) -> Tensor<T> {
        self.select_by("minimum", other, |a, b| a <= b)
    }

    fn select_by(&self, name: &'static str, other: &Tensor<T>, first: fn(T, T) -> bool) -> Tensor<T> {
        let mask =
            Tensor::constant_data(zip(name, self, other, move |a, b| if first(a, b) { T::one() } else { T::zero() }));
        let out = zip(name, self, other, move |a, b| if first(a, b) { a } else { b });
        record_rule(Select { name, mask }, &[self, other], out)
    }

    /// `self` raised to the power `exponent`, elementwise (broadcasting). For a constant
    /// exponent prefer [`Tensor::powi`] or [`Tensor::powf`], which also allow a negative base.
    pub fn pow(&self, exponent: &Tensor<T>) -> Tensor<T> {
        record(&Pow, &[self, exponent], zip("pow", self, exponent, |a, b| a.powf(b)))
    }
}

/// aᵇ: ∂/∂a = b·aᵇ⁻¹, ∂/∂b = aᵇ·ln a.
struct Pow;
impl<T: Element> Primitive<T> for Pow {
    fn name(&self) -> &'static str {
        "pow"
    }
    fn vjp(&self, x: &[Tensor<T>], out: &Tensor<T>, g: &Tensor<T>) -> Cotangents<T> {
        let (a, b) = (&x[0], &x[1]);
        smallvec![wants(a).then(|| g * &(b * &a.pow(&(b - lit::<T>(1.0))))), wants(b).then(|| g * &(out * &a.log()))]
    }
    fn jvp(&self, x: &[Tensor<T>], out: &Tensor<T>, t: &[Option<Tensor<T>>]) -> Option<Tensor<T>> {
        let (a, b) = (&x[0], &x[1]);
        add_optional(
            t[0].as_ref().map(|t| t * &(b * &a.pow(&(b - lit::<T>(1.0))))),
            t[1].as_ref().map(|t| t * &(out * &a.log())),
        )
    }
}
