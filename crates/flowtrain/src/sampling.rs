//! Samples and interpolations from a trained model, and loading a model
//! from a run's checkpoint (`cargo xtask sample|eval`).

use crate::checkpoint::{self, Checkpoint};
use crate::config::TrainConfig;
use crate::data::ImageSet;
use crate::error::{Result, TrainError};
use crate::model::{Model, DTYPE};
use crate::report::write_grid;
use crate::train::{saved_config, CHECKPOINT, TEMPERATURES};
use flowtensor::{no_grad, Generator, Tensor};
use std::path::{Path, PathBuf};

/// The grey of a sample cell whose values were not finite.
const NON_FINITE_GREY: u8 = 128;

/// `n` samples at `temperature` as 8-bit images. A sample whose values are
/// not all finite (the inverse of an undertrained flow can overflow at high
/// temperatures) is drawn uniform grey and a warning says how many there
/// were; if none is finite, it is an error.
pub fn sample_images(
    model: &Model,
    n: usize,
    temperature: f64,
    gen: &mut Generator,
) -> Result<Vec<u8>> {
    model.set_training(false);
    let y = no_grad(|| model.distribution.sample(n, temperature, gen))?;
    let mut images = model.to_discrete(&y)?;
    let per = model.dims();
    let values = y.to_vec_f64()?;
    let mut broken = 0;
    for (image, sample) in images.chunks_mut(per).zip(values.chunks(per)) {
        if sample.iter().any(|v| !v.is_finite()) {
            image.fill(NON_FINITE_GREY);
            broken += 1;
        }
    }
    if broken == n && n > 0 {
        return Err(TrainError::Config(format!(
            "every sample at temperature {temperature} has NaN or infinite values: the model is numerically broken"
        )));
    }
    if broken > 0 {
        eprintln!(
            "warning: {broken} of {n} samples at temperature {temperature} have NaN or infinite values (the flow's inverse overflowed); they are drawn grey"
        );
    }
    Ok(images)
}

/// Images decoded from latents on the straight line between the latents of
/// two images `a` and `b` (dequantised with `u = 1/2`): `steps` points from
/// `a` to `b`, both ends included.
pub fn interpolate(model: &Model, a: &[u8], b: &[u8], steps: usize) -> Result<Vec<u8>> {
    model.set_training(false);
    let [c, h, w] = model.shape;
    let shift = 8 - model.n_bits;
    let values: Vec<f32> = a.iter().chain(b).map(|&v| f32::from(v >> shift)).collect();
    let x = Tensor::from_vec(values, &[2, c, h, w], model.device)?;
    let y = model.to_continuous(&x, &Tensor::full(0.5, x.shape(), DTYPE, model.device)?)?;
    let decoded = no_grad(|| -> flowtensor::Result<Tensor> {
        let (z, _) = model.distribution.flow.forward(&y)?;
        let (z0, z1) = (z.narrow(0, 0, 1)?, z.narrow(0, 1, 1)?);
        let line = (0..steps)
            .map(|i| {
                let t = i as f64 / (steps.max(2) - 1) as f64;
                z0.mul_scalar(1.0 - t)?.add(&z1.mul_scalar(t)?)
            })
            .collect::<flowtensor::Result<Vec<_>>>()?;
        model
            .distribution
            .flow
            .inverse(&Tensor::cat(&line.iter().collect::<Vec<_>>(), 0)?)
    })?;
    Ok(model.to_discrete(&decoded)?)
}

/// Writes `samples_t{T}.png` for every temperature of [`TEMPERATURES`] and
/// `interpolation.png` (between the first two test images) into `dir`.
pub fn write_outputs(
    model: &Model,
    test: &ImageSet,
    dir: &Path,
    n: usize,
    seed: u64,
) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let cols = (n as f64).sqrt().ceil() as usize;
    for t in TEMPERATURES {
        let mut gen = Generator::new(seed);
        let images = sample_images(model, n, t, &mut gen)?;
        let path = dir.join(format!("samples_t{t:.1}.png"));
        write_grid(&path, &images, model.shape, cols)?;
        written.push(path);
    }
    if test.len() >= 2 {
        let strip = interpolate(model, test.image(0), test.image(1), 10)?;
        let path = dir.join("interpolation.png");
        write_grid(&path, &strip, model.shape, 10)?;
        written.push(path);
    }
    Ok(written)
}

/// The configuration and model saved in `run_dir`'s checkpoint (no data is
/// read), with the Polyak averages in place of the parameters when the run
/// kept them; a warning is printed when the checkpoint came from other code.
pub fn load_run(run_dir: &Path) -> Result<(TrainConfig, Model)> {
    load_run_on(run_dir, None)
}

/// [`load_run`] with the model on `device` when given (else the run's).
pub fn load_run_on(
    run_dir: &Path,
    device: Option<flowtensor::Device>,
) -> Result<(TrainConfig, Model)> {
    let path = run_dir.join(CHECKPOINT);
    let ckpt = checkpoint::load(&path)?;
    if let Some(warning) =
        crate::provenance::other_code_warning(ckpt.metadata.get("code").map(String::as_str), &path)
    {
        eprintln!("{warning}");
    }
    model_from_checkpoint(&ckpt, &path, device)
}

/// The per-image shape a checkpoint's metadata records (so that sampling needs no data).
pub fn saved_image_shape(ckpt: &Checkpoint, path: &Path) -> Result<[usize; 3]> {
    let shape: Vec<usize> = ckpt
        .metadata
        .get("image_shape")
        .and_then(|v| v.split(',').map(|d| d.trim().parse().ok()).collect())
        .unwrap_or_default();
    shape
        .try_into()
        .map_err(|_| TrainError::checkpoint(path, "missing or invalid metadata \"image_shape\""))
}

/// The configuration and model of a loaded checkpoint (errors name `path`):
/// every saved value is checked as a new run's would be, and the memory
/// estimate against the limit, before the model is built.
pub fn model_from_checkpoint(
    ckpt: &Checkpoint,
    path: &Path,
    device: Option<flowtensor::Device>,
) -> Result<(TrainConfig, Model)> {
    let mut config = saved_config(ckpt, path)?;
    if let Some(device) = device {
        config.device = device;
    }
    if let flowtensor::Device::Cuda(n) = config.device {
        flowtensor::cuda::probe(n)?;
    }
    let shape = saved_image_shape(ckpt, path)?;
    let invalid = |e: TrainError| TrainError::checkpoint(path, e.to_string());
    config.check().map_err(invalid)?;
    crate::limits::check_model_shape(&config, shape).map_err(invalid)?;
    crate::limits::check_memory(
        "the checkpoint's model",
        crate::limits::sample_bytes(&config, shape, 1),
    )
    .map_err(invalid)?;
    let model = Model::new(&config, shape, config.device, &mut Generator::new(0))?;
    ckpt.load_model(&model, path)?;
    if config.polyak.is_some() {
        for (name, p) in model.parameters() {
            p.set_data(&ckpt.tensor_like(path, &format!("polyak.{name}"), &p)?)?;
        }
    }
    Ok((config, model))
}
