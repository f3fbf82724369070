//! The picture of a graph run: data graphs above, graphs sampled on the
//! same adjacencies below (nodes at their positions, edges drawn), as SVG.

use super::data::GraphSample;
use crate::error::Result;
use crate::files::write_atomic;
use std::fmt::Write;
use std::path::Path;

/// Pixels per panel side.
const PANEL: f64 = 150.0;
const MARGIN: f64 = 24.0;

/// The square box `(centre, half side)` around the first two features of
/// `graph`, padded by 30%.
fn frame(graph: &GraphSample) -> ([f64; 2], f64) {
    let (mut lo, mut hi) = ([f64::INFINITY; 2], [f64::NEG_INFINITY; 2]);
    for v in 0..graph.nodes() {
        for a in 0..2 {
            lo[a] = lo[a].min(graph.node(v)[a]);
            hi[a] = hi[a].max(graph.node(v)[a]);
        }
    }
    let half = ((hi[0] - lo[0]).max(hi[1] - lo[1]).max(1e-3)) * 0.65;
    ([(lo[0] + hi[0]) / 2.0, (lo[1] + hi[1]) / 2.0], half)
}

/// One panel at `(left, top)`: `graph` in the frame `(centre, half)`,
/// clipped to the panel (a sample may leave its data graph's frame).
fn panel(
    svg: &mut String,
    id: usize,
    left: f64,
    top: f64,
    graph: &GraphSample,
    frame: ([f64; 2], f64),
) {
    let (centre, half) = frame;
    let to_px = |p: &[f64]| {
        let x = left + (p[0] - centre[0] + half) / (2.0 * half) * PANEL;
        let y = top + (centre[1] + half - p[1]) / (2.0 * half) * PANEL;
        // non-finite samples are drawn at the panel's corner
        if x.is_finite() && y.is_finite() {
            (x, y)
        } else {
            (left, top)
        }
    };
    let _ = write!(
        svg,
        r##"<clipPath id="c{id}"><rect x="{left}" y="{top}" width="{PANEL}" height="{PANEL}"/></clipPath><rect x="{left}" y="{top}" width="{PANEL}" height="{PANEL}" fill="white" stroke="#999"/><g clip-path="url(#c{id})">"##
    );
    for &(i, j) in &graph.edges {
        let ((x1, y1), (x2, y2)) = (to_px(graph.node(i)), to_px(graph.node(j)));
        let _ = write!(
            svg,
            r##"<line x1="{x1:.1}" y1="{y1:.1}" x2="{x2:.1}" y2="{y2:.1}" stroke="#555" stroke-width="1"/>"##
        );
    }
    for v in 0..graph.nodes() {
        let (x, y) = to_px(graph.node(v));
        let _ = write!(
            svg,
            r##"<circle cx="{x:.1}" cy="{y:.1}" r="3" fill="#1f77b4"/>"##
        );
    }
    svg.push_str("</g>");
}

/// Writes `data` (top row) and `samples` (bottom row, the same graphs) to
/// `path` atomically; each column shares its data graph's frame.
pub fn write_picture(
    path: &Path,
    title: &str,
    data: &[&GraphSample],
    samples: &[GraphSample],
) -> Result<()> {
    let columns = data.len().max(1) as f64;
    let width = MARGIN * 2.0 + columns * (PANEL + 8.0);
    let height = MARGIN * 2.0 + 2.0 * (PANEL + 20.0) + 10.0;
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/><text x="{MARGIN}" y="16">{}</text>"#,
        escape(title)
    );
    let rows = [
        ("data", data.to_vec()),
        ("samples (T = 1)", samples.iter().collect()),
    ];
    for (r, (label, graphs)) in rows.iter().enumerate() {
        let top = MARGIN + 14.0 + r as f64 * (PANEL + 20.0);
        let _ = write!(
            svg,
            r#"<text x="{MARGIN}" y="{:.1}">{label}</text>"#,
            top - 3.0
        );
        for (c, graph) in graphs.iter().enumerate() {
            let left = MARGIN + c as f64 * (PANEL + 8.0);
            panel(
                &mut svg,
                r * data.len() + c,
                left,
                top,
                graph,
                frame(data[c]),
            );
        }
    }
    svg.push_str("</svg>\n");
    write_atomic(path, svg.as_bytes())
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
