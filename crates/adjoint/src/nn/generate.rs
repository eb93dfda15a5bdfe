//! Sampling from a language model ([`Architecture::parse_language_model`]): one token at a
//! time, each drawn from the softmax of the last position's logits divided by a temperature,
//! among the `top_k` most likely.
//!
//! The model sees the last `context` tokens (the length it was trained on) at every step:
//! what it was trained to continue. Draws come from a seeded generator, so the same seed
//! gives the same text.
//!
//! [`Architecture::parse_language_model`]: super::Architecture::parse_language_model

use rand::{Rng, SeedableRng};

use super::{Module, Network};
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
        crate::autodiff::no_grad(|| {
            for _ in 0..length {
                let window = &tokens[tokens.len().saturating_sub(context)..];
                let ids: Vec<T> = window.iter().map(|&t| T::from_f64_lossy(t as f64)).collect();
                let logits = self.model.forward(&Tensor::from_vec(ids, &[1, window.len()]));
                let last = logits.narrow(1, window.len() - 1, 1).to_vec();
                let last: Vec<f64> = last.iter().map(|v| v.to_f64_lossless()).collect();
                tokens.push(pick_token(&last, options, rng.random::<f64>()));
            }
        });
        tokens.split_off(prompt.len())
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
