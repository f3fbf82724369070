//! The channel-tiled kernel: vectors run along output channels.
//!
//! A register tile holds `OV` vectors of consecutive output channels
//! (`OV * LANES` channels) at `NP` consecutive positions of one output row.
//! For each input channel and tap it loads `OV` weight vectors (packed as
//! `[block][c][tap][OV * LANES]`) and broadcasts `NP` input values from the
//! zero-padded image, `OV x NP` multiply-adds: `OV + NP` loads where the
//! position-tiled kernel needs one per multiply-add and vector. It suits
//! many channels on small images, the shapes of a flow's deeper levels.
//! A tile's outputs are transposed to channel planes through a small buffer.

use super::SLACK;
use crate::conv::simd::Vector;
use crate::Element;

/// Everything one output-channel block of one image needs.
pub(crate) struct Block<'a, T> {
    /// The zero-padded image `(c, h + 2, w + 2)`, then [`SLACK`] zeros.
    pub xp: &'a [T],
    /// This block's packed weights, `[c][tap][ov * lanes]`.
    pub wb: &'a [T],
    pub c: usize,
    pub h: usize,
    pub w: usize,
    /// Valid output channels in this block.
    pub valid: usize,
}

/// A block kernel compiled for one instruction set.
pub(crate) type BlockFn<T> = unsafe fn(&Block<T>, &mut [T]);

/// Accumulates one tile: `OV * LANES` output channels at the `NP`
/// positions `(r, q0..q0 + NP)`. The input of tap `(i, j)` for position `q`
/// is the padded pixel `(r + i, q + j)`; positions past the row's end read
/// the next padded row (or the slack) and are discarded by the caller.
///
/// # Safety
/// The CPU must support `V`'s instructions.
#[inline(always)]
unsafe fn tile<T: Element, V: Vector<T>, const OV: usize, const NP: usize>(
    blk: &Block<T>,
    r: usize,
    q0: usize,
) -> [[V; NP]; OV] {
    let wp = blk.w + 2;
    let plane = (blk.h + 2) * wp;
    let width = OV * V::LANES;
    let mut acc = [[V::zero(); NP]; OV];
    for ch in 0..blk.c {
        let wc = &blk.wb[ch * 9 * width..][..9 * width];
        let xc = &blk.xp[ch * plane + r * wp + q0..];
        for i in 0..3 {
            for j in 0..3 {
                let wt = &wc[(i * 3 + j) * width..][..width];
                let wv: [V; OV] = std::array::from_fn(|v| V::load(wt.as_ptr().add(v * V::LANES)));
                let src = &xc[i * wp + j..][..NP];
                for (px, &x) in src.iter().enumerate() {
                    let xb = V::splat(x);
                    for (acc_v, &wvv) in acc.iter_mut().zip(&wv) {
                        acc_v[px] = acc_v[px].mul_add(wvv, xb);
                    }
                }
            }
        }
    }
    acc
}

/// All tiles of one block (`out` is its `(valid, h, w)` output).
///
/// # Safety
/// The CPU must support `V`'s instructions.
#[inline(always)]
pub(crate) unsafe fn block<T: Element, V: Vector<T>, const OV: usize, const NP: usize>(
    blk: &Block<T>,
    out: &mut [T],
) {
    let (h, w) = (blk.h, blk.w);
    let hw = h * w;
    let width = OV * V::LANES;
    // tile outputs as [px][channel]; OV * LANES <= 64 channels by NP <= 8
    let mut buf = [T::zero(); 64 * 8];
    for r in 0..h {
        for q0 in (0..w).step_by(NP) {
            let acc = tile::<T, V, OV, NP>(blk, r, q0);
            for (v, acc_v) in acc.iter().enumerate() {
                for (px, a) in acc_v.iter().enumerate() {
                    a.store(buf.as_mut_ptr().add(px * width + v * V::LANES));
                }
            }
            let np = NP.min(w - q0);
            for o in 0..blk.valid {
                let dst = &mut out[o * hw + r * w + q0..][..np];
                for (px, d) in dst.iter_mut().enumerate() {
                    *d = buf[px * width + o];
                }
            }
        }
    }
}

/// Weights `(o, c, 3, 3)` packed as `[block][c][tap][width]`, zero beyond `o`.
pub(crate) fn pack_weights<T: Element>(w: &[T], o: usize, c: usize, width: usize) -> Vec<T> {
    let blocks = o.div_ceil(width);
    let mut packed = vec![T::zero(); blocks * c * 9 * width];
    for oc in 0..o {
        let (b, oi) = (oc / width, oc % width);
        for ch in 0..c {
            for tap in 0..9 {
                packed[((b * c + ch) * 9 + tap) * width + oi] = w[(oc * c + ch) * 9 + tap];
            }
        }
    }
    packed
}

/// The length of the padded-image buffer of a `(c, h, w)` image.
pub(crate) fn padded_len(c: usize, h: usize, w: usize) -> usize {
    c * (h + 2) * (w + 2) + SLACK
}

/// Writes `x (c, h, w)` into the interior of the zero-padded planes
/// `(c, h + 2, w + 2)` of `xp` (a [`padded_len`] buffer, zero elsewhere).
pub(crate) fn fill_padded<T: Element>(x: &[T], c: usize, h: usize, w: usize, xp: &mut [T]) {
    let (wp, plane) = (w + 2, (h + 2) * (w + 2));
    for (ch, src) in x.chunks(h * w).take(c).enumerate() {
        for (r, row) in src.chunks(w).enumerate() {
            xp[ch * plane + (r + 1) * wp + 1..][..w].copy_from_slice(row);
        }
    }
}
