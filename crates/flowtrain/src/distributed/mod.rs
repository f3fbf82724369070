//! Data-parallel training over processes: the collective operations a run
//! needs ([`Collective`]: rank, world size, all-reduce, broadcast, barrier),
//! their implementations (one process; MPI with the `mpi` feature; NCCL
//! with the `nccl` feature), and what a training step does with them
//! ([`DataParallel`]).
//!
//! Each of `P` ranks takes a `1/P` share of every global batch (the
//! single-process batch order, split in contiguous shards), computes the
//! gradient of its shard's mean loss, and the gradients are averaged by
//! all-reducing one flat buffer (in buckets of at most [`BUCKET_BYTES`]), so
//! every rank applies the same update to the same parameters. A checksum of
//! the parameters, compared every few steps, stops a run whose ranks have
//! drifted apart.

#[cfg(feature = "mpi")]
mod mpi;
#[cfg(feature = "nccl")]
mod nccl;

use crate::error::{Result, TrainError};
use flowtensor::{DType, Device, Tensor};
use std::ops::Range;
use std::sync::Arc;

/// The largest all-reduce of the gradient buffer, in bytes (larger buffers
/// are reduced in buckets of this size).
pub const BUCKET_BYTES: usize = 64 << 20;

/// The collective operations of a group of processes ("ranks"). Every rank
/// must make the same calls in the same order with buffers of the same
/// shape, as with MPI.
pub trait Collective: Send + Sync {
    /// This process's rank, `0..world_size()`.
    fn rank(&self) -> usize;
    /// The processes in the group.
    fn world_size(&self) -> usize;
    /// The processes of the group on this machine (they share its cores).
    fn local_size(&self) -> usize;
    /// The elementwise sum over ranks of `values` (f32 or f64), on
    /// `values`' device.
    fn all_reduce_sum(&self, values: &Tensor) -> Result<Tensor>;
    /// Rank `root`'s `values` (every rank passes a tensor of the same shape
    /// and dtype).
    fn broadcast(&self, values: &Tensor, root: usize) -> Result<Tensor>;
    /// Waits until every rank has called it.
    fn barrier(&self) -> Result<()>;
    /// Ends every process of the group with `code` (after this rank failed,
    /// so that the others do not wait for it forever).
    fn abort(&self, code: i32) -> !;
    /// The backend's name, for messages (`single`, `mpi`, `nccl`).
    fn name(&self) -> &'static str;
    /// The device this rank must train on, where the backend decides it
    /// (NCCL: this rank's GPU).
    fn device(&self) -> Option<Device> {
        None
    }
}

/// The group of one process: every operation is the identity.
#[derive(Clone, Copy, Debug, Default)]
pub struct Single;

impl Collective for Single {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn local_size(&self) -> usize {
        1
    }
    fn all_reduce_sum(&self, values: &Tensor) -> Result<Tensor> {
        Ok(values.clone())
    }
    fn broadcast(&self, values: &Tensor, _root: usize) -> Result<Tensor> {
        Ok(values.clone())
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
    fn name(&self) -> &'static str {
        "single"
    }
}

/// How a run is spread over processes (`--distributed`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// One process.
    #[default]
    None,
    /// MPI (`mpirun -n P ...`), gradients through host memory.
    Mpi,
    /// NCCL between CUDA devices (one rank per GPU, started by `mpirun`),
    /// gradients in device memory.
    Nccl,
}

impl Backend {
    /// Joins the group of this backend (for NCCL, on `device` when given,
    /// else the GPU of the rank's rank on its machine). Errors name the
    /// backend and what is missing.
    pub fn connect(self, device: Option<Device>) -> Result<Arc<dyn Collective>> {
        let _ = device;
        match self {
            Backend::None => Ok(Arc::new(Single)),
            #[cfg(feature = "mpi")]
            Backend::Mpi => Ok(Arc::new(mpi::MpiCollective::init()?)),
            #[cfg(feature = "nccl")]
            Backend::Nccl => Ok(Arc::new(nccl::NcclCollective::init(device)?)),
            #[allow(unreachable_patterns)]
            other => Err(TrainError::Config(format!(
                "--distributed {}: this build has no {0} support; rebuild with `--features {0}`",
                other.feature()
            ))),
        }
    }

    /// The cargo feature that builds it.
    fn feature(self) -> &'static str {
        match self {
            Backend::None => "none",
            Backend::Mpi => "mpi",
            Backend::Nccl => "nccl",
        }
    }
}

/// A [`Collective`]'s error, naming the backend, the operation and the rank.
#[cfg(feature = "mpi")]
pub(crate) fn collective_error(
    backend: &str,
    op: &str,
    rank: usize,
    detail: impl std::fmt::Display,
) -> TrainError {
    TrainError::Distributed(format!("{backend} {op} on rank {rank}: {detail}"))
}

/// Steps between the checks that every rank holds the same parameters.
pub const CHECK_EVERY: u64 = 100;

/// What a data-parallel run does with its [`Collective`].
#[derive(Clone)]
pub struct DataParallel {
    group: Arc<dyn Collective>,
    /// Whether the group trains (its first rank writes the run's files);
    /// not when it only reads a run, to evaluate or sample it.
    trains: bool,
    check_every: u64,
}

impl std::fmt::Debug for DataParallel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DataParallel({}, rank {} of {})",
            self.group.name(),
            self.rank(),
            self.world_size()
        )
    }
}

impl DataParallel {
    /// Training in `group`, its parameters compared every [`CHECK_EVERY`] steps.
    pub fn new(group: Arc<dyn Collective>) -> Self {
        DataParallel {
            group,
            trains: true,
            check_every: CHECK_EVERY,
        }
    }

    /// With the parameters compared every `steps` steps (at least 1).
    pub fn with_check_every(mut self, steps: u64) -> Self {
        self.check_every = steps.max(1);
        self
    }

    /// One process, training.
    pub fn single() -> Self {
        Self::new(Arc::new(Single))
    }

    /// One process that reads a saved run without writing it.
    pub fn reader() -> Self {
        DataParallel {
            trains: false,
            ..Self::single()
        }
    }

    /// Whether the group trains (see [`DataParallel::reader`]).
    pub fn trains(&self) -> bool {
        self.trains
    }

    /// Steps between the parameter checks.
    pub fn check_every(&self) -> u64 {
        self.check_every
    }

    pub fn rank(&self) -> usize {
        self.group.rank()
    }

    pub fn world_size(&self) -> usize {
        self.group.world_size()
    }

    /// The device the backend puts this rank on, if it decides it.
    pub fn device(&self) -> Option<Device> {
        self.group.device()
    }

    /// The collective itself.
    pub fn group(&self) -> &dyn Collective {
        &*self.group
    }

    /// Whether this rank writes the run's files (rank 0 of a training group).
    pub fn is_writer(&self) -> bool {
        self.trains && self.rank() == 0
    }

    /// This rank's contiguous share of a global batch of `global` items:
    /// an error unless the ranks divide it evenly (the average of the
    /// shards' mean losses is then the global mean).
    pub fn shard(&self, global: usize) -> Result<Range<usize>> {
        let p = self.world_size();
        if !global.is_multiple_of(p) || global == 0 {
            return Err(TrainError::Config(format!(
                "batch_size {global} must be a positive multiple of the {p} ranks (each takes batch_size / ranks images)"
            )));
        }
        let per = global / p;
        Ok(self.rank() * per..(self.rank() + 1) * per)
    }

    /// Replaces the gradients of `params` with their averages over the
    /// ranks, and `extra` (per-rank scalars such as the batch's loss) with
    /// theirs: one flat buffer of the gradients' dtype, all-reduced in
    /// buckets of at most [`BUCKET_BYTES`]. Parameters without a gradient
    /// keep none (every rank has the same ones).
    pub fn average_gradients(
        &self,
        params: &[(String, Tensor)],
        extra: &[f64],
    ) -> Result<Vec<f64>> {
        let p = self.world_size();
        if p == 1 {
            return Ok(extra.to_vec());
        }
        let grads: Vec<(&Tensor, Tensor)> = params
            .iter()
            .filter_map(|(_, t)| t.grad().map(|g| (t, g)))
            .collect();
        let Some((first, _)) = grads.first() else {
            return self.average(extra);
        };
        let (dtype, device) = (first.dtype(), first.device());
        let flat: Vec<Tensor> = grads
            .iter()
            .map(|(_, g)| g.reshape(&[g.elem_count()]))
            .collect::<flowtensor::Result<_>>()?;
        let extra_t = Tensor::from_vec(extra.to_vec(), &[extra.len()], device)?.to_dtype(dtype)?;
        let mut parts: Vec<&Tensor> = flat.iter().collect();
        parts.push(&extra_t);
        let buffer = Tensor::cat(&parts, 0)?;
        let summed = self.all_reduce_buckets(&buffer)?;
        let mean = summed.mul_scalar(1.0 / p as f64)?;
        let mut offset = 0;
        for (param, g) in &grads {
            let n = g.elem_count();
            param.set_grad(mean.narrow(0, offset, n)?.reshape(g.shape())?)?;
            offset += n;
        }
        Ok(mean.narrow(0, offset, extra.len())?.to_vec_f64()?)
    }

    /// The all-reduced sum of a flat `buffer`, bucket by bucket.
    fn all_reduce_buckets(&self, buffer: &Tensor) -> Result<Tensor> {
        let n = buffer.elem_count();
        let per_bucket = (BUCKET_BYTES / buffer.dtype().size_in_bytes()).max(1);
        if n <= per_bucket {
            return self.group.all_reduce_sum(buffer);
        }
        let buckets = (0..n)
            .step_by(per_bucket)
            .map(|start| {
                let part = buffer.narrow(0, start, per_bucket.min(n - start))?;
                self.group.all_reduce_sum(&part.contiguous()?)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::cat(&buckets.iter().collect::<Vec<_>>(), 0)?)
    }

    /// The averages over ranks of `values` (in f64).
    pub fn average(&self, values: &[f64]) -> Result<Vec<f64>> {
        let p = self.world_size() as f64;
        Ok(self.sum(values)?.into_iter().map(|v| v / p).collect())
    }

    /// The sums over ranks of `values` (in f64).
    pub fn sum(&self, values: &[f64]) -> Result<Vec<f64>> {
        if self.world_size() == 1 {
            return Ok(values.to_vec());
        }
        let t = Tensor::from_vec(values.to_vec(), &[values.len()], Device::Cpu)?;
        Ok(self.group.all_reduce_sum(&t)?.to_vec_f64()?)
    }

    /// Gives every tensor of `tensors` (parameters and buffers) rank 0's
    /// values, in place.
    pub fn broadcast_from_first(&self, tensors: &[(String, Tensor)]) -> Result<()> {
        if self.world_size() == 1 {
            return Ok(());
        }
        for (name, t) in tensors {
            let value = self.group.broadcast(&t.detach().contiguous()?, 0)?;
            t.set_data(&value).map_err(|e| {
                TrainError::Distributed(format!("broadcast of {name} from rank 0: {e}"))
            })?;
        }
        Ok(())
    }

    /// Checks that every rank holds the same `tensors` (by a 64-bit
    /// checksum of their bits against rank 0's); an error on every rank
    /// otherwise, naming the step and how many ranks differ.
    pub fn check_same(&self, tensors: &[(String, Tensor)], step: u64) -> Result<()> {
        if self.world_size() == 1 {
            return Ok(());
        }
        let sum = checksum(tensors)?;
        // 16-bit pieces: exact in any float type
        let pieces: Vec<f64> = (0..4)
            .map(|i| ((sum >> (16 * i)) & 0xffff) as f64)
            .collect();
        let mine = Tensor::from_vec(pieces.clone(), &[4], Device::Cpu)?;
        let first = self.group.broadcast(&mine, 0)?.to_vec_f64()?;
        let differs = f64::from(u8::from(first != pieces));
        let differing = self.sum(&[differs])?[0];
        if differing > 0.0 {
            return Err(TrainError::Distributed(format!(
                "step {step}: the parameters of {differing} of {} ranks differ from rank 0's (checksum {sum:016x} on rank {}); the ranks have diverged, training stopped",
                self.world_size(),
                self.rank()
            )));
        }
        Ok(())
    }
}

/// FNV-1a over the bits of every element of `tensors`, in order.
pub fn checksum(tensors: &[(String, Tensor)]) -> Result<u64> {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bits: u64| {
        for byte in bits.to_le_bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for (_, t) in tensors {
        match t.dtype() {
            DType::F32 => t
                .to_vec::<f32>()?
                .iter()
                .for_each(|v| eat(u64::from(v.to_bits()))),
            DType::F64 => t.to_vec::<f64>()?.iter().for_each(|v| eat(v.to_bits())),
        }
    }
    Ok(hash)
}

/// The threads each rank's kernels should use: the machine's cores shared
/// by the group's processes on it (at least one).
pub fn threads_per_rank(local_size: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / local_size.max(1)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_process_is_its_own_group() {
        let dp = DataParallel::single();
        assert_eq!((dp.rank(), dp.world_size(), dp.is_writer()), (0, 1, true));
        assert_eq!(dp.shard(64).unwrap(), 0..64);
        assert_eq!(dp.average(&[1.5, -2.0]).unwrap(), [1.5, -2.0]);
        let t = Tensor::from_vec(vec![1.0f32, 2.0], &[2], Device::Cpu).unwrap();
        let params = [("w".to_string(), t)];
        dp.check_same(&params, 3).unwrap();
        dp.broadcast_from_first(&params).unwrap();
    }

    #[test]
    fn the_checksum_sees_every_bit() {
        let t = |v: Vec<f32>| {
            [(
                "w".to_string(),
                Tensor::from_vec(v, &[2], Device::Cpu).unwrap(),
            )]
        };
        let a = checksum(&t(vec![1.0, 2.0])).unwrap();
        assert_eq!(a, checksum(&t(vec![1.0, 2.0])).unwrap());
        assert_ne!(
            a,
            checksum(&t(vec![1.0, f32::from_bits(2.0f32.to_bits() ^ 1)])).unwrap()
        );
        assert_ne!(a, checksum(&t(vec![2.0, 1.0])).unwrap());
    }

    #[test]
    fn backends_missing_from_the_build_are_a_clear_error() {
        #[cfg(not(feature = "mpi"))]
        {
            let e = Backend::Mpi.connect(None).err().unwrap().to_string();
            assert!(e.contains("--features mpi"), "{e}");
        }
        #[cfg(not(feature = "nccl"))]
        {
            let e = Backend::Nccl.connect(None).err().unwrap().to_string();
            assert!(e.contains("--features nccl"), "{e}");
        }
        assert_eq!(Backend::None.connect(None).unwrap().world_size(), 1);
    }

    #[test]
    fn threads_are_shared_by_the_ranks_of_a_machine() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(threads_per_rank(1), cores);
        assert_eq!(threads_per_rank(cores * 4), 1);
    }
}
