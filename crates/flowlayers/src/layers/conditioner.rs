//! Conditioner networks: the (non-invertible) networks that compute a
//! coupling's shift and scale, or a split prior's mean and log-std, from the
//! untouched channels.
//!
//! - [`Conv2d`]: a plain convolution with bias, initialised like PyTorch's default;
//! - [`ZeroConv2d`]: Glow's zero-initialised output convolution with a learned
//!   per-channel log-scale;
//! - [`GlowNet`]: Glow's three-layer coupling network;
//! - [`DenseNet`]: the DenseNet (plain or gated output) of the convolution
//!   exponential paper's mixing experiments.

use crate::flow::{parameter, prefixed};
use flowtensor::{Conv2dParams, DType, Device, Error, Generator, Result, Tensor};

/// A network `(N, in_channels, H, W) -> (N, out_channels, H, W)` used inside
/// an invertible layer. It need not be invertible; its parameters are
/// reported by the layer that owns it.
pub trait Conditioner: Send + Sync {
    /// The network's output for `h` (same batch and spatial size).
    fn forward(&self, h: &Tensor) -> Result<Tensor>;
    /// Trainable parameters by name.
    fn parameters(&self) -> Vec<(String, Tensor)>;
    fn in_channels(&self) -> usize;
    fn out_channels(&self) -> usize;
}

/// A `k x k` convolution with bias, stride 1 and zero "same" padding (`k` odd).
///
/// [`Conv2d::new`] initialises like PyTorch's `nn.Conv2d`: kaiming-uniform
/// with `a = sqrt(5)`, i.e. weight and bias both uniform in
/// `[-1/sqrt(fan_in), 1/sqrt(fan_in))` with `fan_in = in_channels * k * k`
/// (weight drawn first, then bias, from the given generator).
pub struct Conv2d {
    weight: Tensor,
    bias: Tensor,
    params: Conv2dParams,
}

impl Conv2d {
    /// PyTorch's default initialisation (see the type's docs).
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        dtype: DType,
        device: Device,
        gen: &mut Generator,
    ) -> Result<Self> {
        Self::check_kernel(kernel)?;
        let bound = 1.0 / ((in_channels * kernel * kernel) as f64).sqrt();
        let weight = gen.uniform(
            &[out_channels, in_channels, kernel, kernel],
            -bound,
            bound,
            dtype,
            device,
        )?;
        let bias = gen.uniform(&[out_channels], -bound, bound, dtype, device)?;
        Ok(Conv2d {
            weight: parameter(weight)?,
            bias: parameter(bias)?,
            params: Conv2dParams::same(kernel),
        })
    }

    /// Weight and bias all zero (the convolution starts as the zero map).
    pub fn zeros(
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        dtype: DType,
        device: Device,
    ) -> Result<Self> {
        Self::check_kernel(kernel)?;
        Ok(Conv2d {
            weight: parameter(Tensor::zeros(
                &[out_channels, in_channels, kernel, kernel],
                dtype,
                device,
            )?)?,
            bias: parameter(Tensor::zeros(&[out_channels], dtype, device)?)?,
            params: Conv2dParams::same(kernel),
        })
    }

    fn check_kernel(kernel: usize) -> Result<()> {
        if kernel.is_multiple_of(2) {
            return Err(Error::invalid(
                "Conv2d",
                format!("kernel size {kernel} must be odd to keep the spatial size"),
            ));
        }
        Ok(())
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.conv2d(&self.weight, Some(&self.bias), &self.params)
    }

    /// `relu(forward(x))`, the ReLU fused into the convolution.
    pub fn forward_relu(&self, x: &Tensor) -> Result<Tensor> {
        x.conv2d_relu(&self.weight, Some(&self.bias), &self.params)
    }

    /// `weight` `(out, in, k, k)` and `bias` `(out)`.
    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        vec![
            ("weight".into(), self.weight.clone()),
            ("bias".into(), self.bias.clone()),
        ]
    }

    pub fn in_channels(&self) -> usize {
        self.weight.shape()[1]
    }

    pub fn out_channels(&self) -> usize {
        self.weight.shape()[0]
    }
}

/// Glow's zero-initialised output convolution (`Conv2dZeros`):
/// `y = (conv3x3(x, W) + b) * exp(3 * logs)` per output channel, with `W`,
/// `b` and `logs` learned and all initialised to zero, so the layer starts
/// as the zero map (and the coupling or prior it feeds as the identity or
/// the standard normal). The factor 3 lets the scale move faster than the
/// weights, as in Glow.
///
/// Padding is zero padding; Glow's original additionally fed an "edge"
/// channel marking the padded border, which is left out here.
pub struct ZeroConv2d {
    conv: Conv2d,
    logs: Tensor,
}

impl ZeroConv2d {
    /// A 3x3 zero convolution `in_channels -> out_channels`.
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        dtype: DType,
        device: Device,
    ) -> Result<Self> {
        Ok(ZeroConv2d {
            conv: Conv2d::zeros(in_channels, out_channels, 3, dtype, device)?,
            logs: parameter(Tensor::zeros(&[out_channels], dtype, device)?)?,
        })
    }
}

impl Conditioner for ZeroConv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let scale = self
            .logs
            .mul_scalar(3.0)?
            .exp()?
            .reshape(&[1, self.out_channels(), 1, 1])?;
        self.conv.forward(x)?.mul(&scale)
    }

    /// `weight`, `bias` and `logs`.
    fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut all = self.conv.parameters();
        all.push(("logs".into(), self.logs.clone()));
        all
    }

    fn in_channels(&self) -> usize {
        self.conv.in_channels()
    }

    fn out_channels(&self) -> usize {
        self.conv.out_channels()
    }
}

/// Glow's coupling network:
/// `conv3x3(in -> hidden) -> ReLU -> conv1x1(hidden -> hidden) -> ReLU ->
/// ZeroConv2d 3x3(hidden -> out)`.
///
/// The first two convolutions have biases and PyTorch's default
/// initialisation ([`Conv2d::new`]); Glow's original followed them with
/// ActNorm instead of biases, common PyTorch ports use biases as here. The
/// last layer is a [`ZeroConv2d`], so the network starts at exactly 0.
///
/// Parameters: `0.weight`, `0.bias`, `1.weight`, `1.bias`, `2.weight`,
/// `2.bias`, `2.logs`.
pub struct GlowNet {
    first: Conv2d,
    second: Conv2d,
    last: ZeroConv2d,
}

impl GlowNet {
    pub fn new(
        in_channels: usize,
        hidden: usize,
        out_channels: usize,
        dtype: DType,
        device: Device,
        gen: &mut Generator,
    ) -> Result<Self> {
        Ok(GlowNet {
            first: Conv2d::new(in_channels, hidden, 3, dtype, device, gen)?,
            second: Conv2d::new(hidden, hidden, 1, dtype, device, gen)?,
            last: ZeroConv2d::new(hidden, out_channels, dtype, device)?,
        })
    }
}

impl Conditioner for GlowNet {
    fn forward(&self, h: &Tensor) -> Result<Tensor> {
        let h = self.first.forward_relu(h)?;
        let h = self.second.forward_relu(&h)?;
        self.last.forward(&h)
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut all = prefixed("0", self.first.parameters());
        all.extend(prefixed("1", self.second.parameters()));
        all.extend(prefixed("2", self.last.parameters()));
        all
    }

    fn in_channels(&self) -> usize {
        self.first.in_channels()
    }

    fn out_channels(&self) -> usize {
        self.last.out_channels()
    }
}

/// Sizes of a [`DenseNet`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DenseNetConfig {
    /// Number of dense layers.
    pub depth: usize,
    /// Channels each dense layer adds.
    pub growth: usize,
    /// Width of each dense layer's 1x1 bottleneck; `None` keeps the layer's
    /// input width (what the reference code does).
    pub intermediate: Option<usize>,
    /// A gated output convolution (`--use_gated_conv`) instead of a plain one.
    pub gated: bool,
}

/// The DenseNet conditioner of the mixing experiments of Hoogeboom, Garcia
/// Satorras, Tomczak and Welling, "The Convolution Exponential and
/// Generalized Sylvester Flows" (2020).
///
/// With `h_0 = x` (`in_channels` channels), dense layer `i = 1..=depth` is
/// `h_i = cat(h_{i-1}, relu(conv3x3(relu(conv1x1(h_{i-1})))))` along the
/// channels: the 1x1 convolution maps to `intermediate` channels (or keeps
/// the width of `h_{i-1}` when `intermediate` is `None`), the 3x3 one to
/// `growth`, so `h_depth` has `in + depth * growth` channels. The output
/// layer is a 1x1 convolution, plain (`out_channels` channels) or gated
/// (`config.gated`, the paper's `--use_gated_conv`): `3 * out_channels`
/// channels split in that order into `(a, b, c)`, returning
/// `a + b * sigmoid(c)`.
///
/// Choices (the paper's description leaves them open; the reference
/// implementation, `models/architectures/densenet.py`, was consulted):
/// - the output convolution is 1x1, as in the reference code;
/// - it is zero-initialised (weight and bias), so the network starts at
///   exactly 0 and a coupling built on it at the identity. In the reference
///   code the zero-initialised layer is instead a plain 1x1 convolution after
///   a "dense-in-residual" stack of such DenseNets (a first 1x1 convolution to
///   the intermediate width, residual DenseNet blocks); this type is one
///   DenseNet block with the zero initialisation moved onto its output layer;
/// - no dropout (an option of the reference code; it would make the
///   coupling's forward and inverse disagree in training mode);
/// - the dense layers' convolutions have biases and PyTorch's default
///   initialisation ([`Conv2d::new`]).
///
/// Parameters: `layers.{i}.0.*` (1x1), `layers.{i}.1.*` (3x3), `output.weight`, `output.bias`.
pub struct DenseNet {
    layers: Vec<(Conv2d, Conv2d)>,
    output: Conv2d,
    gated: bool,
    in_channels: usize,
    out_channels: usize,
}

impl DenseNet {
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        config: DenseNetConfig,
        dtype: DType,
        device: Device,
        gen: &mut Generator,
    ) -> Result<Self> {
        let mut width = in_channels;
        let mut layers = Vec::with_capacity(config.depth);
        for _ in 0..config.depth {
            let mid = config.intermediate.unwrap_or(width);
            let bottleneck = Conv2d::new(width, mid, 1, dtype, device, gen)?;
            let grow = Conv2d::new(mid, config.growth, 3, dtype, device, gen)?;
            layers.push((bottleneck, grow));
            width += config.growth;
        }
        let outputs = if config.gated { 3 } else { 1 } * out_channels;
        Ok(DenseNet {
            layers,
            output: Conv2d::zeros(width, outputs, 1, dtype, device)?,
            gated: config.gated,
            in_channels,
            out_channels,
        })
    }
}

impl Conditioner for DenseNet {
    fn forward(&self, h: &Tensor) -> Result<Tensor> {
        let mut h = h.clone();
        for (bottleneck, grow) in &self.layers {
            let new = grow.forward_relu(&bottleneck.forward_relu(&h)?)?;
            h = Tensor::cat(&[&h, &new], 1)?;
        }
        let out = self.output.forward(&h)?;
        if !self.gated {
            return Ok(out);
        }
        let abc = out.chunk(3, 1)?;
        abc[0].add(&abc[1].mul(&abc[2].sigmoid()?)?)
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut all = Vec::new();
        for (i, (bottleneck, grow)) in self.layers.iter().enumerate() {
            all.extend(prefixed(&format!("layers.{i}.0"), bottleneck.parameters()));
            all.extend(prefixed(&format!("layers.{i}.1"), grow.parameters()));
        }
        all.extend(prefixed("output", self.output.parameters()));
        all
    }

    fn in_channels(&self) -> usize {
        self.in_channels
    }

    fn out_channels(&self) -> usize {
        self.out_channels
    }
}
