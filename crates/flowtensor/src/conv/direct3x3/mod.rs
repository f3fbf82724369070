//! Direct kernels for 3x3, stride-1, padding-1 convolutions (one group), the
//! shape flows use most: the forward, its transpose (the same kernels on
//! flipped, transposed weights) and the weight gradient.
//!
//! The forward has two register-tiled kernels and picks one per output
//! channel count: [`positions`] (vectors along output positions; few
//! channels) and [`channels`] (vectors along output channels; many channels
//! on small images, AVX-512 only). [`ImageConv3x3`] runs either on one
//! image at a time with its packed weights and input buffer kept between
//! calls. Kernels are compiled for AVX-512, AVX2+FMA and baseline x86-64,
//! and the best one the CPU supports is picked at run time.

mod channels;
mod positions;
mod weight;
mod weight_channels;
mod winograd;

use super::cpu::Epilogue;
use super::geometry::ConvGeom;
use super::ragged::{RaggedTails, Taps};
use super::simd::Scalar;
#[cfg(target_arch = "x86_64")]
use super::simd::{isa, F32x16, F32x8, F64x4, F64x8, Isa};
use super::{pointwise, pointwise_product};
use crate::cpu::{assume_init_mut, written_pieces, PAR_THRESHOLD};
use crate::Element;
use rayon::prelude::*;
use std::mem::MaybeUninit;
use std::sync::{Arc, Mutex};
use weight::WeightGrad;
use weight::{weight_tile, WeightFn};
use winograd::Winograd;

/// Zeros after an input buffer, so the last tile may read past the end.
const SLACK: usize = 256;

/// Defines the kernels of one element type for AVX-512, AVX2+FMA and
/// baseline x86-64 (or any other architecture).
macro_rules! direct_kernels {
    ($t:ty, $avx512:ident, $avx2:ident) => {
        impl DirectConv for $t {
            fn position_kernel<const OB: usize, const NT512: usize, const NT256: usize>(
            ) -> positions::BlockFn<$t> {
                #[cfg(target_arch = "x86_64")]
                {
                    #[target_feature(enable = "avx512f,avx2,fma")]
                    unsafe fn avx512<const OB: usize, const NT: usize>(
                        blk: &positions::Block<$t>,
                        out: &mut [MaybeUninit<$t>],
                    ) {
                        positions::block::<$t, $avx512, OB, NT>(blk, out)
                    }
                    #[target_feature(enable = "avx2,fma")]
                    unsafe fn avx2<const OB: usize, const NT: usize>(
                        blk: &positions::Block<$t>,
                        out: &mut [MaybeUninit<$t>],
                    ) {
                        positions::block::<$t, $avx2, OB, NT>(blk, out)
                    }
                    match isa() {
                        Isa::Avx512 => return avx512::<OB, NT512>,
                        Isa::Avx2 => return avx2::<OB, NT256>,
                        Isa::Baseline => {}
                    }
                }
                unsafe fn baseline<const OB: usize>(
                    blk: &positions::Block<$t>,
                    out: &mut [MaybeUninit<$t>],
                ) {
                    positions::block::<$t, Scalar<$t>, OB, 1>(blk, out)
                }
                baseline::<OB>
            }

            fn channel_kernel(o: usize) -> Option<(usize, channels::BlockFn<$t>)> {
                #[cfg(target_arch = "x86_64")]
                {
                    #[target_feature(enable = "avx512f,avx2,fma")]
                    unsafe fn avx512<const OV: usize, const NP: usize>(
                        blk: &channels::Block<$t>,
                        out: &mut [$t],
                    ) {
                        channels::block::<$t, $avx512, OV, NP>(blk, out)
                    }
                    if let Isa::Avx512 = isa() {
                        let lanes = 64 / std::mem::size_of::<$t>();
                        let kernel: channels::BlockFn<$t> = match channel_vectors(o, lanes)? {
                            1 => avx512::<1, 8>,
                            2 => avx512::<2, 8>,
                            3 => avx512::<3, 8>,
                            _ => avx512::<4, 6>,
                        };
                        return Some((channel_vectors(o, lanes)? * lanes, kernel));
                    }
                }
                let _ = o;
                None
            }

            fn winograd_kernels(o: usize) -> Option<winograd::Kernels<$t>> {
                #[cfg(target_arch = "x86_64")]
                {
                    #[target_feature(enable = "avx512f,avx2,fma")]
                    unsafe fn product<const OV: usize, const NP: usize>(
                        p: &winograd::Product<$t>,
                        out: &mut [$t],
                    ) {
                        winograd::product::<$t, $avx512, OV, NP>(p, out)
                    }
                    #[target_feature(enable = "avx512f,avx2,fma")]
                    unsafe fn input(xq: &[$t], v: &mut [$t], g: &winograd::Tiling) {
                        winograd::input::<$t, $avx512>(xq, v, g)
                    }
                    #[target_feature(enable = "avx512f,avx2,fma")]
                    unsafe fn output(m: &[$t], dst: &mut [$t], y: &mut [$t], g: &winograd::Tiling) {
                        winograd::output::<$t, $avx512>(m, dst, y, g)
                    }
                    if let Isa::Avx512 = isa() {
                        let lanes = 64 / std::mem::size_of::<$t>();
                        let ov = channel_vectors(o, lanes).unwrap_or(1);
                        let (product, np): (winograd::ProductFn<$t>, usize) = match ov {
                            1 => (product::<1, 8>, 8),
                            2 => (product::<2, 8>, 8),
                            3 => (product::<3, 8>, 8),
                            _ => (product::<4, 6>, 6),
                        };
                        return Some(winograd::Kernels {
                            product,
                            input,
                            output,
                            width: ov * lanes,
                            np,
                            lanes,
                        });
                    }
                }
                let _ = o;
                None
            }

            fn weight_kernel(o: usize) -> (usize, WeightFn<$t>) {
                use std::ops::Range;
                use weight::Tile;
                #[cfg(target_arch = "x86_64")]
                {
                    #[target_feature(enable = "avx512f,avx2,fma")]
                    unsafe fn avx512<const OB: usize>(
                        g: &WeightGrad<$t>,
                        tile: Tile,
                        images: Range<usize>,
                        state: &mut [$t],
                        sums: Option<&mut [$t]>,
                    ) {
                        weight_tile::<$t, $avx512, OB>(g, tile, images, state, sums)
                    }
                    #[target_feature(enable = "avx2,fma")]
                    unsafe fn avx2<const OB: usize>(
                        g: &WeightGrad<$t>,
                        tile: Tile,
                        images: Range<usize>,
                        state: &mut [$t],
                        sums: Option<&mut [$t]>,
                    ) {
                        weight_tile::<$t, $avx2, OB>(g, tile, images, state, sums)
                    }
                    match isa() {
                        Isa::Avx512 => {
                            // OB x 3 accumulators, 3 input and up to OB
                            // output-gradient vectors in 32 registers
                            return match least_padding(o, &[6, 4, 2]) {
                                6 => (6, avx512::<6>),
                                4 => (4, avx512::<4>),
                                _ => (2, avx512::<2>),
                            };
                        }
                        Isa::Avx2 => {
                            return match least_padding(o, &[3, 2]) {
                                3 => (3, avx2::<3>),
                                _ => (2, avx2::<2>),
                            }
                        }
                        Isa::Baseline => {}
                    }
                }
                unsafe fn baseline(
                    g: &WeightGrad<$t>,
                    tile: Tile,
                    images: Range<usize>,
                    state: &mut [$t],
                    sums: Option<&mut [$t]>,
                ) {
                    weight_tile::<$t, Scalar<$t>, 1>(g, tile, images, state, sums)
                }
                let _ = o;
                (1, baseline)
            }

            fn channel_weight_kernel(o: usize) -> Option<weight_channels::ChannelWeightKernel<$t>> {
                use std::ops::Range;
                use weight_channels::{tile, ChannelWeightGrad, ChannelWeightKernel};
                #[cfg(target_arch = "x86_64")]
                {
                    #[target_feature(enable = "avx512f,avx2,fma")]
                    unsafe fn avx512<const OV: usize>(
                        g: &ChannelWeightGrad<$t>,
                        at: (usize, usize),
                        images: Range<usize>,
                        state: &mut [$t],
                    ) {
                        tile::<$t, $avx512, OV>(g, at, images, state)
                    }
                    #[target_feature(enable = "avx2,fma")]
                    unsafe fn avx2(
                        g: &ChannelWeightGrad<$t>,
                        at: (usize, usize),
                        images: Range<usize>,
                        state: &mut [$t],
                    ) {
                        tile::<$t, $avx2, 1>(g, at, images, state)
                    }
                    let kernel = |lanes: usize, ov: usize, run| ChannelWeightKernel {
                        width: ov * lanes,
                        lanes,
                        run,
                    };
                    match isa() {
                        Isa::Avx512 => {
                            let lanes = <$avx512 as super::simd::Vector<$t>>::LANES;
                            // 9 OV accumulators, OV output-gradient vectors and
                            // a broadcast in 32 registers
                            return (o >= lanes).then(|| {
                                match [3, 2, 1]
                                    .into_iter()
                                    .min_by_key(|&ov| o.div_ceil(ov * lanes) * ov)
                                {
                                    Some(3) => kernel(lanes, 3, avx512::<3>),
                                    Some(2) => kernel(lanes, 2, avx512::<2>),
                                    _ => kernel(lanes, 1, avx512::<1>),
                                }
                            });
                        }
                        Isa::Avx2 => {
                            let lanes = <$avx2 as super::simd::Vector<$t>>::LANES;
                            return (o >= lanes).then(|| kernel(lanes, 1, avx2));
                        }
                        Isa::Baseline => {}
                    }
                }
                let _ = o;
                None
            }

            fn pointwise_product_kernel() -> pointwise_product::ProductKernel<$t> {
                use pointwise_product::{tile, Packed, ProductKernel};
                type Out<'a> = &'a mut [std::mem::MaybeUninit<$t>];
                #[cfg(target_arch = "x86_64")]
                {
                    #[target_feature(enable = "avx512f,avx2,fma")]
                    unsafe fn avx512<const OB: usize, const NT: usize>(
                        a: &Packed<$t>,
                        block: usize,
                        b: &[$t],
                        out: Out,
                        positions: usize,
                        piece: (usize, usize),
                    ) {
                        tile::<$t, $avx512, OB, NT>(a, block, b, out, positions, piece)
                    }
                    #[target_feature(enable = "avx2,fma")]
                    unsafe fn avx2<const OB: usize, const NT: usize>(
                        a: &Packed<$t>,
                        block: usize,
                        b: &[$t],
                        out: Out,
                        positions: usize,
                        piece: (usize, usize),
                    ) {
                        tile::<$t, $avx2, OB, NT>(a, block, b, out, positions, piece)
                    }
                    match isa() {
                        Isa::Avx512 => {
                            return ProductKernel {
                                ob: 6,
                                nt: 4,
                                lanes: <$avx512 as super::simd::Vector<$t>>::LANES,
                                tile: avx512::<6, 4>,
                            }
                        }
                        Isa::Avx2 => {
                            return ProductKernel {
                                ob: 6,
                                nt: 2,
                                lanes: <$avx2 as super::simd::Vector<$t>>::LANES,
                                tile: avx2::<6, 2>,
                            }
                        }
                        Isa::Baseline => {}
                    }
                }
                unsafe fn baseline(
                    a: &Packed<$t>,
                    block: usize,
                    b: &[$t],
                    out: Out,
                    positions: usize,
                    piece: (usize, usize),
                ) {
                    tile::<$t, Scalar<$t>, 4, 1>(a, block, b, out, positions, piece)
                }
                ProductKernel {
                    ob: 4,
                    nt: 1,
                    lanes: 1,
                    tile: baseline,
                }
            }

            fn pointwise_weight_kernel() -> pointwise::TileKernel<$t> {
                use pointwise::{Operands, TileKernel};
                use std::ops::Range;
                #[cfg(target_arch = "x86_64")]
                {
                    #[target_feature(enable = "avx512f,avx2,fma")]
                    unsafe fn avx512(
                        ops: &Operands<$t>,
                        o0: usize,
                        c0: usize,
                        images: Range<usize>,
                        state: &mut [$t],
                        sums: Option<&mut [$t]>,
                    ) {
                        pointwise::tile::<$t, $avx512, 4, 6>(ops, (o0, c0), images, state, sums)
                    }
                    #[target_feature(enable = "avx2,fma")]
                    unsafe fn avx2(
                        ops: &Operands<$t>,
                        o0: usize,
                        c0: usize,
                        images: Range<usize>,
                        state: &mut [$t],
                        sums: Option<&mut [$t]>,
                    ) {
                        pointwise::tile::<$t, $avx2, 3, 3>(ops, (o0, c0), images, state, sums)
                    }
                    match isa() {
                        Isa::Avx512 => {
                            return TileKernel {
                                ob: 4,
                                cb: 6,
                                lanes: <$avx512 as super::simd::Vector<$t>>::LANES,
                                run: avx512,
                            }
                        }
                        Isa::Avx2 => {
                            return TileKernel {
                                ob: 3,
                                cb: 3,
                                lanes: <$avx2 as super::simd::Vector<$t>>::LANES,
                                run: avx2,
                            }
                        }
                        Isa::Baseline => {}
                    }
                }
                unsafe fn baseline(
                    ops: &Operands<$t>,
                    o0: usize,
                    c0: usize,
                    images: Range<usize>,
                    state: &mut [$t],
                    sums: Option<&mut [$t]>,
                ) {
                    pointwise::tile::<$t, Scalar<$t>, 2, 2>(ops, (o0, c0), images, state, sums)
                }
                TileKernel {
                    ob: 2,
                    cb: 2,
                    lanes: 1,
                    run: baseline,
                }
            }
        }
    };
}

/// Element types with direct kernels: 3x3 convolutions and the 1x1 weight gradient.
pub(crate) trait DirectConv: crate::cpu::TiledGemm {
    /// The fastest position-tiled kernel this CPU runs, for `OB` output
    /// channels per block and tiles of `NT512` (AVX-512) or `NT256` (AVX2)
    /// vectors.
    fn position_kernel<const OB: usize, const NT512: usize, const NT256: usize>(
    ) -> positions::BlockFn<Self>;
    /// The channel-tiled kernel for `o` output channels and its block width
    /// in channels, where this CPU has one and it suits `o`.
    fn channel_kernel(o: usize) -> Option<(usize, channels::BlockFn<Self>)>;
    /// The Winograd kernels for `o` output channels, where this CPU has them.
    fn winograd_kernels(o: usize) -> Option<winograd::Kernels<Self>>;
    /// The fastest weight-gradient kernel for `o` output channels and its
    /// output block size (the one that pads `o` least).
    fn weight_kernel(o: usize) -> (usize, WeightFn<Self>);
    /// The fastest 1x1 weight-gradient tile and its output and input channels.
    fn pointwise_weight_kernel() -> pointwise::TileKernel<Self>;
    /// The weight-gradient kernel with vectors along `o` output channels,
    /// where this CPU has one that suits them.
    fn channel_weight_kernel(o: usize) -> Option<weight_channels::ChannelWeightKernel<Self>>;
    /// The 1x1 product kernels (forward and input gradient) of this CPU.
    fn pointwise_product_kernel() -> pointwise_product::ProductKernel<Self>;
}

direct_kernels!(f32, F32x16, F32x8);
direct_kernels!(f64, F64x8, F64x4);

/// The block size in `sizes` that pads `o` least, the earlier in `sizes` on ties.
fn least_padding(o: usize, sizes: &[usize]) -> usize {
    sizes
        .iter()
        .copied()
        .min_by_key(|&b| o.div_ceil(b) * b)
        .unwrap_or(1)
}

/// The vectors of output channels per block of the channel-tiled kernel for
/// `o` channels and vectors of `lanes`: the count in 1..=4 that pads `o`
/// least (the larger on ties), or `None` when even that pads by more than a
/// quarter (the position-tiled kernel wastes less there).
fn channel_vectors(o: usize, lanes: usize) -> Option<usize> {
    let padded = |ov: usize| o.div_ceil(ov * lanes) * ov * lanes;
    let best = (1..=4).rev().min_by_key(|&ov| padded(ov))?;
    (o >= lanes && 4 * padded(best) <= 5 * o).then_some(best)
}

/// The output-channel block size and kernel of the position-tiled kernel
/// for `o` channels: the block of 8, 6, 4 or 2 channels that pads `o` least
/// (the larger on ties), by tiles of up to 3, 4, 4 or 4 vectors of
/// positions on AVX-512 (`OB x NT` at most 24 of the 32 registers, leaving
/// room for the `NT` input vectors and a weight broadcast) and 1 or 2 on
/// AVX2 (16 registers).
fn position_block<T: DirectConv>(o: usize) -> (usize, positions::BlockFn<T>) {
    let best = least_padding(o, &[8, 6, 4, 2]);
    let kernel = match best {
        8 => T::position_kernel::<8, 3, 1>(),
        6 => T::position_kernel::<6, 4, 2>(),
        4 => T::position_kernel::<4, 4, 2>(),
        _ => T::position_kernel::<2, 4, 2>(),
    };
    (best, kernel)
}

/// The weights `(c, o, 3, 3)` of the adjoint of a 3x3 same convolution with
/// weights `w (o, c, 3, 3)`: `w'[c, o, i, j] = w[o, c, 2 - i, 2 - j]`.
fn adjoint_weights<T: Element>(w: &[T], o: usize, c: usize) -> Vec<T> {
    let mut wt = vec![T::zero(); w.len()];
    for oc in 0..o {
        for ch in 0..c {
            for tap in 0..9 {
                wt[(ch * o + oc) * 9 + 8 - tap] = w[(oc * c + ch) * 9 + tap];
            }
        }
    }
    wt
}

/// How a batch of per-image convolutions uses the threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Threads {
    /// Too little work to split.
    Sequential,
    /// One image per task.
    OverImages,
    /// Images one after another, each one's output blocks split.
    InsideImages,
}

impl Threads {
    /// The split for `images` images of `work` multiply-adds each.
    pub(crate) fn for_batch(images: usize, work: usize) -> Threads {
        if images * work < PAR_THRESHOLD {
            Threads::Sequential
        } else if images >= rayon::current_num_threads() {
            Threads::OverImages
        } else {
            Threads::InsideImages
        }
    }
}

/// How [`ImageConv3x3`] computes: the kernel, its packed weights (shared
/// by clones) and its input buffer (one per clone).
#[derive(Clone)]
enum Plan<T> {
    Positions {
        kernel: positions::BlockFn<T>,
        packed: Arc<[T]>,
        /// Output channels per block.
        block: usize,
        /// The lane masks of the image's vectors (see [`positions::masks`]).
        masks: Arc<[u32]>,
        /// The vectors of positions computed (see [`positions::Block`]).
        vectors: usize,
    },
    Channels {
        kernel: channels::BlockFn<T>,
        packed: Arc<[T]>,
        block: usize,
        xp: Vec<T>,
    },
    Winograd(Winograd<T>),
}

/// A 3x3 same convolution `(c, h, w) -> (o, h, w)` applied to one image at
/// a time, with its prepared weights and its input buffers kept between
/// calls (the per-image loops of the convolution exponential run it many
/// times on cache-resident images). Clones share the weights and own
/// their buffers, one per thread.
#[derive(Clone)]
pub(crate) struct ImageConv3x3<T> {
    plan: Plan<T>,
    c: usize,
    o: usize,
    h: usize,
    w: usize,
    /// The epilogue's bias `(o)`, if any, and whether ReLU follows.
    bias: Option<Arc<[T]>>,
    relu: bool,
}

/// The algorithms of [`ImageConv3x3`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Algorithm {
    Positions,
    Channels,
    Winograd,
}

/// Input channels below which the channel-tiled kernel loses to the
/// position-tiled one: with few multiply-adds per tile, its transpose of
/// the tile to channel planes dominates (2 -> 64 channels on 14x14 images:
/// 1.07 -> 0.55 ms, 4 -> 64 on 7x7: 0.36 -> 0.24 ms, batch 64, one thread,
/// Intel Xeon).
const SMALL_C: usize = 8;

/// Winograd where it has kernels and enough input channels for its
/// products to outweigh its transforms (from 16 measured; it is 1.4x the
/// direct kernels at 48 channels on 8x8 images), else the channel-tiled
/// kernel where it suits `o` and there are [`SMALL_C`] input channels or
/// more, else the position-tiled one.
fn algorithm<T: DirectConv>(o: usize, c: usize) -> Algorithm {
    let channels = T::channel_kernel(o).is_some();
    if c >= 16 && channels && T::winograd_kernels(o).is_some() {
        Algorithm::Winograd
    } else if channels && c >= SMALL_C {
        Algorithm::Channels
    } else {
        Algorithm::Positions
    }
}

impl<T: DirectConv> ImageConv3x3<T> {
    /// The convolution with weights `w (o, c, 3, 3)` on `h x wd` images.
    pub(crate) fn new(w: &[T], o: usize, c: usize, (h, wd): (usize, usize)) -> Self {
        let plan = match (
            algorithm::<T>(o, c),
            T::winograd_kernels(o),
            T::channel_kernel(o),
        ) {
            (Algorithm::Winograd, Some(kernels), _) => {
                Plan::Winograd(Winograd::new(w, o, c, (h, wd), kernels))
            }
            (Algorithm::Channels, _, Some((block, kernel))) => Plan::Channels {
                kernel,
                packed: channels::pack_weights(w, o, c, block).into(),
                block,
                xp: vec![T::zero(); channels::padded_len(c, h, wd)],
            },
            _ => {
                let (block, kernel) = position_block::<T>(o);
                Plan::Positions {
                    kernel,
                    packed: positions::pack_weights(w, o, c, block).into(),
                    block,
                    masks: positions::masks(h, wd, vector_lanes::<T>()).into(),
                    vectors: (h * wd).div_ceil(vector_lanes::<T>()),
                }
            }
        };
        ImageConv3x3 {
            plan,
            c,
            o,
            h,
            w: wd,
            bias: None,
            relu: false,
        }
    }

    /// The same convolution followed by `epilogue` (in the position-tiled
    /// kernel's registers; by a pass over each output otherwise).
    pub(crate) fn with_epilogue(mut self, epilogue: Epilogue<'_, T>) -> Self {
        self.bias = epilogue.bias.map(|b| b[..self.o].into());
        self.relu = epilogue.relu;
        self
    }

    /// The adjoint (transposed) convolution `(o, h, w) -> (c, h, w)` of the
    /// one with weights `w (o, c, 3, 3)`.
    pub(crate) fn adjoint(w: &[T], o: usize, c: usize, size: (usize, usize)) -> Self {
        Self::new(&adjoint_weights(w, o, c), c, o, size)
    }

    /// Where the position-tiled kernel runs and the images' ragged tails
    /// waste much of its vectors (see [`RaggedTails`]): from now on, `apply`
    /// computes only the positions before the tail, and the tails are left
    /// to the returned split. `None`, and nothing changed, otherwise.
    fn split_ragged_tails(&mut self) -> Option<RaggedTails> {
        let (c, h, w) = (self.c, self.h, self.w);
        let Plan::Positions { vectors, .. } = &mut self.plan else {
            return None;
        };
        let lanes = vector_lanes::<T>();
        let tails = RaggedTails::new(Taps::Same3x3 { h, w }, (c, self.o), h * w, lanes)?;
        *vectors = tails.main() / lanes;
        Some(tails)
    }

    /// `dst (o, h, w) = epilogue(conv(src (c, h, w)))`; the work inside the
    /// image is split over threads when `parallel`.
    pub(crate) fn apply(&mut self, src: &[T], dst: &mut [T], parallel: bool) {
        // SAFETY: only initialised values are written through the view.
        let view = unsafe { &mut *(dst as *mut [T] as *mut [MaybeUninit<T>]) };
        self.write(src, view, parallel, false)
    }

    /// [`ImageConv3x3::apply`] into memory that may be uninitialised: every
    /// element of `dst` is written (but the positions of a ragged tail split
    /// off by `split_ragged_tails`).
    fn apply_uninit(&mut self, src: &[T], dst: &mut [MaybeUninit<T>], parallel: bool) {
        self.write(src, dst, parallel, true)
    }

    /// [`ImageConv3x3::apply`] into `dst`, whose elements are initialised
    /// unless `uninit`.
    fn write(&mut self, src: &[T], dst: &mut [MaybeUninit<T>], parallel: bool, uninit: bool) {
        let (c, o, h, w) = (self.c, self.o, self.h, self.w);
        let dst = &mut dst[..o * h * w];
        let (bias, relu) = (self.bias.as_deref(), self.relu);
        if let Plan::Positions {
            kernel,
            packed,
            block,
            masks,
            vectors,
        } = &self.plan
        {
            let (kernel, block, packed, vectors) = (*kernel, *block, &**packed, *vectors);
            let run = |(b, out): (usize, &mut [MaybeUninit<T>])| {
                let blk = positions::Block {
                    x: src,
                    wb: &packed[b * 9 * c * block..][..9 * c * block],
                    masks,
                    c,
                    h,
                    w,
                    valid: block.min(o - b * block),
                    bias: bias.map(|bias| &bias[b * block..]),
                    relu,
                    vectors,
                };
                // SAFETY: `position_kernel` returned a kernel this CPU runs.
                unsafe { kernel(&blk, out) }
            };
            return for_each_block(dst, block * h * w, parallel, run);
        }
        // the other kernels write initialised outputs (every element)
        if uninit {
            dst.fill(MaybeUninit::new(T::zero()));
        }
        // SAFETY: every element of `dst` was initialised, given so or just now.
        let dst = unsafe { assume_init_mut(dst) };
        match &mut self.plan {
            Plan::Channels {
                kernel,
                packed,
                block,
                xp,
            } => {
                channels::fill_padded(src, c, h, w, xp);
                let (kernel, block, xp, packed) = (*kernel, *block, &*xp, &**packed);
                let run = |(b, out): (usize, &mut [T])| {
                    let blk = channels::Block {
                        xp,
                        wb: &packed[b * c * 9 * block..][..c * 9 * block],
                        c,
                        h,
                        w,
                        valid: block.min(o - b * block),
                    };
                    // SAFETY: `channel_kernel` returned a kernel this CPU runs.
                    unsafe { kernel(&blk, out) }
                };
                for_each_block(dst, block * h * w, parallel, run);
            }
            Plan::Winograd(winograd) => winograd.apply(src, dst, parallel),
            Plan::Positions { .. } => unreachable!("the position-tiled kernel returned above"),
        }
        Epilogue { bias, relu }.apply(dst, h * w);
    }
}

/// Runs `f` on the numbered `chunk`-sized pieces of `out`, in parallel when asked.
fn for_each_block<T: Send>(
    out: &mut [T],
    chunk: usize,
    parallel: bool,
    f: impl Fn((usize, &mut [T])) + Sync + Send,
) {
    if parallel {
        out.par_chunks_mut(chunk).enumerate().for_each(f);
    } else {
        out.chunks_mut(chunk).enumerate().for_each(f);
    }
}

/// One clone of a per-thread state (kernels with their buffers) for each
/// thread of the pool: tasks take the one of the thread they run on, so
/// rayon's scheduling stays dynamic while the buffers are made once per
/// thread rather than once per task.
pub(crate) struct PerThread<S>(Vec<Mutex<S>>);

impl<S: Clone> PerThread<S> {
    pub(crate) fn new(state: &S) -> Self {
        PerThread(
            (0..rayon::current_num_threads().max(1))
                .map(|_| Mutex::new(state.clone()))
                .collect(),
        )
    }

    /// Runs `f` on the state of the current thread.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut S) -> R) -> R {
        let i = rayon::current_thread_index().unwrap_or(0) % self.0.len();
        let mut state = self.0[i].lock().unwrap_or_else(|e| e.into_inner());
        f(&mut state)
    }
}

/// `y = epilogue(conv3x3(x, w))` with padding 1 for `x: (n, c, h, w)`, `w:
/// (o, c, 3, 3)`, the epilogue in the kernels' registers where they can. Spread over images, each task takes a group of them so
/// that the ragged tails of the position-tiled kernel fill vectors (see
/// [`RaggedTails`]).
pub(crate) fn conv3x3_same<T: DirectConv>(
    x: &[T],
    w: &[T],
    g: &ConvGeom,
    epilogue: Epilogue<'_, T>,
) -> Vec<T> {
    let (n, c, h, wd, o) = (g.n, g.c, g.h, g.w, g.o);
    let (x_img, y_img) = (c * h * wd, o * h * wd);
    if n * y_img == 0 {
        return vec![T::zero(); n * y_img];
    }
    let mut prepared = ImageConv3x3::new(w, o, c, (h, wd)).with_epilogue(epilogue);
    let threads = Threads::for_batch(n, y_img * c * 9);
    let inside = threads == Threads::InsideImages;
    // the tails' product: the weights as `(o, c x 9)`
    let tails = (!inside)
        .then(|| prepared.split_ragged_tails())
        .flatten()
        .map(|tails| {
            let kernel = T::pointwise_product_kernel();
            let packed = pointwise_product::Packed::new(w, (o, c * 9), false, kernel.ob)
                .with_epilogue(epilogue);
            (tails, packed, kernel)
        });
    let group = tails.as_ref().map_or(1, |_| RaggedTails::group(n));
    let images = |conv: &mut ImageConv3x3<T>, piece: usize, y: &mut [MaybeUninit<T>]| {
        let count = y.len() / y_img;
        let xs = &x[piece * group * x_img..][..count * x_img];
        for (xi, yi) in xs.chunks_exact(x_img).zip(y.chunks_exact_mut(y_img)) {
            conv.apply_uninit(xi, yi, inside);
        }
        if let Some((tails, packed, kernel)) = &tails {
            tails.apply((packed, *kernel), xs, y, count);
        }
    };
    let piece = group * y_img;
    if threads == Threads::OverImages {
        let convs = PerThread::new(&prepared);
        written_pieces(n * y_img, piece, true, |p, y| {
            convs.with(|conv| images(conv, p, y))
        })
    } else {
        let conv = Mutex::new(prepared);
        written_pieces(n * y_img, piece, false, |p, y| {
            let mut conv = conv.lock().unwrap_or_else(|e| e.into_inner());
            images(&mut conv, p, y)
        })
    }
}

/// The transpose of [`conv3x3_same`] applied to `dy: (n, o, h, w)`: a 3x3 same
/// convolution with weights `w'[c, o, i, j] = w[o, c, 2 - i, 2 - j]`.
pub(crate) fn conv3x3_same_transposed<T: DirectConv>(dy: &[T], w: &[T], g: &ConvGeom) -> Vec<T> {
    let swapped = ConvGeom {
        c: g.o,
        o: g.c,
        ..*g
    };
    conv3x3_same(dy, &adjoint_weights(w, g.o, g.c), &swapped, Epilogue::NONE)
}

/// The weight gradient of [`conv3x3_same`]: `dw[o, c, i, j] = sum_{n, r, q}
/// dy[n, o, r, q] x[n, c, r + i - 1, q + j - 1]`, parallel over (output block,
/// input channel, kernel row) triples, each reduced over the whole batch in
/// registers.
pub(crate) fn conv3x3_same_weight_grad<T: DirectConv>(x: &[T], dy: &[T], g: &ConvGeom) -> Vec<T> {
    let mut dw = vec![T::zero(); g.o * g.c * 9];
    weight_grad_into(
        x,
        dy,
        g,
        &mut dw,
        g.n * g.o * g.c * g.h * g.w * 9 >= PAR_THRESHOLD,
    );
    dw
}

/// Adds the weight gradient of [`conv3x3_same`] to `dw`, in parallel when
/// `parallel`.
pub(crate) fn weight_grad_into<T: DirectConv>(
    x: &[T],
    dy: &[T],
    g: &ConvGeom,
    dw: &mut [T],
    parallel: bool,
) {
    // vectors along output channels from 32 of them, when there are enough
    // input channels to pay for transposing `dy` (2 -> 64 channels on 14x14
    // images took 5x as long as with vectors along positions)
    if let Some(kernel) = T::channel_weight_kernel(g.o).filter(|_| g.o >= 32 && g.c >= 16) {
        let grad = weight_channels::ChannelWeightGrad::new(x, dy, g, kernel.width, parallel);
        return grad.accumulate(dw, kernel, parallel);
    }
    let lanes = vector_lanes::<T>();
    WeightGrad::new(x, dy, g, lanes).accumulate(dw, T::weight_kernel(g.o), lanes, parallel);
}

/// The vector width of the kernels this CPU runs, in elements of `T`.
fn vector_lanes<T>() -> usize {
    #[cfg(target_arch = "x86_64")]
    match isa() {
        Isa::Avx512 => 64 / std::mem::size_of::<T>(),
        Isa::Avx2 => 32 / std::mem::size_of::<T>(),
        Isa::Baseline => 1,
    }
    #[cfg(not(target_arch = "x86_64"))]
    1
}
