//! A register-tiled GEMM for the products of layers on vectors: `C = A B`
//! with `A` tall (a batch of rows, any strides) and `B` small (a weight
//! matrix, any strides).
//!
//! `B` is packed once per product into panels of `W` columns (`W` one or
//! two vector registers wide, zero-padded at the right edge); `A` is read in
//! place, one broadcast element at a time, so transposed operands cost no
//! copy. Each tile of `MR` rows of `C` by one panel is held in `2 MR`
//! registers across the whole `k` loop. The rows of `C` are spread over
//! rayon in blocks, so the product runs on the same threads as the
//! elementwise kernels around it (matrixmultiply threads on its own pool,
//! and each hand-off between the two pools costs a context switch), and
//! every element of `C` is summed in the same order whatever the thread
//! count.

use super::matmul::add_bias;
use crate::conv::simd::Vector;
#[cfg(target_arch = "x86_64")]
use crate::conv::simd::{isa, F32x16, F32x8, F64x4, F64x8, Isa};
use crate::Element;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// The most bytes of packed `B`: the panels stay in the L2 cache while
/// every row tile runs over them (matrixmultiply, which blocks `k`, takes
/// the larger products).
const MAX_PACKED_BYTES: usize = 1024 * 1024;

/// Rows of `C` per register tile.
const MR: usize = 8;

/// Multiply-adds below which a product runs on the calling thread.
const PAR_MACS: usize = 1 << 16;

/// A strided matrix operand: element `(i, j)` at `ptr + i rs + j cs`.
#[derive(Clone, Copy)]
pub(crate) struct Strided<T> {
    pub ptr: *const T,
    pub rs: isize,
    pub cs: isize,
}

impl<T> Strided<T> {
    /// The operand from row `i` on.
    ///
    /// # Safety
    /// Row `i` must lie inside the matrix.
    unsafe fn rows_from(self, i: usize) -> Self {
        Strided {
            ptr: self.ptr.offset(i as isize * self.rs),
            ..self
        }
    }
}

// SAFETY: the operand is only read, and the callers keep the memory alive
// for the whole product.
unsafe impl<T: Sync> Sync for Strided<T> {}
unsafe impl<T: Sync> Send for Strided<T> {}

/// Computes rows `0..rows` of `C` from a block of `A`'s rows and packed
/// `B` (see [`row_block`]).
type BlockFn<T> = unsafe fn(usize, usize, usize, Strided<T>, &[T], usize, &mut [MaybeUninit<T>]);

/// Element types with a vector register per instruction set.
pub(crate) trait TiledGemm: Element {
    /// The register width and row-block kernel for this CPU, if it has
    /// vector registers for `Self`.
    fn block_kernel() -> Option<(usize, BlockFn<Self>)>;
}

macro_rules! tiled_gemm_for {
    ($t:ty, $avx512:ident, $avx2:ident) => {
        impl TiledGemm for $t {
            fn block_kernel() -> Option<(usize, BlockFn<$t>)> {
                #[cfg(target_arch = "x86_64")]
                {
                    #[target_feature(enable = "avx512f,avx2,fma")]
                    unsafe fn avx512(
                        rows: usize,
                        k: usize,
                        n: usize,
                        a: Strided<$t>,
                        packed: &[$t],
                        width: usize,
                        c: &mut [MaybeUninit<$t>],
                    ) {
                        row_block::<$t, $avx512>(rows, k, n, a, packed, width, c)
                    }
                    #[target_feature(enable = "avx2,fma")]
                    unsafe fn avx2(
                        rows: usize,
                        k: usize,
                        n: usize,
                        a: Strided<$t>,
                        packed: &[$t],
                        width: usize,
                        c: &mut [MaybeUninit<$t>],
                    ) {
                        row_block::<$t, $avx2>(rows, k, n, a, packed, width, c)
                    }
                    match isa() {
                        Isa::Avx512 => return Some(($avx512::LANES, avx512)),
                        Isa::Avx2 => return Some(($avx2::LANES, avx2)),
                        Isa::Baseline => {}
                    }
                }
                None
            }
        }
    };
}

tiled_gemm_for!(f32, F32x16, F32x8);
tiled_gemm_for!(f64, F64x8, F64x4);

/// Registers per panel row: one when `n` fits in one register.
fn panel_vectors(n: usize, lanes: usize) -> usize {
    if n <= lanes {
        1
    } else {
        2
    }
}

/// Writes the `m x n` product `A B`, plus `bias` on every row when given,
/// into `c` (row-major, every element written) and returns true if the
/// tiled kernel takes this shape on this CPU: vector registers for `T`, and
/// `B` small enough to stay in cache once packed. Returns false, writing
/// nothing, otherwise. Blocks of rows run in parallel when `parallel` and
/// the product is large enough.
///
/// # Safety
/// `a` and `b` must describe valid `m x k` and `k x n` matrices, and `c`
/// must hold `m n` elements.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn tiled_gemm<T: TiledGemm>(
    m: usize,
    k: usize,
    n: usize,
    a: Strided<T>,
    b: Strided<T>,
    bias: Option<&[T]>,
    c: &mut [MaybeUninit<T>],
    parallel: bool,
) -> bool {
    let Some((lanes, kernel)) = T::block_kernel() else {
        return false;
    };
    let width = panel_vectors(n, lanes) * lanes;
    let packed_bytes = k * n.div_ceil(width) * width * std::mem::size_of::<T>();
    if m == 0 || k == 0 || n == 0 || packed_bytes > MAX_PACKED_BYTES {
        return false;
    }
    let packed = pack(k, n, b, width);
    let tasks = if parallel {
        (m * k * n / PAR_MACS).min(4 * rayon::current_num_threads())
    } else {
        1
    };
    // the block's rows, written by the kernel, get the bias while in cache
    let finish = |c: &mut [MaybeUninit<T>]| {
        if let Some(bias) = bias {
            // SAFETY: the kernel wrote every element of `c`.
            add_bias(
                unsafe { &mut *(c as *mut [MaybeUninit<T>] as *mut [T]) },
                bias,
            );
        }
    };
    if tasks <= 1 {
        kernel(m, k, n, a, &packed, width, c);
        finish(c);
    } else {
        let block_rows = m.div_ceil(tasks).next_multiple_of(MR);
        c.par_chunks_mut(block_rows * n)
            .enumerate()
            .for_each(|(block, c)| {
                // SAFETY: the block's rows lie inside A (forwarded from the caller).
                unsafe {
                    let a = a.rows_from(block * block_rows);
                    kernel(c.len() / n, k, n, a, &packed, width, c);
                }
                finish(c);
            });
    }
    true
}

/// `B` as panels of `width` columns: panel `j` holds rows `0..k` of
/// columns `j width ..`, each row `width` elements, zeros past column `n`.
unsafe fn pack<T: Element>(k: usize, n: usize, b: Strided<T>, width: usize) -> Vec<T> {
    let panels = n.div_ceil(width);
    let mut packed = vec![T::zero(); panels * k * width];
    for (j, panel) in packed.chunks_exact_mut(k * width).enumerate() {
        let cols = width.min(n - j * width);
        for (p, row) in panel.chunks_exact_mut(width).enumerate() {
            let src = b
                .ptr
                .offset(p as isize * b.rs + (j * width) as isize * b.cs);
            for (q, v) in row[..cols].iter_mut().enumerate() {
                *v = *src.offset(q as isize * b.cs);
            }
        }
    }
    packed
}

/// Rows `0..rows` of `C` (row-major, row length `n`) from the same rows of
/// `a` and every panel of `packed`.
#[inline(always)]
unsafe fn row_block<T: Element, V: Vector<T>>(
    rows: usize,
    k: usize,
    n: usize,
    a: Strided<T>,
    packed: &[T],
    width: usize,
    c: &mut [MaybeUninit<T>],
) {
    let c = c.as_mut_ptr().cast::<T>();
    for i in (0..rows).step_by(MR) {
        let a = a.rows_from(i);
        for (j, panel) in packed.chunks_exact(k * width).enumerate() {
            let tile = Tile {
                a,
                k,
                panel: panel.as_ptr(),
                c: c.add(i * n + j * width),
                ldc: n,
                cols: width.min(n - j * width),
            };
            let r = MR.min(rows - i);
            if width == V::LANES {
                tile_rows::<T, V, 1>(tile, r)
            } else {
                tile_rows::<T, V, 2>(tile, r)
            }
        }
    }
}

/// One register tile's operands: rows of `a` from its first, a `k x
/// (NV lanes)` panel of packed `B`, and where in `C` the tile goes.
#[derive(Clone, Copy)]
struct Tile<T> {
    a: Strided<T>,
    k: usize,
    panel: *const T,
    c: *mut T,
    ldc: usize,
    cols: usize,
}

/// [`tile`] for `rows` (`1..=MR`) rows, each count compiled on its own so
/// that the accumulators stay in registers.
#[inline(always)]
unsafe fn tile_rows<T: Element, V: Vector<T>, const NV: usize>(t: Tile<T>, rows: usize) {
    match rows {
        8 => tile::<T, V, 8, NV>(t),
        7 => tile::<T, V, 7, NV>(t),
        6 => tile::<T, V, 6, NV>(t),
        5 => tile::<T, V, 5, NV>(t),
        4 => tile::<T, V, 4, NV>(t),
        3 => tile::<T, V, 3, NV>(t),
        2 => tile::<T, V, 2, NV>(t),
        _ => tile::<T, V, 1, NV>(t),
    }
}

/// `R` rows by `NV` registers of `C`: `c[r][q] = sum_p a[r][p] panel[p][q]`.
#[inline(always)]
unsafe fn tile<T: Element, V: Vector<T>, const R: usize, const NV: usize>(t: Tile<T>) {
    let mut acc = [[V::zero(); NV]; R];
    let (mut a, mut b) = (t.a.ptr, t.panel);
    for _ in 0..t.k {
        let mut bv = [V::zero(); NV];
        for (q, v) in bv.iter_mut().enumerate() {
            *v = V::load(b.add(q * V::LANES));
        }
        for (r, row) in acc.iter_mut().enumerate() {
            let x = V::splat(*a.offset(r as isize * t.a.rs));
            for (q, v) in row.iter_mut().enumerate() {
                *v = v.mul_add(x, bv[q]);
            }
        }
        a = a.offset(t.a.cs);
        b = b.add(NV * V::LANES);
    }
    let full = t.cols == NV * V::LANES;
    for (r, row) in acc.iter().enumerate() {
        let dst = t.c.add(r * t.ldc);
        if full {
            for (q, v) in row.iter().enumerate() {
                v.store(dst.add(q * V::LANES));
            }
        } else {
            let mut spill = [T::zero(); 64];
            for (q, v) in row.iter().enumerate() {
                v.store(spill.as_mut_ptr().add(q * V::LANES));
            }
            std::ptr::copy_nonoverlapping(spill.as_ptr(), dst, t.cols);
        }
    }
}
