//! Device dispatch: every storage operation goes through [`Storage`], which
//! forwards to the backend that holds the data.

use crate::conv::ConvGeom;
use crate::conv_exp::cpu::{SeriesGeom, Stop};
use crate::cpu::{ConvKernel, CpuStorage};
use crate::cuda::CudaStorage;
use crate::layout::Layout;
use crate::ops::kinds::{BinaryOp, CmpOp, ReduceOp, UnaryOp};
use crate::{DType, Device, Error, Result};

/// The memory behind a tensor, on one device.
#[derive(Clone, Debug)]
pub enum Storage {
    Cpu(CpuStorage),
    Cuda(CudaStorage),
}

/// Forwards a call to the backend holding `$s`.
macro_rules! on_backend {
    ($s:expr, $cpu:ident => $body:expr) => {
        match $s {
            Storage::Cpu($cpu) => $body,
            Storage::Cuda(c) => match *c {},
        }
    };
}

/// Forwards a call on two storages, which must be on one device.
macro_rules! on_backend_pair {
    ($a:expr, $b:expr, ($x:ident, $y:ident) => $body:expr) => {
        match ($a, $b) {
            (Storage::Cpu($x), Storage::Cpu($y)) => $body,
            (Storage::Cuda(c), _) | (_, Storage::Cuda(c)) => match *c {},
        }
    };
}

impl Storage {
    pub fn device(&self) -> Device {
        on_backend!(self, _s => Device::Cpu)
    }

    pub fn dtype(&self) -> DType {
        on_backend!(self, s => s.dtype())
    }

    pub(crate) fn zeros(n: usize, dtype: DType, device: Device) -> Result<Storage> {
        match device {
            Device::Cpu => Ok(Storage::Cpu(CpuStorage::zeros(n, dtype))),
            Device::Cuda(_) => Err(crate::cuda::unavailable(device)),
        }
    }

    pub(crate) fn unary(&self, l: &Layout, op: UnaryOp) -> Result<Storage> {
        on_backend!(self, s => Ok(Storage::Cpu(s.unary(l, op))))
    }

    pub(crate) fn binary(
        &self,
        la: &Layout,
        rhs: &Storage,
        lb: &Layout,
        op: BinaryOp,
    ) -> Result<Storage> {
        on_backend_pair!(self, rhs, (a, b) => Ok(Storage::Cpu(a.binary(la, b, lb, op)?)))
    }

    pub(crate) fn cmp(
        &self,
        la: &Layout,
        rhs: &Storage,
        lb: &Layout,
        op: CmpOp,
    ) -> Result<Storage> {
        on_backend_pair!(self, rhs, (a, b) => Ok(Storage::Cpu(a.cmp(la, b, lb, op)?)))
    }

    pub(crate) fn where_cond(
        &self,
        lm: &Layout,
        on_true: (&Storage, &Layout),
        on_false: (&Storage, &Layout),
    ) -> Result<Storage> {
        match (self, on_true.0, on_false.0) {
            (Storage::Cpu(m), Storage::Cpu(t), Storage::Cpu(f)) => Ok(Storage::Cpu(m.where_cond(
                lm,
                (t, on_true.1),
                (f, on_false.1),
            )?)),
            (Storage::Cuda(c), _, _) | (_, Storage::Cuda(c), _) | (_, _, Storage::Cuda(c)) => {
                match *c {}
            }
        }
    }

    pub(crate) fn reduce(&self, l: &Layout, dims: &[usize], op: ReduceOp) -> Result<Storage> {
        on_backend!(self, s => Ok(Storage::Cpu(s.reduce(l, dims, op))))
    }

    pub(crate) fn matmul(&self, la: &Layout, rhs: &Storage, lb: &Layout) -> Result<Storage> {
        on_backend_pair!(self, rhs, (a, b) => Ok(Storage::Cpu(a.matmul(la, b, lb)?)))
    }

    pub(crate) fn conv_fwd(
        &self,
        lx: &Layout,
        w: &Storage,
        lw: &Layout,
        g: &ConvGeom,
    ) -> Result<Storage> {
        on_backend_pair!(self, w, (x, w) => Ok(Storage::Cpu(x.conv(lx, w, lw, g, ConvKernel::Forward)?)))
    }

    pub(crate) fn conv_bwd_data(
        &self,
        ly: &Layout,
        w: &Storage,
        lw: &Layout,
        g: &ConvGeom,
    ) -> Result<Storage> {
        on_backend_pair!(self, w, (y, w) => Ok(Storage::Cpu(y.conv(ly, w, lw, g, ConvKernel::BackwardData)?)))
    }

    pub(crate) fn conv_bwd_weight(
        &self,
        lx: &Layout,
        dy: &Storage,
        ldy: &Layout,
        g: &ConvGeom,
    ) -> Result<Storage> {
        on_backend_pair!(self, dy, (x, dy) => Ok(Storage::Cpu(x.conv(lx, dy, ldy, g, ConvKernel::BackwardWeight)?)))
    }

    pub(crate) fn conv_exp_fwd(
        &self,
        l: &Layout,
        kernel: &Storage,
        lk: &Layout,
        sg: &SeriesGeom,
        stop: Stop,
    ) -> Result<(Storage, Vec<usize>)> {
        on_backend_pair!(self, kernel, (x, k) => {
            let (y, counts) = x.conv_exp_fwd(l, k, lk, sg, stop)?;
            Ok((Storage::Cpu(y), counts))
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn conv_exp_bwd(
        &self,
        l: &Layout,
        kernel: &Storage,
        lk: &Layout,
        g: &Storage,
        lg: &Layout,
        sg: &SeriesGeom,
        counts: &[usize],
        want_kernel: bool,
    ) -> Result<(Storage, Option<Storage>)> {
        match (self, kernel, g) {
            (Storage::Cpu(x), Storage::Cpu(k), Storage::Cpu(g)) => {
                let (dx, dk) = x.conv_exp_bwd(l, k, lk, g, lg, sg, counts, want_kernel)?;
                Ok((Storage::Cpu(dx), dk.map(Storage::Cpu)))
            }
            (Storage::Cuda(c), _, _) | (_, Storage::Cuda(c), _) | (_, _, Storage::Cuda(c)) => {
                match *c {}
            }
        }
    }

    pub(crate) fn copy_strided(&self, l: &Layout) -> Result<Storage> {
        on_backend!(self, s => Ok(Storage::Cpu(s.copy_strided(l))))
    }

    pub(crate) fn cat(parts: &[(&Storage, &Layout)], dim: usize) -> Result<Storage> {
        let cpu: Vec<(&CpuStorage, &Layout)> = parts
            .iter()
            .map(|(s, l)| on_backend!(s, c => (c, *l)))
            .collect();
        Ok(Storage::Cpu(CpuStorage::cat(&cpu, dim)?))
    }

    pub(crate) fn index_select(&self, l: &Layout, dim: usize, idx: &[usize]) -> Result<Storage> {
        on_backend!(self, s => Ok(Storage::Cpu(s.index_select(l, dim, idx))))
    }

    pub(crate) fn index_add(
        &self,
        l: &Layout,
        dim: usize,
        idx: &[usize],
        size: usize,
    ) -> Result<Storage> {
        on_backend!(self, s => Ok(Storage::Cpu(s.index_add(l, dim, idx, size))))
    }

    pub(crate) fn to_dtype(&self, l: &Layout, dtype: DType) -> Result<Storage> {
        on_backend!(self, s => Ok(Storage::Cpu(s.to_dtype(l, dtype))))
    }

    pub(crate) fn write_range(
        &mut self,
        dst: std::ops::Range<usize>,
        src: &Storage,
        ls: &Layout,
    ) -> Result<()> {
        match (self, src) {
            (Storage::Cpu(d), Storage::Cpu(s)) => d.write_range(dst, s, ls),
            (Storage::Cuda(c), _) => match *c {},
            (_, Storage::Cuda(c)) => match *c {},
        }
    }

    /// The host data, when the storage is in host memory.
    pub fn as_cpu(&self) -> Result<&CpuStorage> {
        match self {
            Storage::Cpu(s) => Ok(s),
            Storage::Cuda(c) => match *c {},
        }
    }
}

/// Checks that two tensors' devices agree.
pub(crate) fn same_device(op: &'static str, a: Device, b: Device) -> Result<()> {
    if a == b {
        Ok(())
    } else {
        Err(Error::DeviceMismatch { op, lhs: a, rhs: b })
    }
}
