//! The matrix exponential and its backward rule.

use super::kernels::expm;
use super::{assemble, batch_map, square_size, transpose_last, HostBatch};
use crate::{CustomOp, Element, Result, Tensor};
use std::sync::Arc;

/// matrixmultiply threads a product itself from `m k + k n >= 2^15` on
/// (see `cpu/matmul.rs`); batches of matrices that large run in sequence so
/// that its pool and rayon's never run at once.
const GEMM_THREADING_SIZE: usize = 1 << 15;

impl Tensor {
    /// `e^A = sum_k A^k / k!` for each `(..., n, n)` matrix, by scaling and
    /// squaring with the degree-13 Padé approximant (Higham 2005), scaled to
    /// `|A / 2^s|_1 <= θ13 / 4`: `e^A = r13(A / 2^s)^(2^s)`. Accurate to about
    /// 1e-14 relative in f64 for `|A|_1` up to about 20 (f32: about 1e-6).
    ///
    /// Differentiable: `dL/dA = L(A^T, G)`, the adjoint of the Fréchet
    /// derivative, read off the upper-right n x n block of
    /// `exp([[A^T, G], [0, A^T]])` (a 2n x 2n exponential per matrix).
    pub fn matrix_exp(&self) -> Result<Tensor> {
        square_size("matrix_exp", self)?;
        Tensor::apply_custom(Arc::new(MatrixExp), std::slice::from_ref(self))
    }
}

/// [`Tensor::matrix_exp`] as one graph node.
struct MatrixExp;

impl CustomOp for MatrixExp {
    fn name(&self) -> &'static str {
        "matrix_exp"
    }

    fn forward(&self, inputs: &[Tensor]) -> Result<Tensor> {
        with_element!(inputs[0].dtype(), matrix_exp_typed(&inputs[0]))
    }

    fn backward(&self, inputs: &[Tensor], _: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let a = &inputs[0];
        let (rows, cols) = (a.rank() - 2, a.rank() - 1);
        let n = a.shape()[cols];
        let a_t = transpose_last(a)?;
        let top = Tensor::cat(&[&a_t, g], cols)?;
        let bottom = Tensor::cat(&[&a.zeros_like()?, &a_t], cols)?;
        let block = Tensor::cat(&[&top, &bottom], rows)?;
        let grad = block.matrix_exp()?.narrow(rows, 0, n)?.narrow(cols, n, n)?;
        Ok(vec![Some(grad)])
    }
}

fn matrix_exp_typed<T: Element>(a: &Tensor) -> Result<Tensor> {
    let host = HostBatch::<T>::read(a)?;
    let n = host.rows;
    let cost = if 2 * n * n >= GEMM_THREADING_SIZE {
        0
    } else {
        10 * n.pow(3)
    };
    let parts = batch_map(host.count, cost, |i| expm(host.matrix(i), n));
    assemble(parts, a.shape(), a.device())
}
