//! The contract every differentiable operation fulfils.
//!
//! A primitive's user-facing method computes the forward value and records it; the output's
//! graph node keeps the primitive, its input tensors and its output. Its rules are written
//! over [`Tensor`]s, not raw arrays: during an ordinary backward pass nothing is recorded and
//! the rules cost only their arithmetic; with `create_graph` the rules themselves are
//! recorded, which is how derivatives of any order come for free.

use smallvec::SmallVec;

use crate::autodiff::graph::{record_with, Rule};
use crate::tensor::{Data, Element, Tensor};

/// One optional cotangent per input of a primitive (`None`: no gradient flows there).
///
/// Build it from an array (`[Some(a), None].into()`) or an iterator.
pub struct Cotangents<T: Element>(SmallVec<[Option<Tensor<T>>; 2]>);

impl<T: Element> Cotangents<T> {
    /// No cotangents (a primitive without inputs).
    pub fn new() -> Self {
        Cotangents(SmallVec::new())
    }

    /// Appends the cotangent of the next input.
    pub fn push(&mut self, cotangent: Option<Tensor<T>>) {
        self.0.push(cotangent);
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<T: Element> Default for Cotangents<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Element, const N: usize> From<[Option<Tensor<T>>; N]> for Cotangents<T> {
    fn from(items: [Option<Tensor<T>>; N]) -> Self {
        Cotangents(items.into_iter().collect())
    }
}

impl<T: Element> FromIterator<Option<Tensor<T>>> for Cotangents<T> {
    fn from_iter<I: IntoIterator<Item = Option<Tensor<T>>>>(iter: I) -> Self {
        Cotangents(iter.into_iter().collect())
    }
}

impl<T: Element> IntoIterator for Cotangents<T> {
    type Item = Option<Tensor<T>>;
    type IntoIter = CotangentsIter<T>;
    fn into_iter(self) -> Self::IntoIter {
        CotangentsIter(self.0.into_iter())
    }
}

/// The entries of [`Cotangents`], by value.
pub struct CotangentsIter<T: Element>(smallvec::IntoIter<[Option<Tensor<T>>; 2]>);

impl<T: Element> Iterator for CotangentsIter<T> {
    type Item = Option<Tensor<T>>;
    fn next(&mut self) -> Option<Self::Item> {
        self.0.next()
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

/// A differentiable operation: its reverse rule (VJP) and forward rule (JVP).
///
/// Implement it to add an operation the library lacks, then call [`Tensor::apply`].
/// Rules may return a cotangent in the output's (broadcast) shape for an input that was
/// broadcast: the reverse sweep reduces it to the input's shape, in one place.
/// Primitives are shared between threads with the graphs that hold them, hence `Send + Sync`.
pub trait Primitive<T: Element>: Send + Sync + 'static {
    /// A short lowercase name, used in traces and messages (`"mul"`, `"tanh"`).
    fn name(&self) -> &'static str;

    /// Vector-Jacobian product: given the cotangent of the output, the cotangent of each
    /// input (`None` where no gradient flows, e.g. into an integer index).
    fn vjp(&self, inputs: &[Tensor<T>], output: &Tensor<T>, cotangent: &Tensor<T>) -> Cotangents<T>;

    /// Jacobian-vector product: given the tangents of the inputs (`None` for inputs with a
    /// zero tangent; at least one is `Some`), the tangent of the output. May return a tangent
    /// that broadcasts to the output's shape.
    fn jvp(&self, inputs: &[Tensor<T>], output: &Tensor<T>, tangents: &[Option<Tensor<T>>]) -> Option<Tensor<T>>;

    /// The operation's constant parameters (the n of `powi`, the α of `leaky_relu`), shown
    /// by traces; empty for most primitives.
    fn parameters(&self) -> Vec<f64> {
        Vec::new()
    }
}

impl<T: Element> Tensor<T> {
    /// Applies a user-defined primitive: `value` is its forward result, computed by the
    /// caller from `inputs`; the primitive supplies the rules.
    ///
    /// ```
    /// use adjoint::{Tensor, Primitive, Cotangents};
    /// /// f(x) = x³ with hand-written rules.
    /// struct Cube;
    /// impl Primitive<f64> for Cube {
    ///     fn name(&self) -> &'static str { "cube" }
    ///     fn vjp(&self, x: &[Tensor<f64>], _: &Tensor<f64>, g: &Tensor<f64>) -> Cotangents<f64> {
    ///         [Some(g * &(x[0].sqr() * 3.0))].into()
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
    #[track_caller]
    pub fn apply<P: Primitive<T>>(primitive: P, inputs: &[&Tensor<T>], value: ndarray::ArrayD<T>) -> Tensor<T> {
        record_with(|| Rule::Shared(std::sync::Arc::new(primitive)), inputs, Data::from_array(value))
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

pub(crate) use crate::autodiff::graph::{record, record_rule};
