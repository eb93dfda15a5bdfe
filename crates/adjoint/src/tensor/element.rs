//! The element types a tensor can hold: `f32` (training) and `f64` (checking).

use std::fmt::{Debug, Display};

use crate::ops::elementwise::{Function, Unary};
use crate::tensor::Tensor;

/// A floating-point type adjoint can differentiate: implemented for `f32` and `f64`.
pub trait Element:
    num_traits::Float
    + num_traits::FromPrimitive
    + num_traits::NumAssign
    + ndarray::LinalgScalar
    + ndarray::ScalarOperand
    + std::iter::Sum
    + Debug
    + Display
    + Default
    + Send
    + Sync
    + 'static
{
    /// The type's name as it appears in messages and checkpoints (`"f32"`, `"f64"`).
    const NAME: &'static str;

    /// Converts from `f64`, rounding for `f32`.
    fn from_f64_lossy(x: f64) -> Self {
        <Self as num_traits::NumCast>::from(x).expect("finite or infinite f64 converts to any float")
    }

    /// Widens to `f64`.
    fn to_f64_lossless(self) -> f64 {
        <f64 as num_traits::NumCast>::from(self).unwrap_or(f64::NAN)
    }

    /// f′(x) of the elementwise function `F` at a number: its derivative rule evaluated on
    /// `Self` (the fused first-order kernels use this).
    #[doc(hidden)]
    fn unary_derivative<F: Unary>(x: Self, y: Self, params: &[f64]) -> Self;

    /// Applies a registry function to tensors of this element type.
    fn apply_function(f: &dyn Function, args: &[&Tensor<Self>], params: &[f64]) -> Tensor<Self>;
}

impl Element for f32 {
    const NAME: &'static str = "f32";
    #[inline]
    fn unary_derivative<F: Unary>(x: Self, y: Self, params: &[f64]) -> Self {
        F::derivative(&x, &y, params)
    }
    fn apply_function(f: &dyn Function, args: &[&Tensor<Self>], params: &[f64]) -> Tensor<Self> {
        f.apply_f32(args, params)
    }
}

impl Element for f64 {
    const NAME: &'static str = "f64";
    #[inline]
    fn unary_derivative<F: Unary>(x: Self, y: Self, params: &[f64]) -> Self {
        F::derivative(&x, &y, params)
    }
    fn apply_function(f: &dyn Function, args: &[&Tensor<Self>], params: &[f64]) -> Tensor<Self> {
        f.apply_f64(args, params)
    }
}
