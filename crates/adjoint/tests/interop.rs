//! Model files interchange with PyTorch unchanged (names `0.weight`, layout `[out, in]`).
//! The fixture was written by `scripts/pytorch_interop.py to-adjoint` with PyTorch 2.15: an
//! `nn.Sequential(Linear(4, 5), Tanh(), Linear(5, 3))` in float64, saved with
//! `safetensors.torch.save_file(model.state_dict(), …)`, and its outputs on fixed inputs.

use std::path::Path;

use adjoint::nn::{mlp, Activation, Module, Network};
use adjoint::rand::SeedableRng;
use adjoint::Tensor;

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

#[test]
fn a_state_dict_saved_by_pytorch_loads_and_gives_pytorchs_outputs() {
    let mut net = mlp::<f64>(&[4, 5, 3], Activation::TANH, None, &mut adjoint::rand::rngs::StdRng::seed_from_u64(9));
    net.load(&fixture("torch_mlp.safetensors")).unwrap();
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("torch_mlp.json")).unwrap()).unwrap();
    let rows = |key: &str| -> Vec<f64> {
        expected[key]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
            .collect()
    };
    let x = Tensor::from_vec(rows("input"), &[2, 4]);
    let y = net.forward(&x).to_vec();
    for (a, b) in y.iter().zip(rows("output")) {
        assert!((a - b).abs() < 1e-14, "{y:?}");
    }
    // Into f32 too.
    let mut net32 = mlp::<f32>(&[4, 5, 3], Activation::TANH, None, &mut adjoint::rand::rngs::StdRng::seed_from_u64(9));
    net32.load(&fixture("torch_mlp.safetensors")).unwrap();
}

#[test]
fn a_model_of_another_shape_is_an_error_not_a_panic() {
    let mut wrong = mlp::<f64>(&[4, 6, 3], Activation::TANH, None, &mut adjoint::rand::rngs::StdRng::seed_from_u64(9));
    let err = wrong.load(&fixture("torch_mlp.safetensors")).unwrap_err().to_string();
    assert!(err.contains("0.weight") && err.contains("[5, 4]") && err.contains("[6, 4]"), "{err}");
    let mut deeper =
        mlp::<f64>(&[4, 5, 3, 2], Activation::TANH, None, &mut adjoint::rand::rngs::StdRng::seed_from_u64(9));
    assert!(deeper.load(&fixture("torch_mlp.safetensors")).unwrap_err().to_string().contains("missing"));
    // A plain state dict is not a Network file (no architecture): a clear error.
    assert!(Network::<f64>::load(&fixture("torch_mlp.safetensors"))
        .err()
        .unwrap()
        .to_string()
        .contains("not an adjoint model"));
}

#[test]
fn what_adjoint_saves_has_pytorchs_names_shapes_and_dtype() {
    let dir = std::env::temp_dir().join(format!("adjoint-interop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let net = mlp::<f32>(&[4, 5, 3], Activation::TANH, None, &mut adjoint::rand::rngs::StdRng::seed_from_u64(1));
    let path = dir.join("m.safetensors");
    net.save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    assert_eq!(header["0.weight"]["shape"], serde_json::json!([5, 4]));
    assert_eq!(header["0.weight"]["dtype"], "F32");
    assert_eq!(header["2.bias"]["shape"], serde_json::json!([3]));
    // Saving twice gives the same bytes.
    net.save(&path).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

/// `torch_batchnorm.safetensors`: `nn.Sequential(Linear(5, 12), BatchNorm1d(12), ReLU(),
/// Linear(12, 3))` in float64 after 7 SGD steps in training mode, saved by
/// `safetensors.torch.save_file(model.state_dict())` (PyTorch 2.15): its
/// `1.num_batches_tracked` is a 0-d int64 tensor. `torch_batchnorm.json` holds its
/// evaluation-mode outputs on fixed inputs.
fn torch_batchnorm() -> (adjoint::nn::Sequential<f64>, serde_json::Value) {
    let arch = adjoint::nn::Architecture::parse("fc:12,batchnorm,relu,fc:3", &[5], None).unwrap();
    let expected = serde_json::from_str(&std::fs::read_to_string(fixture("torch_batchnorm.json")).unwrap()).unwrap();
    (arch.build::<f64>(3), expected)
}

fn numbers(v: &serde_json::Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

#[test]
fn a_pytorch_state_dict_with_batch_norm_loads_with_its_int64_count_and_gives_pytorchs_outputs() {
    let (mut model, expected) = torch_batchnorm();
    model.load(&fixture("torch_batchnorm.safetensors")).unwrap();
    model.set_training(false);
    let y = model.forward(&Tensor::from_vec(numbers(&expected["input"]), &[4, 5])).to_vec();
    for (a, b) in y.iter().zip(numbers(&expected["output"])) {
        assert!((a - b).abs() < 1e-12, "{a} against PyTorch's {b}");
    }
    let state: std::collections::HashMap<String, _> = model.state_dict().into_iter().collect();
    assert_eq!(state["1.num_batches_tracked"].iter().next().copied(), Some(7.0));

    // Saved again, the count is int64 as PyTorch writes it, so `load_state_dict(strict=True)`
    // in PyTorch sees its own dtype (checked by hand with PyTorch 2.15 on 2026-12-06).
    let bytes = adjoint::io::encode(&model.state_dict(), &Default::default());
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(file.tensor("1.num_batches_tracked").unwrap().dtype(), safetensors::Dtype::I64);
    assert_eq!(file.tensor("1.running_var").unwrap().dtype(), safetensors::Dtype::F64);
    // A training step counts one more batch.
    model.set_training(true);
    let _ = model.forward(&Tensor::from_vec(numbers(&expected["input"]), &[4, 5]));
    let state: std::collections::HashMap<String, _> = model.state_dict().into_iter().collect();
    assert_eq!(state["1.num_batches_tracked"].iter().next().copied(), Some(8.0));
}

#[test]
fn a_non_strict_load_reports_missing_and_unexpected_names_as_pytorch_does() {
    let (mut model, _) = torch_batchnorm();
    let file = adjoint::io::load::<f64>(&fixture("torch_batchnorm.safetensors"), &Default::default()).unwrap();
    let mut values = file.tensors.clone();
    let kept_bias = model.state_dict().into_iter().find(|(n, _)| n == "3.bias").unwrap().1;
    values.remove("3.bias");
    values.insert("head.weight".into(), values["3.weight"].clone());
    let strict = model.load_state_dict(&values).unwrap_err();
    assert_eq!(strict, adjoint::nn::StateDictError::Missing("3.bias".into()));
    let report = model.load_state_dict_non_strict(&values).unwrap();
    assert_eq!(report.missing, vec!["3.bias".to_string()]);
    assert_eq!(report.unexpected, vec!["head.weight".to_string()]);
    let state: std::collections::HashMap<String, _> = model.state_dict().into_iter().collect();
    assert_eq!(state["3.weight"], file.tensors["3.weight"], "what fits is loaded");
    assert_eq!(state["3.bias"], kept_bias, "what is missing is left as it was");
    // A shape that differs is an error even then, and changes nothing.
    values.insert("0.weight".into(), adjoint::ndarray::ArrayD::zeros(adjoint::ndarray::IxDyn(&[5, 12])));
    let before = model.state_dict();
    assert!(matches!(model.load_state_dict_non_strict(&values), Err(adjoint::nn::StateDictError::Shape { .. })));
    assert_eq!(model.state_dict(), before);
    // A file without the count (PyTorch before 0.4.1, adjoint before 0.3) loads strictly.
    let mut old = file.tensors;
    old.remove("1.num_batches_tracked");
    model.load_state_dict(&old).unwrap();
}

/// A convolutional architecture over flat image rows names its parameters as the
/// equivalent `nn.Sequential(Conv2d(1, 4, 3), ReLU(), Flatten(), Linear(144, 10))`, which
/// takes `[N, 1, 8, 8]`: `0.weight` for the convolution, not `1.weight` (the reshape of the
/// rows into images is not one of its layers).
#[test]
fn a_convolutional_architecture_names_its_parameters_as_the_equivalent_sequential() {
    use adjoint::nn::Architecture;
    let arch = Architecture::parse("conv:4:3,relu,flatten,fc:10", &[1, 8, 8], None).unwrap();
    let expected = ["0.weight", "0.bias", "3.weight", "3.bias"];
    let declared: Vec<String> = arch.parameter_shapes().into_iter().map(|(n, _)| n).collect();
    assert_eq!(declared, expected);
    let net = Network::<f64>::new(arch, 3).unwrap();
    let built: Vec<String> = net.model.parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(built, expected);
    let with_norm = Architecture::parse("conv:4:3,batchnorm,relu,flatten,fc:10", &[1, 8, 8], None).unwrap();
    let buffers: Vec<String> = with_norm.buffer_shapes().into_iter().map(|(n, _)| n).collect();
    assert_eq!(buffers, ["1.running_mean", "1.running_var", "1.num_batches_tracked"]);
}

/// A model file written before the names left out the reshape (`1.weight` for the first
/// convolution, no `names` metadata) still loads, and gives the same outputs.
#[test]
fn a_model_file_with_the_old_names_still_loads() {
    use adjoint::nn::Architecture;
    use std::collections::HashMap;
    let arch = Architecture::parse("conv:2:3,relu,maxpool:2,flatten,fc:3", &[1, 6, 6], None).unwrap();
    let net = Network::<f64>::new(arch, 5).unwrap();
    let shifted: Vec<(String, ndarray::ArrayD<f64>)> = net
        .tensors()
        .into_iter()
        .map(|(name, t)| match name.split_once('.') {
            Some((k, rest)) if k.parse::<usize>().is_ok() => (format!("{}.{rest}", k.parse::<usize>().unwrap() + 1), t),
            _ => (name, t),
        })
        .collect();
    assert!(shifted.iter().any(|(n, _)| n == "1.weight"));
    let mut meta: HashMap<String, String> = net.metadata();
    meta.remove("names");
    let dir = std::env::temp_dir().join(format!("adjoint-old-names-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("old.safetensors");
    adjoint::io::save(&path, &shifted, &meta).unwrap();
    let loaded = Network::<f64>::load(&path).unwrap();
    let x = ndarray::Array2::from_shape_fn((2, 36), |(i, j)| ((i * 36 + j) as f64 * 0.37).sin());
    assert_eq!(loaded.predict(&x).to_vec(), net.predict(&x).to_vec());
    // Saved again, it has the new names and says so.
    loaded.save(&path).unwrap();
    let file = adjoint::io::load::<f64>(&path, &Default::default()).unwrap();
    assert!(file.tensors.contains_key("0.weight") && file.metadata["names"] == "pytorch-sequential");
    std::fs::remove_dir_all(&dir).ok();
}
