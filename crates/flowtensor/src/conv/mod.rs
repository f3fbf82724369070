//! 2-D convolutions (NCHW input, OIHW weights) and transposed convolutions,
//! differentiable in the input, the weights and the bias.
//!
//! Both are recorded as one primitive over the same [`ConvGeom`]: `conv2d`
//! maps X-space to Y-space, `conv_transpose2d` is its adjoint. Their
//! backward rules are each other: the input gradient of a convolution is
//! the transposed convolution of the output gradient, and vice versa; the
//! weight gradient is one kernel shared by both.

pub(crate) mod cpu;
mod direct3x3;
pub(crate) use direct3x3::{weight_grad_into, DirectConv, ImageConv3x3, PerThread, Threads};
mod geometry;
mod pointwise;
mod pointwise_product;
mod ragged;
pub(crate) mod simd;
pub use simd::isa_name;

use crate::autograd::op::Op;
use crate::backend::{ConvEpilogue, ConvPass};
use crate::ops::binary::check_compatible;
use crate::{Error, PadMode, Result, Tensor};
use geometry::conv_out_size;
pub(crate) use geometry::ConvGeom;

/// Options of [`Tensor::conv2d`]; `(height, width)` pairs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dParams {
    pub stride: (usize, usize),
    pub padding: (usize, usize),
    /// Zero padding, or circular (periodic) padding of the input.
    pub padding_mode: PadMode,
    pub dilation: (usize, usize),
    /// Channels split into this many independent groups.
    pub groups: usize,
}

impl Default for Conv2dParams {
    fn default() -> Self {
        Conv2dParams {
            stride: (1, 1),
            padding: (0, 0),
            padding_mode: PadMode::Zero,
            dilation: (1, 1),
            groups: 1,
        }
    }
}

impl Conv2dParams {
    /// Stride 1 with the zero padding that keeps the size of a `k x k` kernel (`k` odd).
    pub fn same(k: usize) -> Self {
        Conv2dParams {
            padding: (k / 2, k / 2),
            ..Default::default()
        }
    }
}

/// Options of [`Tensor::conv_transpose2d`], with PyTorch's meaning: the result is
/// the input gradient of a `conv2d` with these stride, padding, dilation and groups,
/// whose input size is pinned down by `output_padding` (each `< stride` or `< dilation`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvTranspose2dParams {
    pub stride: (usize, usize),
    pub padding: (usize, usize),
    pub output_padding: (usize, usize),
    pub dilation: (usize, usize),
    pub groups: usize,
}

impl Default for ConvTranspose2dParams {
    fn default() -> Self {
        ConvTranspose2dParams {
            stride: (1, 1),
            padding: (0, 0),
            output_padding: (0, 0),
            dilation: (1, 1),
            groups: 1,
        }
    }
}

/// Checks the operands shared by both convolutions; returns (x dims, w dims).
fn check_operands<'a>(
    op: &'static str,
    x: &'a Tensor,
    w: &'a Tensor,
    stride: (usize, usize),
    dilation: (usize, usize),
    groups: usize,
) -> Result<(&'a [usize], &'a [usize])> {
    check_compatible(op, x, w)?;
    let (xs, ws) = (x.shape(), w.shape());
    if xs.len() != 4 || ws.len() != 4 {
        return Err(Error::shape(
            op,
            &[xs, ws],
            "input and weight must be 4-D (NCHW, and OIHW or IOHW)",
        ));
    }
    if groups == 0 || stride.0 == 0 || stride.1 == 0 || dilation.0 == 0 || dilation.1 == 0 {
        return Err(Error::invalid(
            op,
            "groups, stride and dilation must be positive",
        ));
    }
    if ws[2] == 0 || ws[3] == 0 {
        return Err(Error::shape(op, &[xs, ws], "empty kernel"));
    }
    Ok((xs, ws))
}

/// Checks a per-channel bias: `(channels)`, on the device and of the dtype
/// of `x`; the error names `op` and the shapes in `context` with the bias's.
fn check_bias(
    op: &'static str,
    x: &Tensor,
    bias: Option<&Tensor>,
    channels: usize,
    context: &[&[usize]],
) -> Result<()> {
    let Some(b) = bias else { return Ok(()) };
    check_compatible(op, x, b)?;
    if b.shape() != [channels] {
        let shapes: Vec<&[usize]> = context.iter().copied().chain([b.shape()]).collect();
        return Err(Error::shape(
            op,
            &shapes,
            format!("bias must have shape [{channels}]"),
        ));
    }
    Ok(())
}

/// Adds a per-channel bias `(channels)` to an NCHW tensor.
fn add_bias(op: &'static str, y: Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let channels = y.shape()[1];
    check_bias(op, &y, bias, channels, &[y.shape()])?;
    let Some(b) = bias else { return Ok(y) };
    y.add(&b.reshape(&[1, channels, 1, 1])?)
}

impl Tensor {
    /// 2-D cross-correlation (PyTorch's `conv2d`): `x (n, c, h, w)`, `weight
    /// (o, c / groups, kh, kw)`, optional `bias (o)`, output `(n, o, ho, wo)` with
    /// `ho = (h + 2 ph - dh (kh - 1) - 1) / sh + 1` (likewise `wo`). The bias is
    /// added by the convolution kernel itself (no pass of its own).
    pub fn conv2d(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        p: &Conv2dParams,
    ) -> Result<Tensor> {
        self.conv2d_with("conv2d", weight, bias, p, false)
    }

    /// `relu(conv2d(x, weight, bias))` as one op: the bias and the ReLU are
    /// applied by the convolution kernel while its output is in cache, and
    /// the backward masks the gradient by the output (`y > 0`) once for the
    /// bias, input and weight gradients.
    pub fn conv2d_relu(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        p: &Conv2dParams,
    ) -> Result<Tensor> {
        self.conv2d_with("conv2d_relu", weight, bias, p, true)
    }

    fn conv2d_with(
        &self,
        op: &'static str,
        weight: &Tensor,
        bias: Option<&Tensor>,
        p: &Conv2dParams,
        relu: bool,
    ) -> Result<Tensor> {
        let (xs, ws) = check_operands(op, self, weight, p.stride, p.dilation, p.groups)?;
        if xs[1] % p.groups != 0 || ws[0] % p.groups != 0 || ws[1] * p.groups != xs[1] {
            return Err(Error::shape(
                op,
                &[xs, ws],
                format!("with {} groups the weight must be (o, c / groups, kh, kw) and o divisible by groups", p.groups),
            ));
        }
        let (x, padding) = match p.padding_mode {
            PadMode::Zero => (self.clone(), p.padding),
            PadMode::Circular => (
                self.pad(
                    &[(p.padding.0, p.padding.0), (p.padding.1, p.padding.1)],
                    PadMode::Circular,
                )?,
                (0, 0),
            ),
        };
        let (h, w) = (x.shape()[2], x.shape()[3]);
        let out = |axis: usize| {
            conv_out_size(
                x.shape()[2 + axis],
                ws[2 + axis],
                [p.stride.0, p.stride.1][axis],
                [padding.0, padding.1][axis],
                [p.dilation.0, p.dilation.1][axis],
            )
        };
        let (Some(ho), Some(wo)) = (out(0), out(1)) else {
            return Err(Error::shape(
                op,
                &[xs, ws],
                "the (padded) input is smaller than the dilated kernel",
            ));
        };
        let geom = ConvGeom {
            n: xs[0],
            c: xs[1],
            h,
            w,
            o: ws[0],
            ho,
            wo,
            kh: ws[2],
            kw: ws[3],
            stride: p.stride,
            padding,
            dilation: p.dilation,
            groups: p.groups,
        };
        check_bias(op, self, bias, geom.o, &[xs, ws])?;
        conv_forward(&x, weight, bias, relu, geom)
    }

    /// 2-D transposed convolution (PyTorch's `conv_transpose2d`): `x (n, c_in, h, w)`,
    /// `weight (c_in, c_out / groups, kh, kw)`, optional `bias (c_out)`, output
    /// `(n, c_out, (h - 1) sh - 2 ph + dh (kh - 1) + oph + 1, ...)`. It is the adjoint
    /// of `conv2d` with the same weight and parameters.
    pub fn conv_transpose2d(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        p: &ConvTranspose2dParams,
    ) -> Result<Tensor> {
        const OP: &str = "conv_transpose2d";
        let (xs, ws) = check_operands(OP, self, weight, p.stride, p.dilation, p.groups)?;
        if ws[0] != xs[1] || ws[0] % p.groups != 0 {
            return Err(Error::shape(
                OP,
                &[xs, ws],
                format!("the weight must be (c_in, c_out / groups, kh, kw) with c_in divisible by {} groups", p.groups),
            ));
        }
        let size = |axis: usize| -> Option<usize> {
            let (n, k, s, pad, d, op) = (
                xs[2 + axis],
                ws[2 + axis],
                [p.stride.0, p.stride.1][axis],
                [p.padding.0, p.padding.1][axis],
                [p.dilation.0, p.dilation.1][axis],
                [p.output_padding.0, p.output_padding.1][axis],
            );
            if op >= s && op >= d {
                return None;
            }
            let full = (n.checked_sub(1)?) * s + d * (k - 1) + op + 1;
            let out = full.checked_sub(2 * pad).filter(|&o| o > 0)?;
            // the forward convolution of that size must come back to n
            (conv_out_size(out, k, s, pad, d) == Some(n)).then_some(out)
        };
        let (Some(h), Some(w)) = (size(0), size(1)) else {
            return Err(Error::shape(
                OP,
                &[xs, ws],
                format!(
                    "no output size fits padding {:?} and output_padding {:?}",
                    p.padding, p.output_padding
                ),
            ));
        };
        let geom = ConvGeom {
            n: xs[0],
            c: ws[1] * p.groups,
            h,
            w,
            o: xs[1],
            ho: xs[2],
            wo: xs[3],
            kh: ws[2],
            kw: ws[3],
            stride: p.stride,
            padding: p.padding,
            dilation: p.dilation,
            groups: p.groups,
        };
        add_bias(OP, conv_transpose(self, weight, geom)?, bias)
    }
}

/// The recorded convolution X-space -> Y-space (zero padding in `geom`),
/// with the bias and ReLU of its epilogue.
fn conv_forward(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    relu: bool,
    geom: ConvGeom,
) -> Result<Tensor> {
    let (x, w) = (x.contiguous()?, w.contiguous()?);
    let bias_storage = bias.map(|b| b.storage());
    let epilogue = ConvEpilogue {
        bias: bias_storage.as_deref().zip(bias.map(|b| b.layout())),
        relu,
    };
    let storage = x.storage().conv(
        x.layout(),
        &w.storage(),
        w.layout(),
        &geom,
        ConvPass::Forward,
        epilogue,
    )?;
    let inputs: Vec<&Tensor> = [Some(&x), Some(&w), bias].into_iter().flatten().collect();
    Ok(Tensor::from_op(
        storage,
        &[geom.n, geom.o, geom.ho, geom.wo],
        || Op::Conv2d {
            x: x.clone(),
            w: w.clone(),
            bias: bias.cloned(),
            relu,
            geom,
        },
        &inputs,
    ))
}

/// The recorded transposed convolution Y-space -> X-space.
fn conv_transpose(y: &Tensor, w: &Tensor, geom: ConvGeom) -> Result<Tensor> {
    let (y, w) = (y.contiguous()?, w.contiguous()?);
    let storage = y.storage().conv(
        y.layout(),
        &w.storage(),
        w.layout(),
        &geom,
        ConvPass::BackwardData,
        ConvEpilogue::NONE,
    )?;
    Ok(Tensor::from_op(
        storage,
        &[geom.n, geom.c, geom.h, geom.w],
        || Op::ConvTranspose2d(y.clone(), w.clone(), geom),
        &[&y, &w],
    ))
}

/// The weight gradient for X-space `x` and Y-space `dy`, recorded (as
/// bilinear in both) when a backward pass creates a graph.
pub(crate) fn conv_weight_grad(x: &Tensor, dy: &Tensor, geom: &ConvGeom) -> Result<Tensor> {
    let (x, dy) = (x.contiguous()?, dy.contiguous()?);
    let storage = x.storage().conv(
        x.layout(),
        &dy.storage(),
        dy.layout(),
        geom,
        ConvPass::BackwardWeight,
        ConvEpilogue::NONE,
    )?;
    Ok(Tensor::from_op(
        storage,
        &[geom.o, geom.cg(), geom.kh, geom.kw],
        || Op::ConvWeightGrad(x.clone(), dy.clone(), *geom),
        &[&x, &dy],
    ))
}

/// Gradients of `x`, `w` and the bias (those asked for by `need`; `None`
/// in the place of the others, no entry for an absent bias) for `out =
/// epilogue(conv(x, w))` given the gradient `g` of the convolution's
/// output, after the epilogue (ReLU's mask, applied by the caller): the
/// bias gradient sums it over images and positions.
pub(crate) fn conv_backward(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    g: &Tensor,
    geom: &ConvGeom,
    [need_x, need_w, need_bias]: [bool; 3],
) -> Result<Vec<Option<Tensor>>> {
    let gx = need_x.then(|| conv_transpose(g, w, *geom)).transpose()?;
    let gw = need_w.then(|| conv_weight_grad(x, g, geom)).transpose()?;
    let mut grads = vec![gx, gw];
    if bias.is_some() {
        grads.push(need_bias.then(|| g.sum(&[0, 2, 3], false)).transpose()?);
    }
    Ok(grads)
}

/// Gradients of `x` and `dy` (those asked for by `need`) for `gw =
/// conv_weight_grad(x, dy)` given the gradient `g` of `gw`: `gw` is
/// bilinear, `<g, gw> = <conv(x, g), dy> = <x, conv_transpose(dy, g)>`.
pub(crate) fn conv_weight_grad_backward(
    x: &Tensor,
    dy: &Tensor,
    g: &Tensor,
    geom: &ConvGeom,
    [need_x, need_dy]: [bool; 2],
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    let gx = need_x.then(|| conv_transpose(dy, g, *geom)).transpose()?;
    let gdy = need_dy
        .then(|| conv_forward(x, g, None, false, *geom))
        .transpose()?;
    Ok((gx, gdy))
}

/// Gradients of `y` and `w` (those asked for by `need`) for `x =
/// conv_transpose(y, w)` given the gradient `g` of `x`.
pub(crate) fn conv_transpose_backward(
    y: &Tensor,
    w: &Tensor,
    g: &Tensor,
    geom: &ConvGeom,
    [need_y, need_w]: [bool; 2],
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    let gy = need_y
        .then(|| conv_forward(g, w, None, false, *geom))
        .transpose()?;
    let gw = need_w.then(|| conv_weight_grad(g, y, geom)).transpose()?;
    Ok((gy, gw))
}
