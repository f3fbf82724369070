//! The planar flow (Rezende and Mohamed, "Variational Inference with
//! Normalizing Flows", 2015).

use super::{check_vector, constant, unconditional};
use crate::flow::{parameter, Flow};
use flowtensor::{DType, Device, Error, Generator, Result, Tensor};

const NAME: &str = "Planar";

/// `z = x + u_hat tanh(w.x + b)` on `(N, D)`, with parameters `w` `(D)`,
/// `u` `(D)` and `bias` `(1)`.
///
/// - invertibility: `u_hat = u + (m(w.u) - w.u) w / |w|^2` with
///   `m(a) = -1 + softplus(a)`, so `w.u_hat = m(w.u) > -1` whatever the
///   parameters (Rezende and Mohamed, appendix A);
/// - log-det: `log(1 + w.u_hat tanh'(w.x + b))`, by the matrix determinant
///   lemma (`1 + m tanh' > 0` since `tanh'` lies in `(0, 1]`);
/// - inverse: the component along `w` determines everything. With
///   `t = w.x`, `w.z = t + m tanh(t + b)`, strictly increasing in `t`
///   (derivative `1 + m tanh' > 0`), and the root lies in
///   `[w.z - |m|, w.z + |m|]`. It is found per sample by Newton's method
///   safeguarded by bisection, in f64 on the host (the one host round trip:
///   `w.z` is read back and `t` written out), to a step below
///   `1e-15 (1 + |t|)`; then `x = z - u_hat tanh(t + b)` on the device.
///   Near the invertibility boundary (`m -> -1`) the map is nearly flat at
///   `t = -b`, and the inverse's accuracy degrades like `eps / (1 + m)`.
///   Not differentiable (the root is found outside the graph).
///
/// `w` must not be zero (`u_hat` divides by `|w|^2`).
pub struct Planar {
    features: usize,
    w: Tensor,
    u: Tensor,
    bias: Tensor,
}

impl Planar {
    /// A planar flow on `features` features: `w` and `u` drawn as
    /// `N(0, 1/D)` from `gen` (f64 on the host, then cast), bias 0.
    pub fn new(features: usize, dtype: DType, device: Device, gen: &mut Generator) -> Result<Self> {
        if features == 0 {
            return Err(Error::invalid(NAME, "needs at least one feature"));
        }
        let scale = 1.0 / (features as f64).sqrt();
        let w = gen.normal(&[features], 0.0, scale, DType::F64, Device::Cpu)?;
        let u = gen.normal(&[features], 0.0, scale, DType::F64, Device::Cpu)?;
        Ok(Planar {
            features,
            w: parameter(super::placed(&w, dtype, device)?)?,
            u: parameter(super::placed(&u, dtype, device)?)?,
            bias: parameter(constant(vec![0.0], &[1], dtype, device)?)?,
        })
    }

    /// `(u_hat (D), m = w.u_hat (rank 0))`, differentiable.
    pub fn u_hat(&self) -> Result<(Tensor, Tensor)> {
        let wu = self.w.mul(&self.u)?.sum_all()?;
        let m = wu.softplus()?.sub_scalar(1.0)?;
        let w_sq = self.w.square()?.sum_all()?;
        let u_hat = self.u.add(&self.w.mul(&m.sub(&wu)?.div(&w_sq)?)?)?;
        Ok((u_hat, m))
    }

    /// `w.x + b` `(N, 1)`.
    fn pre_activation(&self, x: &Tensor) -> Result<Tensor> {
        x.matmul(&self.w.reshape(&[self.features, 1])?)?
            .add(&self.bias)
    }
}

/// The root `t` of `t + m tanh(t + b) = c` for `m > -1` (increasing in `t`),
/// in `[c - |m|, c + |m|]`: Newton steps, replaced by bisection whenever
/// they leave the bracket.
pub(crate) fn solve_planar(m: f64, b: f64, c: f64) -> f64 {
    let (mut lo, mut hi) = (c - m.abs(), c + m.abs());
    let mut t = c.clamp(lo, hi);
    for _ in 0..300 {
        let th = (t + b).tanh();
        let g = t + m * th - c;
        if g == 0.0 {
            return t;
        }
        if g > 0.0 {
            hi = t;
        } else {
            lo = t;
        }
        let slope = 1.0 + m * (1.0 - th * th);
        let newton = t - g / slope;
        let next = if newton > lo && newton < hi {
            newton
        } else {
            0.5 * (lo + hi)
        };
        let tol = 1e-15 * (1.0 + next.abs());
        if (next - t).abs() <= tol || hi - lo <= tol {
            return next;
        }
        t = next;
    }
    t
}

impl Flow for Planar {
    fn name(&self) -> &'static str {
        NAME
    }

    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        check_vector(NAME, self.features, self.w.dtype(), x)?;
        let (u_hat, m) = self.u_hat()?;
        let h = self.pre_activation(x)?.tanh()?;
        let z = x.add(&h.mul(&u_hat)?)?;
        let slope = h.square()?.neg()?.add_scalar(1.0)?;
        let logdet = slope.mul(&m)?.log1p()?.reshape(&[x.shape()[0]])?;
        Ok((z, logdet))
    }

    fn inverse(&self, z: &Tensor) -> Result<Tensor> {
        check_vector(NAME, self.features, self.w.dtype(), z)?;
        let (u_hat, m) = self.u_hat()?;
        let wz = z
            .matmul(&self.w.reshape(&[self.features, 1])?)?
            .to_vec_f64()?;
        let (m, b) = (m.to_scalar()?, self.bias.to_vec_f64()?[0]);
        let t: Vec<f64> = wz.iter().map(|&c| solve_planar(m, b, c)).collect();
        let t = constant(t, &[z.shape()[0], 1], z.dtype(), z.device())?;
        z.sub(&t.add(&self.bias.detach())?.tanh()?.mul(&u_hat.detach())?)
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        vec![
            ("w".into(), self.w.clone()),
            ("u".into(), self.u.clone()),
            ("bias".into(), self.bias.clone()),
        ]
    }
}

unconditional!(Planar);
