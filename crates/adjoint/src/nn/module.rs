//! The [`Module`] trait: a differentiable function with named parameters, visited in a fixed
//! order without allocating; state dicts; saving and loading as safetensors.
//!
//! Names follow PyTorch (`"0.weight"`, `"0.bias"`, …) and a [`Linear`](super::Linear)'s
//! weight is `[out, in]`, so a state dict saved here loads into the equivalent PyTorch
//! `nn.Sequential` with `load_state_dict`, and one saved by PyTorch loads here.

use std::collections::HashMap;
use std::path::Path;

use ndarray::ArrayD;

use crate::io::{self, IoError, Tensors};
use crate::tensor::{Element, Tensor};

/// A differentiable function with named parameters.
///
/// Implement [`Module::forward`] and list the parameters once with
/// [`parameters!`](crate::parameters):
///
/// ```
/// use adjoint::nn::{Linear, Module, Init};
/// use adjoint::{parameters, Tensor};
/// /// y = tanh(x·Wᵀ + b)·s, with a learned scale s.
/// struct Scaled {
///     inner: Linear<f32>,
///     scale: Tensor<f32>,
/// }
/// impl Module<f32> for Scaled {
///     fn forward(&self, x: &Tensor<f32>) -> Tensor<f32> {
///         self.inner.forward(x).tanh() * &self.scale
///     }
///     parameters!(f32: scale; modules: inner);
/// }
/// let mut rng = adjoint::rand::rngs::StdRng::seed_from_u64(0);
/// use adjoint::rand::SeedableRng;
/// let m = Scaled { inner: Linear::new(3, 2, Init::XavierUniform, &mut rng), scale: Tensor::ones(&[2]).requires_grad() };
/// let names: Vec<String> = m.parameters().into_iter().map(|(n, _)| n).collect();
/// assert_eq!(names, ["scale", "inner.weight", "inner.bias"]);
/// ```
///
/// Modules are `Send + Sync` (their parameters are tensors), so a model can be moved to
/// another thread or shared by several threads for inference.
pub trait Module<T: Element>: Send + Sync {
    /// Applies the module to a batch (batch-major: one row per example).
    fn forward(&self, x: &Tensor<T>) -> Tensor<T>;

    /// Calls `f` with each parameter's full name and the parameter, in a fixed order; `path`
    /// holds the names of the enclosing modules (`"0."`). Written by
    /// [`parameters!`](crate::parameters).
    fn visit<'a>(&'a self, path: &mut String, f: &mut dyn FnMut(&str, &'a Tensor<T>));

    /// Like [`Module::visit`], mutably (optimisers update the parameters through it).
    fn visit_mut(&mut self, path: &mut String, f: &mut dyn FnMut(&str, &mut Tensor<T>));

    /// A short description for messages ("linear 784→100", "tanh").
    fn describe(&self) -> String {
        let full = std::any::type_name::<Self>();
        full.rsplit("::").next().unwrap_or(full).to_string()
    }

    /// The forward pass, with an input that does not fit (a wrong width, rank or id) as an
    /// error instead of a panic, for programs that serve requests (PyTorch raises; this
    /// returns). Every operation checks its shapes and says which op and shapes failed; this
    /// catches that failure at the module's boundary, so it works for any module, the
    /// user's included. The message is not printed on the calling thread, where shapes are
    /// checked (a panic hook installed once passes every other panic on to the hook that
    /// was there before).
    ///
    /// ```
    /// use adjoint::nn::{mlp, Activation, Module};
    /// use adjoint::Tensor;
    /// use rand::SeedableRng;
    /// let net = mlp::<f32>(&[3, 4, 2], Activation::TANH, None, &mut rand::rngs::StdRng::seed_from_u64(0));
    /// assert_eq!(net.try_forward(&Tensor::zeros(&[5, 3])).unwrap().shape(), [5, 2]);
    /// let e = net.try_forward(&Tensor::zeros(&[5, 7])).unwrap_err();
    /// assert!(e.message.contains("[5, 7]"), "{e}");
    /// ```
    ///
    /// # Errors
    /// [`ForwardError`] with the module's description and the failing operation's message.
    /// A build with `panic = "abort"` cannot catch, and aborts as `forward` would.
    fn try_forward(&self, x: &Tensor<T>) -> Result<Tensor<T>, ForwardError> {
        catch_failure(|| self.forward(x)).map_err(|message| ForwardError { module: self.describe(), message })
    }

    /// For a layer that attends (a transformer block): every head's attention weights for
    /// input `x`, `[batch, heads, Lq, Lk]`, a constant for pictures; `None` for the others
    /// (see [`Network::attention_maps`](super::Network::attention_maps)).
    fn attention_weights(&self, _x: &Tensor<T>) -> Option<Tensor<T>> {
        None
    }

    /// For a layer that carries state along a sequence (a recurrent layer): its output for
    /// `x` (`[batch, steps, …]`) starting from `state` (zeros when `None`), and the state after
    /// the last step, so that a sequence can be continued a piece at a time (as sampling does:
    /// see [`Network::generate`](super::Network::generate)); `None` for layers without such
    /// state, whose output for a piece does not depend on the pieces before it.
    fn forward_carrying(
        &self,
        _x: &Tensor<T>,
        _state: Option<&super::RecurrentState<T>>,
    ) -> Option<(Tensor<T>, super::RecurrentState<T>)> {
        None
    }

    /// Switches between training and evaluation behaviour, as PyTorch's `module.train(mode)`.
    /// Of the built-in layers, [`Dropout`](super::Dropout) (drops elements in training, the
    /// identity in evaluation) and [`BatchNorm`](super::BatchNorm) (the batch's statistics
    /// and running averages updated in training, the running statistics in evaluation) change;
    /// containers pass the switch on to their layers; other layers behave the same either way.
    ///
    /// Modules are built in training mode; [`Network::load`](super::Network::load) gives a
    /// network in evaluation mode, ready for inference, as does the
    /// [`Trainer`](crate::train::Trainer) after each epoch.
    fn set_training(&mut self, _training: bool) {}

    /// Evaluation behaviour (`set_training(false)`, PyTorch's `model.eval()`): call it
    /// before inference with a model you trained yourself.
    fn eval(&mut self) {
        self.set_training(false);
    }

    /// Training behaviour (`set_training(true)`, PyTorch's `model.train()`).
    fn train(&mut self) {
        self.set_training(true);
    }

    /// Calls `f` with each buffer's full name and value: state saved with the parameters
    /// but not trained, such as batch norm's running statistics (PyTorch's buffers). Most
    /// modules have none.
    fn visit_buffers(&self, _path: &mut String, _f: &mut dyn FnMut(&str, ArrayD<T>)) {}

    /// Sets each buffer from `values` under its full name (entries checked by the caller;
    /// see [`Module::load_state_dict`]).
    fn load_buffers(&mut self, _path: &mut String, _values: &HashMap<String, ArrayD<T>>) {}

    /// The parameters under their names, in the visiting order (allocates the names; use
    /// [`Module::visit`] in loops).
    fn parameters(&self) -> Vec<(String, &Tensor<T>)> {
        let mut out = Vec::new();
        self.visit(&mut String::new(), &mut |name, p| out.push((name.to_string(), p)));
        out
    }

    /// Forgets every parameter's accumulated gradient.
    fn zero_grad(&self) {
        self.visit(&mut String::new(), &mut |_, p| p.zero_grad());
    }

    /// The number of numbers in all parameters.
    fn parameter_count(&self) -> usize {
        let mut n = 0;
        self.visit(&mut String::new(), &mut |_, p| n += p.len());
        n
    }

    /// The parameters' and buffers' values under their names (PyTorch's `state_dict`).
    fn state_dict(&self) -> Vec<(String, ArrayD<T>)> {
        let mut out = Vec::new();
        self.visit(&mut String::new(), &mut |name, p| out.push((name.to_string(), p.to_array())));
        self.visit_buffers(&mut String::new(), &mut |name, b| out.push((name.to_string(), b)));
        out
    }

    /// Sets every parameter from `values` (PyTorch's `load_state_dict`), keeping the
    /// parameters' identities. Nothing is changed unless every parameter is present with its
    /// shape and no unknown name is given.
    ///
    /// # Errors
    /// [`StateDictError`] naming a missing, unexpected or mis-shaped entry.
    fn load_state_dict(&mut self, values: &HashMap<String, ArrayD<T>>) -> Result<(), StateDictError> {
        let report = self.check_state_dict(values)?;
        if let Some(name) = report.missing.into_iter().next() {
            return Err(StateDictError::Missing(name));
        }
        if let Some(name) = report.unexpected.into_iter().next() {
            return Err(StateDictError::Unexpected(name));
        }
        self.set_state_dict(values);
        Ok(())
    }

    /// Sets the parameters and buffers `values` has and reports the names it lacks and the
    /// names it has that the module does not (PyTorch's `load_state_dict(strict=False)`).
    /// An entry of the wrong shape is still an error, and then nothing is changed.
    ///
    /// # Errors
    /// [`StateDictError::Shape`] for the first entry whose shape differs.
    fn load_state_dict_non_strict(
        &mut self,
        values: &HashMap<String, ArrayD<T>>,
    ) -> Result<LoadReport, StateDictError> {
        let report = self.check_state_dict(values)?;
        self.set_state_dict(values);
        Ok(report)
    }

    /// What loading `values` would find missing and unexpected (sorted), or the first entry
    /// whose shape differs. Optional buffers (`num_batches_tracked`) are never missing.
    #[doc(hidden)]
    fn check_state_dict(&self, values: &HashMap<String, ArrayD<T>>) -> Result<LoadReport, StateDictError> {
        let mut expected: Vec<(String, Vec<usize>)> = Vec::new();
        self.visit(&mut String::new(), &mut |name, p| expected.push((name.to_string(), p.shape().to_vec())));
        self.visit_buffers(&mut String::new(), &mut |name, b| expected.push((name.to_string(), b.shape().to_vec())));
        let mut report = LoadReport::default();
        for (name, shape) in &expected {
            match values.get(name) {
                None if io::is_integer_buffer(name) => {}
                None => report.missing.push(name.clone()),
                Some(v) if v.shape() != shape.as_slice() => {
                    return Err(StateDictError::Shape {
                        name: name.clone(),
                        found: v.shape().to_vec(),
                        expected: shape.clone(),
                    })
                }
                Some(_) => {}
            }
        }
        report.unexpected = values.keys().filter(|k| !expected.iter().any(|(n, _)| n == *k)).cloned().collect();
        report.missing.sort();
        report.unexpected.sort();
        Ok(report)
    }

    /// Sets every parameter and buffer `values` names (shapes already checked).
    #[doc(hidden)]
    fn set_state_dict(&mut self, values: &HashMap<String, ArrayD<T>>) {
        self.visit_mut(&mut String::new(), &mut |name, p| {
            if let Some(v) = values.get(name) {
                p.set_value(v.clone())
            }
        });
        self.load_buffers(&mut String::new(), values);
    }

    /// Saves the state dict as a safetensors file (atomically), in this element type.
    ///
    /// # Errors
    /// If the file cannot be written.
    fn save(&self, path: &Path) -> Result<(), IoError>
    where
        Self: Sized,
    {
        let tensors: Tensors<T> = self.state_dict();
        io::save(path, &tensors, &HashMap::new())
    }

    /// Loads a state dict saved by [`Module::save`] or by PyTorch's
    /// `safetensors.torch.save_file(model.state_dict(), path)` for an equivalent model.
    ///
    /// # Errors
    /// If the file cannot be read, is not valid safetensors, holds another element type, or
    /// does not fit the module (see [`Module::load_state_dict`]).
    fn load(&mut self, path: &Path) -> Result<(), IoError>
    where
        Self: Sized,
    {
        let file = io::load::<T>(path, &Default::default())?;
        self.load_state_dict(&file.tensors).map_err(|e| IoError::Invalid { path: path.into(), message: e.to_string() })
    }

    /// Like [`Module::load`], but a file that lacks some of the module's tensors or holds
    /// others loads what fits and says what did not ([`Module::load_state_dict_non_strict`]).
    ///
    /// # Errors
    /// If the file cannot be read or is not valid safetensors, or an entry's shape differs.
    fn load_non_strict(&mut self, path: &Path) -> Result<LoadReport, IoError>
    where
        Self: Sized,
    {
        let file = io::load::<T>(path, &Default::default())?;
        self.load_state_dict_non_strict(&file.tensors)
            .map_err(|e| IoError::Invalid { path: path.into(), message: e.to_string() })
    }
}

/// What a non-strict load found ([`Module::load_state_dict_non_strict`]), as PyTorch's
/// `_IncompatibleKeys`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// The module's parameters and buffers the state dict lacks (left as they were).
    pub missing: Vec<String>,
    /// The state dict's entries that name nothing in the module (ignored).
    pub unexpected: Vec<String>,
}

/// A forward pass refused its input ([`Module::try_forward`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{module}: {message}")]
pub struct ForwardError {
    /// The module's description ([`Module::describe`]).
    pub module: String,
    /// What failed, naming the operation and the shapes.
    pub message: String,
}

thread_local! {
    /// Depth of `catch_failure` calls on this thread: while above 0, failures are caught
    /// and not printed.
    static CATCHING: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Runs `f`, turning a failure (a panic with a message) into `Err(message)` without
/// printing it. Panics that carry something else (an anomaly report) go on unwinding.
fn catch_failure<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    static QUIET_HOOK: std::sync::Once = std::sync::Once::new();
    QUIET_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // Only a failure's message is kept quiet; anything else (an anomaly report)
            // is reported as before. `try_with`: no panic in the hook during teardown.
            let catching = CATCHING.try_with(|c| c.get()).unwrap_or(0) > 0;
            let message = info.payload().is::<String>() || info.payload().is::<&'static str>();
            if !(catching && message) {
                previous(info);
            }
        }));
    });
    CATCHING.with(|c| c.set(c.get() + 1));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    CATCHING.with(|c| c.set(c.get() - 1));
    result.map_err(|payload| match payload.downcast::<String>() {
        Ok(message) => *message,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(message) => message.to_string(),
            Err(other) => std::panic::resume_unwind(other),
        },
    })
}

/// Why a state dict does not fit a module.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateDictError {
    /// A parameter has no entry.
    #[error("tensor '{0}' is missing")]
    Missing(String),
    /// An entry names no parameter.
    #[error("tensor '{0}' is not a parameter of this model")]
    Unexpected(String),
    /// An entry has another shape than its parameter.
    #[error("tensor '{name}' has shape {found:?}, the model needs {expected:?}")]
    Shape {
        /// The parameter.
        name: String,
        /// The entry's shape.
        found: Vec<usize>,
        /// The parameter's shape.
        expected: Vec<usize>,
    },
}

/// Runs `inner` with `name` (and a `.` if `nested`) appended to `path`, then restores it; the
/// buffer is reused, so visiting does not allocate once it has grown.
pub fn with_name<R>(path: &mut String, name: &str, nested: bool, inner: impl FnOnce(&mut String) -> R) -> R {
    let len = path.len();
    path.push_str(name);
    if nested {
        path.push('.');
    }
    let r = inner(path);
    path.truncate(len);
    r
}

/// Visits a parameter tensor under `name` (for [`parameters!`](crate::parameters)).
pub fn visit_tensor<'a, T: Element>(
    t: &'a Tensor<T>,
    path: &mut String,
    name: &str,
    f: &mut dyn FnMut(&str, &'a Tensor<T>),
) {
    with_name(path, name, false, |p| f(p, t));
}

/// Visits a parameter tensor mutably under `name` (for [`parameters!`](crate::parameters)).
pub fn visit_tensor_mut<T: Element>(
    t: &mut Tensor<T>,
    path: &mut String,
    name: &str,
    f: &mut dyn FnMut(&str, &mut Tensor<T>),
) {
    with_name(path, name, false, |p| f(p, t));
}

/// Visits a sub-module's parameters under `name.` (for [`parameters!`](crate::parameters)).
pub fn visit_module<'a, T: Element, M: Module<T> + ?Sized>(
    m: &'a M,
    path: &mut String,
    name: &str,
    f: &mut dyn FnMut(&str, &'a Tensor<T>),
) {
    with_name(path, name, true, |p| m.visit(p, f));
}

/// Visits a sub-module's parameters mutably under `name.` (for [`parameters!`](crate::parameters)).
pub fn visit_module_mut<T: Element, M: Module<T> + ?Sized>(
    m: &mut M,
    path: &mut String,
    name: &str,
    f: &mut dyn FnMut(&str, &mut Tensor<T>),
) {
    with_name(path, name, true, |p| m.visit_mut(p, f));
}

/// Writes a module's [`Module::visit`] and [`Module::visit_mut`] from one list of fields:
/// parameter tensors, then (after `; modules:`) sub-modules, named by their fields
/// (`"inner.weight"`). Give the element type first: `parameters!(f32: weight, bias)`,
/// `parameters!(f32: scale; modules: inner)`, or `parameters!(T: …)` in a generic impl.
///
/// With sub-modules it also writes [`Module::set_training`], [`Module::visit_buffers`] and
/// [`Module::load_buffers`], passing each on to the sub-modules as PyTorch's `train()`,
/// `eval()` and `state_dict()` reach a module's children: list a [`Dropout`](super::Dropout)
/// or a [`BatchNorm`](super::BatchNorm) field there too (it adds no parameter names, but
/// `eval()` then reaches it and its running statistics are saved and loaded). To write
/// `set_training` yourself, end the list with `; own_set_training`:
///
/// ```
/// use adjoint::nn::{BatchNorm, Linear, Module, Init};
/// use adjoint::{parameters, Tensor};
/// /// A head fine-tuned over a frozen batch norm: the norm stays in evaluation mode.
/// struct Head {
///     norm: BatchNorm<f32>,
///     fc: Linear<f32>,
/// }
/// impl Module<f32> for Head {
///     fn forward(&self, x: &Tensor<f32>) -> Tensor<f32> {
///         self.fc.forward(&self.norm.forward(x))
///     }
///     fn set_training(&mut self, training: bool) {
///         self.fc.set_training(training);
///         self.norm.set_training(false);
///     }
///     parameters!(f32: ; modules: norm, fc; own_set_training);
/// }
/// let mut rng = <adjoint::rand::rngs::StdRng as adjoint::rand::SeedableRng>::seed_from_u64(0);
/// let mut head = Head { norm: BatchNorm::new(3), fc: Linear::new(3, 2, Init::XavierUniform, &mut rng) };
/// head.train();
/// assert!(!head.norm.is_training());
/// // The running statistics are saved all the same.
/// assert!(head.state_dict().iter().any(|(name, _)| name == "norm.running_mean"));
/// ```
#[macro_export]
macro_rules! parameters {
    // Internal rules first, so that `@…` is never tried as a type.
    (@visit $t:ty : $($tensor:ident),* ; $($module:ident),*) => {
        fn visit<'a>(&'a self, path: &mut ::std::string::String, f: &mut dyn FnMut(&str, &'a $crate::Tensor<$t>)) {
            $( $crate::nn::module::visit_tensor(&self.$tensor, path, stringify!($tensor), f); )*
            $( $crate::nn::module::visit_module(&self.$module, path, stringify!($module), f); )*
        }
        fn visit_mut(&mut self, path: &mut ::std::string::String, f: &mut dyn FnMut(&str, &mut $crate::Tensor<$t>)) {
            $( $crate::nn::module::visit_tensor_mut(&mut self.$tensor, path, stringify!($tensor), f); )*
            $( $crate::nn::module::visit_module_mut(&mut self.$module, path, stringify!($module), f); )*
        }
    };
    (@buffers $t:ty : $($module:ident),+) => {
        fn visit_buffers(&self, path: &mut ::std::string::String, f: &mut dyn FnMut(&str, $crate::ndarray::ArrayD<$t>)) {
            $( $crate::nn::module::with_name(path, stringify!($module), true, |p| {
                $crate::nn::Module::<$t>::visit_buffers(&self.$module, p, f)
            }); )+
        }
        fn load_buffers(
            &mut self,
            path: &mut ::std::string::String,
            values: &::std::collections::HashMap<::std::string::String, $crate::ndarray::ArrayD<$t>>,
        ) {
            $( $crate::nn::module::with_name(path, stringify!($module), true, |p| {
                $crate::nn::Module::<$t>::load_buffers(&mut self.$module, p, values)
            }); )+
        }
    };
    // With sub-modules whose training switch the module passes on itself (a hand-written
    // `set_training`, e.g. to keep a batch norm frozen while fine-tuning).
    ($t:ty : $($tensor:ident),* ; modules: $($module:ident),+ ; own_set_training $(,)?) => {
        $crate::parameters!(@visit $t: $($tensor),* ; $($module),+);
        $crate::parameters!(@buffers $t: $($module),+);
    };
    ($t:ty : $($tensor:ident),* ; modules: $($module:ident),+ $(,)?) => {
        $crate::parameters!(@visit $t: $($tensor),* ; $($module),+);
        $crate::parameters!(@buffers $t: $($module),+);
        fn set_training(&mut self, training: bool) {
            $( $crate::nn::Module::<$t>::set_training(&mut self.$module, training); )+
        }
    };
    ($t:ty : $($tensor:ident),* $(,)?) => {
        $crate::parameters!(@visit $t: $($tensor),* ; );
    };
}
