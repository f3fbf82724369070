//! Winograd's minimal filtering F(2x2, 3x3) for 3x3 same convolutions:
//! 16 multiplications per 2x2 output tile and channel pair where the direct
//! kernels need 36.
//!
//! With `d` a 4x4 input patch (stride 2) of the zero-padded image and `g` a
//! 3x3 kernel,
//!
//! ```text
//! Y = A^T [ (G g G^T) .* (B^T d B) ] A,
//! B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1],
//! G   = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1],
//! A^T = [1 1 1 0; 0 1 -1 -1],
//! ```
//!
//! so with `U[xi] = (G g G^T)[xi]` per (output, input) channel pair and
//! `V[xi] = (B^T d B)[xi]` per (input channel, tile), the sum over input
//! channels is one product `M[xi] = U[xi] V[xi]` for each of the 16
//! positions `xi` of the 4x4 tile, and the output transform maps each tile
//! of `M` back to a 2x2 output block. The constants are exact in binary and
//! the transforms only add and subtract, so rounding stays near the direct
//! kernels'.
//!
//! The products use a register-tiled kernel with vectors along output
//! channels (`OV` vectors) and `NP` tiles broadcast from `V`: `OV + NP`
//! loads per `OV x NP` multiply-adds, with `U` packed once per weights and
//! `M` stored tile-major (`[xi][tile][channel]`), so the output transform
//! reads whole vectors of channels. AVX-512 only; elsewhere the direct
//! kernels run.

use crate::conv::simd::Vector;
use crate::Element;
use rayon::prelude::*;
use std::sync::Arc;

/// One product's operands: `U[xi]` for one block of channels, and `V[xi]`
/// for a run of tiles (both tile-major: `V` and `M` hold the 16 positions
/// of a tile next to each other).
pub(crate) struct Product<'a, T> {
    /// `[c][width]`: this block's `width` output channels for each input channel.
    pub u: &'a [T],
    /// `V[xi]` of tile `t`, input channel `ch` at `v[t * v_stride + ch]`.
    pub v: &'a [T],
    pub v_stride: usize,
    pub c: usize,
    /// Tiles in the run, a multiple of the kernel's `NP`.
    pub tiles: usize,
    /// `M[xi]` of tile `t`, this block's channel `k` at `out[t * m_stride + column + k]`.
    pub m_stride: usize,
    pub column: usize,
}

/// A product kernel compiled for one instruction set.
pub(crate) type ProductFn<T> = unsafe fn(&Product<T>, &mut [T]);

/// `out[t][column + k] = sum_ch u[ch][k] v[t][ch]` for the block's `OV *
/// LANES` channels `k` and every tile `t` of the run.
///
/// # Safety
/// The CPU must support `V`'s instructions; `v` must hold the run's tiles
/// and `out` their rows up to `column + OV * LANES`.
#[inline(always)]
pub(crate) unsafe fn product<T: Element, V: Vector<T>, const OV: usize, const NP: usize>(
    p: &Product<T>,
    out: &mut [T],
) {
    let width = OV * V::LANES;
    assert!(p.u.len() >= p.c * width);
    assert!(p.tiles == 0 || p.v.len() >= (p.tiles - 1) * p.v_stride + p.c);
    assert!(p.tiles == 0 || out.len() >= (p.tiles - 1) * p.m_stride + p.column + width);
    for t0 in (0..p.tiles).step_by(NP) {
        let mut acc = [[V::zero(); NP]; OV];
        let v0 = p.v.as_ptr().add(t0 * p.v_stride);
        for ch in 0..p.c {
            let uw = p.u.as_ptr().add(ch * width);
            let uv: [V; OV] = std::array::from_fn(|v| V::load(uw.add(v * V::LANES)));
            for px in 0..NP {
                let xb = V::splat(*v0.add(px * p.v_stride + ch));
                for (acc_v, &u) in acc.iter_mut().zip(&uv) {
                    acc_v[px] = acc_v[px].mul_add(u, xb);
                }
            }
        }
        let m0 = out.as_mut_ptr().add(t0 * p.m_stride + p.column);
        for (v, acc_v) in acc.iter().enumerate() {
            for (px, a) in acc_v.iter().enumerate() {
                a.store(m0.add(px * p.m_stride + v * V::LANES));
            }
        }
    }
}

/// The tiling of one image: `c` input channels stored `cp` apart (a
/// multiple of the vector width), `o` output channels `op` apart, `h x w`
/// pixels in `th x tw` tiles.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tiling {
    pub c: usize,
    pub cp: usize,
    pub o: usize,
    pub op: usize,
    pub h: usize,
    pub w: usize,
    pub th: usize,
    pub tw: usize,
}

impl Tiling {
    /// Columns of the padded image.
    fn wp(&self) -> usize {
        2 * self.tw + 2
    }
}

/// An input transform: `xq` the padded channels-last image, `v` its output.
pub(crate) type InputFn<T> = unsafe fn(&[T], &mut [T], &Tiling);

/// An output transform: `m` the products, `dst` the `(o, h, w)` output and
/// `y` a `[4][op]` buffer.
pub(crate) type OutputFn<T> = unsafe fn(&[T], &mut [T], &mut [T], &Tiling);

/// The kernels of one instruction set and element type.
#[derive(Clone, Copy)]
pub(crate) struct Kernels<T> {
    pub product: ProductFn<T>,
    pub input: InputFn<T>,
    pub output: OutputFn<T>,
    /// Output channels per block of `product`, and tiles per step.
    pub width: usize,
    pub np: usize,
    /// The vector width the transforms run on.
    pub lanes: usize,
}

/// `V = B^T d B` for every tile: `d` the 4x4 patch at padded pixel
/// `(2 ty, 2 tx)` of `xq (2 th + 2, 2 tw + 2, cp)`, written to
/// `v[tile][xi][cp]`, a vector of channels at a time.
///
/// # Safety
/// The CPU must support `V`'s instructions; `cp` must be a multiple of its
/// lanes and the buffers sized for `tiling`.
#[inline(always)]
pub(crate) unsafe fn input<T: Element, V: Vector<T>>(xq: &[T], v: &mut [T], g: &Tiling) {
    let (cp, wp) = (g.cp, g.wp());
    assert!(xq.len() >= (2 * g.th + 2) * wp * cp && v.len() >= g.th * g.tw * 16 * cp);
    let (xq, v) = (xq.as_ptr(), v.as_mut_ptr());
    for t in 0..g.th * g.tw {
        let (ty, tx) = (t / g.tw, t % g.tw);
        let patch = xq.add((2 * ty * wp + 2 * tx) * cp);
        let out = v.add(t * 16 * cp);
        for k in (0..cp).step_by(V::LANES) {
            let d: [V; 16] =
                std::array::from_fn(|ab| V::load(patch.add(((ab / 4) * wp + ab % 4) * cp + k)));
            // columns of B^T d, then each row's entries of (B^T d) B
            let columns: [[V; 4]; 4] = std::array::from_fn(|b| {
                let (d0, d1, d2, d3) = (d[b], d[4 + b], d[8 + b], d[12 + b]);
                [d0.sub(d2), d1.add(d2), d2.sub(d1), d1.sub(d3)]
            });
            let rows: [[V; 4]; 4] = std::array::from_fn(|i| columns.map(|col| col[i]));
            for (i, &[a, b, e, f]) in rows.iter().enumerate() {
                let cols = [a.sub(e), b.add(e), e.sub(b), b.sub(f)];
                for (j, val) in cols.into_iter().enumerate() {
                    val.store(out.add((i * 4 + j) * cp + k));
                }
            }
        }
    }
}

/// `Y = A^T M A` for every tile, `m[tile][xi][op]`, a vector of channels at
/// a time, written through `y` into the planes of `dst (o, h, w)`.
///
/// # Safety
/// As [`input`], with `op` a multiple of the lanes.
#[inline(always)]
pub(crate) unsafe fn output<T: Element, V: Vector<T>>(
    m: &[T],
    dst: &mut [T],
    y: &mut [T],
    g: &Tiling,
) {
    let (op, h, w) = (g.op, g.h, g.w);
    assert!(m.len() >= g.th * g.tw * 16 * op && y.len() >= 4 * op && dst.len() >= g.o * h * w);
    for t in 0..g.th * g.tw {
        let mt = m.as_ptr().add(t * 16 * op);
        for k in (0..op).step_by(V::LANES) {
            let ms: [V; 16] = std::array::from_fn(|xi| V::load(mt.add(xi * op + k)));
            // A^T M: two rows of four, then the two columns of each
            let s0: [V; 4] = std::array::from_fn(|j| ms[j].add(ms[4 + j]).add(ms[8 + j]));
            let s1: [V; 4] = std::array::from_fn(|j| ms[4 + j].sub(ms[8 + j]).sub(ms[12 + j]));
            let ys = [
                s0[0].add(s0[1]).add(s0[2]),
                s0[1].sub(s0[2]).sub(s0[3]),
                s1[0].add(s1[1]).add(s1[2]),
                s1[1].sub(s1[2]).sub(s1[3]),
            ];
            for (i, yv) in ys.into_iter().enumerate() {
                yv.store(y.as_mut_ptr().add(i * op + k));
            }
        }
        let (r, q) = (2 * (t / g.tw), 2 * (t % g.tw));
        let (right, below) = (q + 1 < w, r + 1 < h);
        let (yp, dp) = (y.as_ptr(), dst.as_mut_ptr().add(r * w + q));
        // the 2x2 block of each channel's plane (pixels past the image's
        // last row or column dropped); in bounds: `(k, r, q) < (o, h, w)`
        if right && below {
            for k in 0..g.o {
                let at = dp.add(k * h * w);
                *at = *yp.add(k);
                *at.add(1) = *yp.add(op + k);
                *at.add(w) = *yp.add(2 * op + k);
                *at.add(w + 1) = *yp.add(3 * op + k);
            }
        } else {
            for k in 0..g.o {
                let at = dp.add(k * h * w);
                *at = *yp.add(k);
                if right {
                    *at.add(1) = *yp.add(op + k);
                }
                if below {
                    *at.add(w) = *yp.add(2 * op + k);
                }
            }
        }
    }
}

/// A 3x3 same convolution `(c, h, w) -> (o, h, w)` by F(2x2, 3x3) on one
/// image at a time, with the transformed weights (shared by clones) and the
/// buffers (one set per clone) kept.
#[derive(Clone)]
pub(crate) struct Winograd<T> {
    kernels: Kernels<T>,
    tiling: Tiling,
    /// Tiles rounded up to a multiple of `np`.
    tiles: usize,
    /// `U` packed as `[16][block][c][width]`, zero beyond `o`.
    u: Arc<[T]>,
    /// `V`, `[tile][16][cp]` (zero beyond the tiles and channels).
    v: Vec<T>,
    /// `M = U V`, `[tile][16][op]`.
    m: Vec<T>,
    /// The zero-padded image, channels last: `(2 th + 2, 2 tw + 2, cp)`.
    xq: Vec<T>,
    /// One tile's output, `[4][op]`.
    y: Vec<T>,
}

impl<T: Element> Winograd<T> {
    /// The convolution with weights `w (o, c, 3, 3)` on `h x wd` images,
    /// run by `kernels`.
    pub(crate) fn new(
        w: &[T],
        o: usize,
        c: usize,
        (h, wd): (usize, usize),
        kernels: Kernels<T>,
    ) -> Self {
        let width = kernels.width;
        let (th, tw) = (h.div_ceil(2), wd.div_ceil(2));
        let tiles = (th * tw).div_ceil(kernels.np) * kernels.np;
        let blocks = o.div_ceil(width);
        let tiling = Tiling {
            c,
            cp: c.div_ceil(kernels.lanes) * kernels.lanes,
            o,
            op: blocks * width,
            h,
            w: wd,
            th,
            tw,
        };
        let half = T::from_f64(0.5);
        let mut u = vec![T::zero(); 16 * tiling.op * c];
        for oc in 0..o {
            let (b, k) = (oc / width, oc % width);
            for ch in 0..c {
                let g = &w[(oc * c + ch) * 9..][..9];
                // G g: 4 x 3
                let mut gg = [[T::zero(); 3]; 4];
                for j in 0..3 {
                    let (a, b, e) = (g[j], g[3 + j], g[6 + j]);
                    gg[0][j] = a;
                    gg[1][j] = (a + b + e) * half;
                    gg[2][j] = (a - b + e) * half;
                    gg[3][j] = e;
                }
                // (G g) G^T: 4 x 4
                for (i, row) in gg.iter().enumerate() {
                    let (a, b2, e) = (row[0], row[1], row[2]);
                    let out = [a, (a + b2 + e) * half, (a - b2 + e) * half, e];
                    for (j, val) in out.into_iter().enumerate() {
                        u[(((i * 4 + j) * blocks + b) * c + ch) * width + k] = val;
                    }
                }
            }
        }
        Winograd {
            kernels,
            tiling,
            tiles,
            u: u.into(),
            v: vec![T::zero(); tiles * 16 * tiling.cp],
            m: vec![T::zero(); tiles * 16 * tiling.op],
            xq: vec![T::zero(); (2 * th + 2) * tiling.wp() * tiling.cp],
            y: vec![T::zero(); 4 * tiling.op],
        }
    }

    /// `dst (o, h, w) = conv(src (c, h, w))`; runs of tiles are split over
    /// threads when `parallel`.
    pub(crate) fn apply(&mut self, src: &[T], dst: &mut [T], parallel: bool) {
        let g = self.tiling;
        let (cp, wp) = (g.cp, g.wp());
        assert!(src.len() >= g.c * g.h * g.w && self.xq.len() >= (g.h + 2) * wp * cp);
        let xq = self.xq.as_mut_ptr();
        for (ch, plane) in src.chunks(g.h * g.w).take(g.c).enumerate() {
            for (r, row) in plane.chunks(g.w).enumerate() {
                let base = ((r + 1) * wp + 1) * cp + ch;
                for (q, &x) in row.iter().enumerate() {
                    // SAFETY: `base + q cp < (h + 2) wp cp` for `q < w`,
                    // `ch < c <= cp` (asserted above)
                    unsafe { *xq.add(base + q * cp) = x };
                }
            }
        }
        let k = self.kernels;
        // SAFETY: the kernels were chosen for this CPU, and the buffers are
        // sized for the tiling with channel strides padded to the lanes.
        unsafe { (k.input)(&self.xq, &mut self.v, &g) };
        let blocks = g.op / k.width;
        let (u, v) = (&self.u, &self.v);
        let run = |(r, m): (usize, &mut [T])| {
            let tiles = m.len() / (16 * g.op);
            let v = &v[r * k.np * 16 * cp..][..tiles * 16 * cp];
            for xi in 0..16 {
                for b in 0..blocks {
                    let p = Product {
                        u: &u[(xi * blocks + b) * g.c * k.width..][..g.c * k.width],
                        v: &v[xi * cp..],
                        v_stride: 16 * cp,
                        c: g.c,
                        tiles,
                        m_stride: 16 * g.op,
                        column: xi * g.op + b * k.width,
                    };
                    // SAFETY: as above; `v` and `m` hold this run's tiles.
                    unsafe { (k.product)(&p, m) }
                }
            }
        };
        if parallel {
            self.m
                .par_chunks_mut(k.np * 16 * g.op)
                .enumerate()
                .for_each(run);
        } else {
            run((0, &mut self.m[..self.tiles * 16 * g.op]));
        }
        // SAFETY: as above.
        unsafe { (k.output)(&self.m, dst, &mut self.y, &g) };
    }
}
