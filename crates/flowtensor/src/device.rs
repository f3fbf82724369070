//! Where a tensor's storage lives.

/// A compute device. `Cuda(n)` is the n-th GPU; until the CUDA backend is
/// built in, asking for it is a [`crate::Error::DeviceUnavailable`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Device {
    #[default]
    Cpu,
    Cuda(usize),
}
