//! The weight gradient of a 3x3 same convolution with vectors along output
//! channels, for many output channels.
//!
//! `dw[o, c, i, j] = sum_{n, r, q} dy[n, o, r, q] x[n, c, r + i - 1, q + j - 1]`
//! is, for each input channel `c`, a product of `dy` (outputs by positions)
//! with the nine shifted copies of `x`'s channel. A register tile holds
//! `OV` vectors of consecutive output channels by the nine taps of one input
//! channel; per position it loads `OV` vectors of `dy` (transposed once to
//! `(n, positions, o)`) and broadcasts the nine input pixels around the
//! position (from zero-padded planes), `9 OV` multiply-adds for `OV + 9`
//! loads. Each lane is its own output channel, so the sums need no
//! horizontal reduction. The position-vectorized kernel ([`super::weight`])
//! needs `OB + 3` loads (three of them masked) per `3 OB` multiply-adds and
//! suits few output channels; this one suits many (48 channels on 8x8
//! images: 1.35 -> about 0.6 ms, batch 64, Intel Xeon).
//!
//! Images go in chunks whose transposed `dy` fits in the L2 cache; a tile's
//! accumulators are kept between chunks, so every sum runs over the batch in
//! order, whatever the chunks and the threads.

use crate::conv::simd::Vector;
use crate::conv::ConvGeom;
use crate::cpu::zeroed_pieces;
use crate::Element;
use rayon::prelude::*;
use std::ops::Range;

/// The operands of one weight gradient, laid out for the kernel.
pub(crate) struct ChannelWeightGrad<T> {
    /// `x` as zero-padded planes `(n, c, (h + 2) (w + 2))`.
    xp: Vec<T>,
    /// `dy` transposed to `(n, h w, o_padded)`, zero past `o`.
    dyt: Vec<T>,
    n: usize,
    c: usize,
    o: usize,
    o_padded: usize,
    h: usize,
    w: usize,
}

/// A kernel: adds `images` to the `[OV][9]` vector accumulators in `state`
/// of the tile (first output channel, input channel).
pub(crate) type ChannelWeightFn<T> =
    unsafe fn(&ChannelWeightGrad<T>, (usize, usize), Range<usize>, &mut [T]);

/// The kernel of one instruction set and its tile width in output channels.
#[derive(Clone, Copy)]
pub(crate) struct ChannelWeightKernel<T> {
    pub width: usize,
    pub lanes: usize,
    pub run: ChannelWeightFn<T>,
}

/// [`ChannelWeightFn`] for `OV` vectors of output channels.
///
/// # Safety
/// The CPU must support `V`'s instructions.
#[inline(always)]
pub(crate) unsafe fn tile<T: Element, V: Vector<T>, const OV: usize>(
    g: &ChannelWeightGrad<T>,
    (o0, ch): (usize, usize),
    images: Range<usize>,
    state: &mut [T],
) {
    let (hw, wp) = (g.h * g.w, g.w + 2);
    let plane = (g.h + 2) * wp;
    assert!(images.end <= g.n && ch < g.c && o0 + OV * V::LANES <= g.o_padded);
    assert!(g.xp.len() >= g.n * g.c * plane && g.dyt.len() >= g.n * hw * g.o_padded);
    assert!(state.len() >= OV * 9 * V::LANES);
    let mut acc = [[V::zero(); 9]; OV];
    // (loops, not `map`: closures do not inherit the caller's target features)
    for (v, taps) in acc.iter_mut().enumerate() {
        for (t, a) in taps.iter_mut().enumerate() {
            *a = V::load(state.as_ptr().add((v * 9 + t) * V::LANES));
        }
    }
    for img in images {
        let x = g.xp.as_ptr().add((img * g.c + ch) * plane);
        let dy = g.dyt.as_ptr().add(img * hw * g.o_padded + o0);
        acc = image_tile::<T, V, OV>(acc, (x, dy), (g.h, g.w), g.o_padded);
    }
    for (v, taps) in acc.iter().enumerate() {
        for (t, a) in taps.iter().enumerate() {
            a.store(state.as_mut_ptr().add((v * 9 + t) * V::LANES));
        }
    }
}

/// One image's part of [`tile`]: `acc[v][3 i + j] += dy[p, v] x[r + i, q + j]`
/// over the positions `p = (r, q)`, `x` the padded plane, `dy` the
/// transposed rows (stride `o_padded`). One loop over positions, the
/// accumulators in and out by value, so that they stay in registers.
///
/// # Safety
/// The CPU must support `V`'s instructions; `x` must cover the padded
/// plane and `dy` `h w` rows of `OV` vectors.
#[inline(always)]
unsafe fn image_tile<T: Element, V: Vector<T>, const OV: usize>(
    mut acc: [[V; 9]; OV],
    (x, dy): (*const T, *const T),
    (h, w): (usize, usize),
    o_padded: usize,
) -> [[V; 9]; OV] {
    let wp = w + 2;
    let (mut src, mut q) = (x, 0);
    let mut row = dy;
    for _ in 0..h * w {
        let mut dv = [V::zero(); OV];
        for (v, d) in dv.iter_mut().enumerate() {
            *d = V::load(row.add(v * V::LANES));
        }
        for i in 0..3 {
            for j in 0..3 {
                let xv = V::splat(*src.add(i * wp + j));
                for (taps, &d) in acc.iter_mut().zip(&dv) {
                    taps[i * 3 + j] = taps[i * 3 + j].mul_add(d, xv);
                }
            }
        }
        row = row.add(o_padded);
        src = src.add(1);
        q += 1;
        if q == w {
            q = 0;
            src = src.add(2);
        }
    }
    acc
}

/// Bytes of transposed `dy` per chunk of images: half of a core's L2 cache.
const CHUNK_BYTES: usize = 1 << 20;

impl<T: Element> ChannelWeightGrad<T> {
    /// Lays out `x (n, c, h, w)` and `dy (n, o, h, w)` for tiles of `width`
    /// output channels, image by image in parallel when `parallel`.
    pub(crate) fn new(x: &[T], dy: &[T], g: &ConvGeom, width: usize, parallel: bool) -> Self {
        let (n, c, o, h, w) = (g.n, g.c, g.o, g.h, g.w);
        let (hw, wp) = (h * w, w + 2);
        let plane = (h + 2) * wp;
        let o_padded = o.div_ceil(width) * width;
        let xp = zeroed_pieces(n * c * plane, (c * plane).max(1), parallel, |img, dst| {
            for (src, dst) in x[img * c * hw..][..c * hw]
                .chunks_exact(hw.max(1))
                .zip(dst.chunks_exact_mut(plane))
            {
                for (r, row) in src.chunks_exact(w.max(1)).enumerate() {
                    dst[(r + 1) * wp + 1..][..w].copy_from_slice(row);
                }
            }
        });
        let dyt = zeroed_pieces(
            n * hw * o_padded,
            (hw * o_padded).max(1),
            parallel,
            |img, dst| {
                let src = &dy[img * o * hw..][..o * hw];
                for (oc, channel) in src.chunks_exact(hw.max(1)).enumerate() {
                    for (p, &v) in channel.iter().enumerate() {
                        dst[p * o_padded + oc] = v;
                    }
                }
            },
        );
        ChannelWeightGrad {
            xp,
            dyt,
            n,
            c,
            o,
            o_padded,
            h,
            w,
        }
    }

    /// Adds the weight gradient to `dw (o, c, 3, 3)`, running `kernel` on
    /// every (output block, input channel) over chunks of images, in
    /// parallel when `parallel`.
    pub(crate) fn accumulate(&self, dw: &mut [T], kernel: ChannelWeightKernel<T>, parallel: bool) {
        let ChannelWeightKernel { width, lanes, run } = kernel;
        let (c, o) = (self.c, self.o);
        let tiles: Vec<(usize, usize)> = (0..self.o_padded / width)
            .flat_map(|b| (0..c).map(move |ch| (b * width, ch)))
            .collect();
        let state_len = width * 9;
        let mut states = vec![T::zero(); tiles.len() * state_len];
        let image_bytes = self.h * self.w * self.o_padded * std::mem::size_of::<T>();
        let chunk = (CHUNK_BYTES / image_bytes.max(1)).max(1);
        for start in (0..self.n).step_by(chunk) {
            let images = start..self.n.min(start + chunk);
            let step = |(tile, state): (&(usize, usize), &mut [T])| {
                // SAFETY: the kernel is one this CPU runs
                // (`channel_weight_kernel`); `state` has its size.
                unsafe { run(self, *tile, images.clone(), state) }
            };
            if parallel {
                tiles
                    .par_iter()
                    .zip(states.par_chunks_mut(state_len))
                    .for_each(step);
            } else {
                tiles
                    .iter()
                    .zip(states.chunks_mut(state_len))
                    .for_each(step);
            }
        }
        // state `[v][tap][lane]` holds output channel o0 + v lanes + lane
        for (&(o0, ch), state) in tiles.iter().zip(states.chunks(state_len)) {
            for (v, taps) in state.chunks(9 * lanes).enumerate() {
                for (tap, values) in taps.chunks(lanes).enumerate() {
                    for (lane, &value) in values.iter().enumerate() {
                        let oc = o0 + v * lanes + lane;
                        if oc < o {
                            let d = &mut dw[(oc * c + ch) * 9 + tap];
                            *d = *d + value;
                        }
                    }
                }
            }
        }
    }
}
