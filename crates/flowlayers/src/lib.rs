//! flowlayers: invertible layers with exact log-determinants, built on flowtensor.
//!
//! Every layer implements [`Flow`]: `forward(x)` returns `z` and the
//! per-sample `log |det J|`, `inverse(z)` returns `x`. Layers compose with
//! [`Sequential`] and [`Inverse`]; a [`FlowDistribution`] wraps a flow and a
//! [`Base`] to give `log_prob` and `sample`. [`testing::check_flow`] checks any
//! layer against its brute-force Jacobian (see the README's "Adding a layer").
//! [`vector`] holds the flows on `(N, D)` vectors (planar, radial, couplings,
//! MAF/IAF, normalisations, linear maps) and the conditional flows `p(x | c)`.

pub mod base;
mod compose;
mod distribution;
pub mod fixed_point;
mod flow;
pub mod glow;
pub mod graph_flow;
pub mod layers;
pub mod testing;
pub mod vector;

pub use base::{Base, DiagGaussian, StandardNormal};
pub use compose::{Inverse, Sequential};
pub use distribution::FlowDistribution;
pub use flow::{parameter, prefixed, Flow};
pub use flowtensor;
pub use glow::{ConditionerKind, Glow, GlowConfig, LayerFactory, MixingFactory};
pub use graph_flow::{GraphFlow, GraphFlowConfig, GraphMixing, NodeWise};
pub use vector::{
    ActNorm as VectorActNorm, Activation, AdditiveCoupling, AffineCoupling, BatchNorm,
    ConditionalFlow, ConditionalSequential, Conditioned, CouplingMask, InvertibleLinear, Linear,
    Made, MadeConfig, MadeOrder, MaskedAutoregressive, MaskedLinear, Mlp, MlpConfig, NetConfig,
    Planar, Radial, RandomPermutation, ReversePermutation,
};

/// The version of this crate.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
