//! The CUDA backend: device memory, the kernels of `kernels/*.cu` and the
//! host code that launches them.
//!
//! - [`CudaStorage`] holds a device buffer of f32 or f64 and implements every
//!   storage operation of the backend trait with hand-written kernels (see
//!   `ops.rs`; the convolution exponential is composed in `series.rs`).
//! - A device is a real GPU, through cudarc with the driver loaded at run
//!   time (`dynamic-loading`): the driver is probed before any cudarc call,
//!   so a machine without it gets [`Error::DeviceUnavailable`], never a
//!   panic. One context and one stream per device; each kernel module is
//!   compiled by NVRTC once per process and architecture.
//! - With the `cuda-emu` feature, a device with no GPU behind it (or any
//!   device when `FLOWTENSOR_CUDA=emu`) is the CPU emulation of the CUDA
//!   execution model (`kernels/emu/`): the same kernel sources compiled by
//!   the system's C++ compiler, launched through the same host code, with
//!   host memory as device memory.
//!
//! Linear algebra on CUDA tensors (LU, QR, inverse, solves, determinants,
//! the matrix exponential) takes an explicit host round trip: flows apply it
//! to small per-channel `C x C` matrices, where a copy costs less than a
//! launch (see `crate::linalg`). Nothing else falls back to the host.

mod driver;
#[cfg(feature = "cuda-emu")]
mod emu;
pub mod kernels;
mod launch;
#[cfg(feature = "nccl")]
pub mod nccl;
mod ops;
mod series;

pub use kernels::{compile_ptx, kernel_names, module_source, nvrtc_available, MODULES};

use crate::cpu::CpuStorage;
use crate::{DType, Device, Error, Result};
use launch::Launch;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// Device memory of one element type.
pub(crate) enum Buffer {
    Gpu(driver::GpuBuffer),
    #[cfg(feature = "cuda-emu")]
    Emu(emu::HostBuffer),
}

/// Tensor data in the memory of a CUDA device.
pub struct CudaStorage {
    buffer: Buffer,
    dtype: DType,
    len: usize,
    device: Arc<CudaDevice>,
}

impl std::fmt::Debug for CudaStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CudaStorage({:?}, {} elements, cuda:{})",
            self.dtype, self.len, self.device.ordinal
        )
    }
}

impl CudaStorage {
    /// Number of elements held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A new buffer of `n` zeros on the same device.
    pub(crate) fn zeros_like_device(&self, n: usize, dtype: DType) -> Result<CudaStorage> {
        self.device.zeros(n, dtype)
    }
}

/// A CUDA device: a real GPU or the emulation.
pub(crate) struct CudaDevice {
    ordinal: usize,
    kind: Kind,
}

enum Kind {
    Gpu(driver::Gpu),
    #[cfg(feature = "cuda-emu")]
    Emu,
}

/// The error for `device` with `reason`.
pub(crate) fn unavailable(device: Device, reason: impl Into<String>) -> Error {
    Error::DeviceUnavailable {
        device,
        reason: reason.into(),
    }
}

/// Whether `FLOWTENSOR_CUDA=emu` asks for the emulation.
fn emulation_requested() -> bool {
    std::env::var("FLOWTENSOR_CUDA").is_ok_and(|v| v == "emu")
}

impl CudaDevice {
    fn open(ordinal: usize) -> Result<CudaDevice> {
        let device = Device::Cuda(ordinal);
        #[cfg(feature = "cuda-emu")]
        if emulation_requested() || !driver::driver_present() {
            return Ok(CudaDevice {
                ordinal,
                kind: Kind::Emu,
            });
        }
        if emulation_requested() {
            return Err(unavailable(
                device,
                "FLOWTENSOR_CUDA=emu needs flowtensor built with the cuda-emu feature",
            ));
        }
        let gpu = driver::Gpu::open(ordinal).map_err(|reason| unavailable(device, reason))?;
        Ok(CudaDevice {
            ordinal,
            kind: Kind::Gpu(gpu),
        })
    }

    fn device(&self) -> Device {
        Device::Cuda(self.ordinal)
    }

    /// What the device is, for people.
    fn describe(&self) -> String {
        match &self.kind {
            Kind::Gpu(gpu) => gpu.name(),
            #[cfg(feature = "cuda-emu")]
            Kind::Emu => "CUDA emulation on CPU threads".to_string(),
        }
    }

    fn storage(self: &Arc<Self>, buffer: Buffer, dtype: DType, len: usize) -> CudaStorage {
        CudaStorage {
            buffer,
            dtype,
            len,
            device: self.clone(),
        }
    }

    fn zeros(self: &Arc<Self>, n: usize, dtype: DType) -> Result<CudaStorage> {
        let buffer = match &self.kind {
            Kind::Gpu(gpu) => Buffer::Gpu(gpu.zeros(n, dtype).map_err(|e| self.fail("alloc", e))?),
            #[cfg(feature = "cuda-emu")]
            Kind::Emu => Buffer::Emu(emu::HostBuffer::zeros(n, dtype)),
        };
        Ok(self.storage(buffer, dtype, n))
    }

    fn upload(self: &Arc<Self>, data: &CpuStorage) -> Result<CudaStorage> {
        let (dtype, len) = (data.dtype(), data.len());
        let buffer = match &self.kind {
            Kind::Gpu(gpu) => Buffer::Gpu(gpu.upload(data).map_err(|e| self.fail("upload", e))?),
            #[cfg(feature = "cuda-emu")]
            Kind::Emu => Buffer::Emu(emu::HostBuffer::from_host(data)),
        };
        Ok(self.storage(buffer, dtype, len))
    }

    fn download(&self, s: &CudaStorage) -> Result<CpuStorage> {
        let mut host = match (&self.kind, &s.buffer) {
            (Kind::Gpu(gpu), Buffer::Gpu(b)) => {
                gpu.download(b).map_err(|e| self.fail("download", e))?
            }
            #[cfg(feature = "cuda-emu")]
            (Kind::Emu, Buffer::Emu(b)) => b.to_host(),
            #[cfg(feature = "cuda-emu")]
            _ => return Err(self.fail("download", "a buffer of another device kind".into())),
        };
        // an empty buffer is allocated with one element
        match &mut host {
            CpuStorage::F32(v) => v.truncate(s.len),
            CpuStorage::F64(v) => v.truncate(s.len),
        }
        Ok(host)
    }

    /// Runs a launch (kernels of the launch's module; arguments in order).
    fn launch(&self, launch: Launch<'_>) -> Result<()> {
        let name = launch.name.clone();
        match &self.kind {
            Kind::Gpu(gpu) => gpu
                .launch(launch)
                .map_err(|e| self.fail(&format!("launch {name}"), e)),
            #[cfg(feature = "cuda-emu")]
            Kind::Emu => emu::launch(launch).map_err(|e| self.fail(&format!("launch {name}"), e)),
        }
    }

    fn fail(&self, what: &str, detail: String) -> Error {
        Error::invalid("cuda", format!("cuda:{} {what}: {detail}", self.ordinal))
    }
}

/// The open devices, by ordinal.
fn device(device: Device) -> Result<Arc<CudaDevice>> {
    let Device::Cuda(ordinal) = device else {
        return Err(Error::invalid(
            "cuda",
            format!("{device:?} is not a CUDA device"),
        ));
    };
    static DEVICES: OnceLock<Mutex<HashMap<usize, Arc<CudaDevice>>>> = OnceLock::new();
    let mut open = DEVICES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(d) = open.get(&ordinal) {
        return Ok(d.clone());
    }
    let d = Arc::new(CudaDevice::open(ordinal)?);
    open.insert(ordinal, d.clone());
    Ok(d)
}

/// Opens `Device::Cuda(ordinal)` and says what it is (the GPU's name, or
/// the emulation), or why it cannot be used on this machine.
pub fn probe(ordinal: usize) -> Result<String> {
    Ok(device(Device::Cuda(ordinal))?.describe())
}

/// Waits until every operation queued on `device` has finished (a no-op on
/// the host and on the emulation, which run synchronously): timings of
/// device work end with it.
pub fn synchronize(device: Device) -> Result<()> {
    if device == Device::Cpu {
        return Ok(());
    }
    let d = self::device(device)?;
    match &d.kind {
        Kind::Gpu(gpu) => gpu.synchronize().map_err(|e| d.fail("synchronize", e)),
        #[cfg(feature = "cuda-emu")]
        Kind::Emu => Ok(()),
    }
}

/// Whether `Device::Cuda(ordinal)` is the CPU emulation.
pub fn is_emulated(ordinal: usize) -> bool {
    #[cfg(feature = "cuda-emu")]
    if let Ok(d) = device(Device::Cuda(ordinal)) {
        return matches!(d.kind, Kind::Emu);
    }
    let _ = ordinal;
    false
}

impl CudaStorage {
    /// The whole buffer in host memory.
    pub(crate) fn download(&self) -> Result<CpuStorage> {
        self.device.download(self)
    }

    pub(crate) fn run(&self, launch: Launch<'_>) -> Result<()> {
        self.device.launch(launch)
    }
}

/// The suffix of a kernel's name for a dtype.
pub(crate) fn suffix(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "f32",
        DType::F64 => "f64",
    }
}

/// Checks that every operand is on the device of the first and of its dtype.
pub(crate) fn check_operands(op: &'static str, parts: &[&CudaStorage]) -> Result<()> {
    let first = parts[0];
    for p in &parts[1..] {
        if p.device.ordinal != first.device.ordinal {
            return Err(Error::DeviceMismatch {
                op,
                lhs: first.device.device(),
                rhs: p.device.device(),
            });
        }
        if p.dtype != first.dtype {
            return Err(Error::DTypeMismatch {
                op,
                lhs: first.dtype,
                rhs: p.dtype,
            });
        }
    }
    Ok(())
}
