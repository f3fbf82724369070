//! Reductions over chosen dimensions: sum, mean, max, min, logsumexp, norm.

use super::kinds::ReduceOp;
use crate::autograd::op::Op;
use crate::layout::check_dims;
use crate::{DType, Result, Tensor};

impl Tensor {
    fn reduce(
        &self,
        op: ReduceOp,
        dims: &[usize],
        keepdim: bool,
        name: &'static str,
    ) -> Result<Tensor> {
        check_dims(name, dims, self.shape())?;
        let mut dims = dims.to_vec();
        dims.sort_unstable();
        let kept_shape: Vec<usize> = (0..self.rank())
            .map(|d| {
                if dims.contains(&d) {
                    1
                } else {
                    self.shape()[d]
                }
            })
            .collect();
        let storage = self.storage().reduce(self.layout(), &dims, op)?;
        let out = Tensor::from_op(
            storage,
            &kept_shape,
            || Op::Reduce(self.clone(), op, dims.clone()),
            &[self],
        );
        if keepdim {
            Ok(out)
        } else {
            out.reshape(&squeezed(self.shape(), &dims))
        }
    }

    /// Sum over `dims`; with `keepdim` they stay as size 1.
    pub fn sum(&self, dims: &[usize], keepdim: bool) -> Result<Tensor> {
        self.reduce(ReduceOp::Sum, dims, keepdim, "sum")
    }

    /// Sum of all elements, as a rank-0 tensor.
    pub fn sum_all(&self) -> Result<Tensor> {
        self.sum(&(0..self.rank()).collect::<Vec<_>>(), false)
    }

    /// Mean over `dims`.
    pub fn mean(&self, dims: &[usize], keepdim: bool) -> Result<Tensor> {
        let count: usize = dims.iter().filter_map(|&d| self.shape().get(d)).product();
        self.sum(dims, keepdim)?.div_scalar(count as f64)
    }

    /// Mean of all elements, as a rank-0 tensor.
    pub fn mean_all(&self) -> Result<Tensor> {
        self.mean(&(0..self.rank()).collect::<Vec<_>>(), false)
    }

    /// Maximum over `dims`; the gradient is shared equally among tied maxima.
    pub fn max(&self, dims: &[usize], keepdim: bool) -> Result<Tensor> {
        self.reduce(ReduceOp::Max, dims, keepdim, "max")
    }

    /// Minimum over `dims`; the gradient is shared equally among tied minima.
    pub fn min(&self, dims: &[usize], keepdim: bool) -> Result<Tensor> {
        self.reduce(ReduceOp::Min, dims, keepdim, "min")
    }

    /// `log(sum(exp(x)))` over `dims`, computed stably by shifting by the maximum.
    pub fn logsumexp(&self, dims: &[usize], keepdim: bool) -> Result<Tensor> {
        let bound = match self.dtype() {
            DType::F32 => f32::MAX as f64,
            DType::F64 => f64::MAX,
        };
        // A finite shift (an all -inf slice gives -inf, not NaN); no gradient through it.
        let shift = self.max(dims, true)?.detach().clamp(-bound, bound)?;
        let lse = self
            .sub(&shift)?
            .exp()?
            .sum(dims, true)?
            .log()?
            .add(&shift)?;
        if keepdim {
            Ok(lse)
        } else {
            lse.reshape(&squeezed(self.shape(), dims))
        }
    }

    /// Euclidean norm `sqrt(sum(x^2))` over `dims`.
    pub fn norm(&self, dims: &[usize], keepdim: bool) -> Result<Tensor> {
        self.square()?.sum(dims, keepdim)?.sqrt()
    }
}

/// `shape` without the dimensions in `dims`.
fn squeezed(shape: &[usize], dims: &[usize]) -> Vec<usize> {
    (0..shape.len())
        .filter(|d| !dims.contains(d))
        .map(|d| shape[d])
        .collect()
}

/// The gradient of `x` for `y = reduce(x)` (kept dims) given the gradient `g` of `y`.
pub(crate) fn backward(
    x: &Tensor,
    y: &Tensor,
    g: &Tensor,
    op: ReduceOp,
    dims: &[usize],
) -> Result<Tensor> {
    match op {
        ReduceOp::Sum => g.broadcast_as(x.shape())?.contiguous(),
        ReduceOp::Max | ReduceOp::Min => {
            let hits = x.eq(y)?;
            let share = g.div(&hits.sum(dims, true)?)?;
            hits.mul(&share)
        }
    }
}
