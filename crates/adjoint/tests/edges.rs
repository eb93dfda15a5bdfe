//! Derivatives at edge values (0, ±∞, NaN, ties, bounds, singular matrices) against PyTorch
//! float64: the numbers in `fixtures/torch_edges.json` were written by
//! `scripts/torch_edge_values.py` (PyTorch 2.15). Where PyTorch itself gives NaN for a value
//! that has a finite closed form (the Hessian of det at the 2×2 zero matrix), the closed form
//! is the reference.

use adjoint::autodiff::gradcheck::{check_grads, CheckOptions};
use adjoint::autodiff::transforms::{grad, hvp, jvp};
use adjoint::ops::Window2d;
use adjoint::Tensor;
use serde_json::Value;

type T = Tensor<f64>;

fn fixture() -> Value {
    let text = include_str!("fixtures/torch_edges.json");
    serde_json::from_str(text).expect("the fixture is JSON")
}

fn number(v: &Value) -> f64 {
    match v {
        Value::String(s) if s == "nan" => f64::NAN,
        Value::String(s) if s == "inf" => f64::INFINITY,
        Value::String(s) if s == "-inf" => f64::NEG_INFINITY,
        other => other.as_f64().expect("a number"),
    }
}

fn numbers(v: &Value) -> Vec<f64> {
    v.as_array().expect("an array").iter().map(number).collect()
}

/// Equal as PyTorch's numbers are: NaN where it is NaN, the same infinity, else within 1e-9
/// relative.
fn same(ours: f64, theirs: f64) -> bool {
    if theirs.is_nan() {
        return ours.is_nan();
    }
    if theirs.is_infinite() {
        return ours == theirs;
    }
    (ours - theirs).abs() <= 1e-9 * theirs.abs().max(1.0)
}

fn assert_all_same(what: &str, ours: &[f64], theirs: &[f64]) {
    assert_eq!(ours.len(), theirs.len(), "{what}: lengths");
    for (k, (a, b)) in ours.iter().zip(theirs).enumerate() {
        assert!(same(*a, *b), "{what}[{k}]: adjoint {a}, PyTorch {b}\n  adjoint {ours:?}\n  PyTorch {theirs:?}");
    }
}

/// Value and gradients of a function of scalars, by reverse mode; and the same gradients by
/// forward mode, which must agree.
fn scalar_case(f: &dyn Fn(&[T]) -> T, inputs: &[f64]) -> (f64, Vec<f64>, Vec<f64>) {
    let xs: Vec<T> = inputs.iter().map(|&v| Tensor::var(v)).collect();
    let y = f(&xs);
    let refs: Vec<&T> = xs.iter().collect();
    let reverse: Vec<f64> = adjoint::gradients_or_zeros(&y, &refs, None, false).iter().map(|g| g.item()).collect();
    let forward: Vec<f64> = (0..inputs.len())
        .map(|k| {
            let xs: Vec<T> = inputs.iter().map(|&v| Tensor::var(v)).collect();
            let y = f(&xs);
            adjoint::jvp_sweep(&[&y], &[(&xs[k], Tensor::scalar(1.0))], false).remove(0).item()
        })
        .collect();
    (y.item(), reverse, forward)
}

fn check_scalar_cases(name: &str, f: &dyn Fn(&[T]) -> T) {
    let data = fixture();
    for case in data["cases"][name].as_array().expect("cases") {
        let inputs = numbers(&case["inputs"]);
        let (value, reverse, forward) = scalar_case(f, &inputs);
        let what = format!("{name}{inputs:?}");
        assert!(same(value, number(&case["value"])), "{what}: value {value}, PyTorch {}", case["value"]);
        assert_all_same(&format!("{what} reverse"), &reverse, &numbers(&case["grads"]));
        assert_all_same(&format!("{what} forward"), &forward, &numbers(&case["grads"]));
    }
}

#[test]
fn pow_at_zero_and_its_exponent_follow_pytorch() {
    check_scalar_cases("pow", &|x| x[0].pow(&x[1]));
}

#[test]
fn maximum_and_minimum_with_nan_ties_and_infinities_follow_pytorch() {
    check_scalar_cases("maximum", &|x| x[0].maximum(&x[1]));
    check_scalar_cases("minimum", &|x| x[0].minimum(&x[1]));
}

#[test]
fn clamp_at_its_bounds_follows_pytorch() {
    check_scalar_cases("clamp", &|x| x[0].clamp(-1.0, 1.0));
}

#[test]
fn pow_stays_differentiable_twice_away_from_the_edges() {
    // The masks that fix the edges must not change the second derivatives elsewhere.
    let options = CheckOptions::default();
    check_grads(|v| vec![v[0].pow(&v[1])], &[Tensor::scalar(1.7), Tensor::scalar(2.3)], options).unwrap();
    check_grads(|v| vec![v[0].pow(&v[1])], &[Tensor::scalar(0.6), Tensor::scalar(-1.4)], options).unwrap();
    // d²(x^y)/dy² at x = 0, y = 2 is 0 (PyTorch: 0).
    let d2 = grad(grad(|y: &T| Tensor::scalar(0.0).pow(y)))(&Tensor::scalar(2.0));
    assert_eq!(d2.item(), 0.0);
}

fn matrix(values: &[f64], n: usize) -> T {
    Tensor::from_vec(values.to_vec(), &[n, values.len() / n])
}

#[test]
fn cholesky_forward_and_reverse_rules_agree_in_any_direction() {
    let data = fixture();
    let c = &data["cases"]["cholesky"];
    let (a, w, v) = (matrix(&numbers(&c["a"]), 3), matrix(&numbers(&c["w"]), 3), matrix(&numbers(&c["v"]), 3));
    let wf = w.clone();
    let f = move |x: &T| (&x.cholesky() * &wf).sum_all();
    assert_all_same("cholesky grad", &grad(&f)(&a).to_vec(), &numbers(&c["grad"]));
    // Forward mode agrees with reverse mode: ⟨∇f, V⟩ for a non-symmetric V, as in JAX.
    // (PyTorch's own forward mode reads only V's lower triangle here and disagrees with its
    // reverse mode: 0.703 against ⟨∇f, V⟩ = 0.155.)
    let (_, tangents) = jvp(|x: &[T]| vec![f(&x[0])], std::slice::from_ref(&a), std::slice::from_ref(&v));
    let inner: f64 = numbers(&c["grad"]).iter().zip(v.to_vec()).map(|(g, v)| g * v).sum();
    assert!(same(tangents[0].item(), inner), "jvp {} vs ⟨∇f, V⟩ = {inner}", tangents[0].item());
    // Forward over reverse (hvp) and reverse over reverse (grad of ⟨grad f, v⟩) both give
    // PyTorch's numbers.
    assert_all_same("cholesky hvp (forward over reverse)", &hvp(&f, &a, &v).to_vec(), &numbers(&c["hvp"]));
    let vf = v.clone();
    let inner = move |x: &T| (&grad(&f)(x) * &vf).sum_all();
    assert_all_same("cholesky hvp (reverse over reverse)", &grad(inner)(&a).to_vec(), &numbers(&c["hvp"]));
}

#[test]
fn det_of_singular_matrices_has_pytorchs_value_gradient_and_hessian() {
    let data = fixture();
    for case in data["cases"]["det"].as_array().expect("cases") {
        let n = case["n"].as_u64().unwrap() as usize;
        let (a, v) = (matrix(&numbers(&case["a"]), n), matrix(&numbers(&case["v"]), n));
        let what = format!("det of {:?}", a.to_vec());
        let value = a.det().item();
        let theirs = number(&case["value"]);
        assert!((value - theirs).abs() < 1e-12, "{what}: {value} vs {theirs}");
        let det = |x: &T| x.det();
        let g = grad(det)(&a).to_vec();
        for (k, (x, y)) in g.iter().zip(numbers(&case["grad"])).enumerate() {
            assert!((x - y).abs() < 1e-9, "{what}: gradient [{k}] {x} vs {y}");
        }
        // The Hessian-vector product, forward over reverse and reverse over reverse.
        let expected = numbers(&case["hvp"]);
        let expected: Vec<f64> = if expected.iter().any(|e| e.is_nan()) {
            // PyTorch gives NaN at the 2×2 zero matrix; det is quadratic there, so the exact
            // Hessian-vector product is cof(V) = [[v₁₁, −v₁₀], [−v₀₁, v₀₀]].
            let w = v.to_vec();
            vec![w[3], -w[2], -w[1], w[0]]
        } else {
            expected
        };
        let forward_over_reverse = hvp(det, &a, &v).to_vec();
        let vf = v.clone();
        let reverse_over_reverse = grad(move |x: &T| (&grad(det)(x) * &vf).sum_all())(&a).to_vec();
        for (label, ours) in
            [("forward over reverse", forward_over_reverse), ("reverse over reverse", reverse_over_reverse)]
        {
            for (k, (x, y)) in ours.iter().zip(&expected).enumerate() {
                assert!((x - y).abs() < 1e-9, "{what}: hvp {label} [{k}] {x} vs {y}; all {ours:?}");
            }
        }
    }
}

#[test]
fn det_and_cofactor_pass_check_grads_at_order_2_near_and_at_singular_matrices() {
    let options = CheckOptions::default();
    let invertible = matrix(&[2.0, 0.5, -1.0, 0.3, 1.5, 0.2, -0.7, 0.4, 3.0], 3);
    check_grads(|v| vec![v[0].det()], std::slice::from_ref(&invertible), options).unwrap();
    check_grads(|v| vec![v[0].cofactor()], std::slice::from_ref(&invertible), options).unwrap();
    // At a rank-2 matrix: det's derivatives to order 2 (cof's first order) are exact there.
    let rank2 = matrix(&[1.0, 2.0, 3.0, 2.0, 4.0, 6.0, 1.0, 0.0, 1.0], 3);
    check_grads(|v| vec![v[0].det()], std::slice::from_ref(&rank2), options).unwrap();
    check_grads(|v| vec![v[0].cofactor()], &[rank2], CheckOptions { order: 1, ..options }).unwrap();
    // The cofactor matrix is det·A⁻ᵀ where A is invertible.
    let c = invertible.cofactor().to_vec();
    let d = invertible.det().item();
    let expected = invertible.inverse().transpose().to_vec();
    for (x, e) in c.iter().zip(&expected) {
        assert!((x - d * e).abs() < 1e-12, "{x} vs {}", d * e);
    }
}

#[test]
fn max_pool_sends_a_windows_gradient_to_its_last_nan_as_pytorch() {
    let data = fixture();
    let c = &data["cases"]["max_pool2d"];
    let x = Tensor::from_vec(numbers(&c["x"]), &[1, 1, 4, 4]).requires_grad();
    let y = x.max_pool2d(&Window2d::new([2, 2]).stride(2));
    assert_all_same("max_pool2d value", &y.to_vec(), &numbers(&c["value"]));
    y.sum_all().backward();
    assert_all_same("max_pool2d grad", &x.grad().unwrap().to_vec(), &numbers(&c["grad"]));
    // The same with padding (the general path).
    let x = Tensor::from_vec(numbers(&c["x"]), &[1, 1, 4, 4]).requires_grad();
    let y = x.max_pool2d(&Window2d::new([2, 2]).stride(2).padding(1));
    y.sum_all().backward();
    let g = x.grad().unwrap().to_vec();
    // Windows with padding 1: rows {0}, {1,2}, {3} × cols {0}, {1,2}, {3}. The window of rows
    // 1–2 and columns 1–2 holds NaN at (2, 2) only; the one of row 0, column 0 NaN at (0, 0).
    assert_eq!(g[0], 1.0, "{g:?}");
    assert_eq!(g[2 * 4 + 2], 1.0, "{g:?}");
    // Rows 1–2, column 0: NaN at (1, 0); the last NaN of that window.
    assert_eq!(g[4], 1.0, "{g:?}");
    assert_eq!(g[2 * 4], 0.0, "{g:?}");
}
