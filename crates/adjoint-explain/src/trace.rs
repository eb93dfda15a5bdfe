//! The evaluation trace of an expression as the lectures write it (the "finite numerical
//! algorithm"): one step per recorded operation, s1 = x, s2 = y, s3 = s1 × s2, …, with
//! constants kept inside steps (s6 = s5 + 4), each step's tangent (forward mode) and adjoint
//! (reverse mode), and the formulas with their numbers filled in.

use serde::Serialize;

use adjoint::autodiff::introspect::{self, Input};
pub use adjoint::expr::fmt_num;
use adjoint::expr::{operator, EvalError, Expr};
use adjoint::json::number;
use adjoint::ops::elementwise::{function, Syntax};
use adjoint::Tensor;

/// An operand of a step: an earlier step or a constant.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    /// Step number (0-based index into [`Trace::steps`]).
    Step(usize),
    /// A constant kept inside the step.
    Constant(f64),
}

/// One term of an adjoint: s̄ⱼ · ∂sⱼ/∂sᵢ for a step j that uses step i.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AdjointTerm {
    /// The consumer step j (0-based).
    pub consumer: usize,
    /// ∂sⱼ/∂sᵢ written over step names.
    pub partial: String,
    /// Its value.
    pub partial_value: f64,
}

/// One step of the trace.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// `s1`, `s2`, …
    pub name: String,
    /// The primitive (`mul`, `sin`, …) or `input` for a variable.
    pub op: String,
    /// The variable's name, for inputs.
    pub variable: Option<String>,
    /// The operands.
    pub inputs: Vec<Operand>,
    /// The value sᵢ.
    pub value: f64,
    /// The tangent sᵢ' (forward mode), if computed.
    pub tangent: Option<f64>,
    /// The adjoint s̄ᵢ (reverse mode), if computed.
    pub adjoint: Option<f64>,
    /// Local partial derivatives ∂sᵢ/∂(operand k) for each step operand, values.
    pub partials: Vec<Option<f64>>,
    /// The terms of the adjoint's sum over the steps that use this one.
    pub adjoint_terms: Vec<AdjointTerm>,
    /// The primitive's constant parameters (n of powi, α of leaky_relu), if any.
    pub params: Vec<f64>,
}

/// The whole trace.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// The steps in evaluation order; the last is the output.
    pub steps: Vec<Step>,
    /// The variable whose tangent was seeded with 1, if forward mode ran.
    pub seeded: Option<String>,
}

/// Which sweeps to run for a trace.
#[derive(Debug, Clone, Default)]
pub struct TraceOptions {
    /// Run forward mode with the tangent seeded on this variable.
    pub forward_wrt: Option<String>,
    /// Run reverse mode from the output.
    pub reverse: bool,
    /// sin, cos and tan take degrees (a conversion step is added before each).
    pub degrees: bool,
}

impl Trace {
    /// Records `expr` at the given values and traces the requested sweeps.
    ///
    /// # Errors
    /// If a variable has no value, or `forward_wrt` names no variable.
    pub fn record(expr: &Expr, at: &[(String, f64)], options: &TraceOptions) -> Result<Trace, EvalError> {
        let expr = if options.degrees { with_degrees(expr) } else { expr.clone() };
        if let Some(w) = &options.forward_wrt {
            if !at.iter().any(|(n, _)| n == w) {
                return Err(EvalError::UnknownVariable(w.clone()));
            }
        }
        // Each variable's leaf is made at its first use, so the steps number the inputs as
        // the lectures do (s1 = x1, s2 = sin(s1), s3 = x2, … for sin(x1) + x1·x2).
        let mut leaves: Vec<(String, Tensor<f64>)> = Vec::new();
        let out = expr.eval_with(&mut |name| {
            if let Some((_, t)) = leaves.iter().find(|(n, _)| n == name) {
                return Some(t.clone());
            }
            let value = at.iter().find(|(n, _)| n == name)?.1;
            let leaf = Tensor::var(value);
            leaves.push((name.to_string(), leaf.clone()));
            Some(leaf)
        })?;
        Ok(Self::from_graph(&out, &leaves, options))
    }

    /// Traces a computation already recorded on scalar tensors: `output` computed from the
    /// named leaf `inputs` (each made with [`Tensor::var`]), as a program written with the
    /// library's operations produces it. Steps follow the order in which values were made.
    ///
    /// # Errors
    /// If a value in the graph is not a single number (the trace shows scalars, as the
    /// lectures do), the graph was freed by a backward pass, or `forward_wrt` names no input.
    ///
    /// ```
    /// use adjoint::Tensor;
    /// use adjoint_explain::trace::{Trace, TraceOptions};
    /// let (x, y) = (Tensor::<f64>::var(2.0), Tensor::<f64>::var(8.0));
    /// let f = (&x * &y + x.sin() + 4.0) * (y.sqr() * 3.0 + 6.0);
    /// let inputs = [("x".to_string(), x), ("y".to_string(), y)];
    /// let t = Trace::from_tensors(&f, &inputs, &TraceOptions { reverse: true, ..Default::default() }).unwrap();
    /// assert!((t.steps[1].adjoint.unwrap() - 1399.6462764876).abs() < 1e-9);
    /// ```
    pub fn from_tensors(
        output: &Tensor<f64>,
        inputs: &[(String, Tensor<f64>)],
        options: &TraceOptions,
    ) -> Result<Trace, String> {
        if let Some(w) = &options.forward_wrt {
            if !inputs.iter().any(|(n, _)| n == w) {
                return Err(format!("no input is named {w:?}"));
            }
        }
        if output.len() != 1 {
            return Err(format!("the output has shape {:?}; a trace needs a single number", output.shape()));
        }
        if output.is_tracked() {
            let nodes = introspect::graph(&[output]).map_err(|e| e.to_string())?;
            let constant_shape =
                |n: &introspect::Node<f64>| n.inputs.iter().any(|i| matches!(i, Input::Constant(c) if c.len() != 1));
            if let Some(n) = nodes.iter().find(|n| n.value.len() != 1 || constant_shape(n)) {
                return Err(format!(
                    "a value of shape {:?} (made by {}) is in the graph; a trace shows single numbers only",
                    n.value.shape(),
                    n.op
                ));
            }
        }
        Ok(Self::from_graph(output, inputs, options))
    }

    fn from_graph(out: &Tensor<f64>, leaves: &[(String, Tensor<f64>)], options: &TraceOptions) -> Trace {
        if !out.is_tracked() {
            // A constant expression: one step holding the constant.
            let step = Step {
                name: "s1".into(),
                op: "constant".into(),
                variable: None,
                inputs: vec![Operand::Constant(out.item())],
                value: out.item(),
                tangent: options.forward_wrt.as_ref().map(|_| 0.0),
                adjoint: options.reverse.then_some(1.0),
                partials: vec![],
                adjoint_terms: vec![],
                params: vec![],
            };
            return Trace { steps: vec![step], seeded: options.forward_wrt.clone() };
        }
        let tangents = options.forward_wrt.as_ref().map(|w| match leaves.iter().find(|(n, _)| n == w) {
            Some((_, leaf)) => introspect::tangents(&[out], &[(leaf, Tensor::scalar(1.0))]).expect("a fresh graph"),
            None => Default::default(),
        });
        let grads = options.reverse.then(|| introspect::adjoints(out).expect("a fresh graph"));
        let nodes = introspect::graph(&[out]).expect("a fresh graph");
        let mut steps: Vec<Step> = Vec::new();
        for (i, node) in nodes.iter().enumerate() {
            let tangent = tangents.as_ref().map(|t| t.get(&node.id).map_or(0.0, Tensor::item));
            let adjoint = grads.as_ref().map(|g| g.get(&node.id).map_or(0.0, Tensor::item));
            let (op, variable, inputs, partials) = if node.is_leaf() {
                let leaf = leaves.iter().find(|(_, t)| t.node_id() == Some(node.id));
                ("input".to_string(), leaf.map(|(n, _)| n.clone()), vec![], vec![])
            } else {
                let inputs: Vec<Operand> = node
                    .inputs
                    .iter()
                    .map(|input| match input {
                        Input::Node(j) => Operand::Step(*j),
                        Input::Constant(c) => Operand::Constant(c.item()),
                    })
                    .collect();
                // Local partials: the VJP with cotangent 1 (exact for scalars).
                let partials =
                    node.local_vjp(&Tensor::scalar(1.0)).into_iter().map(|c| c.map(|c| c.sum_all().item())).collect();
                (node.op.to_string(), None, inputs, partials)
            };
            steps.push(Step {
                name: format!("s{}", i + 1),
                op,
                variable,
                inputs,
                value: node.value.item(),
                tangent,
                adjoint,
                partials,
                adjoint_terms: vec![],
                params: node.params.clone(),
            });
        }
        // Each adjoint is a sum over the steps that use this one.
        for j in 0..steps.len() {
            for (k, operand) in steps[j].inputs.clone().iter().enumerate() {
                if let Operand::Step(i) = operand {
                    let partial = partial_formula(&steps, j, k);
                    let partial_value = steps[j].partials.get(k).copied().flatten().unwrap_or(0.0);
                    steps[*i].adjoint_terms.push(AdjointTerm { consumer: j, partial, partial_value });
                }
            }
        }
        Trace { steps, seeded: options.forward_wrt.clone() }
    }

    /// The step's definition, e.g. `s1 × s2`, `sin(s1)`, `s5 + 4`, `x`.
    pub fn definition(&self, i: usize) -> String {
        let s = &self.steps[i];
        let a = |k: usize| self.operand(&s.inputs[k]);
        let args =
            || -> Vec<String> { (0..s.inputs.len()).map(a).chain(s.params.iter().map(|p| fmt_num(*p))).collect() };
        match (s.op.as_str(), function(&s.op).map(|f| f.syntax())) {
            ("input", _) => s.variable.clone().unwrap_or_else(|| "input".into()),
            ("constant", _) => fmt_num(s.value),
            ("sqr", _) => format!("{}²", a(0)),
            ("powi" | "powf", _) => format!("{}{}", a(0), exponent(s.params.first().copied().unwrap_or(1.0))),
            (_, Some(Syntax::Infix { symbol, .. })) => format!("{} {} {}", a(0), pretty_operator(symbol), a(1)),
            (_, Some(Syntax::Prefix { .. })) => format!("−{}", a(0)),
            (op, _) => format!("{op}({})", args().join(", ")),
        }
    }

    /// The tangent's formula, e.g. `s1'·s2 + s1·s2'` (inputs with a constant have none).
    pub fn tangent_formula(&self, i: usize) -> String {
        let s = &self.steps[i];
        if s.op == "input" {
            let seeded = self.seeded.as_deref() == s.variable.as_deref();
            return if seeded { "1 (seed)".into() } else { "0".into() };
        }
        let terms: Vec<String> = s
            .inputs
            .iter()
            .enumerate()
            .filter_map(|(k, o)| match o {
                Operand::Step(j) => {
                    let t = format!("{}'", self.steps[*j].name);
                    let p = partial_formula(&self.steps, i, k);
                    Some(match (s.op.as_str(), k, p.as_str()) {
                        (_, _, "1") => t,
                        (_, _, "−1") => format!("−{t}"),
                        ("mul", 1, _) => format!("{p}·{t}"),
                        _ => format!("{t}·{p}"),
                    })
                }
                Operand::Constant(_) => None,
            })
            .collect();
        if terms.is_empty() {
            "0".into()
        } else {
            terms.join(" + ").replace("+ −", "− ")
        }
    }

    /// The adjoint's formula, e.g. `s̄3·s1 + s̄7·2s2`, and the same with numbers filled in.
    pub fn adjoint_formula(&self, i: usize) -> (String, String) {
        let s = &self.steps[i];
        if i + 1 == self.steps.len() {
            return ("1 (seed)".into(), "1".into());
        }
        if s.adjoint_terms.is_empty() {
            return ("0".into(), "0".into());
        }
        let bar = |j: usize| format!("s̄{}", j + 1);
        let symbolic: Vec<String> = s
            .adjoint_terms
            .iter()
            .map(|t| match t.partial.as_str() {
                "1" => bar(t.consumer),
                "−1" => format!("−{}", bar(t.consumer)),
                p => format!("{}·{p}", bar(t.consumer)),
            })
            .collect();
        let numeric: Vec<String> = s
            .adjoint_terms
            .iter()
            .map(|t| {
                let a = self.steps[t.consumer].adjoint.unwrap_or(0.0);
                let factor =
                    |v: f64| if v < 0.0 { format!("({})", fmt_num(v).replace('-', "−")) } else { fmt_num(v) };
                format!("{}×{}", factor(a), factor(t.partial_value))
            })
            .collect();
        (symbolic.join(" + ").replace("+ −", "− "), numeric.join(" + "))
    }

    /// ∂sⱼ/∂(operand k of step j) as an expression over the step names (`s1`, `s2`, …) and
    /// constants, from the primitive's declared derivative; `None` for a primitive outside
    /// the elementwise registry.
    pub fn partial_expr(&self, j: usize, k: usize) -> Option<Expr> {
        partial_expr(&self.steps, j, k)
    }

    fn operand(&self, o: &Operand) -> String {
        match o {
            Operand::Step(j) => self.steps[*j].name.clone(),
            Operand::Constant(c) => fmt_num(*c),
        }
    }
}

fn partial_expr(steps: &[Step], j: usize, k: usize) -> Option<Expr> {
    let s = &steps[j];
    let f = function(&s.op)?;
    let operand = |o: &Operand| match o {
        Operand::Step(i) => Expr::Var(steps[*i].name.clone()),
        Operand::Constant(c) => Expr::Number(*c),
    };
    let args: Vec<Expr> = s.inputs.iter().map(operand).collect();
    let partials = f.partials_expr(&args, &Expr::Var(s.name.clone()), &s.params);
    partials.get(k).map(Expr::simplify)
}

/// ∂s_j/∂(operand k of step j), written over step names as the lectures do (`2s2`,
/// `cos(s1)`, `(1 − s5²)`): a factor that can follow `·` without ambiguity.
fn partial_formula(steps: &[Step], j: usize, k: usize) -> String {
    match partial_expr(steps, j, k) {
        Some(e) => {
            let text = lecture_style(&e);
            let needs_parens = text.starts_with('−') && text != "−1" || adjoint::expr::symbolic::precedence(&e) < 2;
            if needs_parens {
                format!("({text})")
            } else {
                text
            }
        }
        None => {
            let s = &steps[j];
            let x = match &s.inputs[k] {
                Operand::Step(i) => steps[*i].name.clone(),
                Operand::Constant(c) => fmt_num(*c),
            };
            format!("∂{}/∂{x}", s.op)
        }
    }
}

/// `×` and `−` for `*` and `-`.
fn pretty_operator(symbol: char) -> char {
    match symbol {
        '*' => '×',
        '-' => '−',
        other => other,
    }
}

/// A power as a superscript where one reads well (`²`, `³`), else `^n`.
fn exponent(n: f64) -> String {
    match n {
        2.0 => "²".into(),
        3.0 => "³".into(),
        n => format!("^{}", fmt_num(n)),
    }
}

/// An expression as the lecture slides write it: `2s2` for 2·s2, `s6(1 − s6)`, `s5²`, `−`.
fn lecture_style(e: &Expr) -> String {
    use adjoint::expr::symbolic::precedence;
    let wrap = |e: &Expr, min: u8| {
        let t = lecture_style(e);
        if precedence(e) < min || (min > 1 && t.starts_with('−')) {
            format!("({t})")
        } else {
            t
        }
    };
    match e {
        Expr::Number(v) => fmt_num(*v).replace('-', "−"),
        Expr::Var(v) => v.clone(),
        Expr::Call(c) => {
            let a = &c.args;
            match (c.function.name(), a.as_slice()) {
                ("add", [x, y]) => format!("{} + {}", lecture_style(x), wrap(y, 1)),
                ("sub", [x, y]) => format!("{} − {}", lecture_style(x), wrap(y, 2)),
                ("mul", [x, y]) if x == y => format!("{}²", wrap(x, 5)),
                ("mul", [Expr::Number(n), y])
                    if *n >= 0.0 && matches!(y, Expr::Var(_) | Expr::Call(_)) && precedence(y) >= 4 =>
                {
                    format!("{}{}", fmt_num(*n), lecture_style(y))
                }
                ("mul", [x, y]) if precedence(y) < 2 => format!("{}({})", wrap(x, 2), lecture_style(y)),
                ("mul", [x, y]) => format!("{}·{}", wrap(x, 2), wrap(y, 3)),
                ("div", [x, y]) => format!("{}/{}", wrap(x, 3), wrap(y, 4)),
                ("neg", [x]) => format!("−{}", wrap(x, 4)),
                ("pow", [x, Expr::Number(n)]) => format!("{}{}", wrap(x, 5), exponent(*n)),
                ("pow", [x, y]) => format!("{}^{}", wrap(x, 5), wrap(y, 5)),
                ("sqr", [x]) => format!("{}²", wrap(x, 5)),
                ("powi" | "powf", [x]) => format!("{}{}", wrap(x, 5), exponent(c.params[0])),
                (name, _) => {
                    let args: Vec<String> =
                        a.iter().map(lecture_style).chain(c.params.iter().map(|p| fmt_num(*p))).collect();
                    format!("{name}({})", args.join(", "))
                }
            }
        }
    }
}

/// The same expression with sin, cos and tan taking degrees (a conversion step is added
/// before each).
pub fn with_degrees(expr: &Expr) -> Expr {
    match expr {
        Expr::Number(_) | Expr::Var(_) => expr.clone(),
        Expr::Call(c) => {
            let mut args: Vec<Expr> = c.args.iter().map(with_degrees).collect();
            if matches!(c.function.name(), "sin" | "cos" | "tan") {
                let radians = Expr::Number(std::f64::consts::PI / 180.0);
                args[0] = Expr::call(operator('*', false), vec![args[0].clone(), radians], vec![]);
            }
            Expr::call(c.function, args, c.params.clone())
        }
    }
}

impl Trace {
    /// The trace as aligned text: the evaluation, then each sweep that was computed.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let table = |rows: Vec<[String; 3]>| -> String {
            let w0 = rows.iter().map(|r| r[0].chars().count()).max().unwrap_or(0);
            let w1 = rows.iter().map(|r| r[1].chars().count()).max().unwrap_or(0);
            rows.iter()
                .map(|r| {
                    let pad0 = " ".repeat(w0 - r[0].chars().count());
                    let pad1 = " ".repeat(w1 - r[1].chars().count());
                    format!("  {}{pad0} = {}{pad1} = {}\n", r[0], r[1], r[2]).replace(" =  = ", " = ")
                })
                .collect()
        };
        out += "Evaluation (forward pass):\n";
        out += &table(
            (0..self.steps.len())
                .map(|i| [self.steps[i].name.clone(), self.definition(i), fmt_num(self.steps[i].value)])
                .collect(),
        );
        if let Some(w) = &self.seeded {
            out += &format!("\nForward mode, tangents seeded on {w} ({w}' = 1, other inputs 0):\n");
            out += &table(
                (0..self.steps.len())
                    .map(|i| {
                        let s = &self.steps[i];
                        [format!("{}'", s.name), self.tangent_formula(i), fmt_num(s.tangent.unwrap_or(0.0))]
                    })
                    .collect(),
            );
        }
        if self.steps.iter().any(|s| s.adjoint.is_some()) {
            let last = &self.steps[self.steps.len() - 1].name;
            out += &format!("\nReverse mode, adjoints from s̄{} = 1:\n", &last[1..]);
            out += &table(
                (0..self.steps.len())
                    .rev()
                    .map(|i| {
                        let s = &self.steps[i];
                        let (symbolic, numeric) = self.adjoint_formula(i);
                        let value = fmt_num(s.adjoint.unwrap_or(0.0));
                        let rhs = if numeric == value || s.adjoint_terms.len() <= 1 && numeric == "1" {
                            value
                        } else {
                            format!("{numeric} = {value}")
                        };
                        [format!("s̄{}", &s.name[1..]), symbolic, rhs]
                    })
                    .collect(),
            );
        }
        out
    }

    /// The trace as a markdown table.
    pub fn to_markdown(&self) -> String {
        let forward = self.seeded.is_some();
        let reverse = self.steps.iter().any(|s| s.adjoint.is_some());
        let mut out = String::from("| step | definition | value |");
        let mut rule = String::from("|---|---|---|");
        if forward {
            out += &format!(" tangent (seed {}) |", self.seeded.as_deref().unwrap_or(""));
            rule += "---|";
        }
        if reverse {
            out += " adjoint |";
            rule += "---|";
        }
        out += &format!("\n{rule}\n");
        for i in 0..self.steps.len() {
            let s = &self.steps[i];
            out += &format!("| {} | {} | {} |", s.name, self.definition(i), fmt_num(s.value));
            if forward {
                out += &format!(" {}' = {} = {} |", s.name, self.tangent_formula(i), fmt_num(s.tangent.unwrap_or(0.0)));
            }
            if reverse {
                let (symbolic, _) = self.adjoint_formula(i);
                out += &format!(" s̄{} = {} = {} |", &s.name[1..], symbolic, fmt_num(s.adjoint.unwrap_or(0.0)));
            }
            out += "\n";
        }
        out
    }

    /// The trace as JSON: `{"steps": [{"name", "op", "inputs", "value", "tangent"?, "adjoint"?}]}`;
    /// non-finite numbers are spelt `"NaN"`, `"inf"`, `"-inf"` (see `adjoint::json`).
    pub fn to_json(&self) -> serde_json::Value {
        let steps: Vec<serde_json::Value> = self
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let inputs: Vec<serde_json::Value> = match &s.variable {
                    Some(v) => vec![serde_json::json!(v)],
                    None => s
                        .inputs
                        .iter()
                        .map(|o| match o {
                            Operand::Step(j) => serde_json::json!(self.steps[*j].name),
                            Operand::Constant(c) => number(*c),
                        })
                        .collect(),
                };
                let mut o = serde_json::json!({
                    "name": s.name, "op": s.op, "inputs": inputs, "definition": self.definition(i), "value": number(s.value),
                });
                if let Some(t) = s.tangent {
                    o["tangent"] = number(t);
                }
                if let Some(a) = s.adjoint {
                    o["adjoint"] = number(a);
                }
                o
            })
            .collect();
        serde_json::json!({ "steps": steps })
    }
}
