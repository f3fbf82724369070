//! The invertible layers, one file each.

mod actnorm;
pub mod conditioner;
pub mod conv1x1;
pub mod conv_exp;
pub mod coupling;
pub mod emerging;
pub mod graph_conv_exp;
pub mod masked_conv;
pub mod periodic;
pub mod permutation;
pub mod residual;
pub mod spectral_norm;
pub mod split;
pub mod squeeze;
pub mod sylvester;
pub mod vector_sylvester;
pub mod woodbury;

pub use actnorm::ActNorm;
pub use conditioner::{
    Conditioner, Conv2d, DenseNet, DenseNetConfig, GlowNet, GlowNetStyle, ZeroConv2d,
};
pub use conv1x1::{Conv1x1, Conv1x1Lu, Conv1x1Qr};
pub use conv_exp::ConvExp;
pub use coupling::{Coupling, CouplingKind, ScaleFn};
pub use emerging::EmergingConv;
pub use graph_conv_exp::{Graph, GraphConvExp, GraphCoupling};
pub use masked_conv::MaskedConv;
pub use periodic::PeriodicConv;
pub use permutation::Permutation;
pub use residual::{
    LogDetEstimator, LogDetGradient, ResidualActivation, ResidualBlock, ResidualConfig,
    TraceVectors,
};
pub use spectral_norm::SpectralNorm;
pub use split::{ConditionalGaussian, SplitPrior};
pub use squeeze::Squeeze;
pub use sylvester::{Sylvester, SylvesterConfig};
pub use vector_sylvester::VectorSylvester;
pub use woodbury::{Woodbury, WoodburyAxis};
