//! The element types a tensor can hold: `f32` (training) and `f64` (checking).
//!
//! Each element type owns one thread-local tape, so an `f32` graph and an `f64` graph on
//! the same thread never see each other.

use std::cell::RefCell;
use std::fmt::{Debug, Display};

use crate::autodiff::tape::Tape;

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

    /// Runs `f` with this thread's tape for this element type.
    fn with_tape<R>(f: impl FnOnce(&RefCell<Tape<Self>>) -> R) -> R;

    /// Converts from `f64`, rounding for `f32`.
    fn from_f64_lossy(x: f64) -> Self {
        <Self as num_traits::NumCast>::from(x).expect("finite or infinite f64 converts to any float")
    }

    /// Widens to `f64`.
    fn to_f64_lossless(self) -> f64 {
        <f64 as num_traits::NumCast>::from(self).unwrap_or(f64::NAN)
    }
}

thread_local! {
    static TAPE_F32: RefCell<Tape<f32>> = RefCell::new(Tape::new());
    static TAPE_F64: RefCell<Tape<f64>> = RefCell::new(Tape::new());
}

impl Element for f32 {
    const NAME: &'static str = "f32";
    fn with_tape<R>(f: impl FnOnce(&RefCell<Tape<Self>>) -> R) -> R {
        TAPE_F32.with(f)
    }
}

impl Element for f64 {
    const NAME: &'static str = "f64";
    fn with_tape<R>(f: impl FnOnce(&RefCell<Tape<Self>>) -> R) -> R {
        TAPE_F64.with(f)
    }
}
