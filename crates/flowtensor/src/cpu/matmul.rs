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
    let mut out = vec![T::zero(); batches * m * n];
    if m == 0 || n == 0 || k == 0 {
        return out;
    }
    let (rows_a, rows_b) = (Rows::elementwise(&ba), Rows::elementwise(&bb));
    let (sa, sb) = (la.strides(), lb.strides());
    let product = |(i, c): (usize, &mut [T])| {
        let (oa, ob) = (rows_a.base(i) as usize, rows_b.base(i) as usize);
        // SAFETY: oa/ob index element (0, 0) of matrix i inside the storage and the
        // strides come from layouts whose every element lies inside it; `c` is a
        // distinct, contiguous m x n buffer.
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
                c.as_mut_ptr(),
                n as isize,
                1,
                false,
            );
        }
    };
    if batches > 1 && !gemm_is_threaded(m, k, n) {
        out.par_chunks_mut(m * n).enumerate().for_each(product);
    } else {
        out.chunks_mut(m * n).enumerate().for_each(product);
    }
    out
}
