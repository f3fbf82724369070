//! Tensor operations, one module per family: the public API on [`crate::Tensor`]
//! and the backward rule of each op side by side.

pub(crate) mod binary;
pub(crate) mod copy;
pub(crate) mod gather;
pub mod kinds;
pub(crate) mod matmul;
pub(crate) mod reduce;
pub(crate) mod unary;
pub(crate) mod view;

pub use copy::PadMode;
