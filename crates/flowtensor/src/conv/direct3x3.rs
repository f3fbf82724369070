//! Direct kernel for 3x3, stride-1, padding-1 convolutions (one group), the
//! shape flows use most, and its transpose (the same kernel on flipped,
//! transposed weights).
//!
//! Each image is zero-padded and stored as three column-shifted copies, so the
//! input of every tap for consecutive output positions is one contiguous run,
//! whatever the width. A register tile holds `OB` output channels by `NT`
//! vectors of consecutive output positions; for each input channel and tap
//! it loads `NT` vectors and broadcasts `OB` weights (packed as
//! `[block][c][tap][OB]`), `OB x NT` multiply-adds. The weight gradient is a
//! separate kernel reducing over the whole batch in registers. Kernels are
//! compiled for AVX-512, AVX2+FMA and baseline x86-64, and the best one the
//! CPU supports is picked at run time.

use super::geometry::ConvGeom;
#[cfg(target_arch = "x86_64")]
use super::simd::{F32x16, F32x8, F64x4, F64x8};
use super::simd::{Scalar, Vector};
use crate::cpu::PAR_THRESHOLD;
use crate::Element;
use rayon::prelude::*;

/// Everything one output-channel block of one image needs.
pub(crate) struct Block<'a, T> {
    /// Column-shifted copies of the zero-padded image, `(3, c, h + 2, w)`:
    /// copy `j` holds padded columns `j..j + w`; [`SLACK`] zeros follow.
    xs: &'a [T],
    /// This block's packed weights, `[c][tap][ob]`.
    wb: &'a [T],
    c: usize,
    h: usize,
    w: usize,
    /// Valid output channels in this block (`<= OB`).
    valid: usize,
}

/// Zeros after the shifted copies, so the last tile may read past the end.
const SLACK: usize = 256;

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

/// All tiles of one block (`out` is its `(valid, h, w)` output).
///
/// # Safety
/// The CPU must support `V`'s instructions.
#[inline(always)]
unsafe fn block<T: Element, V: Vector<T>, const OB: usize, const NT: usize>(
    blk: &Block<T>,
    out: &mut [T],
) {
    let hw = blk.h * blk.w;
    let mut lanes = [T::zero(); 64];
    for p0 in (0..hw).step_by(NT * V::LANES) {
        let acc = tile::<T, V, OB, NT>(blk, p0);
        for (o, acc_o) in acc.iter().enumerate().take(blk.valid) {
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
}

/// Accumulates the weight gradient of output channels `o0..o0 + OB` against
/// input channel `ch` for kernel row `i` over the whole batch:
/// `acc[k][j] += dy[n, o0 + k, p] * x[n, ch, p + i * (w + 2) + j]` over flat
/// positions `p` of the padded grid, where `dy` is zero in the padding
/// columns. Returns the `[OB][3]` sums.
///
/// # Safety
/// The CPU must support `V`'s instructions.
#[inline(always)]
unsafe fn weight_tile<T: Element, V: Vector<T>, const OB: usize>(
    grad: &WeightGrad<T>,
    o0: usize,
    ch: usize,
    i: usize,
) -> [[T; 3]; OB] {
    let mut acc = [[V::zero(); 3]; OB];
    for img in 0..grad.n {
        let xc = &grad.xp[(img * grad.c + ch) * grad.x_plane + i * grad.wp..];
        let dy = &grad.dyp[(img * grad.o_padded + o0) * grad.positions..][..OB * grad.positions];
        for p in (0..grad.positions).step_by(V::LANES) {
            let row = &xc[p..][..V::LANES + 2];
            let xs: [V; 3] = std::array::from_fn(|j| V::load(row.as_ptr().add(j)));
            for (k, taps) in acc.iter_mut().enumerate() {
                let dv = V::load(dy.as_ptr().add(k * grad.positions + p));
                for (a, &x) in taps.iter_mut().zip(&xs) {
                    *a = a.mul_add(dv, x);
                }
            }
        }
    }
    let mut lanes = [T::zero(); 64];
    acc.map(|taps| {
        taps.map(|v| {
            v.store(lanes.as_mut_ptr());
            lanes[..V::LANES].iter().fold(T::zero(), |s, &x| s + x)
        })
    })
}

/// Padded operands of the direct weight gradient.
pub(crate) struct WeightGrad<T> {
    /// `x` as padded planes `(n, c, (h + 2) * (w + 2) + SLACK)`.
    xp: Vec<T>,
    /// `dy` as `(n, o_padded, positions)` on the padded grid's first `h` rows,
    /// zero in the padding columns, beyond `o` and beyond `h * (w + 2)`.
    dyp: Vec<T>,
    n: usize,
    c: usize,
    o_padded: usize,
    wp: usize,
    x_plane: usize,
    positions: usize,
}

/// A block kernel compiled for one instruction set.
pub(crate) type BlockFn<T> = unsafe fn(&Block<T>, &mut [T]);

/// A weight-gradient kernel: `[OB][3]` sums for output block `o0`, input
/// channel `ch` and kernel row `i`.
pub(crate) type WeightFn<T> = unsafe fn(&WeightGrad<T>, usize, usize, usize) -> Vec<T>;

/// Defines the kernels of one element type for AVX-512, AVX2+FMA and
/// baseline x86-64 (or any other architecture).
macro_rules! direct_kernels {
    ($t:ty, $avx512:ident, $avx2:ident) => {
        impl DirectConv for $t {
            const LANES: usize = 16;

            fn block_kernel<const OB: usize, const NT512: usize, const NT256: usize>() -> BlockFn<$t> {
                #[cfg(target_arch = "x86_64")]
                {
                    #[target_feature(enable = "avx512f,avx2,fma")]
                    unsafe fn avx512<const OB: usize, const NT: usize>(blk: &Block<$t>, out: &mut [$t]) {
                        block::<$t, $avx512, OB, NT>(blk, out)
                    }
                    #[target_feature(enable = "avx2,fma")]
                    unsafe fn avx2<const OB: usize, const NT: usize>(blk: &Block<$t>, out: &mut [$t]) {
                        block::<$t, $avx2, OB, NT>(blk, out)
                    }
                    match isa() {
                        Isa::Avx512 => return avx512::<OB, NT512>,
                        Isa::Avx2 => return avx2::<OB, NT256>,
                        Isa::Baseline => {}
                    }
                }
                unsafe fn baseline<const OB: usize>(blk: &Block<$t>, out: &mut [$t]) {
                    block::<$t, Scalar<$t>, OB, 4>(blk, out)
                }
                baseline::<OB>
            }

            fn weight_kernel() -> (usize, WeightFn<$t>) {
                #[cfg(target_arch = "x86_64")]
                {
                    #[target_feature(enable = "avx512f,avx2,fma")]
                    unsafe fn avx512(g: &WeightGrad<$t>, o0: usize, ch: usize, i: usize) -> Vec<$t> {
                        weight_tile::<$t, $avx512, 6>(g, o0, ch, i).concat()
                    }
                    #[target_feature(enable = "avx2,fma")]
                    unsafe fn avx2(g: &WeightGrad<$t>, o0: usize, ch: usize, i: usize) -> Vec<$t> {
                        weight_tile::<$t, $avx2, 3>(g, o0, ch, i).concat()
                    }
                    match isa() {
                        Isa::Avx512 => return (6, avx512),
                        Isa::Avx2 => return (3, avx2),
                        Isa::Baseline => {}
                    }
                }
                unsafe fn baseline(g: &WeightGrad<$t>, o0: usize, ch: usize, i: usize) -> Vec<$t> {
                    weight_tile::<$t, Scalar<$t>, 1>(g, o0, ch, i).concat()
                }
                (1, baseline)
            }
        }
    };
}

/// The instruction sets the kernels are compiled for.
#[cfg(target_arch = "x86_64")]
enum Isa {
    Avx512,
    Avx2,
    Baseline,
}

/// The best instruction set this CPU supports.
#[cfg(target_arch = "x86_64")]
fn isa() -> Isa {
    if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("fma") {
        Isa::Avx512
    } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        Isa::Avx2
    } else {
        Isa::Baseline
    }
}

/// Element types with direct 3x3 kernels.
pub(crate) trait DirectConv: Element {
    /// Upper bound on the vector width of any kernel, in elements.
    const LANES: usize;
    /// The fastest block kernel this CPU runs, for `OB` output channels per
    /// block and tiles of `NT512` (AVX-512) or `NT256` (AVX2) vectors.
    fn block_kernel<const OB: usize, const NT512: usize, const NT256: usize>() -> BlockFn<Self>;
    /// The fastest weight-gradient kernel and its output block size.
    fn weight_kernel() -> (usize, WeightFn<Self>);
}

direct_kernels!(f32, F32x16, F32x8);
direct_kernels!(f64, F64x8, F64x4);

/// The output-channel block size and its kernel: the block that pads `o`
/// least (earlier in the list on ties; 12 channels x 1 vector measured best
/// from 24 channels up, 6 x 3 below). Tiles hold `OB x NT` accumulators, at
/// most 18 of the 32 AVX-512 registers and 8 of the 16 AVX2 ones, leaving room
/// for the `NT` input vectors and the `OB` weight broadcasts.
fn choose_block<T: DirectConv>(o: usize) -> (usize, BlockFn<T>) {
    let padded = |ob: usize| o.div_ceil(ob) * ob;
    let order: [usize; 5] = if o >= 24 {
        [12, 6, 8, 4, 2]
    } else {
        [6, 12, 8, 4, 2]
    };
    let best = order.into_iter().min_by_key(|&ob| padded(ob)).unwrap_or(2);
    let kernel = match best {
        12 => T::block_kernel::<12, 1, 1>(),
        6 => T::block_kernel::<6, 3, 1>(),
        8 => T::block_kernel::<8, 2, 1>(),
        4 => T::block_kernel::<4, 4, 2>(),
        _ => T::block_kernel::<2, 8, 4>(),
    };
    (best, kernel)
}

/// Weights `(o, c, 3, 3)` packed as `[block][c][tap][ob]`, zero beyond `o`.
fn pack_weights<T: Element>(w: &[T], o: usize, c: usize, ob: usize) -> Vec<T> {
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

/// The three column-shifted copies of a zero-padded image `(c, h, w)`:
/// `xs[j, c, r, q] = x[c, r - 1, q + j - 1]` (zero outside), `(3, c, h + 2, w)`,
/// followed by [`SLACK`] zeros.
fn shifted_copies<T: Element>(x: &[T], c: usize, h: usize, w: usize) -> Vec<T> {
    let plane = (h + 2) * w;
    let mut xs = vec![T::zero(); 3 * c * plane + SLACK];
    for (j, copy) in xs.chunks_mut(c * plane).take(3).enumerate() {
        for (ch, src) in x.chunks(h * w).enumerate() {
            for (r, row) in src.chunks(w).enumerate() {
                let dst = &mut copy[ch * plane + (r + 1) * w..][..w];
                // dst[q] = row[q + j - 1] where that column exists
                let (lo, hi) = (1usize.saturating_sub(j), (w + 1 - j).min(w));
                dst[lo..hi].copy_from_slice(&row[lo + j - 1..hi + j - 1]);
            }
        }
    }
    xs
}

/// Planes of `h x w` copied into zeroed planes of `plane` elements with row
/// stride `w + 2`, starting at row `top` and column `left`; `slack` zeros follow.
fn pad_planes<T: Element>(
    x: &[T],
    planes: usize,
    (h, w): (usize, usize),
    plane: usize,
    (top, left): (usize, usize),
    slack: usize,
) -> Vec<T> {
    let wp = w + 2;
    let mut xp = vec![T::zero(); planes * plane + slack];
    for (ch, src) in x.chunks(h * w).take(planes).enumerate() {
        for (r, row) in src.chunks(w).enumerate() {
            xp[ch * plane + (r + top) * wp + left..][..w].copy_from_slice(row);
        }
    }
    xp
}

/// `y = conv3x3(x, w)` with padding 1 for `x: (n, c, h, w)`, `w: (o, c, 3, 3)`.
pub(crate) fn conv3x3_same<T: DirectConv>(x: &[T], w: &[T], g: &ConvGeom) -> Vec<T> {
    let (n, c, h, wd, o) = (g.n, g.c, g.h, g.w, g.o);
    let (ob, kernel) = choose_block::<T>(o);
    let packed = pack_weights(w, o, c, ob);
    let mut y = vec![T::zero(); n * o * h * wd];
    let parallel = y.len() * c * 9 >= PAR_THRESHOLD;
    let image = |(img, yi): (usize, &mut [T])| {
        let xs = shifted_copies(&x[img * c * h * wd..][..c * h * wd], c, h, wd);
        let run = |(b, out): (usize, &mut [T])| {
            let blk = Block {
                xs: &xs,
                wb: &packed[b * c * 9 * ob..][..c * 9 * ob],
                c,
                h,
                w: wd,
                valid: ob.min(o - b * ob),
            };
            // SAFETY: `block_kernel` returned a kernel whose instructions this CPU has.
            unsafe { kernel(&blk, out) }
        };
        if parallel {
            yi.par_chunks_mut(ob * h * wd).enumerate().for_each(run);
        } else {
            yi.chunks_mut(ob * h * wd).enumerate().for_each(run);
        }
    };
    if parallel {
        y.par_chunks_mut(o * h * wd).enumerate().for_each(image);
    } else {
        y.chunks_mut(o * h * wd).enumerate().for_each(image);
    }
    y
}

/// The transpose of [`conv3x3_same`] applied to `dy: (n, o, h, w)`: a 3x3 same
/// convolution with weights `w'[c, o, i, j] = w[o, c, 2 - i, 2 - j]`.
pub(crate) fn conv3x3_same_transposed<T: DirectConv>(dy: &[T], w: &[T], g: &ConvGeom) -> Vec<T> {
    let mut wt = vec![T::zero(); w.len()];
    for oc in 0..g.o {
        for ch in 0..g.c {
            for tap in 0..9 {
                wt[(ch * g.o + oc) * 9 + 8 - tap] = w[(oc * g.c + ch) * 9 + tap];
            }
        }
    }
    let swapped = ConvGeom {
        c: g.o,
        o: g.c,
        ..*g
    };
    conv3x3_same(dy, &wt, &swapped)
}

/// The weight gradient of [`conv3x3_same`]: `dw[o, c, i, j] = sum_{n, r, q}
/// dy[n, o, r, q] x[n, c, r + i - 1, q + j - 1]`, parallel over (output block,
/// input channel) pairs, each reduced over the whole batch in registers.
pub(crate) fn conv3x3_same_weight_grad<T: DirectConv>(x: &[T], dy: &[T], g: &ConvGeom) -> Vec<T> {
    let (n, c, h, w, o) = (g.n, g.c, g.h, g.w, g.o);
    let (ob, kernel) = T::weight_kernel();
    let wp = w + 2;
    let positions = (h * wp).div_ceil(T::LANES) * T::LANES;
    let o_padded = o.div_ceil(ob) * ob;
    let x_plane = (h + 2) * wp + T::LANES + 2;
    let mut dy_planes = Vec::with_capacity(n * o_padded * h * w);
    for img in dy.chunks(o * h * w) {
        dy_planes.extend_from_slice(img);
        dy_planes.resize(dy_planes.len() + (o_padded - o) * h * w, T::zero());
    }
    let grad = WeightGrad {
        xp: pad_planes(x, n * c, (h, w), x_plane, (1, 1), 0),
        dyp: pad_planes(&dy_planes, n * o_padded, (h, w), positions, (0, 0), 0),
        n,
        c,
        o_padded,
        wp,
        x_plane,
        positions,
    };
    let tasks: Vec<(usize, usize, usize)> = (0..o_padded / ob)
        .flat_map(|b| (0..c).flat_map(move |ch| (0..3).map(move |i| (b, ch, i))))
        .collect();
    let run = |&(b, ch, i): &(usize, usize, usize)| {
        // SAFETY: `weight_kernel` returned a kernel whose instructions this CPU has.
        (b, ch, i, unsafe { kernel(&grad, b * ob, ch, i) })
    };
    let sums: Vec<(usize, usize, usize, Vec<T>)> = if n * o * c * h * w * 9 >= PAR_THRESHOLD {
        tasks.par_iter().map(run).collect()
    } else {
        tasks.iter().map(run).collect()
    };
    let mut dw = vec![T::zero(); o * c * 9];
    for (b, ch, i, taps) in sums {
        for (k, row) in taps.chunks(3).enumerate() {
            let oc = b * ob + k;
            if oc < o {
                dw[(oc * c + ch) * 9 + i * 3..][..3].copy_from_slice(row);
            }
        }
    }
    dw
}
