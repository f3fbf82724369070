//! Linear flows on vectors: an LU-parametrised invertible matrix and fixed
//! permutations.

use super::{check_vector, placed, unconditional, zero_logdet};
use crate::flow::{parameter, Flow};
use crate::layers::Permutation;
use flowtensor::{DType, Device, Error, Generator, Result, Tensor};

const NAME: &str = "InvertibleLinear";

/// The `n x n` 0/1 mask of the strict upper (`upper`) or strict lower triangle.
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
    super::constant(v, &[n, n], dtype, device)
}

/// An invertible linear map `z = W x` on `(N, D)` with `W = P L U`
/// (Kingma and Dhariwal, Glow, 2018, section 3.2; nflows' `LULinear`):
///
/// - `P` a fixed permutation matrix (buffer `permutation` `(D, D)`);
/// - `L` unit lower triangular: the strict lower part of the parameter
///   `lower` `(D, D)` plus `I` (entries outside the triangle are masked out
///   and get zero gradient);
/// - `U` upper triangular: the strict upper part of the parameter `upper`
///   plus `diag(sign * exp(log_scale))`, `log_scale` `(D)` a parameter and
///   `sign` a fixed `+-1` vector (buffer `sign`);
/// - forward: `z = x W^T`, one product on the device;
/// - log-det: `sum log|diag U| = sum(log_scale)` per sample;
/// - inverse: `x = z W^{-T}` with `W^{-1} = U^{-1} (L^{-1} P^T)` formed by two
///   triangular solves of the `D x D` system (by flowtensor's solver, which
///   works on host copies of the small matrices), then one product.
pub struct InvertibleLinear {
    features: usize,
    permutation: Tensor,
    sign: Tensor,
    lower: Tensor,
    upper: Tensor,
    log_scale: Tensor,
    lower_mask: Tensor,
    upper_mask: Tensor,
    eye: Tensor,
}

impl InvertibleLinear {
    /// The LU factorisation (with partial pivoting, so `P` is the pivoting's
    /// permutation) of a random orthogonal matrix: the `Q` of the QR
    /// factorisation of a standard Gaussian matrix drawn from `gen` in f64.
    pub fn new(features: usize, dtype: DType, device: Device, gen: &mut Generator) -> Result<Self> {
        if features == 0 {
            return Err(Error::invalid(NAME, "needs at least one feature"));
        }
        let (q, _) = gen
            .randn(&[features, features], DType::F64, Device::Cpu)?
            .qr()?;
        Self::from_weight(&placed(&q, dtype, device)?)
    }

    /// `W = I`: `P = L = U = I` (`lower = upper = 0`, `log_scale = 0`).
    pub fn identity(features: usize, dtype: DType, device: Device) -> Result<Self> {
        if features == 0 {
            return Err(Error::invalid(NAME, "needs at least one feature"));
        }
        Self::from_weight(&Tensor::eye(features, dtype, device)?)
    }

    /// The LU parametrisation of the invertible `(D, D)` `weight` (factored
    /// in f64 on the host; its dtype and device become the layer's).
    pub fn from_weight(weight: &Tensor) -> Result<Self> {
        let s = weight.shape();
        if s.len() != 2 || s[0] != s[1] || s[0] == 0 {
            return Err(Error::shape(
                NAME,
                &[s],
                "the weight must be a non-empty square matrix (D, D)",
            ));
        }
        let (n, dtype, device) = (s[0], weight.dtype(), weight.device());
        let w = weight
            .detach()
            .to_dtype(DType::F64)?
            .to_device(Device::Cpu)?;
        let lu = w.lu()?;
        let factors = lu.factors();
        let diagonal = factors
            .mul(&Tensor::eye(n, DType::F64, Device::Cpu)?)?
            .sum(&[1], false)?;
        if diagonal.to_vec_f64()?.contains(&0.0) {
            return Err(Error::invalid(NAME, "the weight is singular"));
        }
        let sign = diagonal.gt_scalar(0.0)?.affine(2.0, -1.0)?;
        let (lower_mask, upper_mask) = (
            strict_triangle(n, false, dtype, device)?,
            strict_triangle(n, true, dtype, device)?,
        );
        let factors = placed(factors, dtype, device)?;
        Ok(InvertibleLinear {
            features: n,
            // P A = L U, so A = P^T L U
            permutation: placed(&lu.p()?.transpose(0, 1)?, dtype, device)?,
            sign: placed(&sign, dtype, device)?,
            lower: parameter(factors.mul(&lower_mask)?)?,
            upper: parameter(factors.mul(&upper_mask)?)?,
            log_scale: parameter(placed(&diagonal.abs()?.log()?, dtype, device)?)?,
            lower_mask,
            upper_mask,
            eye: Tensor::eye(n, dtype, device)?,
        })
    }

    /// `(P, L, U)` with `W = P L U`, differentiable in the parameters.
    pub fn factors(&self) -> Result<(Tensor, Tensor, Tensor)> {
        let l = self.lower.mul(&self.lower_mask)?.add(&self.eye)?;
        let diagonal = self
            .sign
            .mul(&self.log_scale.exp()?)?
            .reshape(&[1, self.features])?;
        let u = self
            .upper
            .mul(&self.upper_mask)?
            .add(&self.eye.mul(&diagonal)?)?;
        Ok((self.permutation.clone(), l, u))
    }

    /// `W = P L U` `(D, D)`, differentiable in the parameters.
    pub fn weight(&self) -> Result<Tensor> {
        let (p, l, u) = self.factors()?;
        p.matmul(&l.matmul(&u)?)
    }

    /// `W^{-1} = U^{-1} (L^{-1} P^T)`.
    fn inverse_weight(&self) -> Result<Tensor> {
        let (p, l, u) = self.factors()?;
        let l_inv_pt = l.triangular_solve(&p.transpose(0, 1)?, false, true)?;
        u.triangular_solve(&l_inv_pt, true, false)
    }

    fn logdet(&self, n: usize) -> Result<Tensor> {
        self.log_scale.sum_all()?.broadcast_as(&[n])?.contiguous()
    }
}

impl Flow for InvertibleLinear {
    fn name(&self) -> &'static str {
        NAME
    }

    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        check_vector(NAME, self.features, self.log_scale.dtype(), x)?;
        let z = x.matmul(&self.weight()?.transpose(0, 1)?)?;
        Ok((z, self.logdet(x.shape()[0])?))
    }

    fn inverse(&self, z: &Tensor) -> Result<Tensor> {
        check_vector(NAME, self.features, self.log_scale.dtype(), z)?;
        z.matmul(&self.inverse_weight()?.transpose(0, 1)?)
    }

    fn inverse_with_logdet(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        Ok((self.inverse(z)?, self.logdet(z.shape()[0])?.neg()?))
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        vec![
            ("lower".into(), self.lower.clone()),
            ("upper".into(), self.upper.clone()),
            ("log_scale".into(), self.log_scale.clone()),
        ]
    }

    fn buffers(&self) -> Vec<(String, Tensor)> {
        vec![
            ("permutation".into(), self.permutation.clone()),
            ("sign".into(), self.sign.clone()),
        ]
    }
}

/// A fixed feature permutation on `(N, D)` inputs, by [`Permutation`]
/// (forward `z[:, i] = x[:, perm[i]]`, inverse by the inverse permutation,
/// log-det 0, the buffer `permutation`) restricted to flat inputs.
struct FlatPermutation {
    name: &'static str,
    features: usize,
    inner: Permutation,
}

impl FlatPermutation {
    fn check(&self, x: &Tensor) -> Result<()> {
        // any dtype: a permutation has no parameters
        check_vector(self.name, self.features, x.dtype(), x)
    }

    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        self.check(x)?;
        self.inner.forward(x)
    }

    fn inverse(&self, z: &Tensor) -> Result<Tensor> {
        self.check(z)?;
        self.inner.inverse(z)
    }
}

/// Reverses the order of the features of `(N, D)` inputs:
/// `z[:, i] = x[:, D - 1 - i]`, its own inverse, log-det 0 (the standard
/// interleaving layer between autoregressive flows). Buffer `permutation`.
pub struct ReversePermutation(FlatPermutation);

impl ReversePermutation {
    pub fn new(features: usize) -> Result<Self> {
        Ok(ReversePermutation(FlatPermutation {
            name: "ReversePermutation",
            features,
            inner: Permutation::reverse(features)?,
        }))
    }

    /// `perm`, with `z[:, i] = x[:, perm[i]]`.
    pub fn indices(&self) -> Result<Vec<usize>> {
        self.0.inner.indices()
    }
}

/// A uniformly random fixed permutation of the features of `(N, D)` inputs,
/// drawn by a generator with the given seed (the same seed, the same
/// permutation): `z[:, i] = x[:, perm[i]]`, inverse `x[:, perm[i]] = z[:, i]`,
/// log-det 0. Buffer `permutation`.
pub struct RandomPermutation(FlatPermutation);

impl RandomPermutation {
    pub fn new(features: usize, seed: u64) -> Result<Self> {
        Ok(RandomPermutation(FlatPermutation {
            name: "RandomPermutation",
            features,
            inner: Permutation::shuffle(features, &mut Generator::new(seed))?,
        }))
    }

    /// `perm`, with `z[:, i] = x[:, perm[i]]`.
    pub fn indices(&self) -> Result<Vec<usize>> {
        self.0.inner.indices()
    }
}

macro_rules! permutation_flow {
    ($layer:ident) => {
        impl Flow for $layer {
            fn name(&self) -> &'static str {
                self.0.name
            }
            fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
                self.0.forward(x)
            }
            fn inverse(&self, z: &Tensor) -> Result<Tensor> {
                self.0.inverse(z)
            }
            fn inverse_with_logdet(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
                Ok((self.0.inverse(z)?, zero_logdet(z)?))
            }
            fn parameters(&self) -> Vec<(String, Tensor)> {
                Vec::new()
            }
            fn buffers(&self) -> Vec<(String, Tensor)> {
                self.0.inner.buffers()
            }
        }
    };
}

permutation_flow!(ReversePermutation);
permutation_flow!(RandomPermutation);

unconditional!(InvertibleLinear, ReversePermutation, RandomPermutation);
