//! The weight gradient of a 3x3 same convolution, reduced over the whole
//! batch in registers, chunk of images after chunk of images.
//!
//! `dw[o, c, i, j] = sum_{n, p} dy[n, o, p] x[n, c, p + (i - 1) w + (j - 1)]`
//! over flat positions `p = r w + q`, with the source pixel outside the
//! image counted as zero. Vectors run along positions of `x` and `dy` as
//! they are: the lanes whose source pixel is outside the image (or whose
//! position is past the image) are masked off in the loads, with the masks
//! of the forward's position-tiled kernel ([`masks`]), so neither operand is copied
//! into padded planes (the copies took about a third of the time).

use super::positions::masks;
use crate::conv::simd::{horizontal_sum, MaskedLoad};
use crate::conv::ConvGeom;
use crate::Element;
use rayon::prelude::*;
use std::ops::Range;

/// The operands of one direct weight gradient, read in place.
pub(crate) struct WeightGrad<'a, T> {
    /// `(n, c, h, w)`.
    pub x: &'a [T],
    /// `(n, o, h, w)`.
    pub dy: &'a [T],
    pub n: usize,
    pub c: usize,
    pub o: usize,
    pub h: usize,
    pub w: usize,
    /// The lane masks `[vector][tap]` of the kernel's vectors (see [`masks`]).
    pub masks: Vec<u32>,
}

/// A tile of the weight gradient: (first output channel, input channel,
/// kernel row).
pub(crate) type Tile = (usize, usize, usize);

/// A weight-gradient kernel for output block `o0`, input channel `ch` and
/// kernel row `i`: adds `images` to the `[OB][3]` vector accumulators kept
/// in `state`, and with `sums` writes their sums there (`[OB][3]`).
pub(crate) type WeightFn<T> =
    unsafe fn(&WeightGrad<T>, Tile, Range<usize>, &mut [T], Option<&mut [T]>);

/// Accumulates the weight gradient of output channels `o0..o0 + OB` (those
/// past `o` repeat the last one; the caller drops them) against input
/// channel `ch` for kernel row `i` over `images`. The vector accumulators
/// start from `state` and go back there, so a batch run in chunks of images
/// sums in the same order as in one go; with `sums` their `[OB][3]` sums
/// are written too.
///
/// # Safety
/// The CPU must support `V`'s instructions.
#[inline(always)]
pub(crate) unsafe fn weight_tile<T: Element, V: MaskedLoad<T>, const OB: usize>(
    grad: &WeightGrad<T>,
    (o0, ch, i): Tile,
    images: Range<usize>,
    state: &mut [T],
    sums: Option<&mut [T]>,
) {
    let hw = grad.h * grad.w;
    assert!(images.end <= grad.n && ch < grad.c && i < 3 && o0 < grad.o);
    assert!(grad.x.len() >= grad.n * grad.c * hw && grad.dy.len() >= grad.n * grad.o * hw);
    assert!(grad.masks.len() >= hw.div_ceil(V::LANES) * 9);
    assert!(state.len() >= OB * 3 * V::LANES && sums.as_ref().is_none_or(|s| s.len() >= OB * 3));
    let mut acc = [[V::zero(); 3]; OB];
    // (loops, not `map`: closures do not inherit the caller's target features)
    for (k, taps) in acc.iter_mut().enumerate() {
        for (j, a) in taps.iter_mut().enumerate() {
            *a = V::load(state.as_ptr().add((k * 3 + j) * V::LANES));
        }
    }
    let mut rows = [0; OB];
    for (k, row) in rows.iter_mut().enumerate() {
        *row = (o0 + k).min(grad.o - 1) * hw;
    }
    acc = images_tile::<T, V, OB>(acc, grad, (ch, i), rows, images);
    for (k, taps) in acc.iter().enumerate() {
        for (j, a) in taps.iter().enumerate() {
            a.store(state.as_mut_ptr().add((k * 3 + j) * V::LANES));
        }
    }
    if let Some(sums) = sums {
        for (k, taps) in acc.iter().enumerate() {
            for (j, &a) in taps.iter().enumerate() {
                sums[k * 3 + j] = horizontal_sum(a);
            }
        }
    }
}

/// [`weight_tile`]'s sums over `images`: `acc` plus the products of the `dy`
/// rows at offsets `rows` of each image with the three column taps of
/// kernel row `i` of input channel `ch`. One loop over (image, vector), with
/// the accumulators in and out by value: so they stay in registers (a loop
/// nest per image stored them at every image, a loop in the caller at every
/// step).
///
/// # Safety
/// The CPU must support `V`'s instructions; the operands must cover
/// `images` (checked by [`weight_tile`]).
#[inline(always)]
unsafe fn images_tile<T: Element, V: MaskedLoad<T>, const OB: usize>(
    mut acc: [[V; 3]; OB],
    grad: &WeightGrad<T>,
    (ch, i): (usize, usize),
    rows: [usize; OB],
    images: Range<usize>,
) -> [[V; 3]; OB] {
    let (c, o, w, hw) = (grad.c, grad.o, grad.w, grad.h * grad.w);
    let vectors = hw.div_ceil(V::LANES);
    // the source of tap (i, j) for position p is at p + (i - 1) w + (j - 1)
    let row_offset = i as isize * w as isize - w as isize;
    let mut x = grad.x.as_ptr().add((images.start * c + ch) * hw);
    let mut dy = grad.dy.as_ptr().add(images.start * o * hw);
    let masks = grad.masks.as_ptr();
    let mut v = 0;
    for _ in 0..images.len() * vectors {
        let p = (v * V::LANES) as isize;
        let m = masks.add(v * 9 + i * 3);
        // the set lanes of every mask lie inside the planes
        let src = x.wrapping_offset(p + row_offset);
        let xs = [
            V::load_masked(src.wrapping_sub(1), *m),
            V::load_masked(src, *m.add(1)),
            V::load_masked(src.wrapping_add(1), *m.add(2)),
        ];
        // the centre tap's mask: the positions inside the image
        let inside = *masks.add(v * 9 + 4);
        for (k, taps) in acc.iter_mut().enumerate() {
            let dv = V::load_masked(dy.wrapping_offset(rows[k] as isize + p), inside);
            for (a, &xv) in taps.iter_mut().zip(&xs) {
                *a = a.mul_add(dv, xv);
            }
        }
        v += 1;
        if v == vectors {
            v = 0;
            x = x.wrapping_add(c * hw);
            dy = dy.wrapping_add(o * hw);
        }
    }
    acc
}

/// Bytes of one output block's `dy` per chunk of images: about half of a
/// core's L1 data cache, so that the block stays there while every input
/// channel and kernel row of it runs over the chunk (read from the L2 cache
/// once per tile instead, it made the kernel wait on the L2 cache).
const CHUNK_BYTES: usize = 24 << 10;

impl<'a, T: Element> WeightGrad<'a, T> {
    /// The operands `x (n, c, h, w)` and `dy (n, o, h, w)` for kernels of
    /// `lanes`-element vectors.
    pub(crate) fn new(x: &'a [T], dy: &'a [T], g: &ConvGeom, lanes: usize) -> Self {
        WeightGrad {
            x,
            dy,
            n: g.n,
            c: g.c,
            o: g.o,
            h: g.h,
            w: g.w,
            masks: masks(g.h, g.w, lanes),
        }
    }

    /// Adds `dw[o, c, i, j] = sum_{n, r, q} dy[n, o, r, q] x[n, c, r + i - 1,
    /// q + j - 1]` to `dw (o, c, 3, 3)`, running `kernel` (blocks of `ob`
    /// output channels) on every (block, input channel, kernel row) over
    /// chunks of images of [`CHUNK_BYTES`] of `dy` per block, in parallel
    /// when `parallel`.
    pub(crate) fn accumulate(
        &self,
        dw: &mut [T],
        (ob, kernel): (usize, WeightFn<T>),
        lanes: usize,
        parallel: bool,
    ) {
        let c = self.c;
        let tiles: Vec<Tile> = (0..self.o.div_ceil(ob))
            .flat_map(|b| (0..c).flat_map(move |ch| (0..3).map(move |i| (b * ob, ch, i))))
            .collect();
        let (state_len, sum_len) = (ob * 3 * lanes, ob * 3);
        let mut states = vec![T::zero(); tiles.len() * state_len];
        let mut sums = vec![T::zero(); tiles.len() * sum_len];
        let block_bytes = ob * self.h * self.w * std::mem::size_of::<T>();
        let chunk = (CHUNK_BYTES / block_bytes.max(1)).max(1);
        for start in (0..self.n).step_by(chunk) {
            let images = start..self.n.min(start + chunk);
            let last = images.end == self.n;
            let step = |(tile, (state, sum)): (&Tile, (&mut [T], &mut [T]))| {
                // SAFETY: `weight_kernel` returned a kernel whose instructions
                // this CPU has; `state` and `sum` have its sizes.
                unsafe { kernel(self, *tile, images.clone(), state, last.then_some(sum)) }
            };
            if parallel {
                tiles
                    .par_iter()
                    .zip(
                        states
                            .par_chunks_mut(state_len)
                            .zip(sums.par_chunks_mut(sum_len)),
                    )
                    .for_each(step);
            } else {
                tiles
                    .iter()
                    .zip(states.chunks_mut(state_len).zip(sums.chunks_mut(sum_len)))
                    .for_each(step);
            }
        }
        for (&(o0, ch, i), taps) in tiles.iter().zip(sums.chunks(sum_len)) {
            for (k, row) in taps.chunks(3).enumerate().take(self.o - o0) {
                let dst = &mut dw[((o0 + k) * c + ch) * 9 + i * 3..][..3];
                dst.iter_mut().zip(row).for_each(|(d, &v)| *d = *d + v);
            }
        }
    }
}
