//! The original Sylvester normalizing flow (van den Berg, Hasenclever,
//! Tomczak and Welling, "Sylvester Normalizing Flows for Variational
//! Inference", 2018), on flattened samples: the form the generalized
//! Sylvester flow ([`super::Sylvester`]) extends to convolutions.

use crate::flow::{parameter, Flow};
use crate::layers::conv1x1::householder_product;
use flowtensor::{DType, Device, Error, Generator, Result, Tensor};

const NAME: &str = "VectorSylvester";

/// `z = x + Q R tanh(R~ Q^T x + b)` on samples flattened to `D` features.
///
/// - `Q` `(D, M)`: the first `M` columns of a product of Householder
///   reflections `H_i = I - 2 v_i v_i^T / (v_i^T v_i)` (parameter
///   `householder` `(k, D)`), so its columns are orthonormal (`M = D` is
///   van den Berg's Householder variant, `M < D` the orthogonal one).
/// - `R`, `R~` `(M, M)` upper triangular: the strict upper parts of the
///   parameters `r`, `r_tilde` with diagonals `tanh` of theirs, so
///   `r_ii r~_ii` lies in `(-1, 1)`; `b` (parameter `bias`, `M`).
/// - log-det per sample, by Sylvester's determinant identity
///   `det(I_D + Q R diag(h') R~ Q^T) = det(I_M + diag(h') R~ R)` with a
///   triangular right side:
///
///   ```text
///   log |det dz/dx| = sum_i log(1 + r_ii r~_ii tanh'(a_i)),   a = R~ Q^T x + b,
///   ```
///
///   each term finite since `|r_ii r~_ii tanh'| < 1`.
/// - inverse: with `c = Q^T z`, the coordinates `y = Q^T x` solve
///   `y + R tanh(R~ y + b) = c`, which is triangular: `y_i` appears with
///   `y_{i+1..}` only, so back-substitution from `i = M - 1` solves one
///   increasing scalar equation `t + r_ii tanh(r~_ii t + s_i) = c_i - ...`
///   per coordinate (Newton's method safeguarded by bisection, in f64, to
///   machine precision); then `x = z - Q (c - y)`. Not differentiable.
pub struct VectorSylvester {
    features: usize,
    rank: usize,
    householder: Tensor,
    r: Tensor,
    r_tilde: Tensor,
    bias: Tensor,
    /// The strict upper triangle and the identity, `(M, M)`.
    upper: Tensor,
    eye: Tensor,
}

impl VectorSylvester {
    /// A flow on `features` features with rank `rank` (`1 <= rank <=
    /// features`) and `reflections` Householder reflections, drawn from
    /// `gen`: the vectors `randn`, `r` and `r_tilde` `0.1 randn`; the bias
    /// starts at zero.
    pub fn new(
        features: usize,
        rank: usize,
        reflections: usize,
        dtype: DType,
        device: Device,
        gen: &mut Generator,
    ) -> Result<Self> {
        if rank == 0 || rank > features || reflections == 0 {
            return Err(Error::invalid(
                NAME,
                format!("needs 1 <= rank <= features and a reflection, got rank {rank}, {features} features, {reflections} reflections"),
            ));
        }
        let mut draw = |shape: &[usize], scale: f64| -> Result<Tensor> {
            let t = gen
                .randn(shape, DType::F64, Device::Cpu)?
                .mul_scalar(scale)?;
            parameter(t.to_dtype(dtype)?.to_device(device)?)
        };
        let householder = draw(&[reflections, features], 1.0)?;
        let r = draw(&[rank, rank], 0.1)?;
        let r_tilde = draw(&[rank, rank], 0.1)?;
        let eye = Tensor::eye(rank, dtype, device)?;
        let mut strict = vec![0.0; rank * rank];
        for i in 0..rank {
            for j in i + 1..rank {
                strict[i * rank + j] = 1.0;
            }
        }
        let upper = Tensor::from_vec(strict, &[rank, rank], Device::Cpu)?
            .to_dtype(dtype)?
            .to_device(device)?;
        Ok(VectorSylvester {
            features,
            rank,
            householder,
            r,
            r_tilde,
            bias: parameter(Tensor::zeros(&[rank], dtype, device)?)?,
            upper,
            eye,
        })
    }

    /// `Q` `(D, M)`.
    fn q(&self) -> Result<Tensor> {
        householder_product(&self.householder)?.narrow(1, 0, self.rank)
    }

    /// An upper-triangular matrix with a `tanh` diagonal from a raw one.
    fn triangular(&self, raw: &Tensor) -> Result<Tensor> {
        raw.mul(&self.upper)?.add(&raw.tanh()?.mul(&self.eye)?)
    }

    /// `x` as `(N, D)`.
    fn flat(&self, x: &Tensor) -> Result<Tensor> {
        let n = x.shape().first().copied().unwrap_or(0);
        let d: usize = x.shape().iter().skip(1).product();
        if x.rank() < 2 || d != self.features {
            return Err(Error::shape(
                NAME,
                &[x.shape()],
                format!(
                    "expected (batch, ...) with {} features per sample",
                    self.features
                ),
            ));
        }
        x.reshape(&[n, d])
    }

    /// The inverse (see the type's docs) and its log-det per sample,
    /// `-sum_i log(1 + r_ii r~_ii (1 - tanh(a_i)^2))` with the `tanh(a_i)` of
    /// the back-substitution.
    fn solve(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        let flat = self.flat(z)?;
        let q = self.q()?;
        let (r, rt) = (self.triangular(&self.r)?, self.triangular(&self.r_tilde)?);
        let c = flat.matmul(&q)?;
        let m = self.rank;
        let (rv, rtv, bv) = (r.to_vec_f64()?, rt.to_vec_f64()?, self.bias.to_vec_f64()?);
        let cv = c.to_vec_f64()?;
        let mut y = vec![0.0; cv.len()];
        let mut logdet = Vec::with_capacity(flat.shape()[0]);
        for (yn, cn) in y.chunks_mut(m).zip(cv.chunks(m)) {
            // tanh(a_j) of the coordinates solved so far
            let mut th = vec![0.0; m];
            let mut sum = 0.0;
            for i in (0..m).rev() {
                let s = bv[i] + (i + 1..m).map(|l| rtv[i * m + l] * yn[l]).sum::<f64>();
                let known: f64 = (i + 1..m).map(|j| rv[i * m + j] * th[j]).sum();
                let diag = rv[i * m + i] * rtv[i * m + i];
                yn[i] = solve_scalar(rv[i * m + i], rtv[i * m + i], s, cn[i] - known);
                th[i] = (rtv[i * m + i] * yn[i] + s).tanh();
                sum += (diag * (1.0 - th[i] * th[i])).ln_1p();
            }
            logdet.push(-sum);
        }
        let host = |v: Vec<f64>, shape: &[usize]| -> Result<Tensor> {
            Tensor::from_vec(v, shape, Device::Cpu)?
                .to_dtype(z.dtype())?
                .to_device(z.device())
        };
        let y = host(y, c.shape())?;
        let x = flat.sub(&c.sub(&y)?.matmul(&q.transpose(0, 1)?)?)?;
        let n = logdet.len();
        Ok((x.reshape(z.shape())?, host(logdet, &[n])?))
    }
}

/// The root of `t + r tanh(rt t + s) = rhs`, increasing in `t` for
/// `|r rt| < 1`, in `[rhs - |r|, rhs + |r|]`.
fn solve_scalar(r: f64, rt: f64, s: f64, rhs: f64) -> f64 {
    let (mut lo, mut hi) = (rhs - r.abs(), rhs + r.abs());
    let mut t = rhs;
    for _ in 0..100 {
        let th = (rt * t + s).tanh();
        let g = t + r * th - rhs;
        if g.abs() <= 1e-15 * (1.0 + rhs.abs()) {
            break;
        }
        if g > 0.0 {
            hi = t;
        } else {
            lo = t;
        }
        let next = t - g / (1.0 + r * rt * (1.0 - th * th));
        t = if next > lo && next < hi {
            next
        } else {
            0.5 * (lo + hi)
        };
    }
    t
}

impl Flow for VectorSylvester {
    fn name(&self) -> &'static str {
        NAME
    }

    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let flat = self.flat(x)?;
        let q = self.q()?;
        let (r, rt) = (self.triangular(&self.r)?, self.triangular(&self.r_tilde)?);
        let a = flat
            .matmul(&q)?
            .matmul(&rt.transpose(0, 1)?)?
            .add(&self.bias)?;
        let h = a.tanh()?;
        let z = flat.add(&h.matmul(&r.transpose(0, 1)?)?.matmul(&q.transpose(0, 1)?)?)?;
        let diag = r.mul(&rt)?.mul(&self.eye)?.sum(&[1], false)?;
        let dh = h.square()?.neg()?.add_scalar(1.0)?;
        let logdet = dh.mul(&diag)?.log1p()?.sum(&[1], false)?;
        Ok((z.reshape(x.shape())?, logdet))
    }

    fn inverse(&self, z: &Tensor) -> Result<Tensor> {
        Ok(self.solve(z)?.0)
    }

    /// The log-det of the inverse is minus the forward's at the solution,
    /// whose `tanh(a_i)` the back-substitution has already computed.
    fn inverse_with_logdet(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        self.solve(z)
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        vec![
            ("householder".into(), self.householder.clone()),
            ("r".into(), self.r.clone()),
            ("r_tilde".into(), self.r_tilde.clone()),
            ("bias".into(), self.bias.clone()),
        ]
    }
}
