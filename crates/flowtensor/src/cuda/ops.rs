//! Every storage operation of the backend trait on CUDA storage: the host
//! side of the kernels (argument layouts, grids), shared by the GPU and the
//! emulation.

use super::launch::{grid_1d, grid_per_item, Arg, ConvParams, FtLayout, Launch, THREADS};
use super::{check_operands, device, suffix, CudaStorage};
use crate::backend::{BackendStorage, ConvEpilogue, ConvPass, Draw, SolveGeom};
use crate::conv::ConvGeom;
use crate::conv_exp::{SeriesGeom, Stop};
use crate::cpu::split_at_dim;
use crate::cpu::CpuStorage;
use crate::layout::Layout;
use crate::ops::kinds::{BinaryOp, CmpOp, ReduceOp, UnaryOp};
use crate::{DType, Device, Error, Result};

/// The operation codes of `kernels/elementwise.cu`.
fn unary_code(op: UnaryOp) -> (i32, f64, f64) {
    match op {
        UnaryOp::Neg => (0, 0.0, 0.0),
        UnaryOp::Exp => (1, 0.0, 0.0),
        UnaryOp::Log => (2, 0.0, 0.0),
        UnaryOp::Log1p => (3, 0.0, 0.0),
        UnaryOp::Sqrt => (4, 0.0, 0.0),
        UnaryOp::Abs => (5, 0.0, 0.0),
        UnaryOp::Square => (6, 0.0, 0.0),
        UnaryOp::Tanh => (7, 0.0, 0.0),
        UnaryOp::Sigmoid => (8, 0.0, 0.0),
        UnaryOp::LogSigmoid => (9, 0.0, 0.0),
        UnaryOp::Softplus => (10, 0.0, 0.0),
        UnaryOp::Relu => (11, 0.0, 0.0),
        UnaryOp::Silu => (12, 0.0, 0.0),
        UnaryOp::Powf(p) => (13, p, 0.0),
        UnaryOp::Affine { mul, add } => (14, mul, add),
        UnaryOp::Clamp { lo, hi } => (15, lo, hi),
    }
}

fn binary_code(op: BinaryOp) -> i32 {
    match op {
        BinaryOp::Add => 0,
        BinaryOp::Sub => 1,
        BinaryOp::Mul => 2,
        BinaryOp::Div => 3,
        BinaryOp::WherePositive => 4,
    }
}

fn cmp_code(op: CmpOp) -> i32 {
    match op {
        CmpOp::Eq => 0,
        CmpOp::Ne => 1,
        CmpOp::Lt => 2,
        CmpOp::Le => 3,
        CmpOp::Gt => 4,
        CmpOp::Ge => 5,
    }
}

fn reduce_code(op: ReduceOp) -> i32 {
    match op {
        ReduceOp::Sum => 0,
        ReduceOp::Max => 1,
        ReduceOp::Min => 2,
    }
}

/// A one-dimensional launch of `module::base_dtype` over `n` items.
fn launch_1d<'a>(
    module: &'static str,
    base: &str,
    dtype: DType,
    n: usize,
    args: Vec<Arg<'a>>,
) -> Launch<'a> {
    let (grid, block) = grid_1d(n);
    Launch {
        module,
        name: format!("{base}_{}", suffix(dtype)),
        grid,
        block,
        args,
    }
}

impl CudaStorage {
    /// A new output of `n` elements of `dtype` on this storage's device.
    /// The forward convolution's epilogue on its output `y`, in place
    /// (`kernels/conv.cu`, `conv_epilogue`).
    fn conv_epilogue(
        &self,
        y: &mut CudaStorage,
        g: &ConvGeom,
        epilogue: ConvEpilogue<'_, CudaStorage>,
    ) -> Result<()> {
        const OP: &str = "conv2d";
        let n = g.n * g.o * g.ho * g.wo;
        if (epilogue.bias.is_none() && !epilogue.relu) || n == 0 {
            return Ok(());
        }
        let bias = match epilogue.bias {
            Some((b, lb)) => {
                check_operands(OP, &[self, b])?;
                Some(b.contiguous_view(lb)?)
            }
            None => None,
        };
        // without a bias the kernel reads none: the output stands in for it
        let bias_arg = match &bias {
            Some(b) => Arg::In(b),
            None => Arg::In(self),
        };
        let args = vec![
            Arg::Out(y),
            bias_arg,
            Arg::I64(n as i64),
            Arg::I64(g.o as i64),
            Arg::I64((g.ho * g.wo) as i64),
            Arg::I32(bias.is_some() as i32),
            Arg::I32(epilogue.relu as i32),
        ];
        self.run(launch_1d("conv", "conv_epilogue", self.dtype, n, args))
    }

    fn output(&self, n: usize, dtype: DType) -> Result<CudaStorage> {
        self.zeros_like_device(n, dtype)
    }

    /// `dst` (a contiguous range of this storage starting at `start`) gets
    /// the elements of `src` at `ls`.
    fn copy_into(&mut self, start: usize, src: &CudaStorage, ls: &Layout) -> Result<()> {
        const OP: &str = "copy";
        let n = ls.elem_count();
        if n == 0 {
            return Ok(());
        }
        let name = match (src.dtype, self.dtype) {
            (DType::F32, DType::F32) => "copy_f32",
            (DType::F64, DType::F64) => "copy_f64",
            (DType::F32, DType::F64) => "cast_f32_f64",
            (DType::F64, DType::F32) => "cast_f64_f32",
        };
        let (grid, block) = grid_1d(n);
        let launch = Launch {
            module: "elementwise",
            name: name.to_string(),
            grid,
            block,
            args: vec![
                Arg::In(src),
                Arg::Layout(FtLayout::of(OP, ls)?),
                Arg::Out(self),
                Arg::Layout(FtLayout::contiguous(OP, &[n], start)?),
                Arg::I64(n as i64),
            ],
        };
        src.run(launch)
    }
}

impl BackendStorage for CudaStorage {
    fn dtype(&self) -> DType {
        self.dtype
    }

    fn device(&self) -> Device {
        self.device.device()
    }

    fn zeros(n: usize, dtype: DType, d: Device) -> Result<Self> {
        device(d)?.zeros(n, dtype)
    }

    fn from_host(data: &CpuStorage, d: Device) -> Result<Self> {
        device(d)?.upload(data)
    }

    fn to_host(&self, l: &Layout) -> Result<CpuStorage> {
        let contiguous = l
            .contiguous_range()
            .filter(|r| r.start == 0 && r.end == self.len);
        let mut host = match contiguous {
            Some(_) => self.download()?,
            None => self.copy_strided(l)?.download()?,
        };
        // a zero-length buffer is allocated with one element
        match &mut host {
            CpuStorage::F32(v) => v.truncate(l.elem_count()),
            CpuStorage::F64(v) => v.truncate(l.elem_count()),
        }
        Ok(host)
    }

    fn random(
        n: usize,
        dtype: DType,
        d: Device,
        seed: u64,
        counter: u64,
        draw: Draw,
    ) -> Result<Self> {
        let dev = device(d)?;
        let mut y = dev.zeros(n, dtype)?;
        if n == 0 {
            return Ok(y);
        }
        let (base, a, b) = match draw {
            Draw::Uniform { lo, hi } => ("uniform", lo, hi),
            Draw::Normal { mean, std } => ("normal", mean, std),
        };
        let launch = launch_1d(
            "random",
            base,
            dtype,
            n.div_ceil(2),
            vec![
                Arg::Out(&mut y),
                Arg::I64(n as i64),
                Arg::U64(seed),
                Arg::U64(counter),
                Arg::F64(a),
                Arg::F64(b),
            ],
        );
        dev.launch(launch)?;
        Ok(y)
    }

    fn unary(&self, l: &Layout, op: UnaryOp) -> Result<Self> {
        let n = l.elem_count();
        let mut y = self.output(n, self.dtype)?;
        if n == 0 {
            return Ok(y);
        }
        let (code, p0, p1) = unary_code(op);
        let launch = launch_1d(
            "elementwise",
            "unary",
            self.dtype,
            n,
            vec![
                Arg::In(self),
                Arg::Layout(FtLayout::of("unary", l)?),
                Arg::Out(&mut y),
                Arg::I64(n as i64),
                Arg::I32(code),
                Arg::F64(p0),
                Arg::F64(p1),
            ],
        );
        self.run(launch)?;
        Ok(y)
    }

    fn binary(&self, la: &Layout, rhs: &Self, lb: &Layout, op: BinaryOp) -> Result<Self> {
        check_operands("binary", &[self, rhs])?;
        self.zip("binary", "binary", la, rhs, lb, binary_code(op))
    }

    fn cmp(&self, la: &Layout, rhs: &Self, lb: &Layout, op: CmpOp) -> Result<Self> {
        check_operands("cmp", &[self, rhs])?;
        self.zip("cmp", "compare", la, rhs, lb, cmp_code(op))
    }

    fn where_cond(
        &self,
        lm: &Layout,
        on_true: (&Self, &Layout),
        on_false: (&Self, &Layout),
    ) -> Result<Self> {
        const OP: &str = "where_cond";
        check_operands(OP, &[self, on_true.0, on_false.0])?;
        let n = lm.elem_count();
        let mut y = self.output(n, self.dtype)?;
        if n == 0 {
            return Ok(y);
        }
        let launch = launch_1d(
            "elementwise",
            "where",
            self.dtype,
            n,
            vec![
                Arg::In(self),
                Arg::Layout(FtLayout::of(OP, lm)?),
                Arg::In(on_true.0),
                Arg::Layout(FtLayout::of(OP, on_true.1)?),
                Arg::In(on_false.0),
                Arg::Layout(FtLayout::of(OP, on_false.1)?),
                Arg::Out(&mut y),
                Arg::I64(n as i64),
            ],
        );
        self.run(launch)?;
        Ok(y)
    }

    fn reduce(&self, l: &Layout, dims: &[usize], op: ReduceOp) -> Result<Self> {
        const OP: &str = "reduce";
        let (shape, strides) = (l.shape(), l.strides());
        let (mut kept_shape, mut kept_strides) = (Vec::new(), Vec::new());
        let (mut red_shape, mut red_strides) = (Vec::new(), Vec::new());
        for d in 0..shape.len() {
            if dims.contains(&d) {
                red_shape.push(shape[d]);
                red_strides.push(strides[d]);
            } else {
                kept_shape.push(shape[d]);
                kept_strides.push(strides[d]);
            }
        }
        let nout: usize = kept_shape.iter().product();
        let nred: usize = red_shape.iter().product();
        let mut y = self.output(nout, self.dtype)?;
        if nout == 0 {
            return Ok(y);
        }
        let kept = FtLayout::from_parts(OP, l.offset() as i64, &kept_shape, &kept_strides)?;
        let reduced = FtLayout::from_parts(OP, 0, &red_shape, &red_strides)?;
        let args = vec![
            Arg::In(self),
            Arg::Layout(kept),
            Arg::Layout(reduced),
            Arg::Out(&mut y),
            Arg::I64(nout as i64),
            Arg::I64(nred as i64),
            Arg::I32(reduce_code(op)),
        ];
        let launch = if nred <= 32 {
            launch_1d("reduce", "reduce_thread", self.dtype, nout, args)
        } else {
            let (grid, block) = grid_per_item(nout, THREADS);
            Launch {
                module: "reduce",
                name: format!("reduce_block_{}", suffix(self.dtype)),
                grid,
                block,
                args,
            }
        };
        self.run(launch)?;
        Ok(y)
    }

    fn matmul(
        &self,
        la: &Layout,
        rhs: &Self,
        lb: &Layout,
        bias: Option<(&Self, &Layout)>,
    ) -> Result<Self> {
        const OP: &str = "matmul";
        check_operands(OP, &[self, rhs])?;
        let r = la.rank();
        let (m, k, n) = (la.shape()[r - 2], la.shape()[r - 1], lb.shape()[r - 1]);
        let batch: usize = la.shape()[..r - 2].iter().product();
        let mut c = self.output(batch * m * n, self.dtype)?;
        if batch * m * n == 0 {
            return Ok(c);
        }
        let batch_layout = |l: &Layout| {
            FtLayout::from_parts(
                OP,
                l.offset() as i64,
                &l.shape()[..r - 2],
                &l.strides()[..r - 2],
            )
        };
        let tiles = |x: usize| (x.div_ceil(16) as u32).max(1);
        let launch = Launch {
            module: "matmul",
            name: format!("matmul_{}", suffix(self.dtype)),
            grid: [tiles(n), tiles(m), batch.clamp(1, 65_535) as u32],
            block: [16, 16, 1],
            args: vec![
                Arg::In(self),
                Arg::Layout(batch_layout(la)?),
                Arg::I64(la.strides()[r - 2] as i64),
                Arg::I64(la.strides()[r - 1] as i64),
                Arg::In(rhs),
                Arg::Layout(batch_layout(lb)?),
                Arg::I64(lb.strides()[r - 2] as i64),
                Arg::I64(lb.strides()[r - 1] as i64),
                Arg::Out(&mut c),
                Arg::I64(batch as i64),
                Arg::I64(m as i64),
                Arg::I64(n as i64),
                Arg::I64(k as i64),
            ],
        };
        self.run(launch)?;
        match bias {
            // the bias broadcast over the rows, by the elementwise kernel
            Some((b, lbias)) => {
                let rows = Layout::contiguous(&[batch * m, n]);
                let spread = Layout::from_parts(
                    vec![batch * m, n],
                    vec![0, lbias.strides()[0]],
                    lbias.offset(),
                );
                c.binary(&rows, b, &spread, BinaryOp::Add)
            }
            None => Ok(c),
        }
    }

    fn conv(
        &self,
        l: &Layout,
        other: &Self,
        lo: &Layout,
        g: &ConvGeom,
        pass: ConvPass,
        epilogue: ConvEpilogue<'_, Self>,
    ) -> Result<Self> {
        const OP: &str = "conv2d";
        check_operands(OP, &[self, other])?;
        let (a, b) = (self.contiguous_view(l)?, other.contiguous_view(lo)?);
        let p = conv_params(g);
        let (n, dtype) = match pass {
            ConvPass::Forward => (g.n * g.o * g.ho * g.wo, self.dtype),
            ConvPass::BackwardData => (g.n * g.c * g.h * g.w, self.dtype),
            ConvPass::BackwardWeight => (g.o * g.cg() * g.kh * g.kw, self.dtype),
        };
        let mut y = self.output(n, dtype)?;
        if n == 0 {
            return Ok(y);
        }
        if g.is_empty() {
            if pass == ConvPass::Forward {
                self.conv_epilogue(&mut y, g, epilogue)?;
            }
            return Ok(y);
        }
        let args = vec![Arg::In(&a), Arg::In(&b), Arg::Out(&mut y), Arg::Conv(p)];
        let name = |base: &str| format!("{base}_{}", suffix(dtype));
        let launch = match pass {
            ConvPass::Forward if is_3x3_same(g) => {
                // tiles of 8 for small images, else 16 (C3_TILE)
                let side = if g.ho.max(g.wo) <= 8 { 8 } else { 16 };
                Launch {
                    module: "conv",
                    name: name("conv_fwd_3x3"),
                    grid: [
                        g.wo.div_ceil(side) as u32,
                        g.ho.div_ceil(side) as u32,
                        (g.n * g.o).clamp(1, 65_535) as u32,
                    ],
                    block: [side as u32, side as u32, 1],
                    args,
                }
            }
            ConvPass::Forward => launch_1d("conv", "conv_fwd", dtype, n, args),
            ConvPass::BackwardData => launch_1d("conv", "conv_bwd_data", dtype, n, args),
            ConvPass::BackwardWeight => {
                let (grid, block) = grid_per_item(n, THREADS);
                Launch {
                    module: "conv",
                    name: name("conv_bwd_weight"),
                    grid,
                    block,
                    args,
                }
            }
        };
        self.run(launch)?;
        if pass == ConvPass::Forward {
            self.conv_epilogue(&mut y, g, epilogue)?;
        }
        Ok(y)
    }

    fn conv_exp_fwd(
        &self,
        l: &Layout,
        kernel: &Self,
        lk: &Layout,
        sg: &SeriesGeom,
        stop: Stop,
    ) -> Result<(Self, Vec<usize>)> {
        check_operands("conv_exp", &[self, kernel])?;
        let (x, k) = (self.contiguous_view(l)?, kernel.contiguous_view(lk)?);
        super::series::forward(&x, &k, sg, stop)
    }

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
        check_operands(OP, &[self, kernel, g])?;
        let (x, k, g) = (
            self.contiguous_view(l)?,
            kernel.contiguous_view(lk)?,
            g.contiguous_view(lg)?,
        );
        super::series::backward(&x, &k, &g, sg, counts, want_kernel)
    }

    fn copy_strided(&self, l: &Layout) -> Result<Self> {
        let mut y = self.output(l.elem_count(), self.dtype)?;
        y.copy_into(0, self, l)?;
        Ok(y)
    }

    fn cat(parts: &[(&Self, &Layout)], dim: usize) -> Result<Self> {
        const OP: &str = "cat";
        let first = parts[0].0;
        let all: Vec<&CudaStorage> = parts.iter().map(|(s, _)| *s).collect();
        check_operands(OP, &all)?;
        let mut shape = parts[0].1.shape().to_vec();
        shape[dim] = parts.iter().map(|(_, l)| l.shape()[dim]).sum();
        let total: usize = shape.iter().product();
        let mut y = first.output(total, first.dtype)?;
        let out = Layout::contiguous(&shape);
        let mut start = 0;
        for (s, l) in parts {
            let len = l.shape()[dim];
            if len > 0 && l.elem_count() > 0 {
                let dst = out.narrow(dim, start, len)?;
                y.copy_view(s, l, &dst)?;
            }
            start += len;
        }
        Ok(y)
    }

    fn index_select(&self, l: &Layout, dim: usize, idx: &[usize]) -> Result<Self> {
        self.index_kernel("index_select", l, dim, idx, idx.len())
    }

    fn index_add(&self, l: &Layout, dim: usize, idx: &[usize], size: usize) -> Result<Self> {
        self.index_kernel("index_add", l, dim, idx, size)
    }

    fn cumsum(&self, l: &Layout, dim: usize) -> Result<Self> {
        const OP: &str = "cumsum";
        let n = l.elem_count();
        let mut y = self.output(n, self.dtype)?;
        if n == 0 {
            return Ok(y);
        }
        let (outer, len, inner) = split_at_dim(l.shape(), dim);
        let launch = launch_1d(
            "gather",
            "cumsum",
            self.dtype,
            outer * inner,
            vec![
                Arg::In(self),
                Arg::Layout(FtLayout::of(OP, l)?),
                Arg::Out(&mut y),
                Arg::I64(outer as i64),
                Arg::I64(len as i64),
                Arg::I64(inner as i64),
            ],
        );
        self.run(launch)?;
        Ok(y)
    }

    fn gather(&self, l: &Layout, index: &Self, li: &Layout, dim: usize) -> Result<Self> {
        self.along_index(
            "take_along_dim",
            "gather",
            l,
            index,
            li,
            dim,
            li.shape()[dim],
        )
    }

    fn scatter_add(
        &self,
        l: &Layout,
        index: &Self,
        li: &Layout,
        dim: usize,
        size: usize,
    ) -> Result<Self> {
        self.along_index(
            "take_along_dim backward",
            "scatter_add",
            l,
            index,
            li,
            dim,
            size,
        )
    }

    fn searchsorted(&self, l: &Layout, values: &Self, lv: &Layout, right: bool) -> Result<Self> {
        const OP: &str = "searchsorted";
        check_operands(OP, &[self, values])?;
        let n = lv.elem_count();
        let mut y = self.output(n, self.dtype)?;
        if n == 0 {
            return Ok(y);
        }
        let k = *l.shape().last().unwrap_or(&1);
        let m = *lv.shape().last().unwrap_or(&1);
        let launch = launch_1d(
            "gather",
            "searchsorted",
            self.dtype,
            n,
            vec![
                Arg::In(self),
                Arg::Layout(FtLayout::of(OP, l)?),
                Arg::In(values),
                Arg::Layout(FtLayout::of(OP, lv)?),
                Arg::Out(&mut y),
                Arg::I64((n / m) as i64),
                Arg::I64(k as i64),
                Arg::I64(m as i64),
                Arg::I32(i32::from(right)),
            ],
        );
        self.run(launch)?;
        Ok(y)
    }

    fn to_dtype(&self, l: &Layout, dtype: DType) -> Result<Self> {
        let mut y = self.output(l.elem_count(), dtype)?;
        y.copy_into(0, self, l)?;
        Ok(y)
    }

    fn write_range(&mut self, dst: std::ops::Range<usize>, src: &Self, ls: &Layout) -> Result<()> {
        check_operands("set_data", &[self, src])?;
        if dst.len() != ls.elem_count() {
            return Err(Error::invalid(
                "set_data",
                format!("{} places for {} elements", dst.len(), ls.elem_count()),
            ));
        }
        self.copy_into(dst.start, src, ls)
    }

    fn dft(
        &self,
        l: &Layout,
        cshape: &[usize],
        dims: &[usize],
        inverse: bool,
        scale: f64,
    ) -> Result<Self> {
        let mut data = self.contiguous_view(l)?.into_owned()?;
        let total: usize = cshape.iter().product();
        if total == 0 {
            return Ok(data);
        }
        for (i, &d) in dims.iter().enumerate() {
            let len = cshape[d];
            let inner: usize = cshape[d + 1..].iter().product();
            let outer = total / (len * inner).max(1);
            let last = i + 1 == dims.len();
            let mut out = self.output(2 * total, self.dtype)?;
            let launch = launch_1d(
                "fft",
                "dft_axis",
                self.dtype,
                total,
                vec![
                    Arg::In(&data),
                    Arg::Out(&mut out),
                    Arg::I64(outer as i64),
                    Arg::I64(len as i64),
                    Arg::I64(inner as i64),
                    Arg::I32(i32::from(inverse)),
                    Arg::F64(if last { scale } else { 1.0 }),
                ],
            );
            self.run(launch)?;
            data = out;
        }
        if dims.is_empty() && scale != 1.0 {
            let flat = Layout::contiguous(&[2 * total]);
            return data.unary(
                &flat,
                UnaryOp::Affine {
                    mul: scale,
                    add: 0.0,
                },
            );
        }
        Ok(data)
    }

    fn quadrant_solve(
        &self,
        l: &Layout,
        kernel: &Self,
        lk: &Layout,
        geom: SolveGeom,
    ) -> Result<Self> {
        const OP: &str = "quadrant_solve";
        check_operands(OP, &[self, kernel])?;
        if self.dtype != DType::F64 {
            return Err(Error::invalid(OP, "solves in f64"));
        }
        let (y, k) = (self.contiguous_view(l)?, kernel.contiguous_view(lk)?);
        let n = geom.n * geom.c * geom.h * geom.w;
        let mut x = self.output(n, DType::F64)?;
        if n == 0 {
            return Ok(x);
        }
        // one block per image, enough threads for its longest anti-diagonal
        let diagonal = geom.h.min(geom.w) as u32;
        let threads = diagonal.div_ceil(32).clamp(1, 8) * 32;
        let (grid, block) = grid_per_item(geom.n, threads);
        let launch = Launch {
            module: "solve",
            name: "quadrant_solve_f64".to_string(),
            grid,
            block,
            args: vec![
                Arg::In(&y),
                Arg::In(&k),
                Arg::Out(&mut x),
                Arg::I64(geom.n as i64),
                Arg::I64(geom.c as i64),
                Arg::I64(geom.h as i64),
                Arg::I64(geom.w as i64),
            ],
        };
        self.run(launch)?;
        Ok(x)
    }
}

impl CudaStorage {
    /// Elementwise `op` of two strided operands (output contiguous).
    fn zip(
        &self,
        op: &'static str,
        base: &str,
        la: &Layout,
        rhs: &CudaStorage,
        lb: &Layout,
        code: i32,
    ) -> Result<CudaStorage> {
        let n = la.elem_count();
        let mut y = self.output(n, self.dtype)?;
        if n == 0 {
            return Ok(y);
        }
        let launch = launch_1d(
            "elementwise",
            base,
            self.dtype,
            n,
            vec![
                Arg::In(self),
                Arg::Layout(FtLayout::of(op, la)?),
                Arg::In(rhs),
                Arg::Layout(FtLayout::of(op, lb)?),
                Arg::Out(&mut y),
                Arg::I64(n as i64),
                Arg::I32(code),
            ],
        );
        self.run(launch)?;
        Ok(y)
    }

    /// This storage's elements at `l` as a contiguous buffer: the storage
    /// itself when `l` covers it from its start in order, else a copy.
    pub(crate) fn contiguous_view(&self, l: &Layout) -> Result<Contiguous<'_>> {
        let whole = l
            .contiguous_range()
            .is_some_and(|r| r.start == 0 && r.end <= self.len);
        Ok(if whole {
            Contiguous::Borrowed(self)
        } else {
            Contiguous::Owned(self.copy_strided(l)?)
        })
    }

    /// Writes the elements of `src` at `ls` to the places `dst` (a view of this storage).
    fn copy_view(&mut self, src: &CudaStorage, ls: &Layout, dst: &Layout) -> Result<()> {
        const OP: &str = "cat";
        let n = ls.elem_count();
        let (grid, block) = grid_1d(n);
        let name = format!("copy_{}", suffix(self.dtype));
        let launch = Launch {
            module: "elementwise",
            name,
            grid,
            block,
            args: vec![
                Arg::In(src),
                Arg::Layout(FtLayout::of(OP, ls)?),
                Arg::Out(self),
                Arg::Layout(FtLayout::of(OP, dst)?),
                Arg::I64(n as i64),
            ],
        };
        src.run(launch)
    }
}

/// A contiguous operand: borrowed when the data already is, else a copy.
pub(crate) enum Contiguous<'a> {
    Borrowed(&'a CudaStorage),
    Owned(CudaStorage),
}

impl std::ops::Deref for Contiguous<'_> {
    type Target = CudaStorage;
    fn deref(&self) -> &CudaStorage {
        match self {
            Contiguous::Borrowed(s) => s,
            Contiguous::Owned(s) => s,
        }
    }
}

impl Contiguous<'_> {
    /// An owned storage (a copy when borrowed).
    pub(crate) fn into_owned(self) -> Result<CudaStorage> {
        match self {
            Contiguous::Borrowed(s) => s.copy_strided(&Layout::contiguous(&[s.len])),
            Contiguous::Owned(s) => Ok(s),
        }
    }
}

/// The kernels' view of a convolution geometry.
pub(crate) fn conv_params(g: &ConvGeom) -> ConvParams {
    let i = |v: usize| v as i64;
    ConvParams {
        n: i(g.n),
        c: i(g.c),
        h: i(g.h),
        w: i(g.w),
        o: i(g.o),
        ho: i(g.ho),
        wo: i(g.wo),
        kh: i(g.kh),
        kw: i(g.kw),
        sh: i(g.stride.0),
        sw: i(g.stride.1),
        ph: i(g.padding.0),
        pw: i(g.padding.1),
        dh: i(g.dilation.0),
        dw: i(g.dilation.1),
        groups: i(g.groups),
    }
}

/// Stride 1, padding 1, dilation 1, 3x3: the shared-memory tile kernel.
fn is_3x3_same(g: &ConvGeom) -> bool {
    (g.kh, g.kw) == (3, 3)
        && g.stride == (1, 1)
        && g.padding == (1, 1)
        && g.dilation == (1, 1)
        && (g.ho, g.wo) == (g.h, g.w)
}

impl CudaStorage {
    /// `index_select` (gather rows `idx` along `dim`) and its adjoint
    /// `index_add` (sum rows into `size` slots; the kernel gathers, for each
    /// output, the inputs whose index names it, so it needs no atomics).
    /// The output's `dim` has `out_len` entries.
    fn index_kernel(
        &self,
        op: &'static str,
        l: &Layout,
        dim: usize,
        idx: &[usize],
        out_len: usize,
    ) -> Result<Self> {
        let mut shape = l.shape().to_vec();
        shape[dim] = out_len;
        let n: usize = shape.iter().product();
        let mut y = self.output(n, self.dtype)?;
        if n == 0 {
            return Ok(y);
        }
        let idx: Vec<i64> = idx.iter().map(|&i| i as i64).collect();
        let out_strides = crate::contiguous_strides(&shape);
        let input = FtLayout::unmerged(op, l.offset() as i64, l.shape(), l.strides())?;
        let output = FtLayout::unmerged(op, 0, &shape, &out_strides)?;
        let mut args = vec![Arg::In(self), Arg::Layout(input), Arg::Indices(&idx)];
        if op == "index_add" {
            args.push(Arg::I64(idx.len() as i64));
        }
        args.extend([
            Arg::I32(dim as i32),
            Arg::Out(&mut y),
            Arg::Layout(output),
            Arg::I64(n as i64),
        ]);
        self.run(launch_1d("copy", op, self.dtype, n, args))?;
        Ok(y)
    }
}

impl CudaStorage {
    /// `gather` and `scatter_add` of `kernels/gather.cu`, which share their
    /// arguments: `self` at `l`, the positions at `li`, and an output of
    /// `out_len` entries along `dim` (`l`'s other dimensions).
    #[allow(clippy::too_many_arguments)]
    fn along_index(
        &self,
        op: &'static str,
        kernel: &str,
        l: &Layout,
        index: &Self,
        li: &Layout,
        dim: usize,
        out_len: usize,
    ) -> Result<Self> {
        check_operands(op, &[self, index])?;
        let (outer, len, inner) = split_at_dim(l.shape(), dim);
        let n = outer * out_len * inner;
        let mut y = self.output(n, self.dtype)?;
        if n == 0 {
            return Ok(y);
        }
        let launch = launch_1d(
            "gather",
            kernel,
            self.dtype,
            n,
            vec![
                Arg::In(self),
                Arg::Layout(FtLayout::of(op, l)?),
                Arg::In(index),
                Arg::Layout(FtLayout::of(op, li)?),
                Arg::Out(&mut y),
                Arg::I64(outer as i64),
                Arg::I64(len as i64),
                Arg::I64(out_len as i64),
                Arg::I64(inner as i64),
            ],
        );
        self.run(launch)?;
        Ok(y)
    }
}
