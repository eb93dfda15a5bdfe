//! Scalar expressions as typed on the command line: parsed into a syntax tree, then
//! evaluated into the same graph as Rust code, so every derivative machinery applies.
//!
//! Grammar (usual precedence; `^` is right-associative and binds tighter than unary minus,
//! so `-x^2` is −(x²) and `2^3^2` is 512; `* / + -` are left-associative):
//!
//! ```text
//! expr    = term (("+" | "-") term)*
//! term    = unary (("*" | "/") unary)*
//! unary   = "-" unary | power
//! power   = primary ("^" unary)?
//! primary = number | name | name "(" expr ("," expr)* ")" | "(" expr ")"
//! ```
//!
//! Every function is an entry of the elementwise registry ([`crate::ops::functions`]): its
//! name is the function's name, its arguments the function's inputs, followed by its constant
//! parameters if it has any (`leaky_relu(x, 0.2)`, `clamp(x, -1, 1)`; left out, they take
//! their defaults). `max` and `min` take two arguments.

pub mod symbolic;

use std::collections::HashMap;

use crate::ops::elementwise::{function, Function, Syntax};
use crate::tensor::Tensor;

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A numeric literal.
    Number(f64),
    /// A variable, by name.
    Var(String),
    /// An elementwise function applied to arguments (operators are functions too).
    Call(Call),
}

/// A function applied to arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// The function, from the registry.
    pub function: &'static dyn Function,
    /// Its arguments, one per input.
    pub args: Vec<Expr>,
    /// Its constant parameters, one per declared parameter.
    pub params: Vec<f64>,
}

impl Expr {
    /// `function(args…)` with `params` (the declared defaults fill in missing ones).
    ///
    /// # Panics
    /// If the number of arguments is not the function's arity.
    pub fn call(function: &'static dyn Function, args: Vec<Expr>, params: Vec<f64>) -> Expr {
        assert!(
            args.len() == function.arity(),
            "{}: {} arguments for arity {}",
            function.name(),
            args.len(),
            function.arity()
        );
        let mut params = params;
        for p in function.params().iter().skip(params.len()) {
            params.push(p.default);
        }
        Expr::Call(Call { function, args, params })
    }

    /// The function's name if this is a call.
    pub fn function_name(&self) -> Option<&'static str> {
        match self {
            Expr::Call(c) => Some(c.function.name()),
            _ => None,
        }
    }

    /// The arguments if this is a call (empty otherwise).
    pub fn args(&self) -> &[Expr] {
        match self {
            Expr::Call(c) => &c.args,
            _ => &[],
        }
    }
}

/// The registry function written with this infix (`+ - * / ^`) or, with `prefix`, prefix
/// (`-`) operator.
///
/// # Panics
/// If no function is written with it.
pub fn operator(symbol: char, prefix: bool) -> &'static dyn Function {
    let found = crate::ops::functions().iter().copied().find(|f| match f.syntax() {
        Syntax::Infix { symbol: s, .. } => !prefix && s == symbol,
        Syntax::Prefix { symbol: s } => prefix && s == symbol,
        Syntax::Call => false,
    });
    found.unwrap_or_else(|| panic!("the registry has no function for the operator '{symbol}'"))
}

/// A number as traces and the printer show it: integers without a fraction, others to 8
/// significant digits with trailing zeros trimmed, very large or small ones in scientific
/// notation.
pub fn fmt_num(v: f64) -> String {
    if v.is_finite() && v == v.trunc() && v.abs() < 1e15 {
        return format!("{}", v as i64);
    }
    if !v.is_finite() || v.abs() < 1e-4 || v.abs() >= 1e9 {
        return format!("{v:.6e}");
    }
    let decimals = (7 - v.abs().log10().floor() as i32).clamp(0, 12) as usize;
    let s = format!("{v:.decimals$}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A malformed expression: what is wrong and at which column (1-based, in characters).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message} at column {column}")]
pub struct ParseError {
    /// What is wrong.
    pub message: String,
    /// Where, counting characters from 1.
    pub column: usize,
}

impl ParseError {
    /// The source with a caret under the offending column, for terminals; a long source is
    /// cut to a window around the column.
    pub fn pointer(&self, source: &str) -> String {
        const HALF: usize = 30;
        let chars: Vec<char> = source.chars().collect();
        let at = self.column.saturating_sub(1).min(chars.len());
        let start = at.saturating_sub(HALF);
        let end = (at + HALF).min(chars.len());
        let (pre, post) = (if start > 0 { "…" } else { "" }, if end < chars.len() { "…" } else { "" });
        let window: String = chars[start..end].iter().collect();
        let offset = at - start + pre.chars().count();
        format!("  {pre}{window}{post}\n  {}^", " ".repeat(offset))
    }
}

/// Evaluation failed: a variable has no value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    /// The expression uses a variable that was not given a value.
    #[error("unknown variable '{0}': give it a value (e.g. --at {0}=1)")]
    UnknownVariable(String),
}

/// The longest expression accepted, in tokens (numbers, names, operators).
pub const MAX_TOKENS: usize = 10_000;

/// The deepest expression accepted: nesting of parentheses, calls and unary minus, and the
/// depth of the tree (a chain `x+x+…+x` of n terms is n deep). Evaluation and
/// differentiation recurse over the tree, so this bounds their stack use.
pub const MAX_DEPTH: usize = 1_000;

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Number(f64),
    Name(String),
    Op(char),
}

fn tokenize(src: &str) -> Result<Vec<(Token, usize)>, ParseError> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let column = i + 1;
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() || c == '.' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            // An exponent: e or E, optional sign, digits.
            if i < chars.len() && (chars[i] == 'e' || chars[i] == 'E') {
                let mut j = i + 1;
                if j < chars.len() && (chars[j] == '+' || chars[j] == '-') {
                    j += 1;
                }
                if j < chars.len() && chars[j].is_ascii_digit() {
                    while j < chars.len() && chars[j].is_ascii_digit() {
                        j += 1;
                    }
                    i = j;
                }
            }
            let text: String = chars[start..i].iter().collect();
            let value = text
                .parse::<f64>()
                .map_err(|_| ParseError { message: format!("malformed number '{text}'"), column })?;
            out.push((Token::Number(value), column));
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push((Token::Name(chars[start..i].iter().collect()), column));
        } else if "+-*/^(),".contains(c) {
            out.push((Token::Op(c), column));
            i += 1;
        } else {
            return Err(ParseError { message: format!("unexpected character '{c}'"), column });
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<(Token, usize)>,
    pos: usize,
    end_column: usize,
    nesting: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos).map(|(t, _)| t)
    }

    fn column(&self) -> usize {
        self.tokens.get(self.pos).map_or(self.end_column, |(_, c)| *c)
    }

    fn error<T>(&self, message: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError { message: message.into(), column: self.column() })
    }

    /// Enters one level of nesting, refusing to go deeper than [`MAX_DEPTH`].
    fn nest(&mut self) -> Result<(), ParseError> {
        self.nesting += 1;
        if self.nesting > MAX_DEPTH {
            return self.error(format!("the expression nests more than {MAX_DEPTH} levels deep"));
        }
        Ok(())
    }

    fn eat(&mut self, op: char) -> bool {
        if self.peek() == Some(&Token::Op(op)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expr(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.term()?;
        loop {
            let op = if self.eat('+') {
                '+'
            } else if self.eat('-') {
                '-'
            } else {
                return Ok(left);
            };
            left = Expr::call(operator(op, false), vec![left, self.term()?], vec![]);
        }
    }

    fn term(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.unary()?;
        loop {
            let op = if self.eat('*') {
                '*'
            } else if self.eat('/') {
                '/'
            } else {
                return Ok(left);
            };
            left = Expr::call(operator(op, false), vec![left, self.unary()?], vec![]);
        }
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        if self.eat('-') {
            self.nest()?;
            let inner = self.unary()?;
            self.nesting -= 1;
            return Ok(Expr::call(operator('-', true), vec![inner], vec![]));
        }
        self.power()
    }

    fn power(&mut self) -> Result<Expr, ParseError> {
        let base = self.primary()?;
        if self.eat('^') {
            return Ok(Expr::call(operator('^', false), vec![base, self.unary()?], vec![]));
        }
        Ok(base)
    }

    fn primary(&mut self) -> Result<Expr, ParseError> {
        let column = self.column();
        match self.peek().cloned() {
            Some(Token::Number(v)) => {
                self.pos += 1;
                Ok(Expr::Number(v))
            }
            Some(Token::Name(name)) => {
                self.pos += 1;
                if !self.eat('(') {
                    if function(&name).is_some() {
                        return self.error(format!("function '{name}' needs parentheses: {name}(...)"));
                    }
                    return Ok(Expr::Var(name));
                }
                let Some(func) = function(&name) else {
                    return Err(ParseError { message: format!("unknown function '{name}'"), column });
                };
                self.nest()?;
                let mut args = vec![self.expr()?];
                while self.eat(',') {
                    args.push(self.expr()?);
                }
                self.nesting -= 1;
                if !self.eat(')') {
                    return self.error("expected ')' or ','");
                }
                let (arity, extra) = (func.arity(), func.params().len());
                if args.len() < arity || args.len() > arity + extra {
                    let takes = if extra == 0 {
                        format!("{arity}")
                    } else {
                        let names: Vec<&str> = func.params().iter().map(|p| p.name).collect();
                        format!("{arity} to {} (then the constants {})", arity + extra, names.join(", "))
                    };
                    return Err(ParseError {
                        message: format!("{name} takes {takes} argument(s), got {}", args.len()),
                        column,
                    });
                }
                let params = args
                    .split_off(arity)
                    .into_iter()
                    .map(|a| {
                        a.constant().ok_or_else(|| ParseError {
                            message: format!("the parameters of {name} must be numbers"),
                            column,
                        })
                    })
                    .collect::<Result<Vec<f64>, ParseError>>()?;
                func.check_params(&params).map_err(|message| ParseError { message, column })?;
                Ok(Expr::call(func, args, params))
            }
            Some(Token::Op('(')) => {
                self.pos += 1;
                self.nest()?;
                let inner = self.expr()?;
                self.nesting -= 1;
                if !self.eat(')') {
                    return self.error("expected ')'");
                }
                Ok(inner)
            }
            Some(Token::Op(c)) => self.error(format!("expected a number, variable or '(' but found '{c}'")),
            None => self.error("unexpected end of expression"),
        }
    }
}

impl Expr {
    /// Parses an expression.
    ///
    /// ```
    /// use adjoint::expr::Expr;
    /// let e = Expr::parse("2^3^2").unwrap();
    /// assert_eq!(e.eval_f64(&Default::default()).unwrap(), 512.0);
    /// let err = Expr::parse("x * (y + ").unwrap_err();
    /// assert_eq!(err.column, 10);
    /// ```
    pub fn parse(source: &str) -> Result<Expr, ParseError> {
        let tokens = tokenize(source)?;
        // Parsing, evaluation and differentiation recurse over the tree: bound its size.
        if tokens.len() > MAX_TOKENS {
            return Err(ParseError {
                message: format!("the expression has {} tokens; at most {MAX_TOKENS} are accepted", tokens.len()),
                column: tokens[MAX_TOKENS].1,
            });
        }
        let mut parser = Parser { tokens, pos: 0, end_column: source.chars().count() + 1, nesting: 0 };
        let expr = parser.expr()?;
        if parser.pos < parser.tokens.len() {
            return parser.error("unexpected input after the expression");
        }
        let depth = expr.depth();
        if depth > MAX_DEPTH {
            return Err(ParseError {
                message: format!("the expression is {depth} operations deep; at most {MAX_DEPTH} are accepted"),
                column: 1,
            });
        }
        Ok(expr)
    }

    /// The depth of the tree (a leaf is 1), computed without recursion.
    pub fn depth(&self) -> usize {
        let mut stack = vec![(self, 1usize)];
        let mut deepest = 0;
        while let Some((e, d)) = stack.pop() {
            deepest = deepest.max(d);
            stack.extend(e.args().iter().map(|a| (a, d + 1)));
        }
        deepest
    }

    /// The variables, in order of first appearance.
    pub fn variables(&self) -> Vec<String> {
        fn walk(e: &Expr, out: &mut Vec<String>) {
            match e {
                Expr::Number(_) => {}
                Expr::Var(v) => {
                    if !out.contains(v) {
                        out.push(v.clone());
                    }
                }
                Expr::Call(c) => c.args.iter().for_each(|a| walk(a, out)),
            }
        }
        let mut out = Vec::new();
        walk(self, &mut out);
        out
    }

    /// Evaluates into the graph: the variables are looked up in `vars` (usually leaves),
    /// constants stay constants, so the recorded steps match the expression. A power with a
    /// constant exponent is recorded as `powi` or `powf` (one input), as the lectures write
    /// s7 = s2².
    pub fn eval(&self, vars: &HashMap<String, Tensor<f64>>) -> Result<Tensor<f64>, EvalError> {
        self.eval_with(&mut |name| vars.get(name).cloned())
    }

    /// Like [`Expr::eval`], looking variables up through `lookup` at their first use, in
    /// evaluation order (left to right), so a caller can make each variable's leaf when it
    /// is first needed.
    pub fn eval_with(&self, lookup: &mut dyn FnMut(&str) -> Option<Tensor<f64>>) -> Result<Tensor<f64>, EvalError> {
        Ok(match self {
            Expr::Number(v) => Tensor::scalar(*v),
            Expr::Var(name) => lookup(name).ok_or_else(|| EvalError::UnknownVariable(name.clone()))?,
            Expr::Call(c) => {
                let x = c.args[0].eval_with(lookup)?;
                if c.function.name() == "pow" {
                    if let Some(p) = c.args[1].constant() {
                        return Ok(if p.fract() == 0.0 && p.abs() <= i32::MAX as f64 {
                            x.powi(p as i32)
                        } else {
                            x.powf(p)
                        });
                    }
                }
                let mut args = vec![x];
                for a in &c.args[1..] {
                    args.push(a.eval_with(lookup)?);
                }
                let refs: Vec<&Tensor<f64>> = args.iter().collect();
                c.function.apply_f64(&refs, &c.params)
            }
        })
    }

    /// Evaluates to a number without recording anything.
    pub fn eval_f64(&self, vars: &HashMap<String, f64>) -> Result<f64, EvalError> {
        Ok(match self {
            Expr::Number(v) => *v,
            Expr::Var(name) => *vars.get(name).ok_or_else(|| EvalError::UnknownVariable(name.clone()))?,
            Expr::Call(c) => {
                let args = c.args.iter().map(|a| a.eval_f64(vars)).collect::<Result<Vec<f64>, _>>()?;
                c.function.eval_f64(&args, &c.params)
            }
        })
    }

    /// The value of a constant subexpression (a literal, possibly negated).
    fn constant(&self) -> Option<f64> {
        match self {
            Expr::Number(v) => Some(*v),
            Expr::Call(c) if c.function.name() == "neg" => c.args[0].constant().map(|v| -v),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(src: &str, vars: &[(&str, f64)]) -> f64 {
        let vars = vars.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        Expr::parse(src).unwrap().eval_f64(&vars).unwrap()
    }

    #[test]
    fn precedence_and_associativity() {
        assert_eq!(value("-x^2", &[("x", 3.0)]), -9.0);
        assert_eq!(value("2^3^2", &[]), 512.0);
        assert_eq!(value("8 - 3 - 2", &[]), 3.0);
        assert_eq!(value("8 / 4 / 2", &[]), 1.0);
        assert_eq!(value("1 + 2 * 3", &[]), 7.0);
        assert_eq!(value("2^-1", &[]), 0.5);
        assert_eq!(value("(1 + 2) * 3", &[]), 9.0);
        assert_eq!(value("max(1, min(5, 3)) + 1.5e1", &[]), 18.0);
    }

    #[test]
    fn errors_point_at_the_column() {
        let e = Expr::parse("x + * y").unwrap_err();
        assert_eq!(e.column, 5);
        assert_eq!(e.pointer("x + * y"), "  x + * y\n      ^");
        let long = "x + ".repeat(50) + "* y";
        let e = Expr::parse(&long).unwrap_err();
        let p = e.pointer(&long);
        assert!(p.lines().all(|l| l.chars().count() < 70), "{p}");
        assert_eq!(
            p.lines().nth(1).unwrap().find('^'),
            p.lines().next().unwrap().char_indices().position(|(_, c)| c == '*')
        );
        let e = Expr::parse("sin x").unwrap_err();
        assert_eq!(e.column, 5);
        let e = Expr::parse("foo(x)").unwrap_err();
        assert_eq!((e.column, e.message.as_str()), (1, "unknown function 'foo'"));
        let e = Expr::parse("(x + 1").unwrap_err();
        assert_eq!(e.column, 7);
        let e = Expr::parse("x # 2").unwrap_err();
        assert_eq!(e.column, 3);
        let e = Expr::parse("max(1)").unwrap_err();
        assert!(e.message.contains("takes 2"));
        assert_eq!(Expr::parse("").unwrap_err().column, 1);
        let huge = "(".repeat(20_000) + "x" + &")".repeat(20_000);
        assert!(Expr::parse(&huge).unwrap_err().message.contains("at most"));
        let nested = "(".repeat(1_200) + "x" + &")".repeat(1_200);
        assert!(Expr::parse(&nested).unwrap_err().message.contains("nests more than"));
        let chain = vec!["x"; 1_200].join("+");
        assert!(Expr::parse(&chain).unwrap_err().message.contains("deep"));
        assert!(Expr::parse(&"-".repeat(1_200)).unwrap_err().message.contains("nests"));
    }

    #[test]
    fn the_deepest_accepted_expressions_evaluate_and_differentiate_on_a_small_stack() {
        let deep = "(".repeat(990) + "x" + &")".repeat(990);
        let chain = vec!["sin(x)"; 490].join("+");
        for src in [deep, chain] {
            let e = Expr::parse(&src).unwrap();
            let vars = [("x".to_string(), 1.0)].into_iter().collect();
            assert!(e.eval_f64(&vars).unwrap() >= 1.0);
            assert!(e.derivative("x").simplify().eval_f64(&vars).unwrap() >= 1.0);
        }
    }

    #[test]
    fn unknown_variables_are_named() {
        let e = Expr::parse("x + zed").unwrap();
        let err = e.eval_f64(&[("x".to_string(), 1.0)].into_iter().collect()).unwrap_err();
        assert_eq!(err, EvalError::UnknownVariable("zed".into()));
    }
}
