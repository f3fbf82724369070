//! The convolution exponential layer (Hoogeboom, Garcia Satorras, Tomczak and
//! Welling, "The Convolution Exponential and Generalized Sylvester Flows",
//! 2020) and the spectral normalisation of its convolution.
//!
//! [`ConvExp`] maps `x (N, C, H, W)` to
//!
//! ```text
//! z = exp(M_hat) (W x) + b,
//! ```
//!
//! with `W` an invertible 1x1 convolution ([`Conv1x1`]), `M_hat` the
//! same-padded stride-1 convolution with the spectrally normalised kernel
//! `K_hat = K / max(1, sigma(K) / coeff)` ([`SpectralNorm`]), and `b` a
//! per-channel bias. The exponential is the power series of
//! [`flowtensor::conv_exp::conv_exp`]; its log-determinant is exactly
//! `trace(M_hat) = H W sum_c K_hat[c, c, k/2, k/2]`.

use crate::flow::{parameter, prefixed, Flow};
use crate::layers::conv1x1::{Conv1x1, Conv1x1Lu};
use crate::layers::spectral_norm::{check_image, SpectralNorm};
use flowtensor::conv_exp::{conv_exp, conv_exp_inverse, conv_exp_logdet, Terms};
use flowtensor::{DType, Device, Error, Generator, Result, Tensor};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Options of [`ConvExp`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ConvExpConfig {
    /// The odd spatial size `k` of the convolution kernel (default 3).
    pub kernel_size: usize,
    /// The bound on the spectral norm of the convolution (default 0.95).
    pub coeff: f64,
    /// Series terms of the forward in training mode (default `Fixed(6)`).
    pub train_terms: Terms,
    /// Series terms of the forward in evaluation mode and of every inverse
    /// (default `Fixed(13)`).
    pub eval_terms: Terms,
    /// The invertible 1x1 convolution in front of the exponential (default
    /// [`OneByOne::Plain`]).
    pub one_by_one: OneByOne,
}

/// The 1x1 convolution of a [`ConvExp`] layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OneByOne {
    /// [`Conv1x1`]: a free `C x C` matrix (the paper's layer).
    Plain,
    /// [`Conv1x1Lu`]: LU-parametrised (Glow's, used by `glow-mnist-ref`).
    Lu,
    /// None: the layer is the exponential and the bias only.
    None,
}

impl Default for ConvExpConfig {
    fn default() -> Self {
        ConvExpConfig {
            kernel_size: 3,
            coeff: 0.95,
            train_terms: Terms::Fixed(6),
            eval_terms: Terms::Fixed(13),
            one_by_one: OneByOne::Plain,
        }
    }
}

/// The convolution-exponential mixing layer: an invertible 1x1 convolution
/// ([`ConvExpConfig::one_by_one`]: plain, LU or none), then the convolution exponential of a spectrally normalised `k x k`
/// convolution, then a per-channel bias.
///
/// On `x (N, C, H, W)` (with the `H x W` given at construction, which the
/// spectral normalisation's vector is shaped for):
/// - forward: `y = W x` ([`Conv1x1`], parameters `conv1x1.*`),
///   `z = exp(M_hat) y + b`, where `M_hat` is the same-padded convolution
///   with `K_hat = K / max(1, sigma(K) / coeff)` ([`SpectralNorm`]; parameter
///   `kernel` `(C, C, k, k)`) and `b` the parameter `bias` `(1, C, 1, 1)`,
///   added after the exponential (so the exponential stays linear and its
///   log-det is unaffected);
/// - log-det per sample: `H W log |det W| + trace(M_hat)` with
///   `trace(M_hat) = H W sum_c K_hat[c, c, k/2, k/2]`
///   ([`conv_exp_logdet`]) — the exact log-det of `exp(M_hat)`, which the
///   truncated series approaches as the number of terms grows;
/// - inverse: `y = exp(-M_hat) (z - b)` ([`conv_exp_inverse`]) with the
///   *evaluation* terms whatever the mode (so inversion is as accurate as
///   evaluation; use enough terms or [`Terms::Adaptive`] with a small
///   tolerance for exact round trips), then `x = W^{-1} y`.
///
/// `exp(M)` for `||M||_2 <= coeff < 1` converges fast: the `n`-th term is at
/// most `coeff^n / n!` times the input. Training uses `train_terms`
/// (`Fixed(6)`, the paper's) and, in whichever direction runs, one
/// power-iteration step per new kernel (so `Inverse(ConvExp)` trains under
/// the same bound); the first use in any mode runs the iteration to
/// convergence ([`SpectralNorm`]). Evaluation uses `eval_terms`
/// (`Fixed(13)`) and no power step, so the normalised kernel is then a
/// deterministic function of `K`. Both term counts must be at least one: the
/// log-det `trace(M_hat)` is that of `exp(M_hat)`, which zero terms (the
/// identity) do not approach.
///
/// The kernel is initialised as `randn / (C k k)` and the bias at zero.
/// Parameters: `conv1x1.weight`, `kernel`, `bias`; buffers: the 1x1's (none),
/// `spectral_norm.u`, `spectral_norm.sigma` and `spectral_norm.kernel_hash`.
pub struct ConvExp {
    channels: usize,
    height: usize,
    width: usize,
    config: ConvExpConfig,
    conv1x1: Option<Box<dyn Flow>>,
    kernel: Tensor,
    bias: Tensor,
    spectral_norm: SpectralNorm,
    training: AtomicBool,
    terms_used: AtomicUsize,
}

impl ConvExp {
    /// A layer over `channels` channels for `(height, width)` images with the
    /// default [`ConvExpConfig`]; the 1x1 weight, then the kernel, then the
    /// power-iteration vector are drawn from `gen`.
    pub fn new(
        channels: usize,
        size: (usize, usize),
        dtype: DType,
        device: Device,
        gen: &mut Generator,
    ) -> Result<Self> {
        Self::with_config(channels, size, ConvExpConfig::default(), dtype, device, gen)
    }

    /// A layer with the given options (see [`ConvExp::new`]).
    pub fn with_config(
        channels: usize,
        (height, width): (usize, usize),
        config: ConvExpConfig,
        dtype: DType,
        device: Device,
        gen: &mut Generator,
    ) -> Result<Self> {
        for terms in [config.train_terms, config.eval_terms] {
            if terms == Terms::Fixed(0) {
                return Err(Error::invalid(
                    "ConvExp",
                    "the series needs at least one term (zero terms are the identity, whose log-det is not trace(M))",
                ));
            }
            if let Terms::Adaptive { tol, .. } = terms {
                if tol.is_nan() || tol < 0.0 {
                    return Err(Error::invalid(
                        "ConvExp",
                        format!("the adaptive tolerance must be non-negative, got {tol}"),
                    ));
                }
            }
        }
        let conv1x1: Option<Box<dyn Flow>> = match config.one_by_one {
            OneByOne::Plain => Some(Box::new(Conv1x1::new(channels, dtype, device, gen)?)),
            OneByOne::Lu => Some(Box::new(Conv1x1Lu::new(channels, dtype, device, gen)?)),
            OneByOne::None => None,
        };
        let k = config.kernel_size;
        if k.is_multiple_of(2) {
            return Err(Error::invalid(
                "ConvExp",
                format!("the kernel size k = {k} must be odd"),
            ));
        }
        let kernel = gen
            .randn(&[channels, channels, k, k], DType::F64, Device::Cpu)?
            .div_scalar((channels * k * k) as f64)?
            .to_dtype(dtype)?
            .to_device(device)?;
        let spectral_norm = SpectralNorm::new(
            (channels, channels),
            k,
            (height, width),
            config.coeff,
            dtype,
            device,
            gen,
        )?;
        Ok(ConvExp {
            channels,
            height,
            width,
            config,
            conv1x1,
            kernel: parameter(kernel)?,
            bias: parameter(Tensor::zeros(&[1, channels, 1, 1], dtype, device)?)?,
            spectral_norm,
            training: AtomicBool::new(true),
            terms_used: AtomicUsize::new(0),
        })
    }

    /// The options the layer was built with.
    pub fn config(&self) -> ConvExpConfig {
        self.config
    }

    /// The spectral normalisation (its vector and last `sigma`).
    pub fn spectral_norm(&self) -> &SpectralNorm {
        &self.spectral_norm
    }

    /// The number of series terms the last forward or inverse used (the
    /// most any sample used, with adaptive terms).
    pub fn last_terms_used(&self) -> usize {
        self.terms_used.load(Ordering::Relaxed)
    }

    fn record_terms(&self, per_sample: &[usize]) {
        let most = per_sample.iter().copied().max().unwrap_or(0);
        self.terms_used.store(most, Ordering::Relaxed);
    }

    /// `K_hat` as the current mode would use it, without taking a power step.
    pub fn normalized_kernel(&self) -> Result<Tensor> {
        self.spectral_norm.normalize(&self.kernel, false)
    }

    fn is_training(&self) -> bool {
        self.training.load(Ordering::Relaxed)
    }

    fn check(&self, x: &Tensor) -> Result<()> {
        check_image(
            "ConvExp",
            x,
            self.channels,
            (self.height, self.width),
            self.kernel.dtype(),
        )
    }

    /// `trace(M_hat)` broadcast to the batch of `x`, shape `[N]`.
    fn exp_logdet(&self, kernel: &Tensor, batch: usize) -> Result<Tensor> {
        conv_exp_logdet(kernel, self.height, self.width)?
            .broadcast_as(&[batch])?
            .contiguous()
    }
}

impl Flow for ConvExp {
    fn name(&self) -> &'static str {
        "ConvExp"
    }

    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        self.check(x)?;
        let training = self.is_training();
        let kernel = self.spectral_norm.normalize(&self.kernel, training)?;
        let terms = if training {
            self.config.train_terms
        } else {
            self.config.eval_terms
        };
        let exp_logdet = self.exp_logdet(&kernel, x.shape()[0])?;
        let (y, logdet) = match &self.conv1x1 {
            Some(conv1x1) => {
                let (y, logdet_1x1) = conv1x1.forward(x)?;
                (y, logdet_1x1.add(&exp_logdet)?)
            }
            None => (x.clone(), exp_logdet),
        };
        let (z, used) = conv_exp(&y, &kernel, terms)?;
        self.record_terms(&used);
        Ok((z.add(&self.bias)?, logdet))
    }

    fn inverse(&self, z: &Tensor) -> Result<Tensor> {
        self.check(z)?;
        let kernel = self
            .spectral_norm
            .normalize(&self.kernel, self.is_training())?;
        let (y, used) = conv_exp_inverse(&z.sub(&self.bias)?, &kernel, self.config.eval_terms)?;
        self.record_terms(&used);
        match &self.conv1x1 {
            Some(conv1x1) => conv1x1.inverse(&y),
            None => Ok(y),
        }
    }

    fn inverse_with_logdet(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        self.check(z)?;
        let kernel = self
            .spectral_norm
            .normalize(&self.kernel, self.is_training())?;
        let (y, used) = conv_exp_inverse(&z.sub(&self.bias)?, &kernel, self.config.eval_terms)?;
        self.record_terms(&used);
        let exp_logdet = self.exp_logdet(&kernel, z.shape()[0])?;
        match &self.conv1x1 {
            Some(conv1x1) => {
                let (x, logdet_1x1) = conv1x1.inverse_with_logdet(&y)?;
                Ok((x, logdet_1x1.sub(&exp_logdet)?))
            }
            None => Ok((y, exp_logdet.neg()?)),
        }
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut params = self
            .conv1x1
            .as_ref()
            .map_or_else(Vec::new, |c| prefixed("conv1x1", c.parameters()));
        params.push(("kernel".into(), self.kernel.clone()));
        params.push(("bias".into(), self.bias.clone()));
        params
    }

    fn buffers(&self) -> Vec<(String, Tensor)> {
        let mut buffers = self
            .conv1x1
            .as_ref()
            .map_or_else(Vec::new, |c| prefixed("conv1x1", c.buffers()));
        buffers.extend(prefixed("spectral_norm", self.spectral_norm.buffers()));
        buffers
    }

    fn set_training(&self, training: bool) {
        self.training.store(training, Ordering::Relaxed);
        if let Some(conv1x1) = &self.conv1x1 {
            conv1x1.set_training(training);
        }
    }
}
