//! `adjoint inspect`: activations and gradients per layer of a network at initialisation, on a
//! batch of the bundled MNIST, for one initialiser or several side by side; or, for a trained
//! language model (`--model RUN --prompt TEXT`), what each attention head attends to.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use clap::Args;
use rand::SeedableRng;
use serde_json::json;

use super::CliError;
use crate::plot::line_chart;
use adjoint::nn::inspect::{inspect, LayerStats};
use adjoint::nn::{mlp, Activation, Architecture, Init, Network};
use adjoint_explain::html::HeadWeights;

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
    /// Where to write the pictures: PATH.svg (histograms) and PATH-layers.svg (curves), or
    /// with --model PATH-attention.svg (every head's map).
    #[arg(long, default_value = "inspect")]
    out: PathBuf,
    /// A language model's run folder (adjoint train --text): show, for --prompt, what every
    /// head of every attention layer attends to.
    #[arg(long, requires = "prompt", conflicts_with_all = ["arch", "compare_inits"])]
    model: Option<PathBuf>,
    /// The text whose attention --model shows (at most the model's context, in its
    /// vocabulary).
    #[arg(long, requires = "model")]
    prompt: Option<String>,
}

/// `inspect --model RUN --prompt TEXT`: each attention head's weights for the prompt, as
/// text (or JSON), a picture of every head, and with --html a page to step through them.
fn run_attention(args: &InspectArgs, model: &Path, prompt: &str) -> Result<(), CliError> {
    let usage = |m: String| Err(CliError::Usage(m));
    let picture = attention_picture(&args.out);
    if let Some(path) = &args.html {
        crate::pages::check_target("--html", path, args.force)?;
        if same_file(path, &picture) {
            return usage(format!("--html {} is also the picture of --out: give them different names", path.display()));
        }
    }
    crate::pages::check_target("--out", &picture, args.force)?;
    let Some((network, _, vocab)) = crate::run::load_language_model(model)? else {
        return usage(crate::sample::not_a_language_model(model));
    };
    // The maps grow with the square of the prompt: beyond a few hundred characters they are
    // no longer pictures anyone reads (and would take gigabytes).
    let most = network.architecture.inputs().min(MAX_PROMPT);
    let ids = crate::sample::encode_prompt(&vocab, prompt)?;
    if ids.is_empty() || ids.len() > most {
        return usage(format!(
            "--prompt must have 1 to {most} characters (the model's context, at most {MAX_PROMPT} drawn), got {}",
            ids.len()
        ));
    }
    let x = adjoint::Tensor::from_vec(ids.iter().map(|&i| i as f32).collect(), &[1, ids.len()]);
    let maps = network.attention_maps(&x);
    if maps.is_empty() {
        return usage(format!(
            "{} has no attention layers ({}): nothing to show",
            model.display(),
            network.architecture.spec()
        ));
    }
    let tokens: Vec<String> = prompt.chars().map(String::from).collect();
    let n = tokens.len();
    let layers: Vec<(String, Vec<HeadWeights>)> = maps
        .iter()
        .map(|(index, w)| {
            let heads = w.shape()[1];
            let values = w.to_vec();
            let per_head = (0..heads)
                .map(|h| {
                    (0..n)
                        .map(|i| values[(h * n + i) * n..(h * n + i + 1) * n].iter().map(|&v| v as f64).collect())
                        .collect()
                })
                .collect();
            (format!("layer {index}"), per_head)
        })
        .collect();
    let size = (18.0 * n as f64).clamp(120.0, 360.0);
    let cols = layers.iter().map(|(_, h)| h.len()).max().unwrap_or(1);
    let (cw, ch) = (size + 70.0, size + 80.0);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{:.0}\" height=\"{:.0}\" font-family=\"monospace\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
        cw * cols as f64,
        ch * layers.len() as f64
    );
    for (r, (name, heads)) in layers.iter().enumerate() {
        for (c, weights) in heads.iter().enumerate() {
            let (x0, y0) = (c as f64 * cw + 50.0, r as f64 * ch + 50.0);
            let _ = writeln!(
                svg,
                "<text x=\"{x0}\" y=\"{:.0}\" font-weight=\"bold\">{name}, head {}</text>",
                y0 - 30.0,
                c + 1
            );
            svg += &adjoint_explain::html::attention_map(&tokens, weights, x0, y0, size);
        }
    }
    svg += "</svg>\n";
    let title = format!("What each attention head of {} attends to", model.display());
    if args.json {
        let json = json!({
            "tokens": tokens,
            "layers": layers.iter().map(|(name, heads)| json!({ "layer": name, "heads": heads })).collect::<Vec<_>>(),
        });
        println!("{}", super::json_line(&json));
    } else {
        println!("{title}, for {:?}", prompt);
        for (name, heads) in &layers {
            for (k, weights) in heads.iter().enumerate() {
                let (entropy, distance) = adjoint_explain::html::head_summary(weights);
                let last = &weights[n - 1];
                let mut order: Vec<usize> = (0..n).collect();
                order.sort_by(|&a, &b| last[b].total_cmp(&last[a]));
                let top: Vec<String> =
                    order.iter().take(3).map(|&j| format!("{:?}@{} {:.2}", tokens[j], j + 1, last[j])).collect();
                println!(
                    "  {name} head {}: spread {entropy:.2} bits, {distance:.1} positions back; the last character looks at {}",
                    k + 1,
                    top.join(", ")
                );
            }
        }
    }
    crate::pages::write_file(&picture, svg.as_bytes())?;
    eprintln!("wrote {}", picture.display());
    if let Some(path) = &args.html {
        let subtitle = format!("prompt {:?}; {}", prompt, network.architecture.spec());
        crate::pages::write(path, &adjoint_explain::html::attention_page(&tokens, &layers, &title, &subtitle))?;
    }
    Ok(())
}

/// The longest prompt `inspect --model` draws.
pub const MAX_PROMPT: usize = 256;

/// The picture `inspect --model` writes for `--out PATH`: PATH-attention.svg.
fn attention_picture(out: &Path) -> PathBuf {
    with_suffix(out, "-attention.svg")
}

/// `out` without its extension, then `suffix` (names that are not UTF-8 kept as they are).
fn with_suffix(out: &Path, suffix: &str) -> PathBuf {
    let mut name = out.with_extension("").into_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

pub(crate) fn run(mut args: InspectArgs) -> Result<(), CliError> {
    let usage = |m: String| CliError::Usage(m);
    if let (Some(model), Some(prompt)) = (&args.model, &args.prompt) {
        return run_attention(&args, model, prompt);
    }
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
    [out.with_extension("svg"), with_suffix(out, "-layers.svg")]
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
