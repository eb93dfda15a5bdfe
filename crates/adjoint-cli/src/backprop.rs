//! `adjoint backprop`: a small network's backward pass, layer by layer, with the four
//! backpropagation equations checked numerically.

use clap::Args;

use super::CliError;
use adjoint::nn::Activation;
use adjoint_explain::backprop::explain;

/// Arguments of `adjoint backprop`.
#[derive(Args, Debug)]
pub struct BackpropArgs {
    /// Layer widths, input first.
    #[arg(long, value_delimiter = ',', default_value = "4,5,3", action = clap::ArgAction::Set)]
    layers: Vec<usize>,
    /// The activation of every layer: sigmoid, tanh, relu, leaky-relu[:α].
    #[arg(long, default_value = "sigmoid")]
    activation: String,
    /// Examples in the batch.
    #[arg(long, default_value_t = 2)]
    batch: usize,
    /// Seed of the weights and data.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Also write a self-contained page that steps through the forward pass and BP1–BP4
    /// with every matrix's shape and numbers.
    #[arg(long, value_name = "PAGE.html")]
    html: Option<std::path::PathBuf>,
    /// Replace the --html file if it exists.
    #[arg(long)]
    force: bool,
}

fn human(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub(crate) fn run(args: BackpropArgs) -> Result<(), CliError> {
    let activation: Activation = args.activation.parse()?;
    if matches!(activation, Activation::Softmax) {
        return Err(CliError::Usage("softmax is not elementwise; pick sigmoid, tanh, relu or leaky-relu".into()));
    }
    if args.layers.len() < 2 || args.layers.contains(&0) || args.batch == 0 {
        return Err(CliError::Usage("--layers needs at least two positive widths and --batch at least 1".into()));
    }
    if args.layers.iter().try_fold(1usize, |acc, &w| acc.checked_mul(w)).is_none_or(|n| n > 1 << 26) {
        return Err(CliError::Usage("the network is too large to explain; use small widths".into()));
    }
    // f64 weights, activations and deltas for the batch: checked before building.
    let widths: Vec<u128> = args.layers.iter().map(|&w| w as u128).collect();
    let parameters: u128 = widths.windows(2).map(|p| p[0] * p[1] + p[1]).sum();
    crate::limits::check_bytes(
        "the explained network",
        8 * (3 * parameters + 4 * args.batch as u128 * widths.iter().sum::<u128>()),
    )?;
    if let Some(path) = &args.html {
        crate::pages::check_target("--html", path, args.force)?;
        // A page is for reading: every number of every matrix is on it.
        let numbers: usize = args.layers.windows(2).map(|w| w[0] * w[1] + args.batch * (w[0] + 3 * w[1])).sum();
        if numbers > 20_000 {
            return Err(CliError::Usage(format!(
                "--html shows every number; {numbers} are too many for a page (choose smaller --layers or --batch)"
            )));
        }
    }
    let reports = explain(&args.layers, activation, args.batch, args.seed);
    if let Some(path) = &args.html {
        let subtitle = format!(
            "network {} with {activation} on every layer, batch {}, C = 1/(2B) Σ ‖aᴸ − y‖²",
            args.layers.iter().map(ToString::to_string).collect::<Vec<_>>().join("-"),
            args.batch
        );
        let page = adjoint_explain::html::backprop_page(&reports, "Backpropagation, layer by layer", &subtitle);
        crate::pages::write(path, &page)?;
    }
    println!(
        "Network {} with {activation} on every layer, batch {}, C = 1/(2B) Σ ‖aᴸ − y‖²",
        args.layers.iter().map(ToString::to_string).collect::<Vec<_>>().join("-"),
        args.batch
    );
    println!("Forward: zˡ = aˡ⁻¹·Wˡ + bˡ, aˡ = σ(zˡ). Backward, from the last layer:\n");
    for r in reports.iter().rev() {
        let (i, o) = r.widths;
        println!("layer {} ({i} → {o})", r.index);
        println!("  shapes: z {:?}, a {:?}, δ {:?}, ∂W {:?}", r.shapes[0], r.shapes[1], r.shapes[2], r.shapes[3]);
        println!(
            "  the Jacobian ∂z/∂W per example would be {o} × {} = {} entries (W copied into staggered rows), ∂a/∂z {o} × {o} (diagonal);",
            human(i * o),
            human(r.jacobian_entries)
        );
        println!(
            "  the vector-Jacobian products store δ, ∂W and ∂b: {} numbers for the whole batch",
            human(r.entries_used)
        );
        let bp = if r.index == reports.len() {
            "BP1 δᴸ = (aᴸ − y)/B ⊙ σ'(zᴸ)"
        } else {
            "BP2 δˡ = (δˡ⁺¹·Wˡ⁺¹ᵀ) ⊙ σ'(zˡ)"
        };
        println!("  {bp:<34} max |hand − engine| = {:.1e}", r.errors[0]);
        println!("  {:<34} max |hand − engine| = {:.1e}", "BP3 ∂C/∂bˡ = Σ_batch δˡ", r.errors[1]);
        println!("  {:<34} max |hand − engine| = {:.1e}\n", "BP4 ∂C/∂Wˡ = aˡ⁻¹ᵀ·δˡ", r.errors[2]);
    }
    let ok = reports.iter().all(|r| r.errors.iter().all(|&e| e < 1e-9));
    println!(
        "{}",
        if ok {
            "All four equations hold for this network."
        } else {
            "An equation does not hold: this is a bug, please report it."
        }
    );
    if ok {
        Ok(())
    } else {
        Err(CliError::Internal("backpropagation equations do not match the engine".into()))
    }
}
