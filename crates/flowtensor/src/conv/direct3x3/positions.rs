//! The position-tiled kernel: vectors run along output positions of the
//! image as it is, and the zero padding is a lane mask.
//!
//! For output positions `p .. p + LANES` (flat, `p = r w + q`), the input of
//! tap `(i, j)` is the run at `p + (i - 1) w + (j - 1)` of the unpadded image,
//! except in the lanes whose source pixel lies outside the image (the top or
//! bottom row for `i != 1`, the first or last column for `j != 1`, and the
//! positions past the image): a masked load reads those as zero without
//! touching their memory. So no padded or shifted copy of the image is made
//! (three column-shifted copies took as long as the products for 64 input
//! channels on 14x14 images). It suits few output channels (a vector of
//! output channels would be mostly padding). The masks depend only on the image size; they are computed once
//! per convolution. A register tile holds `OB` output channels by `NT`
//! vectors; for each tap it takes the tile's masks once, then for every
//! input channel loads `NT` vectors and broadcasts `OB` weights (packed as
//! `[block][tap][c][OB]`), `OB x NT` multiply-adds. The bias and ReLU are
//! applied as the tile is stored.

use crate::conv::simd::{tile_widths, MaskedLoad, Vector};
use crate::Element;
use std::mem::MaybeUninit;

/// Everything one output-channel block of one image needs.
pub(crate) struct Block<'a, T> {
    /// The image `(c, h, w)`.
    pub x: &'a [T],
    /// This block's packed weights, `[tap][c][ob]`.
    pub wb: &'a [T],
    /// The lane masks `[vector][tap]` of the image's vectors of positions.
    pub masks: &'a [u32],
    pub c: usize,
    pub h: usize,
    pub w: usize,
    /// Valid output channels in this block (`<= OB`).
    pub valid: usize,
    /// The bias of the block's valid channels, added to their sums.
    pub bias: Option<&'a [T]>,
    /// Whether the outputs go through ReLU.
    pub relu: bool,
    /// The vectors of positions to compute, from the first (all of them,
    /// `ceil(h w / lanes)`, unless the ragged tail is computed apart).
    pub vectors: usize,
}

/// A block kernel compiled for one instruction set; it writes every
/// element of its block's output.
pub(crate) type BlockFn<T> = unsafe fn(&Block<T>, &mut [MaybeUninit<T>]);

/// The lane masks `[vector][tap]` of `h x w` images for vectors of `lanes`
/// positions: bit `l` of the mask of vector `v` and tap `(i, j)` is set when
/// position `p = v lanes + l` lies in the image and so does its source pixel
/// `(r + i - 1, q + j - 1)`.
pub(crate) fn masks(h: usize, w: usize, lanes: usize) -> Vec<u32> {
    let hw = h * w;
    let vectors = hw.div_ceil(lanes);
    let mut masks = vec![0u32; vectors * 9];
    for p in 0..hw {
        let (r, q) = (p / w, p % w);
        for tap in 0..9 {
            let (i, j) = (tap / 3, tap % 3);
            let inside = (r + i).checked_sub(1).is_some_and(|sr| sr < h)
                && (q + j).checked_sub(1).is_some_and(|sq| sq < w);
            if inside {
                masks[p / lanes * 9 + tap] |= 1 << (p % lanes);
            }
        }
    }
    masks
}

/// Weights `(o, c, 3, 3)` packed as `[block][tap][c][ob]`, zero beyond `o`.
pub(crate) fn pack_weights<T: Element>(w: &[T], o: usize, c: usize, ob: usize) -> Vec<T> {
    let blocks = o.div_ceil(ob);
    let mut packed = vec![T::zero(); blocks * 9 * c * ob];
    for oc in 0..o {
        let (b, oi) = (oc / ob, oc % ob);
        for ch in 0..c {
            for tap in 0..9 {
                packed[((b * 9 + tap) * c + ch) * ob + oi] = w[(oc * c + ch) * 9 + tap];
            }
        }
    }
    packed
}

/// Accumulates one tile: `OB` output channels at the `NT` vectors of
/// positions from vector `v0`.
///
/// # Safety
/// The CPU must support `V`'s instructions.
#[inline(always)]
unsafe fn tile<T: Element, V: MaskedLoad<T>, const OB: usize, const NT: usize>(
    blk: &Block<T>,
    v0: usize,
) -> [[V; NT]; OB] {
    let (c, w, hw) = (blk.c, blk.w, blk.h * blk.w);
    assert!(blk.x.len() >= c * hw && blk.wb.len() >= 9 * c * OB);
    assert!(blk.masks.len() >= (v0 + NT) * 9);
    let x = blk.x.as_ptr();
    let p0 = (v0 * V::LANES) as isize;
    let mut acc = [[V::zero(); NT]; OB];
    for tap in 0..9 {
        let offset = (tap / 3) as isize * w as isize - w as isize + (tap % 3) as isize - 1;
        let mut masks = [0u32; NT];
        for (t, m) in masks.iter_mut().enumerate() {
            *m = blk.masks[(v0 + t) * 9 + tap];
        }
        let wt = blk.wb.as_ptr().add(tap * c * OB);
        for ch in 0..c {
            // the set lanes of each mask lie inside this channel's plane
            let src = x.wrapping_offset((ch * hw) as isize + p0 + offset);
            let mut xv = [V::zero(); NT];
            for (t, v) in xv.iter_mut().enumerate() {
                *v = V::load_masked(src.wrapping_add(t * V::LANES), masks[t]);
            }
            let wc = wt.add(ch * OB);
            for (o, acc_o) in acc.iter_mut().enumerate() {
                let wo = V::splat(*wc.add(o));
                for (a, &xt) in acc_o.iter_mut().zip(&xv) {
                    *a = a.mul_add(wo, xt);
                }
            }
        }
    }
    acc
}

/// All tiles of one block (`out` is its `(valid, h, w)` output) over its
/// first `vectors` vectors of positions, of up to `NT` vectors each (see
/// [`tile_widths`]).
///
/// # Safety
/// The CPU must support `V`'s instructions.
#[inline(always)]
pub(crate) unsafe fn block<T: Element, V: MaskedLoad<T>, const OB: usize, const NT: usize>(
    blk: &Block<T>,
    out: &mut [MaybeUninit<T>],
) {
    let mut v0 = 0;
    assert!(blk.vectors <= (blk.h * blk.w).div_ceil(V::LANES));
    for width in tile_widths(blk.vectors, NT) {
        let p0 = v0 * V::LANES;
        match width {
            1 => store_tile(out, blk, p0, tile::<T, V, OB, 1>(blk, v0)),
            2 => store_tile(out, blk, p0, tile::<T, V, OB, 2>(blk, v0)),
            3 => store_tile(out, blk, p0, tile::<T, V, OB, 3>(blk, v0)),
            _ => {
                assert_eq!(width, NT, "tiles are at most 3 vectors or exactly NT");
                store_tile(out, blk, p0, tile::<T, V, OB, NT>(blk, v0))
            }
        }
        v0 += width;
    }
}

/// Writes a tile at position `p0` into `out`, the `(valid, hw)` output of
/// its block (the first `valid` channels, the positions before `hw`), with
/// the block's bias added and through ReLU where it asks for them (the
/// same roundings as separate passes).
///
/// # Safety
/// The CPU must support `V`'s instructions.
#[inline(always)]
unsafe fn store_tile<T: Element, V: Vector<T>, const OB: usize, const NT: usize>(
    out: &mut [MaybeUninit<T>],
    blk: &Block<T>,
    p0: usize,
    acc: [[V; NT]; OB],
) {
    let (hw, zero) = (blk.h * blk.w, V::zero());
    let mut lanes = [T::zero(); 64];
    for (o, acc_o) in acc.iter().enumerate().take(blk.valid) {
        let out_o = &mut out[o * hw..][..hw];
        let bias = blk.bias.map(|b| V::splat(b[o]));
        for (t, &a) in acc_o.iter().enumerate() {
            let a = bias.map_or(a, |b| a.add(b));
            let a = if blk.relu { a.max(zero) } else { a };
            let p = p0 + t * V::LANES;
            if p + V::LANES <= hw {
                a.store(out_o[p..][..V::LANES].as_mut_ptr().cast::<T>());
            } else if p < hw {
                a.store(lanes.as_mut_ptr());
                for (dst, &v) in out_o[p..].iter_mut().zip(&lanes) {
                    dst.write(v);
                }
            }
        }
    }
}
