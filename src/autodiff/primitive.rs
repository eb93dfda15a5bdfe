//! The contract every differentiable operation fulfils.
//!
//! A primitive's user-facing method computes the forward value and calls [`record`]; the
//! tape keeps the primitive, its input tensors and its output. Its rules are written over
//! [`Tensor`]s, not raw arrays: during an ordinary backward pass nothing is recorded and the
//! rules cost only their arithmetic; with `create_graph` the rules themselves are recorded,
//! which is how derivatives of any order come for free.

use smallvec::SmallVec;

use crate::autodiff::tape::{record_with, Rule};
use crate::tensor::{Data, Element, Tensor};

/// One optional cotangent per input of a primitive (`None`: no gradient flows there).
pub type Cotangents<T> = SmallVec<[Option<Tensor<T>>; 2]>;

/// A differentiable operation: its reverse rule (VJP) and forward rule (JVP).
///
/// Implement it to add an operation the library lacks, then call [`Tensor::apply`].
/// Rules may return a cotangent in the output's (broadcast) shape for an input that was
/// broadcast: the reverse sweep reduces it to the input's shape, in one place.
pub trait Primitive<T: Element>: 'static {
    /// A short lowercase name, used in traces and messages (`"mul"`, `"tanh"`).
    fn name(&self) -> &'static str;

    /// Vector-Jacobian product: given the cotangent of the output, the cotangent of each
    /// input (`None` where no gradient flows, e.g. into an integer index).
    fn vjp(&self, inputs: &[Tensor<T>], output: &Tensor<T>, cotangent: &Tensor<T>) -> Cotangents<T>;

    /// Jacobian-vector product: given the tangents of the inputs (`None` for inputs with a
    /// zero tangent; at least one is `Some`), the tangent of the output. May return a tangent
    /// that broadcasts to the output's shape.
    fn jvp(&self, inputs: &[Tensor<T>], output: &Tensor<T>, tangents: &[Option<Tensor<T>>]) -> Option<Tensor<T>>;

    /// A constant parameter of the operation (the n of `powi`, the α of `leaky_relu`), shown
    /// by traces; `None` for most primitives.
    fn parameter(&self) -> Option<f64> {
        None
    }
}

impl<T: Element> Tensor<T> {
    /// Applies a user-defined primitive: `value` is its forward result, computed by the
    /// caller from `inputs`; the primitive supplies the rules.
    ///
    /// ```
    /// use adjoint::{Tensor, Primitive, Cotangents};
    /// use smallvec::smallvec;
    /// /// f(x) = x³ with hand-written rules.
    /// struct Cube;
    /// impl Primitive<f64> for Cube {
    ///     fn name(&self) -> &'static str { "cube" }
    ///     fn vjp(&self, x: &[Tensor<f64>], _: &Tensor<f64>, g: &Tensor<f64>) -> Cotangents<f64> {
    ///         smallvec![Some(g * &(x[0].sqr() * 3.0))]
    ///     }
    ///     fn jvp(&self, x: &[Tensor<f64>], _: &Tensor<f64>, t: &[Option<Tensor<f64>>]) -> Option<Tensor<f64>> {
    ///         t[0].as_ref().map(|t| t * &(x[0].sqr() * 3.0))
    ///     }
    /// }
    /// let x = Tensor::var(2.0);
    /// let y = Tensor::apply(Cube, &[&x], x.view().mapv(|v| v * v * v));
    /// y.backward();
    /// assert_eq!(x.grad().unwrap().item(), 12.0);
    /// ```
    pub fn apply<P: Primitive<T>>(primitive: P, inputs: &[&Tensor<T>], value: ndarray::ArrayD<T>) -> Tensor<T> {
        record_with(|| Rule::shared(primitive), inputs, Data::from_array(value))
    }
}

/// Adds two optional tangents or cotangents (`None` is zero).
pub fn add_optional<T: Element>(a: Option<Tensor<T>>, b: Option<Tensor<T>>) -> Option<Tensor<T>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(&a + &b),
        (a, None) => a,
        (None, b) => b,
    }
}

pub(crate) use crate::autodiff::tape::record;

/// Records a primitive that carries state (an axis, a shape, a constant).
pub(crate) fn record_rule<T: Element>(
    primitive: impl Primitive<T>,
    inputs: &[&Tensor<T>],
    output: Data<T>,
) -> Tensor<T> {
    record_with(|| Rule::shared(primitive), inputs, output)
}
