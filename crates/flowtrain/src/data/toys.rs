//! Toy densities for flows on vectors: five 2-D sets (two moons, eight
//! Gaussians, checkerboard, two spirals, a mixture of four correlated
//! Gaussians) and a 1-D mixture of Gaussians, sampled from a [`Generator`]
//! as `(n, 2)` or `(n, 1)` tensors. The mixtures (and the eight Gaussians)
//! have exact densities ([`Toy::log_density`]).

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
    /// 2-D: four Gaussians with different scales and correlations ([`MOG_2D`]).
    MixtureOfGaussians2d,
}

/// The names [`Toy::from_name`] knows (besides aliases).
pub const TOY_NAMES: [&str; 6] = [
    "moons",
    "8gaussians",
    "checkerboard",
    "spirals",
    "mog1d",
    "mog2d",
];

/// (weight, mean, std) of [`Toy::MixtureOfGaussians1d`].
pub const MOG_1D: [(f64, f64, f64); 3] = [(0.3, -2.0, 0.5), (0.5, 0.5, 0.3), (0.2, 2.5, 0.4)];

/// One component of [`Toy::MixtureOfGaussians2d`]: its weight, mean,
/// standard deviations along x and y, and the correlation of x and y.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Component2d {
    pub weight: f64,
    pub mean: [f64; 2],
    pub std: [f64; 2],
    pub correlation: f64,
}

/// The components of [`Toy::MixtureOfGaussians2d`] (weights sum to 1).
pub const MOG_2D: [Component2d; 4] = [
    Component2d {
        weight: 0.35,
        mean: [-1.5, -1.0],
        std: [0.6, 0.3],
        correlation: 0.5,
    },
    Component2d {
        weight: 0.25,
        mean: [1.5, 1.2],
        std: [0.4, 0.7],
        correlation: -0.6,
    },
    Component2d {
        weight: 0.25,
        mean: [1.0, -1.5],
        std: [0.3, 0.3],
        correlation: 0.0,
    },
    Component2d {
        weight: 0.15,
        mean: [-1.2, 1.6],
        std: [0.5, 0.2],
        correlation: 0.0,
    },
];

/// The standard deviation of each of the eight Gaussians.
const EIGHT_STD: f64 = 0.04;

/// `log sum_k exp(v_k)`, stable.
fn log_sum_exp(v: impl Iterator<Item = f64> + Clone) -> f64 {
    let max = v.clone().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return max;
    }
    max + v.map(|x| (x - max).exp()).sum::<f64>().ln()
}

/// `log N(x; mean, std^2)`.
fn log_normal(x: f64, mean: f64, std: f64) -> f64 {
    let u = (x - mean) / std;
    -0.5 * u * u - std.ln() - 0.5 * (2.0 * PI).ln()
}

impl Toy {
    /// The toy named `name` ([`TOY_NAMES`], or `two-moons`, `eight-gaussians`, `two-spirals`).
    pub fn from_name(name: &str) -> Result<Toy> {
        Ok(match name {
            "two-moons" | "moons" => Toy::TwoMoons,
            "8gaussians" | "eight-gaussians" => Toy::EightGaussians,
            "checkerboard" => Toy::Checkerboard,
            "two-spirals" | "spirals" => Toy::TwoSpirals,
            "mog1d" => Toy::MixtureOfGaussians1d,
            "mog2d" => Toy::MixtureOfGaussians2d,
            other => {
                return Err(TrainError::Config(format!(
                    "unknown toy density {other:?} (one of {})",
                    TOY_NAMES.join(", ")
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
                Toy::MixtureOfGaussians2d => {
                    let mut acc = 0.0;
                    let c = MOG_2D
                        .iter()
                        .find(|c| {
                            acc += c.weight;
                            u0 < acc
                        })
                        .unwrap_or(&MOG_2D[3]);
                    let rho = c.correlation;
                    out.extend([
                        c.mean[0] + c.std[0] * e0,
                        c.mean[1] + c.std[1] * (rho * e0 + (1.0 - rho * rho).sqrt() * e1),
                    ]);
                }
            }
        }
        Ok(Tensor::from_vec(out, &[n, self.dim()], Device::Cpu)?)
    }

    /// The exact log-density of the 1-D mixture at `x` (for checking a
    /// trained 1-D flow); `None` for the 2-D sets.
    pub fn log_density_1d(self, x: f64) -> Option<f64> {
        (self == Toy::MixtureOfGaussians1d).then(|| self.log_density(&[x]).unwrap_or(f64::NAN))
    }

    /// Whether [`Toy::log_density`] knows this toy's density (the two
    /// mixtures and the eight Gaussians).
    pub fn has_density(self) -> bool {
        matches!(
            self,
            Toy::MixtureOfGaussians1d | Toy::MixtureOfGaussians2d | Toy::EightGaussians
        )
    }

    /// The exact log-density at the point `x` (`dim` values), for the toys
    /// whose density is known ([`Toy::has_density`]); `None` for the others
    /// or a point of the wrong length.
    pub fn log_density(self, x: &[f64]) -> Option<f64> {
        if x.len() != self.dim() || !self.has_density() {
            return None;
        }
        Some(match self {
            Toy::MixtureOfGaussians1d => log_sum_exp(
                MOG_1D
                    .iter()
                    .map(|&(w, m, s)| w.ln() + log_normal(x[0], m, s)),
            ),
            Toy::EightGaussians => log_sum_exp((0..8).map(|k| {
                let a = 2.0 * PI * k as f64 / 8.0;
                (0.125f64).ln()
                    + log_normal(x[0], 2.0 * a.cos(), EIGHT_STD)
                    + log_normal(x[1], 2.0 * a.sin(), EIGHT_STD)
            })),
            _ => log_sum_exp(MOG_2D.iter().map(|c| {
                // x given y's conditional form: x ~ N(mx, sx^2), y | x ~ N(my + rho sy (x - mx) / sx, sy^2 (1 - rho^2))
                let rho = c.correlation;
                let ux = (x[0] - c.mean[0]) / c.std[0];
                c.weight.ln()
                    + log_normal(x[0], c.mean[0], c.std[0])
                    + log_normal(
                        x[1],
                        c.mean[1] + rho * c.std[1] * ux,
                        c.std[1] * (1.0 - rho * rho).sqrt(),
                    )
            })),
        })
    }
}
