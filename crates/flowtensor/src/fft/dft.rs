//! The multi-dimensional DFT as one custom op, on rustfft.
//!
//! Complex data is a real tensor whose last dimension (size 2) holds
//! (re, im); the transformed dimensions index the other ("complex")
//! dimensions. Every other complex dimension is a batch dimension.

use crate::{CustomOp, Element, Error, Result, Tensor, PAR_THRESHOLD};
use rayon::prelude::*;
use rustfft::num_complex::Complex;
use rustfft::{Fft, FftDirection, FftNum, FftPlanner};
use std::sync::{Arc, Mutex, OnceLock};

/// Element types rustfft can transform, each with a process-wide planner
/// that caches plans (twiddles, algorithm choice) per length and direction.
pub(crate) trait FftElement: Element + FftNum {
    fn plan(len: usize, direction: FftDirection) -> Arc<dyn Fft<Self>>;
}

macro_rules! impl_fft_element {
    ($t:ty) => {
        impl FftElement for $t {
            fn plan(len: usize, direction: FftDirection) -> Arc<dyn Fft<Self>> {
                static PLANNER: OnceLock<Mutex<FftPlanner<$t>>> = OnceLock::new();
                PLANNER
                    .get_or_init(|| Mutex::new(FftPlanner::new()))
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .plan_fft(len, direction)
            }
        }
    };
}

impl_fft_element!(f32);
impl_fft_element!(f64);

/// `y[k] = scale * sum_n x[n] exp(sign 2 pi i <k, n / N>)` over the complex
/// dimensions `dims` of a complex tensor (shape `(..., 2)`), with `sign = -1`
/// forward and `+1` when `inverse`; no normalization besides `scale`.
///
/// The op is complex-linear, `y = A x` with `A = scale * F_sign`. For a real
/// loss `L`, the gradient read as a complex tensor `g = dL/dRe y + i dL/dIm y`
/// pulls back as `A^H g`, and `F_sign^H = F_{-sign}` with `scale` real, so the
/// backward is this op with the opposite sign and the same scale.
pub(super) struct Dft {
    /// Complex dimensions transformed (distinct, below the complex rank).
    pub dims: Vec<usize>,
    pub inverse: bool,
    pub scale: f64,
}

impl Dft {
    /// The transform of the complex tensor `x`.
    pub fn run(&self, x: &Tensor) -> Result<Tensor> {
        if x.shape().last() != Some(&2) {
            return Err(Error::shape(
                "dft",
                &[x.shape()],
                "complex data needs a last dimension of size 2 (re, im)",
            ));
        }
        let cshape = &x.shape()[..x.rank() - 1];
        crate::layout::check_dims("dft", &self.dims, cshape)?;
        let x = x.contiguous()?;
        let storage = x
            .storage()
            .dft(x.layout(), cshape, &self.dims, self.inverse, self.scale)?;
        Ok(Tensor::from_storage(storage, x.shape()))
    }
}

/// Complex elements up to which the transformed dimensions of one batch
/// index are transformed together by one thread, in its cache.
const LOCAL_BLOCK: usize = 1 << 15;

/// The CPU transform: `scale * DFT` over the complex dimensions `dims` of
/// contiguous interleaved complex data of complex shape `cshape` (see
/// [`Dft`]), on rustfft.
///
/// When the dimensions from the first transformed one on hold at most
/// [`LOCAL_BLOCK`] elements and there are several such blocks (a batch of
/// images), each block is transformed along every dimension by one task
/// while it is in cache; otherwise each dimension is one parallel pass over
/// the whole buffer. Both run the same line transforms, so the results are
/// the same.
pub(crate) fn cpu_dft<T: FftElement>(
    data: &[T],
    cshape: &[usize],
    dims: &[usize],
    inverse: bool,
    scale: f64,
) -> Vec<T> {
    let mut out = data.to_vec();
    let buf = as_complex(&mut out);
    let direction = if inverse {
        FftDirection::Inverse
    } else {
        FftDirection::Forward
    };
    let plans: Vec<(usize, usize, Arc<dyn Fft<T>>)> = dims
        .iter()
        .filter(|&&d| cshape[d] > 1)
        .map(|&d| {
            let inner: usize = cshape[d + 1..].iter().product();
            (cshape[d], inner, T::plan(cshape[d], direction))
        })
        .collect();
    let s = <T as Element>::from_f64(scale);
    let first = dims.iter().copied().min().unwrap_or(cshape.len());
    let block: usize = cshape[first..].iter().product();
    let parallel = data.len() >= PAR_THRESHOLD;
    if block > 0 && block <= LOCAL_BLOCK && buf.len() / block >= 2 {
        let work = |blk: &mut [Complex<T>]| {
            for (n, inner, fft) in &plans {
                transform_lines(blk, *n, *inner, &**fft, false);
            }
            scale_by(blk, s);
        };
        if parallel {
            buf.par_chunks_mut(block)
                .with_min_len((4096 / block).max(1))
                .for_each(work);
        } else {
            buf.chunks_mut(block).for_each(work);
        }
    } else if !buf.is_empty() {
        for (n, inner, fft) in &plans {
            transform_lines(buf, *n, *inner, &**fft, parallel);
        }
        if parallel {
            buf.par_chunks_mut(4096).for_each(|c| scale_by(c, s));
        } else {
            scale_by(buf, s);
        }
    }
    out
}

/// Interleaved `(re, im)` pairs as complex numbers.
fn as_complex<T: FftElement>(data: &mut [T]) -> &mut [Complex<T>] {
    assert!(data.len().is_multiple_of(2));
    // SAFETY: `Complex<T>` is `#[repr(C)] { re: T, im: T }`, two `T`s with
    // `T`'s alignment, and the length is even
    unsafe { std::slice::from_raw_parts_mut(data.as_mut_ptr().cast(), data.len() / 2) }
}

/// Every element times `s` (nothing when `s` is one).
fn scale_by<T: FftElement>(buf: &mut [Complex<T>], s: T) {
    if s != T::one() {
        buf.iter_mut()
            .for_each(|c| *c = Complex::new(c.re * s, c.im * s));
    }
}

impl CustomOp for Dft {
    fn name(&self) -> &'static str {
        "dft"
    }

    fn forward(&self, inputs: &[Tensor]) -> Result<Tensor> {
        match inputs {
            [x] => self.run(x),
            _ => Err(Error::invalid(
                "dft",
                format!("one input expected, {} given", inputs.len()),
            )),
        }
    }

    /// The adjoint: the same transform with the opposite sign and the same scale.
    fn backward(
        &self,
        _: &[Tensor],
        _: &Tensor,
        grad_output: &Tensor,
    ) -> Result<Vec<Option<Tensor>>> {
        let adjoint = Dft {
            dims: self.dims.clone(),
            inverse: !self.inverse,
            scale: self.scale,
        };
        let grad = Tensor::apply_custom(Arc::new(adjoint), std::slice::from_ref(grad_output))?;
        Ok(vec![Some(grad)])
    }

    fn backward_is_differentiable(&self) -> bool {
        true
    }
}

/// Transforms, in place, every line of `n` elements along one dimension of a
/// row-major buffer whose dimensions after it hold `inner` elements.
///
/// Contiguous lines (`inner == 1`) are transformed where they lie; strided
/// lines are gathered into a buffer of contiguous lines, transformed there
/// and scattered back.
fn transform_lines<T: FftElement>(
    buf: &mut [Complex<T>],
    n: usize,
    inner: usize,
    fft: &dyn Fft<T>,
    parallel: bool,
) {
    if inner == 1 {
        fft_rows(buf, n, fft, parallel, |_, _| {});
        return;
    }
    let block = n * inner;
    let mut lines = vec![Complex::<T>::default(); buf.len()];
    {
        let src = &*buf;
        // line (o, i) holds src[o * block + k * inner + i] for k in 0..n
        fft_rows(&mut lines, n, fft, parallel, |line, dst| {
            let base = (line / inner) * block + line % inner;
            for (k, v) in dst.iter_mut().enumerate() {
                *v = src[base + k * inner];
            }
        });
    }
    // buffer row (o, k) holds lines[o * block + i * n + k] for i in 0..inner
    let scatter = |(row, dst): (usize, &mut [Complex<T>])| {
        let base = (row / n) * block + row % n;
        for (i, v) in dst.iter_mut().enumerate() {
            *v = lines[base + i * n];
        }
    };
    if parallel {
        buf.par_chunks_mut(inner)
            .with_min_len((4096 / inner).max(1))
            .enumerate()
            .for_each(scatter);
    } else {
        buf.chunks_mut(inner).enumerate().for_each(scatter);
    }
}

/// Fills each row of `n` elements of `rows` with `fill(row index, row)`, then
/// transforms it with `fft`; parallel over groups of rows when `parallel`.
fn fft_rows<T: FftElement>(
    rows: &mut [Complex<T>],
    n: usize,
    fft: &dyn Fft<T>,
    parallel: bool,
    fill: impl Fn(usize, &mut [Complex<T>]) + Sync,
) {
    let rows_per_task = if parallel {
        (4096 / n).max(1)
    } else {
        rows.len() / n
    };
    let scratch_len = fft.get_inplace_scratch_len();
    let work = |(task, chunk): (usize, &mut [Complex<T>])| {
        for (r, row) in chunk.chunks_exact_mut(n).enumerate() {
            fill(task * rows_per_task + r, row);
        }
        let mut scratch = vec![Complex::<T>::default(); scratch_len];
        fft.process_with_scratch(chunk, &mut scratch);
    };
    let chunk_len = rows_per_task * n;
    if parallel {
        rows.par_chunks_mut(chunk_len).enumerate().for_each(work);
    } else {
        rows.chunks_mut(chunk_len).enumerate().for_each(work);
    }
}
