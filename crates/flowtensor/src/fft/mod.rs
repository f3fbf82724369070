//! Discrete Fourier transforms over chosen dimensions, and the complex tensor
//! type they act on.
//!
//! Complex data is a [`ComplexTensor`]: a real tensor whose last dimension
//! (size 2) holds (re, im). Dimension indices passed to the transforms are
//! complex dimensions (they never include that trailing 2).
//!
//! Conventions (those of numpy and `torch.fft` with `norm="backward"`), for
//! the transformed dimensions with sizes `N = (N_1, ..., N_d)`:
//!
//! - forward: `X[k] = sum_n x[n] exp(-2 pi i sum_j k_j n_j / N_j)`, unnormalized;
//! - inverse: `x[n] = (1 / prod N) sum_k X[k] exp(+2 pi i sum_j k_j n_j / N_j)`,
//!   so `ifft(fft(x)) = x`.
//!
//! Every transform is differentiable. The complex DFT is one custom op
//! whose backward is its adjoint (the transform with the opposite sign and
//! the same scale); the real transforms [`rfft2`] and [`irfft2`] are
//! compositions of it with views, so their gradients are exact adjoints too.
//! Plans come from a process-wide rustfft planner cached per length; lines
//! are transformed in parallel (rayon) for large tensors.
//!
//! Per-frequency linear algebra of complex `C x C` matrices
//! ([`ComplexTensor::solve`], [`ComplexTensor::inverse`],
//! [`ComplexTensor::log_abs_det`]) goes through the real embedding
//! `[[Ar, -Ai], [Ai, Ar]]` and the real ops of [`crate::linalg`].

mod complex;
mod dft;
mod linalg;

pub use complex::ComplexTensor;
pub(crate) use dft::cpu_dft;

use crate::{Error, Result, Tensor};
use dft::Dft;
use std::sync::Arc;

/// Applies the DFT op (after checking `dims` against the complex shape).
fn transform(
    op: &'static str,
    x: &ComplexTensor,
    dims: &[usize],
    inverse: bool,
) -> Result<ComplexTensor> {
    crate::layout::check_dims(op, dims, x.shape())?;
    let count: usize = dims.iter().map(|&d| x.shape()[d]).product();
    let scale = if inverse && count > 0 {
        1.0 / count as f64
    } else {
        1.0
    };
    let dft = Dft {
        dims: dims.to_vec(),
        inverse,
        scale,
    };
    ComplexTensor::new(Tensor::apply_custom(
        Arc::new(dft),
        &[x.as_tensor().clone()],
    )?)
}

/// The unnormalized forward DFT over the complex dimensions `dims`:
/// `X[k] = sum_n x[n] exp(-2 pi i sum_{j in dims} k_j n_j / N_j)`, batched
/// over the other dimensions (`torch.fft.fftn(x, dim=dims)`).
pub fn fft(x: &ComplexTensor, dims: &[usize]) -> Result<ComplexTensor> {
    transform("fft", x, dims, false)
}

/// The inverse DFT over the complex dimensions `dims`, normalized by
/// `1 / prod_{j in dims} N_j`:
/// `x[n] = (1 / prod N) sum_k X[k] exp(+2 pi i sum_{j in dims} k_j n_j / N_j)`,
/// so `ifft(fft(x, dims), dims) = x` (`torch.fft.ifftn(x, dim=dims)`).
pub fn ifft(x: &ComplexTensor, dims: &[usize]) -> Result<ComplexTensor> {
    transform("ifft", x, dims, true)
}

/// The last two complex dimensions, or an error naming `op`.
fn last_two(op: &'static str, x: &ComplexTensor) -> Result<[usize; 2]> {
    let r = x.rank();
    if r < 2 {
        return Err(Error::shape(
            op,
            &[x.shape()],
            "needs at least 2 complex dimensions",
        ));
    }
    Ok([r - 2, r - 1])
}

/// [`fft`] over the last two complex dimensions `(..., H, W)`, unnormalized.
pub fn fft2(x: &ComplexTensor) -> Result<ComplexTensor> {
    fft(x, &last_two("fft2", x)?)
}

/// [`ifft`] over the last two complex dimensions `(..., H, W)`, normalized by
/// `1 / (H W)`; the inverse of [`fft2`].
pub fn ifft2(x: &ComplexTensor) -> Result<ComplexTensor> {
    ifft(x, &last_two("ifft2", x)?)
}

/// The 2-D DFT of a real tensor `(..., H, W)` over its last two dimensions,
/// keeping the non-redundant half of the last one: `(..., H, W / 2 + 1)`
/// complex, `X[h, k] = sum_{m, n} x[m, n] exp(-2 pi i (h m / H + k n / W))`
/// for `k <= W / 2` (unnormalized; `torch.fft.rfft2`). The dropped columns
/// follow from Hermitian symmetry, `X[h, k] = conj(X[-h mod H, W - k])`.
pub fn rfft2(x: &Tensor) -> Result<ComplexTensor> {
    if x.rank() < 2 {
        return Err(Error::shape(
            "rfft2",
            &[x.shape()],
            "needs at least 2 dimensions",
        ));
    }
    let w = x.shape()[x.rank() - 1];
    let full = fft2(&ComplexTensor::from_real(x)?)?;
    let last = full.rank() - 1;
    ComplexTensor::new(full.as_tensor().narrow(last, 0, w / 2 + 1)?)
}

/// The real 2-D inverse DFT of a half spectrum `y` of complex shape
/// `(..., H, w / 2 + 1)`, giving a real `(..., H, w)` tensor normalized by
/// `1 / (H w)`; the inverse of [`rfft2`] (`torch.fft.irfft2(y, s=(H, w))`).
///
/// The full spectrum would hold `conj(y[-h mod H, w - k])` in the columns
/// `k > w / 2`, whose contribution to the real part of the inverse is that
/// of column `w - k` of `y` again. So the result is the real part of
/// [`ifft2`] of `y` with its columns `0 < k < w / 2` doubled and zeros in
/// the columns past `w / 2`. As in torch, the imaginary parts of the
/// self-conjugate bins (column 0, and column `w / 2` when `w` is even, after
/// the transform over `H`) are ignored, so any `y` gives a real result; for
/// the spectrum of a real signal it is that signal. Both odd and even `w`
/// work.
pub fn irfft2(y: &ComplexTensor, w: usize) -> Result<Tensor> {
    let (_, k) = half_spectrum("irfft2", y, w)?;
    let weights = Tensor::from_vec(half_spectrum_weights(w), &[k, 1], crate::Device::Cpu)?
        .to_dtype(y.dtype())?
        .to_device(y.device())?;
    irfft2_weighted(&ComplexTensor::new(y.as_tensor().mul(&weights)?)?, w)
}

/// The weight of each column `k <= w / 2` of a half spectrum in the real
/// inverse DFT: 1 for the self-conjugate columns (0, and `w / 2` when `w`
/// is even), 2 for the others, which stand for their mirror `w - k` too.
pub fn half_spectrum_weights(w: usize) -> Vec<f64> {
    let self_conjugate = |col: usize| col == 0 || (w.is_multiple_of(2) && col == w / 2);
    (0..w / 2 + 1)
        .map(|col| if self_conjugate(col) { 1.0 } else { 2.0 })
        .collect()
}

/// [`irfft2`] of a half spectrum whose columns are already multiplied by
/// [`half_spectrum_weights`] (so that a caller can fold the weights into a
/// smaller factor of it): the real part of [`ifft2`] of `y` with zeros in
/// the columns past `w / 2`.
pub fn irfft2_weighted(y: &ComplexTensor, w: usize) -> Result<Tensor> {
    let (kd, k) = half_spectrum("irfft2_weighted", y, w)?;
    let t = y.as_tensor();
    let full = if w > k {
        let mut rest = t.shape().to_vec();
        rest[kd] = w - k;
        let zeros = Tensor::zeros(&[], t.dtype(), t.device())?.broadcast_as(&rest)?;
        Tensor::cat(&[t, &zeros], kd)?
    } else {
        t.clone()
    };
    ifft2(&ComplexTensor::new(full)?)?.re()
}

/// The last complex dimension of a half spectrum for an output width `w`
/// and its `w / 2 + 1` columns, or an error naming `op`.
fn half_spectrum(op: &'static str, y: &ComplexTensor, w: usize) -> Result<(usize, usize)> {
    let [_, kd] = last_two(op, y)?;
    let k = y.shape()[kd];
    if w == 0 || k != w / 2 + 1 {
        return Err(Error::shape(
            op,
            &[y.shape()],
            format!(
                "an output width of {w} needs {} columns in the last dimension",
                w / 2 + 1
            ),
        ));
    }
    Ok((kd, k))
}
