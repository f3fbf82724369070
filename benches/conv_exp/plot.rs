//! The sweep's plot: relative error against terms (log scale, one line per
//! operator norm: the f32 series against the converged series, and the f64
//! series against the dense exponential) and time per forward against terms.

use super::accuracy::{Row, NORMS, TERMS};
use plotters::prelude::*;
use std::path::Path;

type Fallible = Result<(), Box<dyn std::error::Error>>;

/// Writes the two panels to `path` as SVG.
pub fn plot(rows: &[Row], path: &Path) -> Fallible {
    let root = SVGBackend::new(path, (1100, 440)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(600);
    let colours = [BLUE, RED, GREEN];
    let max_terms = *TERMS.end() as u32;

    let mut errors = ChartBuilder::on(&left)
        .caption("exp(M) x: relative error vs terms", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(1u32..max_terms, (1e-17f64..1e2).log_scale())?;
    errors
        .configure_mesh()
        .x_desc("terms")
        .y_desc("relative error")
        .y_label_formatter(&|v| format!("{v:.0e}"))
        .draw()?;
    for (&norm, colour) in NORMS.iter().zip(colours) {
        let of = |pick: fn(&Row) -> f64| {
            rows.iter()
                .filter(|r| r.norm == norm)
                .map(move |r| (r.terms as u32, pick(r).max(1e-17)))
        };
        errors
            .draw_series(LineSeries::new(
                of(|r| r.series_f32),
                colour.stroke_width(2),
            ))?
            .label(format!("||M|| = {norm}: f32 vs converged (B64_C12_H16)"))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
        errors
            .draw_series(DashedLineSeries::new(
                of(|r| r.dense_f64),
                4,
                3,
                colour.into(),
            ))?
            .label(format!("||M|| = {norm}: f64 vs dense expm (C4, 6x6)"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
    }
    errors
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 12))
        .draw()?;

    let times: Vec<(u32, f64)> = rows
        .iter()
        .filter(|r| r.norm == NORMS[0])
        .filter_map(|r| Some((r.terms as u32, r.time_ms?)))
        .collect();
    let top = times.iter().map(|t| t.1).fold(0.0, f64::max) * 1.1 + 1e-3;
    let mut timing = ChartBuilder::on(&right)
        .caption("time per forward (f32, B64_C12_H16)", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(1u32..max_terms, 0f64..top)?;
    timing
        .configure_mesh()
        .x_desc("terms")
        .y_desc("ms")
        .draw()?;
    timing.draw_series(LineSeries::new(
        times.iter().copied(),
        BLACK.stroke_width(2),
    ))?;
    timing.draw_series(times.iter().map(|&p| Circle::new(p, 3, BLACK.filled())))?;
    root.present()?;
    Ok(())
}
