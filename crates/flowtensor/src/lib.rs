//! flowtensor: strided f32/f64 tensors with reverse-mode autodiff.
//!
//! - [`Tensor`]: shared storage plus a [`Layout`] (shape, strides, offset);
//!   views (reshape, permute, narrow, broadcast, flip) share storage.
//! - Devices: [`Device::Cpu`] (rayon + matrixmultiply) and [`Device::Cuda`]
//!   (the hand-written kernels of `kernels/*.cu` through cudarc and NVRTC,
//!   or their CPU emulation with the `cuda-emu` feature; see [`cuda`]).
//! - Autodiff: ops record a graph when an input requires grad;
//!   [`Tensor::backward`] accumulates leaf gradients; [`grad`] takes
//!   vector-Jacobian products and, with `create_graph`, gradients of
//!   gradients; [`no_grad`] turns recording off; [`CustomOp`] adds ops with
//!   their own backward.
//! - Every op with shape preconditions returns [`Result`] with an [`Error`]
//!   naming the op and the shapes.

mod autograd;
mod backend;
mod conv;
pub mod conv_exp;
mod cpu;
pub mod cuda;
mod device;
mod dtype;
mod error;
pub mod fft;
pub mod gradcheck;
mod layout;
pub mod linalg;
mod ops;
mod pool;
pub mod profile;
pub mod random;
mod storage;
mod tensor;
pub mod triangular;

pub use autograd::{enable_grad, grad, is_grad_enabled, no_grad, CustomOp, GradStore, NoGradGuard};
pub use backend::BACKEND_OPS;
pub use conv::{isa_name, Conv2dParams, ConvTranspose2dParams};
pub use cpu::{CpuStorage, PAR_THRESHOLD};
pub use cuda::CudaStorage;
pub use device::Device;
pub use dtype::{DType, Element};
pub use error::{Error, Result};
pub use layout::{broadcast_shape, contiguous_strides, Layout};
pub use ops::gather::Indices;
pub use ops::kinds;
pub use ops::PadMode;
pub use pool::in_pool;
pub use random::{Generator, GeneratorState};
pub use storage::Storage;
pub use tensor::{Tensor, TensorId};

/// The version of this crate.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
