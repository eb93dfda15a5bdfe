//! Sampling from a language model ([`Architecture::parse_language_model`]): one token at a
//! time, each drawn from the softmax of the last position's logits divided by a temperature,
//! among the `top_k` most likely.
//!
//! A model whose only layers that look along the sequence are recurrent carries their state:
//! the prompt is read once, then each new token is one step from the state before it (as
//! char-rnn samples), so every token costs the same however long the text grows. A model
//! with attention or position encodings sees the last `context` tokens (the length it was
//! trained on) at every step instead. Draws come from a seeded generator, so the same seed
//! gives the same text.
//!
//! [`Architecture::parse_language_model`]: super::Architecture::parse_language_model

use rand::{Rng, SeedableRng};

use super::{LayerSpec, Module, Network, RecurrentState};
use crate::tensor::{Element, Tensor};

/// How [`Network::generate`] picks each token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleOptions {
    /// Logits are divided by it before the softmax: below 1 sharpens, above 1 flattens; 0
    /// always takes the most likely token.
    pub temperature: f64,
    /// Draw among the `k` most likely tokens only (all when `None`).
    pub top_k: Option<usize>,
    /// The seed of the draws.
    pub seed: u64,
}

impl Default for SampleOptions {
    /// Temperature 1, all tokens, seed 1.
    fn default() -> Self {
        SampleOptions { temperature: 1.0, top_k: None, seed: 1 }
    }
}

/// A token drawn from `logits` as `options` say, with `u` uniform in [0, 1).
///
/// # Panics
/// If `logits` is empty.
pub fn pick_token(logits: &[f64], options: &SampleOptions, u: f64) -> usize {
    assert!(!logits.is_empty(), "pick_token: no logits");
    let mut order: Vec<usize> = (0..logits.len()).collect();
    // Most likely first; NaN last; ties by id, so the choice is deterministic.
    order.sort_by(|&a, &b| {
        logits[b].partial_cmp(&logits[a]).unwrap_or_else(|| logits[a].is_nan().cmp(&logits[b].is_nan()))
    });
    let keep = options.top_k.unwrap_or(order.len()).clamp(1, order.len());
    let order = &order[..keep];
    if options.temperature <= 0.0 || keep == 1 || !logits[order[0]].is_finite() {
        return order[0];
    }
    let top = logits[order[0]];
    let weights: Vec<f64> = order
        .iter()
        .map(|&i| {
            let w = ((logits[i] - top) / options.temperature).exp();
            if w.is_nan() {
                0.0
            } else {
                w
            }
        })
        .collect();
    let total: f64 = weights.iter().sum();
    let mut target = u * total;
    for (&i, &w) in order.iter().zip(&weights) {
        if target < w {
            return i;
        }
        target -= w;
    }
    order[0]
}

impl<T: Element> Network<T> {
    /// `length` tokens continuing `prompt` (ids below the vocabulary's size), sampled as
    /// `options` say, in the network's current mode (a loaded network is in evaluation
    /// mode). Nothing is recorded.
    ///
    /// # Panics
    /// If the network is not a language model (it does not give logits per position), or
    /// the prompt is empty or holds an id outside the vocabulary.
    pub fn generate(&self, prompt: &[usize], length: usize, options: &SampleOptions) -> Vec<usize> {
        self.generate_with(prompt, length, options, |_| true)
    }

    /// [`Network::generate`], calling `on_token` with each token as it is drawn (to show text
    /// as it comes); generation stops early when it returns false. Returns the tokens drawn.
    ///
    /// # Panics
    /// As [`Network::generate`].
    pub fn generate_with(
        &self,
        prompt: &[usize],
        length: usize,
        options: &SampleOptions,
        mut on_token: impl FnMut(usize) -> bool,
    ) -> Vec<usize> {
        let context = self.architecture.inputs();
        let vocab = self.architecture.outputs();
        let shapes = self.architecture.shapes().unwrap_or_default();
        assert!(
            matches!(shapes.last().map(Vec::as_slice), Some(&[_, v]) if v == vocab),
            "generate: the network is not a language model (its outputs are {:?}, not [steps, vocabulary])",
            shapes.last()
        );
        assert!(!prompt.is_empty(), "generate: an empty prompt (give at least one token)");
        if let Some(bad) = prompt.iter().find(|&&t| t >= vocab) {
            panic!("generate: token {bad} is not below the vocabulary's {vocab}");
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(options.seed);
        let mut tokens = prompt.to_vec();
        let as_tensor = |ids: &[usize]| {
            let values: Vec<T> = ids.iter().map(|&t| T::from_f64_lossy(t as f64)).collect();
            Tensor::from_vec(values, &[1, ids.len()])
        };
        let last_row = |logits: &Tensor<T>| -> Vec<f64> {
            let steps = logits.shape()[1];
            logits.narrow(1, steps - 1, 1).to_vec().iter().map(|v| v.to_f64_lossless()).collect()
        };
        crate::autodiff::no_grad(|| {
            if self.carries_state() {
                // The prompt once, then one token at a time from the carried states.
                let mut states: Vec<Option<RecurrentState<T>>> = vec![None; self.model.len()];
                let mut piece = as_tensor(prompt);
                for _ in 0..length {
                    let logits = self.forward_carrying_all(&piece, &mut states);
                    let next = pick_token(&last_row(&logits), options, rng.random::<f64>());
                    tokens.push(next);
                    if !on_token(next) {
                        break;
                    }
                    piece = as_tensor(&[next]);
                }
            } else {
                for _ in 0..length {
                    let window = &tokens[tokens.len().saturating_sub(context)..];
                    let logits = self.model.forward(&as_tensor(window));
                    let next = pick_token(&last_row(&logits), options, rng.random::<f64>());
                    tokens.push(next);
                    if !on_token(next) {
                        break;
                    }
                }
            }
        });
        tokens.split_off(prompt.len())
    }

    /// Whether [`Network::generate`] carries recurrent state rather than re-reading a window:
    /// the network has recurrent layers and nothing else that looks along the sequence
    /// (attention, position encodings).
    pub fn carries_state(&self) -> bool {
        let layers = &self.architecture.layers;
        layers.iter().any(|l| matches!(l, LayerSpec::Recurrent { .. }))
            && !layers.iter().any(|l| matches!(l, LayerSpec::Transformer { .. } | LayerSpec::Positions { .. }))
    }

    /// The outputs for a piece of a sequence, each stateful layer starting from its state in
    /// `states` (by layer index) and leaving the state after the piece there.
    fn forward_carrying_all(&self, x: &Tensor<T>, states: &mut [Option<RecurrentState<T>>]) -> Tensor<T> {
        let mut h = x.clone();
        for (layer, state) in self.model.layers().iter().zip(states.iter_mut()) {
            h = match layer.forward_carrying(&h, state.as_ref()) {
                Some((out, after)) => {
                    *state = Some(after);
                    out
                }
                None => layer.forward(&h),
            };
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temperature_zero_and_top_one_take_the_most_likely_and_top_k_never_leaves_the_k() {
        let logits = [0.1, 2.0, -1.0, 1.9, f64::NEG_INFINITY];
        let greedy = SampleOptions { temperature: 0.0, ..Default::default() };
        let top1 = SampleOptions { top_k: Some(1), ..Default::default() };
        for u in [0.0, 0.5, 0.999] {
            assert_eq!(pick_token(&logits, &greedy, u), 1);
            assert_eq!(pick_token(&logits, &top1, u), 1);
            let two = pick_token(&logits, &SampleOptions { top_k: Some(2), ..Default::default() }, u);
            assert!(two == 1 || two == 3);
        }
        // -inf is never drawn, even at u close to 1.
        assert_ne!(pick_token(&logits, &SampleOptions::default(), 0.999_999), 4);
        // A NaN logit is not picked greedily.
        assert_eq!(pick_token(&[f64::NAN, 0.0, 1.0], &greedy, 0.3), 2);
    }

    #[test]
    fn draws_follow_the_softmax() {
        let logits = [0.0, (3.0f64).ln()]; // probabilities 1/4 and 3/4
        let options = SampleOptions::default();
        let ones = (0..1000).filter(|&k| pick_token(&logits, &options, (k as f64 + 0.5) / 1000.0) == 1).count();
        assert_eq!(ones, 750);
        // Temperature 2 halves the logits: √3 : 1.
        let hot = SampleOptions { temperature: 2.0, ..options };
        let ones = (0..1000).filter(|&k| pick_token(&logits, &hot, (k as f64 + 0.5) / 1000.0) == 1).count();
        let expected = 3f64.sqrt() / (1.0 + 3f64.sqrt());
        assert!((ones as f64 / 1000.0 - expected).abs() < 0.002, "{ones}");
    }
}
