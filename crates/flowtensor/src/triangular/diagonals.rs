//! The quadrant solve with the pixels of one anti-diagonal per vector, for
//! batches too small to fill the lanes with images: the pixels on
//! `i + j = d` depend only on the diagonals `d - 1` (up and left) and
//! `d - 2` (up-left), so consecutive rows of a diagonal are solved together.
//!
//! An image is laid out `[d][channel][slot]` with row `i` of diagonal `d`
//! at slot `i + 1` (slot 0, row -1, stays zero), so the lanes' neighbours
//! are contiguous: up-left and up at rows `i - 1` of `d - 2` and `d - 1`,
//! left at rows `i` of `d - 1`. Slots outside the image hold zero (pixels
//! left of the image, `j < 0`, solve to zero from zero neighbours) or
//! values that only other outside slots read (below or right of it).
//! Images run in parallel.

use super::kernel::{layout_span, PixelFn, Prepared};
use crate::cpu::written_pieces;
use crate::Layout;
use std::mem::MaybeUninit;

/// The rows `lo..=hi` of diagonal `d` inside an `h x w` image.
fn rows(d: usize, (h, w): (usize, usize)) -> (usize, usize) {
    (d.saturating_sub(w - 1), d.min(h - 1))
}

/// The vector-pixels each thread sweeps: `ceil(n / threads)` images of
/// `sum_d ceil(rows_d / lanes)`.
pub(super) fn cost(n: usize, (h, w): (usize, usize), lanes: usize, threads: usize) -> usize {
    let per_image: usize = (0..h + w - 1)
        .map(|d| {
            let (lo, hi) = rows(d, (h, w));
            (hi + 1 - lo).div_ceil(lanes)
        })
        .sum();
    n.div_ceil(threads.max(1)) * per_image
}

/// Solves every image of `y` (strided `layout`, shape `(n, c, h, w)`) into a
/// contiguous `x`.
pub(super) fn solve(
    y: &[f64],
    layout: &Layout,
    k: &Prepared,
    (lanes, kernel_fn): (usize, PixelFn),
) -> Vec<f64> {
    let (s, st) = (layout.shape(), layout.strides());
    let (n, c, h, w) = (s[0], s[1], s[2], s[3]);
    let (lowest, highest) = layout_span(layout);
    assert!(
        lowest >= 0 && highest < y.len() as isize,
        "quadrant_solve: layout outside the storage"
    );
    let (slots, cp) = (h + lanes, k.cp);
    let diagonal = cp * slots;
    written_pieces(n * c * h * w, c * h * w, n > 1, |b, out| {
        let base = layout.offset() as isize + b as isize * st[0];
        let at = |ch: usize, i: usize, j: usize| {
            (base + ch as isize * st[1] + i as isize * st[2] + j as isize * st[3]) as usize
        };
        let mut buf = vec![0.0; (h + w - 1) * diagonal];
        for ch in 0..c {
            for i in 0..h {
                for j in 0..w {
                    buf[(i + j) * diagonal + ch * slots + i + 1] = y[at(ch, i, j)];
                }
            }
        }
        let bp = buf.as_mut_ptr();
        for d in 0..h + w - 1 {
            let (lo, hi) = rows(d, (h, w));
            for i0 in (lo..=hi).step_by(lanes) {
                // SAFETY: slots `i0 + 1 .. i0 + 1 + lanes <= h + lanes` of
                // diagonals `d - 2 ..= d`, `cp` channels of `slots` each
                unsafe {
                    let mut list = [(0, std::ptr::null()); 3];
                    let mut count = 0;
                    let mut push = |t: usize, back: usize, slot: usize| {
                        if d >= back {
                            list[count] = (t, bp.add((d - back) * diagonal + slot) as *const f64);
                            count += 1;
                        }
                    };
                    push(0, 2, i0);
                    push(1, 1, i0);
                    push(2, 1, i0 + 1);
                    let here = bp.add(d * diagonal + i0 + 1);
                    kernel_fn(k, here, &list[..count], here, slots);
                }
            }
        }
        for ch in 0..c {
            for i in 0..h {
                for j in 0..w {
                    out[(ch * h + i) * w + j] =
                        MaybeUninit::new(buf[(i + j) * diagonal + ch * slots + i + 1]);
                }
            }
        }
    })
}
