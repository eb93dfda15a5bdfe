//! The evaluation trace of an expression as the lectures write it (the "finite numerical
//! algorithm"): one step per recorded operation, s1 = x, s2 = y, s3 = s1 × s2, …, with
//! constants kept inside steps (s6 = s5 + 4), each step's tangent (forward mode) and adjoint
//! (reverse mode), and the formulas with their numbers filled in.

use std::collections::HashMap;
use std::rc::Rc;

use serde::Serialize;

use super::{EvalError, Expr};
use crate::autodiff::forward::jvp_sweep_all;
use crate::autodiff::reverse::sweep;
use crate::autodiff::tape::{self, no_grad, release_tape, Rule};
use crate::tensor::{Tensor, Track};

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
    /// A constant parameter of the primitive (n of powi, α of leaky_relu).
    pub parameter: Option<f64>,
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
        let expr = if options.degrees { expr.with_degrees() } else { expr.clone() };
        let leaves: Vec<(String, Tensor<f64>)> = at.iter().map(|(n, v)| (n.clone(), Tensor::var(*v))).collect();
        let vars: HashMap<String, Tensor<f64>> = leaves.iter().cloned().collect();
        if let Some(w) = &options.forward_wrt {
            if !vars.contains_key(w) {
                return Err(EvalError::UnknownVariable(w.clone()));
            }
        }
        let mark = tape::tape_len::<f64>();
        let out = expr.eval(&vars)?;
        let result = Self::from_tape(&out, &leaves, options, mark);
        release_tape::<f64>();
        Ok(result)
    }

    fn from_tape(out: &Tensor<f64>, leaves: &[(String, Tensor<f64>)], options: &TraceOptions, mark: usize) -> Trace {
        let Track::Node(root) = out.track else {
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
                parameter: None,
            };
            return Trace { steps: vec![step], seeded: options.forward_wrt.clone() };
        };
        let end = root.index() + 1;
        let tangents = options.forward_wrt.as_ref().map(|w| {
            let leaf = &leaves.iter().find(|(n, _)| n == w).expect("checked").1;
            jvp_sweep_all(&[out], &[(leaf, Tensor::scalar(1.0))], false).1
        });
        let grads = options.reverse.then(|| sweep(out, None, false, false).0);
        let mut steps: Vec<Step> = Vec::new();
        let mut step_of: HashMap<usize, usize> = HashMap::new();
        for i in mark..end {
            let node = tape::node::<f64>(i);
            let value = Tensor::<f64>::constant_data(node.output.clone()).item();
            let tangent = tangents.as_ref().map(|t| t.get(i).cloned().flatten().map_or(0.0, |t| t.item()));
            let adjoint = grads.as_ref().map(|g| {
                g.get(crate::autodiff::tape::Var { index: i as u32, generation: node.generation })
                    .map_or(0.0, |a| a.item())
            });
            let (op, variable, inputs, partials, parameter) = match &node.rule {
                Rule::Leaf(state) => {
                    let name = leaves.iter().find(|(_, t)| matches!(&t.track, Track::Leaf(s) if Rc::ptr_eq(s, state)));
                    ("input".to_string(), name.map(|(n, _)| n.clone()), vec![], vec![], None)
                }
                rule => {
                    let p = rule.primitive().expect("not a leaf");
                    let inputs: Vec<Operand> = node
                        .inputs
                        .iter()
                        .map(|t| match &t.track {
                            Track::Node(v) => Operand::Step(step_of[&v.index()]),
                            _ => Operand::Constant(t.item()),
                        })
                        .collect();
                    // Local partials: the VJP with cotangent 1 (exact for scalars).
                    let output = node.output_tensor(i);
                    let cot = no_grad::<f64, _>(|| p.vjp(&node.inputs, &output, &Tensor::scalar(1.0)));
                    let partials = cot.into_iter().map(|c| c.map(|c| c.sum_all().item())).collect();
                    (p.name().to_string(), None, inputs, partials, p.parameter())
                }
            };
            step_of.insert(i, steps.len());
            steps.push(Step {
                name: format!("s{}", steps.len() + 1),
                op,
                variable,
                inputs,
                value,
                tangent,
                adjoint,
                partials,
                adjoint_terms: vec![],
                parameter,
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
        match s.op.as_str() {
            "input" => s.variable.clone().unwrap_or_else(|| "input".into()),
            "constant" => fmt_num(s.value),
            "add" => format!("{} + {}", a(0), a(1)),
            "sub" => format!("{} − {}", a(0), a(1)),
            "mul" => format!("{} × {}", a(0), a(1)),
            "div" => format!("{} / {}", a(0), a(1)),
            "neg" => format!("−{}", a(0)),
            "sqr" => format!("{}²", a(0)),
            "powi" if s.parameter == Some(2.0) => format!("{}²", a(0)),
            "powi" | "powf" => format!("{}^{}", a(0), fmt_num(s.parameter.unwrap_or(0.0))),
            "pow" => format!("{}^{}", a(0), a(1)),
            "maximum" => format!("max({}, {})", a(0), a(1)),
            "minimum" => format!("min({}, {})", a(0), a(1)),
            op => format!("{op}({})", (0..s.inputs.len()).map(a).collect::<Vec<_>>().join(", ")),
        }
    }

    /// The tangent's formula, e.g. `s1·s2' + s1'·s2` (inputs with a constant have none).
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

    fn operand(&self, o: &Operand) -> String {
        match o {
            Operand::Step(j) => self.steps[*j].name.clone(),
            Operand::Constant(c) => fmt_num(*c),
        }
    }
}

/// ∂s_j/∂(operand k of step j), written over step names.
fn partial_formula(steps: &[Step], j: usize, k: usize) -> String {
    let s = &steps[j];
    let name = |o: &Operand| match o {
        Operand::Step(i) => steps[*i].name.clone(),
        Operand::Constant(c) => fmt_num(*c),
    };
    let x = name(&s.inputs[k]);
    let other = || name(&s.inputs[1 - k]);
    let out = &s.name;
    match (s.op.as_str(), k) {
        ("add", _) | ("sub", 0) | ("identity", _) => "1".into(),
        ("sub", _) | ("neg", _) => "−1".into(),
        ("mul", _) => other(),
        ("div", 0) => format!("1/{}", other()),
        ("div", _) => format!("(−{}/{}²)", name(&s.inputs[0]), x),
        ("sqr", _) => format!("2{x}"),
        ("powi", _) if s.parameter == Some(2.0) => format!("2{x}"),
        ("powi", _) | ("powf", _) => {
            let n = s.parameter.unwrap_or(0.0);
            format!("{}{x}^{}", fmt_num(n), fmt_num(n - 1.0))
        }
        ("pow", 0) => format!("{}·{x}^({} − 1)", other(), other()),
        ("pow", _) => format!("{out}·ln {}", name(&s.inputs[0])),
        ("sin", _) => format!("cos({x})"),
        ("cos", _) => format!("(−sin({x}))"),
        ("tan", _) => format!("(1 + {out}²)"),
        ("exp", _) => out.clone(),
        ("log", _) => format!("1/{x}"),
        ("sqrt", _) => format!("1/(2{out})"),
        ("tanh", _) => format!("(1 − {out}²)"),
        ("sigmoid", _) => format!("{out}(1 − {out})"),
        ("relu", _) => format!("[{x} > 0]"),
        ("leaky_relu", _) => format!("[{x} > 0 ? 1 : α]"),
        ("abs", _) => format!("sign({x})"),
        ("maximum", _) | ("minimum", _) => format!("[{x} selected]"),
        (op, _) => format!("∂{op}/∂{x}"),
    }
}

/// A number as the trace shows it: integers without a fraction, others to 8 significant
/// digits with trailing zeros trimmed, very large or small ones in scientific notation.
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

impl Expr {
    /// The same expression with sin, cos and tan taking degrees.
    pub fn with_degrees(&self) -> Expr {
        use super::Func;
        match self {
            Expr::Number(_) | Expr::Var(_) => self.clone(),
            Expr::Neg(a) => Expr::Neg(Box::new(a.with_degrees())),
            Expr::Binary(op, a, b) => Expr::Binary(*op, Box::new(a.with_degrees()), Box::new(b.with_degrees())),
            Expr::Call(f, args) => {
                let args: Vec<Expr> = args.iter().map(Expr::with_degrees).collect();
                if matches!(f, Func::Sin | Func::Cos | Func::Tan) {
                    let radians = Expr::Binary(
                        super::BinOp::Mul,
                        Box::new(args[0].clone()),
                        Box::new(Expr::Number(std::f64::consts::PI / 180.0)),
                    );
                    Expr::Call(*f, vec![radians])
                } else {
                    Expr::Call(*f, args)
                }
            }
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

    /// The trace as JSON: `{"steps": [{"name", "op", "inputs", "value", "tangent"?, "adjoint"?}]}`.
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
                            Operand::Constant(c) => serde_json::json!(c),
                        })
                        .collect(),
                };
                let mut o = serde_json::json!({
                    "name": s.name, "op": s.op, "inputs": inputs, "definition": self.definition(i), "value": s.value,
                });
                if let Some(t) = s.tangent {
                    o["tangent"] = serde_json::json!(t);
                }
                if let Some(a) = s.adjoint {
                    o["adjoint"] = serde_json::json!(a);
                }
                o
            })
            .collect();
        serde_json::json!({ "steps": steps })
    }
}
