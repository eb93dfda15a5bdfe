//! Special functions: the error function erf.

use std::f64::consts::PI;

use super::{call, unary_entry, Exp, Function, Unary, Value};
use crate::tensor::{Element, Tensor};

pub(super) const FUNCTIONS: &[&dyn Function] = &[unary_entry::<Erf>()];

/// erf x = 2/√π ∫₀ˣ e^(−t²) dt
pub struct Erf;
impl Unary for Erf {
    const NAME: &'static str = "erf";
    const DOC: &'static str = "the error function";
    fn eval<T: Element>(x: T, _: &[f64]) -> T {
        // f32 values take a vectorisable rational approximation (GELU calls erf for every
        // activation), f64 values the library function.
        x.erf_fast()
    }
    /// 2/√π · e^(−x²)
    fn derivative<V: Value>(x: &V, _: &V, _: &[f64]) -> V {
        call::<Exp, V>(&x.mul(x).neg()).mul(&x.lit(2.0 / PI.sqrt()))
    }
}

impl<T: Element> Tensor<T> {
    /// The error function, elementwise. `f32`: a vectorised rational approximation within
    /// 8 ulp (5e-7); `f64`: the library function.
    #[track_caller]
    pub fn erf(&self) -> Tensor<T> {
        self.apply_unary::<Erf>(&[])
    }
}
