//! One declaration per elementwise function: everything derived from it is checked for every
//! entry of the registry, so a new function cannot be half-wired. For each function:
//! reachable from the expression language (by name, with its parameters), a symbolic
//! derivative that agrees with AD, a fused first-order kernel that agrees with the composed
//! rule in f32 and f64, and, for activations, a name `--activation` accepts. (Its trace
//! formula is checked in `adjoint-explain`'s tests.)

use std::collections::HashMap;

use adjoint::autodiff::gradients;
use adjoint::expr::Expr;
use adjoint::nn::Activation;
use adjoint::ops::elementwise::{ActivationFamily, Domain};
use adjoint::ops::{functions, Function};
use adjoint::{BackwardOptions, Tensor};

/// A point in the function's domain, away from kinks; `k` picks the argument.
fn point(f: &dyn Function, k: usize, salt: usize) -> f64 {
    let base = [0.37, -0.81, 1.23, -1.6, 0.66, 2.1, -0.45, 0.9];
    let mut x: f64 = base[(salt * 3 + k * 5) % base.len()];
    match f.domain() {
        Domain::Positive => x = x.abs() + 0.3,
        Domain::Kinked(points) => {
            if f.arity() == 2 && k == 1 {
                x += 0.4;
            }
            if points.iter().any(|p| (x - p).abs() < 0.2) {
                x += 0.5;
            }
        }
        Domain::Real => {}
    }
    x
}

fn source(f: &dyn Function) -> String {
    let args: Vec<String> = ["x", "y"][..f.arity()]
        .iter()
        .map(|s| s.to_string())
        .chain(f.params().iter().map(|p| format!("{}", p.default)))
        .collect();
    format!("{}({})", f.name(), args.join(", "))
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + a.abs().max(b.abs()))
}

#[test]
fn every_function_is_reachable_and_differentiated_symbolically() {
    assert!(functions().len() >= 30, "the registry lists every elementwise function");
    for f in functions() {
        let f = *f;
        let src = source(f);
        let expr = Expr::parse(&src).unwrap_or_else(|e| panic!("{src}: {e}"));
        assert_eq!(expr.function_name(), Some(f.name()), "{src} parses to the function itself");
        // Round trip through the printer.
        assert_eq!(Expr::parse(&expr.to_string()).unwrap(), expr, "{src} prints as {expr}");
        for salt in 0..3 {
            let at: Vec<(String, f64)> =
                ["x", "y"][..f.arity()].iter().enumerate().map(|(k, n)| (n.to_string(), point(f, k, salt))).collect();
            // The symbolic derivative of the expression agrees with reverse mode.
            let point: HashMap<String, f64> = at.iter().cloned().collect();
            let leaves: Vec<Tensor<f64>> = at.iter().map(|(_, v)| Tensor::var(*v)).collect();
            let vars: HashMap<String, Tensor<f64>> =
                at.iter().map(|(n, _)| n.clone()).zip(leaves.iter().cloned()).collect();
            let out = expr.eval(&vars).unwrap();
            let refs: Vec<&Tensor<f64>> = leaves.iter().collect();
            let ad = gradients(&out, &refs, None, false);
            for (k, (name, _)) in at.iter().enumerate() {
                let symbolic = expr.derivative(name).simplify().eval_f64(&point).unwrap();
                let reverse = ad[k].as_ref().map_or(0.0, |g| g.item());
                assert!(
                    close(symbolic, reverse, 1e-12),
                    "{src} d/d{name} at {at:?}: symbolic {symbolic}, AD {reverse}"
                );
            }
        }
    }
}

/// The VJP of a unary function on a vector, fused (nothing recorded) and composed (recorded,
/// as when differentiating again).
fn both_vjps<T: adjoint::Element>(f: &dyn Function, xs: &[f64], g: &[f64]) -> (Vec<T>, Vec<T>) {
    let lit = |v: &[f64]| Tensor::<T>::from_vec(v.iter().map(|&v| T::from_f64_lossy(v)).collect(), &[v.len()]);
    let params: Vec<f64> = f.params().iter().map(|p| p.default).collect();
    let x = lit(xs).requires_grad();
    let y = T::apply_function(f, &[&x], &params);
    let fused = adjoint::gradients_or_zeros(&y, &[&x], Some(lit(g)), false).remove(0);
    let composed = adjoint::gradients_or_zeros(&y, &[&x], Some(lit(g)), true).remove(0);
    assert!(!fused.is_tracked());
    (fused.to_vec(), composed.to_vec())
}

#[test]
fn fused_first_order_kernels_match_the_composed_rules_in_f32_and_f64() {
    for f in functions().iter().filter(|f| f.arity() == 1) {
        let xs: Vec<f64> = (0..7).map(|i| point(*f, 0, i)).collect();
        let g: Vec<f64> = (0..7).map(|i| 0.5 - 0.3 * i as f64).collect();
        let (a, b) = both_vjps::<f64>(*f, &xs, &g);
        for (p, q) in a.iter().zip(&b) {
            assert!(close(*p, *q, 1e-14), "{}: fused {p}, composed {q}", f.name());
        }
        let (a, b) = both_vjps::<f32>(*f, &xs, &g);
        for (p, q) in a.iter().zip(&b) {
            assert!(close(f64::from(*p), f64::from(*q), 1e-5), "{} f32: fused {p}, composed {q}", f.name());
        }
        // And against the derivative at numbers.
        for (i, &x) in xs.iter().enumerate() {
            let params: Vec<f64> = f.params().iter().map(|p| p.default).collect();
            let d = f.partials_f64(&[x], &params)[0];
            let fused = both_vjps::<f64>(*f, &xs, &g).0[i];
            assert!(close(fused, g[i] * d, 1e-14), "{} at {x}", f.name());
        }
    }
}

#[test]
fn every_activation_is_accepted_by_name_and_initialised_by_its_family() {
    let activations: Vec<&dyn Function> =
        functions().iter().copied().filter(|f| f.activation() != ActivationFamily::No).collect();
    let names: Vec<&str> = activations.iter().map(|f| f.name()).collect();
    for expected in ["tanh", "sigmoid", "relu", "leaky_relu", "elu", "softplus", "gelu", "silu"] {
        assert!(names.contains(&expected), "{expected} is an activation");
    }
    for f in activations {
        let cli_name = f.name().replace('_', "-");
        let a: Activation = cli_name.parse().unwrap_or_else(|e| panic!("{cli_name}: {e}"));
        assert_eq!(a.to_string().split(':').next(), Some(cli_name.as_str()));
        let expected = if f.activation() == ActivationFamily::Rectifier { "he" } else { "xavier" };
        assert!(a.default_init().to_string().starts_with(expected), "{cli_name}: {}", a.default_init());
        // Saved and read back as earlier versions wrote it.
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<Activation>(&json).unwrap(), a, "{json}");
        // And it runs in a network, with a gradient.
        let z = Tensor::<f64>::from_vec(vec![-0.7, 0.4], &[1, 2]).requires_grad();
        a.apply(&z).sum_all().backward_with(BackwardOptions::default());
        assert!(z.grad().is_some());
    }
    assert_eq!(serde_json::to_string(&Activation::leaky_relu(0.2)).unwrap(), r#"{"kind":"leaky_relu","alpha":0.2}"#);
    assert_eq!(serde_json::from_str::<Activation>(r#"{"kind":"tanh"}"#).unwrap(), Activation::TANH);
    assert!("leaky-relu:0.3".parse::<Activation>().is_ok());
    assert!("tanh:0.3".parse::<Activation>().is_err());
    assert!("swishy".parse::<Activation>().unwrap_err().to_string().contains("gelu"));
}
