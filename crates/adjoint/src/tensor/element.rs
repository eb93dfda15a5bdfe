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

    /// tanh, as fast as the type allows: for `f32` a branch-free rational approximation
    /// (within 8 ulp, about 5e-7 relative; vectorised by the compiler); for `f64` the
    /// correctly rounded library function (gradient checks need it).
    #[inline]
    fn tanh_fast(self) -> Self {
        self.tanh()
    }

    /// The error function, as fast as the type allows: for `f32` a branch-free rational
    /// approximation (within a few ulp; vectorised by the compiler, so GELU's loops run at
    /// full SIMD width); for `f64` the library function.
    #[inline]
    fn erf_fast(self) -> Self {
        Self::from_f64_lossy(libm::erf(self.to_f64_lossless()))
    }

    /// eˣ, as fast as the type allows: for `f32` a branch-free polynomial (within 2 ulp,
    /// subnormal results included; vectorised by the compiler), used inside kernels such as
    /// attention's softmax and by `Tensor::exp` and the sigmoid; for `f64` the library
    /// function.
    #[inline]
    fn exp_fast(self) -> Self {
        self.exp()
    }

    /// Applies a registry function to tensors of this element type.
    fn apply_function(f: &dyn Function, args: &[&Tensor<Self>], params: &[f64]) -> Tensor<Self>;
}

impl Element for f32 {
    const NAME: &'static str = "f32";
    #[inline]
    fn tanh_fast(self) -> Self {
        tanh_f32(self)
    }
    #[inline]
    fn erf_fast(self) -> Self {
        erf_f32(self)
    }
    #[inline]
    fn exp_fast(self) -> Self {
        exp_f32(self)
    }
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

/// c₀ + c₁x + … + cₙxⁿ by Horner's rule, highest coefficient first, in plain multiply-adds
/// (not `mul_add`, which is a library call without FMA enabled); a fixed-length loop the
/// compiler unrolls, so callers' loops still vectorise.
#[inline(always)]
fn horner<const N: usize>(x: f32, coefficients: &[f32; N]) -> f32 {
    coefficients[..N - 1].iter().rev().fold(coefficients[N - 1], |p, &c| p * x + c)
}

/// tanh for `f32` as an odd rational function p(x)/q(x) of degrees 13 and 6 on x clamped to
/// ±7.9053111 (where tanh rounds to ±1 in `f32`), and x itself for |x| < 4e-4. The
/// coefficients are the minimax fit Eigen and XLA use. No branches on data, so loops over it
/// vectorise. Within 8 ulp of the true value, but not monotone at that scale: near 1 a
/// larger input can give a value 1 ulp smaller (e.g. at 3.67466 and 3.67477).
#[inline]
fn tanh_f32(x: f32) -> f32 {
    const CLAMP: f32 = 7.905_311;
    const ALPHA: [f32; 7] =
        [4.893_524_6e-3, 6.372_619e-4, 1.485_722_4e-5, 5.122_297e-8, -8.604_672e-11, 2.000_188e-13, -2.760_768_5e-16];
    const BETA: [f32; 4] = [4.893_525e-3, 2.268_434_6e-3, 1.185_347_1e-4, 1.198_258_4e-6];
    let c = x.clamp(-CLAMP, CLAMP);
    let x2 = c * c;
    let r = horner(x2, &ALPHA) * c / horner(x2, &BETA);
    // NaN passes through the clamp unchanged; tiny inputs are returned as they are, and
    // beyond ±9.02 tanh rounds to ±1.
    let r = if x.abs() < 4e-4 { x } else { r };
    if x.abs() > 9.02 {
        1.0f32.copysign(x)
    } else {
        r
    }
}

/// erf for `f32` as an odd rational function x·p(x²)/q(x²) of degrees 13 and 8 on x clamped
/// to ±4 (where erf rounds to ±1 in `f32`), the minimax fit Eigen and XLA use. No branches on
/// data, so loops over it vectorise. Within 8 ulp and 5e-7 of the true value (the largest
/// errors just below 1). NaN passes through the clamp; the result is kept within
/// [−1, 1].
#[inline]
fn erf_f32(x: f32) -> f32 {
    const ALPHA: [f32; 7] = [
        -1.609_603_3e-2,
        -2.954_6e-3,
        -7.349_906_3e-4,
        -5.692_506_4e-5,
        -2.101_024e-6,
        2.770_681_4e-8,
        -2.726_142_3e-10,
    ];
    const BETA: [f32; 5] = [-1.426_473_9e-2, -7.373_329e-3, -1.682_827e-3, -2.133_740_6e-4, -1.456_607_2e-5];
    let c = x.clamp(-4.0, 4.0);
    let x2 = c * c;
    let (p, q) = (horner(x2, &ALPHA) * c, horner(x2, &BETA));
    // Beyond ±3.92 erf rounds to ±1 in f32 (the fit's own value there is 1 ulp short).
    let r = (p / q).clamp(-1.0, 1.0);
    if c.abs() >= 3.92 {
        1.0f32.copysign(c)
    } else {
        r
    }
}

/// eˣ for `f32` without branches on data: x = n·ln 2 + r with |r| ≤ ln 2 / 2, eʳ by Cephes'
/// degree-6 polynomial for `expf`, and 2ⁿ applied as two powers of two that are each normal,
/// so that subnormal results round once more at most. x is clamped to [−110, 89] first (eˣ
/// is 0 or ∞ in `f32` beyond), which keeps NaN.
#[inline]
fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 in two parts, the first exact in few bits, so that n·ln 2 is subtracted exactly.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5·2²³ rounds to the nearest integer (ties to even) in
    // plain arithmetic, which vectorises at every level (`round` is a call below SSE4.1).
    const ROUND: f32 = 12_582_912.0;
    let c = x.clamp(-110.0, 89.0);
    let n = (c * LOG2E + ROUND) - ROUND;
    let r = c - n * LN2_HI - n * LN2_LO;
    const P: [f32; 6] = [0.5, 1.666_666_5e-1, 4.166_579_6e-2, 8.333_452e-3, 1.398_199_9e-3, 1.987_569_1e-4];
    let p = horner(r, &P) * (r * r) + r + 1.0;
    let n = n as i32;
    let half = n >> 1;
    let scale = |e: i32| f32::from_bits(((e + 127) as u32) << 23);
    p * scale(half) * scale(n - half)
}

#[cfg(test)]
mod tests {
    #[test]
    fn fast_f32_exp_is_within_2_ulp_everywhere() {
        let mut worst: f64 = 0.0;
        let mut x = -106.0f32;
        while x < 89.0 {
            let exact = (x as f64).exp();
            let got = super::exp_f32(x) as f64;
            let rounded = exact as f32;
            let ulp = if rounded == 0.0 || !rounded.is_finite() {
                f32::from_bits(1) as f64
            } else {
                (f32::from_bits(rounded.abs().to_bits() + 1) - rounded.abs()) as f64
            };
            if exact < f32::MAX as f64 {
                worst = worst.max((got - exact).abs() / ulp);
            } else {
                assert_eq!(got, f64::INFINITY, "exp({x})");
            }
            x += 7.3e-4;
        }
        assert!(worst <= 2.0, "worst error {worst} ulp");
        assert!(super::exp_f32(f32::NAN).is_nan());
        assert_eq!(super::exp_f32(f32::INFINITY), f32::INFINITY);
        assert_eq!(super::exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(super::exp_f32(0.0), 1.0);
        assert_eq!(super::exp_f32(-0.0), 1.0);
    }

    #[test]
    fn fast_f32_erf_is_within_a_few_ulp_everywhere() {
        let (mut worst_ulp, mut worst_abs): (f64, f64) = (0.0, 0.0);
        let mut x = -6.0f32;
        while x < 6.0 {
            let exact = libm::erf(x as f64);
            let got = super::erf_f32(x) as f64;
            let ulp = (exact.abs() as f32).max(f32::MIN_POSITIVE);
            let ulp = (f32::from_bits(ulp.to_bits() + 1) - ulp) as f64;
            worst_ulp = worst_ulp.max((got - exact).abs() / ulp);
            worst_abs = worst_abs.max((got - exact).abs());
            x += 1.1e-4;
        }
        assert!(worst_abs <= 5e-7 && worst_ulp <= 8.0, "worst error {worst_abs} ({worst_ulp} ulp)");
        assert!(super::erf_f32(f32::NAN).is_nan());
        assert_eq!(super::erf_f32(f32::INFINITY), 1.0);
        assert_eq!(super::erf_f32(f32::NEG_INFINITY), -1.0);
        assert_eq!(super::erf_f32(-0.0).to_bits(), (-0.0f32).to_bits());
        let tiny = super::erf_f32(1e-30) / (1e-30 * std::f32::consts::FRAC_2_SQRT_PI);
        assert!((tiny - 1.0).abs() < 2.5e-7, "erf(1e-30) off by {}", tiny - 1.0);
    }

    #[test]
    fn fast_f32_tanh_is_within_a_few_ulp_everywhere() {
        let mut worst: f64 = 0.0;
        let mut x = -12.0f32;
        while x < 12.0 {
            let exact = (x as f64).tanh();
            let got = super::tanh_f32(x) as f64;
            let ulp = (exact.abs() as f32).max(f32::MIN_POSITIVE);
            let ulp = (f32::from_bits(ulp.to_bits() + 1) - ulp) as f64;
            worst = worst.max((got - exact).abs() / ulp);
            x += 1.3e-4;
        }
        assert!(worst <= 8.0, "worst error {worst} ulp");
        assert!(super::tanh_f32(f32::NAN).is_nan());
        assert_eq!(super::tanh_f32(f32::INFINITY), 1.0);
        assert_eq!(super::tanh_f32(-0.0).to_bits(), (-0.0f32).to_bits());
    }
}
