//! What initialisation does to a deep network: per layer, the statistics and histogram of
//! the activations for a batch, the norm of the weight gradient after one backward pass, and
//! (for the ReLU family) the fraction of dead units, as in Glorot & Bengio (2010).

use ndarray::Axis;
use serde::{Deserialize, Serialize};

use super::{cross_entropy, Activation, Sequential};
use crate::ops::elementwise::ActivationFamily;
use crate::tensor::Tensor;

/// A histogram of values over equal-width bins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// Bin edges, one more than the counts.
    pub edges: Vec<f64>,
    /// Values per bin.
    pub counts: Vec<u64>,
}

impl Histogram {
    /// `bins` equal bins from the smallest to the largest value.
    pub fn of(values: &[f64], bins: usize) -> Histogram {
        let (lo, hi) = values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| (l.min(v), h.max(v)));
        let (lo, hi) = if lo.is_finite() && hi > lo { (lo, hi) } else { (lo.min(0.0) - 0.5, lo.max(0.0) + 0.5) };
        Self::in_range(values, lo, hi, bins)
    }

    /// `bins` equal bins over [`lo`, `hi`]; values outside go to the end bins.
    pub fn in_range(values: &[f64], lo: f64, hi: f64, bins: usize) -> Histogram {
        let width = (hi - lo) / bins as f64;
        let mut counts = vec![0u64; bins];
        for &v in values {
            let b = (((v - lo) / width).max(0.0) as usize).min(bins - 1);
            counts[b] += 1;
        }
        Histogram { edges: (0..=bins).map(|i| lo + i as f64 * width).collect(), counts }
    }
}

/// One layer's statistics at a point of training (or at initialisation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerStats {
    /// 1-based layer number; the last is the output layer (its values are the logits).
    pub index: usize,
    /// Units in the layer.
    pub units: usize,
    /// Mean of the layer's outputs over the batch and units.
    #[serde(with = "crate::json::float")]
    pub mean: f64,
    /// Their standard deviation.
    #[serde(with = "crate::json::float")]
    pub std: f64,
    /// ‖∂L/∂W‖ (Frobenius) of the layer's weights after one backward pass of the
    /// cross-entropy.
    #[serde(with = "crate::json::float")]
    pub grad_norm: f64,
    /// For ReLU layers, the fraction of units that output 0 for every example of the batch.
    #[serde(default, with = "crate::json::option_float")]
    pub dead_fraction: Option<f64>,
    /// The distribution of the layer's outputs.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub histogram: Option<Histogram>,
    /// The distribution of the entries of ∂L/∂W.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub grad_histogram: Option<Histogram>,
}

/// Statistics of every weighted layer (fully connected or convolutional, each with the
/// activation after it) of `model` on the batch `x` with `labels`. For convolutions a
/// "unit" is a channel, dead when it outputs 0 everywhere for every example. The model's accumulated gradients and any graph
/// the caller is building are left as they were.
pub fn inspect(
    model: &Sequential<f32>,
    activation: Activation,
    x: &Tensor<f32>,
    labels: &[usize],
    bins: usize,
) -> Vec<LayerStats> {
    let outputs = model.forward_all(x);
    let loss = cross_entropy(outputs.last().expect("a non-empty model"), labels);
    // (position of the layer, its weight), found by position: parameter names need not
    // count every layer (see `Sequential::push_unnamed`).
    let weighted: Vec<(usize, &Tensor<f32>)> = model
        .layers()
        .iter()
        .enumerate()
        .filter_map(|(at, layer)| Some((at, layer.parameters().into_iter().find(|(n, _)| n == "weight")?.1)))
        .collect();
    let weight_refs: Vec<&Tensor<f32>> = weighted.iter().map(|(_, w)| *w).collect();
    // gradients() reads the weight gradients without accumulating into `.grad()`.
    let weight_grads = crate::autodiff::gradients(&loss, &weight_refs, None, false);
    let relu_family = activation.family() == ActivationFamily::Rectifier;
    let linear_count = weight_refs.len();
    let mut stats = Vec::with_capacity(linear_count);
    let mut weights = weight_grads.iter();
    for layer in 0..linear_count {
        let is_output = layer + 1 == linear_count;
        // A weighted layer's output is that of the activation right after it (a module
        // without weights that keeps the shape), if there is one.
        let at = weighted[layer].0;
        let next_is_activation = at + 1 < outputs.len()
            && outputs[at + 1].shape() == outputs[at].shape()
            && !weighted.iter().any(|&(i, _)| i == at + 1);
        let out = if is_output {
            outputs.last().expect("outputs")
        } else if next_is_activation {
            &outputs[at + 1]
        } else {
            &outputs[at]
        };
        let values: Vec<f64> = out.view().iter().map(|&v| v as f64).collect();
        let n = values.len().max(1) as f64;
        let mean = values.iter().sum::<f64>() / n;
        let std = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
        let grad = weights.next().and_then(Option::as_ref);
        let grad_norm = grad.map_or(0.0, |g| g.view().iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt());
        let grad_histogram = (bins > 0).then(|| {
            let values: Vec<f64> = grad.map_or_else(Vec::new, |g| g.view().iter().map(|&v| v as f64).collect());
            Histogram::of(&values, bins)
        });
        let dead_fraction = (relu_family && !is_output).then(|| {
            let view = out.view();
            let units = view.shape()[1];
            let dead = view.axis_iter(Axis(1)).filter(|unit| unit.iter().all(|&v| v <= 0.0)).count();
            dead as f64 / units.max(1) as f64
        });
        stats.push(LayerStats {
            index: layer + 1,
            // Units of a fully connected layer, channels of a convolution.
            units: out.shape().get(1).copied().unwrap_or(0),
            mean,
            std,
            grad_norm,
            dead_fraction,
            // Bounded activations get their whole range, so that a collapse toward 0 shows.
            grad_histogram,
            histogram: (bins > 0).then(|| match (activation, is_output) {
                (a, false) if a == Activation::TANH => Histogram::in_range(&values, -1.0, 1.0, bins),
                (a, false) if a == Activation::SIGMOID => Histogram::in_range(&values, 0.0, 1.0, bins),
                _ => Histogram::of(&values, bins),
            }),
        });
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::Module;
    use crate::nn::{mlp, Init};
    use rand::SeedableRng;

    #[test]
    fn statistics_match_a_direct_computation() {
        let mut net = mlp::<f32>(
            &[3, 2, 2],
            Activation::RELU,
            Some(Init::Constant { value: 0.0 }),
            &mut rand::rngs::StdRng::seed_from_u64(0),
        );
        // W1 = [[1, −1], [0, −2], [2, −1]], b1 = 0; W2 = [[1, 2], [3, 4]], b2 = [0.5, −0.5].
        // (Stored [out, in], so the matrices above appear transposed.)
        let values: std::collections::HashMap<String, ndarray::ArrayD<f32>> = [
            ("0.weight", ndarray::arr2(&[[1.0f32, 0.0, 2.0], [-1.0, -2.0, -1.0]]).into_dyn()),
            ("0.bias", ndarray::arr1(&[0.0f32, 0.0]).into_dyn()),
            ("2.weight", ndarray::arr2(&[[1.0f32, 3.0], [2.0, 4.0]]).into_dyn()),
            ("2.bias", ndarray::arr1(&[0.5f32, -0.5]).into_dyn()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        net.load_state_dict(&values).unwrap();
        let x = Tensor::from_vec(vec![1.0f32, 2.0, 0.5, 0.0, 1.0, 1.0], &[2, 3]);
        let s = inspect(&net, Activation::RELU, &x, &[0, 1], 4);
        // z1 = x·W1: row 1 (2, −4), row 2 (2, −3); relu: (2, 0), (2, 0). Unit 2 is dead.
        assert_eq!(s[0].units, 2);
        assert!((s[0].mean - 1.0).abs() < 1e-6 && (s[0].std - 1.0).abs() < 1e-6);
        assert_eq!(s[0].dead_fraction, Some(0.5));
        // logits = a·W2 + b2 = (2.5, 3.5) for both rows.
        assert!((s[1].mean - 3.0).abs() < 1e-6 && (s[1].std - 0.5).abs() < 1e-6);
        assert_eq!(s[1].dead_fraction, None);
        // ∂L/∂logits = (p − onehot)/2 with p = softmax(2.5, 3.5); ∂W2 = aᵀ·δ.
        let p1 = 1.0 / (1.0 + 1f64.exp());
        let d = [[(p1 - 1.0) / 2.0, (1.0 - p1) / 2.0], [p1 / 2.0, (1.0 - p1 - 1.0) / 2.0]];
        let gw2 = [2.0 * (d[0][0] + d[1][0]), 2.0 * (d[0][1] + d[1][1])];
        let expected = (gw2[0].powi(2) + gw2[1].powi(2)).sqrt();
        assert!((s[1].grad_norm - expected).abs() < 1e-6, "{} vs {expected}", s[1].grad_norm);
        assert_eq!(s[0].histogram.as_ref().unwrap().counts.iter().sum::<u64>(), 4);
        assert!(net.parameters().iter().all(|(_, p)| p.grad().is_none()));
    }
}

/// What one attention head does on a sequence (see [`attention_stats`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadStats {
    /// The index of the attending layer in the network.
    pub layer: usize,
    /// 1-based head number.
    pub head: usize,
    /// Mean entropy of the positions' weights in bits: 0 when each position attends to one
    /// other, log₂ n when evenly to n.
    #[serde(with = "crate::json::float")]
    pub entropy_bits: f64,
    /// Mean distance back from each position to what it attends to (Σⱼ w_ij (i − j)).
    #[serde(with = "crate::json::float")]
    pub distance: f64,
}

/// (mean entropy in bits, mean distance back) of one head's weights, `n × n` row-major
/// (row i: what position i takes from each position j).
pub fn head_spread(weights: &[f64], n: usize) -> (f64, f64) {
    let (mut entropy, mut distance) = (0.0, 0.0);
    for (i, row) in weights.chunks(n.max(1)).enumerate() {
        for (j, &w) in row.iter().enumerate() {
            if w > 0.0 {
                entropy -= w * w.log2();
            }
            distance += w * (i as f64 - j as f64);
        }
    }
    let rows = (weights.len() / n.max(1)).max(1) as f64;
    (entropy / rows, distance / rows)
}

/// Every attention head's [`HeadStats`] for the first example of `input`, from
/// [`Network::attention_maps`](super::Network::attention_maps).
pub fn attention_stats<T: crate::tensor::Element>(maps: &[(usize, Tensor<T>)]) -> Vec<HeadStats> {
    let mut out = Vec::new();
    for (layer, w) in maps {
        let (heads, n) = (w.shape()[1], w.shape()[2]);
        let values: Vec<f64> = w.to_vec().iter().map(|v| v.to_f64_lossless()).collect();
        for h in 0..heads {
            let (entropy_bits, distance) = head_spread(&values[h * n * n..(h + 1) * n * n], n);
            out.push(HeadStats { layer: *layer, head: h + 1, entropy_bits, distance });
        }
    }
    out
}

#[cfg(test)]
mod attention_tests {
    use super::*;

    #[test]
    fn spread_is_zero_for_one_look_and_log2_n_for_even_looks_and_distance_counts_back() {
        // Position i looks only at i − 1 (or itself at 0).
        let n = 4;
        let mut w = vec![0.0; n * n];
        for i in 0..n {
            w[i * n + i.saturating_sub(1)] = 1.0;
        }
        let (entropy, distance) = head_spread(&w, n);
        assert_eq!(entropy, 0.0);
        assert!((distance - 3.0 / 4.0).abs() < 1e-12);
        // The last row looks evenly at all four: 2 bits for it, 0.5 on average.
        w[12..16].copy_from_slice(&[0.25; 4]);
        let (entropy, distance) = head_spread(&w, n);
        assert!((entropy - 0.5).abs() < 1e-12, "{entropy}");
        assert!((distance - (0.0 + 1.0 + 1.0 + 1.5) / 4.0).abs() < 1e-12, "{distance}");
    }
}
