//! Inputs shared by the gradient-check suites.

use flowtensor::{DType, Device, Generator, Tensor};

/// Standard normal f64 values from `seed`.
pub fn randn(shape: &[usize], seed: u64) -> Tensor {
    Generator::new(seed)
        .randn(shape, DType::F64, Device::Cpu)
        .unwrap()
}

/// Positive values in about [0.3, 3].
pub fn positive(shape: &[usize], seed: u64) -> Tensor {
    randn(shape, seed)
        .mul_scalar(0.5)
        .unwrap()
        .exp()
        .unwrap()
        .add_scalar(0.1)
        .unwrap()
}
