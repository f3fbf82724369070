//! Strided elementwise and reduction kernels, generic over the element type.
//!
//! Every kernel reads any layout (strided, broadcast, flipped) and writes a
//! fresh contiguous buffer. Work is split over rayon only when the tensor has
//! at least [`PAR_THRESHOLD`] elements, so small tensors pay no scheduling cost.

use crate::layout::{lockstep_rows, Layout, Rows};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Tensors with at least this many elements are processed in parallel.
pub const PAR_THRESHOLD: usize = 1 << 15;

/// Smallest number of rows a rayon task takes, so short rows are batched.
fn min_rows_per_task(row_len: usize) -> usize {
    (4096 / row_len.max(1)).max(1)
}

#[inline]
fn at(base: isize, k: usize, stride: isize) -> usize {
    (base + k as isize * stride) as usize
}

/// A buffer of `n` elements written row by row: `fill(r, row)` must write
/// every element of row `r` (rows of `row_len`, the last one possibly
/// shorter); rows are filled in parallel from [`PAR_THRESHOLD`] elements.
/// The buffer is not zeroed first (it would be written twice).
fn filled_rows<U, F>(n: usize, row_len: usize, fill: F) -> Vec<U>
where
    U: Copy + Send,
    F: Fn((usize, &mut [MaybeUninit<U>])) + Sync + Send,
{
    let mut out: Vec<U> = Vec::with_capacity(n);
    if n > 0 {
        let spare = &mut out.spare_capacity_mut()[..n];
        if n >= PAR_THRESHOLD {
            spare
                .par_chunks_mut(row_len)
                .with_min_len(min_rows_per_task(row_len))
                .enumerate()
                .for_each(fill);
        } else {
            spare.chunks_mut(row_len).enumerate().for_each(fill);
        }
        // SAFETY: `fill` wrote all `n` elements (its contract).
        unsafe { out.set_len(n) };
    }
    out
}

/// Elements per piece of a contiguous elementwise op.
const PIECE: usize = 4096;

/// `out[i] = f(x[i])`. A function of its own, so that `out` is known not to
/// alias `f`'s captures: their loads leave the loop and it vectorizes.
#[inline]
fn write_map<T: Copy, U, F: Fn(T) -> U>(out: &mut [MaybeUninit<U>], x: &[T], f: &F) {
    for (o, &x) in out.iter_mut().zip(x) {
        o.write(f(x));
    }
}

/// `out[i] = f(x[i], y[i])`, like [`write_map`].
#[inline]
fn write_zip<T: Copy, F: Fn(T, T) -> T>(out: &mut [MaybeUninit<T>], x: &[T], y: &[T], f: &F) {
    for (o, (&x, &y)) in out.iter_mut().zip(x.iter().zip(y)) {
        o.write(f(x, y));
    }
}

/// `out[i] = f(src[i])` over the elements of `layout` in row-major order.
pub fn map<T, U, F>(src: &[T], layout: &Layout, f: F) -> Vec<U>
where
    T: Copy + Send + Sync,
    U: Copy + Send + Sync,
    F: Fn(T) -> U + Sync + Send,
{
    let n = layout.elem_count();
    if let Some(range) = layout.contiguous_range() {
        let s = &src[range];
        return filled_rows(n, PIECE, |(r, chunk)| write_map(chunk, &s[r * PIECE..], &f));
    }
    let rows = Rows::new(layout);
    filled_rows(n, rows.len, |(r, chunk)| {
        let base = rows.base(r);
        match rows.stride {
            1 => write_map(chunk, &src[base as usize..], &f),
            0 => {
                let v = f(src[base as usize]);
                chunk.iter_mut().for_each(|o| {
                    o.write(v);
                });
            }
            stride => chunk.iter_mut().enumerate().for_each(|(k, o)| {
                o.write(f(src[at(base, k, stride)]));
            }),
        }
    })
}

/// `out[i] = f(a[i], b[i])` for two layouts of the same shape.
pub fn zip_map<T, F>(a: &[T], la: &Layout, b: &[T], lb: &Layout, f: F) -> Vec<T>
where
    T: Copy + Send + Sync,
    F: Fn(T, T) -> T + Sync + Send,
{
    let n = la.elem_count();
    if let (Some(ra), Some(rb)) = (la.contiguous_range(), lb.contiguous_range()) {
        let (a, b) = (&a[ra], &b[rb]);
        return filled_rows(n, PIECE, |(r, chunk)| {
            write_zip(chunk, &a[r * PIECE..], &b[r * PIECE..], &f)
        });
    }
    let rows = lockstep_rows(&[la, lb]);
    let (ra, rb) = (&rows[0], &rows[1]);
    filled_rows(n, ra.len, |(r, chunk)| {
        let (ba, bb) = (ra.base(r), rb.base(r));
        let n = chunk.len();
        match (ra.stride, rb.stride) {
            (1, 1) => write_zip(chunk, &a[ba as usize..][..n], &b[bb as usize..][..n], &f),
            (1, 0) => {
                let y = b[bb as usize];
                write_map(chunk, &a[ba as usize..][..n], &|x| f(x, y));
            }
            (0, 1) => {
                let x = a[ba as usize];
                write_map(chunk, &b[bb as usize..][..n], &|y| f(x, y));
            }
            (sa, sb) => chunk.iter_mut().enumerate().for_each(|(k, o)| {
                o.write(f(a[at(ba, k, sa)], b[at(bb, k, sb)]));
            }),
        }
    })
}

/// `out[i] = f(a[i], b[i], c[i])` for three layouts of the same shape.
pub fn zip3_map<T, F>(a: (&[T], &Layout), b: (&[T], &Layout), c: (&[T], &Layout), f: F) -> Vec<T>
where
    T: Copy + Send + Sync,
    F: Fn(T, T, T) -> T + Sync + Send,
{
    let n = a.1.elem_count();
    let rows = lockstep_rows(&[a.1, b.1, c.1]);
    filled_rows(n, rows[0].len, |(r, chunk)| {
        let bases = [rows[0].base(r), rows[1].base(r), rows[2].base(r)];
        for (k, o) in chunk.iter_mut().enumerate() {
            o.write(f(
                a.0[at(bases[0], k, rows[0].stride)],
                b.0[at(bases[1], k, rows[1].stride)],
                c.0[at(bases[2], k, rows[2].stride)],
            ));
        }
    })
}

/// Folds one strided run of `len` elements into `acc`. Unit-stride runs are
/// folded in 16 interleaved lanes (combined with `fold` at the end), which
/// breaks the dependency chain and lets the compiler vectorize.
#[inline]
fn fold_run<T: Copy, F: Fn(T, T) -> T>(
    src: &[T],
    base: isize,
    len: usize,
    stride: isize,
    init: T,
    acc: T,
    fold: &F,
) -> T {
    const LANES: usize = 16;
    if stride != 1 || len < 2 * LANES {
        return (0..len).fold(acc, |a, k| fold(a, src[at(base, k, stride)]));
    }
    let run = &src[base as usize..][..len];
    let mut lanes = [init; LANES];
    let mut chunks = run.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (l, &x) in lanes.iter_mut().zip(chunk) {
            *l = fold(*l, x);
        }
    }
    let acc = chunks.remainder().iter().fold(acc, |a, &x| fold(a, x));
    lanes.into_iter().fold(acc, fold)
}

/// Folds the elements of `layout` over `dims` (kept with size 1 in the output
/// shape): each output is `fold(init, x...)`, partial folds are joined with `fold`.
pub fn reduce<T, F>(src: &[T], layout: &Layout, dims: &[usize], init: T, fold: F) -> Vec<T>
where
    T: Copy + Send + Sync,
    F: Fn(T, T) -> T + Sync + Send,
{
    let (shape, strides) = (layout.shape(), layout.strides());
    let kept: Vec<usize> = (0..shape.len()).filter(|d| !dims.contains(d)).collect();
    let pick = |ds: &[usize]| -> (Vec<usize>, Vec<isize>) {
        (
            ds.iter().map(|&d| shape[d]).collect(),
            ds.iter().map(|&d| strides[d]).collect(),
        )
    };
    let (kshape, kstrides) = pick(&kept);
    let (rshape, rstrides) = pick(dims);
    let outer = Layout::from_parts(kshape, kstrides, layout.offset());
    let inner = Layout::from_parts(rshape, rstrides, 0);
    let outer_rows = Rows::elementwise(&outer);
    let inner_rows = Rows::new(&inner);
    let n_out = outer.elem_count();
    // Folds rows `range` of output `o`'s reduced elements.
    let fold_rows = |o: usize, range: std::ops::Range<usize>| -> T {
        let base = outer_rows.base(o);
        range.fold(init, |acc, r| {
            fold_run(
                src,
                base + inner_rows.base(r),
                inner_rows.len,
                inner_rows.stride,
                init,
                acc,
                &fold,
            )
        })
    };
    let work = layout.elem_count();
    if work < PAR_THRESHOLD {
        return (0..n_out)
            .map(|o| fold_rows(o, 0..inner_rows.count()))
            .collect();
    }
    if n_out >= rayon::current_num_threads() * 4 {
        return (0..n_out)
            .into_par_iter()
            .with_min_len((PAR_THRESHOLD / inner.elem_count().max(1)).max(1))
            .map(|o| fold_rows(o, 0..inner_rows.count()))
            .collect();
    }
    // Few outputs over many elements: split each output's elements into fixed
    // pieces (by rows when there are many, else pieces of its single long row),
    // fold the pieces in parallel and combine their results in order, so the
    // result does not depend on how rayon schedules the pieces.
    (0..n_out)
        .map(|o| {
            let partials: Vec<T> = if inner_rows.count() > 1 {
                let (rows, per) = (inner_rows.count(), min_rows_per_task(inner_rows.len));
                (0..rows.div_ceil(per))
                    .into_par_iter()
                    .map(|p| fold_rows(o, p * per..rows.min((p + 1) * per)))
                    .collect()
            } else {
                let base = outer_rows.base(o) + inner_rows.base(0);
                let piece = 8192;
                (0..inner_rows.len.div_ceil(piece))
                    .into_par_iter()
                    .map(|p| {
                        let len = piece.min(inner_rows.len - p * piece);
                        let start = base + (p * piece) as isize * inner_rows.stride;
                        fold_run(src, start, len, inner_rows.stride, init, init, &fold)
                    })
                    .collect()
            };
            partials.into_iter().fold(init, &fold)
        })
        .collect()
}
