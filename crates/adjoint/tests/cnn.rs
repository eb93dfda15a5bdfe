//! Convolutional networks as a user builds them: from the layer language, trained by the
//! `Trainer`, saved and loaded, inspected; a model file whose architecture does not match
//! its tensors is refused.

use std::collections::HashMap;

use adjoint::nn::inspect::inspect;
use adjoint::nn::{Activation, Architecture, LayerSpec, Module, Network};
use adjoint::optim::{LrSchedule, Optimizer, Scheduler};
use adjoint::train::{TrainSettings, Trainer};

mod common;
use common::bars;

fn small_cnn() -> Architecture {
    Architecture::parse("image:1:8:8,conv:6:3:1:1,relu,maxpool:2,conv:8:3,relu,flatten,fc:3", &[64], None).unwrap()
}

#[test]
fn a_small_cnn_learns_what_no_single_pixel_tells() {
    let (train, test) = (bars(600, 1), bars(300, 2));
    let network = Network::<f32>::new(small_cnn(), 3).unwrap();
    let settings = TrainSettings { batch: 20, epochs: 8, threads: 1, ..TrainSettings::default() };
    let mut trainer =
        Trainer::new(network, Optimizer::adam(0.01), Scheduler::new(LrSchedule::Constant, 0.01), settings).unwrap();
    let history = trainer.fit(&train, &test).unwrap();
    let accuracy = history.last().unwrap().test_accuracy.unwrap();
    assert!(accuracy > 0.95, "test accuracy {accuracy}");
    // Per-layer statistics cover both convolutions (units are channels) and the output.
    let batch = test.rows(0, 50);
    let stats = inspect(&trainer.network.model, Activation::RELU, &batch.x, &batch.labels, 8);
    assert_eq!(stats.iter().map(|s| s.units).collect::<Vec<_>>(), [6, 8, 3]);
    assert!(stats.iter().all(|s| s.grad_norm.is_finite() && s.grad_norm > 0.0));
    assert!(stats[0].dead_fraction.is_some() && stats[2].dead_fraction.is_none());
}

#[test]
fn a_cnn_saves_and_loads_with_its_architecture_and_pytorch_names() {
    let dir = std::env::temp_dir().join(format!("adjoint-cnn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let net = Network::<f32>::new(small_cnn(), 5).unwrap();
    let names: Vec<(String, Vec<usize>)> =
        net.model.parameters().into_iter().map(|(n, p)| (n, p.shape().to_vec())).collect();
    assert_eq!(
        names,
        [
            // Layer 0 reshapes the rows into images and takes no place in the names, as
            // in the equivalent nn.Sequential, which takes images.
            ("0.weight".to_string(), vec![6, 1, 3, 3]),
            ("0.bias".into(), vec![6]),
            ("3.weight".into(), vec![8, 6, 3, 3]),
            ("3.bias".into(), vec![8]),
            ("6.weight".into(), vec![3, 32]),
            ("6.bias".into(), vec![3]),
        ]
    );
    let path = dir.join("cnn.safetensors");
    net.save(&path).unwrap();
    let back = Network::<f32>::load(&path).unwrap();
    assert_eq!(back.architecture, net.architecture);
    let x = bars(5, 9).rows(0, 5).x.to_array().into_dimensionality::<adjoint::ndarray::Ix2>().unwrap();
    assert_eq!(back.predict(&x).to_vec(), net.predict(&x).to_vec());

    // The same tensors under a different architecture (wider first convolution): refused,
    // naming the tensor and both shapes.
    let mut other = small_cnn();
    if let LayerSpec::Conv2d { outputs, .. } = &mut other.layers[1] {
        *outputs = 7;
    }
    if let LayerSpec::Conv2d { inputs, .. } = &mut other.layers[4] {
        *inputs = 7;
    }
    let mut meta: HashMap<String, String> = net.metadata();
    meta.insert("architecture".into(), serde_json::to_string(&other).unwrap());
    let tensors: HashMap<String, _> = net.tensors().into_iter().collect();
    let err = Network::<f32>::from_tensors(&path, tensors, &meta).err().unwrap().to_string();
    assert!(err.contains("0.weight") && err.contains("[6, 1, 3, 3]") && err.contains("[7, 1, 3, 3]"), "{err}");
}

#[test]
fn architectures_that_do_not_fit_are_errors_not_panics() {
    let e = Network::<f32>::new(
        Architecture {
            layers: vec![
                LayerSpec::Unflatten { channels: 1, height: 4, width: 4 },
                LayerSpec::Conv2d {
                    inputs: 1,
                    outputs: 2,
                    kernel: 5,
                    stride: 1,
                    padding: 0,
                    init: adjoint::nn::Init::HeNormal,
                },
                LayerSpec::Flatten,
                LayerSpec::Linear { inputs: 2, outputs: 2, init: adjoint::nn::Init::XavierUniform },
            ],
        },
        0,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("layer 1") && e.contains("4×4"), "{e}");
}
