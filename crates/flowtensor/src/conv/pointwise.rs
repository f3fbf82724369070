//! The weight gradient of a 1x1 convolution (stride 1, no padding, one
//! group): `dw[o, c] = sum_{n, p} dy[n, o, p] x[n, c, p]`, dot products of
//! length `h w` summed over the batch.
//!
//! Both operands have the summed axis (positions) contiguous, the layout a
//! packing GEMM handles worst: matrixmultiply gathers both with a stride
//! per element, and its packing took longer than its products. Here a
//! register tile of `OB` output by `CB` input channels reads vectors of
//! consecutive positions straight from `dy` and `x` (the last vector of a
//! row masked), `OB + CB` loads per `OB x CB` multiply-adds, and is reduced
//! over the whole batch in registers. Tiles are independent, so the result
//! does not depend on how they are spread over threads.

use super::simd::{horizontal_sum, Vector};
use crate::Element;
use rayon::prelude::*;

/// The operands of one pointwise weight gradient.
pub(crate) struct Operands<'a, T> {
    /// `(n, c, positions)`.
    pub x: &'a [T],
    /// `(n, o, positions)`.
    pub dy: &'a [T],
    pub n: usize,
    pub c: usize,
    pub o: usize,
    pub positions: usize,
}

/// A tile kernel compiled for one instruction set: the `[OB][CB]` sums of
/// output channels `o0..` against input channels `c0..`, row-major in a
/// `Vec` (channels past `o` or `c` repeat the last one; their sums are
/// dropped by the caller).
pub(crate) type TileFn<T> = unsafe fn(&Operands<T>, usize, usize) -> Vec<T>;

/// The `[OB][CB]` dot products of output channels `o0..o0 + OB` of `dy`
/// with input channels `c0..c0 + CB` of `x` over all images and positions.
///
/// # Safety
/// The CPU must support `V`'s instructions.
#[inline(always)]
pub(crate) unsafe fn tile<T: Element, V: Vector<T>, const OB: usize, const CB: usize>(
    ops: &Operands<T>,
    o0: usize,
    c0: usize,
) -> [[T; CB]; OB] {
    let p = ops.positions;
    assert!(ops.x.len() >= ops.n * ops.c * p && ops.dy.len() >= ops.n * ops.o * p);
    assert!(o0 < ops.o && c0 < ops.c);
    let os: [usize; OB] = std::array::from_fn(|k| (o0 + k).min(ops.o - 1));
    let cs: [usize; CB] = std::array::from_fn(|j| (c0 + j).min(ops.c - 1));
    let mut acc = [[V::zero(); CB]; OB];
    for img in 0..ops.n {
        let dy = ops.dy.as_ptr().add(img * ops.o * p);
        let x = ops.x.as_ptr().add(img * ops.c * p);
        acc = image_tile::<T, V, OB, CB>(
            acc,
            os.map(|oc| dy.add(oc * p)),
            cs.map(|ch| x.add(ch * p)),
            p,
        );
    }
    // (loops, not `map`: closures do not inherit the caller's target features)
    let mut sums = [[T::zero(); CB]; OB];
    for (row, out) in acc.iter().zip(sums.iter_mut()) {
        for (&v, o) in row.iter().zip(out.iter_mut()) {
            *o = horizontal_sum(v);
        }
    }
    sums
}

/// One image's part of [`tile`]: `acc[k][j] += dy_k . x_j` over `positions`
/// elements of each row, the last vector masked. The accumulators go in and
/// out by value so that they stay in registers.
///
/// # Safety
/// The CPU must support `V`'s instructions; every row must cover `positions`
/// elements.
#[inline(always)]
unsafe fn image_tile<T: Element, V: Vector<T>, const OB: usize, const CB: usize>(
    mut acc: [[V; CB]; OB],
    dy: [*const T; OB],
    x: [*const T; CB],
    positions: usize,
) -> [[V; CB]; OB] {
    let full = positions / V::LANES * V::LANES;
    for q in (0..full).step_by(V::LANES) {
        step(&mut acc, &dy, &x, q, V::LANES);
    }
    if full < positions {
        step(&mut acc, &dy, &x, full, positions - full);
    }
    acc
}

/// `acc[k][j] += dy_k[q..] * x_j[q..]`: one vector of every row, of which
/// the first `count` elements are read (all of it when `count` is the lane
/// count).
#[inline(always)]
unsafe fn step<T: Element, V: Vector<T>, const OB: usize, const CB: usize>(
    acc: &mut [[V; CB]; OB],
    dy: &[*const T; OB],
    x: &[*const T; CB],
    q: usize,
    count: usize,
) {
    let mut xs = [V::zero(); CB];
    for (xv, &row) in xs.iter_mut().zip(x) {
        *xv = load::<T, V>(row.add(q), count);
    }
    for (acc_k, &row) in acc.iter_mut().zip(dy) {
        let dv = load::<T, V>(row.add(q), count);
        for (a, &xv) in acc_k.iter_mut().zip(&xs) {
            *a = a.mul_add(dv, xv);
        }
    }
}

/// The first `count` elements at `p` (a whole vector when `count` is the lane count).
#[inline(always)]
unsafe fn load<T: Element, V: Vector<T>>(p: *const T, count: usize) -> V {
    if count == V::LANES {
        V::load(p)
    } else {
        V::load_first(p, count)
    }
}

/// `dw (o, c) = sum_{n, p} dy[n, o, p] x[n, c, p]` with `kernel` (tiles of
/// `ob x cb`), over threads when `parallel`.
pub(crate) fn weight_grad<T: Element>(
    ops: &Operands<T>,
    (ob, cb, kernel): (usize, usize, TileFn<T>),
    parallel: bool,
) -> Vec<T> {
    let (o, c) = (ops.o, ops.c);
    let mut dw = vec![T::zero(); o * c];
    if o == 0 || c == 0 {
        return dw;
    }
    let tiles: Vec<(usize, usize)> = (0..o.div_ceil(ob))
        .flat_map(|b| (0..c.div_ceil(cb)).map(move |j| (b * ob, j * cb)))
        .collect();
    // SAFETY: `pointwise_weight_kernel` returned a kernel whose instructions this CPU has.
    let run = |&(o0, c0): &(usize, usize)| (o0, c0, unsafe { kernel(ops, o0, c0) });
    let sums: Vec<(usize, usize, Vec<T>)> = if parallel {
        tiles.par_iter().map(run).collect()
    } else {
        tiles.iter().map(run).collect()
    };
    for (o0, c0, tile) in sums {
        for (k, row) in tile.chunks(cb).enumerate().take(o - o0) {
            let dst = &mut dw[(o0 + k) * c + c0..];
            for (d, &v) in dst.iter_mut().zip(row).take(c - c0) {
                *d = v;
            }
        }
    }
    dw
}
