//! Layers: fully-connected [`Linear`], activations, learned-slope [`PRelu`], [`Sequential`]
//! and the [`mlp`] builder.

use std::fmt;
use std::str::FromStr;

use rand::Rng;

use super::{Init, Module};
use crate::tensor::{Element, Tensor};

/// z = x·W + b, batch-major: x is `[batch, in]`, W is `[in, out]`, b is `[out]`.
///
/// Its VJP never builds the layer's Jacobian (which would repeat x once per output unit):
/// ∂W = xᵀ·δ and ∂x = δ·Wᵀ are two matrix products.
pub struct Linear<T: Element> {
    /// `[in, out]`
    pub weight: Tensor<T>,
    /// `[out]`
    pub bias: Tensor<T>,
}

impl<T: Element> Linear<T> {
    /// A layer with weights from `init` and zero biases.
    pub fn new(inputs: usize, outputs: usize, init: Init, rng: &mut impl Rng) -> Self {
        let w = init.sample::<T>(&[inputs, outputs], inputs, outputs, rng);
        Linear { weight: Tensor::from_array(w).requires_grad(), bias: Tensor::zeros(&[outputs]).requires_grad() }
    }

    /// Input and output widths.
    pub fn widths(&self) -> (usize, usize) {
        (self.weight.shape()[0], self.weight.shape()[1])
    }
}

impl<T: Element> Module<T> for Linear<T> {
    fn forward(&self, x: &Tensor<T>) -> Tensor<T> {
        x.matmul(&self.weight) + &self.bias
    }
    fn parameters(&self) -> Vec<(String, &Tensor<T>)> {
        vec![("weight".into(), &self.weight), ("bias".into(), &self.bias)]
    }
    fn parameters_mut(&mut self) -> Vec<(String, &mut Tensor<T>)> {
        vec![("weight".into(), &mut self.weight), ("bias".into(), &mut self.bias)]
    }
}

/// An elementwise (or, for softmax, row-wise) activation function.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Activation {
    /// max(z, 0)
    Relu,
    /// z if z > 0 else αz
    LeakyRelu {
        /// The slope for negative inputs.
        alpha: f64,
    },
    /// Leaky ReLU whose slope α is learned (one per layer), starting at `alpha`.
    PRelu {
        /// The initial slope.
        alpha: f64,
    },
    /// 1/(1 + e⁻ᶻ)
    Sigmoid,
    /// tanh z
    Tanh,
    /// softmax over the last axis
    Softmax,
    /// the identity
    Identity,
}

impl Activation {
    /// The initialiser that keeps activations alive through many layers of this kind:
    /// He for the ReLU family, Xavier for tanh, sigmoid and the rest.
    pub fn default_init(self) -> Init {
        match self {
            Activation::Relu | Activation::LeakyRelu { .. } | Activation::PRelu { .. } => Init::HeNormal,
            _ => Init::XavierUniform,
        }
    }

    /// Applies a parameter-free activation (PReLU needs its layer: see [`PRelu`]).
    pub fn apply<T: Element>(self, z: &Tensor<T>) -> Tensor<T> {
        match self {
            Activation::Relu => z.relu(),
            Activation::LeakyRelu { alpha } => z.leaky_relu(alpha),
            Activation::PRelu { alpha } => z.leaky_relu(alpha),
            Activation::Sigmoid => z.sigmoid(),
            Activation::Tanh => z.tanh(),
            Activation::Softmax => z.softmax(-1),
            Activation::Identity => z.clone(),
        }
    }
}

impl fmt::Display for Activation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Activation::Relu => write!(f, "relu"),
            Activation::LeakyRelu { alpha } => write!(f, "leaky-relu:{alpha}"),
            Activation::PRelu { alpha } => write!(f, "prelu:{alpha}"),
            Activation::Sigmoid => write!(f, "sigmoid"),
            Activation::Tanh => write!(f, "tanh"),
            Activation::Softmax => write!(f, "softmax"),
            Activation::Identity => write!(f, "identity"),
        }
    }
}

impl FromStr for Activation {
    type Err = String;

    /// `relu`, `leaky-relu[:α]` (α = 0.01), `prelu[:α]` (α = 0.25), `sigmoid`, `tanh`,
    /// `softmax`, `identity`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, arg) = match s.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (s, None),
        };
        let alpha = |default: f64| -> Result<f64, String> {
            arg.map_or(Ok(default), |a| {
                a.parse::<f64>().ok().filter(|v| v.is_finite()).ok_or_else(|| format!("'{a}' is not a finite slope"))
            })
        };
        let act = match name {
            "relu" => Activation::Relu,
            "leaky-relu" | "leaky_relu" => Activation::LeakyRelu { alpha: alpha(0.01)? },
            "prelu" => Activation::PRelu { alpha: alpha(0.25)? },
            "sigmoid" => Activation::Sigmoid,
            "tanh" => Activation::Tanh,
            "softmax" => Activation::Softmax,
            "identity" | "linear" => Activation::Identity,
            _ => {
                return Err(format!(
                    "unknown activation '{s}': use relu, leaky-relu[:α], prelu[:α], sigmoid, tanh, softmax or identity"
                ))
            }
        };
        if arg.is_some() && !matches!(act, Activation::LeakyRelu { .. } | Activation::PRelu { .. }) {
            return Err(format!("activation '{name}' takes no value"));
        }
        Ok(act)
    }
}

/// A parameter-free activation as a layer.
pub struct ActivationLayer(pub Activation);

impl<T: Element> Module<T> for ActivationLayer {
    fn forward(&self, x: &Tensor<T>) -> Tensor<T> {
        self.0.apply(x)
    }
    fn parameters(&self) -> Vec<(String, &Tensor<T>)> {
        Vec::new()
    }
    fn parameters_mut(&mut self) -> Vec<(String, &mut Tensor<T>)> {
        Vec::new()
    }
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
    fn parameters(&self) -> Vec<(String, &Tensor<T>)> {
        vec![("alpha".into(), &self.alpha)]
    }
    fn parameters_mut(&mut self) -> Vec<(String, &mut Tensor<T>)> {
        vec![("alpha".into(), &mut self.alpha)]
    }
}

/// Modules applied in order; parameter names are prefixed with the module's position.
#[derive(Default)]
pub struct Sequential<T: Element> {
    layers: Vec<Box<dyn Module<T>>>,
}

impl<T: Element> Sequential<T> {
    /// An empty sequence.
    pub fn new() -> Self {
        Sequential { layers: Vec::new() }
    }

    /// Appends a module.
    pub fn push(&mut self, module: impl Module<T> + 'static) -> &mut Self {
        self.layers.push(Box::new(module));
        self
    }

    /// The number of modules.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Whether there are no modules.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
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
        for layer in &self.layers {
            h = layer.forward(&h);
        }
        h
    }
    fn parameters(&self) -> Vec<(String, &Tensor<T>)> {
        let mut out = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            out.extend(layer.parameters().into_iter().map(|(n, p)| (format!("{i}.{n}"), p)));
        }
        out
    }
    fn parameters_mut(&mut self) -> Vec<(String, &mut Tensor<T>)> {
        let mut out = Vec::new();
        for (i, layer) in self.layers.iter_mut().enumerate() {
            out.extend(layer.parameters_mut().into_iter().map(|(n, p)| (format!("{i}.{n}"), p)));
        }
        out
    }
    fn set_training(&mut self, training: bool) {
        self.layers.iter_mut().for_each(|l| l.set_training(training));
    }
}

/// A multi-layer perceptron: `Linear` layers of the given widths with `activation` between
/// them and none after the last (its outputs are logits; losses apply softmax themselves).
///
/// ```
/// use adjoint::nn::{mlp, Activation, Module};
/// use rand::SeedableRng;
/// let net = mlp::<f32>(&[784, 100, 10], Activation::Tanh, None, &mut rand::rngs::StdRng::seed_from_u64(0));
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
