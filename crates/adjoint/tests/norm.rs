//! Dropout, batch norm and layer norm: against PyTorch's numbers (2.15, f64) in training and
//! evaluation, to order 2 with `check_grads`, and their train/eval switch, seeding and
//! saving.

use adjoint::autodiff::gradcheck::{check_grads, CheckOptions};
use adjoint::nn::{with_random_key, Architecture, BatchNorm, Dropout, LayerNorm, Module, Network};
use adjoint::Tensor;

type T = Tensor<f64>;

fn input() -> T {
    Tensor::from_vec((0..24).map(|i| (0.9 * i as f64).sin() * 2.0 + 0.1 * i as f64).collect(), &[2, 3, 2, 2])
}

fn weights() -> T {
    Tensor::from_vec((0..24).map(|i| (0.3 * i as f64).cos()).collect(), &[2, 3, 2, 2])
}

fn close(a: &[f64], b: &[f64], what: &str) {
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() < 1e-9, "{what}[{i}]: {x} vs PyTorch {y}");
    }
}

#[test]
fn batch_norm_matches_pytorch_in_training_and_evaluation() {
    let mut bn = BatchNorm::<f64>::new(3);
    bn.weight = Tensor::from_vec(vec![1.5, -0.5, 2.0], &[3]).requires_grad();
    bn.bias = Tensor::from_vec(vec![0.1, 0.2, -0.3], &[3]).requires_grad();
    let x = input().requires_grad();
    let y = bn.forward(&x);
    close(
        &y.to_vec()[..8],
        &[
            -1.209682544765,
            0.8307623718,
            1.419690051123,
            0.204062562874,
            0.533484650448,
            0.836511325757,
            0.677337630974,
            0.15278181068,
        ],
        "training output",
    );
    (&y * &weights()).sum_all().backward();
    close(
        &x.grad().unwrap().to_vec()[..8],
        &[
            1.320984084298,
            0.858488411083,
            0.581624898339,
            0.575170781505,
            -0.055015498289,
            0.030905897876,
            0.126700108722,
            0.222398514197,
        ],
        "input gradient",
    );
    close(
        &bn.weight.grad().unwrap().to_vec(),
        &[1.9590264388417935, 0.21882409977486852, 2.398724447250313],
        "γ gradient",
    );
    let (mean, var) = bn.running();
    close(
        &mean.iter().copied().collect::<Vec<_>>(),
        &[0.10697605201316858, 0.05824775525420483, 0.2248100542301259],
        "running mean",
    );
    close(
        &var.iter().copied().collect::<Vec<_>>(),
        &[1.0715586521108003, 1.192771860585327, 1.1037473218574034],
        "running variance",
    );
    bn.set_training(false);
    close(
        &bn.forward(&input()).to_vec()[..8],
        &[
            -0.05501289424,
            2.360040076558,
            3.057089788603,
            1.618283598323,
            0.448725388005,
            0.892814257724,
            0.659543486651,
            -0.109198740749,
        ],
        "evaluation output",
    );
    // Evaluation does not move the running statistics.
    assert_eq!(bn.running(), (mean, var));
}

#[test]
fn layer_norm_matches_pytorch() {
    let mut ln = LayerNorm::<f64>::new(4);
    ln.weight = Tensor::from_vec(vec![1.0, 2.0, -1.0, 0.5], &[4]).requires_grad();
    ln.bias = Tensor::from_vec(vec![0.0, 0.1, 0.2, 0.3], &[4]).requires_grad();
    let z = input().reshape(&[6, 4]).detach().requires_grad();
    let out = ln.forward(&z);
    close(
        &out.to_vec()[..8],
        &[
            -1.555635385096,
            1.162846945719,
            -0.933805198457,
            0.24520335689,
            0.065350448678,
            -2.163240711725,
            0.702876152694,
            1.084573029939,
        ],
        "output",
    );
    (&out * &weights().reshape(&[6, 4])).sum_all().backward();
    close(
        &z.grad().unwrap().to_vec()[..8],
        &[
            -0.233322393781,
            1.893722259396,
            -1.247654216737,
            -0.412745648879,
            0.312528321303,
            -0.19885310006,
            0.032378614503,
            -0.146053835745,
        ],
        "input gradient",
    );
}

#[test]
fn normalisation_passes_check_grads_at_order_2() {
    let f = |v: &[T]| {
        let mut bn = BatchNorm::<f64>::new(3);
        bn.weight = v[1].clone();
        vec![bn.forward(&v[0])]
    };
    check_grads(f, &[input(), Tensor::from_vec(vec![1.5, -0.5, 2.0], &[3])], CheckOptions::default()).unwrap();
    let g = |v: &[T]| {
        let mut ln = LayerNorm::<f64>::new(4);
        ln.weight = v[1].clone();
        vec![ln.forward(&v[0])]
    };
    check_grads(
        g,
        &[input().reshape(&[6, 4]), Tensor::from_vec(vec![1.0, 2.0, -1.0, 0.5], &[4])],
        CheckOptions::default(),
    )
    .unwrap();
}

#[test]
fn dropout_drops_p_scales_the_rest_and_repeats_under_a_key() {
    let mut d = Dropout::new(0.3, 7);
    let x = Tensor::<f64>::ones(&[100, 100]).requires_grad();
    let y = with_random_key(42, || d.forward(&x)).to_vec();
    let dropped = y.iter().filter(|&&v| v == 0.0).count() as f64 / y.len() as f64;
    assert!((dropped - 0.3).abs() < 0.02, "dropped {dropped}");
    assert!(y.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.7).abs() < 1e-12));
    // The same key gives the same mask; another key or a second call under it another.
    assert_eq!(with_random_key(42, || d.forward(&x)).to_vec(), y);
    assert_ne!(with_random_key(43, || d.forward(&x)).to_vec(), y);
    let (a, b) = with_random_key(42, || (d.forward(&x).to_vec(), d.forward(&x).to_vec()));
    assert_eq!(a, y);
    assert_ne!(a, b);
    // The gradient is the mask.
    with_random_key(42, || d.forward(&x)).sum_all().backward();
    assert_eq!(x.grad().unwrap().to_vec(), y);
    // Evaluation: the identity.
    Module::<f64>::set_training(&mut d, false);
    assert_eq!(d.forward(&x).to_vec(), x.to_vec());
}

#[test]
fn running_statistics_are_saved_with_the_model() {
    let dir = std::env::temp_dir().join(format!("adjoint-norm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let arch = Architecture::parse("conv:3:3,batchnorm,relu,flatten,dropout:0.5,fc:4,layernorm,fc:2", &[1, 6, 6], None)
        .unwrap();
    let mut net = Network::<f64>::new(arch, 1).unwrap();
    let x = Tensor::from_vec((0..72).map(|i| (i as f64 * 0.37).sin()).collect(), &[2, 36]);
    net.forward(&x); // one training step's statistics
    net.set_training(false);
    let names: Vec<String> = net.state_dict().into_iter().map(|(n, _)| n).collect();
    assert!(names.contains(&"1.running_mean".to_string()) && names.contains(&"1.running_var".to_string()), "{names:?}");
    let path = dir.join("m.safetensors");
    net.save(&path).unwrap();
    let mut back = Network::<f64>::load(&path).unwrap();
    back.set_training(false);
    assert_eq!(back.state_dict(), net.state_dict());
    assert_eq!(back.forward(&x).to_vec(), net.forward(&x).to_vec());
    // Training and evaluation differ (batch statistics and dropout against running ones).
    back.set_training(true);
    assert_ne!(back.forward(&x).to_vec(), net.forward(&x).to_vec());
}
