//! Strided elementwise and reduction kernels, generic over the element type.
//!
//! Every kernel reads any layout (strided, broadcast, flipped) and writes a
//! fresh contiguous buffer. Work is split over rayon only when the tensor has
//! at least [`PAR_THRESHOLD`] elements, so small tensors pay no scheduling cost.

use crate::layout::{lockstep_rows, Layout, Rows};
use rayon::prelude::*;

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

/// `out[i] = f(src[i])` over the elements of `layout` in row-major order.
pub fn map<T, U, F>(src: &[T], layout: &Layout, f: F) -> Vec<U>
where
    T: Copy + Send + Sync,
    U: Copy + Send + Sync + Default,
    F: Fn(T) -> U + Sync + Send,
{
    let n = layout.elem_count();
    if let Some(range) = layout.contiguous_range() {
        let s = &src[range];
        return if n >= PAR_THRESHOLD {
            s.par_iter().with_min_len(4096).map(|&x| f(x)).collect()
        } else {
            s.iter().map(|&x| f(x)).collect()
        };
    }
    let rows = Rows::new(layout);
    let mut out = vec![U::default(); n];
    if n == 0 {
        return out;
    }
    let fill = |(r, chunk): (usize, &mut [U])| {
        let base = rows.base(r);
        for (k, o) in chunk.iter_mut().enumerate() {
            *o = f(src[at(base, k, rows.stride)]);
        }
    };
    if n >= PAR_THRESHOLD {
        out.par_chunks_mut(rows.len)
            .with_min_len(min_rows_per_task(rows.len))
            .enumerate()
            .for_each(fill);
    } else {
        out.chunks_mut(rows.len).enumerate().for_each(fill);
    }
    out
}

/// `out[i] = f(a[i], b[i])` for two layouts of the same shape.
pub fn zip_map<T, F>(a: &[T], la: &Layout, b: &[T], lb: &Layout, f: F) -> Vec<T>
where
    T: Copy + Send + Sync + Default,
    F: Fn(T, T) -> T + Sync + Send,
{
    let n = la.elem_count();
    if let (Some(ra), Some(rb)) = (la.contiguous_range(), lb.contiguous_range()) {
        let (a, b) = (&a[ra], &b[rb]);
        return if n >= PAR_THRESHOLD {
            a.par_iter()
                .zip(b.par_iter())
                .with_min_len(4096)
                .map(|(&x, &y)| f(x, y))
                .collect()
        } else {
            a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect()
        };
    }
    let rows = lockstep_rows(&[la, lb]);
    let (ra, rb) = (&rows[0], &rows[1]);
    let mut out = vec![T::default(); n];
    if n == 0 {
        return out;
    }
    let fill = |(r, chunk): (usize, &mut [T])| {
        let (ba, bb) = (ra.base(r), rb.base(r));
        for (k, o) in chunk.iter_mut().enumerate() {
            *o = f(a[at(ba, k, ra.stride)], b[at(bb, k, rb.stride)]);
        }
    };
    if n >= PAR_THRESHOLD {
        out.par_chunks_mut(ra.len)
            .with_min_len(min_rows_per_task(ra.len))
            .enumerate()
            .for_each(fill);
    } else {
        out.chunks_mut(ra.len).enumerate().for_each(fill);
    }
    out
}

/// `out[i] = f(a[i], b[i], c[i])` for three layouts of the same shape.
pub fn zip3_map<T, F>(a: (&[T], &Layout), b: (&[T], &Layout), c: (&[T], &Layout), f: F) -> Vec<T>
where
    T: Copy + Send + Sync + Default,
    F: Fn(T, T, T) -> T + Sync + Send,
{
    let n = a.1.elem_count();
    let rows = lockstep_rows(&[a.1, b.1, c.1]);
    let mut out = vec![T::default(); n];
    if n == 0 {
        return out;
    }
    let fill = |(r, chunk): (usize, &mut [T])| {
        let bases = [rows[0].base(r), rows[1].base(r), rows[2].base(r)];
        for (k, o) in chunk.iter_mut().enumerate() {
            *o = f(
                a.0[at(bases[0], k, rows[0].stride)],
                b.0[at(bases[1], k, rows[1].stride)],
                c.0[at(bases[2], k, rows[2].stride)],
            );
        }
    };
    if n >= PAR_THRESHOLD {
        out.par_chunks_mut(rows[0].len)
            .with_min_len(min_rows_per_task(rows[0].len))
            .enumerate()
            .for_each(fill);
    } else {
        out.chunks_mut(rows[0].len).enumerate().for_each(fill);
    }
    out
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
    let fold_output = |o: usize| -> T {
        let base = outer_rows.base(o);
        let mut acc = init;
        for r in 0..inner_rows.count() {
            let b = base + inner_rows.base(r);
            for k in 0..inner_rows.len {
                acc = fold(acc, src[at(b, k, inner_rows.stride)]);
            }
        }
        acc
    };
    let work = layout.elem_count();
    if work < PAR_THRESHOLD {
        return (0..n_out).map(fold_output).collect();
    }
    if n_out >= rayon::current_num_threads() * 4 {
        return (0..n_out)
            .into_par_iter()
            .with_min_len((PAR_THRESHOLD / inner.elem_count().max(1)).max(1))
            .map(fold_output)
            .collect();
    }
    // Few outputs over many elements: split each output's rows across threads.
    (0..n_out)
        .map(|o| {
            let base = outer_rows.base(o);
            (0..inner_rows.count())
                .into_par_iter()
                .with_min_len(min_rows_per_task(inner_rows.len))
                .fold(
                    || init,
                    |mut acc, r| {
                        let b = base + inner_rows.base(r);
                        for k in 0..inner_rows.len {
                            acc = fold(acc, src[at(b, k, inner_rows.stride)]);
                        }
                        acc
                    },
                )
                .reduce(|| init, &fold)
        })
        .collect()
}
