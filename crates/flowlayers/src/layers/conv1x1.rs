//! Invertible 1x1 convolutions (Glow; Emerging Convolutions): a learned
//! `C x C` matrix `W` applied to the channel vector at every position.
//!
//! All three layers map `x` of shape `(N, C, ...)` (images `(N, C, H, W)` or
//! flat `(N, C)`) to `z[:, i, p] = sum_j W[i, j] x[:, j, p]` at every position
//! `p`, so the Jacobian is block diagonal with `P` copies of `W` (`P` the
//! product of the dimensions after the channel one, 1 for flat inputs) and
//! `log |det J| = P log |det W|` per sample. They differ in how `W` is
//! parametrised:
//!
//! | layer | `W` | log-det per position | inverse |
//! | --- | --- | --- | --- |
//! | [`Conv1x1`] | the matrix itself | `slogdet(W)` in f64, `O(C^3)` | `W^{-1}` in f64 |
//! | [`Conv1x1Lu`] | `P L (U + diag(sign * exp(log_s)))` | `sum(log_s)` | triangular solves |
//! | [`Conv1x1Qr`] | `H_1 ... H_k (U + diag(sign * exp(log_s)))` | `sum(log_s)` | `Q^T`, a triangular solve |
//!
//! Every layer is initialised well conditioned (orthogonal `W`) from a
//! [`Generator`]; the random matrix is drawn and factored in f64 whatever the
//! layer's dtype, so f32 and f64 layers built from one seed agree.

use crate::flow::{parameter, Flow};
use flowtensor::{DType, Device, Error, Generator, Result, Tensor};

/// Checks that `x` is `(batch, channels, ...)` in the layer's dtype.
fn check_input(layer: &'static str, channels: usize, dtype: DType, x: &Tensor) -> Result<()> {
    if x.rank() < 2 || x.shape()[1] != channels {
        return Err(Error::shape(
            layer,
            &[x.shape()],
            format!("expected (batch, {channels}, ...)"),
        ));
    }
    if x.dtype() != dtype {
        return Err(Error::invalid(
            layer,
            format!(
                "input of shape {:?} has dtype {:?} but the layer holds {dtype:?}",
                x.shape(),
                x.dtype()
            ),
        ));
    }
    Ok(())
}

/// Checks that a layer has at least one channel.
fn check_channels(layer: &'static str, channels: usize) -> Result<()> {
    if channels == 0 {
        return Err(Error::invalid(layer, "needs at least one channel"));
    }
    Ok(())
}

/// `Q = H_1 ... H_k` `(C, C)` for Householder vectors `(k, C)`, with
/// `H_i = I - 2 v_i^T v_i / (v_i v_i^T)` (differentiable; orthogonal for any `v_i != 0`).
pub(crate) fn householder_product(vectors: &Tensor) -> Result<Tensor> {
    let mut q = Tensor::eye(vectors.shape()[1], vectors.dtype(), vectors.device())?;
    for i in 0..vectors.shape()[0] {
        // Q H = Q - 2 (Q v^T) v / (v v^T), v a row vector
        let v = vectors.narrow(0, i, 1)?;
        let qv = q.matmul(&v.transpose(0, 1)?)?;
        let scale = v.square()?.sum_all()?.div_scalar(2.0)?;
        q = q.sub(&qv.matmul(&v)?.div(&scale)?)?;
    }
    Ok(q)
}

/// `m` applied to the channels of `x` `(N, C, ...)`: `x @ m^T` for flat
/// inputs, otherwise `m @ x` with `x` viewed as `(N, C, positions)`.
pub(crate) fn mix_channels(m: &Tensor, x: &Tensor) -> Result<Tensor> {
    if x.rank() == 2 {
        return x.matmul(&m.transpose(0, 1)?);
    }
    let (n, c) = (x.shape()[0], x.shape()[1]);
    m.matmul(&x.reshape(&[n, c, positions(x)])?)?
        .reshape(x.shape())
}

/// The number of positions per channel: the product of the dimensions after the channel one.
fn positions(x: &Tensor) -> usize {
    x.shape()[2..].iter().product()
}

/// `positions(x) * per_position` (a rank-0 tensor) for every sample of `x`, shape `[N]`.
fn per_sample(per_position: &Tensor, x: &Tensor) -> Result<Tensor> {
    per_position
        .mul_scalar(positions(x) as f64)?
        .broadcast_as(&[x.shape()[0]])?
        .contiguous()
}

/// `Flow` for a layer `W` with `log |det W| = sum(log_scale)`: forward mixes
/// the channels with `weight()`, inverse with `inverse_weight()`, and the
/// log-det is `positions * sum(log_scale)` per sample (negated for the inverse).
macro_rules! triangular_flow {
    ($layer:ty, $name:literal, parameters: [$($param:literal => $pfield:ident),*], buffers: [$($buf:literal => $bfield:ident),*]) => {
        impl Flow for $layer {
            fn name(&self) -> &'static str {
                $name
            }

            fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
                self.check(x)?;
                let z = mix_channels(&self.weight()?, x)?;
                Ok((z, per_sample(&self.log_scale.sum_all()?, x)?))
            }

            fn inverse(&self, z: &Tensor) -> Result<Tensor> {
                self.check(z)?;
                mix_channels(&self.inverse_weight()?, z)
            }

            fn inverse_with_logdet(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
                let x = self.inverse(z)?;
                Ok((x, per_sample(&self.log_scale.sum_all()?, z)?.neg()?))
            }

            fn parameters(&self) -> Vec<(String, Tensor)> {
                vec![$(($param.into(), self.$pfield.clone())),*]
            }

            fn buffers(&self) -> Vec<(String, Tensor)> {
                vec![$(($buf.into(), self.$bfield.clone())),*]
            }
        }
    };
}

/// A random orthogonal `n x n` f64 matrix on the CPU: `Q` of the QR of a
/// standard Gaussian matrix (Haar distributed, since `R` has a positive diagonal).
fn random_orthogonal(n: usize, gen: &mut Generator) -> Result<Tensor> {
    let (q, _) = gen.randn(&[n, n], DType::F64, Device::Cpu)?.qr()?;
    q.contiguous()
}

/// `t` (a constant) in `dtype` on `device`.
fn placed(t: &Tensor, dtype: DType, device: Device) -> Result<Tensor> {
    Ok(t.to_dtype(dtype)?.to_device(device)?.contiguous()?.detach())
}

/// The `n x n` mask with ones strictly above the diagonal (`upper`) or
/// strictly below it, zeros elsewhere.
fn strict_triangle(n: usize, upper: bool, dtype: DType, device: Device) -> Result<Tensor> {
    let v: Vec<f64> = (0..n * n)
        .map(|k| {
            let (i, j) = (k / n, k % n);
            if (upper && j > i) || (!upper && j < i) {
                1.0
            } else {
                0.0
            }
        })
        .collect();
    placed(&Tensor::from_vec(v, &[n, n], Device::Cpu)?, dtype, device)
}

/// `masked * mask + diag(sign * exp(log_s))`: a triangular factor with the
/// learned off-diagonal part and the signed exponential diagonal.
fn triangular_factor(
    masked: &Tensor,
    mask: &Tensor,
    sign: &Tensor,
    log_s: &Tensor,
    eye: &Tensor,
) -> Result<Tensor> {
    let n = log_s.shape()[0];
    let diagonal = sign.mul(&log_s.exp()?)?.reshape(&[1, n])?;
    masked.mul(mask)?.add(&eye.mul(&diagonal)?)
}

/// Plain invertible 1x1 convolution (Kingma and Dhariwal, Glow, 2018).
///
/// With `W` a learned `C x C` matrix (parameter `weight`) and `P` the number
/// of positions per channel (`H * W` for images, 1 for flat inputs):
/// - forward: `z[:, i] = sum_j W[i, j] x[:, j]` at every position;
/// - inverse: `x[:, i] = sum_j (W^{-1})[i, j] z[:, j]`, with `W^{-1}` computed
///   in f64 (LU with partial pivoting) and cast back to the layer's dtype;
/// - log-det: `P * log |det W|` per sample, with `slogdet` computed in f64
///   (cast up, cast back) as in Glow, and differentiable
///   (`d log|det W| / dW = W^{-T}`).
///
/// Initialised to a random orthogonal matrix (`log |det W| = 0`). Costs
/// `O(C^3)` per forward for the determinant; [`Conv1x1Lu`] and [`Conv1x1Qr`]
/// avoid it.
pub struct Conv1x1 {
    channels: usize,
    weight: Tensor,
}

impl Conv1x1 {
    /// A 1x1 convolution over `channels` channels initialised to a random
    /// orthogonal matrix drawn from `gen` (in f64, then cast to `dtype`).
    pub fn new(channels: usize, dtype: DType, device: Device, gen: &mut Generator) -> Result<Self> {
        check_channels("Conv1x1", channels)?;
        let w = random_orthogonal(channels, gen)?;
        Self::from_weight(&placed(&w, dtype, device)?)
    }

    /// A 1x1 convolution with the given `(C, C)` weight (copied; its dtype and
    /// device become the layer's). A singular weight is an error.
    pub fn from_weight(weight: &Tensor) -> Result<Self> {
        let s = weight.shape();
        if s.len() != 2 || s[0] != s[1] || s[0] == 0 {
            return Err(Error::shape(
                "Conv1x1",
                &[s],
                "the weight must be a non-empty square matrix (C, C)",
            ));
        }
        let (sign, _) = weight.detach().to_dtype(DType::F64)?.slogdet()?;
        if sign.to_scalar()? == 0.0 {
            return Err(Error::invalid("Conv1x1", "the weight is singular"));
        }
        Ok(Conv1x1 {
            channels: s[0],
            weight: parameter(weight.clone())?,
        })
    }

    /// `W` `(C, C)`: the parameter itself.
    pub fn weight(&self) -> Result<Tensor> {
        Ok(self.weight.clone())
    }

    /// `log |det W|` as a rank-0 tensor of the layer's dtype, computed in f64.
    fn log_abs_det(&self) -> Result<Tensor> {
        let (_, log_abs_det) = self.weight.to_dtype(DType::F64)?.slogdet()?;
        log_abs_det.to_dtype(self.weight.dtype())
    }
}

impl Flow for Conv1x1 {
    fn name(&self) -> &'static str {
        "Conv1x1"
    }

    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        check_input("Conv1x1", self.channels, self.weight.dtype(), x)?;
        let z = mix_channels(&self.weight, x)?;
        Ok((z, per_sample(&self.log_abs_det()?, x)?))
    }

    fn inverse(&self, z: &Tensor) -> Result<Tensor> {
        check_input("Conv1x1", self.channels, self.weight.dtype(), z)?;
        let w_inv = self
            .weight
            .to_dtype(DType::F64)?
            .inverse()?
            .to_dtype(self.weight.dtype())?;
        mix_channels(&w_inv, z)
    }

    fn inverse_with_logdet(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        let x = self.inverse(z)?;
        Ok((x, per_sample(&self.log_abs_det()?, z)?.neg()?))
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        vec![("weight".into(), self.weight.clone())]
    }
}

/// LU-parametrised invertible 1x1 convolution (Glow, section 3.2).
///
/// `W = P L (U + diag(sign * exp(log_s)))` with
/// - `P` a fixed permutation matrix (buffer `permutation`),
/// - `L` unit lower triangular: the strictly lower part of the parameter
///   `lower` `(C, C)` plus the identity,
/// - `U` strictly upper triangular: the strictly upper part of the parameter
///   `upper` `(C, C)`,
/// - `log_s` the parameter `log_scale` `(C,)` and `sign` a fixed vector of
///   `+-1` (buffer `sign`).
///
/// `lower` and `upper` are multiplied by constant strictly-triangular masks
/// wherever they are used, so their other entries (which an optimizer may
/// change) never reach `W` and get exactly zero gradient. With `P` the number
/// of positions per channel:
/// - forward: `z[:, i] = sum_j W[i, j] x[:, j]` at every position;
/// - inverse: `x = W^{-1} z` with
///   `W^{-1} = (U + diag)^{-1} (L^{-1} P^T)`, formed by two triangular solves
///   against the `C x C` matrix `P^T` (`O(C^3)`, no pivoting, in the layer's
///   dtype) and then applied to `z` as one product;
/// - log-det: `P * sum(log_s)` per sample (`det P det L = +-1`).
///
/// Initialised from the LU decomposition with partial pivoting of a random
/// orthogonal matrix ([`Conv1x1Lu::new`]) or of any invertible weight
/// ([`Conv1x1Lu::from_weight`]), computed in f64 ([`Tensor::lu`]):
/// `Pi A = L' U'` gives `P = Pi^T`, `L = L'`, `U` the strict upper part of
/// `U'` and `sign * exp(log_s)` its diagonal, so `W = A` to rounding.
pub struct Conv1x1Lu {
    channels: usize,
    permutation: Tensor,
    sign: Tensor,
    lower: Tensor,
    upper: Tensor,
    log_scale: Tensor,
    lower_mask: Tensor,
    upper_mask: Tensor,
    eye: Tensor,
}

impl Conv1x1Lu {
    /// The LU parametrisation of a random orthogonal matrix drawn from `gen`
    /// (the matrix [`Conv1x1::new`] draws from the same generator state).
    pub fn new(channels: usize, dtype: DType, device: Device, gen: &mut Generator) -> Result<Self> {
        check_channels("Conv1x1Lu", channels)?;
        Self::from_f64(&random_orthogonal(channels, gen)?, dtype, device)
    }

    /// The LU parametrisation of the given invertible `(C, C)` weight (its
    /// dtype and device become the layer's; factored in f64).
    pub fn from_weight(weight: &Tensor) -> Result<Self> {
        let s = weight.shape();
        if s.len() != 2 || s[0] != s[1] || s[0] == 0 {
            return Err(Error::shape(
                "Conv1x1Lu",
                &[s],
                "the weight must be a non-empty square matrix (C, C)",
            ));
        }
        let w = weight
            .detach()
            .to_dtype(DType::F64)?
            .to_device(Device::Cpu)?;
        Self::from_f64(&w, weight.dtype(), weight.device())
    }

    /// Factors the f64 CPU matrix `w` and stores the factors in `dtype` on `device`.
    fn from_f64(w: &Tensor, dtype: DType, device: Device) -> Result<Self> {
        let n = w.shape()[0];
        let lu = w.lu()?;
        let factors = lu.factors();
        let eye64 = Tensor::eye(n, DType::F64, Device::Cpu)?;
        let diagonal = factors.mul(&eye64)?.sum(&[1], false)?;
        if diagonal.to_vec::<f64>()?.contains(&0.0) {
            return Err(Error::invalid("Conv1x1Lu", "the weight is singular"));
        }
        let sign = diagonal.gt_scalar(0.0)?.affine(2.0, -1.0)?;
        let (lower_mask, upper_mask) = (
            strict_triangle(n, false, dtype, device)?,
            strict_triangle(n, true, dtype, device)?,
        );
        let lower = placed(factors, dtype, device)?.mul(&lower_mask)?;
        let upper = placed(factors, dtype, device)?.mul(&upper_mask)?;
        Ok(Conv1x1Lu {
            channels: n,
            permutation: placed(&lu.p()?.transpose(0, 1)?, dtype, device)?,
            sign: placed(&sign, dtype, device)?,
            lower: parameter(lower)?,
            upper: parameter(upper)?,
            log_scale: parameter(placed(&diagonal.abs()?.log()?, dtype, device)?)?,
            lower_mask,
            upper_mask,
            eye: Tensor::eye(n, dtype, device)?,
        })
    }

    /// `(P, L, U)` with `W = P L U`: the fixed permutation matrix, the unit
    /// lower triangular factor and the upper triangular factor with diagonal
    /// `sign * exp(log_s)` (differentiable in the parameters).
    pub fn factors(&self) -> Result<(Tensor, Tensor, Tensor)> {
        let l = self.lower.mul(&self.lower_mask)?.add(&self.eye)?;
        let u = triangular_factor(
            &self.upper,
            &self.upper_mask,
            &self.sign,
            &self.log_scale,
            &self.eye,
        )?;
        Ok((self.permutation.clone(), l, u))
    }

    /// `W = P L U` `(C, C)`, differentiable in the parameters.
    pub fn weight(&self) -> Result<Tensor> {
        let (p, l, u) = self.factors()?;
        p.matmul(&l.matmul(&u)?)
    }

    /// `W^{-1} = U^{-1} (L^{-1} P^T)` by two triangular solves.
    fn inverse_weight(&self) -> Result<Tensor> {
        let (p, l, u) = self.factors()?;
        let l_inv_pt = l.triangular_solve(&p.transpose(0, 1)?, false, true)?;
        u.triangular_solve(&l_inv_pt, true, false)
    }

    fn check(&self, x: &Tensor) -> Result<()> {
        check_input("Conv1x1Lu", self.channels, self.log_scale.dtype(), x)
    }
}

triangular_flow!(
    Conv1x1Lu,
    "Conv1x1Lu",
    parameters: ["lower" => lower, "upper" => upper, "log_scale" => log_scale],
    buffers: ["permutation" => permutation, "sign" => sign]
);

/// QR-parametrised invertible 1x1 convolution (Hoogeboom, van den Berg and
/// Welling, "Emerging Convolutions for Generative Normalizing Flows", 2019).
///
/// `W = Q R` with
/// - `Q = H_1 H_2 ... H_k` a product of Householder reflections
///   `H_i = I - 2 v_i v_i^T / (v_i^T v_i)`, the `v_i` the rows of the
///   parameter `householder` `(k, C)` (orthogonal for any non-zero `v_i`,
///   so `|det Q| = 1`);
/// - `R = U + diag(sign * exp(log_s))` upper triangular, `U` the strictly
///   upper part of the parameter `upper` `(C, C)` (masked, so its other
///   entries get zero gradient), `log_s` the parameter `log_scale` `(C,)`
///   and `sign` a fixed vector of `+-1` (buffer `sign`).
///
/// With `P` the number of positions per channel:
/// - forward: `z[:, i] = sum_j W[i, j] x[:, j]` at every position;
/// - inverse: `x = W^{-1} z` with `W^{-1} = R^{-1} Q^T`, formed by one
///   triangular solve against the `C x C` matrix `Q^T` and applied to `z` as
///   one product;
/// - log-det: `P * sum(log_s)` per sample.
///
/// Initialised with standard Gaussian `v_i`, `U = 0`, `log_s = 0` and
/// `sign = +1`, so `W = Q` is orthogonal (perfectly conditioned).
pub struct Conv1x1Qr {
    channels: usize,
    householder: Tensor,
    upper: Tensor,
    log_scale: Tensor,
    sign: Tensor,
    upper_mask: Tensor,
    eye: Tensor,
}

impl Conv1x1Qr {
    /// A QR 1x1 convolution with `k = channels` Householder reflections.
    pub fn new(channels: usize, dtype: DType, device: Device, gen: &mut Generator) -> Result<Self> {
        Self::with_reflections(channels, channels, dtype, device, gen)
    }

    /// A QR 1x1 convolution with `reflections` (at least 1) Householder
    /// reflections, their vectors drawn from `gen` (in f64, then cast).
    pub fn with_reflections(
        channels: usize,
        reflections: usize,
        dtype: DType,
        device: Device,
        gen: &mut Generator,
    ) -> Result<Self> {
        check_channels("Conv1x1Qr", channels)?;
        if reflections == 0 {
            return Err(Error::invalid(
                "Conv1x1Qr",
                "needs at least one Householder reflection",
            ));
        }
        let v = gen.randn(&[reflections, channels], DType::F64, Device::Cpu)?;
        Ok(Conv1x1Qr {
            channels,
            householder: parameter(placed(&v, dtype, device)?)?,
            upper: parameter(Tensor::zeros(&[channels, channels], dtype, device)?)?,
            log_scale: parameter(Tensor::zeros(&[channels], dtype, device)?)?,
            sign: Tensor::ones(&[channels], dtype, device)?,
            upper_mask: strict_triangle(channels, true, dtype, device)?,
            eye: Tensor::eye(channels, dtype, device)?,
        })
    }

    /// `(Q, R)` with `W = Q R`: `Q = H_1 ... H_k` orthogonal and `R` upper
    /// triangular with diagonal `sign * exp(log_s)` (differentiable).
    pub fn factors(&self) -> Result<(Tensor, Tensor)> {
        let q = householder_product(&self.householder)?;
        let r = triangular_factor(
            &self.upper,
            &self.upper_mask,
            &self.sign,
            &self.log_scale,
            &self.eye,
        )?;
        Ok((q, r))
    }

    /// `W = Q R` `(C, C)`, differentiable in the parameters.
    pub fn weight(&self) -> Result<Tensor> {
        let (q, r) = self.factors()?;
        q.matmul(&r)
    }

    /// `W^{-1} = R^{-1} Q^T` by one triangular solve.
    fn inverse_weight(&self) -> Result<Tensor> {
        let (q, r) = self.factors()?;
        r.triangular_solve(&q.transpose(0, 1)?, true, false)
    }

    fn check(&self, x: &Tensor) -> Result<()> {
        check_input("Conv1x1Qr", self.channels, self.log_scale.dtype(), x)
    }
}

triangular_flow!(
    Conv1x1Qr,
    "Conv1x1Qr",
    parameters: ["householder" => householder, "upper" => upper, "log_scale" => log_scale],
    buffers: ["sign" => sign]
);
