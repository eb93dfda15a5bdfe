//! `adjoint trace`: the evaluation trace of an expression with tangents and adjoints, as the
//! lectures write it.

use clap::{Args, ValueEnum};

use super::{parse_assignments, CliError};
use adjoint::expr::Expr;
use adjoint_explain::trace::{Trace, TraceOptions};

/// Which sweeps to show.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TraceMode {
    /// Forward mode (tangents) and reverse mode (adjoints).
    Both,
    /// Tangents only, seeded on --wrt.
    Forward,
    /// Adjoints only.
    Reverse,
}

/// Output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns.
    Text,
    /// A markdown table.
    Markdown,
    /// {"steps": [...]}
    Json,
}

/// Arguments of `adjoint trace`.
#[derive(Args, Debug)]
pub struct TraceArgs {
    /// The expression.
    #[arg(allow_hyphen_values = true)]
    expression: String,
    /// Where to evaluate: NAME=VALUE pairs, e.g. x=2,y=8.
    #[arg(long, default_value = "")]
    at: String,
    /// Which sweeps to show.
    #[arg(long, value_enum, default_value_t = TraceMode::Both)]
    mode: TraceMode,
    /// The variable whose tangent is seeded with 1 [default: the first variable].
    #[arg(long)]
    wrt: Option<String>,
    /// sin, cos and tan take degrees (each gets a conversion step).
    #[arg(long)]
    degrees: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Also write a self-contained page that steps through the evaluation, forward mode and
    /// reverse mode (open it in a browser: → / ← / space / Home / End).
    #[arg(long, value_name = "PAGE.html")]
    html: Option<std::path::PathBuf>,
    /// Replace the --html file if it exists.
    #[arg(long)]
    force: bool,
}

/// Parses the expression and values shared by `trace`, `graph` and `compare`.
pub(crate) fn parse_input(expression: &str, at: &str) -> Result<(Expr, Vec<(String, f64)>), CliError> {
    let expr = Expr::parse(expression)
        .map_err(|e| CliError::Usage(format!("cannot parse the expression: {e}\n{}", e.pointer(expression))))?;
    let at = parse_assignments(at)?;
    if let Some(missing) = expr.variables().into_iter().find(|v| !at.iter().any(|(n, _)| n == v)) {
        return Err(CliError::Usage(format!(
            "variable '{missing}' has no value: add it to --at (e.g. --at {missing}=1)"
        )));
    }
    Ok((expr, at))
}

pub(crate) fn run(args: TraceArgs) -> Result<(), CliError> {
    let (expr, at) = parse_input(&args.expression, &args.at)?;
    let forward = args.mode != TraceMode::Reverse;
    let wrt = match (&args.wrt, forward) {
        (Some(w), _) if !at.iter().any(|(n, _)| n == w) => {
            return Err(CliError::Usage(format!("--wrt: '{w}' is not one of the variables given with --at")))
        }
        (Some(w), true) => Some(w.clone()),
        (None, true) => expr.variables().first().cloned(),
        (_, false) => None,
    };
    let options = TraceOptions { forward_wrt: wrt, reverse: args.mode != TraceMode::Forward, degrees: args.degrees };
    let trace = Trace::record(&expr, &at, &options).map_err(|e| CliError::Usage(e.to_string()))?;
    let values: Vec<String> = at.iter().map(|(n, v)| format!("{n} = {v}")).collect();
    if let Some(path) = &args.html {
        crate::pages::check_target("--html", path, args.force)?;
        let unit = if args.degrees { "degrees" } else { "radians" };
        let subtitle = format!("f = {} at {} ({unit})", args.expression, values.join(", "));
        let page = adjoint_explain::html::trace_page(&trace, "Forward and reverse mode, step by step", &subtitle);
        crate::pages::write(path, &page)?;
    }
    match args.format {
        Format::Text => {
            let unit = if args.degrees { "degrees" } else { "radians" };
            println!("f = {} at {} ({unit})\n", args.expression, values.join(", "));
            print!("{}", trace.to_text());
        }
        Format::Markdown => print!("{}", trace.to_markdown()),
        Format::Json => println!("{}", super::json_line(&trace.to_json())),
    }
    Ok(())
}
