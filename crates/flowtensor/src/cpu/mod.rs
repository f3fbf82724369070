//! The CPU backend: host vectors and the kernels that run on them.

pub(crate) mod copy;
mod gather;
mod kernels;
mod math;
pub(crate) mod matmul;
mod tiled_gemm;
pub(crate) use tiled_gemm::{tiled_gemm, Strided, TiledGemm};

pub(crate) use gather::split_at_dim;
pub use kernels::PAR_THRESHOLD;
pub(crate) use kernels::{assume_init_mut, vectorized, written_pieces, zeroed_pieces, Loop};

use crate::backend::{BackendStorage, ConvEpilogue, ConvPass, Draw, SolveGeom};
use crate::conv::cpu as conv_cpu;
use crate::conv::{ConvGeom, DirectConv};
use crate::conv_exp::cpu as conv_exp_cpu;
use crate::conv_exp::{SeriesGeom, Stop};
use crate::layout::Layout;
use crate::ops::kinds::{BinaryOp, CmpOp, ReduceOp, UnaryOp};
use crate::{DType, Device, Element, Error, Result};
use kernels::{map, map_blocks, reduce, zip3_map, zip_map};
use math::{Elementary, Func};

/// Host memory holding f32 or f64 elements.
#[derive(Clone, Debug)]
pub enum CpuStorage {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

/// Applies a generic expression to the vector inside a storage, keeping the variant.
macro_rules! each_dtype {
    ($s:expr, $v:ident => $body:expr) => {
        match $s {
            CpuStorage::F32($v) => CpuStorage::F32($body),
            CpuStorage::F64($v) => CpuStorage::F64($body),
        }
    };
}

/// Like [`each_dtype`] for two storages that must share a dtype.
/// A bias operand (matmul, conv) as contiguous host values, checked to
/// have the dtype of the op's first operand.
fn bias_values(
    op: &'static str,
    dtype: DType,
    bias: Option<(&CpuStorage, &Layout)>,
) -> Result<Option<CpuStorage>> {
    match bias {
        Some((s, _)) if s.dtype() != dtype => Err(Error::DTypeMismatch {
            op,
            lhs: dtype,
            rhs: s.dtype(),
        }),
        Some((s, l)) => Ok(Some(s.to_host(l)?)),
        None => Ok(None),
    }
}

/// The values of [`bias_values`]' result, for the element type `T`.
fn slice<T: Element>(bias: &Option<CpuStorage>) -> Option<&[T]> {
    bias.as_ref().and_then(T::slice)
}

macro_rules! each_dtype_pair {
    ($op:expr, $a:expr, $b:expr, ($x:ident, $y:ident) => $body:expr) => {
        match ($a, $b) {
            (CpuStorage::F32($x), CpuStorage::F32($y)) => Ok(CpuStorage::F32($body)),
            (CpuStorage::F64($x), CpuStorage::F64($y)) => Ok(CpuStorage::F64($body)),
            (x, y) => Err(Error::DTypeMismatch {
                op: $op,
                lhs: x.dtype(),
                rhs: y.dtype(),
            }),
        }
    };
}

/// The range of a contiguous layout, which kernels that read raw slices need.
fn contiguous(op: &'static str, l: &Layout) -> Result<std::ops::Range<usize>> {
    l.contiguous_range()
        .ok_or_else(|| Error::invalid(op, "internal: kernels need contiguous operands"))
}

fn unary_kernel<T: Element + Elementary>(src: &[T], l: &Layout, op: UnaryOp) -> Vec<T> {
    let zero = T::zero();
    let func = |func| map_blocks(src, l, |out, x| math::apply(func, out, x));
    match op {
        UnaryOp::Neg => map(src, l, move |x: T| -x),
        UnaryOp::Exp => func(Func::Exp),
        UnaryOp::Log => func(Func::Ln),
        UnaryOp::Log1p => func(Func::Ln1p),
        UnaryOp::Sqrt => map(src, l, move |x: T| x.sqrt()),
        UnaryOp::Abs => map(src, l, move |x: T| x.abs()),
        UnaryOp::Square => map(src, l, move |x: T| x * x),
        UnaryOp::Tanh => func(Func::Tanh),
        UnaryOp::Sigmoid => func(Func::Sigmoid),
        UnaryOp::LogSigmoid => func(Func::LogSigmoid),
        UnaryOp::Softplus => func(Func::Softplus),
        UnaryOp::Relu => map(src, l, move |x: T| x.max(zero)),
        UnaryOp::Silu => func(Func::Silu),
        UnaryOp::Powf(p) => {
            let p = T::from_f64(p);
            map(src, l, move |x: T| x.powf(p))
        }
        UnaryOp::Affine { mul, add } => {
            let (m, a) = (T::from_f64(mul), T::from_f64(add));
            map(src, l, move |x: T| x * m + a)
        }
        UnaryOp::Clamp { lo, hi } => {
            let (lo, hi) = (T::from_f64(lo), T::from_f64(hi));
            map(src, l, move |x: T| x.max(lo).min(hi))
        }
    }
}

fn binary_kernel<T: Element>(a: &[T], la: &Layout, b: &[T], lb: &Layout, op: BinaryOp) -> Vec<T> {
    match op {
        BinaryOp::Add => zip_map(a, la, b, lb, |x, y| x + y),
        BinaryOp::Sub => zip_map(a, la, b, lb, |x, y| x - y),
        BinaryOp::Mul => zip_map(a, la, b, lb, |x, y| x * y),
        BinaryOp::Div => zip_map(a, la, b, lb, |x, y| x / y),
        BinaryOp::WherePositive => {
            let zero = T::zero();
            zip_map(a, la, b, lb, move |x, y| if y > zero { x } else { zero })
        }
    }
}

fn cmp_kernel<T: Element>(a: &[T], la: &Layout, b: &[T], lb: &Layout, op: CmpOp) -> Vec<T> {
    let mask = |c: bool| if c { T::one() } else { T::zero() };
    match op {
        CmpOp::Eq => zip_map(a, la, b, lb, move |x, y| mask(x == y)),
        CmpOp::Ne => zip_map(a, la, b, lb, move |x, y| mask(x != y)),
        CmpOp::Lt => zip_map(a, la, b, lb, move |x, y| mask(x < y)),
        CmpOp::Le => zip_map(a, la, b, lb, move |x, y| mask(x <= y)),
        CmpOp::Gt => zip_map(a, la, b, lb, move |x, y| mask(x > y)),
        CmpOp::Ge => zip_map(a, la, b, lb, move |x, y| mask(x >= y)),
    }
}

fn reduce_kernel<T: Element>(src: &[T], l: &Layout, dims: &[usize], op: ReduceOp) -> Vec<T> {
    match op {
        ReduceOp::Sum => reduce(src, l, dims, T::zero(), |a, x| a + x),
        ReduceOp::Max => reduce(src, l, dims, T::neg_infinity(), |a: T, x: T| {
            if x > a || x.is_nan() {
                x
            } else {
                a
            }
        }),
        ReduceOp::Min => reduce(src, l, dims, T::infinity(), |a: T, x: T| {
            if x < a || x.is_nan() {
                x
            } else {
                a
            }
        }),
    }
}

impl CpuStorage {
    pub fn dtype(&self) -> DType {
        match self {
            CpuStorage::F32(_) => DType::F32,
            CpuStorage::F64(_) => DType::F64,
        }
    }

    /// Number of elements held (not of any one view).
    pub fn len(&self) -> usize {
        match self {
            CpuStorage::F32(v) => v.len(),
            CpuStorage::F64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `n` zeros of `dtype`.
    pub(crate) fn zeros(n: usize, dtype: DType) -> CpuStorage {
        match dtype {
            DType::F32 => CpuStorage::F32(vec![0.0; n]),
            DType::F64 => CpuStorage::F64(vec![0.0; n]),
        }
    }
}

impl BackendStorage for CpuStorage {
    fn dtype(&self) -> DType {
        CpuStorage::dtype(self)
    }

    fn device(&self) -> Device {
        Device::Cpu
    }

    fn zeros(n: usize, dtype: DType, _device: Device) -> Result<Self> {
        Ok(CpuStorage::zeros(n, dtype))
    }

    fn from_host(data: &CpuStorage, _device: Device) -> Result<Self> {
        Ok(data.clone())
    }

    fn to_host(&self, l: &Layout) -> Result<CpuStorage> {
        self.copy_strided(l)
    }

    fn random(
        n: usize,
        dtype: DType,
        _device: Device,
        seed: u64,
        counter: u64,
        draw: Draw,
    ) -> Result<Self> {
        let values = crate::random::draw_values(seed, counter, n, draw);
        let v = CpuStorage::F64(values);
        v.to_dtype(&Layout::contiguous(&[n]), dtype)
    }

    fn dft(
        &self,
        l: &Layout,
        cshape: &[usize],
        dims: &[usize],
        inverse: bool,
        scale: f64,
    ) -> Result<Self> {
        let r = contiguous("dft", l)?;
        Ok(match self {
            CpuStorage::F32(v) => {
                CpuStorage::F32(crate::fft::cpu_dft(&v[r], cshape, dims, inverse, scale))
            }
            CpuStorage::F64(v) => {
                CpuStorage::F64(crate::fft::cpu_dft(&v[r], cshape, dims, inverse, scale))
            }
        })
    }

    fn quadrant_solve(
        &self,
        l: &Layout,
        kernel: &Self,
        lk: &Layout,
        geom: SolveGeom,
    ) -> Result<Self> {
        const OP: &str = "quadrant_solve";
        let rk = contiguous(OP, lk)?;
        debug_assert_eq!(l.shape(), [geom.n, geom.c, geom.h, geom.w]);
        match (self, kernel) {
            (CpuStorage::F64(y), CpuStorage::F64(k)) => Ok(CpuStorage::F64(
                crate::triangular::solve_strided(y, l, &k[rk]),
            )),
            (y, k) => Err(Error::invalid(
                OP,
                format!("solves in f64, got {:?} and {:?}", y.dtype(), k.dtype()),
            )),
        }
    }

    fn unary(&self, l: &Layout, op: UnaryOp) -> Result<Self> {
        Ok(each_dtype!(self, v => unary_kernel(v, l, op)))
    }

    fn binary(&self, la: &Layout, rhs: &Self, lb: &Layout, op: BinaryOp) -> Result<Self> {
        each_dtype_pair!("binary", self, rhs, (a, b) => binary_kernel(a, la, b, lb, op))
    }

    fn cmp(&self, la: &Layout, rhs: &Self, lb: &Layout, op: CmpOp) -> Result<Self> {
        each_dtype_pair!("cmp", self, rhs, (a, b) => cmp_kernel(a, la, b, lb, op))
    }

    /// `mask != 0 ? on_true : on_false` elementwise; all three share a shape.
    fn where_cond(
        &self,
        lm: &Layout,
        on_true: (&Self, &Layout),
        on_false: (&Self, &Layout),
    ) -> Result<Self> {
        fn pick<T: Element>(m: T, t: T, f: T) -> T {
            if m != T::zero() {
                t
            } else {
                f
            }
        }
        match (self, on_true.0, on_false.0) {
            (CpuStorage::F32(m), CpuStorage::F32(t), CpuStorage::F32(f)) => Ok(CpuStorage::F32(
                zip3_map((m, lm), (t, on_true.1), (f, on_false.1), pick),
            )),
            (CpuStorage::F64(m), CpuStorage::F64(t), CpuStorage::F64(f)) => Ok(CpuStorage::F64(
                zip3_map((m, lm), (t, on_true.1), (f, on_false.1), pick),
            )),
            (m, t, f) => Err(Error::DTypeMismatch {
                op: "where_cond",
                lhs: m.dtype(),
                rhs: if t.dtype() != m.dtype() {
                    t.dtype()
                } else {
                    f.dtype()
                },
            }),
        }
    }

    fn reduce(&self, l: &Layout, dims: &[usize], op: ReduceOp) -> Result<Self> {
        Ok(each_dtype!(self, v => reduce_kernel(v, l, dims, op)))
    }

    fn matmul(
        &self,
        la: &Layout,
        rhs: &Self,
        lb: &Layout,
        bias: Option<(&Self, &Layout)>,
    ) -> Result<Self> {
        let bias = bias_values("matmul", self.dtype(), bias)?;
        each_dtype_pair!("matmul", self, rhs, (a, b) => matmul::matmul(a, la, b, lb, slice(&bias)))
    }

    /// One of the three convolution kernels on contiguous operands: `self` is
    /// the first operand (x, dy or x) and `other` the second (w, w or dy).
    fn conv(
        &self,
        l: &Layout,
        other: &Self,
        lo: &Layout,
        g: &ConvGeom,
        pass: ConvPass,
        epilogue: ConvEpilogue<'_, Self>,
    ) -> Result<Self> {
        let (ra, rb) = (contiguous("conv2d", l)?, contiguous("conv2d", lo)?);
        let bias = bias_values("conv2d", self.dtype(), epilogue.bias)?;
        each_dtype_pair!("conv2d", self, other, (a, b) => {
            let (a, b) = (&a[ra.clone()], &b[rb.clone()]);
            match pass {
                ConvPass::Forward => {
                    let epilogue = conv_cpu::Epilogue { bias: slice(&bias), relu: epilogue.relu };
                    conv_cpu::conv_fwd(a, b, g, epilogue)
                }
                ConvPass::BackwardData => conv_cpu::conv_bwd_data(a, b, g),
                ConvPass::BackwardWeight => conv_cpu::conv_bwd_weight(a, b, g),
            }
        })
    }

    /// The convolution exponential of the images at `l` (`self`) with the
    /// kernel at `lk` (both contiguous): the sum and each image's terms.
    fn conv_exp_fwd(
        &self,
        l: &Layout,
        kernel: &Self,
        lk: &Layout,
        sg: &SeriesGeom,
        stop: Stop,
    ) -> Result<(Self, Vec<usize>)> {
        let (rx, rk) = (contiguous("conv_exp", l)?, contiguous("conv_exp", lk)?);
        match (self, kernel) {
            (CpuStorage::F32(x), CpuStorage::F32(k)) => {
                let (y, n) = conv_exp_cpu::series_forward(&x[rx], &k[rk], sg, stop);
                Ok((CpuStorage::F32(y), n))
            }
            (CpuStorage::F64(x), CpuStorage::F64(k)) => {
                let (y, n) = conv_exp_cpu::series_forward(&x[rx], &k[rk], sg, stop);
                Ok((CpuStorage::F64(y), n))
            }
            (x, k) => Err(Error::DTypeMismatch {
                op: "conv_exp",
                lhs: x.dtype(),
                rhs: k.dtype(),
            }),
        }
    }

    /// Gradients of [`Self::conv_exp_fwd`] for the output gradient `g`
    /// (contiguous, like the inputs): the input's, and the kernel's when
    /// `want_kernel`.
    fn conv_exp_bwd(
        &self,
        l: &Layout,
        kernel: &Self,
        lk: &Layout,
        g: &Self,
        lg: &Layout,
        sg: &SeriesGeom,
        counts: &[usize],
        want_kernel: bool,
    ) -> Result<(Self, Option<Self>)> {
        const OP: &str = "conv_exp backward";
        let (rx, rk, rg) = (contiguous(OP, l)?, contiguous(OP, lk)?, contiguous(OP, lg)?);
        fn run<T: DirectConv>(
            x: &[T],
            k: &[T],
            g: &[T],
            sg: &SeriesGeom,
            counts: &[usize],
            want_kernel: bool,
        ) -> (CpuStorage, Option<CpuStorage>) {
            let (dx, dk) = conv_exp_cpu::series_backward(x, k, g, sg, counts, want_kernel);
            (T::into_storage(dx), dk.map(T::into_storage))
        }
        match (self, kernel, g) {
            (CpuStorage::F32(x), CpuStorage::F32(k), CpuStorage::F32(g)) => {
                Ok(run(&x[rx], &k[rk], &g[rg], sg, counts, want_kernel))
            }
            (CpuStorage::F64(x), CpuStorage::F64(k), CpuStorage::F64(g)) => {
                Ok(run(&x[rx], &k[rk], &g[rg], sg, counts, want_kernel))
            }
            (x, k, g) => Err(Error::DTypeMismatch {
                op: OP,
                lhs: x.dtype(),
                rhs: if k.dtype() != x.dtype() {
                    k.dtype()
                } else {
                    g.dtype()
                },
            }),
        }
    }

    /// The elements of `l` as a new contiguous buffer.
    fn copy_strided(&self, l: &Layout) -> Result<Self> {
        Ok(each_dtype!(self, v => map(v, l, |x| x)))
    }

    /// Concatenation along `dim`; all parts share this storage's dtype.
    fn cat(parts: &[(&CpuStorage, &Layout)], dim: usize) -> Result<CpuStorage> {
        fn typed<'a, T: Element>(
            parts: &[(&'a CpuStorage, &'a Layout)],
        ) -> Option<Vec<(&'a [T], &'a Layout)>> {
            parts
                .iter()
                .map(|(s, l)| Some((T::slice(s)?, *l)))
                .collect()
        }
        let dtype = parts[0].0.dtype();
        let mismatch = || {
            let other = parts.iter().map(|p| p.0.dtype()).find(|&d| d != dtype);
            Error::DTypeMismatch {
                op: "cat",
                lhs: dtype,
                rhs: other.unwrap_or(dtype),
            }
        };
        Ok(match dtype {
            DType::F32 => {
                CpuStorage::F32(copy::cat(&typed::<f32>(parts).ok_or_else(mismatch)?, dim))
            }
            DType::F64 => {
                CpuStorage::F64(copy::cat(&typed::<f64>(parts).ok_or_else(mismatch)?, dim))
            }
        })
    }

    fn index_select(&self, l: &Layout, dim: usize, idx: &[usize]) -> Result<Self> {
        Ok(each_dtype!(self, v => copy::index_select(v, l, dim, idx)))
    }

    fn index_add(&self, l: &Layout, dim: usize, idx: &[usize], size: usize) -> Result<Self> {
        Ok(each_dtype!(self, v => copy::index_add(v, l, dim, idx, size)))
    }

    fn cumsum(&self, l: &Layout, dim: usize) -> Result<Self> {
        Ok(each_dtype!(self, v => gather::cumsum(v, l, dim)))
    }

    fn gather(&self, l: &Layout, index: &Self, li: &Layout, dim: usize) -> Result<Self> {
        each_dtype_pair!("take_along_dim", self, index, (x, i) => gather::gather(x, l, i, li, dim))
    }

    fn scatter_add(
        &self,
        l: &Layout,
        index: &Self,
        li: &Layout,
        dim: usize,
        size: usize,
    ) -> Result<Self> {
        each_dtype_pair!("take_along_dim backward", self, index, (g, i) => {
            gather::scatter_add(g, l, i, li, dim, size)
        })
    }

    fn searchsorted(&self, l: &Layout, values: &Self, lv: &Layout, right: bool) -> Result<Self> {
        each_dtype_pair!("searchsorted", self, values, (s, v) => {
            gather::searchsorted(s, l, v, lv, right)
        })
    }

    /// The elements of `l` converted to `dtype`, contiguous.
    fn to_dtype(&self, l: &Layout, dtype: DType) -> Result<Self> {
        match (self, dtype) {
            (CpuStorage::F32(v), DType::F64) => Ok(CpuStorage::F64(map(v, l, |x| x as f64))),
            (CpuStorage::F64(v), DType::F32) => Ok(CpuStorage::F32(map(v, l, |x| x as f32))),
            _ => self.copy_strided(l),
        }
    }

    /// Overwrites the contiguous range `dst` with the elements of `src` at `ls`.
    fn write_range(
        &mut self,
        dst: std::ops::Range<usize>,
        src: &CpuStorage,
        ls: &Layout,
    ) -> Result<()> {
        match (self, src) {
            (CpuStorage::F32(d), CpuStorage::F32(s)) => {
                d[dst].copy_from_slice(&copy::contiguous(s, ls))
            }
            (CpuStorage::F64(d), CpuStorage::F64(s)) => {
                d[dst].copy_from_slice(&copy::contiguous(s, ls))
            }
            (d, s) => {
                return Err(Error::DTypeMismatch {
                    op: "set_data",
                    lhs: d.dtype(),
                    rhs: s.dtype(),
                })
            }
        }
        Ok(())
    }
}
