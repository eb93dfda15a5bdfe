//! The teaching pages in a notebook: `trace`, `backprop` and `inspect` return a [`Page`]
//! whose `_repr_html_` shows the same stepping page as the CLI's `--html`.
//!
//! Each page is shown inside its own `<iframe srcdoc=…>`: the page is one self-contained
//! document (styles, data and script inline, nothing fetched), its element ids and key
//! handlers stay inside the frame, so several pages in one notebook never clash, and the
//! keys step the page that has the focus (click it first).

use std::path::PathBuf;

use adjoint::nn::{Activation, Architecture, Init, Network};
use adjoint::Tensor;
use adjoint_explain::trace::{Trace, TraceOptions};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::errors::guard;
use crate::tensor::PyTensor;
use crate::value::Value;

/// One of the teaching pages: shown inline in Jupyter, `save(path)` writes the HTML file.
#[pyclass(frozen, module = "adjoint")]
pub struct Page {
    html: String,
    title: String,
    height: u32,
    /// The trace's rows as text (for `print(page)`), or the page's subtitle.
    text: String,
}

fn escape_attribute(s: &str) -> String {
    s.replace('&', "&amp;").replace('"', "&quot;").replace('<', "&lt;").replace('>', "&gt;")
}

#[pymethods]
impl Page {
    /// The whole page as one HTML document (what `save` writes).
    #[getter]
    fn html(&self) -> &str {
        &self.html
    }

    /// The page's title.
    #[getter]
    fn title(&self) -> &str {
        &self.title
    }

    /// The page in a frame of its own, for Jupyter.
    fn _repr_html_(&self) -> String {
        format!(
            "<iframe class=\"adjoint-page\" title=\"{}\" srcdoc=\"{}\" style=\"width:100%;height:{}px;border:1px solid #ddd\" \
             loading=\"eager\"></iframe>",
            escape_attribute(&self.title),
            escape_attribute(&self.html),
            self.height
        )
    }

    /// save(path, force=False): writes the page as an HTML file; an existing file is kept
    /// unless `force` (returns the path).
    #[pyo3(signature = (path, force = false))]
    fn save(&self, path: PathBuf, force: bool) -> PyResult<PathBuf> {
        crate::errors::check_target(&path, force)?;
        std::fs::write(&path, &self.html)
            .map_err(|e| pyo3::exceptions::PyOSError::new_err(format!("{}: {e}", path.display())))?;
        Ok(path)
    }

    fn __str__(&self) -> String {
        self.text.clone()
    }

    fn __repr__(&self) -> String {
        format!("<adjoint.Page {:?}>", self.title)
    }
}

fn page(p: &adjoint_explain::html::Page, height: u32, text: String) -> Page {
    Page { html: p.to_html(), title: p.title.clone(), height, text }
}

/// The arguments' names of a Python function, in order.
fn parameter_names(f: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    let inspect = f.py().import("inspect")?;
    let signature = inspect.getattr("signature")?.call1((f,))?;
    let parameters = signature.getattr("parameters")?.call_method0("keys")?;
    parameters.try_iter()?.map(|p| p?.extract::<String>()).collect()
}

fn number_text(v: f64) -> String {
    format!("{v}")
}

/// trace(f, *, wrt=None, mode="both", degrees=False, **at)
///
/// The evaluation trace of `f` at the given values, as the lectures write it (s1 = x,
/// s2 = y, s3 = s1·s2, …), with every tangent (forward mode seeded on `wrt`, the first
/// variable by default) and every adjoint (reverse mode). `f` is an expression string in
/// the CLI's language (`"(x*y + sin(x) + 4) * (3*y^2 + 6)"`) or a Python function of scalar
/// arguments written with adjoint's operations:
///
/// >>> adjoint.trace(lambda x, y: (x*y + adjoint.sin(x) + 4) * (3*y**2 + 6), x=2, y=8)
#[pyfunction]
#[pyo3(signature = (f, *, wrt = None, mode = "both", degrees = false, **at))]
pub fn trace(
    f: &Bound<'_, PyAny>,
    wrt: Option<String>,
    mode: &str,
    degrees: bool,
    at: Option<&Bound<'_, PyDict>>,
) -> PyResult<Page> {
    let (forward, reverse) = match mode {
        "both" => (true, true),
        "forward" => (true, false),
        "reverse" => (false, true),
        other => {
            return Err(PyValueError::new_err(format!("mode {other:?}: choose \"both\", \"forward\" or \"reverse\"")))
        }
    };
    let mut values: Vec<(String, f64)> = Vec::new();
    if let Some(at) = at {
        for (k, v) in at.iter() {
            let name: String = k.extract()?;
            let value: f64 = v.extract().map_err(|_| PyTypeError::new_err(format!("{name}= must be a number")))?;
            values.push((name, value));
        }
    }
    let (trace, shown) = if let Ok(expression) = f.extract::<String>() {
        let expr = adjoint::expr::Expr::parse(&expression).map_err(|e| PyValueError::new_err(e.to_string()))?;
        let variables = expr.variables();
        if let Some(missing) = variables.iter().find(|v| !values.iter().any(|(n, _)| n == *v)) {
            return Err(PyValueError::new_err(format!(
                "no value for {missing}: pass {missing}=… (e.g. trace(f, x=2, y=8))"
            )));
        }
        values.retain(|(n, _)| variables.contains(n));
        values.sort_by_key(|(n, _)| variables.iter().position(|v| v == n));
        let wrt = check_wrt(wrt, &values, forward)?;
        let options = TraceOptions { forward_wrt: wrt, reverse, degrees };
        (Trace::record(&expr, &values, &options).map_err(|e| PyValueError::new_err(e.to_string()))?, expression)
    } else if f.is_callable() {
        if degrees {
            return Err(PyValueError::new_err("degrees=True works with expression strings; convert in the function"));
        }
        let names = parameter_names(f)?;
        let mut ordered = Vec::new();
        for name in &names {
            let v = values
                .iter()
                .find(|(n, _)| n == name)
                .ok_or_else(|| PyValueError::new_err(format!("no value for the argument {name}: pass {name}=…")))?;
            ordered.push(v.clone());
        }
        if let Some((extra, _)) = values.iter().find(|(n, _)| !names.contains(n)) {
            return Err(PyValueError::new_err(format!("the function has no argument {extra}")));
        }
        let wrt = check_wrt(wrt, &ordered, forward)?;
        let leaves: Vec<(String, Tensor<f64>)> = ordered.iter().map(|(n, v)| (n.clone(), Tensor::var(*v))).collect();
        let py = f.py();
        let args: Vec<Py<PyAny>> = leaves
            .iter()
            .map(|(_, t)| Py::new(py, PyTensor::new(Value::F64(t.clone()))).map(Py::into_any))
            .collect::<PyResult<_>>()?;
        // As under a transform: math.sin(x) or float(x) would silently leave the graph.
        let transforming = crate::errors::Transforming::enter();
        let out = f.call1(PyTuple::new(py, args)?)?;
        drop(transforming);
        let out = crate::value::to_tensor::<f64>(&out)?;
        let options = TraceOptions { forward_wrt: wrt, reverse, degrees: false };
        let trace = Trace::from_tensors(&out, &leaves, &options).map_err(PyValueError::new_err)?;
        let name = f.getattr("__name__").and_then(|n| n.extract::<String>()).unwrap_or_else(|_| "f".into());
        (trace, format!("{name}({})", names.join(", ")))
    } else {
        return Err(PyTypeError::new_err("trace takes an expression string or a function"));
    };
    let listed: Vec<String> = values.iter().map(|(n, v)| format!("{n} = {}", number_text(*v))).collect();
    let unit = if degrees { "degrees" } else { "radians" };
    let subtitle = format!("f = {shown} at {} ({unit})", listed.join(", "));
    let html = adjoint_explain::html::trace_page(&trace, "Forward and reverse mode, step by step", &subtitle);
    let height = (560 + 34 * trace.steps.len()).clamp(700, 1400) as u32;
    Ok(page(&html, height, format!("{subtitle}\n\n{}", trace.to_text())))
}

fn check_wrt(wrt: Option<String>, values: &[(String, f64)], forward: bool) -> PyResult<Option<String>> {
    if !forward {
        return Ok(None);
    }
    match wrt {
        Some(w) if values.iter().any(|(n, _)| *n == w) => Ok(Some(w)),
        Some(w) => Err(PyValueError::new_err(format!("wrt={w:?} is not one of the variables"))),
        None => Ok(values.first().map(|(n, _)| n.clone())),
    }
}

fn activation_of(name: &str) -> PyResult<Activation> {
    name.parse::<Activation>().map_err(|e| PyValueError::new_err(e.to_string()))
}

/// backprop(layers=(4, 5, 3), activation="sigmoid", batch=2, seed=1)
///
/// A small network's backward pass laid open: every layer's zˡ, aˡ, δˡ and ∂C/∂Wˡ, the four
/// equations of backpropagation, each checked against the engine's reverse mode.
#[pyfunction]
#[pyo3(signature = (layers = vec![4, 5, 3], activation = "sigmoid", batch = 2, seed = 1))]
pub fn backprop(py: Python<'_>, layers: Vec<usize>, activation: &str, batch: usize, seed: u64) -> PyResult<Page> {
    let act = activation_of(activation)?;
    if matches!(act, Activation::Softmax) {
        return Err(PyValueError::new_err("softmax is not elementwise; pick sigmoid, tanh, relu or leaky-relu"));
    }
    if layers.len() < 2 || layers.contains(&0) || batch == 0 {
        return Err(PyValueError::new_err("layers needs at least two positive widths and batch at least 1"));
    }
    let numbers: u128 = layers
        .windows(2)
        .map(|w| w[0] as u128 * w[1] as u128 + batch as u128 * (w[0] as u128 + 3 * w[1] as u128))
        .sum();
    if numbers > 20_000 {
        return Err(PyValueError::new_err(format!(
            "the page shows every number; {numbers} are too many (choose smaller layers or batch)"
        )));
    }
    let reports = py.detach(|| guard(|| adjoint_explain::backprop::explain(&layers, act, batch, seed)))?;
    let widths = layers.iter().map(ToString::to_string).collect::<Vec<_>>().join("-");
    let subtitle = format!("network {widths} with {act} on every layer, batch {batch}, C = 1/(2B) Σ ‖aᴸ − y‖²");
    let html = adjoint_explain::html::backprop_page(&reports, "Backpropagation, layer by layer", &subtitle);
    Ok(page(&html, 900, subtitle))
}

/// inspect(layers=(784, 500, 500, 500, 500, 500, 10), activation="tanh",
///         inits=("normal:0.01", "xavier", "he"), batch=256, seed=1, arch=None)
///
/// Activations and gradients per layer at initialisation on a batch of the bundled MNIST,
/// one tab per initialiser: the page where Glorot & Bengio's collapse shows (tanh with
/// normal:0.01 weights). `arch` takes the CLI's `--arch` language instead of `layers`.
#[pyfunction]
#[pyo3(signature = (layers = None, activation = "tanh", inits = None, batch = 256, seed = 1, arch = None))]
pub fn inspect(
    py: Python<'_>,
    layers: Option<Vec<usize>>,
    activation: &str,
    inits: Option<&Bound<'_, PyAny>>,
    batch: usize,
    seed: u64,
    arch: Option<String>,
) -> PyResult<Page> {
    if layers.is_some() && arch.is_some() {
        return Err(PyValueError::new_err("give layers or arch, not both"));
    }
    let layers = layers.unwrap_or_else(|| vec![784, 500, 500, 500, 500, 500, 10]);
    let inits: Vec<String> = match inits {
        None => vec!["normal:0.01".into(), "xavier".into(), "he".into()],
        Some(i) if i.is_none() => vec!["normal:0.01".into(), "xavier".into(), "he".into()],
        Some(i) => match i.extract::<String>() {
            Ok(one) => vec![one],
            Err(_) => {
                i.extract().map_err(|_| PyTypeError::new_err("inits is an initialiser name or a list of them"))?
            }
        },
    };
    let inits: Vec<Init> = inits
        .iter()
        .map(|s| s.parse::<Init>().map_err(|e| PyValueError::new_err(e.to_string())))
        .collect::<PyResult<_>>()?;
    if inits.is_empty() {
        return Err(PyValueError::new_err("inits needs at least one initialiser"));
    }
    if batch == 0 {
        return Err(PyValueError::new_err("batch must be at least 1"));
    }
    let batch = batch.min(10_000);
    let act = activation_of(activation)?;
    let architectures: Vec<(Init, Architecture)> = match &arch {
        Some(spec) => inits
            .iter()
            .map(|&i| {
                Architecture::parse(spec, &[1, 28, 28], Some(i))
                    .map(|a| (i, a))
                    .map_err(|e| PyValueError::new_err(format!("arch: {e}")))
            })
            .collect::<PyResult<_>>()?,
        None => {
            if layers.len() < 2 || layers.contains(&0) || layers[0] != 784 || *layers.last().unwrap_or(&0) < 10 {
                return Err(PyValueError::new_err(format!(
                    "layers must start at 784 (MNIST's pixels) and end with at least 10 (its classes), got {layers:?}"
                )));
            }
            inits.iter().map(|&i| (i, Architecture::mlp(&layers, act, Some(i)))).collect()
        }
    };
    if architectures[0].1.parameter_count() > crate::network::MAX_PARAMETERS {
        return Err(PyValueError::new_err(format!(
            "{} parameters is too many for inspect",
            architectures[0].1.parameter_count()
        )));
    }
    let activation_shown = architectures[0].1.activation().unwrap_or(act);
    let results = py.detach(|| -> PyResult<Vec<(String, Vec<adjoint::nn::inspect::LayerStats>)>> {
        let (_, test) = crate::mnist::bundled_limited(Some(0), Some(batch))?;
        let first = test.rows(0, batch.min(test.len()));
        architectures
            .iter()
            .map(|(init, a)| {
                let net = Network::<f32>::new(a.clone(), seed).map_err(|e| crate::errors::network_error(&e))?;
                let stats =
                    guard(|| adjoint::nn::inspect::inspect(&net.model, activation_shown, &first.x, &first.labels, 30))?;
                Ok((init.to_string(), stats))
            })
            .collect()
    })?;
    let title = match &arch {
        Some(spec) => spec.clone(),
        None => format!("{} with {act}", layers.iter().map(ToString::to_string).collect::<Vec<_>>().join("-")),
    };
    let subtitle = format!("{title}, at initialisation, on a batch of {batch} MNIST images");
    let html = adjoint_explain::html::inspect_page(
        &results,
        "Activations and gradients per layer at initialisation",
        &subtitle,
    );
    Ok(page(&html, 900, subtitle))
}

/// Registers the pages.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Page>()?;
    m.add_function(wrap_pyfunction!(trace, m)?)?;
    m.add_function(wrap_pyfunction!(backprop, m)?)?;
    m.add_function(wrap_pyfunction!(inspect, m)?)?;
    Ok(())
}
