//! [`Collective`] on MPI (the `mpi` crate over the system's MPI library,
//! e.g. Open MPI): tensors go through host memory, so it serves CPU runs
//! (and CUDA runs without NCCL, at the cost of a copy each way).

use super::{collective_error, Collective};
use crate::error::Result;
use flowtensor::{DType, Tensor};
use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use mpi::Threading;
use std::sync::Mutex;

/// The world communicator of an initialised MPI, with the communicator of
/// this machine's ranks. Calls are serialised by a lock, so MPI needs only
/// `MPI_THREAD_SERIALIZED` (training runs on the kernels' pool threads,
/// not the main thread).
pub(crate) struct MpiCollective {
    world: Mutex<SimpleCommunicator>,
    rank: usize,
    size: usize,
    /// This rank's rank, and the ranks, on its machine.
    #[cfg_attr(not(feature = "nccl"), allow(dead_code))]
    local_rank: usize,
    local_size: usize,
    /// Finalises MPI when dropped; declared last, dropped last.
    _universe: Universe,
}

// SAFETY: MPI handles are process-wide integers or pointers into the MPI
// library; with `MPI_THREAD_SERIALIZED` any thread may use them as long as
// no two do at once, which the lock guarantees.
unsafe impl Send for MpiCollective {}
unsafe impl Sync for MpiCollective {}

impl MpiCollective {
    /// Initialises MPI (once per process): an error when it is already
    /// initialised or the library gives less than serialised threading.
    pub(crate) fn init() -> Result<Self> {
        let (universe, threading) = mpi::initialize_with_threading(Threading::Serialized)
            .ok_or_else(|| collective_error("mpi", "init", 0, "MPI is already initialised"))?;
        if threading < Threading::Serialized {
            return Err(collective_error(
                "mpi",
                "init",
                0,
                format!("the MPI library gives only {threading:?} threading (serialized needed)"),
            ));
        }
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        let local = world.split_shared(world.rank());
        let (local_rank, local_size) = (local.rank() as usize, local.size() as usize);
        Ok(MpiCollective {
            world: Mutex::new(world),
            rank,
            size,
            local_rank,
            local_size,
            _universe: universe,
        })
    }

    /// This rank's rank among the ranks of its machine.
    #[cfg(feature = "nccl")]
    pub(crate) fn local_rank(&self) -> usize {
        self.local_rank
    }

    /// Rank `root`'s `bytes` (a fixed-size message, such as NCCL's id).
    #[cfg(feature = "nccl")]
    pub(crate) fn broadcast_bytes<const N: usize>(
        &self,
        bytes: &[u8; N],
        root: usize,
    ) -> Result<[u8; N]> {
        let mut buf = *bytes;
        self.world()
            .process_at_rank(root as i32)
            .broadcast_into(&mut buf[..]);
        Ok(buf)
    }

    fn world(&self) -> std::sync::MutexGuard<'_, SimpleCommunicator> {
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Checks that `values` fits one MPI call (an `int` count).
    fn count(&self, op: &str, values: &Tensor) -> Result<()> {
        if i32::try_from(values.elem_count()).is_err() {
            return Err(collective_error(
                "mpi",
                op,
                self.rank,
                format!("{} elements exceed an MPI count", values.elem_count()),
            ));
        }
        Ok(())
    }
}

impl Collective for MpiCollective {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.size
    }

    fn local_size(&self) -> usize {
        self.local_size
    }

    fn all_reduce_sum(&self, values: &Tensor) -> Result<Tensor> {
        self.count("all_reduce", values)?;
        let world = self.world();
        let summed = match values.dtype() {
            DType::F32 => {
                let send = values.to_vec::<f32>()?;
                let mut recv = vec![0f32; send.len()];
                world.all_reduce_into(&send[..], &mut recv[..], SystemOperation::sum());
                Tensor::from_vec(recv, values.shape(), values.device())?
            }
            DType::F64 => {
                let send = values.to_vec::<f64>()?;
                let mut recv = vec![0f64; send.len()];
                world.all_reduce_into(&send[..], &mut recv[..], SystemOperation::sum());
                Tensor::from_vec(recv, values.shape(), values.device())?
            }
        };
        Ok(summed)
    }

    fn broadcast(&self, values: &Tensor, root: usize) -> Result<Tensor> {
        self.count("broadcast", values)?;
        if root >= self.size {
            return Err(collective_error(
                "mpi",
                "broadcast",
                self.rank,
                format!("root {root} is not a rank of {}", self.size),
            ));
        }
        let world = self.world();
        let process = world.process_at_rank(root as i32);
        let value = match values.dtype() {
            DType::F32 => {
                let mut buf = values.to_vec::<f32>()?;
                process.broadcast_into(&mut buf[..]);
                Tensor::from_vec(buf, values.shape(), values.device())?
            }
            DType::F64 => {
                let mut buf = values.to_vec::<f64>()?;
                process.broadcast_into(&mut buf[..]);
                Tensor::from_vec(buf, values.shape(), values.device())?
            }
        };
        Ok(value)
    }

    fn barrier(&self) -> Result<()> {
        self.world().barrier();
        Ok(())
    }

    fn abort(&self, code: i32) -> ! {
        self.world().abort(code)
    }

    fn name(&self) -> &'static str {
        "mpi"
    }
}
