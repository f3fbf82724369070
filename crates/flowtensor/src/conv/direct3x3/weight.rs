//! The weight gradient of a 3x3 same convolution, reduced over the whole
//! batch in registers, chunk of images after chunk of images.

use crate::conv::simd::{horizontal_sum, Vector};
use crate::conv::ConvGeom;
use crate::cpu::zeroed_pieces;
use crate::Element;
use rayon::prelude::*;
use std::ops::Range;

/// Padded operands of the direct weight gradient.
#[derive(Clone, Default)]
pub(crate) struct WeightGrad<T> {
    /// `x` as padded planes `(n, c, (h + 2) * (w + 2) + SLACK)`.
    pub xp: Vec<T>,
    /// `dy` as `(n, o_padded, positions)` on the padded grid's first `h` rows,
    /// zero in the padding columns, beyond `o` and beyond `h * (w + 2)`.
    pub dyp: Vec<T>,
    pub n: usize,
    pub c: usize,
    pub o: usize,
    pub o_padded: usize,
    pub wp: usize,
    pub x_plane: usize,
    pub positions: usize,
}

/// A tile of the weight gradient: (first output channel, input channel,
/// kernel row).
pub(crate) type Tile = (usize, usize, usize);

/// A weight-gradient kernel for output block `o0`, input channel `ch` and
/// kernel row `i`: adds `images` to the `[OB][3]` vector accumulators kept
/// in `state`, and with `sums` writes their sums there (`[OB][3]`).
pub(crate) type WeightFn<T> =
    unsafe fn(&WeightGrad<T>, (usize, usize, usize), Range<usize>, &mut [T], Option<&mut [T]>);

/// Accumulates the weight gradient of output channels `o0..o0 + OB` against
/// input channel `ch` for kernel row `i` over `images`:
/// `acc[k][j] += dy[n, o0 + k, p] * x[n, ch, p + i * (w + 2) + j]` over flat
/// positions `p` of the padded grid, where `dy` is zero in the padding
/// columns. The vector accumulators start from `state` and go back there, so
/// a batch run in chunks of images sums in the same order as in one go;
/// with `sums` their `[OB][3]` sums are written too.
///
/// # Safety
/// The CPU must support `V`'s instructions.
#[inline(always)]
pub(crate) unsafe fn weight_tile<T: Element, V: Vector<T>, const OB: usize>(
    grad: &WeightGrad<T>,
    (o0, ch, i): Tile,
    images: Range<usize>,
    state: &mut [T],
    sums: Option<&mut [T]>,
) {
    let positions = grad.positions;
    assert!(images.end <= grad.n && ch < grad.c && i < 3 && o0 + OB <= grad.o_padded);
    assert!(positions.is_multiple_of(V::LANES) && grad.x_plane >= positions + 2 * grad.wp + 2);
    assert!(grad.xp.len() >= grad.n * grad.c * grad.x_plane);
    assert!(grad.dyp.len() >= grad.n * grad.o_padded * positions);
    assert!(state.len() >= OB * 3 * V::LANES && sums.as_ref().is_none_or(|s| s.len() >= OB * 3));
    let mut acc = [[V::zero(); 3]; OB];
    // (loops, not `map`: closures do not inherit the caller's target features)
    for (k, taps) in acc.iter_mut().enumerate() {
        for (j, a) in taps.iter_mut().enumerate() {
            *a = V::load(state.as_ptr().add((k * 3 + j) * V::LANES));
        }
    }
    let x = grad
        .xp
        .as_ptr()
        .add((images.start * grad.c + ch) * grad.x_plane + i * grad.wp);
    let dy = grad
        .dyp
        .as_ptr()
        .add((images.start * grad.o_padded + o0) * positions);
    let strides = (grad.c * grad.x_plane, grad.o_padded * positions);
    acc = images_tile::<T, V, OB>(acc, (x, dy), strides, images.len(), positions);
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

/// [`weight_tile`]'s sums over `images` images: `acc` plus the products
/// over `positions` (a multiple of the lanes) of the `OB` rows of `dy` (row
/// stride `positions`) with `x` shifted by 0, 1 and 2, the next image's
/// rows `strides` further on. One loop over (image, vector), with the
/// accumulators in and out by value: so they stay in registers (a loop
/// nest per image stored them at every image, a loop in the caller at
/// every step).
///
/// # Safety
/// The CPU must support `V`'s instructions; every image's `x` must cover
/// `positions + 2` elements and its `dy` `OB * positions`.
#[inline(always)]
unsafe fn images_tile<T: Element, V: Vector<T>, const OB: usize>(
    mut acc: [[V; 3]; OB],
    (mut x, mut dy): (*const T, *const T),
    (x_stride, dy_stride): (usize, usize),
    images: usize,
    positions: usize,
) -> [[V; 3]; OB] {
    let vectors = positions / V::LANES;
    let (x_skip, dy_skip) = (x_stride - positions, dy_stride - positions);
    let mut left = vectors;
    for _ in 0..images * vectors {
        let xs = [V::load(x), V::load(x.add(1)), V::load(x.add(2))];
        for (k, taps) in acc.iter_mut().enumerate() {
            let dv = V::load(dy.add(k * positions));
            for (a, &xv) in taps.iter_mut().zip(&xs) {
                *a = a.mul_add(dv, xv);
            }
        }
        x = x.wrapping_add(V::LANES);
        dy = dy.wrapping_add(V::LANES);
        left -= 1;
        if left == 0 {
            x = x.wrapping_add(x_skip);
            dy = dy.wrapping_add(dy_skip);
            left = vectors;
        }
    }
    acc
}

/// Bytes of one output block's `dy` per chunk of images: about half of a
/// core's L1 data cache, so that the block stays there while every input
/// channel and kernel row of it runs over the chunk (read from the L2 cache
/// once per tile instead, it made the kernel wait on the L2 cache).
const CHUNK_BYTES: usize = 24 << 10;

impl<T: Element> WeightGrad<T> {
    /// Loads `x (n, c, h, w)` and `dy (n, o, h, w)` with `ob` output channels
    /// per kernel block and vectors of `lanes`, over images in parallel when
    /// `parallel`.
    pub(crate) fn load(
        &mut self,
        (x, dy): (&[T], &[T]),
        g: &ConvGeom,
        (ob, lanes): (usize, usize),
        parallel: bool,
    ) {
        let (n, c, h, w, o) = (g.n, g.c, g.h, g.w, g.o);
        let wp = w + 2;
        self.positions = (h * wp).div_ceil(lanes) * lanes;
        self.o_padded = o.div_ceil(ob) * ob;
        self.x_plane = (h + 2) * wp + lanes + 2;
        (self.n, self.c, self.o, self.wp) = (n, c, o, wp);
        let (x_image, dy_image) = (c * self.x_plane, self.o_padded * self.positions);
        let (positions, x_plane) = (self.positions, self.x_plane);
        let (x, dy) = (&x[..n * c * h * w], &dy[..n * o * h * w]);
        // fresh buffers, written image by image (zeroed in cache first)
        self.xp = zeroed_pieces(n * x_image, x_image, parallel, |img, dst| {
            let src = &x[img * c * h * w..][..c * h * w];
            fill_planes(dst, src, c, (h, w), x_plane, (1, 1));
        });
        self.dyp = zeroed_pieces(n * dy_image, dy_image, parallel, |img, dst| {
            let src = &dy[img * o * h * w..][..o * h * w];
            fill_planes(dst, src, o, (h, w), positions, (0, 0));
        });
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
        let tiles: Vec<Tile> = (0..self.o_padded / ob)
            .flat_map(|b| (0..c).flat_map(move |ch| (0..3).map(move |i| (b * ob, ch, i))))
            .collect();
        let (state_len, sum_len) = (ob * 3 * lanes, ob * 3);
        let mut states = vec![T::zero(); tiles.len() * state_len];
        let mut sums = vec![T::zero(); tiles.len() * sum_len];
        let block_bytes = ob * self.positions * std::mem::size_of::<T>();
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
            for (k, row) in taps.chunks(3).enumerate() {
                let oc = o0 + k;
                if oc < self.o {
                    let dst = &mut dw[(oc * c + ch) * 9 + i * 3..][..3];
                    dst.iter_mut().zip(row).for_each(|(d, &v)| *d = *d + v);
                }
            }
        }
    }
}

/// Copies planes of `h x w` into `dst`'s planes of `plane` elements with
/// row stride `w + 2`, starting at row `top` and column `left` (the rest is
/// left as it is: zero).
fn fill_planes<T: Element>(
    dst: &mut [T],
    x: &[T],
    planes: usize,
    (h, w): (usize, usize),
    plane: usize,
    (top, left): (usize, usize),
) {
    let wp = w + 2;
    for (ch, src) in x.chunks(h * w).take(planes).enumerate() {
        for (r, row) in src.chunks(w).enumerate() {
            dst[ch * plane + (r + top) * wp + left..][..w].copy_from_slice(row);
        }
    }
}
