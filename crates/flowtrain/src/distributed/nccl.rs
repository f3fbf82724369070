//! [`Collective`] on NCCL for CUDA tensors, started by MPI: MPI gives the
//! ranks, hands rank 0's NCCL id to the others and carries the host-side
//! operations (barriers, tensors in host memory); NCCL reduces the tensors
//! in GPU memory. One rank per GPU: rank `r` uses the `--device` it is
//! given, by default `cuda:L` for its rank `L` among the ranks of its
//! machine.

use super::mpi::MpiCollective;
use super::{collective_error, Collective};
use crate::error::Result;
use flowtensor::cuda::nccl::{unique_id, NcclComm};
use flowtensor::{Device, Tensor};

pub(crate) struct NcclCollective {
    mpi: MpiCollective,
    nccl: NcclComm,
    device: Device,
}

impl NcclCollective {
    /// Joins MPI, then the NCCL group on `device` (a CUDA device; by
    /// default `cuda:L` for this rank's rank `L` on its machine).
    pub(crate) fn init(device: Option<Device>) -> Result<Self> {
        let mpi = MpiCollective::init()?;
        let (rank, size) = (mpi.rank(), mpi.world_size());
        let device = device.unwrap_or(Device::Cuda(mpi.local_rank()));
        let fail = |detail: String| collective_error("nccl", "init", rank, detail);
        if !matches!(device, Device::Cuda(_)) {
            return Err(fail(format!(
                "--distributed nccl trains on CUDA devices (one per rank), not {device:?}"
            )));
        }
        // rank 0 makes the id; a failure there is everyone's (a zero id)
        let id = match rank {
            0 => unique_id().unwrap_or_else(|e| {
                eprintln!("rank 0: {e}");
                [0; 128]
            }),
            _ => [0; 128],
        };
        let id = mpi.broadcast_bytes(&id, 0)?;
        if id == [0; 128] {
            return Err(fail(
                "rank 0 could not make an NCCL id (see its message)".into(),
            ));
        }
        let nccl = NcclComm::join(device, rank, size, &id).map_err(|e| fail(e.to_string()))?;
        Ok(NcclCollective { mpi, nccl, device })
    }
}

impl Collective for NcclCollective {
    fn rank(&self) -> usize {
        self.mpi.rank()
    }

    fn world_size(&self) -> usize {
        self.mpi.world_size()
    }

    fn local_size(&self) -> usize {
        self.mpi.local_size()
    }

    fn all_reduce_sum(&self, values: &Tensor) -> Result<Tensor> {
        match values.device() {
            Device::Cpu => self.mpi.all_reduce_sum(values),
            Device::Cuda(_) => Ok(self.nccl.all_reduce_sum(values)?),
        }
    }

    fn broadcast(&self, values: &Tensor, root: usize) -> Result<Tensor> {
        match values.device() {
            Device::Cpu => self.mpi.broadcast(values, root),
            Device::Cuda(_) => Ok(self.nccl.broadcast(values, root)?),
        }
    }

    fn barrier(&self) -> Result<()> {
        self.mpi.barrier()
    }

    fn abort(&self, code: i32) -> ! {
        self.mpi.abort(code)
    }

    fn name(&self) -> &'static str {
        "nccl"
    }

    fn device(&self) -> Option<Device> {
        Some(self.device)
    }
}
