//! Batched linear algebra of complex square matrices through their real
//! embedding, for per-frequency systems (periodic convolutions are diagonal
//! in Fourier space up to a C x C matrix per frequency).

use super::ComplexTensor;
use crate::{Error, Result, Tensor};

impl ComplexTensor {
    /// `X = A^{-1} B` for this tensor `A` of complex shape `(..., C, C)` and
    /// `b` of complex shape `(..., C, K)`, batch dimensions broadcast as in
    /// [`Tensor::matmul`]; complex shape `(..., C, K)`.
    ///
    /// Solved as the real system `[[Ar, -Ai], [Ai, Ar]] [Xr; Xi] = [Br; Bi]`
    /// (the real embedding of `A X = B`) with [`Tensor::solve`], so it is
    /// differentiable in `A` and `b`. A singular `A` is an `Err` (its
    /// embedding is singular too).
    pub fn solve(&self, b: &ComplexTensor) -> Result<ComplexTensor> {
        let c = self.square_size("ComplexTensor::solve")?;
        if b.rank() < 2 || b.shape()[b.rank() - 2] != c {
            return Err(Error::shape(
                "ComplexTensor::solve",
                &[self.shape(), b.shape()],
                format!("the right-hand side must be (..., {c}, k)"),
            ));
        }
        let (br, bi) = b.planes()?;
        let rows = br.rank() - 2;
        let rhs = Tensor::cat(&[&br, &bi], rows)?;
        let x = self.embedding()?.solve(&rhs)?;
        let rows = x.rank() - 2;
        ComplexTensor::from_planes(&x.narrow(rows, 0, c)?, &x.narrow(rows, c, c)?)
    }

    /// `A^{-1}` for this tensor `A` of complex shape `(..., C, C)`.
    ///
    /// The inverse of the real embedding is the embedding of the inverse,
    /// `[[Ar, -Ai], [Ai, Ar]]^{-1} = [[Pr, -Pi], [Pi, Pr]]` with
    /// `A^{-1} = Pr + i Pi`, so `Pr` and `Pi` are read from its left block
    /// column. Computed with [`Tensor::inverse`]; differentiable. A singular
    /// `A` is an `Err`.
    pub fn inverse(&self) -> Result<ComplexTensor> {
        let c = self.square_size("ComplexTensor::inverse")?;
        let inv = self.embedding()?.inverse()?;
        let (rows, cols) = (inv.rank() - 2, inv.rank() - 1);
        let left = inv.narrow(cols, 0, c)?;
        ComplexTensor::from_planes(&left.narrow(rows, 0, c)?, &left.narrow(rows, c, c)?)
    }

    /// `log |det A|` for this tensor `A` of complex shape `(..., C, C)`, a
    /// real tensor of shape `(...)`.
    ///
    /// The real embedding `E = [[Ar, -Ai], [Ai, Ar]]` has
    /// `det E = |det A|^2`, so `log |det A| = log |det E| / 2`, with
    /// `log |det E|` from [`Tensor::slogdet`]; differentiable. A singular `A`
    /// gives `-inf`.
    pub fn log_abs_det(&self) -> Result<Tensor> {
        self.square_size("ComplexTensor::log_abs_det")?;
        let (_, log_abs_det) = self.embedding()?.slogdet()?;
        log_abs_det
            .mul_scalar(0.5)?
            .reshape(&self.shape()[..self.rank() - 2])
    }

    /// `C` for a complex shape `(..., C, C)`, or an error naming `op`.
    fn square_size(&self, op: &'static str) -> Result<usize> {
        let s = self.shape();
        match s.len() {
            r if r >= 2 && s[r - 2] == s[r - 1] => Ok(s[r - 1]),
            _ => Err(Error::shape(
                op,
                &[s],
                "expected square complex matrices (..., C, C)",
            )),
        }
    }

    /// The real embedding `[[Ar, -Ai], [Ai, Ar]]` of this tensor `A` of
    /// complex shape `(..., C, C)`, a real tensor `(1, ..., 2C, 2C)`: `A z`
    /// is `E [Re z; Im z]` stacked as real and imaginary halves, and
    /// `E^{-1}` is the embedding of `A^{-1}`. Differentiable.
    pub fn real_embedding(&self) -> Result<Tensor> {
        self.square_size("ComplexTensor::real_embedding")?;
        self.embedding()
    }

    /// The real embedding `[[Ar, -Ai], [Ai, Ar]]` of shape `(1, ..., 2C, 2C)`.
    fn embedding(&self) -> Result<Tensor> {
        let (ar, ai) = self.planes()?;
        let (rows, cols) = (ar.rank() - 2, ar.rank() - 1);
        let top = Tensor::cat(&[&ar, &ai.neg()?], cols)?;
        let bottom = Tensor::cat(&[&ai, &ar], cols)?;
        Tensor::cat(&[&top, &bottom], rows)
    }
}
