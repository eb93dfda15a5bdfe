//! The `adjoint` command line: argument parsing and dispatch over the `adjoint` library and
//! `adjoint-explain`. Each subcommand lives in its own file and returns a [`CliError`]
//! instead of panicking; [`CliError::from`] conversions in `errors.rs` decide exit codes in
//! one place, and `main` prints the message and exits with its code.

mod alloc;
mod backprop;
mod bench;
mod compare;
mod config;
mod distributed;
mod errors;
mod eval;
mod grad;
mod graph;
mod inspect;
mod limits;
mod mnist;
mod pages;
#[cfg(feature = "charts")]
mod plot;
mod run;
mod sample;
mod trace;
mod train;

use clap::{Parser, Subcommand};

#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;

pub(crate) use errors::CliError;

/// Automatic differentiation and neural-network training.
#[derive(Parser, Debug)]
#[command(name = "adjoint", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Differentiate a scalar expression: its value and every partial derivative.
    Grad(grad::GradArgs),
    /// Show the evaluation trace with every tangent and adjoint, as the lectures write it.
    Trace(trace::TraceArgs),
    /// Draw the computation graph (DOT and SVG) with each node's value and adjoint.
    Graph(graph::GraphArgs),
    /// Differentiate four ways (symbolic, finite differences, forward, reverse) and compare costs.
    Compare(compare::CompareArgs),
    /// Show each layer's activations and gradients at initialisation (Glorot & Bengio).
    Inspect(inspect::InspectArgs),
    /// Lay open a small network's backward pass and check the four backpropagation equations.
    Backprop(backprop::BackpropArgs),
    /// Train a classifier (by default the lectures' 784-100-10 tanh network on the bundled MNIST), or a language model (--text).
    Train(Box<train::TrainArgs>),
    /// Evaluate a trained model: test accuracy and confusion matrix.
    Eval(eval::EvalArgs),
    /// Classify one image with a trained model.
    Predict(eval::PredictArgs),
    /// Continue a text with a language model trained by `adjoint train --text`.
    Sample(sample::SampleArgs),
    /// Measure training steps, scalar graphs and matrix products on this machine.
    Bench(bench::BenchArgs),
}

/// Runs the parsed command.
fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Grad(args) => grad::run(args),
        Command::Train(args) => train::run(*args),
        Command::Trace(args) => trace::run(args),
        Command::Graph(args) => graph::run(args),
        Command::Compare(args) => compare::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Backprop(args) => backprop::run(args),
        Command::Eval(args) => eval::eval(args),
        Command::Predict(args) => eval::predict(args),
        Command::Sample(args) => sample::run(args),
        Command::Bench(args) => bench::run(args),
    }
}

/// Parses `x=2,y=8` into named values, in order.
pub(crate) fn parse_assignments(text: &str) -> Result<Vec<(String, f64)>, CliError> {
    let mut out: Vec<(String, f64)> = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((name, value)) = part.split_once('=') else {
            return Err(CliError::Usage(format!("--at: expected NAME=VALUE, got '{part}'")));
        };
        let name = name.trim();
        let valid = name.chars().next().is_some_and(|c| c.is_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_alphanumeric() || c == '_');
        if !valid {
            return Err(CliError::Usage(format!("--at: '{name}' is not a variable name")));
        }
        let text = value.trim();
        let value: f64 =
            text.parse().map_err(|_| CliError::Usage(format!("--at: value of '{name}' is not a number: '{text}'")))?;
        // A number too large for f64 parses as infinity: say so rather than go on with it.
        if value.is_infinite() && !text.to_ascii_lowercase().contains("inf") {
            return Err(CliError::Usage(format!("--at: value of '{name}' ({text}) is too large for a 64-bit float")));
        }
        if out.iter().any(|(n, _)| n == name) {
            return Err(CliError::Usage(format!("--at: '{name}' is given twice")));
        }
        out.push((name.to_string(), value));
    }
    Ok(out)
}

/// JSON on one line with a space after each `:` and `,`, as the documented outputs show.
pub(crate) fn json_line(value: &serde_json::Value) -> String {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let items: Vec<String> =
                map.iter().map(|(k, v)| format!("{}: {}", Value::from(k.as_str()), json_line(v))).collect();
            format!("{{{}}}", items.join(", "))
        }
        Value::Array(items) => format!("[{}]", items.iter().map(json_line).collect::<Vec<_>>().join(", ")),
        other => other.to_string(),
    }
}

/// A closed pipe (`adjoint eval … | head -1`) ends the process quietly, as it does other Unix
/// tools: Rust ignores SIGPIPE, which would turn the failed print into a panic.
fn end_quietly_on_a_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: restoring a signal's default action, before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() {
    end_quietly_on_a_closed_pipe();
    // A bug must not show users a backtrace: report it as an internal failure (exit 1).
    std::panic::set_hook(Box::new(|info| {
        // An anomaly is caught and reported by the command that asked for it.
        if info.payload().is::<adjoint::autodiff::Anomaly>() {
            return;
        }
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("unknown panic");
        eprintln!("adjoint: internal error: {msg}");
    }));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Under an MPI launcher every rank parses the same arguments: rank 0 speaks for all.
        Err(e) if e.use_stderr() && adjoint::dist::launcher_rank().is_some_and(|r| r > 0) => std::process::exit(2),
        Err(e) => e.exit(),
    };
    // Expressions are processed recursively: give the work a large stack (their size is
    // bounded by the parser, so this bounds the depth).
    let worker = std::thread::Builder::new().stack_size(256 << 20).spawn(move || run(cli));
    let code = match worker.map(|w| w.join()) {
        Ok(Ok(Ok(()))) => 0,
        Ok(Ok(Err(e))) => {
            if !matches!(e, CliError::Reported(_)) {
                eprintln!("adjoint: {e}");
            }
            e.exit_code()
        }
        Ok(Err(_)) => 1, // the panic hook has reported it
        Err(e) => {
            eprintln!("adjoint: internal error: cannot start a worker thread: {e}");
            1
        }
    };
    std::process::exit(code);
}
