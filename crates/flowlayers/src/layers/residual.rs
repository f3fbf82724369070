//! Residual flows: invertible residual blocks `z = x + g(x)` with `Lip(g) <
//! 1` (Behrmann, Grathwohl, Chen, Duvenaud and Jacobsen, "Invertible
//! Residual Networks", 2019; Chen, Behrmann, Duvenaud and Jacobsen,
//! "Residual Flows for Invertible Generative Modeling", 2019).
//!
//! `g` is a network of spectrally normalised layers ([`SpectralNorm`]:
//! same-padded convolutions on images, linear layers on vectors) with
//! 1-Lipschitz activations, so `Lip(g) <= coeff^L < 1`, `x + g(x)` is
//! invertible and
//!
//! ```text
//! log |det (I + J_g)| = sum_{k >= 1} (-1)^{k+1} tr(J_g^k) / k.
//! ```
//!
//! [`ResidualBlock`] estimates it ([`LogDetEstimator`]) from vector-Jacobian
//! products `w^T J_g` ([`flowtensor::grad`]) and Hutchinson's `tr(A) = E[v^T
//! A v]`; training differentiates the estimate, which takes gradients of
//! gradients.

use crate::fixed_point::{self, FixedPoint};
use crate::flow::{parameter, prefixed, Flow};
use crate::layers::spectral_norm::{check_image_size, SpectralNorm};
use flowtensor::{
    enable_grad, grad, is_grad_enabled, no_grad, Conv2dParams, DType, Device, Error, Generator,
    GeneratorState, Result, Tensor,
};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

const NAME: &str = "ResidualBlock";

/// The 1-Lipschitz activation between the layers of `g`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResidualActivation {
    /// `x sigmoid(softplus(beta) x) / 1.1` with a learned scalar `beta` per
    /// activation (initial `0.5`): `|d/dx| <= 1.0998 / 1.1 < 1` for any
    /// `beta` (Chen et al.'s LipSwish).
    LipSwish,
    /// `x` for `x > 0`, `exp(x) - 1` otherwise.
    Elu,
}

/// The probe vectors `v` of Hutchinson's trace estimator (`E[v v^T] = I`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceVectors {
    /// Standard normal entries.
    Gaussian,
    /// Entries `+1` or `-1` with probability 1/2 (lower variance).
    Rademacher,
}

/// How [`ResidualBlock`] estimates `log |det (I + J_g)|` per sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LogDetEstimator {
    /// The dense Jacobian (one vector-Jacobian product per coordinate) and
    /// its `slogdet`: exact, for small inputs and tests.
    Exact,
    /// The first `terms` terms of the series, each trace by Hutchinson's
    /// estimator with one probe vector per sample: biased by the truncation.
    PowerSeries { terms: usize },
    /// The unbiased Russian-roulette estimator: per sample, `n = exact_terms
    /// + N` terms with `N ~ Geometric(p)` on `{1, 2, ...}`, term `k`
    /// weighted by `1 / P(n >= k)` (`P = 1` for `k <= exact_terms`, else
    /// `(1 - p)^(k - exact_terms - 1)`), traces by Hutchinson's estimator.
    RussianRoulette { exact_terms: usize, p: f64 },
}

impl LogDetEstimator {
    fn check(&self) -> Result<()> {
        match *self {
            LogDetEstimator::PowerSeries { terms: 0 } => Err(Error::invalid(
                NAME,
                "the power series needs at least one term",
            )),
            LogDetEstimator::RussianRoulette { p, .. } if !(p > 0.0 && p <= 1.0) => {
                Err(Error::invalid(
                    NAME,
                    format!("the roulette's geometric p must be in (0, 1], got {p}"),
                ))
            }
            _ => Ok(()),
        }
    }
}

/// How the gradient of a series estimate is taken in training.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogDetGradient {
    /// The Neumann series `d log det(I + J) = sum_k (-1)^k tr(J^k dJ)`,
    /// estimated during the forward pass with the same probe vectors and
    /// terms as the value: `u = sum_k (-1)^k c_{k+1} (J^T)^k v` without a
    /// graph, then one recorded product `<J^T u, v>` whose gradient is the
    /// estimate (Chen et al.'s memory-saving gradient: the graph holds one
    /// vector-Jacobian product whatever the number of terms).
    Neumann,
    /// Autodiff through every term of the series (the graph holds them all).
    Autodiff,
}

/// Options of [`ResidualBlock`].
#[derive(Clone, Debug, PartialEq)]
pub struct ResidualConfig {
    /// Hidden channels (features) of `g` (default 64).
    pub hidden: usize,
    /// Kernel sizes of `g`'s convolutions, odd, one per layer (default `[3,
    /// 1, 3]`; on vectors only their count matters: that many linear layers).
    pub kernel_sizes: Vec<usize>,
    /// The bound on every layer's spectral norm (default 0.98).
    pub coeff: f64,
    pub activation: ResidualActivation,
    /// The estimator in training mode (default Russian roulette, 2 exact
    /// terms, `p = 0.5`).
    pub train_estimator: LogDetEstimator,
    /// The estimator in evaluation mode and of `inverse_with_logdet`
    /// (default Russian roulette, 20 exact terms, `p = 0.5`).
    pub eval_estimator: LogDetEstimator,
    /// Default Gaussian.
    pub trace_vectors: TraceVectors,
    /// Default [`LogDetGradient::Neumann`].
    pub gradient: LogDetGradient,
    /// The inverse's iteration (default `tol = 1e-10`, 500 iterations).
    pub fixed_point: FixedPoint,
}

impl Default for ResidualConfig {
    fn default() -> Self {
        ResidualConfig {
            hidden: 64,
            kernel_sizes: vec![3, 1, 3],
            coeff: 0.98,
            activation: ResidualActivation::LipSwish,
            train_estimator: LogDetEstimator::RussianRoulette {
                exact_terms: 2,
                p: 0.5,
            },
            eval_estimator: LogDetEstimator::RussianRoulette {
                exact_terms: 20,
                p: 0.5,
            },
            trace_vectors: TraceVectors::Gaussian,
            gradient: LogDetGradient::Neumann,
            fixed_point: FixedPoint {
                tol: 1e-10,
                max_iterations: 500,
            },
        }
    }
}

/// One spectrally normalised layer of `g`.
struct NormalizedLayer {
    weight: Tensor,
    bias: Tensor,
    norm: SpectralNorm,
    /// Kernel size of a convolution; `None` for a linear layer.
    kernel_size: Option<usize>,
}

impl NormalizedLayer {
    fn apply(&self, x: &Tensor, weight: &Tensor) -> Result<Tensor> {
        match self.kernel_size {
            Some(k) => x.conv2d(weight, Some(&self.bias), &Conv2dParams::same(k)),
            None => x.matmul_bias(&weight.transpose(0, 1)?, &self.bias),
        }
    }
}

/// An invertible residual block `z = x + g(x)` on images `(N, C, H, W)` or
/// vectors `(N, D)`.
///
/// - `g = L_m o a o ... o a o L_1`: layers `L_i` spectrally normalised to
///   `coeff` ([`SpectralNorm`]; same-padded convolutions with the
///   [`ResidualConfig::kernel_sizes`] on images, linear layers on vectors;
///   `C -> hidden -> ... -> C`), activations `a` ([`ResidualActivation`]),
///   so `Lip(g) <= coeff^m`. Parameters `net.{i}.weight` (`randn /
///   sqrt(fan_in)`), `net.{i}.bias` (zero), `act.{i}.beta` (LipSwish);
///   buffers `net.{i}.spectral_norm.*` and `estimator_rng` (the state of the
///   estimator's draws, so a resumed run draws what an uninterrupted one
///   would).
/// - forward: `z = x + g(x)`, log-det by the mode's [`LogDetEstimator`]
///   (a random estimate for the series estimators, unbiased for the
///   roulette), differentiable in the parameters and in `x` (through
///   [`LogDetGradient`]) unless gradients are off ([`no_grad`]); evaluation
///   mode only switches to [`ResidualConfig::eval_estimator`].
/// - inverse: `x_{k+1} = z - g(x_k)` from `x_0 = z` (a contraction with
///   constant `coeff^m`) until `max |x_{k+1} - x_k| < tol` (at least the
///   dtype's rounding level), without a graph;
///   the count is [`ResidualBlock::last_iterations`], and an error names the
///   tolerance when it does not converge; `inverse_with_logdet` adds minus
///   the evaluation estimate at `x`.
///
/// Training mode (the default) takes one power-iteration step per new
/// weight value, as [`SpectralNorm`] describes.
pub struct ResidualBlock {
    /// Per-sample shape: `[C, H, W]` or `[D]`.
    shape: Vec<usize>,
    dtype: DType,
    layers: Vec<NormalizedLayer>,
    /// LipSwish's `beta`, one per activation (empty for ELU).
    betas: Vec<Tensor>,
    config: ResidualConfig,
    /// `[seed_hi, seed_lo, counter_hi, counter_lo]` as f64 (CPU).
    rng: Tensor,
    /// Serialises the read-draw-write of `rng`.
    drawing: Mutex<()>,
    training: AtomicBool,
    iterations: AtomicUsize,
}

impl ResidualBlock {
    /// A block on `(channels, height, width)` images: convolutions with the
    /// config's kernel sizes. Draws from `gen` each layer's weight, then its
    /// power-iteration vector, then the estimator's seed.
    pub fn image(
        (channels, height, width): (usize, usize, usize),
        config: ResidualConfig,
        dtype: DType,
        device: Device,
        gen: &mut Generator,
    ) -> Result<Self> {
        check_image_size(NAME, channels.min(config.hidden), (height, width))?;
        if let Some(k) = config.kernel_sizes.iter().find(|k| k.is_multiple_of(2)) {
            return Err(Error::invalid(
                NAME,
                format!("kernel sizes must be odd, got {k}"),
            ));
        }
        let sizes = config.kernel_sizes.clone();
        Self::build(
            &[channels, height, width],
            config,
            sizes.into_iter().map(Some),
            dtype,
            device,
            gen,
        )
    }

    /// A block on `(N, features)` vectors: `kernel_sizes.len()` linear
    /// layers. Draws as [`ResidualBlock::image`].
    pub fn vector(
        features: usize,
        config: ResidualConfig,
        dtype: DType,
        device: Device,
        gen: &mut Generator,
    ) -> Result<Self> {
        if features == 0 || config.hidden == 0 {
            return Err(Error::invalid(
                NAME,
                format!(
                    "needs features and hidden units, got {features} and {}",
                    config.hidden
                ),
            ));
        }
        let layers = vec![None; config.kernel_sizes.len()];
        Self::build(&[features], config, layers.into_iter(), dtype, device, gen)
    }

    fn build(
        shape: &[usize],
        config: ResidualConfig,
        kernels: impl ExactSizeIterator<Item = Option<usize>>,
        dtype: DType,
        device: Device,
        gen: &mut Generator,
    ) -> Result<Self> {
        config.train_estimator.check()?;
        config.eval_estimator.check()?;
        config.fixed_point.check(NAME)?;
        let count = kernels.len();
        if count == 0 {
            return Err(Error::invalid(NAME, "g needs at least one layer"));
        }
        if !(config.coeff > 0.0 && config.coeff < 1.0) {
            return Err(Error::invalid(
                NAME,
                format!(
                    "coeff must be in (0, 1) for an invertible block, got {}",
                    config.coeff
                ),
            ));
        }
        let place =
            |t: Tensor| -> Result<Tensor> { parameter(t.to_dtype(dtype)?.to_device(device)?) };
        let mut layers = Vec::with_capacity(count);
        for (i, kernel_size) in kernels.enumerate() {
            let input = if i == 0 { shape[0] } else { config.hidden };
            let output = if i + 1 == count {
                shape[0]
            } else {
                config.hidden
            };
            let (weight_shape, norm) = match kernel_size {
                Some(k) => {
                    let w = vec![output, input, k, k];
                    let norm = SpectralNorm::new(
                        (output, input),
                        k,
                        (shape[1], shape[2]),
                        config.coeff,
                        dtype,
                        device,
                        gen,
                    );
                    (w, norm)
                }
                None => {
                    let norm =
                        SpectralNorm::linear((output, input), config.coeff, dtype, device, gen);
                    (vec![output, input], norm)
                }
            };
            let fan_in: usize = weight_shape[1..].iter().product();
            let weight = gen
                .randn(&weight_shape, DType::F64, Device::Cpu)?
                .div_scalar((fan_in as f64).sqrt())?;
            layers.push(NormalizedLayer {
                weight: place(weight)?,
                bias: place(Tensor::zeros(&[output], DType::F64, Device::Cpu)?)?,
                norm: norm?,
                kernel_size,
            });
        }
        let betas = match config.activation {
            ResidualActivation::LipSwish => (1..count)
                .map(|_| place(Tensor::full(0.5, &[], DType::F64, Device::Cpu)?))
                .collect::<Result<_>>()?,
            ResidualActivation::Elu => Vec::new(),
        };
        let seed_draw = gen.uniform(&[2], 0.0, 4294967296.0, DType::F64, Device::Cpu)?;
        let halves: Vec<f64> = seed_draw.to_vec_f64()?.iter().map(|v| v.floor()).collect();
        let rng = Tensor::from_vec(vec![halves[0], halves[1], 0.0, 0.0], &[4], Device::Cpu)?;
        Ok(ResidualBlock {
            shape: shape.to_vec(),
            dtype,
            layers,
            betas,
            config,
            rng,
            drawing: Mutex::new(()),
            training: AtomicBool::new(true),
            iterations: AtomicUsize::new(0),
        })
    }

    /// The options the block was built with.
    pub fn config(&self) -> &ResidualConfig {
        &self.config
    }

    /// The fixed-point iterations the last inverse used.
    pub fn last_iterations(&self) -> usize {
        self.iterations.load(Ordering::Relaxed)
    }

    fn is_training(&self) -> bool {
        self.training.load(Ordering::Relaxed)
    }

    fn check(&self, x: &Tensor) -> Result<()> {
        if x.dtype() != self.dtype {
            return Err(Error::DTypeMismatch {
                op: NAME,
                lhs: x.dtype(),
                rhs: self.dtype,
            });
        }
        if x.rank() != self.shape.len() + 1 || x.shape()[1..] != self.shape[..] {
            return Err(Error::shape(
                NAME,
                &[x.shape()],
                format!("expected (batch, {:?})", self.shape),
            ));
        }
        Ok(())
    }

    /// Every layer's normalised weight (power steps as the mode says).
    pub fn normalized_weights(&self) -> Result<Vec<Tensor>> {
        let training = self.is_training();
        self.layers
            .iter()
            .map(|l| l.norm.normalize(&l.weight, training))
            .collect()
    }

    fn activation(&self, x: &Tensor, i: usize) -> Result<Tensor> {
        match self.config.activation {
            ResidualActivation::LipSwish => {
                let beta = self.betas[i].softplus()?;
                x.mul(&x.mul(&beta)?.sigmoid()?)?.div_scalar(1.1)
            }
            ResidualActivation::Elu => x
                .relu()?
                .add(&x.clamp(f64::NEG_INFINITY, 0.0)?.exp()?)?
                .add_scalar(-1.0),
        }
    }

    /// `g(x)` with the given normalised weights.
    fn residual(&self, x: &Tensor, weights: &[Tensor]) -> Result<Tensor> {
        let mut h = x.clone();
        for (i, (layer, w)) in self.layers.iter().zip(weights).enumerate() {
            if i > 0 {
                h = self.activation(&h, i - 1)?;
            }
            h = layer.apply(&h, w)?;
        }
        Ok(h)
    }

    /// Runs `f` on this block's estimator stream and saves where it ends.
    fn with_rng<R>(&self, f: impl FnOnce(&mut Generator) -> Result<R>) -> Result<R> {
        let _guard = self
            .drawing
            .lock()
            .map_err(|_| Error::invalid(NAME, "poisoned state"))?;
        let s = self.rng.to_vec_f64()?;
        let join = |hi: f64, lo: f64| ((hi as u64) << 32) | (lo as u64);
        let mut gen = Generator::from_state(GeneratorState {
            seed: join(s[0], s[1]),
            counter: join(s[2], s[3]),
        });
        let out = f(&mut gen)?;
        let state = gen.state();
        let halves = |v: u64| [(v >> 32) as f64, (v & 0xffff_ffff) as f64];
        let saved = [halves(state.seed), halves(state.counter)].concat();
        self.rng
            .set_data(&Tensor::from_vec(saved, &[4], Device::Cpu)?)?;
        Ok(out)
    }

    /// `z = x + g(x)` and the log-det by `estimator`; with `keep_graph` both
    /// differentiable (else plain values).
    fn apply(
        &self,
        x: &Tensor,
        estimator: LogDetEstimator,
        keep_graph: bool,
    ) -> Result<(Tensor, Tensor)> {
        self.check(x)?;
        let weights = self.normalized_weights()?;
        let (z, logdet) = enable_grad(|| {
            let input = if keep_graph && x.requires_grad() {
                x.clone()
            } else {
                x.detach().as_variable()
            };
            let gx = self.residual(&input, &weights)?;
            let logdet = self.logdet(&input, &gx, estimator, keep_graph)?;
            Ok::<_, Error>((input.add(&gx)?, logdet))
        })?;
        Ok(if keep_graph {
            (z, logdet)
        } else {
            (z.detach(), logdet.detach())
        })
    }

    /// The estimate of `log |det (I + dg/dx)|` per sample, `[N]`.
    fn logdet(
        &self,
        x: &Tensor,
        gx: &Tensor,
        estimator: LogDetEstimator,
        keep_graph: bool,
    ) -> Result<Tensor> {
        let vjp = |w: &Tensor, create: bool| -> Result<Tensor> {
            grad(
                std::slice::from_ref(gx),
                std::slice::from_ref(x),
                std::slice::from_ref(w),
                create,
            )?
            .remove(0)
            .map_or_else(|| w.zeros_like(), Ok)
        };
        let n = x.shape()[0];
        let d: usize = self.shape.iter().product();
        let per_sample = |t: &Tensor| -> Result<Tensor> { t.reshape(&[n, d])?.sum(&[1], false) };
        let (terms, weights) = match estimator {
            LogDetEstimator::Exact => return self.exact_logdet(x, &vjp, keep_graph),
            LogDetEstimator::PowerSeries { terms } => (terms, vec![vec![1.0; n]; terms]),
            LogDetEstimator::RussianRoulette { exact_terms, p } => {
                self.with_rng(|gen| roulette_weights(gen, n, exact_terms, p))?
            }
        };
        let v = self.with_rng(|gen| self.probe(gen, x))?;
        let column = |c: &[f64]| -> Result<Tensor> {
            let mut shape = vec![n];
            shape.extend(std::iter::repeat_n(1, self.shape.len()));
            Tensor::from_vec(c.to_vec(), &shape, Device::Cpu)?
                .to_dtype(self.dtype)?
                .to_device(x.device())
        };
        let autodiff = keep_graph && self.config.gradient == LogDetGradient::Autodiff;
        let neumann = keep_graph && !autodiff;
        // w_k = (J^T)^k v; value = sum_k (-1)^(k+1) c_k <w_k, v> / k;
        // neumann = sum_{k < terms} (-1)^k c_{k+1} w_k
        let mut w = v.clone();
        let mut value: Option<Tensor> = None;
        let mut neumann_sum: Option<Tensor> = None;
        for k in 1..=terms {
            let c = column(&weights[k - 1])?;
            let sign = if k % 2 == 1 { 1.0 } else { -1.0 };
            if neumann {
                let term = w.mul(&c)?.mul_scalar(sign)?;
                neumann_sum = Some(match neumann_sum {
                    Some(s) => s.add(&term)?,
                    None => term,
                });
            }
            w = vjp(&w, autodiff)?;
            let term = per_sample(&w.mul(&v)?.mul(&c)?)?.mul_scalar(sign / k as f64)?;
            value = Some(match value {
                Some(s) => s.add(&term)?,
                None => term,
            });
        }
        let value = value.expect("at least one term");
        match neumann_sum {
            Some(u) => {
                let surrogate = per_sample(&vjp(&u.detach(), true)?.mul(&v)?)?;
                value.detach().add(&surrogate.sub(&surrogate.detach())?)
            }
            None => Ok(value),
        }
    }

    /// `slogdet(I + J)` of the dense per-sample Jacobian, row `i` from the
    /// product with the `i`-th one-hot vector.
    fn exact_logdet(
        &self,
        x: &Tensor,
        vjp: &dyn Fn(&Tensor, bool) -> Result<Tensor>,
        keep_graph: bool,
    ) -> Result<Tensor> {
        let n = x.shape()[0];
        let d: usize = self.shape.iter().product();
        let mut rows = Vec::with_capacity(d);
        for i in 0..d {
            let mut onehot = vec![0.0; n * d];
            for b in 0..n {
                onehot[b * d + i] = 1.0;
            }
            let e = Tensor::from_vec(onehot, x.shape(), Device::Cpu)?
                .to_dtype(self.dtype)?
                .to_device(x.device())?;
            rows.push(vjp(&e, keep_graph)?.reshape(&[n, 1, d])?);
        }
        let jacobian = Tensor::cat(&rows.iter().collect::<Vec<_>>(), 1)?;
        let eye = Tensor::eye(d, self.dtype, x.device())?;
        Ok(jacobian.add(&eye)?.slogdet()?.1)
    }

    /// A probe vector per sample, shaped like `x`.
    fn probe(&self, gen: &mut Generator, x: &Tensor) -> Result<Tensor> {
        match self.config.trace_vectors {
            TraceVectors::Gaussian => gen.randn(x.shape(), self.dtype, x.device()),
            TraceVectors::Rademacher => gen
                .uniform(x.shape(), 0.0, 1.0, self.dtype, x.device())?
                .gt_scalar(0.5)?
                .affine(2.0, -1.0),
        }
    }

    /// Solves `x + g(x) = z` (no graph); records the iteration count. The
    /// tolerance is raised to what the dtype can resolve, `4 eps max(1,
    /// max |z|)` (`eps` the dtype's machine epsilon), so that f32 stops at
    /// its rounding level instead of failing.
    fn solve(&self, z: &Tensor) -> Result<Tensor> {
        self.check(z)?;
        no_grad(|| {
            let weights = self.normalized_weights()?;
            let all: Vec<usize> = (0..z.rank()).collect();
            let scale: f64 = z.abs()?.max(&all, false)?.to_scalar()?;
            let scale = scale.max(1.0);
            let eps = match self.dtype {
                DType::F32 => f64::from(f32::EPSILON),
                _ => f64::EPSILON,
            };
            let mut opts = self.config.fixed_point;
            opts.tol = opts.tol.max(4.0 * eps * scale);
            let solved =
                fixed_point::iterate(NAME, z, opts, |x| z.sub(&self.residual(x, &weights)?));
            let iterations = solved.as_ref().map_or(opts.max_iterations, |(_, k)| *k);
            self.iterations.store(iterations, Ordering::Relaxed);
            Ok(solved?.0)
        })
    }
}

/// The number of terms and, per term `k = 1..=terms`, each sample's weight
/// `[k <= n_b] / P(n >= k)` for `n_b = exact_terms + N_b`, `N_b ~
/// Geometric(p)` on `{1, 2, ...}` drawn by inversion.
fn roulette_weights(
    gen: &mut Generator,
    n: usize,
    exact_terms: usize,
    p: f64,
) -> Result<(usize, Vec<Vec<f64>>)> {
    let u = gen
        .uniform(&[n], 0.0, 1.0, DType::F64, Device::Cpu)?
        .to_vec_f64()?;
    let counts: Vec<usize> = u
        .iter()
        .map(|&u| {
            // 1 - u in (0, 1]; p = 1 always gives one extra term
            let extra = if p >= 1.0 {
                0.0
            } else {
                ((1.0 - u).ln() / (1.0 - p).ln()).floor()
            };
            exact_terms + 1 + extra as usize
        })
        .collect();
    let terms = counts.iter().copied().max().unwrap_or(exact_terms + 1);
    let weights = (1..=terms)
        .map(|k| {
            let reach = if k <= exact_terms {
                1.0
            } else {
                (1.0 - p).powi((k - exact_terms - 1) as i32)
            };
            counts
                .iter()
                .map(|&c| if k <= c { 1.0 / reach } else { 0.0 })
                .collect()
        })
        .collect();
    Ok((terms, weights))
}

impl Flow for ResidualBlock {
    fn name(&self) -> &'static str {
        NAME
    }

    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let estimator = if self.is_training() {
            self.config.train_estimator
        } else {
            self.config.eval_estimator
        };
        self.apply(x, estimator, is_grad_enabled())
    }

    fn inverse(&self, z: &Tensor) -> Result<Tensor> {
        self.solve(z)
    }

    fn inverse_with_logdet(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        let x = self.solve(z)?;
        let (_, logdet) = self.apply(&x, self.config.eval_estimator, false)?;
        Ok((x, logdet.neg()?))
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut params = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            params.push((format!("net.{i}.weight"), layer.weight.clone()));
            params.push((format!("net.{i}.bias"), layer.bias.clone()));
        }
        for (i, beta) in self.betas.iter().enumerate() {
            params.push((format!("act.{i}.beta"), beta.clone()));
        }
        params
    }

    fn buffers(&self) -> Vec<(String, Tensor)> {
        let mut buffers = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            let name = format!("net.{i}.spectral_norm");
            buffers.extend(prefixed(&name, layer.norm.buffers()));
        }
        buffers.push(("estimator_rng".into(), self.rng.clone()));
        buffers
    }

    fn set_training(&self, training: bool) {
        self.training.store(training, Ordering::Relaxed);
    }
}
