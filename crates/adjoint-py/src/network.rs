//! `adjoint.Network`: networks built from the `--arch` language or layer widths, trained by
//! the library's `Trainer` on NumPy arrays or the bundled MNIST, saved and loaded as the
//! same safetensors files as the CLI's run folders.
//!
//! Training runs on a thread of its own without the interpreter lock; the calling thread
//! keeps the lock only to print progress and to notice Ctrl-C (Python delivers signals to
//! the main thread only). An interrupt stops the epoch after its current step, keeps its
//! progress in the trainer (the next `fit` continues exactly there) and raises
//! `KeyboardInterrupt`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::Duration;

use adjoint::data::Dataset;
use adjoint::nn::{Activation, Architecture, Init, Module, Network};
use adjoint::optim::{LrSchedule, Optimizer, OptimizerKind, Scheduler};
use adjoint::train::{EpochMetrics, Stopped, TrainError, TrainSettings, Trainer};
use ndarray::Array2;
use numpy::{PyArray1, PyArrayMethods};
use pyo3::exceptions::{PyKeyboardInterrupt, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::errors::{guard, network_error, train_error};
use crate::tensor::PyTensor;
use crate::value::{to_tensor, Value};

/// The most parameters a network built from Python may have (as the CLI's limit).
pub const MAX_PARAMETERS: usize = 200_000_000;

/// How the optimiser was asked for: a later `fit` with the same recipe continues its state.
#[derive(Clone, PartialEq, Debug)]
struct Recipe {
    optimizer: OptimizerKind,
    lr: f64,
    schedule: LrSchedule,
    warmup: usize,
    per_step: bool,
}

/// A neural network: `Network("fc:100,tanh,fc:10")`, `Network([784, 100, 10])`,
/// `Network.load("runs/lecture")`.
///
/// The state sits behind a lock, so several Python threads may use one network: calls wait
/// for each other (with the interpreter lock released while they wait) instead of failing.
#[pyclass(name = "Network", module = "adjoint", frozen)]
pub struct PyNetwork {
    state: Mutex<State>,
}

pub(crate) struct State {
    /// The network when it is not inside a trainer.
    network: Option<Network<f32>>,
    /// The trainer after the first `fit` (it owns the network, optimiser state and history).
    trainer: Option<(Trainer, Recipe)>,
    /// The mode `train()`/`eval()` chose (PyTorch's modules start in training mode).
    training: bool,
}

/// Rows per forward pass in `predict`, so that a large array is not one huge batch.
const PREDICT_ROWS: usize = 1024;

impl PyNetwork {
    fn wrap(network: Network<f32>) -> Self {
        PyNetwork { state: Mutex::new(State { network: Some(network), trainer: None, training: true }) }
    }

    /// The state, waiting for another thread's call to finish with the interpreter lock
    /// released (a `fit` on another thread holds it for the whole training).
    pub(crate) fn lock(&self, py: Python<'_>) -> MutexGuard<'_, State> {
        loop {
            match self.state.try_lock() {
                Ok(guard) => return guard,
                Err(TryLockError::Poisoned(p)) => return p.into_inner(),
                Err(TryLockError::WouldBlock) => py.detach(|| std::thread::sleep(Duration::from_millis(1))),
            }
        }
    }
}

impl State {
    fn net(&self) -> &Network<f32> {
        match (&self.network, &self.trainer) {
            (Some(n), _) => n,
            (None, Some((t, _))) => &t.network,
            (None, None) => unreachable!("a PyNetwork always holds its network"),
        }
    }

    fn net_mut(&mut self) -> &mut Network<f32> {
        match (&mut self.network, &mut self.trainer) {
            (Some(n), _) => n,
            (None, Some((t, _))) => &mut t.network,
            (None, None) => unreachable!("a PyNetwork always holds its network"),
        }
    }
}

fn value_error(e: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(e.to_string())
}

/// Rows of features as an `[N, D]` float32 array (images `[N, 28, 28]` are flattened).
fn features_of(x: &Bound<'_, PyAny>) -> PyResult<Array2<f32>> {
    let t = to_tensor::<f32>(x)?;
    let shape = t.shape().to_vec();
    if shape.is_empty() {
        return Err(PyValueError::new_err("features must have a row per example, not be one number"));
    }
    let rows = shape[0];
    let width: usize = shape[1..].iter().product();
    Array2::from_shape_vec((rows, width), t.to_vec()).map_err(value_error)
}

fn path_of_model(path: PathBuf) -> PathBuf {
    if path.is_dir() {
        path.join("model.safetensors")
    } else {
        path
    }
}

/// A layer object's `--arch` element and the input width it was given, if any.
type LayerObject = (String, Option<usize>);

/// A list of layer objects (`adjoint.layers`): each one's `spec` and the input width its
/// PyTorch-style constructor was given; `None` if `arch` is not such a list.
fn layer_objects(arch: &Bound<'_, PyAny>) -> PyResult<Option<Vec<LayerObject>>> {
    let Ok(items) = arch.extract::<Vec<Bound<'_, PyAny>>>() else { return Ok(None) };
    if items.is_empty() || !items.iter().all(|i| i.hasattr("spec").unwrap_or(false)) {
        return Ok(None);
    }
    items
        .iter()
        .map(|i| {
            let spec: String = i.getattr("spec")?.extract()?;
            let expects: Option<usize> = i.getattr("expects").ok().and_then(|e| e.extract().ok());
            Ok((spec, expects))
        })
        .collect::<PyResult<Vec<_>>>()
        .map(Some)
}

/// Checks each layer object's input width (PyTorch's `in_features`, `in_channels`, …)
/// against the shape the layers before it give.
fn check_widths(architecture: &Architecture, objects: &[LayerObject]) -> PyResult<()> {
    let shapes = architecture.shapes().map_err(|e| network_error(&e))?;
    // Layers the language inserts (an image's reshaping) come first.
    let offset = architecture.layers.len().saturating_sub(objects.len());
    for (i, (spec, expects)) in objects.iter().enumerate() {
        let Some(expected) = expects else { continue };
        let before = &shapes[offset + i];
        let kind = spec.split(':').next().unwrap_or("");
        let actual = match kind {
            "conv" | "batchnorm" => before.first().copied(),
            "fc" => Some(before.iter().product()),
            _ => before.last().copied(),
        };
        if actual != Some(*expected) {
            return Err(PyValueError::new_err(format!(
                "layer {i} ({spec}) was given an input width of {expected}, but the layers before it give shape {before:?}"
            )));
        }
    }
    Ok(())
}

/// What `fit` trains on: the bundled MNIST, or arrays.
fn dataset_of(x: &Bound<'_, PyAny>, y: Option<&Bound<'_, PyAny>>, outputs: usize) -> PyResult<Dataset> {
    let y = y.ok_or_else(|| PyValueError::new_err("targets are needed with features: fit(x, y)"))?;
    let features = features_of(x)?;
    let np = y.py().import("numpy")?;
    let array = np.getattr("asarray")?.call1((y,))?;
    let kind: String = array.getattr("dtype")?.getattr("kind")?.extract()?;
    let rows: usize = array.getattr("shape")?.get_item(0)?.extract()?;
    if rows != features.nrows() {
        return Err(PyValueError::new_err(format!("{} rows of features but {rows} targets", features.nrows())));
    }
    if matches!(kind.as_str(), "i" | "u") {
        let labels = crate::tensor::labels_of(&array)?;
        if let Some(&bad) = labels.iter().find(|&&l| l >= outputs) {
            return Err(PyValueError::new_err(format!(
                "class label {bad} is out of range for a network with {outputs} outputs"
            )));
        }
        Ok(Dataset::new(features, labels, outputs))
    } else {
        let ndim: usize = array.getattr("ndim")?.extract()?;
        if ndim == 1 && outputs > 1 {
            return Err(PyValueError::new_err(format!(
                "targets of dtype {} for a network with {outputs} outputs: class labels must be integers \
                 (regression targets are [N, {outputs}] floats)",
                array.getattr("dtype")?.str()?
            )));
        }
        let values = features_of(&array)?;
        if values.ncols() != outputs {
            return Err(PyValueError::new_err(format!(
                "targets of width {} for a network with {outputs} outputs",
                values.ncols()
            )));
        }
        Ok(Dataset::regression(features, values))
    }
}

fn history_list<'py>(py: Python<'py>, history: &[EpochMetrics]) -> PyResult<Bound<'py, PyList>> {
    let json = py.import("json")?;
    let items = history
        .iter()
        .map(|m| {
            let mut v = serde_json::to_value(m).map_err(value_error)?;
            if let Some(o) = v.as_object_mut() {
                o.remove("layers");
                o.remove("communication");
            }
            json.getattr("loads")?.call1((v.to_string(),))
        })
        .collect::<PyResult<Vec<_>>>()?;
    PyList::new(py, items)
}

#[pymethods]
impl PyNetwork {
    /// Network(arch, *, input_shape=(1, 28, 28), activation="tanh", init=None, seed=1)
    ///
    /// `arch` is the CLI's `--arch` language (`"fc:100,tanh,fc:10"`, `"lenet"`,
    /// `"lstm:128,fc:10"`) read for inputs of `input_shape`, or a list of layer widths for a
    /// fully connected network with `activation` between layers (`[784, 100, 10]`). `init`
    /// names the initialiser (`"xavier"`, `"he"`, `"normal:0.01"`, ...; the activation's by
    /// default). Weights are drawn from `seed`.
    #[new]
    #[pyo3(signature = (arch, *, input_shape = None, activation = "tanh", init = None, seed = 1))]
    fn new(
        arch: &Bound<'_, PyAny>,
        input_shape: Option<Vec<usize>>,
        activation: &str,
        init: Option<&str>,
        seed: u64,
    ) -> PyResult<Self> {
        let init = init.map(|s| s.parse::<Init>().map_err(value_error)).transpose()?;
        let architecture = if let Some(objects) = layer_objects(arch)? {
            let spec = objects.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>().join(",");
            // Without an input shape, a first layer with an input width gives it (a row of
            // features; convolutions need the image's shape).
            let shape = match (input_shape, objects.first()) {
                (Some(s), _) => s,
                (None, Some((first, Some(width)))) if !first.starts_with("conv") => vec![*width],
                (None, _) => {
                    return Err(PyValueError::new_err(
                        "give input_shape (e.g. (1, 28, 28)) for a network that starts with a convolution",
                    ))
                }
            };
            let architecture = Architecture::parse(&spec, &shape, init).map_err(value_error)?;
            check_widths(&architecture, &objects)?;
            architecture
        } else if let Ok(spec) = arch.extract::<String>() {
            let shape = input_shape.unwrap_or_else(|| vec![1, 28, 28]);
            Architecture::parse(&spec, &shape, init).map_err(value_error)?
        } else if let Ok(widths) = arch.extract::<Vec<usize>>() {
            if input_shape.is_some() {
                return Err(PyValueError::new_err(
                    "input_shape is for --arch strings; a list of widths starts with the input width",
                ));
            }
            if widths.len() < 2 || widths.contains(&0) {
                return Err(PyValueError::new_err(format!(
                    "widths need at least two positive numbers, got {widths:?}"
                )));
            }
            let activation: Activation = activation.parse().map_err(value_error)?;
            Architecture::mlp(&widths, activation, init)
        } else {
            return Err(PyTypeError::new_err("arch is an --arch string or a list of layer widths"));
        };
        if architecture.parameter_count() > MAX_PARAMETERS {
            return Err(PyValueError::new_err(format!(
                "{} parameters is more than the {MAX_PARAMETERS} allowed",
                architecture.parameter_count()
            )));
        }
        let network = Network::<f32>::new(architecture, seed).map_err(|e| network_error(&e))?;
        Ok(PyNetwork::wrap(network))
    }

    /// Network.load(path): a model file, or a run folder of `adjoint train` (its
    /// `model.safetensors`).
    #[staticmethod]
    fn load(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let file = path_of_model(path);
        let mut network = py.detach(|| Network::<f32>::load(&file)).map_err(|e| network_error(&e))?;
        network.set_training(true);
        Ok(PyNetwork::wrap(network))
    }

    /// save(path, force=False): the architecture, weights and input standardisation in one
    /// safetensors file, with PyTorch's names (the CLI's format). An existing file is kept
    /// unless `force`.
    #[pyo3(signature = (path, force = false))]
    fn save(&self, py: Python<'_>, path: PathBuf, force: bool) -> PyResult<PathBuf> {
        crate::errors::check_target(&path, force)?;
        let state = self.lock(py);
        let net = state.net();
        py.detach(|| net.save(&path)).map_err(|e| network_error(&e))?;
        Ok(path)
    }

    /// The architecture in the `--arch` language.
    #[getter]
    fn arch(&self, py: Python<'_>) -> String {
        self.lock(py).net().architecture.spec()
    }

    /// The shape of one example, as the network reads it.
    #[getter]
    fn input_shape(&self, py: Python<'_>) -> Vec<usize> {
        self.lock(py).net().architecture.input_shape()
    }

    /// The number of parameters.
    #[getter]
    fn parameter_count(&self, py: Python<'_>) -> usize {
        self.lock(py).net().model.parameter_count()
    }

    /// Whether the network is in training mode (dropout on, batch norm's batch statistics).
    #[getter]
    fn training(&self, py: Python<'_>) -> bool {
        self.lock(py).training
    }

    /// The parameters by PyTorch's names (`"0.weight"`, ...): the network's own leaves, so
    /// their `.grad` is filled by `backward()` on a loss computed with the network.
    fn parameters<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        let state = self.lock(py);
        for (name, t) in state.net().model.parameters() {
            d.set_item(name, PyTensor::new(Value::F32(t.clone())))?;
        }
        Ok(d)
    }

    /// Forgets every parameter's gradient.
    fn zero_grad(&self, py: Python<'_>) {
        self.lock(py).net().model.zero_grad();
    }

    /// The layers' forward pass on a batch, recorded (for losses of your own): the model's
    /// output for `x` (`[N, …]`, float32). Unlike `predict`, the input standardisation a
    /// loaded network may carry is not applied.
    fn __call__(&self, py: Python<'_>, x: &Bound<'_, PyAny>) -> PyResult<PyTensor> {
        let x = to_tensor::<f32>(x)?;
        let state = self.lock(py);
        let net = state.net();
        guard(|| net.model.forward(&x)).map(|y| PyTensor::new(Value::F32(y)))
    }

    /// predict(x): the outputs (logits for classifiers) for the rows of `x`, as a NumPy
    /// array, in evaluation mode (dropout off, batch norm's running statistics), without
    /// recording; the input standardisation saved with the network is applied.
    fn predict<'py>(&self, py: Python<'py>, x: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let features = features_of(x)?;
        let mut state = self.lock(py);
        let expected: usize = state.net().architecture.input_shape().iter().product();
        if features.ncols() != expected {
            return Err(PyValueError::new_err(format!(
                "predict takes rows of {expected} features (one example of shape {:?} per row), got rows of {}",
                state.net().architecture.input_shape(),
                features.ncols()
            )));
        }
        let training = state.training;
        let net = state.net_mut();
        let outputs = py.detach(|| {
            net.set_training(false);
            // In slices of rows, so that memory stays that of one batch.
            let result = guard(|| {
                let parts: Vec<adjoint::Tensor<f32>> = features
                    .axis_chunks_iter(ndarray::Axis(0), PREDICT_ROWS.max(1))
                    .map(|chunk| net.predict(&chunk.to_owned()))
                    .collect();
                match parts.as_slice() {
                    [] => net.predict(&features),
                    [one] => one.clone(),
                    many => adjoint::Tensor::concat(&many.iter().collect::<Vec<_>>(), 0),
                }
            });
            net.set_training(training);
            result
        })?;
        crate::tensor::to_numpy(py, &Value::F32(outputs))
    }

    /// classify(x): the predicted class of each row (the largest output), as int64.
    fn classify<'py>(&self, py: Python<'py>, x: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyArray1<i64>>> {
        let logits = self.predict(py, x)?;
        let t = to_tensor::<f32>(&logits)?;
        let classes: Vec<i64> = guard(|| t.argmax_rows())?.into_iter().map(|c| c as i64).collect();
        Ok(PyArray1::from_vec(py, classes))
    }

    /// Training mode (dropout on, batch norm's batch statistics); returns the network.
    fn train(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        let mut state = slf.lock(slf.py());
        state.training = true;
        state.net_mut().set_training(true);
        drop(state);
        slf
    }

    /// Evaluation mode (dropout off, batch norm's running statistics); returns the network.
    fn eval(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        let mut state = slf.lock(slf.py());
        state.training = false;
        state.net_mut().set_training(false);
        drop(state);
        slf
    }

    /// The metrics of every epoch trained so far (a list of dicts).
    #[getter]
    fn history<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let state = self.lock(py);
        let h: &[EpochMetrics] = state.trainer.as_ref().map_or(&[], |(t, _)| &t.history);
        history_list(py, h)
    }

    /// fit(x="mnist", y=None, *, test=None, validation=0.2, epochs=15, batch=32,
    ///     optimizer="momentum", lr=None, momentum=0.9, weight_decay=0.0, schedule="exp:0.85",
    ///     warmup=0, schedule_interval="epoch", seed=1, threads=2, clip=None, limit=None,
    ///     progress=True)
    ///
    /// Trains with the library's Trainer (the CLI's defaults): on the bundled MNIST
    /// (`x="mnist"`, `limit` takes its first examples), or on arrays `x` (`[N, …]`) and `y`
    /// (integer class labels, or float targets `[N, outputs]` for regression). `test` is a
    /// pair `(x, y)` evaluated after every epoch; without it, `validation` of the rows are
    /// held out (MNIST uses its test set). `optimizer` is `sgd`, `momentum`, `nesterov`,
    /// `adam` or `adamw`; `lr` defaults to 0.05 (0.001 for Adam); `schedule` as the CLI's
    /// `--schedule`. Trains `epochs` more epochs and returns the metrics of all epochs so
    /// far. Ctrl-C stops after the current step and keeps the progress: `fit` again
    /// continues where it stopped.
    #[pyo3(signature = (x = None, y = None, *, test = None, validation = 0.2, epochs = 15, batch = 32,
        optimizer = "momentum", lr = None, momentum = 0.9, weight_decay = 0.0, schedule = "exp:0.85",
        warmup = 0, schedule_interval = "epoch", seed = 1, threads = 2, clip = None, limit = None, progress = true))]
    #[allow(clippy::too_many_arguments)]
    fn fit<'py>(
        &self,
        py: Python<'py>,
        x: Option<&Bound<'py, PyAny>>,
        y: Option<&Bound<'py, PyAny>>,
        test: Option<&Bound<'py, PyAny>>,
        validation: f64,
        epochs: usize,
        batch: usize,
        optimizer: &str,
        lr: Option<f64>,
        momentum: f64,
        weight_decay: f64,
        schedule: &str,
        warmup: usize,
        schedule_interval: &str,
        seed: u64,
        threads: usize,
        clip: Option<f64>,
        limit: Option<usize>,
        progress: bool,
    ) -> PyResult<Bound<'py, PyList>> {
        let mut guard_state = self.lock(py);
        let state = &mut *guard_state;
        let outputs = state.net().architecture.outputs();
        let mnist = match x {
            None => true,
            Some(x) => x.extract::<String>().ok().map(|s| s == "mnist").unwrap_or(false),
        };
        if let Some(x) = x {
            if x.extract::<String>().is_ok() && !mnist {
                return Err(PyValueError::new_err("x is \"mnist\" (the bundled data) or an array of features"));
            }
        }
        let (train, test_set) = if mnist {
            if y.is_some() {
                return Err(PyValueError::new_err("y is not used with the bundled MNIST"));
            }
            let (train, test) = py.detach(|| crate::mnist::bundled_limited(limit, limit.map(|n| n.div_ceil(6))))?;
            (train, test)
        } else {
            let all = dataset_of(x.expect("arrays given"), y, outputs)?;
            let all = match limit {
                Some(n) => all.take(n),
                None => all,
            };
            match test {
                Some(t) => {
                    let (tx, ty): (Bound<'py, PyAny>, Bound<'py, PyAny>) =
                        t.extract().map_err(|_| PyTypeError::new_err("test is a pair (x, y)"))?;
                    let test = dataset_of(&tx, Some(&ty), outputs)?;
                    (all, test)
                }
                None => {
                    if !(validation > 0.0 && validation < 1.0) {
                        return Err(PyValueError::new_err("validation must be between 0 and 1 (or give test=(x, y))"));
                    }
                    all.split(validation, seed)
                }
            }
        };
        let (kind, lr) = optimizer_kind(optimizer, lr, momentum, weight_decay)?;
        let per_step = match schedule_interval {
            "epoch" => false,
            "step" => true,
            other => return Err(PyValueError::new_err(format!("schedule_interval {other:?}: \"epoch\" or \"step\""))),
        };
        let done = state.trainer.as_ref().map_or(0, |(t, _)| t.epochs_done());
        let total = done + epochs;
        let schedule = LrSchedule::parse(schedule, total).map_err(value_error)?;
        let recipe = Recipe { optimizer: kind, lr, schedule, warmup, per_step };
        let settings = TrainSettings { batch, epochs: total, seed, threads, clip, watch: false, keep_going: false };
        let make_scheduler = |r: &Recipe| Scheduler::new(r.schedule, r.lr).warmup(r.warmup).per_step(r.per_step);
        match state.trainer.take() {
            Some((mut trainer, old)) => {
                let kept = trainer.set_settings(settings.clone());
                if let Err(e) = kept {
                    state.trainer = Some((trainer, old));
                    return Err(train_error(&e));
                }
                if old != recipe {
                    trainer.optimizer = Optimizer::new(recipe.optimizer, recipe.lr);
                    trainer.scheduler = make_scheduler(&recipe);
                }
                state.trainer = Some((trainer, recipe));
            }
            None => {
                let network = state.network.take().expect("the network");
                let optimizer = Optimizer::new(recipe.optimizer, recipe.lr);
                match Trainer::new(network, optimizer, make_scheduler(&recipe), settings) {
                    Ok(trainer) => state.trainer = Some((trainer, recipe)),
                    Err(e) => {
                        return Err(train_error(&e));
                    }
                }
            }
        }
        let (trainer, _) = state.trainer.as_mut().expect("a trainer");
        for data in [&train, &test_set] {
            trainer.check_data(data).map_err(|e| train_error(&e))?;
        }
        let result = run_epochs(py, trainer, &train, &test_set, progress);
        // The mode train()/eval() chose, whatever the trainer's evaluation left.
        let training = state.training;
        state.net_mut().set_training(training);
        result?;
        let (trainer, _) = state.trainer.as_ref().expect("a trainer");
        history_list(py, &trainer.history)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let state = self.lock(py);
        format!("Network({:?}, {} parameters)", state.net().architecture.spec(), state.net().model.parameter_count())
    }
}

/// Runs the trainer's remaining epochs on a worker thread; the calling thread shows progress
/// and watches for Ctrl-C.
fn run_epochs(py: Python<'_>, trainer: &mut Trainer, train: &Dataset, test: &Dataset, progress: bool) -> PyResult<()> {
    let stop = AtomicBool::new(false);
    let done = AtomicUsize::new(0);
    let steps = AtomicUsize::new(0);
    let loss_bits = AtomicU64::new(0);
    let sys = py.import("sys")?;
    let write = |line: &str| -> PyResult<()> {
        let out = sys.getattr("stdout")?;
        out.call_method1("write", (line,))?;
        out.call_method0("flush")?;
        Ok(())
    };
    let mut interrupted: Option<PyErr> = None;
    while trainer.epochs_done() < trainer.settings.epochs {
        let epoch = trainer.epochs_done() + 1;
        let epochs = trainer.settings.epochs;
        let (finished_tx, mut finished_rx) = std::sync::mpsc::channel::<()>();
        let outcome = std::thread::scope(|scope| -> PyResult<Result<EpochMetrics, Stopped>> {
            let worker = scope.spawn(|| {
                let result = trainer.run_epoch(
                    train,
                    test,
                    |d, t, loss| {
                        done.store(d, Ordering::Relaxed);
                        steps.store(t, Ordering::Relaxed);
                        loss_bits.store(loss.to_bits(), Ordering::Relaxed);
                    },
                    || stop.load(Ordering::Relaxed),
                );
                // Wakes the waiting thread at once (a fixed sleep would add up to its length
                // to every epoch).
                let _ = finished_tx.send(());
                result
            });
            let mut last_shown = usize::MAX;
            loop {
                // The receiver goes into the lock-free section and comes back (it is not Sync).
                let (finished, rx) = py.detach(move || {
                    let done = match finished_rx.recv_timeout(Duration::from_millis(50)) {
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => true,
                        Err(RecvTimeoutError::Timeout) => false,
                    };
                    (done, finished_rx)
                });
                finished_rx = rx;
                if finished {
                    break;
                }
                if let Err(e) = py.check_signals() {
                    stop.store(true, Ordering::Relaxed);
                    interrupted.get_or_insert(e);
                }
                let d = done.load(Ordering::Relaxed);
                if progress && d != last_shown && d > 0 {
                    last_shown = d;
                    let t = steps.load(Ordering::Relaxed).max(1);
                    let filled = d * 30 / t;
                    let bar = format!("{}{}", "#".repeat(filled), " ".repeat(30 - filled.min(30)));
                    let loss = f64::from_bits(loss_bits.load(Ordering::Relaxed));
                    write(&format!("\repoch {epoch}/{epochs} [{bar}] {d}/{t} loss {loss:.4}"))?;
                }
            }
            let result = py.detach(|| worker.join()).map_err(|_| {
                pyo3::exceptions::PyRuntimeError::new_err(
                    "training stopped on an internal error (a panic in the library)",
                )
            })?;
            Ok(result)
        });
        match outcome? {
            Ok(m) => {
                if progress {
                    let accuracy =
                        m.test_accuracy.map(|a| format!(", test accuracy {:.2}%", 100.0 * a)).unwrap_or_default();
                    write(&format!(
                        "\repoch {epoch}/{epochs}: train loss {:.4}, test loss {:.4}{accuracy}, {:.1} s{}\n",
                        m.train_loss,
                        m.test_loss,
                        m.seconds,
                        " ".repeat(20)
                    ))?;
                }
            }
            Err(Stopped::Interrupted { epoch, step, steps }) => {
                if progress {
                    write("\n")?;
                }
                let message = format!(
                    "training interrupted at epoch {epoch}, step {step} of {steps}; the network keeps what it learned and fit() continues from there"
                );
                let _ = interrupted.take();
                return Err(PyKeyboardInterrupt::new_err(message));
            }
            Err(e) => {
                if progress {
                    write("\n")?;
                }
                return Err(train_error(&TrainError::Stopped(e)));
            }
        }
        if interrupted.take().is_some() {
            // Ctrl-C during the epoch's last step or its evaluation: the epoch finished.
            return Err(PyKeyboardInterrupt::new_err(format!(
                "training interrupted at the end of epoch {epoch}; the network keeps what it learned and fit() continues from there"
            )));
        }
    }
    Ok(())
}

/// mnist(limit=None, test_limit=None) -> (x_train, y_train, x_test, y_test)
///
/// The bundled MNIST as NumPy arrays: images `[N, 784]` float32 in [0, 1], labels int64.
#[pyfunction]
#[pyo3(signature = (limit = None, test_limit = None))]
pub fn mnist<'py>(py: Python<'py>, limit: Option<usize>, test_limit: Option<usize>) -> PyResult<Bound<'py, PyAny>> {
    let (train, test) = py.detach(|| crate::mnist::bundled_limited(limit, test_limit))?;
    let arrays = |d: &Dataset| -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyArray1<i64>>)> {
        let x = d.features().into_owned();
        let (rows, cols) = x.dim();
        let flat = numpy::PyArray1::from_vec(py, x.into_raw_vec_and_offset().0);
        let x = flat.reshape([rows, cols])?.into_any();
        let y = PyArray1::from_vec(py, d.labels().iter().map(|&l| l as i64).collect());
        Ok((x, y))
    };
    let (a, b) = arrays(&train)?;
    let (c, d) = arrays(&test)?;
    Ok(pyo3::types::PyTuple::new(py, [a, b.into_any(), c, d.into_any()])?.into_any())
}

/// An optimiser for a training loop of your own (PyTorch's pattern):
///
/// ```python
/// opt = adjoint.Optimizer(net, "adam", lr=1e-3)
/// for x, y in batches:
///     loss = adjoint.cross_entropy(net(x), y)
///     loss.backward()
///     opt.step()        # updates every parameter from its gradient
///     opt.zero_grad()   # forgets the gradients
/// ```
#[pyclass(name = "Optimizer", module = "adjoint", frozen)]
pub struct PyOptimizer {
    network: Py<PyNetwork>,
    optimizer: Mutex<Optimizer<f32>>,
}

#[pymethods]
impl PyOptimizer {
    /// Optimizer(network, kind="sgd", lr=None, momentum=0.9, weight_decay=0.0)
    ///
    /// `kind` is `sgd`, `momentum`, `nesterov`, `adam` or `adamw` (as `fit`'s `optimizer`);
    /// `lr` defaults to 0.05 (0.001 for Adam).
    #[new]
    #[pyo3(signature = (network, kind = "sgd", lr = None, momentum = 0.9, weight_decay = 0.0))]
    fn new(network: Py<PyNetwork>, kind: &str, lr: Option<f64>, momentum: f64, weight_decay: f64) -> PyResult<Self> {
        let (kind, lr) = optimizer_kind(kind, lr, momentum, weight_decay)?;
        Ok(PyOptimizer { network, optimizer: Mutex::new(Optimizer::new(kind, lr)) })
    }

    /// One update of every parameter from its accumulated gradient (parameters without one
    /// are left alone).
    fn step(&self, py: Python<'_>) -> PyResult<()> {
        let network = self.network.bind(py).get();
        let mut state = network.lock(py);
        let mut optimizer = self.optimizer.lock().unwrap_or_else(|e| e.into_inner());
        let net = state.net_mut();
        guard(|| optimizer.step(&mut net.model))
    }

    /// Forgets every parameter's gradient.
    fn zero_grad(&self, py: Python<'_>) {
        self.network.bind(py).get().lock(py).net().model.zero_grad();
    }

    /// The learning rate (assign to change it, for a schedule of your own).
    #[getter]
    fn lr(&self) -> f64 {
        self.optimizer.lock().unwrap_or_else(|e| e.into_inner()).lr()
    }

    #[setter]
    fn set_lr(&self, lr: f64) -> PyResult<()> {
        if !(lr.is_finite() && lr > 0.0) {
            return Err(PyValueError::new_err("lr must be a positive number"));
        }
        self.optimizer.lock().unwrap_or_else(|e| e.into_inner()).set_lr(lr);
        Ok(())
    }
}

/// An optimiser's kind and rate from `fit`'s and `Optimizer`'s arguments.
fn optimizer_kind(name: &str, lr: Option<f64>, momentum: f64, weight_decay: f64) -> PyResult<(OptimizerKind, f64)> {
    let kind = match name {
        "sgd" => OptimizerKind::Sgd { momentum: 0.0, nesterov: false, weight_decay },
        "momentum" => OptimizerKind::Sgd { momentum, nesterov: false, weight_decay },
        "nesterov" => OptimizerKind::Sgd { momentum, nesterov: true, weight_decay },
        "adam" | "adamw" => OptimizerKind::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: if name == "adamw" && weight_decay == 0.0 { 0.01 } else { weight_decay },
            decoupled: name == "adamw",
        },
        other => {
            return Err(PyValueError::new_err(format!(
                "optimizer {other:?}: choose sgd, momentum, nesterov, adam or adamw"
            )))
        }
    };
    let lr = lr.unwrap_or(if name.starts_with("adam") { 0.001 } else { 0.05 });
    if !(lr.is_finite() && lr > 0.0) {
        return Err(PyValueError::new_err("lr must be a positive number"));
    }
    Ok((kind, lr))
}

/// Registers the network class.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyNetwork>()?;
    m.add_class::<PyOptimizer>()?;
    m.add_function(wrap_pyfunction!(mnist, m)?)?;
    Ok(())
}
