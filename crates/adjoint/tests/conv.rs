//! Convolution and pooling: against naive loops written from the definitions (PyTorch's
//! formulas), to order 2 with `check_grads`, the dot-product test for im2col/col2im, and
//! edge values (ties, NaN) as PyTorch treats them.

use adjoint::autodiff::gradcheck::{check_grads, CheckOptions};
use adjoint::ops::Window2d;
use adjoint::Tensor;
use proptest::prelude::*;

type T = Tensor<f64>;

fn tensor(shape: &[usize], seed: u64) -> T {
    let n: usize = shape.iter().product();
    // A fixed, irregular pattern (no accidental ties) in [-1, 1].
    let values = (0..n).map(|i| ((i as f64 + 1.0) * 0.7548776662 + seed as f64 * 0.5698402910).fract() * 2.0 - 1.0);
    Tensor::from_vec(values.collect(), shape)
}

/// out[b, o, y, x] = bias[o] + Σ_{c in group, i, j} in[b, c, y·s − p + i·d, x·s − p + j·d] · w[o, c', i, j]
fn naive_conv(x: &T, w: &T, b: Option<&T>, win: &Window2d, groups: usize) -> (Vec<usize>, Vec<f64>) {
    let (xs, ws) = (x.shape().to_vec(), w.shape().to_vec());
    let (xv, wv) = (x.to_vec(), w.to_vec());
    let [oh, ow] = win.output_size([xs[2], xs[3]]).unwrap();
    let (cg, og) = (ws[1], ws[0] / groups);
    let mut out = Vec::new();
    for bi in 0..xs[0] {
        for o in 0..ws[0] {
            let g = o / og;
            for y in 0..oh {
                for xo in 0..ow {
                    let mut acc = b.map_or(0.0, |b| b.to_vec()[o]);
                    for cc in 0..cg {
                        let c = g * cg + cc;
                        for i in 0..ws[2] {
                            for j in 0..ws[3] {
                                let iy = (y * win.stride[0] + i * win.dilation[0]) as isize - win.padding[0] as isize;
                                let ix = (xo * win.stride[1] + j * win.dilation[1]) as isize - win.padding[1] as isize;
                                if iy < 0 || ix < 0 || iy >= xs[2] as isize || ix >= xs[3] as isize {
                                    continue;
                                }
                                let xi = ((bi * xs[1] + c) * xs[2] + iy as usize) * xs[3] + ix as usize;
                                let wi = ((o * cg + cc) * ws[2] + i) * ws[3] + j;
                                acc += xv[xi] * wv[wi];
                            }
                        }
                    }
                    out.push(acc);
                }
            }
        }
    }
    (vec![xs[0], ws[0], oh, ow], out)
}

/// Max (first maximum) or mean (padding counted as 0) of each window.
fn naive_pool(x: &T, win: &Window2d, max: bool) -> (Vec<usize>, Vec<f64>) {
    let xs = x.shape().to_vec();
    let xv = x.to_vec();
    let [oh, ow] = win.output_size([xs[2], xs[3]]).unwrap();
    let mut out = Vec::new();
    for plane in 0..xs[0] * xs[1] {
        for y in 0..oh {
            for xo in 0..ow {
                let mut acc = if max { f64::NEG_INFINITY } else { 0.0 };
                for i in 0..win.kernel[0] {
                    for j in 0..win.kernel[1] {
                        let iy = (y * win.stride[0] + i * win.dilation[0]) as isize - win.padding[0] as isize;
                        let ix = (xo * win.stride[1] + j * win.dilation[1]) as isize - win.padding[1] as isize;
                        if iy < 0 || ix < 0 || iy >= xs[2] as isize || ix >= xs[3] as isize {
                            continue;
                        }
                        let v = xv[(plane * xs[2] + iy as usize) * xs[3] + ix as usize];
                        acc = if max { acc.max(v) } else { acc + v };
                    }
                }
                out.push(if max { acc } else { acc / (win.kernel[0] * win.kernel[1]) as f64 });
            }
        }
    }
    (vec![xs[0], xs[1], oh, ow], out)
}

fn close(a: &[f64], b: &[f64]) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= 1e-12 * (1.0 + y.abs()), "element {i}: {x} vs {y}");
    }
}

/// A window that fits an input of `size`, with padding at most half the dilated kernel.
fn window() -> impl Strategy<Value = (Window2d, [usize; 2])> {
    (1usize..4, 1usize..4, 1usize..4, 1usize..3, 1usize..3, 0usize..3, 0usize..5, 0usize..5).prop_filter_map(
        "window must fit",
        |(kh, kw, s, dh, dw, p, eh, ew)| {
            let mut win = Window2d::new([kh, kw]).stride(s);
            win.dilation = [dh, dw];
            win.padding = [p.min(dh * (kh - 1) / 2), p.min(dw * (kw - 1) / 2)];
            let size = [dh * (kh - 1) + 1 + eh, dw * (kw - 1) + 1 + ew];
            win.output_size(size).map(|_| (win, size))
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn conv2d_matches_the_definition(
        (win, [h, w]) in window(), n in 1usize..3, groups in 1usize..3, cg in 1usize..3, og in 1usize..3,
        bias in any::<bool>(), seed in 0u64..1000,
    ) {
        let x = tensor(&[n, groups * cg, h, w], seed);
        let wt = tensor(&[groups * og, cg, win.kernel[0], win.kernel[1]], seed + 1);
        let b = tensor(&[groups * og], seed + 2);
        let b = bias.then_some(&b);
        let y = x.conv2d(&wt, b, &win, groups);
        let (shape, expected) = naive_conv(&x, &wt, b, &win, groups);
        prop_assert_eq!(y.shape(), &shape[..]);
        close(&y.to_vec(), &expected);
    }

    #[test]
    fn pooling_matches_the_definition((win, [h, w]) in window(), n in 1usize..3, c in 1usize..3, seed in 0u64..1000) {
        let x = tensor(&[n, c, h, w], seed);
        for max in [true, false] {
            let y = if max { x.max_pool2d(&win) } else { x.avg_pool2d(&win) };
            let (shape, expected) = naive_pool(&x, &win, max);
            prop_assert_eq!(y.shape(), &shape[..]);
            close(&y.to_vec(), &expected);
        }
    }

    /// ⟨unfold(x), c⟩ = ⟨x, fold(c)⟩: col2im is exactly the adjoint of im2col.
    #[test]
    fn fold_is_the_adjoint_of_unfold((win, [h, w]) in window(), n in 1usize..3, c in 1usize..3, seed in 0u64..1000) {
        let x = tensor(&[n, c, h, w], seed);
        let cols = x.unfold2d(&win);
        let probe = tensor(cols.shape(), seed + 7);
        let left: f64 = cols.to_vec().iter().zip(probe.to_vec()).map(|(a, b)| a * b).sum();
        let back = probe.fold2d(&win, [n, c, h, w]);
        let right: f64 = x.to_vec().iter().zip(back.to_vec()).map(|(a, b)| a * b).sum();
        prop_assert!((left - right).abs() < 1e-10 * (1.0 + left.abs()), "{} vs {}", left, right);
    }
}

fn order_2(f: impl Fn(&[T]) -> Vec<T> + 'static, args: &[T]) {
    check_grads(f, args, CheckOptions::default()).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn conv2d_passes_check_grads_at_order_2() {
    // Bilinear in input and weight: the mixed second derivatives are non-zero, so a rule that
    // drops a cross term fails here.
    for (win, groups, c, o) in [
        (Window2d::new([2, 2]), 1, 2, 3),
        (Window2d::new([3, 2]).stride(2).padding(1), 1, 1, 2),
        (Window2d::new([2, 2]).dilation(2).padding(1), 2, 4, 2),
    ] {
        let x = tensor(&[2, c, 5, 4], 1);
        let w = tensor(&[o, c / groups, win.kernel[0], win.kernel[1]], 2);
        let b = tensor(&[o], 3);
        order_2(move |v| vec![v[0].conv2d(&v[1], Some(&v[2]), &win, groups).tanh()], &[x, w, b]);
    }
}

#[test]
fn pooling_unfold_and_take_pass_check_grads_at_order_2() {
    let x = tensor(&[2, 2, 5, 5], 4);
    let win = Window2d::new([3, 3]).stride(2).padding(1);
    order_2(move |v| vec![v[0].avg_pool2d(&win).sin()], std::slice::from_ref(&x));
    order_2(move |v| vec![v[0].max_pool2d(&win).sin()], std::slice::from_ref(&x));
    order_2(move |v| vec![v[0].unfold2d(&win).sqr()], std::slice::from_ref(&x));
    let cols = x.unfold2d(&win);
    order_2(move |v| vec![v[0].fold2d(&win, [2, 2, 5, 5]).sqr()], &[cols]);
    order_2(move |v| vec![v[0].flatten().sin()], &[x]);
}

#[test]
fn max_pool_sends_a_tie_to_the_first_maximum_and_propagates_nan() {
    // PyTorch: torch.zeros(1,1,2,2, requires_grad=True) → max_pool2d(2) → backward gives
    // [[1, 0], [0, 0]].
    let x = Tensor::<f64>::zeros(&[1, 1, 2, 2]).requires_grad();
    x.max_pool2d(&Window2d::new([2, 2])).sum_all().backward();
    assert_eq!(x.grad().unwrap().to_vec(), [1.0, 0.0, 0.0, 0.0]);
    let y = Tensor::<f64>::from_vec(vec![1.0, f64::NAN, 3.0, 2.0], &[1, 1, 2, 2]);
    assert!(y.max_pool2d(&Window2d::new([2, 2])).to_vec()[0].is_nan());
    // −inf is a real value, padding is not.
    let z = Tensor::<f64>::from_vec(vec![f64::NEG_INFINITY], &[1, 1, 1, 1]);
    assert_eq!(z.max_pool2d(&Window2d::new([3, 3]).padding(1)).to_vec(), [f64::NEG_INFINITY]);
}

#[test]
fn a_known_convolution_in_f32() {
    // A Sobel filter on a ramp: the horizontal gradient is 8 times the slope everywhere.
    let ramp: Vec<f32> = (0..25).map(|i| (i % 5) as f32 * 0.5).collect();
    let x = Tensor::<f32>::from_vec(ramp, &[1, 1, 5, 5]);
    let sobel = Tensor::<f32>::from_vec(vec![-1.0, 0.0, 1.0, -2.0, 0.0, 2.0, -1.0, 0.0, 1.0], &[1, 1, 3, 3]);
    let y = x.conv2d(&sobel, None, &Window2d::new([3, 3]), 1);
    assert_eq!(y.shape(), [1, 1, 3, 3]);
    assert!(y.to_vec().iter().all(|&v| v == 4.0), "{:?}", y.to_vec());
}

#[test]
fn shapes_that_do_not_fit_panic_naming_them() {
    let x = Tensor::<f32>::zeros(&[1, 3, 4, 4]);
    let w = Tensor::<f32>::zeros(&[2, 2, 3, 3]);
    let e = std::panic::catch_unwind(|| x.conv2d(&w, None, &Window2d::new([3, 3]), 1)).unwrap_err();
    let msg = e.downcast_ref::<String>().unwrap();
    assert!(msg.contains("conv2d") && msg.contains("[1, 3, 4, 4]") && msg.contains("[2, 2, 3, 3]"), "{msg}");
    let e = std::panic::catch_unwind(|| x.max_pool2d(&Window2d::new([5, 5]))).unwrap_err();
    let msg = e.downcast_ref::<String>().unwrap();
    assert!(msg.contains("max_pool2d") && msg.contains("[1, 3, 4, 4]"), "{msg}");
    assert_eq!(Window2d::new([3, 3]).padding(2).output_size([8, 8]), None, "padding over half the kernel");
}

/// The convolution written out as unfold, one product per group and a permutation to NCHW:
/// the composed rule the convolution primitives must equal.
fn composed_conv(x: &T, w: &T, b: &T, win: &Window2d, groups: usize) -> T {
    let (sx, o) = (x.shape().to_vec(), w.shape()[0]);
    let [oh, ow] = win.output_size([sx[2], sx[3]]).expect("fits");
    let per_group = sx[1] / groups * win.kernel[0] * win.kernel[1];
    let cols = x.unfold2d(win).reshape(&[groups, per_group, sx[0] * oh * ow]);
    let y = w.reshape(&[groups, o / groups, per_group]).matmul(&cols).reshape(&[o, sx[0], oh, ow]);
    (y + b.reshape(&[o, 1, 1, 1])).permute(&[1, 0, 2, 3])
}

fn close_tensors(a: &[T], b: &[T], what: &str) {
    for (a, b) in a.iter().zip(b) {
        assert_eq!(a.shape(), b.shape(), "{what}");
        for (x, y) in a.to_vec().iter().zip(b.to_vec()) {
            assert!((x - y).abs() <= 1e-9 * (1.0 + y.abs()), "{what}: {x} vs {y}");
        }
    }
}

/// The three convolution primitives (convolution, its transposes in input and weight)
/// against the composed rule, at sizes where the batch is cut into tasks of whole images
/// (1, 2 and 3 threads, so uneven runs too): values, gradients, reverse-over-reverse and
/// forward-over-reverse second derivatives (the mixed input-weight terms are non-zero).
#[test]
fn conv2d_primitives_equal_the_composed_rule_on_several_threads() {
    use adjoint::autodiff::transforms::{jvp, value_and_grad_many};
    for threads in [1, 2, 3] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            for (win, groups) in [
                (Window2d::new([3, 3]), 1),
                (Window2d::new([3, 3]).stride(2).padding(1), 2),
                (Window2d::new([2, 3]).dilation(2).padding(1), 1),
            ] {
                let (n, c, o) = (5, 8, 12);
                let xs = vec![
                    tensor(&[n, c, 14, 13], 1),
                    tensor(&[o, c / groups, win.kernel[0], win.kernel[1]], 2),
                    tensor(&[o], 3),
                ];
                let vs: Vec<T> = xs.iter().enumerate().map(|(i, x)| tensor(x.shape(), 10 + i as u64)).collect();
                let fused = move |v: &[T]| v[0].conv2d(&v[1], Some(&v[2]), &win, groups).sin().sum_all();
                let composed = move |v: &[T]| composed_conv(&v[0], &v[1], &v[2], &win, groups).sin().sum_all();
                let what = format!("{threads} thread(s), {win:?}, {groups} group(s)");
                let y_fused = xs[0].conv2d(&xs[1], Some(&xs[2]), &win, groups);
                close_tensors(&[y_fused], &[composed_conv(&xs[0], &xs[1], &xs[2], &win, groups)], &what);
                let g_fused = value_and_grad_many(fused)(&xs).1;
                let g_composed = value_and_grad_many(composed)(&xs).1;
                close_tensors(&g_fused, &g_composed, &what);
                // Reverse over reverse: ∇ₓ⟨∇f(x), v⟩.
                let second = |f: fn(&[T], &Window2d, usize) -> T| {
                    let vs = vs.clone();
                    value_and_grad_many(move |x: &[T]| {
                        let g = value_and_grad_many(|x: &[T]| f(x, &win, groups))(x).1;
                        g.iter().zip(&vs).map(|(g, v)| (g * v).sum_all()).reduce(|a, b| a + b).unwrap()
                    })(&xs)
                    .1
                };
                let f_fused: fn(&[T], &Window2d, usize) -> T =
                    |v, win, groups| v[0].conv2d(&v[1], Some(&v[2]), win, groups).sin().sum_all();
                let f_composed: fn(&[T], &Window2d, usize) -> T =
                    |v, win, groups| composed_conv(&v[0], &v[1], &v[2], win, groups).sin().sum_all();
                close_tensors(&second(f_fused), &second(f_composed), &what);
                // Forward over reverse: the same Hessian-vector product by the JVP rules.
                let hvp = |f: fn(&[T], &Window2d, usize) -> T| {
                    jvp(|x: &[T]| value_and_grad_many(|x: &[T]| f(x, &win, groups))(x).1, &xs, &vs).1
                };
                close_tensors(&hvp(f_fused), &hvp(f_composed), &what);
                close_tensors(&hvp(f_fused), &second(f_fused), &what);
            }
        });
    }
}

/// Max pooling's kernel on a batch large enough to be split across threads, with ReLU-like
/// ties (zeros) and NaNs: the same values, indices (the first maximum, or the last NaN) and
/// gradient as the naive loops, on 1, 2 and 3 threads.
#[test]
fn max_pool_on_several_threads_with_ties_and_nan() {
    let shape = [6, 7, 20, 18];
    let mut values = tensor(&shape, 5).to_vec();
    for (i, v) in values.iter_mut().enumerate() {
        if i % 3 == 0 {
            *v = 0.0;
        }
        if i % 97 == 0 {
            *v = f64::NAN;
        }
    }
    let x = Tensor::from_vec(values, &shape);
    for threads in [1, 2, 3] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            for win in
                [Window2d::new([2, 2]).stride(2), Window2d { stride: [2, 1], ..Window2d::new([3, 2]).padding(1) }]
            {
                let xv = x.detach().requires_grad();
                let y = xv.max_pool2d(&win);
                let probe = tensor(y.shape(), 9);
                (&y * &probe).sum_all().backward();
                let (values, grad) = (y.to_vec(), xv.grad().unwrap().to_vec());
                // The naive rule: scan each window in row-major order; a greater value or a
                // NaN takes the place.
                let input = x.to_vec();
                let [oh, ow] = win.output_size([shape[2], shape[3]]).unwrap();
                let mut expected_grad = vec![0.0; input.len()];
                let probe = probe.to_vec();
                for plane in 0..shape[0] * shape[1] {
                    for yo in 0..oh {
                        for xo in 0..ow {
                            let mut best: Option<(usize, f64)> = None;
                            for i in 0..win.kernel[0] {
                                for j in 0..win.kernel[1] {
                                    let iy = (yo * win.stride[0] + i) as isize - win.padding[0] as isize;
                                    let ix = (xo * win.stride[1] + j) as isize - win.padding[1] as isize;
                                    if iy < 0 || ix < 0 || iy >= shape[2] as isize || ix >= shape[3] as isize {
                                        continue;
                                    }
                                    let at = (plane * shape[2] + iy as usize) * shape[3] + ix as usize;
                                    let v = input[at];
                                    if best.is_none_or(|(_, b)| v > b || v.is_nan()) {
                                        best = Some((at, v));
                                    }
                                }
                            }
                            let (at, v) = best.unwrap();
                            let out = (plane * oh + yo) * ow + xo;
                            let got = values[out];
                            assert!(
                                got == v || (got.is_nan() && v.is_nan()),
                                "{threads} threads, {win:?}: {got} vs {v}"
                            );
                            expected_grad[at] += probe[out];
                        }
                    }
                }
                for (a, b) in grad.iter().zip(&expected_grad) {
                    assert!((a - b).abs() < 1e-12, "{threads} threads, {win:?}: gradient {a} vs {b}");
                }
            }
        });
    }
}

/// Found by an outside review: an empty weight (no output or no input channels) has an
/// empty gradient instead of a panic, and a max-pooling window that reads only padding (a
/// dilated window over a small input) is refused with a message naming it.
#[test]
fn empty_weights_and_windows_of_only_padding() {
    for (c, o) in [(2, 0), (0, 3)] {
        let x = Tensor::<f64>::ones(&[2, c, 4, 4]).requires_grad();
        let w = Tensor::<f64>::ones(&[o, c, 2, 2]).requires_grad();
        let y = x.conv2d(&w, None, &Window2d::new([2, 2]), 1);
        assert_eq!(y.shape(), [2, o, 3, 3]);
        y.sum_all().backward();
        assert_eq!(w.grad().unwrap().shape(), [o, c, 2, 2]);
        assert_eq!(x.grad().unwrap().shape(), [2, c, 4, 4]);
    }
    let win = Window2d::new([2, 2]).dilation(2).padding(1);
    let x = Tensor::<f64>::ones(&[1, 1, 1, 1]);
    let message = std::panic::catch_unwind(|| x.max_pool2d(&win)).unwrap_err();
    let message = message.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("max_pool2d") && message.contains("only padding"), "{message}");
}
