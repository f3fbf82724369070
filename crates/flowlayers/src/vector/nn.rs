//! Building blocks of the vector flows' conditioners: dense layers, masked
//! dense layers, MADE and a plain MLP.

use super::{check_context, constant};
use crate::flow::{parameter, prefixed};
use flowtensor::{DType, Device, Error, Generator, Result, Tensor};

/// Elementwise activation of the hidden layers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Activation {
    /// `max(x, 0)`.
    #[default]
    Relu,
    /// `tanh(x)`.
    Tanh,
    /// `x` for `x > 0`, `exp(x) - 1` otherwise, computed as
    /// `relu(x) + exp(min(x, 0)) - 1` (finite everywhere).
    Elu,
}

impl Activation {
    /// The activation of `x`, elementwise.
    pub fn apply(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Activation::Relu => x.relu(),
            Activation::Tanh => x.tanh(),
            Activation::Elu => {
                // min(x, 0) = -relu(-x)
                let negative = x.neg()?.relu()?.neg()?;
                x.relu()?.add(&negative.exp()?)?.sub_scalar(1.0)
            }
        }
    }
}

/// Checks that `x` is `(N, features)`.
fn check_features(layer: &'static str, features: usize, x: &Tensor) -> Result<()> {
    if x.rank() != 2 || x.shape()[1] != features {
        return Err(Error::shape(
            layer,
            &[x.shape()],
            format!("expected (batch, {features})"),
        ));
    }
    Ok(())
}

/// A dense layer `y = x W^T + b` on `(N, in)` inputs, with parameters
/// `weight` `(out, in)` and `bias` `(out)`.
pub struct Linear {
    in_features: usize,
    out_features: usize,
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    /// Weights and bias drawn uniformly from `[-1/sqrt(in), 1/sqrt(in))`
    /// (PyTorch's default), in f64 on the host from `gen`, then cast and
    /// moved, so both dtypes and all devices start from the same values.
    pub fn new(
        in_features: usize,
        out_features: usize,
        dtype: DType,
        device: Device,
        gen: &mut Generator,
    ) -> Result<Self> {
        Self::build(in_features, out_features, Some(gen), dtype, device)
    }

    /// Zero weights and bias (a conditioner's output layer, so that the flow
    /// starts at the identity).
    pub fn zeros(
        in_features: usize,
        out_features: usize,
        dtype: DType,
        device: Device,
    ) -> Result<Self> {
        Self::build(in_features, out_features, None, dtype, device)
    }

    fn build(
        in_features: usize,
        out_features: usize,
        gen: Option<&mut Generator>,
        dtype: DType,
        device: Device,
    ) -> Result<Self> {
        if in_features == 0 || out_features == 0 {
            return Err(Error::invalid(
                "Linear",
                format!("needs at least one input and output, got {in_features} -> {out_features}"),
            ));
        }
        let (weight, bias) = match gen {
            Some(gen) => {
                let k = 1.0 / (in_features as f64).sqrt();
                let w =
                    gen.uniform(&[out_features, in_features], -k, k, DType::F64, Device::Cpu)?;
                let b = gen.uniform(&[out_features], -k, k, DType::F64, Device::Cpu)?;
                (
                    super::placed(&w, dtype, device)?,
                    super::placed(&b, dtype, device)?,
                )
            }
            None => (
                Tensor::zeros(&[out_features, in_features], dtype, device)?,
                Tensor::zeros(&[out_features], dtype, device)?,
            ),
        };
        Ok(Linear {
            in_features,
            out_features,
            weight: parameter(weight)?,
            bias: parameter(bias)?,
        })
    }

    /// `x W^T + b` for `x` `(N, in)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        check_features("Linear", self.in_features, x)?;
        x.matmul_bias(&self.weight.transpose(0, 1)?, &self.bias)
    }

    pub fn in_features(&self) -> usize {
        self.in_features
    }

    pub fn out_features(&self) -> usize {
        self.out_features
    }

    /// The parameter `weight` `(out, in)`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The parameter `bias` `(out)`.
    pub fn bias(&self) -> &Tensor {
        &self.bias
    }

    /// `weight` and `bias`.
    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        vec![
            ("weight".into(), self.weight.clone()),
            ("bias".into(), self.bias.clone()),
        ]
    }
}

/// A dense layer with a fixed 0/1 connectivity mask:
/// `y = x (W .* M)^T + b`, `M` `(out, in)` the buffer `mask`. Masked-out
/// weights take no part in the output and get zero gradient.
pub struct MaskedLinear {
    linear: Linear,
    mask: Tensor,
}

impl MaskedLinear {
    /// A masked layer with `mask[o * in + i]` saying whether output `o` sees
    /// input `i`, its weights initialised as [`Linear::new`] (or zero with
    /// `zero`).
    pub fn new(
        mask: &[bool],
        in_features: usize,
        out_features: usize,
        zero: bool,
        dtype: DType,
        device: Device,
        gen: &mut Generator,
    ) -> Result<Self> {
        if mask.len() != in_features * out_features {
            return Err(Error::invalid(
                "MaskedLinear",
                format!(
                    "the mask has {} entries for {out_features} x {in_features} weights",
                    mask.len()
                ),
            ));
        }
        let linear = if zero {
            Linear::zeros(in_features, out_features, dtype, device)?
        } else {
            Linear::new(in_features, out_features, dtype, device, gen)?
        };
        let values = mask.iter().map(|&m| if m { 1.0 } else { 0.0 }).collect();
        Ok(MaskedLinear {
            linear,
            mask: constant(values, &[out_features, in_features], dtype, device)?,
        })
    }

    /// The MADE mask between units of the given degrees: output `o` sees
    /// input `i` iff `deg(o) >= deg(i)` (`deg(o) > deg(i)` when `strict`).
    pub fn from_degrees(
        in_degrees: &[usize],
        out_degrees: &[usize],
        strict: bool,
        zero: bool,
        dtype: DType,
        device: Device,
        gen: &mut Generator,
    ) -> Result<Self> {
        let mask: Vec<bool> = out_degrees
            .iter()
            .flat_map(|&o| {
                in_degrees
                    .iter()
                    .map(move |&i| if strict { o > i } else { o >= i })
            })
            .collect();
        Self::new(
            &mask,
            in_degrees.len(),
            out_degrees.len(),
            zero,
            dtype,
            device,
            gen,
        )
    }

    /// `x (W .* M)^T + b` for `x` `(N, in)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        check_features("MaskedLinear", self.linear.in_features, x)?;
        x.matmul_bias(&self.masked_weight()?.transpose(0, 1)?, &self.linear.bias)
    }

    /// `W .* M`, the weight the layer applies.
    fn masked_weight(&self) -> Result<Tensor> {
        self.linear.weight.mul(&self.mask)
    }

    /// The buffer `mask` `(out, in)` of ones and zeros.
    pub fn mask(&self) -> &Tensor {
        &self.mask
    }

    /// The unmasked layer (its raw weight and bias).
    pub fn linear(&self) -> &Linear {
        &self.linear
    }

    /// `weight` and `bias`.
    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        self.linear.parameters()
    }

    /// `mask`.
    pub fn buffers(&self) -> Vec<(String, Tensor)> {
        vec![("mask".into(), self.mask.clone())]
    }
}

/// The order in which a [`Made`] factorises its input.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum MadeOrder {
    /// Feature `i` comes `i`-th.
    #[default]
    Natural,
    /// Feature `i` comes `(D - 1 - i)`-th.
    Reversed,
    /// A uniformly random order drawn from a generator with this seed.
    Random(u64),
}

impl MadeOrder {
    /// The degree (1-based position in the order) of each of `features`
    /// inputs: a permutation of `1..=D`.
    pub fn degrees(&self, features: usize) -> Vec<usize> {
        match self {
            MadeOrder::Natural => (1..=features).collect(),
            MadeOrder::Reversed => (1..=features).rev().collect(),
            MadeOrder::Random(seed) => Generator::new(*seed)
                .permutation(features)
                .into_iter()
                .map(|p| p + 1)
                .collect(),
        }
    }
}

/// The shape and options of a [`Made`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MadeConfig {
    /// `D`, the number of input features.
    pub features: usize,
    /// Units per hidden layer.
    pub hidden_features: usize,
    /// Number of hidden layers (0: one masked layer from inputs to outputs).
    pub hidden_layers: usize,
    /// `P`, the outputs per input feature.
    pub params_per_feature: usize,
    /// `C`, the size of the optional context vector (0: none).
    pub context_features: usize,
    pub order: MadeOrder,
    pub activation: Activation,
    /// Zero weights and bias in the output layer (the outputs start at 0).
    pub zero_output: bool,
}

impl MadeConfig {
    /// `features` inputs, `params_per_feature` outputs each; 2 hidden layers
    /// of `max(64, 2 D)` units, ReLU, natural order, no context, randomly
    /// initialised output layer.
    pub fn new(features: usize, params_per_feature: usize) -> Self {
        MadeConfig {
            features,
            hidden_features: (2 * features).max(64),
            hidden_layers: 2,
            params_per_feature,
            context_features: 0,
            order: MadeOrder::Natural,
            activation: Activation::Relu,
            zero_output: false,
        }
    }
}

/// MADE (Germain, Gregor, Murray and Larochelle, "MADE: Masked Autoencoder
/// for Distribution Estimation", 2015): an MLP with masked weights whose
/// outputs for feature `i` depend only on the inputs that come before `i` in
/// the order.
///
/// - input `j` has degree `m(j)`, its position `1..=D` in the
///   [`MadeOrder`] ([`Made::degrees`]);
/// - hidden unit `k` of every hidden layer has degree
///   `k mod max(1, D - 1) + min(1, D - 1)` (every degree `1..D-1` used when
///   there are at least `D - 1` units) without a context, `k mod D` (degrees
///   `0..D-1`) with one, and sees the units of the previous layer with
///   degree `<=` its own (units of degree 0 see no input, only the context:
///   they carry it to the first feature's outputs);
/// - output `(i, p)` (`p < P`) has degree `m(i)` and sees the last layer's
///   units with degree `<` its own (strictly).
///
/// So `d out(i, p) / d x_j = 0` unless `m(j) < m(i)`; the first feature's
/// outputs depend on the context and the biases only. The optional context
/// `c` `(N, C)` enters the first layer through an unmasked [`Linear`]
/// (`h_1 = act(x (W_1 .* M_1)^T + b_1 + c V^T + v)`): every unit of that
/// layer, and through it every output (the first feature's through the
/// degree-0 units, given at least one hidden layer), depends on it.
///
/// [`Made::forward`] returns `(N, D, P)`; output unit `i P + p` of the last
/// layer is entry `(i, p)`. Parameters `layer{l}.weight`, `layer{l}.bias`
/// (`l = 0` the input layer, `hidden_layers` the output layer),
/// `context.weight`, `context.bias`; buffers `layer{l}.mask`.
pub struct Made {
    config: MadeConfig,
    degrees: Vec<usize>,
    layers: Vec<MaskedLinear>,
    context: Option<Linear>,
}

impl Made {
    /// A MADE for `config`, its weights drawn from `gen`.
    pub fn new(
        config: &MadeConfig,
        dtype: DType,
        device: Device,
        gen: &mut Generator,
    ) -> Result<Self> {
        let d = config.features;
        if d == 0 || config.params_per_feature == 0 {
            return Err(Error::invalid(
                "Made",
                format!(
                    "needs features >= 1 and params_per_feature >= 1, got {} and {}",
                    d, config.params_per_feature
                ),
            ));
        }
        if config.hidden_layers > 0 && config.hidden_features == 0 {
            return Err(Error::invalid(
                "Made",
                "hidden layers need hidden_features >= 1",
            ));
        }
        let degrees = config.order.degrees(d);
        let hidden: Vec<usize> = (0..config.hidden_features)
            .map(|k| {
                if config.context_features > 0 {
                    k % d
                } else {
                    k % (d.max(2) - 1) + 1.min(d - 1)
                }
            })
            .collect();
        let output: Vec<usize> = degrees
            .iter()
            .flat_map(|&m| std::iter::repeat_n(m, config.params_per_feature))
            .collect();
        let mut layers = Vec::with_capacity(config.hidden_layers + 1);
        let mut previous = &degrees;
        for _ in 0..config.hidden_layers {
            layers.push(MaskedLinear::from_degrees(
                previous, &hidden, false, false, dtype, device, gen,
            )?);
            previous = &hidden;
        }
        layers.push(MaskedLinear::from_degrees(
            previous,
            &output,
            true,
            config.zero_output,
            dtype,
            device,
            gen,
        )?);
        let context = match config.context_features {
            0 => None,
            c => Some(Linear::new(
                c,
                layers[0].linear.out_features,
                dtype,
                device,
                gen,
            )?),
        };
        Ok(Made {
            config: config.clone(),
            degrees,
            layers,
            context,
        })
    }

    /// The outputs `(N, D, P)` for `x` `(N, D)` and the context `(N, C)`
    /// (required iff the MADE was built with context features).
    pub fn forward(&self, x: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        let (h, output, direct) = self.hidden(x, context)?;
        let n = x.shape()[0];
        let mut out = output.forward(&h)?;
        if let Some(c) = direct {
            out = out.add(&c)?;
        }
        out.reshape(&[n, self.config.features, self.config.params_per_feature])
    }

    /// The same outputs as `P` tensors `(N, D)`, output `p` holding
    /// `forward(x)[.., p]`, from one product with the output layer's rows
    /// ordered by parameter: each output is a block of `D` contiguous values
    /// per row, so a flow that reads the parameters separately (MAF's shift
    /// and log-scale) runs its elementwise passes, and their gradients, on
    /// whole rows rather than on every `P`-th value.
    pub fn forward_by_param(&self, x: &Tensor, context: Option<&Tensor>) -> Result<Vec<Tensor>> {
        let (h, output, direct) = self.hidden(x, context)?;
        let (n, d, p) = (
            x.shape()[0],
            self.config.features,
            self.config.params_per_feature,
        );
        let inputs = output.linear.in_features;
        // unit (i, k) of the output layer moves from row i P + k to k D + i
        let by_param = |t: &Tensor, inner: usize| -> Result<Tensor> {
            t.reshape(&[d, p, inner])?
                .transpose(0, 1)?
                .reshape(&[p * d, inner])
        };
        let weight = by_param(&output.masked_weight()?, inputs)?;
        let bias = by_param(&output.linear.bias, 1)?.reshape(&[p * d])?;
        let mut out = h.matmul_bias(&weight.transpose(0, 1)?, &bias)?;
        if let Some(c) = direct {
            out = out.add(
                &c.reshape(&[n, d, p])?
                    .transpose(1, 2)?
                    .reshape(&[n, p * d])?,
            )?;
        }
        (0..p).map(|k| out.narrow(1, k * d, d)).collect()
    }

    /// The last hidden layer's activations `(N, H)` (or `x` without hidden
    /// layers), the output layer, and without hidden layers the context's
    /// term `(N, D P)` to add to the output.
    fn hidden(
        &self,
        x: &Tensor,
        context: Option<&Tensor>,
    ) -> Result<(Tensor, &MaskedLinear, Option<Tensor>)> {
        check_features("Made", self.config.features, x)?;
        let n = x.shape()[0];
        check_context("Made", self.config.context_features, n, x.dtype(), context)?;
        let (output, hidden) = self
            .layers
            .split_last()
            .ok_or_else(|| Error::invalid("Made", "has no layers"))?;
        let mut h = x.clone();
        for (l, layer) in hidden.iter().enumerate() {
            h = layer.forward(&h)?;
            if l == 0 {
                if let (Some(net), Some(c)) = (&self.context, context) {
                    h = h.add(&net.forward(c)?)?;
                }
            }
            h = self.config.activation.apply(&h)?;
        }
        let direct = match (&self.context, context) {
            (Some(net), Some(c)) if hidden.is_empty() => Some(net.forward(c)?),
            _ => None,
        };
        Ok((h, output, direct))
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &MadeConfig {
        &self.config
    }

    /// The degree of each input (its 1-based position in the order).
    pub fn degrees(&self) -> &[usize] {
        &self.degrees
    }

    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut all: Vec<(String, Tensor)> = self
            .layers
            .iter()
            .enumerate()
            .flat_map(|(l, layer)| prefixed(&format!("layer{l}"), layer.parameters()))
            .collect();
        if let Some(net) = &self.context {
            all.extend(prefixed("context", net.parameters()));
        }
        all
    }

    pub fn buffers(&self) -> Vec<(String, Tensor)> {
        self.layers
            .iter()
            .enumerate()
            .flat_map(|(l, layer)| prefixed(&format!("layer{l}"), layer.buffers()))
            .collect()
    }
}

/// The shape and options of an [`Mlp`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MlpConfig {
    pub in_features: usize,
    pub out_features: usize,
    /// Units per hidden layer.
    pub hidden_features: usize,
    /// Number of hidden layers (0: a single [`Linear`]).
    pub hidden_layers: usize,
    /// `C`, the size of the optional context vector (0: none).
    pub context_features: usize,
    pub activation: Activation,
    /// Zero weights and bias in the output layer (the outputs start at 0).
    pub zero_output: bool,
}

impl MlpConfig {
    /// `in_features -> out_features` through 2 hidden layers of 64 units,
    /// ReLU, no context, randomly initialised output layer.
    pub fn new(in_features: usize, out_features: usize) -> Self {
        MlpConfig {
            in_features,
            out_features,
            hidden_features: 64,
            hidden_layers: 2,
            context_features: 0,
            activation: Activation::Relu,
            zero_output: false,
        }
    }
}

/// A multilayer perceptron `(N, in) -> (N, out)`:
/// `h_0 = cat(x, c)`, `h_l = act(Linear_l(h_{l-1}))` for the hidden layers,
/// `y = Linear_out(h_L)`. The optional context `c` `(N, C)` is concatenated
/// to the input. Parameters `layer{l}.weight`, `layer{l}.bias`.
pub struct Mlp {
    config: MlpConfig,
    layers: Vec<Linear>,
}

impl Mlp {
    /// An MLP for `config`, its weights drawn from `gen`.
    pub fn new(
        config: &MlpConfig,
        dtype: DType,
        device: Device,
        gen: &mut Generator,
    ) -> Result<Self> {
        if config.in_features + config.context_features == 0 || config.out_features == 0 {
            return Err(Error::invalid(
                "Mlp",
                format!(
                    "needs inputs and outputs, got {} (+ {} context) -> {}",
                    config.in_features, config.context_features, config.out_features
                ),
            ));
        }
        if config.hidden_layers > 0 && config.hidden_features == 0 {
            return Err(Error::invalid(
                "Mlp",
                "hidden layers need hidden_features >= 1",
            ));
        }
        let mut layers = Vec::with_capacity(config.hidden_layers + 1);
        let mut width = config.in_features + config.context_features;
        for _ in 0..config.hidden_layers {
            layers.push(Linear::new(
                width,
                config.hidden_features,
                dtype,
                device,
                gen,
            )?);
            width = config.hidden_features;
        }
        layers.push(if config.zero_output {
            Linear::zeros(width, config.out_features, dtype, device)?
        } else {
            Linear::new(width, config.out_features, dtype, device, gen)?
        });
        Ok(Mlp {
            config: config.clone(),
            layers,
        })
    }

    /// The outputs `(N, out)` for `x` `(N, in)` and the context `(N, C)`
    /// (required iff the MLP was built with context features).
    pub fn forward(&self, x: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        check_features("Mlp", self.config.in_features, x)?;
        check_context(
            "Mlp",
            self.config.context_features,
            x.shape()[0],
            x.dtype(),
            context,
        )?;
        let mut h = match context {
            Some(c) if self.config.in_features > 0 => Tensor::cat(&[x, c], 1)?,
            Some(c) => c.clone(),
            None => x.clone(),
        };
        let last = self.layers.len() - 1;
        for (l, layer) in self.layers.iter().enumerate() {
            h = layer.forward(&h)?;
            if l < last {
                h = self.config.activation.apply(&h)?;
            }
        }
        Ok(h)
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &MlpConfig {
        &self.config
    }

    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        self.layers
            .iter()
            .enumerate()
            .flat_map(|(l, layer)| prefixed(&format!("layer{l}"), layer.parameters()))
            .collect()
    }
}
