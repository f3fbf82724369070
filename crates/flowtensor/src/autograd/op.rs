//! The recorded operations of the autodiff graph.

use crate::conv::ConvGeom;
use crate::ops::kinds::{BinaryOp, ReduceOp, UnaryOp};
use crate::{CustomOp, Indices, Tensor};
use std::sync::Arc;

/// How a tensor was computed from its inputs; each variant has one backward
/// rule, next to the forward of its op family in `ops/`.
#[derive(Clone)]
pub(crate) enum Op {
    Unary(Tensor, UnaryOp),
    Binary(Tensor, Tensor, BinaryOp),
    /// mask (no gradient), value where true, value where false.
    Where(Tensor, Tensor, Tensor),
    /// Reduction with the reduced dimensions kept as size 1.
    Reduce(Tensor, ReduceOp, Vec<usize>),
    Matmul(Tensor, Tensor),
    /// `a @ b + bias` (bias along the last dimension).
    MatmulBias(Tensor, Tensor, Tensor),
    /// `epilogue(conv(x, w))`: the output channel's bias added, then ReLU
    /// when `relu` (see [`crate::Tensor::conv2d_relu`]).
    Conv2d {
        x: Tensor,
        w: Tensor,
        bias: Option<Tensor>,
        relu: bool,
        geom: ConvGeom,
    },
    /// input (Y-space), weight.
    ConvTranspose2d(Tensor, Tensor, ConvGeom),
    /// The weight gradient of a convolution: X-space input, Y-space
    /// gradient (recorded only by backward passes that create a graph).
    ConvWeightGrad(Tensor, Tensor, ConvGeom),
    Reshape(Tensor),
    Permute(Tensor, Vec<usize>),
    /// dim, start.
    Narrow(Tensor, usize, usize),
    Broadcast(Tensor),
    Flip(Tensor, Vec<usize>),
    Contiguous(Tensor),
    Cat(Vec<Tensor>, usize),
    IndexSelect(Tensor, usize, Arc<[usize]>),
    /// The backward of `IndexSelect`, recorded by passes that create a
    /// graph: input, dim, positions (its gradient selects them again).
    IndexAdd(Tensor, usize, Arc<[usize]>),
    /// Running sums along a dim.
    Cumsum(Tensor, usize),
    /// input, positions, dim.
    TakeAlongDim(Tensor, Indices, usize),
    /// The backward of `TakeAlongDim`, recorded by passes that create a
    /// graph: input, positions, dim (its gradient takes them again).
    ScatterAdd(Tensor, Indices, usize),
    Cast(Tensor),
    /// A copy to another device (the gradient goes back to the input's).
    ToDevice(Tensor),
    Custom(Arc<dyn CustomOp>, Vec<Tensor>),
}

impl Op {
    /// The inputs gradients flow to, in the order backward returns them.
    pub fn inputs(&self) -> Vec<&Tensor> {
        match self {
            Op::Unary(x, _)
            | Op::Reduce(x, _, _)
            | Op::Reshape(x)
            | Op::Permute(x, _)
            | Op::Narrow(x, _, _)
            | Op::Broadcast(x)
            | Op::Flip(x, _)
            | Op::Contiguous(x)
            | Op::IndexSelect(x, _, _)
            | Op::IndexAdd(x, _, _)
            | Op::ScatterAdd(x, _, _)
            | Op::Cumsum(x, _)
            | Op::TakeAlongDim(x, _, _)
            | Op::Cast(x)
            | Op::ToDevice(x) => vec![x],
            Op::Binary(a, b, _)
            | Op::Matmul(a, b)
            | Op::ConvTranspose2d(a, b, _)
            | Op::ConvWeightGrad(a, b, _) => vec![a, b],
            Op::Conv2d { x, w, bias, .. } => [Some(x), Some(w), bias.as_ref()]
                .into_iter()
                .flatten()
                .collect(),
            Op::Where(_, t, f) => vec![t, f],
            Op::MatmulBias(a, b, c) => vec![a, b, c],
            Op::Cat(xs, _) | Op::Custom(_, xs) => xs.iter().collect(),
        }
    }
}
