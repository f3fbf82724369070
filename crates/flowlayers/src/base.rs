//! Base distributions of the latent space.

use crate::flow::parameter;
use flowtensor::{DType, Device, Generator, Result, Tensor};

/// `log N(z; 0, 1)` elementwise: `-z^2 / 2 - log(2 pi) / 2`.
pub fn standard_normal_log_density(z: &Tensor) -> Result<Tensor> {
    z.square()?
        .affine(-0.5, -0.5 * (2.0 * std::f64::consts::PI).ln())
}

/// Sums every dimension but the first (per-sample totals).
pub fn sum_per_sample(t: &Tensor) -> Result<Tensor> {
    let dims: Vec<usize> = (1..t.rank()).collect();
    t.sum(&dims, false)
}

/// A distribution over latents of a fixed per-sample shape.
pub trait Base: Send + Sync {
    /// `log p(z)` per sample (shape `[batch]`).
    fn log_prob(&self, z: &Tensor) -> Result<Tensor>;
    /// `n` samples with the standard deviation scaled by `temperature`.
    fn sample(&self, n: usize, temperature: f64, gen: &mut Generator) -> Result<Tensor>;
    /// Trainable parameters by name (none by default).
    fn parameters(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
}

/// `N(0, I)` over latents of shape `shape` (per sample).
pub struct StandardNormal {
    shape: Vec<usize>,
    dtype: DType,
    device: Device,
}

impl StandardNormal {
    pub fn new(shape: &[usize], dtype: DType, device: Device) -> Self {
        StandardNormal {
            shape: shape.to_vec(),
            dtype,
            device,
        }
    }
}

impl Base for StandardNormal {
    fn log_prob(&self, z: &Tensor) -> Result<Tensor> {
        sum_per_sample(&standard_normal_log_density(z)?)
    }
    fn sample(&self, n: usize, temperature: f64, gen: &mut Generator) -> Result<Tensor> {
        let shape = [&[n][..], &self.shape].concat();
        gen.normal(&shape, 0.0, temperature, self.dtype, self.device)
    }
}

/// `N(mean, diag(exp(log_std))^2)` with learned `mean` and `log_std` (per-sample shape).
///
/// `log p(z) = sum(log N((z - mean) / std; 0, 1) - log_std)`.
pub struct DiagGaussian {
    mean: Tensor,
    log_std: Tensor,
}

impl DiagGaussian {
    /// Starts at `N(0, I)`.
    pub fn new(shape: &[usize], dtype: DType, device: Device) -> Result<Self> {
        Ok(DiagGaussian {
            mean: parameter(Tensor::zeros(shape, dtype, device)?)?,
            log_std: parameter(Tensor::zeros(shape, dtype, device)?)?,
        })
    }
}

impl Base for DiagGaussian {
    fn log_prob(&self, z: &Tensor) -> Result<Tensor> {
        let u = z.sub(&self.mean)?.mul(&self.log_std.neg()?.exp()?)?;
        sum_per_sample(&standard_normal_log_density(&u)?.sub(&self.log_std)?)
    }
    fn sample(&self, n: usize, temperature: f64, gen: &mut Generator) -> Result<Tensor> {
        let shape = [&[n][..], self.mean.shape()].concat();
        let eps = gen.normal(
            &shape,
            0.0,
            temperature,
            self.mean.dtype(),
            self.mean.device(),
        )?;
        eps.mul(&self.log_std.exp()?)?.add(&self.mean)
    }
    fn parameters(&self) -> Vec<(String, Tensor)> {
        vec![
            ("mean".into(), self.mean.clone()),
            ("log_std".into(), self.log_std.clone()),
        ]
    }
}
