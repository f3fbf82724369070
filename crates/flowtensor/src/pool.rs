//! Where the CPU kernels run: rayon's global pool.

use crate::autograd::{is_grad_enabled, with_grad_mode};

/// Runs `f` on a thread of the CPU kernels' worker pool (rayon's global
/// pool) and returns its result; on a pool thread already, runs it in place.
///
/// A parallel kernel called from a pool thread splits its work with the
/// other workers directly. Called from any other thread (a program's main
/// thread), each kernel is handed to the pool while the caller sleeps until
/// it is done: two context switches per kernel, which cost as much as the
/// work of a kernel on a batch of vectors. A training step, an evaluation
/// or a sampling pass run through this pay the hand-off once.
///
/// Whether operations are recorded ([`no_grad`](crate::no_grad)) carries
/// over to the pool thread for the duration of `f`.
pub fn in_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        return f();
    }
    let record = is_grad_enabled();
    rayon::scope(move |_| with_grad_mode(record, f))
}
