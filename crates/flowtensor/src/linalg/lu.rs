//! The LU factorization with partial pivoting as a tensor-level result.

use super::kernels::LuFactors;
use super::{batch_map, square_size, triangle_mask, HostBatch};
use crate::{Element, Result, Tensor};

/// The LU factorizations with partial pivoting of a batch of square
/// matrices: `P A = L U` per matrix, with `P` a permutation matrix, `L` unit
/// lower triangular with `|l_ij| <= 1` and `U` upper triangular.
///
/// Not differentiable: its tensors carry no history even when `A` requires
/// grad. Differentiate through [`Tensor::solve`], [`Tensor::inverse`],
/// [`Tensor::det`] or [`Tensor::slogdet`], which factor internally.
#[derive(Clone, Debug)]
pub struct Lu {
    factors: Tensor,
    permutations: Vec<usize>,
    sign: Tensor,
}

impl Tensor {
    /// The LU factorization with partial pivoting (LAPACK getrf's algorithm)
    /// of each `(..., n, n)` matrix: `P A = L U`. Singular matrices factor too
    /// (a column with no non-zero pivot candidate leaves `u_kk = 0`). Not
    /// differentiable (see [`Lu`]).
    pub fn lu(&self) -> Result<Lu> {
        let n = square_size("lu", self)?;
        with_element!(self.dtype(), lu_typed(self, n))
    }
}

fn lu_typed<T: Element>(a: &Tensor, n: usize) -> Result<Lu> {
    let host = HostBatch::<T>::read(a)?;
    let parts = batch_map(host.count, n.pow(3), |i| LuFactors::new(host.matrix(i), n));
    let device = a.device();
    let factors = Tensor::from_vec(
        parts.iter().flat_map(|f| f.lu.iter().copied()).collect(),
        a.shape(),
        device,
    )?;
    let sign = Tensor::from_vec(parts.iter().map(|f| f.sign).collect(), &host.batch, device)?;
    let permutations = parts.into_iter().flat_map(|f| f.perm).collect();
    Ok(Lu {
        factors,
        permutations,
        sign,
    })
}

impl Lu {
    /// `L` and `U` packed in one `(..., n, n)` tensor (LAPACK's layout): `L`
    /// strictly below the diagonal (its unit diagonal is not stored), `U` on
    /// and above it.
    pub fn factors(&self) -> &Tensor {
        &self.factors
    }

    /// The row permutations, matrix after matrix in row-major batch order:
    /// for matrix `b`, entry `b * n + i` is the row of `A` that becomes row
    /// `i` of `P A`, i.e. `(P A)_{i,:} = A_{perm[i],:}`.
    pub fn permutations(&self) -> &[usize] {
        &self.permutations
    }

    /// `det P` per matrix, shape `(...)`: +1 or -1 by the parity of the row
    /// swaps, so that `det A = sign * prod_i u_ii`.
    pub fn sign(&self) -> &Tensor {
        &self.sign
    }

    fn n(&self) -> usize {
        self.factors.shape()[self.factors.rank() - 1]
    }

    /// `L`, `(..., n, n)`: the strict lower triangle of the factors plus the
    /// identity.
    pub fn l(&self) -> Result<Tensor> {
        let f = &self.factors;
        let n = self.n();
        f.mul(&triangle_mask(n, false, false, f)?)?
            .add(&Tensor::eye(n, f.dtype(), f.device())?)
    }

    /// `U`, `(..., n, n)`: the upper triangle of the factors, diagonal included.
    pub fn u(&self) -> Result<Tensor> {
        self.factors
            .mul(&triangle_mask(self.n(), true, true, &self.factors)?)
    }

    /// `P`, `(..., n, n)`: the permutation matrix with `P_{i, perm[i]} = 1`,
    /// so that `P A = L U`.
    pub fn p(&self) -> Result<Tensor> {
        let n = self.n();
        let mut v = vec![0.0f64; self.permutations.len() * n];
        for (row, &col) in self.permutations.iter().enumerate() {
            v[row * n + col] = 1.0;
        }
        Tensor::from_vec(v, self.factors.shape(), self.factors.device())?
            .to_dtype(self.factors.dtype())
    }
}
