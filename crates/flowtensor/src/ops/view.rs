//! Views: new layouts over the same storage, no copying (reshape copies only
//! when the data is not contiguous).

use crate::autograd::op::Op;
use crate::layout::check_dim;
use crate::{Error, Result, Tensor};

impl Tensor {
    /// The same elements in row-major order with another shape: a view when
    /// the strides allow it (a contiguous tensor, or a narrow, transpose or
    /// broadcast outside the dimensions merged or split), a copy otherwise.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        if shape.iter().product::<usize>() != self.elem_count() {
            return Err(Error::shape(
                "reshape",
                &[self.shape(), shape],
                "element counts differ",
            ));
        }
        // a view when the strides allow it, else a view of a contiguous copy
        let (src, layout) = match self.layout().reshaped(shape) {
            Some(layout) => (self.clone(), layout),
            None => {
                let src = self.contiguous()?;
                let layout = src.layout().reshaped(shape).ok_or_else(|| {
                    Error::invalid("reshape", "internal: contiguous copy is not contiguous")
                })?;
                (src, layout)
            }
        };
        Ok(src.view_with(layout, || Op::Reshape(src.clone())))
    }

    /// A size-1 dimension inserted at `dim` (0..=rank).
    pub fn unsqueeze(&self, dim: usize) -> Result<Tensor> {
        if dim > self.rank() {
            return Err(Error::Dim {
                op: "unsqueeze",
                dim,
                shape: self.shape().to_vec(),
            });
        }
        let mut shape = self.shape().to_vec();
        shape.insert(dim, 1);
        self.reshape(&shape)
    }

    /// The size-1 dimension `dim` removed.
    pub fn squeeze(&self, dim: usize) -> Result<Tensor> {
        check_dim("squeeze", dim, self.shape())?;
        if self.shape()[dim] != 1 {
            return Err(Error::shape(
                "squeeze",
                &[self.shape()],
                format!("dimension {dim} has size {}, not 1", self.shape()[dim]),
            ));
        }
        let mut shape = self.shape().to_vec();
        shape.remove(dim);
        self.reshape(&shape)
    }

    /// Dimensions reordered: dimension i of the result is `dims[i]` of this tensor.
    pub fn permute(&self, dims: &[usize]) -> Result<Tensor> {
        let layout = self.layout().permute(dims)?;
        Ok(self.view_with(layout, || Op::Permute(self.clone(), dims.to_vec())))
    }

    /// Dimensions `d0` and `d1` swapped.
    pub fn transpose(&self, d0: usize, d1: usize) -> Result<Tensor> {
        check_dim("transpose", d0, self.shape())?;
        check_dim("transpose", d1, self.shape())?;
        let mut dims: Vec<usize> = (0..self.rank()).collect();
        dims.swap(d0, d1);
        self.permute(&dims)
    }

    /// Elements `start..start + len` of dimension `dim`.
    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Result<Tensor> {
        let layout = self.layout().narrow(dim, start, len)?;
        Ok(self.view_with(layout, || Op::Narrow(self.clone(), dim, start)))
    }

    /// Broadcast to `shape` by numpy rules, without copying (zero strides).
    pub fn broadcast_as(&self, shape: &[usize]) -> Result<Tensor> {
        if shape == self.shape() {
            return Ok(self.clone());
        }
        let layout = self.layout().broadcast_as(shape)?;
        Ok(self.view_with(layout, || Op::Broadcast(self.clone())))
    }

    /// The order of elements reversed along each of `dims`.
    pub fn flip(&self, dims: &[usize]) -> Result<Tensor> {
        let layout = self.layout().flip(dims)?;
        Ok(self.view_with(layout, || Op::Flip(self.clone(), dims.to_vec())))
    }
}

/// The gradient of `x` for `y = x.permute(dims)`.
pub(crate) fn permute_backward(g: &Tensor, dims: &[usize]) -> Result<Tensor> {
    let mut inverse = vec![0; dims.len()];
    for (i, &d) in dims.iter().enumerate() {
        inverse[d] = i;
    }
    g.permute(&inverse)
}

/// The gradient of `x` for `y = x.narrow(dim, start, _)`: `g` placed in zeros.
pub(crate) fn narrow_backward(x: &Tensor, g: &Tensor, dim: usize, start: usize) -> Result<Tensor> {
    let after = x.shape()[dim] - start - g.shape()[dim];
    let zeros = |len: usize| {
        let mut shape = g.shape().to_vec();
        shape[dim] = len;
        Tensor::zeros_view(&shape, g.dtype(), g.device())
    };
    let mut parts = Vec::with_capacity(3);
    if start > 0 {
        parts.push(zeros(start)?);
    }
    parts.push(g.clone());
    if after > 0 {
        parts.push(zeros(after)?);
    }
    Tensor::cat(&parts.iter().collect::<Vec<_>>(), dim)
}

/// The gradient of `x` for `y = x.broadcast_as(_)`: `g` summed over the broadcast dimensions.
pub(crate) fn broadcast_backward(x: &Tensor, g: &Tensor) -> Result<Tensor> {
    let lead = g.rank() - x.rank();
    let dims: Vec<usize> = (0..g.rank())
        .filter(|&d| d < lead || (x.shape()[d - lead] == 1 && g.shape()[d] != 1))
        .collect();
    g.sum(&dims, true)?.reshape(x.shape())
}
