//! Training curves as SVG (rendered by plotters, no system tools needed).

use std::path::Path;

use plotters::prelude::*;

/// Draws one or more named series into an SVG file, written atomically (nothing is written
/// when no series has a finite point).
pub fn line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(&str, Vec<(f64, f64)>)],
) -> Result<(), String> {
    let mut svg = String::new();
    if draw(&mut svg, title, x_label, y_label, series).map_err(|e| format!("{}: {e}", path.display()))? {
        adjoint::io::write_atomic(path, svg.as_bytes()).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Draws the chart into `svg`; false if there is nothing to draw.
fn draw(
    svg: &mut String,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(&str, Vec<(f64, f64)>)],
) -> Result<bool, String> {
    let all: Vec<(f64, f64)> =
        series.iter().flat_map(|(_, s)| s.iter().copied()).filter(|(_, y)| y.is_finite()).collect();
    if all.is_empty() {
        return Ok(false);
    }
    let (x0, x1) = all.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &(x, _)| (a.min(x), b.max(x)));
    let (y0, y1) = all.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &(_, y)| (a.min(y), b.max(y)));
    let pad = ((y1 - y0) * 0.05).max(1e-6);
    let root = SVGBackend::with_string(svg, (720, 420)).into_drawing_area();
    let err = |e: &dyn std::fmt::Display| e.to_string();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1.max(x0 + 1.0), (y0 - pad)..(y1 + pad))
        .map_err(|e| err(&e))?;
    chart.configure_mesh().x_desc(x_label).y_desc(y_label).draw().map_err(|e| err(&e))?;
    for (i, (name, points)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
    }
    chart.configure_series_labels().border_style(BLACK).background_style(WHITE.mix(0.8)).draw().map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(true)
}
