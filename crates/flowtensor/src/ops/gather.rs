//! Scans and data-dependent indexing: `cumsum`, `take_along_dim` (with its
//! scatter-add backward) and `searchsorted`, the primitives of spline flows
//! (bin widths summed into knots, the bin of each value found, its
//! parameters gathered).
//!
//! Positions are an [`Indices`]: whole numbers held in a float tensor (the
//! engine's dtypes are f32 and f64) together with a bound that every value
//! is known to be below. `searchsorted` makes them on the device with their
//! bound known by construction, so gathering needs no host round trip; an
//! `Indices` built from arbitrary values is checked once, on the host.

use crate::autograd::op::Op;
use crate::layout::check_dim;
use crate::{DType, Device, Error, Result, Tensor};

/// Whole-number positions along some dimension, every one below
/// [`Indices::bound`]. Not differentiable.
#[derive(Clone, Debug)]
pub struct Indices {
    values: Tensor,
    bound: usize,
}

/// The largest whole number an f32 holds exactly.
const F32_EXACT: usize = 1 << 24;

impl Indices {
    /// Positions from host values, in `dtype` on `device`.
    pub fn new(values: &[usize], shape: &[usize], dtype: DType, device: Device) -> Result<Indices> {
        let data: Vec<f64> = values.iter().map(|&v| v as f64).collect();
        let bound = values.iter().max().map_or(0, |m| m + 1);
        Indices::with_bound(
            Tensor::from_vec(data, shape, device)?.to_dtype(dtype)?,
            bound,
        )
    }

    /// Positions from a tensor of whole numbers `>= 0` (read once on the
    /// host to check them and find the bound).
    pub fn from_tensor(values: &Tensor) -> Result<Indices> {
        let host = values.to_vec_f64()?;
        if let Some(bad) = host
            .iter()
            .find(|v| !(v.is_finite() && **v >= 0.0 && v.fract() == 0.0))
        {
            return Err(Error::shape(
                "Indices::from_tensor",
                &[values.shape()],
                format!("{bad} is not a whole number >= 0"),
            ));
        }
        let bound = host.iter().fold(0.0f64, |m, &v| m.max(v + 1.0)) as usize;
        Indices::with_bound(values.detach(), bound)
    }

    fn with_bound(values: Tensor, bound: usize) -> Result<Indices> {
        if values.dtype() == DType::F32 && bound > F32_EXACT {
            return Err(Error::shape(
                "Indices",
                &[values.shape()],
                format!("positions up to {bound} are not exact in f32 (at most 2^24)"),
            ));
        }
        Ok(Indices { values, bound })
    }

    /// The positions as a float tensor (no gradient).
    pub fn tensor(&self) -> &Tensor {
        &self.values
    }

    pub fn shape(&self) -> &[usize] {
        self.values.shape()
    }

    /// Every position is below this.
    pub fn bound(&self) -> usize {
        self.bound
    }

    /// `clamp(i + delta, lo, hi)` on the device (for example the bin of a
    /// value, `searchsorted(knots, x) - 1` kept within `0..bins`).
    pub fn offset_clamped(&self, delta: i64, lo: usize, hi: usize) -> Result<Indices> {
        if lo > hi {
            return Err(Error::invalid(
                "Indices::offset_clamped",
                format!("empty range {lo}..={hi}"),
            ));
        }
        let values = self
            .values
            .add_scalar(delta as f64)?
            .clamp(lo as f64, hi as f64)?;
        Indices::with_bound(values, hi + 1)
    }

    /// The positions on the host.
    pub fn to_vec(&self) -> Result<Vec<usize>> {
        Ok(self
            .values
            .to_vec_f64()?
            .into_iter()
            .map(|v| v as usize)
            .collect())
    }
}

impl Tensor {
    /// Running sums along `dim`: `y[.., j, ..] = sum_{i <= j} x[.., i, ..]`
    /// (in increasing `i`). Backward: the reversed running sum of the gradient.
    pub fn cumsum(&self, dim: usize) -> Result<Tensor> {
        check_dim("cumsum", dim, self.shape())?;
        let storage = self.storage().cumsum(self.layout(), dim)?;
        Ok(Tensor::from_op(
            storage,
            self.shape(),
            || Op::Cumsum(self.clone(), dim),
            &[self],
        ))
    }

    /// `y[.., j, ..] = x[.., index[.., j, ..], ..]` along `dim`: the output
    /// has the index's shape, which must equal `x`'s except along `dim`
    /// (as `torch.take_along_dim` without broadcasting). Differentiable in
    /// `x` (the backward adds each gradient into the slot it was taken from).
    pub fn take_along_dim(&self, index: &Indices, dim: usize) -> Result<Tensor> {
        const OP: &str = "take_along_dim";
        check_dim(OP, dim, self.shape())?;
        let (xs, is) = (self.shape(), index.shape());
        let agree = xs.len() == is.len()
            && xs
                .iter()
                .zip(is)
                .enumerate()
                .all(|(d, (a, b))| d == dim || a == b);
        if !agree {
            return Err(Error::shape(
                OP,
                &[xs, is],
                format!("the index must match the input except along dimension {dim}"),
            ));
        }
        if index.bound() > xs[dim] {
            return Err(Error::shape(
                OP,
                &[xs, is],
                format!(
                    "positions up to {} are out of range for dimension {dim}",
                    index.bound() - 1
                ),
            ));
        }
        let idx = index.tensor().to_dtype(self.dtype())?;
        let storage = self
            .storage()
            .gather(self.layout(), &idx.storage(), idx.layout(), dim)?;
        let index = Indices::with_bound(idx, index.bound())?;
        Ok(Tensor::from_op(
            storage,
            index.shape(),
            || Op::TakeAlongDim(self.clone(), index.clone(), dim),
            &[self],
        ))
    }

    /// For `self` sorted ascending along its last dimension `(.., k)` and
    /// `values` `(.., m)` with the same leading dimensions: the position of
    /// each value in its row, the number of entries below it (`right`: at
    /// most it), in `0..=k`; a NaN value gets `k`. Not differentiable.
    pub fn searchsorted(&self, values: &Tensor, right: bool) -> Result<Indices> {
        const OP: &str = "searchsorted";
        let (ss, vs) = (self.shape(), values.shape());
        if ss.is_empty() || vs.len() != ss.len() || ss[..ss.len() - 1] != vs[..vs.len() - 1] {
            return Err(Error::shape(
                OP,
                &[ss, vs],
                "the sorted rows and the values need the same leading dimensions",
            ));
        }
        if self.dtype() != values.dtype() {
            return Err(Error::DTypeMismatch {
                op: OP,
                lhs: self.dtype(),
                rhs: values.dtype(),
            });
        }
        let storage = self.storage().searchsorted(
            self.layout(),
            &values.storage(),
            values.layout(),
            right,
        )?;
        let k = ss[ss.len() - 1];
        Indices::with_bound(Tensor::from_storage(storage, vs), k + 1)
    }
}

/// The gradient of `cumsum`: `flip(cumsum(flip(g)))` along `dim`.
pub(crate) fn cumsum_backward(g: &Tensor, dim: usize) -> Result<Tensor> {
    g.flip(&[dim])?.cumsum(dim)?.flip(&[dim])
}

/// The gradient of `take_along_dim` for `x`.
pub(crate) fn take_along_dim_backward(
    x: &Tensor,
    g: &Tensor,
    index: &Indices,
    dim: usize,
) -> Result<Tensor> {
    let idx = index.tensor();
    let storage = g.storage().scatter_add(
        g.layout(),
        &idx.storage(),
        idx.layout(),
        dim,
        x.shape()[dim],
    )?;
    Ok(Tensor::from_op(
        storage,
        x.shape(),
        || Op::ScatterAdd(g.clone(), index.clone(), dim),
        &[g],
    ))
}
