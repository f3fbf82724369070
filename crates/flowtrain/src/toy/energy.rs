//! The four unnormalised 2-D densities `exp(-U)` of Rezende and Mohamed
//! ("Variational Inference with Normalizing Flows", 2015, Table 1), with
//! `w1(z) = sin(2 pi z1 / 4)`, `w2(z) = 3 exp(-((z1 - 1) / 0.6)^2 / 2)`,
//! `w3(z) = 3 sigmoid((z1 - 1) / 0.3)`:
//!
//! ```text
//! U1(z) = ((|z| - 2) / 0.4)^2 / 2 - log(exp(-((z1 - 2) / 0.6)^2 / 2) + exp(-((z1 + 2) / 0.6)^2 / 2))
//! U2(z) = ((z2 - w1) / 0.4)^2 / 2
//! U3(z) = -log(exp(-((z2 - w1) / 0.35)^2 / 2) + exp(-((z2 - w1 + w2) / 0.35)^2 / 2))
//! U4(z) = -log(exp(-((z2 - w1) / 0.4)^2 / 2) + exp(-((z2 - w1 + w3) / 0.35)^2 / 2))
//! ```
//!
//! `U2`, `U3` and `U4` do not depend on `z1` far from the origin, so their
//! `exp(-U)` cannot be normalised; the paper shows them on `[-4, 4]^2`.
//! Here they get a wall outside that box, `(max(|z1| - 4, 0) / 0.2)^2 / 2`,
//! so that the reverse KL has a minimum and `log Z` is finite (`U1` needs
//! none). The energies and their gradients are computed in f64 on the host
//! ([`energy`]) and enter the graph as one [`CustomOp`] ([`energy_tensor`]).

use super::config::Target;
use flowtensor::{CustomOp, Device, Error, Result, Tensor};
use std::f64::consts::PI;
use std::sync::Arc;

/// Where the wall of `U2`..`U4` starts.
const WALL: f64 = 4.0;
/// The wall's length scale.
const WALL_SCALE: f64 = 0.2;

/// `log(exp(a) + exp(b))` and the weights `(p_a, p_b)` of its gradient.
fn lse2(a: f64, b: f64) -> (f64, f64, f64) {
    let m = a.max(b);
    let (ea, eb) = ((a - m).exp(), (b - m).exp());
    let s = ea + eb;
    (m + s.ln(), ea / s, eb / s)
}

/// `U(z)` and its gradient `(dU/dz1, dU/dz2)` at `z = (z1, z2)`.
pub fn energy(target: Target, z1: f64, z2: f64) -> (f64, [f64; 2]) {
    let w1 = (PI * z1 / 2.0).sin();
    let dw1 = PI / 2.0 * (PI * z1 / 2.0).cos();
    let (u, mut g) = match target {
        Target::U1 => {
            let r = (z1 * z1 + z2 * z2).sqrt();
            let ring = (r - 2.0) / 0.4;
            let a = -0.5 * ((z1 - 2.0) / 0.6).powi(2);
            let b = -0.5 * ((z1 + 2.0) / 0.6).powi(2);
            let (l, pa, pb) = lse2(a, b);
            let (da, db) = (-(z1 - 2.0) / 0.36, -(z1 + 2.0) / 0.36);
            let radial = ring / 0.4 / r.max(1e-12);
            let u = 0.5 * ring * ring - l;
            (u, [radial * z1 - (pa * da + pb * db), radial * z2])
        }
        Target::U2 => {
            let d = (z2 - w1) / 0.4;
            (0.5 * d * d, [-d / 0.4 * dw1, d / 0.4])
        }
        Target::U3 | Target::U4 => {
            let (s1, s2) = if target == Target::U3 {
                (0.35, 0.35)
            } else {
                (0.4, 0.35)
            };
            let (w, dw) = if target == Target::U3 {
                let w2 = 3.0 * (-0.5 * ((z1 - 1.0) / 0.6).powi(2)).exp();
                (w2, w2 * (-(z1 - 1.0) / 0.36))
            } else {
                let s = 1.0 / (1.0 + (-(z1 - 1.0) / 0.3).exp());
                (3.0 * s, 3.0 * s * (1.0 - s) / 0.3)
            };
            let ea = (z2 - w1) / s1;
            let eb = (z2 - w1 + w) / s2;
            let (l, pa, pb) = lse2(-0.5 * ea * ea, -0.5 * eb * eb);
            // d(-ea^2/2) = -ea d(ea); ea = (z2 - w1) / s1, eb = (z2 - w1 + w) / s2
            let da = [ea / s1 * dw1, -ea / s1];
            let db = [-eb / s2 * (dw - dw1), -eb / s2];
            (-l, [-(pa * da[0] + pb * db[0]), -(pa * da[1] + pb * db[1])])
        }
    };
    let mut u = u;
    if target != Target::U1 {
        let over = (z1.abs() - WALL).max(0.0) / WALL_SCALE;
        u += 0.5 * over * over;
        g[0] += over / WALL_SCALE * z1.signum();
    }
    (u, g)
}

/// `U` of each row of `z` `(N, 2)` as `[N]`, differentiable in `z`.
struct Energy(Target);

impl CustomOp for Energy {
    fn name(&self) -> &'static str {
        "ToyEnergy"
    }

    fn forward(&self, inputs: &[Tensor]) -> Result<Tensor> {
        let z = &inputs[0];
        let values = z.to_vec_f64()?;
        let u: Vec<f64> = values
            .chunks_exact(2)
            .map(|p| energy(self.0, p[0], p[1]).0)
            .collect();
        let n = u.len();
        Tensor::from_vec(u, &[n], Device::Cpu)?
            .to_dtype(z.dtype())?
            .to_device(z.device())
    }

    fn backward(
        &self,
        inputs: &[Tensor],
        _output: &Tensor,
        grad_output: &Tensor,
    ) -> Result<Vec<Option<Tensor>>> {
        let z = &inputs[0];
        let values = z.to_vec_f64()?;
        let upstream = grad_output.to_vec_f64()?;
        let mut grad = Vec::with_capacity(values.len());
        for (p, g) in values.chunks_exact(2).zip(upstream) {
            let (_, d) = energy(self.0, p[0], p[1]);
            grad.extend([g * d[0], g * d[1]]);
        }
        let grad = Tensor::from_vec(grad, z.shape(), Device::Cpu)?
            .to_dtype(z.dtype())?
            .to_device(z.device())?;
        Ok(vec![Some(grad)])
    }
}

/// `U(z)` per row of `z` `(N, 2)`, as a `[N]` tensor in the graph.
pub fn energy_tensor(target: Target, z: &Tensor) -> Result<Tensor> {
    if z.rank() != 2 || z.shape()[1] != 2 {
        return Err(Error::shape(
            "ToyEnergy",
            &[z.shape()],
            "expected (batch, 2) points",
        ));
    }
    Tensor::apply_custom(Arc::new(Energy(target)), &[z.contiguous()?])
}

/// `log Z = log of the integral of exp(-U)` by the midpoint rule on
/// `[-half, half]^2` with `cells` cells per side.
pub fn log_normalizer(target: Target, half: f64, cells: usize) -> f64 {
    let h = 2.0 * half / cells as f64;
    let energies: Vec<f64> = (0..cells * cells)
        .map(|k| {
            let (i, j) = (k / cells, k % cells);
            let z1 = -half + (j as f64 + 0.5) * h;
            let z2 = -half + (i as f64 + 0.5) * h;
            -energy(target, z1, z2).0
        })
        .collect();
    let m = energies.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    m + (energies.iter().map(|e| (e - m).exp()).sum::<f64>() * h * h).ln()
}

/// `exp(-U)` on a grid of `cells x cells` over `[-half, half]^2`, row 0 at
/// the top (`z2 = half`), as a density normalised on the grid.
pub fn target_grid(target: Target, half: f64, cells: usize) -> Vec<f64> {
    let h = 2.0 * half / cells as f64;
    let log_z = log_normalizer(target, half, cells);
    (0..cells * cells)
        .map(|k| {
            let (i, j) = (k / cells, k % cells);
            let z1 = -half + (j as f64 + 0.5) * h;
            let z2 = half - (i as f64 + 0.5) * h;
            (-energy(target, z1, z2).0 - log_z).exp()
        })
        .collect()
}
