//! A small language for architectures, as `adjoint train --arch` takes them: layers
//! separated by commas, each a name and its numbers separated by colons.
//!
//! | element | layer |
//! |---|---|
//! | `image:C:H:W` | flat rows as `C`×`H`×`W` images (added by itself when a network on image data starts with a convolution or pooling) |
//! | `conv:OUT:K[:STRIDE[:PAD]]` | `OUT` filters of `K`×`K` (stride 1, no padding by default) |
//! | `maxpool:K[:STRIDE]`, `avgpool:K[:STRIDE]` | pooling over `K`×`K` windows (stride `K` by default) |
//! | `flatten` | images to flat rows |
//! | `dropout:P` | drops each element with probability `P` in training |
//! | `batchnorm`, `layernorm` | batch normalisation (per channel, or per feature of flat rows); layer normalisation of flat rows |
//! | `fc:N` | a fully connected layer of `N` outputs |
//! | `lstm:H[:LAYERS][:bi]`, `gru:…`, `rnn:…`, `rnn-relu:…` | a recurrent layer of `H` units over the rows of an image (or a `[steps, features]` input), giving its last state; `LAYERS` stacked (1 by default), reading both ways with `bi` (its output then `2·H` wide), as PyTorch's `num_layers` and `bidirectional` |
//! | an activation (`relu`, `tanh`, `leaky-relu:0.1`, `prelu`, `gelu`, …) | applied elementwise |
//!
//! A language model ([`Architecture::parse_language_model`]) takes `context` character ids
//! and predicts the next character at every position, so its elements work on sequences
//! `[steps, width]`:
//!
//! | element | layer |
//! |---|---|
//! | `embed:D` | the first layer: each id to a learned vector of `D` |
//! | `pos[:N]`, `pos:sin` | adds learned encodings of up to `N` positions (the context by default), or sinusoidal ones |
//! | `transformer:HEADS[:FF]` | a causal pre-norm transformer block (GELU, feed-forward `FF`, 4 × the width by default) |
//! | `lstm:H[:LAYERS]`, `gru:…`, `rnn:…` | a recurrent layer (of `LAYERS` stacked) giving every step's state |
//! | `fc[:N]` | per position; `fc` alone has one output per character of the vocabulary |
//! | `layernorm`, `dropout:P`, activations | per position |
//!
//! Input sizes are inferred from the data's shape, so only outputs are written. The last
//! layer must be `fc:` with as many outputs as there are classes. Weights are initialised
//! for the activation that follows each layer (He for rectifiers, Xavier otherwise) unless
//! an initialiser is given. Named architectures: `lenet`
//! (`conv:20:5,relu,maxpool:2,conv:50:5,relu,maxpool:2,flatten,fc:500,relu,fc:10`).
//!
//! Invariant: [`Architecture::spec`] writes an architecture in this language such that
//! parsing it again gives the same architecture.

use super::network::{Architecture, LayerSpec};
use super::recurrent::CellKind;
use super::{Activation, Init};
use crate::SpecError;

/// Named architectures and their definitions.
pub const NAMED: &[(&str, &str)] =
    &[("lenet", "conv:20:5,relu,maxpool:2,conv:50:5,relu,maxpool:2,flatten,fc:500,relu,fc:10")];

impl Architecture {
    /// Parses the layer language (see the [module docs](self)) for examples of shape
    /// `input` (`[784]` for flat rows, `[1, 28, 28]` for images), with `init` for every
    /// weighted layer or, if `None`, each layer's default.
    ///
    /// ```
    /// use adjoint::nn::Architecture;
    /// let arch = Architecture::parse("lenet", &[1, 28, 28], None).unwrap();
    /// assert_eq!(arch.shapes().unwrap().last().unwrap(), &[10]);
    /// let err = Architecture::parse("conv:8:3,maxpool:30,flatten,fc:10", &[1, 28, 28], None).unwrap_err();
    /// assert!(err.to_string().contains("element 2 'maxpool:30'"), "{err}");
    /// ```
    ///
    /// # Errors
    /// [`SpecError`] naming the element (its position and characters) that is malformed or
    /// does not fit the shape before it.
    pub fn parse(spec: &str, input: &[usize], init: Option<Init>) -> Result<Architecture, SpecError> {
        Self::parse_with(spec, input, init, None)
    }

    /// Parses a language model over `context` ids of a vocabulary of `vocab` (see the
    /// [module docs](self)): it must start with `embed:D` and give `[context, vocab]` logits.
    ///
    /// ```
    /// use adjoint::nn::Architecture;
    /// let arch = Architecture::parse_language_model("embed:32,pos,transformer:4,layernorm,fc", 64, 50, None).unwrap();
    /// assert_eq!(arch.shapes().unwrap().last().unwrap(), &[64, 50]);
    /// assert_eq!(arch.spec(), "embed:32,pos:64,transformer:4:128,layernorm,fc:50");
    /// let err = Architecture::parse_language_model("fc:10", 64, 50, None).unwrap_err();
    /// assert!(err.to_string().contains("embed:"), "{err}");
    /// ```
    ///
    /// # Errors
    /// [`SpecError`] as [`Architecture::parse`].
    pub fn parse_language_model(
        spec: &str,
        context: usize,
        vocab: usize,
        init: Option<Init>,
    ) -> Result<Architecture, SpecError> {
        if !spec.trim_start().starts_with("embed") {
            return Err(SpecError(format!(
                "a language model starts with embed:WIDTH (each character id to a vector), e.g. \
                 embed:128,pos,transformer:4,transformer:4,layernorm,fc; got '{spec}'"
            )));
        }
        let arch = Self::parse_with(spec, &[context], init, Some(vocab))?;
        let last = arch.shapes().map_err(|e| SpecError(e.to_string()))?.pop().unwrap_or_default();
        if last != [context, vocab] {
            return Err(SpecError(format!(
                "a language model gives, at each of the {context} positions, a score per character of the \
                 vocabulary ({vocab}): it must end in [{context}, {vocab}], not {last:?} (end with fc)"
            )));
        }
        Ok(arch)
    }

    /// [`Architecture::parse`], or a language model's when `vocab` is given.
    fn parse_with(
        spec: &str,
        input: &[usize],
        init: Option<Init>,
        vocab: Option<usize>,
    ) -> Result<Architecture, SpecError> {
        let spec = NAMED.iter().find(|(name, _)| *name == spec.trim()).map_or(spec, |(_, s)| s);
        let mut elements = Vec::new();
        let mut at = 0;
        for text in spec.split(',') {
            elements.push((at, text));
            at += text.len() + 1;
        }
        let mut layers = Vec::new();
        let mut shape = input.to_vec();
        let needs_images = |text: &str| {
            ["conv", "maxpool", "avgpool", "lstm", "gru", "rnn", "rnn-relu"]
                .contains(&text.split(':').next().unwrap_or(""))
        };
        if let ([c, h, w], Some((_, first))) = (input, elements.first()) {
            if needs_images(first.trim()) {
                layers.push(LayerSpec::Unflatten { channels: *c, height: *h, width: *w });
            }
        }
        if input.len() == 3 && layers.is_empty() {
            shape = vec![input.iter().product()];
        }
        for (k, &(start, raw)) in elements.iter().enumerate() {
            let text = raw.trim();
            let fail = |why: String| {
                SpecError(format!(
                    "element {} '{text}' (characters {}–{} of the architecture): {why}",
                    k + 1,
                    start + 1,
                    start + raw.len()
                ))
            };
            if text.is_empty() {
                return Err(SpecError(format!(
                    "element {} of the architecture is empty (two commas, or a comma at an end)",
                    k + 1
                )));
            }
            let layer = element(text, &shape, k == 0, input, vocab).map_err(&fail)?;
            let next = layer.output_shape(&shape).map_err(&fail)?;
            if next.contains(&0) {
                return Err(fail(format!("gives an empty output {next:?}")));
            }
            layers.push(layer);
            shape = next;
        }
        // Each weighted layer gets the initialiser suited to the activation after it.
        let mut following = Activation::Identity;
        for layer in layers.iter_mut().rev() {
            match layer {
                LayerSpec::Activation { function } => following = *function,
                LayerSpec::PRelu { alpha } => following = Activation::PRelu { alpha: *alpha },
                LayerSpec::Linear { init: i, .. } | LayerSpec::Conv2d { init: i, .. } => {
                    *i = init.unwrap_or(following.default_init());
                    following = Activation::Identity;
                }
                _ => {}
            }
        }
        let arch = Architecture { layers };
        arch.check(usize::MAX).map_err(|e| SpecError(e.to_string()))?;
        Ok(arch)
    }

    /// The architecture in the layer language (initialisers aside), e.g.
    /// `image:1:28:28,conv:20:5,relu,…,fc:10`.
    pub fn spec(&self) -> String {
        let parts: Vec<String> = self
            .layers
            .iter()
            .map(|layer| match *layer {
                LayerSpec::Linear { outputs, .. } => format!("fc:{outputs}"),
                LayerSpec::Activation { function } => function.to_string(),
                LayerSpec::PRelu { alpha } => format!("prelu:{alpha}"),
                LayerSpec::Unflatten { channels, height, width } => format!("image:{channels}:{height}:{width}"),
                LayerSpec::Conv2d { outputs, kernel, stride, padding, .. } => match (stride, padding) {
                    (1, 0) => format!("conv:{outputs}:{kernel}"),
                    (s, 0) => format!("conv:{outputs}:{kernel}:{s}"),
                    (s, p) => format!("conv:{outputs}:{kernel}:{s}:{p}"),
                },
                LayerSpec::MaxPool2d { kernel, stride } if stride == kernel => format!("maxpool:{kernel}"),
                LayerSpec::MaxPool2d { kernel, stride } => format!("maxpool:{kernel}:{stride}"),
                LayerSpec::AvgPool2d { kernel, stride } if stride == kernel => format!("avgpool:{kernel}"),
                LayerSpec::AvgPool2d { kernel, stride } => format!("avgpool:{kernel}:{stride}"),
                LayerSpec::Flatten => "flatten".into(),
                LayerSpec::Recurrent { cell, hidden, layers, bidirectional, .. } => {
                    let mut text = format!("{}:{hidden}", cell.name());
                    if layers != 1 {
                        text += &format!(":{layers}");
                    }
                    if bidirectional {
                        text += ":bi";
                    }
                    text
                }
                LayerSpec::Embedding { dim, .. } => format!("embed:{dim}"),
                LayerSpec::Positions { max_len, learned: true, .. } => format!("pos:{max_len}"),
                LayerSpec::Positions { learned: false, .. } => "pos:sin".into(),
                LayerSpec::Transformer { heads, feed_forward, .. } => format!("transformer:{heads}:{feed_forward}"),
                LayerSpec::Dropout { p } => format!("dropout:{p}"),
                LayerSpec::BatchNorm { .. } => "batchnorm".into(),
                LayerSpec::LayerNorm { .. } => "layernorm".into(),
            })
            .collect();
        parts.join(",")
    }
}

/// One element of the language, for an input of `shape`.
fn element(
    text: &str,
    shape: &[usize],
    first: bool,
    input: &[usize],
    vocab: Option<usize>,
) -> Result<LayerSpec, String> {
    let mut parts = text.split(':');
    let name = parts.next().unwrap_or("");
    let args: Vec<&str> = parts.collect();
    let numbers = |min: usize, max: usize, usage: &str| -> Result<Vec<usize>, String> {
        if args.len() < min || args.len() > max {
            return Err(format!("expected {usage}"));
        }
        args.iter()
            .map(|a| {
                let a = a.trim();
                match a.parse::<usize>() {
                    Ok(v) if v > 0 || usage.contains("PAD") => Ok(v),
                    Err(e) if *e.kind() == std::num::IntErrorKind::PosOverflow => {
                        Err(format!("{a} is too large (expected {usage})"))
                    }
                    _ => Err(format!("'{a}' is not a positive whole number (expected {usage})")),
                }
            })
            .collect()
    };
    Ok(match name {
        "fc" | "linear" => {
            let n = match vocab {
                Some(v) if args.is_empty() => vec![v],
                Some(_) => numbers(1, 1, "fc[:OUTPUTS]")?,
                None => numbers(1, 1, "fc:OUTPUTS")?,
            };
            let inputs = match *shape {
                [n] => n,
                [_, n] if vocab.is_some() => n,
                _ => {
                    return Err(format!(
                        "a fully connected layer needs flat rows but gets {shape:?}; put flatten before it"
                    ))
                }
            };
            LayerSpec::Linear { inputs, outputs: n[0], init: Init::XavierUniform }
        }
        "conv" => {
            let n = numbers(2, 4, "conv:OUT:KERNEL[:STRIDE[:PAD]]")?;
            let channels = match *shape {
                [c, _, _] => c,
                _ => return Err(format!("a convolution needs images but gets {shape:?}")),
            };
            if n[1] == 0 || n.get(2) == Some(&0) {
                return Err("the kernel and the stride must be positive".into());
            }
            LayerSpec::Conv2d {
                inputs: channels,
                outputs: n[0],
                kernel: n[1],
                stride: n.get(2).copied().unwrap_or(1),
                padding: n.get(3).copied().unwrap_or(0),
                init: Init::XavierUniform,
            }
        }
        "maxpool" | "avgpool" => {
            let n = numbers(1, 2, &format!("{name}:KERNEL[:STRIDE]"))?;
            let (kernel, stride) = (n[0], n.get(1).copied().unwrap_or(n[0]));
            if name == "maxpool" {
                LayerSpec::MaxPool2d { kernel, stride }
            } else {
                LayerSpec::AvgPool2d { kernel, stride }
            }
        }
        "lstm" | "gru" | "rnn" | "rnn-relu" => {
            let usage = format!("{name}:HIDDEN[:LAYERS][:bi]");
            let bidirectional = args.last().is_some_and(|a| a.trim() == "bi");
            let sizes = &args[..args.len() - usize::from(bidirectional)];
            if sizes.is_empty() || sizes.len() > 2 {
                return Err(format!("expected {usage}"));
            }
            let mut n = Vec::new();
            for a in sizes {
                match a.trim().parse::<usize>() {
                    Ok(v) if v > 0 && v <= 1 << 20 => n.push(v),
                    _ => return Err(format!("'{a}' is not a positive whole number up to 2^20 (expected {usage})")),
                }
            }
            if bidirectional && vocab.is_some() {
                return Err("a language model cannot read its sequence backwards (it would see the characters \
                            it predicts): drop ':bi'"
                    .into());
            }
            let cell = match name {
                "lstm" => CellKind::Lstm,
                "gru" => CellKind::Gru,
                "rnn-relu" => CellKind::RnnRelu,
                _ => CellKind::Rnn,
            };
            let inputs = match *shape {
                [_, f] if vocab.is_some() => f,
                [_, f] | [1, _, f] => f,
                _ => {
                    return Err(format!(
                        "a recurrent layer needs sequences [steps, features] or one-channel images, but gets {shape:?}"
                    ))
                }
            };
            LayerSpec::Recurrent {
                cell,
                inputs,
                hidden: n[0],
                sequence: vocab.is_some(),
                layers: n.get(1).copied().unwrap_or(1),
                bidirectional,
            }
        }
        "dropout" => {
            let p = match args.as_slice() {
                [p] => p.trim().parse::<f64>().ok().filter(|p| (0.0..1.0).contains(p)),
                _ => None,
            };
            LayerSpec::Dropout { p: p.ok_or("expected dropout:P with P in [0, 1)")? }
        }
        "batchnorm" | "layernorm" => {
            numbers(0, 0, name)?;
            match (name, shape) {
                ("batchnorm", [c] | [c, _, _]) => LayerSpec::BatchNorm { channels: *c },
                ("layernorm", [f]) => LayerSpec::LayerNorm { features: *f },
                ("layernorm", [_, f]) if vocab.is_some() => LayerSpec::LayerNorm { features: *f },
                _ => return Err(format!("{name} does not apply to {shape:?}")),
            }
        }
        "flatten" => {
            numbers(0, 0, "flatten")?;
            LayerSpec::Flatten
        }
        "embed" => {
            let n = numbers(1, 1, "embed:WIDTH")?;
            match (vocab, shape) {
                (Some(vocab), &[context]) if first => LayerSpec::Embedding { vocab, dim: n[0], context },
                (Some(_), _) => return Err("embed: can only be the first element".into()),
                (None, _) => return Err("embed: takes character ids; it is for language models (--text)".into()),
            }
        }
        "pos" => {
            let (steps, dim) = match *shape {
                [steps, dim] if vocab.is_some() => (steps, dim),
                _ => return Err(format!("positions need a sequence [steps, width] (after embed:), not {shape:?}")),
            };
            if args.first().map(|a| a.trim()) == Some("sin") && args.len() == 1 {
                LayerSpec::Positions { max_len: steps, dim, learned: false }
            } else {
                let n = numbers(0, 1, "pos[:POSITIONS] or pos:sin")?;
                LayerSpec::Positions { max_len: n.first().copied().unwrap_or(steps), dim, learned: true }
            }
        }
        "transformer" => {
            let n = numbers(1, 2, "transformer:HEADS[:FEED_FORWARD]")?;
            let width = match *shape {
                [_, w] => w,
                _ => {
                    return Err(format!(
                        "a transformer block needs a sequence [steps, width] (after embed:), not {shape:?}"
                    ))
                }
            };
            let feed_forward = match n.get(1) {
                Some(&f) => f,
                None => width.checked_mul(4).ok_or("the width is too large")?,
            };
            LayerSpec::Transformer { width, heads: n[0], feed_forward, causal: vocab.is_some() }
        }
        "image" => {
            let n = numbers(3, 3, "image:CHANNELS:HEIGHT:WIDTH")?;
            if !first {
                return Err("image: can only be the first element".into());
            }
            let features: usize = input.iter().product();
            if n.iter().try_fold(1usize, |a, &b| a.checked_mul(b)) != Some(features) {
                return Err(format!(
                    "{}×{}×{} images do not have the {features} features of the data",
                    n[0], n[1], n[2]
                ));
            }
            LayerSpec::Unflatten { channels: n[0], height: n[1], width: n[2] }
        }
        _ => match text.parse::<Activation>() {
            Ok(Activation::PRelu { alpha }) => LayerSpec::PRelu { alpha },
            Ok(Activation::Softmax) => return Err("softmax is applied by the loss; leave it out".into()),
            Ok(function) => LayerSpec::Activation { function },
            // A known activation with a bad value: say what is wrong with the value.
            Err(e) if name.parse::<Activation>().is_ok() || name == "prelu" => return Err(e.to_string()),
            Err(_) => {
                return Err(format!(
                    "unknown layer; expected conv, maxpool, avgpool, flatten, fc, image, lstm, gru, rnn, dropout, \
                     batchnorm, layernorm, embed, pos, transformer, or an activation ({})",
                    Activation::names().join(", ")
                ))
            }
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenet_infers_every_shape() {
        let arch = Architecture::parse("lenet", &[1, 28, 28], None).unwrap();
        let shapes = arch.shapes().unwrap();
        assert_eq!(shapes[0], [784]);
        assert_eq!(shapes[1], [1, 28, 28]);
        assert_eq!(shapes[2], [20, 24, 24]);
        assert_eq!(shapes[4], [20, 12, 12]);
        assert_eq!(shapes[5], [50, 8, 8]);
        assert_eq!(shapes[7], [50, 4, 4]);
        assert_eq!(shapes[8], [800]);
        assert_eq!(shapes.last().unwrap(), &[10]);
        assert_eq!(arch.parameter_count(), 20 * 25 + 20 + 50 * 20 * 25 + 50 + 800 * 500 + 500 + 5010);
        // He before ReLU, Xavier for the last layer.
        assert!(matches!(arch.layers[1], LayerSpec::Conv2d { init: Init::HeNormal, .. }));
        assert!(matches!(arch.layers.last(), Some(LayerSpec::Linear { init: Init::XavierUniform, .. })));
    }

    #[test]
    fn spec_round_trips() {
        for (spec, input) in [
            ("lenet", vec![1, 28, 28]),
            ("conv:8:3:2:1,tanh,avgpool:2:1,flatten,fc:16,leaky-relu:0.1,fc:3", vec![1, 28, 28]),
            ("image:2:4:4,conv:3:3,prelu:0.2,flatten,fc:2", vec![32]),
            ("fc:30,relu,fc:10", vec![784]),
            ("lstm:16,fc:10", vec![1, 28, 28]),
            ("conv:4:3,batchnorm,relu,flatten,dropout:0.25,fc:8,layernorm,fc:2", vec![1, 28, 28]),
            ("conv:1:3:1:1,gru:8,relu,fc:10", vec![1, 28, 28]),
            ("lstm:16:2:bi,fc:10", vec![1, 28, 28]),
            ("gru:8:3,fc:10", vec![1, 28, 28]),
            ("rnn-relu:4:bi,fc:3", vec![1, 5, 3]),
        ] {
            let arch = Architecture::parse(spec, &input, None).unwrap();
            let again = Architecture::parse(&arch.spec(), &input, None).unwrap();
            assert_eq!(arch, again, "{spec} → {}", arch.spec());
        }
    }

    #[test]
    fn errors_name_the_element_and_its_position() {
        let check = |spec: &str, input: &[usize], needles: &[&str]| {
            let e = Architecture::parse(spec, input, None).unwrap_err().to_string();
            for n in needles {
                assert!(e.contains(n), "{spec}: expected {n:?} in {e}");
            }
        };
        check("conv:8:30,flatten,fc:10", &[1, 28, 28], &["element 1 'conv:8:30'", "characters 1–9", "28×28"]);
        check("conv:8:3,relu,fc:10", &[1, 28, 28], &["element 3 'fc:10'", "flatten"]);
        check("conv:8:3,wobble,flatten,fc:10", &[1, 28, 28], &["element 2 'wobble'", "unknown layer"]);
        check("conv:8:x", &[1, 28, 28], &["element 1", "'x' is not a positive whole number"]);
        check("fc:10,,fc:10", &[784], &["element 2", "empty"]);
        check("conv:4:3:1:5,flatten,fc:10", &[1, 28, 28], &["element 1", "padding 5", "half the kernel"]);
        check("fc:0", &[784], &["element 1", "'0'"]);
        check("image:1:27:28,conv:4:3,flatten,fc:2", &[784], &["element 1", "784 features"]);
        check("conv:4:3,flatten", &[1, 28, 28], &["fully connected"]);
        check("fc:10,softmax", &[784], &["softmax"]);
        check("maxpool:2,flatten,fc:2", &[784], &["element 1", "images"]);
        check("fc:99999999999999999999999", &[784], &["element 1", "too large"]);
        check("fc:10,leaky-relu:nan,fc:2", &[784], &["element 2", "'nan' is not a finite number"]);
    }

    #[test]
    fn layers_that_pass_rows_on_may_come_first() {
        // One rule: flatten, dropout and activations before the first weighted layer.
        for spec in ["flatten,fc:10", "relu,fc:10", "dropout:0.2,fc:10", "batchnorm,fc:10", "layernorm,relu,fc:10"] {
            let arch = Architecture::parse(spec, &[1, 28, 28], None).unwrap_or_else(|e| panic!("{spec}: {e}"));
            assert_eq!(arch.inputs(), 784, "{spec}");
        }
    }
}
