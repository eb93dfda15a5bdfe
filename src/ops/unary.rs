//! Elementwise functions of one tensor. Each is defined by its forward scalar function and
//! its local derivative written as a tensor expression in the input `x` and output `out`:
//! VJP = g · f'(x), JVP = t · f'(x). Because f'(x) is built from primitives, it is itself
//! differentiable, which is what makes higher derivatives work.
//!
//! ReLU's Jacobian is diagonal: its VJP is an elementwise product, never a matrix.

use smallvec::smallvec;

use crate::autodiff::primitive::{record, record_rule, Cotangents, Primitive};
use crate::ops::kernel::{indicator, lit, map};
use crate::tensor::{Element, Tensor};

/// A constant scalar tensor.
pub(crate) fn c<T: Element>(x: f64) -> Tensor<T> {
    Tensor::scalar(lit(x))
}

macro_rules! unary {
    ($(#[$doc:meta])* $prim:ident, $name:literal, $method:ident, |$v:ident| $forward:expr, |$x:ident, $out:ident| $derivative:expr) => {
        struct $prim;
        impl<T: Element> Primitive<T> for $prim {
            fn name(&self) -> &'static str {
                $name
            }
            #[allow(unused_variables)]
            fn vjp(&self, inputs: &[Tensor<T>], $out: &Tensor<T>, g: &Tensor<T>) -> Cotangents<T> {
                let $x = &inputs[0];
                smallvec![Some(g * &$derivative)]
            }
            #[allow(unused_variables)]
            fn jvp(&self, inputs: &[Tensor<T>], $out: &Tensor<T>, t: &[Option<Tensor<T>>]) -> Option<Tensor<T>> {
                let $x = &inputs[0];
                t[0].as_ref().map(|t| t * &$derivative)
            }
        }
        impl<T: Element> Tensor<T> {
            $(#[$doc])*
            pub fn $method(&self) -> Tensor<T> {
                record(&$prim, &[self], map(self, |$v: T| $forward))
            }
        }
    };
}

unary!(/// x², elementwise.
    Sqr, "sqr", sqr, |v| v * v, |x, out| x * lit::<T>(2.0));
unary!(/// √x, elementwise.
    Sqrt, "sqrt", sqrt, |v| v.sqrt(), |x, out| c::<T>(0.5) / out);
unary!(/// eˣ, elementwise.
    Exp, "exp", exp, |v| v.exp(), |x, out| out.clone());
unary!(/// Natural logarithm, elementwise.
    Log, "log", log, |v| v.ln(), |x, out| c::<T>(1.0) / x);
unary!(/// Sine (radians), elementwise.
    Sin, "sin", sin, |v| v.sin(), |x, out| x.cos());
unary!(/// Cosine (radians), elementwise.
    Cos, "cos", cos, |v| v.cos(), |x, out| -x.sin());
unary!(/// Tangent (radians), elementwise.
    Tan, "tan", tan, |v| v.tan(), |x, out| out.sqr() + lit::<T>(1.0));
unary!(/// Hyperbolic tangent, elementwise.
    Tanh, "tanh", tanh, |v| v.tanh(), |x, out| c::<T>(1.0) - out.sqr());
unary!(/// The logistic function 1/(1+e⁻ˣ), elementwise; stable for large |x|.
    Sigmoid, "sigmoid", sigmoid, |v| sigmoid_scalar(v), |x, out| out * &(c::<T>(1.0) - out));
unary!(/// max(x, 0), elementwise; the derivative at 0 is taken as 0.
    Relu, "relu", relu, |v| if v > T::zero() { v } else { T::zero() }, |x, out| indicator(x, |v| v > T::zero()));
unary!(/// |x|, elementwise; the derivative at 0 is taken as 0.
    Abs, "abs", abs, |v| v.abs(), |x, out| crate::ops::kernel::sign(x));

fn sigmoid_scalar<T: Element>(v: T) -> T {
    if v >= T::zero() {
        T::one() / (T::one() + (-v).exp())
    } else {
        let e = v.exp();
        e / (T::one() + e)
    }
}

/// An elementwise function with a constant parameter (α, n or p).
macro_rules! unary_with {
    ($(#[$doc:meta])* $prim:ident, $name:literal, $method:ident, $param:ident : $pty:ty, |$v:ident, $p:ident| $forward:expr, |$x:ident, $q:ident| $derivative:expr) => {
        struct $prim {
            $param: $pty,
        }
        impl<T: Element> Primitive<T> for $prim {
            fn name(&self) -> &'static str {
                $name
            }
            fn vjp(&self, inputs: &[Tensor<T>], _: &Tensor<T>, g: &Tensor<T>) -> Cotangents<T> {
                let ($x, $q) = (&inputs[0], self.$param);
                smallvec![Some(g * &$derivative)]
            }
            fn jvp(&self, inputs: &[Tensor<T>], _: &Tensor<T>, t: &[Option<Tensor<T>>]) -> Option<Tensor<T>> {
                let ($x, $q) = (&inputs[0], self.$param);
                t[0].as_ref().map(|t| t * &$derivative)
            }
            fn parameter(&self) -> Option<f64> {
                Some(self.$param as f64)
            }
        }
        impl<T: Element> Tensor<T> {
            $(#[$doc])*
            pub fn $method(&self, $param: $pty) -> Tensor<T> {
                let $p = $param;
                record_rule($prim { $param }, &[self], map(self, move |$v: T| $forward))
            }
        }
    };
}

unary_with!(/// x where x > 0, else αx (leaky ReLU), elementwise.
    LeakyRelu, "leaky_relu", leaky_relu, alpha: f64,
    |v, a| if v > T::zero() { v } else { v * lit::<T>(a) },
    |x, a| crate::ops::kernel::select_scalar(x, |v| v > T::zero(), T::one(), lit::<T>(a)));
unary_with!(/// xⁿ for an integer n, elementwise.
    Powi, "powi", powi, n: i32, |v, n| v.powi(n),
    |x, n| if n == 0 { c::<T>(0.0) } else { x.powi(n - 1) * lit::<T>(n as f64) });
unary_with!(/// xᵖ for a real constant p, elementwise.
    Powf, "powf", powf, p: f64, |v, p| v.powf(lit::<T>(p)),
    |x, p| x.powf(p - 1.0) * lit::<T>(p));
