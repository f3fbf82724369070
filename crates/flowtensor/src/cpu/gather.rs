//! Scans and data-dependent indexing: `cumsum`, `gather` (take along a
//! dimension) and its adjoint `scatter_add`, and `searchsorted`. The CUDA
//! kernels of `kernels/gather.cu` compute the same sums in the same order, so
//! the two backends agree bit for bit.
//!
//! Shapes are split at the dimension into `(outer, len, inner)`; index
//! values are whole numbers stored in the data's float type, checked by
//! [`crate::Indices`] before they reach a kernel.

use super::copy::contiguous;
use super::kernels::PAR_THRESHOLD;
use crate::layout::Layout;
use crate::Element;
use rayon::prelude::*;

/// Splits a shape at `dim` into (outer, size of dim, inner) element counts.
pub fn split_at_dim(shape: &[usize], dim: usize) -> (usize, usize, usize) {
    (
        shape[..dim].iter().product(),
        shape[dim],
        shape[dim + 1..].iter().product(),
    )
}

/// `y[.., j, ..] = sum_{i <= j} x[.., i, ..]` along `dim`, in increasing `i`
/// (blocks of the outer dimensions in parallel from [`PAR_THRESHOLD`]
/// elements; each sum runs in the same order whatever the thread count).
pub fn cumsum<T: Element>(src: &[T], l: &Layout, dim: usize) -> Vec<T> {
    let x = contiguous(src, l);
    let (_, len, inner) = split_at_dim(l.shape(), dim);
    let mut y = x.into_owned();
    let block = len * inner;
    if block == 0 {
        return y;
    }
    let scan = |b: &mut [T]| {
        if inner == 1 {
            for j in 1..len {
                b[j] = b[j - 1] + b[j];
            }
        } else {
            for j in 1..len {
                let (done, rest) = b.split_at_mut(j * inner);
                let previous = &done[(j - 1) * inner..];
                for (v, &p) in rest[..inner].iter_mut().zip(previous) {
                    *v = p + *v;
                }
            }
        }
    };
    if y.len() >= PAR_THRESHOLD {
        y.par_chunks_mut(block)
            .with_min_len(super::kernels::min_rows_per_task(block))
            .for_each(scan);
    } else {
        y.chunks_mut(block).for_each(scan);
    }
    y
}

/// `y[o, j, r] = x[o, index[o, j, r], r]`: the output has the index's shape,
/// `x` the same outer and inner sizes.
pub fn gather<T: Element>(src: &[T], l: &Layout, index: &[T], li: &Layout, dim: usize) -> Vec<T> {
    let x = contiguous(src, l);
    let idx = contiguous(index, li);
    let (outer, len, inner) = split_at_dim(l.shape(), dim);
    let taken = li.shape()[dim];
    let mut y = Vec::with_capacity(outer * taken * inner);
    for o in 0..outer {
        for j in 0..taken {
            for r in 0..inner {
                let k = idx[(o * taken + j) * inner + r].to_f64() as usize;
                y.push(x[(o * len + k) * inner + r]);
            }
        }
    }
    y
}

/// The adjoint of [`gather`]: `y[o, k, r] = sum_{j : index[o, j, r] = k} g[o, j, r]`
/// (in increasing `j`), with `size` entries along `dim`.
pub fn scatter_add<T: Element>(
    src: &[T],
    l: &Layout,
    index: &[T],
    li: &Layout,
    dim: usize,
    size: usize,
) -> Vec<T> {
    let g = contiguous(src, l);
    let idx = contiguous(index, li);
    let (outer, len, inner) = split_at_dim(l.shape(), dim);
    let mut y = vec![T::zero(); outer * size * inner];
    for o in 0..outer {
        for j in 0..len {
            for r in 0..inner {
                let at = (o * len + j) * inner + r;
                let k = idx[at].to_f64() as usize;
                let slot = &mut y[(o * size + k) * inner + r];
                *slot = *slot + g[at];
            }
        }
    }
    y
}

/// For each value of a row of `values` (`(rows, m)`), the number of entries
/// of the same row of `sorted` (`(rows, k)`, ascending) that are below it
/// (`right`: at most it): the position that keeps the row sorted. A NaN value
/// gets `k` (it is below nothing).
pub fn searchsorted<T: Element>(
    sorted: &[T],
    ls: &Layout,
    values: &[T],
    lv: &Layout,
    right: bool,
) -> Vec<T> {
    let s = contiguous(sorted, ls);
    let v = contiguous(values, lv);
    let k = *ls.shape().last().unwrap_or(&1);
    let m = *lv.shape().last().unwrap_or(&1);
    let rows = v.len().checked_div(m).unwrap_or(0);
    let mut y = Vec::with_capacity(v.len());
    for row in 0..rows {
        let knots = &s[row * k..(row + 1) * k];
        for &x in &v[row * m..(row + 1) * m] {
            y.push(T::from_f64(position(knots, x, right) as f64));
        }
    }
    y
}

/// Binary search: the first position whose entry is not below `x` (`right`:
/// not at most `x`); NaN compares as above everything.
fn position<T: Element>(knots: &[T], x: T, right: bool) -> usize {
    if x.to_f64().is_nan() {
        return knots.len();
    }
    let (mut lo, mut hi) = (0usize, knots.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        let a = knots[mid];
        let go_right = if right { a <= x } else { a < x };
        if go_right {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}
