//! Sweeps: a grid of runs (settings times seeds), one after another, each
//! in its own folder, resumable, and the summary of any set of finished
//! runs: test bpd mean, standard deviation and per-seed values per setting,
//! seconds per step, parameter counts and loss spikes, as `summary.md`,
//! `summary.json`, `curves.svg` (test bpd against steps: mean and band of
//! the seeds) and `bars.svg` (mean with error bars).
//!
//! A setting is what distinguishes runs besides their seed: the
//! configuration keys whose values differ among the summarised runs.

use crate::config::TrainConfig;
use crate::error::{Result, TrainError};
use crate::files::write_atomic;
use crate::report::{Evaluation, Summary};
use crate::train::{Trainer, CHECKPOINT};
use plotters::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The manifest a sweep writes into its folder: its runs in order.
pub const MANIFEST: &str = "sweep.json";

/// One run of a sweep: its folder name and configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepRun {
    pub name: String,
    pub config: TrainConfig,
}

/// Parses a seed list: `0..3` (3 excluded), `0..=2`, or `0,1,2`.
pub fn parse_seeds(text: &str) -> Result<Vec<u64>> {
    let bad = || {
        TrainError::Config(format!(
            "--seeds {text:?}: expected a range like 0..3 or 0..=2, or a list like 0,1,2"
        ))
    };
    let number = |s: &str| s.trim().parse::<u64>().map_err(|_| bad());
    let seeds: Vec<u64> = if let Some((a, b)) = text.split_once("..=") {
        (number(a)?..=number(b)?).collect()
    } else if let Some((a, b)) = text.split_once("..") {
        (number(a)?..number(b)?).collect()
    } else {
        text.split(',').map(number).collect::<Result<_>>()?
    };
    if seeds.is_empty() || seeds.len() > 1000 {
        return Err(bad());
    }
    Ok(seeds)
}

/// Whether the run in `dir` ended: it wrote `metrics.json` (its last output).
fn finished(dir: &Path) -> bool {
    dir.join("metrics.json").is_file()
}

/// Runs every run of `runs` in `out/NAME` in order: a finished run is
/// skipped, an interrupted one resumes from its checkpoint, and a folder
/// holding a run of another configuration is an error. Writes the manifest
/// first and the summary last.
pub fn run_sweep(runs: &[SweepRun], out: &Path, progress: bool) -> Result<SweepSummary> {
    std::fs::create_dir_all(out).map_err(|e| TrainError::io(out, e))?;
    let manifest =
        serde_json::to_string_pretty(runs).map_err(|e| TrainError::Config(e.to_string()))?;
    write_atomic(&out.join(MANIFEST), manifest.as_bytes())?;
    for (i, run) in runs.iter().enumerate() {
        let dir = out.join(&run.name);
        let saved = std::fs::read_to_string(dir.join("config.toml"))
            .ok()
            .and_then(|t| TrainConfig::default().merge_toml(&t).ok());
        if let Some(saved) = &saved {
            let mut expected = run.config.clone();
            expected.data_dir = saved.data_dir.clone();
            if *saved != expected {
                return Err(TrainError::Config(format!(
                    "{} holds a run of another configuration; choose another --out for this sweep",
                    dir.display()
                )));
            }
        }
        let label = format!("[{}/{}] {}", i + 1, runs.len(), run.name);
        if finished(&dir) {
            eprintln!("{label}: finished, skipped");
            continue;
        }
        let mut trainer = if dir.join(CHECKPOINT).is_file() {
            eprintln!("{label}: resuming");
            Trainer::resume(&dir, None)?
        } else {
            eprintln!("{label}: starting");
            Trainer::new(run.config.clone(), &dir)?
        };
        trainer.progress = progress;
        let report = trainer.run()?;
        eprintln!(
            "{label}: test bpd {:.4}, {:.4} s/step",
            report.summary.test_bpd, report.summary.sec_per_step
        );
    }
    summarize(&[out.to_path_buf()], out)
}

/// One finished run, as the summary sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    pub dir: PathBuf,
    pub seed: u64,
    pub test_bpd: f64,
    pub sec_per_step: f64,
    pub parameters: usize,
    pub steps: u64,
    pub loss_spikes: usize,
    /// `(step, test bpd)` of every evaluation.
    #[serde(skip)]
    pub curve: Vec<(u64, f64)>,
}

/// The runs of one setting and their statistics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SettingSummary {
    /// The values that set it apart (`key=value` pairs; the value alone when one key varies).
    pub setting: String,
    pub runs: Vec<RunResult>,
    pub test_bpd_mean: f64,
    /// The sample standard deviation over seeds (`None` for one run).
    pub test_bpd_sd: Option<f64>,
    pub sec_per_step_mean: f64,
    pub parameters: usize,
}

/// The content of `summary.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepSummary {
    /// The configuration keys that vary between settings.
    pub varied: Vec<String>,
    pub settings: Vec<SettingSummary>,
}

/// The finished run folders under `dirs` (each a run or a folder of runs),
/// in manifest order where a sweep's manifest exists, else by name.
fn run_dirs(dirs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for dir in dirs {
        if finished(dir) {
            found.push(dir.clone());
            continue;
        }
        let manifest = std::fs::read_to_string(dir.join(MANIFEST))
            .ok()
            .and_then(|t| serde_json::from_str::<Vec<SweepRun>>(&t).ok());
        let mut children: Vec<PathBuf> = match manifest {
            Some(runs) => runs.iter().map(|r| dir.join(&r.name)).collect(),
            None => {
                let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
                    .map_err(|e| TrainError::io(dir, e))?
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.is_dir())
                    .collect();
                names.sort();
                names
            }
        };
        children.retain(|p| finished(p));
        found.extend(children);
    }
    Ok(found)
}

/// Reads one finished run.
fn read_run(dir: &Path) -> Result<(toml::Table, RunResult)> {
    let config_path = dir.join("config.toml");
    let text =
        std::fs::read_to_string(&config_path).map_err(|e| TrainError::io(&config_path, e))?;
    let config = TrainConfig::default()
        .merge_toml(&text)
        .map_err(|e| TrainError::Config(format!("{}: {e}", config_path.display())))?;
    let table = toml::Table::try_from(&config).map_err(|e| TrainError::Config(e.to_string()))?;
    let metrics_path = dir.join("metrics.json");
    let summary: Summary = serde_json::from_str(
        &std::fs::read_to_string(&metrics_path).map_err(|e| TrainError::io(&metrics_path, e))?,
    )
    .map_err(|e| TrainError::data(&metrics_path, e.to_string()))?;
    let curve = std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Evaluation>(l).ok())
        .map(|e| (e.step, e.test_bpd))
        .collect();
    Ok((
        table,
        RunResult {
            dir: dir.to_path_buf(),
            seed: config.seed,
            test_bpd: summary.test_bpd,
            sec_per_step: summary.sec_per_step,
            parameters: summary.parameters,
            steps: summary.steps,
            loss_spikes: summary.loss_spikes.len(),
            curve,
        },
    ))
}

fn toml_value(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The summary of the finished runs under `dirs`, written to `out`
/// (`summary.md`, `summary.json`, `curves.svg`, `bars.svg`).
pub fn summarize(dirs: &[PathBuf], out: &Path) -> Result<SweepSummary> {
    let runs = run_dirs(dirs)?
        .iter()
        .map(|d| read_run(d))
        .collect::<Result<Vec<_>>>()?;
    if runs.is_empty() {
        return Err(TrainError::Config(format!(
            "no finished runs (folders with metrics.json) under {dirs:?}"
        )));
    }
    // the keys whose values differ, the seed and the data's place aside
    let ignored = ["seed", "data_dir"];
    let mut varied: Vec<String> = runs[0]
        .0
        .keys()
        .filter(|k| !ignored.contains(&k.as_str()))
        .filter(|k| runs.iter().any(|(t, _)| t.get(*k) != runs[0].0.get(*k)))
        .cloned()
        .collect();
    varied.sort();
    let label = |table: &toml::Table| -> String {
        match varied.as_slice() {
            [] => "all".to_string(),
            [one] => table.get(one).map(toml_value).unwrap_or_default(),
            keys => keys
                .iter()
                .map(|k| format!("{k}={}", table.get(k).map(toml_value).unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(" "),
        }
    };
    let mut settings: Vec<SettingSummary> = Vec::new();
    for (table, run) in runs {
        let name = label(&table);
        match settings.iter_mut().find(|s| s.setting == name) {
            Some(s) => s.runs.push(run),
            None => settings.push(SettingSummary {
                setting: name,
                runs: vec![run],
                test_bpd_mean: 0.0,
                test_bpd_sd: None,
                sec_per_step_mean: 0.0,
                parameters: 0,
            }),
        }
    }
    for s in &mut settings {
        let n = s.runs.len() as f64;
        s.test_bpd_mean = s.runs.iter().map(|r| r.test_bpd).sum::<f64>() / n;
        s.test_bpd_sd = (s.runs.len() > 1).then(|| {
            let var = s
                .runs
                .iter()
                .map(|r| (r.test_bpd - s.test_bpd_mean).powi(2))
                .sum::<f64>()
                / (n - 1.0);
            var.sqrt()
        });
        s.sec_per_step_mean = s.runs.iter().map(|r| r.sec_per_step).sum::<f64>() / n;
        s.parameters = s.runs[0].parameters;
    }
    let summary = SweepSummary { varied, settings };
    std::fs::create_dir_all(out).map_err(|e| TrainError::io(out, e))?;
    let json =
        serde_json::to_string_pretty(&summary).map_err(|e| TrainError::Config(e.to_string()))?;
    write_atomic(&out.join("summary.json"), (json + "\n").as_bytes())?;
    write_atomic(&out.join("summary.md"), markdown(&summary).as_bytes())?;
    plot_curves(&out.join("curves.svg"), &summary)?;
    plot_bars(&out.join("bars.svg"), &summary)?;
    Ok(summary)
}

/// The summary as a Markdown table.
pub fn markdown(summary: &SweepSummary) -> String {
    let mut md = String::from(
        "| setting | test bpd (mean ± sd) | per seed | s/step | parameters | loss spikes |\n| --- | --- | --- | --- | --- | --- |\n",
    );
    for s in &summary.settings {
        let sd = s
            .test_bpd_sd
            .map_or("".to_string(), |sd| format!(" ± {sd:.3}"));
        let per_seed: Vec<String> = s
            .runs
            .iter()
            .map(|r| format!("{}: {:.3}", r.seed, r.test_bpd))
            .collect();
        let spikes: usize = s.runs.iter().map(|r| r.loss_spikes).sum();
        md += &format!(
            "| `{}` | {:.3}{sd} | {} | {:.4} | {} | {spikes} |\n",
            s.setting,
            s.test_bpd_mean,
            per_seed.join(", "),
            s.sec_per_step_mean,
            s.parameters
        );
    }
    md
}

/// A distinct colour per setting.
fn colour(i: usize) -> RGBColor {
    const PALETTE: [RGBColor; 10] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
    ];
    PALETTE[i % PALETTE.len()]
}

/// `(step, mean, min, max)` of the seeds' test bpd at the steps all of them evaluated.
fn mean_curve(s: &SettingSummary) -> Vec<(u64, f64, f64, f64)> {
    let first = &s.runs[0].curve;
    first
        .iter()
        .filter_map(|&(step, _)| {
            let values: Vec<f64> = s
                .runs
                .iter()
                .filter_map(|r| r.curve.iter().find(|p| p.0 == step).map(|p| p.1))
                .collect();
            (values.len() == s.runs.len()).then(|| {
                let mean = values.iter().sum::<f64>() / values.len() as f64;
                let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                (step, mean, lo, hi)
            })
        })
        .collect()
}

fn plot_curves(path: &Path, summary: &SweepSummary) -> Result<()> {
    let fail = |e: String| TrainError::Config(format!("plot {}: {e}", path.display()));
    let curves: Vec<_> = summary.settings.iter().map(mean_curve).collect();
    let points = curves.iter().flatten();
    let last = points.clone().map(|p| p.0).max().unwrap_or(1).max(1);
    // the y range leaves out the first evaluation's (untrained) values when later ones exist
    let tail = points
        .clone()
        .filter(|p| p.0 * 5 >= last || curves.iter().all(|c| c.len() <= 1));
    let (lo, hi) = tail.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
        (a.min(p.2), b.max(p.3))
    });
    let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
    let pad = ((hi - lo) * 0.08).max(0.01);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 540)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "test bits per dimension (mean and range of the seeds)",
                ("sans-serif", 20),
            )
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .build_cartesian_2d(0u64..last, (lo - pad)..(hi + pad))
            .map_err(|e| fail(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc("test bpd")
            .draw()
            .map_err(|e| fail(e.to_string()))?;
        for (i, (s, curve)) in summary.settings.iter().zip(&curves).enumerate() {
            let c = colour(i);
            let band: Vec<(u64, f64)> = curve
                .iter()
                .map(|p| (p.0, p.3))
                .chain(curve.iter().rev().map(|p| (p.0, p.2)))
                .collect();
            if curve.len() > 1 {
                chart
                    .draw_series(std::iter::once(Polygon::new(band, c.mix(0.18).filled())))
                    .map_err(|e| fail(e.to_string()))?;
            }
            chart
                .draw_series(LineSeries::new(
                    curve.iter().map(|p| (p.0, p.1)),
                    c.stroke_width(2),
                ))
                .map_err(|e| fail(e.to_string()))?
                .label(s.setting.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| fail(e.to_string()))?;
        root.present().map_err(|e| fail(e.to_string()))?;
    }
    write_atomic(path, svg.as_bytes())
}

fn plot_bars(path: &Path, summary: &SweepSummary) -> Result<()> {
    let fail = |e: String| TrainError::Config(format!("plot {}: {e}", path.display()));
    let n = summary.settings.len();
    let spread = |s: &SettingSummary| s.test_bpd_sd.unwrap_or(0.0);
    let lo = summary
        .settings
        .iter()
        .map(|s| s.test_bpd_mean - spread(s))
        .fold(f64::INFINITY, f64::min);
    let hi = summary
        .settings
        .iter()
        .map(|s| s.test_bpd_mean + spread(s))
        .fold(f64::NEG_INFINITY, f64::max);
    let pad = ((hi - lo) * 0.25).max(0.02);
    let (floor, top) = ((lo - pad).max(0.0), hi + pad);
    let mut svg = String::new();
    {
        let width = (140 * n as u32 + 160).max(480);
        let root = SVGBackend::with_string(&mut svg, (width, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
        let mut chart = ChartBuilder::on(&root)
            .caption("test bpd: mean ± sd over seeds", ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d((0..n).into_segmented(), floor..top)
            .map_err(|e| fail(e.to_string()))?;
        let names: Vec<String> = summary.settings.iter().map(|s| s.setting.clone()).collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n)
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .y_desc("test bpd")
            .draw()
            .map_err(|e| fail(e.to_string()))?;
        chart
            .draw_series(summary.settings.iter().enumerate().map(|(i, s)| {
                let mut bar = Rectangle::new(
                    [
                        (SegmentValue::Exact(i), floor),
                        (SegmentValue::Exact(i + 1), s.test_bpd_mean),
                    ],
                    colour(i).mix(0.7).filled(),
                );
                bar.set_margin(0, 0, 18, 18);
                bar
            }))
            .map_err(|e| fail(e.to_string()))?;
        chart
            .draw_series(summary.settings.iter().enumerate().map(|(i, s)| {
                let sd = spread(s);
                ErrorBar::new_vertical(
                    SegmentValue::CenterOf(i),
                    s.test_bpd_mean - sd,
                    s.test_bpd_mean,
                    s.test_bpd_mean + sd,
                    BLACK.stroke_width(2),
                    16,
                )
            }))
            .map_err(|e| fail(e.to_string()))?;
        root.present().map_err(|e| fail(e.to_string()))?;
    }
    write_atomic(path, svg.as_bytes())
}
