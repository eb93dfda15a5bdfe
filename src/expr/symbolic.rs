//! Symbolic differentiation of expressions, to set beside automatic differentiation: the
//! derivative is a new expression, built by the textbook rules without sharing, so it can
//! swell far beyond the original (try f(f(f(w)))). A simplifier folds constants and the
//! identities x + 0, x·1, x·0, x^1, −(−x).

use std::fmt;

use super::{BinOp, Expr, Func};

fn num(v: f64) -> Expr {
    Expr::Number(v)
}
fn bin(op: BinOp, a: Expr, b: Expr) -> Expr {
    Expr::Binary(op, Box::new(a), Box::new(b))
}
fn call(f: Func, a: Expr) -> Expr {
    Expr::Call(f, vec![a])
}

impl Expr {
    /// ∂self/∂`var` by the textbook rules, unsimplified.
    pub fn derivative(&self, var: &str) -> Expr {
        use BinOp::*;
        match self {
            Expr::Number(_) => num(0.0),
            Expr::Var(v) => num(if v == var { 1.0 } else { 0.0 }),
            Expr::Neg(a) => Expr::Neg(Box::new(a.derivative(var))),
            Expr::Binary(op, a, b) => {
                let (a, b) = (a.as_ref().clone(), b.as_ref().clone());
                let (da, db) = (a.derivative(var), b.derivative(var));
                match op {
                    Add => bin(Add, da, db),
                    Sub => bin(Sub, da, db),
                    Mul => bin(Add, bin(Mul, da, b), bin(Mul, a, db)),
                    Div => bin(Div, bin(Sub, bin(Mul, da, b.clone()), bin(Mul, a, db)), bin(Pow, b, num(2.0))),
                    Pow => match b {
                        Expr::Number(c) => bin(Mul, bin(Mul, num(c), bin(Pow, a, num(c - 1.0))), da),
                        _ => bin(
                            Mul,
                            bin(Pow, a.clone(), b.clone()),
                            bin(Add, bin(Mul, db, call(Func::Log, a.clone())), bin(Div, bin(Mul, b, da), a)),
                        ),
                    },
                }
            }
            Expr::Call(f, args) => {
                let a = args[0].clone();
                let da = a.derivative(var);
                let outer = match f {
                    Func::Sin => call(Func::Cos, a),
                    Func::Cos => Expr::Neg(Box::new(call(Func::Sin, a))),
                    Func::Tan => bin(Add, num(1.0), bin(Pow, call(Func::Tan, a), num(2.0))),
                    Func::Exp => call(Func::Exp, a),
                    Func::Log => bin(Div, num(1.0), a),
                    Func::Sqrt => bin(Div, num(1.0), bin(Mul, num(2.0), call(Func::Sqrt, a))),
                    Func::Tanh => bin(Sub, num(1.0), bin(Pow, call(Func::Tanh, a), num(2.0))),
                    Func::Sigmoid => {
                        bin(Mul, call(Func::Sigmoid, a.clone()), bin(Sub, num(1.0), call(Func::Sigmoid, a)))
                    }
                    Func::Relu => call(Func::Step, a),
                    Func::Abs => call(Func::Sign, a),
                    Func::Sqr => bin(Mul, num(2.0), a),
                    Func::Step | Func::Sign => num(0.0),
                    Func::Max | Func::Min => {
                        let b = args[1].clone();
                        let db = b.derivative(var);
                        // The gradient goes to the selected argument (ties to the first).
                        let (first, second) =
                            if *f == Func::Max { (a.clone(), b.clone()) } else { (b.clone(), a.clone()) };
                        let pick_a = bin(Sub, num(1.0), call(Func::Step, bin(Sub, second, first)));
                        let pick_b = bin(Sub, num(1.0), pick_a.clone());
                        return bin(Add, bin(Mul, pick_a, da), bin(Mul, pick_b, db));
                    }
                };
                bin(BinOp::Mul, outer, da)
            }
        }
    }

    /// Folds constants and removes identity operations, bottom-up.
    pub fn simplify(&self) -> Expr {
        use BinOp::*;
        match self {
            Expr::Number(_) | Expr::Var(_) => self.clone(),
            Expr::Neg(a) => match a.simplify() {
                Expr::Number(v) => num(-v),
                Expr::Neg(inner) => *inner,
                a => Expr::Neg(Box::new(a)),
            },
            Expr::Call(f, args) => {
                let args: Vec<Expr> = args.iter().map(Expr::simplify).collect();
                let folded = Expr::Call(*f, args.clone());
                if args.iter().all(|a| matches!(a, Expr::Number(_))) {
                    if let Ok(v) = folded.eval_f64(&Default::default()) {
                        return num(v);
                    }
                }
                folded
            }
            Expr::Binary(op, a, b) => {
                let (a, b) = (a.simplify(), b.simplify());
                if let (Expr::Number(x), Expr::Number(y)) = (&a, &b) {
                    return num(match op {
                        Add => x + y,
                        Sub => x - y,
                        Mul => x * y,
                        Div => x / y,
                        Pow => x.powf(*y),
                    });
                }
                let is = |e: &Expr, v: f64| matches!(e, Expr::Number(x) if *x == v);
                match op {
                    Add if is(&a, 0.0) => b,
                    Add | Sub if is(&b, 0.0) => a,
                    Sub if is(&a, 0.0) => Expr::Neg(Box::new(b)).simplify(),
                    Mul if is(&a, 0.0) || is(&b, 0.0) => num(0.0),
                    Mul if is(&a, 1.0) => b,
                    Mul | Div if is(&b, 1.0) => a,
                    Div if is(&a, 0.0) => num(0.0),
                    Pow if is(&b, 1.0) => a,
                    Pow if is(&b, 0.0) => num(1.0),
                    _ => bin(*op, a, b),
                }
            }
        }
    }

    /// The number of nodes of the expression tree (shared subexpressions counted each time).
    pub fn size(&self) -> usize {
        match self {
            Expr::Number(_) | Expr::Var(_) => 1,
            Expr::Neg(a) => 1 + a.size(),
            Expr::Binary(_, a, b) => 1 + a.size() + b.size(),
            Expr::Call(_, args) => 1 + args.iter().map(Expr::size).sum::<usize>(),
        }
    }
}

fn precedence(e: &Expr) -> u8 {
    match e {
        Expr::Binary(BinOp::Add | BinOp::Sub, ..) => 1,
        Expr::Binary(BinOp::Mul | BinOp::Div, ..) => 2,
        Expr::Neg(_) => 3,
        Expr::Binary(BinOp::Pow, ..) => 4,
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
                    write!(f, "({})", super::trace::fmt_num(*v))
                } else {
                    write!(f, "{}", super::trace::fmt_num(*v))
                }
            }
            Expr::Var(v) => write!(f, "{v}"),
            Expr::Neg(a) => {
                write!(f, "-")?;
                wrap(a, 4, f)
            }
            Expr::Binary(op, a, b) => {
                let p = precedence(self);
                match op {
                    // Left-associative: the right operand needs parentheses at equal precedence.
                    BinOp::Add | BinOp::Mul => {
                        wrap(a, p, f)?;
                        write!(f, " {op} ")?;
                        wrap(b, p, f)
                    }
                    BinOp::Sub | BinOp::Div => {
                        wrap(a, p, f)?;
                        write!(f, " {op} ")?;
                        wrap(b, p + 1, f)
                    }
                    // Right-associative and tighter than unary minus.
                    BinOp::Pow => {
                        wrap(a, 5, f)?;
                        write!(f, "^")?;
                        wrap(b, 3, f)
                    }
                }
            }
            Expr::Call(func, args) => {
                write!(f, "{}(", func.name())?;
                for (i, a) in args.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{a}")?;
                }
                write!(f, ")")
            }
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
