//! A tensor of either element type, and conversions from Python objects.
//!
//! Python numbers, lists and NumPy arrays become tensors here. Python numbers and lists are
//! float64 (as NumPy makes them); a NumPy array keeps float32 or float64, and other dtypes
//! (integers, booleans) become float64. Where an operand meets a tensor, it takes that
//! tensor's element type, so `2 * x` stays float32 for a float32 `x`.

use adjoint::{Element, Tensor};
use numpy::{PyArrayDyn, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{IntoPyDict, PyBool, PyFloat, PyInt, PyList, PyTuple};

/// The two element types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    /// 32-bit floats (networks train in these).
    F32,
    /// 64-bit floats (the default for Python numbers, as in NumPy).
    F64,
}

impl Dtype {
    /// NumPy's name.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "float32",
            Dtype::F64 => "float64",
        }
    }

    /// Reads `"float32"`, `"float64"` (and `"f4"`, `"f8"`, NumPy dtypes, `numpy.float32`).
    pub fn from_py(obj: &Bound<'_, PyAny>) -> PyResult<Dtype> {
        let name = if let Ok(s) = obj.extract::<String>() {
            s
        } else {
            // numpy.dtype or a scalar type: numpy.dtype(obj).name
            let np = obj.py().import("numpy")?;
            np.getattr("dtype")?.call1((obj,))?.getattr("name")?.extract::<String>()?
        };
        match name.as_str() {
            "float32" | "f4" | "single" => Ok(Dtype::F32),
            "float64" | "f8" | "double" | "float" => Ok(Dtype::F64),
            other => Err(PyTypeError::new_err(format!("dtype {other:?}: adjoint tensors are float32 or float64"))),
        }
    }
}

/// A tensor of either element type.
#[derive(Clone)]
pub enum Value {
    /// float32
    F32(Tensor<f32>),
    /// float64
    F64(Tensor<f64>),
}

/// Applies the same code to either element type, giving a [`Value`] of that type.
macro_rules! map_value {
    ($v:expr, |$t:ident| $body:expr) => {
        match $v {
            $crate::value::Value::F32($t) => $crate::value::Value::F32($body),
            $crate::value::Value::F64($t) => $crate::value::Value::F64($body),
        }
    };
}

/// Applies the same code to either element type, giving whatever the code gives.
macro_rules! with_value {
    ($v:expr, |$t:ident| $body:expr) => {
        match $v {
            $crate::value::Value::F32($t) => $body,
            $crate::value::Value::F64($t) => $body,
        }
    };
}

/// Applies the same code to two values of one element type; `Err` for mixed types.
macro_rules! zip_values {
    ($a:expr, $b:expr, |$x:ident, $y:ident| $body:expr) => {
        match ($a, $b) {
            ($crate::value::Value::F32($x), $crate::value::Value::F32($y)) => Ok($crate::value::Value::F32($body)),
            ($crate::value::Value::F64($x), $crate::value::Value::F64($y)) => Ok($crate::value::Value::F64($body)),
            (a, b) => Err($crate::value::mixed(a.dtype(), b.dtype())),
        }
    };
}

pub(crate) use {map_value, with_value, zip_values};

/// The error for two element types in one operation.
pub fn mixed(a: Dtype, b: Dtype) -> PyErr {
    PyTypeError::new_err(format!(
        "an operation on a {} and a {} tensor: convert one with .float() or .double() (adjoint does not promote silently)",
        a.name(),
        b.name()
    ))
}

impl Value {
    /// The element type.
    pub fn dtype(&self) -> Dtype {
        match self {
            Value::F32(_) => Dtype::F32,
            Value::F64(_) => Dtype::F64,
        }
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        with_value!(self, |t| t.shape())
    }

    /// Whether the value is part of a graph.
    pub fn is_tracked(&self) -> bool {
        with_value!(self, |t| t.is_tracked())
    }

    /// A constant scalar of `dtype`.
    pub fn scalar(v: f64, dtype: Dtype) -> Value {
        match dtype {
            Dtype::F32 => Value::F32(Tensor::scalar(v as f32)),
            Dtype::F64 => Value::F64(Tensor::scalar(v)),
        }
    }

    /// The value as `dtype`: itself if it already is; a converted constant if it is not
    /// tracked; an error otherwise (a conversion is not a recorded operation).
    pub fn to_dtype(&self, dtype: Dtype) -> PyResult<Value> {
        if self.dtype() == dtype {
            return Ok(self.clone());
        }
        if self.is_tracked() {
            return Err(PyTypeError::new_err(format!(
                "cannot convert a tracked {} tensor to {}: the conversion is not differentiable here; \
                 convert the inputs before computing with them",
                self.dtype().name(),
                dtype.name()
            )));
        }
        Ok(match self {
            Value::F32(t) => Value::F64(Tensor::from_array(t.view().mapv(f64::from))),
            Value::F64(t) => Value::F32(Tensor::from_array(t.view().mapv(|v| v as f32))),
        })
    }
}

/// Element types a tensor can hold, with their place in [`Value`].
pub trait Float: Element + numpy::Element {
    /// The element type's [`Dtype`].
    const DTYPE: Dtype;
    /// Wraps a tensor of this type.
    fn wrap(t: Tensor<Self>) -> Value;
    /// The tensor if the value is of this type.
    fn unwrap(v: &Value) -> Option<&Tensor<Self>>;
}

impl Float for f32 {
    const DTYPE: Dtype = Dtype::F32;
    fn wrap(t: Tensor<f32>) -> Value {
        Value::F32(t)
    }
    fn unwrap(v: &Value) -> Option<&Tensor<f32>> {
        match v {
            Value::F32(t) => Some(t),
            Value::F64(_) => None,
        }
    }
}

impl Float for f64 {
    const DTYPE: Dtype = Dtype::F64;
    fn wrap(t: Tensor<f64>) -> Value {
        Value::F64(t)
    }
    fn unwrap(v: &Value) -> Option<&Tensor<f64>> {
        match v {
            Value::F64(t) => Some(t),
            Value::F32(_) => None,
        }
    }
}

/// A tensor of `T` from a contiguous NumPy array of `T` (one copy of the values).
fn from_numpy<T: Float>(array: &Bound<'_, PyAny>) -> PyResult<Tensor<T>> {
    let array = array.cast::<PyArrayDyn<T>>().map_err(|e| PyTypeError::new_err(e.to_string()))?;
    let shape = array.shape().to_vec();
    let readonly = array.readonly();
    let values = readonly.as_slice().map_err(|e| PyValueError::new_err(e.to_string()))?.to_vec();
    Ok(Tensor::from_vec(values, &shape))
}

/// Any Python value that can be a tensor, as one: an adjoint Tensor (itself, converted to
/// `dtype` if given), a number, a list or a NumPy array (copied). `dtype` is the type to
/// give it; without one, a NumPy float32 array stays float32 and anything else is float64.
pub fn to_value(obj: &Bound<'_, PyAny>, dtype: Option<Dtype>) -> PyResult<Value> {
    if let Ok(t) = obj.cast::<crate::tensor::PyTensor>() {
        let v = t.borrow().value.clone();
        return match dtype {
            Some(d) => v.to_dtype(d),
            None => Ok(v),
        };
    }
    if holds_tensor(obj) {
        return stack_items(obj, dtype);
    }
    if obj.is_instance_of::<PyFloat>() || (obj.is_instance_of::<PyInt>() && !obj.is_instance_of::<PyBool>()) {
        let v: f64 = obj.extract()?;
        return Ok(Value::scalar(v, dtype.unwrap_or(Dtype::F64)));
    }
    let np = obj.py().import("numpy")?;
    let array = np.getattr("asarray")?.call1((obj,)).map_err(|e| {
        PyTypeError::new_err(format!(
            "cannot make a tensor of a {}: {e}",
            obj.get_type().name().map(|n| n.to_string()).unwrap_or_default()
        ))
    })?;
    let kind: String = array.getattr("dtype")?.getattr("kind")?.extract()?;
    if !matches!(kind.as_str(), "f" | "i" | "u" | "b") {
        return Err(PyTypeError::new_err(format!(
            "cannot make a tensor of an array of dtype {}: numbers are needed",
            array.getattr("dtype")?.str()?
        )));
    }
    let native: String = array.getattr("dtype")?.getattr("name")?.extract()?;
    let dtype = dtype.unwrap_or(if native == "float32" { Dtype::F32 } else { Dtype::F64 });
    // `asarray` with C order keeps a 0-d array 0-d (`ascontiguousarray` would make it 1-d).
    let kwargs = [("dtype", dtype.name()), ("order", "C")].into_py_dict(obj.py())?;
    let contiguous = np.getattr("asarray")?.call((array,), Some(&kwargs))?;
    Ok(match dtype {
        Dtype::F32 => Value::F32(from_numpy::<f32>(&contiguous)?),
        Dtype::F64 => Value::F64(from_numpy::<f64>(&contiguous)?),
    })
}

/// A value of `T`, from any Python value [`to_value`] accepts.
pub fn to_tensor<T: Float>(obj: &Bound<'_, PyAny>) -> PyResult<Tensor<T>> {
    let v = to_value(obj, Some(T::DTYPE))?;
    Ok(T::unwrap(&v).expect("converted to T").clone())
}

/// Whether `obj` is a list or tuple with an adjoint Tensor somewhere inside.
fn holds_tensor(obj: &Bound<'_, PyAny>) -> bool {
    if !(obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>()) {
        return false;
    }
    match obj.try_iter() {
        Ok(items) => items.flatten().any(|i| i.cast::<crate::tensor::PyTensor>().is_ok() || holds_tensor(&i)),
        Err(_) => false,
    }
}

/// A list or tuple holding tensors, as one tensor stacked along a new first axis, so that
/// the graph of each element is kept (JAX's `jnp.array([a, b])`; PyTorch's `torch.stack`).
fn stack_items(obj: &Bound<'_, PyAny>, dtype: Option<Dtype>) -> PyResult<Value> {
    let items: Vec<Bound<'_, PyAny>> = obj.try_iter()?.collect::<PyResult<_>>()?;
    let mut values = Vec::with_capacity(items.len());
    for item in &items {
        let v = to_value(item, dtype.or(values.first().map(Value::dtype)))?;
        values.push(v);
    }
    let first = values.first().ok_or_else(|| PyValueError::new_err("an empty sequence"))?;
    if let Some(v) = values.iter().find(|v| v.shape() != first.shape()) {
        return Err(PyValueError::new_err(format!(
            "a sequence of tensors of shapes {:?} and {:?}: stacking needs one shape",
            first.shape(),
            v.shape()
        )));
    }
    crate::errors::guard(|| match first.dtype() {
        Dtype::F32 => {
            let ts: Vec<&Tensor<f32>> = values.iter().filter_map(<f32 as Float>::unwrap).collect();
            Value::F32(Tensor::stack(&ts, 0))
        }
        Dtype::F64 => {
            let ts: Vec<&Tensor<f64>> = values.iter().filter_map(<f64 as Float>::unwrap).collect();
            Value::F64(Tensor::stack(&ts, 0))
        }
    })
}
