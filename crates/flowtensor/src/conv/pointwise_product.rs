//! The products of a 1x1 convolution (stride 1, no padding, one group):
//! the forward `y[n] = W x[n]` and the input gradient `dx[n] = W^T dy[n]`,
//! both `out (rows, positions) = A (rows, k) b (k, positions)` per image.
//!
//! `b`'s rows are contiguous runs of positions, so a register tile of `OB`
//! output rows by `NT` vectors of consecutive positions reads them in place
//! (the last vector of a row masked): per step of `k`, `NT` vector loads
//! and `OB` weight broadcasts feed `OB x NT` multiply-adds. Only `A` is
//! packed, once per call, as `[block][k][OB]`; a GEMM library packs both
//! operands for every image, and for these shapes (64 x 64 by 49 or 196
//! positions) its packing of the image was a third of the product. Within
//! an image the tiles run position tile by position tile, every output
//! block over one tile of `b` (`k x NT` vectors, in the L1 cache) before the
//! next. The epilogue (bias and ReLU) is applied in registers.

use super::cpu::Epilogue;
use super::simd::{tile_widths, Vector};
use crate::Element;
use std::mem::MaybeUninit;

/// A weight matrix packed for [`tile`]: `[block][k][OB]`, zero past the
/// rows, with the epilogue of its products.
pub(crate) struct Packed<T> {
    values: Vec<T>,
    rows: usize,
    k: usize,
    ob: usize,
    /// The epilogue's bias of each row, `[block x OB]`, zero past the rows.
    bias: Option<Vec<T>>,
    /// Whether the sums go through ReLU.
    relu: bool,
}

impl<T: Element> Packed<T> {
    /// Packs `a (rows, k)` (`transpose`: `a` given as `(k, rows)`) in blocks of `ob` rows.
    pub(crate) fn new(a: &[T], (rows, k): (usize, usize), transpose: bool, ob: usize) -> Self {
        let blocks = rows.div_ceil(ob);
        let mut values = vec![T::zero(); blocks * k * ob];
        for r in 0..rows {
            let (b, within) = (r / ob, r % ob);
            for j in 0..k {
                let v = if transpose {
                    a[j * rows + r]
                } else {
                    a[r * k + j]
                };
                values[(b * k + j) * ob + within] = v;
            }
        }
        Packed {
            values,
            rows,
            k,
            ob,
            bias: None,
            relu: false,
        }
    }

    /// With the bias and ReLU of `epilogue` applied to the products in
    /// registers (after the sums, as a separate pass would).
    pub(crate) fn with_epilogue(mut self, epilogue: Epilogue<'_, T>) -> Self {
        self.bias = epilogue.bias.map(|bias| {
            let mut padded = vec![T::zero(); self.rows.div_ceil(self.ob) * self.ob];
            padded[..self.rows].copy_from_slice(&bias[..self.rows]);
            padded
        });
        self.relu = epilogue.relu;
        self
    }
}

/// The kernel of one instruction set: tiles of `ob` rows by up to `nt`
/// vectors of `lanes` positions.
#[derive(Clone, Copy)]
pub(crate) struct ProductKernel<T> {
    pub ob: usize,
    pub nt: usize,
    pub lanes: usize,
    pub tile: TileFn<T>,
}

/// Writes one tile: the output rows of block `block` at positions
/// `p0..p0 + count` of one image (`count` at most `nt` vectors) from
/// `b (k, positions)` into `out`, the block's rows `(valid, positions)`.
pub(crate) type TileFn<T> =
    unsafe fn(&Packed<T>, usize, &[T], &mut [MaybeUninit<T>], usize, (usize, usize));

/// One image's `out (rows, positions) = A b` for `b (k, positions)` at its
/// first `span` positions, all of which are written (every position with
/// `span == positions`): position tile by position tile (see
/// [`tile_widths`]; each tile of `b` read by every block while it is in the
/// L1 cache); with `parallel`, the blocks are spread over threads instead.
pub(crate) fn image<T: Element>(
    a: &Packed<T>,
    kernel: ProductKernel<T>,
    b: &[T],
    out: &mut [MaybeUninit<T>],
    (positions, span): (usize, usize),
    parallel: bool,
) {
    let (rows, ob, lanes) = (a.rows, a.ob, kernel.lanes);
    assert!(span <= positions);
    if rows == 0 || span == 0 {
        return;
    }
    let pieces = tile_widths(span.div_ceil(lanes), kernel.nt).scan(0, move |p0, width| {
        let start = *p0;
        *p0 += width * lanes;
        Some((kernel.tile, start, (width * lanes).min(span - start)))
    });
    let out = &mut out[..rows * positions];
    // SAFETY: the kernels are the ones this CPU runs (`ProductKernel`'s
    // contract); every piece lies inside the image.
    let run = |block: usize,
               rows_out: &mut [MaybeUninit<T>],
               (f, p0, count): (TileFn<T>, usize, usize)| unsafe {
        f(a, block, b, rows_out, positions, (p0, count))
    };
    if parallel {
        use rayon::prelude::*;
        out.par_chunks_mut(ob * positions)
            .enumerate()
            .for_each(|(block, rows_out)| {
                pieces.clone().for_each(|piece| run(block, rows_out, piece))
            });
    } else {
        for piece in pieces {
            for (block, rows_out) in out.chunks_mut(ob * positions).enumerate() {
                run(block, rows_out, piece);
            }
        }
    }
}

/// [`TileFn`] for `OB` rows by `NT` vectors.
///
/// # Safety
/// The CPU must support `V`'s instructions.
#[inline(always)]
pub(crate) unsafe fn tile<T: Element, V: Vector<T>, const OB: usize, const NT: usize>(
    a: &Packed<T>,
    block: usize,
    b: &[T],
    out: &mut [MaybeUninit<T>],
    positions: usize,
    (p0, count): (usize, usize),
) {
    let k = a.k;
    assert!(a.ob == OB && (block + 1) * k * OB <= a.values.len());
    assert!(count >= 1 && count <= NT * V::LANES && p0 + count <= positions);
    let valid = OB.min(a.rows - block * OB);
    assert!(b.len() >= k * positions && out.len() >= valid * positions);
    // the vectors of the tile and the elements of the last one
    let vectors = count.div_ceil(V::LANES);
    let last = count - (vectors - 1) * V::LANES;
    let at = (positions, p0, valid);
    match vectors {
        1 => write::<T, V, OB, 1>(a, block, b, out, at, last),
        2 => write::<T, V, OB, 2>(a, block, b, out, at, last),
        3 => write::<T, V, OB, 3>(a, block, b, out, at, last),
        _ => {
            assert_eq!(vectors, NT, "tiles are at most 3 vectors or exactly NT");
            write::<T, V, OB, NT>(a, block, b, out, at, last)
        }
    }
}

/// [`tile`] for exactly `W` vectors, the last of which holds `last` positions.
#[inline(always)]
unsafe fn write<T: Element, V: Vector<T>, const OB: usize, const W: usize>(
    a: &Packed<T>,
    block: usize,
    b: &[T],
    out: &mut [MaybeUninit<T>],
    (positions, p0, valid): (usize, usize, usize),
    last: usize,
) {
    let acc = if last == V::LANES {
        accumulate::<T, V, OB, W, false>(a, block, b, (positions, p0), last)
    } else {
        accumulate::<T, V, OB, W, true>(a, block, b, (positions, p0), last)
    };
    let (mut lanes, zero) = ([T::zero(); 64], V::zero());
    for (r, acc_r) in acc.iter().enumerate().take(valid) {
        let row = &mut out[r * positions..][..positions];
        let bias = a.bias.as_ref().map(|b| V::splat(b[block * OB + r]));
        for (t, &v) in acc_r.iter().enumerate() {
            let v = bias.map_or(v, |b| v.add(b));
            let v = if a.relu { v.max(zero) } else { v };
            let p = p0 + t * V::LANES;
            if t + 1 < W || last == V::LANES {
                v.store(row[p..][..V::LANES].as_mut_ptr().cast::<T>());
            } else {
                v.store(lanes.as_mut_ptr());
                for (dst, &value) in row[p..][..last].iter_mut().zip(&lanes) {
                    dst.write(value);
                }
            }
        }
    }
}

/// The accumulators of a tile of `W` vectors of positions from `p0`; with
/// `PARTIAL` the last of them holds `last` positions.
#[inline(always)]
unsafe fn accumulate<
    T: Element,
    V: Vector<T>,
    const OB: usize,
    const W: usize,
    const PARTIAL: bool,
>(
    a: &Packed<T>,
    block: usize,
    b: &[T],
    (positions, p0): (usize, usize),
    last: usize,
) -> [[V; W]; OB] {
    let weights = a.values.as_ptr().add(block * a.k * OB);
    let mut acc = [[V::zero(); W]; OB];
    for j in 0..a.k {
        let row = b.as_ptr().add(j * positions + p0);
        let mut xv = [V::zero(); W];
        for (t, x) in xv.iter_mut().enumerate() {
            *x = if PARTIAL && t + 1 == W {
                V::load_first(row.add(t * V::LANES), last)
            } else {
                V::load(row.add(t * V::LANES))
            };
        }
        let wj = weights.add(j * OB);
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let wv = V::splat(*wj.add(r));
            for (a, &x) in acc_r.iter_mut().zip(&xv) {
                *a = a.mul_add(wv, x);
            }
        }
    }
    acc
}
