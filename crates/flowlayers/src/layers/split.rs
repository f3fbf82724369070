//! Glow's split with a learned conditional prior, as a conditional Gaussian
//! and as a standardising bijection.

use crate::base::{standard_normal_log_density, sum_per_sample};
use crate::flow::{prefixed, Flow};
use crate::layers::conditioner::{Conditioner, ZeroConv2d};
use flowtensor::{DType, Device, Error, Generator, Result, Tensor};

/// The conditional diagonal Gaussian of Glow's split prior:
/// `p(x | c) = N(x; mean(c), diag(exp(log_std(c)))^2)` on `(N, channels, H, W)`,
/// with `(mean, log_std)` the first and last `channels` channels of a 3x3
/// [`ZeroConv2d`] `cond_channels -> 2 * channels` applied to the context `c`
/// (so it starts as `N(0, I)`). Glow interleaves the two in the conv's
/// output channels; taking halves is the same family up to a fixed
/// permutation of the (zero-initialised) output channels.
///
/// - `log p(x | c) = sum(log N((x - mean) exp(-log_std); 0, 1) - log_std)` per sample;
/// - a sample at temperature `t` is `mean + exp(log_std) * eps`, `eps ~ N(0, t^2)`.
///
/// [`ConditionalGaussian::with_edge_channel`] feeds the convolution Glow's
/// edge channel too ([`crate::layers::conditioner::with_edge_channel`]).
///
/// Parameters: `conv.weight`, `conv.bias`, `conv.logs`.
pub struct ConditionalGaussian {
    conv: ZeroConv2d,
    channels: usize,
}

impl ConditionalGaussian {
    /// A Gaussian over `channels` channels conditioned on `cond_channels` channels.
    pub fn new(
        cond_channels: usize,
        channels: usize,
        dtype: DType,
        device: Device,
    ) -> Result<Self> {
        Ok(ConditionalGaussian {
            conv: ZeroConv2d::new(cond_channels, 2 * channels, dtype, device)?,
            channels,
        })
    }

    /// The same Gaussian with the edge channel fed to its convolution.
    pub fn with_edge_channel(
        cond_channels: usize,
        channels: usize,
        dtype: DType,
        device: Device,
    ) -> Result<Self> {
        Ok(ConditionalGaussian {
            conv: ZeroConv2d::with_edge_channel(cond_channels, 2 * channels, dtype, device)?,
            channels,
        })
    }

    pub fn cond_channels(&self) -> usize {
        self.conv.in_channels()
    }

    pub fn channels(&self) -> usize {
        self.channels
    }

    fn check_context(&self, context: &Tensor) -> Result<()> {
        if context.rank() != 4 || context.shape()[1] != self.cond_channels() {
            return Err(Error::shape(
                "ConditionalGaussian",
                &[context.shape()],
                format!(
                    "the context must be (batch, {}, height, width)",
                    self.cond_channels()
                ),
            ));
        }
        Ok(())
    }

    /// `(mean, log_std)`, each `(N, channels, H, W)`, for the context `(N, cond_channels, H, W)`.
    pub fn mean_and_log_std(&self, context: &Tensor) -> Result<(Tensor, Tensor)> {
        self.check_context(context)?;
        let h = self.conv.forward(context)?;
        Ok((
            h.narrow(1, 0, self.channels)?,
            h.narrow(1, self.channels, self.channels)?,
        ))
    }

    /// `log p(x | context)` per sample.
    pub fn log_prob(&self, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        self.check_context(context)?;
        let (c, s) = (context.shape(), x.shape());
        if s.len() != 4 || s[0] != c[0] || s[1] != self.channels || s[2..] != c[2..] {
            return Err(Error::shape(
                "ConditionalGaussian",
                &[s, c],
                format!(
                    "x must be (batch, {}, height, width) like the context",
                    self.channels
                ),
            ));
        }
        let (mean, log_std) = self.mean_and_log_std(context)?;
        let u = x.sub(&mean)?.mul(&log_std.neg()?.exp()?)?;
        sum_per_sample(&standard_normal_log_density(&u)?.sub(&log_std)?)
    }

    /// One sample per context, with the standard deviation scaled by `temperature`.
    pub fn sample(
        &self,
        context: &Tensor,
        temperature: f64,
        gen: &mut Generator,
    ) -> Result<Tensor> {
        let (mean, log_std) = self.mean_and_log_std(context)?;
        let eps = gen.normal(mean.shape(), 0.0, temperature, mean.dtype(), mean.device())?;
        eps.mul(&log_std.exp()?)?.add(&mean)
    }

    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        prefixed("conv", self.conv.parameters())
    }
}

/// Glow's split with a learned prior, realised as a bijection on `(N, C, H, W)`.
///
/// The input `h` splits into `h1` (the first `C1 = floor(C / 2)` channels,
/// kept) and `h2` (the other `C2 = C - C1`, factored out). A
/// [`ConditionalGaussian`] on `h1` gives `mean` and `log_std` for `h2`, and
/// - forward: `z2 = (h2 - mean) * exp(-log_std)`;
/// - inverse: `h2 = mean + exp(log_std) * z2`, `h = cat(h1, h2)`;
/// - log-det: `-sum(log_std)` per sample.
///
/// Under a standard normal on `z2`, `log N(z2; 0, I) + logdet` is exactly
/// Glow's `log N(h2; mean, std)`, and drawing `z2 ~ N(0, t^2)` realises the
/// temperature `t` at this level.
///
/// [`SplitPrior::split`] and [`SplitPrior::merge`] work on the two parts;
/// as a [`Flow`] the layer maps `h` to `cat(h1, z2)` (same shape).
///
/// Parameters: the prior's (`conv.weight`, `conv.bias`, `conv.logs`).
pub struct SplitPrior {
    channels: usize,
    prior: ConditionalGaussian,
}

impl SplitPrior {
    /// `(C1, C2)`: the kept and the factored-out channel counts.
    pub fn split_sizes(channels: usize) -> (usize, usize) {
        (channels / 2, channels - channels / 2)
    }

    /// A split of `channels` channels (at least 2).
    pub fn new(channels: usize, dtype: DType, device: Device) -> Result<Self> {
        Self::build(channels, false, dtype, device)
    }

    /// A split whose prior's convolution also sees Glow's edge channel
    /// ([`ConditionalGaussian::with_edge_channel`]).
    pub fn with_edge_channel(channels: usize, dtype: DType, device: Device) -> Result<Self> {
        Self::build(channels, true, dtype, device)
    }

    fn build(channels: usize, edge: bool, dtype: DType, device: Device) -> Result<Self> {
        let (c1, c2) = Self::split_sizes(channels);
        if c1 == 0 {
            return Err(Error::invalid(
                "SplitPrior",
                format!("needs at least 2 channels, got {channels}"),
            ));
        }
        let prior = match edge {
            true => ConditionalGaussian::with_edge_channel(c1, c2, dtype, device)?,
            false => ConditionalGaussian::new(c1, c2, dtype, device)?,
        };
        Ok(SplitPrior { channels, prior })
    }

    pub fn channels(&self) -> usize {
        self.channels
    }

    /// The conditional Gaussian `p(h2 | h1)`.
    pub fn prior(&self) -> &ConditionalGaussian {
        &self.prior
    }

    fn check(&self, h: &Tensor) -> Result<()> {
        if h.rank() != 4 || h.shape()[1] != self.channels {
            return Err(Error::shape(
                "SplitPrior",
                &[h.shape()],
                format!("expected (batch, {}, height, width)", self.channels),
            ));
        }
        Ok(())
    }

    /// `(h1, z2, logdet)`: the kept channels, the standardised factored-out
    /// ones and `-sum(log_std)` per sample.
    pub fn split(&self, h: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        self.check(h)?;
        let (c1, c2) = Self::split_sizes(self.channels);
        let (h1, h2) = (h.narrow(1, 0, c1)?, h.narrow(1, c1, c2)?);
        let (mean, log_std) = self.prior.mean_and_log_std(&h1)?;
        let z2 = h2.sub(&mean)?.mul(&log_std.neg()?.exp()?)?;
        Ok((h1, z2, sum_per_sample(&log_std)?.neg()?))
    }

    /// `h = cat(h1, mean + exp(log_std) * z2)`.
    pub fn merge(&self, h1: &Tensor, z2: &Tensor) -> Result<Tensor> {
        Ok(self.merge_with_logdet(h1, z2)?.0)
    }

    /// [`SplitPrior::merge`] and its log-det `sum(log_std)` per sample.
    pub fn merge_with_logdet(&self, h1: &Tensor, z2: &Tensor) -> Result<(Tensor, Tensor)> {
        let (c1, c2) = Self::split_sizes(self.channels);
        let (a, b) = (h1.shape(), z2.shape());
        let fits = a.len() == 4
            && b.len() == 4
            && a[1] == c1
            && b[1] == c2
            && a[0] == b[0]
            && a[2..] == b[2..];
        if !fits {
            return Err(Error::shape(
                "SplitPrior",
                &[a, b],
                format!("expected (batch, {c1}, height, width) and (batch, {c2}, height, width)"),
            ));
        }
        let (mean, log_std) = self.prior.mean_and_log_std(h1)?;
        let h2 = z2.mul(&log_std.exp()?)?.add(&mean)?;
        Ok((Tensor::cat(&[h1, &h2], 1)?, sum_per_sample(&log_std)?))
    }
}

impl Flow for SplitPrior {
    fn name(&self) -> &'static str {
        "SplitPrior"
    }

    /// `(cat(h1, z2), -sum(log_std))`.
    fn forward(&self, h: &Tensor) -> Result<(Tensor, Tensor)> {
        let (h1, z2, logdet) = self.split(h)?;
        Ok((Tensor::cat(&[&h1, &z2], 1)?, logdet))
    }

    fn inverse(&self, z: &Tensor) -> Result<Tensor> {
        Ok(self.inverse_with_logdet(z)?.0)
    }

    fn inverse_with_logdet(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        self.check(z)?;
        let (c1, c2) = Self::split_sizes(self.channels);
        self.merge_with_logdet(&z.narrow(1, 0, c1)?, &z.narrow(1, c1, c2)?)
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        self.prior.parameters()
    }
}
