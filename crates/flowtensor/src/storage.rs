//! Device dispatch: every storage operation goes through [`Storage`], which
//! forwards it to the backend holding the data ([`BackendStorage`]).
//! Operands on different devices are an error naming the op.

use crate::backend::{BackendStorage, ConvEpilogue, ConvPass, Draw, SolveGeom};
use crate::conv::ConvGeom;
use crate::conv_exp::{SeriesGeom, Stop};
use crate::cpu::CpuStorage;
use crate::cuda::CudaStorage;
use crate::layout::Layout;
use crate::ops::kinds::{BinaryOp, CmpOp, ReduceOp, UnaryOp};
use crate::profile::{timed, Allocated};
use crate::{DType, Device, Error, Result};

/// The memory behind a tensor, on one device.
#[derive(Debug)]
pub enum Storage {
    Cpu(CpuStorage),
    Cuda(CudaStorage),
}

/// Forwards a call to the backend holding `$s`.
macro_rules! on_backend {
    ($s:expr, $x:ident => $body:expr) => {
        match $s {
            Storage::Cpu($x) => Storage::Cpu($body),
            Storage::Cuda($x) => Storage::Cuda($body),
        }
    };
}

/// Forwards a call on two storages, which must be on one device.
macro_rules! on_backend_pair {
    ($op:expr, $a:expr, $b:expr, ($x:ident, $y:ident) => $body:expr) => {
        match ($a, $b) {
            (Storage::Cpu($x), Storage::Cpu($y)) => Storage::Cpu($body),
            (Storage::Cuda($x), Storage::Cuda($y)) => Storage::Cuda($body),
            (a, b) => return Err(mismatch($op, a, b)),
        }
    };
}

/// [`on_backend_pair`] with an optional third operand on the same device
/// (`Option<(&Storage, &Layout)>`, handed to the body as the backend's).
macro_rules! on_backend_with_bias {
    ($op:expr, $a:expr, $b:expr, $c:expr, ($x:ident, $y:ident, $z:ident) => $body:expr) => {
        match ($a, $b, $c) {
            (Storage::Cpu($x), Storage::Cpu($y), None) => {
                let $z = None;
                Storage::Cpu($body)
            }
            (Storage::Cpu($x), Storage::Cpu($y), Some((Storage::Cpu(c), lc))) => {
                let $z = Some((c, lc));
                Storage::Cpu($body)
            }
            (Storage::Cuda($x), Storage::Cuda($y), None) => {
                let $z = None;
                Storage::Cuda($body)
            }
            (Storage::Cuda($x), Storage::Cuda($y), Some((Storage::Cuda(c), lc))) => {
                let $z = Some((c, lc));
                Storage::Cuda($body)
            }
            (a, b, c) => {
                let other = match c {
                    Some((c, _)) if c.device() != a.device() => c,
                    _ => b,
                };
                return Err(mismatch($op, a, other));
            }
        }
    };
}

fn mismatch(op: &'static str, a: &Storage, b: &Storage) -> Error {
    Error::DeviceMismatch {
        op,
        lhs: a.device(),
        rhs: b.device(),
    }
}

impl Storage {
    pub fn device(&self) -> Device {
        match self {
            Storage::Cpu(s) => s.device(),
            Storage::Cuda(s) => s.device(),
        }
    }

    pub fn dtype(&self) -> DType {
        match self {
            Storage::Cpu(s) => BackendStorage::dtype(s),
            Storage::Cuda(s) => s.dtype(),
        }
    }

    pub(crate) fn zeros(n: usize, dtype: DType, device: Device) -> Result<Storage> {
        timed("zeros", || {
            Ok(match device {
                Device::Cpu => Storage::Cpu(CpuStorage::zeros(n, dtype)),
                Device::Cuda(_) => Storage::Cuda(CudaStorage::zeros(n, dtype, device)?),
            })
        })
    }

    /// Host data placed on `device`.
    pub(crate) fn from_host(data: CpuStorage, device: Device) -> Result<Storage> {
        Ok(match device {
            Device::Cpu => Storage::Cpu(data),
            Device::Cuda(_) => Storage::Cuda(CudaStorage::from_host(&data, device)?),
        })
    }

    /// The elements of `l`, contiguous, in host memory.
    pub(crate) fn to_host(&self, l: &Layout) -> Result<CpuStorage> {
        match self {
            Storage::Cpu(s) => s.to_host(l),
            Storage::Cuda(s) => s.to_host(l),
        }
    }

    /// The elements of `l`, contiguous, on `device`.
    pub(crate) fn to_device(&self, l: &Layout, device: Device) -> Result<Storage> {
        if device == self.device() {
            return self.copy_strided(l);
        }
        Storage::from_host(self.to_host(l)?, device)
    }

    pub(crate) fn random(
        n: usize,
        dtype: DType,
        device: Device,
        seed: u64,
        counter: u64,
        draw: Draw,
    ) -> Result<Storage> {
        timed("random", || {
            Ok(match device {
                Device::Cpu => {
                    Storage::Cpu(CpuStorage::random(n, dtype, device, seed, counter, draw)?)
                }
                Device::Cuda(_) => {
                    Storage::Cuda(CudaStorage::random(n, dtype, device, seed, counter, draw)?)
                }
            })
        })
    }

    pub(crate) fn unary(&self, l: &Layout, op: UnaryOp) -> Result<Storage> {
        timed(op.profile_name(), || {
            Ok(on_backend!(self, s => s.unary(l, op)?))
        })
    }

    pub(crate) fn binary(
        &self,
        la: &Layout,
        rhs: &Storage,
        lb: &Layout,
        op: BinaryOp,
    ) -> Result<Storage> {
        timed(op.profile_name(), || {
            Ok(on_backend_pair!("binary", self, rhs, (a, b) => a.binary(la, b, lb, op)?))
        })
    }

    pub(crate) fn cmp(
        &self,
        la: &Layout,
        rhs: &Storage,
        lb: &Layout,
        op: CmpOp,
    ) -> Result<Storage> {
        timed(op.profile_name(), || {
            Ok(on_backend_pair!("cmp", self, rhs, (a, b) => a.cmp(la, b, lb, op)?))
        })
    }

    pub(crate) fn where_cond(
        &self,
        lm: &Layout,
        on_true: (&Storage, &Layout),
        on_false: (&Storage, &Layout),
    ) -> Result<Storage> {
        timed("where", || {
            Ok(match (self, on_true.0, on_false.0) {
                (Storage::Cpu(m), Storage::Cpu(t), Storage::Cpu(f)) => {
                    Storage::Cpu(m.where_cond(lm, (t, on_true.1), (f, on_false.1))?)
                }
                (Storage::Cuda(m), Storage::Cuda(t), Storage::Cuda(f)) => {
                    Storage::Cuda(m.where_cond(lm, (t, on_true.1), (f, on_false.1))?)
                }
                (m, t, f) => {
                    let other = if t.device() != m.device() { t } else { f };
                    return Err(mismatch("where_cond", m, other));
                }
            })
        })
    }

    pub(crate) fn reduce(&self, l: &Layout, dims: &[usize], op: ReduceOp) -> Result<Storage> {
        timed(op.profile_name(), || {
            Ok(on_backend!(self, s => s.reduce(l, dims, op)?))
        })
    }

    pub(crate) fn matmul(
        &self,
        la: &Layout,
        rhs: &Storage,
        lb: &Layout,
        bias: Option<(&Storage, &Layout)>,
    ) -> Result<Storage> {
        timed("matmul", || {
            Ok(
                on_backend_with_bias!("matmul", self, rhs, bias, (a, b, c) => a.matmul(la, b, lb, c)?),
            )
        })
    }

    pub(crate) fn conv(
        &self,
        l: &Layout,
        other: &Storage,
        lo: &Layout,
        g: &ConvGeom,
        pass: ConvPass,
        epilogue: ConvEpilogue<'_, Storage>,
    ) -> Result<Storage> {
        let relu = epilogue.relu;
        timed(pass.profile_name(), || {
            Ok(
                on_backend_with_bias!("conv2d", self, other, epilogue.bias, (a, b, bias) => {
                    a.conv(l, b, lo, g, pass, ConvEpilogue { bias, relu })?
                }),
            )
        })
    }

    pub(crate) fn conv_exp_fwd(
        &self,
        l: &Layout,
        kernel: &Storage,
        lk: &Layout,
        sg: &SeriesGeom,
        stop: Stop,
    ) -> Result<(Storage, Vec<usize>)> {
        timed("conv_exp", || match (self, kernel) {
            (Storage::Cpu(x), Storage::Cpu(k)) => {
                let (y, n) = x.conv_exp_fwd(l, k, lk, sg, stop)?;
                Ok((Storage::Cpu(y), n))
            }
            (Storage::Cuda(x), Storage::Cuda(k)) => {
                let (y, n) = x.conv_exp_fwd(l, k, lk, sg, stop)?;
                Ok((Storage::Cuda(y), n))
            }
            (a, b) => Err(mismatch("conv_exp", a, b)),
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
        timed("conv_exp_backward", || match (self, kernel, g) {
            (Storage::Cpu(x), Storage::Cpu(k), Storage::Cpu(g)) => {
                let (dx, dk) = x.conv_exp_bwd(l, k, lk, g, lg, sg, counts, want_kernel)?;
                Ok((Storage::Cpu(dx), dk.map(Storage::Cpu)))
            }
            (Storage::Cuda(x), Storage::Cuda(k), Storage::Cuda(g)) => {
                let (dx, dk) = x.conv_exp_bwd(l, k, lk, g, lg, sg, counts, want_kernel)?;
                Ok((Storage::Cuda(dx), dk.map(Storage::Cuda)))
            }
            (x, k, g) => {
                let other = if k.device() != x.device() { k } else { g };
                Err(mismatch("conv_exp backward", x, other))
            }
        })
    }

    pub(crate) fn copy_strided(&self, l: &Layout) -> Result<Storage> {
        timed("copy_strided", || {
            Ok(on_backend!(self, s => s.copy_strided(l)?))
        })
    }

    pub(crate) fn cat(parts: &[(&Storage, &Layout)], dim: usize) -> Result<Storage> {
        timed("cat", || {
            let first = parts
                .first()
                .ok_or_else(|| Error::invalid("cat", "needs at least one tensor"))?
                .0;
            if let Some((other, _)) = parts.iter().find(|(s, _)| s.device() != first.device()) {
                return Err(mismatch("cat", first, other));
            }
            Ok(match first {
                Storage::Cpu(_) => {
                    let cpu: Vec<(&CpuStorage, &Layout)> = parts
                        .iter()
                        .filter_map(|(s, l)| match s {
                            Storage::Cpu(c) => Some((c, *l)),
                            Storage::Cuda(_) => None,
                        })
                        .collect();
                    Storage::Cpu(CpuStorage::cat(&cpu, dim)?)
                }
                Storage::Cuda(_) => {
                    let cuda: Vec<(&CudaStorage, &Layout)> = parts
                        .iter()
                        .filter_map(|(s, l)| match s {
                            Storage::Cuda(c) => Some((c, *l)),
                            Storage::Cpu(_) => None,
                        })
                        .collect();
                    Storage::Cuda(CudaStorage::cat(&cuda, dim)?)
                }
            })
        })
    }

    pub(crate) fn index_select(&self, l: &Layout, dim: usize, idx: &[usize]) -> Result<Storage> {
        timed("index_select", || {
            Ok(on_backend!(self, s => s.index_select(l, dim, idx)?))
        })
    }

    pub(crate) fn index_add(
        &self,
        l: &Layout,
        dim: usize,
        idx: &[usize],
        size: usize,
    ) -> Result<Storage> {
        timed("index_add", || {
            Ok(on_backend!(self, s => s.index_add(l, dim, idx, size)?))
        })
    }

    pub(crate) fn cumsum(&self, l: &Layout, dim: usize) -> Result<Storage> {
        timed("cumsum", || Ok(on_backend!(self, s => s.cumsum(l, dim)?)))
    }

    pub(crate) fn gather(
        &self,
        l: &Layout,
        index: &Storage,
        li: &Layout,
        dim: usize,
    ) -> Result<Storage> {
        timed("take_along_dim", || match (self, index) {
            (Storage::Cpu(x), Storage::Cpu(i)) => Ok(Storage::Cpu(x.gather(l, i, li, dim)?)),
            (Storage::Cuda(x), Storage::Cuda(i)) => Ok(Storage::Cuda(x.gather(l, i, li, dim)?)),
            (a, b) => Err(mismatch("take_along_dim", a, b)),
        })
    }

    pub(crate) fn scatter_add(
        &self,
        l: &Layout,
        index: &Storage,
        li: &Layout,
        dim: usize,
        size: usize,
    ) -> Result<Storage> {
        timed("scatter_add", || match (self, index) {
            (Storage::Cpu(g), Storage::Cpu(i)) => {
                Ok(Storage::Cpu(g.scatter_add(l, i, li, dim, size)?))
            }
            (Storage::Cuda(g), Storage::Cuda(i)) => {
                Ok(Storage::Cuda(g.scatter_add(l, i, li, dim, size)?))
            }
            (a, b) => Err(mismatch("take_along_dim backward", a, b)),
        })
    }

    pub(crate) fn searchsorted(
        &self,
        l: &Layout,
        values: &Storage,
        lv: &Layout,
        right: bool,
    ) -> Result<Storage> {
        timed("searchsorted", || match (self, values) {
            (Storage::Cpu(s), Storage::Cpu(v)) => {
                Ok(Storage::Cpu(s.searchsorted(l, v, lv, right)?))
            }
            (Storage::Cuda(s), Storage::Cuda(v)) => {
                Ok(Storage::Cuda(s.searchsorted(l, v, lv, right)?))
            }
            (a, b) => Err(mismatch("searchsorted", a, b)),
        })
    }

    pub(crate) fn to_dtype(&self, l: &Layout, dtype: DType) -> Result<Storage> {
        timed("to_dtype", || {
            Ok(on_backend!(self, s => s.to_dtype(l, dtype)?))
        })
    }

    pub(crate) fn write_range(
        &mut self,
        dst: std::ops::Range<usize>,
        src: &Storage,
        ls: &Layout,
    ) -> Result<()> {
        timed("write_range", || match (self, src) {
            (Storage::Cpu(d), Storage::Cpu(s)) => d.write_range(dst, s, ls),
            (Storage::Cuda(d), Storage::Cuda(s)) => d.write_range(dst, s, ls),
            (d, s) => Err(mismatch("set_data", d, s)),
        })
    }

    pub(crate) fn dft(
        &self,
        l: &Layout,
        cshape: &[usize],
        dims: &[usize],
        inverse: bool,
        scale: f64,
    ) -> Result<Storage> {
        timed("dft", || {
            Ok(on_backend!(self, s => s.dft(l, cshape, dims, inverse, scale)?))
        })
    }

    pub(crate) fn quadrant_solve(
        &self,
        l: &Layout,
        kernel: &Storage,
        lk: &Layout,
        geom: SolveGeom,
    ) -> Result<Storage> {
        timed("quadrant_solve", || {
            Ok(
                on_backend_pair!("quadrant_solve", self, kernel, (y, k) => y.quadrant_solve(l, k, lk, geom)?),
            )
        })
    }

    /// The host data, when the storage is in host memory.
    pub fn as_cpu(&self) -> Result<&CpuStorage> {
        match self {
            Storage::Cpu(s) => Ok(s),
            Storage::Cuda(s) => Err(Error::invalid(
                "as_cpu",
                format!(
                    "the data is on {:?}; copy it to the host first (to_device)",
                    s.device()
                ),
            )),
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

impl Allocated for Storage {
    fn allocated(&self) -> usize {
        let len = match self {
            Storage::Cpu(s) => s.len(),
            Storage::Cuda(s) => s.len(),
        };
        len * self.dtype().size_in_bytes()
    }
}

impl Allocated for Option<Storage> {
    fn allocated(&self) -> usize {
        self.as_ref().map_or(0, Allocated::allocated)
    }
}
