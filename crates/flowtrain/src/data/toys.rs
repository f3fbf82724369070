//! Toy densities for flows on vectors: four 2-D sets (two moons, eight
//! Gaussians, checkerboard, two spirals) and a 1-D mixture of Gaussians,
//! sampled from a [`Generator`] as `(n, 2)` or `(n, 1)` tensors.

use crate::error::{Result, TrainError};
use flowtensor::{DType, Device, Generator, Tensor};
use std::f64::consts::PI;

/// A toy density.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Toy {
    /// Two interleaved half circles with Gaussian noise (std 0.1).
    TwoMoons,
    /// Eight Gaussians (std 0.02 * 2) on a circle of radius 2.
    EightGaussians,
    /// Uniform on the black squares of a 4x4 checkerboard over [-2, 2]^2.
    Checkerboard,
    /// Two interleaved spirals with Gaussian noise.
    TwoSpirals,
    /// 1-D: 0.3 N(-2, 0.5^2) + 0.5 N(0.5, 0.3^2) + 0.2 N(2.5, 0.4^2).
    MixtureOfGaussians1d,
}

/// (weight, mean, std) of [`Toy::MixtureOfGaussians1d`].
pub const MOG_1D: [(f64, f64, f64); 3] = [(0.3, -2.0, 0.5), (0.5, 0.5, 0.3), (0.2, 2.5, 0.4)];

impl Toy {
    /// The toy named `name` (`two-moons`, `8gaussians`, `checkerboard`, `two-spirals`, `mog1d`).
    pub fn from_name(name: &str) -> Result<Toy> {
        Ok(match name {
            "two-moons" | "moons" => Toy::TwoMoons,
            "8gaussians" | "eight-gaussians" => Toy::EightGaussians,
            "checkerboard" => Toy::Checkerboard,
            "two-spirals" | "spirals" => Toy::TwoSpirals,
            "mog1d" => Toy::MixtureOfGaussians1d,
            other => {
                return Err(TrainError::Config(format!(
                    "unknown toy density {other:?} (two-moons, 8gaussians, checkerboard, two-spirals, mog1d)"
                )))
            }
        })
    }

    /// Values per sample: 2, or 1 for the 1-D mixture.
    pub fn dim(self) -> usize {
        match self {
            Toy::MixtureOfGaussians1d => 1,
            _ => 2,
        }
    }

    /// `n` samples as an `(n, dim)` f64 tensor.
    pub fn sample(self, n: usize, gen: &mut Generator) -> Result<Tensor> {
        let u = gen
            .uniform(&[n, 2], 0.0, 1.0, DType::F64, Device::Cpu)?
            .to_vec_f64()?;
        let e = gen.randn(&[n, 2], DType::F64, Device::Cpu)?.to_vec_f64()?;
        let mut out = Vec::with_capacity(n * self.dim());
        for i in 0..n {
            let (u0, u1, e0, e1) = (u[2 * i], u[2 * i + 1], e[2 * i], e[2 * i + 1]);
            match self {
                Toy::TwoMoons => {
                    let t = PI * u0;
                    let (x, y) = if u1 < 0.5 {
                        (t.cos(), t.sin())
                    } else {
                        (1.0 - t.cos(), 0.5 - t.sin())
                    };
                    out.extend([x + 0.1 * e0 - 0.5, y + 0.1 * e1 - 0.25]);
                }
                Toy::EightGaussians => {
                    let k = ((u0 * 8.0) as usize).min(7) as f64;
                    let a = 2.0 * PI * k / 8.0;
                    out.extend([2.0 * a.cos() + 0.04 * e0, 2.0 * a.sin() + 0.04 * e1]);
                }
                Toy::Checkerboard => {
                    // x uniform on [-2, 2]; y on the squares of the other colour in x's column
                    let x = 4.0 * u0 - 2.0;
                    let column = ((x + 2.0).floor() as i64).clamp(0, 3);
                    let row = 2 * ((u1 * 2.0) as i64).min(1) + (column + 1) % 2;
                    let y = -2.0 + row as f64 + (u1 * 2.0).fract();
                    out.extend([x, y]);
                }
                Toy::TwoSpirals => {
                    let t = 3.0 * PI * u0.sqrt();
                    let sign = if u1 < 0.5 { 1.0 } else { -1.0 };
                    let r = t / (3.0 * PI) * 2.0;
                    out.extend([
                        sign * r * t.cos() + 0.05 * e0,
                        sign * r * t.sin() + 0.05 * e1,
                    ]);
                }
                Toy::MixtureOfGaussians1d => {
                    let mut acc = 0.0;
                    let &(_, mean, std) = MOG_1D
                        .iter()
                        .find(|(w, _, _)| {
                            acc += w;
                            u0 < acc
                        })
                        .unwrap_or(&MOG_1D[2]);
                    out.push(mean + std * e0);
                }
            }
        }
        Ok(Tensor::from_vec(out, &[n, self.dim()], Device::Cpu)?)
    }

    /// The exact log-density of the 1-D mixture at each of `x`'s values (for
    /// checking a trained 1-D flow); `None` for the 2-D sets.
    pub fn log_density_1d(self, x: f64) -> Option<f64> {
        (self == Toy::MixtureOfGaussians1d).then(|| {
            MOG_1D
                .iter()
                .map(|&(w, m, s)| {
                    w * (-(x - m) * (x - m) / (2.0 * s * s)).exp() / (s * (2.0 * PI).sqrt())
                })
                .sum::<f64>()
                .ln()
        })
    }
}
