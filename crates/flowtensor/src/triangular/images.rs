//! The quadrant solve with one image per lane: images in groups of a
//! vector's lanes, laid out `[pixel][channel][lane]`, each group swept in
//! raster order, groups in parallel. Every lane does useful work when the
//! batch fills the groups.

use super::kernel::{layout_span, PixelFn, Prepared};
use crate::cpu::written_pieces;
use crate::Layout;
use std::mem::MaybeUninit;

/// The vector-pixels each thread sweeps: `ceil(groups / threads) h w`.
pub(super) fn cost(n: usize, (h, w): (usize, usize), lanes: usize, threads: usize) -> usize {
    n.div_ceil(lanes).div_ceil(threads.max(1)) * h * w
}

/// Solves every image of `y` (strided `layout`, shape `(n, c, h, w)`) into a
/// contiguous `x`.
pub(super) fn solve(
    y: &[f64],
    layout: &Layout,
    k: &Prepared,
    (lanes, kernel_fn): (usize, PixelFn),
) -> Vec<f64> {
    let s = layout.shape();
    let (n, img) = (s[0], s[1] * s[2] * s[3]);
    let group = Group {
        k,
        kernel_fn,
        lanes,
        size: (s[2], s[3]),
    };
    written_pieces(n * img, lanes * img, n > lanes, |g, out| {
        let mut xg = group.gather(y, layout, g * lanes);
        group.solve(&mut xg);
        group.scatter(&xg, out);
    })
}

/// The geometry and kernel of one lane group's solve.
struct Group<'a> {
    k: &'a Prepared,
    kernel_fn: PixelFn,
    lanes: usize,
    size: (usize, usize),
}

impl Group<'_> {
    /// Images `first..first + lanes` of `y` (strided) as `[p][cp][lane]`;
    /// lanes past the batch repeat the first image (they are solved and
    /// dropped) and padded channels are zero.
    fn gather(&self, y: &[f64], layout: &Layout, first: usize) -> Vec<f64> {
        match self.lanes {
            8 => self.gather_lanes::<8>(y, layout, first),
            4 => self.gather_lanes::<4>(y, layout, first),
            _ => self.gather_lanes::<1>(y, layout, first),
        }
    }

    /// [`Self::gather`] for `L` lanes: the lanes innermost, so each write
    /// fills a vector from the images' rows read side by side.
    fn gather_lanes<const L: usize>(&self, y: &[f64], layout: &Layout, first: usize) -> Vec<f64> {
        let (s, st) = (layout.shape(), layout.strides());
        let ((h, w), c, cp) = (self.size, self.k.c, self.k.cp);
        let (lowest, highest) = layout_span(layout);
        assert!(
            lowest >= 0 && highest < y.len() as isize && first < s[0] && self.lanes == L,
            "quadrant_solve: layout outside the storage"
        );
        let len = h * w * cp * L;
        let mut yg: Vec<f64> = Vec::with_capacity(len);
        let images: [*const f64; L] = std::array::from_fn(|lane| {
            let image = if first + lane < s[0] {
                first + lane
            } else {
                first
            };
            // SAFETY: the image's offset lies inside `y` (checked above)
            unsafe {
                y.as_ptr()
                    .offset(layout.offset() as isize + image as isize * st[0])
            }
        });
        let dst = yg.as_mut_ptr();
        for ch in 0..cp {
            for i in 0..h {
                let row = ch as isize * st[1] + i as isize * st[2];
                for j in 0..w {
                    let at = row + j as isize * st[3];
                    // SAFETY: `(p * cp + ch) * L + L <= len`; the read lies
                    // in the layout, inside `y`
                    unsafe {
                        let out = dst.add(((i * w + j) * cp + ch) * L);
                        for (lane, image) in images.iter().enumerate() {
                            *out.add(lane) = if ch < c { *image.offset(at) } else { 0.0 };
                        }
                    }
                }
            }
        }
        // SAFETY: the loops wrote every `(pixel, channel, lane)`
        unsafe { yg.set_len(len) };
        yg
    }

    /// The group's images, contiguous `(lanes, c, h, w)` (fewer in the last
    /// group), from `[p][cp][lane]`; writes every element of `out`.
    fn scatter(&self, xg: &[f64], out: &mut [MaybeUninit<f64>]) {
        let ((h, w), c, cp, l) = (self.size, self.k.c, self.k.cp, self.lanes);
        let plane = h * w;
        let images = out.len() / (c * plane);
        assert!(xg.len() >= plane * cp * l && images <= l && out.len() == images * c * plane);
        let mut copy = |lanes: usize| {
            for ch in 0..c {
                for p in 0..plane {
                    // SAFETY: `(p * cp + ch) * l + lane < plane * cp * l <=
                    // xg.len()` and `(lane * c + ch) * plane + p < out.len()`
                    unsafe {
                        let src = xg.as_ptr().add((p * cp + ch) * l);
                        let dst = out.as_mut_ptr().add(ch * plane + p);
                        for lane in 0..lanes {
                            *dst.add(lane * c * plane) = MaybeUninit::new(*src.add(lane));
                        }
                    }
                }
            }
        };
        // constant lane counts for the full groups, so the copy unrolls
        match images {
            8 => copy(8),
            4 => copy(4),
            n => copy(n),
        }
    }

    /// Solves the group in place in raster order: `xg` holds the
    /// right-hand side and becomes `x`, both `[p][cp][lane]` (a pixel's
    /// right-hand side is read before its solution is written over it, and
    /// only solved pixels are read as neighbours).
    fn solve(&self, xg: &mut [f64]) {
        let ((h, w), pixel) = (self.size, self.k.cp * self.lanes);
        assert!(xg.len() >= h * w * pixel);
        let xp = xg.as_mut_ptr();
        for i in 0..h {
            for j in 0..w {
                // up-left, up, left, where inside the image
                let mut list = [(0, std::ptr::null()); 3];
                let mut count = 0;
                for (t, (di, dj)) in [(1, 1), (1, 0), (0, 1)].into_iter().enumerate() {
                    if i >= di && j >= dj {
                        // SAFETY: an earlier pixel of the group
                        list[count] = (t, unsafe { xp.add(((i - di) * w + j - dj) * pixel) }
                            as *const f64);
                        count += 1;
                    }
                }
                // SAFETY: the kernel matches this CPU; the pixel's solution
                // goes over its own right-hand side, `cp` channels of
                // `lanes` at stride `lanes`
                unsafe {
                    let at = xp.add((i * w + j) * pixel);
                    (self.kernel_fn)(self.k, at, &list[..count], at, self.lanes)
                };
            }
        }
    }
}
