//! The vector kernel of the quadrant solve: one register per channel holds
//! a lane's worth of independent pixels (of different images, or of one
//! anti-diagonal of an image), so every multiply-add of the substitution,
//! the triangular centre included, runs on all lanes at once.
//!
//! The channels are padded to `cp`, a multiple of the register block `ob`,
//! and solved `ob` at a time in registers: the neighbours' taps, the
//! centre's columns of earlier blocks, then forward substitution inside the
//! block. Padded channels have zero taps and a unit diagonal, so they solve
//! to zero and are never read back.

#[cfg(target_arch = "x86_64")]
use crate::conv::simd::{isa, F64x4, F64x8, Isa};
use crate::conv::simd::{Scalar, Vector};
use crate::Layout;

/// An upper-left-quadrant kernel `(c, c, 3, 3)` rearranged for the lane
/// kernel, negated so that every update is one multiply-add.
pub(super) struct Prepared {
    pub(super) c: usize,
    /// Channels padded to a multiple of `ob`.
    pub(super) cp: usize,
    /// Channels solved together in registers.
    pub(super) ob: usize,
    /// Minus the taps at `(-1, -1), (-1, 0), (0, -1)`, `[tap][i][o]`,
    /// `cp x cp` each.
    taps: Vec<f64>,
    /// Minus the strictly lower centre, `[i][o]` for `i < o`.
    centre: Vec<f64>,
    /// The reciprocals of the centre's diagonal, one in padded channels.
    reciprocal: Vec<f64>,
}

/// The register block for `c` channels: the one of 8, 6, 4, 2, 1 with the
/// least `cp (1 + 1 / ob)` (padded work plus the reloads of the
/// neighbours per block; ties to the larger block).
fn block_rows(c: usize) -> usize {
    let cost = |ob: usize| {
        let cp = c.div_ceil(ob) * ob;
        (cp * (ob + 1)) as f64 / ob as f64
    };
    [8, 6, 4, 2, 1]
        .into_iter()
        .min_by(|&a, &b| cost(a).total_cmp(&cost(b)))
        .unwrap_or(1)
}

impl Prepared {
    pub(super) fn new(kernel: &[f64], c: usize) -> Self {
        let ob = block_rows(c);
        let cp = c.div_ceil(ob) * ob;
        let mut taps = vec![0.0; 3 * cp * cp];
        let mut centre = vec![0.0; cp * cp];
        let mut reciprocal = vec![1.0; cp];
        for o in 0..c {
            for i in 0..c {
                let k = |a: usize, b: usize| kernel[((o * c + i) * 3 + a) * 3 + b];
                for (t, (a, b)) in [(0, 0), (0, 1), (1, 0)].into_iter().enumerate() {
                    taps[(t * cp + i) * cp + o] = -k(a, b);
                }
                if i < o {
                    centre[i * cp + o] = -k(1, 1);
                }
            }
            reciprocal[o] = 1.0 / kernel[((o * c + o) * 3 + 1) * 3 + 1];
        }
        Prepared {
            c,
            cp,
            ob,
            taps,
            centre,
            reciprocal,
        }
    }
}

/// Solves one vector of pixels, one per lane, for all channels: `y` their
/// right-hand side, `neighbours` the `(tap, solution)` pairs of the taps
/// whose neighbours exist, `out` where the solution goes, channel `ch` of
/// each at `ch * stride`. `out` may be `y` itself (each block of channels is
/// read before it is written; `out` is read back for the centre).
pub(super) type PixelFn = unsafe fn(&Prepared, *const f64, &[(usize, *const f64)], *mut f64, usize);

/// # Safety
/// `V`'s instructions must be available; the pointers must cover `cp`
/// channels of `V::LANES` elements at `stride`.
#[inline(always)]
unsafe fn pixel<V: Vector<f64>, const OB: usize>(
    k: &Prepared,
    y: *const f64,
    neighbours: &[(usize, *const f64)],
    out: *mut f64,
    stride: usize,
) {
    let cp = k.cp;
    let mut b0 = 0;
    while b0 < cp {
        let mut acc = [V::zero(); OB];
        for (r, a) in acc.iter_mut().enumerate() {
            *a = V::load(y.add((b0 + r) * stride));
        }
        for &(t, xq) in neighbours {
            let taps = k.taps.as_ptr().add(t * cp * cp + b0);
            for i in 0..k.c {
                let v = V::load(xq.add(i * stride));
                let row = taps.add(i * cp);
                for (r, a) in acc.iter_mut().enumerate() {
                    *a = a.mul_add(V::splat(*row.add(r)), v);
                }
            }
        }
        let centre = k.centre.as_ptr().add(b0);
        for i in 0..b0 {
            let v = V::load(out.add(i * stride));
            let row = centre.add(i * cp);
            for (r, a) in acc.iter_mut().enumerate() {
                *a = a.mul_add(V::splat(*row.add(r)), v);
            }
        }
        for r in 0..OB {
            // a multiply: a division's latency would be on the chain
            let solved = V::zero().mul_add(acc[r], V::splat(k.reciprocal[b0 + r]));
            solved.store(out.add((b0 + r) * stride));
            let row = centre.add((b0 + r) * cp);
            for (r2, a) in acc.iter_mut().enumerate().skip(r + 1) {
                *a = a.mul_add(V::splat(*row.add(r2)), solved);
            }
        }
        b0 += OB;
    }
}

/// The pixel kernel for this CPU and `ob`, with its lane count.
pub(super) fn pixel_kernel(ob: usize) -> (usize, PixelFn) {
    macro_rules! by_block {
        ($f:ident) => {
            match ob {
                8 => $f::<8> as PixelFn,
                6 => $f::<6>,
                4 => $f::<4>,
                2 => $f::<2>,
                _ => $f::<1>,
            }
        };
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx2,fma")]
        unsafe fn avx512<const OB: usize>(
            k: &Prepared,
            y: *const f64,
            nb: &[(usize, *const f64)],
            out: *mut f64,
            stride: usize,
        ) {
            pixel::<F64x8, OB>(k, y, nb, out, stride)
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2<const OB: usize>(
            k: &Prepared,
            y: *const f64,
            nb: &[(usize, *const f64)],
            out: *mut f64,
            stride: usize,
        ) {
            pixel::<F64x4, OB>(k, y, nb, out, stride)
        }
        match isa() {
            Isa::Avx512 => return (8, by_block!(avx512)),
            Isa::Avx2 => return (4, by_block!(avx2)),
            Isa::Baseline => {}
        }
    }
    unsafe fn baseline<const OB: usize>(
        k: &Prepared,
        y: *const f64,
        nb: &[(usize, *const f64)],
        out: *mut f64,
        stride: usize,
    ) {
        pixel::<Scalar<f64>, OB>(k, y, nb, out, stride)
    }
    (1, by_block!(baseline))
}

/// The lowest and highest storage offsets of a layout's elements.
pub(super) fn layout_span(layout: &Layout) -> (isize, isize) {
    let mut span = (layout.offset() as isize, layout.offset() as isize);
    for (&d, &st) in layout.shape().iter().zip(layout.strides()) {
        let reach = (d.saturating_sub(1)) as isize * st;
        if reach < 0 {
            span.0 += reach;
        } else {
            span.1 += reach;
        }
    }
    span
}

#[cfg(test)]
mod tests {
    use super::block_rows;

    #[test]
    fn register_blocks_pad_little() {
        assert_eq!(block_rows(1), 1);
        assert_eq!(block_rows(3), 4);
        assert_eq!(block_rows(12), 6);
        assert_eq!(block_rows(48), 8);
        for c in 1..100 {
            let ob = block_rows(c);
            let padding = c.div_ceil(ob) * ob - c;
            assert!(padding <= c / 4 + 1, "c = {c}, ob = {ob}");
        }
    }
}
