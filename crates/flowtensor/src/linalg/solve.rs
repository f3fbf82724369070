//! Linear solves `A X = B`, general (through LU) and triangular, with their
//! backward rules.

use super::kernels::{triangular_solve_in_place, LuFactors};
use super::{
    assemble, batch_map, broadcast_system, singular, transpose_last, triangle_mask, HostBatch,
};
use crate::{CustomOp, Element, Error, Result, Tensor};
use std::sync::Arc;

impl Tensor {
    /// `X = A^{-1} B` for `A` `(..., n, n)` (this tensor) and `B` `(..., n, k)`,
    /// batch dimensions broadcast as in [`Tensor::matmul`] (a vector right-hand
    /// side is a `(..., n, 1)` matrix). Computed by LU with partial pivoting;
    /// an exactly singular `A` (a zero pivot) is an `Err` naming `solve` and
    /// the shape.
    ///
    /// Differentiable in `A` and `B`: with `G = dL/dX`,
    /// `dL/dB = A^{-T} G` and `dL/dA = -(dL/dB) X^T`, summed over the batch
    /// dimensions that were broadcast.
    pub fn solve(&self, b: &Tensor) -> Result<Tensor> {
        let (a, b) = broadcast_system("solve", self, b)?;
        Tensor::apply_custom(Arc::new(Solve), &[a, b])
    }

    /// `X = T^{-1} B` where `T` is the upper (`upper`) or lower triangle of
    /// `A` `(..., n, n)` (this tensor), with ones in place of `A`'s diagonal
    /// when `unit_diagonal`; `B` is `(..., n, k)` with batch broadcasting.
    /// Entries of `A` outside the triangle are ignored. A zero on a used
    /// diagonal is an `Err` naming `triangular_solve` and the shape.
    ///
    /// Differentiable in `A` and `B`: `dL/dB = T^{-T} G` and
    /// `dL/dA = -(dL/dB) X^T` restricted to the triangle used (zero off it,
    /// and on the diagonal when `unit_diagonal`).
    pub fn triangular_solve(&self, b: &Tensor, upper: bool, unit_diagonal: bool) -> Result<Tensor> {
        let (a, b) = broadcast_system("triangular_solve", self, b)?;
        let op = TriangularSolve {
            upper,
            unit_diagonal,
        };
        Tensor::apply_custom(Arc::new(op), &[a, b])
    }
}

/// [`Tensor::solve`] as one graph node: inputs `[A, B]` with equal batch shapes.
struct Solve;

impl CustomOp for Solve {
    fn name(&self) -> &'static str {
        "solve"
    }

    fn forward(&self, inputs: &[Tensor]) -> Result<Tensor> {
        let (a, b) = (&inputs[0], &inputs[1]);
        with_element!(a.dtype(), solve_typed(a, b))
    }

    fn backward(&self, inputs: &[Tensor], x: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let grad_b = transpose_last(&inputs[0])?.solve(g)?;
        let grad_a = grad_b.matmul(&transpose_last(x)?)?.neg()?;
        Ok(vec![Some(grad_a), Some(grad_b)])
    }

    fn backward_is_differentiable(&self) -> bool {
        true
    }
}

fn solve_typed<T: Element>(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (ha, hb) = (HostBatch::<T>::read(a)?, HostBatch::<T>::read(b)?);
    let (n, k) = (ha.rows, hb.cols);
    let parts = batch_map(ha.count, n * n * (n + k), |i| {
        let lu = LuFactors::new(ha.matrix(i), n);
        if let Some(col) = lu.zero_pivot() {
            return Err(singular("solve", a.shape(), i, col));
        }
        let mut x = hb.matrix(i).to_vec();
        lu.solve_in_place(&mut x, k);
        Ok(x)
    });
    assemble(
        parts.into_iter().collect::<Result<_>>()?,
        b.shape(),
        b.device(),
    )
}

/// [`Tensor::triangular_solve`] as one graph node: inputs `[A, B]` with
/// equal batch shapes.
struct TriangularSolve {
    upper: bool,
    unit_diagonal: bool,
}

impl CustomOp for TriangularSolve {
    fn name(&self) -> &'static str {
        "triangular_solve"
    }

    fn forward(&self, inputs: &[Tensor]) -> Result<Tensor> {
        let (a, b) = (&inputs[0], &inputs[1]);
        with_element!(
            a.dtype(),
            triangular_solve_typed(a, b, self.upper, self.unit_diagonal)
        )
    }

    fn backward(&self, inputs: &[Tensor], x: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let a = &inputs[0];
        // T^T is triangular on the other side, with the same diagonal.
        let grad_b = transpose_last(a)?.triangular_solve(g, !self.upper, self.unit_diagonal)?;
        let n = a.shape()[a.rank() - 1];
        let used = triangle_mask(n, self.upper, !self.unit_diagonal, a)?;
        let grad_a = grad_b.matmul(&transpose_last(x)?)?.neg()?.mul(&used)?;
        Ok(vec![Some(grad_a), Some(grad_b)])
    }

    fn backward_is_differentiable(&self) -> bool {
        true
    }
}

fn triangular_solve_typed<T: Element>(
    a: &Tensor,
    b: &Tensor,
    upper: bool,
    unit_diagonal: bool,
) -> Result<Tensor> {
    let (ha, hb) = (HostBatch::<T>::read(a)?, HostBatch::<T>::read(b)?);
    let (n, k) = (ha.rows, hb.cols);
    let parts = batch_map(ha.count, n * n * k, |i| {
        let t = ha.matrix(i);
        if !unit_diagonal {
            if let Some(j) = (0..n).find(|&j| t[j * n + j] == T::zero()) {
                return Err(Error::invalid(
                    "triangular_solve",
                    format!(
                        "matrix {i} of the batch of shape {:?} is singular (zero at diagonal position {j})",
                        a.shape()
                    ),
                ));
            }
        }
        let mut x = hb.matrix(i).to_vec();
        triangular_solve_in_place(t, n, &mut x, k, upper, unit_diagonal);
        Ok(x)
    });
    assemble(
        parts.into_iter().collect::<Result<_>>()?,
        b.shape(),
        b.device(),
    )
}
