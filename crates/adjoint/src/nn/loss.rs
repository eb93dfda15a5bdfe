//! Losses. Cross-entropy from logits is one fused primitive (log-softmax and the pick of the
//! label's log-probability together), finite for logits of ±1e4, and tested against the
//! composed version.

use std::sync::Arc;

use ndarray::IxDyn;

use crate::autodiff::graph::is_recording;
use crate::autodiff::primitive::{Cotangents, Primitive};
use crate::ops::softmax::max_of;
use crate::tensor::{Element, Tensor};

/// Mean squared error: mean((prediction − target)²).
pub fn mse<T: Element>(prediction: &Tensor<T>, target: &Tensor<T>) -> Tensor<T> {
    (prediction - target).sqr().mean_all()
}

/// The lectures' convention: 1/(2m) Σᵢ ‖predictionᵢ − targetᵢ‖² over the m rows, so that the
/// gradient has no factor 2.
pub fn mse_half<T: Element>(prediction: &Tensor<T>, target: &Tensor<T>) -> Tensor<T> {
    let m = prediction.shape().first().copied().unwrap_or(1).max(1);
    (prediction - target).sqr().sum_all() * T::from_f64_lossy(0.5 / m as f64)
}

/// Softmax cross-entropy from logits `[batch, classes]` and labels, averaged over the batch:
/// −mean(log softmax(logits)\[label\]). Fused and stable; see [`cross_entropy_composed`].
/// An empty batch gives 0 (PyTorch's mean would give NaN).
///
/// # Panics
/// If `logits` is not 2-D, the label count differs from the batch, or a label is out of range.
pub fn cross_entropy<T: Element>(logits: &Tensor<T>, labels: &[usize]) -> Tensor<T> {
    check_labels("cross_entropy", logits, labels);
    let values = logits.view();
    let values = values.as_standard_layout();
    let classes = logits.shape()[1];
    let mut loss = 0.0f64;
    // Rows as slices (rows as ndarray views cost more than the arithmetic on 10 classes).
    for (row, &label) in values.as_slice().expect("standard layout").chunks_exact(classes.max(1)).zip(labels) {
        // −log softmax = log Σ e^(v − m) − (v_label − m): shifting before subtracting keeps
        // the loss when the logits are huge (1e30 − 1e30 + 2.3 would round to 0 otherwise).
        let m = max_of(row.iter());
        let log_sum = row.iter().fold(T::zero(), |s, &v| s + (v - m).exp()).ln();
        loss += (log_sum - (row[label] - m)).to_f64_lossless();
    }
    let value = ndarray::ArrayD::from_elem(IxDyn(&[]), T::from_f64_lossy(loss / labels.len().max(1) as f64));
    Tensor::apply(SoftmaxCrossEntropy { labels: labels.into() }, &[logits], value)
}

/// The same loss from separate primitives (log_softmax, gather, mean), for testing the fused
/// one and for teaching.
pub fn cross_entropy_composed<T: Element>(logits: &Tensor<T>, labels: &[usize]) -> Tensor<T> {
    check_labels("cross_entropy", logits, labels);
    let index = ndarray::ArrayD::from_shape_vec(IxDyn(&[labels.len(), 1]), labels.to_vec()).expect("shape");
    -logits.log_softmax(-1).gather(1, &index).mean_all()
}

fn check_labels<T: Element>(op: &str, logits: &Tensor<T>, labels: &[usize]) {
    assert!(logits.ndim() == 2, "{op}: logits must be [batch, classes], got shape {:?}", logits.shape());
    assert!(
        logits.shape()[0] == labels.len(),
        "{op}: {} labels for logits of shape {:?}",
        labels.len(),
        logits.shape()
    );
    let classes = logits.shape()[1];
    if let Some(bad) = labels.iter().find(|&&l| l >= classes) {
        panic!("{op}: label {bad} is out of range for {classes} classes");
    }
}

/// One-hot rows for `labels`, as a constant `[batch, classes]` tensor.
pub fn one_hot<T: Element>(labels: &[usize], classes: usize) -> Tensor<T> {
    let mut a = crate::tensor::pool::array_zeros::<T>(&[labels.len(), classes]);
    for (i, &l) in labels.iter().enumerate() {
        a[[i, l]] = T::one();
    }
    Tensor::from_array(a)
}

struct SoftmaxCrossEntropy {
    labels: Arc<[usize]>,
}

impl<T: Element> Primitive<T> for SoftmaxCrossEntropy {
    fn name(&self) -> &'static str {
        "softmax_cross_entropy"
    }
    fn vjp(&self, x: &[Tensor<T>], _: &Tensor<T>, g: &Tensor<T>) -> Cotangents<T> {
        // ∂L/∂logits = (softmax − onehot) / batch: no Jacobian of the softmax is formed.
        let (batch, classes) = (x[0].shape()[0], x[0].shape()[1]);
        let scale = T::from_f64_lossy(1.0 / batch.max(1) as f64);
        if !(is_recording() && (x[0].is_tracked() || g.is_tracked())) {
            // First order: one pass over each row, no tensors in between.
            return [Some(Tensor::from_array(softmax_minus_one_hot(&x[0], &self.labels, g.item() * scale)))].into();
        }
        let p = x[0].softmax(-1);
        [Some((p - one_hot(&self.labels, classes)) * (g * scale))].into()
    }
    fn jvp(&self, x: &[Tensor<T>], _: &Tensor<T>, t: &[Option<Tensor<T>>]) -> Option<Tensor<T>> {
        let (batch, classes) = (x[0].shape()[0], x[0].shape()[1]);
        let p = x[0].softmax(-1);
        let scale = T::from_f64_lossy(1.0 / batch.max(1) as f64);
        t[0].as_ref().map(|t| ((p - one_hot(&self.labels, classes)) * t).sum_all() * scale)
    }
}

/// `(softmax(logits) − onehot(labels)) · scale`, row by row: the fused first-order rule of
/// [`cross_entropy`], tested against the composed one.
fn softmax_minus_one_hot<T: Element>(logits: &Tensor<T>, labels: &[usize], scale: T) -> ndarray::ArrayD<T> {
    let mut out = crate::tensor::pool::standard_copy(&logits.view());
    let classes = logits.shape()[1];
    let rows = out.as_slice_mut().expect("standard layout").chunks_exact_mut(classes.max(1));
    for (row, &label) in rows.zip(labels) {
        let m = max_of(row.iter());
        let mut sum = T::zero();
        for v in row.iter_mut() {
            *v = (*v - m).exp();
            sum += *v;
        }
        let inverse = T::one() / sum;
        for v in row.iter_mut() {
            *v = *v * inverse * scale;
        }
        row[label] -= scale;
    }
    out
}

/// Binary logistic loss for labels ±1 and scores s: mean(log(1 + e^(−y·s))), computed as a
/// stable softplus.
pub fn binary_logistic<T: Element>(scores: &Tensor<T>, labels: &Tensor<T>) -> Tensor<T> {
    let margin = -(scores * labels);
    // softplus(m) = max(m, 0) + log(1 + e^(−|m|))
    let zero = Tensor::scalar(T::zero());
    (margin.maximum(&zero) + ((-margin.abs()).exp() + T::one()).log()).mean_all()
}

/// ½ Σ‖w‖² over the given parameters (L2 penalty; its gradient is w itself).
pub fn l2_penalty<T: Element>(params: &[&Tensor<T>]) -> Tensor<T> {
    let mut total = Tensor::scalar(T::zero());
    for p in params {
        total = total + p.sqr().sum_all();
    }
    total * T::from_f64_lossy(0.5)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{check_gradients, gradients};
    use ndarray::ArrayD;

    fn logits() -> ArrayD<f64> {
        ArrayD::from_shape_vec(IxDyn(&[3, 4]), vec![0.1, -2.0, 3.0, 0.5, 1.0, 1.0, 1.0, 1.0, -0.3, 0.2, 0.0, 4.0])
            .unwrap()
    }

    #[test]
    fn fused_cross_entropy_matches_the_composed_version() {
        let labels = [2, 0, 3];
        let x = Tensor::from_array(logits()).requires_grad();
        let fused = cross_entropy(&x, &labels);
        let composed = cross_entropy_composed(&x, &labels);
        assert!((fused.item() - composed.item()).abs() < 1e-12);
        let g1 = gradients(&fused, &[&x], None, false).remove(0).unwrap();
        let g2 = gradients(&composed, &[&x], None, false).remove(0).unwrap();
        for (a, b) in g1.to_vec().iter().zip(g2.to_vec()) {
            assert!((a - b).abs() < 1e-12);
        }
        let r = check_gradients(|x| cross_entropy(&x[0], &labels), &[logits()], 1e-6);
        assert!(r.passes(1e-8, 1e-6), "{:?}", r.summary);
    }

    /// The fused first-order rule (no graph recorded) against the composed one (recorded with
    /// `create_graph`), with an upstream cotangent of 3, tied and far-apart logits.
    fn fused_rule_matches_composed<T: Element>(tolerance: f64) {
        let values: Vec<f64> = (0..60).map(|i| ((i * 37 % 23) as f64 - 11.0) * 0.7).collect();
        let mut x = ndarray::ArrayD::from_shape_vec(IxDyn(&[12, 5]), values).unwrap();
        x.index_axis_mut(ndarray::Axis(0), 3).fill(2.0);
        x[[7, 1]] = 80.0;
        let x = Tensor::<T>::from_array(x.mapv(T::from_f64_lossy)).requires_grad();
        let labels: Vec<usize> = (0..12).map(|i| i * 3 % 5).collect();
        let loss = cross_entropy(&x, &labels) * T::from_f64_lossy(3.0);
        let fused = gradients(&loss, &[&x], None, false).remove(0).unwrap();
        let loss = cross_entropy(&x, &labels) * T::from_f64_lossy(3.0);
        let composed = gradients(&loss, &[&x], None, true).remove(0).unwrap();
        assert!(composed.is_tracked(), "create_graph takes the composed rule");
        assert!(!fused.is_tracked(), "without create_graph the fused rule gives a constant");
        for (a, b) in fused.to_vec().iter().zip(composed.to_vec()) {
            let (a, b) = (a.to_f64_lossless(), b.to_f64_lossless());
            assert!((a - b).abs() <= tolerance * (1.0 + b.abs()), "{a} vs {b}");
        }
        // Each row of the gradient sums to 0 (softmax sums to 1); the tied row is even.
        let g = fused.to_array();
        for row in g.outer_iter() {
            assert!(row.iter().map(|v| v.to_f64_lossless()).sum::<f64>().abs() < 10.0 * tolerance);
        }
        assert!((g[[3, 0]].to_f64_lossless() - 3.0 / 60.0).abs() < tolerance);
    }

    #[test]
    fn the_fused_cross_entropy_rule_matches_the_composed_rule_in_f32_and_f64() {
        fused_rule_matches_composed::<f64>(1e-14);
        fused_rule_matches_composed::<f32>(1e-6);
    }

    #[test]
    fn cross_entropy_has_second_derivatives() {
        // The Hessian of the mean cross-entropy in the logits of one row is (diag p − p pᵀ)/batch.
        let x = Tensor::<f64>::from_vec(vec![0.3, -1.2, 2.0, 0.1, 0.5, -0.4], &[2, 3]);
        let h = crate::autodiff::transforms::hessian(|x| cross_entropy(x, &[2, 0]), &x).to_array();
        let x = x.to_array();
        for r in 0..2 {
            let e: Vec<f64> = (0..3).map(|j| x[[r, j]].exp()).collect();
            let p: Vec<f64> = e.iter().map(|v| v / e.iter().sum::<f64>()).collect();
            for i in 0..3 {
                for j in 0..3 {
                    let expected = (if i == j { p[i] } else { 0.0 } - p[i] * p[j]) / 2.0;
                    assert!((h[[r, i, r, j]] - expected).abs() < 1e-12, "{r} {i} {j}");
                    assert_eq!(h[[r, i, 1 - r, j]], 0.0);
                }
            }
        }
    }

    #[test]
    fn cross_entropy_is_finite_for_huge_logits() {
        let x = Tensor::from_vec(vec![1e4f32, -1e4, 0.0, -1e4, 1e4, 0.0], &[2, 3]).requires_grad();
        let loss = cross_entropy(&x, &[1, 0]);
        assert!(loss.item().is_finite() && (loss.item() - 2e4).abs() < 1.0);
        loss.backward();
        assert!(x.grad().unwrap().to_vec().iter().all(|v| v.is_finite()));
    }

    #[test]
    fn losses_have_the_right_values() {
        let p = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[2, 2]);
        let t = Tensor::from_vec(vec![1.0, 0.0, 3.0, 2.0], &[2, 2]);
        assert_eq!(mse(&p, &t).item(), 2.0);
        assert_eq!(mse_half(&p, &t).item(), 2.0);
        let s = Tensor::from_vec(vec![0.0, 2.0], &[2]);
        let y = Tensor::from_vec(vec![1.0, -1.0], &[2]);
        let expected = (2f64.ln() + (1.0 + 2f64.exp()).ln()) / 2.0;
        assert!((binary_logistic(&s, &y).item() - expected).abs() < 1e-12);
        let r = check_gradients(|x| binary_logistic(&x[0], &y), &[ArrayD::from_elem(IxDyn(&[2]), 0.7)], 1e-6);
        assert!(r.passes(1e-8, 1e-6));
        let w = Tensor::from_vec(vec![3.0, 4.0], &[2]);
        assert_eq!(l2_penalty(&[&w]).item(), 12.5);
    }
}

/// How a loss of many elements becomes one number (PyTorch's `reduction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reduction {
    /// The mean (for cross-entropy with class weights: the weighted mean, Σ loss / Σ weight of
    /// each element's class, as PyTorch's).
    #[default]
    Mean,
    /// The sum.
    Sum,
    /// Each element's loss, in the targets' shape `[N, d…]`.
    None,
}

/// What [`cross_entropy_with`] compares the logits with.
#[derive(Debug, Clone, Copy)]
pub enum CrossEntropyTarget<'a, T: Element> {
    /// One class index per element, `N·d₁·…` of them in row-major order of `[N, d…]`.
    Labels(&'a [usize]),
    /// A probability for every class, the logits' shape `[N, C, d…]` (soft labels); it may be
    /// differentiated too.
    Probabilities(&'a Tensor<T>),
}

/// PyTorch's `F.cross_entropy` options; [`Default`] is PyTorch's default (mean, no weights,
/// nothing ignored, no smoothing).
#[derive(Debug, Clone, Copy, Default)]
pub struct CrossEntropyOptions<'a, T: Element> {
    /// A weight per class `[C]`, a constant.
    pub weight: Option<&'a Tensor<T>>,
    /// A label whose elements contribute nothing, not even to the mean's count (PyTorch's
    /// `ignore_index`, e.g. padding). Only with [`CrossEntropyTarget::Labels`].
    pub ignore_index: Option<usize>,
    /// ε in [0, 1]: the target becomes (1 − ε)·target + ε/C (PyTorch's `label_smoothing`).
    pub label_smoothing: f64,
    /// How the elements' losses are reduced.
    pub reduction: Reduction,
}

/// Softmax cross-entropy with PyTorch's options (`F.cross_entropy(logits, target, weight,
/// ignore_index=…, reduction=…, label_smoothing=…)`): logits `[N, C]` or `[N, C, d…]` (the
/// classes along axis 1, as for a picture's pixels or a sequence's positions), targets as
/// labels or as probabilities, class weights, an ignored label, label smoothing, and a mean,
/// sum or no reduction. Written over differentiable operations (log-softmax, products, sums),
/// so every order of derivative is exact; [`cross_entropy`] is the fused fast path for the
/// plain case. As PyTorch's, a mean over no element (every label ignored) is NaN.
///
/// ```
/// use adjoint::nn::{cross_entropy_with, CrossEntropyOptions, CrossEntropyTarget, Reduction};
/// use adjoint::Tensor;
/// // Two sequences of 3 positions over 4 characters: logits [N, C, L] = [2, 4, 3].
/// let logits = Tensor::<f64>::rand_normal(&[2, 4, 3], 0.0, 1.0, 1).requires_grad();
/// let labels = [0, 3, 1, 2, 2, 0]; // [N, L], with 0 as padding
/// let options = CrossEntropyOptions { ignore_index: Some(0), label_smoothing: 0.1, ..Default::default() };
/// let loss = cross_entropy_with(&logits, CrossEntropyTarget::Labels(&labels), &options);
/// assert_eq!(loss.shape(), [] as [usize; 0]);
/// let each = cross_entropy_with(
///     &logits,
///     CrossEntropyTarget::Labels(&labels),
///     &CrossEntropyOptions { reduction: Reduction::None, ..options },
/// );
/// assert_eq!(each.shape(), [2, 3]);
/// assert_eq!(each.to_vec()[0], 0.0); // an ignored position
/// ```
///
/// # Panics
/// If the logits have fewer than 2 axes, the labels' count or the probabilities' shape does
/// not fit them, a label (other than the ignored one) is not below C, the weights are not
/// `[C]`, ε is not in [0, 1], or `ignore_index` is given with probabilities.
#[track_caller]
pub fn cross_entropy_with<T: Element>(
    logits: &Tensor<T>,
    target: CrossEntropyTarget<'_, T>,
    options: &CrossEntropyOptions<'_, T>,
) -> Tensor<T> {
    let shape = logits.shape().to_vec();
    assert!(shape.len() >= 2, "cross_entropy: logits must be [N, C] or [N, C, d…], got shape {shape:?}");
    let classes = shape[1];
    let eps = options.label_smoothing;
    assert!((0.0..=1.0).contains(&eps), "cross_entropy: label_smoothing must be in [0, 1], got {eps}");
    // The targets' shape [N, d…]: the logits' without the class axis.
    let mut element_shape = shape.clone();
    element_shape.remove(1);
    let elements: usize = element_shape.iter().product();
    let class_weight: Vec<f64> = match options.weight {
        Some(w) => {
            assert!(
                w.shape() == [classes],
                "cross_entropy: weight of shape {:?} for {classes} classes: expected [{classes}]",
                w.shape()
            );
            w.to_vec().iter().map(|v| v.to_f64_lossless()).collect()
        }
        None => vec![1.0; classes],
    };
    // The weight of every class broadcast along [1, C, 1, …].
    let mut weight_shape = vec![1; shape.len()];
    weight_shape[1] = classes;
    let log_p = logits.log_softmax(1);
    let (per_element, denominator) = match target {
        CrossEntropyTarget::Labels(labels) => {
            assert!(
                labels.len() == elements,
                "cross_entropy: {} labels for logits of shape {shape:?}: expected {elements} (one per element of \
                 {element_shape:?})",
                labels.len()
            );
            // The label's log-probability is picked (gather), not multiplied out of the whole
            // row, and ignored elements are selected away (where), so that a −inf logit of
            // another class or an ignored row of −inf stays out of the loss, as in PyTorch.
            let mut index_shape = shape.clone();
            index_shape[1] = 1;
            let (mut picked_at, mut keep, mut label_weight) = (Vec::new(), Vec::new(), Vec::new());
            let mut denominator = 0.0;
            for &label in labels {
                let ignored = options.ignore_index == Some(label);
                assert!(
                    ignored || label < classes,
                    "cross_entropy: label {label} is out of range for {classes} classes"
                );
                let w = if ignored { 0.0 } else { class_weight[label] };
                picked_at.push(if ignored { 0 } else { label });
                keep.push(if ignored { T::zero() } else { T::one() });
                label_weight.push(T::from_f64_lossy((1.0 - eps) * w));
                denominator += w;
            }
            let index = ndarray::ArrayD::from_shape_vec(IxDyn(&index_shape), picked_at).expect("one label per element");
            let label_term =
                log_p.gather(1, &index).reshape(&element_shape) * Tensor::from_vec(label_weight, &element_shape);
            let mut loss = label_term;
            if eps > 0.0 {
                // ε/C · Σ_c w[c]·log p_c over every class.
                let smoothing: Vec<T> =
                    class_weight.iter().map(|w| T::from_f64_lossy(eps / classes as f64 * w)).collect();
                loss = loss + (&log_p * Tensor::from_vec(smoothing, &weight_shape)).sum(&[1], false);
            }
            let keep = Tensor::from_vec(keep, &element_shape);
            (-Tensor::where_(&keep, &loss, &Tensor::zeros(&[])), denominator)
        }
        CrossEntropyTarget::Probabilities(q) => {
            assert!(
                q.shape() == shape.as_slice(),
                "cross_entropy: probabilities of shape {:?} for logits of shape {shape:?}: expected the same shape",
                q.shape()
            );
            assert!(options.ignore_index.is_none(), "cross_entropy: ignore_index goes with labels, not probabilities");
            let smoothed = if eps > 0.0 {
                q * T::from_f64_lossy(1.0 - eps) + T::from_f64_lossy(eps / classes as f64)
            } else {
                q.clone()
            };
            let weighted = match options.weight {
                Some(w) => smoothed * w.detach().reshape(&weight_shape),
                None => smoothed,
            };
            // As PyTorch's: the mean over elements, whatever the weights.
            (-(log_p * weighted).sum(&[1], false), elements as f64)
        }
    };
    match options.reduction {
        Reduction::None => per_element,
        Reduction::Sum => per_element.sum_all(),
        Reduction::Mean => per_element.sum_all() * T::from_f64_lossy(1.0 / denominator),
    }
}
