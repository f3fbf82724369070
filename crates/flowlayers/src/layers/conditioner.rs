//! Conditioner networks: the (non-invertible) networks that compute a
//! coupling's shift and scale, or a split prior's mean and log-std, from the
//! untouched channels.
//!
//! - [`Conv2d`]: a plain convolution with bias, initialised like PyTorch's default;
//! - [`ZeroConv2d`]: Glow's zero-initialised output convolution with a learned
//!   per-channel log-scale;
//! - [`GlowNet`]: Glow's three-layer coupling network, in the biased form of
//!   common ports or in Glow's original form ([`GlowNetStyle`]);
//! - [`DenseNet`]: the DenseNet (plain or gated output) of the convolution
//!   exponential paper's mixing experiments.

use crate::flow::{parameter, prefixed, Flow};
use crate::layers::ActNorm;
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
    /// Non-trainable state saved with the parameters (a hidden ActNorm's
    /// initialisation flag), by name.
    fn buffers(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
    /// Switches data-dependent initialisation on (training) or off.
    fn set_training(&self, _training: bool) {}
}

/// `cat(x, 1)` along the channels: `x (N, C, H, W)` with one more channel
/// that is 1 at every position. Convolved with zero "same" padding, that
/// channel reads 1 inside the image and 0 in the padding, so the network
/// can tell the border from dark pixels: Glow's `edge_bias` (whose extra
/// channel is instead 1 in the padding and 0 inside; the two differ by the
/// constant all-ones channel, which a bias or a following ActNorm absorbs).
pub fn with_edge_channel(x: &Tensor) -> Result<Tensor> {
    if x.rank() != 4 {
        return Err(Error::shape(
            "with_edge_channel",
            &[x.shape()],
            "expected (batch, channels, height, width)",
        ));
    }
    let s = x.shape();
    let ones = Tensor::ones(&[s[0], 1, s[2], s[3]], x.dtype(), x.device())?;
    Tensor::cat(&[x, &ones], 1)
}

/// A `k x k` convolution with bias, stride 1 and zero "same" padding (`k` odd).
///
/// [`Conv2d::new`] initialises like PyTorch's `nn.Conv2d`: kaiming-uniform
/// with `a = sqrt(5)`, i.e. weight and bias both uniform in
/// `[-1/sqrt(fan_in), 1/sqrt(fan_in))` with `fan_in = in_channels * k * k`
/// (weight drawn first, then bias, from the given generator).
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
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
            bias: Some(parameter(bias)?),
            params: Conv2dParams::same(kernel),
        })
    }

    /// No bias, weights drawn from `N(0, std^2)` (Glow's convolutions before
    /// an ActNorm, `std = 0.05`).
    pub fn normal_without_bias(
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        std: f64,
        dtype: DType,
        device: Device,
        gen: &mut Generator,
    ) -> Result<Self> {
        Self::check_kernel(kernel)?;
        let shape = [out_channels, in_channels, kernel, kernel];
        Ok(Conv2d {
            weight: parameter(gen.normal(&shape, 0.0, std, dtype, device)?)?,
            bias: None,
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
            bias: Some(parameter(Tensor::zeros(&[out_channels], dtype, device)?)?),
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
        x.conv2d(&self.weight, self.bias.as_ref(), &self.params)
    }

    /// `forward(with_edge_channel(x))` for a weight with one input channel
    /// more than `x` has, without building the extra channel: the product
    /// splits into the convolution of `x` with the first `C` input channels
    /// and that of a single all-ones image with the last, a `(1, out, H, W)`
    /// map the same for every sample, added by broadcasting.
    pub fn forward_with_edge(&self, x: &Tensor) -> Result<Tensor> {
        let inputs = self.in_channels();
        if x.rank() != 4 || x.shape()[1] + 1 != inputs {
            return Err(Error::shape(
                "Conv2d::forward_with_edge",
                &[x.shape(), self.weight.shape()],
                format!(
                    "expected (batch, {}, height, width): one channel fewer than the weight",
                    inputs.saturating_sub(1)
                ),
            ));
        }
        let c = inputs - 1;
        let main = x.conv2d(
            &self.weight.narrow(1, 0, c)?,
            self.bias.as_ref(),
            &self.params,
        )?;
        let ones = Tensor::ones(&[1, 1, x.shape()[2], x.shape()[3]], x.dtype(), x.device())?;
        let edge = ones.conv2d(&self.weight.narrow(1, c, 1)?, None, &self.params)?;
        main.add(&edge)
    }

    /// `relu(forward(x))`, the ReLU fused into the convolution.
    pub fn forward_relu(&self, x: &Tensor) -> Result<Tensor> {
        x.conv2d_relu(&self.weight, self.bias.as_ref(), &self.params)
    }

    /// `weight` `(out, in, k, k)` and, unless built without, `bias` `(out)`.
    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut all = vec![("weight".into(), self.weight.clone())];
        all.extend(self.bias.iter().map(|b| ("bias".into(), b.clone())));
        all
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
/// Padding is zero padding. [`ZeroConv2d::with_edge_channel`] also feeds
/// the convolution the channel of [`with_edge_channel`] (its weight is then
/// `(out, in + 1, 3, 3)`), as Glow's original does.
pub struct ZeroConv2d {
    conv: Conv2d,
    logs: Tensor,
    edge: bool,
}

impl ZeroConv2d {
    /// A 3x3 zero convolution `in_channels -> out_channels`.
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        dtype: DType,
        device: Device,
    ) -> Result<Self> {
        Self::build(in_channels, out_channels, false, dtype, device)
    }

    /// A 3x3 zero convolution `in_channels -> out_channels` that also sees
    /// the edge channel ([`with_edge_channel`]).
    pub fn with_edge_channel(
        in_channels: usize,
        out_channels: usize,
        dtype: DType,
        device: Device,
    ) -> Result<Self> {
        Self::build(in_channels, out_channels, true, dtype, device)
    }

    fn build(
        in_channels: usize,
        out_channels: usize,
        edge: bool,
        dtype: DType,
        device: Device,
    ) -> Result<Self> {
        let inputs = in_channels + usize::from(edge);
        Ok(ZeroConv2d {
            conv: Conv2d::zeros(inputs, out_channels, 3, dtype, device)?,
            logs: parameter(Tensor::zeros(&[out_channels], dtype, device)?)?,
            edge,
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
        let out = match self.edge {
            true => self.conv.forward_with_edge(x)?,
            false => self.conv.forward(x)?,
        };
        out.mul(&scale)
    }

    /// `weight`, `bias` and `logs`.
    fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut all = self.conv.parameters();
        all.push(("logs".into(), self.logs.clone()));
        all
    }

    fn in_channels(&self) -> usize {
        self.conv.in_channels() - usize::from(self.edge)
    }

    fn out_channels(&self) -> usize {
        self.conv.out_channels()
    }
}

/// The two forms of [`GlowNet`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GlowNetStyle {
    /// Hidden convolutions with biases and PyTorch's default initialisation,
    /// zero padding (the common PyTorch ports).
    #[default]
    Biased,
    /// Glow's own network (`f` in `openai/glow`'s `model.py`): the 3x3
    /// convolutions see the edge channel ([`with_edge_channel`]), the hidden
    /// convolutions have no bias, weights from `N(0, 0.05^2)`, and are
    /// followed by a data-initialised [`ActNorm`] before the ReLU.
    Original,
}

/// A hidden layer of [`GlowNet`]: `relu(conv(x) + b)` ([`GlowNetStyle::Biased`])
/// or `relu(actnorm(conv(edge(x))))` ([`GlowNetStyle::Original`]; the edge
/// channel only for a 3x3 kernel, as in Glow).
///
/// The ActNorm `(h + b_a) exp(s)` after a bias-free convolution is folded
/// into it: `conv(x, W) exp(s) + b_a exp(s) = conv(x, W exp(s)) + b_a exp(s)`
/// per output channel, so the layer runs as one convolution with a bias and
/// the ReLU fused (the same function; only the rounding differs), and the
/// gradients reach `W`, `b_a` and `s` through the folded weight and bias.
/// The ActNorm's initialisation still sees the plain `conv(edge(x))`.
struct HiddenConv {
    conv: Conv2d,
    actnorm: Option<ActNorm>,
    edge: bool,
}

impl HiddenConv {
    fn new(
        style: GlowNetStyle,
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        dtype: DType,
        device: Device,
        gen: &mut Generator,
    ) -> Result<Self> {
        Ok(match style {
            GlowNetStyle::Biased => HiddenConv {
                conv: Conv2d::new(in_channels, out_channels, kernel, dtype, device, gen)?,
                actnorm: None,
                edge: false,
            },
            GlowNetStyle::Original => {
                let edge = kernel > 1;
                let inputs = in_channels + usize::from(edge);
                HiddenConv {
                    conv: Conv2d::normal_without_bias(
                        inputs,
                        out_channels,
                        kernel,
                        0.05,
                        dtype,
                        device,
                        gen,
                    )?,
                    actnorm: Some(ActNorm::new(out_channels, dtype, device)?),
                    edge,
                }
            }
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let Some(actnorm) = &self.actnorm else {
            return self.conv.forward_relu(x);
        };
        let x = match self.edge {
            true => with_edge_channel(x)?,
            false => x.clone(),
        };
        if actnorm.needs_initialization()? {
            actnorm.initialize(&flowtensor::no_grad(|| self.conv.forward(&x))?)?;
        }
        let (bias, log_scale) = actnorm.bias_and_log_scale();
        let out = self.conv.out_channels();
        let scale = log_scale.exp()?.reshape(&[out])?;
        let weight = self.conv.weight.mul(&scale.reshape(&[out, 1, 1, 1])?)?;
        let bias = bias.reshape(&[out])?.mul(&scale)?;
        x.conv2d_relu(&weight, Some(&bias), &self.conv.params)
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut all = self.conv.parameters();
        if let Some(actnorm) = &self.actnorm {
            all.extend(prefixed("actnorm", actnorm.parameters()));
        }
        all
    }

    fn buffers(&self) -> Vec<(String, Tensor)> {
        match &self.actnorm {
            Some(actnorm) => prefixed("actnorm", actnorm.buffers()),
            None => Vec::new(),
        }
    }

    fn set_training(&self, training: bool) {
        if let Some(actnorm) = &self.actnorm {
            actnorm.set_training(training);
        }
    }

    fn in_channels(&self) -> usize {
        self.conv.in_channels() - usize::from(self.edge)
    }
}

/// Glow's coupling network:
/// `conv3x3(in -> hidden) -> ReLU -> conv1x1(hidden -> hidden) -> ReLU ->
/// ZeroConv2d 3x3(hidden -> out)`, in one of two forms ([`GlowNetStyle`]):
///
/// - `Biased` (the default): the first two convolutions have biases and
///   PyTorch's default initialisation ([`Conv2d::new`]), as common PyTorch
///   ports have it. Parameters: `0.weight`, `0.bias`, `1.weight`, `1.bias`,
///   `2.weight`, `2.bias`, `2.logs`.
/// - `Original` (Glow's): `h1 = relu(actnorm(conv3x3(edge(x))))`,
///   `h2 = relu(actnorm(conv1x1(h1)))`, `out = ZeroConv2d(edge(h2))`, with
///   the edge channel of [`with_edge_channel`], bias-free `N(0, 0.05^2)`
///   convolutions and ActNorms initialised on the first training batch
///   (output zero mean, unit variance per channel). Parameters: `0.weight`,
///   `0.actnorm.bias`, `0.actnorm.log_scale`, the same under `1.`, and
///   `2.weight` (`(out, hidden + 1, 3, 3)`), `2.bias`, `2.logs`; buffers
///   `0.actnorm.initialized`, `1.actnorm.initialized`.
///
/// The last layer is a [`ZeroConv2d`], so either network starts at exactly 0.
pub struct GlowNet {
    first: HiddenConv,
    second: HiddenConv,
    last: ZeroConv2d,
}

impl GlowNet {
    /// The [`GlowNetStyle::Biased`] network.
    pub fn new(
        in_channels: usize,
        hidden: usize,
        out_channels: usize,
        dtype: DType,
        device: Device,
        gen: &mut Generator,
    ) -> Result<Self> {
        Self::with_style(
            GlowNetStyle::Biased,
            in_channels,
            hidden,
            out_channels,
            dtype,
            device,
            gen,
        )
    }

    /// The network in the given form; weights are drawn first conv first.
    pub fn with_style(
        style: GlowNetStyle,
        in_channels: usize,
        hidden: usize,
        out_channels: usize,
        dtype: DType,
        device: Device,
        gen: &mut Generator,
    ) -> Result<Self> {
        let last = match style {
            GlowNetStyle::Biased => ZeroConv2d::new(hidden, out_channels, dtype, device)?,
            GlowNetStyle::Original => {
                ZeroConv2d::with_edge_channel(hidden, out_channels, dtype, device)?
            }
        };
        Ok(GlowNet {
            first: HiddenConv::new(style, in_channels, hidden, 3, dtype, device, gen)?,
            second: HiddenConv::new(style, hidden, hidden, 1, dtype, device, gen)?,
            last,
        })
    }
}

impl Conditioner for GlowNet {
    fn forward(&self, h: &Tensor) -> Result<Tensor> {
        let h = self.first.forward(h)?;
        let h = self.second.forward(&h)?;
        self.last.forward(&h)
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut all = prefixed("0", self.first.parameters());
        all.extend(prefixed("1", self.second.parameters()));
        all.extend(prefixed("2", self.last.parameters()));
        all
    }

    fn buffers(&self) -> Vec<(String, Tensor)> {
        let mut all = prefixed("0", self.first.buffers());
        all.extend(prefixed("1", self.second.buffers()));
        all
    }

    fn set_training(&self, training: bool) {
        self.first.set_training(training);
        self.second.set_training(training);
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
