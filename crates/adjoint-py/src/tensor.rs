//! `adjoint.Tensor` and the functions on tensors.
//!
//! A Python `Tensor` holds a library tensor: its value, and its graph node when it is
//! tracked, so the graph belongs to the Python objects exactly as it belongs to Rust values.
//! Every operation goes through [`crate::errors::guard`], so a shape that does not fit is a
//! `ValueError` naming the op and the shapes.

use adjoint::{BackwardOptions, Tensor};
use numpy::PyArrayDyn;
use pyo3::exceptions::{PyIndexError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyEllipsis, PyList, PySlice, PyTuple};

use crate::errors::guard;
use crate::value::{map_value, to_value, with_value, zip_values, Dtype, Value};

/// An n-dimensional array of float32 or float64 that records the operations applied to it,
/// so that derivatives can be taken in reverse mode (`backward`) or with the function
/// transforms (`adjoint.grad`, `adjoint.jvp`, ...).
#[pyclass(name = "Tensor", module = "adjoint")]
pub struct PyTensor {
    /// The library tensor.
    pub value: Value,
}

/// Keeps a tensor's buffer alive for the NumPy arrays that view it.
#[pyclass(frozen, module = "adjoint")]
struct BufferOwner {
    _value: Value,
}

impl PyTensor {
    /// Wraps a value.
    pub fn new(value: Value) -> Self {
        PyTensor { value }
    }

    /// Inside a transform, a tracked value must not become a Python number: the function
    /// would go on without the graph and its derivative would silently be zero (JAX raises
    /// here too).
    fn refuse_inside_transforms(&self, what: &str) -> PyResult<()> {
        if self.value.is_tracked() && crate::errors::Transforming::inside() {
            return Err(PyTypeError::new_err(format!(
                "{what} of a value being differentiated would leave the graph, and its derivative would silently \
                 be zero: use adjoint's functions (adjoint.sin, adjoint.sum, …) instead of math or NumPy inside \
                 transformed functions, or .detach() to leave the graph on purpose"
            )));
        }
        Ok(())
    }
}

/// `other` as a value of `like`'s element type (Python numbers, lists and arrays).
fn operand(other: &Bound<'_, PyAny>, like: &Value) -> PyResult<Value> {
    if let Ok(t) = other.cast::<PyTensor>() {
        return Ok(t.borrow().value.clone());
    }
    to_value(other, Some(like.dtype()))
}

/// Runs a binary operation under the guard.
fn binary(a: &Value, b: &Value, op: fn(&Value, &Value) -> PyResult<Value>) -> PyResult<PyTensor> {
    guard(|| op(a, b))?.map(PyTensor::new)
}

fn add(a: &Value, b: &Value) -> PyResult<Value> {
    zip_values!(a, b, |x, y| Tensor::add(x, y))
}
fn sub(a: &Value, b: &Value) -> PyResult<Value> {
    zip_values!(a, b, |x, y| Tensor::sub(x, y))
}
fn mul(a: &Value, b: &Value) -> PyResult<Value> {
    zip_values!(a, b, |x, y| Tensor::mul(x, y))
}
fn div(a: &Value, b: &Value) -> PyResult<Value> {
    zip_values!(a, b, |x, y| Tensor::div(x, y))
}
fn matmul_values(a: &Value, b: &Value) -> PyResult<Value> {
    zip_values!(a, b, |x, y| x.matmul(y))
}

/// `base ** exponent`: a constant whole exponent is `powi` and another constant `powf`, as
/// the expression language records them (s7 = s2²); a tensor exponent is `pow`.
fn power(base: &Value, exponent: &Bound<'_, PyAny>) -> PyResult<PyTensor> {
    let is_number = exponent.extract::<f64>().is_ok() && exponent.cast::<PyTensor>().is_err();
    if is_number {
        let p: f64 = exponent.extract()?;
        let whole = p.fract() == 0.0 && p.abs() <= f64::from(i32::MAX);
        return guard(|| map_value!(base, |t| if whole { t.powi(p as i32) } else { t.powf(p) })).map(PyTensor::new);
    }
    let e = operand(exponent, base)?;
    binary(base, &e, |a, b| zip_values!(a, b, |x, y| x.pow(y)))
}

/// Normalises an axis argument (None, an int, a sequence of ints) to a list of axes, or
/// `None` for all of them.
fn axes_of(axis: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Vec<isize>>> {
    match axis {
        None => Ok(None),
        Some(a) if a.is_none() => Ok(None),
        Some(a) => {
            if let Ok(i) = a.extract::<isize>() {
                Ok(Some(vec![i]))
            } else {
                Ok(Some(
                    a.extract::<Vec<isize>>()
                        .map_err(|_| PyTypeError::new_err("axis must be an int or a tuple of ints"))?,
                ))
            }
        }
    }
}

/// One parsed element of an index expression.
enum Index {
    At(isize),
    Range { start: isize, stop: isize, step: isize },
    Pick(Vec<isize>),
    Rest,
}

fn parse_index(item: &Bound<'_, PyAny>) -> PyResult<Index> {
    if item.is_instance_of::<PyEllipsis>() {
        return Ok(Index::Rest);
    }
    if let Ok(s) = item.cast::<PySlice>() {
        // Resolved per axis later (the length is not known here): keep Python's raw fields.
        let get = |name: &str| -> PyResult<Option<isize>> {
            let v = s.getattr(name)?;
            if v.is_none() {
                Ok(None)
            } else {
                v.extract::<isize>().map(Some)
            }
        };
        let step = get("step")?.unwrap_or(1);
        if step <= 0 {
            return Err(PyValueError::new_err("slices with a step below 1 are not supported (use flip-free indexing)"));
        }
        return Ok(Index::Range { start: get("start")?.unwrap_or(0), stop: get("stop")?.unwrap_or(isize::MAX), step });
    }
    if let Ok(i) = item.extract::<isize>() {
        return Ok(Index::At(i));
    }
    if is_boolean(item) {
        return Err(PyIndexError::new_err("boolean masks are not supported as indices; use adjoint.where"));
    }
    if let Ok(list) = item.extract::<Vec<isize>>() {
        return Ok(Index::Pick(list));
    }
    Err(PyIndexError::new_err(format!(
        "tensors are indexed with ints, slices, lists of ints and ..., not {}",
        item.get_type().name().map(|n| n.to_string()).unwrap_or_default()
    )))
}

/// Whether an index is a boolean mask (a list of bools or a boolean array).
fn is_boolean(item: &Bound<'_, PyAny>) -> bool {
    let kind_is_bool = |o: &Bound<'_, PyAny>| {
        o.getattr("dtype").and_then(|d| d.getattr("kind")).and_then(|k| k.extract::<String>()).is_ok_and(|k| k == "b")
    };
    if kind_is_bool(item) {
        return true;
    }
    let first = item.try_iter().ok().and_then(|mut it| it.next()).and_then(Result::ok);
    first.is_some_and(|f| f.is_instance_of::<pyo3::types::PyBool>() || kind_is_bool(&f))
}

fn resolve(i: isize, n: usize, what: &str) -> PyResult<usize> {
    let j = if i < 0 { i + n as isize } else { i };
    if j < 0 || j >= n as isize {
        return Err(PyIndexError::new_err(format!("index {i} is out of range for {what} of length {n}")));
    }
    Ok(j as usize)
}

fn index_value(value: &Value, key: &Bound<'_, PyAny>) -> PyResult<Value> {
    let items: Vec<Bound<'_, PyAny>> = match key.cast::<PyTuple>() {
        Ok(t) => t.iter().collect(),
        Err(_) => vec![key.clone()],
    };
    let mut parsed = items.iter().map(parse_index).collect::<PyResult<Vec<Index>>>()?;
    if parsed.iter().filter(|p| matches!(p, Index::Pick(_))).count() > 1 {
        // NumPy pairs several index lists element by element; picking each axis separately
        // would silently give another result.
        return Err(PyIndexError::new_err(
            "one index list per indexing: NumPy would pair several lists element by element; index twice instead",
        ));
    }
    let ndim = value.shape().len();
    let rests = parsed.iter().filter(|p| matches!(p, Index::Rest)).count();
    if rests > 1 {
        return Err(PyIndexError::new_err("an index can only have a single ellipsis (...)"));
    }
    let explicit = parsed.len() - rests;
    if explicit > ndim {
        return Err(PyIndexError::new_err(format!(
            "too many indices for a tensor of shape {:?}: {explicit} given",
            value.shape()
        )));
    }
    // Expand `...` (or the missing trailing axes) into full ranges.
    let fill = ndim - explicit;
    let at = parsed.iter().position(|p| matches!(p, Index::Rest)).unwrap_or(parsed.len());
    parsed.retain(|p| !matches!(p, Index::Rest));
    for _ in 0..fill {
        parsed.insert(at, Index::Range { start: 0, stop: isize::MAX, step: 1 });
    }
    let mut v = value.clone();
    let mut keep: Vec<usize> = Vec::new();
    for (axis, p) in parsed.iter().enumerate() {
        let n = v.shape()[axis];
        let what = format!("axis {axis}");
        match p {
            Index::At(i) => {
                let j = resolve(*i, n, &what)?;
                v = guard(|| map_value!(&v, |t| t.narrow(axis as isize, j, 1)))?;
            }
            Index::Range { start, stop, step } => {
                let clamp = |i: isize| -> usize {
                    let j = if i < 0 { i.saturating_add(n as isize) } else { i };
                    j.clamp(0, n as isize) as usize
                };
                let (a, b) = (clamp(*start), clamp(*stop).max(clamp(*start)));
                let step = *step as usize;
                if !(a == 0 && b == n && step == 1) {
                    v = guard(|| map_value!(&v, |t| t.slice(axis as isize, a as isize, Some(b as isize), step)))?;
                }
                keep.push(v.shape()[axis]);
            }
            Index::Pick(list) => {
                let picked = list.iter().map(|&i| resolve(i, n, &what)).collect::<PyResult<Vec<usize>>>()?;
                v = guard(|| map_value!(&v, |t| t.index_select(axis as isize, &picked)))?;
                keep.push(picked.len());
            }
            Index::Rest => unreachable!("expanded above"),
        }
    }
    if keep.len() != ndim {
        v = guard(|| map_value!(&v, |t| t.reshape(&keep[..])))?;
    }
    Ok(v)
}

/// The values as NumPy prints them (`prefix` is what precedes the text, for indenting).
fn format_value(py: Python<'_>, value: &Value, prefix: &str) -> PyResult<String> {
    let array = to_numpy(py, value)?;
    let np = py.import("numpy")?;
    let kwargs = [("separator", ", "), ("prefix", prefix)].into_py_dict(py)?;
    np.getattr("array2string")?.call((array,), Some(&kwargs))?.extract()
}

#[pymethods]
impl PyTensor {
    /// Tensor(data, dtype=None, requires_grad=False)
    ///
    /// A tensor from a number, a (nested) list, a NumPy array or another tensor. Python numbers
    /// and lists are float64, as in NumPy; a float32 array stays float32. With
    /// `requires_grad=True` the tensor is a leaf whose gradient `backward()` accumulates.
    #[new]
    #[pyo3(signature = (data, dtype = None, requires_grad = false))]
    fn py_new(data: &Bound<'_, PyAny>, dtype: Option<&Bound<'_, PyAny>>, requires_grad: bool) -> PyResult<Self> {
        tensor(data, dtype, requires_grad)
    }

    /// The shape, as a tuple.
    #[getter]
    fn shape<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, self.value.shape())
    }

    /// The number of axes.
    #[getter]
    fn ndim(&self) -> usize {
        self.value.shape().len()
    }

    /// The number of elements.
    #[getter]
    fn size(&self) -> usize {
        self.value.shape().iter().product()
    }

    /// `"float32"` or `"float64"`.
    #[getter]
    fn dtype(&self) -> &'static str {
        self.value.dtype().name()
    }

    /// Whether gradients flow into this tensor (a leaf made with `requires_grad`, or a result
    /// computed from one while recording).
    #[getter]
    fn requires_grad(&self) -> bool {
        self.value.is_tracked()
    }

    /// Whether this tensor is a leaf variable (made with `requires_grad=True`).
    #[getter]
    fn is_leaf(&self) -> bool {
        with_value!(&self.value, |t| t.is_leaf())
    }

    /// The gradient `backward()` accumulated into this leaf, or None.
    #[getter]
    fn grad(&self) -> Option<PyTensor> {
        map_grad(&self.value)
    }

    /// Setting `grad = None` forgets the accumulated gradient.
    #[setter]
    fn set_grad(&self, value: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        match value {
            None => {
                with_value!(&self.value, |t| t.zero_grad());
                Ok(())
            }
            Some(v) if v.is_none() => {
                with_value!(&self.value, |t| t.zero_grad());
                Ok(())
            }
            Some(v) => {
                let g = operand(v, &self.value)?;
                if g.shape() != self.value.shape() {
                    return Err(PyValueError::new_err(format!(
                        "a gradient of shape {:?} for a tensor of shape {:?}",
                        g.shape(),
                        self.value.shape()
                    )));
                }
                match (&self.value, g) {
                    (Value::F32(t), Value::F32(g)) => t.set_grad(Some(g.detach())),
                    (Value::F64(t), Value::F64(g)) => t.set_grad(Some(g.detach())),
                    (a, b) => return Err(crate::value::mixed(a.dtype(), b.dtype())),
                }
                Ok(())
            }
        }
    }

    /// Makes this tensor a leaf variable in place (as PyTorch's `requires_grad_`); returns it.
    #[pyo3(signature = (requires_grad = true))]
    fn requires_grad_(mut slf: PyRefMut<'_, Self>, requires_grad: bool) -> PyRefMut<'_, Self> {
        slf.value = if requires_grad {
            map_value!(&slf.value, |t| t.detach().requires_grad())
        } else {
            map_value!(&slf.value, |t| t.detach())
        };
        slf
    }

    /// Forgets the accumulated gradient of this leaf.
    fn zero_grad(&self) {
        with_value!(&self.value, |t| t.zero_grad());
    }

    /// The same values cut off from the graph: gradients do not flow through the result.
    fn detach(&self) -> PyTensor {
        PyTensor::new(map_value!(&self.value, |t| t.detach()))
    }

    /// Reverse mode from this tensor: accumulates ∂self/∂leaf into every leaf's `.grad`.
    ///
    /// `gradient` is the cotangent to start from (needed unless the tensor holds one number);
    /// `retain_graph` keeps the graph for another backward pass; `create_graph` records the
    /// pass itself, so the gradients can be differentiated again.
    #[pyo3(signature = (gradient = None, retain_graph = false, create_graph = false))]
    fn backward(
        &self,
        py: Python<'_>,
        gradient: Option<&Bound<'_, PyAny>>,
        retain_graph: bool,
        create_graph: bool,
    ) -> PyResult<()> {
        let cotangent = gradient.filter(|g| !g.is_none()).map(|g| operand(g, &self.value)).transpose()?;
        if cotangent.is_none() && self.value.shape().iter().product::<usize>() != 1 {
            return Err(PyRuntimeError::new_err(format!(
                "backward: a tensor of shape {:?} needs a `gradient` of its shape (only one number can start without one)",
                self.value.shape()
            )));
        }
        if !self.value.is_tracked() {
            return Err(PyRuntimeError::new_err(
                "backward: this tensor does not require grad (no input was made with requires_grad=True, or it was computed under no_grad)",
            ));
        }
        if create_graph {
            // As PyTorch warns: each leaf's gradient then holds a graph that holds the leaf.
            let warnings = py.import("warnings")?;
            warnings.call_method1(
                "warn",
                (
                    "backward(create_graph=True) makes each leaf's .grad hold a graph that refers back to the leaf: \
                     set x.grad = None when done with it, or use adjoint.grad, which needs no .grad",
                    py.get_type::<pyo3::exceptions::PyUserWarning>(),
                ),
            )?;
        }
        let result = match (&self.value, cotangent) {
            (Value::F32(t), c) => {
                let c = c.map(|c| c.to_dtype(Dtype::F32)).transpose()?;
                let cotangent = c.map(|c| match c {
                    Value::F32(c) => c,
                    Value::F64(_) => unreachable!("converted"),
                });
                guard(|| {
                    t.try_backward_with(BackwardOptions { cotangent, retain_graph, create_graph, ..Default::default() })
                        .map(|_| ())
                })?
            }
            (Value::F64(t), c) => {
                let c = c.map(|c| c.to_dtype(Dtype::F64)).transpose()?;
                let cotangent = c.map(|c| match c {
                    Value::F64(c) => c,
                    Value::F32(_) => unreachable!("converted"),
                });
                guard(|| {
                    t.try_backward_with(BackwardOptions { cotangent, retain_graph, create_graph, ..Default::default() })
                        .map(|_| ())
                })?
            }
        };
        result.map_err(|e| PyRuntimeError::new_err(e.to_string()))
    }

    /// The values as a NumPy array that shares the tensor's memory (read-only: tensors are
    /// immutable; `.numpy().copy()` gives a writable copy).
    fn numpy<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let value = slf.borrow().value.clone();
        if value.is_tracked() {
            // As PyTorch: a NumPy array cannot carry the graph, so derivatives through it
            // would silently be zero.
            return Err(PyRuntimeError::new_err(
                "numpy() of a tensor that requires grad would leave the graph (derivatives through it would be lost); \
                 use .detach().numpy() to do so on purpose",
            ));
        }
        to_numpy(slf.py(), &value)
    }

    /// NumPy's conversion protocol: `numpy.asarray(t)`.
    #[pyo3(signature = (dtype = None, copy = None))]
    fn __array__<'py>(
        slf: &Bound<'py, Self>,
        dtype: Option<&Bound<'py, PyAny>>,
        copy: Option<bool>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let mut a = Self::numpy(slf)?;
        if let Some(d) = dtype.filter(|d| !d.is_none()) {
            a = a.call_method1("astype", (d,))?;
        } else if copy == Some(true) {
            a = a.call_method0("copy")?;
        }
        Ok(a)
    }

    /// The single number of a one-element tensor (as a Python float, outside the graph).
    fn item(&self) -> PyResult<f64> {
        self.refuse_inside_transforms("item()")?;
        guard(|| with_value!(&self.value, |t| num_traits_to_f64(t.item())))
    }

    /// The values as nested Python lists.
    fn tolist<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        Self::numpy(slf)?.call_method0("tolist")
    }

    fn __float__(&self) -> PyResult<f64> {
        self.item()
    }

    fn __int__(&self) -> PyResult<i64> {
        Ok(self.item()? as i64)
    }

    /// Format specs apply to a one-element tensor's number (`f"{loss:.4f}"`).
    fn __format__(slf: &Bound<'_, Self>, spec: &str) -> PyResult<String> {
        if spec.is_empty() {
            return Ok(slf.str()?.to_string());
        }
        let number = slf.borrow().item()?;
        number.into_pyobject(slf.py())?.call_method1("__format__", (spec,))?.extract()
    }

    fn __iter__(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let n = slf.borrow().__len__()?;
        let rows: Vec<PyTensor> = (0..n)
            .map(|i| index_value(&slf.borrow().value, &i.into_pyobject(slf.py())?.into_any()).map(PyTensor::new))
            .collect::<PyResult<_>>()?;
        Ok(PyList::new(slf.py(), rows)?.try_iter()?.into_any().unbind())
    }

    fn __len__(&self) -> PyResult<usize> {
        self.value.shape().first().copied().ok_or_else(|| PyTypeError::new_err("len() of a 0-d tensor"))
    }

    fn __bool__(&self) -> PyResult<bool> {
        if self.value.shape().iter().product::<usize>() != 1 {
            return Err(PyValueError::new_err(format!(
                "the truth value of a tensor of shape {:?} is ambiguous",
                self.value.shape()
            )));
        }
        Ok(self.item()? != 0.0)
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let this = slf.borrow();
        let body = format_value(slf.py(), &this.value, "tensor(")?;
        let mut extra = String::new();
        if this.value.dtype() == Dtype::F32 {
            extra.push_str(", dtype=float32");
        }
        if this.is_leaf() {
            extra.push_str(", requires_grad=True");
        } else if this.value.is_tracked() {
            extra.push_str(", tracked");
        }
        Ok(format!("tensor({body}{extra})"))
    }

    fn __str__(slf: &Bound<'_, Self>) -> PyResult<String> {
        format_value(slf.py(), &slf.borrow().value, "")
    }

    fn __getitem__(&self, key: &Bound<'_, PyAny>) -> PyResult<PyTensor> {
        index_value(&self.value, key).map(PyTensor::new)
    }

    fn __neg__(&self) -> PyResult<PyTensor> {
        guard(|| map_value!(&self.value, |t| -t)).map(PyTensor::new)
    }

    fn __pos__(&self) -> PyTensor {
        PyTensor::new(self.value.clone())
    }

    fn __abs__(&self) -> PyResult<PyTensor> {
        guard(|| map_value!(&self.value, |t| t.abs())).map(PyTensor::new)
    }

    fn __add__(&self, other: &Bound<'_, PyAny>) -> PyResult<PyTensor> {
        binary(&self.value, &operand(other, &self.value)?, add)
    }
    fn __radd__(&self, other: &Bound<'_, PyAny>) -> PyResult<PyTensor> {
        binary(&operand(other, &self.value)?, &self.value, add)
    }
    fn __sub__(&self, other: &Bound<'_, PyAny>) -> PyResult<PyTensor> {
        binary(&self.value, &operand(other, &self.value)?, sub)
    }
    fn __rsub__(&self, other: &Bound<'_, PyAny>) -> PyResult<PyTensor> {
        binary(&operand(other, &self.value)?, &self.value, sub)
    }
    fn __mul__(&self, other: &Bound<'_, PyAny>) -> PyResult<PyTensor> {
        binary(&self.value, &operand(other, &self.value)?, mul)
    }
    fn __rmul__(&self, other: &Bound<'_, PyAny>) -> PyResult<PyTensor> {
        binary(&operand(other, &self.value)?, &self.value, mul)
    }
    fn __truediv__(&self, other: &Bound<'_, PyAny>) -> PyResult<PyTensor> {
        binary(&self.value, &operand(other, &self.value)?, div)
    }
    fn __rtruediv__(&self, other: &Bound<'_, PyAny>) -> PyResult<PyTensor> {
        binary(&operand(other, &self.value)?, &self.value, div)
    }
    fn __matmul__(&self, other: &Bound<'_, PyAny>) -> PyResult<PyTensor> {
        binary(&self.value, &operand(other, &self.value)?, matmul_values)
    }
    fn __rmatmul__(&self, other: &Bound<'_, PyAny>) -> PyResult<PyTensor> {
        binary(&operand(other, &self.value)?, &self.value, matmul_values)
    }
    fn __pow__(&self, exponent: &Bound<'_, PyAny>, modulo: Option<&Bound<'_, PyAny>>) -> PyResult<PyTensor> {
        if modulo.is_some_and(|m| !m.is_none()) {
            return Err(PyTypeError::new_err("pow() with a modulus is not defined for tensors"));
        }
        power(&self.value, exponent)
    }
    fn __rpow__(&self, base: &Bound<'_, PyAny>, modulo: Option<&Bound<'_, PyAny>>) -> PyResult<PyTensor> {
        if modulo.is_some_and(|m| !m.is_none()) {
            return Err(PyTypeError::new_err("pow() with a modulus is not defined for tensors"));
        }
        let b = operand(base, &self.value)?;
        binary(&b, &self.value, |a, e| zip_values!(a, e, |x, y| x.pow(y)))
    }

    /// NumPy defers to the tensor's operators (`array * tensor` is a tensor).
    #[classattr]
    fn __array_ufunc__() -> Option<()> {
        None
    }

    /// The transpose (axes reversed).
    #[getter(T)]
    fn transposed(&self) -> PyResult<PyTensor> {
        let n = self.value.shape().len() as isize;
        let axes: Vec<isize> = (0..n).rev().collect();
        guard(|| map_value!(&self.value, |t| t.permute(&axes[..]))).map(PyTensor::new)
    }

    /// A float32 copy (itself if it already is; only untracked tensors convert).
    fn float(&self) -> PyResult<PyTensor> {
        self.value.to_dtype(Dtype::F32).map(PyTensor::new)
    }

    /// A float64 copy (itself if it already is; only untracked tensors convert).
    fn double(&self) -> PyResult<PyTensor> {
        self.value.to_dtype(Dtype::F64).map(PyTensor::new)
    }

    /// The same values in another shape (one axis may be -1).
    #[pyo3(signature = (*shape))]
    fn reshape(&self, shape: &Bound<'_, PyTuple>) -> PyResult<PyTensor> {
        let dims = shape_arg(shape)?;
        guard(|| map_value!(&self.value, |t| t.reshape(&dims[..]))).map(PyTensor::new)
    }
}

/// `reshape(2, 3)` or `reshape((2, 3))`.
fn shape_arg(shape: &Bound<'_, PyTuple>) -> PyResult<Vec<isize>> {
    if shape.len() == 1 {
        let first = shape.get_item(0)?;
        if let Ok(v) = first.extract::<Vec<isize>>() {
            return Ok(v);
        }
    }
    shape.extract::<Vec<isize>>().map_err(|_| PyTypeError::new_err("a shape is a sequence of ints"))
}

fn num_traits_to_f64<T: adjoint::Element>(v: T) -> f64 {
    v.to_f64().unwrap_or(f64::NAN)
}

fn map_grad(value: &Value) -> Option<PyTensor> {
    match value {
        Value::F32(t) => t.grad().map(|g| PyTensor::new(Value::F32(g))),
        Value::F64(t) => t.grad().map(|g| PyTensor::new(Value::F64(g))),
    }
}

/// A read-only NumPy view of a tensor's values, kept alive by a small owner object.
pub fn to_numpy<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    let owner = Bound::new(py, BufferOwner { _value: value.clone() })?;
    // The view is taken of the owner's own value: a 0-d tensor keeps its number inline, so a
    // view of any other copy would point into memory that is not kept alive.
    let held = &owner.get()._value;
    let array = with_value!(held, |t| {
        let view = t.view();
        // SAFETY: the view's memory belongs to the value `owner` holds (its shared buffer, or
        // the number inline in the owner object itself), which lives as long as the array;
        // tensor buffers are never written while shared, and the array is marked read-only
        // below, so nothing writes through it either.
        unsafe { PyArrayDyn::borrow_from_array(&view, owner.clone().into_any()) }.into_any()
    });
    array.call_method("setflags", (), Some(&[("write", false)].into_py_dict(py)?))?;
    Ok(array)
}

use pyo3::types::IntoPyDict;

/// tensor(data, dtype=None, requires_grad=False)
///
/// A tensor from a number, a (nested) list, a NumPy array or another tensor. Python numbers
/// and lists are float64, as in NumPy; NumPy arrays keep float32 or float64.
#[pyfunction]
#[pyo3(signature = (data, dtype = None, requires_grad = false))]
pub fn tensor(data: &Bound<'_, PyAny>, dtype: Option<&Bound<'_, PyAny>>, requires_grad: bool) -> PyResult<PyTensor> {
    let dtype = dtype.filter(|d| !d.is_none()).map(Dtype::from_py).transpose()?;
    // A new tensor out of any graph (as torch.tensor(t) copies and detaches), so that
    // `tensor(x, requires_grad=False)` is a constant even when x is tracked.
    let value = to_value(data, dtype)?;
    let value = if requires_grad {
        map_value!(&value, |t| t.detach().requires_grad())
    } else {
        map_value!(&value, |t| t.detach())
    };
    Ok(PyTensor::new(value))
}

macro_rules! unary_functions {
    ($($name:ident => $doc:literal),* $(,)?) => {
        $(
            #[doc = $doc]
            #[pyfunction]
            pub fn $name(x: &Bound<'_, PyAny>) -> PyResult<PyTensor> {
                let v = to_value(x, None)?;
                guard(|| map_value!(&v, |t| t.$name())).map(PyTensor::new)
            }
        )*
        /// The unary functions, for registration.
        pub fn register_unary(m: &Bound<'_, PyModule>) -> PyResult<()> {
            $( m.add_function(wrap_pyfunction!($name, m)?)?; )*
            Ok(())
        }
        /// Their names (the Python package adds them as methods too).
        pub const UNARY: &[&str] = &[$(stringify!($name)),*];
    };
}

unary_functions! {
    sin => "sin(x): the sine, elementwise (radians).",
    cos => "cos(x): the cosine, elementwise (radians).",
    tan => "tan(x): the tangent, elementwise (radians).",
    sinh => "sinh(x): the hyperbolic sine, elementwise.",
    cosh => "cosh(x): the hyperbolic cosine, elementwise.",
    tanh => "tanh(x): the hyperbolic tangent, elementwise.",
    atan => "atan(x): the arctangent, elementwise.",
    exp => "exp(x): eˣ, elementwise.",
    expm1 => "expm1(x): eˣ − 1, elementwise (exact near 0).",
    log => "log(x): the natural logarithm, elementwise.",
    log1p => "log1p(x): log(1 + x), elementwise (exact near 0).",
    sqrt => "sqrt(x): the square root, elementwise.",
    sqr => "sqr(x): x², elementwise.",
    abs => "abs(x): |x|, elementwise (its derivative at 0 is 0).",
    sign => "sign(x): −1, 0 or 1, elementwise (derivative 0).",
    relu => "relu(x): max(x, 0), elementwise (derivative 0 at 0, as in PyTorch).",
    sigmoid => "sigmoid(x): 1 / (1 + e⁻ˣ), elementwise.",
    softplus => "softplus(x): log(1 + eˣ), elementwise.",
    gelu => "gelu(x): x·Φ(x), elementwise (the exact form).",
    silu => "silu(x): x·sigmoid(x), elementwise.",
    erf => "erf(x): the error function, elementwise.",
}

fn reduce(
    x: &Bound<'_, PyAny>,
    axis: Option<&Bound<'_, PyAny>>,
    keepdims: bool,
    all: fn(&Value) -> Value,
    some: fn(&Value, &[isize], bool) -> Value,
) -> PyResult<PyTensor> {
    let v = to_value(x, None)?;
    let axes = axes_of(axis)?;
    guard(|| match axes {
        None if !keepdims => all(&v),
        None => {
            let every: Vec<isize> = (0..v.shape().len() as isize).collect();
            some(&v, &every, true)
        }
        Some(a) => some(&v, &a, keepdims),
    })
    .map(PyTensor::new)
}

/// sum(x, axis=None, keepdims=False): the sum over `axis` (an int, a tuple, or all).
#[pyfunction]
#[pyo3(signature = (x, axis = None, keepdims = false))]
pub fn sum(x: &Bound<'_, PyAny>, axis: Option<&Bound<'_, PyAny>>, keepdims: bool) -> PyResult<PyTensor> {
    reduce(x, axis, keepdims, |v| map_value!(v, |t| t.sum_all()), |v, a, k| map_value!(v, |t| t.sum(a, k)))
}

/// mean(x, axis=None, keepdims=False): the mean over `axis` (an int, a tuple, or all).
#[pyfunction]
#[pyo3(signature = (x, axis = None, keepdims = false))]
pub fn mean(x: &Bound<'_, PyAny>, axis: Option<&Bound<'_, PyAny>>, keepdims: bool) -> PyResult<PyTensor> {
    reduce(x, axis, keepdims, |v| map_value!(v, |t| t.mean_all()), |v, a, k| map_value!(v, |t| t.mean(a, k)))
}

/// amax(x, axis=None, keepdims=False): the largest value over `axis`; ties share the
/// gradient equally (as JAX).
#[pyfunction]
#[pyo3(signature = (x, axis = None, keepdims = false))]
pub fn amax(x: &Bound<'_, PyAny>, axis: Option<&Bound<'_, PyAny>>, keepdims: bool) -> PyResult<PyTensor> {
    reduce(x, axis, keepdims, |v| map_value!(v, |t| t.max_all()), |v, a, k| map_value!(v, |t| t.amax(a, k)))
}

/// prod(x, axis=None, keepdims=False): the product over `axis`.
#[pyfunction]
#[pyo3(signature = (x, axis = None, keepdims = false))]
pub fn prod(x: &Bound<'_, PyAny>, axis: Option<&Bound<'_, PyAny>>, keepdims: bool) -> PyResult<PyTensor> {
    reduce(
        x,
        axis,
        keepdims,
        |v| {
            let every: Vec<isize> = (0..v.shape().len() as isize).collect();
            map_value!(v, |t| t.prod(&every[..], false))
        },
        |v, a, k| map_value!(v, |t| t.prod(a, k)),
    )
}

/// softmax(x, axis=-1)
#[pyfunction]
#[pyo3(signature = (x, axis = -1))]
pub fn softmax(x: &Bound<'_, PyAny>, axis: isize) -> PyResult<PyTensor> {
    let v = to_value(x, None)?;
    guard(|| map_value!(&v, |t| t.softmax(axis))).map(PyTensor::new)
}

/// log_softmax(x, axis=-1)
#[pyfunction]
#[pyo3(signature = (x, axis = -1))]
pub fn log_softmax(x: &Bound<'_, PyAny>, axis: isize) -> PyResult<PyTensor> {
    let v = to_value(x, None)?;
    guard(|| map_value!(&v, |t| t.log_softmax(axis))).map(PyTensor::new)
}

/// logsumexp(x, axis=-1, keepdims=False)
#[pyfunction]
#[pyo3(signature = (x, axis = -1, keepdims = false))]
pub fn logsumexp(x: &Bound<'_, PyAny>, axis: isize, keepdims: bool) -> PyResult<PyTensor> {
    let v = to_value(x, None)?;
    guard(|| map_value!(&v, |t| t.logsumexp(axis, keepdims))).map(PyTensor::new)
}

/// Two operands of one element type: the first tensor among them sets it.
fn pair(a: &Bound<'_, PyAny>, b: &Bound<'_, PyAny>) -> PyResult<(Value, Value)> {
    if a.cast::<PyTensor>().is_ok() || b.cast::<PyTensor>().is_err() {
        let x = to_value(a, None)?;
        let y = operand(b, &x)?;
        Ok((x, y))
    } else {
        let y = to_value(b, None)?;
        let x = operand(a, &y)?;
        Ok((x, y))
    }
}

/// matmul(a, b): the matrix product (batched over leading axes; 1-d operands as vectors).
#[pyfunction]
pub fn matmul(a: &Bound<'_, PyAny>, b: &Bound<'_, PyAny>) -> PyResult<PyTensor> {
    let (x, y) = pair(a, b)?;
    binary(&x, &y, matmul_values)
}

/// maximum(a, b): the larger of two, elementwise, broadcasting (ties share the gradient).
#[pyfunction]
pub fn maximum(a: &Bound<'_, PyAny>, b: &Bound<'_, PyAny>) -> PyResult<PyTensor> {
    let (x, y) = pair(a, b)?;
    binary(&x, &y, |a, b| zip_values!(a, b, |x, y| x.maximum(y)))
}

/// minimum(a, b): the smaller of two, elementwise, broadcasting (ties share the gradient).
#[pyfunction]
pub fn minimum(a: &Bound<'_, PyAny>, b: &Bound<'_, PyAny>) -> PyResult<PyTensor> {
    let (x, y) = pair(a, b)?;
    binary(&x, &y, |a, b| zip_values!(a, b, |x, y| x.minimum(y)))
}

/// pow(a, b): aᵇ elementwise, broadcasting.
#[pyfunction]
#[pyo3(name = "pow")]
pub fn pow_function(a: &Bound<'_, PyAny>, b: &Bound<'_, PyAny>) -> PyResult<PyTensor> {
    let x = to_value(a, None)?;
    power(&x, b)
}

/// where(condition, a, b): a where the condition is non-zero, else b (gradients flow to the
/// branch taken).
#[pyfunction]
#[pyo3(name = "where")]
pub fn where_function(condition: &Bound<'_, PyAny>, a: &Bound<'_, PyAny>, b: &Bound<'_, PyAny>) -> PyResult<PyTensor> {
    let (x, y) = pair(a, b)?;
    let c = operand(condition, &x)?;
    guard(|| match (&c, &x, &y) {
        (Value::F32(c), Value::F32(x), Value::F32(y)) => Ok(Value::F32(Tensor::where_(c, x, y))),
        (Value::F64(c), Value::F64(x), Value::F64(y)) => Ok(Value::F64(Tensor::where_(c, x, y))),
        _ => Err(crate::value::mixed(x.dtype(), y.dtype())),
    })?
    .map(PyTensor::new)
}

/// clip(x, lo, hi): x limited to [lo, hi] (derivative 1 inside, 0 outside).
#[pyfunction]
pub fn clip(x: &Bound<'_, PyAny>, lo: f64, hi: f64) -> PyResult<PyTensor> {
    let v = to_value(x, None)?;
    guard(|| map_value!(&v, |t| t.clamp(lo, hi))).map(PyTensor::new)
}

/// leaky_relu(x, negative_slope=0.01)
#[pyfunction]
#[pyo3(signature = (x, negative_slope = 0.01))]
pub fn leaky_relu(x: &Bound<'_, PyAny>, negative_slope: f64) -> PyResult<PyTensor> {
    let v = to_value(x, None)?;
    guard(|| map_value!(&v, |t| t.leaky_relu(negative_slope))).map(PyTensor::new)
}

/// reshape(x, shape)
#[pyfunction]
#[pyo3(name = "reshape")]
pub fn reshape_function(x: &Bound<'_, PyAny>, shape: Vec<isize>) -> PyResult<PyTensor> {
    let v = to_value(x, None)?;
    guard(|| map_value!(&v, |t| t.reshape(&shape[..]))).map(PyTensor::new)
}

/// transpose(x, axes=None): the axes permuted (reversed by default).
#[pyfunction]
#[pyo3(signature = (x, axes = None))]
pub fn transpose(x: &Bound<'_, PyAny>, axes: Option<Vec<isize>>) -> PyResult<PyTensor> {
    let v = to_value(x, None)?;
    let axes = axes.unwrap_or_else(|| (0..v.shape().len() as isize).rev().collect());
    guard(|| map_value!(&v, |t| t.permute(&axes[..]))).map(PyTensor::new)
}

fn values_of(tensors: &Bound<'_, PyAny>) -> PyResult<Vec<Value>> {
    let list: Vec<Bound<'_, PyAny>> =
        tensors.try_iter()?.collect::<PyResult<_>>().map_err(|_| PyTypeError::new_err("a sequence of tensors"))?;
    let first = list.first().ok_or_else(|| PyValueError::new_err("an empty sequence of tensors"))?;
    let like = to_value(first, None)?;
    list.iter().map(|t| operand(t, &like)).collect()
}

fn join(tensors: &Bound<'_, PyAny>, axis: isize, stack: bool) -> PyResult<PyTensor> {
    let values = values_of(tensors)?;
    guard(|| match &values[0] {
        Value::F32(_) => {
            let ts: Vec<&Tensor<f32>> = values.iter().filter_map(|v| <f32 as crate::value::Float>::unwrap(v)).collect();
            if ts.len() != values.len() {
                return Err(crate::value::mixed(Dtype::F32, Dtype::F64));
            }
            Ok(Value::F32(if stack { Tensor::stack(&ts, axis) } else { Tensor::concat(&ts, axis) }))
        }
        Value::F64(_) => {
            let ts: Vec<&Tensor<f64>> = values.iter().filter_map(|v| <f64 as crate::value::Float>::unwrap(v)).collect();
            if ts.len() != values.len() {
                return Err(crate::value::mixed(Dtype::F64, Dtype::F32));
            }
            Ok(Value::F64(if stack { Tensor::stack(&ts, axis) } else { Tensor::concat(&ts, axis) }))
        }
    })?
    .map(PyTensor::new)
}

/// concatenate(tensors, axis=0)
#[pyfunction]
#[pyo3(signature = (tensors, axis = 0))]
pub fn concatenate(tensors: &Bound<'_, PyAny>, axis: isize) -> PyResult<PyTensor> {
    join(tensors, axis, false)
}

/// stack(tensors, axis=0): along a new axis.
#[pyfunction]
#[pyo3(signature = (tensors, axis = 0))]
pub fn stack(tensors: &Bound<'_, PyAny>, axis: isize) -> PyResult<PyTensor> {
    join(tensors, axis, true)
}

/// cross_entropy(logits, labels): the mean softmax cross-entropy of `[N, C]` logits against
/// integer class labels (PyTorch's `F.cross_entropy`).
#[pyfunction]
pub fn cross_entropy(logits: &Bound<'_, PyAny>, labels: &Bound<'_, PyAny>) -> PyResult<PyTensor> {
    let v = to_value(logits, None)?;
    let labels = labels_of(labels)?;
    guard(|| map_value!(&v, |t| adjoint::nn::cross_entropy(t, &labels))).map(PyTensor::new)
}

/// mse(prediction, target): the mean squared error.
#[pyfunction]
pub fn mse(prediction: &Bound<'_, PyAny>, target: &Bound<'_, PyAny>) -> PyResult<PyTensor> {
    let (x, y) = pair(prediction, target)?;
    binary(&x, &y, |a, b| zip_values!(a, b, |x, y| adjoint::nn::mse(x, y)))
}

/// scaled_dot_product_attention(q, k, v, mask=None, causal=False, dropout=0.0, seed=0, scale=None)
///
/// softmax(q·kᵀ·scale + mask)·v as one primitive (PyTorch's
/// `F.scaled_dot_product_attention`): q `[…, Lq, d]`, k `[…, Lk, d]`, v `[…, Lk, dv]`. `mask`
/// is additive (a float tensor, −inf to mask) or boolean (`True` may attend), broadcast to
/// `[…, Lq, Lk]`; `causal` lets query i see keys j ≤ i; dropout masks are a pure function of
/// `seed`. Memory grows linearly in the sequence length in first-order training.
#[pyfunction]
#[pyo3(signature = (q, k, v, mask = None, causal = false, dropout = 0.0, seed = 0, scale = None))]
#[allow(clippy::too_many_arguments)]
pub fn scaled_dot_product_attention(
    q: &Bound<'_, PyAny>,
    k: &Bound<'_, PyAny>,
    v: &Bound<'_, PyAny>,
    mask: Option<&Bound<'_, PyAny>>,
    causal: bool,
    dropout: f64,
    seed: u64,
    scale: Option<f64>,
) -> PyResult<PyTensor> {
    let qv = to_value(q, None)?;
    let (kv, vv) = (operand(k, &qv)?, operand(v, &qv)?);
    let np = q.py().import("numpy")?;
    let mask = match mask.filter(|m| !m.is_none()) {
        None => None,
        Some(m)
            if m.cast::<PyTensor>().is_err()
                && np.getattr("asarray")?.call1((m,))?.getattr("dtype")?.getattr("kind")?.extract::<String>()?
                    == "b" =>
        {
            let allowed = np.getattr("asarray")?.call1((m,))?;
            let additive = np.getattr("where")?.call1((allowed, 0.0, f64::NEG_INFINITY))?;
            Some(operand(&additive, &qv)?)
        }
        Some(m) => Some(operand(m, &qv)?),
    };
    if !(0.0..1.0).contains(&dropout) {
        return Err(PyValueError::new_err(format!("dropout must be in [0, 1), got {dropout}")));
    }
    guard(|| match (&qv, &kv, &vv, &mask) {
        (Value::F32(q), Value::F32(k), Value::F32(v), m) => {
            let mask = m.as_ref().and_then(|m| <f32 as crate::value::Float>::unwrap(m).cloned());
            let options = adjoint::ops::AttentionOptions { mask, causal, dropout, seed, scale, first: 0 };
            Ok(Value::F32(Tensor::scaled_dot_product_attention(q, k, v, &options)))
        }
        (Value::F64(q), Value::F64(k), Value::F64(v), m) => {
            let mask = m.as_ref().and_then(|m| <f64 as crate::value::Float>::unwrap(m).cloned());
            let options = adjoint::ops::AttentionOptions { mask, causal, dropout, seed, scale, first: 0 };
            Ok(Value::F64(Tensor::scaled_dot_product_attention(q, k, v, &options)))
        }
        _ => Err(crate::value::mixed(qv.dtype(), if kv.dtype() != qv.dtype() { kv.dtype() } else { vv.dtype() })),
    })?
    .map(PyTensor::new)
}

/// Class labels from a list or an integer array.
pub fn labels_of(labels: &Bound<'_, PyAny>) -> PyResult<Vec<usize>> {
    let np = labels.py().import("numpy")?;
    let array = np.getattr("asarray")?.call1((labels,))?;
    let kind: String = array.getattr("dtype")?.getattr("kind")?.extract()?;
    if !matches!(kind.as_str(), "i" | "u") {
        return Err(PyTypeError::new_err("class labels must be integers"));
    }
    let flat: Vec<i64> =
        array.call_method0("ravel")?.call_method1("astype", ("int64",))?.call_method0("tolist")?.extract()?;
    flat.iter()
        .map(|&l| usize::try_from(l).map_err(|_| PyValueError::new_err(format!("class label {l} is negative"))))
        .collect()
}

/// A context manager in which operations are not recorded (results are constants), as
/// PyTorch's `torch.no_grad()`: `with adjoint.no_grad(): ...`.
#[pyclass(module = "adjoint")]
pub struct NoGrad {
    previous: Vec<bool>,
}

#[pymethods]
impl NoGrad {
    #[new]
    fn new() -> Self {
        NoGrad { previous: Vec::new() }
    }

    fn __enter__(mut slf: PyRefMut<'_, Self>) -> PyRefMut<'_, Self> {
        let previous = adjoint::autodiff::set_recording(false);
        slf.previous.push(previous);
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&mut self, _args: &Bound<'_, PyTuple>) -> bool {
        let previous = self.previous.pop().unwrap_or(true);
        adjoint::autodiff::set_recording(previous);
        false
    }
}

/// is_grad_enabled(): whether operations are being recorded on this thread.
#[pyfunction]
pub fn is_grad_enabled() -> bool {
    adjoint::autodiff::is_recording()
}

/// Registers the tensor class and functions.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyTensor>()?;
    m.add_class::<NoGrad>()?;
    m.add_function(wrap_pyfunction!(tensor, m)?)?;
    register_unary(m)?;
    m.add("_UNARY", PyList::new(m.py(), UNARY)?)?;
    for f in [
        wrap_pyfunction!(sum, m)?,
        wrap_pyfunction!(mean, m)?,
        wrap_pyfunction!(amax, m)?,
        wrap_pyfunction!(prod, m)?,
        wrap_pyfunction!(softmax, m)?,
        wrap_pyfunction!(log_softmax, m)?,
        wrap_pyfunction!(logsumexp, m)?,
        wrap_pyfunction!(matmul, m)?,
        wrap_pyfunction!(maximum, m)?,
        wrap_pyfunction!(minimum, m)?,
        wrap_pyfunction!(pow_function, m)?,
        wrap_pyfunction!(where_function, m)?,
        wrap_pyfunction!(clip, m)?,
        wrap_pyfunction!(leaky_relu, m)?,
        wrap_pyfunction!(reshape_function, m)?,
        wrap_pyfunction!(transpose, m)?,
        wrap_pyfunction!(concatenate, m)?,
        wrap_pyfunction!(stack, m)?,
        wrap_pyfunction!(cross_entropy, m)?,
        wrap_pyfunction!(scaled_dot_product_attention, m)?,
        wrap_pyfunction!(mse, m)?,
        wrap_pyfunction!(is_grad_enabled, m)?,
    ] {
        m.add_function(f)?;
    }
    Ok(())
}
