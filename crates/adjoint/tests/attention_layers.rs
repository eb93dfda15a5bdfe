//! Attention layers against PyTorch (float64 state dicts loaded unchanged, outputs to 1e-10),
//! their parameter names, masks, training-mode dropout, and derivatives to order 2.

use std::collections::HashMap;
use std::path::PathBuf;

use adjoint::autodiff::gradcheck::{check_grads, CheckOptions};
use adjoint::nn::{
    sinusoidal_positions, AttentionMasks, FeedForwardActivation, Module, MultiheadAttention, PositionalEmbedding,
    TransformerDecoderLayer, TransformerEncoder, TransformerEncoderLayer, TransformerOptions,
};
use adjoint::Tensor;
use ndarray::ArrayD;
use rand::SeedableRng;

fn fixture() -> HashMap<String, ArrayD<f64>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch_transformer.safetensors");
    adjoint::io::load::<f64>(&path, &Default::default()).unwrap().tensors
}

/// The fixture's tensors under `prefix.`, with the prefix removed.
fn state(t: &HashMap<String, ArrayD<f64>>, prefix: &str, skip: &[&str]) -> HashMap<String, ArrayD<f64>> {
    t.iter()
        .filter_map(|(k, v)| k.strip_prefix(&format!("{prefix}.")).map(|n| (n.to_string(), v.clone())))
        .filter(|(n, _)| !skip.contains(&n.as_str()))
        .collect()
}

fn max_diff(a: &Tensor<f64>, b: &ArrayD<f64>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    a.to_vec().iter().zip(b.iter()).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

fn rng() -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(3)
}

#[test]
fn a_pytorch_transformer_encoder_loads_unchanged_and_gives_its_outputs() {
    let t = fixture();
    let options = TransformerOptions { dim_feedforward: 32, batch_first: true, ..TransformerOptions::new(16, 4) };
    let mut encoder = TransformerEncoder::<f64>::new(options, 2, true, &mut rng());
    encoder.load_state_dict(&state(&t, "enc", &["x", "y", "y_causal", "padding", "y_padding"])).unwrap();
    encoder.set_training(false);
    let x = Tensor::from_array(t["enc.x"].clone());
    assert!(max_diff(&encoder.forward(&x), &t["enc.y"]) < 1e-10);
    let causal = encoder.forward_masked(&x, &AttentionMasks { is_causal: true, ..Default::default() });
    assert!(max_diff(&causal, &t["enc.y_causal"]) < 1e-10);
    let padding = t["enc.padding"].mapv(|p| p > 0.5);
    let padded = encoder.forward_masked(&x, &AttentionMasks { key_padding_mask: Some(&padding), ..Default::default() });
    assert!(max_diff(&padded, &t["enc.y_padding"]) < 1e-10, "{}", max_diff(&padded, &t["enc.y_padding"]));
    // Our state dict has PyTorch's names, exactly.
    let ours: Vec<String> = encoder.state_dict().into_iter().map(|(n, _)| n).collect();
    let mut theirs: Vec<String> =
        state(&t, "enc", &["x", "y", "y_causal", "padding", "y_padding"]).into_keys().collect();
    let mut sorted = ours.clone();
    sorted.sort();
    theirs.sort();
    assert_eq!(sorted, theirs);
    assert!(ours[0].starts_with("layers.0.self_attn.in_proj_weight"), "{ours:?}");
}

#[test]
fn a_pre_norm_gelu_layer_sequence_first_matches_pytorch() {
    let t = fixture();
    let options = TransformerOptions {
        dim_feedforward: 16,
        activation: FeedForwardActivation::Gelu,
        norm_first: true,
        ..TransformerOptions::new(8, 2)
    };
    let mut layer = TransformerEncoderLayer::<f64>::new(options, &mut rng());
    layer.load_state_dict(&state(&t, "pre", &["x", "y"])).unwrap();
    layer.set_training(false);
    assert!(max_diff(&layer.forward(&Tensor::from_array(t["pre.x"].clone())), &t["pre.y"]) < 1e-10);
}

#[test]
fn multihead_attention_with_other_key_and_value_widths_matches_pytorch_with_weights() {
    let t = fixture();
    let mut mha = MultiheadAttention::<f64>::with_dims(12, 3, 6, 7, true, &mut rng());
    mha.load_state_dict(&state(&t, "mha", &["q", "k", "v", "y", "w"])).unwrap();
    mha.set_training(false);
    let get = |n: &str| Tensor::from_array(t[n].clone());
    let (y, w) = mha.attend(&get("mha.q"), &get("mha.k"), &get("mha.v"), &AttentionMasks::default(), true);
    assert!(max_diff(&y, &t["mha.y"]) < 1e-10);
    assert!(max_diff(&w.unwrap(), &t["mha.w"]) < 1e-12);
    let names: Vec<String> = mha.state_dict().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        ["q_proj_weight", "k_proj_weight", "v_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"]
    );
}

#[test]
fn a_decoder_layer_with_a_causal_target_matches_pytorch() {
    let t = fixture();
    let options = TransformerOptions { dim_feedforward: 24, batch_first: true, ..TransformerOptions::new(16, 4) };
    let mut layer = TransformerDecoderLayer::<f64>::new(options, &mut rng());
    layer.load_state_dict(&state(&t, "dec", &["tgt", "memory", "y"])).unwrap();
    layer.set_training(false);
    let get = |n: &str| Tensor::from_array(t[n].clone());
    let y = layer.forward_with_memory(
        &get("dec.tgt"),
        &get("dec.memory"),
        &AttentionMasks { is_causal: true, ..Default::default() },
        &AttentionMasks::default(),
    );
    assert!(max_diff(&y, &t["dec.y"]) < 1e-10);
}

#[test]
fn dropout_is_on_in_training_and_off_in_evaluation() {
    let options =
        TransformerOptions { dim_feedforward: 8, batch_first: true, dropout: 0.5, ..TransformerOptions::new(4, 2) };
    let mut layer = TransformerEncoderLayer::<f64>::new(options, &mut rng());
    let x = Tensor::rand_normal(&[2, 3, 4], 0.0, 1.0, 1);
    let (a, b) = (layer.forward(&x), layer.forward(&x));
    assert!(max_diff(&a, &b.to_array()) > 1e-6, "two training calls draw different masks");
    layer.set_training(false);
    let (c, d) = (layer.forward(&x), layer.forward(&x));
    assert_eq!(c.to_vec(), d.to_vec());
}

#[test]
fn the_layers_pass_check_grads_to_order_two() {
    let options =
        TransformerOptions { dim_feedforward: 6, batch_first: true, dropout: 0.0, ..TransformerOptions::new(4, 2) };
    for norm_first in [false, true] {
        let layer = TransformerEncoderLayer::<f64>::new(TransformerOptions { norm_first, ..options }, &mut rng());
        let x = Tensor::rand_normal(&[2, 3, 4], 0.0, 1.0, 9);
        let padding = ndarray::arr2(&[[false, false, true], [false, false, false]]).into_dyn();
        let f = move |x: &[Tensor<f64>]| {
            let masks = AttentionMasks { key_padding_mask: Some(&padding), is_causal: true, ..Default::default() };
            vec![layer.forward_masked(&x[0], &masks)]
        };
        check_grads(f, &[x], CheckOptions { atol: 1e-6, rtol: 1e-5, ..CheckOptions::default() })
            .unwrap_or_else(|e| panic!("norm_first {norm_first}: {e}"));
    }
    let decoder = TransformerDecoderLayer::<f64>::new(options, &mut rng());
    let f = move |x: &[Tensor<f64>]| {
        vec![decoder.forward_with_memory(
            &x[0],
            &x[1],
            &AttentionMasks { is_causal: true, ..Default::default() },
            &AttentionMasks::default(),
        )]
    };
    let xs = [Tensor::rand_normal(&[1, 3, 4], 0.0, 1.0, 1), Tensor::rand_normal(&[1, 2, 4], 0.0, 1.0, 2)];
    check_grads(f, &xs, CheckOptions { atol: 1e-6, rtol: 1e-5, ..CheckOptions::default() }).unwrap();
}

#[test]
fn positions_sinusoidal_and_learned() {
    let pe = sinusoidal_positions::<f64>(50, 8).to_array();
    assert_eq!(pe[[0, 0]], 0.0);
    assert_eq!(pe[[0, 1]], 1.0);
    assert!((pe[[3, 2]] - (3.0f64 / 10000f64.powf(2.0 / 8.0)).sin()).abs() < 1e-15);
    assert!((pe[[7, 5]] - (7.0f64 / 10000f64.powf(4.0 / 8.0)).cos()).abs() < 1e-15);
    let learned = PositionalEmbedding::<f64>::new(10, 4, &mut rng());
    let x = Tensor::zeros(&[2, 6, 4]);
    let y = learned.forward(&x);
    assert_eq!(y.shape(), &[2, 6, 4]);
    assert_eq!(
        y.to_array().slice(ndarray::s![1, 5, ..]).to_vec(),
        learned.weight.to_array().slice(ndarray::s![5, ..]).to_vec()
    );
    assert_eq!(learned.state_dict()[0].0, "weight");
}

#[test]
#[should_panic(expected = "key_padding_mask of shape [3, 5] is not [2, 3]")]
fn masks_that_do_not_fit_are_named() {
    let mha = MultiheadAttention::<f64>::new(4, 2, &mut rng()).with_batch_first(true);
    let x = Tensor::rand_normal(&[2, 3, 4], 0.0, 1.0, 1);
    let padding = ArrayD::from_elem(ndarray::IxDyn(&[3, 5]), false);
    let _ = mha.attend(&x, &x, &x, &AttentionMasks { key_padding_mask: Some(&padding), ..Default::default() }, false);
}

#[test]
fn adamw_as_language_models_use_it_decays_matrices_not_biases_or_norms() {
    use adjoint::optim::Optimizer;
    let options =
        TransformerOptions { dim_feedforward: 8, batch_first: true, dropout: 0.0, ..TransformerOptions::new(4, 2) };
    let mut layer = TransformerEncoderLayer::<f64>::new(options, &mut rng());
    let before: HashMap<String, ArrayD<f64>> = layer.state_dict().into_iter().collect();
    // Zero gradients: only weight decay moves a parameter.
    layer.visit(&mut String::new(), &mut |_, p| p.set_grad(Some(Tensor::zeros(p.shape()))));
    let mut opt = Optimizer::adamw(0.1, 0.5);
    opt.step(&mut layer);
    for (name, after) in layer.state_dict() {
        let moved = before[&name].iter().zip(after.iter()).any(|(a, b)| a != b);
        assert_eq!(moved, after.ndim() >= 2, "{name} (shape {:?})", after.shape());
    }
}

#[test]
fn without_biases_out_proj_has_no_bias_either_as_in_pytorch() {
    let mha = MultiheadAttention::<f64>::with_dims(4, 2, 4, 4, false, &mut rng());
    let names: Vec<String> = mha.state_dict().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["in_proj_weight", "out_proj.weight"]);
}
