//! Errors cross into Python as exceptions, never as a crash of the interpreter.
//!
//! The library panics only on programmer errors (a shape that does not fit, an axis out of
//! range), naming the op and the shapes. From Python those are a caller's mistakes too, so
//! [`guard`] runs library calls under `catch_unwind` and turns such a panic into a
//! `ValueError` with the library's message; the panic hook stays quiet for panics caught
//! this way (a notebook shows the exception, not a Rust backtrace on stderr).
//!
//! A Python exception raised inside a callback (the function given to `grad`) is kept in a
//! [`Pending`] slot while the Rust side finishes with a stand-in value, and raised as it
//! was once the call returns to Python.

use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;

use pyo3::exceptions::{PyFileNotFoundError, PyOSError, PyRuntimeError, PyValueError};
use pyo3::PyErr;

thread_local! {
    /// How many [`guard`]s this thread is inside (callbacks nest them).
    static GUARDED: Cell<usize> = const { Cell::new(0) };
}

fn install_quiet_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if GUARDED.with(Cell::get) == 0 {
                previous(info);
            }
        }));
    });
}

/// The text of a panic's payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else {
        "the library stopped on an unexpected condition".to_string()
    }
}

/// Runs `f`; a panic inside becomes a `ValueError` carrying the library's message.
pub fn guard<R>(f: impl FnOnce() -> R) -> Result<R, PyErr> {
    install_quiet_hook();
    GUARDED.with(|g| g.set(g.get() + 1));
    let result = catch_unwind(AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(g.get() - 1));
    result.map_err(|payload| PyValueError::new_err(panic_message(payload.as_ref())))
}

/// A Python exception raised inside a callback, kept until the call returns to Python.
#[derive(Default)]
pub struct Pending(RefCell<Option<PyErr>>);

impl Pending {
    /// Keeps the first error (later ones are consequences of the stand-in values).
    pub fn keep(&self, e: PyErr) {
        let mut slot = self.0.borrow_mut();
        if slot.is_none() {
            *slot = Some(e);
        }
    }

    /// Whether a callback failed.
    pub fn failed(&self) -> bool {
        self.0.borrow().is_some()
    }

    /// Like [`Pending::settle`], leaving the slot empty for further calls.
    pub fn check<R>(&self, result: Result<R, PyErr>) -> Result<R, PyErr> {
        match self.0.borrow_mut().take() {
            Some(e) => Err(e),
            None => result,
        }
    }

    /// The callback's error if there was one (it explains whatever followed), else `result`.
    pub fn settle<R>(self, result: Result<R, PyErr>) -> Result<R, PyErr> {
        match self.0.into_inner() {
            Some(e) => Err(e),
            None => result,
        }
    }
}

/// A library I/O or format error as the Python exception a Python user expects.
pub fn io_error(e: &adjoint::io::IoError) -> PyErr {
    use adjoint::io::IoError;
    let message = e.to_string();
    match e {
        IoError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            PyFileNotFoundError::new_err(message)
        }
        IoError::Io { .. } => PyOSError::new_err(message),
        _ => PyValueError::new_err(message),
    }
}

/// A network error: I/O as [`io_error`], the rest `ValueError`.
pub fn network_error(e: &adjoint::nn::NetworkError) -> PyErr {
    match e {
        adjoint::nn::NetworkError::Io(io) => io_error(io),
        other => PyValueError::new_err(other.to_string()),
    }
}

/// A training error: bad settings or data are `ValueError`, the rest `RuntimeError`.
pub fn train_error(e: &adjoint::train::TrainError) -> PyErr {
    use adjoint::train::TrainError;
    match e {
        TrainError::Mismatch(_) | TrainError::Threads { .. } => PyValueError::new_err(e.to_string()),
        TrainError::Io(io) => io_error(io),
        TrainError::Network(n) => network_error(n),
        _ => PyRuntimeError::new_err(e.to_string()),
    }
}

thread_local! {
    /// How many transforms (or traced functions) this thread is inside.
    static TRANSFORMING: Cell<usize> = const { Cell::new(0) };
}

/// While alive: this thread is running a function under a transform. Recording is on inside
/// (an outer `with no_grad():` must not turn a transform's derivatives into zeros, as
/// `torch.func.grad` ignores it too), and tracked values refuse to become Python numbers or
/// NumPy arrays, where their derivatives would silently be lost.
pub struct Transforming {
    recording: bool,
}

impl Transforming {
    /// Enters a transform.
    pub fn enter() -> Self {
        TRANSFORMING.with(|t| t.set(t.get() + 1));
        Transforming { recording: adjoint::autodiff::set_recording(true) }
    }

    /// Whether this thread is inside a transform.
    pub fn inside() -> bool {
        TRANSFORMING.with(Cell::get) > 0
    }

    /// Whether this is the outermost transform: its results need not stay in any graph
    /// (unless the caller passed tracked values, to differentiate through the transform).
    pub fn outermost() -> bool {
        TRANSFORMING.with(Cell::get) == 1
    }
}

impl Drop for Transforming {
    fn drop(&mut self) {
        TRANSFORMING.with(|t| t.set(t.get() - 1));
        adjoint::autodiff::set_recording(self.recording);
    }
}

/// Refuses to write over `path` unless `force` (nothing a user made is overwritten without
/// it), and refuses a folder.
pub fn check_target(path: &std::path::Path, force: bool) -> Result<(), PyErr> {
    if path.is_dir() {
        return Err(PyValueError::new_err(format!("{} is a folder; give a file name", path.display())));
    }
    if path.exists() && !force {
        return Err(pyo3::exceptions::PyFileExistsError::new_err(format!(
            "{} exists; pass force=True to overwrite it",
            path.display()
        )));
    }
    Ok(())
}
