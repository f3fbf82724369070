//! The position-tiled kernel: vectors run along output positions.
//!
//! Each image is zero-padded and stored as three column-shifted copies, so the
//! input of every tap for consecutive output positions is one contiguous run,
//! whatever the width. A register tile holds `OB` output channels by `NT`
//! vectors of consecutive output positions; for each input channel and tap
//! it loads `NT` vectors and broadcasts `OB` weights (packed as
//! `[block][c][tap][OB]`), `OB x NT` multiply-adds. It suits few channels
//! (a vector of output channels would be mostly padding).

use super::SLACK;
use crate::conv::simd::Vector;
use crate::Element;

/// Everything one output-channel block of one image needs.
pub(crate) struct Block<'a, T> {
    /// Column-shifted copies of the zero-padded image, `(3, c, h + 2, w)`:
    /// copy `j` holds padded columns `j..j + w`; [`SLACK`] zeros follow.
    pub xs: &'a [T],
    /// This block's packed weights, `[c][tap][ob]`.
    pub wb: &'a [T],
    pub c: usize,
    pub h: usize,
    pub w: usize,
    /// Valid output channels in this block (`<= OB`).
    pub valid: usize,
}

/// A block kernel compiled for one instruction set.
pub(crate) type BlockFn<T> = unsafe fn(&Block<T>, &mut [T]);

/// Accumulates one tile: `OB` output channels at `NT * V::LANES` consecutive
/// output positions from flat position `p0 = r * w + q`. In the shifted copy
/// `j`, the input of tap `(i, j)` for position `p` sits at `p + i * w`, so each
/// tap is `NT` contiguous vector loads, each reused for `OB` channels, and
/// each weight broadcast is reused for `NT` vectors.
///
/// # Safety
/// The CPU must support `V`'s instructions.
#[inline(always)]
unsafe fn tile<T: Element, V: Vector<T>, const OB: usize, const NT: usize>(
    blk: &Block<T>,
    p0: usize,
) -> [[V; NT]; OB] {
    let plane = (blk.h + 2) * blk.w;
    let copy = blk.c * plane;
    let mut acc = [[V::zero(); NT]; OB];
    for ch in 0..blk.c {
        let wc = &blk.wb[ch * 9 * OB..][..9 * OB];
        for i in 0..3 {
            for j in 0..3 {
                let src = &blk.xs[j * copy + ch * plane + i * blk.w + p0..][..NT * V::LANES];
                let xv: [V; NT] = std::array::from_fn(|t| V::load(src.as_ptr().add(t * V::LANES)));
                let wt = &wc[(i * 3 + j) * OB..][..OB];
                for (o, acc_o) in acc.iter_mut().enumerate() {
                    let wo = V::splat(wt[o]);
                    for (a, &x) in acc_o.iter_mut().zip(&xv) {
                        *a = a.mul_add(wo, x);
                    }
                }
            }
        }
    }
    acc
}

/// All tiles of one block (`out` is its `(valid, h, w)` output): whole
/// tiles of `NT` vectors, then the vectors past them one at a time (so only
/// the image's last vector is partly padding).
///
/// # Safety
/// The CPU must support `V`'s instructions.
#[inline(always)]
pub(crate) unsafe fn block<T: Element, V: Vector<T>, const OB: usize, const NT: usize>(
    blk: &Block<T>,
    out: &mut [T],
) {
    let hw = blk.h * blk.w;
    let width = NT * V::LANES;
    // whole tiles of vectors, the image's last vector possibly partial
    let whole = (hw.div_ceil(V::LANES) / NT * width).min(hw);
    for p0 in (0..whole).step_by(width) {
        store_tile(out, hw, blk.valid, p0, &tile::<T, V, OB, NT>(blk, p0));
    }
    for p0 in (whole..hw).step_by(V::LANES) {
        store_tile(out, hw, blk.valid, p0, &tile::<T, V, OB, 1>(blk, p0));
    }
}

/// Writes a tile at position `p0` into `out`, the `(valid, hw)` output of
/// its block: the first `valid` channels, the positions before `hw`.
///
/// # Safety
/// The CPU must support `V`'s instructions.
#[inline(always)]
pub(crate) unsafe fn store_tile<T: Element, V: Vector<T>, const OB: usize, const NT: usize>(
    out: &mut [T],
    hw: usize,
    valid: usize,
    p0: usize,
    acc: &[[V; NT]; OB],
) {
    let mut lanes = [T::zero(); 64];
    for (o, acc_o) in acc.iter().enumerate().take(valid) {
        let out_o = &mut out[o * hw..][..hw];
        for (t, a) in acc_o.iter().enumerate() {
            let p = p0 + t * V::LANES;
            if p + V::LANES <= hw {
                a.store(out_o[p..][..V::LANES].as_mut_ptr());
            } else if p < hw {
                a.store(lanes.as_mut_ptr());
                out_o[p..].copy_from_slice(&lanes[..hw - p]);
            }
        }
    }
}

/// Weights `(o, c, 3, 3)` packed as `[block][c][tap][ob]`, zero beyond `o`.
pub(crate) fn pack_weights<T: Element>(w: &[T], o: usize, c: usize, ob: usize) -> Vec<T> {
    let blocks = o.div_ceil(ob);
    let mut packed = vec![T::zero(); blocks * c * 9 * ob];
    for oc in 0..o {
        let (b, oi) = (oc / ob, oc % ob);
        for ch in 0..c {
            for tap in 0..9 {
                packed[((b * c + ch) * 9 + tap) * ob + oi] = w[(oc * c + ch) * 9 + tap];
            }
        }
    }
    packed
}

/// The length of the shifted-copy buffer of a `(c, h, w)` image.
pub(crate) fn shifted_len(c: usize, h: usize, w: usize) -> usize {
    3 * c * (h + 2) * w + SLACK
}

/// Writes the three column-shifted copies of the zero-padded image
/// `x (c, h, w)`, `xs[j, c, r, q] = x[c, r - 1, q + j - 1]`, into `xs`, a
/// buffer of [`shifted_len`] that is zero outside those positions (the
/// writes always cover the same positions, so a buffer can be refilled for
/// another image).
pub(crate) fn fill_shifted_copies<T: Element>(x: &[T], c: usize, h: usize, w: usize, xs: &mut [T]) {
    let (plane, hw) = ((h + 2) * w, h * w);
    if hw == 0 {
        return;
    }
    for (j, copy) in xs.chunks_mut(c * plane).take(3).enumerate() {
        for (ch, src) in x.chunks(hw).take(c).enumerate() {
            // rows 1..=h of the copy are one run, shifted by j - 1 columns
            // against the image; the column that falls off is zero
            let dst = &mut copy[ch * plane + w..][..hw];
            match j {
                0 => {
                    dst[1..].copy_from_slice(&src[..hw - 1]);
                    dst.iter_mut().step_by(w).for_each(|v| *v = T::zero());
                }
                1 => dst.copy_from_slice(src),
                _ => {
                    dst[..hw - 1].copy_from_slice(&src[1..]);
                    dst.iter_mut()
                        .skip(w - 1)
                        .step_by(w)
                        .for_each(|v| *v = T::zero());
                }
            }
        }
    }
}
