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
//! over the whole batch. Images go in chunks that fit in the L2 cache, every
//! tile running over one chunk before the next is read (a tile streaming
//! the whole batch would read it from memory once per tile); a tile's
//! vector accumulators are kept between chunks, so each sum runs in the same
//! order as over the whole batch at once. Tiles are independent, so the
//! result does not depend on how they are spread over threads.

use super::simd::{horizontal_sum, Vector};
use crate::Element;
use rayon::prelude::*;
use std::ops::Range;

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

/// A tile kernel compiled for one instruction set, with its shape: `ob x
/// cb` channels, `lanes` elements per vector.
#[derive(Clone, Copy)]
pub(crate) struct TileKernel<T> {
    pub ob: usize,
    pub cb: usize,
    pub lanes: usize,
    pub run: TileFn<T>,
}

/// Adds images `images` to the accumulators of output channels `o0..`
/// against input channels `c0..` kept in `state` (`ob cb` vectors), and with
/// `sums` writes their sums there (`[ob][cb]`, row-major; channels past `o`
/// or `c` repeat the last one and are dropped by the caller).
pub(crate) type TileFn<T> =
    unsafe fn(&Operands<T>, usize, usize, Range<usize>, &mut [T], Option<&mut [T]>);

/// The `[OB][CB]` dot products of output channels `o0..o0 + OB` of `dy`
/// with input channels `c0..c0 + CB` of `x` over `images` and all
/// positions, added to the vector accumulators in `state` (see [`TileFn`]).
///
/// # Safety
/// The CPU must support `V`'s instructions.
#[inline(always)]
pub(crate) unsafe fn tile<T: Element, V: Vector<T>, const OB: usize, const CB: usize>(
    ops: &Operands<T>,
    (o0, c0): (usize, usize),
    images: Range<usize>,
    state: &mut [T],
    sums: Option<&mut [T]>,
) {
    let p = ops.positions;
    assert!(ops.x.len() >= ops.n * ops.c * p && ops.dy.len() >= ops.n * ops.o * p);
    assert!(o0 < ops.o && c0 < ops.c && images.end <= ops.n);
    assert!(state.len() >= OB * CB * V::LANES && sums.as_ref().is_none_or(|s| s.len() >= OB * CB));
    let os: [usize; OB] = std::array::from_fn(|k| (o0 + k).min(ops.o - 1));
    let cs: [usize; CB] = std::array::from_fn(|j| (c0 + j).min(ops.c - 1));
    let slot = |k: usize, j: usize| (k * CB + j) * V::LANES;
    let mut acc = [[V::zero(); CB]; OB];
    // (loops, not `map`: closures do not inherit the caller's target features)
    for (k, row) in acc.iter_mut().enumerate() {
        for (j, a) in row.iter_mut().enumerate() {
            *a = V::load(state.as_ptr().add(slot(k, j)));
        }
    }
    for img in images {
        let dy = ops.dy.as_ptr().add(img * ops.o * p);
        let x = ops.x.as_ptr().add(img * ops.c * p);
        acc = image_tile::<T, V, OB, CB>(
            acc,
            os.map(|oc| dy.add(oc * p)),
            cs.map(|ch| x.add(ch * p)),
            p,
        );
    }
    for (k, row) in acc.iter().enumerate() {
        for (j, a) in row.iter().enumerate() {
            a.store(state.as_mut_ptr().add(slot(k, j)));
        }
    }
    if let Some(sums) = sums {
        for (k, row) in acc.iter().enumerate() {
            for (j, &a) in row.iter().enumerate() {
                sums[k * CB + j] = horizontal_sum(a);
            }
        }
    }
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

/// Bytes of one input-channel block's rows per chunk of images: about half
/// of a core's L1 data cache.
const CHUNK_BYTES: usize = 24 << 10;

/// `dw (o, c) = sum_{n, p} dy[n, o, p] x[n, c, p]` with `kernel`, over
/// threads when `parallel`.
pub(crate) fn weight_grad<T: Element>(
    ops: &Operands<T>,
    kernel: TileKernel<T>,
    parallel: bool,
) -> Vec<T> {
    let (o, c) = (ops.o, ops.c);
    let mut dw = vec![T::zero(); o * c];
    if o == 0 || c == 0 {
        return dw;
    }
    let TileKernel { ob, cb, lanes, run } = kernel;
    // input-channel blocks outermost: consecutive tiles read the same rows
    // of `x` (in the L1 cache) against the rows of `dy` streamed through
    let tiles: Vec<(usize, usize)> = (0..c.div_ceil(cb))
        .flat_map(|j| (0..o.div_ceil(ob)).map(move |b| (b * ob, j * cb)))
        .collect();
    let mut states = vec![T::zero(); tiles.len() * ob * cb * lanes];
    let mut sums = vec![T::zero(); tiles.len() * ob * cb];
    let image_bytes = cb * ops.positions * std::mem::size_of::<T>();
    let chunk = (CHUNK_BYTES / image_bytes.max(1)).max(1);
    for start in (0..ops.n).step_by(chunk) {
        let images = start..ops.n.min(start + chunk);
        let last = images.end == ops.n;
        let step = |(tile, (state, sum)): (usize, (&mut [T], &mut [T]))| {
            // SAFETY: `pointwise_weight_kernel` returned a kernel whose
            // instructions this CPU has; `state` and `sum` have its sizes.
            unsafe {
                run(
                    ops,
                    tiles[tile].0,
                    tiles[tile].1,
                    images.clone(),
                    state,
                    last.then_some(sum),
                )
            }
        };
        let (state_len, sum_len) = (ob * cb * lanes, ob * cb);
        if parallel {
            states
                .par_chunks_mut(state_len)
                .zip(sums.par_chunks_mut(sum_len))
                .enumerate()
                .for_each(step);
        } else {
            states
                .chunks_mut(state_len)
                .zip(sums.chunks_mut(sum_len))
                .enumerate()
                .for_each(step);
        }
    }
    for (&(o0, c0), tile) in tiles.iter().zip(sums.chunks(ob * cb)) {
        for (k, row) in tile.chunks(cb).enumerate().take(o - o0) {
            let dst = &mut dw[(o0 + k) * c + c0..];
            for (d, &v) in dst.iter_mut().zip(row).take(c - c0) {
                *d = v;
            }
        }
    }
    dw
}
