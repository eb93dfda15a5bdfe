//! Recurrent layers: outputs and gradients against PyTorch's `nn.RNN`, `nn.LSTM` and
//! `nn.GRU` (batch_first) on the same weights (numbers from PyTorch 2.15, in f64), and
//! back-propagation through time checked to order 2 on short sequences.

use adjoint::autodiff::gradcheck::{check_grads, CheckOptions};
use adjoint::nn::{CellKind, Embedding, Module, Recurrent, RecurrentState};
use adjoint::Tensor;
use rand::SeedableRng;

type T = Tensor<f64>;

/// sin(0.37(i + 1) + k)/2 for parameter k, as the PyTorch script fills them.
fn filled(shape: &[usize], k: usize) -> T {
    let n: usize = shape.iter().product();
    Tensor::from_vec((0..n).map(|i| (0.37 * (i + 1) as f64 + k as f64).sin() * 0.5).collect(), shape).requires_grad()
}

fn layer(kind: CellKind) -> Recurrent<f64> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let mut r = Recurrent::new(kind, 3, 4, false, &mut rng);
    let rows = kind.gates() * 4;
    r.cells[0].weight_ih = filled(&[rows, 3], 0);
    r.cells[0].weight_hh = filled(&[rows, 4], 1);
    r.cells[0].bias_ih = filled(&[rows], 2);
    r.cells[0].bias_hh = filled(&[rows], 3);
    r
}

fn input() -> T {
    Tensor::from_vec((0..30).map(|i| (0.71 * (i + 1) as f64).cos()).collect(), &[2, 5, 3])
}

fn close(a: &[f64], b: &[f64], what: &str) {
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() < 1e-10, "{what}[{i}]: {x} vs PyTorch {y}");
    }
}

/// A cell, then PyTorch's last state, loss, first input gradients and first weight_hh gradients.
type Reference = (CellKind, [f64; 8], f64, [f64; 6], [f64; 6]);

#[test]
fn outputs_and_gradients_match_pytorch() {
    #[rustfmt::skip]
    let cases: [Reference; 3] = [
        (CellKind::Rnn,
         [-0.425123274606, -0.622325977713, -0.508614247224, -0.249623585362, 0.367044970385, 0.01921359873, -0.551141004577, -0.580259669442],
         1.0645026804881432,
         [0.069408280392, 0.054237182614, 0.031725336607, 0.033121327994, 0.01855936851, 0.001485485564],
         [-0.165134955311, 0.191993085845, 0.006529020652, -1.022292366087, -0.164144809932, 0.073944574996]),
        (CellKind::Lstm,
         [-0.102967766364, 0.038910012135, 0.20677342065, 0.218013599789, -0.139126124001, -0.10215060996, 0.135633419264, 0.252675499222],
         0.11735366737331904,
         [-0.031632901965, -0.034484751444, -0.032669251591, -0.000680059329, 0.002580162878, 0.005491172143],
         [-0.003603494216, -0.00381066606, 0.000342305356, 0.002016188406, -0.00292027519, -0.002911329301]),
        (CellKind::Gru,
         [-0.304468652335, 0.34480075229, 0.555022835836, 0.202725428913, -0.2414925528, -0.16188875502, 0.04499570736, 0.253936645786],
         0.5953004304433797,
         [-0.059018011409, -0.059350392611, -0.051649976599, -0.040150929916, -0.037295468719, -0.029392240792],
         [-0.002766997208, -0.011588776561, -0.006541304284, 0.00507444423, 0.001017997707, 0.000655266909]),
    ];
    for (kind, last, loss, x_grad, whh_grad) in cases {
        let r = layer(kind);
        let names: Vec<String> = r.parameters().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]);
        let x = input().requires_grad();
        let (all, final_state) = r.sequence(&x);
        assert_eq!(all.shape(), [2, 5, 4]);
        close(&final_state.to_vec(), &last, "last state");
        let l = final_state.sqr().sum_all() + all.sum_all() * Tensor::scalar(0.1);
        assert!((l.item() - loss).abs() < 1e-12, "{kind:?}: loss {} vs {loss}", l.item());
        l.backward();
        close(&x.grad().unwrap().to_vec()[..6], &x_grad, "input gradient");
        close(&r.cells[0].weight_hh.grad().unwrap().to_vec()[..6], &whh_grad, "weight_hh gradient");
    }
}

#[test]
fn back_propagation_through_time_passes_check_grads_at_order_2() {
    for kind in [CellKind::Rnn, CellKind::RnnRelu, CellKind::Lstm, CellKind::Gru] {
        let r = layer(kind);
        let (wi, wh) = (r.cells[0].weight_ih.detach(), r.cells[0].weight_hh.detach());
        let x = Tensor::from_vec((0..12).map(|i| (0.3 * i as f64).sin()).collect(), &[2, 3, 2]);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let small = Recurrent::<f64>::new(kind, 2, 4, true, &mut rng);
        let (bi, bh) = (small.cells[0].bias_ih.detach(), small.cells[0].bias_hh.detach());
        let wi = wi.narrow(1, 0, 2);
        let f = move |v: &[T]| {
            let mut cell = Recurrent::<f64>::new(kind, 2, 4, true, &mut rand::rngs::StdRng::seed_from_u64(2));
            cell.cells[0].weight_ih = v[1].clone();
            cell.cells[0].weight_hh = v[2].clone();
            cell.cells[0].bias_ih = bi.clone();
            cell.cells[0].bias_hh = bh.clone();
            vec![cell.forward(&v[0])]
        };
        check_grads(f, &[x, wi, wh], CheckOptions::default()).unwrap_or_else(|e| panic!("{kind:?}: {e}"));
    }
}

#[test]
fn one_channel_images_are_read_row_by_row_and_embeddings_pick_rows() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let r = Recurrent::<f64>::new(CellKind::Lstm, 4, 3, true, &mut rng);
    let images = Tensor::from_vec((0..32).map(|i| i as f64 / 32.0).collect(), &[2, 1, 4, 4]);
    let sequences = images.reshape(&[2, 4, 4]);
    assert_eq!(r.forward(&images).to_vec(), r.forward(&sequences).to_vec());
    assert_eq!(r.forward(&images).shape(), [2, 3]);

    let e = Embedding::<f64>::new(5, 2, &mut rng);
    let ids = Tensor::from_vec(vec![4.0, 0.0, 4.0], &[3]);
    let picked = e.forward(&ids);
    assert_eq!(picked.shape(), [3, 2]);
    let table = e.weight.to_vec();
    assert_eq!(picked.to_vec(), [table[8], table[9], table[0], table[1], table[8], table[9]]);
    picked.sum_all().backward();
    // Row 4 was picked twice: its gradient adds up.
    assert_eq!(e.weight.grad().unwrap().to_vec(), [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0, 2.0]);
    let bad = std::panic::catch_unwind(|| e.forward(&Tensor::from_vec(vec![5.0], &[1]))).unwrap_err();
    assert!(bad.downcast_ref::<String>().unwrap().contains("embedding"));
}

const KINDS: [CellKind; 4] = [CellKind::Rnn, CellKind::RnnRelu, CellKind::Lstm, CellKind::Gru];

fn max_diff(a: &T, b: &T) -> f64 {
    assert_eq!(a.shape(), b.shape());
    a.to_vec().iter().zip(b.to_vec()).fold(0.0, |m, (x, y)| m.max((x - y).abs()))
}

/// A state that is not zero, so that h0 (and c0) matter.
fn start(kind: CellKind) -> RecurrentState<f64> {
    let h = filled(&[2, 4], 5);
    RecurrentState { c: (kind == CellKind::Lstm).then(|| filled(&[2, 4], 6)), h }
}

#[test]
fn a_sequence_cut_in_two_with_its_state_carried_equals_the_whole_in_value_and_gradient() {
    for kind in KINDS {
        let r = layer(kind);
        let x = input().requires_grad();
        let s0 = start(kind);
        let loss_of = |out: &T, state: &RecurrentState<f64>| {
            let mut l = (out * &filled(out.shape(), 9).detach()).sum_all() + state.h.sqr().sum_all();
            if let Some(c) = &state.c {
                l = l + c.sin().sum_all();
            }
            l
        };
        let (all, end) = r.forward_with_state(&x, Some(&s0));
        let whole = loss_of(&all, &end);
        let grads = whole.backward();
        let (gx, gw, gh0) =
            (grads.wrt(&x).unwrap(), grads.wrt(&r.cells[0].weight_hh).unwrap(), grads.wrt(&s0.h).unwrap());

        let (first, middle) = r.forward_with_state(&x.narrow(1, 0, 2), Some(&s0));
        let (second, end2) = r.forward_with_state(&x.narrow(1, 2, 3), Some(&middle));
        let joined = Tensor::concat(&[&first, &second], 1);
        assert!(max_diff(&joined, &all) < 1e-13, "{kind:?}: outputs differ");
        assert!(max_diff(&end2.h, &end.h) < 1e-13, "{kind:?}: h_n differs");
        let split = loss_of(&joined, &end2);
        let grads = split.backward();
        assert!(max_diff(&grads.wrt(&x).unwrap(), &gx) < 1e-12, "{kind:?}: ∂x differs");
        assert!(max_diff(&grads.wrt(&r.cells[0].weight_hh).unwrap(), &gw) < 1e-12, "{kind:?}: ∂W_hh differs");
        assert!(max_diff(&grads.wrt(&s0.h).unwrap(), &gh0) < 1e-12, "{kind:?}: ∂h0 differs");
        // The state's gradient is not zero: h0 reaches the loss.
        assert!(gh0.to_vec().iter().any(|v| v.abs() > 1e-6), "{kind:?}: ∂h0 is zero");
        if kind == CellKind::Lstm {
            assert!(max_diff(end2.c.as_ref().unwrap(), end.c.as_ref().unwrap()) < 1e-13);
            assert!(grads.wrt(s0.c.as_ref().unwrap()).unwrap().to_vec().iter().any(|v| v.abs() > 1e-6));
        }

        // Truncated back-propagation: a detached state stops the gradient at the cut.
        let (_, cut) = r.forward_with_state(&x.narrow(1, 0, 2), Some(&s0));
        let (second, _) = r.forward_with_state(&x.narrow(1, 2, 3), Some(&cut.detach()));
        let grads = second.sum_all().backward();
        assert!(grads.wrt(&s0.h).is_none() || grads.wrt(&s0.h).unwrap().to_vec().iter().all(|&v| v == 0.0));
    }
}

#[test]
fn steps_one_at_a_time_give_the_sequence() {
    for kind in KINDS {
        let r = layer(kind);
        let x = input();
        let (all, end) = r.forward_with_state(&x, None);
        let mut state: Option<RecurrentState<f64>> = None;
        for t in 0..5 {
            let next = r.step(&x.narrow(1, t, 1).reshape(&[2, 3]), state.as_ref());
            assert!(max_diff(&next.h, &all.narrow(1, t, 1).reshape(&[2, 4])) < 1e-13, "{kind:?} step {t}");
            state = Some(next);
        }
        assert!(max_diff(&state.unwrap().h, &end.h) < 1e-13);
        // An empty sequence leaves the state as it was.
        let (none, same) = r.forward_with_state(&Tensor::zeros(&[2, 0, 3]), Some(&start(kind)));
        assert_eq!(none.shape(), [2, 0, 4]);
        assert_eq!(same.h.to_vec(), start(kind).h.to_vec());
    }
}

#[test]
fn a_state_of_the_wrong_shape_or_kind_is_named() {
    let lstm = layer(CellKind::Lstm);
    let x = input();
    let wrong = RecurrentState { h: Tensor::zeros(&[3, 4]), c: Some(Tensor::zeros(&[3, 4])) };
    let e = std::panic::catch_unwind(|| lstm.forward_with_state(&x, Some(&wrong))).unwrap_err();
    assert!(e.downcast_ref::<String>().unwrap().contains("lstm: a state of shape [3, 4]"));
    let no_cell = RecurrentState { h: Tensor::zeros(&[2, 4]), c: None };
    let e = std::panic::catch_unwind(|| lstm.forward_with_state(&x, Some(&no_cell))).unwrap_err();
    assert!(e.downcast_ref::<String>().unwrap().contains("without a cell state"));
    // A GRU given an LSTM's state (a wrongly shaped c too) hears about the cell, not shapes;
    // PyTorch's [layers, N, H] is answered with the shape expected.
    let gru = layer(CellKind::Gru);
    let with_c = RecurrentState { h: Tensor::zeros(&[2, 4]), c: Some(Tensor::zeros(&[9, 9])) };
    let e = std::panic::catch_unwind(|| gru.forward_with_state(&x, Some(&with_c))).unwrap_err();
    assert!(e.downcast_ref::<String>().unwrap().contains("gru: a state with a cell state"));
    let layered = RecurrentState { h: Tensor::zeros(&[1, 2, 4]), c: None };
    let e = std::panic::catch_unwind(|| gru.forward_with_state(&x, Some(&layered))).unwrap_err();
    assert!(e.downcast_ref::<String>().unwrap().contains("expected [2, 4]"));
    // One step's message names the shape the caller passed.
    let e = std::panic::catch_unwind(|| gru.step(&Tensor::zeros(&[2, 7]), None)).unwrap_err();
    assert!(e.downcast_ref::<String>().unwrap().contains("input of shape [2, 7] is not [batch, 3]"));
}

#[test]
fn relu_rnn_is_in_the_layer_language_and_keeps_nan() {
    let arch = adjoint::nn::Architecture::parse("rnn-relu:8,fc:3", &[1, 5, 4], None).unwrap();
    let net = adjoint::nn::Network::<f64>::new(arch, 1).unwrap();
    assert_eq!(net.forward(&Tensor::zeros(&[2, 20])).shape(), [2, 3]);
    let r = layer(CellKind::RnnRelu);
    let (all, _) = r.forward_with_state(&input(), None);
    assert!(all.to_vec().iter().all(|&v| v >= 0.0));
    let mut x = input().to_vec();
    x[0] = f64::NAN;
    let (all, _) = r.forward_with_state(&Tensor::from_vec(x, &[2, 5, 3]), None);
    assert!(all.to_vec()[0].is_nan());
}

#[test]
fn embedding_takes_integer_ids_and_its_padding_row_stays_zero_without_gradient() {
    let table = Embedding::<f64>::new(6, 3, &mut rand::rngs::StdRng::seed_from_u64(2)).padding_idx(2);
    let ids = adjoint::ndarray::array![[1usize, 2, 5], [2, 1, 1]].into_dyn();
    let out = table.ids(&ids);
    assert_eq!(out.shape(), &[2, 3, 3]);
    let w = table.weight.to_array().into_dimensionality::<adjoint::ndarray::Ix2>().unwrap();
    let v = out.to_vec();
    assert_eq!(&v[0..3], w.row(1).to_vec().as_slice());
    assert!(v[3..6].iter().all(|&x| x == 0.0), "the padding id looks up zeros");
    // The same ids as whole numbers in a tensor give the same values.
    let as_floats = Tensor::from_vec(ids.iter().map(|&i| i as f64).collect(), &[2, 3]);
    assert_eq!(table.forward(&as_floats).to_vec(), v);
    // Gradient: each row gets the sum of its lookups' cotangents; the padding row none.
    let weights = Tensor::from_vec((0..18).map(|i| i as f64).collect(), &[2, 3, 3]);
    (&out * &weights).sum_all().backward();
    let g = table.weight.grad().unwrap().to_array().into_dimensionality::<adjoint::ndarray::Ix2>().unwrap();
    assert_eq!(g.row(2).to_vec(), vec![0.0; 3]);
    assert_eq!(g.row(1).to_vec(), vec![0.0 + 12.0 + 15.0, 1.0 + 13.0 + 16.0, 2.0 + 14.0 + 17.0]);
    assert_eq!(g.row(5).to_vec(), vec![6.0, 7.0, 8.0]);
    assert_eq!(g.row(0).to_vec(), vec![0.0; 3]);
}

#[test]
#[should_panic(expected = "id 6 is not below the table's 6 rows")]
fn an_embedding_id_out_of_range_names_itself() {
    let table = adjoint::nn::Embedding::<f32>::new(6, 3, &mut rand::rngs::StdRng::seed_from_u64(2));
    let _ = table.lookup(&[1, 6]);
}
