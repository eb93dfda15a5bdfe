//! The teaching tools on every elementwise function and in isolation from the caller's graph.

use std::collections::HashMap;

use adjoint::expr::Expr;
use adjoint::ops::elementwise::Domain;
use adjoint::ops::{functions, Function};
use adjoint::Tensor;
use adjoint_explain::trace::{Trace, TraceOptions};

type T = Tensor<f64>;

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + a.abs().max(b.abs()))
}

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

#[test]
fn every_function_has_its_own_trace_formula_agreeing_with_ad() {
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
            let trace = Trace::record(
                &expr,
                &at,
                &TraceOptions { forward_wrt: Some("x".into()), reverse: true, degrees: false },
            )
            .unwrap();
            let last = trace.steps.len() - 1;
            assert_eq!(trace.steps[last].op, f.name(), "{src}: the trace records the function itself");
            let values: HashMap<String, f64> = trace.steps.iter().map(|s| (s.name.clone(), s.value)).collect();
            for k in 0..f.arity() {
                let formula = trace.partial_expr(last, k).unwrap_or_else(|| panic!("{src}: no trace formula"));
                let from_formula = formula.eval_f64(&values).unwrap();
                let from_ad = trace.steps[last].partials[k].unwrap_or(0.0);
                assert!(
                    close(from_formula, from_ad, 1e-12),
                    "{src} at {at:?}: trace formula {formula} = {from_formula}, AD {from_ad}"
                );
            }
            assert!(!trace.tangent_formula(last).contains('∂'), "{src}: generic trace formula");
        }
    }
}

/// A graph the caller is building, with a gradient already accumulated on its leaf.
struct Caller {
    x: T,
    loss: T,
}

impl Caller {
    fn new() -> Self {
        let x = Tensor::from_vec(vec![0.3, -0.7], &[2]).requires_grad();
        x.sin().sum_all().backward();
        let loss = (&x * &x).sum_all();
        Caller { x, loss }
    }

    /// The graph still differentiates, and the earlier gradient was neither lost nor changed.
    fn check(self) {
        let before = self.x.grad().unwrap().to_vec();
        assert!(close(before[0], 0.3f64.cos(), 1e-15) && close(before[1], 0.7f64.cos(), 1e-15), "{before:?}");
        self.loss.backward();
        let after = self.x.grad().unwrap().to_vec();
        assert!(close(after[0], 0.3f64.cos() + 0.6, 1e-15) && close(after[1], 0.7f64.cos() - 1.4, 1e-15));
    }
}

#[test]
fn backprop_explain_leaves_the_callers_graph_as_it_was() {
    let c = Caller::new();
    adjoint_explain::backprop::explain(&[3, 4, 2], adjoint::nn::Activation::TANH, 2, 1);
    c.check();
}

fn lecture_expr() -> (adjoint::expr::Expr, Vec<(String, f64)>) {
    let e = adjoint::expr::Expr::parse("sin(x) * y").unwrap();
    (e, vec![("x".to_string(), 1.0), ("y".to_string(), 2.0)])
}

#[test]
fn tracing_leaves_the_callers_graph_as_it_was() {
    use adjoint_explain::trace::{Trace, TraceOptions};
    let c = Caller::new();
    let (e, at) = lecture_expr();
    Trace::record(&e, &at, &TraceOptions { forward_wrt: Some("x".into()), reverse: true, degrees: false }).unwrap();
    c.check();
}

#[test]
fn compare_leaves_the_callers_graph_as_it_was() {
    let c = Caller::new();
    let (e, at) = lecture_expr();
    adjoint_explain::compare::compare(&e, &at).unwrap();
    c.check();
}
