//! `adjoint grad`: value and partial derivatives of a typed expression, by reverse mode (one
//! sweep for all variables) or forward mode (one sweep for the variable given by --wrt).

use std::collections::HashMap;

use clap::{Args, ValueEnum};
use serde_json::{json, Map, Value};

use super::CliError;
use adjoint::{gradients, jvp_sweep, Tensor};

/// Which mode of automatic differentiation to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// One reverse sweep gives every partial derivative.
    Reverse,
    /// One forward sweep gives the derivative along one variable (--wrt).
    Forward,
}

/// Arguments of `adjoint grad`.
#[derive(Args, Debug)]
pub struct GradArgs {
    /// The expression, e.g. "(x*y + sin(x) + 4) * (3*y^2 + 6)".
    #[arg(allow_hyphen_values = true)]
    expression: String,
    /// Where to evaluate: NAME=VALUE pairs separated by commas, e.g. x=2,y=8.
    #[arg(long, default_value = "")]
    at: String,
    /// Reverse mode (all partials in one sweep) or forward mode (one partial per sweep).
    #[arg(long, value_enum, default_value_t = Mode::Reverse)]
    mode: Mode,
    /// With --mode forward: the variable whose tangent is seeded with 1.
    #[arg(long)]
    wrt: Option<String>,
    /// Also compute the Hessian (forward-over-reverse: one forward sweep per variable over
    /// the recorded reverse sweep).
    #[arg(long)]
    hessian: bool,
    /// Print {"value": F, "gradient": {...}} as JSON (with "hessian" if asked).
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: GradArgs) -> Result<(), CliError> {
    let (expr, at) = super::trace::parse_input(&args.expression, &args.at)?;
    let leaves: Vec<(String, Tensor<f64>)> = at.iter().map(|(n, v)| (n.clone(), Tensor::var(*v))).collect();
    let vars: HashMap<String, Tensor<f64>> = leaves.iter().cloned().collect();
    let f = expr.eval(&vars).map_err(|e| CliError::Usage(e.to_string()))?;
    // A constant expression has no graph: every partial is zero.
    let refs: Vec<&Tensor<f64>> = leaves.iter().map(|(_, t)| t).collect();
    let partials: Vec<(String, f64)> = match args.mode {
        Mode::Reverse => {
            let grads = if f.is_tracked() { gradients(&f, &refs, None, false) } else { vec![None; refs.len()] };
            leaves.iter().zip(grads).map(|((n, _), g)| (n.clone(), g.map_or(0.0, |g| g.item()))).collect()
        }
        Mode::Forward => {
            let wrt = match (&args.wrt, leaves.len()) {
                (Some(w), _) => w.clone(),
                (None, 1) => leaves[0].0.clone(),
                (None, _) => {
                    return Err(CliError::Usage("--mode forward needs --wrt VARIABLE (one sweep per variable)".into()))
                }
            };
            let Some(leaf) = vars.get(&wrt) else {
                return Err(CliError::Usage(format!("--wrt: '{wrt}' is not one of the variables given with --at")));
            };
            let tangent = jvp_sweep(&[&f], &[(leaf, Tensor::scalar(1.0))], false).remove(0).item();
            vec![(wrt, tangent)]
        }
    };
    // Row i of the Hessian: one forward sweep, seeded on variable i, over the recorded
    // gradient computation.
    let hessian: Option<Vec<Vec<f64>>> = args.hessian.then(|| {
        if !f.is_tracked() {
            return vec![vec![0.0; refs.len()]; refs.len()];
        }
        let grads: Vec<Tensor<f64>> =
            gradients(&f, &refs, None, true).into_iter().map(|g| g.unwrap_or_else(|| Tensor::scalar(0.0))).collect();
        let grad_refs: Vec<&Tensor<f64>> = grads.iter().collect();
        let columns: Vec<Vec<f64>> = refs
            .iter()
            .map(|x| jvp_sweep(&grad_refs, &[(x, Tensor::scalar(1.0))], false).iter().map(Tensor::item).collect())
            .collect();
        (0..refs.len()).map(|i| (0..refs.len()).map(|j| columns[j][i]).collect()).collect()
    });
    let value = f.item();
    if args.json {
        // Non-finite numbers are spelt "NaN", "inf", "-inf" (see adjoint::json).
        let number = adjoint::json::number;
        let gradient: Map<String, Value> = partials.iter().map(|(n, d)| (n.clone(), number(*d))).collect();
        let mut out = json!({ "value": number(value), "gradient": gradient });
        if let Some(h) = &hessian {
            let rows: Map<String, Value> = leaves
                .iter()
                .zip(h)
                .map(|((ni, _), row)| {
                    let cols: Map<String, Value> =
                        leaves.iter().zip(row).map(|((nj, _), v)| (nj.clone(), number(*v))).collect();
                    (ni.clone(), Value::Object(cols))
                })
                .collect();
            out["hessian"] = Value::Object(rows);
        }
        println!("{}", super::json_line(&out));
    } else {
        let names: Vec<&str> = at.iter().map(|(n, _)| n.as_str()).collect();
        println!("f({}) = {value}", names.join(", "));
        for (n, d) in &partials {
            println!("∂f/∂{n} = {d}");
        }
        if let Some(h) = &hessian {
            println!("Hessian:");
            let width = h.iter().flatten().map(|v| format!("{v:.6}").len()).max().unwrap_or(1);
            print!("{:>4}", "");
            for n in &names {
                print!("  {n:>width$}");
            }
            println!();
            for (n, row) in names.iter().zip(h) {
                print!("{n:>4}");
                for v in row {
                    print!("  {v:>width$.6}");
                }
                println!();
            }
        }
    }
    Ok(())
}
