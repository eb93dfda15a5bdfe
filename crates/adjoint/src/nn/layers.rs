//! Layers: fully-connected [`Linear`], activations, learned-slope [`PRelu`], [`Sequential`]
//! and the [`mlp`] builder.

use std::fmt;
use std::str::FromStr;

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::module::with_name;
use super::{Init, Module};
use crate::ops::elementwise::{unary_entry, ActivationFamily, Function, LeakyRelu, Relu, Sigmoid, Tanh};
use crate::tensor::{Element, Tensor};
use crate::SpecError;

/// z = x·Wᵀ + b, batch-major: x is `[batch, in]`, W is `[out, in]` (PyTorch's layout, so
/// state dicts are interchangeable), b is `[out]`.
///
/// Its VJP never builds the layer's Jacobian (which would repeat x once per output unit):
/// ∂W = δᵀ·x and ∂x = δ·W are two matrix products.
pub struct Linear<T: Element> {
    /// `[out, in]`
    pub weight: Tensor<T>,
    /// `[out]`
    pub bias: Tensor<T>,
}

impl<T: Element> Linear<T> {
    /// A layer with weights from `init` and zero biases.
    pub fn new(inputs: usize, outputs: usize, init: Init, rng: &mut impl Rng) -> Self {
        let w = init.sample::<T>(&[outputs, inputs], inputs, outputs, rng);
        Linear { weight: Tensor::from_array(w).requires_grad(), bias: Tensor::zeros(&[outputs]).requires_grad() }
    }

    /// Input and output widths.
    pub fn widths(&self) -> (usize, usize) {
        (self.weight.shape()[1], self.weight.shape()[0])
    }
}

impl<T: Element> Module<T> for Linear<T> {
    fn forward(&self, x: &Tensor<T>) -> Tensor<T> {
        x.linear(&self.weight, Some(&self.bias))
    }
    fn describe(&self) -> String {
        let (i, o) = self.widths();
        format!("linear {i}→{o}")
    }
    crate::parameters!(T: weight, bias);
}

/// A hidden layer's activation: an elementwise function from the registry that declares
/// itself an activation (tanh, sigmoid, relu, leaky_relu, elu, softplus, gelu, silu), the
/// learned-slope PReLU, softmax over the last axis, or the identity.
///
/// Activations are not listed here one by one: any registry function that declares an
/// [`ActivationFamily`] is accepted by name (`--activation gelu`), serialised under its name,
/// and initialised by its family (He for rectifiers, Xavier for saturating functions).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    /// An elementwise function, with its parameter (α) if it takes one.
    Function {
        /// The function.
        function: &'static dyn Function,
        /// Its constant parameter, if it has one.
        param: Option<f64>,
    },
    /// Leaky ReLU whose slope α is learned (one per layer), starting at `alpha`.
    PRelu {
        /// The initial slope.
        alpha: f64,
    },
    /// softmax over the last axis
    Softmax,
    /// the identity
    Identity,
}

impl Activation {
    /// tanh
    pub const TANH: Activation = Activation::Function { function: unary_entry::<Tanh>(), param: None };
    /// The logistic sigmoid.
    pub const SIGMOID: Activation = Activation::Function { function: unary_entry::<Sigmoid>(), param: None };
    /// max(z, 0)
    pub const RELU: Activation = Activation::Function { function: unary_entry::<Relu>(), param: None };

    /// Leaky ReLU with slope `alpha` for negative inputs.
    pub fn leaky_relu(alpha: f64) -> Activation {
        Activation::Function { function: unary_entry::<LeakyRelu>(), param: Some(alpha) }
    }

    /// The activation named `name` (a registry function declared as an activation), with
    /// its default parameter.
    pub fn named(name: &str) -> Option<Activation> {
        let name = name.replace('-', "_");
        let function = crate::ops::functions()
            .iter()
            .copied()
            .find(|f| f.name() == name && f.activation() != ActivationFamily::No)?;
        Some(Activation::Function { function, param: function.params().first().map(|p| p.default) })
    }

    /// The family: rectifiers (and PReLU) or saturating functions.
    pub fn family(self) -> ActivationFamily {
        match self {
            Activation::Function { function, .. } => function.activation(),
            Activation::PRelu { .. } => ActivationFamily::Rectifier,
            Activation::Softmax | Activation::Identity => ActivationFamily::No,
        }
    }

    /// The initialiser that keeps activations alive through many layers of this kind:
    /// He for the rectifier family, Xavier for tanh, sigmoid and the rest.
    pub fn default_init(self) -> Init {
        match self.family() {
            ActivationFamily::Rectifier => Init::HeNormal,
            _ => Init::XavierUniform,
        }
    }

    fn params(self) -> Vec<f64> {
        match self {
            Activation::Function { param, .. } => param.into_iter().collect(),
            _ => Vec::new(),
        }
    }

    /// Applies a parameter-free activation (PReLU needs its layer: see [`PRelu`]; here it
    /// acts as a leaky ReLU with its initial slope).
    pub fn apply<T: Element>(self, z: &Tensor<T>) -> Tensor<T> {
        match self {
            Activation::Function { function, param } => T::apply_function(function, &[z], param.as_slice()),
            Activation::PRelu { alpha } => z.leaky_relu(alpha),
            Activation::Softmax => z.softmax(-1),
            Activation::Identity => z.clone(),
        }
    }

    /// σ′(z) elementwise, from the function's declared derivative (for hand-written
    /// backpropagation, as the lectures' BP1 and BP2 use it).
    pub fn derivative(self, z: &ndarray::ArrayD<f64>) -> ndarray::ArrayD<f64> {
        match self {
            Activation::Function { function, .. } => {
                let params = self.params();
                z.mapv(|v| function.partials_f64(&[v], &params)[0])
            }
            Activation::PRelu { alpha } => z.mapv(|v| if v > 0.0 { 1.0 } else { alpha }),
            Activation::Softmax | Activation::Identity => z.mapv(|_| 1.0),
        }
    }

    /// The names `--activation` accepts.
    pub fn names() -> Vec<String> {
        let mut names: Vec<String> = crate::ops::functions()
            .iter()
            .filter(|f| f.activation() != ActivationFamily::No)
            .map(|f| {
                let name = f.name().replace('_', "-");
                if f.params().is_empty() {
                    name
                } else {
                    format!("{name}[:α]")
                }
            })
            .collect();
        names.push("prelu[:α]".into());
        names.push("identity".into());
        names
    }
}

impl fmt::Display for Activation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Activation::Function { function, param } => {
                write!(f, "{}", function.name().replace('_', "-"))?;
                match param {
                    Some(p) => write!(f, ":{p}"),
                    None => Ok(()),
                }
            }
            Activation::PRelu { alpha } => write!(f, "prelu:{alpha}"),
            Activation::Softmax => write!(f, "softmax"),
            Activation::Identity => write!(f, "identity"),
        }
    }
}

impl FromStr for Activation {
    type Err = SpecError;

    /// A registry activation by name (`relu`, `leaky-relu[:α]` (α = 0.01), `elu[:α]`, `gelu`,
    /// `sigmoid`, `tanh`, …), `prelu[:α]` (α = 0.25), `softmax`, `identity`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, arg) = match s.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (s, None),
        };
        let value = |default: f64| -> Result<f64, SpecError> {
            arg.map_or(Ok(default), |a| {
                a.parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite() && v.abs() <= f64::from(f32::MAX))
                    .ok_or_else(|| SpecError(format!("'{a}' is not a finite number within ±3.4e38 (f32's range)")))
            })
        };
        let act = match name {
            "prelu" => Activation::PRelu { alpha: value(0.25)? },
            "softmax" => Activation::Softmax,
            "identity" | "linear" => Activation::Identity,
            other => match Activation::named(other) {
                Some(Activation::Function { function, param: Some(p) }) => {
                    Activation::Function { function, param: Some(value(p)?) }
                }
                Some(a) => a,
                None => {
                    return Err(SpecError(format!(
                        "unknown activation '{s}': use one of {}",
                        Activation::names().join(", ")
                    )))
                }
            },
        };
        let takes_value = matches!(act, Activation::PRelu { .. } | Activation::Function { param: Some(_), .. });
        if arg.is_some() && !takes_value {
            return Err(SpecError(format!("activation '{name}' takes no value")));
        }
        Ok(act)
    }
}

impl Serialize for Activation {
    /// `{"kind": "tanh"}`, `{"kind": "leaky_relu", "alpha": 0.01}`, `{"kind": "p_relu",
    /// "alpha": 0.25}`: the format of earlier versions' `config.json`.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        match self {
            Activation::Function { function, param } => {
                map.serialize_entry("kind", function.name())?;
                if let (Some(p), Some(spec)) = (param, function.params().first()) {
                    map.serialize_entry(spec.name, p)?;
                }
            }
            Activation::PRelu { alpha } => {
                map.serialize_entry("kind", "p_relu")?;
                map.serialize_entry("alpha", alpha)?;
            }
            Activation::Softmax => map.serialize_entry("kind", "softmax")?,
            Activation::Identity => map.serialize_entry("kind", "identity")?,
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Activation {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let map: std::collections::BTreeMap<String, serde_json::Value> = Deserialize::deserialize(deserializer)?;
        let kind = map.get("kind").and_then(|k| k.as_str()).ok_or_else(|| D::Error::missing_field("kind"))?;
        let number = |key: &str| map.get(key).and_then(serde_json::Value::as_f64);
        Ok(match kind {
            "p_relu" => Activation::PRelu { alpha: number("alpha").unwrap_or(0.25) },
            "softmax" => Activation::Softmax,
            "identity" => Activation::Identity,
            other => match Activation::named(other) {
                Some(Activation::Function { function, param }) => {
                    let param =
                        function.params().first().map(|spec| number(spec.name).or(param).unwrap_or(spec.default));
                    Activation::Function { function, param }
                }
                _ => return Err(D::Error::custom(format!("unknown activation '{other}'"))),
            },
        })
    }
}

/// A parameter-free activation as a layer.
pub struct ActivationLayer(pub Activation);

impl<T: Element> Module<T> for ActivationLayer {
    fn forward(&self, x: &Tensor<T>) -> Tensor<T> {
        self.0.apply(x)
    }
    fn describe(&self) -> String {
        self.0.to_string()
    }
    fn visit<'a>(&'a self, _: &mut String, _: &mut dyn FnMut(&str, &'a Tensor<T>)) {}
    fn visit_mut(&mut self, _: &mut String, _: &mut dyn FnMut(&str, &mut Tensor<T>)) {}
}

/// Leaky ReLU with a learned slope α: max(z, 0) + α·min(z, 0).
pub struct PRelu<T: Element> {
    /// The slope for negative inputs, a one-element parameter.
    pub alpha: Tensor<T>,
}

impl<T: Element> PRelu<T> {
    /// A PReLU starting at slope `alpha`.
    pub fn new(alpha: f64) -> Self {
        PRelu { alpha: Tensor::from_vec(vec![T::from_f64_lossy(alpha)], &[1]).requires_grad() }
    }
}

impl<T: Element> Module<T> for PRelu<T> {
    fn forward(&self, z: &Tensor<T>) -> Tensor<T> {
        let zero = Tensor::scalar(T::zero());
        z.maximum(&zero) + z.minimum(&zero) * &self.alpha
    }
    crate::parameters!(T: alpha);
}

/// Modules applied in order; parameter names are prefixed with the module's position
/// (`"0.weight"`), as in PyTorch's `nn.Sequential`. Modules added with
/// [`Sequential::push_unnamed`] are not counted in the positions that name parameters.
#[derive(Default)]
pub struct Sequential<T: Element> {
    layers: Vec<Box<dyn Module<T>>>,
    /// Per layer: its position in parameter names, `None` for an unnamed one.
    names: Vec<Option<usize>>,
}

impl<T: Element> Sequential<T> {
    /// An empty sequence.
    pub fn new() -> Self {
        Sequential { layers: Vec::new(), names: Vec::new() }
    }

    /// Appends a module.
    pub fn push(&mut self, module: impl Module<T> + 'static) -> &mut Self {
        let next = self.names.iter().flatten().count();
        self.layers.push(Box::new(module));
        self.names.push(Some(next));
        self
    }

    /// Appends a module without parameters that takes no place in the names: later
    /// modules are named as if it were not there. For a reshape of the input that the
    /// equivalent PyTorch model leaves to its caller (the `Unflatten` that
    /// [`Architecture::build`](super::Architecture::build) puts before convolutions of
    /// flat image rows), so that names match that model's (`0.weight` for the first
    /// convolution).
    ///
    /// # Panics
    /// If the module has parameters or buffers (they would have no name).
    pub fn push_unnamed(&mut self, module: impl Module<T> + 'static) -> &mut Self {
        let mut buffers = 0;
        module.visit_buffers(&mut String::new(), &mut |_, _| buffers += 1);
        assert!(
            module.parameters().is_empty() && buffers == 0,
            "Sequential::push_unnamed: {} has parameters or buffers, which need a name",
            module.describe()
        );
        self.layers.push(Box::new(module));
        self.names.push(None);
        self
    }

    /// The position that names the parameters of layer `index` (`"{position}.weight"`),
    /// `None` for a layer added with [`Sequential::push_unnamed`] or past the end.
    pub fn name_of(&self, index: usize) -> Option<usize> {
        self.names.get(index).copied().flatten()
    }

    /// The number of modules.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Whether there are no modules.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// The modules, in order.
    pub fn layers(&self) -> &[Box<dyn Module<T>>] {
        &self.layers
    }

    /// The outputs of every module for input `x` (the last is the network's output).
    pub fn forward_all(&self, x: &Tensor<T>) -> Vec<Tensor<T>> {
        let mut outs: Vec<Tensor<T>> = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            let next = layer.forward(outs.last().unwrap_or(x));
            outs.push(next);
        }
        outs
    }
}

impl<T: Element> Module<T> for Sequential<T> {
    fn forward(&self, x: &Tensor<T>) -> Tensor<T> {
        let mut h = x.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            h = crate::autodiff::with_context(|| format!("layer {i} ({})", layer.describe()), || layer.forward(&h));
        }
        h
    }
    fn describe(&self) -> String {
        format!("sequential of {}", self.layers.len())
    }
    fn visit<'a>(&'a self, path: &mut String, f: &mut dyn FnMut(&str, &'a Tensor<T>)) {
        let mut index = itoa_buffer();
        for (layer, i) in self.layers.iter().zip(&self.names) {
            if let Some(i) = *i {
                with_name(path, index.format(i), true, |p| layer.visit(p, f));
            }
        }
    }
    fn visit_mut(&mut self, path: &mut String, f: &mut dyn FnMut(&str, &mut Tensor<T>)) {
        let mut index = itoa_buffer();
        for (layer, i) in self.layers.iter_mut().zip(&self.names) {
            if let Some(i) = *i {
                with_name(path, index.format(i), true, |p| layer.visit_mut(p, f));
            }
        }
    }
    fn set_training(&mut self, training: bool) {
        self.layers.iter_mut().for_each(|l| l.set_training(training));
    }
    fn visit_buffers(&self, path: &mut String, f: &mut dyn FnMut(&str, ndarray::ArrayD<T>)) {
        let mut index = itoa_buffer();
        for (layer, i) in self.layers.iter().zip(&self.names) {
            if let Some(i) = *i {
                with_name(path, index.format(i), true, |p| layer.visit_buffers(p, f));
            }
        }
    }
    fn load_buffers(&mut self, path: &mut String, values: &std::collections::HashMap<String, ndarray::ArrayD<T>>) {
        let mut index = itoa_buffer();
        for (layer, i) in self.layers.iter_mut().zip(&self.names) {
            if let Some(i) = *i {
                with_name(path, index.format(i), true, |p| layer.load_buffers(p, values));
            }
        }
    }
}

/// Formats small integers without allocating.
struct IndexBuffer([u8; 20]);

fn itoa_buffer() -> IndexBuffer {
    IndexBuffer([0; 20])
}

impl IndexBuffer {
    fn format(&mut self, mut i: usize) -> &str {
        let mut pos = self.0.len();
        loop {
            pos -= 1;
            self.0[pos] = b'0' + (i % 10) as u8;
            i /= 10;
            if i == 0 {
                break;
            }
        }
        std::str::from_utf8(&self.0[pos..]).expect("ASCII digits")
    }
}

/// A multi-layer perceptron: `Linear` layers of the given widths with `activation` between
/// them and none after the last (its outputs are logits; losses apply softmax themselves).
///
/// ```
/// use adjoint::nn::{mlp, Activation, Module};
/// use rand::SeedableRng;
/// let net = mlp::<f32>(&[784, 100, 10], Activation::TANH, None, &mut rand::rngs::StdRng::seed_from_u64(0));
/// assert_eq!(net.parameters().len(), 4);
/// ```
///
/// # Panics
/// If fewer than two widths are given or a width is zero.
pub fn mlp<T: Element>(
    widths: &[usize],
    activation: Activation,
    init: Option<Init>,
    rng: &mut impl Rng,
) -> Sequential<T> {
    assert!(widths.len() >= 2, "mlp: needs at least an input and an output width, got {widths:?}");
    assert!(widths.iter().all(|&w| w > 0), "mlp: widths must be positive, got {widths:?}");
    let init = init.unwrap_or(activation.default_init());
    let mut net = Sequential::new();
    for (i, pair) in widths.windows(2).enumerate() {
        net.push(Linear::<T>::new(pair[0], pair[1], init, rng));
        if i + 2 < widths.len() {
            match activation {
                Activation::PRelu { alpha } => net.push(PRelu::<T>::new(alpha)),
                a => net.push(ActivationLayer(a)),
            };
        }
    }
    net
}
