//! `adjoint inspect`: activations and gradients per layer of a network at initialisation, on a
//! batch of the bundled MNIST, for one initialiser or several side by side.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use clap::Args;
use rand::SeedableRng;
use serde_json::json;

use super::CliError;
use crate::plot::line_chart;
use adjoint::nn::inspect::{inspect, LayerStats};
use adjoint::nn::{mlp, Activation, Architecture, Init, Network};

/// Arguments of `adjoint inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Layer widths, input first (784 for MNIST).
    #[arg(long, value_delimiter = ',', default_value = "784,500,500,500,500,500,10", action = clap::ArgAction::Set)]
    layers: Vec<usize>,
    /// Any network in the layer language of `train --arch` (e.g. lenet) instead of
    /// --layers and --activation.
    #[arg(long)]
    arch: Option<String>,
    /// Hidden activation: relu, leaky-relu[:α], prelu[:α], sigmoid, tanh.
    #[arg(long, default_value = "tanh")]
    activation: String,
    /// Weight init [default: the activation's].
    #[arg(long)]
    init: Option<String>,
    /// Lay normal:0.01, xavier and he (or the inits given with --inits) side by side.
    #[arg(long)]
    compare_inits: bool,
    /// The inits for --compare-inits, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "normal:0.01,xavier,he", action = clap::ArgAction::Set, requires = "compare_inits")]
    inits: Vec<String>,
    /// Examples in the batch (from the bundled MNIST test set).
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Seed of the weights.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print {"layers": [...]} (or {"inits": [{"init", "layers"}]} with --compare-inits).
    #[arg(long)]
    json: bool,
    /// Also write a self-contained page: the histograms per layer, a selector for the
    /// initialiser and a slider over the layers.
    #[arg(long, value_name = "PAGE.html")]
    html: Option<PathBuf>,
    /// Replace the --html file and the pictures if they exist.
    #[arg(long)]
    force: bool,
    /// Where to write the pictures: PATH.svg (histograms) and PATH-layers.svg (curves).
    #[arg(long, default_value = "inspect")]
    out: PathBuf,
}

pub(crate) fn run(mut args: InspectArgs) -> Result<(), CliError> {
    let usage = |m: String| CliError::Usage(m);
    // The bundled test set has 10,000 images: a larger batch is all of them, and says so.
    args.batch = args.batch.min(10_000);
    if let Some(path) = &args.html {
        crate::pages::check_target("--html", path, args.force)?;
        if pictures(&args.out).iter().any(|p| same_file(p, path)) {
            return Err(usage(format!(
                "--html {} is also one of the pictures of --out {}: give them different names",
                path.display(),
                args.out.display()
            )));
        }
    }
    for path in pictures(&args.out) {
        crate::pages::check_target("--out", &path, args.force)?;
    }
    if let Some(spec) = &args.arch {
        return run_arch(&args, spec);
    }
    let activation: Activation = args.activation.parse()?;
    if args.layers.len() < 2 || args.layers.contains(&0) {
        return Err(usage(format!("--layers needs at least two positive widths, got {:?}", args.layers)));
    }
    if args.layers[0] != 784 {
        return Err(usage(format!(
            "inspect runs on MNIST batches: the first width must be 784, got {}",
            args.layers[0]
        )));
    }
    if args.layers.last() < Some(&10) {
        return Err(usage("the last width must be at least 10 (MNIST has 10 classes)".into()));
    }
    if args.batch == 0 {
        return Err(usage("--batch must be at least 1".into()));
    }
    // Weights and their gradients, and a batch's activations and gradients, in f32, before
    // anything is allocated: a width of 10^9 is refused, not attempted.
    let widths: Vec<u128> = args.layers.iter().map(|&w| w as u128).collect();
    let parameters: u128 = widths.windows(2).map(|p| p[0] * p[1] + p[1]).sum();
    if parameters > crate::config::MAX_PARAMETERS as u128 {
        return Err(usage(format!(
            "a network of widths {} has {parameters} parameters, more than the {} allowed",
            crate::config::join(&args.layers),
            crate::config::MAX_PARAMETERS
        )));
    }
    let batch = args.batch.min(10_000) as u128;
    crate::limits::check_bytes(
        &format!("a network of widths {}", crate::config::join(&args.layers)),
        4 * (2 * parameters + 2 * batch * widths.iter().sum::<u128>()),
    )?;
    let inits: Vec<Init> = if args.compare_inits {
        args.inits.iter().map(|s| s.parse::<Init>()).collect::<Result<_, _>>()?
    } else {
        vec![match &args.init {
            Some(s) => s.parse()?,
            None => activation.default_init(),
        }]
    };
    let (_, test) = crate::mnist::bundled()?;
    let first = test.rows(0, args.batch);
    let (x, labels) = (first.x, first.labels);
    let results: Vec<(Init, Vec<LayerStats>)> = inits
        .iter()
        .map(|&init| {
            let net =
                mlp::<f32>(&args.layers, activation, Some(init), &mut rand::rngs::StdRng::seed_from_u64(args.seed));
            (init, inspect(&net, activation, &x, &labels, 30))
        })
        .collect();

    let title =
        format!("{} with {}", args.layers.iter().map(ToString::to_string).collect::<Vec<_>>().join("-"), activation);
    report(&args, &title, &results)
}

/// `inspect --arch`: the same statistics for any architecture (convolutions count channels
/// as units).
fn run_arch(args: &InspectArgs, spec: &str) -> Result<(), CliError> {
    let usage = |m: String| CliError::Usage(m);
    if args.batch == 0 {
        return Err(usage("--batch must be at least 1".into()));
    }
    let parse =
        |init: Option<Init>| Architecture::parse(spec, &[1, 28, 28], init).map_err(|e| usage(format!("--arch: {e}")));
    let arch = parse(None)?;
    if arch.parameter_count() > crate::config::MAX_PARAMETERS {
        return Err(usage(format!("--arch {spec}: {} parameters is too many", arch.parameter_count())));
    }
    let per_example: u128 = arch.shapes()?.iter().map(|s| s.iter().product::<usize>() as u128).sum();
    let batch = args.batch.min(10_000) as u128;
    crate::limits::check_bytes(
        &format!("--arch {spec}"),
        4 * (2 * arch.parameter_count() as u128 + 3 * batch * per_example),
    )?;
    let activation = arch.activation().unwrap_or(Activation::Identity);
    let inits: Vec<Option<Init>> = if args.compare_inits {
        args.inits.iter().map(|s| s.parse::<Init>().map(Some)).collect::<Result<_, _>>()?
    } else {
        vec![args.init.as_deref().map(str::parse).transpose()?]
    };
    let (_, test) = crate::mnist::bundled()?;
    let first = test.rows(0, args.batch);
    let mut results = Vec::new();
    for init in inits {
        let arch = parse(init)?;
        let net = Network::<f32>::new(arch, args.seed)?;
        let shown = init.unwrap_or(activation.default_init());
        results.push((shown, inspect(&net.model, activation, &first.x, &first.labels, 30)));
    }
    report(args, &arch.spec(), &results)
}

fn report(args: &InspectArgs, title: &str, results: &[(Init, Vec<LayerStats>)]) -> Result<(), CliError> {
    if let Some(path) = &args.html {
        let named: Vec<(String, Vec<LayerStats>)> = results.iter().map(|(i, s)| (i.to_string(), s.clone())).collect();
        let subtitle = format!("{title}, at initialisation, on a batch of {} MNIST images", args.batch);
        let page = adjoint_explain::html::inspect_page(
            &named,
            "Activations and gradients per layer at initialisation",
            &subtitle,
        );
        crate::pages::write(path, &page)?;
    }
    if args.json {
        let strip = |s: &[LayerStats]| -> Vec<serde_json::Value> {
            // LayerStats spell non-finite numbers out (see adjoint::json); no histograms here.
            s.iter()
                .map(|l| {
                    let mut v = serde_json::to_value(l).expect("statistics serialise");
                    if let Some(o) = v.as_object_mut() {
                        o.remove("histogram");
                    }
                    v
                })
                .collect()
        };
        let out = if args.compare_inits {
            json!({"inits": results.iter().map(|(i, s)| json!({"init": i.to_string(), "layers": strip(s)})).collect::<Vec<_>>()})
        } else {
            json!({"layers": strip(&results[0].1)})
        };
        println!("{}", super::json_line(&out));
    } else {
        println!("{title}, on a batch of {} MNIST images\n", args.batch);
        for (init, stats) in results {
            println!("init {init}:");
            println!("  layer  units      mean       std   ‖∂L/∂W‖  dead   distribution");
            for l in stats {
                let dead = l.dead_fraction.map_or("   -".to_string(), |d| format!("{:>3.0}%", 100.0 * d));
                let kind = if l.index == stats.len() { " (logits)" } else { "" };
                println!(
                    "  {:>5}  {:>5}  {:>8.4}  {:>8.4}  {:>8.2e}  {dead}   {}{kind}",
                    l.index,
                    l.units,
                    l.mean,
                    l.std,
                    l.grad_norm,
                    sparkline(l)
                );
            }
            println!();
        }
    }
    let [svg, curves] = pictures(&args.out);
    crate::pages::write_file(&svg, histogram_grid(results).as_bytes())?;
    draw_curves(&curves, results)?;
    if !args.json {
        println!(
            "pictures: {} (activation histograms), {} (std and gradient norm per layer)",
            svg.display(),
            curves.display()
        );
    }
    Ok(())
}

fn sparkline(l: &LayerStats) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let Some(h) = &l.histogram else { return String::new() };
    let max = h.counts.iter().copied().max().unwrap_or(1).max(1) as f64;
    let line: String =
        h.counts.iter().map(|&c| if c == 0 { ' ' } else { BARS[((c as f64 / max) * 7.0).round() as usize] }).collect();
    format!("[{:.2}, {:.2}] {line}", h.edges[0], h.edges[h.edges.len() - 1])
}

/// Whether two paths name the same file (compared as absolute paths; neither need exist).
fn same_file(a: &Path, b: &Path) -> bool {
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    absolute(a) == absolute(b)
}

/// The two pictures `inspect` writes for `--out PATH`: PATH.svg and PATH-layers.svg.
fn pictures(out: &Path) -> [PathBuf; 2] {
    [out.with_extension("svg"), PathBuf::from(format!("{}-layers.svg", out.with_extension("").display()))]
}

fn draw_curves(path: &Path, results: &[(Init, Vec<LayerStats>)]) -> Result<(), CliError> {
    let std: Vec<(String, Vec<(f64, f64)>)> = results
        .iter()
        .map(|(i, s)| (format!("std, {i}"), s.iter().map(|l| (l.index as f64, l.std)).collect()))
        .collect();
    let grad: Vec<(String, Vec<(f64, f64)>)> = results
        .iter()
        .map(|(i, s)| {
            (
                format!("log10 ‖∂L/∂W‖, {i}"),
                s.iter().map(|l| (l.index as f64, l.grad_norm.max(1e-30).log10())).collect(),
            )
        })
        .collect();
    let series: Vec<(&str, Vec<(f64, f64)>)> = std.iter().chain(&grad).map(|(n, s)| (n.as_str(), s.clone())).collect();
    line_chart(path, "Activation std and weight-gradient norm per layer", "layer", "value", &series)
        .map_err(CliError::writing)
}

/// Rows are layers, columns initialisers; each cell a histogram of the layer's outputs.
fn histogram_grid(results: &[(Init, Vec<LayerStats>)]) -> String {
    let (cell_w, cell_h, top, left) = (260.0, 110.0, 40.0, 70.0);
    let layers = results[0].1.len();
    let (w, h) = (left + cell_w * results.len() as f64 + 20.0, top + cell_h * layers as f64 + 20.0);
    let mut svg = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w:.0}\" height=\"{h:.0}\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n");
    for (c, (init, stats)) in results.iter().enumerate() {
        let x0 = left + c as f64 * cell_w;
        let _ = writeln!(
            svg,
            "<text x=\"{:.0}\" y=\"24\" font-size=\"14\" font-weight=\"bold\">init {init}</text>",
            x0 + 10.0
        );
        for (r, l) in stats.iter().enumerate() {
            let y0 = top + r as f64 * cell_h;
            if c == 0 {
                let name = if r + 1 == layers { "output".to_string() } else { format!("layer {}", l.index) };
                let _ = writeln!(svg, "<text x=\"8\" y=\"{:.0}\">{name}</text>", y0 + cell_h / 2.0);
            }
            let Some(hist) = &l.histogram else { continue };
            let max = hist.counts.iter().copied().max().unwrap_or(1).max(1) as f64;
            let (pw, ph) = (cell_w - 30.0, cell_h - 40.0);
            let bw = pw / hist.counts.len() as f64;
            for (k, &count) in hist.counts.iter().enumerate() {
                let bh = ph * count as f64 / max;
                let _ = writeln!(
                    svg,
                    "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" fill=\"#4a78c2\"/>",
                    x0 + 10.0 + k as f64 * bw,
                    y0 + 8.0 + ph - bh,
                    (bw - 1.0).max(0.5)
                );
            }
            let _ = writeln!(
                svg,
                "<line x1=\"{:.0}\" y1=\"{:.1}\" x2=\"{:.0}\" y2=\"{:.1}\" stroke=\"#333\"/>",
                x0 + 10.0,
                y0 + 8.0 + ph,
                x0 + 10.0 + pw,
                y0 + 8.0 + ph
            );
            let caption = format!(
                "[{:.2}, {:.2}]  std {:.3}  ‖∂W‖ {:.1e}{}",
                hist.edges[0],
                hist.edges[hist.edges.len() - 1],
                l.std,
                l.grad_norm,
                l.dead_fraction.map_or(String::new(), |d| format!("  dead {:.0}%", 100.0 * d))
            );
            let _ = writeln!(svg, "<text x=\"{:.0}\" y=\"{:.1}\">{caption}</text>", x0 + 10.0, y0 + 8.0 + ph + 14.0);
        }
    }
    svg + "</svg>\n"
}
