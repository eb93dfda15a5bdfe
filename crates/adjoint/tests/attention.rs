//! Scaled dot-product attention: the fused primitive against its composed definition (values,
//! first-order rules with blocks, masks and dropout), JVP against VJP, JAX-style checks to
//! order 2, and PyTorch's numbers.

use std::collections::HashMap;
use std::path::PathBuf;

use adjoint::autodiff::gradcheck::{check_grads, CheckOptions};
use adjoint::autodiff::transforms::{jvp, vjp};
use adjoint::ops::{attention_mask, AttentionOptions};
use adjoint::Tensor;
use ndarray::{ArrayD, IxDyn};

fn normal(shape: &[usize], seed: u64) -> Tensor<f64> {
    Tensor::rand_normal(shape, 0.0, 1.0, seed)
}

fn max_diff(a: &Tensor<f64>, b: &Tensor<f64>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    a.to_vec().iter().zip(b.to_vec()).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

/// A key-padding style mask `[lead…, 1, Lk]`: the last `pad` keys of every other batch row
/// are masked.
fn padding_mask(b: usize, lk: usize, pad: usize) -> Tensor<f64> {
    let allowed = ArrayD::from_shape_fn(IxDyn(&[b, 1, 1, lk]), |i| !(i[0] % 2 == 1 && i[3] >= lk - pad));
    attention_mask(&allowed)
}

struct Case {
    name: &'static str,
    lead: Vec<usize>,
    lq: usize,
    lk: usize,
    d: usize,
    dv: usize,
    options: AttentionOptions<f64>,
}

fn cases() -> Vec<Case> {
    let plain = AttentionOptions::default();
    vec![
        Case { name: "plain", lead: vec![2], lq: 5, lk: 7, d: 4, dv: 3, options: plain.clone() },
        Case { name: "heads, blocks", lead: vec![2, 3], lq: 150, lk: 90, d: 8, dv: 5, options: plain.clone() },
        Case {
            name: "causal",
            lead: vec![2, 2],
            lq: 70,
            lk: 70,
            d: 4,
            dv: 4,
            options: AttentionOptions { causal: true, ..plain.clone() },
        },
        Case {
            name: "padding mask",
            lead: vec![2, 2],
            lq: 6,
            lk: 9,
            d: 4,
            dv: 2,
            options: AttentionOptions { mask: Some(padding_mask(2, 9, 3)), ..plain.clone() },
        },
        Case {
            name: "dropout",
            lead: vec![3],
            lq: 66,
            lk: 10,
            d: 3,
            dv: 4,
            options: AttentionOptions { dropout: 0.3, seed: 11, ..plain.clone() },
        },
        Case {
            // Causal blocks multiply only by the keys they can see: with more keys than
            // queries, the last keys are seen by none and get no gradient.
            name: "causal, more keys than queries, masked, dropout",
            lead: vec![2],
            lq: 70,
            lk: 130,
            d: 3,
            dv: 2,
            options: AttentionOptions {
                mask: Some(padding_mask(2, 130, 7).reshape(&[2, 1, 130])),
                causal: true,
                dropout: 0.2,
                seed: 3,
                ..plain.clone()
            },
        },
        Case {
            name: "all at once",
            lead: vec![2, 2],
            lq: 8,
            lk: 8,
            d: 4,
            dv: 3,
            options: AttentionOptions {
                mask: Some(padding_mask(2, 8, 2)),
                causal: true,
                dropout: 0.25,
                seed: 5,
                scale: Some(0.7),
                first: 0,
            },
        },
    ]
}

fn inputs(c: &Case, seed: u64) -> [Tensor<f64>; 3] {
    let shape = |l: usize, w: usize| {
        let mut s = c.lead.clone();
        s.extend([l, w]);
        s
    };
    [normal(&shape(c.lq, c.d), seed), normal(&shape(c.lk, c.d), seed + 1), normal(&shape(c.lk, c.dv), seed + 2)]
}

#[test]
fn the_fused_forward_equals_the_composed_definition() {
    for c in cases() {
        let [q, k, v] = inputs(&c, 1);
        let fused = Tensor::scaled_dot_product_attention(&q, &k, &v, &c.options);
        let composed = Tensor::scaled_dot_product_attention_composed(&q, &k, &v, &c.options);
        assert!(max_diff(&fused, &composed) < 1e-12, "{}: {}", c.name, max_diff(&fused, &composed));
    }
}

#[test]
fn the_fused_backward_equals_the_composed_rule() {
    for c in cases() {
        let [q, k, v] = inputs(&c, 7);
        let mut out_shape = c.lead.clone();
        out_shape.extend([c.lq, c.dv]);
        let w = normal(&out_shape, 99);
        let grads = |composed: bool| {
            let (q, k, v) = (q.detach().requires_grad(), k.detach().requires_grad(), v.detach().requires_grad());
            let out = if composed {
                Tensor::scaled_dot_product_attention_composed(&q, &k, &v, &c.options)
            } else {
                Tensor::scaled_dot_product_attention(&q, &k, &v, &c.options)
            };
            (&out * &w).sum_all().backward();
            [q.grad().unwrap(), k.grad().unwrap(), v.grad().unwrap()]
        };
        let (fused, composed) = (grads(false), grads(true));
        for (i, (a, b)) in fused.iter().zip(&composed).enumerate() {
            assert!(max_diff(a, b) < 1e-11, "{} input {i}: {}", c.name, max_diff(a, b));
        }
    }
}

/// Makes attention's (q, k, v) from three leaves.
type Arrange<'a> = Box<dyn Fn(&Tensor<f64>, &Tensor<f64>, &Tensor<f64>) -> [Tensor<f64>; 3] + 'a>;

/// Inputs as the layers make them (heads permuted out of `[B, L, H, d]`), with d not the
/// innermost axis (a transpose), and keys shared by the batch (broadcast, then copied by
/// `broadcast_to`, with gradients summed back): the kernels read
/// each where it is and lay their results out to match, so values and gradients must equal
/// the composed definition's on standard copies.
#[test]
fn inputs_in_any_layout_give_the_composed_values_and_gradients() {
    let (b, h, lq, lk, d) = (2, 3, 70, 9, 4);
    let heads = |x: &Tensor<f64>| x.permute(&[0, 2, 1, 3][..]);
    let layouts: Vec<(&str, Arrange<'_>, [Vec<usize>; 3])> = vec![
        (
            "heads permuted",
            Box::new(|q, k, v| [heads(q), heads(k), heads(v)]),
            [vec![b, lq, h, d], vec![b, lk, h, d], vec![b, lk, h, d]],
        ),
        (
            "d not innermost",
            Box::new(|q, k, v| [q.transpose(), k.transpose(), v.clone()]),
            [vec![b, h, d, lq], vec![b, h, d, lk], vec![b, h, lk, d]],
        ),
        (
            "keys shared by the batch",
            Box::new(|q, k, v| [heads(q), k.broadcast_to(&[b, h, lk, d]), v.broadcast_to(&[b, h, lk, d])]),
            [vec![b, lq, h, d], vec![1, h, lk, d], vec![h, lk, d]],
        ),
    ];
    for causal in [false, true] {
        let options = AttentionOptions { causal, mask: Some(padding_mask(b, lk, 2)), ..AttentionOptions::default() };
        for (name, arrange, shapes) in &layouts {
            let leaves = [normal(&shapes[0], 1), normal(&shapes[1], 2), normal(&shapes[2], 3)];
            let w = normal(&[b, h, lq, d], 4);
            let run = |composed: bool| {
                let leaves: Vec<Tensor<f64>> = leaves.iter().map(|x| x.detach().requires_grad()).collect();
                let [q, k, v] = arrange(&leaves[0], &leaves[1], &leaves[2]);
                let out = if composed {
                    Tensor::scaled_dot_product_attention_composed(&q, &k, &v, &options)
                } else {
                    Tensor::scaled_dot_product_attention(&q, &k, &v, &options)
                };
                if !composed && *name == "heads permuted" {
                    // Laid out as the inputs came: merging the heads back is free.
                    assert!(heads(&out).view().is_standard_layout(), "the output is not in [B, L, H, d] order");
                }
                // Merging the heads back, as the layer does.
                let merged = heads(&out).reshape(&[b, lq, h * d]);
                (&heads(&out) * &heads(&w)).sum_all().backward();
                (merged, leaves.iter().map(|x| x.grad().unwrap()).collect::<Vec<_>>())
            };
            let ((fused, fused_grads), (composed, composed_grads)) = (run(false), run(true));
            if *name == "heads permuted" {
                // The gradients too: in [B, H, L, d] they are permuted views of standard arrays.
                assert!(fused_grads.iter().all(|g| g.view().is_standard_layout()), "a gradient needed a copy");
            }
            assert!(max_diff(&fused, &composed) < 1e-12, "{name}, causal {causal}: {}", max_diff(&fused, &composed));
            for (i, (a, c)) in fused_grads.iter().zip(&composed_grads).enumerate() {
                assert!(max_diff(a, c) < 1e-11, "{name}, causal {causal}, input {i}: {}", max_diff(a, c));
            }
        }
    }
}

#[test]
fn jvp_and_vjp_agree_in_inner_products() {
    for c in cases() {
        let xs = inputs(&c, 3);
        let us = inputs(&c, 30);
        let options = c.options.clone();
        let f = move |x: &[Tensor<f64>]| vec![Tensor::scaled_dot_product_attention(&x[0], &x[1], &x[2], &options)];
        let (_, tangents) = jvp(&f, &xs, &us);
        let (ys, pullback) = vjp(&f, &xs);
        let cotangent = normal(ys[0].shape(), 77);
        let back = pullback.call(std::slice::from_ref(&cotangent));
        let left: f64 = tangents[0].to_vec().iter().zip(cotangent.to_vec()).map(|(a, b)| a * b).sum();
        let right: f64 =
            back.iter().zip(&us).map(|(g, u)| g.to_vec().iter().zip(u.to_vec()).map(|(a, b)| a * b).sum::<f64>()).sum();
        assert!((left - right).abs() < 1e-10 * (1.0 + left.abs()), "{}: {left} vs {right}", c.name);
    }
}

#[test]
fn check_grads_to_order_two_with_masks_and_dropout() {
    for c in cases().into_iter().filter(|c| c.lq * c.lk * c.lead.iter().product::<usize>() < 400) {
        let xs = inputs(&c, 5);
        let options = c.options.clone();
        let f = move |x: &[Tensor<f64>]| vec![Tensor::scaled_dot_product_attention(&x[0], &x[1], &x[2], &options)];
        check_grads(f, &xs, CheckOptions { atol: 1e-6, rtol: 1e-5, ..CheckOptions::default() })
            .unwrap_or_else(|e| panic!("{}: {e}", c.name));
    }
}

#[test]
fn a_fully_masked_row_gives_zeros_not_nan() {
    let (q, k, v) = (
        normal(&[1, 3, 2], 1).requires_grad(),
        normal(&[1, 4, 2], 2).requires_grad(),
        normal(&[1, 4, 2], 3).requires_grad(),
    );
    let allowed = ArrayD::from_shape_fn(IxDyn(&[3, 4]), |i| i[0] != 1);
    let options = AttentionOptions { mask: Some(attention_mask(&allowed)), ..Default::default() };
    let out = Tensor::scaled_dot_product_attention(&q, &k, &v, &options);
    let rows = out.to_array();
    assert!(rows.iter().all(|x| x.is_finite()));
    assert_eq!(rows.slice(ndarray::s![0, 1, ..]).to_vec(), vec![0.0, 0.0]);
    out.sum_all().backward();
    let dq = q.grad().unwrap().to_array();
    assert_eq!(dq.slice(ndarray::s![0, 1, ..]).to_vec(), vec![0.0, 0.0]);
    assert!(k.grad().unwrap().to_vec().iter().all(|x| x.is_finite()));
}

#[test]
fn float32_agrees_with_float64() {
    let [q, k, v] = inputs(&cases()[1], 2);
    let to32 = |t: &Tensor<f64>| Tensor::<f32>::from_array(t.view().mapv(|x| x as f32));
    let out64 = Tensor::scaled_dot_product_attention(&q, &k, &v, &AttentionOptions::default());
    let out32 = Tensor::scaled_dot_product_attention(&to32(&q), &to32(&k), &to32(&v), &AttentionOptions::default());
    let worst = out64.to_vec().iter().zip(out32.to_vec()).map(|(a, b)| (a - b as f64).abs()).fold(0.0, f64::max);
    assert!(worst < 1e-5, "{worst}");
}

#[test]
#[should_panic(expected = "scaled_dot_product_attention: q [2, 5, 4], k [2, 7, 3]")]
fn shapes_that_do_not_fit_are_named() {
    let _ = Tensor::scaled_dot_product_attention(
        &normal(&[2, 5, 4], 1),
        &normal(&[2, 7, 3], 2),
        &normal(&[2, 7, 3], 3),
        &AttentionOptions::default(),
    );
}

#[test]
#[should_panic(expected = "does not broadcast")]
fn a_mask_that_does_not_broadcast_is_named() {
    let options = AttentionOptions { mask: Some(normal(&[3, 3], 1)), ..Default::default() };
    let _ = Tensor::scaled_dot_product_attention(
        &normal(&[1, 5, 4], 1),
        &normal(&[1, 7, 4], 2),
        &normal(&[1, 7, 3], 3),
        &options,
    );
}

fn fixture() -> HashMap<String, ArrayD<f64>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch_transformer.safetensors");
    adjoint::io::load::<f64>(&path, &Default::default()).unwrap().tensors
}

#[test]
fn pytorchs_scaled_dot_product_attention_numbers() {
    let t = fixture();
    let get = |n: &str| Tensor::from_array(t[n].clone());
    let allowed = t["sdpa.allowed"].mapv(|a| a > 0.5);
    let options = AttentionOptions { mask: Some(attention_mask(&allowed)), ..Default::default() };
    let out = Tensor::scaled_dot_product_attention(&get("sdpa.q"), &get("sdpa.k"), &get("sdpa.v"), &options);
    assert!(max_diff(&out, &get("sdpa.y")) < 1e-12, "{}", max_diff(&out, &get("sdpa.y")));
    let (k, v) = (get("sdpa.k").narrow(2, 0, 7), get("sdpa.v").narrow(2, 0, 7));
    let causal = Tensor::scaled_dot_product_attention(
        &get("sdpa.q"),
        &k,
        &v,
        &AttentionOptions { causal: true, ..Default::default() },
    );
    assert!(max_diff(&causal, &get("sdpa.y_causal")) < 1e-12);
}

#[test]
fn fully_masked_rows_stay_finite_at_every_order_and_in_forward_mode() {
    use adjoint::autodiff::transforms::grad_many;
    let allowed = ArrayD::from_shape_fn(IxDyn(&[3, 4]), |i| i[0] != 1);
    let options = AttentionOptions { mask: Some(attention_mask(&allowed)), ..Default::default() };
    let xs = [normal(&[1, 3, 2], 1), normal(&[1, 4, 2], 2), normal(&[1, 4, 2], 3)];
    let o = options.clone();
    let f = move |x: &[Tensor<f64>]| Tensor::scaled_dot_product_attention(&x[0], &x[1], &x[2], &o).sqr().sum_all();
    // Second order: the gradient's own gradient (recorded backward pass, composed rules).
    let g = grad_many(&f);
    let gg =
        grad_many(move |x: &[Tensor<f64>]| g(x).iter().map(Tensor::sum_all).fold(Tensor::scalar(0.0), |a, b| a + b));
    for t in gg(&xs) {
        assert!(t.to_vec().iter().all(|x| x.is_finite()), "{:?}", t.to_vec());
    }
    let o = options.clone();
    let (_, tangents) =
        jvp(move |x: &[Tensor<f64>]| vec![Tensor::scaled_dot_product_attention(&x[0], &x[1], &x[2], &o)], &xs, &xs);
    let t = tangents[0].to_array();
    assert!(t.iter().all(|x| x.is_finite()));
    assert_eq!(t.slice(ndarray::s![0, 1, ..]).to_vec(), vec![0.0, 0.0]);
    let o = options.clone();
    check_grads(
        move |x: &[Tensor<f64>]| vec![Tensor::scaled_dot_product_attention(&x[0], &x[1], &x[2], &o)],
        &xs,
        CheckOptions::default(),
    )
    .unwrap();
}

#[test]
fn dropout_masks_are_numbered_from_the_first_batch_element() {
    let (q, k, v) = (normal(&[2, 5, 3], 1), normal(&[2, 6, 3], 2), normal(&[2, 6, 2], 3));
    let options = AttentionOptions { dropout: 0.4, seed: 9, ..Default::default() };
    let whole = Tensor::scaled_dot_product_attention(&q, &k, &v, &options);
    let second = Tensor::scaled_dot_product_attention(
        &q.narrow(0, 1, 1),
        &k.narrow(0, 1, 1),
        &v.narrow(0, 1, 1),
        &AttentionOptions { first: 1, ..options.clone() },
    );
    assert_eq!(whole.narrow(0, 1, 1).to_vec(), second.to_vec());
}

#[test]
#[should_panic(expected = "the mask is tracked")]
fn a_learned_mask_is_refused_not_silently_constant() {
    let options = AttentionOptions { mask: Some(normal(&[5, 7], 1).requires_grad()), ..Default::default() };
    let _ = Tensor::scaled_dot_product_attention(
        &normal(&[1, 5, 4], 1),
        &normal(&[1, 7, 4], 2),
        &normal(&[1, 7, 3], 3),
        &options,
    );
}
