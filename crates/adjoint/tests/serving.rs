//! A network serving requests: `check_input`, `try_forward` and `try_predict` return errors
//! for inputs that do not fit (wrong widths, image sizes, sequence lengths, ids outside the
//! vocabulary) instead of panicking, from several threads; `predict` takes the network's
//! element type, owned or viewed, and standardises as in training; any module's
//! `Module::try_forward` does the same for a user's own model.

use adjoint::data::InputNorm;
use adjoint::nn::{Activation, Architecture, Module, Network, NetworkError};
use adjoint::Tensor;
use ndarray::{Array1, Array2};

fn mlp<T: adjoint::Element>() -> Network<T> {
    Network::new(Architecture::mlp(&[3, 5, 2], Activation::TANH, None), 7).unwrap()
}

#[test]
fn predict_takes_the_networks_type_owned_or_viewed_and_standardises() {
    let mut net = mlp::<f64>();
    let rows = Array2::from_shape_fn((4, 3), |(i, j)| (i * 3 + j) as f64 / 7.0);
    let owned = net.predict(&rows).to_vec();
    assert_eq!(net.predict(rows.view()).to_vec(), owned);
    assert_eq!(net.predict(rows.slice(ndarray::s![1..3, ..])).to_vec(), owned[2..6].to_vec());
    assert_eq!(net.predict(&rows).to_vec(), net.forward(&Tensor::from_array(rows.clone().into_dyn())).to_vec());
    // With a standardisation: the rows are standardised (in f32, as in training) before the layers.
    net.input_norm =
        Some(InputNorm { mean: Array1::from(vec![1.0, 0.5, -1.0]), std: Array1::from(vec![2.0, 1.0, 4.0]) });
    let by_hand = Array2::from_shape_fn((4, 3), |(i, j)| {
        let (m, s) = ([1.0f32, 0.5, -1.0][j], [2.0f32, 1.0, 4.0][j]);
        ((rows[[i, j]] as f32 - m) / s) as f64
    });
    assert_eq!(net.predict(&rows).to_vec(), net.forward(&Tensor::from_array(by_hand.into_dyn())).to_vec());
    let e = net.try_predict(&Array2::<f64>::zeros((2, 4))).unwrap_err();
    assert!(matches!(e, NetworkError::Input(_)), "{e}");
    // A standardisation of another width (the field is public) is an error too, not a panic.
    net.input_norm = Some(InputNorm { mean: Array1::zeros(2), std: Array1::ones(2) });
    let e = net.try_predict(&rows).unwrap_err().to_string();
    assert!(e.contains("standardised over 2"), "{e}");
}

#[test]
fn inputs_that_do_not_fit_are_errors_naming_the_layer() {
    let net = mlp::<f32>();
    let e = net.try_predict(&Array2::<f32>::zeros((2, 4))).unwrap_err().to_string();
    assert!(e.contains("[2, 4]") && e.contains("layer 0 (fc 3→5)"), "{e}");
    assert!(net.try_forward(&Tensor::zeros(&[3])).is_err());
    assert!(net.try_forward(&Tensor::zeros(&[2, 3, 1])).is_err());
    assert_eq!(net.try_forward(&Tensor::zeros(&[0, 3])).unwrap().shape(), [0, 2]);

    let cnn =
        Network::<f32>::new(Architecture::parse("conv:4:3,relu,maxpool:2,flatten,fc:10", &[1, 8, 8], None).unwrap(), 1)
            .unwrap();
    assert_eq!(cnn.try_forward(&Tensor::zeros(&[2, 64])).unwrap().shape(), [2, 10]);
    let e = cnn.try_forward(&Tensor::zeros(&[2, 49])).unwrap_err().to_string();
    assert!(e.contains("[2, 49]") && e.contains("1×8×8"), "{e}");

    let lm =
        Network::<f32>::new(Architecture::parse_language_model("embed:8,pos,transformer:2,fc", 6, 5, None).unwrap(), 1)
            .unwrap();
    // Up to the context, ids below the vocabulary.
    assert_eq!(lm.try_forward(&Tensor::from_vec(vec![0.0, 4.0, 2.0], &[1, 3])).unwrap().shape(), [1, 3, 5]);
    let e = lm.try_forward(&Tensor::from_vec(vec![0.0, 5.0], &[1, 2])).unwrap_err().to_string();
    assert!(e.contains("id 5"), "{e}");
    let e = lm.try_forward(&Tensor::from_vec(vec![0.5], &[1, 1])).unwrap_err().to_string();
    assert!(e.contains("id 0.5"), "{e}");
    let e = lm.try_forward(&Tensor::zeros(&[1, 7])).unwrap_err().to_string();
    assert!(e.contains("[1, 7]") && e.contains("6"), "{e}");
}

#[test]
fn a_server_answers_good_and_bad_requests_from_several_threads() {
    let net = std::sync::Arc::new(mlp::<f32>());
    let expected = net.predict(&Array2::<f32>::ones((1, 3))).to_vec();
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let net = net.clone();
            let expected = expected.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    let width = if (i + t) % 3 == 0 { 4 } else { 3 };
                    match net.try_predict(&Array2::<f32>::ones((1, width))) {
                        Ok(y) => assert!(width == 3 && y.to_vec() == expected),
                        Err(e) => assert!(width == 4 && e.to_string().contains("fc 3→5")),
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("no request panicked");
    }
}

/// A user's own module (not a `Network`): `Module::try_forward` turns an input that does not
/// fit into an error naming the operation and the shapes, leaves the module usable, and does
/// so from several threads at once while others are served.
#[test]
fn any_module_serves_requests_with_errors_instead_of_panics() {
    use adjoint::nn::{Init, Linear};
    use rand::SeedableRng;
    struct TwoTower {
        left: Linear<f32>,
        right: Linear<f32>,
    }
    impl Module<f32> for TwoTower {
        fn forward(&self, x: &Tensor<f32>) -> Tensor<f32> {
            self.left.forward(x).tanh() * self.right.forward(x)
        }
        adjoint::parameters!(f32: ; modules: left, right);
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let model = TwoTower {
        left: Linear::new(3, 4, Init::XavierUniform, &mut rng),
        right: Linear::new(3, 4, Init::XavierUniform, &mut rng),
    };
    let good = Tensor::from_vec((0..6).map(|i| i as f32 / 6.0).collect(), &[2, 3]);
    let expected = model.forward(&good).to_vec();
    let e = model.try_forward(&Tensor::zeros(&[2, 5])).unwrap_err();
    assert!(e.module.contains("TwoTower") && e.message.contains("[2, 5]"), "{e}");
    assert!(model.try_forward(&Tensor::zeros(&[3])).is_err());
    std::thread::scope(|s| {
        for t in 0..4 {
            let (model, good, expected) = (&model, &good, &expected);
            s.spawn(move || {
                for k in 0..50 {
                    if (t + k) % 2 == 0 {
                        assert_eq!(model.try_forward(good).unwrap().to_vec(), *expected);
                    } else {
                        assert!(model.try_forward(&Tensor::zeros(&[1, 4 + t])).is_err());
                    }
                }
            });
        }
    });
    assert_eq!(model.forward(&good).to_vec(), expected);
}

/// `try_forward` prints nothing: the test above, run in a child process with its output
/// shown, writes no panic message for the 100 requests it refused.
#[test]
fn refused_requests_print_nothing() {
    if std::env::var_os("ADJOINT_CHILD").is_some() {
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "any_module_serves_requests_with_errors_instead_of_panics", "--nocapture"])
        .env("ADJOINT_CHILD", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && text.contains("1 passed"), "{text}");
    assert!(!text.contains("panicked"), "{text}");
}

/// Panics outside `try_forward` are not silenced: a failure still unwinds as before, and
/// `catch_unwind` around plain `forward` still sees it.
#[test]
fn plain_forward_still_panics_after_try_forward_was_used() {
    let net = mlp::<f32>();
    assert!(Module::try_forward(&net, &Tensor::zeros(&[1, 9])).is_err());
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| net.forward(&Tensor::zeros(&[1, 9]))));
    assert!(caught.is_err());
}
