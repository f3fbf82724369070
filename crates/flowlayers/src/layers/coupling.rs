//! Additive and affine coupling layers (NICE, RealNVP, Glow).

use crate::base::sum_per_sample;
use crate::flow::{prefixed, Flow};
use crate::layers::conditioner::{Conditioner, DenseNet, DenseNetConfig, GlowNet, GlowNetStyle};
use flowtensor::{DType, Device, Error, Generator, Result, Tensor};

/// How an affine coupling turns the conditioner's raw output `h` into a
/// positive scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScaleFn {
    /// `scale = sigmoid(h + 2)`, `log scale = log_sigmoid(h + 2)` (Glow). The
    /// scale lies in (0, 1) and starts at `sigmoid(2) ~ 0.881`, not 1, when the
    /// conditioner starts at 0: that is Glow's choice.
    Sigmoid2,
    /// `scale = exp(2 tanh(h / 2))`, i.e. `log scale` in (-2, 2) (the
    /// convolution-exponential code). Starts at scale 1.
    ExpTanh,
}

impl ScaleFn {
    /// `log scale(h)` elementwise.
    pub fn log_scale(self, h: &Tensor) -> Result<Tensor> {
        match self {
            ScaleFn::Sigmoid2 => h.add_scalar(2.0)?.log_sigmoid(),
            ScaleFn::ExpTanh => h.mul_scalar(0.5)?.tanh()?.mul_scalar(2.0),
        }
    }
}

/// Additive or affine coupling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CouplingKind {
    /// `z2 = x2 + t(x1)` (NICE); volume preserving.
    Additive,
    /// `z2 = (x2 + shift(x1)) * scale(x1)` (RealNVP, Glow).
    Affine(ScaleFn),
}

impl CouplingKind {
    /// The conditioner's output channels for `transformed` transformed
    /// channels: `C2` (additive) or `2 * C2` (affine).
    pub fn conditioner_channels(self, transformed: usize) -> usize {
        match self {
            CouplingKind::Additive => transformed,
            CouplingKind::Affine(_) => 2 * transformed,
        }
    }
}

/// A coupling layer on `(N, C, H, W)`: the first `C1 = floor(C / 2)` channels
/// `x1` pass unchanged and condition the transformation of the other
/// `C2 = C - C1` channels `x2` (floor, as Glow and the convolution-exponential
/// code split; for odd `C` the transformed half is the larger).
///
/// With `h = net(x1)`:
/// - additive (`h` has `C2` channels):
///   forward `z2 = x2 + h`, inverse `x2 = z2 - h`, log-det `0`;
/// - affine (`h` has `2 C2` channels: the first `C2` the shift `t`, the rest
///   the raw scale `s`): forward `z2 = (x2 + t) * scale(s)`, inverse
///   `x2 = z2 / scale(s) - t`, log-det `sum_{c, i, j} log scale(s)` per sample
///   (see [`ScaleFn`]).
///
/// `z = cat(x1, z2)` along the channels. Because the conditioners of this
/// crate end in a zero-initialised layer, an additive or `ExpTanh` coupling
/// starts as the identity, and a `Sigmoid2` one as `z2 = sigmoid(2) x2`.
///
/// Parameters and buffers: the conditioner's, under `net.`.
pub struct Coupling {
    channels: usize,
    kind: CouplingKind,
    net: Box<dyn Conditioner>,
}

impl Coupling {
    /// `(C1, C2)`: the conditioning and the transformed channel counts.
    pub fn split_sizes(channels: usize) -> (usize, usize) {
        (channels / 2, channels - channels / 2)
    }

    /// A coupling over `channels` channels with the given conditioner, which
    /// must map `C1` channels to `kind.conditioner_channels(C2)`.
    pub fn new(channels: usize, kind: CouplingKind, net: Box<dyn Conditioner>) -> Result<Self> {
        let (c1, c2) = Self::split_sizes(channels);
        let want = kind.conditioner_channels(c2);
        if c1 == 0 {
            return Err(Error::invalid(
                "Coupling",
                format!("needs at least 2 channels, got {channels}"),
            ));
        }
        if net.in_channels() != c1 || net.out_channels() != want {
            return Err(Error::invalid(
                "Coupling",
                format!(
                    "a {kind:?} coupling of {channels} channels needs a conditioner {c1} -> {want} channels, got {} -> {}",
                    net.in_channels(),
                    net.out_channels()
                ),
            ));
        }
        Ok(Coupling {
            channels,
            kind,
            net,
        })
    }

    /// A coupling with a [`GlowNetStyle::Biased`] [`GlowNet`] conditioner of
    /// `hidden` channels.
    pub fn glow(
        channels: usize,
        kind: CouplingKind,
        hidden: usize,
        dtype: DType,
        device: Device,
        gen: &mut Generator,
    ) -> Result<Self> {
        let style = GlowNetStyle::Biased;
        Self::glow_styled(style, channels, kind, hidden, dtype, device, gen)
    }

    /// A coupling with a [`GlowNet`] conditioner of `hidden` channels in the given form.
    pub fn glow_styled(
        style: GlowNetStyle,
        channels: usize,
        kind: CouplingKind,
        hidden: usize,
        dtype: DType,
        device: Device,
        gen: &mut Generator,
    ) -> Result<Self> {
        let (c1, c2) = Self::split_sizes(channels);
        let net = GlowNet::with_style(
            style,
            c1,
            hidden,
            kind.conditioner_channels(c2),
            dtype,
            device,
            gen,
        )?;
        Self::new(channels, kind, Box::new(net))
    }

    /// A coupling with a [`DenseNet`] conditioner.
    pub fn densenet(
        channels: usize,
        kind: CouplingKind,
        config: DenseNetConfig,
        dtype: DType,
        device: Device,
        gen: &mut Generator,
    ) -> Result<Self> {
        let (c1, c2) = Self::split_sizes(channels);
        let net = DenseNet::new(
            c1,
            kind.conditioner_channels(c2),
            config,
            dtype,
            device,
            gen,
        )?;
        Self::new(channels, kind, Box::new(net))
    }

    pub fn kind(&self) -> CouplingKind {
        self.kind
    }

    pub fn channels(&self) -> usize {
        self.channels
    }

    fn check(&self, x: &Tensor) -> Result<()> {
        if x.rank() != 4 || x.shape()[1] != self.channels {
            return Err(Error::shape(
                "Coupling",
                &[x.shape()],
                format!("expected (batch, {}, height, width)", self.channels),
            ));
        }
        Ok(())
    }

    /// `(x1, x2)`: the conditioning and the transformed channels.
    fn halves(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        self.check(x)?;
        let (c1, c2) = Self::split_sizes(self.channels);
        Ok((x.narrow(1, 0, c1)?, x.narrow(1, c1, c2)?))
    }

    /// `(shift, log scale)` from the conditioner on `x1`; `log scale` is
    /// `None` for an additive coupling.
    fn shift_and_log_scale(&self, x1: &Tensor) -> Result<(Tensor, Option<Tensor>)> {
        let h = self.net.forward(x1)?;
        match self.kind {
            CouplingKind::Additive => Ok((h, None)),
            CouplingKind::Affine(scale) => {
                let c2 = Self::split_sizes(self.channels).1;
                let log_s = scale.log_scale(&h.narrow(1, c2, c2)?)?;
                Ok((h.narrow(1, 0, c2)?, Some(log_s)))
            }
        }
    }

    /// The per-sample log-det for `log_s` (zero when additive).
    fn logdet(x: &Tensor, log_s: &Option<Tensor>) -> Result<Tensor> {
        match log_s {
            Some(l) => sum_per_sample(l),
            None => Tensor::zeros(&[x.shape()[0]], x.dtype(), x.device()),
        }
    }
}

impl Flow for Coupling {
    fn name(&self) -> &'static str {
        "Coupling"
    }

    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let (x1, x2) = self.halves(x)?;
        let (shift, log_s) = self.shift_and_log_scale(&x1)?;
        let mut z2 = x2.add(&shift)?;
        if let Some(l) = &log_s {
            z2 = z2.mul(&l.exp()?)?;
        }
        Ok((Tensor::cat(&[&x1, &z2], 1)?, Self::logdet(x, &log_s)?))
    }

    fn inverse(&self, z: &Tensor) -> Result<Tensor> {
        Ok(self.inverse_with_logdet(z)?.0)
    }

    fn inverse_with_logdet(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        let (z1, z2) = self.halves(z)?;
        let (shift, log_s) = self.shift_and_log_scale(&z1)?;
        let mut x2 = z2;
        if let Some(l) = &log_s {
            x2 = x2.mul(&l.neg()?.exp()?)?;
        }
        let x2 = x2.sub(&shift)?;
        Ok((
            Tensor::cat(&[&z1, &x2], 1)?,
            Self::logdet(z, &log_s)?.neg()?,
        ))
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        prefixed("net", self.net.parameters())
    }

    fn buffers(&self) -> Vec<(String, Tensor)> {
        prefixed("net", self.net.buffers())
    }

    fn set_training(&self, training: bool) {
        self.net.set_training(training);
    }
}
