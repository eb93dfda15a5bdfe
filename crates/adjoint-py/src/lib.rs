//! The Python package `adjoint`: this extension module (`adjoint._adjoint`) and the Python
//! files around it in `python/adjoint`.
//!
//! - [`tensor`]: `adjoint.Tensor` and the functions on tensors;
//! - [`transforms`]: `grad`, `value_and_grad`, `jvp`, `vjp`, `jacobian`, `hessian`, `hvp`,
//!   `check_grads` over Python callables;
//! - [`network`]: `adjoint.Network`, trained by the library's `Trainer`;
//! - [`pages`]: the teaching pages, inline in Jupyter.
//!
//! Invariants: no library panic reaches Python as a crash ([`errors::guard`]); every tensor a
//! Python object holds keeps its graph alive exactly as a Rust value would.

mod errors;
mod mnist;
mod network;
mod pages;
mod tensor;
mod transforms;
mod value;

use pyo3::prelude::*;

#[pymodule]
fn _adjoint(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    tensor::register(m)?;
    transforms::register(m)?;
    network::register(m)?;
    pages::register(m)?;
    Ok(())
}
