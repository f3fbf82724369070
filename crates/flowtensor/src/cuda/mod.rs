//! The CUDA backend's place in the device dispatch.
//!
//! This build has no CUDA kernels yet, so [`CudaStorage`] has no values: every
//! dispatch arm for it is statically unreachable, and asking for
//! [`Device::Cuda`] returns [`Error::DeviceUnavailable`].

use crate::{Device, Error};

/// GPU memory. Uninhabited until the CUDA backend is built in.
#[derive(Clone, Debug)]
pub enum CudaStorage {}

/// The error for any request to place data on `device`.
pub(crate) fn unavailable(device: Device) -> Error {
    Error::DeviceUnavailable {
        device,
        reason: "this build of flowtensor has no CUDA backend".into(),
    }
}
