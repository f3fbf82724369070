//! The storage operations every backend implements.
//!
//! [`BackendStorage`] is implemented by the CPU storage
//! ([`crate::CpuStorage`]) and the CUDA storage ([`crate::CudaStorage`]),
//! so the compiler checks that both cover every operation; [`crate::Storage`]
//! forwards each call to the backend holding the data. The arguments are
//! device-neutral descriptions (layouts, geometries, op kinds); results are
//! new contiguous storages on the same device.
//!
//! [`BACKEND_OPS`] names every operation; the CUDA parity suite checks that
//! each has a test.

use crate::conv::ConvGeom;
use crate::conv_exp::{SeriesGeom, Stop};
use crate::layout::Layout;
use crate::ops::kinds::{BinaryOp, CmpOp, ReduceOp, UnaryOp};
use crate::{DType, Device, Result};

/// Which of the three convolution kernels to run (see [`crate::Tensor::conv2d`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConvPass {
    /// `y = conv(x, w)`: operands `(x, w)`.
    Forward,
    /// `dx = conv^T(dy, w)`: operands `(dy, w)`.
    BackwardData,
    /// `dw` from `(x, dy)`.
    BackwardWeight,
}

impl ConvPass {
    /// The profiler's name for the kernel.
    pub fn profile_name(self) -> &'static str {
        match self {
            ConvPass::Forward => "conv2d",
            ConvPass::BackwardData => "conv2d:input_grad",
            ConvPass::BackwardWeight => "conv2d:weight_grad",
        }
    }
}

/// What a forward convolution does to each output element before it is
/// stored: add the output channel's bias (operand `(o)`), then, with
/// `relu`, `max(v, 0)` (0 for NaN, as the ReLU op). Done while
/// the output is in cache, so neither costs a pass over memory. The
/// backward passes take [`ConvEpilogue::NONE`].
pub(crate) struct ConvEpilogue<'a, S> {
    pub bias: Option<(&'a S, &'a Layout)>,
    pub relu: bool,
}

impl<S> ConvEpilogue<'_, S> {
    pub const NONE: Self = ConvEpilogue {
        bias: None,
        relu: false,
    };
}

/// A draw of the Philox generator: `n` values from block `counter` of the
/// stream keyed by `seed` (see [`crate::random`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Draw {
    /// Uniform in `[lo, hi)`.
    Uniform { lo: f64, hi: f64 },
    /// Normal with mean and standard deviation.
    Normal { mean: f64, std: f64 },
}

/// The image geometry of a quadrant solve: `n` images `(c, h, w)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SolveGeom {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

/// The names of the operations of [`BackendStorage`], in declaration order
/// (a unit test reads the trait and checks the list against it).
pub const BACKEND_OPS: [&str; 25] = [
    "zeros",
    "from_host",
    "to_host",
    "random",
    "unary",
    "binary",
    "cmp",
    "where_cond",
    "reduce",
    "matmul",
    "conv",
    "conv_exp_fwd",
    "conv_exp_bwd",
    "copy_strided",
    "cat",
    "index_select",
    "index_add",
    "to_dtype",
    "write_range",
    "dft",
    "cumsum",
    "gather",
    "scatter_add",
    "searchsorted",
    "quadrant_solve",
];

/// The storage operations of a backend.
pub(crate) trait BackendStorage: Sized {
    /// The element type held.
    fn dtype(&self) -> DType;
    /// The device the data is on.
    fn device(&self) -> Device;
    /// `n` zeros of `dtype` on `device` (one of this backend's).
    fn zeros(n: usize, dtype: DType, device: Device) -> Result<Self>;
    /// A copy of host data on `device`.
    fn from_host(data: &crate::CpuStorage, device: Device) -> Result<Self>;
    /// The elements of `l`, contiguous, in host memory.
    fn to_host(&self, l: &Layout) -> Result<crate::CpuStorage>;
    /// `n` values of a Philox draw (the same stream on every backend).
    fn random(
        n: usize,
        dtype: DType,
        device: Device,
        seed: u64,
        counter: u64,
        draw: Draw,
    ) -> Result<Self>;
    fn unary(&self, l: &Layout, op: UnaryOp) -> Result<Self>;
    /// Both layouts already have the output's (broadcast) shape.
    fn binary(&self, la: &Layout, rhs: &Self, lb: &Layout, op: BinaryOp) -> Result<Self>;
    fn cmp(&self, la: &Layout, rhs: &Self, lb: &Layout, op: CmpOp) -> Result<Self>;
    /// `mask != 0 ? on_true : on_false`; all three share the output's shape.
    fn where_cond(
        &self,
        lm: &Layout,
        on_true: (&Self, &Layout),
        on_false: (&Self, &Layout),
    ) -> Result<Self>;
    /// The reduction over `dims`, the reduced dimensions kept as size 1.
    fn reduce(&self, l: &Layout, dims: &[usize], op: ReduceOp) -> Result<Self>;
    /// Batched `a @ b`; the layouts share their (broadcast) batch shape. With
    /// `bias` (a layout of shape `(n)`), `bias` is added to every row.
    fn matmul(
        &self,
        la: &Layout,
        rhs: &Self,
        lb: &Layout,
        bias: Option<(&Self, &Layout)>,
    ) -> Result<Self>;
    /// One of the convolution kernels on contiguous operands.
    fn conv(
        &self,
        l: &Layout,
        other: &Self,
        lo: &Layout,
        g: &ConvGeom,
        pass: ConvPass,
        epilogue: ConvEpilogue<'_, Self>,
    ) -> Result<Self>;
    /// The convolution exponential's series, per image; returns the terms used.
    fn conv_exp_fwd(
        &self,
        l: &Layout,
        kernel: &Self,
        lk: &Layout,
        sg: &SeriesGeom,
        stop: Stop,
    ) -> Result<(Self, Vec<usize>)>;
    /// The series' gradients (input, and kernel when `want_kernel`).
    #[allow(clippy::too_many_arguments)]
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
    ) -> Result<(Self, Option<Self>)>;
    /// The elements of `l` as a new contiguous buffer.
    fn copy_strided(&self, l: &Layout) -> Result<Self>;
    /// Concatenation along `dim` (the parts agree elsewhere).
    fn cat(parts: &[(&Self, &Layout)], dim: usize) -> Result<Self>;
    fn index_select(&self, l: &Layout, dim: usize, idx: &[usize]) -> Result<Self>;
    /// The adjoint of `index_select`: `size` slots along `dim`.
    fn index_add(&self, l: &Layout, dim: usize, idx: &[usize], size: usize) -> Result<Self>;
    fn to_dtype(&self, l: &Layout, dtype: DType) -> Result<Self>;
    /// Overwrites the contiguous range `dst` with the elements of `src` at `ls`.
    fn write_range(&mut self, dst: std::ops::Range<usize>, src: &Self, ls: &Layout) -> Result<()>;
    /// `scale * DFT` over the complex dimensions `dims` of complex data of
    /// complex shape `cshape` (interleaved, contiguous at `l`).
    fn dft(
        &self,
        l: &Layout,
        cshape: &[usize],
        dims: &[usize],
        inverse: bool,
        scale: f64,
    ) -> Result<Self>;
    /// Running sums along `dim` (contiguous output of `l`'s shape).
    fn cumsum(&self, l: &Layout, dim: usize) -> Result<Self>;
    /// `y[.., j, ..] = x[.., index[.., j, ..], ..]` along `dim`; `index`
    /// (whole numbers in range, the data's dtype) has the output's shape.
    fn gather(&self, l: &Layout, index: &Self, li: &Layout, dim: usize) -> Result<Self>;
    /// The adjoint of `gather` (`self` is the gradient, of the index's
    /// shape): `size` entries along `dim`.
    fn scatter_add(
        &self,
        l: &Layout,
        index: &Self,
        li: &Layout,
        dim: usize,
        size: usize,
    ) -> Result<Self>;
    /// Insertion positions of `values` `(rows, m)` in the ascending rows of
    /// `self` `(rows, k)`, as whole numbers in the data's dtype.
    fn searchsorted(&self, l: &Layout, values: &Self, lv: &Layout, right: bool) -> Result<Self>;
    /// Solves `y = conv(x, K)` for `x` with an upper-left-quadrant 3x3
    /// kernel (`self` is `y`, contiguous f64).
    fn quadrant_solve(
        &self,
        l: &Layout,
        kernel: &Self,
        lk: &Layout,
        geom: SolveGeom,
    ) -> Result<Self>;
}

#[cfg(test)]
mod tests {
    use super::BACKEND_OPS;

    /// The operations of [`super::BackendStorage`] read from this file:
    /// the `fn` items of the trait, less the accessors `dtype` and `device`.
    fn trait_operations() -> Vec<String> {
        let source = include_str!("backend.rs");
        let start = source
            .find("pub(crate) trait BackendStorage")
            .expect("the trait is in this file");
        let body = &source[start..];
        let end = body.find("\n}\n").expect("the trait ends");
        body[..end]
            .lines()
            .filter_map(|line| line.trim().strip_prefix("fn "))
            .map(|rest| {
                rest.split(['(', '<'])
                    .next()
                    .unwrap_or_default()
                    .to_string()
            })
            .filter(|name| name != "dtype" && name != "device")
            .collect()
    }

    #[test]
    fn backend_ops_name_every_operation_of_the_trait_in_order() {
        assert_eq!(trait_operations(), BACKEND_OPS.to_vec());
    }
}
