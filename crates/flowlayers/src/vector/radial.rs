//! The radial flow (Rezende and Mohamed, "Variational Inference with
//! Normalizing Flows", 2015).

use super::{check_vector, constant, unconditional};
use crate::flow::{parameter, Flow};
use flowtensor::{DType, Device, Error, Generator, Result, Tensor};

const NAME: &str = "Radial";

/// `z = x + beta h(alpha, r) (x - x0)` on `(N, D)`, `r = |x - x0|`,
/// `h(alpha, r) = 1 / (alpha + r)`, with parameters `x0` `(D)`, `a` `(1)`,
/// `b` `(1)`:
///
/// - `alpha = softplus(a) > 0` and `beta = -alpha + softplus(b) > -alpha`,
///   which keeps the map invertible (Rezende and Mohamed, appendix A): the
///   radius maps by `r -> r (1 + beta h)`, increasing since its derivative
///   is `1 + beta alpha / (alpha + r)^2 > 0`;
/// - log-det: `(D - 1) log(1 + beta h) + log(1 + beta alpha / (alpha + r)^2)`
///   (the `D - 1` tangential directions are scaled by `1 + beta h`, the
///   radial one by the derivative above);
/// - inverse in closed form: `rho = |z - x0| = r (1 + beta / (alpha + r))`
///   is the quadratic `r^2 + (alpha + beta - rho) r - alpha rho = 0`, whose
///   non-negative root is taken in its cancellation-free form
///   (`(sqrt(disc) - B) / 2` for `B = alpha + beta - rho < 0`,
///   `2 alpha rho / (B + sqrt(disc))` otherwise), and then
///   `x = x0 + (z - x0) / (1 + beta h(alpha, r))`. All on the device.
pub struct Radial {
    features: usize,
    x0: Tensor,
    a: Tensor,
    b: Tensor,
}

impl Radial {
    /// A radial flow on `features` features: `x0` drawn `N(0, 1)` from `gen`
    /// (f64 on the host, then cast), `a = b = 0`.
    pub fn new(features: usize, dtype: DType, device: Device, gen: &mut Generator) -> Result<Self> {
        if features == 0 {
            return Err(Error::invalid(NAME, "needs at least one feature"));
        }
        let x0 = gen.randn(&[features], DType::F64, Device::Cpu)?;
        Ok(Radial {
            features,
            x0: parameter(super::placed(&x0, dtype, device)?)?,
            a: parameter(constant(vec![0.0], &[1], dtype, device)?)?,
            b: parameter(constant(vec![0.0], &[1], dtype, device)?)?,
        })
    }

    /// `(alpha, beta)`, each `(1)`, differentiable.
    pub fn alpha_beta(&self) -> Result<(Tensor, Tensor)> {
        let alpha = self.a.softplus()?;
        let beta = self.b.softplus()?.sub(&alpha)?;
        Ok((alpha, beta))
    }

    /// The log-det at radius `r` `(N, 1)`, as `[N]`.
    fn logdet(&self, alpha: &Tensor, beta: &Tensor, r: &Tensor) -> Result<Tensor> {
        let alpha_r = alpha.add(r)?;
        let tangential = beta
            .div(&alpha_r)?
            .log1p()?
            .mul_scalar((self.features - 1) as f64)?;
        let radial = beta.mul(alpha)?.div(&alpha_r.square()?)?.log1p()?;
        tangential.add(&radial)?.reshape(&[r.shape()[0]])
    }
}

impl Flow for Radial {
    fn name(&self) -> &'static str {
        NAME
    }

    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        check_vector(NAME, self.features, self.x0.dtype(), x)?;
        let (alpha, beta) = self.alpha_beta()?;
        let diff = x.sub(&self.x0)?;
        let r = diff.norm(&[1], true)?;
        let beta_h = beta.div(&alpha.add(&r)?)?;
        let z = x.add(&diff.mul(&beta_h)?)?;
        Ok((z, self.logdet(&alpha, &beta, &r)?))
    }

    fn inverse(&self, z: &Tensor) -> Result<Tensor> {
        Ok(self.inverse_with_logdet(z)?.0)
    }

    fn inverse_with_logdet(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        check_vector(NAME, self.features, self.x0.dtype(), z)?;
        let (alpha, beta) = self.alpha_beta()?;
        let dz = z.sub(&self.x0)?;
        let rho = dz.norm(&[1], true)?;
        let big_b = alpha.add(&beta)?.sub(&rho)?;
        let c = rho.mul(&alpha)?;
        let root = big_b.square()?.add(&c.mul_scalar(4.0)?)?.sqrt()?;
        let if_negative = root.sub(&big_b)?.mul_scalar(0.5)?;
        let if_positive = c.mul_scalar(2.0)?.div(&big_b.add(&root)?)?;
        let r = big_b
            .ge_scalar(0.0)?
            .where_cond(&if_positive, &if_negative)?;
        let scale = beta.div(&alpha.add(&r)?)?.add_scalar(1.0)?;
        let x = self.x0.add(&dz.div(&scale)?)?;
        Ok((x, self.logdet(&alpha, &beta, &r)?.neg()?))
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        vec![
            ("x0".into(), self.x0.clone()),
            ("a".into(), self.a.clone()),
            ("b".into(), self.b.clone()),
        ]
    }
}

unconditional!(Radial);
