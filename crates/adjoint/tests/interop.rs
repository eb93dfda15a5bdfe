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
