//! Four ways to differentiate an expression, side by side, with what each cost: symbolic
//! differentiation (and its expression swell), finite differences (error against step size),
//! forward mode (one sweep per input) and reverse mode (one sweep). Costs are counted in
//! primitive evaluations; errors are against reverse mode's exact partials.

use std::collections::HashMap;

use adjoint::autodiff::gradients;
use adjoint::autodiff::jvp_sweep;
use adjoint::expr::{EvalError, Expr};
use adjoint::Tensor;

/// The most nodes a symbolic derivative is built with: beyond, the swell is reported and the
/// derivative not built (its size can grow exponentially with the depth; this keeps every
/// comparison within seconds).
pub const SYMBOLIC_LIMIT: usize = 200_000;

/// Symbolic differentiation of one variable.
#[derive(Debug, Clone)]
pub struct Symbolic {
    /// The derivative after simplification, printed (`None` if it swelled past
    /// [`SYMBOLIC_LIMIT`] nodes and was not built).
    pub expression: Option<String>,
    /// Nodes of the derivative as the rules build it (at least [`SYMBOLIC_LIMIT`] if it
    /// swelled past it).
    pub raw_size: usize,
    /// Nodes after simplification.
    pub simplified_size: usize,
    /// Its value at the point.
    pub value: f64,
}

/// One step size of the finite-difference table.
#[derive(Debug, Clone)]
pub struct FiniteRow {
    /// The step h.
    pub h: f64,
    /// |(f(x + h) − f(x))/h − exact| per variable.
    pub forward_error: Vec<f64>,
    /// |(f(x + h) − f(x − h))/2h − exact| per variable.
    pub central_error: Vec<f64>,
}

/// The full comparison.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// The variables, in the order given.
    pub variables: Vec<String>,
    /// f at the point.
    pub value: f64,
    /// Exact partials (reverse mode).
    pub exact: Vec<f64>,
    /// Nodes of f's expression tree.
    pub f_size: usize,
    /// Primitive operations recorded for one evaluation of f.
    pub primitives: usize,
    /// Symbolic differentiation per variable.
    pub symbolic: Vec<Symbolic>,
    /// Finite differences, h = 10⁻¹ … 10⁻¹².
    pub finite: Vec<FiniteRow>,
    /// Forward-mode partials, one sweep each.
    pub forward_mode: Vec<f64>,
    /// (method, primitive evaluations, largest error)
    pub costs: Vec<(String, usize, f64)>,
    /// Each method that disagrees with reverse mode beyond its tolerance, with the variable
    /// and both values: a sign of a kink or a singularity at the point, or of a wrong rule.
    pub disagreements: Vec<String>,
}

/// How far a method may be from reverse mode's partial `exact`, relative to max(1, |exact|):
/// symbolic and forward mode compute the same derivative in another order (rounding only);
/// central differences at their best step are good to about 1e-10 on smooth functions.
pub const TOLERANCE_EXACT: f64 = 1e-9;
/// See [`TOLERANCE_EXACT`]: the tolerance of the best central difference.
pub const TOLERANCE_FINITE: f64 = 1e-6;
/// See [`TOLERANCE_EXACT`]: the tolerance of the best forward difference (first-order
/// accurate: about 1e-8 on smooth functions; a one-sided kink such as |x| at 0 is off by
/// a whole slope).
pub const TOLERANCE_FORWARD: f64 = 1e-4;

/// The largest of `v`, NaN if any is NaN (a method that gave NaN has no error of 0).
fn largest(v: impl IntoIterator<Item = f64>) -> f64 {
    v.into_iter().fold(0.0, |m, x| if x.is_nan() || m.is_nan() { f64::NAN } else { m.max(x) })
}

/// The smallest of `v` that is a number; NaN if none is.
fn smallest(v: impl IntoIterator<Item = f64>) -> f64 {
    v.into_iter().filter(|x| !x.is_nan()).fold(f64::NAN, |m, x| if m.is_nan() { x } else { m.min(x) })
}

/// Differentiates `expr` at `at` four ways.
pub fn compare(expr: &Expr, at: &[(String, f64)]) -> Result<Comparison, EvalError> {
    let names: Vec<String> = at.iter().map(|(n, _)| n.clone()).collect();
    let point: HashMap<String, f64> = at.iter().cloned().collect();
    let n = names.len();

    // Reverse and forward mode on one recording.
    let leaves: Vec<Tensor<f64>> = at.iter().map(|(_, v)| Tensor::var(*v)).collect();
    let vars: HashMap<String, Tensor<f64>> = names.iter().cloned().zip(leaves.iter().cloned()).collect();
    let f = expr.eval(&vars)?;
    let primitives =
        adjoint::autodiff::introspect::graph(&[&f]).map_or(0, |g| g.iter().filter(|n| !n.is_leaf()).count());
    let refs: Vec<&Tensor<f64>> = leaves.iter().collect();
    let exact: Vec<f64> = if f.is_tracked() {
        gradients(&f, &refs, None, false).into_iter().map(|g| g.map_or(0.0, |g| g.item())).collect()
    } else {
        vec![0.0; n]
    };
    let forward_mode: Vec<f64> =
        leaves.iter().map(|x| jvp_sweep(&[&f], &[(x, Tensor::scalar(1.0))], false).remove(0).item()).collect();
    let value = f.item();

    let symbolic: Vec<Symbolic> = names
        .iter()
        .map(|v| match expr.derivative_within(v, SYMBOLIC_LIMIT) {
            Ok(raw) => {
                let simple = raw.simplify();
                Ok(Symbolic {
                    expression: Some(simple.to_string()),
                    raw_size: raw.size(),
                    simplified_size: simple.size(),
                    value: simple.eval_f64(&point)?,
                })
            }
            Err(_) => Ok(Symbolic { expression: None, raw_size: SYMBOLIC_LIMIT, simplified_size: 0, value: f64::NAN }),
        })
        .collect::<Result<_, EvalError>>()?;

    let eval_at = |var: usize, delta: f64| -> Result<f64, EvalError> {
        let mut p = point.clone();
        *p.get_mut(&names[var]).expect("a given variable") += delta;
        expr.eval_f64(&p)
    };
    let mut finite = Vec::new();
    for k in 1..=12 {
        let h = 10f64.powi(-k);
        let mut row = FiniteRow { h, forward_error: vec![], central_error: vec![] };
        for (i, e) in exact.iter().enumerate() {
            let (up, down) = (eval_at(i, h)?, eval_at(i, -h)?);
            row.forward_error.push(((up - value) / h - e).abs());
            row.central_error.push(((up - down) / (2.0 * h) - e).abs());
        }
        finite.push(row);
    }

    // Where both are the same infinity the error is 0, not NaN.
    let worst = |v: &[f64]| largest(v.iter().zip(&exact).map(|(a, e)| if a == e { 0.0 } else { (a - e).abs() }));
    let best_row =
        |pick: fn(&FiniteRow) -> &Vec<f64>| smallest(finite.iter().map(|r| largest(pick(r).iter().copied())));
    let symbolic_values: Vec<f64> = symbolic.iter().map(|s| s.value).collect();
    let costs = vec![
        (
            "symbolic (evaluate the derivative expressions)".into(),
            symbolic.iter().map(|s| s.simplified_size).sum(),
            worst(&symbolic_values),
        ),
        ("forward differences, best h".into(), (n + 1) * primitives, best_row(|r| &r.forward_error)),
        ("central differences, best h".into(), 2 * n * primitives, best_row(|r| &r.central_error)),
        (
            format!("forward mode ({n} sweep{})", if n == 1 { "" } else { "s" }),
            primitives + n * primitives,
            worst(&forward_mode),
        ),
        ("reverse mode (1 sweep)".into(), 2 * primitives, 0.0),
    ];
    let mut disagreements = Vec::new();
    for (i, (name, &e)) in names.iter().zip(&exact).enumerate() {
        // Relative to |∂f| beyond 1; an infinite or NaN partial can only be matched exactly.
        let scale = if e.is_finite() { e.abs().max(1.0) } else { 1.0 };
        let off = |value: f64, tolerance: f64| value != e && ((value - e).abs() > tolerance * scale || value.is_nan());
        if symbolic[i].expression.is_some() && off(symbolic[i].value, TOLERANCE_EXACT) {
            disagreements.push(format!("symbolic ∂f/∂{name} = {} but reverse mode gives {}", symbolic[i].value, e));
        }
        if off(forward_mode[i], TOLERANCE_EXACT) {
            disagreements.push(format!("forward mode ∂f/∂{name} = {} but reverse mode gives {}", forward_mode[i], e));
        }
        // NaN at every step counts as a disagreement.
        for (kind, tolerance, pick) in [
            (
                "central",
                TOLERANCE_FINITE,
                (|r: &FiniteRow, i: usize| r.central_error[i]) as fn(&FiniteRow, usize) -> f64,
            ),
            ("forward", TOLERANCE_FORWARD, |r: &FiniteRow, i: usize| r.forward_error[i]),
        ] {
            let best = smallest(finite.iter().map(|r| pick(r, i)));
            if best.is_nan() || best > tolerance * scale {
                disagreements.push(format!(
                    "{kind} differences for ∂f/∂{name} are at best {best:.3e} from reverse mode's {e} \
                     (a kink or singularity at the point, or a wrong rule)"
                ));
            }
        }
    }
    Ok(Comparison {
        disagreements,
        variables: names,
        value,
        exact,
        f_size: expr.size(),
        primitives,
        symbolic,
        finite,
        forward_mode,
        costs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_that_give_nan_or_miss_a_one_sided_kink_are_flagged_not_counted_as_exact() {
        // An outside tester's cases: NaN central differences were summed up as error 0, and
        // |x| at 0 (central differences agree, forward ones are off by 1) went unflagged.
        for (expr, at) in
            [("sqrt(x)", vec![("x", 0.0)]), ("x/y", vec![("x", 1.0), ("y", 0.0)]), ("abs(x)", vec![("x", 0.0)])]
        {
            let at: Vec<(String, f64)> = at.into_iter().map(|(n, v)| (n.to_string(), v)).collect();
            let c = compare(&Expr::parse(expr).unwrap(), &at).unwrap();
            assert!(!c.disagreements.is_empty(), "{expr}: nothing flagged");
            // |x|'s central differences are exact at 0; the others are NaN, never 0.
            let central = &c.costs[2];
            assert!(expr == "abs(x)" || central.2 != 0.0, "{expr}: central differences reported exact: {central:?}");
        }
        let c = compare(&Expr::parse("sin(x)*y").unwrap(), &[("x".into(), 1.0), ("y".into(), 2.0)]).unwrap();
        assert!(c.disagreements.is_empty(), "{:?}", c.disagreements);
        assert_eq!(c.costs[3].0, "forward mode (2 sweeps)");
    }

    #[test]
    fn the_error_table_is_right_for_x_squared() {
        // f = x² at 1: the forward difference is 2 + h (error h), the central one exact.
        let c = compare(&Expr::parse("x^2").unwrap(), &[("x".into(), 1.0)]).unwrap();
        assert_eq!(c.exact, vec![2.0]);
        assert_eq!(c.forward_mode, vec![2.0]);
        assert_eq!(c.symbolic[0].expression.as_deref(), Some("2 * x"));
        for row in &c.finite[..6] {
            assert!((row.forward_error[0] - row.h).abs() < 1e-9, "h {}: {}", row.h, row.forward_error[0]);
            assert!(row.central_error[0] < 1e-9);
        }
        // For tiny h, rounding takes over: the error grows again as h shrinks.
        assert!(c.finite[11].forward_error[0] > c.finite[7].forward_error[0]);
        assert_eq!(c.primitives, 1);
        assert_eq!(c.costs[4].1, 2);
        assert!(c.disagreements.is_empty(), "{:?}", c.disagreements);
    }

    #[test]
    fn a_kink_is_flagged() {
        // relu at 0: AD takes the derivative as 0, central differences give (h − 0)/2h = ½
        // and forward differences 1.
        let c = compare(&Expr::parse("relu(x)").unwrap(), &[("x".into(), 0.0)]).unwrap();
        assert_eq!(c.disagreements.len(), 2, "{:?}", c.disagreements);
        assert!(c.disagreements[0].contains("central differences for ∂f/∂x"), "{:?}", c.disagreements);
        assert!(c.disagreements[1].contains("forward differences for ∂f/∂x"), "{:?}", c.disagreements);
        let c = compare(&Expr::parse("sin(x)*y").unwrap(), &[("x".into(), 0.3), ("y".into(), 2.0)]).unwrap();
        assert!(c.disagreements.is_empty(), "{:?}", c.disagreements);
    }
}
