//! Elementwise arithmetic with NumPy broadcasting: add, sub, mul, div, neg, and the
//! operators `+ - * /` and unary `-` on tensors and plain numbers.
//!
//! Rules return cotangents in the broadcast output shape; the reverse sweep reduces them.

use std::ops::{Add, Div, Mul, Neg, Sub};

use smallvec::smallvec;

use crate::autodiff::primitive::{add_optional, record, Cotangents, Primitive};
use crate::ops::kernel::zip;
use crate::tensor::{Element, Tensor, Track};

/// Whether a recorded input wants a cotangent (constants do not).
pub(crate) fn wants<T: Element>(t: &Tensor<T>) -> bool {
    matches!(t.track, Track::Node(_))
}

struct AddOp;
impl<T: Element> Primitive<T> for AddOp {
    fn name(&self) -> &'static str {
        "add"
    }
    fn vjp(&self, _: &[Tensor<T>], _: &Tensor<T>, g: &Tensor<T>) -> Cotangents<T> {
        smallvec![Some(g.clone()), Some(g.clone())]
    }
    fn jvp(&self, _: &[Tensor<T>], _: &Tensor<T>, t: &[Option<Tensor<T>>]) -> Option<Tensor<T>> {
        add_optional(t[0].clone(), t[1].clone())
    }
}

struct SubOp;
impl<T: Element> Primitive<T> for SubOp {
    fn name(&self) -> &'static str {
        "sub"
    }
    fn vjp(&self, x: &[Tensor<T>], _: &Tensor<T>, g: &Tensor<T>) -> Cotangents<T> {
        smallvec![Some(g.clone()), wants(&x[1]).then(|| -g)]
    }
    fn jvp(&self, _: &[Tensor<T>], _: &Tensor<T>, t: &[Option<Tensor<T>>]) -> Option<Tensor<T>> {
        add_optional(t[0].clone(), t[1].as_ref().map(|t| -t))
    }
}

struct MulOp;
impl<T: Element> Primitive<T> for MulOp {
    fn name(&self) -> &'static str {
        "mul"
    }
    fn vjp(&self, x: &[Tensor<T>], _: &Tensor<T>, g: &Tensor<T>) -> Cotangents<T> {
        smallvec![wants(&x[0]).then(|| g * &x[1]), wants(&x[1]).then(|| g * &x[0])]
    }
    fn jvp(&self, x: &[Tensor<T>], _: &Tensor<T>, t: &[Option<Tensor<T>>]) -> Option<Tensor<T>> {
        add_optional(t[0].as_ref().map(|t| t * &x[1]), t[1].as_ref().map(|t| &x[0] * t))
    }
}

struct DivOp;
impl<T: Element> Primitive<T> for DivOp {
    fn name(&self) -> &'static str {
        "div"
    }
    fn vjp(&self, x: &[Tensor<T>], out: &Tensor<T>, g: &Tensor<T>) -> Cotangents<T> {
        // d(a/b)/da = 1/b, d(a/b)/db = -a/b² = -out/b
        smallvec![wants(&x[0]).then(|| g / &x[1]), wants(&x[1]).then(|| -(g * out) / &x[1])]
    }
    fn jvp(&self, x: &[Tensor<T>], out: &Tensor<T>, t: &[Option<Tensor<T>>]) -> Option<Tensor<T>> {
        let num = add_optional(t[0].clone(), t[1].as_ref().map(|t| -(out * t)))?;
        Some(num / &x[1])
    }
}

struct NegOp;
impl<T: Element> Primitive<T> for NegOp {
    fn name(&self) -> &'static str {
        "neg"
    }
    fn vjp(&self, _: &[Tensor<T>], _: &Tensor<T>, g: &Tensor<T>) -> Cotangents<T> {
        smallvec![Some(-g)]
    }
    fn jvp(&self, _: &[Tensor<T>], _: &Tensor<T>, t: &[Option<Tensor<T>>]) -> Option<Tensor<T>> {
        t[0].as_ref().map(|t| -t)
    }
}

impl<T: Element> Tensor<T> {
    /// `self + other`, broadcasting.
    pub fn add(&self, other: &Tensor<T>) -> Tensor<T> {
        record(&AddOp, &[self, other], zip("add", self, other, |a, b| a + b))
    }
    /// `self - other`, broadcasting.
    pub fn sub(&self, other: &Tensor<T>) -> Tensor<T> {
        record(&SubOp, &[self, other], zip("sub", self, other, |a, b| a - b))
    }
    /// `self * other` elementwise, broadcasting.
    pub fn mul(&self, other: &Tensor<T>) -> Tensor<T> {
        record(&MulOp, &[self, other], zip("mul", self, other, |a, b| a * b))
    }
    /// `self / other` elementwise, broadcasting.
    pub fn div(&self, other: &Tensor<T>) -> Tensor<T> {
        record(&DivOp, &[self, other], zip("div", self, other, |a, b| a / b))
    }
    /// `-self`.
    pub fn neg(&self) -> Tensor<T> {
        record(&NegOp, &[self], crate::ops::kernel::map(self, |a| -a))
    }
}

macro_rules! binary_operator {
    ($trait:ident, $method:ident) => {
        impl<T: Element> $trait<&Tensor<T>> for &Tensor<T> {
            type Output = Tensor<T>;
            fn $method(self, rhs: &Tensor<T>) -> Tensor<T> {
                Tensor::$method(self, rhs)
            }
        }
        impl<T: Element> $trait<Tensor<T>> for Tensor<T> {
            type Output = Tensor<T>;
            fn $method(self, rhs: Tensor<T>) -> Tensor<T> {
                Tensor::$method(&self, &rhs)
            }
        }
        impl<T: Element> $trait<&Tensor<T>> for Tensor<T> {
            type Output = Tensor<T>;
            fn $method(self, rhs: &Tensor<T>) -> Tensor<T> {
                Tensor::$method(&self, rhs)
            }
        }
        impl<T: Element> $trait<Tensor<T>> for &Tensor<T> {
            type Output = Tensor<T>;
            fn $method(self, rhs: Tensor<T>) -> Tensor<T> {
                Tensor::$method(self, &rhs)
            }
        }
        impl<T: Element> $trait<T> for Tensor<T> {
            type Output = Tensor<T>;
            fn $method(self, rhs: T) -> Tensor<T> {
                Tensor::$method(&self, &Tensor::scalar(rhs))
            }
        }
        impl<T: Element> $trait<T> for &Tensor<T> {
            type Output = Tensor<T>;
            fn $method(self, rhs: T) -> Tensor<T> {
                Tensor::$method(self, &Tensor::scalar(rhs))
            }
        }
        binary_operator!(@lhs $trait, $method, f32);
        binary_operator!(@lhs $trait, $method, f64);
    };
    (@lhs $trait:ident, $method:ident, $t:ty) => {
        impl $trait<Tensor<$t>> for $t {
            type Output = Tensor<$t>;
            fn $method(self, rhs: Tensor<$t>) -> Tensor<$t> {
                Tensor::$method(&Tensor::scalar(self), &rhs)
            }
        }
        impl $trait<&Tensor<$t>> for $t {
            type Output = Tensor<$t>;
            fn $method(self, rhs: &Tensor<$t>) -> Tensor<$t> {
                Tensor::$method(&Tensor::scalar(self), rhs)
            }
        }
    };
}

binary_operator!(Add, add);
binary_operator!(Sub, sub);
binary_operator!(Mul, mul);
binary_operator!(Div, div);

impl<T: Element> Neg for &Tensor<T> {
    type Output = Tensor<T>;
    fn neg(self) -> Tensor<T> {
        Tensor::neg(self)
    }
}

impl<T: Element> Neg for Tensor<T> {
    type Output = Tensor<T>;
    fn neg(self) -> Tensor<T> {
        Tensor::neg(&self)
    }
}
