//! The invertible layers, one file each.

mod actnorm;
pub mod conditioner;
pub mod conv1x1;
pub mod coupling;
pub mod permutation;
pub mod split;
pub mod squeeze;

pub use actnorm::ActNorm;
