//! Direct kernel for 3x3, stride-1, padding-1 convolutions (one group), the
//! shape flows use most, and its transpose (the same kernel on flipped,
//! transposed weights).
//!
//! Each image is zero-padded once to `(c, h + 2, w + 2)`. A register tile
//! holds `OB` output channels by `TW` consecutive output columns of one row;
//! for each input channel and each of the 9 taps it loads one shifted row
//! segment and does `OB x TW` multiply-adds with weights packed as
//! `[block][c][tap][OB]`. Rows are covered by wide vector tiles (16 f32 or 8
//! f64 lanes with AVX-512), one narrower tile, then single columns. The kernel
//! is compiled for AVX-512, AVX2+FMA and baseline x86-64, and the best one the
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
    /// The padded image `(c, h + 2, w + 2)`, followed by [`SLACK`] zeros.
    xp: &'a [T],
    /// This block's packed weights, `[c][tap][ob]`.
    wb: &'a [T],
    c: usize,
    h: usize,
    w: usize,
    /// Valid output channels in this block (`<= OB`).
    valid: usize,
}

/// Zeros after the padded image, so a flat tile may read past the last plane.
const SLACK: usize = 64;

/// Accumulates one tile: `OB` channels x `V::LANES` output positions starting
/// at flat position `base = r * (w + 2) + q` of the padded grid. Positions in
/// the two padding columns of a row are computed too (and discarded).
///
/// # Safety
/// The CPU must support `V`'s instructions.
#[inline(always)]
unsafe fn tile<T: Element, V: Vector<T>, const OB: usize>(blk: &Block<T>, base: usize) -> [V; OB] {
    let wp = blk.w + 2;
    let plane = (blk.h + 2) * wp;
    let mut acc = [V::zero(); OB];
    for ch in 0..blk.c {
        let wc = &blk.wb[ch * 9 * OB..][..9 * OB];
        for i in 0..3 {
            let row = &blk.xp[ch * plane + base + i * wp..][..V::LANES + 2];
            for j in 0..3 {
                let xv = V::load(row.as_ptr().add(j));
                let wt = &wc[(i * 3 + j) * OB..][..OB];
                for o in 0..OB {
                    acc[o] = acc[o].mul_add(V::splat(wt[o]), xv);
                }
            }
        }
    }
    acc
}

/// All tiles of one block (`out` is its `(valid, h, w)` output). Rows that
/// are a whole number of vectors are tiled row by row; otherwise the padded
/// grid is walked as one flat run and the padding columns are dropped.
///
/// # Safety
/// The CPU must support `V`'s instructions.
#[inline(always)]
unsafe fn block<T: Element, V: Vector<T>, const OB: usize>(blk: &Block<T>, out: &mut [T]) {
    let (h, w, wp) = (blk.h, blk.w, blk.w + 2);
    let plane_out = h * w;
    if w % V::LANES == 0 {
        for r in 0..h {
            for q in (0..w).step_by(V::LANES) {
                let acc = tile::<T, V, OB>(blk, r * wp + q);
                for (o, a) in acc.iter().enumerate().take(blk.valid) {
                    a.store(out[o * plane_out + r * w + q..][..V::LANES].as_mut_ptr());
                }
            }
        }
        return;
    }
    let mut lanes = [T::zero(); 64];
    for base in (0..h * wp).step_by(V::LANES) {
        let acc = tile::<T, V, OB>(blk, base);
        for (o, a) in acc.iter().enumerate().take(blk.valid) {
            a.store(lanes.as_mut_ptr());
            for (k, &v) in lanes[..V::LANES].iter().enumerate() {
                let (r, q) = ((base + k) / wp, (base + k) % wp);
                if r < h && q < w {
                    out[o * plane_out + r * w + q] = v;
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

/// One image for the channel-vectorized kernel: the padded image (with
/// [`SLACK`]) and the weights packed as `[c][tap][o]`.
pub(crate) struct ChannelImage<'a, T> {
    xp: &'a [T],
    wq: &'a [T],
    c: usize,
    h: usize,
    w: usize,
    o: usize,
}

/// Output channels `o0..o0 + OV * V::LANES` at `PB` consecutive columns of row
/// `r` from column `q0`, written into `out` (the image's `(o, h, w)` output).
///
/// # Safety
/// The CPU must support `V`'s instructions; `q0 + PB <= w`, `o0 + OV * V::LANES <= o`.
#[inline(always)]
unsafe fn channel_tile<T: Element, V: Vector<T>, const OV: usize, const PB: usize>(
    img: &ChannelImage<T>,
    o0: usize,
    r: usize,
    q0: usize,
    out: &mut [T],
) {
    let wp = img.w + 2;
    let plane = (img.h + 2) * wp;
    let mut acc = [[V::zero(); OV]; PB];
    for ch in 0..img.c {
        for i in 0..3 {
            let row = &img.xp[ch * plane + (r + i) * wp + q0..][..PB + 2];
            for j in 0..3 {
                let wt = &img.wq[(ch * 9 + i * 3 + j) * img.o + o0..][..OV * V::LANES];
                let wv: [V; OV] = std::array::from_fn(|v| V::load(wt.as_ptr().add(v * V::LANES)));
                for p in 0..PB {
                    let xb = V::splat(row[p + j]);
                    for v in 0..OV {
                        acc[p][v] = acc[p][v].mul_add(wv[v], xb);
                    }
                }
            }
        }
    }
    let mut lanes = [T::zero(); 64];
    let plane_out = img.h * img.w;
    for (p, vs) in acc.iter().enumerate() {
        for (v, a) in vs.iter().enumerate() {
            a.store(lanes.as_mut_ptr());
            for (l, &x) in lanes[..V::LANES].iter().enumerate() {
                out[(o0 + v * V::LANES + l) * plane_out + r * img.w + q0 + p] = x;
            }
        }
    }
}

/// The whole image with the channel-vectorized kernel, `OV` vectors of output
/// channels by `PB` columns per tile (single columns at the end of a row).
///
/// # Safety
/// The CPU must support `V`'s instructions; `OV * V::LANES` divides `o`.
#[inline(always)]
unsafe fn channel_image<T: Element, V: Vector<T>, const OV: usize, const PB: usize>(
    img: &ChannelImage<T>,
    out: &mut [T],
) {
    for o0 in (0..img.o).step_by(OV * V::LANES) {
        for r in 0..img.h {
            let mut q = 0;
            while q + PB <= img.w {
                channel_tile::<T, V, OV, PB>(img, o0, r, q, out);
                q += PB;
            }
            while q < img.w {
                channel_tile::<T, V, OV, 1>(img, o0, r, q, out);
                q += 1;
            }
        }
    }
}

/// A channel-vectorized image kernel.
pub(crate) type ChannelFn<T> = unsafe fn(&ChannelImage<T>, &mut [T]);

/// A weight-gradient kernel: `[OB][3]` sums for output block `o0`, input
/// channel `ch` and kernel row `i`.
pub(crate) type WeightFn<T> = unsafe fn(&WeightGrad<T>, usize, usize, usize) -> Vec<T>;

/// The channel-vectorized kernel of element `$t` with vector `$v` for `o`
/// output channels and width `w`: the first `OV => PB` tile shape whose `OV`
/// divides the number of channel vectors (shapes sized to the register file).
#[cfg(target_arch = "x86_64")]
macro_rules! channel_pick {
    ($t:ty, $v:ty, $feat:literal, $o:expr, $w:expr, [$($ov:literal => $pb:literal),*]) => {{
        let lanes = <$v as Vector<$t>>::LANES;
        if $o % lanes != 0 || $w % lanes == 0 {
            return None;
        }
        let vectors = $o / lanes;
        $(
            if vectors.is_multiple_of($ov) {
                #[target_feature(enable = $feat)]
                unsafe fn run(img: &ChannelImage<$t>, out: &mut [$t]) {
                    channel_image::<$t, $v, $ov, $pb>(img, out)
                }
                return Some(run);
            }
        )*
        None
    }};
}

/// Defines the kernels of one element type for AVX-512, AVX2+FMA and
/// baseline x86-64 (or any other architecture).
macro_rules! direct_kernels {
    ($t:ty, $avx512:ident, $avx2:ident) => {
        impl DirectConv for $t {
            const LANES: usize = 16;

            fn block_kernel<const OB: usize>() -> BlockFn<$t> {
                #[cfg(target_arch = "x86_64")]
                {
                    #[target_feature(enable = "avx512f,avx2,fma")]
                    unsafe fn avx512<const OB: usize>(blk: &Block<$t>, out: &mut [$t]) {
                        block::<$t, $avx512, OB>(blk, out)
                    }
                    #[target_feature(enable = "avx2,fma")]
                    unsafe fn avx2<const OB: usize>(blk: &Block<$t>, out: &mut [$t]) {
                        block::<$t, $avx2, OB>(blk, out)
                    }
                    match isa() {
                        Isa::Avx512 => return avx512::<OB>,
                        Isa::Avx2 => return avx2::<OB>,
                        Isa::Baseline => {}
                    }
                }
                unsafe fn baseline<const OB: usize>(blk: &Block<$t>, out: &mut [$t]) {
                    block::<$t, Scalar<$t>, OB>(blk, out)
                }
                baseline::<OB>
            }

            fn channel_kernel(o: usize, w: usize) -> Option<ChannelFn<$t>> {
                #[cfg(target_arch = "x86_64")]
                {
                    match isa() {
                        Isa::Avx512 => channel_pick!($t, $avx512, "avx512f,avx2,fma", o, w, [4 => 4, 3 => 4, 2 => 4, 1 => 8]),
                        Isa::Avx2 => channel_pick!($t, $avx2, "avx2,fma", o, w, [4 => 2, 3 => 3, 2 => 4, 1 => 8]),
                        Isa::Baseline => None,
                    }
                }
                #[cfg(not(target_arch = "x86_64"))]
                {
                    let _ = (o, w);
                    None
                }
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
    /// The fastest block kernel this CPU runs, for `OB` output channels per block.
    fn block_kernel<const OB: usize>() -> BlockFn<Self>;
    /// The channel-vectorized kernel, where it beats the row-tiled one: the
    /// vector width divides the output channels `o` but not the width `w`.
    fn channel_kernel(o: usize, w: usize) -> Option<ChannelFn<Self>>;
    /// The fastest weight-gradient kernel and its output block size.
    fn weight_kernel() -> (usize, WeightFn<Self>);
}

direct_kernels!(f32, F32x16, F32x8);
direct_kernels!(f64, F64x8, F64x4);

/// The output-channel block size (the one of 12, 8, 6, 4, 2 that pads `o`
/// least, the larger on ties) and its kernel.
fn choose_block<T: DirectConv>(o: usize) -> (usize, BlockFn<T>) {
    let padded = |ob: usize| o.div_ceil(ob) * ob;
    let best = [12, 8, 6, 4, 2]
        .into_iter()
        .min_by_key(|&ob| (padded(ob), usize::MAX - ob))
        .unwrap_or(2);
    let kernel = match best {
        12 => T::block_kernel::<12>(),
        8 => T::block_kernel::<8>(),
        6 => T::block_kernel::<6>(),
        4 => T::block_kernel::<4>(),
        _ => T::block_kernel::<2>(),
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
    if let Some(kernel) = T::channel_kernel(o, wd) {
        return conv3x3_same_by_channels(x, w, g, kernel);
    }
    let (ob, kernel) = choose_block::<T>(o);
    let packed = pack_weights(w, o, c, ob);
    let mut y = vec![T::zero(); n * o * h * wd];
    let parallel = y.len() * c * 9 >= PAR_THRESHOLD;
    let image = |(img, yi): (usize, &mut [T])| {
        let plane = (h + 2) * (wd + 2);
        let xp = pad_planes(
            &x[img * c * h * wd..][..c * h * wd],
            c,
            (h, wd),
            plane,
            (1, 1),
            SLACK,
        );
        let run = |(b, out): (usize, &mut [T])| {
            let blk = Block {
                xp: &xp,
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

/// [`conv3x3_same`] with the channel-vectorized kernel, parallel over images.
fn conv3x3_same_by_channels<T: DirectConv>(
    x: &[T],
    w: &[T],
    g: &ConvGeom,
    kernel: ChannelFn<T>,
) -> Vec<T> {
    let (c, h, wd, o) = (g.c, g.h, g.w, g.o);
    let mut wq = vec![T::zero(); c * 9 * o];
    for oc in 0..o {
        for ch in 0..c {
            for tap in 0..9 {
                wq[(ch * 9 + tap) * o + oc] = w[(oc * c + ch) * 9 + tap];
            }
        }
    }
    let mut y = vec![T::zero(); g.n * o * h * wd];
    let image = |(img, yi): (usize, &mut [T])| {
        let plane = (h + 2) * (wd + 2);
        let xp = pad_planes(
            &x[img * c * h * wd..][..c * h * wd],
            c,
            (h, wd),
            plane,
            (1, 1),
            SLACK,
        );
        let ci = ChannelImage {
            xp: &xp,
            wq: &wq,
            c,
            h,
            w: wd,
            o,
        };
        // SAFETY: `channel_kernel` returned a kernel whose instructions this CPU has.
        unsafe { kernel(&ci, yi) }
    };
    if y.len() * c * 9 >= PAR_THRESHOLD {
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
