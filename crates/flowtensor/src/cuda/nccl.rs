//! Collectives between processes over NCCL (the `nccl` feature): one
//! communicator per process and GPU, joined with a unique id that one rank
//! makes ([`unique_id`]) and the caller hands to every rank (by MPI, say).
//! Tensors are reduced in device memory, on the device's stream, so they
//! are ordered with the kernels around them. NCCL (`libnccl.so`) is loaded
//! at run time and probed first: a machine without it, a CPU tensor or an
//! emulated device gets an error naming what is missing, never a panic.

use super::driver::GpuBuffer;
use super::{device, Buffer, CudaStorage, Kind};
use crate::storage::Storage;
use crate::{Device, Error, Result, Tensor};
use cudarc::nccl::safe::{Comm, Id, ReduceOp};
use std::sync::Mutex;

/// Whether the NCCL library can be loaded on this machine.
pub fn nccl_available() -> bool {
    // SAFETY: probing only tries to open the library by its known names.
    unsafe { cudarc::nccl::sys::is_culib_present() }
}

fn nccl_error(op: &str, detail: impl std::fmt::Debug) -> Error {
    Error::invalid("nccl", format!("{op}: {detail:?}"))
}

fn check_library(op: &str) -> Result<()> {
    if nccl_available() {
        Ok(())
    } else {
        Err(Error::invalid(
            "nccl",
            format!("{op}: no NCCL library (libnccl.so.2) on this machine"),
        ))
    }
}

/// A new group's unique id (on the rank that makes it), to give to every rank.
pub fn unique_id() -> Result<[u8; 128]> {
    check_library("unique_id")?;
    let id = Id::new().map_err(|e| nccl_error("unique_id", e))?;
    Ok(id.internal().map(|c| c as u8))
}

/// This process's member of an NCCL group, on one GPU.
pub struct NcclComm {
    comm: Mutex<Comm>,
    device: Device,
}

// SAFETY: the communicator is a handle into the NCCL library, which may be
// used from any thread; the lock keeps calls on it one at a time.
unsafe impl Send for NcclComm {}
unsafe impl Sync for NcclComm {}

impl NcclComm {
    /// Joins the group of `id` as `rank` of `world` on `device`, which must
    /// be a real GPU. Every rank calls it; it returns when all have.
    pub fn join(device: Device, rank: usize, world: usize, id: &[u8; 128]) -> Result<NcclComm> {
        check_library("join")?;
        if rank >= world {
            return Err(Error::invalid(
                "nccl",
                format!("join: rank {rank} is not in a group of {world}"),
            ));
        }
        let d = super::device(device)?;
        let Some(gpu) = real_gpu(&d.kind) else {
            return Err(super::unavailable(
                device,
                "NCCL needs a real GPU, and this device is the CPU emulation",
            ));
        };
        let id = Id::uninit(id.map(|b| b as std::ffi::c_char));
        let comm = Comm::from_rank(gpu.stream(), rank, world, id)
            .map_err(|e| nccl_error(&format!("join as rank {rank} of {world}"), e))?;
        Ok(NcclComm {
            comm: Mutex::new(comm),
            device,
        })
    }

    /// The elementwise sum over the group of `t` (on this group's device).
    pub fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor> {
        self.collective("all_reduce", t, |comm, src, dst| match (src, dst) {
            (GpuBuffer::F32(s), GpuBuffer::F32(d)) => comm.all_reduce(s, d, &ReduceOp::Sum),
            (GpuBuffer::F64(s), GpuBuffer::F64(d)) => comm.all_reduce(s, d, &ReduceOp::Sum),
            _ => unreachable!("the output is allocated with the input's dtype"),
        })
    }

    /// Rank `root`'s `t` on every rank.
    pub fn broadcast(&self, t: &Tensor, root: usize) -> Result<Tensor> {
        self.collective("broadcast", t, |comm, src, dst| match (src, dst) {
            (GpuBuffer::F32(s), GpuBuffer::F32(d)) => comm.broadcast(Some(s), d, root as i32),
            (GpuBuffer::F64(s), GpuBuffer::F64(d)) => comm.broadcast(Some(s), d, root as i32),
            _ => unreachable!("the output is allocated with the input's dtype"),
        })
    }

    /// Runs `op` from a compact copy of `t` into a new buffer of its shape.
    fn collective(
        &self,
        name: &str,
        t: &Tensor,
        op: impl FnOnce(
            &Comm,
            &GpuBuffer,
            &mut GpuBuffer,
        ) -> std::result::Result<
            cudarc::nccl::result::NcclStatus,
            cudarc::nccl::result::NcclError,
        >,
    ) -> Result<Tensor> {
        if t.device() != self.device {
            return Err(Error::invalid(
                "nccl",
                format!(
                    "{name}: the tensor is on {:?}, the group on {:?}",
                    t.device(),
                    self.device
                ),
            ));
        }
        if t.elem_count() == 0 {
            return Ok(t.clone());
        }
        // NCCL reads whole buffers: a view inside a larger one is copied
        let src = t.contiguous()?;
        let compact = src.layout().offset() == 0 && storage_len(&src) == src.elem_count();
        let src = if compact { src } else { src.mul_scalar(1.0)? };
        let mut out = device(self.device)?.zeros(src.elem_count(), src.dtype())?;
        {
            let storage = src.storage();
            let (Storage::Cuda(CudaStorage { buffer, .. }), Some(d)) = (&*storage, gpu(&mut out))
            else {
                return Err(nccl_error(name, "the tensor is not in GPU memory"));
            };
            let Some(s) = gpu_buffer(buffer) else {
                return Err(nccl_error(name, "the tensor is not in GPU memory"));
            };
            let comm = self.comm.lock().unwrap_or_else(|e| e.into_inner());
            op(&comm, s, d).map_err(|e| nccl_error(name, e))?;
        }
        Ok(Tensor::from_storage(Storage::Cuda(out), t.shape()))
    }
}

/// The elements of `t`'s storage.
fn storage_len(t: &Tensor) -> usize {
    match &*t.storage() {
        Storage::Cuda(s) => s.len,
        Storage::Cpu(_) => 0,
    }
}

/// The GPU of a device (none for the emulation).
fn real_gpu(kind: &Kind) -> Option<&super::driver::Gpu> {
    match kind {
        Kind::Gpu(gpu) => Some(gpu),
        #[cfg(feature = "cuda-emu")]
        Kind::Emu => None,
    }
}

/// The GPU memory of `buffer` (none for the emulation's).
fn gpu_buffer(buffer: &Buffer) -> Option<&GpuBuffer> {
    match buffer {
        Buffer::Gpu(b) => Some(b),
        #[cfg(feature = "cuda-emu")]
        Buffer::Emu(_) => None,
    }
}

/// The GPU memory of `storage`, to write.
fn gpu(storage: &mut CudaStorage) -> Option<&mut GpuBuffer> {
    match &mut storage.buffer {
        Buffer::Gpu(b) => Some(b),
        #[cfg(feature = "cuda-emu")]
        Buffer::Emu(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_the_library_or_a_gpu_there_is_no_group_and_no_panic() {
        let cpu = NcclComm::join(Device::Cpu, 0, 1, &[0; 128]);
        assert!(cpu.is_err(), "a CPU device joined an NCCL group");
        assert!(NcclComm::join(Device::Cuda(0), 1, 1, &[0; 128]).is_err());
        if !nccl_available() {
            let e = unique_id().unwrap_err().to_string();
            assert!(e.contains("libnccl"), "{e}");
            eprintln!("skipped the one-rank group: no NCCL library on this machine");
            return;
        }
        if super::super::probe(0).is_err() || super::super::is_emulated(0) {
            eprintln!("skipped the one-rank group: no GPU");
            return;
        }
        // a group of one: the sum and the broadcast give the tensor back
        let id = unique_id().unwrap();
        let comm = NcclComm::join(Device::Cuda(0), 0, 1, &id).unwrap();
        for dtype in [crate::DType::F32, crate::DType::F64] {
            let values: Vec<f64> = (0..10).map(f64::from).collect();
            let t = Tensor::from_vec(values, &[10], Device::Cpu)
                .and_then(|t| t.to_dtype(dtype))
                .and_then(|t| t.to_device(Device::Cuda(0)))
                .unwrap();
            let view = t.narrow(0, 2, 5).unwrap();
            for got in [
                comm.all_reduce_sum(&view).unwrap(),
                comm.broadcast(&view, 0).unwrap(),
            ] {
                assert_eq!(got.to_vec_f64().unwrap(), view.to_vec_f64().unwrap());
            }
        }
    }
}
