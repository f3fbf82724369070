//! The model of a run: a flow distribution over dequantised images, built
//! from a [`TrainConfig`], and its likelihood bounds in nats and bits/dim.

use crate::config::{CouplingType, Dequantize, Mixing, ModelType, TrainConfig};
use crate::dequant::{uniform_noise, VariationalDequantizer};
use flowlayers::layers::conv_exp::{ConvExpConfig, OneByOne};
use flowlayers::layers::{
    Conv1x1, Conv1x1Lu, Conv1x1Qr, ConvExp, CouplingKind, DenseNetConfig, EmergingConv,
    PeriodicConv, Permutation, ResidualBlock, ResidualConfig, Sylvester, SylvesterConfig, Woodbury,
    WoodburyAxis,
};
use flowlayers::{
    prefixed, ConditionerKind, Flow, FlowDistribution, Glow, GlowConfig, LayerFactory, Sequential,
    StandardNormal,
};
use flowtensor::conv_exp::Terms;
use flowtensor::{no_grad, profile, DType, Device, Generator, Result, Tensor};
use std::ops::Range;
use std::sync::Arc;

/// The training dtype.
pub const DTYPE: DType = DType::F32;

/// The mixing factory of `config.mixing`.
fn mixing_factory(config: &TrainConfig, dtype: DType, device: Device) -> LayerFactory {
    let (mixing, terms, eval_terms, rank) = (
        config.mixing,
        config.convexp_terms,
        config.convexp_eval_terms,
        config.woodbury_rank,
    );
    Arc::new(move |[c, h, w]: [usize; 3], gen: &mut Generator| {
        let lu = |gen: &mut Generator| -> Result<Box<dyn Flow>> {
            Ok(Box::new(Conv1x1Lu::new(c, dtype, device, gen)?))
        };
        let woodbury =
            |axis: WoodburyAxis, rank: usize, gen: &mut Generator| -> Result<Box<dyn Flow>> {
                Ok(Box::new(Woodbury::new(
                    axis,
                    c,
                    (h, w),
                    rank,
                    dtype,
                    device,
                    gen,
                )?))
            };
        Ok(match mixing {
            Mixing::Reverse => Box::new(Permutation::reverse(c)?),
            Mixing::Shuffle => Box::new(Permutation::shuffle(c, gen)?),
            Mixing::OneByOne => lu(gen)?,
            Mixing::OneByOnePlain => Box::new(Conv1x1::new(c, dtype, device, gen)?),
            Mixing::OneByOneQr => Box::new(Conv1x1Qr::new(c, dtype, device, gen)?),
            Mixing::ConvExp => {
                let config = ConvExpConfig {
                    one_by_one: OneByOne::Lu,
                    train_terms: Terms::Fixed(terms),
                    eval_terms: Terms::Fixed(eval_terms),
                    ..ConvExpConfig::default()
                };
                Box::new(ConvExp::with_config(c, (h, w), config, dtype, device, gen)?)
            }
            Mixing::Emerging => {
                let first = lu(gen)?;
                let emerging = Box::new(EmergingConv::new(c, (h, w), dtype, device, gen)?);
                Box::new(Sequential::new(vec![first, emerging]))
            }
            Mixing::Periodic => {
                let first = lu(gen)?;
                let periodic = Box::new(PeriodicConv::new(c, (h, w), 3, dtype, device, gen)?);
                Box::new(Sequential::new(vec![first, periodic]))
            }
            Mixing::Woodbury => {
                let first = lu(gen)?;
                let spatial = woodbury(WoodburyAxis::Spatial, rank, gen)?;
                Box::new(Sequential::new(vec![first, spatial]))
            }
            Mixing::WoodburyMe => Box::new(Sequential::new(vec![
                woodbury(WoodburyAxis::Channel, rank.min(c), gen)?,
                woodbury(WoodburyAxis::Height, rank.min(h), gen)?,
                woodbury(WoodburyAxis::Width, rank.min(w), gen)?,
            ])),
        })
    })
}

/// The Glow configuration of `config`.
fn glow_config(config: &TrainConfig, dtype: DType, device: Device) -> GlowConfig {
    let mut glow = GlowConfig::new(
        config.n_levels,
        config.n_subflows,
        config.hidden_channels,
        mixing_factory(config, dtype, device),
    );
    glow.split_prior = config.use_splitprior;
    if config.coupling == CouplingType::Additive {
        glow.coupling = CouplingKind::Additive;
    }
    glow.conditioner = ConditionerKind::GlowNet(config.coupling_net.style());
    if config.densenet_depth > 0 {
        glow.conditioner = ConditionerKind::DenseNet(DenseNetConfig {
            depth: config.densenet_depth,
            growth: config.densenet_growth,
            intermediate: (config.n_intermediate_channels > 0)
                .then_some(config.n_intermediate_channels),
            gated: config.use_gated_conv,
        });
    }
    if config.model_type == ModelType::Sylvester {
        let (hidden, terms, eval_terms) = (
            config.hidden_channels,
            config.convexp_terms,
            config.convexp_eval_terms,
        );
        glow.transform = Some(Arc::new(
            move |[c, h, w]: [usize; 3], gen: &mut Generator| {
                let sylvester = SylvesterConfig {
                    hidden_channels: hidden.max(c),
                    train_terms: Terms::Fixed(terms),
                    eval_terms: Terms::Fixed(eval_terms),
                    ..SylvesterConfig::default()
                };
                Ok(Box::new(Sylvester::with_config(
                    c,
                    (h, w),
                    sylvester,
                    dtype,
                    device,
                    gen,
                )?) as Box<dyn Flow>)
            },
        ));
    }
    if config.model_type == ModelType::ResidualFlow {
        let hidden = residual_hidden(config);
        glow.mixing = None;
        glow.transform = Some(Arc::new(
            move |[c, h, w]: [usize; 3], gen: &mut Generator| {
                let residual = ResidualConfig {
                    hidden,
                    ..ResidualConfig::default()
                };
                Ok(Box::new(ResidualBlock::image(
                    (c, h, w),
                    residual,
                    dtype,
                    device,
                    gen,
                )?) as Box<dyn Flow>)
            },
        ));
    }
    glow
}

/// The hidden width of a residual flow's blocks.
pub(crate) fn residual_hidden(config: &TrainConfig) -> usize {
    if config.n_intermediate_channels > 0 {
        config.n_intermediate_channels
    } else {
        config.hidden_channels
    }
}

/// A flow over dequantised images and its dequantiser.
pub struct Model {
    pub distribution: FlowDistribution,
    pub dequantizer: Option<VariationalDequantizer>,
    /// Per-image `(C, H, W)`.
    pub shape: [usize; 3],
    pub n_bits: u32,
    /// Where the parameters live.
    pub device: Device,
}

impl Model {
    /// The model of `config` for images of `shape`, initialised from `gen`.
    pub fn new(
        config: &TrainConfig,
        shape: [usize; 3],
        device: Device,
        gen: &mut Generator,
    ) -> Result<Self> {
        let glow = Glow::new(
            glow_config(config, DTYPE, device),
            shape,
            DTYPE,
            device,
            gen,
        )?;
        let d = glow.latent_size();
        let dequantizer = match config.dequantize {
            Dequantize::Uniform => None,
            Dequantize::Flow => Some(VariationalDequantizer::new(
                shape,
                config.n_bits,
                32,
                4,
                DTYPE,
                device,
                gen,
            )?),
        };
        Ok(Model {
            distribution: FlowDistribution::new(
                Box::new(glow),
                Box::new(StandardNormal::new(&[d], DTYPE, device)),
            ),
            dequantizer,
            shape,
            n_bits: config.n_bits,
            device,
        })
    }

    /// Values per image `D`.
    pub fn dims(&self) -> usize {
        self.shape.iter().product()
    }

    /// Trainable parameters: the flow's (`flow.*`, `base.*`) and the dequantiser's (`dequant.*`).
    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut all = self.distribution.parameters();
        if let Some(dq) = &self.dequantizer {
            all.extend(prefixed("dequant", dq.parameters()));
        }
        all
    }

    /// Buffers (ActNorm flags, power-iteration vectors, ...).
    pub fn buffers(&self) -> Vec<(String, Tensor)> {
        self.distribution.buffers()
    }

    pub fn set_training(&self, training: bool) {
        self.distribution.flow.set_training(training);
    }

    /// `y = (x + u) / 2^n - 1/2`.
    pub fn to_continuous(&self, x: &Tensor, u: &Tensor) -> Result<Tensor> {
        x.add(u)?.div_scalar(self.levels())?.add_scalar(-0.5)
    }

    /// `2^n_bits`.
    pub fn levels(&self) -> f64 {
        f64::from(1u32 << self.n_bits)
    }

    /// One draw of the dequantisation noise and its `log q(u | x)` (0 for
    /// uniform), for the images `x` at `rows` of a batch of `batch`: the
    /// noise is drawn for the whole batch and these rows kept, so that the
    /// ranks of a data-parallel step draw what one process would.
    fn dequantize(
        &self,
        x: &Tensor,
        gen: &mut Generator,
        (rows, batch): (Range<usize>, usize),
    ) -> Result<(Tensor, Option<Tensor>)> {
        let mut shape = x.shape().to_vec();
        shape[0] = batch;
        let whole = rows == (0..batch);
        let keep = |noise: Tensor| -> Result<Tensor> {
            if whole {
                Ok(noise)
            } else {
                noise.narrow(0, rows.start, rows.len())?.contiguous()
            }
        };
        match &self.dequantizer {
            None => Ok((keep(uniform_noise(&shape, x, gen)?)?, None)),
            Some(dq) => {
                let eps = keep(dq.noise(&shape, x, gen)?)?;
                let (u, log_q) = dq.transform(x, &eps)?;
                Ok((u, Some(log_q)))
            }
        }
    }

    /// The per-image lower bound on `log P(x)` in nats for integer-valued
    /// `x (N, C, H, W)` with one dequantisation draw:
    /// `log p(y) - log q(u | x) - D ln 2^n`.
    pub fn elbo(&self, x: &Tensor, gen: &mut Generator) -> Result<Tensor> {
        let n = x.shape()[0];
        self.elbo_of_rows(x, gen, (0..n, n))
    }

    /// [`Model::elbo`] of the images `x` at `rows` of a batch of `batch`
    /// (one rank's shard), with the noise one process would draw for them.
    pub fn elbo_of_rows(
        &self,
        x: &Tensor,
        gen: &mut Generator,
        (rows, batch): (Range<usize>, usize),
    ) -> Result<Tensor> {
        if rows.len() != x.shape()[0] || rows.end > batch {
            return Err(flowtensor::Error::shape(
                "elbo_of_rows",
                &[x.shape()],
                format!("rows {rows:?} of a batch of {batch} do not match the images"),
            ));
        }
        let (y, log_q) = profile::scope("dequantization", || {
            let (u, log_q) = self.dequantize(x, gen, (rows, batch))?;
            Ok::<_, flowtensor::Error>((self.to_continuous(x, &u)?, log_q))
        })?;
        let mut ll = self.distribution.log_prob(&y)?;
        if let Some(log_q) = log_q {
            ll = ll.sub(&log_q)?;
        }
        ll.add_scalar(-(self.dims() as f64) * self.levels().ln())
    }

    /// The importance-weighted bound with `k` draws:
    /// `log (1/k) sum_i exp(log p(y_i) - log q(u_i | x)) - D ln 2^n` (no gradients).
    pub fn iw_bound(&self, x: &Tensor, k: usize, gen: &mut Generator) -> Result<Tensor> {
        no_grad(|| {
            let draws = (0..k)
                .map(|_| self.elbo(x, gen))
                .collect::<Result<Vec<_>>>()?;
            let stacked =
                Tensor::stack(&draws.iter().collect::<Vec<_>>(), 1)?.to_dtype(DType::F64)?;
            stacked.logsumexp(&[1], false)?.add_scalar(-(k as f64).ln())
        })
    }

    /// Bits per dimension of a log-likelihood (bound) in nats per image.
    pub fn bpd(&self, log_likelihood: f64) -> f64 {
        -log_likelihood / (self.dims() as f64 * std::f64::consts::LN_2)
    }

    /// Integer-valued images from continuous `y` (the inverse of the dequantisation's scaling, floored and clipped).
    pub fn to_discrete(&self, y: &Tensor) -> Result<Vec<u8>> {
        let levels = self.levels();
        let shift = 8 - self.n_bits;
        Ok(y.to_vec_f64()?
            .into_iter()
            .map(|v| {
                let level = ((v + 0.5) * levels).floor().clamp(0.0, levels - 1.0) as u8;
                // back to the 8-bit range for display
                level << shift
            })
            .collect())
    }
}
