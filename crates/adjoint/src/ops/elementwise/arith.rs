//! Arithmetic: `+ − × ÷` and negation, with NumPy broadcasting, and the operators on tensors
//! and plain numbers.

use std::ops;

use super::{binary_entry, unary_entry, Binary, Function, Syntax, Unary, Value};
use crate::tensor::{Element, Tensor};

pub(super) const FUNCTIONS: &[&dyn Function] =
    &[binary_entry::<Add>(), binary_entry::<Sub>(), binary_entry::<Mul>(), binary_entry::<Div>(), unary_entry::<Neg>()];

/// a + b
pub struct Add;
impl Binary for Add {
    const NAME: &'static str = "add";
    const DOC: &'static str = "a + b";
    const SYNTAX: Syntax = Syntax::Infix { symbol: '+', precedence: 1, right_assoc: false };
    fn eval<T: Element>(a: T, b: T) -> T {
        a + b
    }
    fn partial_a<V: Value>(a: &V, _: &V, _: &V) -> V {
        a.lit(1.0)
    }
    fn partial_b<V: Value>(a: &V, _: &V, _: &V) -> V {
        a.lit(1.0)
    }
}

/// a − b
pub struct Sub;
impl Binary for Sub {
    const NAME: &'static str = "sub";
    const DOC: &'static str = "a − b";
    const SYNTAX: Syntax = Syntax::Infix { symbol: '-', precedence: 1, right_assoc: false };
    fn eval<T: Element>(a: T, b: T) -> T {
        a - b
    }
    fn partial_a<V: Value>(a: &V, _: &V, _: &V) -> V {
        a.lit(1.0)
    }
    fn partial_b<V: Value>(a: &V, _: &V, _: &V) -> V {
        a.lit(-1.0)
    }
}

/// a · b
pub struct Mul;
impl Binary for Mul {
    const NAME: &'static str = "mul";
    const DOC: &'static str = "a · b";
    const SYNTAX: Syntax = Syntax::Infix { symbol: '*', precedence: 2, right_assoc: false };
    fn eval<T: Element>(a: T, b: T) -> T {
        a * b
    }
    fn partial_a<V: Value>(_: &V, b: &V, _: &V) -> V {
        b.clone()
    }
    fn partial_b<V: Value>(a: &V, _: &V, _: &V) -> V {
        a.clone()
    }
}

/// a / b
pub struct Div;
impl Binary for Div {
    const NAME: &'static str = "div";
    const DOC: &'static str = "a / b";
    const SYNTAX: Syntax = Syntax::Infix { symbol: '/', precedence: 2, right_assoc: false };
    fn eval<T: Element>(a: T, b: T) -> T {
        a / b
    }
    fn partial_a<V: Value>(a: &V, b: &V, _: &V) -> V {
        a.lit(1.0).div(b)
    }
    /// −a/b² (written with a and b rather than the output, as the lectures do).
    fn partial_b<V: Value>(a: &V, b: &V, _: &V) -> V {
        a.neg().div(&b.mul(b))
    }
}

/// −x
pub struct Neg;
impl Unary for Neg {
    const NAME: &'static str = "neg";
    const DOC: &'static str = "−x";
    fn eval<T: Element>(x: T, _: &[f64]) -> T {
        -x
    }
    fn derivative<V: Value>(x: &V, _: &V, _: &[f64]) -> V {
        x.lit(-1.0)
    }
}

impl<T: Element> Tensor<T> {
    /// `self + other`, broadcasting.
    #[track_caller]
    pub fn add(&self, other: &Tensor<T>) -> Tensor<T> {
        self.apply_binary::<Add>(other)
    }
    /// `self - other`, broadcasting.
    #[track_caller]
    pub fn sub(&self, other: &Tensor<T>) -> Tensor<T> {
        self.apply_binary::<Sub>(other)
    }
    /// `self * other` elementwise, broadcasting.
    #[track_caller]
    pub fn mul(&self, other: &Tensor<T>) -> Tensor<T> {
        self.apply_binary::<Mul>(other)
    }
    /// `self / other` elementwise, broadcasting.
    #[track_caller]
    pub fn div(&self, other: &Tensor<T>) -> Tensor<T> {
        self.apply_binary::<Div>(other)
    }
    /// `-self`.
    #[track_caller]
    pub fn neg(&self) -> Tensor<T> {
        self.apply_unary::<Neg>(&[])
    }
}

macro_rules! binary_operator {
    ($trait:ident, $method:ident) => {
        impl<T: Element> ops::$trait<&Tensor<T>> for &Tensor<T> {
            type Output = Tensor<T>;
            #[track_caller]
            fn $method(self, rhs: &Tensor<T>) -> Tensor<T> {
                Tensor::$method(self, rhs)
            }
        }
        impl<T: Element> ops::$trait<Tensor<T>> for Tensor<T> {
            type Output = Tensor<T>;
            #[track_caller]
            fn $method(self, rhs: Tensor<T>) -> Tensor<T> {
                Tensor::$method(&self, &rhs)
            }
        }
        impl<T: Element> ops::$trait<&Tensor<T>> for Tensor<T> {
            type Output = Tensor<T>;
            #[track_caller]
            fn $method(self, rhs: &Tensor<T>) -> Tensor<T> {
                Tensor::$method(&self, rhs)
            }
        }
        impl<T: Element> ops::$trait<Tensor<T>> for &Tensor<T> {
            type Output = Tensor<T>;
            #[track_caller]
            fn $method(self, rhs: Tensor<T>) -> Tensor<T> {
                Tensor::$method(self, &rhs)
            }
        }
        impl<T: Element> ops::$trait<T> for Tensor<T> {
            type Output = Tensor<T>;
            #[track_caller]
            fn $method(self, rhs: T) -> Tensor<T> {
                Tensor::$method(&self, &Tensor::scalar(rhs))
            }
        }
        impl<T: Element> ops::$trait<T> for &Tensor<T> {
            type Output = Tensor<T>;
            #[track_caller]
            fn $method(self, rhs: T) -> Tensor<T> {
                Tensor::$method(self, &Tensor::scalar(rhs))
            }
        }
        binary_operator!(@lhs $trait, $method, f32);
        binary_operator!(@lhs $trait, $method, f64);
    };
    (@lhs $trait:ident, $method:ident, $t:ty) => {
        impl ops::$trait<Tensor<$t>> for $t {
            type Output = Tensor<$t>;
            #[track_caller]
            fn $method(self, rhs: Tensor<$t>) -> Tensor<$t> {
                Tensor::$method(&Tensor::scalar(self), &rhs)
            }
        }
        impl ops::$trait<&Tensor<$t>> for $t {
            type Output = Tensor<$t>;
            #[track_caller]
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

/// A number on the left of a tensor operator in generic code. Concrete `f32` and `f64` are
/// written as they are (`1.0 - &t`), but Rust's coherence rules forbid `impl Sub<&Tensor<T>>
/// for T` over a type parameter, so code generic over [`Element`] writes `Scalar::of(1.0) -
/// &t` (the `f64` converted to `T`) or `Scalar(x) - &t` for an `x: T`.
///
/// ```
/// use adjoint::{Element, Scalar, Tensor};
/// /// σ(x)·(1 − σ(x)), for any element type.
/// fn sigmoid_slope<T: Element>(x: &Tensor<T>) -> Tensor<T> {
///     let s = x.sigmoid();
///     &s * (Scalar::of(1.0) - &s)
/// }
/// assert_eq!(sigmoid_slope(&Tensor::<f32>::scalar(0.0)).item(), 0.25);
/// assert_eq!(sigmoid_slope(&Tensor::<f64>::scalar(0.0)).item(), 0.25);
/// assert_eq!((Scalar::of(2.0) / &Tensor::<f64>::scalar(4.0)).item(), 0.5);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scalar<T: Element>(pub T);

impl<T: Element> Scalar<T> {
    /// `value` in the element type (rounded to `f32` for `f32`).
    pub fn of(value: f64) -> Self {
        Scalar(T::from_f64_lossy(value))
    }
}

macro_rules! scalar_on_the_left {
    ($trait:ident, $method:ident) => {
        impl<T: Element> ops::$trait<&Tensor<T>> for Scalar<T> {
            type Output = Tensor<T>;
            #[track_caller]
            fn $method(self, rhs: &Tensor<T>) -> Tensor<T> {
                Tensor::$method(&Tensor::scalar(self.0), rhs)
            }
        }
        impl<T: Element> ops::$trait<Tensor<T>> for Scalar<T> {
            type Output = Tensor<T>;
            #[track_caller]
            fn $method(self, rhs: Tensor<T>) -> Tensor<T> {
                Tensor::$method(&Tensor::scalar(self.0), &rhs)
            }
        }
    };
}

scalar_on_the_left!(Add, add);
scalar_on_the_left!(Sub, sub);
scalar_on_the_left!(Mul, mul);
scalar_on_the_left!(Div, div);

impl<T: Element> ops::Neg for &Tensor<T> {
    type Output = Tensor<T>;
    #[track_caller]
    fn neg(self) -> Tensor<T> {
        Tensor::neg(self)
    }
}

impl<T: Element> ops::Neg for Tensor<T> {
    type Output = Tensor<T>;
    #[track_caller]
    fn neg(self) -> Tensor<T> {
        Tensor::neg(&self)
    }
}
