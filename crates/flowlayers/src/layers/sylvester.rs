//! The generalized (convolutional) Sylvester flow (Hoogeboom, Garcia Satorras,
//! Tomczak and Welling, "The Convolution Exponential and Generalized
//! Sylvester Flows", 2020).
//!
//! [`Sylvester`] maps `x (N, C, H, W)` to
//!
//! ```text
//! z = x + Q^T exp(-M) f_AR(exp(M) Q x),
//! ```
//!
//! with `Q` an orthogonal 1x1 convolution (a product of Householder
//! reflections `H_i = I - 2 v_i v_i^T / (v_i^T v_i)`), `exp(M)` the
//! convolution exponential of a spectrally normalised `k x k` convolution
//! ([`SpectralNorm`], [`conv_exp`]) and `f_AR` an autoregressive map
//!
//! ```text
//! f_AR(u) = s2 * tanh(s1 * u + t1) + t2,
//! s1 = tanh(s1pre),   s2 = tanh(s2pre) / 2,
//! (s1pre, s2pre, t1, t2) = MaskedConv3x3(u) + b,
//! ```
//!
//! whose Jacobian is lower triangular in the raster-then-channel order
//! `ord(c, (i, j)) = (i W + j) C + c` with diagonal
//! `d = s2 s1 (1 - tanh^2(s1 u + t1))`, `|d| <= 1/2`. The layer's Jacobian
//! `I + (Q^T exp(-M)) J_AR (exp(M) Q)` is similar to `I + J_AR`, so
//!
//! ```text
//! log |det dz/dx| = sum log(1 + d)     (d evaluated at u = exp(M) Q x).
//! ```

use crate::flow::{parameter, Flow};
use crate::layers::conv1x1::{householder_product, mix_channels};
use crate::layers::conv_exp::{check_image, check_image_size, SpectralNorm};
use flowtensor::conv_exp::{conv_exp, conv_exp_inverse, Terms};
use flowtensor::{Conv2dParams, DType, Device, Error, Generator, Result, Tensor};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

const NAME: &str = "Sylvester";

/// Options of [`Sylvester`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SylvesterConfig {
    /// `true`: `z = x + Q^T exp(-M) f_AR(exp(M) Q x)`; `false` (ablation):
    /// `z = x + f_AR(x)` (no Householder vectors and no kernel).
    pub use_basis_change: bool,
    /// Number of Householder reflections in `Q` (at least 1; default 2).
    pub reflections: usize,
    /// The odd spatial size of the convolution-exponential kernel (default 3).
    pub kernel_size: usize,
    /// The bound on the spectral norm of `M` (default 0.95).
    pub coeff: f64,
    /// Series terms of `exp(M)` in training mode (default `Fixed(6)`).
    pub train_terms: Terms,
    /// Series terms in evaluation mode and of every inverse (default `Fixed(13)`).
    pub eval_terms: Terms,
    /// The fixed-point iteration stops once `max |y_{k+1} - y_k| < tol`
    /// (default `1e-12`).
    pub tol: f64,
    /// The most fixed-point iterations before the inverse fails (default 200).
    pub max_iterations: usize,
}

impl Default for SylvesterConfig {
    fn default() -> Self {
        SylvesterConfig {
            use_basis_change: true,
            reflections: 2,
            kernel_size: 3,
            coeff: 0.95,
            train_terms: Terms::Fixed(6),
            eval_terms: Terms::Fixed(13),
            tol: 1e-12,
            max_iterations: 200,
        }
    }
}

/// The strict autoregressive mask `(4C, C, 3, 3)` of the conditioner: output
/// channel `o` (group `o / C`, channel `c = o % C`) sees input channel `c'`
/// at tap `(a, b)` (offset `(a - 1, b - 1)`) iff the tap is at an earlier
/// raster pixel (`a = 0`, or `a = 1` and `b = 0`), or it is the centre tap
/// and `c' < c`. The dependence of `(c, p)` on `(c, p)` itself is excluded.
pub fn autoregressive_mask(channels: usize, dtype: DType, device: Device) -> Result<Tensor> {
    let c = channels;
    let mut m = vec![0.0f64; 4 * c * c * 9];
    for o in 0..4 * c {
        for ci in 0..c {
            for a in 0..3 {
                for b in 0..3 {
                    let allowed = a == 0 || (a == 1 && b == 0) || (a == 1 && b == 1 && ci < o % c);
                    if allowed {
                        m[((o * c + ci) * 3 + a) * 3 + b] = 1.0;
                    }
                }
            }
        }
    }
    Tensor::from_vec(m, &[4 * c, c, 3, 3], Device::Cpu)?
        .to_dtype(dtype)?
        .to_device(device)
}

/// The generalized Sylvester flow `z = x + Q^T exp(-M) f_AR(exp(M) Q x)`.
///
/// - `Q = H_1 ... H_k`, `H_i = I - 2 v_i v_i^T / (v_i^T v_i)` (parameter
///   `householder` `(k, C)`), applied as a 1x1 convolution; `Q^{-1} = Q^T`.
/// - `exp(M)`: `M` the same-padded convolution with the kernel
///   `K_hat = K / max(1, sigma(K) / coeff)` (parameter `kernel` `(C, C, k, k)`,
///   buffers `spectral_norm.u`, `spectral_norm.sigma`); `exp(-M)` is its exact
///   inverse, so only the truncation of the series (see [`SylvesterConfig`])
///   separates the two.
/// - `f_AR`: one strictly masked 3x3 convolution `C -> 4C` (parameter
///   `ar_weight` `(4C, C, 3, 3)`, times the buffer `ar_mask` from
///   [`autoregressive_mask`]) plus the per-channel bias `ar_bias`
///   `(1, 4C, 1, 1)`, giving `(s1pre, s2pre, t1, t2)` (in that channel
///   order); then `f_AR(u) = s2 tanh(s1 u + t1) + t2` with `s1 = tanh(s1pre)`,
///   `s2 = tanh(s2pre) / 2`. A single strict layer is the simplest choice that
///   keeps every output strictly autoregressive (MADE-style hidden layers
///   would add capacity but not change the structure).
/// - log-det per sample: `sum log(1 + s2 s1 (1 - tanh^2(s1 u + t1)))`, each
///   term `> log(1/2)`.
/// - inverse: `r = exp(M) Q z`, then `y_{k+1} = r - f_AR(y_k)` from `y_0 = r`
///   until `max |y_{k+1} - y_k| < tol` (the map's Jacobian `-J_AR` is
///   triangular with diagonal at most `1/2` in magnitude, so it is locally a
///   contraction in a suitable norm), then `x = Q^T exp(-M) y`; the iteration
///   count is [`Sylvester::last_iterations`]. Inverses use the evaluation
///   terms and no power-iteration step.
///
/// Training mode (the default) takes one power-iteration step per forward and
/// sums `train_terms`; evaluation takes none and sums `eval_terms`.
pub struct Sylvester {
    channels: usize,
    height: usize,
    width: usize,
    config: SylvesterConfig,
    householder: Option<Tensor>,
    kernel: Option<Tensor>,
    spectral_norm: Option<SpectralNorm>,
    ar_weight: Tensor,
    ar_bias: Tensor,
    ar_mask: Tensor,
    training: AtomicBool,
    iterations: AtomicUsize,
}

impl Sylvester {
    /// A layer over `channels` channels of `(height, width)` images with the
    /// default [`SylvesterConfig`].
    pub fn new(
        channels: usize,
        size: (usize, usize),
        dtype: DType,
        device: Device,
        gen: &mut Generator,
    ) -> Result<Self> {
        Self::with_config(
            channels,
            size,
            SylvesterConfig::default(),
            dtype,
            device,
            gen,
        )
    }

    /// A layer with the given options. Draws (from `gen`, in f64) the
    /// Householder vectors `randn`, the kernel `randn / (C k k)`, the
    /// power-iteration vector, then the conditioner weight
    /// `0.1 randn / sqrt(9 C)`; the conditioner bias starts at zero.
    pub fn with_config(
        channels: usize,
        (height, width): (usize, usize),
        config: SylvesterConfig,
        dtype: DType,
        device: Device,
        gen: &mut Generator,
    ) -> Result<Self> {
        check_image_size(NAME, channels, (height, width))?;
        if config.tol.is_nan() || config.tol < 0.0 {
            return Err(Error::invalid(
                NAME,
                format!(
                    "the fixed-point tolerance must be non-negative, got {}",
                    config.tol
                ),
            ));
        }
        let place = |t: Tensor| -> Result<Tensor> { t.to_dtype(dtype)?.to_device(device) };
        let (householder, kernel, spectral_norm) = if config.use_basis_change {
            if config.reflections == 0 {
                return Err(Error::invalid(
                    NAME,
                    "needs at least one Householder reflection",
                ));
            }
            let k = config.kernel_size;
            if k.is_multiple_of(2) {
                return Err(Error::invalid(
                    NAME,
                    format!("the kernel size k = {k} must be odd"),
                ));
            }
            let v = gen.randn(&[config.reflections, channels], DType::F64, Device::Cpu)?;
            let kernel = gen
                .randn(&[channels, channels, k, k], DType::F64, Device::Cpu)?
                .div_scalar((channels * k * k) as f64)?;
            let sn = SpectralNorm::new(
                channels,
                k,
                (height, width),
                config.coeff,
                dtype,
                device,
                gen,
            )?;
            (
                Some(parameter(place(v)?)?),
                Some(parameter(place(kernel)?)?),
                Some(sn),
            )
        } else {
            (None, None, None)
        };
        let ar_weight = gen
            .randn(&[4 * channels, channels, 3, 3], DType::F64, Device::Cpu)?
            .mul_scalar(0.1 / ((9 * channels) as f64).sqrt())?;
        Ok(Sylvester {
            channels,
            height,
            width,
            config,
            householder,
            kernel,
            spectral_norm,
            ar_weight: parameter(place(ar_weight)?)?,
            ar_bias: parameter(Tensor::zeros(&[1, 4 * channels, 1, 1], dtype, device)?)?,
            ar_mask: autoregressive_mask(channels, dtype, device)?,
            training: AtomicBool::new(true),
            iterations: AtomicUsize::new(0),
        })
    }

    /// The options the layer was built with.
    pub fn config(&self) -> SylvesterConfig {
        self.config
    }

    /// The fixed-point iterations the last inverse used.
    pub fn last_iterations(&self) -> usize {
        self.iterations.load(Ordering::Relaxed)
    }

    /// The spectral normalisation of `M` (`None` without basis change).
    pub fn spectral_norm(&self) -> Option<&SpectralNorm> {
        self.spectral_norm.as_ref()
    }

    /// `Q = H_1 ... H_k` `(C, C)`, differentiable (`None` without basis change).
    pub fn orthogonal(&self) -> Result<Option<Tensor>> {
        let Some(hh) = &self.householder else {
            return Ok(None);
        };
        Ok(Some(householder_product(hh)?))
    }

    fn is_training(&self) -> bool {
        self.training.load(Ordering::Relaxed)
    }

    fn check(&self, x: &Tensor) -> Result<()> {
        check_image(NAME, x, self.channels, (self.height, self.width))
    }

    /// `(Q, K_hat)` for this call (power step iff `step`), or `None`.
    fn basis(&self, step: bool) -> Result<Option<(Tensor, Tensor)>> {
        match (&self.kernel, &self.spectral_norm, self.orthogonal()?) {
            (Some(kernel), Some(sn), Some(q)) => Ok(Some((q, sn.normalize(kernel, step)?))),
            _ => Ok(None),
        }
    }

    /// `exp(M) Q x` (or `x` without basis change).
    fn change_basis(
        &self,
        basis: &Option<(Tensor, Tensor)>,
        x: &Tensor,
        terms: Terms,
    ) -> Result<Tensor> {
        match basis {
            Some((q, k)) => Ok(conv_exp(&mix_channels(q, x)?, k, terms)?.0),
            None => Ok(x.clone()),
        }
    }

    /// `Q^T exp(-M) y` (or `y` without basis change).
    fn undo_basis(
        &self,
        basis: &Option<(Tensor, Tensor)>,
        y: &Tensor,
        terms: Terms,
    ) -> Result<Tensor> {
        match basis {
            Some((q, k)) => {
                let w = conv_exp_inverse(y, k, terms)?.0;
                mix_channels(&q.transpose(0, 1)?, &w)
            }
            None => Ok(y.clone()),
        }
    }

    /// `(f_AR(u), log(1 + d))` with `d` the diagonal of `J_AR` (per entry).
    fn autoregressive(&self, u: &Tensor) -> Result<(Tensor, Tensor)> {
        let c = self.channels;
        let w = self.ar_weight.mul(&self.ar_mask)?;
        let h = u.conv2d(
            &w,
            Some(&self.ar_bias.reshape(&[4 * c])?),
            &Conv2dParams::same(3),
        )?;
        let s1 = h.narrow(1, 0, c)?.tanh()?;
        let s2 = h.narrow(1, c, c)?.tanh()?.mul_scalar(0.5)?;
        let t1 = h.narrow(1, 2 * c, c)?;
        let t2 = h.narrow(1, 3 * c, c)?;
        let a = s1.mul(u)?.add(&t1)?.tanh()?;
        let f = s2.mul(&a)?.add(&t2)?;
        let d = s2.mul(&s1)?.mul(&a.square()?.neg()?.add_scalar(1.0)?)?;
        Ok((f, d.log1p()?))
    }

    /// `sum log(1 + d)` per sample, shape `[N]`.
    fn logdet(log1pd: &Tensor) -> Result<Tensor> {
        log1pd.sum(&[1, 2, 3], false)
    }

    /// Solves `y + f_AR(y) = r` by `y_{k+1} = r - f_AR(y_k)`; records the
    /// iteration count.
    fn solve(&self, r: &Tensor) -> Result<Tensor> {
        let mut y = r.clone();
        for k in 1..=self.config.max_iterations {
            let next = r.sub(&self.autoregressive(&y)?.0)?;
            let change = next
                .sub(&y)?
                .to_vec_f64()?
                .iter()
                .fold(0.0f64, |m, v| m.max(v.abs()));
            y = next;
            if change.is_nan() {
                break;
            }
            if change < self.config.tol {
                self.iterations.store(k, Ordering::Relaxed);
                return Ok(y);
            }
        }
        self.iterations
            .store(self.config.max_iterations, Ordering::Relaxed);
        Err(Error::invalid(
            NAME,
            format!(
                "the fixed-point inverse did not converge to {:e} in {} iterations on {:?}",
                self.config.tol,
                self.config.max_iterations,
                r.shape()
            ),
        ))
    }

    fn invert(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        self.check(z)?;
        let terms = self.config.eval_terms;
        let basis = self.basis(false)?;
        let r = self.change_basis(&basis, z, terms)?;
        let y = self.solve(&r)?;
        let (_, log1pd) = self.autoregressive(&y)?;
        let x = self.undo_basis(&basis, &y, terms)?;
        Ok((x, Self::logdet(&log1pd)?.neg()?))
    }
}

impl Flow for Sylvester {
    fn name(&self) -> &'static str {
        NAME
    }

    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        self.check(x)?;
        let training = self.is_training();
        let terms = if training {
            self.config.train_terms
        } else {
            self.config.eval_terms
        };
        let basis = self.basis(training)?;
        let u = self.change_basis(&basis, x, terms)?;
        let (f, log1pd) = self.autoregressive(&u)?;
        let z = x.add(&self.undo_basis(&basis, &f, terms)?)?;
        Ok((z, Self::logdet(&log1pd)?))
    }

    fn inverse(&self, z: &Tensor) -> Result<Tensor> {
        Ok(self.invert(z)?.0)
    }

    fn inverse_with_logdet(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        self.invert(z)
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut params = Vec::new();
        if let Some(h) = &self.householder {
            params.push(("householder".into(), h.clone()));
        }
        if let Some(k) = &self.kernel {
            params.push(("kernel".into(), k.clone()));
        }
        params.push(("ar_weight".into(), self.ar_weight.clone()));
        params.push(("ar_bias".into(), self.ar_bias.clone()));
        params
    }

    fn buffers(&self) -> Vec<(String, Tensor)> {
        let mut buffers = vec![("ar_mask".to_string(), self.ar_mask.clone())];
        if let Some(sn) = &self.spectral_norm {
            buffers.extend(crate::flow::prefixed("spectral_norm", sn.buffers()));
        }
        buffers
    }

    fn set_training(&self, training: bool) {
        self.training.store(training, Ordering::Relaxed);
    }
}
