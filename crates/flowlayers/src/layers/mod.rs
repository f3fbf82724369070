//! The invertible layers, one file each.

mod actnorm;
pub mod conditioner;
pub mod conv1x1;
pub mod conv_exp;
pub mod coupling;
pub mod graph_conv_exp;
pub mod permutation;
pub mod split;
pub mod squeeze;
pub mod sylvester;

pub use actnorm::ActNorm;
pub use conditioner::{Conditioner, Conv2d, DenseNetConfig, DenseNetGated, GlowNet, ZeroConv2d};
pub use conv1x1::{Conv1x1, Conv1x1Lu, Conv1x1Qr};
pub use conv_exp::{ConvExp, SpectralNorm};
pub use coupling::{Coupling, CouplingKind, ScaleFn};
pub use graph_conv_exp::{Graph, GraphConvExp, GraphCoupling};
pub use permutation::Permutation;
pub use split::{ConditionalGaussian, SplitPrior};
pub use squeeze::Squeeze;
pub use sylvester::{Sylvester, SylvesterConfig};
