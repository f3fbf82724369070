//! A run's outputs besides checkpoints: metrics files, the loss-curve plot,
//! sample grids and interpolation strips as PNG.

use crate::error::{Result, TrainError};
use crate::files::write_atomic;
use indicatif::{ProgressBar, ProgressStyle};
use plotters::prelude::*;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// One evaluation, a line of `metrics.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub step: u64,
    pub epoch: f64,
    /// Mean training bpd since the previous evaluation.
    pub train_bpd: f64,
    /// Test bpd with one dequantisation draw (the ELBO bpd under variational dequantisation).
    pub test_bpd: f64,
    /// Importance-weighted test bpd (variational dequantisation only).
    pub test_bpd_iw: Option<f64>,
    pub lr: f64,
    pub train_seconds: f64,
    /// Loss spikes since the start of the run ([`crate::spikes`]).
    #[serde(default)]
    pub loss_spikes: u64,
}

/// `metrics.json`, written at the end of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub test_bpd: f64,
    pub test_bpd_iw: Option<f64>,
    /// Seconds in the training loop only (no evaluation, checkpoints or outputs).
    pub train_seconds: f64,
    pub sec_per_step: f64,
    pub steps: u64,
    pub parameters: usize,
    /// Threads of each process.
    pub threads: usize,
    /// Processes of a data-parallel run (1 otherwise).
    #[serde(default = "one")]
    pub ranks: usize,
    /// Seconds of the training steps spent averaging gradients over the
    /// ranks (on rank 0).
    #[serde(default)]
    pub all_reduce_seconds: f64,
    /// Every loss spike of the run ([`crate::spikes`]).
    #[serde(default)]
    pub loss_spikes: Vec<crate::spikes::LossSpike>,
}

fn one() -> usize {
    1
}

/// The training bpd of every step, in at most [`TrainingCurve::MAX_POINTS`]
/// points: when it fills up, neighbouring points are merged in pairs (the
/// later step, the mean bpd), so a run of any length keeps a curve of
/// bounded size, exact for the first million steps.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrainingCurve {
    points: Vec<(u64, f64)>,
}

impl TrainingCurve {
    /// The most points kept.
    pub const MAX_POINTS: usize = 1 << 20;

    /// A curve of saved points (at most [`Self::MAX_POINTS`] are kept).
    pub fn from_points(mut points: Vec<(u64, f64)>) -> Self {
        points.truncate(Self::MAX_POINTS);
        TrainingCurve { points }
    }

    pub fn push(&mut self, step: u64, bpd: f64) {
        if self.points.len() == Self::MAX_POINTS {
            self.points = self
                .points
                .chunks(2)
                .map(|pair| {
                    let mean = pair.iter().map(|p| p.1).sum::<f64>() / pair.len() as f64;
                    (pair[pair.len() - 1].0, mean)
                })
                .collect();
        }
        self.points.push((step, bpd));
    }

    pub fn points(&self) -> &[(u64, f64)] {
        &self.points
    }

    /// The mean bpd of the points after step `after`.
    pub fn mean_after(&self, after: u64) -> f64 {
        let recent: Vec<f64> = self
            .points
            .iter()
            .filter(|p| p.0 > after)
            .map(|p| p.1)
            .collect();
        recent.iter().sum::<f64>() / recent.len().max(1) as f64
    }
}

/// Appends one JSON line to `path`.
pub fn append_jsonl<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let line = serde_json::to_string(value).map_err(|e| TrainError::Config(e.to_string()))?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| TrainError::io(path, e))?;
    writeln!(file, "{line}").map_err(|e| TrainError::io(path, e))
}

/// Writes `value` as pretty JSON (atomically).
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text =
        serde_json::to_string_pretty(value).map_err(|e| TrainError::Config(e.to_string()))?;
    write_atomic(path, (text + "\n").as_bytes())
}

/// The loss curve: training bpd per step and test bpd per evaluation, as
/// SVG (written atomically); `false` when there is nothing finite to draw
/// (no file is written then).
pub fn plot_losses(path: &Path, train: &[(u64, f64)], test: &[(u64, f64)]) -> Result<bool> {
    let fail = |e: String| TrainError::Config(format!("plot {}: {e}", path.display()));
    let all = train
        .iter()
        .chain(test)
        .map(|&(_, v)| v)
        .filter(|v| v.is_finite());
    let (lo, hi) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    if !lo.is_finite() {
        return Ok(false);
    }
    let last = train
        .iter()
        .chain(test)
        .map(|&(s, _)| s)
        .max()
        .unwrap_or(1)
        .max(1);
    let pad = ((hi - lo) * 0.05).max(1e-3);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (800, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
        let mut chart = ChartBuilder::on(&root)
            .caption("bits per dimension", ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(0u64..last, (lo - pad)..(hi + pad))
            .map_err(|e| fail(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc("bpd")
            .draw()
            .map_err(|e| fail(e.to_string()))?;
        chart
            .draw_series(LineSeries::new(train.iter().copied(), &BLUE))
            .map_err(|e| fail(e.to_string()))?
            .label("train")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
        chart
            .draw_series(LineSeries::new(test.iter().copied(), &RED))
            .map_err(|e| fail(e.to_string()))?
            .label("test")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| fail(e.to_string()))?;
        root.present().map_err(|e| fail(e.to_string()))?;
    }
    write_atomic(path, svg.as_bytes())?;
    Ok(true)
}

/// The grey of the lines between the cells of a grid (visible on black and
/// on white images).
const GRID_LINE: u8 = 150;
/// Cells are upscaled (nearest neighbour, by an integer factor) to at least
/// this many pixels on their longer side.
const MIN_CELL: usize = 64;

/// Writes `images` (8-bit, channel-first, `(C, H, W)` each, `C` 1 or 3) as
/// a PNG grid of `cols` columns: each image upscaled by the integer factor
/// that makes it at least [`MIN_CELL`] pixels, with 2-pixel grey lines
/// between and around the cells.
pub fn write_grid(path: &Path, images: &[u8], [c, h, w]: [usize; 3], cols: usize) -> Result<()> {
    let per = c * h * w;
    let n = images.len() / per.max(1);
    if per == 0 || n == 0 || !matches!(c, 1 | 3) {
        return Err(TrainError::Config(format!(
            "{}: cannot draw {} bytes as images of shape {:?}",
            path.display(),
            images.len(),
            [c, h, w]
        )));
    }
    let scale = MIN_CELL.div_ceil(h.max(w)).max(1);
    let (ch, cw, line) = (h * scale, w * scale, 2);
    let cols = cols.clamp(1, n);
    let rows = n.div_ceil(cols);
    let (gw, gh) = (cols * (cw + line) + line, rows * (ch + line) + line);
    let mut canvas = vec![GRID_LINE; gw * gh * c];
    for (i, image) in images.chunks_exact(per).enumerate() {
        let (r, q) = (i / cols, i % cols);
        for y in 0..ch {
            for x in 0..cw {
                let (py, px) = (r * (ch + line) + line + y, q * (cw + line) + line + x);
                for k in 0..c {
                    canvas[(py * gw + px) * c + k] = image[(k * h + y / scale) * w + x / scale];
                }
            }
        }
    }
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, gw as u32, gh as u32);
    encoder.set_color(if c == 1 {
        png::ColorType::Grayscale
    } else {
        png::ColorType::Rgb
    });
    encoder.set_depth(png::BitDepth::Eight);
    let png_err = |e: png::EncodingError| TrainError::Config(format!("{}: {e}", path.display()));
    let mut writer = encoder.write_header().map_err(png_err)?;
    writer.write_image_data(&canvas).map_err(png_err)?;
    writer.finish().map_err(png_err)?;
    write_atomic(path, &bytes)
}

/// Milliseconds of a duration.
fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// One row of `profile.json`.
#[derive(Serialize)]
struct ProfileRow<'a> {
    scope: &'a str,
    phase: &'static str,
    op: &'a str,
    calls: u64,
    ms: f64,
    bytes: u64,
}

/// `profile.json` in `dir` (every (scope, phase, op) row and the time
/// outside ops), with the table printed to stderr; returns the path.
pub fn write_profile(dir: &Path, profile: &flowtensor::profile::Profile) -> Result<PathBuf> {
    #[derive(Serialize)]
    struct ProfileFile<'a> {
        wall_ms: f64,
        outside_ops_ms: f64,
        rows: Vec<ProfileRow<'a>>,
    }
    let file = ProfileFile {
        wall_ms: ms(profile.wall),
        outside_ops_ms: ms(profile.outside_ops()),
        rows: profile
            .entries
            .iter()
            .map(|e| ProfileRow {
                scope: &e.scope,
                phase: e.phase.name(),
                op: e.op,
                calls: e.calls,
                ms: ms(e.time),
                bytes: e.bytes,
            })
            .collect(),
    };
    let path = dir.join("profile.json");
    write_json(&path, &file)?;
    write_atomic(&dir.join("profile.svg"), profile_svg(profile).as_bytes())?;
    eprint!("{}", profile.table());
    Ok(path)
}

/// Horizontal bars of milliseconds: the op kinds (forward and backward) and
/// the scopes, the largest first, and the time outside ops.
fn profile_svg(profile: &flowtensor::profile::Profile) -> String {
    const ROWS: usize = 16;
    const BAR: f64 = 18.0;
    const LABEL: f64 = 300.0;
    const WIDTH: f64 = 520.0;
    let mut sections: Vec<(&str, Vec<(String, f64)>)> = Vec::new();
    let mut ops: Vec<(String, f64)> = profile
        .by_op()
        .iter()
        .take(ROWS)
        .map(|e| (format!("{} ({})", e.op, e.phase.name()), ms(e.time)))
        .collect();
    ops.push(("(outside ops)".into(), ms(profile.outside_ops())));
    sections.push(("time per op kind, ms", ops));
    let scopes: Vec<(String, f64)> = profile
        .by_scope()
        .iter()
        .take(ROWS)
        .map(|e| {
            let name = if e.scope.is_empty() {
                "(no scope)"
            } else {
                &e.scope
            };
            (format!("{name} ({})", e.phase.name()), ms(e.time))
        })
        .collect();
    sections.push(("time per layer (scope), ms", scopes));
    let max = sections
        .iter()
        .flat_map(|(_, rows)| rows.iter().map(|r| r.1))
        .fold(1e-9, f64::max);
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let mut body = String::new();
    let mut y = 10.0;
    for (title, rows) in &sections {
        y += BAR;
        body += &format!(
            r#"<text x="4" y="{y}" font-weight="bold">{}</text>"#,
            escape(title)
        );
        body.push('\n');
        for (label, value) in rows {
            y += BAR;
            let w = WIDTH * value / max;
            body += &format!(
                r##"<text x="{lx}" y="{ty}" text-anchor="end">{label}</text><rect x="{x}" y="{ry}" width="{w:.1}" height="{h}" fill="#4878a8"/><text x="{vx:.1}" y="{ty}">{value:.1}</text>"##,
                lx = LABEL - 6.0,
                ty = y,
                label = escape(label),
                x = LABEL,
                ry = y - BAR + 5.0,
                h = BAR - 4.0,
                vx = LABEL + w + 4.0,
            );
            body.push('\n');
        }
        y += BAR / 2.0;
    }
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
{body}</svg>
"#,
        LABEL + WIDTH + 80.0,
        y + 10.0
    )
}

/// The progress bar of a run (hidden unless `show`).
pub fn progress_bar(total: u64, show: bool) -> ProgressBar {
    let bar = if show {
        ProgressBar::new(total)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}
