//! The training loop: batches, the bits/dim objective, clipping, the
//! schedule, evaluation, atomic checkpoints, `--resume`, and the outputs.
//!
//! Everything a run needs is validated before its first step (the
//! configuration's bounds, the data, the model's fit to the images, the
//! memory estimate), a run holds its folder's lock while it writes, and at a
//! step that is due for both, the checkpoint is written before the
//! evaluation, so a failing evaluation or output loses no training.

use crate::batch::{images_tensor, step_indices};
use crate::checkpoint::{self, Checkpoint};
use crate::config::{DatasetKind, TrainConfig};
use crate::data::{cifar10, mnist, shapes, Splits};
use crate::distributed::DataParallel;
use crate::error::{Result, TrainError};
use crate::files::RunLock;
use crate::limits;
use crate::model::{Model, DTYPE};
use crate::optim::{clip_factor, Optimizer, Polyak};
use crate::report::{self, Evaluation, Summary, TrainingCurve};
use crate::sampling;
use crate::spikes::SpikeDetector;
use flowtensor::{no_grad, profile, Device, Generator, GeneratorState, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Salts that separate the generators of one seed.
const INIT_SALT: u64 = 0x1;
const NOISE_SALT: u64 = 0x2;
const EVAL_SALT: u64 = 0x3;
const SAMPLE_SALT: u64 = 0x4;

/// The name of the checkpoint file in a run's folder.
pub const CHECKPOINT: &str = "checkpoint.safetensors";

/// The checkpoint tensor holding the training bpd of every step.
const TRAIN_CURVE: &str = "curve.train_bpd";

/// The temperatures of the sample grids.
pub const TEMPERATURES: [f64; 3] = [0.5, 0.7, 1.0];

/// Loads the dataset of `config`.
pub fn load_data(config: &TrainConfig) -> Result<Splits> {
    let dir = || {
        config
            .data_dir
            .clone()
            .ok_or_else(|| TrainError::Config("this dataset needs data_dir (--data DIR)".into()))
    };
    match config.dataset {
        DatasetKind::Shapes16 => shapes::load(),
        DatasetKind::Mnist => mnist::load(&dir()?),
        DatasetKind::Cifar10 => cifar10::load(&dir()?),
    }
}

/// The configuration saved in a checkpoint's metadata.
pub fn saved_config(ckpt: &Checkpoint, path: &Path) -> Result<TrainConfig> {
    let text = ckpt
        .metadata
        .get("config")
        .ok_or_else(|| TrainError::checkpoint(path, "no configuration in the metadata"))?;
    TrainConfig::default()
        .merge_toml(text)
        .map_err(|e| TrainError::checkpoint(path, e.to_string()))
}

/// The training curve saved in a checkpoint: `(step, bpd)` rows with
/// increasing steps up to `step` (or, from older versions, one bpd per step,
/// or the header's `curves` entry).
fn saved_curve(ckpt: &Checkpoint, path: &Path, step: u64) -> Result<TrainingCurve> {
    let bad =
        |detail: &str| TrainError::checkpoint(path, format!("invalid {TRAIN_CURVE}: {detail}"));
    let points: Vec<(u64, f64)> = match ckpt.tensors.get(TRAIN_CURVE) {
        Some(curve) => {
            let values = curve.to_vec_f64()?;
            match curve.shape() {
                [n, 2] if *n <= TrainingCurve::MAX_POINTS => values
                    .chunks_exact(2)
                    .map(|r| (r[0] as u64, r[1]))
                    .collect(),
                [n] if *n <= TrainingCurve::MAX_POINTS => (1..).zip(values).collect(),
                _ => return Err(bad("expected (steps, 2) rows")),
            }
        }
        None => match ckpt.metadata.get("curves") {
            Some(curves) => {
                serde_json::from_str::<(Vec<(u64, f64)>, Vec<(u64, f64)>)>(curves)
                    .map_err(|e| TrainError::checkpoint(path, format!("bad curves: {e}")))?
                    .0
            }
            None => Vec::new(),
        },
    };
    let increasing = points.windows(2).all(|w| w[0].0 < w[1].0);
    if !increasing || points.last().is_some_and(|p| p.0 > step) {
        return Err(bad("its steps must increase up to the checkpoint's step"));
    }
    Ok(TrainingCurve::from_points(points))
}

/// Where a checkpoint's run stands, besides its tensors.
#[derive(Clone, Debug)]
pub struct SavedProgress {
    pub step: u64,
    pub optimizer_updates: u64,
    pub noise: GeneratorState,
    pub train_seconds: f64,
    pub train_curve: TrainingCurve,
}

/// The progress metadata of a checkpoint, each value checked (a damaged or
/// hostile value is an error naming it, not a later overflow).
pub fn saved_progress(ckpt: &Checkpoint, path: &Path) -> Result<SavedProgress> {
    let invalid = |key: &str| TrainError::checkpoint(path, format!("invalid metadata {key:?}"));
    let step: u64 = ckpt.meta(path, "step")?;
    let optimizer_updates: u64 = ckpt.meta(path, "optimizer_updates")?;
    if step > limits::MAX_STEPS {
        return Err(invalid("step"));
    }
    if optimizer_updates > step {
        return Err(invalid("optimizer_updates"));
    }
    let train_seconds: f64 = ckpt.meta(path, "train_seconds")?;
    if !train_seconds.is_finite() || train_seconds < 0.0 {
        return Err(invalid("train_seconds"));
    }
    Ok(SavedProgress {
        step,
        optimizer_updates,
        noise: GeneratorState {
            seed: ckpt.meta(path, "noise_seed")?,
            counter: ckpt.meta(path, "noise_counter")?,
        },
        train_seconds,
        train_curve: saved_curve(ckpt, path, step)?,
    })
}

/// A training run in its folder.
pub struct Trainer {
    pub config: TrainConfig,
    pub run_dir: PathBuf,
    pub model: Model,
    pub data: Splits,
    optimizer: Optimizer,
    polyak: Option<Polyak>,
    /// Steps taken.
    step: u64,
    /// Dequantisation noise and flips of training batches.
    noise: Generator,
    /// The training bpd of every step, for the loss plot.
    train_curve: TrainingCurve,
    /// The loss spikes of the run, found from the training bpd.
    spikes: SpikeDetector,
    /// `(step, test bpd)` of every evaluation.
    test_curve: Vec<(u64, f64)>,
    train_seconds: f64,
    /// The run's total steps (validated when the run is built).
    total: u64,
    last_checkpoint: Option<PathBuf>,
    /// The step the checkpoint on disk holds.
    checkpoint_step: Option<u64>,
    /// `(step, test bpd, importance-weighted test bpd)` of the last evaluation.
    last_evaluation: Option<(u64, f64, Option<f64>)>,
    /// Show a progress bar (off in tests).
    pub progress: bool,
    /// The folder's lock, held by runs that write into it.
    _lock: Option<RunLock>,
    /// The code version a loaded checkpoint records.
    saved_code: Option<String>,
    /// The processes of a data-parallel run (one for a plain run); only
    /// the first writes the run's files.
    parallel: DataParallel,
    /// Seconds of the training steps spent averaging gradients over ranks.
    all_reduce_seconds: f64,
}

/// What [`Trainer::run`] produced.
#[derive(Clone, Debug)]
pub struct RunReport {
    pub summary: Summary,
    /// Every file the run wrote at its end (metrics, plot, samples).
    pub files: Vec<PathBuf>,
}

/// `path` made absolute (and canonical where it exists), so a saved run
/// finds it from any working directory.
fn absolute(path: &Path) -> Result<PathBuf> {
    std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .map_err(|e| TrainError::io(path, e))
}

/// The evaluations of `metrics.jsonl` up to `step`; with `rewrite`, the
/// file is rewritten without the lines past it (those of a killed run's
/// lost steps) or damaged ones.
fn evaluations_until(path: &Path, step: u64, rewrite: bool) -> Result<Vec<Evaluation>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(TrainError::io(path, e)),
    };
    let kept: Vec<Evaluation> = text
        .lines()
        .filter_map(|line| serde_json::from_str::<Evaluation>(line).ok())
        .filter(|e| e.step <= step)
        .collect();
    let mut rewritten = String::new();
    for e in &kept {
        rewritten += &serde_json::to_string(e).map_err(|e| TrainError::Config(e.to_string()))?;
        rewritten.push('\n');
    }
    if rewrite && rewritten != text {
        crate::files::write_atomic(path, rewritten.as_bytes())?;
    }
    Ok(kept)
}

/// Fails at once, naming the device and the reason, when `device` cannot be
/// used on this machine (no CUDA driver, no such GPU, a build without CUDA).
fn probe_device(device: Device) -> Result<()> {
    if let Device::Cuda(n) = device {
        flowtensor::cuda::probe(n)?;
    }
    Ok(())
}

impl Trainer {
    /// A fresh run of `config` in `run_dir` (created, locked; it must not
    /// hold a checkpoint). A relative `data_dir` is made absolute.
    pub fn new(config: TrainConfig, run_dir: &Path) -> Result<Self> {
        Self::new_in(config, run_dir, DataParallel::single())
    }

    /// [`Trainer::new`] as one rank of a data-parallel run: every rank
    /// builds the same run, and only the first creates and writes files.
    pub fn new_in(mut config: TrainConfig, run_dir: &Path, parallel: DataParallel) -> Result<Self> {
        let exists = || {
            run_dir.join(CHECKPOINT).exists().then(|| {
                TrainError::Config(format!(
                    "{} already holds a run; use --resume to continue it or choose another --out",
                    run_dir.display()
                ))
            })
        };
        // nothing is created for a run that cannot start
        config.check()?;
        probe_device(config.device)?;
        if let Some(e) = exists() {
            return Err(e);
        }
        let lock = parallel
            .is_writer()
            .then(|| RunLock::acquire(run_dir))
            .transpose()?;
        if let Some(e) = exists() {
            return Err(e);
        }
        if let Some(dir) = &config.data_dir {
            config.data_dir = Some(absolute(dir)?);
        }
        let mut trainer = Self::build(config, run_dir, parallel)?;
        if lock.is_none() {
            return Ok(trainer);
        }
        trainer._lock = lock;
        crate::files::write_atomic(
            &run_dir.join("config.toml"),
            trainer.config.to_toml()?.as_bytes(),
        )?;
        let _ = std::fs::remove_file(run_dir.join("metrics.jsonl"));
        let _ = std::fs::remove_file(run_dir.join(crate::provenance::FILE));
        crate::provenance::record_start(run_dir, &trainer.config, 0)?;
        Ok(trainer)
    }

    /// Continues the run saved in `run_dir` (locked) with its saved
    /// configuration (`steps`, when given, replaces the saved total). If
    /// the run was stopped between its checkpoint and the evaluation due at
    /// the same step, that evaluation is made first.
    pub fn resume(run_dir: &Path, steps: Option<u64>) -> Result<Self> {
        Self::resume_on(run_dir, steps, None)
    }

    /// [`Trainer::resume`], moved to `device` when given.
    pub fn resume_on(run_dir: &Path, steps: Option<u64>, device: Option<Device>) -> Result<Self> {
        Self::resume_in(run_dir, steps, device, DataParallel::single())
    }

    /// [`Trainer::resume_on`] as one rank of a data-parallel run with as
    /// many ranks as the run was saved by (every rank reads the checkpoint;
    /// only the first writes).
    pub fn resume_in(
        run_dir: &Path,
        steps: Option<u64>,
        device: Option<Device>,
        parallel: DataParallel,
    ) -> Result<Self> {
        let path = run_dir.join(CHECKPOINT);
        if !path.is_file() {
            return Err(TrainError::Config(format!(
                "{} holds no checkpoint to resume",
                run_dir.display()
            )));
        }
        let writer = parallel.is_writer();
        let lock = writer.then(|| RunLock::acquire(run_dir)).transpose()?;
        let mut trainer = Self::open(run_dir, steps, device, parallel)?;
        if !writer {
            return Ok(trainer);
        }
        trainer._lock = lock;
        if let Some(warning) = crate::provenance::other_code_warning(
            trainer.saved_code.as_deref(),
            &run_dir.join(CHECKPOINT),
        ) {
            eprintln!("{warning} (continuing)");
        }
        crate::provenance::record_start(run_dir, &trainer.config, trainer.step)?;
        let evaluated = trainer.test_curve.last().map(|&(step, _)| step);
        if trainer.evaluation_due() && evaluated != Some(trainer.step) {
            trainer.record_evaluation()?;
        }
        Ok(trainer)
    }

    /// The run saved in `run_dir` as it stands, for evaluation: the folder is
    /// not locked (a run may still be writing it) and nothing in it changes.
    pub fn for_evaluation(run_dir: &Path) -> Result<Self> {
        Self::for_evaluation_on(run_dir, None)
    }

    /// [`Trainer::for_evaluation`] on `device` when given.
    pub fn for_evaluation_on(run_dir: &Path, device: Option<Device>) -> Result<Self> {
        let trainer = Self::open(run_dir, None, device, DataParallel::reader())?;
        if let Some(warning) = crate::provenance::other_code_warning(
            trainer.saved_code.as_deref(),
            &run_dir.join(CHECKPOINT),
        ) {
            eprintln!("{warning}");
        }
        Ok(trainer)
    }

    /// The run saved in `run_dir`; a writer also drops the lines of
    /// `metrics.jsonl` past the checkpoint.
    fn open(
        run_dir: &Path,
        steps: Option<u64>,
        device: Option<Device>,
        parallel: DataParallel,
    ) -> Result<Self> {
        let path = run_dir.join(CHECKPOINT);
        let ckpt = checkpoint::load(&path)?;
        let mut config = saved_config(&ckpt, &path)?;
        if let Some(steps) = steps {
            config.steps = steps;
            config.epochs = None;
        }
        if let Some(device) = device {
            config.device = device;
        }
        let mut trainer = Self::build(config, run_dir, parallel)?;
        trainer.restore(&ckpt, &path)?;
        trainer.saved_code = ckpt.metadata.get("code").cloned();
        trainer.last_checkpoint = Some(path);
        trainer.checkpoint_step = Some(trainer.step);
        Ok(trainer)
    }

    /// Everything a run of `config` needs, checked before anything large is
    /// allocated: the values' bounds, the data, the model's fit to the
    /// images, the step count and the memory estimate.
    pub fn validate(config: &TrainConfig) -> Result<(Splits, u64, limits::MemoryEstimate)> {
        config.check()?;
        probe_device(config.device)?;
        let data = load_data(config)?;
        limits::check_model_shape(config, data.train.shape)?;
        let total = limits::total_steps(config, data.train.len())?;
        let estimate =
            limits::estimate(config, data.train.shape, data.train.len() + data.test.len());
        limits::check_memory("this run", estimate.peak())?;
        Ok((data, total, estimate))
    }

    /// The run of `config` at step 0: data, model, optimizer and generators.
    fn build(config: TrainConfig, run_dir: &Path, parallel: DataParallel) -> Result<Self> {
        let (data, total, _) = Self::validate(&config)?;
        parallel.shard(config.batch_size)?;
        let mut init = Generator::new(config.seed ^ INIT_SALT << 56);
        let model = Model::new(&config, data.train.shape, config.device, &mut init)?;
        let params = model.parameters();
        let polyak = config.polyak.map(|d| Polyak::new(d, &params)).transpose()?;
        let optimizer = Optimizer::new(config.optimizer, params)?;
        Ok(Trainer {
            noise: Generator::new(config.seed ^ NOISE_SALT << 56),
            config,
            run_dir: run_dir.to_path_buf(),
            model,
            data,
            optimizer,
            polyak,
            step: 0,
            train_curve: TrainingCurve::default(),
            spikes: SpikeDetector::default(),
            test_curve: Vec::new(),
            train_seconds: 0.0,
            total,
            last_checkpoint: None,
            checkpoint_step: None,
            last_evaluation: None,
            progress: true,
            _lock: None,
            saved_code: None,
            parallel,
            all_reduce_seconds: 0.0,
        })
    }

    /// Total steps of the run.
    pub fn total_steps(&self) -> u64 {
        self.total
    }

    /// Steps taken so far.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// Seconds spent in training steps so far.
    pub fn train_seconds(&self) -> f64 {
        self.train_seconds
    }

    /// One training step; returns the batch's bpd.
    fn train_step(&mut self) -> Result<f64> {
        if self.step == 0 {
            self.initialize()?;
        }
        let config = &self.config;
        let n = self.data.train.len();
        // the global batch and its draws; this rank's shard of them
        let indices = step_indices(config.seed, self.step, config.batch_size, n);
        let shard = self.parallel.shard(indices.len())?;
        let flips: Option<Vec<bool>> = config.hflip.then(|| {
            let u = self
                .noise
                .uniform(&[indices.len()], 0.0, 1.0, DTYPE, Device::Cpu);
            u.and_then(|u| u.to_vec_f64())
                .map(|u| u.into_iter().map(|v| v < 0.5).collect())
                .unwrap_or_default()
        });
        let x = profile::scope("data", || {
            images_tensor(
                &self.data.train,
                &indices[shard.clone()],
                config.n_bits,
                flips.as_ref().map(|f| &f[shard.clone()]),
                DTYPE,
                config.device,
            )
        })?;
        self.model.set_training(true);
        let ll = self
            .model
            .elbo_of_rows(&x, &mut self.noise, (shard, indices.len()))?;
        let loss = ll
            .mean_all()?
            .mul_scalar(-1.0 / (self.model.dims() as f64 * std::f64::consts::LN_2))?;
        let mut bpd = loss.to_scalar()?;
        let alone = self.parallel.world_size() == 1;
        if alone && !bpd.is_finite() {
            return Err(self.non_finite(bpd));
        }
        self.optimizer.zero_grad();
        loss.backward()?;
        if !alone {
            // every rank takes part, whatever its loss, and all see the same mean
            let start = Instant::now();
            bpd = profile::scope("all_reduce", || {
                self.parallel
                    .average_gradients(self.optimizer.params(), &[bpd])
            })?[0];
            self.all_reduce_seconds += start.elapsed().as_secs_f64();
            if !bpd.is_finite() {
                return Err(self.non_finite(bpd));
            }
        }
        let norm = profile::scope("optimizer", || self.optimizer.grad_norm())?;
        if !norm.is_finite() {
            return Err(self.non_finite(norm));
        }
        let lr = config.schedule().lr(self.step);
        profile::scope("optimizer", || {
            self.optimizer
                .step(lr, clip_factor(norm, config.max_grad_norm))
        })?;
        if let Some(polyak) = &self.polyak {
            polyak.update(self.optimizer.params())?;
        }
        self.step += 1;
        if self.step.is_multiple_of(self.parallel.check_every()) || self.step == self.total {
            self.parallel
                .check_same(self.optimizer.params(), self.step)?;
        }
        Ok(bpd)
    }

    fn non_finite(&self, value: f64) -> TrainError {
        TrainError::NonFinite {
            step: self.step + 1,
            loss: value,
            checkpoint: self.last_checkpoint.clone(),
        }
    }

    /// ActNorm's data-dependent initialisation: one forward in training
    /// mode on the first `init_batch_size` images of the first epoch,
    /// dequantised with `u = 1/2`.
    fn initialize(&mut self) -> Result<()> {
        let n = self.data.train.len();
        let count = self.config.init_batch_size.min(n);
        let order = crate::batch::epoch_order(self.config.seed, 0, n);
        let x = images_tensor(
            &self.data.train,
            &order[..count],
            self.config.n_bits,
            None,
            DTYPE,
            self.config.device,
        )?;
        let y = self.model.to_continuous(
            &x,
            &Tensor::full(0.5, x.shape(), DTYPE, self.config.device)?,
        )?;
        self.model.set_training(true);
        no_grad(|| self.model.distribution.log_prob(&y).map(|_| ()))?;
        // every rank initialised from the same global batch; rank 0's
        // values make sure of the same start
        let mut state = self.model.parameters();
        state.extend(self.model.buffers());
        self.parallel.broadcast_from_first(&state)?;
        self.parallel.check_same(&state, 0)
    }

    /// Runs until `until` steps (at most the run's total), evaluating and
    /// checkpointing on schedule; on a thread of the CPU kernels' pool (see
    /// [`flowtensor::in_pool`]).
    pub fn train_until(&mut self, until: u64) -> Result<()> {
        flowtensor::in_pool(|| self.train_in_pool(until))
    }

    fn train_in_pool(&mut self, until: u64) -> Result<()> {
        let total = self.total;
        let until = until.min(total);
        let bar = crate::report::progress_bar(total, self.progress);
        bar.set_position(self.step);
        let images_per_step = self.config.batch_size as f64;
        let session = flowtensor::profile::if_requested();
        while self.step < until {
            let start = Instant::now();
            let bpd = flowtensor::in_pool(|| self.train_step())?;
            let seconds = start.elapsed().as_secs_f64();
            self.train_seconds += seconds;
            self.train_curve.push(self.step, bpd);
            if let Some(spike) = self.spikes.observe(self.step, bpd) {
                bar.println(format!(
                    "step {}: loss spike, training bpd {:.3} against {:.3} just before",
                    spike.step, spike.peak_bpd, spike.baseline_bpd
                ));
            }
            bar.set_position(self.step);
            bar.set_message(format!(
                "loss {:.4} bpd {:.4} {:.0} img/s",
                bpd * self.model.dims() as f64 * std::f64::consts::LN_2,
                bpd,
                images_per_step / seconds
            ));
            if self.step.is_multiple_of(self.config.checkpoint_every) || self.step == total {
                self.save_checkpoint()?;
            }
            if self.evaluation_due() {
                let line = profile::scope("evaluation", || self.record_evaluation())?;
                bar.println(line);
            }
        }
        bar.finish_and_clear();
        if let Some(session) = session.filter(|_| self.parallel.is_writer()) {
            report::write_profile(&self.run_dir, &session.finish())?;
        }
        Ok(())
    }

    /// Whether the current step is due for an evaluation.
    fn evaluation_due(&self) -> bool {
        self.step > 0
            && (self.step.is_multiple_of(self.config.eval_every) || self.step == self.total)
    }

    /// Evaluates, appends the line of `metrics.jsonl` and returns a summary
    /// line. The training bpd is the mean since the previous evaluation.
    fn record_evaluation(&mut self) -> Result<String> {
        let (test_bpd, test_bpd_iw) = self.evaluate()?;
        let previous = self.test_curve.last().map_or(0, |&(step, _)| step);
        let train_bpd = self.train_curve.mean_after(previous);
        self.test_curve.push((self.step, test_bpd));
        self.last_evaluation = Some((self.step, test_bpd, test_bpd_iw));
        if !self.parallel.is_writer() {
            return Ok(String::new());
        }
        let evaluation = Evaluation {
            step: self.step,
            epoch: self.step as f64 * self.config.batch_size as f64 / self.data.train.len() as f64,
            train_bpd,
            test_bpd,
            test_bpd_iw,
            lr: self.config.schedule().lr(self.step - 1),
            train_seconds: self.train_seconds,
            loss_spikes: self.spikes.spikes().len() as u64,
        };
        report::append_jsonl(&self.run_dir.join("metrics.jsonl"), &evaluation)?;
        Ok(format!(
            "step {}: train bpd {train_bpd:.4}, test bpd {test_bpd:.4}{}",
            self.step,
            test_bpd_iw
                .map(|b| format!(" (importance-weighted {b:.4})"))
                .unwrap_or_default()
        ))
    }

    /// Test bpd over the test split (or `eval_limit` images) with one
    /// dequantisation draw from a fixed generator, in evaluation mode with
    /// the Polyak averages when enabled; with variational dequantisation
    /// also the importance-weighted bpd.
    pub fn evaluate(&self) -> Result<(f64, Option<f64>)> {
        flowtensor::in_pool(|| self.evaluate_in_pool())
    }

    fn evaluate_in_pool(&self) -> Result<(f64, Option<f64>)> {
        let test = &self.data.test;
        let count = self
            .config
            .eval_limit
            .map_or(test.len(), |l| l.min(test.len()));
        if count == 0 {
            return Err(TrainError::Config("the test split is empty".into()));
        }
        let params = self.optimizer.params();
        if let Some(p) = &self.polyak {
            p.swap(params)?;
        }
        self.model.set_training(false);
        let (rank, ranks) = (self.parallel.rank(), self.parallel.world_size());
        let result = (|| {
            let (mut elbo, mut iw) = (0.0, 0.0);
            let indices: Vec<usize> = (0..count).collect();
            // chunk `i` on rank `i mod P`, with its own noise: the same
            // draws for any number of ranks
            let chunks = indices.chunks(self.config.eval_batch_size).enumerate();
            for (i, chunk) in chunks.filter(|(i, _)| i % ranks == rank) {
                let mut gen = Generator::new(
                    self.config.seed
                        ^ EVAL_SALT << 56
                        ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
                );
                let x = images_tensor(
                    test,
                    chunk,
                    self.config.n_bits,
                    None,
                    DTYPE,
                    self.config.device,
                )?;
                elbo += no_grad(|| self.model.elbo(&x, &mut gen))?
                    .to_dtype(flowtensor::DType::F64)?
                    .sum_all()?
                    .to_scalar()?;
                if self.model.dequantizer.is_some() {
                    iw += self
                        .model
                        .iw_bound(&x, self.config.iw_samples, &mut gen)?
                        .sum_all()?
                        .to_scalar()?;
                }
            }
            let sums = self.parallel.sum(&[elbo, iw])?;
            let (elbo, iw, n) = (sums[0], sums[1], count as f64);
            let iw_bpd = self
                .model
                .dequantizer
                .is_some()
                .then(|| self.model.bpd(iw / n));
            let bpd = self.model.bpd(elbo / n);
            if !bpd.is_finite() || iw_bpd.is_some_and(|b| !b.is_finite()) {
                return Err(TrainError::Config(format!(
                    "evaluation at step {} gave a test bpd of {bpd}: the model is numerically broken",
                    self.step
                )));
            }
            Ok((bpd, iw_bpd))
        })();
        self.model.set_training(true);
        if let Some(p) = &self.polyak {
            p.swap(params)?;
        }
        result
    }

    /// Everything needed to continue exactly: parameters, buffers,
    /// optimizer state, Polyak averages, the step, the noise generator's
    /// state, the curves and the configuration.
    /// Only the first rank of a data-parallel run writes it (all hold the
    /// same state), with the number of ranks.
    pub fn save_checkpoint(&mut self) -> Result<()> {
        let path = self.run_dir.join(CHECKPOINT);
        if !self.parallel.is_writer() {
            self.last_checkpoint = Some(path);
            self.checkpoint_step = Some(self.step);
            return Ok(());
        }
        let mut tensors = Vec::new();
        tensors.extend(checkpoint::model_tensors(&self.model));
        let (state, updates) = self.optimizer.state();
        tensors.extend(flowlayers::prefixed("optim", state));
        if let Some(p) = &self.polyak {
            tensors.extend(flowlayers::prefixed(
                "polyak",
                p.named(self.optimizer.params()),
            ));
        }
        // the training curve as (step, bpd) rows, in the data (not the header)
        let points = self.train_curve.points();
        let rows: Vec<f64> = points.iter().flat_map(|&(s, b)| [s as f64, b]).collect();
        tensors.push((
            TRAIN_CURVE.to_string(),
            Tensor::from_vec(rows, &[points.len(), 2], Device::Cpu)?,
        ));
        let GeneratorState { seed, counter } = self.noise.state();
        let metadata = HashMap::from([
            ("format".to_string(), "flowtrain-1".to_string()),
            ("step".to_string(), self.step.to_string()),
            ("ranks".to_string(), self.parallel.world_size().to_string()),
            ("optimizer_updates".to_string(), updates.to_string()),
            ("noise_seed".to_string(), seed.to_string()),
            ("noise_counter".to_string(), counter.to_string()),
            (
                "train_seconds".to_string(),
                format!("{:e}", self.train_seconds),
            ),
            ("config".to_string(), self.config.to_toml()?),
            (
                "code".to_string(),
                crate::provenance::CodeVersion::current().id(),
            ),
            (
                "image_shape".to_string(),
                self.model.shape.map(|d| d.to_string()).join(","),
            ),
        ]);
        checkpoint::save(&path, &tensors, metadata)?;
        self.last_checkpoint = Some(path);
        self.checkpoint_step = Some(self.step);
        Ok(())
    }

    fn restore(&mut self, ckpt: &Checkpoint, path: &Path) -> Result<()> {
        let writer = self.parallel.is_writer();
        // runs from before data parallelism recorded no ranks: one
        let saved_ranks = match ckpt.metadata.get("ranks") {
            Some(_) => ckpt.meta::<usize>(path, "ranks")?,
            None => 1,
        };
        let ranks = self.parallel.world_size();
        if self.parallel.trains() && saved_ranks != ranks {
            return Err(TrainError::Checkpoint {
                path: path.to_path_buf(),
                detail: format!(
                    "the run was saved by {saved_ranks} rank(s) and this job has {ranks}: resume it with the same number (e.g. `mpirun -n {saved_ranks} ... --resume`), so that every step takes the same shards"
                ),
            });
        }
        let progress = saved_progress(ckpt, path)?;
        ckpt.load_model(&self.model, path)?;
        self.optimizer
            .load_state(progress.optimizer_updates, |name, like| {
                ckpt.tensor_like(path, &format!("optim.{name}"), like)
            })?;
        if let Some(p) = &self.polyak {
            for (name, avg) in p.named(self.optimizer.params()) {
                avg.set_data(&ckpt.tensor_like(path, &format!("polyak.{name}"), &avg)?)?;
            }
        }
        self.step = progress.step;
        self.noise = Generator::from_state(progress.noise);
        self.train_seconds = progress.train_seconds;
        self.spikes = SpikeDetector::from_curve(progress.train_curve.points());
        self.train_curve = progress.train_curve;
        // the evaluations are metrics.jsonl's lines up to the checkpoint
        let evaluations =
            evaluations_until(&self.run_dir.join("metrics.jsonl"), self.step, writer)?;
        self.test_curve = evaluations.iter().map(|e| (e.step, e.test_bpd)).collect();
        self.last_evaluation = evaluations
            .last()
            .filter(|e| e.step == self.step)
            .map(|e| (e.step, e.test_bpd, e.test_bpd_iw));
        Ok(())
    }

    /// Runs to the end and writes the outputs: the final checkpoint (if the
    /// last step has none yet), `loss.svg` (when there is a curve to draw),
    /// unless `samples` is 0 `samples_t{T}.png` and `interpolation.png`, and
    /// last `metrics.json`, which marks the run finished; the report lists
    /// the files written.
    pub fn run(&mut self) -> Result<RunReport> {
        self.train_until(self.total)?;
        if self.checkpoint_step != Some(self.step) {
            self.save_checkpoint()?;
        }
        let (test_bpd, test_bpd_iw) = match self.last_evaluation {
            Some((step, bpd, iw)) if step == self.step => (bpd, iw),
            _ => self.evaluate()?,
        };
        let summary = Summary {
            test_bpd,
            test_bpd_iw,
            train_seconds: self.train_seconds,
            sec_per_step: self.train_seconds / self.step.max(1) as f64,
            ranks: self.parallel.world_size(),
            all_reduce_seconds: self.all_reduce_seconds,
            steps: self.step,
            parameters: self
                .optimizer
                .params()
                .iter()
                .map(|(_, p)| p.elem_count())
                .sum(),
            threads: rayon::current_num_threads(),
            loss_spikes: self.spikes.spikes().to_vec(),
        };
        if !self.parallel.is_writer() {
            return Ok(RunReport {
                summary,
                files: Vec::new(),
            });
        }
        let mut files = vec![self.run_dir.join(CHECKPOINT)];
        let plot = self.run_dir.join("loss.svg");
        if report::plot_losses(&plot, self.train_curve.points(), &self.test_curve)? {
            files.push(plot);
        }
        if self.config.samples > 0 {
            let params = self.optimizer.params();
            if let Some(p) = &self.polyak {
                p.swap(params)?;
            }
            let written = sampling::write_outputs(
                &self.model,
                &self.data.test,
                &self.run_dir,
                self.config.samples,
                self.config.seed ^ SAMPLE_SALT << 56,
            );
            if let Some(p) = &self.polyak {
                p.swap(params)?;
            }
            files.extend(written?);
        }
        // last: its presence marks a finished run (see `sweep`)
        let metrics = self.run_dir.join("metrics.json");
        report::write_json(&metrics, &summary)?;
        files.push(metrics);
        Ok(RunReport { summary, files })
    }
}
