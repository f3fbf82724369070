//! CPU convolution kernels: im2col + GEMM for every geometry, direct kernels
//! for 3x3 stride-1 same convolutions, and 1x1 convolutions as one GEMM per
//! image (their weight gradient by the direct [`pointwise`] kernel).
//!
//! Images are independent: they are spread over rayon when each image's GEMM
//! is small enough for matrixmultiply to keep on one thread, and run one
//! after another (each GEMM threaded by matrixmultiply) otherwise.

use super::direct3x3::{self, DirectConv, Threads};
use super::geometry::ConvGeom;
use super::ragged::{RaggedTails, Taps};
use super::{pointwise, pointwise_product};
use crate::cpu::matmul::{gemm_is_threaded, small_gemm};
use crate::cpu::{
    tiled_gemm, vectorized, written_pieces, zeroed_pieces, Loop, Strided, TiledGemm, PAR_THRESHOLD,
};
use crate::Element;
use rayon::prelude::*;

/// Row-major `c (+)= a b` for `a: m x k`, `b: k x n` given as (slice, row
/// stride, column stride): direct loops for tiny products, the register-tiled
/// kernel for overwritten outputs of at most [`TILED_COLUMNS`] columns (the
/// positions of small images, where matrixmultiply's packing of both
/// operands costs more than the product), matrixmultiply otherwise.
#[allow(clippy::too_many_arguments)]
fn gemm<T: TiledGemm>(
    m: usize,
    k: usize,
    n: usize,
    a: (&[T], usize, usize),
    b: (&[T], usize, usize),
    c: &mut [T],
    accumulate: bool,
) {
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs;
    if m == 0 || n == 0 || k == 0 {
        if !accumulate {
            c[..m * n].fill(T::zero());
        }
        return;
    }
    assert!(
        last(m, k, a.1, a.2) < a.0.len() && last(k, n, b.1, b.2) < b.0.len() && m * n <= c.len()
    );
    // SAFETY: the bounds of all three matrices were checked above; c is exclusive.
    unsafe {
        let (ap, bp, cp) = (a.0.as_ptr(), b.0.as_ptr(), c.as_mut_ptr());
        let strides = [a.1, a.2, b.1, b.2].map(|s| s as isize);
        if small_gemm(
            m,
            k,
            n,
            (ap, strides[0], strides[1]),
            (bp, strides[2], strides[3]),
            cp,
            accumulate,
        ) {
            return;
        }
        if !accumulate && n <= TILED_COLUMNS {
            let operand = |ptr, rs, cs| Strided { ptr, rs, cs };
            // an initialised slice viewed as possibly uninitialised
            let out = &mut *(&mut c[..m * n] as *mut [T] as *mut [std::mem::MaybeUninit<T>]);
            let parallel = gemm_is_threaded(m, k, n);
            if tiled_gemm(
                m,
                k,
                n,
                operand(ap, strides[0], strides[1]),
                operand(bp, strides[2], strides[3]),
                None,
                out,
                parallel,
            ) {
                return;
            }
        }
        T::gemm(
            m,
            k,
            n,
            a.0.as_ptr(),
            a.1 as isize,
            a.2 as isize,
            b.0.as_ptr(),
            b.1 as isize,
            b.2 as isize,
            c.as_mut_ptr(),
            n as isize,
            1,
            accumulate,
        );
    }
}

/// The most columns (output positions) of a product that [`gemm`] gives to
/// the register-tiled kernel: 7x7 images gain about a fifth there, 14x14
/// ones lose a little (Intel Xeon, AVX-512).
const TILED_COLUMNS: usize = 64;

/// The outputs of `n` images of `image_len` elements each, `f(image, out)`
/// writing image `image`'s (zeroed first, see [`zeroed_pieces`]), in
/// parallel unless each image's GEMM is threaded by matrixmultiply.
fn image_outputs<T: Element>(
    n: usize,
    image_len: usize,
    gemm_threaded: bool,
    f: impl Fn(usize, &mut [T]) + Sync + Send,
) -> Vec<T> {
    if image_len == 0 {
        return Vec::new();
    }
    zeroed_pieces(n * image_len, image_len, !gemm_threaded, f)
}

/// Source index along one axis for output position `out` and tap `tap`, if inside.
#[inline]
fn source(
    out: usize,
    tap: usize,
    stride: usize,
    pad: usize,
    dil: usize,
    size: usize,
) -> Option<usize> {
    (out * stride + tap * dil)
        .checked_sub(pad)
        .filter(|&i| i < size)
}

/// The output positions `q` whose source column `q*s + j*d - p` lies in `0..w`.
fn valid_range(wo: usize, w: usize, s: usize, p: usize, jd: usize) -> std::ops::Range<usize> {
    let lo = p.saturating_sub(jd).div_ceil(s).min(wo);
    let hi = if w + p > jd {
        ((w + p - jd - 1) / s + 1).min(wo)
    } else {
        0
    };
    lo..hi.max(lo)
}

/// `col[(c, i, j), (p, q)] = x[c, p*sh - ph + i*dh, q*sw - pw + j*dw]` (zero outside)
/// for one group's input `xg: (cg, h, w)`.
fn im2col<T: Element>(xg: &[T], g: &ConvGeom, col: &mut [T]) {
    let (sh, sw) = g.stride;
    let (ph, pw) = g.padding;
    let (dh, dw) = g.dilation;
    let npos = g.y_positions();
    for (r, row) in col.chunks_mut(npos).enumerate() {
        let (cc, i, j) = (r / (g.kh * g.kw), r / g.kw % g.kh, r % g.kw);
        let valid = valid_range(g.wo, g.w, sw, pw, j * dw);
        for (p, out) in row.chunks_mut(g.wo).enumerate() {
            let Some(ih) = source(p, i, sh, ph, dh, g.h) else {
                out.fill(T::zero());
                continue;
            };
            let xrow = &xg[(cc * g.h + ih) * g.w..][..g.w];
            out[..valid.start].fill(T::zero());
            out[valid.end..].fill(T::zero());
            if valid.is_empty() {
                continue;
            }
            let first = valid.start * sw + j * dw - pw;
            if sw == 1 {
                out[valid.clone()].copy_from_slice(&xrow[first..first + valid.len()]);
            } else {
                for (k, o) in out[valid.clone()].iter_mut().enumerate() {
                    *o = xrow[first + k * sw];
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: `xg[c, ...] += col[(c, i, j), (p, q)]`.
fn col2im<T: Element>(col: &[T], g: &ConvGeom, xg: &mut [T]) {
    let (sh, sw) = g.stride;
    let (ph, pw) = g.padding;
    let (dh, dw) = g.dilation;
    let npos = g.y_positions();
    for (r, row) in col.chunks(npos).enumerate() {
        let (cc, i, j) = (r / (g.kh * g.kw), r / g.kw % g.kh, r % g.kw);
        let valid = valid_range(g.wo, g.w, sw, pw, j * dw);
        for (p, src) in row.chunks(g.wo).enumerate() {
            let Some(ih) = source(p, i, sh, ph, dh, g.h).filter(|_| !valid.is_empty()) else {
                continue;
            };
            let xrow = &mut xg[(cc * g.h + ih) * g.w..][..g.w];
            let first = valid.start * sw + j * dw - pw;
            for (k, &v) in src[valid.clone()].iter().enumerate() {
                let t = &mut xrow[first + k * sw];
                *t = *t + v;
            }
        }
    }
}

/// The forward convolution's epilogue on the CPU (see
/// `backend::ConvEpilogue`): per output channel, `v + bias[o]`, then ReLU.
#[derive(Clone, Copy)]
pub(crate) struct Epilogue<'a, T> {
    pub bias: Option<&'a [T]>,
    pub relu: bool,
}

impl<T: Element> Epilogue<'_, T> {
    pub const NONE: Self = Epilogue {
        bias: None,
        relu: false,
    };

    /// Applies it to one image's output `(o, positions)`, while it is in cache.
    pub fn apply(&self, image: &mut [T], positions: usize) {
        if (self.bias.is_none() && !self.relu) || positions == 0 {
            return;
        }
        for (o, row) in image.chunks_exact_mut(positions).enumerate() {
            let bias = self.bias.map_or(T::zero(), |b| b[o]);
            vectorized(ChannelLoop {
                row,
                bias,
                relu: self.relu,
            });
        }
    }
}

/// One output channel's epilogue (compiled per instruction set).
struct ChannelLoop<'a, T> {
    row: &'a mut [T],
    bias: T,
    relu: bool,
}

impl<T: Element> Loop for ChannelLoop<'_, T> {
    #[inline(always)]
    fn run(self) {
        let (b, zero) = (self.bias, T::zero());
        if self.relu {
            self.row.iter_mut().for_each(|v| *v = (*v + b).max(zero));
        } else {
            self.row.iter_mut().for_each(|v| *v = *v + b);
        }
    }
}

/// `out[n] = epilogue(A b[n])` (the epilogue applied in registers) for the
/// images `b (n, k, positions)` of a 1x1 convolution and `A (rows, k)` (given as `(k, rows)` when
/// transposed): the forward (`A = W`) and the input gradient (`A = W^T`).
/// Spread over images, each task takes a group of them so that their ragged
/// tails fill vectors (see [`RaggedTails`]).
fn pointwise_products<T: DirectConv>(
    b: &[T],
    (a, transpose): (&[T], bool),
    (rows, k): (usize, usize),
    g: &ConvGeom,
    epilogue: Epilogue<'_, T>,
) -> Vec<T> {
    let positions = g.h * g.w;
    let kernel = T::pointwise_product_kernel();
    let packed =
        pointwise_product::Packed::new(a, (rows, k), transpose, kernel.ob).with_epilogue(epilogue);
    let threads = Threads::for_batch(g.n, rows * k * positions);
    let inside = threads == Threads::InsideImages;
    let tails =
        RaggedTails::new(Taps::Pointwise, (k, rows), positions, kernel.lanes).filter(|_| !inside);
    let (main, group) = match &tails {
        Some(tails) => (tails.main(), RaggedTails::group(g.n)),
        None => (positions, 1),
    };
    let (image_len, x_len) = (rows * positions, k * positions);
    written_pieces(
        g.n * image_len,
        (group * image_len).max(1),
        threads == Threads::OverImages,
        |piece, out| {
            let images = out.len() / image_len.max(1);
            let x = &b[piece * group * x_len..][..images * x_len];
            for (xi, yi) in x.chunks_exact(x_len).zip(out.chunks_exact_mut(image_len)) {
                pointwise_product::image(&packed, kernel, xi, yi, (positions, main), inside);
            }
            if let Some(tails) = &tails {
                tails.apply((&packed, kernel), x, out, images);
            }
        },
    )
}

/// `y = epilogue(conv(x, w))`: X-space `x` and weights to Y-space.
pub(crate) fn conv_fwd<T: DirectConv>(
    x: &[T],
    w: &[T],
    g: &ConvGeom,
    epilogue: Epilogue<'_, T>,
) -> Vec<T> {
    if g.is_empty() {
        let mut y = vec![T::zero(); g.n * g.y_image()];
        y.chunks_exact_mut(g.y_image().max(1))
            .for_each(|yi| epilogue.apply(yi, g.y_positions()));
        return y;
    }
    if g.is_3x3_same() {
        return direct3x3::conv3x3_same(x, w, g, epilogue);
    }
    if g.is_pointwise() && g.groups == 1 {
        return pointwise_products(x, (w, false), (g.o, g.c), g, epilogue);
    }
    let (m, k, npos) = (g.og(), g.ckk(), g.y_positions());
    image_outputs(g.n, g.y_image(), gemm_is_threaded(m, k, npos), |img, yi| {
        let xi = &x[img * g.x_image()..][..g.x_image()];
        let mut col = vec![T::zero(); if g.is_pointwise() { 0 } else { k * npos }];
        for grp in 0..g.groups {
            let xg = &xi[grp * g.cg() * g.h * g.w..][..g.cg() * g.h * g.w];
            let b = if g.is_pointwise() {
                xg
            } else {
                im2col(xg, g, &mut col);
                &col
            };
            let wg = &w[grp * m * k..][..m * k];
            gemm(
                m,
                k,
                npos,
                (wg, k, 1),
                (b, npos, 1),
                &mut yi[grp * m * npos..],
                false,
            );
        }
        epilogue.apply(yi, npos);
    })
}

/// `dx = conv^T(dy, w)`: Y-space `dy` to X-space (the transposed convolution).
pub(crate) fn conv_bwd_data<T: DirectConv>(dy: &[T], w: &[T], g: &ConvGeom) -> Vec<T> {
    if g.is_empty() {
        return vec![T::zero(); g.n * g.x_image()];
    }
    if g.is_3x3_same() {
        return direct3x3::conv3x3_same_transposed(dy, w, g);
    }
    if g.is_pointwise() && g.groups == 1 {
        return pointwise_products(dy, (w, true), (g.c, g.o), g, Epilogue::NONE);
    }
    let (m, k, npos) = (g.og(), g.ckk(), g.y_positions());
    image_outputs(
        g.n,
        g.x_image(),
        gemm_is_threaded(k, m, npos),
        |img, dxi| {
            let dyi = &dy[img * g.y_image()..][..g.y_image()];
            let mut col = vec![T::zero(); if g.is_pointwise() { 0 } else { k * npos }];
            for grp in 0..g.groups {
                let dyg = &dyi[grp * m * npos..][..m * npos];
                let wg = &w[grp * m * k..][..m * k];
                let dxg = &mut dxi[grp * g.cg() * g.h * g.w..][..g.cg() * g.h * g.w];
                // W_g^T (k x m) @ dy_g (m x npos)
                if g.is_pointwise() {
                    gemm(k, m, npos, (wg, 1, k), (dyg, npos, 1), dxg, false);
                } else {
                    gemm(k, m, npos, (wg, 1, k), (dyg, npos, 1), &mut col, false);
                    col2im(&col, g, dxg);
                }
            }
        },
    )
}

/// `dw[o, c, i, j] = sum_{n, p, q} dy[n, o, p, q] x[n, c, ...]`: the weight gradient.
pub(crate) fn conv_bwd_weight<T: DirectConv>(x: &[T], dy: &[T], g: &ConvGeom) -> Vec<T> {
    if g.is_empty() {
        return vec![T::zero(); g.o * g.ckk()];
    }
    if g.is_3x3_same() {
        return direct3x3::conv3x3_same_weight_grad(x, dy, g);
    }
    let (m, k, npos) = (g.og(), g.ckk(), g.y_positions());
    if g.is_pointwise() && g.groups == 1 {
        let ops = pointwise::Operands {
            x,
            dy,
            n: g.n,
            c: g.c,
            o: g.o,
            positions: npos,
        };
        let parallel = g.n * m * k * npos >= PAR_THRESHOLD;
        return pointwise::weight_grad(&ops, T::pointwise_weight_kernel(), parallel);
    }
    let accumulate_image = |dw: &mut [T], col: &mut Vec<T>, img: usize| {
        let xi = &x[img * g.x_image()..][..g.x_image()];
        let dyi = &dy[img * g.y_image()..][..g.y_image()];
        for grp in 0..g.groups {
            let xg = &xi[grp * g.cg() * g.h * g.w..][..g.cg() * g.h * g.w];
            let b = if g.is_pointwise() {
                xg
            } else {
                col.resize(k * npos, T::zero());
                im2col(xg, g, col);
                &col[..]
            };
            let dyg = &dyi[grp * m * npos..][..m * npos];
            // dy_g (m x npos) @ col^T (npos x k)
            gemm(
                m,
                npos,
                k,
                (dyg, npos, 1),
                (b, 1, npos),
                &mut dw[grp * m * k..],
                true,
            );
        }
    };
    let size = g.groups * m * k;
    if gemm_is_threaded(m, npos, k) {
        let (mut dw, mut col) = (vec![T::zero(); size], Vec::new());
        (0..g.n).for_each(|img| accumulate_image(&mut dw, &mut col, img));
        return dw;
    }
    // Fixed groups of images, each summed into its own buffer in parallel,
    // then the buffers added in order: the result does not depend on scheduling.
    let per = IMAGES_PER_WEIGHT_PARTIAL;
    let partials: Vec<Vec<T>> = (0..g.n.div_ceil(per))
        .into_par_iter()
        .map(|chunk| {
            let (mut dw, mut col) = (vec![T::zero(); size], Vec::new());
            for img in chunk * per..g.n.min((chunk + 1) * per) {
                accumulate_image(&mut dw, &mut col, img);
            }
            dw
        })
        .collect();
    let mut dw = vec![T::zero(); size];
    for part in partials {
        dw.iter_mut().zip(&part).for_each(|(s, &v)| *s = *s + v);
    }
    dw
}

/// Images per partial sum of the parallel im2col weight gradient.
const IMAGES_PER_WEIGHT_PARTIAL: usize = 8;
