//! Attention layers with PyTorch's names and layouts, so that state dicts load as they are:
//! [`MultiheadAttention`], [`TransformerEncoderLayer`], [`TransformerEncoder`],
//! [`TransformerDecoderLayer`], and positional encodings ([`sinusoidal_positions`],
//! [`PositionalEmbedding`]).
//!
//! Every layer is composed of primitives (linear maps, [`Tensor::scaled_dot_product_attention`],
//! layer norm), so derivatives of any order follow. Dropout follows [`Dropout`]'s rule: masks
//! are a pure function of the layer's seed and the training step's key.
//!
//! Masks follow PyTorch: an attention mask is additive (a float tensor, `−∞` to mask; build
//! one from booleans where `true` may attend with [`attention_mask`](crate::ops::attention_mask),
//! as `F.scaled_dot_product_attention` reads booleans; PyTorch's `nn.MultiheadAttention`
//! reads a boolean `attn_mask` the other way round, `true` = masked), `[Lq, Lk]` or
//! `[batch·heads, Lq, Lk]`; a key-padding mask is boolean `[batch, Lk]` where `true` marks a
//! padding key to ignore.

use std::sync::atomic::AtomicU64;

use ndarray::{Array2, ArrayD, IxDyn};
use rand::Rng;

use super::module::{visit_module, visit_module_mut, visit_tensor, visit_tensor_mut, with_name};
use super::norm::dropout_stream;
use super::{Dropout, LayerNorm, Linear, Module};
use crate::ops::kernel::mix;
use crate::ops::AttentionOptions;
use crate::tensor::{Element, Tensor};

/// Uniform(−1/√fan_in, 1/√fan_in): PyTorch's default for linear layers' weights and biases.
fn torch_uniform<T: Element>(shape: &[usize], fan_in: usize, rng: &mut impl Rng) -> Tensor<T> {
    let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
    let values = ArrayD::from_shape_simple_fn(IxDyn(shape), || T::from_f64_lossy(rng.random_range(-bound..=bound)));
    Tensor::from_array(values).requires_grad()
}

/// A linear layer initialised as PyTorch's `nn.Linear`.
fn torch_linear<T: Element>(inputs: usize, outputs: usize, rng: &mut impl Rng) -> Linear<T> {
    Linear { weight: torch_uniform(&[outputs, inputs], inputs, rng), bias: torch_uniform(&[outputs], inputs, rng) }
}

/// Xavier-uniform values of `shape` with the given fans, as PyTorch initialises `in_proj_weight`.
fn xavier<T: Element>(shape: &[usize], fan_in: usize, fan_out: usize, rng: &mut impl Rng) -> Tensor<T> {
    Tensor::from_array(super::Init::XavierUniform.sample(shape, fan_in, fan_out, rng)).requires_grad()
}

/// The masks and options of one attention call.
#[derive(Clone, Default)]
pub struct AttentionMasks<'a, T: Element> {
    /// Additive mask `[Lq, Lk]` or `[batch·heads, Lq, Lk]` (PyTorch's `attn_mask`).
    pub attn_mask: Option<&'a Tensor<T>>,
    /// `[batch, Lk]`, `true` for a padding key to ignore (PyTorch's `key_padding_mask`).
    pub key_padding_mask: Option<&'a ArrayD<bool>>,
    /// Query i attends only to keys j ≤ i.
    pub is_causal: bool,
}

/// Which attention weights [`MultiheadAttention::attend_with`] gives besides the output.
#[derive(Clone, Copy)]
enum Weights {
    None,
    Averaged,
    PerHead,
}

/// Multi-head attention as PyTorch's `nn.MultiheadAttention`: parameters `in_proj_weight`
/// `[3E, E]` and `in_proj_bias` `[3E]` (or `q_proj_weight`, `k_proj_weight`, `v_proj_weight`
/// when keys or values have other widths), and `out_proj` (a linear layer `E → E`).
pub struct MultiheadAttention<T: Element> {
    /// E
    pub embed_dim: usize,
    /// H (E must be a multiple of it)
    pub num_heads: usize,
    /// `[3E, E]` when keys and values have width E.
    pub in_proj_weight: Option<Tensor<T>>,
    /// `[E, E]`, `[E, kdim]`, `[E, vdim]` when keys or values have other widths.
    pub separate: Option<[Tensor<T>; 3]>,
    /// `[3E]`, if the layer has biases.
    pub in_proj_bias: Option<Tensor<T>>,
    /// The output projection (its bias is used, saved and trained only if the layer has
    /// biases, as PyTorch's `bias=False` leaves `out_proj.bias` out).
    pub out_proj: Linear<T>,
    /// Whether the layer has biases.
    pub bias: bool,
    /// Dropout on the attention weights, in training.
    pub dropout: f64,
    /// Inputs are `[batch, seq, E]` (else `[seq, batch, E]`, PyTorch's default).
    pub batch_first: bool,
    /// Distinguishes this layer's dropout masks.
    pub seed: u64,
    training: bool,
    calls: AtomicU64,
}

impl<T: Element> MultiheadAttention<T> {
    /// `num_heads` heads over width `embed_dim`, keys and values of width `embed_dim`,
    /// biases, no dropout, sequence-first inputs (as PyTorch's defaults).
    ///
    /// # Panics
    /// If `embed_dim` is not a positive multiple of `num_heads`.
    pub fn new(embed_dim: usize, num_heads: usize, rng: &mut impl Rng) -> Self {
        Self::with_dims(embed_dim, num_heads, embed_dim, embed_dim, true, rng)
    }

    /// Like [`MultiheadAttention::new`] with keys of width `kdim`, values of width `vdim`, and
    /// biases or not.
    ///
    /// # Panics
    /// If `embed_dim` is not a positive multiple of `num_heads`.
    pub fn with_dims(
        embed_dim: usize,
        num_heads: usize,
        kdim: usize,
        vdim: usize,
        bias: bool,
        rng: &mut impl Rng,
    ) -> Self {
        assert!(
            num_heads > 0 && embed_dim > 0 && embed_dim.is_multiple_of(num_heads),
            "MultiheadAttention: embed_dim {embed_dim} is not a multiple of num_heads {num_heads}"
        );
        let e = embed_dim;
        let (in_proj_weight, separate) = if kdim == e && vdim == e {
            (Some(xavier(&[3 * e, e], e, 3 * e, rng)), None)
        } else {
            (
                None,
                Some([xavier(&[e, e], e, e, rng), xavier(&[e, kdim], kdim, e, rng), xavier(&[e, vdim], vdim, e, rng)]),
            )
        };
        let mut out_proj = torch_linear(e, e, rng);
        out_proj.bias = Tensor::zeros(&[e]).requires_grad();
        MultiheadAttention {
            embed_dim,
            num_heads,
            in_proj_weight,
            separate,
            in_proj_bias: bias.then(|| Tensor::zeros(&[3 * e]).requires_grad()),
            out_proj,
            bias,
            dropout: 0.0,
            batch_first: false,
            seed: rng.random(),
            training: true,
            calls: AtomicU64::new(0),
        }
    }

    /// Sets the dropout on the attention weights.
    pub fn with_dropout(mut self, p: f64) -> Self {
        assert!((0.0..1.0).contains(&p), "MultiheadAttention: dropout must be in [0, 1), got {p}");
        self.dropout = p;
        self
    }

    /// Sets whether inputs are `[batch, seq, E]`.
    pub fn with_batch_first(mut self, batch_first: bool) -> Self {
        self.batch_first = batch_first;
        self
    }

    /// The projection weight and bias of part `i` (0: query, 1: key, 2: value).
    fn projection(&self, i: usize) -> (Tensor<T>, Option<Tensor<T>>) {
        let e = self.embed_dim;
        let w = match (&self.in_proj_weight, &self.separate) {
            (Some(w), _) => w.narrow(0, i * e, e),
            (None, Some(s)) => s[i].clone(),
            (None, None) => unreachable!("a projection is always present"),
        };
        (w, self.in_proj_bias.as_ref().map(|b| b.narrow(0, i * e, e)))
    }

    /// Attention of `query` to `key`/`value`: the output (in the input layout) and, if
    /// `need_weights`, the weights averaged over heads, `[batch, Lq, Lk]`. Unlike PyTorch's,
    /// the weights are those before dropout and a constant (for pictures of what the heads
    /// attend to), always averaged.
    ///
    /// # Panics
    /// If the shapes or masks do not fit (naming them).
    pub fn attend(
        &self,
        query: &Tensor<T>,
        key: &Tensor<T>,
        value: &Tensor<T>,
        masks: &AttentionMasks<'_, T>,
        need_weights: bool,
    ) -> (Tensor<T>, Option<Tensor<T>>) {
        let weights = if need_weights { Weights::Averaged } else { Weights::None };
        self.attend_with(query, key, value, masks, weights)
    }

    /// Every head's attention weights `[batch, heads, Lq, Lk]` for these inputs (before
    /// dropout, a constant): what [`MultiheadAttention::attend`] averages, for pictures of
    /// what each head attends to.
    ///
    /// # Panics
    /// As [`MultiheadAttention::attend`].
    pub fn head_weights(
        &self,
        query: &Tensor<T>,
        key: &Tensor<T>,
        value: &Tensor<T>,
        masks: &AttentionMasks<'_, T>,
    ) -> Tensor<T> {
        self.attend_with(query, key, value, masks, Weights::PerHead).1.expect("weights were asked for")
    }

    fn attend_with(
        &self,
        query: &Tensor<T>,
        key: &Tensor<T>,
        value: &Tensor<T>,
        masks: &AttentionMasks<'_, T>,
        need_weights: Weights,
    ) -> (Tensor<T>, Option<Tensor<T>>) {
        let batch_major = |x: &Tensor<T>, what: &str| -> Tensor<T> {
            assert!(x.ndim() == 3, "MultiheadAttention: {what} of shape {:?} is not 3-d", x.shape());
            if self.batch_first {
                x.clone()
            } else {
                x.permute(&[1, 0, 2][..])
            }
        };
        let (q_in, k_in, v_in) = (batch_major(query, "query"), batch_major(key, "key"), batch_major(value, "value"));
        let (b, lq, lk) = (q_in.shape()[0], q_in.shape()[1], k_in.shape()[1]);
        assert!(
            k_in.shape()[0] == b && v_in.shape()[0] == b && v_in.shape()[1] == lk,
            "MultiheadAttention: query {:?}, key {:?} and value {:?} do not fit",
            query.shape(),
            key.shape(),
            value.shape()
        );
        let (h, e) = (self.num_heads, self.embed_dim);
        let dh = e / h;
        let heads = |x: &Tensor<T>, i: usize, len: usize| -> Tensor<T> {
            let (w, bias) = self.projection(i);
            x.linear(&w, bias.as_ref()).reshape(&[b, len, h, dh]).permute(&[0, 2, 1, 3][..])
        };
        let (q, k, v) = (heads(&q_in, 0, lq), heads(&k_in, 1, lk), heads(&v_in, 2, lk));
        let mask = self.combined_mask(masks, b, lq, lk);
        let training = self.training && self.dropout > 0.0;
        let (seed, first_row) = if training {
            let (stream, first_row) = dropout_stream(&self.calls);
            (mix(self.seed ^ stream), first_row as usize)
        } else {
            (0, 0)
        };
        let options = AttentionOptions {
            mask,
            causal: masks.is_causal,
            dropout: if training { self.dropout } else { 0.0 },
            seed,
            scale: None,
            // Batch element b, head h is element b·H + h: a shard starting at batch row r
            // starts at element r·H.
            first: first_row * h,
        };
        let weights = match need_weights {
            Weights::None => None,
            Weights::Averaged => Some(crate::ops::attention_weights(&q, &k, &options).mean(&[1][..], false)),
            Weights::PerHead => Some(crate::ops::attention_weights(&q, &k, &options)),
        };
        let out = Tensor::scaled_dot_product_attention(&q, &k, &v, &options);
        let out = out.permute(&[0, 2, 1, 3][..]).reshape(&[b, lq, e]);
        let out = out.linear(&self.out_proj.weight, self.bias.then_some(&self.out_proj.bias));
        let out = if self.batch_first { out } else { out.permute(&[1, 0, 2][..]) };
        (out, weights)
    }

    /// The attention and key-padding masks as one additive mask broadcasting to `[B, H, Lq, Lk]`.
    fn combined_mask(&self, masks: &AttentionMasks<'_, T>, b: usize, lq: usize, lk: usize) -> Option<Tensor<T>> {
        let h = self.num_heads;
        let attn = masks.attn_mask.map(|m| match m.shape() {
            [r, c] if *r == lq && *c == lk => m.detach(),
            [n, r, c] if *n == b * h && *r == lq && *c == lk => m.detach().reshape(&[b, h, lq, lk]),
            other => panic!(
                "MultiheadAttention: attn_mask of shape {other:?} is neither [{lq}, {lk}] nor [{}, {lq}, {lk}]",
                b * h
            ),
        });
        let padding = masks.key_padding_mask.map(|m| {
            assert!(
                m.shape() == [b, lk],
                "MultiheadAttention: key_padding_mask of shape {:?} is not [{b}, {lk}]",
                m.shape()
            );
            let additive = m.mapv(|pad| if pad { T::neg_infinity() } else { T::zero() });
            Tensor::from_array(additive.into_shape_with_order(IxDyn(&[b, 1, 1, lk])).expect("same size"))
        });
        match (attn, padding) {
            (Some(a), Some(p)) => Some(&a + &p),
            (a, p) => a.or(p),
        }
    }
}

impl<T: Element> Module<T> for MultiheadAttention<T> {
    /// Self-attention without masks.
    fn forward(&self, x: &Tensor<T>) -> Tensor<T> {
        self.attend(x, x, x, &AttentionMasks::default(), false).0
    }
    fn describe(&self) -> String {
        format!("multihead attention {}×{}", self.num_heads, self.embed_dim / self.num_heads)
    }
    fn set_training(&mut self, training: bool) {
        self.training = training;
    }
    fn visit<'a>(&'a self, path: &mut String, f: &mut dyn FnMut(&str, &'a Tensor<T>)) {
        if let Some(w) = &self.in_proj_weight {
            visit_tensor(w, path, "in_proj_weight", f);
        }
        if let Some([q, k, v]) = &self.separate {
            visit_tensor(q, path, "q_proj_weight", f);
            visit_tensor(k, path, "k_proj_weight", f);
            visit_tensor(v, path, "v_proj_weight", f);
        }
        if let Some(b) = &self.in_proj_bias {
            visit_tensor(b, path, "in_proj_bias", f);
        }
        with_name(path, "out_proj", true, |p| {
            visit_tensor(&self.out_proj.weight, p, "weight", f);
            if self.bias {
                visit_tensor(&self.out_proj.bias, p, "bias", f);
            }
        });
    }
    fn visit_mut(&mut self, path: &mut String, f: &mut dyn FnMut(&str, &mut Tensor<T>)) {
        if let Some(w) = &mut self.in_proj_weight {
            visit_tensor_mut(w, path, "in_proj_weight", f);
        }
        if let Some([q, k, v]) = &mut self.separate {
            visit_tensor_mut(q, path, "q_proj_weight", f);
            visit_tensor_mut(k, path, "k_proj_weight", f);
            visit_tensor_mut(v, path, "v_proj_weight", f);
        }
        if let Some(b) = &mut self.in_proj_bias {
            visit_tensor_mut(b, path, "in_proj_bias", f);
        }
        let bias = self.bias;
        with_name(path, "out_proj", true, |p| {
            visit_tensor_mut(&mut self.out_proj.weight, p, "weight", f);
            if bias {
                visit_tensor_mut(&mut self.out_proj.bias, p, "bias", f);
            }
        });
    }
}

/// The feed-forward block's activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeedForwardActivation {
    /// max(x, 0) (PyTorch's default)
    Relu,
    /// x·Φ(x), the exact form
    Gelu,
}

impl FeedForwardActivation {
    fn apply<T: Element>(self, x: &Tensor<T>) -> Tensor<T> {
        match self {
            FeedForwardActivation::Relu => x.relu(),
            FeedForwardActivation::Gelu => x.gelu(),
        }
    }
}

/// How a transformer layer is built (PyTorch's arguments and defaults).
#[derive(Clone, Copy, Debug)]
pub struct TransformerOptions {
    /// E
    pub d_model: usize,
    /// H
    pub nhead: usize,
    /// The feed-forward block's width (PyTorch: 2048).
    pub dim_feedforward: usize,
    /// Dropout after attention, in and after the feed-forward block (PyTorch: 0.1).
    pub dropout: f64,
    /// The feed-forward activation.
    pub activation: FeedForwardActivation,
    /// Layer norm's ε.
    pub layer_norm_eps: f64,
    /// `[batch, seq, E]` inputs (PyTorch's default is false: `[seq, batch, E]`).
    pub batch_first: bool,
    /// Pre-norm (normalise before attention and the feed-forward block) rather than post-norm.
    pub norm_first: bool,
}

impl TransformerOptions {
    /// PyTorch's defaults for `d_model` and `nhead`: feed-forward 2048, dropout 0.1, ReLU,
    /// ε 1e-5, sequence-first, post-norm.
    pub fn new(d_model: usize, nhead: usize) -> Self {
        TransformerOptions {
            d_model,
            nhead,
            dim_feedforward: 2048,
            dropout: 0.1,
            activation: FeedForwardActivation::Relu,
            layer_norm_eps: 1e-5,
            batch_first: false,
            norm_first: false,
        }
    }
}

fn layer_norm<T: Element>(width: usize, eps: f64) -> LayerNorm<T> {
    let mut n = LayerNorm::new(width);
    n.eps = eps;
    n
}

/// A transformer encoder layer as PyTorch's `nn.TransformerEncoderLayer`: self-attention and a
/// feed-forward block, each with a residual connection and layer norm (post- or pre-norm).
/// Parameter names: `self_attn.*`, `linear1.*`, `linear2.*`, `norm1.*`, `norm2.*`.
pub struct TransformerEncoderLayer<T: Element> {
    /// Self-attention.
    pub self_attn: MultiheadAttention<T>,
    /// E → feed-forward width
    pub linear1: Linear<T>,
    /// feed-forward width → E
    pub linear2: Linear<T>,
    /// After (or before, pre-norm) attention.
    pub norm1: LayerNorm<T>,
    /// After (or before, pre-norm) the feed-forward block.
    pub norm2: LayerNorm<T>,
    /// How it was built.
    pub options: TransformerOptions,
    /// Whether [`Module::forward`] lets position i attend only to positions up to i (a
    /// decoder-only language model's block; PyTorch passes `is_causal` at each call).
    pub causal: bool,
    dropout: Dropout,
    dropout1: Dropout,
    dropout2: Dropout,
}

impl<T: Element> TransformerEncoderLayer<T> {
    /// A layer with PyTorch's initialisation (weights differ in their draws).
    pub fn new(options: TransformerOptions, rng: &mut impl Rng) -> Self {
        let (e, f, p) = (options.d_model, options.dim_feedforward, options.dropout);
        TransformerEncoderLayer {
            self_attn: MultiheadAttention::new(e, options.nhead, rng)
                .with_dropout(p)
                .with_batch_first(options.batch_first),
            linear1: torch_linear(e, f, rng),
            linear2: torch_linear(f, e, rng),
            norm1: layer_norm(e, options.layer_norm_eps),
            norm2: layer_norm(e, options.layer_norm_eps),
            options,
            causal: false,
            dropout: Dropout::new(p, rng.random()),
            dropout1: Dropout::new(p, rng.random()),
            dropout2: Dropout::new(p, rng.random()),
        }
    }

    /// Every head's attention weights `[batch, heads, L, L]` for `src` (after the first norm
    /// when pre-norm, causal as [`Module::forward`] is).
    pub fn head_weights(&self, src: &Tensor<T>) -> Tensor<T> {
        let masks = AttentionMasks { is_causal: self.causal, ..AttentionMasks::default() };
        let x = if self.options.norm_first { self.norm1.forward(src) } else { src.clone() };
        self.self_attn.head_weights(&x, &x, &x, &masks)
    }

    /// The same layer, with [`Module::forward`] causal (see [`TransformerEncoderLayer::causal`]).
    pub fn with_causal(mut self, causal: bool) -> Self {
        self.causal = causal;
        self
    }

    /// The layer on `src` with masks (PyTorch's `src_mask`, `src_key_padding_mask`,
    /// `is_causal`).
    pub fn forward_masked(&self, src: &Tensor<T>, masks: &AttentionMasks<'_, T>) -> Tensor<T> {
        let attend = |x: &Tensor<T>| self.dropout1.forward(&self.self_attn.attend(x, x, x, masks, false).0);
        let feed = |x: &Tensor<T>| {
            let hidden = self.dropout.forward(&self.options.activation.apply(&self.linear1.forward(x)));
            self.dropout2.forward(&self.linear2.forward(&hidden))
        };
        if self.options.norm_first {
            let x = src + &attend(&self.norm1.forward(src));
            &x + &feed(&self.norm2.forward(&x))
        } else {
            let x = self.norm1.forward(&(src + &attend(src)));
            self.norm2.forward(&(&x + &feed(&x)))
        }
    }
}

impl<T: Element> Module<T> for TransformerEncoderLayer<T> {
    fn forward(&self, x: &Tensor<T>) -> Tensor<T> {
        self.forward_masked(x, &AttentionMasks { is_causal: self.causal, ..AttentionMasks::default() })
    }
    fn describe(&self) -> String {
        let causal = if self.causal { ", causal" } else { "" };
        format!("transformer encoder layer {}×{}{causal}", self.options.nhead, self.options.d_model)
    }
    fn attention_weights(&self, x: &Tensor<T>) -> Option<Tensor<T>> {
        Some(self.head_weights(x))
    }
    crate::parameters!(T: ; modules: self_attn, linear1, linear2, norm1, norm2, dropout, dropout1, dropout2);
}

/// A stack of encoder layers as PyTorch's `nn.TransformerEncoder` (names `layers.0.…`, and
/// `norm.*` when a final norm is given).
pub struct TransformerEncoder<T: Element> {
    /// The layers, applied in order.
    pub layers: Vec<TransformerEncoderLayer<T>>,
    /// A final layer norm, if any.
    pub norm: Option<LayerNorm<T>>,
}

impl<T: Element> TransformerEncoder<T> {
    /// `count` layers built with `options`, and a final norm if `final_norm`.
    pub fn new(options: TransformerOptions, count: usize, final_norm: bool, rng: &mut impl Rng) -> Self {
        TransformerEncoder {
            layers: (0..count).map(|_| TransformerEncoderLayer::new(options, rng)).collect(),
            norm: final_norm.then(|| layer_norm(options.d_model, options.layer_norm_eps)),
        }
    }

    /// Every layer on `src` with the same masks, then the final norm.
    pub fn forward_masked(&self, src: &Tensor<T>, masks: &AttentionMasks<'_, T>) -> Tensor<T> {
        let mut x = src.clone();
        for layer in &self.layers {
            x = layer.forward_masked(&x, masks);
        }
        match &self.norm {
            Some(n) => n.forward(&x),
            None => x,
        }
    }
}

impl<T: Element> Module<T> for TransformerEncoder<T> {
    fn forward(&self, x: &Tensor<T>) -> Tensor<T> {
        self.forward_masked(x, &AttentionMasks::default())
    }
    fn describe(&self) -> String {
        format!("transformer encoder of {} layers", self.layers.len())
    }
    fn set_training(&mut self, training: bool) {
        for l in &mut self.layers {
            l.set_training(training);
        }
    }
    fn visit<'a>(&'a self, path: &mut String, f: &mut dyn FnMut(&str, &'a Tensor<T>)) {
        with_name(path, "layers", true, |p| {
            for (i, l) in self.layers.iter().enumerate() {
                visit_module(l, p, &i.to_string(), f);
            }
        });
        if let Some(n) = &self.norm {
            visit_module(n, path, "norm", f);
        }
    }
    fn visit_mut(&mut self, path: &mut String, f: &mut dyn FnMut(&str, &mut Tensor<T>)) {
        with_name(path, "layers", true, |p| {
            for (i, l) in self.layers.iter_mut().enumerate() {
                visit_module_mut(l, p, &i.to_string(), f);
            }
        });
        if let Some(n) = &mut self.norm {
            visit_module_mut(n, path, "norm", f);
        }
    }
}

/// A transformer decoder layer as PyTorch's `nn.TransformerDecoderLayer`: self-attention,
/// attention to the encoder's output (`multihead_attn`), and a feed-forward block. Names:
/// `self_attn.*`, `multihead_attn.*`, `linear1.*`, `linear2.*`, `norm1.*`–`norm3.*`.
pub struct TransformerDecoderLayer<T: Element> {
    /// Self-attention over the target.
    pub self_attn: MultiheadAttention<T>,
    /// Attention from the target to the memory.
    pub multihead_attn: MultiheadAttention<T>,
    /// E → feed-forward width
    pub linear1: Linear<T>,
    /// feed-forward width → E
    pub linear2: Linear<T>,
    /// Around self-attention.
    pub norm1: LayerNorm<T>,
    /// Around attention to the memory.
    pub norm2: LayerNorm<T>,
    /// Around the feed-forward block.
    pub norm3: LayerNorm<T>,
    /// How it was built.
    pub options: TransformerOptions,
    dropout: Dropout,
    dropout1: Dropout,
    dropout2: Dropout,
    dropout3: Dropout,
}

impl<T: Element> TransformerDecoderLayer<T> {
    /// A layer with PyTorch's initialisation (weights differ in their draws).
    pub fn new(options: TransformerOptions, rng: &mut impl Rng) -> Self {
        let (e, f, p) = (options.d_model, options.dim_feedforward, options.dropout);
        let attention = |rng: &mut _| {
            MultiheadAttention::new(e, options.nhead, rng).with_dropout(p).with_batch_first(options.batch_first)
        };
        TransformerDecoderLayer {
            self_attn: attention(rng),
            multihead_attn: attention(rng),
            linear1: torch_linear(e, f, rng),
            linear2: torch_linear(f, e, rng),
            norm1: layer_norm(e, options.layer_norm_eps),
            norm2: layer_norm(e, options.layer_norm_eps),
            norm3: layer_norm(e, options.layer_norm_eps),
            options,
            dropout: Dropout::new(p, rng.random()),
            dropout1: Dropout::new(p, rng.random()),
            dropout2: Dropout::new(p, rng.random()),
            dropout3: Dropout::new(p, rng.random()),
        }
    }

    /// The layer on `tgt` attending to `memory`, with the target's masks and the memory's.
    pub fn forward_with_memory(
        &self,
        tgt: &Tensor<T>,
        memory: &Tensor<T>,
        tgt_masks: &AttentionMasks<'_, T>,
        memory_masks: &AttentionMasks<'_, T>,
    ) -> Tensor<T> {
        let own = |x: &Tensor<T>| self.dropout1.forward(&self.self_attn.attend(x, x, x, tgt_masks, false).0);
        let cross = |x: &Tensor<T>| {
            self.dropout2.forward(&self.multihead_attn.attend(x, memory, memory, memory_masks, false).0)
        };
        let feed = |x: &Tensor<T>| {
            let hidden = self.dropout.forward(&self.options.activation.apply(&self.linear1.forward(x)));
            self.dropout3.forward(&self.linear2.forward(&hidden))
        };
        if self.options.norm_first {
            let x = tgt + &own(&self.norm1.forward(tgt));
            let x = &x + &cross(&self.norm2.forward(&x));
            &x + &feed(&self.norm3.forward(&x))
        } else {
            let x = self.norm1.forward(&(tgt + &own(tgt)));
            let x = self.norm2.forward(&(&x + &cross(&x)));
            self.norm3.forward(&(&x + &feed(&x)))
        }
    }
}

impl<T: Element> Module<T> for TransformerDecoderLayer<T> {
    /// The layer with no memory to attend to is not defined: this attends to the input itself
    /// (self-attention twice), as a decoder-only block without cross-attention would not.
    /// Use [`TransformerDecoderLayer::forward_with_memory`].
    fn forward(&self, x: &Tensor<T>) -> Tensor<T> {
        self.forward_with_memory(x, x, &AttentionMasks::default(), &AttentionMasks::default())
    }
    fn describe(&self) -> String {
        format!("transformer decoder layer {}×{}", self.options.nhead, self.options.d_model)
    }
    crate::parameters!(T: ; modules: self_attn, multihead_attn, linear1, linear2, norm1, norm2, norm3, dropout, dropout1, dropout2, dropout3);
}

/// The sinusoidal position encodings of "Attention is all you need", `[len, dim]`:
/// PE(p, 2i) = sin(p / 10000^(2i/dim)), PE(p, 2i+1) = cos(p / 10000^(2i/dim)).
pub fn sinusoidal_positions<T: Element>(len: usize, dim: usize) -> Tensor<T> {
    let table = Array2::from_shape_fn((len, dim), |(p, j)| {
        let i = (j / 2) as f64;
        let angle = p as f64 / 10000f64.powf(2.0 * i / dim.max(1) as f64);
        T::from_f64_lossy(if j % 2 == 0 { angle.sin() } else { angle.cos() })
    });
    Tensor::from_array(table.into_dyn())
}

/// Learned position embeddings: adds row p of `weight` `[max_len, dim]` to position p of a
/// `[batch, seq, dim]` input (seq ≤ max_len). Parameter name: `weight`.
pub struct PositionalEmbedding<T: Element> {
    /// `[max_len, dim]`, drawn from N(0, 1) as PyTorch's `nn.Embedding`.
    pub weight: Tensor<T>,
}

impl<T: Element> PositionalEmbedding<T> {
    /// Positions up to `max_len` of width `dim`.
    pub fn new(max_len: usize, dim: usize, rng: &mut impl Rng) -> Self {
        let w = super::Init::Normal { std: 1.0 }.sample(&[max_len, dim], dim, dim, rng);
        PositionalEmbedding { weight: Tensor::from_array(w).requires_grad() }
    }
}

impl<T: Element> Module<T> for PositionalEmbedding<T> {
    fn forward(&self, x: &Tensor<T>) -> Tensor<T> {
        let (max_len, dim) = (self.weight.shape()[0], self.weight.shape()[1]);
        assert!(
            x.ndim() == 3 && x.shape()[2] == dim && x.shape()[1] <= max_len,
            "positional embedding: input of shape {:?} is not [batch, ≤ {max_len}, {dim}]",
            x.shape()
        );
        x + &self.weight.narrow(0, 0, x.shape()[1])
    }
    fn describe(&self) -> String {
        format!("positions {}×{}", self.weight.shape()[0], self.weight.shape()[1])
    }
    crate::parameters!(T: weight);
}

/// Adds the [`sinusoidal_positions`] to a `[batch, seq, dim]` input (seq ≤ `max_len`); no
/// parameters.
pub struct SinusoidalPositions<T: Element> {
    /// `[max_len, dim]`
    pub table: Tensor<T>,
}

impl<T: Element> SinusoidalPositions<T> {
    /// Positions up to `max_len` of width `dim`.
    pub fn new(max_len: usize, dim: usize) -> Self {
        SinusoidalPositions { table: sinusoidal_positions(max_len, dim) }
    }
}

impl<T: Element> Module<T> for SinusoidalPositions<T> {
    fn forward(&self, x: &Tensor<T>) -> Tensor<T> {
        let (max_len, dim) = (self.table.shape()[0], self.table.shape()[1]);
        assert!(
            x.ndim() == 3 && x.shape()[2] == dim && x.shape()[1] <= max_len,
            "sinusoidal positions: input of shape {:?} is not [batch, ≤ {max_len}, {dim}]",
            x.shape()
        );
        x + &self.table.narrow(0, 0, x.shape()[1])
    }
    fn describe(&self) -> String {
        format!("sinusoidal positions {}×{}", self.table.shape()[0], self.table.shape()[1])
    }
    fn visit<'a>(&'a self, _: &mut String, _: &mut dyn FnMut(&str, &'a Tensor<T>)) {}
    fn visit_mut(&mut self, _: &mut String, _: &mut dyn FnMut(&str, &mut Tensor<T>)) {}
}
