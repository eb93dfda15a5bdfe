//! Self-contained HTML pages that step through a computation, for the lecture hall and for
//! course websites: one file, no network, no external scripts or fonts.
//!
//! # The template
//! Every page is a [`Page`]: a title and a line of context, a figure (an SVG whose elements
//! carry ids, e.g. the computation graph of [`crate::graph::to_svg_outline`]), a table whose
//! cells start empty, and a list of [`Frame`]s. Frame k highlights some figure elements,
//! explains itself in one line, and fills some cells. The page at step k shows the effect of
//! frames 1…k, so stepping back is replaying. The frames are generated in Rust from the same
//! structures the text output prints (e.g. [`Trace`]), embedded as JSON, and only displayed
//! by the page's script: the numbers cannot disagree with the text commands.
//!
//! Controls: → or space for the next step, ← for the previous one, Home to reset, End for
//! the last step, and the same as buttons; a counter shows `k / n`. Opening the file with
//! `#end` or `#step=K` in its address starts at that step, and `#keys=RRL` presses keys
//! (R →, L ←, S space, H Home, E End) through the same handler a user's keyboard reaches
//! (the browser tests use both).
//! Script errors are shown on the page in red, so a broken page cannot pass for a working one.

use std::fmt::Write;

use serde::Serialize;

use crate::trace::{fmt_num, Trace};

/// A page of the template (see the module docs).
#[derive(Debug, Clone, Serialize)]
pub struct Page {
    /// The heading.
    pub title: String,
    /// A line under the heading (what is computed, where).
    pub subtitle: String,
    /// An SVG whose elements' ids frames highlight.
    #[serde(skip)]
    pub figure: String,
    /// The table's column headings.
    pub columns: Vec<String>,
    /// The first cell of each row (the rest start empty).
    pub rows: Vec<String>,
    /// The steps.
    pub frames: Vec<Frame>,
    /// Named runs of frames (e.g. one per initialiser), each from a frame index: the page
    /// then has a selector to jump between them and a slider over the current one.
    pub groups: Vec<(String, usize)>,
    /// Page-specific CSS (e.g. panels shown only while highlighted).
    #[serde(skip)]
    pub style: String,
}

/// One step of a [`Page`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct Frame {
    /// The part of the computation (e.g. "forward evaluation", "reverse mode").
    pub phase: String,
    /// Ids of figure elements to highlight.
    pub highlight: Vec<String>,
    /// What happens, in one line.
    pub text: String,
    /// Cells to fill: (row, column, text); column 0 is the row's name.
    pub cells: Vec<(usize, usize, String)>,
    /// Rows to mark as current (empty: the rows of `cells`).
    pub focus: Vec<usize>,
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

impl Page {
    /// The page as one HTML document.
    pub fn to_html(&self) -> String {
        // `</` inside a script element would end it early, and `<!--` would start an escaped
        // section that swallows the page's script: every `<` is written as JSON's `\u003c`
        // (it only appears inside strings).
        let data = serde_json::to_string(self).expect("a page serialises").replace('<', "\\u003c");
        let mut head = String::new();
        for c in &self.columns {
            let _ = write!(head, "<th>{}</th>", escape(c));
        }
        let mut body = String::new();
        for (r, name) in self.rows.iter().enumerate() {
            let _ = write!(body, "<tr id=\"row-{r}\"><th>{}</th>", escape(name));
            for c in 1..self.columns.len() {
                let _ = write!(body, "<td id=\"cell-{r}-{c}\"></td>");
            }
            body += "</tr>\n";
        }
        TEMPLATE
            .replace("{{TITLE}}", &escape(&self.title))
            .replace("{{SUBTITLE}}", &escape(&self.subtitle))
            .replace("{{FIGURE}}", &self.figure)
            .replace("{{HEAD}}", &head)
            .replace("{{BODY}}", &body)
            .replace("{{STYLE}}", &self.style)
            .replace("{{DATA}}", &data)
    }
}

/// Signs as the lectures print them: a negative factor in parentheses.
fn factor(v: f64) -> String {
    if v < 0.0 {
        format!("({})", fmt_num(v).replace('-', "−"))
    } else {
        fmt_num(v)
    }
}

/// The page of `adjoint trace --html`: the graph beside the trace table; forward evaluation
/// node by node, then forward mode's tangents (if seeded), then reverse mode's adjoints
/// from s̄_out = 1, one frame per edge, so that the sum over paths shows where a value is
/// used twice.
pub fn trace_page(trace: &Trace, title: &str, subtitle: &str) -> Page {
    let n = trace.steps.len();
    let mut frames = Vec::new();
    let incoming = |i: usize| -> Vec<String> {
        trace.steps[i]
            .inputs
            .iter()
            .filter_map(|o| match o {
                crate::trace::Operand::Step(j) => Some(format!("edge-{j}-{i}")),
                crate::trace::Operand::Constant(_) => None,
            })
            .collect()
    };
    for (i, s) in trace.steps.iter().enumerate() {
        let definition = trace.definition(i);
        let line = format!("{} = {} = {}", s.name, definition, fmt_num(s.value));
        let mut highlight = vec![format!("node-{i}")];
        highlight.extend(incoming(i));
        frames.push(Frame {
            phase: "forward evaluation".into(),
            highlight,
            text: line,
            cells: vec![(i, 1, format!("{definition} = {}", fmt_num(s.value)))],
            ..Default::default()
        });
    }
    if let Some(seed) = &trace.seeded {
        for (i, s) in trace.steps.iter().enumerate() {
            let Some(t) = s.tangent else { continue };
            let formula = trace.tangent_formula(i);
            let numeric: Vec<String> = s
                .inputs
                .iter()
                .zip(&s.partials)
                .filter_map(|(o, p)| match (o, p) {
                    (crate::trace::Operand::Step(j), Some(p)) => {
                        Some(format!("{}×{}", factor(trace.steps[*j].tangent.unwrap_or(0.0)), factor(*p)))
                    }
                    _ => None,
                })
                .collect();
            let shown = if s.op == "input" {
                formula
            } else if numeric.is_empty() {
                format!("{formula} = {}", fmt_num(t))
            } else {
                format!("{formula} = {} = {}", numeric.join(" + "), fmt_num(t))
            };
            let mut highlight = vec![format!("node-{i}")];
            highlight.extend(incoming(i));
            frames.push(Frame {
                phase: format!("forward mode (tangents, seed {seed}' = 1)"),
                highlight,
                text: format!("{}' = {shown}", s.name),
                cells: vec![(i, 2, shown)],
                ..Default::default()
            });
        }
    }
    if trace.steps.last().and_then(|s| s.adjoint).is_some() {
        let bar = |i: usize| format!("s̄{}", i + 1);
        frames.push(Frame {
            phase: "reverse mode (adjoints)".into(),
            highlight: vec![format!("node-{}", n - 1)],
            text: format!("{} = ∂f/∂{} = 1 (seed)", bar(n - 1), trace.steps[n - 1].name),
            cells: vec![(n - 1, 3, "1 (seed)".into())],
            ..Default::default()
        });
        for i in (0..n.saturating_sub(1)).rev() {
            let s = &trace.steps[i];
            let (symbolic, numeric) = trace.adjoint_formula(i);
            let total = s.adjoint.unwrap_or(0.0);
            if s.adjoint_terms.is_empty() {
                frames.push(Frame {
                    phase: "reverse mode (adjoints)".into(),
                    highlight: vec![format!("node-{i}")],
                    text: format!("{} = 0: nothing uses {}", bar(i), s.name),
                    cells: vec![(i, 3, "0".into())],
                    ..Default::default()
                });
                continue;
            }
            let mut sum = 0.0;
            let count = s.adjoint_terms.len();
            for (m, term) in s.adjoint_terms.iter().enumerate() {
                let a = trace.steps[term.consumer].adjoint.unwrap_or(0.0);
                let contribution = a * term.partial_value;
                sum += contribution;
                let last = m + 1 == count;
                let cell = if last {
                    format!("{symbolic} = {numeric} = {}", fmt_num(total))
                } else {
                    format!("… + {} = {} so far", bar(term.consumer), fmt_num(sum))
                };
                let path = if count > 1 { format!(" (path {} of {count})", m + 1) } else { String::new() };
                frames.push(Frame {
                    phase: "reverse mode (adjoints)".into(),
                    highlight: vec![format!("node-{i}"), format!("edge-{i}-{}", term.consumer)],
                    text: format!(
                        "{} += {}·∂{}/∂{} = {}×{} = {}{path}",
                        bar(i),
                        bar(term.consumer),
                        trace.steps[term.consumer].name,
                        s.name,
                        factor(a),
                        factor(term.partial_value),
                        fmt_num(contribution)
                    ),
                    cells: vec![(i, 3, cell)],
                    ..Default::default()
                });
            }
        }
    }
    let tangent = match &trace.seeded {
        Some(v) => format!("tangent sᵢ' (seed {v}' = 1)"),
        None => "tangent sᵢ'".into(),
    };
    Page {
        title: title.into(),
        subtitle: subtitle.into(),
        figure: crate::graph::to_svg_outline(trace),
        columns: vec!["step".into(), "value sᵢ".into(), tangent, "adjoint s̄ᵢ = ∂f/∂sᵢ".into()],
        rows: trace
            .steps
            .iter()
            .map(|s| match &s.variable {
                Some(v) => format!("{} ({v})", s.name),
                None => s.name.clone(),
            })
            .collect(),
        frames,
        groups: Vec::new(),
        style: String::new(),
    }
}

/// A matrix (or vector) as rows of numbers with 4 significant digits, with its shape.
fn matrix(a: &adjoint::ndarray::ArrayD<f64>) -> String {
    let shape = dims(a);
    let cols = a.shape().last().copied().unwrap_or(1).max(1);
    let values: Vec<String> = a.iter().map(|v| format!("{:.4}", v).replace('-', "−")).collect();
    let rows: Vec<String> = values.chunks(cols).map(|r| r.join("  ")).collect();
    format!("[{shape}]\n{}", rows.join("\n"))
}

/// The page of `adjoint backprop --html`: the network as a chain of layers; forward layer
/// by layer (zˡ, then aˡ), then the backward pass from the last layer (BP1 or BP2 for δˡ,
/// BP3 for ∂b, BP4 for ∂W) with each matrix's shape and numbers, each checked against the
/// engine's adjoints.
pub fn backprop_page(reports: &[crate::backprop::LayerReport], title: &str, subtitle: &str) -> Page {
    let layers = reports.len();
    let mut frames = Vec::new();
    let node = |l: usize| format!("node-{l}");
    let edge = |l: usize| format!("edge-{}-{l}", l - 1);
    for r in reports {
        let l = r.index;
        frames.push(Frame {
            phase: "forward".into(),
            highlight: vec![node(l), edge(l)],
            text: format!(
                "z{l} = a{}·W{l} + b{l}: [{}]·[{}×{}] + b → {}",
                l - 1,
                dims(&r.values.input),
                r.widths.0,
                r.widths.1,
                dims(&r.values.z)
            ),
            cells: vec![(0, l, matrix(&r.values.z))],
            ..Default::default()
        });
        frames.push(Frame {
            phase: "forward".into(),
            highlight: vec![node(l)],
            text: format!("a{l} = σ(z{l}), elementwise: {}", dims(&r.values.a)),
            cells: vec![(1, l, matrix(&r.values.a))],
            ..Default::default()
        });
    }
    for r in reports.iter().rev() {
        let l = r.index;
        let (bp, why) = if l == layers {
            ("BP1", format!("δ{l} = (a{l} − y)/B ⊙ σ'(z{l})"))
        } else {
            ("BP2", format!("δ{l} = (δ{}·W{}ᵀ) ⊙ σ'(z{l})", l + 1, l + 1))
        };
        let mut highlight = vec![node(l)];
        if l < layers {
            highlight.push(edge(l + 1));
        }
        frames.push(Frame {
            phase: "backward".into(),
            highlight,
            text: format!("{bp}: {why}: {}; max |hand − engine| = {:.1e}", dims(&r.values.delta), r.errors[0]),
            cells: vec![(2, l, matrix(&r.values.delta))],
            ..Default::default()
        });
        frames.push(Frame {
            phase: "backward".into(),
            highlight: vec![node(l)],
            text: format!(
                "BP3: ∂C/∂b{l} = Σ over the batch of δ{l}: {}; max |hand − engine| = {:.1e}",
                dims(&r.values.grad_bias),
                r.errors[1]
            ),
            cells: vec![(3, l, matrix(&r.values.grad_bias))],
            ..Default::default()
        });
        frames.push(Frame {
            phase: "backward".into(),
            highlight: vec![node(l), edge(l)],
            text: format!(
                "BP4: ∂C/∂W{l} = a{}ᵀ·δ{l}: [{}]ᵀ·[{}] → {}; max |hand − engine| = {:.1e}",
                l - 1,
                dims(&r.values.input),
                dims(&r.values.delta),
                dims(&r.values.grad_weight),
                r.errors[2]
            ),
            cells: vec![(4, l, matrix(&r.values.grad_weight))],
            ..Default::default()
        });
    }
    Page {
        title: title.into(),
        subtitle: subtitle.into(),
        figure: chain_svg(reports),
        // Quantities down, layers across: a matrix per cell fits a screen this way.
        columns: std::iter::once(String::new())
            .chain(reports.iter().map(|r| format!("layer {} ({} → {})", r.index, r.widths.0, r.widths.1)))
            .collect(),
        rows: ["zˡ", "aˡ = σ(zˡ)", "δˡ = ∂C/∂zˡ", "∂C/∂bˡ", "∂C/∂Wˡ"].map(String::from).to_vec(),
        frames,
        groups: Vec::new(),
        style: String::new(),
    }
}

fn dims(a: &adjoint::ndarray::ArrayD<f64>) -> String {
    a.shape().iter().map(ToString::to_string).collect::<Vec<_>>().join("×")
}

/// The network as boxes left to right: the input, then each layer with its width.
fn chain_svg(reports: &[crate::backprop::LayerReport]) -> String {
    let (w, h, gap) = (110.0, 54.0, 50.0);
    let n = reports.len() + 1;
    let width = n as f64 * (w + gap) - gap + 40.0;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{:.0}\" font-family=\"monospace\" font-size=\"13\">\n\
         <defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerUnits=\"userSpaceOnUse\" markerWidth=\"10\" markerHeight=\"10\" orient=\"auto\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"#555\"/></marker></defs>\n",
        h + 40.0
    );
    for k in 0..n {
        let x = 20.0 + k as f64 * (w + gap);
        if k > 0 {
            let _ = writeln!(svg, "<line id=\"edge-{}-{k}\" x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#555\" stroke-width=\"1.3\" marker-end=\"url(#arrow)\"/>", k - 1, x - gap, 20.0 + h / 2.0, 20.0 + h / 2.0);
        }
        let (name, width_text) = if k == 0 {
            ("input a0".to_string(), reports[0].widths.0)
        } else {
            (format!("layer {k}"), reports[k - 1].widths.1)
        };
        let _ = writeln!(
            svg,
            "<g id=\"node-{k}\"><rect x=\"{x:.1}\" y=\"20\" width=\"{w}\" height=\"{h}\" rx=\"6\" fill=\"{}\" stroke=\"#333\"/><text x=\"{:.1}\" y=\"42\" font-weight=\"bold\">{name}</text><text x=\"{:.1}\" y=\"62\">{width_text} units</text></g>",
            if k == 0 { "#e8f0fe" } else { "#f7f7f7" },
            x + 10.0,
            x + 10.0
        );
    }
    svg + "</svg>\n"
}

/// The page of `adjoint inspect --html`: for each initialiser (a selector) and each layer
/// (the slider, or → and ←), the histograms of the layer's activations on the batch and of
/// its weight gradient, with the
/// table of every layer's mean, standard deviation, weight-gradient norm and dead fraction
/// under that initialiser, so a collapse layer by layer can be shown in class.
pub fn inspect_page(results: &[(String, Vec<adjoint::nn::inspect::LayerStats>)], title: &str, subtitle: &str) -> Page {
    let layers = results.first().map_or(0, |(_, s)| s.len());
    let (w, h) = (560.0, 440.0);
    let mut figure = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"monospace\" font-size=\"13\">\n\
         <text x=\"20\" y=\"130\" fill=\"#666\">press → (or pick an initialiser) to show a layer</text>\n"
    );
    let mut frames = Vec::new();
    let mut groups = Vec::new();
    for (g, (init, stats)) in results.iter().enumerate() {
        groups.push((init.clone(), frames.len()));
        for (l, layer) in stats.iter().enumerate() {
            let _ = write!(
                figure,
                "<g id=\"panel-{g}-{l}\" class=\"panel\"><rect width=\"{w}\" height=\"{h}\" fill=\"white\"/>"
            );
            let kind = if l + 1 == stats.len() { " (logits)" } else { "" };
            let name = format!("init {}: layer {}{kind}", escape(init), layer.index);
            histogram_panel(&mut figure, &format!("{name}, activations"), layer.histogram.as_ref(), 0.0, w, "#3f51b5");
            histogram_panel(&mut figure, &format!("{name}, ∂L/∂W"), layer.grad_histogram.as_ref(), 215.0, w, "#c2185b");
            figure += "</g>\n";
            let mut cells = Vec::new();
            for (r, s) in stats.iter().enumerate() {
                cells.push((r, 1, format!("{:.4}", s.mean)));
                cells.push((r, 2, format!("{:.4}", s.std)));
                cells.push((r, 3, format!("{:.3e}", s.grad_norm)));
                cells.push((r, 4, s.dead_fraction.map_or("−".into(), |d| format!("{:.0}%", 100.0 * d))));
            }
            frames.push(Frame {
                phase: format!("init {init}"),
                highlight: vec![format!("panel-{g}-{l}")],
                text: format!(
                    "layer {}{kind}: {} units, mean {:.4}, std {:.4}, ‖∂L/∂W‖ {:.3e}",
                    layer.index, layer.units, layer.mean, layer.std, layer.grad_norm
                ),
                cells,
                focus: vec![l],
            });
        }
    }
    Page {
        title: title.into(),
        subtitle: subtitle.into(),
        figure: figure + "</svg>\n",
        columns: ["layer", "mean", "std", "‖∂L/∂W‖", "dead"].map(String::from).to_vec(),
        rows: (1..=layers).map(|l| if l == layers { format!("{l} (logits)") } else { l.to_string() }).collect(),
        frames,
        groups,
        style:
            ".panel { display: none; } .panel.hi { display: inline; } .panel.hi rect.bar { stroke: none !important; }"
                .into(),
    }
}

/// One attention head's weights for a prompt: `weights[i][j]` is how much position `i`
/// (a query) takes from position `j` (a key); each row sums to 1.
pub type HeadWeights = Vec<Vec<f64>>;

/// A character as an axis label: visible stand-ins for space, newline and tab.
pub fn token_label(token: &str) -> String {
    match token {
        " " => "␣".into(),
        "\n" => "↵".into(),
        "\t" => "⇥".into(),
        t => t.into(),
    }
}

/// The heat map of one head at (`x0`, `y0`), `size` wide: queries down, keys across, darker
/// for more weight, each cell titled with its weight; characters along both axes.
pub fn attention_map(tokens: &[String], weights: &[Vec<f64>], x0: f64, y0: f64, size: f64) -> String {
    let n = tokens.len().max(1);
    let cell = size / n as f64;
    let mut svg = String::new();
    let font = cell.clamp(6.0, 13.0);
    for (i, t) in tokens.iter().enumerate() {
        let label = escape(&token_label(t));
        let c = x0 + (i as f64 + 0.5) * cell;
        let _ = write!(
            svg,
            "<text x=\"{c:.1}\" y=\"{:.1}\" font-size=\"{font:.0}\" text-anchor=\"middle\">{label}</text>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"{font:.0}\" text-anchor=\"end\">{label}</text>",
            y0 - 4.0,
            x0 - 4.0,
            y0 + (i as f64 + 0.5) * cell + font / 3.0
        );
    }
    for (i, row) in weights.iter().enumerate() {
        for (j, &w) in row.iter().enumerate() {
            // White for 0, deep blue for 1; √ so that small weights still show.
            let shade = (255.0 * (1.0 - w.clamp(0.0, 1.0).sqrt())).round() as u8;
            let _ = write!(
                svg,
                "<rect class=\"cell\" x=\"{:.2}\" y=\"{:.2}\" width=\"{cell:.2}\" height=\"{cell:.2}\" \
                 fill=\"rgb({shade},{shade},255)\"><title>{} ← {}: {w:.3}</title></rect>",
                x0 + j as f64 * cell,
                y0 + i as f64 * cell,
                escape(&token_label(&tokens[i])),
                escape(&token_label(tokens.get(j).map_or("", String::as_str)))
            );
        }
    }
    let _ =
        write!(svg, "<rect x=\"{x0}\" y=\"{y0}\" width=\"{size}\" height=\"{size}\" fill=\"none\" stroke=\"#888\"/>");
    svg
}

/// Mean entropy of a head's rows in bits (0: each position looks at one other; log₂ n:
/// evenly at n), and the mean distance back from each query to what it attends to.
pub fn head_summary(weights: &[Vec<f64>]) -> (f64, f64) {
    let flat: Vec<f64> = weights.iter().flatten().copied().collect();
    adjoint::nn::inspect::head_spread(&flat, weights.len())
}

/// The page of `adjoint inspect --model RUN --prompt TEXT` for a language model: for each
/// attention layer (the selector) and each of its heads (the slider, or → and ←), the heat
/// map of what every position of the prompt attends to, and the table of each position's
/// character, the character it attends to most, and that weight.
pub fn attention_page(tokens: &[String], layers: &[(String, Vec<HeadWeights>)], title: &str, subtitle: &str) -> Page {
    let size = 460.0_f64.min(26.0 * tokens.len() as f64).max(120.0);
    let (w, h) = (size + 60.0, size + 60.0);
    let mut figure = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"monospace\" font-size=\"13\">\n\
         <text x=\"20\" y=\"130\" fill=\"#666\">press → (or pick a layer) to show a head</text>\n"
    );
    let mut frames = Vec::new();
    let mut groups = Vec::new();
    for (g, (layer, heads)) in layers.iter().enumerate() {
        groups.push((layer.clone(), frames.len()));
        for (k, weights) in heads.iter().enumerate() {
            let _ = writeln!(
                figure,
                "<g id=\"panel-{g}-{k}\" class=\"panel\"><rect width=\"{w}\" height=\"{h}\" fill=\"white\"/>{}</g>",
                attention_map(tokens, weights, 50.0, 50.0, size)
            );
            let (entropy, distance) = head_summary(weights);
            let mut cells = Vec::new();
            for (i, row) in weights.iter().enumerate() {
                let best = row.iter().enumerate().fold(0, |b, (j, &v)| if v > row[b] { j } else { b });
                cells.push((i, 1, format!("{} (position {})", token_label(&tokens[best]), best + 1)));
                cells.push((i, 2, format!("{:.3}", row[best])));
            }
            frames.push(Frame {
                phase: layer.clone(),
                highlight: vec![format!("panel-{g}-{k}")],
                text: format!(
                    "{layer}, head {}: {entropy:.2} bits of spread per position, {distance:.1} positions back on average",
                    k + 1
                ),
                cells,
                focus: Vec::new(),
            });
        }
    }
    Page {
        title: title.into(),
        subtitle: subtitle.into(),
        figure: figure + "</svg>\n",
        columns: ["position", "attends most to", "weight"].map(String::from).to_vec(),
        rows: tokens.iter().enumerate().map(|(i, t)| format!("{} {}", i + 1, token_label(t))).collect(),
        frames,
        groups,
        style:
            ".panel { display: none; } .panel.hi { display: inline; } .panel.hi rect.cell { stroke: none !important; }"
                .into(),
    }
}

/// One histogram, 200 high, from `top`, with its title and range.
fn histogram_panel(
    svg: &mut String,
    title: &str,
    hist: Option<&adjoint::nn::inspect::Histogram>,
    top: f64,
    w: f64,
    colour: &str,
) {
    let _ = write!(svg, "<text x=\"20\" y=\"{:.0}\" font-weight=\"bold\">{title}</text>", top + 22.0);
    let Some(hist) = hist else { return };
    let most = hist.counts.iter().copied().max().unwrap_or(1).max(1) as f64;
    let bar_w = (w - 40.0) / hist.counts.len().max(1) as f64;
    let base = top + 175.0;
    for (b, &count) in hist.counts.iter().enumerate() {
        let bh = 140.0 * count as f64 / most;
        let _ = write!(
            svg,
            "<rect class=\"bar\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" fill=\"{colour}\"><title>{count}</title></rect>",
            20.0 + b as f64 * bar_w,
            base - bh,
            (bar_w - 1.0).max(1.0)
        );
    }
    let (lo, hi) = (hist.edges.first().copied().unwrap_or(0.0), hist.edges.last().copied().unwrap_or(0.0));
    let _ = write!(
        svg,
        "<text x=\"20\" y=\"{:.0}\">{}</text><text x=\"{:.0}\" y=\"{:.0}\" text-anchor=\"end\">{}</text>",
        base + 18.0,
        fmt_num(lo),
        w - 20.0,
        base + 18.0,
        fmt_num(hi)
    );
}

const TEMPLATE: &str = r##"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="adjoint">
<title>{{TITLE}}</title>
<style>
  :root { --hi: #ffb300; --done: #2e7d32; }
  body { font-family: system-ui, sans-serif; margin: 1.2rem 2rem; color: #111; background: #fff; font-size: 17px; }
  h1 { font-size: 1.5rem; margin: 0 0 .2rem; }
  .sub { color: #444; margin-bottom: .8rem; font-family: monospace; }
  .controls { display: flex; gap: .5rem; align-items: center; margin: .6rem 0; flex-wrap: wrap; }
  button { font-size: 1rem; padding: .35rem .9rem; border: 1px solid #888; border-radius: 6px; background: #f4f4f4; cursor: pointer; }
  button:focus { outline: 3px solid var(--hi); }
  #counter { font-family: monospace; font-size: 1.05rem; min-width: 7rem; }
  #phase { font-weight: bold; color: #1a237e; }
  #line { font-family: monospace; font-size: 1.15rem; background: #fff8e1; border-left: 5px solid var(--hi); padding: .5rem .8rem; min-height: 1.4rem; margin: .4rem 0 .8rem; white-space: pre-wrap; }
  .layout { display: flex; gap: 1.5rem; align-items: flex-start; flex-wrap: wrap; }
  .figure { overflow: auto; max-width: 100%; border: 1px solid #ddd; border-radius: 6px; }
  table { border-collapse: collapse; font-family: monospace; font-size: .95rem; }
  th, td { border: 1px solid #ccc; padding: .25rem .55rem; text-align: left; vertical-align: top; white-space: pre; }
  thead th { background: #eee; }
  td.fresh { background: #fff3c4; }
  td.filled { color: #111; }
  tr.current th { background: #ffe082; }
  .hi rect { stroke: var(--hi) !important; stroke-width: 4px !important; }
  line.hi { stroke: var(--hi) !important; stroke-width: 4px !important; }
  #errors { color: #b00020; font-weight: bold; white-space: pre-wrap; }
  .keys { color: #555; font-size: .9rem; }
  #group, #slider { font-size: 1rem; }
  .hidden { display: none; }
{{STYLE}}
</style>
</head>
<body>
<h1>{{TITLE}}</h1>
<div class="sub">{{SUBTITLE}}</div>
<div class="controls">
  <button id="reset" title="Home">|◀ reset</button>
  <button id="prev" title="←">◀ back</button>
  <button id="next" title="→ or space">next ▶</button>
  <button id="end" title="End">end ▶|</button>
  <span id="counter"></span>
  <select id="group" class="hidden" aria-label="run"></select>
  <input id="slider" class="hidden" type="range" min="1" max="1" value="1" aria-label="step within the run">
  <span class="keys">keys: → or space next, ← back, Home reset, End last</span>
</div>
<div><span id="phase"></span></div>
<div id="line"></div>
<div id="errors"></div>
<div class="layout">
  <div class="figure">{{FIGURE}}</div>
  <table><thead><tr>{{HEAD}}</tr></thead><tbody>
{{BODY}}</tbody></table>
</div>
<script type="application/json" id="data">{{DATA}}</script>
<script>
"use strict";
window.addEventListener("error", function (e) {
  document.getElementById("errors").textContent += "script error: " + e.message + "\n";
  document.body.dataset.error = "1";
});
(function () {
  const page = JSON.parse(document.getElementById("data").textContent);
  const frames = page.frames;
  let step = 0;
  function cell(r, c) { return document.getElementById("cell-" + r + "-" + c); }
  function render() {
    document.querySelectorAll("td").forEach(function (td) { td.textContent = ""; td.className = ""; });
    document.querySelectorAll(".hi").forEach(function (el) { el.classList.remove("hi"); });
    document.querySelectorAll("tr.current").forEach(function (el) { el.classList.remove("current"); });
    for (let k = 0; k < step; k++) {
      frames[k].cells.forEach(function (c) {
        const td = cell(c[0], c[1]);
        td.textContent = c[2];
        td.className = k === step - 1 ? "fresh" : "filled";
      });
    }
    const f = frames[step - 1];
    if (groups.length) {
      const g = groupOf(Math.max(step, 1) - 1);
      sel.value = String(g);
      const b = bounds(g);
      slider.min = "1"; slider.max = String(b[1] - b[0]); slider.value = String(Math.max(step - b[0], 1));
    }
    document.getElementById("counter").textContent = step + " / " + frames.length;
    document.getElementById("phase").textContent = f ? f.phase : "press → to start";
    document.getElementById("line").textContent = f ? f.text : "";
    if (f) {
      f.highlight.forEach(function (id) { const el = document.getElementById(id); if (el) { el.classList.add("hi"); } });
      const rows = f.focus.length ? f.focus : f.cells.map(function (c) { return c[0]; });
      rows.forEach(function (r) { document.getElementById("row-" + r).classList.add("current"); });
    }
    document.body.dataset.step = String(step);
  }
  const groups = page.groups;
  const sel = document.getElementById("group");
  const slider = document.getElementById("slider");
  function bounds(g) { return [groups[g][1], g + 1 < groups.length ? groups[g + 1][1] : frames.length]; }
  function groupOf(k) { let g = 0; groups.forEach(function (x, i) { if (x[1] <= k) { g = i; } }); return g; }
  if (groups.length) {
    sel.classList.remove("hidden"); slider.classList.remove("hidden");
    groups.forEach(function (x, i) { const o = document.createElement("option"); o.value = String(i); o.textContent = x[0]; sel.appendChild(o); });
    sel.onchange = function () {
      const offset = step - bounds(groupOf(Math.max(step, 1) - 1))[0];
      const b = bounds(parseInt(sel.value, 10));
      go(Math.min(b[0] + Math.max(offset, 1), b[1]));
    };
    slider.oninput = function () { go(bounds(parseInt(sel.value, 10))[0] + parseInt(slider.value, 10)); };
  }
  function go(k) { step = Math.max(0, Math.min(frames.length, k)); render(); }
  document.getElementById("next").onclick = function () { go(step + 1); };
  document.getElementById("prev").onclick = function () { go(step - 1); };
  document.getElementById("reset").onclick = function () { go(0); };
  document.getElementById("end").onclick = function () { go(frames.length); };
  document.addEventListener("keydown", function (e) {
    if (e.key === "ArrowRight" || e.key === " ") { go(step + 1); e.preventDefault(); }
    else if (e.key === "ArrowLeft") { go(step - 1); e.preventDefault(); }
    else if (e.key === "Home") { go(0); e.preventDefault(); }
    else if (e.key === "End") { go(frames.length); e.preventDefault(); }
  });
  const hash = location.hash;
  if (hash === "#end") { go(frames.length); }
  else if (hash.indexOf("#step=") === 0) { go(parseInt(hash.slice(6), 10) || 0); }
  else { go(0); }
  // #keys=RRL…: presses keys as a user would (R →, L ←, S space, H Home, E End), for tests.
  if (hash.indexOf("#keys=") === 0) {
    const names = { R: "ArrowRight", L: "ArrowLeft", S: " ", H: "Home", E: "End" };
    hash.slice(6).split("").forEach(function (c) {
      document.dispatchEvent(new KeyboardEvent("keydown", { key: names[c] || c, bubbles: true }));
    });
  }
})();
</script>
</body>
</html>
"##;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::TraceOptions;
    use adjoint::expr::Expr;

    #[test]
    fn a_trace_page_is_self_contained_and_its_frames_sum_over_paths() {
        let e = Expr::parse("x*y + sin(x)").unwrap();
        let at = vec![("x".to_string(), 2.0), ("y".to_string(), 3.0)];
        let options = TraceOptions { forward_wrt: Some("x".into()), reverse: true, degrees: false };
        let t = Trace::record(&e, &at, &options).unwrap();
        let page = trace_page(&t, "T</script>", "f");
        // 5 values, 5 tangents, the seed s̄5 = 1, then one frame per edge (five edges).
        assert_eq!(page.frames.len(), 5 + 5 + 1 + 5);
        let html = page.to_html();
        for external in ["<script src", "<link", "url(http", "@import", "fetch("] {
            assert!(!html.contains(external), "{external}");
        }
        assert!(html.contains("T&lt;/script&gt;"), "the title is escaped");
        assert_eq!(html.matches("</script>").count(), 2, "the data cannot end its script element");
        // The data parses back, and x's adjoint is built from its two paths.
        let start = html.find("id=\"data\">").unwrap() + 10;
        let end = start + html[start..].find("</script>").unwrap();
        let data: serde_json::Value = serde_json::from_str(&html[start..end].replace("<\\/", "</")).unwrap();
        let texts: Vec<&str> = data["frames"].as_array().unwrap().iter().map(|f| f["text"].as_str().unwrap()).collect();
        assert_eq!(texts.iter().filter(|t| t.starts_with("s̄1 +=")).count(), 2);
        let last = data["frames"].as_array().unwrap().last().unwrap();
        let dx = 3.0 + 2f64.cos();
        assert!(last["cells"][0][2].as_str().unwrap().ends_with(&fmt_num(dx)), "{last}");
    }
}
