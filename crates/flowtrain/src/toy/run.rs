//! A toy run: maximum likelihood on points (fresh samples of a toy density
//! every step, or a fixed training set from a file), or reverse KL to an
//! energy `U`; then the test metrics, the figure and `metrics.json`.

use super::config::{DataSource, Objective, Target, ToyConfig};
use super::data::{load_points, split, Points};
use super::energy::{energy_tensor, log_normalizer, target_grid};
use super::flows::{build_flow, limitation, parameter_count};
use super::plot::{figure_1d, figure_2d, figure_target, Grid};
use crate::data::toys::Toy;
use crate::error::{Result, TrainError};
use crate::files::{write_atomic, RunLock};
use crate::optim::{clip_factor, Optimizer};
use crate::report::{progress_bar, write_json, write_profile};
use flowlayers::{Base, Flow, FlowDistribution, StandardNormal};
use flowtensor::{in_pool, no_grad, profile, DType, Device, Generator, Tensor};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The figure of a run, in its folder.
pub const FIGURE: &str = "figure.png";
/// The metrics of a run, in its folder.
pub const METRICS: &str = "metrics.json";
/// The resolved configuration of a run, in its folder.
pub const CONFIG: &str = "config.toml";

/// Salts that separate the generators of one seed.
const INIT_SALT: u64 = 0x1;
const DATA_SALT: u64 = 0x2;
const TEST_SALT: u64 = 0x3;
const SAMPLE_SALT: u64 = 0x4;
/// Points per evaluation batch.
const EVAL_BATCH: usize = 4096;
/// Points of the data-dependent initialisation (ActNorm).
const INIT_POINTS: usize = 1024;
/// Samples of the reverse-KL figure's histogram.
const HISTOGRAM_SAMPLES: usize = 200_000;
/// The reverse-KL figure shows `[-4, 4]^2`; `log Z` is integrated over `[-6, 6]^2`.
const TARGET_BOX: f64 = 4.0;
const NORMALIZER_BOX: f64 = 6.0;

/// `metrics.json`: what a toy run measured. Negative log-likelihoods are in
/// nats per sample (per point, all features together).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToyMetrics {
    /// The toy density, the data file, or the energy (`reverse-kl`).
    pub dataset: String,
    pub flow: String,
    pub objective: Objective,
    /// Features per point.
    pub dim: usize,
    pub dtype: String,
    pub device: String,
    pub steps: u64,
    /// Seconds in the training loop only.
    pub seconds: f64,
    pub sec_per_step: f64,
    /// Seconds of the whole run (with evaluation and the figure).
    pub total_seconds: f64,
    pub parameters: usize,
    /// Points of a fixed training set (none: fresh samples every step).
    pub train_points: Option<usize>,
    /// Points of the test NLL, or samples of the reverse-KL estimate.
    pub test_points: usize,
    /// Test NLL before the first step (after the data-dependent initialisation).
    pub initial_test_nll: Option<f64>,
    /// `-E_test[log q(x)]`.
    pub test_nll: Option<f64>,
    /// `-E_test[log p(x)]` under the true density, where it is known.
    pub true_test_nll: Option<f64>,
    /// `E_test[log p(x) - log q(x)] = test_nll - true_test_nll`, an estimate
    /// of `KL(p || q)` (`mle`), or `reverse_kl_loss + log_z`, an estimate of
    /// `KL(q || p)` (`reverse-kl`).
    pub kl_estimate: Option<f64>,
    /// `E_q[log q(z) + U(z)]` before the first step (`reverse-kl`).
    pub initial_loss: Option<f64>,
    /// `E_q[log q(z) + U(z)]` at the end, `>= -log Z` (`reverse-kl`).
    pub reverse_kl_loss: Option<f64>,
    /// `log` of the integral of `exp(-U)` by quadrature (`reverse-kl`).
    pub log_z: Option<f64>,
    /// `(step, test NLL)` or `(step, reverse-KL loss)` of every evaluation.
    pub curve: Vec<(u64, f64)>,
    /// Remarks about the run (a flow that cannot fit the data, ...).
    pub notes: Vec<String>,
    pub config: ToyConfig,
}

/// What [`run`] produced.
#[derive(Clone, Debug)]
pub struct ToyReport {
    pub metrics: ToyMetrics,
    /// The files written (figure, metrics, configuration).
    pub files: Vec<PathBuf>,
}

/// A generator for `purpose` of this seed.
fn generator(seed: u64, salt: u64) -> Generator {
    Generator::new(seed ^ salt << 56)
}

/// Fails at once, naming the device and the reason, when `device` cannot be used.
fn probe_device(device: Device) -> Result<()> {
    if let Device::Cuda(n) = device {
        flowtensor::cuda::probe(n)?;
    }
    Ok(())
}

/// Trains and evaluates the run of `config` in `out` (created and locked
/// while the run writes; its `figure.png`, `metrics.json` and
/// `config.toml` are replaced atomically). `progress` shows a progress bar.
/// Runs on a thread of the CPU kernels' pool (see [`flowtensor::in_pool`]).
pub fn run(config: &ToyConfig, out: &Path, progress: bool) -> Result<ToyReport> {
    flowtensor::in_pool(|| run_in_pool(config, out, progress))
}

fn run_in_pool(config: &ToyConfig, out: &Path, progress: bool) -> Result<ToyReport> {
    let config = config.resolved();
    config.check()?;
    probe_device(config.device)?;
    // data errors come before anything is written
    let data = match config.objective {
        Objective::Mle => Some(TrainingData::load(&config)?),
        Objective::ReverseKl => None,
    };
    let _lock = RunLock::acquire(out)?;
    let config_path = out.join(CONFIG);
    write_atomic(&config_path, config.to_toml()?.as_bytes())?;
    let started = Instant::now();
    let (mut metrics, figure) = match (config.objective, data) {
        (Objective::Mle, Some(data)) => fit_density(&config, data, out, progress)?,
        (_, _) => {
            let target = config
                .target
                .ok_or_else(|| TrainError::Config("reverse-kl needs a target".into()))?;
            fit_energy(&config, target, out, progress)?
        }
    };
    metrics.total_seconds = started.elapsed().as_secs_f64();
    let metrics_path = out.join(METRICS);
    write_json(&metrics_path, &metrics)?;
    Ok(ToyReport {
        metrics,
        files: vec![figure, metrics_path, config_path],
    })
}

/// The training and test points of a maximum-likelihood run.
struct TrainingData {
    /// Fresh samples every step, or a fixed set.
    train: Training,
    test: Points,
    /// The toy density, whose exact density may be known.
    toy: Option<Toy>,
}

enum Training {
    Fresh(Toy, Generator),
    Fixed(Points),
}

impl TrainingData {
    fn load(config: &ToyConfig) -> Result<TrainingData> {
        Ok(match config.source()? {
            DataSource::Toy(toy) => {
                let test = toy.sample(config.test_size, &mut generator(config.seed, TEST_SALT))?;
                TrainingData {
                    train: Training::Fresh(toy, generator(config.seed, DATA_SALT)),
                    test: Points::from_tensor(&test)?,
                    toy: Some(toy),
                }
            }
            DataSource::File(path) => {
                let all = load_points(&path)?;
                let test = config.test.as_deref().map(load_points).transpose()?;
                let (train, test) = split(all, test, config.seed, &path)?;
                TrainingData {
                    train: Training::Fixed(train),
                    test,
                    toy: None,
                }
            }
        })
    }

    /// The training batch of `step` (as host points).
    fn batch(&mut self, config: &ToyConfig, step: u64) -> Result<Points> {
        match &mut self.train {
            Training::Fresh(toy, gen) => Points::from_tensor(&toy.sample(config.batch_size, gen)?),
            Training::Fixed(points) => {
                let n = points.len();
                let indices =
                    crate::batch::step_indices(config.seed, step, config.batch_size.min(n), n);
                Ok(points.select(&indices))
            }
        }
    }

    /// The points of the data-dependent initialisation.
    fn init_points(&self, config: &ToyConfig) -> Result<Points> {
        match &self.train {
            Training::Fresh(toy, _) => Points::from_tensor(
                &toy.sample(INIT_POINTS, &mut generator(config.seed, INIT_SALT))?,
            ),
            Training::Fixed(points) => {
                let order = crate::batch::epoch_order(config.seed, 0, points.len());
                Ok(points.select(&order[..INIT_POINTS.min(order.len())]))
            }
        }
    }
}

/// One optimiser update from `loss`; returns the loss's value.
fn update(optimizer: &mut Optimizer, config: &ToyConfig, loss: &Tensor, step: u64) -> Result<f64> {
    let value = loss.to_scalar()?;
    let non_finite = |v: f64| TrainError::NonFinite {
        step: step + 1,
        loss: v,
        checkpoint: None,
    };
    if !value.is_finite() {
        return Err(non_finite(value));
    }
    optimizer.zero_grad();
    loss.backward()?;
    profile::scope("optimizer", || {
        let norm = optimizer.grad_norm()?;
        if !norm.is_finite() {
            return Err(non_finite(norm));
        }
        optimizer.step(
            config.schedule().lr(step),
            clip_factor(norm, config.max_grad_norm),
        )
    })?;
    Ok(value)
}

/// `log q(x)` of every point, in evaluation mode and without a graph.
fn log_prob(
    dist: &FlowDistribution,
    points: &Points,
    dtype: DType,
    device: Device,
) -> Result<Vec<f64>> {
    dist.flow.set_training(false);
    let mut out = Vec::with_capacity(points.len());
    for start in (0..points.len()).step_by(EVAL_BATCH) {
        let end = (start + EVAL_BATCH).min(points.len());
        let idx: Vec<usize> = (start..end).collect();
        let x = points.select(&idx).tensor(dtype, device)?;
        out.extend(no_grad(|| dist.log_prob(&x))?.to_vec_f64()?);
    }
    dist.flow.set_training(true);
    Ok(out)
}

/// `f(x)` of every point (evaluation mode, no graph).
fn latent(flow: &dyn Flow, points: &Points, dtype: DType, device: Device) -> Result<Points> {
    flow.set_training(false);
    let x = points.tensor(dtype, device)?;
    let z = no_grad(|| flow.forward(&x))?.0;
    flow.set_training(true);
    Points::from_tensor(&z)
}

/// The mean of `-values`.
fn mean_negative(values: &[f64]) -> f64 {
    -values.iter().sum::<f64>() / values.len().max(1) as f64
}

/// The square plotting box around `points` (the first two features): the
/// range of the points padded by 15%, the same span on both axes.
fn plot_box(points: &Points) -> ([f64; 2], [f64; 2]) {
    let mut lo = [f64::INFINITY; 2];
    let mut hi = [f64::NEG_INFINITY; 2];
    for i in 0..points.len() {
        for a in 0..2 {
            lo[a] = lo[a].min(points.row(i)[a]);
            hi[a] = hi[a].max(points.row(i)[a]);
        }
    }
    let span = (hi[0] - lo[0]).max(hi[1] - lo[1]).max(1e-6) * 1.15;
    let centre = [(lo[0] + hi[0]) / 2.0, (lo[1] + hi[1]) / 2.0];
    (
        [centre[0] - span / 2.0, centre[1] - span / 2.0],
        [centre[0] + span / 2.0, centre[1] + span / 2.0],
    )
}

/// Maximum likelihood on the run's points; returns the metrics and the figure's path.
fn fit_density(
    config: &ToyConfig,
    mut data: TrainingData,
    out: &Path,
    progress: bool,
) -> Result<(ToyMetrics, PathBuf)> {
    let (dtype, device) = (config.dtype.dtype(), config.device);
    let dim = data.test.dim();
    let flow = build_flow(
        config,
        dim,
        dtype,
        device,
        &mut generator(config.seed, INIT_SALT),
    )?;
    let parameters = parameter_count(&flow);
    let dist = FlowDistribution::new(
        Box::new(flow),
        Box::new(StandardNormal::new(&[dim], dtype, device)),
    );
    // ActNorm's data-dependent initialisation: one forward in training mode
    dist.flow.set_training(true);
    let init = data.init_points(config)?.tensor(dtype, device)?;
    no_grad(|| dist.log_prob(&init))?;

    let initial = mean_negative(&log_prob(&dist, &data.test, dtype, device)?);
    let mut curve = vec![(0, initial)];
    let mut optimizer = Optimizer::new(config.optimizer, dist.parameters())?;
    let total = config.total_steps();
    let bar = progress_bar(total, progress);
    let mut seconds = 0.0;
    let session = profile::if_requested();
    for step in 0..total {
        let x = profile::scope("data", || data.batch(config, step)?.tensor(dtype, device))?;
        let start = Instant::now();
        let value = in_pool(|| {
            update(
                &mut optimizer,
                config,
                &dist.log_prob(&x)?.mean_all()?.neg()?,
                step,
            )
        })?;
        seconds += start.elapsed().as_secs_f64();
        bar.set_position(step + 1);
        bar.set_message(format!("nll {value:.4}"));
        if (step + 1) % config.eval_every == 0 || step + 1 == total {
            let nll = profile::scope("evaluation", || {
                Ok::<_, TrainError>(mean_negative(&log_prob(&dist, &data.test, dtype, device)?))
            })?;
            curve.push((step + 1, nll));
            bar.println(format!("step {}: test nll {nll:.4}", step + 1));
        }
    }
    bar.finish_and_clear();
    if let Some(session) = session {
        write_profile(out, &session.finish())?;
    }
    let test_nll = curve.last().map_or(initial, |c| c.1);
    let true_test_nll = data.toy.filter(|t| t.has_density()).map(|toy| {
        let values: Vec<f64> = (0..data.test.len())
            .map(|i| toy.log_density(data.test.row(i)).unwrap_or(f64::NAN))
            .collect();
        mean_negative(&values)
    });

    let figure = out.join(FIGURE);
    let dataset_name = match &data.train {
        Training::Fresh(..) => config.dataset.clone(),
        Training::Fixed(_) => Path::new(&config.dataset)
            .file_name()
            .map_or(config.dataset.clone(), |n| n.to_string_lossy().into_owned()),
    };
    let heading = format!(
        "{} on {}: test nll {test_nll:.3}{}",
        config.flow.name(),
        dataset_name,
        true_test_nll.map_or(String::new(), |t| format!(" (true {t:.3})"))
    );
    draw_density(config, &dist, &data, &figure, &heading)?;
    let mut notes = Vec::new();
    notes.extend(limitation(config.flow, dim));
    if dim > 2 {
        notes.push(format!(
            "{dim} features: the figure shows the first two, without the density panel"
        ));
    }
    let train_points = match &data.train {
        Training::Fixed(p) => Some(p.len()),
        Training::Fresh(..) => None,
    };
    Ok((
        ToyMetrics {
            dataset: config.dataset.clone(),
            flow: config.flow.name().into(),
            objective: config.objective,
            dim,
            dtype: format!("{dtype:?}").to_lowercase(),
            device: device.to_string(),
            steps: total,
            seconds,
            sec_per_step: seconds / total as f64,
            total_seconds: 0.0,
            parameters,
            train_points,
            test_points: data.test.len(),
            initial_test_nll: Some(initial),
            test_nll: Some(test_nll),
            true_test_nll,
            kl_estimate: true_test_nll.map(|t| test_nll - t),
            initial_loss: None,
            reverse_kl_loss: None,
            log_z: None,
            curve,
            notes,
            config: config.clone(),
        },
        figure,
    ))
}

/// The figure of a density run: four panels for 2-D (or more) data, two for 1-D.
fn draw_density(
    config: &ToyConfig,
    dist: &FlowDistribution,
    data: &TrainingData,
    path: &Path,
    heading: &str,
) -> Result<()> {
    let (dtype, device) = (config.dtype.dtype(), config.device);
    let dim = data.test.dim();
    let shown = data.test.take(config.samples);
    let z = latent(dist.flow.as_ref(), &shown, dtype, device)?;
    dist.flow.set_training(false);
    let samples = no_grad(|| {
        dist.sample(
            config.samples,
            1.0,
            &mut generator(config.seed, SAMPLE_SALT),
        )
    });
    dist.flow.set_training(true);
    let samples = Points::from_tensor(&samples?)?;
    if dim == 1 {
        let test = data.test.values();
        let (lo, hi) = test
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        let pad = (hi - lo).max(1e-6) * 0.1;
        let (lo, hi) = (lo - pad, hi + pad);
        let xs: Vec<f64> = (0..=400)
            .map(|k| lo + (hi - lo) * k as f64 / 400.0)
            .collect();
        let grid = Points::new(xs.clone(), 1)?;
        let learned: Vec<(f64, f64)> = xs
            .iter()
            .zip(log_prob(dist, &grid, dtype, device)?)
            .map(|(&x, l)| (x, l.exp()))
            .collect();
        let exact: Option<Vec<(f64, f64)>> = data.toy.filter(|t| t.has_density()).map(|toy| {
            xs.iter()
                .map(|&x| (x, toy.log_density(&[x]).unwrap_or(f64::NAN).exp()))
                .collect()
        });
        return figure_1d(
            path,
            heading,
            test,
            z.values(),
            &learned,
            exact.as_deref(),
            (lo, hi),
        );
    }
    let project = |p: &Points| -> Result<Points> {
        let values: Vec<f64> = (0..p.len()).flat_map(|i| p.row(i)[..2].to_vec()).collect();
        Points::new(values, 2)
    };
    let (lo, hi) = plot_box(&shown);
    let density = if dim == 2 {
        let centres = Points::new(Grid::centres(config.grid, lo, hi), 2)?;
        let values = log_prob(dist, &centres, dtype, device)?
            .into_iter()
            .map(f64::exp)
            .collect();
        Grid {
            cells: config.grid,
            lo,
            hi,
            values,
        }
    } else {
        Grid {
            cells: 1,
            lo,
            hi,
            values: vec![0.0],
        }
    };
    figure_2d(
        path,
        heading,
        &project(&shown)?,
        &project(&z)?,
        &project(&samples)?,
        &density,
    )
}

/// `E_q[log q(z) + weight U(z)]` over `n` samples of the flow `g` from `z0 ~ N(0, I)`,
/// in the graph (the loss of one step) or for evaluation.
fn reverse_kl(
    flow: &dyn Flow,
    base: &StandardNormal,
    target: Target,
    n: usize,
    weight: f64,
    gen: &mut Generator,
) -> Result<Tensor> {
    let z0 = base.sample(n, 1.0, gen)?;
    let (zk, logdet) = flow.forward(&z0)?;
    let log_q = base.log_prob(&z0)?.sub(&logdet)?;
    let u = energy_tensor(target, &zk)?;
    Ok(log_q.add(&u.mul_scalar(weight)?)?.mean_all()?)
}

/// The mean of `E_q[log q + U]` over `n` samples, in batches, without a graph.
fn reverse_kl_estimate(
    flow: &dyn Flow,
    base: &StandardNormal,
    target: Target,
    n: usize,
    gen: &mut Generator,
) -> Result<f64> {
    flow.set_training(false);
    let mut total = 0.0;
    for start in (0..n).step_by(EVAL_BATCH) {
        let m = EVAL_BATCH.min(n - start);
        let part = no_grad(|| reverse_kl(flow, base, target, m, 1.0, gen))?.to_scalar()?;
        total += part * m as f64;
    }
    flow.set_training(true);
    Ok(total / n as f64)
}

/// Reverse KL to `exp(-U)`: the flow's forward maps `z0 ~ N(0, I)` to
/// `z_K`, `log q(z_K) = log N(z0) - log |det|`, and the loss is
/// `E[log q(z_K) + beta_t U(z_K)]` with `beta_t` rising linearly from 0.01
/// to 1 over the annealing steps (Rezende and Mohamed's recipe).
fn fit_energy(
    config: &ToyConfig,
    target: Target,
    out: &Path,
    progress: bool,
) -> Result<(ToyMetrics, PathBuf)> {
    let (dtype, device) = (config.dtype.dtype(), config.device);
    let flow = build_flow(
        config,
        2,
        dtype,
        device,
        &mut generator(config.seed, INIT_SALT),
    )?;
    let parameters = parameter_count(&flow);
    let base = StandardNormal::new(&[2], dtype, device);
    flow.set_training(true);
    // ActNorm (in flows that have it) initialises on base samples
    no_grad(|| {
        let z0 = base.sample(INIT_POINTS, 1.0, &mut generator(config.seed, INIT_SALT))?;
        flow.forward(&z0).map(|_| ())
    })?;
    let n_eval = config.test_size;
    let eval_gen = || generator(config.seed, TEST_SALT);
    let initial = reverse_kl_estimate(&flow, &base, target, n_eval, &mut eval_gen())?;
    let mut curve = vec![(0, initial)];
    let mut optimizer = Optimizer::new(config.optimizer, flow.parameters())?;
    let mut noise = generator(config.seed, DATA_SALT);
    let total = config.total_steps();
    let anneal = config.annealing();
    let bar = progress_bar(total, progress);
    let mut seconds = 0.0;
    for step in 0..total {
        let weight = if anneal == 0 {
            1.0
        } else {
            (0.01 + step as f64 / anneal as f64).min(1.0)
        };
        let start = Instant::now();
        let value = in_pool(|| {
            let loss = reverse_kl(&flow, &base, target, config.batch_size, weight, &mut noise)?;
            update(&mut optimizer, config, &loss, step)
        })?;
        seconds += start.elapsed().as_secs_f64();
        bar.set_position(step + 1);
        bar.set_message(format!("loss {value:.4} beta {weight:.2}"));
        if (step + 1) % config.eval_every == 0 || step + 1 == total {
            let estimate = reverse_kl_estimate(&flow, &base, target, n_eval, &mut eval_gen())?;
            curve.push((step + 1, estimate));
            bar.println(format!("step {}: E[log q + U] {estimate:.4}", step + 1));
        }
    }
    bar.finish_and_clear();
    let loss = curve.last().map_or(initial, |c| c.1);
    let log_z = log_normalizer(target, NORMALIZER_BOX, 1200);

    // the figure: a histogram of many samples beside the target
    flow.set_training(false);
    let mut gen = generator(config.seed, SAMPLE_SALT);
    let mut values = Vec::with_capacity(2 * HISTOGRAM_SAMPLES);
    for start in (0..HISTOGRAM_SAMPLES).step_by(10_000) {
        let m = 10_000.min(HISTOGRAM_SAMPLES - start);
        let z0 = base.sample(m, 1.0, &mut gen)?;
        values.extend(no_grad(|| flow.forward(&z0))?.0.to_vec_f64()?);
    }
    let samples = Points::new(values, 2)?;
    let (lo, hi) = ([-TARGET_BOX; 2], [TARGET_BOX; 2]);
    let cells = config.grid.min(150);
    let fitted = Grid::histogram(&samples, cells, lo, hi);
    let target_values = target_grid(target, TARGET_BOX, cells);
    let figure = out.join(FIGURE);
    let heading = format!(
        "{} x{} on {}: E[log q + U] {loss:.3}, log Z {log_z:.3}",
        config.flow.name(),
        config.layers(),
        target.name(),
    );
    figure_target(
        &figure,
        &heading,
        &Grid {
            cells,
            lo,
            hi,
            values: target_values,
        },
        &fitted,
    )?;
    Ok((
        ToyMetrics {
            dataset: target.name().into(),
            flow: config.flow.name().into(),
            objective: config.objective,
            dim: 2,
            dtype: format!("{dtype:?}").to_lowercase(),
            device: device.to_string(),
            steps: total,
            seconds,
            sec_per_step: seconds / total as f64,
            total_seconds: 0.0,
            parameters,
            train_points: None,
            test_points: n_eval,
            initial_test_nll: None,
            test_nll: None,
            true_test_nll: None,
            kl_estimate: Some(loss + log_z),
            initial_loss: Some(initial),
            reverse_kl_loss: Some(loss),
            log_z: Some(log_z),
            curve,
            notes: Vec::new(),
            config: config.clone(),
        },
        figure,
    ))
}
