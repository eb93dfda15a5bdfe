//! Stacked and bidirectional recurrent layers against PyTorch (float64 state dicts written by
//! `scripts/fixtures/torch_recurrent.py`, loaded unchanged): outputs, final states and
//! gradients to 1e-10; a model of Conv2d, BatchNorm2d, a 2-layer bidirectional LSTM and
//! Linear that loads PyTorch's state dict strictly and whose own state dict PyTorch loads
//! strictly (the same names, shapes and integer buffer); dropout between layers; and
//! derivatives to order 2.

use std::collections::HashMap;
use std::path::PathBuf;

use adjoint::autodiff::gradcheck::{check_grads, CheckOptions};
use adjoint::nn::{BatchNorm, CellKind, Conv2d, Init, Linear, Module, Recurrent, RecurrentOptions, RecurrentState};
use adjoint::ops::Window2d;
use adjoint::{parameters, Tensor};
use ndarray::ArrayD;
use rand::SeedableRng;

fn fixture() -> HashMap<String, ArrayD<f64>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch_recurrent.safetensors");
    adjoint::io::load::<f64>(&path, &Default::default()).unwrap().tensors
}

/// The fixture's state dict of the module under `prefix.` (its parameters and buffers only).
fn state(t: &HashMap<String, ArrayD<f64>>, prefix: &str) -> HashMap<String, ArrayD<f64>> {
    let data = ["x", "h0", "c0", "y", "hn", "cn", "wy", "wh", "y_zero", "input", "output"];
    t.iter()
        .filter_map(|(k, v)| k.strip_prefix(&format!("{prefix}.")).map(|n| (n.to_string(), v.clone())))
        .filter(|(n, _)| !data.contains(&n.as_str()) && !n.starts_with("grad."))
        .collect()
}

fn max_diff(a: &Tensor<f64>, b: &ArrayD<f64>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    a.to_vec().iter().zip(b.iter()).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

fn rng() -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(5)
}

fn tensor(t: &HashMap<String, ArrayD<f64>>, name: &str) -> Tensor<f64> {
    Tensor::from_array(t[name].clone()).requires_grad()
}

/// The modules of the fixture: cell, layers, bidirectional, hidden size, projection.
const CASES: [(&str, CellKind, usize, bool, usize, usize); 5] = [
    ("lstm", CellKind::Lstm, 2, true, 4, 0),
    ("gru", CellKind::Gru, 3, true, 4, 0),
    ("rnn", CellKind::RnnRelu, 2, false, 4, 0),
    ("lstm1", CellKind::Lstm, 1, true, 4, 0),
    // nn.LSTM(3, 5, num_layers=2, bidirectional=True, proj_size=3)
    ("lstm_proj", CellKind::Lstm, 2, true, 5, 3),
];

fn module(kind: CellKind, num_layers: usize, bidirectional: bool, dropout: f64) -> Recurrent<f64> {
    projected(kind, num_layers, bidirectional, dropout, 4, 0)
}

fn projected(
    kind: CellKind,
    num_layers: usize,
    bidirectional: bool,
    dropout: f64,
    hidden: usize,
    proj_size: usize,
) -> Recurrent<f64> {
    let options = RecurrentOptions { num_layers, bidirectional, dropout, proj_size };
    Recurrent::with_options(kind, 3, hidden, options, false, &mut rng())
}

#[test]
fn stacked_and_bidirectional_layers_give_pytorchs_outputs_states_and_gradients() {
    let t = fixture();
    for (name, kind, layers, bidirectional, hidden, proj) in CASES {
        let mut r = projected(kind, layers, bidirectional, 0.0, hidden, proj);
        r.load_state_dict(&state(&t, name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let x = tensor(&t, &format!("{name}.x"));
        let h0 = tensor(&t, &format!("{name}.h0"));
        let c0 = (kind == CellKind::Lstm).then(|| tensor(&t, &format!("{name}.c0")));
        let s0 = RecurrentState { h: h0.clone(), c: c0.clone() };
        let (y, end) = r.forward_with_state(&x, Some(&s0));
        assert!(max_diff(&y, &t[&format!("{name}.y")]) < 1e-10, "{name}: output");
        assert!(max_diff(&end.h, &t[&format!("{name}.hn")]) < 1e-10, "{name}: h_n");
        if let Some(c) = &end.c {
            assert!(max_diff(c, &t[&format!("{name}.cn")]) < 1e-10, "{name}: c_n");
        }
        assert!(max_diff(&r.forward(&x), &t[&format!("{name}.y_zero")]) < 1e-10, "{name}: from zeros");

        let weights = |w: &str| Tensor::from_array(t[&format!("{name}.{w}")].clone());
        let loss = (&y * &weights("wy")).sum_all() + (&end.h * &weights("wh")).sum_all();
        let grads = loss.backward();
        assert!(max_diff(&grads.wrt(&x).unwrap(), &t[&format!("{name}.grad.x")]) < 1e-10, "{name}: ∂x");
        assert!(max_diff(&grads.wrt(&h0).unwrap(), &t[&format!("{name}.grad.h0")]) < 1e-10, "{name}: ∂h0");
        if let Some(c0) = &c0 {
            assert!(max_diff(&grads.wrt(c0).unwrap(), &t[&format!("{name}.grad.c0")]) < 1e-10, "{name}: ∂c0");
        }
        let mut checked = 0;
        for (param, p) in r.parameters() {
            let expected = &t[&format!("{name}.grad.{param}")];
            assert!(max_diff(&grads.wrt(p).unwrap(), expected) < 1e-10, "{name}: ∂{param}");
            checked += 1;
        }
        let per_cell = if proj > 0 { 5 } else { 4 };
        assert_eq!(checked, per_cell * layers * if bidirectional { 2 } else { 1 });
    }
}

#[test]
fn parameter_names_and_order_are_pytorchs() {
    let r = module(CellKind::Gru, 2, true, 0.0);
    let names: Vec<String> = r.parameters().into_iter().map(|(n, _)| n).collect();
    let mut expected = Vec::new();
    for layer in 0..2 {
        for suffix in ["", "_reverse"] {
            for w in ["weight_ih", "weight_hh", "bias_ih", "bias_hh"] {
                expected.push(format!("{w}_l{layer}{suffix}"));
            }
        }
    }
    assert_eq!(names, expected);
    // The second layer reads both directions of the first: [3·H, 2·H].
    assert_eq!(r.cells[2].weight_ih.shape(), [12, 8]);
    assert_eq!((r.num_layers(), r.directions(), r.hidden(), r.inputs()), (2, 2, 4, 3));
    assert_eq!(r.describe(), "gru 3→4 ×2 layers bidirectional");
    // Every weight and bias from U(−1/√H, 1/√H), each cell its own draw.
    for cell in &r.cells {
        for p in [&cell.weight_ih, &cell.weight_hh, &cell.bias_ih, &cell.bias_hh] {
            assert!(p.to_vec().iter().all(|v| v.abs() <= 0.5));
        }
    }
    assert_ne!(r.cells[0].weight_hh.to_vec(), r.cells[1].weight_hh.to_vec());
    // Cells that do not make whole layers are refused, naming the rule.
    let mut broken = module(CellKind::Gru, 1, false, 0.0);
    broken.bidirectional = true;
    let e = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| broken.forward(&Tensor::zeros(&[1, 2, 3]))))
        .unwrap_err();
    assert!(e.downcast_ref::<String>().unwrap().contains("layers × directions"));
}

/// PyTorch's `ConvLstm` of the fixture script, as a user writes it.
struct ConvLstm {
    conv: Conv2d<f64>,
    bn: BatchNorm<f64>,
    lstm: Recurrent<f64>,
    fc: Linear<f64>,
}

impl Module<f64> for ConvLstm {
    fn forward(&self, x: &Tensor<f64>) -> Tensor<f64> {
        let z = self.bn.forward(&self.conv.forward(x)).relu(); // [N, 3, 6, 7]
        let s = z.shape().to_vec();
        let seq = z.permute(&[0, 3, 1, 2]).reshape(&[s[0], s[3], s[1] * s[2]]); // [N, 7, 18]
        let out = self.lstm.forward(&seq); // [N, 7, 10]
        let last = out.narrow(1, s[3] - 1, 1).reshape(&[s[0], 10]);
        self.fc.forward(&last)
    }
    parameters!(f64: ; modules: conv, bn, lstm, fc);
}

fn conv_lstm() -> ConvLstm {
    let mut rng = rng();
    let options = RecurrentOptions { num_layers: 2, bidirectional: true, dropout: 0.25, proj_size: 0 };
    ConvLstm {
        conv: Conv2d::new(1, 3, Window2d::new([3, 3]).padding(1), 1, Init::HeNormal, &mut rng),
        bn: BatchNorm::new(3),
        lstm: Recurrent::with_options(CellKind::Lstm, 18, 5, options, false, &mut rng),
        fc: Linear::new(10, 4, Init::XavierUniform, &mut rng),
    }
}

#[test]
fn a_pytorch_conv_batchnorm_bidirectional_lstm_model_loads_strictly_both_ways() {
    let t = fixture();
    let theirs = state(&t, "model");
    let mut model = conv_lstm();
    model.load_state_dict(&theirs).unwrap();
    assert_eq!(model.bn.num_batches_tracked(), 3);
    let x = Tensor::from_array(t["model.input"].clone());
    // Training mode: batch statistics and dropout between the LSTM's layers.
    let training = model.forward(&x);
    assert!(max_diff(&training, &t["model.output"]) > 1e-3, "training mode gave evaluation's output");
    // `eval()` reaches the batch norm and the LSTM's dropout through `parameters!` (the
    // state dict again: the training pass moved the running statistics).
    model.load_state_dict(&theirs).unwrap();
    model.eval();
    let y = model.forward(&x);
    assert!(max_diff(&y, &t["model.output"]) < 1e-10, "{}", max_diff(&y, &t["model.output"]));

    // Ours has exactly PyTorch's names and shapes (with the integer buffer): what
    // `load_state_dict(strict=True)` checks.
    let ours: HashMap<String, Vec<usize>> =
        model.state_dict().into_iter().map(|(n, a)| (n, a.shape().to_vec())).collect();
    let expected: HashMap<String, Vec<usize>> = theirs.iter().map(|(n, a)| (n.clone(), a.shape().to_vec())).collect();
    assert_eq!(ours, expected);
    assert!(ours.contains_key("bn.num_batches_tracked") && ours.contains_key("lstm.weight_hh_l1_reverse"));

    // Saved and loaded into a fresh model, it gives the same outputs; the file holds the
    // counter as PyTorch's int64.
    // Kept in the target folder for `scripts/fixtures/torch_recurrent.py --check FILE`, which
    // loads it into PyTorch with strict=True.
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("conv_lstm.safetensors");
    model.save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + header_len]).unwrap();
    assert!(header.contains(r#""bn.num_batches_tracked":{"dtype":"I64","shape":[]"#), "{header}");
    let mut again = conv_lstm();
    again.load(&path).unwrap();
    again.eval();
    assert!(max_diff(&again.forward(&x), &t["model.output"]) < 1e-10);
}

#[test]
fn dropout_acts_between_layers_in_training_only() {
    let mut r = module(CellKind::Lstm, 3, false, 0.5);
    let x = Tensor::rand_normal(&[4, 6, 3], 0.0, 1.0, 2);
    let a = r.forward(&x);
    let b = r.forward(&x);
    assert_ne!(a.to_vec(), b.to_vec(), "two training passes drew the same masks");
    r.eval();
    let c = r.forward(&x);
    assert_eq!(c.to_vec(), r.forward(&x).to_vec());
    // Evaluation equals the same weights without dropout.
    let mut plain = module(CellKind::Lstm, 3, false, 0.0);
    plain.load_state_dict(&r.state_dict().into_iter().collect()).unwrap();
    assert_eq!(plain.forward(&x).to_vec(), c.to_vec());
    // No dropout after the last layer: a one-layer module is the same in both modes.
    let mut one = module(CellKind::Gru, 1, true, 0.5);
    let before = one.forward(&x);
    one.eval();
    assert_eq!(one.forward(&x).to_vec(), before.to_vec());
}

#[test]
fn a_unidirectional_stack_cut_in_two_with_its_state_carried_equals_the_whole() {
    for kind in [CellKind::Lstm, CellKind::Gru, CellKind::Rnn] {
        let r = module(kind, 3, false, 0.0);
        let x = Tensor::rand_normal(&[2, 7, 3], 0.0, 1.0, 4);
        let (all, end) = r.forward_with_state(&x, None);
        let (first, middle) = r.forward_with_state(&x.narrow(1, 0, 3), None);
        let (second, end2) = r.forward_with_state(&x.narrow(1, 3, 4), Some(&middle));
        let joined = Tensor::concat(&[&first, &second], 1);
        assert!(max_diff(&joined, &all.to_array()) < 1e-13, "{kind:?}");
        assert!(max_diff(&end2.h, &end.h.to_array()) < 1e-13, "{kind:?}");
        assert_eq!(end.h.shape(), [3, 2, 4]);
    }
}

#[test]
fn last_only_gives_both_directions_final_states() {
    let t = fixture();
    let mut r = Recurrent::<f64>::with_options(
        CellKind::Lstm,
        3,
        4,
        RecurrentOptions { num_layers: 2, bidirectional: true, dropout: 0.0, proj_size: 0 },
        true,
        &mut rng(),
    );
    r.load_state_dict(&state(&t, "lstm")).unwrap();
    let x = Tensor::from_array(t["lstm.x"].clone());
    let last = r.forward(&x);
    assert_eq!(last.shape(), [2, 8]);
    // The forward direction after the last step, the backward one after the first.
    let (all, _) = r.forward_with_state(&x, None);
    let all = all.to_array();
    let last = last.to_array();
    for n in 0..2 {
        for j in 0..4 {
            assert!((last[[n, j]] - all[[n, 4, j]]).abs() < 1e-14);
            assert!((last[[n, 4 + j]] - all[[n, 0, 4 + j]]).abs() < 1e-14);
        }
    }
}

#[test]
fn stacks_pass_check_grads_to_order_two() {
    for (kind, bidirectional) in [(CellKind::Lstm, true), (CellKind::Gru, true), (CellKind::Rnn, false)] {
        let r = Recurrent::<f64>::with_options(
            kind,
            2,
            3,
            RecurrentOptions { num_layers: 2, bidirectional, dropout: 0.0, proj_size: 0 },
            false,
            &mut rng(),
        );
        let layers = 2 * if bidirectional { 2 } else { 1 };
        let x = Tensor::rand_normal(&[2, 3, 2], 0.0, 1.0, 7);
        let h0 = Tensor::rand_normal(&[layers, 2, 3], 0.0, 0.5, 8);
        let c0 = Tensor::rand_normal(&[layers, 2, 3], 0.0, 0.5, 9);
        let f = move |v: &[Tensor<f64>]| {
            let state = RecurrentState { h: v[1].clone(), c: (kind == CellKind::Lstm).then(|| v[2].clone()) };
            let (out, end) = r.forward_with_state(&v[0], Some(&state));
            let mut outs = vec![out, end.h];
            outs.extend(end.c);
            outs
        };
        check_grads(f, &[x, h0, c0], CheckOptions { atol: 1e-6, rtol: 1e-5, ..CheckOptions::default() })
            .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
    }
}

#[test]
fn wrong_states_are_refused_naming_the_layout() {
    let r = module(CellKind::Lstm, 2, true, 0.0);
    let x = Tensor::zeros(&[2, 5, 3]);
    let flat = RecurrentState { h: Tensor::zeros(&[2, 4]), c: Some(Tensor::zeros(&[2, 4])) };
    let err =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| r.forward_with_state(&x, Some(&flat)))).unwrap_err();
    let message = err.downcast_ref::<String>().unwrap();
    assert!(message.contains("[4, 2, 4]") && message.contains("layers·directions"), "{message}");
    let zeros = r.zero_state(2);
    assert_eq!(zeros.h.shape(), [4, 2, 4]);
    assert_eq!(r.forward_with_state(&Tensor::zeros(&[2, 0, 3]), None).0.shape(), [2, 0, 8]);
}

/// An LSTM with a projection (PyTorch's `proj_size`): names in PyTorch's order with
/// `weight_hr_l{k}` after each cell's biases, h P wide and c H wide, the second layer
/// reading 2·P, derivatives to order 2 (state included), and stepping equal to the whole.
#[test]
fn a_projected_lstm_has_pytorchs_layout_and_derivatives() {
    let r = projected(CellKind::Lstm, 2, true, 0.0, 5, 3);
    let names: Vec<String> = r.parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(&names[..5], ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0", "weight_hr_l0"]);
    assert_eq!(names[9], "weight_hr_l0_reverse");
    assert_eq!(r.cells[0].weight_hh.shape(), [20, 3]);
    assert_eq!(r.cells[2].weight_ih.shape(), [20, 6]);
    assert_eq!(r.cells[3].weight_hr.as_ref().unwrap().shape(), [3, 5]);
    assert_eq!((r.hidden(), r.output_width(), r.proj_size()), (5, 3, 3));
    let state = r.zero_state(2);
    assert_eq!((state.h.shape(), state.c.as_ref().unwrap().shape()), (&[4, 2, 3][..], &[4, 2, 5][..]));
    assert_eq!(r.forward(&Tensor::zeros(&[2, 4, 3])).shape(), [2, 4, 6]);

    let x = Tensor::rand_normal(&[2, 3, 3], 0.0, 1.0, 7);
    let h0 = Tensor::rand_normal(&[4, 2, 3], 0.0, 0.5, 8);
    let c0 = Tensor::rand_normal(&[4, 2, 5], 0.0, 0.5, 9);
    let f = move |v: &[Tensor<f64>]| {
        let state = RecurrentState { h: v[1].clone(), c: Some(v[2].clone()) };
        let (out, end) = r.forward_with_state(&v[0], Some(&state));
        vec![out, end.h, end.c.unwrap()]
    };
    check_grads(f, &[x.clone(), h0, c0], CheckOptions { atol: 1e-6, rtol: 1e-5, ..CheckOptions::default() }).unwrap();

    // One direction, stepped one input at a time with the state carried: the whole.
    let one = projected(CellKind::Lstm, 2, false, 0.0, 5, 3);
    let (whole, end) = one.forward_with_state(&x, None);
    let mut state = None;
    for t in 0..3 {
        state = Some(one.step(&x.narrow(1, t, 1).reshape(&[2, 3]), state.as_ref()));
    }
    let stepped = state.unwrap();
    assert!(max_diff(&stepped.h, &end.h.to_array()) < 1e-14);
    assert!(max_diff(&stepped.c.unwrap(), &end.c.unwrap().to_array()) < 1e-14);
    assert_eq!(whole.shape(), [2, 3, 3]);
}

#[test]
#[should_panic(expected = "proj_size 3 needs an LSTM")]
fn a_projection_is_only_for_the_lstm() {
    projected(CellKind::Gru, 1, false, 0.0, 5, 3);
}

#[test]
#[should_panic(expected = "hidden size above it")]
fn a_projection_must_be_narrower_than_the_cell() {
    projected(CellKind::Lstm, 1, false, 0.0, 3, 3);
}

/// `--arch lstm:4:2:bi` builds PyTorch's `nn.LSTM(3, 4, num_layers=2, bidirectional=True)`:
/// the names and shapes the architecture declares are those of the module it builds, the
/// layer after it reads 2·H, and an architecture saved before the options existed (no
/// `layers` or `bidirectional` in its JSON) reads as one layer, one direction.
#[test]
fn the_layer_language_builds_stacked_and_bidirectional_layers() {
    use adjoint::nn::{Architecture, LayerSpec, Network};
    let arch = Architecture::parse("lstm:4:2:bi,fc:3", &[1, 5, 3], None).unwrap();
    assert_eq!(arch.spec(), "image:1:5:3,lstm:4:2:bi,fc:3");
    let declared = arch.parameter_shapes();
    let net = Network::<f64>::new(arch.clone(), 1).unwrap();
    let built: Vec<(String, Vec<usize>)> =
        net.model.parameters().into_iter().map(|(n, p)| (n, p.shape().to_vec())).collect();
    assert_eq!(declared, built);
    assert_eq!(built[4].0, "0.weight_ih_l0_reverse");
    assert_eq!(built[8], ("0.weight_ih_l1".to_string(), vec![16, 8]));
    assert_eq!(built.last().unwrap(), &("1.bias".to_string(), vec![3]));
    assert_eq!(net.forward(&Tensor::zeros(&[2, 15])).shape(), [2, 3]);
    let old = r#"{"kind":"recurrent","cell":"gru","inputs":3,"hidden":4}"#;
    let spec: LayerSpec = serde_json::from_str(old).unwrap();
    assert!(matches!(spec, LayerSpec::Recurrent { layers: 1, bidirectional: false, .. }));
    // A language model must not read ahead.
    let e = Architecture::parse_language_model("embed:8,lstm:16:bi,fc", 32, 10, None).unwrap_err();
    assert!(e.to_string().contains("backwards"), "{e}");
}
