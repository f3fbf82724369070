//! Activation normalisation (Glow).

use crate::flow::{parameter, Flow};
use flowtensor::{no_grad, Error, Result, Tensor};
use std::sync::atomic::{AtomicBool, Ordering};

/// The `std + EPS` of the initial scale, and the spread at or below which a
/// channel counts as constant.
const EPS: f64 = 1e-6;

/// ActNorm: a per-channel affine map with data-dependent initialisation.
///
/// - forward: `z = (x + b) * exp(s)` per channel (dimension 1);
/// - inverse: `x = z * exp(-s) - b`;
/// - log-det: `P * sum_c s_c` per sample, `P` the product of the dimensions after the channel one.
///
/// The first forward in training mode sets `b = -mean(x)` and
/// `s = -log(std(x) + 1e-6)` per channel over that batch, so the output
/// starts with zero mean and unit variance. A channel that is constant over
/// the batch (`std(x) <= 1e-6`, e.g. all-black images) carries no scale to
/// normalise by: its scale starts at 1 (`s = 0`) rather than at `1e6`, which
/// would blow up the first varying input. Whether the initialisation
/// happened is the buffer `initialized` (an f64 scalar in host memory, so
/// reading it costs no device synchronisation), saved with the parameters,
/// so a loaded model is never initialised again.
pub struct ActNorm {
    channels: usize,
    bias: Tensor,
    log_scale: Tensor,
    initialized: Tensor,
    training: AtomicBool,
}

impl ActNorm {
    /// ActNorm over `channels` channels (in training mode, not yet initialised).
    pub fn new(
        channels: usize,
        dtype: flowtensor::DType,
        device: flowtensor::Device,
    ) -> Result<Self> {
        let shape = [1, channels];
        Ok(ActNorm {
            channels,
            bias: parameter(Tensor::zeros(&shape, dtype, device)?)?,
            log_scale: parameter(Tensor::zeros(&shape, dtype, device)?)?,
            // on the host whatever the device: read every forward without a device sync
            initialized: Tensor::zeros(&[], flowtensor::DType::F64, flowtensor::Device::Cpu)?,
            training: AtomicBool::new(true),
        })
    }

    /// `(1, c, 1, ...)`: the per-channel parameters viewed for an input of `rank` dimensions.
    fn view(&self, t: &Tensor, rank: usize) -> Result<Tensor> {
        let shape: Vec<usize> = (0..rank)
            .map(|d| if d == 1 { self.channels } else { 1 })
            .collect();
        t.reshape(&shape)
    }

    fn check(&self, x: &Tensor) -> Result<()> {
        if x.rank() < 2 || x.shape()[1] != self.channels {
            return Err(Error::shape(
                "ActNorm",
                &[x.shape()],
                format!("expected (batch, {}, ...)", self.channels),
            ));
        }
        Ok(())
    }

    /// Whether the next forward initialises: in training mode and not initialised yet.
    pub(crate) fn needs_initialization(&self) -> Result<bool> {
        Ok(self.training.load(Ordering::Relaxed) && self.initialized.to_scalar()? == 0.0)
    }

    /// `(b, s)`, each `(1, channels)`.
    pub(crate) fn bias_and_log_scale(&self) -> (&Tensor, &Tensor) {
        (&self.bias, &self.log_scale)
    }

    /// Sets `b` and `s` from the batch `x` (see the type's docs), without a graph.
    pub(crate) fn initialize(&self, x: &Tensor) -> Result<()> {
        self.check(x)?;
        no_grad(|| {
            let dims: Vec<usize> = (0..x.rank()).filter(|&d| d != 1).collect();
            let mean = x.mean(&dims, true)?;
            let std = x.sub(&mean)?.square()?.mean(&dims, true)?.sqrt()?;
            self.bias
                .set_data(&mean.neg()?.reshape(&[1, self.channels])?)?;
            let log_scale = std.add_scalar(EPS)?.log()?.neg()?;
            let constant = std.le_scalar(EPS)?;
            let log_scale = constant.where_cond(&log_scale.zeros_like()?, &log_scale)?;
            self.log_scale
                .set_data(&log_scale.reshape(&[1, self.channels])?)?;
            self.initialized.set_data(&self.initialized.ones_like()?)
        })
    }

    /// `P * sum(s)` broadcast to the batch.
    fn logdet(&self, x: &Tensor) -> Result<Tensor> {
        let positions: usize = x.shape()[2..].iter().product();
        let per_sample = self.log_scale.sum_all()?.mul_scalar(positions as f64)?;
        per_sample.broadcast_as(&[x.shape()[0]])?.contiguous()
    }
}

impl Flow for ActNorm {
    fn name(&self) -> &'static str {
        "ActNorm"
    }

    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        self.check(x)?;
        if self.needs_initialization()? {
            self.initialize(x)?;
        }
        let (b, s) = (
            self.view(&self.bias, x.rank())?,
            self.view(&self.log_scale, x.rank())?,
        );
        let z = x.add(&b)?.mul(&s.exp()?)?;
        Ok((z, self.logdet(x)?))
    }

    fn inverse(&self, z: &Tensor) -> Result<Tensor> {
        self.check(z)?;
        let (b, s) = (
            self.view(&self.bias, z.rank())?,
            self.view(&self.log_scale, z.rank())?,
        );
        z.mul(&s.neg()?.exp()?)?.sub(&b)
    }

    fn inverse_with_logdet(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        Ok((self.inverse(z)?, self.logdet(z)?.neg()?))
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        vec![
            ("bias".into(), self.bias.clone()),
            ("log_scale".into(), self.log_scale.clone()),
        ]
    }

    fn buffers(&self) -> Vec<(String, Tensor)> {
        vec![("initialized".into(), self.initialized.clone())]
    }

    fn set_training(&self, training: bool) {
        self.training.store(training, Ordering::Relaxed);
    }
}
