//! Scalar code on its own tape: a few nanoseconds per operation.
//!
//! Programs made of many scalar operations (a simulation step, an ODE solver, a loss written
//! element by element) pay for the tensor engine's generality: a graph node, a rule object
//! and reference counts per operation. A [`Tape`] records such programs flat — per operation
//! one 24-byte record in one array: the indices of its inputs and its local partial
//! derivatives (values live in the handles, since no sweep reads them) — and [`Scalar`]s
//! are small `Copy` handles that borrow it, so there is no global state and no allocation
//! per operation beyond the array's growth. One record per operation, not one array per
//! field: recording is one capacity check and one store, which is most of its cost.
//!
//! The local partials are computed when an operation runs, from the same declarations as the
//! tensor engine's (`ops::elementwise`), so the reverse sweep is one multiply-add per edge
//! walking the records backwards, and forward mode one walk forwards. First order only: for
//! higher derivatives use [`Tensor`](crate::Tensor) and the transforms.
//!
//! ```
//! use adjoint::scalar::Tape;
//! let tape = Tape::new();
//! let (x, y) = (tape.var(2.0), tape.var(8.0));
//! let f = (x * y + x.sin() + 4.0) * (y * y * 3.0 + 6.0);
//! let g = tape.gradient(f);
//! assert!((g[x] - 1501.6029263636658).abs() < 1e-9);
//! assert!((g[y] - 1399.6462764876328).abs() < 1e-9);
//! ```

use std::cell::RefCell;
use std::ops;

use crate::ops::elementwise::{self as ew, Unary};

/// No input.
const NONE: u32 = u32::MAX;

/// One operation: its inputs (`NONE` if absent) and ∂value/∂input for each.
#[derive(Clone, Copy)]
struct Record {
    a: u32,
    b: u32,
    da: f64,
    db: f64,
}

/// A recording of scalar operations; see the module docs.
#[derive(Default)]
pub struct Tape {
    records: RefCell<Vec<Record>>,
}

/// A value on a [`Tape`]: an index into it and its value (the tape keeps none).
#[derive(Clone, Copy)]
pub struct Scalar<'t> {
    tape: &'t Tape,
    index: u32,
    value: f64,
}

impl std::fmt::Debug for Scalar<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Scalar(s{} = {})", self.index + 1, self.value)
    }
}

impl Tape {
    /// An empty tape.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty tape with room for `operations` without reallocating.
    pub fn with_capacity(operations: usize) -> Self {
        Tape { records: RefCell::new(Vec::with_capacity(operations)) }
    }

    /// A new input variable.
    pub fn var(&self, value: f64) -> Scalar<'_> {
        self.push(NONE, 0.0, NONE, 0.0, value)
    }

    /// The number of recorded values (inputs and operations).
    pub fn len(&self) -> usize {
        self.records.borrow().len()
    }

    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets everything recorded, keeping the array's capacity (values made before become
    /// invalid: the borrow checker keeps them from being used, since this takes `&mut self`).
    pub fn clear(&mut self) {
        self.records.get_mut().clear();
    }

    #[inline]
    fn push(&self, a: u32, da: f64, b: u32, db: f64, value: f64) -> Scalar<'_> {
        let mut records = self.records.borrow_mut();
        let index = u32::try_from(records.len()).expect("scalar tape: more than 2³² operations");
        records.push(Record { a, b, da, db });
        Scalar { tape: self, index, value }
    }

    /// Reverse mode: ∂`output`/∂sᵢ for every recorded value sᵢ, in one backward sweep
    /// (index the result with a [`Scalar`]).
    ///
    /// # Panics
    /// If `output` belongs to another tape.
    pub fn gradient(&self, output: Scalar<'_>) -> Adjoints {
        assert!(std::ptr::eq(output.tape, self), "gradient: the output belongs to another tape");
        let records = self.records.borrow();
        let n = output.index as usize + 1;
        let mut adjoint = vec![0.0; n];
        adjoint[n - 1] = 1.0;
        for (i, r) in records[..n].iter().enumerate().rev() {
            let g = adjoint[i];
            if g == 0.0 {
                continue;
            }
            if r.a != NONE {
                adjoint[r.a as usize] += g * r.da;
            }
            if r.b != NONE {
                adjoint[r.b as usize] += g * r.db;
            }
        }
        Adjoints { values: adjoint }
    }

    /// Forward mode: the tangent of every value up to `output` given the tangents of some
    /// inputs (`seeds`), in one forward sweep; returns d`output`.
    ///
    /// # Panics
    /// If a seed or the output belongs to another tape.
    pub fn tangent(&self, output: Scalar<'_>, seeds: &[(Scalar<'_>, f64)]) -> f64 {
        assert!(std::ptr::eq(output.tape, self), "tangent: the output belongs to another tape");
        let records = self.records.borrow();
        let n = output.index as usize + 1;
        let mut tangent = vec![0.0; n];
        for (s, t) in seeds {
            assert!(std::ptr::eq(s.tape, self), "tangent: a seed belongs to another tape");
            if (s.index as usize) < n {
                tangent[s.index as usize] += t;
            }
        }
        for (i, r) in records[..n].iter().enumerate() {
            let mut t = tangent[i];
            if r.a != NONE {
                t += r.da * tangent[r.a as usize];
            }
            if r.b != NONE {
                t += r.db * tangent[r.b as usize];
            }
            tangent[i] = t;
        }
        tangent[n - 1]
    }
}

/// The adjoints of one reverse sweep, indexed by [`Scalar`].
pub struct Adjoints {
    values: Vec<f64>,
}

impl ops::Index<Scalar<'_>> for Adjoints {
    type Output = f64;
    /// ∂output/∂`s` (0 for values recorded after the output).
    fn index(&self, s: Scalar<'_>) -> &f64 {
        self.values.get(s.index as usize).unwrap_or(&0.0)
    }
}

impl<'t> Scalar<'t> {
    /// The value.
    pub fn value(self) -> f64 {
        self.value
    }

    /// The tape it is on.
    pub fn tape(self) -> &'t Tape {
        self.tape
    }

    /// The unary function `F` of the tensor engine, with its declared derivative.
    #[inline]
    pub fn apply<F: Unary>(self, params: &[f64]) -> Scalar<'t> {
        // The given parameters, the declared defaults for the rest.
        let mut full = [0.0; 2];
        for (i, spec) in F::PARAMS.iter().enumerate().take(2) {
            full[i] = params.get(i).copied().unwrap_or(spec.default);
        }
        let p = &full[..F::PARAMS.len().min(2)];
        let y = F::eval(self.value, p);
        let d = F::derivative(&self.value, &y, p);
        self.tape.push(self.index, d, NONE, 0.0, y)
    }

    fn check(self, other: Scalar<'t>) {
        debug_assert!(std::ptr::eq(self.tape, other.tape), "scalar operation on values of two tapes");
    }
}

macro_rules! unary_methods {
    ($($(#[$doc:meta])* $name:ident => $f:ty),* $(,)?) => {
        impl<'t> Scalar<'t> {
            $(
                $(#[$doc])*
                #[inline]
                pub fn $name(self) -> Scalar<'t> {
                    self.apply::<$f>(&[])
                }
            )*
        }
    };
}

unary_methods! {
    /// sin x
    sin => ew::Sin,
    /// cos x
    cos => ew::Cos,
    /// tan x
    tan => ew::Tan,
    /// atan x
    atan => ew::Atan,
    /// eˣ
    exp => ew::Exp,
    /// ln x
    ln => ew::Log,
    /// √x
    sqrt => ew::Sqrt,
    /// x²
    sqr => ew::Sqr,
    /// |x|
    abs => ew::Abs,
    /// tanh x
    tanh => ew::Tanh,
    /// sinh x
    sinh => ew::Sinh,
    /// cosh x
    cosh => ew::Cosh,
    /// 1/(1 + e⁻ˣ)
    sigmoid => ew::Sigmoid,
    /// max(x, 0)
    relu => ew::Relu,
    /// ln(1 + eˣ)
    softplus => ew::Softplus,
}

impl<'t> Scalar<'t> {
    /// xⁿ
    #[inline]
    pub fn powi(self, n: i32) -> Scalar<'t> {
        self.apply::<ew::Powi>(&[n as f64])
    }

    /// The larger of the two (at a tie, half the gradient to each).
    #[inline]
    pub fn max(self, other: Scalar<'t>) -> Scalar<'t> {
        self.binary::<ew::Maximum>(other)
    }

    /// The smaller of the two (at a tie, half the gradient to each).
    #[inline]
    pub fn min(self, other: Scalar<'t>) -> Scalar<'t> {
        self.binary::<ew::Minimum>(other)
    }

    /// selfᵒᵗʰᵉʳ
    #[inline]
    pub fn pow(self, other: Scalar<'t>) -> Scalar<'t> {
        self.binary::<ew::Pow>(other)
    }

    #[inline]
    fn binary<F: ew::Binary>(self, other: Scalar<'t>) -> Scalar<'t> {
        self.check(other);
        let (a, b) = (self.value, other.value);
        let y = F::eval(a, b);
        self.tape.push(self.index, F::partial_a(&a, &b, &y), other.index, F::partial_b(&a, &b, &y), y)
    }
}

impl<'t> ops::Add for Scalar<'t> {
    type Output = Scalar<'t>;
    #[inline]
    fn add(self, o: Scalar<'t>) -> Scalar<'t> {
        self.check(o);
        self.tape.push(self.index, 1.0, o.index, 1.0, self.value + o.value)
    }
}

impl<'t> ops::Sub for Scalar<'t> {
    type Output = Scalar<'t>;
    #[inline]
    fn sub(self, o: Scalar<'t>) -> Scalar<'t> {
        self.check(o);
        self.tape.push(self.index, 1.0, o.index, -1.0, self.value - o.value)
    }
}

impl<'t> ops::Mul for Scalar<'t> {
    type Output = Scalar<'t>;
    #[inline]
    fn mul(self, o: Scalar<'t>) -> Scalar<'t> {
        self.check(o);
        self.tape.push(self.index, o.value, o.index, self.value, self.value * o.value)
    }
}

impl<'t> ops::Div for Scalar<'t> {
    type Output = Scalar<'t>;
    #[inline]
    fn div(self, o: Scalar<'t>) -> Scalar<'t> {
        self.check(o);
        let y = self.value / o.value;
        self.tape.push(self.index, 1.0 / o.value, o.index, -y / o.value, y)
    }
}

impl<'t> ops::Neg for Scalar<'t> {
    type Output = Scalar<'t>;
    #[inline]
    fn neg(self) -> Scalar<'t> {
        self.tape.push(self.index, -1.0, NONE, 0.0, -self.value)
    }
}

macro_rules! with_number {
    ($trait:ident, $method:ident, |$s:ident, $c:ident| $value:expr, $d_scalar:expr; |$c2:ident, $s2:ident| $value2:expr, $d_scalar2:expr) => {
        impl<'t> ops::$trait<f64> for Scalar<'t> {
            type Output = Scalar<'t>;
            #[inline]
            fn $method(self, $c: f64) -> Scalar<'t> {
                let $s = self.value;
                self.tape.push(self.index, $d_scalar, NONE, 0.0, $value)
            }
        }
        impl<'t> ops::$trait<Scalar<'t>> for f64 {
            type Output = Scalar<'t>;
            #[inline]
            fn $method(self, o: Scalar<'t>) -> Scalar<'t> {
                let ($c2, $s2) = (self, o.value);
                o.tape.push(o.index, $d_scalar2, NONE, 0.0, $value2)
            }
        }
    };
}

// scalar ∘ c, then c ∘ scalar: the value and the derivative in the scalar.
with_number!(Add, add, |s, c| s + c, 1.0; |c, s| c + s, 1.0);
with_number!(Sub, sub, |s, c| s - c, 1.0; |c, s| c - s, -1.0);
with_number!(Mul, mul, |s, c| s * c, c; |c, s| c * s, c);
with_number!(Div, div, |s, c| s / c, 1.0 / c; |c, s| c / s, -c / (s * s));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_on_either_side() {
        let tape = Tape::new();
        let x = tape.var(3.0);
        let f = 2.0 / x + (x - 1.0) * 4.0 - (10.0 - x) + x / 2.0;
        let g = tape.gradient(f);
        // d/dx: −2/x² + 4 + 1 + 1/2
        assert!((g[x] - (-2.0 / 9.0 + 5.5)).abs() < 1e-15);
        assert!((f.value() - (2.0 / 3.0 + 8.0 - 7.0 + 1.5)).abs() < 1e-15);
        assert!((tape.tangent(f, &[(x, 1.0)]) - g[x]).abs() < 1e-15);
    }
}
