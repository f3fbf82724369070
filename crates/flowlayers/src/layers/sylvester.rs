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
//! s1 = tanh(S1(h)),  s2 = tanh(S2(h)) / 2,  t1 = T1(h),  t2 = T2(h),
//! h = relu(MaskedConv1x1(relu(MaskedConv3x3(u)))),
//! ```
//!
//! the paper's conditioner: a MADE-style stack of masked convolutions
//! ([`MaskedConv`]), the first two non-strict and the four heads `S1, S2,
//! T1, T2` strict (their centre taps have a zero diagonal), every masked
//! kernel spectrally normalised to `lipschitz`.
//!
//! whose Jacobian is lower triangular in the raster-then-channel order
//! `ord(c, (i, j)) = (i W + j) C + c` with diagonal
//! `d = s2 s1 (1 - tanh^2(s1 u + t1))`, `|d| <= 1/2`. The layer's Jacobian
//! `I + (Q^T exp(-M)) J_AR (exp(M) Q)` is similar to `I + J_AR`, so
//!
//! ```text
//! log |det dz/dx| = sum log(1 + d)     (d evaluated at u = exp(M) Q x).
//! ```

use crate::fixed_point::{self, FixedPoint};
use crate::flow::{parameter, prefixed, Flow};
use crate::layers::conv1x1::{householder_product, mix_channels};
use crate::layers::masked_conv::{hidden_degrees, MaskedConv, MaskedConvSpec};
use crate::layers::spectral_norm::{check_image, check_image_size, SpectralNorm};
use flowtensor::conv_exp::{conv_exp, conv_exp_inverse, Terms};
use flowtensor::{DType, Device, Error, Generator, Result, Tensor};
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
    /// Hidden channels of the autoregressive conditioner (at least `C`;
    /// default 64).
    pub hidden_channels: usize,
    /// The bound on the spectral norm of every masked convolution of the
    /// conditioner (default 0.95).
    pub lipschitz: f64,
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
            hidden_channels: 64,
            lipschitz: 0.95,
            train_terms: Terms::Fixed(6),
            eval_terms: Terms::Fixed(13),
            tol: 1e-12,
            max_iterations: 200,
        }
    }
}

/// The conditioner of `f_AR`: two non-strict masked layers and four strict
/// heads, `(s1, s2, t1, t2)` from `u`.
struct Conditioner {
    hidden: MaskedConv,
    mixing: MaskedConv,
    /// `S1, S2, T1, T2`, in that order.
    heads: [MaskedConv; 4],
}

impl Conditioner {
    fn new(
        channels: usize,
        size: (usize, usize),
        config: &SylvesterConfig,
        dtype: DType,
        device: Device,
        gen: &mut Generator,
    ) -> Result<Self> {
        let inputs: Vec<usize> = (0..channels).collect();
        let hidden = hidden_degrees(config.hidden_channels, channels);
        let mut conv = |ins: &[usize], outs: &[usize], kernel_size, strict, init_scale| {
            let spec = MaskedConvSpec {
                in_degrees: ins,
                out_degrees: outs,
                kernel_size,
                strict,
                size,
                coeff: config.lipschitz,
                init_scale,
            };
            MaskedConv::new(&spec, dtype, device, gen)
        };
        Ok(Conditioner {
            hidden: conv(&inputs, &hidden, 3, false, 1.0)?,
            mixing: conv(&hidden, &hidden, 1, false, 1.0)?,
            // S1 and T1 start at zero weights, as in the paper
            heads: [
                conv(&hidden, &inputs, 3, true, 0.0)?,
                conv(&hidden, &inputs, 3, true, 1.0)?,
                conv(&hidden, &inputs, 3, true, 0.0)?,
                conv(&hidden, &inputs, 3, true, 1.0)?,
            ],
        })
    }

    /// `(s1, s2, t1, t2)` for `u`; one power step per masked layer when `step`.
    fn forward(&self, u: &Tensor, step: bool) -> Result<[Tensor; 4]> {
        let h = self.hidden.forward(u, step)?.relu()?;
        let h = self.mixing.forward(&h, step)?.relu()?;
        let [s1, s2, t1, t2] = &self.heads;
        Ok([
            s1.forward(&h, step)?.tanh()?,
            s2.forward(&h, step)?.tanh()?.mul_scalar(0.5)?,
            t1.forward(&h, step)?,
            t2.forward(&h, step)?,
        ])
    }

    fn layers(&self) -> [(&'static str, &MaskedConv); 6] {
        let [s1, s2, t1, t2] = &self.heads;
        [
            ("ar.hidden", &self.hidden),
            ("ar.mixing", &self.mixing),
            ("ar.s1", s1),
            ("ar.s2", s2),
            ("ar.t1", t1),
            ("ar.t2", t2),
        ]
    }
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
/// - `f_AR(u) = s2 tanh(s1 u + t1) + t2` with `(s1, s2, t1, t2)` from the
///   masked conditioner of the module documentation (parameters
///   `ar.{hidden,mixing,s1,s2,t1,t2}.{weight,bias}`, buffers their masks and
///   spectral normalisations); the `S1` and `T1` heads start at zero
///   weights.
/// - log-det per sample: `sum log(1 + s2 s1 (1 - tanh^2(s1 u + t1)))`, each
///   term `> log(1/2)`.
/// - inverse: `r = exp(M) Q z`, then `y_{k+1} = r - f_AR(y_k)` from `y_0 = r`
///   until `max |y_{k+1} - y_k| < tol` (the map's Jacobian `-J_AR` is
///   triangular with diagonal at most `1/2` in magnitude, so it is locally a
///   contraction in a suitable norm), then `x = Q^T exp(-M) y`; the iteration
///   count is [`Sylvester::last_iterations`]. Inverses use the evaluation
///   terms and no power-iteration step.
///
/// Training mode (the default) takes one power-iteration step per forward
/// (for `M` and for every masked layer) and sums `train_terms`; evaluation
/// takes none and sums `eval_terms`.
pub struct Sylvester {
    channels: usize,
    height: usize,
    width: usize,
    config: SylvesterConfig,
    householder: Option<Tensor>,
    kernel: Option<Tensor>,
    spectral_norm: Option<SpectralNorm>,
    conditioner: Conditioner,
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
    /// power-iteration vector, then the conditioner's layers in order
    /// (weights `randn / sqrt(fan_in)`, zero for `S1` and `T1`; biases zero).
    pub fn with_config(
        channels: usize,
        (height, width): (usize, usize),
        config: SylvesterConfig,
        dtype: DType,
        device: Device,
        gen: &mut Generator,
    ) -> Result<Self> {
        check_image_size(NAME, channels, (height, width))?;
        FixedPoint {
            tol: config.tol,
            max_iterations: config.max_iterations,
        }
        .check(NAME)?;
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
                (channels, channels),
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
        if config.hidden_channels < channels || config.lipschitz.is_nan() || config.lipschitz <= 0.0
        {
            return Err(Error::invalid(
                NAME,
                format!(
                    "needs at least C = {channels} hidden channels and a positive Lipschitz bound, got {} and {}",
                    config.hidden_channels, config.lipschitz
                ),
            ));
        }
        let conditioner = Conditioner::new(channels, (height, width), &config, dtype, device, gen)?;
        Ok(Sylvester {
            channels,
            height,
            width,
            config,
            householder,
            kernel,
            spectral_norm,
            conditioner,
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
        check_image(
            NAME,
            x,
            self.channels,
            (self.height, self.width),
            self.conditioner.hidden.dtype(),
        )
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

    /// `(f_AR(u), log(1 + d))` with `d` the diagonal of `J_AR` (per entry);
    /// power steps in the conditioner when `step`.
    fn autoregressive(&self, u: &Tensor, step: bool) -> Result<(Tensor, Tensor)> {
        let [s1, s2, t1, t2] = self.conditioner.forward(u, step)?;
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
    /// iteration count (the cap when it fails).
    fn solve(&self, r: &Tensor) -> Result<Tensor> {
        let opts = FixedPoint {
            tol: self.config.tol,
            max_iterations: self.config.max_iterations,
        };
        // in training, the first call takes the conditioner's power steps
        // for new weights and the others reuse them (one step per weight value)
        let solved = fixed_point::iterate(NAME, r, opts, |y| {
            r.sub(&self.autoregressive(y, self.is_training())?.0)
        });
        let iterations = solved.as_ref().map_or(opts.max_iterations, |(_, k)| *k);
        self.iterations.store(iterations, Ordering::Relaxed);
        Ok(solved?.0)
    }

    fn invert(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        self.check(z)?;
        let terms = self.config.eval_terms;
        let basis = self.basis(self.is_training())?;
        let r = self.change_basis(&basis, z, terms)?;
        let y = self.solve(&r)?;
        let (_, log1pd) = self.autoregressive(&y, self.is_training())?;
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
        let (f, log1pd) = self.autoregressive(&u, training)?;
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
        for (name, layer) in self.conditioner.layers() {
            params.extend(prefixed(name, layer.parameters()));
        }
        params
    }

    fn buffers(&self) -> Vec<(String, Tensor)> {
        let mut buffers = Vec::new();
        if let Some(sn) = &self.spectral_norm {
            buffers.extend(prefixed("spectral_norm", sn.buffers()));
        }
        for (name, layer) in self.conditioner.layers() {
            buffers.extend(prefixed(name, layer.buffers()));
        }
        buffers
    }

    fn set_training(&self, training: bool) {
        self.training.store(training, Ordering::Relaxed);
    }
}
