//! A network serving requests: `check_input`, `try_forward` and `try_predict` return errors
//! for inputs that do not fit (wrong widths, image sizes, sequence lengths, ids outside the
//! vocabulary) instead of panicking, from several threads; `predict` takes the network's
//! element type, owned or viewed, and standardises as in training.

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
