//! The weight gradient of a 3x3 same convolution, reduced over the whole
//! batch in registers.

use crate::conv::simd::{horizontal_sum, Vector};
use crate::conv::ConvGeom;
use crate::Element;
use rayon::prelude::*;

/// Padded operands of the direct weight gradient; the buffers are reused
/// when it is loaded again.
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

/// A weight-gradient kernel: `[OB][3]` sums for output block `o0`, input
/// channel `ch` and kernel row `i`.
pub(crate) type WeightFn<T> = unsafe fn(&WeightGrad<T>, usize, usize, usize) -> Vec<T>;

/// Accumulates the weight gradient of output channels `o0..o0 + OB` against
/// input channel `ch` for kernel row `i` over the whole batch:
/// `acc[k][j] += dy[n, o0 + k, p] * x[n, ch, p + i * (w + 2) + j]` over flat
/// positions `p` of the padded grid, where `dy` is zero in the padding
/// columns. Returns the `[OB][3]` sums.
///
/// # Safety
/// The CPU must support `V`'s instructions.
#[inline(always)]
pub(crate) unsafe fn weight_tile<T: Element, V: Vector<T>, const OB: usize>(
    grad: &WeightGrad<T>,
    o0: usize,
    ch: usize,
    i: usize,
) -> [[T; 3]; OB] {
    let mut acc = [[V::zero(); 3]; OB];
    for img in 0..grad.n {
        let xc = &grad.xp[(img * grad.c + ch) * grad.x_plane + i * grad.wp..];
        let dy = &grad.dyp[(img * grad.o_padded + o0) * grad.positions..][..OB * grad.positions];
        assert!(xc.len() >= grad.positions + 2);
        acc = image_tile::<T, V, OB>(acc, xc.as_ptr(), dy.as_ptr(), grad.positions);
    }
    // (loops, not `map`: closures do not inherit the caller's target features)
    let mut sums = [[T::zero(); 3]; OB];
    for (taps, out) in acc.iter().zip(sums.iter_mut()) {
        for (&v, o) in taps.iter().zip(out.iter_mut()) {
            *o = horizontal_sum(v);
        }
    }
    sums
}

/// One image's part of [`weight_tile`]: `acc` plus the products over
/// `positions` (a multiple of the lanes) of the `OB` rows of `dy` (row
/// stride `positions`) with `x` shifted by 0, 1 and 2. The accumulators
/// go in and out by value so that they stay in registers.
///
/// # Safety
/// The CPU must support `V`'s instructions; `x` must cover `positions + 2`
/// elements and `dy` `OB * positions`.
#[inline(always)]
unsafe fn image_tile<T: Element, V: Vector<T>, const OB: usize>(
    mut acc: [[V; 3]; OB],
    x: *const T,
    dy: *const T,
    positions: usize,
) -> [[V; 3]; OB] {
    for p in (0..positions).step_by(V::LANES) {
        let xs: [V; 3] = std::array::from_fn(|j| V::load(x.add(p + j)));
        for (k, taps) in acc.iter_mut().enumerate() {
            let dv = V::load(dy.add(k * positions + p));
            for (a, &x) in taps.iter_mut().zip(&xs) {
                *a = a.mul_add(dv, x);
            }
        }
    }
    acc
}

impl<T: Element> WeightGrad<T> {
    /// Loads `x (n, c, h, w)` and `dy (n, o, h, w)` with `ob` output channels
    /// per kernel block and vectors of `lanes`.
    pub(crate) fn load(&mut self, x: &[T], dy: &[T], g: &ConvGeom, ob: usize, lanes: usize) {
        let (n, c, h, w, o) = (g.n, g.c, g.h, g.w, g.o);
        let wp = w + 2;
        self.positions = (h * wp).div_ceil(lanes) * lanes;
        self.o_padded = o.div_ceil(ob) * ob;
        self.x_plane = (h + 2) * wp + lanes + 2;
        (self.n, self.c, self.o, self.wp) = (n, c, o, wp);
        self.xp.clear();
        self.xp.resize(n * c * self.x_plane, T::zero());
        fill_planes(&mut self.xp, x, n * c, (h, w), self.x_plane, (1, 1));
        self.dyp.clear();
        self.dyp
            .resize(n * self.o_padded * self.positions, T::zero());
        for (img, planes) in dy.chunks(o * h * w).take(n).enumerate() {
            let dst = &mut self.dyp[img * self.o_padded * self.positions..];
            fill_planes(dst, planes, o, (h, w), self.positions, (0, 0));
        }
    }

    /// Adds `dw[o, c, i, j] = sum_{n, r, q} dy[n, o, r, q] x[n, c, r + i - 1,
    /// q + j - 1]` to `dw (o, c, 3, 3)`, running `kernel` (blocks of `ob`
    /// output channels) on every (block, input channel, kernel row), in
    /// parallel when `parallel`.
    pub(crate) fn accumulate(
        &self,
        dw: &mut [T],
        (ob, kernel): (usize, WeightFn<T>),
        parallel: bool,
    ) {
        let c = self.c;
        let tasks: Vec<(usize, usize, usize)> = (0..self.o_padded / ob)
            .flat_map(|b| (0..c).flat_map(move |ch| (0..3).map(move |i| (b, ch, i))))
            .collect();
        let run = |&(b, ch, i): &(usize, usize, usize)| {
            // SAFETY: `weight_kernel` returned a kernel whose instructions this CPU has.
            (b, ch, i, unsafe { kernel(self, b * ob, ch, i) })
        };
        let sums: Vec<(usize, usize, usize, Vec<T>)> = if parallel {
            tasks.par_iter().map(run).collect()
        } else {
            tasks.iter().map(run).collect()
        };
        for (b, ch, i, taps) in sums {
            for (k, row) in taps.chunks(3).enumerate() {
                let oc = b * ob + k;
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
