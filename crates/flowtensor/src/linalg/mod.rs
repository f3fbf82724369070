//! Dense linear algebra on batches of square matrices, f32 and f64.
//!
//! Every op reads matrices from the last two dimensions, `(..., n, n)`, and
//! maps over the leading (batch) dimensions; right-hand sides `(..., n, k)`
//! broadcast their batch dimensions against the matrix's as in
//! [`Tensor::matmul`]. The data is copied to contiguous host memory and each
//! matrix goes through the kernels of `kernels.rs` (spread over rayon when
//! the batch holds enough work).
//!
//! | op | result | differentiable in |
//! | --- | --- | --- |
//! | [`Tensor::lu`] | [`Lu`]: `P A = L U` | nothing |
//! | [`Tensor::solve`] | `A^{-1} B` | `A`, `B` |
//! | [`Tensor::triangular_solve`] | `tri(A)^{-1} B` | `A` (its triangle), `B` |
//! | [`Tensor::inverse`] | `A^{-1}` | `A` |
//! | [`Tensor::det`] | `det A` | `A` |
//! | [`Tensor::slogdet`] | `(sign(det A), log(abs(det A)))` | `A` (through the log) |
//! | [`Tensor::qr`] | `(Q, R)`, `A = Q R` | `A` (through `Q` and `R`) |
//! | [`Tensor::matrix_exp`] | `e^A` | `A` |
//!
//! The differentiable ops are [`crate::CustomOp`]s whose backward calls the
//! ops of this module again (with recording off), so they have first but not
//! second derivatives.

/// Calls the generic function `f::<T>(args)` with `T` the element type of `dtype`.
macro_rules! with_element {
    ($dtype:expr, $f:ident($($arg:expr),* $(,)?)) => {
        match $dtype {
            $crate::DType::F32 => $f::<f32>($($arg),*),
            $crate::DType::F64 => $f::<f64>($($arg),*),
        }
    };
}

mod expm;
mod inverse;
mod kernels;
mod lu;
mod qr;
mod solve;

pub use lu::Lu;

use crate::layout::broadcast_shape;
use crate::ops::binary::check_compatible;
use crate::{Device, Element, Error, Result, Tensor, PAR_THRESHOLD};
use rayon::prelude::*;

/// The batch shape and the matrix size `(rows, cols)` of a `(..., rows, cols)` tensor.
fn matrix_dims(op: &'static str, t: &Tensor) -> Result<(Vec<usize>, usize, usize)> {
    let s = t.shape();
    match s.len() {
        0 | 1 => Err(Error::shape(
            op,
            &[s],
            "expected a matrix or a batch of matrices (..., rows, cols)",
        )),
        r => Ok((s[..r - 2].to_vec(), s[r - 2], s[r - 1])),
    }
}

/// The size `n` of a batch of square matrices `(..., n, n)`.
fn square_size(op: &'static str, t: &Tensor) -> Result<usize> {
    let (_, rows, cols) = matrix_dims(op, t)?;
    if rows != cols {
        return Err(Error::shape(
            op,
            &[t.shape()],
            format!("expected square matrices, got {rows} x {cols}"),
        ));
    }
    Ok(rows)
}

/// The matrix `a` `(..., n, n)` and the right-hand side `b` `(..., n, k)` of a
/// solve, broadcast to one batch shape (differentiable views: the gradients
/// are summed back over broadcast dimensions).
fn broadcast_system(op: &'static str, a: &Tensor, b: &Tensor) -> Result<(Tensor, Tensor)> {
    let shapes = [a.shape(), b.shape()];
    let err = |detail: String| Error::shape(op, &shapes, detail);
    let (a_batch, n, cols) =
        matrix_dims(op, a).map_err(|_| err("the matrix must be (..., n, n)".into()))?;
    if n != cols {
        return Err(err(format!("expected square matrices, got {n} x {cols}")));
    }
    let (b_batch, rows, k) =
        matrix_dims(op, b).map_err(|_| err("the right-hand side must be (..., n, k)".into()))?;
    if rows != n {
        return Err(err(format!(
            "the matrix has {n} rows but the right-hand side has {rows}"
        )));
    }
    check_compatible(op, a, b)?;
    let batch = broadcast_shape(op, &a_batch, &b_batch)
        .map_err(|_| err("batch dimensions do not broadcast".into()))?;
    Ok((
        a.broadcast_as(&[batch.as_slice(), &[n, n]].concat())?,
        b.broadcast_as(&[batch.as_slice(), &[n, k]].concat())?,
    ))
}

/// The error for matrix `index` (row-major over the batch) of the tensor of
/// `shape` having a zero pivot in column `col`.
fn singular(op: &'static str, shape: &[usize], index: usize, col: usize) -> Error {
    Error::invalid(
        op,
        format!(
            "matrix {index} of the batch of shape {shape:?} is singular (zero pivot in column {col})"
        ),
    )
}

/// The last two dimensions swapped (a view): `A^T` per matrix.
fn transpose_last(t: &Tensor) -> Result<Tensor> {
    let r = t.rank();
    t.transpose(r - 2, r - 1)
}

/// The n x n mask (in `like`'s dtype and device) that is 1 on the strict
/// upper (`j > i`) or strict lower (`j < i`) triangle, and on the diagonal too
/// when `diagonal`; 0 elsewhere.
fn triangle_mask(n: usize, upper: bool, diagonal: bool, like: &Tensor) -> Result<Tensor> {
    let v: Vec<f64> = (0..n * n)
        .map(|idx| {
            let (i, j) = (idx / n, idx % n);
            let keep = if upper { j > i } else { j < i } || (diagonal && i == j);
            if keep {
                1.0
            } else {
                0.0
            }
        })
        .collect();
    Tensor::from_vec(v, &[n, n], like.device())?.to_dtype(like.dtype())
}

/// The matrices of a `(..., rows, cols)` tensor copied to contiguous host memory.
struct HostBatch<T> {
    data: Vec<T>,
    /// The batch shape `(...)`.
    batch: Vec<usize>,
    /// The number of matrices: the product of the batch dimensions.
    count: usize,
    rows: usize,
    cols: usize,
}

impl<T: Element> HostBatch<T> {
    /// Reads `t`, of rank at least 2 and element type `T`.
    fn read(t: &Tensor) -> Result<Self> {
        let (batch, rows, cols) = matrix_dims("linalg", t)?;
        Ok(HostBatch {
            data: t.to_vec()?,
            count: batch.iter().product(),
            batch,
            rows,
            cols,
        })
    }

    /// Matrix `i` of the batch, row-major.
    fn matrix(&self, i: usize) -> &[T] {
        let size = self.rows * self.cols;
        &self.data[i * size..(i + 1) * size]
    }
}

/// `f(i)` for every matrix `i` of a batch of `count`; spread over rayon when
/// `count * cost` reaches [`PAR_THRESHOLD`], with `cost` about the flops of
/// one call (a cost of 0 keeps the batch sequential).
fn batch_map<R: Send>(count: usize, cost: usize, f: impl Fn(usize) -> R + Sync + Send) -> Vec<R> {
    if count > 1 && cost > 0 && count.saturating_mul(cost) >= PAR_THRESHOLD {
        (0..count).into_par_iter().map(f).collect()
    } else {
        (0..count).map(f).collect()
    }
}

/// The tensor of `shape` whose row-major data is `parts` in order (one part per matrix).
fn assemble<T: Element>(parts: Vec<Vec<T>>, shape: &[usize], device: Device) -> Result<Tensor> {
    Tensor::from_vec(parts.concat(), shape, device)
}
