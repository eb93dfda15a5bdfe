//! The computation graph of a trace as Graphviz DOT and as an SVG drawn here (no system
//! Graphviz needed). Each node shows its step, operation, value and adjoint; a value used
//! twice is one node with two outgoing edges.

use std::fmt::Write;

use super::trace::{fmt_num, Operand, Trace};

/// The node's label lines: definition, value, adjoint (if computed).
fn label(trace: &Trace, i: usize) -> Vec<String> {
    let s = &trace.steps[i];
    let mut lines = vec![format!("{} = {}", s.name, trace.definition(i)), format!("value {}", fmt_num(s.value))];
    if let Some(a) = s.adjoint {
        lines.push(format!("adjoint {}", fmt_num(a)));
    }
    lines
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Graphviz DOT, inputs at the top.
pub fn to_dot(trace: &Trace) -> String {
    let mut out = String::from(
        "digraph computation {\n  rankdir=TB;\n  node [shape=box, style=rounded, fontname=\"monospace\"];\n",
    );
    for (i, s) in trace.steps.iter().enumerate() {
        let text = label(trace, i).join("\\n").replace('"', "\\\"");
        let fill = if s.op == "input" { ", style=\"rounded,filled\", fillcolor=\"#e8f0fe\"" } else { "" };
        let _ = writeln!(out, "  {} [label=\"{text}\"{fill}];", s.name);
    }
    for s in &trace.steps {
        for o in &s.inputs {
            if let Operand::Step(j) = o {
                let _ = writeln!(out, "  {} -> {};", trace.steps[*j].name, s.name);
            }
        }
    }
    out + "}\n"
}

/// An SVG drawing: layers by longest path from the inputs, top to bottom.
pub fn to_svg(trace: &Trace) -> String {
    render_svg(trace, true)
}

/// The same drawing with each node's definition only (no values or adjoints), for pages
/// that fill the numbers in step by step. Nodes are `<g id="node-I">` and edges
/// `<line id="edge-J-I">` (from step J to step I, 0-based).
pub fn to_svg_outline(trace: &Trace) -> String {
    render_svg(trace, false)
}

fn render_svg(trace: &Trace, numbers: bool) -> String {
    let n = trace.steps.len();
    let mut depth = vec![0usize; n];
    for (i, s) in trace.steps.iter().enumerate() {
        for o in &s.inputs {
            if let Operand::Step(j) = o {
                depth[i] = depth[i].max(depth[*j] + 1);
            }
        }
    }
    let layers = depth.iter().max().map_or(0, |d| d + 1);
    let labels: Vec<Vec<String>> = (0..n)
        .map(|i| {
            let mut l = label(trace, i);
            if !numbers {
                l.truncate(1);
            }
            l
        })
        .collect();
    let (char_w, line_h, pad, gap_x, gap_y) = (7.8, 16.0, 8.0, 24.0, 56.0);
    let box_w: Vec<f64> = labels
        .iter()
        .map(|l| l.iter().map(|s| s.chars().count()).max().unwrap_or(1) as f64 * char_w + 2.0 * pad)
        .collect();
    let box_h: Vec<f64> = labels.iter().map(|l| l.len() as f64 * line_h + 2.0 * pad).collect();
    let row_h = box_h.iter().copied().fold(0.0, f64::max);
    let mut rows: Vec<Vec<usize>> = vec![Vec::new(); layers];
    for i in 0..n {
        rows[depth[i]].push(i);
    }
    let row_w: Vec<f64> = rows
        .iter()
        .map(|r| r.iter().map(|&i| box_w[i]).sum::<f64>() + gap_x * r.len().saturating_sub(1) as f64)
        .collect();
    let width = row_w.iter().copied().fold(0.0, f64::max) + 40.0;
    let height = layers as f64 * (row_h + gap_y) - gap_y + 40.0;
    let mut pos = vec![(0.0, 0.0); n]; // top-left corners
    for (d, row) in rows.iter().enumerate() {
        let mut x = (width - row_w[d]) / 2.0;
        for &i in row {
            pos[i] = (x, 20.0 + d as f64 * (row_h + gap_y));
            x += box_w[i] + gap_x;
        }
    }
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" viewBox=\"0 0 {width:.0} {height:.0}\" font-family=\"monospace\" font-size=\"13\">\n\
         <defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerUnits=\"userSpaceOnUse\" markerWidth=\"10\" markerHeight=\"10\" orient=\"auto\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"#555\"/></marker></defs>\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    for (i, s) in trace.steps.iter().enumerate() {
        for o in &s.inputs {
            if let Operand::Step(j) = o {
                let (x1, y1) = (pos[*j].0 + box_w[*j] / 2.0, pos[*j].1 + box_h[*j]);
                let (x2, y2) = (pos[i].0 + box_w[i] / 2.0, pos[i].1);
                let _ = writeln!(svg, "<line id=\"edge-{j}-{i}\" x1=\"{x1:.1}\" y1=\"{y1:.1}\" x2=\"{x2:.1}\" y2=\"{y2:.1}\" stroke=\"#555\" stroke-width=\"1.3\" marker-end=\"url(#arrow)\"/>");
            }
        }
    }
    for i in 0..n {
        let (x, y) = pos[i];
        let fill = if trace.steps[i].op == "input" {
            "#e8f0fe"
        } else if i + 1 == n {
            "#fdecea"
        } else {
            "#f7f7f7"
        };
        let _ = writeln!(svg, "<g id=\"node-{i}\"><rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" rx=\"6\" fill=\"{fill}\" stroke=\"#333\"/>", box_w[i], box_h[i]);
        for (k, line) in labels[i].iter().enumerate() {
            let weight = if k == 0 { " font-weight=\"bold\"" } else { "" };
            let _ = writeln!(
                svg,
                "<text x=\"{:.1}\" y=\"{:.1}\"{weight}>{}</text>",
                x + pad,
                y + pad + (k as f64 + 0.8) * line_h,
                escape(line)
            );
        }
        svg += "</g>\n";
    }
    svg + "</svg>\n"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::TraceOptions;
    use adjoint::expr::Expr;

    #[test]
    fn shared_values_are_one_node_with_two_edges() {
        let e = Expr::parse("x*y + sin(x)").unwrap();
        let at = vec![("x".to_string(), 2.0), ("y".to_string(), 3.0)];
        let t = Trace::record(&e, &at, &TraceOptions { reverse: true, ..Default::default() }).unwrap();
        let dot = to_dot(&t);
        assert_eq!(dot.matches("s1 [").count(), 1);
        assert_eq!(dot.matches("s1 -> ").count(), 2, "{dot}");
        let svg = to_svg(&t);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<rect x=").count(), t.steps.len());
        assert_eq!(svg.matches("<line").count(), 5, "s1→s3, s2→s3, s1→s4, s3→s5, s4→s5");
        assert!(svg.contains("adjoint"));
    }
}
