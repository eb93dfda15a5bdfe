//! PyTorch's layer options against PyTorch's float64 numbers (written by
//! `scripts/fixtures/torch_layer_options.py`): convolution padding (`"same"` with even and
//! rectangular kernels, asymmetric, reflect, replicate, circular, unbatched input), pooling
//! (`ceil_mode`, `count_include_pad = false`, `divisor_override`, unbatched), batch norm over
//! `[N, C, L]` and `[N, C, D, H, W]`, layer norm over two axes, and batched linear algebra
//! (`solve` with broadcast batch axes and batched vectors, `inverse`, `det`, `logdet`,
//! `cholesky`, `cholesky_upper`). For each: the output, the gradient of ⟨out, r⟩ for every
//! input, and its Hessian times a direction in all inputs at once (so cross terms count),
//! to 1e-10. Also `check_grads` to order 2 on the padding modes, and the parameter names of
//! a convolutional architecture against the equivalent `nn.Sequential`'s.

use std::collections::HashMap;
use std::path::PathBuf;

use adjoint::autodiff::gradcheck::{check_grads, CheckOptions};
use adjoint::autodiff::transforms::grad_many;
use adjoint::nn::{AvgPool2d, BatchNorm, Conv2d, Init, LayerNorm, MaxPool2d, Module, Padding};
use adjoint::ops::{AvgPoolOptions, PadMode, Window2d};
use adjoint::Tensor;
use ndarray::ArrayD;

fn fixture() -> HashMap<String, ArrayD<f64>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch_layer_options.safetensors");
    adjoint::io::load::<f64>(&path, &Default::default()).unwrap().tensors
}

fn max_diff(a: &Tensor<f64>, b: &ArrayD<f64>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    a.to_vec().iter().zip(b.iter()).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

/// Checks `f` of the case's inputs (named `inputs`, in order) against PyTorch's output,
/// gradients of ⟨f, r⟩ and Hessian-vector products.
fn check_case(
    t: &HashMap<String, ArrayD<f64>>,
    name: &str,
    inputs: &[&str],
    f: impl Fn(&[Tensor<f64>]) -> Tensor<f64>,
) {
    let get = |k: &str| t.get(&format!("{name}.{k}")).unwrap_or_else(|| panic!("{name}.{k} is not in the fixture"));
    let args: Vec<Tensor<f64>> = inputs.iter().map(|k| Tensor::from_array(get(&format!("in.{k}")).clone())).collect();
    let y = f(&args);
    assert!(max_diff(&y, get("out")) < 1e-10, "{name}: output differs by {}", max_diff(&y, get("out")));
    let r = Tensor::from_array(get("r").clone());
    let weighted = |a: &[Tensor<f64>]| (f(a) * &r).sum_all();
    let grads = grad_many(weighted)(&args);
    for (k, g) in inputs.iter().zip(&grads) {
        let d = max_diff(g, get(&format!("grad.{k}")));
        assert!(d < 1e-10, "{name}: ∂/∂{k} differs by {d}");
    }
    let vs: Vec<Tensor<f64>> = inputs.iter().map(|k| Tensor::from_array(get(&format!("v.{k}")).clone())).collect();
    let directional = |a: &[Tensor<f64>]| {
        let g = grad_many(weighted)(a);
        g.iter().zip(&vs).map(|(g, v)| (g * v).sum_all()).reduce(|a, b| a + b).expect("an input")
    };
    let second = grad_many(directional)(&args);
    for (k, h) in inputs.iter().zip(&second) {
        let d = max_diff(h, get(&format!("hvp.{k}")));
        assert!(d < 1e-10, "{name}: (Hessian·v) for {k} differs by {d}");
    }
}

fn conv(w: &Tensor<f64>, b: &Tensor<f64>, window: Window2d, padding: Padding, mode: PadMode) -> Conv2d<f64> {
    let s = w.shape();
    let window = Window2d { kernel: [s[2], s[3]], ..window };
    let mut layer = Conv2d::new(s[1], s[0], window, 1, Init::HeNormal, &mut rand::rng()).with_padding(padding, mode);
    layer.weight = w.clone();
    layer.bias = b.clone();
    layer
}

#[test]
fn convolution_padding_gives_pytorchs_numbers() {
    let t = fixture();
    let plain = Window2d::new([1, 1]);
    let cases: Vec<(&str, Window2d, Padding, PadMode)> = vec![
        ("conv_same_even", plain, Padding::Same, PadMode::Zeros),
        ("conv_same_rect_dilated", plain.dilation(2), Padding::Same, PadMode::Zeros),
        ("conv_reflect", plain.stride(2), Padding::Uniform(2), PadMode::Reflect),
        ("conv_replicate_same", plain, Padding::Same, PadMode::Replicate),
        ("conv_circular", plain, Padding::Uniform(2), PadMode::Circular),
        ("conv_unbatched", plain, Padding::Uniform(1), PadMode::Zeros),
        ("conv_unbatched_reflect", plain, Padding::Uniform(1), PadMode::Reflect),
        ("conv_asymmetric", plain, Padding::Sides([[2, 1], [1, 0]]), PadMode::Zeros),
    ];
    for (name, window, padding, mode) in cases {
        check_case(&t, name, &["x", "w", "b"], |a| conv(&a[1], &a[2], window, padding, mode).forward(&a[0]).sin());
    }
}

#[test]
fn same_padding_keeps_the_size_and_symmetric_zeros_stay_implicit() {
    let mut rng = rand::rng();
    let odd = Conv2d::<f64>::new(2, 3, Window2d::new([3, 5]), 1, Init::HeNormal, &mut rng)
        .with_padding(Padding::Same, PadMode::Zeros);
    assert_eq!((odd.window.padding, odd.border), ([1, 2], [[0; 2]; 2]), "no copy for odd kernels");
    let even = Conv2d::<f64>::new(2, 3, Window2d::new([4, 2]), 1, Init::HeNormal, &mut rng)
        .with_padding(Padding::Same, PadMode::Zeros);
    assert_eq!((even.window.padding, even.border), ([0, 0], [[1, 2], [0, 1]]), "PyTorch's extra at the end");
    for layer in [odd, even] {
        assert_eq!(layer.forward(&Tensor::zeros(&[2, 2, 7, 6])).shape(), [2, 3, 7, 6]);
    }
}

#[test]
#[should_panic(expected = "padding \"same\" needs stride 1")]
fn same_padding_refuses_a_stride() {
    let _ = Conv2d::<f64>::new(1, 1, Window2d::new([3, 3]).stride(2), 1, Init::HeNormal, &mut rand::rng())
        .with_padding(Padding::Same, PadMode::Zeros);
}

#[test]
#[should_panic(expected = "reflect padding of [3, 3] does not fit an input of shape [1, 1, 3, 3]")]
fn reflect_padding_as_wide_as_the_input_is_refused() {
    let _ = Tensor::<f64>::zeros(&[1, 1, 3, 3]).pad2d([[3, 3], [0, 0]], PadMode::Reflect);
}

#[test]
fn every_padding_mode_passes_check_grads_to_order_two() {
    let x = Tensor::<f64>::rand_normal(&[1, 2, 3, 4], 0.0, 1.0, 5);
    for mode in [PadMode::Zeros, PadMode::Reflect, PadMode::Replicate, PadMode::Circular] {
        let f = move |v: &[Tensor<f64>]| vec![v[0].pad2d([[2, 1], [0, 3]], mode).sin()];
        check_grads(f, std::slice::from_ref(&x), CheckOptions { order: 2, ..Default::default() })
            .unwrap_or_else(|e| panic!("{mode:?}: {e}"));
    }
}

#[test]
fn pooling_options_give_pytorchs_numbers() {
    let t = fixture();
    let exclude = AvgPoolOptions { count_include_pad: false, divisor_override: None };
    let w3 = Window2d::new([3, 3]).stride(2).padding(1);
    let w2 = Window2d::new([2, 2]).stride(2);
    let max = |w: Window2d| move |a: &[Tensor<f64>]| MaxPool2d(w).forward(&a[0]).sin();
    let avg = |w: Window2d, options: AvgPoolOptions| {
        move |a: &[Tensor<f64>]| AvgPool2d { window: w, options }.forward(&a[0]).sin()
    };
    check_case(&t, "maxpool_ceil", &["x"], max(w3.ceil_mode(true)));
    check_case(&t, "maxpool_ceil_nopad", &["x"], max(w2.ceil_mode(true)));
    check_case(&t, "maxpool_unbatched", &["x"], max(w2.ceil_mode(true)));
    check_case(&t, "avgpool_ceil", &["x"], avg(w3.ceil_mode(true), AvgPoolOptions::default()));
    check_case(&t, "avgpool_exclude", &["x"], avg(w3, exclude));
    check_case(&t, "avgpool_ceil_exclude", &["x"], avg(w3.ceil_mode(true), exclude));
    let divisor = AvgPoolOptions { divisor_override: Some(3), ..Default::default() };
    check_case(&t, "avgpool_divisor", &["x"], avg(w2.ceil_mode(true), divisor));
    check_case(&t, "avgpool_unbatched", &["x"], avg(w2, AvgPoolOptions::default()));
}

#[test]
fn ceil_mode_never_starts_a_window_in_the_right_padding() {
    // PyTorch: 5 wide, kernel 2, stride 2, padding 1, ceil_mode → 3, not 4 (the fourth
    // window would start at padded position 6, past the input and its left padding).
    let w = Window2d::new([2, 2]).stride(2).padding(1).ceil_mode(true);
    assert_eq!(w.output_size([5, 5]), Some([3, 3]));
    assert_eq!(w.output_size([4, 4]), Some([3, 3]));
    // 6 wide, kernel 3, stride 2, padding 1: 3 windows rounded down, 4 with ceil_mode
    // (PyTorch's MaxPool2d(3, 2, 1, ceil_mode=True) on 6×6 gives 4×4).
    let w = Window2d::new([3, 3]).stride(2).padding(1);
    assert_eq!((w.output_size([6, 6]), w.ceil_mode(true).output_size([6, 6])), (Some([3, 3]), Some([4, 4])));
}

#[test]
fn normalisation_over_more_axes_gives_pytorchs_numbers() {
    let t = fixture();
    for name in ["batchnorm1d", "batchnorm3d"] {
        let norm = |a: &[Tensor<f64>]| {
            let mut layer = BatchNorm::<f64>::new(3);
            layer.weight = a[1].clone();
            layer.bias = a[2].clone();
            layer.forward(&a[0])
        };
        check_case(&t, name, &["x", "w", "b"], norm);
        let layer = BatchNorm::<f64>::new(3);
        layer.forward(&Tensor::from_array(t[&format!("{name}.in.x")].clone()));
        let (mean, var) = layer.running();
        assert!(max_diff(&Tensor::from_array(mean), &t[&format!("{name}.running_mean")]) < 1e-12, "{name}");
        assert!(max_diff(&Tensor::from_array(var), &t[&format!("{name}.running_var")]) < 1e-12, "{name}");
    }
    check_case(&t, "layernorm_2axes", &["x", "w", "b"], |a| {
        let mut layer = LayerNorm::<f64>::with_shape(&[3, 4]);
        layer.weight = a[1].clone();
        layer.bias = a[2].clone();
        layer.forward(&a[0])
    });
}

#[test]
fn batched_linear_algebra_gives_pytorchs_numbers() {
    let t = fixture();
    check_case(&t, "solve_broadcast", &["a", "b"], |v| v[0].solve(&v[1]));
    check_case(&t, "solve_vectors", &["a", "b"], |v| v[0].solve(&v[1]));
    check_case(&t, "inverse_batched", &["a"], |v| v[0].inverse());
    check_case(&t, "det_batched", &["a"], |v| v[0].det());
    check_case(&t, "logdet_batched", &["a"], |v| v[0].logdet());
    check_case(&t, "cholesky_batched", &["a"], |v| v[0].cholesky());
    check_case(&t, "cholesky_upper_batched", &["a"], |v| v[0].cholesky_upper());
    let a = Tensor::from_array(t["cholesky_upper_reads.in"].clone());
    assert!(max_diff(&a.cholesky_upper(), &t["cholesky_upper_reads.out"]) < 1e-12, "upper reads the upper triangle");
}

#[test]
fn batched_linear_algebra_passes_check_grads_to_order_two() {
    let a = Tensor::<f64>::rand_normal(&[2, 3, 3], 0.0, 1.0, 8) + Tensor::eye(3) * 3.0;
    let b = Tensor::<f64>::rand_normal(&[3, 2], 0.0, 1.0, 9);
    let options = CheckOptions { order: 2, ..Default::default() };
    check_grads(|v: &[Tensor<f64>]| vec![v[0].solve(&v[1]), v[0].det(), v[0].logdet()], &[a.clone(), b], options)
        .unwrap();
    // Cholesky's derivatives are those of chol(sym(A)) (as PyTorch's and JAX's), so the
    // finite differences go through the symmetric part too.
    let spd = a.matmul(&a.transpose()) + Tensor::eye(3);
    let sym = |m: &Tensor<f64>| (m + &m.transpose()) * 0.5;
    check_grads(move |v: &[Tensor<f64>]| vec![sym(&v[0]).cholesky_upper(), v[0].inverse()], &[spd], options).unwrap();
}

#[test]
fn an_empty_batch_of_matrices_gives_an_empty_result() {
    let a = Tensor::<f64>::zeros(&[0, 3, 3]);
    assert_eq!(a.det().shape(), [0]);
    assert_eq!(a.solve(&Tensor::zeros(&[3, 2])).shape(), [0, 3, 2]);
}

/// `nn.Embedding(6, 3, max_norm=1.0, norm_type=…)`: the lookup's rows, the weight's
/// gradient (PyTorch's, unscaled), the weight after an SGD step (PyTorch renormalised the
/// rows in place before it) and a second lookup.
#[test]
fn embedding_max_norm_follows_pytorch_through_a_training_step() {
    use adjoint::nn::Embedding;
    use adjoint::optim::Optimizer;
    let t = fixture();
    for (name, norm_type) in [("embedding_max_norm", 2.0), ("embedding_max_norm_l1", 1.0)] {
        let get = |k: &str| t[&format!("{name}.{k}")].clone();
        let mut table = Embedding::<f64>::new(6, 3, &mut rand::rng()).max_norm(1.0, norm_type);
        table.weight = Tensor::from_array(get("weight")).requires_grad();
        let ids = ndarray::arr2(&[[1usize, 3, 1], [5, 0, 3]]).into_dyn();
        let y = table.ids(&ids);
        assert!(max_diff(&y, &get("out")) < 1e-12, "{name}: lookup");
        (y * Tensor::from_array(get("r"))).sum_all().backward();
        assert!(max_diff(&table.weight.grad().unwrap(), &get("grad")) < 1e-12, "{name}: gradient");
        let mut sgd = Optimizer::sgd(0.1);
        sgd.step(&mut table);
        assert!(max_diff(&table.weight, &get("weight_after_step")) < 1e-12, "{name}: weight after the step");
        assert!(max_diff(&table.lookup(&[2, 1, 4]), &get("out2")) < 1e-12, "{name}: second lookup");
    }
}
