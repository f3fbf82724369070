//! flowlayers: invertible layers with exact log-determinants, built on flowtensor.
//!
//! Every layer implements [`Flow`]: `forward(x)` returns `z` and the
//! per-sample `log |det J|`, `inverse(z)` returns `x`. Layers compose with
//! [`Sequential`] and [`Inverse`]; a [`FlowDistribution`] wraps a flow and a
//! [`Base`] to give `log_prob` and `sample`. [`testing::check_flow`] checks any
//! layer against its brute-force Jacobian (see the README's "Adding a layer").

pub mod base;
mod compose;
mod distribution;
mod flow;
pub mod glow;
pub mod layers;
pub mod testing;

pub use base::{Base, DiagGaussian, StandardNormal};
pub use compose::{Inverse, Sequential};
pub use distribution::FlowDistribution;
pub use flow::{parameter, prefixed, Flow};
pub use flowtensor;
pub use glow::{ConditionerKind, Glow, GlowConfig, LayerFactory, MixingFactory};

/// The version of this crate.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
