//! `adjoint graph`: the computation graph as DOT and SVG, with values and adjoints.

use std::path::PathBuf;

use clap::Args;

use super::trace::parse_input;
use super::CliError;
use adjoint_explain::graph::{to_dot, to_svg};
use adjoint_explain::trace::{Trace, TraceOptions};

/// Arguments of `adjoint graph`.
#[derive(Args, Debug)]
pub struct GraphArgs {
    /// The expression.
    #[arg(allow_hyphen_values = true)]
    expression: String,
    /// Where to evaluate: NAME=VALUE pairs, e.g. x=2,y=8.
    #[arg(long, default_value = "")]
    at: String,
    /// sin, cos and tan take degrees.
    #[arg(long)]
    degrees: bool,
    /// Output path without extension: writes PATH.dot and PATH.svg.
    #[arg(long, default_value = "graph")]
    out: PathBuf,
    /// Replace PATH.dot and PATH.svg if they exist.
    #[arg(long)]
    force: bool,
}

pub(crate) fn run(args: GraphArgs) -> Result<(), CliError> {
    let (expr, at) = parse_input(&args.expression, &args.at)?;
    let (dot, svg) = (args.out.with_extension("dot"), args.out.with_extension("svg"));
    for path in [&dot, &svg] {
        crate::pages::check_target("--out", path, args.force)?;
    }
    let options = TraceOptions { forward_wrt: None, reverse: true, degrees: args.degrees };
    let trace = Trace::record(&expr, &at, &options).map_err(|e| CliError::Usage(e.to_string()))?;
    for (path, text) in [(&dot, to_dot(&trace)), (&svg, to_svg(&trace))] {
        crate::pages::write_file(path, text.as_bytes())?;
    }
    println!("wrote {} and {} ({} nodes)", dot.display(), svg.display(), trace.steps.len());
    Ok(())
}
