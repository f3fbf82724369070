//! Batched GEMM for any strides through matrixmultiply.
//!
//! Threading policy, so that rayon and matrixmultiply never oversubscribe:
//! matrixmultiply threads a product itself (on its own pool, sized by
//! `MATMUL_NUM_THREADS`, default the physical cores) only when
//! `m*k + k*n >= 2^15`. Products at least that large run one batch after
//! another with rayon idle; smaller ones, which matrixmultiply keeps on the
//! calling thread, are spread over the batch with rayon.

use super::tiled_gemm::{tiled_gemm, Strided, TiledGemm};
use crate::layout::{Layout, Rows};
use crate::Element;
use rayon::prelude::*;

/// matrixmultiply's size below which it runs a product on one thread.
const GEMM_THREADING_SIZE: usize = 1 << 15;

/// True when matrixmultiply runs an m x k by k x n product on its own
/// threads; such products must not be started from inside rayon tasks.
pub(crate) fn gemm_is_threaded(m: usize, k: usize, n: usize) -> bool {
    m * k + k * n >= GEMM_THREADING_SIZE
}

/// The most multiply-adds per output row (rows of `b` combined) or output
/// elements (dot products) that [`small_gemm`] handles: below it,
/// matrixmultiply's packing costs more than the product (the 1x1
/// convolutions of flows with up to 8 channels; at 12 channels matrixmultiply
/// is already faster).
const SMALL_GEMM: usize = 64;

/// `c (+)= a b` (row-major `c` with row stride `n`) by direct loops when
/// the product is small in the way 1x1 convolutions with few channels are;
/// returns whether it did:
/// - `m k <= SMALL_GEMM` and `b`'s rows contiguous: each row of `c` is a
///   combination of `k` rows of `b` (channel mixing and its input gradient);
/// - `m n <= SMALL_GEMM`, `a`'s rows and `b`'s columns contiguous: each
///   element of `c` is a dot product of length `k` (the weight gradient).
///
/// # Safety
/// The pointers and strides must describe valid m x k, k x n and m x n
/// matrices, and `c` must not alias `a` or `b`.
pub(crate) unsafe fn small_gemm<T: Element>(
    m: usize,
    k: usize,
    n: usize,
    (a, rsa, csa): (*const T, isize, isize),
    (b, rsb, csb): (*const T, isize, isize),
    c: *mut T,
    accumulate: bool,
) -> bool {
    let at = |i: usize, j: usize| *a.offset(i as isize * rsa + j as isize * csa);
    if m * k <= SMALL_GEMM && csb == 1 {
        // `c` may be uninitialised when not accumulating: its first term is
        // written, never read.
        for i in 0..m {
            let ci = c.add(i * n);
            for j in 0..k {
                let aij = at(i, j);
                let bj = std::slice::from_raw_parts(b.offset(j as isize * rsb), n);
                if j == 0 && !accumulate {
                    for (l, &v) in bj.iter().enumerate() {
                        ci.add(l).write(aij * v);
                    }
                } else {
                    for (l, &v) in bj.iter().enumerate() {
                        *ci.add(l) = *ci.add(l) + aij * v;
                    }
                }
            }
        }
        return true;
    }
    if m * n <= SMALL_GEMM && csa == 1 && rsb == 1 {
        for i in 0..m {
            let ai = std::slice::from_raw_parts(a.offset(i as isize * rsa), k);
            for j in 0..n {
                let bj = std::slice::from_raw_parts(b.offset(j as isize * csb), k);
                let dot = dot(ai, bj);
                let cij = c.add(i * n + j);
                cij.write(if accumulate { *cij + dot } else { dot });
            }
        }
        return true;
    }
    false
}

/// `sum_i x_i y_i` with eight partial sums (so that it vectorises).
fn dot<T: Element>(x: &[T], y: &[T]) -> T {
    let mut acc = [T::zero(); 8];
    let (xc, yc) = (x.chunks_exact(8), y.chunks_exact(8));
    let tail = xc
        .remainder()
        .iter()
        .zip(yc.remainder())
        .fold(T::zero(), |s, (&a, &b)| s + a * b);
    for (xs, ys) in xc.zip(yc) {
        for l in 0..8 {
            acc[l] = acc[l] + xs[l] * ys[l];
        }
    }
    acc.iter().fold(tail, |s, &v| s + v)
}

/// `a @ b` for layouts `(..., m, k)` and `(..., k, n)` with equal batch
/// dimensions, plus `bias` (`n` values) on every row when given; returns
/// the contiguous `(..., m, n)` result. A single product with a small `b` (a
/// layer's weights) goes to the register-tiled kernel ([`TiledGemm`]), which
/// adds the bias to each block of rows while it is in cache; the rest go to
/// matrixmultiply.
pub(crate) fn matmul<T: TiledGemm>(
    a: &[T],
    la: &Layout,
    b: &[T],
    lb: &Layout,
    bias: Option<&[T]>,
) -> Vec<T> {
    let r = la.rank();
    let (m, k, n) = (la.shape()[r - 2], la.shape()[r - 1], lb.shape()[r - 1]);
    let batch_layout = |l: &Layout| {
        Layout::from_parts(
            l.shape()[..r - 2].to_vec(),
            l.strides()[..r - 2].to_vec(),
            l.offset(),
        )
    };
    let (ba, bb) = (batch_layout(la), batch_layout(lb));
    let batches = ba.elem_count();
    if m == 0 || n == 0 || k == 0 {
        let mut out = vec![T::zero(); batches * m * n];
        if let Some(bias) = bias {
            out.chunks_exact_mut(n.max(1))
                .for_each(|row| row.copy_from_slice(bias));
        }
        return out;
    }
    let (rows_a, rows_b) = (Rows::elementwise(&ba), Rows::elementwise(&bb));
    let (sa, sb) = (la.strides(), lb.strides());
    // With beta = 0 matrixmultiply writes every element of C without reading
    // it, so the output is not zero-filled first (it is 4 MB at n = 1024).
    let mut out: Vec<T> = Vec::with_capacity(batches * m * n);
    let product = |(i, c): (usize, &mut [std::mem::MaybeUninit<T>])| {
        let (oa, ob) = (rows_a.base(i) as usize, rows_b.base(i) as usize);
        // SAFETY: oa/ob index element (0, 0) of matrix i inside the storage and the
        // strides come from layouts whose every element lies inside it; `c` is a
        // distinct m x n buffer, fully written because beta is 0.
        unsafe {
            let (ap, bp) = (a.as_ptr().add(oa), b.as_ptr().add(ob));
            let cp = c.as_mut_ptr().cast::<T>();
            let a_mat = (ap, sa[r - 2], sa[r - 1]);
            if !small_gemm(m, k, n, a_mat, (bp, sb[r - 2], sb[r - 1]), cp, false) {
                T::gemm(
                    m,
                    k,
                    n,
                    a.as_ptr().add(oa),
                    sa[r - 2],
                    sa[r - 1],
                    b.as_ptr().add(ob),
                    sb[r - 2],
                    sb[r - 1],
                    c.as_mut_ptr().cast::<T>(),
                    n as isize,
                    1,
                    false,
                );
            }
            if let Some(bias) = bias {
                add_bias(std::slice::from_raw_parts_mut(cp, m * n), bias);
            }
        }
    };
    let spare = &mut out.spare_capacity_mut()[..batches * m * n];
    let operand = |p: &[T], o: usize, s: &[isize]| Strided {
        // SAFETY: `o` is the offset of a matrix inside `p`.
        ptr: unsafe { p.as_ptr().add(o) },
        rs: s[r - 2],
        cs: s[r - 1],
    };
    // SAFETY: as for `product`; the tiled kernel writes all of `spare` when
    // it takes the product.
    let tiled = batches == 1
        && unsafe {
            let (oa, ob) = (rows_a.base(0) as usize, rows_b.base(0) as usize);
            tiled_gemm(
                m,
                k,
                n,
                operand(a, oa, sa),
                operand(b, ob, sb),
                bias,
                spare,
                true,
            )
        };
    if tiled {
        // `spare` is written.
    } else if batches > 1 && !gemm_is_threaded(m, k, n) {
        spare.par_chunks_mut(m * n).enumerate().for_each(product);
    } else {
        spare.chunks_mut(m * n).enumerate().for_each(product);
    }
    // SAFETY: every one of the batches * m * n elements was written above.
    unsafe { out.set_len(batches * m * n) };
    out
}

/// Adds `bias` to every row of `c` (rows of `bias.len()` values).
pub(crate) fn add_bias<T: Element>(c: &mut [T], bias: &[T]) {
    for row in c.chunks_exact_mut(bias.len()) {
        for (v, &b) in row.iter_mut().zip(bias) {
            *v = *v + b;
        }
    }
}
