//! Copying kernels: concatenation, index selection and its adjoint.

use super::gather::split_at_dim;
use super::kernels::{filled_rows, map, min_rows_per_task, PAR_THRESHOLD};
use crate::layout::Layout;
use crate::Element;
use rayon::prelude::*;
use std::borrow::Cow;

/// The elements of `layout` in row-major order, borrowed when already contiguous.
pub fn contiguous<'a, T: Element>(src: &'a [T], layout: &Layout) -> Cow<'a, [T]> {
    match layout.contiguous_range() {
        Some(r) => Cow::Borrowed(&src[r]),
        None => Cow::Owned(map(src, layout, |x| x)),
    }
}

/// Concatenation along `dim` of parts whose other dimensions agree: each
/// output row (one index of the dimensions before `dim`) is the parts' rows
/// side by side. Rows are written in place, each element once (in parallel
/// from [`PAR_THRESHOLD`] elements); a part that broadcasts one element (all
/// strides zero, as the zeros around a narrow's gradient) is filled with it
/// rather than read.
pub fn cat<T: Element>(parts: &[(&[T], &Layout)], dim: usize) -> Vec<T> {
    enum Part<'a, T: Clone> {
        Data(Cow<'a, [T]>),
        Fill(T),
    }
    let outer: usize = parts[0].1.shape()[..dim].iter().product();
    let blocks: Vec<(Part<T>, usize)> = parts
        .iter()
        .map(|(s, l)| {
            let part = if l.elem_count() > 0 && l.strides().iter().all(|&st| st == 0) {
                Part::Fill(s[l.offset()])
            } else {
                Part::Data(contiguous(s, l))
            };
            (part, l.shape()[dim..].iter().product())
        })
        .collect();
    let row: usize = blocks.iter().map(|(_, inner)| inner).sum();
    if row == 0 {
        return Vec::new();
    }
    // groups of rows, each written part by part (every element once): short
    // rows (a part of one element, as in a narrow's gradient) cost a strided
    // store, not a task
    let group = min_rows_per_task(row);
    filled_rows(outer * row, row * group, |(g, dst)| {
        let first = g * group;
        let mut at = 0;
        for (block, inner) in &blocks {
            let n = *inner;
            let rows = dst.chunks_exact_mut(row);
            match (block, n) {
                (_, 0) => {}
                (Part::Fill(v), _) => rows.for_each(|d| {
                    d[at..at + n].iter_mut().for_each(|o| {
                        o.write(*v);
                    })
                }),
                (Part::Data(block), n) => rows.enumerate().for_each(|(r, d)| {
                    let src = &block[(first + r) * n..][..n];
                    d[at..at + n].iter_mut().zip(src).for_each(|(o, &x)| {
                        o.write(x);
                    })
                }),
            }
            at += n;
        }
    })
}

/// Runs `fill(o, dst)` for every output row `o` of `row` elements, in
/// parallel from [`PAR_THRESHOLD`] output elements (rows are independent,
/// so the result does not depend on the thread count).
fn by_rows<T: Element>(out: &mut [T], row: usize, fill: impl Fn(usize, &mut [T]) + Sync) {
    if row == 0 {
        return;
    }
    if out.len() >= PAR_THRESHOLD {
        out.par_chunks_mut(row)
            .with_min_len(min_rows_per_task(row))
            .enumerate()
            .for_each(|(o, dst)| fill(o, dst));
    } else {
        out.chunks_mut(row)
            .enumerate()
            .for_each(|(o, dst)| fill(o, dst));
    }
}

/// `out[.., j, ..] = src[.., idx[j], ..]` along `dim`.
pub fn index_select<T: Element>(src: &[T], layout: &Layout, dim: usize, idx: &[usize]) -> Vec<T> {
    let c = contiguous(src, layout);
    let (outer, d, inner) = split_at_dim(layout.shape(), dim);
    let mut out = vec![T::zero(); outer * idx.len() * inner];
    by_rows(&mut out, idx.len() * inner, |o, dst| {
        let from = &c[o * d * inner..(o + 1) * d * inner];
        if inner == 1 {
            for (t, &j) in dst.iter_mut().zip(idx) {
                *t = from[j];
            }
        } else {
            for (t, &j) in dst.chunks_exact_mut(inner).zip(idx) {
                t.copy_from_slice(&from[j * inner..(j + 1) * inner]);
            }
        }
    });
    out
}

/// The adjoint of [`index_select`]: `out[.., idx[j], ..] += src[.., j, ..]`
/// (in increasing `j`), with `size` entries along `dim` in the output.
pub fn index_add<T: Element>(
    src: &[T],
    layout: &Layout,
    dim: usize,
    idx: &[usize],
    size: usize,
) -> Vec<T> {
    let c = contiguous(src, layout);
    let (outer, len, inner) = split_at_dim(layout.shape(), dim);
    let mut out = vec![T::zero(); outer * size * inner];
    by_rows(&mut out, size * inner, |o, dst| {
        let from = &c[o * len * inner..(o + 1) * len * inner];
        for (j, &target) in idx.iter().enumerate().take(len) {
            if inner == 1 {
                dst[target] = dst[target] + from[j];
            } else {
                let to = &mut dst[target * inner..(target + 1) * inner];
                for (t, &f) in to.iter_mut().zip(&from[j * inner..(j + 1) * inner]) {
                    *t = *t + f;
                }
            }
        }
    });
    out
}
