//! Function transforms over Python callables, spelled as in JAX: `grad`, `value_and_grad`,
//! `jvp`, `vjp`, `jacobian` (`jacrev`, `jacfwd`), `hessian`, `hvp`, and `check_grads`.
//!
//! Each transform calls the library's transform with a Rust closure that calls the Python
//! function on `adjoint.Tensor`s. Nesting works as in Rust: the inner transform sees the
//! outer one's tracked inputs and records its sweeps, so `grad(grad(f))` is the second
//! derivative with every cross term. An exception raised by the Python function is kept
//! (see [`Pending`]) and raised once the library's call returns.

use adjoint::autodiff::gradcheck::{check_grads as library_check_grads, CheckOptions};
use adjoint::autodiff::transforms::{self, JacobianMode, Pullback};
use adjoint::Tensor;
use pyo3::exceptions::{PyAssertionError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

use crate::errors::{guard, Pending, Transforming};
use crate::tensor::PyTensor;
use crate::value::{to_tensor, Dtype, Float};

/// Which inputs a transform differentiates: one position, or several (a tuple of results).
#[derive(Clone)]
enum Argnums {
    One(usize),
    Many(Vec<usize>),
}

impl Argnums {
    fn parse(obj: &Bound<'_, PyAny>) -> PyResult<Argnums> {
        if let Ok(i) = obj.extract::<usize>() {
            return Ok(Argnums::One(i));
        }
        let many = obj
            .extract::<Vec<usize>>()
            .map_err(|_| PyTypeError::new_err("argnums must be a non-negative int or a tuple of them"))?;
        if let Some((_, p)) = many.iter().enumerate().find(|(i, p)| many[..*i].contains(p)) {
            return Err(PyValueError::new_err(format!("argnums names argument {p} twice")));
        }
        if many.is_empty() {
            return Err(PyValueError::new_err("argnums is empty: name at least one argument"));
        }
        Ok(Argnums::Many(many))
    }

    fn positions(&self) -> Vec<usize> {
        match self {
            Argnums::One(i) => vec![*i],
            Argnums::Many(v) => v.clone(),
        }
    }
}

/// The element type of the differentiated arguments: the first tensor's, else float64.
fn dtype_of(args: &[Bound<'_, PyAny>]) -> Dtype {
    args.iter()
        .find_map(|a| a.cast::<PyTensor>().ok().map(|t| t.borrow().value.dtype()))
        .or_else(|| {
            args.iter().find_map(|a| {
                let np_dtype = a.getattr("dtype").ok()?.getattr("name").ok()?.extract::<String>().ok()?;
                (np_dtype == "float32").then_some(Dtype::F32)
            })
        })
        .unwrap_or(Dtype::F64)
}

fn wrap<T: Float>(py: Python<'_>, t: Tensor<T>) -> PyResult<Py<PyAny>> {
    Ok(Py::new(py, PyTensor::new(T::wrap(t)))?.into_any())
}

/// Calls the Python function with the differentiated positions replaced by tensors.
fn call_with<'py, T: Float>(
    f: &Bound<'py, PyAny>,
    args: &[Bound<'py, PyAny>],
    positions: &[usize],
    xs: &[Tensor<T>],
    kwargs: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = f.py();
    let mut call: Vec<Py<PyAny>> = args.iter().map(|a| a.clone().unbind()).collect();
    for (&p, x) in positions.iter().zip(xs) {
        call[p] = wrap(py, x.clone())?;
    }
    f.call(PyTuple::new(py, call)?, kwargs)
}

/// The result of a function that must give one tensor (numbers are accepted).
fn as_output<T: Float>(obj: &Bound<'_, PyAny>) -> PyResult<Tensor<T>> {
    to_tensor::<T>(obj).map_err(|e| {
        PyTypeError::new_err(format!(
            "the function must return a tensor or a number, not {} ({e})",
            obj.get_type().name().map(|n| n.to_string()).unwrap_or_default()
        ))
    })
}

/// The outputs of a function that may give one tensor or a tuple/list of them, and whether
/// it was a single one.
fn as_outputs<T: Float>(obj: &Bound<'_, PyAny>) -> PyResult<(Vec<Tensor<T>>, bool)> {
    if obj.cast::<PyTuple>().is_ok() || obj.cast::<PyList>().is_ok() {
        let items: Vec<Bound<'_, PyAny>> = obj.try_iter()?.collect::<PyResult<_>>()?;
        Ok((items.iter().map(as_output::<T>).collect::<PyResult<_>>()?, false))
    } else {
        Ok((vec![as_output::<T>(obj)?], true))
    }
}

fn tuple_of<T: Float>(py: Python<'_>, ts: Vec<Tensor<T>>) -> PyResult<Py<PyAny>> {
    let items = ts.into_iter().map(|t| wrap(py, t)).collect::<PyResult<Vec<_>>>()?;
    Ok(PyTuple::new(py, items)?.into_any().unbind())
}

fn shaped<T: Float>(py: Python<'_>, mut ts: Vec<Tensor<T>>, single: bool) -> PyResult<Py<PyAny>> {
    if single {
        wrap(py, ts.remove(0))
    } else {
        tuple_of(py, ts)
    }
}

/// The results of an outermost transform whose inputs were constants, cut from the graphs
/// the inner transforms kept (nothing outside can differentiate them further).
fn settle_results<T: Float>(results: Vec<Tensor<T>>, inputs_tracked: bool) -> Vec<Tensor<T>> {
    if Transforming::outermost() && !inputs_tracked {
        results.iter().map(Tensor::detach).collect()
    } else {
        results
    }
}

/// `f` called with every argument replaced by the transform's inputs, as a list of outputs
/// (`single` says whether `f` returned one tensor); a failure is kept in `pending` and a
/// stand-in returned, so that the library's transform can finish.
fn outputs_of<T: Float>(
    f: &Bound<'_, PyAny>,
    primals: &[Bound<'_, PyAny>],
    inner: &[Tensor<T>],
    pending: &Pending,
    single: &std::cell::Cell<bool>,
) -> Vec<Tensor<T>> {
    if pending.failed() {
        return vec![stand_in()];
    }
    let positions: Vec<usize> = (0..inner.len()).collect();
    match call_with(f, primals, &positions, inner, None).and_then(|o| as_outputs::<T>(&o)) {
        Ok((outs, one)) => {
            single.set(one);
            outs
        }
        Err(e) => {
            pending.keep(e);
            vec![stand_in()]
        }
    }
}

/// A stand-in result after the Python function failed (the failure is raised instead).
fn stand_in<T: Float>() -> Tensor<T> {
    Tensor::scalar(T::zero())
}

/// What a [`Transformed`] function computes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Grad,
    ValueAndGrad,
    Jacobian(JacobianMode),
    Hessian,
}

/// A function made by a transform (`grad(f)`, `jacobian(f)`, ...): call it like `f`.
#[pyclass(frozen, module = "adjoint")]
pub struct Transformed {
    f: Py<PyAny>,
    argnums: Argnums,
    has_aux: bool,
    kind: Kind,
}

impl Transformed {
    fn run<T: Float>(
        &self,
        py: Python<'_>,
        args: &[Bound<'_, PyAny>],
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let positions = self.argnums.positions();
        for &p in &positions {
            if p >= args.len() {
                return Err(PyValueError::new_err(format!(
                    "argnums names argument {p}, but the function was called with {} positional arguments",
                    args.len()
                )));
            }
        }
        let xs: Vec<Tensor<T>> = positions.iter().map(|&p| to_tensor::<T>(&args[p])).collect::<PyResult<_>>()?;
        let f = self.f.bind(py);
        let _transforming = Transforming::enter();
        let pending = Pending::default();
        let single = matches!(self.argnums, Argnums::One(_));
        let has_aux = self.has_aux;
        // f with the differentiated arguments replaced, giving one tensor (and the aux).
        let call = |inner: &[Tensor<T>], at: &[usize]| -> (Tensor<T>, Option<Py<PyAny>>) {
            if pending.failed() {
                return (stand_in(), None);
            }
            let out = call_with(f, args, at, inner, kwargs).and_then(|out| {
                if has_aux {
                    let (y, aux): (Bound<'_, PyAny>, Bound<'_, PyAny>) = out.extract().map_err(|_| {
                        PyTypeError::new_err("with has_aux=True the function must return a pair (output, aux)")
                    })?;
                    Ok((as_output::<T>(&y)?, Some(aux.unbind())))
                } else {
                    Ok((as_output::<T>(&out)?, None))
                }
            });
            out.unwrap_or_else(|e| {
                pending.keep(e);
                (stand_in(), None)
            })
        };
        match self.kind {
            Kind::Grad | Kind::ValueAndGrad => {
                let result =
                    guard(|| transforms::value_and_grad_with_aux(|inner: &[Tensor<T>]| call(inner, &positions))(&xs));
                let (value, grads, aux) = pending.settle(result)?;
                let tracked = xs.iter().any(Tensor::is_tracked);
                let value = settle_results(vec![value], tracked).remove(0);
                let grads = shaped(py, settle_results(grads, tracked), single)?;
                let aux = aux.unwrap_or_else(|| py.None());
                let out = match (self.kind, has_aux) {
                    (Kind::Grad, false) => grads,
                    (Kind::Grad, true) => PyTuple::new(py, [grads, aux])?.into_any().unbind(),
                    (_, false) => PyTuple::new(py, [wrap(py, value)?, grads])?.into_any().unbind(),
                    (_, true) => {
                        let value_aux = PyTuple::new(py, [wrap(py, value)?, aux])?.into_any().unbind();
                        PyTuple::new(py, [value_aux, grads])?.into_any().unbind()
                    }
                };
                Ok(out)
            }
            Kind::Jacobian(mode) => {
                let mut jacobians = Vec::new();
                for (k, &p) in positions.iter().enumerate() {
                    let result = guard(|| {
                        transforms::jacobian_with(|x: &Tensor<T>| call(std::slice::from_ref(x), &[p]).0, &xs[k], mode)
                    });
                    jacobians.push(pending.check(result)?);
                }
                shaped(py, settle_results(jacobians, xs.iter().any(Tensor::is_tracked)), single)
            }
            Kind::Hessian => {
                let [p] = positions[..] else {
                    return Err(PyValueError::new_err("hessian takes one argnum"));
                };
                let result =
                    guard(|| transforms::hessian(|x: &Tensor<T>| call(std::slice::from_ref(x), &[p]).0, &xs[0]));
                let h = pending.settle(result)?;
                wrap(py, settle_results(vec![h], xs[0].is_tracked()).remove(0))
            }
        }
    }
}

#[pymethods]
impl Transformed {
    #[pyo3(signature = (*args, **kwargs))]
    fn __call__(
        &self,
        py: Python<'_>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let args: Vec<Bound<'_, PyAny>> = args.iter().collect();
        let chosen: Vec<Bound<'_, PyAny>> =
            self.argnums.positions().iter().filter_map(|&p| args.get(p).cloned()).collect();
        match dtype_of(&chosen) {
            Dtype::F32 => self.run::<f32>(py, &args, kwargs),
            Dtype::F64 => self.run::<f64>(py, &args, kwargs),
        }
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let name = self
            .f
            .bind(py)
            .getattr("__name__")
            .and_then(|n| n.extract::<String>())
            .unwrap_or_else(|_| "function".into());
        let kind = match self.kind {
            Kind::Grad => "grad",
            Kind::ValueAndGrad => "value_and_grad",
            Kind::Jacobian(JacobianMode::Reverse) => "jacrev",
            Kind::Jacobian(JacobianMode::Forward) => "jacfwd",
            Kind::Jacobian(JacobianMode::Auto) => "jacobian",
            Kind::Hessian => "hessian",
        };
        format!("<adjoint.{kind}({name})>")
    }
}

/// A transformed `f`; `argnums` defaults to the first argument.
fn make(f: &Bound<'_, PyAny>, argnums: Option<&Bound<'_, PyAny>>, has_aux: bool, kind: Kind) -> PyResult<Transformed> {
    if !f.is_callable() {
        return Err(PyTypeError::new_err("the first argument must be a function"));
    }
    let argnums = argnums.filter(|a| !a.is_none()).map(Argnums::parse).transpose()?.unwrap_or(Argnums::One(0));
    Ok(Transformed { f: f.clone().unbind(), argnums, has_aux, kind })
}

/// grad(f, argnums=0, has_aux=False)
///
/// The gradient of `f`, a function returning one number, with respect to its argument(s)
/// `argnums` (an int, or a tuple for a tuple of gradients). Nests: `grad(grad(f))` is the
/// second derivative. With `has_aux=True`, `f` returns `(output, aux)` and the result is
/// `(gradient, aux)`.
///
/// >>> f = lambda x, y: (x*y + adjoint.sin(x) + 4) * (3*y**2 + 6)
/// >>> adjoint.grad(f, argnums=(0, 1))(2.0, 8.0)   # the lecture's example
#[pyfunction]
#[pyo3(signature = (f, argnums = None, has_aux = false))]
pub fn grad(f: &Bound<'_, PyAny>, argnums: Option<&Bound<'_, PyAny>>, has_aux: bool) -> PyResult<Transformed> {
    make(f, argnums, has_aux, Kind::Grad)
}

/// value_and_grad(f, argnums=0, has_aux=False)
///
/// Like `grad`, returning `(value, gradient)` (with `has_aux`: `((value, aux), gradient)`).
#[pyfunction]
#[pyo3(signature = (f, argnums = None, has_aux = false))]
pub fn value_and_grad(
    f: &Bound<'_, PyAny>,
    argnums: Option<&Bound<'_, PyAny>>,
    has_aux: bool,
) -> PyResult<Transformed> {
    make(f, argnums, has_aux, Kind::ValueAndGrad)
}

/// jacobian(f, argnums=0)
///
/// The Jacobian of `f`, shaped `output shape + input shape`, by whichever mode needs fewer
/// sweeps (reverse when the output is smaller than the input).
#[pyfunction]
#[pyo3(signature = (f, argnums = None))]
pub fn jacobian(f: &Bound<'_, PyAny>, argnums: Option<&Bound<'_, PyAny>>) -> PyResult<Transformed> {
    make(f, argnums, false, Kind::Jacobian(JacobianMode::Auto))
}

/// jacrev(f, argnums=0): the Jacobian by reverse mode (one sweep per output element).
#[pyfunction]
#[pyo3(signature = (f, argnums = None))]
pub fn jacrev(f: &Bound<'_, PyAny>, argnums: Option<&Bound<'_, PyAny>>) -> PyResult<Transformed> {
    make(f, argnums, false, Kind::Jacobian(JacobianMode::Reverse))
}

/// jacfwd(f, argnums=0): the Jacobian by forward mode (one sweep per input element).
#[pyfunction]
#[pyo3(signature = (f, argnums = None))]
pub fn jacfwd(f: &Bound<'_, PyAny>, argnums: Option<&Bound<'_, PyAny>>) -> PyResult<Transformed> {
    make(f, argnums, false, Kind::Jacobian(JacobianMode::Forward))
}

/// hessian(f, argnums=0)
///
/// The Hessian of a function returning one number, shaped `input shape + input shape`, by
/// forward mode over reverse mode.
#[pyfunction]
#[pyo3(signature = (f, argnums = 0))]
pub fn hessian(f: &Bound<'_, PyAny>, argnums: usize) -> PyResult<Transformed> {
    let function = make(f, None, false, Kind::Hessian)?;
    Ok(Transformed { argnums: Argnums::One(argnums), ..function })
}

/// The primal arguments of `jvp`/`vjp`/`hvp`: a tuple (or list) of values, or one value.
fn sequence<'py>(obj: &Bound<'py, PyAny>, what: &str) -> PyResult<Vec<Bound<'py, PyAny>>> {
    if obj.cast::<PyTuple>().is_ok() || obj.cast::<PyList>().is_ok() {
        obj.try_iter()?.collect::<PyResult<_>>()
    } else {
        Err(PyTypeError::new_err(format!("{what} must be a tuple of values, one per argument of the function")))
    }
}

fn run_jvp<T: Float>(
    py: Python<'_>,
    f: &Bound<'_, PyAny>,
    primals: &[Bound<'_, PyAny>],
    tangents: &[Bound<'_, PyAny>],
) -> PyResult<Py<PyAny>> {
    let xs: Vec<Tensor<T>> = primals.iter().map(to_tensor::<T>).collect::<PyResult<_>>()?;
    let vs: Vec<Tensor<T>> = tangents.iter().map(to_tensor::<T>).collect::<PyResult<_>>()?;
    for (i, (x, v)) in xs.iter().zip(&vs).enumerate() {
        if x.shape() != v.shape() {
            return Err(PyValueError::new_err(format!(
                "jvp: tangent {i} has shape {:?} but its primal {:?}",
                v.shape(),
                x.shape()
            )));
        }
    }
    let _transforming = Transforming::enter();
    let pending = Pending::default();
    let single = std::cell::Cell::new(true);
    let result =
        guard(|| transforms::jvp(|inner: &[Tensor<T>]| outputs_of(f, primals, inner, &pending, &single), &xs, &vs));
    let (ys, ts) = pending.settle(result)?;
    let tracked = xs.iter().chain(&vs).any(Tensor::is_tracked);
    let (ys, ts) = (settle_results(ys, tracked), settle_results(ts, tracked));
    let one = single.get();
    Ok(PyTuple::new(py, [shaped(py, ys, one)?, shaped(py, ts, one)?])?.into_any().unbind())
}

/// jvp(f, primals, tangents)
///
/// Forward mode: evaluates `f(*primals)` and pushes `tangents` (one per argument, of the
/// same shapes) through it in one sweep. Returns `(f(*primals), J·tangents)`, each a
/// tensor or a tuple as `f` returns.
#[pyfunction]
pub fn jvp(
    py: Python<'_>,
    f: &Bound<'_, PyAny>,
    primals: &Bound<'_, PyAny>,
    tangents: &Bound<'_, PyAny>,
) -> PyResult<Py<PyAny>> {
    let primals = sequence(primals, "primals")?;
    let tangents = sequence(tangents, "tangents")?;
    if primals.len() != tangents.len() {
        return Err(PyValueError::new_err(format!("jvp: {} tangents for {} primals", tangents.len(), primals.len())));
    }
    match dtype_of(&primals) {
        Dtype::F32 => run_jvp::<f32>(py, f, &primals, &tangents),
        Dtype::F64 => run_jvp::<f64>(py, f, &primals, &tangents),
    }
}

/// The pullback of either element type.
enum AnyPullback {
    F32(Pullback<f32>),
    F64(Pullback<f64>),
}

/// The function `vjp` returns: call it with one cotangent per output of `f` (a single one
/// when `f` returns one tensor) to get a tuple of one cotangent per argument, cᵀJ.
#[pyclass(frozen, module = "adjoint")]
pub struct VjpFunction {
    pullback: AnyPullback,
    shapes: Vec<Vec<usize>>,
    single: bool,
}

fn pull<T: Float>(
    py: Python<'_>,
    pullback: &Pullback<T>,
    shapes: &[Vec<usize>],
    single: bool,
    cotangents: &Bound<'_, PyTuple>,
) -> PyResult<Py<PyAny>> {
    let given: Vec<Bound<'_, PyAny>> = if single {
        if cotangents.len() != 1 {
            return Err(PyValueError::new_err(format!(
                "the function returned one tensor, so its vjp takes one cotangent, not {}",
                cotangents.len()
            )));
        }
        vec![cotangents.get_item(0)?]
    } else if cotangents.len() == 1 && cotangents.get_item(0)?.cast::<PyTuple>().is_ok() {
        sequence(&cotangents.get_item(0)?, "cotangents")?
    } else {
        cotangents.iter().collect()
    };
    if given.len() != shapes.len() {
        return Err(PyValueError::new_err(format!("vjp: {} cotangents for {} outputs", given.len(), shapes.len())));
    }
    let cs: Vec<Tensor<T>> = given.iter().map(to_tensor::<T>).collect::<PyResult<_>>()?;
    for (i, (c, s)) in cs.iter().zip(shapes).enumerate() {
        if c.shape() != &s[..] {
            return Err(PyValueError::new_err(format!(
                "vjp: cotangent {i} has shape {:?} but the output {:?}",
                c.shape(),
                s
            )));
        }
    }
    let grads = guard(|| pullback.call(&cs))?;
    tuple_of(py, settle_results(grads, cs.iter().any(Tensor::is_tracked)))
}

#[pymethods]
impl VjpFunction {
    #[pyo3(signature = (*cotangents))]
    fn __call__(&self, py: Python<'_>, cotangents: &Bound<'_, PyTuple>) -> PyResult<Py<PyAny>> {
        let _transforming = Transforming::enter();
        match &self.pullback {
            AnyPullback::F32(p) => pull(py, p, &self.shapes, self.single, cotangents),
            AnyPullback::F64(p) => pull(py, p, &self.shapes, self.single, cotangents),
        }
    }
}

fn run_vjp<T: Float>(
    py: Python<'_>,
    f: &Bound<'_, PyAny>,
    primals: &[Bound<'_, PyAny>],
    wrap_pullback: fn(Pullback<T>) -> AnyPullback,
) -> PyResult<Py<PyAny>> {
    let xs: Vec<Tensor<T>> = primals.iter().map(to_tensor::<T>).collect::<PyResult<_>>()?;
    let _transforming = Transforming::enter();
    let pending = Pending::default();
    let single = std::cell::Cell::new(true);
    let result = guard(|| transforms::vjp(|inner: &[Tensor<T>]| outputs_of(f, primals, inner, &pending, &single), &xs));
    let (ys, pullback) = pending.settle(result)?;
    let ys = settle_results(ys, xs.iter().any(Tensor::is_tracked));
    let shapes = ys.iter().map(|y| y.shape().to_vec()).collect();
    let one = single.get();
    let function = Py::new(py, VjpFunction { pullback: wrap_pullback(pullback), shapes, single: one })?;
    Ok(PyTuple::new(py, [shaped(py, ys, one)?, function.into_any()])?.into_any().unbind())
}

/// vjp(f, *primals)
///
/// Reverse mode: evaluates `f(*primals)` and returns `(f(*primals), vjp_fn)`; `vjp_fn(c)`
/// gives a tuple of one cotangent per argument, cᵀJ, and can be called any number of times.
#[pyfunction]
#[pyo3(signature = (f, *primals))]
pub fn vjp(py: Python<'_>, f: &Bound<'_, PyAny>, primals: &Bound<'_, PyTuple>) -> PyResult<Py<PyAny>> {
    let primals: Vec<Bound<'_, PyAny>> = primals.iter().collect();
    match dtype_of(&primals) {
        Dtype::F32 => run_vjp::<f32>(py, f, &primals, AnyPullback::F32),
        Dtype::F64 => run_vjp::<f64>(py, f, &primals, AnyPullback::F64),
    }
}

fn run_hvp<T: Float>(f: &Bound<'_, PyAny>, x: &Bound<'_, PyAny>, v: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
    let py = f.py();
    let (x, v) = (to_tensor::<T>(x)?, to_tensor::<T>(v)?);
    if x.shape() != v.shape() {
        return Err(PyValueError::new_err(format!(
            "hvp: the vector has shape {:?} but the point {:?}",
            v.shape(),
            x.shape()
        )));
    }
    let _transforming = Transforming::enter();
    let pending = Pending::default();
    let args = [x.clone()];
    let call_args: Vec<Bound<'_, PyAny>> = vec![py.None().into_bound(py)];
    let result = guard(|| {
        transforms::hvp(
            |inner: &Tensor<T>| {
                if pending.failed() {
                    return stand_in();
                }
                match call_with(f, &call_args, &[0], std::slice::from_ref(inner), None).and_then(|o| as_output::<T>(&o))
                {
                    Ok(y) => y,
                    Err(e) => {
                        pending.keep(e);
                        stand_in()
                    }
                }
            },
            &args[0],
            &v,
        )
    });
    let h = pending.settle(result)?;
    wrap(py, settle_results(vec![h], x.is_tracked() || v.is_tracked()).remove(0))
}

/// hvp(f, x, v)
///
/// The Hessian-vector product H(x)·v of a function of one tensor returning one number,
/// without forming H (one reverse and one forward sweep).
#[pyfunction]
pub fn hvp(f: &Bound<'_, PyAny>, x: &Bound<'_, PyAny>, v: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
    match dtype_of(std::slice::from_ref(x)) {
        Dtype::F32 => run_hvp::<f32>(f, x, v),
        Dtype::F64 => run_hvp::<f64>(f, x, v),
    }
}

/// check_grads(f, args, order=2, modes=("fwd", "rev"), eps=1e-5, atol=1e-5, rtol=1e-5)
///
/// Checks `f`'s derivatives as JAX's `check_grads` does: JVPs and VJPs against central
/// finite differences at `args` (a tuple), then recursively those of the derivatives, up to
/// `order`. Runs in float64. Raises `AssertionError` naming the failing check.
#[pyfunction]
#[pyo3(signature = (f, args, order = 2, modes = None, eps = 1e-5, atol = 1e-5, rtol = 1e-5))]
#[allow(clippy::too_many_arguments)]
pub fn check_grads(
    py: Python<'_>,
    f: &Bound<'_, PyAny>,
    args: &Bound<'_, PyAny>,
    order: usize,
    modes: Option<&Bound<'_, PyAny>>,
    eps: f64,
    atol: f64,
    rtol: f64,
) -> PyResult<()> {
    let args = sequence(args, "args")?;
    let xs: Vec<Tensor<f64>> = args.iter().map(to_tensor::<f64>).collect::<PyResult<_>>()?;
    let modes: Vec<String> = match modes {
        None => vec!["fwd".into(), "rev".into()],
        Some(m) if m.is_none() => vec!["fwd".into(), "rev".into()],
        Some(m) => match m.extract::<String>() {
            Ok(one) => vec![one],
            Err(_) => m.extract().map_err(|_| PyTypeError::new_err("modes is \"fwd\", \"rev\" or a list of them"))?,
        },
    };
    for m in &modes {
        if !matches!(m.as_str(), "fwd" | "rev") {
            return Err(PyValueError::new_err(format!("modes: {m:?} is neither \"fwd\" nor \"rev\"")));
        }
    }
    let options = CheckOptions {
        order,
        forward: modes.iter().any(|m| m == "fwd"),
        reverse: modes.iter().any(|m| m == "rev"),
        eps,
        atol,
        rtol,
        ..CheckOptions::default()
    };
    let function = f.clone().unbind();
    let n = xs.len();
    // The check needs a 'static function: it holds the Python callable and reaches Python
    // through the interpreter the caller already holds.
    let _transforming = Transforming::enter();
    let failure: std::rc::Rc<std::cell::RefCell<Option<PyErr>>> = Default::default();
    let seen = failure.clone();
    let checked = guard(move || {
        library_check_grads(
            move |inner: &[Tensor<f64>]| {
                Python::attach(|py| {
                    if seen.borrow().is_some() {
                        return vec![stand_in()];
                    }
                    let placeholders: Vec<Bound<'_, PyAny>> = (0..n).map(|_| py.None().into_bound(py)).collect();
                    let positions: Vec<usize> = (0..n).collect();
                    match call_with(function.bind(py), &placeholders, &positions, inner, None)
                        .and_then(|o| as_outputs::<f64>(&o))
                    {
                        Ok((outs, _)) => outs,
                        Err(e) => {
                            seen.borrow_mut().get_or_insert(e);
                            vec![stand_in()]
                        }
                    }
                })
            },
            &xs,
            options,
        )
    });
    let _ = py;
    if let Some(e) = failure.borrow_mut().take() {
        return Err(e);
    }
    checked?.map_err(|e| PyAssertionError::new_err(format!("check_grads: {e}")))
}

/// Registers the transforms.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Transformed>()?;
    m.add_class::<VjpFunction>()?;
    for f in [
        wrap_pyfunction!(grad, m)?,
        wrap_pyfunction!(value_and_grad, m)?,
        wrap_pyfunction!(jacobian, m)?,
        wrap_pyfunction!(jacrev, m)?,
        wrap_pyfunction!(jacfwd, m)?,
        wrap_pyfunction!(hessian, m)?,
        wrap_pyfunction!(jvp, m)?,
        wrap_pyfunction!(vjp, m)?,
        wrap_pyfunction!(hvp, m)?,
        wrap_pyfunction!(check_grads, m)?,
    ] {
        m.add_function(f)?;
    }
    Ok(())
}
