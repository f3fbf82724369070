//! Monotonic rational-quadratic splines (Durkan, Bekasov, Murray and
//! Papamakarios, "Neural Spline Flows", 2019), elementwise, and the flows
//! built on them: [`SplineCoupling`] (NSF-C) and [`SplineAutoregressive`]
//! (NSF-AR).
//!
//! On `[-B, B]` a spline of `K` bins has knots `(x_k, y_k)`, `k = 0..=K`,
//! with `x_0 = y_0 = -B`, `x_K = y_K = B`, and derivatives `d_k > 0` at the
//! knots (`d_0 = d_K = 1`, so it joins the identity tails outside `[-B, B]`
//! with a continuous derivative). From unconstrained parameters per feature
//! (`K` widths, `K` heights, `K - 1` inner derivatives):
//!
//! ```text
//! w = m_w + (1 - K m_w) softmax(u_w),   h likewise,   d = m_d + softplus(u_d + c)
//! ```
//!
//! (`m_w`, `m_h`, `m_d` the minimum bin width, height and derivative; the
//! shift `c = log(exp(1 - m_d) - 1)` makes zero parameters the identity).
//! In bin `k`, with `s = h_k / w_k` and `t = (x - x_k) / w_k` in `[0, 1]`:
//!
//! ```text
//! y = y_k + h_k (s t^2 + d_k t (1 - t)) / (s + (d_{k+1} + d_k - 2 s) t (1 - t))
//! dy/dx = s^2 (d_{k+1} t^2 + 2 s t (1 - t) + d_k (1 - t)^2) / (s + (d_{k+1} + d_k - 2 s) t (1 - t))^2
//! ```
//!
//! The inverse solves the quadratic `a t^2 + b t + c = 0` in `t` with
//! `a = h_k (s - d_k) + (y - y_k) e`, `b = h_k d_k - (y - y_k) e`,
//! `c = -s (y - y_k)`, `e = d_{k+1} + d_k - 2 s`, by the root
//! `t = 2 c / (-b - sqrt(b^2 - 4 a c))`, which does not cancel. The bin of
//! each value is found with `searchsorted` on the knots and its parameters
//! gathered with `take_along_dim`, on the tensors' device.

use super::conditional::{without_context, ConditionalFlow};
use super::coupling::{CouplingMask, NetConfig};
use super::nn::{Made, MadeConfig, MadeOrder, Mlp, MlpConfig};
use super::{check_context, check_vector};
use crate::flow::{prefixed, Flow};
use flowtensor::{DType, Device, Error, Generator, Indices, Result, Tensor};

/// The bounds and minima of a rational-quadratic spline.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SplineConfig {
    /// Bins `K` (at least 1).
    pub bins: usize,
    /// The spline acts on `[-B, B]`; the identity outside.
    pub bound: f64,
    pub min_bin_width: f64,
    pub min_bin_height: f64,
    pub min_derivative: f64,
}

impl Default for SplineConfig {
    fn default() -> Self {
        SplineConfig {
            bins: 8,
            bound: 3.0,
            min_bin_width: 1e-3,
            min_bin_height: 1e-3,
            min_derivative: 1e-3,
        }
    }
}

impl SplineConfig {
    /// Unconstrained parameters per feature: `K` widths, `K` heights, `K - 1` derivatives.
    pub fn params_per_feature(&self) -> usize {
        3 * self.bins - 1
    }
}

/// Knot positions `(.., K + 1)` from unconstrained sizes `(.., K)`: a
/// softmax with a floor, summed from `-B` and pinned to `B` at the end.
fn knots(unnormalized: &Tensor, min_size: f64, bound: f64) -> Result<(Tensor, Tensor)> {
    let last = unnormalized.rank() - 1;
    let bins = unnormalized.shape()[last];
    let softmax = unnormalized
        .sub(&unnormalized.logsumexp(&[last], true)?)?
        .exp()?;
    let sizes = softmax
        .mul_scalar(1.0 - min_size * bins as f64)?
        .add_scalar(min_size)?;
    let inner = sizes
        .narrow(last, 0, bins - 1)?
        .cumsum(last)?
        .mul_scalar(2.0 * bound)?
        .add_scalar(-bound)?;
    let mut edge_shape = unnormalized.shape().to_vec();
    edge_shape[last] = 1;
    let low = Tensor::full(-bound, &edge_shape, inner.dtype(), inner.device())?;
    let high = Tensor::full(bound, &edge_shape, inner.dtype(), inner.device())?;
    let knots = Tensor::cat(&[&low, &inner, &high], last)?;
    let sizes = knots
        .narrow(last, 1, bins)?
        .sub(&knots.narrow(last, 0, bins)?)?;
    Ok((knots, sizes))
}

/// The spline applied elementwise to `x` (any shape `S`), with parameters
/// `params` of shape `S x (3K - 1)`; `inverse` applies its inverse. Returns
/// the output and `log |dy/dx|` (of the map applied) elementwise.
pub fn rational_quadratic(
    x: &Tensor,
    params: &Tensor,
    config: &SplineConfig,
    inverse: bool,
) -> Result<(Tensor, Tensor)> {
    let k = config.bins;
    let b = config.bound;
    let mut want = x.shape().to_vec();
    want.push(config.params_per_feature());
    if params.shape() != want.as_slice() || k == 0 {
        return Err(Error::shape(
            "rational_quadratic",
            &[x.shape(), params.shape()],
            format!("expected parameters of shape {want:?} ({k} bins: 3K - 1 per value)"),
        ));
    }
    let last = x.rank();
    let (cumwidths, widths) = knots(&params.narrow(last, 0, k)?, config.min_bin_width, b)?;
    let (cumheights, heights) = knots(&params.narrow(last, k, k)?, config.min_bin_height, b)?;
    let shift = (1.0 - config.min_derivative).exp_m1().ln();
    let inner = params
        .narrow(last, 2 * k, k - 1)?
        .add_scalar(shift)?
        .softplus()?
        .add_scalar(config.min_derivative)?;
    let mut edge_shape = x.shape().to_vec();
    edge_shape.push(1);
    let one = Tensor::full(1.0, &edge_shape, x.dtype(), x.device())?;
    let derivatives = Tensor::cat(&[&one, &inner, &one], last)?;

    // values outside [-B, B] pass through; inside, the spline on the clamped value
    let inside = x.ge_scalar(-b)?.mul(&x.le_scalar(b)?)?;
    let v = x.clamp(-b, b)?.unsqueeze(last)?;
    let searched = if inverse { &cumheights } else { &cumwidths };
    let bin: Indices = searched
        .searchsorted(&v.detach(), true)?
        .offset_clamped(-1, 0, k - 1)?;
    let at = |t: &Tensor| t.take_along_dim(&bin, last);
    let x_k = at(&cumwidths.narrow(last, 0, k)?)?;
    let y_k = at(&cumheights.narrow(last, 0, k)?)?;
    let w_k = at(&widths)?;
    let h_k = at(&heights)?;
    let d_k = at(&derivatives.narrow(last, 0, k)?)?;
    let d_k1 = at(&derivatives.narrow(last, 1, k)?)?;
    let slope = h_k.div(&w_k)?;
    let e = d_k1.add(&d_k)?.sub(&slope.mul_scalar(2.0)?)?;

    let (out, theta) = if inverse {
        let dy = v.sub(&y_k)?;
        let a = h_k.mul(&slope.sub(&d_k)?)?.add(&dy.mul(&e)?)?;
        let bq = h_k.mul(&d_k)?.sub(&dy.mul(&e)?)?;
        let c = slope.mul(&dy)?.neg()?;
        let disc = bq
            .square()?
            .sub(&a.mul(&c)?.mul_scalar(4.0)?)?
            .clamp(0.0, f64::INFINITY)?;
        let theta = c
            .mul_scalar(2.0)?
            .div(&bq.neg()?.sub(&disc.sqrt()?)?)?
            .clamp(0.0, 1.0)?;
        (theta.mul(&w_k)?.add(&x_k)?, theta)
    } else {
        let theta = v.sub(&x_k)?.div(&w_k)?.clamp(0.0, 1.0)?;
        let t1 = theta.mul(&theta.neg()?.add_scalar(1.0)?)?;
        let num = h_k.mul(&slope.mul(&theta.square()?)?.add(&d_k.mul(&t1)?)?)?;
        let den = slope.add(&e.mul(&t1)?)?;
        (y_k.add(&num.div(&den)?)?, theta)
    };
    // log dy/dx at theta (the forward's derivative; negated for the inverse)
    let t1 = theta.mul(&theta.neg()?.add_scalar(1.0)?)?;
    let one_minus = theta.neg()?.add_scalar(1.0)?;
    let den = slope.add(&e.mul(&t1)?)?;
    let numerator = d_k1
        .mul(&theta.square()?)?
        .add(&slope.mul(&t1)?.mul_scalar(2.0)?)?
        .add(&d_k.mul(&one_minus.square()?)?)?;
    let log_derivative = slope
        .square()?
        .mul(&numerator)?
        .log()?
        .sub(&den.square()?.log()?)?;
    let log_derivative = if inverse {
        log_derivative.neg()?
    } else {
        log_derivative
    };
    let out = out.squeeze(last)?;
    let log_derivative = log_derivative.squeeze(last)?;
    let zero = log_derivative.zeros_like()?;
    Ok((
        inside.where_cond(&out, x)?,
        inside.where_cond(&log_derivative, &zero)?,
    ))
}

/// Neural spline flow with coupling (NSF-C) on `(N, D)`: a [`CouplingMask`]
/// splits the features into a conditioning part `x_I` and a transformed part
/// `x_T`; an [`Mlp`] `net(x_I; c)` (zero-initialised output layer, so the
/// layer starts at the identity) gives `3K - 1` spline parameters for each
/// transformed feature.
///
/// - forward: `z_I = x_I`, `z_T = RQS(x_T; net(x_I; c))` elementwise
///   ([`rational_quadratic`]);
/// - inverse: `x_I = z_I`, `x_T = RQS^{-1}(z_T; net(z_I; c))`;
/// - log-det: `sum_T log |RQS'(x_T)|`.
///
/// Parameters `net.*`.
pub struct SplineCoupling {
    features: usize,
    dtype: DType,
    identity: Vec<usize>,
    transformed: Vec<usize>,
    restore: Vec<usize>,
    net: Mlp,
    spline: SplineConfig,
}

const COUPLING: &str = "SplineCoupling";
const AUTOREGRESSIVE: &str = "SplineAutoregressive";

fn check_spline(layer: &'static str, spline: &SplineConfig) -> Result<()> {
    let valid = spline.bins >= 1
        && spline.bound > 0.0
        && spline.bound.is_finite()
        && (0.0..1.0).contains(&(spline.min_bin_width * spline.bins as f64))
        && (0.0..1.0).contains(&(spline.min_bin_height * spline.bins as f64))
        && spline.min_derivative > 0.0
        && spline.min_derivative < 1.0;
    if valid {
        Ok(())
    } else {
        Err(Error::invalid(
            layer,
            format!(
                "invalid spline {spline:?}: need bins >= 1, a finite bound > 0, \
                 bins x minimum width and height below 1, and a minimum derivative in (0, 1)"
            ),
        ))
    }
}

impl SplineCoupling {
    pub fn new(
        mask: CouplingMask,
        spline: SplineConfig,
        net: NetConfig,
        dtype: DType,
        device: Device,
        gen: &mut Generator,
    ) -> Result<Self> {
        check_spline(COUPLING, &spline)?;
        let (identity, transformed) = (mask.conditioning_indices(), mask.transformed_indices());
        if identity.is_empty() || transformed.is_empty() {
            return Err(Error::invalid(
                COUPLING,
                "the mask must leave at least one feature unchanged and transform at least one",
            ));
        }
        let config = MlpConfig {
            in_features: identity.len(),
            out_features: transformed.len() * spline.params_per_feature(),
            hidden_features: net.hidden_features,
            hidden_layers: net.hidden_layers,
            context_features: net.context_features,
            activation: net.activation,
            zero_output: true,
        };
        let restore = mask.restore();
        Ok(SplineCoupling {
            features: mask.features(),
            dtype,
            identity,
            transformed,
            restore,
            net: Mlp::new(&config, dtype, device, gen)?,
            spline,
        })
    }

    /// The transformed part `y_T` of `y` (forward or inverse), with the log-det.
    fn apply(
        &self,
        y: &Tensor,
        context: Option<&Tensor>,
        inverse: bool,
    ) -> Result<(Tensor, Tensor)> {
        check_vector(COUPLING, self.features, self.dtype, y)?;
        check_context(
            COUPLING,
            self.net.config().context_features,
            y.shape()[0],
            self.dtype,
            context,
        )?;
        let y1 = y.index_select(1, &self.identity)?;
        let y2 = y.index_select(1, &self.transformed)?;
        let n = y.shape()[0];
        let params = self.net.forward(&y1, context)?.reshape(&[
            n,
            self.transformed.len(),
            self.spline.params_per_feature(),
        ])?;
        let (out2, log_derivative) = rational_quadratic(&y2, &params, &self.spline, inverse)?;
        let out = Tensor::cat(&[&y1, &out2], 1)?.index_select(1, &self.restore)?;
        Ok((out, log_derivative.sum(&[1], false)?))
    }
}

impl ConditionalFlow for SplineCoupling {
    fn context_features(&self) -> usize {
        self.net.config().context_features
    }
    fn forward_given(&self, x: &Tensor, context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        self.apply(x, context, false)
    }
    fn inverse_given(&self, z: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        Ok(self.apply(z, context, true)?.0)
    }
    fn inverse_with_logdet_given(
        &self,
        z: &Tensor,
        context: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        self.apply(z, context, true)
    }
}

impl Flow for SplineCoupling {
    fn name(&self) -> &'static str {
        COUPLING
    }
    without_context!();
    fn parameters(&self) -> Vec<(String, Tensor)> {
        prefixed("net", self.net.parameters())
    }
}

/// Autoregressive neural spline flow (NSF-AR) on `(N, D)`: a [`Made`] with
/// `3K - 1` outputs per feature (zero-initialised output layer: the
/// identity at the start) gives feature `i`'s spline from the features
/// before it in the [`MadeOrder`] (and the context `c`).
///
/// - forward (one MADE pass): `z_i = RQS(x_i; made(x)_i)`;
/// - log-det: `sum_i log |RQS'(x_i)|` (the Jacobian is triangular);
/// - inverse (`D` MADE passes on the device): from `x = 0`, repeat
///   `x = RQS^{-1}(z; made(x))`; after pass `k` the first `k` features in the
///   order are exact, so `D` passes give `x`.
///
/// Parameters `made.*`; buffers `made.layer{l}.mask`.
pub struct SplineAutoregressive {
    features: usize,
    dtype: DType,
    made: Made,
    spline: SplineConfig,
}

impl SplineAutoregressive {
    pub fn new(
        features: usize,
        order: MadeOrder,
        spline: SplineConfig,
        net: NetConfig,
        dtype: DType,
        device: Device,
        gen: &mut Generator,
    ) -> Result<Self> {
        check_spline(AUTOREGRESSIVE, &spline)?;
        let config = MadeConfig {
            features,
            hidden_features: net.hidden_features,
            hidden_layers: net.hidden_layers,
            params_per_feature: spline.params_per_feature(),
            context_features: net.context_features,
            order,
            activation: net.activation,
            zero_output: true,
        };
        Ok(SplineAutoregressive {
            features,
            dtype,
            made: Made::new(&config, dtype, device, gen)?,
            spline,
        })
    }

    /// The conditioner.
    pub fn made(&self) -> &Made {
        &self.made
    }

    fn check(&self, x: &Tensor, context: Option<&Tensor>) -> Result<()> {
        check_vector(AUTOREGRESSIVE, self.features, self.dtype, x)?;
        check_context(
            AUTOREGRESSIVE,
            self.made.config().context_features,
            x.shape()[0],
            self.dtype,
            context,
        )
    }
}

impl ConditionalFlow for SplineAutoregressive {
    fn context_features(&self) -> usize {
        self.made.config().context_features
    }

    fn forward_given(&self, x: &Tensor, context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        self.check(x, context)?;
        let params = self.made.forward(x, context)?;
        let (z, log_derivative) = rational_quadratic(x, &params, &self.spline, false)?;
        Ok((z, log_derivative.sum(&[1], false)?))
    }

    fn inverse_given(&self, z: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        Ok(self.inverse_with_logdet_given(z, context)?.0)
    }

    fn inverse_with_logdet_given(
        &self,
        z: &Tensor,
        context: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        self.check(z, context)?;
        let mut x = z.zeros_like()?;
        let mut log_derivative = x.clone();
        for _ in 0..self.features {
            let params = self.made.forward(&x, context)?;
            (x, log_derivative) = rational_quadratic(z, &params, &self.spline, true)?;
        }
        Ok((x, log_derivative.sum(&[1], false)?))
    }
}

impl Flow for SplineAutoregressive {
    fn name(&self) -> &'static str {
        AUTOREGRESSIVE
    }
    without_context!();
    fn parameters(&self) -> Vec<(String, Tensor)> {
        prefixed("made", self.made.parameters())
    }
    fn buffers(&self) -> Vec<(String, Tensor)> {
        prefixed("made", self.made.buffers())
    }
}
