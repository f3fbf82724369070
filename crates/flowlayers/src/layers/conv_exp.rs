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
use crate::layers::conv1x1::Conv1x1;
use flowtensor::conv_exp::{conv_exp, conv_exp_inverse, conv_exp_logdet, Terms};
use flowtensor::{
    no_grad, Conv2dParams, ConvTranspose2dParams, DType, Device, Error, Generator, Result, Tensor,
};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// `t / max(||t||_2, 1e-30)` (all entries): the floor (representable in f32
/// too) keeps a zero vector finite.
fn normalized(t: &Tensor) -> Result<Tensor> {
    let norm = t.square()?.sum_all()?.sqrt()?.clamp(1e-30, f64::INFINITY)?;
    t.div(&norm)
}

/// Checks the sizes of a layer built for `(channels, height, width)` images.
pub(crate) fn check_image_size(
    layer: &'static str,
    channels: usize,
    (height, width): (usize, usize),
) -> Result<()> {
    if channels == 0 || height == 0 || width == 0 {
        return Err(Error::invalid(
            layer,
            format!("needs non-empty images, got C = {channels}, H = {height}, W = {width}"),
        ));
    }
    Ok(())
}

/// Checks that `x` is `(batch, channels, height, width)`.
pub(crate) fn check_image(
    layer: &'static str,
    x: &Tensor,
    channels: usize,
    (height, width): (usize, usize),
) -> Result<()> {
    let s = x.shape();
    if s.len() != 4 || s[1] != channels || s[2] != height || s[3] != width {
        return Err(Error::shape(
            layer,
            &[s],
            format!("expected (batch, {channels}, {height}, {width})"),
        ));
    }
    Ok(())
}

/// Spectral normalisation of a same-padded stride-1 convolution `M` with a
/// `(C, C, k, k)` kernel `K` (`k` odd), seen as a linear map on `(C, H, W)`
/// images (Miyato, Kataoka, Koyama and Yoshida, 2018, applied to the whole
/// convolution operator rather than to the reshaped kernel).
///
/// Keeps a persistent unit vector `u` of shape `(1, C, H, W)` (buffer `u`,
/// drawn from a [`Generator`] and normalised). One power-iteration step
/// ([`SpectralNorm::power_step`]) is
///
/// ```text
/// v = M u / ||M u||,        u <- M^T v / ||M^T v||,
/// ```
///
/// where `M^T` is `conv_transpose2d` with the same kernel and padding `k/2`
/// (the exact adjoint of `M`). It runs without gradient: `u` is a constant.
/// The estimate of the largest singular value is
///
/// ```text
/// sigma(K) = ||M u||_2      (u the current, detached unit iterate),
/// ```
///
/// which is differentiable in `K` (as in Miyato et al.), a lower bound of
/// `||M||_2` for any unit `u`, and converges to it as `u` converges to the top
/// right singular vector. The normalised kernel is
///
/// ```text
/// K_hat = K / max(1, sigma(K) / coeff),
/// ```
///
/// so `||M_hat||_2 ~ min(sigma, coeff)` (`coeff = 0.95` in [`ConvExp`]'s
/// default). The last `sigma` computed is kept as the buffer `sigma`.
pub struct SpectralNorm {
    channels: usize,
    kernel_size: usize,
    height: usize,
    width: usize,
    coeff: f64,
    u: Tensor,
    sigma: Tensor,
}

impl SpectralNorm {
    /// Spectral normalisation for `(channels, channels, kernel_size, kernel_size)`
    /// kernels on `(height, width)` images with bound `coeff > 0`; `u` is a
    /// standard Gaussian `(1, C, H, W)` draw from `gen` (in f64, then cast),
    /// normalised to unit length. `sigma` starts at 0.
    pub fn new(
        channels: usize,
        kernel_size: usize,
        (height, width): (usize, usize),
        coeff: f64,
        dtype: DType,
        device: Device,
        gen: &mut Generator,
    ) -> Result<Self> {
        check_image_size("SpectralNorm", channels, (height, width))?;
        if kernel_size.is_multiple_of(2) {
            return Err(Error::invalid(
                "SpectralNorm",
                format!("the kernel size k = {kernel_size} must be odd"),
            ));
        }
        if coeff.is_nan() || coeff <= 0.0 {
            return Err(Error::invalid(
                "SpectralNorm",
                format!("the bound coeff must be positive, got {coeff}"),
            ));
        }
        let u = gen.randn(&[1, channels, height, width], DType::F64, Device::Cpu)?;
        let u = normalized(&u)?
            .to_dtype(dtype)?
            .to_device(device)?
            .contiguous()?
            .detach();
        Ok(SpectralNorm {
            channels,
            kernel_size,
            height,
            width,
            coeff,
            u,
            sigma: Tensor::zeros(&[], dtype, device)?,
        })
    }

    /// The bound `coeff` on the normalised operator norm.
    pub fn coeff(&self) -> f64 {
        self.coeff
    }

    /// The image size `(H, W)` the vector `u` is shaped for.
    pub fn size(&self) -> (usize, usize) {
        (self.height, self.width)
    }

    /// The current power-iteration vector `u` `(1, C, H, W)` (the buffer itself).
    pub fn vector(&self) -> Tensor {
        self.u.clone()
    }

    /// The last `sigma` estimate computed (0 before the first).
    pub fn last_sigma(&self) -> Result<f64> {
        self.sigma.to_scalar()
    }

    /// The buffers `u` and `sigma`.
    pub fn buffers(&self) -> Vec<(String, Tensor)> {
        vec![
            ("u".into(), self.u.clone()),
            ("sigma".into(), self.sigma.clone()),
        ]
    }

    fn check_kernel(&self, kernel: &Tensor) -> Result<()> {
        let (c, k) = (self.channels, self.kernel_size);
        if kernel.shape() != [c, c, k, k] {
            return Err(Error::shape(
                "SpectralNorm",
                &[kernel.shape()],
                format!("expected a ({c}, {c}, {k}, {k}) kernel"),
            ));
        }
        Ok(())
    }

    /// `M u` for `u (N, C, H, W)`.
    fn apply(&self, u: &Tensor, kernel: &Tensor) -> Result<Tensor> {
        u.conv2d(kernel, None, &Conv2dParams::same(self.kernel_size))
    }

    /// `M^T v`: the adjoint of [`Self::apply`] (same kernel, padding `k/2`).
    fn apply_adjoint(&self, v: &Tensor, kernel: &Tensor) -> Result<Tensor> {
        let p = self.kernel_size / 2;
        v.conv_transpose2d(
            kernel,
            None,
            &ConvTranspose2dParams {
                padding: (p, p),
                ..Default::default()
            },
        )
    }

    /// One power-iteration step `v = M u / ||M u||`, `u <- M^T v / ||M^T v||`,
    /// without gradient; updates the buffer `u` in place.
    pub fn power_step(&self, kernel: &Tensor) -> Result<()> {
        self.check_kernel(kernel)?;
        no_grad(|| {
            let kernel = kernel.detach();
            let v = normalized(&self.apply(&self.u, &kernel)?)?;
            let u = normalized(&self.apply_adjoint(&v, &kernel)?)?;
            self.u.set_data(&u.contiguous()?)
        })
    }

    /// `sigma(K) = ||M u||_2` with the stored (detached) `u`, a rank-0 tensor
    /// differentiable in `kernel`; also stored (detached) as the buffer `sigma`.
    pub fn sigma(&self, kernel: &Tensor) -> Result<Tensor> {
        self.check_kernel(kernel)?;
        let sigma = self
            .apply(&self.u.detach(), kernel)?
            .square()?
            .sum_all()?
            .sqrt()?;
        no_grad(|| self.sigma.set_data(&sigma.detach()))?;
        Ok(sigma)
    }

    /// `K_hat = K / max(1, sigma(K) / coeff)`, differentiable in `kernel`
    /// (through `sigma` too when the bound is active). With `step`, one
    /// [`Self::power_step`] runs first (training); without, the stored `u`
    /// is used as is (evaluation), so the result is a deterministic function
    /// of `kernel`.
    pub fn normalize(&self, kernel: &Tensor, step: bool) -> Result<Tensor> {
        if step {
            self.power_step(kernel)?;
        }
        let factor = self
            .sigma(kernel)?
            .div_scalar(self.coeff)?
            .clamp(1.0, f64::INFINITY)?;
        kernel.div(&factor)
    }
}

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
}

impl Default for ConvExpConfig {
    fn default() -> Self {
        ConvExpConfig {
            kernel_size: 3,
            coeff: 0.95,
            train_terms: Terms::Fixed(6),
            eval_terms: Terms::Fixed(13),
        }
    }
}

/// The convolution-exponential mixing layer: an invertible 1x1 convolution,
/// then the convolution exponential of a spectrally normalised `k x k`
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
/// (`Fixed(6)`, the paper's) and takes one power-iteration step per forward;
/// evaluation uses `eval_terms` (`Fixed(13)`) and no power step, so the
/// normalised kernel is then a deterministic function of `K`.
///
/// The kernel is initialised as `randn / (C k k)` and the bias at zero.
/// Parameters: `conv1x1.weight`, `kernel`, `bias`; buffers: the 1x1's (none),
/// `spectral_norm.u` and `spectral_norm.sigma`.
pub struct ConvExp {
    channels: usize,
    height: usize,
    width: usize,
    config: ConvExpConfig,
    conv1x1: Conv1x1,
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
            if let Terms::Adaptive { tol, .. } = terms {
                if tol.is_nan() || tol < 0.0 {
                    return Err(Error::invalid(
                        "ConvExp",
                        format!("the adaptive tolerance must be non-negative, got {tol}"),
                    ));
                }
            }
        }
        let conv1x1 = Conv1x1::new(channels, dtype, device, gen)?;
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
            channels,
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
        check_image("ConvExp", x, self.channels, (self.height, self.width))
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
        let (y, logdet_1x1) = self.conv1x1.forward(x)?;
        let (z, used) = conv_exp(&y, &kernel, terms)?;
        self.record_terms(&used);
        let z = z.add(&self.bias)?;
        let logdet = logdet_1x1.add(&self.exp_logdet(&kernel, x.shape()[0])?)?;
        Ok((z, logdet))
    }

    fn inverse(&self, z: &Tensor) -> Result<Tensor> {
        self.check(z)?;
        let kernel = self.spectral_norm.normalize(&self.kernel, false)?;
        let (y, used) = conv_exp_inverse(&z.sub(&self.bias)?, &kernel, self.config.eval_terms)?;
        self.record_terms(&used);
        self.conv1x1.inverse(&y)
    }

    fn inverse_with_logdet(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        self.check(z)?;
        let kernel = self.spectral_norm.normalize(&self.kernel, false)?;
        let (y, used) = conv_exp_inverse(&z.sub(&self.bias)?, &kernel, self.config.eval_terms)?;
        self.record_terms(&used);
        let (x, logdet_1x1) = self.conv1x1.inverse_with_logdet(&y)?;
        let logdet = logdet_1x1.sub(&self.exp_logdet(&kernel, z.shape()[0])?)?;
        Ok((x, logdet))
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut params = prefixed("conv1x1", self.conv1x1.parameters());
        params.push(("kernel".into(), self.kernel.clone()));
        params.push(("bias".into(), self.bias.clone()));
        params
    }

    fn buffers(&self) -> Vec<(String, Tensor)> {
        let mut buffers = prefixed("conv1x1", self.conv1x1.buffers());
        buffers.extend(prefixed("spectral_norm", self.spectral_norm.buffers()));
        buffers
    }

    fn set_training(&self, training: bool) {
        self.training.store(training, Ordering::Relaxed);
        self.conv1x1.set_training(training);
    }
}
