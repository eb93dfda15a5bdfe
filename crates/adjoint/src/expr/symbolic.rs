//! Symbolic differentiation of expressions, to set beside automatic differentiation: the
//! derivative is a new expression, built by the textbook rules without sharing, so it can
//! swell far beyond the original (try f(f(f(w)))). Each function's rule is its declared
//! derivative (the same one the engine runs on tensors), so the two can never disagree. A
//! simplifier folds constants and the identities x + 0, x·1, x·0, x^1, −(−x).
//!
//! Swell can be exponential in the depth, so building is bounded:
//! [`Expr::derivative_within`] gives up once the result would exceed a number of nodes,
//! knowing the size before building anything.

use std::fmt;

use super::{Call, Expr};
use crate::ops::elementwise::Syntax;

/// The derivative would have more nodes than allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the symbolic derivative has more than {limit} nodes (expression swell)")]
pub struct Swell {
    /// The bound that was exceeded.
    pub limit: usize,
}

/// Placeholders for a function's arguments and output in its rule's template.
const ARGS: [&str; 2] = ["#0", "#1"];
const OUT: &str = "#y";

impl Call {
    /// The partial derivatives as templates over placeholders `#0`, `#1` (arguments) and
    /// `#y` (the output): small whatever the arguments are.
    fn partial_templates(&self) -> Vec<Expr> {
        let args: Vec<Expr> = ARGS[..self.args.len()].iter().map(|a| Expr::Var((*a).into())).collect();
        self.function.partials_expr(&args, &Expr::Var(OUT.into()), &self.params)
    }
}

impl Expr {
    /// ∂self/∂`var` by the textbook rules, unsimplified.
    ///
    /// # Panics
    /// If the derivative would exceed 10⁷ nodes (see [`Expr::derivative_within`]).
    pub fn derivative(&self, var: &str) -> Expr {
        self.derivative_within(var, 10_000_000).unwrap_or_else(|e| panic!("derivative: {e}"))
    }

    /// ∂self/∂`var`, or [`Swell`] if it would have more than `limit` nodes. The work done is
    /// bounded by the limit, whatever the expression.
    pub fn derivative_within(&self, var: &str, limit: usize) -> Result<Expr, Swell> {
        let mut budget = limit;
        self.derive(var, &mut budget).map_err(|()| Swell { limit })
    }

    fn derive(&self, var: &str, budget: &mut usize) -> Result<Expr, ()> {
        fn spend(budget: &mut usize, n: usize) -> Result<(), ()> {
            *budget = budget.checked_sub(n).ok_or(())?;
            Ok(())
        }
        match self {
            Expr::Number(_) => {
                spend(budget, 1)?;
                Ok(Expr::Number(0.0))
            }
            Expr::Var(v) => {
                spend(budget, 1)?;
                Ok(Expr::Number(if v == var { 1.0 } else { 0.0 }))
            }
            Expr::Call(c) => {
                let templates = c.partial_templates();
                let mut sum: Option<Expr> = None;
                for (k, arg) in c.args.iter().enumerate() {
                    let d = arg.derive(var, budget)?;
                    let template = &templates[k];
                    // Chain rule: ∂f/∂argₖ · d argₖ; a partial of ±1 is the textbook (u ± v)′.
                    let term = match template {
                        Expr::Number(v) if *v == 1.0 => d,
                        Expr::Number(v) if *v == -1.0 => {
                            spend(budget, 1)?;
                            Expr::call(super::operator('-', true), vec![d], vec![])
                        }
                        _ => {
                            let size = substituted_size(template, &c.args, self);
                            spend(budget, size + 1)?;
                            let partial = substitute(template, &c.args, self);
                            // Written as the textbooks do: u′·v + u·v′ for operators, f′(u)·u′
                            // for functions.
                            let factors = match c.function.syntax() {
                                Syntax::Infix { .. } => vec![d, partial],
                                _ => vec![partial, d],
                            };
                            Expr::call(super::operator('*', false), factors, vec![])
                        }
                    };
                    sum = Some(match sum {
                        None => term,
                        Some(s) => {
                            spend(budget, 1)?;
                            Expr::call(super::operator('+', false), vec![s, term], vec![])
                        }
                    });
                }
                Ok(sum.unwrap_or(Expr::Number(0.0)))
            }
        }
    }

    /// Folds constants and removes identity operations, bottom-up (linear in the size).
    pub fn simplify(&self) -> Expr {
        let Expr::Call(c) = self else { return self.clone() };
        let args: Vec<Expr> = c.args.iter().map(Expr::simplify).collect();
        if args.iter().all(|a| matches!(a, Expr::Number(_))) {
            let values: Vec<f64> = args.iter().map(|a| if let Expr::Number(v) = a { *v } else { 0.0 }).collect();
            return Expr::Number(c.function.eval_f64(&values, &c.params));
        }
        let is = |e: &Expr, v: f64| matches!(e, Expr::Number(x) if *x == v);
        let rebuilt = || Expr::call(c.function, args.clone(), c.params.clone());
        match (c.function.name(), args.as_slice()) {
            ("add", [a, b]) if is(a, 0.0) => b.clone(),
            ("add" | "sub", [a, b]) if is(b, 0.0) => a.clone(),
            ("sub", [a, b]) if is(a, 0.0) => Expr::call(super::operator('-', true), vec![b.clone()], vec![]).simplify(),
            ("mul", [a, b]) if is(a, 0.0) || is(b, 0.0) => Expr::Number(0.0),
            ("mul", [a, b]) if is(a, 1.0) => b.clone(),
            ("mul" | "div", [a, b]) if is(b, 1.0) => a.clone(),
            ("div", [a, _]) if is(a, 0.0) => Expr::Number(0.0),
            ("pow", [a, b]) if is(b, 1.0) => a.clone(),
            ("pow", [_, b]) if is(b, 0.0) => Expr::Number(1.0),
            ("powi" | "powf", [a]) if c.params.first() == Some(&1.0) => a.clone(),
            ("neg", [Expr::Call(inner)]) if inner.function.name() == "neg" => inner.args[0].clone(),
            _ => rebuilt(),
        }
    }

    /// The number of nodes of the expression tree (shared subexpressions counted each time).
    pub fn size(&self) -> usize {
        let mut n = 0;
        let mut stack = vec![self];
        while let Some(e) = stack.pop() {
            n += 1;
            stack.extend(e.args());
        }
        n
    }
}

/// The size of `template` with placeholders replaced by `args` and the output by `out`.
fn substituted_size(template: &Expr, args: &[Expr], out: &Expr) -> usize {
    match template {
        Expr::Var(v) if v == OUT => out.size(),
        Expr::Var(v) => ARGS.iter().position(|a| a == v).map_or(1, |k| args[k].size()),
        Expr::Number(_) => 1,
        Expr::Call(c) => 1 + c.args.iter().map(|a| substituted_size(a, args, out)).sum::<usize>(),
    }
}

/// `template` with placeholders replaced by `args` and the output by `out`.
fn substitute(template: &Expr, args: &[Expr], out: &Expr) -> Expr {
    match template {
        Expr::Var(v) if v == OUT => out.clone(),
        Expr::Var(v) => ARGS.iter().position(|a| a == v).map_or_else(|| template.clone(), |k| args[k].clone()),
        Expr::Number(_) => template.clone(),
        Expr::Call(c) => {
            Expr::call(c.function, c.args.iter().map(|a| substitute(a, args, out)).collect(), c.params.clone())
        }
    }
}

/// Binding strength when printed: 1 for + −, 2 for × ÷, 3 for unary minus, 4 for ^, 5 for
/// atoms and calls.
pub fn precedence(e: &Expr) -> u8 {
    match e {
        Expr::Call(c) => match c.function.syntax() {
            Syntax::Infix { precedence, .. } => precedence,
            Syntax::Prefix { .. } => 3,
            Syntax::Call => 5,
        },
        Expr::Number(v) if *v < 0.0 => 3,
        _ => 5,
    }
}

impl fmt::Display for Expr {
    /// Prints with the fewest parentheses the grammar needs; the output parses back to an
    /// equal expression.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let wrap = |e: &Expr, min: u8, f: &mut fmt::Formatter<'_>| -> fmt::Result {
            if precedence(e) < min {
                write!(f, "({e})")
            } else {
                write!(f, "{e}")
            }
        };
        match self {
            Expr::Number(v) => {
                if *v < 0.0 {
                    write!(f, "({})", super::fmt_num(*v))
                } else {
                    write!(f, "{}", super::fmt_num(*v))
                }
            }
            Expr::Var(v) => write!(f, "{v}"),
            Expr::Call(c) => match c.function.syntax() {
                Syntax::Prefix { symbol } => {
                    write!(f, "{symbol}")?;
                    wrap(&c.args[0], 4, f)
                }
                Syntax::Infix { symbol, precedence: p, right_assoc } => {
                    // Left-associative: the right operand needs parentheses at equal
                    // precedence; right-associative (^, tighter than unary minus): the left.
                    let (left, right) = if right_assoc { (p + 1, 3) } else { (p, p + 1) };
                    let right = if !right_assoc && matches!(symbol, '+' | '*') { p } else { right };
                    wrap(&c.args[0], left, f)?;
                    if right_assoc {
                        write!(f, "{symbol}")?;
                    } else {
                        write!(f, " {symbol} ")?;
                    }
                    wrap(&c.args[1], right, f)
                }
                Syntax::Call => {
                    write!(f, "{}(", c.function.name())?;
                    let params = c.params.iter().map(|p| Expr::Number(*p));
                    for (i, a) in c.args.iter().cloned().chain(params).enumerate() {
                        if i > 0 {
                            write!(f, ", ")?;
                        }
                        write!(f, "{a}")?;
                    }
                    write!(f, ")")
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(pairs: &[(&str, f64)]) -> std::collections::HashMap<String, f64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn symbolic_derivatives_match_automatic_ones() {
        for src in [
            "(x*y + sin(x) + 4) * (3*y^2 + 6)",
            "x^y / (1 + exp(-x))",
            "tanh(x*y) - sqrt(x) * log(y)",
            "max(x, y) * abs(x - 3)",
        ] {
            let e = Expr::parse(src).unwrap();
            for var in ["x", "y"] {
                let d = e.derivative(var);
                let vars = at(&[("x", 2.0), ("y", 1.5)]);
                let h = 1e-6;
                let shifted = |dv: f64| {
                    let mut v = vars.clone();
                    *v.get_mut(var).unwrap() += dv;
                    e.eval_f64(&v).unwrap()
                };
                let fd = (shifted(h) - shifted(-h)) / (2.0 * h);
                let (raw, simple) = (d.eval_f64(&vars).unwrap(), d.simplify().eval_f64(&vars).unwrap());
                assert!((raw - fd).abs() < 1e-6 * (1.0 + fd.abs()), "{src} d/d{var}: {raw} vs {fd}");
                assert!((simple - raw).abs() < 1e-12 * (1.0 + raw.abs()));
                assert!(d.simplify().size() <= d.size());
            }
        }
    }

    #[test]
    fn display_round_trips_through_the_parser() {
        for src in ["-x^2", "2^3^2", "(a - b) - (c - d)", "a / (b * c)", "-(x + 1) * sin(-y)", "x^(y^2)", "(x^y)^2"] {
            let e = Expr::parse(src).unwrap();
            let back = Expr::parse(&e.to_string()).unwrap();
            assert_eq!(e, back, "{src} printed as {e}");
        }
    }

    #[test]
    fn nested_functions_swell() {
        // f(w) = w·sin(w); f(f(f(w))) has a derivative many times its own size.
        let f3 = Expr::parse("(w*sin(w))*sin(w*sin(w))*sin((w*sin(w))*sin(w*sin(w)))").unwrap();
        let d = f3.derivative("w");
        assert!(d.size() > 4 * f3.size(), "{} vs {}", d.size(), f3.size());
    }
}
