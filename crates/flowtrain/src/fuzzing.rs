//! Entry points for fuzzers: each reads untrusted bytes the way a run reads
//! its files and returns a value or an error. None may panic, hang, or
//! allocate more than the memory limit ([`crate::limits`]) lets a run plan.
//!
//! The cargo-fuzz targets in `fuzz/` call them, and so do the proptest
//! suites of `crates/flowtrain/tests/fuzz.rs` (on every CI run), which also
//! count allocations.

use crate::batch::{images_tensor, step_indices};
use crate::config::{DatasetKind, TrainConfig};
use crate::data::{cifar10, mnist, ImageSet};
use crate::error::Result;
use crate::model::{Model, DTYPE};
use crate::optim::Optimizer;
use crate::{checkpoint, limits, sampling};
use flowtensor::{no_grad, Device, Generator, Tensor};
use std::path::Path;

/// Models this small (bytes of a sample's memory estimate) are built and
/// run by the fuzz entries ...
pub const BUILD_BELOW: u64 = 4 << 20;
/// ... when they have at most this many flow steps (so that a case stays
/// in milliseconds; the proptest suites build larger ones).
pub const MAX_BUILT_STEPS: usize = 4;
/// ... and no network wider than this many channels (hidden, intermediate,
/// or a DenseNet's total growth): a case's time grows with the square of
/// the width, and the memory estimate alone lets through 80-channel
/// Sylvester networks on MNIST that take a second per case in release and
/// half a minute under the fuzzer's sanitizers.
pub const MAX_BUILT_WIDTH: usize = 32;

/// An IDX file: raw with 1 or 3 dimensions, and gzipped when `bytes` starts
/// with the gzip magic; what loads is cut into a batch.
pub fn idx(bytes: &[u8]) -> Result<()> {
    let path = Path::new("fuzz-input-idx");
    let gz_path = Path::new("fuzz-input-idx.gz");
    let (mut first_error, mut loaded) = (None, false);
    for ndim in [1, 3] {
        let mut budget = limits::MemoryBudget::new();
        let parsed = if bytes.starts_with(&[0x1f, 0x8b]) {
            let decoder = flate2::read::GzDecoder::new(bytes);
            mnist::parse_idx(decoder, ndim, None, gz_path, &mut budget)
        } else {
            mnist::parse_idx(bytes, ndim, Some(bytes.len() as u64), path, &mut budget)
        };
        match parsed {
            Ok((sizes, data)) => {
                loaded = true;
                let shape = [1, sizes[1 % ndim], sizes[2 % ndim]];
                if ndim == 3 && sizes[0] > 0 && limits::check_image_shape("image", shape).is_ok() {
                    let set = ImageSet::new(data, shape, vec![0; sizes[0]])?;
                    batch(&set, bytes.len() as u64)?;
                }
            }
            Err(e) => first_error = first_error.or(Some(e)),
        }
    }
    match first_error {
        Some(e) if !loaded => Err(e),
        _ => Ok(()),
    }
}

/// A CIFAR-10 batch file; what loads is cut into a batch.
pub fn cifar(bytes: &[u8]) -> Result<()> {
    let set = cifar10::parse_batch(bytes, Path::new("fuzz-input-cifar.bin"))?;
    batch(&set, bytes.len() as u64)
}

/// A training batch of `set` at a step and batch size drawn from `salt`.
fn batch(set: &ImageSet, salt: u64) -> Result<()> {
    let size = 1 + (salt % 7) as usize;
    let indices = step_indices(salt, salt % 1000, size, set.len());
    let flips: Vec<bool> = indices.iter().map(|i| i % 2 == 0).collect();
    images_tensor(set, &indices, 8, Some(&flips), DTYPE, Device::Cpu)?;
    Ok(())
}

/// A checkpoint file: parsed, its configuration, image shape and progress
/// checked as `eval`/`sample`/`--resume` check them, and, when small, its
/// model built and loaded, the optimizer state restored, and the model run
/// forward on two images.
pub fn checkpoint(bytes: &[u8]) -> Result<()> {
    let path = Path::new("fuzz-input-checkpoint.safetensors");
    let ckpt = checkpoint::parse(bytes, path)?;
    let config = crate::train::saved_config(&ckpt, path)?;
    let shape = sampling::saved_image_shape(&ckpt, path)?;
    let progress = crate::train::saved_progress(&ckpt, path)?;
    config.check()?;
    limits::check_model_shape(&config, shape)?;
    if !small(&config, shape) {
        return Ok(());
    }
    // on the CPU whatever device the checkpoint names
    let (_, model) = sampling::model_from_checkpoint(&ckpt, path, Some(Device::Cpu))?;
    let mut optimizer = Optimizer::new(config.optimizer, model.parameters())?;
    optimizer.load_state(progress.optimizer_updates, |name, like| {
        ckpt.tensor_like(path, &format!("optim.{name}"), like)
    })?;
    forward(&model, shape, false)
}

/// A TOML configuration: merged over the default, checked, its model's
/// fit to the dataset's image shape and its memory estimate computed, and,
/// when small, the model built and one training forward and backward run.
pub fn config(bytes: &[u8]) -> Result<()> {
    let text = String::from_utf8_lossy(bytes);
    let config = TrainConfig::default().merge_toml(&text)?;
    config.check()?;
    let shape = match config.dataset {
        DatasetKind::Shapes16 => [1, 16, 16],
        DatasetKind::Mnist => [1, 28, 28],
        DatasetKind::Cifar10 => [3, 32, 32],
    };
    limits::check_model_shape(&config, shape)?;
    limits::total_steps(&config, 60_000)?;
    if !small(&config, shape) {
        return Ok(());
    }
    let model = Model::new(
        &config,
        shape,
        Device::Cpu,
        &mut Generator::new(config.seed),
    )?;
    forward(&model, shape, true)
}

/// Whether the model of `config` is small enough to build in a fuzz case.
fn small(config: &TrainConfig, shape: [usize; 3]) -> bool {
    let widths = [
        config.hidden_channels,
        config.n_intermediate_channels,
        config.densenet_depth.saturating_mul(config.densenet_growth),
    ];
    config.n_levels * config.n_subflows <= MAX_BUILT_STEPS
        && widths.iter().all(|&w| w <= MAX_BUILT_WIDTH)
        && limits::sample_bytes(config, shape, 2) < BUILD_BELOW
}

/// The ELBO of two images (with a backward pass when `train`).
fn forward(model: &Model, [c, h, w]: [usize; 3], train: bool) -> Result<()> {
    let mut gen = Generator::new(1);
    let levels = 1usize << model.n_bits;
    let values: Vec<f32> = (0..2 * c * h * w)
        .map(|i| (i * 37 % levels) as f32)
        .collect();
    let x = Tensor::from_vec(values, &[2, c, h, w], Device::Cpu)?.to_dtype(DTYPE)?;
    model.set_training(train);
    if train {
        let loss = model.elbo(&x, &mut gen)?.mean_all()?;
        if loss.to_scalar()?.is_finite() {
            loss.backward()?;
        }
    } else {
        no_grad(|| model.elbo(&x, &mut gen).map(|_: Tensor| ()))?;
    }
    Ok(())
}
