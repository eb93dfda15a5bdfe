//! Elementwise functions, each declared once.
//!
//! A function is a type implementing [`Unary`] or [`Binary`]: its name, its forward value on
//! numbers, and its partial derivatives written **once**, generically over a [`Value`]. That
//! one derivative is used three ways:
//!
//! - over [`Tensor`]s, as the reverse (VJP) and forward (JVP) rules; recorded when a backward
//!   pass is itself differentiated, so higher derivatives come for free;
//! - over plain numbers, as the fused first-order kernel: when nothing is being recorded, a
//!   unary function's VJP is one pass over the cotangent, input and output (`g·(1 − y²)` for
//!   tanh), not a chain of tensor operations;
//! - over symbolic [`Expr`]essions, for `adjoint compare`'s symbolic derivatives and the
//!   formulas of `adjoint trace`.
//!
//! Everything else is derived from the declaration too: the expression-language name (from
//! [`functions`]), the trace formula, the name in messages, and whether and how the function
//! serves as a network activation. Adding an elementwise function is one declaration in one
//! of the files below plus its entry in that file's `FUNCTIONS` list; the tests enumerate the
//! registry and check every entry against finite differences, forward against reverse mode,
//! the fused kernel against the composed rule, and the symbolic rule against AD.

mod activation;
mod arith;
mod compare;
mod exp_log;
mod hyperbolic;
mod power;
mod special;
mod trig;

use std::fmt;
use std::marker::PhantomData;

use ndarray::{ArrayD, IxDyn, Zip};

use crate::autodiff::graph::{is_recording, parallel, record_rule};
use crate::autodiff::primitive::{Cotangents, Primitive};
use crate::expr::Expr;
use crate::ops::kernel::{map, map3_slices, threads_for, zip, PARALLEL_MIN};
use crate::tensor::shape::same_shape;
use crate::tensor::{Data, Element, Tensor};

pub use activation::{Elu, Gelu, LeakyRelu, Relu, Sigmoid, Silu, Softplus};
pub use arith::{Add, Div, Mul, Neg, Scalar, Sub};
pub use compare::{Above, Clamp, Heaviside, Maximum, Minimum, Sign, Step};
pub use exp_log::{Exp, Expm1, Log, Log1p, Xlogy};
pub use hyperbolic::{Cosh, Sinh, Tanh};
pub use power::{Abs, Pow, Powf, Powi, Sqr, Sqrt};
pub use special::Erf;
pub use trig::{Atan, Cos, Sin, Tan};

/// What derivatives are written over: tensors, numbers and expressions.
///
/// Arithmetic and calls of other elementwise functions are all a rule may use, so the same
/// rule runs on every kind of value.
pub trait Value: Clone {
    /// The constant `c`, of the same kind as `self` (a 0-d tensor, a number, a literal).
    fn lit(&self, c: f64) -> Self;
    /// `self + other`.
    fn add(&self, other: &Self) -> Self;
    /// `self − other`.
    fn sub(&self, other: &Self) -> Self;
    /// `self · other`.
    fn mul(&self, other: &Self) -> Self;
    /// `self / other`.
    fn div(&self, other: &Self) -> Self;
    /// `−self`.
    fn neg(&self) -> Self;
    /// A unary function with its constant parameters.
    fn unary<F: Unary>(&self, params: &[f64]) -> Self;
    /// A binary function.
    fn binary<F: Binary>(&self, other: &Self) -> Self;
}

/// A constant parameter of a function (the α of leaky ReLU), with its default.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Param {
    /// Its name, as used in messages and saved configurations.
    pub name: &'static str,
    /// Its value when none is given.
    pub default: f64,
}

/// How a function is written in the expression language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    /// `name(args…)`
    Call,
    /// `a op b`, with a precedence (higher binds tighter) and associativity.
    Infix {
        /// The operator.
        symbol: char,
        /// 1 for + −, 2 for × ÷, 4 for ^.
        precedence: u8,
        /// Whether `a op b op c` is `a op (b op c)`.
        right_assoc: bool,
    },
    /// `op a`
    Prefix {
        /// The operator.
        symbol: char,
    },
}

/// Where a function may be evaluated and differentiated, for tests that sample it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Domain {
    /// Any real number (binary: any pair).
    Real,
    /// Positive numbers (for a binary function: both arguments positive).
    Positive,
    /// Any real number except near the listed points, where it is not differentiable (for a
    /// binary function: away from a = b).
    Kinked(&'static [f64]),
}

/// How a function serves as a hidden-layer activation (`--activation`), if it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActivationFamily {
    /// Not offered as an activation.
    No,
    /// Rectifier-like (zero or small for negative inputs): He initialisation, dead units
    /// worth reporting.
    Rectifier,
    /// Saturating (tanh, sigmoid, softplus): Xavier initialisation.
    Saturating,
}

/// One elementwise function of one tensor.
pub trait Unary: Send + Sync + 'static {
    /// The name: the method name, the expression-language name, the name in traces.
    const NAME: &'static str;
    /// One line of documentation, shown in listings.
    const DOC: &'static str;
    /// Constant parameters (most functions have none).
    const PARAMS: &'static [Param] = &[];
    /// Where tests may sample it.
    const DOMAIN: Domain = Domain::Real;
    /// Whether and how it serves as an activation.
    const ACTIVATION: ActivationFamily = ActivationFamily::No;
    /// Whether `params` (one value per entry of `PARAMS`) are allowed; by default every one
    /// must be finite. The expression language and activation specs refuse others.
    fn check_params(params: &[f64]) -> Result<(), String> {
        match Self::PARAMS.iter().zip(params).find(|(_, v)| !v.is_finite()) {
            Some((p, v)) => Err(format!("{}'s {} must be a finite number, got {v}", Self::NAME, p.name)),
            None => Ok(()),
        }
    }
    /// f(x), with `params` holding one value per entry of `PARAMS`.
    fn eval<T: Element>(x: T, params: &[f64]) -> T;
    /// f′(x), given x and the output y = f(x) (whichever is cheaper to use).
    fn derivative<V: Value>(x: &V, y: &V, params: &[f64]) -> V;
}

/// One elementwise function of two tensors, with NumPy broadcasting.
pub trait Binary: Send + Sync + 'static {
    /// The name.
    const NAME: &'static str;
    /// One line of documentation.
    const DOC: &'static str;
    /// How it is written.
    const SYNTAX: Syntax = Syntax::Call;
    /// Where tests may sample it.
    const DOMAIN: Domain = Domain::Real;
    /// f(a, b).
    fn eval<T: Element>(a: T, b: T) -> T;
    /// ∂f/∂a, given a, b and y = f(a, b).
    fn partial_a<V: Value>(a: &V, b: &V, y: &V) -> V;
    /// ∂f/∂b.
    fn partial_b<V: Value>(a: &V, b: &V, y: &V) -> V;
}

/// The registry's view of a function: what the expression language, traces, activations and
/// tests need, without knowing its type.
pub trait Function: Send + Sync + 'static {
    /// The name.
    fn name(&self) -> &'static str;
    /// One line of documentation.
    fn doc(&self) -> &'static str;
    /// The number of tensor arguments.
    fn arity(&self) -> usize;
    /// Constant parameters.
    fn params(&self) -> &'static [Param];
    /// Whether these values of the constant parameters are allowed (see
    /// [`Unary::check_params`]).
    fn check_params(&self, params: &[f64]) -> Result<(), String>;
    /// How it is written.
    fn syntax(&self) -> Syntax;
    /// Where tests may sample it.
    fn domain(&self) -> Domain;
    /// Whether and how it serves as an activation.
    fn activation(&self) -> ActivationFamily;
    /// The value at numbers.
    fn eval_f64(&self, args: &[f64], params: &[f64]) -> f64;
    /// The partial derivatives at numbers.
    fn partials_f64(&self, args: &[f64], params: &[f64]) -> Vec<f64>;
    /// Applies it to `f64` tensors (recorded like any primitive).
    fn apply_f64(&self, args: &[&Tensor<f64>], params: &[f64]) -> Tensor<f64>;
    /// Applies it to `f32` tensors.
    fn apply_f32(&self, args: &[&Tensor<f32>], params: &[f64]) -> Tensor<f32>;
    /// The partial derivatives as expressions in the arguments and the output `y`.
    fn partials_expr(&self, args: &[Expr], y: &Expr, params: &[f64]) -> Vec<Expr>;
}

impl fmt::Debug for dyn Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name())
    }
}

impl PartialEq for dyn Function {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}

/// The registry entry of a unary function type.
pub struct UnaryFunction<F>(PhantomData<F>);
/// The registry entry of a binary function type.
pub struct BinaryFunction<F>(PhantomData<F>);

/// The registry entry of `F`.
pub const fn unary_entry<F: Unary>() -> &'static dyn Function {
    &UnaryFunction::<F>(PhantomData)
}

/// The registry entry of `F`.
pub const fn binary_entry<F: Binary>() -> &'static dyn Function {
    &BinaryFunction::<F>(PhantomData)
}

/// Every elementwise function, in a fixed order.
pub fn functions() -> &'static [&'static dyn Function] {
    static ALL: std::sync::OnceLock<Vec<&'static dyn Function>> = std::sync::OnceLock::new();
    ALL.get_or_init(|| {
        [
            arith::FUNCTIONS,
            power::FUNCTIONS,
            exp_log::FUNCTIONS,
            trig::FUNCTIONS,
            hyperbolic::FUNCTIONS,
            activation::FUNCTIONS,
            compare::FUNCTIONS,
            special::FUNCTIONS,
        ]
        .concat()
    })
}

/// The function with this name, if any.
pub fn function(name: &str) -> Option<&'static dyn Function> {
    functions().iter().copied().find(|f| f.name() == name)
}

impl<F: Unary> Function for UnaryFunction<F> {
    fn name(&self) -> &'static str {
        F::NAME
    }
    fn doc(&self) -> &'static str {
        F::DOC
    }
    fn arity(&self) -> usize {
        1
    }
    fn params(&self) -> &'static [Param] {
        F::PARAMS
    }
    fn check_params(&self, params: &[f64]) -> Result<(), String> {
        F::check_params(params)
    }
    fn syntax(&self) -> Syntax {
        if F::NAME == "neg" {
            Syntax::Prefix { symbol: '-' }
        } else {
            Syntax::Call
        }
    }
    fn domain(&self) -> Domain {
        F::DOMAIN
    }
    fn activation(&self) -> ActivationFamily {
        F::ACTIVATION
    }
    fn eval_f64(&self, args: &[f64], params: &[f64]) -> f64 {
        F::eval(args[0], params)
    }
    fn partials_f64(&self, args: &[f64], params: &[f64]) -> Vec<f64> {
        let y = F::eval(args[0], params);
        vec![F::derivative(&args[0], &y, params)]
    }
    fn apply_f64(&self, args: &[&Tensor<f64>], params: &[f64]) -> Tensor<f64> {
        args[0].apply_unary::<F>(params)
    }
    fn apply_f32(&self, args: &[&Tensor<f32>], params: &[f64]) -> Tensor<f32> {
        args[0].apply_unary::<F>(params)
    }
    fn partials_expr(&self, args: &[Expr], y: &Expr, params: &[f64]) -> Vec<Expr> {
        vec![F::derivative(&args[0], y, params)]
    }
}

impl<F: Binary> Function for BinaryFunction<F> {
    fn name(&self) -> &'static str {
        F::NAME
    }
    fn doc(&self) -> &'static str {
        F::DOC
    }
    fn arity(&self) -> usize {
        2
    }
    fn params(&self) -> &'static [Param] {
        &[]
    }
    fn check_params(&self, _: &[f64]) -> Result<(), String> {
        Ok(())
    }
    fn syntax(&self) -> Syntax {
        F::SYNTAX
    }
    fn domain(&self) -> Domain {
        F::DOMAIN
    }
    fn activation(&self) -> ActivationFamily {
        ActivationFamily::No
    }
    fn eval_f64(&self, args: &[f64], _: &[f64]) -> f64 {
        F::eval(args[0], args[1])
    }
    fn partials_f64(&self, args: &[f64], _: &[f64]) -> Vec<f64> {
        let y = F::eval(args[0], args[1]);
        vec![F::partial_a(&args[0], &args[1], &y), F::partial_b(&args[0], &args[1], &y)]
    }
    fn apply_f64(&self, args: &[&Tensor<f64>], _: &[f64]) -> Tensor<f64> {
        args[0].apply_binary::<F>(args[1])
    }
    fn apply_f32(&self, args: &[&Tensor<f32>], _: &[f64]) -> Tensor<f32> {
        args[0].apply_binary::<F>(args[1])
    }
    fn partials_expr(&self, args: &[Expr], y: &Expr, _: &[f64]) -> Vec<Expr> {
        vec![F::partial_a(&args[0], &args[1], y), F::partial_b(&args[0], &args[1], y)]
    }
}

/// The recorded primitive of a unary function, with its parameters.
struct UnaryOp<F> {
    /// The parameters (the first `count`); inline so that a parameterless function's rule is
    /// a constant, recorded without an allocation.
    params: [f64; 2],
    count: usize,
    _f: PhantomData<F>,
}

impl<F: Unary> UnaryOp<F> {
    const PLAIN: Self = UnaryOp { params: [0.0; 2], count: 0, _f: PhantomData };
}

/// The recorded primitive of a binary function.
struct BinaryOp<F>(PhantomData<F>);

/// `g · ∂`, skipping the product where the partial is the constant 0, 1 or −1 (the partials of
/// add, sub and neg), which is most of a network's bias and residual traffic.
fn times<T: Element>(g: &Tensor<T>, partial: Tensor<T>) -> Option<Tensor<T>> {
    if !partial.is_tracked() && partial.ndim() == 0 {
        let p = partial.item();
        if p == T::one() {
            return Some(g.clone());
        }
        if p == -T::one() {
            return Some(-g);
        }
        if p == T::zero() {
            return None;
        }
    }
    Some(g * &partial)
}

impl<T: Element, F: Unary> Primitive<T> for UnaryOp<F> {
    fn name(&self) -> &'static str {
        F::NAME
    }
    fn vjp(&self, inputs: &[Tensor<T>], output: &Tensor<T>, g: &Tensor<T>) -> Cotangents<T> {
        [self.chain(&inputs[0], output, g)].into()
    }
    fn jvp(&self, inputs: &[Tensor<T>], output: &Tensor<T>, t: &[Option<Tensor<T>>]) -> Option<Tensor<T>> {
        t[0].as_ref().and_then(|t| self.chain(&inputs[0], output, t))
    }
    fn parameters(&self) -> Vec<f64> {
        self.params[..self.count].to_vec()
    }
}

impl<F: Unary> UnaryOp<F> {
    /// `v · f′(x)`: the VJP of a cotangent or the JVP of a tangent (the Jacobian is
    /// diagonal). Fused into one pass over raw buffers when nothing is being recorded;
    /// composed from tensor operations (differentiable again) when it is.
    fn chain<T: Element>(&self, x: &Tensor<T>, y: &Tensor<T>, v: &Tensor<T>) -> Option<Tensor<T>> {
        let p = &self.params[..self.count];
        if is_recording() && (x.is_tracked() || v.is_tracked()) {
            return times(v, F::derivative(x, y, p));
        }
        Some(Tensor::constant_data(fused3(v, x, y, |v, x, y| v * T::unary_derivative::<F>(x, y, p))))
    }
}

impl<T: Element, F: Binary> Primitive<T> for BinaryOp<F> {
    fn name(&self) -> &'static str {
        F::NAME
    }
    fn vjp(&self, x: &[Tensor<T>], y: &Tensor<T>, g: &Tensor<T>) -> Cotangents<T> {
        let (a, b) = (&x[0], &x[1]);
        [
            a.is_tracked().then(|| times(g, F::partial_a(a, b, y))).flatten(),
            b.is_tracked().then(|| times(g, F::partial_b(a, b, y))).flatten(),
        ]
        .into()
    }
    fn jvp(&self, x: &[Tensor<T>], y: &Tensor<T>, t: &[Option<Tensor<T>>]) -> Option<Tensor<T>> {
        let (a, b) = (&x[0], &x[1]);
        let ta = t[0].as_ref().and_then(|t| times(t, F::partial_a(a, b, y)));
        let tb = t[1].as_ref().and_then(|t| times(t, F::partial_b(a, b, y)));
        crate::autodiff::primitive::add_optional(ta, tb)
    }
}

/// `f(v, x, y)` elementwise over three tensors of one shape, in one pass.
fn fused3<T: Element>(v: &Tensor<T>, x: &Tensor<T>, y: &Tensor<T>, f: impl Fn(T, T, T) -> T + Sync + Send) -> Data<T> {
    let shape = v.shape();
    assert!(
        same_shape(x.shape(), shape) && same_shape(y.shape(), shape),
        "elementwise rule: shapes {:?}, {:?} and {:?} differ",
        v.shape(),
        x.shape(),
        y.shape()
    );
    if shape.is_empty() {
        return Data::Scalar(f(v.item(), x.item(), y.item()));
    }
    let (vv, xv, yv) = (v.view(), x.view(), y.view());
    if let (Some(a), Some(b), Some(c)) = (vv.as_slice(), xv.as_slice(), yv.as_slice()) {
        let out = map3_slices(a, b, c, &f);
        return Data::from_array(ArrayD::from_shape_vec(IxDyn(shape), out).expect("same length"));
    }
    let z = Zip::from(&vv).and(&xv).and(&yv);
    let out = if threads_for(v.len(), PARALLEL_MIN) > 1 {
        parallel(|| z.par_map_collect(|&v, &x, &y| f(v, x, y)))
    } else {
        z.map_collect(|&v, &x, &y| f(v, x, y))
    };
    Data::from_array(out)
}

impl<T: Element> Tensor<T> {
    /// Applies the unary function `F` elementwise (with its constant parameters; an empty
    /// slice takes the defaults). Every elementwise method (`tanh`, `relu`, …) is this.
    ///
    /// # Panics
    /// If more parameters are given than `F` takes.
    #[track_caller]
    pub fn apply_unary<F: Unary>(&self, params: &[f64]) -> Tensor<T> {
        assert!(
            params.len() <= F::PARAMS.len(),
            "{}: takes {} parameter(s), got {}",
            F::NAME,
            F::PARAMS.len(),
            params.len()
        );
        assert!(F::PARAMS.len() <= 2, "{}: at most two parameters are supported", F::NAME);
        if F::PARAMS.is_empty() {
            let value = map(self, |v| F::eval(v, &[]));
            return crate::autodiff::graph::record(&UnaryOp::<F>::PLAIN, &[self], value);
        }
        let mut op = UnaryOp::<F> { params: [0.0; 2], count: F::PARAMS.len(), _f: PhantomData };
        for (i, p) in F::PARAMS.iter().enumerate() {
            op.params[i] = params.get(i).copied().unwrap_or(p.default);
        }
        let value = {
            let p = &op.params[..op.count];
            map(self, |v| F::eval(v, p))
        };
        record_rule(op, &[self], value)
    }

    /// Applies the binary function `F` elementwise, broadcasting.
    ///
    /// # Panics
    /// If the shapes cannot be broadcast together.
    #[track_caller]
    pub fn apply_binary<F: Binary>(&self, other: &Tensor<T>) -> Tensor<T> {
        let value = zip(F::NAME, self, other, F::eval);
        crate::autodiff::graph::record(binary_rule::<T, F>(), &[self, other], value)
    }
}

/// The stateless rule of `F`, as a static (no allocation per recorded operation).
fn binary_rule<T: Element, F: Binary>() -> &'static dyn Primitive<T> {
    &BinaryOp::<F>(PhantomData)
}

impl<T: Element> Value for Tensor<T> {
    fn lit(&self, c: f64) -> Self {
        Tensor::scalar(T::from_f64_lossy(c))
    }
    fn add(&self, other: &Self) -> Self {
        Tensor::add(self, other)
    }
    fn sub(&self, other: &Self) -> Self {
        Tensor::sub(self, other)
    }
    fn mul(&self, other: &Self) -> Self {
        Tensor::mul(self, other)
    }
    fn div(&self, other: &Self) -> Self {
        Tensor::div(self, other)
    }
    fn neg(&self) -> Self {
        Tensor::neg(self)
    }
    fn unary<F: Unary>(&self, params: &[f64]) -> Self {
        self.apply_unary::<F>(params)
    }
    fn binary<F: Binary>(&self, other: &Self) -> Self {
        self.apply_binary::<F>(other)
    }
}

macro_rules! number_value {
    ($t:ty) => {
        impl Value for $t {
            #[inline]
            fn lit(&self, c: f64) -> Self {
                c as $t
            }
            #[inline]
            fn add(&self, other: &Self) -> Self {
                self + other
            }
            #[inline]
            fn sub(&self, other: &Self) -> Self {
                self - other
            }
            #[inline]
            fn mul(&self, other: &Self) -> Self {
                self * other
            }
            #[inline]
            fn div(&self, other: &Self) -> Self {
                self / other
            }
            #[inline]
            fn neg(&self) -> Self {
                -self
            }
            #[inline]
            fn unary<F: Unary>(&self, params: &[f64]) -> Self {
                F::eval(*self, params)
            }
            #[inline]
            fn binary<F: Binary>(&self, other: &Self) -> Self {
                F::eval(*self, *other)
            }
        }
    };
}

number_value!(f32);
number_value!(f64);

impl Value for Expr {
    fn lit(&self, c: f64) -> Self {
        Expr::Number(c)
    }
    fn add(&self, other: &Self) -> Self {
        Expr::binary::<Add>(self, other)
    }
    fn sub(&self, other: &Self) -> Self {
        Expr::binary::<Sub>(self, other)
    }
    fn mul(&self, other: &Self) -> Self {
        Expr::binary::<Mul>(self, other)
    }
    fn div(&self, other: &Self) -> Self {
        Expr::binary::<Div>(self, other)
    }
    fn neg(&self) -> Self {
        Expr::call(unary_entry::<Neg>(), vec![self.clone()], vec![])
    }
    fn unary<F: Unary>(&self, params: &[f64]) -> Self {
        let params = F::PARAMS.iter().enumerate().map(|(i, p)| params.get(i).copied().unwrap_or(p.default)).collect();
        Expr::call(unary_entry::<F>(), vec![self.clone()], params)
    }
    fn binary<F: Binary>(&self, other: &Self) -> Self {
        Expr::call(binary_entry::<F>(), vec![self.clone(), other.clone()], vec![])
    }
}

impl Expr {
    fn binary<F: Binary>(a: &Expr, b: &Expr) -> Expr {
        Expr::call(binary_entry::<F>(), vec![a.clone(), b.clone()], vec![])
    }
}

/// Helpers for writing rules: `call::<Cos, _>(x)` reads better than `x.unary::<Cos>(&[])`.
pub(crate) fn call<F: Unary, V: Value>(x: &V) -> V {
    x.unary::<F>(&[])
}
