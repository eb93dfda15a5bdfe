//! A network that knows how it was built: an [`Architecture`] (saved as JSON in the model
//! file), the [`Sequential`] it builds, and the input standardisation it was trained with.
//! [`Network::save`] and [`Network::load`] round-trip all three, so a model file is all
//! that evaluation or prediction needs.
//!
//! File format (`format: adjoint-model-v2`): a safetensors file whose tensors are the state
//! dict under PyTorch's names and layout (`"0.weight"` is `[out, in]`), plus `input.mean` and
//! `input.std` when inputs are standardised; its metadata holds the architecture. Files of
//! the earlier format (`adjoint-mlp-v1`, weights `[in, out]`, the training configuration in
//! the metadata) are read too and converted.

use std::collections::HashMap;
use std::path::Path;

use ndarray::{Array1, ArrayD};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::attention::{
    FeedForwardActivation, PositionalEmbedding, SinusoidalPositions, TransformerEncoderLayer, TransformerOptions,
};
use super::image::{AvgPool2d, Conv2d, Flatten, MaxPool2d, Unflatten};
use super::norm::{BatchNorm, Dropout, LayerNorm};
use super::recurrent::{CellKind, Embedding, Recurrent, RecurrentOptions};
use super::{Activation, ActivationLayer, Init, Linear, Module, PRelu, Sequential};
use crate::data::InputNorm;
use crate::io::{self, IoError, Limits};
use crate::ops::Window2d;
use crate::tensor::{Element, Tensor};

/// The format name written into model files.
pub const FORMAT: &str = "adjoint-model-v2";
/// Metadata `names` of files whose parameter names leave out the hidden input reshape
/// (`0.weight` for the first convolution, as in the equivalent `nn.Sequential`). Files of
/// v0.2.0 and before lack it and count that reshape as layer 0 (`1.weight`); they are
/// renamed when loaded.
const NAMES: &str = "pytorch-sequential";
const FORMAT_V1: &str = "adjoint-mlp-v1";

/// One layer of an [`Architecture`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LayerSpec {
    /// A fully connected layer.
    Linear {
        /// Input width.
        inputs: usize,
        /// Output width.
        outputs: usize,
        /// How its weights are drawn.
        init: Init,
    },
    /// A parameter-free activation.
    Activation {
        /// Which.
        function: Activation,
    },
    /// PReLU with a learned slope.
    PRelu {
        /// The initial slope.
        alpha: f64,
    },
    /// Flat feature rows as images `[channels, height, width]`.
    Unflatten {
        /// Channels.
        channels: usize,
        /// Height.
        height: usize,
        /// Width.
        width: usize,
    },
    /// A 2-D convolution with a square kernel.
    Conv2d {
        /// Input channels.
        inputs: usize,
        /// Output channels (filters).
        outputs: usize,
        /// Kernel height and width.
        kernel: usize,
        /// Stride.
        stride: usize,
        /// Zero padding on each side.
        padding: usize,
        /// How its weights are drawn.
        init: Init,
    },
    /// Max pooling over square windows.
    MaxPool2d {
        /// Window height and width.
        kernel: usize,
        /// Stride.
        stride: usize,
    },
    /// Average pooling over square windows.
    AvgPool2d {
        /// Window height and width.
        kernel: usize,
        /// Stride.
        stride: usize,
    },
    /// Images to flat rows.
    Flatten,
    /// Dropout with drop probability `p` (training only).
    Dropout {
        /// The probability of dropping an element.
        p: f64,
    },
    /// Batch normalisation over the channels (or features) of each example's first axis.
    BatchNorm {
        /// Channels (features for flat rows).
        channels: usize,
    },
    /// Layer normalisation over flat rows of `features`.
    LayerNorm {
        /// Features.
        features: usize,
    },
    /// A recurrent layer over a sequence `[steps, features]` (one-channel images: rows as
    /// steps), giving its last hidden state, or every step's when `sequence`.
    Recurrent {
        /// The cell.
        cell: CellKind,
        /// Features per step.
        inputs: usize,
        /// Hidden units.
        hidden: usize,
        /// Whether it gives every step's state `[steps, hidden]` (in a language model)
        /// rather than the last one.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        sequence: bool,
        /// Layers stacked in it (PyTorch's `num_layers`).
        #[serde(default = "one", skip_serializing_if = "is_one")]
        layers: usize,
        /// Whether each layer also reads the sequence backwards (its output is then
        /// `2·hidden` wide).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        bidirectional: bool,
    },
    /// Token ids `[steps]` (whole numbers below `vocab`) to vectors `[steps, dim]`, as
    /// PyTorch's `nn.Embedding`; the first layer of a language model.
    Embedding {
        /// Distinct tokens.
        vocab: usize,
        /// The width of each vector.
        dim: usize,
        /// The sequence length trained on (the input is `[context]`).
        context: usize,
    },
    /// Adds a position's encoding to each step of `[steps, dim]` (steps ≤ `max_len`):
    /// learned ([`super::PositionalEmbedding`]) or sinusoidal ([`super::SinusoidalPositions`]).
    Positions {
        /// The most steps.
        max_len: usize,
        /// The width.
        dim: usize,
        /// Learned rather than sinusoidal.
        learned: bool,
    },
    /// A pre-norm transformer block over `[steps, width]`: PyTorch's
    /// `nn.TransformerEncoderLayer(width, heads, feed_forward, dropout=0, activation="gelu",
    /// batch_first=True, norm_first=True)`, causal in a language model.
    Transformer {
        /// The model width.
        width: usize,
        /// Attention heads (the width is a multiple of them).
        heads: usize,
        /// The feed-forward block's width.
        feed_forward: usize,
        /// Whether position i attends only to positions up to i.
        causal: bool,
    },
}

fn one() -> usize {
    1
}

fn is_one(n: &usize) -> bool {
    *n == 1
}

impl LayerSpec {
    /// The window of a convolution or pooling layer.
    pub fn window(&self) -> Option<Window2d> {
        match *self {
            LayerSpec::Conv2d { kernel, stride, padding, .. } => {
                Some(Window2d::new([kernel, kernel]).stride(stride).padding(padding))
            }
            LayerSpec::MaxPool2d { kernel, stride } | LayerSpec::AvgPool2d { kernel, stride } => {
                Some(Window2d::new([kernel, kernel]).stride(stride))
            }
            _ => None,
        }
    }

    /// The shape of one example after this layer, given its shape before; an error says
    /// why the layer does not fit.
    pub fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>, String> {
        let image = |what: &str| -> Result<[usize; 3], String> {
            match *input {
                [c, h, w] => Ok([c, h, w]),
                _ => Err(format!("{what} needs images [channels, height, width], but its input is {input:?}")),
            }
        };
        match *self {
            LayerSpec::Linear { inputs, outputs, .. } => match *input {
                [n] if n == inputs => Ok(vec![outputs]),
                // Applied to each step of a sequence.
                [steps, n] if n == inputs => Ok(vec![steps, outputs]),
                [_] | [_, _] => Err(format!("it takes {inputs} inputs but gets {input:?}")),
                _ => Err(format!("a fully connected layer needs flat rows but gets {input:?}; flatten first")),
            },
            LayerSpec::Activation { .. } | LayerSpec::PRelu { .. } => Ok(input.to_vec()),
            LayerSpec::Unflatten { channels, height, width } => match *input {
                [n] if Some(n) == channels.checked_mul(height).and_then(|v| v.checked_mul(width)) => {
                    Ok(vec![channels, height, width])
                }
                _ => Err(format!("{input:?} are not the features of {channels}×{height}×{width} images")),
            },
            LayerSpec::Conv2d { inputs, outputs, .. } => {
                let [c, h, w] = image("a convolution")?;
                if c != inputs {
                    return Err(format!("it takes {inputs} channels but gets {c} ({input:?})"));
                }
                let window = self.window().expect("a windowed layer");
                let [oh, ow] = window.output_size([h, w]).ok_or_else(|| {
                    let [k, s, p] = [window.kernel[0], window.stride[0], window.padding[0]];
                    format!("a {k}×{k} kernel with stride {s} and padding {p} does not fit {h}×{w} images (padding may be at most half the kernel)")
                })?;
                Ok(vec![outputs, oh, ow])
            }
            LayerSpec::MaxPool2d { .. } | LayerSpec::AvgPool2d { .. } => {
                let [c, h, w] = image("pooling")?;
                let window = self.window().expect("a windowed layer");
                let [oh, ow] = window.output_size([h, w]).ok_or_else(|| {
                    format!("a {}×{} window does not fit {h}×{w} images", window.kernel[0], window.kernel[1])
                })?;
                Ok(vec![c, oh, ow])
            }
            LayerSpec::Flatten => Ok(vec![input.iter().product()]),
            LayerSpec::Dropout { p } if (0.0..1.0).contains(&p) => Ok(input.to_vec()),
            LayerSpec::Dropout { p } => Err(format!("the drop probability must be in [0, 1), got {p}")),
            LayerSpec::BatchNorm { channels } => match input.first() {
                Some(&c) if c == channels && (input.len() == 1 || input.len() == 3) => Ok(input.to_vec()),
                _ => Err(format!("it normalises {channels} channels but gets {input:?}")),
            },
            LayerSpec::LayerNorm { features } => match *input {
                [f] | [_, f] if f == features => Ok(input.to_vec()),
                _ => Err(format!("it normalises rows of {features} features but gets {input:?}")),
            },
            LayerSpec::Recurrent { layers: 0, .. } => Err("it needs at least one layer".into()),
            LayerSpec::Recurrent { sequence: true, bidirectional: true, .. } => {
                Err("a language model cannot read its sequence backwards (it would see the characters it predicts)"
                    .into())
            }
            LayerSpec::Recurrent { inputs, hidden, sequence: true, .. } => match *input {
                [steps, f] if f == inputs => Ok(vec![steps, hidden]),
                _ => Err(format!("it takes sequences [steps, {inputs}] but gets {input:?}")),
            },
            LayerSpec::Recurrent { inputs, hidden, bidirectional, .. } => match *input {
                [_, f] | [1, _, f] if f == inputs => Ok(vec![if bidirectional { 2 * hidden } else { hidden }]),
                [_, f] | [1, _, f] => Err(format!("it takes {inputs} features per step but gets {f}")),
                _ => Err(format!("a recurrent layer needs sequences [steps, features] but gets {input:?}")),
            },
            LayerSpec::Embedding { context, dim, .. } => match *input {
                [steps] if steps == context => Ok(vec![steps, dim]),
                _ => Err(format!("it takes sequences of {context} ids but gets {input:?}")),
            },
            LayerSpec::Positions { max_len, dim, .. } => match *input {
                [steps, d] if d == dim && steps <= max_len => Ok(input.to_vec()),
                [steps, d] if d == dim => Err(format!("it encodes at most {max_len} positions but gets {steps}")),
                _ => Err(format!("it takes sequences [steps, {dim}] but gets {input:?}")),
            },
            LayerSpec::Transformer { width, heads, feed_forward, .. } => match *input {
                _ if heads == 0 || feed_forward == 0 || !width.is_multiple_of(heads) => {
                    Err(format!("a width of {width} cannot be shared by {heads} heads (it must be a multiple)"))
                }
                [_, w] if w == width => Ok(input.to_vec()),
                _ => Err(format!("it takes sequences [steps, {width}] but gets {input:?}")),
            },
        }
    }
}

/// A description of a network from which it can be built, saved with its weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Architecture {
    /// The layers, in order.
    pub layers: Vec<LayerSpec>,
}

/// Why a network could not be built, saved or loaded.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The architecture is not valid.
    #[error("invalid architecture: {0}")]
    Architecture(String),
    /// The file could not be read or written, or does not hold this network.
    #[error(transparent)]
    Io(#[from] IoError),
    /// An input does not fit the network ([`Network::check_input`]).
    #[error("{0}")]
    Input(String),
}

impl Architecture {
    /// A multi-layer perceptron: fully connected layers of `widths` with `activation`
    /// between them and none after the last (its outputs are logits). `init` defaults to
    /// the activation's (He for rectifiers, Xavier otherwise).
    pub fn mlp(widths: &[usize], activation: Activation, init: Option<Init>) -> Architecture {
        let init = init.unwrap_or(activation.default_init());
        let mut layers = Vec::new();
        for (i, pair) in widths.windows(2).enumerate() {
            layers.push(LayerSpec::Linear { inputs: pair[0], outputs: pair[1], init });
            if i + 2 < widths.len() {
                layers.push(match activation {
                    Activation::PRelu { alpha } => LayerSpec::PRelu { alpha },
                    function => LayerSpec::Activation { function },
                });
            }
        }
        Architecture { layers }
    }

    /// The number of input features of one example (flat rows; images are unflattened by
    /// the first layer).
    pub fn inputs(&self) -> usize {
        self.input_shape().iter().product()
    }

    /// The shape of one example as the first layer takes it: `[features]` (a convolutional
    /// network starts with an [`LayerSpec::Unflatten`]).
    pub fn input_shape(&self) -> Vec<usize> {
        // Layers that pass flat rows on unchanged say nothing of the width; the first one
        // that has a width decides.
        let passes_rows = |l: &&LayerSpec| {
            matches!(
                l,
                LayerSpec::Activation { .. } | LayerSpec::PRelu { .. } | LayerSpec::Dropout { .. } | LayerSpec::Flatten
            )
        };
        match self.layers.iter().find(|l| !passes_rows(l)) {
            Some(LayerSpec::Linear { inputs, .. }) => vec![*inputs],
            Some(LayerSpec::Unflatten { channels, height, width }) => {
                vec![channels.saturating_mul(*height).saturating_mul(*width)]
            }
            Some(LayerSpec::BatchNorm { channels: width } | LayerSpec::LayerNorm { features: width }) => vec![*width],
            Some(LayerSpec::Embedding { context, .. }) => vec![*context],
            _ => vec![0],
        }
    }

    /// The shape of one example after each layer, the input's first; an error names the
    /// first layer that does not fit.
    ///
    /// # Errors
    /// [`NetworkError::Architecture`] naming the layer and the shapes.
    pub fn shapes(&self) -> Result<Vec<Vec<usize>>, NetworkError> {
        let mut shapes = vec![self.input_shape()];
        for (i, layer) in self.layers.iter().enumerate() {
            let before = shapes.last().expect("the input's shape");
            let after = layer
                .output_shape(before)
                .map_err(|e| NetworkError::Architecture(format!("layer {i} ({}): {e}", layer_name(layer))))?;
            if after.contains(&0) {
                return Err(NetworkError::Architecture(format!(
                    "layer {i} ({}) gives an empty output {after:?}",
                    layer_name(layer)
                )));
            }
            shapes.push(after);
        }
        Ok(shapes)
    }

    /// The output width (of the last fully connected layer).
    pub fn outputs(&self) -> usize {
        self.layers
            .iter()
            .rev()
            .find_map(|l| if let LayerSpec::Linear { outputs, .. } = l { Some(*outputs) } else { None })
            .unwrap_or(0)
    }

    /// Every parameter's name and shape, in the order of the state dict, computed without
    /// building anything.
    pub fn parameter_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let mut out = Vec::new();
        for (i, layer) in self.named_layers() {
            match *layer {
                LayerSpec::Linear { inputs, outputs, .. } => {
                    out.push((format!("{i}.weight"), vec![outputs, inputs]));
                    out.push((format!("{i}.bias"), vec![outputs]));
                }
                LayerSpec::PRelu { .. } => out.push((format!("{i}.alpha"), vec![1])),
                LayerSpec::Conv2d { inputs, outputs, kernel, .. } => {
                    out.push((format!("{i}.weight"), vec![outputs, inputs, kernel, kernel]));
                    out.push((format!("{i}.bias"), vec![outputs]));
                }
                LayerSpec::Recurrent { cell, inputs, hidden, layers, bidirectional, .. } => {
                    let rows = cell.gates() * hidden;
                    let directions = if bidirectional { 2 } else { 1 };
                    for layer in 0..layers {
                        let width = if layer == 0 { inputs } else { directions * hidden };
                        for suffix in ["", "_reverse"].into_iter().take(directions) {
                            out.push((format!("{i}.weight_ih_l{layer}{suffix}"), vec![rows, width]));
                            out.push((format!("{i}.weight_hh_l{layer}{suffix}"), vec![rows, hidden]));
                            out.push((format!("{i}.bias_ih_l{layer}{suffix}"), vec![rows]));
                            out.push((format!("{i}.bias_hh_l{layer}{suffix}"), vec![rows]));
                        }
                    }
                }
                LayerSpec::BatchNorm { channels: n } | LayerSpec::LayerNorm { features: n } => {
                    out.push((format!("{i}.weight"), vec![n]));
                    out.push((format!("{i}.bias"), vec![n]));
                }
                LayerSpec::Embedding { vocab, dim, .. } => out.push((format!("{i}.weight"), vec![vocab, dim])),
                LayerSpec::Positions { max_len, dim, learned: true } => {
                    out.push((format!("{i}.weight"), vec![max_len, dim]))
                }
                LayerSpec::Transformer { width: e, feed_forward: f, .. } => {
                    for (name, shape) in [
                        ("self_attn.in_proj_weight", vec![3 * e, e]),
                        ("self_attn.in_proj_bias", vec![3 * e]),
                        ("self_attn.out_proj.weight", vec![e, e]),
                        ("self_attn.out_proj.bias", vec![e]),
                        ("linear1.weight", vec![f, e]),
                        ("linear1.bias", vec![f]),
                        ("linear2.weight", vec![e, f]),
                        ("linear2.bias", vec![e]),
                        ("norm1.weight", vec![e]),
                        ("norm1.bias", vec![e]),
                        ("norm2.weight", vec![e]),
                        ("norm2.bias", vec![e]),
                    ] {
                        out.push((format!("{i}.{name}"), shape));
                    }
                }
                LayerSpec::Positions { learned: false, .. }
                | LayerSpec::Activation { .. }
                | LayerSpec::Dropout { .. }
                | LayerSpec::Unflatten { .. }
                | LayerSpec::MaxPool2d { .. }
                | LayerSpec::AvgPool2d { .. }
                | LayerSpec::Flatten => {}
            }
        }
        out
    }

    /// Every buffer's name and shape (batch norm's running statistics), computed without
    /// building anything.
    pub fn buffer_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let mut out = Vec::new();
        for (i, layer) in self.named_layers() {
            if let LayerSpec::BatchNorm { channels } = *layer {
                out.push((format!("{i}.running_mean"), vec![channels]));
                out.push((format!("{i}.running_var"), vec![channels]));
                out.push((format!("{i}.num_batches_tracked"), vec![]));
            }
        }
        out
    }

    /// Whether layer 0 is the input's reshape to images, which takes no place in the
    /// parameter names (the equivalent `nn.Sequential` takes `[N, C, H, W]` and starts with
    /// the convolution, `0.weight`).
    fn unflattens_input(&self) -> bool {
        matches!(self.layers.first(), Some(LayerSpec::Unflatten { .. }))
    }

    /// The layers with the positions that name their parameters, the hidden input
    /// reshape left out (see [`Sequential::push_unnamed`]).
    fn named_layers(&self) -> impl Iterator<Item = (usize, &LayerSpec)> {
        self.layers.iter().skip(usize::from(self.unflattens_input())).enumerate()
    }

    /// The number of numbers in all parameters (saturating), computed without building.
    pub fn parameter_count(&self) -> usize {
        self.parameter_shapes()
            .iter()
            .fold(0usize, |n, (_, s)| n.saturating_add(s.iter().fold(1usize, |a, &d| a.saturating_mul(d))))
    }

    /// Checks that the layers fit together and that the network has at most
    /// `max_parameters` numbers (so that a claimed size is refused before any allocation).
    ///
    /// # Errors
    /// [`NetworkError::Architecture`] saying what does not fit.
    pub fn check(&self, max_parameters: usize) -> Result<(), NetworkError> {
        let bad = |m: String| Err(NetworkError::Architecture(m));
        for (i, layer) in self.layers.iter().enumerate() {
            match *layer {
                LayerSpec::Linear { inputs, outputs, .. } if inputs == 0 || outputs == 0 => {
                    return bad(format!("layer {i} has a width of 0 ({inputs} → {outputs})"));
                }
                LayerSpec::Activation { function: Activation::Softmax } => {
                    return bad("softmax is applied by the loss; pick another hidden activation".into())
                }
                LayerSpec::Unflatten { .. } if i > 0 => {
                    return bad(format!("layer {i}: images can only be made of the input, at layer 0"))
                }
                LayerSpec::Embedding { .. } if i > 0 => {
                    return bad(format!("layer {i}: an embedding takes the input's ids, so it must be layer 0"))
                }
                _ => {}
            }
        }
        if !matches!(self.layers.last(), Some(LayerSpec::Linear { .. })) {
            return bad("it must end with a fully connected layer (its outputs are the logits)".into());
        }
        if self.input_shape() == [0] {
            return bad("it must start with a fully connected layer or images (image:C:H:W)".into());
        }
        self.shapes()?;
        let count = self.parameter_count();
        if count > max_parameters {
            return bad(format!("{count} parameters is more than the {max_parameters} allowed"));
        }
        Ok(())
    }

    /// Builds the network with weights drawn from `seed`.
    ///
    /// # Panics
    /// If the architecture does not pass [`Architecture::check`] (call it first on
    /// architectures from outside the program).
    pub fn build<T: Element>(&self, seed: u64) -> Sequential<T> {
        if let Err(e) = self.check(usize::MAX) {
            panic!("Architecture::build: {e}");
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut net = Sequential::new();
        for (index, layer) in self.layers.iter().enumerate() {
            match *layer {
                LayerSpec::Linear { inputs, outputs, init } => {
                    net.push(Linear::<T>::new(inputs, outputs, init, &mut rng))
                }
                LayerSpec::Activation { function } => net.push(ActivationLayer(function)),
                LayerSpec::PRelu { alpha } => net.push(PRelu::<T>::new(alpha)),
                LayerSpec::Unflatten { channels, height, width } => {
                    net.push_unnamed(Unflatten([channels, height, width]))
                }
                LayerSpec::Conv2d { inputs, outputs, init, .. } => {
                    let window = layer.window().expect("a windowed layer");
                    net.push(Conv2d::<T>::new(inputs, outputs, window, 1, init, &mut rng))
                }
                LayerSpec::MaxPool2d { .. } => net.push(MaxPool2d(layer.window().expect("a windowed layer"))),
                LayerSpec::AvgPool2d { .. } => net.push(AvgPool2d::new(layer.window().expect("a windowed layer"))),
                LayerSpec::Flatten => net.push(Flatten),
                LayerSpec::Recurrent { cell, inputs, hidden, sequence, layers, bidirectional } => {
                    let options = RecurrentOptions { num_layers: layers, bidirectional, ..Default::default() };
                    net.push(Recurrent::<T>::with_options(cell, inputs, hidden, options, !sequence, &mut rng))
                }
                LayerSpec::Embedding { vocab, dim, .. } => net.push(Embedding::<T>::new(vocab, dim, &mut rng)),
                LayerSpec::Positions { max_len, dim, learned: true } => {
                    net.push(PositionalEmbedding::<T>::new(max_len, dim, &mut rng))
                }
                LayerSpec::Positions { max_len, dim, learned: false } => {
                    net.push(SinusoidalPositions::<T>::new(max_len, dim))
                }
                LayerSpec::Transformer { width, heads, feed_forward, causal } => {
                    let options = TransformerOptions {
                        dim_feedforward: feed_forward,
                        dropout: 0.0,
                        activation: FeedForwardActivation::Gelu,
                        batch_first: true,
                        norm_first: true,
                        ..TransformerOptions::new(width, heads)
                    };
                    net.push(TransformerEncoderLayer::<T>::new(options, &mut rng).with_causal(causal))
                }
                LayerSpec::Dropout { p } => net.push(Dropout::new(p, index as u64)),
                LayerSpec::BatchNorm { channels } => net.push(BatchNorm::<T>::new(channels)),
                LayerSpec::LayerNorm { features } => net.push(LayerNorm::<T>::new(features)),
            };
        }
        net
    }

    /// The hidden activation (of the first activation layer), for reports.
    pub fn activation(&self) -> Option<Activation> {
        self.layers.iter().find_map(|l| match *l {
            LayerSpec::Activation { function } => Some(function),
            LayerSpec::PRelu { alpha } => Some(Activation::PRelu { alpha }),
            _ => None,
        })
    }

    /// The widths of the fully connected layers, input first (e.g. `[784, 100, 10]`).
    pub fn widths(&self) -> Vec<usize> {
        let mut out = Vec::new();
        for l in &self.layers {
            if let LayerSpec::Linear { inputs, outputs, .. } = *l {
                if out.is_empty() {
                    out.push(inputs);
                }
                out.push(outputs);
            }
        }
        out
    }
}

/// A network with its architecture and input standardisation.
pub struct Network<T: Element> {
    /// How it was built.
    pub architecture: Architecture,
    /// The layers.
    pub model: Sequential<T>,
    /// The standardisation its inputs get (fitted on the training data), if any.
    pub input_norm: Option<InputNorm>,
}

impl<T: Element> Network<T> {
    /// Builds `architecture` with weights drawn from `seed`.
    ///
    /// # Errors
    /// If the architecture is not valid.
    pub fn new(architecture: Architecture, seed: u64) -> Result<Self, NetworkError> {
        architecture.check(usize::MAX)?;
        let model = architecture.build(seed);
        Ok(Network { architecture, model, input_norm: None })
    }

    /// The outputs for raw features (one row per example): standardised as in training, then
    /// through the layers in their current mode (a loaded network is in evaluation mode; one
    /// you trained yourself needs [`Module::eval`] first if it has dropout or batch norm).
    /// Nothing is recorded.
    ///
    /// Takes rows in the network's element type, owned or viewed (`&Array2<T>`,
    /// `array.view()`, a slice of rows).
    ///
    /// # Panics
    /// If the rows do not fit the network (see [`Network::try_predict`] for an error instead).
    #[track_caller]
    pub fn predict<'a>(&self, features: impl Into<ndarray::ArrayView2<'a, T>>) -> Tensor<T>
    where
        T: 'a,
    {
        let features = features.into();
        let x = self.standardised(features);
        crate::autodiff::no_grad(|| self.model.forward(&x))
    }

    /// [`Network::predict`] that checks the rows first ([`Network::check_input`]) and returns
    /// an error instead of panicking: for a program that serves requests.
    ///
    /// ```
    /// use adjoint::nn::{Activation, Architecture, Network};
    /// let net = Network::<f64>::new(Architecture::mlp(&[3, 4, 2], Activation::TANH, None), 1).unwrap();
    /// assert_eq!(net.try_predict(&ndarray::Array2::zeros((5, 3))).unwrap().shape(), [5, 2]);
    /// let e = net.try_predict(&ndarray::Array2::zeros((5, 4))).unwrap_err().to_string();
    /// assert!(e.contains("[5, 4]") && e.contains("fc 3→4"), "{e}");
    /// ```
    ///
    /// # Errors
    /// [`NetworkError::Input`] naming the first layer the rows do not fit.
    pub fn try_predict<'a>(&self, features: impl Into<ndarray::ArrayView2<'a, T>>) -> Result<Tensor<T>, NetworkError>
    where
        T: 'a,
    {
        let features = features.into();
        if let Some(norm) = self.input_norm.as_ref().filter(|n| n.mean.len() != features.ncols()) {
            return Err(NetworkError::Input(format!(
                "rows of {} features for a network standardised over {}",
                features.ncols(),
                norm.mean.len()
            )));
        }
        self.check_input(features.shape())?;
        // What the first layer gets: the rows after standardisation.
        let x = self.standardised(features);
        self.check_values(&x.view())?;
        Ok(crate::autodiff::no_grad(|| self.model.forward(&x)))
    }

    /// [`Module::forward`] that checks the input first ([`Network::check_input`]) and returns
    /// an error instead of panicking.
    ///
    /// # Errors
    /// [`NetworkError::Input`] naming the first layer the input does not fit.
    pub fn try_forward(&self, x: &Tensor<T>) -> Result<Tensor<T>, NetworkError> {
        self.check_input(x.shape())?;
        self.check_values(&x.view())?;
        Ok(self.model.forward(x))
    }

    /// Whether a batch of `shape` (`[batch, …]`, as [`Module::forward`] and
    /// [`Network::predict`] take it) fits every layer; the error names the first layer that
    /// it does not fit and both shapes. A language model takes up to its context of ids.
    ///
    /// # Errors
    /// [`NetworkError::Input`].
    pub fn check_input(&self, shape: &[usize]) -> Result<(), NetworkError> {
        let wrong = |message: String| NetworkError::Input(format!("an input of shape {shape:?}: {message}"));
        let Some((_, example)) = shape.split_first() else {
            return Err(wrong("a batch axis is needed ([batch, …])".into()));
        };
        let mut layers = self.architecture.layers.clone();
        // A language model reads prompts shorter than the context it was trained on.
        if let (Some(LayerSpec::Embedding { context, .. }), [steps]) = (layers.first_mut(), example) {
            if (1..=*context).contains(steps) {
                *context = *steps;
            }
        }
        let mut current = example.to_vec();
        for (i, layer) in layers.iter().enumerate() {
            current =
                layer.output_shape(&current).map_err(|e| wrong(format!("layer {i} ({}): {e}", layer_name(layer))))?;
        }
        Ok(())
    }

    /// Ids given to an embedding must be whole numbers below its vocabulary.
    fn check_values(&self, x: &ndarray::ArrayViewD<'_, T>) -> Result<(), NetworkError> {
        if let Some(LayerSpec::Embedding { vocab, .. }) = self.architecture.layers.first() {
            if let Some(bad) =
                x.iter().map(|v| v.to_f64_lossless()).find(|v| !(v.fract() == 0.0 && (0.0..*vocab as f64).contains(v)))
            {
                return Err(NetworkError::Input(format!(
                    "id {bad} is not a whole number below the vocabulary's {vocab}"
                )));
            }
        }
        Ok(())
    }

    /// The rows standardised as in training, as a tensor of the network's type.
    fn standardised(&self, features: ndarray::ArrayView2<'_, T>) -> Tensor<T> {
        let mut x = features.to_owned();
        if let Some(norm) = &self.input_norm {
            assert_eq!(
                x.ncols(),
                norm.mean.len(),
                "predict: rows of {} features for a network standardised over {}",
                x.ncols(),
                norm.mean.len()
            );
            // In f32, as the training data was standardised.
            for mut row in x.rows_mut() {
                for ((v, &m), &s) in row.iter_mut().zip(&norm.mean).zip(&norm.std) {
                    let f = v.to_f64_lossless() as f32;
                    *v = T::from_f64_lossy(((f - m) / s) as f64);
                }
            }
        }
        Tensor::from_array(x.into_dyn())
    }

    /// What every attending layer attends to for `input` (a batch, as [`Module::forward`]
    /// takes it): (the layer's index, its heads' weights `[batch, heads, Lq, Lk]`), in the
    /// network's current mode. Nothing is recorded.
    ///
    /// ```
    /// use adjoint::nn::{Architecture, Module, Network};
    /// let arch = Architecture::parse_language_model("embed:8,pos,transformer:2,transformer:2,fc", 5, 4, None).unwrap();
    /// let net = Network::<f32>::new(arch, 1).unwrap();
    /// let maps = net.attention_maps(&adjoint::Tensor::from_vec(vec![0.0, 1.0, 2.0, 3.0, 0.0], &[1, 5]));
    /// assert_eq!(maps.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [2, 3]);
    /// assert_eq!(maps[0].1.shape(), [1, 2, 5, 5]);
    /// // Causal: the first position attends only to itself.
    /// assert_eq!(maps[0].1.to_vec()[..5], [1.0, 0.0, 0.0, 0.0, 0.0]);
    /// ```
    pub fn attention_maps(&self, input: &Tensor<T>) -> Vec<(usize, Tensor<T>)> {
        crate::autodiff::no_grad(|| {
            let mut x = input.clone();
            let mut maps = Vec::new();
            for (i, layer) in self.model.layers().iter().enumerate() {
                if let Some(w) = layer.attention_weights(&x) {
                    maps.push((i, w));
                }
                x = layer.forward(&x);
            }
            maps
        })
    }

    /// The tensors a model file holds: the state dict and the input standardisation.
    pub fn tensors(&self) -> Vec<(String, ArrayD<T>)> {
        let mut out = self.model.state_dict();
        if let Some(norm) = &self.input_norm {
            out.push(("input.mean".into(), norm.mean.mapv(|v| T::from_f64_lossy(v as f64)).into_dyn()));
            out.push(("input.std".into(), norm.std.mapv(|v| T::from_f64_lossy(v as f64)).into_dyn()));
        }
        out
    }

    /// The metadata a model file holds: the format and the architecture.
    pub fn metadata(&self) -> HashMap<String, String> {
        let mut meta = HashMap::new();
        meta.insert("format".into(), FORMAT.into());
        meta.insert("names".into(), NAMES.into());
        meta.insert(
            "architecture".into(),
            serde_json::to_string(&self.architecture).expect("an architecture serialises"),
        );
        meta
    }

    /// Saves weights, architecture and input standardisation to one file, atomically, in
    /// this element type.
    ///
    /// # Errors
    /// If the file cannot be written.
    pub fn save(&self, path: &Path) -> Result<(), NetworkError> {
        self.save_with(path, &HashMap::new())
    }

    /// Like [`Network::save`], with `extra` metadata entries (which cannot replace the
    /// format or the architecture).
    ///
    /// # Errors
    /// If the file cannot be written.
    pub fn save_with(&self, path: &Path, extra: &HashMap<String, String>) -> Result<(), NetworkError> {
        let mut meta = self.metadata();
        for (k, v) in extra {
            meta.entry(k.clone()).or_insert_with(|| v.clone());
        }
        Ok(io::save(path, &self.tensors(), &meta)?)
    }

    /// Like [`Network::load`], also returning the file's metadata.
    ///
    /// # Errors
    /// As [`Network::load`].
    pub fn load_with_metadata(path: &Path) -> Result<(Self, HashMap<String, String>), NetworkError> {
        let file = io::load::<T>(path, &Limits::default())?;
        let net = Self::from_tensors(path, file.tensors, &file.metadata)?;
        Ok((net, file.metadata))
    }

    /// Loads a network saved by [`Network::save`] (or an `adjoint-mlp-v1` file of earlier
    /// versions), in evaluation mode (dropout off, batch norm on its running statistics;
    /// [`Module::train`] switches back). The architecture is checked against the tensors in
    /// the file before anything is built, so a file that claims a huge network is refused
    /// without allocating it.
    ///
    /// # Errors
    /// If the file cannot be read, is not a model file, or its tensors do not fit its
    /// architecture.
    pub fn load(path: &Path) -> Result<Self, NetworkError> {
        let file = io::load::<T>(path, &Limits::default())?;
        Self::from_tensors(path, file.tensors, &file.metadata)
    }

    /// A network from the bytes of a model file (see [`Network::load`]); `origin` names them
    /// in errors.
    ///
    /// # Errors
    /// As [`Network::load`].
    pub fn decode(bytes: &[u8], origin: &Path) -> Result<Self, NetworkError> {
        let file = io::decode::<T>(bytes, origin)?;
        Self::from_tensors(origin, file.tensors, &file.metadata)
    }

    /// A network from a model file's tensors and metadata (see [`Network::load`]), in
    /// evaluation mode.
    ///
    /// # Errors
    /// As [`Network::load`].
    pub fn from_tensors(
        path: &Path,
        mut tensors: HashMap<String, ArrayD<T>>,
        metadata: &HashMap<String, String>,
    ) -> Result<Self, NetworkError> {
        let invalid = |m: String| NetworkError::Io(IoError::invalid(path, m));
        let architecture = match metadata.get("format").map(String::as_str) {
            Some(FORMAT) => {
                let json =
                    metadata.get("architecture").ok_or_else(|| invalid("metadata 'architecture' is missing".into()))?;
                let architecture = serde_json::from_str::<Architecture>(json)
                    .map_err(|e| invalid(format!("bad architecture: {e}")))?;
                if architecture.unflattens_input() && metadata.get("names").map(String::as_str) != Some(NAMES) {
                    // Written before the reshape left the names: "3.weight" is now "2.weight".
                    tensors = tensors
                        .into_iter()
                        .map(|(name, t)| match name.split_once('.') {
                            Some((layer, rest)) => match layer.parse::<usize>() {
                                Ok(k) if k > 0 => (format!("{}.{rest}", k - 1), t),
                                _ => (name, t),
                            },
                            None => (name, t),
                        })
                        .collect();
                }
                architecture
            }
            Some(FORMAT_V1) => {
                let v1 = upgrade_v1(metadata).map_err(invalid)?;
                // v1 stored weights [in, out]; the state dict is [out, in].
                for (name, _) in v1.parameter_shapes() {
                    if name.ends_with(".weight") {
                        if let Some(w) = tensors.remove(&name) {
                            tensors.insert(name, w.reversed_axes().as_standard_layout().into_owned());
                        }
                    }
                }
                v1
            }
            _ => return Err(invalid(format!("not an adjoint model (metadata 'format' is not '{FORMAT}')"))),
        };
        architecture.check(usize::MAX).map_err(|e| invalid(e.to_string()))?;
        // Every parameter must be in the file with its shape before the network is built.
        for (name, shape) in architecture.parameter_shapes().into_iter().chain(architecture.buffer_shapes()) {
            match tensors.get(&name) {
                None if io::is_integer_buffer(&name) => {}
                None => return Err(invalid(format!("tensor '{name}' is missing"))),
                Some(t) if t.shape() != shape.as_slice() => {
                    return Err(invalid(format!(
                        "tensor '{name}' has shape {:?}, the architecture needs {shape:?}",
                        t.shape()
                    )))
                }
                Some(_) => {}
            }
        }
        let input_norm = match (tensors.remove("input.mean"), tensors.remove("input.std")) {
            (Some(mean), Some(std)) => {
                let to_f32 = |a: ArrayD<T>| -> Result<Array1<f32>, NetworkError> {
                    a.mapv(|v| v.to_f64_lossless() as f32)
                        .into_dimensionality()
                        .map_err(|_| invalid("input.mean and input.std must be 1-D".into()))
                };
                let (mean, std) = (to_f32(mean)?, to_f32(std)?);
                if mean.len() != architecture.inputs() || std.len() != mean.len() {
                    return Err(invalid(format!(
                        "input standardisation has {} features, the network {}",
                        mean.len(),
                        architecture.inputs()
                    )));
                }
                Some(InputNorm { mean, std })
            }
            _ => None,
        };
        let mut model = architecture.build::<T>(0);
        model.load_state_dict(&tensors).map_err(|e| invalid(e.to_string()))?;
        // A loaded model is for inference unless the caller says otherwise (a Trainer
        // switches to training at the start of every epoch).
        model.set_training(false);
        Ok(Network { architecture, model, input_norm })
    }
}

/// A layer's name in messages.
fn layer_name(layer: &LayerSpec) -> String {
    match *layer {
        LayerSpec::Linear { inputs, outputs, .. } => format!("fc {inputs}→{outputs}"),
        LayerSpec::Activation { function } => function.to_string(),
        LayerSpec::PRelu { .. } => "prelu".into(),
        LayerSpec::Unflatten { channels, height, width } => format!("image {channels}×{height}×{width}"),
        LayerSpec::Conv2d { inputs, outputs, kernel, .. } => format!("conv {inputs}→{outputs} {kernel}×{kernel}"),
        LayerSpec::MaxPool2d { kernel, .. } => format!("maxpool {kernel}×{kernel}"),
        LayerSpec::AvgPool2d { kernel, .. } => format!("avgpool {kernel}×{kernel}"),
        LayerSpec::Flatten => "flatten".into(),
        LayerSpec::Recurrent { cell, inputs, hidden, sequence, layers, bidirectional } => {
            let every = if sequence { ", every step" } else { "" };
            let stacked = if layers > 1 { format!(" ×{layers} layers") } else { String::new() };
            let both = if bidirectional { " bidirectional" } else { "" };
            format!("{} {inputs}→{hidden}{stacked}{both}{every}", cell.name())
        }
        LayerSpec::Embedding { vocab, dim, .. } => format!("embedding {vocab}×{dim}"),
        LayerSpec::Positions { max_len, learned: true, .. } => format!("learned positions ({max_len})"),
        LayerSpec::Positions { learned: false, .. } => "sinusoidal positions".into(),
        LayerSpec::Transformer { width, heads, causal, .. } => {
            format!("transformer {heads}×{width}{}", if causal { ", causal" } else { "" })
        }
        LayerSpec::Dropout { p } => format!("dropout {p}"),
        LayerSpec::BatchNorm { channels } => format!("batchnorm {channels}"),
        LayerSpec::LayerNorm { features } => format!("layernorm {features}"),
    }
}

/// The architecture of an `adjoint-mlp-v1` file, from the training configuration it kept.
fn upgrade_v1(metadata: &HashMap<String, String>) -> Result<Architecture, String> {
    #[derive(Deserialize)]
    struct V1 {
        layers: Vec<usize>,
        activation: Activation,
        init: Init,
    }
    let config = metadata.get("config").ok_or("metadata 'config' is missing")?;
    let v1: V1 = serde_json::from_str(config).map_err(|e| format!("bad config: {e}"))?;
    if v1.layers.len() < 2 {
        return Err(format!("bad config: layers {:?}", v1.layers));
    }
    Ok(Architecture::mlp(&v1.layers, v1.activation, Some(v1.init)))
}

impl<T: Element> Module<T> for Network<T> {
    fn forward(&self, x: &Tensor<T>) -> Tensor<T> {
        self.model.forward(x)
    }
    fn visit<'a>(&'a self, path: &mut String, f: &mut dyn FnMut(&str, &'a Tensor<T>)) {
        self.model.visit(path, f);
    }
    fn visit_mut(&mut self, path: &mut String, f: &mut dyn FnMut(&str, &mut Tensor<T>)) {
        self.model.visit_mut(path, f);
    }
    fn set_training(&mut self, training: bool) {
        self.model.set_training(training);
    }
    fn visit_buffers(&self, path: &mut String, f: &mut dyn FnMut(&str, ArrayD<T>)) {
        self.model.visit_buffers(path, f);
    }
    fn load_buffers(&mut self, path: &mut String, values: &HashMap<String, ArrayD<T>>) {
        self.model.load_buffers(path, values);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_and_load_round_trip_in_f32_and_f64_with_pytorch_names() {
        let dir = std::env::temp_dir().join(format!("adjoint-net-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let arch = Architecture::mlp(&[4, 5, 3], Activation::TANH, None);
        let mut net = Network::<f64>::new(arch.clone(), 7).unwrap();
        net.input_norm = Some(InputNorm { mean: Array1::from(vec![0.5; 4]), std: Array1::from(vec![2.0; 4]) });
        let names: Vec<String> = net.model.parameters().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["0.weight", "0.bias", "2.weight", "2.bias"]);
        assert_eq!(net.model.parameters()[0].1.shape(), &[5, 4], "[out, in] as PyTorch");
        let p = dir.join("m.safetensors");
        net.save(&p).unwrap();
        let back = Network::<f64>::load(&p).unwrap();
        assert_eq!(back.architecture, arch);
        assert_eq!(back.input_norm, net.input_norm);
        assert_eq!(back.model.state_dict(), net.model.state_dict());
        let x = ndarray::Array2::from_shape_fn((2, 4), |(i, j)| (i + j) as f64);
        assert_eq!(back.predict(&x).to_vec(), net.predict(&x).to_vec());
        // The f64 file loads as f32 too.
        assert!(Network::<f32>::load(&p).is_ok());
    }

    #[test]
    fn a_file_claiming_a_huge_network_is_refused_before_building() {
        let dir = std::env::temp_dir().join(format!("adjoint-net-huge-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let huge = Architecture::mlp(&[784, 1_000_000_000, 10], Activation::RELU, None);
        let mut meta = HashMap::new();
        meta.insert("format".to_string(), FORMAT.to_string());
        meta.insert("architecture".to_string(), serde_json::to_string(&huge).unwrap());
        let p = dir.join("huge.safetensors");
        io::save::<f32>(&p, &[], &meta).unwrap();
        let err = Network::<f32>::load(&p).err().unwrap().to_string();
        assert!(err.contains("0.weight") && err.contains("missing"), "{err}");
    }
}
