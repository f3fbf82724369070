//! The inverse and the determinant (plain and as sign and log-magnitude),
//! computed from LU, with their backward rules.

use super::kernels::LuFactors;
use super::{assemble, batch_map, singular, square_size, transpose_last, HostBatch};
use crate::{CustomOp, Element, Result, Tensor};
use std::sync::Arc;

impl Tensor {
    /// `A^{-1}` for each `(..., n, n)` matrix, from LU with partial pivoting
    /// (`A^{-1} = U^{-1} L^{-1} P`). An exactly singular matrix (a zero pivot)
    /// is an `Err` naming `inverse` and the shape.
    ///
    /// Differentiable: with `Y = A^{-1}` and `G = dL/dY`,
    /// `dL/dA = -A^{-T} G A^{-T} = -Y^T G Y^T`.
    pub fn inverse(&self) -> Result<Tensor> {
        square_size("inverse", self)?;
        Tensor::apply_custom(
            Arc::new(Inverse { op: "inverse" }),
            std::slice::from_ref(self),
        )
    }

    /// `det A` for each `(..., n, n)` matrix, shape `(...)`:
    /// `det A = det P * prod_i u_ii` from `P A = L U`. Singular matrices give 0.
    ///
    /// Differentiable: `dL/dA = g det(A) A^{-T}` (Jacobi's formula) for
    /// `g = dL/d det A`. The backward of an exactly singular matrix is an `Err`
    /// (the gradient there, the transposed adjugate, is not computed).
    pub fn det(&self) -> Result<Tensor> {
        square_size("det", self)?;
        Tensor::apply_custom(Arc::new(Det), std::slice::from_ref(self))
    }

    /// `(sign, log|det A|)` for each `(..., n, n)` matrix, both of shape
    /// `(...)`, with `det A = sign * exp(log|det A|)`: `log|det A| = sum_i
    /// log|u_ii|` and `sign = det P * prod_i sign(u_ii)` from `P A = L U`, so
    /// large determinants neither overflow nor underflow. A singular matrix
    /// gives sign 0 and `log|det A| = -inf` (not an error).
    ///
    /// `sign` has no gradient; `log|det A|` is differentiable with
    /// `dL/dA = g A^{-T}` for `g = dL/d log|det A|` (its backward at an exactly
    /// singular matrix, where the gradient is infinite, is an `Err`).
    pub fn slogdet(&self) -> Result<(Tensor, Tensor)> {
        square_size("slogdet", self)?;
        // One node computes both outputs from one LU, stacked as (2, ...).
        let both = Tensor::apply_custom(Arc::new(SlogDet), std::slice::from_ref(self))?;
        let batch = &self.shape()[..self.rank() - 2];
        let sign = both.narrow(0, 0, 1)?.reshape(batch)?.detach();
        let log_abs_det = both.narrow(0, 1, 1)?.reshape(batch)?;
        Ok((sign, log_abs_det))
    }
}

/// `A^{-1}`, with `op` named in the error for a singular matrix.
fn inverse_typed<T: Element>(a: &Tensor, op: &'static str) -> Result<Tensor> {
    let host = HostBatch::<T>::read(a)?;
    let n = host.rows;
    let parts = batch_map(host.count, 2 * n.pow(3), |i| {
        let lu = LuFactors::new(host.matrix(i), n);
        if let Some(col) = lu.zero_pivot() {
            return Err(singular(op, a.shape(), i, col));
        }
        let mut x = vec![T::zero(); n * n];
        for j in 0..n {
            x[j * n + j] = T::one();
        }
        lu.solve_in_place(&mut x, n);
        Ok(x)
    });
    assemble(
        parts.into_iter().collect::<Result<_>>()?,
        a.shape(),
        a.device(),
    )
}

/// `A^{-T}` (recorded, for gradients of gradients), with `op` named in the
/// error for a singular matrix.
fn inverse_transpose(a: &Tensor, op: &'static str) -> Result<Tensor> {
    let inverse = Tensor::apply_custom(Arc::new(Inverse { op }), std::slice::from_ref(a))?;
    transpose_last(&inverse)
}

/// `g` of shape `(...)` viewed as `(..., 1, 1)`, to scale a batch of matrices.
fn per_matrix(g: &Tensor) -> Result<Tensor> {
    g.reshape(&[g.shape(), &[1, 1]].concat())
}

/// [`Tensor::inverse`] as one graph node; `op` is named in the error for a
/// singular matrix.
struct Inverse {
    op: &'static str,
}

impl CustomOp for Inverse {
    fn name(&self) -> &'static str {
        "inverse"
    }

    fn forward(&self, inputs: &[Tensor]) -> Result<Tensor> {
        with_element!(inputs[0].dtype(), inverse_typed(&inputs[0], self.op))
    }

    fn backward(&self, _: &[Tensor], y: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let y_t = transpose_last(y)?;
        Ok(vec![Some(y_t.matmul(g)?.matmul(&y_t)?.neg()?)])
    }

    fn backward_is_differentiable(&self) -> bool {
        true
    }
}

/// [`Tensor::det`] as one graph node.
struct Det;

impl CustomOp for Det {
    fn name(&self) -> &'static str {
        "det"
    }

    fn forward(&self, inputs: &[Tensor]) -> Result<Tensor> {
        with_element!(inputs[0].dtype(), det_typed(&inputs[0]))
    }

    fn backward(&self, inputs: &[Tensor], det: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let inv_t = inverse_transpose(&inputs[0], "det backward")?;
        Ok(vec![Some(inv_t.mul(&per_matrix(&g.mul(det)?)?)?)])
    }

    fn backward_is_differentiable(&self) -> bool {
        true
    }
}

fn det_typed<T: Element>(a: &Tensor) -> Result<Tensor> {
    let host = HostBatch::<T>::read(a)?;
    let n = host.rows;
    let dets = batch_map(host.count, n.pow(3), |i| {
        LuFactors::new(host.matrix(i), n).det()
    });
    Tensor::from_vec(dets, &host.batch, a.device())
}

/// [`Tensor::slogdet`] as one graph node: the output `(2, ...)` holds the
/// signs in row 0 and `log|det A|` in row 1; the gradient of row 0 is ignored.
struct SlogDet;

impl CustomOp for SlogDet {
    fn name(&self) -> &'static str {
        "slogdet"
    }

    fn forward(&self, inputs: &[Tensor]) -> Result<Tensor> {
        with_element!(inputs[0].dtype(), slogdet_typed(&inputs[0]))
    }

    fn backward(&self, inputs: &[Tensor], _: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let batch = &inputs[0].shape()[..inputs[0].rank() - 2];
        let g_log = g.narrow(0, 1, 1)?.reshape(batch)?;
        let inv_t = inverse_transpose(&inputs[0], "slogdet backward")?;
        Ok(vec![Some(inv_t.mul(&per_matrix(&g_log)?)?)])
    }

    fn backward_is_differentiable(&self) -> bool {
        true
    }
}

fn slogdet_typed<T: Element>(a: &Tensor) -> Result<Tensor> {
    let host = HostBatch::<T>::read(a)?;
    let n = host.rows;
    let pairs = batch_map(host.count, n.pow(3), |i| {
        LuFactors::new(host.matrix(i), n).sign_log_abs_det()
    });
    let (signs, logs): (Vec<T>, Vec<T>) = pairs.into_iter().unzip();
    assemble(
        vec![signs, logs],
        &[&[2], host.batch.as_slice()].concat(),
        a.device(),
    )
}
