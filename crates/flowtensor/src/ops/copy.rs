//! Ops that copy: contiguous, cat, stack, split/chunk (views), pad,
//! index_select and dtype casts.

use crate::autograd::op::Op;
use crate::layout::check_dim;
use crate::ops::binary::check_compatible;
use crate::storage::Storage;
use crate::{DType, Error, Result, Tensor};
use std::sync::Arc;

/// How [`Tensor::pad`] fills the border.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PadMode {
    /// Zeros.
    Zero,
    /// Wrap around: the border repeats the opposite edge (periodic boundary).
    Circular,
}

impl Tensor {
    /// The same elements in a fresh row-major buffer (this tensor itself if already contiguous).
    pub fn contiguous(&self) -> Result<Tensor> {
        if self.is_contiguous() {
            return Ok(self.clone());
        }
        let storage = self.storage().copy_strided(self.layout())?;
        Ok(Tensor::from_op(
            storage,
            self.shape(),
            || Op::Contiguous(self.clone()),
            &[self],
        ))
    }

    /// Concatenation along `dim`; all other dimensions must agree.
    pub fn cat(tensors: &[&Tensor], dim: usize) -> Result<Tensor> {
        let Some(first) = tensors.first() else {
            return Err(Error::invalid("cat", "no tensors given"));
        };
        check_dim("cat", dim, first.shape())?;
        let shapes: Vec<&[usize]> = tensors.iter().map(|t| t.shape()).collect();
        for t in tensors {
            check_compatible("cat", first, t)?;
            let agree = t.rank() == first.rank()
                && (0..t.rank()).all(|d| d == dim || t.shape()[d] == first.shape()[d]);
            if !agree {
                return Err(Error::shape(
                    "cat",
                    &shapes,
                    format!("all dimensions but {dim} must agree"),
                ));
            }
        }
        let mut shape = first.shape().to_vec();
        shape[dim] = tensors.iter().map(|t| t.shape()[dim]).sum();
        let guards: Vec<_> = tensors.iter().map(|t| t.storage()).collect();
        let parts: Vec<(&Storage, &crate::Layout)> = guards
            .iter()
            .zip(tensors)
            .map(|(g, t)| (&**g, t.layout()))
            .collect();
        let storage = Storage::cat(&parts, dim)?;
        drop(guards);
        Ok(Tensor::from_op(
            storage,
            &shape,
            || Op::Cat(tensors.iter().map(|&t| t.clone()).collect(), dim),
            tensors,
        ))
    }

    /// The tensors (of one shape) stacked along a new dimension `dim`.
    pub fn stack(tensors: &[&Tensor], dim: usize) -> Result<Tensor> {
        let expanded = tensors
            .iter()
            .map(|t| t.unsqueeze(dim))
            .collect::<Result<Vec<_>>>()?;
        Tensor::cat(&expanded.iter().collect::<Vec<_>>(), dim)
    }

    /// Consecutive pieces of `sizes` along `dim` (views); the sizes must add up to the dimension.
    pub fn split(&self, sizes: &[usize], dim: usize) -> Result<Vec<Tensor>> {
        check_dim("split", dim, self.shape())?;
        if sizes.iter().sum::<usize>() != self.shape()[dim] {
            return Err(Error::shape(
                "split",
                &[self.shape()],
                format!("sizes {sizes:?} do not add up to dimension {dim}"),
            ));
        }
        let mut start = 0;
        sizes
            .iter()
            .map(|&len| {
                let piece = self.narrow(dim, start, len);
                start += len;
                piece
            })
            .collect()
    }

    /// `n` pieces along `dim` of size ceil(size / n), the last one smaller (views).
    pub fn chunk(&self, n: usize, dim: usize) -> Result<Vec<Tensor>> {
        check_dim("chunk", dim, self.shape())?;
        if n == 0 {
            return Err(Error::invalid(
                "chunk",
                "the number of chunks must be positive",
            ));
        }
        let size = self.shape()[dim];
        let step = size.div_ceil(n).max(1);
        let sizes: Vec<usize> = (0..size)
            .step_by(step)
            .map(|s| step.min(size - s))
            .collect();
        self.split(&sizes, dim)
    }

    /// Padded on the last `pads.len()` dimensions: `pads[i] = (before, after)`
    /// applies to dimension `rank - pads.len() + i`. Circular padding needs
    /// `before, after <= size` of that dimension.
    pub fn pad(&self, pads: &[(usize, usize)], mode: PadMode) -> Result<Tensor> {
        if pads.len() > self.rank() {
            return Err(Error::shape(
                "pad",
                &[self.shape()],
                format!("{} padded dimensions requested", pads.len()),
            ));
        }
        let first = self.rank() - pads.len();
        let mut out = self.clone();
        for (i, &(before, after)) in pads.iter().enumerate() {
            let dim = first + i;
            let size = out.shape()[dim];
            let mut parts = Vec::with_capacity(3);
            match mode {
                PadMode::Zero => {
                    let zeros = |len: usize| {
                        let mut shape = out.shape().to_vec();
                        shape[dim] = len;
                        Tensor::zeros_view(&shape, out.dtype(), out.device())
                    };
                    parts.push(zeros(before)?);
                    parts.push(out.clone());
                    parts.push(zeros(after)?);
                }
                PadMode::Circular => {
                    if before > size || after > size {
                        return Err(Error::shape(
                            "pad",
                            &[self.shape()],
                            format!("circular padding ({before}, {after}) exceeds dimension {dim} of size {size}"),
                        ));
                    }
                    parts.push(out.narrow(dim, size - before, before)?);
                    parts.push(out.clone());
                    parts.push(out.narrow(dim, 0, after)?);
                }
            }
            let parts: Vec<&Tensor> = parts.iter().filter(|p| p.shape()[dim] > 0).collect();
            out = Tensor::cat(&parts, dim)?;
        }
        Ok(out)
    }

    /// Entries `idx[j]` of dimension `dim`, in that order (a channel permutation
    /// when `idx` is one).
    pub fn index_select(&self, dim: usize, idx: &[usize]) -> Result<Tensor> {
        check_dim("index_select", dim, self.shape())?;
        if let Some(&bad) = idx.iter().find(|&&i| i >= self.shape()[dim]) {
            return Err(Error::shape(
                "index_select",
                &[self.shape()],
                format!("index {bad} is out of range for dimension {dim}"),
            ));
        }
        let storage = self.storage().index_select(self.layout(), dim, idx)?;
        let mut shape = self.shape().to_vec();
        shape[dim] = idx.len();
        let idx: Arc<[usize]> = idx.into();
        Ok(Tensor::from_op(
            storage,
            &shape,
            || Op::IndexSelect(self.clone(), dim, idx.clone()),
            &[self],
        ))
    }

    /// Converted to `dtype` (differentiable; the gradient is cast back).
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        if dtype == self.dtype() {
            return Ok(self.clone());
        }
        let storage = self.storage().to_dtype(self.layout(), dtype)?;
        Ok(Tensor::from_op(
            storage,
            self.shape(),
            || Op::Cast(self.clone()),
            &[self],
        ))
    }
}

/// The gradient of each input of `cat(xs, dim)` given the gradient `g` of its output.
pub(crate) fn cat_backward(xs: &[Tensor], g: &Tensor, dim: usize) -> Result<Vec<Tensor>> {
    let sizes: Vec<usize> = xs.iter().map(|x| x.shape()[dim]).collect();
    g.split(&sizes, dim)
}

/// The gradient of `x` for `y = x.index_select(dim, idx)`: `g` added back at the selected places.
pub(crate) fn index_select_backward(
    x: &Tensor,
    g: &Tensor,
    dim: usize,
    idx: &[usize],
) -> Result<Tensor> {
    let storage = g
        .storage()
        .index_add(g.layout(), dim, idx, x.shape()[dim])?;
    Ok(Tensor::from_op(
        storage,
        x.shape(),
        || Op::IndexAdd(g.clone(), dim, idx.into()),
        &[g],
    ))
}
