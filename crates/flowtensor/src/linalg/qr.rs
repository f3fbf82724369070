//! The reduced QR decomposition and its backward rule.
//!
//! Both outputs come from one graph node: it returns `Q` stacked over `R`
//! along the row dimension, `(..., m + n, n)`, and [`Tensor::qr`] hands out
//! the two row ranges as narrow views. A loss using either or both sends one
//! gradient of that stacked shape back (zeros in the rows of an unused
//! output), which the backward splits into `G_Q` and `G_R`.

use super::kernels::householder_qr;
use super::{assemble, batch_map, matrix_dims, transpose_last, triangle_mask, HostBatch};
use crate::{CustomOp, Element, Error, Result, Tensor};
use std::sync::Arc;

impl Tensor {
    /// The reduced QR decomposition of each `(..., m, n)` matrix with
    /// `m >= n` (`Err` otherwise): `A = Q R` with `Q` `(..., m, n)` having
    /// orthonormal columns (`Q^T Q = I`) and `R` `(..., n, n)` upper
    /// triangular, by Householder reflections.
    ///
    /// Convention: `R`'s diagonal is made non-negative (by flipping the signs
    /// of matching columns of `Q` and rows of `R`), which makes the
    /// decomposition unique and smooth for matrices of full column rank. `Q`
    /// and `R` are views into one buffer (call [`Tensor::contiguous`] for
    /// packed copies).
    ///
    /// Differentiable through both outputs for full column rank: with
    /// `G_Q = dL/dQ`, `G_R = dL/dR`, `M = R G_R^T - G_Q^T Q` and
    /// `copyltu(M) = tril(M, -1) + tril(M, -1)^T + diag(M)`,
    /// `dL/dA = (G_Q + Q copyltu(M)) R^{-T}`.
    pub fn qr(&self) -> Result<(Tensor, Tensor)> {
        let (_, m, n) = matrix_dims("qr", self)?;
        if m < n {
            return Err(Error::shape(
                "qr",
                &[self.shape()],
                format!("needs at least as many rows as columns, got {m} x {n}"),
            ));
        }
        let stacked = Tensor::apply_custom(Arc::new(Qr), std::slice::from_ref(self))?;
        let rows = self.rank() - 2;
        Ok((stacked.narrow(rows, 0, m)?, stacked.narrow(rows, m, n)?))
    }
}

/// [`Tensor::qr`] as one graph node with output `[Q; R]`, `(..., m + n, n)`.
struct Qr;

impl CustomOp for Qr {
    fn name(&self) -> &'static str {
        "qr"
    }

    fn forward(&self, inputs: &[Tensor]) -> Result<Tensor> {
        with_element!(inputs[0].dtype(), qr_typed(&inputs[0]))
    }

    fn backward(
        &self,
        inputs: &[Tensor],
        stacked: &Tensor,
        g: &Tensor,
    ) -> Result<Vec<Option<Tensor>>> {
        let a = &inputs[0];
        let rows = a.rank() - 2;
        let (m, n) = (a.shape()[rows], a.shape()[rows + 1]);
        let (q, r) = (stacked.narrow(rows, 0, m)?, stacked.narrow(rows, m, n)?);
        let (g_q, g_r) = (g.narrow(rows, 0, m)?, g.narrow(rows, m, n)?);
        // M = R G_R^T - G_Q^T Q
        let m_mat = r
            .matmul(&transpose_last(&g_r)?)?
            .sub(&transpose_last(&g_q)?.matmul(&q)?)?;
        // copyltu(M): the symmetric matrix with M's lower triangle and diagonal
        let lower = m_mat.mul(&triangle_mask(n, false, false, &m_mat)?)?;
        let diagonal = m_mat.mul(&Tensor::eye(n, m_mat.dtype(), m_mat.device())?)?;
        let copyltu = lower.add(&transpose_last(&lower)?)?.add(&diagonal)?;
        let y = g_q.add(&q.matmul(&copyltu)?)?;
        // Y R^{-T} = (R^{-1} Y^T)^T
        let grad = transpose_last(&r.triangular_solve(&transpose_last(&y)?, true, false)?)?;
        Ok(vec![Some(grad)])
    }
}

fn qr_typed<T: Element>(a: &Tensor) -> Result<Tensor> {
    let host = HostBatch::<T>::read(a)?;
    let (m, n) = (host.rows, host.cols);
    let parts = batch_map(host.count, 2 * m * n * n, |i| {
        let (q, r) = householder_qr(host.matrix(i), m, n);
        [q, r].concat()
    });
    assemble(
        parts,
        &[host.batch.as_slice(), &[m + n, n]].concat(),
        a.device(),
    )
}
