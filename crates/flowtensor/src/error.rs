//! The typed error every fallible operation returns.

use crate::{DType, Device};

/// Errors of flowtensor. Each names the operation that failed and, where shapes
/// are involved, the shapes it was given.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Shapes that the operation cannot combine.
    #[error("{op}: incompatible shapes {shapes:?}: {detail}")]
    Shape {
        op: &'static str,
        shapes: Vec<Vec<usize>>,
        detail: String,
    },
    /// A dimension index past the tensor's rank, or a bad dimension list.
    #[error("{op}: dimension {dim} is invalid for a tensor of shape {shape:?}")]
    Dim {
        op: &'static str,
        dim: usize,
        shape: Vec<usize>,
    },
    /// Operands of different dtypes (casts are explicit).
    #[error("{op}: dtype mismatch {lhs:?} vs {rhs:?} (cast explicitly with to_dtype)")]
    DTypeMismatch {
        op: &'static str,
        lhs: DType,
        rhs: DType,
    },
    /// The data was requested as a dtype it is not stored in.
    #[error("{op}: tensor has dtype {actual:?}, {requested:?} was requested")]
    WrongDType {
        op: &'static str,
        actual: DType,
        requested: DType,
    },
    /// Operands on different devices.
    #[error("{op}: device mismatch {lhs:?} vs {rhs:?}")]
    DeviceMismatch {
        op: &'static str,
        lhs: Device,
        rhs: Device,
    },
    /// A device that cannot be used on this machine or in this build.
    #[error("device {device} is unavailable: {reason}")]
    DeviceUnavailable { device: Device, reason: String },
    /// Any other invalid argument (out-of-range index, bad padding, ...).
    #[error("{op}: {detail}")]
    Invalid { op: &'static str, detail: String },
    /// An autodiff misuse, such as calling backward on a non-scalar.
    #[error("autograd: {0}")]
    Autograd(String),
}

/// Result with flowtensor's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A shape error for `op` over the given shapes.
    pub fn shape(op: &'static str, shapes: &[&[usize]], detail: impl Into<String>) -> Self {
        Error::Shape {
            op,
            shapes: shapes.iter().map(|s| s.to_vec()).collect(),
            detail: detail.into(),
        }
    }

    /// An invalid-argument error for `op`.
    pub fn invalid(op: &'static str, detail: impl Into<String>) -> Self {
        Error::Invalid {
            op,
            detail: detail.into(),
        }
    }
}
