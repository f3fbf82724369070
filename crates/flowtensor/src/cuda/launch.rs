//! What a kernel launch is, independent of who runs it: the kernel's module
//! and name, the grid and block sizes, and the arguments in the order of
//! the kernel's parameters. The same launches go to the real GPU (cudarc)
//! and to the CPU emulation, so the emulated runs exercise this host code.

use super::CudaStorage;
use crate::layout::Layout;
use crate::{Error, Result};

/// The most dimensions a layout passed to a kernel has (`FT_MAX_RANK` of
/// `kernels/common.cuh`).
pub(crate) const MAX_RANK: usize = 8;

/// Threads per block of the one-dimensional kernels (`FT_THREADS`).
pub(crate) const THREADS: u32 = 256;

/// A strided view as the kernels see it (`FtLayout` of `kernels/common.cuh`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct FtLayout {
    pub rank: i32,
    pub reserved: i32,
    pub offset: i64,
    pub shape: [i64; MAX_RANK],
    pub strides: [i64; MAX_RANK],
}

impl FtLayout {
    /// The kernels' view of `l`, with neighbouring dimensions merged where
    /// the strides allow (so a contiguous layout becomes one dimension).
    pub fn of(op: &'static str, l: &Layout) -> Result<FtLayout> {
        Self::from_parts(op, l.offset() as i64, l.shape(), l.strides())
    }

    /// A contiguous layout of `shape` starting at `offset`.
    pub fn contiguous(op: &'static str, shape: &[usize], offset: usize) -> Result<FtLayout> {
        let strides = crate::contiguous_strides(shape);
        Self::from_parts(op, offset as i64, shape, &strides)
    }

    pub fn from_parts(
        op: &'static str,
        offset: i64,
        shape: &[usize],
        strides: &[isize],
    ) -> Result<FtLayout> {
        // merge dimension d into d - 1 when stride[d-1] = stride[d] * shape[d]
        let mut dims: Vec<(i64, i64)> = Vec::with_capacity(shape.len());
        for (&n, &s) in shape.iter().zip(strides) {
            let (n, s) = (n as i64, s as i64);
            if n == 1 {
                continue;
            }
            match dims.last_mut() {
                Some(last) if last.1 == s * n => *last = (last.0 * n, s),
                _ => dims.push((n, s)),
            }
        }
        if dims.len() > MAX_RANK {
            return Err(Error::invalid(
                op,
                format!(
                    "the CUDA kernels take views of at most {MAX_RANK} dimensions after merging; this one has {} ({shape:?})",
                    dims.len()
                ),
            ));
        }
        let mut l = FtLayout {
            rank: dims.len() as i32,
            offset,
            ..FtLayout::default()
        };
        for (d, (n, s)) in dims.into_iter().enumerate() {
            l.shape[d] = n;
            l.strides[d] = s;
        }
        Ok(l)
    }

    /// The layout with its shape kept dimension by dimension (no merging):
    /// for kernels that index a particular dimension.
    pub fn unmerged(
        op: &'static str,
        offset: i64,
        shape: &[usize],
        strides: &[isize],
    ) -> Result<FtLayout> {
        if shape.len() > MAX_RANK {
            return Err(Error::invalid(
                op,
                format!(
                    "the CUDA kernels take views of at most {MAX_RANK} dimensions, got {shape:?}"
                ),
            ));
        }
        let mut l = FtLayout {
            rank: shape.len() as i32,
            offset,
            ..FtLayout::default()
        };
        for d in 0..shape.len() {
            l.shape[d] = shape[d] as i64;
            l.strides[d] = strides[d] as i64;
        }
        Ok(l)
    }
}

/// A convolution's geometry as the kernels see it (`ConvParams` of `kernels/conv.cu`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ConvParams {
    pub n: i64,
    pub c: i64,
    pub h: i64,
    pub w: i64,
    pub o: i64,
    pub ho: i64,
    pub wo: i64,
    pub kh: i64,
    pub kw: i64,
    pub sh: i64,
    pub sw: i64,
    pub ph: i64,
    pub pw: i64,
    pub dh: i64,
    pub dw: i64,
    pub groups: i64,
}

/// One kernel argument, in the kernel's parameter order.
pub(crate) enum Arg<'a> {
    /// A buffer the kernel reads.
    In(&'a CudaStorage),
    /// A buffer the kernel writes.
    Out(&'a mut CudaStorage),
    /// Indices uploaded for this launch (`const i64*`).
    Indices(&'a [i64]),
    I32(i32),
    I64(i64),
    U64(u64),
    F64(f64),
    Layout(FtLayout),
    Conv(ConvParams),
}

/// A launch: kernel `module::name` on a grid of blocks.
pub(crate) struct Launch<'a> {
    pub module: &'static str,
    pub name: String,
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub args: Vec<Arg<'a>>,
}

/// The most blocks along one grid dimension the kernels use (their loops
/// stride over the rest).
pub(crate) const MAX_BLOCKS: u64 = 65_535;

/// A one-dimensional grid of [`THREADS`]-thread blocks covering `n` items.
pub(crate) fn grid_1d(n: usize) -> ([u32; 3], [u32; 3]) {
    let blocks = (n as u64).div_ceil(THREADS as u64).clamp(1, MAX_BLOCKS);
    ([blocks as u32, 1, 1], [THREADS, 1, 1])
}

/// One block per item (up to [`MAX_BLOCKS`]; the kernels loop over the rest).
pub(crate) fn grid_per_item(n: usize, threads: u32) -> ([u32; 3], [u32; 3]) {
    let blocks = (n as u64).clamp(1, MAX_BLOCKS);
    ([blocks as u32, 1, 1], [threads, 1, 1])
}
