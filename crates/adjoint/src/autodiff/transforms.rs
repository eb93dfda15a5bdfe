//! Function transforms, as in JAX and torch.func: [`grad`], [`value_and_grad`], [`vjp`],
//! [`jvp`], [`jacobian_rev`], [`jacobian_fwd`], [`jacobian`], [`hessian`], [`hvp`]. They take
//! Rust closures over tensors and compose: `grad(grad(f))` is the second derivative.
//!
//! How nesting works: a transform evaluates `f` on *fresh* inputs (a new leaf, or a distinct
//! identity node when the input is itself being differentiated by an outer transform), so its
//! derivatives never mix with anyone else's (no perturbation confusion). If the result may be
//! differentiated again — because an input is tracked, or `f` uses a tracked value from
//! outside, whenever that value was first used — the sweeps are recorded (`create_graph`) and
//! the results stay connected to the enclosing computation; otherwise they are plain values
//! and the transform's graph is freed with them. First-order use therefore pays nothing for
//! higher-order support.
//!
//! Transforms record whatever the calling thread's setting: inside [`no_grad`](crate::no_grad)
//! they still give derivatives (as `torch.func.grad` does), not zeros.

use ndarray::{ArrayD, IxDyn};

use crate::autodiff::forward::jvp_sweep;
use crate::autodiff::graph::{id_mark, with_recording};
use crate::autodiff::reverse::{gradients_or_zeros, multi_gradients};
use crate::autodiff::subgraph::reaches_outside;
use crate::tensor::{Element, Tensor};

/// A function's value and its gradient with respect to each input.
pub type ValueAndGrads<T> = (Tensor<T>, Vec<Tensor<T>>);

/// A function's value, gradients and auxiliary output.
pub type ValueGradsAux<T, A> = (Tensor<T>, Vec<Tensor<T>>, A);

/// A transform's fresh view of its inputs.
///
/// Each input becomes a variable of its own: a new leaf for a constant, or a distinct
/// identity node for a value an enclosing computation tracks (so derivatives taken here are
/// with respect to this use only, and still flow back to the outer value). `mark` is the
/// creation number at the start: whatever the transform's outputs reach that is older, or
/// any leaf it did not make, belongs to an enclosing computation.
struct Scope<T: Element> {
    mark: u64,
    inputs: Vec<Tensor<T>>,
    own_leaves: Vec<u64>,
}

impl<T: Element> Scope<T> {
    fn new(xs: &[Tensor<T>]) -> Self {
        let mark = id_mark();
        let inputs: Vec<Tensor<T>> =
            xs.iter().map(|x| if x.is_tracked() { x.identity() } else { x.detach().requires_grad() }).collect();
        let own_leaves = inputs.iter().filter(|t| t.is_leaf()).filter_map(Tensor::node_id).collect();
        Scope { mark, inputs, own_leaves }
    }

    /// Whether results computed from `outputs` must stay differentiable for an enclosing
    /// computation: they depend on a tracked value from outside (an input that was tracked,
    /// or a value the closure captured).
    fn nested(&self, outputs: &[&Tensor<T>]) -> bool {
        reaches_outside(outputs, self.mark, &self.own_leaves)
    }

    fn refs(&self) -> Vec<&Tensor<T>> {
        self.inputs.iter().collect()
    }
}

/// Ends a transform: results stay tracked if an enclosing computation needs them, otherwise
/// they become plain values (and the transform's graph is freed with its last user).
fn close<T: Element>(nested: bool, results: Vec<Tensor<T>>) -> Vec<Tensor<T>> {
    if nested {
        results
    } else {
        results.iter().map(Tensor::detach).collect()
    }
}

fn zeros_like<T: Element>(x: &Tensor<T>) -> Tensor<T> {
    Tensor::zeros(x.shape())
}

/// `f`'s value and its gradient with respect to every input. `f` must return a one-element
/// tensor. Works at any nesting depth.
///
/// ```
/// use adjoint::{autodiff::transforms::value_and_grad_many, Tensor};
/// let f = |x: &[Tensor<f64>]| &x[0] * &x[1].sin();
/// let (v, g) = value_and_grad_many(f)(&[Tensor::scalar(2.0), Tensor::scalar(0.0)]);
/// assert_eq!((v.item(), g[0].item(), g[1].item()), (0.0, 0.0, 2.0));
/// ```
pub fn value_and_grad_many<T: Element>(
    f: impl Fn(&[Tensor<T>]) -> Tensor<T>,
) -> impl Fn(&[Tensor<T>]) -> ValueAndGrads<T> {
    move |xs| {
        let (v, g, ()) = value_and_grad_with_aux(|x: &[Tensor<T>]| (f(x), ()))(xs);
        (v, g)
    }
}

/// Like [`value_and_grad_many`] for a function that also returns auxiliary data (metrics,
/// intermediate values) that is passed through untouched.
pub fn value_and_grad_with_aux<T: Element, A>(
    f: impl Fn(&[Tensor<T>]) -> (Tensor<T>, A),
) -> impl Fn(&[Tensor<T>]) -> ValueGradsAux<T, A> {
    move |xs| {
        with_recording(true, || {
            let scope = Scope::new(xs);
            let (y, aux) = f(&scope.inputs);
            assert!(y.len() == 1, "grad: the function must return a one-element tensor, got shape {:?}", y.shape());
            let nested = scope.nested(&[&y]);
            let grads: Vec<Tensor<T>> = if y.is_tracked() {
                gradients_or_zeros(&y, &scope.refs(), None, nested)
            } else {
                scope.inputs.iter().map(zeros_like).collect()
            };
            let mut all = vec![y];
            all.extend(grads);
            let mut out = close(nested, all);
            let y = out.remove(0);
            (y, out, aux)
        })
    }
}

/// The gradient of a scalar function of one tensor.
///
/// ```
/// use adjoint::{autodiff::transforms::grad, Tensor};
/// let d3 = grad(grad(grad(|x: &Tensor<f64>| x.sin())));
/// assert!((d3(&Tensor::scalar(0.5)).item() + 0.5f64.cos()).abs() < 1e-12); // sin''' = −cos
/// ```
pub fn grad<T: Element>(f: impl Fn(&Tensor<T>) -> Tensor<T>) -> impl Fn(&Tensor<T>) -> Tensor<T> {
    let vg = value_and_grad_many(move |x: &[Tensor<T>]| f(&x[0]));
    move |x| vg(std::slice::from_ref(x)).1.remove(0)
}

/// The gradients of a scalar function of several tensors, one per input (JAX's
/// `grad(f, argnums=(0, 1, …))`).
///
/// ```
/// use adjoint::{autodiff::transforms::grad_many, Tensor};
/// let g = grad_many(|v: &[Tensor<f64>]| &v[0] * &v[1].sin());
/// let d = g(&[Tensor::scalar(2.0), Tensor::scalar(0.0)]);
/// assert_eq!((d[0].item(), d[1].item()), (0.0, 2.0));
/// ```
pub fn grad_many<T: Element>(f: impl Fn(&[Tensor<T>]) -> Tensor<T>) -> impl Fn(&[Tensor<T>]) -> Vec<Tensor<T>> {
    let vg = value_and_grad_many(f);
    move |xs| vg(xs).1
}

/// The value and gradient of a scalar function of one tensor.
pub fn value_and_grad<T: Element>(
    f: impl Fn(&Tensor<T>) -> Tensor<T>,
) -> impl Fn(&Tensor<T>) -> (Tensor<T>, Tensor<T>) {
    let vg = value_and_grad_many(move |x: &[Tensor<T>]| f(&x[0]));
    move |x| {
        let (v, mut g) = vg(std::slice::from_ref(x));
        (v, g.remove(0))
    }
}

/// A function's outputs and its pullback: call the pullback with one cotangent per output
/// (any number of times) to get one cotangent per input, ⟨cotangents, J⟩.
///
/// The cotangents are used as given: the pullback is linear in them and never differentiates
/// through them, even when they depend on the inputs (`pullback.call(&outputs)` gives Jᵀy).
/// Inside another transform its results stay differentiable, in the inputs and in the
/// cotangents.
pub struct Pullback<T: Element> {
    scope: Scope<T>,
    outputs: Vec<Tensor<T>>,
    nested: bool,
}

impl<T: Element> Pullback<T> {
    /// The vector-Jacobian product for these output cotangents.
    ///
    /// # Panics
    /// If the number or shapes of the cotangents do not match the outputs.
    pub fn call(&self, cotangents: &[Tensor<T>]) -> Vec<Tensor<T>> {
        assert!(
            cotangents.len() == self.outputs.len(),
            "vjp: {} cotangents for {} outputs",
            cotangents.len(),
            self.outputs.len()
        );
        for (y, c) in self.outputs.iter().zip(cotangents) {
            assert!(
                c.shape() == y.shape(),
                "vjp: cotangent of shape {:?} for an output of shape {:?}",
                c.shape(),
                y.shape()
            );
        }
        with_recording(true, || self.call_recording(cotangents))
    }

    fn call_recording(&self, cotangents: &[Tensor<T>]) -> Vec<Tensor<T>> {
        let nested = self.nested || cotangents.iter().any(Tensor::is_tracked);
        // One sweep seeded with every output's cotangent: ⟨c, J⟩ = Σᵢ cᵢᵀ Jᵢ.
        let roots: Vec<(&Tensor<T>, Tensor<T>)> = self.outputs.iter().zip(cotangents.iter().cloned()).collect();
        let grads = multi_gradients(&roots, &self.scope.refs(), nested)
            .unwrap_or_else(|e| panic!("vjp: {e}"))
            .into_iter()
            .zip(&self.scope.inputs)
            .map(|(g, x)| g.unwrap_or_else(|| zeros_like(x)))
            .collect();
        close(nested, grads)
    }
}

/// Evaluates `f` and returns its outputs with a [`Pullback`] for vector-Jacobian products.
///
/// ```
/// use adjoint::{autodiff::transforms::vjp, Tensor};
/// let x = Tensor::from_vec(vec![1.0, 2.0], &[2]);
/// let (y, pullback) = vjp(|x: &[Tensor<f64>]| vec![x[0].sqr()], &[x]);
/// assert_eq!(y[0].to_vec(), vec![1.0, 4.0]);
/// let g = pullback.call(&[Tensor::from_vec(vec![1.0, 10.0], &[2])]);
/// assert_eq!(g[0].to_vec(), vec![2.0, 40.0]);
/// ```
pub fn vjp<T: Element>(f: impl Fn(&[Tensor<T>]) -> Vec<Tensor<T>>, xs: &[Tensor<T>]) -> (Vec<Tensor<T>>, Pullback<T>) {
    with_recording(true, || vjp_recording(f, xs))
}

fn vjp_recording<T: Element>(
    f: impl Fn(&[Tensor<T>]) -> Vec<Tensor<T>>,
    xs: &[Tensor<T>],
) -> (Vec<Tensor<T>>, Pullback<T>) {
    let scope = Scope::new(xs);
    let outputs = f(&scope.inputs);
    let refs: Vec<&Tensor<T>> = outputs.iter().collect();
    let nested = scope.nested(&refs);
    let values = close(nested, outputs.clone());
    (values, Pullback { scope, outputs, nested })
}

/// Evaluates `f` at `xs` and pushes the tangents `vs` (one per input) through it in one
/// forward sweep: returns (outputs, output tangents) = (f(x), J·v).
///
/// ```
/// use adjoint::{autodiff::transforms::jvp, Tensor};
/// let (y, t) = jvp(|x: &[Tensor<f64>]| vec![&x[0] * &x[1]], &[Tensor::scalar(3.0), Tensor::scalar(4.0)],
///                  &[Tensor::scalar(1.0), Tensor::scalar(0.0)]);
/// assert_eq!((y[0].item(), t[0].item()), (12.0, 4.0));
/// ```
///
/// # Panics
/// If the tangents do not match the inputs in number and shape.
pub fn jvp<T: Element>(
    f: impl Fn(&[Tensor<T>]) -> Vec<Tensor<T>>,
    xs: &[Tensor<T>],
    vs: &[Tensor<T>],
) -> (Vec<Tensor<T>>, Vec<Tensor<T>>) {
    assert!(vs.len() == xs.len(), "jvp: {} tangents for {} inputs", vs.len(), xs.len());
    with_recording(true, || jvp_recording(f, xs, vs))
}

fn jvp_recording<T: Element>(
    f: impl Fn(&[Tensor<T>]) -> Vec<Tensor<T>>,
    xs: &[Tensor<T>],
    vs: &[Tensor<T>],
) -> (Vec<Tensor<T>>, Vec<Tensor<T>>) {
    let scope = Scope::new(xs);
    let outputs = f(&scope.inputs);
    let refs: Vec<&Tensor<T>> = outputs.iter().collect();
    // Tangents that an enclosing computation tracks make the results depend on them too.
    let nested = scope.nested(&refs) || vs.iter().any(Tensor::is_tracked);
    let seeds: Vec<(&Tensor<T>, Tensor<T>)> = scope.inputs.iter().zip(vs.iter().cloned()).collect();
    let tangents = jvp_sweep(&refs, &seeds, nested);
    let n = outputs.len();
    let mut all = outputs;
    all.extend(tangents);
    let mut out = close(nested, all);
    let tangents = out.split_off(n);
    (out, tangents)
}

/// Which sweeps [`jacobian`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JacobianMode {
    /// One reverse sweep per output element.
    Reverse,
    /// One forward sweep per input element.
    Forward,
    /// Reverse if the output has fewer elements than the input, else forward.
    Auto,
}

/// The Jacobian of `f` at `x`, shaped `[output shape…, input shape…]`.
pub fn jacobian_with<T: Element>(f: impl Fn(&Tensor<T>) -> Tensor<T>, x: &Tensor<T>, mode: JacobianMode) -> Tensor<T> {
    with_recording(true, || jacobian_recording(f, x, mode))
}

fn jacobian_recording<T: Element>(f: impl Fn(&Tensor<T>) -> Tensor<T>, x: &Tensor<T>, mode: JacobianMode) -> Tensor<T> {
    let scope = Scope::new(std::slice::from_ref(x));
    let y = f(&scope.inputs[0]);
    let nested = scope.nested(&[&y]);
    let (m, n) = (y.len(), x.len());
    let mut shape = y.shape().to_vec();
    shape.extend_from_slice(x.shape());
    let mode = match mode {
        JacobianMode::Auto if m < n => JacobianMode::Reverse,
        JacobianMode::Auto => JacobianMode::Forward,
        other => other,
    };
    let input = &scope.inputs[0];
    let basis = |i: usize, shape: &[usize]| -> Tensor<T> {
        let mut a = ArrayD::zeros(IxDyn(shape));
        if let Some(v) = a.iter_mut().nth(i) {
            *v = T::one();
        }
        Tensor::from_array(a)
    };
    let j = if !y.is_tracked() || m == 0 || n == 0 {
        Tensor::zeros(&shape)
    } else if mode == JacobianMode::Reverse {
        let rows: Vec<Tensor<T>> = (0..m)
            .map(|i| gradients_or_zeros(&y, &[input], Some(basis(i, y.shape())), nested).remove(0).reshape(&[1, n]))
            .collect();
        Tensor::concat(&rows.iter().collect::<Vec<_>>(), 0).reshape(&shape)
    } else {
        let cols: Vec<Tensor<T>> = (0..n)
            .map(|i| jvp_sweep(&[&y], &[(input, basis(i, x.shape()))], nested).remove(0).reshape(&[m, 1]))
            .collect();
        Tensor::concat(&cols.iter().collect::<Vec<_>>(), 1).reshape(&shape)
    };
    close(nested, vec![j]).remove(0)
}

/// The Jacobian by reverse mode: one sweep per output element.
pub fn jacobian_rev<T: Element>(f: impl Fn(&Tensor<T>) -> Tensor<T>, x: &Tensor<T>) -> Tensor<T> {
    jacobian_with(f, x, JacobianMode::Reverse)
}

/// The Jacobian by forward mode: one sweep per input element.
pub fn jacobian_fwd<T: Element>(f: impl Fn(&Tensor<T>) -> Tensor<T>, x: &Tensor<T>) -> Tensor<T> {
    jacobian_with(f, x, JacobianMode::Forward)
}

/// The Jacobian by whichever mode needs fewer sweeps for these shapes.
pub fn jacobian<T: Element>(f: impl Fn(&Tensor<T>) -> Tensor<T>, x: &Tensor<T>) -> Tensor<T> {
    jacobian_with(f, x, JacobianMode::Auto)
}

/// The Hessian of a scalar function, `[shape…, shape…]`, by forward-over-reverse: one
/// forward sweep per input element over the recorded gradient computation.
///
/// ```
/// use adjoint::{autodiff::transforms::hessian, Tensor};
/// let h = hessian(|x: &Tensor<f64>| (&x.narrow(0, 0, 1) * &x.narrow(0, 1, 1)).sum_all(), &Tensor::from_vec(vec![1.0, 2.0], &[2]));
/// assert_eq!(h.to_vec(), vec![0.0, 1.0, 1.0, 0.0]);
/// ```
pub fn hessian<T: Element>(f: impl Fn(&Tensor<T>) -> Tensor<T>, x: &Tensor<T>) -> Tensor<T> {
    jacobian_fwd(grad(f), x)
}

/// The Hessian-vector product H·v without forming H (one reverse and one forward sweep).
pub fn hvp<T: Element>(f: impl Fn(&Tensor<T>) -> Tensor<T>, x: &Tensor<T>, v: &Tensor<T>) -> Tensor<T> {
    let g = grad(f);
    jvp(|xs: &[Tensor<T>]| vec![g(&xs[0])], std::slice::from_ref(x), std::slice::from_ref(v)).1.remove(0)
}
