//! `cross_entropy_with` against PyTorch's `F.cross_entropy` with its options (float64 numbers
//! written by `scripts/fixtures/torch_losses.py`): values, gradients and Hessian-vector
//! products to 1e-10, for class weights, `ignore_index`, label smoothing, probability targets,
//! logits `[N, C, d…]` and every reduction; the plain case against the fused `cross_entropy`;
//! and `check_grads` to order 2.

use std::collections::HashMap;
use std::path::PathBuf;

use adjoint::autodiff::gradcheck::{check_grads, CheckOptions};
use adjoint::autodiff::transforms::{grad, grad_many, hvp};
use adjoint::nn::{cross_entropy, cross_entropy_with, CrossEntropyOptions, CrossEntropyTarget, Reduction};
use adjoint::Tensor;
use ndarray::ArrayD;

fn fixture() -> HashMap<String, ArrayD<f64>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch_losses.safetensors");
    adjoint::io::load::<f64>(&path, &Default::default()).unwrap().tensors
}

fn max_diff(a: &Tensor<f64>, b: &ArrayD<f64>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    a.to_vec().iter().zip(b.iter()).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

/// The fixture's cases: name, options other than the weight, whether targets are probabilities.
fn cases() -> Vec<(&'static str, Option<usize>, f64, Reduction, bool)> {
    vec![
        ("plain", None, 0.0, Reduction::Mean, false),
        ("weighted_mean", Some(2), 0.2, Reduction::Mean, false),
        ("weighted_sum", Some(2), 0.2, Reduction::Sum, false),
        ("weighted_none", Some(2), 0.2, Reduction::None, false),
        ("sequence", Some(0), 0.1, Reduction::Mean, false),
        ("pixels", None, 0.0, Reduction::None, false),
        ("soft", None, 0.3, Reduction::Mean, true),
        ("soft_sequence", None, 0.0, Reduction::Sum, true),
    ]
}

#[test]
fn every_option_gives_pytorchs_values_gradients_and_second_derivatives() {
    let t = fixture();
    for (name, ignore_index, label_smoothing, reduction, soft) in cases() {
        let get = |k: &str| t.get(&format!("{name}.{k}")).cloned();
        let logits = Tensor::from_array(get("logits").unwrap());
        let weight = get("weight").map(Tensor::from_array);
        let labels: Vec<usize> = get("labels").map_or(vec![], |l| l.iter().map(|&v| v as usize).collect());
        let target = get("target").map(Tensor::from_array);
        let r = Tensor::from_array(get("r").unwrap());
        // The loss weighted by PyTorch's cotangent r, as a function of the logits (and the
        // probabilities, when they are the target).
        let loss = |x: &Tensor<f64>, q: Option<&Tensor<f64>>| {
            let options = CrossEntropyOptions { weight: weight.as_ref(), ignore_index, label_smoothing, reduction };
            let target = match q {
                Some(q) => CrossEntropyTarget::Probabilities(q),
                None => CrossEntropyTarget::Labels(&labels),
            };
            cross_entropy_with(x, target, &options)
        };
        let value = loss(&logits, target.as_ref());
        assert!(max_diff(&value, &t[&format!("{name}.loss")]) < 1e-12, "{name}: value");
        let weighted = |v: &[Tensor<f64>]| (loss(&v[0], if soft { Some(&v[1]) } else { None }) * &r).sum_all();
        let mut args = vec![logits.clone()];
        args.extend(target.clone());
        let grads = grad_many(weighted)(&args);
        assert!(max_diff(&grads[0], &t[&format!("{name}.grad")]) < 1e-12, "{name}: ∂logits");
        if soft {
            assert!(max_diff(&grads[1], &t[&format!("{name}.grad_target")]) < 1e-12, "{name}: ∂target");
        }
        let v = Tensor::from_array(get("v").unwrap());
        let second = hvp(|x| (loss(x, target.as_ref()) * &r).sum_all(), &logits, &v);
        assert!(max_diff(&second, &t[&format!("{name}.hvp")]) < 1e-12, "{name}: Hessian·v");
    }
}

#[test]
fn the_plain_case_equals_the_fused_loss() {
    let logits = Tensor::<f64>::rand_normal(&[7, 5], 0.0, 2.0, 3);
    let labels = [0, 4, 2, 2, 1, 3, 0];
    let with = |x: &Tensor<f64>| cross_entropy_with(x, CrossEntropyTarget::Labels(&labels), &Default::default());
    let fused = |x: &Tensor<f64>| cross_entropy(x, &labels);
    assert!((with(&logits).item() - fused(&logits).item()).abs() < 1e-14);
    let (a, b) = (grad(with)(&logits), grad(fused)(&logits));
    assert!(max_diff(&a, &b.to_array()) < 1e-15);
}

#[test]
fn ignored_labels_need_not_be_classes_and_all_ignored_is_nan_as_pytorchs() {
    let logits = Tensor::<f64>::rand_normal(&[3, 4], 0.0, 1.0, 5);
    // -100, PyTorch's default ignore_index, written as usize::MAX here: any value not a class.
    let options = CrossEntropyOptions { ignore_index: Some(usize::MAX), ..Default::default() };
    let some = cross_entropy_with(&logits, CrossEntropyTarget::Labels(&[1, usize::MAX, 3]), &options);
    let kept = cross_entropy(&logits.index_select(0, &[0, 2]), &[1, 3]);
    assert!((some.item() - kept.item()).abs() < 1e-14);
    let none = cross_entropy_with(&logits, CrossEntropyTarget::Labels(&[usize::MAX; 3]), &options);
    assert!(none.item().is_nan());
    let summed = cross_entropy_with(
        &logits,
        CrossEntropyTarget::Labels(&[usize::MAX; 3]),
        &CrossEntropyOptions { reduction: Reduction::Sum, ..options },
    );
    assert_eq!(summed.item(), 0.0);
}

#[test]
fn mistakes_are_named() {
    let logits = Tensor::<f64>::zeros(&[2, 3, 4]);
    let message = |f: &dyn Fn()| {
        let e = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_err();
        e.downcast_ref::<String>().cloned().unwrap_or_default()
    };
    let m = message(&|| {
        cross_entropy_with(&logits, CrossEntropyTarget::Labels(&[0, 1]), &Default::default());
    });
    assert!(m.contains("2 labels") && m.contains("expected 8") && m.contains("[2, 4]"), "{m}");
    let m = message(&|| {
        cross_entropy_with(&logits, CrossEntropyTarget::Labels(&[3; 8]), &Default::default());
    });
    assert!(m.contains("label 3 is out of range for 3 classes"), "{m}");
    let w = Tensor::ones(&[4]);
    let m = message(&|| {
        let options = CrossEntropyOptions { weight: Some(&w), ..Default::default() };
        cross_entropy_with(&logits, CrossEntropyTarget::Labels(&[0; 8]), &options);
    });
    assert!(m.contains("weight of shape [4] for 3 classes"), "{m}");
    let m = message(&|| {
        let options = CrossEntropyOptions { label_smoothing: 1.5, ..Default::default() };
        cross_entropy_with(&logits, CrossEntropyTarget::Labels(&[0; 8]), &options);
    });
    assert!(m.contains("label_smoothing"), "{m}");
}

#[test]
fn options_pass_check_grads_to_order_two() {
    let w = Tensor::from_vec(vec![0.5, 2.0, 1.0], &[3]);
    let labels = [2, 0, 1, 1, 0, 2];
    let w2 = w.clone();
    let f = move |v: &[Tensor<f64>]| {
        let options = CrossEntropyOptions {
            weight: Some(&w),
            ignore_index: Some(1),
            label_smoothing: 0.25,
            reduction: Reduction::None,
        };
        vec![cross_entropy_with(&v[0], CrossEntropyTarget::Labels(&labels), &options)]
    };
    check_grads(f, &[Tensor::rand_normal(&[2, 3, 3], 0.0, 1.0, 11)], CheckOptions::default()).unwrap();
    let soft = move |v: &[Tensor<f64>]| {
        let options = CrossEntropyOptions { weight: Some(&w2), label_smoothing: 0.1, ..Default::default() };
        vec![cross_entropy_with(&v[0], CrossEntropyTarget::Probabilities(&v[1].softmax(1)), &options)]
    };
    let args = [Tensor::rand_normal(&[4, 3], 0.0, 1.0, 12), Tensor::rand_normal(&[4, 3], 0.0, 1.0, 13)];
    check_grads(soft, &args, CheckOptions::default()).unwrap();
}

#[test]
fn minus_infinite_logits_of_other_classes_and_ignored_rows_stay_out_of_the_loss() {
    let inf = f64::INFINITY;
    // A masked class in every row, and a row of −inf that is ignored (PyTorch: finite loss).
    let logits = Tensor::from_vec(vec![1.0, -inf, 0.5, 0.0, -inf, 2.0, -inf, -inf, -inf], &[3, 3]);
    let options = CrossEntropyOptions { ignore_index: Some(7), ..Default::default() };
    let loss = cross_entropy_with(&logits, CrossEntropyTarget::Labels(&[0, 2, 7]), &options);
    let kept = cross_entropy(&logits.index_select(0, &[0, 1]), &[0, 2]);
    assert!(loss.item().is_finite() && (loss.item() - kept.item()).abs() < 1e-14, "{}", loss.item());
    let each = cross_entropy_with(
        &logits,
        CrossEntropyTarget::Labels(&[0, 2, 7]),
        &CrossEntropyOptions { reduction: Reduction::None, ..options },
    );
    assert_eq!(each.to_vec()[2], 0.0);
    let g = grad(|x| cross_entropy_with(x, CrossEntropyTarget::Labels(&[0, 2]), &Default::default()))(
        &logits.index_select(0, &[0, 1]),
    );
    assert!(g.to_vec().iter().all(|v| v.is_finite()), "{:?}", g.to_vec());
}
