//! The figures of the toy runs, drawn by a small rasteriser of its own
//! (points, lines, histogram bars, heat maps with a viridis-like colormap,
//! and a 5x7 bitmap font for titles) and written as RGB PNG, atomically.
//!
//! - [`figure_2d`]: the data, the latent `z = f(x)` of test points, samples
//!   from the flow, and the learned density on a grid, side by side;
//! - [`figure_1d`]: the data's histogram with the learned (and the exact)
//!   density, and the latent's histogram with the `N(0, 1)` density;
//! - [`figure_target`]: a histogram of samples from a flow fitted by
//!   reverse KL beside the target `exp(-U)`.

use super::data::Points;
use crate::error::{Result, TrainError};
use crate::files::write_atomic;
use std::path::Path;

/// Pixels per side of a square panel.
pub const PANEL: usize = 300;
/// Width of a 1-D panel.
pub const WIDE_PANEL: usize = 420;
/// Pixels between and around panels.
const MARGIN: usize = 12;
/// The band of the figure's title.
const TITLE_BAND: usize = 26;
/// The band of the panels' titles.
const PANEL_TITLE_BAND: usize = 22;
/// The band under the panels (their ranges).
const FOOTER: usize = 22;

type Rgb = [u8; 3];
const BLACK: Rgb = [0, 0, 0];
const GREY: Rgb = [150, 150, 150];
const BLUE: Rgb = [31, 119, 180];
const ORANGE: Rgb = [255, 127, 14];
const RED: Rgb = [214, 39, 40];
const GREEN: Rgb = [44, 160, 44];
const BAR: Rgb = [158, 202, 225];

/// The size `(width, height)` of a figure of `panels` panels `panel_width` wide.
pub fn figure_size(panels: usize, panel_width: usize) -> (usize, usize) {
    (
        MARGIN + panels * (panel_width + MARGIN),
        TITLE_BAND + PANEL_TITLE_BAND + PANEL + FOOTER,
    )
}

/// Values on a regular grid of `cells x cells` over `[lo, hi]` (x, then y),
/// row 0 at the top (the highest y).
#[derive(Clone, Debug, PartialEq)]
pub struct Grid {
    pub cells: usize,
    pub lo: [f64; 2],
    pub hi: [f64; 2],
    pub values: Vec<f64>,
}

impl Grid {
    /// The centres of the cells, row by row from the top, as points.
    pub fn centres(cells: usize, lo: [f64; 2], hi: [f64; 2]) -> Vec<f64> {
        let (dx, dy) = (
            (hi[0] - lo[0]) / cells as f64,
            (hi[1] - lo[1]) / cells as f64,
        );
        let mut out = Vec::with_capacity(2 * cells * cells);
        for i in 0..cells {
            for j in 0..cells {
                out.push(lo[0] + (j as f64 + 0.5) * dx);
                out.push(hi[1] - (i as f64 + 0.5) * dy);
            }
        }
        out
    }

    /// The normalised 2-D histogram of `points` (2 features) on the grid.
    pub fn histogram(points: &Points, cells: usize, lo: [f64; 2], hi: [f64; 2]) -> Grid {
        let mut values = vec![0.0; cells * cells];
        let (dx, dy) = (
            (hi[0] - lo[0]) / cells as f64,
            (hi[1] - lo[1]) / cells as f64,
        );
        for p in 0..points.len() {
            let r = points.row(p);
            let j = ((r[0] - lo[0]) / dx).floor();
            let i = ((hi[1] - r[1]) / dy).floor();
            if (0.0..cells as f64).contains(&j) && (0.0..cells as f64).contains(&i) {
                values[i as usize * cells + j as usize] += 1.0;
            }
        }
        let scale = 1.0 / (points.len().max(1) as f64 * dx * dy);
        values.iter_mut().for_each(|v| *v *= scale);
        Grid {
            cells,
            lo,
            hi,
            values,
        }
    }
}

/// An RGB image being drawn.
struct Canvas {
    width: usize,
    height: usize,
    pixels: Vec<u8>,
}

impl Canvas {
    fn new(width: usize, height: usize) -> Canvas {
        Canvas {
            width,
            height,
            pixels: vec![255; width * height * 3],
        }
    }

    /// Blends `color` over pixel `(x, y)` with opacity `alpha` (outside: nothing).
    fn blend(&mut self, x: i64, y: i64, color: Rgb, alpha: f64) {
        if x < 0 || y < 0 || x >= self.width as i64 || y >= self.height as i64 {
            return;
        }
        let k = (y as usize * self.width + x as usize) * 3;
        for (pixel, &target) in self.pixels[k..k + 3].iter_mut().zip(&color) {
            let old = *pixel as f64;
            *pixel = (old + (target as f64 - old) * alpha).round() as u8;
        }
    }

    fn fill(&mut self, x: i64, y: i64, w: i64, h: i64, color: Rgb) {
        for yy in y..y + h {
            for xx in x..x + w {
                self.blend(xx, yy, color, 1.0);
            }
        }
    }

    /// The outline of a rectangle.
    fn frame(&mut self, x: i64, y: i64, w: i64, h: i64, color: Rgb) {
        self.fill(x - 1, y - 1, w + 2, 1, color);
        self.fill(x - 1, y + h, w + 2, 1, color);
        self.fill(x - 1, y, 1, h, color);
        self.fill(x + w, y, 1, h, color);
    }

    /// A segment `thickness` pixels wide; `dash` > 0 draws dashes of that length.
    #[allow(clippy::too_many_arguments)]
    fn line(&mut self, x0: f64, y0: f64, x1: f64, y1: f64, color: Rgb, thickness: i64, dash: f64) {
        let length = ((x1 - x0).powi(2) + (y1 - y0).powi(2)).sqrt();
        let steps = (length * 2.0).ceil().max(1.0) as usize;
        for s in 0..=steps {
            let t = s as f64 / steps as f64;
            if dash > 0.0 && ((t * length / dash) as i64) % 2 == 1 {
                continue;
            }
            let (x, y) = (x0 + t * (x1 - x0), y0 + t * (y1 - y0));
            let half = thickness / 2;
            for dy in -half..thickness - half {
                for dx in -half..thickness - half {
                    self.blend(x.round() as i64 + dx, y.round() as i64 + dy, color, 1.0);
                }
            }
        }
    }

    /// `text` (upper-cased) at `(x, y)`, each font pixel `scale` pixels.
    fn text(&mut self, x: i64, y: i64, text: &str, color: Rgb, scale: i64) {
        let mut cx = x;
        for ch in text.chars() {
            let rows = glyph(ch.to_ascii_uppercase());
            for (r, bits) in rows.iter().enumerate() {
                for c in 0..5 {
                    if bits & (1 << (4 - c)) != 0 {
                        self.fill(cx + c * scale, y + r as i64 * scale, scale, scale, color);
                    }
                }
            }
            cx += 6 * scale;
        }
    }

    fn text_width(text: &str, scale: i64) -> i64 {
        text.chars().count() as i64 * 6 * scale - scale
    }

    fn png(&self, path: &Path) -> Result<()> {
        let mut bytes = Vec::new();
        let mut encoder = png::Encoder::new(&mut bytes, self.width as u32, self.height as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let err = |e: png::EncodingError| TrainError::Config(format!("{}: {e}", path.display()));
        let mut writer = encoder.write_header().map_err(err)?;
        writer.write_image_data(&self.pixels).map_err(err)?;
        writer.finish().map_err(err)?;
        write_atomic(path, &bytes)
    }
}

/// A viridis-like colormap of `t` in `[0, 1]`.
fn colormap(t: f64) -> Rgb {
    const ANCHORS: [Rgb; 5] = [
        [68, 1, 84],
        [59, 82, 139],
        [33, 145, 140],
        [94, 201, 98],
        [253, 231, 37],
    ];
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let x = t * (ANCHORS.len() - 1) as f64;
    let k = (x.floor() as usize).min(ANCHORS.len() - 2);
    let f = x - k as f64;
    let mut out = [0u8; 3];
    for c in 0..3 {
        let (a, b) = (ANCHORS[k][c] as f64, ANCHORS[k + 1][c] as f64);
        out[c] = (a + (b - a) * f).round() as u8;
    }
    out
}

/// Where panel `index` starts (left, top) in a figure of panels `width` wide.
fn panel_origin(index: usize, width: usize) -> (i64, i64) {
    (
        (MARGIN + index * (width + MARGIN)) as i64,
        (TITLE_BAND + PANEL_TITLE_BAND) as i64,
    )
}

/// A panel: its pixel box and the data range it shows.
struct Panel {
    x: i64,
    y: i64,
    w: i64,
    h: i64,
    lo: [f64; 2],
    hi: [f64; 2],
}

impl Panel {
    fn new(index: usize, width: usize, lo: [f64; 2], hi: [f64; 2]) -> Panel {
        let (x, y) = panel_origin(index, width);
        Panel {
            x,
            y,
            w: width as i64,
            h: PANEL as i64,
            lo,
            hi,
        }
    }

    /// The pixel position of the data point `(u, v)`.
    fn at(&self, u: f64, v: f64) -> (f64, f64) {
        (
            self.x as f64 + (u - self.lo[0]) / (self.hi[0] - self.lo[0]) * self.w as f64,
            self.y as f64 + (self.hi[1] - v) / (self.hi[1] - self.lo[1]) * self.h as f64,
        )
    }

    fn inside(&self, px: f64, py: f64) -> bool {
        px >= self.x as f64
            && py >= self.y as f64
            && px < (self.x + self.w) as f64
            && py < (self.y + self.h) as f64
    }

    fn decorate(&self, canvas: &mut Canvas, title: &str, footer: &str) {
        canvas.frame(self.x, self.y, self.w, self.h, GREY);
        let tw = Canvas::text_width(title, 2);
        canvas.text(
            self.x + (self.w - tw).max(0) / 2,
            TITLE_BAND as i64 + 2,
            title,
            BLACK,
            2,
        );
        let fw = Canvas::text_width(footer, 1);
        canvas.text(
            self.x + (self.w - fw).max(0) / 2,
            self.y + self.h + 8,
            footer,
            GREY,
            1,
        );
    }

    /// Semi-transparent dots of 3x3 pixels at the points (2 features).
    fn scatter(&self, canvas: &mut Canvas, points: &Points, color: Rgb) {
        let alpha = (600.0 / points.len().max(1) as f64).clamp(0.15, 0.8);
        for p in 0..points.len() {
            let r = points.row(p);
            let (px, py) = self.at(r[0], r[1]);
            if !self.inside(px, py) {
                continue;
            }
            for dy in -1..=1 {
                for dx in -1..=1 {
                    let (x, y) = (px as i64 + dx, py as i64 + dy);
                    if self.inside(x as f64, y as f64) {
                        canvas.blend(x, y, color, alpha);
                    }
                }
            }
        }
    }

    /// The grid's values as colours, scaled by their maximum.
    fn heat(&self, canvas: &mut Canvas, grid: &Grid) {
        let max = grid
            .values
            .iter()
            .copied()
            .filter(|v| v.is_finite())
            .fold(0.0, f64::max);
        for py in 0..self.h {
            for px in 0..self.w {
                let j = (px as usize * grid.cells) / self.w as usize;
                let i = (py as usize * grid.cells) / self.h as usize;
                let v = grid.values[i * grid.cells + j];
                let t = if max > 0.0 { v / max } else { 0.0 };
                canvas.blend(self.x + px, self.y + py, colormap(t), 1.0);
            }
        }
    }

    /// A curve through `(u, v)` points, clipped to the panel.
    fn curve(&self, canvas: &mut Canvas, points: &[(f64, f64)], color: Rgb, dash: f64) {
        for pair in points.windows(2) {
            let (x0, y0) = self.at(pair[0].0, pair[0].1);
            let (x1, y1) = self.at(pair[1].0, pair[1].1);
            let clip = |y: f64| y.clamp(self.y as f64, (self.y + self.h - 1) as f64);
            if x0.is_finite() && x1.is_finite() && y0.is_finite() && y1.is_finite() {
                canvas.line(x0, clip(y0), x1, clip(y1), color, 2, dash);
            }
        }
    }

    /// Histogram bars of `values` in `bins` bins over the panel's x range,
    /// normalised to a density; returns the highest bar.
    fn histogram_heights(&self, values: &[f64], bins: usize) -> Vec<f64> {
        let width = (self.hi[0] - self.lo[0]) / bins as f64;
        let mut counts = vec![0.0; bins];
        for &v in values {
            let b = ((v - self.lo[0]) / width).floor();
            if (0.0..bins as f64).contains(&b) {
                counts[b as usize] += 1.0;
            }
        }
        let scale = 1.0 / (values.len().max(1) as f64 * width);
        counts.iter().map(|c| c * scale).collect()
    }

    fn bars(&self, canvas: &mut Canvas, heights: &[f64]) {
        let width = (self.hi[0] - self.lo[0]) / heights.len() as f64;
        for (b, &h) in heights.iter().enumerate() {
            let u = self.lo[0] + b as f64 * width;
            let (x0, y0) = self.at(u, h);
            let (x1, y1) = self.at(u + width, 0.0);
            let top = y0.max(self.y as f64);
            canvas.fill(
                x0.round() as i64,
                top.round() as i64,
                (x1.round() - x0.round()).max(1.0) as i64 - 1,
                (y1 - top).round() as i64,
                BAR,
            );
        }
    }

    /// A legend line of colour swatches and labels at the panel's top left.
    fn legend(&self, canvas: &mut Canvas, entries: &[(&str, Rgb)]) {
        for (k, (label, color)) in entries.iter().enumerate() {
            let y = self.y + 8 + 12 * k as i64;
            canvas.fill(self.x + 8, y + 2, 12, 3, *color);
            canvas.text(self.x + 26, y, label, BLACK, 1);
        }
    }
}

/// `[-h, h]` or `[lo, hi]` as text.
fn range_text(lo: [f64; 2], hi: [f64; 2]) -> String {
    format!(
        "X [{:.1}, {:.1}]  Y [{:.1}, {:.1}]",
        lo[0], hi[0], lo[1], hi[1]
    )
}

fn title(canvas: &mut Canvas, text: &str) {
    canvas.text(MARGIN as i64, 6, text, BLACK, 2);
}

/// The four panels of a 2-D density run (see the module docs). `range`
/// is the data panels' `(lo, hi)`; the latent panel shows `[-4, 4]^2`.
pub fn figure_2d(
    path: &Path,
    heading: &str,
    data: &Points,
    latent: &Points,
    samples: &Points,
    density: &Grid,
) -> Result<()> {
    let (w, h) = figure_size(4, PANEL);
    let mut canvas = Canvas::new(w, h);
    title(&mut canvas, heading);
    let (lo, hi) = (density.lo, density.hi);
    let panels = [
        Panel::new(0, PANEL, lo, hi),
        Panel::new(1, PANEL, [-4.0, -4.0], [4.0, 4.0]),
        Panel::new(2, PANEL, lo, hi),
        Panel::new(3, PANEL, lo, hi),
    ];
    panels[0].scatter(&mut canvas, data, BLUE);
    panels[1].scatter(&mut canvas, latent, GREEN);
    panels[2].scatter(&mut canvas, samples, ORANGE);
    panels[3].heat(&mut canvas, density);
    // the latent panel: the unit circle and the 2-sigma circle of N(0, I)
    for radius in [1.0, 2.0] {
        let circle: Vec<(f64, f64)> = (0..=120)
            .map(|k| {
                let a = 2.0 * std::f64::consts::PI * k as f64 / 120.0;
                (radius * a.cos(), radius * a.sin())
            })
            .collect();
        panels[1].curve(&mut canvas, &circle, GREY, 4.0);
    }
    let names = [
        "data (test)",
        "latent z = f(x)",
        "flow samples",
        "density q(x)",
    ];
    for (k, (panel, name)) in panels.iter().zip(names).enumerate() {
        let footer = if k == 1 {
            range_text([-4.0, -4.0], [4.0, 4.0]) + "  circles r = 1, 2"
        } else {
            range_text(lo, hi)
        };
        panel.decorate(&mut canvas, name, &footer);
    }
    canvas.png(path)
}

/// The two panels of a 1-D density run: the data's histogram with the
/// learned density `learned` (and the exact one), over `[lo, hi]`; the
/// latent's histogram with `N(0, 1)` over `[-4, 4]`.
pub fn figure_1d(
    path: &Path,
    heading: &str,
    data: &[f64],
    latent: &[f64],
    learned: &[(f64, f64)],
    exact: Option<&[(f64, f64)]>,
    range: (f64, f64),
) -> Result<()> {
    let (w, h) = figure_size(2, WIDE_PANEL);
    let mut canvas = Canvas::new(w, h);
    title(&mut canvas, heading);
    let bins = 60;
    let probe = Panel::new(0, WIDE_PANEL, [range.0, 0.0], [range.1, 1.0]);
    let heights = probe.histogram_heights(data, bins);
    let top = heights
        .iter()
        .chain(learned.iter().map(|p| &p.1))
        .chain(exact.unwrap_or(&[]).iter().map(|p| &p.1))
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max)
        .max(1e-6)
        * 1.1;
    let left = Panel::new(0, WIDE_PANEL, [range.0, 0.0], [range.1, top]);
    left.bars(&mut canvas, &heights);
    if let Some(exact) = exact {
        left.curve(&mut canvas, exact, BLACK, 6.0);
    }
    left.curve(&mut canvas, learned, RED, 0.0);
    let mut entries = vec![("test data", BAR), ("flow q(x)", RED)];
    if exact.is_some() {
        entries.push(("exact p(x)", BLACK));
    }
    left.legend(&mut canvas, &entries);
    left.decorate(
        &mut canvas,
        "data and density",
        &format!("X [{:.1}, {:.1}]  Y [0, {top:.2}]", range.0, range.1),
    );

    let gauss: Vec<(f64, f64)> = (0..=200)
        .map(|k| {
            let z = -4.0 + 8.0 * k as f64 / 200.0;
            (
                z,
                (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt(),
            )
        })
        .collect();
    let probe = Panel::new(1, WIDE_PANEL, [-4.0, 0.0], [4.0, 1.0]);
    let heights = probe.histogram_heights(latent, bins);
    let top = heights.iter().copied().fold(0.45, f64::max) * 1.1;
    let right = Panel::new(1, WIDE_PANEL, [-4.0, 0.0], [4.0, top]);
    right.bars(&mut canvas, &heights);
    right.curve(&mut canvas, &gauss, BLACK, 6.0);
    right.legend(&mut canvas, &[("z = f(x), test", BAR), ("N(0, 1)", BLACK)]);
    right.decorate(
        &mut canvas,
        "latent",
        &format!("X [-4, 4]  Y [0, {top:.2}]"),
    );
    canvas.png(path)
}

/// A reverse-KL fit: the target `exp(-U)` and a histogram of the flow's
/// samples, on the same grid.
pub fn figure_target(path: &Path, heading: &str, target: &Grid, fitted: &Grid) -> Result<()> {
    let (w, h) = figure_size(2, PANEL);
    let mut canvas = Canvas::new(w, h);
    title(&mut canvas, heading);
    let left = Panel::new(0, PANEL, target.lo, target.hi);
    let right = Panel::new(1, PANEL, fitted.lo, fitted.hi);
    left.heat(&mut canvas, target);
    right.heat(&mut canvas, fitted);
    left.decorate(
        &mut canvas,
        "target exp(-U)",
        &range_text(target.lo, target.hi),
    );
    right.decorate(
        &mut canvas,
        "flow samples",
        &range_text(fitted.lo, fitted.hi),
    );
    canvas.png(path)
}

/// The 5x7 glyph of `c` (rows top to bottom, bit 4 the leftmost pixel); `?`
/// for characters the font lacks.
fn glyph(c: char) -> [u8; 7] {
    match c {
        ' ' => [0; 7],
        'A' => [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1E],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'Q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        'X' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04],
        'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        '.' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C],
        ',' => [0x00, 0x00, 0x00, 0x00, 0x0C, 0x04, 0x08],
        '-' => [0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00],
        '+' => [0x00, 0x04, 0x04, 0x1F, 0x04, 0x04, 0x00],
        '=' => [0x00, 0x00, 0x1F, 0x00, 0x1F, 0x00, 0x00],
        '(' => [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02],
        ')' => [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08],
        ':' => [0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00],
        '/' => [0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x00],
        '_' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1F],
        '[' => [0x0E, 0x08, 0x08, 0x08, 0x08, 0x08, 0x0E],
        ']' => [0x0E, 0x02, 0x02, 0x02, 0x02, 0x02, 0x0E],
        '|' => [0x04; 7],
        '^' => [0x04, 0x0A, 0x11, 0x00, 0x00, 0x00, 0x00],
        '*' => [0x00, 0x04, 0x15, 0x0E, 0x15, 0x04, 0x00],
        '<' => [0x02, 0x04, 0x08, 0x10, 0x08, 0x04, 0x02],
        '>' => [0x08, 0x04, 0x02, 0x01, 0x02, 0x04, 0x08],
        _ => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x00, 0x04],
    }
}
