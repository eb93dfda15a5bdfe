//! N-dimensional tensors that may take part in a recorded computation graph.
//!
//! A [`Tensor`] is a primal value plus, if it is tracked, the graph node it came from:
//! - **constant** (no node): gradients never flow into it;
//! - **leaf** (a leaf node): a variable (parameter or input) whose gradients are wanted; its
//!   node is its identity, shared by its clones, and collects `.grad()`;
//! - **result** (an operation node): the output of a recorded primitive; the node holds the
//!   inputs, so the graph lives as long as the values that depend on it (see
//!   [`crate::autodiff::graph`]).
//!
//! Invariants: the value is immutable once made (rules may keep it for the reverse sweep), a
//! 0-d tensor is stored inline without a heap allocation, and `shape()` always matches the
//! stored value. Shape errors are programmer errors: they panic naming the op and the shapes.
//!
//! `Tensor<T>` is `Send` and `Sync`: values are shared through `Arc`, and a node's mutable
//! parts (its record, a leaf's gradient) sit behind a `Mutex`. A trained model can be moved
//! to another thread or shared by several threads for inference.

mod element;
pub mod pool;
pub mod shape;

use std::fmt;
use std::sync::Arc;

use ndarray::{ArcArray, ArrayD, ArrayViewD, ArrayViewMutD, IxDyn};

pub use element::Element;

use crate::autodiff::graph::{lock, Node, NodeKind};

/// The primal value of a tensor: an inline scalar or a shared n-d array.
#[derive(Clone)]
pub(crate) enum Data<T: Element> {
    Scalar(T),
    /// Boxed so a tensor stays small (an `ArcArray` carries its shape and strides inline,
    /// ~100 bytes); the inner `ArcArray` lets views such as transposes share the buffer,
    /// which goes back to the [`pool`] when the last of them is dropped.
    Array(Arc<pool::Buffer<T>>),
}

impl<T: Element> Data<T> {
    pub(crate) fn from_array(array: ArrayD<T>) -> Self {
        if array.ndim() == 0 {
            Data::Scalar(array.iter().copied().next().unwrap_or_else(T::zero))
        } else {
            Data::Array(Arc::new(pool::Buffer::new(array.into_shared())))
        }
    }

    pub(crate) fn from_shared(array: ArcArray<T, IxDyn>) -> Self {
        if array.ndim() == 0 {
            Data::Scalar(array.iter().copied().next().unwrap_or_else(T::zero))
        } else {
            Data::Array(Arc::new(pool::Buffer::new(array)))
        }
    }

    pub(crate) fn shape(&self) -> &[usize] {
        // An empty slice that points at real memory, since libc's vectorised memcmp of a
        // dangling `&[]` (address 8) takes a slow masked-load path. Real memory was not
        // always enough on Zen 4: hot paths compare shapes with `same_shape`, which never
        // calls memcmp for 0-d shapes.
        static NO_AXES: [usize; 1] = [0];
        match self {
            Data::Scalar(_) => &NO_AXES[..0],
            Data::Array(a) => a.shape(),
        }
    }

    pub(crate) fn view(&self) -> ArrayViewD<'_, T> {
        match self {
            Data::Scalar(x) => {
                ArrayViewD::from_shape(IxDyn(&[]), std::slice::from_ref(x)).expect("a 0-d view of one element")
            }
            Data::Array(a) => a.view(),
        }
    }
}

/// An n-dimensional array of `f32` or `f64` that records the operations applied to it.
///
/// ```
/// use adjoint::Tensor;
/// let x = Tensor::<f64>::scalar(2.0).requires_grad();
/// let y = Tensor::<f64>::scalar(8.0).requires_grad();
/// let f = (&x * &y + x.sin() + 4.0) * (y.sqr() * 3.0 + 6.0);
/// let grads = f.backward();
/// assert!((f.item() - 4140.0408905).abs() < 1e-6);
/// assert!((grads.wrt(&x).unwrap().item() - 1501.6029263).abs() < 1e-6);
/// assert!((y.grad().unwrap().item() - 1399.6462764).abs() < 1e-6);
/// ```
#[derive(Clone)]
pub struct Tensor<T: Element> {
    pub(crate) data: Data<T>,
    pub(crate) node: Option<Arc<Node<T>>>,
}

impl<T: Element> Tensor<T> {
    /// A constant 0-d tensor.
    pub fn scalar(value: T) -> Self {
        Tensor { data: Data::Scalar(value), node: None }
    }

    /// A constant tensor holding `array`.
    pub fn from_array(array: ArrayD<T>) -> Self {
        Tensor { data: Data::from_array(array), node: None }
    }

    /// A constant tensor from row-major `values` and a `shape`.
    ///
    /// # Panics
    /// If `values.len()` is not the product of `shape`.
    pub fn from_vec(values: Vec<T>, shape: &[usize]) -> Self {
        let n = values.len();
        let array = ArrayD::from_shape_vec(IxDyn(shape), values)
            .unwrap_or_else(|_| panic!("from_vec: {n} values do not fill shape {shape:?}"));
        Self::from_array(array)
    }

    /// A constant tensor of `shape` filled with `value`.
    pub fn full(shape: &[usize], value: T) -> Self {
        Self::from_array(ArrayD::from_elem(IxDyn(shape), value))
    }

    /// A constant tensor of zeros.
    pub fn zeros(shape: &[usize]) -> Self {
        Self::full(shape, T::zero())
    }

    /// A constant tensor of ones.
    pub fn ones(shape: &[usize]) -> Self {
        Self::full(shape, T::one())
    }

    /// Makes this value a new leaf variable: gradients with respect to it are collected by
    /// backward passes. The leaf keeps its identity in every graph it is used in (like a
    /// parameter); clones share it.
    #[track_caller]
    pub fn requires_grad(self) -> Self {
        Tensor { data: self.data, node: Some(Node::leaf()) }
    }

    /// A leaf variable holding a scalar; shorthand for `Tensor::scalar(v).requires_grad()`.
    #[track_caller]
    pub fn var(value: T) -> Self {
        Self::scalar(value).requires_grad()
    }

    /// The same value cut off from the graph: gradients do not flow through it.
    pub fn detach(&self) -> Self {
        Tensor { data: self.data.clone(), node: None }
    }

    /// Whether this tensor is a leaf variable (see [`Tensor::requires_grad`]).
    pub fn is_leaf(&self) -> bool {
        self.node.as_ref().is_some_and(|n| n.is_leaf())
    }

    /// Whether this tensor is part of a graph (a leaf or a recorded result), so that
    /// gradients can flow into it.
    pub fn is_tracked(&self) -> bool {
        self.node.is_some()
    }

    /// The creation number of this tensor's graph node (`None` for constants). Ids grow with
    /// time, so an input's id is smaller than the id of any result computed from it.
    pub fn node_id(&self) -> Option<u64> {
        self.node.as_ref().map(|n| n.id)
    }

    /// Whether a backward pass has freed the graph behind this value (it was made by a
    /// recorded operation whose record is gone). Differentiating through it is an error.
    pub fn is_graph_freed(&self) -> bool {
        self.node.as_ref().is_some_and(|n| n.is_freed())
    }

    /// The shape, outermost axis first; `[]` for a scalar.
    pub fn shape(&self) -> &[usize] {
        self.data.shape()
    }

    /// The number of axes.
    pub fn ndim(&self) -> usize {
        self.shape().len()
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.shape().iter().product()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A read-only view of the value.
    pub fn view(&self) -> ArrayViewD<'_, T> {
        self.data.view()
    }

    /// An owned copy of the value.
    pub fn to_array(&self) -> ArrayD<T> {
        self.view().to_owned()
    }

    /// The elements in row-major order.
    pub fn to_vec(&self) -> Vec<T> {
        self.view().iter().copied().collect()
    }

    /// The single element of a one-element tensor.
    ///
    /// # Panics
    /// If the tensor does not hold exactly one element.
    pub fn item(&self) -> T {
        match &self.data {
            Data::Scalar(x) => *x,
            Data::Array(a) if a.len() == 1 => a.iter().copied().next().unwrap_or_else(T::zero),
            Data::Array(a) => panic!("item: tensor of shape {:?} holds {} elements, not one", a.shape(), a.len()),
        }
    }

    /// The gradient accumulated into this leaf by [`Tensor::backward`] calls, if any.
    pub fn grad(&self) -> Option<Tensor<T>> {
        match self.node.as_deref().map(|n| &n.kind) {
            Some(NodeKind::Leaf { grad }) => lock(grad).clone(),
            _ => None,
        }
    }

    /// Replaces the accumulated gradient of this leaf (e.g. after clipping); ignored for
    /// tensors that are not leaves.
    pub fn set_grad(&self, grad: Option<Tensor<T>>) {
        if let Some(NodeKind::Leaf { grad: slot }) = self.node.as_deref().map(|n| &n.kind) {
            *lock(slot) = grad;
        }
    }

    /// Forgets the accumulated gradient of this leaf.
    pub fn zero_grad(&self) {
        self.set_grad(None);
    }

    /// Changes the value in place, keeping a leaf's identity (used by optimisers).
    ///
    /// Copies the value first only if something else (a recorded graph, a clone) still
    /// shares it, so a training loop that released its graph updates without allocating.
    pub fn update(&mut self, f: impl FnOnce(ArrayViewMutD<'_, T>)) {
        match &mut self.data {
            Data::Scalar(x) => f(ArrayViewMutD::from_shape(IxDyn(&[]), std::slice::from_mut(x)).expect("0-d view")),
            Data::Array(a) => f(Arc::make_mut(a).view_mut()),
        }
    }

    /// The same tensor with another value of the same shape, keeping leaf identity.
    ///
    /// # Panics
    /// If the shapes differ.
    pub fn set_value(&mut self, value: ArrayD<T>) {
        assert!(
            value.shape() == self.shape(),
            "set_value: new shape {:?} differs from {:?}",
            value.shape(),
            self.shape()
        );
        self.data = Data::from_array(value);
    }

    /// A constant (untracked) tensor holding `data`; for rules and kernels.
    pub(crate) fn constant_data(data: Data<T>) -> Self {
        Tensor { data, node: None }
    }
}

impl<T: Element> From<T> for Tensor<T> {
    fn from(value: T) -> Self {
        Tensor::scalar(value)
    }
}

impl<T: Element> fmt::Debug for Tensor<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.node.as_deref() {
            None => "constant",
            Some(n) if n.is_leaf() => "leaf",
            Some(_) => "node",
        };
        write!(f, "Tensor<{}>({kind}, shape {:?}, {})", T::NAME, self.shape(), self.view())
    }
}

impl<T: Element> fmt::Display for Tensor<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.view(), f)
    }
}
