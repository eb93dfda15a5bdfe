//! `adjoint compare`: symbolic differentiation, finite differences, forward mode and reverse
//! mode side by side, with their costs and errors.

use clap::Args;

use super::trace::parse_input;
use super::CliError;
use adjoint::expr::fmt_num;
use adjoint_explain::compare::compare;

/// Arguments of `adjoint compare`.
#[derive(Args, Debug)]
pub struct CompareArgs {
    /// The expression.
    #[arg(allow_hyphen_values = true)]
    expression: String,
    /// Where to evaluate: NAME=VALUE pairs, e.g. x=2,y=8.
    #[arg(long, default_value = "")]
    at: String,
}

pub(crate) fn run(args: CompareArgs) -> Result<(), CliError> {
    let (expr, at) = parse_input(&args.expression, &args.at)?;
    let c = compare(&expr, &at).map_err(|e| CliError::Usage(e.to_string()))?;
    let point: Vec<String> = at.iter().map(|(n, v)| format!("{n} = {v}")).collect();
    println!(
        "f = {} at {}\nf = {}   ({} nodes as an expression, {} primitive operations when recorded)\n",
        shorten(&args.expression, 200),
        point.join(", "),
        fmt_num(c.value),
        c.f_size,
        c.primitives
    );
    println!(
        "Exact partials (reverse mode): {}\n",
        c.variables
            .iter()
            .zip(&c.exact)
            .map(|(v, e)| format!("∂f/∂{v} = {}", fmt_num(*e)))
            .collect::<Vec<_>>()
            .join(", ")
    );

    println!("1. Symbolic differentiation: a new expression per variable; the rules copy subexpressions, so it swells");
    for (v, s) in c.variables.iter().zip(&c.symbolic) {
        match &s.expression {
            None => println!(
                "   ∂f/∂{v}: more than {} nodes as differentiated (f has {}): expression swell; not built",
                s.raw_size, c.f_size
            ),
            Some(e) => {
                if s.simplified_size <= 2_000 {
                    println!("   ∂f/∂{v} = {e}");
                } else {
                    println!("   ∂f/∂{v} = ({} nodes; not printed)", s.simplified_size);
                }
                println!(
                    "      {} nodes as differentiated, {} after simplification (f has {}); value {}",
                    s.raw_size,
                    s.simplified_size,
                    c.f_size,
                    fmt_num(s.value)
                );
            }
        }
    }

    println!("\n2. Finite differences: truncation error shrinks with h until rounding error takes over");
    let mut header = format!("   {:>7}", "h");
    for v in &c.variables {
        header += &format!("  {:>14}  {:>14}", format!("forward ∂{v}"), format!("central ∂{v}"));
    }
    println!("{header}");
    for row in &c.finite {
        let mut line = format!("   {:>7}", format!("1e-{}", (-row.h.log10()).round()));
        for (f, ce) in row.forward_error.iter().zip(&row.central_error) {
            line += &format!("  {:>14.3e}  {:>14.3e}", f, ce);
        }
        println!("{line}");
    }
    println!("   (absolute errors against the exact partials)");

    println!(
        "\n3. Forward mode: one sweep per input, {} sweeps here: {}",
        c.variables.len(),
        c.variables
            .iter()
            .zip(&c.forward_mode)
            .map(|(v, d)| format!("∂f/∂{v} = {}", fmt_num(*d)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("4. Reverse mode: one sweep for all {} partials", c.variables.len());

    println!("\nCost in primitive evaluations, and the largest error:");
    let width = c.costs.iter().map(|(m, ..)| m.chars().count()).max().unwrap_or(0);
    for (method, cost, err) in &c.costs {
        let pad = " ".repeat(width - method.chars().count());
        println!("   {method}{pad}  {cost:>8}   error {err:.2e}");
    }
    if !c.disagreements.is_empty() {
        println!("\nDISAGREEMENT: the methods do not agree at this point:");
        for d in &c.disagreements {
            println!("   ! {d}");
        }
    }
    Ok(())
}

/// The first `max` characters of `text`, with an ellipsis and the full length when cut, so a
/// generated expression of megabytes does not flood the terminal.
fn shorten(text: &str, max: usize) -> String {
    let count = text.chars().count();
    if count <= max {
        return text.to_string();
    }
    let head: String = text.chars().take(max).collect();
    format!("{head}… ({count} characters)")
}

#[cfg(test)]
mod tests {
    #[test]
    fn long_expressions_are_shortened() {
        assert_eq!(super::shorten("x*y", 200), "x*y");
        let long = "x+".repeat(300) + "x";
        let short = super::shorten(&long, 200);
        assert!(short.starts_with("x+x+"));
        assert!(short.ends_with("(601 characters)"), "{short}");
        assert!(short.chars().count() < 230);
    }
}
