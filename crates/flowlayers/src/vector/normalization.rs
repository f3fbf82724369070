//! Normalising layers on vectors: ActNorm and batch normalisation as a flow.

use super::{check_vector, unconditional};
use crate::flow::{parameter, Flow};
use crate::layers;
use flowtensor::{no_grad, DType, Device, Error, Result, Tensor};
use std::sync::atomic::{AtomicBool, Ordering};

/// ActNorm on `(N, D)` (Kingma and Dhariwal, Glow, 2018): the image
/// [`layers::ActNorm`] with one "channel" per feature and no spatial
/// dimensions, restricted to flat inputs.
///
/// - forward: `z = (x + b) exp(s)` per feature;
/// - inverse: `x = z exp(-s) - b`;
/// - log-det: `sum(s)` per sample.
///
/// The first forward in training mode sets `b = -mean(x)` and
/// `s = -log(std(x) + 1e-6)` over that batch (`s = 0` for a constant
/// feature), so the output starts standardised; the buffer `initialized`
/// records it. Parameters `bias`, `log_scale` `(1, D)`.
pub struct ActNorm {
    features: usize,
    dtype: DType,
    inner: layers::ActNorm,
}

impl ActNorm {
    /// ActNorm over `features` features (training mode, not yet initialised).
    pub fn new(features: usize, dtype: DType, device: Device) -> Result<Self> {
        if features == 0 {
            return Err(Error::invalid("ActNorm", "needs at least one feature"));
        }
        Ok(ActNorm {
            features,
            dtype,
            inner: layers::ActNorm::new(features, dtype, device)?,
        })
    }
}

impl Flow for ActNorm {
    fn name(&self) -> &'static str {
        "ActNorm"
    }
    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        check_vector("ActNorm", self.features, self.dtype, x)?;
        self.inner.forward(x)
    }
    fn inverse(&self, z: &Tensor) -> Result<Tensor> {
        check_vector("ActNorm", self.features, self.dtype, z)?;
        self.inner.inverse(z)
    }
    fn inverse_with_logdet(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        check_vector("ActNorm", self.features, self.dtype, z)?;
        self.inner.inverse_with_logdet(z)
    }
    fn parameters(&self) -> Vec<(String, Tensor)> {
        self.inner.parameters()
    }
    fn buffers(&self) -> Vec<(String, Tensor)> {
        self.inner.buffers()
    }
    fn set_training(&self, training: bool) {
        self.inner.set_training(training)
    }
}

const BN: &str = "BatchNorm";

/// Batch normalisation as a flow on `(N, D)` (Dinh et al., RealNVP, 2017;
/// Papamakarios et al., MAF, 2017), with parameters `log_gamma` and `beta`
/// `(D)` (zero at the start) and buffers `running_mean`, `running_var` `(D)`:
///
/// - forward: `z = (x - mu) / sqrt(v + eps) * exp(log_gamma) + beta` with
///   - in training mode, the batch statistics `mu = mean(x)`,
///     `v = mean((x - mu)^2)` (biased; at least 2 samples), differentiated
///     through; each such forward also updates the running averages
///     `running = (1 - momentum) running + momentum * batch` (no gradient,
///     on the device);
///   - in evaluation mode (`set_training(false)`), `mu = running_mean`,
///     `v = running_var`;
/// - log-det per sample: `sum(log_gamma - log(v + eps) / 2)` with the
///   statistics used (in training mode the statistics are treated as
///   constants, as in RealNVP and MAF: the log-det of the per-sample map
///   with the batch's `mu`, `v` fixed);
/// - inverse (evaluation mode only, as in nflows; an error in training mode,
///   where the statistics of the batch that would produce `z` are unknown):
///   `x = (z - beta) exp(-log_gamma) sqrt(v + eps) + mu` with the running
///   statistics.
pub struct BatchNorm {
    features: usize,
    momentum: f64,
    eps: f64,
    log_gamma: Tensor,
    beta: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    training: AtomicBool,
}

impl BatchNorm {
    /// Batch normalisation with momentum 0.1 and `eps = 1e-5`, in training mode.
    pub fn new(features: usize, dtype: DType, device: Device) -> Result<Self> {
        Self::with_options(features, 0.1, 1e-5, dtype, device)
    }

    /// Batch normalisation with the given `momentum` (in `(0, 1]`) and `eps > 0`.
    pub fn with_options(
        features: usize,
        momentum: f64,
        eps: f64,
        dtype: DType,
        device: Device,
    ) -> Result<Self> {
        let valid = momentum > 0.0 && momentum <= 1.0 && eps > 0.0 && eps.is_finite();
        if features == 0 || !valid {
            return Err(Error::invalid(
                BN,
                format!("needs features >= 1, momentum in (0, 1] and eps > 0, got {features}, {momentum}, {eps}"),
            ));
        }
        Ok(BatchNorm {
            features,
            momentum,
            eps,
            log_gamma: parameter(Tensor::zeros(&[features], dtype, device)?)?,
            beta: parameter(Tensor::zeros(&[features], dtype, device)?)?,
            running_mean: Tensor::zeros(&[features], dtype, device)?,
            running_var: Tensor::ones(&[features], dtype, device)?,
            training: AtomicBool::new(true),
        })
    }

    pub fn is_training(&self) -> bool {
        self.training.load(Ordering::Relaxed)
    }

    /// The buffers `(running_mean, running_var)`.
    pub fn running_statistics(&self) -> (Tensor, Tensor) {
        (self.running_mean.clone(), self.running_var.clone())
    }

    /// `log_gamma - log(v + eps) / 2` `(D)`.
    fn log_scale(&self, var: &Tensor) -> Result<Tensor> {
        self.log_gamma
            .sub(&var.add_scalar(self.eps)?.log()?.mul_scalar(0.5)?)
    }

    fn logdet(&self, log_scale: &Tensor, n: usize) -> Result<Tensor> {
        log_scale.sum_all()?.broadcast_as(&[n])?.contiguous()
    }

    fn update_running(&self, mean: &Tensor, var: &Tensor) -> Result<()> {
        let m = self.momentum;
        no_grad(|| {
            let blend = |running: &Tensor, batch: &Tensor| -> Result<()> {
                let next = running
                    .mul_scalar(1.0 - m)?
                    .add(&batch.detach().mul_scalar(m)?)?;
                running.set_data(&next)
            };
            blend(&self.running_mean, mean)?;
            blend(&self.running_var, var)
        })
    }
}

impl Flow for BatchNorm {
    fn name(&self) -> &'static str {
        BN
    }

    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        check_vector(BN, self.features, self.log_gamma.dtype(), x)?;
        let n = x.shape()[0];
        let (mean, var) = if self.is_training() {
            if n < 2 {
                return Err(Error::shape(
                    BN,
                    &[x.shape()],
                    "training mode needs at least 2 samples for the batch statistics",
                ));
            }
            let mean = x.mean(&[0], false)?;
            let var = x.sub(&mean)?.square()?.mean(&[0], false)?;
            self.update_running(&mean, &var)?;
            (mean, var)
        } else {
            (self.running_mean.clone(), self.running_var.clone())
        };
        let log_scale = self.log_scale(&var)?;
        let z = x.sub(&mean)?.mul(&log_scale.exp()?)?.add(&self.beta)?;
        Ok((z, self.logdet(&log_scale, n)?))
    }

    fn inverse(&self, z: &Tensor) -> Result<Tensor> {
        Ok(self.inverse_with_logdet(z)?.0)
    }

    fn inverse_with_logdet(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        check_vector(BN, self.features, self.log_gamma.dtype(), z)?;
        if self.is_training() {
            return Err(Error::invalid(
                BN,
                "the inverse is only available in evaluation mode (set_training(false))",
            ));
        }
        let log_scale = self.log_scale(&self.running_var)?;
        let x = z
            .sub(&self.beta)?
            .mul(&log_scale.neg()?.exp()?)?
            .add(&self.running_mean)?;
        Ok((x, self.logdet(&log_scale, z.shape()[0])?.neg()?))
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        vec![
            ("log_gamma".into(), self.log_gamma.clone()),
            ("beta".into(), self.beta.clone()),
        ]
    }

    fn buffers(&self) -> Vec<(String, Tensor)> {
        vec![
            ("running_mean".into(), self.running_mean.clone()),
            ("running_var".into(), self.running_var.clone()),
        ]
    }

    fn set_training(&self, training: bool) {
        self.training.store(training, Ordering::Relaxed);
    }
}

unconditional!(ActNorm, BatchNorm);
