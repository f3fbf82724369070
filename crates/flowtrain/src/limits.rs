//! What a run may ask for: the bounds of every configuration value, the
//! image shapes a model accepts, and an estimate of a run's memory checked
//! against the machine's memory before anything large is allocated.
//!
//! The memory limit is, in order: [`set_memory_limit`] (`--memory-limit`),
//! the `FLOWTRAIN_MEMORY_LIMIT` environment variable (bytes, or with a
//! `K`/`M`/`G`/`T` suffix), or 90% of the memory Linux reports available
//! when the process asks first (`MemAvailable` in `/proc/meminfo`). Where
//! none is known there is no limit.

use crate::config::{CouplingNet, CouplingType, Dequantize, Mixing, ModelType, TrainConfig};
use crate::error::{Result, TrainError};
use crate::optim::OptimizerKind;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The most training steps a run may take (about 300 years at 1 ms a step).
pub const MAX_STEPS: u64 = 10_000_000_000;
/// The most images in one batch (training, initialisation, evaluation) or sample grid.
pub const MAX_BATCH: usize = 65_536;
/// The most channels of a data image.
pub const MAX_IMAGE_CHANNELS: usize = 16;
/// The longest side of a data image.
pub const MAX_IMAGE_SIDE: usize = 2048;
/// The most samples of a grid written by a run or by `sample`.
pub const MAX_SAMPLES: usize = 4096;
/// The highest sampling temperature.
pub const MAX_TEMPERATURE: f64 = 10.0;

/// An inclusive range check of an integer value, with an error naming the
/// key, the value and the range.
pub fn in_range<T: PartialOrd + std::fmt::Display>(
    key: &str,
    value: T,
    lo: T,
    hi: T,
) -> Result<()> {
    if value < lo || value > hi {
        return Err(TrainError::Config(format!(
            "{key} = {value} is out of range: it must be in {lo}..={hi}"
        )));
    }
    Ok(())
}

/// A finite float in `lo..=hi` (or `lo < value` when `open_low`).
pub fn float_in(key: &str, value: f64, lo: f64, hi: f64, open_low: bool) -> Result<()> {
    let low_ok = if open_low { value > lo } else { value >= lo };
    if !value.is_finite() || !low_ok || value > hi {
        let low = if open_low { "(" } else { "[" };
        return Err(TrainError::Config(format!(
            "{key} = {value} is out of range: it must be a finite number in {low}{lo}, {hi}]"
        )));
    }
    Ok(())
}

/// Checks every value of `config` on its own (no data needed): the error
/// names the key, its value and the allowed range.
pub fn check_config(c: &TrainConfig) -> Result<()> {
    in_range("n_bits", c.n_bits, 1, 8)?;
    in_range("n_levels", c.n_levels, 1, 6)?;
    in_range("n_subflows", c.n_subflows, 1, 256)?;
    in_range("hidden_channels", c.hidden_channels, 1, 4096)?;
    in_range("densenet_depth", c.densenet_depth, 0, 32)?;
    in_range("densenet_growth", c.densenet_growth, 1, 1024)?;
    if c.coupling_net == CouplingNet::Glow && c.densenet_depth > 0 {
        return Err(TrainError::Config(format!(
            "coupling_net = glow is Glow's three-layer network, which a DenseNet (densenet_depth = {}) replaces: choose one",
            c.densenet_depth
        )));
    }
    in_range(
        "n_intermediate_channels",
        c.n_intermediate_channels,
        0,
        4096,
    )?;
    in_range("convexp_terms", c.convexp_terms, 1, 100)?;
    in_range("convexp_eval_terms", c.convexp_eval_terms, 1, 100)?;
    in_range("woodbury_rank", c.woodbury_rank, 1, 65_536)?;
    check_optimizer(c.optimizer)?;
    float_in("lr", c.lr, 0.0, 10.0, true)?;
    in_range("warmup_steps", c.warmup_steps, 0, MAX_STEPS)?;
    float_in("lr_decay", c.lr_decay, 0.0, 1.0, true)?;
    if let Some(norm) = c.max_grad_norm {
        // 0 would freeze training, a negative norm would ascend, NaN would switch clipping off
        float_in("max_grad_norm", norm, 0.0, f64::MAX, true)?;
    }
    if let Some(decay) = c.polyak {
        float_in("polyak", decay, 0.0, 0.999_999_999, false)?;
    }
    in_range("batch_size", c.batch_size, 1, MAX_BATCH)?;
    in_range("init_batch_size", c.init_batch_size, 1, MAX_BATCH)?;
    in_range("eval_batch_size", c.eval_batch_size, 1, MAX_BATCH)?;
    in_range("steps", c.steps, 0, MAX_STEPS)?;
    if let Some(epochs) = c.epochs {
        in_range("epochs", epochs, 1, MAX_STEPS)?;
    }
    in_range("eval_every", c.eval_every, 1, MAX_STEPS)?;
    in_range("checkpoint_every", c.checkpoint_every, 1, MAX_STEPS)?;
    if let Some(limit) = c.eval_limit {
        in_range("eval_limit", limit, 1, usize::MAX)?;
    }
    in_range("iw_samples", c.iw_samples, 1, 1024)?;
    in_range("samples", c.samples, 0, MAX_SAMPLES)?;
    if c.dataset != crate::config::DatasetKind::Shapes16 && c.data_dir.is_none() {
        return Err(TrainError::Config(
            "this dataset needs data_dir (--data DIR)".into(),
        ));
    }
    Ok(())
}

fn check_optimizer(kind: OptimizerKind) -> Result<()> {
    match kind {
        OptimizerKind::Adam { beta1, beta2, eps } | OptimizerKind::Adamax { beta1, beta2, eps } => {
            float_in("optimizer.beta1", beta1, 0.0, 0.999_999_999, false)?;
            float_in("optimizer.beta2", beta2, 0.0, 0.999_999_999, false)?;
            float_in("optimizer.eps", eps, 0.0, 1.0, true)
        }
        OptimizerKind::Sgd { momentum } => {
            float_in("optimizer.momentum", momentum, 0.0, 0.999_999_999, false)
        }
    }
}

/// Checks a per-image shape `(C, H, W)` from a data file or a checkpoint.
pub fn check_image_shape(what: &str, [c, h, w]: [usize; 3]) -> Result<()> {
    in_range(&format!("{what}: channels"), c, 1, MAX_IMAGE_CHANNELS)?;
    in_range(&format!("{what}: height"), h, 1, MAX_IMAGE_SIDE)?;
    in_range(&format!("{what}: width"), w, 1, MAX_IMAGE_SIDE)
}

/// The checks that need the image shape: the levels fit it, and the
/// Woodbury rank fits the smallest level.
pub fn check_model_shape(c: &TrainConfig, shape: [usize; 3]) -> Result<()> {
    check_image_shape("image", shape)?;
    let [_, h, w] = shape;
    let shrink = 1usize << c.n_levels;
    if !h.is_multiple_of(shrink) || !w.is_multiple_of(shrink) {
        return Err(TrainError::Config(format!(
            "n_levels = {} needs a height and width divisible by 2^{0} = {shrink}; the images are {h} x {w}",
            c.n_levels
        )));
    }
    if c.mixing == Mixing::Woodbury {
        // the spatial transform of the last (smallest) level
        let positions = (h / shrink) * (w / shrink);
        in_range("woodbury_rank", c.woodbury_rank, 1, positions).map_err(|e| {
            TrainError::Config(format!(
                "{e} (H x W of the last level's {} x {} images)",
                h / shrink,
                w / shrink
            ))
        })?;
    }
    Ok(())
}

/// The steps of a run: `steps`, or `epochs` whole passes over `train_len`
/// images at `batch_size` (the last incomplete batch of an epoch dropped),
/// overflow-checked and at most [`MAX_STEPS`].
pub fn total_steps(c: &TrainConfig, train_len: usize) -> Result<u64> {
    let Some(epochs) = c.epochs else {
        return Ok(c.steps);
    };
    let per_epoch = (train_len / c.batch_size).max(1) as u64;
    epochs
        .checked_mul(per_epoch)
        .filter(|&s| s <= MAX_STEPS)
        .ok_or_else(|| {
            TrainError::Config(format!(
                "epochs = {epochs} at {per_epoch} steps per epoch is more than {MAX_STEPS} steps"
            ))
        })
}

// ---------------------------------------------------------------------------
// Memory
// ---------------------------------------------------------------------------

/// Explicit limit in bytes (0: none set).
static EXPLICIT_LIMIT: AtomicU64 = AtomicU64::new(0);

/// Sets the memory limit of this process (`None`: back to the default).
pub fn set_memory_limit(bytes: Option<u64>) {
    EXPLICIT_LIMIT.store(bytes.unwrap_or(0), Ordering::Relaxed);
}

/// The memory limit in bytes, if any (see the module docs).
pub fn memory_limit() -> Option<u64> {
    match EXPLICIT_LIMIT.load(Ordering::Relaxed) {
        0 => default_limit(),
        bytes => Some(bytes),
    }
}

fn default_limit() -> Option<u64> {
    static DEFAULT: OnceLock<Option<u64>> = OnceLock::new();
    *DEFAULT.get_or_init(|| {
        if let Ok(text) = std::env::var("FLOWTRAIN_MEMORY_LIMIT") {
            return parse_bytes(&text).ok();
        }
        available_memory().map(|b| b / 10 * 9)
    })
}

/// `MemAvailable` of `/proc/meminfo`, in bytes.
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Parses `123`, `512M`, `8G`, `1.5GiB`, `2T` (powers of 1024) into bytes.
pub fn parse_bytes(text: &str) -> std::result::Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|ch: char| !(ch.is_ascii_digit() || ch == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size (e.g. 8G, 512M, 1000000)"))?;
    let scale = match unit
        .trim()
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 1.0,
        "K" => 1024.0,
        "M" => 1024.0 * 1024.0,
        "G" => 1024.0 * 1024.0 * 1024.0,
        "T" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "unknown size unit {other:?} in {text:?} (K, M, G or T)"
            ))
        }
    };
    let bytes = value * scale;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(format!("{text:?} is not a positive size"));
    }
    Ok(bytes as u64)
}

/// `bytes` for people: `1.50 GiB`.
pub fn human(bytes: u64) -> String {
    let b = bytes as f64;
    let units = [
        (1u64 << 40, "TiB"),
        (1 << 30, "GiB"),
        (1 << 20, "MiB"),
        (1 << 10, "KiB"),
    ];
    for (size, name) in units {
        if bytes >= size {
            return format!("{:.2} {name}", b / size as f64);
        }
    }
    format!("{bytes} B")
}

/// What is left of the memory limit while a data set loads: each file
/// reserves what it will hold before it is read, so several files cannot
/// together pass a limit that each one alone fits.
#[derive(Clone, Copy, Debug)]
pub struct MemoryBudget {
    remaining: Option<u64>,
}

impl Default for MemoryBudget {
    fn default() -> Self {
        MemoryBudget {
            remaining: memory_limit(),
        }
    }
}

impl MemoryBudget {
    /// The whole memory limit.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes `bytes` for `what` from the budget, or an error naming both.
    pub fn reserve(&mut self, what: &str, bytes: u64) -> Result<()> {
        if let Some(left) = self.remaining {
            if bytes > left {
                return Err(TrainError::Config(format!(
                    "{what} needs about {} but only {} of the memory limit is left (--memory-limit)",
                    human(bytes),
                    human(left)
                )));
            }
            self.remaining = Some(left - bytes);
        }
        Ok(())
    }
}

/// An error unless `bytes` fit in the memory limit.
pub fn check_memory(what: &str, bytes: u64) -> Result<()> {
    match memory_limit() {
        Some(limit) if bytes > limit => Err(TrainError::Config(format!(
            "{what} needs about {} but the memory limit is {} (90% of the available memory unless --memory-limit or FLOWTRAIN_MEMORY_LIMIT says otherwise)",
            human(bytes),
            human(limit)
        ))),
        _ => Ok(()),
    }
}

/// An estimate of what a run holds in memory, from its configuration and
/// the image shape alone (nothing is allocated to make it). Sizes are in
/// bytes of f32 values; tests compare it with the parameter count of the
/// built model and the measured peak of a step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryEstimate {
    /// Trainable values.
    pub parameters: u64,
    /// Non-trainable values (masks, permutations, power-iteration vectors).
    pub buffer_values: u64,
    /// Parameters, their gradients, the optimizer's slots, Polyak averages and buffers.
    pub state_bytes: u64,
    /// The tensors one training step keeps for its backward pass, and its gradients.
    pub step_bytes: u64,
    /// One evaluation batch (no gradients).
    pub eval_bytes: u64,
    /// One grid of `samples` samples (no gradients).
    pub sample_bytes: u64,
    /// The training and test images, as stored.
    pub data_bytes: u64,
    /// Writing a checkpoint: the serialised file, its read-back copy and
    /// the tensors parsed from it to verify it.
    pub checkpoint_bytes: u64,
}

impl MemoryEstimate {
    /// The most the run holds at once: state and data, plus the largest of a
    /// step, an evaluation, a sample grid and a checkpoint write.
    pub fn peak(&self) -> u64 {
        let transient = self
            .step_bytes
            .max(self.eval_bytes)
            .max(self.sample_bytes)
            .max(self.checkpoint_bytes);
        self.state_bytes
            .saturating_add(self.data_bytes)
            .saturating_add(transient)
    }
}

/// Parameter and buffer values, and per-image activation values of one
/// forward with gradients, of a model piece.
#[derive(Clone, Copy, Debug, Default)]
struct Cost {
    params: u64,
    buffers: u64,
    /// Values one image keeps for the backward pass.
    activations: u64,
}

impl std::ops::Add for Cost {
    type Output = Cost;
    fn add(self, o: Cost) -> Cost {
        Cost {
            params: self.params.saturating_add(o.params),
            buffers: self.buffers.saturating_add(o.buffers),
            activations: self.activations.saturating_add(o.activations),
        }
    }
}

fn m(a: u64, b: u64) -> u64 {
    a.saturating_mul(b)
}

/// A convolution `in -> out` with a `k x k` kernel and bias on `hw` positions.
fn conv(i: u64, o: u64, k: u64, hw: u64) -> Cost {
    Cost {
        params: m(m(i, o), k * k) + o,
        buffers: 0,
        activations: m(o, hw),
    }
}

/// The LU 1x1 convolution over `c` channels of `e = c hw` values.
fn conv1x1_lu(c: u64, e: u64) -> Cost {
    Cost {
        params: 2 * m(c, c) + c,
        buffers: 4 * m(c, c) + c,
        activations: 2 * e,
    }
}

fn mixing(config: &TrainConfig, c: u64, (h, w): (u64, u64)) -> Cost {
    let hw = m(h, w);
    let e = m(c, hw);
    let rank = config.woodbury_rank as u64;
    let lu = conv1x1_lu(c, e);
    let with_lu = |extra: Cost| lu + extra;
    match config.mixing {
        Mixing::Reverse | Mixing::Shuffle => Cost {
            params: 0,
            buffers: c,
            activations: e,
        },
        Mixing::OneByOne => lu,
        Mixing::OneByOnePlain => Cost {
            params: m(c, c),
            buffers: 0,
            activations: 2 * e,
        },
        Mixing::OneByOneQr => Cost {
            params: 2 * m(c, c) + c,
            buffers: 2 * m(c, c),
            activations: 2 * e,
        },
        Mixing::ConvExp => with_lu(Cost {
            params: 9 * m(c, c) + c,
            buffers: e + 3,
            activations: 4 * e,
        }),
        Mixing::Emerging => with_lu(Cost {
            params: 18 * m(c, c),
            buffers: 18 * m(c, c),
            activations: 3 * e,
        }),
        Mixing::Periodic => with_lu(Cost {
            params: 9 * m(c, c),
            buffers: 0,
            // the half spectrum of the input and of the output, complex
            activations: 6 * e,
        }),
        Mixing::Woodbury => with_lu(Cost {
            params: 2 * m(rank, hw),
            buffers: 0,
            activations: 4 * e + m(rank, c),
        }),
        Mixing::WoodburyMe => {
            let params = [c, h, w].iter().map(|&a| 2 * m(rank.min(a), a)).sum();
            Cost {
                params,
                buffers: 0,
                activations: 9 * e,
            }
        }
    }
}

/// The conditioner of a coupling from `c1` to `out` channels.
fn conditioner(config: &TrainConfig, c1: u64, out: u64, hw: u64) -> Cost {
    let hidden = config.hidden_channels as u64;
    match (config.densenet_depth, config.coupling_net) {
        (0, CouplingNet::Biased) => {
            let mut net =
                conv(c1, hidden, 3, hw) + conv(hidden, hidden, 1, hw) + conv(hidden, out, 3, hw);
            net.params += out; // the output's log-scales (the ReLUs are fused into the convolutions)
            return net;
        }
        (0, CouplingNet::Glow) => {
            // the edge channel in the 3x3 convolutions; the hidden ActNorms
            // folded into their convolutions (with the ReLUs fused)
            let mut net = conv(c1 + 1, hidden, 3, hw)
                + conv(hidden, hidden, 1, hw)
                + conv(hidden + 1, out, 3, hw);
            // the log-scales; each ActNorm has one more vector than the bias counted
            net.params += out + 2 * hidden;
            net.buffers += 2;
            // the input with its edge channel, the output before the edge map is added
            net.activations += m(c1 + 1, hw) + m(out, hw);
            return net;
        }
        _ => {}
    }
    let growth = config.densenet_growth as u64;
    let mut width = c1;
    let mut net = Cost::default();
    for _ in 0..config.densenet_depth {
        let mid = if config.n_intermediate_channels > 0 {
            config.n_intermediate_channels as u64
        } else {
            width
        };
        net = net + conv(width, mid, 1, hw) + conv(mid, growth, 3, hw);
        // the concatenation (the ReLUs are fused into the convolutions)
        net.activations += m(width + growth, hw);
        width += growth;
    }
    let outputs = if config.use_gated_conv { 3 } else { 1 } * out;
    net + conv(width, outputs, 1, hw)
}

/// The generalized Sylvester flow of one step.
fn sylvester(config: &TrainConfig, c: u64, hw: u64) -> Cost {
    let hidden = (config.hidden_channels as u64).max(c);
    let e = m(c, hw);
    let masked = |i: u64, o: u64, k: u64| {
        let mut cost = conv(i, o, k, hw);
        cost.buffers = m(m(i, o), k * k) + m(i, hw) + 1;
        cost
    };
    let mut cost = masked(c, hidden, 3) + masked(hidden, hidden, 1);
    for _ in 0..4 {
        cost = cost + masked(hidden, c, 3);
    }
    cost.params += 2 * c + 9 * m(c, c);
    cost.buffers += e + 1;
    cost.activations += 2 * m(hidden, hw) + 16 * e;
    cost
}

/// The residual block of one step: three spectrally normalised
/// convolutions (`3x3`, `1x1`, `3x3`) with LipSwish between them; the graph
/// holds `g`'s forward and the recorded vector-Jacobian product of the
/// Neumann gradient (about twice the forward).
fn residual(config: &TrainConfig, c: u64, hw: u64) -> Cost {
    let hidden = crate::model::residual_hidden(config) as u64;
    let mut cost = conv(c, hidden, 3, hw) + conv(hidden, hidden, 1, hw) + conv(hidden, c, 3, hw);
    cost.params += 2; // the LipSwish betas
                      // the power-iteration vectors and the estimator's stream
    cost.buffers += m(c, hw) + 2 * m(hidden, hw) + 16;
    // LipSwish's products and sigmoids, twice, then the product's graph
    cost.activations += m(16 * hidden, hw) + 2 * cost.activations + m(6, m(c, hw));
    cost
}

/// The parameters, buffers and per-image activations of the model of
/// `config` on images of `shape`.
fn model_cost(config: &TrainConfig, [c0, h0, w0]: [usize; 3]) -> Cost {
    let (mut c, mut h, mut w) = (c0 as u64, h0 as u64, w0 as u64);
    let mut total = Cost::default();
    for level in 0..config.n_levels {
        (c, h, w) = (4 * c, h / 2, w / 2);
        let (hw, e) = (m(h, w), m(c, m(h, w)));
        let (c1, c2) = (c / 2, c - c / 2);
        let actnorm = Cost {
            params: 2 * c,
            buffers: 1,
            activations: 2 * e,
        };
        let transform = match config.model_type {
            ModelType::CouplingFlow => {
                let outputs = match config.coupling {
                    CouplingType::Affine => 2 * c2,
                    CouplingType::Additive => c2,
                };
                let mut coupling = conditioner(config, c1, outputs, hw);
                // the scale, shift and the coupling's elementwise chain
                coupling.activations += 6 * m(c2, hw) + m(c1, hw);
                coupling
            }
            ModelType::Sylvester => sylvester(config, c, hw),
            ModelType::ResidualFlow => residual(config, c, hw),
        };
        let mixing = match config.model_type {
            ModelType::ResidualFlow => Cost::default(),
            _ => mixing(config, c, (h, w)),
        };
        let step = actnorm + mixing + transform;
        for _ in 0..config.n_subflows {
            total = total + step;
        }
        if level + 1 < config.n_levels {
            if config.use_splitprior {
                let edge = u64::from(config.coupling_net == CouplingNet::Glow);
                let mut prior = conv(c1 + edge, 2 * c2, 3, hw);
                prior.activations += edge * m(c1 + 1, hw);
                prior.params += 2 * c2;
                prior.activations += 4 * m(c2, hw);
                total = total + prior;
            }
            c = c1;
        }
    }
    if config.dequantize == Dequantize::Flow {
        let (c, hw) = (c0 as u64, m(h0 as u64, w0 as u64));
        let hidden = 32;
        let mut dq = conv(c, hidden, 3, hw) + conv(hidden, hidden, 3, hw);
        for _ in 0..4 {
            dq = dq + conv(c + hidden, hidden, 3, hw) + conv(hidden, 2 * c, 3, hw);
            dq.params += 2 * c;
            dq.buffers += hw;
            // the context concatenated and the elementwise chain (the
            // ReLUs are fused into the convolutions)
            dq.activations += m(c + 2 * hidden, hw) + 8 * m(c, hw);
        }
        total = total + dq;
    }
    total
}

/// The memory estimate of a run of `config` on images of `shape` with
/// `images` training and test images in all.
pub fn estimate(config: &TrainConfig, shape: [usize; 3], images: usize) -> MemoryEstimate {
    const F32: u64 = 4;
    let cost = model_cost(config, shape);
    let slots = match config.optimizer {
        OptimizerKind::Sgd { momentum: 0.0 } => 0,
        OptimizerKind::Sgd { .. } => 1,
        _ => 2,
    };
    let copies = 2 + slots + u64::from(config.polyak.is_some());
    let dims = shape.iter().map(|&d| d as u64).product::<u64>();
    // a step keeps the activations, then builds gradients of about the same
    // size, with temporaries on top (calibrated against measured peaks)
    let per_image_step = m(cost.activations, 3).saturating_add(m(dims, 8));
    // without gradients only a few layers' outputs are alive at once
    let per_image_eval = cost.activations / 4 + m(dims, 8);
    let batch = |n: usize| m(n as u64, F32);
    MemoryEstimate {
        parameters: cost.params,
        buffer_values: cost.buffers,
        state_bytes: m(m(cost.params, copies) + cost.buffers, F32),
        step_bytes: m(
            per_image_step,
            batch(config.batch_size.max(config.init_batch_size)),
        ),
        eval_bytes: m(
            per_image_eval,
            batch(config.eval_batch_size.max(1))
                * if config.dequantize == Dequantize::Flow {
                    2
                } else {
                    1
                },
        ),
        sample_bytes: m(per_image_eval, batch(config.samples)),
        data_bytes: m(dims, images as u64),
        // what a checkpoint holds (parameters, optimizer slots, Polyak
        // averages, buffers), three times over
        checkpoint_bytes: m(m(m(cost.params, copies - 1) + cost.buffers, F32), 3),
    }
}

/// The estimate of a sample grid of `n` images from a model of `config`.
pub fn sample_bytes(config: &TrainConfig, shape: [usize; 3], n: usize) -> u64 {
    let cost = model_cost(config, shape);
    let dims = shape.iter().map(|&d| d as u64).product::<u64>();
    let state = m(cost.params + cost.buffers, 4);
    state.saturating_add(m(cost.activations / 4 + m(dims, 8), m(n as u64, 4)))
}
