//! Batched GEMM for any strides through matrixmultiply.
//!
//! Threading policy, so that rayon and matrixmultiply never oversubscribe:
//! matrixmultiply threads a product itself (on its own pool, sized by
//! `MATMUL_NUM_THREADS`, default the physical cores) only when
//! `m*k + k*n >= 2^15`. Products at least that large run one batch after
//! another with rayon idle; smaller ones, which matrixmultiply keeps on the
//! calling thread, are spread over the batch with rayon.

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

/// `a @ b` for layouts `(..., m, k)` and `(..., k, n)` with equal batch
/// dimensions; returns the contiguous `(..., m, n)` result.
pub fn matmul<T: Element>(a: &[T], la: &Layout, b: &[T], lb: &Layout) -> Vec<T> {
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
        return vec![T::zero(); batches * m * n];
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
    };
    let spare = &mut out.spare_capacity_mut()[..batches * m * n];
    if batches > 1 && !gemm_is_threaded(m, k, n) {
        spare.par_chunks_mut(m * n).enumerate().for_each(product);
    } else {
        spare.chunks_mut(m * n).enumerate().for_each(product);
    }
    // SAFETY: every one of the batches * m * n elements was written above.
    unsafe { out.set_len(batches * m * n) };
    out
}
